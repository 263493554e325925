"""rollback_verify's pure core on plain data: conditions (safe evaluation), Prometheus answers (empty, NaN, many
series, errors), Argo-like measurement and analysis phases, baseline comparison, contracts, existence leaks,
decision-log invariants and the logs-clean rule."""

import math

import pytest

from ansible_collections.governed.rollback.plugins.module_utils import _analysis as an
from ansible_collections.governed.rollback.plugins.module_utils._common import RollbackError


def vector(*values):
    return {"status": "success", "data": {"resultType": "vector",
                                          "result": [{"metric": {"i": str(i)}, "value": [1700000000.0, v]}
                                                     for i, v in enumerate(values)]}}


def judge(payload, success=None, failure=None, baseline=None):
    sample = an.sample_from_prometheus(payload)
    return an.judge_measurement(sample, an.compile_condition(success) if success else None,
                                an.compile_condition(failure) if failure else None, baseline)[0]


# --------------------------------------------------------------------------- conditions

@pytest.mark.parametrize("text,result,baseline,expected", [
    ("result < 0.05", 0.01, None, True),
    ("result < 0.05", 0.05, None, False),
    ("result <= baseline * 1.1 + 0.01", 0.10, 0.1, True),
    ("result <= baseline * 1.1 + 0.01", 0.2, 0.1, False),
    ("0 <= result < 1 and not result == 0.5", 0.3, None, True),
    ("abs(result - baseline) <= 0.02 or result < 0.001", 0.0005, 1.0, True),
    ("max(result, 0) < min(1, 2)", 0.5, None, True),
    ("isNaN(result)", float("nan"), None, True),
    ("result / 0 > 1", 5, None, False),  # division by zero is NaN, never an exception
    ("-result < 0", 1, None, True),
])
def test_conditions_evaluate_without_eval(text, result, baseline, expected):
    assert an.evaluate_condition(an.compile_condition(text), result, baseline) is expected


@pytest.mark.parametrize("text", [
    "__import__('os').system('true')", "result.__class__", "open('/etc/passwd')", "result ** 1000000",
    "[result]", "result if result else 0", "lambda: 1", "'a' == 'a'", "True", "result in (1, 2)",
    "result < 1; 2", "", "   ", "x < 1", "abs(result, key=1)", "result[0] < 1", "result < 1 " * 200,
])
def test_conditions_outside_the_whitelist_are_refused_before_measuring(text):
    with pytest.raises(an.ConditionError):
        an.compile_condition(text)


def test_a_condition_needing_a_missing_baseline_is_undecided():
    assert an.evaluate_condition(an.compile_condition("result <= baseline"), 1.0, None) is None


# --------------------------------------------------------------------------- measurements

def test_prometheus_answers_become_samples():
    assert an.sample_from_prometheus(vector("0.25")).value == 0.25
    assert an.sample_from_prometheus(vector()).series == 0
    assert math.isnan(an.sample_from_prometheus(vector("NaN")).value)
    assert an.sample_from_prometheus({"status": "success", "data": {"resultType": "scalar",
                                                                    "result": [1.0, "3"]}}).value == 3.0
    assert "bad_data" in an.sample_from_prometheus({"status": "error", "errorType": "bad_data",
                                                    "error": "parse error"}).error
    assert an.sample_from_prometheus({"status": "success", "data": {"resultType": "matrix", "result": []}}).error
    assert an.sample_from_prometheus({"status": "success", "data": {"resultType": "vector",
                                                                    "result": [{"value": [1]}]}}).error
    assert an.sample_from_prometheus("<html>").error


def test_empty_result_and_nan_are_inconclusive_never_a_crash():
    assert judge(vector(), "result < 0.05") == an.INCONCLUSIVE
    assert judge(vector("NaN"), "result < 0.05") == an.INCONCLUSIVE
    assert judge(vector("NaN"), failure="result > 0.05") == an.INCONCLUSIVE
    assert judge(vector("1", "2"), "result < 5") == an.INCONCLUSIVE  # two series: ambiguous


