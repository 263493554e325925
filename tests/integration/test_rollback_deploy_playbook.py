"""playbooks/rollback-deploy.yml end to end on the sandbox, scenario by scenario, the way the AUREUS runbook reads.

Each scenario builds its own copy of the incident (a frontend whose revision 3, v0.1.2, crash-loops while revision
2's v0.1.1 pods keep serving) in its own namespace and runs the playbook once, from the checkout with the sandbox
inventory, overriding namespace, deployment, evidence_dir and receipt_ledger. The seeded aureus namespace is never
touched. Every refusal proves that nothing changed by the resourceVersion of the Deployment and its ReplicaSets.
"""

import base64
import datetime
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import threading
import time

import pytest
import yaml

from tests.integration import _playbook as pb

NAME = "frontend"


# --- harness -------------------------------------------------------------------------------------------------------


class Incident:
    """One throwaway copy of the incident: namespace, evidence directory, ledger, and a runner per playbook run."""

    def __init__(self, kubectl, namespace, workdir):
        self.kubectl = kubectl
        self.namespace = namespace
        self.workdir = workdir
        self.evidence_dir = os.path.join(str(workdir), "evidence")
        self.ledger = os.path.join(str(workdir), "ledger.jsonl")
        self.runs = 0

    def run(self, check=False, verbosity=0, **extravars):
        """Run the playbook once against this incident's namespace (the inventory supplies everything else)."""
        self.runs += 1
        variables = {"namespace": self.namespace, "deployment": NAME, "evidence_dir": self.evidence_dir,
                     "receipt_ledger": self.ledger}
        variables.update(extravars)
        return pb.run_playbook(os.path.join(str(self.workdir), "runner-%d" % self.runs), variables, check=check,
                               verbosity=verbosity)

    def versions(self):
        return pb.resource_versions(self.kubectl, self.namespace, NAME)

    def settled_versions(self, timeout=60):
        """resourceVersions once the controllers have stopped writing (a finished rollout still updates status)."""
        last = [None]

        def stable():
            now = self.versions()
            same, last[0] = now == last[0], now
            return now if same else None

        def poll():
            time.sleep(0.7)
            return stable()

        stable()
        return pb.wait_until(poll, timeout=timeout, what="%s/%s to settle" % (self.namespace, NAME))

    def deployment(self):
        return pb.get(self.kubectl, "deployment", self.namespace, NAME)

    def pods(self):
        return pb.pods(self.kubectl, self.namespace, NAME)

    def entries(self):
        return pb.ledger_entries(self.ledger)

    def receipt(self, rollback_id):
        found = [e["receipt"] for e in self.entries() if e["rollback_id"] == rollback_id]
        assert len(found) == 1, "expected one receipt for %s in %s" % (rollback_id, self.ledger)
        return found[0]

    def verify_ledger(self):
        failed, result = pb.verify_ledger(os.path.join(str(self.workdir), "verify-%d" % self.runs), self.ledger)
        assert not failed and result["valid"], result.get("message")
        assert result["signatures_checked"] and result["unsigned_entries"] == []
        return result

    def archives(self):
        return pb.archives(self.evidence_dir)


@pytest.fixture
def incident(kubectl, namespace, tmp_path):
    return Incident(kubectl, namespace, tmp_path)


@pytest.fixture(scope="module")
def canaries():
    return {"secret": "canary-pbsecret-" + secrets.token_hex(12), "env": "canary-pbtoken-" + secrets.token_hex(12)}


