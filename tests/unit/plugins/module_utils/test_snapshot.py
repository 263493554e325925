"""Snapshot selection, the review against the manifest, the operation judgement and the plan, on plain data."""

import copy
import datetime
import hashlib
import json

import pytest

from ansible_collections.governed.rollback.plugins.module_utils import _snapshot as snap
from ansible_collections.governed.rollback.plugins.module_utils._common import Refused, RollbackError

UTC = datetime.timezone.utc


def sha(value):
    # The platform's own spelling (docs/aureus-guard-api.openapi.yaml), written out independently of _common.
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                          .encode("utf-8")).hexdigest()


def listed(sid, when, state_type="pipeline_deployment", description="Before deploying credit_risk_pipeline_v2",
           target="credit_risk_pipeline_v2"):
    return {"id": sid, "timestamp": when, "state_type": state_type, "description": description,
            "target": {"kind": "pipeline", "name": target}}


SNAPSHOTS = [
    listed("snap-c", "2024-01-15T12:00:00.5Z"),
    listed("snap-b", "2024-01-15T10:30:45Z"),
    listed("snap-a", "2024-01-15T09:00:00+01:00"),  # 08:00Z
    listed("snap-l", "2024-01-15T10:45:00Z", description="Before deploying loan_book_pipeline", target="loan_book"),
    listed("snap-d", "2024-01-15T10:50:00Z", state_type="dataset_onboarding", description="Onboarding credit_risk"),
]
INCIDENT = datetime.datetime(2024, 1, 15, 11, 0, tzinfo=UTC)

CONTENT = {"config": {"model": "credit_risk_xgb", "thresholds": {"pd_max": 0.05}}, "steps": ["ingest", "score"],
           "governance": {"approval_required": True, "note": "caf\u00e9"}}


def snapshot(content=None, **extra):
    content = copy.deepcopy(CONTENT if content is None else content)
    body = {"id": "snap-b", "timestamp": "2024-01-15T10:30:45Z", "state_type": "pipeline_deployment",
            "description": "Before deploying credit_risk_pipeline_v2",
            "target": {"kind": "pipeline", "name": "credit_risk_pipeline_v2"}, "content": content,
            "manifest": [{"key": k, "sha256": sha(v)} for k, v in sorted(content.items())],
            "content_sha256": sha(content)}
    body.update(extra)
    return body


# --- time ----------------------------------------------------------------------------------------------------------

def test_rfc3339_times_with_fractions_and_offsets_are_utc():
    assert snap.parse_time("2024-01-15T12:00:00.5Z") == datetime.datetime(2024, 1, 15, 12, 0, 0, 500000, tzinfo=UTC)
    assert snap.parse_time("2024-01-15T09:00:00+01:00") == datetime.datetime(2024, 1, 15, 8, 0, tzinfo=UTC)
    assert snap.parse_time("2024-01-15T09:00:00-0230") == datetime.datetime(2024, 1, 15, 11, 30, tzinfo=UTC)


@pytest.mark.parametrize("text", ["", "yesterday", "2024-01-15", "2024-13-01T00:00:00Z", "2024-01-15T10:30:45"])
def test_a_time_that_is_not_rfc3339_is_an_error_naming_it(text):
    with pytest.raises(RollbackError, match="before"):
        snap.parse_time(text, "before")


def test_the_data_window_runs_from_the_snapshot_to_now():
    window = snap.data_window(snap.parse_time("2024-01-15T10:30:45.9Z"), INCIDENT)
    assert window == {"from": "2024-01-15T10:30:45Z", "to": "2024-01-15T11:00:00Z", "seconds": 1754}


# --- selection -----------------------------------------------------------------------------------------------------

def test_the_newest_snapshot_of_the_type_before_the_incident_is_chosen():
    chosen = snap.select_snapshot(SNAPSHOTS, state_type="pipeline_deployment", before=INCIDENT)
    assert chosen["id"] == "snap-l"  # newer than snap-b, same type, any target
    chosen = snap.select_snapshot(SNAPSHOTS, state_type="pipeline_deployment", target="credit_risk_pipeline_v2",
                                  before=INCIDENT)
    assert chosen["id"] == "snap-b"  # snap-c is after the incident
    chosen = snap.select_snapshot(SNAPSHOTS, state_type="pipeline_deployment", description="CREDIT_RISK", before=INCIDENT)
    assert chosen["id"] == "snap-b"


