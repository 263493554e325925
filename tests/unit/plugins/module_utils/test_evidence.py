"""Evidence pack logic without a server: source specs, diffs, manifests, the archive, local file/command sources."""

import gzip
import io
import json
import os
import sys
import tarfile

import pytest
import yaml

from ansible_collections.governed.rollback.plugins.module_utils import _evidence as ev
from ansible_collections.governed.rollback.plugins.module_utils import _redact

AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"


def ctx():
    return ev.CaptureContext({"rollback_id": "rb-1"})


def configmap(data, rv="1"):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "aureus-config", "resourceVersion": rv},
            "data": data}


# --- source specifications ------------------------------------------------------------------------------------------


def test_sources_get_their_type_defaults_and_required_flag():
    sources = ev.normalize_sources([
        {"type": "k8s_workload", "name": "deployment", "namespace": "aureus", "resource_name": "aureus-frontend"},
        {"type": "k8s_logs", "name": "logs", "namespace": "aureus", "label_selector": "component=frontend",
         "required": None, "url": None},
    ])
    assert sources[0]["kind"] == "Deployment" and sources[0]["diff"] is True and sources[0]["required"] is False
    assert sources[1]["tail_lines"] == 1000 and sources[1]["previous"] is True and sources[1]["diff"] is False


@pytest.mark.parametrize("sources,message", [
    ([{"type": "k8s_workload", "name": "d", "namespace": "aureus"}], "needs resource_name"),
    ([{"type": "nope", "name": "d"}], "unknown type 'nope'; use one of:"),
    ([{"type": "file", "path": "/etc/hostname"}], "has no name"),
    ([{"type": "file", "name": "a/b", "path": "/x"}], "names a directory"),
    ([{"type": "file", "name": "f", "path": "/x"}, {"type": "file", "name": "f", "path": "/y"}], "used twice"),
    ([{"type": "file", "name": "f", "path": "/x", "namespace": "aureus"}], "does not take namespace; it takes:"),
    ([{"type": "k8s_configmap", "name": "c", "namespace": "aureus"}], "exactly one of resource_name, label_selector"),
    ([{"type": "command", "name": "c", "argv": ["true"], "cmd": "true"}], "exactly one of argv, cmd"),
    ([{"type": "k8s_workload", "name": "d", "namespace": "n", "resource_name": "r", "kind": "Job"}],
     "kind Job is not supported"),
])
def test_bad_sources_are_refused_with_what_to_fix(sources, message):
    with pytest.raises(ev.EvidenceError) as err:
        ev.normalize_sources(sources)
    assert message in str(err.value)


def test_rollback_id_must_be_usable_as_a_directory_name():
    ev.validate_rollback_id("rollback-20240115-103045")
    for bad in ("", "../etc", "a/b", ".hidden"):
        with pytest.raises(ev.EvidenceError):
            ev.validate_rollback_id(bad)


def test_plan_lists_each_source_and_never_shows_url_credentials():
    sources = ev.normalize_sources([
        {"type": "http", "name": "health", "url": "https://ops:pa55word@aureus.example.com/health"},
        {"type": "k8s_secret", "name": "secrets", "namespace": "aureus", "resource_name": "aureus-secrets"},
    ])
    plan = ev.plan_capture("rb-1", "before", sources)
    assert [p["path"] for p in plan] == ["rb-1/before/health/", "rb-1/before/secrets/"]
    assert "pa55word" not in json.dumps(plan)
    assert "Secret (values redacted) aureus/aureus-secrets" == plan[1]["captures"]


# --- diffs ------------------------------------------------------------------------------------------------------


def test_changed_keys_are_exactly_the_keys_that_changed():
    before = configmap({"evidence.retention.days": "2555", "ratelimit.query.limit": "100", "log.level": "info"})
    after = configmap({"evidence.retention.days": "365", "ratelimit.query.limit": "50", "log.level": "info"}, rv="2")
    keys = ev.changed_keys(before, after)
    assert keys["all"] == ["evidence.retention.days", "ratelimit.query.limit"]
    assert keys["changed"] == keys["all"] and keys["added"] == [] and keys["removed"] == []
    assert ev.changed_keys(before, configmap({"log.level": "info", "new": "1"}))["all"] == [
        "evidence.retention.days", "new", "ratelimit.query.limit"]


