"""The policy rollback's pure core on plain data: target choice from git log output, opa test reports, the KFM
allow/deny rule, probes, revisions and the per-file diff."""

import json

import pytest

from ansible_collections.governed.rollback.plugins.module_utils import _policy as pol
from ansible_collections.governed.rollback.plugins.module_utils._common import Refused

V20 = "2254987123b2c4340786dd33d699362bf7c98737"
V21 = "072360efe3cd4db431735e89410490a739b5dbe4"

POLICY_V20 = """# pii-access-requires-approval v2.0
package aureus.pii

import rego.v1

default allow := false

allow if {
\tinput.user.role == "analyst"
\tinput.query.pii_level == "low"
}

allow if input.user.role == "data_owner"
"""
POLICY_V21 = POLICY_V20.replace("v2.0", "v2.1").replace('input.user.role == "analyst"', "input.approval.granted == true")
TESTS_V20 = """package aureus.pii_test

import rego.v1

import data.aureus.pii

test_analyst_low_pii_allowed if {
\tpii.allow with input as {"user": {"role": "analyst"}, "query": {"pii_level": "low"}}
}

test_high_pii_without_approval_denied if {
\tnot pii.allow with input as {"user": {"role": "analyst"}, "query": {"pii_level": "high"}}
}
"""
MANIFEST = '{"policy_name": "pii-access-requires-approval", "version": "v2.0", "package": "aureus.pii"}\n'


# --- target choice -------------------------------------------------------------------------------------------------

def test_history_keeps_only_commit_lines():
    assert pol.policy_history("%s\n%s\n\nwarning: x\n" % (V21, V20)) == [V21, V20]


def test_default_target_is_the_previous_commit_that_touched_the_directory():
    sha, how = pol.choose_target([V21, V20], "policies")
    assert sha == V20 and "HEAD~1" in how


def test_an_explicit_target_wins():
    assert pol.choose_target([V21, V20], "policies", V21) == (V21, "target_ref")


def test_no_policy_history_is_refused():
    with pytest.raises(Refused) as refused:
        pol.choose_target([], "policies", V20)
    assert refused.value.code == "no_policy_history" and "policies" in refused.value.msg


def test_a_single_version_has_nothing_to_go_back_to():
    with pytest.raises(Refused) as refused:
        pol.choose_target([V21], "policies")
    assert refused.value.code == "no_previous_version" and V21[:12] in refused.value.msg


# --- opa test ------------------------------------------------------------------------------------------------------

REPORT = [
    {"location": {"file": "p_test.rego", "row": 7}, "package": "data.aureus.pii_test", "name": "test_a"},
    {"location": {"file": "p_test.rego", "row": 11}, "package": "data.aureus.pii_test", "name": "test_b", "fail": True},
    {"location": {"file": "p_test.rego", "row": 15}, "package": "data.aureus.pii_test", "name": "todo_c", "skip": True},
    {"location": {"file": "p_test.rego", "row": 19}, "package": "data.aureus.pii_test", "name": "test_d",
     "error": {"message": "eval_conflict_error"}},
]


def test_test_report_counts_and_failures():
    summary = pol.parse_test_report(json.dumps(REPORT))
    assert (summary["total"], summary["passed"], summary["failed"], summary["skipped"], summary["errors"]) == (4, 1, 1, 1, 1)
    assert [f["name"] for f in summary["failures"]] == ["aureus.pii_test.test_b", "aureus.pii_test.test_d"]
    assert summary["failures"][0]["location"] == "p_test.rego:11"
    assert summary["failures"][1]["error"] == "eval_conflict_error"


def test_failing_tests_refuse_naming_them():
    with pytest.raises(Refused) as refused:
        pol.check_tests(pol.parse_test_report(json.dumps(REPORT)))
    assert refused.value.code == "tests_failed" and "test_b (p_test.rego:11)" in refused.value.msg


def test_no_test_at_all_is_refused():
    with pytest.raises(Refused) as refused:
        pol.check_tests(pol.parse_test_report("[]"))
    assert refused.value.code == "no_tests"


