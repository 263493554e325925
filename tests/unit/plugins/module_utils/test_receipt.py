"""Receipts and their ledger: schema, secret guard, canonical hashing, DSSE signing, chain, signed head."""

import base64
import copy
import datetime
import json
import multiprocessing
import os
import re

import pytest
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner

from ansible_collections.governed.rollback.plugins.module_utils import _receipt as R
from ansible_collections.governed.rollback.plugins.module_utils._approval import evaluate
from ansible_collections.governed.rollback.plugins.module_utils._receipt_schema import PREDICATE_TYPE, RECEIPT_SCHEMA
from ansible_collections.governed.rollback.plugins.module_utils._common import new_rollback_id

ROSTER = {"oncall": ["on_call_engineer"], "eng-lead": ["engineering_lead"], "dba": ["dba"],
          "ic": ["incident_commander"], "cto": ["cto"], "devops-lead": ["devops_lead"]}
NOW = datetime.datetime(2024, 1, 15, 10, 30, 45, tzinfo=datetime.timezone.utc)
ARCHIVE_SHA = "c" * 64


def new_signer():
    return R.load_signer(CryptoSigner.generate_ed25519().private_bytes)


@pytest.fixture(scope="module")
def signer():
    return new_signer()


@pytest.fixture
def ledger(tmp_path):
    return str(tmp_path / "receipts" / "ledger.jsonl")


def approval(approvals=("dba", "eng-lead"), **kwargs):
    return {"decision": evaluate("database", "oncall", list(approvals), ROSTER, now=NOW, **kwargs)}


def make_receipt(signer, rollback_id="rollback-20240115-103045", outcome="succeeded", approvals=("dba", "eng-lead"),
                 now=NOW, **fields):
    base = dict(
        rollback_id=rollback_id, outcome=outcome, incident_id="INC-12345", environment="sandbox",
        reason="v0.1.2-add-pii-tracking-table breaks the metadata API", component="database",
        from_version="v0.1.2", to_version="v0.1.1", current_ref="sha256:" + "a" * 64,
        rollback_target_ref="b" * 40, migration_reverted="v0.1.2-add-pii-tracking-table",
        backup_location="/backups/rollback-20240115-103045-backup.sql", data_loss="none", downtime="5 minutes",
        verification={"health_check": "passed", "smoke_tests": "passed", "user_validation": "pending"},
    )
    base.update(fields)
    return R.build_receipt(base, approval=approval(approvals), now=now,
                           evidence={"archive": "/tmp/%s.tar.gz" % rollback_id, "archive_sha256": ARCHIVE_SHA,
                                     "manifest_sha256": "d" * 64},
                           signing_required=signer is not None,
                           keyid=signer.public_key.keyid if signer is not None else None)


def fill(ledger, signer, count, prefix="rollback-20240115-1030"):
    results = []
    for index in range(count):
        outcome = ("succeeded", "failed", "denied")[index % 3]
        approvals = ("dba",) if outcome == "denied" else ("dba", "eng-lead")
        receipt = make_receipt(signer, "%s%02d" % (prefix, index), outcome=outcome, approvals=approvals)
        results.append(R.append_receipt(ledger, receipt, signer=signer))
    return results


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def write(path, data):
    with open(path, "wb") as handle:
        handle.write(data)


# ---------------------------------------------------------------- receipt content

def test_receipt_carries_every_kfm_and_aureus_field(signer):
    receipt = make_receipt(signer)
    kfm = ["run_type", "incident_id", "requested_by", "approved_by", "started_at", "completed_at", "environment",
           "reason", "current_ref", "rollback_target_ref", "changed_surfaces", "verification", "notes"]
    aureus = ["rollback_id", "timestamp", "component", "from_version", "to_version", "approver", "incident_id",
              "migration_reverted", "backup_location", "data_loss", "downtime", "dba_approval"]
    ours = ["outcome", "approval", "emergency", "retroactive_approval_due", "evidence", "signing", "redaction"]
    for field in kfm + aureus + ours:
        assert field in receipt, field
    assert set(receipt["verification"]) >= {"health", "policy_invariants", "contract_smoke", "health_check",
                                            "smoke_tests", "user_validation"}
    assert receipt["run_type"] == "ops.database.rollback"
    assert receipt["requested_by"] == "oncall"
    assert receipt["approver"] == "dba, eng-lead"
    assert receipt["dba_approval"] == "dba"
    assert receipt["started_at"] == "2024-01-15T10:30:45Z"
    assert receipt["evidence"]["archive_sha256"] == ARCHIVE_SHA
    assert receipt["signing"] == {"required": True, "signed": True, "keyid": signer.public_key.keyid,
                                  "predicate_type": PREDICATE_TYPE}
    R.validate_receipt(receipt)


