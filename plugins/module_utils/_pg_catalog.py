# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The PostgreSQL catalog as ``pg_schema_downgrade`` reads it: the schema snapshot (one line per table, column,
constraint, index, view, sequence, function, type, trigger, extension, schema) its digest, drift and diff are computed
from, tables and columns by OID (what a downgrade drops), and the migration bookkeeping tables in the search path.
Everything in the module's own schema (``OWN_SCHEMA``) is left out."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.governed.rollback.plugins.module_utils import _pg
from ansible_collections.governed.rollback.plugins.module_utils import _migrations as mig

OWN_SCHEMA = "governed_rollback"

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
