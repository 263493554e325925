"""The receipt ledger in the sandbox's real PostgreSQL 15: concurrency, a killed appender, an INSERT+SELECT-only role,
tampering by a superuser, and rollback_receipt run through Ansible with the password never shown.

Every test works on a ledger table of its own (``t_<random>``) in the sandbox's ``governed_ledger`` database, created
by the ledger's owner role with the collection's DDL and granted to the writer role, as the README describes. The
appends connect as the writer (``gr_ledger_writer``), as an AWX job would.
"""

import datetime
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import uuid

import psycopg2
import pytest
from securesystemslib.signer import CryptoSigner

from ansible_collections.governed.rollback.plugins.module_utils import _ledger, _ledger_pg
from ansible_collections.governed.rollback.plugins.module_utils import _receipt as R
from ansible_collections.governed.rollback.plugins.module_utils._approval import evaluate
from tests.integration import _playbook as pb
from tests.sandbox_env import ROOT

ROSTER = {"oncall": ["on_call_engineer"], "eng-lead": ["engineering_lead"], "dba": ["dba"]}
NOW = datetime.datetime(2024, 1, 15, 10, 30, 45, tzinfo=datetime.timezone.utc)
RECEIPT = "governed.rollback.rollback_receipt"


def _read(path):
    with open(path) as handle:
        return handle.read().strip()


@pytest.fixture(scope="module")
def ledger_db(sandbox_env):
    if "SANDBOX_LEDGER_PGDATABASE" not in sandbox_env:
        pytest.fail("the sandbox has no PostgreSQL ledger database: restart it (make sandbox-down sandbox-up)")
    return {
        "host": sandbox_env["PGHOST"], "port": int(sandbox_env["PGPORT"]), "db": sandbox_env["SANDBOX_LEDGER_PGDATABASE"],
        "writer": sandbox_env["SANDBOX_LEDGER_PGUSER"],
        "writer_password": _read(sandbox_env["SANDBOX_LEDGER_PGPASSWORD_FILE"]),
        "owner": sandbox_env["SANDBOX_LEDGER_OWNER"],
        "owner_password": _read(sandbox_env["SANDBOX_LEDGER_OWNER_PGPASSWORD_FILE"]),
        "socket": os.path.join(ROOT, ".sandbox", "pg", "run"),
    }


def writer_params(db):
    return {"login_host": db["host"], "login_port": db["port"], "login_user": db["writer"],
            "login_password": db["writer_password"], "db": db["db"]}


def connect(db, role):
    if role == "postgres":
        conn = psycopg2.connect(host=db["socket"], port=db["port"], user="postgres", dbname=db["db"])
    else:
        conn = psycopg2.connect(host=db["host"], port=db["port"], user=db[role], password=db[role + "_password"],
                                dbname=db["db"])
    conn.autocommit = True
    return conn


def sql(db, role, text, params=None):
    conn = connect(db, role)
    try:
        with conn.cursor() as cur:
            cur.execute(text, params)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


@pytest.fixture
def table(ledger_db):
    name = "t_" + uuid.uuid4().hex[:12]
    sql(ledger_db, "owner", _ledger_pg.schema_sql(name, ledger_db["writer"]))
    yield name
    sql(ledger_db, "owner", "DROP TABLE IF EXISTS %s, %s_head; DROP FUNCTION IF EXISTS %s_append_only()"
        % (name, name, name))


@pytest.fixture(scope="module")
def signer_pem():
    return CryptoSigner.generate_ed25519().private_bytes


@pytest.fixture(scope="module")
def signer(signer_pem):
    return R.load_signer(signer_pem)


def make_receipt(signer, rollback_id):
    decision = evaluate("database", "oncall", ["dba", "eng-lead"], ROSTER, now=NOW)
    return R.build_receipt(
        dict(rollback_id=rollback_id, outcome="succeeded", incident_id="INC-12345", environment="sandbox",
             reason="postgres ledger test", component="database", from_version="v0.1.2", to_version="v0.1.1",
             current_ref="sha256:" + "a" * 64, rollback_target_ref="b" * 40),
        approval={"decision": decision}, evidence={"archive": "/tmp/x.tar.gz", "archive_sha256": "c" * 64},
        keyid=signer.public_key.keyid, now=NOW)


def backend(db, table):
    return _ledger.open_ledger(None, "postgresql", writer_params(db), table)


def append(db, table, signer, rollback_id):
    return backend(db, table).append(make_receipt(signer, rollback_id), signer=signer)


def rows(db, table):
    return sql(db, "postgres", "SELECT seq, prev, entry_sha256, rollback_id FROM %s ORDER BY seq" % table)


