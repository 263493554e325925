# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Evidence packs: capture sources into redacted files, a manifest, diffs and a deterministic archive.

Layout under ``<evidence_dir>/<rollback_id>/``::

    before/ after/ failure/       one directory per phase, one sub-directory per source
      <phase>/manifest.json       every file (sha256, size, source, captured_at), every failed source,
                                  the incomplete flag and the redaction result of that phase
    diff/                         redacted unified diffs before -> after, diff/summary.json (changed keys)
    index.json                    the time-free content index that goes into the archive
    manifest.json                 the pack manifest written by finalize (archive digest, phase manifests)
  <rollback_id>.tar.gz            deterministic: sorted entries, fixed mtime/owner, gzip mtime 0

The archive holds the content (data files, diffs, index.json) and no capture times,
so the same content always gives the same digest; the timed phase manifests stay
beside it and their digests are recorded in the pack manifest.

Sections: pure helpers (source specs, plans, diffs, index) first, then file writing,
then the capture sources (Kubernetes, PostgreSQL, files, git, HTTP, commands),
then finalization.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import codecs
import concurrent.futures
import datetime
import difflib
import errno
import gzip
import hashlib
import json
import math
import os
import re
import shutil
import tarfile
import tempfile
import threading

from ansible.module_utils.common.yaml import HAS_YAML, SafeLoader

from ansible_collections.governed.rollback.plugins.module_utils import _pg, _proc, _redact
from ansible_collections.governed.rollback.plugins.module_utils._common import (
    RollbackError, pretty_json, sha256_file, utc_stamp,
)
from ansible_collections.governed.rollback.plugins.module_utils._k8s import (
    HAS_K8S,
    RESOURCE_PATHS,
    ApiException,
    K8sError,
    KubeRest,
    api_message,
    explain_api_exception,
)
from ansible_collections.governed.rollback.plugins.module_utils._k8s_objects import selector_to_string
from ansible_collections.governed.rollback.plugins.module_utils._revisions import build_history

if HAS_YAML:
    import yaml

PHASES = ("before", "after", "failure")
MANIFEST_SCHEMA = "governed.rollback/evidence-manifest/v1"
INDEX_SCHEMA = "governed.rollback/evidence-index/v1"
PACK_SCHEMA = "governed.rollback/evidence-pack/v1"
MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.json"
DIFF_DIR = "diff"
DIFF_SUMMARY = "summary.json"
# 1980-01-01: tar readers warn about 1970 timestamps; any fixed value keeps digests stable.
ARCHIVE_MTIME = 315532800
ROLLBACK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SOURCE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
MIB = 1024 * 1024
STREAM_CHUNK = 64 * 1024
K8S_PAGE_SIZE = 200
MAX_CHANGED_FIELDS = 50
YAML_BATCH = 50


class EvidenceError(RollbackError):
    """A problem an operator can fix, already phrased as what failed and what to do."""


class SourceError(RollbackError):
    """One source could not be captured; recorded in the manifest, fatal only if required."""


# ---------------------------------------------------------------------------
# Source specifications (pure)
# ---------------------------------------------------------------------------

COMMON_SOURCE_KEYS = ("type", "name", "required", "diff")

# type -> (required keys, one-of groups, optional keys with defaults, diff by default)
SOURCE_TYPES = {
    "k8s_workload": (("namespace", "resource_name"), (), {"kind": "Deployment"}, True),
    "k8s_pods": (("namespace",), (), {"label_selector": None, "field_selector": None}, False),
    "k8s_logs": (("namespace",), (), {"label_selector": None, "field_selector": None, "containers": None,
                                      "tail_lines": 1000, "previous": True, "limit_bytes": None}, False),
    "k8s_configmap": (("namespace",), (("resource_name", "label_selector"),), {}, True),
    "k8s_secret": (("namespace",), (("resource_name", "label_selector"),), {}, True),
    "k8s_events": (("namespace",), (), {"field_selector": None}, False),
    "pg_schema": ((), (), {"schemas": None}, True),
    "pg_row_counts": ((), (), {}, True),
    "pg_table_counts": (("tables",), (), {}, True),
    "pg_migrations": ((), (), {"table": None, "limit": 1000}, True),
    "file": (("path",), (), {}, True),
    "data": (("value",), (), {"filename": None}, True),
    "git_file": (("repo", "path"), (), {"ref": "HEAD"}, True),
    "http": (("url",), (), {"method": "GET", "headers": None, "timeout": 10, "validate_certs": True,
                            "body_bytes": 4096}, True),
    "command": ((), (("argv", "cmd"),), {"chdir": None, "timeout": 60}, True),
}
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


def validate_rollback_id(rollback_id):
    if not rollback_id or not ROLLBACK_ID_RE.match(rollback_id):
        raise EvidenceError("rollback_id %r cannot name a directory: use letters, digits, '.', '_' and '-' "
                            "(at most 128, starting with a letter or digit), e.g. rollback-20240115-103045"
                            % (rollback_id,))


def normalize_sources(sources):
    """Check each source dict against its type and return plain dicts with defaults applied.

    Raises EvidenceError naming the source and what is missing or not understood.
    """
    out = []
    seen = set()
    for index, raw in enumerate(sources or []):
        raw = dict((k, v) for k, v in (raw or {}).items() if v is not None)
        stype = raw.get("type")
        if stype not in SOURCE_TYPES:
            raise EvidenceError("sources[%d]: unknown type %r; use one of: %s"
                                % (index, stype, ", ".join(sorted(SOURCE_TYPES))))
        name = raw.get("name")
        label = "sources[%d] (%s%s)" % (index, stype, (" %r" % name) if name else "")
        if not name:
            raise EvidenceError("%s has no name; give every source a unique name (it names its directory)" % label)
        if not SOURCE_NAME_RE.match(name):
            raise EvidenceError("%s: name must be letters, digits, '.', '_' or '-' (it names a directory)" % label)
        if name in seen:
            raise EvidenceError("%s: the name %r is used twice; source names must be unique" % (label, name))
        seen.add(name)
        required_keys, one_of, optional, diff_default = SOURCE_TYPES[stype]
        missing = [key for key in required_keys if raw.get(key) in (None, "", [])]
        if missing:
            raise EvidenceError("%s needs %s" % (label, ", ".join(missing)))
        for group in one_of:
            given = [key for key in group if raw.get(key) not in (None, "", [])]
            if len(given) != 1:
                raise EvidenceError("%s needs exactly one of %s" % (label, ", ".join(group)))
        allowed = set(COMMON_SOURCE_KEYS) | set(required_keys) | set(optional)
        for group in one_of:
            allowed.update(group)
        extra = sorted(set(raw) - allowed)
        if extra:
            raise EvidenceError("%s does not take %s; it takes: %s"
                                % (label, ", ".join(extra), ", ".join(sorted(allowed - {"type"}))))
        source = dict(optional)
        source.update(raw)
        source["required"] = bool(raw.get("required", False))
        source["diff"] = bool(raw.get("diff", diff_default))
        if stype == "k8s_workload" and source["kind"] not in WORKLOAD_KINDS:
            raise EvidenceError("%s: kind %s is not supported; use one of: %s"
                                % (label, source["kind"], ", ".join(WORKLOAD_KINDS)))
        out.append(source)
    return out


def describe_source(source):
    """One line saying what a source captures (for plans and manifests); never includes credentials."""
    stype = source["type"]
    ns = source.get("namespace")
    selector = ", ".join(filter(None, [
        ("-l %s" % source["label_selector"]) if source.get("label_selector") else None,
        ("--field-selector %s" % source["field_selector"]) if source.get("field_selector") else None,
    ]))
    if stype == "k8s_workload":
        return "%s %s/%s with its ReplicaSets/ControllerRevisions, HPA and events" % (
            source["kind"], ns, source["resource_name"])
    if stype == "k8s_pods":
        return "pods in %s %s as YAML" % (ns, selector or "(all)")
    if stype == "k8s_logs":
        return "logs of pods in %s %s, last %s lines per container%s" % (
            ns, selector or "(all)", source.get("tail_lines"), ", previous containers too" if source.get("previous")
            else "")
    if stype in ("k8s_configmap", "k8s_secret"):
        kind = "ConfigMap" if stype == "k8s_configmap" else "Secret (values redacted)"
        target = source.get("resource_name") or ("-l %s" % source.get("label_selector"))
        return "%s %s/%s" % (kind, ns, target)
    if stype == "k8s_events":
        return "events of namespace %s%s" % (ns, (" " + selector) if selector else "")
    if stype == "pg_schema":
        return "pg_dump -s%s" % "".join(" -n %s" % s for s in source.get("schemas") or [])
    if stype == "pg_row_counts":
        return "row counters from pg_stat_user_tables"
    if stype == "pg_table_counts":
        return "exact count(*) of %s" % ", ".join(source["tables"])
    if stype == "pg_migrations":
        return "migration table %s" % (source.get("table") or "(detected: %s)" % "/".join(_pg.MIGRATION_TABLES))
    if stype == "file":
        return "file %s" % source["path"]
    if stype == "data":
        return "data the playbook holds, as JSON (%s)" % _data_filename(source)
    if stype == "git_file":
        return "%s at %s in git repository %s" % (source["path"], source.get("ref"), source["repo"])
    if stype == "http":
        return "%s %s" % (source.get("method"), _redact.mask_url_credentials(source["url"]))
    if stype == "command":
        argv = source.get("argv") or [source.get("cmd")]
        return "command %s" % _redact.redact_text(" ".join(str(a) for a in argv))
    return stype


