# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Mirrors PG_CONN in plugins/module_utils/_argspec.py.
    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - PostgreSQL host name, IP address or Unix socket directory.
      - Falls back to E(PGHOST), which AWX's PostgreSQL credential (and libpq) use.
    type: str
  login_port:
    description: PostgreSQL port. Falls back to E(PGPORT).
    type: int
  login_user:
    description: PostgreSQL user. Falls back to E(PGUSER).
    type: str
  login_password:
    description:
      - PostgreSQL password. Falls back to E(PGPASSWORD).
      - Never logged; passed to C(pg_dump) and C(pg_restore) in their environment, never on a command line.
    type: str
  db:
    description: PostgreSQL database. Falls back to E(PGDATABASE).
    type: str
    aliases: [login_db]
requirements:
  - psycopg2 (or psycopg2-binary) >= 2.9
"""
