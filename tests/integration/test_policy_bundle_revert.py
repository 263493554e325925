"""governed.rollback.policy_bundle_revert against real OPA, git, a real bundle server and the sandbox's API server.

One throwaway PEP per module (tests/integration/_policy_env.py: a repository copy with v2.0 and v2.1, a bundle
server and an OPA polling it); one throwaway namespace per test with the ConfigMap and the PEP Deployment. Every
refusal proves that the served bundle (sha256), the active revision of the running OPA, the ConfigMap
(resourceVersion) and the user's working tree are unchanged.
"""

import copy
import datetime
import os

import pytest

from tests.integration import _playbook as pb
from tests.integration import _policy_env as env

MODULE = "governed.rollback.policy_bundle_revert"


@pytest.fixture(scope="module")
def pep(sandbox_env, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("pep"))
    handle = env.Pep(sandbox_env["SANDBOX_OPA"], workdir)
    yield handle
    handle.close()


@pytest.fixture
def world(pep, kubectl, namespace):
    """v2.1 everywhere: served, active in OPA, in the namespace's ConfigMap; the PEP Deployment mounting it."""
    pep.reset()
    env.seed_configmap_and_pep(kubectl, namespace)
    return namespace


def args(pep, sandbox_env, namespace=None, **extra):
    base = {"repo": pep.repo, "bundle_name": "aureus", "bundle_server_dir": pep.server_dir, "opa_url": pep.url,
            "opa_path": sandbox_env["SANDBOX_OPA"], "probes": copy.deepcopy(env.PROBES), "wait_timeout": 30,
            "actor": "gov-lead", "incident_id": "INC-POLICY-1", "kubeconfig": sandbox_env["KUBECONFIG"]}
    if namespace:
        base.update(configmap_name="aureus-policies", configmap_namespace=namespace, pep_deployment="aureus-policy")
    base.update(extra)
    return base


def snapshot(pep, kubectl, namespace):
    cm = env.configmap(kubectl, namespace)
    return {"served": env.sha256_file(pep.bundle), "active": pep.revision(),
            "configmap": cm["metadata"]["resourceVersion"], "pep": env.deployment(kubectl, namespace)["metadata"]["resourceVersion"],
            "worktree": env.worktree_state(pep.repo)}


def moment(stamp):
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)


def run(tmp_path, module_args, check=False, diff=False):
    return pb.run_module(tmp_path / "runner", MODULE, module_args, check=check, diff=diff)


def assert_refused(tmp_path, pep, kubectl, namespace, module_args, code, *words):
    before = snapshot(pep, kubectl, namespace)
    failed, result = run(tmp_path, module_args)
    assert failed and result.get("refused") == code, result
    for word in words:
        assert word in result["msg"], result["msg"]
    assert not result["changed"]
    assert snapshot(pep, kubectl, namespace) == before
    return result


