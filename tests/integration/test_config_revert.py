"""config_revert against the real sandbox (API server, controller-manager, KWOK): nothing mocked.

Each test builds its own ConfigMap/Secret, consumers and history in its own namespace. Round trips run the module
through Ansible (ansible-runner); refusals call the module's execute() with the collection's real REST client, which
is faster and talks to the same API server. A refusal proves that nothing changed: the config's resourceVersion,
every consumer's resourceVersion and the set of snapshots are the same afterwards.
"""

import base64
import json
import secrets
import tempfile
import threading

import pytest

from ansible_collections.governed.rollback.plugins.module_utils import _config_history as ch
from ansible_collections.governed.rollback.plugins.module_utils._common import Refused
from ansible_collections.governed.rollback.plugins.modules import config_revert
from tests.integration import _playbook as pb
from tests.sandbox_fixtures import get, items

GOOD = {"evidence.retention.days": "2555", "ratelimit.query.limit": "100", "log.level": "info"}
BAD = {"evidence.retention.days": "30", "ratelimit.query.limit": "10000", "log.level": "info"}
CHAOS = "pod-container-running-failed.stage.kwok.x-k8s.io"


# --- harness -------------------------------------------------------------------------------------------------------


@pytest.fixture
def api(k8s_api):
    from ansible_collections.governed.rollback.plugins.module_utils._k8s import KubeRest

    return KubeRest(k8s_api)


@pytest.fixture
def run_module(kubeconfig):
    """Run governed.rollback.config_revert through ansible; return (failed, result, stdout)."""

    def run(check=False, diff=False, envvars=None, **args):
        args.setdefault("kubeconfig", kubeconfig)
        with tempfile.TemporaryDirectory() as tmp:
            return pb.run_module_with_output(tmp, "governed.rollback.config_revert", args, envvars=envvars,
                                             check=check, diff=diff)

    return run


def params(namespace, **overrides):
    """Module parameters as AnsibleModule would fill them (defaults from the argument spec)."""
    values = dict((k, v.get("default")) for k, v in config_revert.argument_spec().items())
    values.update(namespace=namespace, name="app-config")
    values.update(overrides)
    return values


def apply_config(kubectl, namespace, data, kind="ConfigMap", name="app-config", immutable=False, metadata=None):
    manifest = {"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": namespace}}
    manifest["metadata"].update(metadata or {})
    if kind == "Secret":
        manifest["stringData"] = data
    else:
        manifest["data"] = data
    if immutable:
        manifest["immutable"] = True
    kubectl("apply", "-f", "-", input=json.dumps(manifest))


def consumer(kubectl, namespace, name="web", kind="ConfigMap", config="app-config", broken=False, paused=False,
             replicas=2, via="envFrom", metadata=None, template_annotations=None):
    """A Deployment whose pods read the config (envFrom, an env var from one key, or a volume)."""
    container = {"name": "app", "image": "app:v1"}
    spec = {"containers": [container]}
    if via == "envFrom":
        container["envFrom"] = [{"configMapRef" if kind == "ConfigMap" else "secretRef": {"name": config}}]
    elif via == "env":
        ref = "configMapKeyRef" if kind == "ConfigMap" else "secretKeyRef"
        container["env"] = [{"name": "DB_PASSWORD" if kind == "Secret" else "RETENTION_DAYS",
                             "valueFrom": {ref: {"name": config, "key": "db-password" if kind == "Secret"
                                                 else "evidence.retention.days"}}}]
    else:
        spec["volumes"] = [{"name": "cfg", "configMap": {"name": config}}]
        container["volumeMounts"] = [{"name": "cfg", "mountPath": "/etc/app"}]
    labels = {"app": name}
    if broken:
        labels[CHAOS] = "true"
    meta = {"name": name, "namespace": namespace}
    meta.update(metadata or {})
    template_meta = {"labels": labels}
    if template_annotations:
        template_meta["annotations"] = template_annotations
    manifest = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
                "spec": {"replicas": replicas, "progressDeadlineSeconds": 600, "paused": paused,
                         "selector": {"matchLabels": {"app": name}}, "template": {"metadata": template_meta, "spec": spec}}}
    kubectl("create", "-f", "-", input=json.dumps(manifest))
    if not broken and not paused:
        kubectl("rollout", "status", "deployment/" + name, "-n", namespace, "--timeout=60s")