def plan_capture(rollback_id, phase, sources):
    """What a capture would write (check mode): one entry per source."""
    return [{
        "name": s["name"],
        "type": s["type"],
        "required": s["required"],
        "captures": describe_source(s),
        "path": "%s/%s/%s/" % (rollback_id, phase, s["name"]),
    } for s in sources]


def needs_k8s(sources):
    return any(s["type"].startswith("k8s_") for s in sources)


def needs_pg(sources):
    return any(s["type"].startswith("pg_") for s in sources)


# ---------------------------------------------------------------------------
# Serialization and diffs (pure)
# ---------------------------------------------------------------------------

# A scalar YAML (1.1 and 1.2) reads back as the same string without quotes: no leading digit, sign,
# dot or indicator, no ": " or " #", ASCII only. Everything else is double-quoted JSON style.
_PLAIN_RE = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./:@+-]*(?: [A-Za-z0-9_./:@+(),=-]+)*$")
_NOT_PLAIN_WORDS = frozenset(("y", "n", "yes", "no", "true", "false", "on", "off", "null"))


def _yaml_string(text):
    if _PLAIN_RE.match(text) and ": " not in text and not text.endswith(":") and \
            text.lower() not in _NOT_PLAIN_WORDS:
        return text
    return json.dumps(text)


def _literal_block(text, indent):
    """A multi-line string as a literal block (diffs then show changed lines), or None when unsafe."""
    if "\r" in text or not text.strip("\n") or text.lstrip("\n")[:1] in (" ", "\t"):
        return None
    body = text.rstrip("\n")
    lines = body.split("\n")
    for line in lines:
        if line != line.rstrip() or not all(c == "\t" or c.isprintable() for c in line):
            return None
    trailing = len(text) - len(body)
    chomp = "-" if trailing == 0 else ("" if trailing == 1 else "+")
    pad = " " * indent
    out = ["|" + chomp + "\n"] + [(pad + line if line else "") + "\n" for line in lines]
    out.extend("\n" * (trailing - 1) if trailing > 1 else "")
    return "".join(out)


def _yaml_inline(value, indent):
    """A value that fits after "key: " or "- " (ends without its newline, except literal blocks)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if value in (float("inf"), float("-inf")):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        return text if "." in text or "e" not in text else text.replace("e", ".0e", 1)
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, (list, tuple)):
        return "[]"
    text = str(value)
    if "\n" in text:
        block = _literal_block(text, indent)
        if block is not None:
            return block
    return _yaml_string(text)


def _yaml_lines(value, indent, out):
    pad = " " * indent
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            item = value[key]
            label = pad + _yaml_string(str(key)) + ":"
            if isinstance(item, dict) and item:
                out.append(label + "\n")
                _yaml_lines(item, indent + 2, out)
            elif isinstance(item, (list, tuple)) and item:
                out.append(label + "\n")
                _yaml_lines(item, indent, out)
            else:
                text = _yaml_inline(item, indent + 2)
                out.append(label + " " + text + ("" if text.endswith("\n") else "\n"))
        return
    for item in value:
        if isinstance(item, (dict, list, tuple)) and item:
            start = len(out)
            _yaml_lines(item, indent + 2, out)
            out[start] = pad + "- " + out[start][indent + 2:]
        else:
            text = _yaml_inline(item, indent + 2)
            out.append(pad + "- " + text + ("" if text.endswith("\n") else "\n"))


def to_yaml(data):
    """Block-style YAML with sorted keys, like ``yaml.safe_dump`` but several times faster.

    Evidence is JSON-shaped (dicts, lists, strings, numbers, booleans, null); PyYAML's Python
    representer dominated the capture of a thousand pods. Multi-line strings become literal
    blocks so config diffs show the changed lines.
    """
    if isinstance(data, (dict, list, tuple)) and data:
        out = []
        _yaml_lines(data, 0, out)
        return "".join(out)
    text = _yaml_inline(data, 2)
    return text if text.endswith("\n") else text + "\n"


def from_yaml(text):
    return yaml.load(text, Loader=SafeLoader)


def _flatten(value, prefix=""):
    if isinstance(value, dict):
        if not value and prefix:
            yield prefix, {}
        for key in value:
            yield from _flatten(value[key], "%s.%s" % (prefix, key) if prefix else str(key))
    elif isinstance(value, list):
        if not value and prefix:
            yield prefix, []
        for index, item in enumerate(value):
            yield from _flatten(item, "%s[%d]" % (prefix, index))
    else:
        yield prefix, value


def changed_fields(before, after):
    """Dotted paths of leaves that differ between two documents (added, removed or changed)."""
    left = dict(_flatten(before or {}))
    right = dict(_flatten(after or {}))
    return sorted(path for path in set(left) | set(right) if left.get(path, _MISSING) != right.get(path, _MISSING))


_MISSING = object()


def changed_keys(before, after):
    """Keys of ``data``/``binaryData``/``stringData`` that were added, removed or changed.

    For Secrets the values are already redacted, so a change shows only when the
    byte count changes; the pack never holds anything that could tell more.
    """
    result = {"added": [], "removed": [], "changed": []}
    for field in ("data", "binaryData", "stringData"):
        left = (before or {}).get(field) or {}
        right = (after or {}).get(field) or {}
        result["added"].extend(sorted(set(right) - set(left)))
        result["removed"].extend(sorted(set(left) - set(right)))
        result["changed"].extend(sorted(k for k in set(left) & set(right) if left[k] != right[k]))
    result["all"] = sorted(set(result["added"]) | set(result["removed"]) | set(result["changed"]))
    return result


def unified_diff_lines(before_lines, after_lines, from_name, to_name):
    return difflib.unified_diff(before_lines, after_lines, fromfile=from_name, tofile=to_name, n=3)


def compare_phase_files(before_files, after_files, sources=None):
    """Pair the diffable files of two phases by path inside the phase.

    ``*_files`` are manifest file records; ``sources`` (names) limits the pairing to sources
    captured in both phases, so a source present in one phase only is not reported as removed.
    Returns sorted (relpath, status, before, after) tuples with status added/removed/modified/unchanged.
    """
    def by_rel(records):
        return dict((r["path"].split("/", 1)[1], r) for r in records
                    if r.get("diff") and (sources is None or r.get("source") in sources))
    left, right = by_rel(before_files), by_rel(after_files)
    out = []
    for rel in sorted(set(left) | set(right)):
        b, a = left.get(rel), right.get(rel)
        if b is None:
            status = "added"
        elif a is None:
            status = "removed"
        elif b["sha256"] == a["sha256"]:
            status = "unchanged"
        else:
            status = "modified"
        out.append((rel, status, b, a))
    return out


INDEX_SOURCE_KEYS = ("name", "type", "required", "status", "captures", "error", "detail")


def build_index(rollback_id, phase_manifests, diff_summary, redaction):
    """The archive's content index: everything the manifests say except when things happened."""
    phases = {}
    for phase in sorted(phase_manifests):
        manifest = phase_manifests[phase]
        phases[phase] = {
            "incomplete": manifest.get("incomplete", True),
            "files": [dict((k, f.get(k)) for k in ("path", "sha256", "size", "source", "type"))
                      for f in manifest.get("files", [])],
            "sources": [dict((k, s.get(k)) for k in INDEX_SOURCE_KEYS) for s in manifest.get("sources", [])],
            "failed_sources": [s.get("name") for s in manifest.get("failed_sources", [])],
            "redaction": (manifest.get("redaction") or {}).get("status"),
        }
    return {
        "schema": INDEX_SCHEMA,
        "rollback_id": rollback_id,
        "phases": phases,
        "diff": diff_summary,
        "redaction": redaction,
    }


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

