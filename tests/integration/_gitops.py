"""The sandbox's GitOps loop as the tests see it: Gitea's API and git (credentials from a 0600 file, never argv),
Flux's objects, and aureus-api. Every test starts from `seed.sh --reset gitops` (main at the bad release v1.5.0,
no rollback branch or pull request, no freeze) and the loop is shared, so these tests run one at a time."""

import base64
import hashlib
import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from tests.integration import _playbook as pb
from tests.sandbox_env import ROOT, reseed
from tests.sandbox_fixtures import get, wait_until

NAMESPACE = "aureus"
FLUX_NS = "flux-system"
KUSTOMIZATION = "aureus-api"
GITREPOSITORY = "aureus-deploy"
PATH = "apps/aureus-api"
KFILE = PATH + "/kustomization.yaml"
FREEZE = "freeze.governed.io/record"


def digest(version):
    return "sha256:" + hashlib.sha256(("aureus/api:%s" % version).encode()).hexdigest()


GOOD = "aureus/api@" + digest("v1.4.0")
BAD = "aureus/api@" + digest("v1.5.0")


def reset():
    reseed("--reset", "gitops")


class Forge:
    """Gitea's API for the assertions (state of the repository, branches, pull requests)."""

    def __init__(self, env):
        self.url = env["SANDBOX_GITEA_URL"]
        self.user = env["SANDBOX_GITEA_USER"]
        with open(env["SANDBOX_GITEA_TOKEN_FILE"]) as handle:
            self.token = handle.read().strip()
        self.repo_url = env["SANDBOX_GITOPS_REPO_URL"]
        self.api = "%s/api/v1/repos/%s/aureus-deploy" % (self.url, self.user)
        self.state = env.get("SANDBOX_STATE") or os.path.join(ROOT, ".sandbox")

    def request(self, method, path, body=None, raw=False):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.api + path, data=data, method=method, headers={
            "Authorization": "token " + self.token, "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=20) as response:
            text = response.read().decode()
        return text if raw else (json.loads(text) if text.strip() else None)

    def head(self, branch="main"):
        return self.request("GET", "/branches/" + branch)["commit"]["id"]

    def branches(self):
        return sorted(b["name"] for b in self.request("GET", "/branches?limit=100"))

    def pulls(self, state="all"):
        return self.request("GET", "/pulls?state=%s&limit=50" % state)

    def file(self, path, ref="main"):
        return self.request("GET", "/raw/%s?ref=%s" % (path, ref), raw=True)

    def commit(self, sha):
        return self.request("GET", "/git/commits/" + sha)

    def seeded(self, which):
        with open(os.path.join(self.state, "gitops", which + ".sha")) as handle:
            return handle.read().strip()

    def snapshot(self):
        """What "nothing was pushed" means: main's head, the branches and the pull requests."""
        return {"main": self.head(), "branches": self.branches(),
                "pulls": sorted((p["number"], p["state"]) for p in self.pulls())}

    def push_commit(self, message, edit):
        """Push one commit to main (a developer's change): ``edit(workdir)`` changes the files."""
        with tempfile.TemporaryDirectory() as work:
            config = os.path.join(work, "gitconfig")
            fd = os.open(config, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "w") as handle:
                auth = base64.b64encode(("%s:%s" % (self.user, self.token)).encode()).decode()
                handle.write('[http]\n\textraHeader = Authorization: Basic %s\n[user]\n\tname = Dev\n\temail = '
                             'dev@aureus.example\n' % auth)
            env = dict(os.environ, GIT_CONFIG_GLOBAL=config, GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0")
            repo = os.path.join(work, "repo")
            subprocess.run(["git", "clone", "-q", self.repo_url, repo], check=True, env=env, capture_output=True)
            edit(repo)
            subprocess.run(["git", "-C", repo, "commit", "-qam", message], check=True, env=env, capture_output=True)
            subprocess.run(["git", "-C", repo, "push", "-q", "origin", "main"], check=True, env=env,
                           capture_output=True)
            return subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], check=True, env=env,
                                  capture_output=True, text=True).stdout.strip()

    def alive(self):
        try:
            urllib.request.urlopen(self.url + "/api/healthz", timeout=3).read()
            return True
        except (urllib.error.URLError, OSError):
            return False


