# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Revision history of Deployments, StatefulSets and DaemonSets, and rollback planning.

Pure functions over the plain JSON dicts the API server returns: no client, no I/O.
The semantics follow ``kubectl rollout undo`` (history from owned ReplicaSets or
ControllerRevisions, second-highest revision as the default target, template equality
ignoring ``pod-template-hash``, the annotation skip-list merge) and improve on it where
it is unsafe: revisions this collection rolled back *from* are skipped by default, the
patch carries a resourceVersion precondition, and GitOps-owned workloads are refused.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import hashlib
import re
from dataclasses import dataclass, field

from ansible_collections.governed.rollback.plugins.module_utils._common import Refused, canonical_json
from ansible_collections.governed.rollback.plugins.module_utils._k8s_objects import (
    check_gitops, describe, is_controlled_by, selector_matches,
)
from ansible_collections.governed.rollback.plugins.module_utils._redact import mask_env, redact_value, redacted_marker

SUPPORTED_KINDS = ("Deployment", "StatefulSet", "DaemonSet")

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
REVISION_HISTORY_ANNOTATION = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS_ANNOTATION = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS_ANNOTATION = "deployment.kubernetes.io/max-replicas"
DEPRECATED_ROLLBACK_TO_ANNOTATION = "deprecated.deployment.rollback.to"
LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"
CHANGE_CAUSE_ANNOTATION = "kubernetes.io/change-cause"
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"

# Our own bookkeeping on ReplicaSets / ControllerRevisions.
GOVERNED_PREFIX = "rollback.governed.io/"
FLED_AT_ANNOTATION = GOVERNED_PREFIX + "fled-at"
FLED_REVISION_ANNOTATION = GOVERNED_PREFIX + "fled-revision"
FLED_BY_ANNOTATION = GOVERNED_PREFIX + "fled-by"
PREVIOUS_REVISIONS_ANNOTATION = GOVERNED_PREFIX + "previous-revisions"

# kubectl keeps these from the Deployment and never copies them from the ReplicaSet.
KUBECTL_ANNOTATIONS_TO_SKIP = frozenset([
    LAST_APPLIED_ANNOTATION,
    REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
    DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
    DEPRECATED_ROLLBACK_TO_ANNOTATION,
])

MAX_CHANGE_CAUSE_REASON = 200

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
# Objects nested deeper than this are refused before any recursive walk (no Kubernetes object comes close).
MAX_OBJECT_DEPTH = 100


def check_kind(kind):
    if kind not in SUPPORTED_KINDS:
        raise Refused("kind %s cannot be rolled back; supported kinds: %s" % (kind, ", ".join(SUPPORTED_KINDS)),
                      "unsupported_kind")


# --- templates --------------------------------------------------------------------------------------------------


def _drop_none(value):
    if isinstance(value, dict):
        return dict((k, _drop_none(v)) for k, v in value.items() if v is not None)
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def normalize_template(template):
    """A pod template as kubectl compares it: nulls dropped, ``pod-template-hash`` removed, ``$patch`` removed."""
    result = _drop_none(copy.deepcopy(template or {}))
    result.pop("$patch", None)
    metadata = result.get("metadata")
    if isinstance(metadata, dict):
        labels = metadata.get("labels")
        if isinstance(labels, dict):
            labels.pop(POD_TEMPLATE_HASH_LABEL, None)
            if not labels:
                metadata.pop("labels")
        if not metadata.get("annotations") and "annotations" in metadata:
            metadata.pop("annotations")
    return result


def templates_equal(left, right):
    """kubectl's equalIgnoreHash: semantic equality ignoring the ``pod-template-hash`` label."""
    return normalize_template(left) == normalize_template(right)


def _digest_form(template):
    """The template as hashed: secret-looking env literals masked (size kept), everything else as is, so the
    digest still changes when an argument or a literal changes. Kept apart from mask_template (output) so that
    digests recorded by earlier runs stay comparable."""
    result = copy.deepcopy(template)
    spec = (result or {}).get("spec") or {}
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for container in _dicts(spec.get(group)):
            if "env" in container:
                container["env"] = mask_env(container["env"])
    return result