def test_measurement_phases_follow_argo():
    assert judge(vector("0.01"), "result < 0.05") == an.SUCCESSFUL
    assert judge(vector("0.2"), "result < 0.05") == an.FAILED  # only success given and false -> failed
    assert judge(vector("0.01"), failure="result > 0.05") == an.SUCCESSFUL  # only failure given and false
    assert judge(vector("0.2"), failure="result > 0.05") == an.FAILED
    assert judge(vector("0.03"), "result < 0.02", "result > 0.05") == an.INCONCLUSIVE  # neither holds
    assert judge(vector("0.06"), "result < 0.1", "result > 0.05") == an.FAILED  # failure wins
    assert an.judge_measurement(an.Sample(error="connection refused"), an.compile_condition("result < 1"))[0] \
        == an.ERROR


def test_baseline_comparison_is_a_number_and_missing_baseline_is_inconclusive():
    assert judge(vector("0.011"), "result <= baseline * 1.1 + 0.001", baseline=0.01) == an.SUCCESSFUL
    assert judge(vector("0.3"), "result <= baseline * 1.1 + 0.001", baseline=0.01) == an.FAILED
    assert judge(vector("0.011"), "result <= baseline * 1.1 + 0.001", baseline=None) == an.INCONCLUSIVE


@pytest.mark.parametrize("phases,limits,expected", [
    (["successful"] * 3, {}, (an.PASS)),
    (["successful", "failed"], {}, an.FAIL),
    (["failed", "successful", "successful"], {"failure_limit": 1}, an.PASS),
    (["failed", "failed"], {"failure_limit": 1}, an.FAIL),
    (["inconclusive"], {}, an.INCONCLUSIVE),
    (["inconclusive", "successful", "successful"], {"inconclusive_limit": 1}, an.PASS),
    (["error"] * 5, {}, an.INCONCLUSIVE),  # consecutive_error_limit 4: Prometheus down is never a pass
    (["error", "error", "successful"], {"consecutive_error_limit": 2}, an.PASS),
    (["error", "error", "error"], {"consecutive_error_limit": 2}, an.INCONCLUSIVE),
    (["successful", "successful", "error"], {}, an.INCONCLUSIVE),  # count reached on an error
])
def test_analysis_phase_applies_the_limits(phases, limits, expected):
    assert an.analysis_phase(phases, 3, **limits)[0] == expected


def test_analysis_is_running_until_count_or_a_limit():
    assert an.analysis_phase(["successful"], 3) == (None, "running")
    assert an.analysis_phase(["error", "error"], 3)[0] is None


def test_metric_specs_are_checked_with_clear_errors():
    metric = an.normalize_metric({"name": "e", "query": "up", "success_condition": "result == 1",
                                  "interval": "500ms", "count": "2"})
    assert (metric["interval_seconds"], metric["count"], metric["failure_limit"]) == (0.5, 2, 0)
    for bad, message in [({"query": "up", "success_condition": "result"}, "needs a name"),
                         ({"name": "e", "success_condition": "result"}, "needs a query"),
                         ({"name": "e", "query": "up"}, "success_condition and/or failure_condition"),
                         ({"name": "e", "query": "up", "success_condition": "os.system()"}, "metric e"),
                         ({"name": "e", "query": "up", "success_condition": "result", "count": 0}, "count"),
                         ({"name": "e", "query": "up", "success_condition": "result", "interval": "soon"},
                          "duration"),
                         ({"name": "e", "query": "up", "success_condition": "result", "threshold": 1}, "unknown")]:
        with pytest.raises(RollbackError, match=message):
            an.normalize_metric(bad)


def test_summary_keeps_values_and_turns_nan_into_null():
    metric = an.normalize_metric({"name": "p95", "query": "q", "success_condition": "result < 0.25"})
    summary = an.summarize_metric(metric, [{"at": "2026-01-01T00:00:00Z", "value": float("nan"), "phase": "x"},
                                           {"at": "2026-01-01T00:00:02Z", "value": 0.1, "phase": "y"}],
                                  an.PASS, "ok", float("nan"))
    assert summary["baseline"] is None and summary["value"] == 0.1
    assert summary["measurements"][0]["value"] is None
    assert summary["condition"] == "success: result < 0.25"


# --------------------------------------------------------------------------- checklist, contracts, invariants, logs

