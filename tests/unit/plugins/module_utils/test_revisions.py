"""Revision history, target selection and the rollback patch, on plain dicts shaped like API objects."""

import copy
import json

import pytest

from ansible_collections.governed.rollback.plugins.module_utils import _revisions as rev
from ansible_collections.governed.rollback.plugins.module_utils import _k8s_objects as objs
from ansible_collections.governed.rollback.plugins.module_utils._common import Refused

UID = "uid-deploy"
FLED_3 = {rev.FLED_AT_ANNOTATION: "2024-01-15T10:00:00Z", rev.FLED_REVISION_ANNOTATION: "3"}


def template(image, extra_labels=None, env=None):
    labels = {"component": "frontend"}
    labels.update(extra_labels or {})
    container = {"name": "web", "image": image, "resources": {}}
    if env:
        container["env"] = env
    return {"metadata": {"creationTimestamp": None, "labels": labels}, "spec": {"containers": [container]}}


def deployment(image, revision, annotations=None, **spec_extra):
    meta_annotations = {rev.REVISION_ANNOTATION: str(revision)}
    meta_annotations.update(annotations or {})
    spec = {"replicas": 3, "selector": {"matchLabels": {"component": "frontend"}}, "template": template(image)}
    spec.update(spec_extra)
    return {
        "metadata": {"name": "aureus-frontend", "namespace": "aureus", "uid": UID, "generation": 5,
                     "resourceVersion": "1000", "annotations": meta_annotations, "labels": {}},
        "spec": spec,
        "status": {"observedGeneration": 5},
    }


def replicaset(image, revision, name=None, owner=UID, annotations=None, history=None, labels=None):
    ann = {rev.REVISION_ANNOTATION: str(revision), rev.DESIRED_REPLICAS_ANNOTATION: "3",
           rev.MAX_REPLICAS_ANNOTATION: "4"}
    if history:
        ann[rev.REVISION_HISTORY_ANNOTATION] = history
    ann.update(annotations or {})
    tmpl = template(image, {"pod-template-hash": "h%s" % revision})
    return {
        "metadata": {"name": name or "aureus-frontend-%s" % revision, "uid": "rs-%s" % revision,
                     "labels": labels if labels is not None else {"component": "frontend",
                                                                  "pod-template-hash": "h%s" % revision},
                     "annotations": ann, "creationTimestamp": "2024-01-0%dT00:00:00Z" % min(revision, 9),
                     "ownerReferences": [{"kind": "Deployment", "name": "aureus-frontend", "uid": owner,
                                          "controller": True}]},
        "spec": {"template": tmpl},
        "status": {"replicas": 0},
    }


def seeded_world(current=3):
    """aureus-frontend with revisions 1..3 (v0.1.0, v0.1.1, v0.1.2), running ``current``."""
    images = {1: "aureus/frontend:v0.1.0", 2: "aureus/frontend:v0.1.1", 3: "aureus/frontend:v0.1.2"}
    return deployment(images[current], current), [replicaset(images[n], n) for n in (1, 2, 3)]


def statefulset(image, uid="uid-sts", **spec_extra):
    spec = {"replicas": 2, "selector": {"matchLabels": {"component": "frontend"}}, "template": template(image),
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}}
    spec.update(spec_extra)
    return {"metadata": {"name": "db", "namespace": "data", "uid": uid, "generation": 2, "resourceVersion": "77"},
            "spec": spec, "status": {"observedGeneration": 2, "readyReplicas": 2}}


def controller_revision(image, number, owner="uid-sts", annotations=None):
    data_template = template(image)
    data_template["$patch"] = "replace"
    return {"metadata": {"name": "db-%d" % number, "uid": "cr-%d" % number, "annotations": annotations or {},
                         "labels": {"component": "frontend", "controller-revision-hash": "c%d" % number},
                         "ownerReferences": [{"kind": "StatefulSet", "uid": owner, "controller": True}]},
            "revision": number, "data": {"spec": {"template": data_template}}}


# --- selectors and ownership -------------------------------------------------------------------------------------


