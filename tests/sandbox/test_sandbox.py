"""The sandbox itself is a real platform: these prove it behaves like one before anything relies on it."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import time
import uuid

import psycopg2
import pytest

from tests.sandbox_env import ROOT, reseed

pytestmark = pytest.mark.sandbox


def deployment_manifest(name, image, labels_extra=None, deadline=None):
    template_labels = {"app": name}
    template_labels.update(labels_extra or {})
    spec = {
        "replicas": 2,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": template_labels},
            "spec": {"containers": [{"name": "c", "image": image}]},
        },
    }
    if deadline:
        spec["progressDeadlineSeconds"] = deadline
    return json.dumps({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec})


def test_deployment_gets_ready_pods(kubectl, namespace):
    kubectl("-n", namespace, "create", "-f", "-", input=deployment_manifest("web", "example/web:1"))
    kubectl("-n", namespace, "rollout", "status", "deployment/web", "--timeout=60s")
    pods = json.loads(kubectl("-n", namespace, "get", "pods", "-l", "app=web", "-o", "json").stdout)["items"]
    assert len(pods) == 2
    for pod in pods:
        ready = [c for c in pod["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True"


def test_template_change_creates_new_replicaset_and_retires_old(kubectl, namespace):
    kubectl("-n", namespace, "create", "-f", "-", input=deployment_manifest("web", "example/web:1"))
    kubectl("-n", namespace, "rollout", "status", "deployment/web", "--timeout=60s")
    kubectl("-n", namespace, "set", "image", "deployment/web", "c=example/web:2")
    kubectl("-n", namespace, "rollout", "status", "deployment/web", "--timeout=60s")
    rs = json.loads(kubectl("-n", namespace, "get", "rs", "-l", "app=web", "-o", "json").stdout)["items"]
    by_image = {r["spec"]["template"]["spec"]["containers"][0]["image"]: r for r in rs}
    assert set(by_image) == {"example/web:1", "example/web:2"}
    assert by_image["example/web:1"]["status"]["replicas"] == 0
    assert by_image["example/web:2"]["status"]["readyReplicas"] == 2


def test_kubectl_rollout_undo_works(kubectl, namespace):
    kubectl("-n", namespace, "create", "-f", "-", input=deployment_manifest("web", "example/web:1"))
    kubectl("-n", namespace, "rollout", "status", "deployment/web", "--timeout=60s")
    kubectl("-n", namespace, "set", "image", "deployment/web", "c=example/web:2")
    kubectl("-n", namespace, "rollout", "status", "deployment/web", "--timeout=60s")
    kubectl("-n", namespace, "rollout", "undo", "deployment/web")
    kubectl("-n", namespace, "rollout", "status", "deployment/web", "--timeout=60s")
    image = kubectl("-n", namespace, "get", "deployment", "web", "-o",
                    "jsonpath={.spec.template.spec.containers[0].image}").stdout
    assert image == "example/web:1"


def test_chaos_label_makes_a_rollout_fail(kubectl, namespace):
    bad = {"pod-container-running-failed.stage.kwok.x-k8s.io": "true"}
    kubectl("-n", namespace, "create", "-f", "-", input=deployment_manifest("web", "example/web:bad", bad, 10))
    result = kubectl("-n", namespace, "rollout", "status", "deployment/web", "--timeout=60s", check=False)
    assert result.returncode != 0
    assert "exceeded its progress deadline" in result.stderr


def test_seeded_frontend_has_the_runbook_history(kubectl):
    # Drills roll aureus-frontend back; the reset puts the runbook's incident state back first.
    reseed("--reset")
    out = kubectl("-n", "aureus", "rollout", "history", "deployment/aureus-frontend").stdout
    assert "Initial deployment" in out and "Update to v0.1.1" in out and "Update to v0.1.2" in out


def test_postgresql_accepts_connections_and_has_the_migration_history(sandbox_env):
    conn = psycopg2.connect(host=sandbox_env["PGHOST"], port=sandbox_env["PGPORT"], user=sandbox_env["PGUSER"],
                            password=sandbox_env["PGPASSWORD"], dbname=sandbox_env["PGDATABASE"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT version FROM schema_migrations ORDER BY version DESC LIMIT 1")
            assert cur.fetchone()[0] == "v0.1.2-add-pii-tracking-table"
            cur.execute("SELECT count(*) FROM datasets")
            assert cur.fetchone()[0] > 0
    finally:
        conn.close()


@pytest.mark.parametrize("ref", ["pii-access-requires-approval-v2.0", "pii-access-requires-approval-v2.1"])
def test_opa_test_runs_on_the_seeded_policy_repo(sandbox_env, tmp_path, ref):
    repo = sandbox_env["SANDBOX_POLICY_REPO"]
    archive = subprocess.run(["git", "-C", repo, "archive", ref, "policies"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive.stdout, check=True)
    result = subprocess.run([sandbox_env["SANDBOX_OPA"], "test", "-v", str(tmp_path / "policies")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS" in result.stdout


def test_the_pep_serves_the_active_policy(sandbox_env):
    import urllib.request

    body = json.dumps({"input": {"user": {"role": "analyst"}, "query": {"pii_level": "low"}}}).encode()
    req = urllib.request.Request(sandbox_env["SANDBOX_OPA_URL"] + "/v1/data/aureus/pii/decision", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        decision = json.load(resp)["result"]
    assert decision == {"allow": False, "policy": "pii-access-requires-approval", "version": "v2.1"}


def test_sandbox_down_leaves_no_process_behind():
    """A second, private sandbox instance: start it, stop it, and check every recorded PID is gone."""
    # Inside the checkout, not /tmp/pytest-of-root (mode 0700), so the postgres user can reach its data dir.
    state = pathlib.Path(ROOT) / (".sandbox-downtest-" + uuid.uuid4().hex[:6])
    env = dict(os.environ, GOVERNED_ROLLBACK_STATE=str(state))
    up = subprocess.run([os.path.join(ROOT, "sandbox", "up.sh")], env=env, capture_output=True, text=True, check=False)
    assert up.returncode == 0, up.stdout + up.stderr
    first = {p.name[:-4]: int(p.read_text()) for p in (state / "pids").glob("*.pid")}
    assert {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "postgres", "opa"} <= set(first)

    # A killed run leaves a stale state directory: `up` must recover from it by itself.
    os.kill(first["kube-apiserver"], signal.SIGKILL)
    os.kill(first["kwok"], signal.SIGKILL)
    time.sleep(0.5)
    again = subprocess.run([os.path.join(ROOT, "sandbox", "up.sh")], env=env, capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "state from an earlier run" in again.stdout + again.stderr
    assert not [name for name, pid in first.items() if os.path.exists("/proc/%d" % pid)]
    pids = {p.name[:-4]: int(p.read_text()) for p in (state / "pids").glob("*.pid")}
    assert set(pids) == set(first)
    down = subprocess.run([os.path.join(ROOT, "sandbox", "down.sh")], env=env, capture_output=True, text=True, check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    time.sleep(0.5)
    alive = [name for name, pid in pids.items() if os.path.exists("/proc/%d" % pid)]
    assert alive == []
    assert not (state / "env").exists()
    shutil.rmtree(state, ignore_errors=True)
    shutil.rmtree(str(state) + "-keys", ignore_errors=True)


def test_pod_logs_are_served_current_and_previous(kubectl, namespace):
    kubectl("-n", namespace, "create", "-f", "-", input=deployment_manifest("web", "example/web:1"))
    kubectl("-n", namespace, "rollout", "status", "deployment/web", "--timeout=60s")
    current = kubectl("-n", namespace, "logs", "deployment/web", "--tail=2").stdout.splitlines()
    assert len(current) == 2 and "POST /api/query" in current[-1]
    previous = kubectl("-n", namespace, "logs", "deployment/web", "--previous").stdout
    assert "panic" in previous


def test_a_go_build_failure_names_the_module_and_shows_gos_error():
    cache = pathlib.Path(ROOT) / "build" / ("cold-cache-" + uuid.uuid4().hex[:6])
    env = dict(os.environ, GOVERNED_ROLLBACK_CACHE=str(cache), OPA_VERSION="v0.0.0-does-not-exist")
    # Reuse the real cached builds of everything but OPA, so only OPA is built (and fails).
    real = pathlib.Path(os.path.expanduser("~/.cache/governed-rollback"))
    cache.mkdir(parents=True)
    for entry in real.iterdir():
        if not entry.name.startswith("opa-"):
            (cache / entry.name).symlink_to(entry)
    try:
        result = subprocess.run([os.path.join(ROOT, "sandbox", "build.sh")], env=env, capture_output=True, text=True, check=False)
        assert result.returncode != 0
        assert "FAILED to build opa from Go module github.com/open-policy-agent/opa@v0.0.0-does-not-exist" in result.stderr
        assert "go's error" in result.stderr and "v0.0.0-does-not-exist" in result.stderr.split("go's error", 1)[1]
    finally:
        shutil.rmtree(cache, ignore_errors=True)
