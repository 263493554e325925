#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: evidence_capture
short_description: Capture a redacted, reproducible evidence pack before and after a rollback
version_added: 0.1.0
author: governed.rollback maintainers (@governed)
description:
  - Automates the runbooks' evidence capture (C(kubectl describe), C(kubectl get pods -o yaml), C(kubectl logs),
    config before and after with a diff, C(pg_dump -s), row counts, a manifest and a tar.gz) for one phase of a
    rollback, into C(<evidence_dir>/<rollback_id>/<phase>/).
  - Every file is redacted before it touches disk. Secret C(data)/C(stringData) are replaced by their byte count (C(redacted=true), C(bytes=N));
    C(managedFields) and the C(kubectl.kubernetes.io/last-applied-configuration) annotation are dropped; env values
    and mapping values whose names look secret, URL credentials, C(Authorization)/C(Cookie) headers, bearer tokens
    and private key blocks are masked; the exact values of Secrets read during the run (captured or referenced by
    the captured pods) are masked too.
  - Then every written file is scanned (ported gitleaks-style rules, the specific detect-secrets plugins, and the
    exact values of Secrets read). The phase manifest records the result; with O(finalize=true) any finding fails
    the task, the pack manifest says C(redaction.status=failed) and no archive is written.
  - C(manifest.json) of the phase lists every file with sha256, size, source and capture time, and every source that
    failed with its error. A failed source is recorded and the task goes on, unless the source is C(required).
    The manifest is written with C(incomplete=true) before the first source and rewritten at the end, so a capture
    that dies half-way never looks complete. A store that fills up (or turns read-only) during the capture stops it
    at once, fails the task and leaves the phase marked incomplete.
  - With O(finalize=true) the module writes C(diff/) (redacted unified diffs of every Kubernetes object and config
    between the C(before) phase and the C(after) phase, or the C(failure) phase when there is no C(after), and
    C(diff/summary.json) with the changed keys of ConfigMaps and Secrets), then a deterministic
    C(<evidence_dir>/<rollback_id>.tar.gz) (sorted entries, fixed mtime and owner, gzip mtime 0) holding the data
    files, the diffs and a time-free C(index.json). The same content gives the same digest; capture times stay in
    the phase manifests beside the archive, whose digests the pack manifest C(<rollback_id>/manifest.json) records.
  - Pod logs are fetched by a bounded pool of threads and streamed line by line into their files; pods are listed
    page by page. Memory does not grow with the number of pods.