def test_v21_to_v20_through_the_bundle_server_plan_act_idempotent(tmp_path, pep, sandbox_env, kubectl, world):
    # The user's checkout has uncommitted work, staged and unstaged: it must survive the rollback byte for byte.
    with open(os.path.join(pep.repo, "policies", "pii-access-policy.rego"), "a") as handle:
        handle.write("\n# work in progress\n")
    with open(os.path.join(pep.repo, "policies", "draft.rego"), "w") as handle:
        handle.write("package aureus.draft\n")
    env.git(pep.repo, "add", "policies/draft.rego")
    worktree = env.worktree_state(pep.repo)
    served = env.sha256_file(pep.bundle)
    assert pep.decide(env.ANALYST_LOW) is False

    failed, plan = run(tmp_path, args(pep, sandbox_env), check=True, diff=True)
    assert not failed and plan["changed"], plan
    assert plan["from_ref"] == pep.shas["v2.1"] and plan["to_ref"] == pep.shas["v2.0"]
    assert plan["to_revision"]["tags"] == ["pii-access-requires-approval-v2.0"] and plan["to_revision"]["version"] == "v2.0"
    assert plan["binding"]["active_revision"] == pep.shas["v2.1"] and plan["binding"]["served_bundle_sha256"] == served
    assert plan["approval_facts"] == {}
    assert plan["tests"]["passed"] == 4 and plan["tests"]["failed"] == 0
    assert plan["tests"]["allow_deny"][0]["rule"] == "data.aureus.pii.allow"
    assert [p["passed"] for p in plan["probes"]] == [True, True]
    changed_files = {e["file"] for e in plan["policy_diff"]}
    assert changed_files == {"pii-access-policy.rego", "pii-access-policy_test.rego", "policy-manifest.json"}
    assert "# pii-access-requires-approval v2.1" in plan["diff"]["before"]
    assert "# pii-access-requires-approval v2.0" in plan["diff"]["after"]
    assert env.sha256_file(pep.bundle) == served and pep.revision() == pep.shas["v2.1"]  # the plan changed nothing
    assert plan["receipt_fields"]["from_version"] == "v2.1" and plan["receipt_fields"]["to_version"] == "v2.0"

    started = datetime.datetime.now(datetime.timezone.utc)
    failed, result = run(tmp_path, args(pep, sandbox_env, expected_binding=plan["binding"], security_review="approved",
                                        affected_users=45))
    ended = datetime.datetime.now(datetime.timezone.utc)
    assert not failed and result["changed"], result
    assert result["applied"]["bundle_server"] and result["pep"] == {
        "revision": pep.shas["v2.0"], "activated_at": result["activated_at"], "verified": True}
    # The moments of the timeline: the bundle in place (our clock), then OPA's own record of activating it, which is
    # what OPA's status API says right now too.
    published, activated = moment(result["published_at"]), moment(result["activated_at"])
    assert started < published < activated < ended
    status = env.http_json(pep.url + "/v1/status")["result"]["bundles"]["aureus"]
    assert datetime.datetime.fromisoformat(status["last_successful_activation"].replace("Z", "+00:00")) == activated
    assert pep.revision() == pep.shas["v2.0"]
    assert pep.decide(env.ANALYST_LOW) is True and pep.decide(env.ANALYST_HIGH) is False
    assert [p["where"] for p in result["probes"]] == ["target bundle"] * 2 + ["running PEP"] * 2
    assert all(p["passed"] for p in result["probes"])
    fields = result["receipt_fields"]
    assert fields["policy_name"] == "pii-access-requires-approval" and fields["security_review"] == "approved"
    assert fields["affected_users"] == 45 and fields["current_ref"] == pep.shas["v2.1"]
    audit = fields["details"]["audit_event"]
    assert audit["event"] == "policy_rollback" and audit["actor"] == "gov-lead"
    assert audit["policy"] == "pii-access-requires-approval" and audit["timestamp"].endswith("Z")
    assert (fields["details"]["published_at"], fields["details"]["activated_at"]) == (
        result["published_at"], result["activated_at"])
    assert env.worktree_state(pep.repo) == worktree

    failed, again = run(tmp_path, args(pep, sandbox_env))
    assert not failed and not again["changed"] and "already at v2.0" in again["skipped_reason"]
    assert again["pep"]["verified"]


