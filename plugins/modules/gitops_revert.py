#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: gitops_revert
short_description: Roll a GitOps-managed workload back through its config repository, a pull request and Flux
version_added: 0.2.0
author: governed.rollback maintainers (@governed)
description:
  - The KFM runbook's preferred rollback - revert the deploy commit, or set the release to the last-known-good
    digest, on a rollback branch, through a pull request carrying the incident, C(last_good_ref) and the reason,
    merged when the approval allows, then watch the reconcile.
  - Works in a private clone (a temporary directory removed afterwards). The forge's token never reaches a command
    line or any output - git reads it from a 0600 configuration file of its own - and every message is redacted.
  - O(mode=revert) reverts O(revert_commit) (by default the commit that introduced the digest running now) with
    C(git revert); a conflicting revert is refused and nothing is pushed. O(mode=pin) writes O(last_good_ref) into
    the C(images:) entry O(image) of the Kustomization in O(path).
  - The documented rule for the last good release (O(last_good_ref) not given) - walk the first-parent history of
    C(<path>/kustomization.yaml) on O(branch), newest first, reading the entry's digest at each commit; the newest
    digest that differs from the one at the branch head is the last good one.
  - Pushes C(ops/rollback-<component>-<UTC stamp>) with a commit message carrying the incident, C(current_ref),
    C(last_good_ref), the reason and the actor as C(Rollback-*) trailers; opens a pull request through the forge's
    API; with O(merge=true) and an approved O(approval), comments the approval decision on it and merges it,
    otherwise leaves it open for review.
  - Then requests a reconcile (Flux's C(reconcile.fluxcd.io/requestedAt) on the GitRepository and the
    Kustomization) and waits until the source reports the merge commit, the Kustomization is Ready at that revision
    and the workload has rolled out on the target image. A Kustomization frozen by M(governed.rollback.deploy_freeze)
    is resumed for this one reconcile and suspended again once it is applied (the freeze record stays).
  - Refuses, changing nothing - a repository, branch or path the cluster does not reconcile from; a branch that has
    diverged from what Flux deployed (force-pushed, or commits not yet deployed); a live workload that runs neither
    the desired nor the target image (drift); a commit that is not in the branch's history; a conflicting revert; a
    Kustomization suspended by someone else (with O(merge=true); a pull request left open for review is still opened).
  - Idempotent by incident - when the branch already holds this incident's rollback of the component, or a rollback
    pull request for it is open, no second one is opened.
  - Argo CD - when the workload carries Argo CD's tracking annotation C(argocd.argoproj.io/tracking-id) (or its
    instance label C(argocd.argoproj.io/instance)), the reconcile request is Argo CD's hard refresh instead of
    Flux's - the annotation C(argocd.argoproj.io/refresh=hard) on the Application it names (in O(argocd_namespace),
    or the namespace the tracking id names as C(<namespace>_<app>)); an Application that does not exist is refused
    before anything is pushed. The wait is then on the workload's rollout on the target image only - Argo CD's sync
    and health status are not read (this version is tested against Argo CD's CRDs without its controller), and the
    repository check still reads the Flux Kustomization O(kustomization). An Application frozen by
    M(governed.rollback.deploy_freeze) does not sync (its deny window holds) - thaw it first, or run with
    O(wait=false); a warning says so when the Application's auto-sync is off by such a freeze.
  - Helm - with O(helmrelease), the image lives in a Flux HelmRelease the Kustomization applies from O(path), not in
    the Kustomization's C(images:). The pin (and the release history) follows the Helm values rule documented in
    O(values_key) - the HelmRelease manifest's C(spec.values) first, else the chart's C(values.yaml) when the chart
    comes from the same GitRepository. The file is edited line by line, every other line (comments, quoting) kept.
    The reconcile then also asks the HelmRelease to reconcile (C(reconcile.fluxcd.io/requestedAt)) and waits until it
    holds the merged values, has observed them and is Ready, before the workload's rollout. A HelmRelease frozen by
    M(governed.rollback.deploy_freeze) is resumed for this one reconcile and suspended again, like a Kustomization.
options:
  repo_url:
    description:
      - HTTP(S) URL of the config repository, without credentials (the GitRepository's C(spec.url)).
      - When not given, O(repo_url), O(branch) and O(path) are read from the Kustomization O(kustomization) - its
        C(sourceRef) GitRepository's C(spec.url) (credentials stripped) and C(spec.ref.branch), and its
        C(spec.path). A source that follows a tag, a semver range or a commit is refused.
    type: str
  repo_token:
    description:
      - The forge's API token; also used by git over HTTPS. Never logged.
      - Read from E(GITOPS_TOKEN) or E(GITEA_TOKEN) when not given (what an AWX custom credential injects).
    type: str
  forge:
    description: Which forge hosts the repository (its pull-request API).
    type: str
    choices: [gitea]
    default: gitea
  forge_api_url:
    description: The forge's API base URL; derived from O(repo_url) (C(<scheme>://<host>/api/v1)) when not given.
    type: str
  forge_validate_certs:
    description: Verify the forge's TLS certificate.
    type: bool
    default: true
  branch:
    description: The branch Flux reconciles from (the pull request's base); C(main) when O(repo_url) is given,
      else the GitRepository's.
    type: str
  path:
    description: Directory of the component's Kustomization in the repository (the Flux Kustomization's
      C(spec.path)); read from the Kustomization when not given.
    type: str
  mode:
    description: Revert a commit, or pin the last good digest into the Kustomization's C(images:).
    type: str
    choices: [revert, pin]
    default: revert
  revert_commit:
    description: The commit to revert (O(mode=revert)); by default the commit that introduced the digest the branch
      holds now. Must be in the branch's history.
    type: str
  last_good_ref:
    description:
      - The image digest (C(sha256:<hex>), or an image reference C(name@sha256:<hex>) whose digest is taken) to pin
        (O(mode=pin)); found by the documented rule when not given. With O(mode=revert) it is checked against what
        the revert produces.
      - With O(mode=pin), an image reference without a digest (C(name:tag)) pins its tag (C(newTag), replacing
        the entry's C(digest)) - what a workload whose image has no digest runs after an in-cluster rollback.
      - A digest whose workload's image is a tag of the same name is accepted as live (not drift) when every pod is
        Ready and reports that digest as its image ID (the digest the emergency path pins when the pods report one).
    type: str
  image:
    description: The C(images:) entry's C(name); by default the only entry.
    type: str
  helmrelease:
    description:
      - The Flux HelmRelease (applied by O(kustomization) from a manifest in O(path)) whose values hold the image -
        the Helm values pin instead of the Kustomization's C(images:). O(component) and O(workload_name) default to
        its name, O(workload_namespace) to its C(spec.targetNamespace).
    type: str
  helmrelease_namespace:
    description: Namespace of O(helmrelease); O(kustomization_namespace) by default.
    type: str
  values_key:
    description:
      - The dotted key path of the image in the Helm values (C(image), C(api.image)), with O(helmrelease).
      - The rule without it - an image candidate is a mapping holding a string C(repository) and a C(tag) and/or
        C(digest) key (optionally a C(registry)), or a key C(image) whose value is an image reference string. The
        HelmRelease manifest's C(spec.values) is searched first; only when it holds no candidate is the chart's
        C(values.yaml) searched (the chart at C(spec.chart.spec.chart) of the same GitRepository), and a pin there
        is refused when C(spec.values) sets anything under the same path. Exactly one candidate must be found - none
        or several are refused (C(no_image)) naming them; nothing is guessed.
      - A digest is written into the candidate's C(digest) key (refused when there is none - the chart may not
        deploy by digest); a tag (O(last_good_ref) C(name:tag)) into C(tag), emptying C(digest). A string candidate
        becomes C(name@digest) or C(name:tag).
    type: str
  component:
    description: Name of the component (branch name, commit trailers, receipt); the last part of O(path) by default.
    type: str
  kustomization:
    description:
      - The Flux Kustomization that applies O(path). Required, unless O(helmrelease) is given - then it is the
        Kustomization named by the HelmRelease's C(kustomize.toolkit.fluxcd.io/name) and C(/namespace) labels (what the
        emergency path knows of a workload a HelmRelease deploys).
    type: str
  kustomization_namespace:
    description: Namespace of O(kustomization).
    type: str
    default: flux-system
  workload_kind:
    description: Kind of the workload the Kustomization deploys, waited for after the reconcile.
    type: str
    choices: [Deployment, StatefulSet, DaemonSet]
    default: Deployment
  workload_name:
    description: Name of the workload; O(component) by default.
    type: str
  workload_namespace:
    description: Namespace of the workload; the Kustomization's C(targetNamespace) by default.
    type: str
  argocd_namespace:
    description: Argo CD's namespace - where the Application named by the workload's tracking annotation lives, unless
      the annotation names another (C(<namespace>_<app>)).
    type: str
    default: argocd
  container:
    description: The workload's container that runs the image; the one whose image is the entry's by default.
    type: str
  merge:
    description: Merge the pull request when O(approval) is approved; otherwise it is left open for review.
    type: bool
    default: true
  approval:
    description: The decision of M(governed.rollback.rollback_approval); attached to the pull request as a comment.
    type: dict
    default: {}
  delete_branch:
    description: Delete the rollback branch after the merge.
    type: bool
    default: true
  rollback_id:
    description: The rollback's id, as a commit trailer.
    type: str
  expected_binding:
    description: The RV(binding) of an earlier check-mode plan; refused, nothing pushed, when the branch head or the
      images moved since.
    type: dict
extends_documentation_fragment:
  - governed.rollback.k8s_auth
  - governed.rollback.runbook_context
  - governed.rollback.wait
  - governed.rollback.attributes
  - governed.rollback.attributes.ACTIONGROUP_K8S
attributes:
  check_mode:
    support: full
    details: Clones, reverts or pins and commits in the private clone, and returns the diff and the pull request that
      would be opened; nothing is pushed.
  diff_mode:
    support: full
    details: The diff of the revert or pin.
  idempotent:
    support: full
    details: A second run for the same incident and component opens no second pull request.
notes:
  - RBAC - C(get) and C(patch) on C(gitrepositories.source.toolkit.fluxcd.io) and
    C(kustomizations.kustomize.toolkit.fluxcd.io) (and C(helmreleases.helm.toolkit.fluxcd.io) with O(helmrelease));
    C(get) on the workload and C(list) on pods.
  - The forge adapters are documented in C(plugins/module_utils/_forge.py); GitHub and GitLab are one adapter each.
requirements:
  - git
  - kubernetes >= 29.0.0 (Python client)
"""

EXAMPLES = r"""
- name: Plan the rollback of aureus-api (check mode - the diff and the pull request, nothing pushed)
  governed.rollback.gitops_revert:
    repo_url: https://git.example.com/platform/aureus-deploy.git
    path: apps/aureus-api
    kustomization: aureus-api
    incident_id: INC-12345
    reason: v1.5.0 answers 500 on /api/query
    actor: oncall-sre
  check_mode: true
  register: plan

- name: Pin aureus-web's last good digest into its HelmRelease's values (image.digest), merge, wait for the release
  governed.rollback.gitops_revert:
    mode: pin
    kustomization: aureus-web
    helmrelease: aureus-web
    values_key: image
    approval: "{{ approval }}"
    incident_id: INC-12346
    reason: v2.1.0 breaks the login page
    actor: oncall-sre

- name: Pin the last good digest, merge with the approval, wait for Flux
  governed.rollback.gitops_revert:
    repo_url: https://git.example.com/platform/aureus-deploy.git
    path: apps/aureus-api
    mode: pin
    kustomization: aureus-api
    approval: "{{ approval }}"
    expected_binding: "{{ plan.binding }}"
    incident_id: INC-12345
    reason: v1.5.0 answers 500 on /api/query
    actor: oncall-sre
"""

RETURN = r"""
from_ref:
  description: The plan contract's from reference - the image running now (C(name@sha256:...)).
  returned: when a plan was made
  type: str
to_ref:
  description: The plan contract's to reference - the image rolled back to.
  returned: when a plan was made
  type: str
current_ref:
  description: The branch head and image now - C(sha), C(image), C(digest), and C(deployed_sha) (Flux's artifact).
  returned: when a plan was made
  type: dict
rollback_target_ref:
  description: What the rollback goes to - C(image), C(digest), C(sha) (the merge commit, once merged).
  returned: when a plan was made
  type: dict
skipped_reason:
  description: Why nothing is to be done (already rolled back for this incident, pull request already open), else null.
  returned: always
  type: str
approval_facts:
  description: C(to_revision), C(previous_revision), C(current_revision) - releases numbered oldest first, so
    rolling back to the previous release is the C(deployment_last) row.
  returned: when a plan was made
  type: dict
binding:
  description: What an approval of this plan is for (branch head, from/to image, mode, reverted commit); pass it back
    as O(expected_binding).
  returned: when a plan was made
  type: dict
receipt_fields:
  description: The receipt fields (C(component), C(changed_surfaces), C(current_ref) (git SHA),
    C(rollback_target_ref) (merge SHA), C(from_version)/C(to_version) (images), C(pull_request_url),
    C(pull_request_number), C(merge_sha), C(details)).
  returned: when a plan was made
  type: dict
source:
  description: Where the rollback goes - C(repo_url), C(branch), C(path) (given, or read from the Kustomization); with
    O(helmrelease) also C(kustomization) (given, or read from the HelmRelease's labels).
  returned: once the source is known (also on failure)
  type: dict
pull_request:
  description: The pull request opened (or, in check mode, that would be opened) - C(number), C(url), C(head),
    C(base), C(title), C(body), C(state), C(merged), C(merge_sha).
  returned: when a plan was made
  type: dict
merge_sha:
  description: The merge commit on O(branch).
  returned: when merged
  type: str
branch:
  description: The rollback branch.
  returned: when a plan was made
  type: str
commit_diff:
  description: The diff of the revert or pin.
  returned: when a plan was made
  type: str
reconcile:
  description:
    - The reconcile - C(reconciler) (C(flux) or C(argocd)), C(done), C(requested_at), C(timings)
      (C(source_seconds), C(applied_seconds), C(rollout_seconds)), C(last) (Flux's conditions and the workload, the
      failure evidence), C(through_freeze).
    - Helm - C(helmrelease) (C(<namespace>/<name>)), C(through_helm_freeze), C(last.helmrelease) and
      C(timings.released_seconds) (the HelmRelease Ready on the merged values).
    - Argo CD - also C(application) (C(<namespace>/<name>)), C(refresh) (C(hard)) and C(waited_on)
      (C(workload rollout)); C(timings) has C(rollout_seconds) only.
  returned: when merged and O(wait=true)
  type: dict
refused:
  description: Why it was refused (nothing pushed) - C(not_reconciled), C(diverged), C(dirty), C(not_in_history),
    C(conflict), C(no_image), C(no_previous_release), C(suspended), C(changed_since_approved), C(not_found),
    C(forbidden).
  returned: on refusal
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule, env_fallback
from ansible_collections.governed.rollback.plugins.module_utils import _argocd, _argspec, _flux, _gitops
from ansible_collections.governed.rollback.plugins.module_utils import _gitops_helm
from ansible_collections.governed.rollback.plugins.module_utils._common import (
    Refused, RollbackError, check_binding, fail_from_exception, utc_now,
)
from ansible_collections.governed.rollback.plugins.module_utils._forge import forge_for
from ansible_collections.governed.rollback.plugins.module_utils._git import Clone
from ansible_collections.governed.rollback.plugins.module_utils._k8s import KubeRest, build_api_client, require_k8s
from ansible_collections.governed.rollback.plugins.module_utils._k8s_objects import argocd_application
from ansible_collections.governed.rollback.plugins.module_utils._workload import KINDS, call


def argument_spec():
    return _argspec.compose(dict(
        repo_url=dict(type="str"),
        repo_token=dict(type="str", no_log=True, fallback=(env_fallback, ["GITOPS_TOKEN", "GITEA_TOKEN"])),
        forge=dict(type="str", choices=["gitea"], default="gitea"),
        forge_api_url=dict(type="str"),
        forge_validate_certs=dict(type="bool", default=True),
        branch=dict(type="str"),
        path=dict(type="str"),
        mode=dict(type="str", choices=["revert", "pin"], default="revert"),
        revert_commit=dict(type="str"),
        last_good_ref=dict(type="str"),
        image=dict(type="str"),
        helmrelease=dict(type="str"),
        helmrelease_namespace=dict(type="str"),
        values_key=dict(type="str", no_log=False),
        component=dict(type="str"),
        kustomization=dict(type="str"),
        kustomization_namespace=dict(type="str", default="flux-system"),
        workload_kind=dict(type="str", choices=list(KINDS), default="Deployment"),
        workload_name=dict(type="str"),
        workload_namespace=dict(type="str"),
        argocd_namespace=dict(type="str", default=_argocd.DEFAULT_NAMESPACE),
        container=dict(type="str"),
        merge=dict(type="bool", default=True),
        approval=dict(type="dict", default={}),
        delete_branch=dict(type="bool", default=True),
        rollback_id=dict(type="str"),
        expected_binding=dict(type="dict"),
    ), _argspec.K8S_AUTH, _argspec.RUNBOOK_CONTEXT, _argspec.WAIT)


class Run(object):
    """One gitops_revert run: the inputs, the I/O adapters and the result being built."""

    def __init__(self, params, api, forge, check_mode):
        for name in ("helmrelease", "helmrelease_namespace", "values_key"):  # callers of an older argument spec
            params.setdefault(name, None)
        self.p = params
        self.api = api
        self.forge = forge
        self.check_mode = check_mode
        self.path = params["path"].strip("/").lstrip("./") or "."
        self.component = (params["component"] or params["helmrelease"]
                          or os.path.basename(self.path.rstrip("/")))
        self.helm = None  # with helmrelease: where the values pin goes (the file, the candidate)
        self.hr = None
        self.result = {"changed": False, "skipped_reason": None,
                       "source": {"repo_url": params["repo_url"], "branch": params["branch"], "path": self.path}}
        if params["helmrelease"]:  # the Kustomization may have been read from the HelmRelease's labels
            self.result["source"]["kustomization"] = params["kustomization"]
        self.warnings = []
        self.pushed = False
        self.open_pr = None
        self.message = None
        self.argocd_app = None

    # ---- reading the world
    def read_reconciler(self):
        ns, name = self.p["kustomization_namespace"], self.p["kustomization"]
        self.kust = _flux.get(self.api, "Kustomization", ns, name)
        self.source = _flux.source_of(self.api, self.kust)
        _gitops.check_reconciled_from(self.p["repo_url"], self.p["branch"], self.path, self.source, self.kust)
        self.frozen = _gitops.read_record(self.kust)
        # Suspended by someone else: a merge could not be applied; a pull request left for review still can be opened
        # (the emergency path's re-alignment, when the on-call suspended Flux by hand first).
        if (self.kust.get("spec") or {}).get("suspend") and not self.frozen and self.p["merge"]:
            raise Refused("Kustomization %s/%s is suspended and no deploy freeze of ours says why; nothing was "
                          "changed. Find out who suspended it (flux resume kustomization %s -n %s when it may run)"
                          % (ns, name, name, ns), "suspended")
        if self.p["helmrelease"]:
            self.read_helmrelease()
        self.deployed_sha = _gitops.revision_sha(((self.source.get("status") or {}).get("artifact") or {})
                                                 .get("revision"))
        if not self.deployed_sha:
            raise Refused("GitRepository %s/%s has no artifact yet (not reconciled); nothing was changed"
                          % (self.source["metadata"]["namespace"], self.source["metadata"]["name"]), "not_ready")

    def read_helmrelease(self):
        ns = self.p["helmrelease_namespace"] or self.p["kustomization_namespace"]
        name = self.p["helmrelease"]
        self.hr = _flux.get(self.api, "HelmRelease", ns, name)
        labels = (self.hr.get("metadata") or {}).get("labels") or {}
        kmeta = self.kust["metadata"]
        if (labels.get("kustomize.toolkit.fluxcd.io/name"), labels.get("kustomize.toolkit.fluxcd.io/namespace")) != (
                kmeta["name"], kmeta["namespace"]):
            raise Refused("HelmRelease %s/%s is not applied by Kustomization %s/%s (its labels name %s/%s); nothing "
                          "was changed. Name the Kustomization that applies it"
                          % (ns, name, kmeta["namespace"], kmeta["name"],
                             labels.get("kustomize.toolkit.fluxcd.io/namespace"),
                             labels.get("kustomize.toolkit.fluxcd.io/name")), "not_reconciled")
        self.hr_frozen = _gitops.read_record(self.hr)
        if (self.hr.get("spec") or {}).get("suspend") and not self.hr_frozen and self.p["merge"]:
            raise Refused("HelmRelease %s/%s is suspended and no deploy freeze of ours says why; nothing was changed. "
                          "Find out who suspended it (flux resume helmrelease %s -n %s when it may run)"
                          % (ns, name, name, ns), "suspended")

    def helm_files(self, clone, sha):
        """The HelmRelease manifest in the path (``(rel, text)``) and the chart's values file (``(text, rel)`` or
        None when the chart is not in this repository)."""
        name = self.p["helmrelease"]
        base = clone.dir if self.path == "." else os.path.join(clone.dir, self.path)
        found = []
        for entry in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            if not entry.endswith((".yaml", ".yml")):
                continue
            rel = entry if self.path == "." else "%s/%s" % (self.path, entry)
            text = clone.show(sha, rel)
            if text is not None and _gitops_helm.helmrelease_doc(text, name, rel) is not None:
                found.append((rel, text))
        if len(found) != 1:
            raise Refused("%s holds %s HelmRelease named %r at %s%s; check path and helmrelease"
                          % (self.path, len(found) or "no", name, sha[:12],
                             " (%s)" % ", ".join(r for r, _t in found) if found else ""), "not_found")
        rel, text = found[0]
        doc = _gitops_helm.helmrelease_doc(text, name, rel)[1]
        chart = ((doc.get("spec") or {}).get("chart") or {}).get("spec") or {}
        ref = chart.get("sourceRef") or {}
        smeta = self.source["metadata"]
        chart_values = None
        if (ref.get("kind") == "GitRepository" and ref.get("name") == smeta["name"]
                and (ref.get("namespace") or doc["metadata"].get("namespace") or smeta["namespace"])
                == smeta["namespace"] and chart.get("chart")):
            chart_rel = "%s/values.yaml" % chart["chart"].strip("/").lstrip("./")
            chart_text = clone.show(sha, chart_rel)
            chart_values = (chart_text, chart_rel) if chart_text is not None else None
        return rel, text, doc, chart_values

    def helm_entry(self, clone, sha):
        """The Helm values pin's target at ``sha`` by the rule, as a Kustomization-like entry (``name``, ``digest``,
        ``newTag``) for the shared steps; the file it lives in is the one the pin edits and whose history is read."""
        rel, text, doc, chart_values = self.helm_files(clone, sha)
        info, target = _gitops_helm.current_image(text, rel, chart_values, self.p["values_key"],
                                                  self.p["helmrelease"])
        target["rel"] = rel if target["file"] == "release" else chart_values[1]
        target["release_rel"] = rel
        self.helm = target
        self.kust_namespace = (doc.get("spec") or {}).get("targetNamespace") or doc["metadata"].get("namespace")
        entry = {"name": info["repository"]}
        if info["digest"]:
            entry["digest"] = info["digest"]
        if info["tag"]:
            entry["newTag"] = info["tag"]
        return target["rel"], entry

    def helm_digest_at(self, clone, sha):
        text = clone.show(sha, self.helm["rel"])
        if text is None:
            return None
        try:
            if self.helm["file"] == "release":
                found = _gitops_helm.helmrelease_doc(text, self.p["helmrelease"], self.helm["rel"])
                values = _gitops_helm.release_values(found[1]) if found else {}
            else:
                docs = _gitops_helm.load(text, self.helm["rel"])
                values = docs[0] if docs and isinstance(docs[0], dict) else {}
            if _gitops_helm.lookup(values, self.helm["candidate"]["path"]) is None:
                return None
            return _gitops_helm.image_of(values, self.helm["candidate"])["digest"]
        except (RollbackError, AttributeError, TypeError):
            return None

    def helm_read_after(self, clone):
        """The entry after a revert or pin, read back from the working tree by the same rule."""
        with open(os.path.join(clone.dir, self.helm["rel"])) as handle:
            text = handle.read()
        if self.helm["file"] == "release":
            values = _gitops_helm.release_values(_gitops_helm.helmrelease_doc(text, self.p["helmrelease"],
                                                                              self.helm["rel"])[1])
        else:
            values = _gitops_helm.load(text, self.helm["rel"])[0]
        info = _gitops_helm.image_of(values, self.helm["candidate"])
        entry = {"name": info["repository"]}
        if info["digest"]:
            entry["digest"] = info["digest"]
        if info["tag"]:
            entry["newTag"] = info["tag"]
        return entry

    def kustomization_file(self, clone, sha):
        for name in _gitops.KUSTOMIZATION_FILES:
            rel = name if self.path == "." else "%s/%s" % (self.path, name)
            text = clone.show(sha, rel)
            if text is not None:
                return rel, text
        raise Refused("%s has no kustomization.yaml at %s on %s; check path"
                      % (self.path, sha[:12], self.p["branch"]), "not_found")

    def workload_ref(self, entry):
        kind = self.p["workload_kind"]
        namespace = (self.p["workload_namespace"] or (self.kust.get("spec") or {}).get("targetNamespace")
                     or self.kust_namespace or "default")
        name = self.p["workload_name"] or (self.p["helmrelease"] if self.helm else self.component)
        workload = call("%s %s/%s" % (kind, namespace, name), "get", KINDS[kind][0], namespace, name, self.api.get,
                        kind, namespace, name)
        containers = ((workload.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers", [])
        container = self.p["container"]
        if not container:
            names = (entry.get("newName") or entry.get("name"), entry.get("name"))
            matching = [c["name"] for c in containers
                        if (c.get("image") or "").split("@")[0].rsplit(":", 1)[0] in names]
            container = matching[0] if matching else (containers[0]["name"] if containers else None)
        live = dict((c.get("name"), c.get("image")) for c in containers).get(container)
        ref = {"kind": kind, "namespace": namespace, "name": name, "container": container, "live_image": live,
               "uid": workload["metadata"].get("uid"), "object": workload}
        tracked = argocd_application(workload)
        if tracked:
            # Read now, so an Application that is not there is refused before anything is pushed.
            self.argocd_app = _argocd.get(self.api, "Application", tracked["namespace"] or self.p["argocd_namespace"],
                                          tracked["name"])
            ref["argocd"] = {"namespace": self.argocd_app["metadata"]["namespace"], "name": tracked["name"],
                             "source": tracked["source"], "value": tracked["value"]}
        return ref

    def runs_digest(self, workload, live, target):
        """A workload whose image has only a tag, when every pod reports the target digest for it (the pin of an
        emergency rollback's live digest)."""
        if not target["digest"] or "@" in (live or "") or _gitops.image_name(live) != _gitops.image_name(
                target["image"]):
            return False
        pods = _flux.workload_pods(self.api, workload["kind"], workload["namespace"], workload["name"],
                                   workload["object"])
        return _gitops.pods_report_digest(pods, workload["container"], target["digest"])

    # ---- the plan
    def plan(self, clone):
        p = self.p
        clone.clone(p["branch"])
        head = clone.head()
        self.head = head
        if p["helmrelease"]:
            rel, entry = self.helm_entry(clone, head)
        else:
            rel, text = self.kustomization_file(clone, head)
            self.kust_namespace = None
            for line in text.splitlines():
                if line.startswith("namespace:"):
                    self.kust_namespace = line.split(":", 1)[1].strip()
            images = _gitops.parse_images(text)
            entry = _gitops.select_image(images, p["image"], "%s at %s" % (rel, head[:12]))
        current = {"sha": head, "image": _gitops.image_ref(entry), "digest": entry.get("digest"),
                   "deployed_sha": self.deployed_sha}
        self.result["current_ref"] = current
        log = clone.log(rel)
        done = _gitops.find_rollback(log, p["incident_id"], self.component)
        if done:
            return self.already(done, current)
        prefix = "%s%s-" % (_gitops.BRANCH_PREFIX, _gitops.slug(self.component))
        for pr in self.forge.pull_requests(prefix):
            if "(%s)" % p["incident_id"] in pr["title"]:
                self.open_pr = pr
                break
        # Diverged: Flux deployed a commit the branch does not hold, or the branch holds commits not yet deployed.
        if self.deployed_sha != head:
            ahead = clone.is_ancestor(self.deployed_sha, head) if clone.resolve(self.deployed_sha) else False
            raise Refused(
                "branch %s (%s) has diverged from what Flux deployed (%s): %s; nothing was changed. %s"
                % (p["branch"], head[:12], self.deployed_sha[:12],
                   "the branch has commits not deployed yet" if ahead else "the deployed commit is not in its history",
                   "Reconcile first (flux reconcile source git %s) and re-plan" % self.source["metadata"]["name"]
                   if ahead else "Find out who rewrote the branch"), "diverged")
        releases = _gitops.digest_history([(e["sha"], self.entry_digest(clone, e["sha"], rel, entry["name"]))
                                           for e in log])
        reverted = None
        if p["mode"] == "revert":
            reverted = self.revert_target(clone, releases, log)
        ref = p["last_good_ref"]
        target_tag = _gitops.tag_of(ref) if p["mode"] == "pin" and ref else None
        target_digest = _gitops.digest_of(ref) if ref and not target_tag else None
        if p["mode"] == "pin" and not target_digest and not target_tag:
            last_good = _gitops.last_good_release(releases, current["digest"])
            if not last_good:
                raise Refused("%s has no earlier release of %s with another digest; give last_good_ref"
                              % (rel, entry["name"]), "no_previous_release")
            target_digest = last_good["digest"]
        workload = self.workload_ref(entry)
        self.workload = dict((k, v) for k, v in workload.items() if k != "object")
        branch = _gitops.rollback_branch(self.component, utc_now())
        clone.checkout_new(branch)
        if p["mode"] == "revert":
            conflicts = clone.revert(reverted)
            if conflicts:
                raise Refused("reverting %s conflicts with later changes on %s (%s); nothing was pushed. Revert it by "
                              "hand, or pin last_good_ref with mode=pin"
                              % (reverted[:12], p["branch"], ", ".join(conflicts)), "conflict", conflicts=conflicts)
            if self.helm:
                after = self.helm_read_after(clone)
            else:
                with open(os.path.join(clone.dir, rel)) as handle:
                    after = _gitops.select_image(_gitops.parse_images(handle.read()), entry["name"], rel)
            if target_digest and after.get("digest") != target_digest:
                raise Refused("reverting %s gives %s, not last_good_ref %s; nothing was pushed"
                              % (reverted[:12], after.get("digest"), target_digest), "conflict")
            target_entry = after
        else:
            with open(os.path.join(clone.dir, rel)) as handle:
                text = handle.read()
            if self.helm:
                pinned = _gitops_helm.pin(text, self.helm["candidate"], self.helm["values_path"],
                                          digest=None if target_tag else target_digest, tag=target_tag,
                                          doc_index=self.helm["doc_index"], where=rel)
            else:
                pinned = (_gitops.pin_tag(text, entry["name"], target_tag) if target_tag
                          else _gitops.pin_digest(text, entry["name"], target_digest))
            with open(os.path.join(clone.dir, rel), "w") as handle:
                handle.write(pinned)
            if target_tag:
                target_entry = dict(entry, newTag=target_tag)
                target_entry.pop("digest", None)
            else:
                target_entry = dict(entry, digest=target_digest)
                target_entry.pop("newTag", None)
        target = {"image": _gitops.image_ref(target_entry), "digest": target_entry.get("digest"), "sha": None}
        self.result["rollback_target_ref"] = target
        self.result["from_ref"], self.result["to_ref"] = current["image"], target["image"]
        live = workload["live_image"]
        if live not in (current["image"], target["image"]) and not self.runs_digest(workload, live, target):
            raise Refused("the live %s %s/%s runs %s, neither what %s holds (%s) nor the target (%s): the cluster has "
                          "drifted from git; nothing was changed. Find out who changed it"
                          % (workload["kind"], workload["namespace"], workload["name"], live, p["branch"],
                             current["image"], target["image"]), "dirty")
        if self.open_pr and not p["merge"]:
            self.result["skipped_reason"] = ("pull request #%s for incident %s is already open for review (%s)"
                                             % (self.open_pr["number"], p["incident_id"], self.open_pr["url"]))
            self.result["pull_request"] = self.open_pr
            return None
        if target["image"] == current["image"] and not self.open_pr:
            self.result["skipped_reason"] = "%s already holds %s on %s" % (rel, target["image"], p["branch"])
            return None
        self.result["approval_facts"] = _gitops.release_revisions(releases, target["digest"])
        binding = _gitops.plan_binding(current, target, self.kust["metadata"].get("uid"), p["mode"], reverted)
        self.result["binding"] = binding
        if p["expected_binding"]:
            check_binding("the config repository %s (%s)" % (p["repo_url"], p["branch"]), p["expected_binding"],
                          binding)
        message = _gitops.commit_message(p["mode"], self.component, p["incident_id"], p["reason"], p["actor"],
                                         current, target, reverted, p["rollback_id"])
        self.message = message
        clone.commit_all(message)
        diff = clone.diff(head)
        pr = _gitops.pull_request(p["mode"], self.component, p["incident_id"], p["reason"], p["actor"], current,
                                  target, branch, p["branch"], diff, reverted)
        if self.open_pr:
            pr = dict(self.open_pr)
            branch = pr["head"]
        self.result.update(branch=branch, commit_diff=diff, pull_request=pr, changed=True)
        self.result["receipt_fields"] = self.receipt_fields(current, target, reverted, pr)
        return branch

    def entry_digest(self, clone, sha, rel, name):
        if self.helm:
            return self.helm_digest_at(clone, sha)
        text = clone.show(sha, rel)
        if text is None:
            return None
        found = [e for e in _gitops.parse_images(text) if e.get("name") == name]
        return found[0].get("digest") if found else None

    def revert_target(self, clone, releases, log):
        given = self.p["revert_commit"]
        if given:
            sha = clone.resolve(given)
            if not sha or not clone.is_ancestor(sha, "HEAD"):
                raise Refused("commit %s is not in the history of %s; nothing was changed. Name a commit of %s"
                              % (given, self.p["branch"], self.p["branch"]), "not_in_history")
        else:
            if not releases:
                raise Refused("no release of the image is recorded in %s's history" % self.path, "no_previous_release")
            sha = releases[0]["sha"]
        if _gitops.is_reverted(sha, _gitops.reverted_shas(e["message"] for e in log)):
            raise Refused("commit %s is already reverted on %s; nothing was changed" % (sha[:12], self.p["branch"]),
                          "already_reverted")
        return sha

    def already(self, done, current):
        self.result["skipped_reason"] = ("%s already holds the rollback of %s for incident %s (commit %s)"
                                         % (self.p["branch"], self.component, self.p["incident_id"], done["sha"][:12]))
        trailers = _gitops.parse_trailers(done["message"])
        target = {"image": trailers.get(_gitops.T_LAST_GOOD), "digest": (trailers.get(_gitops.T_LAST_GOOD) or "")
                  .rpartition("@")[2] or None, "sha": current["sha"]}
        self.result.update(from_ref=current["image"], to_ref=current["image"], rollback_target_ref=target)
        return None

    def receipt_fields(self, current, target, reverted, pr, merge_sha=None, reconcile=None):
        return {
            "component": self.component,
            "changed_surfaces": ["gitops"],
            "current_ref": current["sha"],
            "rollback_target_ref": merge_sha,
            "from_version": current["image"],
            "to_version": target["image"],
            "pull_request_url": pr.get("url"),
            "pull_request_number": pr.get("number"),
            "merge_sha": merge_sha,
            "details": {"repository": self.p["repo_url"], "branch": self.p["branch"], "path": self.path,
                        "mode": self.p["mode"], "reverted_commit": reverted, "current_digest": current["digest"],
                        "target_digest": target["digest"], "deployed_sha": current.get("deployed_sha"),
                        "rollback_branch": pr.get("head"), "reconcile": reconcile},
        }

    # ---- acting
    def act(self, clone, branch):
        p = self.p
        pr = self.result["pull_request"]
        if not pr.get("number"):
            clone.push(branch)
            self.pushed = True
            try:
                pr = self.forge.open_pull_request(pr)
            except RollbackError:
                # No pull request, so no branch left behind either (best effort: the forge may be down).
                if clone.run("push", "--quiet", "origin", "--delete", branch).ok:
                    self.pushed = False
                raise
            self.result["pull_request"] = pr
        current, target = self.result["current_ref"], self.result["rollback_target_ref"]
        reverted = self.result["binding"]["reverted_commit"]
        self.result["receipt_fields"] = self.receipt_fields(current, target, reverted, pr)
        if not _gitops.may_merge(p["merge"], p["approval"]):
            self.warnings.append("pull request #%s left open for review (%s)" % (
                pr["number"], "merge=false" if not p["merge"] else "the approval does not allow a merge"))
            return
        self.forge.comment(pr["number"], _gitops.approval_comment(p["approval"]))
        # The merge commit on the branch carries the rollback's message and trailers too (first-parent history).
        merge_sha = self.forge.merge(pr["number"], "Merge rollback of %s for %s (#%s)\n\n%s"
                                     % (self.component, p["incident_id"], pr["number"], self.message or ""))
        pr = dict(pr, merged=True, merge_sha=merge_sha, state="closed")
        self.result.update(pull_request=pr, merge_sha=merge_sha)
        target = dict(target, sha=merge_sha)
        self.result["rollback_target_ref"] = target
        self.result["receipt_fields"] = self.receipt_fields(current, target, reverted, pr, merge_sha)
        if p["delete_branch"]:
            try:
                self.forge.delete_branch(pr["head"])
            except RollbackError as error:
                self.warnings.append("the rollback branch %s was not deleted: %s" % (pr["head"], error.msg))
        if p["wait"]:
            self.reconcile(merge_sha, current, target, reverted, pr)

    def reconcile(self, merge_sha, current, target, reverted, pr):
        if self.argocd_app is not None:
            self.reconcile_argocd(merge_sha, current, target, reverted, pr)
            return
        through_freeze = bool(self.frozen and (self.kust.get("spec") or {}).get("suspend"))
        requested_at = _flux.request_reconcile(self.api, [self.source])

        def on_source(_source, kust):
            if through_freeze:
                _flux.set_suspend(self.api, kust, False)
            _flux.request_reconcile(self.api, [kust])

        workload = dict(self.workload, image=target["image"])
        gate, helm_state = (self.helm_gate(target) if self.helm else (None, {}))
        try:
            done, timings, last = _flux.wait_applied(self.api, self.source, self.kust, merge_sha, workload,
                                                     self.p["wait_timeout"], on_source=on_source, gate=gate)
        finally:
            if through_freeze:
                _flux.set_suspend(self.api, self.kust, True)
            if helm_state.get("resumed"):
                _flux.set_suspend(self.api, self.hr, True)
        record = {"reconciler": "flux", "done": done, "requested_at": requested_at, "timings": timings, "last": last,
                  "through_freeze": through_freeze}
        if self.helm:
            record.update(helmrelease="%s/%s" % (self.hr["metadata"]["namespace"], self.hr["metadata"]["name"]),
                          through_helm_freeze=bool(helm_state.get("resumed")))
        self.result["reconcile"] = record
        self.result["receipt_fields"] = self.receipt_fields(current, target, reverted, pr, merge_sha,
                                                            dict(record, last=None))
        if not done:
            progress = last.get("progress") or {}
            raise RollbackError(
                "the rollback was merged (%s, pull request #%s) but Flux did not apply it within %ss: source at %s, "
                "Kustomization Ready=%s (%s: %s), workload %s. The merge stays on %s; see reconcile.last"
                % (merge_sha[:12], pr.get("number"), self.p["wait_timeout"], progress.get("source_revision"),
                   progress.get("ready_status"), progress.get("ready_reason"), progress.get("ready_message"),
                   (last.get("workload") or {}).get("rollout", "not checked"), self.p["branch"]),
                **dict((k, v) for k, v in self.result.items() if k != "changed"))

    def helm_gate(self, target):
        """The HelmRelease step of the wait: once the Kustomization applied the merge, resume a HelmRelease our
        freeze suspended, request its reconcile, then ready when it holds the target in its values, observed them,
        handled the request and is Ready."""
        state = {"requested": None, "resumed": False}
        meta = self.hr["metadata"]

        def gate(_kust):
            if state["requested"] is None:
                if self.hr_frozen and (self.hr.get("spec") or {}).get("suspend"):
                    _flux.set_suspend(self.api, self.hr, False)
                    state["resumed"] = True
                state["requested"] = _flux.request_reconcile(self.api, [self.hr])
            live = _flux.get(self.api, "HelmRelease", meta["namespace"], meta["name"])
            view = _gitops_helm.release_progress(live, state["requested"], self.helm["candidate"], target["image"])
            return view["ready"], view
        return gate, state

    def reconcile_argocd(self, merge_sha, current, target, reverted, pr):
        """Argo CD tracks the workload: a hard refresh of its Application, then the workload's rollout (Argo CD's own
        sync status is not read)."""
        app = self.argocd_app
        where = "%s/%s" % (app["metadata"]["namespace"], app["metadata"]["name"])
        if _gitops.read_record(app) is not None:
            self.warnings.append("Argo CD Application %s is frozen by deploy_freeze (auto-sync off): the refresh "
                                 "shows the merge as OutOfSync but nothing syncs it until the freeze is thawed" % where)
        requested_at = utc_now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        _argocd.request_refresh(self.api, app)
        workload = dict(self.workload, image=target["image"])
        done, timings, last = _argocd.wait_rollout(self.api, workload, self.p["wait_timeout"])
        record = {"reconciler": "argocd", "application": where, "refresh": "hard", "done": done,
                  "requested_at": requested_at, "timings": timings, "last": last, "through_freeze": False,
                  "waited_on": "workload rollout"}
        self.result["reconcile"] = record
        self.result["receipt_fields"] = self.receipt_fields(current, target, reverted, pr, merge_sha,
                                                            dict(record, last=None))
        if not done:
            raise RollbackError(
                "the rollback was merged (%s, pull request #%s) and Argo CD's Application %s was asked for a hard "
                "refresh, but %s %s/%s did not roll out on %s within %ss (%s). Argo CD's sync status is not read by "
                "this version: check the Application (argocd app get %s). The merge stays on %s; see reconcile.last"
                % (merge_sha[:12], pr.get("number"), where, workload["kind"], workload["namespace"],
                   workload["name"], target["image"], self.p["wait_timeout"],
                   (last.get("workload") or {}).get("rollout"), where, self.p["branch"]),
                **dict((k, v) for k, v in self.result.items() if k != "changed"))


def execute(run, check_mode, diff_mode=False):
    """Plan (always) and act (unless check mode); the result is built on ``run.result`` as it goes, so a failure
    half-way still reports what was done (the branch pushed, the pull request opened)."""
    params = run.p
    for name in ("incident_id", "reason"):
        if not params[name]:
            raise RollbackError("%s is required: it goes into the rollback commit and pull request, and a second run "
                                "for the same incident recognizes the first by it" % name)
    run.read_reconciler()
    auth = run.forge.git_auth_header()
    with Clone(params["repo_url"], auth, secrets=[params["repo_token"]]) as clone:
        branch = run.plan(clone)
        if branch and not check_mode:
            run.act(clone, branch)
    result = run.result
    if diff_mode and result.get("commit_diff"):
        result["diff"] = {"prepared": result["commit_diff"]}
    return result


def resolve_kustomization(api, params):
    """The Kustomization that applies the HelmRelease, from its labels, when only ``helmrelease`` is given."""
    if params["kustomization"]:
        return
    if not params["helmrelease"]:
        raise RollbackError("kustomization is required (or helmrelease: its Kustomization is then read from its labels)")
    namespace = params["helmrelease_namespace"] or params["kustomization_namespace"]
    labels = (_flux.get(api, "HelmRelease", namespace, params["helmrelease"]).get("metadata") or {}).get("labels") or {}
    if not labels.get("kustomize.toolkit.fluxcd.io/name"):
        raise Refused("HelmRelease %s/%s carries no kustomize.toolkit.fluxcd.io/name label: no Flux Kustomization "
                      "applies it from git, so there is no repository to roll back in; nothing was changed"
                      % (namespace, params["helmrelease"]), "not_reconciled")
    params["helmrelease_namespace"] = namespace
    params["kustomization"] = labels["kustomize.toolkit.fluxcd.io/name"]
    params["kustomization_namespace"] = labels.get("kustomize.toolkit.fluxcd.io/namespace") or namespace


def resolve_source(api, params):
    """Fill repo_url, branch and path from the Kustomization when repo_url is not given (the emergency path's
    re-alignment knows the workload's Kustomization, not its repository); ``branch`` defaults to main otherwise."""
    if params["repo_url"]:
        if not params["path"]:
            raise RollbackError("path is required with repo_url (or give neither: both are then read from "
                                "Kustomization %s/%s)" % (params["kustomization_namespace"], params["kustomization"]))
        params["branch"] = params["branch"] or "main"
        return None
    kust = _flux.get(api, "Kustomization", params["kustomization_namespace"], params["kustomization"])
    source = _gitops.reconciled_source(_flux.source_of(api, kust), kust)
    params["repo_url"] = source["repo_url"]
    params["branch"] = params["branch"] or source["branch"]
    params["path"] = params["path"] or source["path"]
    return source


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run = None
    try:
        require_k8s(module)
        if not module.params["repo_token"]:
            raise RollbackError("repo_token is required (or GITOPS_TOKEN / GITEA_TOKEN in the environment)")
        api = KubeRest(build_api_client(module.params))
        resolve_kustomization(api, module.params)
        resolve_source(api, module.params)
        forge = forge_for(module.params["forge"], module.params["repo_url"], module.params["repo_token"],
                          api_url=module.params["forge_api_url"],
                          validate_certs=module.params["forge_validate_certs"])
        run = Run(module.params, api, forge, module.check_mode)
        result = execute(run, module.check_mode, module._diff)
    except Exception as exc:  # pylint: disable=broad-except  # anything unforeseen still ends in fail_json
        partial = dict(run.result) if run is not None else {}
        partial["changed"] = bool(run is not None and run.pushed)
        fail_from_exception(module, exc, **partial)
    for warning in run.warnings:
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
