# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Schema migrations, as pure logic: which tool a database uses, what it has applied, which files undo what, the
downgrade plan, statements that cannot run in a transaction, schema snapshots and what a downgrade drops.

No I/O: the module (``pg_schema_downgrade``) reads the catalog, the bookkeeping table and the migration directory and
hands plain data to these functions.

Tools:

- ``native``: paired SQL files recorded in ``schema_migrations``. Two styles of table: ``golang-migrate``
  (``version bigint, dirty boolean``, one row holding the current version) and ``ledger`` (one row per applied
  migration, ``version`` plus optional columns such as ``applied_at`` and ``checksum``: dbmate and the sandbox).
  Two layouts of files: ``NNN_name.up.sql``/``NNN_name.down.sql`` and ``<version>/up.sql``/``<version>/down.sql``.
- ``alembic``: ``alembic_version(version_num)``; the revision graph comes from Alembic's script directory.
- ``flyway``: ``flyway_schema_history``; undo scripts ``U<version>__<description>.sql`` beside the
  ``V<version>__<description>.sql`` ones, an undo recorded as a row of type ``UNDO_SQL`` (as Flyway Teams does).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import zlib
from dataclasses import dataclass, field

from ansible_collections.governed.rollback.plugins.module_utils._common import (
    RollbackError, Refused, json_sha256, sha256_hex,
)

TOOLS = ("native", "alembic", "flyway")
NATIVE_TABLE = "schema_migrations"
ALEMBIC_TABLE = "alembic_version"
FLYWAY_TABLE = "flyway_schema_history"
BASE = "base"

# Bookkeeping tables of tools this module recognises but does not downgrade.
UNSUPPORTED_TABLES = {
    "django_migrations": "Django",
    "knex_migrations": "Knex",
    "goose_db_version": "goose",
    "databasechangelog": "Liquibase",
    "_yoyo_migrations": "yoyo",
}
# Tables that mean "another tool holds a lock" whatever the tool.
LOCK_TABLES = ("databasechangeloglock", "yoyo_lock")


# --------------------------------------------------------------------------- versions

_NATURAL = re.compile(r"(\d+)")


def version_key(version):
    """Natural sort key: ``v0.1.10`` after ``v0.1.9``, ``10`` after ``9``; digit runs compare as numbers."""
    parts = []
    for index, part in enumerate(_NATURAL.split(str(version))):
        if index % 2:
            parts.append((1, int(part), ""))
        elif part:
            parts.append((0, 0, part))
    return tuple(parts)


def same_version(left, right):
    """Versions are the same when equal as text or, both being digits only, as numbers (``001`` is ``1``)."""
    left, right = str(left), str(right)
    if left == right:
        return True
    return left.isdigit() and right.isdigit() and int(left) == int(right)


def flyway_version_key(version):
    """Flyway's order: dot-separated numbers (``1.10`` after ``1.9``; ``1`` equals ``1.0``)."""
    numbers = [int(p) for p in re.split(r"[._]", str(version)) if p != ""]
    while numbers and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


# --------------------------------------------------------------------------- detection


@dataclass
class Tool:
    """The migration tool of a database: ``name`` (native, alembic, flyway), its table and, for native, the style."""

    name: str
    table: str
    style: str = ""
    columns: tuple = ()

    def describe(self):
        return "%s (%s%s)" % (self.name, self.table, ", %s style" % self.style if self.style else "")


