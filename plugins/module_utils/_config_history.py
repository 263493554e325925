# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Configuration history as plain data, no I/O: ConfigMap/Secret content and its digests, snapshot objects (what
they are called, what they record, which is newest, which to prune), the choice of a revert target, backup
manifests, the workloads that consume a config (and whether Reloader restarts them), hash-named config, and the
environment a pod gets from a config.

Kubernetes keeps no history of a ConfigMap or Secret (kubernetes/kubernetes#22368), so the collection keeps one:
each snapshot is an immutable object of the same kind in the same namespace, labelled with its source, named
after its content.

Secret values are never hashed in the clear: a Secret's digests are HMAC-SHA256 under a random key of its own, made
with its first snapshot and kept (like the values themselves) in the data of its snapshot Secrets, entry
``governed-rollback.digest-key``, never in a label, an annotation or output. So a Secret's digests stay comparable
across runs (a plan and the run that acts on it, one receipt and the next), and tell nothing about a value to
anyone who cannot read the Secret anyway. Before its first snapshot a Secret's digests use a key of the run.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import copy
import hashlib
import hmac
import json
import os
import re

from ansible_collections.governed.rollback.plugins.module_utils._common import (
    Refused, RollbackError, canonical_json, sha256_hex,
)
from ansible_collections.governed.rollback.plugins.module_utils._redact import REDACTED, looks_secret_env_name

KINDS = ("ConfigMap", "Secret")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")

PREFIX = "rollback.governed.io/"
SNAPSHOT_LABEL = PREFIX + "config-snapshot"
SOURCE_KIND_LABEL = PREFIX + "source-kind"
SOURCE_NAME_LABEL = PREFIX + "source-name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "governed.rollback"
SOURCE_ANNOTATION = PREFIX + "source"
SOURCE_UID_ANNOTATION = PREFIX + "source-uid"
SOURCE_RV_ANNOTATION = PREFIX + "source-resource-version"
TAKEN_AT_ANNOTATION = PREFIX + "taken-at"
SEEN_AT_ANNOTATION = PREFIX + "seen-at"
TAKEN_BY_ANNOTATION = PREFIX + "taken-by"
REASON_ANNOTATION = PREFIX + "reason"
INCIDENT_ANNOTATION = PREFIX + "incident-id"
DIGEST_ANNOTATION = PREFIX + "digest"
FLED_AT_ANNOTATION = PREFIX + "fled-at"
FLED_BY_ANNOTATION = PREFIX + "fled-by"
# On the pod template of a restarted consumer: which config (and which content) caused the restart, in the shape
# of Reloader's reloader.stakater.com/last-reloaded-from.
RELOADED_FROM_ANNOTATION = PREFIX + "config-reloaded-from"

RELOADER_AUTO = "reloader.stakater.com/auto"
RELOADER_KIND_AUTO = {"ConfigMap": "configmap.reloader.stakater.com/auto", "Secret": "secret.reloader.stakater.com/auto"}
RELOADER_KIND_RELOAD = {"ConfigMap": "configmap.reloader.stakater.com/reload",
                        "Secret": "secret.reloader.stakater.com/reload"}
RELOADER_SEARCH = "reloader.stakater.com/search"
RELOADER_MATCH = "reloader.stakater.com/match"
RELOADER_IGNORE = "reloader.stakater.com/ignore"

# Kustomize's configMapGenerator/secretGenerator suffix: 10 characters of its hex-to-"safe" encoding of a sha256.
KUSTOMIZE_SUFFIX_RE = re.compile(r"^(?P<base>.+)-(?P<hash>[2456789bcdfghkmt]{10})$")
CHECKSUM_ANNOTATION_PREFIX = "checksum/"

DIGEST_KEY_ENTRY = "governed-rollback.digest-key"

MAX_NAME = 253
MAX_LABEL_VALUE = 63
DIGEST_KEY_BYTES = 32


def describe(kind, namespace, name):
    return "%s %s/%s" % (kind.lower(), namespace, name)


def check_kind(kind):
    if kind not in KINDS:
        raise Refused("kind %s is not a configuration object; config_revert handles %s" % (kind, " and ".join(KINDS)),
                      "wrong_kind")


# --- content and digests ------------------------------------------------------------------------------------------


def content_of(kind, obj):
    """The part of a ConfigMap or Secret that a revert restores: ``data`` and ``binaryData`` (a Secret's ``data``
    holds base64 strings, as the API returns them)."""
    obj = obj or {}
    content = {"data": dict(obj.get("data") or {})}
    if kind == "ConfigMap":
        content["binaryData"] = dict(obj.get("binaryData") or {})
    return content


def new_digest_key():
    """A fresh random key for the keyed digests of a Secret's content."""
    return os.urandom(DIGEST_KEY_BYTES)


def source_key(snapshots):
    """The digest key a Secret's snapshots carry (the newest one's), or None before its first snapshot."""
    for snap in snapshots:
        if snap.digest_key:
            return snap.digest_key
    return None


def _hmac_hex(key, text):
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def config_digest(kind, content, key=None):
    """``sha256:<hex>`` of a ConfigMap's canonical content; ``hmac@sha256:<hex>`` (keyed, never a plain hash) of a
    Secret's."""
    text = canonical_json(content)
    if kind == "Secret":
        if not key:
            raise RollbackError("a Secret's digest needs a key (a plain hash of secret values is never computed)")
        return "hmac@sha256:" + _hmac_hex(key, text)
    return "sha256:" + sha256_hex(text)


def _entries(content):
    """``{key: (field, value)}`` over data and binaryData."""
    entries = {}
    for field in ("data", "binaryData"):
        for key, value in (content.get(field) or {}).items():
            entries[key] = (field, value)
    return entries


def changed_keys(before, after):
    """Keys added, removed or changed between two contents, and all of them sorted (the runbook's changed_keys)."""
    left, right = _entries(before), _entries(after)
    result = {"added": sorted(set(right) - set(left)), "removed": sorted(set(left) - set(right)),
              "changed": sorted(k for k in set(left) & set(right) if left[k] != right[k])}
    result["all"] = sorted(set(result["added"]) | set(result["removed"]) | set(result["changed"]))
    return result


def shown_values(kind, content, key=None):
    """What output may show of a content: ConfigMap values (secret-looking keys and binary values masked), and for
    a Secret only a short keyed digest per key, so a reader sees which keys changed and never a value."""
    shown = {}
    for name, (field, value) in sorted(_entries(content).items()):
        if kind == "Secret":
            shown[name] = "hmac:" + _hmac_hex(key, canonical_json([name, value]))[:16]
        elif field == "binaryData":
            shown[name] = "<binary, sha256:%s>" % sha256_hex(value)[:16]
        elif looks_secret_env_name(name) and value not in (None, ""):
            shown[name] = REDACTED
        else:
            shown[name] = value
    return shown


def content_diff(kind, before, after, key=None, before_header="before", after_header="after"):
    """Ansible's diff: the two contents as shown_values shows them."""
    return {"before_header": before_header, "after_header": after_header,
            "before": shown_values(kind, before, key), "after": shown_values(kind, after, key)}


# --- snapshots ----------------------------------------------------------------------------------------------------


def label_value(text):
    """A label value naming ``text``: itself when it fits (63 characters), else a digest of it."""
    text = str(text)
    if len(text) <= MAX_LABEL_VALUE:
        return text
    return "h-" + sha256_hex(text)[:40]


def snapshot_selector(kind, name):
    return "%s=true,%s=%s,%s=%s" % (SNAPSHOT_LABEL, SOURCE_KIND_LABEL, kind, SOURCE_NAME_LABEL, label_value(name))


def snapshot_name(source_name, digest):
    """``<source>-snap-<10 hex of the content digest>`` (a name after the content, like Kustomize's)."""
    suffix = "-snap-" + digest.rsplit(":", 1)[-1][:10]
    return source_name[:MAX_NAME - len(suffix)] + suffix


def snapshot_manifest(kind, source, content, digest, when, actor=None, incident_id=None, reason=None, fled=None,
                      key=None):
    """The snapshot object: immutable, same kind and namespace as ``source``, labelled with the source, its content
    copied, where it came from and when recorded. ``fled`` is ``(when, actor)`` for the pre-revert snapshot; ``key``
    (a Secret's digest key) is kept in the data beside the values it protects."""
    meta = source.get("metadata") or {}
    annotations = {
        SOURCE_ANNOTATION: "%s %s/%s" % (kind, meta.get("namespace"), meta.get("name")),
        SOURCE_UID_ANNOTATION: meta.get("uid") or "",
        SOURCE_RV_ANNOTATION: meta.get("resourceVersion") or "",
        TAKEN_AT_ANNOTATION: when,
        SEEN_AT_ANNOTATION: when,
        DIGEST_ANNOTATION: digest,
    }
    for annotation, value in ((TAKEN_BY_ANNOTATION, actor), (INCIDENT_ANNOTATION, incident_id),
                              (REASON_ANNOTATION, reason)):
        if value:
            annotations[annotation] = str(value)[:1024]
    if fled:
        annotations[FLED_AT_ANNOTATION], annotations[FLED_BY_ANNOTATION] = fled[0], fled[1] or "unknown"
    manifest = {
        "apiVersion": "v1", "kind": kind,
        "metadata": {
            "name": snapshot_name(meta.get("name"), digest), "namespace": meta.get("namespace"),
            "labels": {SNAPSHOT_LABEL: "true", SOURCE_KIND_LABEL: kind, SOURCE_NAME_LABEL: label_value(meta.get("name")),
                       MANAGED_BY_LABEL: MANAGED_BY},
            "annotations": annotations,
        },
        "immutable": True,
    }
    manifest.update(copy.deepcopy(content))
    if kind == "ConfigMap" and not manifest.get("binaryData"):
        manifest.pop("binaryData", None)
    if kind == "Secret":
        manifest["type"] = source.get("type") or "Opaque"
        if key:
            manifest["data"][DIGEST_KEY_ENTRY] = base64.b64encode(key).decode("ascii")
    return manifest


class Snapshot(object):
    """One snapshot object read from the API."""

    def __init__(self, kind, obj):
        self.kind = kind
        self.obj = obj
        meta = obj.get("metadata") or {}
        self.name = meta.get("name")
        self.uid = meta.get("uid")
        self.annotations = meta.get("annotations") or {}
        self.content = content_of(kind, obj)
        self.digest_key = None
        if kind == "Secret":
            raw = self.content["data"].pop(DIGEST_KEY_ENTRY, None)
            try:
                self.digest_key = base64.b64decode(raw) if raw else None
            except (binascii.Error, ValueError):
                self.digest_key = None
        self.type = obj.get("type")

    @property
    def seen_at(self):
        """When this content was last recorded as the live content (the order of the history)."""
        return self.annotations.get(SEEN_AT_ANNOTATION) or self.annotations.get(TAKEN_AT_ANNOTATION) or ""

    @property
    def fled_at(self):
        return self.annotations.get(FLED_AT_ANNOTATION)

    def summary(self, key=None):
        return {"id": self.name, "taken_at": self.annotations.get(TAKEN_AT_ANNOTATION), "seen_at": self.seen_at,
                "fled_at": self.fled_at, "taken_by": self.annotations.get(TAKEN_BY_ANNOTATION),
                "reason": self.annotations.get(REASON_ANNOTATION),
                "keys": sorted(_entries(self.content)),
                "digest": config_digest(self.kind, self.content, key) if (self.kind != "Secret" or key) else None}


def history(kind, source_name, items):
    """The snapshots of one source, newest first (by when their content was last live, then by name)."""
    found = []
    for obj in items:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        source = (meta.get("annotations") or {}).get(SOURCE_ANNOTATION, "")
        if labels.get(SNAPSHOT_LABEL) != "true" or labels.get(SOURCE_KIND_LABEL) != kind:
            continue
        if source.rsplit("/", 1)[-1] != source_name:
            continue
        found.append(Snapshot(kind, obj))
    return sorted(found, key=lambda s: (s.seen_at, s.name), reverse=True)


def same_content(snapshots, content):
    """The snapshot holding exactly ``content``, or None."""
    for snap in snapshots:
        if snap.content == content:
            return snap
    return None


def refresh_marks(when, fled=None):
    """Merge-patch annotations recording that a snapshot's content is live again (``seen-at``), clearing a fled
    mark (it was re-deployed), or marking it fled (``fled`` = ``(when, actor)``)."""
    annotations = {SEEN_AT_ANNOTATION: when, FLED_AT_ANNOTATION: None, FLED_BY_ANNOTATION: None}
    if fled:
        annotations[FLED_AT_ANNOTATION], annotations[FLED_BY_ANNOTATION] = fled[0], fled[1] or "unknown"
    return {"metadata": {"annotations": annotations}}


def to_prune(snapshots, retention, keep=()):
    """The snapshots beyond the ``retention`` newest (0 keeps all), oldest last; never one named in ``keep``."""
    if not retention or retention <= 0:
        return []
    ordered = [s for s in snapshots if s.name in keep] + [s for s in snapshots if s.name not in keep]
    return ordered[retention:]


# --- the revert target ------------------------------------------------------------------------------------------


class Target(object):
    """What a revert restores: its content, where it came from, and how it was chosen."""

    def __init__(self, content, ref, how, snapshot=None, secret_type=None):
        self.content = content
        self.ref = ref
        self.how = how
        self.snapshot = snapshot
        self.secret_type = secret_type


def select_snapshot(what, snapshots, current, snapshot_id=None):
    """The snapshot to revert to: ``snapshot_id`` exactly, or the newest whose content differs from ``current`` and
    that was not rolled back from (fled). Returns ``(snapshot, how, skipped_reason)``; a skipped reason means the
    current content already is the newest good one."""
    ids = ", ".join(s.name for s in snapshots) or "none"
    if snapshot_id:
        for snap in snapshots:
            if snap.name == snapshot_id:
                return snap, "snapshot %s (given)" % snap.name, None
        raise Refused("snapshot %s of %s not found; its snapshots are: %s (list them with kubectl get %s -n <ns> "
                      "-l %s)" % (snapshot_id, what, ids, snapshots[0].kind.lower() if snapshots else "configmap",
                                  SNAPSHOT_LABEL + "=true"), "snapshot_not_found", available_snapshots=[
                          s.name for s in snapshots])
    if not snapshots:
        raise Refused("%s has no snapshots to revert to; record one with state=snapshot (every deploy should), or "
                      "revert from a backup manifest with backup_file=" % what, "no_snapshots",
                      available_snapshots=[])
    skipped = []
    for snap in snapshots:
        if snap.content == current:
            skipped.append("%s (the current content)" % snap.name)
            continue
        if snap.fled_at:
            skipped.append("%s (rolled back from at %s)" % (snap.name, snap.fled_at))
            continue
        how = "newest snapshot whose content differs from the current content"
        if skipped:
            how += " (skipped %s)" % ", ".join(skipped)
        return snap, how, None
    live = [s for s in snapshots if not s.fled_at]
    if live and live[0].content == current:
        return live[0], "newest snapshot not rolled back from", (
            "the current content of %s already matches snapshot %s, the newest one not rolled back from" % (
                what, live[0].name))
    raise Refused("no snapshot of %s differs from the current content except ones rolled back from (%s); name one "
                  "with snapshot_id=" % (what, ids), "no_other_snapshot", available_snapshots=[s.name for s in snapshots])


def _b64_text(value):
    return base64.b64encode(value.encode("utf-8")).decode("ascii")


def parse_backup(text, path, kind, name, namespace):
    """The content of a backup manifest (``kubectl get <kind> <name> -o yaml`` output, a List, or several YAML
    documents holding the object). Raises Refused (``bad_backup``, ``wrong_kind``) with what is wrong."""
    import yaml  # ansible-core's own dependency

    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise Refused("backup file %s is not valid YAML or JSON: %s" % (path, str(exc).replace("\n", " ")),
                      "bad_backup")
    objects = []
    for doc in docs:
        if not isinstance(doc, dict):
            raise Refused("backup file %s holds a %s, not a Kubernetes object" % (path, type(doc).__name__),
                          "bad_backup")
        objects.extend(doc.get("items") or [] if str(doc.get("kind", "")).endswith("List") else [doc])
    if not objects:
        raise Refused("backup file %s holds no object" % path, "bad_backup")
    named = [o for o in objects if isinstance(o, dict) and (o.get("metadata") or {}).get("name") == name]
    if not named:
        found = ", ".join("%s %s" % (o.get("kind"), (o.get("metadata") or {}).get("name")) for o in objects
                          if isinstance(o, dict))
        raise Refused("backup file %s holds no object named %s (it holds: %s)" % (path, name, found), "bad_backup")
    obj = named[0]
    if obj.get("kind") != kind:
        raise Refused("backup file %s holds %s %s, not a %s: use kind=%s, or the backup of the %s" % (
            path, obj.get("kind"), name, kind, obj.get("kind"), kind), "wrong_kind")
    backup_ns = (obj.get("metadata") or {}).get("namespace")
    if backup_ns and backup_ns != namespace:
        raise Refused("backup file %s holds %s %s of namespace %s, not %s" % (path, kind, name, backup_ns, namespace),
                      "bad_backup")
    for field in ("data", "binaryData", "stringData"):
        value = obj.get(field)
        if value is not None and (not isinstance(value, dict) or
                                  not all(isinstance(v, str) for v in value.values())):
            raise Refused("backup file %s: %s of %s %s must map keys to strings" % (path, field, kind, name),
                          "bad_backup")
    if kind == "ConfigMap" and obj.get("stringData"):
        raise Refused("backup file %s: a ConfigMap has no stringData" % path, "bad_backup")
    content = content_of(kind, obj)
    if kind == "Secret":
        for key, value in content["data"].items():
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise Refused("backup file %s: data.%s of secret %s is not base64" % (path, key, name), "bad_backup")
        for key, value in (obj.get("stringData") or {}).items():
            content["data"][key] = _b64_text(value)
    if kind == "ConfigMap":
        for key, value in content["binaryData"].items():
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise Refused("backup file %s: binaryData.%s of configmap %s is not base64" % (path, key, name),
                              "bad_backup")
    return content, obj.get("type")


# --- consumers ----------------------------------------------------------------------------------------------------


def _refs_of_spec(spec):
    """Every config reference of a pod spec: ``(kind, name, via, container, key, env_name)``."""
    refs = []
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or []:
            cname = container.get("name")
            for source in container.get("envFrom") or []:
                for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if source.get(field):
                        refs.append((kind, source[field].get("name"), "envFrom", cname, None,
                                     source.get("prefix") or ""))
            for env in container.get("env") or []:
                value_from = env.get("valueFrom") or {}
                for field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    if value_from.get(field):
                        refs.append((kind, value_from[field].get("name"), "env", cname, value_from[field].get("key"),
                                     env.get("name")))
    for volume in spec.get("volumes") or []:
        if volume.get("configMap"):
            refs.append(("ConfigMap", volume["configMap"].get("name"), "volume", None, None, volume.get("name")))
        if volume.get("secret"):
            refs.append(("Secret", volume["secret"].get("secretName"), "volume", None, None, volume.get("name")))
        for source in (volume.get("projected") or {}).get("sources") or []:
            for field, kind in (("configMap", "ConfigMap"), ("secret", "Secret")):
                if source.get(field):
                    refs.append((kind, source[field].get("name"), "projected", None, None, volume.get("name")))
    return refs


def _template(workload):
    return (workload.get("spec") or {}).get("template") or {}


def _annotations(workload):
    annotations = dict(((workload.get("metadata") or {}).get("annotations") or {}))
    annotations.update((_template(workload).get("metadata") or {}).get("annotations") or {})
    return annotations


def reloader_manages(kind, name, workload, config_obj, references):
    """Whether Reloader (stakater/Reloader) restarts this workload when the config changes, by its annotations."""
    config_annotations = ((config_obj or {}).get("metadata") or {}).get("annotations") or {}
    if str(config_annotations.get(RELOADER_IGNORE, "")).lower() == "true":
        return False
    annotations = _annotations(workload)
    named = [n.strip() for n in str(annotations.get(RELOADER_KIND_RELOAD[kind], "")).split(",") if n.strip()]
    if name in named:
        return True
    if not references:
        return False
    if str(annotations.get(RELOADER_AUTO, "")).lower() == "true":
        return True
    if str(annotations.get(RELOADER_KIND_AUTO[kind], "")).lower() == "true":
        return True
    return (str(annotations.get(RELOADER_SEARCH, "")).lower() == "true"
            and str(config_annotations.get(RELOADER_MATCH, "")).lower() == "true")


def find_consumers(kind, name, workloads, config_obj=None):
    """The workloads whose pod template references the config (envFrom, env valueFrom, volumes, projected volumes)
    or that Reloader is told to reload for it. ``workloads`` is ``[(kind, obj)]``."""
    consumers = []
    for wkind, workload in workloads:
        meta = workload.get("metadata") or {}
        refs = [r for r in _refs_of_spec(_template(workload).get("spec") or {}) if r[0] == kind and r[1] == name]
        reloader = reloader_manages(kind, name, workload, config_obj, refs)
        if not refs and not reloader:
            continue
        consumers.append({
            "kind": wkind, "name": meta.get("name"),
            "via": sorted(set("%s%s" % (r[2], (":" + (r[5] or r[4] or "")) if r[2] != "envFrom" else "") for r in refs)),
            "containers": sorted(set(r[3] for r in refs if r[3])),
            "keys": sorted(set(r[4] for r in refs if r[4])),
            "reloader": reloader,
            "paused": bool((workload.get("spec") or {}).get("paused")),
            "generation": meta.get("generation"),
            "uid": meta.get("uid"),
            "checksum_annotations": checksum_annotations(workload),
        })
    return sorted(consumers, key=lambda c: (c["kind"], c["name"]))


def parse_workload_ref(text):
    """``deployment/name``, ``Deployment/name`` or a bare name (a Deployment) as ``(kind, name)``."""
    kind, _sep, name = str(text).rpartition("/")
    if not kind:
        return "Deployment", name
    bare = kind.lower()[:-len(".apps")] if kind.lower().endswith(".apps") else kind.lower()
    for candidate in WORKLOAD_KINDS:
        if bare in (candidate.lower(), candidate.lower() + "s"):
            return candidate, name
    raise Refused("consumer %r: kind %s cannot be restarted; name Deployment, StatefulSet or DaemonSet workloads as "
                  "kind/name" % (text, kind), "wrong_kind")


def hash_named(kind, name, config_exists, consumers, referenced_names):
    """Why reverting this config in place would be the wrong move (it is hash-named: Kustomize configMapGenerator or a
    Helm ``checksum/*`` pod annotation), or None. ``referenced_names`` maps each name-suffixed ConfigMap/Secret name
    of ``name``'s family to the workloads referencing it."""
    match = KUSTOMIZE_SUFFIX_RE.match(name)
    users = ", ".join("%s/%s" % (c["kind"].lower(), c["name"]) for c in consumers)
    if match and consumers:
        return ("%s %s carries a Kustomize generator hash suffix and is referenced by %s: each content is its own "
                "name, referenced from the pod template, so reverting the config means rolling back the workload to "
                "the revision that referenced the previous name" % (kind.lower(), name, users))
    family = sorted(n for n in referenced_names if n != name)
    if family and (not config_exists or not consumers):
        who = sorted(set(w for n in family for w in referenced_names[n]))
        return ("%s %s is generated with a hash suffix (%s referenced by %s): each content is its own name, "
                "referenced from the pod template, so reverting the config means rolling back the workload to the "
                "revision that referenced the previous name" % (kind.lower(), name, ", ".join(family), ", ".join(who)))
    checksummed = [c for c in consumers if c.get("checksum_annotations")]
    if checksummed:
        return ("%s roll their pods on a config checksum in the pod template (%s, Helm's checksum/config pattern): the "
                "config's version is part of the workload template, so roll the workload back (or helm rollback) "
                "instead of editing %s %s in place" % (
                    ", ".join("%s/%s" % (c["kind"].lower(), c["name"]) for c in checksummed),
                    ", ".join(sorted(set(a for c in checksummed for a in c["checksum_annotations"]))),
                    kind.lower(), name))
    return None


def checksum_annotations(workload):
    return sorted(k for k in ((_template(workload).get("metadata") or {}).get("annotations") or {})
                  if k.startswith(CHECKSUM_ANNOTATION_PREFIX))


def family_references(kind, name, workloads):
    """``{referenced name: [workload]}`` for names ``<name>-<kustomize hash>`` that pod templates reference."""
    found = {}
    for wkind, workload in workloads:
        for ref in _refs_of_spec(_template(workload).get("spec") or {}):
            match = KUSTOMIZE_SUFFIX_RE.match(ref[1] or "")
            if ref[0] == kind and match and match.group("base") == name:
                found.setdefault(ref[1], set()).add("%s/%s" % (wkind.lower(), (workload.get("metadata") or {}).get(
                    "name")))
    return dict((k, sorted(v)) for k, v in found.items())


def reloaded_from(kind, namespace, name, digest, containers, when):
    """The pod-template annotation value recording which config caused a restart (Reloader's last-reloaded-from)."""
    return json.dumps({"type": kind.upper(), "namespace": namespace, "name": name, "hash": digest,
                       "containerRefs": containers, "observedAt": when}, sort_keys=True, separators=(",", ":"))


def resolved_env(pod, kind, name, content, key=None):
    """The environment a pod's containers get from this config, as the kubelet resolves it from the pod spec
    (envFrom and env valueFrom): ``{container: {VAR: value}}``. Values are shown as shown_values shows them."""
    shown = shown_values(kind, content, key)
    entries = _entries(content)
    env = {}
    for group in ("initContainers", "containers"):
        for container in ((pod.get("spec") or {}).get(group) or []):
            values = {}
            for source in container.get("envFrom") or []:
                ref = source.get("configMapRef" if kind == "ConfigMap" else "secretRef") or {}
                if ref.get("name") == name:
                    for entry in sorted(entries):
                        if entries[entry][0] == "data":
                            values[(source.get("prefix") or "") + entry] = shown[entry]
            for var in container.get("env") or []:
                ref = (var.get("valueFrom") or {}).get("configMapKeyRef" if kind == "ConfigMap" else "secretKeyRef") or {}
                if ref.get("name") == name and ref.get("key") in entries:
                    values[var.get("name")] = shown[ref["key"]]
            if values:
                env[container.get("name")] = values
    return env


def mounts_config(pod, kind, name):
    """Whether a pod mounts the config as a volume (plain or projected)."""
    return any(r[0] == kind and r[1] == name and r[2] in ("volume", "projected")
               for r in _refs_of_spec(pod.get("spec") or {}))