def template_sha256(template):
    """Digest of the normalized template, with secret-looking env literals masked first (never hash a secret)."""
    return hashlib.sha256(canonical_json(_digest_form(normalize_template(template))).encode("utf-8")).hexdigest()


def _dicts(value):
    """The dict items of a list (hostile input may hold anything else)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def images_of(template):
    """Container images of a pod template (or a pod), in container order (init containers excluded)."""
    spec = _spec_of(template)
    return [c.get("image") for c in _dicts(spec.get("containers"))]


def _spec_of(template):
    spec = template.get("spec") if isinstance(template, dict) else None
    return spec if isinstance(spec, dict) else {}


def all_images_of(template):
    spec = _spec_of(template)
    return [c.get("image") for c in _dicts(spec.get("initContainers")) + _dicts(spec.get("containers"))]


def mask_template(template):
    """Copy of a template as it may appear in output: the collection's one redaction (_redact.redact_value):
    secret-looking env values, secret flags in command/args (--password X, -pX, -u user:pw), URL credentials,
    secret keys and assignments in any string."""
    return redact_value(template)


def template_changes(before, after, path=""):
    """Flat list of ``{path, before, after}`` differences between two (normalized) templates."""
    changes = []
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after)):
            sub = "%s.%s" % (path, key) if path else key
            changes.extend(template_changes(before.get(key), after.get(key), sub))
    elif isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for index, (left, right) in enumerate(zip(before, after)):
            changes.extend(template_changes(left, right, "%s[%d]" % (path, index)))
    elif before != after:
        changes.append({"path": path, "before": before, "after": after})
    return changes


# --- history ----------------------------------------------------------------------------------------------------


_GO_INT_RE = re.compile(r"[+-]?[0-9]+\Z")


def parse_go_int64(text):
    """An annotation value as Go's ``strconv.ParseInt(s, 10, 64)`` reads it, or None where Go returns an error.

    Go accepts an optional sign and ASCII digits only (leading zeros allowed); it rejects spaces, underscores
    (only base 0 allows them), other Unicode digits, an empty string and values outside int64. A value that
    is not a string (a bool, a number: impossible in annotations from the API) is refused too.
    """
    if not isinstance(text, str) or len(text) > 4096 or not _GO_INT_RE.match(text):
        return None
    digits = text.lstrip("+-").lstrip("0")
    if len(digits) > 19:
        return None
    value = int(text)
    return value if INT64_MIN <= value <= INT64_MAX else None


def _int_or_none(value):
    return parse_go_int64(value)


def _int_list(text):
    if not isinstance(text, str):
        return []
    return [n for n in (parse_go_int64(part.strip()) for part in text.split(",")[:1000]) if n is not None]


def _as_int(value, default=0):
    """An integer field of an API object (generation, replicas, partition), tolerating hostile types."""
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return value


def controller_revision_number(value):
    """A ControllerRevision's ``revision`` (int64 in the API); None when it is not one (bool, text, float)."""
    if isinstance(value, bool) or not isinstance(value, int) or not INT64_MIN <= value <= INT64_MAX:
        return None
    return value


def object_depth_exceeds(value, limit=MAX_OBJECT_DEPTH):
    """True when dicts/lists nest deeper than ``limit`` (iterative: never a RecursionError)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


@dataclass
class Revision:
    """One entry of a workload's rollout history (a ReplicaSet or a ControllerRevision)."""

    number: int
    name: str
    source_kind: str
    template: dict
    annotations: dict = field(default_factory=dict)
    uid: str = ""
    created: str = ""
    replicas: int = 0
    previous_numbers: list = field(default_factory=list)
    data: dict = None

    @property
    def images(self):
        return images_of(self.template)

    @property
    def change_cause(self):
        return self.annotations.get(CHANGE_CAUSE_ANNOTATION)

    @property
    def fled_at(self):
        """When this collection rolled back away from this revision, while the mark still applies.

        A mark is stale once the revision has been re-deployed since (the controller then renumbers it), so a
        version that was later restored and ran fine is not skipped forever.
        """
        when = self.annotations.get(FLED_AT_ANNOTATION)
        if not when:
            return None
        fled_number = _int_or_none(self.annotations.get(FLED_REVISION_ANNOTATION))
        if fled_number is not None and fled_number != self.number:
            return None
        return when

    @property
    def sha256(self):
        return template_sha256(self.template)

    def summary(self):
        return {
            "revision": self.number,
            "name": self.name,
            "kind": self.source_kind,
            "images": self.images,
            "change_cause": self.change_cause,
            "created": self.created,
            "replicas": self.replicas,
            "previous_revisions": list(self.previous_numbers),
            "fled_at": self.fled_at,
            "template_sha256": self.sha256,
        }


