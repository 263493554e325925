#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: config_revert
short_description: Keep a history of a ConfigMap or Secret and revert it, restarting the workloads that consume it
version_added: 0.2.0
author: governed.rollback maintainers (@governed)
description:
  - Kubernetes keeps no history of a ConfigMap or Secret, so this module keeps one. O(state=snapshot) records the
    current content as a snapshot, an immutable object of the same kind in the same namespace, labelled with its
    source (C(rollback.governed.io/source-kind), C(rollback.governed.io/source-name)) and named after its content
    (C(<name>-snap-<10 hex>)), with where it came from and when in its annotations. Recording a content that already
    has a snapshot only marks that snapshot as the newest. At most O(snapshot_retention) snapshots are kept per source.
  - O(state=reverted) restores the content of a snapshot (O(snapshot_id), or by default the newest snapshot whose
    content differs from the current one and that was not reverted away from before), or of a backup manifest
    (O(backup_file), e.g. the runbook's C(configmap-backup-v0.1.1.yaml)). It first snapshots the current content, so
    the revert itself can be reverted, and marks that snapshot as rolled back from, so a second default revert does
    not bounce back to it.
  - The restore is a merge patch with a C(resourceVersion) precondition, so a change made by someone else after the
    read fails the task cleanly instead of being overwritten. A content that already equals the target changes
    nothing.
  - The consumers - workloads whose pod template references the config through C(envFrom), C(env[].valueFrom),
    volumes or projected volumes, or listed in O(consumers) - are restarted the way C(kubectl rollout restart) does
    (pod-template annotation C(kubectl.kubernetes.io/restartedAt); a paused Deployment is refused before anything
    changes), with the annotation C(rollback.governed.io/config-reloaded-from) recording which config content caused
    the restart (the shape of Reloader's C(last-reloaded-from)), then waited for like M(governed.rollback.rollout_undo)
    waits. A workload Reloader manages (C(reloader.stakater.com/auto), C(configmap.reloader.stakater.com/reload), ...)
    is left to Reloader and only waited for, so it is not restarted twice. A consumer whose rollout is not complete
    before the restart is named in a warning - the restart rolls out its current template again.
  - Refuses to revert, changing nothing, an object owned by Argo CD, Flux or Helm (unless O(allow_gitops_drift=true)), an
    immutable object (C(immutable=true)), hash-named config (a Kustomize generator suffix, or consumers rolling on a
    C(checksum/*) pod annotation), whose versions are workload revisions, pointing at the deployment rollback instead.
  - Secret values never appear in the output, the snapshots' labels or annotations, or diffs; a Secret's digests are
    HMAC-SHA256 (C(hmac@sha256:...)) under a random key of that Secret, kept in the data of its snapshot Secrets
    (entry C(governed-rollback.digest-key)), never plain hashes of its values.
options:
  state:
    description:
      - V(snapshot) records the current content; V(reverted) restores an earlier one and restarts the consumers.
    type: str
    choices: [snapshot, reverted]
    default: reverted
  kind:
    description: Kind of the configuration object.
    type: str
    choices: [ConfigMap, Secret]
    default: ConfigMap
  name:
    description: Name of the ConfigMap or Secret.
    type: str
    required: true
  namespace:
    description: Namespace of the ConfigMap or Secret (its snapshots live there too).
    type: str
    required: true
  snapshot_id:
    description: Revert to this snapshot (its object name, as returned in RV(snapshots)). Mutually exclusive with O(backup_file).
    type: str
  backup_file:
    description:
      - Revert to the content of this manifest (YAML or JSON, as C(kubectl get -o yaml) writes it; a C(List) or
        several documents may hold it). Its kind and name must match O(kind) and O(name).
    type: path
  restart:
    description: Restart the consumers after the revert, and wait for them when O(wait=true).
    type: bool
    default: true
  consumers:
    description:
      - The workloads to restart, as C(kind/name) (C(deployment/aureus-frontend)) or a bare Deployment name. Without
        it, the consumers are found by scanning the pod templates of the namespace's Deployments, StatefulSets and
        DaemonSets. A consumer found by the scan but not listed is named in a warning.
    type: list
    elements: str
  honour_reloader:
    description: Leave a consumer that Reloader manages to Reloader (wait for it, do not restart it).
    type: bool
    default: true
  snapshot_retention:
    description: Snapshots kept per source (the newest ones, never the one just recorded or reverted to); V(0) keeps all.
    type: int
    default: 10
  allow_gitops_drift:
    description: Revert an object managed by Argo CD, Flux or Helm anyway; the task warns that the source must be reverted too.
    type: bool
    default: false
  expected_binding:
    description:
      - The RV(binding) of an earlier check-mode plan (what was approved). The revert is refused, changing nothing,
        when a fresh read no longer matches it. Only the given keys are compared.
    type: dict
  wait:
    description:
      - Wait until every consumer's rollout is complete (C(kubectl rollout status) semantics) or has failed.
  wait_timeout:
    description:
      - Seconds to wait for all consumers together.
extends_documentation_fragment:
  - governed.rollback.k8s_auth
  - governed.rollback.runbook_context
  - governed.rollback.wait
  - governed.rollback.attributes
  - governed.rollback.attributes.ACTIONGROUP_K8S
attributes:
  check_mode:
    support: full
    details: Returns the plan (target, changed keys, the consumers that would restart) after sending the revert as a
      server-side dry run; nothing is stored and no snapshot is written.
  diff_mode:
    support: full
    details: The content before and after; a Secret's values as keyed digests per key, secret-looking ConfigMap keys masked.
  idempotent:
    support: full
    details:
      - A revert whose target equals the current content changes nothing, and the default target skips the content
        reverted away from, so a second run reports no change.
notes:
  - RBAC needed - C(get) and C(patch) on the ConfigMap or Secret; C(list), C(create), C(patch) and C(delete) on
    ConfigMaps or Secrets in the namespace (the snapshots); C(list) on Deployments, StatefulSets and DaemonSets and
    C(patch) on the consumers; C(list) on pods.
  - Pods read config from the environment only when they start, and from a C(subPath) mount never again, so the
    consumers are restarted even when they mount the config as a volume.
seealso:
  - module: governed.rollback.rollout_undo
    description: Roll back a workload, which is how hash-named (Kustomize, Helm checksum) config is reverted.
requirements:
  - kubernetes >= 29.0.0 (Python client)
"""

EXAMPLES = r"""
- name: Record the config history at every deploy
  governed.rollback.config_revert:
    state: snapshot
    namespace: aureus
    name: aureus-config
    actor: deploy-pipeline
    reason: deploy v0.1.2

- name: Plan reverting aureus-config to its last good content
  governed.rollback.config_revert:
    namespace: aureus
    name: aureus-config
  check_mode: true
  register: plan

- name: Revert it (as approved), restart its consumers and wait
  governed.rollback.config_revert:
    namespace: aureus
    name: aureus-config
    snapshot_id: "{{ plan.snapshot_id }}"
    expected_binding: "{{ plan.binding }}"
    actor: devops-lead
    incident_id: INC-12345
    reason: Incorrect retention policy causing compliance issue

- name: Restore a Secret from the backup taken during the deployment, restarting one workload only
  governed.rollback.config_revert:
    kind: Secret
    namespace: aureus
    name: aureus-secrets
    backup_file: /backups/aureus-secrets-v0.1.1.yaml
    consumers: [deployment/aureus-frontend]
"""

RETURN = r"""
from_ref:
  description: The plan contract's from reference - digest of the current content (C(sha256:) for a ConfigMap, C(hmac@sha256:) keyed for a Secret).
  returned: state=reverted, when the object was read
  type: str
to_ref:
  description: Digest of the target content, computed like RV(from_ref).
  returned: state=reverted, when a target was selected
  type: str
after_ref:
  description: Digest of the object's content read back after the revert (equals RV(to_ref) when the revert held).
  returned: state=reverted, after a revert
  type: str
approval_facts:
  description: What M(governed.rollback.rollback_approval) needs - C(config_type), C(changed_keys).
  returned: state=reverted, when a target was selected
  type: dict
binding:
  description:
    - What an approval of this plan is for - the object's C(uid), the target (C(target)) and, for a ConfigMap, the
      C(from_digest) and C(to_digest) of its content (for a Secret without snapshots, whose digest key does not
      outlive the run, its C(resource_version) instead). Pass it back as O(expected_binding).
  returned: state=reverted, when a target was selected
  type: dict
receipt_fields:
  description: The configuration receipt fields (C(component), C(config_type), C(changed_keys), refs, C(details)) for M(governed.rollback.rollback_receipt).
  returned: state=reverted, when a target was selected
  type: dict
reverted_at:
  description:
    - When the API server accepted the revert of the object's content (RFC 3339 UTC, microseconds) - the moment of
      mitigation, before the consumers' restart. Also in the receipt's C(details).
  returned: when the object was reverted (not in check mode)
  type: str
  sample: "2026-11-30T15:04:05.123456Z"
kind:
  description: Kind of the object.
  returned: always
  type: str
name:
  description: Name of the object.
  returned: always
  type: str
namespace:
  description: Namespace of the object.
  returned: always
  type: str
snapshot_id:
  description: The snapshot reverted to, or the one recorded (O(state=snapshot)); null for a backup file.
  returned: when known
  type: str
  sample: aureus-config-snap-3f9a0c21be
target:
  description: Where the target content came from (C(ref)) and how it was chosen (C(how)).
  returned: state=reverted, when a target was selected
  type: dict
pre_revert_snapshot:
  description: The snapshot of the content before the revert (marked as rolled back from).
  returned: after a revert
  type: str
changed_keys:
  description: The keys added, removed or changed by the revert (the runbook's manifest field), sorted.
  returned: state=reverted, when a target was selected
  type: list
  elements: str
  sample: [evidence.retention.days, ratelimit.query.limit]
changed_keys_detail:
  description: The same keys as C(added), C(removed), C(changed).
  returned: state=reverted, when a target was selected
  type: dict
consumers:
  description:
    - The workloads consuming the config and what happened to each - C(kind), C(name), C(via) (how the template
      references it), C(keys), C(reloader), C(restart) (C(restarted), C(reloader), C(would_restart), C(not_listed),
      C(none)), C(restarted_at), C(reloaded_from_digest), C(wait), C(pods) (live pods after the wait, each with
      C(ready), C(restarted) - carries this restart - and C(env), the environment it gets from the config as resolved
      from its pod spec, Secret values as keyed digests), C(pods_ready), C(config_applied).
  returned: state=reverted
  type: list
  elements: dict
verification:
  description:
    - C(data_digest_matches) (the object read back holds the target content), C(consumers_restarted) (every restarted
      consumer finished its rollout), C(new_pods_ready) (every live pod of every restarted consumer carries the
      restart and is Ready), C(config_applied) (those pods reference the config and resolve the target's values).
  returned: after a revert
  type: dict
snapshots:
  description: The source's snapshots, newest first (C(id), C(taken_at), C(seen_at), C(fled_at), C(keys), C(digest)).
  returned: always
  type: list
  elements: dict
pruned_snapshots:
  description: Snapshots deleted by the retention.
  returned: always
  type: list
  elements: str
skipped_reason:
  description: Why nothing was changed.
  returned: when nothing needed to change
  type: str
refused:
  description: The rule that refused (nothing changed) - C(not_found), C(wrong_kind), C(snapshot_not_found),
    C(no_snapshots), C(no_other_snapshot), C(backup_not_found), C(bad_backup), C(immutable), C(hash_named),
    C(paused), C(consumer_not_found), C(gitops_owned), C(forbidden), C(conflict), C(changed_since_approved).
  returned: on refusal
  type: str
gitops_owners:
  description: GitOps / Helm ownership evidence found on the object.
  returned: always
  type: list
  elements: dict
rollback_warnings:
  description: The warnings of this task (also shown as Ansible warnings).
  returned: always
  type: list
  elements: str
plan:
  description: What the revert does (check mode) - action, target, changed keys, the workloads that would restart.
  returned: in check mode
  type: dict
resource_version_before:
  description: resourceVersion of the object when it was read.
  returned: when the object was read
  type: str
resource_version_after:
  description: resourceVersion after the revert (unchanged when nothing changed).
  returned: when the object was read
  type: str
timings:
  description: Seconds spent reading, snapshotting, reverting, restarting, waiting, and in total.
  returned: always
  type: dict
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.governed.rollback.plugins.module_utils import _argspec, _workload
from ansible_collections.governed.rollback.plugins.module_utils import _config_history as ch
from ansible_collections.governed.rollback.plugins.module_utils._common import (
    Refused, check_binding, fail_from_exception, utc_now, utc_stamp, utc_stamp_micro,
)
from ansible_collections.governed.rollback.plugins.module_utils._k8s import (
    FIELD_MANAGER, RESOURCE_PATHS, K8sError, KubeRest, build_api_client, require_k8s,
)
from ansible_collections.governed.rollback.plugins.module_utils._k8s_objects import (
    check_gitops, gitops_owners, selector_to_string,
)
from ansible_collections.governed.rollback.plugins.module_utils._rollout import DONE, patch_time, rollout_state

RESOURCES = {"ConfigMap": "configmaps", "Secret": "secrets", "Pod": "pods", "Deployment": "deployments.apps",
             "StatefulSet": "statefulsets.apps", "DaemonSet": "daemonsets.apps"}


def _precise_now():
    """Microsecond time stamps order the history when two snapshots are recorded in the same second."""
    return utc_now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- API calls (each a clean Refused / K8sError on failure) ---------------------------------------------------------


def read_config(api, kind, namespace, name):
    """The object, or None when it does not exist."""
    try:
        return _workload.call(ch.describe(kind, namespace, name), "get", RESOURCES[kind], namespace, name, api.get,
                              kind, namespace, name)
    except Refused as refused:
        if refused.code == "not_found":
            return None
        raise


def list_objects(api, kind, namespace, selector=None):
    query = [("labelSelector", selector)] if selector else None
    resource = RESOURCES[kind]
    listing = _workload.call("%s in namespace %s" % (resource, namespace), "list", resource, namespace, None,
                             api.list_page, kind, namespace, query)
    return listing.get("items") or []


def list_workloads(api, namespace):
    return [(kind, obj) for kind in ch.WORKLOAD_KINDS for obj in list_objects(api, kind, namespace)]


def create_object(api, kind, namespace, body):
    return _workload.call(ch.describe(kind, namespace, body["metadata"]["name"]), "create", RESOURCES[kind], namespace,
                          body["metadata"]["name"], api.request, "POST", RESOURCE_PATHS[kind], {"namespace": namespace},
                          [("fieldManager", FIELD_MANAGER)], body)


def patch_object(api, kind, namespace, name, body, dry_run=False):
    return _workload.call(ch.describe(kind, namespace, name), "patch", RESOURCES[kind], namespace, name, api.patch, kind,
                          namespace, name, body, _workload.MERGE_PATCH, dry_run=dry_run)


def delete_object(api, kind, namespace, name, uid):
    body = {"preconditions": {"uid": uid}}
    return _workload.call(ch.describe(kind, namespace, name), "delete", RESOURCES[kind], namespace, name, api.request,
                          "DELETE", RESOURCE_PATHS[kind] + "/{name}", {"namespace": namespace, "name": name}, None, body)


# --- the plan -----------------------------------------------------------------------------------------------------


class Plan(object):
    """What a revert will do, computed from one read of the object, its snapshots and the namespace's workloads."""

    def __init__(self, kind, namespace, name, source, snapshots):
        self.kind, self.namespace, self.name = kind, namespace, name
        self.what = ch.describe(kind, namespace, name)
        self.source = source
        self.snapshots = snapshots
        # A Secret's digest key: the one its snapshots keep, else one of this run (stable = comparable across runs).
        self.key, self.key_stable = None, True
        if kind == "Secret":
            self.key = ch.source_key(snapshots)
            self.key_stable = self.key is not None
            self.key = self.key or ch.new_digest_key()
        self.current = ch.content_of(kind, source)
        self.target = None
        self.skipped_reason = None
        self.consumers = []
        self.warnings = []
        self.owners = []

    @property
    def resource_version(self):
        return self.source["metadata"]["resourceVersion"]

    def digest(self, content):
        return ch.config_digest(self.kind, content, self.key)

    @property
    def changes(self):
        return ch.changed_keys(self.current, self.target.content)

    def binding(self):
        binding = {"uid": self.source["metadata"].get("uid"), "target": self.target.ref}
        if self.key_stable:
            binding.update(from_digest=self.digest(self.current), to_digest=self.digest(self.target.content))
        else:  # a Secret without snapshots has no key that outlives this run
            binding["resource_version"] = self.resource_version
        return binding

    def contract(self):
        from_ref, to_ref = self.digest(self.current), self.digest(self.target.content)
        keys = self.changes["all"]
        snapshot_id = self.target.snapshot.name if self.target.snapshot else None
        return {
            "from_ref": from_ref,
            "to_ref": to_ref,
            "approval_facts": {"config_type": self.kind, "changed_keys": keys},
            "binding": self.binding(),
            "receipt_fields": {
                "component": self.name,
                "changed_surfaces": ["config"],
                "config_type": self.kind,
                "changed_keys": keys,
                "current_ref": from_ref,
                "rollback_target_ref": to_ref,
                "from_version": from_ref[-64:][:12],
                "to_version": snapshot_id or self.target.ref,
                "snapshot_id": snapshot_id,
                "details": {"kind": self.kind, "namespace": self.namespace, "target": self.target.ref,
                            "selected_by": self.target.how, "changed_keys": self.changes,
                            "consumers": ["%s/%s" % (c["kind"], c["name"]) for c in self.consumers
                                          if c["restart"] in ("would_restart", "restarted", "reloader")]},
            },
        }

    def merge_patch(self):
        """The revert as a merge patch: every target key set, every other key removed, with the precondition."""
        body = {"metadata": {"resourceVersion": self.resource_version}}
        for field in ("data", "binaryData"):
            if field not in self.target.content:
                continue
            now, then = self.current.get(field) or {}, self.target.content.get(field) or {}
            changes = dict((k, v) for k, v in then.items() if now.get(k) != v)
            changes.update((k, None) for k in now if k not in then)
            if changes:
                body[field] = changes
        return body


def _select_target(plan, params):
    kind, name = plan.kind, plan.name
    if params.get("backup_file"):
        path = params["backup_file"]
        try:
            with open(path, "r", encoding="utf-8") as handle:
                text = handle.read()
        except (IOError, OSError) as exc:
            raise Refused("backup file %s cannot be read (%s); give the path of the manifest saved during the "
                          "deployment (kubectl get %s %s -o yaml)" % (path, exc.strerror or exc, kind.lower(), name),
                          "backup_not_found")
        except UnicodeDecodeError:
            raise Refused("backup file %s is not UTF-8 text" % path, "bad_backup")
        content, secret_type = ch.parse_backup(text, path, kind, name, plan.namespace)
        return ch.Target(content, "file:%s" % path, "backup file %s" % path, secret_type=secret_type), None
    snap, how, skipped = ch.select_snapshot(plan.what, plan.snapshots, plan.current, params.get("snapshot_id"))
    return ch.Target(snap.content, "snapshot:%s" % snap.name, how, snapshot=snap, secret_type=snap.type), skipped


def _consumers(plan, params, workloads):
    found = ch.find_consumers(plan.kind, plan.name, workloads, plan.source)
    by_ref = dict(((c["kind"], c["name"]), c) for c in found)
    if params.get("consumers") is not None:
        listed = [ch.parse_workload_ref(ref) for ref in params["consumers"]]
        present = dict(((k, (o.get("metadata") or {}).get("name")), o) for k, o in workloads)
        chosen = []
        for ref in listed:
            if ref not in present:
                raise Refused("consumer %s/%s not found in namespace %s; nothing was changed" % (
                    ref[0].lower(), ref[1], plan.namespace), "consumer_not_found")
            entry = by_ref.get(ref)
            if entry is None:
                meta = present[ref].get("metadata") or {}
                entry = {"kind": ref[0], "name": ref[1], "via": ["listed"], "containers": [], "keys": [],
                         "reloader": False, "paused": bool((present[ref].get("spec") or {}).get("paused")),
                         "generation": meta.get("generation"), "uid": meta.get("uid"), "checksum_annotations": []}
                plan.warnings.append("%s/%s was listed as a consumer but its pod template does not reference %s"
                                     % (ref[0].lower(), ref[1], plan.what))
            chosen.append(entry)
        for entry in found:
            if (entry["kind"], entry["name"]) not in listed:
                entry["restart"] = "not_listed"
                plan.warnings.append("%s/%s also consumes %s but is not in consumers, so it is not restarted and keeps "
                                     "the old content until its pods restart" % (entry["kind"].lower(), entry["name"],
                                                                                 plan.what))
        consumers = chosen + [c for c in found if c.get("restart") == "not_listed"]
    else:
        consumers = found
    for entry in consumers:
        if entry.get("restart"):
            continue
        if not params["restart"]:
            entry["restart"] = "none"
        elif entry["reloader"] and params["honour_reloader"]:
            entry["restart"] = "reloader"
        else:
            entry["restart"] = "would_restart"
    return sorted(consumers, key=lambda c: (c["kind"], c["name"]))


def plan_revert(api, params):
    """Read everything and decide; raises Refused (nothing changed) for every precondition."""
    kind, namespace, name = params["kind"], params["namespace"], params["name"]
    ch.check_kind(kind)
    source = read_config(api, kind, namespace, name)
    if source is None:
        workloads = list_workloads(api, namespace)
        reason = ch.hash_named(kind, name, False, [], ch.family_references(kind, name, workloads))
        if reason:
            raise Refused("refusing to revert %s in place: %s. Roll the workload back instead (playbooks/"
                          "rollback-deploy.yml, governed.rollback.rollout_undo); nothing was changed"
                          % (ch.describe(kind, namespace, name), reason), "hash_named")
        raise Refused("%s not found; check the name, namespace and kind (kubectl get %s -n %s)"
                      % (ch.describe(kind, namespace, name), RESOURCES[kind], namespace), "not_found")
    labels = (source.get("metadata") or {}).get("labels") or {}
    if labels.get(ch.SNAPSHOT_LABEL) == "true":
        raise Refused("%s is itself a snapshot (label %s); name the object it was taken from" % (
            ch.describe(kind, namespace, name), ch.SNAPSHOT_LABEL), "wrong_kind")
    snapshots = ch.history(kind, name, list_objects(api, kind, namespace, ch.snapshot_selector(kind, name)))
    plan = Plan(kind, namespace, name, source, snapshots)
    if params["state"] == "snapshot":
        plan.owners = gitops_owners(source)  # recording history leaves the object a GitOps tool owns untouched
        return plan
    plan.owners, warnings = check_gitops(plan.what, source, params.get("allow_gitops_drift"),
                                         "the configuration being reverted")
    plan.warnings.extend(warnings)
    workloads = list_workloads(api, namespace)
    plan.consumers = _consumers(plan, params, workloads)
    reason = ch.hash_named(kind, name, True, plan.consumers, ch.family_references(kind, name, workloads))
    if reason:
        raise Refused("refusing to revert %s in place: %s. Roll the workload back instead (playbooks/"
                      "rollback-deploy.yml, governed.rollback.rollout_undo); nothing was changed" % (plan.what, reason),
                      "hash_named", consumers=plan.consumers)
    plan.target, plan.skipped_reason = _select_target(plan, params)
    if kind == "Secret" and plan.target.secret_type and plan.target.secret_type != (source.get("type") or "Opaque"):
        raise Refused("%s is of type %s, the target content of type %s; a Secret's type cannot change in place" % (
            plan.what, source.get("type") or "Opaque", plan.target.secret_type), "wrong_kind")
    if plan.target.content == plan.current and not plan.skipped_reason:
        plan.skipped_reason = "the current content of %s already equals %s" % (plan.what, plan.target.how)
    if plan.skipped_reason:
        return plan
    warn_unhealthy(plan, workloads)
    paused = [c for c in plan.consumers if c["restart"] == "would_restart" and c["paused"]]
    if paused:
        raise Refused("can't restart paused %s, which consume %s; resume it first (kubectl rollout resume %s -n %s) "
                      "or leave it out with consumers=; nothing was changed" % (
                          ", ".join("%s/%s" % (c["kind"].lower(), c["name"]) for c in paused), plan.what,
                          " ".join("%s/%s" % (c["kind"].lower(), c["name"]) for c in paused), namespace), "paused",
                      consumers=plan.consumers)
    if source.get("immutable"):
        raise Refused("%s is immutable (immutable: true), so its content cannot be reverted in place; nothing was "
                      "changed. Either roll back the workloads to a revision that referenced an earlier object "
                      "(playbooks/rollback-deploy.yml), or create the target content under a new name (%s holds it) "
                      "and point the consumers at it" % (plan.what, plan.target.ref), "immutable")
    return plan


def warn_unhealthy(plan, workloads):
    """A consumer whose rollout is not complete before the restart: the restart rolls out its current template again,
    so it only recovers if the config is what broke it."""
    by_ref = dict(((kind, (obj.get("metadata") or {}).get("name")), obj) for kind, obj in workloads)
    for consumer in plan.consumers:
        obj = by_ref.get((consumer["kind"], consumer["name"]))
        if consumer["restart"] != "would_restart" or obj is None or consumer["paused"]:
            continue
        state = rollout_state(consumer["kind"], obj)
        if state.state != DONE:
            plan.warnings.append(
                "%s/%s is not healthy before the restart (%s); the restart rolls out its current template again, so "
                "unless the config is what broke it, roll the workload back first (playbooks/rollback-deploy.yml)"
                % (consumer["kind"].lower(), consumer["name"], state.message))


# --- acting -------------------------------------------------------------------------------------------------------


def record_snapshot(api, plan, content, when, params, fled=False, dry_run=False):
    """Create the snapshot of ``content``, or mark the existing one with that content as the newest; returns
    ``(name, changed)``."""
    fled_mark = (when, params.get("actor")) if fled else None
    existing = ch.same_content(plan.snapshots, content)
    if existing is not None:
        newest = plan.snapshots[0] is existing
        if newest and not existing.fled_at and not fled:
            return existing.name, False
        if not dry_run:
            patched = patch_object(api, plan.kind, plan.namespace, existing.name, ch.refresh_marks(when, fled_mark))
            plan.snapshots.remove(existing)
            plan.snapshots.insert(0, ch.Snapshot(plan.kind, patched))
        return existing.name, True
    body = ch.snapshot_manifest(plan.kind, plan.source, content, plan.digest(content), when, params.get("actor"),
                                params.get("incident_id"), params.get("reason"), fled_mark, plan.key)
    if not dry_run:
        created = create_object(api, plan.kind, plan.namespace, body)
        plan.snapshots.insert(0, ch.Snapshot(plan.kind, created))
    return body["metadata"]["name"], True


def prune(api, plan, retention, keep):
    snapshots = ch.history(plan.kind, plan.name, list_objects(api, plan.kind, plan.namespace,
                                                              ch.snapshot_selector(plan.kind, plan.name)))
    pruned = []
    for snap in ch.to_prune(snapshots, retention, keep):
        try:
            delete_object(api, plan.kind, plan.namespace, snap.name, snap.uid)
            pruned.append(snap.name)
        except K8sError as error:
            if error.status != 404:  # pruned by a concurrent run already
                raise
    plan.snapshots = [s for s in snapshots if s.name not in pruned]
    return pruned


def send_revert(api, plan, dry_run=False):
    """Apply (or dry-run) the revert; a change since the read is refused as a conflict, nothing overwritten."""
    try:
        return patch_object(api, plan.kind, plan.namespace, plan.name, plan.merge_patch(), dry_run=dry_run)
    except K8sError as error:
        if error.status == 409:
            raise Refused("conflict: %s changed after it was read (resourceVersion %s) and before the revert; nothing "
                          "was overwritten. Find out who changed it, then re-run to re-read and re-plan"
                          % (plan.what, plan.resource_version), "conflict")
        raise


def restart_consumers(api, plan, digest):
    for consumer in plan.consumers:
        if consumer["restart"] != "would_restart":
            continue
        when = utc_stamp()
        annotation = ch.reloaded_from(plan.kind, plan.namespace, plan.name, digest, consumer["containers"], when)
        patched, restarted_at = _workload.restart(api, consumer["kind"], plan.namespace, consumer["name"],
                                                  annotations={ch.RELOADED_FROM_ANNOTATION: annotation})
        consumer.update(restart="restarted", restarted_at=restarted_at, reloaded_from_digest=digest,
                        patched_at=patch_time(patched, FIELD_MANAGER), uid=patched["metadata"].get("uid"))


def wait_consumers(api, plan, timeout):
    deadline = time.monotonic() + timeout
    for consumer in plan.consumers:
        if consumer["restart"] not in ("restarted", "reloader"):
            continue
        remaining = max(1, int(deadline - time.monotonic()))
        waited = _workload.wait(api, consumer["kind"], plan.namespace, consumer["name"], remaining,
                                consumer.pop("patched_at", None), consumer.get("uid"))
        consumer["wait"] = waited.as_dict()


def observe_consumers(api, plan, after_content):
    """Each consumer's live pods: Ready, carrying this restart, and the environment they get from the config."""
    for consumer in plan.consumers:
        if consumer["restart"] not in ("restarted", "reloader"):
            continue
        workload = _workload.read_workload(api, consumer["kind"], plan.namespace, consumer["name"])
        selector = selector_to_string((workload.get("spec") or {}).get("selector"))
        pods = []
        for pod in list_objects(api, "Pod", plan.namespace, selector):
            meta = pod.get("metadata") or {}
            if meta.get("deletionTimestamp"):
                continue
            annotations = meta.get("annotations") or {}
            conditions = dict((c.get("type"), c.get("status")) for c in (pod.get("status") or {}).get("conditions") or [])
            pods.append({"name": meta.get("name"), "ready": conditions.get("Ready") == "True",
                         "restarted": (consumer.get("restarted_at") is not None and annotations.get(
                             _workload.RESTARTED_AT_ANNOTATION) == consumer.get("restarted_at")),
                         "env": ch.resolved_env(pod, plan.kind, plan.name, after_content, plan.key),
                         "mounts": ch.mounts_config(pod, plan.kind, plan.name)})
        consumer["pods"] = sorted(pods, key=lambda p: p["name"])
        replicas = (workload.get("spec") or {}).get("replicas", 1)
        restarted = consumer["restart"] == "restarted"
        consumer["pods_ready"] = (bool(pods) or replicas == 0) and all(
            p["ready"] and (p["restarted"] or not restarted) for p in pods)
        # Applied: the pods that run now started after the revert from a spec that references the config, and the
        # config they resolved from holds the target content (env is read at container start, mounts at sync).
        consumer["config_applied"] = (consumer["pods_ready"] and after_content == plan.target.content
                                      and all(p["env"] or p["mounts"] for p in pods))


class Outcome(object):
    def __init__(self, params):
        self.started = time.monotonic()
        self.timings = {"read": 0.0, "snapshot": 0.0, "revert": 0.0, "restart": 0.0, "wait": 0.0, "total": 0.0}
        self.failed_msg = None
        self.result = {"changed": False, "kind": params["kind"], "name": params["name"],
                       "namespace": params["namespace"], "state": params["state"], "skipped_reason": None,
                       "gitops_owners": [], "rollback_warnings": [], "snapshots": [], "pruned_snapshots": [],
                       "consumers": [], "timings": self.timings}

    def mark(self, phase, since):
        self.timings[phase] += time.monotonic() - since
        return time.monotonic()

    def close(self):
        self.timings["total"] = time.monotonic() - self.started
        for key in self.timings:
            self.timings[key] = round(self.timings[key], 3)
        return self


def _public(consumers):
    keep = ("kind", "name", "via", "containers", "keys", "reloader", "paused", "restart", "restarted_at",
            "reloaded_from_digest", "wait", "pods", "pods_ready", "config_applied")
    return [dict((k, c[k]) for k in keep if k in c) for c in consumers]


def do_snapshot(api, plan, params, outcome, check_mode):
    result = outcome.result
    since = time.monotonic()
    name, changed = record_snapshot(api, plan, plan.current, _precise_now(), params, dry_run=check_mode)
    result.update(changed=changed, snapshot_id=name)
    if not changed:
        result["skipped_reason"] = "the current content of %s is already the newest snapshot, %s" % (plan.what, name)
    if not check_mode:
        result["pruned_snapshots"] = prune(api, plan, params["snapshot_retention"], [name])
    outcome.mark("snapshot", since)
    result["snapshots"] = [s.summary(plan.key) for s in plan.snapshots]
    return outcome


def execute(api, params, check_mode=False, diff=False):
    """Read, plan, snapshot, revert (or dry-run), restart, wait, observe. Returns an Outcome; refusals and API
    failures become its failure message, never an exception."""
    outcome = Outcome(params)
    result = outcome.result
    try:
        plan = plan_revert(api, params)
    except Refused as refused:
        outcome.failed_msg = refused.msg
        result.update(refused=refused.code, **refused.details)
        if "consumers" in result:
            result["consumers"] = _public(result["consumers"])
        return outcome.close()
    except K8sError as error:
        outcome.failed_msg = error.msg
        return outcome.close()
    since = outcome.mark("read", outcome.started)
    result.update(resource_version_before=plan.resource_version, resource_version_after=plan.resource_version,
                  gitops_owners=plan.owners, rollback_warnings=list(plan.warnings))
    result["snapshots"] = [s.summary(plan.key) for s in plan.snapshots]
    try:
        if params["state"] == "snapshot":
            return do_snapshot(api, plan, params, outcome, check_mode).close()
        return _revert(api, plan, params, outcome, check_mode, diff, since)
    except (Refused, K8sError) as error:
        outcome.failed_msg = error.msg
        if isinstance(error, Refused):
            result["refused"] = error.code
        result["consumers"] = _public(plan.consumers)
        return outcome.close()


def _revert(api, plan, params, outcome, check_mode, diff, since):
    result = outcome.result
    result.update(plan.contract())
    changes = plan.changes
    result.update(snapshot_id=plan.target.snapshot.name if plan.target.snapshot else None,
                  target={"ref": plan.target.ref, "how": plan.target.how}, changed_keys=changes["all"],
                  changed_keys_detail=changes)
    check_binding(plan.what, params.get("expected_binding"), plan.binding())
    if diff:
        result["diff"] = ch.content_diff(plan.kind, plan.current, plan.target.content, plan.key,
                                         "%s (current)" % plan.what, "%s (%s)" % (plan.what, plan.target.ref))
    if check_mode:
        result["plan"] = {"action": "none" if plan.skipped_reason else "revert", "what": plan.what,
                          "target": plan.target.ref, "selected_by": plan.target.how, "changed_keys": changes,
                          "would_restart": ["%s/%s" % (c["kind"].lower(), c["name"]) for c in plan.consumers
                                            if c["restart"] == "would_restart"],
                          "left_to_reloader": ["%s/%s" % (c["kind"].lower(), c["name"]) for c in plan.consumers
                                               if c["restart"] == "reloader"],
                          "gitops_owners": plan.owners}
    result["consumers"] = _public(plan.consumers)
    if plan.skipped_reason:
        result["skipped_reason"] = plan.skipped_reason
        return outcome.close()
    if check_mode:
        send_revert(api, plan, dry_run=True)
        result["changed"] = True
        result["plan"]["dry_run"] = "accepted by the API server (dryRun=All); nothing was stored"
        return outcome.close()

    when = _precise_now()
    pre, _changed = record_snapshot(api, plan, plan.current, when, params)
    result["pre_revert_snapshot"] = pre
    since = outcome.mark("snapshot", since)
    patched = send_revert(api, plan)
    result["reverted_at"] = utc_stamp_micro()
    result["changed"] = True
    result["resource_version_after"] = patched["metadata"]["resourceVersion"]
    since = outcome.mark("revert", since)
    # Bookkeeping after the revert held: the content left is marked rolled back from, the target is live again.
    patch_object(api, plan.kind, plan.namespace, pre, ch.refresh_marks(when, (when, params.get("actor"))))
    plan.source = patched
    live, _changed = record_snapshot(api, plan, plan.target.content, _precise_now(), params)
    result["pruned_snapshots"] = prune(api, plan, params["snapshot_retention"], [pre, live])
    result["snapshots"] = [s.summary(plan.key) for s in plan.snapshots]
    since = outcome.mark("snapshot", since)

    to_ref = result["to_ref"]
    if params["restart"]:
        try:
            restart_consumers(api, plan, to_ref)
        except (Refused, K8sError) as error:
            error.msg = "%s was reverted to %s (changed keys: %s), but restarting its consumers failed: %s" % (
                plan.what, plan.target.ref, ", ".join(changes["all"]) or "none", error.msg)
            raise
        since = outcome.mark("restart", since)
        if params["wait"]:
            wait_consumers(api, plan, params["wait_timeout"])
            since = outcome.mark("wait", since)
    after = read_config(api, plan.kind, plan.namespace, plan.name)
    after_content = ch.content_of(plan.kind, after or {})
    result["after_ref"] = plan.digest(after_content)
    observe_consumers(api, plan, after_content)
    result["consumers"] = _public(plan.consumers)
    acting = [c for c in plan.consumers if c["restart"] in ("restarted", "reloader")]
    result["verification"] = {
        "data_digest_matches": result["after_ref"] == to_ref,
        "consumers_restarted": all((c.get("wait") or {}).get("done") for c in acting) if params["wait"] else False,
        "new_pods_ready": all(c.get("pods_ready") for c in acting),
        "config_applied": all(c.get("config_applied") for c in acting),
    }
    result["receipt_fields"]["details"].update(pre_revert_snapshot=pre, after_ref=result["after_ref"],
                                               reverted_at=result["reverted_at"],
                                               restarts=[{"workload": "%s/%s" % (c["kind"], c["name"]),
                                                          "restarted_at": c.get("restarted_at"),
                                                          "reloaded_from": c.get("reloaded_from_digest")}
                                                         for c in acting])
    not_done = [c for c in acting if params["wait"] and not (c.get("wait") or {}).get("done")]
    if not_done:
        outcome.failed_msg = ("%s was reverted to %s (changed keys: %s), but %s did not finish restarting: %s" % (
            plan.what, plan.target.ref, ", ".join(changes["all"]) or "none",
            ", ".join("%s/%s" % (c["kind"].lower(), c["name"]) for c in not_done),
            "; ".join((c.get("wait") or {}).get("reason", "") for c in not_done)))
    elif not result["verification"]["data_digest_matches"]:
        outcome.failed_msg = "%s changed again right after the revert: it no longer holds %s" % (
            plan.what, plan.target.ref)
    return outcome.close()


def argument_spec():
    return _argspec.compose(dict(
        state=dict(type="str", default="reverted", choices=["snapshot", "reverted"]),
        kind=dict(type="str", default="ConfigMap", choices=list(ch.KINDS)),
        name=dict(type="str", required=True),
        namespace=dict(type="str", required=True),
        snapshot_id=dict(type="str"),
        backup_file=dict(type="path"),
        restart=dict(type="bool", default=True),
        consumers=dict(type="list", elements="str"),
        honour_reloader=dict(type="bool", default=True),
        snapshot_retention=dict(type="int", default=10),
        allow_gitops_drift=dict(type="bool", default=False),
        expected_binding=dict(type="dict"),
    ), _argspec.K8S_AUTH, _argspec.RUNBOOK_CONTEXT, _argspec.WAIT)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           mutually_exclusive=[("snapshot_id", "backup_file")])
    require_k8s(module)
    try:
        api = KubeRest(build_api_client(module.params))
        outcome = execute(api, module.params, module.check_mode, module._diff)
    except Exception as exc:  # pylint: disable=broad-except  # anything unforeseen still ends in fail_json
        fail_from_exception(module, exc, changed=False)
    for warning in outcome.result["rollback_warnings"]:
        module.warn(warning)
    if outcome.failed_msg:
        module.fail_json(msg=outcome.failed_msg, **outcome.result)
    module.exit_json(**outcome.result)


if __name__ == "__main__":
    main()
