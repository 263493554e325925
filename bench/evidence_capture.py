#!/usr/bin/env python
"""Benchmark: evidence_capture against the AUREUS runbook's own evidence commands, on the sandbox.

For each pod count (default 100, then 1000, to show memory is flat in pods), a Deployment in a
throwaway namespace is scaled to that many KWOK pods, then each way of capturing the deployment
evidence runs --runs times (default 5):

  runbook           kubectl describe deployment; kubectl get pods -l ... -o yaml;
                    kubectl logs -l ... --all-containers=true --tail=1000   (the runbook's lines, as written)
  runbook w/o logs  the same without kubectl logs (kubectl logs -l reads pods one at a time)
  evidence_capture  ansible localhost -m governed.rollback.evidence_capture, sources k8s_workload
                    (+ ReplicaSets, HPA, events, describe summary), k8s_pods, k8s_logs (every pod and
                    container, previous too), with redaction, manifest and secret scan
  module only       the same module run directly by python (no ansible controller), to show the
                    module's own time and memory

Wall time and peak RSS (GNU time's %M: the largest process of the tree) are medians over the runs.
The sandbox's KWOK serves a seeded container log for every pod (it leaks a bearer token, which
evidence_capture masks); kubectl logs -l reads the pods one after another, evidence_capture with a
bounded pool of threads, streaming each log into its own file.

Usage: .venv/bin/python bench/evidence_capture.py [--pods 100,1000] [--runs 5] [--keep]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.sandbox_env import load_sandbox_env  # noqa: E402  pylint: disable=wrong-import-position

VENV_BIN = os.path.join(ROOT, ".venv", "bin")
TIME = "/usr/bin/time"


def kubectl(env, *args, check=True, input=None):
    cmd = [env["SANDBOX_KUBECTL"], "--kubeconfig", env["KUBECONFIG"],
           "--cache-dir", os.path.join(ROOT, ".sandbox", "kcache")] + list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True, input=input)


WORKLOAD = """
apiVersion: v1
kind: Secret
metadata: {name: web-secrets, namespace: %(ns)s}
stringData: {db-password: bench-canary-%(canary)s}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: %(ns)s}
spec:
  replicas: 1
  selector: {matchLabels: {component: frontend}}
  template:
    metadata: {labels: {component: frontend}}
    spec:
      containers:
      - name: web
        image: aureus/frontend:v0.1.1
        env:
        - name: DB_PASSWORD
          valueFrom: {secretKeyRef: {name: web-secrets, key: db-password}}
        - {name: LOG_LEVEL, value: info}
"""


def wait_ready(env, ns, replicas, timeout=900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = json.loads(kubectl(env, "get", "deployment", "web", "-n", ns, "-o", "json").stdout).get("status", {})
        if status.get("readyReplicas", 0) == replicas and status.get("replicas") == replicas and \
                status.get("updatedReplicas") == replicas:
            return
        time.sleep(2)
    raise SystemExit("deployment web in %s did not get %d ready pods in %ss" % (ns, replicas, timeout))


def timed(argv, env=None, cwd=None):
    """(wall seconds, peak RSS MiB) of a command tree, from GNU time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        proc = subprocess.run([TIME, "-o", report.name, "-f", "%e %M"] + argv, env=env, cwd=cwd,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
        fields = report.read().split()
    if len(fields) < 2:
        raise SystemExit("could not time %s: %s" % (argv[0], proc.stderr[-500:]))
    return float(fields[-2]), int(fields[-1]) / 1024.0, proc.returncode


def tree_size(path):
    files = total = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            files += 1
            total += os.path.getsize(os.path.join(root, name))
    return files, total


def runbook(env, ns, out, logs=True):
    k = "%s --kubeconfig %s --cache-dir %s" % (env["SANDBOX_KUBECTL"], env["KUBECONFIG"],
                                               os.path.join(ROOT, ".sandbox", "kcache"))
    script = ("{k} describe deployment web -n {ns} > {o}/deployment-before.txt; "
              "{k} get pods -n {ns} -l component=frontend -o yaml > {o}/pods-before.yaml; ")
    if logs:
        script += ("{k} logs -n {ns} -l component=frontend --all-containers=true --tail=1000 "
                   "> {o}/logs-before-rollback.txt 2>{o}/logs-errors.txt; ")
    return timed(["bash", "-c", (script + "true").format(k=k, ns=ns, o=out)])


def runbook_without_logs(env, ns, out, _rollback_id):
    return runbook(env, ns, out, logs=False)


def module_args(ns, out, rollback_id):
    return {
        "rollback_id": rollback_id, "phase": "before", "evidence_dir": out, "kubeconfig": None,
        "sources": [
            {"type": "k8s_workload", "name": "deployment", "namespace": ns, "resource_name": "web"},
            {"type": "k8s_pods", "name": "pods", "namespace": ns, "label_selector": "component=frontend"},
            {"type": "k8s_logs", "name": "logs", "namespace": ns, "label_selector": "component=frontend",
             "tail_lines": 1000},
        ],
    }


def via_ansible(env, ns, out, rollback_id):
    args = module_args(ns, out, rollback_id)
    args["kubeconfig"] = env["KUBECONFIG"]
    run_env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
                   PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
    return timed([os.path.join(VENV_BIN, "ansible"), "localhost", "-m", "governed.rollback.evidence_capture",
                  "-a", json.dumps(args)], env=run_env, cwd=ROOT)


def module_only(env, ns, out, rollback_id):
    args = module_args(ns, out, rollback_id)
    args["kubeconfig"] = env["KUBECONFIG"]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": args}, handle)
    try:
        run_env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "build", "collections"))
        return timed([os.path.join(VENV_BIN, "python"),
                      os.path.join(ROOT, "plugins", "modules", "evidence_capture.py"), handle.name], env=run_env)
    finally:
        os.unlink(handle.name)


