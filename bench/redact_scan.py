#!/usr/bin/env python
"""Time redaction and the secret scan on single huge lines (issue 9: a 1.4 MB log line took minutes).

Run from the repository root: .venv/bin/python bench/redact_scan.py [--sizes 1400000,5000000]
Prints one row per shape and size: CPU seconds (the work) and wall seconds (includes the machine's load).
"""

import argparse
import base64
import os
import random
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, "build", "collections")
LINK = os.path.join(COLLECTIONS, "ansible_collections", "governed", "rollback")
if not os.path.exists(LINK):
    os.makedirs(os.path.dirname(LINK), exist_ok=True)
    os.symlink("../../../..", LINK)
sys.path.insert(0, COLLECTIONS)

from ansible_collections.governed.rollback.plugins.module_utils import _redact  # noqa: E402  pylint: disable=wrong-import-position


def json_log(size, rng):
    parts, total = [], 0
    while total < size:
        part = ('{"ts":"2026-11-30T05:%02d:%02d.%03dZ","level":"info","msg":"GET /api/v1/orders/%d 200",'
                '"trace_id":"%s","latency_ms":%d,"image":"registry.example/app:1.4.2-b7f3c9a1e2d4@sha256:%064x"}'
                % (rng.randrange(60), rng.randrange(60), rng.randrange(1000), rng.randrange(10 ** 6),
                   uuid.UUID(int=rng.getrandbits(128)), rng.randrange(500), rng.getrandbits(256)))
        parts.append(part)
        total += len(part) + 1
    return ",".join(parts)


SHAPES = {
    "json-log": json_log,
    "base64": lambda size, rng: base64.b64encode(rng.randbytes(size * 3 // 4)).decode(),
    "random-text": lambda size, rng: "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ABCXYZ:=/.-") for _index in range(size)),
    "npm-quadratic": lambda size, rng: "//x/" * (size // 4),
    "urls-no-at": lambda size, rng: "http://a:b/" * (size // 11),
    "secret-flags": lambda size, rng: "--password x " * (size // 13),
}


def measure(func):
    cpu, wall = time.process_time(), time.perf_counter()
    result = func()
    return time.process_time() - cpu, time.perf_counter() - wall, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1400000,5000000")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    args = parser.parse_args()
    rng = random.Random(9)
    header = ("shape", "bytes", "scan cpu", "scan wall", "redact cpu", "redact wall", "findings")
    print("%-14s %9s | %9s %9s | %9s %9s | %s" % header)
    print("-" * 86)
    for size in [int(s) for s in args.sizes.split(",")]:
        for shape in args.shapes.split(","):
            line = SHAPES[shape](size, rng) + "\n"
            scan_cpu, scan_wall, findings = measure(lambda: _redact.SecretScanner().scan_text(line))
            red_cpu, red_wall, _out = measure(lambda: _redact.redact_text(line))
            row = (shape, len(line), scan_cpu, scan_wall, red_cpu, red_wall, len(findings))
            print("%-14s %9d | %8.3fs %8.3fs | %8.3fs %9.3fs | %d" % row)
    print("load average: %s" % " ".join("%.2f" % x for x in os.getloadavg()))


if __name__ == "__main__":
    main()