def test_emergency_decision_flows_into_the_receipt(signer):
    decision = evaluate("database", "oncall", ["cto"], ROSTER, priority="P0", incident_commander="ic",
                        emergency_override=True, now=NOW)
    receipt = R.build_receipt(dict(rollback_id="rollback-x", outcome="failed", environment="prod", reason="r",
                                   component="database"), approval=decision, now=NOW,
                              keyid=signer.public_key.keyid)
    assert receipt["emergency"] is True
    assert receipt["retroactive_approval_due"] == "2024-01-15T14:30:45Z"
    assert receipt["post_incident_review"] == "required"
    R.validate_receipt(receipt)


def test_failed_approval_without_a_decision_is_recorded_as_an_unevaluated_denial(signer):
    registered = {"failed": True, "msg": "missing required arguments: target_revision",
                  "invocation": {"module_args": {"requested_by": "oncall"}}}
    receipt = R.build_receipt(dict(rollback_id="rollback-y", outcome="denied", environment="sandbox", reason="r",
                                   component="frontend", rollback_type="deployment",
                                   started_at="2024-01-15T10:30:00Z"), approval=registered, now=NOW,
                              keyid=signer.public_key.keyid)
    assert receipt["approval"]["rule"] == "unevaluated"
    assert receipt["approval"]["approved"] is False
    assert receipt["requested_by"] == "oncall"
    R.validate_receipt(receipt)


def test_registered_evidence_capture_result_gives_the_archive_and_manifest_digests():
    registered = {
        "changed": True, "rollback_id": "rollback-20240115-103045", "phase": "after",
        "manifest_path": "/ev/rollback-20240115-103045/after/manifest.json",
        "manifest": {"path": "/ev/rollback-20240115-103045/after/manifest.json", "sha256": "9" * 64,
                     "status": "complete", "files": []},
        "evidence_manifest": {"manifest_sha256": "9" * 64, "archive_path": "/ev/rollback-20240115-103045.tar.gz",
                              "archive_sha256": "5" * 64},
        "archive_path": "/ev/rollback-20240115-103045.tar.gz", "archive_sha256": "5" * 64,
    }
    assert R.normalize_evidence(registered) == {
        "archive": "/ev/rollback-20240115-103045.tar.gz", "archive_sha256": "5" * 64,
        "manifest": "/ev/rollback-20240115-103045/after/manifest.json", "manifest_sha256": "9" * 64}
    assert R.normalize_evidence({"archive": "/a.tgz", "archive_sha256": "sha256:" + "1" * 64}) == {
        "archive": "/a.tgz", "archive_sha256": "1" * 64, "manifest": None, "manifest_sha256": None}


def test_a_finalized_pack_binds_its_pack_manifest_not_the_last_phase_manifest():
    registered = {"archive_path": "/ev/r.tar.gz", "archive_sha256": "5" * 64,
                  "pack_manifest_path": "/ev/r/manifest.json", "pack_manifest_sha256": "7" * 64,
                  "manifest_path": "/ev/r/after/manifest.json", "manifest": {"sha256": "9" * 64}}
    assert R.normalize_evidence(registered) == {
        "archive": "/ev/r.tar.gz", "archive_sha256": "5" * 64,
        "manifest": "/ev/r/manifest.json", "manifest_sha256": "7" * 64}


def test_canonical_hash_ignores_key_order_and_is_rfc8785():
    assert R.canonical({"b": 1, "a": [True, None, "é"]}) == b'{"a":[true,null,"\xc3\xa9"],"b":1}'
    one = {"x": {"b": 2, "a": 1}, "y": "z"}
    two = json.loads(json.dumps({"y": "z", "x": {"a": 1, "b": 2}}))
    assert R.receipt_sha256(one) == R.receipt_sha256(two)


def test_spliced_canonical_bytes_equal_rfc8785_of_the_whole(signer):
    receipt = make_receipt(signer, notes="é ∑ \u2028 \x01 \"quoted\" \\ tab\t", details={"z": 1, "a": [None, True]})
    entry = R.make_entry(7, "e" * 64, receipt, [{"keyid": "k", "sig": "s"}], "2024-01-15T10:30:45Z")
    assert R.entry_line(entry) == R.canonical(entry) + b"\n"
    members = R._entry_members(entry, R.canonical(receipt))
    members["entry_sha256"] = R.canonical(entry["entry_sha256"])
    assert R.join_canonical(members) == R.canonical(entry)
    assert R.statement_payload(receipt) == R.canonical(R.make_statement(receipt, R.receipt_sha256(receipt)))