options:
  rollback_id:
    description:
      - Identifier of the rollback, used as the directory and archive name, for example C(rollback-20240115-103045).
      - Letters, digits, C(.), C(_) and C(-) only.
    type: str
    required: true
  phase:
    description:
      - Which phase this capture is. The C(failure) phase is what a role's C(rescue) captures.
    type: str
    choices: [before, after, failure]
    required: true
  evidence_dir:
    description:
      - Directory under which packs are written. Falls back to E(GOVERNED_ROLLBACK_EVIDENCE_DIR); the sandbox
        inventory sets it for the roles.
    type: path
  sources:
    description:
      - What to capture, in order. Every source needs O(sources[].type) and a unique O(sources[].name) (its
        directory inside the phase).
      - Options that do not apply to a source's type are refused with the list of those that do.
    type: list
    elements: dict
    default: []
    suboptions:
      type:
        description:
          - C(k8s_workload) - a Deployment, StatefulSet or DaemonSet with its owned ReplicaSets or
            ControllerRevisions, its HorizontalPodAutoscalers and events, as YAML, plus C(describe.yaml) (the
            C(kubectl describe) summary with the revision history). Needs O(sources[].namespace) and
            O(sources[].resource_name).
          - C(k8s_pods) - pods (by O(sources[].label_selector) / O(sources[].field_selector)) as one YAML List.
          - C(k8s_logs) - logs of those pods, every container (init containers too), the last
            O(sources[].tail_lines) lines, and the previous container's logs where a container restarted.
          - C(k8s_configmap) / C(k8s_secret) - by O(sources[].resource_name) or O(sources[].label_selector);
            Secret values are never written.
          - C(k8s_events) - events of a namespace.
          - C(pg_schema) - C(pg_dump -s) (optionally O(sources[].schemas)).
          - C(pg_row_counts) - the counters of C(pg_stat_user_tables), as the runbook does.
          - C(pg_table_counts) - exact C(count(*)) of O(sources[].tables), in one snapshot.
          - C(pg_migrations) - the migration bookkeeping table (O(sources[].table), or the first of
            C(schema_migrations), C(alembic_version), C(flyway_schema_history), C(django_migrations),
            C(knex_migrations), C(goose_db_version) found).
          - C(file) - a local file (O(sources[].path)).
          - C(data) - data the playbook holds (O(sources[].value), for example a registered plan), written as
            indented JSON with sorted keys to O(sources[].filename) and redacted like a file.
          - C(git_file) - a file (O(sources[].path)) at a git ref (O(sources[].ref)) of a repository
            (O(sources[].repo)); the resolved commit is recorded.
          - C(http) - status, headers (credentials masked) and a body excerpt of O(sources[].url).
          - C(command) - output and exit code of a command (O(sources[].argv) or O(sources[].cmd), no shell).
        type: str
        required: true
        choices: [k8s_workload, k8s_pods, k8s_logs, k8s_configmap, k8s_secret, k8s_events, pg_schema, pg_row_counts,
                  pg_table_counts, pg_migrations, file, data, git_file, http, command]
      name:
        description: Unique name of the source; names its directory. Letters, digits, C(.), C(_), C(-).
        type: str
        required: true
      required:
        description:
          - When true a failure of this source fails the task and marks the phase incomplete. Otherwise the failure
            is recorded in the manifest and the capture goes on.
        type: bool
        default: false
      diff:
        description:
          - Whether finalize diffs this source's files. Defaults to true for objects and config
            (C(k8s_workload), C(k8s_configmap), C(k8s_secret), C(pg_*), C(file), C(data), C(git_file), C(http),
            C(command)) and false for pods, logs and events.
        type: bool
      namespace:
        description: Namespace (C(k8s_*) sources).
        type: str
      kind:
        description: Workload kind for C(k8s_workload). Defaults to C(Deployment).
        type: str
        choices: [Deployment, StatefulSet, DaemonSet]
      resource_name:
        description: Name of the object (C(k8s_workload), C(k8s_configmap), C(k8s_secret)).
        type: str
      label_selector:
        description: Label selector, as for C(kubectl -l) (C(k8s_pods), C(k8s_logs), C(k8s_configmap), C(k8s_secret)).
        type: str
      field_selector:
        description: Field selector (C(k8s_pods), C(k8s_logs), C(k8s_events)).
        type: str
      containers:
        description: Only these containers (C(k8s_logs)); all containers when omitted.
        type: list
        elements: str
      tail_lines:
        description: Lines of log per container (C(k8s_logs)). Defaults to 1000, the runbook's C(--tail=1000).
        type: int
      previous:
        description:
          - Also capture the previous container's logs where a container restarted (C(k8s_logs)). Defaults to true.
        type: bool
      limit_bytes:
        description: At most this many bytes of log per container (C(k8s_logs)).
        type: int
      schemas:
        description: Dump only these schemas (C(pg_schema)).
        type: list
        elements: str
      tables:
        description: Tables to count exactly, as C(table) or C(schema.table) (C(pg_table_counts)).
        type: list
        elements: str
      table:
        description: Migration table, as C(table) or C(schema.table) (C(pg_migrations)).
        type: str
      limit:
        description: At most this many rows of the migration table, newest first (C(pg_migrations)). Defaults to 1000.
        type: int
      path:
        description: File path (C(file)), or path inside the repository (C(git_file)).
        type: str
      value:
        description: The data to write (C(data)), any JSON-serializable value.
        type: raw
      filename:
        description: File name inside the source's directory (C(data)). Defaults to C(<name>.json).
        type: str
      repo:
        description: Path of the git repository (C(git_file)).
        type: path
      ref:
        description: Git ref, branch, tag or commit (C(git_file)). Defaults to C(HEAD).
        type: str
      url:
        description: URL (C(http)). Credentials in it are masked everywhere they are recorded.
        type: str
      method:
        description: HTTP method (C(http)). Defaults to C(GET).
        type: str
      headers:
        description: Request headers (C(http)). Never logged or recorded.
        type: dict
      timeout:
        description: Seconds before giving up (C(http) defaults to 10, C(command) to 60).
        type: int
      validate_certs:
        description: Verify TLS certificates (C(http)). Defaults to true.
        type: bool
      body_bytes:
        description: Bytes of the response body kept as the excerpt (C(http)). Defaults to 4096.
        type: int
      argv:
        description: Command and arguments, run without a shell (C(command)).
        type: list
        elements: str
      cmd:
        description: Command line split like a shell would, but run without a shell (C(command)).
        type: str
      chdir:
        description: Working directory of the command (C(command)).
        type: path
  finalize:
    description:
      - After capturing (if O(sources) is not empty), write the diffs, scan the whole pack and write the
        deterministic archive. A scan finding fails the task and no archive is written.
      - Finalizing again over the same content gives the same archive digest and reports no change.
      - With O(s3_bucket), the sealed archive and the pack manifest are then uploaded to
        C(<s3_prefix>rollbacks/<rollback_id>/) with a SHA256 checksum (read back and compared after the write) and,
        where the bucket has Object Lock, retention (O(s3_object_lock_mode), O(s3_object_lock_days)); an object that
        already holds the same bytes is kept (no change). A failed upload fails the task.
    type: bool
    default: false
  preflight:
    description:
      - Only check that O(evidence_dir) is writable (or can be created) and has O(min_free_mb) free, writing
        nothing. Run it before any rollback action so a full or read-only evidence store stops the rollback early.
    type: bool
    default: false
  min_free_mb:
    description: Free space (MiB) the evidence file system must have, checked before every capture.
    type: int
    default: 64
  overwrite:
    description:
      - Replace the phase if it was already captured for this O(rollback_id). Without it a second capture of the
        same phase is refused, so the evidence of a C(before) phase is never replaced by a later state.
    type: bool
    default: false
  max_workers:
    description: Concurrent log streams (C(k8s_logs)).
    type: int
    default: 8
  scan_referenced_secrets:
    description:
      - Read the Secrets that captured pods and workloads reference (env, envFrom, volumes, image pull secrets) to
        mask and scan for their exact values. Their values are held in memory only. Needs C(get) on those Secrets;
        when refused, a note is recorded and the structural and pattern rules still apply.
    type: bool
    default: true
  scan_allowlist:
    description:
      - Regular expressions; a scan finding on a line matching one is ignored (and counted in the manifest). For
        proven false positives only.
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - governed.rollback.k8s_auth
  - governed.rollback.postgres
  - governed.rollback.s3
  - governed.rollback.attributes
  - governed.rollback.attributes.ACTIONGROUP_K8S_POSTGRES
