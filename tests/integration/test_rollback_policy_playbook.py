"""playbooks/rollback-policy.yml end to end: the AUREUS runbook's policy rollback (pii-access-requires-approval v2.1
-> v2.0) through a real bundle server, a real OPA and the sandbox's API server, with the sandbox inventory's defaults.

One throwaway PEP per module (tests/integration/_policy_env.py) and one throwaway namespace per scenario holding the
ConfigMap and the PEP Deployment; the playbook runs as AWX runs it (ansible-runner), overriding only where the PEP
lives and where evidence goes. Refusals prove nothing changed: the served bundle's sha256, OPA's active revision and
the ConfigMap's resourceVersion.
"""

import datetime
import json
import os

import pytest

from tests.integration import _playbook as pb
from tests.integration import _policy_env as env

PLAYBOOK = "playbooks/rollback-policy.yml"
API_KEY_CANARY = "canary-policy-apikey-5d1e0c7a9b"


@pytest.fixture(scope="module")
def pep(sandbox_env, tmp_path_factory):
    handle = env.Pep(sandbox_env["SANDBOX_OPA"], str(tmp_path_factory.mktemp("pep")))
    yield handle
    handle.close()


@pytest.fixture
def world(pep, kubectl, namespace):
    pep.reset()
    env.seed_configmap_and_pep(kubectl, namespace)
    return namespace


def run(pep, namespace, tmp_path, check=False, verbosity=0, **extravars):
    variables = {
        "namespace": namespace, "policy_repo": pep.repo, "bundle_server_dir": pep.server_dir, "opa_url": pep.url,
        "pep_endpoints": [pep.url + "/v1/data/aureus/pii/allow", pep.url + "/v1/data/aureus/pii/decision"],
        "denied_endpoint": pep.url + "/v1/data/aureus/pii/decision", "wait_timeout": 30,
        "evidence_dir": str(tmp_path / "evidence"), "receipt_ledger": str(tmp_path / "ledger.jsonl"),
        "reason": "New policy blocking analysts from routine low-PII queries", "incident_id": "INC-POLICY-7"}
    variables.update(extravars)
    return pb.run_playbook(tmp_path / ("runner-%d" % len(os.listdir(str(tmp_path)))), variables, check=check,
                           verbosity=verbosity, playbook=PLAYBOOK, inventory=os.path.join(pb.ROOT, "inventories", "sandbox"),
                           envvars={"K8S_AUTH_API_KEY": API_KEY_CANARY})


def state(pep, kubectl, namespace):
    return {"served": env.sha256_file(pep.bundle), "active": pep.revision(),
            "configmap": env.configmap(kubectl, namespace)["metadata"]["resourceVersion"]}


def test_the_runbook_rollback_with_the_inventory_defaults(tmp_path, pep, kubectl, world, sandbox_env):
    assert pep.decide(env.ANALYST_LOW) is False
    result = run(pep, world, tmp_path, verbosity=1)
    assert result.status == "successful", result.explain()
    assert pep.revision() == pep.shas["v2.0"]
    assert pep.decide(env.ANALYST_LOW) is True and pep.decide(env.ANALYST_HIGH) is False
    configmap = env.configmap(kubectl, world)
    assert configmap["data"]["policy-manifest.json"] == env.seed_text("v2.0", "policy-manifest.json")
    workload = env.deployment(kubectl, world)
    assert workload["spec"]["template"]["metadata"]["annotations"]["policy.governed.io/revision"] == pep.shas["v2.0"]

    entries = pb.ledger_entries(tmp_path / "ledger.jsonl")
    assert len(entries) == 1
    receipt = entries[0]["receipt"]
    assert receipt["outcome"] == "succeeded" and receipt["rollback_type"] == "policy"
    assert (receipt["policy_name"], receipt["from_version"], receipt["to_version"]) == (
        "pii-access-requires-approval", "v2.1", "v2.0")
    assert receipt["security_review"] == "approved" and receipt["affected_users"] == 45
    assert receipt["current_ref"] == pep.shas["v2.1"] and receipt["rollback_target_ref"] == pep.shas["v2.0"]
    assert receipt["approval"]["rule"] == "policy"
    assert sorted(a["name"] for a in receipt["approved_by"]) == ["gov-lead", "security"]
    for check in ("active_revision_is_target", "probes_pass_on_pep", "no_endpoint_bypasses_policy",
                  "denied_error_is_policy_safe", "policy_invariants"):
        assert receipt["verification"][check] == "pass", receipt["verification"]
    audit = receipt["details"]["audit_event"]
    assert audit["event"] == "policy_rollback" and audit["policy"] == "pii-access-requires-approval"
    assert audit["actor"] == "oncall" and audit["to_revision"] == pep.shas["v2.0"]
    # The timeline's moments: the bundle put in place, then OPA's own record of activating it (what its status says).
    details = receipt["details"]
    activation = env.http_json(pep.url + "/v1/status")["result"]["bundles"]["aureus"]["last_successful_activation"]
    started, published, activated, reported = (
        datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        for stamp in (receipt["started_at"], details["published_at"], details["activated_at"], activation))
    assert started <= published < activated == reported  # OPA's nanoseconds, cut to microseconds
    failed, verified = pb.verify_ledger(tmp_path / "verify", tmp_path / "ledger.jsonl")
    assert not failed and verified["valid"], verified

    texts = dict(pb.every_text(tmp_path / "evidence"))
    diffs = [text for where, text in texts.items() if "before/policy_diff/stdout.txt" in where]
    assert diffs and "-# pii-access-requires-approval v2.1" in diffs[0] and "+# pii-access-requires-approval v2.0" in diffs[0]
    assert any("after/opa_active_revision" in where and pep.shas["v2.0"] in text for where, text in texts.items())
    canaries = [API_KEY_CANARY, sandbox_env.get("SANDBOX_CANARY_DB_PASSWORD", "x" * 40),
                sandbox_env.get("SANDBOX_CANARY_API_TOKEN", "y" * 40)]
    # Evidence, ledger, job events and stdout; ansible-runner's own record of the environment it launched with
    # (artifacts/<id>/command) is the launcher's input, not something the collection wrote.
    found = [hit for hit in pb.files_containing(tmp_path, canaries) if not hit[0].endswith(os.sep + "command")]
    assert found == []
    assert any("job_events" in where for where, _text in pb.every_text(tmp_path))
    assert API_KEY_CANARY not in result.stdout

    again = run(pep, world, tmp_path)
    assert again.status == "successful", again.explain()
    assert "already at v2.0" in again.stdout and len(pb.ledger_entries(tmp_path / "ledger.jsonl")) == 1