# ---------------------------------------------------------------- schema

@pytest.mark.parametrize("field", RECEIPT_SCHEMA["required"])
def test_receipt_missing_a_required_field_is_refused_with_the_field_named(signer, field):
    receipt = make_receipt(signer)
    del receipt[field]
    with pytest.raises(R.ReceiptError) as caught:
        R.validate_receipt(receipt)
    assert "%s is missing (required)" % field in caught.value.msg
    assert caught.value.fields == [field]


@pytest.mark.parametrize("field", ["reason", "environment", "component", "requested_by", "started_at"])
def test_receipt_with_a_required_field_left_empty_names_it(signer, field):
    receipt = make_receipt(signer, **{field: None})
    if field in ("requested_by", "started_at"):
        receipt[field] = None  # these default from the approval decision; blank them explicitly
    with pytest.raises(R.ReceiptError) as caught:
        R.validate_receipt(receipt)
    assert "%s is missing (null)" % field in caught.value.msg


@pytest.mark.parametrize("field", ["current_ref", "rollback_target_ref"])
def test_succeeded_receipt_needs_both_refs(signer, field):
    receipt = make_receipt(signer, **{field: None})
    with pytest.raises(R.ReceiptError, match="%s is missing \\(null\\) when outcome is succeeded" % field):
        R.validate_receipt(receipt)


def test_succeeded_receipt_needs_an_approved_decision_and_evidence_digest(signer):
    denied = make_receipt(signer, approvals=("dba",))
    with pytest.raises(R.ReceiptError, match="approval.approved True was expected when outcome is succeeded"):
        R.validate_receipt(denied)
    receipt = make_receipt(signer)
    receipt["evidence"]["archive_sha256"] = None
    with pytest.raises(R.ReceiptError, match="evidence.archive_sha256 is missing \\(null\\)"):
        R.validate_receipt(receipt)


def test_denied_receipt_needs_the_denying_decision(signer):
    receipt = make_receipt(signer, outcome="denied")
    with pytest.raises(R.ReceiptError, match="approval.approved False was expected when outcome is denied"):
        R.validate_receipt(receipt)
    R.validate_receipt(make_receipt(signer, outcome="denied", approvals=("dba",)))


@pytest.mark.parametrize("field, value, problem", [
    ("current_ref", "v0.1.2", "current_ref 'v0.1.2' does not match"),
    ("rollback_target_ref", "sha256:abc", "rollback_target_ref 'sha256:abc' does not match"),
    ("outcome", "partially", "outcome 'partially' is not one of"),
    ("started_at", "2024-01-15 10:30", "started_at '2024-01-15 10:30' does not match"),
    ("affected_users", -3, "affected_users -3 is less than the minimum of 0"),
])
def test_malformed_fields_are_refused_naming_field_and_problem(signer, field, value, problem):
    receipt = make_receipt(signer)
    receipt[field] = value
    with pytest.raises(R.ReceiptError) as caught:
        R.validate_receipt(receipt)
    assert problem in caught.value.msg


def test_unknown_verification_result_and_unknown_field_are_refused(signer):
    receipt = make_receipt(signer, verification={"health": "ok"})
    with pytest.raises(R.ReceiptError, match="verification.health 'ok' is not one of"):
        R.validate_receipt(receipt)
    receipt = make_receipt(signer)
    receipt["mood"] = "calm"
    with pytest.raises(R.ReceiptError, match="receipt has unknown fields: mood"):
        R.validate_receipt(receipt)


def test_required_signing_without_a_key_id_is_refused():
    receipt = make_receipt(None)
    receipt["signing"]["required"] = True
    with pytest.raises(R.ReceiptError, match="signing.signed False was expected|signing.signed True was expected"):
        R.validate_receipt(receipt)


# ---------------------------------------------------------------- secret guard (canary)