def test_selector_string_includes_match_expressions():
    selector = {"matchLabels": {"app": "web", "tier": "fe"},
                "matchExpressions": [{"key": "track", "operator": "In", "values": ["stable", "canary"]},
                                     {"key": "legacy", "operator": "DoesNotExist"},
                                     {"key": "zone", "operator": "NotIn", "values": ["b"]},
                                     {"key": "owner", "operator": "Exists"}]}
    assert objs.selector_to_string(selector) == "app=web,tier=fe,track in (canary,stable),!legacy,zone notin (b),owner"


def test_selector_with_unknown_operator_is_an_error():
    with pytest.raises(ValueError, match="Gt"):
        objs.selector_to_string({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]})


@pytest.mark.parametrize("labels, expected", [
    ({"app": "web", "track": "stable"}, True),
    ({"app": "web", "track": "canary"}, False),
    ({"app": "web"}, False),
    ({"app": "web", "track": "stable", "legacy": "yes"}, False),
    ({"app": "api", "track": "stable"}, False),
])
def test_selector_matching_honours_match_expressions(labels, expected):
    selector = {"matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "track", "operator": "In", "values": ["stable"]},
                                     {"key": "legacy", "operator": "DoesNotExist"}]}
    assert objs.selector_matches(selector, labels) is expected


def test_empty_selector_matches_nothing():
    assert objs.selector_matches({}, {"app": "web"}) is False


def test_history_keeps_only_replicasets_controlled_by_the_deployment():
    deploy, rss = seeded_world()
    foreign = replicaset("evil/frontend:v9", 9, name="other-frontend-9", owner="uid-other")
    not_controller = replicaset("evil/frontend:v8", 8, name="adopted-8")
    not_controller["metadata"]["ownerReferences"][0]["controller"] = False
    history = rev.deployment_history(deploy, rss + [foreign, not_controller])
    assert [r.number for r in history] == [1, 2, 3]


def test_history_drops_replicasets_outside_the_selector():
    deploy, rss = seeded_world()
    deploy["spec"]["selector"] = {"matchLabels": {"component": "frontend"},
                                  "matchExpressions": [{"key": "track", "operator": "NotIn", "values": ["canary"]}]}
    canary = replicaset("aureus/frontend:canary", 4, labels={"component": "frontend", "track": "canary"})
    assert [r.number for r in rev.deployment_history(deploy, rss + [canary])] == [1, 2, 3]


def test_history_counts_a_missing_revision_as_zero_and_skips_an_unparsable_one_like_kubectl():
    deploy, rss = seeded_world()
    missing = replicaset("aureus/frontend:orphan", 7, name="orphan")
    del missing["metadata"]["annotations"][rev.REVISION_ANNOTATION]
    garbage = replicaset("aureus/frontend:garbage", 8, name="garbage")
    garbage["metadata"]["annotations"][rev.REVISION_ANNOTATION] = "eight"
    history = rev.deployment_history(deploy, rss + [missing, garbage])
    assert [(r.number, r.name) for r in history][0] == (0, "orphan")
    assert "garbage" not in [r.name for r in history]


def test_controller_revision_history_uses_the_revision_field_and_ownership():
    sts = statefulset("db:2")
    crs = [controller_revision("db:1", 1), controller_revision("db:2", 2),
           controller_revision("db:x", 3, owner="uid-someone-else")]
    history = rev.controller_revision_history(sts, crs)
    assert [(r.number, r.images) for r in history] == [(1, ["db:1"]), (2, ["db:2"])]
    assert "$patch" in history[0].data["spec"]["template"]


# --- template equality ---------------------------------------------------------------------------------------------


def test_templates_equal_ignores_pod_template_hash_and_nulls():
    with_hash = template("x:1", {"pod-template-hash": "abc"})
    without = template("x:1")
    without["metadata"].pop("creationTimestamp")
    assert rev.templates_equal(with_hash, without)
    assert rev.template_sha256(with_hash) == rev.template_sha256(without)


def test_templates_differing_in_image_are_not_equal():
    assert not rev.templates_equal(template("x:1"), template("x:2"))
    assert rev.template_sha256(template("x:1")) != rev.template_sha256(template("x:2"))


def test_template_equality_keeps_empty_structs_that_go_would_keep():
    left = template("x:1")
    right = template("x:1")
    right["spec"]["securityContext"] = {}
    assert not rev.templates_equal(left, right)


