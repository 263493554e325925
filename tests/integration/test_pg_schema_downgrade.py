"""pg_schema_downgrade against the sandbox's real PostgreSQL, run through Ansible: nothing mocked.

Every test works in scratch databases of its own (``gr_test_<random>``, owned by the sandbox's ``aureus`` role,
dropped afterwards), never in the seeded ``aureus_metadata``. The module connects as ``aureus`` with the password
from the environment, as AWX's PostgreSQL credential injects it; every output is searched for that password.

"Changes nothing" is checked with a fingerprint taken outside the module: ``pg_dump -s`` of the database plus the
rows of every table.
"""

import datetime
import hashlib
import json
import os
import subprocess
import tempfile
import threading
import time
import uuid

import psycopg2
import pytest

from tests.integration import _playbook as pb
from tests.sandbox_env import ROOT

MODULE = "governed.rollback.pg_schema_downgrade"
APP = "governed.rollback.pg_schema_downgrade"
DATA = os.path.join(ROOT, "tests", "integration", "data")
SANDBOX_MIGRATIONS = os.path.join(ROOT, "sandbox", "seed", "migrations")
SANDBOX_VERSIONS = ["v0.1.0-initial-schema", "v0.1.1-add-dataset-owner", "v0.1.2-add-pii-tracking-table"]
GOLANG = os.path.join(DATA, "golang-migrate-postgres-example")
FLYWAY = os.path.join(DATA, "flyway")
ALEMBIC = os.path.join(DATA, "alembic")
CACHE = os.environ.get("GOVERNED_ROLLBACK_CACHE", os.path.expanduser("~/.cache/governed-rollback"))


# --- the database ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg(sandbox_env):
    return {"host": sandbox_env["PGHOST"], "port": int(sandbox_env["PGPORT"]), "user": sandbox_env["PGUSER"],
            "password": sandbox_env["PGPASSWORD"], "socket": os.path.join(ROOT, ".sandbox", "pg", "run"),
            "bindir": sandbox_env.get("SANDBOX_PG_BINDIR", "/usr/lib/postgresql/15/bin")}


def superuser(pg, db="postgres"):
    conn = psycopg2.connect(host=pg["socket"], port=pg["port"], user="postgres", dbname=db)
    conn.autocommit = True
    return conn


def connect(pg, db):
    conn = psycopg2.connect(host=pg["host"], port=pg["port"], user=pg["user"], password=pg["password"], dbname=db)
    conn.autocommit = True
    return conn


class opened:  # noqa: N801  psycopg2's own "with conn" opens a transaction; this only closes
    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        return self.conn

    def __exit__(self, *exc):
        self.conn.close()


def execute(pg, db, sql, params=None):
    with opened(connect(pg, db)) as conn:
        cur = conn.cursor()
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else None


@pytest.fixture
def scratch(pg):
    """make() creates a scratch database owned by aureus; all are dropped after the test."""
    created = []

    def make():
        name = "gr_test_" + uuid.uuid4().hex[:10]
        conn = superuser(pg)
        conn.cursor().execute("CREATE DATABASE %s OWNER %s" % (name, pg["user"]))
        conn.close()
        created.append(name)
        return name

    yield make
    conn = superuser(pg)
    for name in created:
        conn.cursor().execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
    conn.close()


def fingerprint(pg, db, exclude_own=False):
    """What "nothing changed" means: the schema as pg_dump -s prints it and every table's rows."""
    argv = [os.path.join(pg["bindir"], "pg_dump"), "-s", "-h", pg["socket"], "-p", str(pg["port"]), "-U", "postgres", db]
    if exclude_own:
        argv += ["--exclude-schema=governed_rollback"]
    schema = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    # pg_dump 15.14+ brackets its output with a random \restrict key
    schema = "\n".join(line for line in schema.splitlines()
                       if not line.startswith(("-- Dumped", "\\restrict", "\\unrestrict")))
    rows = {}
    with opened(superuser(pg, db)) as conn:
        cur = conn.cursor()
        cur.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                    + (" AND n.nspname <> 'governed_rollback'" if exclude_own else "") + " ORDER BY 1, 2")
        for schema_name, table in cur.fetchall():
            cur.execute('SELECT * FROM "%s"."%s"' % (schema_name, table))
            rows["%s.%s" % (schema_name, table)] = sorted(json.dumps(r, default=str) for r in cur.fetchall())
    return {"schema": schema, "rows": rows}


