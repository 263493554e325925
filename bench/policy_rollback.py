#!/usr/bin/env python
"""Benchmark: the governed policy rollback against the bare bundle commands and the AUREUS runbook's section 4 procedure.

The bench starts its own PEP (tests/integration/_policy_env.py, as the policy tests do: a copy of the runbook's
policy repository with v2.0 and v2.1, a bundle server and a real OPA polling it every second; the shared sandbox's
OPA and bundle server are never touched). Before each run (not timed) v2.1 is published again and active in OPA,
and a fresh namespace holds ConfigMap aureus-policies at v2.1 with the PEP Deployment aureus-policy mounting it.
Then one variant rolls pii-access-requires-approval back to v2.0:

  (a) governed   ansible-playbook playbooks/rollback-policy.yml with the sandbox inventory's defaults (plan: build,
                 opa test, probes, diff; approval; evidence before; policy_bundle_revert publishing the bundle,
                 applying the ConfigMap, restarting the PEP and waiting until OPA reports the revision active;
                 the KFM invariants; evidence after; signed receipt; report)
  (b) bare       what puts the good bundle back by hand (the commands sandbox/seed.sh publishes a bundle with):
                 git archive <v2.0> policies | tar -x; the .manifest; opa build --revision; mv into the bundle
                 server's directory; curl /v1/status until OPA reports the revision active
  (c) runbook    the runbook's policy procedure with its own commands, on this sandbox: read the current
                 policy-manifest.json (from the ConfigMap the PEP mounts: KWOK pods have no container to exec
                 into); git log --oneline policies/; git show HEAD~1:<files>; kubectl create configmap
                 --dry-run | kubectl apply; the bundle of HEAD~1 built and published as in (b) (this sandbox's OPA
                 loads bundles); kubectl rollout restart + status; curl /v1/status until active; the previously
                 blocked query allowed; git diff HEAD~1 HEAD policies/; the manifest JSON; the audit line (to a
                 local audit.log, not into a pod); tar -czf

Wall times are medians over the runs, around the whole command (process start included). Time to mitigation is
from the command's start to the good bundle active, by OPA's own clock (its status API's
``last_successful_activation`` of the v2.0 revision; for (a) also policy_bundle_revert's ``activated_at`` in the
receipt, which must be the same moment). OPA polls the bundle server every second, so up to 1 s of every variant's
time to mitigation is OPA's poll. Goals (issue 14): (a)'s time to mitigation at most (b)'s + 1.5 s; (a) at most
(b) + 1.5 s and at most 2x (c).

Usage: .venv/bin/python bench/policy_rollback.py [--runs 5] [--keep]
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

from deploy_rollback import Sandbox, epoch, run_playbook, succeeded_receipt, timed, variant_report  # noqa: E402  pylint: disable=wrong-import-position
from tests.integration import _policy_env as env  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.governed.rollback.plugins.module_utils import _policy  # noqa: E402  pylint: disable=wrong-import-position

MITIGATION = "time to mitigation (start -> OPA active)"
REASON = "New policy blocking analysts from routine low-PII queries"


def activated_at(pep):
    """When OPA activated the v2.0 bundle it runs now, by its own clock (epoch seconds)."""
    status = env.http_json(pep.url + "/v1/status")
    if _policy.status_revision(status, "aureus") != pep.shas["v2.0"]:
        raise SystemExit("OPA does not run v2.0: %s" % _policy.status_bundle(status, "aureus"))
    return epoch(_policy.status_activation(status, "aureus"))


def governed(sandbox, pep, namespace, work):
    ledger = os.path.join(work, "ledger.jsonl")
    wall, started = run_playbook("playbooks/rollback-policy.yml", {
        "namespace": namespace, "policy_repo": pep.repo, "bundle_server_dir": pep.server_dir, "opa_url": pep.url,
        "pep_endpoints": [pep.url + "/v1/data/aureus/pii/allow", pep.url + "/v1/data/aureus/pii/decision"],
        "denied_endpoint": pep.url + "/v1/data/aureus/pii/decision", "wait_timeout": 30,
        "evidence_dir": os.path.join(work, "evidence"), "receipt_ledger": ledger,
        "reason": REASON, "incident_id": "INC-POLICY-7"}, work, "in %s" % namespace)
    receipt = succeeded_receipt(ledger, "in %s" % namespace)
    active = activated_at(pep)
    if abs(epoch(receipt["details"]["activated_at"]) - active) > 1e-6:
        raise SystemExit("the receipt's activated_at %s is not OPA's activation of v2.0" % receipt["details"]["activated_at"])
    return wall, active - started


# The good bundle put back, as sandbox/seed.sh publishes one: built from the commit, renamed into place.
PUBLISH = r"""
B=$(mktemp -d)
git -C "{repo}" archive "$SHA" policies | tar -x -C "$B" || exit 1
printf '{{"revision":"%s","roots":["aureus"]}}\n' "$SHA" > "$B/policies/.manifest"
(cd "$B/policies" && "{opa}" build -b . --ignore '*_test.rego' --revision "$SHA" -o "$B/aureus.tar.gz") || exit 1
cp "$B/aureus.tar.gz" "{bundles}/.aureus.tar.gz.new" && mv -f "{bundles}/.aureus.tar.gz.new" "{bundles}/aureus.tar.gz" \
  || exit 1
