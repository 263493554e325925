"""gitops_revert against the sandbox's real Gitea and Flux: the plan pushes nothing, the revert goes through a pull
request and Flux, a second run opens no second pull request, and every refusal leaves the repository (main, the
branches, the pull requests) and the cluster as they were."""

import json
import os
import re

import pytest

from tests.integration import _gitops as g
from tests.integration import _playbook as pb

MODULE = "governed.rollback.gitops_revert"


@pytest.fixture
def incident(forge, kubectl):
    g.reset()
    yield
    kubectl("patch", "kustomization", g.KUSTOMIZATION, "-n", g.FLUX_NS, "--type", "json", "-p",
            json.dumps([{"op": "remove", "path": "/spec/healthChecks"}]), check=False)
    g.reset()


def run(tmp_path, name, args, check=False, diff=False):
    return pb.run_module_with_output(os.path.join(str(tmp_path), name), MODULE, args, check=check, diff=diff)


def assert_nothing_pushed(forge, kubectl, before, rv):
    assert forge.snapshot() == before
    assert g.deployed_image(kubectl) == g.BAD
    assert g.kustomization(kubectl)["metadata"]["resourceVersion"] == rv


def test_check_mode_returns_the_diff_and_the_pull_request_and_pushes_nothing(incident, forge, kubectl, sandbox_env,
                                                                             tmp_path):
    before = forge.snapshot()
    failed, plan, _out = run(tmp_path, "plan", g.module_args(sandbox_env), check=True, diff=True)
    assert not failed, plan.get("msg")
    assert plan["changed"] and plan["skipped_reason"] is None
    assert (plan["from_ref"], plan["to_ref"]) == (g.BAD, g.GOOD)
    assert plan["current_ref"]["sha"] == forge.seeded("bad") == before["main"]
    assert "-    digest: %s" % g.BAD.split("@")[1] in plan["commit_diff"]
    assert "+    digest: %s" % g.GOOD.split("@")[1] in plan["commit_diff"]
    assert re.match(r"^ops/rollback-aureus-api-\d{8}T\d{6}Z$", plan["branch"])
    assert plan["pull_request"]["base"] == "main" and "number" not in plan["pull_request"]
    assert plan["approval_facts"] == {"current_revision": 3, "previous_revision": 2, "to_revision": 2}
    assert plan["binding"]["reverted_commit"] == forge.seeded("bad")
    assert plan["diff"]["prepared"] == plan["commit_diff"]
    assert forge.snapshot() == before


def test_revert_merges_through_a_pull_request_and_flux_rolls_the_api_back_then_a_second_run_opens_none(
        incident, forge, kubectl, sandbox_env, tmp_path):
    approval = {"approved": True, "rule": "deployment_last", "approval_path": "auto_approval",
                "requested_by": "oncall"}
    args = g.module_args(sandbox_env, approval=approval)
    failed, plan, _out = run(tmp_path, "plan", args, check=True)
    assert not failed, plan.get("msg")
    failed, result, _out = run(tmp_path, "act", dict(args, expected_binding=plan["binding"]))
    assert not failed, result.get("msg")
    assert result["changed"] and result["reconcile"]["done"]
    merge = result["merge_sha"]
    assert forge.head() == merge and result["pull_request"]["merged"]
    assert g.deployed_image(kubectl) == g.GOOD
    assert g.GOOD.split("@")[1] in forge.file(g.KFILE)
    message = forge.commit(forge.commit(merge)["parents"][1]["sha"])["commit"]["message"]
    for trailer in ("Rollback-Incident: " + args["incident_id"], "Rollback-Last-Good-Ref: " + g.GOOD,
                    "Rollback-Current-Ref: %s (%s)" % (forge.seeded("bad"), g.BAD), "This reverts commit"):
        assert trailer in message
    comments = forge.request("GET", "/issues/%d/comments" % result["pull_request"]["number"])
    assert any("decision: approved" in c["body"] for c in comments)
    timings = result["reconcile"]["timings"]
    assert 0 <= timings["source_seconds"] <= timings["applied_seconds"] <= timings["rollout_seconds"]
    fields = result["receipt_fields"]
    assert (fields["current_ref"], fields["rollback_target_ref"], fields["merge_sha"]) == (
        forge.seeded("bad"), merge, merge)
    assert fields["pull_request_number"] == result["pull_request"]["number"]
    assert forge.branches() == ["main"]  # the rollback branch is deleted after the merge

    after = forge.snapshot()
    failed, again, _out = run(tmp_path, "again", dict(args, expected_binding=None))
    assert not failed, again.get("msg")
    assert not again["changed"] and "already holds the rollback" in again["skipped_reason"]
    assert forge.snapshot() == after  # no second pull request, no new branch
    assert len([p for p in forge.pulls() if args["incident_id"] in p["title"]]) == 1


