# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""I/O adapter of rollback_verify: Prometheus queries, HTTP probes, decision and workload logs (JSON lines).

It measures and records the raw answers; every judgement is the pure core's (``_analysis``). Nothing here raises on
a bad answer: an unreachable Prometheus, a probe that times out, a log that is not there become errors and
inconclusive results, so the checklist fails closed instead of crashing.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os
import threading
import time
import uuid
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode

from ansible.module_utils.urls import open_url
from ansible_collections.governed.rollback.plugins.module_utils import _analysis as an
from ansible_collections.governed.rollback.plugins.module_utils._common import RollbackError

try:
    import jmespath
    HAS_JMESPATH = True
    JMESPATH_ERROR = None
except ImportError as _exc:  # reported by the module with missing_required_lib
    HAS_JMESPATH = False
    JMESPATH_ERROR = _exc

LOG_TAIL_BYTES = 16 << 20  # logs are read from their end: at most this much
ASSERTION_KINDS = ("exists", "not_exists", "equals", "matches", "in", "keys_in")


def rfc3339(moment):
    return datetime.datetime.fromtimestamp(moment, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text, what="time"):
    """Unix seconds from an RFC 3339 time (Z or an offset) or a number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    value = str(text or "").strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise RollbackError("%s must be an RFC 3339 time such as 2026-01-15T10:30:00Z, got %r" % (what, text))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


class Http(object):
    def __init__(self, params):
        self.timeout = params.get("request_timeout") or 10
        self.validate_certs = params.get("validate_certs", True)
        self.ca_path = params.get("ca_path")

    def request(self, url, method="GET", headers=None, body=None, follow_redirects="none"):
        """(status, decoded JSON or text or None, error text or None); never raises for HTTP or transport errors.
        Probes see the answer itself (no redirect followed); health and smoke checks follow safe redirects, as the
        uri module does."""
        data = None
        headers = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers.setdefault("Content-Type", "application/json")
        try:
            response = open_url(url, method=method, data=data, headers=headers, timeout=self.timeout,
                                validate_certs=self.validate_certs, ca_path=self.ca_path, follow_redirects=follow_redirects)
            status, raw = response.getcode(), response.read()
        except HTTPError as error:
            status, raw = error.code, error.read() if hasattr(error, "read") else b""
        except (URLError, OSError, ValueError) as error:
            return None, None, "%s %s: %s" % (method, url, getattr(error, "reason", None) or error)
        try:
            return status, json.loads(raw.decode("utf-8")) if raw else None, None
        except ValueError:
            return status, raw.decode("utf-8", "replace")[:2000], None


class Prometheus(object):
    def __init__(self, http, url, token=None):
        self.http, self.url, self.token = http, (url or "").rstrip("/"), token

    def query(self, promql, at=None):
        """(Sample, raw answer) of an instant query (at ``at`` unix seconds, default now)."""
        when = time.time() if at is None else at
        stamp = rfc3339(time.time())
        if not self.url:
            return an.Sample(error="no Prometheus URL configured", at=stamp), None
        headers = {"Authorization": "Bearer " + self.token} if self.token else {}
        status, body, error = self.http.request(
            "%s/api/v1/query?%s" % (self.url, urlencode({"query": promql, "time": "%.3f" % when})), headers=headers)
        if error:
            return an.Sample(error="Prometheus unreachable: " + error, at=stamp), {"error": error}
        if not isinstance(body, dict):
            return an.Sample(error="Prometheus answered %s without JSON" % status, at=stamp), {"status": status}
        sample = an.sample_from_prometheus(body, at=stamp)
        return sample, body


def run_metric(prom, metric, baseline_at, deadline_sleep=time.sleep):
    """Measure one metric to its end (Argo's loop); returns (summary for the receipt, raw answers)."""
    raw = {"name": metric["name"], "query": metric["query"], "baseline": None, "measurements": []}
    baseline = None
    if baseline_at is not None:
        sample, answer = prom.query(metric["query"], baseline_at)
        raw["baseline"] = {"at": rfc3339(baseline_at), "answer": answer}
        if not sample.error and sample.series == 1 and sample.value is not None:
            baseline = an.finite_or_none(sample.value)
    if metric["initial_delay_seconds"]:
        deadline_sleep(metric["initial_delay_seconds"])
    phases, measurements = [], []
    result, reason = None, "running"
    while result is None:
        sample, answer = prom.query(metric["query"])
        phase, message = an.judge_measurement(sample, metric["_success"], metric["_failure"], baseline)
        phases.append(phase)
        measurements.append({"at": sample.at, "value": sample.value if sample.series == 1 else None,
                             "phase": phase, "message": message})
        raw["measurements"].append({"at": sample.at, "phase": phase, "message": message, "answer": answer})
        result, reason = an.analysis_phase(phases, metric["count"], metric["failure_limit"],
                                           metric["inconclusive_limit"], metric["consecutive_error_limit"])
        if result is None:
            deadline_sleep(metric["interval_seconds"])
    return an.summarize_metric(metric, measurements, result, reason, baseline), raw


def run_metrics(prom, metrics, baseline_at):
    """Every metric at once, each in its own thread (the analysis takes as long as the longest metric)."""
    summaries, raws = [None] * len(metrics), [None] * len(metrics)

    def one(index):
        summaries[index], raws[index] = run_metric(prom, metrics[index], baseline_at)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(metrics))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return summaries, raws