def detect_tool(tables, wanted="auto"):
    """The tool from the bookkeeping tables present: ``tables`` maps a table name to its column names.

    ``wanted`` (``auto`` or a tool name) settles a database that carries several tools' tables. Refused with code
    ``no_migration_table``, ``unsupported_tool``, ``ambiguous_tool`` or ``unsupported_table``.
    """
    tables = dict((str(k).lower(), tuple(str(c).lower() for c in v)) for k, v in (tables or {}).items())
    found = []
    if NATIVE_TABLE in tables:
        columns = tables[NATIVE_TABLE]
        if "version" not in columns:
            raise Refused("table %s has no version column (columns: %s); it is not a migration table this module "
                          "knows" % (NATIVE_TABLE, ", ".join(columns)), "unsupported_table")
        style = "golang-migrate" if "dirty" in columns else "ledger"
        found.append(Tool("native", NATIVE_TABLE, style, columns))
    if ALEMBIC_TABLE in tables:
        if "version_num" not in tables[ALEMBIC_TABLE]:
            raise Refused("table %s has no version_num column" % ALEMBIC_TABLE, "unsupported_table")
        found.append(Tool("alembic", ALEMBIC_TABLE, "", tables[ALEMBIC_TABLE]))
    if FLYWAY_TABLE in tables:
        missing = [c for c in ("installed_rank", "version", "type", "script", "success") if c not in tables[FLYWAY_TABLE]]
        if missing:
            raise Refused("table %s lacks the column(s) %s of Flyway's schema history"
                          % (FLYWAY_TABLE, ", ".join(missing)), "unsupported_table")
        found.append(Tool("flyway", FLYWAY_TABLE, "", tables[FLYWAY_TABLE]))
    if wanted and wanted != "auto":
        chosen = [t for t in found if t.name == wanted]
        if not chosen:
            raise Refused("tool=%s, but its bookkeeping table (%s) is not in the database; found: %s"
                          % (wanted, {"native": NATIVE_TABLE, "alembic": ALEMBIC_TABLE, "flyway": FLYWAY_TABLE}[wanted],
                             ", ".join(sorted(tables)) or "no migration table"), "no_migration_table")
        return chosen[0]
    if len(found) > 1:
        raise Refused("the database has the bookkeeping tables of several tools (%s); set tool to the one to downgrade"
                      % ", ".join(t.table for t in found), "ambiguous_tool")
    if found:
        return found[0]
    others = sorted(UNSUPPORTED_TABLES[t] for t in tables if t in UNSUPPORTED_TABLES)
    if others:
        raise Refused("the database is migrated by %s, which this module does not downgrade (supported: golang-migrate "
                      "style SQL migrations, Alembic, Flyway undo scripts)" % ", ".join(others), "unsupported_tool")
    raise Refused("no migration bookkeeping table (%s, %s or %s) in the database: nothing records which migrations "
                  "are applied" % (NATIVE_TABLE, ALEMBIC_TABLE, FLYWAY_TABLE), "no_migration_table")


def check_foreign_locks(lock_rows):
    """``lock_rows`` maps a lock table (``databasechangeloglock``, ``yoyo_lock``) to its rows (dicts). A held lock
    is refused, naming the row."""
    for row in lock_rows.get("databasechangeloglock") or []:
        if row.get("locked") in (True, 1, "t", "true"):
            raise Refused("Liquibase's lock is held (databasechangeloglock row id=%s, locked by %s since %s); another "
                          "migration may be running" % (row.get("id"), row.get("lockedby"), row.get("lockgranted")),
                          "locked", lock_row=_plain(row))
    for row in lock_rows.get("yoyo_lock") or []:
        raise Refused("yoyo's lock is held (yoyo_lock row pid=%s since %s)" % (row.get("pid"), row.get("ctime")),
                      "locked", lock_row=_plain(row))


def _plain(row):
    return dict((k, v if isinstance(v, (str, int, float, bool, type(None))) else str(v)) for k, v in row.items())


# --------------------------------------------------------------------------- applied state


@dataclass
class Applied:
    """What the bookkeeping table says: ``versions`` applied, oldest first (``current`` is the last, or None)."""

    versions: list
    rows: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def current(self):
        return self.versions[-1] if self.versions else None