@pytest.fixture(scope="module")
def rolled_back(kubectl, sandbox_env, tmp_path_factory, canaries):
    """The headline, run once for the module: target_rev=2 on the crash-looping revision 3, at -v.

    The workload holds two canaries: a Secret value it reads with secretKeyRef and a literal API_TOKEN env var,
    and it was created with --save-config so its last-applied-configuration annotation carries the literal too.
    KWOK pods serve nothing, so the sandbox's OPA server stands in for the health endpoint and a smoke check.
    """
    namespace = pb.new_namespace(kubectl, "pbh")
    try:
        pb.create_secret(kubectl, namespace, "frontend-secrets", {"db-password": canaries["secret"]})
        pb.frontend_with_history(kubectl, namespace, env={"API_TOKEN": canaries["env"]},
                                 secret_env={"AUREUS_DB_PASSWORD": ("frontend-secrets", "db-password")},
                                 save_config=True)
        incident = Incident(kubectl, namespace, tmp_path_factory.mktemp("headline"))
        before = incident.versions()
        health = sandbox_env["SANDBOX_OPA_URL"] + "/health"
        run = incident.run(target_rev=2, verbosity=1, health_url=health,
                           smoke_urls=[{"url": health, "status": 200}, {"url": health + "?bundles", "method": "GET"}])
        yield incident, run, before
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def sha256_file(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def assert_nothing_changed(incident, before):
    assert incident.versions() == before, "the refused rollback changed the Deployment or its ReplicaSets"
    assert pb.template_image(incident.deployment()) == pb.IMAGES[2]


def assert_refused_by_the_plan(incident, run, before, rollback_id, reason):
    """The plan (server-side dry run) refused, naming ``reason``; nothing changed; the receipt says failed and why."""
    assert run.status == "failed" and run.count("failures") == 1
    plan = run.task_result("Plan the rollback with a server-side dry run (refuses paused, pruned, GitOps-owned workloads)")
    assert reason in plan["msg"], plan["msg"]
    assert_nothing_changed(incident, before)
    receipt = incident.receipt(rollback_id)
    assert receipt["outcome"] == "failed"
    assert reason in receipt["failure"]["message"]
    return plan


def utc_moment(stamp):
    """An RFC 3339 UTC stamp of a receipt (``...Z``, with or without microseconds) as an aware datetime."""
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def in_the_future(timestamp):
    moment = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    return moment > datetime.datetime.now(datetime.timezone.utc)


# --- the headline --------------------------------------------------------------------------------------------------


def test_rollback_to_revision_2_restores_v0_1_1_verified_evidenced_and_receipted(rolled_back):
    incident, run, _before = rolled_back
    assert run.status == "successful", run.explain()
    assert run.count("failures") == 0 and run.count("rescued") == 0

    # The cluster: the template is v0.1.1 again and its three pods serve; nothing of v0.1.2 is left.
    assert pb.template_image(incident.deployment()) == "aureus/frontend:v0.1.1"
    pods = incident.pods()
    assert [p["images"] for p in pods if p["ready"]] == [["aureus/frontend:v0.1.1"]] * 3
    assert not [p for p in pods if "aureus/frontend:v0.1.2" in p["images"]], pods

    # The ledger verifies (chain, schema, signatures against the sandbox's public key, signed head).
    assert incident.verify_ledger()["entries"] == 1
    (entry,) = incident.entries()
    receipt = entry["receipt"]
    assert receipt["outcome"] == "succeeded"
    assert receipt["approval"]["rule"] == "deployment_last" and receipt["approval"]["approved"] is True
    assert (receipt["from_version"], receipt["to_version"]) == ("aureus/frontend:v0.1.2", "aureus/frontend:v0.1.1")
    assert (receipt["details"]["from_revision"], receipt["details"]["to_revision"]) == (3, 2)
    # The moment of mitigation (the patch accepted) lies between the run's start and its end.
    started, mitigated, completed = (utc_moment(s) for s in (
        receipt["started_at"], receipt["details"]["patch_accepted_at"], receipt["completed_at"]))
    assert started <= mitigated.replace(microsecond=0) <= completed, (started, mitigated, completed)
    assert (receipt["incident_id"], receipt["requested_by"]) == ("INC-12345", "oncall")
    assert receipt["signing"]["signed"] is True
    assert receipt["emergency"] is False
    assert all(receipt["verification"][check] == "pass" for check in (
        "rollout_complete", "pods_on_target_images", "no_fled_pods_left", "health", "contract_smoke"))
    assert (receipt["verification"]["health_check"], receipt["verification"]["smoke_tests"]) == ("passed", "passed")

    # The evidence archive on disk is the one the receipt names, byte for byte.
    archive = receipt["evidence"]["archive"]
    assert incident.archives() == [archive]
    assert receipt["evidence"]["archive_sha256"] == sha256_file(archive)
    assert os.path.exists(os.path.join(incident.evidence_dir, receipt["rollback_id"], "before", "manifest.json"))
    assert os.path.exists(os.path.join(incident.evidence_dir, receipt["rollback_id"], "after", "manifest.json"))

    # What AWX keeps as job artifacts (set_stats): the rollback id and the receipt digest.
    stats = run.artifact_data["governed_rollback"]
    assert stats["rollback_id"] == receipt["rollback_id"] == entry["rollback_id"]
    assert re.match(r"^rollback-[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$", receipt["rollback_id"]), receipt["rollback_id"]
    assert stats["receipt_sha256"] == entry["receipt_sha256"]
    assert stats["outcome"] == "succeeded"
    assert stats["evidence_archive_sha256"] == receipt["evidence"]["archive_sha256"]

    # The one-screen summary.
    assert "revision 3 (aureus/frontend:v0.1.2) -> 2 (aureus/frontend:v0.1.1)" in run.stdout
    assert "receipt: %s seq 1 sha256:%s" % (receipt["rollback_id"], entry["receipt_sha256"]) in run.stdout
    assert run.task_result("Summary")["msg"][-1] == ("verification: rollout_complete True, pods_on_target_images True, "
                                                     "no_fled_pods_left True, health_check passed, smoke_tests passed")


def test_running_the_same_rollback_again_changes_nothing(rolled_back):
    incident, first, _before = rolled_back
    assert first.status == "successful", first.explain()
    with open(incident.ledger, "rb") as handle:
        ledger_before = handle.read()
    before = incident.settled_versions()

    again = incident.run(target_rev=2)

    assert again.status == "successful", again.explain()
    assert again.changed_tasks == [] and again.count("changed") == 0
    assert incident.versions() == before
    with open(incident.ledger, "rb") as handle:
        assert handle.read() == ledger_before, "a no-op run must not add a receipt"
    assert "Nothing to roll back" in again.stdout


def test_no_secret_value_reaches_evidence_ledger_envelope_or_output(rolled_back, canaries):
    incident, run, _before = rolled_back
    assert run.status == "successful", run.explain()
    needles = sorted(canaries.values())
    # The canaries are really in the workload, so not finding them below means something.
    secret = pb.get(incident.kubectl, "secret", incident.namespace, "frontend-secrets")
    assert "AUREUS_DB_PASSWORD" in json.dumps(incident.deployment())
    assert canaries["env"] in json.dumps(incident.deployment())
    assert secret["data"]["db-password"]

    # Everything the run wrote: evidence files, archive members, ledger, head, the DSSE envelope and its payload.
    runners = os.path.join(str(incident.workdir), "runner-")
    texts = [(where, text) for where, text in pb.every_text(incident.workdir) if not where.startswith(runners)]
    searched = [where for where, _text in texts]
    assert any("!" in where and where.split("!")[0].endswith(".tar.gz") for where in searched)
    assert any(where.endswith("!payload") and ".intoto.jsonl" in where for where in searched)
    assert incident.ledger in searched and incident.ledger + ".head" in searched
    assert [where for where in searched if where.startswith(incident.evidence_dir + os.sep)]
    assert [(where, n) for where, text in texts for n in needles if n in text] == []
    assert [n for n in needles if n in run.stdout] == []
    # AWX stores every job event (module arguments and results): the runner's record of the run is clean too.
    assert pb.files_containing(os.path.join(run.artifact_dir, "job_events"), needles) == []


def test_two_rollbacks_started_together_on_one_ledger_each_get_their_own_pack_and_receipt(kubectl, namespace, tmp_path):
    # Two teams (two AWX jobs) roll back two services at the same moment, sharing the evidence store and ledger.
    other = namespace + "-b"
    kubectl("create", "namespace", other)
    try:
        incidents = [Incident(kubectl, namespace, tmp_path), Incident(kubectl, other, tmp_path)]
        for number, incident in enumerate(incidents):
            pb.frontend_with_history(kubectl, incident.namespace)
            incident.runs = number * 10  # separate runner directories in the shared workdir
        runs = [None, None]

        def rollback(number):
            runs[number] = incidents[number].run(target_rev=2)

        threads = [threading.Thread(target=rollback, args=(number,)) for number in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        for run in runs:
            assert run.status == "successful", run.explain()
        ids = [run.artifact_data["governed_rollback"]["rollback_id"] for run in runs]
        assert ids[0] != ids[1]
        entries = incidents[0].entries()
        assert sorted(e["rollback_id"] for e in entries) == sorted(ids)
        assert sorted(e["receipt"]["details"]["namespace"] for e in entries) == sorted([namespace, other])
        assert len(incidents[0].archives()) == 2
        assert incidents[0].verify_ledger()["entries"] == 2
    finally:
        kubectl("delete", "namespace", other, "--wait=false", check=False)


# --- approval ------------------------------------------------------------------------------------------------------


def test_older_version_needs_the_engineering_lead_denied_without_changes_then_approved(incident):
    pb.frontend_with_history(incident.kubectl, incident.namespace)
    before = incident.settled_versions()

    denied = incident.run(target_rev=1, requested_by="oncall", approvals=[], rollback_id="rollback-older-denied")

    assert denied.status == "failed"
    assert denied.count("failures") == 1
    stop = denied.task_result("Stop, escalate; do not attempt further rollbacks")
    assert "denied" in stop["msg"] and "engineering_lead" in stop["msg"], stop["msg"]
    assert "Nothing was changed in the cluster" in stop["msg"]
    assert_nothing_changed(incident, before)
    assert not os.path.exists(incident.evidence_dir) or os.listdir(incident.evidence_dir) == []
    receipt = incident.receipt("rollback-older-denied")
    assert receipt["outcome"] == "denied"
    assert receipt["approval"]["rule"] == "deployment_older"
    assert receipt["approval"]["missing_roles"] == ["engineering_lead"]
    assert "evidence" not in receipt or not receipt["evidence"]

    approved = incident.run(target_rev=1, requested_by="oncall", approvals=["eng-lead"],
                            rollback_id="rollback-older-approved")

    assert approved.status == "successful", approved.explain()
    assert pb.template_image(incident.deployment()) == "aureus/frontend:v0.1.0"
    receipt = incident.receipt("rollback-older-approved")
    assert receipt["outcome"] == "succeeded"
    assert receipt["approval"]["rule"] == "deployment_older"
    assert [a["name"] for a in receipt["approval"]["approved_by"]] == ["eng-lead"]
    assert (receipt["from_version"], receipt["to_version"]) == ("aureus/frontend:v0.1.2", "aureus/frontend:v0.1.0")
    assert incident.verify_ledger()["entries"] == 2


def test_signed_approval_from_the_plan_approves_exactly_that_rollback_and_nothing_else(incident, tmp_path):
    """Production mode: the plan prints the statement, the engineering lead signs it with ssh-keygen, the rollback
    runs on the signature; the same signature replayed for another rollback does not count."""
    if not shutil.which("ssh-keygen"):
        pytest.skip("ssh-keygen (OpenSSH client) is not installed")
    pb.frontend_with_history(incident.kubectl, incident.namespace)
    key = str(tmp_path / "eng-lead-key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "eng-lead", "-f", key], check=True)
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "inventories", "sandbox", "group_vars", "all",
                           "roster.yml")) as handle:
        roster = yaml.safe_load(handle)["rollback_roster"]
    with open(key + ".pub") as handle:
        roster["eng-lead"] = {"roles": ["engineering_lead"], "keys": [handle.read().strip()]}
    signed = dict(rollback_approval_mode="signed", rollback_roster=roster, requested_by="oncall", approvals=[])
    before = incident.settled_versions()

    plan = incident.run(check=True, target_rev=1, **signed)
    statement = plan.task_result("Check approval against the approval matrix (fails closed)")["statement"]
    assert json.loads(statement)["target"] == "Deployment %s/%s" % (incident.namespace, NAME)
    assert "ssh-keygen -Y sign" in plan.stdout and statement.strip() in plan.stdout
    assert_nothing_changed(incident, before)
    approvals_dir = tmp_path / "approvals"
    approvals_dir.mkdir()
    (approvals_dir / "eng-lead.json").write_text(statement)
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", key, "-n", "governed-rollback-approval",
                    str(approvals_dir / "eng-lead.json")], check=True, capture_output=True)

    run = incident.run(target_rev=1, approval_statements_dir=str(approvals_dir), rollback_id="rollback-signed", **signed)

    assert run.status == "successful", run.explain()
    assert pb.template_image(incident.deployment()) == "aureus/frontend:v0.1.0"
    approval = incident.receipt("rollback-signed")["approval"]
    assert approval["approval_mode"] == "signed" and approval["rule"] == "deployment_older"
    assert [s["name"] for s in approval["verified_signers"]] == ["eng-lead"]
    with open(key + ".pub") as handle:
        blob = base64.b64decode(handle.read().split()[1])
    assert approval["verified_signers"][0]["key_sha256"] == hashlib.sha256(blob).hexdigest()

    # The same signed statement does not approve another rollback of the same workload (other refs, other binding).
    after = incident.settled_versions()
    replay = incident.run(target_rev=3, approval_statements_dir=str(approvals_dir), rollback_id="rollback-replayed",
                          **signed)
    assert replay.status == "failed"
    replayed = incident.receipt("rollback-replayed")
    assert replayed["outcome"] == "denied"
    assert any("it approves" in r["reason"] for r in replayed["approval"]["rejected_statements"])
    assert incident.versions() == after