def _expected_status(value, default=(200,)):
    if value is None:
        return list(default)
    values = value if isinstance(value, list) else [value]
    try:
        return [int(v) for v in values]
    except (TypeError, ValueError):
        raise RollbackError("status must be an HTTP status or a list of them, got %r" % (value,))


def check_assertions(spec_name, assertions, body):
    """[(description, ok)] of a contract's JMESPath assertions on a JSON body."""
    results = []
    for index, assertion in enumerate(assertions or []):
        if not isinstance(assertion, dict) or not isinstance(assertion.get("path"), str):
            raise RollbackError("contract %s assertions[%d] needs a JMESPath 'path' and one of %s"
                                % (spec_name, index, ", ".join(ASSERTION_KINDS)))
        kinds = [k for k in ASSERTION_KINDS if k in assertion]
        if len(kinds) != 1:
            raise RollbackError("contract %s assertions[%d] needs exactly one of %s"
                                % (spec_name, index, ", ".join(ASSERTION_KINDS)))
        kind = kinds[0]
        try:
            actual = jmespath.search(assertion["path"], body) if body is not None else None
        except jmespath.exceptions.JMESPathError as error:
            raise RollbackError("contract %s assertions[%d]: %r is not JMESPath: %s"
                                % (spec_name, index, assertion["path"], error))
        if kind in ("exists", "not_exists"):
            want = assertion[kind]
            kind = kind if want in (True, None, "true", "yes") else ("not_exists" if kind == "exists" else "exists")
            ok = an.judge_assertion(kind, actual)
            description = "%s %s" % (assertion["path"], "exists" if kind == "exists" else "is absent")
        else:
            ok = an.judge_assertion(kind, actual, assertion[kind])
            description = "%s %s %r" % (assertion["path"], kind, assertion[kind])
        results.append((description if ok else "%s (got %r)" % (description, actual), ok))
    return results


def run_contracts(http, contracts):
    entries, raws = [], []
    for index, spec in enumerate(contracts or []):
        name = spec.get("name") or spec.get("url") or "contract %d" % index
        if not spec.get("url"):
            raise RollbackError("contract %s needs a url" % name)
        status, body, error = http.request(spec["url"], spec.get("method") or "GET", spec.get("headers"),
                                           spec.get("body"))
        raws.append({"name": name, "url": spec["url"], "status": status, "body": body, "error": error})
        if error:
            entries.append({"name": name, "url": spec["url"], "status": 0, "result": an.INCONCLUSIVE,
                            "failed": [error]})
            continue
        result, failed = an.judge_contract(status, _expected_status(spec.get("status")),
                                           check_assertions(name, spec.get("assertions"), body))
        entries.append({"name": name, "url": spec["url"], "status": status, "result": result, "failed": failed})
    return entries, raws


# The runbooks' health check: the endpoint answers 2xx (the codes a health endpoint answers with a body or none).
HEALTH_STATUS = (200, 201, 202, 203, 204)
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