# --- appends from many processes ---------------------------------------------------------------------------------


def _appender(args):
    db, table, pem, rollback_id, barrier = args
    barrier.wait(60)
    signer = R.load_signer(pem)
    return append(db, table, signer, rollback_id)["ledger_seq"]


def test_twenty_processes_appending_at_once_leave_one_valid_chain(ledger_db, table):
    pem = CryptoSigner.generate_ed25519().private_bytes
    signer = R.load_signer(pem)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(20)
        with ctx.Pool(20) as pool:
            seqs = pool.map(_appender, [(ledger_db, table, pem, "rollback-conc-%02d" % i, barrier) for i in range(20)])
    assert sorted(seqs) == list(range(1, 21))
    found = rows(ledger_db, table)
    assert [r[0] for r in found] == list(range(1, 21))
    assert [r[1] for r in found] == [R.GENESIS] + [r[2] for r in found[:-1]]
    assert len({r[3] for r in found}) == 20
    result = backend(ledger_db, table).verify([signer.public_key])
    assert result["valid"] is True, result["message"]
    assert result["entries"] == 20 and result["signatures_checked"] is True
    assert sql(ledger_db, "postgres", "SELECT count(*), max(seq) FROM %s_head" % table)[0] == (20, 20)


# --- a killed appender -----------------------------------------------------------------------------------------------

KILLED_CHILD = r"""
import json, sys
sys.path.insert(0, %(collections)r)
sys.path.insert(0, %(root)r)
from tests.integration.test_ledger_postgres import append, _ledger_pg
from ansible_collections.governed.rollback.plugins.module_utils import _receipt as R
db, table, pem = json.loads(sys.stdin.read())
append(db, table, R.load_signer(pem.encode()), "rollback-killed-01")
print("appended")
"""


def test_an_appender_killed_mid_append_leaves_no_gap_and_no_torn_entry(ledger_db, table, signer, signer_pem):
    for i in range(3):
        append(ledger_db, table, signer, "rollback-before-%d" % i)
    pem = signer_pem
    holder = connect(ledger_db, "owner")
    holder.autocommit = False
    child = None
    try:
        # Hold the head table: the child inserts its entry row, then waits for the head row's lock (mid-append).
        holder.cursor().execute("LOCK TABLE %s_head IN EXCLUSIVE MODE" % table)
        code = KILLED_CHILD % {"collections": os.path.join(ROOT, "build", "collections"), "root": ROOT}
        child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, cwd=ROOT)
        child.stdin.write(json.dumps([ledger_db, table, pem.decode()]).encode())
        child.stdin.close()
        deadline = time.time() + 60
        while True:
            waiting = sql(ledger_db, "postgres",
                          "SELECT a.pid, (SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                          "WHERE l.pid = a.pid AND c.relname = %s AND l.mode = 'RowExclusiveLock' AND l.granted) "
                          "FROM pg_stat_activity a WHERE a.application_name = %s AND a.wait_event_type = 'Lock'",
                          (table, _ledger_pg.APPLICATION))
            if waiting and waiting[0][1] == 1:
                break  # the entry row is inserted (uncommitted) and the head insert waits
            assert child.poll() is None, child.stderr.read().decode()
            assert time.time() < deadline, "the child never reached the head insert"
            time.sleep(0.1)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        holder.rollback()
        holder.close()
        if child is not None and child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    # The server notices the dead client and rolls its transaction back.
    deadline = time.time() + 30
    while sql(ledger_db, "postgres", "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                                     "AND state <> 'idle'", (_ledger_pg.APPLICATION,))[0][0]:
        assert time.time() < deadline
        time.sleep(0.1)
    assert [r[0] for r in rows(ledger_db, table)] == [1, 2, 3]
    assert sql(ledger_db, "postgres", "SELECT max(seq) FROM %s_head" % table)[0][0] == 3
    after = append(ledger_db, table, signer, "rollback-after-kill")
    assert after["ledger_seq"] == 4
    result = backend(ledger_db, table).verify([signer.public_key])
    assert result["valid"] is True and result["entries"] == 4, result["message"]


# --- the writer role -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("statement", [
    "UPDATE {t} SET recorded_at = '2020-01-01T00:00:00Z' WHERE seq = 1",
    "DELETE FROM {t} WHERE seq = 2",
    "TRUNCATE {t}",
    "UPDATE {t}_head SET checkpoint = '{{}}' WHERE seq = 2",
    "DELETE FROM {t}_head WHERE seq = 2",
    "TRUNCATE {t}_head",
])
def test_the_insert_and_select_role_cannot_rewrite_history(ledger_db, table, signer, statement):
    for i in range(2):
        append(ledger_db, table, signer, "rollback-role-%d" % i)
    before = rows(ledger_db, table)
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        sql(ledger_db, "writer", statement.format(t=table))
    assert rows(ledger_db, table) == before
    # Even the owner meets the append-only trigger.
    with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="append-only"):
        sql(ledger_db, "owner", statement.format(t=table))
    assert rows(ledger_db, table) == before
    assert backend(ledger_db, table).verify([signer.public_key])["valid"] is True


