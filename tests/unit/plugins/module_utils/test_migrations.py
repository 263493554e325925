"""Migration tool detection, applied state, file discovery, downgrade plans and the SQL tokenizer, on plain data."""

import zlib

import pytest

from ansible_collections.governed.rollback.plugins.module_utils import _migrations as mig
from ansible_collections.governed.rollback.plugins.module_utils._common import Refused, RollbackError

SANDBOX_FILES = ["v0.1.0-initial-schema/up.sql", "v0.1.0-initial-schema/down.sql",
                 "v0.1.1-add-dataset-owner/up.sql", "v0.1.1-add-dataset-owner/down.sql",
                 "v0.1.2-add-pii-tracking-table/up.sql", "v0.1.2-add-pii-tracking-table/down.sql"]
SANDBOX_VERSIONS = ["v0.1.0-initial-schema", "v0.1.1-add-dataset-owner", "v0.1.2-add-pii-tracking-table"]
GOLANG_FILES = ["1085649617_create_users_table.up.sql", "1085649617_create_users_table.down.sql",
                "1185749658_add_city_to_users.up.sql", "1185749658_add_city_to_users.down.sql",
                "1285849751_add_index_on_user_emails.up.sql", "1285849751_add_index_on_user_emails.down.sql",
                "1585849751_just_a_comment.up.sql", "README.md"]


# --- detection -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tables, name, style", [
    ({"schema_migrations": ["version", "dirty"]}, "native", "golang-migrate"),
    ({"schema_migrations": ["version", "applied_at", "checksum"]}, "native", "ledger"),
    ({"schema_migrations": ["version"]}, "native", "ledger"),
    ({"alembic_version": ["version_num"]}, "alembic", ""),
    ({"flyway_schema_history": ["installed_rank", "version", "description", "type", "script", "checksum",
                                "installed_by", "installed_on", "execution_time", "success"]}, "flyway", ""),
])
def test_detect_tool(tables, name, style):
    tool = mig.detect_tool(tables)
    assert (tool.name, tool.style) == (name, style)


def test_detect_tool_refusals():
    with pytest.raises(Refused) as info:
        mig.detect_tool({})
    assert info.value.code == "no_migration_table"
    with pytest.raises(Refused) as info:
        mig.detect_tool({"schema_migrations": ["version", "dirty"], "alembic_version": ["version_num"]})
    assert info.value.code == "ambiguous_tool" and "schema_migrations" in info.value.msg
    assert mig.detect_tool({"schema_migrations": ["version", "dirty"], "alembic_version": ["version_num"]},
                           "alembic").name == "alembic"
    with pytest.raises(Refused) as info:
        mig.detect_tool({"django_migrations": ["id", "app", "name"]})
    assert info.value.code == "unsupported_tool" and "Django" in info.value.msg
    with pytest.raises(Refused) as info:
        mig.detect_tool({"schema_migrations": ["id", "name"]})
    assert info.value.code == "unsupported_table"
    with pytest.raises(Refused) as info:
        mig.detect_tool({"flyway_schema_history": ["installed_rank", "version"]})
    assert "success" in info.value.msg
    with pytest.raises(Refused) as info:
        mig.detect_tool({"alembic_version": ["version_num"]}, "flyway")
    assert info.value.code == "no_migration_table"


def test_foreign_locks_named():
    mig.check_foreign_locks({"databasechangeloglock": [{"id": 1, "locked": False}]})
    with pytest.raises(Refused) as info:
        mig.check_foreign_locks({"databasechangeloglock": [{"id": 1, "locked": True, "lockedby": "host-7",
                                                            "lockgranted": "2024-01-15"}]})
    assert info.value.code == "locked" and "host-7" in info.value.msg and "id=1" in info.value.msg
    with pytest.raises(Refused):
        mig.check_foreign_locks({"yoyo_lock": [{"pid": 42, "ctime": "now"}]})


# --- applied state -------------------------------------------------------------------------------------------------


def test_golang_migrate_state():
    tool = mig.Tool("native", "schema_migrations", "golang-migrate")
    known = ["1085649617", "1185749658", "1285849751"]
    assert mig.native_applied(tool, [{"version": 1185749658, "dirty": False}], known).versions == known[:2]
    assert mig.native_applied(tool, [], known).current is None
    with pytest.raises(Refused) as info:
        mig.native_applied(tool, [{"version": 1285849751, "dirty": True}], known)
    assert info.value.code == "dirty" and "version=1285849751" in info.value.msg
    assert info.value.details["dirty_row"] == {"version": 1285849751, "dirty": True}
    with pytest.raises(Refused) as info:
        mig.native_applied(tool, [{"version": 7, "dirty": False}], known)
    assert info.value.code == "unknown_version"