def _check_until_expected(http, url, method, body, expected, retries, delay, sleep):
    """One health or smoke check: the request repeated up to ``retries`` more times, ``delay`` seconds apart, until
    the answer has one of the ``expected`` statuses (an Ansible task's until/retries/delay)."""
    attempts = 0
    while True:
        attempts += 1
        status, _body, error = http.request(url, method, None, body, follow_redirects="safe")
        if error is None and status in expected:
            return {"url": url, "method": method, "status": status, "attempts": attempts, "result": PASSED,
                    "error": None}
        if attempts > retries:
            return {"url": url, "method": method, "status": status, "attempts": attempts, "result": FAILED,
                    "error": error or "status %s, expected %s" % (status, ", ".join(str(s) for s in expected))}
        sleep(delay)


def run_http_checks(http, health_url=None, smoke=None, retries=0, delay=1.0, sleep=time.sleep):
    """The runbooks' health and smoke checks, in that order: the health endpoint answers 2xx (200-204), and each
    smoke URL (C(url), C(method) GET, C(body) sent as JSON, C(status) 200 or a list) answers as expected; each one
    retried up to ``retries`` times ``delay`` seconds apart. Returns {health_check, smoke_tests: passed, failed or
    skipped; health: the check or None; smoke: [checks]}."""
    retries, delay = max(0, int(retries or 0)), max(0.0, float(delay or 0))
    smoke = list(smoke or [])
    for index, spec in enumerate(smoke):
        if not isinstance(spec, dict) or not spec.get("url"):
            raise RollbackError("smoke[%d] needs a url (a mapping with url, and optionally method, body, status); "
                                "nothing was checked" % index)
    expected = [_expected_status(spec.get("status")) for spec in smoke]
    health = None
    if health_url:
        health = _check_until_expected(http, health_url, "GET", None, list(HEALTH_STATUS), retries, delay, sleep)
    checks = [_check_until_expected(http, spec["url"], (spec.get("method") or "GET").upper(), spec.get("body"),
                                    statuses, retries, delay, sleep) for spec, statuses in zip(smoke, expected)]
    return {
        "health_check": SKIPPED if health is None else health["result"],
        "smoke_tests": SKIPPED if not checks else (FAILED if any(c["result"] == FAILED for c in checks) else PASSED),
        "health": health,
        "smoke": checks,
    }


def http_problems(summary):
    """One line per failed group of run_http_checks' summary, each failed check with its method, URL and error:
    ``smoke_tests failed (GET https://...: status 503, expected 200)``."""
    groups = (("health_check", [summary["health"]] if summary["health"] else []), ("smoke_tests", summary["smoke"]))
    lines = []
    for name, checks in groups:
        if summary[name] == FAILED:
            failed = ["%s %s: %s" % (c["method"], c["url"], c["error"]) for c in checks if c["result"] == FAILED]
            lines.append("%s failed (%s)" % (name, "; ".join(failed)))
    return lines