def test_controller_revision_patch_marker_is_not_part_of_the_template():
    cr = controller_revision("db:1", 1)
    assert rev.templates_equal(cr["data"]["spec"]["template"], template("db:1"))


# --- target selection --------------------------------------------------------------------------------------------


def plan_for(world=None, **kwargs):
    deploy, rss = world or seeded_world()
    return rev.plan_rollback("Deployment", deploy, rss, **kwargs)


def test_default_target_is_kubectls_second_highest_revision():
    plan = plan_for()
    assert (plan.current.number, plan.target.number, plan.previous_revision) == (3, 2, 2)
    assert plan.summary()["target_is_previous"] is True


def test_default_target_tolerates_gaps_in_the_numbering():
    deploy = deployment("aureus/frontend:v0.1.2", 7)
    rss = [replicaset("aureus/frontend:v0.1.0", 2), replicaset("aureus/frontend:v0.1.1", 5),
           replicaset("aureus/frontend:v0.1.2", 7)]
    assert plan_for((deploy, rss)).target.number == 5


def test_default_target_skips_a_revision_we_fled_so_two_rollbacks_never_redeploy_it():
    # After rolling back 3 -> 2 the controller renumbers revision 2 to 4; revision 3 carries our fled mark.
    deploy = deployment("aureus/frontend:v0.1.1", 4)
    rss = [replicaset("aureus/frontend:v0.1.0", 1),
           replicaset("aureus/frontend:v0.1.1", 4, name="aureus-frontend-2", history="2"),
           replicaset("aureus/frontend:v0.1.2", 3, annotations=FLED_3)]
    plan = plan_for((deploy, rss))
    assert plan.target.number == 1
    assert plan.target.images == ["aureus/frontend:v0.1.0"]
    assert "skipped 3" in plan.how


def test_kubectl_without_marks_would_pick_the_fled_revision():
    deploy = deployment("aureus/frontend:v0.1.1", 4)
    rss = [replicaset("aureus/frontend:v0.1.0", 1),
           replicaset("aureus/frontend:v0.1.1", 4, history="2"),
           replicaset("aureus/frontend:v0.1.2", 3)]
    assert plan_for((deploy, rss)).target.number == 3


def test_a_fled_mark_is_stale_once_the_revision_was_redeployed():
    marked = replicaset("aureus/frontend:v0.1.2", 5, annotations={rev.FLED_AT_ANNOTATION: "2024-01-15T10:00:00Z",
                                                                  rev.FLED_REVISION_ANNOTATION: "3"})
    history = rev.deployment_history(deployment("aureus/frontend:v0.1.2", 5), [marked])
    assert history[0].fled_at is None


def test_when_every_earlier_revision_was_fled_the_refusal_asks_for_an_explicit_revision():
    deploy = deployment("aureus/frontend:v0.1.1", 4)
    marks = {rev.FLED_AT_ANNOTATION: "2024-01-15T10:00:00Z"}
    rss = [replicaset("aureus/frontend:v0.1.0", 1, annotations=dict(marks, **{rev.FLED_REVISION_ANNOTATION: "1"})),
           replicaset("aureus/frontend:v0.1.1", 4),
           replicaset("aureus/frontend:v0.1.2", 3, annotations=dict(marks, **{rev.FLED_REVISION_ANNOTATION: "3"}))]
    with pytest.raises(Refused) as info:
        plan_for((deploy, rss))
    assert info.value.code == "all_fled"
    assert "to_revision" in info.value.msg and "3 at 2024-01-15T10:00:00Z" in info.value.msg


def test_explicit_revision_is_exact():
    plan = plan_for(to_revision=1)
    assert plan.target.number == 1
    assert plan.summary()["target_is_previous"] is False


def test_explicit_revision_finds_a_revision_renumbered_by_a_redeploy():
    deploy = deployment("aureus/frontend:v0.1.1", 4)
    rss = [replicaset("aureus/frontend:v0.1.0", 1), replicaset("aureus/frontend:v0.1.1", 4, history="2"),
           replicaset("aureus/frontend:v0.1.2", 3)]
    plan = plan_for((deploy, rss), to_revision=2)
    assert plan.target.number == 4
    assert plan.skipped_reason.startswith("skipped rollback")
    assert plan.patch is None


