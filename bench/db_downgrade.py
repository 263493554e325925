#!/usr/bin/env python
"""Benchmark: the governed schema downgrade against the bare downgrade SQL and the AUREUS runbook's section 3 procedure.

Each run builds its own copy of the database incident (not timed): a throwaway database ``gr_bench_dg_<random>``
owned by ``aureus`` with the sandbox's migrations up to v0.1.2-add-pii-tracking-table and their seed data (the
integration tests' ``sandbox_style``: 3 datasets, 2 pii_access_tracking rows; the small incident database, not
bench/db_rollback.py's 1 GB one). Then one variant downgrades it to v0.1.1-add-dataset-owner:

  (a) governed   ansible-playbook playbooks/rollback-db.yml -e database=<it> with the sandbox inventory's defaults
                 (plan and rehearsal in a rolled-back transaction, approval DBA + Engineering Lead, evidence before,
                 pg_schema_downgrade: verified backup then the downgrade in one transaction, evidence after, the
                 runbook's checks, the sealed evidence pack with the schema diff, signed receipt, report)
  (b) bare       the migration's down SQL with psql: psql --single-transaction -f <v0.1.2>/down.sql -c "DELETE FROM
                 schema_migrations WHERE version = 'v0.1.2-...'" (what the migration tool's undo runs)
  (c) runbook    the runbook's database procedure with its own commands (psql and pg_dump straight at the database,
                 not through kubectl exec): pg_dump -s before; the row counts of pg_stat_user_tables; pg_dump > the
                 backup .sql; SELECT * FROM schema_migrations ORDER BY version DESC LIMIT 5; the downgrade as in (b);
                 \\dt; SELECT count(*) FROM datasets (its health check); pg_dump -s after; the manifest JSON; tar -czf.
                 (The runbook's row-count query names a column ``tablename`` that pg_stat_user_tables does not have;
                 ``relname`` it is.)

Wall times are medians over the runs, around the whole command (process start included). Time to mitigation is
from the command's start to the downgrade committed (pg_schema_downgrade's ``committed_at``, read from the receipt's
details; for the shell variants the moment the downgrade's psql returned). Goals (issue 14): (a)'s time to
mitigation at most (b)'s + 1.5 s; (a) at most (b) + 1.5 s and at most 2x (c).

Usage: .venv/bin/python bench/db_downgrade.py [--runs 5] [--keep]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, os.path.join(ROOT, "build", "collections"))

from db_rollback import admin, client_env, drop_like, pg_settings  # noqa: E402  pylint: disable=wrong-import-position
from deploy_rollback import PATCHED, epoch, patched_at, run_playbook, timed, variant_report  # noqa: E402  pylint: disable=wrong-import-position
from tests.integration.test_pg_schema_downgrade import SANDBOX_MIGRATIONS, SANDBOX_VERSIONS, execute, sandbox_style  # noqa: E402  pylint: disable=wrong-import-position
from tests.integration.test_rollback_db_playbook import Incident, versions  # noqa: E402  pylint: disable=wrong-import-position
from tests.sandbox_env import load_sandbox_env  # noqa: E402  pylint: disable=wrong-import-position

MITIGATION = "time to mitigation (start -> committed)"
PREFIX = "gr_bench_dg_"
REVERTED = SANDBOX_VERSIONS[2]


def governed(pg, db, work):
    incident = Incident(pg, work, db)
    wall, started = run_playbook("playbooks/rollback-db.yml", {
        "database": db, "evidence_dir": incident.evidence_dir, "receipt_ledger": incident.ledger,
        "backup_dir": incident.backup_dir}, work, "on %s" % db)
    receipt = incident.receipt()
    if receipt["outcome"] != "succeeded" or receipt["migration_reverted"] != REVERTED:
        raise SystemExit("expected a succeeded receipt reverting %s on %s, got %s" % (REVERTED, db, receipt))
    return wall, epoch(receipt["details"]["committed_at"]) - started


PSQL = '"{bin}/psql" -X -q -v ON_ERROR_STOP=1 -d {db}'
DOWNGRADE = (PSQL + ' --single-transaction -f "{migrations}/{version}/down.sql" '
             '-c "DELETE FROM schema_migrations WHERE version = \'{version}\'" || exit 1\n' + PATCHED + "\n")
RUNBOOK = r"""
ROLLBACK_ID="db-rollback-$(date +%Y%m%d-%H%M%S)"
OUT="{work}/$ROLLBACK_ID"
mkdir -p "$OUT"
# Schema dump before rollback; data integrity checks
"{bin}/pg_dump" -s {db} > "$OUT/$ROLLBACK_ID-schema-before.sql" || exit 1
""" + PSQL + r""" -c "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables;" \
  > "$OUT/$ROLLBACK_ID-row-counts.txt" || exit 1
