"""The pure core of the GitOps rollback: the last good release, the pin, the branch/commit/PR texts, the repository
the cluster reconciles from, Flux's progress at a commit, and the deploy freeze's patches (Flux and Argo CD)."""

import datetime
import json

import pytest

from ansible_collections.governed.rollback.plugins.module_utils import _gitops
from ansible_collections.governed.rollback.plugins.module_utils._approval import select_row
from ansible_collections.governed.rollback.plugins.module_utils._common import Refused, RollbackError

GOOD = "sha256:" + "a" * 64
BAD = "sha256:" + "b" * 64
OLD = "sha256:" + "c" * 64

KUSTOMIZATION = """apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: aureus
resources:
  - deployment.yaml
images:
  - name: aureus/api
    digest: %s
  # the sidecar follows its own releases
  - name: aureus/sidecar
    newTag: "1.2"
""" % BAD


def test_images_are_parsed_with_their_fields():
    images = _gitops.parse_images(KUSTOMIZATION)
    assert images == [{"name": "aureus/api", "digest": BAD}, {"name": "aureus/sidecar", "newTag": "1.2"}]


def test_the_entry_to_pin_must_be_named_when_there_are_several():
    images = _gitops.parse_images(KUSTOMIZATION)
    with pytest.raises(Refused, match="has 2 images: entries"):
        _gitops.select_image(images)
    assert _gitops.select_image(images, "aureus/api")["digest"] == BAD
    with pytest.raises(Refused, match="no images: entry named 'aureus/web'") as err:
        _gitops.select_image(images, "aureus/web")
    assert err.value.code == "no_image"


def test_pin_replaces_only_the_digest_line_of_the_entry():
    pinned = _gitops.pin_digest(KUSTOMIZATION, "aureus/api", GOOD)
    assert pinned == KUSTOMIZATION.replace(BAD, GOOD)
    assert _gitops.parse_images(pinned)[0]["digest"] == GOOD


def test_pin_replaces_a_tag_with_the_digest_and_keeps_comments():
    pinned = _gitops.pin_digest(KUSTOMIZATION, "aureus/sidecar", OLD)
    assert '    newTag: "1.2"' not in pinned
    assert "    digest: %s\n" % OLD in pinned
    assert "  # the sidecar follows its own releases\n" in pinned
    assert _gitops.parse_images(pinned)[1] == {"name": "aureus/sidecar", "digest": OLD}


def test_pin_adds_a_digest_to_an_entry_that_has_none():
    text = "images:\n- name: aureus/api\n  newName: registry.example/aureus/api\nresources: [d.yaml]\n"
    pinned = _gitops.pin_digest(text, "aureus/api", GOOD)
    assert pinned == ("images:\n- name: aureus/api\n  newName: registry.example/aureus/api\n  digest: %s\n"
                      "resources: [d.yaml]\n" % GOOD)
    assert _gitops.image_ref(_gitops.parse_images(pinned)[0]) == "registry.example/aureus/api@" + GOOD


def test_pin_refuses_something_that_is_not_a_digest():
    with pytest.raises(RollbackError, match="not an image digest"):
        _gitops.pin_digest(KUSTOMIZATION, "aureus/api", "v1.4.0")


def test_a_tag_pin_replaces_the_digest_and_keeps_every_other_line():
    pinned = _gitops.pin_tag(KUSTOMIZATION, "aureus/api", "v1.4.0")
    assert pinned == KUSTOMIZATION.replace("    digest: %s\n" % BAD, '    newTag: "v1.4.0"\n')
    assert _gitops.parse_images(pinned)[0] == {"name": "aureus/api", "newTag": "v1.4.0"}
    retagged = _gitops.pin_tag(KUSTOMIZATION, "aureus/sidecar", "1.1")
    assert retagged == KUSTOMIZATION.replace('newTag: "1.2"', 'newTag: "1.1"')
    both = KUSTOMIZATION.replace("    digest: %s\n" % BAD, "    newTag: v1.5.0\n    digest: %s\n" % BAD)
    assert _gitops.parse_images(_gitops.pin_tag(both, "aureus/api", "v1.4.0"))[0] == {
        "name": "aureus/api", "newTag": "v1.4.0"}
    bare = "images:\n- name: aureus/api\nresources: [a.yaml]\n"
    assert _gitops.parse_images(_gitops.pin_tag(bare, "aureus/api", "v2"))[0] == {"name": "aureus/api", "newTag": "v2"}
    with pytest.raises(Refused):
        _gitops.pin_tag(KUSTOMIZATION, "aureus/other", "v1")