def native_applied(tool, rows, known_versions):
    """The applied native migrations. ``rows`` are the table's rows (dicts); ``known_versions`` the versions found in
    the migration files, in order.

    golang-migrate keeps one row, the current version (all files up to it count as applied); a ``dirty`` row is
    refused. A ledger has one row per applied migration, ordered by the files' order.
    """
    if tool.style == "golang-migrate":
        if len(rows) > 1:
            raise Refused("%s holds %d rows; golang-migrate keeps exactly one (version, dirty)"
                          % (tool.table, len(rows)), "bad_state", rows=[_plain(r) for r in rows])
        if not rows:
            return Applied([], rows)
        row = rows[0]
        if row.get("dirty") in (True, 1, "t", "true"):
            raise Refused("dirty database: %s row version=%s has dirty=true, a migration failed half-way (golang-migrate: "
                          "\"Dirty database version %s. Fix and force version\"); repair the schema by hand, then "
                          "`migrate force <version>`, before any downgrade" % (tool.table, row["version"], row["version"]),
                          "dirty", dirty_row=_plain(row))
        current = str(row["version"])
        matches = [v for v in known_versions if same_version(v, current)]
        if not matches:
            raise Refused("the database is at version %s, which no migration file has (files: %s)"
                          % (current, ", ".join(known_versions) or "none"), "unknown_version")
        index = known_versions.index(matches[0])
        return Applied(list(known_versions[:index + 1]), rows)
    if any(row.get("dirty") in (True, 1, "t", "true") for row in rows):
        bad = [r for r in rows if r.get("dirty") in (True, 1, "t", "true")][0]
        raise Refused("dirty database: %s row version=%s is marked dirty" % (tool.table, bad["version"]), "dirty",
                      dirty_row=_plain(bad))
    applied = []
    for row in rows:
        version = str(row["version"])
        match = next((v for v in known_versions if same_version(v, version)), version)
        applied.append(match)
    # Version order (the files' order), as golang-migrate and dbmate revert: newest version first.
    applied.sort(key=version_key)
    return Applied(applied, rows)


FLYWAY_APPLY_TYPES = ("SQL", "JDBC", "SPRING_JDBC", "SCRIPT", "CUSTOM", "BASELINE", "SQL_BASELINE", "JDBC_BASELINE")
FLYWAY_UNDO_TYPES = ("UNDO_SQL", "UNDO_JDBC", "UNDO_SCRIPT", "UNDO_CUSTOM", "DELETE")


def flyway_applied(rows):
    """The versions a ``flyway_schema_history`` says are applied, in Flyway's version order. A row with
    ``success=false`` is refused (Flyway: "failed migration"), naming it."""
    rows = sorted(rows, key=lambda r: int(r["installed_rank"]))
    for row in rows:
        if row.get("success") in (False, 0, "f", "false"):
            raise Refused("failed migration in %s: installed_rank=%s version=%s script=%s has success=false; run "
                          "`flyway repair` (or fix the row) after checking the schema, before any downgrade"
                          % (FLYWAY_TABLE, row["installed_rank"], row.get("version"), row.get("script")), "failed",
                          failed_row=_plain(row))
    applied = {}
    baseline = None
    for row in rows:
        version = row.get("version")
        if version in (None, ""):
            continue  # repeatable migrations and schema markers carry no version
        kind = str(row.get("type") or "").upper()
        if kind in FLYWAY_UNDO_TYPES:
            applied.pop(flyway_version_key(version), None)
        elif kind in FLYWAY_APPLY_TYPES:
            applied[flyway_version_key(version)] = str(version)
            if "BASELINE" in kind:
                baseline = str(version)
    versions = [applied[k] for k in sorted(applied)]
    notes = ["baseline %s: versions up to it cannot be undone" % baseline] if baseline else []
    return Applied(versions, rows, notes)


def alembic_heads(rows):
    """The Alembic head(s); more than one means a branched history, which is refused."""
    heads = [str(r["version_num"]) for r in rows]
    if len(heads) > 1:
        raise Refused("alembic_version holds %d heads (%s): a branched history; downgrade each branch with Alembic "
                      "itself" % (len(heads), ", ".join(heads)), "branched")
    return heads


# --------------------------------------------------------------------------- migration files

