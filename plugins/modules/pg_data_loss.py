#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pg_data_loss
short_description: Compare two copies of a PostgreSQL database by primary key - the rows a restore lost
version_added: 0.1.0
author: governed.rollback maintainers (@governed)
description:
  - The runbook's "assess data loss" after a restore from backup. Compares the database kept from before the restore
    (O(kept_db)) with the restored one (O(db)), table by table, and counts the rows only in the kept one (written
    after the backup, so lost by the restore) and the rows only in the restored one, with up to O(sample_keys) of
    their keys.
  - Each table with a primary key is compared by a sort-merge of two server-side cursors, one per database, ordered
    by the primary key and fetched O(itersize) rows at a time, so memory does not grow with the table. Text key
    columns are ordered with C(COLLATE "C") so that PostgreSQL's order and the module's comparison agree; key columns
    of other types than integers, numeric, text, uuid, date/time, boolean and bytea are compared as their text. A key
    stream found out of order fails the task rather than report a wrong count.
  - Tables without a primary key (or whose primary key differs between the two databases) are compared by row count
    and listed in RV(tables_without_primary_key); none is skipped.
  - Both databases are read in one read-only C(REPEATABLE READ) snapshot each. Nothing is written.
options:
  db:
    description:
      - The restored database (the one now in service). Falls back to E(PGDATABASE).
    type: str
    aliases: [login_db]
  kept_db:
    description: The database kept from before the restore (for example C(<name>_pre_restore_<id>)), on the same server.
    type: str
    required: true
  sample_keys:
    description: How many keys to report per table and side (in key order); V(0) for counts only.
    type: int
    default: 20
  itersize:
    description: Rows fetched per round trip from each server-side cursor.
    type: int
    default: 10000
extends_documentation_fragment:
  - governed.rollback.postgres
  - governed.rollback.attributes
  - governed.rollback.attributes.ACTIONGROUP_POSTGRES
attributes:
  check_mode:
    support: full
    details: It only reads; check mode runs the same comparison and reports it.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Never changes anything; C(changed) is always false.
notes:
  - Writes made to either database while it is read are not seen (each is read in one snapshot).
  - The keys are shown as PostgreSQL's row text of the primary key columns, for example C((42)) or C((7,eu-west)).
seealso:
  - module: governed.rollback.pg_schema_downgrade
"""

EXAMPLES = r"""
- name: The rows the restore lost (only in the database it replaced)
  governed.rollback.pg_data_loss:
    db: aureus_metadata
    kept_db: aureus_metadata_pre_restore_20240115t103045z_1a2b3c
    sample_keys: 100
  register: loss

- name: Say what was lost
  ansible.builtin.debug:
    msg: "{{ loss.rows_lost }} row(s) lost: {{ loss.tables | map(attribute='table') | join(', ') }}"
"""

RETURN = r"""
database:
  description: The restored database compared.
  returned: always
  type: str
kept_database:
  description: The kept database compared.
  returned: always
  type: str
tables:
  description: The tables with rows only in the kept database - C(table), C(primary_key) (its columns, null when
    compared by row count), C(rows_only_in_kept), C(keys) (up to O(sample_keys)) and C(keys_truncated).
  returned: always
  type: list
  elements: dict
  sample: [{table: public.datasets, primary_key: id, rows_only_in_kept: 2, keys: ["(7)", "(8)"], keys_truncated: false}]
rows_lost:
  description: Rows only in the kept database, all tables together.
  returned: always
  type: int
rows_only_in_restored:
  description: Rows only in the restored database, all tables together.
  returned: always
  type: int
tables_without_primary_key:
  description: The tables compared by row count only (no primary key, or not the same one in both databases).
  returned: always
  type: list
  elements: str
comparison:
  description:
    - Every table of either database - C(table), C(primary_key), C(rows_kept), C(rows_restored),
      C(rows_only_in_kept), C(rows_only_in_restored), C(keys), C(keys_truncated), C(keys_only_in_restored),
      C(keys_only_in_restored_truncated), and C(compared_by) for the tables compared by row count.
  returned: always
  type: list
  elements: dict
duration:
  description: Seconds the comparison took.
  returned: always
  type: float
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.governed.rollback.plugins.module_utils import _argspec, _common, _pg
from ansible_collections.governed.rollback.plugins.module_utils import _keymerge

APP = "governed.rollback.pg_data_loss"


