# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One run of ``pg_schema_downgrade``: the advisory lock taken by polling, the plan read under it, the verified
backup, the rehearsal (the downgrade in a transaction rolled back, finding and counting what it drops), the downgrade
in one transaction with ``lock_timeout`` and ``statement_timeout`` (or migration by migration around statements that
cannot run in a transaction), the schema digests recorded in the module's own schema, and the result being built.

The module is a shell around ``Downgrade``: its options in, ``Downgrade.run()`` fills the result."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

from ansible_collections.governed.rollback.plugins.module_utils import _common, _pg
from ansible_collections.governed.rollback.plugins.module_utils import _migrations as mig
from ansible_collections.governed.rollback.plugins.module_utils._common import Refused, RollbackError
from ansible_collections.governed.rollback.plugins.module_utils._migration_project import (
    Project, Step, sqlalchemy_connection,
)
from ansible_collections.governed.rollback.plugins.module_utils._pg_backup import take_backup
from ansible_collections.governed.rollback.plugins.module_utils._pg_catalog import (
    OWN_SCHEMA, bookkeeping_tables, catalog_identities, fetch_rows, schema_snapshot,
)

APP = "governed.rollback.pg_schema_downgrade"

# --------------------------------------------------------------------------- locks


def holders(cur, key):
    cur.execute("SELECT a.pid, a.usename, a.application_name, a.state, a.backend_start::text FROM pg_locks l JOIN "
                "pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND "
                "((l.classid::bigint << 32) | l.objid::bigint) = %s AND a.pid <> pg_backend_pid()", (key,))
    return [dict(zip(("pid", "user", "application_name", "state", "backend_start"), row)) for row in cur.fetchall()]


def take_advisory_lock(conn, key, deadline_seconds, what):
    """Poll pg_try_advisory_lock (session level, autocommit) until it is granted or the deadline passes."""
    cur = conn.cursor()
    deadline = time.monotonic() + max(deadline_seconds, 0)
    delay = 0.1
    while True:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
        if cur.fetchone()[0]:
            return
        if time.monotonic() >= deadline:
            held_by = holders(cur, key)
            sessions = ", ".join("pid %(pid)s user %(user)s application %(application_name)s (%(state)s)" % h
                                 for h in held_by) or "unknown"
            raise Refused("%s is locked by another session (%s) and was not released within %ss; another downgrade or "
                          "migration is running" % (what, sessions, deadline_seconds), "locked", lock_holders=held_by)
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


# --------------------------------------------------------------------------- running the downgrade


def seconds_setting(value):
    return "%dms" % int(round((value or 0) * 1000))