def snapshot_names(kubectl, namespace, kind="configmap"):
    return sorted(o["metadata"]["name"] for o in items(kubectl, kind, namespace, ch.SNAPSHOT_LABEL + "=true"))


def state(kubectl, namespace, kind="configmap", name="app-config", workloads=("web",)):
    """What "nothing changed" compares: the config's and each consumer's resourceVersion, and the snapshots."""
    return {"config": get(kubectl, kind, namespace, name)["metadata"]["resourceVersion"],
            "workloads": dict((w, get(kubectl, "deployment", namespace, w)["metadata"]["resourceVersion"])
                              for w in workloads),
            "snapshots": snapshot_names(kubectl, namespace, kind)}


def history_good_then_bad(kubectl, api, namespace, kind="ConfigMap", good=None, bad=None):
    """Good content recorded as a snapshot, then the bad content pushed and recorded too (as a deploy would)."""
    good, bad = good or GOOD, bad or BAD
    apply_config(kubectl, namespace, good, kind)
    snap = config_revert.execute(api, params(namespace, kind=kind, state="snapshot", actor="deploy"))
    assert snap.failed_msg is None, snap.failed_msg
    apply_config(kubectl, namespace, bad, kind)
    bad_snap = config_revert.execute(api, params(namespace, kind=kind, state="snapshot", actor="deploy"))
    assert bad_snap.failed_msg is None, bad_snap.failed_msg
    return snap.result["snapshot_id"], bad_snap.result["snapshot_id"]


def data_of(kubectl, namespace, kind="configmap", name="app-config"):
    obj = get(kubectl, kind, namespace, name)
    if kind == "secret":
        return dict((k, base64.b64decode(v).decode()) for k, v in (obj.get("data") or {}).items())
    return obj.get("data") or {}


def template_annotations(kubectl, namespace, name="web"):
    return get(kubectl, "deployment", namespace, name)["spec"]["template"]["metadata"].get("annotations") or {}


# --- round trips ---------------------------------------------------------------------------------------------------