def test_p0_emergency_override_by_the_incident_commander_proceeds_with_retroactive_approval_due(incident):
    pb.frontend_with_history(incident.kubectl, incident.namespace)

    run = incident.run(target_rev=1, priority="P0", incident_commander="ic", emergency_override=True,
                       approvals=[], rollback_id="rollback-p0")

    assert run.status == "successful", run.explain()
    assert pb.template_image(incident.deployment()) == "aureus/frontend:v0.1.0"
    receipt = incident.receipt("rollback-p0")
    assert receipt["outcome"] == "succeeded"
    assert receipt["emergency"] is True
    assert receipt["approval"]["approval_path"] == "emergency_override"
    assert receipt["approval"]["incident_commander"] == "ic"
    assert in_the_future(receipt["retroactive_approval_due"])
    assert receipt["post_incident_review"] == "required"
    summary = run.task_result("Summary")["msg"]
    assert "EMERGENCY" in summary[2] and receipt["retroactive_approval_due"] in summary[2], summary
    incident.verify_ledger()


def test_emergency_override_without_p0_is_denied_and_changes_nothing(incident):
    pb.frontend_with_history(incident.kubectl, incident.namespace)
    before = incident.settled_versions()

    run = incident.run(target_rev=1, priority="P1", incident_commander="ic", emergency_override=True,
                       approvals=[], rollback_id="rollback-p1-emergency")

    assert run.status == "failed" and run.count("failures") == 1
    assert_nothing_changed(incident, before)
    assert incident.archives() == []
    receipt = incident.receipt("rollback-p1-emergency")
    assert receipt["outcome"] == "denied"
    assert receipt["emergency"] is False
    assert receipt["approval"]["emergency_requested"] is True
    assert "P0" in run.task_result("Stop, escalate; do not attempt further rollbacks")["msg"]