def digest(value):
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


# --- building migrated databases -------------------------------------------------------------------------------------


def sandbox_style(pg, db, upto=3):
    """The sandbox's format (sandbox/seed.sh): one ledger row per applied <version>/up.sql, with the seed's data."""
    with opened(connect(pg, db)) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT "
                    "now(), checksum text NOT NULL)")
        for version in SANDBOX_VERSIONS[:upto]:
            with open(os.path.join(SANDBOX_MIGRATIONS, version, "up.sql"), "rb") as handle:
                up = handle.read()
            cur.execute(up.decode())
            cur.execute("INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)",
                        (version, hashlib.sha256(up).hexdigest()))
            if version == "v0.1.1-add-dataset-owner":
                cur.execute("INSERT INTO datasets (name, pii_level, owner) VALUES ('credit_risk', 'high', 'risk-team'), "
                            "('loan_book', 'low', 'lending'), ('test_dataset', 'none', 'qa')")
        if upto >= 3:
            cur.execute("INSERT INTO pii_access_tracking (dataset_id, accessed_by) SELECT id, 'analyst-' || id FROM "
                        "datasets WHERE pii_level <> 'none'")


def golang_files(directory):
    found = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".up.sql"):
            found[int(name.split("_", 1)[0])] = os.path.join(directory, name)
    return found


def golang_up(pg, db, directory, upto, dirty=False, after=0):
    """Migrate up the way golang-migrate does: each up file (versions after ``after`` up to ``upto``) in one Exec,
    then the single (version, dirty) row."""
    with opened(connect(pg, db)) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean "
                    "NOT NULL)")
        for version, path in sorted(golang_files(directory).items()):
            if version > upto:
                break
            if version <= after:
                continue
            with open(path) as handle:
                body = handle.read()
            if any(line.strip() and not line.strip().startswith("--") for line in body.splitlines()):
                cur.execute(body)  # golang-migrate sends a comment-only file too; libpq refuses an empty query
            cur.execute("TRUNCATE schema_migrations")
            cur.execute("INSERT INTO schema_migrations (version, dirty) VALUES (%s, %s)", (version, dirty and version == upto))


def native_project(root, migrations):
    """Write NNN_name.up.sql / .down.sql files: migrations is [(version, name, up, down or None)]."""
    os.makedirs(str(root), exist_ok=True)
    for version, name, up, down in migrations:
        with open(os.path.join(str(root), "%s_%s.up.sql" % (version, name)), "w") as handle:
            handle.write(up)
        if down is not None:
            with open(os.path.join(str(root), "%s_%s.down.sql" % (version, name)), "w") as handle:
                handle.write(down)
    return str(root)


# --- running the module ----------------------------------------------------------------------------------------------


@pytest.fixture
def backups(tmp_path):
    path = tmp_path / "backups"
    return str(path)


@pytest.fixture
def downgrade(pg, backups):
    """Run the module through ansible-runner with the PG* environment; every output is searched for the password."""

    def run(db, check=False, diff=False, verbosity=0, env=None, **args):
        args.setdefault("db", db)
        args.setdefault("backup_dir", backups)
        envvars = {"PGHOST": pg["host"], "PGPORT": str(pg["port"]), "PGUSER": pg["user"], "PGPASSWORD": pg["password"]}
        if verbosity:
            envvars["ANSIBLE_VERBOSITY"] = str(verbosity)
        envvars.update(env or {})
        with tempfile.TemporaryDirectory() as tmp:
            failed, result, stdout = pb.run_module_with_output(tmp, MODULE, args, envvars, check, diff)
            # ansible-runner's own "command" file records the environment it was handed; the rest is Ansible's output
            leaks = [where for where, _needle in pb.files_containing(os.path.join(tmp, "artifacts"), [pg["password"]])
                     if os.path.basename(where) != "command"]
        assert pg["password"] not in stdout
        assert pg["password"] not in json.dumps(result)
        assert not leaks, leaks
        return failed, result

    return run


