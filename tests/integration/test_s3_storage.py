"""Evidence packs and ledger heads in the sandbox's real S3 store (SeaweedFS with Object Lock), nothing mocked.

evidence_capture's finalize uploads the sealed archive and the pack manifest with a SHA256 checksum and Object Lock
retention, reads the checksum back, and is idempotent; a bucket without Object Lock gets no retention (and asking for
it there is refused before anything is written). rollback_receipt mirrors every signed head of a file ledger as a
new locked object, and state=verify catches a ledger deleted or rolled back against the newest locked head, even when
the heads' current versions were hidden behind delete markers. The module runs through Ansible with the credentials
in the environment, as an AWX credential injects them; the secret key appears in no output or artifact.
"""

import datetime
import json
import os
import shutil
import uuid

import boto3
import botocore.config
import botocore.exceptions
import pytest

from ansible_collections.governed.rollback.plugins.module_utils._approval import evaluate
from tests.integration import _playbook as pb

ROSTER = {"oncall": ["on_call_engineer"], "eng-lead": ["engineering_lead"], "dba": ["dba"]}
NOW = datetime.datetime(2024, 1, 15, 10, 30, 45, tzinfo=datetime.timezone.utc)

RECEIPT = "governed.rollback.rollback_receipt"
CAPTURE = "governed.rollback.evidence_capture"


@pytest.fixture(scope="module")
def s3(sandbox_env):
    if "SANDBOX_S3_ENDPOINT_URL" not in sandbox_env:
        pytest.fail("the sandbox has no S3 store: restart it (make sandbox-down sandbox-up)")
    with open(sandbox_env["SANDBOX_S3_SECRET_ACCESS_KEY_FILE"]) as handle:
        secret = handle.read().strip()
    info = {"endpoint": sandbox_env["SANDBOX_S3_ENDPOINT_URL"], "region": sandbox_env["SANDBOX_S3_REGION"],
            "bucket": sandbox_env["SANDBOX_S3_BUCKET"], "plain": sandbox_env["SANDBOX_S3_PLAIN_BUCKET"],
            "access": sandbox_env["SANDBOX_S3_ACCESS_KEY_ID"], "secret": secret}
    info["client"] = boto3.session.Session().client(
        "s3", endpoint_url=info["endpoint"], region_name=info["region"], aws_access_key_id=info["access"],
        aws_secret_access_key=secret, config=botocore.config.Config(s3={"addressing_style": "path"}))
    info["env"] = {"AWS_ACCESS_KEY_ID": info["access"], "AWS_SECRET_ACCESS_KEY": secret,
                   "AWS_ENDPOINT_URL": info["endpoint"], "AWS_REGION": info["region"]}
    return info


def files_pack(tmp_path, rollback_id):
    """An evidence pack of two phases made of local files (no cluster needed), finalized by the module."""
    source = tmp_path / "app.conf"
    source.write_text("mode=blue\n")
    evidence = tmp_path / "evidence"
    return str(evidence), [{"name": "config-file", "type": "file", "path": str(source)}], source


def capture(tmp_path, s3, rollback_id, evidence_dir, sources, phase, finalize=False, check=False, **s3_options):
    args = {"rollback_id": rollback_id, "phase": phase, "evidence_dir": evidence_dir, "sources": sources,
            "finalize": finalize}
    args.update(s3_options)
    private = tmp_path / ("run-%s" % uuid.uuid4().hex[:8])
    return pb.run_module_with_output(private, CAPTURE, args, envvars=s3["env"], check=check)


