"""The sandbox's AUREUS Guard (sandbox/guard/guard_api.py): real HTTPS, real PostgreSQL rows, no mocks.

Every test that changes the Guard starts from the incident state (`sandbox/seed.sh --reset guard`), and the
module leaves the incident state behind for the drills.
"""

import concurrent.futures
import hashlib
import importlib.util
import json
import os
import socket
import ssl
import time
import urllib.error
import urllib.request
import uuid

import psycopg2
import pytest
import yaml

from tests.sandbox_env import ROOT, reseed
from tests.sandbox_fixtures import wait_until

pytestmark = pytest.mark.sandbox

INCIDENT = "credit_risk_pipeline_v2"
SEED = os.path.join(ROOT, "sandbox", "seed", "guard", "deployments.json")
SPEC = os.path.join(ROOT, "docs", "aureus-guard-api.openapi.yaml")
TERMINAL = ("Completed", "PartiallyFailed", "Failed")


def canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256(value):
    return hashlib.sha256(canonical(value)).hexdigest()


def seeded(pipeline, state):
    with open(SEED) as handle:
        return [d["content"] for d in json.load(handle)["deployments"] if d["pipeline"] == pipeline and d.get("state") == state][0]


class Response:
    def __init__(self, status, headers, raw):
        self.status, self.headers, self.raw = status, headers, raw

    @property
    def json(self):
        return json.loads(self.raw)


class Guard:
    """A small HTTPS client for the Guard; tokens are read from their files and never put in a message."""

    def __init__(self, env):
        self.url = env["SANDBOX_GUARD_URL"]
        self.context = ssl.create_default_context(cafile=env["SANDBOX_GUARD_CA_FILE"])
        self.tokens = {}
        for role, var in (("operator", "SANDBOX_GUARD_TOKEN_FILE"), ("auditor", "SANDBOX_GUARD_READONLY_TOKEN_FILE"),
                          ("admin", "SANDBOX_GUARD_ADMIN_TOKEN_FILE")):
            with open(env[var]) as handle:
                self.tokens[role] = handle.read().strip()
        self.env = env

    def call(self, method, path, body=None, token="operator", headers=None, timeout=5):
        all_headers = {"Content-Type": "application/json"}
        if token is not None:
            all_headers["Authorization"] = "Bearer " + self.tokens.get(token, token)
        all_headers.update(headers or {})
        data = json.dumps(body).encode() if body is not None else (b"" if method in ("POST", "PUT") else None)
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self.context) as response:
                return Response(response.status, response.headers, response.read())
        except urllib.error.HTTPError as exc:
            return Response(exc.code, exc.headers, exc.read())

    def ok(self, method, path, body=None, token="operator", headers=None, status=200):
        response = self.call(method, path, body, token, headers)
        assert response.status == status, "%s %s answered %s: %s" % (method, path, response.status, response.raw[:300])
        return response.json

    def snapshot_of_incident(self):
        found = [s for s in self.ok("GET", "/api/snapshots?target=" + INCIDENT)["snapshots"]
                 if s["description"] == "Before deploying " + INCIDENT]
        assert len(found) == 1
        return found[0]

    def restore(self, snapshot_id, key=None, token="operator"):
        headers = {"Idempotency-Key": key} if key else None
        return self.call("POST", "/api/rollback", {"snapshot_id": snapshot_id, "reason": "Corrupted pipeline configuration",
                                                   "approver": "engineering.lead@example.com"}, token, headers)

    def wait_terminal(self, operation_id, timeout=15, seen=None):
        """Poll the operation until its phase is terminal; the phases seen on the way go to `seen`."""
        seen = [] if seen is None else seen

        def terminal():
            op = self.ok("GET", "/api/rollback/" + operation_id)
            seen.append(op["phase"])
            return op if op["phase"] in TERMINAL else None

        return wait_until(terminal, timeout=timeout, what="operation %s to end" % operation_id, interval=0.1)

    def db(self):
        with open(self.env["SANDBOX_GUARD_PGPASSWORD_FILE"]) as handle:
            password = handle.read().strip()
        return psycopg2.connect(host=self.env["PGHOST"], port=self.env["PGPORT"], user=self.env["SANDBOX_GUARD_PGUSER"],
                                dbname=self.env["SANDBOX_GUARD_PGDATABASE"], password=password)

    def count(self, sql, *args):
        conn = self.db()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchone()[0]
        finally:
            conn.close()


