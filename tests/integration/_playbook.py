"""Shared harness for the playbook-level tests: a broken frontend in a throwaway namespace, and the playbook run
the way an operator (or AWX, through ansible-runner) runs it.

The workload mirrors the seeded aureus-frontend: revision 1 runs v0.1.0, 2 runs v0.1.1, 3 runs v0.1.2 and carries
KWOK's chaos label, so it crash-loops while revision 2's pods keep serving.
"""

import base64
import contextlib
import json
import os
import subprocess
import tarfile
import uuid

from tests.sandbox_env import ROOT
from tests.sandbox_fixtures import get, items, wait_until

CHAOS_LABEL = "pod-container-running-failed.stage.kwok.x-k8s.io"
CHANGE_CAUSE = "kubernetes.io/change-cause"
REVISION = "deployment.kubernetes.io/revision"
IMAGES = ("aureus/frontend:v0.1.0", "aureus/frontend:v0.1.1", "aureus/frontend:v0.1.2")
PLAYBOOK = "playbooks/rollback-deploy.yml"
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
SIGNING_PUBLIC_KEY = os.path.join(ROOT, ".sandbox", "signing.pub")
SIGNING_KEY = os.path.join(ROOT, ".sandbox", "signing.key")
INCIDENT = {"reason": "Breaking UI changes affecting user workflows", "incident_id": "INC-12345",
            "requested_by": "oncall", "priority": "P2"}


# --- the workload --------------------------------------------------------------------------------------------------


def new_namespace(kubectl, prefix="pb"):
    name = "%s-%s" % (prefix, uuid.uuid4().hex[:8])
    kubectl("create", "namespace", name)
    return name


def _template(name, image, broken, env, secret_env):
    labels = {"app": name, "component": "frontend"}
    if broken:
        labels[CHAOS_LABEL] = "true"
    container = {"name": "frontend", "image": image, "ports": [{"containerPort": 8080}],
                 "env": [{"name": "AUREUS_ENV", "value": "sandbox"}]}
    for key, value in sorted((env or {}).items()):
        container["env"].append({"name": key, "value": value})
    for key, (secret, secret_key) in sorted((secret_env or {}).items()):
        container["env"].append({"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": secret_key}}})
    return {"metadata": {"labels": labels}, "spec": {"containers": [container]}}


def _settled(kubectl, namespace, name, revisions):
    """The controller has observed the last release and every revision's ReplicaSet has its pods."""
    deployment = get(kubectl, "deployment", namespace, name)
    if deployment["status"].get("observedGeneration", 0) < deployment["metadata"]["generation"]:
        return False
    replicasets = items(kubectl, "replicasets", namespace)
    if len(replicasets) < revisions:
        return False
    pods = items(kubectl, "pods", namespace)
    return all(rs["status"].get("replicas", 0) == rs["spec"]["replicas"] for rs in replicasets) and \
        sum(rs["spec"]["replicas"] for rs in replicasets) == len(pods)


def frontend_with_history(kubectl, namespace, name="frontend", replicas=3, broken=(3,), env=None, secret_env=None,
                          metadata=None, images=IMAGES, save_config=False):
    """A Deployment whose revision N runs images[N-1] with the runbook's change-causes; revisions in ``broken``
    carry the chaos label and never become Ready. ``save_config`` creates it the way ``kubectl apply`` would, with a
    last-applied-configuration annotation. Returns the Deployment once the controller has settled."""
    meta = {"name": name, "namespace": namespace, "labels": {"app": name, "component": "frontend"},
            "annotations": {CHANGE_CAUSE: "Initial deployment"}}
    for key, value in (metadata or {}).items():
        meta.setdefault(key, {}).update(value)
    # A long progress deadline: the controller must not stamp ProgressDeadlineExceeded (a new resourceVersion)
    # on the broken release while a test compares resourceVersions.
    spec = {"replicas": replicas, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 3600,
            "selector": {"matchLabels": {"app": name, "component": "frontend"}},
            "template": _template(name, images[0], 1 in broken, env, secret_env)}
    manifest = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}
    kubectl("create", "-f", "-", *(["--save-config"] if save_config else []), input=json.dumps(manifest))
    if 1 not in broken:
        kubectl("rollout", "status", "deployment/" + name, "-n", namespace, "--timeout=90s")
    for number, image in enumerate(images[1:], start=2):
        template = _template(name, image, number in broken, env, secret_env)
        template["metadata"]["labels"].setdefault(CHAOS_LABEL, None)  # strategic merge: drop a stale chaos label
        body = {"metadata": {"annotations": {CHANGE_CAUSE: "Update to " + image.rsplit(":", 1)[-1]}},
                "spec": {"template": template}}
        kubectl("patch", "deployment", name, "-n", namespace, "--type", "strategic", "-p", json.dumps(body))
        if number not in broken:
            kubectl("rollout", "status", "deployment/" + name, "-n", namespace, "--timeout=90s")
    wait_until(lambda: _settled(kubectl, namespace, name, len(images)), what="deployment %s/%s to settle"
               % (namespace, name))
    return get(kubectl, "deployment", namespace, name)