def deployed_image(kubectl):
    return get(kubectl, "deployment", NAMESPACE, "aureus-api")["spec"]["template"]["spec"]["containers"][0]["image"]


def kustomization(kubectl):
    return get(kubectl, "kustomization", FLUX_NS, KUSTOMIZATION)


def settled(kubectl, timeout=60):
    """Wait until kustomize-controller has reconciled the Kustomization's current generation (its status write
    changes resourceVersion, so a test comparing resourceVersions starts after it)."""
    def done():
        live = kustomization(kubectl)
        generation = live["metadata"]["generation"]
        status = live.get("status", {})
        ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
        reconciling = [c for c in status.get("conditions", []) if c["type"] == "Reconciling"]
        return (status.get("observedGeneration") == generation and ready
                and ready[0].get("observedGeneration") == generation and ready[0]["status"] != "Unknown"
                and not any(c["status"] == "True" for c in reconciling))
    wait_until(done, timeout=timeout, what="kustomize-controller to reconcile %s's generation" % KUSTOMIZATION)


def reconcile_to(kubectl, sha, timeout=90):
    """Request a reconcile and wait until Flux applied ``sha`` (the test's own pushes) and settled: the source first
    (its new artifact triggers a Kustomization reconcile of its own), then the Kustomization, so no status write of
    this reconcile is still to come when the test takes its baseline."""
    def request(kind, name):
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + str(time.time())
        kubectl("annotate", "--overwrite", "-n", FLUX_NS, kind, name, "reconcile.fluxcd.io/requestedAt=" + now)
        return now

    def fetched():
        status = get(kubectl, "gitrepository", FLUX_NS, GITREPOSITORY).get("status", {})
        return (status.get("lastHandledReconcileAt") == asked
                and (status.get("artifact") or {}).get("revision", "").endswith(sha))

    def applied():
        status = kustomization(kubectl).get("status", {})
        return status.get("lastHandledReconcileAt") == asked and status.get("lastAppliedRevision", "").endswith(sha)

    asked = request("gitrepository", GITREPOSITORY)
    wait_until(fetched, timeout=timeout, what="Flux to fetch %s" % sha)
    asked = request("kustomization", KUSTOMIZATION)
    wait_until(applied, timeout=timeout, what="Flux to apply %s" % sha)
    settled(kubectl, timeout=timeout)


def module_args(env, **extra):
    with open(env["SANDBOX_GITEA_TOKEN_FILE"]) as handle:
        token = handle.read().strip()
    args = {"repo_url": env["SANDBOX_GITOPS_REPO_URL"], "repo_token": token, "path": PATH,
            "kustomization": KUSTOMIZATION, "kustomization_namespace": FLUX_NS, "workload_namespace": NAMESPACE,
            "kubeconfig": env["KUBECONFIG"], "incident_id": "INC-T-%d" % int(time.time() * 1000),
            "reason": "v1.5.0 answers 500 on /api/query", "actor": "oncall", "wait_timeout": 90}
    args.update(extra)
    return args


class Incident:
    """One incident's playbook runs (each in its own runner directory) sharing an evidence directory and a ledger:
    ``defaults`` are the extra variables of every run, a run's own keyword arguments override them."""

    def __init__(self, workdir, incident_id, playbook=pb.PLAYBOOK, **defaults):
        self.workdir = str(workdir)
        self.evidence_dir = os.path.join(self.workdir, "evidence")
        self.ledger = os.path.join(self.workdir, "ledger.jsonl")
        self.incident_id = incident_id
        self.playbook = playbook
        self.defaults = defaults
        self.runs = 0

    def run(self, verbosity=0, envvars=None, **extravars):
        self.runs += 1
        variables = dict(self.defaults, evidence_dir=self.evidence_dir, receipt_ledger=self.ledger,
                         incident_id=self.incident_id)
        variables.update(extravars)
        return pb.run_playbook(os.path.join(self.workdir, "runner-%d" % self.runs), variables, verbosity=verbosity,
                               playbook=self.playbook, envvars=envvars)

    def receipts(self):
        return [e["receipt"] for e in pb.ledger_entries(self.ledger)]