# --- failures and refusals -----------------------------------------------------------------------------------------


def test_rollback_whose_target_never_becomes_ready_fails_with_failure_evidence_and_receipt(incident):
    # Revision 2 itself crash-loops: rolling back to it can never complete.
    pb.frontend_with_history(incident.kubectl, incident.namespace, broken=(2, 3))

    run = incident.run(target_rev=2, wait_timeout=15, rollback_id="rollback-never-ready")

    assert run.status == "failed"
    assert run.count("failures") == 1
    # The rescue preserved the state, then ended in a fail (it never swallows the failure).
    assert run.failed_tasks == ["Roll back and wait for the rollout", "Stop, escalate; do not attempt further rollbacks"]
    wait = run.task_result("Roll back and wait for the rollout")
    assert "did not complete (timeout): timed out after 15s" in wait["msg"], wait["msg"]
    receipt = incident.receipt("rollback-never-ready")
    assert receipt["outcome"] == "failed"
    assert receipt["failure"]["task"] == "Roll back and wait for the rollout"
    failure_manifest = os.path.join(incident.evidence_dir, "rollback-never-ready", "failure", "manifest.json")
    assert os.path.exists(failure_manifest)
    assert receipt["evidence"]["archive_sha256"] == sha256_file(receipt["evidence"]["archive"])
    assert receipt["verification"]["rollout_complete"] in ("fail", "not_run")
    assert run.task_result("Summary")["msg"][-1].startswith(
        "stopped at Roll back and wait for the rollout: deployment %s/%s was rolled back from revision 3 to 2, but the "
        "rollout did not complete (timeout)" % (incident.namespace, NAME))
    incident.verify_ledger()


