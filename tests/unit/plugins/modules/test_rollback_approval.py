"""governed.rollback.rollback_approval run for real through ansible-runner (ad-hoc, as a role would call it)."""

import datetime
import json
import os
import re
import shutil
import subprocess
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
    """Run the module once on localhost; returns (event name, module result).

    The matrix tests below use typed (asserted) approvals; the signed mode has its own tests at the end."""
    args.setdefault("roster", ROSTER)
    args.setdefault("approval_mode", "asserted")
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


# --- signed approvals: real ssh-keygen signatures over the statement the module proposes -----------------------------

PLAN = {"target": "Deployment aureus/aureus-frontend", "from_ref": "sha256:" + "a" * 64, "to_ref": "sha256:" + "b" * 64,
        "binding": {"uid": "u-1", "generation": 7, "from_revision": 3, "to_revision": 1}}


def ssh_key(tmp_path, name):
    """A real ed25519 key made by ssh-keygen; returns (private key path, public key line)."""
    path = str(tmp_path / ("key-" + name))
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path], check=True)
    with open(path + ".pub") as handle:
        return path, handle.read().strip()


def sign(tmp_path, key_path, statement, name):
    """What an approver does: save the statement, ssh-keygen -Y sign it."""
    path = tmp_path / ("statement-" + name + ".json")
    path.write_text(statement)
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", key_path, "-n", "governed-rollback-approval", str(path)],
                   check=True, capture_output=True)
    return {"statement": statement, "signature": (tmp_path / ("statement-" + name + ".json.sig")).read_text()}


@pytest.fixture
def signed_world(tmp_path):
    if not shutil.which("ssh-keygen"):
        pytest.skip("ssh-keygen (OpenSSH client) is not installed")
    keys = dict((name, ssh_key(tmp_path, name)) for name in ("eng-lead", "mallory", "ic", "cto", "dba"))
    roster = dict(ROSTER)
    for name in ("eng-lead", "ic", "cto", "dba"):
        roster[name] = {"roles": ROSTER[name], "keys": [keys[name][1]]}
    roster["mallory"] = {"roles": ["engineering_lead"], "keys": [keys["mallory"][1]]}
    base = dict(rollback_type="deployment", requested_by="oncall", roster=roster, plan=PLAN, incident_id="INC-1",
                approval_mode="signed", approval_facts={"to_revision": 1, "previous_revision": 2})
    event, result = run_approval(tmp_path / "proposal", **base)
    assert event == "runner_on_failed"  # nobody has signed yet
    return tmp_path, keys, base, result["statement"]


def test_signed_mode_proposes_the_statement_bound_to_the_plan(signed_world):
    _tmp, _keys, _base, statement = signed_world
    data = json.loads(statement)
    assert statement.endswith("\n")
    assert data["target"] == PLAN["target"] and data["from_ref"] == PLAN["from_ref"] and data["to_ref"] == PLAN["to_ref"]
    assert data["incident_id"] == "INC-1" and data["rollback_type"] == "deployment"
    assert len(data["binding_sha256"]) == 64


def test_a_statement_signed_by_the_approvers_key_approves_the_older_version(signed_world):
    tmp_path, keys, base, statement = signed_world
    signed = sign(tmp_path, keys["eng-lead"][0], statement, "eng-lead")
    event, result = run_approval(tmp_path / "run", signed_approvals=[signed], **base)
    assert event == "runner_on_ok", result["msg"]
    assert result["rule"] == "deployment_older"
    decision = result["decision"]
    assert decision["approval_mode"] == "signed"
    assert [s["name"] for s in decision["verified_signers"]] == ["eng-lead"]
    assert re.match(r"^[0-9a-f]{64}$", decision["verified_signers"][0]["key_sha256"])
    assert result["approved_by"] == [{"name": "eng-lead", "roles": ["engineering_lead"]}]


def test_typed_names_do_not_count_in_signed_mode(signed_world):
    tmp_path, _keys, base, _statement = signed_world
    event, result = run_approval(tmp_path / "run", approvals=["eng-lead"], **base)
    assert event == "runner_on_failed"
    assert {"name": "eng-lead", "reason": "no valid signed statement for this plan"} in \
        result["decision"]["ignored_approvals"]


