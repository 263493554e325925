# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Deployments, StatefulSets and DaemonSets on the API server: read them with their history and pods, patch
them with a resourceVersion precondition, annotate their history, restart them the way ``kubectl rollout
restart`` does, and wait for their rollout. Every rollback type that changes or restarts a workload goes through
here; the decisions are made by the pure cores (_revisions, _rollout, _k8s_objects)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.governed.rollback.plugins.module_utils._common import Refused, utc_now, utc_stamp
from ansible_collections.governed.rollback.plugins.module_utils._k8s import (
    ApiException, K8sError, TransportError, explain_api_exception,
)
from ansible_collections.governed.rollback.plugins.module_utils._k8s_objects import describe, selector_to_string
from ansible_collections.governed.rollback.plugins.module_utils._revisions import build_history, pod_summaries
from ansible_collections.governed.rollback.plugins.module_utils._rollout import FAILED, WaitResult, wait_for_rollout

# kind -> (plural resource for messages, history kind, history resource for messages)
KINDS = {
    "Deployment": ("deployments.apps", "ReplicaSet", "replicasets.apps"),
    "StatefulSet": ("statefulsets.apps", "ControllerRevision", "controllerrevisions.apps"),
    "DaemonSet": ("daemonsets.apps", "ControllerRevision", "controllerrevisions.apps"),
}
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"
RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"


def call(what, verb, resource, namespace, name, method, *args, **kwargs):
    """One API call returning the decoded JSON; API errors become Refused (403/404) or K8sError, and a server that
    cannot be reached a K8sError saying so."""
    try:
        return method(*args, **kwargs)
    except (ApiException, TransportError) as exc:
        # A transport error has no status: explain_api_exception says the server cannot be reached.
        error = explain_api_exception(exc, verb, resource, namespace, name)
        if error.status == 403:
            raise Refused(error.msg, "forbidden")
        if error.status == 404 and verb == "get":
            raise Refused("%s not found; check the name, namespace and kind (kubectl get %s -n %s)"
                          % (what, resource.split(".")[0], namespace), "not_found")
        raise error


def read_workload(api, kind, namespace, name):
    return call(describe(kind, namespace, name), "get", KINDS[kind][0], namespace, name, api.get, kind, namespace,
                name)


def read_history(api, kind, workload):
    """The raw history objects: listed with the workload's full selector (ownership is checked by the planner)."""
    meta = workload["metadata"]
    history_kind, resource = KINDS[kind][1], KINDS[kind][2]
    selector = selector_to_string((workload.get("spec") or {}).get("selector"))
    listing = call(describe(kind, meta["namespace"], meta["name"]), "list", resource, meta["namespace"], None,
                   api.list_page, history_kind, meta["namespace"], [("labelSelector", selector)])
    return listing.get("items") or []


def read_state(api, kind, namespace, name):
    """Read the workload and its history: everything a rollback plan is computed from."""
    workload = read_workload(api, kind, namespace, name)
    return workload, read_history(api, kind, workload)


def observe_pods(api, kind, namespace, name):
    """After a rollout: the workload's live pods, mapped to the (re-read) history."""
    workload, history_items = read_state(api, kind, namespace, name)
    selector = selector_to_string((workload.get("spec") or {}).get("selector"))
    listing = call(describe(kind, namespace, name), "list", "pods", namespace, None,
                   api.list_page, "Pod", namespace, [("labelSelector", selector)])
    history = build_history(kind, workload, history_items)
    return pod_summaries(kind, workload, history, listing.get("items") or [])


def _changed_since_read(api, kind, namespace, name, resource_version, error):
    """Whether a refused patch failed on our resourceVersion precondition.

    A strategic-merge precondition fails with 409; a failed JSON-patch ``test`` comes back as a bare 422 ("the
    server rejected our request"), so the workload is re-read to tell a concurrent change from an invalid patch.
    """
    if error.status == 409:
        return True
    if error.status != 422:
        return False
    try:
        now = read_workload(api, kind, namespace, name)
    except (Refused, K8sError):
        return False
    return now["metadata"].get("resourceVersion") != resource_version


