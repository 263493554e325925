#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: rollout_undo
short_description: Roll a Deployment, StatefulSet or DaemonSet back to an earlier revision, safely
version_added: 0.1.0
author: governed.rollback maintainers (@governed)
description:
  - Does what C(kubectl rollout undo) does, with the same choice of the previous revision, the same template
    replacement and the same annotation merge, and closes its gaps.
  - The history is the ReplicaSets (Deployment) or ControllerRevisions (StatefulSet, DaemonSet) that match the
    workload's full selector and are controlled by it.
  - The default target is kubectl's previous revision (the second-highest), except that revisions this collection
    rolled back B(from) are marked (annotation C(rollback.governed.io/fled-at) on their ReplicaSet or
    ControllerRevision) and skipped, so two rollbacks in a row never re-deploy the version that was fled.
  - The patch carries a C(resourceVersion) precondition, so a change made by someone else between the read and the
    patch makes the task fail cleanly instead of being overwritten.
  - A C(kubernetes.io/change-cause) naming the actor, incident and from/to revisions is written with the patch; the
    controller copies it into the history, so C(kubectl rollout history) shows it.
  - Refuses, changing nothing, a paused Deployment, a workload whose controller has not observed its latest
    generation, a pruned or unknown revision, and a workload owned by Argo CD, Flux or Helm unless
    O(allow_gitops_drift=true).
  - With O(wait=true) waits like C(kubectl rollout status), ignoring a C(ProgressDeadlineExceeded) condition older
    than the patch and failing at once on a fresh one.
  - A Deployment that shows no progress (more updated, ready or available replicas, fewer old ones, or a newer
    progress time recorded by the controller) for longer than its C(spec.progressDeadlineSeconds) fails the wait
    even when the controller has not recorded C(ProgressDeadlineExceeded). After a rollback to an existing ReplicaSet the controller can miss the only sign of
    progress and never record it, and C(kubectl rollout status) then waits until its own timeout.
