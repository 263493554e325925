"""playbooks/rollback-deploy.yml with the fleet backends, end to end on the sandbox: the receipt in the PostgreSQL
ledger (as the INSERT+SELECT-only role), the evidence pack and every ledger head in the S3 store under Object Lock;
then playbooks/verify-receipts.yml verifies that ledger and catches it rolled back and deleted through the locked
heads. Only inventory-level variables select the backends (as an AWX inventory would); the credentials come from
the environment (as AWX credentials inject them), and the ledger password and the S3 secret key appear in no output
and no artifact. The file defaults are covered by tests/integration/test_rollback_deploy_playbook.py.
"""

import hashlib
import os
import uuid

import boto3
import botocore.config
import psycopg2
import pytest

from ansible_collections.governed.rollback.plugins.module_utils import _ledger_pg
from tests.integration import _playbook as pb
from tests.sandbox_env import ROOT

NAME = "frontend"
VERIFY = "playbooks/verify-receipts.yml"


def _read(path):
    with open(path) as handle:
        return handle.read().strip()


@pytest.fixture(scope="module")
def fleet(sandbox_env):
    for var in ("SANDBOX_S3_ENDPOINT_URL", "SANDBOX_LEDGER_PGDATABASE"):
        if var not in sandbox_env:
            pytest.fail("the sandbox lacks %s: restart it (make sandbox-down sandbox-up)" % var)
    info = {
        "pg": {"host": sandbox_env["PGHOST"], "port": int(sandbox_env["PGPORT"]),
               "db": sandbox_env["SANDBOX_LEDGER_PGDATABASE"], "writer": sandbox_env["SANDBOX_LEDGER_PGUSER"],
               "writer_password": _read(sandbox_env["SANDBOX_LEDGER_PGPASSWORD_FILE"]),
               "owner": sandbox_env["SANDBOX_LEDGER_OWNER"],
               "owner_password": _read(sandbox_env["SANDBOX_LEDGER_OWNER_PGPASSWORD_FILE"]),
               "socket": os.path.join(ROOT, ".sandbox", "pg", "run")},
        "s3": {"endpoint": sandbox_env["SANDBOX_S3_ENDPOINT_URL"], "region": sandbox_env["SANDBOX_S3_REGION"],
               "bucket": sandbox_env["SANDBOX_S3_BUCKET"], "access": sandbox_env["SANDBOX_S3_ACCESS_KEY_ID"],
               "secret": _read(sandbox_env["SANDBOX_S3_SECRET_ACCESS_KEY_FILE"])},
    }
    info["client"] = boto3.session.Session().client(
        "s3", endpoint_url=info["s3"]["endpoint"], region_name=info["s3"]["region"],
        aws_access_key_id=info["s3"]["access"], aws_secret_access_key=info["s3"]["secret"],
        config=botocore.config.Config(s3={"addressing_style": "path"}))
    return info


def pg_sql(pg, role, text):
    if role == "postgres":
        conn = psycopg2.connect(host=pg["socket"], port=pg["port"], user="postgres", dbname=pg["db"])
    else:
        conn = psycopg2.connect(host=pg["host"], port=pg["port"], user=pg["owner"], password=pg["owner_password"],
                                dbname=pg["db"])
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(text)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def backend_inventory(fleet, table, prefix, lock_mode):
    """Inventory-level settings selecting the PostgreSQL ledger and the S3 evidence store (what an AWX inventory
    holds): no secrets among them."""
    pg, s3 = fleet["pg"], fleet["s3"]
    return {
        "rollback_ledger_backend": "postgresql", "rollback_ledger_table": table,
        "rollback_ledger_pg_host": pg["host"], "rollback_ledger_pg_port": pg["port"],
        "rollback_ledger_pg_user": pg["writer"], "rollback_ledger_pg_database": pg["db"],
        "rollback_evidence_s3_bucket": s3["bucket"], "rollback_evidence_s3_prefix": prefix,
        "rollback_evidence_s3_endpoint_url": s3["endpoint"], "rollback_evidence_s3_region": s3["region"],
        "rollback_evidence_s3_object_lock_mode": lock_mode, "rollback_evidence_s3_object_lock_days": 1,
    }


def backend_credentials(fleet):
    """What the two AWX credentials (ledger database, S3) inject as environment variables."""
    return {"GOVERNED_ROLLBACK_LEDGER_PGPASSWORD": fleet["pg"]["writer_password"],
            "AWS_ACCESS_KEY_ID": fleet["s3"]["access"], "AWS_SECRET_ACCESS_KEY": fleet["s3"]["secret"]}


