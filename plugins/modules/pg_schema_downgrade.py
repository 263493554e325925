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
  backup_compression:
    description:
      - C(pg_dump --compress) level of the backup, V(0) (none) to V(9) (smallest). The default V(1) is gzip's fastest
        level - on a database of repetitive text it is nearly as small as pg_dump's own default (6) and several times
        faster, which is what keeps the verified backup close to a plain dump's time on a loaded machine.
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
  description: How the backup was taken and verified - C(format), C(compression), C(bytes), C(toc_entries),
    C(table_data_entries), C(verified) (C(pg_restore --list) and a full read passed), C(seconds).
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
current_ref:
  description: The schema before the downgrade, named by its digest (C(sha256:) + RV(schema_sha256_before)); the
    receipt's C(current_ref).
  returned: when the database was read
  type: str
  sample: sha256:5d41402abc4b2a76b9719d911017c5925d41402abc4b2a76b9719d911017c592
rollback_target_ref:
  description: The schema after the downgrade (after its rehearsal in check mode), C(sha256:) +
    RV(schema_sha256_after); the receipt's C(rollback_target_ref). Null when nothing was downgraded or rehearsed.
  returned: when the database was read
  type: str
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
committed_at:
  description:
    - When the downgrade's COMMIT returned (RFC 3339 UTC, microseconds; the last one with
      O(allow_non_transactional=true)) - the moment of mitigation, after the verified backup. Also in the receipt's
      C(details).
  returned: when the downgrade was committed (not in check mode)
  type: str
  sample: "2026-11-30T15:04:05.123456Z"
duration:
  description: Seconds the task took.
  returned: always
  type: float
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.governed.rollback.plugins.module_utils import _argspec, _common, _pg
from ansible_collections.governed.rollback.plugins.module_utils._common import RollbackError
from ansible_collections.governed.rollback.plugins.module_utils._pg_downgrade import Downgrade


def main():
    own = dict(
        migrations_dir=dict(type="path", required=True, aliases=["script_location"]),
        tool=dict(type="str", default="auto", choices=["auto", "native", "alembic", "flyway"]),
        target_version=dict(type="str"),
        steps=dict(type="int"),
        backup_dir=dict(type="path", required=True),
        backup_format=dict(type="str", default="custom", choices=["custom", "directory"]),
        backup_jobs=dict(type="int", default=1),
        backup_compression=dict(type="int", default=1),
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
