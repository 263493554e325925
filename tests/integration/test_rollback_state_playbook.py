"""playbooks/rollback-state.yml end to end on the sandbox's AUREUS Guard, scenario by scenario.

Each scenario deploys its own throwaway pipeline twice (good, then corrupted; the Guard snapshots the good state
first) and runs the playbook from the checkout with the sandbox inventory, overriding target, evidence_dir and
receipt_ledger; the seeded credit_risk_pipeline_v2 is left to the molecule drill. Faults are global to the Guard,
so these scenarios run one at a time and clear the faults they leave. "Nothing changed" is the pipeline's content
digest and version and the Guard's list of operations for the snapshot.
"""

import json
import os
import secrets

import pytest

from tests.integration import _playbook as pb
from tests.integration.test_snapshot_rollback import BAD, GOOD, Guard, Pipeline, sha

PLAYBOOK = "playbooks/rollback-state.yml"
PLAN_TASK = "Select and review the snapshot (refuses an unknown one, or one whose content does not match its manifest)"
ACT_TASK = "Restore the snapshot and wait for the operation"


class Incident:
    """One throwaway pipeline, its evidence directory and ledger, and a runner per playbook run."""

    def __init__(self, guard, workdir, pipeline=None):
        self.guard = guard
        self.workdir = str(workdir)
        self.pipeline = pipeline or Pipeline(guard)
        self.evidence_dir = os.path.join(self.workdir, "evidence")
        self.ledger = os.path.join(self.workdir, "ledger.jsonl")
        self.runs = 0

    def run(self, check=False, verbosity=0, envvars=None, **extravars):
        self.runs += 1
        variables = {"target": self.pipeline.name, "evidence_dir": self.evidence_dir, "receipt_ledger": self.ledger,
                     "reason": "Corrupted pipeline configuration", "wait_timeout": 30}
        variables.update(extravars)
        return pb.run_playbook(os.path.join(self.workdir, "runner-%d" % self.runs), variables, check=check,
                               verbosity=verbosity, playbook=PLAYBOOK, envvars=envvars)

    def state(self):
        return self.pipeline.state()

    def operations(self):
        return self.guard.operations(self.pipeline.snapshot_id)

    def receipts(self):
        return [e["receipt"] for e in pb.ledger_entries(self.ledger)]

    def verify_ledger(self):
        failed, result = pb.verify_ledger(os.path.join(self.workdir, "verify-%d" % self.runs), self.ledger)
        assert not failed and result["valid"], result.get("message")
        return result


@pytest.fixture(scope="module")
def guard(sandbox_env):
    return Guard(sandbox_env)


@pytest.fixture
def incident(guard, tmp_path):
    guard.clear_faults()
    yield Incident(guard, tmp_path)
    guard.clear_faults()


def assert_nothing_restored(incident, before):
    assert incident.state() == before
    assert incident.operations() == []


@pytest.fixture(scope="module")
def restored(guard, tmp_path_factory):
    """The headline, once for the module, at -v: the inventory's defaults but a throwaway pipeline whose content
    carries a canary under a secret-looking key."""
    guard.clear_faults()
    canary = "canary-statepw-" + secrets.token_hex(12)
    good = dict(GOOD, connection={"db_password": canary})
    pipeline = Pipeline(guard, good=good, bad=dict(BAD, connection={"db_password": canary}))
    incident = Incident(guard, tmp_path_factory.mktemp("headline"), pipeline)
    before = incident.state()
    run = incident.run(verbosity=1)
    return incident, run, before, canary, good


