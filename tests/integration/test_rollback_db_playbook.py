"""playbooks/rollback-db.yml and playbooks/restore-db.yml end to end on the sandbox's real PostgreSQL.

Every scenario but the headline works in a throwaway database of its own (``gr_pb_<random>``, owned by ``aureus``,
migrated up with the sandbox's own migrations and seed data, dropped afterwards), with its own evidence directory,
backup directory and ledger, so it can run beside others. The headline runs the playbook exactly as an operator
would, with the inventory's defaults, on the seeded ``aureus_metadata``, and puts it back with
``sandbox/seed.sh --reset database`` afterwards.

"Nothing changed" is proven with a fingerprint taken outside the playbook: ``pg_dump -s`` plus every table's rows.
"""

import glob
import json
import os
import subprocess
import tarfile
import uuid

import pytest

from tests.integration import _playbook as pb
from tests.integration.test_pg_schema_downgrade import SANDBOX_VERSIONS, connect, execute, fingerprint, opened, \
    sandbox_style, superuser
from tests.sandbox_env import ROOT, reseed

ROLLBACK = "playbooks/rollback-db.yml"
RESTORE = "playbooks/restore-db.yml"


@pytest.fixture(scope="module")
def pg(sandbox_env):
    return {"host": sandbox_env["PGHOST"], "port": int(sandbox_env["PGPORT"]), "user": sandbox_env["PGUSER"],
            "password": sandbox_env["PGPASSWORD"], "socket": os.path.join(ROOT, ".sandbox", "pg", "run"),
            "bindir": sandbox_env.get("SANDBOX_PG_BINDIR", "/usr/lib/postgresql/15/bin")}


def drop_databases(pg, prefix):
    conn = superuser(pg)
    cur = conn.cursor()
    cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",))
    for (name,) in cur.fetchall():
        cur.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
    conn.close()


def databases(pg, prefix):
    with opened(superuser(pg)) as conn:
        cur = conn.cursor()
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1", (prefix + "%",))
        return [row[0] for row in cur.fetchall()]


class Incident:
    """One throwaway database at v0.1.2 (the sandbox's incident state), its directories, and the playbook runs."""

    def __init__(self, pg, workdir, db):
        self.pg = pg
        self.workdir = str(workdir)
        self.db = db
        self.evidence_dir = os.path.join(self.workdir, "evidence")
        self.backup_dir = os.path.join(self.workdir, "backups")
        self.ledger = os.path.join(self.workdir, "ledger.jsonl")
        self.runs = 0

    def run(self, playbook=ROLLBACK, check=False, verbosity=0, **extravars):
        self.runs += 1
        variables = {"evidence_dir": self.evidence_dir, "receipt_ledger": self.ledger, "backup_dir": self.backup_dir}
        if self.db:
            variables["database"] = self.db
        variables.update(extravars)
        run = pb.run_playbook(os.path.join(self.workdir, "runner-%d" % self.runs), variables, check=check,
                              verbosity=verbosity, playbook=playbook)
        # The database password never reaches the output or the runner's record of the job (what AWX stores).
        assert self.pg["password"] not in run.stdout
        assert pb.files_containing(os.path.join(run.artifact_dir, "job_events"), [self.pg["password"]]) == []
        return run

    def fingerprint(self):
        return fingerprint(self.pg, self.db)

    def receipts(self):
        return [entry["receipt"] for entry in pb.ledger_entries(self.ledger)]

    def receipt(self):
        receipts = self.receipts()
        assert len(receipts) == 1, receipts
        return receipts[0]

    def backups(self):
        return sorted(glob.glob(os.path.join(self.backup_dir, "*")))

    def verify_ledger(self):
        failed, result = pb.verify_ledger(os.path.join(self.workdir, "verify-%d" % self.runs), self.ledger)
        assert not failed and result["valid"], result.get("message")
        assert result["signatures_checked"] and result["unsigned_entries"] == []

    def archive_members(self):
        names = []
        for path in pb.archives(self.evidence_dir):
            with tarfile.open(path, "r:gz") as archive:
                names.extend(archive.getnames())
        return names

    def no_password_anywhere(self):
        texts = [(where, text) for where, text in pb.every_text(self.workdir)
                 if not where.startswith(os.path.join(self.workdir, "runner-"))]
        assert texts
        assert [where for where, text in texts if self.pg["password"] in text] == []