def load_seed_guard():
    spec = importlib.util.spec_from_file_location("seed_guard", os.path.join(ROOT, "sandbox", "guard", "seed_guard.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reset_incident():
    """Run `sandbox/seed.sh --reset guard`: the Guard back in its incident state."""
    return reseed("--reset", "guard")


@pytest.fixture(scope="module")
def guard(sandbox_env):
    if "SANDBOX_GUARD_URL" not in sandbox_env:
        raise RuntimeError("the running sandbox has no AUREUS Guard: restart it (sandbox/down.sh && sandbox/up.sh)")
    yield Guard(sandbox_env)
    reset_incident()  # leave the incident state for the drills


@pytest.fixture
def incident(guard, sandbox_env):
    """The incident state, put back in-process by seed.sh's own seeder (faster than the script per test)."""
    load_seed_guard().main(["seed_guard.py", "--reset"], env=sandbox_env)
    return guard


# ------------------------------------------------------------------ reading
def test_health_needs_no_token_and_tls_is_verified(guard):
    assert guard.ok("GET", "/health", token=None) == {"status": "ok", "database": "ok"}
    assert guard.ok("GET", "/api/health", token=None)["status"] == "ok"
    with pytest.raises(urllib.error.URLError) as caught:
        urllib.request.urlopen(guard.url + "/health", timeout=5, context=ssl.create_default_context())
    assert isinstance(caught.value.reason, ssl.SSLCertVerificationError)


def test_snapshots_list_in_the_runbooks_shape_newest_first_with_filters(incident):
    snapshots = incident.ok("GET", "/api/snapshots")["snapshots"]
    assert [s["description"] for s in snapshots] == ["Before deploying " + INCIDENT, "Before deploying loan_book_pipeline"]
    for snap in snapshots:
        assert {"id", "timestamp", "state_type", "description"} <= set(snap)
        assert snap["id"].startswith("snap-") and snap["timestamp"].endswith("Z")
        assert snap["state_type"] == "pipeline_deployment"
    newest = snapshots[0]
    assert incident.ok("GET", "/api/snapshots?state_type=pipeline_deployment")["snapshots"] == snapshots
    assert incident.ok("GET", "/api/snapshots?state_type=dataset_onboarding")["snapshots"] == []
    assert incident.ok("GET", "/api/snapshots?before=" + newest["timestamp"])["snapshots"] == snapshots[1:]
    assert incident.ok("GET", "/api/snapshots?target=" + INCIDENT)["snapshots"] == [newest]
    assert incident.call("GET", "/api/snapshots?before=yesterday").status == 400


def test_the_snapshot_holds_the_good_state_and_its_digest_matches_its_manifest(incident):
    snap = incident.ok("GET", "/api/snapshots/" + incident.snapshot_of_incident()["id"])
    assert snap["content"] == seeded(INCIDENT, "good")
    assert [m["key"] for m in snap["manifest"]] == sorted(snap["content"])
    for item in snap["manifest"]:
        assert item["sha256"] == sha256(snap["content"][item["key"]]), item["key"]
    assert snap["content_sha256"] == sha256(snap["content"])
    assert snap["target"] == {"kind": "pipeline", "name": INCIDENT}


def test_the_pipeline_is_corrupted_and_its_digest_is_computed_the_same_way(incident):
    pipeline = incident.ok("GET", "/api/pipelines/" + INCIDENT)
    assert pipeline["content"] == seeded(INCIDENT, "corrupted")
    assert pipeline["content_sha256"] == sha256(pipeline["content"])
    assert pipeline["restored_from"] is None
    assert pipeline["content_sha256"] != incident.ok("GET", "/api/snapshots/" + incident.snapshot_of_incident()["id"])["content_sha256"]
    assert incident.call("GET", "/api/pipelines/no_such_pipeline").status == 404
    assert incident.call("GET", "/api/snapshots/snap-00000000-000000-000000").status == 404


# ------------------------------------------------------------------ auth
def test_no_token_or_a_wrong_one_gets_401(guard):
    for token in (None, "not-a-token", guard.tokens["operator"] + "x"):
        response = guard.call("GET", "/api/snapshots", token=token)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.json["error"]["code"] == "unauthorized"


def test_the_read_only_token_reads_but_gets_403_on_a_restore_and_nothing_is_restored(incident):
    assert incident.ok("GET", "/api/snapshots", token="auditor")["snapshots"]
    response = incident.restore(incident.snapshot_of_incident()["id"], key="ro-" + uuid.uuid4().hex, token="auditor")
    assert response.status == 403 and response.json["error"]["code"] == "forbidden"
    assert incident.call("PUT", "/api/pipelines/" + INCIDENT, {"content": {"a": 1}}, token="auditor").status == 403
    assert incident.call("GET", "/api/admin/faults").status == 403  # the operator is no admin either
    assert incident.count("SELECT count(*) FROM operations") == 0
    assert incident.ok("GET", "/api/pipelines/" + INCIDENT)["content"] == seeded(INCIDENT, "corrupted")


# ------------------------------------------------------------------ restore
def test_a_restore_is_accepted_runs_and_completes_and_the_pipeline_then_has_the_snapshots_digest(incident):
    snap = incident.ok("GET", "/api/snapshots/" + incident.snapshot_of_incident()["id"])
    before = incident.ok("GET", "/api/pipelines/" + INCIDENT)
    response = incident.restore(snap["id"])
    assert response.status == 202
    accepted = response.json
    assert response.headers["Location"] == "/api/rollback/" + accepted["operation_id"]
    assert accepted["phase"] == "InProgress" and accepted["completed_at"] is None
    assert accepted["items_total"] == len(set(snap["content"]) | set(before["content"])) == 5
    assert incident.restore(snap["id"]).status == 409  # one restore at a time per pipeline
    seen = []
    op = incident.wait_terminal(accepted["operation_id"], seen=seen)
    assert seen[0] == "InProgress"
    assert op["phase"] == "Completed" and op["items_restored"] == op["items_total"] == 5 and op["errors"] == []
    assert op["started_at"] < op["completed_at"]
    assert op["content_sha256_before"] == before["content_sha256"] and op["content_sha256_after"] == snap["content_sha256"]
    after = incident.ok("GET", "/api/pipelines/" + INCIDENT)
    assert after["content_sha256"] == snap["content_sha256"] and after["content"] == seeded(INCIDENT, "good")
    assert after["restored_from"] == snap["id"] and after["version"] == before["version"] + 1
    events = incident.ok("GET", "/api/audit?operation_id=" + op["operation_id"])["events"]
    assert [e["action"] for e in events] == ["rollback.requested", "rollback.completed"]
    assert events[0]["details"]["approver"] == "engineering.lead@example.com" and events[0]["actor"] == "sandbox-operator"
    assert incident.count("SELECT count(*) FROM operations WHERE id = %s AND phase = 'Completed'", op["operation_id"]) == 1


def test_an_idempotency_key_answers_the_same_operation_and_restores_once(incident):
    snap_id = incident.snapshot_of_incident()["id"]
    key = "rollback-" + uuid.uuid4().hex
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: incident.restore(snap_id, key=key), range(4)))
    assert [r.status for r in responses] == [202] * 4
    assert len({r.json["operation_id"] for r in responses}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 3
    op = incident.wait_terminal(responses[0].json["operation_id"])
    assert op["phase"] == "Completed"
    again = incident.restore(snap_id, key=key)  # a retried task after the restore ended
    assert again.status == 202 and again.json["operation_id"] == op["operation_id"] and again.json["phase"] == "Completed"
    assert incident.count("SELECT count(*) FROM operations") == 1
    assert incident.count("SELECT count(*) FROM audit_events WHERE action = 'rollback.requested'") == 1
    assert incident.count("SELECT count(*) FROM audit_events WHERE action = 'rollback.completed'") == 1
    other = incident.call("POST", "/api/rollback", {"snapshot_id": snap_id, "reason": "another reason", "approver": "x@example.com"},
                          headers={"Idempotency-Key": key})
    assert other.status == 422 and other.json["error"]["code"] == "idempotency_key_reused"


def test_bad_restore_requests_are_refused_and_change_nothing(incident):
    assert incident.restore("snap-does-not-exist").status == 404
    assert incident.call("POST", "/api/rollback", {"snapshot_id": incident.snapshot_of_incident()["id"]}).status == 400
    raw = urllib.request.Request(incident.url + "/api/rollback", data=b"{not json", method="POST",
                                 headers={"Authorization": "Bearer " + incident.tokens["operator"]})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(raw, timeout=5, context=incident.context)
    assert caught.value.code == 400
    assert incident.count("SELECT count(*) FROM operations") == 0


def test_a_deploy_snapshots_the_pipeline_first(incident):
    name = "t_pipeline_" + uuid.uuid4().hex[:6]
    created = incident.ok("PUT", "/api/pipelines/" + name, {"content": {"config": {"v": 1}}}, status=201)
    assert created["snapshot_id"] is None and created["version"] == 1
    deployed = incident.ok("PUT", "/api/pipelines/" + name, {"content": {"config": {"v": 2}}})
    snap = incident.ok("GET", "/api/snapshots/" + deployed["snapshot_id"])
    assert snap["description"] == "Before deploying " + name and snap["state_type"] == "pipeline_deployment"
    assert snap["content"] == {"config": {"v": 1}} and snap["content_sha256"] == created["content_sha256"]
    assert deployed["version"] == 2 and deployed["content_sha256"] == sha256({"config": {"v": 2}})


# ------------------------------------------------------------------ fault injection
def fault(guard, **body):
    return guard.ok("POST", "/api/admin/faults", body, token="admin", status=201)


def test_fault_a_restore_ends_partially_failed(incident):
    snap = incident.snapshot_of_incident()
    fault(incident, action="restore_outcome", phase="PartiallyFailed")
    op = incident.wait_terminal(incident.restore(snap["id"]).json["operation_id"])
    assert op["phase"] == "PartiallyFailed"
    assert op["items_restored"] == op["items_total"] - 1 and [e["item"] for e in op["errors"]] == ["steps"]
    after = incident.ok("GET", "/api/pipelines/" + INCIDENT)
    assert after["content_sha256"] != incident.ok("GET", "/api/snapshots/" + snap["id"])["content_sha256"]
    assert after["content"]["steps"] == seeded(INCIDENT, "corrupted")["steps"]  # the failed item kept its old value
    assert after["content"]["config"] == seeded(INCIDENT, "good")["config"]
    assert [e["action"] for e in incident.ok("GET", "/api/audit?operation_id=" + op["operation_id"])["events"]] == \
        ["rollback.requested", "rollback.partially_failed"]
    assert incident.ok("GET", "/api/admin/faults", token="admin")["faults"][0]["remaining"] == 0


def test_fault_a_restore_ends_failed_and_rolls_everything_back(incident):
    before = incident.ok("GET", "/api/pipelines/" + INCIDENT)
    fault(incident, action="restore_outcome", phase="Failed")
    op = incident.wait_terminal(incident.restore(incident.snapshot_of_incident()["id"]).json["operation_id"])
    assert op["phase"] == "Failed" and op["items_restored"] == 0 and op["errors"]
    after = incident.ok("GET", "/api/pipelines/" + INCIDENT)
    assert after["content_sha256"] == before["content_sha256"] and after["version"] == before["version"]
    assert incident.count("SELECT count(*) FROM audit_events WHERE action = 'rollback.failed' AND operation_id = %s",
                          op["operation_id"]) == 1


def test_fault_operation_gets_answer_500_n_times(incident):
    accepted = incident.restore(incident.snapshot_of_incident()["id"]).json
    fault(incident, action="error", status=500, count=2)
    path = "/api/rollback/" + accepted["operation_id"]
    first, second, third = [incident.call("GET", path) for attempt in range(3)]
    assert (first.status, second.status, third.status) == (500, 500, 200)
    assert first.headers["X-Guard-Fault"] == "error" and first.json["error"]["code"] == "internal"
    assert incident.wait_terminal(accepted["operation_id"])["phase"] == "Completed"
    assert incident.count("SELECT count(*) FROM operations") == 1


def test_fault_operation_gets_hang_so_clients_time_out(incident):
    accepted = incident.restore(incident.snapshot_of_incident()["id"]).json
    fault(incident, action="hang", seconds=2)
    t0 = time.monotonic()
    with pytest.raises((socket.timeout, urllib.error.URLError)):
        incident.call("GET", "/api/rollback/" + accepted["operation_id"], timeout=0.5)
    assert time.monotonic() - t0 < 1.5
    assert incident.wait_terminal(accepted["operation_id"])["phase"] == "Completed"


def test_fault_one_malformed_json_response(incident):
    fault(incident, action="malformed_json", path="/api/snapshots")
    broken = incident.call("GET", "/api/snapshots")
    assert broken.status == 200 and broken.headers["X-Guard-Fault"] == "malformed_json"
    with pytest.raises(ValueError):
        json.loads(broken.raw)
    assert incident.call("GET", "/api/snapshots").json["snapshots"]


def test_faults_only_hit_authenticated_requests(incident):
    fault(incident, action="error", status=503, method="GET", path="/api/snapshots")
    assert incident.call("GET", "/api/snapshots", token="wrong").status == 401
    assert incident.call("GET", "/api/snapshots").status == 503
    assert incident.call("GET", "/api/snapshots").status == 200


def test_fault_a_tampered_snapshot_no_longer_matches_its_manifest(incident):
    snap_id = incident.snapshot_of_incident()["id"]
    assert incident.ok("POST", "/api/admin/snapshots/%s/tamper" % snap_id, {"item": "config"}, token="admin")["item"] == "config"
    snap = incident.ok("GET", "/api/snapshots/" + snap_id)
    manifest = {m["key"]: m["sha256"] for m in snap["manifest"]}
    assert manifest["config"] != sha256(snap["content"]["config"])
    assert manifest["steps"] == sha256(snap["content"]["steps"])
    assert snap["content_sha256"] != sha256(snap["content"])


# ------------------------------------------------------------------ reset, contract, secrets
def test_seed_reset_puts_the_incident_state_back(incident):
    snap_id = incident.snapshot_of_incident()["id"]
    incident.wait_terminal(incident.restore(snap_id).json["operation_id"])
    incident.ok("POST", "/api/admin/snapshots/%s/tamper" % snap_id, token="admin")
    fault(incident, action="error", count=5)
    running = incident.restore(snap_id).json  # still running when the reset comes
    incident.ok("PUT", "/api/pipelines/extra_pipeline", {"content": {"x": 1}}, status=201)

    result = reset_incident()
    assert "AUREUS Guard seeded" in result.stdout

    assert incident.ok("GET", "/api/pipelines/" + INCIDENT)["content"] == seeded(INCIDENT, "corrupted")
    assert incident.call("GET", "/api/pipelines/extra_pipeline").status == 404
    snap = incident.ok("GET", "/api/snapshots/" + incident.snapshot_of_incident()["id"])
    assert snap["content"] == seeded(INCIDENT, "good") and snap["content_sha256"] == sha256(seeded(INCIDENT, "good"))
    assert incident.ok("GET", "/api/rollback")["operations"] == []
    assert incident.call("GET", "/api/rollback/" + running["operation_id"]).status == 404
    assert incident.ok("GET", "/api/admin/faults", token="admin")["faults"] == []
    assert incident.count("SELECT count(*) FROM operations") == 0
    assert incident.count("SELECT count(*) FROM faults") == 0
    assert incident.count("SELECT count(*) FROM snapshots") == 2


def test_the_openapi_contract_documents_what_the_server_serves(guard):
    with open(SPEC) as handle:
        spec = yaml.safe_load(handle)
    assert spec["openapi"].startswith("3.")
    operations = [(method.upper(), path) for path, item in spec["paths"].items() for method in item
                  if method in ("get", "put", "post", "delete")]
    assert len(operations) == 16
    for method, path in operations:
        concrete = path.replace("{snapshot_id}", "snap-x").replace("{operation_id}", "op-x").replace("{name}", INCIDENT)
        # The auditor token: every route answers (200, 403 or 404 for the resource), nothing changes.
        response = guard.call(method, concrete, {} if method in ("POST", "PUT") else None, token="auditor")
        code = response.json.get("error", {}).get("code") if response.status >= 400 else None
        assert code not in ("no_route", "method_not_allowed"), (method, path)
        assert str(response.status) in spec["paths"][path][method.lower()]["responses"], (method, path, response.status)


def test_no_token_or_password_leaks_into_logs_facts_or_the_process_table(guard, sandbox_env):
    state = sandbox_env["SANDBOX_STATE"]
    with open(sandbox_env["SANDBOX_GUARD_PGPASSWORD_FILE"]) as handle:
        secrets = dict(guard.tokens, db_password=handle.read().strip())
    with open(os.path.join(state, "logs", "aureus-guard.log")) as handle:
        log = handle.read()
    with open(os.path.join(state, "sandbox.json")) as handle:
        facts = handle.read()
    with open(os.path.join(state, "pids", "aureus-guard.pid")) as handle:
        with open("/proc/%s/cmdline" % handle.read().strip(), "rb") as cmd:
            cmdline = cmd.read().decode()
    assert "GET /api/snapshots" in log
    leaked = [(name, where) for name, secret in secrets.items() for where, text in
              (("log", log), ("sandbox.json", facts), ("cmdline", cmdline)) if secret in text]
    assert leaked == []
    assert json.loads(facts)["guard_token_file"] == sandbox_env["SANDBOX_GUARD_TOKEN_FILE"]