def create_secret(kubectl, namespace, name, data):
    manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
                "type": "Opaque", "stringData": data}
    kubectl("create", "-f", "-", input=json.dumps(manifest))


def resource_versions(kubectl, namespace, name):
    """What "nothing changed" means: the Deployment's and every ReplicaSet's resourceVersion."""
    deployment = get(kubectl, "deployment", namespace, name)
    return {"deployment": deployment["metadata"]["resourceVersion"],
            "replicasets": dict((rs["metadata"]["name"], rs["metadata"]["resourceVersion"])
                                for rs in items(kubectl, "replicasets", namespace))}


def pods(kubectl, namespace, name):
    found = []
    for pod in items(kubectl, "pods", namespace, "app=%s,component=frontend" % name):
        conditions = dict((c["type"], c["status"]) for c in pod.get("status", {}).get("conditions", []))
        found.append({"name": pod["metadata"]["name"], "ready": conditions.get("Ready") == "True",
                      "images": [c["image"] for c in pod["spec"]["containers"]],
                      "deleting": "deletionTimestamp" in pod["metadata"]})
    return found


def template_image(deployment):
    return deployment["spec"]["template"]["spec"]["containers"][0]["image"]


@contextlib.contextmanager
def immutable(path):
    """Make a directory unwritable even for root (chattr +i; root ignores permission bits) while in the block."""
    subprocess.run(["chattr", "+i", path], check=True)
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", path], check=True)


# --- running the playbook ------------------------------------------------------------------------------------------


def _path():
    """The venv's ansible first: ansible-runner starts ``ansible-playbook`` by name."""
    return VENV_BIN + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")


class PlaybookRun:
    """What one ansible-playbook run left behind: status, events, stdout, custom stats (AWX artifacts)."""

    def __init__(self, runner):
        self.status = runner.status
        self.rc = runner.rc
        self.events = list(runner.events)
        self.stdout = runner.stdout.read()
        self.stats = runner.stats or {}
        self.artifact_dir = runner.config.artifact_dir
        stats_events = [e for e in self.events if e["event"] == "playbook_on_stats"]
        self.artifact_data = stats_events[-1]["event_data"].get("artifact_data", {}) if stats_events else {}

    def results(self, event):
        return [e["event_data"] for e in self.events if e["event"] == event]

    @property
    def failed_tasks(self):
        """Tasks that failed, in order (also those a rescue then handled; not those with ignore_errors)."""
        return [e["task"] for e in self.results("runner_on_failed") if not e.get("ignore_errors")]

    @property
    def changed_tasks(self):
        return [e["task"] for e in self.results("runner_on_ok") if e["res"].get("changed")]

    def task_result(self, task_name):
        """The last result of the task named ``task_name`` (ok or failed)."""
        found = [e["event_data"]["res"] for e in self.events if e["event"] in ("runner_on_ok", "runner_on_failed")
                 and e["event_data"].get("task") == task_name]
        assert found, "task %r did not run; tasks run: %s" % (
            task_name, sorted(set(e["event_data"].get("task") for e in self.events if "task" in e["event_data"])))
        return found[-1]

    def count(self, key):
        return sum((self.stats.get(key) or {}).values())

    def explain(self):
        return "status=%s rc=%s failed tasks=%s\n%s" % (self.status, self.rc, self.failed_tasks, self.stdout[-6000:])


def run_playbook(private_dir, extravars, check=False, verbosity=0, envvars=None, inventory=None, playbook=PLAYBOOK,
                 project_dir=ROOT, cmdline=None, ansible_config=True):
    """Run the rollback playbook through ansible-runner from the checkout (cwd), as AWX runs a job template.

    ``ansible_config=False`` leaves ANSIBLE_CONFIG unset, so ansible finds the project's ansible.cfg itself.
    """
    import ansible_runner

    env = {"ANSIBLE_NOCOLOR": "1", "PATH": _path()}
    if ansible_config:
        env["ANSIBLE_CONFIG"] = os.path.join(ROOT, "ansible.cfg")
    env.update(envvars or {})
    flags = (["--check"] if check else []) + (cmdline or [])
    os.makedirs(str(private_dir), exist_ok=True)
    runner = ansible_runner.run(
        private_data_dir=str(private_dir), project_dir=project_dir, playbook=playbook, extravars=extravars,
        envvars=env, inventory=inventory, verbosity=verbosity or None, cmdline=" ".join(flags) or None, quiet=True,
        suppress_env_files=True)
    return PlaybookRun(runner)


