"""The AUREUS rollback approval matrix, evaluated fail-closed: every row, every way to fall short."""

import copy
import datetime

import pytest

from ansible_collections.governed.rollback.plugins.module_utils._approval import (
    DEFAULT_MATRIX,
    ApprovalError,
    build_matrix,
    evaluate,
    matrix_sha256,
)

# The sandbox inventory's roster.
ROSTER = {
    "oncall": ["on_call_engineer"],
    "eng-lead": ["engineering_lead"],
    "devops-lead": ["devops_lead"],
    "dba": ["dba"],
    "gov-lead": ["governance_lead"],
    "security": ["security"],
    "data-owner": ["data_owner"],
    "approver": ["approver"],
    "ic": ["incident_commander"],
    "cto": ["cto"],
    "ciso": ["ciso"],
}
NOW = datetime.datetime(2024, 1, 15, 10, 30, 45, tzinfo=datetime.timezone.utc)

# row -> (rollback_type, revisions, who covers each required role, the emergency's extra approver or None)
ROWS = {
    "deployment_older": ("deployment", (1, 2), {"engineering_lead": "eng-lead"}, None),
    "configuration": ("configuration", (None, None), {"devops_lead": "devops-lead"}, None),
    "database": ("database", (None, None), {"dba": "dba", "engineering_lead": "eng-lead"}, "cto"),
    "policy": ("policy", (None, None), {"governance_lead": "gov-lead", "security": "security"}, "ciso"),
    "state": ("state", (None, None), {"data_owner": "data-owner", "approver": "approver"}, "eng-lead"),
}
REQUESTER = "oncall"


def facts(to_revision, previous_revision):
    """What rollout_undo's plan returns as approval_facts (nothing for the other types)."""
    if to_revision is None:
        return None
    return {"to_revision": to_revision, "previous_revision": previous_revision}


def decide(row, approvals, requested_by=REQUESTER, roster=None, **kwargs):
    rollback_type, (target, previous) = ROWS[row][:2]
    return evaluate(rollback_type, requested_by, approvals, ROSTER if roster is None else roster,
                    approval_facts=facts(target, previous), now=NOW, **kwargs)


def test_default_matrix_is_the_runbook_table():
    assert {name: row["required_roles"] for name, row in DEFAULT_MATRIX.items()} == {
        "deployment_last": ["on_call_engineer"],
        "deployment_older": ["engineering_lead"],
        "configuration": ["devops_lead"],
        "database": ["dba", "engineering_lead"],
        "policy": ["governance_lead", "security"],
        "state": ["data_owner", "approver"],
    }
    assert {name: row["emergency"]["extra_roles"] for name, row in DEFAULT_MATRIX.items()} == {
        "deployment_last": [], "deployment_older": [], "configuration": [],
        "database": ["cto"], "policy": ["ciso"], "state": ["engineering_lead"],
    }
    assert all(row["emergency"]["priorities"] == ["P0"] for row in DEFAULT_MATRIX.values())
    assert all(row["emergency"]["retroactive_hours"] == 4 for row in DEFAULT_MATRIX.values())


# ---------------------------------------------------------------- allowed paths

@pytest.mark.parametrize("row", sorted(ROWS))
def test_each_type_is_approved_when_every_role_has_a_distinct_roster_approver(row):
    covers = ROWS[row][2]
    decision = decide(row, sorted(covers.values()), priority="P2")
    assert decision["approved"] is True
    assert decision["rule"] == row
    assert decision["approval_path"] == "approval"
    assert decision["missing_roles"] == []
    assert decision["role_assignments"] == covers
    assert decision["emergency"] is False
    assert decision["retroactive_approval_due"] is None
    assert decision["post_incident_review"] == "not_required"
    assert sorted(a["name"] for a in decision["approved_by"]) == sorted(covers.values())


