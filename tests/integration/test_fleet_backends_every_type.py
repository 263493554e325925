"""Every rollback type's playbook with the fleet backends, on the sandbox's seeded incident: one PostgreSQL ledger
(written as the INSERT+SELECT-only role) and one S3 prefix under Object Lock receive the receipts and sealed evidence
packs of the deployment, configuration, database, policy, application-state and GitOps rollbacks, chained in that
order; verify-receipts.yml then checks the whole chain against the locked heads. The backends are chosen by
inventory variables only and the credentials come from the environment, as AWX injects them; the deployment type's
own test (tests/integration/test_fleet_backends_playbook.py) covers tampering and deletion.

These rollbacks change the seeded world (a full `seed.sh --reset` before and after), so the file is one of the
shared-state files that run one after another (tests/conftest.py).
"""

import hashlib
import os
import uuid

import pytest

from ansible_collections.governed.rollback.plugins.module_utils import _ledger_pg
from tests.integration import _playbook as pb
from tests.integration import test_fleet_backends_playbook as deploy_test
from tests.sandbox_env import reseed

fleet = deploy_test.fleet  # the sandbox's PostgreSQL ledger database and S3 store, with their credentials
pg_sql = deploy_test.pg_sql

# type -> (playbook, extra variables beyond the inventory's defaults for the seeded incident)
TYPES = [
    ("deployment", "playbooks/rollback-deploy.yml", {"target_rev": 2}),
    ("configuration", "playbooks/rollback-config.yml", {}),
    ("database", "playbooks/rollback-db.yml", {}),
    ("policy", "playbooks/rollback-policy.yml", {}),
    ("state", "playbooks/rollback-state.yml", {}),
    ("gitops", "playbooks/rollback-gitops.yml", {"wait_timeout": 120}),
]


def seed_reset(sandbox_env):
    reseed("--reset", env=dict(os.environ, **sandbox_env))


@pytest.fixture(scope="module")
def backends(fleet):
    pg = fleet["pg"]
    table = "every_" + uuid.uuid4().hex[:10]
    pg_sql(pg, "owner", _ledger_pg.schema_sql(table, pg["writer"]))
    prefix = "every-%s/" % uuid.uuid4().hex[:8]
    inventory = deploy_test.backend_inventory(fleet, table, prefix, "GOVERNANCE")
    credentials = deploy_test.backend_credentials(fleet)
    yield {"table": table, "prefix": prefix, "inventory": inventory, "credentials": credentials}
    pg_sql(pg, "owner", "DROP TABLE IF EXISTS %s, %s_head; DROP FUNCTION IF EXISTS %s_append_only()"
           % (table, table, table))


@pytest.fixture(scope="module")
def every_type(backends, sandbox_env, tmp_path_factory):
    """The six rollbacks, one after the other, on a freshly reset world; the world reset again afterwards."""
    workdir = tmp_path_factory.mktemp("fleet-every-type")
    seed_reset(sandbox_env)
    runs = {}
    try:
        for kind, playbook, extra in TYPES:
            extravars = dict(backends["inventory"], evidence_dir=str(workdir / "evidence"),
                             receipt_ledger=str(workdir / "unused" / "ledger.jsonl"),
                             rollback_id="rollback-fleet-%s-%s" % (kind, backends["table"][-6:]), **extra)
            runs[kind] = pb.run_playbook(workdir / kind, extravars, envvars=backends["credentials"], verbosity=1,
                                         playbook=playbook)
        yield workdir, runs
    finally:
        seed_reset(sandbox_env)


def test_every_type_succeeds_with_its_receipt_chained_in_the_postgres_ledger(every_type, backends, fleet):
    workdir, runs = every_type
    for kind, run in runs.items():
        assert run.status == "successful", "%s: %s" % (kind, run.explain())
    assert not os.path.exists(str(workdir / "unused")), "a file ledger was written although PostgreSQL was chosen"
    rows = pg_sql(fleet["pg"], "postgres", "SELECT seq, rollback_id, receipt FROM %s ORDER BY seq" % backends["table"])
    assert [(r[0], r[2]["rollback_type"], r[2]["outcome"]) for r in rows] == [
        (seq, kind, "succeeded") for seq, (kind, _p, _e) in enumerate(TYPES, start=1)]
    assert all(r[2]["signing"]["signed"] is True for r in rows)
    heads = pg_sql(fleet["pg"], "postgres", "SELECT seq FROM %s_head ORDER BY seq" % backends["table"])
    assert heads == [(seq,) for seq in range(1, len(TYPES) + 1)]  # a signed head recorded with every append


def test_every_types_sealed_pack_is_locked_in_s3_with_the_digest_of_its_receipt(every_type, backends, fleet):
    s3, client = fleet["s3"], fleet["client"]
    rows = pg_sql(fleet["pg"], "postgres", "SELECT receipt FROM %s ORDER BY seq" % backends["table"])
    assert len(rows) == len(TYPES)
    for (receipt,) in rows:
        storage = receipt["evidence_storage"]
        rollback_id = receipt["rollback_id"]
        key = "%srollbacks/%s/%s.tar.gz" % (backends["prefix"], rollback_id, rollback_id)
        assert storage["archive_url"] == "%s/%s/%s" % (s3["endpoint"], s3["bucket"], key), receipt["rollback_type"]
        head = client.head_object(Bucket=s3["bucket"], Key=key, VersionId=storage["archive_version_id"])
        assert head["ObjectLockMode"] == "GOVERNANCE" and storage["retention_mode"] == "GOVERNANCE"
        body = client.get_object(Bucket=s3["bucket"], Key=key, VersionId=storage["archive_version_id"])["Body"].read()
        assert hashlib.sha256(body).hexdigest() == receipt["evidence"]["archive_sha256"], receipt["rollback_type"]
    heads = client.list_object_versions(Bucket=s3["bucket"],
                                        Prefix="%sledger-heads/%s/" % (backends["prefix"], backends["table"]))
    assert len(heads["Versions"]) == len(TYPES)  # one locked head per append


def test_verify_receipts_checks_the_whole_chain_against_the_locked_heads(every_type, backends, tmp_path):
    verify_vars = dict(backends["inventory"], receipt_public_key_path=pb.SIGNING_PUBLIC_KEY)
    run = pb.run_playbook(tmp_path / "verify", verify_vars, envvars=backends["credentials"],
                          playbook=deploy_test.VERIFY)
    assert run.status == "successful", run.explain()
    check = run.artifact_data["governed_rollback_ledger_check"]
    assert check["valid"] is True and check["entries"] == len(TYPES) and check["signatures_checked"] is True
    assert check["s3_head"]["size"] == len(TYPES)


def test_no_credential_is_in_any_output_or_artifact(every_type, backends, fleet):
    workdir, runs = every_type
    secrets = [fleet["pg"]["writer_password"], fleet["s3"]["secret"]]
    for run in runs.values():
        for secret in secrets:
            assert secret not in run.stdout
            assert secret not in repr(run.events)
    assert pb.leaked(str(workdir), secrets) == []