class _Sink(object):
    """A text file being written: utf-8 bytes go to disk and into a sha256 as they are written."""

    def __init__(self, path):
        self.path = path
        self._handle = open(path, "wb")
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, text):
        data = text.encode("utf-8") if isinstance(text, str) else text
        self._handle.write(data)
        self._digest.update(data)
        self.size += len(data)

    def close(self):
        self._handle.close()
        return self._digest.hexdigest()


class PhaseWriter(object):
    """Writes the files of one phase and keeps their records for the manifest (thread-safe)."""

    def __init__(self, pack_dir, rollback_id, phase):
        self.pack_dir = pack_dir
        self.rollback_id = rollback_id
        self.phase = phase
        self.phase_dir = os.path.join(pack_dir, phase)
        self.files = []
        self._lock = threading.Lock()

    def open(self, source, filename, kind=None):
        return _FileContext(self, source, filename, kind)

    def _record(self, record):
        with self._lock:
            self.files.append(record)

    def discard(self, source):
        """Forget and delete the files of a failed source whose output would only mislead (partial dumps)."""
        with self._lock:
            keep = []
            for record in self.files:
                if record["source"] == source["name"]:
                    path = os.path.join(self.pack_dir, *record["path"].split("/"))
                    if os.path.exists(path):
                        os.unlink(path)
                else:
                    keep.append(record)
            self.files = keep

    def write_text(self, source, filename, text, kind=None):
        with self.open(source, filename, kind) as sink:
            sink.write(text)

    def write_yaml(self, source, filename, data, kind=None):
        self.write_text(source, filename, to_yaml(data), kind)

    def write_yaml_list(self, source, filename, items, kind=None, item_kind=None):
        """Stream ``items`` as a ``kind: List`` document, one item at a time (memory stays flat)."""
        count = 0
        with self.open(source, filename, kind) as sink:
            sink.write("apiVersion: v1\nitems:\n")
            batch = []
            for item in items:
                if item_kind and "kind" not in item:
                    item = dict(item, apiVersion=item.get("apiVersion", "v1"), kind=item_kind)
                batch.append(item)
                count += 1
                if len(batch) == YAML_BATCH:
                    sink.write(to_yaml(batch))
                    batch = []
            if batch:
                sink.write(to_yaml(batch))
            if not count:
                sink.write("[]\n")
            sink.write("kind: List\nmetadata: {}\n")
        return count


class _FileContext(object):
    def __init__(self, writer, source, filename, kind):
        self.writer = writer
        self.source = source
        self.relpath = "%s/%s/%s" % (writer.phase, source["name"], filename)
        self.path = os.path.join(writer.pack_dir, *self.relpath.split("/"))
        self.kind = kind
        self.sink = None

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.sink = _Sink(self.path)
        return self.sink

    def __exit__(self, exc_type, exc, tb):
        digest = self.sink.close()
        record = {
            "path": self.relpath,
            "sha256": digest,
            "size": self.sink.size,
            "source": self.source["name"],
            "type": self.source["type"],
            "captured_at": utc_stamp(),
            "diff": bool(self.source.get("diff")),
        }
        if self.kind:
            record["kind"] = self.kind
        if exc_type is not None:
            record["partial"] = True
        self.writer._record(record)
        return False


def write_json_atomic(path, data):
    tmp = "%s.tmp-%d" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(pretty_json(data))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_json(path):
    with open(path, "r", encoding="utf-8") as handle:
        return json.load(handle)


# ---------------------------------------------------------------------------
# Pre-flight
# ---------------------------------------------------------------------------

def preflight(evidence_dir, min_free_mb=64):
    """Prove the evidence directory can take a pack, writing nothing that stays.

    A probe file is created and removed in the directory (or, if it does not exist
    yet, in its nearest existing parent): permission bits alone lie for root and for
    read-only or immutable file systems.
    """
    if not evidence_dir:
        raise EvidenceError("no evidence directory: set evidence_dir (or GOVERNED_ROLLBACK_EVIDENCE_DIR; the "
                            "sandbox inventory sets evidence_dir)")
    path = os.path.abspath(os.path.expanduser(evidence_dir))
    exists = os.path.exists(path)
    if exists and not os.path.isdir(path):
        raise EvidenceError("evidence_dir %s exists and is not a directory; point evidence_dir at a directory" % path)
    probe_dir = path
    while not os.path.exists(probe_dir):
        probe_dir = os.path.dirname(probe_dir)
    if not os.path.isdir(probe_dir):
        raise EvidenceError("evidence_dir %s cannot be created: %s is not a directory" % (path, probe_dir))
    try:
        handle, probe = tempfile.mkstemp(prefix=".governed-preflight-", dir=probe_dir)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        where = path if exists else "%s (to create %s)" % (probe_dir, path)
        raise EvidenceError("evidence directory %s is not writable (%s); fix its permissions or point "
                            "evidence_dir / GOVERNED_ROLLBACK_EVIDENCE_DIR at a writable directory before any "
                            "rollback action" % (where, exc.strerror or exc))
    stat = os.statvfs(probe_dir)
    free_mb = stat.f_bavail * stat.f_frsize // MIB
    if free_mb < min_free_mb:
        raise EvidenceError("evidence directory %s has only %d MiB free, below min_free_mb=%d; free space or point "
                            "evidence_dir at another file system before any rollback action"
                            % (path, free_mb, min_free_mb))
    if stat.f_favail == 0 and stat.f_files:
        raise EvidenceError("evidence directory %s has no free inodes; free some before any rollback action" % path)
    return {"path": path, "exists": exists, "writable": True, "free_mb": int(free_mb), "min_free_mb": min_free_mb}


# ---------------------------------------------------------------------------
# Capture context
# ---------------------------------------------------------------------------

class CaptureContext(object):
    """What the sources share: clients (made on first use), the scanner that learns secret values, notes."""

    def __init__(self, params, k8s_client_factory=None, pg_connect=None, max_workers=8,
                 scan_referenced_secrets=True, allowlist=()):
        self.params = params
        self._k8s_client_factory = k8s_client_factory
        self._k8s = None
        self._pg_connect = pg_connect
        self._pg = None
        self._pg_error = None
        self.max_workers = max(1, int(max_workers or 1))
        self.scan_referenced_secrets = scan_referenced_secrets
        self.scanner = _redact.SecretScanner(allowlist=allowlist)
        self.stats = _redact.RedactionStats()
        self.notes = []
        self._learned = set()
        self._lock = threading.Lock()

    # -- Kubernetes
    @property
    def kube(self):
        if self._k8s is None:
            if self._k8s_client_factory is None:
                raise SourceError("no Kubernetes client available")
            try:
                self._k8s = KubeReader(self._k8s_client_factory())
            except K8sError as exc:
                raise SourceError(exc.msg)
        return self._k8s

    # -- PostgreSQL
    @property
    def pg(self):
        if self._pg is None:
            if self._pg_error is not None:
                raise SourceError(self._pg_error)
            if self._pg_connect is None:
                raise SourceError("no PostgreSQL connection available")
            try:
                self._pg = self._pg_connect()
            except SourceError as exc:
                # Remember the failure: every pg source would otherwise wait for its own connect timeout.
                self._pg_error = str(exc)
                raise
        return self._pg

    def close(self):
        if self._pg is not None:
            try:
                self._pg.close()
            except Exception:  # pylint: disable=broad-except  # closing is best effort
                pass

    # -- redaction helpers
    def known_values(self):
        return self.scanner.known_values

    def redact_object(self, obj, kind=None):
        with self._lock:
            known = self.scanner.known_values
        return _redact.redact_k8s_object(obj, known_values=known, stats=self.stats, kind=kind)

    def line_redactor(self):
        return _redact.LineRedactor(self.scanner.known_values)

    def learn_secret(self, secret):
        with self._lock:
            for value in _redact.secret_values_of(secret):
                self.scanner.add_known_value(value)

    def learn_referenced_secrets(self, namespace, names):
        """Read Secrets a workload references so their exact values are masked and scanned for."""
        if not self.scan_referenced_secrets:
            return
        for name in sorted(set(names)):
            key = (namespace, name)
            with self._lock:
                if key in self._learned:
                    continue
                self._learned.add(key)
            try:
                self.learn_secret(self.kube.get("Secret", namespace, name))
            except (K8sError, SourceError) as exc:
                self.note("secret %s/%s is referenced but could not be read to scan for its values: %s"
                          % (namespace, name, exc))

    def note(self, text):
        with self._lock:
            self.notes.append(_redact.redact_text(str(text)))