def test_explicit_fled_revision_is_allowed_with_a_warning():
    deploy = deployment("aureus/frontend:v0.1.1", 4)
    rss = [replicaset("aureus/frontend:v0.1.1", 4, history="2"),
           replicaset("aureus/frontend:v0.1.2", 3, annotations=FLED_3)]
    plan = plan_for((deploy, rss), to_revision=3)
    assert plan.target.number == 3
    assert any("rolled back from at 2024-01-15T10:00:00Z" in w for w in plan.warnings)


def test_unknown_revision_lists_the_available_ones():
    with pytest.raises(Refused) as info:
        plan_for(to_revision=7)
    assert info.value.code == "revision_not_found"
    assert info.value.msg == ("revision 7 not found for deployment aureus/aureus-frontend: the latest revision is 3; "
                              "available revisions: 1, 2, 3")
    assert info.value.details["available_revisions"] == [1, 2, 3]


def test_pruned_revision_says_so_and_lists_what_is_left():
    deploy = deployment("aureus/frontend:v0.1.2", 3, revisionHistoryLimit=1)
    rss = [replicaset("aureus/frontend:v0.1.1", 2), replicaset("aureus/frontend:v0.1.2", 3)]
    with pytest.raises(Refused) as info:
        plan_for((deploy, rss), to_revision=1)
    assert info.value.code == "revision_pruned"
    assert "pruned (revisionHistoryLimit=1); available revisions: 2, 3" in info.value.msg


def test_negative_revision_is_refused():
    with pytest.raises(Refused) as info:
        plan_for(to_revision=-1)
    assert info.value.code == "bad_revision"


def test_only_one_revision_means_no_history():
    deploy = deployment("aureus/frontend:v0.1.0", 1)
    with pytest.raises(Refused) as info:
        plan_for((deploy, [replicaset("aureus/frontend:v0.1.0", 1)]))
    assert info.value.code == "no_history"
    assert "only revision 1 exists" in info.value.msg


def test_no_owned_revisions_at_all_means_no_history():
    with pytest.raises(Refused) as info:
        plan_for((deployment("aureus/frontend:v0.1.0", 1), []))
    assert info.value.code == "no_history"


def test_to_image_picks_the_newest_revision_running_it():
    deploy = deployment("aureus/frontend:v0.1.2", 4)
    rss = [replicaset("aureus/frontend:v0.1.0", 1), replicaset("aureus/frontend:v0.1.1", 2),
           replicaset("aureus/frontend:v0.1.1", 3, name="aureus-frontend-3b"), replicaset("aureus/frontend:v0.1.2", 4)]
    plan = plan_for((deploy, rss), to_image="aureus/frontend:v0.1.1")
    assert plan.target.name == "aureus-frontend-3b"


def test_to_image_prefers_a_revision_not_fled():
    deploy = deployment("aureus/frontend:v0.1.2", 4)
    rss = [replicaset("aureus/frontend:v0.1.1", 2), replicaset("aureus/frontend:v0.1.1", 3, annotations=FLED_3),
           replicaset("aureus/frontend:v0.1.2", 4)]
    assert plan_for((deploy, rss), to_image="aureus/frontend:v0.1.1").target.number == 2


def test_to_image_not_in_history_lists_images_per_revision():
    with pytest.raises(Refused) as info:
        plan_for(to_image="aureus/frontend:v9")
    assert info.value.code == "image_not_found"
    assert "1: aureus/frontend:v0.1.0; 2: aureus/frontend:v0.1.1" in info.value.msg


def test_to_image_with_to_revision_is_refused():
    with pytest.raises(Refused) as info:
        plan_for(to_revision=2, to_image="aureus/frontend:v0.1.1")
    assert info.value.code == "bad_revision"


def test_target_equal_to_current_template_is_skipped_with_the_reason():
    plan = plan_for(to_revision=3)
    assert plan.patch is None
    assert plan.skipped_reason == ("skipped rollback: the current template of deployment aureus/aureus-frontend "
                                   "already matches revision 3 (revision 3 as requested)")


# --- refusals before selection -------------------------------------------------------------------------------------


def test_rollback_of_a_paused_deployment_is_refused_with_the_resume_command():
    deploy, rss = seeded_world()
    deploy["spec"]["paused"] = True
    with pytest.raises(Refused) as info:
        rev.plan_rollback("Deployment", deploy, rss)
    assert info.value.code == "paused"
    assert "kubectl rollout resume deployment/aureus-frontend -n aureus" in info.value.msg


