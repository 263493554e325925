"""deploy_freeze for Argo CD against the sandbox's real API server and Argo CD's real CRDs (Application, AppProject
v3.6; no Argo CD controller runs): check mode changes nothing, a freeze adds a deny sync window and switches auto-sync
off with the previous value recorded, freezing again changes nothing, a thaw restores the exact previous specs
(compared as JSON), someone else's windows stay, and a freeze someone else changed is refused with nothing changed.
Each test keeps its Application and AppProject in a namespace of its own (Argo CD's would be `argocd`)."""

import json
import os

import pytest

from tests.integration import _playbook as pb
from tests.sandbox_fixtures import get

MODULE = "governed.rollback.deploy_freeze"
FREEZE = "freeze.governed.io/record"
PROJECT_RECORD = "freeze.governed.io/argocd-windows"
OTHERS_WINDOW = {"kind": "allow", "schedule": "0 9 * * 1-5", "duration": "8h", "applications": ["*"],
                 "manualSync": True, "timeZone": "Europe/Paris"}


def apply(kubectl, obj):
    kubectl("apply", "--server-side", "--field-manager", "test-setup", "-f", "-", input=json.dumps(obj))


def make_project(kubectl, namespace, windows=None):
    spec = {"sourceRepos": ["*"], "destinations": [{"namespace": "*", "server": "*"}]}
    if windows is not None:
        spec["syncWindows"] = windows
    apply(kubectl, {"apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
                    "metadata": {"name": "payments", "namespace": namespace}, "spec": spec})


def make_app(kubectl, namespace, name="aureus-api", sync_policy=None):
    spec = {"project": "payments", "destination": {"server": "https://kubernetes.default.svc", "namespace": "aureus"},
            "source": {"repoURL": "http://127.0.0.1:3000/aureus/aureus-deploy.git", "path": "apps/aureus-api",
                       "targetRevision": "main"}}
    if sync_policy is not None:
        spec["syncPolicy"] = sync_policy
    apply(kubectl, {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                    "metadata": {"name": name, "namespace": namespace}, "spec": spec})


def objects(kubectl, namespace, name="aureus-api"):
    return get(kubectl, "appprojects.argoproj.io", namespace, "payments"), \
        get(kubectl, "applications.argoproj.io", namespace, name)


def spec_json(obj):
    return json.dumps(obj["spec"], sort_keys=True)


def versions(kubectl, namespace, name="aureus-api"):
    return [o["metadata"]["resourceVersion"] for o in objects(kubectl, namespace, name)]


def freeze(tmp_path, label, env, app_namespace, state="frozen", check=False, expect_failure=False, overrides=None,
           **extra):
    """Run deploy_freeze on the Application aureus-api in ``app_namespace``; ``extra`` and ``overrides`` replace
    arguments (None: left out)."""
    args = {"reconciler": "argocd", "name": "aureus-api", "namespace": app_namespace, "state": state,
            "kubeconfig": env["KUBECONFIG"]}
    if state == "frozen":
        args.update(actor="oncall", reason="rollback of v1.5.0", incident_id="INC-ARGO",
                    until="2026-12-01T12:00:00Z")
    args.update(extra)
    args.update(overrides or {})
    args = dict((key, value) for key, value in args.items() if value is not None)
    failed, result = pb.run_module(os.path.join(str(tmp_path), label), MODULE, args, check=check, diff=True)
    assert failed == expect_failure, result.get("msg")
    return result


