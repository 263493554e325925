"""The configuration history's pure core: digests, snapshots, target choice, backup manifests, consumers."""

import base64
import json

import pytest

from ansible_collections.governed.rollback.plugins.module_utils import _config_history as ch
from ansible_collections.governed.rollback.plugins.module_utils._common import Refused

GOOD = {"data": {"evidence.retention.days": "2555", "ratelimit.query.limit": "100"}, "binaryData": {}}
BAD = {"data": {"evidence.retention.days": "30", "ratelimit.query.limit": "10000"}, "binaryData": {}}
SOURCE = {"metadata": {"name": "aureus-config", "namespace": "aureus", "uid": "u-1", "resourceVersion": "7"},
          "data": dict(BAD["data"])}


def b64(text):
    return base64.b64encode(text.encode()).decode()


def snapshot(content, seen_at, name=None, fled_at=None, kind="ConfigMap"):
    digest = ch.config_digest(kind, content, b"k" * 32)
    manifest = ch.snapshot_manifest(kind, dict(SOURCE, kind=kind), content, digest, seen_at,
                                    fled=(fled_at, "alice") if fled_at else None)
    if name:
        manifest["metadata"]["name"] = name
    return manifest


def history(*manifests):
    return ch.history("ConfigMap", "aureus-config", list(manifests))


# --- digests and keys -------------------------------------------------------------------------------------------


def test_configmap_digest_is_a_plain_content_sha256_and_stable():
    assert ch.config_digest("ConfigMap", GOOD) == ch.config_digest("ConfigMap", json.loads(json.dumps(GOOD)))
    assert ch.config_digest("ConfigMap", GOOD).startswith("sha256:")
    assert ch.config_digest("ConfigMap", GOOD) != ch.config_digest("ConfigMap", BAD)


def test_secret_digest_is_keyed_and_never_computed_without_a_key():
    content = {"data": {"db-password": b64("canary-pw")}}
    one, two = ch.new_digest_key(), ch.new_digest_key()
    assert ch.config_digest("Secret", content, one).startswith("hmac@sha256:")
    assert ch.config_digest("Secret", content, one) == ch.config_digest("Secret", content, one)
    assert ch.config_digest("Secret", content, one) != ch.config_digest("Secret", content, two)
    with pytest.raises(Exception):
        ch.config_digest("Secret", content)


def test_a_secrets_digest_key_lives_in_its_snapshots_data_and_never_in_their_content():
    key = ch.new_digest_key()
    content = {"data": {"db-password": b64("canary-pw")}}
    source = dict(SOURCE, kind="Secret", type="Opaque")
    manifest = ch.snapshot_manifest("Secret", source, content, ch.config_digest("Secret", content, key),
                                    "2024-01-15T10:00:00.000000Z", key=key)
    assert manifest["data"][ch.DIGEST_KEY_ENTRY] == base64.b64encode(key).decode()
    assert key.hex() not in json.dumps(manifest["metadata"])
    snaps = ch.history("Secret", "aureus-config", [manifest])
    assert snaps[0].content == content and snaps[0].digest_key == key
    assert ch.source_key(snaps) == key and ch.source_key([]) is None


def test_changed_keys_are_the_runbooks_list_with_added_and_removed():
    after = {"data": {"evidence.retention.days": "2555", "feature.x": "on"}, "binaryData": {}}
    changes = ch.changed_keys(BAD, after)
    assert changes == {"added": ["feature.x"], "removed": ["ratelimit.query.limit"],
                       "changed": ["evidence.retention.days"],
                       "all": ["evidence.retention.days", "feature.x", "ratelimit.query.limit"]}


def test_secret_values_are_shown_as_keyed_digests_per_key_never_values():
    key = ch.new_digest_key()
    before = {"data": {"db-password": b64("canary-old-pw"), "user": b64("aureus")}}
    after = {"data": {"db-password": b64("canary-new-pw"), "user": b64("aureus")}}
    diff = ch.content_diff("Secret", before, after, key)
    text = json.dumps(diff)
    for secret in ("canary-old-pw", "canary-new-pw", b64("canary-old-pw"), b64("canary-new-pw"), "aureus"):
        assert secret not in text
    assert diff["before"]["db-password"] != diff["after"]["db-password"]
    assert diff["before"]["user"] == diff["after"]["user"]
    assert diff["before"]["db-password"].startswith("hmac:")


def test_configmap_values_show_except_secret_looking_keys_and_binary():
    shown = ch.shown_values("ConfigMap", {"data": {"log.level": "info", "api.token": "t0ps3cret"},
                                          "binaryData": {"blob": b64("bytes")}})
    assert shown["log.level"] == "info"
    assert shown["api.token"] == "**REDACTED**"
    assert shown["blob"].startswith("<binary, sha256:")