@pytest.fixture
def ledger_table(fleet):
    table = "fleet_" + uuid.uuid4().hex[:10]
    pg_sql(fleet["pg"], "owner", _ledger_pg.schema_sql(table, fleet["pg"]["writer"]))
    yield table
    pg_sql(fleet["pg"], "owner", "DROP TABLE IF EXISTS %s, %s_head; DROP FUNCTION IF EXISTS %s_append_only()"
           % (table, table, table))


def test_deploy_rollback_with_the_postgres_ledger_and_s3_evidence_then_verify_catches_rollback_and_deletion(
        kubectl, namespace, tmp_path, fleet, ledger_table):
    pg, s3, client = fleet["pg"], fleet["s3"], fleet["client"]
    pb.frontend_with_history(kubectl, namespace)
    prefix = "fleet-%s/" % uuid.uuid4().hex[:8]
    evidence_dir = str(tmp_path / "evidence")
    inventory = backend_inventory(fleet, ledger_table, prefix, "COMPLIANCE")
    credentials = backend_credentials(fleet)
    extravars = dict(inventory, namespace=namespace, deployment=NAME, evidence_dir=evidence_dir,
                     receipt_ledger=str(tmp_path / "unused" / "ledger.jsonl"), target_rev=2, **pb.INCIDENT)
    run = pb.run_playbook(tmp_path / "deploy", extravars, envvars=credentials, verbosity=1)
    assert run.status == "successful", run.explain()
    assert pb.template_image(pb.get(kubectl, "deployment", namespace, NAME)) == "aureus/frontend:v0.1.1"
    assert not os.path.exists(str(tmp_path / "unused")), "the file ledger was written although PostgreSQL was chosen"

    # The receipt is a row of the PostgreSQL ledger, with its signed head.
    rows = pg_sql(pg, "postgres", "SELECT seq, rollback_id, receipt FROM %s ORDER BY seq" % ledger_table)
    assert [(r[0], r[1]) for r in rows] == [(1, run.artifact_data["governed_rollback"]["rollback_id"])]
    receipt = rows[0][2]
    assert receipt["outcome"] == "succeeded" and receipt["signing"]["signed"] is True
    assert pg_sql(pg, "postgres", "SELECT seq FROM %s_head" % ledger_table) == [(1,)]

    # The sealed pack is in the bucket, locked, and the receipt records where.
    storage = receipt["evidence_storage"]
    rollback_id = receipt["rollback_id"]
    key = "%srollbacks/%s/%s.tar.gz" % (prefix, rollback_id, rollback_id)
    assert storage["archive_url"] == "%s/%s/%s" % (s3["endpoint"], s3["bucket"], key)
    assert storage["retention_mode"] == "COMPLIANCE"
    head = client.head_object(Bucket=s3["bucket"], Key=key, VersionId=storage["archive_version_id"],
                              ChecksumMode="ENABLED")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    body = client.get_object(Bucket=s3["bucket"], Key=key, VersionId=storage["archive_version_id"])["Body"].read()
    assert hashlib.sha256(body).hexdigest() == receipt["evidence"]["archive_sha256"]
    manifest_key = storage["manifest_url"][len("%s/%s/" % (s3["endpoint"], s3["bucket"])):]
    assert manifest_key.startswith("%srollbacks/%s/" % (prefix, rollback_id))
    assert client.head_object(Bucket=s3["bucket"], Key=manifest_key, VersionId=storage["manifest_version_id"])
    heads = client.list_object_versions(Bucket=s3["bucket"], Prefix="%sledger-heads/%s/" % (prefix, ledger_table))
    assert len(heads["Versions"]) == 1

    # verify-receipts.yml over the PostgreSQL ledger and the locked heads.
    verify_vars = dict(inventory, receipt_public_key_path=pb.SIGNING_PUBLIC_KEY)
    good = pb.run_playbook(tmp_path / "verify-good", verify_vars, envvars=credentials, playbook=VERIFY)
    assert good.status == "successful", good.explain()
    check = good.artifact_data["governed_rollback_ledger_check"]
    assert check["valid"] is True and check["entries"] == 1 and check["signatures_checked"] is True
    assert check["s3_head"]["size"] == 1
    assert check["ledger"].startswith("postgresql://%s@" % pg["writer"])

    # A second run (whatever its outcome, it leaves a receipt), then the ledger rolled back by a superuser (the tail
    # entry and its own head gone, so the table is consistent with itself): only the locked head in S3 still says 2.
    second = pb.run_playbook(tmp_path / "deploy-2", dict(extravars, target_rev=1), envvars=credentials)
    assert pg_sql(pg, "postgres", "SELECT max(seq) FROM %s" % ledger_table) == [(2,)]
    pg_sql(pg, "postgres", "SET session_replication_role = replica; DELETE FROM %s WHERE seq = 2; "
                           "DELETE FROM %s_head WHERE seq = 2" % (ledger_table, ledger_table))
    rolled = pb.run_playbook(tmp_path / "verify-rolled", verify_vars, envvars=credentials, playbook=VERIFY)
    assert rolled.status == "failed"
    check = rolled.artifact_data["governed_rollback_ledger_check"]
    assert check["valid"] is False and check["first_bad_entry"] == 2
    assert "newest locked head" in check["message"] and "at seq 2 but the ledger holds 1" in check["message"]

    # Deleted: the tables dropped.
    pg_sql(pg, "postgres", "DROP TABLE %s, %s_head" % (ledger_table, ledger_table))
    deleted = pb.run_playbook(tmp_path / "verify-deleted", verify_vars, envvars=credentials, playbook=VERIFY)
    assert deleted.status == "failed"
    check = deleted.artifact_data["governed_rollback_ledger_check"]
    assert check["valid"] is False and "holds 0 entries" in check["message"]

    # Canaries: the ledger password and the S3 secret key are in no output, event or artifact, nor in the evidence.
    secrets = [pg["writer_password"], s3["secret"]]
    for each in (run, second, good, rolled, deleted):
        for secret in secrets:
            assert secret not in each.stdout
            assert secret not in repr(each.events)
    assert pb.leaked(str(tmp_path), secrets) == []
    assert pb.files_containing(evidence_dir, secrets) == []