def test_rollback_whose_health_endpoint_fails_is_receipted_failed_with_the_check_that_failed(incident, sandbox_env):
    pb.frontend_with_history(incident.kubectl, incident.namespace)

    run = incident.run(target_rev=2, rollback_id="rollback-unhealthy", health_url=sandbox_env["SANDBOX_OPA_URL"] + "/nope",
                       deployment_rollback_http_retries=1, deployment_rollback_http_delay=1)

    assert run.status == "failed" and run.count("failures") == 1
    assert run.failed_tasks[-2:] == ["Assert the rollback is verified", "Stop, escalate; do not attempt further rollbacks"]
    # The rollout itself happened; the receipt says what was verified and what was not.
    assert pb.template_image(incident.deployment()) == "aureus/frontend:v0.1.1"
    receipt = incident.receipt("rollback-unhealthy")
    assert receipt["outcome"] == "failed"
    assert receipt["failure"]["task"] == "Assert the rollback is verified"
    verification = receipt["verification"]
    assert (verification["health_check"], verification["health"]) == ("failed", "fail")
    assert (verification["rollout_complete"], verification["pods_on_target_images"]) == ("pass", "pass")
    assert os.path.exists(os.path.join(incident.evidence_dir, "rollback-unhealthy", "failure", "manifest.json"))
    assert receipt["evidence"]["archive_sha256"] == sha256_file(receipt["evidence"]["archive"])