def _owned(workload, items):
    """(item, metadata, annotations) for the items matching the workload's selector and controlled by it."""
    selector = (workload.get("spec") or {}).get("selector")
    for item in items:
        meta = item.get("metadata") or {}
        if is_controlled_by(item, workload) and selector_matches(selector, meta.get("labels")):
            yield item, meta, meta.get("annotations") or {}


def deployment_history(deployment, replicasets):
    """History of a Deployment: ReplicaSets matched by its full selector and controlled by it, oldest first.

    Like kubectl and the Deployment controller (``deploymentutil.Revision``: a missing annotation is 0, an error
    from ``strconv.ParseInt(v, 10, 64)`` makes the controller skip the ReplicaSet), a ReplicaSet without a
    revision annotation counts as revision 0 and one Go cannot parse (" 3 ", "3_000", "+", non-ASCII digits,
    beyond int64) is skipped.
    """
    history = []
    for rs, meta, annotations in _owned(deployment, replicasets):
        raw = annotations.get(REVISION_ANNOTATION)
        number = 0 if raw is None else parse_go_int64(raw)
        if number is None:
            continue
        history.append(Revision(
            number=number, name=meta.get("name", ""), source_kind="ReplicaSet",
            template=(rs.get("spec") or {}).get("template") or {}, annotations=annotations,
            uid=meta.get("uid", ""), created=meta.get("creationTimestamp", ""),
            replicas=_as_int((rs.get("status") or {}).get("replicas", 0)),
            previous_numbers=_int_list(annotations.get(REVISION_HISTORY_ANNOTATION)),
        ))
    return sorted(history, key=lambda r: (r.number, r.created))


def controller_revision_history(workload, controller_revisions):
    """History of a StatefulSet or DaemonSet: its controlled ControllerRevisions, oldest first.

    ``revision`` is an int64 in the API; an entry whose revision is anything else (a bool, text, a float, out
    of range: never from a real API server) is skipped like an unparsable ReplicaSet revision.
    """
    history = []
    for cr, meta, annotations in _owned(workload, controller_revisions):
        data = cr.get("data") if isinstance(cr.get("data"), dict) else {}
        number = controller_revision_number(cr.get("revision") if cr.get("revision") is not None else 0)
        if number is None:
            continue
        history.append(Revision(
            number=number, name=meta.get("name", ""), source_kind="ControllerRevision",
            template=((data.get("spec") or {}).get("template")) or {}, annotations=annotations,
            uid=meta.get("uid", ""), created=meta.get("creationTimestamp", ""),
            previous_numbers=_int_list(annotations.get(PREVIOUS_REVISIONS_ANNOTATION)), data=data,
        ))
    return sorted(history, key=lambda r: (r.number, r.created))


def build_history(kind, workload, items):
    if kind == "Deployment":
        return deployment_history(workload, items)
    return controller_revision_history(workload, items)


def current_revision(history, workload):
    """The history entry whose template is the workload's current one (the highest such), else the highest."""
    template = (workload.get("spec") or {}).get("template")
    matching = [r for r in history if templates_equal(r.template, template)]
    if matching:
        return matching[-1]
    return history[-1] if history else None


def _pod_ready(pod):
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _revision_of_pod(kind, workload, history, pod):
    """The history number a pod belongs to, via its ReplicaSet (Deployment) or its controller-revision-hash."""
    meta = pod.get("metadata") or {}
    if kind == "Deployment":
        owners = [ref.get("uid") for ref in meta.get("ownerReferences") or [] if ref.get("controller")]
        for entry in history:
            if entry.uid in owners:
                return entry.number
        return None
    pod_hash = (meta.get("labels") or {}).get("controller-revision-hash")
    if not pod_hash:
        return None
    workload_name = (workload.get("metadata") or {}).get("name")
    for entry in history:
        # StatefulSet pods carry the ControllerRevision's name, DaemonSet pods only its hash suffix.
        if pod_hash == entry.name or entry.name == "%s-%s" % (workload_name, pod_hash):
            return entry.number
    return None