_FLAT = re.compile(r"^(?P<version>\d+)_(?P<name>.*)\.(?P<direction>up|down)\.sql$")
_NESTED = re.compile(r"^(?P<version>[^/]+)/(?P<direction>up|down)\.sql$")
_FLYWAY = re.compile(r"^(?P<prefix>[VU])(?P<version>\d+(?:[._]\d+)*)__(?P<name>.+)\.sql$")


@dataclass
class Migration:
    """One migration as found on disk: version, name, and the paths (relative to the directory) of its files."""

    version: str
    name: str = ""
    up: str = None
    down: str = None

    def summary(self):
        return {"version": self.version, "name": self.name, "up": self.up, "down": self.down}


def discover_native(paths):
    """Native migrations from the relative paths of a migration directory (``/`` separated), ordered by version.

    ``NNN_name.up.sql`` / ``NNN_name.down.sql`` (golang-migrate; the version is the number) and
    ``<version>/up.sql`` / ``<version>/down.sql`` (the sandbox; the version is the directory name). Other files
    are ignored. Two files for the same version and direction are an error.
    """
    found = {}
    for path in sorted(paths):
        path = path.replace("\\", "/")
        base = path.rsplit("/", 1)[-1]
        match = _FLAT.match(base)
        if match:
            version, name = str(int(match.group("version"))), match.group("name")
        else:
            match = _NESTED.match(path)
            if not match:
                continue
            version, name = match.group("version"), match.group("version")
        direction = match.group("direction")
        migration = found.setdefault(version, Migration(version, name))
        if getattr(migration, direction):
            raise RollbackError("two %s files for migration version %s: %s and %s"
                                % (direction, version, getattr(migration, direction), path))
        setattr(migration, direction, path)
    return [found[v] for v in sorted(found, key=version_key)]


def discover_flyway(paths):
    """Flyway migrations from relative paths: ``V<version>__<desc>.sql`` (``up``) and ``U<version>__<desc>.sql``
    (``down``), ordered by Flyway's version order. Versions are spelled with dots (``1_1`` is ``1.1``)."""
    found = {}
    for path in sorted(paths):
        match = _FLYWAY.match(path.replace("\\", "/").rsplit("/", 1)[-1])
        if not match:
            continue
        version = match.group("version").replace("_", ".")
        key = flyway_version_key(version)
        migration = found.setdefault(key, Migration(version, match.group("name").replace("_", " ")))
        direction = "up" if match.group("prefix") == "V" else "down"
        if getattr(migration, direction):
            raise RollbackError("two %s scripts for Flyway version %s: %s and %s"
                                % ("versioned" if direction == "up" else "undo", version, getattr(migration, direction),
                                   path))
        setattr(migration, direction, path)
    return [found[k] for k in sorted(found)]


def flyway_checksum(text):
    """Flyway's checksum of a script: CRC32 over its lines (UTF-8, line breaks dropped, a leading BOM dropped), as a
    signed 32-bit integer, which is what ``flyway_schema_history.checksum`` holds."""
    if text.startswith("\ufeff"):
        text = text[1:]
    crc = 0
    for line in re.split(r"\r\n|\r|\n", text):
        crc = zlib.crc32(line.encode("utf-8"), crc)  # an empty last piece (text ending in a newline) adds nothing
    return crc - (1 << 32) if crc >= (1 << 31) else crc


# --------------------------------------------------------------------------- the plan


@dataclass
class Plan:
    """A downgrade: from ``from_version`` to ``to_version`` (None: nothing applied), reverting ``revert`` (versions,
    newest first)."""

    from_version: str
    to_version: str
    revert: list
    selected_by: str
    skipped_reason: str = None


