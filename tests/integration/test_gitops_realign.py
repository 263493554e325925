"""The KFM runbook's emergency path end to end on the sandbox's Gitea and Flux: `rollback-deploy.yml -e
allow_gitops_drift=true` on aureus/aureus-api (deployed by Flux from aureus-deploy) freezes the Kustomization, rolls
the Deployment back in-cluster to the previous release, and opens the pull request that pins the image now running,
so git's desired state can be re-aligned ("don't leave prod drifted"); the receipt links the pull request and the
freeze. Flux does not revert the undo; a second run opens no second pull request; a forge that stops answering
after the undo fails the run with a receipt naming the missing pull request and leaves no branch; the forge token is
in no artifact and no -v output.

The seeded world has deployed only the bad release v1.5.0, so the Deployment has no previous revision to undo to:
the world is given one through git (a release of v1.4.0 applied by Flux, then `seed.sh --reset gitops`, which puts
the bad release back through git), never by editing the cluster."""

import functools
import json
import os
import signal
import threading
import time

import pytest

from tests.integration import _gitops as g
from tests.integration import _playbook as pb

REVISION = "deployment.kubernetes.io/revision"


# This file's incidents: the emergency rollback, back to the last good image (the same target on every run).
Incident = functools.partial(g.Incident, namespace=g.NAMESPACE, deployment="aureus-api", to_image=g.GOOD,
                             allow_gitops_drift=True, reason="aureus-api v1.5.0 answers 500 on /api/query",
                             wait_timeout=120)


def give_the_deployment_a_previous_release(forge, kubectl):
    """Through git only: release v1.4.0 on main, Flux applies it, then the reset puts v1.5.0 back (Flux again), so
    the Deployment's history holds the last good release as a previous revision."""
    def revision(rs):
        return int(rs["metadata"].get("annotations", {}).get(REVISION, 0))

    replicasets = sorted(pb.items(kubectl, "replicasets", g.NAMESPACE, "app=aureus,component=api"), key=revision)
    # The last good release must be the PREVIOUS revision, not only somewhere in the history: after other runs on
    # the same sandbox (the drill, other gitops tests) it can sit further back, and undoing to an older revision
    # asks for a different approval rule (deployment_older) than this file's incidents expect (deployment_last).
    if len(replicasets) >= 2 and replicasets[-2]["spec"]["template"]["spec"]["containers"][0]["image"] == g.GOOD:
        return

    def pin_good(repo):
        path = os.path.join(repo, g.KFILE)
        with open(path) as handle:
            text = handle.read()
        with open(path, "w") as handle:
            handle.write(text.replace(g.BAD.split("@")[1], g.GOOD.split("@")[1]))

    sha = forge.push_commit("release: aureus-api v1.4.0 (again)", pin_good)
    g.reconcile_to(kubectl, sha)
    pb.wait_until(lambda: g.deployed_image(kubectl) == g.GOOD, what="Flux to deploy v1.4.0")
    g.reset()


def realign_pulls(forge, incident_id):
    return [p for p in forge.pulls() if incident_id in p["title"]]


@pytest.fixture(scope="module")
def world(forge, kubectl):
    """aureus-api on the bad release with the last good one in its history; put back through git afterwards."""
    g.reset()
    give_the_deployment_a_previous_release(forge, kubectl)
    assert g.deployed_image(kubectl) == g.BAD
    yield
    g.reset()


@pytest.fixture(scope="module")
def rolled_back(world, forge, kubectl, tmp_path_factory):
    """One emergency rollback at -v (for the canary search), then a reconcile request, then a second run."""
    incident = Incident(tmp_path_factory.mktemp("gitops-realign"), "INC-REALIGN-%d" % int(time.time()))
    main_before = forge.head()
    first = incident.run(verbosity=1)
    state = {"main_before": main_before, "snapshot": forge.snapshot(),
             "deployment": g.deployed_image(kubectl), "kustomization": g.kustomization(kubectl)}
    second = incident.run(verbosity=1)
    state["snapshot_after_second"] = forge.snapshot()
    yield incident, first, second, state


