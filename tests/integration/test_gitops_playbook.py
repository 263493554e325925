"""playbooks/rollback-gitops.yml end to end on the sandbox's Gitea and Flux: the bad release v1.5.0 of aureus-api is
reverted through a pull request, Flux rolls the API back to the last good digest, the freeze is recorded, the receipt
names the pull request and the merge; a second run opens no second pull request; the forge going down mid-run gives a
failed receipt and nothing merged; the token is in no artifact and no -v output."""

import functools
import json
import os
import signal
import threading
import time

import pytest

from tests.integration import _gitops as g
from tests.integration import _playbook as pb

PLAYBOOK = "playbooks/rollback-gitops.yml"


# This file's incidents: rollback-gitops.yml with the inventory's defaults.
Incident = functools.partial(g.Incident, playbook=PLAYBOOK, reason="aureus-api v1.5.0 answers 500 on /api/query",
                             wait_timeout=120)


@pytest.fixture(scope="module")
def rolled_back(forge, tmp_path_factory):
    """One real rollback (with -v, for the canary search), then a second run of the same incident."""
    g.reset()
    incident = Incident(tmp_path_factory.mktemp("gitops-playbook"), "INC-GITOPS-%d" % int(time.time()))
    first = incident.run(verbosity=1)
    state = {"main": forge.head(), "snapshot": forge.snapshot()}
    second = incident.run(verbosity=1)
    yield incident, first, second, state
    g.reset()


def test_the_api_runs_the_last_good_digest_main_holds_the_revert_and_the_freeze_is_recorded(
        rolled_back, forge, kubectl):
    incident, first, _second, state = rolled_back
    assert first.status == "successful", first.explain()
    assert g.deployed_image(kubectl) == g.GOOD
    assert g.GOOD.split("@")[1] in forge.file(g.KFILE)
    merge = state["main"]
    message = forge.commit(forge.commit(merge)["parents"][1]["sha"])["commit"]["message"]
    assert "Rollback-Incident: " + incident.incident_id in message
    kust = g.kustomization(kubectl)
    record = json.loads(kust["metadata"]["annotations"][g.FREEZE])
    assert kust["spec"]["suspend"] is True  # the freeze stays until someone thaws it
    assert record["incident"] == incident.incident_id and record["who"] == "oncall"
    assert kust["status"]["lastAppliedRevision"].endswith(merge)


def test_the_receipt_names_the_pull_request_the_merge_and_the_freeze(rolled_back, forge):
    incident, _first, _second, state = rolled_back
    receipts = incident.receipts()
    assert len(receipts) == 1
    receipt = receipts[0]
    assert receipt["outcome"] == "succeeded" and receipt["rollback_type"] == "gitops"
    assert receipt["approval"]["rule"] == "deployment_last"
    assert receipt["current_ref"] == forge.seeded("bad")
    assert receipt["rollback_target_ref"] == receipt["merge_sha"] == state["main"]
    pulls = [p for p in forge.pulls() if incident.incident_id in p["title"]]
    assert len(pulls) == 1 and pulls[0]["merged"]
    assert receipt["pull_request_number"] == pulls[0]["number"]
    assert receipt["pull_request_url"] == pulls[0]["html_url"]
    assert receipt["freeze"]["incident"] == incident.incident_id and receipt["freeze"]["in_place"] is True
    assert (receipt["from_version"], receipt["to_version"]) == (g.BAD, g.GOOD)
    assert all(receipt["verification"][k] == "pass" for k in
               ("source_at_merge", "kustomization_ready", "live_equals_desired", "pods_on_target_digest"))
    failed, result = pb.verify_ledger(os.path.join(incident.workdir, "verify"), incident.ledger)
    assert not failed and result["valid"], result.get("message")


def test_a_second_run_opens_no_second_pull_request_and_writes_no_receipt(rolled_back, forge):
    incident, _first, second, state = rolled_back
    assert second.status == "successful", second.explain()
    assert forge.snapshot() == state["snapshot"]
    assert len(incident.receipts()) == 1
    assert "already holds the rollback" in second.stdout


def test_the_forge_token_is_in_no_artifact_and_no_verbose_output(rolled_back, forge):
    incident, first, second, _state = rolled_back
    token = forge.token
    for run in (first, second):
        assert token not in run.stdout
        assert token not in json.dumps(run.events)
    assert pb.files_containing(incident.workdir, [token]) == []


def test_the_forge_going_down_mid_run_gives_a_failed_receipt_and_nothing_merged(
        forge, kubectl, sandbox_env, tmp_path):
    g.reset()
    before = forge.snapshot()
    with open(os.path.join(sandbox_env.get("SANDBOX_STATE") or os.path.join(pb.ROOT, ".sandbox"), "pids",
                           "gitea.pid")) as handle:
        gitea_pid = int(handle.read())
    stopped = []

    def stop_forge_at_the_freeze():
        # The freeze is the last step before the act: the forge goes down between the approved plan and the merge.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            annotations = g.kustomization(kubectl)["metadata"].get("annotations", {})
            if g.FREEZE in annotations:
                os.kill(gitea_pid, signal.SIGSTOP)
                stopped.append(time.monotonic())
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=stop_forge_at_the_freeze)
    watcher.start()
    incident = Incident(tmp_path, "INC-FORGE-DOWN-%d" % int(time.time()))
    try:
        run = incident.run()
    finally:
        watcher.join()
        os.kill(gitea_pid, signal.SIGCONT)
    try:
        assert stopped, "the freeze never happened: %s" % run.explain()
        assert run.status == "failed"
        receipts = incident.receipts()
        assert len(receipts) == 1 and receipts[0]["outcome"] == "failed"
        assert "forge" in receipts[0]["failure"]["message"]
        assert receipts[0].get("merge_sha") is None
        g.wait_until(forge.alive, what="Gitea to answer again")
        after = forge.snapshot()
        assert after["main"] == before["main"]  # nothing merged
        assert [b for b in after["branches"] if b.startswith("ops/")] == []
        assert not [p for p in forge.pulls() if incident.incident_id in p["title"] and p.get("merged")]
        assert g.deployed_image(kubectl) == g.BAD
        assert forge.token not in run.stdout
    finally:
        g.reset()