CANARIES = [
    ("notes", "rolled back; password=Canary-7f3a9Zq"),
    ("reason", "db at postgresql://aureus:CanaryS3cret@db.aureus:5432/aureus_metadata refused logins"),
    ("notes", "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYW5hcnkifQ.c2lnbmF0dXJlY2FuYXJ5"),
    ("backup_location", "s3://bucket/key?X-Amz-Credential=AKIACANARY0123456789"),
    ("notes", "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIcanary\n-----END PRIVATE KEY-----"),
    ("data_loss", "none; token: ghp_CanaryCanaryCanaryCanaryCanary123456"),
    ("notes", "leftover value Zk9vQmFyQmF6UXV4Q2FuYXJ5U2VjcmV0VmFsdWUxMjM0NQ"),
    ("downtime", "kept session 4fJq9_Xv2LpZ8wR1tYb7Nc3Hs6KdE0aU"),
]


@pytest.mark.parametrize("field, value", CANARIES)
def test_secret_looking_value_is_refused_and_never_written(signer, ledger, field, value):
    R.append_receipt(ledger, make_receipt(signer, rollback_id="rollback-20240115-000001"), signer=signer)
    before = read(ledger)
    receipt = make_receipt(signer, **{field: value})
    with pytest.raises(R.ReceiptError) as caught:
        R.append_receipt(ledger, receipt, signer=signer)
    assert caught.value.fields == [field]
    assert value not in caught.value.msg
    assert read(ledger) == before
    secret_part = value.split("=")[-1].split("@")[0][-12:]
    for name in os.listdir(os.path.dirname(ledger)):
        assert secret_part.encode() not in read(os.path.join(os.path.dirname(ledger), name))


def test_secret_in_nested_details_and_secret_named_keys_are_refused(signer):
    receipt = make_receipt(signer, details={"pods": [{"env": {"DB_PASSWORD": "hunter2hunter2"}}]})
    with pytest.raises(R.ReceiptError) as caught:
        R.validate_receipt(receipt)
    assert caught.value.fields == ["details.pods[0].env.DB_PASSWORD"]
    assert "hunter2" not in caught.value.msg


def test_receipt_values_that_are_not_secrets_pass_the_guard(signer):
    receipt = make_receipt(signer, notes="rotated the database password afterwards; token bucket limit restored",
                           details={"image": "aureus/frontend@sha256:" + "e" * 64, "replicas": 3,
                                    "backup": "backups/aureus_metadata/pre_rollback_backup_20240115-103045.sql",
                                    "git": "0123456789abcdef0123456789abcdef01234567",
                                    "pod": "aureus-frontend-7d9f8c6b5c-x2x9z",
                                    "images": "aureus/frontend:v0.1.2,aureus/sidecar:v1.2.3",
                                    "dump": "postgresql-aureus_metadata-pre_rollback_backup_20240115T103045Z",
                                    "class": "ThisIsAVeryLongJavaClassName2Factory",
                                    "password_rotation_due": None})
    assert R.secret_findings(receipt) == []


def test_failure_message_is_masked_not_refused():
    text, rules = R.mask_secret_text("psql: connection to postgresql://aureus:CanaryS3cret@127.0.0.1 failed")
    assert "CanaryS3cret" not in text
    # The shared redaction layer (_redact) masks the password and keeps user and host, as in evidence.
    assert text == "psql: connection to postgresql://aureus:**REDACTED**@127.0.0.1 failed"
    assert rules == ["Basic Auth Credentials", "url-credentials"]


def test_mask_paths_hides_refused_values_for_error_output():
    masked = R.mask_paths({"notes": "password=x1y2z3", "details": {"a": [1, "k"]}}, ["notes", "details.a[1]"])
    assert masked == {"notes": "********", "details": {"a": [1, "********"]}}


# ---------------------------------------------------------------- signing