attributes:
  check_mode:
    support: full
    details: Returns the plan (what each source would capture and where) and leaves nothing behind, not even a
      directory (the pre-flight probe file is removed at once).
  diff_mode:
    support: partial
    details: With O(finalize=true), the unified diffs of the pack are returned as the task diff.
  idempotent:
    support: partial
    details:
      - A capture writes new evidence each time; re-capturing a phase needs O(overwrite=true).
      - Finalizing the same content again gives the same archive digest and reports no change.
notes:
  - RBAC for Kubernetes sources - C(get) on the workload, C(list) on C(replicasets)/C(controllerrevisions),
    C(horizontalpodautoscalers), C(events), C(pods), C(get) on C(pods/log), C(configmaps), C(secrets).
  - Modules cannot call C(set_stats); pass RV(evidence_manifest) to C(ansible.builtin.set_stats) for AWX.
  - The gzip stream depends on the zlib build; digests are stable on one execution environment.
seealso:
  - name: Evidence capture in the AUREUS rollback runbook
    description: The manual commands this module replaces.
    link: https://kubernetes.io/docs/reference/kubectl/generated/kubectl_describe/
requirements:
  - detect-secrets >= 1.5.0 (optional; without it only the built-in rules run)
  - psycopg2 and the C(pg_dump) client for C(pg_*) sources
  - git for C(git_file) sources
"""

EXAMPLES = r"""
- name: Fail early when the evidence store cannot take a pack
  governed.rollback.evidence_capture:
    rollback_id: "{{ rollback_id }}"
    phase: before
    evidence_dir: "{{ evidence_dir }}"
    preflight: true

