"""The receipt's verification block from a run's recorded checks: the rules the receipt task used to spell in Jinja,
case by case with plain data."""

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.governed.rollback.plugins.filter.receipt_verification import (
    FilterModule, receipt_verification, worst)

CHECKLIST = ["rollout_complete", "pods_on_target_images"]


def run(checks, checklist=None, priority="P2"):
    return {"checks": checks, "checklist": CHECKLIST if checklist is None else checklist, "priority": priority,
            "rollback_id": "rollback-1", "outcome": "succeeded"}


def test_a_verified_rollback_without_measurements():
    checks = {"rollout_complete": True, "pods_on_target_images": True, "health_check": "passed",
              "smoke_tests": "passed"}
    assert receipt_verification(run(checks)) == {
        "health": "pass", "contract_smoke": "pass", "metrics_normal": "not_run", "logs_clean": "not_run",
        "health_check": "passed", "smoke_tests": "passed", "user_validation": "not_required",
        "rollout_complete": True, "pods_on_target_images": True, "policy_invariants": "not_run"}


def test_nothing_recorded_yet_the_draft_before_the_change():
    # The draft receipt is checked before anything ran: no check is recorded, so health cannot pass.
    assert receipt_verification(run({})) == {
        "health": "fail", "contract_smoke": "not_run", "metrics_normal": "not_run", "logs_clean": "not_run",
        "health_check": "not_run", "smoke_tests": "not_run", "user_validation": "not_required",
        "rollout_complete": "not_run", "pods_on_target_images": "not_run", "policy_invariants": "not_run"}


@pytest.mark.parametrize("checks", [
    {"rollout_complete": True, "pods_on_target_images": False},
    {"rollout_complete": True},  # a check of the list never recorded counts as failed
    {"rollout_complete": True, "pods_on_target_images": "true"},  # a string is not true
    {"rollout_complete": True, "pods_on_target_images": True, "health_check": "failed"},
])
def test_health_fails_with_any_type_check_not_true_or_a_failed_endpoint(checks):
    assert receipt_verification(run(checks))["health"] == "fail"


def test_an_empty_checklist_never_passes_health():
    assert receipt_verification(run({"health_check": "passed"}, checklist=[]))["health"] == "fail"


def test_health_passes_with_a_skipped_endpoint_and_takes_the_metrics_verdict():
    base = {"rollout_complete": True, "pods_on_target_images": 1, "health_check": "skipped"}
    assert receipt_verification(run(base))["health"] == "pass"
    for metrics in ("fail", "inconclusive"):
        result = receipt_verification(run(dict(base, metrics_normal=metrics)))
        assert (result["health"], result["metrics_normal"]) == (metrics, metrics)
    assert receipt_verification(run(dict(base, metrics_normal="pass")))["health"] == "pass"


@pytest.mark.parametrize("smoke, contracts, expected", [
    ("passed", "not_run", "pass"),
    ("failed", "pass", "fail"),
    ("passed", "inconclusive", "inconclusive"),
    ("skipped", "fail", "fail"),
    ("skipped", "not_run", "not_run"),
    (None, "pass", "pass"),  # smoke tests never recorded
])
def test_contract_smoke_is_the_worse_of_the_smoke_tests_and_the_contracts(smoke, contracts, expected):
    checks = {"contract_checks": contracts}
    if smoke is not None:
        checks["smoke_tests"] = smoke
    assert receipt_verification(run(checks))["contract_smoke"] == expected


@pytest.mark.parametrize("own, measured, expected", [
    (None, None, "not_run"),
    (True, None, "pass"),
    (False, "pass", "fail"),
    ([], None, "fail"),  # recorded but empty: falsy, as Jinja judged it
    (True, "inconclusive", "inconclusive"),
    (None, "fail", "fail"),
])
def test_policy_invariants_is_the_worse_of_the_types_check_and_the_measured_one(own, measured, expected):
    checks = {}
    if own is not None:
        checks["policy_invariants"] = own
    if measured is not None:
        checks["measured_policy_invariants"] = measured
    assert receipt_verification(run(checks, checklist=["rollout_complete"]))["policy_invariants"] == expected


def test_the_types_own_check_named_like_a_runbook_field_keeps_its_recorded_value_but_policy_invariants_is_judged():
    checks = {"policy_invariants": True, "health_check": "passed", "logs_clean": "pass"}
    result = receipt_verification(run(checks, checklist=["policy_invariants", "health_check"]))
    assert result["health_check"] == "passed" and result["logs_clean"] == "pass"
    assert result["policy_invariants"] == "pass"  # the verdict, not the raw True


@pytest.mark.parametrize("priority, expected", [("P0", "pending"), ("P1", "pending"), ("P2", "not_required"),
                                                ("P3", "not_required")])
def test_user_validation_is_pending_for_p0_and_p1(priority, expected):
    assert receipt_verification(run({}, priority=priority))["user_validation"] == expected


def test_worst_orders_fail_inconclusive_pass():
    assert worst(["pass", "inconclusive"]) == "inconclusive"
    assert worst(["not_run", "pass"]) == "pass"
    assert worst(["not_run", "bogus"]) == "not_run"


@pytest.mark.parametrize("bad", ["a string", None, {"checks": [], "checklist": []}, {"checks": {}, "checklist": "x"}])
def test_anything_but_a_run_record_is_refused_by_name(bad):
    with pytest.raises(AnsibleFilterError, match="receipt_verification"):
        receipt_verification(bad)


def test_the_filter_is_registered_under_its_name():
    assert FilterModule().filters()["receipt_verification"] is receipt_verification