def test_envelope_is_an_in_toto_statement_signed_with_ed25519(signer, ledger):
    result = R.append_receipt(ledger, make_receipt(signer), signer=signer)
    envelope_dict = json.loads(read(result["envelope"]))
    envelope = Envelope.from_dict(copy.deepcopy(envelope_dict))
    envelope.verify([signer.public_key], 1)
    assert envelope.payload_type == "application/vnd.in-toto+json"
    statement = json.loads(envelope.payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == PREDICATE_TYPE
    assert statement["predicate"] == result["receipt"]
    digests = [s["digest"] for s in statement["subject"]]
    assert {"sha256": result["receipt_sha256"]} in digests
    assert {"sha256": ARCHIVE_SHA} in digests
    assert {"gitCommit": "b" * 40} in digests
    assert result["envelope"] == os.path.join(os.path.dirname(ledger), "rollback-20240115-103045.intoto.jsonl")


def test_tampered_envelope_payload_does_not_verify(signer, ledger):
    result = R.append_receipt(ledger, make_receipt(signer), signer=signer)
    envelope_dict = json.loads(read(result["envelope"]))
    statement = json.loads(base64.b64decode(envelope_dict["payload"]))
    statement["predicate"]["outcome"] = "failed"
    envelope_dict["payload"] = base64.b64encode(R.canonical(statement)).decode()
    with pytest.raises(R.ReceiptError, match="signature does not verify"):
        R.open_envelope(envelope_dict, [signer.public_key])


def test_public_key_loads_from_pem_and_from_securesystemslib_dict(signer):
    pem = R.public_key_pem(signer.public_key)
    assert R.load_public_key(pem).keyid == signer.public_key.keyid
    as_dict = dict(signer.public_key.to_dict(), keyid=signer.public_key.keyid)
    assert R.load_public_key(json.dumps(as_dict)).keyid == signer.public_key.keyid


def test_non_ed25519_and_encrypted_keys_are_refused():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(R.ReceiptError, match="ed25519 only"):
        R.load_signer(ec_pem)
    encrypted = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pass-phrase"))
    with pytest.raises(R.ReceiptError, match="encrypted"):
        R.load_signer(encrypted)
    with pytest.raises(R.ReceiptError, match="not a PEM private key"):
        R.load_signer("not a key")


# ---------------------------------------------------------------- ledger: append, idempotence, refusal

def test_append_chains_entries_and_verifies(signer, ledger):
    results = fill(ledger, signer, 3)
    assert [r["ledger_seq"] for r in results] == [1, 2, 3]
    lines = read(ledger).splitlines()
    entries = [json.loads(line) for line in lines]
    assert entries[0]["prev"] == "0" * 64
    assert entries[1]["prev"] == entries[0]["entry_sha256"] == results[0]["entry_sha256"]
    assert entries[2]["prev"] == entries[1]["entry_sha256"]
    assert all(R.receipt_sha256(e["receipt"]) == e["receipt_sha256"] for e in entries)
    state = R.verify_ledger(ledger, [signer.public_key])
    assert state["valid"] is True, state["message"]
    assert state["entries"] == 3
    assert state["checkpoint"]["size"] == 3 and state["checkpoint"]["head"] == entries[2]["entry_sha256"]


def test_appending_the_same_receipt_twice_changes_nothing(signer, ledger):
    first = R.append_receipt(ledger, make_receipt(signer), signer=signer)
    before, head_before = read(ledger), read(R.head_path(ledger))
    again = R.append_receipt(ledger, make_receipt(signer), signer=signer)
    assert first["changed"] is True and again["changed"] is False
    assert again["ledger_seq"] == 1 and again["entry_sha256"] == first["entry_sha256"]
    assert read(ledger) == before and read(R.head_path(ledger)) == head_before


def test_rerun_that_recomputed_only_its_times_is_still_idempotent(signer, ledger):
    first = make_receipt(signer, now=NOW)
    later_time = NOW + datetime.timedelta(minutes=7)
    later = R.build_receipt(
        dict(rollback_id=first["rollback_id"], outcome="succeeded", incident_id="INC-12345", environment="sandbox",
             reason=first["reason"], component="database", from_version="v0.1.2", to_version="v0.1.1",
             current_ref=first["current_ref"], rollback_target_ref=first["rollback_target_ref"],
             migration_reverted=first["migration_reverted"], backup_location=first["backup_location"],
             data_loss="none", downtime="5 minutes",
             verification={"health_check": "passed", "smoke_tests": "passed", "user_validation": "pending"}),
        approval={"decision": evaluate("database", "oncall", ["dba", "eng-lead"], ROSTER, now=later_time)},
        evidence=first["evidence"], keyid=signer.public_key.keyid, now=later_time)
    assert later["completed_at"] != first["completed_at"]
    assert later["approval"]["evaluated_at"] != first["approval"]["evaluated_at"]
    R.append_receipt(ledger, first, signer=signer)
    before = read(ledger)
    again = R.append_receipt(ledger, later, signer=signer)
    assert again["changed"] is False and again["ledger_seq"] == 1
    assert again["receipt"]["completed_at"] == "2024-01-15T10:30:45Z"
    assert read(ledger) == before


def test_rerun_with_a_different_approver_under_the_same_id_is_refused(signer, ledger):
    R.append_receipt(ledger, make_receipt(signer), signer=signer)
    # Another engineering lead approved this time (the decision only lists approvers whose roles counted).
    roster = dict(ROSTER, **{"eng-lead-2": ["engineering_lead"]})
    other = make_receipt(signer)
    other = R.build_receipt(dict((k, other[k]) for k in ("rollback_id", "outcome", "incident_id", "environment", "reason",
                                                         "component", "from_version", "to_version", "current_ref",
                                                         "rollback_target_ref", "migration_reverted", "backup_location",
                                                         "data_loss", "downtime", "verification")),
                            approval={"decision": evaluate("database", "oncall", ["dba", "eng-lead-2"], roster, now=NOW)},
                            now=NOW, evidence=other["evidence"], keyid=signer.public_key.keyid)
    with pytest.raises(R.LedgerError, match="different content \\(approval.approved_by, approval.role_assignments.engineering_lead, approved_by, "
                       "approver\\)"):
        R.append_receipt(ledger, other, signer=signer)


def test_different_content_under_a_recorded_rollback_id_is_refused_and_changes_nothing(signer, ledger):
    R.append_receipt(ledger, make_receipt(signer), signer=signer)
    before = read(ledger)
    with pytest.raises(R.LedgerError, match="already recorded at entry 1 with different content \\(downtime"):
        R.append_receipt(ledger, make_receipt(signer, downtime="2 hours"), signer=signer)
    assert read(ledger) == before


def test_check_mode_returns_the_entry_but_writes_nothing(signer, ledger):
    planned = R.append_receipt(ledger, make_receipt(signer), signer=signer, check_mode=True)
    assert planned["changed"] is True and planned["ledger_seq"] == 1
    assert not os.path.exists(os.path.dirname(ledger))
    fill(ledger, signer, 2)
    before = sorted(os.listdir(os.path.dirname(ledger)))
    data = read(ledger)
    planned = R.append_receipt(ledger, make_receipt(signer, "rollback-20240115-999999"), signer=signer,
                               check_mode=True)
    assert planned["ledger_seq"] == 3
    assert read(ledger) == data and sorted(os.listdir(os.path.dirname(ledger))) == before


def test_append_to_a_ledger_that_does_not_verify_is_refused(signer, ledger):
    fill(ledger, signer, 2)
    data = bytearray(read(ledger))
    data[data.index(b'"downtime":"5 minutes"') + 13] ^= 0x01
    write(ledger, bytes(data))
    with pytest.raises(R.LedgerError, match="refusing to append .* entry 1 \\(rollback-20240115-103000\\)"):
        R.append_receipt(ledger, make_receipt(signer, "rollback-20240115-999999"), signer=signer, verify="full")
    assert read(ledger) == bytes(data)


def test_o1_append_checks_the_tail_entry_and_full_verify_names_an_edited_middle_entry(signer, ledger):
    fill(ledger, signer, 3)
    data = bytearray(read(ledger))
    data[data.rindex(b'"downtime":"5 minutes"') + 13] ^= 0x01  # the last entry: the one the head signs
    write(ledger, bytes(data))
    with pytest.raises(R.LedgerError, match="refusing to append .* entry 3 \\(rollback-20240115-103002\\)"):
        R.append_receipt(ledger, make_receipt(signer, "rollback-20240115-999999"), signer=signer)
    assert read(ledger) == bytes(data)
    assert R.verify_ledger(ledger, [signer.public_key])["first_bad_entry"] == 3


def test_unsigned_append_to_a_signed_ledger_is_refused(signer, ledger):
    fill(ledger, signer, 1)
    before = read(ledger)
    with pytest.raises(R.LedgerError, match="head is signed"):
        R.append_receipt(ledger, make_receipt(None, "rollback-20240115-999999"), signer=None)
    assert read(ledger) == before


def test_new_signing_key_needs_the_old_public_key_to_append(signer, ledger):
    fill(ledger, signer, 1)
    rotated = new_signer()
    receipt = make_receipt(rotated, "rollback-20240115-999999")
    with pytest.raises(R.LedgerError, match="signature does not verify"):
        R.append_receipt(ledger, receipt, signer=rotated)
    result = R.append_receipt(ledger, receipt, signer=rotated, trusted_keys=[signer.public_key])
    assert result["ledger_seq"] == 2
    assert R.verify_ledger(ledger, [signer.public_key, rotated.public_key])["valid"] is True


def test_unsigned_receipts_only_when_optional_and_the_receipt_says_so(ledger):
    result = R.append_receipt(ledger, make_receipt(None), signer=None)
    assert result["signed"] is False and result["envelope"] is None
    assert result["receipt"]["signing"] == {"required": False, "signed": False, "keyid": None,
                                            "predicate_type": PREDICATE_TYPE}
    state = R.verify_ledger(ledger)
    assert state["valid"] is True and state["signatures_checked"] is False and state["unsigned_entries"] == [1]
    # a key-holding verifier does not accept an unsigned head
    assert R.verify_ledger(ledger, [new_signer().public_key])["valid"] is False


# ---------------------------------------------------------------- ledger: tamper evidence

def test_flipping_any_byte_anywhere_in_the_ledger_names_that_entry(signer, ledger):
    fill(ledger, signer, 2)
    data = read(ledger)
    head = read(R.head_path(ledger))
    keys = [signer.public_key]
    assert R.verify_ledger_bytes(data, head, keys)["valid"] is True
    line_of = []
    for number, line in enumerate(data.split(b"\n")[:-1], start=1):
        line_of.extend([number] * (len(line) + 1))
    for offset in range(len(data)):
        tampered = bytearray(data)
        tampered[offset] ^= 0x01
        state = R.verify_ledger_bytes(bytes(tampered), head, keys)
        assert state["valid"] is False, offset
        assert state["first_bad_entry"] == line_of[offset], (offset, state["message"])
        assert state["message"].startswith("entry %d" % line_of[offset]), (offset, state["message"])


def test_flipping_any_byte_of_the_signed_head_is_detected(signer, ledger):
    fill(ledger, signer, 1)
    data, head = read(ledger), read(R.head_path(ledger))
    for offset in range(len(head)):
        tampered = bytearray(head)
        tampered[offset] ^= 0x01
        state = R.verify_ledger_bytes(data, bytes(tampered), [signer.public_key])
        assert state["valid"] is False, offset
        assert "signed head" in state["message"], (offset, state["message"])


@pytest.mark.parametrize("keep", [3, 2, 0])
def test_truncating_the_tail_is_detected_against_the_signed_head(signer, ledger, keep):
    fill(ledger, signer, 4)
    lines = read(ledger).split(b"\n")
    write(ledger, b"".join(line + b"\n" for line in lines[:keep]))
    state = R.verify_ledger(ledger, [signer.public_key])
    assert state["valid"] is False
    assert state["first_bad_entry"] == keep + 1
    assert state["message"] == ("ledger truncated: the signed head covers 4 entries but the file holds %d; entries "
                                "%d..4 are missing" % (keep, keep + 1))
    with pytest.raises(R.LedgerError, match="ledger truncated"):
        R.append_receipt(ledger, make_receipt(signer, "rollback-20240115-999999"), signer=signer)


def test_deleted_ledger_with_its_head_left_is_truncation(signer, ledger):
    fill(ledger, signer, 2)
    os.unlink(ledger)
    state = R.verify_ledger(ledger, [signer.public_key])
    assert state["valid"] is False and state["first_bad_entry"] == 1
    assert "ledger truncated" in state["message"]


def test_cut_in_the_middle_of_the_last_line_is_named(signer, ledger):
    fill(ledger, signer, 3)
    data = read(ledger)
    write(ledger, data[:-40])
    state = R.verify_ledger(ledger, [signer.public_key])
    assert state["first_bad_entry"] == 3
    assert "entry 3 is incomplete" in state["message"]


def test_missing_head_is_refused(signer, ledger):
    fill(ledger, signer, 2)
    os.unlink(R.head_path(ledger))
    state = R.verify_ledger(ledger, [signer.public_key])
    assert state["valid"] is False and "signed head missing" in state["message"]


def test_rewriting_the_last_entry_consistently_still_breaks_the_signed_head(signer, ledger):
    fill(ledger, signer, 2)
    lines = read(ledger).split(b"\n")[:-1]
    entry = json.loads(lines[-1])
    entry["receipt"]["downtime"] = "0 minutes"
    rewritten = R.make_entry(entry["seq"], entry["prev"], entry["receipt"], [], entry["recorded_at"])
    rewritten["receipt"]["signing"]["required"] = False
    rewritten["receipt"]["signing"]["signed"] = False
    rewritten["receipt"]["signing"]["keyid"] = None
    rewritten = R.make_entry(entry["seq"], entry["prev"], rewritten["receipt"], [], entry["recorded_at"])
    write(ledger, b"".join(line + b"\n" for line in lines[:-1]) + R.entry_line(rewritten))
    state = R.verify_ledger(ledger, [signer.public_key])
    assert state["valid"] is False and state["first_bad_entry"] == 2
    assert "does not match the signed head" in state["message"]


def test_wrong_public_key_fails_verification(signer, ledger):
    fill(ledger, signer, 2)
    state = R.verify_ledger(ledger, [new_signer().public_key])
    assert state["valid"] is False
    assert state["first_bad_entry"] == 1
    assert "signature does not verify with the given public key" in state["message"]


# ---------------------------------------------------------------- ledger: concurrency

def _appender(ledger, pem, prefix, count, barrier):
    own_signer = R.load_signer(pem)
    barrier.wait()
    for index in range(count):
        R.append_receipt(ledger, make_receipt(own_signer, "%s-%03d" % (prefix, index)), signer=own_signer)


def test_two_processes_appending_at_once_keep_the_chain_valid(ledger):
    pem = CryptoSigner.generate_ed25519().private_bytes
    os.makedirs(os.path.dirname(ledger))
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_appender, args=(ledger, pem, "rollback-p%d" % n, 15, barrier))
               for n in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    state = R.verify_ledger(ledger, [R.load_signer(pem).public_key])
    assert state["valid"] is True, state["message"]
    assert state["entries"] == 30
    assert sorted(state["index"]) == sorted("rollback-p%d-%03d" % (n, i) for n in (1, 2) for i in range(15))
    ids = [json.loads(line)["rollback_id"] for line in read(ledger).splitlines()]
    assert any(a.split("-")[1] != b.split("-")[1] for a, b in zip(ids, ids[1:])), "the appends never interleaved"