@pytest.mark.parametrize("ref, tag", [("aureus/api:v1.4.0", "v1.4.0"), ("registry:5000/aureus/api:1.2", "1.2"),
                                      ("v1.4.0", "v1.4.0"), ("registry:5000/aureus/api", None),
                                      ("aureus/api@" + GOOD, None), (GOOD, None), ("bad tag!", None)])
def test_the_tag_of_an_image_reference(ref, tag):
    assert _gitops.tag_of(ref) == tag


def test_the_last_good_release_is_the_newest_other_digest():
    # newest first: a README commit (same digest), the bad release, the good one, an older one
    history = [("s5", BAD), ("s4", BAD), ("s3", GOOD), ("s2", GOOD), ("s1", OLD)]
    releases = _gitops.digest_history(history)
    assert releases == [{"sha": "s4", "digest": BAD}, {"sha": "s2", "digest": GOOD}, {"sha": "s1", "digest": OLD}]
    assert _gitops.last_good_release(releases, BAD) == {"sha": "s2", "digest": GOOD}
    assert _gitops.last_good_release([{"sha": "s1", "digest": BAD}], BAD) is None


def test_approval_facts_pick_the_deployment_rows():
    releases = _gitops.digest_history([("s3", BAD), ("s2", GOOD), ("s1", OLD)])
    last = _gitops.release_revisions(releases, GOOD)
    assert last == {"current_revision": 3, "previous_revision": 2, "to_revision": 2}
    assert select_row("gitops", last) == "deployment_last"
    older = _gitops.release_revisions(releases, OLD)
    assert select_row("gitops", older) == "deployment_older"
    never = _gitops.release_revisions(releases, "sha256:" + "d" * 64)
    assert never["to_revision"] == 0 and select_row("gitops", never) == "deployment_older"


def test_reverted_commits_are_recognized_by_their_revert_line():
    reverted = _gitops.reverted_shas(["Revert x\n\nThis reverts commit 0123456789abcdef0123456789abcdef01234567.\n"])
    assert _gitops.is_reverted("0123456789abcdef0123456789abcdef01234567", reverted)
    assert not _gitops.is_reverted("f" * 40, reverted)


def test_branch_commit_and_pull_request_carry_the_incident_and_refs():
    moment = datetime.datetime(2026, 11, 30, 8, 1, 2, tzinfo=datetime.timezone.utc)
    assert _gitops.rollback_branch("Aureus API", moment) == "ops/rollback-aureus-api-20261130T080102Z"
    current = {"sha": "1" * 40, "image": "aureus/api@" + BAD, "digest": BAD}
    target = {"image": "aureus/api@" + GOOD, "digest": GOOD}
    message = _gitops.commit_message("revert", "aureus-api", "INC-1", "500s\non query", "sre", current, target,
                                     "2" * 40, "rollback-1")
    assert message.startswith("rollback(aureus-api): revert 222222222222 for INC-1\n\n500s on query\n")
    assert "This reverts commit %s." % ("2" * 40) in message
    trailers = _gitops.parse_trailers(message)
    assert trailers == {"Rollback-Incident": "INC-1", "Rollback-Component": "aureus-api",
                        "Rollback-Current-Ref": "%s (aureus/api@%s)" % ("1" * 40, BAD),
                        "Rollback-Last-Good-Ref": "aureus/api@" + GOOD, "Rollback-Reason": "500s on query",
                        "Rollback-Actor": "sre", "Rollback-Id": "rollback-1"}
    log = [{"sha": "9" * 40, "message": "release"}, {"sha": "8" * 40, "message": message}]
    assert _gitops.find_rollback(log, "INC-1", "aureus-api")["sha"] == "8" * 40
    assert _gitops.find_rollback(log, "INC-2", "aureus-api") is None
    pr = _gitops.pull_request("pin", "aureus-api", "INC-1", "500s", "sre", current, target, "ops/x", "main",
                              "-a\n+b\n")
    assert pr["title"] == "Rollback aureus-api to %s (INC-1)" % GOOD[:19]
    assert "| last_good_ref | `aureus/api@%s` |" % GOOD in pr["body"] and "```diff\n-a\n+b\n```" in pr["body"]
    assert (pr["head"], pr["base"]) == ("ops/x", "main")