def test_merge_false_leaves_the_pull_request_open_and_a_second_run_opens_no_second_one(
        incident, forge, kubectl, sandbox_env, tmp_path):
    args = g.module_args(sandbox_env, mode="pin", merge=False)
    failed, result, _out = run(tmp_path, "open", args)
    assert not failed, result.get("msg")
    assert result["changed"] and result["pull_request"]["state"] == "open" and "merge_sha" not in result
    assert forge.head() == forge.seeded("bad") and g.deployed_image(kubectl) == g.BAD
    before = forge.snapshot()
    failed, again, _out = run(tmp_path, "again", args)
    assert not failed, again.get("msg")
    assert not again["changed"] and "already open for review" in again["skipped_reason"]
    assert again["pull_request"]["number"] == result["pull_request"]["number"]
    assert forge.snapshot() == before


def test_a_conflicting_revert_is_refused_and_nothing_is_pushed(incident, forge, kubectl, sandbox_env, tmp_path):
    hotfix = g.digest("v1.5.1")

    def edit(repo):
        path = os.path.join(repo, g.KFILE)
        with open(path) as handle:
            text = handle.read()
        with open(path, "w") as handle:
            handle.write(text.replace(g.BAD.split("@")[1], hotfix))

    sha = forge.push_commit("release: aureus-api v1.5.1", edit)
    g.reconcile_to(kubectl, sha)
    before, rv = forge.snapshot(), g.kustomization(kubectl)["metadata"]["resourceVersion"]
    failed, result, _out = run(tmp_path, "conflict", g.module_args(sandbox_env, revert_commit=forge.seeded("bad")))
    assert failed and result["refused"] == "conflict", result
    assert "conflicts" in result["msg"] and "nothing was pushed" in result["msg"]
    assert result["conflicts"] == [g.KFILE]
    assert forge.snapshot() == before
    assert g.kustomization(kubectl)["metadata"]["resourceVersion"] == rv


@pytest.mark.parametrize("case", ["not_in_history", "not_reconciled", "diverged"])
def test_refusals_change_nothing(case, incident, forge, kubectl, sandbox_env, tmp_path):
    args = g.module_args(sandbox_env)
    if case == "not_in_history":
        args["revert_commit"] = "0123456789abcdef0123456789abcdef01234567"
    elif case == "not_reconciled":
        args["repo_url"] = args["repo_url"].replace("aureus-deploy", "aureus-deploy-fork")
    else:
        # Freeze the source (nothing fetched), then a commit lands on main that Flux has not deployed.
        kubectl("patch", "gitrepository", g.GITREPOSITORY, "-n", g.FLUX_NS, "--type", "merge", "-p",
                '{"spec":{"suspend":true}}')
        forge.push_commit("docs: runbook link", lambda repo: open(os.path.join(repo, "README.md"), "a").write("x\n"))
    before, rv = forge.snapshot(), g.kustomization(kubectl)["metadata"]["resourceVersion"]
    try:
        failed, result, _out = run(tmp_path, case, args)
        assert failed and result["refused"] == case, result
        assert "nothing was changed" in result["msg"]
        # checked before the source resumes: resuming it lets Flux fetch and apply the test's own commit
        assert_nothing_pushed(forge, kubectl, before, rv)
    finally:
        kubectl("patch", "gitrepository", g.GITREPOSITORY, "-n", g.FLUX_NS, "--type", "merge", "-p",
                '{"spec":{"suspend":null}}')


def test_a_reconcile_that_never_becomes_ready_fails_at_the_deadline_with_evidence(
        incident, forge, kubectl, sandbox_env, tmp_path):
    # A health check on an object that never appears: the Kustomization cannot become Ready at any revision.
    # Flux ignores spec.healthChecks while spec.wait is true (the sandbox's setting), so the patch turns wait off.
    kubectl("patch", "kustomization", g.KUSTOMIZATION, "-n", g.FLUX_NS, "--type", "merge", "-p", json.dumps(
        {"spec": {"wait": False, "healthChecks": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                                   "name": "aureus-never", "namespace": "aureus"}]}}))
    args = g.module_args(sandbox_env, mode="pin", wait_timeout=20,
                         approval={"approved": True, "rule": "deployment_last"})
    failed, result, _out = run(tmp_path, "stuck", args)
    assert failed, result
    assert "did not apply it within 20s" in result["msg"] and "The merge stays on main" in result["msg"]
    reconcile = result["reconcile"]
    assert not reconcile["done"] and reconcile["last"]["progress"]["source_at_target"]
    assert not reconcile["last"]["progress"]["ready"]
    assert reconcile["last"]["kustomization_conditions"], "the failure evidence holds Flux's conditions"
    assert result["merge_sha"] == forge.head()
