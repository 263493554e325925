"""AUREUS Guard, the sandbox's stand-in for the platform's snapshot API (runbook section 5, issue 13).

A real HTTP(S) service on loopback, backed by its own PostgreSQL database (``aureus_guard``, owned by
its own role): pipelines, their snapshots, asynchronous restore operations and an audit log are rows,
changed in transactions. The contract is ``docs/aureus-guard-api.openapi.yaml``.

Lifecycle: ``sandbox/up.sh`` creates the role and database, the TLS certificate (sandbox CA) and the tokens in
``.sandbox/guard/``, starts this server as component ``aureus-guard`` (log ``.sandbox/logs/aureus-guard.log``,
PID in ``.sandbox/pids/``) and waits for ``/health``; ``sandbox/down.sh`` stops it (SIGTERM) with the rest.
``sandbox/seed.sh`` seeds it through the API (sandbox/guard/seed_guard.py, sandbox/seed/guard/deployments.json);
``sandbox/seed.sh --reset`` (or ``--reset guard`` for the Guard alone) puts the incident state back:
credit_risk_pipeline_v2 corrupted, its good snapshot ``Before deploying credit_risk_pipeline_v2`` present, no
operations, no faults. The schema is created at start; restores left InProgress by a stop are marked Failed.

Authentication: ``Authorization: Bearer <token>``; three tokens, each read from a file at start:
  operator  (``--token-file``)           read, deploy pipelines, restore            SANDBOX_GUARD_TOKEN(_FILE)
  auditor   (``--readonly-token-file``)  read only: 403 on PUT/POST                  SANDBOX_GUARD_READONLY_TOKEN_FILE
  admin     (``--admin-token-file``)     everything, and /api/admin/* (fault injection, reset)
                                                                                     SANDBOX_GUARD_ADMIN_TOKEN_FILE
No token or an unknown one: 401 with ``WWW-Authenticate: Bearer``. Tokens and passwords are never logged.

Endpoints (all JSON):
  GET  /health, /api/health                  no auth; 200 when the database answers
  GET  /api/snapshots[?state_type=&before=&after=&target=&limit=]   {"snapshots": [{id, timestamp, state_type, description, target}]}
                                             newest first; ``before``/``after`` are RFC 3339 times (strict bounds)
  GET  /api/snapshots/{id}                   the snapshot with ``content`` (item -> value), ``manifest``
                                             ([{key, sha256}], recorded when taken) and ``content_sha256`` (recorded when taken)
  GET  /api/pipelines                        {"pipelines": [{name, version, updated_at, content_sha256}]}
  GET  /api/pipelines/{name}                 {name, version, deployed_at, deployed_by, updated_at, restored_from, content, manifest, content_sha256}
  PUT  /api/pipelines/{name}                 {"content": {item: value, ...}} deploys a new version; an existing pipeline is
                                             first snapshotted (state_type ``pipeline_deployment``, description
                                             ``Before deploying <name>``). 201 on create, 200 on deploy; 409 while a restore runs.
  POST /api/rollback                         {"snapshot_id", "reason", "approver"} -> 202 {operation_id, ...}, Location header.
                                             ``Idempotency-Key`` header: the same key with the same body answers the same
                                             operation (202, ``Idempotent-Replayed: true``) and never restores twice; the same key
                                             with another body: 422 (keys are global). Unknown snapshot: 404. A restore running on the
                                             target: 409. Auditor token: 403.
  GET  /api/rollback[?phase=&snapshot_id=]   {"operations": [...]}
  GET  /api/rollback/{operation_id}          {operation_id, snapshot_id, target, phase: InProgress|Completed|PartiallyFailed|Failed,
                                             items_restored, items_total, errors: [{item, message}], started_at, completed_at,
                                             reason, approver, requested_by, idempotency_key, content_sha256_before, content_sha256_after}
  GET  /api/audit[?operation_id=&action=&since=&limit=]             {"events": [{id, timestamp, actor, action, target, operation_id,
                                             snapshot_id, details}]}, oldest first. A restore writes ``rollback.requested`` and one of
                                             ``rollback.completed``, ``rollback.partially_failed``, ``rollback.failed``.

Canonical content and digests: an object's content is a JSON object of items. canonical(x) =
``json.dumps(x, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")`` (RFC 8785-like);
an item's sha256 is sha256(canonical(value)); ``content_sha256`` is sha256(canonical(content)). A pipeline and the
snapshot it was restored from have the same ``content_sha256``.

Restores are asynchronous: a worker thread applies the snapshot's items one by one (upsert, or delete of an item
the snapshot does not have) inside one transaction, each in a savepoint, publishing progress after each item and
waiting ``--restore-item-delay`` seconds (default 0.25) so ``InProgress`` is observable. All items applied:
``Completed``; some failed: their savepoints are rolled back, the rest committed, ``PartiallyFailed``; an abort rolls
the whole transaction back: ``Failed`` with ``items_restored`` 0.

Fault injection (admin token only; faults are rows, consumed atomically, cleared by a reset):
  POST   /api/admin/faults  {"action": "error", "status": 500, "method": "GET", "path": "/api/rollback/", "count": 1}
             the next ``count`` matching requests answer ``status`` (any 4xx/5xx) with a generic error body
  POST   /api/admin/faults  {"action": "hang", "seconds": 30, "method": "GET", "path": "/api/rollback/", "count": 1}
             the next ``count`` matching requests stall ``seconds`` before answering (client timeouts)
  POST   /api/admin/faults  {"action": "malformed_json", "method": "GET", "path": "/api/", "count": 1}
             the next matching response is cut in half (status 200, Content-Type JSON, invalid JSON)
  POST   /api/admin/faults  {"action": "restore_outcome", "phase": "PartiallyFailed"|"Failed", "item": null, "count": 1}
             the next restore(s) fail item ``item`` (default: the last item for PartiallyFailed, the second for Failed)
  GET    /api/admin/faults  the faults with ``remaining`` counts;  DELETE /api/admin/faults  clears them
  POST   /api/admin/snapshots/{id}/tamper  {"item": null}
             changes one stored item's value (default: the first) but not the manifest or the recorded digest,
             so the snapshot's content no longer matches its manifest (and a restore of it would not match either)
  POST   /api/admin/reset   cancels running restores and empties every table (seed.sh --reset then re-seeds)
``method`` and ``path`` (a path prefix) default to GET and /api/rollback/ for error and hang, and to any method
and /api/ for malformed_json (on POST /api/rollback it mangles the 202 of a restore that did start: a lost
answer). Faults apply to authenticated, authorized non-admin /api requests only; a response shaped by a fault
carries ``X-Guard-Fault``.
"""

