"""governed.rollback.snapshot_rollback against the sandbox's AUREUS Guard: real HTTPS, real PostgreSQL rows.

Each test deploys its own throwaway pipeline twice (good, then corrupted: the Guard snapshots the good one first),
so the seeded credit_risk_pipeline_v2 is never touched. Faults are injected with the admin token; they are global to
the Guard, so these tests run one at a time, and each clears the faults it leaves. "Nothing changed" is proved by the
pipeline's content digest and version and by the Guard's list of operations for the snapshot.
"""

import hashlib
import json
import os
import ssl
import urllib.error
import urllib.request
import uuid

import pytest

from tests.integration import _playbook as pb

MODULE = "governed.rollback.snapshot_rollback"
GOOD = {"config": {"model": "credit_risk_xgb", "risk_thresholds": {"probability_of_default_max": 0.05}},
        "steps": [{"name": "ingest"}, {"name": "validate_pii_masking"}, {"name": "score"}],
        "datasets": {"inputs": ["credit_risk"]}, "governance": {"approval_required": True}}
BAD = {"config": {"model": "credit_risk_xgb", "risk_thresholds": {"probability_of_default_max": 0.5}},
       "steps": [{"name": "ingest"}, {"name": "score"}], "datasets": {"inputs": ["credit_risk"]},
       "governance": {"approval_required": False}, "debug_overrides": {"skip_validation": True}}


def sha(value):
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                          .encode("utf-8")).hexdigest()


class Guard:
    def __init__(self, env):
        self.url = env["SANDBOX_GUARD_URL"]
        self.ca = env["SANDBOX_GUARD_CA_FILE"]
        self.context = ssl.create_default_context(cafile=self.ca)
        self.tokens = {}
        for role, var in (("operator", "SANDBOX_GUARD_TOKEN_FILE"), ("auditor", "SANDBOX_GUARD_READONLY_TOKEN_FILE"),
                          ("admin", "SANDBOX_GUARD_ADMIN_TOKEN_FILE")):
            with open(env[var]) as handle:
                self.tokens[role] = handle.read().strip()

    def call(self, method, path, body=None, token="operator"):
        data = json.dumps(body).encode() if body is not None else (b"" if method in ("POST", "PUT") else None)
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": "Bearer " + self.tokens[token], "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.context) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def ok(self, method, path, body=None, token="operator"):
        status, answer = self.call(method, path, body, token)
        assert 200 <= status < 300, (method, path, status, answer)
        return answer

    def fault(self, **body):
        return self.ok("POST", "/api/admin/faults", body, token="admin")

    def clear_faults(self):
        self.ok("DELETE", "/api/admin/faults", token="admin")

    def operations(self, snapshot_id):
        return self.ok("GET", "/api/rollback?snapshot_id=" + snapshot_id)["operations"]

    def audit(self, operation_id):
        return [e["action"] for e in self.ok("GET", "/api/audit?operation_id=" + operation_id)["events"]]


class Pipeline:
    """A throwaway pipeline deployed good then corrupted; its good state is in ``snapshot_id``."""

    def __init__(self, guard, good=None, bad=None):
        self.guard = guard
        self.name = "t-pipe-" + uuid.uuid4().hex[:10]
        guard.ok("PUT", "/api/pipelines/" + self.name, {"content": GOOD if good is None else good})
        self.snapshot_id = guard.ok("PUT", "/api/pipelines/" + self.name,
                                    {"content": BAD if bad is None else bad})["snapshot_id"]
        self.rollback_id = "rollback-t-" + uuid.uuid4().hex[:12]

    def state(self):
        """What "nothing changed" compares: content digest and version."""
        body = self.guard.ok("GET", "/api/pipelines/" + self.name)
        return {"sha256": sha(body["content"]), "version": body["version"], "restored_from": body["restored_from"]}

    def args(self, **extra):
        args = {"url": self.guard.url, "ca_path": self.guard.ca, "state_type": "pipeline_deployment",
                "target": self.name, "rollback_id": self.rollback_id, "approver": "data-owner", "actor": "oncall",
                "incident_id": "INC-T", "reason": "Corrupted pipeline configuration", "poll_interval": 0.2,
                "wait_timeout": 30}
        args.update(extra)
        return args


@pytest.fixture(scope="module")
def guard(sandbox_env):
    return Guard(sandbox_env)


@pytest.fixture
def pipeline(guard):
    guard.clear_faults()
    yield Pipeline(guard)
    guard.clear_faults()