def test_the_emergency_rollback_freezes_flux_and_runs_the_previous_release(rolled_back, kubectl):
    incident, first, _second, state = rolled_back
    assert first.status == "successful", first.explain()
    assert state["deployment"] == g.GOOD
    kust = state["kustomization"]
    assert kust["spec"]["suspend"] is True
    record = json.loads(kust["metadata"]["annotations"][g.FREEZE])
    assert record["incident"] == incident.incident_id and record["who"] == "oncall"
    assert "allow_gitops_drift" in record["why"] and record["previous"] == {}
    assert "re-alignment pull request is merged" in record["until"]
    # The freeze came before the undo: the plan, then the freeze, then the rollback, then the pull request.
    names = [e["event_data"].get("task") for e in first.events if e.get("event") == "runner_on_ok"]
    order = [next(i for i, n in enumerate(names) if n and n.startswith(prefix)) for prefix in (
        "Plan the re-alignment pull request", "Freeze deploys of Kustomization", "Roll back and wait for the rollout",
        "Open the pull request (left open for review unless merging is allowed) pinning aureus/api@")]
    assert order == sorted(order), names


def test_a_pull_request_pins_the_now_live_image_and_is_left_open_for_review(rolled_back, forge):
    incident, _first, _second, state = rolled_back
    pulls = realign_pulls(forge, incident.incident_id)
    assert len(pulls) == 1
    pull = pulls[0]
    assert pull["state"] == "open" and not pull["merged"]
    assert forge.head() == state["main_before"]  # nothing merged: the pull request waits for review
    diff = forge.request("GET", "/pulls/%d.diff" % pull["number"], raw=True)
    assert "-    digest: " + g.BAD.split("@")[1] in diff
    assert "+    digest: " + g.GOOD.split("@")[1] in diff
    branch = pull["head"]["ref"]
    assert branch.startswith("ops/rollback-aureus-api-")
    assert g.GOOD.split("@")[1] in forge.file(g.KFILE, ref=branch)
    message = forge.commit(pull["head"]["sha"])["commit"]["message"]
    assert "Rollback-Incident: " + incident.incident_id in message
    assert "Rollback-Last-Good-Ref: " + g.GOOD in message


def test_the_receipt_links_the_pull_request_and_the_freeze(rolled_back, forge):
    incident, _first, _second, _state = rolled_back
    receipts = incident.receipts()
    assert len(receipts) == 1
    receipt = receipts[0]
    assert receipt["outcome"] == "succeeded" and receipt["rollback_type"] == "deployment"
    pull = realign_pulls(forge, incident.incident_id)[0]
    assert receipt["pull_request_number"] == pull["number"]
    assert receipt["pull_request_url"] == pull["html_url"]
    assert receipt.get("merge_sha") is None
    assert receipt["freeze"]["incident"] == incident.incident_id and receipt["freeze"]["in_place"] is True
    assert receipt["freeze"]["kustomization"] == "flux-system/aureus-api"
    realignment = receipt["details"]["realignment"]
    assert realignment["status"] == "open_for_review"
    assert realignment["pull_request_url"] == pull["html_url"]
    assert realignment["pin"] == g.GOOD and realignment["desired_before"] == g.BAD
    assert (realignment["repository"], realignment["branch"], realignment["path"]) == (
        forge.repo_url, "main", g.PATH)
    assert "merge the pull request, then thaw" in realignment["next"]
    assert receipt["to_version"] == g.GOOD or g.GOOD in json.dumps(receipt)
    failed, result = pb.verify_ledger(os.path.join(incident.workdir, "verify"), incident.ledger)
    assert not failed and result["valid"], result.get("message")


def test_flux_does_not_revert_the_undo_while_frozen(rolled_back, kubectl):
    _incident, _first, _second, _state = rolled_back
    asked = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + str(time.time())
    for kind, name in (("gitrepository", g.GITREPOSITORY), ("kustomization", g.KUSTOMIZATION)):
        kubectl("annotate", "--overwrite", "-n", g.FLUX_NS, kind, name, "reconcile.fluxcd.io/requestedAt=" + asked)
    # The source handles the request (it is not frozen); the suspended Kustomization applies nothing.
    pb.wait_until(lambda: pb.get(kubectl, "gitrepository", g.FLUX_NS, g.GITREPOSITORY).get("status", {})
                  .get("lastHandledReconcileAt") == asked, what="the GitRepository to handle the reconcile request")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert g.deployed_image(kubectl) == g.GOOD
        time.sleep(1)
    assert g.kustomization(kubectl)["spec"]["suspend"] is True