rm -rf "$B"
until curl -sf "{opa_url}/v1/status" | grep -q "\"active_revision\":\"$SHA\""; do sleep 0.1; done
"""
BARE = r"""
SHA=$(git -C "{repo}" rev-parse "pii-access-requires-approval-v2.0^{{commit}}") || exit 1
""" + PUBLISH
RUNBOOK = r"""
K="{k}"
ROLLBACK_ID="policy-rollback-$(date +%Y%m%d-%H%M%S)"
OUT="{work}/$ROLLBACK_ID"
TMP="{work}/tmp"
mkdir -p "$OUT" "$TMP"
# 1. Identify current policy version
$K get configmap aureus-policies -n {ns} -o jsonpath='{{.data.policy-manifest\.json}}' || exit 1
# 2. Retrieve previous policy version from git
cd "{repo}" || exit 1
git log --oneline policies/ | head -5
git show HEAD~1:policies/pii-access-policy.rego > "$TMP/pii-access-policy.rego" || exit 1
git show HEAD~1:policies/policy-manifest.json > "$TMP/policy-manifest.json" || exit 1
# 3. Apply previous policy (the ConfigMap the PEP mounts, and the bundle OPA loads)
$K create configmap aureus-policies -n {ns} --from-file="$TMP/pii-access-policy.rego" \
  --from-file="$TMP/policy-manifest.json" --dry-run=client -o yaml | $K apply -f - || exit 1
SHA=$(git rev-parse HEAD~1)
""" + PUBLISH + r"""
# 4. Restart policy evaluation service
$K rollout restart deployment/aureus-policy -n {ns} || exit 1
$K rollout status deployment/aureus-policy -n {ns} || exit 1
# 5. Verify policy rollback: a previously blocked action works now
curl -sf -X POST "{opa_url}/v1/data/aureus/pii/allow" -H 'Content-Type: application/json' \
  -d '{{"input": {{"user": {{"role": "analyst"}}, "query": {{"pii_level": "low"}}}}}}' | grep -q '"result":true' || exit 1