@pytest.fixture
def run(tmp_path, guard):
    """Run the module ad hoc with the operator token in AUREUS_GUARD_TOKEN (as an AWX credential injects it)."""
    runs = []

    def go(args, check=False, diff=False, token="operator"):
        env = {"AUREUS_GUARD_TOKEN": guard.tokens.get(token, token)}
        failed, result, stdout = pb.run_module_with_output(os.path.join(str(tmp_path), "r%d" % len(runs)), MODULE, args,
                                                           envvars=env, check=check, diff=diff)
        runs.append(stdout + json.dumps(result))
        for role, value in guard.tokens.items():
            assert value not in stdout and value not in json.dumps(result), "the %s token leaked" % role
        return failed, result

    go.outputs = runs
    return go


def assert_nothing_restored(pipeline, before):
    assert pipeline.state() == before
    assert pipeline.guard.operations(pipeline.snapshot_id) == []


def test_plan_then_restore_then_no_change(pipeline, run, guard):
    before = pipeline.state()
    assert before["sha256"] == sha(BAD)
    failed, plan = run(pipeline.args(), check=True, diff=True)
    assert not failed and plan["changed"], plan
    assert plan["snapshot_id"] == pipeline.snapshot_id and plan["state_type"] == "pipeline_deployment"
    assert plan["from_ref"] == "sha256:" + sha(BAD) and plan["to_ref"] == "sha256:" + sha(GOOD)
    assert plan["binding"] == {"snapshot_id": pipeline.snapshot_id, "snapshot_sha256": sha(GOOD),
                               "current_sha256": sha(BAD)}
    assert plan["review"]["matches"] and len(plan["review"]["manifest"]) == 4
    assert plan["items"] == {"added": [], "removed": ["debug_overrides"], "changed": ["config", "governance", "steps"]}
    assert plan["diff"]["after"] == GOOD and plan["plan"]["action"] == "restore"
    assert plan["receipt_fields"]["details"]["state_type"] == "pipeline_deployment"
    assert_nothing_restored(pipeline, before)

    failed, done = run(pipeline.args(expected_binding=plan["binding"]))
    assert not failed and done["changed"], done.get("msg")
    assert done["phase"] == "Completed" and done["items_restored"] == done["items_total"] == 5
    assert done["verified"] and done["digest_before"] == sha(BAD) and done["digest_after"] == sha(GOOD)
    assert done["replayed"] is False and done["errors"] == []
    after = pipeline.state()
    assert after["sha256"] == sha(GOOD) and after["restored_from"] == pipeline.snapshot_id
    operations = guard.operations(pipeline.snapshot_id)
    assert [o["operation_id"] for o in operations] == [done["operation_id"]]
    assert operations[0]["idempotency_key"] == done["idempotency_key"]
    assert pipeline.rollback_id in operations[0]["reason"] and operations[0]["approver"] == "data-owner"
    assert guard.audit(done["operation_id"]) == ["rollback.requested", "rollback.completed"]

    failed, again = run(pipeline.args())
    assert not failed and not again["changed"] and "already has the content" in again["skipped_reason"]
    assert again["verified"] and len(guard.operations(pipeline.snapshot_id)) == 1


def test_the_binding_refuses_when_the_pipeline_moved_since_the_plan(pipeline, run, guard):
    failed, plan = run(pipeline.args(), check=True)
    guard.ok("PUT", "/api/pipelines/" + pipeline.name, {"content": dict(BAD, extra={"x": 1})})
    before = pipeline.state()
    failed, result = run(pipeline.args(expected_binding=plan["binding"]))
    assert failed and result["refused"] == "changed_since_approved" and "current_sha256" in result["msg"]
    assert_nothing_restored(pipeline, before)


def test_a_snapshot_that_does_not_match_its_manifest_is_refused(pipeline, run, guard):
    guard.ok("POST", "/api/admin/snapshots/%s/tamper" % pipeline.snapshot_id, {}, token="admin")
    before = pipeline.state()
    failed, result = run(pipeline.args())
    assert failed and result["refused"] == "digest_mismatch", result
    assert "does not match its manifest" in result["msg"] and not result["review"]["matches"]
    assert not result["changed"]
    assert_nothing_restored(pipeline, before)