- name: Capture the runbook's evidence before rolling back aureus-frontend
  governed.rollback.evidence_capture:
    rollback_id: "{{ rollback_id }}"
    phase: before
    evidence_dir: "{{ evidence_dir }}"
    sources:
      - {type: k8s_workload, name: deployment, namespace: aureus, resource_name: aureus-frontend, required: true}
      - {type: k8s_pods, name: pods, namespace: aureus, label_selector: component=frontend}
      - {type: k8s_logs, name: logs, namespace: aureus, label_selector: component=frontend, tail_lines: 1000}
      - {type: k8s_configmap, name: config, namespace: aureus, resource_name: aureus-config}
      - {type: k8s_secret, name: secrets, namespace: aureus, resource_name: aureus-secrets}
      - {type: k8s_events, name: events, namespace: aureus}
      - {type: pg_schema, name: schema}
      - {type: pg_row_counts, name: row-counts}
      - {type: pg_migrations, name: migrations, table: schema_migrations}
      - type: git_file
        name: policy
        repo: /srv/policy-repo
        path: policies/pii-access-policy.rego
        ref: HEAD~1
      - {type: http, name: health, url: "https://aureus.example.com/health"}

- name: Capture after the rollback, diff, scan and archive
  governed.rollback.evidence_capture:
    rollback_id: "{{ rollback_id }}"
    phase: after
    evidence_dir: "{{ evidence_dir }}"
    sources: "{{ evidence_sources }}"
    finalize: true
  register: evidence

- name: Seal the pack and keep it in a bucket with Object Lock (credentials from AWS_* as AWX injects them)
  governed.rollback.evidence_capture:
    rollback_id: "{{ rollback_id }}"
    phase: after
    finalize: true
    s3_bucket: governed-rollback-evidence
    s3_endpoint_url: https://s3.example.internal
    s3_object_lock_mode: COMPLIANCE
    s3_object_lock_days: 2555

- name: Publish the pack for AWX
  ansible.builtin.set_stats:
    data:
      evidence: "{{ evidence.evidence_manifest }}"
"""

RETURN = r"""
rollback_id:
  description: The rollback identifier.
  returned: always
  type: str
  sample: rollback-20240115-103045
phase:
  description: The phase captured.
  returned: always
  type: str
  sample: before
evidence_path:
  description: Directory of this phase.
  returned: always
  type: str
  sample: /var/lib/evidence/rollback-20240115-103045/before
manifest_path:
  description: Path of this phase's C(manifest.json) (not written in check mode or pre-flight).
  returned: always
  type: str
manifest:
  description: Summary of this phase's manifest.
  returned: when sources were captured
  type: dict
  contains:
    path:
      description: Path of the manifest.
      type: str
    sha256:
      description: sha256 of the manifest file.
      type: str
    status:
      description: C(complete), or C(incomplete) when a required source failed.
      type: str
    incomplete:
      description: True when a required source failed (or the capture did not finish).
      type: bool
    files:
      description: Every file written, with C(path) (relative to the pack), C(sha256), C(size) and C(source).
      type: list
      elements: dict
    failed_sources:
      description: Sources that failed (or partly failed) with C(name), C(type), C(required), C(status), C(error).
      type: list
      elements: dict
    redaction:
      description: C(status) (C(passed)/C(failed)), C(rules_version), C(findings) (path, line, rule, engine; never
        the value) and C(notes).
      type: dict
  sample:
    status: complete
    incomplete: false
    files:
      - {path: before/config/ConfigMap-aureus-config.yaml, sha256: 3b1f..., size: 512, source: config}
    failed_sources:
      - {name: logs, type: k8s_logs, required: false, status: failed, error: "3 of 3 log streams could not be read"}
    redaction: {status: passed, rules_version: governed-redact/1, findings: [], notes: []}
evidence_manifest:
  description: Paths and digests for C(ansible.builtin.set_stats) and the rollback receipt.
  returned: always
  type: dict
  sample:
    rollback_id: rollback-20240115-103045
    phase: after
    manifest_path: /var/lib/evidence/rollback-20240115-103045/after/manifest.json
    manifest_sha256: 9c2e...
    files: 14
    failed_sources: [logs]
    incomplete: false
    redaction: passed
    archive_path: /var/lib/evidence/rollback-20240115-103045.tar.gz
    archive_sha256: 5d41...
archive_path:
  description: Path of the archive.
  returned: when finalize is true and the scan passed
  type: str
archive_sha256:
  description: sha256 of the archive, for the receipt.
  returned: when finalize is true and the scan passed
  type: str