def test_on_call_engineer_rolling_back_to_the_last_version_is_auto_approved():
    decision = evaluate("deployment", "oncall", [], ROSTER, approval_facts=facts(2, 2), now=NOW)
    assert decision["approved"] is True
    assert decision["rule"] == "deployment_last"
    assert decision["approval_path"] == "auto_approval"
    assert decision["approved_by"] == [{"name": "oncall", "roles": ["on_call_engineer"]}]
    assert decision["message"] == ("deployment rollback to the last version auto-approved: requester oncall is on "
                                   "call (rule deployment_last)")


def test_on_call_auto_approval_is_the_one_self_approval_allowed_even_when_listed_as_approver():
    decision = evaluate("deployment", "oncall", ["oncall"], ROSTER, approval_facts=facts(2, 2), now=NOW)
    assert decision["approved"] is True
    assert decision["approval_path"] == "auto_approval"


def test_last_version_requested_by_someone_not_on_call_needs_an_on_call_approver():
    denied = evaluate("deployment", "eng-lead", ["eng-lead"], ROSTER, approval_facts=facts(2, 2),
                      now=NOW)
    assert denied["approved"] is False
    assert denied["missing_roles"] == ["on_call_engineer"]
    assert {"name": "eng-lead", "reason": "requester cannot approve their own rollback"} in denied["ignored_approvals"]
    approved = evaluate("deployment", "eng-lead", ["oncall"], ROSTER, approval_facts=facts(2, 2), now=NOW)
    assert approved["approved"] is True
    assert approved["approval_path"] == "approval"


def test_on_call_rolling_back_further_than_the_last_version_needs_the_engineering_lead():
    decision = evaluate("deployment", "oncall", [], ROSTER, approval_facts=facts(1, 2), now=NOW)
    assert decision["approved"] is False
    assert decision["rule"] == "deployment_older"
    assert decision["missing_roles"] == ["engineering_lead"]


@pytest.mark.parametrize("row", sorted(ROWS) + ["deployment_last"])
def test_p0_emergency_override_with_incident_commander_and_extra_approver_is_approved(row):
    if row == "deployment_last":
        rollback_type, target, previous, extra, requester = "deployment", 2, 2, None, "devops-lead"
    else:
        rollback_type, (target, previous), extra = ROWS[row][0], ROWS[row][1], ROWS[row][3]
        requester = REQUESTER
    decision = evaluate(rollback_type, requester, [extra] if extra else [], ROSTER, priority="P0",
                        incident_commander="ic", emergency_override=True,
                        approval_facts=facts(target, previous), now=NOW)
    assert decision["approved"] is True
    assert decision["rule"] == row
    assert decision["approval_path"] == "emergency_override"
    assert decision["emergency"] is True
    assert decision["retroactive_approval_due"] == "2024-01-15T14:30:45Z"
    assert decision["post_incident_review"] == "required"
    assert decision["retroactive_roles"] == DEFAULT_MATRIX[row]["required_roles"]
    assert decision["missing_roles"] == []


def test_complete_ordinary_approvals_need_no_emergency_override():
    decision = decide("database", ["dba", "eng-lead"], priority="P0", incident_commander="ic",
                      emergency_override=True)
    assert decision["approved"] is True
    assert decision["approval_path"] == "approval"
    assert decision["emergency"] is False
    assert decision["emergency_requested"] is True
    assert decision["retroactive_approval_due"] is None


def test_emergency_override_keeps_the_approvals_already_given_and_owes_only_the_rest():
    decision = decide("database", ["dba", "cto"], priority="P0", incident_commander="ic", emergency_override=True)
    assert decision["approved"] is True
    assert decision["retroactive_roles"] == ["engineering_lead"]
    assert decision["role_assignments"] == {"dba": "dba", "emergency:cto": "cto"}


# ---------------------------------------------------------------- every way to fall short

@pytest.mark.parametrize("row", sorted(ROWS))
def test_missing_role_is_denied_and_named(row):
    covers = ROWS[row][2]
    for role in covers:
        others = [name for r, name in covers.items() if r != role]
        decision = decide(row, others, priority="P1")
        assert decision["approved"] is False
        assert decision["approval_path"] == "denied"
        assert decision["missing_roles"] == [role]
        assert "missing: %s" % role in decision["message"]