@pytest.fixture
def incident(pg, tmp_path):
    db = "gr_pb_" + uuid.uuid4().hex[:10]
    conn = superuser(pg)
    conn.cursor().execute("CREATE DATABASE %s OWNER %s" % (db, pg["user"]))
    conn.close()
    sandbox_style(pg, db)
    try:
        yield Incident(pg, tmp_path, db)
    finally:
        drop_databases(pg, db)


def versions(pg, db):
    return [row[0] for row in execute(pg, db, "SELECT version FROM schema_migrations ORDER BY version")]


# --- the headline: the inventory's defaults on the seeded database ---------------------------------------------------


def test_rollback_db_with_the_inventory_defaults_rolls_aureus_metadata_back(pg, tmp_path):
    """`ansible-playbook playbooks/rollback-db.yml` alone, at -v, then again (nothing to do); reset afterwards."""
    incident = Incident(pg, tmp_path, None)
    incident.db = "aureus_metadata"
    try:
        assert versions(pg, "aureus_metadata") == SANDBOX_VERSIONS
        datasets = execute(pg, "aureus_metadata", "SELECT count(*) FROM datasets")[0][0]
        run = pb.run_playbook(os.path.join(incident.workdir, "runner-1"), {
            "evidence_dir": incident.evidence_dir, "receipt_ledger": incident.ledger}, verbosity=1, playbook=ROLLBACK)
        assert run.status == "successful", run.explain()
        assert pg["password"] not in run.stdout
        assert pb.files_containing(os.path.join(run.artifact_dir, "job_events"), [pg["password"]]) == []

        assert versions(pg, "aureus_metadata") == SANDBOX_VERSIONS[:2]
        assert execute(pg, "aureus_metadata", "SELECT to_regclass('pii_access_tracking')") == [(None,)]
        assert execute(pg, "aureus_metadata", "SELECT count(*) FROM datasets")[0][0] == datasets

        receipt = incident.receipt()
        assert receipt["outcome"] == "succeeded" and receipt["rollback_type"] == "database"
        assert receipt["migration_reverted"] == SANDBOX_VERSIONS[2]
        assert (receipt["from_version"], receipt["to_version"]) == (SANDBOX_VERSIONS[2], SANDBOX_VERSIONS[1])
        assert receipt["data_loss"] == "table public.pii_access_tracking (3 rows)"
        assert receipt["dba_approval"] == "dba"
        assert receipt["downtime"].startswith("none: the application kept serving")
        assert receipt["current_ref"].startswith("sha256:") and receipt["rollback_target_ref"].startswith("sha256:")
        assert receipt["verification"]["migration_table_at_target"] == "pass"
        assert receipt["verification"]["schema_drift_accepted"] == "pass"
        assert receipt["verification"]["integrity_counts_unchanged"] == "pass"
        # the backup lies under the evidence directory (the inventory's default) and reads back in full
        backup = receipt["backup_location"]
        assert backup.startswith(os.path.join(incident.evidence_dir, "db-backups") + os.sep)
        toc = subprocess.run([os.path.join(pg["bindir"], "pg_restore"), "--list", backup], capture_output=True,
                             text=True, check=True).stdout
        assert "TABLE DATA public pii_access_tracking" in toc
        # the evidence pack: before, after, and the schema diff showing the dropped table
        members = incident.archive_members()
        assert any(m.endswith("before/schema/schema.sql") for m in members)
        assert any(m.endswith("after/table_counts/table_counts.yaml") for m in members)
        diff = glob.glob(os.path.join(incident.evidence_dir, "*", "diff", "schema", "*.diff"))
        assert diff and "-CREATE TABLE public.pii_access_tracking" in open(diff[0]).read()
        incident.verify_ledger()

        # Again: already at the inventory's pinned target, nothing to do, nothing written.
        after = fingerprint(pg, "aureus_metadata")
        again = pb.run_playbook(os.path.join(incident.workdir, "runner-2"), {
            "evidence_dir": incident.evidence_dir, "receipt_ledger": incident.ledger}, playbook=ROLLBACK)
        assert again.status == "successful", again.explain()
        assert again.count("changed") == 0
        assert "Nothing to roll back" in again.stdout
        assert fingerprint(pg, "aureus_metadata") == after
        assert len(incident.receipts()) == 1
        incident.no_password_anywhere()
    finally:
        reseed("--reset", "database")
    assert versions(pg, "aureus_metadata") == SANDBOX_VERSIONS


