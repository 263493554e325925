#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: deploy_freeze
short_description: Freeze or thaw deploys of a GitOps-managed workload (Flux or Argo CD), recording who, why, until,
  incident
version_added: 0.2.0
author: governed.rollback maintainers (@governed)
description:
  - The KFM runbook's step 0, "freeze deploys", for the reconciler that manages the target - Flux or Argo CD
    (O(reconciler), or detected from O(workload)).
  - Flux - O(state=frozen) sets C(spec.suspend=true) on the Kustomization (or any Flux object with C(spec.suspend),
    such as an ImageUpdateAutomation, through O(kind)) and records the freeze in the annotation
    C(freeze.governed.io/record) - who, why, until, the incident, when, and the previous C(spec.suspend) (or its
    absence). O(state=thawed) restores exactly what the freeze changed - C(spec.suspend) back to its previous value,
    or removed when it was absent - and removes the record.
  - Argo CD - O(state=frozen) adds a C(deny) sync window for the Application to its AppProject's
    C(spec.syncWindows) (schedule C(* * * * *), so it is open at every moment until removed; C(manualSync=false), so
    manual syncs are denied too; its C(description) names the incident), recorded in the AppProject's annotation
    C(freeze.governed.io/argocd-windows), and switches auto-sync off by removing the Application's
    C(spec.syncPolicy.automated), whose previous value (C(prune), C(selfHeal), ...) is recorded in the Application's
    annotation C(freeze.governed.io/record). O(argocd_method) picks one of the two. O(state=thawed) removes only
    our window (windows of others, set before or during the freeze, stay; C(spec.syncWindows) is removed again
    when it was absent and nothing else is left in it) and restores C(spec.syncPolicy.automated) exactly as it was.
  - Argo CD - when someone changed what the freeze set (our window removed or edited, auto-sync switched back on),
    both a thaw and a new freeze are refused and nothing is changed - the message says what changed.
  - The sandbox and the tests run Argo CD's real CRDs (v3.6) on a real API server but no Argo CD controller - the
    freeze is the objects Argo CD's application controller reads (deny windows and auto-sync are its documented
    controls), not an observed stop of its syncs.
  - Idempotent - freezing a frozen object or thawing a thawed one changes nothing. An object suspended (Flux), or an
    Application without auto-sync (Argo CD), frozen by someone else is frozen by recording the freeze only (its thaw
    leaves it as it was).
  - Every write carries the resourceVersion it was computed from, so an object changed in between is refused by the
    API server (409) and left as it is. Check mode sends the merge patches through a server-side dry run (C(dryRun=All))
    and returns the objects the API server would store.