def test_coverage_threshold():
    summary = pol.parse_test_report(json.dumps(REPORT[:1]))
    assert pol.parse_coverage('{"files": {}, "coverage": 94.1176}') == 94.12
    pol.check_tests(summary, 94.12, 90)
    with pytest.raises(Refused) as refused:
        pol.check_tests(summary, 80.0, 90)
    assert refused.value.code == "coverage_below_threshold" and "80.0%" in refused.value.msg


def test_unreadable_reports_are_refused():
    with pytest.raises(Refused):
        pol.parse_test_report("1 error occurred: policy.rego:3: rego_parse_error")
    with pytest.raises(Refused):
        pol.parse_coverage("nope")


# --- the KFM rule: allow and deny ----------------------------------------------------------------------------------

def test_decision_rules_are_the_defaulted_booleans_of_non_test_modules():
    assert pol.decision_rules({"p.rego": POLICY_V20, "p_test.rego": TESTS_V20}) == {"aureus.pii": ["allow"]}


def test_rolled_back_rules_are_those_of_changed_modules():
    target = {"p.rego": POLICY_V20, "other.rego": "package aureus.other\n\ndefault deny := true\n"}
    current = {"p.rego": POLICY_V21, "other.rego": target["other.rego"]}
    assert pol.rolled_back_rules(current, target) == [("aureus.pii", "allow")]
    assert pol.rolled_back_rules(None, target) == [("aureus.other", "deny"), ("aureus.pii", "allow")]
    assert pol.rolled_back_rules(target, target) == []


def test_allow_and_deny_are_both_exercised():
    found = pol.exercised({"p_test.rego": TESTS_V20}, "aureus.pii", "allow")
    assert found == {"allow": ["test_analyst_low_pii_allowed"], "deny": ["test_high_pii_without_approval_denied"]}
    assert pol.check_allow_deny([("aureus.pii", "allow")], {"p_test.rego": TESTS_V20})[0]["deny_tests"] == [
        "test_high_pii_without_approval_denied"]


def test_full_paths_aliases_and_same_package_tests_count():
    full = "package x\n\ntest_a if {\n\tdata.aureus.pii.allow with input as {}\n}\n"
    alias = "package y\n\nimport data.aureus.pii as p\n\ntest_b if {\n\tnot p.allow with input as {}\n}\n"
    same = "package aureus.pii\n\ntest_c if {\n\tnot allow with input as {}\n}\n"
    assert pol.exercised({"a.rego": full, "b.rego": alias}, "aureus.pii", "allow") == {"allow": ["test_a"],
                                                                                       "deny": ["test_b"]}
    assert pol.exercised({"c.rego": same}, "aureus.pii", "allow") == {"allow": [], "deny": ["test_c"]}


def test_tests_that_only_allow_are_refused_naming_the_rule():
    only_allow = TESTS_V20.split("test_high_pii", maxsplit=1)[0]
    with pytest.raises(Refused) as refused:
        pol.check_allow_deny([("aureus.pii", "allow")], {"p_test.rego": only_allow})
    assert refused.value.code == "tests_miss_allow_deny"
    assert "data.aureus.pii.allow" in refused.value.msg and "deny" in refused.value.msg
    assert refused.value.details["allow_deny_gaps"][0]["missing"] == ["deny"]


def test_an_unrelated_rule_name_prefix_does_not_count():
    text = "package t\n\nimport data.aureus.pii\n\ntest_x if {\n\tpii.allowed with input as {}\n}\n"
    assert pol.exercised({"t.rego": text}, "aureus.pii", "allow") == {"allow": [], "deny": []}


# --- probes --------------------------------------------------------------------------------------------------------

def test_probes_must_be_data_paths():
    probes = pol.normalize_probes([{"query": "data.aureus.pii.allow", "input": {"a": 1}, "expect": True}])
    assert probes == [{"name": "probe 1", "query": "data.aureus.pii.allow", "input": {"a": 1}, "expect": True}]
    for bad in ({"query": "x := data.a"}, {"query": "data.a", "bogus": 1}, "data.a"):
        with pytest.raises(Refused) as refused:
            pol.normalize_probes([bad])
        assert refused.value.code == "bad_probe"