def listing(path):
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def verify_backup(pg, path, sha256):
    done = subprocess.run([os.path.join(pg["bindir"], "pg_restore"), "--list", path], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    with open(path, "rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == sha256
    return done.stdout


# --- the sandbox's format --------------------------------------------------------------------------------------------


def test_check_mode_plans_rehearses_and_changes_nothing(pg, scratch, downgrade, backups):
    db = scratch()
    sandbox_style(pg, db)
    before = fingerprint(pg, db)
    failed, result = downgrade(db, check=True, diff=True, migrations_dir=SANDBOX_MIGRATIONS)
    assert not failed, result["msg"]
    assert result["changed"] is True
    assert (result["from_version"], result["to_version"]) == (SANDBOX_VERSIONS[2], SANDBOX_VERSIONS[1])
    assert (result["from_ref"], result["to_ref"]) == (SANDBOX_VERSIONS[2], SANDBOX_VERSIONS[1])
    assert result["tool"] == {"name": "native", "table": "schema_migrations", "style": "ledger"}
    assert [m["version"] for m in result["plan"]["migrations"]] == [SANDBOX_VERSIONS[2]]
    assert result["plan"]["migrations"][0]["sql"].strip() == "DROP TABLE pii_access_tracking;"
    assert result["rehearsal"]["applied"] and result["rehearsal"]["rolled_back"]
    assert result["data_loss"] == [{"object": "table", "table": "public.pii_access_tracking", "column": None,
                                    "rows": 2, "non_null_values": None, "loss": True}]
    assert result["approval_facts"] == {"data_loss": True, "non_transactional": False}
    assert "accept_data_loss" in result["would_refuse"][0]
    assert result["binding"] == {"schema_version": SANDBOX_VERSIONS[2], "schema_sha256": result["schema_sha256_before"]}
    # the plan names both schemas by digest: now, and the one the rehearsal produced
    assert result["receipt_fields"]["current_ref"] == "sha256:" + result["schema_sha256_before"]
    assert result["receipt_fields"]["rollback_target_ref"] == "sha256:" + result["schema_sha256_after"]
    assert result["schema_sha256_after"] != result["schema_sha256_before"]
    assert "table public.pii_access_tracking" in result["diff"]["before"]
    assert "table public.pii_access_tracking" not in result["diff"]["after"]
    assert result["backup_location"] is None and listing(backups) == []
    assert fingerprint(pg, db) == before


def test_data_loss_refused_then_accepted_then_idempotent(pg, scratch, downgrade, backups):
    db = scratch()
    sandbox_style(pg, db)
    before = fingerprint(pg, db)
    failed, result = downgrade(db, migrations_dir=SANDBOX_MIGRATIONS, verbosity=4)
    assert failed and result["refused"] == "data_loss", result
    assert "public.pii_access_tracking (2 rows)" in result["msg"]
    assert result["data_loss"][0]["rows"] == 2
    assert fingerprint(pg, db) == before
    verify_backup(pg, result["backup_location"], result["backup_sha256"])  # taken before anything, kept

    started = time.time()
    failed, result = downgrade(db, migrations_dir=SANDBOX_MIGRATIONS, accept_data_loss=True, actor="dba",
                               incident_id="INC-12345", reason="bad migration")
    ended = time.time()
    assert not failed, result["msg"]
    # The moment of mitigation, after the backup: the COMMIT returned, to the microsecond, also in the receipt.
    committed = datetime.datetime.strptime(result["committed_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    assert started + result["backup"]["seconds"] < committed < ended
    assert result["changed"] and result["data_lost"]
    toc = verify_backup(pg, result["backup_location"], result["backup_sha256"])
    assert "TABLE DATA public pii_access_tracking" in toc
    assert result["backup"]["verified"] and result["backup"]["format"] == "custom"
    assert result["migrations_reverted"][0]["version"] == SANDBOX_VERSIONS[2]
    assert result["receipt_fields"] == {
        "component": "database %s" % db, "migration_reverted": SANDBOX_VERSIONS[2], "from_version": SANDBOX_VERSIONS[2],
        "to_version": SANDBOX_VERSIONS[1], "backup_location": result["backup_location"],
        "data_loss": "table public.pii_access_tracking (2 rows)",
        "current_ref": "sha256:" + result["schema_sha256_before"],
        "rollback_target_ref": "sha256:" + result["schema_sha256_after"],
        "details": {"committed_at": result["committed_at"]}}
    assert result["schema_sha256_after"] != result["schema_sha256_before"]
    assert execute(pg, db, "SELECT version FROM schema_migrations ORDER BY 1") == [(v,) for v in SANDBOX_VERSIONS[:2]]
    assert execute(pg, db, "SELECT to_regclass('pii_access_tracking')") == [(None,)]
    assert execute(pg, db, "SELECT count(*) FROM datasets") == [(3,)]
    assert execute(pg, db, "SELECT from_version, to_version, actor, incident_id FROM governed_rollback.downgrades") == \
        [(SANDBOX_VERSIONS[2], SANDBOX_VERSIONS[1], "dba", "INC-12345")]

    after = fingerprint(pg, db)
    backups_now = listing(backups)
    failed, result = downgrade(db, migrations_dir=SANDBOX_MIGRATIONS, target_version=SANDBOX_VERSIONS[1])
    assert not failed and result["changed"] is False
    assert result["skipped_reason"] == "skipped downgrade: the database is already at version %s" % SANDBOX_VERSIONS[1]
    assert fingerprint(pg, db) == after and listing(backups) == backups_now


def test_expected_binding_mismatch_refused(pg, scratch, downgrade):
    db = scratch()
    sandbox_style(pg, db)
    failed, plan = downgrade(db, check=True, migrations_dir=SANDBOX_MIGRATIONS)
    assert not failed
    execute(pg, db, "ALTER TABLE datasets ADD COLUMN note text")  # the schema moves after the approval
    before = fingerprint(pg, db)
    failed, result = downgrade(db, migrations_dir=SANDBOX_MIGRATIONS, accept_data_loss=True,
                               expected_binding=plan["binding"])
    assert failed and result["refused"] == "binding_mismatch"
    assert "changed since it was approved: re-plan" in result["msg"]
    assert fingerprint(pg, db) == before


# --- refusals and clear errors: nothing changes ----------------------------------------------------------------------


def test_dirty_golang_migrate_table_refused(pg, scratch, downgrade, backups):
    db = scratch()
    golang_up(pg, db, GOLANG, 1185749658, dirty=True)
    before = fingerprint(pg, db)
    failed, result = downgrade(db, migrations_dir=GOLANG)
    assert failed and result["refused"] == "dirty"
    assert "version=1185749658 has dirty=true" in result["msg"]
    assert result["dirty_row"] == {"version": 1185749658, "dirty": True}
    assert fingerprint(pg, db) == before and listing(backups) == []


def test_unknown_target_version(pg, scratch, downgrade):
    db = scratch()
    sandbox_style(pg, db)
    before = fingerprint(pg, db)
    failed, result = downgrade(db, migrations_dir=SANDBOX_MIGRATIONS, target_version="v9.9.9-nope")
    assert failed and result["refused"] == "unknown_version"
    assert "unknown target version v9.9.9-nope" in result["msg"] and SANDBOX_VERSIONS[0] in result["msg"]
    assert fingerprint(pg, db) == before


def test_missing_down_file(pg, scratch, downgrade, backups):
    """golang-migrate's own example has up files without a down file."""
    db = scratch()
    golang_up(pg, db, GOLANG, 1585849751)
    before = fingerprint(pg, db)
    failed, result = downgrade(db, migrations_dir=GOLANG)
    assert failed and result["refused"] == "missing_down"
    assert "1585849751_just_a_comment.down.sql" in result["msg"]
    assert fingerprint(pg, db) == before and listing(backups) == []


def test_bad_dsn_clear_error_and_no_password(pg, scratch, downgrade):
    db = scratch()
    sandbox_style(pg, db)
    before = fingerprint(pg, db)
    failed, result = downgrade(db, migrations_dir=SANDBOX_MIGRATIONS, login_password="wrong-" + uuid.uuid4().hex,
                               verbosity=4)
    assert failed and "cannot connect to PostgreSQL" in result["msg"] and "password authentication failed" in result["msg"]
    failed, result = downgrade(db, migrations_dir=SANDBOX_MIGRATIONS, login_port=1)
    assert failed and "cannot connect to PostgreSQL 127.0.0.1:1" in result["msg"]
    assert fingerprint(pg, db) == before


def test_unreadable_backup(pg, scratch, downgrade, tmp_path):
    """A backup that cannot be read back in full (truncated on its way to storage) stops everything."""
    db = scratch()
    sandbox_style(pg, db)
    before = fingerprint(pg, db)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    real = os.path.join(pg["bindir"], "pg_dump")
    (bindir / "pg_dump").write_text(
        "#!/bin/sh\n# the real pg_dump, then the file loses its second half\n\"%s\" \"$@\" || exit $?\n"
        "for a in \"$@\"; do case $a in --file=*) f=${a#--file=};; esac; done\n"
        "size=$(stat -c %%s \"$f\"); truncate -s $((size / 2)) \"$f\"\n" % real)
    (bindir / "pg_dump").chmod(0o755)
    os.symlink(os.path.join(pg["bindir"], "pg_restore"), str(bindir / "pg_restore"))
    failed, result = downgrade(db, migrations_dir=SANDBOX_MIGRATIONS, accept_data_loss=True, client_bin_dir=str(bindir))
    assert failed and "cannot be read" in result["msg"] and "nothing was changed" in result["msg"], result["msg"]
    assert fingerprint(pg, db) == before
    # a backup directory that cannot be created
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    failed, result = downgrade(db, migrations_dir=SANDBOX_MIGRATIONS, accept_data_loss=True,
                               backup_dir=str(blocker / "backups"))
    assert failed and "cannot create backup_dir" in result["msg"]
    assert fingerprint(pg, db) == before


# --- failures during the downgrade -----------------------------------------------------------------------------------


def test_down_failing_half_way_changes_nothing_and_keeps_the_backup(pg, scratch, downgrade, tmp_path):
    project = native_project(tmp_path / "m", [
        (1, "base", "CREATE TABLE a (id int PRIMARY KEY, note text);", "DROP TABLE a;"),
        (2, "more", "CREATE TABLE b (id int); ALTER TABLE a ADD COLUMN extra int;",
         "DROP TABLE b;\nALTER TABLE a DROP COLUMN extra;\nALTER TABLE a DROP COLUMN no_such_column;\n"),
    ])
    db = scratch()
    golang_up(pg, db, project, 2)
    execute(pg, db, "INSERT INTO a VALUES (1, 'keep')")
    before = fingerprint(pg, db)
    failed, result = downgrade(db, migrations_dir=project, accept_data_loss=True)
    assert failed, result
    assert "down migration 2 failed at 2_more.down.sql line 3" in result["msg"]
    assert "no_such_column" in result["msg"] and "nothing was changed" in result["msg"]
    assert result["receipt_fields"]["outcome"] == "failed"
    assert fingerprint(pg, db) == before
    verify_backup(pg, result["backup_location"], result["backup_sha256"])


def test_lock_held_by_another_session_hits_lock_timeout(pg, scratch, downgrade):
    db = scratch()
    sandbox_style(pg, db)
    before = fingerprint(pg, db)
    blocker = connect(pg, db)
    blocker.autocommit = False
    blocker.cursor().execute("SELECT * FROM pii_access_tracking LIMIT 1")  # ACCESS SHARE, held until rollback
    try:
        started = time.monotonic()
        failed, result = downgrade(db, migrations_dir=SANDBOX_MIGRATIONS, accept_data_loss=True, lock_timeout=1)
        assert failed and result["refused"] == "lock_timeout", result["msg"]
        assert "waited more than 1.0s for a lock" in result["msg"]
        assert time.monotonic() - started < 60
    finally:
        blocker.rollback()
        blocker.close()
    assert fingerprint(pg, db) == before


def test_advisory_lock_held_is_refused_after_polling(pg, scratch, downgrade):
    db = scratch()
    sandbox_style(pg, db)
    from ansible_collections.governed.rollback.plugins.module_utils import _migrations as mig

    holder = connect(pg, db)
    holder.cursor().execute("SET application_name = 'other-downgrade'")
    holder.cursor().execute("SELECT pg_advisory_lock(%s)", (mig.own_lock_id(db),))
    before = fingerprint(pg, db)
    try:
        failed, result = downgrade(db, migrations_dir=SANDBOX_MIGRATIONS, accept_data_loss=True, advisory_lock_timeout=1)
    finally:
        holder.close()
    assert failed and result["refused"] == "locked"
    assert "other-downgrade" in result["msg"] and result["lock_holders"][0]["application_name"] == "other-downgrade"
    assert fingerprint(pg, db) == before


def test_backend_killed_mid_downgrade_leaves_nothing_half_applied(pg, scratch, downgrade, tmp_path):
    project = native_project(tmp_path / "m", [
        (1, "a", "CREATE TABLE a (id int);", "DROP TABLE a;"),
        (2, "b", "CREATE TABLE b (id int); CREATE TABLE c (id int);",
         "DROP TABLE b;\nSELECT pg_sleep(4);\nDROP TABLE c;\n"),
    ])
    db = scratch()
    golang_up(pg, db, project, 2)
    before = fingerprint(pg, db)
    killed = []

    def killer():
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not killed:
            rows = execute(pg, db, "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s AND "
                                   "query LIKE '%%pg_sleep%%'", (db, APP + ":downgrade"))
            if rows:
                conn = superuser(pg)
                conn.cursor().execute("SELECT pg_terminate_backend(%s)", (rows[0][0],))
                conn.close()
                killed.append(rows[0][0])
            time.sleep(0.2)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        failed, result = downgrade(db, migrations_dir=project)
    finally:
        killed.append("stop")
        thread.join()
    assert failed, result
    assert isinstance(killed[0], int), "the downgrade's backend was never seen"
    assert result.get("connection_lost") is True, result["msg"]
    assert "none of the downgrade was applied" in result["msg"]
    assert result["receipt_fields"]["outcome"] == "failed"
    assert fingerprint(pg, db) == before


# --- non-transactional statements ------------------------------------------------------------------------------------


def test_non_transactional_refused_unless_allowed(pg, scratch, downgrade, tmp_path):
    project = native_project(tmp_path / "m", [
        (1, "users", "CREATE TABLE users (id int, email text);", "DROP TABLE users;"),
        (2, "email_index", "CREATE UNIQUE INDEX CONCURRENTLY users_email ON users (email);",
         "-- DROP INDEX CONCURRENTLY in a comment is not a statement\nDROP INDEX CONCURRENTLY IF EXISTS users_email;\n"),
    ])
    db = scratch()
    golang_up(pg, db, project, 2)
    before = fingerprint(pg, db)
    failed, result = downgrade(db, migrations_dir=project)
    assert failed and result["refused"] == "non_transactional"
    assert "2_email_index.down.sql line 2: DROP INDEX CONCURRENTLY" in result["msg"]
    assert fingerprint(pg, db) == before
    failed, result = downgrade(db, migrations_dir=project, allow_non_transactional=True)
    assert not failed, result["msg"]
    assert [n["line"] for n in result["non_transactional"]] == [2]
    assert result["receipt_fields"]["details"] == {"committed_at": result["committed_at"]}  # the last COMMIT
    assert execute(pg, db, "SELECT version, dirty FROM schema_migrations") == [(1, False)]
    assert execute(pg, db, "SELECT to_regclass('users_email')") == [(None,)]


# --- Alembic, Flyway -------------------------------------------------------------------------------------------------


def test_alembic_project_downgrades_two_revisions(pg, scratch, downgrade, tmp_path):
    from alembic import command
    from alembic.config import Config

    db = scratch()
    config = Config()
    config.set_main_option("script_location", ALEMBIC)
    url = "postgresql+psycopg2://%s:%s@%s:%s/%s" % (pg["user"], pg["password"], pg["host"], pg["port"], db)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")
    execute(pg, db, "INSERT INTO projects (name, owner) VALUES ('apollo', 'ops')")
    failed, result = downgrade(db, check=True, migrations_dir=ALEMBIC, steps=2)
    assert not failed, result["msg"]
    assert [m["version"] for m in result["migrations_reverted"]] == ["c3", "b2"]
    assert "DROP TABLE tasks" in result["migrations_reverted"][0]["sql"]
    owner = [e for e in result["data_loss"] if e["column"] == "owner"][0]
    assert owner["non_null_values"] == 1 and owner["loss"]
    failed, result = downgrade(db, migrations_dir=ALEMBIC, steps=2, accept_data_loss=True)
    assert not failed, result["msg"]
    assert (result["from_version"], result["to_version"]) == ("c3", "a1")
    assert execute(pg, db, "SELECT version_num FROM alembic_version") == [("a1",)]
    assert execute(pg, db, "SELECT column_name FROM information_schema.columns WHERE table_name = 'projects' "
                           "ORDER BY ordinal_position") == [("id",), ("name",)]
    assert execute(pg, db, "SELECT name FROM projects") == [("apollo",)]


def flyway_style(pg, db, upto_rank, failed_rank=None):
    """flyway_schema_history as Flyway creates it, filled as Flyway migrate does (checksums computed like Flyway)."""
    from ansible_collections.governed.rollback.plugins.module_utils._migrations import flyway_checksum

    scripts = ["V1__create_accounts.sql", "V2__add_account_status.sql", "V2_1__create_audit_log.sql"]
    with opened(connect(pg, db)) as conn:
        cur = conn.cursor()
        cur.execute('CREATE TABLE flyway_schema_history (installed_rank integer NOT NULL PRIMARY KEY, version '
                    'varchar(50), description varchar(200) NOT NULL, type varchar(20) NOT NULL, script varchar(1000) '
                    'NOT NULL, checksum integer, installed_by varchar(100) NOT NULL, installed_on timestamp NOT NULL '
                    'DEFAULT now(), execution_time integer NOT NULL, success boolean NOT NULL)')
        for rank, script in enumerate(scripts[:upto_rank], start=1):
            with open(os.path.join(FLYWAY, script)) as handle:
                body = handle.read()
            if rank != failed_rank:
                cur.execute(body)
            version, description = script[1:-4].split("__")
            cur.execute("INSERT INTO flyway_schema_history VALUES (%s, %s, %s, 'SQL', %s, %s, current_user, now(), 1, %s)",
                        (rank, version.replace("_", "."), description.replace("_", " "), script, flyway_checksum(body),
                         rank != failed_rank))


def test_flyway_style_undo_records_undo_sql(pg, scratch, downgrade):
    db = scratch()
    flyway_style(pg, db, 3)
    execute(pg, db, "INSERT INTO accounts (email) VALUES ('a@example.com')")
    failed, result = downgrade(db, migrations_dir=FLYWAY, target_version="1")
    assert failed and result["refused"] == "data_loss" and "accounts.status (1 non-null values)" in result["msg"]
    failed, result = downgrade(db, migrations_dir=FLYWAY, target_version="1", accept_data_loss=True, actor="dba")
    assert not failed, result["msg"]
    assert [m["version"] for m in result["migrations_reverted"]] == ["2.1", "2"]
    rows = execute(pg, db, "SELECT installed_rank, version, description, type, script, installed_by, success FROM "
                           "flyway_schema_history WHERE installed_rank > 3 ORDER BY 1")
    assert rows == [(4, "2.1", "create audit log", "UNDO_SQL", "U2_1__create_audit_log.sql", "dba", True),
                    (5, "2", "add account status", "UNDO_SQL", "U2__add_account_status.sql", "dba", True)]
    assert execute(pg, db, "SELECT to_regclass('audit_log'), to_regprocedure('audit_note(text)')") == [(None, None)]
    failed, result = downgrade(db, migrations_dir=FLYWAY, target_version="1")
    assert not failed and result["changed"] is False


def test_flyway_failed_row_refused(pg, scratch, downgrade):
    db = scratch()
    flyway_style(pg, db, 3, failed_rank=3)
    before = fingerprint(pg, db)
    failed, result = downgrade(db, migrations_dir=FLYWAY)
    assert failed and result["refused"] == "failed"
    assert "installed_rank=3 version=2.1 script=V2_1__create_audit_log.sql has success=false" in result["msg"]
    assert fingerprint(pg, db) == before


@pytest.fixture(scope="module")
def flyway_cli():
    """Flyway's command line from Maven Central (sandbox/build.sh flyway, cached); skipped with its error if it
    cannot be had."""
    done = subprocess.run([os.path.join(ROOT, "sandbox", "build.sh"), "flyway"], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        pytest.skip("Flyway's command line could not be fetched: %s" % (done.stderr.strip()[-2000:]))
    lib = [line for line in done.stdout.splitlines() if " in /" in line]
    path = lib[-1].split(" in ", 1)[1].split(" (", 1)[0] if lib else os.path.join(CACHE, "flyway-11.20.3", "lib")
    return path


def flyway(pg, db, lib, *args):
    argv = ["java", "-cp", os.path.join(lib, "*"), "org.flywaydb.commandline.Main", "-loggers=console",
            "-url=jdbc:postgresql://%s:%s/%s" % (pg["host"], pg["port"], db), "-user=%s" % pg["user"],
            "-locations=filesystem:%s" % FLYWAY] + list(args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False,
                          env=dict(os.environ, FLYWAY_PASSWORD=pg["password"]))


def test_real_flyway_history_undo_and_community_reads_it(pg, scratch, downgrade, flyway_cli):
    db = scratch()
    done = flyway(pg, db, flyway_cli, "migrate")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "now at version v2.1" in done.stdout
    failed, result = downgrade(db, migrations_dir=FLYWAY, steps=2, flyway_undo_type="DELETE")
    assert not failed, result["msg"]
    assert (result["from_version"], result["to_version"]) == ("2.1", "1")
    # Flyway's own checksums of the V scripts match ours; the undo rows carry ours of the U scripts.
    from ansible_collections.governed.rollback.plugins.module_utils._migrations import flyway_checksum

    for script, checksum in execute(pg, db, "SELECT script, checksum FROM flyway_schema_history"):
        with open(os.path.join(FLYWAY, script)) as handle:
            assert flyway_checksum(handle.read()) == checksum, script
    info = flyway(pg, db, flyway_cli, "info")
    assert info.returncode == 0 and "Schema version: 1" in info.stdout, info.stdout + info.stderr
    again = flyway(pg, db, flyway_cli, "migrate")
    assert again.returncode == 0 and "now at version v2.1" in again.stdout, again.stdout


# --- a real project's history ----------------------------------------------------------------------------------------


def test_real_project_downgrades_several_steps_like_a_fresh_migration(pg, scratch, downgrade):
    """golang-migrate's example history (not written here): 1485949617 down to 1185749658 (three steps, one of them
    the index built CONCURRENTLY) matches a database migrated up only to 1185749658."""
    db, reference = scratch(), scratch()
    golang_up(pg, db, GOLANG, 1485949617)
    golang_up(pg, reference, GOLANG, 1185749658)
    failed, result = downgrade(db, migrations_dir=GOLANG, target_version="1185749658")
    assert not failed, result["msg"]
    assert [m["version"] for m in result["migrations_reverted"]] == ["1485949617", "1385949617", "1285849751"]
    assert result["tool"]["style"] == "golang-migrate"
    assert result["schema_drift"] == [] and result["drift_baseline"] is None
    assert fingerprint(pg, db, exclude_own=True) == fingerprint(pg, reference)
    # the schema of the version downgraded from is recorded (an honest baseline: reached by migrating up)
    assert execute(pg, db, "SELECT version FROM governed_rollback.schema_digests") == [("1485949617",)]


def test_schema_drift_reported_against_the_recorded_baseline(pg, scratch, downgrade, tmp_path):
    """A down migration that leaves an enum type behind is not an error: the difference from the schema recorded when
    the target version was current (by an earlier downgrade from it) is reported as drift."""
    project = native_project(tmp_path / "m", [
        (1, "t", "CREATE TABLE t (id int);", "DROP TABLE t;"),
        (2, "u", "CREATE TABLE u (id int);", "DROP TABLE u;"),
        (3, "mood", "CREATE TYPE mood AS ENUM ('ok', 'meh'); CREATE TABLE v (id int, m mood);", "DROP TABLE v;"),
    ])
    db = scratch()
    golang_up(pg, db, project, 2)
    failed, result = downgrade(db, migrations_dir=project)  # 2 -> 1: the schema of 2 is recorded
    assert not failed, result["msg"]
    assert result["drift_baseline"] is None and result["schema_drift"] == []
    golang_up(pg, db, project, 3, after=1)
    failed, result = downgrade(db, migrations_dir=project)  # 3 -> 2: its down leaves the enum behind
    assert not failed, result["msg"]
    assert result["drift_baseline"] is not None
    assert [(d["object"], d["change"]) for d in result["schema_drift"]] == [("type public.mood", "added")]
    assert result["schema_drift"][0]["now"] == "enum ('ok', 'meh')"