# Evidence: the policy diff, the manifest, the audit trail, the archive
git diff HEAD~1 HEAD policies/ > "$OUT/$ROLLBACK_ID-policy-diff.txt"
cat > "$OUT/$ROLLBACK_ID-manifest.json" <<EOF
{{
  "rollback_id": "$ROLLBACK_ID",
  "timestamp": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "component": "policy-engine",
  "policy_name": "pii-access-requires-approval",
  "from_version": "v2.1",
  "to_version": "v2.0",
  "reason": "{reason}",
  "approver": "governance.lead@example.com",
  "security_review": "approved",
  "affected_users": 45
}}
EOF
NOW=$(date -u +%Y-%m-%dT%H:%M:%SZ)
echo "{{\"event\":\"policy_rollback\",\"policy\":\"pii-access-requires-approval\",\"timestamp\":\"$NOW\",\
\"actor\":\"$USER\"}}" >> "$OUT/audit.log"
tar -czf "$OUT.tar.gz" -C "{work}" "$ROLLBACK_ID" || exit 1
"""


def _shell(sandbox, pep, namespace, work, template):
    script = template.format(k=" ".join(sandbox.kubectl_argv), ns=namespace, work=work, repo=pep.repo,
                             opa=sandbox.env["SANDBOX_OPA"], bundles=os.path.dirname(pep.bundle), opa_url=pep.url,
                             reason=REASON)
    started = time.time()
    wall, proc = timed(["bash", "-c", script])
    if proc.returncode != 0:
        raise SystemExit("the commands failed in %s: %s" % (namespace, proc.stderr[-2000:]))
    return wall, activated_at(pep) - started


def bare(sandbox, pep, namespace, work):
    return _shell(sandbox, pep, namespace, work, BARE)


def runbook(sandbox, pep, namespace, work):
    wall, mitigation = _shell(sandbox, pep, namespace, work, RUNBOOK)
    if not [f for f in os.listdir(work) if f.endswith(".tar.gz")]:
        raise SystemExit("the runbook procedure left no archive in %s" % work)
    return wall, mitigation


VARIANTS = (("(a) governed playbook", governed), ("(b) build+publish bundle, wait", bare),
            ("(c) runbook procedure", runbook))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the namespaces and the work directory")
    opts = parser.parse_args()
    sandbox = Sandbox()
    os.makedirs(os.path.join(ROOT, "build"), exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench-policy-", dir=os.path.join(ROOT, "build"))
    walls = dict((name, []) for name, _func in VARIANTS)
    mitigations = dict((name, []) for name, _func in VARIANTS)
    namespaces = []
    pep = env.Pep(sandbox.env["SANDBOX_OPA"], os.path.join(work, "pep"))
    load_before = os.getloadavg()[0]
    try:
        for run in range(opts.runs):
            # Variants take turns within a round, so a slow moment of the shared sandbox hits all of them.
            for name, func in VARIANTS:
                pep.reset()
                namespace = "bench-policy-%s-%s" % (name[1], uuid.uuid4().hex[:6])
                namespaces.append(namespace)
                sandbox.kubectl("create", "namespace", namespace)
                env.seed_configmap_and_pep(sandbox.kubectl, namespace)
                out = os.path.join(work, "%s-%d" % (name[1], run))
                os.makedirs(out)
                wall, mitigation = func(sandbox, pep, namespace, out)
                if pep.revision() != pep.shas["v2.0"] or pep.decide(env.ANALYST_LOW) is not True or \
                        pep.decide(env.ANALYST_HIGH) is not False:
                    raise SystemExit("%s did not leave OPA deciding with v2.0 (%s)" % (name, pep.revision()))
                if func is not bare and env.configmap(sandbox.kubectl, namespace)["data"]["policy-manifest.json"] != \
                        env.seed_text("v2.0", "policy-manifest.json"):
                    raise SystemExit("%s did not put v2.0 in ConfigMap aureus-policies of %s" % (name, namespace))
                walls[name].append(wall)
                mitigations[name].append(mitigation)
                print("# run %d %-32s %6.2f s (active at %.2f s)" % (run + 1, name, wall, mitigation), flush=True)
    finally:
        pep.close()
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
            for namespace in namespaces:
                sandbox.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    variant_report("policy rollback v2.1 -> v2.0 (bundle server + ConfigMap, PEP restarted; OPA polls every 1 s)",
                   VARIANTS, walls, mitigations, MITIGATION, (load_before, os.getloadavg()[0]),
                   "Publish the target bundle")


if __name__ == "__main__":
    main()