# --- snapshots --------------------------------------------------------------------------------------------------


def test_snapshot_object_is_immutable_labelled_and_named_after_its_content():
    digest = ch.config_digest("ConfigMap", GOOD)
    manifest = ch.snapshot_manifest("ConfigMap", SOURCE, GOOD, digest, "2024-01-15T10:00:00.000000Z", "alice",
                                    "INC-1", "deploy v0.1.1")
    assert manifest["immutable"] is True
    assert manifest["metadata"]["name"] == "aureus-config-snap-" + digest[len("sha256:"):][:10]
    assert manifest["metadata"]["namespace"] == "aureus"
    assert manifest["metadata"]["labels"][ch.SOURCE_NAME_LABEL] == "aureus-config"
    assert manifest["metadata"]["annotations"][ch.SOURCE_ANNOTATION] == "ConfigMap aureus/aureus-config"
    assert manifest["metadata"]["annotations"][ch.TAKEN_BY_ANNOTATION] == "alice"
    assert manifest["data"] == GOOD["data"] and "binaryData" not in manifest


def test_long_source_names_fit_labels_and_object_names():
    name = "x" * 250
    assert len(ch.label_value(name)) <= 63
    assert len(ch.snapshot_name(name, "sha256:" + "a" * 64)) <= 253


def test_history_is_newest_first_and_only_the_sources_own():
    other = snapshot(GOOD, "2024-01-20T00:00:00.000000Z")
    other["metadata"]["annotations"][ch.SOURCE_ANNOTATION] = "ConfigMap aureus/other-config"
    snaps = history(snapshot(GOOD, "2024-01-15T00:00:00.000000Z"), snapshot(BAD, "2024-01-16T00:00:00.000000Z"), other)
    assert [s.content for s in snaps] == [BAD, GOOD]


def test_default_target_is_the_newest_differing_snapshot():
    snaps = history(snapshot(GOOD, "2024-01-15T00:00:00.000000Z"), snapshot(BAD, "2024-01-16T00:00:00.000000Z"))
    target, how, skipped = ch.select_snapshot("cm", snaps, BAD)
    assert target.content == GOOD and skipped is None
    assert "skipped" in how and "the current content" in how


def test_a_second_default_revert_does_not_bounce_back_to_the_content_rolled_back_from():
    snaps = history(snapshot(GOOD, "2024-01-17T00:00:00.000000Z"),
                    snapshot(BAD, "2024-01-16T00:00:00.000000Z", fled_at="2024-01-16T12:00:00Z"))
    target, _how, skipped = ch.select_snapshot("cm", snaps, GOOD)
    assert target.content == GOOD
    assert "already matches" in skipped


def test_a_named_snapshot_that_does_not_exist_is_refused_listing_the_ones_that_do():
    snaps = history(snapshot(GOOD, "2024-01-15T00:00:00.000000Z"))
    with pytest.raises(Refused) as info:
        ch.select_snapshot("configmap aureus/aureus-config", snaps, BAD, "aureus-config-snap-0000000000")
    assert info.value.code == "snapshot_not_found"
    assert snaps[0].name in info.value.msg


def test_no_history_at_all_is_refused_naming_both_ways_out():
    with pytest.raises(Refused) as info:
        ch.select_snapshot("cm", [], BAD)
    assert info.value.code == "no_snapshots" and "state=snapshot" in info.value.msg and "backup_file" in info.value.msg


def test_retention_keeps_the_newest_and_never_the_kept_ones():
    snaps = history(*[snapshot({"data": {"n": str(i)}, "binaryData": {}}, "2024-01-%02dT00:00:00.000000Z" % (i + 1))
                      for i in range(6)])
    oldest = snaps[-1].name
    pruned = ch.to_prune(snaps, 3, keep=[oldest])
    assert len(pruned) == 3 and oldest not in [s.name for s in pruned]
    assert ch.to_prune(snaps, 0) == []


def test_refresh_marks_clear_or_set_the_fled_mark():
    assert ch.refresh_marks("t1")["metadata"]["annotations"][ch.FLED_AT_ANNOTATION] is None
    assert ch.refresh_marks("t1", ("t1", "bob"))["metadata"]["annotations"][ch.FLED_BY_ANNOTATION] == "bob"


# --- backup manifests -------------------------------------------------------------------------------------------

BACKUP = """apiVersion: v1
kind: ConfigMap
metadata:
  name: aureus-config
  namespace: aureus
  resourceVersion: "12"
data:
  evidence.retention.days: "2555"
  ratelimit.query.limit: "100"
"""


def test_backup_manifest_from_kubectl_get_yaml():
    content, _type = ch.parse_backup(BACKUP, "b.yaml", "ConfigMap", "aureus-config", "aureus")
    assert content == GOOD