# 1. Create backup
"{bin}/pg_dump" {db} > "$OUT/pre-rollback-backup-$(date +%Y%m%d-%H%M%S).sql" || exit 1
# 2. Identify migration to rollback
""" + PSQL + r""" -c "SELECT * FROM schema_migrations ORDER BY version DESC LIMIT 5;" || exit 1
# 3. Run rollback migration
""" + DOWNGRADE + r"""
# 4. Verify schema state; 5. test application functionality (its data)
""" + PSQL + r""" -c "\dt" || exit 1
""" + PSQL + r""" -c "SELECT count(*) FROM datasets;" || exit 1
# After rollback
"{bin}/pg_dump" -s {db} > "$OUT/$ROLLBACK_ID-schema-after.sql" || exit 1
cat > "$OUT/$ROLLBACK_ID-manifest.json" <<EOF
{{
  "rollback_id": "$ROLLBACK_ID",
  "timestamp": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "component": "database",
  "migration_reverted": "{version}",
  "backup_location": "/backups/$ROLLBACK_ID-backup.sql",
  "data_loss": "none",
  "downtime": "5 minutes",
  "approver": "$USER",
  "dba_approval": "john.dba@example.com"
}}
EOF
tar -czf "$OUT.tar.gz" -C "{work}" "$ROLLBACK_ID" || exit 1
"""


def _shell(pg, db, work, template):
    script = template.format(bin=pg["bindir"], db=db, work=work, migrations=SANDBOX_MIGRATIONS, version=REVERTED)
    started = time.time()
    wall, proc = timed(["bash", "-c", script], env=client_env(pg))
    if proc.returncode != 0:
        raise SystemExit("the commands failed on %s: %s" % (db, proc.stderr[-2000:]))
    return wall, patched_at(proc.stdout) - started


def bare(pg, db, work):
    return _shell(pg, db, work, DOWNGRADE)


def runbook(pg, db, work):
    wall, mitigation = _shell(pg, db, work, RUNBOOK)
    if not [f for f in os.listdir(work) if f.endswith(".tar.gz")]:
        raise SystemExit("the runbook procedure left no archive in %s" % work)
    return wall, mitigation


VARIANTS = (("(a) governed playbook", governed), ("(b) psql down.sql", bare), ("(c) runbook procedure", runbook))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the databases and the work directory")
    opts = parser.parse_args()
    pg = pg_settings(load_sandbox_env())
    os.makedirs(os.path.join(ROOT, "build"), exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench-db-downgrade-", dir=os.path.join(ROOT, "build"))
    prefix = PREFIX + uuid.uuid4().hex[:6] + "_"
    walls = dict((name, []) for name, _func in VARIANTS)
    mitigations = dict((name, []) for name, _func in VARIANTS)
    load_before = os.getloadavg()[0]
    try:
        for run in range(opts.runs):
            # Variants take turns within a round, so a slow moment of the shared sandbox hits all of them.
            for name, func in VARIANTS:
                db = "%s%s%d" % (prefix, name[1], run)
                admin(pg, "CREATE DATABASE %s OWNER %s" % (db, pg["user"]))
                sandbox_style(pg, db)
                out = os.path.join(work, "%s-%d" % (name[1], run))
                os.makedirs(out)
                wall, mitigation = func(pg, db, out)
                if versions(pg, db) != SANDBOX_VERSIONS[:2] or \
                        execute(pg, db, "SELECT to_regclass('pii_access_tracking')") != [(None,)] or \
                        execute(pg, db, "SELECT count(*) FROM datasets") != [(3,)]:
                    raise SystemExit("%s did not leave %s at %s with its datasets" % (name, db, SANDBOX_VERSIONS[1]))
                walls[name].append(wall)
                mitigations[name].append(mitigation)
                print("# run %d %-24s %6.2f s (committed at %.2f s)" % (run + 1, name, wall, mitigation), flush=True)
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
            drop_like(pg, prefix)
    variant_report("database schema downgrade v0.1.2 -> v0.1.1 (incident database, drops pii_access_tracking)",
                   VARIANTS, walls, mitigations, MITIGATION, (load_before, os.getloadavg()[0]),
                   "then downgrade in one transaction")


if __name__ == "__main__":
    main()