@pytest.mark.parametrize("windows, sync_policy", [
    ([OTHERS_WINDOW], {"automated": {"prune": True, "selfHeal": True}, "syncOptions": ["CreateNamespace=true"]}),
    (None, {"automated": {"prune": False, "allowEmpty": True}}),
    ([], None),
], ids=["others-window-and-auto-sync", "no-windows", "no-auto-sync"])
def test_freeze_and_thaw_round_trip_restores_the_exact_previous_specs(
        windows, sync_policy, namespace, kubectl, sandbox_env, tmp_path):
    make_project(kubectl, namespace, windows)
    make_app(kubectl, namespace, sync_policy=sync_policy)
    project, app = objects(kubectl, namespace)

    planned = freeze(tmp_path, "plan", sandbox_env, namespace, check=True)
    assert planned["changed"] and planned["frozen"]  # the dry run answers with the objects as they would be
    assert planned["patches"]["project"]["spec"]["syncWindows"][-1]["kind"] == "deny"
    assert planned["project"]["sync_windows"]["after"][:-1] == (windows or [])
    assert versions(kubectl, namespace) == [project["metadata"]["resourceVersion"], app["metadata"]["resourceVersion"]]
    assert objects(kubectl, namespace)[0]["metadata"].get("annotations") == project["metadata"].get("annotations")

    frozen = freeze(tmp_path, "freeze", sandbox_env, namespace)
    assert frozen["changed"] and frozen["frozen"] and frozen["reconciler"] == "argocd"
    assert frozen["record"]["who"] == "oncall" and frozen["record"]["incident"] == "INC-ARGO"
    auto_sync_was_on = bool(sync_policy) and "automated" in sync_policy
    assert frozen["record"]["previous"] == ({"automated": sync_policy["automated"]} if auto_sync_was_on else {})
    live_project, live_app = objects(kubectl, namespace)
    deny = live_project["spec"]["syncWindows"][-1]
    assert deny == frozen["record"]["window"]
    assert deny["kind"] == "deny" and deny["schedule"] == "* * * * *" and deny["applications"] == ["aureus-api"]
    assert deny["manualSync"] is False and "INC-ARGO" in deny["description"]
    assert live_project["spec"]["syncWindows"][:-1] == (windows or [])
    assert "automated" not in (live_app["spec"].get("syncPolicy") or {})
    assert json.loads(live_app["metadata"]["annotations"][FREEZE])["previous"] == frozen["record"]["previous"]
    assert planned["patches"]["project"]["spec"]["syncWindows"] == live_project["spec"]["syncWindows"]

    again = freeze(tmp_path, "again", sandbox_env, namespace, reason="someone else", incident_id="INC-OTHER")
    assert not again["changed"] and again["record"]["why"] == "rollback of v1.5.0"
    assert versions(kubectl, namespace) == [live_project["metadata"]["resourceVersion"],
                                            live_app["metadata"]["resourceVersion"]]

    thawed = freeze(tmp_path, "thaw", sandbox_env, namespace, state="thawed")
    assert thawed["changed"] and not thawed["frozen"] and thawed["record"]["incident"] == "INC-ARGO"
    after_project, after_app = objects(kubectl, namespace)
    assert spec_json(after_project) == spec_json(project)
    assert spec_json(after_app) == spec_json(app)
    assert after_project["metadata"].get("annotations", {}) == project["metadata"].get("annotations", {})
    assert after_app["metadata"].get("annotations", {}) == app["metadata"].get("annotations", {})
    assert not freeze(tmp_path, "thaw-again", sandbox_env, namespace, state="thawed")["changed"]


def test_check_mode_returns_the_plan_the_api_server_would_store_and_changes_nothing(namespace, kubectl, sandbox_env,
                                                                                    tmp_path):
    make_project(kubectl, namespace, [OTHERS_WINDOW])
    make_app(kubectl, namespace, sync_policy={"automated": {"selfHeal": True}})
    before = versions(kubectl, namespace)
    planned = freeze(tmp_path, "plan", sandbox_env, namespace, check=True)
    assert planned["changed"] and planned["frozen"]
    assert planned["application"]["automated"] == {"before": {"selfHeal": True}, "after": None}
    assert planned["patches"]["application"]["metadata"]["resourceVersion"] == before[1]
    assert planned["patches"]["project"]["metadata"]["resourceVersion"] == before[0]
    assert '"spec.syncPolicy.automated": null' in planned["diff"]["after"]
    assert versions(kubectl, namespace) == before
    project, app = objects(kubectl, namespace)
    assert project["spec"]["syncWindows"] == [OTHERS_WINDOW] and app["spec"]["syncPolicy"]["automated"] == {
        "selfHeal": True}

    frozen = freeze(tmp_path, "freeze", sandbox_env, namespace)
    thaw_before = versions(kubectl, namespace)
    planned_thaw = freeze(tmp_path, "plan-thaw", sandbox_env, namespace, state="thawed", check=True)
    assert planned_thaw["changed"] and not planned_thaw["frozen"]
    assert planned_thaw["project"]["sync_windows"]["after"] == [OTHERS_WINDOW]
    assert planned_thaw["application"]["automated"]["after"] == {"selfHeal": True}
    assert versions(kubectl, namespace) == thaw_before and frozen["frozen"]


