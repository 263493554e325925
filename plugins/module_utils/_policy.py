# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pure core of the policy rollback (policy_bundle_revert): which commit to go back to, what ``opa test`` said,
whether the tests still exercise an allow and a deny for the rolled-back rules (the KFM rule), whether a probe
answered as expected, the per-file policy diff, and which revision a PEP reports. Plain data in, plain data out:
git, opa and HTTP are the module's business."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import difflib
import json
import re

from ansible_collections.governed.rollback.plugins.module_utils._common import Refused, RollbackError, utc_stamp_micro
from ansible_collections.governed.rollback.plugins.module_utils._snapshot import parse_time

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
PACKAGE_RE = re.compile(r"^\s*package\s+([A-Za-z_][A-Za-z0-9_.]*)\s*$", re.M)
IMPORT_RE = re.compile(r"^\s*import\s+data\.([A-Za-z_][A-Za-z0-9_.]*?)(?:\s+as\s+([A-Za-z_][A-Za-z0-9_]*))?\s*$", re.M)
DEFAULT_RULE_RE = re.compile(r"^\s*default\s+([A-Za-z_][A-Za-z0-9_]*)\s*(?::=|=)\s*(true|false)\s*$", re.M)
TEST_RULE_RE = re.compile(r"^(test_[A-Za-z0-9_]*)\b[^\n]*\{\s*$", re.M)
DATA_PATH_RE = re.compile(r"^data(\.[A-Za-z_][A-Za-z0-9_]*)+$")
TEST_FILE_SUFFIX = "_test.rego"


# --------------------------------------------------------------------------- which commit

def policy_history(log_output):
    """The commits that touched the policy directory, newest first, from ``git log --format=%H -- DIR``."""
    return [line.strip() for line in (log_output or "").splitlines() if SHA_RE.match(line.strip())]


def choose_target(history, directory, target_sha=None):
    """The commit to roll back to: the given one, else the runbook's ``HEAD~1`` for the policy directory (the
    previous commit that touched it). Refuses a repository without policy history or with only one version."""
    if not history:
        raise Refused("the repository has no commit that touches %s: there is no policy history to roll back to"
                      % directory, "no_policy_history")
    if target_sha:
        return target_sha, "target_ref"
    if len(history) < 2:
        raise Refused("%s has a single version (%s) in git: there is no earlier version to roll back to"
                      % (directory, history[0][:12]), "no_previous_version")
    return history[1], "previous commit that touched %s (the runbook's HEAD~1)" % directory


# --------------------------------------------------------------------------- opa test