def test_configmap_round_trip_plan_revert_restart_verify_then_nothing_to_do(kubectl, api, run_module, namespace):
    consumer(kubectl, namespace, via="envFrom")
    good_id, bad_id = history_good_then_bad(kubectl, api, namespace)
    before = state(kubectl, namespace)

    failed, plan, _out = run_module(check=True, diff=True, namespace=namespace, name="app-config")

    assert not failed, plan.get("msg")
    assert plan["changed"] is True and plan["snapshot_id"] == good_id
    assert plan["changed_keys"] == ["evidence.retention.days", "ratelimit.query.limit"]
    assert plan["plan"]["would_restart"] == ["deployment/web"]
    assert plan["diff"]["before"]["evidence.retention.days"] == "30"
    assert plan["diff"]["after"]["evidence.retention.days"] == "2555"
    assert state(kubectl, namespace) == before, "check mode changed something"

    failed, result, _out = run_module(namespace=namespace, name="app-config", actor="devops-lead",
                                      incident_id="INC-1", expected_binding=plan["binding"],
                                      snapshot_id=plan["snapshot_id"])

    assert not failed, result.get("msg")
    assert result["changed"] is True
    assert data_of(kubectl, namespace) == GOOD
    assert result["after_ref"] == result["to_ref"] == ch.config_digest("ConfigMap", {"data": GOOD, "binaryData": {}})
    assert result["verification"] == {"data_digest_matches": True, "consumers_restarted": True,
                                      "new_pods_ready": True, "config_applied": True}
    web = result["consumers"][0]
    assert (web["name"], web["restart"], web["wait"]["done"]) == ("web", "restarted", True)
    assert web["pods"] and all(p["ready"] and p["restarted"] for p in web["pods"])
    assert all(p["env"]["app"]["evidence.retention.days"] == "2555" for p in web["pods"])
    annotations = template_annotations(kubectl, namespace)
    assert annotations["kubectl.kubernetes.io/restartedAt"] == web["restarted_at"]
    reloaded = json.loads(annotations[ch.RELOADED_FROM_ANNOTATION])
    assert (reloaded["name"], reloaded["hash"], reloaded["type"]) == ("app-config", result["to_ref"], "CONFIGMAP")
    # The content left behind is a snapshot too (the revert can be reverted), marked as rolled back from.
    assert result["pre_revert_snapshot"] == bad_id
    pre = get(kubectl, "configmap", namespace, bad_id)
    assert pre["metadata"]["annotations"][ch.FLED_AT_ANNOTATION] and pre["immutable"] is True
    assert result["receipt_fields"]["config_type"] == "ConfigMap"
    assert result["receipt_fields"]["changed_keys"] == ["evidence.retention.days", "ratelimit.query.limit"]

    settled = state(kubectl, namespace)
    failed, again, _out = run_module(namespace=namespace, name="app-config")

    assert not failed, again.get("msg")
    assert again["changed"] is False and "already matches snapshot %s" % good_id in again["skipped_reason"]
    assert state(kubectl, namespace)["config"] == settled["config"]
    assert state(kubectl, namespace)["snapshots"] == settled["snapshots"]
    assert template_annotations(kubectl, namespace) == annotations


def test_secret_round_trip_never_shows_a_value_anywhere(kubectl, api, run_module, namespace):
    good = {"db-password": "canary-good-" + secrets.token_hex(10), "user": "aureus"}
    bad = {"db-password": "canary-bad-" + secrets.token_hex(10), "user": "aureus"}
    consumer(kubectl, namespace, kind="Secret", config="app-config", via="env")
    history_good_then_bad(kubectl, api, namespace, kind="Secret", good=good, bad=bad)
    canaries = [good["db-password"], bad["db-password"]]
    canaries += [base64.b64encode(c.encode()).decode() for c in canaries]

    failed_plan, plan, plan_out = run_module(check=True, diff=True, namespace=namespace, name="app-config",
                                             kind="Secret")
    failed, result, out = run_module(diff=True, namespace=namespace, name="app-config", kind="Secret",
                                     expected_binding=plan["binding"])

    assert not failed_plan and not failed, (plan.get("msg"), result.get("msg"))
    assert result["changed"] is True and result["changed_keys"] == ["db-password"]
    assert data_of(kubectl, namespace, "secret") == good
    assert result["verification"]["data_digest_matches"] and result["verification"]["config_applied"]
    # Keyed with the key the Secret's snapshots keep: the plan's digests are the act's, so the binding holds them.
    assert result["to_ref"].startswith("hmac@sha256:") and result["to_ref"] == plan["to_ref"]
    assert plan["binding"]["to_digest"] == result["after_ref"] and "resource_version" not in plan["binding"]
    env = result["consumers"][0]["pods"][0]["env"]["app"]["DB_PASSWORD"]
    assert env.startswith("hmac:")
    snapshots = items(kubectl, "secret", namespace, ch.SNAPSHOT_LABEL + "=true")
    assert len(snapshots) == 2 and all(s["immutable"] and s["type"] == "Opaque" for s in snapshots)
    assert len(set(s["data"][ch.DIGEST_KEY_ENTRY] for s in snapshots)) == 1  # one key per Secret, kept in its data
    assert all(ch.DIGEST_KEY_ENTRY not in json.dumps(s["metadata"]) for s in snapshots)
    metadata_text = json.dumps([s["metadata"].get("labels") for s in snapshots] +
                               [s["metadata"].get("annotations") for s in snapshots] +
                               [s["metadata"]["name"] for s in snapshots])
    template = json.dumps(get(kubectl, "deployment", namespace, "web")["spec"]["template"])
    for text in (json.dumps(plan), plan_out, json.dumps(result), out, metadata_text, template):
        for canary in canaries:
            assert canary not in text