def test_generated_rollback_ids_follow_the_runbook_and_never_collide_within_a_second():
    moment = datetime.datetime(2024, 1, 15, 10, 30, 45, tzinfo=datetime.timezone.utc)
    ids = {new_rollback_id(moment) for attempt in range(200)}
    assert len(ids) == 200
    assert all(re.match(r"^rollback-20240115-103045-[0-9a-f]{6}$", i) for i in ids)


VERIFICATION_DETAILS = {
    "metrics": [{"name": "error_rate_5xx", "query": 'sum(rate(x{code=~"5.."}[6s])) / sum(rate(x[6s]))',
                 "result": "pass", "reason": "3 measurement(s)", "baseline": 0.0, "value": 0.0,
                 "measurements": [{"at": "2026-01-15T10:30:45.000000Z", "value": 0.0, "phase": "successful"},
                                  {"at": "2026-01-15T10:30:47.000000Z", "value": None, "phase": "inconclusive"}],
                 "condition": "success: result <= 0.01"}],
    "contracts": [{"name": "error model", "url": "http://127.0.0.1/api/v1/datasets/x", "status": 404,
                   "result": "pass", "failed": []}],
    "policy_invariants": [{"endpoint": "http://127.0.0.1/health", "result": "pass", "decision_id": "a" * 32,
                           "reason": "decision"},
                          {"endpoint": "restricted vs missing", "result": "fail", "decision_id": None, "reason": "x"}],
    "logs": {"result": "pass", "errors_before": 12, "errors_after": 0},
}