def test_a_window_someone_else_adds_during_the_freeze_stays_after_the_thaw(
        namespace, kubectl, sandbox_env, tmp_path):
    make_project(kubectl, namespace)
    make_app(kubectl, namespace, sync_policy={"automated": {"prune": True}})
    freeze(tmp_path, "freeze", sandbox_env, namespace)
    project = objects(kubectl, namespace)[0]
    windows = [OTHERS_WINDOW] + project["spec"]["syncWindows"]
    kubectl("patch", "appproject", "payments", "-n", namespace, "--type", "merge", "-p",
            json.dumps({"spec": {"syncWindows": windows}}))
    freeze(tmp_path, "thaw", sandbox_env, namespace, state="thawed")
    project, app = objects(kubectl, namespace)
    assert project["spec"]["syncWindows"] == [OTHERS_WINDOW]
    assert PROJECT_RECORD not in project["metadata"].get("annotations", {})
    assert app["spec"]["syncPolicy"] == {"automated": {"prune": True}}


@pytest.mark.parametrize("change", ["auto-sync-back-on", "window-removed"])
def test_a_freeze_someone_else_changed_is_refused_and_nothing_is_changed(change, namespace, kubectl, sandbox_env,
                                                                         tmp_path):
    make_project(kubectl, namespace, [OTHERS_WINDOW])
    make_app(kubectl, namespace, sync_policy={"automated": {"prune": True, "selfHeal": True}})
    freeze(tmp_path, "freeze", sandbox_env, namespace)
    if change == "auto-sync-back-on":
        kubectl("patch", "application", "aureus-api", "-n", namespace, "--type", "merge", "-p",
                '{"spec":{"syncPolicy":{"automated":{"prune":false}}}}')
    else:
        kubectl("patch", "appproject", "payments", "-n", namespace, "--type", "merge", "-p",
                json.dumps({"spec": {"syncWindows": [OTHERS_WINDOW]}}))
    before = objects(kubectl, namespace)
    for state in ("thawed", "frozen"):
        refused = freeze(tmp_path, "again-" + state, sandbox_env, namespace, state=state, expect_failure=True)
        assert refused["refused"] == "changed_since_freeze" and not refused["changed"]
        assert "someone changed it since our freeze" in refused["msg"] and "Nothing was changed" in refused["msg"]
        assert ("switched back on" if change == "auto-sync-back-on" else "no longer in") in refused["msg"]
        after = objects(kubectl, namespace)
        assert [o["metadata"]["resourceVersion"] for o in after] == [o["metadata"]["resourceVersion"] for o in before]


def test_the_workload_tracking_annotation_picks_the_application_to_freeze(namespace, kubectl, sandbox_env, tmp_path):
    make_project(kubectl, namespace)
    make_app(kubectl, namespace, sync_policy={"automated": {}})
    # The Application lives outside Argo CD's namespace, so its tracking id names it <namespace>_<app>.
    tracking = "%s_aureus-api:apps/Deployment:%s/aureus-api" % (namespace, namespace)
    apply(kubectl, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
        "name": "aureus-api", "namespace": namespace, "annotations": {"argocd.argoproj.io/tracking-id": tracking}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "aureus-api"}}, "template": {
            "metadata": {"labels": {"app": "aureus-api"}},
            "spec": {"containers": [{"name": "api", "image": "aureus/api:v1.5.0"}]}}}})
    workload = {"kind": "Deployment", "namespace": namespace, "name": "aureus-api"}
    detect = {"reconciler": None, "name": None, "namespace": None, "workload": workload}
    frozen = freeze(tmp_path, "freeze", sandbox_env, None, overrides=detect)
    assert frozen["changed"] and frozen["reconciler"] == "argocd"
    assert frozen["detected"] == {"reconciler": "argocd", "source": "annotation argocd.argoproj.io/tracking-id",
                                  "value": tracking}
    assert frozen["application"]["namespace"] == namespace and frozen["project"]["name"] == "payments"
    refused = freeze(tmp_path, "flux", sandbox_env, None, expect_failure=True,
                     overrides=dict(detect, reconciler="flux"))
    assert refused["refused"] == "mismatch" and "argocd" in refused["msg"]
    thawed = freeze(tmp_path, "thaw", sandbox_env, None, state="thawed", overrides=detect)
    assert thawed["changed"] and objects(kubectl, namespace)[1]["spec"]["syncPolicy"] == {"automated": {}}


