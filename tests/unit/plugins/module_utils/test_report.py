"""The rollback report and the post-rollback actions, on plain receipts and pack manifests shaped like real ones."""

import datetime
import html.parser
import json
import os

import pytest

from ansible_collections.governed.rollback.plugins.module_utils import _report as rp
from ansible_collections.governed.rollback.plugins.module_utils import _report_files as rf
from ansible_collections.governed.rollback.plugins.module_utils import _receipt

SHA_A = "a" * 64
SHA_B = "b" * 64


def receipt(**overrides):
    value = {
        "rollback_id": "rollback-20261130-074851-2385a9", "rollback_type": "deployment", "outcome": "succeeded",
        "incident_id": "INC-12345", "requested_by": "oncall", "approver": "eng-lead",
        "approved_by": [{"name": "eng-lead", "roles": ["engineering_lead"]}],
        "started_at": "2026-11-30T07:48:51Z", "completed_at": "2026-11-30T07:49:29Z",
        "environment": "sandbox", "reason": "Breaking UI changes affecting user workflows",
        "component": "aureus-frontend", "from_version": "aureus/frontend:v0.1.2", "to_version": "aureus/frontend:v0.1.1",
        "current_ref": "sha256:" + SHA_A, "rollback_target_ref": "sha256:" + SHA_B,
        "details": {"from_revision": 3, "to_revision": 2, "namespace": "aureus", "priority": "P2",
                    "rollout_seconds": 0.518},
        "verification": {"health": "pass", "rollout_complete": "pass", "smoke_tests": "skipped",
                         "policy_invariants": "not_run", "user_validation": "not_required"},
        "approval": {"approved": True, "rule": "deployment_older", "rule_label": "deployment rollback to an older version",
                     "approval_path": "approval", "approval_mode": "signed", "evaluated_at": "2026-11-30T07:49:05Z",
                     "missing_roles": [], "emergency": False,
                     "verified_signers": [{"name": "eng-lead", "key_sha256": "c" * 64, "statement_sha256": "d" * 64,
                                           "expires": "2026-11-30T09:00:00Z"}]},
        "emergency": False, "retroactive_approval_due": None, "post_incident_review": "not_required",
        "evidence": {"archive": "/srv/evidence/rollback-20261130-074851-2385a9.tar.gz", "archive_sha256": "e" * 64,
                     "manifest": "/srv/evidence/rollback-20261130-074851-2385a9/manifest.json",
                     "manifest_sha256": "f" * 64},
        "signing": {"required": True, "signed": True, "keyid": "1" * 64},
        "redaction": {"status": "passed"},
    }
    value.update(overrides)
    return value


def entry(rec=None, seq=7):
    return {"seq": seq, "receipt_sha256": "2" * 64, "entry_sha256": "3" * 64, "recorded_at": "2026-11-30T07:49:29Z",
            "rollback_id": (rec or receipt())["rollback_id"], "receipt": rec or receipt(), "signatures": [{"sig": "x"}]}


def pack(failed=False):
    phases = {"before": {"started_at": "2026-11-30T07:49:15Z", "finished_at": "2026-11-30T07:49:16Z",
                         "files": [{"path": "before/workload/Deployment-aureus-frontend.yaml", "sha256": "4" * 64,
                                    "size": 2048}]}}
    last = "failure" if failed else "after"
    phases[last] = {"started_at": "2026-11-30T07:49:25Z", "finished_at": "2026-11-30T07:49:26Z",
                    "files": [{"path": last + "/workload/Deployment-aureus-frontend.yaml", "sha256": "5" * 64,
                               "size": 2050}]}
    manifest = {"rollback_id": "rollback-20261130-074851-2385a9", "incomplete": False,
                "redaction": {"status": "passed"},
                "phases": dict((p, {"manifest": p + "/manifest.json", "manifest_sha256": "6" * 64,
                                    "started_at": v["started_at"], "finished_at": v["finished_at"]})
                               for p, v in phases.items()),
                "diff": {"to": last, "changed": [{"path": "workload/Deployment-aureus-frontend.yaml",
                                                  "status": "modified",
                                                  "changed_fields": ["spec.template.spec.containers[0].image"]}]},
                "archive": {"path": "rollback-20261130-074851-2385a9.tar.gz", "sha256": "e" * 64, "size": 14780,
                            "index_sha256": "7" * 64}}
    return {"manifest": manifest, "phases": phases}