def plan_downgrade(applied, target_version=None, steps=None, known=None, order_key=version_key):
    """Which applied versions to revert, newest first.

    ``applied`` is the ordered list of applied versions. ``target_version`` (a version that is applied, or ``base``
    for none) or ``steps`` (how many of the newest to revert; 1 when neither is given). ``known`` lists versions that
    exist in the files but are not applied, for a clearer refusal.
    """
    applied = [str(v) for v in applied]
    current = applied[-1] if applied else None
    if target_version is not None and steps is not None:
        raise RollbackError("target_version and steps are mutually exclusive")
    if target_version is not None:
        target = str(target_version)
        if target.lower() == BASE:
            index, to_version, how = 0, None, "target_version=base (revert every applied migration)"
        else:
            matches = [i for i, v in enumerate(applied) if same_version(v, target)]
            if not matches:
                if known and any(same_version(v, target) for v in known):
                    if current is not None and order_key(target) > order_key(current):
                        raise Refused("target version %s is newer than the current version %s: this module only "
                                      "downgrades" % (target, current), "not_a_downgrade")
                    raise Refused("target version %s is not applied in this database (applied: %s)"
                                  % (target, ", ".join(applied) or "none"), "unknown_version", applied=applied)
                raise Refused("unknown target version %s: no applied migration has it (applied: %s)"
                              % (target, ", ".join(applied) or "none"), "unknown_version", applied=applied)
            index, to_version = matches[0] + 1, applied[matches[0]]
            how = "target_version=%s" % target
    else:
        steps = 1 if steps is None else int(steps)
        if steps < 0:
            raise RollbackError("steps must be 0 or more, got %d" % steps)
        if steps > len(applied):
            raise Refused("steps=%d, but only %d migration(s) are applied (%s)"
                          % (steps, len(applied), ", ".join(applied) or "none"), "too_many_steps", applied=applied)
        index = len(applied) - steps
        to_version = applied[index - 1] if index > 0 else None
        how = "steps=%d (the runbook's downgrade -1)" % steps if steps == 1 else "steps=%d" % steps
    revert = list(reversed(applied[index:]))
    skipped = None
    if not revert:
        skipped = "skipped downgrade: the database is already at %s" % (
            "version %s" % current if current is not None else "base (no migration applied)")
    return Plan(current, to_version, revert, how, skipped)


def require_down_files(plan, migrations, tool_name):
    """The migrations to revert, newest first; a version without a down (undo) file is refused, naming the file
    expected."""
    by_version = {}
    for migration in migrations:
        by_version[migration.version] = migration
    chosen = []
    for version in plan.revert:
        migration = next((m for v, m in by_version.items() if same_version(v, version)
                          or (tool_name == "flyway" and flyway_version_key(v) == flyway_version_key(version))), None)
        if migration is None:
            raise Refused("no migration files for applied version %s in the migration directory; nothing to undo it "
                          "with" % version, "missing_down", version=version)
        if not migration.down:
            flat = migration.up and migration.up.endswith(".up.sql")
            expected = {"flyway": "U%s__%s.sql" % (version.replace(".", "_"), migration.name.replace(" ", "_")),
                        "native": migration.up[:-len(".up.sql")] + ".down.sql" if flat else version + "/down.sql"}
            raise Refused("missing down file for version %s: expected %s beside %s" % (
                version, expected.get(tool_name, "a down file"), migration.up), "missing_down", version=version)
        chosen.append(migration)
    return chosen


# --------------------------------------------------------------------------- SQL statements

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


@dataclass
class Statement:
    """One SQL statement: its text (without the final ``;``) and its words (keywords and bare identifiers,
    upper-cased), comments, string literals, quoted identifiers and dollar-quoted bodies left out."""

    text: str
    words: list
    line: int

    @property
    def empty(self):
        return not self.words and not self.text.strip(" \t\r\n;")