def test_rollback_while_the_controller_lags_is_refused():
    deploy, rss = seeded_world()
    deploy["status"]["observedGeneration"] = 4
    with pytest.raises(Refused) as info:
        rev.plan_rollback("Deployment", deploy, rss)
    assert info.value.code == "generation_not_observed"
    assert "generation 5" in info.value.msg and "observed generation 4" in info.value.msg


def test_unsupported_kind_is_refused():
    with pytest.raises(Refused) as info:
        rev.plan_rollback("CronJob", {"metadata": {}}, [])
    assert info.value.code == "unsupported_kind"
    assert "Deployment, StatefulSet, DaemonSet" in info.value.msg


@pytest.mark.parametrize("where, key, value, tool", [
    ("annotations", "argocd.argoproj.io/tracking-id", "shop:apps/Deployment:aureus/aureus-frontend", "Argo CD"),
    ("labels", "argocd.argoproj.io/instance", "shop", "Argo CD"),
    ("labels", "kustomize.toolkit.fluxcd.io/name", "apps", "Flux"),
    ("labels", "helm.toolkit.fluxcd.io/name", "frontend", "Flux"),
    ("labels", "app.kubernetes.io/managed-by", "Helm", "Helm"),
    ("annotations", "meta.helm.sh/release-name", "frontend", "Helm"),
])
def test_gitops_owned_workload_is_refused_naming_the_tool(where, key, value, tool):
    deploy, rss = seeded_world()
    deploy["metadata"].setdefault(where, {})[key] = value
    with pytest.raises(Refused) as info:
        rev.plan_rollback("Deployment", deploy, rss)
    assert info.value.code == "gitops_owned"
    assert tool in info.value.msg and key in info.value.msg and "allow_gitops_drift=true" in info.value.msg


def test_gitops_drift_allowed_rolls_back_but_warns_to_revert_the_source():
    deploy, rss = seeded_world()
    deploy["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"] = "shop:apps/Deployment:aureus/x"
    plan = rev.plan_rollback("Deployment", deploy, rss, allow_gitops_drift=True)
    assert plan.target.number == 2
    assert any("revert the change in the GitOps source" in w for w in plan.warnings)


def test_flux_with_reconciliation_disabled_does_not_block():
    deploy, rss = seeded_world()
    deploy["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"] = "apps"
    deploy["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/reconcile"] = "disabled"
    assert objs.gitops_owners(deploy) == []


def test_plain_app_instance_label_is_not_taken_for_gitops():
    deploy, _rss = seeded_world()
    deploy["metadata"]["labels"]["app.kubernetes.io/instance"] = "frontend"
    assert objs.gitops_owners(deploy) == []


# --- the patch -----------------------------------------------------------------------------------------------------


def test_deployment_patch_tests_resource_version_then_replaces_template_and_annotations():
    plan = plan_for(actor="alice", incident_id="INC-12345", reason="Breaking UI changes")
    test_op, template_op, annotations_op = plan.patch
    assert test_op == {"op": "test", "path": "/metadata/resourceVersion", "value": "1000"}
    assert template_op["op"] == "replace" and template_op["path"] == "/spec/template"
    assert "pod-template-hash" not in template_op["value"]["metadata"]["labels"]
    assert template_op["value"]["spec"]["containers"][0]["image"] == "aureus/frontend:v0.1.1"
    assert annotations_op["path"] == "/metadata/annotations"
    assert annotations_op["value"][rev.CHANGE_CAUSE_ANNOTATION] == (
        "governed.rollback: rollback 3 -> 2 by alice for INC-12345: Breaking UI changes")
    json.dumps(plan.patch)


