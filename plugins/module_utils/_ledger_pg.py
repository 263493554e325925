# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The receipt ledger in PostgreSQL: the file ledger's entries and signed heads, as rows.

Two tables (``<table>`` and ``<table>_head``), written only with INSERT:
  <table>        one row per entry, the file ledger's entry fields as columns (seq, prev, rollback_id, recorded_at,
                 receipt_sha256, receipt, signatures, entry_sha256); seq, rollback_id, prev and entry_sha256 are
                 UNIQUE, so two entries never share a seq and the chain cannot fork.
  <table>_head   one signed checkpoint (the DSSE envelope, canonical JSON) per append, keyed by the size it signs;
                 the newest is the ledger's head.

Appends are serialised by the database: one transaction takes a transaction-level advisory lock on the ledger, checks
the tail entry and the head, inserts the entry and the head and commits; a killed appender's transaction is rolled
back, so it leaves neither a gap nor a torn entry. Verification rebuilds every entry's canonical bytes and runs the
file ledger's own checks over them (_receipt), in one REPEATABLE READ snapshot.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from ansible_collections.governed.rollback.plugins.module_utils import _pg
from ansible_collections.governed.rollback.plugins.module_utils._common import sha256_hex, utc_now, utc_stamp
from ansible_collections.governed.rollback.plugins.module_utils._receipt import (
    ENTRY_KEYS,
    GENESIS,
    LedgerError,
    ReceiptError,
    _accept_entry,
    _bad,
    _check_entry,
    _check_head,
    _differing_fields,
    _named,
    _sign_receipt,
    canonical,
    check_depth,
    check_mirror,
    check_witnesses,
    make_checkpoint,
    make_entry,
    normalize_witnesses,
    receipt_sha256,
    validate_receipt,
    without_rerun_times,
    _check_mirror_for_append,
    _read_file,
    _write_envelope_file,
    entry_result,
    new_result,
    _write_mirror,
    receipt_envelope,
)

DEFAULT_TABLE = "governed_rollback_ledger"
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,46}$")
APPLICATION = "governed.rollback.ledger"
_URL = re.compile(r"^postgres(?:ql)?://", re.I)
_QUERY_PASSWORD = re.compile(r"((?:^|&)password=)[^&]*", re.I)


def is_url(ledger):
    return isinstance(ledger, str) and bool(_URL.match(ledger))


def redact_url(url):
    """The URL with any password replaced by ********, for messages and return values."""
    if not is_url(url):
        return url
    parts = urlsplit(url)
    netloc, query = parts.netloc, _QUERY_PASSWORD.sub(r"\1********", parts.query)
    if "@" in netloc and ":" in netloc.rsplit("@", 1)[0]:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = "%s:********@%s" % (userinfo.split(":", 1)[0], host)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(url):
    """Every password a postgresql:// URL carries (in the user info or a password= parameter), as written and
    decoded, for the caller to register for masking."""
    if not is_url(url):
        return []
    found = []
    parts = urlsplit(url)
    userinfo = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
    if ":" in userinfo:
        found.append(userinfo.split(":", 1)[1])
    found.extend(m.group(1) for m in re.finditer(r"(?:^|&)password=([^&]*)", parts.query, re.I))
    return sorted(set(v for value in found for v in (value, unquote(value)) if v))


