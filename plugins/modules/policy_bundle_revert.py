#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: policy_bundle_revert
short_description: Roll an OPA policy back to an earlier git revision, tested, probed and verified on the running PEP
version_added: 0.1.0
author: governed.rollback maintainers (@governed)
description:
  - Does the AUREUS runbook's policy rollback (the policy directory at the runbook's C(HEAD~1) from git, applied as a
    ConfigMap, the policy engine restarted, a previously blocked query checked) and the KFM rule (roll back the
    policy bundle AND ensure policy tests still cover allow and deny), the way fleets run OPA, with a bundle server.
  - Builds the bundle of the target commit without touching the repository's working tree or index (C(git archive)
    into a temporary directory), with C(opa build --revision <commit sha>) and a C(.manifest) naming the roots.
    Test modules (C(*_test.rego)) are left out of the bundle.
  - Runs C(opa test) on the target's sources (with an optional coverage threshold) and refuses, applying nothing,
    when a test fails, when there is no test, or when the tests no longer exercise both an allow and a deny decision
    of a rolled-back rule (a boolean rule with a C(default), in a module that differs from the current one), naming
    the rule.
  - Evaluates the O(probes) against the target bundle with C(opa eval) and refuses when one disagrees.
  - Publishes the bundle to the bundle server's directory atomically (written beside it, then renamed) and/or
    server-side applies the ConfigMap (field manager C(governed-rollback), C(resourceVersion) precondition, so a
    change made in between is never overwritten), then restarts the PEP Deployment where it mounts that ConfigMap
    (C(kubectl rollout restart) semantics) and waits for it.
  - Verifies that the running OPA (O(opa_url)) reports the target revision (C(GET /v1/status)) and answers every
    probe as expected. When that fails after a publish, the previous bundle is put back on the bundle server, so
    what OPA keeps running (the previous bundle) is also what it is served.
  - The audit event of the runbook (C(policy_rollback), policy, time stamp, actor) is returned in
    RV(receipt_fields) for the receipt ledger, never written into a pod.