evidence_storage:
  description:
    - With O(s3_bucket), where the sealed archive and the pack manifest are kept in object storage, for the receipt's
      C(evidence_storage) field - C(archive_url), C(archive_version_id), C(manifest_url), C(manifest_version_id),
      C(retention_mode) (V(COMPLIANCE), V(GOVERNANCE) or null without Object Lock) and C(retain_until).
    - A version id the receipt's secret guard would take for a secret (AWS's random ones) is given as
      C(hex:<its UTF-8 bytes in hex>), so the receipt that records it is not refused.
    - Also in RV(evidence_manifest), which is what a role passes to M(governed.rollback.rollback_receipt).
  returned: when finalize is true, s3_bucket is set and the scan passed
  type: dict
  sample:
    archive_url: https://s3.example.internal/governed-rollback-evidence/rollbacks/rollback-20240115-103045/rollback-20240115-103045.tar.gz
    archive_version_id: 0000001a2b3c4d5e
    manifest_url: https://s3.example.internal/governed-rollback-evidence/rollbacks/rollback-20240115-103045/pack-manifest.json
    manifest_version_id: 0000001a2b3c4d5f
    retention_mode: COMPLIANCE
    retain_until: "2031-01-14T10:31:02Z"
s3_objects:
  description:
    - With O(s3_bucket), each uploaded object (C(archive), C(manifest)) - C(url), C(uri), C(bucket), C(key),
      C(version_id), C(sha256), C(checksum_sha256) (the store's SHA256 checksum, read back and compared after the
      write), C(retention) and C(changed) (false when the object already held these bytes).
  returned: when finalize is true, s3_bucket is set and the scan passed
  type: dict
pack_manifest_path:
  description: Path of the pack manifest (archive digest, phase manifest digests, redaction result).
  returned: when finalize is true
  type: str
pack_manifest_sha256:
  description: sha256 of the pack manifest.
  returned: when finalize is true
  type: str
diff_files:
  description: Diff files written under C(diff/), relative to the pack.
  returned: when finalize is true
  type: list
  elements: str
diff_summary:
  description: What changed between the phases; C(changed) lists each changed file with C(status), C(changed_keys)
    (ConfigMaps and Secrets) and C(changed_fields).
  returned: when finalize is true and two phases exist
  type: dict
redaction:
  description: The redaction result of the whole pack at finalize (C(status), C(findings), C(rules_version), ...).
  returned: when finalize is true
  type: dict
plan:
  description: In check mode, what each source would capture and where.
  returned: check mode
  type: list
  elements: dict
preflight:
  description: The pre-flight result (C(path), C(writable), C(free_mb), C(min_free_mb)).
  returned: always
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib
from ansible_collections.governed.rollback.plugins.module_utils import _argspec, _evidence, _redact, _s3
from ansible_collections.governed.rollback.plugins.module_utils._common import RollbackError, fail_from_exception
from ansible_collections.governed.rollback.plugins.module_utils._k8s import build_api_client, require_k8s

SOURCE_OPTIONS = dict(
    type=dict(type="str", required=True, choices=sorted(_evidence.SOURCE_TYPES)),
    name=dict(type="str", required=True),
    required=dict(type="bool", default=False),
    diff=dict(type="bool"),
    namespace=dict(type="str"),
    kind=dict(type="str", choices=list(_evidence.WORKLOAD_KINDS)),
    resource_name=dict(type="str"),
    label_selector=dict(type="str"),
    field_selector=dict(type="str"),
    containers=dict(type="list", elements="str"),
    tail_lines=dict(type="int"),
    previous=dict(type="bool"),
    limit_bytes=dict(type="int"),
    schemas=dict(type="list", elements="str"),
    tables=dict(type="list", elements="str"),
    table=dict(type="str"),
    limit=dict(type="int"),
    path=dict(type="str"),
    value=dict(type="raw"),
    filename=dict(type="str"),
    repo=dict(type="path"),
    ref=dict(type="str"),
    url=dict(type="str"),
    method=dict(type="str"),
    headers=dict(type="dict", no_log=True),
    timeout=dict(type="int"),
    validate_certs=dict(type="bool"),
    body_bytes=dict(type="int"),
    argv=dict(type="list", elements="str"),
    cmd=dict(type="str"),
    chdir=dict(type="path"),
)


