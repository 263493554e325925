"""rollout_undo against the real sandbox: run through Ansible, compared with kubectl, nothing mocked.

Every test builds its own workload history in its own namespace. KWOK makes pods Ready; a pod template carrying
the chaos label never becomes Ready, which is how a release (or a rollback target) "fails".
"""

import datetime
import json
import tempfile
import threading
import time

import pytest

from ansible_collections.governed.rollback.plugins.module_utils import _revisions as rev
from ansible_collections.governed.rollback.plugins.module_utils import _workload
from ansible_collections.governed.rollback.plugins.module_utils._common import Refused
from ansible_collections.governed.rollback.plugins.module_utils._k8s import K8sError
from ansible_collections.governed.rollback.plugins.modules import rollout_undo
from tests.integration import _playbook as pb
from tests.sandbox_fixtures import get, items, wait_until

CHAOS = "pod-container-running-failed.stage.kwok.x-k8s.io"


# --- harness -------------------------------------------------------------------------------------------------------


@pytest.fixture
def run_module(kubeconfig):
    """Run governed.rollback.rollout_undo through ansible (ansible-runner); return (failed, result)."""

    def run(check=False, diff=False, **args):
        args.setdefault("kubeconfig", kubeconfig)
        with tempfile.TemporaryDirectory() as tmp:
            return pb.run_module(tmp, "governed.rollback.rollout_undo", args, check=check, diff=diff)

    return run


@pytest.fixture
def twin_namespace(kubectl, namespace):
    """A second namespace for the kubectl twin, named after the test's own."""
    twin = namespace + "-twin"
    kubectl("create", "namespace", twin)
    yield twin
    kubectl("delete", "namespace", twin, "--wait=false", check=False)


@pytest.fixture
def api(k8s_api):
    from ansible_collections.governed.rollback.plugins.module_utils._k8s import KubeRest

    return KubeRest(k8s_api)


def wait_observed(kubectl, kind, namespace, name):
    def observed():
        obj = get(kubectl, kind, namespace, name)
        return obj["status"].get("observedGeneration", 0) >= obj["metadata"]["generation"]
    wait_until(observed, timeout=60, what="%s/%s to be observed" % (kind, name))