def test_finalize_uploads_the_sealed_pack_under_object_lock_and_checks_the_checksum(tmp_path, s3):
    rollback_id = "rollback-s3-" + uuid.uuid4().hex[:8]
    prefix = "t-%s/" % uuid.uuid4().hex[:8]
    evidence_dir, sources, source = files_pack(tmp_path, rollback_id)
    failed, _res, _out = capture(tmp_path, s3, rollback_id, evidence_dir, sources, "before")
    assert not failed
    source.write_text("mode=green\n")
    options = dict(s3_bucket=s3["bucket"], s3_prefix=prefix, s3_object_lock_mode="COMPLIANCE", s3_object_lock_days=1)

    failed, planned, _out = capture(tmp_path, s3, rollback_id, evidence_dir, sources, "after", finalize=True,
                                    check=True, **options)
    assert not failed and planned["changed"] is True
    upload = [p for p in planned["plan"] if p["type"] == "s3"]
    assert upload and upload[0]["path"][0] == "s3://%s/%srollbacks/%s/%s.tar.gz" % (
        s3["bucket"], prefix, rollback_id, rollback_id)
    assert s3["client"].list_objects_v2(Bucket=s3["bucket"], Prefix=prefix).get("KeyCount", 0) == 0

    failed, result, output = capture(tmp_path, s3, rollback_id, evidence_dir, sources, "after", finalize=True,
                                     **options)
    assert not failed, result.get("msg")
    storage = result["evidence_storage"]
    assert storage == result["evidence_manifest"]["evidence_storage"]
    archive = result["s3_objects"]["archive"]
    assert archive["key"] == "%srollbacks/%s/%s.tar.gz" % (prefix, rollback_id, rollback_id)
    assert storage["archive_url"] == "%s/%s/%s" % (s3["endpoint"], s3["bucket"], archive["key"])
    assert storage["retention_mode"] == "COMPLIANCE" and storage["retain_until"]
    assert archive["sha256"] == result["archive_sha256"]

    # What the store holds: these bytes, this checksum, this version, locked.
    client = s3["client"]
    head = client.head_object(Bucket=s3["bucket"], Key=archive["key"], VersionId=storage["archive_version_id"],
                              ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == archive["checksum_sha256"]
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] > datetime.datetime.now(datetime.timezone.utc)
    body = client.get_object(Bucket=s3["bucket"], Key=archive["key"])["Body"].read()
    with open(result["archive_path"], "rb") as handle:
        assert body == handle.read()
    with pytest.raises(botocore.exceptions.ClientError):
        client.delete_object(Bucket=s3["bucket"], Key=archive["key"], VersionId=storage["archive_version_id"])
    assert client.head_object(Bucket=s3["bucket"], Key=archive["key"], VersionId=storage["archive_version_id"])

    # Idempotent: the same pack again uploads nothing and returns the same versions.
    failed, again, _out = capture(tmp_path, s3, rollback_id, evidence_dir, [], "after", finalize=True, **options)
    assert not failed and again["changed"] is False
    assert again["evidence_storage"] == storage
    versions = client.list_object_versions(Bucket=s3["bucket"], Prefix=prefix + "rollbacks/")["Versions"]
    assert len(versions) == 2  # archive and manifest, once each
    assert s3["secret"] not in output and s3["secret"] not in json.dumps(result)


def test_a_bucket_without_object_lock_gets_no_retention_and_asking_for_it_there_is_refused(tmp_path, s3):
    rollback_id = "rollback-plain-" + uuid.uuid4().hex[:8]
    prefix = "t-%s/" % uuid.uuid4().hex[:8]
    evidence_dir, sources, _source = files_pack(tmp_path, rollback_id)
    assert not capture(tmp_path, s3, rollback_id, evidence_dir, sources, "before")[0]
    failed, result, _out = capture(tmp_path, s3, rollback_id, evidence_dir, [], "after", finalize=True,
                                   s3_bucket=s3["plain"], s3_prefix=prefix, s3_object_lock_mode="COMPLIANCE")
    assert failed and "has no Object Lock" in result["msg"]
    assert s3["client"].list_objects_v2(Bucket=s3["plain"], Prefix=prefix).get("KeyCount", 0) == 0
    failed, result, _out = capture(tmp_path, s3, rollback_id, evidence_dir, [], "after", finalize=True,
                                   s3_bucket=s3["plain"], s3_prefix=prefix)
    assert not failed, result.get("msg")
    assert result["evidence_storage"]["retention_mode"] is None and result["evidence_storage"]["retain_until"] is None


def test_a_wrong_secret_fails_clearly_and_never_shows(tmp_path, s3):
    rollback_id = "rollback-badkey-" + uuid.uuid4().hex[:8]
    evidence_dir, sources, _source = files_pack(tmp_path, rollback_id)
    assert not capture(tmp_path, s3, rollback_id, evidence_dir, sources, "before")[0]
    wrong = "WrongSecret" + uuid.uuid4().hex
    env = dict(s3["env"], AWS_SECRET_ACCESS_KEY=wrong)
    failed, result, output = pb.run_module_with_output(
        tmp_path / "badkey", CAPTURE, {"rollback_id": rollback_id, "phase": "after", "evidence_dir": evidence_dir,
                                       "finalize": True, "s3_bucket": s3["bucket"]}, envvars=env)
    assert failed and "SignatureDoesNotMatch" in result["msg"]
    assert wrong not in output and wrong not in json.dumps(result)


