#!/usr/bin/env python
"""Benchmark: the governed application-state rollback against the AUREUS Guard API called by hand.

Each run deploys its own throwaway pipeline on the sandbox's AUREUS Guard twice (good, then corrupted; the Guard
snapshots the good state first; not timed), then one variant restores the snapshot:

  (a) governed   ansible-playbook playbooks/rollback-state.yml (snapshot review, approval, evidence before,
                 snapshot_rollback with the wait, verification, evidence after, signed receipt, report)
  (b) bare       curl POST /api/rollback, then GET /api/rollback/<operation> until it completed
  (c) runbook    the runbook's section 5 with its own commands: list the snapshots, show the snapshot, POST the
                 rollback, GET the operation until it completed, GET the pipeline

Wall times are medians over the runs, around the whole command (process start included). Time to mitigation is
from the command's start to the restore completed, by the Guard's own clock (the operation's ``completed_at``).
Goals (issue 14): (a)'s time to mitigation at most (b)'s + 1.5 s; (a) at most (b) + 1.5 s and at most 2x (c).

Usage: .venv/bin/python bench/state_rollback.py [--runs 5]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, os.path.join(ROOT, "build", "collections"))

from deploy_rollback import epoch, run_playbook, succeeded_receipt, timed, variant_report  # noqa: E402  pylint: disable=wrong-import-position
from tests.integration.test_snapshot_rollback import GOOD, Guard, Pipeline, sha  # noqa: E402  pylint: disable=wrong-import-position
from tests.sandbox_env import load_sandbox_env  # noqa: E402  pylint: disable=wrong-import-position

MITIGATION = "time to mitigation (start -> restored)"
REASON = "Corrupted pipeline configuration"


def completed_at(guard, pipeline):
    (operation,) = guard.ok("GET", "/api/rollback?snapshot_id=" + pipeline.snapshot_id)["operations"]
    if operation["phase"] != "Completed":
        raise SystemExit("the restore of %s ended %s" % (pipeline.name, operation["phase"]))
    return epoch(operation["completed_at"])


def governed(guard, pipeline, work):
    ledger = os.path.join(work, "ledger.jsonl")
    wall, started = run_playbook("playbooks/rollback-state.yml", {
        "target": pipeline.name, "evidence_dir": os.path.join(work, "evidence"), "receipt_ledger": ledger,
        "reason": REASON}, work, "for %s" % pipeline.name)
    succeeded_receipt(ledger, "for %s" % pipeline.name)
    return wall, completed_at(guard, pipeline) - started


CURL = 'curl -sf --cacert {ca} -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json"'
POLL = r"""
OP=$({curl} -X POST {url}/api/rollback -H "Idempotency-Key: $(cat /proc/sys/kernel/random/uuid)" \
  -d '{{"snapshot_id": "{snapshot}", "reason": "{reason}", "approver": "engineering.lead@example.com"}}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["operation_id"])') || exit 1
until {curl} {url}/api/rollback/$OP | grep -q '"phase": *"Completed"'; do
  {curl} {url}/api/rollback/$OP | grep -q '"phase": *"Failed"' && exit 1
  sleep 0.1
done
"""
RUNBOOK = r"""
{curl} {url}/api/snapshots > /dev/null || exit 1
{curl} {url}/api/snapshots/{snapshot} > /dev/null || exit 1
""" + POLL + r"""
{curl} {url}/api/pipelines/{pipeline} > /dev/null || exit 1
"""


def _script(template, guard, pipeline):
    curl = CURL.format(ca=guard.ca)
    return template.format(curl=curl, url=guard.url, snapshot=pipeline.snapshot_id, reason=REASON,
                           pipeline=pipeline.name)


def _shell(guard, pipeline, template):
    env = dict(os.environ, TOKEN=guard.tokens["operator"])
    started = time.time()
    wall, proc = timed(["bash", "-c", _script(template, guard, pipeline)], env=env)
    if proc.returncode != 0:
        raise SystemExit("the commands failed for %s: %s" % (pipeline.name, proc.stderr[-2000:]))
    return wall, completed_at(guard, pipeline) - started


def bare(guard, pipeline, _work):
    return _shell(guard, pipeline, POLL)


def runbook(guard, pipeline, _work):
    return _shell(guard, pipeline, RUNBOOK)


VARIANTS = (("(a) governed playbook", governed), ("(b) POST rollback + poll", bare),
            ("(c) runbook procedure", runbook))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--runs", type=int, default=5)
    opts = parser.parse_args()
    guard = Guard(load_sandbox_env())
    guard.clear_faults()
    os.makedirs(os.path.join(ROOT, "build"), exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench-state-", dir=os.path.join(ROOT, "build"))
    walls = dict((name, []) for name, _func in VARIANTS)
    mitigations = dict((name, []) for name, _func in VARIANTS)
    load_before = os.getloadavg()[0]
    try:
        for run in range(opts.runs):
            for name, func in VARIANTS:
                pipeline = Pipeline(guard)
                out = os.path.join(work, "%s-%d" % (name[1], run))
                os.makedirs(out)
                wall, mitigation = func(guard, pipeline, out)
                if pipeline.state()["sha256"] != sha(GOOD):
                    raise SystemExit("%s did not restore %s" % (name, pipeline.name))
                walls[name].append(wall)
                mitigations[name].append(mitigation)
                print("# run %d %-26s %6.2f s (restored at %.2f s)" % (run + 1, name, wall, mitigation), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    variant_report("application state rollback (AUREUS Guard snapshot restore, 6 items)", VARIANTS, walls,
                   mitigations, MITIGATION, (load_before, os.getloadavg()[0]),
                   "Restore the snapshot and wait for the operation")


if __name__ == "__main__":
    main()
