#!/usr/bin/env python
"""Benchmark: the governed deployment rollback against kubectl and the AUREUS runbook's manual procedure.

Each variant has its own namespace holding a 10-replica copy of the incident (revision 1 v0.1.0, 2 v0.1.1,
3 v0.1.2 crash-looping under KWOK's chaos label, change-causes as in the runbook). Before every run that
namespace's Deployment is deleted and its history rebuilt (not timed), then the variant rolls back to revision 2:

  (a) governed   ansible-playbook playbooks/rollback-deploy.yml -e target_rev=2 (plan, approval, evidence before,
                 rollout_undo with wait, verification, evidence after + archive, signed receipt)
  (b) kubectl    kubectl rollout undo --to-revision=2 && kubectl rollout status
  (c) runbook    the runbook's controlled rollback scripted with its own commands: rollout history; describe,
                 get pods -o yaml and logs --tail=1000 before; rollout undo; rollout status --watch; the pod
                 image check; describe and get pods -o yaml after; the manifest JSON; tar -czf. (Its final
                 `kubectl cp` of the archive into a pod is left out: KWOK pods have no container to copy into.)

Wall times are medians over the runs, measured around the whole command (process start included). The
playbook's own split comes from one more run with ansible-core's junit callback (one duration per task; not in the
medians, as the callback's report costs about 0.15 s at the end) and rollout_undo's returned timings. Time to
mitigation is from the command's start to the rollback patch accepted by the API server (``patch_accepted_at`` in
the receipt's details; for the shell variants, the moment ``kubectl rollout undo`` returned). The
goals: issue 14's - (a)'s time to mitigation at most (b)'s + 1.5 s, (a) at most (b) + 1.5 s and at most 2x (c) -
and issue 5's - (a) at most half of (c), and within 2 s of (b). Ansible's floor (this bench's and the other types'
benches' helper ansible_floor) is a playbook of as many do-nothing tasks as the governed run started, run the
same way: what Ansible itself costs before any work, whole and to the mitigating task's place.

Usage: .venv/bin/python bench/deploy_rollback.py [--runs 5] [--replicas 10] [--keep] [--module-processes]
"""

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.sandbox_env import load_sandbox_env  # noqa: E402  pylint: disable=wrong-import-position
from tests.integration import _playbook as pb  # noqa: E402  pylint: disable=wrong-import-position

VENV_BIN = os.path.join(ROOT, ".venv", "bin")
NAME = "frontend"
TARGET = "aureus/frontend:v0.1.1"
# Where the playbook's time goes, by task name prefix (the rest is ansible itself: start-up, includes, facts).
PHASES = (
    ("pre-flight (evidence dir writable)", "Pre-flight"),
    ("plan (server-side dry run)", "Plan the rollback"),
    ("approval", "Check approval"),
    ("receipt draft (checked before change)", "Write the rollback receipt to the ledger (draft"),
    ("evidence before", "Capture the evidence of phase before"),
    ("rollout_undo + wait", "Roll back and wait"),
    ("verification", ("Evaluate the rollout", "Record the type's checks",
                      "Assert the rollback", "Measure the verification")),
    ("evidence after + archive", "Capture the evidence of phase after"),
    ("signed receipt + ledger", "Write the rollback receipt to the ledger"),
    ("report.html", "Write the rollback report"),
)

# Tasks whose module returns its own timings (rollout_undo: read, patch, wait, total), to set them apart from the
# cost of starting a module.
MODULE_TIMINGS = {"plan (server-side dry run)": "plan", "rollout_undo + wait": "rollout"}


class Sandbox:
    def __init__(self):
        self.env = load_sandbox_env()
        self.kubectl_argv = [self.env["SANDBOX_KUBECTL"], "--kubeconfig", self.env["KUBECONFIG"],
                             "--cache-dir", self.env["SANDBOX_KUBECTL_CACHE"]]

    def kubectl(self, *args, check=True, input=None):
        return subprocess.run(self.kubectl_argv + list(args), check=check, capture_output=True, text=True,
                              input=input)

    def reset(self, namespace, replicas):
        """Put the namespace back in the incident's state: revision 3 crash-looping, revision 2 serving."""
        self.kubectl("delete", "deployment", NAME, "-n", namespace, "--ignore-not-found", "--cascade=foreground",
                     "--wait=true", "--timeout=180s")
        pb.wait_until(lambda: not pb.items(self.kubectl, "pods", namespace), timeout=180,
                      what="pods of %s to go" % namespace)
        pb.frontend_with_history(self.kubectl, namespace, replicas=replicas)

    def rolled_back(self, namespace, replicas):
        deployment = pb.get(self.kubectl, "deployment", namespace, NAME)
        status = deployment.get("status", {})
        return pb.template_image(deployment) == TARGET and status.get("updatedReplicas") == replicas and \
            status.get("readyReplicas") == replicas and status.get("replicas") == replicas