def test_ledger_state_orders_naturally():
    tool = mig.Tool("native", "schema_migrations", "ledger")
    rows = [{"version": "v0.1.10-x"}, {"version": "v0.1.2-add-pii-tracking-table"}, {"version": "v0.1.0-initial-schema"}]
    applied = mig.native_applied(tool, rows, SANDBOX_VERSIONS)
    assert applied.versions == ["v0.1.0-initial-schema", "v0.1.2-add-pii-tracking-table", "v0.1.10-x"]
    rows = [{"version": "001"}, {"version": "002"}]
    assert mig.native_applied(tool, rows, ["1", "2", "3"]).versions == ["1", "2"]


def test_flyway_state():
    rows = [
        {"installed_rank": 1, "version": "1", "type": "SQL", "script": "V1__a.sql", "success": True},
        {"installed_rank": 2, "version": "1.1", "type": "SQL", "script": "V1_1__b.sql", "success": True},
        {"installed_rank": 3, "version": "2", "type": "SQL", "script": "V2__c.sql", "success": True},
        {"installed_rank": 4, "version": None, "type": "SQL", "script": "R__views.sql", "success": True},
        {"installed_rank": 5, "version": "2", "type": "UNDO_SQL", "script": "U2__c.sql", "success": True},
        {"installed_rank": 6, "version": "1.10", "type": "SQL", "script": "V1_10__d.sql", "success": True},
    ]
    assert mig.flyway_applied(rows).versions == ["1", "1.1", "1.10"]
    rows.append({"installed_rank": 7, "version": "3", "type": "SQL", "script": "V3__e.sql", "success": False})
    with pytest.raises(Refused) as info:
        mig.flyway_applied(rows)
    assert info.value.code == "failed" and "installed_rank=7" in info.value.msg and "V3__e.sql" in info.value.msg


def test_alembic_heads():
    assert mig.alembic_heads([{"version_num": "ae1027a6acf"}]) == ["ae1027a6acf"]
    assert mig.alembic_heads([]) == []
    with pytest.raises(Refused) as info:
        mig.alembic_heads([{"version_num": "a"}, {"version_num": "b"}])
    assert info.value.code == "branched"


# --- files ---------------------------------------------------------------------------------------------------------


def test_discover_sandbox_layout():
    found = mig.discover_native(SANDBOX_FILES)
    assert [m.version for m in found] == SANDBOX_VERSIONS
    assert found[1].down == "v0.1.1-add-dataset-owner/down.sql"


def test_discover_golang_migrate_layout():
    found = mig.discover_native(GOLANG_FILES)
    assert [m.version for m in found] == ["1085649617", "1185749658", "1285849751", "1585849751"]
    assert found[0].name == "create_users_table" and found[0].up.endswith(".up.sql")
    assert found[-1].down is None
    with pytest.raises(RollbackError):
        mig.discover_native(["1_a.up.sql", "001_b.up.sql"])


def test_discover_flyway():
    found = mig.discover_flyway(["V1__create.sql", "U1__create.sql", "V1_10__later.sql", "V1_2__x.sql", "R__v.sql",
                                 "sub/U1_2__x.sql"])
    assert [(m.version, bool(m.up), bool(m.down)) for m in found] == [("1", True, True), ("1.2", True, True),
                                                                      ("1.10", True, False)]
    assert found[0].name == "create"


def test_flyway_checksum_matches_crc32_of_lines():
    text = "\ufeffCREATE TABLE a (id int);\r\nINSERT INTO a VALUES (1);\n"
    crc = zlib.crc32(b"INSERT INTO a VALUES (1);", zlib.crc32(b"CREATE TABLE a (id int);"))
    expected = crc - (1 << 32) if crc >= (1 << 31) else crc
    assert mig.flyway_checksum(text) == expected
    assert -(1 << 31) <= mig.flyway_checksum("x" * 100) < (1 << 31)


# --- plans ---------------------------------------------------------------------------------------------------------


def test_plan_default_is_one_step():
    plan = mig.plan_downgrade(SANDBOX_VERSIONS)
    assert plan.revert == ["v0.1.2-add-pii-tracking-table"]
    assert (plan.from_version, plan.to_version) == ("v0.1.2-add-pii-tracking-table", "v0.1.1-add-dataset-owner")
    assert plan.skipped_reason is None


def test_plan_to_target_and_steps():
    plan = mig.plan_downgrade(SANDBOX_VERSIONS, target_version="v0.1.0-initial-schema")
    assert plan.revert == ["v0.1.2-add-pii-tracking-table", "v0.1.1-add-dataset-owner"]
    assert mig.plan_downgrade(["1", "2", "3"], steps=3).to_version is None
    assert mig.plan_downgrade(["1", "2", "3"], target_version="base").revert == ["3", "2", "1"]
    assert mig.plan_downgrade(["1", "2", "3"], target_version="0001").to_version == "1"