def test_check_mode_plans_and_changes_nothing(tmp_path, pep, kubectl, world):
    before = state(pep, kubectl, world)
    result = run(pep, world, tmp_path, check=True)
    assert result.status == "successful", result.explain()
    plan = result.task_result("Plan the rollback - build the target bundle, run opa test and the probes, diff (nothing applied)")
    assert plan["to_ref"] == pep.shas["v2.0"] and plan["tests"]["passed"] == 4
    assert state(pep, kubectl, world) == before
    assert pb.ledger_entries(tmp_path / "ledger.jsonl") == []


def test_without_security_the_rollback_is_denied_and_nothing_changes(tmp_path, pep, kubectl, world):
    before = state(pep, kubectl, world)
    result = run(pep, world, tmp_path, approvals=["gov-lead"])
    assert result.status == "failed"
    assert state(pep, kubectl, world) == before
    receipt = pb.ledger_entries(tmp_path / "ledger.jsonl")[-1]["receipt"]
    assert receipt["outcome"] == "denied" and receipt["approval"]["missing_roles"] == ["security"]


def test_the_bundle_server_down_mid_apply_leaves_the_previous_bundle_and_a_failed_receipt(tmp_path, pep, kubectl, world):
    served = env.sha256_file(pep.bundle)
    # The plan and approval see a healthy PEP; the server goes down right before the publish (after "before" evidence).
    pep.stop_server()
    try:
        result = run(pep, world, tmp_path, wait_timeout=4, policy_apply_to=["bundle_server"])
    finally:
        pep.start_server()
    assert result.status == "failed", result.explain()
    assert pep.revision() == pep.shas["v2.1"] and env.sha256_file(pep.bundle) == served
    pep.wait_revision(pep.shas["v2.1"])
    receipt = pb.ledger_entries(tmp_path / "ledger.jsonl")[-1]["receipt"]
    assert receipt["outcome"] == "failed"
    assert "still reports revision %s" % pep.shas["v2.1"] in receipt["failure"]["message"]
    assert json.dumps(receipt).count(pep.shas["v2.0"]) >= 1  # the receipt names the target it could not activate


def test_an_endpoint_outside_policy_and_a_denial_that_says_too_much_fail_the_verification(tmp_path, pep, world):
    """The trust-membrane invariants on the running OPA: an endpoint answering without a policy result (a path no rule
    defines: 200 and {}) bypasses evaluation; a denial whose body carries more than the policy-safe shape (OPA's
    ?metrics=true adds its timers) is not policy-safe. The rollback itself went through; its verification fails,
    and the receipt says which invariant."""
    result = run(pep, world, tmp_path,
                 pep_endpoints=[pep.url + "/v1/data/aureus/pii/allow", pep.url + "/v1/data/aureus/pii/no_such_rule"],
                 denied_endpoint=pep.url + "/v1/data/aureus/pii/decision?metrics=true")
    assert result.status == "failed", result.explain()
    assert result.failed_tasks[-2:] == ["Assert the rollback is verified",
                                        "Stop, escalate; do not attempt further rollbacks"]
    assert pep.revision() == pep.shas["v2.0"]  # the change was made; what failed is its verification
    probed = result.task_result("Ask every PEP endpoint, and the decision endpoint, the denied request")
    answers = dict((a["name"], a) for a in probed["verification_details"]["contracts"])
    assert answers[pep.url + "/v1/data/aureus/pii/allow"]["result"] == "pass"
    assert answers[pep.url + "/v1/data/aureus/pii/no_such_rule"]["failed"] == ["result exists (got None)"]
    assert any(f.startswith("@ keys_in") for f in answers["denied answer"]["failed"]), answers["denied answer"]
    receipt = pb.ledger_entries(tmp_path / "ledger.jsonl")[-1]["receipt"]
    assert receipt["outcome"] == "failed"
    verification = receipt["verification"]
    assert (verification["no_endpoint_bypasses_policy"], verification["denied_error_is_policy_safe"],
            verification["policy_invariants"]) == ("fail", "fail", "fail"), verification
    assert (verification["active_revision_is_target"], verification["probes_pass_on_pep"]) == ("pass", "pass")
