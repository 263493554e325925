"""The Helm values pin against the sandbox's real Gitea, source-, kustomize- and helm-controller: aureus-web is a
HelmRelease (applied by the Kustomization aureus-web) of a chart that source-controller packages from the same
GitRepository; its bad release v2.1.0 is pinned back to v2.0.0's digest in spec.values through a pull request,
helm-controller upgrades the release and the Deployment rolls out on the digest. Refusals change nothing; the
HelmRelease's deploy freeze is exact."""

import hashlib
import json
import os
import re
import time

import pytest

from tests.integration import _gitops as g
from tests.integration import _playbook as pb
from tests.sandbox_fixtures import get

MODULE = "governed.rollback.gitops_revert"
FREEZE_MODULE = "governed.rollback.deploy_freeze"
WEB = "aureus-web"
HFILE = "apps/aureus-web/helmrelease.yaml"


def web_digest(version):
    return "sha256:" + hashlib.sha256(("aureus/web:%s" % version).encode()).hexdigest()


GOOD = "aureus/web@" + web_digest("v2.0.0")
BAD = "aureus/web@" + web_digest("v2.1.0")
APPROVED = {"approved": True, "rule": "deployment_last", "approval_path": "auto_approval", "requested_by": "oncall"}


@pytest.fixture
def incident(forge, kubectl):
    g.reset()
    yield
    g.reset()


def args_for(env, **extra):
    args = g.module_args(env, path="apps/aureus-web", kustomization=WEB, helmrelease=WEB, mode="pin",
                         reason="v2.1.0 breaks the login page")
    args.update(extra)
    return args


def run(tmp_path, name, args, module=MODULE, check=False, diff=False):
    return pb.run_module_with_output(os.path.join(str(tmp_path), name), module, args, check=check, diff=diff)


def web_image(kubectl):
    return get(kubectl, "deployment", g.NAMESPACE, WEB)["spec"]["template"]["spec"]["containers"][0]["image"]


def helmrelease(kubectl):
    return get(kubectl, "helmrelease", g.FLUX_NS, WEB)