def test_merge_needs_both_the_flag_and_an_approval():
    assert _gitops.may_merge(True, {"approved": True})
    assert not _gitops.may_merge(True, {"approved": False})
    assert not _gitops.may_merge(True, {})
    assert not _gitops.may_merge(False, {"approved": True})
    comment = _gitops.approval_comment({"approved": True, "rule": "deployment_last", "approval_path": "approval",
                                        "requested_by": "oncall", "approved_by": [{"name": "eng-lead",
                                                                                   "roles": ["engineering_lead"]}]})
    assert "- decision: approved" in comment and "- approved by: eng-lead (engineering_lead)" in comment


def _flux(url="http://127.0.0.1:3000/gitops-admin/aureus-deploy.git", branch="main", path="./apps/aureus-api"):
    source = {"metadata": {"namespace": "flux-system", "name": "aureus-deploy"},
              "spec": {"url": url, "ref": {"branch": branch}}}
    kust = {"metadata": {"namespace": "flux-system", "name": "aureus-api"}, "spec": {"path": path}}
    return source, kust


def test_the_repository_must_be_the_one_the_cluster_reconciles_from():
    source, kust = _flux()
    _gitops.check_reconciled_from("http://127.0.0.1:3000/GitOps-Admin/aureus-deploy/".replace("GitOps-Admin",
                                                                                              "gitops-admin"),
                                  "main", "apps/aureus-api", source, kust)
    with pytest.raises(Refused, match="does not reconcile from") as err:
        _gitops.check_reconciled_from("http://127.0.0.1:3000/gitops-admin/other.git", "main", "apps/aureus-api",
                                      source, kust)
    assert err.value.code == "not_reconciled"
    with pytest.raises(Refused, match="not branch release"):
        _gitops.check_reconciled_from(source["spec"]["url"], "release", "apps/aureus-api", source, kust)
    with pytest.raises(Refused, match="applies path"):
        _gitops.check_reconciled_from(source["spec"]["url"], "main", "apps/other", source, kust)
    assert _gitops.normalize_repo_url("HTTP://user:pw@Git.Example:3000/o/r.git/") == "http://git.example:3000/o/r"


def test_the_source_of_a_kustomization_is_its_repository_branch_and_path():
    source, kust = _flux(url="https://bot:s3cret@git.example/o/aureus-deploy.git", branch="release")
    found = _gitops.reconciled_source(source, kust)
    assert found == {"repo_url": "https://git.example/o/aureus-deploy.git", "branch": "release",
                     "path": "apps/aureus-api"}
    _gitops.check_reconciled_from(found["repo_url"], found["branch"], found["path"], source, kust)
    source["spec"]["ref"] = {}
    assert _gitops.reconciled_source(source, {"spec": {}})["branch"] == "master"  # Flux's default
    assert _gitops.reconciled_source(source, {"spec": {}})["path"] == "."


@pytest.mark.parametrize("ref", [{"tag": "v1.4.0"}, {"semver": ">=1.0"}, {"commit": "a" * 40}])
def test_a_source_that_follows_no_branch_cannot_be_realigned_by_a_pull_request(ref):
    source, kust = _flux()
    source["spec"]["ref"] = ref
    with pytest.raises(Refused, match="not a branch") as err:
        _gitops.reconciled_source(source, kust)
    assert err.value.code == "not_reconciled"
    source["spec"]["ref"] = {"branch": "main"}
    source["spec"]["url"] = "ssh://git@git.example/o/r.git"
    with pytest.raises(Refused, match="only HTTP"):
        _gitops.reconciled_source(source, kust)