def test_verification_details_are_an_optional_receipt_field_with_their_shape(signer):
    receipt = make_receipt(signer, verification_details=copy.deepcopy(VERIFICATION_DETAILS))
    assert R.validate_receipt(receipt)["verification_details"]["metrics"][0]["baseline"] == 0.0
    assert "verification_details" not in make_receipt(signer)
    empty = make_receipt(signer, verification_details={"metrics": [], "contracts": [], "policy_invariants": [],
                                                       "logs": None})
    R.validate_receipt(empty)


@pytest.mark.parametrize("path,value", [
    (("metrics", 0, "result"), "passed"),
    (("metrics", 0, "value"), "0.1"),
    (("metrics", 0, "measurements", 0, "value"), "NaN"),
    (("contracts", 0, "status"), "404"),
    (("logs", "errors_after"), -1),
    (("surprise",), {}),
])
def test_verification_details_out_of_shape_are_refused(signer, path, value):
    details = copy.deepcopy(VERIFICATION_DETAILS)
    target = details
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(R.ReceiptError, match="verification_details"):
        R.validate_receipt(make_receipt(signer, verification_details=details))


def test_receipt_schema_is_valid():
    """The receipt schema against its own metaschema (the module builds its validator without this check)."""
    import jsonschema

    jsonschema.validators.validator_for(RECEIPT_SCHEMA).check_schema(RECEIPT_SCHEMA)
    broken = dict(RECEIPT_SCHEMA, properties=dict(RECEIPT_SCHEMA["properties"], outcome={"type": "colour"}))
    with pytest.raises(jsonschema.exceptions.SchemaError):
        jsonschema.validators.validator_for(broken).check_schema(broken)