def test_the_workload_flux_labels_pick_the_kustomization_and_the_flux_freeze_round_trips(namespace, kubectl,
                                                                                         sandbox_env, tmp_path):
    # A Kustomization in a namespace of the test's own: the sandbox's kustomize-controller watches flux-system only.
    apply(kubectl, {"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                    "metadata": {"name": "aureus-api", "namespace": namespace},
                    "spec": {"interval": "10m", "prune": True, "path": "./apps/aureus-api",
                             "sourceRef": {"kind": "GitRepository", "name": "aureus-deploy"}}})
    apply(kubectl, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
        "name": "aureus-api", "namespace": namespace,
        "labels": {"kustomize.toolkit.fluxcd.io/name": "aureus-api", "kustomize.toolkit.fluxcd.io/namespace": namespace}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "aureus-api"}}, "template": {
            "metadata": {"labels": {"app": "aureus-api"}},
            "spec": {"containers": [{"name": "api", "image": "aureus/api:v1.5.0"}]}}}})
    original = get(kubectl, "kustomizations.kustomize.toolkit.fluxcd.io", namespace, "aureus-api")
    detect = {"reconciler": None, "name": None, "namespace": None,
              "workload": {"kind": "Deployment", "namespace": namespace, "name": "aureus-api"}}
    frozen = freeze(tmp_path, "freeze", sandbox_env, None, overrides=detect)
    assert frozen["changed"] and frozen["reconciler"] == "flux" and frozen["suspend"]["after"] is True
    assert frozen["detected"]["source"] == "label kustomize.toolkit.fluxcd.io/name"
    assert frozen["object"]["namespace"] == namespace
    freeze(tmp_path, "thaw", sandbox_env, None, state="thawed", overrides=detect)
    after = get(kubectl, "kustomizations.kustomize.toolkit.fluxcd.io", namespace, "aureus-api")
    assert spec_json(after) == spec_json(original)


# ---- the adapter: the resourceVersion precondition, strict validation by the CRD, the refresh request


@pytest.fixture
def api(k8s_api):
    from ansible_collections.governed.rollback.plugins.module_utils._k8s import KubeRest

    return KubeRest(k8s_api)


def test_a_patch_computed_from_a_stale_read_is_refused_by_the_api_server(api, namespace, kubectl):
    from ansible_collections.governed.rollback.plugins.module_utils import _argocd
    from ansible_collections.governed.rollback.plugins.module_utils._common import RollbackError

    make_project(kubectl, namespace)
    make_app(kubectl, namespace, sync_policy={"automated": {"prune": True}})
    stale = _argocd.get(api, "Application", namespace, "aureus-api")
    kubectl("annotate", "application", "aureus-api", "-n", namespace, "team=payments")
    moved = objects(kubectl, namespace)[1]
    with pytest.raises(RollbackError):
        _argocd.patch(api, stale, {"spec": {"syncPolicy": {"automated": None}}})
    assert objects(kubectl, namespace)[1] == moved


def test_a_window_field_the_crd_does_not_know_is_rejected_not_pruned(api, namespace, kubectl):
    from ansible_collections.governed.rollback.plugins.module_utils import _argocd
    from ansible_collections.governed.rollback.plugins.module_utils._common import RollbackError

    make_project(kubectl, namespace)
    project = _argocd.get(api, "AppProject", namespace, "payments")
    with pytest.raises(RollbackError, match="unknown field"):
        _argocd.patch(api, project, {"spec": {"syncWindows": [{"kind": "deny", "schedule": "* * * * *",
                                                               "duration": "1h", "until": "tomorrow"}]}})
    assert "syncWindows" not in get(kubectl, "appprojects.argoproj.io", namespace, "payments")["spec"]


def test_request_refresh_writes_argo_cds_hard_refresh_annotation(api, namespace, kubectl):
    from ansible_collections.governed.rollback.plugins.module_utils import _argocd

    make_project(kubectl, namespace)
    make_app(kubectl, namespace)
    app = _argocd.get(api, "Application", namespace, "aureus-api")
    _argocd.request_refresh(api, app)
    live = objects(kubectl, namespace)[1]
    assert live["metadata"]["annotations"]["argocd.argoproj.io/refresh"] == "hard"
    assert spec_json(live) == spec_json(app)


# ---- gitops_revert's reconcile for a workload Argo CD tracks (its Run at the adapter level: a full run needs Flux's
# Kustomization for the repository check, and no Argo CD controller runs here to sync the merge)

IMAGE = "aureus/api@sha256:" + "4" * 64