def split_statements(sql):
    """Split SQL text into statements at top-level semicolons.

    Skips ``--`` and (nested) ``/* */`` comments, ``'...'`` strings (``''`` escapes), ``E'...'`` strings (backslash
    escapes), ``"..."`` identifiers and ``$tag$...$tag$`` bodies. A ``BEGIN ATOMIC ... END`` body (SQL-standard
    function bodies) keeps its semicolons. Statements holding only comments are dropped.
    """
    statements = []
    words = []
    start = 0
    line = 1
    start_line = 1
    i = 0
    n = len(sql)
    atomic = 0  # depth of BEGIN ATOMIC / CASE blocks inside a BEGIN ATOMIC body

    def flush(end):
        text = sql[start:end].strip()
        if words or text:
            stmt = Statement(text, list(words), start_line)
            if stmt.words:
                statements.append(stmt)

    while i < n:
        ch = sql[i]
        if ch == "\n":
            line += 1
            i += 1
        elif ch == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end
        elif ch == "/" and sql.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    line += sql[i] == "\n"
                    i += 1
        elif ch == "'":
            backslash = i > 0 and sql[i - 1] in "eE" and (i < 2 or not (sql[i - 2].isalnum() or sql[i - 2] == "_"))
            i += 1
            while i < n:
                if backslash and sql[i] == "\\":
                    i += 2
                    continue
                if sql[i] == "'":
                    if sql.startswith("''", i):
                        i += 2
                        continue
                    i += 1
                    break
                line += sql[i] == "\n"
                i += 1
        elif ch == '"':
            end = sql.find('"', i + 1)
            while end >= 0 and sql.startswith('""', end):
                end = sql.find('"', end + 2)
            end = n if end < 0 else end + 1
            line += sql.count("\n", i, end)
            i = end
        elif ch == "$" and (i == 0 or not (sql[i - 1].isalnum() or sql[i - 1] == "_")) and _DOLLAR.match(sql, i):
            tag = _DOLLAR.match(sql, i).group(0)
            end = sql.find(tag, i + len(tag))
            end = n if end < 0 else end + len(tag)
            line += sql.count("\n", i, end)
            i = end
        elif ch == ";" and not atomic:
            flush(i)
            words = []
            i += 1
            start = i
            # the next statement starts at its first non-blank character
            while start < n and sql[start] in " \t\r\n":
                line += sql[start] == "\n"
                start += 1
            i = start
            start_line = line
        elif ch.isalpha() or ch == "_":
            match = _WORD.match(sql, i)
            word = match.group(0).upper()
            if not words:
                start, start_line = i, line
            if word == "ATOMIC" and words and words[-1] == "BEGIN":
                atomic += 1
            elif atomic and word == "CASE":
                atomic += 1
            elif atomic and word == "END":
                atomic -= 1
            words.append(word)
            i = match.end()
        else:
            i += 1
    flush(n)
    return statements


TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "END", "ROLLBACK", "ABORT", "START", "SAVEPOINT", "RELEASE", "PREPARE")


def _has_sequence(words, sequence, limit=None):
    size = len(sequence)
    span = words if limit is None else words[:limit]
    return any(span[i:i + size] == list(sequence) for i in range(len(span) - size + 1))


def non_transactional_reason(statement, server_version_num=150000):
    """Why a statement cannot run inside a transaction block, or None.

    ``server_version_num`` is the server's ``server_version_num`` (``ALTER TYPE ... ADD VALUE`` runs in a
    transaction from PostgreSQL 12 on).
    """
    words = statement.words
    if not words:
        return None
    first = words[0]
    two = words[:2]
    if first == "CREATE" and "INDEX" in words[:3] and _has_sequence(words, ["INDEX", "CONCURRENTLY"], 4):
        return "CREATE INDEX CONCURRENTLY cannot run inside a transaction block"
    if two == ["DROP", "INDEX"] and len(words) > 2 and words[2] == "CONCURRENTLY":
        return "DROP INDEX CONCURRENTLY cannot run inside a transaction block"
    if first == "REINDEX" and "CONCURRENTLY" in words[:6]:
        return "REINDEX CONCURRENTLY cannot run inside a transaction block"
    if first == "REINDEX" and len(words) > 1 and words[1] in ("SYSTEM", "DATABASE"):
        return "REINDEX %s cannot run inside a transaction block" % words[1]
    if first == "VACUUM":
        return "VACUUM cannot run inside a transaction block"
    if two == ["ALTER", "SYSTEM"]:
        return "ALTER SYSTEM cannot run inside a transaction block"
    if first in ("CREATE", "DROP") and len(words) > 1 and words[1] in ("DATABASE", "TABLESPACE"):
        return "%s %s cannot run inside a transaction block" % (first, words[1])
    if two == ["ALTER", "DATABASE"] and _has_sequence(words, ["SET", "TABLESPACE"]):
        return "ALTER DATABASE ... SET TABLESPACE cannot run inside a transaction block"
    if first == "ALTER" and _has_sequence(words, ["DETACH", "PARTITION"]) and "CONCURRENTLY" in words:
        return "ALTER TABLE ... DETACH PARTITION CONCURRENTLY cannot run inside a transaction block"
    if two == ["ALTER", "TYPE"] and _has_sequence(words, ["ADD", "VALUE"]) and server_version_num < 120000:
        return "ALTER TYPE ... ADD VALUE cannot run inside a transaction block before PostgreSQL 12"
    if first in ("CREATE", "DROP", "ALTER") and len(words) > 1 and words[1] == "SUBSCRIPTION":
        return "%s SUBSCRIPTION (with a replication slot) cannot run inside a transaction block" % first
    if first == "CLUSTER" and len(words) == 1:
        return "CLUSTER without a table cannot run inside a transaction block"
    return None


