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
  wait:
    description:
      - Wait until the rollout is complete (C(kubectl rollout status) semantics) or has failed.
      - When the workload already runs the target revision the task still waits, so a re-run confirms completion.
  expected_binding:
    description:
      - The RV(binding) of an earlier check-mode plan, i.e. what was approved.
      - The rollback is refused, changing nothing, when a fresh read no longer matches it (someone deployed, scaled
        a new template or rolled back in between), so the rollback done is the one approved. Only the given keys
        are compared.
    type: dict
  mark_fled:
    description:
      - Mark the revision rolled back from (annotations C(rollback.governed.io/fled-at), C(fled-revision),
        C(fled-by) on its ReplicaSet or ControllerRevision) so that a later O(to_revision=0) skips it.
      - The mark stops applying once that revision is re-deployed.
    type: bool
    default: true
extends_documentation_fragment:
  - governed.rollback.k8s_auth
  - governed.rollback.runbook_context
  - governed.rollback.wait
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
from_ref:
  description: The plan contract's from reference - digest of the pod template the workload ran before.
  returned: when a target was selected
  type: str
  sample: sha256:6f1e0b0c2b0c5cf5bb6e86a1b5c1fb9d0e8a3a4e7d6c5b4a39281706f5e4d3c2
to_ref:
  description: The plan contract's to reference - digest of the target revision's pod template.
  returned: when a target was selected
  type: str
  sample: sha256:0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9