def argument_spec():
    return _argspec.compose(dict(
        rollback_id=dict(type="str", required=True),
        phase=dict(type="str", required=True, choices=list(_evidence.PHASES)),
        evidence_dir=dict(type="path", fallback=(env_fallback, ["GOVERNED_ROLLBACK_EVIDENCE_DIR"])),
        sources=dict(type="list", elements="dict", default=[], options=SOURCE_OPTIONS),
        finalize=dict(type="bool", default=False),
        preflight=dict(type="bool", default=False),
        min_free_mb=dict(type="int", default=64),
        overwrite=dict(type="bool", default=False),
        max_workers=dict(type="int", default=8),
        scan_referenced_secrets=dict(type="bool", default=True),
        scan_allowlist=dict(type="list", elements="str", default=[]),
    ), _argspec.K8S_AUTH, _argspec.PG_CONN, _argspec.S3)


def hide_url_credentials(module, sources):
    """URL passwords are not options Ansible knows to hide: register them so any output masks them."""
    for source in sources:
        for value in [source.get("url"), source.get("cmd")] + list(source.get("argv") or []):
            module.no_log_values.update(_redact.url_passwords(value))


def diff_text(pack_dir, diff_files, limit=65536):
    chunks, total = [], 0
    for rel in diff_files:
        if not rel.endswith(".diff"):
            continue
        with open(os.path.join(pack_dir, *rel.split("/")), "r", encoding="utf-8", errors="replace") as handle:
            text = handle.read(limit - total + 1)
        chunks.append(text)
        total += len(text)
        if total > limit:
            chunks.append("\n... diff truncated; see %s\n" % os.path.join(pack_dir, "diff"))
            break
    return "".join(chunks)