def test_annotation_merge_follows_kubectls_skip_list_and_never_wipes():
    workload = {rev.REVISION_ANNOTATION: "3", rev.LAST_APPLIED_ANNOTATION: "{...}", "team": "web",
                rev.CHANGE_CAUSE_ANNOTATION: "deploy v0.1.2"}
    source = {rev.REVISION_ANNOTATION: "2", rev.DESIRED_REPLICAS_ANNOTATION: "3", rev.MAX_REPLICAS_ANNOTATION: "4",
              rev.CHANGE_CAUSE_ANNOTATION: "deploy v0.1.1", "owner": "payments",
              rev.FLED_AT_ANNOTATION: "2024-01-15T10:00:00Z", rev.FLED_REVISION_ANNOTATION: "2"}
    merged = rev.merge_rollback_annotations(workload, source)
    # kubectl: skip-list keys from the Deployment, all else from the ReplicaSet (so "team" is dropped as kubectl does).
    assert merged == {rev.REVISION_ANNOTATION: "3", rev.LAST_APPLIED_ANNOTATION: "{...}",
                      rev.CHANGE_CAUSE_ANNOTATION: "deploy v0.1.1", "owner": "payments"}
    assert rev.merge_rollback_annotations(workload, source, "ours")[rev.CHANGE_CAUSE_ANNOTATION] == "ours"


def test_deployment_without_annotations_gets_an_add_operation():
    deploy, rss = seeded_world()
    del deploy["metadata"]["annotations"]
    plan = rev.plan_rollback("Deployment", deploy, rss, to_revision=2)
    assert plan.patch[2]["op"] == "add"


def test_change_cause_is_one_short_line():
    text = rev.change_cause_text(3, 2, "bob", "INC-1", "line one\nline two " + "x" * 400)
    assert "\n" not in text
    assert text.startswith("governed.rollback: rollback 3 -> 2 by bob for INC-1: line one line two")
    assert len(text) < 300 and text.endswith("...")
    assert rev.change_cause_text(None, 2) == "governed.rollback: rollback ? -> 2 by unknown actor"


def test_statefulset_patch_is_the_controller_revision_data_with_a_precondition():
    sts = statefulset("db:2")
    crs = [controller_revision("db:1", 1), controller_revision("db:2", 2)]
    plan = rev.plan_rollback("StatefulSet", sts, crs, actor="alice")
    assert plan.patch_type == "strategic-merge"
    assert plan.patch["spec"]["template"]["$patch"] == "replace"
    assert plan.patch["spec"]["template"]["spec"]["containers"][0]["image"] == "db:1"
    assert plan.patch["metadata"]["resourceVersion"] == "77"
    assert plan.patch["metadata"]["annotations"][rev.CHANGE_CAUSE_ANNOTATION].startswith(
        "governed.rollback: rollback 2 -> 1 by alice")
    assert "metadata" not in crs[0]["data"], "the history object itself must not be modified"


def test_daemonset_already_at_target_is_skipped():
    ds = statefulset("agent:2", uid="uid-ds")
    ds["metadata"]["name"] = "agent"
    crs = [controller_revision("agent:1", 1, owner="uid-ds"), controller_revision("agent:2", 2, owner="uid-ds")]
    plan = rev.plan_rollback("DaemonSet", ds, crs, to_revision=2)
    assert plan.skipped_reason and plan.patch is None