approval_facts:
  description:
    - What M(governed.rollback.rollback_approval) needs to pick the matrix row (its O(governed.rollback.rollback_approval#module:approval_facts)).
    - C(to_revision) and C(previous_revision); equal means a rollback to the last good version.
  returned: when a target was selected
  type: dict
  sample: {"to_revision": 2, "previous_revision": 2}
binding:
  description:
    - What an approval of this plan is for - C(uid), C(generation), C(from_revision), C(from_template_sha256),
      C(to_revision), C(to_template_sha256). Pass it back as O(expected_binding) on the real run.
  returned: when a target was selected
  type: dict
receipt_fields:
  description:
    - The deployment's receipt fields (C(component), C(changed_surfaces), C(current_ref), C(rollback_target_ref),
      C(from_version), C(to_version), C(details)), for M(governed.rollback.rollback_receipt).
    - After a stored rollback C(details) also holds C(rollout_seconds) and C(patch_accepted_at), the moment of
      mitigation, as the other types' receipts hold theirs.
  returned: when a target was selected
  type: dict
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
      as redacted for output (like RV(plan), RV(history) and the diff) - secret-looking literal environment values,
      secret flags in C(command)/C(args) (C(--password X), C(-pX), C(-u user:pw)), URL credentials and secret
      assignments masked. Null when nothing needed to change.
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
    C(all_fled), C(bad_revision), C(gitops_owned), C(forbidden), C(conflict), C(changed_since_approved).
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
patch_accepted_at:
  description:
    - When the API server's answer accepting the rollback patch arrived (RFC 3339 UTC, microseconds) - the moment
      of mitigation for timelines and for measuring the time from the command's start to the rollback.
  returned: when the rollback patch was stored (not in check mode)
  type: str
  sample: "2026-11-30T15:04:05.123456Z"
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.governed.rollback.plugins.module_utils import _argspec, _workload
from ansible_collections.governed.rollback.plugins.module_utils._common import (
    Refused, check_binding, fail_from_exception, utc_stamp, utc_stamp_micro,
)
from ansible_collections.governed.rollback.plugins.module_utils._k8s import (
    FIELD_MANAGER, K8sError, KubeRest, build_api_client, require_k8s,
)
from ansible_collections.governed.rollback.plugins.module_utils._k8s_objects import selector_to_string
from ansible_collections.governed.rollback.plugins.module_utils._redact import redact_text, redact_value
from ansible_collections.governed.rollback.plugins.module_utils._revisions import (
    CHANGE_CAUSE_ANNOTATION, SUPPORTED_KINDS, check_kind, fled_marks, mask_patch, mask_template, normalize_template,
    plan_rollback, renumber_marks,
)
from ansible_collections.governed.rollback.plugins.module_utils._rollout import patch_time


def send_patch(api, plan, dry_run=False):
    """Apply (or dry-run) the plan's patch; a concurrent change since the read is refused as a conflict."""
    content_type = _workload.JSON_PATCH if plan.kind == "Deployment" else _workload.STRATEGIC_MERGE_PATCH
    return _workload.patch_workload(api, plan.kind, plan.namespace, plan.name, plan.patch, content_type,
                                    plan.resource_version, "the rollback patch", dry_run=dry_run)


def bookkeeping(api, plan, patched, params):
    """Mark the revision fled and, for ControllerRevisions, keep the old number and change-cause on the target."""
    warnings = []
    marked = None
    when = utc_stamp(patch_time(patched, FIELD_MANAGER))
    if params["mark_fled"] and plan.current is not None and plan.current is not plan.target:
        try:
            _workload.annotate_history(api, plan.kind, plan.namespace, plan.current.name,
                                       fled_marks(plan.current, when, params.get("actor"), params.get("incident_id")))
            marked = plan.current.name
        except (Refused, K8sError) as error:
            warnings.append("the rollback succeeded but revision %d (%s) could not be marked as fled, so a later "
                            "to_revision=0 may pick it again: %s"
                            % (plan.current.number, plan.current.name, getattr(error, "msg", error)))
    if plan.kind != "Deployment":
        marks = renumber_marks(plan.target)
        marks[CHANGE_CAUSE_ANNOTATION] = plan.change_cause
        try:
            _workload.annotate_history(api, plan.kind, plan.namespace, plan.target.name, marks)
        except (Refused, K8sError) as error:
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

    # Every value that shows templates, annotations or free text leaves the module through the same redaction
    # as the evidence pack (env values, secret flags in command/args, URL credentials, assignments).
    REDACTED_KEYS = ("patch", "plan", "diff", "history", "change_cause", "rollback_warnings")

    def close(self):
        self.timings["total"] = time.monotonic() - self.started
        for key in self.timings:
            self.timings[key] = round(self.timings[key], 3)
        for key in self.REDACTED_KEYS:
            if self.result.get(key) is not None:
                self.result[key] = redact_value(self.result[key])
        if self.failed_msg:
            self.failed_msg = redact_text(self.failed_msg)
        return self


def _wait(api, plan, params, outcome, patched_at=None, uid=None):
    waited = _workload.wait(api, plan.kind, plan.namespace, plan.name, params["wait_timeout"], patched_at, uid)
    outcome.timings["wait"] = waited.elapsed_seconds
    outcome.result["wait"] = waited.as_dict()
    return waited


def _observe(api, plan, outcome):
    try:
        outcome.result["pods"] = _workload.observe_pods(api, plan.kind, plan.namespace, plan.name)
    except (Refused, K8sError) as error:
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
        workload, items = _workload.read_state(api, kind, namespace, name)
        outcome.timings["read"] = time.monotonic() - outcome.started
        result["resource_version_before"] = result["resource_version_after"] = workload["metadata"]["resourceVersion"]
        result["selector"] = selector_to_string((workload.get("spec") or {}).get("selector") or {})
        plan = plan_rollback(kind, workload, items, params["to_revision"], params.get("to_image"),
                             params.get("allow_gitops_drift"), params.get("actor"), params.get("incident_id"),
                             params.get("reason"))
    except Refused as refused:
        return outcome.fail(refused.msg, refused=refused.code, **refused.details).close()
    except K8sError as error:
        return outcome.fail(error.msg).close()

    result.update(plan.summary())
    result.update(plan.contract())
    try:
        check_binding(plan.what, params.get("expected_binding"), plan.binding())
    except Refused as refused:
        return outcome.fail(refused.msg, refused=refused.code).close()
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
    except Refused as refused:
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

    result["patch_accepted_at"] = utc_stamp_micro()
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


def argument_spec():
    return _argspec.compose(dict(
        kind=dict(type="str", default="Deployment", choices=list(SUPPORTED_KINDS)),
        name=dict(type="str", required=True),
        namespace=dict(type="str", required=True),
        to_revision=dict(type="int", default=0),
        to_image=dict(type="str"),
        allow_gitops_drift=dict(type="bool", default=False),
        expected_binding=dict(type="dict"),
        mark_fled=dict(type="bool", default=True),
    ), _argspec.K8S_AUTH, _argspec.RUNBOOK_CONTEXT, _argspec.WAIT)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    require_k8s(module)
    try:
        api = KubeRest(build_api_client(module.params))
        outcome = execute(api, module.params, module.check_mode, module._diff)
    except Exception as exc:  # pylint: disable=broad-except  # anything unforeseen still ends in fail_json
        fail_from_exception(module, exc, changed=False)
    if "receipt_fields" in outcome.result and not module.check_mode:
        details = outcome.result["receipt_fields"]["details"]
        details["rollout_seconds"] = outcome.result["wait"]["elapsed_seconds"]
        if "patch_accepted_at" in outcome.result:
            details["patch_accepted_at"] = outcome.result["patch_accepted_at"]
    for warning in outcome.result["rollback_warnings"]:
        module.warn(warning)
    if outcome.failed_msg:
        module.fail_json(msg=outcome.failed_msg, **outcome.result)
    module.exit_json(**outcome.result)


if __name__ == "__main__":
    main()