def run(module):
    params = module.params
    rollback_id, phase = params["rollback_id"], params["phase"]
    try:
        _evidence.validate_rollback_id(rollback_id)
        sources = _evidence.normalize_sources(params["sources"])
        preflight = _evidence.preflight(params["evidence_dir"], params["min_free_mb"])
    except RollbackError as exc:
        fail_from_exception(module, exc, rollback_id=rollback_id, phase=phase, changed=False)
    hide_url_credentials(module, sources)
    evidence_dir = preflight["path"]
    pack_dir = os.path.join(evidence_dir, rollback_id)
    phase_dir = os.path.join(pack_dir, phase)
    result = dict(changed=False, rollback_id=rollback_id, phase=phase, evidence_path=phase_dir,
                  manifest_path=_evidence.phase_manifest_path(pack_dir, phase), preflight=preflight)
    summary = dict(rollback_id=rollback_id, phase=phase, evidence_path=phase_dir)
    result["evidence_manifest"] = summary
    if params["preflight"]:
        module.exit_json(msg="evidence directory %s is writable with %d MiB free" % (evidence_dir, preflight["free_mb"]),
                         **result)
    if not sources and not params["finalize"]:
        module.fail_json(msg="nothing to do: give sources to capture, finalize: true, or preflight: true", **result)
    if module.check_mode:
        result["plan"] = _evidence.plan_capture(rollback_id, phase, sources)
        if params["finalize"]:
            result["plan"].append({"name": "finalize", "type": "finalize", "required": True,
                                   "captures": "diffs before -> after, pattern scan, deterministic archive",
                                   "path": "%s.tar.gz" % rollback_id})
            if _s3.wanted(params):
                archive_key, manifest_key = _s3.evidence_keys(params["s3_prefix"], rollback_id,
                                                              "%s.tar.gz" % rollback_id)
                result["plan"].append({"name": "upload", "type": "s3", "required": True,
                                       "captures": "archive and pack manifest to object storage (SHA256 checksum, "
                                                   "Object Lock retention where the bucket has it)",
                                       "path": ["s3://%s/%s" % (params["s3_bucket"], k)
                                                for k in (archive_key, manifest_key)]})
        result["changed"] = True
        module.exit_json(**result)
    if _evidence.needs_k8s(sources):
        require_k8s(module)
    ctx = _evidence.CaptureContext(
        dict(params, rollback_id=rollback_id),
        k8s_client_factory=lambda: build_api_client(params),
        pg_connect=_evidence.pg_connect_factory(params),
        max_workers=params["max_workers"],
        scan_referenced_secrets=params["scan_referenced_secrets"],
        allowlist=params["scan_allowlist"],
    )
    failures = []
    try:
        if sources:
            manifest = _evidence.capture_phase(ctx, evidence_dir, rollback_id, phase, sources, params["overwrite"])
            result["changed"] = True
            result["manifest"] = _evidence.manifest_summary(manifest, result["manifest_path"])
            summary.update(manifest_path=result["manifest_path"], manifest_sha256=result["manifest"]["sha256"],
                           files=len(manifest["files"]), bytes=sum(f["size"] for f in manifest["files"]),
                           failed_sources=[s["name"] for s in manifest["failed_sources"]],
                           incomplete=manifest["incomplete"], redaction=manifest["redaction"]["status"])
            for failed in manifest["failed_sources"]:
                module.warn("evidence source %s (%s) %s: %s" % (failed["name"], failed["type"], failed["status"],
                                                                failed["error"]))
            if manifest["required_failed"]:
                failures.append("required evidence source(s) %s failed; the %s phase is marked incomplete (see %s)"
                                % (", ".join(manifest["required_failed"]), phase, result["manifest_path"]))
            if manifest["redaction"]["status"] == "failed":
                module.warn("the pattern scan flagged %d line(s) in the %s phase: %s; finalize will refuse to archive"
                            % (len(manifest["redaction"]["findings"]), phase,
                               "; ".join(_redact.describe_findings(
                                   [_redact.Finding(**f) for f in manifest["redaction"]["findings"]], 5))))
        if params["finalize"] and not failures:
            final = _evidence.finalize_pack(ctx, evidence_dir, rollback_id)
            result["changed"] = result["changed"] or final["changed"]
            result.update(archive_path=final["archive_path"], archive_sha256=final["archive_sha256"],
                          pack_manifest_path=final["pack_manifest_path"],
                          pack_manifest_sha256=final["pack_manifest_sha256"], diff_files=final["diff_files"],
                          diff_summary=final["diff_summary"], redaction=final["redaction"])
            summary.update(archive_path=final["archive_path"], archive_sha256=final["archive_sha256"],
                           pack_manifest_path=final["pack_manifest_path"],
                           pack_manifest_sha256=final["pack_manifest_sha256"], redaction=final["redaction"]["status"],
                           incomplete=final["incomplete"], diff_files=len(final["diff_files"]))
            if _s3.wanted(params) and final["redaction"]["status"] != "failed" and final["archive_path"]:
                uploaded = _s3.upload_evidence(_s3.Store(params), rollback_id, final["archive_path"],
                                               final["pack_manifest_path"])
                result["changed"] = result["changed"] or uploaded["changed"]
                result["evidence_storage"] = _s3.storage_record(uploaded)
                result["s3_objects"] = {"archive": uploaded["archive"], "manifest": uploaded["manifest"]}
                summary["evidence_storage"] = result["evidence_storage"]
            if module._diff and final["diff_files"]:
                result["diff"] = {"prepared": diff_text(final["pack_dir"], final["diff_files"])}
            if final["redaction"]["status"] == "failed":
                failures.append("redaction failed: the pattern scan flagged %d line(s), so no archive was written "
                                "(%s). Inspect those lines; remove the secret from the source or, for a proven false "
                                "positive, add a scan_allowlist pattern" % (
                                    len(final["redaction"]["findings"]), "; ".join(
                                        _redact.describe_findings(
                                            [_redact.Finding(**f) for f in final["redaction"]["findings"]],
                                            10))))
    except (_evidence.EvidenceError, _s3.S3Error) as exc:
        failures.append(str(exc))
    except OSError as exc:
        # Anything the store refused outside a source (the manifest, diffs, the archive).
        failures.append("writing the evidence pack under %s failed: %s; the pack is incomplete, fix the store and "
                        "capture again with overwrite: true" % (pack_dir, exc))
    finally:
        ctx.close()
        # Values of Secrets read during the run: Ansible masks them anywhere in the output.
        module.no_log_values.update(v for v in ctx.known_values() if len(v) >= 8)
    if failures:
        module.fail_json(msg="; ".join(failures), **result)
    module.exit_json(**result)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if _s3.wanted(module.params) and not _s3.HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3"), exception=_s3.BOTO3_IMP_ERR)
    try:
        run(module)
    except Exception as exc:  # pylint: disable=broad-except  # anything unforeseen still ends in fail_json
        fail_from_exception(module, exc, rollback_id=module.params["rollback_id"], phase=module.params["phase"])


if __name__ == "__main__":
    main()