def test_the_digest_is_taken_from_an_image_reference():
    assert _gitops.digest_of("aureus/api@" + GOOD) == GOOD
    assert _gitops.digest_of("registry:5000/aureus/api@" + GOOD) == GOOD
    assert _gitops.digest_of(GOOD) == GOOD
    assert _gitops.digest_of("aureus/api:v1.4.0") == "aureus/api:v1.4.0"  # not a digest: pin_digest refuses it


def _status(source_rev, applied, attempted, ready, reason="ReconciliationSucceeded", generation=2, observed=2):
    source = {"status": {"artifact": {"revision": "main@sha1:" + source_rev}}}
    kust = {"metadata": {"generation": generation},
            "status": {"lastAppliedRevision": "main@sha1:" + applied, "lastAttemptedRevision": "main@sha1:" + attempted,
                       "observedGeneration": observed,
                       "conditions": [{"type": "Ready", "status": ready, "reason": reason, "message": "m"}]}}
    return source, kust


def test_reconcile_progress_is_ready_only_at_the_merge_commit():
    sha, old = "a" * 40, "b" * 40
    progress = _gitops.reconcile_progress(*_status(sha, sha, sha, "True"), sha=sha)
    assert progress["source_at_target"] and progress["ready"] and not progress["failed_at_target"]
    stale = _gitops.reconcile_progress(*_status(sha, old, old, "True"), sha=sha)
    assert stale["source_at_target"] and not stale["ready"]
    failed = _gitops.reconcile_progress(*_status(sha, old, sha, "False", "HealthCheckFailed"), sha=sha)
    assert failed["failed_at_target"] and not failed["ready"]
    unobserved = _gitops.reconcile_progress(*_status(sha, sha, sha, "True", observed=1), sha=sha)
    assert not unobserved["ready"]
    assert _gitops.revision_sha("main/" + sha) == sha and _gitops.revision_sha("garbage") is None


