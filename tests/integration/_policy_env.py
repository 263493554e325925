"""A throwaway PEP for the policy rollback tests: a copy of the runbook's policy repository (v2.0 then v2.1, tagged,
with tests), a bundle server (sandbox/bundle_server.py) on a free port serving a temporary directory, and a real OPA
(the sandbox's binary) polling it every second with the status API on; plus, per test, the ConfigMap and the PEP
Deployment that mounts it in a throwaway namespace. The shared sandbox's OPA, bundle server and aureus namespace are
never touched."""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from tests.sandbox_env import ROOT

SEED = os.path.join(ROOT, "sandbox", "seed", "policies")
TAG = "pii-access-requires-approval-%s"
ANALYST_LOW = {"user": {"role": "analyst"}, "query": {"pii_level": "low"}}
ANALYST_HIGH = {"user": {"role": "analyst"}, "query": {"pii_level": "high"}}
PROBES = [
    {"name": "a previously blocked analyst low-PII query works again", "query": "data.aureus.pii.allow",
     "input": ANALYST_LOW, "expect": True},
    {"name": "the high-PII query without approval is still denied", "query": "data.aureus.pii.allow",
     "input": ANALYST_HIGH, "expect": False},
]
GIT_ID = ["-c", "user.name=Governance Lead", "-c", "user.email=governance.lead@example.com"]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo)] + GIT_ID + list(args), check=True, capture_output=True,
                          text=True).stdout.strip()


def policy_repo(path):
    """The runbook's repository: policies/ at v2.0, then v2.1, each commit tagged."""
    os.makedirs(os.path.join(path, "policies"))
    git(path, "init", "-q", "-b", "main")
    shas = {}
    for version in ("v2.0", "v2.1"):
        for name in os.listdir(os.path.join(SEED, version)):
            shutil.copy(os.path.join(SEED, version, name), os.path.join(path, "policies", name))
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", "pii-access-requires-approval %s" % version)
        git(path, "tag", TAG % version)
        shas[version] = git(path, "rev-parse", "HEAD")
    return shas