def read_log_lines(path):
    """The JSON objects of the last LOG_TAIL_BYTES of a JSON-lines file; other lines are skipped."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - LOG_TAIL_BYTES))
        data = handle.read()
    lines = data.split(b"\n")
    if size > LOG_TAIL_BYTES:
        lines = lines[1:]  # the first line is cut
    for line in lines:
        line = line.strip()
        if not line.startswith(b"{"):
            continue
        try:
            value = json.loads(line.decode("utf-8", "replace"))
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value


def run_policy_invariants(http, spec, sleep=time.sleep):
    """Probe every endpoint with its own request id, find each in the decision log; restricted vs missing."""
    header = spec.get("request_id_header") or "X-Request-Id"
    id_key, decision_key = spec.get("request_id_key") or "request_id", spec.get("decision_key") or "decision_id"
    log_path = spec.get("decision_log")
    if not log_path:
        raise RollbackError("policy_invariants needs decision_log, the JSON-lines decision (audit) log of the PEP")
    probes, raws = [], []
    for index, endpoint in enumerate(spec.get("endpoints") or []):
        if isinstance(endpoint, str):
            endpoint = {"url": endpoint}
        if not endpoint.get("url"):
            raise RollbackError("policy_invariants.endpoints[%d] needs a url" % index)
        request_id = "verify-" + uuid.uuid4().hex
        headers = dict(endpoint.get("headers") or {})
        headers[header] = request_id
        status, body, error = http.request(endpoint["url"], endpoint.get("method") or "GET", headers,
                                           endpoint.get("body"))
        probes.append({"endpoint": endpoint.get("name") or endpoint["url"], "request_id": request_id,
                       "status": status, "error": error})
        raws.append({"endpoint": endpoint["url"], "request_id": request_id, "status": status, "body": body,
                     "error": error})
    existence = spec.get("existence")
    if existence:
        for role in ("restricted", "missing"):
            target = existence.get(role)
            if not isinstance(target, dict) or not target.get("url"):
                raise RollbackError("policy_invariants.existence.%s needs a url" % role)
    decisions = {}
    wanted = set(p["request_id"] for p in probes if not p["error"])
    deadline = time.monotonic() + float(spec.get("log_wait") or 5)
    while True:
        try:
            for line in read_log_lines(log_path):
                if line.get(id_key) in wanted:
                    decisions[line[id_key]] = line.get(decision_key)
        except (IOError, OSError) as error:
            raws.append({"decision_log": log_path, "error": str(error)})
            break
        if wanted <= set(decisions) or time.monotonic() > deadline:
            break
        sleep(0.25)
    entries = [{"endpoint": r["endpoint"], "result": r["result"], "decision_id": r["decision_id"],
                "reason": r["reason"]} for r in an.judge_decisions(probes, decisions)]
    if existence:
        answers = {}
        for role in ("restricted", "missing"):
            target = existence[role]
            status, body, error = http.request(target["url"], target.get("method") or "GET", target.get("headers"),
                                               target.get("body"))
            answers[role] = {"status": status, "body": body, "error": error}
            raws.append({"existence": role, "url": target["url"], "status": status, "body": body, "error": error})
        if answers["restricted"]["error"] or answers["missing"]["error"]:
            result, failed = an.INCONCLUSIVE, [answers["restricted"]["error"] or answers["missing"]["error"]]
        else:
            result, failed = an.judge_existence(answers["restricted"], answers["missing"])
        entries.append({"endpoint": "restricted %s vs missing %s" % (existence["restricted"]["url"],
                                                                     existence["missing"]["url"]),
                        "result": result, "decision_id": None,
                        "reason": "; ".join(failed) if failed else "indistinguishable (status, body shape, "
                                                                   "error_code, message)"})
    return entries, {"probes": raws, "decisions": decisions}


def run_logs(spec, since, now=None):
    """Error-level lines in the window before ``since`` (the rollback's start) and in the window up to now."""
    now = time.time() if now is None else now
    path = spec.get("path")
    if not path:
        raise RollbackError("logs needs path, the workload's JSON-lines log")
    window = an.parse_duration(spec.get("window") or "60s", "logs.window")
    time_key, level_key = spec.get("time_key") or "ts", spec.get("level_key") or "level"
    levels = set(str(v).lower() for v in (spec.get("error_levels") or ["error", "fatal", "critical"]))
    after_start = max(since, now - window)
    before, after = 0, 0
    try:
        for line in read_log_lines(path):
            if str(line.get(level_key, "")).lower() not in levels:
                continue
            try:
                moment = parse_rfc3339(line.get(time_key), time_key)
            except RollbackError:
                continue
            if since - window <= moment < since:
                before += 1
            elif after_start <= moment <= now:
                after += 1
    except (IOError, OSError) as error:
        return {"result": an.INCONCLUSIVE, "errors_before": 0, "errors_after": 0}, {"error": str(error)}
    result = an.judge_logs(before, after, float(spec.get("max_ratio", 1.0)), int(spec.get("max_increase", 0)))
    return ({"result": result, "errors_before": before, "errors_after": after},
            {"path": path, "before": [rfc3339(since - window), rfc3339(since)],
             "after": [rfc3339(after_start), rfc3339(now)], "errors_before": before, "errors_after": after})