# --- refusals: nothing changes ---------------------------------------------------------------------------------------


def test_data_loss_is_refused_without_acceptance_and_nothing_changes(incident):
    before = incident.fingerprint()
    run = incident.run(accept_data_loss=False)
    assert run.status == "failed"
    assert incident.fingerprint() == before
    receipt = incident.receipt()
    assert receipt["outcome"] == "failed"
    assert "accept_data_loss" in receipt["failure"]["message"]
    assert "public.pii_access_tracking (2 rows)" in receipt["failure"]["message"]
    assert receipt["approval"]["approved"] is True  # approved, then refused by the module: the data comes first
    # the backup taken before anything was touched is kept
    assert len(incident.backups()) == 1
    incident.verify_ledger()


def test_denied_approval_changes_nothing_and_writes_no_backup(incident):
    before = incident.fingerprint()
    run = incident.run(approvals=["dba"])  # the Engineering Lead is missing
    assert run.status == "failed"
    assert incident.fingerprint() == before
    assert incident.backups() == []
    receipt = incident.receipt()
    assert receipt["outcome"] == "denied"
    assert receipt["approval"]["missing_roles"] == ["engineering_lead"]
    assert "Nothing was changed in the database" in " ".join(run.stdout.split())
    incident.verify_ledger()


def test_failing_down_migration_gives_a_failed_receipt_with_failure_evidence(incident, tmp_path):
    """A down migration that fails half-way (its first statement works, the second fails) changes nothing."""
    migrations = os.path.join(str(tmp_path), "migrations")
    source = os.path.join(ROOT, "sandbox", "seed", "migrations")
    for version in SANDBOX_VERSIONS:
        os.makedirs(os.path.join(migrations, version))
        for name in ("up.sql", "down.sql"):
            with open(os.path.join(source, version, name)) as handle:
                body = handle.read()
            if version == SANDBOX_VERSIONS[2] and name == "down.sql":
                body += "\nALTER TABLE datasets DROP COLUMN no_such_column;\n"
            with open(os.path.join(migrations, version, name), "w") as handle:
                handle.write(body)
    before = incident.fingerprint()
    run = incident.run(migrations_dir=migrations)
    assert run.status == "failed"
    assert incident.fingerprint() == before
    receipt = incident.receipt()
    assert receipt["outcome"] == "failed"
    assert "no_such_column" in receipt["failure"]["message"]
    assert receipt["evidence"]["archive_sha256"]
    members = incident.archive_members()
    assert any("/failure/schema/schema.sql" in "/" + m for m in members), members
    assert any("/failure/migrations/" in "/" + m for m in members)
    incident.verify_ledger()


def test_p0_emergency_override_with_the_cto_proceeds(incident):
    run = incident.run(priority="P0", emergency_override=True, incident_commander="ic", approvals=["cto"])
    assert run.status == "successful", run.explain()
    assert versions(incident.pg, incident.db) == SANDBOX_VERSIONS[:2]
    receipt = incident.receipt()
    assert receipt["outcome"] == "succeeded" and receipt["emergency"] is True
    # the moment of mitigation, pg_schema_downgrade's committed_at, reaches the receipt's details
    assert receipt["details"]["committed_at"][:19] >= receipt["started_at"][:19]
    assert receipt["post_incident_review"] == "required" and receipt["retroactive_approval_due"]