def secret_refs_of_pod_spec(spec):
    """Names of Secrets a pod spec references (env, envFrom, volumes, projected volumes, image pull)."""
    spec = spec or {}
    names = set()
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []) + \
            (spec.get("ephemeralContainers") or []):
        for env in container.get("env") or []:
            ref = ((env.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")
            if ref:
                names.add(ref)
        for env_from in container.get("envFrom") or []:
            ref = (env_from.get("secretRef") or {}).get("name")
            if ref:
                names.add(ref)
    for volume in spec.get("volumes") or []:
        ref = (volume.get("secret") or {}).get("secretName")
        if ref:
            names.add(ref)
        for projected in (volume.get("projected") or {}).get("sources") or []:
            ref = (projected.get("secret") or {}).get("name")
            if ref:
                names.add(ref)
    for pull in spec.get("imagePullSecrets") or []:
        if pull.get("name"):
            names.add(pull["name"])
    return names


# ---------------------------------------------------------------------------
# Kubernetes access (raw JSON: no model deserialization, pages streamed)
# ---------------------------------------------------------------------------

def _api_error(exc, verb, resource, namespace, name=None):
    """A K8sError for any failure of an API call: the API's own answer, or why the server was not reached.

    ``detail`` on the error keeps the server's own words (for callers that classify failures).
    """
    if HAS_K8S and isinstance(exc, ApiException):
        error = explain_api_exception(exc, verb, resource, namespace, name)
        error.detail = "HTTP %s: %s" % (exc.status, api_message(exc))
        return error
    where = "%s/%s" % (namespace, name) if name else "in %s" % namespace
    error = K8sError("cannot reach the Kubernetes API server to %s %s %s: %s" % (verb, resource, where, exc))
    error.detail = None
    return error


class KubeReader(KubeRest):
    """KubeRest's GETs with evidence's error wording: plain dicts, lists paged, logs streamed."""

    def get(self, kind, namespace, name):
        try:
            return super(KubeReader, self).get(kind, namespace, name)
        except Exception as exc:  # pylint: disable=broad-except  # ApiException, urllib3 errors and friends
            raise _api_error(exc, "get", kind, namespace, name)

    def list(self, kind, namespace, label_selector=None, field_selector=None, page_size=K8S_PAGE_SIZE):
        """Yield items page by page (API order, i.e. by name), so a large list is never held whole."""
        token = None
        while True:
            query = [("limit", page_size)]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if field_selector:
                query.append(("fieldSelector", field_selector))
            if token:
                query.append(("continue", token))
            try:
                page = self.list_page(kind, namespace, query)
            except Exception as exc:  # pylint: disable=broad-except
                raise _api_error(exc, "list", kind, namespace)
            yield from page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    def log_stream(self, namespace, pod, container, tail_lines=None, previous=False, limit_bytes=None):
        query = [("container", container)]
        if previous:
            query.append(("previous", "true"))
        if tail_lines is not None:
            query.append(("tailLines", tail_lines))
        if limit_bytes:
            query.append(("limitBytes", limit_bytes))
        try:
            return self.open("GET", RESOURCE_PATHS["Pod"] + "/{name}/log", {"namespace": namespace, "name": pod}, query)
        except Exception as exc:  # pylint: disable=broad-except
            raise _api_error(exc, "get logs of", "pod", namespace, "%s (container %s%s)"
                             % (pod, container, ", previous" if previous else ""))


def iter_text_lines(chunks):
    """Decode a byte-chunk stream as utf-8 (replacing bad bytes) and yield lines with their newline."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    carry = ""
    for chunk in chunks:
        carry += decoder.decode(chunk)
        if "\n" in carry:
            lines = carry.split("\n")
            carry = lines.pop()
            for line in lines:
                yield line + "\n"
    carry += decoder.decode(b"", final=True)
    if carry:
        yield carry


def write_redacted_lines(sink, lines, redactor):
    count = 0
    for line in lines:
        out = redactor.redact_line(line)
        if out is not None:
            sink.write(out)
            count += 1
    return count


# ---------------------------------------------------------------------------
# Kubernetes sources
# ---------------------------------------------------------------------------

def _meta(obj):
    return obj.get("metadata") or {}


def _kube_call(func, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except K8sError as exc:
        raise SourceError(exc.msg)


def _object_filename(kind, obj):
    return "%s-%s.yaml" % (kind, _meta(obj).get("name"))


def _sorted_events(events):
    def key(event):
        return (event.get("firstTimestamp") or event.get("eventTime") or _meta(event).get("creationTimestamp") or "",
                _meta(event).get("name") or "")
    return sorted(events, key=key)


def _workload_summary(kind, workload, history, hpas, events):
    spec = workload.get("spec") or {}
    status = workload.get("status") or {}
    meta = _meta(workload)
    template_spec = (spec.get("template") or {}).get("spec") or {}
    summary = {
        "kind": kind,
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "generation": meta.get("generation"),
        "observed_generation": status.get("observedGeneration"),
        "revision": (meta.get("annotations") or {}).get("deployment.kubernetes.io/revision"),
        "selector": selector_to_string(spec.get("selector")),
        "paused": bool(spec.get("paused")),
        "strategy": spec.get("strategy") or spec.get("updateStrategy"),
        "replicas": {
            "desired": spec.get("replicas"),
            "current": status.get("replicas", status.get("currentNumberScheduled")),
            "updated": status.get("updatedReplicas", status.get("updatedNumberScheduled")),
            "ready": status.get("readyReplicas", status.get("numberReady")),
            "available": status.get("availableReplicas", status.get("numberAvailable")),
            "unavailable": status.get("unavailableReplicas", status.get("numberUnavailable")),
        },
        "images": [c.get("image") for c in template_spec.get("containers") or []],
        "conditions": [dict((k, c.get(k)) for k in ("type", "status", "reason", "message"))
                       for c in status.get("conditions") or []],
    }
    return {
        "workload": summary,
        "revisions": [r.summary() for r in history],
        "horizontal_pod_autoscalers": [{
            "name": _meta(h).get("name"),
            "min_replicas": (h.get("spec") or {}).get("minReplicas"),
            "max_replicas": (h.get("spec") or {}).get("maxReplicas"),
            "current_replicas": (h.get("status") or {}).get("currentReplicas"),
            "desired_replicas": (h.get("status") or {}).get("desiredReplicas"),
        } for h in hpas],
        "events": [{
            "type": e.get("type"), "reason": e.get("reason"), "message": e.get("message"),
            "count": e.get("count"), "first": e.get("firstTimestamp"), "last": e.get("lastTimestamp"),
        } for e in events],
    }


def capture_k8s_workload(ctx, source, writer):
    kube = ctx.kube
    kind, ns, name = source["kind"], source["namespace"], source["resource_name"]
    workload = _kube_call(kube.get, kind, ns, name)
    spec = workload.get("spec") or {}
    ctx.learn_referenced_secrets(ns, secret_refs_of_pod_spec((spec.get("template") or {}).get("spec")))
    selector = selector_to_string(spec.get("selector"))
    owned_kind = "ReplicaSet" if kind == "Deployment" else "ControllerRevision"
    uid = _meta(workload).get("uid")
    owned = [item for item in _kube_call(lambda: list(kube.list(owned_kind, ns, label_selector=selector or None)))
             if any(ref.get("controller") and ref.get("uid") == uid for ref in _meta(item).get("ownerReferences") or [])]
    history = build_history(kind, workload, owned)
    hpas = []
    try:
        hpas = [h for h in kube.list("HorizontalPodAutoscaler", ns)
                if ((h.get("spec") or {}).get("scaleTargetRef") or {}).get("kind") == kind
                and ((h.get("spec") or {}).get("scaleTargetRef") or {}).get("name") == name]
    except K8sError as exc:
        ctx.note("HorizontalPodAutoscalers of %s %s/%s not captured: %s" % (kind, ns, name, exc.msg))
    by_uid = "involvedObject.uid=%s" % uid
    events = _sorted_events(_kube_call(lambda: list(kube.list("Event", ns, field_selector=by_uid))))
    writer.write_yaml(source, _object_filename(kind, workload), ctx.redact_object(
        dict(workload, apiVersion="apps/v1", kind=kind), kind), kind)
    for item in sorted(owned, key=lambda o: _meta(o).get("name")):
        writer.write_yaml(source, _object_filename(owned_kind, item),
                          ctx.redact_object(dict(item, apiVersion="apps/v1", kind=owned_kind), owned_kind), owned_kind)
    for hpa in hpas:
        writer.write_yaml(source, _object_filename("HorizontalPodAutoscaler", hpa), ctx.redact_object(
            dict(hpa, apiVersion="autoscaling/v2", kind="HorizontalPodAutoscaler")), "HorizontalPodAutoscaler")
    summary = _workload_summary(kind, workload, history, hpas, events)
    writer.write_yaml(source, "describe.yaml", ctx.redact_object(summary))
    with writer.open(source, "events.yaml") as sink:
        sink.write(to_yaml({"apiVersion": "v1", "kind": "List", "metadata": {},
                            "items": [ctx.redact_object(dict(e, apiVersion="v1", kind="Event")) for e in events]}))
    return {"objects": 1 + len(owned) + len(hpas), "events": len(events),
            "revisions": [r.number for r in history]}


def _list_pods(ctx, source):
    return ctx.kube.list("Pod", source["namespace"], label_selector=source.get("label_selector"),
                         field_selector=source.get("field_selector"))


def capture_k8s_pods(ctx, source, writer):
    ns = source["namespace"]
    refs = set()

    def redacted_pods():
        for pod in _list_pods(ctx, source):
            new_refs = secret_refs_of_pod_spec(pod.get("spec")) - refs
            if new_refs:
                refs.update(new_refs)
                ctx.learn_referenced_secrets(ns, new_refs)
            yield ctx.redact_object(pod, "Pod")

    try:
        count = writer.write_yaml_list(source, "pods.yaml", redacted_pods(), item_kind="Pod")
    except K8sError as exc:
        raise SourceError(exc.msg)
    return {"pods": count}


def _log_targets(pod, containers, previous):
    """(container, previous) pairs to fetch for a pod; previous only where a container restarted.

    A container asked for by name that the pod does not have is still a target: the API's
    refusal then records, pod by pod, that the expected container is missing.
    """
    spec = pod.get("spec") or {}
    statuses = dict((s.get("name"), s) for s in ((pod.get("status") or {}).get("containerStatuses") or []) +
                    ((pod.get("status") or {}).get("initContainerStatuses") or []))
    names = [c.get("name") for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])]
    if containers:
        names = [n for n in names if n in containers] + [n for n in containers if n not in names]
    targets = []
    for name in names:
        targets.append((name, False))
        if previous and (statuses.get(name) or {}).get("restartCount", 0) > 0:
            targets.append((name, True))
    return targets


# Log errors that mean the node's kubelet does not serve logs at all, whatever the pod.
_NODE_LEVEL_LOG_ERROR = re.compile(r"(?i)no preferred addresses|dial tcp|connection refused|i/o timeout|"
                                   r"no route to host|kubelet|x509")


def capture_k8s_logs(ctx, source, writer):
    ns = source["namespace"]
    tasks = []
    refs = set()
    try:
        for pod in _list_pods(ctx, source):
            refs.update(secret_refs_of_pod_spec(pod.get("spec")))
            pod_name = _meta(pod).get("name")
            node = (pod.get("spec") or {}).get("nodeName")
            for container, previous in _log_targets(pod, source.get("containers"), source.get("previous")):
                tasks.append((pod_name, container, previous, node))
    except K8sError as exc:
        raise SourceError(exc.msg)
    ctx.learn_referenced_secrets(ns, refs)
    if not tasks:
        raise SourceError("no pods (or no matching containers) in %s %s to read logs from"
                          % (ns, source.get("label_selector") or ""))
    dead_nodes = {}
    lock = threading.Lock()

    def fetch(task):
        pod_name, container, previous, node = task
        with lock:
            dead = dead_nodes.get(node)
        if dead:
            # A node whose kubelet cannot serve logs fails every pod the same way; with a dead node
            # each attempt would wait for its timeout, so the rest are recorded, not tried.
            raise K8sError(dead)
        try:
            response = ctx.kube.log_stream(ns, pod_name, container, source.get("tail_lines"), previous,
                                           source.get("limit_bytes"))
        except K8sError as exc:
            detail = getattr(exc, "detail", None) or ""
            if node and _NODE_LEVEL_LOG_ERROR.search(detail):
                # Same words for tried and skipped streams, so the record does not depend on timing.
                msg = "node %s does not serve logs: %s" % (node, detail)
                with lock:
                    dead_nodes.setdefault(node, msg)
                raise K8sError(msg)
            raise
        try:
            # One flat directory: "_" never occurs in pod names, and a directory per pod costs a mkdir each.
            filename = "%s_%s%s.log" % (pod_name, container, ".previous" if previous else "")
            with writer.open(source, filename) as sink:
                return write_redacted_lines(sink, iter_text_lines(response.stream(STREAM_CHUNK)),
                                            ctx.line_redactor())
        finally:
            response.release_conn()

    errors = []
    lines = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=ctx.max_workers) as pool:
        futures = dict((pool.submit(fetch, task), task) for task in tasks)
        for future in concurrent.futures.as_completed(futures):
            pod_name, container, previous, _node = futures[future]
            try:
                lines += future.result()
            except K8sError as exc:
                errors.append({"pod": pod_name, "container": container, "previous": previous,
                               "error": _redact.redact_text(exc.msg)})
            except Exception as exc:  # pylint: disable=broad-except  # a broken stream must not sink the others
                if is_storage_error(exc):
                    for other in futures:
                        other.cancel()
                    raise
                errors.append({"pod": pod_name, "container": container, "previous": previous,
                               "error": _redact.redact_text("%s: %s" % (type(exc).__name__, exc))})
    errors.sort(key=lambda e: (e["pod"], e["container"], e["previous"]))
    detail = {"streams": len(tasks), "failed_streams": len(errors), "lines": lines}
    if dead_nodes:
        detail["nodes_without_logs"] = sorted(dead_nodes)
    if errors:
        writer.write_yaml(source, "errors.yaml", {"failed_streams": errors})
        first = errors[0]
        message = "%d of %d log streams could not be read; first: pod %s container %s: %s" % (
            len(errors), len(tasks), first["pod"], first["container"], first["error"])
        if len(errors) == len(tasks):
            raise SourceError(message)
        detail["partial_error"] = message
    return detail


def capture_k8s_named(ctx, source, writer, kind):
    ns = source["namespace"]
    if source.get("resource_name"):
        objects = [_kube_call(ctx.kube.get, kind, ns, source["resource_name"])]
    else:
        objects = _kube_call(lambda: list(ctx.kube.list(kind, ns, label_selector=source["label_selector"])))
        if not objects:
            raise SourceError("no %s in %s matches -l %s" % (kind, ns, source["label_selector"]))
    if kind == "Secret":
        for obj in objects:
            ctx.learn_secret(obj)
    for obj in sorted(objects, key=lambda o: _meta(o).get("name")):
        writer.write_yaml(source, _object_filename(kind, obj),
                          ctx.redact_object(dict(obj, apiVersion="v1", kind=kind), kind), kind)
    return {"objects": len(objects), "keys": sorted(set(k for o in objects for f in ("data", "binaryData")
                                                        for k in (o.get(f) or {})))}


def capture_k8s_events(ctx, source, writer):
    events = ctx.kube.list("Event", source["namespace"], field_selector=source.get("field_selector"))
    items = (ctx.redact_object(e, "Event") for e in events)
    try:
        return {"events": writer.write_yaml_list(source, "events.yaml", items, item_kind="Event")}
    except K8sError as exc:
        raise SourceError(exc.msg)


# ---------------------------------------------------------------------------
# PostgreSQL sources
# ---------------------------------------------------------------------------

def pg_connect_factory(params):
    """A function opening a read-only, repeatable-read connection from the module's connection options."""
    def connect():
        try:
            return _pg.connect(params, "governed.rollback evidence_capture", readonly=True, repeatable_read=True)
        except _pg.PgError as exc:
            raise SourceError(exc.msg)
    return connect


def _pg_value(value):
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (bytes, memoryview)):
        return {"bytes": len(bytes(value))}
    return _redact.redact_text(str(value))


def _pg_query(ctx, query, args=None):
    try:
        with ctx.pg.cursor() as cur:
            cur.execute(query, args)
            columns = [d[0] for d in cur.description]
            return columns, cur.fetchall()
    except _pg.psycopg2.Error as exc:
        ctx.pg.rollback()
        raise SourceError("PostgreSQL query failed: %s" % str(exc).strip())


def _split_table(name):
    parts = name.split(".", 1)
    return (parts[0], parts[1]) if len(parts) == 2 else ("public", parts[0])


def _existing_tables(ctx):
    _cols, rows = _pg_query(ctx, "SELECT table_schema, table_name FROM information_schema.tables "
                                 "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN "
                                 "('pg_catalog', 'information_schema') ORDER BY 1, 2")
    return ["%s.%s" % row for row in rows]


def capture_pg_row_counts(ctx, source, writer):
    _cols, rows = _pg_query(ctx, "SELECT schemaname, relname, n_live_tup, n_dead_tup, n_tup_ins, n_tup_upd, "
                                 "n_tup_del FROM pg_stat_user_tables ORDER BY schemaname, relname")
    tables = [{"schema": r[0], "table": r[1], "n_live_tup": r[2], "n_dead_tup": r[3], "n_tup_ins": r[4],
               "n_tup_upd": r[5], "n_tup_del": r[6]} for r in rows]
    writer.write_yaml(source, "pg_stat_user_tables.yaml", {
        "note": "statistics counters (estimates, updated asynchronously); pg_table_counts gives exact counts",
        "tables": tables})
    return {"tables": len(tables)}


def capture_pg_table_counts(ctx, source, writer):
    existing = set(_existing_tables(ctx))
    counts = {}
    missing = []
    for name in source["tables"]:
        schema, table = _split_table(name)
        if "%s.%s" % (schema, table) not in existing:
            missing.append(name)
            continue
        _cols, rows = _pg_query(ctx, _pg.sql.SQL("SELECT count(*) FROM {}.{}").format(
            _pg.sql.Identifier(schema), _pg.sql.Identifier(table)))
        counts["%s.%s" % (schema, table)] = rows[0][0]
    writer.write_yaml(source, "table_counts.yaml", {"exact_counts": counts, "missing": missing})
    if missing:
        raise SourceError("table(s) %s not found; existing tables: %s" % (
            ", ".join(missing), ", ".join(sorted(existing)[:30]) or "(none)"))
    return {"tables": len(counts)}


def capture_pg_migrations(ctx, source, writer):
    existing = _existing_tables(ctx)
    table = source.get("table")
    if table:
        schema, name = _split_table(table)
        if "%s.%s" % (schema, name) not in existing:
            raise SourceError("migration table %s not found; existing tables: %s"
                              % (table, ", ".join(existing[:30]) or "(none)"))
    else:
        found = [t for t in existing if t.split(".", 1)[1] in _pg.MIGRATION_TABLES]
        if not found:
            raise SourceError("no migration bookkeeping table found (looked for %s); set table: explicitly"
                              % ", ".join(_pg.MIGRATION_TABLES))
        schema, name = found[0].split(".", 1)
    columns, _rows = _pg_query(ctx, _pg.sql.SQL("SELECT * FROM {}.{} LIMIT 0").format(
        _pg.sql.Identifier(schema), _pg.sql.Identifier(name)))
    # Order by every column, newest first on the first one: a total, repeatable order.
    order = _pg.sql.SQL(", ").join(
        [_pg.sql.SQL("{} DESC").format(_pg.sql.Identifier(columns[0]))] +
        [_pg.sql.Identifier(c) for c in columns[1:]])
    columns, rows = _pg_query(ctx, _pg.sql.SQL("SELECT * FROM {}.{} ORDER BY {} LIMIT %s").format(
        _pg.sql.Identifier(schema), _pg.sql.Identifier(name), order), (int(source.get("limit") or 1000),))
    writer.write_yaml(source, "%s.yaml" % name, {
        "table": "%s.%s" % (schema, name),
        "columns": columns,
        "rows": [dict(zip(columns, [_pg_value(v) for v in row])) for row in rows],
    })
    return {"table": "%s.%s" % (schema, name), "rows": len(rows)}


def capture_pg_schema(ctx, source, writer):
    try:
        pg_dump = _pg.client_program("pg_dump")
    except _pg.PgError as exc:
        raise SourceError(exc.msg)
    argv = [pg_dump, "--schema-only", "--no-password"]
    for schema in source.get("schemas") or []:
        argv += ["--schema", schema]
    if _pg.client_supports(pg_dump, "--restrict-key"):
        # pg_dump >= 15.14 writes a random \restrict key per run; a key fixed per rollback keeps
        # before/after dumps comparable and archives reproducible.
        argv.append("--restrict-key=%s" % hashlib.sha256(
            ("governed.rollback:" + ctx.params.get("rollback_id", "")).encode("utf-8")).hexdigest()[:32])
    detail = _run_streamed(ctx, source, writer, argv, "schema.sql", env=_pg.client_env(ctx.params), timeout=600,
                           stderr_name=None)
    if detail["rc"] != 0:
        writer.discard(source)
        raise SourceError("pg_dump -s failed (exit %s): %s" % (detail["rc"], detail.get("stderr_tail") or ""))
    return {"lines": detail["lines"]}


# ---------------------------------------------------------------------------
# Files, git, HTTP, commands
# ---------------------------------------------------------------------------

def _stream_file_lines(path):
    with open(path, "rb") as handle:
        yield from iter_text_lines(iter(lambda: handle.read(STREAM_CHUNK), b""))


def capture_file(ctx, source, writer):
    path = os.path.expanduser(source["path"])
    if not os.path.isfile(path):
        raise SourceError("file %s not found (or not a regular file)" % path)
    try:
        with writer.open(source, os.path.basename(path)) as sink:
            lines = write_redacted_lines(sink, _stream_file_lines(path), ctx.line_redactor())
    except OSError as exc:
        raise SourceError("cannot read %s: %s" % (path, exc.strerror or exc))
    return {"lines": lines}


def _data_filename(source):
    return source.get("filename") or "%s.json" % source["name"]


def capture_data(ctx, source, writer):
    """Data the playbook already holds (a plan, a summary) written as indented JSON with sorted keys, line by line
    through the same redaction as a file: no temporary file for the playbook to write, protect and remove."""
    filename = _data_filename(source)
    if os.path.basename(filename) != filename or filename in (".", ".."):
        raise SourceError("filename %r of data source %s must be a plain file name, without a directory"
                          % (filename, source["name"]))
    text = json.dumps(source["value"], indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    with writer.open(source, filename) as sink:
        lines = write_redacted_lines(sink, iter(text.splitlines(True)), ctx.line_redactor())
    return {"lines": lines}


def _git(repo, *args):
    try:
        return _proc.run(["git", "-C", repo] + list(args), timeout=60)
    except _proc.ProcError as exc:
        raise SourceError(exc.msg)


def capture_git_file(ctx, source, writer):
    repo, path, ref = os.path.expanduser(source["repo"]), source["path"], source.get("ref") or "HEAD"
    if not shutil.which("git"):
        raise SourceError("git not found on PATH")
    resolved = _git(repo, "rev-parse", "--verify", "--quiet", "%s^{commit}" % ref)
    if resolved.rc != 0:
        raise SourceError("ref %s not found in git repository %s%s" % (
            ref, repo, (": " + resolved.stderr.strip()) if resolved.stderr.strip() else ""))
    commit = resolved.value.strip()
    argv = ["git", "-C", repo, "show", "%s:%s" % (commit, path.lstrip("/"))]
    detail = _run_streamed(ctx, source, writer, argv, os.path.basename(path), timeout=60, stderr_name=None)
    if detail["rc"] != 0:
        writer.discard(source)
        raise SourceError("%s not found at %s (%s) in %s: %s"
                          % (path, ref, commit[:12], repo, detail.get("stderr_tail") or ""))
    return {"commit": commit, "ref": ref, "lines": detail["lines"]}


def _run_streamed(ctx, source, writer, argv, filename, env=None, timeout=60, chdir=None, stderr_name="stderr.txt"):
    """Run argv (no shell), stream redacted stdout into a file; redacted stderr kept as a file and its tail."""
    def consume(chunks):
        with writer.open(source, filename) as sink:
            return write_redacted_lines(sink, iter_text_lines(chunks), ctx.line_redactor())

    try:
        done = _proc.stream(argv, consume, env=env, chdir=chdir, timeout=timeout, known_values=ctx.known_values())
    except _proc.ProcError as exc:
        raise SourceError(exc.msg)
    detail = {"rc": done.rc, "lines": done.value}
    if done.stderr.strip() and stderr_name:
        writer.write_text(source, stderr_name, done.stderr)
    if done.stderr.strip() or done.timed_out:
        detail["stderr_tail"] = done.stderr_tail
    return detail


def capture_command(ctx, source, writer):
    import shlex

    argv = [str(a) for a in source.get("argv") or shlex.split(source["cmd"])]
    if not argv:
        raise SourceError("empty command")
    detail = _run_streamed(ctx, source, writer, argv, "stdout.txt", timeout=int(source.get("timeout") or 60),
                           chdir=source.get("chdir"))
    writer.write_yaml(source, "result.yaml", {"argv": [_redact.redact_text(a, ctx.known_values()) for a in argv],
                                              "rc": detail["rc"]})
    if detail["rc"] != 0:
        raise SourceError("command exited %s: %s" % (detail["rc"], detail.get("stderr_tail") or "(no stderr)"))
    return {"rc": detail["rc"], "lines": detail["lines"]}


def capture_http(ctx, source, writer):
    from ansible.module_utils.urls import open_url  # only HTTP sources pay for importing it

    url = source["url"]
    limit = int(source.get("body_bytes") or 4096)
    try:
        response = open_url(url, method=source.get("method") or "GET", headers=source.get("headers") or {},
                            timeout=int(source.get("timeout") or 10), validate_certs=source.get("validate_certs", True),
                            follow_redirects="safe")
    except Exception as exc:  # pylint: disable=broad-except  # urllib raises many unrelated types
        # An HTTPError is still a response: its status is evidence, not a failure to capture.
        if hasattr(exc, "code") and hasattr(exc, "read"):
            response = exc
        else:
            reason = getattr(exc, "reason", None) or exc
            raise SourceError("%s %s failed: %s"
                              % (source.get("method"), _redact.mask_url_credentials(url),
                                 _redact.redact_text(str(reason))))
    try:
        body = response.read(limit + 1) or b""
        status = getattr(response, "status", None) or getattr(response, "code", None)
        headers = sorted(_redact.mask_headers(list(response.headers.items())))
    finally:
        response.close()
    text = body[:limit].decode("utf-8", "replace")
    writer.write_yaml(source, "response.yaml", {
        "url": _redact.mask_url_credentials(url),
        "method": source.get("method"),
        "status": status,
        "headers": [{"name": n, "value": v} for n, v in headers],
        "body_excerpt": _redact.redact_text(text, ctx.known_values()),
        "body_truncated": len(body) > limit,
    })
    return {"status": status}


CAPTURE_FUNCTIONS = {
    "k8s_workload": capture_k8s_workload,
    "k8s_pods": capture_k8s_pods,
    "k8s_logs": capture_k8s_logs,
    "k8s_configmap": lambda ctx, source, writer: capture_k8s_named(ctx, source, writer, "ConfigMap"),
    "k8s_secret": lambda ctx, source, writer: capture_k8s_named(ctx, source, writer, "Secret"),
    "k8s_events": capture_k8s_events,
    "pg_schema": capture_pg_schema,
    "pg_row_counts": capture_pg_row_counts,
    "pg_table_counts": capture_pg_table_counts,
    "pg_migrations": capture_pg_migrations,
    "file": capture_file,
    "data": capture_data,
    "git_file": capture_git_file,
    "http": capture_http,
    "command": capture_command,
}


# ---------------------------------------------------------------------------
# Phase capture
# ---------------------------------------------------------------------------

def phase_manifest_path(pack_dir, phase):
    return os.path.join(pack_dir, phase, MANIFEST_NAME)


def _source_entry(source):
    return {"name": source["name"], "type": source["type"], "required": source["required"],
            "captures": describe_source(source)}


def scan_files(scanner, pack_dir, relpaths):
    findings = []
    for rel in relpaths:
        findings.extend(scanner.scan_file(os.path.join(pack_dir, *rel.split("/")), rel))
    return sorted(set(findings))


def _redaction_block(ctx, findings, scanned):
    return {
        "status": "failed" if findings else "passed",
        "rules_version": _redact.RULES_VERSION,
        "engines": ctx.scanner.engines,
        "scanned_files": scanned,
        "findings": [dict(f._asdict()) for f in findings],
        "known_values": ctx.scanner.known_value_count,
        "allowlisted": ctx.scanner.allowlisted,
        "structural": ctx.stats.as_dict(),
        "notes": list(ctx.notes),
    }


def capture_phase(ctx, evidence_dir, rollback_id, phase, sources, overwrite=False):
    """Capture every source of one phase and write its manifest. Returns the manifest dict.

    The manifest is written first with ``incomplete: true`` and rewritten at the end,
    so a capture killed half-way never looks like a complete pack.
    """
    pack_dir = os.path.join(evidence_dir, rollback_id)
    phase_dir = os.path.join(pack_dir, phase)
    manifest_path = phase_manifest_path(pack_dir, phase)
    if os.path.exists(phase_dir):
        if not overwrite:
            previous = ""
            if os.path.exists(manifest_path):
                try:
                    previous = " (captured %s)" % load_json(manifest_path).get("finished_at")
                except (OSError, ValueError):
                    previous = ""
            raise EvidenceError("evidence for %s phase %s already exists at %s%s; use a new rollback_id, or "
                                "overwrite: true to replace it" % (rollback_id, phase, phase_dir, previous))
        shutil.rmtree(phase_dir)
    os.makedirs(phase_dir)
    writer = PhaseWriter(pack_dir, rollback_id, phase)
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "rollback_id": rollback_id,
        "phase": phase,
        "status": "in_progress",
        "incomplete": True,
        "started_at": utc_stamp(),
        "finished_at": None,
        "files": [],
        "sources": [_source_entry(s) for s in sources],
        "failed_sources": [],
        "redaction": {"status": "not_scanned", "rules_version": _redact.RULES_VERSION},
    }
    write_json_atomic(manifest_path, manifest)
    entries = []
    aborted = None
    for source in sources:
        entry = _source_entry(source)
        started = datetime.datetime.now(datetime.timezone.utc)
        if aborted:
            entry.update(status="failed", error="not captured: the capture stopped at an earlier source (%s)"
                         % aborted)
            entries.append(entry)
            continue
        try:
            detail = CAPTURE_FUNCTIONS[source["type"]](ctx, source, writer) or {}
            entry["status"] = "partial" if detail.get("partial_error") else "ok"
            if detail.get("partial_error"):
                entry["error"] = detail.pop("partial_error")
            entry["detail"] = detail
        except SourceError as exc:
            entry["status"] = "failed"
            entry["error"] = _redact.redact_text(str(exc), ctx.known_values())
        except Exception as exc:  # pylint: disable=broad-except  # one broken source must not lose the others
            entry["status"] = "failed"
            entry["error"] = _redact.redact_text("%s: %s" % (type(exc).__name__, exc), ctx.known_values())
            if is_storage_error(exc):
                # A full or read-only evidence store fails every later source too: stop here, loudly.
                aborted = "%s: %s" % (source["name"], exc.strerror or exc)
        entry["duration_s"] = round((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(), 3)
        entries.append(entry)
    files = sorted(writer.files, key=lambda r: r["path"])
    failed = [dict((k, e.get(k)) for k in ("name", "type", "required", "status", "error"))
              for e in entries if e["status"] != "ok"]
    required_failed = [e["name"] for e in failed if e["required"]]
    findings = scan_files(ctx.scanner, pack_dir, [f["path"] for f in files])
    incomplete = bool(required_failed or aborted)
    manifest.update({
        "status": "aborted" if aborted else ("incomplete" if required_failed else "complete"),
        "incomplete": incomplete,
        "required_failed": required_failed,
        "finished_at": utc_stamp(),
        "files": files,
        "sources": entries,
        "failed_sources": failed,
        "redaction": _redaction_block(ctx, findings, len(files)),
    })
    if aborted:
        manifest["aborted"] = aborted
        try:
            write_json_atomic(manifest_path, manifest)
            where = "the manifest says status: aborted"
        except OSError:
            where = "the manifest written at the start still says in_progress"
        raise EvidenceError("the evidence store failed while capturing the %s phase of %s (%s); the phase is "
                            "incomplete and %s (%s). Free space or fix the store, then capture again with "
                            "overwrite: true" % (phase, rollback_id, aborted, where, manifest_path))
    write_json_atomic(manifest_path, manifest)
    return manifest


STORAGE_ERRNOS = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EROFS))


