# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Flux's GitRepository and Kustomization on the API server: read them, annotate a reconcile request (what
``flux reconcile`` does), flip ``spec.suspend``, and wait until a commit is applied and the workload it deploys has
rolled out. The decisions (is it at the commit, has it failed) are _gitops.reconcile_progress and _rollout's."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.governed.rollback.plugins.module_utils import _gitops
from ansible_collections.governed.rollback.plugins.module_utils._common import Refused, utc_now
from ansible_collections.governed.rollback.plugins.module_utils._rollout import DONE, rollout_state
from ansible_collections.governed.rollback.plugins.module_utils._workload import KINDS, MERGE_PATCH, call
from ansible_collections.governed.rollback.plugins.module_utils._k8s_objects import selector_to_string

PATHS = {
    "GitRepository": ("/apis/source.toolkit.fluxcd.io/v1/namespaces/{namespace}/gitrepositories/{name}",
                      "gitrepositories.source.toolkit.fluxcd.io"),
    "Kustomization": ("/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/{namespace}/kustomizations/{name}",
                      "kustomizations.kustomize.toolkit.fluxcd.io"),
    "HelmRelease": ("/apis/helm.toolkit.fluxcd.io/v2/namespaces/{namespace}/helmreleases/{name}",
                    "helmreleases.helm.toolkit.fluxcd.io"),
}
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"


def get(api, kind, namespace, name):
    path, resource = PATHS[kind]
    return call("%s %s/%s" % (kind, namespace, name), "get", resource, namespace, name, api.request, "GET", path,
                {"namespace": namespace, "name": name})


def patch(api, kind, namespace, name, body, dry_run=False):
    path, resource = PATHS[kind]
    query = [("fieldManager", "governed-rollback")] + ([("dryRun", "All")] if dry_run else [])
    return call("%s %s/%s" % (kind, namespace, name), "patch", resource, namespace, name, api.request, "PATCH",
                path, {"namespace": namespace, "name": name}, query, body, MERGE_PATCH)


def source_of(api, kustomization):
    ref = (kustomization.get("spec") or {}).get("sourceRef") or {}
    if ref.get("kind") != "GitRepository":
        meta = kustomization["metadata"]
        raise Refused("Kustomization %s/%s reconciles from a %s, not a GitRepository; a git rollback cannot change it"
                      % (meta["namespace"], meta["name"], ref.get("kind")), "not_reconciled")
    return get(api, "GitRepository", ref.get("namespace") or kustomization["metadata"]["namespace"], ref["name"])


def request_reconcile(api, objects, when=None):
    """Annotate each object with ``reconcile.fluxcd.io/requestedAt`` (the value is opaque, it only has to change)."""
    when = when or utc_now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for obj in objects:
        meta = obj["metadata"]
        patch(api, obj["kind"], meta["namespace"], meta["name"], {"metadata": {"annotations": {REQUESTED_AT: when}}})
    return when


def set_suspend(api, obj, value):
    meta = obj["metadata"]
    return patch(api, obj["kind"], meta["namespace"], meta["name"], {"spec": {"suspend": value}})


def workload_pods(api, kind, namespace, name, workload):
    """The pods of ``workload`` (found by its selector)."""
    selector = selector_to_string((workload.get("spec") or {}).get("selector"))
    return call("%s %s/%s" % (kind, namespace, name), "list", "pods", namespace, None, api.list_page, "Pod",
                namespace, [("labelSelector", selector)]).get("items") or []


def workload_status(api, kind, namespace, name, container, image):
    """The workload's rollout state and its pods against the target image (for the wait and the evidence)."""
    workload = call("%s %s/%s" % (kind, namespace, name), "get", KINDS[kind][0], namespace, name, api.get, kind,
                    namespace, name)
    state = rollout_state(kind, workload)
    pods = workload_pods(api, kind, namespace, name, workload)
    template_images = dict((c.get("name"), c.get("image"))
                           for c in ((workload.get("spec") or {}).get("template") or {}).get("spec", {}).get(
                               "containers", []))
    summaries = _gitops.pods_on_image(pods, container, image)
    ready = [p for p in summaries if p["ready"]]
    replicas = (workload.get("spec") or {}).get("replicas", 1)
    done = (state.state == DONE and template_images.get(container) == image and len(ready) >= replicas
            and all(p["on_target"] for p in summaries))
    return {"done": done, "rollout": state.message, "template_image": template_images.get(container),
            "pods": summaries, "generation": workload["metadata"].get("generation")}


def wait_applied(api, gitrepository, kustomization, sha, workload, timeout, on_source=None, clock=time.monotonic,
                 sleep=time.sleep, gate=None):
    """Wait until the source reports ``sha``, the Kustomization is Ready at it and the workload has rolled out on
    its target image. Returns ``(done, timings, last)``: seconds from the start to each milestone, and the last
    observation (the failure evidence when not done). ``on_source`` is called once the source is at ``sha`` (a
    frozen Kustomization is resumed there). ``gate`` (a HelmRelease the Kustomization applies), when given, is
    called once the Kustomization is Ready and returns ``(ready, observation)``: the workload is waited for only
    once it is ready (``released_seconds``)."""
    start = clock()
    timings = {"source_seconds": None, "applied_seconds": None, "rollout_seconds": None}
    if gate is not None:
        timings["released_seconds"] = None
    last = {}
    gmeta, kmeta = gitrepository["metadata"], kustomization["metadata"]
    called = False
    while True:
        source = get(api, "GitRepository", gmeta["namespace"], gmeta["name"])
        kust = get(api, "Kustomization", kmeta["namespace"], kmeta["name"])
        progress = _gitops.reconcile_progress(source, kust, sha)
        elapsed = clock() - start
        if progress["source_at_target"] and timings["source_seconds"] is None:
            timings["source_seconds"] = round(elapsed, 3)
        if progress["source_at_target"] and on_source is not None and not called:
            called = True
            on_source(source, kust)
        if progress["ready"] and timings["applied_seconds"] is None:
            timings["applied_seconds"] = round(elapsed, 3)
        status = None
        released = gate_view = None
        if progress["ready"] and gate is not None:
            released, gate_view = gate(kust)
            if released and timings["released_seconds"] is None:
                timings["released_seconds"] = round(clock() - start, 3)
        gated = progress["ready"] and (gate is None or released)
        if gated and workload:
            status = workload_status(api, workload["kind"], workload["namespace"], workload["name"],
                                     workload["container"], workload["image"])
            if status["done"] and timings["rollout_seconds"] is None:
                timings["rollout_seconds"] = round(clock() - start, 3)
        last = {"progress": progress, "workload": status,
                "gitrepository_conditions": ((source.get("status") or {}).get("conditions") or []),
                "kustomization_conditions": ((kust.get("status") or {}).get("conditions") or [])}
        if gate is not None:
            last["helmrelease"] = gate_view
        if gated and (not workload or status["done"]):
            return True, timings, last
        if elapsed >= timeout:
            if gated and workload and status is None:
                last["workload"] = workload_status(api, workload["kind"], workload["namespace"], workload["name"],
                                                   workload["container"], workload["image"])
            return False, timings, last
        sleep(min(1.0, max(0.0, timeout - elapsed)))