def test_plan_already_at_target():
    plan = mig.plan_downgrade(SANDBOX_VERSIONS, target_version="v0.1.2-add-pii-tracking-table")
    assert plan.revert == [] and "already at version v0.1.2" in plan.skipped_reason
    assert mig.plan_downgrade([], target_version="base").skipped_reason.endswith("base (no migration applied)")
    assert mig.plan_downgrade(["1"], steps=0).revert == []


def test_plan_refusals():
    with pytest.raises(Refused) as info:
        mig.plan_downgrade(["1", "2"], target_version="9")
    assert info.value.code == "unknown_version" and "unknown target version 9" in info.value.msg
    with pytest.raises(Refused) as info:
        mig.plan_downgrade(["1", "2"], target_version="3", known=["1", "2", "3"])
    assert info.value.code == "not_a_downgrade"
    with pytest.raises(Refused) as info:
        mig.plan_downgrade(["1", "2"], steps=3)
    assert info.value.code == "too_many_steps"
    with pytest.raises(RollbackError):
        mig.plan_downgrade(["1"], target_version="1", steps=1)


def test_require_down_files():
    migrations = mig.discover_native(GOLANG_FILES)
    plan = mig.plan_downgrade(["1085649617", "1185749658", "1285849751"], steps=2)
    assert [m.version for m in mig.require_down_files(plan, migrations, "native")] == ["1285849751", "1185749658"]
    plan = mig.plan_downgrade(["1085649617", "1185749658", "1285849751", "1585849751"], steps=1)
    with pytest.raises(Refused) as info:
        mig.require_down_files(plan, migrations, "native")
    assert info.value.code == "missing_down" and "1585849751_just_a_comment.down.sql" in info.value.msg
    plan = mig.plan_downgrade(["77"], steps=1)
    with pytest.raises(Refused):
        mig.require_down_files(plan, migrations, "native")
    flyway = mig.discover_flyway(["V1__a.sql", "V2__b_c.sql"])
    with pytest.raises(Refused) as info:
        mig.require_down_files(mig.plan_downgrade(["1", "2"]), flyway, "flyway")
    assert "U2__b_c.sql" in info.value.msg


# --- the tokenizer -------------------------------------------------------------------------------------------------


def words(sql):
    return [s.words[:4] for s in mig.split_statements(sql)]


def test_split_skips_comments_strings_and_dollar_quotes():
    sql = """
    -- DROP TABLE x; VACUUM;
    /* a /* nested; */ comment; */
    INSERT INTO t VALUES ('a;b', 'it''s; fine', E'back\\'slash;');
    CREATE FUNCTION f() RETURNS int AS $body$ BEGIN; VACUUM; RETURN 1; END $body$ LANGUAGE plpgsql;
    DO $$ BEGIN PERFORM 1; END $$;
    SELECT "weird;""name" FROM t;
    """
    statements = mig.split_statements(sql)
    assert [s.words[0] for s in statements] == ["INSERT", "CREATE", "DO", "SELECT"]
    assert statements[0].line == 4
    assert "VACUUM" not in statements[1].words
    assert all(mig.non_transactional_reason(s) is None for s in statements)


def test_split_keeps_begin_atomic_bodies():
    sql = "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN a > 0 THEN 1 ELSE 0 END; " \
          "SELECT 2; END; DROP TABLE t;"
    statements = mig.split_statements(sql)
    assert [s.words[0] for s in statements] == ["CREATE", "DROP"]


@pytest.mark.parametrize("sql, flagged", [
    ("CREATE INDEX CONCURRENTLY i ON t (a)", True),
    ("create unique index concurrently if not exists i on t (a)", True),
    ("DROP INDEX CONCURRENTLY IF EXISTS i", True),
    ("DROP INDEX i", False),
    ("CREATE INDEX i ON t (concurrently)", False),
    ("REINDEX TABLE CONCURRENTLY t", True),
    ("REINDEX (VERBOSE) INDEX CONCURRENTLY i", True),
    ("VACUUM (ANALYZE) t", True),
    ("ALTER SYSTEM SET work_mem = '64MB'", True),
    ("CREATE DATABASE x", True),
    ("DROP DATABASE x", True),
    ("CREATE TABLESPACE ts LOCATION '/x'", True),
    ("ALTER TABLE p DETACH PARTITION c CONCURRENTLY", True),
    ("ALTER TABLE p DETACH PARTITION c", False),
    ("ALTER TYPE mood ADD VALUE 'meh'", False),
    ("COMMENT ON TABLE t IS 'VACUUM; CREATE INDEX CONCURRENTLY'", False),
    ("SELECT 'DROP INDEX CONCURRENTLY x'", False),
])
def test_non_transactional(sql, flagged):
    statement = mig.split_statements(sql)[0]
    assert bool(mig.non_transactional_reason(statement, 150000)) is flagged