def test_a_failed_rollbacks_pack_is_sealed_and_locked_in_s3_and_its_receipt_says_where(
        kubectl, namespace, tmp_path, fleet, ledger_table, sandbox_env):
    """The rescue preserves the state as it is (the failure phase) and seals the pack: with the S3 store configured
    that pack is stored and locked like a successful run's, and the failure receipt names the object and its digest
    (an audit of a failed rollback reads the same place as any other)."""
    s3, client = fleet["s3"], fleet["client"]
    pb.frontend_with_history(kubectl, namespace)
    prefix = "fleet-failed-%s/" % uuid.uuid4().hex[:8]
    credentials = backend_credentials(fleet)
    extravars = dict(backend_inventory(fleet, ledger_table, prefix, "GOVERNANCE"), namespace=namespace,
                     deployment=NAME, evidence_dir=str(tmp_path / "evidence"), target_rev=2,
                     receipt_ledger=str(tmp_path / "unused" / "ledger.jsonl"),
                     smoke_urls=[{"url": sandbox_env["SANDBOX_OPA_URL"] + "/no-such-page"}],
                     deployment_rollback_http_retries=0, **pb.INCIDENT)

    run = pb.run_playbook(tmp_path / "deploy", extravars, envvars=credentials)

    assert run.status == "failed"
    assert run.failed_tasks[-2:] == ["Assert the rollback is verified", "Stop, escalate; do not attempt further rollbacks"]
    rows = pg_sql(fleet["pg"], "postgres", "SELECT receipt FROM %s ORDER BY seq" % ledger_table)
    assert len(rows) == 1
    receipt = rows[0][0]
    assert receipt["outcome"] == "failed" and receipt["verification"]["smoke_tests"] == "failed"
    rollback_id = receipt["rollback_id"]
    key = "%srollbacks/%s/%s.tar.gz" % (prefix, rollback_id, rollback_id)
    storage = receipt["evidence_storage"]
    assert storage["archive_url"] == "%s/%s/%s" % (s3["endpoint"], s3["bucket"], key)
    assert storage["retention_mode"] == "GOVERNANCE"
    head = client.head_object(Bucket=s3["bucket"], Key=key, VersionId=storage["archive_version_id"])
    assert head["ObjectLockMode"] == "GOVERNANCE"
    body = client.get_object(Bucket=s3["bucket"], Key=key, VersionId=storage["archive_version_id"])["Body"].read()
    assert hashlib.sha256(body).hexdigest() == receipt["evidence"]["archive_sha256"]
    # the stored pack is the failure phase's, sealed by the rescue
    assert os.path.isdir(str(tmp_path / "evidence" / rollback_id / "failure"))
    for secret in (fleet["pg"]["writer_password"], s3["secret"]):
        assert secret not in run.stdout and secret not in repr(run.events)
    assert pb.leaked(str(tmp_path), [fleet["pg"]["writer_password"], s3["secret"]]) == []