def parse_url(url):
    """(connection params in PG_CONN's names, table or None, password or None) of ``postgresql://…``.

    Query parameters: ``table`` (the ledger table), plus ``host``/``port``/``user``/``dbname`` as libpq takes them.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise LedgerError("ledger URL %s is not a valid postgresql:// URL: %s" % (redact_url(url), exc))
    params = {"login_host": unquote(parts.hostname) if parts.hostname else None, "login_port": port,
              "login_user": unquote(parts.username) if parts.username else None,
              "login_password": unquote(parts.password) if parts.password is not None else None,
              "db": unquote(parts.path.lstrip("/")) or None}
    table = None
    for key, value in parse_qsl(parts.query):
        if key == "table":
            table = value
        elif key in ("host", "port", "user", "dbname"):
            name = {"host": "login_host", "port": "login_port", "user": "login_user", "dbname": "db"}[key]
            params[name] = int(value) if key == "port" and value.isdigit() else value
        else:
            raise LedgerError("ledger URL %s: unknown parameter %s (known: table, host, port, user, dbname; pass the "
                              "password as login_password or PGPASSWORD, not in the URL, and TLS settings as "
                              "PGSSLMODE/PGSSLROOTCERT in the environment)" % (redact_url(url), key))
    return params, table, params["login_password"]


def check_table(table):
    if not isinstance(table, str) or not _IDENT.match(table):
        raise LedgerError("ledger table %r is not a plain lower-case SQL name (letters, digits, _; at most 47 "
                          "characters)" % (table,))
    return table


def schema_sql(table=DEFAULT_TABLE, writer_role=None):
    """The DDL of the ledger (run once by the table's owner) and, with writer_role, the INSERT+SELECT grants."""
    check_table(table)
    sql = """CREATE TABLE IF NOT EXISTS {t} (
    seq            bigint PRIMARY KEY CHECK (seq >= 1),
    prev           text   NOT NULL UNIQUE CHECK (prev ~ '^[0-9a-f]{{64}}$'),
    rollback_id    text   NOT NULL UNIQUE,
    recorded_at    text   NOT NULL,
    receipt_sha256 text   NOT NULL CHECK (receipt_sha256 ~ '^[0-9a-f]{{64}}$'),
    receipt        jsonb  NOT NULL,
    signatures     jsonb  NOT NULL,
    entry_sha256   text   NOT NULL UNIQUE CHECK (entry_sha256 ~ '^[0-9a-f]{{64}}$')
);
CREATE TABLE IF NOT EXISTS {t}_head (
    seq        bigint PRIMARY KEY CHECK (seq >= 1),
    head       text   NOT NULL CHECK (head ~ '^[0-9a-f]{{64}}$'),
    checkpoint text   NOT NULL
);
CREATE OR REPLACE FUNCTION {t}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'governed.rollback ledger %: % is refused, the ledger is append-only', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
DROP TRIGGER IF EXISTS {t}_append_only ON {t};
CREATE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE ON {t} FOR EACH ROW EXECUTE FUNCTION {t}_append_only();
DROP TRIGGER IF EXISTS {t}_truncate_refused ON {t};
CREATE TRIGGER {t}_truncate_refused BEFORE TRUNCATE ON {t} FOR EACH STATEMENT EXECUTE FUNCTION {t}_append_only();
DROP TRIGGER IF EXISTS {t}_head_append_only ON {t}_head;
CREATE TRIGGER {t}_head_append_only BEFORE UPDATE OR DELETE ON {t}_head FOR EACH ROW
    EXECUTE FUNCTION {t}_append_only();
DROP TRIGGER IF EXISTS {t}_head_truncate_refused ON {t}_head;
CREATE TRIGGER {t}_head_truncate_refused BEFORE TRUNCATE ON {t}_head FOR EACH STATEMENT
    EXECUTE FUNCTION {t}_append_only();
""".format(t=table)
    if writer_role:
        check_table(writer_role)
        sql += """REVOKE ALL ON {t}, {t}_head FROM PUBLIC;
REVOKE ALL ON {t}, {t}_head FROM {r};
GRANT SELECT, INSERT ON {t}, {t}_head TO {r};
""".format(t=table, r=writer_role)
    return sql


# --------------------------------------------------------------------------- rows <-> entries (pure)

COLUMNS = ("seq", "prev", "rollback_id", "recorded_at", "receipt_sha256", "receipt", "signatures", "entry_sha256")


def row_entry(row):
    """The entry dict of a row (a tuple in COLUMNS order; jsonb arrives parsed)."""
    entry = dict(zip(COLUMNS, row))
    for key in ("receipt", "signatures"):
        if isinstance(entry[key], str):  # json (not jsonb) or a driver without the jsonb adapter
            entry[key] = json.loads(entry[key])
    return entry


def entry_row(entry):
    return tuple(json.dumps(entry[k], sort_keys=True) if k in ("receipt", "signatures") else entry[k]
                 for k in COLUMNS)


def entry_bytes(entry):
    """The entry as the file ledger's line (without its newline); a row that cannot be canonicalized yields a
    marker the entry check reports."""
    try:
        return canonical(dict((k, entry[k]) for k in ENTRY_KEYS))
    except (ReceiptError, KeyError):
        return b"{}"


def verify_rows(rows, head_checkpoint, keys=None):
    """verify_ledger_bytes over rows (iterable of COLUMNS tuples, ordered by seq) and the newest head's bytes."""
    result = new_result(keys)
    prev = GENESIS
    seq = 0
    for row in rows:
        seq += 1
        entry = row_entry(row)
        if entry["seq"] != seq:
            if entry["seq"] > seq:
                return _bad(result, seq, None, "entry %d is missing: the next row has seq %d (rows were deleted)"
                            % (seq, entry["seq"]))
            return _bad(result, seq, entry, "entry %d has seq %r" % (seq, entry["seq"]))
        problem, checked = _check_entry(entry_bytes(entry), seq, prev, keys, result["index"])
        if problem:
            return _bad(result, seq, checked or entry, "entry %d%s %s" % (seq, _named(checked or entry), problem))
        prev = _accept_entry(result, seq, entry)
    result["last_entry_sha256"] = prev
    return _check_head(result, head_checkpoint, keys)


# --------------------------------------------------------------------------- the backend

class PostgresLedger(object):
    """The ledger in a PostgreSQL database (see the module docstring). ``params`` are PG_CONN's options."""

    kind = "postgresql"

    def __init__(self, params, table=None, url=None):
        self.params = dict(params)
        self.url = url
        if url:
            from_url, url_table, _password = parse_url(url)
            for key, value in from_url.items():
                if value not in (None, ""):
                    self.params[key] = value
            table = table or url_table
        self.table = check_table(table or DEFAULT_TABLE)
        self.head_table = self.table + "_head"

    # -- description (never the password)
    def describe(self):
        return "PostgreSQL ledger %s (%s)" % (self.table, _pg.describe_target(self.params))

    def location(self):
        return redact_url(self.url) if self.url else "postgresql://%s@%s:%s/%s?table=%s" % (
            self.params.get("login_user") or "", self.params.get("login_host") or "",
            self.params.get("login_port") or "", self.params.get("db") or "", self.table)

    def head_location(self):
        return "%s (table %s)" % (self.location(), self.head_table)

    def connect(self, readonly=False):
        conn = _pg.connect(self.params, application_name=APPLICATION, readonly=readonly,
                           repeatable_read=readonly)
        return conn

    def _sql(self, text):
        return text.format(t=self.table, h=self.head_table)

    def _missing_table(self, exc):
        return LedgerError("%s: the ledger table does not exist or this role may not read it (%s); have the "
                           "database owner create it (rollback_receipt's documentation and the README show the SQL, "
                           "or run state=present once with ledger_create=true as the owner)"
                           % (self.describe(), str(exc).strip().splitlines()[0]))

    def create(self, conn, writer_role=None):
        with conn.cursor() as cur:
            cur.execute(schema_sql(self.table, writer_role))

    # -- reads
    def _head_bytes(self, cur):
        cur.execute(self._sql("SELECT checkpoint FROM {h} ORDER BY seq DESC LIMIT 1"))
        row = cur.fetchone()
        return row[0].encode("utf-8") if row else None

    def _tail_row(self, cur):
        cur.execute(self._sql("SELECT %s FROM {t} ORDER BY seq DESC LIMIT 1" % ", ".join(COLUMNS)))
        return cur.fetchone()

    def _row_by_id(self, cur, rollback_id):
        cur.execute(self._sql("SELECT %s FROM {t} WHERE rollback_id = %%s" % ", ".join(COLUMNS)), (rollback_id,))
        return cur.fetchone()

    def tail_state(self, cur, keys):
        """O(1) in the ledger's size: the newest head's signature and the tail entry it signs (as _receipt's)."""
        result = new_result(keys, digests=None, tail_only=True)
        head_bytes = self._head_bytes(cur)
        row = self._tail_row(cur)
        if row is None:
            return _check_head(result, head_bytes, keys)
        entry = row_entry(row)
        seq = entry["seq"]
        problem, checked = _check_entry(entry_bytes(entry), seq, entry["prev"], keys, {})
        if problem:
            return _bad(result, seq, checked or entry, "entry %d%s %s" % (seq, _named(checked or entry), problem))
        result.update(entries=seq, last_entry_sha256=entry["entry_sha256"])
        return _check_head(result, head_bytes, keys)

    def full_state(self, cur, keys):
        head_bytes = self._head_bytes(cur)
        cur.execute(self._sql("SELECT %s FROM {t} ORDER BY seq" % ", ".join(COLUMNS)))
        return verify_rows(_fetch_all(cur), head_bytes, keys)

    # -- the interface
    def append(self, receipt, signer=None, trusted_keys=None, check_mode=False, now=None, envelope_path=None,
               head_mirror=None, verify="tail", s3_heads=None):
        """append_receipt's contract over the tables; the append is one transaction under an advisory lock."""
        now = now or utc_now()
        keys = list(trusted_keys or [])
        if signer is not None and all(k.keyid != signer.public_key.keyid for k in keys):
            keys.append(signer.public_key)
        check_depth(receipt)
        validate_receipt(receipt)
        expected_keyid = signer.public_key.keyid if signer is not None else None
        if receipt["signing"]["keyid"] != expected_keyid:
            raise ReceiptError("receipt signing.keyid %s does not match the signing key %s"
                               % (receipt["signing"]["keyid"], expected_keyid), fields=["signing.keyid"])
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                try:
                    # One ledger, one writer at a time: held until COMMIT/ROLLBACK (or the session's death).
                    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("governed.rollback:" + self.table,))
                    state = self.full_state(cur, keys or None) if verify == "full" else self.tail_state(cur, keys or None)
                    existing_row = self._row_by_id(cur, receipt["rollback_id"]) if state["valid"] else None
                except _pg.psycopg2.errors.UndefinedTable as exc:
                    raise self._missing_table(exc)
                except _pg.psycopg2.errors.InsufficientPrivilege as exc:
                    raise self._missing_table(exc)
                if not state["valid"]:
                    raise LedgerError("refusing to append to %s: it does not verify: %s" % (self.describe(),
                                                                                            state["message"]), state)
                if signer is None and state["checkpoint"] and state["checkpoint"]["signed"]:
                    raise LedgerError("refusing to append to %s without a signing key: its head is signed and an "
                                      "unsigned append would downgrade it; provide signing_key or signing_key_path"
                                      % self.describe(), state)
                if head_mirror:
                    _check_mirror_for_append(head_mirror, state, keys)
                if s3_heads is not None:
                    s3_heads.check_for_append(state, keys)
                if existing_row is not None:
                    existing = row_entry(existing_row)
                    recorded, wanted = without_rerun_times(existing["receipt"]), without_rerun_times(receipt)
                    if receipt_sha256(recorded) != receipt_sha256(wanted):
                        raise LedgerError("rollback_id %s is already recorded at entry %d with different content "
                                          "(%s); a receipt is immutable: record this run under a new rollback_id"
                                          % (receipt["rollback_id"], existing["seq"],
                                             ", ".join(_differing_fields(wanted, recorded))), state)
                    conn.rollback()
                    return self._result(existing, False)
                signatures = _sign_receipt(receipt, signer)
                entry = make_entry(state["entries"] + 1, state["last_entry_sha256"], receipt, signatures,
                                   utc_stamp(now))
                if check_mode:
                    conn.rollback()
                    return self._result(entry, True)
                head = canonical(make_checkpoint(entry["seq"], entry["entry_sha256"], utc_stamp(now), signer))
                cur.execute(self._sql("INSERT INTO {t} (%s) VALUES (%s)" % (
                    ", ".join(COLUMNS), ", ".join(["%s"] * len(COLUMNS)))), entry_row(entry))
                cur.execute(self._sql("INSERT INTO {h} (seq, head, checkpoint) VALUES (%s, %s, %s)"),
                            (entry["seq"], entry["entry_sha256"], head.decode("utf-8")))
            conn.commit()
        except _pg.psycopg2.Error as exc:
            try:
                conn.rollback()
            except _pg.psycopg2.Error:
                pass  # a broken connection: the server rolls the transaction back itself
            raise LedgerError("%s: the append was rolled back, nothing was recorded: %s"
                              % (self.describe(), str(exc).strip().splitlines()[0] if str(exc).strip() else exc))
        finally:
            conn.close()
        # After COMMIT: the entry is durable; the mirrors follow (a lagging mirror is reported by verify).
        if head_mirror:
            _write_mirror(head_mirror, head + b"\n", entry["seq"])
        if s3_heads is not None:
            s3_heads.put(head + b"\n", entry["seq"])
        result = self._result(entry, True)
        if envelope_path and signatures:
            # The row keeps the signatures; a copy of the envelope goes where the caller asked for one.
            _write_envelope_file(envelope_path, receipt_envelope(receipt, signatures))
            result["envelope"] = envelope_path
        return result

    def verify(self, keys=None, witnesses=None, head_mirror=None, envelopes=True, s3_heads=None):
        """The file ledger's full verification over the tables, in one snapshot; plus witnesses and mirrors."""
        witnesses = normalize_witnesses(witnesses)
        conn = self.connect(readonly=True)
        try:
            with conn.cursor(name="governed_rollback_verify") as cur:
                cur.itersize = 2000
                try:
                    head_bytes = self._head_bytes_plain(conn)
                    cur.execute(self._sql("SELECT %s FROM {t} ORDER BY seq" % ", ".join(COLUMNS)))
                    result = verify_rows(cur, head_bytes, keys)
                except _pg.psycopg2.errors.UndefinedTable as exc:
                    if s3_heads is None:
                        raise self._missing_table(exc)
                    # No table: an empty ledger, which the locked heads (if any were written) contradict.
                    result = verify_rows([], None, keys)
                    result["message"] = "%s: the ledger table does not exist" % self.describe()
                except _pg.psycopg2.errors.InsufficientPrivilege as exc:
                    raise self._missing_table(exc)
        except _pg.psycopg2.Error as exc:
            raise LedgerError("%s: cannot read the ledger: %s" % (self.describe(), str(exc).strip()))
        finally:
            conn.close()
        check_witnesses(result, witnesses)
        if head_mirror:
            check_mirror(result, _read_file(head_mirror), keys, head_mirror)
        if s3_heads is not None:
            s3_heads.check(result, keys)
        result["witnesses"] = len(witnesses)
        return result

    def _head_bytes_plain(self, conn):
        with conn.cursor() as cur:
            return self._head_bytes(cur)

    def _result(self, entry, changed):
        return entry_result(entry, changed, None, self.head_location())


def _fetch_all(cur):
    while True:
        rows = cur.fetchmany(2000)
        if not rows:
            return
        yield from rows


def entry_digest(entry):
    """entry_sha256 recomputed (for tests and tools)."""
    return sha256_hex(canonical(dict((k, entry[k]) for k in ENTRY_KEYS if k != "entry_sha256")))