def test_an_evidence_dir_relative_to_the_jobs_directory_is_read_back_from_where_the_pack_was_written(incident):
    """AWX and ansible-runner start the job in the project directory; an evidence_dir relative to it is where the
    captures write, and the checks that read the pack back (integrity counts, migration table) find it there, not
    in the role's or the playbook's own directories. The receipt names the absolute place."""
    relative = os.path.relpath(incident.evidence_dir, ROOT)
    assert not os.path.isabs(relative)
    run = incident.run(evidence_dir=relative)
    assert run.status == "successful", run.explain()
    assert versions(incident.pg, incident.db) == SANDBOX_VERSIONS[:2]
    receipt = incident.receipt()
    assert receipt["verification"]["integrity_counts_unchanged"] == "pass"
    assert receipt["verification"]["migration_table_at_target"] == "pass"
    archive = receipt["evidence"]["archive"]
    assert archive.startswith(incident.evidence_dir + os.sep) and os.path.isfile(archive)
    assert run.artifact_data["governed_rollback"]["evidence_archive"] == archive


# --- the last resort: restore from the backup ------------------------------------------------------------------------


def test_restore_swaps_in_the_backup_keeps_the_old_database_and_names_the_rows_written_after_it(
        incident, kubectl, namespace, pg):
    """A backup, then two datasets written after it; the restore brings back the backup's state under the database's
    name while the application is stopped, keeps the replaced database, and its report names the two lost rows."""
    kubectl("create", "deployment", "app", "-n", namespace, "--image=aureus/frontend:v0.1.1", "--replicas=2")
    kubectl("rollout", "status", "deployment/app", "-n", namespace, "--timeout=90s")
    backup = os.path.join(incident.workdir, "backup.dump")
    subprocess.run([os.path.join(pg["bindir"], "pg_dump"), "-Fc", "-f", backup, "-h", pg["socket"], "-p",
                    str(pg["port"]), "-U", "postgres", incident.db], check=True)
    with opened(connect(pg, incident.db)) as conn:
        cur = conn.cursor()
        cur.execute("INSERT INTO datasets (name, pii_level, owner) VALUES ('late_a', 'low', 'x'), ('late_b', 'none', 'y') "
                    "RETURNING id")
        late_ids = sorted(row[0] for row in cur.fetchall())
    after_backup = incident.fingerprint()

    run = incident.run(playbook=RESTORE, backup=backup, app_namespace=namespace, app_deployment="app",
                       wait_timeout=120)
    assert run.status == "successful", run.explain()

    kept = databases(pg, incident.db + "_pre_restore_")
    assert len(kept) == 1 and databases(pg, incident.db + "_restoring_") == []
    assert fingerprint(pg, kept[0]) == after_backup  # the replaced database, untouched
    names = [row[0] for row in execute(pg, incident.db, "SELECT name FROM datasets")]
    assert "late_a" not in names and len(names) == 3  # the backup's state
    deployment = pb.get(kubectl, "deployment", namespace, "app")
    assert deployment["spec"]["replicas"] == 2 and deployment["status"].get("readyReplicas") == 2

    receipt = incident.receipt()
    assert receipt["outcome"] == "succeeded" and receipt["rollback_type"] == "database"
    assert receipt["backup_location"] == backup
    assert "2 row(s) written after the backup" in receipt["data_loss"] and "public.datasets 2" in receipt["data_loss"]
    assert receipt["details"]["kept_database"] == kept[0]
    assert receipt["downtime"].endswith("(application scaled to 0 and back)")
    assert receipt["dba_approval"] == "dba"
    assert receipt["verification"]["names_swapped"] == "pass"
    assert receipt["verification"]["application_rolled_out"] == "pass"
    reports = glob.glob(os.path.join(incident.evidence_dir, "*", "after", "data_loss_report", "*"))
    assert len(reports) == 1
    with open(reports[0]) as handle:
        report = json.load(handle)
    assert report["kept_database"] == kept[0] and report["rows_lost"] == 2
    assert report["tables"] == [{"table": "public.datasets", "primary_key": "id", "rows_only_in_kept": 2,
                                 "keys": ["(%d)" % i for i in late_ids], "keys_truncated": False}]
    assert 0 <= report["backup_age_seconds"] < 3600
    incident.verify_ledger()
    incident.no_password_anywhere()