def test_a_second_run_opens_no_second_pull_request_and_writes_no_receipt(rolled_back, forge, kubectl):
    incident, _first, second, state = rolled_back
    assert second.status == "successful", second.explain()
    assert state["snapshot_after_second"] == state["snapshot"]
    assert len(realign_pulls(forge, incident.incident_id)) == 1
    assert len(incident.receipts()) == 1
    assert second.changed_tasks == []
    assert "Nothing to roll back" in second.stdout
    assert g.kustomization(kubectl)["spec"]["suspend"] is True


def test_the_forge_token_is_in_no_artifact_and_no_verbose_output(rolled_back, forge):
    incident, first, second, _state = rolled_back
    token = forge.token
    for run in (first, second):
        assert token not in run.stdout
        assert token not in json.dumps(run.events)
    assert pb.files_containing(incident.workdir, [token]) == []


def test_an_inventory_that_allows_the_merge_gets_git_re_aligned_through_the_freeze(world, forge, kubectl, tmp_path):
    g.reset()
    give_the_deployment_a_previous_release(forge, kubectl)
    incident = Incident(tmp_path, "INC-REALIGN-MERGE-%d" % int(time.time()))
    try:
        run = incident.run(realign_merge=True)
        assert run.status == "successful", run.explain()
        pulls = realign_pulls(forge, incident.incident_id)
        assert len(pulls) == 1 and pulls[0]["merged"]
        assert g.GOOD.split("@")[1] in forge.file(g.KFILE)  # main now desires what runs
        receipt = incident.receipts()[0]
        assert receipt["details"]["realignment"]["status"] == "merged"
        assert receipt["merge_sha"] == forge.head() and receipt["pull_request_number"] == pulls[0]["number"]
        kust = g.kustomization(kubectl)
        assert kust["status"]["lastAppliedRevision"].endswith(forge.head())  # applied through the freeze
        assert kust["spec"]["suspend"] is True and g.FREEZE in kust["metadata"]["annotations"]  # which stays
        assert g.deployed_image(kubectl) == g.GOOD
    finally:
        g.reset()


def test_a_forge_down_after_the_undo_fails_loudly_with_a_receipt_naming_the_missing_pull_request(
        world, forge, kubectl, sandbox_env, tmp_path):
    g.reset()
    give_the_deployment_a_previous_release(forge, kubectl)
    before = forge.snapshot()
    with open(os.path.join(sandbox_env.get("SANDBOX_STATE") or os.path.join(pb.ROOT, ".sandbox"), "pids",
                           "gitea.pid")) as handle:
        gitea_pid = int(handle.read())
    stopped = []

    def stop_the_forge_once_rolled_back():
        # The undo is the change the re-alignment follows: the forge stops answering once the Deployment runs it.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if g.deployed_image(kubectl) == g.GOOD:
                os.kill(gitea_pid, signal.SIGSTOP)
                stopped.append(time.monotonic())
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=stop_the_forge_once_rolled_back)
    watcher.start()
    incident = Incident(tmp_path, "INC-REALIGN-DOWN-%d" % int(time.time()))
    try:
        run = incident.run(verbosity=1)
    finally:
        watcher.join()
        os.kill(gitea_pid, signal.SIGCONT)
    try:
        assert stopped, "the rollback never happened: %s" % run.explain()
        assert run.status == "failed"
        assert g.deployed_image(kubectl) == g.GOOD  # the rollback itself happened and stays
        assert g.kustomization(kubectl)["spec"]["suspend"] is True  # and Flux stays frozen
        receipts = incident.receipts()
        assert len(receipts) == 1
        receipt = receipts[0]
        assert receipt["outcome"] == "failed"
        message = receipt["failure"]["message"]
        assert "WAS rolled back" in message and "re-alignment pull request was NOT opened" in message
        assert "rollback-gitops.yml -e mode=pin" in message
        realignment = receipt["details"]["realignment"]
        assert realignment["status"] == "pull_request_missing" and realignment["rolled_back"] is True
        assert realignment["stray_branch"] is None
        assert receipt.get("pull_request_url") is None and receipt["freeze"]["in_place"] is True
        failure = run.task_result("Stop - the rollback happened but its re-alignment pull request is missing")
        assert "WAS rolled back" in failure["msg"]
        g.wait_until(forge.alive, what="Gitea to answer again")
        after = forge.snapshot()
        assert after["main"] == before["main"]
        assert [b for b in after["branches"] if b.startswith("ops/")] == []
        assert realign_pulls(forge, incident.incident_id) == []
        assert forge.token not in run.stdout
        assert pb.files_containing(incident.workdir, [forge.token]) == []
    finally:
        g.reset()