options:
  kind:
    description: Kind of the workload.
    type: str
    choices: [Deployment, StatefulSet, DaemonSet]
    default: Deployment
  name:
    description: Name of the workload.
    type: str
    required: true
  namespace:
    description: Namespace of the workload.
    type: str
    required: true
  to_revision:
    description:
      - Revision to roll back to, as shown by C(kubectl rollout history).
      - V(0) means the previous revision (kubectl's second-highest), skipping revisions this collection rolled back
        from before.
      - A revision that a re-deploy renumbered (kubectl reuses the ReplicaSet under a new number) is found under its
        new number, so repeating the same O(to_revision) is idempotent.
    type: int
    default: 0
  to_image:
    description:
      - Roll back to the newest revision whose pod template runs this image (exact string match), preferring
        revisions not rolled back from before. Mutually exclusive with a non-zero O(to_revision).
    type: str
  allow_gitops_drift:
    description:
      - Roll back even though the workload is managed by Argo CD, Flux or Helm. The task then warns that the
        GitOps source must be reverted too, or the next sync re-deploys the revision being rolled back.
    type: bool
    default: false
  actor:
    description: Who requested the rollback; recorded in the C(kubernetes.io/change-cause) annotation.
    type: str
  incident_id:
    description: Incident or ticket id; recorded in the C(kubernetes.io/change-cause) annotation.
    type: str
  reason:
    description: Why; recorded (shortened to 200 characters) in the C(kubernetes.io/change-cause) annotation.
    type: str
  wait:
    description:
      - Wait until the rollout is complete (C(kubectl rollout status) semantics) or has failed.
      - When the workload already runs the target revision the task still waits, so a re-run confirms completion.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait before failing the task.
    type: int
    default: 300
  mark_fled:
    description:
      - Mark the revision rolled back from (annotations C(rollback.governed.io/fled-at), C(fled-revision),
        C(fled-by) on its ReplicaSet or ControllerRevision) so that a later O(to_revision=0) skips it.
      - The mark stops applying once that revision is re-deployed.
    type: bool
    default: true
extends_documentation_fragment:
  - governed.rollback.k8s_auth
  - governed.rollback.attributes
  - governed.rollback.attributes.ACTIONGROUP_K8S
attributes:
  check_mode:
    support: full
    details: Sends the same patch as a server-side dry run (admission and validation run, nothing is stored) and
      returns the plan.
  diff_mode:
    support: full
    details: The pod template before and after (secret-looking environment values masked).
  idempotent:
    support: partial
    details:
      - With O(to_revision=N) or O(to_image) a second run finds the workload at the target and reports no change.
      - With O(to_revision=0) every run rolls back one more revision, as C(kubectl rollout undo) does (skipping the
        ones already fled).
notes:
  - RBAC needed - C(get) and C(patch) on the workload; C(list) and C(patch) on C(replicasets) (Deployment) or
    C(controllerrevisions) (StatefulSet, DaemonSet); C(list) on C(pods). Without C(patch) on the history objects
    the rollback still happens, but the fled mark is not written; without C(list) on pods RV(pods) stays empty.
    The task warns in both cases.
  - The replica count and the strategy are never touched, so a HorizontalPodAutoscaler keeps working.
  - Only literal environment values whose name looks secret (password, token, key, ...) are masked in the output.
seealso:
  - name: kubectl rollout undo
    description: The command whose semantics this module follows.
    link: https://kubernetes.io/docs/reference/kubectl/generated/kubectl_rollout/kubectl_rollout_undo/
requirements:
  - kubernetes >= 29.0.0 (Python client)
"""

EXAMPLES = r"""
- name: Roll aureus-frontend back to the previous revision and wait for it
  governed.rollback.rollout_undo:
    namespace: aureus
    name: aureus-frontend
    actor: "{{ requested_by }}"
    incident_id: INC-12345
    reason: Breaking UI changes affecting user workflows
  register: rollback

- name: Plan a rollback to revision 2 without changing anything
  governed.rollback.rollout_undo:
    namespace: aureus
    name: aureus-frontend
    to_revision: 2
  check_mode: true
  register: plan

- name: Roll a DaemonSet back to the revision that ran a known-good image
  governed.rollback.rollout_undo:
    kind: DaemonSet
    namespace: kube-system
    name: node-agent
    to_image: registry.example/node-agent:1.4.2
    wait_timeout: 600
"""

RETURN = r"""
kind:
  description: Kind of the workload.
  returned: always
  type: str
  sample: Deployment
name:
  description: Name of the workload.
  returned: always
  type: str
  sample: aureus-frontend
namespace:
  description: Namespace of the workload.
  returned: always
  type: str
  sample: aureus
selector:
  description: The workload's label selector as a list-call string (matchLabels and matchExpressions), for finding its pods.
  returned: when the workload was read
  type: str
  sample: app=aureus,component=frontend
from_revision:
  description: Revision the workload ran before (the history entry matching its current template).
  returned: when the history was read
  type: int
  sample: 3
to_revision:
  description: Revision rolled back to, numbered as it was before the rollback (the controller renumbers it to
    the next free number afterwards).
  returned: when a target was selected
  type: int
  sample: 2
previous_revision:
  description: What O(to_revision=0) would select (kubectl's previous revision minus the fled ones), or null.
  returned: when a target was selected
  type: int
  sample: 2
target_is_previous:
  description: Whether the target is the previous revision (for approval rules that treat it differently).
  returned: when a target was selected
  type: bool
  sample: true
selected_by:
  description: How the target was chosen.
  returned: when a target was selected
  type: str
  sample: previous revision (second-highest)
from_images:
  description: Container images (init containers excluded) of the revision rolled back from, in container order.
  returned: when a target was selected
  type: list
  elements: str
  sample: [aureus/frontend:v0.1.2]
to_images:
  description: Container images (init containers excluded) of the target revision, in container order.
  returned: when a target was selected
  type: list
  elements: str
  sample: [aureus/frontend:v0.1.1]
from_template_sha256:
  description:
    - SHA-256 of the normalized current pod template (canonical JSON, without C(pod-template-hash)), computed after
      masking secret-looking literal environment values, so no secret is ever hashed.
  returned: when a target was selected
  type: str
to_template_sha256:
  description: SHA-256 of the normalized target pod template, computed like RV(from_template_sha256).
  returned: when a target was selected
  type: str
from_replicaset:
  description: ReplicaSet (Deployment) or ControllerRevision (StatefulSet, DaemonSet) of the current revision.
  returned: when a target was selected
  type: str
  sample: aureus-frontend-7d9f8c6b5
to_replicaset:
  description: ReplicaSet (Deployment) or ControllerRevision (StatefulSet, DaemonSet) of the target revision.
  returned: when a target was selected
  type: str
  sample: aureus-frontend-5c6d7f8d9
history:
  description: The owned revisions, oldest first.
  returned: when the history was read
  type: list
  elements: dict
  contains:
    revision:
      description: Revision number.
      type: int
    name:
      description: ReplicaSet or ControllerRevision name.
      type: str
    images:
      description: Container images.
      type: list
      elements: str
    change_cause:
      description: Its C(kubernetes.io/change-cause), if any.
      type: str
    fled_at:
      description: When this collection rolled back away from it, if that mark still applies.
      type: str
    previous_revisions:
      description: Numbers it had before being re-deployed.
      type: list
      elements: int
    template_sha256:
      description: Digest of its normalized template.
      type: str
patch:
  description:
    - The patch body sent (JSON patch for a Deployment, strategic-merge patch for a StatefulSet or DaemonSet),
      with secret-looking literal environment values masked. Null when nothing needed to change.
  returned: when a target was selected
  type: raw
patch_type:
  description: C(json) or C(strategic-merge).
  returned: when a target was selected
  type: str
change_cause:
  description: The C(kubernetes.io/change-cause) written with the patch.
  returned: when a patch was built
  type: str
plan:
  description: What the rollback does (check mode) - from/to revisions and images, how the target was chosen, the
    template changes, the change-cause, GitOps owners and the history.
  returned: in check mode
  type: dict
skipped_reason:
  description: Why nothing was changed (the workload already runs the target template).
  returned: when nothing needed to change
  type: str
  sample: "skipped rollback: the current template of deployment aureus/aureus-frontend already matches revision 4"
refused:
  description: The rule that refused the rollback (nothing changed) - C(not_found), C(unsupported_kind), C(paused),
    C(generation_not_observed), C(no_history), C(revision_not_found), C(revision_pruned), C(image_not_found),
    C(all_fled), C(bad_revision), C(gitops_owned), C(forbidden), C(conflict).
  returned: on refusal
  type: str
  sample: revision_pruned
available_revisions:
  description: The revision numbers in the history, on a refusal about the target.
  returned: on refusal about the target
  type: list
  elements: int
gitops_owners:
  description: GitOps / Helm ownership evidence found on the workload (C(tool), C(where), C(key), C(value)).
  returned: always
  type: list
  elements: dict
rollback_warnings:
  description: The warnings of this task (also shown as Ansible warnings), for evidence and receipts.
  returned: always
  type: list
  elements: str
pods:
  description:
    - The workload's live pods (terminating ones excluded) read after the wait (or right after the patch with
      O(wait=false)), for verification - every Ready pod should run RV(to_images) and none should belong to
      RV(from_revision).
    - Empty in check mode, on refusal, and when the pods may not be listed (the task then warns).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Pod name.
      type: str
    ready:
      description: Whether the pod's Ready condition is true.
      type: bool
    phase:
      description: Pod phase.
      type: str
    images:
      description: Container images in container order (init containers excluded).
      type: list
      elements: str
    image_ids:
      description: The runtime's image IDs (digests) from the container statuses, in status order.
      type: list
      elements: str
    revision:
      description: History revision (number after the rollback's renumbering) the pod belongs to, or null.
      type: int
    node:
      description: Node the pod is scheduled to.
      type: str
fled_marked:
  description: Name of the ReplicaSet or ControllerRevision marked as fled, or null.
  returned: success
  type: str
wait:
  description: Result of waiting for the rollout.
  returned: always
  type: dict
  contains:
    done:
      description: Whether the rollout completed.
      type: bool
    state:
      description: C(done), C(failed), C(timeout), C(deleted), or C(not_requested).
      type: str
    reason:
      description: kubectl-style status message.
      type: str
    elapsed_seconds:
      description: Seconds spent waiting.
      type: float
timings:
  description: Seconds spent reading, patching, waiting, and in total.
  returned: always
  type: dict
  sample: {read: 0.031, patch: 0.024, wait: 6.52, total: 6.58}
resource_version_before:
  description: resourceVersion of the workload when it was read.
  returned: when the workload was read
  type: str
resource_version_after:
  description: resourceVersion returned by the patch (unchanged in check mode or when nothing changed).
  returned: when the workload was read
  type: str
"""

import datetime
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.governed.rollback.plugins.module_utils._k8s import (
    FIELD_MANAGER, K8S_AUTH_ARG_SPEC, ApiException, K8sError, KubeRest, build_api_client, explain_api_exception,
    require_k8s,
)
from ansible_collections.governed.rollback.plugins.module_utils._revisions import (
    RollbackRefused, check_kind, describe, fled_marks, mask_patch, mask_template, normalize_template,
    plan_rollback, pod_summaries, renumber_marks, selector_to_string, build_history, CHANGE_CAUSE_ANNOTATION,
)
from ansible_collections.governed.rollback.plugins.module_utils._rollout import (
    FAILED, WaitResult, patch_time, wait_for_rollout,
)

# kind -> (plural resource for messages, history kind, history resource for messages)
KINDS = {
    "Deployment": ("deployments.apps", "ReplicaSet", "replicasets.apps"),
    "StatefulSet": ("statefulsets.apps", "ControllerRevision", "controllerrevisions.apps"),
    "DaemonSet": ("daemonsets.apps", "ControllerRevision", "controllerrevisions.apps"),
}
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"


def _call(what, verb, resource, namespace, name, method, *args, **kwargs):
    """One API call returning the decoded JSON; API errors become RollbackRefused (403/404) or K8sError."""
    try:
        return method(*args, **kwargs)
    except ApiException as exc:
        error = explain_api_exception(exc, verb, resource, namespace, name)
        if error.status == 403:
            raise RollbackRefused(error.msg, "forbidden")
        if error.status == 404 and verb == "get":
            raise RollbackRefused("%s not found; check the name, namespace and kind (kubectl get %s -n %s)"
                                  % (what, resource.split(".")[0], namespace), "not_found")
        raise error


def read_workload(api, kind, namespace, name):
    return _call(describe(kind, namespace, name), "get", KINDS[kind][0], namespace, name, api.get, kind, namespace,
                 name)


def read_history(api, kind, workload):
    """The raw history objects: listed with the workload's full selector (ownership is checked by the planner)."""
    meta = workload["metadata"]
    history_kind, resource = KINDS[kind][1], KINDS[kind][2]
    selector = selector_to_string((workload.get("spec") or {}).get("selector"))
    listing = _call(describe(kind, meta["namespace"], meta["name"]), "list", resource, meta["namespace"], None,
                    api.list_page, history_kind, meta["namespace"], [("labelSelector", selector)])
    return listing.get("items") or []


def read_state(api, kind, namespace, name):
    """Read the workload and its history: everything the plan is computed from."""
    workload = read_workload(api, kind, namespace, name)
    return workload, read_history(api, kind, workload)


def observe_pods(api, kind, namespace, name):
    """After the rollout: the workload's live pods, mapped to the (re-read, renumbered) history."""
    workload, history_items = read_state(api, kind, namespace, name)
    selector = selector_to_string((workload.get("spec") or {}).get("selector"))
    listing = _call(describe(kind, namespace, name), "list", "pods", namespace, None,
                    api.list_page, "Pod", namespace, [("labelSelector", selector)])
    history = build_history(kind, workload, history_items)
    return pod_summaries(kind, workload, history, listing.get("items") or [])


def _changed_since_read(api, plan, error):
    """Whether a refused patch failed on our resourceVersion precondition.

    A strategic-merge precondition fails with 409; a failed JSON-patch ``test`` comes back as a bare 422 ("the
    server rejected our request"), so the workload is re-read to tell a concurrent change from an invalid patch.
    """
    if error.status == 409:
        return True
    if error.status != 422:
        return False
    try:
        now = read_workload(api, plan.kind, plan.namespace, plan.name)
    except (RollbackRefused, K8sError):
        return False
    return now["metadata"].get("resourceVersion") != plan.resource_version


def send_patch(api, plan, dry_run=False):
    """Apply (or dry-run) the plan's patch; a concurrent change since the read is refused as a conflict."""
    content_type = JSON_PATCH if plan.kind == "Deployment" else STRATEGIC_MERGE_PATCH
    try:
        return _call(plan.what, "patch", KINDS[plan.kind][0], plan.namespace, plan.name, api.patch, plan.kind,
                     plan.namespace, plan.name, plan.patch, content_type, dry_run=dry_run)
    except K8sError as error:
        if _changed_since_read(api, plan, error):
            raise RollbackRefused(
                "conflict: %s changed after it was read (resourceVersion %s) and before the rollback patch; nothing "
                "was overwritten and nothing changed. Find out who changed it, then re-run to re-read and re-plan"
                % (plan.what, plan.resource_version), "conflict")
        raise


def annotate_history(api, kind, namespace, name, annotations):
    """Merge-patch annotations onto a ReplicaSet or ControllerRevision (bookkeeping, never the rollback itself)."""
    history_kind, resource = KINDS[kind][1], KINDS[kind][2]
    return _call("%s %s/%s" % (resource, namespace, name), "patch", resource, namespace, name, api.patch,
                 history_kind, namespace, name, {"metadata": {"annotations": annotations}}, MERGE_PATCH)


def fetcher(api, kind, namespace, name):
    """fetch() for the wait loop: the workload, or None once it is gone."""

    def fetch():
        try:
            return read_workload(api, kind, namespace, name)
        except RollbackRefused as refused:
            if refused.code == "not_found":
                return None
            raise

    return fetch


def _utc_stamp(when):
    when = when or datetime.datetime.now(datetime.timezone.utc)
    return when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def bookkeeping(api, plan, patched, params):
    """Mark the revision fled and, for ControllerRevisions, keep the old number and change-cause on the target."""
    warnings = []
    marked = None
    when = _utc_stamp(patch_time(patched, FIELD_MANAGER))
    if params["mark_fled"] and plan.current is not None and plan.current is not plan.target:
        try:
            annotate_history(api, plan.kind, plan.namespace, plan.current.name,
                             fled_marks(plan.current, when, params.get("actor"), params.get("incident_id")))
            marked = plan.current.name
        except (RollbackRefused, K8sError) as error:
            warnings.append("the rollback succeeded but revision %d (%s) could not be marked as fled, so a later "
                            "to_revision=0 may pick it again: %s"
                            % (plan.current.number, plan.current.name, getattr(error, "msg", error)))
    if plan.kind != "Deployment":
        marks = renumber_marks(plan.target)
        marks[CHANGE_CAUSE_ANNOTATION] = plan.change_cause
        try:
            annotate_history(api, plan.kind, plan.namespace, plan.target.name, marks)
        except (RollbackRefused, K8sError) as error:
            warnings.append("could not record the change-cause on %s: %s" % (plan.target.name,
                                                                             getattr(error, "msg", error)))
    return marked, warnings


class Outcome(object):
    """The result being built, its timings, and (on failure) the message."""

    def __init__(self, kind, namespace, name):
        self.started = time.monotonic()
        self.timings = {"read": 0.0, "patch": 0.0, "wait": 0.0, "total": 0.0}
        self.failed_msg = None
        self.result = {"changed": False, "kind": kind, "name": name, "namespace": namespace, "patch": None,
                       "skipped_reason": None, "gitops_owners": [], "rollback_warnings": [], "pods": [],
                       "timings": self.timings,
                       "wait": {"done": False, "state": "not_requested", "reason": "not waited",
                                "elapsed_seconds": 0.0}}

    def fail(self, msg, **extra):
        self.failed_msg = msg
        self.result.update(extra)
        return self

    def close(self):
        self.timings["total"] = time.monotonic() - self.started
        for key in self.timings:
            self.timings[key] = round(self.timings[key], 3)
        return self


def _wait(api, plan, params, outcome, patched_at=None, uid=None):
    started = time.monotonic()
    try:
        waited = wait_for_rollout(fetcher(api, plan.kind, plan.namespace, plan.name), plan.kind,
                                  params["wait_timeout"], patched_at=patched_at, uid=uid)
    except (RollbackRefused, K8sError) as error:
        waited = WaitResult(FAILED, "could not read %s while waiting: %s" % (plan.what, getattr(error, "msg", error)),
                            time.monotonic() - started)
    outcome.timings["wait"] = waited.elapsed_seconds
    outcome.result["wait"] = waited.as_dict()
    return waited


def _observe(api, plan, outcome):
    try:
        outcome.result["pods"] = observe_pods(api, plan.kind, plan.namespace, plan.name)
    except (RollbackRefused, K8sError) as error:
        outcome.result["rollback_warnings"].append("could not list the pods of %s after the rollout: %s"
                                                   % (plan.what, getattr(error, "msg", error)))


def _diff(plan, workload):
    return {
        "before_header": "%s revision %s" % (plan.what, plan.current.number if plan.current else "?"),
        "after_header": "%s revision %s" % (plan.what, plan.target.number),
        "before": mask_template(normalize_template((workload.get("spec") or {}).get("template"))),
        "after": mask_template(normalize_template(plan.target.template)),
    }


def execute(api, params, check_mode=False, diff=False):
    """Read, plan, patch (or dry-run), mark, wait. Returns an Outcome; never raises for API or plan problems."""
    kind, namespace, name = params["kind"], params["namespace"], params["name"]
    outcome = Outcome(kind, namespace, name)
    result = outcome.result
    try:
        check_kind(kind)
        workload, items = read_state(api, kind, namespace, name)
        outcome.timings["read"] = time.monotonic() - outcome.started
        result["resource_version_before"] = result["resource_version_after"] = workload["metadata"]["resourceVersion"]
        result["selector"] = selector_to_string((workload.get("spec") or {}).get("selector") or {})
        plan = plan_rollback(kind, workload, items, params["to_revision"], params.get("to_image"),
                             params.get("allow_gitops_drift"), params.get("actor"), params.get("incident_id"),
                             params.get("reason"))
    except RollbackRefused as refused:
        return outcome.fail(refused.msg, refused=refused.code, **refused.details).close()
    except K8sError as error:
        return outcome.fail(error.msg).close()

    result.update(plan.summary())
    result.update(history=[r.summary() for r in plan.history], gitops_owners=plan.owners,
                  rollback_warnings=list(plan.warnings), patch_type=plan.patch_type)
    if diff:
        result["diff"] = _diff(plan, workload)
    if check_mode:
        result["plan"] = plan.plan()

    if plan.skipped_reason:
        result["skipped_reason"] = plan.skipped_reason
        if params["wait"] and not check_mode:
            waited = _wait(api, plan, params, outcome, uid=workload["metadata"].get("uid"))
            if not waited.done:
                outcome.fail("%s already runs revision %d, but its rollout is not complete: %s"
                             % (plan.what, plan.target.number, waited.reason))
        if not check_mode:
            _observe(api, plan, outcome)
        return outcome.close()

    result["patch"] = mask_patch(kind, plan.patch)
    result["change_cause"] = plan.change_cause
    patch_started = time.monotonic()
    try:
        patched = send_patch(api, plan, dry_run=check_mode)
    except RollbackRefused as refused:
        return outcome.fail(refused.msg, refused=refused.code).close()
    except K8sError as error:
        return outcome.fail("rollback of %s to revision %d failed, nothing was changed: %s"
                            % (plan.what, plan.target.number, error.msg)).close()
    finally:
        outcome.timings["patch"] = time.monotonic() - patch_started
    result["changed"] = True
    if check_mode:
        result["plan"]["dry_run"] = "accepted by the API server (dryRun=All); nothing was stored"
        return outcome.close()

    result["resource_version_after"] = patched["metadata"]["resourceVersion"]
    result["fled_marked"], warnings = bookkeeping(api, plan, patched, params)
    result["rollback_warnings"].extend(warnings)
    outcome.timings["patch"] = time.monotonic() - patch_started

    if params["wait"]:
        waited = _wait(api, plan, params, outcome, patch_time(patched, FIELD_MANAGER),
                       patched["metadata"].get("uid"))
        if not waited.done:
            outcome.fail("%s was rolled back from revision %s to %d, but the rollout did not complete (%s): %s"
                         % (plan.what, plan.current.number if plan.current else "?", plan.target.number,
                            waited.state, waited.reason))
    _observe(api, plan, outcome)
    return outcome.close()


def main():
    argument_spec = dict(
        kind=dict(type="str", default="Deployment", choices=["Deployment", "StatefulSet", "DaemonSet"]),
        name=dict(type="str", required=True),
        namespace=dict(type="str", required=True),
        to_revision=dict(type="int", default=0),
        to_image=dict(type="str"),
        allow_gitops_drift=dict(type="bool", default=False),
        actor=dict(type="str"),
        incident_id=dict(type="str"),
        reason=dict(type="str"),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=300),
        mark_fled=dict(type="bool", default=True),
    )
    argument_spec.update(K8S_AUTH_ARG_SPEC)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    require_k8s(module)
    try:
        api = KubeRest(build_api_client(module.params))
    except K8sError as error:
        module.fail_json(msg=error.msg)
    outcome = execute(api, module.params, module.check_mode, module._diff)
    for warning in outcome.result["rollback_warnings"]:
        module.warn(warning)
    if outcome.failed_msg:
        module.fail_json(msg=outcome.failed_msg, **outcome.result)
    module.exit_json(**outcome.result)


if __name__ == "__main__":
    main()