@pytest.mark.parametrize("row", sorted(ROWS))
def test_role_claimed_by_a_name_not_in_the_roster_is_denied(row):
    covers = ROWS[row][2]
    for role in covers:
        approvals = ["mallory" if r == role else name for r, name in covers.items()]
        decision = decide(row, approvals, priority="P1")
        assert decision["approved"] is False
        assert decision["missing_roles"] == [role]
        assert {"name": "mallory", "reason": "not in the roster"} in decision["ignored_approvals"]
        assert "mallory (not in the roster)" in decision["message"]


@pytest.mark.parametrize("row", sorted(ROWS))
def test_roster_name_without_the_role_does_not_cover_it(row):
    covers = ROWS[row][2]
    for role in covers:
        approvals = ["ciso" if r == role else name for r, name in covers.items()]
        decision = decide(row, approvals, priority="P1")
        assert decision["approved"] is False
        assert decision["missing_roles"] == [role]


@pytest.mark.parametrize("row", sorted(ROWS))
def test_requester_approving_their_own_rollback_is_denied(row):
    covers = ROWS[row][2]
    for role, requester in covers.items():
        decision = decide(row, sorted(covers.values()), requested_by=requester, priority="P1")
        assert decision["approved"] is False
        assert decision["missing_roles"] == [role]
        assert {"name": requester, "reason": "requester cannot approve their own rollback"} in \
            decision["ignored_approvals"]


@pytest.mark.parametrize("row", sorted(ROWS))
def test_emergency_override_without_p0_is_denied(row):
    extra = ROWS[row][3]
    for priority in ("P1", "P2", "P3", None):
        decision = decide(row, [extra] if extra else [], priority=priority, incident_commander="ic",
                          emergency_override=True)
        assert decision["approved"] is False
        assert decision["emergency"] is False
        assert decision["retroactive_approval_due"] is None
        assert "emergency override is only for P0 incidents" in decision["message"]


@pytest.mark.parametrize("row", sorted(ROWS))
def test_emergency_override_without_incident_commander_is_denied(row):
    extra = ROWS[row][3]
    decision = decide(row, [extra] if extra else [], priority="P0", emergency_override=True)
    assert decision["approved"] is False
    assert "no incident commander declared the emergency" in decision["message"]


@pytest.mark.parametrize("row", sorted(ROWS))
def test_incident_commander_must_hold_the_role_in_the_roster(row):
    extra = ROWS[row][3]
    for commander in ("mallory", "security"):
        decision = decide(row, [extra] if extra else [], priority="P0", incident_commander=commander,
                          emergency_override=True)
        assert decision["approved"] is False
        assert "does not hold the incident_commander role" in decision["message"]


def test_requester_cannot_declare_their_own_emergency():
    roster = dict(ROSTER, oncall=["on_call_engineer", "incident_commander"])
    decision = evaluate("configuration", "oncall", [], roster, priority="P0", incident_commander="oncall",
                        emergency_override=True, now=NOW)
    assert decision["approved"] is False
    assert "requester cannot declare their own emergency" in decision["message"]


@pytest.mark.parametrize("row", ["database", "policy", "state"])
def test_emergency_override_without_the_extra_approver_is_denied(row):
    extra_role = DEFAULT_MATRIX[row]["emergency"]["extra_roles"][0]
    decision = decide(row, [], priority="P0", incident_commander="ic", emergency_override=True)
    assert decision["approved"] is False
    assert "emergency override also needs %s approval" % extra_role in decision["message"]


@pytest.mark.parametrize("row", ["database", "policy", "state"])
def test_extra_approver_who_is_the_requester_does_not_count(row):
    extra = ROWS[row][3]
    decision = decide(row, [extra], requested_by=extra, priority="P0", incident_commander="ic",
                      emergency_override=True)
    assert decision["approved"] is False
    assert "emergency override also needs" in decision["message"]