def patch_workload(api, kind, namespace, name, patch, content_type, resource_version, action, dry_run=False):
    """Apply (or dry-run) a patch that carries a resourceVersion precondition; a concurrent change since the read
    is refused as a conflict (code ``conflict``), naming ``action`` ("the rollback patch", "the restart")."""
    what = describe(kind, namespace, name)
    try:
        return call(what, "patch", KINDS[kind][0], namespace, name, api.patch, kind, namespace, name, patch,
                    content_type, dry_run=dry_run)
    except K8sError as error:
        if _changed_since_read(api, kind, namespace, name, resource_version, error):
            raise Refused(
                "conflict: %s changed after it was read (resourceVersion %s) and before %s; nothing "
                "was overwritten and nothing changed. Find out who changed it, then re-run to re-read and re-plan"
                % (what, resource_version, action), "conflict")
        raise


def annotate_history(api, kind, namespace, name, annotations):
    """Merge-patch annotations onto a ReplicaSet or ControllerRevision (bookkeeping, never the rollback itself)."""
    history_kind, resource = KINDS[kind][1], KINDS[kind][2]
    return call("%s %s/%s" % (resource, namespace, name), "patch", resource, namespace, name, api.patch,
                history_kind, namespace, name, {"metadata": {"annotations": annotations}}, MERGE_PATCH)


def restart_patch(resource_version, when, annotations=None):
    """``kubectl rollout restart``'s strategic-merge patch (restartedAt in RFC 3339), plus our own template
    annotations (e.g. which config digest caused the restart) and a resourceVersion precondition."""
    template_annotations = {RESTARTED_AT_ANNOTATION: when}
    template_annotations.update(annotations or {})
    return {"metadata": {"resourceVersion": resource_version},
            "spec": {"template": {"metadata": {"annotations": template_annotations}}}}


def restart(api, kind, namespace, name, annotations=None, dry_run=False, workload=None, now=None):
    """Restart a workload's pods with ``kubectl rollout restart`` semantics; returns ``(patched, restarted_at)``.

    Refuses a paused Deployment as kubectl does. A restart in the same second as the previous one would be an
    empty patch that kubectl reports as an error; here the time stamp moves on to the next second instead.
    """
    what = describe(kind, namespace, name)
    workload = workload or read_workload(api, kind, namespace, name)
    spec = workload.get("spec") or {}
    if kind == "Deployment" and spec.get("paused"):
        raise Refused("can't restart paused %s: resume it first (kubectl rollout resume deployment/%s -n %s)"
                      % (what, name, namespace), "paused")
    when = utc_stamp(now or utc_now())
    previous = (((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}).get(
        RESTARTED_AT_ANNOTATION)
    if previous is not None and previous >= when:
        time.sleep(1.0)
        when = utc_stamp()
    patch = restart_patch(workload["metadata"]["resourceVersion"], when, annotations)
    patched = patch_workload(api, kind, namespace, name, patch, STRATEGIC_MERGE_PATCH,
                             workload["metadata"]["resourceVersion"], "the restart", dry_run=dry_run)
    return patched, when


def fetcher(api, kind, namespace, name):
    """fetch() for the wait loop: the workload, or None once it is gone."""

    def fetch():
        try:
            return read_workload(api, kind, namespace, name)
        except Refused as refused:
            if refused.code == "not_found":
                return None
            raise

    return fetch


def wait(api, kind, namespace, name, timeout, patched_at=None, uid=None):
    """Wait for the rollout with ``kubectl rollout status`` semantics (see _rollout); never raises: an API
    failure while waiting is a failed WaitResult naming it."""
    started = time.monotonic()
    try:
        return wait_for_rollout(fetcher(api, kind, namespace, name), kind, timeout, patched_at=patched_at, uid=uid)
    except (Refused, K8sError) as error:
        return WaitResult(FAILED, "could not read %s while waiting: %s" % (describe(kind, namespace, name), error.msg),
                          time.monotonic() - started)