def test_changed_fields_name_dotted_paths():
    before = {"spec": {"template": {"spec": {"containers": [{"image": "a:1"}]}}}, "metadata": {"resourceVersion": "1"}}
    after = {"spec": {"template": {"spec": {"containers": [{"image": "a:2"}]}}}, "metadata": {"resourceVersion": "2"}}
    assert ev.changed_fields(before, after) == ["metadata.resourceVersion", "spec.template.spec.containers[0].image"]


def test_phase_files_pair_by_path_inside_the_phase_and_only_for_common_sources():
    def rec(path, sha, source="s"):
        return {"path": path, "sha256": sha, "diff": True, "source": source}
    before = [rec("before/s/a.yaml", "1"), rec("before/s/b.yaml", "2"), rec("before/s/gone.yaml", "3"),
              rec("before/only/x.yaml", "9", "only"), {"path": "before/s/pods.yaml", "sha256": "4", "diff": False}]
    after = [rec("after/s/a.yaml", "1"), rec("after/s/b.yaml", "5"), rec("after/s/new.yaml", "6")]
    pairs = ev.compare_phase_files(before, after, {"s"})
    assert [(rel, status) for rel, status, _b, _a in pairs] == [
        ("s/a.yaml", "unchanged"), ("s/b.yaml", "modified"), ("s/gone.yaml", "removed"), ("s/new.yaml", "added")]


def test_secret_refs_of_a_pod_spec_cover_env_envfrom_volumes_and_pull_secrets():
    spec = {
        "containers": [{"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s1", "key": "k"}}},
                                {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cm"}}}],
                        "envFrom": [{"secretRef": {"name": "s2"}}, {"configMapRef": {"name": "cm"}}]}],
        "initContainers": [{"env": [{"name": "C", "valueFrom": {"secretKeyRef": {"name": "s3"}}}]}],
        "volumes": [{"secret": {"secretName": "s4"}},
                    {"projected": {"sources": [{"secret": {"name": "s5"}}, {"serviceAccountToken": {}}]}}],
        "imagePullSecrets": [{"name": "s6"}],
    }
    assert ev.secret_refs_of_pod_spec(spec) == {"s1", "s2", "s3", "s4", "s5", "s6"}


def test_previous_logs_are_fetched_only_for_containers_that_restarted():
    pod = {"spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "web"}, {"name": "sidecar"}]},
           "status": {"containerStatuses": [{"name": "web", "restartCount": 2}, {"name": "sidecar", "restartCount": 0}]}}
    assert ev._log_targets(pod, None, True) == [("init", False), ("web", False), ("web", True), ("sidecar", False)]
    assert ev._log_targets(pod, ["web"], False) == [("web", False)]
    assert ev._log_targets(pod, ["gone", "web"], False) == [("web", False), ("gone", False)]


def test_text_lines_survive_multibyte_characters_split_across_chunks():
    data = "héllo wörld\nzweite Zeile\nno newline".encode("utf-8")
    chunks = [data[i:i + 3] for i in range(0, len(data), 3)]
    assert list(ev.iter_text_lines(chunks)) == ["héllo wörld\n", "zweite Zeile\n", "no newline"]


def test_yaml_keeps_multiline_config_as_literal_blocks_for_readable_diffs():
    text = ev.to_yaml({"data": {"app.properties": "a=1\nb=2\n"}})
    assert "app.properties: |" in text
    assert yaml.safe_load(text) == {"data": {"app.properties": "a=1\nb=2\n"}}


# --- pre-flight ---------------------------------------------------------------------------------------------------


def test_preflight_accepts_a_writable_directory_and_leaves_nothing_behind(tmp_path):
    result = ev.preflight(str(tmp_path / "evidence" / "nested"), min_free_mb=1)
    assert result["writable"] and not result["exists"]
    assert list(tmp_path.iterdir()) == []


def test_preflight_refuses_a_file_in_place_of_the_directory(tmp_path):
    blocker = tmp_path / "evidence"
    blocker.write_text("not a dir")
    with pytest.raises(ev.EvidenceError, match="is not a directory"):
        ev.preflight(str(blocker))
    with pytest.raises(ev.EvidenceError, match="cannot be created"):
        ev.preflight(str(blocker / "sub"))