def timed(argv, env=None, cwd=None):
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    return time.monotonic() - started, proc


def ansible_env(extra=None):
    """The environment the benches run ansible-playbook in: this checkout's ansible.cfg and venv, plus ``extra``."""
    return dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""), **(extra or {}))


def run_playbook(playbook, variables, work, where, env=None, args=()):
    """Run ``playbook`` the way an operator does (its variables from a file, ``-e @vars.json``) and time it from the
    process's start; a failed run ends the bench with its output. Returns (wall seconds, start as epoch seconds)."""
    extravars = os.path.join(work, "vars.json")
    with open(extravars, "w") as handle:
        json.dump(variables, handle)
    env = ansible_env(env)
    started = time.time()
    wall, proc = timed([os.path.join(VENV_BIN, "ansible-playbook"), playbook, "-e", "@" + extravars] + list(args),
                       env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit("the playbook failed %s:\n%s" % (where, proc.stdout[-3000:]))
    TASKS_RUN.append(task_banners(proc.stdout))
    return wall, started


# The tasks of every playbook run above, in the order they started, for Ansible's floor (ansible_floor).
TASKS_RUN = []


def task_banners(stdout):
    """The names of the tasks a run started, from the default callback's banners (skipped tasks and includes have
    one too, and each is a worker the strategy forked)."""
    return re.findall(r"^TASK \[(.*)\] \*+$", stdout, re.MULTILINE)


FLOOR_MARK = "FLOOR_AT"


def ansible_floor(tasks, mitigating, runs):
    """Ansible's own cost of a playbook of ``tasks`` tasks on this machine: the same number of tasks that do nothing
    (a set_fact of a constant, one forked worker each, as every task of the governed playbook), run with the same
    configuration and inventory. Also the moment its task number ``mitigating`` + 1 starts, where the governed run's
    mitigating task starts. Returns the medians over ``runs`` runs: (whole, to that task) in seconds."""
    lines = ["---", "- name: Ansible's floor", "  hosts: localhost", "  gather_facts: false", "  tasks:"]
    for number in range(tasks):
        if number == mitigating:
            lines += ["    - name: Mark the moment the mitigating task starts", "      ansible.builtin.debug:",
                      "        msg: \"%s {{ now().timestamp() }}\"" % FLOOR_MARK]
        else:
            lines += ["    - name: Do nothing %d" % number, "      ansible.builtin.set_fact:",
                      "        floor_%d: %d" % (number, number)]
    work = tempfile.mkdtemp(prefix="bench-floor-", dir=os.path.join(ROOT, "build"))
    try:
        playbook = os.path.join(work, "floor.yml")
        with open(playbook, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        env = ansible_env()
        walls, marks = [], []
        for _run in range(runs):
            started = time.time()
            wall, proc = timed([os.path.join(VENV_BIN, "ansible-playbook"), playbook], env=env, cwd=ROOT)
            if proc.returncode != 0:
                raise SystemExit("the floor playbook failed:\n%s" % proc.stdout[-3000:])
            walls.append(wall)
            marks.append(float(re.search(FLOOR_MARK + r" ([0-9.]+)", proc.stdout).group(1)) - started)
        return statistics.median(walls), statistics.median(marks)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def floor_report(variants, walls, mitigations, mitigating_task):
    """Ansible's floor for the governed runs (as many do-nothing tasks, the mitigating one at the same place), and
    what the governed run spends above it: the roles' work, templating and module imports."""
    runs = [tasks for tasks in TASKS_RUN if any(mitigating_task in name for name in tasks)]
    if not runs:
        raise SystemExit("no governed run started a task named like %r" % mitigating_task)
    counts = statistics.median_low(len(tasks) for tasks in runs)
    tasks = next(tasks for tasks in runs if len(tasks) == counts)
    mitigating = [number for number, name in enumerate(tasks) if mitigating_task in name][0]
    whole, to_task = ansible_floor(len(tasks), mitigating, len(walls[variants[0][0]]))
    a = statistics.median(walls[variants[0][0]])
    pa = statistics.median(mitigations[variants[0][0]])
    print("  %-38s %9.2f   to task %d of %d: %.2f"
          % ("Ansible's floor (same no. of no-ops)", whole, mitigating + 1, len(tasks), to_task))
    print("  %-38s %9.2f   to mitigation: %.2f" % ("(a) above the floor", a - whole, pa - to_task))


def succeeded_receipt(ledger, where):
    """The one receipt a run wrote to ``ledger``, which must say succeeded."""
    receipts = [e["receipt"] for e in pb.ledger_entries(ledger)]
    if [r["outcome"] for r in receipts] != ["succeeded"]:
        raise SystemExit("expected one succeeded receipt %s, got %s" % (where, receipts))
    return receipts[0]


def epoch(stamp):
    """Seconds since the epoch of an RFC 3339 stamp (``...Z``, with or without fractions)."""
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def governed(sandbox, namespace, work, junit=False):
    """The playbook as an operator runs it; with ``junit``, also the per-task split (ansible-core's junit callback
    builds its report at the end of the run, about 0.15 s, so the timed runs go without it)."""
    ledger = os.path.join(work, "evidence", "ledger.jsonl")
    env = {}
    if junit:
        env = {"ANSIBLE_CALLBACKS_ENABLED": "ansible.builtin.junit", "JUNIT_OUTPUT_DIR": os.path.join(work, "junit")}
        os.makedirs(env["JUNIT_OUTPUT_DIR"])
    wall, started = run_playbook("playbooks/rollback-deploy.yml", {
        "namespace": namespace, "deployment": NAME, "target_rev": 2, "evidence_dir": os.path.join(work, "evidence"),
        "receipt_ledger": ledger}, work, "in %s" % namespace, args=EXTRA_ARGS, env=env)
    receipt = succeeded_receipt(ledger, "in %s" % namespace)
    split = task_split(env["JUNIT_OUTPUT_DIR"]) if junit else {}
    split[MITIGATION] = epoch(receipt["details"]["patch_accepted_at"]) - started
    return wall, split


def task_split(junit_dir):
    """Seconds per phase from the junit report, plus rollout_undo's own timings."""
    (report,) = [os.path.join(junit_dir, f) for f in os.listdir(junit_dir) if f.endswith(".xml")]
    split = dict((phase, 0.0) for phase, _prefixes in PHASES)
    split["tasks total"] = 0.0
    for case in ET.parse(report).getroot().iter("testcase"):
        seconds = float(case.get("time"))
        # "[host] <play>: <role> : <task> <args>"; include_tasks records (_raw_params=) count as other tasks.
        name = case.get("name")
        task = name.split(" : ", 1)[1] if " : " in name else name.split(": ", 1)[-1]
        split["tasks total"] += seconds
        for phase, prefixes in PHASES:
            if task.startswith(prefixes) and "_raw_params=" not in task:
                split[phase] += seconds
                if phase in MODULE_TIMINGS:
                    out = case.find("system-out")
                    result = json.loads(out.text) if out is not None and out.text else {}
                    timings = result.get("timings") or {}
                    for key in ("read", "patch", "wait", "total"):
                        if key in timings:
                            split["  %s: module %s" % (MODULE_TIMINGS[phase], key)] = timings[key]
                break
    return split


def kubectl_undo(sandbox, namespace, _work):
    k = " ".join(sandbox.kubectl_argv)
    script = ("{k} rollout undo deployment/{n} -n {ns} --to-revision=2 && " + PATCHED +
              " && {k} rollout status deployment/{n} -n {ns}").format(k=k, n=NAME, ns=namespace)
    started = time.time()
    wall, proc = timed(["bash", "-c", script])
    if proc.returncode != 0:
        raise SystemExit("kubectl rollout undo failed in %s: %s" % (namespace, proc.stderr))
    return wall, {MITIGATION: patched_at(proc.stdout) - started}


# --module-processes: every module as its own process (the in-process action plugins switched off), to measure
# what running the modules in the task worker saves.
EXTRA_ARGS = []

# Printed right after the command that patches the workload returns: the moment of mitigation of a shell variant.
PATCHED = 'echo "PATCHED $(date +%s.%N)"'
MITIGATION = "time to mitigation (start -> patch)"


def patched_at(stdout):
    (line,) = [line for line in stdout.splitlines() if line.startswith("PATCHED ")]
    return float(line.split()[1])


RUNBOOK = r"""
K="{k}"
ROLLBACK_ID="rollback-$(date +%Y%m%d-%H%M%S)"
OUT="{work}"
mkdir -p "$OUT/$ROLLBACK_ID"
$K rollout history deployment/{n} -n {ns}
$K describe deployment {n} -n {ns} > "$OUT/$ROLLBACK_ID/deployment-before.txt"
$K get pods -n {ns} -l component=frontend -o yaml > "$OUT/$ROLLBACK_ID/pods-before.yaml"
$K logs -n {ns} -l component=frontend --all-containers=true \
  --tail=1000 > "$OUT/$ROLLBACK_ID/logs-before-rollback.txt"
$K rollout undo deployment/{n} -n {ns} --to-revision=2 || exit 1
{patched}
$K rollout status deployment/{n} -n {ns} --watch || exit 1
$K get pods -n {ns} -l component=frontend \
  -o jsonpath='{{range .items[*]}}{{.metadata.name}}{{"\t"}}{{.spec.containers[0].image}}{{"\n"}}{{end}}'
$K get pods -n {ns} -l component=frontend
$K describe deployment {n} -n {ns} > "$OUT/$ROLLBACK_ID/deployment-after.txt"
$K get pods -n {ns} -l component=frontend -o yaml > "$OUT/$ROLLBACK_ID/pods-after.yaml"
cat > "$OUT/$ROLLBACK_ID/rollback-manifest.json" <<EOF
{{
  "rollback_id": "$ROLLBACK_ID",
  "timestamp": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "component": "frontend",
  "from_version": "v0.1.2",
  "to_version": "v0.1.1",
  "reason": "Breaking UI changes affecting user workflows",
  "approver": "$USER",
  "incident_id": "INC-12345",
  "verification": {{
    "health_check": "passed",
    "smoke_tests": "passed",
    "user_validation": "pending"
  }}
}}
EOF
tar -czf "$OUT/$ROLLBACK_ID.tar.gz" -C "$OUT" "$ROLLBACK_ID"
"""


def runbook(sandbox, namespace, work):
    script = RUNBOOK.format(k=" ".join(sandbox.kubectl_argv), n=NAME, ns=namespace, work=work, patched=PATCHED)
    started = time.time()
    wall, proc = timed(["bash", "-c", script])
    if proc.returncode != 0 or not [f for f in os.listdir(work) if f.endswith(".tar.gz")]:
        raise SystemExit("the runbook procedure failed in %s: %s" % (namespace, proc.stderr[-2000:]))
    return wall, {MITIGATION: patched_at(proc.stdout) - started}


VARIANTS = (("(a) governed playbook", governed), ("(b) kubectl undo+status", kubectl_undo),
            ("(c) runbook procedure", runbook))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the namespaces and the work directory")
    parser.add_argument("--module-processes", action="store_true",
                        help="run every module as its own process (governed_rollback_in_process=false)")
    opts = parser.parse_args()
    if opts.module_processes:
        EXTRA_ARGS.extend(["-e", "governed_rollback_in_process=false"])
    sandbox = Sandbox()
    tag = uuid.uuid4().hex[:6]
    namespaces = dict((name, "bench-rollback-%s-%s" % (name[1], tag)) for name, _func in VARIANTS)
    os.makedirs(os.path.join(ROOT, "build"), exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench-rollback-", dir=os.path.join(ROOT, "build"))
    walls = dict((name, []) for name, _func in VARIANTS)
    mitigations = dict((name, []) for name, _func in VARIANTS)
    splits = []
    load_before = os.getloadavg()[0]
    try:
        for namespace in namespaces.values():
            sandbox.kubectl("create", "namespace", namespace)
        for run in range(opts.runs):
            # Variants take turns within a round, so a slow moment of the shared sandbox hits all of them.
            for name, func in VARIANTS:
                namespace = namespaces[name]
                sandbox.reset(namespace, opts.replicas)
                out = os.path.join(work, "%s-%d" % (name[1], run))
                os.makedirs(out)
                wall, split = func(sandbox, namespace, out)
                if not sandbox.rolled_back(namespace, opts.replicas):
                    raise SystemExit("%s did not leave %d ready %s pods in %s"
                                     % (name, opts.replicas, TARGET, namespace))
                walls[name].append(wall)
                mitigations[name].append(split.pop(MITIGATION))
                print("# run %d %-24s %6.2f s (patch at %.2f s)" % (run + 1, name, wall, mitigations[name][-1]),
                      flush=True)
        # The playbook's split, from one more run with the junit callback (not in the medians above).
        name = VARIANTS[0][0]
        sandbox.reset(namespaces[name], opts.replicas)
        out = os.path.join(work, "a-split")
        os.makedirs(out)
        wall, split = governed(sandbox, namespaces[name], out, junit=True)
        split.pop(MITIGATION)
        split["wall"] = wall
        splits.append(split)
        print("# split run %-20s %6.2f s (with the junit callback)" % (name, wall), flush=True)
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
            for namespace in namespaces.values():
                sandbox.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    report(walls, mitigations, splits, opts, (load_before, os.getloadavg()[0]))


def variant_table(title, variants, walls, mitigations, mitigation_label, load, first_column="variant"):
    """The medians of a three-variant bench ((a) governed, (b) bare commands, (c) the runbook's procedure), whole
    run and time to mitigation."""
    median = dict((name, statistics.median(values)) for name, values in walls.items())
    mitigated = dict((name, statistics.median(values)) for name, values in mitigations.items())
    c = median[variants[2][0]]
    print()
    print("%s, median of %d runs (wall seconds); host: %d CPUs shared with the sandbox, load average %.1f -> %.1f"
          % (title, len(walls[variants[0][0]]), os.cpu_count(), load[0], load[1]))
    print("%-40s %9s %9s %9s %9s" % (first_column, "median", "min", "max", "vs (c)"))
    for name, _func in variants:
        values = walls[name]
        print("%-40s %9.2f %9.2f %9.2f %8.2fx" % (name, median[name], min(values), max(values), median[name] / c))
    for name, _func in variants:
        values = mitigations[name]
        print("  %-38s %9.2f %9.2f %9.2f" % (name[:4] + mitigation_label, mitigated[name], min(values), max(values)))


def issue14_goals(variants, walls, mitigations):
    """Issue 14's goals on the same run's medians; returns the whole-run medians (a, b, c)."""
    a, b, c = (statistics.median(walls[name]) for name, _func in variants)
    pa, pb_ = (statistics.median(mitigations[name]) for name, _func in variants[:2])
    goal("(a) time to mitigation <= (b)'s + 1.5 s", pa, pb_ + 1.5)
    goal("(a) whole run <= (b) + 1.5 s", a, b + 1.5)
    goal("(a) whole run <= 2 x (c)", a, 2.0 * c)
    return a, b, c


def variant_report(title, variants, walls, mitigations, mitigation_label, load, mitigating_task):
    """The table of a three-variant bench with each variant's time to mitigation, Ansible's floor for the governed
    playbook (``mitigating_task``: part of the name of the task that mitigates), then issue 14's goals."""
    variant_table(title, variants, walls, mitigations, mitigation_label, load)
    floor_report(variants, walls, mitigations, mitigating_task)
    issue14_goals(variants, walls, mitigations)


def goal(label, value, limit):
    print("goal %-52s %6.2f <= %6.2f  %s" % (label, value, limit, "MET" if value <= limit else "MISSED"))


def report(walls, mitigations, splits, opts, load):
    variant_table("deployment rollback 3 -> 2, %d replicas" % opts.replicas, VARIANTS, walls, mitigations, MITIGATION,
                  load, first_column="variant / playbook phase")
    keys = []
    for phase, _prefixes in PHASES:
        keys.append(phase)
        keys.extend(k for k in splits[0] if MODULE_TIMINGS.get(phase) and k.startswith("  %s:" % MODULE_TIMINGS[phase]))
    print("  the playbook's phases, one run with the junit callback:")
    for key in keys:
        print("  %-38s %9.2f" % (key, statistics.median(s.get(key, 0.0) for s in splits)))
    overhead = statistics.median(s["wall"] - s["tasks total"] for s in splits)
    other = statistics.median(s["tasks total"] - sum(s[p] for p, _x in PHASES) for s in splits)
    print("  %-38s %9.2f" % ("other tasks (set_fact, includes, debug)", other))
    print("  %-38s %9.2f" % ("ansible outside tasks (start-up, parse)", overhead))
    floor_report(VARIANTS, walls, mitigations, "Roll back and wait for the rollout")
    # Issue 14's goals (the same run, medians), then issue 5's.
    a, b, c = issue14_goals(VARIANTS, walls, mitigations)
    goal("(a) whole run <= (c) / 2 (issue 5)", a, c / 2.0)
    goal("(a) whole run <= (b) + 2 s (issue 5)", a, b + 2.0)


if __name__ == "__main__":
    main()