@pytest.mark.parametrize("change, reason", [
    ({"target": "Deployment aureus/other"}, "it approves target"),
    ({"to_ref": "sha256:" + "c" * 64}, "it approves to_ref"),
    ({"from_ref": "sha256:" + "d" * 64}, "it approves from_ref"),
    ({"binding_sha256": "0" * 64}, "it approves binding_sha256"),
    ({"incident_id": "INC-2"}, "it approves incident_id"),
    ({"rollback_type": "database"}, "it approves rollback_type"),
    ({"expires_at": "2020-01-01T00:00:00Z"}, "it expired at 2020-01-01T00:00:00Z"),
    ({"expires_at": "2999-01-01T00:00:00Z"}, "more than 24 hours from now"),
    ({"expires_at": "tomorrow"}, "is not a UTC time"),
])
def test_a_statement_for_something_else_is_refused_with_the_reason(signed_world, change, reason):
    tmp_path, keys, base, statement = signed_world
    data = json.loads(statement)
    data.update(change)
    other = json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n"
    signed = sign(tmp_path, keys["eng-lead"][0], other, "eng-lead")
    event, result = run_approval(tmp_path / "run", signed_approvals=[signed], **base)
    assert event == "runner_on_failed"
    rejected = result["rejected_statements"]
    assert len(rejected) == 1 and rejected[0]["name"] == "eng-lead" and reason in rejected[0]["reason"], rejected
    assert result["approved_by"] == []


def test_a_key_not_in_the_roster_and_an_edited_statement_are_refused(signed_world):
    tmp_path, keys, base, statement = signed_world
    stranger_key, _stranger_pub = ssh_key(tmp_path, "stranger")
    by_stranger = sign(tmp_path, stranger_key, statement, "stranger")
    edited = sign(tmp_path, keys["eng-lead"][0], statement, "eng-lead")
    edited["statement"] = statement.replace("INC-1", "INC-9")
    event, result = run_approval(tmp_path / "run", signed_approvals=[by_stranger, edited], **base)
    assert event == "runner_on_failed"
    reasons = [r["reason"] for r in result["rejected_statements"]]
    assert any("which no one in the roster holds" in r for r in reasons), reasons
    assert any("does not verify" in r for r in reasons), reasons


def test_the_requester_is_the_launching_awx_user(signed_world):
    tmp_path, _keys, base, _statement = signed_world
    event, result = run_approval(tmp_path / "run", launched_by="mallory", **base)
    assert event == "runner_on_failed"
    assert "is not the user who launched this job ('mallory')" in result["msg"]


def test_asserted_approvals_are_refused_in_production(tmp_path):
    event, result = run_approval(tmp_path, rollback_type="database", requested_by="oncall", approvals=["dba", "eng-lead"],
                                 environment="prod")
    assert event == "runner_on_failed"
    assert "typed (asserted) approvals are not accepted in environment prod" in result["msg"]


def test_incident_commander_must_sign_and_cannot_also_be_the_extra_approver(signed_world):
    tmp_path, keys, base, statement = signed_world
    args = dict(base, rollback_type="database", priority="P0", incident_commander="ic", emergency_override=True,
                approval_facts={})
    event, result = run_approval(tmp_path / "proposal-db", **args)
    db_statement = result["statement"]
    by_cto = sign(tmp_path, keys["cto"][0], db_statement, "cto")
    event, result = run_approval(tmp_path / "no-ic", signed_approvals=[by_cto], **args)
    assert event == "runner_on_failed"
    assert "incident commander ic has no valid signed statement for this plan" in result["msg"]
    by_ic = sign(tmp_path, keys["ic"][0], db_statement, "ic")
    event, result = run_approval(tmp_path / "both", signed_approvals=[by_cto, by_ic], **args)
    assert event == "runner_on_ok", result["msg"]
    assert result["decision"]["approval_path"] == "emergency_override"
    assert sorted(s["name"] for s in result["decision"]["verified_signers"]) == ["cto", "ic"]
