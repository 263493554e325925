"""Hostile receipts: wrong types in every field, NaN/Infinity, huge numbers, deep nesting, receipts that contradict their
approval decision. Each is refused with a message naming the field, and the ledger is byte for byte unchanged.
Real-world image references and a long reason are accepted (the secret guard must not mistake them for secrets)."""

import copy
import datetime
import os

import pytest
from securesystemslib.signer import CryptoSigner

from ansible_collections.governed.rollback.plugins.module_utils import _receipt as R
from ansible_collections.governed.rollback.plugins.module_utils._approval import evaluate
from ansible_collections.governed.rollback.plugins.module_utils._receipt_schema import RECEIPT_SCHEMA

ROSTER = {"oncall": ["on_call_engineer"], "eng-lead": ["engineering_lead"], "dba": ["dba"], "cto": ["cto"],
          "ic": ["incident_commander"]}
NOW = datetime.datetime(2024, 1, 15, 10, 30, 45, tzinfo=datetime.timezone.utc)


@pytest.fixture(scope="module")
def signer():
    return R.load_signer(CryptoSigner.generate_ed25519().private_bytes)


def decision(approvals=("dba", "eng-lead"), **kwargs):
    return evaluate("database", "oncall", list(approvals), ROSTER, now=NOW, **kwargs)


def emergency_decision():
    found = evaluate("database", "oncall", ["dba", "cto"], ROSTER, priority="P0", emergency_override=True,
                     incident_commander="ic", now=NOW)
    assert found["approval_path"] == "emergency_override" and found["emergency"] is True
    return found


def make_receipt(signer, rollback_id="rollback-20240115-103045", outcome="succeeded", approval=None, **fields):
    base = dict(rollback_id=rollback_id, outcome=outcome, incident_id="INC-12345", environment="sandbox",
                reason="hostile receipt test", component="database", from_version="v0.1.2", to_version="v0.1.1",
                current_ref="sha256:" + "a" * 64, rollback_target_ref="b" * 40)
    base.update(fields)
    return R.build_receipt(base, approval={"decision": approval if approval is not None else decision()},
                           evidence={"archive": "/tmp/x.tar.gz", "archive_sha256": "c" * 64},
                           keyid=signer.public_key.keyid, now=NOW)


@pytest.fixture
def ledger(tmp_path, signer):
    path = str(tmp_path / "receipts" / "ledger.jsonl")
    R.append_receipt(path, make_receipt(signer, "rollback-20240115-000001"), signer=signer)
    return path


def snapshot(ledger):
    directory = os.path.dirname(ledger)
    found = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as handle:
            found[name] = handle.read()
    return found


def refused(ledger, signer, receipt, match):
    """Append refuses with a ReceiptError matching `match` and nothing on disk changes; returns the error."""
    before = snapshot(ledger)
    with pytest.raises(R.ReceiptError, match=match) as caught:
        R.append_receipt(ledger, receipt, signer=signer)
    assert snapshot(ledger) == before
    return caught.value


# ---------------------------------------------------------------- wrong types in every field

def _types(schema):
    if "anyOf" in schema:
        return {t for branch in schema["anyOf"] for t in _types(branch)}
    if "type" in schema:
        return {schema["type"]}
    if "enum" in schema:
        return {type(v).__name__ for v in schema["enum"]} | {"enum"}
    return {"const"}


CANDIDATES = {"string": "a string not in any enum", "integer": 7, "boolean": True, "array": ["x"],
              "object": {"x": 1}, "null": None, "float": 1.5}
MATCHES = {"string": ("string",), "integer": ("integer",), "boolean": ("boolean",), "array": ("array",),
           "object": ("object",), "null": ("null",), "float": ()}


def wrong_values(field):
    allowed = _types(RECEIPT_SCHEMA["properties"][field])
    return [(field, name) for name, _value in sorted(CANDIDATES.items())
            if not set(MATCHES[name]) & allowed or (name == "string" and "enum" in allowed) or
            (name == "string" and field in ("receipt_version",))]


WRONG = [case for field in sorted(RECEIPT_SCHEMA["properties"]) for case in wrong_values(field)]