# --- ledger heads ----------------------------------------------------------------------------------------------------


def receipt_args(ledger, rollback_id):
    return {"ledger": ledger, "rollback_id": rollback_id, "outcome": "failed", "signing": "required",
            "signing_key_path": pb.SIGNING_KEY, "rollback_type": "database", "requested_by": "oncall",
            "environment": "sandbox", "reason": "locked heads test", "incident_id": "INC-12345", "component": "database",
            "approval": {"decision": evaluate("database", "oncall", ["dba", "eng-lead"], ROSTER, now=NOW)},
            "failure": {"task": "test", "message": "a failed rollback for the ledger test"}}


def test_file_ledger_heads_are_locked_objects_and_verify_catches_a_deleted_or_rolled_back_ledger(tmp_path, s3):
    ledger = str(tmp_path / "receipts" / "ledger.jsonl")
    name = "heads-" + uuid.uuid4().hex[:8]
    heads = {"s3_bucket": s3["bucket"], "s3_heads_name": name, "s3_object_lock_mode": "GOVERNANCE",
             "s3_object_lock_days": 1}
    results = []
    for i in range(3):
        failed, res = pb.run_module(tmp_path / ("append-%d" % i), RECEIPT,
                                    dict(receipt_args(ledger, "rollback-heads-%d" % i), **heads), envvars=s3["env"])
        assert not failed, res.get("msg")
        results.append(res)
        assert res["s3_head_object"]["retention"]["mode"] == "GOVERNANCE"
    keys = [v["Key"] for v in s3["client"].list_object_versions(
        Bucket=s3["bucket"], Prefix="ledger-heads/%s/" % name)["Versions"]]
    assert len(keys) == 3 and len(set(keys)) == 3

    verify = {"state": "verify", "ledger": ledger, "public_key_path": pb.SIGNING_PUBLIC_KEY, "s3_bucket": s3["bucket"],
              "s3_heads_name": name}
    failed, good = pb.run_module(tmp_path / "verify-good", RECEIPT, verify, envvars=s3["env"])
    assert not failed and good["valid"] and good["s3_head"]["size"] == 3 and good["s3_head"]["lag"] == 0

    # Rolled back: an older copy of the ledger and its head put back (consistent with each other).
    saved = tmp_path / "saved"
    shutil.copytree(os.path.dirname(ledger), str(saved))
    fourth = dict(receipt_args(ledger, "rollback-heads-3"), **heads)
    failed, _res = pb.run_module(tmp_path / "append-3", RECEIPT, fourth, envvars=s3["env"])
    assert not failed
    shutil.rmtree(os.path.dirname(ledger))
    shutil.copytree(str(saved), os.path.dirname(ledger))
    failed, bad = pb.run_module(tmp_path / "verify-rolled", RECEIPT, dict(verify, check_envelopes=False),
                                envvars=s3["env"])
    assert failed and bad["valid"] is False
    assert "newest locked head" in bad["msg"] and "at seq 4 but the ledger holds 3" in bad["msg"]
    # Hiding the newest heads behind delete markers changes nothing: locked versions are still listed.
    for key in set(k["Key"] for k in s3["client"].list_object_versions(
            Bucket=s3["bucket"], Prefix="ledger-heads/%s/" % name)["Versions"]):
        s3["client"].delete_object(Bucket=s3["bucket"], Key=key)
    failed, bad = pb.run_module(tmp_path / "verify-markers", RECEIPT, dict(verify, check_envelopes=False),
                                envvars=s3["env"])
    assert failed and "at seq 4 but the ledger holds 3" in bad["msg"]
    # An append to the rolled-back ledger is refused too, and writes nothing.
    before = open(ledger, "rb").read()
    failed, refused = pb.run_module(tmp_path / "append-refused", RECEIPT,
                                    dict(receipt_args(ledger, "rollback-heads-9"), **heads), envvars=s3["env"])
    assert failed and "rolled back, truncated or deleted" in refused["msg"]
    assert open(ledger, "rb").read() == before

    # Deleted: no ledger at all.
    shutil.rmtree(os.path.dirname(ledger))
    failed, gone = pb.run_module(tmp_path / "verify-deleted", RECEIPT, verify, envvars=s3["env"])
    assert failed and gone["valid"] is False and "holds 0 entries" in gone["msg"]
