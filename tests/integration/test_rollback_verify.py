"""governed.rollback.rollback_verify against the sandbox's real Prometheus, governed API (PEP) and OPA.

The metric cases query the sandbox's Prometheus (which scrapes the PEP every 2 s): an empty result, NaN and a
Prometheus that is down are inconclusive and fail the checklist closed unless accept_inconclusive is set. The policy
cases start their own PEP processes (sandbox/pep/pep_api.py, the same program, asking the sandbox's real OPA, standing
for a release that is not the incident's so only the switch under test differs), one
with an endpoint that answers without a decision and one that leaks existence (403 with the dataset's name), on
free ports with their own log files; the sandbox's own PEP is never changed.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.integration import _playbook as pb
from tests.sandbox_env import ROOT

MODULE = "governed.rollback.rollback_verify"
PEP = os.path.join(ROOT, "sandbox", "pep", "pep_api.py")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def verify(tmp_path, args, check=False):
    run_dir = os.path.join(str(tmp_path), "run-%d" % len(os.listdir(str(tmp_path))))
    return pb.run_module(run_dir, MODULE, args, check=check)


@pytest.fixture(scope="module")
def prom(sandbox_env):
    url = sandbox_env["SANDBOX_PROMETHEUS_URL"]
    deadline = time.time() + 30
    while time.time() < deadline:  # the PEP is a scrape target that answers
        with urllib.request.urlopen(url + "/api/v1/query?query=up%7Bjob%3D%22pep%22%7D", timeout=5) as answer:
            result = json.loads(answer.read())["data"]["result"]
        if result and result[0]["value"][1] == "1":
            return url
        time.sleep(1)
    pytest.fail("Prometheus does not scrape the PEP: %s" % result)


class OwnPep:
    """A PEP process of this test's own (real program, real OPA), stopped by its PID at the end."""

    def __init__(self, env, tmp_path, *flags):
        self.port, self.metrics_port = free_port(), free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.log = os.path.join(str(tmp_path), "pep-%d.log" % self.port)
        python = env.get("SANDBOX_PEP_PYTHON") or sys.executable
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(
                [python, PEP, "--port", str(self.port), "--metrics-port", str(self.metrics_port),
                 "--opa-url", env["SANDBOX_OPA_URL"], "--kubeconfig", env["KUBECONFIG"], "--traffic-interval", "0",
                 "--deployment", "no-such-release"]
                + list(flags), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline or self.process.poll() is not None:
                    self.stop()
                    pytest.fail("own PEP did not start: %s" % open(self.log).read()[-2000:])
                time.sleep(0.3)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def invariants(self):
        return {"endpoints": [self.url + "/health", self.url + "/api/v1/datasets/branch_metrics",
                              {"url": self.url + "/api/query", "method": "POST",
                               "body": {"dataset": "branch_metrics", "q": "select 1"}}],
                "decision_log": self.log,
                "existence": {"restricted": {"url": self.url + "/api/v1/datasets/credit_risk"},
                              "missing": {"url": self.url + "/api/v1/datasets/no_such_dataset"}}}


@pytest.fixture
def own_pep(sandbox_env, tmp_path):
    started = []

    def start(*flags):
        pep = OwnPep(sandbox_env, tmp_path, *flags)
        started.append(pep)
        return pep

    yield start
    for pep in started:
        pep.stop()


def metric(name, query, **extra):
    spec = {"name": name, "query": query, "success_condition": "result < 1", "interval": "500ms", "count": 2}
    spec.update(extra)
    return spec


def test_a_healthy_metric_passes_with_its_values_and_baseline(tmp_path, prom):
    failed, result = verify(tmp_path, {"prometheus_url": prom, "baseline_at": "%.3f" % (time.time() - 10),
                                       "metrics": [metric("scraped", 'sum(up{job="pep"})',
                                                          success_condition="result >= baseline")],
                                       "raw_output": os.path.join(str(tmp_path), "raw.json")})
    assert not failed, result
    entry = result["verification_details"]["metrics"][0]
    assert (result["passed"], result["checks"]["metrics"], entry["result"]) == (True, "pass", "pass")
    assert entry["baseline"] == 1.0 and entry["value"] == 1.0 and len(entry["measurements"]) == 2
    assert entry["condition"] == "success: result >= baseline"
    with open(os.path.join(str(tmp_path), "raw.json")) as handle:
        raw = json.load(handle)
    assert raw["metrics"][0]["measurements"][0]["answer"]["status"] == "success"
    assert raw["metrics"][0]["baseline"]["answer"]["data"]["result"][0]["value"][1] == "1"


def test_empty_result_is_inconclusive_and_fails_closed_unless_accepted(tmp_path, prom):
    spec = [metric("nothing", 'sum(pep_http_requests_total{handler="no-such-handler"})')]
    failed, result = verify(tmp_path, {"prometheus_url": prom, "metrics": spec})
    assert failed and not result["passed"]
    entry = result["verification_details"]["metrics"][0]
    assert entry["result"] == "inconclusive" and entry["value"] is None
    assert entry["measurements"][0]["phase"] == "inconclusive"
    assert "inconclusive fails closed" in result["msg"]
    failed, accepted = verify(tmp_path, {"prometheus_url": prom, "metrics": spec, "accept_inconclusive": True})
    assert not failed and accepted["passed"] and accepted["checks"]["metrics"] == "inconclusive"


def test_nan_is_inconclusive_never_a_crash(tmp_path, prom):
    failed, result = verify(tmp_path, {"prometheus_url": prom, "metrics": [
        metric("nan", 'sum(pep_http_requests_total{handler="no-such-handler"} or vector(0)) / vector(0)',
               failure_condition="result > 0.5")]})
    assert failed and result["checks"]["metrics"] == "inconclusive"
    assert result["verification_details"]["metrics"][0]["measurements"][0]["value"] is None


def test_prometheus_down_is_inconclusive_and_fails_closed_unless_accepted(tmp_path):
    down = "http://127.0.0.1:%d" % free_port()
    spec = [metric("errors", "up", interval="200ms", count=3, consecutive_error_limit=1)]
    failed, result = verify(tmp_path, {"prometheus_url": down, "metrics": spec})
    assert failed and not result["passed"]
    entry = result["verification_details"]["metrics"][0]
    assert entry["result"] == "inconclusive" and "consecutive measurement error" in entry["reason"]
    assert [m["phase"] for m in entry["measurements"]] == ["error", "error"]
    failed, accepted = verify(tmp_path, {"prometheus_url": down, "metrics": spec, "accept_inconclusive": True})
    assert not failed and accepted["passed"]


def test_a_metric_that_is_not_back_fails(tmp_path, prom):
    failed, result = verify(tmp_path, {"prometheus_url": prom, "metrics": [
        metric("scraped", 'sum(up{job="pep"})', success_condition="result == 0")]})
    assert failed and result["checks"]["metrics"] == "fail"
    assert result["verification_details"]["metrics"][0]["value"] == 1.0


def test_a_bad_condition_is_refused_before_anything_is_measured(tmp_path, prom):
    failed, result = verify(tmp_path, {"prometheus_url": prom, "metrics": [
        metric("evil", "up", success_condition="__import__('os').system('touch /tmp/x')")]})
    assert failed and "metric evil" in result["msg"] and "verification_details" not in result


def test_contracts_assert_with_jmespath_on_the_pep(tmp_path, own_pep):
    pep = own_pep().url  # not the sandbox's own PEP: that one follows the incident's release, which answers 5xx
    failed, result = verify(tmp_path, {"contracts": [
        {"name": "dataset", "url": pep + "/api/v1/datasets/branch_metrics", "status": 200,
         "assertions": [{"path": "audit_ref", "matches": "^aud_[0-9a-f]{20}$"},
                        {"path": "dataset_version_id", "exists": True}, {"path": "policy_label", "equals": "public"}]},
        {"name": "error model", "url": pep + "/api/v1/datasets/nope", "status": [404],
         "assertions": [{"path": "error_code", "equals": "NOT_FOUND"}, {"path": "rows", "not_exists": True}]},
        {"name": "wrong on purpose", "url": pep + "/api/v1/datasets/nope", "status": 200,
         "assertions": [{"path": "error_code", "equals": "OK"}]}]})
    assert failed and result["checks"]["contracts"] == "fail"
    entries = result["verification_details"]["contracts"]
    assert [c["result"] for c in entries] == ["pass", "pass", "fail"]
    assert entries[2]["status"] == 404
    assert entries[2]["failed"] == ["status 404, expected 200", "error_code equals 'OK' (got 'NOT_FOUND')"]


def test_every_endpoint_of_the_sandbox_pep_is_evaluated(tmp_path, sandbox_env):
    pep = sandbox_env["SANDBOX_PEP_URL"]
    failed, result = verify(tmp_path, {"policy_invariants": {
        "endpoints": [pep + "/health", pep + "/api/health", pep + "/api/v1/datasets/branch_metrics",
                      {"url": pep + "/api/policy/evaluate", "method": "POST",
                       "body": {"user": {"role": "analyst"}, "query": {"pii_level": "high"}}}],
        "decision_log": sandbox_env["SANDBOX_PEP_LOG"]}})
    assert not failed, result
    entries = result["verification_details"]["policy_invariants"]
    assert [e["result"] for e in entries] == ["pass"] * 4
    assert all(len(e["decision_id"]) == 32 for e in entries)


def test_an_endpoint_that_bypasses_evaluation_fails_the_invariant(tmp_path, own_pep):
    pep = own_pep("--bypass-path", "/api/query")
    failed, result = verify(tmp_path, {"policy_invariants": pep.invariants()})
    assert failed and result["checks"]["policy_invariants"] == "fail"
    by_endpoint = dict((e["endpoint"], e) for e in result["verification_details"]["policy_invariants"])
    assert by_endpoint[pep.url + "/api/query"]["result"] == "fail"
    assert by_endpoint[pep.url + "/api/query"]["decision_id"] is None
    assert "without a policy decision" in by_endpoint[pep.url + "/api/query"]["reason"]
    assert by_endpoint[pep.url + "/health"]["result"] == "pass"


def test_an_existence_leak_403_vs_404_fails_the_invariant(tmp_path, own_pep):
    pep = own_pep("--leak-existence")
    failed, result = verify(tmp_path, {"policy_invariants": pep.invariants()})
    assert failed and result["checks"]["policy_invariants"] == "fail"
    leak = result["verification_details"]["policy_invariants"][-1]
    assert leak["result"] == "fail" and "restricted answers 403, missing answers 404" in leak["reason"]
    honest = own_pep()
    failed, result = verify(tmp_path, {"policy_invariants": honest.invariants()})
    assert not failed and result["verification_details"]["policy_invariants"][-1]["result"] == "pass"


def test_logs_clean_counts_error_lines_before_and_after(tmp_path):
    log = os.path.join(str(tmp_path), "app.jsonl")
    now = time.time()

    def line(offset, level):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now + offset)) + ".000Z"
        return json.dumps({"ts": stamp, "level": level, "msg": "x"})

    with open(log, "w") as handle:
        handle.write("\n".join([line(-50, "error")] * 5 + [line(-40, "info"), "not json", line(-2, "error")]) + "\n")
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 30))
    failed, result = verify(tmp_path, {"logs": {"path": log, "window": "30s"}, "since": since})
    assert not failed and result["verification_details"]["logs"] == {"result": "pass", "errors_before": 5,
                                                                     "errors_after": 1}
    failed, result = verify(tmp_path, {"logs": {"path": log, "window": "30s", "max_ratio": 0.1}, "since": since})
    assert failed and result["verification_details"]["logs"]["result"] == "fail"


