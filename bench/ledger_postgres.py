#!/usr/bin/env python
"""Benchmark: the receipt ledger in PostgreSQL (the sandbox's) as it grows to 100,000 entries.

The ledger is generated efficiently: entries are built and signed in this process (the same make_entry and signatures
an append writes) and loaded with COPY as the table's owner, with one signed head; then, at each size, this measures
the median of one append through the backend as the INSERT+SELECT writer role (advisory lock, O(1) tail check, insert
of the entry and its head, commit), one append with the full check (append_check=full, only up to --full-max), and one
full verification (state=verify: every entry's canonical form, hashes, chain, schema and signature, in one snapshot
read through a server-side cursor), plus the tables' size on disk.

Needs the sandbox (make sandbox-up). Usage:
  .venv/bin/python bench/ledger_postgres.py [--sizes 1000,10000,100000] [--runs 5] [--full-max 10000]
"""

import argparse
import datetime
import io
import os
import statistics
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "build", "collections"))
sys.path.insert(0, ROOT)

import psycopg2  # noqa: E402
from securesystemslib.signer import CryptoSigner  # noqa: E402

from ansible_collections.governed.rollback.plugins.module_utils import _ledger_pg  # noqa: E402
from ansible_collections.governed.rollback.plugins.module_utils import _receipt as R  # noqa: E402
from ansible_collections.governed.rollback.plugins.module_utils._approval import evaluate  # noqa: E402
from tests.sandbox_env import load_sandbox_env  # noqa: E402

ROSTER = {"oncall": ["on_call_engineer"], "dba": ["dba"], "eng-lead": ["engineering_lead"]}
NOW = datetime.datetime(2024, 1, 15, 10, 30, 45, tzinfo=datetime.timezone.utc)
STAMP = "2024-01-15T10:30:45Z"


def receipt(signer, index, decision):
    return R.build_receipt(
        dict(rollback_id="rollback-bench-%07d" % index, outcome="succeeded", incident_id="INC-12345",
             environment="bench", reason="benchmark receipt", component="database", from_version="v0.1.2",
             to_version="v0.1.1", current_ref="sha256:" + "a" * 64, rollback_target_ref="b" * 40,
             started_at=STAMP,
             verification={"health_check": "passed", "smoke_tests": "passed", "user_validation": "pending"}),
        approval=decision, evidence={"archive": "/tmp/x.tar.gz", "archive_sha256": "c" * 64},
        keyid=signer.public_key.keyid, now=NOW)


def _copy_text(value):
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def grow(conn, table, signer, state, target, decision):
    """Append entries state['size']+1..target with COPY (as the owner), and one signed head at target."""
    buf = io.StringIO()
    prev = state["prev"]
    for index in range(state["size"], target):
        entry_receipt = receipt(signer, index, decision)
        entry = R.make_entry(index + 1, prev, entry_receipt, R._sign_receipt(entry_receipt, signer), STAMP)
        buf.write("\t".join(_copy_text(str(v)) for v in _ledger_pg.entry_row(entry)) + "\n")
        prev = entry["entry_sha256"]
    buf.seek(0)
    with conn.cursor() as cur:
        cur.copy_expert("COPY %s (%s) FROM STDIN" % (table, ", ".join(_ledger_pg.COLUMNS)), buf)
        head = R.canonical(R.make_checkpoint(target, prev, STAMP, signer)).decode()
        cur.execute("INSERT INTO %s_head (seq, head, checkpoint) VALUES (%%s, %%s, %%s)" % table, (target, prev, head))
    conn.commit()
    state.update(size=target, prev=prev)


def timed(call):
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    value = call()
    return time.perf_counter() - start_wall, time.process_time() - start_cpu, value


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--full-max", type=int, default=10000)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    env = load_sandbox_env()

    def password(var):
        with open(env[var]) as handle:
            return handle.read().strip()

    base = {"login_host": env["PGHOST"], "login_port": int(env["PGPORT"]), "db": env["SANDBOX_LEDGER_PGDATABASE"]}
    writer = dict(base, login_user=env["SANDBOX_LEDGER_PGUSER"], login_password=password("SANDBOX_LEDGER_PGPASSWORD_FILE"))
    owner = psycopg2.connect(host=base["login_host"], port=base["login_port"], dbname=base["db"],
                             user=env["SANDBOX_LEDGER_OWNER"], password=password("SANDBOX_LEDGER_OWNER_PGPASSWORD_FILE"))
    table = "bench_" + uuid.uuid4().hex[:10]
    with owner.cursor() as cur:
        cur.execute(_ledger_pg.schema_sql(table, env["SANDBOX_LEDGER_PGUSER"]))
    owner.commit()
    signer = R.load_signer(CryptoSigner.generate_ed25519().private_bytes)
    decision = evaluate("database", "oncall", ["dba", "eng-lead"], ROSTER, now=NOW)
    ledger = _ledger_pg.PostgresLedger(writer, table=table)
    state = {"size": 0, "prev": R.GENESIS}
    print("PostgreSQL ledger (sandbox PostgreSQL %s), table %s, %d runs per append" % (
        owner.server_version, table, args.runs))
    header = ("entries", "generate+COPY s", "append tail ms", "append full ms", "verify s", "verify entries/s",
              "table MiB")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _column in header) + "|")
    counter = [0]
    try:
        for size in sizes:
            gen_wall, _cpu, _value = timed(lambda: grow(owner, table, signer, state, size, decision))
            tails, fulls = [], []
            for _run in range(args.runs):
                counter[0] += 1
                wall, _cpu, _value = timed(lambda: ledger.append(receipt(signer, 10 ** 6 + counter[0], decision),
                                                                 signer=signer))
                tails.append(wall)
            if size <= args.full_max:
                for _run in range(args.runs):
                    counter[0] += 1
                    wall, _cpu, _value = timed(lambda: ledger.append(receipt(signer, 10 ** 6 + counter[0], decision),
                                                                     signer=signer, verify="full"))
                    fulls.append(wall)
            verify_wall, _cpu, result = timed(lambda: ledger.verify([signer.public_key]))
            if not result["valid"]:
                raise SystemExit("the generated ledger does not verify: %s" % result["message"])
            with owner.cursor() as cur:
                cur.execute("SELECT pg_total_relation_size(%s) + pg_total_relation_size(%s)", (table, table + "_head"))
                mib = cur.fetchone()[0] / 1048576.0
            owner.commit()
            # The appends above grew the ledger past size: continue the next COPY from its real tail.
            with owner.cursor() as cur:
                cur.execute("SELECT seq, entry_sha256 FROM %s ORDER BY seq DESC LIMIT 1" % table)
                seq, prev = cur.fetchone()
            owner.commit()
            state.update(size=seq, prev=prev)
            print("| %d | %.1f | %.1f | %s | %.1f | %.0f | %.1f |" % (
                result["entries"], gen_wall, statistics.median(tails) * 1000,
                "%.1f" % (statistics.median(fulls) * 1000) if fulls else "-", verify_wall,
                result["entries"] / verify_wall, mib))
    finally:
        with owner.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS %s, %s_head; DROP FUNCTION IF EXISTS %s_append_only()"
                        % (table, table, table))
        owner.commit()
        owner.close()


if __name__ == "__main__":
    main()