class Downgrade(object):
    """One run: the connection, the project, the plan and the result being built."""

    def __init__(self, module, result):
        self.module = module
        self.params = module.params
        self.result = result
        self.conn = None
        self.sa_conn = None
        self.sa_trans = None
        self.project = None
        self.plan = None
        self.steps = []
        self.secrets = [p for p in (self.params.get("login_password"),) if p]

    # -- connection and transactions

    def connect(self):
        self.conn = _pg.connect(self.params, application_name=APP)
        self.conn.autocommit = True

    def set_phase(self, phase):
        cur = self.conn.cursor()
        cur.execute("SELECT set_config('application_name', %s, false)", ("%s:%s" % (APP, phase),))

    def begin(self):
        """Start a transaction with the timeouts set for it."""
        self.conn.autocommit = False
        if self.sa_conn is not None:
            self.sa_trans = self.sa_conn.begin()
        cur = self.conn.cursor()
        cur.execute("SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
                    (seconds_setting(self.params["lock_timeout"]), seconds_setting(self.params["statement_timeout"])))
        return cur

    def rollback(self):
        try:
            if self.sa_trans is not None and self.sa_trans.is_active:
                self.sa_trans.rollback()
            else:
                self.conn.rollback()
        finally:
            self.sa_trans = None
            self.conn.autocommit = True

    def commit(self):
        if self.sa_trans is not None:
            self.sa_trans.commit()
            self.sa_trans = None
        else:
            self.conn.commit()
        self.conn.autocommit = True

    def close(self):
        if self.conn is not None:
            try:
                if not self.conn.closed:
                    if not self.conn.autocommit:
                        self.conn.rollback()
                    self.conn.close()
            except Exception:  # pylint: disable=broad-except  # the connection may already be gone
                pass

    # -- reading

    def read(self):
        params = self.params
        cur = self.conn.cursor()
        tables = bookkeeping_tables(cur)
        tool = mig.detect_tool(dict((k, v) for k, v in tables.items() if k not in mig.LOCK_TABLES), params["tool"])
        mig.check_foreign_locks(dict((t, fetch_rows(cur, t)) for t in mig.LOCK_TABLES if t in tables))
        self.result["tool"] = {"name": tool.name, "table": tool.table, "style": tool.style}
        if tool.name == "alembic" and self.sa_conn is None:
            self.sa_conn = sqlalchemy_connection(self.conn)
            self.conn.autocommit = True
        project = Project(tool, params["migrations_dir"], cur, self.conn.server_version)
        plan = project.plan(params.get("target_version"), params.get("steps"))
        snapshot = schema_snapshot(cur)
        return project, plan, snapshot

    def describe_plan(self, project, plan, snapshot):
        result = self.result
        digest = mig.schema_digest(snapshot)
        result.update(from_version=plan.from_version, to_version=plan.to_version, from_ref=plan.from_version,
                      to_ref=plan.to_version, schema_sha256_before=digest, selected_by=plan.selected_by,
                      binding=mig.binding(plan.from_version, digest), notes=project.notes)
        self.update_receipt(None, None)
        return digest

    def update_receipt(self, entries, lossy):
        self.result["receipt_fields"] = mig.receipt_fields(self.component(), self.plan, self.result.get("backup_location"),
                                                           lossy, entries)
        self.update_refs()

    def update_refs(self):
        """A schema is named by its catalog digest: current_ref before, rollback_target_ref after the downgrade (or
        after its rehearsal, in check mode)."""
        fields = self.result.setdefault("receipt_fields", {})
        for key, digest in (("current_ref", "schema_sha256_before"), ("rollback_target_ref", "schema_sha256_after")):
            fields[key] = ("sha256:" + self.result[digest]) if self.result.get(digest) else None
            self.result[key] = fields[key]

    def component(self):
        return "database %s" % (self.params.get("db") or os.environ.get("PGDATABASE") or "(default)")

    # -- applying

    def apply(self, cur, destination, rehearsal=False):
        """Revert the plan's steps in the current transaction (bookkeeping included). In a rehearsal statements that
        cannot run in a transaction are skipped and listed (downgrade_in_pieces runs those)."""
        skipped = []
        tool = self.project.tool
        if tool.name == "alembic":
            try:
                self.project.alembic.downgrade(self.sa_conn, destination or "base")
            except RollbackError:
                raise
            except Exception as exc:  # pylint: disable=broad-except  # SQLAlchemy wraps the driver's errors
                orig = getattr(exc, "orig", None)
                step = Step(", ".join(s.version for s in self.steps), "", "alembic revisions")
                if orig is not None and isinstance(orig, _pg.psycopg2.Error):
                    raise self.statement_error(orig, step, None)
                raise RollbackError("Alembic's downgrade failed: %s: %s; the downgrade was rolled back and nothing was "
                                    "changed" % (type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip()
                                                 else ""))
            return skipped
        remaining = list(self.project.applied.versions)
        for step in self.steps:
            flagged = dict(step.analysis.non_transactional)
            for index, statement in enumerate(step.analysis.statements):
                if index in flagged:
                    if not rehearsal:
                        raise Refused("%s line %d: %s; nothing was changed" % (step.file, statement.line, flagged[index]),
                                      "non_transactional")
                    skipped.append({"version": step.version, "line": statement.line, "statement": statement.text[:200],
                                    "reason": flagged[index]})
                    continue
                self.execute(cur, step, statement)
            remaining = [v for v in remaining if not mig.same_version(v, step.version)]
            self.record_revert(cur, step, remaining[-1] if remaining else None)
        return skipped

    def execute(self, cur, step, statement):
        try:
            cur.execute(statement.text)
        except _pg.psycopg2.Error as exc:
            raise self.statement_error(exc, step, statement)

    def statement_error(self, exc, step, statement):
        if self.conn.closed:
            return self.connection_error(exc, "down migration %s" % step.version)
        code = getattr(exc, "pgcode", None)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = "%s line %d (%s)" % (step.file, statement.line, statement.text[:120]) if statement else step.file
        if code == "55P03":
            return Refused("lock_timeout: %s waited more than %ss for a lock held by another session (%s); the "
                           "downgrade was rolled back and nothing was changed"
                           % (where, self.params["lock_timeout"], message), "lock_timeout")
        if code == "57014":
            return RollbackError("statement_timeout: %s ran longer than %ss (%s); the downgrade was rolled back and "
                                 "nothing was changed" % (where, self.params["statement_timeout"], message))
        return RollbackError("down migration %s failed at %s: %s; the downgrade was rolled back and nothing was "
                             "changed" % (step.version, where, message), sqlstate=code)

    def record_revert(self, cur, step, new_current):
        tool = self.project.tool
        sql = _pg.sql
        if tool.name == "native" and tool.style == "golang-migrate":
            cur.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(tool.table)))
            if new_current is not None:
                cur.execute(sql.SQL("INSERT INTO {} (version, dirty) VALUES (%s, false)").format(
                    sql.Identifier(tool.table)), (int(new_current),))
        elif tool.name == "native":
            rows = [r for r in self.project.rows if mig.same_version(r["version"], step.version)]
            cur.execute(sql.SQL("DELETE FROM {} WHERE version = %s").format(sql.Identifier(tool.table)),
                        (rows[0]["version"] if rows else step.version,))
        elif tool.name == "flyway":
            cur.execute(sql.SQL("INSERT INTO {} (installed_rank, version, description, type, script, checksum, "
                                "installed_by, execution_time, success) SELECT COALESCE(max(installed_rank), 0) + 1, "
                                "%s, %s, %s, %s, %s, %s, 0, true FROM {}").format(
                sql.Identifier(tool.table), sql.Identifier(tool.table)),
                (step.version, step.name, self.params["flyway_undo_type"], os.path.basename(step.file),
                 mig.flyway_checksum(step.sql),
                 (self.params.get("actor") or self.params.get("login_user") or "governed.rollback")[:100]))

    # -- data loss

    def count_losses(self, cur, dropped, names, lock=False):
        table_rows, column_values = {}, {}
        sql = _pg.sql
        affected = sorted(set([t["table"] for t in dropped["tables"]] + [c["table"] for c in dropped["columns"]]))
        for table in affected:
            if table not in names:
                raise Refused("table %s, which the rehearsal saw dropped, is gone; re-plan, nothing was changed" % table,
                              "changed")
            schema, name = names[table]
            ident = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))
            if lock:
                cur.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(ident))
            columns = [c["column"] for c in dropped["columns"] if c["table"] == table]
            select = [sql.SQL("count(*)")] + [sql.SQL("count({})").format(sql.Identifier(c)) for c in columns]
            cur.execute(sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(select), ident))
            counts = cur.fetchone()
            table_rows[table] = counts[0]
            for column, value in zip(columns, counts[1:]):
                column_values[(table, column)] = value
        return mig.data_loss_report(dropped, table_rows, column_values)

    def rehearse(self):
        """Run the downgrade in a transaction and roll it back: proves it applies, finds what it drops and counts the
        data there. Returns (entries, lossy, skipped, snapshot_after)."""
        started = time.monotonic()
        self.set_phase("rehearsal")
        cur = self.begin()
        try:
            before = catalog_identities(cur)
            cur.execute("SAVEPOINT governed_rehearsal")
            skipped = self.apply(cur, self.plan.to_version, rehearsal=True)
            after = catalog_identities(cur)
            snapshot_after = schema_snapshot(cur)
            cur.execute("ROLLBACK TO SAVEPOINT governed_rehearsal")
            dropped = mig.dropped_objects(before, after)
            entries, lossy = self.count_losses(cur, dropped, before["names"])
        except _pg.psycopg2.Error as exc:
            self.safe_rollback()
            raise self.connection_error(exc, "the rehearsal")
        finally:
            if not self.conn.closed and not self.conn.autocommit:
                self.safe_rollback()
        self.result["rehearsal"] = {"applied": True, "rolled_back": True, "skipped": skipped,
                                    "seconds": round(time.monotonic() - started, 3)}
        return entries, lossy, skipped, snapshot_after, dropped

    def connection_error(self, exc, phase):
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if self.conn is None or self.conn.closed or isinstance(exc, _pg.psycopg2.OperationalError) and \
                getattr(exc, "pgcode", None) in (None, "57P01", "57P02", "57P03"):
            return RollbackError("the database connection was lost during %s (%s); the transaction was not committed, so "
                                 "none of the downgrade was applied" % (phase, message), connection_lost=True)
        return RollbackError("%s failed: %s; rolled back, nothing was changed" % (phase, message),
                             sqlstate=getattr(exc, "pgcode", None))

    # -- digests

    def ensure_own_schema(self, cur):
        cur.execute("SAVEPOINT governed_own_schema")
        try:
            cur.execute("CREATE SCHEMA IF NOT EXISTS %s" % OWN_SCHEMA)
            cur.execute("CREATE TABLE IF NOT EXISTS %s.schema_digests (tool text NOT NULL, version text NOT NULL, "
                        "schema_sha256 text NOT NULL, snapshot jsonb NOT NULL, recorded_at timestamptz NOT NULL "
                        "DEFAULT now(), recorded_by text, PRIMARY KEY (tool, version))" % OWN_SCHEMA)
            cur.execute("CREATE TABLE IF NOT EXISTS %s.downgrades (id bigserial PRIMARY KEY, at timestamptz NOT NULL "
                        "DEFAULT now(), tool text NOT NULL, from_version text, to_version text, reverted jsonb NOT NULL, "
                        "backup_location text, backup_sha256 text, data_loss jsonb, non_transactional jsonb, actor text, "
                        "incident_id text, reason text, schema_sha256_before text, schema_sha256_after text)"
                        % OWN_SCHEMA)
            cur.execute("RELEASE SAVEPOINT governed_own_schema")
            return True
        except _pg.psycopg2.Error as exc:
            if getattr(exc, "pgcode", None) in ("55P03", "57014") or self.conn.closed:
                raise
            cur.execute("ROLLBACK TO SAVEPOINT governed_own_schema")
            self.module.warn("schema digests are not recorded (cannot create schema %s: %s); schema_drift cannot be "
                             "told later" % (OWN_SCHEMA, str(exc).strip().splitlines()[0]))
            return False

    def recorded_snapshot(self, cur, version):
        cur.execute("SELECT to_regclass(%s)", ("%s.schema_digests" % OWN_SCHEMA,))
        if cur.fetchone()[0] is None or version is None:
            return None, None
        cur.execute("SELECT snapshot, recorded_at::text FROM %s.schema_digests WHERE tool = %%s AND version = %%s"
                    % OWN_SCHEMA, (self.project.tool.name, str(version)))
        row = cur.fetchone()
        return (row[0], row[1]) if row else (None, None)

    def record_digest(self, cur, version, snapshot):
        if version is None:
            return
        cur.execute("INSERT INTO %s.schema_digests (tool, version, schema_sha256, snapshot, recorded_by) VALUES (%%s, "
                    "%%s, %%s, %%s, %%s) ON CONFLICT (tool, version) DO NOTHING" % OWN_SCHEMA,
                    (self.project.tool.name, str(version), mig.schema_digest(snapshot), _common.canonical_json(snapshot),
                     self.params.get("actor") or "governed.rollback"))

    def record_downgrade(self, cur, entries, non_transactional, digest_after):
        params = self.params
        cur.execute("INSERT INTO %s.downgrades (tool, from_version, to_version, reverted, backup_location, "
                    "backup_sha256, data_loss, non_transactional, actor, incident_id, reason, schema_sha256_before, "
                    "schema_sha256_after) VALUES (%%s, %%s, %%s, %%s, %%s, %%s, %%s, %%s, %%s, %%s, %%s, %%s, %%s)"
                    % OWN_SCHEMA,
                    (self.project.tool.name, self.plan.from_version, self.plan.to_version,
                     _common.canonical_json(self.plan.revert), self.result.get("backup_location"),
                     self.result.get("backup_sha256"), _common.canonical_json(entries),
                     _common.canonical_json(non_transactional), params.get("actor"), params.get("incident_id"),
                     params.get("reason"), self.result.get("schema_sha256_before"), digest_after))

    # -- the run

    def run(self):
        params = self.params
        result = self.result
        self.connect()
        self.set_phase("plan")
        self.project, self.plan, snapshot_before = self.read()
        digest_before = self.describe_plan(self.project, self.plan, snapshot_before)
        if self.plan.skipped_reason:
            result["skipped_reason"] = self.plan.skipped_reason
            result["approval_facts"] = {"data_loss": False, "non_transactional": False}
            if self.module._diff:
                text = mig.snapshot_text(snapshot_before)
                result["diff"] = {"before": text, "after": text}
            return
        self.steps = self.project.steps(self.plan)
        result["migrations_reverted"] = [s.summary() for s in self.steps]
        flagged = [dict(f, version=s["version"], file=s["file"]) for s in result["migrations_reverted"]
                   for f in s["non_transactional"]]
        would_refuse = []
        if flagged:
            message = ("non-transactional statements in the downgrade: %s; they cannot run inside the downgrade's "
                       "transaction. Set allow_non_transactional=true to run them on their own (a failure after one "
                       "leaves that migration half-applied)" % "; ".join("%s line %s: %s" % (f["file"], f["line"], f["reason"])
                                                                         for f in flagged))
            if not params["allow_non_transactional"]:
                if not self.module.check_mode:
                    raise Refused(message, "non_transactional", non_transactional_statements=flagged)
                would_refuse.append(message)
        if self.project.tool.name == "alembic" and flagged and params["allow_non_transactional"]:
            raise Refused("allow_non_transactional is not supported for Alembic projects (use Alembic's "
                          "autocommit_block); nothing was changed", "non_transactional")

        own_key = mig.own_lock_id(self.conn.info.dbname)
        keys = [(own_key, "the downgrade lock of database %s" % self.conn.info.dbname)]
        if self.project.tool.style == "golang-migrate":
            keys.append((mig.golang_migrate_lock_id(self.conn.info.dbname), "golang-migrate's lock"))
        self.set_phase("lock")
        for key, what in keys:
            take_advisory_lock(self.conn, key, params["advisory_lock_timeout"], what)
        # Under the lock: read again, the plan must not have moved.
        project, plan, snapshot_before = self.read()
        if (plan.from_version, plan.to_version, plan.revert) != (self.plan.from_version, self.plan.to_version,
                                                                 self.plan.revert):
            raise Refused("the database changed while waiting for the lock (now at %s); re-plan" % plan.from_version,
                          "changed")
        digest_before = mig.schema_digest(snapshot_before)
        result["schema_sha256_before"] = digest_before
        result["binding"] = mig.binding(self.plan.from_version, digest_before)
        mismatch = mig.binding_mismatch(params.get("expected_binding"), result["binding"])
        if mismatch and not self.module.check_mode:
            approved = dict((k, (params["expected_binding"] or {}).get(k)) for k in mismatch)
            now = dict((k, result["binding"].get(k)) for k in mismatch)
            raise Refused("the database changed since it was approved: re-plan (%s: approved %s, now %s); nothing was "
                          "changed" % (", ".join(mismatch), approved, now), "binding_mismatch")

        if not self.module.check_mode:
            # Before touching anything (the rehearsal too): the verified backup.
            self.set_phase("backup")
            data_tables = catalog_identities(self.conn.cursor())["data_tables"]
            path, sha, details = take_backup(params, self.conn.info.dbname, self.plan.from_version, data_tables,
                                             self.secrets)
            result.update(backup_location=path, backup_sha256=sha, backup=details)
            self.update_receipt(None, None)

        entries, lossy, skipped, snapshot_rehearsed, dropped = self.rehearse()
        result.update(data_loss=entries, data_lost=lossy)
        result["approval_facts"] = {"data_loss": lossy, "non_transactional": bool(flagged)}
        self.update_receipt(entries, lossy)
        loss_message = ("the downgrade drops data: %s. Set accept_data_loss=true to downgrade anyway (the backup keeps "
                        "it)" % mig.describe_loss(entries))
        if lossy and not params["accept_data_loss"]:
            if not self.module.check_mode:
                raise Refused(loss_message + "; nothing was changed (the backup taken is kept)", "data_loss")
            would_refuse.append(loss_message)
        if self.module.check_mode:
            result["would_refuse"] = would_refuse
            result["changed"] = True
            result["schema_sha256_after"] = mig.schema_digest(snapshot_rehearsed)
            self.update_refs()
            recorded, when = self.read_baseline()
            result["drift_baseline"] = when
            result["schema_drift"] = mig.schema_diff(recorded, snapshot_rehearsed) if recorded is not None else []
            self.diff(snapshot_before, snapshot_rehearsed)
            result["plan"] = {"migrations": result["migrations_reverted"], "selected_by": self.plan.selected_by,
                              "rehearsal": "applied inside a transaction and rolled back; nothing was changed"}
            return

        non_tx = bool(flagged) and params["allow_non_transactional"]
        if non_tx:
            snapshot_after, ran = self.downgrade_in_pieces(entries)
        else:
            snapshot_after, ran = self.downgrade_in_one_transaction(dropped)
        result["non_transactional"] = ran
        result["changed"] = True
        result["schema_sha256_after"] = mig.schema_digest(snapshot_after)
        self.update_refs()
        self.diff(snapshot_before, snapshot_after)

    def read_baseline(self):
        cur = self.conn.cursor()
        try:
            return self.recorded_snapshot(cur, self.plan.to_version)
        finally:
            if not self.conn.autocommit:
                self.conn.rollback()

    def diff(self, before, after):
        if self.module._diff:
            self.result["diff"] = {"before_header": "schema at %s" % (self.plan.from_version or "base"),
                                   "after_header": "schema at %s" % (self.plan.to_version or "base"),
                                   "before": mig.snapshot_text(before), "after": mig.snapshot_text(after)}

    def check_unchanged(self, cur):
        """Inside the downgrade's transaction: the bookkeeping still says what the plan was made from."""
        project = Project(self.project.tool, self.params["migrations_dir"], cur, self.conn.server_version)
        if project.applied.current != self.plan.from_version:
            raise Refused("the database moved from %s to %s since the plan (during the backup?); re-plan, nothing was "
                          "changed" % (self.plan.from_version, project.applied.current), "changed")
        if self.project.tool.name == "alembic":
            return
        self.project.rows = project.rows

    def downgrade_in_one_transaction(self, rehearsed):
        result = self.result
        self.set_phase("downgrade")
        cur = self.begin()
        try:
            self.check_unchanged(cur)
            before = catalog_identities(cur)
            # Freeze and recount what the rehearsal found dropped: a loss that appeared since is refused too.
            entries, lossy = self.count_losses(cur, rehearsed, before["names"], lock=True)
            if lossy and not self.params["accept_data_loss"]:
                raise Refused("the downgrade drops data written since the rehearsal: %s; nothing was changed. Set "
                              "accept_data_loss=true to downgrade anyway" % mig.describe_loss(entries), "data_loss",
                              data_loss=entries, data_lost=True)
            recording = self.params["record_digests"] and self.ensure_own_schema(cur)
            snapshot_before = schema_snapshot(cur)
            if recording:
                self.record_digest(cur, self.plan.from_version, snapshot_before)
            self.apply(cur, self.plan.to_version)
            after = catalog_identities(cur)
            dropped = mig.dropped_objects(before, after)
            unexpected = sorted(set(x["table"] for x in dropped["tables"]) - set(x["table"] for x in rehearsed["tables"])) + \
                sorted(set("%s.%s" % (x["table"], x["column"]) for x in dropped["columns"])
                       - set("%s.%s" % (x["table"], x["column"]) for x in rehearsed["columns"]))
            if unexpected:
                raise Refused("the downgrade dropped %s, which the rehearsal did not; rolled back, nothing was changed"
                              % ", ".join(unexpected), "changed")
            snapshot_after = schema_snapshot(cur)
            result.update(data_loss=entries, data_lost=lossy)
            self.update_receipt(entries, lossy)
            recorded, when = self.recorded_snapshot(cur, self.plan.to_version) if recording else (None, None)
            result["drift_baseline"] = when
            result["schema_drift"] = mig.schema_diff(recorded, snapshot_after) if recorded is not None else []
            if recording:
                self.record_downgrade(cur, entries, [], mig.schema_digest(snapshot_after))
        except _pg.psycopg2.Error as exc:
            self.safe_rollback()
            raise self.connection_error(exc, "the downgrade")
        except BaseException:
            self.safe_rollback()
            raise
        try:
            self.commit()
        except _pg.psycopg2.Error as exc:
            raise RollbackError("COMMIT of the downgrade failed (%s): whether it was applied is unknown; read %s before "
                                "anything else" % (str(exc).strip(), self.project.tool.table))
        self.committed()
        return snapshot_after, []

    def committed(self):
        """The moment the downgrade's (last) COMMIT returned: the moment of mitigation, also in the receipt's
        details."""
        self.result["committed_at"] = _common.utc_stamp_micro()
        self.result["receipt_fields"].setdefault("details", {})["committed_at"] = self.result["committed_at"]

    def safe_rollback(self):
        try:
            if not self.conn.closed:
                self.rollback()
        except Exception:  # pylint: disable=broad-except  # the connection may be gone; nothing was committed
            pass

    def downgrade_in_pieces(self, entries):
        """allow_non_transactional: migration by migration; the statements that cannot run in a transaction on their
        own, the others in transactions between them. golang-migrate's row is marked dirty while a migration runs."""
        ran = []
        tool = self.project.tool
        sql = _pg.sql
        remaining = list(self.project.applied.versions)
        if self.params["record_digests"]:
            cur = self.begin()
            if self.ensure_own_schema(cur):
                self.record_digest(cur, self.plan.from_version, schema_snapshot(cur))
            self.commit()
        self.set_phase("downgrade")
        cur = self.conn.cursor()
        for step in self.steps:
            if tool.style == "golang-migrate":
                cur.execute(sql.SQL("UPDATE {} SET dirty = true").format(sql.Identifier(tool.table)))
            flagged = dict(step.analysis.non_transactional)
            segment = []
            for index, statement in enumerate(step.analysis.statements + [None]):
                if statement is not None and index not in flagged:
                    segment.append(statement)
                    continue
                if segment:
                    cur = self.begin()
                    try:
                        for item in segment:
                            self.execute(cur, step, item)
                    except BaseException:
                        self.safe_rollback()
                        raise self.half_applied(step, ran)
                    self.commit()
                    segment = []
                if statement is not None:
                    cur = self.conn.cursor()
                    try:
                        cur.execute(statement.text)
                    except _pg.psycopg2.Error as exc:
                        raise self.half_applied(step, ran, exc)
                    ran.append({"version": step.version, "file": step.file, "line": statement.line,
                                "statement": statement.text[:200], "reason": flagged[index]})
            remaining = [v for v in remaining if not mig.same_version(v, step.version)]
            cur = self.begin()
            self.record_revert(cur, step, remaining[-1] if remaining else None)
            self.commit()
        cur = self.begin()
        snapshot_after = schema_snapshot(cur)
        if self.params["record_digests"] and self.ensure_own_schema(cur):
            recorded, when = self.recorded_snapshot(cur, self.plan.to_version)
            self.result["drift_baseline"] = when
            self.result["schema_drift"] = mig.schema_diff(recorded, snapshot_after) if recorded is not None else []
            self.record_downgrade(cur, entries, ran, mig.schema_digest(snapshot_after))
        self.commit()
        self.committed()
        return snapshot_after, ran

    def half_applied(self, step, ran, exc=None):
        detail = (str(exc).strip().splitlines() or [""])[0] if exc is not None else "see the error above"
        return RollbackError("the downgrade failed in migration %s after statements outside a transaction had run (%s); "
                             "the migrations before it are reverted and this one is half-applied%s. Restore from the "
                             "backup %s or repair by hand" % (step.version, detail,
                                                              " (golang-migrate row left dirty)"
                                                              if self.project.tool.style == "golang-migrate" else "",
                                                              self.result.get("backup_location")),
                             non_transactional=ran, half_applied=step.version)
