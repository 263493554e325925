#!/usr/bin/env python
"""Benchmark: what the receipt ledger costs as it grows (no sandbox needed).

Every append verifies the whole ledger first (chain, canonical form, schema, signatures, signed head) and
refuses one that does not verify, so an append is O(entries). This prints, for ledgers of growing size,
the median time of one append (verify + sign + fsync'd write + head rewrite), of a full verify, the
ledger's size on disk and the peak memory of this process.

Usage: .venv/bin/python bench/receipt_ledger.py [--sizes 10,100,1000,5000] [--runs 5]
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,100,1000,5000")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from securesystemslib.signer import CryptoSigner

    signer = R.load_signer(CryptoSigner.generate_ed25519().private_bytes)
    print("%-9s %16s %16s %12s %12s" % ("entries", "append (ms)", "verify (ms)", "ledger (KB)", "peak RSS (MB)"))
    for size in [int(s) for s in args.sizes.split(",")]:
        directory = tempfile.mkdtemp(prefix="bench-ledger-")
        ledger = os.path.join(directory, "ledger.jsonl")
        try:
            build_ledger(ledger, signer, size)
            appends, verifies = [], []
            for run in range(args.runs):
                start = time.perf_counter()
                R.verify_ledger(ledger, [signer.public_key])
                verifies.append(time.perf_counter() - start)
                start = time.perf_counter()
                R.append_receipt(ledger, receipt(signer, size + run), signer=signer)
                appends.append(time.perf_counter() - start)
            print("%-9d %16.1f %16.1f %12.1f %12.1f" % (
                size, statistics.median(appends) * 1000, statistics.median(verifies) * 1000,
                os.path.getsize(ledger) / 1024.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0))
        finally:
            shutil.rmtree(directory)


if __name__ == "__main__":
    main()