def test_backup_in_a_list_or_among_several_documents():
    as_list = json.dumps({"apiVersion": "v1", "kind": "List", "items": [{"kind": "ConfigMap", "metadata": {
        "name": "aureus-config"}, "data": GOOD["data"]}]})
    assert ch.parse_backup(as_list, "b.json", "ConfigMap", "aureus-config", "aureus")[0] == GOOD
    multi = "kind: ConfigMap\nmetadata: {name: other}\ndata: {a: b}\n---\n" + BACKUP
    assert ch.parse_backup(multi, "b.yaml", "ConfigMap", "aureus-config", "aureus")[0] == GOOD


@pytest.mark.parametrize("text, code, words", [
    ("kind: ConfigMap\nmetadata: {name: aureus-config\n", "bad_backup", "not valid YAML"),
    ("- a\n- b\n", "bad_backup", "not a Kubernetes object"),
    ("", "bad_backup", "holds no object"),
    (BACKUP.replace("name: aureus-config", "name: other"), "bad_backup", "no object named aureus-config"),
    (BACKUP.replace("kind: ConfigMap", "kind: Secret"), "wrong_kind", "not a ConfigMap"),
    (BACKUP.replace("namespace: aureus", "namespace: prod"), "bad_backup", "namespace prod"),
    (BACKUP.replace('"100"', "[1, 2]"), "bad_backup", "must map keys to strings"),
])
def test_malformed_backups_are_refused_saying_what_is_wrong(text, code, words):
    with pytest.raises(Refused) as info:
        ch.parse_backup(text, "b.yaml", "ConfigMap", "aureus-config", "aureus")
    assert info.value.code == code and words in info.value.msg


def test_secret_backup_takes_data_and_string_data_and_checks_base64():
    text = "kind: Secret\nmetadata: {name: s}\ntype: Opaque\ndata: {a: %s}\nstringData: {b: plain}\n" % b64("x")
    content, secret_type = ch.parse_backup(text, "s.yaml", "Secret", "s", "aureus")
    assert content == {"data": {"a": b64("x"), "b": b64("plain")}} and secret_type == "Opaque"
    with pytest.raises(Refused) as info:
        ch.parse_backup("kind: Secret\nmetadata: {name: s}\ndata: {a: '***'}\n", "s.yaml", "Secret", "s", "aureus")
    assert "not base64" in info.value.msg


# --- consumers ----------------------------------------------------------------------------------------------------


def workload(name, spec=None, annotations=None, template_annotations=None, paused=False):
    return {"metadata": {"name": name, "uid": "uid-" + name, "generation": 3, "annotations": annotations or {}},
            "spec": {"paused": paused, "template": {"metadata": {"annotations": template_annotations or {}},
                                                    "spec": spec or {"containers": [{"name": "app"}]}}}}


ENV_FROM = {"containers": [{"name": "app", "envFrom": [{"configMapRef": {"name": "aureus-config"}}]}]}


def test_consumers_are_found_by_envfrom_env_volumes_and_projected_volumes():
    workloads = [
        ("Deployment", workload("by-envfrom", ENV_FROM)),
        ("StatefulSet", workload("by-env", {"containers": [{"name": "db", "env": [{"name": "DAYS", "valueFrom": {
            "configMapKeyRef": {"name": "aureus-config", "key": "evidence.retention.days"}}}]}]})),
        ("DaemonSet", workload("by-volume", {"containers": [{"name": "a"}], "volumes": [
            {"name": "cfg", "configMap": {"name": "aureus-config"}}]})),
        ("Deployment", workload("by-projected", {"containers": [{"name": "a"}], "volumes": [
            {"name": "all", "projected": {"sources": [{"configMap": {"name": "aureus-config"}}]}}]})),
        ("Deployment", workload("unrelated", {"containers": [{"name": "a", "envFrom": [
            {"secretRef": {"name": "aureus-config"}}]}]})),
    ]
    found = dict((c["name"], c) for c in ch.find_consumers("ConfigMap", "aureus-config", workloads))
    assert sorted(found) == ["by-env", "by-envfrom", "by-projected", "by-volume"]
    assert found["by-env"]["keys"] == ["evidence.retention.days"] and found["by-env"]["via"] == ["env:DAYS"]
    assert found["by-volume"]["via"] == ["volume:cfg"] and found["by-projected"]["via"] == ["projected:all"]
    assert found["by-envfrom"]["containers"] == ["app"]


