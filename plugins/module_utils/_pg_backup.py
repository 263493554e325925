# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup taken before a downgrade: ``pg_dump`` (custom format, or directory format with parallel jobs), verified
by reading it back - ``pg_restore --list`` lists every table's data and a full read (``pg_restore -f /dev/null``)
succeeds - and its sha256 (for a directory, of its manifest: the sorted ``<sha256>  <file>`` lines)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import threading
import time

from ansible_collections.governed.rollback.plugins.module_utils import _common, _pg, _proc
from ansible_collections.governed.rollback.plugins.module_utils._common import RollbackError, list_files

APP = "governed.rollback.pg_schema_downgrade"


def _sanitize(text):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text))[:80] or "none"


def backup_digest(path):
    if os.path.isdir(path):
        lines = []
        for relative in sorted(list_files(path)):
            lines.append("%s  %s\n" % (_common.sha256_file(os.path.join(path, relative)), relative))
        return _common.sha256_hex("".join(lines)), sum(os.path.getsize(os.path.join(path, r)) for r in list_files(path))
    return _common.sha256_file(path), os.path.getsize(path)


def _digest_into(path, out):
    try:
        out["sha256"], out["bytes"] = backup_digest(path)
    except (IOError, OSError) as exc:
        out["error"] = exc.strerror or str(exc)


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
    compression = params.get("backup_compression")
    if compression is not None:
        if not 0 <= compression <= 9:
            raise RollbackError("backup_compression must be 0 (none) to 9 (smallest), got %s; nothing was changed"
                                % compression)
        argv.append("--compress=%d" % compression)
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
    # The full read and the digest both read every byte: run them side by side (pg_restore is its own process).
    digested = {}
    digester = threading.Thread(target=_digest_into, args=(path, digested))
    digester.start()
    try:
        full = _proc.run([pg_restore, "--file=/dev/null", path], timeout=timeout, known_values=secrets)
    finally:
        digester.join()
    if not full.ok:
        raise RollbackError("the backup %s cannot be read in full (pg_restore -f /dev/null), so the downgrade did not "
                            "start and nothing was changed: %s" % (path, full.explain("pg_restore")),
                            backup_location=path, refused="backup_unreadable")
    if "error" in digested:
        raise RollbackError("cannot read the backup %s to digest it: %s; the downgrade did not start and nothing was "
                            "changed" % (path, digested["error"]), backup_location=path, refused="backup_unreadable")
    sha, size = digested["sha256"], digested["bytes"]
    return path, sha, {"format": params["backup_format"], "compression": compression, "bytes": size, "toc_entries": len(toc),
                       "table_data_entries": len(data_entries), "verified": True,
                       "seconds": round(time.monotonic() - started, 3)}
