"""pg_data_loss against the sandbox's real PostgreSQL, run through Ansible: two scratch databases (a "kept" one and a
"restored" one) with the key types and shapes a restore meets, compared by primary key through server-side cursors.

The module connects as ``aureus`` with the password from the environment (AWX's PostgreSQL credential); every output
is searched for it. "Changes nothing" is checked with the fingerprint of both databases taken outside the module.
"""

import json
import os
import tempfile

import pytest

from tests.integration import _playbook as pb
from tests.integration.test_pg_schema_downgrade import connect, fingerprint, opened
from tests.integration.test_pg_schema_downgrade import pg, scratch  # noqa: F401  pylint: disable=unused-import  # fixtures

MODULE = "governed.rollback.pg_data_loss"

SCHEMA = """
CREATE TABLE datasets (id bigserial PRIMARY KEY, name text NOT NULL);
CREATE TABLE regions (code text PRIMARY KEY, label text);
CREATE TABLE shards (tenant int, region varchar(20), "Slot" int, PRIMARY KEY (tenant, region, "Slot"));
CREATE TABLE tokens (id uuid PRIMARY KEY);
CREATE TABLE audit_log (at timestamptz NOT NULL DEFAULT now(), line text);
CREATE TABLE empty_one (id int PRIMARY KEY);
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE moods (m mood PRIMARY KEY);
"""

# the rows both databases have (the backup's state)
COMMON = """
INSERT INTO datasets (id, name) SELECT g, 'ds' || g FROM generate_series(1, 2500) g;
INSERT INTO regions VALUES ('Zeta', 'z'), ('alpha', 'a'), ('beta', 'b'), ('\u00e9cole', 'e'), ('_x', 'x');
INSERT INTO shards SELECT t, r, s FROM generate_series(1, 3) t, (VALUES ('eu'), ('US'), ('ap')) v(r),
    generate_series(1, 4) s;
INSERT INTO tokens VALUES ('00000000-0000-0000-0000-000000000001'), ('ffffffff-0000-0000-0000-000000000000');
INSERT INTO audit_log (line) SELECT 'line ' || g FROM generate_series(1, 5) g;
INSERT INTO moods VALUES ('happy'), ('sad');
"""

# written to the kept database after the backup: what the restore loses
KEPT_ONLY = """
INSERT INTO datasets (id, name) VALUES (2501, 'late'), (2502, 'later'), (1000000, 'far');
DELETE FROM datasets WHERE id = 9; INSERT INTO datasets VALUES (9, 'nine again');
INSERT INTO regions VALUES ('Alpha', 'A'), ('\u00e9t\u00e9', 'summer');
INSERT INTO shards VALUES (2, 'US', 5), (2, 'Us', 1);
INSERT INTO tokens VALUES ('7fffffff-0000-0000-0000-000000000000');
INSERT INTO audit_log (line) VALUES ('late 1'), ('late 2');
INSERT INTO moods VALUES ('ok');
CREATE TABLE kept_only (id int PRIMARY KEY); INSERT INTO kept_only VALUES (1), (2), (3);
"""

# rows only the restored database has (deleted from the kept one after the backup)
RESTORED_DIFF = """
DELETE FROM datasets WHERE id IN (17, 1800);
"""


def build(pg, db, *scripts):
    with opened(connect(pg, db)) as conn:
        cur = conn.cursor()
        for script in scripts:
            cur.execute(script)


@pytest.fixture
def pair(pg, scratch):  # noqa: F811  pytest fixtures
    kept, restored = scratch(), scratch()
    build(pg, restored, SCHEMA, COMMON)
    build(pg, kept, SCHEMA, COMMON, KEPT_ONLY, RESTORED_DIFF)
    return kept, restored


def run(pg, check=False, **args):
    envvars = {"PGHOST": pg["host"], "PGPORT": str(pg["port"]), "PGUSER": pg["user"], "PGPASSWORD": pg["password"]}
    with tempfile.TemporaryDirectory() as tmp:
        failed, result, stdout = pb.run_module_with_output(tmp, MODULE, args, envvars, check)
        leaks = [where for where, _needle in pb.files_containing(os.path.join(tmp, "artifacts"), [pg["password"]])
                 if os.path.basename(where) != "command"]
    assert pg["password"] not in stdout and pg["password"] not in json.dumps(result)
    assert not leaks, leaks
    return failed, result