def test_check_mode_plans_the_values_pin_by_the_rule_and_pushes_nothing(incident, forge, kubectl, sandbox_env,
                                                                        tmp_path):
    before, rv = forge.snapshot(), helmrelease(kubectl)["metadata"]["resourceVersion"]
    failed, plan, _out = run(tmp_path, "plan", args_for(sandbox_env), check=True, diff=True)
    assert not failed, plan.get("msg")
    assert plan["changed"] and (plan["from_ref"], plan["to_ref"]) == (BAD, GOOD)
    # exactly the digest line of spec.values.image changes; its comment stays
    removed = [line for line in plan["commit_diff"].splitlines() if line.startswith("-") and not line.startswith("---")]
    added = [line for line in plan["commit_diff"].splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert removed == ["-      digest: %s  # set by the release pipeline" % BAD.split("@")[1]]
    assert added == ["+      digest: %s  # set by the release pipeline" % GOOD.split("@")[1]]
    assert plan["diff"]["prepared"] == plan["commit_diff"]
    assert plan["branch"].startswith("ops/rollback-aureus-web-")
    assert plan["approval_facts"] == {"current_revision": 2, "previous_revision": 1, "to_revision": 1}
    assert forge.snapshot() == before
    assert helmrelease(kubectl)["metadata"]["resourceVersion"] == rv and web_image(kubectl) == BAD


def test_the_pin_merges_and_helm_controller_rolls_the_release_back_then_a_second_run_opens_none(
        incident, forge, kubectl, sandbox_env, tmp_path):
    args = args_for(sandbox_env, approval=APPROVED, values_key="image")
    failed, result, _out = run(tmp_path, "act", args)
    assert not failed, result.get("msg")
    assert result["changed"] and result["reconcile"]["done"]
    merge = result["merge_sha"]
    assert forge.head() == merge and result["pull_request"]["merged"]
    text = forge.file(HFILE)
    assert "      digest: %s  # set by the release pipeline\n" % GOOD.split("@")[1] in text
    assert '      tag: "2.1.0"\n' in text  # the tag is the chart's concern: a digest wins over it
    reconcile = result["reconcile"]
    assert reconcile["helmrelease"] == "flux-system/aureus-web" and not reconcile["through_helm_freeze"]
    timings = reconcile["timings"]
    assert 0 <= timings["applied_seconds"] <= timings["released_seconds"] <= timings["rollout_seconds"]
    assert reconcile["last"]["helmrelease"]["ready"] and reconcile["last"]["helmrelease"]["spec_image"] == GOOD
    live = helmrelease(kubectl)
    assert live["spec"]["values"]["image"]["digest"] == GOOD.split("@")[1]
    assert [c["status"] for c in live["status"]["conditions"] if c["type"] == "Ready"] == ["True"]
    assert web_image(kubectl) == GOOD
    assert result["receipt_fields"]["from_version"] == BAD and result["receipt_fields"]["to_version"] == GOOD

    after = forge.snapshot()
    failed, again, _out = run(tmp_path, "again", args)
    assert not failed, again.get("msg")
    assert not again["changed"] and "already holds the rollback" in again["skipped_reason"]
    assert forge.snapshot() == after


@pytest.mark.parametrize("values_key,expected", [
    ("web.image", r"no image at values_key 'web.image' \(absent\)"),
    ("image.tag", r"values_key 'image.tag' names a field of the image at 'image', not an image; name the image "
                  r"itself: values_key=image"),
])
def test_a_values_key_that_names_no_image_is_refused_and_nothing_changes(
        values_key, expected, incident, forge, kubectl, sandbox_env, tmp_path):
    before, rv = forge.snapshot(), helmrelease(kubectl)["metadata"]["resourceVersion"]
    failed, result, _out = run(tmp_path, "refused", args_for(sandbox_env, values_key=values_key, approval=APPROVED))
    assert failed and result["refused"] == "no_image", result
    assert re.search(expected, result["msg"])
    assert forge.snapshot() == before
    assert helmrelease(kubectl)["metadata"]["resourceVersion"] == rv and web_image(kubectl) == BAD


def test_ambiguous_values_are_refused_naming_the_candidates_and_nothing_changes(
        incident, forge, kubectl, sandbox_env, tmp_path):
    def add_sidecar(repo):
        path = os.path.join(repo, HFILE)
        with open(path) as handle:
            text = handle.read()
        with open(path, "w") as handle:
            handle.write(text + "    sidecar:\n      image:\n        repository: aureus/proxy\n        tag: \"1.0\"\n")

    sha = forge.push_commit("aureus-web: a sidecar", add_sidecar)
    g.reconcile_to(kubectl, sha)
    before, head = forge.snapshot(), forge.head()
    failed, result, _out = run(tmp_path, "ambiguous", args_for(sandbox_env, approval=APPROVED))
    assert failed and result["refused"] == "no_image", result
    assert "hold 2 image candidates (image, sidecar.image); name the one to pin with values_key" in result["msg"]
    assert forge.snapshot() == before and forge.head() == head and web_image(kubectl) == BAD


def test_deploy_freeze_suspends_the_helmrelease_the_pin_reconciles_through_it_and_the_thaw_is_exact(
        incident, forge, kubectl, sandbox_env, tmp_path):
    freeze = {"reconciler": "flux", "kind": "HelmRelease", "name": WEB, "namespace": g.FLUX_NS,
              "kubeconfig": sandbox_env["KUBECONFIG"], "incident_id": "INC-T-FREEZE", "actor": "oncall",
              "reason": "rolling aureus-web back", "until": "the rollback is verified"}
    failed, frozen, _out = run(tmp_path, "freeze", dict(freeze, state="frozen"), module=FREEZE_MODULE)
    assert not failed, frozen.get("msg")
    live = helmrelease(kubectl)
    assert live["spec"]["suspend"] is True
    record = json.loads(live["metadata"]["annotations"][g.FREEZE])
    assert record["who"] == "oncall" and record["previous"] == {}

    failed, result, _out = run(tmp_path, "act", args_for(sandbox_env, approval=APPROVED))
    assert not failed, result.get("msg")
    assert result["reconcile"]["done"] and result["reconcile"]["through_helm_freeze"]
    assert web_image(kubectl) == GOOD
    live = helmrelease(kubectl)
    assert live["spec"]["suspend"] is True and g.FREEZE in live["metadata"]["annotations"]  # frozen again

    failed, thawed, _out = run(tmp_path, "thaw", dict(freeze, state="thawed"), module=FREEZE_MODULE)
    assert not failed, thawed.get("msg")
    live = helmrelease(kubectl)
    assert "suspend" not in live["spec"] and g.FREEZE not in (live["metadata"].get("annotations") or {})
    failed, again, _out = run(tmp_path, "thaw-again", dict(freeze, state="thawed"), module=FREEZE_MODULE)
    assert not failed and not again["changed"]


def test_rollback_gitops_yml_pins_the_helm_release_freezes_the_helmrelease_and_receipts_it(
        incident, forge, kubectl, sandbox_env, tmp_path):
    runs = g.Incident(tmp_path, "INC-HELM-%d" % int(time.time()), playbook="playbooks/rollback-gitops.yml",
                      path="apps/aureus-web", component=WEB, kustomization=WEB, workload=WEB, helmrelease=WEB,
                      values_key="image", mode="pin", gitops_pod_selector="app=aureus,component=web",
                      reason="aureus-web v2.1.0 breaks the login page", wait_timeout=120)
    first = runs.run()
    assert first.status == "successful", first.explain()
    assert web_image(kubectl) == GOOD
    assert "      digest: %s  # set by the release pipeline\n" % GOOD.split("@")[1] in forge.file(HFILE)
    live = helmrelease(kubectl)
    record = json.loads(live["metadata"]["annotations"][g.FREEZE])
    assert live["spec"]["suspend"] is True and record["incident"] == runs.incident_id  # the freeze stays
    web_kust = get(kubectl, "kustomization", g.FLUX_NS, WEB)  # the freeze is on the HelmRelease, not here
    assert "suspend" not in web_kust["spec"] and g.FREEZE not in (web_kust["metadata"].get("annotations") or {})
    receipts = runs.receipts()
    assert len(receipts) == 1
    receipt = receipts[0]
    assert receipt["outcome"] == "succeeded" and receipt["rollback_type"] == "gitops"
    assert (receipt["from_version"], receipt["to_version"]) == (BAD, GOOD)
    assert receipt["merge_sha"] == forge.head() == receipt["rollback_target_ref"]
    assert receipt["details"]["helmrelease"] == "flux-system/aureus-web"
    assert receipt["freeze"]["helmrelease"] == "flux-system/aureus-web" and receipt["freeze"]["in_place"]
    assert all(receipt["verification"][k] == "pass" for k in
               ("source_at_merge", "kustomization_ready", "live_equals_desired", "pods_on_target_digest",
                "helmrelease_ready"))

    after = forge.snapshot()
    second = runs.run()
    assert second.status == "successful", second.explain()
    assert forge.snapshot() == after  # no second pull request


def give_aureus_web_a_previous_release(forge, kubectl):
    """Through git only: v2.0.0's digest back in the HelmRelease's values, helm-controller upgrades the release, then
    the reset puts v2.1.0 back (helm-controller again), so the Deployment's history holds the last good release."""
    history = [rs for rs in pb.items(kubectl, "replicasets", g.NAMESPACE, "app=aureus,component=web")
               if rs["spec"]["template"]["spec"]["containers"][0]["image"] == GOOD]
    if history:
        return

    def pin_good(repo):
        path = os.path.join(repo, HFILE)
        with open(path) as handle:
            text = handle.read()
        with open(path, "w") as handle:
            handle.write(text.replace(BAD.split("@")[1], GOOD.split("@")[1]))

    forge.push_commit("release: aureus-web v2.0.0 (again)", pin_good)
    for kind, name in (("gitrepository", g.GITREPOSITORY), ("kustomization", WEB)):
        kubectl("annotate", "--overwrite", "-n", g.FLUX_NS, kind, name,
                "reconcile.fluxcd.io/requestedAt=%s" % time.time())
    pb.wait_until(lambda: web_image(kubectl) == GOOD, timeout=120, what="helm-controller to deploy aureus-web v2.0.0")
    g.reset()


def test_the_emergency_path_on_a_helmrelease_workload_freezes_the_helmrelease_and_opens_the_values_pin(
        incident, forge, kubectl, tmp_path):
    give_aureus_web_a_previous_release(forge, kubectl)
    assert web_image(kubectl) == BAD
    main_before = forge.head()
    runs = g.Incident(tmp_path, "INC-HELM-REALIGN-%d" % int(time.time()), namespace=g.NAMESPACE, deployment=WEB,
                      to_image=GOOD, allow_gitops_drift=True, reason="aureus-web v2.1.0 breaks the login page",
                      wait_timeout=120)
    first = runs.run()
    assert first.status == "successful", first.explain()
    assert web_image(kubectl) == GOOD
    live = helmrelease(kubectl)
    assert live["spec"]["suspend"] is True  # helm-controller must not upgrade the undo away
    record = json.loads(live["metadata"]["annotations"][g.FREEZE])
    assert record["incident"] == runs.incident_id and "allow_gitops_drift" in record["why"]
    pulls = [p for p in forge.pulls() if runs.incident_id in p["title"]]
    assert len(pulls) == 1 and pulls[0]["state"] == "open" and forge.head() == main_before
    diff = forge.request("GET", "/pulls/%d.diff" % pulls[0]["number"], raw=True)
    assert "-      digest: %s  # set by the release pipeline" % BAD.split("@")[1] in diff
    assert "+      digest: %s  # set by the release pipeline" % GOOD.split("@")[1] in diff
    receipt = runs.receipts()[0]
    assert receipt["outcome"] == "succeeded" and receipt["pull_request_number"] == pulls[0]["number"]
    assert receipt["freeze"]["helmrelease"] == "flux-system/aureus-web" and receipt["freeze"]["in_place"]
    realignment = receipt["details"]["realignment"]
    assert realignment["status"] == "open_for_review" and realignment["helmrelease"] == "flux-system/aureus-web"
    assert (realignment["pin"], realignment["desired_before"], realignment["path"]) == (GOOD, BAD, "apps/aureus-web")