def test_probe_paths_and_values():
    assert pol.data_api_path("data.aureus.pii.allow") == "/v1/data/aureus/pii/allow"
    assert pol.eval_value('{"result": [{"expressions": [{"value": true}]}]}') is True
    assert pol.eval_value("{}") is None
    assert pol.same_value({"a": [1, 2]}, {"a": [1.0, 2]}) and not pol.same_value(True, 1)
    assert not pol.same_value(False, None)


def test_a_disagreeing_probe_refuses_with_both_values():
    probe = {"name": "low-PII analyst", "query": "data.aureus.pii.allow", "input": {}, "expect": True}
    results = [pol.probe_result(probe, False, "target bundle")]
    with pytest.raises(Refused) as refused:
        pol.check_probes(results, "the target bundle")
    assert refused.value.code == "probe_failed" and "expected true, got false" in refused.value.msg
    pol.check_probes([pol.probe_result(probe, True, "target bundle")], "the target bundle")


# --- revisions, versions, diff -------------------------------------------------------------------------------------

def test_status_revision_from_status_api_and_system_bundles():
    assert pol.status_revision({"result": {"bundles": {"aureus": {"active_revision": V21}}}}, "aureus") == V21
    assert pol.status_revision({"result": {"aureus": {"manifest": {"revision": V20}}}}, "aureus") == V20
    assert pol.status_revision({"result": {}}, "aureus") is None


def test_status_activation_is_opas_own_stamp_cut_to_microseconds():
    def status(**bundle):
        return {"result": {"bundles": {"aureus": dict(bundle, active_revision=V20)}}}

    # OPA writes Go's RFC3339Nano; an offset is turned into UTC.
    stamp = "2026-11-30T18:14:45.720835234Z"
    assert pol.status_activation(status(last_successful_activation=stamp), "aureus") == "2026-11-30T18:14:45.720835Z"
    assert pol.status_activation(status(last_successful_activation="2026-11-30T19:14:45.5+01:00"), "aureus") == \
        "2026-11-30T18:14:45.500000Z"
    # Never activated (Go's zero time), not reported, unreadable, another bundle, data.system.bundles: unknown.
    assert pol.status_activation(status(last_successful_activation="0001-01-01T00:00:00Z"), "aureus") is None
    assert pol.status_activation(status(), "aureus") is None
    assert pol.status_activation(status(last_successful_activation="yesterday"), "aureus") is None
    assert pol.status_activation(status(last_successful_activation=stamp), "other") is None
    assert pol.status_activation({"result": {"aureus": {"manifest": {"revision": V20}}}}, "aureus") is None


def test_versions_and_deployable_files():
    files = {"pii-access-policy.rego": POLICY_V20, "pii-access-policy_test.rego": TESTS_V20,
             "policy-manifest.json": MANIFEST, ".manifest": "{}"}
    assert pol.manifest_version(files) == ("pii-access-requires-approval", "v2.0")
    assert pol.version_label(files, ["t"], V20) == "v2.0"
    assert pol.version_label({}, ["b-tag", "a-tag"], V20) == "a-tag"
    assert pol.version_label({}, [], V20) == V20[:12]
    assert sorted(pol.deployable(files)) == ["pii-access-policy.rego", "policy-manifest.json"]
    assert pol.match_revision(pol.deployable(files), [(V21, {"pii-access-policy.rego": POLICY_V21}), (V20, files)]) == V20
    assert pol.match_revision({"x": "y"}, [(V20, files)]) is None


def test_policy_diff_per_file():
    entries = pol.policy_diff({"p.rego": POLICY_V21, "gone.rego": "x\n"}, {"p.rego": POLICY_V20, "new.rego": "y\n"},
                              "v2.1", "v2.0")
    statuses = [(e["file"], e["status"]) for e in entries]
    assert statuses == [("gone.rego", "removed"), ("new.rego", "added"), ("p.rego", "modified")]
    modified = entries[2]["diff"]
    assert modified.startswith("--- v2.1/p.rego\n+++ v2.0/p.rego") and "-# pii-access-requires-approval v2.1" in modified
    assert pol.policy_diff({"a": "1"}, {"a": "1"}) == []


def test_roots_come_from_the_policy_packages():
    assert pol.derive_roots({"p.rego": POLICY_V20, "p_test.rego": "package zz_test\n"}) == ["aureus"]