def test_a_failing_smoke_check_fails_the_rollback_while_the_health_check_it_follows_passes(incident, sandbox_env):
    """The health endpoint and the smoke URLs are checked by one task in the worker; each is recorded as itself, and
    a failing one is retried (http_retries) before it fails the rollback."""
    pb.frontend_with_history(incident.kubectl, incident.namespace)
    opa = sandbox_env["SANDBOX_OPA_URL"]

    run = incident.run(target_rev=2, rollback_id="rollback-smoke-fails", health_url=opa + "/health",
                       smoke_urls=[{"url": opa + "/health"}, {"url": opa + "/nope"}],
                       deployment_rollback_http_retries=1, deployment_rollback_http_delay=1)

    assert run.status == "failed" and run.count("failures") == 1
    assert run.failed_tasks[-2:] == ["Assert the rollback is verified", "Stop, escalate; do not attempt further rollbacks"]
    checked = run.task_result("Measure the verification checklist (metrics, contracts, policy invariants, logs) "
                              "and check health and smoke")["http_checks"]
    assert (checked["health"]["url"], checked["health"]["status"]) == (opa + "/health", 200)
    assert [(c["url"], c["status"], c["attempts"]) for c in checked["smoke"]] == [
        (opa + "/health", 200, 1), (opa + "/nope", 404, 2)]
    verification = incident.receipt("rollback-smoke-fails")["verification"]
    assert (verification["health_check"], verification["smoke_tests"]) == ("passed", "failed")
    assert (verification["rollout_complete"], verification["pods_on_target_images"]) == ("pass", "pass")


def test_rollback_of_a_paused_deployment_is_refused_and_changes_nothing(incident):
    pb.frontend_with_history(incident.kubectl, incident.namespace)
    incident.kubectl("rollout", "pause", "deployment/" + NAME, "-n", incident.namespace)
    before = incident.settled_versions()

    run = incident.run(target_rev=2, rollback_id="rollback-paused")

    assert_refused_by_the_plan(incident, run, before, "rollback-paused", "paused")


def test_unwritable_evidence_dir_stops_the_rollback_before_anything_changes(incident):
    pb.frontend_with_history(incident.kubectl, incident.namespace)
    before = incident.settled_versions()
    os.mkdir(incident.evidence_dir)
    with pb.immutable(incident.evidence_dir):
        run = incident.run(target_rev=2, rollback_id="rollback-locked-evidence")
        assert os.listdir(incident.evidence_dir) == []

    assert run.status == "failed" and run.count("failures") == 1
    assert run.failed_tasks == ["Pre-flight, the evidence directory is writable before anything changes",
                                "Stop, escalate; do not attempt further rollbacks"]
    preflight = run.task_result("Pre-flight, the evidence directory is writable before anything changes")
    assert preflight["msg"].startswith("evidence directory %s is not writable (" % incident.evidence_dir)
    assert_nothing_changed(incident, before)
    # No approval was asked for and the receipt, which lives elsewhere, still says what happened.
    assert "Check approval against the approval matrix (fails closed)" not in set(
        e["event_data"].get("task") for e in run.events)
    receipt = incident.receipt("rollback-locked-evidence")
    assert receipt["outcome"] == "failed" and "is not writable" in receipt["failure"]["message"]
    incident.verify_ledger()