def pod_summaries(kind, workload, history, pods):
    """The workload's live pods (terminating ones excluded) with readiness, images and history revision."""
    if kind == "Deployment":
        owner_uids = set(entry.uid for entry in history)
    else:
        owner_uids = set([(workload.get("metadata") or {}).get("uid")])
    summaries = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        controller = [ref.get("uid") for ref in meta.get("ownerReferences") or [] if ref.get("controller")]
        if meta.get("deletionTimestamp") or not owner_uids.intersection(controller):
            continue
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        summaries.append({
            "name": meta.get("name"),
            "ready": _pod_ready(pod),
            "phase": (pod.get("status") or {}).get("phase"),
            "images": images_of(pod),
            "image_ids": [c.get("imageID") for c in statuses],
            "revision": _revision_of_pod(kind, workload, history, pod),
            "node": (pod.get("spec") or {}).get("nodeName"),
        })
    return sorted(summaries, key=lambda item: item["name"] or "")


# --- target selection -------------------------------------------------------------------------------------------


@dataclass
class Selection:
    target: Revision
    how: str
    warnings: list = field(default_factory=list)
    skipped: list = field(default_factory=list)


def _numbers(history):
    return ", ".join(str(r.number) for r in history) or "none"


def _default_target(history, current, what):
    """kubectl's second-highest revision, but passing over revisions this collection fled from."""
    if len(history) < 2:
        raise Refused(
            "no rollout history found for %s: only revision %s exists, there is nothing to roll back to"
            % (what, _numbers(history)), "no_history", available_revisions=[r.number for r in history])
    skipped = []
    for rev in reversed(history):
        if current is not None and rev is current:
            continue
        if rev.fled_at:
            skipped.append(rev)
            continue
        how = "previous revision (second-highest)"
        if skipped:
            how = "previous revision not rolled back from before (skipped %s)" % ", ".join(
                "%d, fled at %s" % (s.number, s.fled_at) for s in skipped)
        return Selection(target=rev, how=how, skipped=[s.number for s in skipped])
    raise Refused(
        "every earlier revision of %s was rolled back from before (%s); choose one explicitly with to_revision "
        "(available revisions: %s)" % (what, ", ".join("%d at %s" % (s.number, s.fled_at) for s in skipped),
                                       _numbers(history)),
        "all_fled", available_revisions=[r.number for r in history])


def _explicit_target(history, to_revision, what, revision_history_limit):
    for rev in history:
        if rev.number == to_revision:
            return Selection(target=rev, how="revision %d as requested" % to_revision)
    for rev in reversed(history):
        if to_revision in rev.previous_numbers:
            return Selection(target=rev, how="revision %d, renumbered to %d when it was re-deployed"
                             % (to_revision, rev.number))
    available = [r.number for r in history]
    latest = max(available) if available else 0
    if to_revision > latest:
        raise Refused(
            "revision %d not found for %s: the latest revision is %d; available revisions: %s"
            % (to_revision, what, latest, _numbers(history)), "revision_not_found", available_revisions=available)
    limit = "" if revision_history_limit is None else " (revisionHistoryLimit=%s)" % revision_history_limit
    raise Refused(
        "revision %d of %s is no longer in its history: it was pruned%s; available revisions: %s. Choose one of "
        "those, or restore revision %d from an evidence snapshot" % (to_revision, what, limit, _numbers(history),
                                                                     to_revision),
        "revision_pruned", available_revisions=available)


def _image_target(history, to_image, what):
    running = [r for r in history if to_image in all_images_of(r.template)]
    if not running:
        listing = "; ".join("%d: %s" % (r.number, ", ".join(r.images)) for r in history) or "none"
        raise Refused("no revision of %s runs image %s; revisions and their images: %s"
                      % (what, to_image, listing), "image_not_found",
                      available_revisions=[r.number for r in history])
    fresh = [r for r in running if not r.fled_at]
    if fresh:
        return Selection(target=fresh[-1], how="newest revision running %s" % to_image)
    target = running[-1]
    return Selection(target=target, how="newest revision running %s" % to_image,
                     warnings=["revision %d (the only one running %s) was rolled back from at %s; re-deploying it as "
                               "requested" % (target.number, to_image, target.fled_at)])