def test_inconclusive_fails_the_checklist_closed_unless_accepted():
    assert not an.checklist_passes([an.PASS, an.INCONCLUSIVE])
    assert an.checklist_passes([an.PASS, an.INCONCLUSIVE], accept_inconclusive=True)
    assert not an.checklist_passes([an.FAIL], accept_inconclusive=True)
    assert an.overall([an.PASS, an.INCONCLUSIVE]) == an.INCONCLUSIVE
    assert an.overall([]) is None


def test_contract_and_assertions():
    assert an.judge_contract(200, [200], [("error_code exists", True)]) == (an.PASS, [])
    result, failed = an.judge_contract(500, [200], [("audit_ref matches ^aud_", False)])
    assert result == an.FAIL and failed == ["status 500, expected 200", "audit_ref matches ^aud_"]
    assert an.judge_assertion("matches", "aud_0123", "^aud_[0-9a-f]+$")
    assert not an.judge_assertion("matches", None, "^aud_")
    assert an.judge_assertion("exists", "x") and an.judge_assertion("not_exists", None)
    assert an.judge_assertion("equals", "NOT_FOUND", "NOT_FOUND") and an.judge_assertion("in", 404, [403, 404])
    with pytest.raises(RollbackError, match="unknown assertion"):
        an.judge_assertion("roughly", 1, 1)


def test_keys_in_passes_an_object_that_says_nothing_beyond_the_listed_keys():
    safe = ["result", "decision_id"]
    assert an.judge_assertion("keys_in", {"result": {"allow": False}, "decision_id": "d1"}, safe)
    assert an.judge_assertion("keys_in", {}, safe)
    assert not an.judge_assertion("keys_in", {"result": False, "metrics": {"timer_ns": 1}}, safe)
    # Not an object (an error text, a list, nothing answered): not a policy-safe shape either.
    for actual in (None, "denied: dataset credit_risk exists", ["result"], False):
        assert not an.judge_assertion("keys_in", actual, safe)


def test_existence_leak_is_caught_and_indistinguishable_answers_pass():
    missing = {"status": 404, "body": {"error_code": "NOT_FOUND", "message": "not found", "audit_ref": "aud_1"}}
    same = {"status": 404, "body": {"error_code": "NOT_FOUND", "message": "not found", "audit_ref": "aud_2"}}
    leak = {"status": 403, "body": {"error_code": "FORBIDDEN", "message": "credit_risk exists", "audit_ref": "a"}}
    assert an.judge_existence(same, missing) == (an.PASS, [])
    result, failed = an.judge_existence(leak, missing)
    assert result == an.FAIL and "restricted answers 403, missing answers 404" in failed
    shaped = {"status": 404, "body": {"error_code": "NOT_FOUND", "message": "not found", "audit_ref": "a", "id": 1}}
    assert an.judge_existence(shaped, missing)[0] == an.FAIL


def test_every_probe_needs_a_decision_in_the_log():
    probes = [{"endpoint": "/api/query", "request_id": "a", "status": 200},
              {"endpoint": "/api/health", "request_id": "b", "status": 200},
              {"endpoint": "/api/v1/datasets/x", "request_id": "c", "status": 404},
              {"endpoint": "/down", "request_id": "d", "error": "connection refused"}]
    results = an.judge_decisions(probes, {"a": "dec1", "b": None})
    assert [r["result"] for r in results] == [an.PASS, an.FAIL, an.INCONCLUSIVE, an.INCONCLUSIVE]
    assert results[0]["decision_id"] == "dec1" and results[1]["decision_id"] is None


def test_logs_clean_rule():
    assert an.judge_logs(10, 2) == an.PASS
    assert an.judge_logs(0, 0) == an.PASS
    assert an.judge_logs(0, 3) == an.FAIL
    assert an.judge_logs(0, 3, max_increase=3) == an.PASS
    assert an.judge_logs(None, 3) == an.INCONCLUSIVE


def test_durations():
    assert an.parse_duration("2s") == 2 and an.parse_duration("250ms") == 0.25 and an.parse_duration(1) == 1
    assert an.parse_duration("1m") == 60
    for bad in ("-1s", "fast", True, float("inf")):
        with pytest.raises(RollbackError):
            an.parse_duration(bad)
