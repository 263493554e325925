"""evidence_capture against the real sandbox, run through Ansible: nothing mocked.

Each test gets its own namespace with a Deployment whose pods reference a Secret holding a
canary value (applied with ``kubectl apply``, so the last-applied annotation carries it in
plain text, the worst case). KWOK makes the pods Running and serves the sandbox's seeded
container log for every pod, which leaks the sandbox's canary API token in an Authorization
header, as real apps do. Pods that are never scheduled have no logs at all: their log reads
fail and must be recorded as a failed source, not crash the capture.
"""

import base64
import gzip
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import uuid

import pytest

from tests.integration import _playbook as pb
from tests.sandbox_fixtures import wait_until


# --- harness -------------------------------------------------------------------------------------------------------


@pytest.fixture
def run_capture(kubeconfig, sandbox_env):
    """Run governed.rollback.evidence_capture through ansible-runner; return (failed, result, stdout)."""
    pg_env = dict((k, sandbox_env[k]) for k in ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"))

    def run(check=False, diff=False, **args):
        args.setdefault("kubeconfig", kubeconfig)
        with tempfile.TemporaryDirectory() as tmp:
            return pb.run_module_with_output(tmp, "governed.rollback.evidence_capture", args, pg_env, check, diff)

    return run


@pytest.fixture
def evidence_dir():
    with tempfile.TemporaryDirectory(prefix="evidence-") as tmp:
        yield tmp


def app_manifest(namespace, canary, token_canary):
    return """
apiVersion: v1
kind: Secret
metadata: {name: app-secrets, namespace: %(ns)s}
stringData:
  db-password: %(canary)s
  api-token: %(token)s
---
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config, namespace: %(ns)s}
data:
  evidence.retention.days: "2555"
  ratelimit.query.limit: "100"
  log.level: info
  feature.snapshots.enabled: "true"
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: %(ns)s, labels: {component: frontend}}
spec:
  replicas: 2
  selector: {matchLabels: {component: frontend}}
  template:
    metadata: {labels: {component: frontend}}
    spec:
      containers:
      - name: web
        image: aureus/frontend:v0.1.1
        env:
        - name: DB_PASSWORD
          valueFrom: {secretKeyRef: {name: app-secrets, key: db-password}}
        - name: LOG_LEVEL
          valueFrom: {configMapKeyRef: {name: app-config, key: log.level}}
        envFrom:
        - secretRef: {name: app-secrets}
        volumeMounts:
        - {name: creds, mountPath: /etc/creds}
      volumes:
      - name: creds
        secret: {secretName: app-secrets}
""" % {"ns": namespace, "canary": canary, "token": token_canary}


@pytest.fixture
def app(namespace, kubectl, sandbox_env):
    """The canary workload in its own namespace, pods Running. Returns its coordinates and canaries."""
    canary = "canary-" + uuid.uuid4().hex
    token = "canary-token-" + uuid.uuid4().hex
    kubectl("apply", "-f", "-", input=app_manifest(namespace, canary, token))

    def running():
        pods = json.loads(kubectl("get", "pods", "-n", namespace, "-l", "component=frontend", "-o", "json").stdout)
        phases = [p.get("status", {}).get("phase") for p in pods["items"]]
        return len(phases) == 2 and all(phase == "Running" for phase in phases)

    wait_until(running, what="2 Running pods in %s" % namespace)
    return {"namespace": namespace, "canary": canary, "token": token,
            "sandbox_token": sandbox_env["SANDBOX_CANARY_API_TOKEN"],
            "sandbox_password": sandbox_env["SANDBOX_CANARY_DB_PASSWORD"]}


def k8s_sources(namespace, logs=True):
    sources = [
        {"type": "k8s_workload", "name": "deployment", "namespace": namespace, "resource_name": "web",
         "required": True},
        {"type": "k8s_pods", "name": "pods", "namespace": namespace, "label_selector": "component=frontend"},
        {"type": "k8s_configmap", "name": "config", "namespace": namespace, "resource_name": "app-config"},
        {"type": "k8s_secret", "name": "secrets", "namespace": namespace, "resource_name": "app-secrets"},
        {"type": "k8s_events", "name": "events", "namespace": namespace},
    ]
    if logs:
        sources.append({"type": "k8s_logs", "name": "logs", "namespace": namespace,
                        "label_selector": "component=frontend", "tail_lines": 100})
    return sources


def forms(*values):
    out = []
    for value in values:
        out += [value, base64.b64encode(value.encode()).decode().rstrip("=")]
    return out


def files_under(path):
    for root, _dirs, names in os.walk(path):
        for name in names:
            yield os.path.join(root, name)


def archive_bytes(path):
    """Every byte the archive holds: the raw tar stream (headers included) and each extracted member."""
    with gzip.open(path) as gz:
        raw = gz.read()
    with tarfile.open(path) as tar, tempfile.TemporaryDirectory() as out:
        tar.extractall(out, filter="data")
        members = [open(p, "rb").read() for p in files_under(out)]
    return raw, members


# --- the tests -----------------------------------------------------------------------------------------------


def test_canary_secret_value_never_appears_in_the_pack_the_archive_or_the_task_output(app, run_capture, evidence_dir):
    ns = app["namespace"]
    failed, before, out_before = run_capture(rollback_id="rb-canary", phase="before", evidence_dir=evidence_dir,
                                             sources=k8s_sources(ns))
    assert not failed, before.get("msg")
    failed, after, out_after = run_capture(rollback_id="rb-canary", phase="after", evidence_dir=evidence_dir,
                                           sources=k8s_sources(ns), finalize=True)
    assert not failed, after.get("msg")
    assert after["archive_sha256"] and os.path.exists(after["archive_path"])

    secrets = forms(app["canary"], app["token"], app["sandbox_token"], app["sandbox_password"])
    every_file = list(files_under(evidence_dir))
    assert len(every_file) > 10
    for path in every_file:
        with open(path, "rb") as handle:
            body = handle.read()
        for secret in secrets:
            assert secret.encode() not in body, "%s leaks a secret" % path
    raw, members = archive_bytes(after["archive_path"])
    assert len(members) == after["evidence_manifest"]["files"] + before["evidence_manifest"]["files"] + \
        after["evidence_manifest"]["diff_files"] + 1
    for secret in secrets:
        assert secret.encode() not in raw
        assert not any(secret.encode() in member for member in members)
        for output in (out_before, out_after, json.dumps(before), json.dumps(after)):
            assert secret not in output

    # The Secret is there, as byte counts; the last-applied annotation (which held the canary) is gone.
    secret_file = os.path.join(evidence_dir, "rb-canary", "before", "secrets", "Secret-app-secrets.yaml")
    with open(secret_file) as handle:
        text = handle.read()
    assert "db-password:\n    bytes: %d\n    redacted: true" % len(app["canary"]) in text
    assert "last-applied-configuration" not in text and "managedFields" not in text
    assert after["redaction"]["status"] == "passed"
    assert before["manifest"]["redaction"]["status"] == "passed"
    # The seeded container log leaks the sandbox's API token in an Authorization header: masked, line kept.
    logs_dir = os.path.join(evidence_dir, "rb-canary", "before", "logs")
    pod_logs = [p for p in files_under(logs_dir) if p.endswith(".log")]
    assert len(pod_logs) == 2
    with open(pod_logs[0]) as handle:
        log = handle.read()
    assert '"header":"Authorization: Bearer **REDACTED**"' in log and "upstream rejected request" in log


def test_two_captures_of_unchanged_state_give_the_same_archive_digest(app, run_capture, sandbox_env):
    ns = app["namespace"]
    sources = k8s_sources(ns) + [
        {"type": "git_file", "name": "policy", "repo": sandbox_env["SANDBOX_POLICY_REPO"],
         "path": "policies/pii-access-policy.rego", "ref": "HEAD"}]
    digests = []
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
        for evidence in (first, second):
            for phase in ("before", "after"):
                failed, result, _out = run_capture(rollback_id="rb-same", phase=phase, evidence_dir=evidence,
                                                   sources=sources, finalize=phase == "after")
                assert not failed, result.get("msg")
            digests.append(result["archive_sha256"])
            # The capture times differ between the two packs; they live beside the archive, not in it.
            with open(os.path.join(evidence, "rb-same", "before", "manifest.json")) as handle:
                assert json.load(handle)["files"][0]["captured_at"]
        assert digests[0] == digests[1]
        failed, again, _out = run_capture(rollback_id="rb-same", phase="after", evidence_dir=second, finalize=True)
        assert not failed and again["changed"] is False and again["archive_sha256"] == digests[1]


def test_before_and_after_around_a_configmap_change_show_exactly_the_changed_keys(app, run_capture, kubectl,
                                                                                  evidence_dir):
    ns = app["namespace"]
    sources = [{"type": "k8s_configmap", "name": "config", "namespace": ns, "resource_name": "app-config"},
               {"type": "k8s_workload", "name": "deployment", "namespace": ns, "resource_name": "web"}]
    failed, _before, _out = run_capture(rollback_id="rb-config", phase="before", evidence_dir=evidence_dir,
                                        sources=sources)
    assert not failed
    kubectl("patch", "configmap", "app-config", "-n", ns, "--type", "merge", "-p",
            json.dumps({"data": {"evidence.retention.days": "365", "ratelimit.query.limit": "50"}}))
    failed, after, stdout = run_capture(diff=True, rollback_id="rb-config", phase="after", evidence_dir=evidence_dir,
                                        sources=sources, finalize=True)
    assert not failed, after.get("msg")
    changed = dict((c["path"], c) for c in after["diff_summary"]["changed"])
    assert list(changed) == ["config/ConfigMap-app-config.yaml"], "the Deployment did not change"
    keys = changed["config/ConfigMap-app-config.yaml"]["changed_keys"]
    assert keys["all"] == ["evidence.retention.days", "ratelimit.query.limit"]
    assert keys["added"] == [] and keys["removed"] == []
    assert changed["config/ConfigMap-app-config.yaml"]["changed_fields"] == [
        "data.evidence.retention.days", "data.ratelimit.query.limit", "metadata.resourceVersion"]
    with open(os.path.join(evidence_dir, "rb-config", "diff", "config", "ConfigMap-app-config.yaml.diff")) as handle:
        diff = handle.read()
    edits = [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert sorted(edits) == sorted([
        '-  evidence.retention.days: "2555"', '+  evidence.retention.days: "365"',
        '-  ratelimit.query.limit: "100"', '+  ratelimit.query.limit: "50"',
        [e for e in edits if e.startswith("-  resourceVersion")][0],
        [e for e in edits if e.startswith("+  resourceVersion")][0]])
    assert '+  evidence.retention.days: "365"' in stdout, "diff mode shows the diff"


def test_failing_sources_are_recorded_in_the_manifest_and_the_capture_goes_on(app, run_capture, evidence_dir):
    ns = app["namespace"]
    failed, result, _out = run_capture(rollback_id="rb-fail", phase="before", evidence_dir=evidence_dir, sources=[
        # The pods have no "sidecar" container: the API refuses each log read.
        {"type": "k8s_logs", "name": "logs", "namespace": ns, "label_selector": "component=frontend",
         "containers": ["sidecar"]},
        {"type": "k8s_configmap", "name": "missing", "namespace": ns, "resource_name": "no-such-config"},
        {"type": "pg_table_counts", "name": "counts", "tables": ["schema_migrations", "no_such_table"]},
        {"type": "k8s_configmap", "name": "config", "namespace": ns, "resource_name": "app-config"},
    ])
    assert not failed, result.get("msg")
    with open(result["manifest_path"]) as handle:
        manifest = json.load(handle)
    failures = dict((f["name"], f) for f in manifest["failed_sources"])
    assert set(failures) == {"logs", "missing", "counts"}
    # Every log stream fails and the source says so, with the API server's words.
    assert failures["logs"]["error"].startswith("2 of 2 log streams could not be read; first: pod web-")
    assert "container sidecar is not valid for pod web-" in failures["logs"]["error"]
    assert failures["missing"]["error"] == "ConfigMap %s/no-such-config not found" % ns
    assert failures["counts"]["error"].startswith("table(s) no_such_table not found; existing tables:")
    assert all(f["required"] is False for f in failures.values())
    assert manifest["incomplete"] is False
    paths = [f["path"] for f in manifest["files"]]
    assert "before/config/ConfigMap-app-config.yaml" in paths and "before/logs/errors.yaml" in paths
    assert [w for w in result.get("warnings", []) if "evidence source logs (k8s_logs) failed" in w]


def test_a_required_source_that_fails_fails_the_task_and_marks_the_phase_incomplete(namespace, run_capture,
                                                                                    evidence_dir):
    failed, result, _out = run_capture(rollback_id="rb-req", phase="before", evidence_dir=evidence_dir, sources=[
        {"type": "k8s_workload", "name": "deployment", "namespace": namespace, "resource_name": "ghost",
         "required": True}])
    assert failed
    assert "required evidence source(s) deployment failed" in result["msg"]
    with open(result["manifest_path"]) as handle:
        manifest = json.load(handle)
    assert manifest["incomplete"] is True and manifest["status"] == "incomplete"
    assert manifest["failed_sources"][0]["error"] == "Deployment %s/ghost not found" % namespace


def test_an_unwritable_evidence_dir_fails_in_preflight_with_a_clear_message_and_nothing_is_written(
        namespace, run_capture):
    with tempfile.TemporaryDirectory() as tmp:
        locked = os.path.join(tmp, "evidence")
        os.mkdir(locked)
        with pb.immutable(locked):
            failed, result, _out = run_capture(rollback_id="rb-locked", phase="before", evidence_dir=locked,
                                               preflight=True)
            assert failed
            assert result["msg"].startswith("evidence directory %s is not writable (" % locked)
            assert "before any rollback action" in result["msg"]
            failed, capture, _out = run_capture(rollback_id="rb-locked", phase="before", evidence_dir=locked,
                                                sources=[{"type": "k8s_events", "name": "events",
                                                          "namespace": namespace}])
            assert failed and "is not writable" in capture["msg"]
            assert os.listdir(locked) == []


def test_a_full_evidence_store_fails_in_preflight(run_capture, evidence_dir):
    failed, result, _out = run_capture(rollback_id="rb-full", phase="before", evidence_dir=evidence_dir,
                                       preflight=True, min_free_mb=1 << 40)
    assert failed and "MiB free, below min_free_mb=%d" % (1 << 40) in result["msg"]
    assert os.listdir(evidence_dir) == []
    failed, result, _out = run_capture(rollback_id="rb-full", phase="before", evidence_dir=evidence_dir,
                                       preflight=True)
    assert not failed and result["changed"] is False and result["preflight"]["writable"] is True
    assert os.listdir(evidence_dir) == []


def test_check_mode_lists_what_would_be_captured_and_writes_nothing(app, run_capture, evidence_dir):
    failed, result, _out = run_capture(check=True, rollback_id="rb-check", phase="before", evidence_dir=evidence_dir,
                                       sources=k8s_sources(app["namespace"]), finalize=True)
    assert not failed and result["changed"] is True
    assert [p["name"] for p in result["plan"]] == [s["name"] for s in k8s_sources(app["namespace"])] + ["finalize"]
    assert result["plan"][0]["captures"] == ("Deployment %s/web with its ReplicaSets/ControllerRevisions, HPA and "
                                             "events" % app["namespace"])
    assert os.listdir(evidence_dir) == []


def test_the_workload_capture_is_the_describe_equivalent(app, run_capture, evidence_dir, kubectl):
    ns = app["namespace"]
    kubectl("set", "image", "deployment/web", "-n", ns, "web=aureus/frontend:v0.1.2")
    wait_until(lambda: len(json.loads(kubectl("get", "rs", "-n", ns, "-o", "json").stdout)["items"]) == 2,
               what="a second ReplicaSet")
    kubectl("autoscale", "deployment/web", "-n", ns, "--min=2", "--max=4")
    failed, result, _out = run_capture(rollback_id="rb-describe", phase="before", evidence_dir=evidence_dir,
                                       sources=k8s_sources(ns, logs=False))
    assert not failed, result.get("msg")
    base = os.path.join(evidence_dir, "rb-describe", "before", "deployment")
    names = sorted(os.listdir(base))
    assert names[0] == "Deployment-web.yaml" and "HorizontalPodAutoscaler-web.yaml" in names
    assert len([n for n in names if n.startswith("ReplicaSet-web-")]) == 2
    import yaml
    with open(os.path.join(base, "describe.yaml")) as handle:
        describe = yaml.safe_load(handle)
    assert [r["revision"] for r in describe["revisions"]] == [1, 2]
    assert [r["images"] for r in describe["revisions"]] == [["aureus/frontend:v0.1.1"], ["aureus/frontend:v0.1.2"]]
    assert describe["workload"]["images"] == ["aureus/frontend:v0.1.2"]
    assert describe["horizontal_pod_autoscalers"][0]["max_replicas"] == 4
    assert any(e["reason"] == "ScalingReplicaSet" for e in describe["events"])
    with open(os.path.join(evidence_dir, "rb-describe", "before", "pods", "pods.yaml")) as handle:
        pods = yaml.safe_load(handle)
    assert pods["kind"] == "List" and {p["kind"] for p in pods["items"]} == {"Pod"}
    assert len(pods["items"]) == len(json.loads(kubectl("get", "pods", "-n", ns, "-l", "component=frontend",
                                                        "-o", "json").stdout)["items"])


def test_postgres_schema_counts_and_migrations_are_captured(run_capture, evidence_dir, sandbox_env):
    failed, result, _out = run_capture(rollback_id="rb-pg", phase="before", evidence_dir=evidence_dir, sources=[
        {"type": "pg_schema", "name": "schema", "schemas": ["public"]},
        {"type": "pg_row_counts", "name": "row-counts"},
        {"type": "pg_table_counts", "name": "counts", "tables": ["schema_migrations", "public.datasets"]},
        {"type": "pg_migrations", "name": "migrations"},
    ])
    assert not failed, result.get("msg")
    assert result["manifest"]["failed_sources"] == []
    import yaml
    base = os.path.join(evidence_dir, "rb-pg", "before")
    with open(os.path.join(base, "schema", "schema.sql")) as handle:
        schema = handle.read()
    assert "CREATE TABLE public.schema_migrations" in schema
    assert sandbox_env["PGPASSWORD"] not in schema
    psql = ["psql", "-At", "-c"]
    pg_vars = ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE")
    env = dict(os.environ, **dict((k, sandbox_env[k]) for k in pg_vars))
    count = int(subprocess.run(psql + ["SELECT count(*) FROM schema_migrations"], env=env, check=True,
                               capture_output=True, text=True).stdout)
    with open(os.path.join(base, "counts", "table_counts.yaml")) as handle:
        counts = yaml.safe_load(handle)
    assert counts["exact_counts"]["public.schema_migrations"] == count and counts["missing"] == []
    with open(os.path.join(base, "migrations", "schema_migrations.yaml")) as handle:
        migrations = yaml.safe_load(handle)
    assert migrations["table"] == "public.schema_migrations" and len(migrations["rows"]) == count
    with open(os.path.join(base, "row-counts", "pg_stat_user_tables.yaml")) as handle:
        stats = yaml.safe_load(handle)
    assert "schema_migrations" in [t["table"] for t in stats["tables"]]


def test_pg_dump_restrict_key_is_the_same_for_both_phases_of_a_rollback(run_capture, evidence_dir):
    keys = []
    for phase in ("before", "after"):
        failed, result, _out = run_capture(rollback_id="rb-pgkey", phase=phase, evidence_dir=evidence_dir,
                                           sources=[{"type": "pg_schema", "name": "schema"}])
        assert not failed, result.get("msg")
        with open(os.path.join(evidence_dir, "rb-pgkey", phase, "schema", "schema.sql")) as handle:
            keys.append([line for line in handle if line.startswith(("\\restrict", "\\unrestrict"))])
    assert keys[0] == keys[1]


def test_http_and_command_sources_never_record_credentials(run_capture, evidence_dir, sandbox_env):
    host = sandbox_env["SANDBOX_OPA_URL"].split("://", 1)[1]
    url = "http://ops:hunter2-%s@%s/health" % (uuid.uuid4().hex[:8], host)
    password = url.split(":")[2].split("@")[0]
    failed, result, stdout = run_capture(rollback_id="rb-http", phase="before", evidence_dir=evidence_dir, sources=[
        {"type": "http", "name": "opa", "url": url, "headers": {"Authorization": "Bearer " + password}},
        {"type": "command", "name": "curlish", "argv": [sys.executable, "-c", "import sys; print(sys.argv[1])", url]},
    ])
    assert not failed, result.get("msg")
    for path in files_under(evidence_dir):
        with open(path) as handle:
            assert password not in handle.read(), path
    assert password not in stdout and password not in json.dumps(result)
    import yaml
    with open(os.path.join(evidence_dir, "rb-http", "before", "opa", "response.yaml")) as handle:
        response = yaml.safe_load(handle)
    assert response["status"] == 200 and response["url"].startswith("http://ops:**REDACTED**@")


def test_a_git_file_is_captured_at_the_ref_with_its_commit(run_capture, evidence_dir, sandbox_env):
    repo = sandbox_env["SANDBOX_POLICY_REPO"]
    commit = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD~1"], check=True, capture_output=True,
                            text=True).stdout.strip()
    expected = subprocess.run(["git", "-C", repo, "show", "HEAD~1:policies/pii-access-policy.rego"], check=True,
                              capture_output=True, text=True).stdout
    failed, result, _out = run_capture(rollback_id="rb-git", phase="before", evidence_dir=evidence_dir, sources=[
        {"type": "git_file", "name": "policy", "repo": repo, "path": "policies/pii-access-policy.rego",
         "ref": "HEAD~1"}])
    assert not failed, result.get("msg")
    with open(os.path.join(evidence_dir, "rb-git", "before", "policy", "pii-access-policy.rego")) as handle:
        assert handle.read() == expected
    with open(result["manifest_path"]) as handle:
        assert json.load(handle)["sources"][0]["detail"]["commit"] == commit


def test_a_phase_is_not_captured_twice_unless_overwrite(app, run_capture, evidence_dir):
    sources = [{"type": "k8s_configmap", "name": "config", "namespace": app["namespace"],
                "resource_name": "app-config"}]
    failed, first, _out = run_capture(rollback_id="rb-twice", phase="before", evidence_dir=evidence_dir,
                                      sources=sources)
    assert not failed
    with open(first["manifest_path"], "rb") as handle:
        original = handle.read()
    failed, second, _out = run_capture(rollback_id="rb-twice", phase="before", evidence_dir=evidence_dir,
                                       sources=sources)
    assert failed and "already exists" in second["msg"] and "overwrite: true" in second["msg"]
    with open(first["manifest_path"], "rb") as handle:
        assert handle.read() == original
    failed, third, _out = run_capture(rollback_id="rb-twice", phase="before", evidence_dir=evidence_dir,
                                      sources=sources, overwrite=True)
    assert not failed and third["changed"] is True


CRASHING = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: crashing, namespace: %s}
spec:
  replicas: 1
  selector: {matchLabels: {component: crashing}}
  template:
    metadata:
      labels: {component: crashing, pod-container-running-failed.stage.kwok.x-k8s.io: "true"}
    spec:
      containers: [{name: web, image: aureus/frontend:v0.1.2}]