def test_revert_from_the_runbooks_backup_manifest(kubectl, run_module, namespace, tmp_path):
    consumer(kubectl, namespace, via="volume")
    apply_config(kubectl, namespace, GOOD)
    backup = tmp_path / "configmap-backup-v0.1.1.yaml"
    backup.write_text(kubectl("get", "configmap", "app-config", "-n", namespace, "-o", "yaml").stdout)
    apply_config(kubectl, namespace, dict(BAD, **{"feature.new": "on"}))

    failed, result, _out = run_module(namespace=namespace, name="app-config", backup_file=str(backup))

    assert not failed, result.get("msg")
    assert data_of(kubectl, namespace) == GOOD
    assert result["changed_keys_detail"]["removed"] == ["feature.new"]
    assert result["target"]["ref"] == "file:%s" % backup and result["snapshot_id"] is None
    assert result["verification"]["config_applied"] and result["consumers"][0]["pods"][0]["mounts"]
    # Both contents are history now: the one left (rolled back from) and the one restored (live, newest).
    restored = ch.snapshot_name("app-config", result["to_ref"])
    assert snapshot_names(kubectl, namespace) == sorted([result["pre_revert_snapshot"], restored])
    assert result["snapshots"][0]["id"] == restored and result["snapshots"][0]["fled_at"] is None


def test_a_consumer_that_never_becomes_ready_fails_the_revert_after_the_wait(kubectl, api, run_module, namespace):
    consumer(kubectl, namespace, broken=True, replicas=1)
    history_good_then_bad(kubectl, api, namespace)

    failed, result, _out = run_module(namespace=namespace, name="app-config", wait_timeout=8)

    assert failed and result["changed"] is True
    assert "did not finish restarting" in result["msg"] and "deployment/web" in result["msg"]
    assert any("deployment/web is not healthy before the restart" in w for w in result["rollback_warnings"])
    assert data_of(kubectl, namespace) == GOOD  # the revert itself held
    web = result["consumers"][0]
    assert web["wait"]["done"] is False and web["wait"]["state"] == "timeout"
    assert not result["verification"]["consumers_restarted"] and not result["verification"]["new_pods_ready"]


def test_reloader_managed_consumers_are_left_to_reloader_and_others_restarted(kubectl, api, namespace):
    consumer(kubectl, namespace, name="web")
    consumer(kubectl, namespace, name="reloaded", metadata={"annotations": {"reloader.stakater.com/auto": "true"}})
    history_good_then_bad(kubectl, api, namespace)
    reloaded_before = get(kubectl, "deployment", namespace, "reloaded")["metadata"]["generation"]

    outcome = config_revert.execute(api, params(namespace, wait_timeout=60))

    assert outcome.failed_msg is None, outcome.failed_msg
    restarts = dict((c["name"], c["restart"]) for c in outcome.result["consumers"])
    assert restarts == {"web": "restarted", "reloaded": "reloader"}
    assert get(kubectl, "deployment", namespace, "reloaded")["metadata"]["generation"] == reloaded_before
    assert "kubectl.kubernetes.io/restartedAt" in template_annotations(kubectl, namespace, "web")


def test_snapshot_retention_keeps_the_configured_count(kubectl, api, namespace):
    apply_config(kubectl, namespace, {"n": "0"})
    names = []
    for number in range(5):
        apply_config(kubectl, namespace, {"n": str(number)})
        outcome = config_revert.execute(api, params(namespace, state="snapshot", snapshot_retention=3))
        assert outcome.failed_msg is None and outcome.result["changed"]
        names.append(outcome.result["snapshot_id"])

    assert snapshot_names(kubectl, namespace) == sorted(names[-3:])
    again = config_revert.execute(api, params(namespace, state="snapshot", snapshot_retention=3))
    assert again.result["changed"] is False and again.result["snapshot_id"] == names[-1]