@pytest.mark.parametrize("field, kind", WRONG)
def test_wrong_type_in_every_receipt_field_is_refused_naming_it(ledger, signer, field, kind):
    receipt = make_receipt(signer)
    receipt[field] = copy.deepcopy(CANDIDATES[kind])
    error = refused(ledger, signer, receipt, "receipt refused")
    assert any(name == field or name.startswith(field + ".") for name in error.fields), (error.fields, error.msg)


@pytest.mark.parametrize("field, value", [
    ("affected_users", float("nan")), ("affected_users", float("inf")), ("affected_users", float("-inf")),
    ("affected_users", 10 ** 100), ("affected_users", -1), ("details", {"x": float("nan")}),
    ("details", {"x": float("inf")}), ("details", {"x": 2 ** 64}), ("details", {"x": 10 ** 4000}),
])
def test_nan_infinity_and_huge_numbers_are_refused(ledger, signer, field, value):
    receipt = make_receipt(signer)
    receipt[field] = value
    refused(ledger, signer, receipt, "cannot be canonicalized|receipt refused")


@pytest.mark.parametrize("depth", [33, 1000, 50000])
def test_deeply_nested_details_are_refused_without_a_traceback(ledger, signer, depth):
    nested = 1
    for _level in range(depth):
        nested = {"x": nested}
    receipt = make_receipt(signer)
    receipt["details"] = nested
    error = refused(ledger, signer, receipt, "nested more than 32 levels deep")
    assert error.fields[0].startswith("details.x")


def test_nesting_within_the_limit_is_accepted(ledger, signer):
    nested = "leaf"
    for _level in range(20):
        nested = {"x": nested}
    assert R.append_receipt(ledger, make_receipt(signer, details=nested), signer=signer)["ledger_seq"] == 2


# ---------------------------------------------------------------- receipts that contradict their decision

def _edited(edit):
    def build(signer):
        receipt = make_receipt(signer)
        edit(receipt)
        return receipt
    return build


def _with_decision(found, **fields):
    return lambda signer: make_receipt(signer, approval=found, **fields)


def _emergency(edit):
    def build(signer):
        receipt = make_receipt(signer, approval=emergency_decision())
        edit(receipt)
        return receipt
    return build


CONTRADICTIONS = {
    "failed with a denied decision": (_with_decision(decision(("dba",)), outcome="failed"), "outcome",
                                      "outcome is failed but the approval decision denied"),
    "succeeded with a decision edited to approved=false": (
        _edited(lambda r: r["approval"].update(approved=False)), "approval.approved", "approval.approved"),
    "denied with an approved decision": (_with_decision(decision(), outcome="denied", current_ref=None),
                                         "approval.approved", "approval.approved"),
    "requested_by differs": (_with_decision(decision(), requested_by="eng-lead"), "requested_by",
                             "requested_by differs from the approval decision's requester 'oncall'"),
    "a rule of another rollback type": (_edited(lambda r: r["approval"].update(rule="policy")), "approval.rule",
                                        "'policy' is not a rule of the database rollback type"),
    "an unknown rule": (_edited(lambda r: r["approval"].update(rule="anything_goes")), "approval.rule",
                        "not a rule of the database rollback type"),
    "the decision of another type": (_edited(lambda r: r["approval"].update(rollback_type="policy")),
                                     "approval.rollback_type", "differs from the receipt's rollback_type"),
    "an approver the decision did not count": (_with_decision(decision(), approver="mallory"), "approver",
                                               "approver is not derived from the approval decision"),
    "approved_by with an extra name": (
        _with_decision(decision(), approved_by=[{"name": "dba", "roles": ["dba"]}, {"name": "eng-lead", "roles": [
            "engineering_lead"]}, {"name": "cto", "roles": ["cto"]}]), "approved_by", "names cto, whom the approval"),
    "approved_by with inflated roles": (
        _with_decision(decision(), approved_by=[{"name": "dba", "roles": ["dba", "cto"]}, {"name": "eng-lead", "roles": [
            "engineering_lead"]}]), "approved_by", "gives dba roles the approval decision did not count"),
    "approved_by leaving one out": (_with_decision(decision(), approved_by=[{"name": "dba", "roles": ["dba"]}]),
                                    "approved_by", "leaves out eng-lead"),
    "approved_by as plain names": (_with_decision(decision(), approved_by=["mallory"]), "approved_by",
                                   "names mallory"),
    "emergency with retroactive_approval_due cleared": (
        _emergency(lambda r: r["approval"].update(retroactive_approval_due=None)), "approval.retroactive_approval_due",
        "cleared although the decision is an emergency"),
    "emergency with post_incident_review cleared": (
        _emergency(lambda r: r["approval"].update(post_incident_review="not_required")), "approval.post_incident_review",
        "not required although the decision is an emergency"),
    "emergency with a normal approval_path": (
        _emergency(lambda r: r["approval"].update(approval_path="approval")), "approval.approval_path",
        "an emergency edited to look normal"),
    "emergency flag cleared on the decision": (
        _emergency(lambda r: r["approval"].update(emergency=False)), "approval.emergency",
        "an emergency edited to look normal"),
    "emergency cleared on the receipt and the decision": (
        _emergency(lambda r: (r["approval"].update(emergency=False), r.update(emergency=False))), "approval.emergency",
        "edited to look normal"),
    "receipt says emergency, decision does not": (
        _edited(lambda r: r.update(emergency=True, retroactive_approval_due="2024-01-16T10:30:45Z",
                                   post_incident_review="required")), "emergency",
        "emergency is True but the approval decision's emergency is False"),
    "receipt's due time differs from the emergency decision's": (
        _emergency(lambda r: r.update(retroactive_approval_due="2099-01-01T00:00:00Z")), "retroactive_approval_due",
        "differs from the emergency decision's"),
}