def is_transaction_control(statement):
    words = statement.words
    if not words or words[0] not in TRANSACTION_CONTROL:
        return False
    if words[0] == "START":
        return words[1:2] == ["TRANSACTION"]
    if words[0] == "PREPARE":
        return words[1:2] == ["TRANSACTION"]
    return True


@dataclass
class ScriptAnalysis:
    """A down script, split: the statements, which cannot run in a transaction (index, reason), and the transaction
    control stripped from its start and end."""

    statements: list
    non_transactional: list
    stripped: list


def analyse_script(sql, server_version_num=150000, where="script"):
    """Split a down script and classify its statements. A leading ``BEGIN`` / ``START TRANSACTION`` and a trailing
    ``COMMIT`` / ``END`` (scripts that wrap themselves in a transaction) are stripped, since the downgrade supplies
    its own transaction; transaction control anywhere else is refused (it would commit half the downgrade)."""
    statements = split_statements(sql)
    stripped = []
    if statements and is_transaction_control(statements[0]) and statements[0].words[0] in ("BEGIN", "START"):
        stripped.append(statements.pop(0).text)
        if statements and is_transaction_control(statements[-1]) and statements[-1].words[0] in ("COMMIT", "END"):
            stripped.append(statements.pop().text)
    for statement in statements:
        if is_transaction_control(statement):
            raise Refused("%s line %d: %r controls the transaction in the middle of the script; the downgrade runs in "
                          "one transaction of its own, so this would commit or abort half of it"
                          % (where, statement.line, statement.text[:80]), "transaction_control")
    flagged = []
    for index, statement in enumerate(statements):
        reason = non_transactional_reason(statement, server_version_num)
        if reason:
            flagged.append((index, reason))
    return ScriptAnalysis(statements, flagged, stripped)


# --------------------------------------------------------------------------- schema snapshots


def schema_digest(snapshot):
    """sha256 of a schema snapshot (a dict of object identity -> definition), canonical JSON."""
    return json_sha256(snapshot)


def schema_diff(recorded, now):
    """What changed between two snapshots: a list of ``{object, change, recorded, now}`` with ``change`` one of
    ``added`` (in ``now`` only), ``removed`` (in ``recorded`` only), ``changed``; sorted by object."""
    diff = []
    for key in sorted(set(recorded) | set(now)):
        if key not in now:
            diff.append({"object": key, "change": "removed", "recorded": recorded[key], "now": None})
        elif key not in recorded:
            diff.append({"object": key, "change": "added", "recorded": None, "now": now[key]})
        elif recorded[key] != now[key]:
            diff.append({"object": key, "change": "changed", "recorded": recorded[key], "now": now[key]})
    return diff


def snapshot_text(snapshot):
    """A snapshot as sorted lines ``<object>: <definition>``, for the task diff."""
    return "".join("%s: %s\n" % (key, snapshot[key]) for key in sorted(snapshot))