def is_storage_error(exc):
    """An OSError that says the evidence store itself cannot take more (full, over quota, read-only)."""
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


# ---------------------------------------------------------------------------
# Finalize: diffs, scan, index, archive
# ---------------------------------------------------------------------------

def _read_lines(path):
    with open(path, "r", encoding="utf-8", errors="replace", newline="") as handle:
        return handle.readlines()


def write_diffs(pack_dir, from_phase, to_phase, from_manifest, to_manifest):
    """Unified diffs of every diffable file, plus changed keys/fields of Kubernetes objects."""
    diff_dir = os.path.join(pack_dir, DIFF_DIR)
    if os.path.exists(diff_dir):
        shutil.rmtree(diff_dir)
    os.makedirs(diff_dir)
    records = []
    entries = []
    unchanged = 0
    common = set(s["name"] for s in from_manifest.get("sources", [])) & \
        set(s["name"] for s in to_manifest.get("sources", []))
    for rel, status, before, after in compare_phase_files(from_manifest.get("files", []),
                                                          to_manifest.get("files", []), common):
        if status == "unchanged":
            unchanged += 1
            continue
        left = _read_lines(os.path.join(pack_dir, *before["path"].split("/"))) if before else []
        right = _read_lines(os.path.join(pack_dir, *after["path"].split("/"))) if after else []
        relpath = "%s/%s.diff" % (DIFF_DIR, rel)
        path = os.path.join(pack_dir, *relpath.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        sink = _Sink(path)
        for line in unified_diff_lines(left, right, "%s/%s" % (from_phase, rel) if before else "/dev/null",
                                       "%s/%s" % (to_phase, rel) if after else "/dev/null"):
            sink.write(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
        digest = sink.close()
        entry = {"path": rel, "status": status, "diff": relpath}
        kind = (before or after).get("kind")
        if kind and before and after:
            try:
                left_doc, right_doc = from_yaml("".join(left)), from_yaml("".join(right))
                if kind in ("ConfigMap", "Secret"):
                    entry["changed_keys"] = changed_keys(left_doc, right_doc)
                fields = changed_fields(left_doc, right_doc)
                entry["changed_fields"] = fields[:MAX_CHANGED_FIELDS]
                if len(fields) > MAX_CHANGED_FIELDS:
                    entry["changed_fields_truncated"] = len(fields)
            except yaml.YAMLError:
                pass
        entries.append(entry)
        records.append({"path": relpath, "sha256": digest, "size": sink.size, "source": rel.split("/", 1)[0],
                        "type": "diff"})
    summary = {"from": from_phase, "to": to_phase, "changed": entries, "unchanged": unchanged}
    summary_rel = "%s/%s" % (DIFF_DIR, DIFF_SUMMARY)
    summary_path = os.path.join(pack_dir, DIFF_DIR, DIFF_SUMMARY)
    with open(summary_path, "w", encoding="utf-8") as handle:
        handle.write(pretty_json(summary))
    records.append({"path": summary_rel, "sha256": sha256_file(summary_path), "size": os.path.getsize(summary_path),
                    "source": DIFF_DIR, "type": "diff"})
    return summary, sorted(records, key=lambda r: r["path"])


class _HashingFile(object):
    def __init__(self, handle):
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data):
        self.handle.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    def flush(self):
        self.handle.flush()


def write_archive(pack_dir, rollback_id, members, archive_path):
    """Write a deterministic tar.gz of ``members`` (records with path and sha256) under ``<rollback_id>/``.

    Entries are sorted, owned by 0:0 with empty names, mode 0644, one fixed mtime; the gzip
    header has mtime 0 and no file name. Each file is re-hashed while it is archived and must
    still match its record. Returns (sha256, size).
    """
    tmp = "%s.tmp-%d" % (archive_path, os.getpid())
    try:
        with open(tmp, "wb") as raw:
            hashing = _HashingFile(raw)
            with gzip.GzipFile(filename="", mode="wb", fileobj=hashing, compresslevel=6, mtime=0) as gz:
                with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    for record in sorted(members, key=lambda r: r["path"]):
                        path = os.path.join(pack_dir, *record["path"].split("/"))
                        info = tarfile.TarInfo("%s/%s" % (rollback_id, record["path"]))
                        info.size = os.path.getsize(path)
                        info.mtime = ARCHIVE_MTIME
                        info.mode = 0o644
                        info.uid = info.gid = 0
                        info.uname = info.gname = ""
                        with open(path, "rb") as handle:
                            check = _CheckedReader(handle, record)
                            tar.addfile(info, check)
                            check.verify()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, archive_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return hashing.digest.hexdigest(), hashing.size


class _CheckedReader(object):
    """Reads a file for the archive while re-hashing it against its manifest record."""

    def __init__(self, handle, record):
        self.handle = handle
        self.record = record
        self.digest = hashlib.sha256()

    def read(self, size=-1):
        data = self.handle.read(size)
        self.digest.update(data)
        return data

    def verify(self):
        if self.record.get("sha256") and self.digest.hexdigest() != self.record["sha256"]:
            raise EvidenceError("%s changed after it was captured (sha256 no longer matches the manifest); the "
                                "pack was not archived" % self.record["path"])


def finalize_pack(ctx, evidence_dir, rollback_id):
    """Diff, scan everything, and archive the pack unless the scan finds anything.

    Returns a dict with archive_path/archive_sha256 (None when refused), diff summary and
    files, the redaction block and the pack manifest path.
    """
    pack_dir = os.path.join(evidence_dir, rollback_id)
    manifests = {}
    for phase in PHASES:
        path = phase_manifest_path(pack_dir, phase)
        if os.path.exists(path):
            manifests[phase] = load_json(path)
    if not manifests:
        raise EvidenceError("nothing to finalize for %s: no phase has been captured under %s"
                            % (rollback_id, pack_dir))
    for phase, manifest in manifests.items():
        if manifest.get("status") == "in_progress":
            raise EvidenceError("the %s capture of %s never finished (its manifest says in_progress); capture it "
                                "again with overwrite: true before finalizing" % (phase, rollback_id))
    diff_summary, diff_records = None, []
    to_phase = "after" if "after" in manifests else ("failure" if "failure" in manifests else None)
    if "before" in manifests and to_phase:
        diff_summary, diff_records = write_diffs(pack_dir, "before", to_phase, manifests["before"],
                                                 manifests[to_phase])
    elif os.path.exists(os.path.join(pack_dir, DIFF_DIR)):
        shutil.rmtree(os.path.join(pack_dir, DIFF_DIR))
    data_records = [f for phase in sorted(manifests) for f in manifests[phase].get("files", [])]
    scan_targets = [r["path"] for r in data_records + diff_records] + \
        ["%s/%s" % (phase, MANIFEST_NAME) for phase in sorted(manifests)]
    findings = scan_files(ctx.scanner, pack_dir, scan_targets)
    redaction = _redaction_block(ctx, findings, len(scan_targets))
    archive_path = os.path.join(evidence_dir, "%s.tar.gz" % rollback_id)
    pack_manifest_path = os.path.join(pack_dir, MANIFEST_NAME)
    pack = {
        "schema": PACK_SCHEMA,
        "rollback_id": rollback_id,
        "finalized_at": utc_stamp(),
        "phases": dict((phase, {
            "manifest": "%s/%s" % (phase, MANIFEST_NAME),
            "manifest_sha256": sha256_file(phase_manifest_path(pack_dir, phase)),
            "started_at": m.get("started_at"),
            "finished_at": m.get("finished_at"),
            "incomplete": m.get("incomplete", True),
            "failed_sources": [s.get("name") for s in m.get("failed_sources", [])],
        }) for phase, m in sorted(manifests.items())),
        "diff": diff_summary,
        "redaction": redaction,
        "incomplete": any(m.get("incomplete", True) for m in manifests.values()),
        "archive": None,
    }
    result = {"pack_dir": pack_dir, "diff_summary": diff_summary, "diff_files": [r["path"] for r in diff_records],
              "redaction": redaction, "archive_path": None, "archive_sha256": None, "changed": True,
              "pack_manifest_path": pack_manifest_path, "incomplete": pack["incomplete"]}
    if findings:
        # Fail closed: no archive may leave with a possible secret, not even an old one.
        if os.path.exists(archive_path):
            os.unlink(archive_path)
        write_json_atomic(pack_manifest_path, pack)
        result["pack_manifest_sha256"] = sha256_file(pack_manifest_path)
        return result
    index = build_index(rollback_id, manifests, diff_summary, {
        "status": redaction["status"], "rules_version": redaction["rules_version"], "engines": redaction["engines"],
        "findings": 0})
    index_path = os.path.join(pack_dir, INDEX_NAME)
    with open(index_path, "w", encoding="utf-8") as handle:
        handle.write(pretty_json(index))
    index_record = {"path": INDEX_NAME, "sha256": sha256_file(index_path)}
    members = [index_record] + data_records + diff_records
    previous = sha256_file(archive_path) if os.path.exists(archive_path) else None
    digest, size = write_archive(pack_dir, rollback_id, members, archive_path)
    pack["archive"] = {"path": os.path.basename(archive_path), "sha256": digest, "size": size,
                       "index_sha256": index_record["sha256"], "members": len(members)}
    write_json_atomic(pack_manifest_path, pack)
    result.update({"archive_path": archive_path, "archive_sha256": digest, "archive_size": size,
                   "index_sha256": index_record["sha256"], "changed": previous != digest,
                   "pack_manifest_sha256": sha256_file(pack_manifest_path)})
    return result


def manifest_summary(manifest, manifest_path):
    """The short form of a phase manifest that goes into module output."""
    return {
        "path": manifest_path,
        "sha256": sha256_file(manifest_path),
        "status": manifest.get("status"),
        "incomplete": manifest.get("incomplete"),
        "files": [dict((k, f[k]) for k in ("path", "sha256", "size", "source")) for f in manifest.get("files", [])],
        "failed_sources": manifest.get("failed_sources", []),
        "redaction": dict((k, (manifest.get("redaction") or {}).get(k))
                          for k in ("status", "rules_version", "findings", "notes")),
    }