def test_restore_of_an_unreadable_backup_changes_nothing(incident):
    backup = os.path.join(incident.workdir, "truncated.dump")
    with open(backup, "wb") as handle:
        handle.write(b"PGDMP\x01\x0e\x00")
    before = incident.fingerprint()
    run = incident.run(playbook=RESTORE, backup=backup, app_deployment="")
    assert run.status == "failed"
    assert incident.fingerprint() == before
    assert databases(incident.pg, incident.db + "_") == []
    assert incident.receipt()["outcome"] == "failed"


def test_restore_of_a_directory_format_backup_checks_its_digest_first(incident, pg):
    """The module's directory-format backups (backup_format=directory) restore too, and the expected digest is the
    one the module records for a directory: a wrong one stops the restore before anything changes."""
    import hashlib

    backup = os.path.join(incident.workdir, "backup.dir")
    subprocess.run([os.path.join(pg["bindir"], "pg_dump"), "-Fd", "-j", "2", "-f", backup, "-h", pg["socket"], "-p",
                    str(pg["port"]), "-U", "postgres", incident.db], check=True)
    lines = []
    for name in sorted(os.listdir(backup)):
        with open(os.path.join(backup, name), "rb") as handle:
            lines.append("%s  %s\n" % (hashlib.sha256(handle.read()).hexdigest(), name))
    digest = hashlib.sha256("".join(lines).encode()).hexdigest()
    execute(pg, incident.db, "INSERT INTO datasets (name, pii_level, owner) VALUES ('late_dir', 'low', 'x')")
    before = incident.fingerprint()

    run = incident.run(playbook=RESTORE, backup=backup, backup_sha256="0" * 64, app_deployment="")
    assert run.status == "failed"
    assert "backup %s has sha256 %s, expected %s; nothing was changed" % (backup, digest, "0" * 64) in \
        " ".join(run.stdout.split())
    assert incident.fingerprint() == before and databases(pg, incident.db + "_") == []

    run = incident.run(playbook=RESTORE, backup=backup, backup_sha256=digest, app_deployment="")
    assert run.status == "successful", run.explain()
    assert "late_dir" not in [row[0] for row in execute(pg, incident.db, "SELECT name FROM datasets")]
    receipts = incident.receipts()
    assert [r["outcome"] for r in receipts] == ["failed", "succeeded"]
    assert receipts[1]["details"]["kept_database"].startswith(incident.db + "_pre_restore_")


def test_check_mode_plans_both_playbooks_and_changes_nothing(incident, pg):
    backup = os.path.join(incident.workdir, "backup.dump")
    subprocess.run([os.path.join(pg["bindir"], "pg_dump"), "-Fc", "-f", backup, "-h", pg["socket"], "-p",
                    str(pg["port"]), "-U", "postgres", incident.db], check=True)
    before = incident.fingerprint()
    run = incident.run(check=True)
    assert run.status == "successful", run.explain()
    said = " ".join(run.stdout.split())  # the output callback wraps long lines
    assert "PLANNED (check mode: nothing was changed, no receipt written)" in said
    assert "data loss table public.pii_access_tracking (2 rows)" in said
    run = incident.run(playbook=RESTORE, check=True, backup=backup, app_deployment="")
    assert run.status == "successful", run.explain()
    said = " ".join(run.stdout.split())
    assert "PLANNED (check mode: nothing was changed, no receipt written)" in said
    assert "the replaced database is kept as %s_pre_restore_" % incident.db in said
    assert incident.fingerprint() == before
    assert databases(pg, incident.db + "_") == []
    assert incident.receipts() == [] and incident.backups() == []
    assert not os.path.exists(incident.evidence_dir) or pb.archives(incident.evidence_dir) == []
