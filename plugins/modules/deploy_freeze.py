#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: deploy_freeze
short_description: Freeze or thaw deploys of a GitOps-managed workload (Flux), recording who, why, until, incident
version_added: 0.2.0
author: governed.rollback maintainers (@governed)
description:
  - The KFM runbook's step 0, "freeze deploys", for the reconciler that manages the target.
  - Flux - O(state=frozen) sets C(spec.suspend=true) on the Kustomization (or any Flux object with C(spec.suspend),
    such as an ImageUpdateAutomation, through O(kind)) and records the freeze in the annotation
    C(freeze.governed.io/record) - who, why, until, the incident, when, and the previous C(spec.suspend) (or its
    absence). O(state=thawed) restores exactly what the freeze changed - C(spec.suspend) back to its previous value,
    or removed when it was absent - and removes the record.
  - Idempotent - freezing a frozen object or thawing a thawed one changes nothing. An object suspended by someone
    else is frozen by recording the freeze only (its thaw leaves it suspended, as it was).
  - Check mode returns the merge patch and goes through a server-side dry run.
  - Argo CD (a deny sync window on the AppProject and auto-sync switched off) is planned by the pure patch logic in
    C(_gitops) (unit-tested) but not exposed by this module yet.
options:
  state:
    description: Frozen or thawed.
    type: str
    choices: [frozen, thawed]
    default: frozen
  name:
    description: Name of the Flux object (the Kustomization).
    type: str
    required: true
  namespace:
    description: Its namespace.
    type: str
    default: flux-system
  kind:
    description: Kind of the Flux object.
    type: str
    choices: [Kustomization, HelmRelease, ImageUpdateAutomation, GitRepository]
    default: Kustomization
  until:
    description: Until when the freeze is meant to last (free text, e.g. an RFC 3339 time); recorded.
    type: str
extends_documentation_fragment:
  - governed.rollback.k8s_auth
  - governed.rollback.runbook_context
  - governed.rollback.attributes
  - governed.rollback.attributes.ACTIONGROUP_K8S
attributes:
  check_mode:
    support: full
    details: The merge patch goes through a server-side dry run; nothing is changed.
  diff_mode:
    support: full
    details: C(spec.suspend) and the freeze record before and after.
  idempotent:
    support: full
notes:
  - RBAC - C(get) and C(patch) on the Flux kind.
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
"""

RETURN = r"""
frozen:
  description: Whether the object is frozen by a freeze of ours after this task.
  returned: always
  type: bool
record:
  description: The freeze record - C(who), C(why), C(until), C(incident), C(at), C(previous) (the C(spec.suspend)
    the freeze replaced, empty when it was absent). On a thaw, the record that was removed.
  returned: when there is or was a freeze
  type: dict
suspend:
  description: C(spec.suspend) before and after - C(before), C(after) (null when absent).
  returned: always
  type: dict
patch:
  description: The merge patch applied (or, in check mode, that would be).
  returned: when changed
  type: dict
object:
  description: C(kind), C(namespace), C(name), C(uid), C(resource_version) (after).
  returned: always
  type: dict
"""

import json

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.governed.rollback.plugins.module_utils import _argspec, _gitops
from ansible_collections.governed.rollback.plugins.module_utils._common import fail_from_exception, utc_stamp
from ansible_collections.governed.rollback.plugins.module_utils._k8s import KubeRest, build_api_client, require_k8s
from ansible_collections.governed.rollback.plugins.module_utils._workload import MERGE_PATCH, call

PATHS = {
    "Kustomization": "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/{namespace}/kustomizations/{name}",
    "HelmRelease": "/apis/helm.toolkit.fluxcd.io/v2/namespaces/{namespace}/helmreleases/{name}",
    "ImageUpdateAutomation":
        "/apis/image.toolkit.fluxcd.io/v1beta2/namespaces/{namespace}/imageupdateautomations/{name}",
    "GitRepository": "/apis/source.toolkit.fluxcd.io/v1/namespaces/{namespace}/gitrepositories/{name}",
}


def argument_spec():
    return _argspec.compose(dict(
        state=dict(type="str", choices=["frozen", "thawed"], default="frozen"),
        name=dict(type="str", required=True),
        namespace=dict(type="str", default="flux-system"),
        kind=dict(type="str", choices=list(PATHS), default="Kustomization"),
        until=dict(type="str"),
    ), _argspec.K8S_AUTH, _argspec.RUNBOOK_CONTEXT)


def _suspend(obj):
    return (obj.get("spec") or {}).get("suspend")


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
    result = {"changed": patch is not None, "suspend": {"before": _suspend(obj), "after": _suspend(obj)}}
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


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        require_k8s(module)
        if module.params["state"] == "frozen" and not (module.params["actor"] and module.params["reason"]):
            module.fail_json(msg="a freeze records who and why: set actor and reason")
        result = execute(KubeRest(build_api_client(module.params)), module.params, module.check_mode)
    except Exception as exc:  # pylint: disable=broad-except  # anything unforeseen still ends in fail_json
        fail_from_exception(module, exc, changed=False)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
