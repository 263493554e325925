#!/usr/bin/env python
"""Benchmark: the governed database rollback against the AUREUS runbook's commands, on a database grown to a size.

A throwaway copy of the incident database (the sandbox's migrations up to v0.1.2 and their seed data) is grown with
an ``audit_events`` table of wide rows (plus pii_access_tracking rows, which the downgrade drops) to ``--size-mb``
(default 1024), then, each run on a fresh copy (``CREATE DATABASE ... TEMPLATE``, not timed):

  backup     (a) the verified backup pg_schema_downgrade takes: pg_dump (directory format, --jobs) then
                 pg_restore --list and a full read-back, sha256 of every file  [the module's backup.seconds]
             (b) the runbook's ``pg_dump db > backup.sql``
  downgrade  (a) pg_schema_downgrade's whole run (backup included; its ``duration``) and the downgrade alone
  restore    (a) playbooks/restore-db.yml from the verified backup (new database, verify, swap; approval, evidence
                 and receipt included)
             (b) the runbook's ``dropdb; createdb; psql < backup.sql``

Medians over ``--runs`` (at least 3 for the goals), wall time around each command. Goals (issue 10): the verified
backup at most 0.6x the runbook's plain dump; the restore at most 0.5x the runbook's.

Usage: .venv/bin/python bench/db_rollback.py [--size-mb 1024] [--runs 3] [--jobs 2] [--keep]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.sandbox_env import load_sandbox_env  # noqa: E402  pylint: disable=wrong-import-position
from tests.integration import _playbook as pb  # noqa: E402  pylint: disable=wrong-import-position
from tests.integration.test_pg_schema_downgrade import SANDBOX_MIGRATIONS, execute, opened, sandbox_style, \
    superuser  # noqa: E402  pylint: disable=wrong-import-position

ROW_BYTES = 400  # one audit_events row, roughly, on disk


def pg_settings(env):
    return {"host": env["PGHOST"], "port": int(env["PGPORT"]), "user": env["PGUSER"], "password": env["PGPASSWORD"],
            "socket": os.path.join(ROOT, ".sandbox", "pg", "run"),
            "bindir": env.get("SANDBOX_PG_BINDIR", "/usr/lib/postgresql/15/bin")}


def admin(pg, sql):
    with opened(superuser(pg)) as conn:
        conn.cursor().execute(sql)


def grow(pg, db, size_mb):
    """The incident database with audit_events grown to about size_mb (generated in PostgreSQL, in batches)."""
    admin(pg, "CREATE DATABASE %s OWNER %s" % (db, pg["user"]))
    sandbox_style(pg, db)
    rows = max(1, size_mb * 1024 * 1024 // ROW_BYTES)
    execute(pg, db, "CREATE TABLE audit_events (id bigint PRIMARY KEY, at timestamptz NOT NULL, actor text NOT NULL, "
                    "payload text NOT NULL)")
    batch = 500000
    for start in range(1, rows + 1, batch):
        execute(pg, db, "INSERT INTO audit_events SELECT g, now() - g * interval '1 second', 'user-' || (g %% 9973), "
                        "repeat(md5(g::text), 10) FROM generate_series(%s, %s) g", (start, min(rows, start + batch - 1)))
    execute(pg, db, "INSERT INTO pii_access_tracking (dataset_id, accessed_by) SELECT (SELECT min(id) FROM datasets), "
                    "'user-' || g FROM generate_series(1, 1000) g")
    execute(pg, db, "ANALYZE")
    return execute(pg, db, "SELECT pg_database_size(current_database())")[0][0]


def copy_of(pg, template, name):
    admin(pg, "CREATE DATABASE %s TEMPLATE %s OWNER %s" % (name, template, pg["user"]))
    return name


def drop(pg, name):
    admin(pg, 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)


def drop_like(pg, prefix):
    with opened(superuser(pg)) as conn:
        cur = conn.cursor()
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",))
        names = [row[0] for row in cur.fetchall()]
    for name in names:
        drop(pg, name)


def timed(argv, env=None, stdin=None, stdout=None):
    started = time.monotonic()
    done = subprocess.run(argv, env=env, stdin=stdin, stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE,
                          check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit("bench: %s failed: %s" % (argv[0], done.stderr.decode(errors="replace")[-2000:]))
    return seconds


def client_env(pg):
    env = dict(os.environ)
    env.update(PGHOST=pg["host"], PGPORT=str(pg["port"]), PGUSER=pg["user"], PGPASSWORD=pg["password"])
    return env


def runbook_dump(pg, db, work):
    """(b) pg_dump db > backup.sql"""
    path = os.path.join(work, "runbook-%s.sql" % db)
    with open(path, "wb") as out:
        seconds = timed([os.path.join(pg["bindir"], "pg_dump"), db], env=client_env(pg), stdout=out)
    return seconds, path


def runbook_restore(pg, db, sql_path):
    """(b) dropdb; createdb; psql < backup.sql (the runbook's order: the database is gone while it restores)."""
    env = client_env(pg)
    started = time.monotonic()
    drop(pg, db)
    admin(pg, "CREATE DATABASE %s OWNER %s" % (db, pg["user"]))
    with open(sql_path, "rb") as source:
        timed([os.path.join(pg["bindir"], "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-d", db], env=env, stdin=source,
              stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def governed_downgrade(pg, db, work, jobs, run_dir):
    """(a) pg_schema_downgrade: verified backup, then the downgrade in one transaction."""
    args = {"db": db, "login_host": pg["host"], "login_port": pg["port"], "login_user": pg["user"],
            "login_password": pg["password"], "migrations_dir": SANDBOX_MIGRATIONS, "backup_dir": os.path.join(work, "backups"),
            "backup_format": "directory", "backup_jobs": jobs, "accept_data_loss": True, "statement_timeout": 0,
            "actor": "bench", "incident_id": "BENCH-1", "reason": "benchmark"}
    started = time.monotonic()
    failed, result = pb.run_module(run_dir, "governed.rollback.pg_schema_downgrade", args)
    wall = time.monotonic() - started
    if failed:
        raise SystemExit("bench: pg_schema_downgrade failed: %s" % result.get("msg"))
    return wall, result


def governed_restore(pg, db, backup, work, run_dir):
    """(a) playbooks/restore-db.yml from the verified backup (the app scale-down is left out: no app here)."""
    variables = {"database": db, "backup": backup, "app_deployment": "", "evidence_dir": os.path.join(work, "evidence"),
                 "receipt_ledger": os.path.join(work, "ledger.jsonl"), "backup_dir": os.path.join(work, "backups")}
    started = time.monotonic()
    run = pb.run_playbook(run_dir, variables, playbook="playbooks/restore-db.yml")
    wall = time.monotonic() - started
    if run.status != "successful":
        raise SystemExit("bench: restore-db.yml failed: %s" % run.explain())
    return wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=max(2, os.cpu_count() or 2), help="pg_dump --jobs for (a)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    opts = parser.parse_args()
    pg = pg_settings(load_sandbox_env())
    tag = "gr_bench_" + uuid.uuid4().hex[:8]
    work = tempfile.mkdtemp(prefix="db-bench-")
    template = tag + "_template"
    samples = {key: [] for key in ("dump_a", "dump_b", "module_a", "downgrade_a", "restore_a", "restore_b")}
    try:
        print("growing %s to ~%d MB ..." % (template, opts.size_mb), file=sys.stderr)
        size = grow(pg, template, opts.size_mb)
        for run in range(opts.runs):
            db = copy_of(pg, template, "%s_r%d" % (tag, run))
            seconds, sql_path = runbook_dump(pg, db, work)
            samples["dump_b"].append(seconds)
            wall, result = governed_downgrade(pg, db, work, opts.jobs, os.path.join(work, "module-%d" % run))
            samples["module_a"].append(wall)
            samples["dump_a"].append(result["backup"]["seconds"])
            samples["downgrade_a"].append(max(0.0, result["duration"] - result["backup"]["seconds"]))
            samples["restore_a"].append(governed_restore(pg, db, result["backup_location"], work,
                                                         os.path.join(work, "restore-%d" % run)))
            drop_like(pg, db)
            restored = copy_of(pg, template, "%s_rb%d" % (tag, run))
            samples["restore_b"].append(runbook_restore(pg, restored, sql_path))
            drop_like(pg, restored)
            os.unlink(sql_path)
            shutil.rmtree(os.path.join(work, "backups"), ignore_errors=True)
            print("run %d/%d done" % (run + 1, opts.runs), file=sys.stderr)
    finally:
        drop_like(pg, tag)
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(samples, size, opts)


def report(samples, size, opts):
    med = {key: statistics.median(values) for key, values in samples.items()}
    print("\ndatabase rollback, %.0f MB database (pg_database_size), %d run(s), pg_dump --jobs=%d, %d cores"
          % (size / 1048576.0, opts.runs, opts.jobs, os.cpu_count() or 0))
    rows = [
        ("verified backup (a): dump + list + full read + sha256", med["dump_a"], med["dump_b"], 0.6),
        ("runbook backup (b): pg_dump > file.sql", med["dump_b"], None, None),
        ("downgrade alone (a), one transaction", med["downgrade_a"], None, None),
        ("pg_schema_downgrade whole run (a), module start included", med["module_a"], None, None),
        ("restore-db.yml (a): new db, verify, swap, receipt", med["restore_a"], med["restore_b"], 0.5),
        ("runbook restore (b): dropdb, createdb, psql <", med["restore_b"], None, None),
    ]
    print("%-60s %10s %8s %6s %s" % ("step", "median s", "ratio", "goal", "met"))
    for name, value, base, goal in rows:
        ratio = value / base if base else None
        print("%-60s %10.2f %8s %6s %s" % (name, value, "%.2fx" % ratio if ratio is not None else "",
                                           "%.1fx" % goal if goal else "",
                                           ("yes" if ratio <= goal else "NO") if goal else ""))
    print(json.dumps({"samples": samples, "size_bytes": size}, sort_keys=True))


if __name__ == "__main__":
    main()