def tracked_deployment(kubectl, namespace, tracking):
    apply(kubectl, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
        "name": "aureus-api", "namespace": namespace, "annotations": {"argocd.argoproj.io/tracking-id": tracking}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "aureus-api"}}, "template": {
            "metadata": {"labels": {"app": "aureus-api"}},
            "spec": {"containers": [{"name": "api", "image": IMAGE}]}}}})
    kubectl("rollout", "status", "deployment/aureus-api", "-n", namespace, "--timeout=90s")


def revert_run(api, namespace, **params):
    from ansible_collections.governed.rollback.plugins.modules import gitops_revert

    base = {"path": "apps/aureus-api", "component": "aureus-api", "workload_kind": "Deployment",
            "workload_name": "aureus-api", "workload_namespace": namespace, "container": None,
            "argocd_namespace": namespace, "wait_timeout": 30, "branch": "main", "mode": "pin",
            "repo_url": "http://127.0.0.1:3000/aureus/aureus-deploy.git"}
    run = gitops_revert.Run(dict(base, **params), api, None, False)
    run.kust, run.kust_namespace = {"spec": {}}, None
    return run


def test_gitops_revert_requests_argo_cds_hard_refresh_and_waits_on_the_workload(api, namespace, kubectl):
    make_project(kubectl, namespace)
    make_app(kubectl, namespace, sync_policy={"automated": {"prune": True}})
    tracked_deployment(kubectl, namespace, "aureus-api:apps/Deployment:%s/aureus-api" % namespace)
    app_before = objects(kubectl, namespace)[1]
    run = revert_run(api, namespace)
    run.workload = run.workload_ref({"name": "aureus/api"})
    assert run.workload["argocd"]["name"] == "aureus-api" and run.workload["argocd"]["namespace"] == namespace
    # What plan() and act() hand over: the refs (git SHAs and digests) and the merged pull request.
    current = {"sha": "c" * 40, "image": "aureus/api@sha256:" + "5" * 64, "digest": "sha256:" + "5" * 64}
    target = {"sha": "a" * 40, "image": IMAGE, "digest": "sha256:" + "4" * 64}
    pr = {"number": 7, "head": "ops/rollback-aureus-api-x"}
    run.reconcile("a" * 40, current, target, None, pr)
    record = run.result["reconcile"]
    assert record["reconciler"] == "argocd" and record["done"] and record["refresh"] == "hard"
    assert record["application"] == "%s/aureus-api" % namespace and record["waited_on"] == "workload rollout"
    assert record["timings"]["rollout_seconds"] is not None
    assert run.result["receipt_fields"]["details"]["reconcile"]["reconciler"] == "argocd"
    app = objects(kubectl, namespace)[1]
    assert app["metadata"]["annotations"]["argocd.argoproj.io/refresh"] == "hard"
    assert spec_json(app) == spec_json(app_before)


def test_gitops_revert_fails_at_the_deadline_naming_argo_cd_when_the_workload_never_rolls_out(api, namespace,
                                                                                              kubectl):
    from ansible_collections.governed.rollback.plugins.module_utils._common import RollbackError

    make_project(kubectl, namespace)
    make_app(kubectl, namespace)
    tracked_deployment(kubectl, namespace, "aureus-api:apps/Deployment:%s/aureus-api" % namespace)
    run = revert_run(api, namespace, wait_timeout=2)
    run.workload = run.workload_ref({"name": "aureus/api"})
    current = {"sha": "c" * 40, "image": IMAGE, "digest": "sha256:" + "4" * 64}
    other = {"sha": "b" * 40, "image": "aureus/api@sha256:" + "6" * 64, "digest": "sha256:" + "6" * 64}
    with pytest.raises(RollbackError, match="asked for a hard refresh") as failed:
        run.reconcile("b" * 40, current, other, None, {"number": 8})
    assert "sync status is not read" in failed.value.msg and not run.result["reconcile"]["done"]


def test_a_workload_tracked_by_an_application_that_does_not_exist_is_refused_before_anything_is_pushed(
        api, namespace, kubectl):
    from ansible_collections.governed.rollback.plugins.module_utils._common import Refused

    tracked_deployment(kubectl, namespace, "ghost:apps/Deployment:%s/aureus-api" % namespace)
    with pytest.raises(Refused, match="Application %s/ghost not found" % namespace) as refused:
        revert_run(api, namespace).workload_ref({"name": "aureus/api"})
    assert refused.value.code == "not_found"