@pytest.mark.parametrize("row", ["database", "policy", "state"])
def test_extra_approver_named_but_not_in_the_roster_does_not_count(row):
    roster = dict((name, roles) for name, roles in ROSTER.items() if name != ROWS[row][3])
    decision = decide(row, [ROWS[row][3]], roster=roster, priority="P0", incident_commander="ic",
                      emergency_override=True)
    assert decision["approved"] is False


def test_one_person_holding_two_required_roles_cannot_cover_both():
    roster = dict(ROSTER, **{"dual": ["dba", "engineering_lead"]})
    decision = evaluate("database", "oncall", ["dual"], roster, now=NOW)
    assert decision["approved"] is False
    assert len(decision["missing_roles"]) == 1
    both = evaluate("database", "oncall", ["dual", "dba"], roster, now=NOW)
    assert both["approved"] is True
    assert both["role_assignments"] == {"dba": "dba", "engineering_lead": "dual"}


def test_denial_message_names_what_is_missing_like_the_issue_says():
    decision = decide("database", ["dba"], priority="P1")
    assert decision["message"].startswith("database rollback needs roles dba, engineering_lead; have: dba (dba)")
    assert decision["message"] == ("database rollback needs roles dba, engineering_lead; have: dba (dba); "
                                   "missing: engineering_lead (rule database)")


def test_denied_decision_still_carries_every_receipt_field():
    decision = decide("policy", ["gov-lead"], priority="P1")
    for key in ("approved", "rule", "missing_roles", "emergency", "retroactive_approval_due", "post_incident_review",
                "approved_by", "requested_by", "approval_path", "evaluated_at", "matrix_sha256", "message"):
        assert key in decision
    assert decision["evaluated_at"] == "2024-01-15T10:30:45Z"


# ---------------------------------------------------------------- the matrix is data

def test_matrix_row_override_changes_the_decision_and_its_digest():
    override = {"configuration": {"required_roles": ["devops_lead", "security"], "emergency": None}}
    default = decide("configuration", ["devops-lead"])
    stricter = decide("configuration", ["devops-lead"], matrix=override)
    assert default["approved"] is True
    assert stricter["approved"] is False
    assert stricter["missing_roles"] == ["security"]
    assert stricter["matrix_sha256"] != default["matrix_sha256"]
    assert default["matrix_sha256"] == matrix_sha256(DEFAULT_MATRIX)


def test_matrix_row_without_emergency_refuses_every_override():
    decision = decide("configuration", [], priority="P0", incident_commander="ic", emergency_override=True,
                      matrix={"configuration": {"required_roles": ["devops_lead"], "emergency": None}})
    assert decision["approved"] is False
    assert "allows no emergency override" in decision["message"]


@pytest.mark.parametrize("override, problem", [
    ({"nonsense": {"required_roles": ["x"]}}, "unknown rows: nonsense"),
    ({"database": {"required_roles": []}}, "needs required_roles"),
    ({"database": {"required_roles": ["dba"], "emergency": {"priorities": ["P9"], "retroactive_hours": 4}}},
     "emergency.priorities"),
    ({"database": {"required_roles": ["dba"], "emergency": {"priorities": ["P0"], "retroactive_hours": 0}}},
     "retroactive_hours"),
    ({"database": {"required_roles": ["dba"], "approve_everything": True}}, "unknown keys: approve_everything"),
])
def test_malformed_matrix_is_refused_naming_the_problem(override, problem):
    with pytest.raises(ApprovalError, match=problem):
        build_matrix(override)


def test_build_matrix_does_not_mutate_the_default():
    before = copy.deepcopy(DEFAULT_MATRIX)
    build_matrix({"state": {"required_roles": ["data_owner"]}})
    assert DEFAULT_MATRIX == before