def test_rollback_of_an_argo_cd_owned_deployment_is_refused_and_changes_nothing(incident):
    tracking = "frontend:apps/Deployment:%s/%s" % (incident.namespace, NAME)
    pb.frontend_with_history(incident.kubectl, incident.namespace, metadata={
        "labels": {"app.kubernetes.io/instance": NAME},
        "annotations": {"argocd.argoproj.io/tracking-id": tracking}})
    before = incident.settled_versions()

    run = incident.run(target_rev=2, rollback_id="rollback-argo")

    plan = assert_refused_by_the_plan(incident, run, before, "rollback-argo", "Argo CD")
    assert "allow_gitops_drift" in plan["msg"], plan["msg"]


# --- check mode ----------------------------------------------------------------------------------------------------


def test_check_mode_shows_the_plan_and_changes_nothing(incident):
    pb.frontend_with_history(incident.kubectl, incident.namespace)
    before = incident.settled_versions()

    run = incident.run(check=True, target_rev=2)

    assert run.status == "successful", run.explain()
    assert_nothing_changed(incident, before)
    assert not os.path.exists(incident.ledger)
    assert not os.path.exists(incident.evidence_dir) or os.listdir(incident.evidence_dir) == []
    plan = run.task_result("Roll back and wait for the rollout")
    assert (plan["from_revision"], plan["to_revision"]) == (3, 2)
    assert (plan["from_images"], plan["to_images"]) == (["aureus/frontend:v0.1.2"], ["aureus/frontend:v0.1.1"])
    summary = run.task_result("Summary")["msg"]
    assert "PLANNED (check mode: nothing was changed" in summary[0]
    assert "revision 3 (aureus/frontend:v0.1.2) -> 2 (aureus/frontend:v0.1.1)" in summary[1]
    assert "approval: deployment_last" == summary[2]
    assert summary[-1] == "verification: not run (check mode)"


def test_a_receipt_that_would_be_refused_stops_the_rollback_before_anything_changes(incident):
    """The receipt draft is checked with the approval: a reason carrying a credential (which would also land in the
    kubernetes.io/change-cause annotation) is refused before the evidence, the patch or the change-cause."""
    pb.frontend_with_history(incident.kubectl, incident.namespace)
    before = incident.settled_versions()
    leaked = "ghp_" + secrets.token_hex(18)
    run = incident.run(target_rev=2, reason="rolled back, see token=%s" % leaked, rollback_id="rollback-bad-reason")

    assert run.status == "failed"
    name = "Write the rollback receipt to the ledger (draft, checked before anything changes)"
    assert name in run.failed_tasks
    draft = run.task_result(name)
    assert draft["fields"] == ["reason"] and "receipts never carry secrets" in draft["msg"], draft
    assert_nothing_changed(incident, before)
    assert "Roll back and wait for the rollout" not in set(e["event_data"].get("task") for e in run.events)
    annotations = incident.deployment()["metadata"].get("annotations") or {}
    assert leaked not in json.dumps(annotations)
    assert leaked not in run.stdout


def test_a_head_mirror_kept_elsewhere_grows_with_every_receipt_and_catches_a_truncated_ledger(incident, tmp_path):
    pb.frontend_with_history(incident.kubectl, incident.namespace)
    mirror = str(tmp_path / "worm" / "ledger.jsonl.head")
    os.makedirs(os.path.dirname(mirror))
    run = incident.run(target_rev=2, receipt_head_mirror=mirror, rollback_id="rollback-mirrored")
    assert run.status == "successful", run.explain()
    with open(mirror, "rb") as handle, open(incident.ledger + ".head", "rb") as head:
        assert handle.read() == head.read()
    # Someone removes the last receipt and puts back an empty ledger: the next rollback's receipt draft is refused
    # against the mirror before anything changes.
    before = incident.settled_versions()
    with open(incident.ledger, "w"):
        pass
    os.remove(incident.ledger + ".head")
    again = incident.run(target_rev=3, approvals=["eng-lead"], receipt_head_mirror=mirror,
                         rollback_id="rollback-after-truncation")
    assert again.status == "failed"
    assert incident.versions() == before
    draft = again.task_result("Write the rollback receipt to the ledger (draft, checked before anything changes)")
    assert "mirror" in draft["msg"], draft["msg"]