import argparse
import datetime
import hashlib
import hmac
import http.server
import json
import re
import secrets
import signal
import ssl
import sys
import threading
import time
import urllib.parse

import psycopg2
import psycopg2.errors
import psycopg2.extras
import psycopg2.pool

PHASES = ("InProgress", "Completed", "PartiallyFailed", "Failed")
STATE_TYPE_PIPELINE = "pipeline_deployment"
MAX_BODY = 1024 * 1024
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS pipelines (
    name text PRIMARY KEY,
    version integer NOT NULL,
    deployed_at timestamptz NOT NULL,
    deployed_by text NOT NULL,
    updated_at timestamptz NOT NULL,
    restored_from text
);
CREATE TABLE IF NOT EXISTS pipeline_items (
    pipeline text NOT NULL REFERENCES pipelines(name) ON DELETE CASCADE,
    key text NOT NULL,
    value jsonb NOT NULL,
    PRIMARY KEY (pipeline, key)
);
CREATE TABLE IF NOT EXISTS snapshots (
    id text PRIMARY KEY,
    taken_at timestamptz NOT NULL,
    state_type text NOT NULL,
    description text NOT NULL,
    target_kind text NOT NULL,
    target_name text NOT NULL,
    target_version integer,
    manifest jsonb NOT NULL,
    content_sha256 text NOT NULL,
    created_by text NOT NULL
);
CREATE INDEX IF NOT EXISTS snapshots_taken_at ON snapshots (taken_at DESC);
CREATE TABLE IF NOT EXISTS snapshot_items (
    snapshot_id text NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
    key text NOT NULL,
    value jsonb NOT NULL,
    PRIMARY KEY (snapshot_id, key)
);
CREATE TABLE IF NOT EXISTS operations (
    id text PRIMARY KEY,
    snapshot_id text NOT NULL REFERENCES snapshots(id),
    target_kind text NOT NULL,
    target_name text NOT NULL,
    phase text NOT NULL CHECK (phase IN ('InProgress', 'Completed', 'PartiallyFailed', 'Failed')),
    items_restored integer NOT NULL DEFAULT 0,
    items_total integer NOT NULL,
    errors jsonb NOT NULL DEFAULT '[]',
    reason text NOT NULL,
    approver text NOT NULL,
    requested_by text NOT NULL,
    idempotency_key text UNIQUE,
    request_sha256 text NOT NULL,
    fault jsonb,
    content_sha256_before text,
    content_sha256_after text,
    started_at timestamptz NOT NULL,
    completed_at timestamptz
);
-- One restore at a time per target, enforced by the database.
CREATE UNIQUE INDEX IF NOT EXISTS operations_one_in_progress ON operations (target_kind, target_name)
    WHERE phase = 'InProgress';