def test_secret_looking_env_values_are_masked_in_output_but_not_in_the_patch_sent():
    deploy, rss = seeded_world()
    rss[1]["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "DB_PASSWORD", "value": "hunter2"}, {"name": "LOG_LEVEL", "value": "debug"},
        {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
    plan = rev.plan_rollback("Deployment", deploy, rss)
    shown = json.dumps(rev.mask_patch("Deployment", plan.patch)) + json.dumps(plan.plan())
    assert "hunter2" not in shown and "debug" in shown and "secretKeyRef" in shown
    assert plan.patch[1]["value"]["spec"]["containers"][0]["env"][0]["value"] == "hunter2"


def test_template_digest_never_hashes_a_secret_literal():
    with_secret = template("x:1", env=[{"name": "DB_PASSWORD", "value": "hunter2"}])
    other_secret = template("x:1", env=[{"name": "DB_PASSWORD", "value": "hunter3"}])
    other_level = template("x:1", env=[{"name": "LOG_LEVEL", "value": "debug"}])
    assert rev.template_sha256(with_secret) == rev.template_sha256(other_secret)
    assert rev.template_sha256(with_secret) != rev.template_sha256(other_level)


def test_last_applied_manifest_is_shown_only_by_size():
    deploy, rss = seeded_world()
    manifest = '{"spec":{"template":{"spec":{"containers":[{"env":[{"name":"DB_PASSWORD","value":"hunter2"}]}]}}}}'
    deploy["metadata"]["annotations"][rev.LAST_APPLIED_ANNOTATION] = manifest
    plan = rev.plan_rollback("Deployment", deploy, rss)
    shown = rev.mask_patch("Deployment", plan.patch)[2]["value"][rev.LAST_APPLIED_ANNOTATION]
    assert shown == {"redacted": True, "bytes": len(manifest)}
    assert plan.patch[2]["value"][rev.LAST_APPLIED_ANNOTATION] == manifest


def test_plan_lists_template_changes_and_history():
    plan = plan_for()
    view = plan.plan()
    assert view["template_changes"] == [{"path": "spec.containers[0].image", "before": "aureus/frontend:v0.1.2",
                                         "after": "aureus/frontend:v0.1.1"}]
    assert [h["revision"] for h in view["history"]] == [1, 2, 3]
    assert view["action"] == "rollback"


def test_fled_marks_record_when_which_revision_and_who():
    history = rev.deployment_history(*seeded_world())
    marks = rev.fled_marks(history[2], "2024-01-15T10:00:00Z", "alice", "INC-1")
    assert marks == {rev.FLED_AT_ANNOTATION: "2024-01-15T10:00:00Z", rev.FLED_REVISION_ANNOTATION: "3",
                     rev.FLED_BY_ANNOTATION: "alice INC-1"}


def test_renumber_marks_accumulate_previous_numbers():
    cr = controller_revision("db:1", 4, annotations={rev.PREVIOUS_REVISIONS_ANNOTATION: "1"})
    target = rev.controller_revision_history(statefulset("db:2"), [cr])[0]
    assert rev.renumber_marks(target) == {rev.PREVIOUS_REVISIONS_ANNOTATION: "1,4"}


# --- warnings ------------------------------------------------------------------------------------------------------


def test_last_applied_configuration_and_apply_managers_are_warned_about():
    deploy, rss = seeded_world()
    deploy["metadata"]["annotations"][rev.LAST_APPLIED_ANNOTATION] = "{}"
    deploy["metadata"]["managedFields"] = [{"manager": "argocd-controller", "operation": "Apply",
                                            "fieldsV1": {"f:spec": {"f:template": {}}}}]
    warnings = rev.plan_rollback("Deployment", deploy, rss).warnings
    assert any("last-applied-configuration" in w for w in warnings)
    assert any("argocd-controller" in w for w in warnings)


def test_statefulset_partition_and_stuck_pods_are_warned_about():
    sts = statefulset("db:2", updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 1}})
    sts["status"]["readyReplicas"] = 1
    warnings = rev.rollback_warnings("StatefulSet", sts, "statefulset data/db")
    assert any("partition 1" in w for w in warnings)
    assert any("deleted by hand" in w for w in warnings)


def test_planning_does_not_modify_its_inputs():
    deploy, rss = seeded_world()
    before = copy.deepcopy((deploy, rss))
    rev.plan_rollback("Deployment", deploy, rss, actor="a")
    assert (deploy, rss) == before


# --- pods after the rollout ----------------------------------------------------------------------------------------


def pod(name, owner_uid, image, ready=True, labels=None, terminating=False):
    meta = {"name": name, "labels": labels or {}, "ownerReferences": [{"uid": owner_uid, "controller": True}]}
    if terminating:
        meta["deletionTimestamp"] = "2024-01-15T10:00:00Z"
    return {"metadata": meta, "spec": {"containers": [{"name": "web", "image": image}], "nodeName": "kwok-node-0"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [{"name": "web", "imageID": "docker.io/%s@sha256:abc" % image}]}}


def test_pods_of_a_deployment_are_mapped_to_their_replicaset_revision():
    deploy, rss = seeded_world()
    history = rev.deployment_history(deploy, rss)
    pods = [pod("b", "rs-3", "aureus/frontend:v0.1.2", ready=False), pod("a", "rs-2", "aureus/frontend:v0.1.1"),
            pod("gone", "rs-2", "aureus/frontend:v0.1.1", terminating=True), pod("stranger", "rs-x", "other:1")]
    summaries = rev.pod_summaries("Deployment", deploy, history, pods)
    assert [(p["name"], p["ready"], p["revision"], p["images"]) for p in summaries] == [
        ("a", True, 2, ["aureus/frontend:v0.1.1"]), ("b", False, 3, ["aureus/frontend:v0.1.2"])]
    assert summaries[0]["image_ids"] == ["docker.io/aureus/frontend:v0.1.1@sha256:abc"]


