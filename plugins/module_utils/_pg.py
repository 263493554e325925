# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL, in one place: connections from the collection's connection options (``_argspec.PG_CONN``), the
environment for the client programs, server and client version probes, and the migration bookkeeping tables the
collection knows."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import traceback

from ansible_collections.governed.rollback.plugins.module_utils import _proc
from ansible_collections.governed.rollback.plugins.module_utils._common import RollbackError

PSYCOPG2_IMP_ERR = None
try:
    import psycopg2
    import psycopg2.extensions
    from psycopg2 import sql  # noqa: F401  pylint: disable=unused-import  # re-exported for callers

    HAS_PSYCOPG2 = True
except ImportError:  # pragma: no cover - exercised only without the library
    PSYCOPG2_IMP_ERR = traceback.format_exc()
    HAS_PSYCOPG2 = False

# Bookkeeping tables of the migration tools the collection recognises, in detection order.
MIGRATION_TABLES = ("schema_migrations", "alembic_version", "flyway_schema_history", "django_migrations",
                    "knex_migrations", "goose_db_version")

# module option -> libpq environment variable
_ENV = (("login_host", "PGHOST"), ("login_port", "PGPORT"), ("login_user", "PGUSER"),
        ("login_password", "PGPASSWORD"), ("db", "PGDATABASE"))


class PgError(RollbackError):
    """A PostgreSQL problem phrased for an operator (never with the password)."""


def connection_kwargs(params, application_name):
    kwargs = dict(host=params.get("login_host"), port=params.get("login_port"), user=params.get("login_user"),
                  password=params.get("login_password"), dbname=params.get("db"), connect_timeout=10,
                  application_name=application_name)
    return dict((k, v) for k, v in kwargs.items() if v not in (None, ""))


def describe_target(params):
    """host:port/database as user, for messages (no password)."""
    return "%s:%s database %s as %s" % (params.get("login_host") or "(default)", params.get("login_port") or "(default)",
                                        params.get("db") or "(default)", params.get("login_user") or "(default)")


def connect(params, application_name="governed.rollback", readonly=False, repeatable_read=False):
    """A psycopg2 connection from the module's connection options (libpq reads PG* for what is not given)."""
    if not HAS_PSYCOPG2:
        raise PgError("psycopg2 is required to talk to PostgreSQL; install psycopg2-binary")
    try:
        conn = psycopg2.connect(**connection_kwargs(params, application_name))
    except psycopg2.Error as exc:
        raise PgError("cannot connect to PostgreSQL %s: %s; check login_host/login_port/login_user/login_password/db "
                      "(or PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE)" % (describe_target(params), str(exc).strip()))
    if readonly or repeatable_read:
        # One snapshot for every read of the run: the numbers are consistent with each other.
        conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ if repeatable_read
                         else None, readonly=readonly)
    return conn


def client_env(params, base=None):
    """The environment for pg_dump/pg_restore/psql: the password travels here, never on a command line."""
    env = dict(os.environ if base is None else base)
    for option, var in _ENV:
        if params.get(option) not in (None, ""):
            env[var] = str(params[option])
    return env


def server_version(conn):
    """The server's version as an integer (150018 for 15.18)."""
    return conn.server_version


def client_program(name, bindir=None):
    """Path of a PostgreSQL client program (from ``bindir`` when given, else PATH), or a PgError saying what to
    install."""
    path = shutil.which(name, path=bindir) if bindir else shutil.which(name)
    if not path:
        raise PgError("%s not found %s; install the PostgreSQL client programs (postgresql-client) of the "
                      "server's major version or newer" % (name, "in %s" % bindir if bindir else "on PATH"))
    return path


_HELP_CACHE = {}


def client_supports(program, flag):
    """Whether a client program's --help lists a flag (pg_dump's --restrict-key came in 15.14 / 17.6)."""
    if program not in _HELP_CACHE:
        try:
            done = _proc.run([program, "--help"], timeout=30)
            _HELP_CACHE[program] = done.value if done.rc == 0 else ""
        except _proc.ProcError:
            _HELP_CACHE[program] = ""
    return flag in _HELP_CACHE[program]