@pytest.mark.parametrize("annotations, config_annotations, managed", [
    ({"reloader.stakater.com/auto": "true"}, {}, True),
    ({"configmap.reloader.stakater.com/auto": "true"}, {}, True),
    ({"secret.reloader.stakater.com/auto": "true"}, {}, False),
    ({"configmap.reloader.stakater.com/reload": "other, aureus-config"}, {}, True),
    ({"reloader.stakater.com/search": "true"}, {"reloader.stakater.com/match": "true"}, True),
    ({"reloader.stakater.com/search": "true"}, {}, False),
    ({"reloader.stakater.com/auto": "true"}, {"reloader.stakater.com/ignore": "true"}, False),
    ({}, {}, False),
])
def test_reloader_annotations_decide_who_restarts(annotations, config_annotations, managed):
    config = {"metadata": {"annotations": config_annotations}}
    found = ch.find_consumers("ConfigMap", "aureus-config", [("Deployment", workload("w", ENV_FROM, annotations))],
                              config)
    assert found[0]["reloader"] is managed


def test_a_reloader_reload_list_makes_a_consumer_without_a_reference():
    found = ch.find_consumers("ConfigMap", "aureus-config", [("Deployment", workload("w", None, {
        "configmap.reloader.stakater.com/reload": "aureus-config"}))])
    assert [c["name"] for c in found] == ["w"] and found[0]["reloader"]


def test_workload_refs_parse_like_kubectl():
    assert ch.parse_workload_ref("deployment/web") == ("Deployment", "web")
    assert ch.parse_workload_ref("statefulsets.apps/db") == ("StatefulSet", "db")
    assert ch.parse_workload_ref("web") == ("Deployment", "web")
    with pytest.raises(Refused):
        ch.parse_workload_ref("job/x")


# --- hash-named config --------------------------------------------------------------------------------------------


def test_kustomize_hashed_config_referenced_by_a_workload_points_at_the_deployment_rollback():
    spec = {"containers": [{"name": "a", "envFrom": [{"configMapRef": {"name": "app-config-5k2h8c9m7t"}}]}]}
    workloads = [("Deployment", workload("web", spec))]
    consumers = ch.find_consumers("ConfigMap", "app-config-5k2h8c9m7t", workloads)
    assert "Kustomize" in ch.hash_named("ConfigMap", "app-config-5k2h8c9m7t", True, consumers, {})
    family = ch.family_references("ConfigMap", "app-config", workloads)
    assert family == {"app-config-5k2h8c9m7t": ["deployment/web"]}
    reason = ch.hash_named("ConfigMap", "app-config", False, [], family)
    assert "app-config-5k2h8c9m7t referenced by deployment/web" in reason


def test_helm_checksum_annotation_on_a_consumer_points_at_the_workload_rollback():
    workloads = [("Deployment", workload("web", ENV_FROM, template_annotations={"checksum/config": "abc"}))]
    consumers = ch.find_consumers("ConfigMap", "aureus-config", workloads)
    assert "checksum/config" in ch.hash_named("ConfigMap", "aureus-config", True, consumers, {})


def test_plain_names_are_not_hash_named():
    consumers = ch.find_consumers("ConfigMap", "aureus-config", [("Deployment", workload("w", ENV_FROM))])
    assert ch.hash_named("ConfigMap", "aureus-config", True, consumers, {}) is None


# --- what pods see ------------------------------------------------------------------------------------------------


def test_resolved_env_is_what_the_kubelet_injects_from_the_pod_spec():
    pod = {"spec": {"containers": [{"name": "app", "envFrom": [{"configMapRef": {"name": "aureus-config"},
                                                                "prefix": "AUREUS_"}],
                                    "env": [{"name": "DAYS", "valueFrom": {"configMapKeyRef": {
                                        "name": "aureus-config", "key": "evidence.retention.days"}}}]}]}}
    env = ch.resolved_env(pod, "ConfigMap", "aureus-config", GOOD)
    assert env == {"app": {"AUREUS_evidence.retention.days": "2555", "AUREUS_ratelimit.query.limit": "100",
                           "DAYS": "2555"}}


def test_resolved_secret_env_shows_keyed_digests_only():
    pod = {"spec": {"containers": [{"name": "app", "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {
        "name": "s", "key": "pw"}}}]}]}}
    env = ch.resolved_env(pod, "Secret", "s", {"data": {"pw": b64("canary-xyz")}}, ch.new_digest_key())
    assert env["app"]["PW"].startswith("hmac:") and "canary" not in json.dumps(env)


def test_reloaded_from_annotation_has_reloaders_shape():
    value = json.loads(ch.reloaded_from("ConfigMap", "aureus", "aureus-config", "sha256:ab", ["app"], "2024-01-15T10:00:00Z"))
    assert value == {"type": "CONFIGMAP", "namespace": "aureus", "name": "aureus-config", "hash": "sha256:ab",
                     "containerRefs": ["app"], "observedAt": "2024-01-15T10:00:00Z"}