def test_pods_of_statefulsets_and_daemonsets_are_mapped_by_revision_hash():
    sts = statefulset("db:2")
    history = rev.controller_revision_history(sts, [controller_revision("db:1", 1), controller_revision("db:2", 2)])
    pods = [pod("db-0", "uid-sts", "db:1", labels={"controller-revision-hash": "db-1"}),  # StatefulSet style
            pod("db-1", "uid-sts", "db:2", labels={"controller-revision-hash": "2"}),  # DaemonSet style
            pod("db-2", "uid-sts", "db:2", labels={"controller-revision-hash": "unknown"}),
            pod("db-3", "uid-someone-else", "db:2", labels={"controller-revision-hash": "db-2"})]
    assert [(p["name"], p["revision"]) for p in rev.pod_summaries("StatefulSet", sts, history, pods)] == [
        ("db-0", 1), ("db-1", 2), ("db-2", None)]


# --- issue 9: hostile revisions and redacted output -------------------------------------------------------------------


def test_revision_annotations_are_parsed_like_go_parseint_base_10():
    assert [rev.parse_go_int64(t) for t in ("3", "+3", "-3", "007")] == [3, 3, -3, 7]
    assert [rev.parse_go_int64(t) for t in (" 3 ", "3_000", "\u0663", "9223372036854775808", "", True)] == [None] * 6


def test_a_replicaset_whose_revision_go_rejects_is_skipped_like_the_controller_does():
    deploy, rss = seeded_world()
    spaced = replicaset("aureus/frontend:spaced", 9, name="spaced")
    spaced["metadata"]["annotations"][rev.REVISION_ANNOTATION] = " 9 "
    history = rev.deployment_history(deploy, rss + [spaced])
    assert [r.name for r in history] == ["aureus-frontend-1", "aureus-frontend-2", "aureus-frontend-3"]


def test_true_as_to_revision_is_refused_and_does_not_mean_revision_one():
    deploy, rss = seeded_world()
    with pytest.raises(Refused) as err:
        rev.plan_rollback("Deployment", deploy, rss, to_revision=True)
    assert err.value.code == "bad_revision"


def test_two_replicasets_with_the_target_revision_are_refused_as_ambiguous():
    deploy, rss = seeded_world()
    rss.append(replicaset("aureus/frontend:evil", 2, name="aureus-frontend-evil"))
    with pytest.raises(Refused) as err:
        rev.plan_rollback("Deployment", deploy, rss, to_revision=2)
    assert err.value.code == "ambiguous_revision"
    assert "aureus-frontend-2" in err.value.msg and "aureus-frontend-evil" in err.value.msg


def test_args_and_command_are_masked_in_plan_and_patch_output_but_sent_unmasked():
    deploy, rss = seeded_world()
    container = rss[1]["spec"]["template"]["spec"]["containers"][0]
    container["command"] = ["mysql", "-uroot", "-phunter2x"]
    container["args"] = ["--api-token", "tok-5ecret-99", "--port=8080"]
    plan = rev.plan_rollback("Deployment", deploy, rss, to_revision=2)
    shown = json.dumps([plan.plan(), rev.mask_patch("Deployment", plan.patch)])
    assert "hunter2x" not in shown and "tok-5ecret-99" not in shown
    assert "--port=8080" in shown
    sent = plan.patch[1]["value"]["spec"]["containers"][0]
    assert sent["args"] == ["--api-token", "tok-5ecret-99", "--port=8080"]


def test_template_digest_is_unchanged_by_the_output_redaction():
    tmpl = template("aureus/frontend:v0.1.2", env=[{"name": "DB_PASSWORD", "value": "hunter2hunter2"}])
    tmpl["spec"]["containers"][0]["args"] = ["--password", "a"]
    other = copy.deepcopy(tmpl)
    other["spec"]["containers"][0]["args"] = ["--password", "b"]
    assert rev.template_sha256(tmpl) != rev.template_sha256(other), "a changed argument changes the digest"
