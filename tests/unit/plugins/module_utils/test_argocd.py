"""Argo CD's deploy freeze as plain data (a deny sync window on the AppProject, auto-sync switched off with the
previous value recorded, and the exact thaw), and how a workload names the Argo CD Application that tracks it."""

import copy
import json

import pytest

from ansible_collections.governed.rollback.plugins.module_utils import _gitops
from ansible_collections.governed.rollback.plugins.module_utils._common import Refused
from ansible_collections.governed.rollback.plugins.module_utils import _k8s_objects

OTHERS_DENY = {"kind": "deny", "schedule": "0 22 * * *", "duration": "8h", "applications": ["*"], "manualSync": True}


def _project(windows=None):
    spec = {"sourceRepos": ["*"]}
    if windows is not None:
        spec["syncWindows"] = copy.deepcopy(windows)
    return {"kind": "AppProject", "metadata": {"name": "payments", "namespace": "argocd"}, "spec": spec}


def _app(name="aureus-api", sync_policy=None):
    spec = {"project": "payments", "destination": {"namespace": "aureus"}}
    if sync_policy is not None:
        spec["syncPolicy"] = copy.deepcopy(sync_policy)
    return {"kind": "Application", "metadata": {"name": name, "namespace": "argocd"}, "spec": spec}


def _freeze(project, app, **kwargs):
    patches = _gitops.argocd_freeze_patches(project, app, "oncall", "rollback of v1.5.0", "2026-12-01T12:00:00Z",
                                            "INC-7", "2026-11-30T12:00:00Z", **kwargs)
    return [_gitops.apply_merge_patch(obj, patch) if patch else obj for obj, patch in zip((project, app), patches)]


def _thaw(project, app):
    patches = _gitops.argocd_thaw_patches(project, app)
    return [_gitops.apply_merge_patch(obj, patch) if patch else obj for obj, patch in zip((project, app), patches)]


def _without_empty_annotations(obj):
    obj = copy.deepcopy(obj)
    if obj["metadata"].get("annotations") == {}:
        del obj["metadata"]["annotations"]
    return obj


@pytest.mark.parametrize("windows", [None, [], [OTHERS_DENY]])
@pytest.mark.parametrize("sync_policy", [None, {}, {"automated": {"prune": True, "selfHeal": False}},
                                         {"automated": {}, "syncOptions": ["CreateNamespace=true"]}])
def test_freeze_then_thaw_restores_exactly_the_previous_specs(windows, sync_policy):
    project, app = _project(windows), _app(sync_policy=sync_policy)
    frozen_project, frozen_app = _freeze(project, app)
    deny = frozen_project["spec"]["syncWindows"][-1]
    assert deny["kind"] == "deny" and deny["applications"] == ["aureus-api"] and deny["manualSync"] is False
    assert deny["schedule"] == "* * * * *" and "INC-7" in deny["description"]
    assert frozen_project["spec"]["syncWindows"][:-1] == (windows or [])
    auto_sync_was_on = bool(sync_policy) and "automated" in sync_policy
    expected_spec = copy.deepcopy(app["spec"])
    if auto_sync_was_on:
        del expected_spec["syncPolicy"]["automated"]
    assert frozen_app["spec"] == expected_spec
    record = _gitops.read_record(frozen_app)
    assert record["who"] == "oncall" and record["incident"] == "INC-7"
    assert record["previous"] == ({"automated": sync_policy["automated"]} if auto_sync_was_on else {})
    assert _gitops.argocd_freeze_patches(frozen_project, frozen_app, "x", "y", None, "INC-8", "n") == (None, None)
    thawed_project, thawed_app = _thaw(frozen_project, frozen_app)
    assert json.dumps(thawed_project["spec"], sort_keys=True) == json.dumps(project["spec"], sort_keys=True)
    assert json.dumps(thawed_app["spec"], sort_keys=True) == json.dumps(app["spec"], sort_keys=True)
    assert _without_empty_annotations(thawed_project) == project and _without_empty_annotations(thawed_app) == app
    assert _gitops.argocd_thaw_patches(thawed_project, thawed_app) == (None, None)