def by_table(result):
    return dict((e["table"], e) for e in result["comparison"])


def test_streams_both_databases_and_names_the_rows_only_in_the_kept_one(pg, pair):
    kept, restored = pair
    before = (fingerprint(pg, kept), fingerprint(pg, restored))
    # itersize 7: many round trips per cursor, so the merge crosses batch boundaries
    failed, result = run(pg, db=restored, kept_db=kept, itersize=7, sample_keys=20)
    assert not failed, result.get("msg")
    assert result["changed"] is False
    assert (fingerprint(pg, kept), fingerprint(pg, restored)) == before

    tables = by_table(result)
    # integer keys: in key order (numeric, not text order), the re-inserted id 9 is not a loss
    assert tables["public.datasets"]["keys"] == ["(2501)", "(2502)", "(1000000)"]
    assert tables["public.datasets"]["rows_only_in_kept"] == 3
    assert tables["public.datasets"]["keys_only_in_restored"] == ["(17)", "(1800)"]
    assert (tables["public.datasets"]["rows_kept"], tables["public.datasets"]["rows_restored"]) == (2501, 2500)
    # text keys that differ only by case and non-ASCII ones: COLLATE "C" on both sides, so nothing is miscounted
    assert tables["public.regions"]["keys"] == ["(Alpha)", "(\u00e9t\u00e9)"]
    assert tables["public.regions"]["rows_only_in_restored"] == 0
    # a composite key with a quoted column name
    assert tables["public.shards"]["primary_key"] == 'tenant, region, "Slot"'
    assert tables["public.shards"]["keys"] == ["(2,US,5)", "(2,Us,1)"]
    assert tables["public.tokens"]["keys"] == ["(7fffffff-0000-0000-0000-000000000000)"]
    # an enum key is compared as its text, still exactly
    assert tables["public.moods"]["keys"] == ["(ok)"] and tables["public.moods"]["rows_only_in_restored"] == 0
    # a table without a primary key: by row count, reported, not skipped
    assert tables["public.audit_log"]["primary_key"] is None
    assert tables["public.audit_log"]["rows_only_in_kept"] == 2
    assert "public.audit_log" in result["tables_without_primary_key"]
    # a table the restored database does not have at all: every row lost
    assert tables["public.kept_only"]["rows_only_in_kept"] == 3
    assert tables["public.empty_one"]["rows_only_in_kept"] == 0

    assert result["rows_lost"] == 3 + 2 + 2 + 1 + 1 + 2 + 3
    assert result["rows_only_in_restored"] == 2
    assert [t["table"] for t in result["tables"]] == ["public.audit_log", "public.datasets", "public.kept_only",
                                                      "public.moods", "public.regions", "public.shards",
                                                      "public.tokens"]
    assert set(result["tables"][0]) == {"table", "primary_key", "rows_only_in_kept", "keys", "keys_truncated"}


def test_sample_is_bounded_and_check_mode_runs_the_same_read(pg, pair):
    kept, restored = pair
    build(pg, kept, "INSERT INTO datasets (id, name) SELECT g, 'n' FROM generate_series(5000, 5999) g")
    failed, result = run(pg, check=True, db=restored, kept_db=kept, sample_keys=2)
    assert not failed, result.get("msg")
    datasets = by_table(result)["public.datasets"]
    assert datasets["rows_only_in_kept"] == 1003
    assert datasets["keys"] == ["(2501)", "(2502)"] and datasets["keys_truncated"] is True


def test_identical_databases_lose_nothing(pg, scratch):  # noqa: F811
    kept, restored = scratch(), scratch()
    for db in (kept, restored):
        build(pg, db, SCHEMA, COMMON)
    failed, result = run(pg, db=restored, kept_db=kept)
    assert not failed, result.get("msg")
    assert result["tables"] == [] and result["rows_lost"] == 0 and result["rows_only_in_restored"] == 0
    assert result["tables_without_primary_key"] == ["public.audit_log"]


@pytest.mark.parametrize("kept_db, message", [
    ("gr_test_does_not_exist", "cannot connect to PostgreSQL"),
    (None, "are the same database"),
])
def test_bad_kept_database_gives_a_clear_error(pg, scratch, kept_db, message):  # noqa: F811
    restored = scratch()
    failed, result = run(pg, db=restored, kept_db=kept_db or restored)
    assert failed and message in result["msg"]
