"""deploy_freeze on the sandbox's real Flux Kustomization: check mode changes nothing, a freeze suspends and records
who/why/until/incident, freezing again changes nothing, and a thaw restores exactly the previous spec."""

import json
import os

import pytest

from tests.integration import _gitops as g
from tests.integration import _playbook as pb

MODULE = "governed.rollback.deploy_freeze"


@pytest.fixture
def kust(kubectl):
    g.reset()
    yield
    g.reset()


def freeze(tmp_path, name, env, state="frozen", check=False, **extra):
    args = {"name": g.KUSTOMIZATION, "namespace": g.FLUX_NS, "state": state, "kubeconfig": env["KUBECONFIG"]}
    if state == "frozen":
        args.update(actor="oncall", reason="rollback of v1.5.0", incident_id="INC-FREEZE",
                    until="2026-12-01T12:00:00Z")
    args.update(extra)
    failed, result = pb.run_module(os.path.join(str(tmp_path), name), MODULE, args, check=check, diff=True)
    assert not failed, result.get("msg")
    return result


@pytest.mark.parametrize("previous", [None, False])
def test_freeze_and_thaw_round_trip_restores_the_exact_previous_spec(previous, kust, kubectl, sandbox_env, tmp_path):
    if previous is not None:
        kubectl("patch", "kustomization", g.KUSTOMIZATION, "-n", g.FLUX_NS, "--type", "merge", "-p",
                json.dumps({"spec": {"suspend": previous}}))
        g.settled(kubectl)
    original = g.kustomization(kubectl)
    annotations = original["metadata"].get("annotations", {})

    planned = freeze(tmp_path, "plan", sandbox_env, check=True)
    assert planned["changed"] and planned["patch"]["spec"] == {"suspend": True}
    assert g.kustomization(kubectl)["metadata"]["resourceVersion"] == original["metadata"]["resourceVersion"]

    frozen = freeze(tmp_path, "freeze", sandbox_env)
    assert frozen["changed"] and frozen["frozen"]
    assert frozen["record"]["who"] == "oncall" and frozen["record"]["incident"] == "INC-FREEZE"
    assert frozen["record"]["until"] == "2026-12-01T12:00:00Z"
    assert frozen["record"]["previous"] == ({} if previous is None else {"suspend": previous})
    live = g.kustomization(kubectl)
    assert live["spec"]["suspend"] is True and json.loads(live["metadata"]["annotations"][g.FREEZE]) == frozen["record"]

    again = freeze(tmp_path, "again", sandbox_env, reason="someone else")
    assert not again["changed"] and again["record"]["why"] == "rollback of v1.5.0"
    assert g.kustomization(kubectl)["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"]

    thawed = freeze(tmp_path, "thaw", sandbox_env, state="thawed")
    assert thawed["changed"] and not thawed["frozen"]
    after = g.kustomization(kubectl)
    assert after["spec"] == original["spec"]
    assert after["metadata"].get("annotations", {}) == annotations
    assert not freeze(tmp_path, "thaw-again", sandbox_env, state="thawed")["changed"]


def test_a_freeze_of_an_object_someone_else_suspended_keeps_it_suspended_on_thaw(
        kust, kubectl, sandbox_env, tmp_path):
    kubectl("patch", "kustomization", g.KUSTOMIZATION, "-n", g.FLUX_NS, "--type", "merge", "-p",
            '{"spec":{"suspend":true}}')
    frozen = freeze(tmp_path, "freeze", sandbox_env)
    assert frozen["changed"] and frozen["record"]["previous"] == {"suspend": True}
    freeze(tmp_path, "thaw", sandbox_env, state="thawed")
    after = g.kustomization(kubectl)
    assert after["spec"]["suspend"] is True and g.FREEZE not in after["metadata"].get("annotations", {})