CREATE TABLE IF NOT EXISTS audit_events (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor text NOT NULL,
    action text NOT NULL,
    target text,
    operation_id text,
    snapshot_id text,
    details jsonb NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS faults (
    id bigserial PRIMARY KEY,
    action text NOT NULL,
    method text,
    path_prefix text,
    remaining integer NOT NULL,
    used integer NOT NULL DEFAULT 0,
    params jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""


# --------------------------------------------------------------------------- canonical JSON, digests, times
def canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_of(value):
    return hashlib.sha256(canonical(value)).hexdigest()


def manifest_of(content):
    return [{"key": key, "sha256": sha256_of(content[key])} for key in sorted(content)]


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def rfc3339(moment):
    if moment is None:
        return None
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text):
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ApiError(400, "bad_request", "not an RFC 3339 time: %r" % text)
    if moment.tzinfo is None:
        raise ApiError(400, "bad_request", "a time needs a UTC offset or Z: %r" % text)
    return moment


class ApiError(Exception):
    def __init__(self, status, code, message, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class Cancelled(Exception):
    pass


class Abort(Exception):
    pass


# --------------------------------------------------------------------------- the service
class Guard:
    def __init__(self, dsn, tokens, restore_item_delay):
        self.pool = psycopg2.pool.ThreadedConnectionPool(1, 32, **dsn)
        self.tokens = tokens  # [(token, principal, role)]
        self.restore_item_delay = restore_item_delay
        self.stopping = threading.Event()
        self.workers = {}  # operation id -> (thread, cancel event)
        self.workers_lock = threading.Lock()
        with self.tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(7100013)")
            cur.execute(SCHEMA)
            # Restores that were running when an earlier instance stopped were rolled back with it.
            cur.execute("UPDATE operations SET phase = 'Failed', items_restored = 0, completed_at = %s, "
                        "errors = errors || %s::jsonb WHERE phase = 'InProgress' RETURNING id",
                        (utcnow(), json.dumps([{"item": None, "message": "restore interrupted: the service restarted"}])))
            for (op_id,) in cur.fetchall():
                self.audit(cur, "aureus-guard", "rollback.failed", None, op_id, None, {"reason": "service restarted"})

    # ---- database
    class _Tx:
        def __init__(self, guard, autocommit=False):
            self.guard, self.autocommit = guard, autocommit

        def __enter__(self):
            self.conn = self.guard.pool.getconn()
            try:
                self.conn.autocommit = self.autocommit
            except psycopg2.Error:
                self.guard.pool.putconn(self.conn, close=True)
                self.conn = self.guard.pool.getconn()
                self.conn.autocommit = self.autocommit
            self.cur = self.conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)
            return self.cur

        def __exit__(self, exc_type, exc, tb):
            broken = False
            try:
                if not self.autocommit:
                    if exc_type is None:
                        self.conn.commit()
                    else:
                        self.conn.rollback()
            except psycopg2.Error:
                broken = True
                if exc_type is None:
                    raise
            finally:
                self.cur.close()
                broken = broken or self.conn.closed or isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError))
                self.guard.pool.putconn(self.conn, close=bool(broken))
            return False

    def tx(self, autocommit=False):
        return self._Tx(self, autocommit)

    @staticmethod
    def audit(cur, actor, action, target, operation_id, snapshot_id, details):
        cur.execute("INSERT INTO audit_events (actor, action, target, operation_id, snapshot_id, details) "
                    "VALUES (%s, %s, %s, %s, %s, %s)", (actor, action, target, operation_id, snapshot_id, json.dumps(details)))

    # ---- auth
    def principal(self, header):
        if not header or not header.startswith("Bearer "):
            return None
        offered = header[len("Bearer "):].strip().encode()
        found = None
        for token, name, role in self.tokens:
            if hmac.compare_digest(offered, token.encode()):
                found = (name, role)
        return found

    # ---- faults
    def take_fault(self, method, path):
        with self.tx() as cur:
            cur.execute("""
                UPDATE faults SET remaining = remaining - 1, used = used + 1 WHERE id = (
                    SELECT id FROM faults WHERE remaining > 0 AND action IN ('error', 'hang', 'malformed_json')
                      AND (method IS NULL OR method = %s) AND (path_prefix IS NULL OR starts_with(%s, path_prefix))
                    ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                RETURNING id, action, params""", (method, path))
            return cur.fetchone()

    # ---- pipelines
    @staticmethod
    def items_of(cur, table, column, owner):
        cur.execute("SELECT key, value FROM %s WHERE %s = %%s ORDER BY key" % (table, column), (owner,))
        return {row["key"]: row["value"] for row in cur.fetchall()}

    def pipeline_view(self, cur, row):
        content = self.items_of(cur, "pipeline_items", "pipeline", row["name"])
        return {"name": row["name"], "version": row["version"], "deployed_at": rfc3339(row["deployed_at"]),
                "deployed_by": row["deployed_by"], "updated_at": rfc3339(row["updated_at"]),
                "restored_from": row["restored_from"], "content": content, "manifest": manifest_of(content),
                "content_sha256": sha256_of(content)}

    def deploy(self, cur, name, content, actor):
        now = utcnow()
        self.refuse_if_restoring(cur, name)
        cur.execute("SELECT * FROM pipelines WHERE name = %s FOR UPDATE", (name,))
        row = cur.fetchone()
        snapshot_id = None
        if row is not None:
            snapshot_id = self.take_snapshot(cur, row, "Before deploying %s" % name, actor, now)
            cur.execute("UPDATE pipelines SET version = version + 1, deployed_at = %s, deployed_by = %s, updated_at = %s, "
                        "restored_from = NULL WHERE name = %s", (now, actor, now, name))
            cur.execute("DELETE FROM pipeline_items WHERE pipeline = %s", (name,))
        else:
            cur.execute("INSERT INTO pipelines (name, version, deployed_at, deployed_by, updated_at) VALUES (%s, 1, %s, %s, %s)",
                        (name, now, actor, now))
        psycopg2.extras.execute_values(cur, "INSERT INTO pipeline_items (pipeline, key, value) VALUES %s",
                                       [(name, key, json.dumps(value)) for key, value in content.items()])
        cur.execute("SELECT * FROM pipelines WHERE name = %s", (name,))
        view = self.pipeline_view(cur, cur.fetchone())
        self.audit(cur, actor, "pipeline.deployed", "pipeline/" + name, None, snapshot_id,
                   {"version": view["version"], "content_sha256": view["content_sha256"]})
        view["snapshot_id"] = snapshot_id
        return view, row is None

    @staticmethod
    def refuse_if_restoring(cur, name):
        # Checked before taking the pipeline's row lock, which a running restore holds until it ends.
        cur.execute("SELECT id FROM operations WHERE target_kind = 'pipeline' AND target_name = %s AND phase = 'InProgress'",
                    (name,))
        running = cur.fetchone()
        if running:
            raise ApiError(409, "conflict", "restore %s is running on pipeline %s" % (running["id"], name))

    def take_snapshot(self, cur, pipeline_row, description, actor, now):
        name = pipeline_row["name"]
        snapshot_id = "snap-%s-%s" % (now.strftime("%Y%m%d-%H%M%S"), secrets.token_hex(3))
        cur.execute("INSERT INTO snapshots (id, taken_at, state_type, description, target_kind, target_name, target_version, "
                    "manifest, content_sha256, created_by) VALUES (%s, %s, %s, %s, 'pipeline', %s, %s, '[]', '', %s)",
                    (snapshot_id, now, STATE_TYPE_PIPELINE, description, name, pipeline_row["version"], actor))
        cur.execute("INSERT INTO snapshot_items (snapshot_id, key, value) SELECT %s, key, value FROM pipeline_items "
                    "WHERE pipeline = %s", (snapshot_id, name))
        content = self.items_of(cur, "snapshot_items", "snapshot_id", snapshot_id)  # digests over what is stored
        cur.execute("UPDATE snapshots SET manifest = %s, content_sha256 = %s WHERE id = %s",
                    (json.dumps(manifest_of(content)), sha256_of(content), snapshot_id))
        self.audit(cur, actor, "snapshot.created", "pipeline/" + name, None, snapshot_id,
                   {"description": description, "state_type": STATE_TYPE_PIPELINE, "content_sha256": sha256_of(content)})
        return snapshot_id

    # ---- snapshots
    @staticmethod
    def snapshot_summary(row):
        return {"id": row["id"], "timestamp": rfc3339(row["taken_at"]), "state_type": row["state_type"],
                "description": row["description"], "target": {"kind": row["target_kind"], "name": row["target_name"]}}

    def snapshot_view(self, cur, row):
        view = self.snapshot_summary(row)
        view.update({"target_version": row["target_version"], "created_by": row["created_by"],
                     "content": self.items_of(cur, "snapshot_items", "snapshot_id", row["id"]),
                     "manifest": row["manifest"], "content_sha256": row["content_sha256"]})
        return view

    # ---- operations
    @staticmethod
    def operation_view(row):
        return {"operation_id": row["id"], "snapshot_id": row["snapshot_id"],
                "target": {"kind": row["target_kind"], "name": row["target_name"]}, "phase": row["phase"],
                "items_restored": row["items_restored"], "items_total": row["items_total"], "errors": row["errors"],
                "started_at": rfc3339(row["started_at"]), "completed_at": rfc3339(row["completed_at"]),
                "reason": row["reason"], "approver": row["approver"], "requested_by": row["requested_by"],
                "idempotency_key": row["idempotency_key"], "content_sha256_before": row["content_sha256_before"],
                "content_sha256_after": row["content_sha256_after"]}

    def request_restore(self, body, actor, idempotency_key):
        if not isinstance(body, dict):
            raise ApiError(400, "bad_request", "the body must be a JSON object")
        for field in ("snapshot_id", "reason", "approver"):
            if not isinstance(body.get(field), str) or not body[field].strip():
                raise ApiError(400, "bad_request", "%s is required (a non-empty string)" % field)
        request = {k: body[k] for k in ("snapshot_id", "reason", "approver")}
        request_sha = sha256_of(request)
        if idempotency_key is not None and not (0 < len(idempotency_key) <= 255):
            raise ApiError(400, "bad_request", "Idempotency-Key must be 1 to 255 characters")
        for attempt in range(3):
            try:
                with self.tx() as cur:
                    if idempotency_key is not None:
                        cur.execute("SELECT * FROM operations WHERE idempotency_key = %s", (idempotency_key,))
                        existing = cur.fetchone()
                        if existing:
                            if existing["request_sha256"] != request_sha:
                                raise ApiError(422, "idempotency_key_reused",
                                               "Idempotency-Key was already used for a different request")
                            return self.operation_view(existing), True
                    op = self._create_operation(cur, request, request_sha, actor, idempotency_key)
                break
            except psycopg2.errors.UniqueViolation:
                # The same key raced in from another request (the retry answers its operation), or another
                # restore of the target started in between (the retry answers 409).
                continue
            except ApiError as error:
                # The running restore may be this very key's, committed by a concurrent request after our lookup:
                # look the key up again before answering 409.
                if error.status == 409 and idempotency_key is not None and attempt < 2:
                    continue
                raise
        else:
            raise ApiError(409, "conflict", "a restore is already running on this target")
        with self.workers_lock:
            cancel = threading.Event()
            thread = threading.Thread(target=self.run_restore, args=(op["operation_id"], cancel), daemon=True,
                                      name="restore-" + op["operation_id"])
            self.workers[op["operation_id"]] = (thread, cancel)
            thread.start()
        return op, False

    def _create_operation(self, cur, request, request_sha, actor, idempotency_key):
        cur.execute("SELECT * FROM snapshots WHERE id = %s", (request["snapshot_id"],))
        snap = cur.fetchone()
        if snap is None:
            raise ApiError(404, "not_found", "no snapshot %s" % request["snapshot_id"])
        self.refuse_if_restoring(cur, snap["target_name"])
        cur.execute("SELECT * FROM pipelines WHERE name = %s FOR UPDATE", (snap["target_name"],))
        pipeline = cur.fetchone()
        if pipeline is None:
            raise ApiError(409, "conflict", "the snapshot's pipeline %s no longer exists" % snap["target_name"])
        current = self.items_of(cur, "pipeline_items", "pipeline", snap["target_name"])
        wanted = self.items_of(cur, "snapshot_items", "snapshot_id", snap["id"])
        cur.execute("""
            UPDATE faults SET remaining = remaining - 1, used = used + 1 WHERE id = (
                SELECT id FROM faults WHERE remaining > 0 AND action = 'restore_outcome' ORDER BY id LIMIT 1 FOR UPDATE)
            RETURNING params""")
        fault = cur.fetchone()
        op_id = "op-" + secrets.token_hex(8)
        now = utcnow()
        cur.execute("INSERT INTO operations (id, snapshot_id, target_kind, target_name, phase, items_total, reason, approver, "
                    "requested_by, idempotency_key, request_sha256, fault, content_sha256_before, started_at) "
                    "VALUES (%s, %s, 'pipeline', %s, 'InProgress', %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *",
                    (op_id, snap["id"], snap["target_name"], len(set(current) | set(wanted)), request["reason"],
                     request["approver"], actor, idempotency_key, request_sha, json.dumps(fault["params"]) if fault else None,
                     sha256_of(current), now))
        row = cur.fetchone()
        self.audit(cur, actor, "rollback.requested", "pipeline/" + snap["target_name"], op_id, snap["id"],
                   {"reason": request["reason"], "approver": request["approver"], "idempotency_key": idempotency_key,
                    "content_sha256_before": sha256_of(current), "snapshot_content_sha256": snap["content_sha256"]})
        return self.operation_view(row)

    def run_restore(self, op_id, cancel):
        try:
            self._restore(op_id, cancel)
        except Cancelled:
            pass
        except Exception as exc:  # a worker must never die silently: the operation records what happened
            log("restore %s: unexpected error %s: %s" % (op_id, type(exc).__name__, exc))
            try:
                self._finish_failed(op_id, [{"item": None, "message": "internal error: %s" % type(exc).__name__}])
            except Exception as exc2:
                log("restore %s: could not record the failure: %s" % (op_id, exc2))
        finally:
            with self.workers_lock:
                self.workers.pop(op_id, None)

    def _restore(self, op_id, cancel):
        with self.tx(autocommit=True) as progress:
            progress.execute("SELECT * FROM operations WHERE id = %s", (op_id,))
            op = progress.fetchone()
            if op is None or op["phase"] != "InProgress":
                return
            fault = op["fault"] or {}
            errors = []
            restored = 0
            try:
                with self.tx() as cur:
                    name = op["target_name"]
                    cur.execute("SELECT * FROM pipelines WHERE name = %s FOR UPDATE", (name,))
                    if cur.fetchone() is None:
                        errors.append({"item": None, "message": "pipeline %s no longer exists" % name})
                        raise Abort()
                    current = self.items_of(cur, "pipeline_items", "pipeline", name)
                    wanted = self.items_of(cur, "snapshot_items", "snapshot_id", op["snapshot_id"])
                    plan = sorted(set(current) | set(wanted))
                    failing = fault.get("item")
                    if fault and failing is None and plan:
                        failing = plan[-1] if fault.get("phase") == "PartiallyFailed" else plan[min(1, len(plan) - 1)]
                    for key in plan:
                        if cancel.is_set() or self.stopping.is_set():
                            raise Cancelled()
                        cur.execute("SAVEPOINT item")
                        try:
                            if fault and key == failing:
                                raise RuntimeError("injected fault: could not write item %s" % key)
                            if key in wanted:
                                cur.execute("INSERT INTO pipeline_items (pipeline, key, value) VALUES (%s, %s, %s) "
                                            "ON CONFLICT (pipeline, key) DO UPDATE SET value = EXCLUDED.value",
                                            (name, key, json.dumps(wanted[key])))
                            else:
                                cur.execute("DELETE FROM pipeline_items WHERE pipeline = %s AND key = %s", (name, key))
                            cur.execute("RELEASE SAVEPOINT item")
                            restored += 1
                        except (RuntimeError, psycopg2.DatabaseError) as exc:
                            cur.execute("ROLLBACK TO SAVEPOINT item")
                            errors.append({"item": key, "message": str(exc).strip()})
                            if fault.get("phase") == "Failed":
                                raise Abort()
                        progress.execute("UPDATE operations SET items_restored = %s, errors = %s WHERE id = %s",
                                         (restored, json.dumps(errors), op_id))
                        if self.restore_item_delay:
                            cancel.wait(self.restore_item_delay)
                    after = self.items_of(cur, "pipeline_items", "pipeline", name)
                    now = utcnow()
                    cur.execute("UPDATE pipelines SET version = version + 1, updated_at = %s, restored_from = %s WHERE name = %s",
                                (now, op["snapshot_id"], name))
                    phase = "Completed" if not errors else "PartiallyFailed"
                    cur.execute("UPDATE operations SET phase = %s, items_restored = %s, errors = %s, completed_at = %s, "
                                "content_sha256_after = %s WHERE id = %s RETURNING id",
                                (phase, restored, json.dumps(errors), now, sha256_of(after), op_id))
                    if cur.fetchone() is None:
                        raise Cancelled()
                    self.audit(cur, op["requested_by"], "rollback.completed" if phase == "Completed" else "rollback.partially_failed",
                               "pipeline/" + name, op_id, op["snapshot_id"],
                               {"phase": phase, "items_restored": restored, "items_total": op["items_total"], "errors": errors,
                                "reason": op["reason"], "approver": op["approver"],
                                "content_sha256_before": op["content_sha256_before"], "content_sha256_after": sha256_of(after)})
            except Abort:
                self._finish_failed(op_id, errors)

    def _finish_failed(self, op_id, errors):
        with self.tx() as cur:
            cur.execute("UPDATE operations SET phase = 'Failed', items_restored = 0, errors = %s, completed_at = %s "
                        "WHERE id = %s AND phase = 'InProgress' RETURNING *", (json.dumps(errors), utcnow(), op_id))
            op = cur.fetchone()
            if op is not None:
                self.audit(cur, op["requested_by"], "rollback.failed", "pipeline/" + op["target_name"], op_id, op["snapshot_id"],
                           {"phase": "Failed", "items_restored": 0, "items_total": op["items_total"], "errors": errors,
                            "reason": op["reason"], "approver": op["approver"]})

    def cancel_workers(self, timeout=15):
        with self.workers_lock:
            running = list(self.workers.values())
        for entry in running:
            entry[1].set()
        for entry in running:
            entry[0].join(timeout)

    def reset(self, actor):
        self.cancel_workers()
        with self.tx() as cur:
            cur.execute("TRUNCATE faults, audit_events, operations, snapshot_items, snapshots, pipeline_items, pipelines "
                        "RESTART IDENTITY")
            self.audit(cur, actor, "guard.reset", None, None, None, {})


