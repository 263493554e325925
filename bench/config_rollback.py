#!/usr/bin/env python
"""Benchmark: the governed configuration rollback against kubectl and the AUREUS runbook's section 2 procedure.

Each run builds its own copy of the config incident in a fresh namespace (not timed): a ConfigMap ``app-config``
whose good content was recorded as a snapshot before the bad push, and a 2-replica Deployment ``web`` consuming
it. Then one variant reverts it:

  (a) governed   ansible-playbook playbooks/rollback-config.yml (plan, approval, evidence before, config_revert
                 with the consumers restarted and waited for, verification, evidence after, signed receipt, report)
  (b) kubectl    kubectl apply -f <the good backup> && kubectl rollout restart && kubectl rollout status
  (c) runbook    the runbook's steps with its own commands: get -o yaml before; apply the backup; rollout restart;
                 rollout status; get -o yaml after; diff; the evidence manifest JSON; tar -czf

Wall times are medians over the runs, around the whole command (process start included). Time to mitigation is
from the command's start to the good content stored (config_revert's ``reverted_at``; for the shell variants the
moment ``kubectl apply`` returned). Goals (issue 14): (a)'s time to mitigation at most (b)'s + 1.5 s; (a) at most
(b) + 1.5 s and at most 2x (c).

Usage: .venv/bin/python bench/config_rollback.py [--runs 5]
"""

import argparse
import json
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

from deploy_rollback import PATCHED, Sandbox, epoch, patched_at, run_playbook, succeeded_receipt, timed, variant_report  # noqa: E402  pylint: disable=wrong-import-position
from tests.integration.test_rollback_config_playbook import GOOD, ConfigIncident  # noqa: E402  pylint: disable=wrong-import-position

MITIGATION = "time to mitigation (start -> stored)"


def backup_manifest(namespace):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config", "namespace": namespace},
            "data": GOOD}


def governed(sandbox, namespace, work):
    ledger = os.path.join(work, "ledger.jsonl")
    wall, started = run_playbook("playbooks/rollback-config.yml", {
        "namespace": namespace, "config_name": "app-config", "config_kind": "ConfigMap",
        "evidence_dir": os.path.join(work, "evidence"), "receipt_ledger": ledger}, work, "in %s" % namespace)
    receipt = succeeded_receipt(ledger, "in %s" % namespace)
    return wall, epoch(receipt["details"]["reverted_at"]) - started


def kubectl_revert(sandbox, namespace, work):
    backup = os.path.join(work, "configmap-backup.yaml")
    with open(backup, "w") as handle:
        json.dump(backup_manifest(namespace), handle)
    k = " ".join(sandbox.kubectl_argv)
    script = ("{k} apply -f {b} && " + PATCHED + " && {k} rollout restart deployment/web -n {ns} && "
              "{k} rollout status deployment/web -n {ns}").format(k=k, b=backup, ns=namespace)
    started = time.time()
    wall, proc = timed(["bash", "-c", script])
    if proc.returncode != 0:
        raise SystemExit("kubectl failed in %s: %s" % (namespace, proc.stderr))
    return wall, patched_at(proc.stdout) - started


RUNBOOK = r"""
K="{k}"
ROLLBACK_ID="rollback-$(date +%Y%m%d-%H%M%S)"
OUT="{work}"
$K get configmap app-config -n {ns} -o yaml > "$OUT/$ROLLBACK_ID-before.yaml"
$K apply -f "{backup}" || exit 1
{patched}
$K rollout restart deployment/web -n {ns} || exit 1
$K rollout status deployment/web -n {ns} || exit 1
$K get configmap app-config -n {ns} -o yaml > "$OUT/$ROLLBACK_ID-after.yaml"
diff "$OUT/$ROLLBACK_ID-before.yaml" "$OUT/$ROLLBACK_ID-after.yaml" > "$OUT/$ROLLBACK_ID-config-diff.txt"
cat > "$OUT/$ROLLBACK_ID-manifest.json" <<EOF
{{
  "rollback_id": "$ROLLBACK_ID",
  "timestamp": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "config_type": "ConfigMap",
  "reason": "Bad configuration push",
  "approver": "$USER",
  "incident_id": "INC-12345"
}}
EOF
tar -czf "$OUT-$ROLLBACK_ID.tar.gz" -C "$OUT" .
"""


def runbook(sandbox, namespace, work):
    backup = os.path.join(work, "configmap-backup.yaml")
    with open(backup, "w") as handle:
        json.dump(backup_manifest(namespace), handle)
    script = RUNBOOK.format(k=" ".join(sandbox.kubectl_argv), ns=namespace, work=work, backup=backup,
                            patched=PATCHED)
    started = time.time()
    wall, proc = timed(["bash", "-c", script])
    if proc.returncode != 0:
        raise SystemExit("the runbook procedure failed in %s: %s" % (namespace, proc.stderr[-2000:]))
    return wall, patched_at(proc.stdout) - started


VARIANTS = (("(a) governed playbook", governed), ("(b) kubectl apply+restart", kubectl_revert),
            ("(c) runbook procedure", runbook))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--runs", type=int, default=5)
    opts = parser.parse_args()
    sandbox = Sandbox()
    os.makedirs(os.path.join(ROOT, "build"), exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench-config-", dir=os.path.join(ROOT, "build"))
    walls = dict((name, []) for name, _func in VARIANTS)
    mitigations = dict((name, []) for name, _func in VARIANTS)
    namespaces = []
    load_before = os.getloadavg()[0]
    try:
        for run in range(opts.runs):
            for name, func in VARIANTS:
                namespace = "bench-config-%s-%s" % (name[1], uuid.uuid4().hex[:6])
                namespaces.append(namespace)
                sandbox.kubectl("create", "namespace", namespace)
                out = os.path.join(work, "%s-%d" % (name[1], run))
                os.makedirs(out)
                incident = ConfigIncident(sandbox.kubectl, sandbox.env["KUBECONFIG"], namespace, out)
                incident.consumer()
                incident.history()
                wall, mitigation = func(sandbox, namespace, out)
                if incident.data() != GOOD:
                    raise SystemExit("%s did not restore the good content in %s" % (name, namespace))
                walls[name].append(wall)
                mitigations[name].append(mitigation)
                print("# run %d %-26s %6.2f s (stored at %.2f s)" % (run + 1, name, wall, mitigation), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for namespace in namespaces:
            sandbox.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    variant_report("configuration rollback (ConfigMap, 2 consumers' pods restarted)", VARIANTS, walls, mitigations,
                   MITIGATION, (load_before, os.getloadavg()[0]),
                   "Revert the config, restart its consumers and wait for them")


if __name__ == "__main__":
    main()