def dropped_objects(before, after):
    """Tables and columns a downgrade dropped, from catalog identities taken before and after it in the same
    transaction: ``before``/``after`` are ``{"tables": {oid: "schema.table"}, "columns": {"oid:attnum":
    ["schema.table", "column"]}}`` (oids survive renames, so a rename is not a loss). Columns of dropped tables are
    not listed separately."""
    tables = before.get("tables") or {}
    columns = before.get("columns") or {}
    after_tables = after.get("tables") or {}
    after_columns = after.get("columns") or {}
    dropped_tables = sorted((str(oid), name) for oid, name in tables.items() if str(oid) not in
                            set(str(k) for k in after_tables))
    gone = set(oid for oid, _name in dropped_tables)
    after_keys = set(str(k) for k in after_columns)
    dropped_columns = sorted((str(key), tuple(value)) for key, value in columns.items()
                             if str(key) not in after_keys and str(key).split(":", maxsplit=1)[0] not in gone)
    return ({"tables": [{"oid": oid, "table": name} for oid, name in dropped_tables],
             "columns": [{"key": key, "table": value[0], "column": value[1]} for key, value in dropped_columns]})


def data_loss_report(dropped, table_rows, column_values):
    """The data-loss entries: every dropped table with its row count and every dropped column with its non-null
    value count. ``table_rows`` maps ``schema.table`` to rows; ``column_values`` maps ``(schema.table, column)`` to
    non-null values. Returns (entries, lossy)."""
    entries = []
    for item in dropped["tables"]:
        rows = int(table_rows.get(item["table"], 0))
        entries.append({"object": "table", "table": item["table"], "column": None, "rows": rows,
                        "non_null_values": None, "loss": rows > 0})
    for item in dropped["columns"]:
        values = int(column_values.get((item["table"], item["column"]), 0))
        entries.append({"object": "column", "table": item["table"], "column": item["column"], "rows": None,
                        "non_null_values": values, "loss": values > 0})
    return entries, any(e["loss"] for e in entries)


def describe_loss(entries):
    parts = []
    for entry in entries:
        if not entry["loss"]:
            continue
        if entry["object"] == "table":
            parts.append("table %s (%d rows)" % (entry["table"], entry["rows"]))
        else:
            parts.append("column %s.%s (%d non-null values)" % (entry["table"], entry["column"],
                                                                entry["non_null_values"]))
    return ", ".join(parts)


# --------------------------------------------------------------------------- locks, binding, receipt


def golang_migrate_lock_id(database, schema="public", table=NATIVE_TABLE):
    """The advisory lock golang-migrate's postgres driver takes (``database.GenerateAdvisoryLockId``): CRC32 of
    ``schema NUL table NUL database`` times its salt, modulo 2**32."""
    name = "\x00".join([schema, table, database])
    return (zlib.crc32(name.encode("utf-8")) * 1486364155) % (1 << 32)


def own_lock_id(database):
    """This module's advisory lock key for a database: a signed 64-bit number from sha256."""
    value = int(sha256_hex("governed.rollback.pg_schema_downgrade\x00%s" % database)[:16], 16)
    return value - (1 << 64) if value >= (1 << 63) else value


def binding(version, schema_sha256):
    """What an approval of this plan is bound to."""
    return {"schema_version": version, "schema_sha256": schema_sha256}


def binding_mismatch(expected, actual):
    """The fields of ``expected`` that differ from ``actual`` (empty when the approval still holds)."""
    if not expected:
        return []
    return sorted(key for key in expected if key in actual and str(expected[key]) != str(actual[key])) + \
        sorted(key for key in expected if key not in actual)


def receipt_fields(component, plan, backup_location, lossy, entries):
    """The receipt's database fields."""
    return {
        "component": component,
        "migration_reverted": ", ".join(plan.revert) if plan and plan.revert else None,
        "from_version": plan.from_version if plan else None,
        "to_version": plan.to_version if plan else None,
        "backup_location": backup_location,
        "data_loss": ("none" if not lossy else describe_loss(entries)) if entries is not None else "unknown",
    }