class Text(html.parser.HTMLParser):
    """The page's visible text, the way a reader (or the browser's DOM) sees it."""

    def __init__(self):
        super().__init__()
        self.parts, self.tags, self._skip = [], [], 0

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("style", "title"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("style", "title"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def visible(page):
    parser = Text()
    parser.feed(page)
    return " ".join(" ".join(parser.parts).split()), parser.tags


def render(rec=None, the_pack=None, **kwargs):
    model = rp.build_report(entry(rec), pack() if the_pack is None else the_pack, ledger="/srv/ledger.jsonl", **kwargs)
    return model, rp.render_report(model)


# --- the page ------------------------------------------------------------------------------------------------------


def test_report_shows_outcome_approval_changes_checklist_and_receipt():
    _model, page = render()
    text, _tags = visible(page)
    assert "SUCCEEDED" in text and "deployment rollback in sandbox" in text
    assert "eng-lead (engineering_lead)" in text and "deployment rollback to an older version" in text
    assert "Signed statements verified" in text and "d" * 64 in text
    assert "aureus/frontend:v0.1.2" in text and "aureus/frontend:v0.1.1" in text and "sha256:" + SHA_B in text
    assert "rollout complete" in text and "policy invariants" in text
    assert "before/workload/Deployment-aureus-frontend.yaml" in text and "4" * 64 in text
    assert "Ledger seq 7" in text and "2" * 64 in text and "3" * 64 in text
    assert "playbooks/verify-receipts.yml -e receipt_ledger=/srv/ledger.jsonl" in text
    assert "playbooks/report.yml -e rollback_id=rollback-20261130-074851-2385a9" in text


def test_report_is_self_contained_no_script_no_network():
    _model, page = render()
    _text, tags = visible(page)
    assert not [t for t, _a in tags if t in ("script", "link", "img", "iframe", "object", "embed")]
    assert "http-equiv=\"Content-Security-Policy\" content=\"default-src &#x27;none&#x27;" in page
    assert "https://" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert 'name="viewport"' in page and "@media print" in page


def test_report_is_deterministic():
    assert render()[1] == render()[1]


def test_timeline_is_in_utc_and_america_chicago():
    model, page = render()
    events = [(t["at"], t["event"]) for t in model["timeline"]]
    assert events[0] == ("2026-11-30T07:48:51Z", events[0][1]) and events[0][1].startswith("Rollback started")
    assert [t["at"] for t in model["timeline"]] == sorted(t["at"] for t in model["timeline"])
    assert any(e.startswith("Approval granted (rule deployment_older") for _a, e in events)
    assert any(e.startswith("Freeze and preserve evidence") for _a, e in events)
    assert ("2026-11-30T07:49:16Z", "Rollout complete (0.5 s after the change)") in events
    # 07:48:51 UTC on 30 November is 01:48:51 CST (UTC-6); in July it is CDT (UTC-5).
    assert model["timeline"][0]["at_local"] == "2026-11-30 01:48:51 CST"
    assert "America/Chicago" in page
    july = datetime.datetime(2026, 7, 1, 12, 0, tzinfo=datetime.timezone.utc)
    assert rp.local_time(july) == "2026-07-01 07:00:00 CDT"


def test_chicago_fallback_rule_matches_the_zone_database():
    moments = [datetime.datetime(2026, 3, 8, 7, 59, tzinfo=datetime.timezone.utc),
               datetime.datetime(2026, 3, 8, 8, 0, tzinfo=datetime.timezone.utc),
               datetime.datetime(2026, 11, 1, 6, 59, tzinfo=datetime.timezone.utc),
               datetime.datetime(2026, 11, 1, 7, 0, tzinfo=datetime.timezone.utc)]
    for moment in moments:
        hours, name = rp._chicago_offset(moment)
        assert rp.local_time(moment) == (moment + datetime.timedelta(hours=hours)).strftime("%Y-%m-%d %H:%M:%S ") + name


def test_every_value_is_escaped():
    hostile = '<script>alert(1)</script>"\'&'
    rec = receipt(reason=hostile, component=hostile, details={"note": hostile, "priority": "P1"},
                  failure={"task": hostile, "message": hostile}, outcome="failed")
    rec["approval"]["message"] = hostile
    rec["verification"][hostile.replace("<", "x")] = "fail"
    _model, page = render(rec)
    assert "<script>" not in page and "alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;&amp;" in page
    text, tags = visible(page)
    assert not [t for t, _a in tags if t == "script"]
    assert hostile in text


def test_missing_fields_degrade_instead_of_failing():
    bare = {"rollback_id": "rollback-x", "outcome": "denied"}
    model = rp.build_report({"receipt": bare}, None)
    page = rp.render_report(model)
    text, _tags = visible(page)
    assert "DENIED" in text and "not recorded" in text
    assert "No approval decision was recorded" in text and "No evidence files were captured" in text
    assert "(not recorded)" in text  # no ledger seq
    assert rp.render_report(rp.build_report({}, {})).startswith("<!DOCTYPE html>")


def test_failed_rollback_says_where_it_stopped():
    rec = receipt(outcome="failed", failure={"task": "Assert the rollback is verified",
                                             "message": "Verification failed: rollout_complete False"})
    rec["verification"]["rollout_complete"] = "fail"
    model, page = render(rec, pack(failed=True))
    text, _tags = visible(page)
    assert "FAILED" in text and "Stopped at: Assert the rollback is verified" in text
    assert "Verification failed: rollout_complete False" in text
    assert any(t["event"] == "Rollback stopped at: Assert the rollback is verified; state preserved as evidence"
               for t in model["timeline"])
    assert "escalate" in [f["id"] for f in model["actions"]["follow_ups"]]
    assert "it did not complete" in model["actions"]["incident_update"]


def test_denied_rollback_stops_at_approval_and_lists_missing_roles():
    rec = receipt(outcome="denied", approved_by=[], approver=None, evidence=None)
    rec["approval"].update(approved=False, missing_roles=["engineering_lead"], approval_path="denied",
                           message="needs roles engineering_lead", verified_signers=[])
    model, page = render(rec, {})
    text, _tags = visible(page)
    assert "Stopped at: approval" in text and "needs roles engineering_lead" in text
    ids = [f["id"] for f in model["actions"]["follow_ups"]]
    assert "approvals" in ids and "postmortem" not in ids
    assert "not approved; nothing was changed" in model["actions"]["incident_update"]


def test_emergency_override_shows_retroactive_approval_due():
    rec = receipt(emergency=True, retroactive_approval_due="2026-11-30T11:49:05Z", post_incident_review="required")
    rec["approval"].update(emergency=True, approval_path="emergency_override", incident_commander="ic-alice",
                           retroactive_approval_due="2026-11-30T11:49:05Z")
    model, page = render(rec)
    text, _tags = visible(page)
    assert "EMERGENCY override by incident commander ic-alice" in text
    assert "2026-11-30T11:49:05Z (2026-11-30 05:49:05 CST)" in text
    due = dict((f["id"], f["due"]) for f in model["actions"]["follow_ups"])
    assert due["retroactive-approval"] == "2026-11-30T11:49:05Z"
    assert due["post-incident-review"] == "2026-12-02T07:49:29Z"


# --- verification details ------------------------------------------------------------------------------------------


def metric(**overrides):
    value = {"name": "error ratio (5m)", "query": 'sum(rate(http_requests_total{code=~"5.."}[5m]))',
             "result": "pass", "baseline": 0.01, "value": 0.002, "condition": "result <= 0.02",
             "measurements": [{"at": "2026-11-30T07:49:00Z", "value": "0.2"},
                              {"at": "2026-11-30T07:49:20Z", "value": 0.05},
                              {"at": "2026-11-30T07:49:40Z", "value": 0.002}]}
    value.update(overrides)
    return value


def test_metrics_render_with_values_and_one_chart_each():
    details = {"metrics": [metric(), metric(name="p95 latency", result="inconclusive", measurements=[])],
               "contracts": [{"name": "GET /v1/health", "result": "pass", "status": 200}],
               "policy_invariants": [{"name": "403/404 policy-safe", "result": "fail"}],
               "logs": {"errors_after": 0, "window": "5m"}}
    _model, page = render(receipt(verification_details=details))
    text, tags = visible(page)
    assert "error ratio (5m)" in text and "0.002" in text and "0.01" in text and "result <= 0.02" in text
    assert 'code=~"5.."' in text
    assert [t for t, _a in tags].count("svg") == 1  # the latency metric has no measurements: no chart, no error
    assert "inconclusive" in text and "GET /v1/health" in text and "403/404 policy-safe" in text
    assert "status=200" in text  # fields beyond name and result are shown, not dropped
    assert "errors after" in text and "Logs" in text


def test_chart_marks_baseline_and_the_change():
    chart = rp.metric_chart(metric(), marker="2026-11-30T07:49:16Z")
    assert chart.startswith("<svg") and "stroke-dasharray" in chart and "rollback" in chart
    assert chart.count("<circle") == 3
    assert rp.metric_chart(metric(measurements=[{"at": "bad", "value": 1}, {"at": None, "value": "x"}])) is None
    flat = rp.metric_chart(metric(baseline=None, measurements=[{"at": "2026-11-30T07:49:00Z", "value": 1},
                                                               {"at": "2026-11-30T07:49:10Z", "value": 1}]))
    assert "nan" not in flat.lower() and "inf" not in flat.lower()


def test_without_verification_details_the_page_says_so():
    _model, page = render()
    assert "No metric, contract or invariant details were recorded" in visible(page)[0]


# --- post-rollback actions -----------------------------------------------------------------------------------------


def test_actions_have_the_48_hour_postmortem_and_the_kfm_update():
    actions = rp.post_rollback_actions(receipt(), entry())
    assert actions["postmortem_due"] == "2026-12-02T07:49:29Z"
    assert actions["incident_update"].startswith("**Update (UTC):** 07:49 UTC / 01:49 CST - INC-12345")
    assert "Next update in: 30 minutes." in actions["incident_update"]
    ids = [f["id"] for f in actions["follow_ups"]]
    for wanted in ("incident-timeline", "notify", "status-page", "archive-evidence", "postmortem", "follow-up-pr",
                   "root-cause", "rollback-test", "runbook", "monitoring"):
        assert wanted in ids
    assert actions["ledger_seq"] == 7 and actions["receipt_sha256"] == "2" * 64
    json.dumps(actions)  # set_stats and the webhook carry it as JSON


def test_incident_update_is_policy_safe():
    rec = receipt(reason="dataset credit_risk_pii leaked", component="pii-vault",
                  failure={"task": "x", "message": "password=hunter2hunter2"}, incident_id="INC-1 <b>")
    update = rp.incident_update(rec)
    for leak in ("credit_risk_pii", "pii-vault", "hunter2", "aureus", "oncall", "eng-lead", "<b>"):
        assert leak not in update
    restricted = rp.incident_update(receipt(incident_id="INC-credit_risk"), restricted_names=["credit_risk"])
    assert "credit_risk" not in restricted and "INC-" not in restricted
    assert "credit_risk" not in rp.post_rollback_actions(receipt(), restricted_names=["credit_risk"])["incident_update"]


def test_policy_rollback_asks_for_governance_review():
    ids = [f["id"] for f in rp.follow_ups(receipt(rollback_type="policy"))]
    assert "governance-review" in ids
    assert "governance-review" not in [f["id"] for f in rp.follow_ups(receipt())]


# --- the overview --------------------------------------------------------------------------------------------------


def test_overview_lists_outcomes_and_open_retroactive_approvals():
    urgent = receipt(rollback_id="rollback-e1", emergency=True, retroactive_approval_due="2026-11-30T08:00:00Z")
    later = receipt(rollback_id="rollback-e2", emergency=True, retroactive_approval_due="2026-12-01T08:00:00Z")
    entries = [entry(receipt(), 1), entry(receipt(rollback_id="rollback-f", outcome="failed"), 2),
               entry(urgent, 3), entry(later, 4)]
    now = datetime.datetime(2026, 11, 30, 9, 0, tzinfo=datetime.timezone.utc)
    page = rp.render_overview(entries, now=now, ledger="/srv/ledger.jsonl", reports=["rollback-f"])
    text, tags = visible(page)
    assert "succeeded 3" in text and "failed 1" in text
    assert "rollback-e1" in text and "OVERDUE" in text and "DUE" in text
    assert ("a", {"href": "rollback-f/report.html", "class": "mono"}) in tags
    rows, emergencies, _counts = rp.overview_rows(entries, now)
    assert [r["seq"] for r in rows] == [4, 3, 2, 1]
    assert [(e["rollback_id"], e["overdue"]) for e in emergencies] == [("rollback-e1", True), ("rollback-e2", False)]


# --- files: the sidecar, regeneration, the scan --------------------------------------------------------------------


@pytest.fixture
def recorded(tmp_path):
    """A real ledger (unsigned receipt appended by _receipt) and a pack directory on disk."""
    ledger = str(tmp_path / "ledger.jsonl")
    evidence = str(tmp_path / "evidence")
    rec = _receipt.build_receipt(
        {"rollback_id": "rollback-20261130-074851-2385a9", "rollback_type": "deployment", "outcome": "failed",
         "incident_id": "INC-12345", "requested_by": "oncall", "environment": "sandbox", "reason": "Breaking UI",
         "component": "aureus-frontend", "started_at": "2026-11-30T07:48:51Z", "completed_at": "2026-11-30T07:49:29Z",
         "failure": {"task": "Roll back and wait for the rollout", "message": "rollout did not complete"}},
        approval={"approved": True, "rule": "deployment_last", "approval_path": "auto_approval", "missing_roles": [],
                  "emergency": False, "requested_by": "oncall",
                  "approved_by": [{"name": "oncall", "roles": ["on_call_engineer"]}]},
        signing_required=False)
    _receipt.append_receipt(ledger, rec)
    directory = os.path.join(evidence, rec["rollback_id"])
    p = pack(failed=True)
    for phase, manifest in p["phases"].items():
        os.makedirs(os.path.join(directory, phase))
        with open(os.path.join(directory, phase, "manifest.json"), "w") as handle:
            json.dump(manifest, handle)
    with open(os.path.join(directory, "manifest.json"), "w") as handle:
        json.dump(p["manifest"], handle)
    return evidence, ledger, rec["rollback_id"]


def test_written_report_verifies_by_regeneration_and_a_second_write_changes_nothing(recorded):
    evidence, ledger, rid = recorded
    _model, page, side = rf.render_for(evidence, ledger, rid, "America/Chicago")
    assert side["ledger_seq"] == 1 and side["receipt_sha256"] == _receipt.find_entry(ledger, rid)["receipt_sha256"]
    assert rf.write_report(evidence, rid, page, side)[0] is True
    assert rf.verify_report(evidence, rid, page, side) == []
    _model, again, side_again = rf.render_for(evidence, ledger, rid, "America/Chicago")
    assert (again, side_again) == (page, side)
    assert rf.write_report(evidence, rid, again, side_again)[0] is False
    with open(os.path.join(evidence, rid, "report.json")) as handle:
        assert json.load(handle)["report_sha256"] == side["report_sha256"]


def test_an_edited_report_or_sidecar_fails_verification(recorded):
    evidence, ledger, rid = recorded
    _model, page, side = rf.render_for(evidence, ledger, rid, "America/Chicago")
    rf.write_report(evidence, rid, page, side)
    path = os.path.join(evidence, rid, "report.html")
    with open(path, "a") as handle:
        handle.write("<!-- approved by someone else -->")
    problems = rf.verify_report(evidence, rid, page, side)
    assert any("differs from its regeneration" in p for p in problems)
    assert any("does not match the sha256 its sidecar records" in p for p in problems)


def test_report_of_an_unrecorded_rollback_is_refused(recorded):
    evidence, ledger, _rid = recorded
    with pytest.raises(rf.ReportError, match="no receipt of rollback-other in the ledger"):
        rf.render_for(evidence, ledger, "rollback-other", "America/Chicago")
    with pytest.raises(rf.ReportError, match="no receipt"):
        rf.render_for(evidence, ledger + ".missing", "rollback-other", "America/Chicago")


def test_a_secret_in_the_inputs_keeps_the_report_from_being_written(recorded, monkeypatch):
    evidence, ledger, rid = recorded
    canary = "canary-rpt-" + "Zq8x" * 5
    original = rp.build_report

    def planted(*args, **kwargs):
        model = original(*args, **kwargs)
        model["facts"].append(("leak", "password=%s" % canary))
        return model

    monkeypatch.setattr(rp, "build_report", planted)
    with pytest.raises(rf.ReportError, match="secret scan found report.html") as caught:
        rf.render_for(evidence, ledger, rid, "America/Chicago")
    assert canary not in caught.value.msg
    assert not os.path.exists(os.path.join(evidence, rid, "report.html"))


def test_escaping_does_not_hide_a_secret_from_the_scan():
    canary = "Zq8xZq8xZq8xZq8xZq8x"
    page = "<td>%s</td>" % rp.esc('password="%s"' % canary)
    assert "&quot;" in page
    assert rf.scan(page, "report.html")


# --- the webhook's retry policy ------------------------------------------------------------------------------------


def test_deliver_retries_with_exponential_backoff_and_never_raises():
    answers, slept = [OSError("connection refused"), 503, 429, 204], []

    def post(body):
        assert json.loads(body.decode("utf-8")) == {"a": 1}
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    result = rf.deliver(post, {"a": 1}, retries=3, backoff=0.5, sleep=slept.append, jitter=lambda: 0.0)
    assert result == {"sent": True, "status": 204, "attempts": 4,
                      "errors": ["attempt 1: connection refused", "attempt 2: HTTP 503", "attempt 3: HTTP 429"]}
    assert slept == [0.5, 1.0, 2.0]


def test_deliver_gives_up_on_a_client_error_and_after_the_last_retry():
    result = rf.deliver(lambda body: 404, {}, retries=3, backoff=1, sleep=lambda s: None)
    assert result["sent"] is False and result["attempts"] == 1 and result["errors"] == ["attempt 1: HTTP 404"]
    result = rf.deliver(lambda body: 500, {}, retries=2, backoff=1, sleep=lambda s: None)
    assert result["sent"] is False and result["attempts"] == 3


def test_endpoint_label_hides_the_path_and_credentials():
    assert rf.endpoint_label("https://user:pw@hooks.example.com:8443/services/T000/B000/XXXX") == \
        "https://hooks.example.com:8443"


def test_a_rollout_that_never_completed_is_not_called_complete():
    rec = receipt(outcome="failed", failure={"task": "Roll back and wait for the rollout", "message": "timeout"})
    rec["details"]["rollout_seconds"] = 15.0
    model, _page = render(rec, pack(failed=True))
    events = [t["event"] for t in model["timeline"]]
    assert "Rollout wait ended without completing (15 s after the change)" in events
    assert not [e for e in events if e.startswith("Rollout complete")]
