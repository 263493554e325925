"""The pure parts of the ledger backends and object storage, with plain data: choosing a backend, PostgreSQL URLs
(passwords never shown), rows as ledger entries (the file ledger's checks over them), head object keys that sort the
newest first, and what the receipt records of an upload."""

import datetime

import pytest
from securesystemslib.signer import CryptoSigner

from ansible_collections.governed.rollback.plugins.module_utils import _ledger, _ledger_pg, _s3
from ansible_collections.governed.rollback.plugins.module_utils import _receipt as R
from ansible_collections.governed.rollback.plugins.module_utils._approval import evaluate

ROSTER = {"oncall": ["on_call_engineer"], "eng-lead": ["engineering_lead"], "dba": ["dba"]}
NOW = datetime.datetime(2024, 1, 15, 10, 30, 45, tzinfo=datetime.timezone.utc)


@pytest.fixture(scope="module")
def signer():
    return R.load_signer(CryptoSigner.generate_ed25519().private_bytes)


@pytest.fixture(scope="module")
def chain(signer):
    """Three signed entries as the PostgreSQL backend stores them (rows) and the newest signed head."""
    decision = evaluate("database", "oncall", ["dba", "eng-lead"], ROSTER, now=NOW)
    prev, rows = R.GENESIS, []
    for index in range(3):
        receipt = R.build_receipt(
            dict(rollback_id="rollback-row-%d" % index, outcome="succeeded", incident_id="INC-1",
                 environment="sandbox", reason="rows", component="database", from_version="a", to_version="b",
                 current_ref="sha256:" + "a" * 64, rollback_target_ref="b" * 40),
            approval={"decision": decision}, evidence={"archive": "/tmp/x", "archive_sha256": "c" * 64},
            keyid=signer.public_key.keyid, now=NOW)
        entry = R.make_entry(index + 1, prev, receipt, R._sign_receipt(receipt, signer), "2024-01-15T10:30:45Z")
        rows.append(tuple(entry[c] for c in _ledger_pg.COLUMNS))
        prev = entry["entry_sha256"]
    head = R.canonical(R.make_checkpoint(3, prev, "2024-01-15T10:30:45Z", signer))
    return rows, head


# --- choosing a backend ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ledger, backend, kind", [
    ("/srv/receipts/ledger.jsonl", None, "file"),
    ("postgresql://writer@db:5432/governed", None, "postgresql"),
    ("postgres://writer@db/governed", None, "postgresql"),
    (None, "postgresql", "postgresql"),
])
def test_the_backend_follows_the_options(ledger, backend, kind):
    assert _ledger.open_ledger(ledger, backend, {}).kind == kind


@pytest.mark.parametrize("ledger, backend, problem", [
    (None, None, "ledger is required with the file backend"),
    ("postgresql://writer@db/governed", "file", "ledger_backend=file but ledger is a postgresql:// URL"),
    ("/srv/ledger.jsonl", "postgresql", "takes ledger as a postgresql:// URL"),
    ("postgresql://writer@db/governed?password=x", None, "unknown parameter password"),
    ("postgresql://writer@db/governed?sslmode=disable", None, "unknown parameter sslmode .*PGSSLMODE"),
])
def test_contradicting_options_are_refused_naming_them(ledger, backend, problem):
    with pytest.raises(R.LedgerError, match=problem):
        _ledger.open_ledger(ledger, backend, {})