def select_target_revision(history, to_revision=0, to_image=None, current=None, what="the workload",
                           revision_history_limit=None):
    """Choose the revision to roll back to.

    ``to_revision=0`` is the previous revision as kubectl defines it (second-highest owned), skipping revisions
    marked as fled; ``to_revision=N`` is exact (or the revision N was renumbered to by a re-deploy); ``to_image``
    is the newest revision running that image, preferring ones not fled from.
    """
    if to_revision is None:
        to_revision = 0
    # bool is an int in Python (True == 1): a `to_revision: true` must never select revision 1.
    if isinstance(to_revision, bool) or not isinstance(to_revision, int):
        raise Refused("to_revision must be an integer revision number (0 for the previous revision), not %s %s"
                      % (type(to_revision).__name__, _short_repr(to_revision)), "bad_revision",
                      available_revisions=[r.number for r in history])
    if to_revision > INT64_MAX:
        raise Refused("to_revision %s is out of range: revision numbers are 64-bit (at most %d)"
                      % (_short_repr(to_revision), INT64_MAX), "bad_revision",
                      available_revisions=[r.number for r in history])
    if to_image is not None and not isinstance(to_image, str):
        raise Refused("to_image must be an image reference (a string), not %s" % type(to_image).__name__,
                      "bad_revision")
    if to_revision < 0:
        raise Refused("to_revision must be 0 (previous) or a positive revision number, not %d" % to_revision,
                      "bad_revision", available_revisions=[r.number for r in history])
    if to_image and to_revision:
        raise Refused("to_revision and to_image are mutually exclusive; pass one of them", "bad_revision")
    if not history:
        raise Refused("no rollout history found for %s: it has no owned revisions" % what, "no_history",
                      available_revisions=[])
    if to_image:
        selection = _image_target(history, to_image, what)
    elif to_revision:
        selection = _explicit_target(history, to_revision, what, revision_history_limit)
        if selection.target.fled_at and selection.target is not current:
            selection.warnings.append("revision %d was rolled back from at %s; re-deploying it as requested"
                                      % (selection.target.number, selection.target.fled_at))
    else:
        selection = _default_target(history, current, what)
    check_unambiguous(history, selection.target, current, what)
    return selection