def test_pods_on_image_judges_each_pod_by_its_spec():
    pods = [{"metadata": {"name": "p1"}, "spec": {"containers": [{"name": "api", "image": "i@" + GOOD}]},
             "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
            {"metadata": {"name": "p2", "deletionTimestamp": "x"},
             "spec": {"containers": [{"name": "api", "image": "i@" + BAD}]}},
            {"metadata": {"name": "p3"}, "spec": {"containers": [{"name": "api", "image": "i@" + BAD}]}}]
    summary = _gitops.pods_on_image(pods, "api", "i@" + GOOD)
    assert [(p["name"], p["ready"], p["on_target"]) for p in summary] == [("p1", True, True), ("p3", False, False)]


def _pod(name, image_id, ready="True", terminating=False, container="api"):
    meta = {"name": name}
    if terminating:
        meta["deletionTimestamp"] = "2026-11-30T00:00:00Z"
    return {"metadata": meta, "status": {"conditions": [{"type": "Ready", "status": ready}],
                                         "containerStatuses": [{"name": container, "imageID": image_id}]}}


def test_pods_report_the_digest_of_a_tag_only_when_every_live_pod_runs_it():
    runs = "docker.io/aureus/api@" + GOOD
    assert _gitops.pods_report_digest([_pod("a", runs), _pod("b", runs), _pod("c", "", terminating=True)],
                                      "api", GOOD)
    assert not _gitops.pods_report_digest([_pod("a", runs), _pod("b", "docker.io/aureus/api@" + BAD)], "api", GOOD)
    assert not _gitops.pods_report_digest([_pod("a", runs, ready="False")], "api", GOOD)
    assert not _gitops.pods_report_digest([_pod("a", "")], "api", GOOD)  # KWOK reports no image ID
    assert not _gitops.pods_report_digest([_pod("a", runs, container="sidecar")], "api", GOOD)
    assert not _gitops.pods_report_digest([], "api", GOOD)
    assert [_gitops.image_name(r) for r in ("aureus/api:v1", "reg:5000/aureus/api@" + GOOD, "reg:5000/api")] == [
        "aureus/api", "reg:5000/aureus/api", "reg:5000/api"]


def test_binding_changes_when_the_branch_moves():
    current = {"sha": "1" * 40, "image": "i@" + BAD}
    target = {"image": "i@" + GOOD}
    one = _gitops.plan_binding(current, target, "uid", "pin")
    two = _gitops.plan_binding(dict(current, sha="2" * 40), target, "uid", "pin")
    assert one["plan_sha256"] != two["plan_sha256"] and one["branch_head"] != two["branch_head"]


# ---- deploy freeze

def _kust(spec=None, annotations=None):
    return {"metadata": {"name": "aureus-api", "annotations": annotations or {}}, "spec": dict(spec or {})}


@pytest.mark.parametrize("spec", [{}, {"suspend": False}, {"suspend": True}])
def test_freeze_then_thaw_restores_exactly_the_previous_spec(spec):
    obj = _kust(dict(spec, path="./apps/aureus-api"))
    patch = _gitops.flux_freeze_patch(obj, "sre", "rollback", "2026-12-01T00:00:00Z", "INC-1", "2026-11-30T08:00:00Z")
    frozen = _gitops.apply_merge_patch(obj, patch)
    assert frozen["spec"]["suspend"] is True
    record = _gitops.read_record(frozen)
    assert record["who"] == "sre" and record["incident"] == "INC-1" and record["previous"] == spec
    assert _gitops.flux_freeze_patch(frozen, "sre", "again", None, "INC-1", "later") is None  # idempotent
    thawed = _gitops.apply_merge_patch(frozen, _gitops.flux_thaw_patch(frozen))
    assert thawed == obj
    assert _gitops.flux_thaw_patch(thawed) is None  # idempotent


def test_a_record_that_is_not_ours_is_not_guessed_at():
    with pytest.raises(RollbackError, match="not the JSON a freeze writes"):
        _gitops.read_record(_kust(annotations={_gitops.FREEZE_ANNOTATION: "frozen by bob"}))


def test_argocd_freeze_adds_a_deny_window_and_disables_auto_sync_then_thaw_restores_both():
    other_window = {"kind": "allow", "schedule": "0 9 * * *", "duration": "8h", "applications": ["*"]}
    project = {"metadata": {"name": "aureus"}, "spec": {"syncWindows": [other_window]}}
    automated = {"prune": True, "selfHeal": True}
    sync_policy = {"automated": automated, "syncOptions": ["CreateNamespace=true"]}
    app = {"metadata": {"name": "aureus-api"}, "spec": {"syncPolicy": sync_policy}}
    project_patch, app_patch = _gitops.argocd_freeze_patches(project, app, "sre", "rollback", None, "INC-1", "now")
    frozen_project = _gitops.apply_merge_patch(project, project_patch)
    frozen_app = _gitops.apply_merge_patch(app, app_patch)
    deny = frozen_project["spec"]["syncWindows"][-1]
    assert deny["kind"] == "deny" and deny["applications"] == ["aureus-api"] and deny["manualSync"] is False
    assert frozen_project["spec"]["syncWindows"][0] == other_window
    assert "automated" not in frozen_app["spec"]["syncPolicy"]
    assert json.loads(frozen_app["metadata"]["annotations"][_gitops.FREEZE_ANNOTATION])["previous"] == {
        "automated": automated}
    assert _gitops.argocd_freeze_patches(frozen_project, frozen_app, "sre", "x", None, "INC-1", "n") == (None, None)
    thaw_project, thaw_app = _gitops.argocd_thaw_patches(frozen_project, frozen_app)
    thawed_project = dict(project, metadata={"name": "aureus", "annotations": {}})
    assert _gitops.apply_merge_patch(frozen_project, thaw_project) == thawed_project
    thawed_app = dict(app, metadata={"name": "aureus-api", "annotations": {}})
    assert _gitops.apply_merge_patch(frozen_app, thaw_app) == thawed_app