@pytest.mark.parametrize("name", sorted(CONTRADICTIONS))
def test_receipt_that_contradicts_its_decision_is_refused_naming_it(ledger, signer, name):
    build, field, problem = CONTRADICTIONS[name]
    error = refused(ledger, signer, build(signer), problem)
    assert field in error.fields, (error.fields, error.msg)


def test_the_genuine_emergency_receipt_is_accepted(ledger, signer):
    result = R.append_receipt(ledger, make_receipt(signer, approval=emergency_decision()), signer=signer)
    assert result["receipt"]["emergency"] is True and result["receipt"]["post_incident_review"] == "required"


def test_a_failed_run_whose_approval_could_not_be_evaluated_is_recorded(ledger, signer):
    receipt = R.build_receipt(
        dict(rollback_id="rollback-20240115-000002", outcome="failed", environment="sandbox", reason="approval broke",
             component="database", rollback_type="database", requested_by="oncall", started_at="2024-01-15T10:30:45Z"),
        approval={"failed": True, "msg": "bad matrix"}, keyid=signer.public_key.keyid, now=NOW)
    assert R.append_receipt(ledger, receipt, signer=signer)["ledger_seq"] == 2


def test_requested_by_is_compared_after_unicode_normalization(ledger, signer):
    receipt = make_receipt(signer, requested_by="ONCALL")
    assert R.append_receipt(ledger, receipt, signer=signer)["ledger_seq"] == 2


def test_a_ledger_entry_edited_to_contradict_its_decision_fails_verification(ledger, signer):
    receipt = make_receipt(signer, "rollback-20240115-000003")
    receipt["approval"]["rule"] = "policy"
    entry = R.make_entry(2, R.verify_ledger(ledger, None)["last_entry_sha256"], receipt, R._sign_receipt(receipt, signer),
                         "2024-01-15T10:30:45Z")
    with open(ledger, "ab") as handle:
        handle.write(R.entry_line(entry))
    with open(R.head_path(ledger), "wb") as handle:
        handle.write(R.canonical(R.make_checkpoint(2, entry["entry_sha256"], "2024-01-15T10:30:45Z", signer)) + b"\n")
    state = R.verify_ledger(ledger, [signer.public_key])
    assert state["valid"] is False and "contradicts its approval decision" in state["message"]


# ---------------------------------------------------------------- real-world references are not secrets