def test_a_partially_failed_restore_fails_the_task(pipeline, run, guard):
    guard.fault(action="restore_outcome", phase="PartiallyFailed", count=1)
    failed, result = run(pipeline.args())
    assert failed and result["changed"] and result["phase"] == "PartiallyFailed", result
    assert "ended PartiallyFailed" in result["msg"] and result["items_restored"] < result["items_total"]
    assert result["errors"] and not result["verified"]
    assert guard.audit(result["operation_id"])[-1] == "rollback.partially_failed"


def test_500s_mid_poll_are_retried_until_the_deadline(pipeline, run, guard):
    guard.fault(action="error", status=500, method="GET", path="/api/rollback/", count=3)
    failed, result = run(pipeline.args())
    assert not failed and result["phase"] == "Completed" and result["verified"], result.get("msg")
    assert len([e for e in result["transient_errors"] if "500" in e]) == 3
    assert len(guard.operations(pipeline.snapshot_id)) == 1


def test_a_poll_timeout_fails_and_a_rerun_with_the_same_id_never_restores_twice(pipeline, run, guard):
    guard.fault(action="hang", seconds=4, method="GET", path="/api/rollback/", count=5)
    failed, result = run(pipeline.args(wait_timeout=2, request_timeout=1))
    assert failed and result["changed"] and "re-run with the same rollback_id" in result["msg"], result
    assert result["transient_errors"] and result["operation_id"]
    guard.clear_faults()
    failed, again = run(pipeline.args())
    assert not failed, again.get("msg")
    assert again["verified"] and pipeline.state()["sha256"] == sha(GOOD)
    operations = guard.operations(pipeline.snapshot_id)
    assert [o["operation_id"] for o in operations] == [result["operation_id"]]
    # Either the restore had finished (nothing left to do) or the same key replayed the same operation.
    assert (not again["changed"]) or (again["replayed"] and again["operation_id"] == result["operation_id"])


def test_a_lost_answer_to_the_restore_request_is_retried_with_the_same_key(pipeline, run, guard):
    guard.fault(action="malformed_json", method="POST", path="/api/rollback", count=1)
    failed, result = run(pipeline.args())
    assert not failed and result["replayed"] and result["verified"], result
    assert any("malformed JSON" in e for e in result["transient_errors"])
    assert len(guard.operations(pipeline.snapshot_id)) == 1


@pytest.mark.parametrize("token, code", [("wrong-token-" + uuid.uuid4().hex, "unauthorized"), ("auditor", "forbidden")],
                         ids=["wrong-token", "read-only-token"])
def test_a_wrong_token_or_a_read_only_one_is_refused_and_changes_nothing(pipeline, run, guard, token, code):
    before = pipeline.state()
    failed, result = run(pipeline.args(), token=token)
    assert failed and result["refused"] == code, result
    assert ("401" if code == "unauthorized" else "403") in result["msg"] and not result["changed"]
    assert_nothing_restored(pipeline, before)
    assert guard.tokens.get(token, token) not in "".join(run.outputs)


def test_an_unknown_snapshot_id_is_refused_listing_candidates(pipeline, run):
    before = pipeline.state()
    failed, result = run(pipeline.args(snapshot_id="snap-19990101-000000-000000", state_type=None))
    assert failed and result["refused"] == "snapshot_not_found" and "does not exist" in result["msg"], result
    assert pipeline.snapshot_id in [c["id"] for c in result["candidates"]]
    assert_nothing_restored(pipeline, before)


def test_no_snapshot_before_the_incident_is_refused_listing_the_nearest(pipeline, run):
    before = pipeline.state()
    failed, result = run(pipeline.args(before="2001-01-01T00:00:00Z"))
    assert failed and result["refused"] == "no_snapshot" and pipeline.snapshot_id in result["msg"], result
    assert [c["id"] for c in result["candidates"]] == [pipeline.snapshot_id]
    assert_nothing_restored(pipeline, before)


def test_malformed_json_from_the_api_is_a_clear_error_and_changes_nothing(pipeline, run, guard):
    guard.fault(action="malformed_json", method="GET", path="/api/snapshots", count=1)
    before = pipeline.state()
    failed, result = run(pipeline.args())
    assert failed and "malformed JSON" in result["msg"] and not result["changed"], result
    assert_nothing_restored(pipeline, before)


def test_tls_is_verified_by_default(pipeline, run):
    args = pipeline.args()
    del args["ca_path"]
    before = pipeline.state()
    failed, result = run(args)
    assert failed and "certificate" in result["msg"].lower(), result
    assert_nothing_restored(pipeline, before)