def _key_text(key):
    """The key's columns as the report names them (quoted where SQL needs it): ``id`` or ``region, "Id"``."""
    return ", ".join(column[3] for column in key)


def compare_table(kept_conn, restored_conn, table, kept, restored, sample, itersize):
    """One table present in at least one database, compared by its primary key (``kept``/``restored`` as
    ``_pg.keyed_tables`` describes the table in each, None where it is missing)."""
    key = (kept or restored)["key"]
    streams, named = [], []
    for conn, info, cursor_name in ((kept_conn, kept, "governed_rollback_kept"),
                                    (restored_conn, restored, "governed_rollback_restored")):
        streams.append(_pg.stream_keys(conn, info["schema"], info["name"], key, itersize, cursor_name) if info
                       else iter(()))
        named.append((conn, info))
    merged = _keymerge.merge_keys(streams[0], streams[1], sample)
    labels = []
    for (conn, info), keys in zip(named, (merged["keys_only_in_kept"], merged["keys_only_in_restored"])):
        labels.append(_pg.key_labels(conn, info["schema"], info["name"], key, keys) if info else [])
    return _keymerge.table_entry(table, _key_text(key), merged, sample, labels[0], labels[1])


def compare(kept_conn, restored_conn, sample, itersize):
    """Every table of both databases, compared (see ``_keymerge``)."""
    kept_tables = _pg.keyed_tables(kept_conn.cursor())
    restored_tables = _pg.keyed_tables(restored_conn.cursor())
    entries = []
    for table in sorted(set(kept_tables) | set(restored_tables)):
        kept, restored = kept_tables.get(table), restored_tables.get(table)
        key = (kept or restored)["key"]
        same_key = kept is None or restored is None or kept["key"] == restored["key"]
        if key and same_key:
            entries.append(compare_table(kept_conn, restored_conn, table, kept, restored, sample, itersize))
            continue
        entry = _keymerge.count_entry(
            table, _pg.count_rows(kept_conn.cursor(), kept["schema"], kept["name"]) if kept else 0,
            _pg.count_rows(restored_conn.cursor(), restored["schema"], restored["name"]) if restored else 0)
        if key and not same_key:
            entry["compared_by"] = "row count (the primary key differs between the two databases)"
        entries.append(entry)
    return entries


def main():
    own = dict(
        kept_db=dict(type="str", required=True),
        sample_keys=dict(type="int", default=20, no_log=False),
        itersize=dict(type="int", default=10000),
    )
    module = AnsibleModule(argument_spec=_argspec.compose(own, _argspec.PG_CONN), supports_check_mode=True)
    params = module.params
    started = time.monotonic()
    result = {"changed": False, "database": params.get("db"), "kept_database": params["kept_db"], "tables": [],
              "rows_lost": 0, "rows_only_in_restored": 0, "tables_without_primary_key": [], "comparison": []}
    conns = []
    error = None
    try:
        if params["sample_keys"] < 0 or params["itersize"] < 1:
            raise _common.RollbackError("sample_keys must be 0 or more and itersize 1 or more (got %s and %s)"
                                        % (params["sample_keys"], params["itersize"]))
        restored_conn = _pg.connect(params, APP, readonly=True, repeatable_read=True)
        conns.append(restored_conn)
        result["database"] = restored_conn.info.dbname
        kept_conn = _pg.connect(dict(params, db=params["kept_db"]), APP, readonly=True, repeatable_read=True)
        conns.append(kept_conn)
        if kept_conn.info.dbname == restored_conn.info.dbname:
            raise _common.RollbackError("kept_db and db are the same database (%s); name the database kept from before "
                                        "the restore" % params["kept_db"])
        entries = compare(kept_conn, restored_conn, params["sample_keys"], params["itersize"])
        result.update(_keymerge.summary(entries))
    except Exception as exc:  # pylint: disable=broad-except  # every failure ends through fail_from_exception
        driver_error = getattr(getattr(_pg, "psycopg2", None), "Error", ())
        error = exc
        if not isinstance(exc, _common.RollbackError) and isinstance(exc, driver_error):
            error = _pg.PgError("reading the databases failed: %s" % str(exc).strip())
    finally:
        for conn in conns:
            conn.close()
        result["duration"] = round(time.monotonic() - started, 3)
    if error is not None:
        _common.fail_from_exception(module, error, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