def test_a_url_password_is_parsed_but_never_shown():
    url = "postgresql://writer:s3cr%40t-pw@db.internal:6432/governed?table=fleet_ledger"
    params, table, password = _ledger_pg.parse_url(url)
    assert (params["login_host"], params["login_port"], params["login_user"], params["db"]) == (
        "db.internal", 6432, "writer", "governed")
    assert (table, password) == ("fleet_ledger", "s3cr@t-pw")
    backend = _ledger.open_ledger(url, None, {"login_host": "ignored", "login_password": "from-env"})
    assert backend.table == "fleet_ledger" and backend.params["login_host"] == "db.internal"
    for text in (backend.location(), backend.head_location(), backend.describe(), _ledger_pg.redact_url(url)):
        assert "s3cr" not in text
    assert _ledger_pg.redact_url(url) == "postgresql://writer:********@db.internal:6432/governed?table=fleet_ledger"
    assert _ledger_pg.redact_url("/srv/ledger.jsonl") == "/srv/ledger.jsonl"
    assert _ledger_pg.redact_url("postgresql://w@db/g?table=t&password=hunter22") == \
        "postgresql://w@db/g?table=t&password=********"
    with pytest.raises(R.LedgerError) as refused:
        _ledger_pg.parse_url("postgresql://w@db/g?password=hunter22")
    assert "hunter22" not in refused.value.msg
    assert _ledger_pg.url_secrets(url) == ["s3cr%40t-pw", "s3cr@t-pw"]
    assert _ledger_pg.url_secrets("postgresql://w@db/g?password=hunter22") == ["hunter22"]
    assert _ledger_pg.url_secrets("postgresql://w@db/g") == [] and _ledger_pg.url_secrets(None) == []


@pytest.mark.parametrize("table", ["Ledger", "ledger; DROP TABLE x", "1ledger", "a" * 48, ""])
def test_a_table_name_that_is_not_a_plain_identifier_is_refused(table):
    with pytest.raises(R.LedgerError, match="plain lower-case SQL name"):
        _ledger_pg.check_table(table)


def test_the_ddl_grants_the_writer_only_select_and_insert():
    sql = _ledger_pg.schema_sql("fleet_ledger", "ledger_writer")
    assert "GRANT SELECT, INSERT ON fleet_ledger, fleet_ledger_head TO ledger_writer;" in sql
    assert "REVOKE ALL ON fleet_ledger, fleet_ledger_head FROM PUBLIC;" in sql
    assert "seq            bigint PRIMARY KEY" in sql and "rollback_id    text   NOT NULL UNIQUE" in sql
    assert "BEFORE UPDATE OR DELETE ON fleet_ledger FOR EACH ROW" in sql
    assert "BEFORE TRUNCATE ON fleet_ledger_head" in sql
    assert "GRANT" not in _ledger_pg.schema_sql("fleet_ledger")


# --- rows are checked like the file ledger's lines ---------------------------------------------------------------------


def test_genuine_rows_verify_like_the_file_ledger(chain, signer):
    rows, head = chain
    result = _ledger_pg.verify_rows(rows, head, [signer.public_key])
    assert result["valid"] is True and result["entries"] == 3, result["message"]
    lines = b"".join(R.entry_line(_ledger_pg.row_entry(r)) for r in rows)
    assert R.verify_ledger_bytes(lines, head, [signer.public_key])["valid"] is True


def test_a_changed_row_is_named(chain, signer):
    rows, head = chain
    changed = list(rows)
    entry = _ledger_pg.row_entry(changed[1])
    entry["receipt"] = dict(entry["receipt"], outcome="failed")
    changed[1] = tuple(entry[c] for c in _ledger_pg.COLUMNS)
    result = _ledger_pg.verify_rows(changed, head, [signer.public_key])
    assert result["valid"] is False and result["first_bad_entry"] == 2
    assert result["bad_rollback_id"] == "rollback-row-1"


def test_a_deleted_row_is_a_missing_entry(chain, signer):
    rows, head = chain
    result = _ledger_pg.verify_rows([rows[0], rows[2]], head, [signer.public_key])
    assert result["valid"] is False and result["first_bad_entry"] == 2
    assert "entry 2 is missing: the next row has seq 3" in result["message"]


def test_a_cut_tail_disagrees_with_the_head(chain, signer):
    rows, head = chain
    result = _ledger_pg.verify_rows(rows[:2], head, [signer.public_key])
    assert result["valid"] is False and "ledger truncated" in result["message"]


def test_a_row_with_json_text_columns_reads_the_same(chain, signer):
    rows, head = chain
    as_text = [_ledger_pg.entry_row(_ledger_pg.row_entry(r)) for r in rows]
    assert isinstance(as_text[0][5], str)
    assert _ledger_pg.verify_rows(as_text, head, [signer.public_key])["valid"] is True


