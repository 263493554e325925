# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Argo CD's Application and AppProject on the API server (the argoproj.io/v1alpha1 CRDs): read them, merge-patch
them (server-side dry run for check mode), and request a hard refresh - what ``argocd app get --hard-refresh`` does,
the ``argocd.argoproj.io/refresh`` annotation, which Argo CD's application controller acts on and then removes.
The decisions (the freeze's patches, which Application tracks a workload) are _gitops's and _k8s_objects's."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.governed.rollback.plugins.module_utils._flux import workload_status
from ansible_collections.governed.rollback.plugins.module_utils._workload import MERGE_PATCH, call

PATHS = {
    "Application": ("/apis/argoproj.io/v1alpha1/namespaces/{namespace}/applications/{name}",
                    "applications.argoproj.io"),
    "AppProject": ("/apis/argoproj.io/v1alpha1/namespaces/{namespace}/appprojects/{name}",
                   "appprojects.argoproj.io"),
}
REFRESH_ANNOTATION = "argocd.argoproj.io/refresh"
# Argo CD's own namespace: where its AppProjects live, and its Applications unless "apps in any namespace" is on.
DEFAULT_NAMESPACE = "argocd"


def get(api, kind, namespace, name):
    path, resource = PATHS[kind]
    return call("%s %s/%s" % (kind, namespace, name), "get", resource, namespace, name, api.request, "GET", path,
                {"namespace": namespace, "name": name})


def patch(api, obj, body, dry_run=False, precondition=True):
    """Merge-patch ``obj`` (as read); with ``precondition`` the patch carries the resourceVersion it was read at, so
    the API server refuses it (409, nothing changed) when someone changed the object since."""
    kind, meta = obj["kind"], obj["metadata"]
    path, resource = PATHS[kind]
    if precondition:
        body = dict(body, metadata=dict(body.get("metadata") or {}, resourceVersion=meta["resourceVersion"]))
    # Strict: a field the CRD does not know is an error, not silently pruned (the thaw compares what it finds).
    query = [("fieldManager", "governed-rollback"), ("fieldValidation", "Strict")] + (
        [("dryRun", "All")] if dry_run else [])
    return call("%s %s/%s" % (kind, meta["namespace"], meta["name"]), "patch", resource, meta["namespace"],
                meta["name"], api.request, "PATCH", path, {"namespace": meta["namespace"], "name": meta["name"]},
                query, body, MERGE_PATCH)


def project_of(api, application, namespace=None):
    """The AppProject the Application belongs to (``spec.project``, ``default`` when unset), read from
    ``namespace`` (the Application's own by default)."""
    name = (application.get("spec") or {}).get("project") or "default"
    return get(api, "AppProject", namespace or application["metadata"]["namespace"], name)


def request_refresh(api, application, refresh="hard"):
    """Annotate the Application with ``argocd.argoproj.io/refresh`` (``hard``: the manifests are regenerated from
    git, bypassing the repo-server's cache). Returns the patched Application."""
    return patch(api, application, {"metadata": {"annotations": {REFRESH_ANNOTATION: refresh}}}, precondition=False)


def wait_rollout(api, workload, timeout, clock=time.monotonic, sleep=time.sleep):
    """After a refresh: wait until the workload has rolled out on its target image (Argo CD's own sync and health
    status are not read). Returns ``(done, timings, last)`` like _flux.wait_applied."""
    start = clock()
    while True:
        status = workload_status(api, workload["kind"], workload["namespace"], workload["name"],
                                 workload["container"], workload["image"])
        elapsed = clock() - start
        if status["done"]:
            return True, {"rollout_seconds": round(elapsed, 3)}, {"workload": status}
        if elapsed >= timeout:
            return False, {"rollout_seconds": None}, {"workload": status}
        sleep(min(1.0, max(0.0, timeout - elapsed)))