def test_preflight_refuses_a_file_system_without_the_free_space_asked_for(tmp_path):
    with pytest.raises(ev.EvidenceError, match=r"MiB free, below min_free_mb=\d+; free space"):
        ev.preflight(str(tmp_path), min_free_mb=1 << 40)
    assert list(tmp_path.iterdir()) == []


def test_preflight_needs_a_directory():
    with pytest.raises(ev.EvidenceError, match="GOVERNED_ROLLBACK_EVIDENCE_DIR"):
        ev.preflight(None)


# --- local sources, manifests, finalize --------------------------------------------------------------------------


def capture(tmp_path, phase, sources, evidence="evidence", rollback_id="rb-1", context=None):
    return ev.capture_phase(context or ctx(), str(tmp_path / evidence), rollback_id, phase,
                            ev.normalize_sources(sources))


def write_config(path, retention, limit):
    path.write_text("evidence.retention.days=%s\nratelimit.query.limit=%s\nlog.level=info\n"
                    "db.url=postgres://app:hunter22x@db/aureus\n" % (retention, limit))


def test_file_and_command_sources_are_redacted_hashed_and_listed_in_the_manifest(tmp_path):
    config = tmp_path / "app.properties"
    write_config(config, 2555, 100)
    manifest = capture(tmp_path, "before", [
        {"type": "file", "name": "config", "path": str(config)},
        {"type": "command", "name": "echo", "argv": [sys.executable, "-c", "print('token=abcdefgh12345')"]},
    ])
    assert manifest["status"] == "complete" and manifest["incomplete"] is False
    paths = [f["path"] for f in manifest["files"]]
    assert paths == ["before/config/app.properties", "before/echo/result.yaml", "before/echo/stdout.txt"]
    for record in manifest["files"]:
        full = tmp_path / "evidence" / "rb-1" / record["path"]
        assert ev.sha256_file(str(full)) == record["sha256"] and full.stat().st_size == record["size"]
        assert record["captured_at"].endswith("Z")
    body = (tmp_path / "evidence/rb-1/before/config/app.properties").read_text()
    assert "hunter22x" not in body and _redact.REDACTED in body
    assert (tmp_path / "evidence/rb-1/before/echo/stdout.txt").read_text() == "token=%s\n" % _redact.REDACTED
    on_disk = json.loads((tmp_path / "evidence/rb-1/before/manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["redaction"]["status"] == "passed" and manifest["redaction"]["rules_version"] == \
        _redact.RULES_VERSION


def test_a_data_source_writes_the_playbooks_value_as_json_redacted_like_a_file(tmp_path):
    plan = {"to_ref": "4f1c2d9", "pull_request": {"url": "https://forge.example/pr/7"},
            "diff": "-image: web:v2\n+image: web:v1\n+db.url=postgres://app:hunter22x@db/aureus\n"}
    manifest = capture(tmp_path, "before", [
        {"type": "data", "name": "plan", "value": plan},
        {"type": "data", "name": "summary", "value": ["a", 1], "filename": "summary.txt"},
    ])
    assert manifest["status"] == "complete"
    assert [f["path"] for f in manifest["files"]] == ["before/plan/plan.json", "before/summary/summary.txt"]
    assert manifest["sources"][0]["captures"] == "data the playbook holds, as JSON (plan.json)"
    body = (tmp_path / "evidence/rb-1/before/plan/plan.json").read_text()
    assert "hunter22x" not in body and _redact.REDACTED in body
    assert body.startswith("{\n  \"diff\": ") and '"to_ref": "4f1c2d9"' in body
    assert json.loads((tmp_path / "evidence/rb-1/before/summary/summary.txt").read_text()) == ["a", 1]


def test_a_data_source_needs_a_value_and_a_plain_file_name(tmp_path):
    with pytest.raises(ev.EvidenceError, match="value"):
        ev.normalize_sources([{"type": "data", "name": "plan"}])
    manifest = capture(tmp_path, "before", [{"type": "data", "name": "plan", "value": {}, "filename": "../x.json"}])
    (failed,) = manifest["failed_sources"]
    assert failed["name"] == "plan" and "must be a plain file name" in failed["error"]
    assert not (tmp_path / "evidence/rb-1/x.json").exists()


def test_a_failed_source_is_recorded_and_the_others_still_captured(tmp_path):
    config = tmp_path / "app.properties"
    write_config(config, 1, 1)
    manifest = capture(tmp_path, "before", [
        {"type": "file", "name": "missing", "path": str(tmp_path / "nope.txt")},
        {"type": "command", "name": "fails", "argv": [sys.executable, "-c", "import sys; sys.exit('boom: x')"]},
        {"type": "file", "name": "config", "path": str(config)},
    ])
    failed = dict((f["name"], f) for f in manifest["failed_sources"])
    assert set(failed) == {"missing", "fails"}
    assert "nope.txt not found" in failed["missing"]["error"]
    assert failed["fails"]["error"] == "command exited 1: boom: x"
    assert manifest["incomplete"] is False and manifest["status"] == "complete"
    assert "before/config/app.properties" in [f["path"] for f in manifest["files"]]


def test_a_failed_required_source_marks_the_phase_incomplete(tmp_path):
    manifest = capture(tmp_path, "before", [
        {"type": "file", "name": "missing", "path": str(tmp_path / "nope.txt"), "required": True}])
    assert manifest["incomplete"] is True and manifest["status"] == "incomplete"
    assert manifest["required_failed"] == ["missing"]


def test_a_phase_is_never_captured_twice_without_overwrite(tmp_path):
    (tmp_path / "f").write_text("x\n")
    capture(tmp_path, "before", [{"type": "file", "name": "f", "path": str(tmp_path / "f")}])
    with pytest.raises(ev.EvidenceError, match="already exists .* overwrite: true"):
        capture(tmp_path, "before", [{"type": "file", "name": "f", "path": str(tmp_path / "f")}])


def test_a_capture_that_dies_leaves_a_manifest_saying_incomplete(tmp_path, monkeypatch):
    def crash(*_args):
        raise KeyboardInterrupt()
    monkeypatch.setitem(ev.CAPTURE_FUNCTIONS, "file", crash)
    with pytest.raises(KeyboardInterrupt):
        capture(tmp_path, "before", [{"type": "file", "name": "f", "path": "/etc/hostname"}])
    manifest = json.loads((tmp_path / "evidence/rb-1/before/manifest.json").read_text())
    assert manifest["incomplete"] is True and manifest["status"] == "in_progress"
    with pytest.raises(ev.EvidenceError, match="never finished"):
        ev.finalize_pack(ctx(), str(tmp_path / "evidence"), "rb-1")


def config_pair(tmp_path, evidence="evidence", rollback_id="rb-1"):
    config = tmp_path / "app.properties"
    write_config(config, 2555, 100)
    sources = [{"type": "file", "name": "config", "path": str(config)},
               {"type": "command", "name": "hostname", "argv": [sys.executable, "-c", "print('aureus-host')"]}]
    capture(tmp_path, "before", sources, evidence, rollback_id)
    write_config(config, 365, 50)
    capture(tmp_path, "after", sources, evidence, rollback_id)
    return ev.finalize_pack(ctx(), str(tmp_path / evidence), rollback_id)


def test_finalize_diffs_only_what_changed_and_archives_the_pack(tmp_path):
    result = config_pair(tmp_path)
    assert result["redaction"]["status"] == "passed"
    assert result["diff_files"] == ["diff/config/app.properties.diff", "diff/summary.json"]
    diff = (tmp_path / "evidence/rb-1/diff/config/app.properties.diff").read_text()
    assert [l for l in diff.splitlines() if l[:1] in "+-" and l[:3] not in ("+++", "---")] == [
        "-evidence.retention.days=2555", "-ratelimit.query.limit=100",
        "+evidence.retention.days=365", "+ratelimit.query.limit=50"]
    summary = json.loads((tmp_path / "evidence/rb-1/diff/summary.json").read_text())
    assert summary["unchanged"] == 2 and [c["path"] for c in summary["changed"]] == ["config/app.properties"]
    with tarfile.open(result["archive_path"]) as tar:
        names = tar.getnames()
        assert names == sorted(names)
        assert "rb-1/index.json" in names and "rb-1/before/manifest.json" not in names
        for member in tar.getmembers():
            assert (member.mtime, member.uid, member.gid, member.uname, member.gname, member.mode) == (
                ev.ARCHIVE_MTIME, 0, 0, "", "", 0o644)
        index = json.loads(tar.extractfile("rb-1/index.json").read())
    assert index["rollback_id"] == "rb-1" and set(index["phases"]) == {"before", "after"}
    assert "captured_at" not in json.dumps(index)
    with open(result["archive_path"], "rb") as handle:
        header = handle.read(10)
    assert header[4:8] == b"\x00\x00\x00\x00", "gzip header mtime must be 0"
    pack = json.loads((tmp_path / "evidence/rb-1/manifest.json").read_text())
    assert pack["archive"]["sha256"] == result["archive_sha256"] == ev.sha256_file(result["archive_path"])
    assert pack["phases"]["before"]["manifest_sha256"] == ev.sha256_file(
        str(tmp_path / "evidence/rb-1/before/manifest.json"))


def test_two_captures_of_the_same_state_give_the_same_archive_digest(tmp_path):
    first = config_pair(tmp_path, "one")
    second = config_pair(tmp_path, "two")
    assert first["archive_sha256"] == second["archive_sha256"]
    again = ev.finalize_pack(ctx(), str(tmp_path / "one"), "rb-1")
    assert again["archive_sha256"] == first["archive_sha256"] and again["changed"] is False


def test_a_scan_hit_refuses_the_archive_and_removes_an_old_one(tmp_path):
    result = config_pair(tmp_path)
    assert os.path.exists(result["archive_path"])
    leaked = tmp_path / "evidence/rb-1/after/config/app.properties"
    with open(leaked, "a") as handle:
        handle.write("aws " + AWS_KEY + "\n")
    refused = ev.finalize_pack(ctx(), str(tmp_path / "evidence"), "rb-1")
    assert refused["archive_sha256"] is None and not os.path.exists(result["archive_path"])
    assert refused["redaction"]["status"] == "failed"
    assert {(f["path"], f["rule"]) for f in refused["redaction"]["findings"]} >= {
        ("after/config/app.properties", "aws-access-key-id")}
    pack = json.loads((tmp_path / "evidence/rb-1/manifest.json").read_text())
    assert pack["redaction"]["status"] == "failed" and pack["archive"] is None
    assert AWS_KEY not in json.dumps(pack)


def test_a_file_changed_after_capture_is_not_archived(tmp_path):
    config_pair(tmp_path)
    with open(tmp_path / "evidence/rb-1/before/hostname/stdout.txt", "a") as handle:
        handle.write("tampered\n")
    with pytest.raises(ev.EvidenceError, match="changed after it was captured"):
        ev.finalize_pack(ctx(), str(tmp_path / "evidence"), "rb-1")


def test_archive_bytes_do_not_depend_on_file_times_or_modes(tmp_path):
    def pack(name, mode, mtime):
        root = tmp_path / name
        (root / "before" / "s").mkdir(parents=True)
        records = []
        for rel, body in (("before/s/b.txt", b"b\n"), ("before/s/a.txt", b"a\n")):
            path = root / rel
            path.write_bytes(body)
            os.chmod(path, mode)
            os.utime(path, (mtime, mtime))
            records.append({"path": rel, "sha256": ev.sha256_file(str(path))})
        return ev.write_archive(str(root), "rb-1", records, str(tmp_path / (name + ".tar.gz")))
    assert pack("x", 0o600, 1000000000) == pack("y", 0o664, 1700000000)
    with gzip.open(str(tmp_path / "x.tar.gz")) as gz:
        with tarfile.open(fileobj=io.BytesIO(gz.read())) as tar:
            assert tar.getnames() == ["rb-1/before/s/a.txt", "rb-1/before/s/b.txt"]


def test_finalize_needs_a_captured_phase(tmp_path):
    with pytest.raises(ev.EvidenceError, match="nothing to finalize"):
        ev.finalize_pack(ctx(), str(tmp_path), "rb-1")


def test_index_carries_content_but_no_times():
    manifests = {"before": {"incomplete": False, "files": [
        {"path": "before/s/a", "sha256": "1", "size": 1, "source": "s", "type": "file", "captured_at": "T"}],
        "sources": [{"name": "s", "type": "file", "required": False, "status": "ok", "duration_s": 0.1}],
        "failed_sources": [], "redaction": {"status": "passed"}, "started_at": "T"}}
    index = ev.build_index("rb-1", manifests, None, {"status": "passed"})
    assert index["phases"]["before"]["files"] == [{"path": "before/s/a", "sha256": "1", "size": 1, "source": "s",
                                                   "type": "file"}]
    assert "duration_s" not in json.dumps(index) and '"T"' not in json.dumps(index)


TRICKY = {
    "bools and nulls": ["yes", "No", "on", "OFF", "y", "true", "null", "~", True, False, None],
    "numbers": ["1.5", "0x1F", "0o17", "1_000", "1e3", ".inf", "2026-11-21T23:38:02Z", 3, -5, 0.5, 1e-05, 3.0],
    "indicators": ["- x", "[x]", "{x}", "'q'", '"q"', "!tag", "&a", "*a", "%x", "|", ">", "?", "<<", "=", "@x", "`x"],
    "colons and hashes": ["x: y", "a:b", "a #b", "a#b", "ends:", "/api/v1", "aureus/frontend@sha256:abc"],
    "spaces": ["a b c", "a  b", " lead", "trail ", "", "a,b", "a (b)"],
    "multi-line": ["multi\nline\n", "no-newline\nend", "end\n\n\n", "\n", "\nx\n", "x\n  y\n", "  lead\nx",
                   "trail \nx", "\ttab\n", "a\tb\nc\n", "crlf\r\nx"],
    "unicode": ["\u00fcn\u00ef", "\u2028", "\x00\x07", "caf\u00e9 au lait"],
    "nesting": [[], {}, [[1, 2], [{"x": 1}]], {"n": {"y": [{}]}}],
}


def test_yaml_round_trips_every_kind_of_scalar_and_nesting():
    text = ev.to_yaml(TRICKY)
    assert yaml.safe_load(text) == TRICKY
    assert yaml.load(text, Loader=yaml.CSafeLoader) == TRICKY
    assert ev.to_yaml([TRICKY, TRICKY]) == ev.to_yaml([TRICKY]) * 2


def test_yaml_matches_what_pyyaml_reads_for_a_pod():
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "web-7ddb5f8fd-2kz27", "labels": {"pod-template-hash": "7ddb5f8fd", "n": "y"},
                        "creationTimestamp": "2026-11-21T23:38:02Z", "resourceVersion": "1234",
                        "annotations": {"a": "multi\nline\n"}},
           "spec": {"containers": [{"name": "web", "image": "aureus/frontend:v0.1.1", "ports": [{"containerPort": 80}],
                                    "resources": {}, "env": [{"name": "X", "value": "1"}]}]},
           "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}}
    text = ev.to_yaml(pod)
    assert yaml.safe_load(text) == pod
    assert "image: aureus/frontend:v0.1.1\n" in text and "status: \"True\"\n" in text
    assert "  annotations:\n    a: |\n      multi\n      line\n" in text


def test_a_full_evidence_store_stops_the_capture_and_leaves_it_marked_incomplete(tmp_path, monkeypatch):
    def disk_full(*_args):
        raise OSError(28, "No space left on device")
    monkeypatch.setitem(ev.CAPTURE_FUNCTIONS, "command", disk_full)
    (tmp_path / "f").write_text("x\n")
    with pytest.raises(ev.EvidenceError, match="evidence store failed while capturing the before phase"):
        capture(tmp_path, "before", [{"type": "file", "name": "first", "path": str(tmp_path / "f")},
                                     {"type": "command", "name": "full", "argv": ["true"]},
                                     {"type": "file", "name": "later", "path": str(tmp_path / "f")}])
    manifest = json.loads((tmp_path / "evidence/rb-1/before/manifest.json").read_text())
    assert manifest["status"] == "aborted" and manifest["incomplete"] is True
    errors = dict((s["name"], s.get("error")) for s in manifest["sources"])
    assert errors["first"] is None and "No space left" in errors["full"]
    assert errors["later"].startswith("not captured: the capture stopped at an earlier source")