def check_pack(out, rollback_id, pods):
    with open(os.path.join(out, rollback_id, "before", "manifest.json")) as handle:
        manifest = json.load(handle)
    sources = dict((s["name"], s) for s in manifest["sources"])
    if sources["pods"].get("detail", {}).get("pods") != pods:
        raise SystemExit("evidence_capture captured %s pods, expected %d" % (sources["pods"].get("detail"), pods))
    if manifest["redaction"]["status"] != "passed":
        raise SystemExit("redaction failed in the bench pack: %s" % manifest["redaction"]["findings"][:3])
    return sources["logs"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--pods", default="100,1000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the bench namespace")
    opts = parser.parse_args()
    env = load_sandbox_env()
    if not os.path.exists(TIME):
        raise SystemExit("%s (GNU time) is needed to measure peak memory" % TIME)
    ns = "bench-evidence-" + uuid.uuid4().hex[:6]
    kubectl(env, "create", "namespace", ns)
    kubectl(env, "apply", "-f", "-", input=WORKLOAD % {"ns": ns, "canary": uuid.uuid4().hex})
    rows = []
    work = tempfile.mkdtemp(prefix="bench-evidence-")
    try:
        for pods in [int(p) for p in opts.pods.split(",")]:
            kubectl(env, "scale", "deployment/web", "-n", ns, "--replicas=%d" % pods)
            started = time.monotonic()
            wait_ready(env, ns, pods)
            print("# %d pods ready in %s after %.0fs" % (pods, ns, time.monotonic() - started), flush=True)
            results = {"runbook": [], "runbook w/o logs": [], "evidence_capture": [], "module only": []}
            sizes = {}
            logs_status = None
            for run in range(opts.runs):
                for name, func in (("runbook", None), ("runbook w/o logs", runbook_without_logs),
                                   ("evidence_capture", via_ansible), ("module only", module_only)):
                    out = os.path.join(work, "%d-%s-%d" % (pods, name.replace(" ", "-"), run))
                    os.makedirs(out)
                    rollback_id = "bench-%d-%d" % (pods, run)
                    wall, rss, rc = runbook(env, ns, out) if func is None else func(env, ns, out, rollback_id)
                    if name.startswith("evidence") or name.startswith("module"):
                        if rc != 0:
                            raise SystemExit("%s failed (rc %s) at %d pods" % (name, rc, pods))
                        logs_status = check_pack(out, rollback_id, pods)
                    results[name].append((wall, rss))
                    sizes[name] = tree_size(out)
                    shutil.rmtree(out)
            for name, samples in results.items():
                rows.append((pods, name, statistics.median(s[0] for s in samples),
                             statistics.median(s[1] for s in samples), sizes[name][0], sizes[name][1]))
            print("# evidence_capture logs source at %d pods: %s %s" % (
                pods, logs_status.get("status"), logs_status.get("error") or logs_status.get("detail")), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not opts.keep:
            kubectl(env, "delete", "namespace", ns, "--wait=false", check=False)
    print()
    print("evidence capture, median of %d runs (wall time; peak RSS of the largest process)" % opts.runs)
    header = ("pods", "what", "wall s", "peak MiB", "files", "bytes", "wall vs runbook")
    print("%6s  %-18s %9s %10s %7s %9s %18s" % header)
    base = dict(((r[0]), r) for r in rows if r[1] == "runbook")
    for pods, name, wall, rss, files, size in rows:
        ratio = wall / base[pods][2] if base[pods][2] else float("nan")
        print("%6d  %-18s %9.2f %10.1f %7d %9d %17.2fx" % (pods, name, wall, rss, files, size, ratio))
    by = dict(((r[0], r[1]), r) for r in rows)
    counts = sorted(set(r[0] for r in rows))
    if len(counts) > 1:
        low, high = counts[0], counts[-1]
        print()
        print("peak memory from %d to %d pods: " % (low, high) + ", ".join(
            "%s %+.1f MiB" % (name, by[(high, name)][3] - by[(low, name)][3])
            for name in ("runbook", "runbook w/o logs", "evidence_capture", "module only")))


if __name__ == "__main__":
    main()