options:
  state:
    description: Frozen or thawed.
    type: str
    choices: [frozen, thawed]
    default: frozen
  reconciler:
    description:
      - Which reconciler manages the target - Flux (C(spec.suspend)) or Argo CD (a deny sync window on the AppProject
        and auto-sync off on the Application).
      - When not given - detected from O(workload)'s ownership (Argo CD's tracking annotation
        C(argocd.argoproj.io/tracking-id) or instance label C(argocd.argoproj.io/instance); Flux's labels
        C(kustomize.toolkit.fluxcd.io/name) and C(kustomize.toolkit.fluxcd.io/namespace)), otherwise C(flux).
    type: str
    choices: [flux, argocd]
  name:
    description:
      - Name of the Flux object (the Kustomization) or the Argo CD Application.
      - Required unless O(workload) is given (then the name comes from its ownership labels or annotations).
    type: str
  namespace:
    description: Its namespace; C(flux-system) for Flux and C(argocd) for Argo CD when not given (or, with
      O(workload), the namespace its ownership names).
    type: str
  kind:
    description: Kind of the Flux object (Flux only).
    type: str
    choices: [Kustomization, HelmRelease, ImageUpdateAutomation, GitRepository]
    default: Kustomization
  workload:
    description:
      - The workload whose reconciler is frozen, to detect O(reconciler), O(name) and O(namespace) from its ownership
        (an Argo CD Application outside Argo CD's namespace is named C(<namespace>_<app>) in the tracking annotation).
      - Refused when it carries no ownership of either, or of both (set O(reconciler)).
    type: dict
    suboptions:
      kind:
        description: Kind of the workload.
        type: str
        choices: [Deployment, StatefulSet, DaemonSet]
        default: Deployment
      namespace:
        description: Namespace of the workload.
        type: str
        required: true
      name:
        description: Name of the workload.
        type: str
        required: true
  project_namespace:
    description: Argo CD - namespace of the AppProject (named by the Application's C(spec.project)); the
      Application's namespace when not given.
    type: str
  argocd_method:
    description: Argo CD - what a freeze sets - the deny sync window and auto-sync off (C(both)), or one of them. A thaw
      undoes whatever its freeze recorded.
    type: str
    choices: [both, sync_window, auto_sync]
    default: both
  until:
    description: Until when the freeze is meant to last (free text, e.g. an RFC 3339 time); recorded (the freeze
      itself lasts until thawed).
    type: str
extends_documentation_fragment:
  - governed.rollback.k8s_auth
  - governed.rollback.runbook_context
  - governed.rollback.attributes
  - governed.rollback.attributes.ACTIONGROUP_K8S
attributes:
  check_mode:
    support: full
    details: The merge patches go through a server-side dry run; nothing is changed.
  diff_mode:
    support: full
    details: Flux - C(spec.suspend) and the freeze record before and after. Argo CD - the AppProject's
      C(spec.syncWindows), the Application's C(spec.syncPolicy.automated) and the records before and after.
  idempotent:
    support: full
notes:
  - RBAC - C(get) and C(patch) on the Flux kind; for Argo CD C(get) and C(patch) on C(applications.argoproj.io) and
    (unless O(argocd_method=auto_sync)) C(appprojects.argoproj.io); C(get) on the workload kind with O(workload).
  - Argo CD's application controller, not this module, enforces the window and auto-sync; a sync already running
    when the freeze lands finishes (unless the window's C(syncOverrun) says otherwise, which the freeze does not set).
requirements:
  - kubernetes >= 29.0.0 (Python client)
"""

EXAMPLES = r"""
- name: Freeze deploys of aureus-api (runbook step 0)
  governed.rollback.deploy_freeze:
    name: aureus-api
    namespace: flux-system
    actor: oncall-sre
    reason: rollback of v1.5.0 in progress
    incident_id: INC-12345
    until: "2026-12-01T12:00:00Z"
  register: freeze

- name: Thaw after verification
  governed.rollback.deploy_freeze:
    name: aureus-api
    state: thawed

- name: Freeze the Argo CD Application that deploys aureus-api (detected from the workload's tracking annotation)
  governed.rollback.deploy_freeze:
    workload: {kind: Deployment, namespace: aureus, name: aureus-api}
    actor: oncall-sre
    reason: rollback of v1.5.0 in progress
    incident_id: INC-12345
  register: freeze

- name: Thaw it - our deny window removed, auto-sync restored exactly as it was
  governed.rollback.deploy_freeze:
    reconciler: argocd
    name: aureus-api
    namespace: argocd
    state: thawed
"""

RETURN = r"""
reconciler:
  description: The reconciler frozen or thawed - C(flux) or C(argocd).
  returned: always
  type: str
frozen:
  description: Whether the target is frozen by a freeze of ours after this task.
  returned: always
  type: bool
record:
  description:
    - The freeze record - C(who), C(why), C(until), C(incident), C(at), C(previous) (Flux - the C(spec.suspend) the
      freeze replaced; Argo CD - the C(spec.syncPolicy.automated) it removed; empty when it was absent). On a thaw,
      the record that was removed.
    - Argo CD - also C(window), the deny sync window of the freeze (null with O(argocd_method=auto_sync)).
  returned: when there is or was a freeze
  type: dict
suspend:
  description: Flux - C(spec.suspend) before and after - C(before), C(after) (null when absent).
  returned: for Flux
  type: dict
patch:
  description: Flux - the merge patch applied (or, in check mode, that would be).
  returned: for Flux, when changed
  type: dict
object:
  description: Flux - C(kind), C(namespace), C(name), C(uid), C(resource_version) (after).
  returned: for Flux
  type: dict
patches:
  description: Argo CD - the merge patches applied (or, in check mode, that would be) - C(project), C(application)
    (null for an object left alone), each with the resourceVersion precondition.
  returned: for Argo CD, when changed
  type: dict
application:
  description: Argo CD - the Application - C(namespace), C(name), C(uid), C(project), C(resource_version) (after),
    C(automated) (C(spec.syncPolicy.automated) C(before) and C(after)).
  returned: for Argo CD
  type: dict
project:
  description: Argo CD - the AppProject - C(namespace), C(name), C(uid), C(resource_version) (after), C(sync_windows)
    (C(before) and C(after)).
  returned: for Argo CD, unless O(argocd_method=auto_sync)
  type: dict
detected:
  description: With O(workload) - where the reconciler was found - C(reconciler), C(source) (the label or annotation),
    C(value).
  returned: when O(workload) is given
  type: dict
"""

import json

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.governed.rollback.plugins.module_utils import _argocd, _argspec, _gitops
from ansible_collections.governed.rollback.plugins.module_utils._common import (
    Refused, RollbackError, fail_from_exception, utc_stamp,
)
from ansible_collections.governed.rollback.plugins.module_utils._k8s import KubeRest, build_api_client, require_k8s
from ansible_collections.governed.rollback.plugins.module_utils._k8s_objects import argocd_application, describe
from ansible_collections.governed.rollback.plugins.module_utils._workload import (KINDS, MERGE_PATCH, call,
                                                                                  read_workload)

PATHS = {
    "Kustomization": "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/{namespace}/kustomizations/{name}",
    "HelmRelease": "/apis/helm.toolkit.fluxcd.io/v2/namespaces/{namespace}/helmreleases/{name}",
    "ImageUpdateAutomation":
        "/apis/image.toolkit.fluxcd.io/v1beta2/namespaces/{namespace}/imageupdateautomations/{name}",
    "GitRepository": "/apis/source.toolkit.fluxcd.io/v1/namespaces/{namespace}/gitrepositories/{name}",
}
DEFAULT_NAMESPACE = {"flux": "flux-system", "argocd": _argocd.DEFAULT_NAMESPACE}
FLUX_NAME_LABEL = "kustomize.toolkit.fluxcd.io/name"
FLUX_NAMESPACE_LABEL = "kustomize.toolkit.fluxcd.io/namespace"


def argument_spec():
    return _argspec.compose(dict(
        state=dict(type="str", choices=["frozen", "thawed"], default="frozen"),
        reconciler=dict(type="str", choices=["flux", "argocd"]),
        name=dict(type="str"),
        namespace=dict(type="str"),
        kind=dict(type="str", choices=list(PATHS), default="Kustomization"),
        workload=dict(type="dict", options=dict(
            kind=dict(type="str", choices=list(KINDS), default="Deployment"),
            namespace=dict(type="str", required=True),
            name=dict(type="str", required=True),
        )),
        project_namespace=dict(type="str"),
        argocd_method=dict(type="str", choices=["both", "sync_window", "auto_sync"], default="both"),
        until=dict(type="str"),
    ), _argspec.K8S_AUTH, _argspec.RUNBOOK_CONTEXT)


def _suspend(obj):
    return (obj.get("spec") or {}).get("suspend")


def detect_reconciler(workload):
    """Which reconciler deploys ``workload`` (plain data): ``{reconciler, name, namespace, source, value}``."""
    what = describe(workload.get("kind") or "workload", workload["metadata"].get("namespace"),
                    workload["metadata"]["name"])
    labels = workload["metadata"].get("labels") or {}
    found = []
    argo = argocd_application(workload)
    if argo:
        found.append({"reconciler": "argocd", "name": argo["name"], "namespace": argo["namespace"],
                      "source": argo["source"], "value": argo["value"]})
    if labels.get(FLUX_NAME_LABEL):
        found.append({"reconciler": "flux", "name": labels[FLUX_NAME_LABEL], "namespace": labels.get(FLUX_NAMESPACE_LABEL),
                      "source": "label " + FLUX_NAME_LABEL, "value": labels[FLUX_NAME_LABEL]})
    if len(found) != 1:
        raise Refused("cannot tell which reconciler to freeze for %s: %s; set reconciler (and name, namespace)"
                      % (what, "it carries neither Argo CD's tracking annotation / instance label nor Flux's "
                         "kustomize.toolkit.fluxcd.io labels" if not found else "it carries both Argo CD's "
                         "and Flux's ownership (%s)" % ", ".join(f["source"] for f in found)), "not_detected")
    return found[0]


def resolve_target(api, params):
    """The reconciler, name and namespace to act on (from the options, or detected from the workload)."""
    target = {"reconciler": params["reconciler"], "name": params["name"], "namespace": params["namespace"]}
    workload = params["workload"]
    if workload:
        live = read_workload(api, workload["kind"], workload["namespace"], workload["name"])
        live.setdefault("kind", workload["kind"])
        found = detect_reconciler(live)
        if target["reconciler"] and target["reconciler"] != found["reconciler"]:
            raise Refused("reconciler=%s but %s is deployed by %s (%s=%s); nothing was changed"
                          % (target["reconciler"], describe(workload["kind"], workload["namespace"], workload["name"]),
                             found["reconciler"], found["source"], found["value"]), "mismatch")
        target["reconciler"] = found["reconciler"]
        target["name"] = target["name"] or found["name"]
        target["namespace"] = target["namespace"] or found["namespace"]
        target["detected"] = dict((k, found[k]) for k in ("reconciler", "source", "value"))
    target["reconciler"] = target["reconciler"] or "flux"
    target["namespace"] = target["namespace"] or DEFAULT_NAMESPACE[target["reconciler"]]
    if not target["name"]:
        raise RollbackError("name is required (the Flux object or the Argo CD Application), or give workload to "
                            "detect it")
    return target


def execute(api, params, check_mode):
    kind, ns, name = params["kind"], params["namespace"], params["name"]
    what = "%s %s/%s" % (kind, ns, name)
    path = PATHS[kind]

    def request(method, body=None, dry_run=False):
        query = [("fieldManager", "governed-rollback")] + ([("dryRun", "All")] if dry_run else [])
        return call(what, method.lower() if method == "GET" else "patch", kind.lower(), ns, name, api.request,
                    method, path, {"namespace": ns, "name": name}, query if method != "GET" else None, body,
                    MERGE_PATCH if body is not None else None)

    obj = request("GET")
    if params["state"] == "frozen":
        patch = _gitops.flux_freeze_patch(obj, params["actor"], params["reason"], params["until"],
                                          params["incident_id"], utc_stamp())
    else:
        patch = _gitops.flux_thaw_patch(obj)
    before = {"suspend": _suspend(obj), "record": _gitops.read_record(obj)}
    result = {"changed": patch is not None, "reconciler": "flux",
              "suspend": {"before": _suspend(obj), "after": _suspend(obj)}}
    after = obj
    if patch is not None:
        # The resourceVersion makes the patch fail, changing nothing, when the object changed since it was read.
        patch["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"]
        after = request("PATCH", patch, dry_run=check_mode)
        result["patch"] = patch
    record = _gitops.read_record(after) if params["state"] == "frozen" else before["record"]
    result.update(frozen=_gitops.read_record(after) is not None, record=record,
                  object={"kind": kind, "namespace": ns, "name": name, "uid": after["metadata"].get("uid"),
                          "resource_version": after["metadata"].get("resourceVersion")})
    result["suspend"]["after"] = _suspend(after)
    result["diff"] = {"before": json.dumps(before, indent=2, sort_keys=True) + "\n",
                      "after": json.dumps({"suspend": _suspend(after), "record": _gitops.read_record(after)},
                                          indent=2, sort_keys=True) + "\n"}
    return result


def _argocd_view(project, application):
    """What the freeze touches, for the diff: the project's windows, the Application's auto-sync, the records."""
    state = _gitops.argocd_freeze_state(project, application)
    view = {"application": {"spec.syncPolicy.automated": ((application.get("spec") or {}).get("syncPolicy") or {})
                            .get("automated"), "record": state["record"]}}
    if project is not None:
        view["project"] = {"spec.syncWindows": (project.get("spec") or {}).get("syncWindows"),
                           "record": state["window"]}
    return view


def _argocd_record(project, application):
    state = _gitops.argocd_freeze_state(project, application)
    if state["record"] is None and state["window"] is None:
        return None
    base = state["record"] or dict((k, v) for k, v in state["window"].items() if k != "window")
    return dict(base, previous=(state["record"] or {}).get("previous") or {},
                window=(state["window"] or {}).get("window"))


def execute_argocd(api, params, check_mode):
    """Freeze or thaw an Argo CD Application: plan both patches from what was read (refused, changing nothing, when
    the freeze was changed by someone else), then write - freeze: the window first (syncs stop at once), then
    auto-sync; thaw: auto-sync first (the window still holds), then the window - each with its resourceVersion."""
    application = _argocd.get(api, "Application", params["namespace"], params["name"])
    use_window = params["argocd_method"] in ("both", "sync_window")
    use_auto_sync = params["argocd_method"] in ("both", "auto_sync")
    project = None
    if use_window or params["state"] == "thawed":
        project = _argocd.project_of(api, application, params["project_namespace"])
    if params["state"] == "frozen":
        project_patch, app_patch = _gitops.argocd_freeze_patches(
            project, application, params["actor"], params["reason"], params["until"], params["incident_id"],
            utc_stamp(), window=use_window, auto_sync=use_auto_sync)
        order = (("project", project, project_patch), ("application", application, app_patch))
    else:
        project_patch, app_patch = _gitops.argocd_thaw_patches(project, application)
        order = (("application", application, app_patch), ("project", project, project_patch))
    before_record = _argocd_record(project, application)
    before_view = _argocd_view(project, application)
    after = {"project": project, "application": application}
    patches = {}
    result = {"changed": False, "reconciler": "argocd"}
    try:
        for part, obj, patch in order:
            if patch is None:
                continue
            after[part] = _argocd.patch(api, obj, patch, dry_run=check_mode)
            patches[part] = dict(patch, metadata=dict(patch["metadata"],
                                                      resourceVersion=obj["metadata"]["resourceVersion"]))
            result["changed"] = True
    except RollbackError as error:
        if result["changed"] and not check_mode:
            error.msg += ("; the %s was already patched - run the task again to complete it, or thaw"
                          % " and ".join(patches))
            error.details.update(patches=patches)
        raise
    new_project, new_app = after["project"], after["application"]
    frozen_state = _gitops.argocd_freeze_state(new_project, new_app)
    result.update(
        frozen=frozen_state["record"] is not None or frozen_state["window"] is not None,
        record=_argocd_record(new_project, new_app) if params["state"] == "frozen" else before_record,
        application={"namespace": new_app["metadata"]["namespace"], "name": new_app["metadata"]["name"],
                     "uid": new_app["metadata"].get("uid"), "project": (new_app.get("spec") or {}).get("project"),
                     "resource_version": new_app["metadata"].get("resourceVersion"),
                     "automated": {"before": before_view["application"]["spec.syncPolicy.automated"],
                                   "after": _argocd_view(None, new_app)["application"]["spec.syncPolicy.automated"]}})
    if new_project is not None:
        result["project"] = {"namespace": new_project["metadata"]["namespace"],
                             "name": new_project["metadata"]["name"], "uid": new_project["metadata"].get("uid"),
                             "resource_version": new_project["metadata"].get("resourceVersion"),
                             "sync_windows": {"before": (project.get("spec") or {}).get("syncWindows"),
                                              "after": (new_project.get("spec") or {}).get("syncWindows")}}
    if patches:
        result["patches"] = {"project": patches.get("project"), "application": patches.get("application")}
    result["diff"] = {"before": json.dumps(before_view, indent=2, sort_keys=True) + "\n",
                      "after": json.dumps(_argocd_view(new_project, new_app), indent=2, sort_keys=True) + "\n"}
    return result


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        require_k8s(module)
        if module.params["state"] == "frozen" and not (module.params["actor"] and module.params["reason"]):
            module.fail_json(msg="a freeze records who and why: set actor and reason")
        api = KubeRest(build_api_client(module.params))
        target = resolve_target(api, module.params)
        params = dict(module.params, name=target["name"], namespace=target["namespace"])
        if target["reconciler"] == "argocd":
            result = execute_argocd(api, params, module.check_mode)
        else:
            result = execute(api, params, module.check_mode)
        if target.get("detected"):
            result["detected"] = target["detected"]
    except Exception as exc:  # pylint: disable=broad-except  # anything unforeseen still ends in fail_json
        fail_from_exception(module, exc, changed=bool(getattr(exc, "details", {}).get("patches")))
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
