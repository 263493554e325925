#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pg_schema_downgrade
short_description: Downgrade a PostgreSQL schema by its migrations, backed up, in one transaction, with a data-loss check
version_added: 0.1.0
author: governed.rollback maintainers (@governed)
description:
  - Automates the runbook's database schema rollback (back up, identify the migration, run the down migration, verify
    the schema) and closes its gaps.
  - Detects the migration tool from its bookkeeping table - C(schema_migrations) (golang-migrate's C(version, dirty),
    or one row per applied migration as dbmate and the sandbox keep it) with paired C(NNN_name.up.sql) /
    C(NNN_name.down.sql) files or C(<version>/up.sql) / C(<version>/down.sql) directories; C(alembic_version) with
    Alembic's script directory, downgraded through Alembic's own Python API; C(flyway_schema_history) with Flyway undo
    scripts C(U<version>__<description>.sql), each undo recorded as a row of type C(UNDO_SQL) as Flyway Teams does.
  - Refuses, changing nothing, a dirty golang-migrate row, a failed Flyway row, a held Liquibase or yoyo lock, a
    branched Alembic history (naming the row), an unknown target, a missing down file, and transaction control in the
    middle of a down script.
  - Works under an advisory lock taken by polling C(pg_try_advisory_lock) until O(advisory_lock_timeout) (never a
    blocking lock); for golang-migrate also the lock C(migrate) itself takes, so a concurrent C(migrate up) waits.
  - Before touching anything, a backup with C(pg_dump) (custom format, or directory format with parallel jobs),
    verified by reading it back (C(pg_restore --list), every table's data present, and a full read with
    C(pg_restore -f /dev/null)), its sha256 returned. A failure later keeps it.
  - Then a rehearsal - the downgrade runs in a transaction that is rolled back - finds the tables and columns it
    drops by comparing the catalog before and after (by OID, so a rename is not a loss), and counts their rows and
    non-null values. Any loss is refused unless O(accept_data_loss=true); RV(data_loss) reports it either way.
  - Then the downgrade in one transaction with C(lock_timeout) and C(statement_timeout) set. The tables losing data
    are locked (C(SHARE)) and counted again before anything is dropped, so a loss that appeared after the rehearsal is
    refused too. Statements that cannot run in a transaction (C(CREATE/DROP INDEX CONCURRENTLY), C(VACUUM),
    C(ALTER TYPE ... ADD VALUE) before PostgreSQL 12, C(CREATE DATABASE), ...) are found by a tokenizer that skips
    comments, strings and dollar quotes, and refused unless O(allow_non_transactional=true).
  - Records, in the same transaction, the schema of the version it downgrades from (reached by migrating up, so an
    honest baseline) in C(governed_rollback.schema_digests), and each downgrade in C(governed_rollback.downgrades). A
    down migration that is not a perfect inverse is not an error - RV(schema_drift) lists the differences between the
    schema now and the one recorded when the target version was current, if one was recorded (by an earlier
    downgrade from it).