def commit_files(repo, files, message, tag=None):
    """Commit ``{path under policies/: text}`` on top of HEAD; returns the SHA."""
    for name, text in files.items():
        with open(os.path.join(repo, "policies", name), "w") as handle:
            handle.write(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    if tag:
        git(repo, "tag", tag)
    return git(repo, "rev-parse", "HEAD")


def seed_text(version, name):
    with open(os.path.join(SEED, version, name)) as handle:
        return handle.read()


def sha256_file(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def http_json(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


class Pep:
    """The bundle server and OPA of one test module."""

    def __init__(self, opa, workdir):
        self.opa = opa
        self.workdir = workdir
        self.repo = os.path.join(workdir, "policy-repo")
        self.shas = policy_repo(self.repo)
        self.server_dir = os.path.join(workdir, "bundle-server")
        self.bundle = os.path.join(self.server_dir, "bundles", "aureus.tar.gz")
        os.makedirs(os.path.dirname(self.bundle))
        self.server_port = free_port()
        self.opa_port = free_port()
        self.url = "http://127.0.0.1:%d" % self.opa_port
        self.server = None
        self.opa_proc = None
        config = os.path.join(workdir, "opa-config.yaml")
        with open(config, "w") as handle:
            handle.write("services:\n  bundles:\n    url: http://127.0.0.1:%d\nbundles:\n  aureus:\n    service: bundles\n"
                         "    resource: bundles/aureus.tar.gz\n    polling:\n      min_delay_seconds: 1\n"
                         "      max_delay_seconds: 1\nstatus:\n  service: bundles\n" % self.server_port)
        self.publish("v2.1")
        self.start_server()
        self.opa_log = open(os.path.join(workdir, "opa.log"), "w")
        self.opa_proc = subprocess.Popen([opa, "run", "--server", "--addr=127.0.0.1:%d" % self.opa_port,
                                          "--log-level=error", "--config-file=" + config],
                                         stdout=self.opa_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.wait_revision(self.shas["v2.1"])

    def start_server(self):
        self.server = subprocess.Popen([sys.executable, os.path.join(ROOT, "sandbox", "bundle_server.py"), "--root",
                                        self.server_dir, "--port", str(self.server_port)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen("http://127.0.0.1:%d/health" % self.server_port, timeout=2).read()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the bundle server did not start")

    def stop_server(self):
        self.server.terminate()
        self.server.wait(10)

    def build(self, ref):
        """The bundle of ``ref`` as the sandbox's seed.sh builds it (bytes)."""
        sha = git(self.repo, "rev-parse", ref + "^{commit}")
        build = tempfile.mkdtemp(dir=self.workdir)
        archive = subprocess.run(["git", "-C", self.repo, "archive", sha, "policies"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", build], input=archive.stdout, check=True)
        with open(os.path.join(build, "policies", ".manifest"), "w") as handle:
            json.dump({"revision": sha, "roots": ["aureus"]}, handle)
        out = os.path.join(build, "bundle.tar.gz")
        subprocess.run([self.opa, "build", "-b", ".", "--ignore", "*_test.rego", "--revision", sha, "-o", out],
                       cwd=os.path.join(build, "policies"), check=True, capture_output=True)
        with open(out, "rb") as handle:
            data = handle.read()
        shutil.rmtree(build)
        return sha, data

    def publish(self, version):
        sha, data = self.build(TAG % version)
        tmp = self.bundle + ".tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, self.bundle)
        return sha

    def reset(self):
        """v2.1 served and active again."""
        if self.server.poll() is not None:
            self.start_server()
        self.publish("v2.1")
        self.wait_revision(self.shas["v2.1"])

    def revision(self):
        try:
            return http_json(self.url + "/v1/status")["result"]["bundles"]["aureus"].get("active_revision")
        except (OSError, KeyError, ValueError):
            return None

    def wait_revision(self, sha, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.revision() == sha:
                return
            time.sleep(0.25)
        raise AssertionError("OPA did not activate %s (reports %s)" % (sha, self.revision()))

    def decide(self, inp):
        return http_json(self.url + "/v1/data/aureus/pii/allow", {"input": inp}).get("result")

    def close(self):
        for proc in (self.opa_proc, self.server):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.opa_log.close()


POLICY_DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "aureus-policy", "labels": {"app": "aureus", "component": "policy"}},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "aureus", "component": "policy"}},
             "template": {"metadata": {"labels": {"app": "aureus", "component": "policy"}},
                          "spec": {"containers": [{"name": "opa", "image": "openpolicyagent/opa:1.10.1",
                                                   "args": ["run", "--server", "--addr=0.0.0.0:8181", "/app/policies"],
                                                   "volumeMounts": [{"name": "policies", "mountPath": "/app/policies",
                                                                     "readOnly": True}]}],
                                   "volumes": [{"name": "policies", "configMap": {"name": "aureus-policies"}}]}}},
}


def seed_configmap_and_pep(kubectl, namespace):
    """ConfigMap aureus-policies at v2.1 (created the runbook's way) and the PEP Deployment mounting it."""
    configmap = kubectl("-n", namespace, "create", "configmap", "aureus-policies",
                        "--from-file=" + os.path.join(SEED, "v2.1", "pii-access-policy.rego"),
                        "--from-file=" + os.path.join(SEED, "v2.1", "policy-manifest.json"),
                        "--dry-run=client", "-o", "yaml").stdout
    kubectl("-n", namespace, "apply", "-f", "-", input=configmap)
    kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(POLICY_DEPLOYMENT))
    kubectl("-n", namespace, "rollout", "status", "deployment/aureus-policy", "--timeout=60s")


def configmap(kubectl, namespace):
    return json.loads(kubectl("-n", namespace, "get", "configmap", "aureus-policies", "-o", "json",
                              "--show-managed-fields").stdout)


def deployment(kubectl, namespace):
    return json.loads(kubectl("-n", namespace, "get", "deployment", "aureus-policy", "-o", "json").stdout)


def worktree_state(repo):
    """Everything a user's checkout holds: HEAD, index, status and every file's bytes."""
    files = {}
    for base, dirs, names in os.walk(repo):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in names:
            path = os.path.join(base, name)
            with open(path, "rb") as handle:
                files[os.path.relpath(path, repo)] = handle.read()
    return {"head": git(repo, "rev-parse", "HEAD"), "status": git(repo, "status", "--porcelain"),
            "index": sha256_file(os.path.join(repo, ".git", "index")), "files": files}
