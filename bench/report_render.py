#!/usr/bin/env python
"""Benchmark: what writing the rollback report adds to a rollback (no sandbox needed).

Builds a receipt (with verification_details: metrics with measurements) and a pack of N evidence files, appends the
receipt to a ledger of L entries, then times, median of --runs: the model and HTML rendering alone, the secret scan of
the page, the ledger lookup of the entry (a byte search), and the whole render_for + write_report the module runs.
The module's own start-up (as every Ansible task) comes on top and is not measured here.

Usage: .venv/bin/python bench/report_render.py [--files 10,100,1000] [--ledger 1,1000] [--runs 5]
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "build", "collections"))

from ansible_collections.governed.rollback.plugins.module_utils import _receipt as R  # noqa: E402
from ansible_collections.governed.rollback.plugins.module_utils import _report as rp  # noqa: E402
from ansible_collections.governed.rollback.plugins.module_utils import _report_files as rf  # noqa: E402

APPROVAL = {"approved": True, "rule": "deployment_last", "approval_path": "auto_approval", "missing_roles": [],
            "emergency": False, "requested_by": "oncall", "approved_by": [{"name": "oncall", "roles": ["on_call_engineer"]}]}


def make_receipt(rollback_id):
    return R.build_receipt(
        {"rollback_id": rollback_id, "rollback_type": "deployment", "outcome": "succeeded", "incident_id": "INC-12345",
         "requested_by": "oncall", "environment": "bench", "reason": "benchmark", "component": "frontend",
         "from_version": "v0.1.2", "to_version": "v0.1.1", "current_ref": "sha256:" + "a" * 64,
         "rollback_target_ref": "sha256:" + "b" * 64, "started_at": "2026-11-30T07:48:51Z",
         "completed_at": "2026-11-30T07:49:29Z", "details": {"from_revision": 3, "to_revision": 2}},
        approval=APPROVAL, evidence={"archive": "x.tar.gz", "archive_sha256": "c" * 64}, signing_required=False)


def make_pack(directory, files):
    for phase in ("before", "after"):
        os.makedirs(os.path.join(directory, phase))
        manifest = {"started_at": "2026-11-30T07:49:15Z", "finished_at": "2026-11-30T07:49:16Z",
                    "files": [{"path": "%s/src/file-%05d.yaml" % (phase, i), "sha256": "%064x" % i, "size": 100 + i}
                              for i in range(files)]}
        with open(os.path.join(directory, phase, "manifest.json"), "w") as handle:
            json.dump(manifest, handle)
    with open(os.path.join(directory, "manifest.json"), "w") as handle:
        json.dump({"phases": {}, "incomplete": False}, handle)


def median(func, runs):
    times = []
    for _run in range(runs):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", default="10,100,1000")
    parser.add_argument("--ledger", default="1,1000")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print("| ledger entries | files per phase | page KiB | render ms | scan ms | lookup ms | render_for + write ms |")
    print("|---|---|---|---|---|---|---|")
    for entries in [int(n) for n in args.ledger.split(",")]:
        work = tempfile.mkdtemp(prefix="bench-report-")
        try:
            ledger, evidence = os.path.join(work, "ledger.jsonl"), os.path.join(work, "evidence")
            for index in range(entries):
                R.append_receipt(ledger, make_receipt("rollback-bench-%06d" % index))
            rid = "rollback-bench-%06d" % (entries - 1)
            for files in [int(n) for n in args.files.split(",")]:
                directory = os.path.join(evidence, rid)
                shutil.rmtree(directory, ignore_errors=True)
                make_pack(directory, files)
                entry = rf.load_entry(ledger, rid)
                pack = rf.load_pack(evidence, rid)
                page = rp.render_report(rp.build_report(entry, pack))
                rf.scan(page, "report.html")  # the scanner's first use loads its plugins; time the steady state
                render = median(lambda: rp.render_report(rp.build_report(entry, pack)), args.runs)
                scan = median(lambda: rf.scan(page, "report.html"), args.runs)
                lookup = median(lambda: rf.load_entry(ledger, rid), args.runs)

                def whole():
                    _model, html_page, side = rf.render_for(evidence, ledger, rid, "America/Chicago")
                    rf.write_report(evidence, rid, html_page, side)

                total = median(whole, args.runs)
                print("| %d | %d | %.0f | %.1f | %.1f | %.2f | %.1f |" % (
                    entries, files, len(page.encode("utf-8")) / 1024.0, render, scan, lookup, total))
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
