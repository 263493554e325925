# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One small interface over the receipt ledger's backends.

A backend has ``kind``, ``location()`` and ``head_location()`` (for messages and return values, never with a
password), ``append(receipt, signer, trusted_keys, check_mode, envelope_path, head_mirror, verify, s3_heads)`` with
append_receipt's return values, and ``verify(keys, witnesses, head_mirror, envelopes, s3_heads)`` with
verify_ledger's result. ``open_ledger`` picks the backend from the module's options:

- ``file`` (the default): the JSONL file, its ``.head`` and the envelopes beside it (_receipt, unchanged);
- ``postgresql``: two append-only tables (_ledger_pg), chosen by ``ledger: postgresql://…`` or
  ``ledger_backend: postgresql`` with the PostgreSQL connection options.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.governed.rollback.plugins.module_utils import _ledger_pg
from ansible_collections.governed.rollback.plugins.module_utils._receipt import (
    LedgerError,
    append_receipt,
    head_path,
    verify_ledger,
)

BACKENDS = ("file", "postgresql")


class FileLedger(object):
    """The JSONL file ledger, exactly as _receipt writes and verifies it."""

    kind = "file"

    def __init__(self, path):
        self.path = path

    def location(self):
        return self.path

    def head_location(self):
        return head_path(self.path)

    def append(self, receipt, signer=None, trusted_keys=None, check_mode=False, now=None, envelope_path=None,
               head_mirror=None, verify="tail", s3_heads=None):
        return append_receipt(self.path, receipt, signer=signer, trusted_keys=trusted_keys, check_mode=check_mode,
                              now=now, envelope_path=envelope_path, head_mirror=head_mirror, verify=verify,
                              s3_heads=s3_heads)

    def verify(self, keys=None, witnesses=None, head_mirror=None, envelopes=True, s3_heads=None):
        return verify_ledger(self.path, keys, witnesses=witnesses, head_mirror=head_mirror, envelopes=envelopes,
                             s3_heads=s3_heads)


def backend_of(ledger, ledger_backend):
    """The backend name: ledger_backend when given, else postgresql for a postgresql:// ledger, else file."""
    if ledger_backend:
        if ledger_backend == "file" and _ledger_pg.is_url(ledger):
            raise LedgerError("ledger_backend=file but ledger is a postgresql:// URL; set ledger_backend=postgresql "
                              "or give a file path")
        return ledger_backend
    return "postgresql" if _ledger_pg.is_url(ledger) else "file"


def open_ledger(ledger, ledger_backend=None, pg_params=None, table=None):
    """The backend object for the module's options (PG_CONN's option names in pg_params)."""
    kind = backend_of(ledger, ledger_backend)
    if kind == "file":
        if not ledger:
            raise LedgerError("ledger is required with the file backend: give the path of the ledger (JSONL), or "
                              "ledger_backend=postgresql with the PostgreSQL connection options")
        return FileLedger(ledger)
    if ledger and not _ledger_pg.is_url(ledger):
        raise LedgerError("ledger_backend=postgresql takes ledger as a postgresql:// URL (or no ledger and the "
                          "connection options login_host, login_port, login_user, db); got a path")
    return _ledger_pg.PostgresLedger(pg_params or {}, table=table, url=ledger or None)