def test_the_playbook_restores_the_snapshot_verified_evidenced_and_receipted(restored):
    incident, run, before, _canary, good = restored
    assert run.status == "successful", run.explain()
    after = incident.state()
    assert after["sha256"] == sha(good) != before["sha256"]
    assert after["restored_from"] == incident.pipeline.snapshot_id
    assert len(incident.operations()) == 1
    [receipt] = incident.receipts()
    assert receipt["outcome"] == "succeeded" and receipt["rollback_type"] == "state"
    assert receipt["snapshot_id"] == incident.pipeline.snapshot_id
    assert receipt["component"] == incident.pipeline.name and receipt["changed_surfaces"] == ["state"]
    assert (receipt["current_ref"], receipt["rollback_target_ref"]) == ("sha256:" + before["sha256"], "sha256:" + sha(good))
    details = receipt["details"]
    assert details["state_type"] == "pipeline_deployment" and details["phase"] == "Completed"
    assert details["items_restored"] == details["items_total"] == 6 and details["verified"] is True
    assert details["data_window"]["seconds"] >= 0 and details["data_window"]["from"] <= details["data_window"]["to"]
    assert "are lost" in receipt["data_loss"]
    assert receipt["approval"]["rule"] == "state" and receipt["approval"]["approved"] is True
    assert sorted(a["name"] for a in receipt["approval"]["approved_by"]) == ["approver", "data-owner"]
    assert all(receipt["verification"][check] == "pass" for check in (
        "snapshot_reviewed", "restore_completed", "all_items_restored", "digest_matches_snapshot"))
    assert receipt["verification"]["health_check"] == "passed"
    incident.verify_ledger()
    pack = os.path.join(incident.evidence_dir, receipt["rollback_id"])
    for phase, source in (("before", "snapshot"), ("before", "current"), ("after", "audit"), ("after", "operation"),
                          ("after", "current")):
        assert os.path.exists(os.path.join(pack, phase, source, "response.yaml")), (phase, source)
    with open(os.path.join(pack, "after", "audit", "response.yaml")) as handle:
        audit = handle.read()
    assert "rollback.requested" in audit and "rollback.completed" in audit
    with open(os.path.join(pack, "before", "snapshot", "response.yaml")) as handle:
        assert sha(good) in handle.read()  # the manifest's recorded digest
    assert os.path.exists(os.path.join(pack, "diff", "current", "response.yaml.diff"))


def test_running_it_again_changes_nothing_and_writes_no_receipt(restored):
    incident, _run, _before, _canary, good = restored
    again = incident.run()
    assert again.status == "successful", again.explain()
    assert incident.state()["sha256"] == sha(good) and len(incident.operations()) == 1
    assert len(incident.receipts()) == 1
    assert again.task_result("Summary")["msg"][-1].startswith("Nothing to roll back: ")
    assert "already has the content of snapshot" in again.task_result("Summary")["msg"][-1]


def test_no_token_or_secret_reaches_evidence_ledger_or_v_output(restored):
    incident, run, _before, canary, _good = restored
    # The canary really is in the pipeline, so not finding it below means something.
    assert canary in json.dumps(incident.guard.ok("GET", "/api/pipelines/" + incident.pipeline.name))
    needles = [canary] + list(incident.guard.tokens.values())
    assert pb.files_containing(incident.workdir, needles) == []
    assert not [n for n in needles if n in run.stdout]


def test_check_mode_plans_and_restores_nothing(incident):
    before = incident.state()
    run = incident.run(check=True)
    assert run.status == "successful", run.explain()
    plan = run.task_result(PLAN_TASK)
    assert plan["changed"] and plan["binding"]["snapshot_id"] == incident.pipeline.snapshot_id
    assert_nothing_restored(incident, before)
    assert incident.receipts() == []


def test_a_snapshot_that_does_not_match_its_manifest_is_refused_with_a_failed_receipt(incident, guard):
    guard.ok("POST", "/api/admin/snapshots/%s/tamper" % incident.pipeline.snapshot_id, {}, token="admin")
    before = incident.state()
    run = incident.run()
    assert run.status == "failed"
    assert "does not match its manifest" in run.task_result(PLAN_TASK)["msg"]
    assert_nothing_restored(incident, before)
    [receipt] = incident.receipts()
    assert receipt["outcome"] == "failed" and "does not match its manifest" in receipt["failure"]["message"]
    incident.verify_ledger()