options:
  migrations_dir:
    description:
      - Directory of the migration files - native C(.up.sql)/C(.down.sql) files or C(<version>/) directories,
        Flyway C(V)/C(U) scripts (searched recursively), or Alembic's script location (the directory with C(env.py)
        and C(versions/)).
    type: path
    required: true
    aliases: [script_location]
  tool:
    description:
      - Which tool's bookkeeping to follow. V(auto) detects it, and refuses a database carrying several tools' tables.
    type: str
    choices: [auto, native, alembic, flyway]
    default: auto
  target_version:
    description:
      - Version to downgrade to (an applied version), or V(base) to revert every applied migration.
      - Mutually exclusive with O(steps).
    type: str
  steps:
    description:
      - How many of the newest applied migrations to revert. Defaults to 1 (the runbook's C(downgrade -1)) when
        O(target_version) is not given.
    type: int
  backup_dir:
    description:
      - Directory for the backup taken before the downgrade, created if missing. The backup is named
        C(<db>-<from version>-<UTC time>-<random>.dump) (or C(.dir) for the directory format).
    type: path
    required: true
  backup_format:
    description: C(pg_dump) format - V(custom) (one file) or V(directory) (dumped with O(backup_jobs) parallel jobs).
    type: str
    choices: [custom, directory]
    default: custom
  backup_jobs:
    description: Parallel C(pg_dump) jobs for O(backup_format=directory).
    type: int
    default: 1
  client_bin_dir:
    description:
      - Directory of C(pg_dump) and C(pg_restore), for example C(/usr/lib/postgresql/16/bin); the first on PATH
        otherwise. C(pg_dump) refuses servers newer than itself.
    type: path
  lock_timeout:
    description: Seconds a statement of the downgrade waits for a table lock before the downgrade fails (C(lock_timeout)).
    type: float
    default: 5
  statement_timeout:
    description: Seconds a statement of the downgrade may run (C(statement_timeout)); V(0) for no limit.
    type: float
    default: 600
  advisory_lock_timeout:
    description: Seconds to keep polling for the advisory lock before refusing because another run holds it.
    type: float
    default: 30
  allow_non_transactional:
    description:
      - Run statements that cannot run inside a transaction on their own (autocommit), between transactions holding
        the rest of their migration, and record them in RV(non_transactional).
      - A failure after such a statement leaves that migration half-applied (golang-migrate's row is left
        C(dirty=true), as C(migrate) would).
    type: bool
    default: false
  accept_data_loss:
    description: Downgrade even though it drops tables or columns holding data (reported in RV(data_loss)).
    type: bool
    default: false
  expected_binding:
    description:
      - The RV(binding) of the plan that was approved. The real run refuses, changing nothing, when the database no
        longer matches it (another version, or another schema digest).
    type: dict
  flyway_undo_type:
    description:
      - The type of the C(flyway_schema_history) row recording an undo. V(UNDO_SQL) is what Flyway Teams writes;
        Flyway Community cannot read it (C(flyway info) fails with C(No enum constant ... UNDO_SQL)).
      - V(DELETE) is what Community's C(repair) writes for a removed migration; Community then shows the version as
        deleted and pending, and C(flyway migrate) re-applies it.
    type: str
    choices: [UNDO_SQL, DELETE]
    default: UNDO_SQL
  record_digests:
    description:
      - Record the schema digest of the versions seen and each downgrade in the schema C(governed_rollback) of the
        database (needs C(CREATE) on the database the first time). Without it RV(schema_drift) stays empty.
    type: bool
    default: true
extends_documentation_fragment:
  - governed.rollback.postgres
  - governed.rollback.runbook_context
  - governed.rollback.attributes
  - governed.rollback.attributes.ACTIONGROUP_POSTGRES
attributes:
  check_mode:
    support: full
    details:
      - Returns the plan (the migrations in order with their SQL) and runs the rehearsal (the downgrade inside a
        transaction that is rolled back) with the data-loss report. Nothing is changed and no backup is written.
      - What the real run would refuse (data loss, non-transactional statements) is returned in RV(would_refuse)
        and RV(approval_facts) rather than failing, so that an approval can be asked for.
  diff_mode:
    support: full
    details: The schema (one line per table, column, constraint, index, view, function, type, trigger, extension)
      before and after the downgrade (after the rehearsal in check mode).
  idempotent:
    support: full
    details: A database already at the target reports no change and nothing is written (no backup, no lock row).
notes:
  - Needs C(pg_dump) and C(pg_restore) on the controller (or O(client_bin_dir)), and the C(alembic) Python package
    for Alembic projects.
  - For Alembic the revisions' C(downgrade()) functions run in this module's transaction through
    C(alembic.runtime.environment.EnvironmentContext); the project's C(env.py) is not run, so connection set-up it does
    is not applied. The plan's SQL is Alembic's offline rendering, when the migration can be rendered offline.
  - Flyway's C(undo) is a paid feature; this module applies the C(U) scripts itself and writes the history row
    Flyway Teams writes (type C(UNDO_SQL), Flyway's checksum), so Teams' C(flyway info) shows the version as undone.
    For Flyway Community set O(flyway_undo_type=DELETE).
  - Writes made between the backup and the downgrade's commit are not in the backup. Stop the writers first when
    that matters.
seealso:
  - module: governed.rollback.evidence_capture
  - name: golang-migrate
    description: The migration table format of the native tool.
    link: https://github.com/golang-migrate/migrate
  - name: Alembic
    description: Its Python API, used for Alembic projects.
    link: https://alembic.sqlalchemy.org/en/latest/api/index.html
requirements:
  - pg_dump and pg_restore (PostgreSQL client programs, the server's major version or newer)
  - alembic >= 1.13 (Alembic projects only)
"""

EXAMPLES = r"""
- name: Plan the runbook's "downgrade -1" and rehearse it (nothing changes)
  governed.rollback.pg_schema_downgrade:
    db: aureus_metadata
    migrations_dir: /srv/aureus/migrations
    backup_dir: /backups/postgres
  check_mode: true
  register: plan

- name: Downgrade to the approved plan's target, refusing if the database changed since the approval
  governed.rollback.pg_schema_downgrade:
    db: aureus_metadata
    migrations_dir: /srv/aureus/migrations
    backup_dir: /backups/postgres
    target_version: "{{ plan.to_version }}"
    expected_binding: "{{ plan.binding }}"
    actor: "{{ requested_by }}"
    incident_id: INC-12345
    reason: v0.1.2 migration breaks the PII tracking queries
  register: downgrade

- name: Alembic project, two revisions back, accepting the dropped column's data (backed up)
  governed.rollback.pg_schema_downgrade:
    db: app
    tool: alembic
    migrations_dir: /srv/app/alembic
    steps: 2
    accept_data_loss: true
    backup_dir: /backups/postgres
    backup_format: directory
    backup_jobs: 4
"""

RETURN = r"""
tool:
  description: The migration tool followed, its table and style.
  returned: when the database was read
  type: dict
  sample: {name: native, table: schema_migrations, style: ledger}
from_version:
  description: The version the database was at (null when no migration was applied).
  returned: when the database was read
  type: str
  sample: v0.1.2-add-pii-tracking-table
to_version:
  description: The version it is at after the downgrade (null for base).
  returned: when a plan was made
  type: str
  sample: v0.1.1-add-dataset-owner
from_ref:
  description: Same as RV(from_version) (the plan contract every action module follows).
  returned: when the database was read
  type: str
to_ref:
  description: Same as RV(to_version).
  returned: when a plan was made
  type: str
migrations_reverted:
  description: The migrations reverted (planned, in check mode), newest first.
  returned: when a plan was made
  type: list
  elements: dict
  contains:
    version:
      description: Version.
      type: str
    name:
      description: Name or description.
      type: str
    file:
      description: The down (undo) file, relative to O(migrations_dir); the revision file for Alembic.
      type: str
    sql:
      description: The SQL run (Alembic - the offline rendering, or a note when it cannot be rendered offline).
      type: str
    non_transactional:
      description: Statements of it that cannot run in a transaction, with C(line) and C(reason).
      type: list
      elements: dict
skipped_reason:
  description: Why nothing was done (already at the target).
  returned: always
  type: str
  sample: "skipped downgrade: the database is already at version v0.1.1-add-dataset-owner"
backup_location:
  description: Path of the verified backup (null in check mode or when nothing was done).
  returned: always
  type: str
  sample: /backups/postgres/aureus_metadata-v0.1.2-add-pii-tracking-table-20240115T103045Z-1a2b3c.dump
backup_sha256:
  description: sha256 of the backup file (directory format - of its manifest, the sorted C(<sha256>  <file>) lines).
  returned: always
  type: str
backup:
  description: How the backup was taken and verified - C(format), C(bytes), C(toc_entries), C(table_data_entries),
    C(verified) (C(pg_restore --list) and a full read passed), C(seconds).
  returned: when a backup was taken
  type: dict
schema_sha256_before:
  description: Digest of the schema (catalog, without this module's own schema) before the downgrade.
  returned: when the database was read
  type: str
schema_sha256_after:
  description: Digest after the downgrade (after the rehearsal in check mode).
  returned: when a downgrade ran or was rehearsed
  type: str
schema_drift:
  description:
    - Differences between the schema after the downgrade and the one recorded when the target version was current
      (C(object), C(change) - added, removed, changed - C(recorded), C(now)). Empty when they match or nothing was
      recorded (see RV(drift_baseline)).
  returned: always
  type: list
  elements: dict
drift_baseline:
  description: When the schema of the target version was recorded (null when it never was, so no drift can be told).
  returned: always
  type: str
data_loss:
  description:
    - The tables and columns the downgrade drops, with C(rows) (tables) or C(non_null_values) (columns) and
      C(loss) (true when they hold data).
  returned: when a downgrade ran or was rehearsed
  type: list
  elements: dict
  sample: [{object: table, table: public.pii_access_tracking, column: null, rows: 4, non_null_values: null, loss: true}]
data_lost:
  description: Whether the downgrade drops (or would drop) data.
  returned: when a downgrade ran or was rehearsed
  type: bool
non_transactional:
  description: Statements run on their own, outside a transaction (O(allow_non_transactional=true)).
  returned: always
  type: list
  elements: dict
would_refuse:
  description: In check mode, what the real run would refuse without O(accept_data_loss) or O(allow_non_transactional).
  returned: in check mode
  type: list
  elements: str
rehearsal:
  description: The rehearsal's outcome - C(applied) (then rolled back) and C(seconds); C(skipped) statements that
    cannot be rehearsed.
  returned: when a downgrade ran or was rehearsed
  type: dict
binding:
  description: What an approval of this plan is bound to - C(schema_version) and C(schema_sha256) before the downgrade.
  returned: when the database was read
  type: dict
  sample: {schema_version: v0.1.2-add-pii-tracking-table, schema_sha256: 5d41402abc4b2a76b9719d911017c592}
approval_facts:
  description: Facts for the approval rules - C(data_loss) (bool) and C(non_transactional) (bool).
  returned: when a plan was made
  type: dict
receipt_fields:
  description: The receipt's database fields - C(component), C(migration_reverted), C(from_version), C(to_version),
    C(backup_location), C(data_loss) (C(none), C(unknown) or what is lost), C(current_ref) and C(rollback_target_ref)
    (C(sha256:) + the schema digest before, and after the downgrade or its rehearsal), and C(outcome=failed) when the
    task failed.
  returned: always
  type: dict
refused:
  description: The rule that refused the downgrade (nothing changed) - C(no_migration_table), C(unsupported_tool),
    C(ambiguous_tool), C(dirty), C(failed), C(locked), C(branched), C(unknown_version), C(not_a_downgrade),
    C(too_many_steps), C(missing_down), C(transaction_control), C(non_transactional), C(data_loss),
    C(binding_mismatch), C(changed), C(lock_timeout).
  returned: on refusal
  type: str
  sample: data_loss
selected_by:
  description: How the target was chosen.
  returned: when a plan was made
  type: str
  sample: steps=1 (the runbook's downgrade -1)
notes:
  description: Remarks on the migration history (for example a Flyway baseline that cannot be undone).
  returned: when the database was read
  type: list
  elements: str
plan:
  description: In check mode, the migrations to revert (as RV(migrations_reverted)), how the target was chosen, and
    the rehearsal's outcome.
  returned: in check mode
  type: dict
lock_holders:
  description: Sessions holding the advisory lock (C(pid), C(user), C(application_name), C(state), C(backend_start)).
  returned: when refused because the lock is held
  type: list
  elements: dict
connection_lost:
  description: True when the connection died during the downgrade (its transaction was not committed).
  returned: when the connection was lost
  type: bool
duration:
  description: Seconds the task took.
  returned: always
  type: float
"""

import os
import re
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.governed.rollback.plugins.module_utils import _argspec, _common, _pg, _proc
from ansible_collections.governed.rollback.plugins.module_utils import _migrations as mig
from ansible_collections.governed.rollback.plugins.module_utils._common import Refused, RollbackError

APP = "governed.rollback.pg_schema_downgrade"
OWN_SCHEMA = "governed_rollback"
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", OWN_SCHEMA)

# --------------------------------------------------------------------------- catalog

_SCHEMA_FILTER = ("n.nspname NOT IN ('pg_catalog', 'information_schema', '%s') AND n.nspname NOT LIKE 'pg\\_toast%%' "
                  "AND n.nspname NOT LIKE 'pg\\_temp%%'" % OWN_SCHEMA)
_NOT_EXTENSION = "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = %s AND d.deptype = 'e')"

SNAPSHOT_QUERIES = (
    ("table", "SELECT n.nspname || '.' || c.relname, c.relkind::text || CASE c.relpersistence WHEN 'u' THEN ' unlogged' "
              "ELSE '' END FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN "
              "('r', 'p', 'f') AND " + _SCHEMA_FILTER + " AND " + _NOT_EXTENSION % "c.oid"),
    ("column", "SELECT n.nspname || '.' || c.relname || '.' || a.attname, format_type(a.atttypid, a.atttypmod) || "
               "CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END || COALESCE(' DEFAULT ' || "
               "pg_get_expr(ad.adbin, ad.adrelid), '') || CASE WHEN a.attidentity <> '' THEN ' IDENTITY ' || "
               "a.attidentity::text ELSE '' END || CASE WHEN a.attgenerated <> '' THEN ' GENERATED' ELSE '' END "
               "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = "
               "c.relnamespace LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum WHERE "
               "a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'f', 'v', 'm') AND " + _SCHEMA_FILTER
               + " AND " + _NOT_EXTENSION % "c.oid"),
    ("constraint", "SELECT n.nspname || '.' || c.relname || '.' || con.conname, pg_get_constraintdef(con.oid) FROM "
                   "pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = "
                   "c.relnamespace WHERE " + _SCHEMA_FILTER),
    ("index", "SELECT n.nspname || '.' || c.relname, pg_get_indexdef(c.oid) FROM pg_index i JOIN pg_class c ON c.oid "
              "= i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE " + _SCHEMA_FILTER + " AND "
              + _NOT_EXTENSION % "c.oid"),
    ("view", "SELECT n.nspname || '.' || c.relname, c.relkind::text || ' ' || pg_get_viewdef(c.oid) FROM pg_class c JOIN "
             "pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('v', 'm') AND " + _SCHEMA_FILTER + " AND "
             + _NOT_EXTENSION % "c.oid"),
    ("sequence", "SELECT n.nspname || '.' || c.relname, format_type(s.seqtypid, NULL) FROM pg_sequence s JOIN "
                 "pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE "
                 + _SCHEMA_FILTER + " AND " + _NOT_EXTENSION % "c.oid"),
    ("function", "SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', "
                 "md5(pg_get_functiondef(p.oid)) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE "
                 "p.prokind IN ('f', 'p') AND " + _SCHEMA_FILTER + " AND " + _NOT_EXTENSION % "p.oid"),
    ("type", "SELECT n.nspname || '.' || t.typname, CASE t.typtype WHEN 'e' THEN 'enum (' || (SELECT "
             "string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid "
             "= t.oid) || ')' WHEN 'd' THEN 'domain ' || format_type(t.typbasetype, t.typtypmod) ELSE t.typtype::text "
             "END FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.typtype IN ('e', 'd') AND "
             + _SCHEMA_FILTER + " AND " + _NOT_EXTENSION % "t.oid"),
    ("trigger", "SELECT n.nspname || '.' || c.relname || '.' || tg.tgname, pg_get_triggerdef(tg.oid) FROM pg_trigger "
                "tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT "
                "tg.tgisinternal AND " + _SCHEMA_FILTER),
    ("extension", "SELECT e.extname, e.extversion FROM pg_extension e"),
    ("schema", "SELECT n.nspname, pg_get_userbyid(n.nspowner) FROM pg_namespace n WHERE " + _SCHEMA_FILTER +
               " AND n.nspname <> 'public'"),
)

IDENTITY_TABLES = ("SELECT c.oid::text, n.nspname, c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = "
                   "c.relnamespace WHERE c.relkind IN ('r', 'p') AND " + _SCHEMA_FILTER)
IDENTITY_COLUMNS = ("SELECT a.attrelid::text || ':' || a.attnum, n.nspname || '.' || c.relname, a.attname FROM "
                    "pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = "
                    "c.relnamespace WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p') AND "
                    + _SCHEMA_FILTER)


def schema_snapshot(cur):
    """The schema as {"<kind> <identity>": definition}: what the digest, the drift and the diff are computed from."""
    snapshot = {}
    for kind, query in SNAPSHOT_QUERIES:
        cur.execute(query)
        for identity, definition in cur.fetchall():
            snapshot["%s %s" % (kind, identity)] = definition or ""
    return snapshot


def catalog_identities(cur):
    """Tables and columns by OID (for what a downgrade drops) and the (schema, table) of each table."""
    cur.execute(IDENTITY_TABLES)
    tables, names, data_tables = {}, {}, []
    for oid, schema, table, kind in cur.fetchall():
        tables[oid] = "%s.%s" % (schema, table)
        names["%s.%s" % (schema, table)] = (schema, table)
        if kind == "r":
            data_tables.append((schema, table))  # partitioned parents hold no data of their own
    cur.execute(IDENTITY_COLUMNS)
    columns = dict((key, [table, column]) for key, table, column in cur.fetchall())
    return {"tables": tables, "columns": columns, "names": names, "data_tables": data_tables}


def bookkeeping_tables(cur):
    """The migration bookkeeping tables visible in the search path, with their columns."""
    names = list(_pg.MIGRATION_TABLES) + list(mig.UNSUPPORTED_TABLES) + list(mig.LOCK_TABLES)
    cur.execute("SELECT c.relname, array_agg(a.attname::text ORDER BY a.attnum) FROM pg_class c JOIN pg_attribute a ON "
                "a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped WHERE c.relname = ANY(%s) AND "
                "c.relkind IN ('r', 'p') AND c.relnamespace = ANY(current_schemas(false)::regnamespace[]) "
                "GROUP BY c.relname", (names,))
    return dict(cur.fetchall())


def fetch_rows(cur, table, order=None):
    cur.execute(_pg.sql.SQL("SELECT * FROM {}{}").format(
        _pg.sql.Identifier(table), _pg.sql.SQL(" ORDER BY " + order if order else "")))
    columns = [d[0] for d in cur.description]
    return [dict(zip(columns, row)) for row in cur.fetchall()]


# --------------------------------------------------------------------------- the project's migrations


class Step(object):
    """One migration to revert: version, name, file, SQL (native, Flyway) or Alembic revision, and its analysis."""

    def __init__(self, version, name, file, sql=None, revision=None, down_revision=None):
        self.version = version
        self.name = name
        self.file = file
        self.sql = sql
        self.revision = revision
        self.down_revision = down_revision
        self.analysis = None

    def summary(self):
        analysis = self.analysis
        flagged = [{"line": analysis.statements[i].line, "reason": reason,
                    "statement": analysis.statements[i].text[:200]} for i, reason in analysis.non_transactional] \
            if analysis else []
        return {"version": self.version, "name": self.name, "file": self.file, "sql": self.sql,
                "non_transactional": flagged}


def list_files(root):
    found = []
    for base, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            found.append(os.path.relpath(os.path.join(base, name), root).replace(os.sep, "/"))
    return found


def read_text(root, relative):
    path = os.path.join(root, relative)
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8")
    except (IOError, OSError) as exc:
        raise RollbackError("cannot read %s: %s" % (path, exc.strerror or exc))
    except UnicodeDecodeError as exc:
        raise RollbackError("%s is not UTF-8 text: %s" % (path, exc))


class Project(object):
    """The migrations the database says are applied, and how to revert them, for one tool."""

    def __init__(self, tool, root, cur, server_version):
        self.tool = tool
        self.root = root
        self.server_version = server_version
        self.notes = []
        self.known = []
        self.migrations = []
        self.alembic = None
        if not os.path.isdir(root):
            raise RollbackError("migrations_dir %s is not a directory" % root)
        if tool.name == "native":
            self.migrations = mig.discover_native(list_files(root))
            self.known = [m.version for m in self.migrations]
            self.rows = fetch_rows(cur, tool.table)
            self.applied = mig.native_applied(tool, self.rows, self.known)
        elif tool.name == "flyway":
            self.migrations = mig.discover_flyway(list_files(root))
            self.known = [m.version for m in self.migrations]
            self.rows = fetch_rows(cur, tool.table, "installed_rank")
            self.applied = mig.flyway_applied(self.rows)
        else:
            self.rows = fetch_rows(cur, tool.table)
            heads = mig.alembic_heads(self.rows)
            self.alembic = AlembicProject(root)
            self.applied = mig.Applied(self.alembic.chain(heads[0]) if heads else [], self.rows)
            self.known = self.alembic.all_revisions()
        self.notes.extend(self.applied.notes)

    def plan(self, target_version, steps):
        order_key = mig.flyway_version_key if self.tool.name == "flyway" else mig.version_key
        if self.tool.name == "alembic":
            order = dict((v, i) for i, v in enumerate(self.alembic.ordered()))

            def order_key(version):  # noqa: F811  pylint: disable=function-redefined
                return order.get(version, -1)
        return mig.plan_downgrade(self.applied.versions, target_version, steps, self.known, order_key)

    def steps(self, plan):
        """The Steps of a plan, newest first, with their SQL read and analysed."""
        result = []
        if self.tool.name == "alembic":
            for version in plan.revert:
                result.append(self.alembic.step(version))
        else:
            for migration in mig.require_down_files(plan, self.migrations, self.tool.name):
                sql = read_text(self.root, migration.down)
                result.append(Step(migration.version, migration.name, migration.down, sql))
        for step in result:
            if step.sql is not None:
                step.analysis = mig.analyse_script(step.sql, self.server_version, where=step.file)
            else:
                step.analysis = mig.ScriptAnalysis([], [], [])
        return result


class AlembicProject(object):
    """Alembic's script directory, through Alembic's API."""

    def __init__(self, root):
        try:
            from alembic.config import Config
            from alembic.script import ScriptDirectory
            from alembic.util import CommandError
        except ImportError:
            raise RollbackError("the alembic Python package is required for Alembic projects; install alembic")
        self.error = CommandError
        self.config = Config()
        self.config.set_main_option("script_location", root)
        try:
            self.script = ScriptDirectory.from_config(self.config)
            self.script.revision_map.heads  # pylint: disable=pointless-statement  # parse every revision now
        except Exception as exc:  # pylint: disable=broad-except  # Alembic raises several types for a bad directory
            raise RollbackError("cannot read Alembic's script location %s: %s" % (root, exc))

    def revision(self, rev):
        try:
            found = self.script.get_revision(rev)
        except Exception as exc:  # pylint: disable=broad-except
            raise Refused("alembic_version names revision %s, which the script location does not have: %s" % (rev, exc),
                          "unknown_version")
        if found is None:
            raise Refused("alembic_version names revision %s, which the script location does not have" % rev,
                          "unknown_version")
        return found

    def chain(self, head):
        """Applied revisions, oldest first: the single-parent chain below the head."""
        chain = []
        rev = self.revision(head)
        while rev is not None:
            chain.append(rev.revision)
            down = rev.down_revision
            if isinstance(down, (tuple, list)):
                raise Refused("revision %s merges %s: downgrading through a merge point is not supported; use Alembic "
                              "itself" % (rev.revision, ", ".join(down)), "branched")
            rev = self.revision(down) if down else None
        return list(reversed(chain))

    def all_revisions(self):
        return [r.revision for r in self.script.walk_revisions()]

    def ordered(self):
        return list(reversed(self.all_revisions()))

    def step(self, version):
        rev = self.revision(version)
        path = os.path.relpath(rev.path, self.script.dir) if rev.path else rev.revision
        step = Step(rev.revision, rev.doc or "", path, revision=rev.revision, down_revision=rev.down_revision)
        step.sql = self.offline_sql(rev)
        return step

    def offline_sql(self, rev):
        """Alembic's offline rendering of one revision's downgrade, or None when it cannot be rendered offline."""
        import io
        from alembic.runtime.environment import EnvironmentContext

        buf = io.StringIO()
        destination = rev.down_revision or "base"

        def fn(current, context):
            return self.script._downgrade_revs(destination, rev.revision)  # pylint: disable=protected-access

        try:
            with EnvironmentContext(self.config, self.script, fn=fn, as_sql=True, starting_rev=rev.revision,
                                    destination_rev=destination) as env:
                env.configure(dialect_name="postgresql", output_buffer=buf, transactional_ddl=False)
                env.run_migrations()
        except Exception:  # pylint: disable=broad-except  # a migration that reads data cannot render offline
            return None
        return buf.getvalue()

    def downgrade(self, sa_conn, destination):
        """Run the downgrade through Alembic's EnvironmentContext on ``sa_conn`` (already in our transaction, so
        Alembic neither begins nor commits one). Alembic updates alembic_version itself."""
        from alembic.runtime.environment import EnvironmentContext

        def fn(current, context):
            return self.script._downgrade_revs(destination, current)  # pylint: disable=protected-access

        with EnvironmentContext(self.config, self.script, fn=fn, destination_rev=destination) as env:
            env.configure(connection=sa_conn, transactional_ddl=True)
            env.run_migrations()


def sqlalchemy_connection(raw):
    """A SQLAlchemy connection over our psycopg2 connection, made before any work: SQLAlchemy rolls back on first
    use."""
    try:
        import sqlalchemy
        from sqlalchemy.pool import StaticPool
    except ImportError:
        raise RollbackError("SQLAlchemy (installed with alembic) is required for Alembic projects")
    engine = sqlalchemy.create_engine("postgresql+psycopg2://", creator=lambda: raw, poolclass=StaticPool)
    return engine.connect()


# --------------------------------------------------------------------------- locks


def holders(cur, key):
    cur.execute("SELECT a.pid, a.usename, a.application_name, a.state, a.backend_start::text FROM pg_locks l JOIN "
                "pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND "
                "((l.classid::bigint << 32) | l.objid::bigint) = %s AND a.pid <> pg_backend_pid()", (key,))
    return [dict(zip(("pid", "user", "application_name", "state", "backend_start"), row)) for row in cur.fetchall()]


def take_advisory_lock(conn, key, deadline_seconds, what):
    """Poll pg_try_advisory_lock (session level, autocommit) until it is granted or the deadline passes."""
    cur = conn.cursor()
    deadline = time.monotonic() + max(deadline_seconds, 0)
    delay = 0.1
    while True:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
        if cur.fetchone()[0]:
            return
        if time.monotonic() >= deadline:
            held_by = holders(cur, key)
            sessions = ", ".join("pid %(pid)s user %(user)s application %(application_name)s (%(state)s)" % h
                                 for h in held_by) or "unknown"
            raise Refused("%s is locked by another session (%s) and was not released within %ss; another downgrade or "
                          "migration is running" % (what, sessions, deadline_seconds), "locked", lock_holders=held_by)
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


# --------------------------------------------------------------------------- backup


def _sanitize(text):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text))[:80] or "none"


def backup_digest(path):
    if os.path.isdir(path):
        lines = []
        for relative in sorted(list_files(path)):
            lines.append("%s  %s\n" % (_common.sha256_file(os.path.join(path, relative)), relative))
        return _common.sha256_hex("".join(lines)), sum(os.path.getsize(os.path.join(path, r)) for r in list_files(path))
    return _common.sha256_file(path), os.path.getsize(path)


def take_backup(params, db, from_version, tables, secrets):
    """pg_dump the database, then verify the archive: its TOC (pg_restore --list) lists every table's data and a full
    read (pg_restore -f /dev/null) succeeds. Returns (path, sha256, details)."""
    started = time.monotonic()
    bindir = params.get("client_bin_dir")
    pg_dump = _pg.client_program("pg_dump", bindir)
    pg_restore = _pg.client_program("pg_restore", bindir)
    backup_dir = params["backup_dir"]
    try:
        os.makedirs(backup_dir, exist_ok=True)
    except OSError as exc:
        raise RollbackError("cannot create backup_dir %s: %s; nothing was changed" % (backup_dir, exc.strerror or exc))
    directory = params["backup_format"] == "directory"
    stamp = _common.utc_now().strftime("%Y%m%dT%H%M%SZ")
    name = "%s-%s-%s-%s.%s" % (_sanitize(db), _sanitize(from_version), stamp, os.urandom(3).hex(),
                               "dir" if directory else "dump")
    path = os.path.join(backup_dir, name)
    env = _pg.client_env(params)
    env["PGAPPNAME"] = APP + ":backup"
    lock_wait = max(int(params["lock_timeout"] * 1000), 1000)
    argv = [pg_dump, "--format=%s" % ("directory" if directory else "custom"), "--file=%s" % path, "--no-password",
            "--lock-wait-timeout=%d" % lock_wait]
    if directory and params["backup_jobs"] > 1:
        argv.append("--jobs=%d" % params["backup_jobs"])
    timeout = max(params["statement_timeout"] or 0, 3600)
    done = _proc.run(argv, env=env, timeout=timeout, known_values=secrets)
    if not done.ok:
        raise RollbackError("backup failed, nothing was changed: %s" % done.explain("pg_dump"), backup_location=None)
    listed = _proc.run([pg_restore, "--list", path], timeout=timeout, known_values=secrets)
    if not listed.ok:
        raise RollbackError("the backup %s cannot be read back (pg_restore --list), so the downgrade did not start and "
                            "nothing was changed: %s" % (path, listed.explain("pg_restore --list")),
                            backup_location=path, refused="backup_unreadable")
    toc = [line for line in listed.value.splitlines() if line.strip() and not line.startswith(";")]
    data_entries = [line for line in toc if " TABLE DATA " in line]
    missing = []
    for schema, table in sorted(tables):
        if not any((" TABLE DATA %s %s " % (schema, table)) in line for line in data_entries):
            missing.append("%s.%s" % (schema, table))
    if missing:
        raise RollbackError("the backup %s lacks the data of %s, so the downgrade did not start and nothing was changed"
                            % (path, ", ".join(missing)), backup_location=path, refused="backup_unreadable")
    full = _proc.run([pg_restore, "--file=/dev/null", path], timeout=timeout, known_values=secrets)
    if not full.ok:
        raise RollbackError("the backup %s cannot be read in full (pg_restore -f /dev/null), so the downgrade did not "
                            "start and nothing was changed: %s" % (path, full.explain("pg_restore")),
                            backup_location=path, refused="backup_unreadable")
    sha, size = backup_digest(path)
    return path, sha, {"format": params["backup_format"], "bytes": size, "toc_entries": len(toc),
                       "table_data_entries": len(data_entries), "verified": True,
                       "seconds": round(time.monotonic() - started, 3)}


# --------------------------------------------------------------------------- running the downgrade


def seconds_setting(value):
    return "%dms" % int(round((value or 0) * 1000))


class Downgrade(object):
    """One run: the connection, the project, the plan and the result being built."""

    def __init__(self, module, result):
        self.module = module
        self.params = module.params
        self.result = result
        self.conn = None
        self.sa_conn = None
        self.sa_trans = None
        self.project = None
        self.plan = None
        self.steps = []
        self.secrets = [p for p in (self.params.get("login_password"),) if p]

    # -- connection and transactions

    def connect(self):
        self.conn = _pg.connect(self.params, application_name=APP)
        self.conn.autocommit = True

    def set_phase(self, phase):
        cur = self.conn.cursor()
        cur.execute("SELECT set_config('application_name', %s, false)", ("%s:%s" % (APP, phase),))

    def begin(self):
        """Start a transaction with the timeouts set for it."""
        self.conn.autocommit = False
        if self.sa_conn is not None:
            self.sa_trans = self.sa_conn.begin()
        cur = self.conn.cursor()
        cur.execute("SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
                    (seconds_setting(self.params["lock_timeout"]), seconds_setting(self.params["statement_timeout"])))
        return cur

    def rollback(self):
        try:
            if self.sa_trans is not None and self.sa_trans.is_active:
                self.sa_trans.rollback()
            else:
                self.conn.rollback()
        finally:
            self.sa_trans = None
            self.conn.autocommit = True

    def commit(self):
        if self.sa_trans is not None:
            self.sa_trans.commit()
            self.sa_trans = None
        else:
            self.conn.commit()
        self.conn.autocommit = True

    def close(self):
        if self.conn is not None:
            try:
                if not self.conn.closed:
                    if not self.conn.autocommit:
                        self.conn.rollback()
                    self.conn.close()
            except Exception:  # pylint: disable=broad-except  # the connection may already be gone
                pass

    # -- reading

    def read(self):
        params = self.params
        cur = self.conn.cursor()
        tables = bookkeeping_tables(cur)
        tool = mig.detect_tool(dict((k, v) for k, v in tables.items() if k not in mig.LOCK_TABLES), params["tool"])
        mig.check_foreign_locks(dict((t, fetch_rows(cur, t)) for t in mig.LOCK_TABLES if t in tables))
        self.result["tool"] = {"name": tool.name, "table": tool.table, "style": tool.style}
        if tool.name == "alembic" and self.sa_conn is None:
            self.sa_conn = sqlalchemy_connection(self.conn)
            self.conn.autocommit = True
        project = Project(tool, params["migrations_dir"], cur, self.conn.server_version)
        plan = project.plan(params.get("target_version"), params.get("steps"))
        snapshot = schema_snapshot(cur)
        return project, plan, snapshot

    def describe_plan(self, project, plan, snapshot):
        result = self.result
        digest = mig.schema_digest(snapshot)
        result.update(from_version=plan.from_version, to_version=plan.to_version, from_ref=plan.from_version,
                      to_ref=plan.to_version, schema_sha256_before=digest, selected_by=plan.selected_by,
                      binding=mig.binding(plan.from_version, digest), notes=project.notes)
        self.update_receipt(None, None)
        return digest

    def update_receipt(self, entries, lossy):
        self.result["receipt_fields"] = mig.receipt_fields(self.component(), self.plan, self.result.get("backup_location"),
                                                           lossy, entries)
        self.update_refs()

    def update_refs(self):
        """A schema is named by its catalog digest: current_ref before, rollback_target_ref after the downgrade (or
        after its rehearsal, in check mode)."""
        fields = self.result.setdefault("receipt_fields", {})
        for key, digest in (("current_ref", "schema_sha256_before"), ("rollback_target_ref", "schema_sha256_after")):
            fields[key] = ("sha256:" + self.result[digest]) if self.result.get(digest) else None

    def component(self):
        return "database %s" % (self.params.get("db") or os.environ.get("PGDATABASE") or "(default)")

    # -- applying

    def apply(self, cur, destination, rehearsal=False):
        """Revert the plan's steps in the current transaction (bookkeeping included). In a rehearsal statements that
        cannot run in a transaction are skipped and listed (downgrade_in_pieces runs those)."""
        skipped = []
        tool = self.project.tool
        if tool.name == "alembic":
            try:
                self.project.alembic.downgrade(self.sa_conn, destination or "base")
            except RollbackError:
                raise
            except Exception as exc:  # pylint: disable=broad-except  # SQLAlchemy wraps the driver's errors
                orig = getattr(exc, "orig", None)
                step = Step(", ".join(s.version for s in self.steps), "", "alembic revisions")
                if orig is not None and isinstance(orig, _pg.psycopg2.Error):
                    raise self.statement_error(orig, step, None)
                raise RollbackError("Alembic's downgrade failed: %s: %s; the downgrade was rolled back and nothing was "
                                    "changed" % (type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip()
                                                 else ""))
            return skipped
        remaining = list(self.project.applied.versions)
        for step in self.steps:
            flagged = dict(step.analysis.non_transactional)
            for index, statement in enumerate(step.analysis.statements):
                if index in flagged:
                    if not rehearsal:
                        raise Refused("%s line %d: %s; nothing was changed" % (step.file, statement.line, flagged[index]),
                                      "non_transactional")
                    skipped.append({"version": step.version, "line": statement.line, "statement": statement.text[:200],
                                    "reason": flagged[index]})
                    continue
                self.execute(cur, step, statement)
            remaining = [v for v in remaining if not mig.same_version(v, step.version)]
            self.record_revert(cur, step, remaining[-1] if remaining else None)
        return skipped

    def execute(self, cur, step, statement):
        try:
            cur.execute(statement.text)
        except _pg.psycopg2.Error as exc:
            raise self.statement_error(exc, step, statement)

    def statement_error(self, exc, step, statement):
        if self.conn.closed:
            return self.connection_error(exc, "down migration %s" % step.version)
        code = getattr(exc, "pgcode", None)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = "%s line %d (%s)" % (step.file, statement.line, statement.text[:120]) if statement else step.file
        if code == "55P03":
            return Refused("lock_timeout: %s waited more than %ss for a lock held by another session (%s); the "
                           "downgrade was rolled back and nothing was changed"
                           % (where, self.params["lock_timeout"], message), "lock_timeout")
        if code == "57014":
            return RollbackError("statement_timeout: %s ran longer than %ss (%s); the downgrade was rolled back and "
                                 "nothing was changed" % (where, self.params["statement_timeout"], message))
        return RollbackError("down migration %s failed at %s: %s; the downgrade was rolled back and nothing was "
                             "changed" % (step.version, where, message), sqlstate=code)

    def record_revert(self, cur, step, new_current):
        tool = self.project.tool
        sql = _pg.sql
        if tool.name == "native" and tool.style == "golang-migrate":
            cur.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(tool.table)))
            if new_current is not None:
                cur.execute(sql.SQL("INSERT INTO {} (version, dirty) VALUES (%s, false)").format(
                    sql.Identifier(tool.table)), (int(new_current),))
        elif tool.name == "native":
            rows = [r for r in self.project.rows if mig.same_version(r["version"], step.version)]
            cur.execute(sql.SQL("DELETE FROM {} WHERE version = %s").format(sql.Identifier(tool.table)),
                        (rows[0]["version"] if rows else step.version,))
        elif tool.name == "flyway":
            cur.execute(sql.SQL("INSERT INTO {} (installed_rank, version, description, type, script, checksum, "
                                "installed_by, execution_time, success) SELECT COALESCE(max(installed_rank), 0) + 1, "
                                "%s, %s, %s, %s, %s, %s, 0, true FROM {}").format(
                sql.Identifier(tool.table), sql.Identifier(tool.table)),
                (step.version, step.name, self.params["flyway_undo_type"], os.path.basename(step.file),
                 mig.flyway_checksum(step.sql),
                 (self.params.get("actor") or self.params.get("login_user") or "governed.rollback")[:100]))

    # -- data loss

    def count_losses(self, cur, dropped, names, lock=False):
        table_rows, column_values = {}, {}
        sql = _pg.sql
        affected = sorted(set([t["table"] for t in dropped["tables"]] + [c["table"] for c in dropped["columns"]]))
        for table in affected:
            if table not in names:
                raise Refused("table %s, which the rehearsal saw dropped, is gone; re-plan, nothing was changed" % table,
                              "changed")
            schema, name = names[table]
            ident = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))
            if lock:
                cur.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(ident))
            columns = [c["column"] for c in dropped["columns"] if c["table"] == table]
            select = [sql.SQL("count(*)")] + [sql.SQL("count({})").format(sql.Identifier(c)) for c in columns]
            cur.execute(sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(select), ident))
            counts = cur.fetchone()
            table_rows[table] = counts[0]
            for column, value in zip(columns, counts[1:]):
                column_values[(table, column)] = value
        return mig.data_loss_report(dropped, table_rows, column_values)

    def rehearse(self):
        """Run the downgrade in a transaction and roll it back: proves it applies, finds what it drops and counts the
        data there. Returns (entries, lossy, skipped, snapshot_after)."""
        started = time.monotonic()
        self.set_phase("rehearsal")
        cur = self.begin()
        try:
            before = catalog_identities(cur)
            cur.execute("SAVEPOINT governed_rehearsal")
            skipped = self.apply(cur, self.plan.to_version, rehearsal=True)
            after = catalog_identities(cur)
            snapshot_after = schema_snapshot(cur)
            cur.execute("ROLLBACK TO SAVEPOINT governed_rehearsal")
            dropped = mig.dropped_objects(before, after)
            entries, lossy = self.count_losses(cur, dropped, before["names"])
        except _pg.psycopg2.Error as exc:
            self.safe_rollback()
            raise self.connection_error(exc, "the rehearsal")
        finally:
            if not self.conn.closed and not self.conn.autocommit:
                self.safe_rollback()
        self.result["rehearsal"] = {"applied": True, "rolled_back": True, "skipped": skipped,
                                    "seconds": round(time.monotonic() - started, 3)}
        return entries, lossy, skipped, snapshot_after, dropped

    def connection_error(self, exc, phase):
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if self.conn is None or self.conn.closed or isinstance(exc, _pg.psycopg2.OperationalError) and \
                getattr(exc, "pgcode", None) in (None, "57P01", "57P02", "57P03"):
            return RollbackError("the database connection was lost during %s (%s); the transaction was not committed, so "
                                 "none of the downgrade was applied" % (phase, message), connection_lost=True)
        return RollbackError("%s failed: %s; rolled back, nothing was changed" % (phase, message),
                             sqlstate=getattr(exc, "pgcode", None))

    # -- digests

    def ensure_own_schema(self, cur):
        cur.execute("SAVEPOINT governed_own_schema")
        try:
            cur.execute("CREATE SCHEMA IF NOT EXISTS %s" % OWN_SCHEMA)
            cur.execute("CREATE TABLE IF NOT EXISTS %s.schema_digests (tool text NOT NULL, version text NOT NULL, "
                        "schema_sha256 text NOT NULL, snapshot jsonb NOT NULL, recorded_at timestamptz NOT NULL "
                        "DEFAULT now(), recorded_by text, PRIMARY KEY (tool, version))" % OWN_SCHEMA)
            cur.execute("CREATE TABLE IF NOT EXISTS %s.downgrades (id bigserial PRIMARY KEY, at timestamptz NOT NULL "
                        "DEFAULT now(), tool text NOT NULL, from_version text, to_version text, reverted jsonb NOT NULL, "
                        "backup_location text, backup_sha256 text, data_loss jsonb, non_transactional jsonb, actor text, "
                        "incident_id text, reason text, schema_sha256_before text, schema_sha256_after text)"
                        % OWN_SCHEMA)
            cur.execute("RELEASE SAVEPOINT governed_own_schema")
            return True
        except _pg.psycopg2.Error as exc:
            if getattr(exc, "pgcode", None) in ("55P03", "57014") or self.conn.closed:
                raise
            cur.execute("ROLLBACK TO SAVEPOINT governed_own_schema")
            self.module.warn("schema digests are not recorded (cannot create schema %s: %s); schema_drift cannot be "
                             "told later" % (OWN_SCHEMA, str(exc).strip().splitlines()[0]))
            return False

    def recorded_snapshot(self, cur, version):
        cur.execute("SELECT to_regclass(%s)", ("%s.schema_digests" % OWN_SCHEMA,))
        if cur.fetchone()[0] is None or version is None:
            return None, None
        cur.execute("SELECT snapshot, recorded_at::text FROM %s.schema_digests WHERE tool = %%s AND version = %%s"
                    % OWN_SCHEMA, (self.project.tool.name, str(version)))
        row = cur.fetchone()
        return (row[0], row[1]) if row else (None, None)

    def record_digest(self, cur, version, snapshot):
        if version is None:
            return
        cur.execute("INSERT INTO %s.schema_digests (tool, version, schema_sha256, snapshot, recorded_by) VALUES (%%s, "
                    "%%s, %%s, %%s, %%s) ON CONFLICT (tool, version) DO NOTHING" % OWN_SCHEMA,
                    (self.project.tool.name, str(version), mig.schema_digest(snapshot), _common.canonical_json(snapshot),
                     self.params.get("actor") or "governed.rollback"))

    def record_downgrade(self, cur, entries, non_transactional, digest_after):
        params = self.params
        cur.execute("INSERT INTO %s.downgrades (tool, from_version, to_version, reverted, backup_location, "
                    "backup_sha256, data_loss, non_transactional, actor, incident_id, reason, schema_sha256_before, "
                    "schema_sha256_after) VALUES (%%s, %%s, %%s, %%s, %%s, %%s, %%s, %%s, %%s, %%s, %%s, %%s, %%s)"
                    % OWN_SCHEMA,
                    (self.project.tool.name, self.plan.from_version, self.plan.to_version,
                     _common.canonical_json(self.plan.revert), self.result.get("backup_location"),
                     self.result.get("backup_sha256"), _common.canonical_json(entries),
                     _common.canonical_json(non_transactional), params.get("actor"), params.get("incident_id"),
                     params.get("reason"), self.result.get("schema_sha256_before"), digest_after))

    # -- the run

    def run(self):
        params = self.params
        result = self.result
        self.connect()
        self.set_phase("plan")
        self.project, self.plan, snapshot_before = self.read()
        digest_before = self.describe_plan(self.project, self.plan, snapshot_before)
        if self.plan.skipped_reason:
            result["skipped_reason"] = self.plan.skipped_reason
            result["approval_facts"] = {"data_loss": False, "non_transactional": False}
            if self.module._diff:
                text = mig.snapshot_text(snapshot_before)
                result["diff"] = {"before": text, "after": text}
            return
        self.steps = self.project.steps(self.plan)
        result["migrations_reverted"] = [s.summary() for s in self.steps]
        flagged = [dict(f, version=s["version"], file=s["file"]) for s in result["migrations_reverted"]
                   for f in s["non_transactional"]]
        would_refuse = []
        if flagged:
            message = ("non-transactional statements in the downgrade: %s; they cannot run inside the downgrade's "
                       "transaction. Set allow_non_transactional=true to run them on their own (a failure after one "
                       "leaves that migration half-applied)" % "; ".join("%s line %s: %s" % (f["file"], f["line"], f["reason"])
                                                                         for f in flagged))
            if not params["allow_non_transactional"]:
                if not self.module.check_mode:
                    raise Refused(message, "non_transactional", non_transactional_statements=flagged)
                would_refuse.append(message)
        if self.project.tool.name == "alembic" and flagged and params["allow_non_transactional"]:
            raise Refused("allow_non_transactional is not supported for Alembic projects (use Alembic's "
                          "autocommit_block); nothing was changed", "non_transactional")

        own_key = mig.own_lock_id(self.conn.info.dbname)
        keys = [(own_key, "the downgrade lock of database %s" % self.conn.info.dbname)]
        if self.project.tool.style == "golang-migrate":
            keys.append((mig.golang_migrate_lock_id(self.conn.info.dbname), "golang-migrate's lock"))
        self.set_phase("lock")
        for key, what in keys:
            take_advisory_lock(self.conn, key, params["advisory_lock_timeout"], what)
        # Under the lock: read again, the plan must not have moved.
        project, plan, snapshot_before = self.read()
        if (plan.from_version, plan.to_version, plan.revert) != (self.plan.from_version, self.plan.to_version,
                                                                 self.plan.revert):
            raise Refused("the database changed while waiting for the lock (now at %s); re-plan" % plan.from_version,
                          "changed")
        digest_before = mig.schema_digest(snapshot_before)
        result["schema_sha256_before"] = digest_before
        result["binding"] = mig.binding(self.plan.from_version, digest_before)
        mismatch = mig.binding_mismatch(params.get("expected_binding"), result["binding"])
        if mismatch and not self.module.check_mode:
            approved = dict((k, (params["expected_binding"] or {}).get(k)) for k in mismatch)
            now = dict((k, result["binding"].get(k)) for k in mismatch)
            raise Refused("the database changed since it was approved: re-plan (%s: approved %s, now %s); nothing was "
                          "changed" % (", ".join(mismatch), approved, now), "binding_mismatch")

        if not self.module.check_mode:
            # Before touching anything (the rehearsal too): the verified backup.
            self.set_phase("backup")
            data_tables = catalog_identities(self.conn.cursor())["data_tables"]
            path, sha, details = take_backup(params, self.conn.info.dbname, self.plan.from_version, data_tables,
                                             self.secrets)
            result.update(backup_location=path, backup_sha256=sha, backup=details)
            self.update_receipt(None, None)

        entries, lossy, skipped, snapshot_rehearsed, dropped = self.rehearse()
        result.update(data_loss=entries, data_lost=lossy)
        result["approval_facts"] = {"data_loss": lossy, "non_transactional": bool(flagged)}
        self.update_receipt(entries, lossy)
        loss_message = ("the downgrade drops data: %s. Set accept_data_loss=true to downgrade anyway (the backup keeps "
                        "it)" % mig.describe_loss(entries))
        if lossy and not params["accept_data_loss"]:
            if not self.module.check_mode:
                raise Refused(loss_message + "; nothing was changed (the backup taken is kept)", "data_loss")
            would_refuse.append(loss_message)
        if self.module.check_mode:
            result["would_refuse"] = would_refuse
            result["changed"] = True
            result["schema_sha256_after"] = mig.schema_digest(snapshot_rehearsed)
            self.update_refs()
            recorded, when = self.read_baseline()
            result["drift_baseline"] = when
            result["schema_drift"] = mig.schema_diff(recorded, snapshot_rehearsed) if recorded is not None else []
            self.diff(snapshot_before, snapshot_rehearsed)
            result["plan"] = {"migrations": result["migrations_reverted"], "selected_by": self.plan.selected_by,
                              "rehearsal": "applied inside a transaction and rolled back; nothing was changed"}
            return

        non_tx = bool(flagged) and params["allow_non_transactional"]
        if non_tx:
            snapshot_after, ran = self.downgrade_in_pieces(entries)
        else:
            snapshot_after, ran = self.downgrade_in_one_transaction(dropped)
        result["non_transactional"] = ran
        result["changed"] = True
        result["schema_sha256_after"] = mig.schema_digest(snapshot_after)
        self.update_refs()
        self.diff(snapshot_before, snapshot_after)

    def read_baseline(self):
        cur = self.conn.cursor()
        try:
            return self.recorded_snapshot(cur, self.plan.to_version)
        finally:
            if not self.conn.autocommit:
                self.conn.rollback()

    def diff(self, before, after):
        if self.module._diff:
            self.result["diff"] = {"before_header": "schema at %s" % (self.plan.from_version or "base"),
                                   "after_header": "schema at %s" % (self.plan.to_version or "base"),
                                   "before": mig.snapshot_text(before), "after": mig.snapshot_text(after)}

    def check_unchanged(self, cur):
        """Inside the downgrade's transaction: the bookkeeping still says what the plan was made from."""
        project = Project(self.project.tool, self.params["migrations_dir"], cur, self.conn.server_version)
        if project.applied.current != self.plan.from_version:
            raise Refused("the database moved from %s to %s since the plan (during the backup?); re-plan, nothing was "
                          "changed" % (self.plan.from_version, project.applied.current), "changed")
        if self.project.tool.name == "alembic":
            return
        self.project.rows = project.rows

    def downgrade_in_one_transaction(self, rehearsed):
        result = self.result
        self.set_phase("downgrade")
        cur = self.begin()
        try:
            self.check_unchanged(cur)
            before = catalog_identities(cur)
            # Freeze and recount what the rehearsal found dropped: a loss that appeared since is refused too.
            entries, lossy = self.count_losses(cur, rehearsed, before["names"], lock=True)
            if lossy and not self.params["accept_data_loss"]:
                raise Refused("the downgrade drops data written since the rehearsal: %s; nothing was changed. Set "
                              "accept_data_loss=true to downgrade anyway" % mig.describe_loss(entries), "data_loss",
                              data_loss=entries, data_lost=True)
            recording = self.params["record_digests"] and self.ensure_own_schema(cur)
            snapshot_before = schema_snapshot(cur)
            if recording:
                self.record_digest(cur, self.plan.from_version, snapshot_before)
            self.apply(cur, self.plan.to_version)
            after = catalog_identities(cur)
            dropped = mig.dropped_objects(before, after)
            unexpected = sorted(set(x["table"] for x in dropped["tables"]) - set(x["table"] for x in rehearsed["tables"])) + \
                sorted(set("%s.%s" % (x["table"], x["column"]) for x in dropped["columns"])
                       - set("%s.%s" % (x["table"], x["column"]) for x in rehearsed["columns"]))
            if unexpected:
                raise Refused("the downgrade dropped %s, which the rehearsal did not; rolled back, nothing was changed"
                              % ", ".join(unexpected), "changed")
            snapshot_after = schema_snapshot(cur)
            result.update(data_loss=entries, data_lost=lossy)
            self.update_receipt(entries, lossy)
            recorded, when = self.recorded_snapshot(cur, self.plan.to_version) if recording else (None, None)
            result["drift_baseline"] = when
            result["schema_drift"] = mig.schema_diff(recorded, snapshot_after) if recorded is not None else []
            if recording:
                self.record_downgrade(cur, entries, [], mig.schema_digest(snapshot_after))
        except _pg.psycopg2.Error as exc:
            self.safe_rollback()
            raise self.connection_error(exc, "the downgrade")
        except BaseException:
            self.safe_rollback()
            raise
        try:
            self.commit()
        except _pg.psycopg2.Error as exc:
            raise RollbackError("COMMIT of the downgrade failed (%s): whether it was applied is unknown; read %s before "
                                "anything else" % (str(exc).strip(), self.project.tool.table))
        return snapshot_after, []

    def safe_rollback(self):
        try:
            if not self.conn.closed:
                self.rollback()
        except Exception:  # pylint: disable=broad-except  # the connection may be gone; nothing was committed
            pass

    def downgrade_in_pieces(self, entries):
        """allow_non_transactional: migration by migration; the statements that cannot run in a transaction on their
        own, the others in transactions between them. golang-migrate's row is marked dirty while a migration runs."""
        ran = []
        tool = self.project.tool
        sql = _pg.sql
        remaining = list(self.project.applied.versions)
        if self.params["record_digests"]:
            cur = self.begin()
            if self.ensure_own_schema(cur):
                self.record_digest(cur, self.plan.from_version, schema_snapshot(cur))
            self.commit()
        self.set_phase("downgrade")
        cur = self.conn.cursor()
        for step in self.steps:
            if tool.style == "golang-migrate":
                cur.execute(sql.SQL("UPDATE {} SET dirty = true").format(sql.Identifier(tool.table)))
            flagged = dict(step.analysis.non_transactional)
            segment = []
            for index, statement in enumerate(step.analysis.statements + [None]):
                if statement is not None and index not in flagged:
                    segment.append(statement)
                    continue
                if segment:
                    cur = self.begin()
                    try:
                        for item in segment:
                            self.execute(cur, step, item)
                    except BaseException:
                        self.safe_rollback()
                        raise self.half_applied(step, ran)
                    self.commit()
                    segment = []
                if statement is not None:
                    cur = self.conn.cursor()
                    try:
                        cur.execute(statement.text)
                    except _pg.psycopg2.Error as exc:
                        raise self.half_applied(step, ran, exc)
                    ran.append({"version": step.version, "file": step.file, "line": statement.line,
                                "statement": statement.text[:200], "reason": flagged[index]})
            remaining = [v for v in remaining if not mig.same_version(v, step.version)]
            cur = self.begin()
            self.record_revert(cur, step, remaining[-1] if remaining else None)
            self.commit()
        cur = self.begin()
        snapshot_after = schema_snapshot(cur)
        if self.params["record_digests"] and self.ensure_own_schema(cur):
            recorded, when = self.recorded_snapshot(cur, self.plan.to_version)
            self.result["drift_baseline"] = when
            self.result["schema_drift"] = mig.schema_diff(recorded, snapshot_after) if recorded is not None else []
            self.record_downgrade(cur, entries, ran, mig.schema_digest(snapshot_after))
        self.commit()
        return snapshot_after, ran

    def half_applied(self, step, ran, exc=None):
        detail = (str(exc).strip().splitlines() or [""])[0] if exc is not None else "see the error above"
        return RollbackError("the downgrade failed in migration %s after statements outside a transaction had run (%s); "
                             "the migrations before it are reverted and this one is half-applied%s. Restore from the "
                             "backup %s or repair by hand" % (step.version, detail,
                                                              " (golang-migrate row left dirty)"
                                                              if self.project.tool.style == "golang-migrate" else "",
                                                              self.result.get("backup_location")),
                             non_transactional=ran, half_applied=step.version)


def main():
    own = dict(
        migrations_dir=dict(type="path", required=True, aliases=["script_location"]),
        tool=dict(type="str", default="auto", choices=["auto", "native", "alembic", "flyway"]),
        target_version=dict(type="str"),
        steps=dict(type="int"),
        backup_dir=dict(type="path", required=True),
        backup_format=dict(type="str", default="custom", choices=["custom", "directory"]),
        backup_jobs=dict(type="int", default=1),
        client_bin_dir=dict(type="path"),
        lock_timeout=dict(type="float", default=5),
        statement_timeout=dict(type="float", default=600),
        advisory_lock_timeout=dict(type="float", default=30),
        allow_non_transactional=dict(type="bool", default=False),
        accept_data_loss=dict(type="bool", default=False),
        expected_binding=dict(type="dict"),
        flyway_undo_type=dict(type="str", default="UNDO_SQL", choices=["UNDO_SQL", "DELETE"]),
        record_digests=dict(type="bool", default=True),
    )
    module = AnsibleModule(argument_spec=_argspec.compose(own, _argspec.PG_CONN, _argspec.RUNBOOK_CONTEXT),
                           mutually_exclusive=[("target_version", "steps")], supports_check_mode=True)
    started = time.monotonic()
    result = {"changed": False, "skipped_reason": None, "backup_location": None, "backup_sha256": None,
              "schema_drift": [], "drift_baseline": None, "non_transactional": [], "approval_facts": {},
              "receipt_fields": {}, "duration": 0.0}
    run = Downgrade(module, result)
    try:
        run.run()
    except Exception as exc:  # pylint: disable=broad-except  # every failure ends through fail_from_exception
        if not isinstance(exc, RollbackError) and isinstance(exc, getattr(getattr(_pg, "psycopg2", None), "Error", ())):
            exc = run.connection_error(exc, "reading the database")
        run.close()
        result["duration"] = round(time.monotonic() - started, 3)
        if isinstance(exc, RollbackError) and result.get("receipt_fields"):
            result["receipt_fields"]["outcome"] = "failed"
        _common.fail_from_exception(module, exc, **result)
    run.close()
    result["duration"] = round(time.monotonic() - started, 3)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