def test_alter_type_add_value_before_12():
    statement = mig.split_statements("ALTER TYPE mood ADD VALUE IF NOT EXISTS 'meh'")[0]
    assert "before PostgreSQL 12" in mig.non_transactional_reason(statement, 110000)
    assert mig.non_transactional_reason(statement, 120000) is None


def test_analyse_script_strips_wrapping_transaction():
    analysis = mig.analyse_script("BEGIN;\nDROP TABLE a;\nDROP INDEX CONCURRENTLY b;\nCOMMIT;\n")
    assert [s.words[0] for s in analysis.statements] == ["DROP", "DROP"]
    assert analysis.stripped == ["BEGIN", "COMMIT"]
    assert analysis.non_transactional == [(1, "DROP INDEX CONCURRENTLY cannot run inside a transaction block")]
    with pytest.raises(Refused) as info:
        mig.analyse_script("DROP TABLE a;\nCOMMIT;\nDROP TABLE b;", where="3/down.sql")
    assert info.value.code == "transaction_control" and "3/down.sql line 2" in info.value.msg
    assert mig.analyse_script("-- nothing but a comment\n").statements == []


# --- snapshots, losses, binding ------------------------------------------------------------------------------------


def test_schema_diff_and_digest():
    recorded = {"table public.a": "", "column public.a.x": "integer", "type public.mood": "enum (a, b)"}
    now = {"table public.a": "", "column public.a.x": "bigint", "type public.mood": "enum (a, b)", "table public.b": ""}
    diff = mig.schema_diff(recorded, now)
    assert [(d["object"], d["change"]) for d in diff] == [("column public.a.x", "changed"), ("table public.b", "added")]
    assert mig.schema_diff(now, now) == []
    assert mig.schema_digest(recorded) == mig.schema_digest(dict(reversed(list(recorded.items()))))
    assert mig.snapshot_text({"b": "2", "a": "1"}) == "a: 1\nb: 2\n"


def test_dropped_objects_by_oid():
    before = {"tables": {"10": "public.a", "11": "public.b"},
              "columns": {"10:1": ["public.a", "id"], "10:2": ["public.a", "owner"], "11:1": ["public.b", "id"]}}
    after = {"tables": {"10": "public.renamed"}, "columns": {"10:1": ["public.renamed", "id"]}}
    dropped = mig.dropped_objects(before, after)
    assert dropped["tables"] == [{"oid": "11", "table": "public.b"}]
    assert dropped["columns"] == [{"key": "10:2", "table": "public.a", "column": "owner"}]
    entries, lossy = mig.data_loss_report(dropped, {"public.b": 0}, {("public.a", "owner"): 5})
    assert lossy and [e["loss"] for e in entries] == [False, True]
    assert mig.describe_loss(entries) == "column public.a.owner (5 non-null values)"
    entries, lossy = mig.data_loss_report(dropped, {"public.b": 0}, {("public.a", "owner"): 0})
    assert not lossy


def test_lock_ids():
    # golang-migrate's id for database "aureus_metadata", schema public, table schema_migrations
    name = b"public\x00schema_migrations\x00aureus_metadata"
    assert mig.golang_migrate_lock_id("aureus_metadata") == (zlib.crc32(name) * 1486364155) % (1 << 32)
    key = mig.own_lock_id("aureus_metadata")
    assert -(1 << 63) <= key < (1 << 63) and key == mig.own_lock_id("aureus_metadata") != mig.own_lock_id("x")


def test_binding_and_receipt():
    expected = mig.binding("v0.1.2", "abc")
    assert mig.binding_mismatch(expected, mig.binding("v0.1.2", "abc")) == []
    assert mig.binding_mismatch(expected, mig.binding("v0.1.2", "def")) == ["schema_sha256"]
    assert mig.binding_mismatch({}, mig.binding("x", "y")) == []
    plan = mig.plan_downgrade(SANDBOX_VERSIONS)
    fields = mig.receipt_fields("database aureus_metadata", plan, "/b/x.dump", False, [])
    assert fields == {"component": "database aureus_metadata", "migration_reverted": "v0.1.2-add-pii-tracking-table",
                      "from_version": "v0.1.2-add-pii-tracking-table", "to_version": "v0.1.1-add-dataset-owner",
                      "backup_location": "/b/x.dump", "data_loss": "none"}
    assert mig.receipt_fields("db", plan, None, False, None)["data_loss"] == "unknown"