def test_the_time_bound_is_strict_and_without_one_the_newest_wins():
    exactly = snap.parse_time("2024-01-15T10:30:45Z")
    assert snap.select_snapshot(SNAPSHOTS, state_type="pipeline_deployment", target="credit_risk_pipeline_v2",
                                before=exactly)["id"] == "snap-a"
    assert snap.select_snapshot(SNAPSHOTS, state_type="pipeline_deployment")["id"] == "snap-c"


def test_no_match_is_refused_listing_the_nearest_candidates_by_time():
    early = datetime.datetime(2024, 1, 15, 7, 0, tzinfo=UTC)
    with pytest.raises(Refused) as refused:
        snap.select_snapshot(SNAPSHOTS, state_type="pipeline_deployment", target="credit_risk_pipeline_v2",
                             before=early)
    assert refused.value.code == "no_snapshot"
    assert [c["id"] for c in refused.value.details["candidates"]] == ["snap-a", "snap-b", "snap-c"]
    assert "snap-a" in refused.value.msg and "taken before 2024-01-15T07:00:00Z" in refused.value.msg


def test_an_unknown_type_lists_every_snapshot_as_candidate():
    with pytest.raises(Refused) as refused:
        snap.select_snapshot(SNAPSHOTS, state_type="policy_change", before=INCIDENT, nearest=2)
    assert [c["id"] for c in refused.value.details["candidates"]] == ["snap-d", "snap-l"]


def test_by_id_it_must_exist_and_fit_the_criteria_given():
    assert snap.select_snapshot(SNAPSHOTS, snapshot_id="snap-c")["id"] == "snap-c"
    with pytest.raises(Refused) as refused:
        snap.select_snapshot(SNAPSHOTS, snapshot_id="snap-zz")
    assert refused.value.code == "snapshot_not_found" and "does not exist" in refused.value.msg
    with pytest.raises(Refused) as refused:
        snap.select_snapshot(SNAPSHOTS, snapshot_id="snap-c", before=INCIDENT)
    assert refused.value.code == "snapshot_not_found" and "taken before" in refused.value.msg


def test_neither_id_nor_type_is_an_error_and_a_nameless_entry_too():
    with pytest.raises(RollbackError, match="snapshot_id, or state_type"):
        snap.select_snapshot(SNAPSHOTS)
    with pytest.raises(RollbackError, match="without an id"):
        snap.select_snapshot([{"timestamp": "2024-01-15T10:30:45Z"}], state_type="x")


# --- review --------------------------------------------------------------------------------------------------------

def test_a_snapshot_matching_its_manifest_passes_the_review():
    review = snap.review_snapshot(snapshot())
    assert review["matches"] and review["problems"] == []
    assert review["recorded_sha256"] == review["computed_sha256"] == sha(CONTENT)
    assert review["manifest"] == [{"key": k, "sha256": sha(CONTENT[k])} for k in sorted(CONTENT)]
    assert review["items"] == 3


def test_a_tampered_item_is_refused_naming_it():
    tampered = snapshot()
    tampered["content"]["config"]["thresholds"]["pd_max"] = 0.5
    with pytest.raises(Refused) as refused:
        snap.review_snapshot(tampered)
    assert refused.value.code == "digest_mismatch"
    problems = refused.value.details["review"]["problems"]
    assert problems[0].startswith("config has sha256 ") and "the snapshot recorded" in problems[1]
    assert not refused.value.details["review"]["matches"]


def test_missing_extra_items_and_a_wrong_recorded_digest_are_refused():
    extra = snapshot()
    extra["content"]["debug"] = True
    missing = snapshot()
    del missing["content"]["steps"]
    wrong = snapshot(content_sha256="0" * 64)
    for body, needle in ((extra, "debug is in the content but not in the manifest"),
                         (missing, "steps is in the manifest but not in the content"),
                         (wrong, "the snapshot recorded " + "0" * 64)):
        with pytest.raises(Refused, match=needle):
            snap.review_snapshot(body)


def test_a_snapshot_without_content_or_manifest_is_an_error():
    with pytest.raises(RollbackError, match="no content, manifest or content_sha256"):
        snap.review_snapshot({"id": "snap-b", "manifest": []})
    with pytest.raises(RollbackError, match="malformed manifest entry"):
        snap.review_snapshot(snapshot(manifest=[{"name": "config"}]))


