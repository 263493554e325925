"""Seed the sandbox's AUREUS Guard through its API (called by sandbox/seed.sh).

Without arguments: when pipeline credit_risk_pipeline_v2 does not exist yet, deploy
sandbox/seed/guard/deployments.json in order (each deploy of an existing pipeline snapshots it first).
With --reset: first POST /api/admin/reset (cancels running restores, empties every table, clears the faults),
then seed, so the incident state is back exactly: credit_risk_pipeline_v2 corrupted, the good snapshot
"Before deploying credit_risk_pipeline_v2" present, no operations, no faults.

Reads SANDBOX_GUARD_URL, SANDBOX_GUARD_CA_FILE, SANDBOX_GUARD_TOKEN_FILE and SANDBOX_GUARD_ADMIN_TOKEN_FILE from
the environment (seed.sh sources .sandbox/env). Tokens are sent, never printed.
"""

import json
import os
import ssl
import sys
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = os.path.join(os.path.dirname(HERE), "seed", "guard", "deployments.json")
INCIDENT_PIPELINE = "credit_risk_pipeline_v2"


def call(env, method, path, token_file, body=None):
    with open(env[token_file]) as handle:
        token = handle.read().strip()
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(env["SANDBOX_GUARD_URL"] + path, data=data, method=method,
                                     headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    context = ssl.create_default_context(cafile=env.get("SANDBOX_GUARD_CA_FILE") or None)
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def main(argv, env=None):
    """Seed (after a reset with --reset); env: the sandbox's variables (default: this process's environment)."""
    env = os.environ if env is None else env
    if argv[1:] and argv[1:] != ["--reset"]:
        raise SystemExit("usage: seed_guard.py [--reset]")
    if argv[1:] == ["--reset"]:
        status = call(env, "POST", "/api/admin/reset", "SANDBOX_GUARD_ADMIN_TOKEN_FILE")[0]
        if status != 200:
            raise SystemExit("aureus-guard seed: reset answered %s" % status)
    status = call(env, "GET", "/api/pipelines/" + INCIDENT_PIPELINE, "SANDBOX_GUARD_TOKEN_FILE")[0]
    if status == 200:
        return 0
    if status != 404:
        raise SystemExit("aureus-guard seed: GET /api/pipelines/%s answered %s" % (INCIDENT_PIPELINE, status))
    with open(SEED) as handle:
        deployments = json.load(handle)["deployments"]
    snapshot = None
    for deployment in deployments:
        status, answer = call(env, "PUT", "/api/pipelines/" + deployment["pipeline"], "SANDBOX_GUARD_TOKEN_FILE",
                              {"content": deployment["content"]})
        if status not in (200, 201):
            raise SystemExit("aureus-guard seed: deploying %s answered %s: %s" % (deployment["pipeline"], status, answer))
        if deployment["pipeline"] == INCIDENT_PIPELINE and answer.get("snapshot_id"):
            snapshot = answer["snapshot_id"]
    print("sandbox: AUREUS Guard seeded (%s corrupted; good state in snapshot %s)" % (INCIDENT_PIPELINE, snapshot))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