def test_deployment_without_resolved_revisions_cannot_be_evaluated():
    with pytest.raises(ApprovalError, match="needs approval_facts with to_revision and previous_revision"):
        evaluate("deployment", "oncall", [], ROSTER, approval_facts={"to_revision": 2})
    with pytest.raises(ApprovalError, match="must be integers"):
        evaluate("deployment", "oncall", [], ROSTER, approval_facts=facts(True, 1))


def test_unknown_priority_and_empty_requester_are_errors_not_denials():
    with pytest.raises(ApprovalError, match="priority"):
        evaluate("configuration", "oncall", ["devops-lead"], ROSTER, priority="P7")
    with pytest.raises(ApprovalError, match="requested_by is empty"):
        evaluate("configuration", " ", ["devops-lead"], ROSTER)


# --- names, identities and one role per person (issue: approvals are names anyone can type) ---------------------------


@pytest.mark.parametrize("typed", ["ENG-LEAD", "Eng-Lead", "ｅｎｇ－ｌｅａｄ", " eng-lead "])
def test_names_are_compared_after_nfkc_and_case_folding(typed):
    decision = decide("deployment_older", [typed])
    assert decision["approved"] is True
    assert decision["approved_by"] == [{"name": "eng-lead", "roles": ["engineering_lead"]}]


@pytest.mark.parametrize("sneaky", ["eng\u200b-lead", "eng-lead\u200d", "\u202eeng-lead", "eng\u00ad-lead", "eng-\u2028lead"])
def test_names_with_invisible_characters_are_refused(sneaky):
    with pytest.raises(ApprovalError, match="invisible or control characters"):
        decide("deployment_older", [sneaky])


def test_a_roster_whose_names_collide_after_normalization_is_refused():
    with pytest.raises(ApprovalError, match="collide after normalization"):
        decide("deployment_older", ["eng-lead"], roster=dict(ROSTER, **{"ENG-LEAD": ["engineering_lead"]}))


def test_the_requester_must_be_in_the_roster():
    with pytest.raises(ApprovalError, match="'nobody' is not in the roster"):
        decide("deployment_older", ["eng-lead"], requested_by="nobody")


def test_the_requester_must_be_the_launching_user():
    with pytest.raises(ApprovalError, match="is not the user who launched this job"):
        decide("deployment_older", ["eng-lead"], launched_by="eng-lead")
    assert decide("deployment_older", ["eng-lead"], launched_by="OnCall")["approved"] is True


def test_the_incident_commander_never_doubles_as_the_emergency_extra_approver():
    roster = dict(ROSTER, ic=["incident_commander", "cto"])
    denied = evaluate("database", REQUESTER, ["ic"], roster, priority="P0", incident_commander="ic",
                      emergency_override=True, now=NOW)
    assert denied["approved"] is False
    assert "someone other than the requester and the incident commander" in denied["message"]
    approved = evaluate("database", REQUESTER, ["ic", "cto"], roster, priority="P0", incident_commander="ic",
                        emergency_override=True, now=NOW)
    assert approved["approved"] is True
    assert approved["role_assignments"]["emergency:cto"] == "cto"


def test_approved_by_lists_only_the_people_whose_roles_counted():
    decision = decide("database", ["dba", "eng-lead", "security", "gov-lead"])
    assert decision["approved"] is True
    assert [a["name"] for a in decision["approved_by"]] == ["dba", "eng-lead"]


def test_signed_mode_counts_only_verified_signers():
    signer = {"name": "eng-lead", "key_sha256": "1" * 64, "statement_sha256": "0" * 64,
              "expires_at": "2024-01-15T11:30:45Z"}
    denied = decide("deployment_older", ["eng-lead"], approval_mode="signed")
    assert denied["approved"] is False
    assert {"name": "eng-lead", "reason": "no valid signed statement for this plan"} in denied["ignored_approvals"]
    approved = decide("deployment_older", [], approval_mode="signed", verified_signers=[signer])
    assert approved["approved"] is True and approved["approval_mode"] == "signed"
    assert approved["verified_signers"] == [signer]