# --- refusals: a clear error and nothing changed ----------------------------------------------------------------------


def assert_refused(outcome, code, words, kubectl, namespace, before, kind="configmap", workloads=("web",)):
    assert outcome.failed_msg, "expected a refusal (%s)" % code
    assert outcome.result.get("refused") == code, (outcome.result.get("refused"), outcome.failed_msg)
    assert words in outcome.failed_msg, outcome.failed_msg
    assert outcome.result["changed"] is False
    assert state(kubectl, namespace, kind, workloads=workloads) == before


def test_missing_snapshot_is_refused_and_changes_nothing(kubectl, api, namespace):
    consumer(kubectl, namespace)
    good_id, _bad = history_good_then_bad(kubectl, api, namespace)
    before = state(kubectl, namespace)

    outcome = config_revert.execute(api, params(namespace, snapshot_id="app-config-snap-0000000000"))

    assert_refused(outcome, "snapshot_not_found", good_id, kubectl, namespace, before)


@pytest.mark.parametrize("content, code, words", [
    (None, "backup_not_found", "cannot be read"),
    ("kind: ConfigMap\nmetadata: {name: app-config\n", "bad_backup", "not valid YAML"),
    ("kind: Secret\nmetadata: {name: app-config}\ndata: {a: YQ==}\n", "wrong_kind", "not a ConfigMap"),
])
def test_missing_malformed_or_wrong_kind_backup_is_refused_and_changes_nothing(
        kubectl, api, namespace, tmp_path, content, code, words):
    consumer(kubectl, namespace)
    apply_config(kubectl, namespace, BAD)
    path = tmp_path / "backup.yaml"
    if content is not None:
        path.write_text(content)
    before = state(kubectl, namespace)

    outcome = config_revert.execute(api, params(namespace, backup_file=str(path)))

    assert_refused(outcome, code, words, kubectl, namespace, before)


def test_wrong_kind_is_refused_and_changes_nothing(kubectl, api, namespace):
    consumer(kubectl, namespace)
    history_good_then_bad(kubectl, api, namespace)
    snapshot = snapshot_names(kubectl, namespace)[0]
    before = state(kubectl, namespace)

    as_secret = config_revert.execute(api, params(namespace, kind="Secret"))
    a_snapshot = config_revert.execute(api, params(namespace, name=snapshot))

    assert_refused(as_secret, "not_found", "secret %s/app-config not found" % namespace, kubectl, namespace, before)
    assert_refused(a_snapshot, "wrong_kind", "is itself a snapshot", kubectl, namespace, before)


def test_paused_consumer_is_refused_before_anything_changes(kubectl, api, namespace):
    consumer(kubectl, namespace, paused=True)
    history_good_then_bad(kubectl, api, namespace)
    before = state(kubectl, namespace)

    outcome = config_revert.execute(api, params(namespace))

    assert_refused(outcome, "paused", "can't restart paused deployment/web", kubectl, namespace, before)
    assert data_of(kubectl, namespace) == BAD


def test_immutable_config_is_refused_with_the_way_out(kubectl, api, namespace):
    consumer(kubectl, namespace)
    apply_config(kubectl, namespace, GOOD)
    config_revert.execute(api, params(namespace, state="snapshot"))
    kubectl("delete", "configmap", "app-config", "-n", namespace)
    apply_config(kubectl, namespace, BAD, immutable=True)
    before = state(kubectl, namespace)

    outcome = config_revert.execute(api, params(namespace))

    assert_refused(outcome, "immutable", "rollback-deploy.yml", kubectl, namespace, before)