IMAGE_REFS = [
    "registry.example.com/team/app@sha256:" + "3f5b0c1e9d4a7b2c" * 4,
    "123456789012.dkr.ecr.us-east-1.amazonaws.com/payments/api:1.4.2-b7f3c9a1e2d4",
    "ghcr.io/acme/payments-api:2024.06.1-build.8842-gb7f3c9a1e2d4",
    "quay.io/org/app:1.4.2-b7f3c9a1e2d4@sha256:" + "ab" * 32,
    "gcr.io/my-project-123456/frontend:b7f3c9a1-e2d4-4f5a-9b8c-1d2e3f4a5b6c",
    "app:1.4.2-B7F3C9A1E2D4",
    "app:release-2024-01-15T10-30-45Z-7c9e2f1a",
    "app:pr-4821-7c9e2f1a3b5d7f9e1a3c5b7d9f1e3a5c7b9d1f3e",
    "docker.io/library/nginx:1.25.3-alpine3.18-perl",
    "app:20240115.103045.b7f3c9a1e2d4-Linux-x86_64",
    "app:20240115_103045_b7f3c9a1e2d4_Linux_x86_64",
    "app:main-7c9e2f1-20240115T103045Z",
    "app:v2.3.1-14-g3f2a9c1",
    "app:v1.4.2-rc.1+build.20240115T103045Z.Ab12Cd34",
    "app:2.0.0-beta.3-ubuntu22.04-cuda12.1-py3.11",
    "eu.gcr.io/proj/app:0.9.12-SNAPSHOT-20240115.103045-42",
    "mcr.microsoft.com/dotnet/aspnet:8.0.1-jammy-chiseled-amd64",
    "1.4.2-b7f3c9a1e2d4",
]


@pytest.mark.parametrize("ref", IMAGE_REFS)
@pytest.mark.parametrize("field", ["to_version", "details"])
def test_real_world_image_references_are_accepted(ledger, signer, ref, field):
    fields = {"details": {"image": ref, "previous_image": ref}} if field == "details" else {field: ref[-256:]}
    receipt = make_receipt(signer, "rollback-20240115-000004", **fields)
    assert R.secret_findings(receipt) == []
    assert R.append_receipt(ledger, receipt, signer=signer)["ledger_seq"] == 2


def test_digest_refs_are_accepted_as_current_and_target_refs(ledger, signer):
    receipt = make_receipt(signer, "rollback-20240115-000005", current_ref=IMAGE_REFS[0], rollback_target_ref=IMAGE_REFS[3])
    assert R.append_receipt(ledger, receipt, signer=signer)["receipt"]["current_ref"] == IMAGE_REFS[0]


def test_a_long_reason_up_to_the_limit_is_accepted_and_one_over_is_refused_naming_the_limit(ledger, signer):
    words = ("The 1.4.2-b7f3c9a1e2d4 release of payments-api broke checkout for EU customers after the "
             "2024-01-15T10:30:45Z deploy; INC-12345 tracks it. ") * 40
    reason = words[:4096]
    accepted = R.append_receipt(ledger, make_receipt(signer, "rollback-20240115-000006", reason=reason), signer=signer)
    assert accepted["receipt"]["reason"] == reason
    error = refused(ledger, signer, make_receipt(signer, "rollback-20240115-000007", reason=words[:4097]), "reason")
    assert error.fields == ["reason"] and "is too long" in error.msg


@pytest.mark.parametrize("token", ["4fJq9_Xv2LpZ8wR1tYb7Nc3Hs6KdE0aU", "Zk9vQmFyQmF6UXV4Q2FuYXJ5U2VjcmV0VmFsdWUxMjM0NQ",
                                   "b7f3c9a1e2d4-Kq9xZ2pL7mN4vB8wR3tY", "xK9pQ2mZ7vL4nB8w_R3tY6sJ1dF5gH0c"])
def test_random_tokens_joined_to_build_ids_are_still_refused(ledger, signer, token):
    error = refused(ledger, signer, make_receipt(signer, "rollback-20240115-000008", notes="kept " + token),
                    "high-entropy string")
    assert token not in error.msg
