#!/usr/bin/env python
"""Benchmark: what the receipt ledger costs as it grows (no sandbox needed).

An append checks the signed head and the tail entry it signs (append_check=tail, the default), so it costs the
same at any ledger size; the full check (append_check=full, and state=verify) walks every entry. This prints, for
ledgers of growing size, the median time of one append with each check (verify + sign + fsync'd write + head
rewrite; the full one only up to --full-max entries, as wall and CPU time), of a full verify, the ledger's size on disk and the peak
memory of this process.

Usage: .venv/bin/python bench/receipt_ledger.py [--sizes 100,1000,5000,20000] [--runs 5] [--full-max 5000]
"""

import argparse
import datetime
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "build", "collections"))

from ansible_collections.governed.rollback.plugins.module_utils import _receipt as R  # noqa: E402
from ansible_collections.governed.rollback.plugins.module_utils._approval import evaluate  # noqa: E402

ROSTER = {"oncall": ["on_call_engineer"], "dba": ["dba"], "eng-lead": ["engineering_lead"]}
NOW = datetime.datetime(2024, 1, 15, 10, 30, 45, tzinfo=datetime.timezone.utc)


def receipt(signer, index):
    decision = evaluate("database", "oncall", ["dba", "eng-lead"], ROSTER, now=NOW)
    return R.build_receipt(
        dict(rollback_id="rollback-bench-%06d" % index, outcome="succeeded", incident_id="INC-12345",
             environment="bench", reason="benchmark receipt", component="database", from_version="v0.1.2",
             to_version="v0.1.1", current_ref="sha256:" + "a" * 64, rollback_target_ref="b" * 40,
             started_at="2024-01-15T10:30:45Z",
             verification={"health_check": "passed", "smoke_tests": "passed", "user_validation": "pending"}),
        approval=decision, evidence={"archive": "/tmp/x.tar.gz", "archive_sha256": "c" * 64},
        keyid=signer.public_key.keyid, now=NOW)


def build_ledger(ledger, signer, size):
    """Write a valid signed ledger of ``size`` entries directly (appending one by one would be O(n^2))."""
    prev, lines = R.GENESIS, []
    for index in range(size):
        entry_receipt = receipt(signer, index)
        entry = R.make_entry(index + 1, prev, entry_receipt, R._sign_receipt(entry_receipt, signer),
                             "2024-01-15T10:30:45Z")
        lines.append(R.entry_line(entry))
        prev = entry["entry_sha256"]
    with open(ledger, "wb") as handle:
        handle.write(b"".join(lines))
    R.atomic_write(R.head_path(ledger), R.canonical(R.make_checkpoint(size, prev, "2024-01-15T10:30:45Z", signer)))


def timed(call):
    """(wall seconds, CPU seconds of this process) of one call: CPU time stays meaningful on a loaded machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,1000,5000,20000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--full-max", type=int, default=1000, help="largest ledger to time a full append/verify on")
    args = parser.parse_args()
    from securesystemslib.signer import CryptoSigner

    signer = R.load_signer(CryptoSigner.generate_ed25519().private_bytes)
    columns = ("entries", "append tail ms wall/cpu", "append full ms wall/cpu", "verify ms wall/cpu", "ledger MB",
               "peak RSS MB")
    print("%-8s %26s %26s %20s %11s %13s" % columns)
    for size in [int(s) for s in args.sizes.split(",")]:
        directory = tempfile.mkdtemp(prefix="bench-ledger-")
        ledger = os.path.join(directory, "ledger.jsonl")
        try:
            build_ledger(ledger, signer, size)
            receipts = [receipt(signer, size + run) for run in range(args.runs + 1)]
            tails = [timed(lambda r=r: R.append_receipt(ledger, r, signer=signer)) for r in receipts[:-1]]
            fulls, verifies = [], []
            if size <= args.full_max:
                fulls.append(timed(lambda: R.append_receipt(ledger, receipts[-1], signer=signer, verify="full")))
                verifies.append(timed(lambda: R.verify_ledger(ledger, [signer.public_key], envelopes=False)))
            print("%-8d %26s %26s %20s %11.1f %13.1f" % (
                size, _ms(tails), _ms(fulls), _ms(verifies), os.path.getsize(ledger) / 1048576.0,
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0))
            sys.stdout.flush()
        finally:
            shutil.rmtree(directory)


def _ms(samples):
    if not samples:
        return "-"
    return "%.1f / %.1f" % (statistics.median(s[0] for s in samples) * 1000,
                            statistics.median(s[1] for s in samples) * 1000)


if __name__ == "__main__":
    main()
