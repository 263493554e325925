# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A migration project as it is on disk and in the database (the I/O side of ``_migrations``): the applied state read
from the tool's bookkeeping table, the migration files found under ``migrations_dir`` (or Alembic's script directory,
through Alembic's own API), and the Steps of a downgrade plan with their SQL read and analysed."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.governed.rollback.plugins.module_utils import _migrations as mig
from ansible_collections.governed.rollback.plugins.module_utils._common import Refused, RollbackError, list_files
from ansible_collections.governed.rollback.plugins.module_utils._pg_catalog import fetch_rows


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