def pod_template(labels, image, broken=False):
    labels = dict(labels)
    if broken:
        labels[CHAOS] = "true"
    return {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": image}]}}


def release(kubectl, kind, namespace, name, labels, image, broken=False, cause=None):
    """Roll out a new revision the way a deploy pipeline would (strategic-merge patch of the template)."""
    template = pod_template(labels, image)
    template["metadata"]["labels"][CHAOS] = "true" if broken else None
    body = {"spec": {"template": template}}
    if cause:
        body["metadata"] = {"annotations": {rev.CHANGE_CAUSE_ANNOTATION: cause}}
    kubectl("patch", kind.lower(), name, "-n", namespace, "--type", "strategic", "-p", json.dumps(body))
    wait_observed(kubectl, kind, namespace, name)
    if not broken:
        kubectl("rollout", "status", "%s/%s" % (kind.lower(), name), "-n", namespace, "--timeout=60s")


def workload_with_history(kubectl, namespace, images, kind="Deployment", name="web", broken=(), replicas=2,
                          deadline=600, history_limit=10, metadata=None):
    """A workload whose revision N runs images[N-1]; revisions listed in ``broken`` never become Ready."""
    labels = {"app": name}
    spec = {"selector": {"matchLabels": labels}, "template": pod_template(labels, images[0], 1 in broken),
            "revisionHistoryLimit": history_limit}
    if kind == "Deployment":
        spec.update(replicas=replicas, progressDeadlineSeconds=deadline)
    elif kind == "StatefulSet":
        spec.update(replicas=replicas, serviceName=name)
    meta = {"name": name, "namespace": namespace,
            "annotations": {rev.CHANGE_CAUSE_ANNOTATION: "release %s" % images[0]}}
    for key, value in (metadata or {}).items():
        meta.setdefault(key, {}).update(value)
    manifest = {"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": spec}
    kubectl("create", "-f", "-", input=json.dumps(manifest))
    wait_observed(kubectl, kind, namespace, name)
    if 1 not in broken:
        kubectl("rollout", "status", "%s/%s" % (kind.lower(), name), "-n", namespace, "--timeout=60s")
    for number, image in enumerate(images[1:], start=2):
        release(kubectl, kind, namespace, name, labels, image, number in broken, "release %s" % image)
    return get(kubectl, kind, namespace, name)


def replicasets_by_revision(kubectl, namespace):
    return dict((int(rs["metadata"]["annotations"][rev.REVISION_ANNOTATION]), rs)
                for rs in items(kubectl, "replicasets", namespace))


def container_image(obj):
    return obj["spec"]["template"]["spec"]["containers"][0]["image"]


# --- kubectl parity --------------------------------------------------------------------------------------------------


def test_rollback_matches_kubectl_rollout_undo_on_a_twin_deployment(kubectl, run_module, namespace, twin_namespace):
    images = ["aureus/frontend:v0.1.0", "aureus/frontend:v0.1.1", "aureus/frontend:v0.1.2"]
    for ns in (namespace, twin_namespace):
        workload_with_history(kubectl, ns, images)
        # An annotation added after the release: kubectl's merge drops it (it is not on the target ReplicaSet).
        kubectl("annotate", "deployment", "web", "-n", ns, "team=web-platform")

    started = datetime.datetime.now(datetime.timezone.utc)
    failed, result = run_module(namespace=namespace, name="web", actor="alice", incident_id="INC-12345",
                                reason="Breaking UI changes affecting user workflows")
    ended = datetime.datetime.now(datetime.timezone.utc)
    kubectl("rollout", "undo", "deployment/web", "-n", twin_namespace)
    kubectl("rollout", "status", "deployment/web", "-n", twin_namespace, "--timeout=60s")

    assert not failed, result["msg"]
    assert (result["changed"], result["from_revision"], result["to_revision"]) == (True, 3, 2)
    assert (result["from_images"], result["to_images"]) == (["aureus/frontend:v0.1.2"], ["aureus/frontend:v0.1.1"])
    assert result["wait"]["done"] is True
    # The moment of mitigation: the patch's answer, before the wait ended, to the microsecond.
    accepted = datetime.datetime.strptime(result["patch_accepted_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc)
    assert started < accepted < ended
    assert (ended - accepted).total_seconds() >= result["wait"]["elapsed_seconds"] - 0.05
    ours, twin = get(kubectl, "deployment", namespace, "web"), get(kubectl, "deployment", twin_namespace, "web")
    assert ours["spec"]["template"] == twin["spec"]["template"]
    ours_annotations = dict(ours["metadata"]["annotations"])
    twin_annotations = dict(twin["metadata"]["annotations"])
    assert ours_annotations.pop(rev.CHANGE_CAUSE_ANNOTATION) == (
        "governed.rollback: rollback 3 -> 2 by alice for INC-12345: Breaking UI changes affecting user workflows")
    assert twin_annotations.pop(rev.CHANGE_CAUSE_ANNOTATION) == "release aureus/frontend:v0.1.1"
    assert ours_annotations == twin_annotations
    assert "team" not in ours_annotations
    # Same ReplicaSet re-used and renumbered, same history shape as kubectl's.
    ours_rs, twin_rs = replicasets_by_revision(kubectl, namespace), replicasets_by_revision(kubectl, twin_namespace)
    assert sorted(ours_rs) == sorted(twin_rs) == [1, 3, 4]
    assert ours_rs[4]["metadata"]["name"] == result["to_replicaset"]
    assert ours_rs[4]["metadata"]["annotations"][rev.REVISION_HISTORY_ANNOTATION] == "2"
    history = kubectl("rollout", "history", "deployment/web", "-n", namespace).stdout
    assert "governed.rollback: rollback 3 -> 2 by alice for INC-12345" in history
    # Ours marks the version it fled; kubectl leaves no trace.
    assert ours_rs[3]["metadata"]["annotations"][rev.FLED_REVISION_ANNOTATION] == "3"
    assert rev.FLED_AT_ANNOTATION not in twin_rs[3]["metadata"]["annotations"]
    assert result["fled_marked"] == ours_rs[3]["metadata"]["name"]
    # The pods read after the wait: all Ready on the target images, in the renumbered revision, none fled.
    assert len(result["pods"]) == 2
    assert all(p["ready"] and p["images"] == ["aureus/frontend:v0.1.1"] and p["revision"] == 4
               for p in result["pods"])


def test_second_rollback_does_not_return_to_the_fled_version(kubectl, run_module, namespace, twin_namespace):
    images = ["app:v1", "app:v2", "app:v3"]
    for ns in (namespace, twin_namespace):
        workload_with_history(kubectl, ns, images)

    first_failed, first = run_module(namespace=namespace, name="web")
    second_failed, second = run_module(namespace=namespace, name="web")
    for _round in range(2):
        kubectl("rollout", "undo", "deployment/web", "-n", twin_namespace)
        kubectl("rollout", "status", "deployment/web", "-n", twin_namespace, "--timeout=60s")

    assert not first_failed and not second_failed, (first.get("msg"), second.get("msg"))
    assert (first["from_images"], first["to_images"]) == (["app:v3"], ["app:v2"])
    assert (second["from_images"], second["to_images"]) == (["app:v2"], ["app:v1"])
    assert "skipped 3" in second["selected_by"]
    assert container_image(get(kubectl, "deployment", namespace, "web")) == "app:v1"
    # kubectl's second undo bounces straight back to the version that was fled.
    assert container_image(get(kubectl, "deployment", twin_namespace, "web")) == "app:v3"


def test_rerun_with_the_same_revision_changes_nothing(kubectl, run_module, namespace):
    workload_with_history(kubectl, namespace, ["app:v1", "app:v2", "app:v3"])
    failed, first = run_module(namespace=namespace, name="web", to_revision=2)
    assert not failed, first.get("msg")
    before = get(kubectl, "deployment", namespace, "web")["metadata"]["resourceVersion"]

    failed, again = run_module(namespace=namespace, name="web", to_revision=2)

    assert not failed, again.get("msg")
    assert again["changed"] is False
    assert "renumbered to 4" in again["skipped_reason"]
    assert again["wait"]["done"] is True
    assert get(kubectl, "deployment", namespace, "web")["metadata"]["resourceVersion"] == before


def test_to_image_rolls_back_to_the_newest_revision_running_it(kubectl, run_module, namespace):
    workload_with_history(kubectl, namespace, ["app:v1", "app:v2", "app:v3", "app:v4"])

    failed, result = run_module(namespace=namespace, name="web", to_image="app:v2")

    assert not failed, result.get("msg")
    assert (result["from_revision"], result["to_revision"], result["to_images"]) == (4, 2, ["app:v2"])
    assert result["target_is_previous"] is False
    assert container_image(get(kubectl, "deployment", namespace, "web")) == "app:v2"


# --- StatefulSet and DaemonSet ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["StatefulSet", "DaemonSet"])
def test_controller_revision_rollback_restores_the_previous_template(kubectl, run_module, namespace, kind):
    workload_with_history(kubectl, namespace, ["agent:v1", "agent:v2"], kind=kind, name="agent")
    revisions = dict((cr["revision"], cr["metadata"]["name"]) for cr in items(kubectl, "controllerrevisions", namespace))

    failed, result = run_module(namespace=namespace, name="agent", kind=kind, actor="carol", incident_id="INC-7")

    assert not failed, result.get("msg")
    assert (result["changed"], result["from_revision"], result["to_revision"]) == (True, 2, 1)
    assert (result["from_replicaset"], result["to_replicaset"]) == (revisions[2], revisions[1])
    assert result["patch_type"] == "strategic-merge" and result["wait"]["done"] is True
    workload = get(kubectl, kind.lower(), namespace, "agent")
    assert container_image(workload) == "agent:v1"
    assert workload["metadata"]["annotations"][rev.CHANGE_CAUSE_ANNOTATION] == (
        "governed.rollback: rollback 2 -> 1 by carol for INC-7")
    crs = dict((cr["metadata"]["name"], cr) for cr in items(kubectl, "controllerrevisions", namespace))
    assert crs[revisions[2]]["metadata"]["annotations"][rev.FLED_REVISION_ANNOTATION] == "2"
    assert crs[revisions[1]]["metadata"]["annotations"][rev.PREVIOUS_REVISIONS_ANNOTATION] == "1"
    # StatefulSet pods carry the revision's name as their hash label, DaemonSet pods its suffix.
    hashes = set(p["metadata"]["labels"]["controller-revision-hash"] for p in items(kubectl, "pods", namespace)
                 if not p["metadata"].get("deletionTimestamp"))
    assert hashes and all(revisions[1] in (h, "agent-" + h) for h in hashes)
    assert result["pods"] and all(p["ready"] and p["images"] == ["agent:v1"] and p["revision"] == 3
                                  for p in result["pods"])
    history = kubectl("rollout", "history", "%s/agent" % kind.lower(), "-n", namespace).stdout
    assert "governed.rollback: rollback 2 -> 1 by carol for INC-7" in history

    failed, again = run_module(namespace=namespace, name="agent", kind=kind, to_revision=1)
    assert not failed and again["changed"] is False, again.get("msg")


# --- check mode ------------------------------------------------------------------------------------------------------


def test_check_mode_changes_nothing_and_returns_a_plan(kubectl, run_module, namespace):
    workload_with_history(kubectl, namespace, ["app:v1", "app:v2", "app:v3"])
    before = get(kubectl, "deployment", namespace, "web")
    rs_before = replicasets_by_revision(kubectl, namespace)

    failed, result = run_module(check=True, diff=True, namespace=namespace, name="web", actor="dave")

    assert not failed, result.get("msg")
    assert result["changed"] is True
    plan = result["plan"]
    assert (plan["from_revision"], plan["to_revision"]) == (3, 2)
    assert plan["template_changes"] == [{"path": "spec.containers[0].image", "before": "app:v3", "after": "app:v2"}]
    assert plan["dry_run"].startswith("accepted by the API server")
    assert result["diff"]["before"]["spec"]["containers"][0]["image"] == "app:v3"
    assert result["diff"]["after"]["spec"]["containers"][0]["image"] == "app:v2"
    assert result["patch"][0] == {"op": "test", "path": "/metadata/resourceVersion",
                                  "value": before["metadata"]["resourceVersion"]}
    after = get(kubectl, "deployment", namespace, "web")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["spec"]["template"] == before["spec"]["template"]
    assert result["resource_version_after"] == result["resource_version_before"]
    rs_after = replicasets_by_revision(kubectl, namespace)
    assert dict((n, rs["metadata"]["resourceVersion"]) for n, rs in rs_after.items()) == dict(
        (n, rs["metadata"]["resourceVersion"]) for n, rs in rs_before.items())


def test_check_mode_with_an_invalid_patch_is_refused_by_the_server(kubectl, api, namespace):
    """The dry run is real: the API server validates the patch, so a plan that cannot apply fails in check mode."""
    workload_with_history(kubectl, namespace, ["app:v1", "app:v2"])
    workload, history_items = _workload.read_state(api, "Deployment", namespace, "web")
    plan = rev.plan_rollback("Deployment", workload, history_items)
    plan.patch[1]["value"]["metadata"]["labels"] = {"app": "something-else"}  # no longer matches the selector
    with pytest.raises(K8sError, match="invalid"):
        rollout_undo.send_patch(api, plan, dry_run=True)
    assert get(kubectl, "deployment", namespace, "web")["metadata"]["resourceVersion"] == \
        workload["metadata"]["resourceVersion"]


# --- refusals ----------------------------------------------------------------------------------------------------------


def assert_refused_and_unchanged(kubectl, namespace, result, failed, code, before_rv, kind="deployment", name="web"):
    assert failed, "expected a refusal, got %s" % result
    assert result["refused"] == code, result["msg"]
    assert result["changed"] is False
    assert get(kubectl, kind, namespace, name)["metadata"]["resourceVersion"] == before_rv


def test_rollback_of_a_paused_deployment_is_refused_and_changes_nothing(kubectl, run_module, namespace):
    workload_with_history(kubectl, namespace, ["app:v1", "app:v2"])
    kubectl("rollout", "pause", "deployment/web", "-n", namespace)
    wait_observed(kubectl, "deployment", namespace, "web")
    before = get(kubectl, "deployment", namespace, "web")["metadata"]["resourceVersion"]

    failed, result = run_module(namespace=namespace, name="web")

    assert_refused_and_unchanged(kubectl, namespace, result, failed, "paused", before)
    assert "kubectl rollout resume deployment/web -n %s" % namespace in result["msg"]


def test_rollback_to_a_pruned_revision_is_refused_listing_what_is_left(kubectl, run_module, namespace):
    workload_with_history(kubectl, namespace, ["app:v1", "app:v2", "app:v3", "app:v4"], history_limit=1)
    wait_until(lambda: sorted(replicasets_by_revision(kubectl, namespace)) == [3, 4], timeout=60,
               what="pruning to 1 old revision")
    before = get(kubectl, "deployment", namespace, "web")["metadata"]["resourceVersion"]

    failed, result = run_module(namespace=namespace, name="web", to_revision=1)

    assert_refused_and_unchanged(kubectl, namespace, result, failed, "revision_pruned", before)
    assert "revisionHistoryLimit=1" in result["msg"] and "available revisions: 3, 4" in result["msg"]
    assert result["available_revisions"] == [3, 4]


def test_rollback_to_an_unknown_revision_is_refused_and_changes_nothing(kubectl, run_module, namespace):
    workload_with_history(kubectl, namespace, ["app:v1", "app:v2", "app:v3"])
    before = get(kubectl, "deployment", namespace, "web")["metadata"]["resourceVersion"]

    failed, result = run_module(namespace=namespace, name="web", to_revision=7)

    assert_refused_and_unchanged(kubectl, namespace, result, failed, "revision_not_found", before)
    assert result["msg"] == ("revision 7 not found for deployment %s/web: the latest revision is 3; available "
                             "revisions: 1, 2, 3" % namespace)


def test_rollback_without_history_is_refused_and_changes_nothing(kubectl, run_module, namespace):
    workload_with_history(kubectl, namespace, ["app:v1"])
    before = get(kubectl, "deployment", namespace, "web")["metadata"]["resourceVersion"]

    failed, result = run_module(namespace=namespace, name="web")

    assert_refused_and_unchanged(kubectl, namespace, result, failed, "no_history", before)
    assert "only revision 1 exists" in result["msg"]


def test_rollback_of_a_gitops_owned_deployment_is_refused_and_changes_nothing(kubectl, run_module, namespace):
    tracking = "shop:apps/Deployment:%s/web" % namespace
    workload_with_history(kubectl, namespace, ["app:v1", "app:v2"],
                          metadata={"annotations": {"argocd.argoproj.io/tracking-id": tracking}})
    before = get(kubectl, "deployment", namespace, "web")["metadata"]["resourceVersion"]

    failed, result = run_module(namespace=namespace, name="web")

    assert_refused_and_unchanged(kubectl, namespace, result, failed, "gitops_owned", before)
    assert "Argo CD" in result["msg"] and "allow_gitops_drift=true" in result["msg"]
    assert result["gitops_owners"][0]["key"] == "argocd.argoproj.io/tracking-id"


def test_gitops_drift_allowed_rolls_back_and_warns_to_revert_the_source(kubectl, run_module, namespace):
    workload_with_history(kubectl, namespace, ["app:v1", "app:v2"],
                          metadata={"labels": {"app.kubernetes.io/managed-by": "Helm"},
                                    "annotations": {"meta.helm.sh/release-name": "web"}})

    failed, result = run_module(namespace=namespace, name="web", allow_gitops_drift=True)

    assert not failed, result.get("msg")
    assert result["changed"] is True and result["to_images"] == ["app:v1"]
    assert any("Helm" in w and "revert the change in the GitOps source" in w for w in result["rollback_warnings"])
    assert container_image(get(kubectl, "deployment", namespace, "web")) == "app:v1"


def test_missing_deployment_is_refused_as_not_found(run_module, namespace):
    failed, result = run_module(namespace=namespace, name="no-such-app")

    assert failed and result["refused"] == "not_found"
    assert result["msg"].startswith("deployment %s/no-such-app not found" % namespace)


def test_unsupported_kind_is_rejected_before_any_api_call(run_module, namespace):
    failed, result = run_module(namespace=namespace, name="web", kind="CronJob")

    assert failed and "Deployment, StatefulSet, DaemonSet" in result["msg"]


def test_missing_patch_permission_is_refused_naming_verb_and_resource(kubectl, run_module, namespace, tmp_path,
                                                                      sandbox_env):
    workload_with_history(kubectl, namespace, ["app:v1", "app:v2"])
    kubectl("create", "serviceaccount", "reader", "-n", namespace)
    kubectl("create", "role", "reader", "-n", namespace, "--verb=get,list", "--resource=deployments,replicasets")
    kubectl("create", "rolebinding", "reader", "-n", namespace, "--role=reader",
            "--serviceaccount=%s:reader" % namespace)
    token = kubectl("create", "token", "reader", "-n", namespace, "--duration=10m").stdout.strip()
    config = json.loads(kubectl("config", "view", "--raw", "-o", "json").stdout)
    before = get(kubectl, "deployment", namespace, "web")["metadata"]["resourceVersion"]

    failed, result = run_module(namespace=namespace, name="web", kubeconfig=None, api_key=token,
                                host=config["clusters"][0]["cluster"]["server"],
                                ca_cert=config["clusters"][0]["cluster"]["certificate-authority"])

    assert_refused_and_unchanged(kubectl, namespace, result, failed, "forbidden", before)
    assert "'patch' deployments.apps in namespace %s" % namespace in result["msg"]
    assert token not in json.dumps(result)


# --- concurrency -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
def test_concurrent_change_between_read_and_patch_fails_cleanly(kubectl, api, namespace, kind):
    workload_with_history(kubectl, namespace, ["app:v1", "app:v2"], kind=kind)
    workload, history_items = _workload.read_state(api, kind, namespace, "web")
    plan = rev.plan_rollback(kind, workload, history_items, actor="alice")
    # Someone else releases v3 after our read.
    release(kubectl, kind, namespace, "web", {"app": "web"}, "app:v3")
    theirs = get(kubectl, kind, namespace, "web")

    with pytest.raises(Refused) as info:
        rollout_undo.send_patch(api, plan)

    assert info.value.code == "conflict"
    assert "changed after it was read (resourceVersion %s)" % workload["metadata"]["resourceVersion"] in info.value.msg
    now = get(kubectl, kind, namespace, "web")
    assert now["metadata"]["resourceVersion"] == theirs["metadata"]["resourceVersion"]
    assert container_image(now) == "app:v3"


# --- waiting -----------------------------------------------------------------------------------------------------------


def test_rollback_to_a_revision_that_never_becomes_ready_fails_at_wait_timeout(kubectl, run_module, namespace):
    workload_with_history(kubectl, namespace, ["app:v1", "app:v2", "app:v3"], broken=(2,), deadline=600)

    failed, result = run_module(namespace=namespace, name="web", to_revision=2, wait_timeout=6)

    assert failed and result["changed"] is True
    assert result["wait"]["state"] == "timeout" and result["wait"]["done"] is False
    assert 6 <= result["wait"]["elapsed_seconds"] < 12
    assert "did not complete (timeout)" in result["msg"]
    assert (result["from_revision"], result["to_revision"]) == (3, 2)
    assert (result["from_images"], result["to_images"]) == (["app:v3"], ["app:v2"])
    assert container_image(get(kubectl, "deployment", namespace, "web")) == "app:v2"
    assert any(not p["ready"] and p["images"] == ["app:v2"] for p in result["pods"])


def test_fresh_progress_deadline_fails_the_wait_before_the_timeout(kubectl, run_module, namespace):
    workload_with_history(kubectl, namespace, ["app:v1", "app:v2", "app:v3"], broken=(2,), deadline=8)

    failed, result = run_module(namespace=namespace, name="web", to_revision=2, wait_timeout=120)

    assert failed and result["changed"] is True
    assert result["wait"]["state"] == "failed"
    assert "exceeded its progress deadline" in result["wait"]["reason"]
    assert result["wait"]["elapsed_seconds"] < 60
    assert result["to_images"] == ["app:v2"]


def test_stale_progress_deadline_from_the_bad_release_does_not_fail_the_rollback(kubectl, run_module, namespace):
    workload_with_history(kubectl, namespace, ["app:v1", "app:v2"], broken=(2,), deadline=5)

    def deadline_exceeded():
        conditions = get(kubectl, "deployment", namespace, "web")["status"].get("conditions") or []
        return any(c.get("reason") == "ProgressDeadlineExceeded" for c in conditions)
    wait_until(deadline_exceeded, timeout=60, what="the bad release to exceed its progress deadline")

    failed, result = run_module(namespace=namespace, name="web", wait_timeout=60)

    assert not failed, result.get("msg")
    assert result["wait"]["done"] is True
    assert (result["from_images"], result["to_images"]) == (["app:v2"], ["app:v1"])


def test_deleting_the_workload_during_the_wait_fails_the_wait(kubectl, run_module, namespace):
    workload_with_history(kubectl, namespace, ["app:v1", "app:v2", "app:v3"], broken=(2,), deadline=600)

    def delete_once_rolled_back():
        # Delete only after the rollback patch landed, so the module is in its wait.
        wait_until(lambda: container_image(get(kubectl, "deployment", namespace, "web")) == "app:v2", timeout=60,
                   what="the rollback patch")
        time.sleep(1)
        kubectl("delete", "deployment", "web", "-n", namespace, "--wait=false")

    deleter = threading.Thread(target=delete_once_rolled_back)
    deleter.start()
    try:
        failed, result = run_module(namespace=namespace, name="web", to_revision=2, wait_timeout=60)
    finally:
        deleter.join()

    assert failed and result["changed"] is True
    assert result["wait"]["state"] == "deleted" and result["wait"]["elapsed_seconds"] < 30
    assert "was deleted while waiting" in result["msg"]
    assert (result["from_revision"], result["to_revision"]) == (3, 2)