def test_check_mode_measures_the_same_and_changes_nothing(tmp_path, prom):
    failed, result = verify(tmp_path, {"prometheus_url": prom, "metrics": [metric("scraped", 'sum(up{job="pep"})',
                                                                                  success_condition="result == 1")]},
                            check=True)
    assert not failed and result["passed"] and result["changed"] is False


def test_health_and_smoke_checks_answer_from_the_real_endpoints_with_retries(tmp_path, sandbox_env):
    """The runbooks' health and smoke checks in the module (no uri process): OPA's real answers, a 404 expected and
    one not, and a port nothing listens on; the failing checks are retried, then fail the checklist."""
    opa, closed = sandbox_env["SANDBOX_OPA_URL"], "http://127.0.0.1:%d/health" % free_port()
    failed, result = verify(tmp_path, {
        "health_url": opa + "/health",
        "smoke": [{"url": opa + "/health"}, {"url": opa + "/nope", "status": 404},
                  {"url": opa + "/nope"}, {"url": closed}],
        "http_retries": 1, "http_delay": 0.2})
    assert failed and result["passed"] is False
    checks = result["http_checks"]
    assert (checks["health_check"], checks["smoke_tests"]) == ("passed", "failed")
    assert checks["health"]["status"] == 200 and checks["health"]["attempts"] == 1
    assert [(c["status"], c["attempts"], c["result"]) for c in checks["smoke"]] == [
        (200, 1, "passed"), (404, 1, "passed"), (404, 2, "failed"), (None, 2, "failed")]
    assert checks["smoke"][2]["error"] == "status 404, expected 200"
    assert "refused" in checks["smoke"][3]["error"].lower()
    assert "smoke_tests failed" in result["msg"] and opa + "/nope" in result["msg"]
    # Nothing measured: the measured checks stay not_run.
    assert set(result["checks"].values()) == {"not_run"}


def test_a_healthy_endpoint_alone_passes_the_checklist(tmp_path, sandbox_env):
    failed, result = verify(tmp_path, {"health_url": sandbox_env["SANDBOX_OPA_URL"] + "/health"})
    assert not failed and result["passed"] is True
    assert (result["http_checks"]["health_check"], result["http_checks"]["smoke_tests"]) == ("passed", "skipped")
    assert "health_check passed" in result["msg"]