def test_two_applications_frozen_in_one_project_thaw_one_at_a_time_back_to_no_sync_windows():
    project, api, web = _project(), _app("aureus-api", {"automated": {}}), _app("aureus-web", {"automated": {}})
    project, api = _freeze(project, api)
    project, web = _freeze(project, web)
    assert [w["applications"] for w in project["spec"]["syncWindows"]] == [["aureus-api"], ["aureus-web"]]
    project, api = _thaw(project, api)
    assert [w["applications"] for w in project["spec"]["syncWindows"]] == [["aureus-web"]]
    project, web = _thaw(project, web)
    assert "syncWindows" not in project["spec"] and api["spec"]["syncPolicy"] == {"automated": {}}


def test_a_window_someone_else_added_while_frozen_stays_after_the_thaw():
    project, app = _freeze(_project(), _app(sync_policy={"automated": {"prune": True}}))
    project["spec"]["syncWindows"].insert(0, OTHERS_DENY)
    thawed_project, thawed_app = _thaw(project, app)
    assert thawed_project["spec"]["syncWindows"] == [OTHERS_DENY]
    assert thawed_app["spec"]["syncPolicy"] == {"automated": {"prune": True}}


@pytest.mark.parametrize("change", ["window_removed", "window_edited", "auto_sync_back_on"])
@pytest.mark.parametrize("doing", ["thaw", "freeze"])
def test_a_freeze_someone_else_changed_is_refused_with_no_patch(change, doing):
    project, app = _freeze(_project(), _app(sync_policy={"automated": {"selfHeal": True}}))
    if change == "window_removed":
        project["spec"]["syncWindows"] = []
    elif change == "window_edited":
        project["spec"]["syncWindows"][0]["manualSync"] = True
    else:
        app["spec"]["syncPolicy"]["automated"] = {"prune": True}
    with pytest.raises(Refused, match="someone changed it since our freeze") as refused:
        if doing == "thaw":
            _gitops.argocd_thaw_patches(project, app)
        else:
            _gitops.argocd_freeze_patches(project, app, "x", "y", None, "INC-8", "n")
    assert refused.value.code == "changed_since_freeze" and "Nothing was changed" in refused.value.msg


def test_auto_sync_only_leaves_the_project_alone_and_window_only_leaves_the_application_alone():
    project, app = _project([OTHERS_DENY]), _app(sync_policy={"automated": {}})
    project_patch, app_patch = _gitops.argocd_freeze_patches(project, app, "a", "b", None, "I", "t", window=False)
    assert project_patch is None and app_patch["spec"] == {"syncPolicy": {"automated": None}}
    project_patch, app_patch = _gitops.argocd_freeze_patches(project, app, "a", "b", None, "I", "t", auto_sync=False)
    assert app_patch is None and project_patch["spec"]["syncWindows"][0] == OTHERS_DENY
    frozen_app = _gitops.apply_merge_patch(app, _gitops.argocd_freeze_patches(None, app, "a", "b", None, "I", "t",
                                                                              window=False)[1])
    assert _gitops.argocd_thaw_patches(None, frozen_app)[1]["spec"] == {"syncPolicy": {"automated": {}}}


# ---- which Application tracks a workload


def _workload(annotations=None, labels=None):
    return {"metadata": {"name": "aureus-api", "namespace": "aureus", "annotations": annotations or {},
                         "labels": labels or {}}}


@pytest.mark.parametrize("value, expected", [
    ("aureus-api:apps/Deployment:aureus/aureus-api", {"name": "aureus-api", "namespace": None}),
    ("team-a_aureus-api:apps/Deployment:aureus/aureus-api", {"name": "aureus-api", "namespace": "team-a"}),
])
def test_the_tracking_annotation_names_the_application(value, expected):
    found = _k8s_objects.argocd_application(_workload({"argocd.argoproj.io/tracking-id": value}))
    assert dict((k, found[k]) for k in ("name", "namespace")) == expected
    assert found["source"] == "annotation argocd.argoproj.io/tracking-id"


def test_the_instance_label_names_the_application_and_nothing_is_found_without_either():
    found = _k8s_objects.argocd_application(_workload(labels={"argocd.argoproj.io/instance": "aureus-api"}))
    assert found["name"] == "aureus-api" and found["namespace"] is None
    assert _k8s_objects.argocd_application(_workload(labels={"app.kubernetes.io/instance": "aureus-api"})) is None
    found = _k8s_objects.argocd_application(_workload(labels={"app.kubernetes.io/instance": "aureus-api"}),
                                            label_key="app.kubernetes.io/instance")
    assert found["name"] == "aureus-api"
    assert _k8s_objects.argocd_application(_workload({"argocd.argoproj.io/tracking-id": "garbage"})) is None