options:
  repo:
    description: Path of the policy git repository (a clone; its working tree and index are never touched).
    type: path
    required: true
  policy_dir:
    description: Directory of the policy inside the repository (the runbook's C(policies/)).
    type: str
    default: policies
  target_ref:
    description:
      - Commit, tag or branch to roll back to.
      - When not given, the previous commit that touched O(policy_dir) on the repository's C(HEAD) (the runbook's
        C(HEAD~1)), so repeating the rollback keeps the same target.
    type: str
  bundle_name:
    description: Name of the bundle in OPA's configuration (its status key) and of the file C(bundles/<name>.tar.gz).
    type: str
    required: true
  roots:
    description: The bundle's roots for the C(.manifest); empty derives them from the packages of the policy modules.
    type: list
    elements: str
    default: []
  opa_path:
    description: Path of the C(opa) binary; found on E(PATH) when not given.
    type: path
  apply_to:
    description: Where the policy is applied - the bundle server's directory, the ConfigMap the PEP mounts, or both.
    type: list
    elements: str
    choices: [bundle_server, configmap]
    default: [bundle_server]
  bundle_server_dir:
    description: Directory the bundle server serves; the bundle goes to C(bundles/<bundle_name>.tar.gz) below it.
    type: path
  opa_url:
    description:
      - Base URL of the running OPA (the PEP), for reading its active revision (C(GET /v1/status)) and asking it the
        O(probes) after the rollback. Not verified when empty.
    type: str
  configmap_name:
    description: The ConfigMap holding the policy files (the runbook's C(aureus-policies)).
    type: str
  configmap_namespace:
    description: Namespace of O(configmap_name) and O(pep_deployment).
    type: str
  pep_deployment:
    description: The Deployment of the PEP; restarted (and waited for) when it mounts O(configmap_name).
    type: str
  probes:
    description:
      - Decisions checked against the target bundle before applying and against the running OPA after; any
        disagreement refuses (before) or fails (after) the rollback.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: What the probe checks.
        type: str
      query:
        description: A data path, e.g. C(data.aureus.pii.allow).
        type: str
        required: true
      input:
        description: The input document.
        type: raw
      expect:
        description: The expected value; null (or omitted) expects the query to be undefined.
        type: raw
  coverage_threshold:
    description: Minimum C(opa test) coverage in percent; V(0) does not check coverage.
    type: float
    default: 0
  signing_key:
    description: Private key (or secret) for C(opa build --signing-key); the bundle is then signed.
    type: path
  signing_alg:
    description: Signing algorithm for O(signing_key).
    type: str
    default: RS256
  policy_name:
    description: Policy name for the receipt; read from the target's C(policy-manifest.json) when not given.
    type: str
  security_review:
    description: The security review's result, for the receipt (e.g. C(approved)).
    type: str
  affected_users:
    description: How many users the policy affected, for the receipt.
    type: int
  expected_binding:
    description:
      - The RV(binding) of an earlier check-mode plan; the rollback is refused, changing nothing, when the active
        revision, the served bundle, the ConfigMap or the target bundle no longer match it.
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
    details: Builds, tests, probes and diffs; the ConfigMap apply goes through a server-side dry run; nothing is
      applied.
  diff_mode:
    support: full
    details: The policy files before and after.
  idempotent:
    support: full
    details: Where every target of O(apply_to) is already at the target revision, nothing changes (the running OPA
      is still verified).
notes:
  - RBAC for the ConfigMap path - C(get) and C(patch) on C(configmaps); C(get) and C(patch) on C(deployments) to
    restart the PEP.
  - OPA keeps the previous bundle when it cannot download or activate a new one; the verification waits at most
    O(wait_timeout) seconds for the new revision.
requirements:
  - git
  - opa (the Open Policy Agent binary)
  - kubernetes >= 29.0.0 (Python client), for the ConfigMap path
"""

EXAMPLES = r"""
- name: Roll pii-access-requires-approval back to the previous version through the bundle server
  governed.rollback.policy_bundle_revert:
    repo: /srv/policy-repo
    bundle_name: aureus
    bundle_server_dir: /srv/bundles
    opa_url: http://127.0.0.1:8181
    probes:
      - name: a previously blocked analyst query works again
        query: data.aureus.pii.allow
        input: {user: {role: analyst}, query: {pii_level: low}}
        expect: true
      - name: the high-PII query is still denied
        query: data.aureus.pii.allow
        input: {user: {role: analyst}, query: {pii_level: high}}
        expect: false
    actor: gov-lead
    incident_id: INC-12345
  register: policy

- name: Plan the rollback to a tag, applied as the ConfigMap the PEP mounts
  governed.rollback.policy_bundle_revert:
    repo: /srv/policy-repo
    target_ref: pii-access-requires-approval-v2.0
    bundle_name: aureus
    apply_to: [configmap]
    configmap_name: aureus-policies
    configmap_namespace: aureus
    pep_deployment: aureus-policy
  check_mode: true
  register: plan
"""

RETURN = r"""
from_ref:
  description: The plan contract's from reference - the commit of the active policy (null when unknown).
  returned: when a target was selected
  type: str
  sample: 072360efe3cd4db431735e89410490a739b5dbe4
to_ref:
  description: The plan contract's to reference - the commit rolled back to.
  returned: when a target was selected
  type: str
  sample: 2254987123b2c4340786dd33d699362bf7c98737
approval_facts:
  description: What M(governed.rollback.rollback_approval) needs (nothing for the policy row).
  returned: when a target was selected
  type: dict
  sample: {}
binding:
  description:
    - What an approval of this plan is for - C(active_revision), C(target_revision), C(bundle_sha256) (the target
      bundle) and, per O(apply_to), C(served_bundle_sha256) and C(configmap_sha256). Pass it back as
      O(expected_binding).
  returned: when a target was selected
  type: dict
receipt_fields:
  description:
    - The receipt fields (C(component), C(changed_surfaces), C(current_ref), C(rollback_target_ref), C(policy_name),
      C(from_version), C(to_version), C(security_review), C(affected_users), C(details) with the audit event).
  returned: when a target was selected
  type: dict
skipped_reason:
  description: Why nothing was changed (already at the target revision), else null.
  returned: always
  type: str
from_revision:
  description: The active revision - C(sha), C(tags), C(version) (from C(policy-manifest.json), a tag or the SHA).
  returned: when a target was selected
  type: dict
to_revision:
  description: The target revision - C(sha), C(tags), C(version), and how it was C(selected_by).
  returned: when a target was selected
  type: dict
bundle_sha256:
  description: SHA-256 of the target bundle (C(opa build) output, byte-for-byte reproducible).
  returned: when the bundle was built
  type: str
tests:
  description: The target's C(opa test) summary - C(total), C(passed), C(failed), C(errors), C(skipped),
    C(failures), C(tests), C(coverage), and C(allow_deny) (the tests exercising each rolled-back rule).
  returned: when the tests ran
  type: dict
probes:
  description: Each probe against the target bundle (C(where) = C(target bundle)) and, after the rollback, the
    running OPA (C(where) = C(running PEP)) - C(name), C(query), C(expect), C(got), C(passed).
  returned: always
  type: list
  elements: dict
policy_diff:
  description: Per-file unified diff from the active policy to the target (C(file), C(status), C(diff)).
  returned: when a target was selected
  type: list
  elements: dict
applied:
  description: What was (or would be) applied - C(bundle_server), C(configmap), C(pep_restarted).
  returned: always
  type: dict
pep:
  description:
    - The running OPA after the rollback - C(revision) it reports, C(activated_at) (as RV(activated_at), null when
      OPA does not report the target revision or its activation time), and C(verified).
  returned: when O(opa_url) is set and not in check mode
  type: dict
published_at:
  description:
    - When the target was put in place (RFC 3339 UTC, microseconds) - the bundle renamed into the bundle server's
      directory, or the ConfigMap stored when only O(apply_to=configmap) changed. Also in the receipt's C(details).
  returned: when something was applied (not in check mode)
  type: str
  sample: "2026-11-30T15:04:05.123456Z"
activated_at:
  description:
    - When the running OPA activated the target bundle, by OPA's own clock (C(last_successful_activation) of
      C(GET /v1/status), cut to microseconds) - the moment of mitigation. Also in the receipt's C(details).
  returned: when O(opa_url) is set, OPA reports the target revision and its activation time, not in check mode
  type: str
  sample: "2026-11-30T15:04:06.234567Z"