def test_approval_needs_the_data_owner_and_the_approver(incident):
    before = incident.state()
    run = incident.run(approvals=["data-owner"])
    assert run.status == "failed"
    assert_nothing_restored(incident, before)
    [receipt] = incident.receipts()
    assert receipt["outcome"] == "denied" and receipt["approval"]["missing_roles"] == ["approver"]


def test_a_partially_failed_restore_fails_the_rollback_with_a_failed_receipt(incident, guard):
    guard.fault(action="restore_outcome", phase="PartiallyFailed", count=1)
    run = incident.run()
    assert run.status == "failed"
    assert "ended PartiallyFailed" in run.task_result(ACT_TASK)["msg"]
    [receipt] = incident.receipts()
    assert receipt["outcome"] == "failed" and "PartiallyFailed" in receipt["failure"]["message"]
    assert receipt["details"]["phase"] == "PartiallyFailed"
    assert receipt["details"]["items_restored"] < receipt["details"]["items_total"]
    assert os.path.exists(os.path.join(incident.evidence_dir, receipt["rollback_id"], "failure", "audit",
                                       "response.yaml"))
    incident.verify_ledger()


def test_500s_until_the_deadline_fail_and_a_rerun_with_the_same_id_never_restores_twice(incident, guard):
    rollback_id = "rollback-20240115-110000-" + secrets.token_hex(3)
    guard.fault(action="error", status=500, method="GET", path="/api/rollback/", count=1000)
    run = incident.run(rollback_id=rollback_id, wait_timeout=3)
    assert run.status == "failed"
    assert "re-run with the same rollback_id" in run.task_result(ACT_TASK)["msg"]
    [receipt] = incident.receipts()
    assert receipt["outcome"] == "failed" and receipt["rollback_id"] == rollback_id
    guard.clear_faults()
    [operation] = incident.operations()
    pb.wait_until(lambda: guard.ok("GET", "/api/rollback/" + operation["operation_id"])["phase"] == "Completed",
                  timeout=20, what="the restore to complete")
    again = incident.run(rollback_id=rollback_id)
    assert again.status == "successful", again.explain()
    assert [o["operation_id"] for o in incident.operations()] == [operation["operation_id"]]
    assert incident.state()["sha256"] == sha(GOOD) and len(incident.receipts()) == 1


def test_a_read_only_token_is_refused_403_with_a_failed_receipt_and_nothing_restored(incident, guard):
    before = incident.state()
    # The way AWX runs it: no token in the inventory, a custom credential injecting AUREUS_GUARD_TOKEN.
    run = incident.run(guard_token="", envvars={"AUREUS_GUARD_TOKEN": guard.tokens["auditor"]}, verbosity=3)
    assert run.status == "failed"
    assert "403" in run.task_result(ACT_TASK)["msg"]
    assert_nothing_restored(incident, before)
    [receipt] = incident.receipts()
    assert receipt["outcome"] == "failed" and "403" in receipt["failure"]["message"]
    assert guard.tokens["auditor"] not in run.stdout
    # Everything the run left (evidence, ledger, the runner's job events) but the runner's record of the environment
    # this test gave it (artifacts/<id>/command), which holds the credential by construction.
    leaks = [(where, n) for where, n in pb.files_containing(incident.workdir, list(guard.tokens.values()))
             if not where.endswith(os.sep + "command")]
    assert leaks == []


def test_the_api_down_fails_cleanly_and_changes_nothing(incident):
    before = incident.state()
    run = incident.run(guard_url="https://127.0.0.1:9")
    assert run.status == "failed"
    assert "failed" in run.task_result(PLAN_TASK)["msg"]
    assert_nothing_restored(incident, before)
    [receipt] = incident.receipts()
    assert receipt["outcome"] == "failed"