def test_two_entries_never_share_a_seq(ledger_db, table, signer):
    append(ledger_db, table, signer, "rollback-unique-1")
    with pytest.raises(psycopg2.errors.UniqueViolation):
        sql(ledger_db, "writer", "INSERT INTO %s SELECT seq, repeat('f', 64), 'rollback-other', recorded_at, "
                                 "receipt_sha256, receipt, signatures, repeat('e', 64) FROM %s" % (table, table))
    assert len(rows(ledger_db, table)) == 1


# --- a superuser's tampering -----------------------------------------------------------------------------------------


def superuser_tamper(db, statement):
    conn = connect(db, "postgres")
    try:
        with conn.cursor() as cur:
            # A superuser can switch the triggers off; the chain still tells.
            cur.execute("SET session_replication_role = replica")
            cur.execute(statement)
    finally:
        conn.close()


def test_verify_catches_a_row_changed_by_a_superuser_and_refuses_to_append(ledger_db, table, signer):
    for i in range(4):
        append(ledger_db, table, signer, "rollback-tamper-%d" % i)
    superuser_tamper(ledger_db, "UPDATE %s SET receipt = jsonb_set(receipt, '{outcome}', '\"failed\"') WHERE seq = 2"
                     % table)
    result = backend(ledger_db, table).verify([signer.public_key])
    assert result["valid"] is False
    assert result["first_bad_entry"] == 2 and result["bad_rollback_id"] == "rollback-tamper-1"
    assert "entry 2" in result["message"]
    # Recomputing the row's own digests does not help: the chain and the signature still break.
    superuser_tamper(ledger_db, "UPDATE %s SET receipt_sha256 = repeat('d', 64) WHERE seq = 2" % table)
    assert backend(ledger_db, table).verify([signer.public_key])["first_bad_entry"] == 2


def test_verify_catches_a_row_deleted_by_a_superuser(ledger_db, table, signer):
    for i in range(4):
        append(ledger_db, table, signer, "rollback-deleted-%d" % i)
    superuser_tamper(ledger_db, "DELETE FROM %s WHERE seq = 2" % table)
    result = backend(ledger_db, table).verify([signer.public_key])
    assert result["valid"] is False and result["first_bad_entry"] == 2
    assert "entry 2 is missing" in result["message"]
    with pytest.raises(R.LedgerError):  # the O(1) tail check does not see it; a full check before appending does
        backend(ledger_db, table).append(make_receipt(signer, "rollback-deleted-9"), signer=signer, verify="full")
    assert len(rows(ledger_db, table)) == 3


def test_verify_catches_the_tail_deleted_with_its_head_through_a_witness(ledger_db, table, signer):
    results = [append(ledger_db, table, signer, "rollback-tail-%d" % i) for i in range(3)]
    superuser_tamper(ledger_db, "DELETE FROM %s WHERE seq = 3; DELETE FROM %s_head WHERE seq = 3" % (table, table))
    assert backend(ledger_db, table).verify([signer.public_key])["valid"] is True  # consistent, but shorter
    witness = {"seq": 3, "sha256": results[2]["receipt_sha256"], "name": "AWX job 42"}
    result = backend(ledger_db, table).verify([signer.public_key], witnesses=[witness])
    assert result["valid"] is False and "lacks entry 3" in result["message"] and "AWX job 42" in result["message"]


def test_a_missing_table_is_a_clear_error(ledger_db, signer):
    with pytest.raises(R.LedgerError, match="does not exist .*ledger_create"):
        backend(ledger_db, "t_never_created").append(make_receipt(signer, "rollback-none"), signer=signer)


# --- the module, through Ansible ----------------------------------------------------------------------------------------


def module_receipt_args(ledger, rollback_id, **extra):
    args = {"ledger": ledger, "rollback_id": rollback_id, "outcome": "succeeded",
            "approval": {"decision": evaluate("database", "oncall", ["dba", "eng-lead"], ROSTER, now=NOW)},
            "incident_id": "INC-12345", "environment": "sandbox", "reason": "module on the postgres ledger",
            "component": "database", "from_version": "v0.1.2", "to_version": "v0.1.1",
            "current_ref": "sha256:" + "a" * 64, "rollback_target_ref": "b" * 40,
            "evidence": {"archive_path": "/tmp/x.tar.gz", "archive_sha256": "c" * 64},
            "signing_key_path": pb.SIGNING_KEY}
    args.update(extra)
    return args


