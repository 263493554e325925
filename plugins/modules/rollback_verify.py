#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: rollback_verify
short_description: Measure a rollback's verification checklist - metric analysis, contracts, policy invariants, logs
version_added: 0.1.0
author: governed.rollback maintainers (@governed)
description:
  - The runbooks' verification checklist after a rollback, measured rather than eyeballed - "5xx rate back to
    baseline", "P95 latency back to baseline", "metrics normal", "logs clean", the KFM trust-membrane invariants
    (no endpoint bypasses policy evaluation, no existence leaks, the error model and safety fields).
  - B(Metric analysis), modelled on Argo Rollouts' AnalysisTemplate - each of O(metrics) is a PromQL query that must
    return one number, measured O(metrics[].count) times every O(metrics[].interval) (after
    O(metrics[].initial_delay)) and judged with O(metrics[].success_condition) / O(metrics[].failure_condition).
    A measurement is failed, successful, inconclusive (no data, NaN, several series, neither condition holds, or a
    condition on C(baseline) without one) or an error (Prometheus unreachable or answering an error). More failed
    measurements than O(metrics[].failure_limit) fail the metric; more inconclusive than
    O(metrics[].inconclusive_limit), or more consecutive errors than O(metrics[].consecutive_error_limit), make it
    inconclusive - never a pass. Metrics are measured concurrently.
  - B(Baseline) - with O(baseline_at) (a time before the incident) each query is also evaluated at that time; its
    value is the metric's C(baseline), which conditions can compare with (C(result <= baseline * 1.1 + 0.01)), so
    "back to baseline" is a number.
  - Conditions are small expressions over C(result) and C(baseline) - numbers, C(< <= > >= == !=), C(and or not),
    C(+ - * /), C(abs() min() max() isNaN()) - parsed and evaluated by a whitelist, never C(eval).
  - B(Contracts) - HTTP probes of O(contracts) with the expected status and JMESPath assertions on the JSON body
    (C(exists), C(not_exists), C(equals), C(matches) a regular expression, C(in) a list).
  - B(Policy invariants) - every endpoint of C(endpoints) of O(policy_invariants) is probed with its own request id, and
    the PEP's decision log (JSON lines) must show a decision for each request - an endpoint answered without a
    decision fails. Its C(existence) probes a restricted and a missing resource - they must answer the
    same status with the same body shape, C(error_code) and message (no existence leak, 403 vs 404).
  - B(Logs clean) - error-level lines of the workload's JSON-lines log in the C(window) of O(logs) after the rollback,
    against the same window before O(since) - at most C(max_ratio) times as many plus C(max_increase).
  - B(Health and smoke) - the runbooks' own checks, O(health_url) answering 2xx and each of O(smoke) answering its
    status, each retried O(http_retries) times O(http_delay) seconds apart (as an Ansible task's C(until)); their
    results are RV(http_checks), kept apart from the measured checks (the receipt records them as C(health_check) and
    C(smoke_tests)). They run in the module, not as C(ansible.builtin.uri) processes - one per URL - that cost about
    half a second each on a small controller.
  - Every check is C(pass), C(fail) or C(inconclusive), with its values. The checklist fails closed - only pass
    counts, unless O(accept_inconclusive) is set. Raw answers (every Prometheus response, probe and decision found)
    go to O(raw_output) for the evidence pack.
options:
  prometheus_url:
    description:
      - Base URL of the Prometheus HTTP API, for example C(http://prometheus:9090). Read from E(PROMETHEUS_URL) when
        not given. Needed when O(metrics) is not empty.
    type: str
  prometheus_token:
    description:
      - Bearer token for Prometheus (behind an authenticating proxy). Read from E(PROMETHEUS_TOKEN), which is how an
        AWX custom credential injects it. Never logged, returned or recorded.
    type: str
  validate_certs:
    description: Verify TLS certificates of Prometheus and the probed endpoints.
    type: bool
    default: true
  ca_path:
    description: PEM file of the CA that signed those certificates.
    type: path
  request_timeout:
    description: Seconds before one HTTP request (query or probe) gives up; a timeout is a measurement error.
    type: int
    default: 10
  metrics:
    description: The metric analysis, one entry per metric.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name of the metric, for example C(error_rate_5xx).
        type: str
        required: true
      query:
        description: PromQL returning one number (one series, or a scalar) - aggregate with C(sum()).
        type: str
        required: true
      success_condition:
        description: The measurement is successful when this holds, for example C(result < 0.01).
        type: str
      failure_condition:
        description: The measurement is failed when this holds (it wins over O(metrics[].success_condition)).
        type: str
      interval:
        description: Time between measurements (C(2s), C(500ms), C(1m)).
        type: str
        default: 2s
      count:
        description: Measurements to take; the metric passes when all are taken within the limits.
        type: int
        default: 3
      initial_delay:
        description: Time to wait before the first measurement (for example the query's rate window).
        type: str
        default: 0s
      failure_limit:
        description: Failed measurements tolerated.
        type: int
        default: 0
      inconclusive_limit:
        description: Inconclusive measurements tolerated.
        type: int
        default: 0
      consecutive_error_limit:
        description: Consecutive measurement errors tolerated (Prometheus down, a bad query).
        type: int
        default: 4
  baseline_at:
    description:
      - A time before the incident (RFC 3339 or Unix seconds); every metric's query is evaluated there too and the
        value is its C(baseline). Without it C(baseline) is null and a condition that uses it is inconclusive.
    type: str
  contracts:
    description:
      - HTTP probes - C(name), C(url), C(method) (GET), C(headers), C(body) (JSON), C(status) (an int or a list,
        200), C(assertions) (a list of C({path, exists|not_exists|equals|matches|in|keys_in}), C(path) being
        JMESPath on the JSON body; C(keys_in) passes for an object none of whose keys is outside the given list).
    type: list
    elements: dict
    default: []
  policy_invariants:
    description:
      - C(endpoints) (URLs, or C({url, method, headers, body, name})), C(decision_log) (path of the PEP's JSON-lines
        decision or audit log), C(request_id_header) (C(X-Request-Id)), C(request_id_key) (C(request_id)) and
        C(decision_key) (C(decision_id)) of the log lines, C(log_wait) (seconds to wait for the lines, 5), and
        C(existence) with C(restricted) and C(missing) (each C({url, headers})).
    type: dict
    default: {}
  logs:
    description:
      - C(path) of the workload's JSON-lines log, C(window) (C(60s)), C(time_key) (C(ts), RFC 3339), C(level_key)
        (C(level)), C(error_levels) (C([error, fatal, critical])), C(max_ratio) (1.0), C(max_increase) (0).
    type: dict
    default: {}
  since:
    description:
      - When the rollback started (RFC 3339); the logs-clean comparison's "before" window ends there. Defaults to
        now minus the C(window) of O(logs).
    type: str
  accept_inconclusive:
    description:
      - Let inconclusive results through the checklist. Off by default - a metric that could not be measured (no
        data, NaN, Prometheus down) fails the verification closed. Set only with an operator's explicit decision.
    type: bool
    default: false
  raw_output:
    description: JSON file to write every raw answer to (the evidence pack's copy). Its directory must exist.
    type: path
  health_url:
    description:
      - The runbooks' health check - this URL must answer C(GET) with a 2xx status (200-204), within
        O(http_retries) retries O(http_delay) seconds apart. Checked before the smoke URLs.
      - Its result is RV(http_checks.health_check); a failed health check fails the checklist.
    type: str
  smoke:
    description:
      - The runbooks' smoke checks - C(url), C(method) (C(GET)), C(body) (sent as JSON) and C(status) (an int or a
        list, C(200)) - each retried like O(health_url).
    type: list
    elements: dict
    default: []
  http_retries:
    description: How many times a health or smoke check is repeated after its first attempt until it answers as expected.
    type: int
    default: 0
  http_delay:
    description: Seconds between the attempts of a health or smoke check.
    type: float
    default: 1
  fail_on_unverified:
    description:
      - Fail the task when the checklist does not pass. The shared steps role sets it to false, records the results
        in the receipt, then asserts.
    type: bool
    default: true
extends_documentation_fragment:
  - governed.rollback.attributes
  - governed.rollback.attributes.ACTIONGROUP_ROLLBACK
attributes:
  check_mode:
    support: full
    details: The checks only read (queries, probes, logs); check mode runs them the same way and reports their results.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Never changes anything; C(changed) is always false.
notes:
  - The probes send requests to the endpoints (including C(POST) where configured); point them at read-only routes.
seealso:
  - name: Argo Rollouts analysis
    description: The AnalysisTemplate semantics the metric analysis follows.
    link: https://argo-rollouts.readthedocs.io/en/stable/features/analysis/
  - name: Prometheus HTTP API
    description: The instant query API the metrics are read from.
    link: https://prometheus.io/docs/prometheus/latest/querying/api/
"""

EXAMPLES = r"""
- name: 5xx rate and P95 latency back to baseline, contracts and policy invariants of the KFM API
  governed.rollback.rollback_verify:
    prometheus_url: http://prometheus.monitoring:9090
    baseline_at: "2026-03-02T09:50:00Z"
    metrics:
      - name: error_rate_5xx
        query: sum(rate(http_requests_total{code=~"5.."}[1m])) / sum(rate(http_requests_total[1m]))
        success_condition: result <= baseline * 1.1 + 0.001
        interval: 30s
        count: 5
      - name: latency_p95
        query: histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket[1m])))
        success_condition: result < 0.25
        failure_condition: result > 0.5
    contracts:
      - name: error model on a missing dataset
        url: https://kfm.example.com/api/v1/datasets/no-such-dataset
        status: 404
        assertions:
          - {path: error_code, equals: NOT_FOUND}
          - {path: audit_ref, matches: "^aud_[0-9a-f]+$"}
    policy_invariants:
      endpoints: [https://kfm.example.com/api/health, https://kfm.example.com/api/v1/datasets/loan_book]
      decision_log: /var/log/kfm/audit.jsonl
      existence:
        restricted: {url: https://kfm.example.com/api/v1/datasets/credit_risk}
        missing: {url: https://kfm.example.com/api/v1/datasets/no-such-dataset}
    logs:
      path: /var/log/kfm/api.jsonl
      window: 5m
    since: "{{ rollback_started_at }}"
  register: verified

- name: The runbooks' health and smoke checks alone, each retried 5 times 2 seconds apart
  governed.rollback.rollback_verify:
    health_url: https://aureus.example.com/health
    smoke:
      - url: https://aureus.example.com/api/v1/status
      - {url: https://aureus.example.com/api/v1/search, method: POST, body: {q: smoke}, status: [200, 204]}
    http_retries: 5
    http_delay: 2
"""

RETURN = r"""
passed:
  description: Whether the checklist passes (every check pass, or inconclusive with O(accept_inconclusive)).
  returned: always
  type: bool
checks:
  description:
    - One result per check group - C(metrics), C(contracts), C(policy_invariants), C(logs) - each C(pass), C(fail),
      C(inconclusive) or C(not_run) (nothing configured).
  returned: always
  type: dict
  sample: {metrics: pass, contracts: pass, policy_invariants: pass, logs: pass}
verification_details:
  description:
    - The values behind the results, the receipt's C(verification_details) - C(metrics) (C(name), C(query),
      C(result), C(reason), C(baseline), C(value) (the last measured), C(measurements) (C(at), C(value), C(phase)),
      C(condition)), C(contracts) (C(name), C(url), C(status), C(result), C(failed)), C(policy_invariants)
      (C(endpoint), C(result), C(decision_id), C(reason)), C(logs) (C(result), C(errors_before), C(errors_after)) or
      null.
  returned: always
  type: dict
raw_output:
  description: The file the raw answers were written to.
  returned: when O(raw_output) is set
  type: str
msg:
  description: A one-line summary.
  returned: always
  type: str
http_checks:
  description:
    - The health and smoke checks - C(health_check) and C(smoke_tests) (C(passed), C(failed), or C(skipped) when
      not asked for), C(health) (the check, or null) and C(smoke) (one per URL) - each C(url), C(method),
      C(status) (the last answer's, null when none came), C(attempts), C(result) and C(error).
  returned: always
  type: dict
  contains:
    health_check:
      description: C(passed), C(failed), or C(skipped) when O(health_url) is not set.
      type: str
    smoke_tests:
      description: C(passed) when every smoke check passed, C(failed), or C(skipped) when O(smoke) is empty.
      type: str
    health:
      description: The health check (C(url), C(method), C(status), C(attempts), C(result), C(error)), or null.
      type: dict
    smoke:
      description: One check per smoke URL, in the order given.
      type: list
      elements: dict
  sample:
    health_check: passed
    smoke_tests: failed
    health: {url: https://aureus.example.com/health, method: GET, status: 200, attempts: 1, result: passed, error: null}
    smoke:
      - {url: https://aureus.example.com/api/v1/status, method: GET, status: 503, attempts: 6, result: failed,
         error: "status 503, expected 200"}
timings:
  description: Seconds spent on metrics, contracts, policy invariants, logs, health and smoke checks, and in total.
  returned: always
  type: dict
"""

import json
import time

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib
from ansible_collections.governed.rollback.plugins.module_utils import _analysis as an
from ansible_collections.governed.rollback.plugins.module_utils import _verify
from ansible_collections.governed.rollback.plugins.module_utils._common import RollbackError, fail_from_exception

NOT_RUN = "not_run"


def argument_spec():
    metric = dict(
        name=dict(type="str", required=True),
        query=dict(type="str", required=True),
        success_condition=dict(type="str"),
        failure_condition=dict(type="str"),
        interval=dict(type="str", default="2s"),
        count=dict(type="int", default=3),
        initial_delay=dict(type="str", default="0s"),
        failure_limit=dict(type="int", default=0),
        inconclusive_limit=dict(type="int", default=0),
        consecutive_error_limit=dict(type="int", default=4),
    )
    return dict(
        prometheus_url=dict(type="str", fallback=(env_fallback, ["PROMETHEUS_URL"])),
        prometheus_token=dict(type="str", no_log=True, fallback=(env_fallback, ["PROMETHEUS_TOKEN"])),
        validate_certs=dict(type="bool", default=True),
        ca_path=dict(type="path"),
        request_timeout=dict(type="int", default=10),
        metrics=dict(type="list", elements="dict", default=[], options=metric),
        baseline_at=dict(type="str"),
        contracts=dict(type="list", elements="dict", default=[]),
        policy_invariants=dict(type="dict", default={}),
        logs=dict(type="dict", default={}),
        since=dict(type="str"),
        accept_inconclusive=dict(type="bool", default=False),
        raw_output=dict(type="path"),
        health_url=dict(type="str"),
        smoke=dict(type="list", elements="dict", default=[]),
        http_retries=dict(type="int", default=0),
        http_delay=dict(type="float", default=1),
        fail_on_unverified=dict(type="bool", default=True),
    )


def execute(params, now=None):
    """(result dict, failure message or None). Specs are checked before anything is measured."""
    started = time.monotonic()
    now = time.time() if now is None else now
    metrics = [an.normalize_metric(spec, i) for i, spec in enumerate(params["metrics"] or [])]
    if metrics and not params.get("prometheus_url"):
        raise RollbackError("metrics need prometheus_url (or PROMETHEUS_URL); nothing was measured")
    baseline_at = _verify.parse_rfc3339(params["baseline_at"], "baseline_at") if params.get("baseline_at") else None
    logs_spec = params.get("logs") or {}
    window = an.parse_duration(logs_spec.get("window") or "60s", "logs.window") if logs_spec else 0
    since = _verify.parse_rfc3339(params["since"], "since") if params.get("since") else now - window
    http = _verify.Http(params)
    prom = _verify.Prometheus(http, params.get("prometheus_url"), params.get("prometheus_token"))
    timings, raw = {}, {"prometheus_url": params.get("prometheus_url"), "baseline_at": params.get("baseline_at")}
    details = {"metrics": [], "contracts": [], "policy_invariants": [], "logs": None}

    mark = time.monotonic()
    if metrics:
        details["metrics"], raw["metrics"] = _verify.run_metrics(prom, metrics, baseline_at)
    timings["metrics"] = round(time.monotonic() - mark, 3)
    mark = time.monotonic()
    if params.get("contracts"):
        details["contracts"], raw["contracts"] = _verify.run_contracts(http, params["contracts"])
    timings["contracts"] = round(time.monotonic() - mark, 3)
    mark = time.monotonic()
    if params.get("policy_invariants"):
        details["policy_invariants"], raw["policy_invariants"] = _verify.run_policy_invariants(
            http, params["policy_invariants"])
    timings["policy_invariants"] = round(time.monotonic() - mark, 3)
    mark = time.monotonic()
    if logs_spec:
        details["logs"], raw["logs"] = _verify.run_logs(logs_spec, since)
    timings["logs"] = round(time.monotonic() - mark, 3)
    mark = time.monotonic()
    http_checks = _verify.run_http_checks(http, params.get("health_url"), params.get("smoke"),
                                          params.get("http_retries"), params.get("http_delay"))
    timings["http_checks"] = round(time.monotonic() - mark, 3)
    timings["total"] = round(time.monotonic() - started, 3)

    checks = {
        "metrics": an.overall([m["result"] for m in details["metrics"]]) or NOT_RUN,
        "contracts": an.overall([c["result"] for c in details["contracts"]]) or NOT_RUN,
        "policy_invariants": an.overall([p["result"] for p in details["policy_invariants"]]) or NOT_RUN,
        "logs": details["logs"]["result"] if details["logs"] else NOT_RUN,
    }
    http_problems = _verify.http_problems(http_checks)
    passed = an.checklist_passes([r for r in checks.values() if r != NOT_RUN], params["accept_inconclusive"]) \
        and not http_problems
    result = {"changed": False, "passed": passed, "checks": checks, "verification_details": details,
              "http_checks": http_checks, "timings": timings}
    if params.get("raw_output"):
        raw.update(checks=checks, passed=passed, http_checks=http_checks)
        with open(params["raw_output"], "w") as handle:
            json.dump(raw, handle, indent=2, sort_keys=True, default=str)
            handle.write("\n")
        result["raw_output"] = params["raw_output"]
    problems = ["%s %s" % (name, value) for name, value in sorted(checks.items()) if value not in (an.PASS, NOT_RUN)]
    problems += http_problems
    if passed:
        result["msg"] = "verified: %s" % ", ".join("%s %s" % kv for kv in sorted(checks.items()) + sorted(
            (name, http_checks[name]) for name in ("health_check", "smoke_tests")))
    else:
        result["msg"] = "verification did not pass (%s)%s" % (
            ", ".join(problems),
            "" if params["accept_inconclusive"] else "; inconclusive fails closed unless accept_inconclusive is set")
    return result, None if passed else result["msg"]


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if not _verify.HAS_JMESPATH:
        module.fail_json(msg=missing_required_lib("jmespath"), exception=str(_verify.JMESPATH_ERROR))
    try:
        result, failure = execute(module.params)
    except Exception as exc:  # pylint: disable=broad-except  # anything unforeseen still ends in fail_json
        fail_from_exception(module, exc, changed=False)
    if failure and module.params["fail_on_unverified"]:
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