# --------------------------------------------------------------------------- streaming primary keys

# Key column types whose Python values (as psycopg2 returns them) order as PostgreSQL orders them, text types once
# sorted with COLLATE "C" (byte order of UTF-8 = code point order). Other types are compared as their text, sorted
# with COLLATE "C" on both sides.
NATIVE_ORDER_TYPES = ("smallint", "integer", "bigint", "numeric", "text", "character varying", "character", "uuid",
                      "date", "timestamp without time zone", "timestamp with time zone", "boolean", "bytea", "oid")

_TABLES_SQL = (
    "SELECT n.nspname, c.relname, (SELECT array_agg(array[a.attname::text, format_type(a.atttypid, NULL), "
    "(a.attcollation <> 0)::text, format('%I', a.attname)] ORDER BY array_position(i.indkey::int2[], a.attnum)) FROM pg_index i JOIN "
    "pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) WHERE i.indrelid = c.oid AND "
    "i.indisprimary) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND "
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' AND NOT c.relispartition "
    "ORDER BY 1, 2")


def keyed_tables(cur):
    """Every user table: ``{"schema.table": {"schema", "name", "key": [(column, type, collatable, quoted), ...] or None}}``
    (partitions are read through their parent)."""
    cur.execute(_TABLES_SQL)
    out = {}
    for schema, name, key in cur.fetchall():
        columns = [(c, t, f == "true", q) for c, t, f, q in key] if key else None
        out["%s.%s" % (schema, name)] = {"schema": schema, "name": name, "key": columns}
    return out


def count_rows(cur, schema, name):
    cur.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name)))
    return cur.fetchone()[0]


def _key_expression(column, type_name, collatable, _quoted=None):
    ident = sql.Identifier(column)
    if type_name in NATIVE_ORDER_TYPES:
        return sql.SQL("{} COLLATE \"C\"").format(ident) if collatable else ident
    return sql.SQL("({}::text) COLLATE \"C\"").format(ident)


def _plain_value(value):
    return bytes(value) if isinstance(value, memoryview) else value


def stream_keys(conn, schema, name, key, itersize=10000, cursor_name="governed_rollback_keys"):
    """The table's primary keys in increasing order, as tuples of values, read through a server-side cursor
    ``itersize`` rows at a time (memory does not grow with the table). ``key`` as ``keyed_tables`` gives it."""
    exprs = [_key_expression(*column) for column in key]
    query = sql.SQL("SELECT {} FROM {}.{} ORDER BY {}").format(
        sql.SQL(", ").join(exprs), sql.Identifier(schema), sql.Identifier(name), sql.SQL(", ").join(exprs))
    binary = any(column[1] == "bytea" for column in key)
    cur = conn.cursor(name=cursor_name)
    cur.itersize = max(int(itersize), 1)
    try:
        cur.execute(query)
        if binary:
            for row in cur:
                yield tuple(_plain_value(v) for v in row)
        else:
            yield from cur  # psycopg2 rows are tuples already
    finally:
        cur.close()


def key_labels(conn, schema, name, key, keys):
    """PostgreSQL's row text of the primary key (``(42)``, ``(7,eu-west)``) for each of ``keys`` (as
    ``stream_keys`` yields them), looked up one by one through the key's order expressions."""
    if not keys:
        return []
    exprs = [_key_expression(*column) for column in key]
    query = sql.SQL("SELECT (ROW({}))::text FROM {}.{} WHERE ({}) = ({})").format(
        sql.SQL(", ").join(sql.Identifier(c[0]) for c in key), sql.Identifier(schema), sql.Identifier(name),
        sql.SQL(", ").join(exprs), sql.SQL(", ").join(sql.Placeholder() * len(key)))
    cur = conn.cursor()
    labels = []
    for values in keys:
        cur.execute(query, tuple(psycopg2.Binary(v) if isinstance(v, bytes) else v for v in values))
        row = cur.fetchone()
        labels.append(row[0] if row else repr(values))
    return labels