"""


def test_logs_of_the_previous_container_are_captured_where_a_container_restarted(namespace, kubectl, run_capture,
                                                                                 evidence_dir):
    kubectl("apply", "-f", "-", input=CRASHING % namespace)

    def restarted():
        pods = json.loads(kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
        return pods and any(s.get("restartCount", 0) > 0 for s in pods[0].get("status", {}).get("containerStatuses", []))

    wait_until(restarted, what="a restarted container")
    failed, result, _out = run_capture(rollback_id="rb-prev", phase="failure", evidence_dir=evidence_dir, sources=[
        {"type": "k8s_logs", "name": "logs", "namespace": namespace, "label_selector": "component=crashing"}])
    assert not failed, result.get("msg")
    paths = sorted(f["path"] for f in result["manifest"]["files"])
    assert [p.rsplit("_", 1)[1] for p in paths] == ["web.log", "web.previous.log"]
    with open(os.path.join(evidence_dir, "rb-prev", *paths[1].split("/"))) as handle:
        assert "panic: nil map write in query planner" in handle.read()


def test_an_evidence_store_that_fills_up_half_way_leaves_a_pack_marked_incomplete(app, run_capture):
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "store")
        os.mkdir(store)
        # A real file system that runs out of space: a 512 KiB tmpfs.
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", store], check=True)
        try:
            failed, result, _out = run_capture(
                rollback_id="rb-full", phase="before", evidence_dir=store, min_free_mb=0, sources=[
                    {"type": "k8s_configmap", "name": "config", "namespace": app["namespace"],
                     "resource_name": "app-config"},
                    {"type": "command", "name": "big", "argv": [sys.executable, "-c", "print('x' * (1 << 21))"]},
                    {"type": "k8s_events", "name": "events", "namespace": app["namespace"]},
                ])
            assert failed
            expected = "the evidence store failed while capturing the before phase of rb-full (big: No space left"
            assert expected in result["msg"]
            with open(os.path.join(store, "rb-full", "before", "manifest.json")) as handle:
                manifest = json.load(handle)
            assert manifest["incomplete"] is True and manifest["status"] in ("aborted", "in_progress")
            assert not os.path.exists(os.path.join(store, "rb-full.tar.gz"))
        finally:
            subprocess.run(["umount", store], check=True)