refused:
  description: The rule that refused the rollback (nothing applied) - C(opa_not_found), C(not_a_repository),
    C(no_policy_history), C(no_previous_version), C(bad_ref), C(build_failed), C(tests_failed), C(no_tests),
    C(coverage_below_threshold), C(tests_miss_allow_deny), C(probe_failed), C(bad_probe), C(changed_since_approved),
    C(conflict), C(forbidden), C(not_found).
  returned: on refusal
  type: str
rollback_warnings:
  description: The warnings of this task.
  returned: always
  type: list
  elements: str
"""

import json
import os
import shutil
import tarfile
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url
from ansible_collections.governed.rollback.plugins.module_utils import _argspec, _policy, _proc, _workload
from ansible_collections.governed.rollback.plugins.module_utils._common import (
    RollbackError, Refused, backoff_interval, check_binding, fail_from_exception, json_sha256, sha256_hex, utc_stamp,
    utc_stamp_micro,
)
from ansible_collections.governed.rollback.plugins.module_utils._k8s import (
    FIELD_MANAGER, RESOURCE_PATHS, K8sError, KubeRest, build_api_client, require_k8s,
)
from ansible_collections.governed.rollback.plugins.module_utils._redact import redact_text
from ansible_collections.governed.rollback.plugins.module_utils._rollout import patch_time

REVISION_ANNOTATION = "policy.governed.io/revision"
VERSION_ANNOTATION = "policy.governed.io/version"
APPLY_PATCH = "application/apply-patch+yaml"
HTTP_TIMEOUT = 10
MAX_CANDIDATES = 50


# --------------------------------------------------------------------------- git and opa (through _proc)

class Tools(object):
    def __init__(self, opa, repo, workdir):
        self.opa = opa
        self.repo = repo
        self.workdir = workdir
        self.env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")

    def git(self, *args):
        result = _proc.run(["git", "-C", self.repo] + list(args), env=self.env, timeout=60)
        return result

    def git_ok(self, what, *args):
        result = self.git(*args)
        if not result.ok:
            raise RollbackError("%s failed: %s" % (what, result.explain("git")))
        return result.value

    def archive(self, sha, directory, dest):
        """The policy directory at ``sha`` as ``{relative path: text}``, extracted under ``dest``."""
        os.makedirs(dest)
        tar_path = dest + ".tar"
        with open(tar_path, "wb") as out:
            result = _proc.stream(["git", "-C", self.repo, "archive", "--format=tar", sha, "--", directory],
                                  lambda chunks: [out.write(chunk) for chunk in chunks] and None, env=self.env)
        if not result.ok:
            raise Refused("%s does not exist at %s: %s" % (directory, sha[:12], result.explain("git archive")),
                          "no_policy_history")
        with tarfile.open(tar_path) as archive:
            members = [m for m in archive.getmembers() if m.isfile() and not m.name.startswith("/") and ".." not in
                       m.name.split("/")]
            archive.extractall(dest, members=members)  # nosec - names checked above; our own git archive
        os.remove(tar_path)
        root = os.path.join(dest, directory)
        return root, read_tree(root)

    def opa_run(self, args, chdir=None, timeout=120):
        return _proc.run([self.opa] + list(args), chdir=chdir, timeout=timeout)


def read_tree(root):
    files = {}
    for base, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(base, name)
            with open(path, "rb") as handle:
                files[os.path.relpath(path, root).replace(os.sep, "/")] = handle.read().decode("utf-8", "replace")
    return files


def read_bundle(path):
    """``(revision, {path: text}, sha256)`` of a bundle tarball on disk; Nones when it is absent."""
    if not os.path.isfile(path):
        return None, None, None
    with open(path, "rb") as handle:
        data = handle.read()
    files = {}
    revision = None
    try:
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                if not member.isfile():
                    continue
                name = member.name.lstrip("/")
                text = archive.extractfile(member).read().decode("utf-8", "replace")
                if name == ".manifest":
                    revision = json.loads(text).get("revision")
                elif name != "data.json" or text.strip() not in ("{}", ""):
                    files[name] = text
    except (tarfile.TarError, ValueError, OSError):
        return None, None, sha256_hex(data)
    return revision, files, sha256_hex(data)


def write_atomically(path, data):
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# --------------------------------------------------------------------------- the running OPA

def http_json(url, body=None):
    data = None if body is None else json.dumps(body).encode("utf-8")
    response = open_url(url, data=data, method="POST" if body is not None else "GET", timeout=HTTP_TIMEOUT,
                        headers={"Content-Type": "application/json"} if body is not None else None)
    return json.loads(response.read().decode("utf-8") or "{}")


def pep_revision(opa_url, bundle_name):
    """``(revision, activated_at, error)``: the revision the running OPA reports active (status API, else
    data.system.bundles), when OPA activated it (status API only, else None), error text on failure."""
    errors = []
    for path in ("/v1/status", "/v1/data/system/bundles"):
        try:
            status = http_json(opa_url.rstrip("/") + path)
            revision = _policy.status_revision(status, bundle_name)
            if revision:
                return revision, _policy.status_activation(status, bundle_name), None
        except Exception as exc:  # pylint: disable=broad-except  # URL, HTTP and JSON errors alike
            errors.append("%s: %s" % (path, exc))
    return None, None, "; ".join(errors) or "no active revision reported for bundle %s" % bundle_name


def pep_probes(opa_url, probes):
    results = []
    for probe in probes:
        try:
            answer = http_json(opa_url.rstrip("/") + _policy.data_api_path(probe["query"]), {"input": probe["input"]})
            got = answer.get("result")
        except Exception as exc:  # pylint: disable=broad-except
            got = {"error": redact_text(str(exc))}
        results.append(_policy.probe_result(probe, got, "running PEP"))
    return results


# --------------------------------------------------------------------------- the ConfigMap and the PEP

def cm_path(namespace, name):
    return RESOURCE_PATHS["ConfigMap"] + "/{name}", {"namespace": namespace, "name": name}


def read_configmap(api, namespace, name):
    try:
        return _workload.call("configmap %s/%s" % (namespace, name), "get", "configmaps", namespace, name,
                              api.get, "ConfigMap", namespace, name)
    except Refused as refused:
        if refused.code == "not_found":
            return None
        raise


def apply_configmap(api, namespace, name, data, annotations, resource_version, dry_run):
    """Server-side apply with a resourceVersion precondition; keys we no longer carry are removed with a JSON patch
    that tests the resourceVersion the apply returned."""
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
            "data": data}
    if resource_version:
        body["metadata"]["resourceVersion"] = resource_version
    path, params = cm_path(namespace, name)
    query = [("fieldManager", FIELD_MANAGER), ("force", "true")] + ([("dryRun", "All")] if dry_run else [])
    what = "configmap %s/%s" % (namespace, name)
    try:
        applied = _workload.call(what, "apply", "configmaps", namespace, name, api.request, "PATCH", path, params,
                                 query, json.dumps(body), APPLY_PATCH)
    except K8sError as error:
        if error.status == 409:
            raise Refused("conflict: %s changed after it was read (resourceVersion %s) and before the apply; nothing "
                          "was overwritten. Re-run to re-read and re-plan" % (what, resource_version), "conflict")
        raise
    stale = sorted(set(applied.get("data") or {}) - set(data))
    if stale:
        ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": applied["metadata"]["resourceVersion"]}]
        ops += [{"op": "remove", "path": "/data/" + key.replace("~", "~0").replace("/", "~1")} for key in stale]
        applied = _workload.call(what, "patch", "configmaps", namespace, name, api.request, "PATCH", path, params,
                                 [("fieldManager", FIELD_MANAGER)] + ([("dryRun", "All")] if dry_run else []),
                                 ops, _workload.JSON_PATCH)
    return applied


def mounts_configmap(deployment, configmap):
    spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    for volume in spec.get("volumes") or []:
        if (volume.get("configMap") or {}).get("name") == configmap:
            return True
        for source in (volume.get("projected") or {}).get("sources") or []:
            if (source.get("configMap") or {}).get("name") == configmap:
                return True
    return False


# --------------------------------------------------------------------------- the run

class Outcome(object):
    def __init__(self):
        self.failed_msg = None
        self.result = {"changed": False, "skipped_reason": None, "probes": [], "rollback_warnings": [],
                       "applied": {"bundle_server": False, "configmap": False, "pep_restarted": False}}

    def fail(self, msg, **extra):
        self.failed_msg = msg
        self.result.update(extra)
        return self


class State(object):
    """What is active now, read from every place the policy is applied."""

    def __init__(self):
        self.bundle_revision = None
        self.bundle_files = None
        self.bundle_sha256 = None
        self.configmap = None
        self.configmap_revision = None
        self.pep_revision = None


def describe(tools, sha, files):
    tags = [t for t in tools.git("tag", "--points-at", sha).value.split() if t] if sha else []
    return {"sha": sha, "tags": tags, "version": _policy.version_label(files, tags, sha)}


def resolve_target(tools, params, history):
    ref = params.get("target_ref")
    if ref:
        result = tools.git("rev-parse", "--verify", "--quiet", "--end-of-options", ref + "^{commit}")
        if not result.ok or not _policy.SHA_RE.match(result.value.strip()):
            raise Refused("target_ref %r is not a commit, tag or branch of %s; nothing was applied"
                          % (ref, params["repo"]), "bad_ref")
        return _policy.choose_target(history, params["policy_dir"], result.value.strip())
    return _policy.choose_target(history, params["policy_dir"])


def read_state(api, params, tools, history):
    state = State()
    bundle_path = bundle_file(params)
    if bundle_path:
        state.bundle_revision, state.bundle_files, state.bundle_sha256 = read_bundle(bundle_path)
    if "configmap" in params["apply_to"]:
        state.configmap = read_configmap(api, params["configmap_namespace"], params["configmap_name"])
        if state.configmap is not None:
            data = state.configmap.get("data") or {}
            annotated = ((state.configmap.get("metadata") or {}).get("annotations") or {}).get(REVISION_ANNOTATION)
            candidates = ([annotated] if annotated in history else []) + history[:MAX_CANDIDATES]
            state.configmap_revision = _policy.match_revision(
                data, ((sha, tools.archive(sha, params["policy_dir"], os.path.join(tools.workdir, "cm-" + sha))[1])
                       for sha in dict.fromkeys(candidates)))
    if params.get("opa_url"):
        state.pep_revision = pep_revision(params["opa_url"], params["bundle_name"])[0]
    return state


def bundle_file(params):
    if "bundle_server" in params["apply_to"]:
        return os.path.join(params["bundle_server_dir"], "bundles", params["bundle_name"] + ".tar.gz")
    return None


def build_bundle(tools, params, sha, root, files):
    roots = params["roots"] or _policy.derive_roots(files)
    with open(os.path.join(root, ".manifest"), "w") as handle:
        json.dump({"revision": sha, "roots": roots}, handle)
    out = os.path.join(tools.workdir, "bundle.tar.gz")
    argv = ["build", "-b", ".", "--ignore", "*" + _policy.TEST_FILE_SUFFIX, "--revision", sha, "-o", out]
    if params.get("signing_key"):
        argv += ["--signing-key", params["signing_key"], "--signing-alg", params["signing_alg"]]
    built = tools.opa_run(argv, chdir=root)
    os.remove(os.path.join(root, ".manifest"))
    if not built.ok:
        raise Refused("opa build of %s at %s failed (a Rego error at the target?); nothing was applied: %s"
                      % (params["policy_dir"], sha[:12], built.explain("opa build")), "build_failed")
    with open(out, "rb") as handle:
        data = handle.read()
    return data, roots


def run_tests(tools, params, root):
    tested = tools.opa_run(["test", "--format", "json", "-v", "."], chdir=root)
    if not tested.ok and not tested.value.strip().startswith("["):
        raise Refused("opa test could not run on the target (a Rego error?); nothing was applied: %s"
                      % tested.explain("opa test"), "build_failed")
    summary = _policy.parse_test_report(tested.value)
    coverage = None
    if params["coverage_threshold"]:
        covered = tools.opa_run(["test", "--format", "json", "-c", "."], chdir=root)
        coverage = _policy.parse_coverage(covered.value)
    summary["coverage"] = coverage
    _policy.check_tests(summary, coverage, params["coverage_threshold"])
    return summary


def target_probes(tools, bundle_path, probes):
    results = []
    for probe in probes:
        handle, input_path = tempfile.mkstemp(dir=tools.workdir, suffix=".json")
        with os.fdopen(handle, "w") as out:
            json.dump(probe["input"], out)
        evaluated = tools.opa_run(["eval", "-b", bundle_path, "-i", input_path, "--format", "json", probe["query"]])
        if not evaluated.ok:
            raise Refused("opa eval of probe %r failed: %s" % (probe["name"], evaluated.explain("opa eval")),
                          "probe_failed")
        results.append(_policy.probe_result(probe, _policy.eval_value(evaluated.value), "target bundle"))
    return results


def check_params(params):
    if "bundle_server" in params["apply_to"] and not params.get("bundle_server_dir"):
        raise Refused("apply_to includes bundle_server but bundle_server_dir is not set", "bad_arguments")
    if "configmap" in params["apply_to"] and not (params.get("configmap_name") and params.get("configmap_namespace")):
        raise Refused("apply_to includes configmap but configmap_name or configmap_namespace is not set",
                      "bad_arguments")
    if not params["apply_to"]:
        raise Refused("apply_to is empty: say where the policy is applied (bundle_server, configmap)", "bad_arguments")


def execute(params, opa, api, workdir, check_mode=False, diff=False):
    """Plan, check, apply and verify; returns an Outcome and never raises for a refusal."""
    outcome = Outcome()
    result = outcome.result
    try:
        check_params(params)
        if not opa:
            raise Refused("the opa binary was not found (opa_path=%s, PATH); install it or set opa_path; nothing was "
                          "applied" % params.get("opa_path"), "opa_not_found")
        probes = _policy.normalize_probes(params["probes"])
        tools = Tools(opa, params["repo"], workdir)
        top = tools.git("rev-parse", "--show-toplevel")
        if not top.ok:
            raise Refused("%s is not a git repository: %s" % (params["repo"], top.explain("git")), "not_a_repository")
        history = _policy.policy_history(tools.git("log", "--format=%H", "HEAD", "--", params["policy_dir"]).value)
        to_sha, selected_by = resolve_target(tools, params, history)
        state = read_state(api, params, tools, history)
        from_sha = state.bundle_revision if bundle_file(params) else state.configmap_revision
        if bundle_file(params) and "configmap" in params["apply_to"] and not from_sha:
            from_sha = state.configmap_revision

        root, target_files = tools.archive(to_sha, params["policy_dir"], os.path.join(workdir, "target"))
        current_files = None
        if from_sha and tools.git("cat-file", "-e", from_sha + "^{commit}").ok:
            current_files = tools.archive(from_sha, params["policy_dir"], os.path.join(workdir, "current"))[1]
        elif state.bundle_files is not None:
            current_files = state.bundle_files
        elif state.configmap is not None:
            current_files = dict(state.configmap.get("data") or {})

        bundle, roots = build_bundle(tools, params, to_sha, root, target_files)
        digest = sha256_hex(bundle)
        result["bundle_sha256"] = digest
        summary = run_tests(tools, params, root)
        rules = _policy.rolled_back_rules(current_files, target_files)
        summary["allow_deny"] = _policy.check_allow_deny(rules, target_files)
        result["tests"] = summary
        bundle_path = os.path.join(workdir, "bundle.tar.gz")
        result["probes"] = target_probes(tools, bundle_path, probes)
        _policy.check_probes(result["probes"], "the target bundle (%s)" % to_sha[:12])
    except Refused as refused:
        return outcome.fail(refused.msg, refused=refused.code, **refused.details)
    except (RollbackError, K8sError) as error:
        return outcome.fail(error.msg, **error.details)

    from_info = describe(tools, from_sha, current_files or {})
    to_info = dict(describe(tools, to_sha, target_files), selected_by=selected_by)
    policy_name = params.get("policy_name") or _policy.manifest_version(target_files)[0] or params["bundle_name"]
    data = _policy.deployable(target_files)
    binding = {"active_revision": from_sha, "target_revision": to_sha, "bundle_sha256": digest}
    if bundle_file(params):
        binding["served_bundle_sha256"] = state.bundle_sha256
    if "configmap" in params["apply_to"]:
        binding["configmap_sha256"] = json_sha256((state.configmap or {}).get("data")) if state.configmap else None
    bundle_done = not bundle_file(params) or state.bundle_revision == to_sha
    pep_done = not params.get("opa_url") or "bundle_server" not in params["apply_to"] or state.pep_revision == to_sha
    cm_done = "configmap" not in params["apply_to"] or (
        state.configmap is not None and (state.configmap.get("data") or {}) == data)
    done = bundle_done and pep_done and cm_done
    audit = {"event": "policy_rollback", "policy": policy_name, "timestamp": utc_stamp(), "actor": params.get("actor"),
             "from_revision": from_sha, "to_revision": to_sha, "incident_id": params.get("incident_id")}
    result.update(
        from_ref=from_sha, to_ref=to_sha, approval_facts={}, binding=binding, from_revision=from_info,
        to_revision=to_info, roots=roots,
        policy_diff=[dict(e, diff=redact_text(e["diff"])) for e in _policy.policy_diff(
            current_files, target_files, from_info["version"] or "current", to_info["version"] or "target")],
        receipt_fields={
            "component": "policy-engine", "changed_surfaces": ["policy"], "current_ref": from_sha,
            "rollback_target_ref": to_sha, "policy_name": policy_name, "from_version": from_info["version"],
            "to_version": to_info["version"], "security_review": params.get("security_review"),
            "affected_users": params.get("affected_users"),
            "details": {"bundle_name": params["bundle_name"], "bundle_sha256": digest, "applied_to": params["apply_to"],
                        "from_revision": from_info, "to_revision": to_info,
                        "tests": {k: summary[k] for k in ("total", "passed", "failed", "coverage")},
                        "allow_deny": summary["allow_deny"], "audit_event": audit}})
    if diff:
        result["diff"] = {"before_header": "policy %s" % (from_info["version"] or "unknown"),
                          "after_header": "policy %s" % to_info["version"],
                          "before": redact_text("".join("# %s\n%s" % (p, t) for p, t in sorted((current_files or {}).items()))),
                          "after": redact_text("".join("# %s\n%s" % (p, t) for p, t in sorted(target_files.items())))}
    try:
        check_binding("policy %s" % policy_name, params.get("expected_binding"), binding)
    except Refused as refused:
        return outcome.fail(refused.msg, refused=refused.code)

    if done:
        result["skipped_reason"] = ("skipped rollback: policy %s is already at %s (%s) everywhere it is applied (%s)"
                                    % (policy_name, to_info["version"], to_sha[:12], ", ".join(params["apply_to"])))
        if not check_mode:
            verify_pep(params, probes, to_sha, result, outcome, None)
        return outcome

    result["changed"] = True
    result["applied"] = {"bundle_server": not bundle_done or not pep_done, "configmap": not cm_done,
                         "pep_restarted": False}
    annotations = {REVISION_ANNOTATION: to_sha, VERSION_ANNOTATION: str(to_info["version"])}
    if check_mode:
        if not cm_done:
            try:
                apply_configmap(api, params["configmap_namespace"], params["configmap_name"], data, annotations,
                                state.configmap["metadata"]["resourceVersion"] if state.configmap else None, True)
            except (Refused, K8sError) as error:
                return outcome.fail(error.msg, refused=getattr(error, "code", None))
        result["plan"] = {"from": from_info, "to": to_info, "apply_to": params["apply_to"],
                          "dry_run": "built, tested and probed the target bundle; ConfigMap apply accepted by a "
                                     "server-side dry run; nothing was applied"}
        return outcome

    previous = None
    path = bundle_file(params)
    try:
        if path and result["applied"]["bundle_server"]:
            previous = open(path, "rb").read() if os.path.isfile(path) else None
            if sha256_hex(previous or b"") != (state.bundle_sha256 or sha256_hex(b"")):
                raise Refused("the bundle on the bundle server changed while the rollback was being prepared; nothing "
                              "was applied: re-run", "conflict")
            write_atomically(path, bundle)
            published(result)
        if not cm_done:
            applied = apply_configmap(api, params["configmap_namespace"], params["configmap_name"], data, annotations,
                                      state.configmap["metadata"]["resourceVersion"] if state.configmap else None,
                                      False)
            result["configmap_resource_version"] = applied["metadata"]["resourceVersion"]
            published(result)
            restart_pep(api, params, to_sha, result, outcome)
    except (Refused, K8sError, OSError) as error:
        restore(path, previous, result)
        return outcome.fail("policy rollback to %s failed: %s" % (to_sha[:12], getattr(error, "msg", error)),
                            refused=getattr(error, "code", None))
    if outcome.failed_msg:
        return outcome
    verify_pep(params, probes, to_sha, result, outcome, (path, previous))
    return outcome


def published(result):
    """The moment the target was first put in place (bundle on the bundle server, else the ConfigMap stored)."""
    if not result.get("published_at"):
        result["published_at"] = utc_stamp_micro()
        result["receipt_fields"]["details"]["published_at"] = result["published_at"]


def restart_pep(api, params, to_sha, result, outcome):
    name, namespace = params.get("pep_deployment"), params["configmap_namespace"]
    if not name:
        return
    deployment = _workload.read_workload(api, "Deployment", namespace, name)
    if not mounts_configmap(deployment, params["configmap_name"]):
        result["rollback_warnings"].append("deployment %s/%s does not mount configmap %s: not restarted"
                                           % (namespace, name, params["configmap_name"]))
        return
    patched, _when = _workload.restart(api, "Deployment", namespace, name, {REVISION_ANNOTATION: to_sha},
                                       workload=deployment)
    result["applied"]["pep_restarted"] = True
    if params["wait"]:
        waited = _workload.wait(api, "Deployment", namespace, name, params["wait_timeout"],
                                patch_time(patched, FIELD_MANAGER), patched["metadata"].get("uid"))
        result["pep_rollout"] = waited.as_dict()
        if not waited.done:
            outcome.fail("the policy ConfigMap was applied but the PEP deployment %s/%s did not roll out (%s): %s"
                         % (namespace, name, waited.state, waited.reason))


def restore(path, previous, result):
    if path and previous is not None and result["applied"].get("bundle_server"):
        write_atomically(path, previous)
        result["bundle_restored"] = True


def verify_pep(params, probes, to_sha, result, outcome, published):
    """Wait until the running OPA reports the target revision, then ask it every probe."""
    if not params.get("opa_url"):
        return
    started = time.monotonic()
    deadline = started + (params["wait_timeout"] if params["wait"] else 0)
    watch_revision = "bundle_server" in params["apply_to"]
    revision, activated_at, error = pep_revision(params["opa_url"], params["bundle_name"])
    while watch_revision and revision != to_sha and time.monotonic() < deadline:
        time.sleep(backoff_interval(time.monotonic() - started))
        revision, activated_at, error = pep_revision(params["opa_url"], params["bundle_name"])
    result["pep"] = {"revision": revision, "activated_at": activated_at if revision == to_sha else None,
                     "verified": False}
    if revision == to_sha and activated_at:
        result["activated_at"] = activated_at
        result["receipt_fields"]["details"]["activated_at"] = activated_at
    if watch_revision and revision != to_sha:
        if published:
            restore(published[0], published[1], result)
        outcome.fail("the running OPA at %s still reports revision %s for bundle %s, not %s, after %ss (%s); it keeps "
                     "the previous bundle active%s" % (
                         params["opa_url"], revision, params["bundle_name"], to_sha,
                         params["wait_timeout"], error or "the bundle was not activated",
                         ", and the previous bundle was put back on the bundle server" if result.get("bundle_restored")
                         else ""))
        return
    answers = pep_probes(params["opa_url"], probes)
    result["probes"] = [p for p in result["probes"] if p["where"] != "running PEP"] + answers
    wrong = [p for p in answers if not p["passed"]]
    if wrong:
        outcome.fail("the running OPA answers %d probe(s) differently from the target bundle: %s" % (
            len(wrong), "; ".join("%s: expected %s, got %s" % (p["name"], json.dumps(p["expect"]), json.dumps(p["got"]))
                                  for p in wrong)))
        return
    result["pep"]["verified"] = True


def argument_spec():
    return _argspec.compose(dict(
        repo=dict(type="path", required=True),
        policy_dir=dict(type="str", default="policies"),
        target_ref=dict(type="str"),
        bundle_name=dict(type="str", required=True),
        roots=dict(type="list", elements="str", default=[]),
        opa_path=dict(type="path"),
        apply_to=dict(type="list", elements="str", choices=["bundle_server", "configmap"], default=["bundle_server"]),
        bundle_server_dir=dict(type="path"),
        opa_url=dict(type="str"),
        configmap_name=dict(type="str"),
        configmap_namespace=dict(type="str"),
        pep_deployment=dict(type="str"),
        probes=dict(type="list", elements="dict", default=[], options=dict(
            name=dict(type="str"),
            query=dict(type="str", required=True),
            input=dict(type="raw"),
            expect=dict(type="raw"),
        )),
        coverage_threshold=dict(type="float", default=0),
        signing_key=dict(type="path"),
        signing_alg=dict(type="str", default="RS256"),
        policy_name=dict(type="str"),
        security_review=dict(type="str"),
        affected_users=dict(type="int"),
        expected_binding=dict(type="dict"),
    ), _argspec.K8S_AUTH, _argspec.RUNBOOK_CONTEXT, _argspec.WAIT)


def find_opa(module):
    given = module.params.get("opa_path")
    if given:
        return given if os.path.isfile(given) and os.access(given, os.X_OK) else None
    return module.get_bin_path("opa")


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    workdir = tempfile.mkdtemp(prefix="governed-policy-")
    try:
        api = None
        if "configmap" in module.params["apply_to"]:
            require_k8s(module)
            api = KubeRest(build_api_client(module.params))
        outcome = execute(module.params, find_opa(module), api, workdir, module.check_mode, module._diff)
    except Exception as exc:  # pylint: disable=broad-except  # anything unforeseen still ends in fail_json
        shutil.rmtree(workdir, ignore_errors=True)
        fail_from_exception(module, exc, changed=False)
    shutil.rmtree(workdir, ignore_errors=True)
    for warning in outcome.result["rollback_warnings"]:
        module.warn(warning)
    if outcome.failed_msg:
        module.fail_json(msg=outcome.failed_msg, **outcome.result)
    module.exit_json(**outcome.result)


if __name__ == "__main__":
    main()