def run_module_with_output(private_dir, module, args, envvars=None, check=False, diff=False):
    """Run one module ad hoc on localhost through ansible-runner; return (failed, result, stdout)."""
    import ansible_runner

    env = {"ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"), "PATH": _path()}
    env.update(envvars or {})
    flags = " ".join(flag for flag, on in (("--check", check), ("--diff", diff)) if on)
    os.makedirs(str(private_dir), exist_ok=True)
    runner = ansible_runner.run(
        private_data_dir=str(private_dir), host_pattern="localhost", module=module, module_args=json.dumps(args),
        cmdline=flags or None, quiet=True, envvars=env, suppress_env_files=True,
        inventory="localhost ansible_connection=local ansible_python_interpreter=%s"
                  % os.path.join(VENV_BIN, "python"))
    outcomes = [e for e in runner.events if e["event"] in ("runner_on_ok", "runner_on_failed")]
    stdout = runner.stdout.read()
    assert len(outcomes) == 1, "ansible did not run %s: %s" % (module, stdout)
    return outcomes[0]["event"] == "runner_on_failed", outcomes[0]["event_data"]["res"], stdout


def run_module(private_dir, module, args, envvars=None, check=False, diff=False):
    """Run one module ad hoc on localhost (for example rollback_receipt state=verify); return (failed, result)."""
    return run_module_with_output(private_dir, module, args, envvars, check, diff)[:2]


# --- what the run left on disk -------------------------------------------------------------------------------------


def ledger_entries(path):
    if not os.path.exists(str(path)):
        return []
    with open(str(path)) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def verify_ledger(private_dir, ledger):
    return run_module(private_dir, "governed.rollback.rollback_receipt",
                      {"state": "verify", "ledger": str(ledger), "public_key_path": SIGNING_PUBLIC_KEY})


def archives(evidence_dir):
    found = []
    for base, _dirs, files in os.walk(str(evidence_dir)):
        found.extend(os.path.join(base, f) for f in files if f.endswith(".tar.gz"))
    return sorted(found)


def every_text(root):
    """(where, text) for every file under root, tar.gz members included and DSSE payloads decoded."""
    for base, _dirs, files in os.walk(str(root)):
        for filename in sorted(files):
            path = os.path.join(base, filename)
            with open(path, "rb") as handle:
                data = handle.read()
            yield path, data.decode("utf-8", "replace")
            if filename.endswith(".tar.gz"):
                with tarfile.open(path, "r:gz") as archive:
                    for member in archive.getmembers():
                        if member.isfile():
                            content = archive.extractfile(member).read()
                            yield "%s!%s" % (path, member.name), content.decode("utf-8", "replace")
            if filename.endswith(".intoto.jsonl") or filename.endswith(".jsonl"):
                for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
                    for envelope in _envelopes(json.loads(line)) if line.strip() else ():
                        payload = base64.b64decode(envelope["payload"]).decode("utf-8", "replace")
                        yield "%s:%d!payload" % (path, number), payload


def _envelopes(value):
    if isinstance(value, dict):
        if "payload" in value and "payloadType" in value:
            yield value
        for child in value.values():
            yield from _envelopes(child)
    elif isinstance(value, list):
        for child in value:
            yield from _envelopes(child)


def files_containing(root, needles):
    """Every (where, needle) for a needle found in a file under root (also base64-decoded DSSE payloads)."""
    return [(where, needle) for where, text in every_text(root) for needle in needles if needle in text]


def leaked(root, needles):
    """files_containing, less ansible-runner's own record of the environment a run was started with
    (``artifacts/<job>/command``: the copy of what AWX injected, not something a module wrote) when the needle is in
    its ``env`` only."""
    found = []
    for where, needle in files_containing(root, needles):
        if os.path.basename(where) == "command" and \
                os.path.basename(os.path.dirname(os.path.dirname(where))) == "artifacts":
            with open(where) as handle:
                launch = json.load(handle)
            if needle not in json.dumps(dict(launch, env={})):
                continue
        found.append((where, needle))
    return found