def _short_repr(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def duplicate_revisions(history):
    """{number: [names]} for revision numbers held by more than one history entry."""
    names = {}
    for rev in history:
        names.setdefault(rev.number, []).append(rev.name)
    return dict((number, sorted(entries)) for number, entries in names.items() if len(entries) > 1)


def check_unambiguous(history, target, current, what):
    """Refuse a rollback whose target or current revision number is held by two ReplicaSets or
    ControllerRevisions: which template that number means is a guess (kubectl would silently take one)."""
    duplicates = duplicate_revisions(history)
    for role, rev in (("target", target), ("current", current)):
        if rev is not None and rev.number in duplicates:
            entries = duplicates[rev.number]
            raise Refused(
                "revision %d of %s is ambiguous: %s all carry it (%s %s); nothing was changed. Remove or "
                "re-annotate the stray %s, or choose another revision"
                % (rev.number, what, " and ".join(entries), role, "revision" if role == "target" else "template",
                   rev.source_kind), "ambiguous_revision",
                available_revisions=[r.number for r in history], ambiguous=entries)


# --- preconditions and ownership --------------------------------------------------------------------------------


def check_preconditions(kind, workload, what):
    """Refuse a paused Deployment and any workload whose controller has not observed its latest spec."""
    spec = workload.get("spec") or {}
    meta = workload.get("metadata") or {}
    status = workload.get("status") or {}
    if kind == "Deployment" and spec.get("paused"):
        raise Refused(
            "you cannot roll back a paused deployment: %s is paused; resume it first (kubectl rollout resume "
            "deployment/%s -n %s) and try again" % (what, meta.get("name"), meta.get("namespace")), "paused")
    generation = _as_int(meta.get("generation"))
    observed = _as_int(status.get("observedGeneration"))
    if observed < generation:
        raise Refused(
            "%s has generation %d but its controller has only observed generation %d, so its revision history is "
            "not final; wait for the controller (is kube-controller-manager running?) and try again"
            % (what, generation, observed), "generation_not_observed")


def _apply_managers_of_template(workload):
    managers = []
    for entry in (workload.get("metadata") or {}).get("managedFields") or []:
        fields = ((entry.get("fieldsV1") or {}).get("f:spec") or {})
        if entry.get("operation") == "Apply" and "f:template" in fields and entry.get("manager") not in managers:
            managers.append(entry.get("manager"))
    return managers


def rollback_warnings(kind, workload, what):
    """Things an operator must know before rolling back in-cluster; none of them block the rollback."""
    meta = workload.get("metadata") or {}
    spec = workload.get("spec") or {}
    status = workload.get("status") or {}
    warnings = []
    if LAST_APPLIED_ANNOTATION in (meta.get("annotations") or {}):
        warnings.append("%s carries kubectl.kubernetes.io/last-applied-configuration: the next `kubectl apply` "
                        "of the old manifest will re-apply the template being rolled back; update the manifest too"
                        % what)
    for manager in _apply_managers_of_template(workload):
        warnings.append("field manager %s server-side-applies the pod template of %s; its next apply will re-apply "
                        "the template being rolled back" % (manager, what))
    strategy = spec.get("updateStrategy") or {}
    if kind in ("StatefulSet", "DaemonSet") and strategy.get("type") == "OnDelete":
        warnings.append("%s uses the OnDelete update strategy: pods keep the old template until they are deleted"
                        % what)
    if kind == "StatefulSet":
        partition = _as_int((strategy.get("rollingUpdate") or {}).get("partition"))
        if partition:
            warnings.append("%s has partition %d: only pods with ordinal >= %d will be rolled back"
                            % (what, partition, partition))
        replicas = _as_int(spec.get("replicas", 1), 1)
        if _as_int(status.get("readyReplicas")) < replicas and spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady":
            warnings.append("%s has pods that are not ready and OrderedReady pod management: a pod stuck on the bad "
                            "revision may have to be deleted by hand before the rollback proceeds" % what)
    return warnings


# --- the patch --------------------------------------------------------------------------------------------------


def merge_rollback_annotations(workload_annotations, revision_annotations, change_cause=None):
    """kubectl's annotation merge for a Deployment rollback, plus our change-cause.

    The skip-list annotations stay as the Deployment has them; every other annotation comes from the target
    ReplicaSet; our own bookkeeping marks are never copied onto the Deployment (the controller would spread them
    to every future ReplicaSet).
    """
    workload_annotations = workload_annotations or {}
    merged = dict((k, v) for k, v in workload_annotations.items() if k in KUBECTL_ANNOTATIONS_TO_SKIP)
    for key, value in (revision_annotations or {}).items():
        if key not in KUBECTL_ANNOTATIONS_TO_SKIP and not key.startswith(GOVERNED_PREFIX):
            merged[key] = value
    if change_cause:
        merged[CHANGE_CAUSE_ANNOTATION] = change_cause
    return merged


def change_cause_text(from_revision, to_revision, actor=None, incident_id=None, reason=None):
    """The ``kubernetes.io/change-cause`` that ``kubectl rollout history`` shows for the rollback."""
    text = "governed.rollback: rollback %s -> %s by %s" % (
        from_revision if from_revision is not None else "?", to_revision, actor or "unknown actor")
    if incident_id:
        text += " for %s" % incident_id
    if reason:
        reason = " ".join(str(reason).split())
        if len(reason) > MAX_CHANGE_CAUSE_REASON:
            reason = reason[:MAX_CHANGE_CAUSE_REASON - 3] + "..."
        text += ": %s" % reason
    return text


def deployment_patch(resource_version, target_template, workload_annotations, target_annotations, change_cause):
    """JSON patch restoring a ReplicaSet's template onto a Deployment, guarded by a resourceVersion test."""
    template = copy.deepcopy(target_template)
    labels = (template.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH_LABEL, None)
    annotations = merge_rollback_annotations(workload_annotations, target_annotations, change_cause)
    # "replace" needs the member to exist; "add" on an object member sets it either way.
    annotations_op = "replace" if workload_annotations is not None else "add"
    return [
        {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": annotations_op, "path": "/metadata/annotations", "value": annotations},
    ]


def controller_revision_patch(resource_version, data, change_cause):
    """Strategic-merge patch of a ControllerRevision's data, with the resourceVersion as a precondition."""
    body = copy.deepcopy(data or {})
    metadata = body.setdefault("metadata", {})
    metadata["resourceVersion"] = resource_version
    if change_cause:
        metadata.setdefault("annotations", {})[CHANGE_CAUSE_ANNOTATION] = change_cause
    return body


def mask_patch(kind, patch):
    """The patch as it may appear in output: secret-looking env values and last-applied manifests masked."""
    masked = copy.deepcopy(patch)
    if kind == "Deployment":
        for op in masked:
            if op.get("path") == "/spec/template":
                op["value"] = mask_template(op["value"])
            elif op.get("path") == "/metadata/annotations" and LAST_APPLIED_ANNOTATION in op["value"]:
                # A whole manifest, literal env values included; the patch keeps it unchanged, so show its size only.
                op["value"][LAST_APPLIED_ANNOTATION] = redacted_marker(op["value"][LAST_APPLIED_ANNOTATION])
    else:
        template = (masked.get("spec") or {}).get("template")
        if template is not None:
            masked["spec"]["template"] = mask_template(template)
    return masked


def fled_marks(from_revision, when, actor=None, incident_id=None):
    """Annotations marking the revision we roll back away from, so a later default rollback skips it."""
    marks = {FLED_AT_ANNOTATION: when, FLED_REVISION_ANNOTATION: str(from_revision.number)}
    by = " ".join(part for part in (actor, incident_id) if part)
    if by:
        marks[FLED_BY_ANNOTATION] = by
    return marks


def renumber_marks(target):
    """For ControllerRevisions: remember the number a re-deployed revision had, as ReplicaSets do natively."""
    numbers = list(target.previous_numbers)
    if target.number not in numbers:
        numbers.append(target.number)
    return {PREVIOUS_REVISIONS_ANNOTATION: ",".join(str(n) for n in numbers)}


# --- the plan ---------------------------------------------------------------------------------------------------


@dataclass
class RollbackPlan:
    kind: str
    namespace: str
    name: str
    history: list
    current: Revision
    target: Revision
    how: str
    previous_revision: int
    resource_version: str
    uid: str = ""
    generation: int = 0
    patch: object = None
    change_cause: str = ""
    warnings: list = field(default_factory=list)
    owners: list = field(default_factory=list)
    skipped_reason: str = ""

    @property
    def what(self):
        return describe(self.kind, self.namespace, self.name)

    @property
    def patch_type(self):
        return "json" if self.kind == "Deployment" else "strategic-merge"

    @property
    def changes(self):
        return template_changes(mask_template(normalize_template(self.current.template if self.current else {})),
                                mask_template(normalize_template(self.target.template)))

    def summary(self):
        """The from/to facts every result carries (success, refusal after selection, or a failed wait)."""
        current = self.current
        return {
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
            "from_revision": current.number if current else None,
            "to_revision": self.target.number,
            "from_images": current.images if current else [],
            "to_images": self.target.images,
            "from_template_sha256": current.sha256 if current else None,
            "to_template_sha256": self.target.sha256,
            "from_replicaset": current.name if current else None,
            "to_replicaset": self.target.name,
            "previous_revision": self.previous_revision,
            "target_is_previous": self.previous_revision == self.target.number,
            "selected_by": self.how,
            "resource_version_before": self.resource_version,
        }

    def binding(self):
        """What an approval of this plan is for: the workload (uid, generation) and the from/to revisions with
        their template digests. The act call refuses when the world no longer matches it."""
        current = self.current
        return {
            "uid": self.uid,
            "generation": self.generation,
            "from_revision": current.number if current else None,
            "from_template_sha256": current.sha256 if current else None,
            "to_revision": self.target.number,
            "to_template_sha256": self.target.sha256,
        }

    def contract(self):
        """The plan contract every action module returns (docs/plan-contract.md)."""
        current = self.current
        return {
            "from_ref": ("sha256:" + current.sha256) if current else None,
            "to_ref": "sha256:" + self.target.sha256,
            "approval_facts": {"to_revision": self.target.number, "previous_revision": self.previous_revision},
            "binding": self.binding(),
            "receipt_fields": {
                "component": self.name,
                "changed_surfaces": ["deployment"],
                "current_ref": ("sha256:" + current.sha256) if current else None,
                "rollback_target_ref": "sha256:" + self.target.sha256,
                "from_version": ",".join(current.images) if current and current.images else None,
                "to_version": ",".join(self.target.images) or None,
                "details": {
                    "kind": self.kind,
                    "namespace": self.namespace,
                    "from_revision": current.number if current else None,
                    "to_revision": self.target.number,
                    "from_replicaset": current.name if current else None,
                    "to_replicaset": self.target.name,
                },
            },
        }

    def plan(self):
        return {
            "action": "none" if self.skipped_reason else "rollback",
            "what": self.what,
            "from_revision": self.current.number if self.current else None,
            "to_revision": self.target.number,
            "from_images": self.current.images if self.current else [],
            "to_images": self.target.images,
            "selected_by": self.how,
            "patch_type": self.patch_type,
            "template_changes": self.changes,
            "change_cause": self.change_cause,
            "gitops_owners": self.owners,
            "history": [r.summary() for r in self.history],
        }


def check_objects(workload, items):
    """Refuse objects no API server returns (wrong types, absurd nesting) before any recursive walk."""
    if not isinstance(workload, dict) or not isinstance(workload.get("metadata") or {}, dict):
        raise Refused("the workload read is not a Kubernetes object", "bad_object")
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise Refused("the revision history read is not a list of Kubernetes objects", "bad_object")
    for obj in [workload] + list(items):
        if object_depth_exceeds(obj):
            meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
            raise Refused("%s %s is nested deeper than %d levels; refusing to plan from it"
                          % (obj.get("kind") or "object", meta.get("name") or "?", MAX_OBJECT_DEPTH), "bad_object")
        meta = obj.get("metadata")
        if meta is not None and (not isinstance(meta, dict) or not isinstance(meta.get("annotations") or {}, dict)):
            raise Refused("an object of the revision history has malformed metadata", "bad_object")


def plan_rollback(kind, workload, items, to_revision=0, to_image=None, allow_gitops_drift=False,
                  actor=None, incident_id=None, reason=None):
    """Everything up to (not including) the API call: checks, target, patch, warnings.

    Raises Refused when the rollback must not happen. A target equal to the current template yields a
    plan with ``skipped_reason`` and no patch.
    """
    check_kind(kind)
    check_objects(workload, items)
    meta = workload.get("metadata") or {}
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    what = describe(kind, namespace, name)
    owners, warnings = check_gitops(what, workload, allow_gitops_drift, "the revision being rolled back")
    check_preconditions(kind, workload, what)
    history = build_history(kind, workload, items)
    current = current_revision(history, workload)
    spec = workload.get("spec") or {}
    selection = select_target_revision(history, to_revision, to_image, current, what,
                                       spec.get("revisionHistoryLimit"))
    try:
        previous = _default_target(history, current, what).target.number
    except Refused:
        previous = None
    warnings.extend(selection.warnings)
    warnings.extend(rollback_warnings(kind, workload, what))
    plan = RollbackPlan(kind=kind, namespace=namespace, name=name, history=history, current=current,
                        target=selection.target, how=selection.how, previous_revision=previous,
                        resource_version=meta.get("resourceVersion", ""), uid=meta.get("uid", ""),
                        generation=_as_int(meta.get("generation")), warnings=warnings, owners=owners)
    if templates_equal(selection.target.template, spec.get("template")):
        plan.skipped_reason = "skipped rollback: the current template of %s already matches revision %d (%s)" % (
            what, selection.target.number, selection.how)
        return plan
    plan.change_cause = change_cause_text(current.number if current else None, selection.target.number,
                                          actor, incident_id, reason)
    if kind == "Deployment":
        plan.patch = deployment_patch(plan.resource_version, selection.target.template, meta.get("annotations"),
                                      selection.target.annotations, plan.change_cause)
    else:
        plan.patch = controller_revision_patch(plan.resource_version, selection.target.data, plan.change_cause)
    return plan
