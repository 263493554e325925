"""governed.rollback.rollback_report run for real through ansible-runner: check mode, diff, idempotence, verify, the
overview, and a receipt whose pack is missing (no server is involved: a ledger and a pack on disk)."""

import json
import os
import sys

import ansible_runner
import pytest

from ansible_collections.governed.rollback.plugins.module_utils import _receipt as R

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
RID = "rollback-20261130-074851-2385a9"


def run_task(tmp_path, args, check=False, diff=False):
    private = tmp_path / ("runner-%d" % len(list(tmp_path.glob("runner-*"))))
    private.mkdir(parents=True)
    playbook = str(private / "play.yml")
    with open(playbook, "w") as handle:
        json.dump([{"hosts": "localhost", "gather_facts": False,
                    "tasks": [{"name": "report", "governed.rollback.rollback_report": args, "register": "out",
                               "ignore_errors": True}]}], handle)
    env = {"ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    flags = " ".join(f for f, on in (("--check", check), ("--diff", diff)) if on) or None
    runner = ansible_runner.run(private_data_dir=str(private), playbook=playbook, quiet=True, envvars=env,
                                inventory="localhost ansible_connection=local ansible_python_interpreter=%s"
                                          % sys.executable, cmdline=flags)
    results = [dict(e["event_data"]["res"], failed=e["event"] == "runner_on_failed") for e in runner.events
               if e["event"] in ("runner_on_ok", "runner_on_failed")]
    assert len(results) == 1, runner.stdout.read()
    return results[0]


@pytest.fixture
def recorded(tmp_path):
    ledger, evidence = str(tmp_path / "ledger.jsonl"), str(tmp_path / "evidence")
    approval = {"approved": True, "rule": "deployment_last", "approval_path": "auto_approval", "missing_roles": [],
                "emergency": False, "requested_by": "oncall",
                "approved_by": [{"name": "oncall", "roles": ["on_call_engineer"]}]}
    receipt = R.build_receipt(
        {"rollback_id": RID, "rollback_type": "deployment", "outcome": "succeeded", "incident_id": "INC-12345",
         "requested_by": "oncall", "environment": "sandbox", "reason": "Breaking UI", "component": "frontend",
         "current_ref": "sha256:" + "a" * 64, "rollback_target_ref": "sha256:" + "b" * 64,
         "started_at": "2026-11-30T07:48:51Z", "completed_at": "2026-11-30T07:49:29Z"},
        approval=approval, evidence={"archive": "x.tar.gz", "archive_sha256": "c" * 64}, signing_required=False)
    R.append_receipt(ledger, receipt)
    os.makedirs(os.path.join(evidence, RID, "before"))
    with open(os.path.join(evidence, RID, "before", "manifest.json"), "w") as handle:
        json.dump({"started_at": "2026-11-30T07:49:15Z", "finished_at": "2026-11-30T07:49:16Z",
                   "files": [{"path": "before/workload/x.yaml", "sha256": "d" * 64, "size": 10}]}, handle)
    return {"ledger": ledger, "evidence_dir": evidence, "rollback_id": RID}


def test_check_mode_plans_then_writes_then_changes_nothing(tmp_path, recorded):
    page = os.path.join(recorded["evidence_dir"], RID, "report.html")

    planned = run_task(tmp_path, recorded, check=True, diff=True)
    assert planned["changed"] is True and planned["failed"] is False
    assert not os.path.exists(page)
    assert json.loads(planned["diff"]["after"])["report_sha256"] == planned["report_sha256"]
    assert planned["notification"] == {"sent": False, "skipped": "check mode"}

    written = run_task(tmp_path, recorded)
    assert written["changed"] is True and written["report_sha256"] == planned["report_sha256"]
    assert written["ledger_seq"] == 1 and os.path.exists(page)
    assert written["actions"]["postmortem_due"] == "2026-12-02T07:49:29Z"
    assert written["notification"]["sent"] is False and "no webhook configured" in written["notification"]["skipped"]

    again = run_task(tmp_path, recorded)
    assert again["changed"] is False and again["report_sha256"] == written["report_sha256"]

    verified = run_task(tmp_path, dict(recorded, state="verify"))
    assert verified["verified"] is True and verified["problems"] == []


def test_verify_fails_on_an_edited_report_and_the_overview_lists_the_rollback(tmp_path, recorded):
    run_task(tmp_path, recorded)
    with open(os.path.join(recorded["evidence_dir"], RID, "report.html"), "a") as handle:
        handle.write("edited")
    verified = run_task(tmp_path, dict(recorded, state="verify"))
    assert verified["failed"] is True and verified["verified"] is False
    assert "differs from its regeneration" in verified["msg"]

    overview = run_task(tmp_path, {"state": "overview", "ledger": recorded["ledger"],
                                   "evidence_dir": recorded["evidence_dir"]})
    assert overview["changed"] is True and overview["overview"]["entries"] == 1
    with open(overview["report_path"]) as handle:
        text = handle.read()
    assert 'href="%s/report.html"' % RID in text
    assert run_task(tmp_path, {"state": "overview", "ledger": recorded["ledger"],
                               "evidence_dir": recorded["evidence_dir"]})["changed"] is False


def test_a_rollback_without_a_pack_gets_its_actions_but_no_page_unless_report_dir(tmp_path, recorded):
    os.rename(os.path.join(recorded["evidence_dir"], RID), str(tmp_path / "moved"))
    result = run_task(tmp_path, recorded)
    assert result["changed"] is False and result["report_path"] is None
    assert "has no evidence pack" in result["skipped_reason"]
    assert result["actions"]["rollback_id"] == RID
    assert not os.path.exists(os.path.join(recorded["evidence_dir"], RID))

    elsewhere = str(tmp_path / "pages")
    result = run_task(tmp_path, dict(recorded, report_dir=elsewhere))
    assert result["changed"] is True and result["report_path"] == os.path.join(elsewhere, "report.html")


def test_bad_input_is_refused_naming_the_problem(tmp_path, recorded):
    unknown = run_task(tmp_path, dict(recorded, rollback_id="rollback-nope"))
    assert unknown["failed"] and "no receipt of rollback-nope in the ledger" in unknown["msg"]
    zone = run_task(tmp_path, dict(recorded, zone="Mars/Olympus"))
    assert zone["failed"] and "zone 'Mars/Olympus' is not a time zone" in zone["msg"]
    missing = run_task(tmp_path, {"ledger": recorded["ledger"]})
    assert missing["failed"] and "rollback_id is required" in missing["msg"]
    assert not os.path.exists(os.path.join(recorded["evidence_dir"], RID, "report.html"))