def test_the_diff_names_added_removed_and_changed_items():
    current = copy.deepcopy(CONTENT)
    current["config"]["thresholds"]["pd_max"] = 0.5
    current["debug"] = {"skip": True}
    del current["steps"]
    assert snap.diff_items(current, CONTENT) == {"added": ["steps"], "removed": ["debug"], "changed": ["config"]}
    assert snap.diff_items(None, CONTENT)["added"] == sorted(CONTENT)


# --- operations ----------------------------------------------------------------------------------------------------

def op(phase, restored=4, total=4, errors=None):
    return {"operation_id": "op-1", "phase": phase, "items_restored": restored, "items_total": total,
            "errors": errors or []}


def test_only_completed_with_every_item_and_no_error_is_a_success():
    assert snap.judge_operation(op("Completed")) == ("succeeded", "Completed, 4 of 4 items restored")
    assert snap.judge_operation(op("InProgress", 1))[0] == "running"
    assert snap.judge_operation(op("New", 0))[0] == "running"


@pytest.mark.parametrize("operation, needle", [
    (op("PartiallyFailed", 3, errors=[{"item": "steps", "message": "constraint"}]), "ended PartiallyFailed (3 of 4"),
    (op("Failed", 0, errors=[{"item": "config", "message": "aborted"}]), "config: aborted"),
    (op("Completed", 3), "says Completed but 3 of 4 items restored"),
    (op("Completed", None, None), "says Completed but None of None"),
    (op("Completed", errors=[{"item": "steps", "message": "skipped"}]), "reports errors: steps: skipped"),
    (op("Exploded"), "unknown phase"),
])
def test_any_other_outcome_is_a_failure(operation, needle):
    state, reason = snap.judge_operation(operation)
    assert state == "failed" and needle in reason


def test_the_idempotency_key_is_stable_per_rollback_and_snapshot():
    key = snap.idempotency_key("rollback-20240115-110000-abcdef", "snap-b")
    assert key == snap.idempotency_key("rollback-20240115-110000-abcdef", "snap-b")
    assert key != snap.idempotency_key("rollback-20240115-110000-abcdee", "snap-b")
    assert key != snap.idempotency_key("rollback-20240115-110000-abcdef", "snap-c")
    assert 0 < len(key) <= 255 and key.endswith(":snap-b")
    binding = snap.binding("snap-b", "a" * 64, "b" * 64)
    assert snap.idempotency_key(None, "snap-b", binding) == snap.idempotency_key("", "snap-b", dict(binding))
    assert snap.idempotency_key(None, "snap-b", binding) != snap.idempotency_key(None, "snap-b", {})


# --- the plan contract ---------------------------------------------------------------------------------------------

def test_the_plan_contract_binds_snapshot_and_both_digests_and_states_the_data_lost():
    body = snapshot()
    current_content = dict(CONTENT, debug=True)
    current = {"name": "credit_risk_pipeline_v2", "version": 2, "content": current_content,
               "content_sha256": sha(current_content)}
    window = snap.data_window(snap.parse_time(body["timestamp"]), INCIDENT)
    plan = snap.contract(body, snap.review_snapshot(body), current, window)
    assert plan["from_ref"] == "sha256:" + sha(current_content) and plan["to_ref"] == "sha256:" + sha(CONTENT)
    assert plan["skipped_reason"] is None and plan["approval_facts"] == {}
    assert plan["binding"] == {"snapshot_id": "snap-b", "snapshot_sha256": sha(CONTENT),
                               "current_sha256": sha(current_content)}
    fields = plan["receipt_fields"]
    assert fields["component"] == "credit_risk_pipeline_v2" and fields["snapshot_id"] == "snap-b"
    assert fields["changed_surfaces"] == ["state"] and fields["from_version"] == "2"
    assert fields["details"]["state_type"] == "pipeline_deployment"
    assert fields["details"]["data_window"] == {"from": "2024-01-15T10:30:45Z", "to": "2024-01-15T11:00:00Z",
                                                "seconds": 1755}
    assert "1755 s later" in fields["data_loss"]


def test_an_object_already_at_the_snapshot_is_skipped_and_a_deleted_one_is_restored():
    body = snapshot()
    review = snap.review_snapshot(body)
    window = snap.data_window(INCIDENT, INCIDENT)
    same = snap.contract(body, review, {"content": CONTENT, "content_sha256": sha(CONTENT)}, window)
    assert "already has the content of snapshot snap-b" in same["skipped_reason"]
    gone = snap.contract(body, review, None, window)
    assert gone["skipped_reason"] is None and gone["from_ref"] is None
    assert gone["binding"]["current_sha256"] is None