# --- object storage ----------------------------------------------------------------------------------------------------


def test_head_keys_sort_the_newest_head_first_and_give_back_their_seq():
    keys = [_s3.head_key("prod/", "fleet_ledger", seq) for seq in (1, 9, 10, 11, 100000)]
    assert sorted(keys)[0] == _s3.head_key("prod/", "fleet_ledger", 100000)
    assert [_s3.seq_of_key(k) for k in keys] == [1, 9, 10, 11, 100000]
    assert keys[0].startswith("prod/ledger-heads/fleet_ledger/")
    assert _s3.seq_of_key("prod/ledger-heads/fleet_ledger/not-a-head.json") is None


def test_evidence_keys_follow_the_runbook_layout():
    assert _s3.evidence_keys("prod/", "rollback-1", "rollback-1.tar.gz") == (
        "prod/rollbacks/rollback-1/rollback-1.tar.gz", "prod/rollbacks/rollback-1/pack-manifest.json")


def test_object_urls_use_the_endpoint_path_style_or_aws():
    assert _s3.object_url({"s3_endpoint_url": "http://127.0.0.1:8333/"}, "b", "k/x") == "http://127.0.0.1:8333/b/k/x"
    assert _s3.object_url({"s3_region": "eu-west-1"}, "b", "k") == "https://b.s3.eu-west-1.amazonaws.com/k"


def test_the_receipt_records_where_the_pack_is_and_the_schema_accepts_it(signer):
    uploaded = {
        "archive": {"url": "http://s3/b/rollbacks/r/r.tar.gz", "version_id": "v1",
                    "retention": {"mode": "COMPLIANCE", "days": 7, "retain_until": "2031-01-01T00:00:00Z"}},
        "manifest": {"url": "http://s3/b/rollbacks/r/pack-manifest.json", "version_id": "v2", "retention": None},
    }
    storage = _s3.storage_record(uploaded)
    assert storage == {"archive_url": "http://s3/b/rollbacks/r/r.tar.gz", "archive_version_id": "v1",
                       "manifest_url": "http://s3/b/rollbacks/r/pack-manifest.json", "manifest_version_id": "v2",
                       "retention_mode": "COMPLIANCE", "retain_until": "2031-01-01T00:00:00Z"}
    decision = evaluate("database", "oncall", ["dba", "eng-lead"], ROSTER, now=NOW)
    fields = dict(rollback_id="rollback-stored", outcome="succeeded", incident_id="INC-1", environment="sandbox",
                  reason="stored", component="database", current_ref="sha256:" + "a" * 64,
                  rollback_target_ref="b" * 40)
    evidence = {"archive_path": "/tmp/x", "archive_sha256": "c" * 64, "evidence_manifest": {"evidence_storage": storage}}
    receipt = R.build_receipt(fields, approval={"decision": decision}, evidence=evidence,
                              keyid=signer.public_key.keyid, now=NOW)
    assert receipt["evidence_storage"] == storage
    R.validate_receipt(receipt)
    # Without object storage the receipt is what it always was (no new field, same digest rules).
    plain = R.build_receipt(fields, approval={"decision": decision}, evidence={"archive_sha256": "c" * 64},
                            keyid=signer.public_key.keyid, now=NOW)
    assert "evidence_storage" not in plain


def test_a_random_looking_version_id_is_recorded_hex_encoded_so_the_receipt_guard_accepts_it():
    aws_like = "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo"
    assert R.secret_findings(aws_like)
    recorded = _s3.receipt_version_id(aws_like)
    assert recorded == "hex:" + aws_like.encode().hex() and not R.secret_findings(recorded)
    seaweed_like = "7fffe8a1b2c3d4e5f60718293a4b5c6d"
    assert _s3.receipt_version_id(seaweed_like) == seaweed_like and _s3.receipt_version_id(None) is None


def test_retention_until_is_days_from_now():
    now = datetime.datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=datetime.timezone.utc)
    assert _s3.retain_until(7, now) == datetime.datetime(2026, 1, 8, 12, 0, 0, tzinfo=datetime.timezone.utc)