# --------------------------------------------------------------------------- HTTP
def log(message):
    sys.stderr.write("%s aureus-guard %s\n" % (rfc3339(utcnow()), message))
    sys.stderr.flush()


ROUTES = [
    ("GET", re.compile(r"^/(?:api/)?health$"), "health"),
    ("GET", re.compile(r"^/api/snapshots$"), "list_snapshots"),
    ("GET", re.compile(r"^/api/snapshots/(?P<id>[^/]+)$"), "get_snapshot"),
    ("GET", re.compile(r"^/api/pipelines$"), "list_pipelines"),
    ("GET", re.compile(r"^/api/pipelines/(?P<name>[^/]+)$"), "get_pipeline"),
    ("PUT", re.compile(r"^/api/pipelines/(?P<name>[^/]+)$"), "put_pipeline"),
    ("POST", re.compile(r"^/api/rollback$"), "post_rollback"),
    ("GET", re.compile(r"^/api/rollback$"), "list_operations"),
    ("GET", re.compile(r"^/api/rollback/(?P<op>[^/]+)$"), "get_operation"),
    ("GET", re.compile(r"^/api/audit$"), "list_audit"),
    ("GET", re.compile(r"^/api/admin/faults$"), "list_faults"),
    ("POST", re.compile(r"^/api/admin/faults$"), "post_fault"),
    ("DELETE", re.compile(r"^/api/admin/faults$"), "clear_faults"),
    ("POST", re.compile(r"^/api/admin/snapshots/(?P<id>[^/]+)/tamper$"), "tamper_snapshot"),
    ("POST", re.compile(r"^/api/admin/reset$"), "reset"),
]
WRITE = {"put_pipeline", "post_rollback"}
PUBLIC = {"health"}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "aureus-guard/1.0"
    timeout = 60
    guard = None  # set by main()

    def version_string(self):
        return self.server_version

    def setup(self):
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def log_message(self, format, *args):  # the default logs to stderr with the client address; ours is in log_request
        pass

    def log_request(self, code="-", size="-"):
        who = getattr(self, "who", None) or "-"
        elapsed = int((time.monotonic() - getattr(self, "t0", time.monotonic())) * 1000)
        fault = getattr(self, "fault_applied", None)
        log("%s %s %s %s %dms%s" % (who, self.command, self.path, code, elapsed, " fault=" + fault if fault else ""))

    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    # ---- plumbing
    def send_json(self, status, payload, headers=None, malformed=False):
        body = json.dumps(payload, indent=None, ensure_ascii=False).encode("utf-8")
        if malformed:
            body = body[:max(1, len(body) // 2)]
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error_json(self, status, code, message, headers=None):
        self.send_json(status, {"error": {"code": code, "message": message}}, headers)

    def read_json(self):
        length = self.headers.get("Content-Length")
        if length is None:
            raise ApiError(411, "length_required", "a JSON body with Content-Length is required")
        try:
            length = int(length)
        except ValueError:
            raise ApiError(400, "bad_request", "bad Content-Length")
        if length > MAX_BODY:
            raise ApiError(413, "too_large", "the body is larger than %d bytes" % MAX_BODY)
        raw = self.rfile.read(length)
        try:
            return json.loads(raw.decode("utf-8"), parse_constant=self._no_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "bad_request", "the body is not valid JSON: %s" % exc)

    @staticmethod
    def _no_constant(name):
        raise ValueError("%s is not JSON" % name)

    def dispatch(self):
        self.t0 = time.monotonic()
        self.who = None
        self.fault_applied = None
        parsed = urllib.parse.urlsplit(self.path)
        path = parsed.path
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items()}
        try:
            matches = [(m, r.match(path), name) for m, r, name in ROUTES if r.match(path)]
            if not matches:
                raise ApiError(404, "no_route", "no such resource: %s" % path)
            chosen = [(mt, name) for m, mt, name in matches if m == self.command]
            if not chosen:
                allowed = ", ".join(sorted({entry[0] for entry in matches}))
                raise ApiError(405, "method_not_allowed", "%s is not allowed here" % self.command, {"Allow": allowed})
            match, name = chosen[0]
            if name not in PUBLIC:
                found = self.guard.principal(self.headers.get("Authorization"))
                if found is None:
                    raise ApiError(401, "unauthorized", "a valid bearer token is required",
                                   {"WWW-Authenticate": 'Bearer realm="aureus-guard"'})
                self.who, role = found
                if path.startswith("/api/admin/") and role != "admin":
                    raise ApiError(403, "forbidden", "%s may not use the admin API" % self.who)
                if name in WRITE and role == "read":
                    raise ApiError(403, "forbidden", "%s has read-only access" % self.who)
            malformed = name not in PUBLIC and not path.startswith("/api/admin/") and self.apply_fault(path)
            status, payload, headers = getattr(self, "h_" + name)(match, query)
            if malformed:
                headers = dict(headers or {}, **{"X-Guard-Fault": "malformed_json"})
            self.send_json(status, payload, headers, malformed=malformed)
        except ApiError as exc:
            self.send_error_json(exc.status, exc.code, exc.message, exc.headers)
        except psycopg2.Error as exc:
            log("database error on %s %s: %s" % (self.command, path, type(exc).__name__))
            self.send_error_json(503, "unavailable", "the database is unavailable")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def apply_fault(self, path):
        fault = self.guard.take_fault(self.command, path)
        if fault is None:
            return False
        params = fault["params"]
        self.fault_applied = fault["action"]
        if fault["action"] == "error":
            status = int(params.get("status", 500))
            raise ApiError(status, "internal" if status >= 500 else "rejected", http.server.BaseHTTPRequestHandler.responses.get(
                status, ("error",))[0].lower(), {"X-Guard-Fault": "error"})
        if fault["action"] == "hang":
            self.guard.stopping.wait(float(params.get("seconds", 30)))
            return False
        return fault["action"] == "malformed_json"

    # ---- handlers: each returns (status, payload, headers)
    def h_health(self, match, query):
        with self.guard.tx() as cur:
            cur.execute("SELECT 1 AS ok")
            cur.fetchone()
        return 200, {"status": "ok", "database": "ok"}, None

    def h_list_snapshots(self, match, query):
        where, args = [], []
        if query.get("state_type"):
            where.append("state_type = %s")
            args.append(query["state_type"])
        if query.get("target"):
            where.append("target_name = %s")
            args.append(query["target"])
        if query.get("before"):
            where.append("taken_at < %s")
            args.append(parse_time(query["before"]))
        if query.get("after"):
            where.append("taken_at > %s")
            args.append(parse_time(query["after"]))
        limit = self.limit(query, 100)
        with self.guard.tx() as cur:
            cur.execute("SELECT * FROM snapshots %s ORDER BY taken_at DESC, id DESC LIMIT %d"
                        % ("WHERE " + " AND ".join(where) if where else "", limit), args)
            return 200, {"snapshots": [Guard.snapshot_summary(row) for row in cur.fetchall()]}, None

    @staticmethod
    def limit(query, default):
        try:
            value = int(query.get("limit") or default)
        except ValueError:
            raise ApiError(400, "bad_request", "limit must be an integer")
        if not 1 <= value <= 1000:
            raise ApiError(400, "bad_request", "limit must be between 1 and 1000")
        return value

    def h_get_snapshot(self, match, query):
        with self.guard.tx() as cur:
            cur.execute("SELECT * FROM snapshots WHERE id = %s", (match["id"],))
            row = cur.fetchone()
            if row is None:
                raise ApiError(404, "not_found", "no snapshot %s" % match["id"])
            return 200, self.guard.snapshot_view(cur, row), None

    def h_list_pipelines(self, match, query):
        with self.guard.tx() as cur:
            cur.execute("SELECT * FROM pipelines ORDER BY name")
            views = [self.guard.pipeline_view(cur, row) for row in cur.fetchall()]
        return 200, {"pipelines": [{k: v[k] for k in ("name", "version", "updated_at", "content_sha256")} for v in views]}, None

    def h_get_pipeline(self, match, query):
        with self.guard.tx() as cur:
            cur.execute("SELECT * FROM pipelines WHERE name = %s", (match["name"],))
            row = cur.fetchone()
            if row is None:
                raise ApiError(404, "not_found", "no pipeline %s" % match["name"])
            return 200, self.guard.pipeline_view(cur, row), None

    def h_put_pipeline(self, match, query):
        name = match["name"]
        if not NAME_RE.match(name):
            raise ApiError(400, "bad_request", "bad pipeline name")
        body = self.read_json()
        if not isinstance(body, dict) or not isinstance(body.get("content"), dict) or not body["content"]:
            raise ApiError(400, "bad_request", 'the body must be {"content": {item: value, ...}} with at least one item')
        with self.guard.tx() as cur:
            view, created = self.guard.deploy(cur, name, body["content"], self.who)
        return (201 if created else 200), view, None

    def h_post_rollback(self, match, query):
        body = self.read_json()
        op, replayed = self.guard.request_restore(body, self.who, self.headers.get("Idempotency-Key"))
        headers = {"Location": "/api/rollback/" + op["operation_id"]}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return 202, op, headers

    def h_list_operations(self, match, query):
        where, args = [], []
        if query.get("phase"):
            if query["phase"] not in PHASES:
                raise ApiError(400, "bad_request", "phase must be one of %s" % ", ".join(PHASES))
            where.append("phase = %s")
            args.append(query["phase"])
        if query.get("snapshot_id"):
            where.append("snapshot_id = %s")
            args.append(query["snapshot_id"])
        with self.guard.tx() as cur:
            cur.execute("SELECT * FROM operations %s ORDER BY started_at DESC LIMIT %d"
                        % ("WHERE " + " AND ".join(where) if where else "", self.limit(query, 100)), args)
            return 200, {"operations": [Guard.operation_view(row) for row in cur.fetchall()]}, None

    def h_get_operation(self, match, query):
        with self.guard.tx() as cur:
            cur.execute("SELECT * FROM operations WHERE id = %s", (match["op"],))
            row = cur.fetchone()
        if row is None:
            raise ApiError(404, "not_found", "no operation %s" % match["op"])
        return 200, Guard.operation_view(row), None

    def h_list_audit(self, match, query):
        where, args = [], []
        for field, column in (("operation_id", "operation_id"), ("action", "action"), ("snapshot_id", "snapshot_id")):
            if query.get(field):
                where.append(column + " = %s")
                args.append(query[field])
        if query.get("since"):
            where.append("at >= %s")
            args.append(parse_time(query["since"]))
        with self.guard.tx() as cur:
            cur.execute("SELECT * FROM audit_events %s ORDER BY id LIMIT %d"
                        % ("WHERE " + " AND ".join(where) if where else "", self.limit(query, 1000)), args)
            events = [{"id": row["id"], "timestamp": rfc3339(row["at"]), "actor": row["actor"], "action": row["action"],
                       "target": row["target"], "operation_id": row["operation_id"], "snapshot_id": row["snapshot_id"],
                       "details": row["details"]} for row in cur.fetchall()]
        return 200, {"events": events}, None

    # ---- admin
    @staticmethod
    def fault_view(row):
        return {"id": row["id"], "action": row["action"], "method": row["method"], "path": row["path_prefix"],
                "remaining": row["remaining"], "used": row["used"], "params": row["params"], "created_at": rfc3339(row["created_at"])}

    def h_list_faults(self, match, query):
        with self.guard.tx() as cur:
            cur.execute("SELECT * FROM faults ORDER BY id")
            return 200, {"faults": [self.fault_view(row) for row in cur.fetchall()]}, None

    def h_post_fault(self, match, query):
        body = self.read_json()
        if not isinstance(body, dict):
            raise ApiError(400, "bad_request", "the body must be a JSON object")
        action = body.get("action")
        count = body.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 1000:
            raise ApiError(400, "bad_request", "count must be an integer from 1 to 1000")
        params, method, path = {}, body.get("method"), body.get("path")
        if action in ("error", "hang"):
            method = "GET" if method is None else method
            path = "/api/rollback/" if path is None else path
            if action == "error":
                status = body.get("status", 500)
                if not isinstance(status, int) or not 400 <= status <= 599:
                    raise ApiError(400, "bad_request", "status must be an HTTP error status (400-599)")
                params["status"] = status
            else:
                seconds = body.get("seconds", 30)
                if not isinstance(seconds, (int, float)) or not 0 < seconds <= 600:
                    raise ApiError(400, "bad_request", "seconds must be a number from 0 to 600")
                params["seconds"] = seconds
        elif action == "malformed_json":
            path = "/api/" if path is None else path
        elif action == "restore_outcome":
            if body.get("phase") not in ("PartiallyFailed", "Failed"):
                raise ApiError(400, "bad_request", "phase must be PartiallyFailed or Failed")
            params = {"phase": body["phase"], "item": body.get("item")}
            method = path = None
        else:
            raise ApiError(400, "bad_request", "action must be error, hang, malformed_json or restore_outcome")
        if method is not None and method not in ("GET", "POST", "PUT", "DELETE"):
            raise ApiError(400, "bad_request", "method must be GET, POST, PUT or DELETE")
        if path is not None and (not isinstance(path, str) or not path.startswith("/api/") or path.startswith("/api/admin")):
            raise ApiError(400, "bad_request", "path must be a prefix of a non-admin /api/ path")
        with self.guard.tx() as cur:
            cur.execute("INSERT INTO faults (action, method, path_prefix, remaining, params) VALUES (%s, %s, %s, %s, %s) RETURNING *",
                        (action, method, path, count, json.dumps(params)))
            row = cur.fetchone()
            Guard.audit(cur, self.who, "fault.injected", path, None, None, {"fault": self.fault_view(row)})
        return 201, self.fault_view(row), None

    def h_clear_faults(self, match, query):
        with self.guard.tx() as cur:
            cur.execute("DELETE FROM faults")
            deleted = cur.rowcount
            Guard.audit(cur, self.who, "fault.cleared", None, None, None, {"deleted": deleted})
        return 200, {"deleted": deleted}, None

    def h_tamper_snapshot(self, match, query):
        body = self.read_json() if self.headers.get("Content-Length") not in (None, "0") else {}
        with self.guard.tx() as cur:
            cur.execute("SELECT * FROM snapshots WHERE id = %s FOR UPDATE", (match["id"],))
            if cur.fetchone() is None:
                raise ApiError(404, "not_found", "no snapshot %s" % match["id"])
            content = self.guard.items_of(cur, "snapshot_items", "snapshot_id", match["id"])
            item = body.get("item") if isinstance(body, dict) else None
            item = item if item is not None else (sorted(content)[0] if content else None)
            if item not in content:
                raise ApiError(400, "bad_request", "the snapshot has no item %r" % item)
            tampered = {"tampered": True, "was": content[item]}
            cur.execute("UPDATE snapshot_items SET value = %s WHERE snapshot_id = %s AND key = %s",
                        (json.dumps(tampered), match["id"], item))
            Guard.audit(cur, self.who, "snapshot.tampered", None, None, match["id"], {"item": item})
        return 200, {"snapshot_id": match["id"], "item": item}, None

    def h_reset(self, match, query):
        self.guard.reset(self.who)
        return 200, {"reset": True}, None


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # one line, not a traceback (a TLS handshake a client gave up, ...)
        log("connection error: %s: %s" % (sys.exc_info()[0].__name__, sys.exc_info()[1]))


def read_secret(path):
    with open(path) as handle:
        value = handle.read().strip()
    if not value:
        raise SystemExit("aureus-guard: %s is empty" % path)
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description="AUREUS Guard snapshot API (sandbox stand-in)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--db-host", default="127.0.0.1")
    parser.add_argument("--db-port", type=int, required=True)
    parser.add_argument("--db-name", default="aureus_guard")
    parser.add_argument("--db-user", default="aureus_guard")
    parser.add_argument("--db-password-file", required=True)
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--readonly-token-file", required=True)
    parser.add_argument("--admin-token-file", required=True)
    parser.add_argument("--restore-item-delay", type=float, default=0.25)
    args = parser.parse_args(argv)

    dsn = {"host": args.db_host, "port": args.db_port, "dbname": args.db_name, "user": args.db_user,
           "password": read_secret(args.db_password_file), "application_name": "aureus-guard", "connect_timeout": 5}
    tokens = [(read_secret(args.token_file), "sandbox-operator", "write"),
              (read_secret(args.readonly_token_file), "sandbox-auditor", "read"),
              (read_secret(args.admin_token_file), "sandbox-admin", "admin")]
    guard = Guard(dsn, tokens, args.restore_item_delay)
    Handler.guard = guard
    server = Server((args.host, args.port), Handler)
    scheme = "http"
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(args.tls_cert, args.tls_key)
        # The handshake happens in the handler's thread on first read, so a silent client cannot stall accept().
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        scheme = "https"

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    serving.start()
    log("listening on %s://%s:%d (database %s@%s:%d/%s)"
        % (scheme, args.host, args.port, args.db_user, args.db_host, args.db_port, args.db_name))
    while not stop.wait(0.2):
        pass
    log("stopping")
    guard.stopping.set()
    server.shutdown()
    guard.cancel_workers(5)
    server.server_close()
    guard.pool.closeall()
    return 0


if __name__ == "__main__":
    sys.exit(main())
