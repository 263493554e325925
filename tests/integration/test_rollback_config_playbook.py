"""playbooks/rollback-config.yml end to end on the sandbox, the way the AUREUS runbook's section 2 reads.

Each scenario builds its own copy of the config incident in its own namespace (a ConfigMap or Secret with a history:
the good content recorded as a snapshot, then the bad push; a Deployment consuming it) and runs the playbook from the
checkout with the sandbox inventory, overriding namespace, config_name, evidence_dir and receipt_ledger. The seeded
aureus namespace is never touched (molecule/config drills that one).
"""

import base64
import json
import os
import secrets
import tempfile

import pytest

from ansible_collections.governed.rollback.plugins.module_utils import _config_history as ch
from tests.integration import _playbook as pb
from tests.sandbox_fixtures import get, items

PLAYBOOK = "playbooks/rollback-config.yml"
GOOD = {"evidence.retention.days": "2555", "ratelimit.query.limit": "100", "log.level": "info"}
BAD = {"evidence.retention.days": "30", "ratelimit.query.limit": "10000", "log.level": "info"}
CHAOS = "pod-container-running-failed.stage.kwok.x-k8s.io"


class ConfigIncident:
    """One throwaway copy of the config incident: namespace, evidence directory, ledger, a runner per run."""

    def __init__(self, kubectl, kubeconfig, namespace, workdir, kind="ConfigMap"):
        self.kubectl, self.kubeconfig = kubectl, kubeconfig
        self.namespace, self.workdir, self.kind = namespace, workdir, kind
        self.evidence_dir = os.path.join(str(workdir), "evidence")
        self.ledger = os.path.join(str(workdir), "ledger.jsonl")
        self.runs = 0

    def apply(self, data):
        manifest = {"apiVersion": "v1", "kind": self.kind,
                    "metadata": {"name": "app-config", "namespace": self.namespace}}
        manifest["stringData" if self.kind == "Secret" else "data"] = data
        self.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    def snapshot(self):
        with tempfile.TemporaryDirectory() as tmp:
            failed, result = pb.run_module(tmp, "governed.rollback.config_revert", {
                "state": "snapshot", "kind": self.kind, "namespace": self.namespace, "name": "app-config",
                "kubeconfig": self.kubeconfig, "actor": "deploy-pipeline"})
        assert not failed, result.get("msg")
        return result["snapshot_id"]

    def consumer(self, broken=False, secret_env=None):
        container = {"name": "app", "image": "app:v1"}
        ref = "configMapRef" if self.kind == "ConfigMap" else "secretRef"
        container["envFrom"] = [{ref: {"name": "app-config"}}]
        if secret_env:
            container["env"] = [{"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
                                for name, (secret, key) in sorted(secret_env.items())]
        labels = {"app": "web"}
        if broken:
            labels[CHAOS] = "true"
        manifest = {"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "web", "namespace": self.namespace},
                    "spec": {"replicas": 2, "progressDeadlineSeconds": 600, "selector": {"matchLabels": {"app": "web"}},
                             "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}}}
        self.kubectl("create", "-f", "-", input=json.dumps(manifest))
        if not broken:
            self.kubectl("rollout", "status", "deployment/web", "-n", self.namespace, "--timeout=60s")

    def history(self, good=None, bad=None):
        self.apply(good or GOOD)
        good_id = self.snapshot()
        self.apply(bad or BAD)
        self.snapshot()
        return good_id

    def run(self, check=False, verbosity=0, **extravars):
        self.runs += 1
        variables = {"namespace": self.namespace, "config_name": "app-config", "config_kind": self.kind,
                     "evidence_dir": self.evidence_dir, "receipt_ledger": self.ledger}
        variables.update(extravars)
        return pb.run_playbook(os.path.join(str(self.workdir), "runner-%d" % self.runs), variables, check=check,
                               verbosity=verbosity, playbook=PLAYBOOK)

    def data(self):
        obj = get(self.kubectl, self.kind.lower(), self.namespace, "app-config")
        if self.kind == "Secret":
            return dict((k, base64.b64decode(v).decode()) for k, v in (obj.get("data") or {}).items())
        return obj.get("data") or {}

    def versions(self):
        return {"config": get(self.kubectl, self.kind.lower(), self.namespace, "app-config")["metadata"]["resourceVersion"],
                "web": get(self.kubectl, "deployment", self.namespace, "web")["metadata"]["resourceVersion"],
                "snapshots": sorted(o["metadata"]["name"] for o in items(
                    self.kubectl, self.kind.lower(), self.namespace, ch.SNAPSHOT_LABEL + "=true"))}

    def receipts(self):
        return [e["receipt"] for e in pb.ledger_entries(self.ledger)]

    def verify_ledger(self):
        failed, result = pb.verify_ledger(os.path.join(str(self.workdir), "verify-%d" % self.runs), self.ledger)
        assert not failed and result["valid"], result.get("message")
        assert result["signatures_checked"] and result["unsigned_entries"] == []


@pytest.fixture
def incident(kubectl, kubeconfig, namespace, tmp_path):
    return ConfigIncident(kubectl, kubeconfig, namespace, tmp_path)


@pytest.fixture(scope="module")
def reverted(kubectl, kubeconfig, tmp_path_factory):
    """The headline, run once for the module: the inventory's defaults on a copy of the seeded incident, at -v."""
    namespace = pb.new_namespace(kubectl, "pbc")
    try:
        incident = ConfigIncident(kubectl, kubeconfig, namespace, tmp_path_factory.mktemp("config"))
        incident.consumer()
        good_id = incident.history()
        before = incident.versions()
        run = incident.run(verbosity=1)
        yield incident, run, before, good_id
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_revert_restores_the_last_good_content_verified_evidenced_and_receipted(reverted):
    incident, run, before, good_id = reverted

    assert run.status == "successful", run.explain()
    assert incident.data() == GOOD
    receipts = incident.receipts()
    assert len(receipts) == 1
    receipt = receipts[0]
    assert (receipt["outcome"], receipt["rollback_type"], receipt["config_type"]) == (
        "succeeded", "configuration", "ConfigMap")
    assert receipt["changed_keys"] == ["evidence.retention.days", "ratelimit.query.limit"]
    assert receipt["snapshot_id"] == good_id and receipt["to_version"] == good_id
    assert receipt["rollback_target_ref"] == receipt["details"]["after_ref"]
    assert receipt["approval"]["rule"] == "configuration" and receipt["approved_by"][0]["name"] == "devops-lead"
    for check in ("data_digest_matches_target", "consumers_restarted", "new_pods_ready", "config_applied"):
        assert receipt["verification"][check] == "pass", receipt["verification"]
    # Every restart names the content that caused it, on the workload and in the receipt.
    restart = receipt["details"]["restarts"][0]
    assert restart["workload"] == "Deployment/web" and restart["reloaded_from"] == receipt["rollback_target_ref"]
    template = get(incident.kubectl, "deployment", incident.namespace, "web")["spec"]["template"]["metadata"]
    assert json.loads(template["annotations"][ch.RELOADED_FROM_ANNOTATION])["hash"] == restart["reloaded_from"]
    incident.verify_ledger()


def test_evidence_holds_the_before_after_diff_of_the_changed_keys(reverted):
    incident, run, _before, _good = reverted
    archives = pb.archives(incident.evidence_dir)
    assert len(archives) == 1, run.explain()
    texts = dict(pb.every_text(incident.evidence_dir))
    summary = [json.loads(text) for where, text in texts.items() if where.endswith("diff/summary.json")][0]
    config = [e for e in summary["changed"] if e["path"].startswith("config/")][0]
    assert config["changed_keys"]["changed"] == ["evidence.retention.days", "ratelimit.query.limit"]
    diff = [text for where, text in texts.items() if where.endswith("diff/config/ConfigMap-app-config.yaml.diff")][0]
    assert '-  evidence.retention.days: "30"' in diff and '+  evidence.retention.days: "2555"' in diff
    assert any("before/consumer-deployment-web/Deployment-web.yaml" in where for where in texts)


def test_running_the_same_rollback_again_changes_nothing(reverted):
    incident, _run, _before, _good = reverted
    settled = incident.versions()

    again = incident.run()

    assert again.status == "successful", again.explain()
    assert incident.versions()["config"] == settled["config"]
    assert incident.versions()["snapshots"] == settled["snapshots"]
    assert len(incident.receipts()) == 1, "a no-op wrote a receipt"
    assert "Nothing to roll back" in again.stdout and "already matches snapshot" in again.stdout


def test_no_secret_value_reaches_evidence_receipt_snapshots_or_output(kubectl, kubeconfig, namespace, tmp_path):
    incident = ConfigIncident(kubectl, kubeconfig, namespace, tmp_path, kind="Secret")
    good = {"db-password": "canary-pbcfg-good-" + secrets.token_hex(10), "api-token": "canary-pbcfg-tok-" +
            secrets.token_hex(12)}
    bad = dict(good, **{"db-password": "canary-pbcfg-bad-" + secrets.token_hex(10)})
    incident.consumer()
    incident.history(good, bad)

    run = incident.run(verbosity=1)

    assert run.status == "successful", run.explain()
    assert incident.data() == good
    receipt = incident.receipts()[0]
    assert receipt["config_type"] == "Secret" and receipt["changed_keys"] == ["db-password"]
    assert receipt["current_ref"].startswith("hmac@sha256:")
    canaries = [value for data in (good, bad) for value in data.values()]
    canaries += [base64.b64encode(c.encode()).decode() for c in canaries]
    snapshots = items(kubectl, "secret", namespace, ch.SNAPSHOT_LABEL + "=true")
    snapshot_metadata = json.dumps([(s["metadata"]["name"], s["metadata"].get("labels"), s["metadata"].get("annotations"))
                                    for s in snapshots])
    assert len(snapshots) == 2
    assert pb.files_containing(incident.workdir, canaries) == []
    for canary in canaries:
        assert canary not in run.stdout and canary not in snapshot_metadata


def test_a_consumer_that_never_becomes_ready_fails_with_failure_evidence_and_receipt(incident):
    incident.consumer(broken=True)
    incident.history()

    run = incident.run(wait_timeout=10)

    assert run.status == "failed"
    receipt = incident.receipts()[-1]
    assert receipt["outcome"] == "failed"
    assert "did not finish restarting" in receipt["failure"]["message"]
    assert receipt["verification"]["consumers_restarted"] == "not_run"
    assert any("/failure/" in path for path, _text in pb.every_text(incident.evidence_dir))
    assert incident.data() == GOOD  # the config itself was reverted; the failure is the restart's
    incident.verify_ledger()


def test_without_the_devops_lead_the_rollback_is_denied_and_changes_nothing(incident):
    incident.consumer()
    incident.history()
    before = incident.versions()

    run = incident.run(approvals=[])

    assert run.status == "failed"
    assert incident.versions() == before and incident.data() == BAD
    receipt = incident.receipts()[-1]
    assert receipt["outcome"] == "denied" and "devops_lead" in receipt["approval"]["missing_roles"]


def test_check_mode_shows_the_diff_and_the_workloads_that_would_restart(incident):
    incident.consumer()
    incident.history()
    before = incident.versions()

    run = incident.run(check=True)

    assert run.status == "successful", run.explain()
    plan = run.task_result("Plan the revert with a server-side dry run (refuses immutable, hash-named, GitOps-owned "
                           "config and paused consumers)")
    assert plan["plan"]["would_restart"] == ["deployment/web"]
    assert plan["changed_keys"] == ["evidence.retention.days", "ratelimit.query.limit"]
    assert incident.versions() == before and incident.receipts() == []
    assert "PLANNED (check mode" in run.stdout