def test_the_module_records_and_verifies_with_the_password_from_the_environment_only(ledger_db, table, tmp_path):
    url = "postgresql://%s@%s:%d/%s?table=%s" % (ledger_db["writer"], ledger_db["host"], ledger_db["port"],
                                                 ledger_db["db"], table)
    env = {"GOVERNED_ROLLBACK_LEDGER_PGPASSWORD": ledger_db["writer_password"]}
    outputs = []

    failed, planned, out = pb.run_module_with_output(tmp_path / "check", RECEIPT,
                                                     module_receipt_args(url, "rollback-mod-1"), env, check=True,
                                                     diff=True)
    outputs.append(out)
    assert not failed, planned.get("msg")
    assert planned["changed"] is True and planned["ledger_seq"] == 1 and "diff" in planned
    assert rows(ledger_db, table) == []

    failed, first, out = pb.run_module_with_output(tmp_path / "first", RECEIPT,
                                                   module_receipt_args(url, "rollback-mod-1"), env)
    outputs.append(out)
    assert not failed, first.get("msg")
    assert first["changed"] is True and first["ledger_seq"] == 1 and first["ledger_backend"] == "postgresql"
    assert first["ledger"] == url and first["envelope"] is None
    assert first["stats"]["rollback-mod-1"]["ledger_seq"] == 1

    failed, again, out = pb.run_module_with_output(tmp_path / "again", RECEIPT,
                                                   module_receipt_args(url, "rollback-mod-1"), env)
    outputs.append(out)
    assert not failed and again["changed"] is False and again["entry_sha256"] == first["entry_sha256"]
    failed, other, out = pb.run_module_with_output(tmp_path / "other", RECEIPT,
                                                   module_receipt_args(url, "rollback-mod-1", reason="changed"), env)
    outputs.append(out)
    assert failed and "already recorded at entry 1 with different content (reason)" in other["msg"]
    assert len(rows(ledger_db, table)) == 1

    failed, verified, out = pb.run_module_with_output(
        tmp_path / "verify", RECEIPT, {"state": "verify", "ledger": url, "public_key_path": pb.SIGNING_PUBLIC_KEY}, env)
    outputs.append(out)
    assert not failed and verified["valid"] is True and verified["entries"] == 1
    assert verified["signatures_checked"] is True and verified["checkpoint"]["size"] == 1

    # The connection options instead of a URL, and a password written into a URL: masked in every output.
    by_options = {"state": "verify", "ledger_backend": "postgresql", "ledger_table": table,
                  "login_host": ledger_db["host"], "login_port": ledger_db["port"], "login_user": ledger_db["writer"],
                  "db": ledger_db["db"], "public_key_path": pb.SIGNING_PUBLIC_KEY}
    failed, verified, out = pb.run_module_with_output(tmp_path / "options", RECEIPT, by_options, env)
    outputs.append(out)
    assert not failed and verified["entries"] == 1
    with_password = url.replace("@", ":%s@" % ledger_db["writer_password"], 1)
    inline = tmp_path.parent / (tmp_path.name + "-inline")
    failed, verified, out = pb.run_module_with_output(
        inline, RECEIPT, {"state": "verify", "ledger": with_password, "public_key_path": pb.SIGNING_PUBLIC_KEY})
    outputs.append(out)
    assert not failed and verified["entries"] == 1 and ":********@" in verified["ledger"]
    assert ledger_db["writer_password"] not in json.dumps(verified)
    # Only ansible-runner's record of the command it was given (the URL as the caller wrote it) holds it.
    assert sorted(set(os.path.basename(w) for w, _n in pb.files_containing(str(inline), [ledger_db["writer_password"]]))) \
        == ["command"]

    # A wrong password fails naming the target, never the password.
    failed, refused, out = pb.run_module_with_output(
        tmp_path / "wrong", RECEIPT, module_receipt_args(url, "rollback-mod-2"),
        {"GOVERNED_ROLLBACK_LEDGER_PGPASSWORD": "wrong-" + ledger_db["writer_password"]})
    outputs.append(out)
    assert failed and "cannot connect to PostgreSQL" in refused["msg"] and "password authentication" in refused["msg"]
    for text in outputs + [json.dumps(planned), json.dumps(first), json.dumps(refused)]:
        assert ledger_db["writer_password"] not in text
    assert pb.leaked(str(tmp_path), [ledger_db["writer_password"]]) == []