def test_gitops_owned_config_is_refused_unless_drift_is_allowed(kubectl, api, namespace):
    consumer(kubectl, namespace)
    apply_config(kubectl, namespace, GOOD, metadata={"labels": {"kustomize.toolkit.fluxcd.io/name": "apps"}})
    snapshot = config_revert.execute(api, params(namespace, state="snapshot"))  # history is kept all the same
    assert snapshot.failed_msg is None and snapshot.result["gitops_owners"]
    apply_config(kubectl, namespace, BAD, metadata={"labels": {"kustomize.toolkit.fluxcd.io/name": "apps"}})
    before = state(kubectl, namespace)

    refused = config_revert.execute(api, params(namespace))
    assert_refused(refused, "gitops_owned", "Flux", kubectl, namespace, before)

    allowed = config_revert.execute(api, params(namespace, allow_gitops_drift=True))
    assert allowed.failed_msg is None, allowed.failed_msg
    assert data_of(kubectl, namespace) == GOOD and any("Flux" in w for w in allowed.result["rollback_warnings"])


def test_kustomize_hashed_config_points_at_the_deployment_rollback(kubectl, api, namespace):
    apply_config(kubectl, namespace, BAD, name="app-config-5k2h8c9m7t")
    consumer(kubectl, namespace, config="app-config-5k2h8c9m7t")
    before = state(kubectl, namespace, name="app-config-5k2h8c9m7t")

    by_hashed_name = config_revert.execute(api, params(namespace, name="app-config-5k2h8c9m7t"))
    by_base_name = config_revert.execute(api, params(namespace, name="app-config"))

    for outcome in (by_hashed_name, by_base_name):
        assert outcome.result["refused"] == "hash_named" and "rollback-deploy.yml" in outcome.failed_msg
    assert "deployment/web" in by_base_name.failed_msg
    assert state(kubectl, namespace, name="app-config-5k2h8c9m7t") == before


# --- concurrency -------------------------------------------------------------------------------------------------------


def test_concurrent_change_between_read_and_write_fails_cleanly(kubectl, api, namespace):
    apply_config(kubectl, namespace, GOOD)
    config_revert.execute(api, params(namespace, state="snapshot"))
    apply_config(kubectl, namespace, BAD)
    plan = config_revert.plan_revert(api, params(namespace))
    # Someone else edits the ConfigMap after our read.
    apply_config(kubectl, namespace, dict(BAD, **{"log.level": "debug"}))
    theirs = get(kubectl, "configmap", namespace, "app-config")

    with pytest.raises(Refused) as info:
        config_revert.send_revert(api, plan)

    assert info.value.code == "conflict"
    assert "changed after it was read (resourceVersion %s)" % plan.resource_version in info.value.msg
    now = get(kubectl, "configmap", namespace, "app-config")
    assert now["metadata"]["resourceVersion"] == theirs["metadata"]["resourceVersion"]
    assert now["data"]["log.level"] == "debug"


def test_a_plan_approved_before_a_change_is_refused_at_act_time(kubectl, api, namespace):
    consumer(kubectl, namespace)
    history_good_then_bad(kubectl, api, namespace)
    plan = config_revert.execute(api, params(namespace), check_mode=True)
    apply_config(kubectl, namespace, dict(BAD, **{"log.level": "debug"}))
    before = state(kubectl, namespace)

    outcome = config_revert.execute(api, params(namespace, expected_binding=plan.result["binding"]))

    assert_refused(outcome, "changed_since_approved", "re-plan", kubectl, namespace, before)


def test_two_reverts_at_once_leave_one_consistent_history(kubectl, api, namespace):
    apply_config(kubectl, namespace, GOOD)
    config_revert.execute(api, params(namespace, state="snapshot"))
    apply_config(kubectl, namespace, BAD)
    outcomes = []
    threads = [threading.Thread(target=lambda: outcomes.append(config_revert.execute(api, params(namespace))))
               for _run in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert data_of(kubectl, namespace) == GOOD
    assert sum(1 for o in outcomes if o.result["changed"] and o.failed_msg is None) >= 1
    for outcome in outcomes:
        assert outcome.failed_msg is None or outcome.result.get("refused") == "conflict" or \
            "already exists" in outcome.failed_msg or "conflict" in outcome.failed_msg, outcome.failed_msg