def test_v21_to_v20_through_the_configmap_restarts_the_pep(tmp_path, pep, sandbox_env, kubectl, world):
    before = env.configmap(kubectl, world)
    generation = env.deployment(kubectl, world)["metadata"]["generation"]
    module_args = args(pep, sandbox_env, world, apply_to=["configmap"], opa_url=None,
                       target_ref="pii-access-requires-approval-v2.0")
    failed, plan = run(tmp_path, module_args, check=True)
    assert not failed and plan["changed"] and plan["from_ref"] == pep.shas["v2.1"], plan
    assert env.configmap(kubectl, world)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

    failed, result = run(tmp_path, dict(module_args, expected_binding=plan["binding"]))
    assert not failed and result["changed"] and result["applied"]["pep_restarted"], result
    after = env.configmap(kubectl, world)
    assert after["data"]["pii-access-policy.rego"] == env.seed_text("v2.0", "pii-access-policy.rego")
    assert after["data"]["policy-manifest.json"] == env.seed_text("v2.0", "policy-manifest.json")
    assert set(after["data"]) == {"pii-access-policy.rego", "policy-manifest.json"}  # no test file shipped
    assert after["metadata"]["annotations"]["policy.governed.io/revision"] == pep.shas["v2.0"]
    assert any(m["manager"] == "governed-rollback" and m["operation"] == "Apply" for m in after["metadata"]["managedFields"])
    workload = env.deployment(kubectl, world)
    assert workload["metadata"]["generation"] == generation + 1
    assert workload["spec"]["template"]["metadata"]["annotations"]["policy.governed.io/revision"] == pep.shas["v2.0"]
    assert result["pep_rollout"]["done"]
    assert pep.revision() == pep.shas["v2.1"]  # the bundle server was not asked to change
    # Mitigation here is the ConfigMap stored; no OPA was watched, so no activation time.
    assert result["receipt_fields"]["details"]["published_at"] == result["published_at"]
    assert "activated_at" not in result and "activated_at" not in result["receipt_fields"]["details"]

    failed, again = run(tmp_path, module_args)
    assert not failed and not again["changed"], again
    assert env.configmap(kubectl, world)["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]


def test_a_target_whose_tests_fail_is_refused(tmp_path, pep, sandbox_env, kubectl, world):
    broken_test = env.seed_text("v2.0", "pii-access-policy_test.rego").replace(
        "test_data_owner_allowed if {\n\tpii.allow", "test_data_owner_allowed if {\n\tnot pii.allow")
    sha = env.commit_files(pep.repo, {"pii-access-policy_test.rego": broken_test,
                                      "pii-access-policy.rego": env.seed_text("v2.0", "pii-access-policy.rego")},
                           "v2.0 with a broken test")
    try:
        result = assert_refused(tmp_path, pep, kubectl, world, args(pep, sandbox_env, world, target_ref=sha,
                                                                    apply_to=["bundle_server", "configmap"]),
                                "tests_failed", "test_data_owner_allowed", "nothing was applied")
        assert result["tests"]["failed"] == 1
    finally:
        env.git(pep.repo, "reset", "-q", "--hard", "HEAD~1")


def test_tests_that_no_longer_cover_deny_are_refused_naming_the_rule(tmp_path, pep, sandbox_env, kubectl, world):
    only_allow = env.seed_text("v2.1", "pii-access-policy_test.rego")
    only_allow = only_allow.split("test_analyst_low_pii_needs_approval")[0] + (
        "test_data_owner_allowed if {\n\tpii.allow with input as {\"user\": {\"role\": \"data_owner\"}}\n}\n")
    sha = env.commit_files(pep.repo, {"pii-access-policy_test.rego": only_allow,
                                      "pii-access-policy.rego": env.seed_text("v2.0", "pii-access-policy.rego")},
                           "v2.0 policy with allow-only tests")
    try:
        assert_refused(tmp_path, pep, kubectl, world, args(pep, sandbox_env, target_ref=sha), "tests_miss_allow_deny",
                       "data.aureus.pii.allow", "deny")
    finally:
        env.git(pep.repo, "reset", "-q", "--hard", "HEAD~1")


def test_a_disagreeing_probe_refuses(tmp_path, pep, sandbox_env, kubectl, world):
    probes = copy.deepcopy(env.PROBES)
    probes[1]["expect"] = True  # claims v2.0 lets analysts read high-PII data without approval
    result = assert_refused(tmp_path, pep, kubectl, world, args(pep, sandbox_env, world, probes=probes,
                                                                apply_to=["bundle_server", "configmap"]),
                            "probe_failed", "expected true, got false")
    assert [p["passed"] for p in result["probes"]] == [True, False]


def test_the_bundle_server_down_mid_apply_keeps_the_previous_bundle(tmp_path, pep, sandbox_env, kubectl, world):
    served = env.sha256_file(pep.bundle)
    pep.stop_server()
    try:
        failed, result = run(tmp_path, args(pep, sandbox_env, wait_timeout=4))
        assert failed and "still reports revision %s" % pep.shas["v2.1"] in result["msg"], result
        assert "previous bundle was put back" in result["msg"] and result["bundle_restored"]
        assert result["published_at"] and "activated_at" not in result and result["pep"]["activated_at"] is None
        assert pep.revision() == pep.shas["v2.1"]
        assert env.sha256_file(pep.bundle) == served
    finally:
        pep.start_server()
    pep.wait_revision(pep.shas["v2.1"])  # back up, it serves the previous bundle, not the unverified one


@pytest.mark.parametrize("case", ["bad_ref", "no_history", "no_opa", "syntax_error", "moved"])
def test_clear_errors_change_nothing(tmp_path, pep, sandbox_env, kubectl, world, case):
    module_args = args(pep, sandbox_env, world, apply_to=["bundle_server", "configmap"])
    cleanup = None
    if case == "bad_ref":
        module_args["target_ref"] = "pii-access-requires-approval-v9.9"
        expected = ("bad_ref", "v9.9")
    elif case == "no_history":
        module_args["policy_dir"] = "rules"
        expected = ("no_policy_history", "rules")
    elif case == "no_opa":
        module_args["opa_path"] = str(tmp_path / "no-such-opa")
        expected = ("opa_not_found", "opa binary was not found")
    elif case == "syntax_error":
        sha = env.commit_files(pep.repo, {"pii-access-policy.rego": "package aureus.pii\n\nallow if {\n"}, "broken")
        module_args["target_ref"] = sha
        expected = ("build_failed", "opa build")

        def cleanup():
            env.git(pep.repo, "reset", "-q", "--hard", "HEAD~1")
    else:
        binding = {"active_revision": pep.shas["v2.0"]}  # approved when v2.0 was active; v2.1 is
        module_args["expected_binding"] = binding
        expected = ("changed_since_approved", "changed since it was approved")
    try:
        assert_refused(tmp_path, pep, kubectl, world, module_args, *expected)
    finally:
        if cleanup:
            cleanup()


def test_a_configmap_edited_after_the_plan_is_not_overwritten(tmp_path, pep, sandbox_env, kubectl, world):
    module_args = args(pep, sandbox_env, world, apply_to=["configmap"], opa_url=None)
    failed, plan = run(tmp_path, module_args, check=True)
    assert not failed and plan["changed"], plan
    # Someone hot-fixes the live policy between the approval and the act.
    kubectl("-n", world, "patch", "configmap", "aureus-policies", "--type", "merge",
            "-p", '{"data": {"hotfix.rego": "package aureus.hotfix\\n"}}')
    edited = env.configmap(kubectl, world)
    before = snapshot(pep, kubectl, world)
    failed, result = run(tmp_path, dict(module_args, expected_binding=plan["binding"]))
    assert failed and result["refused"] == "changed_since_approved" and "configmap_sha256" in result["msg"], result
    assert snapshot(pep, kubectl, world) == before
    assert env.configmap(kubectl, world)["data"] == edited["data"]

    # Re-planned and approved again, the rollback puts exactly the v2.0 files in place (the hot-fix key goes too).
    failed, plan = run(tmp_path, module_args, check=True)
    assert not failed and plan["changed"], plan
    failed, result = run(tmp_path, dict(module_args, expected_binding=plan["binding"]))
    assert not failed and result["changed"], result
    assert set(env.configmap(kubectl, world)["data"]) == {"pii-access-policy.rego", "policy-manifest.json"}