def parse_test_report(text):
    """Summary of ``opa test --format json -v``: counts, the failing tests (name, package, location, error)."""
    try:
        results = json.loads(text or "[]")
    except ValueError:
        raise Refused("opa test did not print JSON: %s" % (text or "")[:500], "tests_unreadable")
    if isinstance(results, dict):  # no test at all prints {} in some versions
        results = []
    summary = {"total": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": [], "tests": []}
    for result in results:
        name = "%s.%s" % (str(result.get("package", "")).replace("data.", "", 1), result.get("name"))
        summary["total"] += 1
        if result.get("skip"):
            summary["skipped"] += 1
            state = "skipped"
        elif result.get("error"):
            summary["errors"] += 1
            state = "error"
        elif result.get("fail"):
            summary["failed"] += 1
            state = "failed"
        else:
            summary["passed"] += 1
            state = "passed"
        summary["tests"].append({"name": name, "result": state})
        if state in ("failed", "error"):
            location = result.get("location") or {}
            summary["failures"].append({
                "name": name, "result": state,
                "location": "%s:%s" % (location.get("file", "?"), location.get("row", "?")),
                "error": (result.get("error") or {}).get("message") if isinstance(result.get("error"), dict)
                else result.get("error")})
    return summary


def parse_coverage(text):
    """The coverage percentage from ``opa test -c --format json``."""
    try:
        return round(float(json.loads(text).get("coverage", 0.0)), 2)
    except (ValueError, TypeError, AttributeError):
        raise Refused("opa test -c did not print a coverage report: %s" % (text or "")[:500], "tests_unreadable")


def check_tests(summary, coverage=None, threshold=0.0):
    """Refuse a target whose tests fail, or that has no test, or whose coverage is under the threshold."""
    if summary["failed"] or summary["errors"]:
        raise Refused("the target's policy tests fail (%d failed, %d errors of %d): %s; nothing was applied"
                      % (summary["failed"], summary["errors"], summary["total"],
                         "; ".join("%s (%s)" % (f["name"], f["location"]) for f in summary["failures"])),
                      "tests_failed", tests=summary)
    if summary["passed"] == 0:
        raise Refused("the target has no passing policy test (opa test found %d): a policy rollback needs tests that "
                      "cover allow and deny; nothing was applied" % summary["total"], "no_tests", tests=summary)
    if threshold and (coverage is None or coverage < threshold):
        raise Refused("the target's policy test coverage %s%% is below the threshold %s%%; nothing was applied"
                      % (coverage, threshold), "coverage_below_threshold", tests=summary)


# --------------------------------------------------------------------------- the KFM rule: allow AND deny

def packages(source):
    return PACKAGE_RE.findall(source or "")


def decision_rules(sources):
    """``{package: [rule, ...]}``: the boolean decision rules (those with a ``default NAME := true|false``) of the
    non-test modules in ``sources`` (``{path: text}``)."""
    found = {}
    for path, text in sorted(sources.items()):
        if not path.endswith(".rego") or path.endswith(TEST_FILE_SUFFIX):
            continue
        for package in packages(text):
            for rule in DEFAULT_RULE_RE.findall(text):
                names = found.setdefault(package, [])
                if rule[0] not in names:
                    names.append(rule[0])
    return found


def rolled_back_rules(current_sources, target_sources):
    """The decision rules of the target modules that differ from the current ones (all of them when the current
    sources are unknown), as ``[(package, rule)]``."""
    changed = {}
    for path, text in target_sources.items():
        if current_sources is None or current_sources.get(path) != text:
            changed[path] = text
    if current_sources is not None:
        # A module deleted by the rollback changes its package's decisions too.
        for path in current_sources:
            if path not in target_sources and path.endswith(".rego") and not path.endswith(TEST_FILE_SUFFIX):
                for package in packages(current_sources[path]):
                    changed.update((p, t) for p, t in target_sources.items() if package in packages(t))
    rules = decision_rules(changed)
    return sorted((package, rule) for package, names in rules.items() for rule in names)


def _test_bodies(text):
    """``[(test name, body lines)]`` of the ``test_*`` rules of one module (top-level, brace-delimited)."""
    bodies = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        match = TEST_RULE_RE.match(lines[index])
        if not match:
            index += 1
            continue
        depth = lines[index].count("{") - lines[index].count("}")
        body = []
        index += 1
        while index < len(lines) and depth > 0:
            depth += lines[index].count("{") - lines[index].count("}")
            body.append(lines[index])
            index += 1
        bodies.append((match.group(1), body))
    return bodies


def exercised(test_sources, package, rule):
    """Which decisions of ``package.rule`` the tests assert: ``{"allow": [tests], "deny": [tests]}``.

    A body line ``<ref>.rule ...`` asserts an allow, ``not <ref>.rule ...`` a deny, where ``<ref>`` is
    ``data.<package>``, an import alias of it, or nothing (a test in the same package)."""
    found = {"allow": [], "deny": []}
    for path, text in sorted(test_sources.items()):
        if not path.endswith(".rego"):
            continue
        refs = ["data." + package]
        for imported, alias in IMPORT_RE.findall(text):
            if imported == package:
                refs.append(alias or package.split(".")[-1])
        if package in packages(text):
            refs.append("")
        pattern = re.compile(r"^\s*(not\s+)?(?:%s)%s\b(?!\s*(?::=|=[^=]))" % (
            "|".join(re.escape(ref + ".") if ref else "" for ref in refs), re.escape(rule)))
        for name, body in _test_bodies(text):
            for line in body:
                match = pattern.match(line)
                if match:
                    found["deny" if match.group(1) else "allow"].append(name)
                    break
    return found


def allow_deny_gaps(rules, test_sources):
    """``[{rule, missing, allow_tests, deny_tests}]`` for every rolled-back rule whose tests do not exercise both an
    allow and a deny decision."""
    gaps = []
    for package, rule in rules:
        found = exercised(test_sources, package, rule)
        missing = [kind for kind in ("allow", "deny") if not found[kind]]
        if missing:
            gaps.append({"rule": "data.%s.%s" % (package, rule), "missing": missing,
                         "allow_tests": found["allow"], "deny_tests": found["deny"]})
    return gaps


def check_allow_deny(rules, test_sources):
    gaps = allow_deny_gaps(rules, test_sources)
    if gaps:
        raise Refused("the target's policy tests no longer exercise both an allow and a deny decision of %s (no %s "
                      "test); nothing was applied" % (
                          ", ".join(gap["rule"] for gap in gaps),
                          " / ".join("%s %s" % (gap["rule"], " or ".join(gap["missing"])) for gap in gaps)),
                      "tests_miss_allow_deny", allow_deny_gaps=gaps)
    return [{"rule": "data.%s.%s" % r, "allow_tests": exercised(test_sources, *r)["allow"],
             "deny_tests": exercised(test_sources, *r)["deny"]} for r in rules]


# --------------------------------------------------------------------------- probes

def normalize_probes(probes):
    """Check each probe (``query`` a ``data.`` path, ``input``, ``expect``; ``name`` optional)."""
    normalized = []
    for index, probe in enumerate(probes or []):
        if not isinstance(probe, dict):
            raise Refused("probes[%d] is not a dict with query, input and expect" % index, "bad_probe")
        unknown = sorted(set(probe) - {"name", "query", "input", "expect"})
        if unknown:
            raise Refused("probes[%d] has unknown key(s) %s; a probe has name, query, input and expect"
                          % (index, ", ".join(unknown)), "bad_probe")
        query = str(probe.get("query") or "")
        if not DATA_PATH_RE.match(query):
            raise Refused("probes[%d].query %r is not a data path such as data.aureus.pii.allow (a probe must be "
                          "askable of the running PEP's Data API too)" % (index, query), "bad_probe")
        normalized.append({"name": probe.get("name") or "probe %d" % (index + 1), "query": query,
                           "input": probe.get("input"), "expect": probe.get("expect")})
    return normalized


def data_api_path(query):
    """``data.a.b.c`` -> ``/v1/data/a/b/c`` (the Data API path of a probe)."""
    return "/v1/data/" + "/".join(query.split(".")[1:])


def eval_value(text):
    """The value of the first expression of ``opa eval --format json``; None when undefined."""
    document = json.loads(text or "{}")
    results = document.get("result") or []
    if not results:
        return None
    expressions = results[0].get("expressions") or []
    return expressions[0].get("value") if expressions else None


def same_value(expect, got):
    """JSON equality (1 == 1.0, key order irrelevant, true is not 1)."""
    return _canon(expect) == _canon(got)


def _canon(value):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, (int, float)):
        return ("number", float(value))
    if isinstance(value, dict):
        return ("object", tuple(sorted((k, _canon(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return ("array", tuple(_canon(v) for v in value))
    return ("other", repr(value))


def probe_result(probe, got, where):
    return {"name": probe["name"], "query": probe["query"], "expect": probe["expect"], "got": got,
            "passed": same_value(probe["expect"], got), "where": where}


def check_probes(results, where):
    wrong = [r for r in results if not r["passed"]]
    if wrong:
        raise Refused("%d probe(s) disagree with %s: %s; nothing was applied" % (
            len(wrong), where, "; ".join("%s: %s expected %s, got %s" % (
                r["name"], r["query"], json.dumps(r["expect"]), "undefined" if r["got"] is None
                else json.dumps(r["got"])) for r in wrong)), "probe_failed", probes=results)


# --------------------------------------------------------------------------- revisions, versions, diff

def status_bundle(status, bundle_name):
    """The entry of ``bundle_name`` in OPA's ``GET /v1/status`` (or ``data.system.bundles``) answer ({} if none)."""
    result = (status or {}).get("result", status) or {}
    bundles = result.get("bundles", result) if isinstance(result, dict) else {}
    return (bundles or {}).get(bundle_name) or {}


def status_revision(status, bundle_name):
    """The active revision of ``bundle_name`` in OPA's ``GET /v1/status`` (or ``data.system.bundles``) answer."""
    bundle = status_bundle(status, bundle_name)
    return bundle.get("active_revision") or (bundle.get("manifest") or {}).get("revision")


def status_activation(status, bundle_name):
    """When OPA activated the bundle it runs (``last_successful_activation`` of the status API, by OPA's clock,
    nanoseconds) as an RFC 3339 UTC stamp at microsecond precision; None when it does not say (the
    ``data.system.bundles`` answer, Go's zero time before the first activation, an unreadable value)."""
    stamp = status_bundle(status, bundle_name).get("last_successful_activation")
    try:
        moment = parse_time(stamp, "last_successful_activation") if stamp else None
    except RollbackError:
        return None
    return utc_stamp_micro(moment) if moment and moment.year > 1 else None


def manifest_version(files):
    """``(policy_name, version)`` from a ``policy-manifest.json`` among ``files`` (``{path: text}``), else Nones."""
    for path, text in sorted(files.items()):
        if path.rsplit("/", 1)[-1] == "policy-manifest.json":
            try:
                document = json.loads(text)
            except ValueError:
                continue
            return document.get("policy_name"), document.get("version")
    return None, None


def version_label(files, tags, sha):
    """A human version: the policy manifest's version, else a tag, else the short SHA."""
    version = manifest_version(files or {})[1]
    return version or (sorted(tags)[0] if tags else (sha or "")[:12] or None)


def deployable(files):
    """The files a ConfigMap carries: everything but tests and dotfiles, by base name."""
    data = {}
    for path, text in sorted(files.items()):
        base = path.rsplit("/", 1)[-1]
        if base.endswith(TEST_FILE_SUFFIX) or base.startswith("."):
            continue
        data[base] = text
    return data


def match_revision(data, candidates):
    """The first commit (newest first) whose deployable files equal ``data``; ``candidates`` is
    ``[(sha, files)]``."""
    for sha, files in candidates:
        if deployable(files) == data:
            return sha
    return None


def policy_diff(current, target, from_label="current", to_label="target"):
    """Per-file unified diff (``[{file, status, diff}]``) from the current to the target policy files."""
    entries = []
    current = current or {}
    for path in sorted(set(current) | set(target)):
        before, after = current.get(path), target.get(path)
        if before == after:
            continue
        status = "added" if before is None else "removed" if after is None else "modified"
        text = "".join(difflib.unified_diff((before or "").splitlines(True), (after or "").splitlines(True),
                                            "%s/%s" % (from_label, path), "%s/%s" % (to_label, path)))
        entries.append({"file": path, "status": status, "diff": text})
    return entries


def derive_roots(files):
    """Bundle roots from the non-test modules' packages: their first path segment, sorted."""
    roots = set()
    for path, text in files.items():
        if path.endswith(".rego") and not path.endswith(TEST_FILE_SUFFIX):
            roots.update(package.split(".")[0] for package in packages(text))
    return sorted(roots)
