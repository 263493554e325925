"""governed.rollback.rollback_approval run for real through ansible-runner (ad-hoc, as a role would call it)."""

import datetime
import json
import os
import sys

import ansible_runner
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
ROSTER = {
    "oncall": ["on_call_engineer"], "eng-lead": ["engineering_lead"], "devops-lead": ["devops_lead"], "dba": ["dba"],
    "gov-lead": ["governance_lead"], "security": ["security"], "data-owner": ["data_owner"],
    "approver": ["approver"], "ic": ["incident_commander"], "cto": ["cto"], "ciso": ["ciso"],
}


def run_approval(tmp_path, check=False, **args):
    """Run the module once on localhost; returns (event name, module result)."""
    args.setdefault("roster", ROSTER)
    (tmp_path / "runner").mkdir(parents=True)
    runner = ansible_runner.run(
        private_data_dir=str(tmp_path / "runner"),
        host_pattern="localhost",
        module="governed.rollback.rollback_approval",
        module_args=json.dumps(args),
        inventory="localhost ansible_connection=local ansible_python_interpreter=%s" % sys.executable,
        envvars={"ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
                 "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")},
        cmdline="--check" if check else None,
        quiet=True,
    )
    for event in runner.events:
        if event["event"] in ("runner_on_ok", "runner_on_failed"):
            return event["event"], event["event_data"]["res"]
    raise AssertionError("module did not run: %s\n%s" % (runner.status, runner.stdout.read()))


def test_denied_database_rollback_fails_naming_what_is_missing_and_returns_the_decision(tmp_path):
    event, result = run_approval(tmp_path, rollback_type="database", requested_by="oncall", approvals=["dba"],
                                 priority="P1")
    assert event == "runner_on_failed"
    assert result["msg"] == ("database rollback needs roles dba, engineering_lead; have: dba (dba); "
                             "missing: engineering_lead (rule database)")
    assert result["approved"] is False
    assert result["rule"] == "database"
    assert result["missing_roles"] == ["engineering_lead"]
    assert result["emergency"] is False
    assert result["decision"]["approval_path"] == "denied"
    assert result["decision"]["requested_by"] == "oncall"
    assert result["changed"] is False


def test_approved_database_rollback_returns_the_rule_and_approvers(tmp_path):
    event, result = run_approval(tmp_path, rollback_type="database", requested_by="oncall",
                                 approvals=["dba", "eng-lead"], priority="P2")
    assert event == "runner_on_ok"
    assert result["approved"] is True and result["changed"] is False
    assert result["rule"] == "database"
    assert result["approved_by"] == [{"name": "dba", "roles": ["dba"]},
                                     {"name": "eng-lead", "roles": ["engineering_lead"]}]
    assert result["post_incident_review"] == "not_required"
    assert result["retroactive_approval_due"] is None


@pytest.mark.parametrize("approvals, expected", [(["devops-lead"], "runner_on_ok"), (["mallory"], "runner_on_failed")])
def test_check_mode_evaluates_exactly_the_same(tmp_path, approvals, expected):
    args = dict(rollback_type="configuration", requested_by="oncall", approvals=approvals)
    normal = run_approval(tmp_path, **args)
    checked = run_approval(tmp_path / "check", check=True, **args)
    assert normal[0] == checked[0] == expected
    for key in ("approved", "rule", "missing_roles", "emergency", "approved_by"):
        assert normal[1][key] == checked[1][key]


def test_deployment_row_comes_from_the_resolved_revisions(tmp_path):
    event, result = run_approval(tmp_path, rollback_type="deployment", requested_by="oncall",
                                 approval_facts={"to_revision": 2, "previous_revision": 2})
    assert event == "runner_on_ok" and result["rule"] == "deployment_last"
    assert result["decision"]["approval_path"] == "auto_approval"
    event, result = run_approval(tmp_path / "older", rollback_type="deployment", requested_by="oncall",
                                 approval_facts={"to_revision": 1, "previous_revision": 2})
    assert event == "runner_on_failed" and result["rule"] == "deployment_older"
    assert result["missing_roles"] == ["engineering_lead"]


def test_deployment_without_revisions_is_refused_rather_than_guessed(tmp_path):
    event, result = run_approval(tmp_path, rollback_type="deployment", requested_by="oncall")
    assert event == "runner_on_failed"
    assert "to_revision" in result["msg"] and "previous_revision" in result["msg"]


def test_roles_come_from_the_roster_not_from_the_approvals_list(tmp_path):
    roster = dict(ROSTER)
    del roster["dba"]
    event, result = run_approval(tmp_path, rollback_type="database", requested_by="oncall",
                                 approvals=["dba", "eng-lead"], roster=roster)
    assert event == "runner_on_failed"
    assert result["missing_roles"] == ["dba"]
    assert "dba (not in the roster)" in result["msg"]


def test_p0_emergency_override_returns_retroactive_deadline_and_review(tmp_path):
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    event, result = run_approval(tmp_path, rollback_type="policy", requested_by="oncall", approvals=["ciso"],
                                 priority="P0", incident_commander="ic", emergency_override=True)
    after = datetime.datetime.now(datetime.timezone.utc)
    assert event == "runner_on_ok"
    assert result["emergency"] is True and result["post_incident_review"] == "required"
    due = datetime.datetime.strptime(result["retroactive_approval_due"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc)
    assert before + datetime.timedelta(hours=4) <= due <= after + datetime.timedelta(hours=4)
    assert result["decision"]["retroactive_roles"] == ["governance_lead", "security"]


def test_emergency_override_outside_p0_is_denied(tmp_path):
    event, result = run_approval(tmp_path, rollback_type="policy", requested_by="oncall", approvals=["ciso"],
                                 priority="P1", incident_commander="ic", emergency_override=True)
    assert event == "runner_on_failed"
    assert "emergency override refused: an emergency override is only for P0 incidents, this one is P1" in result["msg"]
    assert result["retroactive_approval_due"] is None
