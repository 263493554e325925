"""Hostile inputs against the redaction layer (issue 9, section 4): every shape ends with the secret masked,
and the things that must stay readable (digests, image references, build ids, UUIDs) stay readable."""

import base64
import json

import pytest

from ansible_collections.governed.rollback.plugins.module_utils import _redact as r

SECRET = "Zq7-hunter2-Xv9"          # assembled below into each shape; never expected in any output
SLASHY = "pa/ss@w0rd"
SHORT = "k3y5"                     # a 4-character Secret value
DIGEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
UUID = "3f2a8c5e-1b7d-4e9a-9c1f-0a2b3c4d5e6f"
ESC = "\x1b"


def masked(text, known=()):
    return r.redact_text(text, known)


def lines_masked(text, known=()):
    redactor = r.LineRedactor(known)
    out = [redactor.redact_line(line) for line in text.splitlines(True)]
    return "".join(line for line in out if line is not None)


# --- free text: one shape per case, the secret must be gone and a mask present ----------------------------------

TEXT_SHAPES = [
    # URL credentials
    "redis://:%s@cache:6379/0" % SECRET,
    "rediss://:%s@cache.example:6380" % SECRET,
    "amqp://guest:%s@rabbit/vhost" % SECRET,
    "postgres://app:%s@db:5432/app" % SECRET,
    "mongodb+srv://root:%s@cluster0.example.net/test?retryWrites=true" % SECRET,
    "DATABASE_URL=mysql://u:%s@db/x" % SECRET,
    "connecting to https://deploy:%s@git.example.com/org/repo.git" % SECRET,
    # key=value, every separator and quoting
    "password=%s" % SECRET,
    "PASSWORD = %s" % SECRET,
    "db_password: %s" % SECRET,
    "client_secret := %s" % SECRET,
    "api_key => %s" % SECRET,
    "apikey:%s" % SECRET,
    "ACCESS_KEY='%s'" % SECRET,
    "'token': '%s'" % SECRET,
    '{"password": "%s"}' % SECRET,
    '{"auth": {"privateKey": "%s"}}' % SECRET,
    "signing-key=%s" % SECRET,
    "credentials=%s" % SECRET,
    "SESSION_KEY=%s;" % SECRET,
    # ANSI colour codes around the key, the value or both
    "%s[33mpassword%s[0m=%s" % (ESC, ESC, SECRET),
    "password=%s[31m%s%s[0m" % (ESC, SECRET, ESC),
    "%s[1;32mDB_TOKEN%s[0m: %s[35m%s%s[0m" % (ESC, ESC, ESC, SECRET, ESC),
    "%s[2K%s[1Gapi_key=%s" % (ESC, ESC, SECRET),
    # JSON escaped inside a log line (once and twice)
    '{"log": "{\\"password\\":\\"%s\\"}"}' % SECRET,
    '{"log": "{\\"db\\": {\\"token\\": \\"%s\\"}}"}' % SECRET,
    '"{\\\\\\"password\\\\\\":\\\\\\"%s\\\\\\"}"' % SECRET,
    # bare pass / pwd keys in embedded config
    "pass: %s" % SECRET,
    "pwd: %s" % SECRET,
    "DB_PASS=%s" % SECRET,
    "[client]\nuser=app\npass=%s\n" % SECRET,
    # command lines in logs
    "exec: app --password %s --port 8080" % SECRET,
    "exec: app --password=%s" % SECRET,
    "exec: app --db-password '%s'" % SECRET,
    'exec: app --api-token "%s"' % SECRET,
    "mysql -h db -u root -p%s appdb" % SECRET,
    "mysqldump -uroot -p%s --all-databases" % SECRET,
    "curl -u deploy:%s https://api.example/x" % SECRET,
    "curl --user=deploy:%s https://api.example/x" % SECRET,
    'argv=["/app", "--password", "%s"]' % SECRET,
    '{"args": [\\"--token\\", \\"%s\\"]}' % SECRET,
    # env entries printed on one line
    '{"name": "DB_PASSWORD", "value": "%s"}' % SECRET,
    "{name: API_TOKEN, value: %s}" % SECRET,
    # headers and tokens
    "Authorization: Bearer %s" % SECRET,
    "authorization=Basic %s" % SECRET,
    "Cookie: session=%s" % SECRET,
    "sent bearer %s0123456789" % SECRET,
    "CREATE ROLE app LOGIN PASSWORD '%s';" % SECRET,
]


@pytest.mark.parametrize("text", TEXT_SHAPES)
def test_secret_shapes_in_text_are_masked(text):
    out = masked(text)
    assert SECRET not in out, out
    assert r.REDACTED in out


@pytest.mark.parametrize("text", TEXT_SHAPES)
def test_secret_shapes_are_masked_line_by_line_too(text):
    out = lines_masked(text + "\n")
    assert SECRET not in out, out


@pytest.mark.parametrize("text", [
    "postgres://app:%s@db/app" % SLASHY,
    "redis://:%s@cache:6379" % SLASHY,
    "https://u:a@b/c@host.example/path",
    "ftp://bob:%s@files.example:21/in" % "p@ss/w:rd",
])
def test_url_passwords_with_slash_or_at_are_masked_whole(text):
    password = text.split("://", 1)[1].split(":", 1)[1].rsplit("@", 1)[0]
    out = masked(text)
    assert password not in out
    assert out.endswith(text[text.rindex("@"):]), "the host after the last '@' stays readable"


# --- values on following lines (LineRedactor carries state) -------------------------------------------------------

MULTILINE_SHAPES = [
    "password:\n  %s\nuser: app\n" % SECRET,
    "db:\n  password:\n    %s\n  host: db\n" % SECRET,
    '{\n  "password":\n    "%s",\n  "user": "app"\n}\n' % SECRET,
    "token =\n%s\n" % SECRET,
    "password:\n\n  %s\n" % SECRET,
    "password: |\n  %s\n  second-line-%s\nnext: 1\n" % (SECRET, SECRET),
    "password: >-\n    %s\n" % SECRET,
    "- secret: |\n    %s\n  name: x\n" % SECRET,
    "config:\n  api_key: |2\n     %s\n  other: x\n" % SECRET,
    "env:\n- name: DB_PASSWORD\n  value: %s\n" % SECRET,
    "- name: API_TOKEN\n  value: '%s'\n" % SECRET,
    "args:\n- --password\n- %s\n" % SECRET,
    "command:\n  - mysql\n  - -p%s\n" % SECRET,
]


@pytest.mark.parametrize("text", MULTILINE_SHAPES)
def test_values_on_following_lines_are_masked_in_streams(text):
    out = lines_masked(text)
    assert SECRET not in out, out
    assert r.REDACTED in out


@pytest.mark.parametrize("text", MULTILINE_SHAPES)
def test_values_on_following_lines_are_masked_in_whole_texts(text):
    out = masked(text)
    assert SECRET not in out, out


def test_a_block_scalar_ends_at_the_next_key_which_stays_readable():
    out = lines_masked("password: |\n  %s\nreplicas: 3\nimage: app:1.2\n" % SECRET)
    assert out == "password: |\n  %s\nreplicas: 3\nimage: app:1.2\n" % r.REDACTED


@pytest.mark.parametrize("text", [
    "secret:\n  secretName: aureus-secrets\n",
    "- secret:\n    secretName: tls\n    items: []\n",
    "token:\n  audience: vault\n",
    "password:\n  ${DB_PASSWORD}\n",
    "password: |\n\nreplicas: 3\n",
])
def test_nested_mappings_and_templates_after_a_secret_key_are_kept(text):
    assert lines_masked(text) == text


# --- container args / command and k8s objects ----------------------------------------------------------------------

ARGV_CASES = [
    (["app", "--password", SECRET], ["app", "--password", r.REDACTED]),
    (["app", "--password=" + SECRET], ["app", "--password=" + r.REDACTED]),
    (["app", "--db-token", SECRET, "--port", "80"], ["app", "--db-token", r.REDACTED, "--port", "80"]),
    (["mysql", "-uroot", "-p" + SECRET, "db"], ["mysql", "-uroot", "-p" + r.REDACTED, "db"]),
    (["/usr/bin/mariadb", "-p" + SECRET], ["/usr/bin/mariadb", "-p" + r.REDACTED]),
    (["curl", "-u", "deploy:" + SECRET, "https://x"], ["curl", "-u", "deploy:" + r.REDACTED, "https://x"]),
    (["sh", "-c", "mysql -uroot -p%s db" % SECRET], ["sh", "-c", "mysql -uroot -p%s db" % r.REDACTED]),
    (["sh", "-c", "psql postgres://u:%s@db/x" % SECRET], ["sh", "-c", "psql postgres://u:%s@db/x" % r.REDACTED]),
    (["app", "--api-key", SECRET], ["app", "--api-key", r.REDACTED]),
    (["app", "--client-secret", "$(CLIENT_SECRET)"], ["app", "--client-secret", "$(CLIENT_SECRET)"]),
]


@pytest.mark.parametrize("argv,expected", ARGV_CASES)
def test_argv_credentials_are_masked(argv, expected):
    assert r.mask_argv(argv) == expected


@pytest.mark.parametrize("argv", [
    ["nginx", "-g", "daemon off;"],
    ["docker", "run", "-u", "1000:1000", "img"],
    ["mkdir", "-p", "/data"],
    ["ssh", "-p2222", "host"],
    ["app", "--password-file", "/run/secrets/db"],
    ["app", "--no-auth-token", "--verbose"],
])
def test_ordinary_argv_stays_readable(argv):
    assert r.mask_argv(argv) == argv


@pytest.mark.parametrize("key", ["args", "command"])
def test_args_and_command_of_containers_are_masked_in_objects(key):
    pod = {"kind": "Pod", "spec": {"containers": [{"name": "c", key: ["app", "--password", SECRET]}],
                                   "initContainers": [{"name": "i", key: ["mysql", "-p" + SECRET]}]}}
    out = r.redact_k8s_object(pod)
    assert SECRET not in json.dumps(out)
    assert out["spec"]["containers"][0][key] == ["app", "--password", r.REDACTED]


# --- values learned from Secrets -----------------------------------------------------------------------------------

def known_from(secret):
    scanner = r.SecretScanner(use_detect_secrets=False)
    for value in r.secret_values_of(secret):
        scanner.add_known_value(value)
    return scanner.known_values


def secret_with(key, value):
    return {"kind": "Secret", "data": {key: base64.b64encode(value.encode()).decode()}}


@pytest.mark.parametrize("text", [
    "login ok with %s" % SHORT,
    "pw=%s;" % SHORT,
    '"%s"' % SHORT,
    "%s" % SHORT,
    "(%s)" % SHORT,
])
def test_short_secret_values_are_masked_as_whole_tokens(text):
    out = masked(text, known_from(secret_with("db-password", SHORT)))
    assert SHORT not in out and r.REDACTED in out


@pytest.mark.parametrize("text", [
    "xk3y5x", "k3y5000", "abck3y5",
])
def test_short_secret_values_are_not_masked_inside_longer_words(text):
    assert masked(text, known_from(secret_with("db-password", SHORT))) == text


def test_values_under_four_characters_are_not_learned():
    assert r.secret_values_of(secret_with("db-password", "abc")) == []


MULTILINE_SECRET = "[client]\nuser = app\npassword = %s\nhost = db.internal\n" % SECRET


@pytest.mark.parametrize("form", [
    SECRET,
    base64.b64encode(SECRET.encode()).decode(),
    json.dumps(MULTILINE_SECRET)[1:-1],
    "password = %s" % SECRET,
])
def test_multi_line_secret_files_are_masked_by_line_by_bare_value_and_whole(form):
    known = known_from(secret_with("my.cnf", MULTILINE_SECRET))
    out = masked("log: %s end" % form, known)
    assert SECRET not in out and json.dumps(MULTILINE_SECRET)[1:-1] not in out


@pytest.mark.parametrize("value", [
    "p@ss w/rd&x=1",
    'quo"te\\back',
    "ünïcødé-pässwörd",
    "tab\tand\nnewline",
])
def test_url_encoded_and_json_escaped_forms_of_known_values_are_masked(value):
    from urllib.parse import quote, quote_plus
    known = known_from({"stringData": {"api-token": value}})
    for form in (quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1],
                 json.dumps(value, ensure_ascii=False)[1:-1]):
        out = masked("GET /cb?token=%s&x=1 body {\"t\": \"%s\"}" % (form, form), known)
        assert form not in out, (form, out)


# --- module results go through the same redaction -------------------------------------------------------------------

def test_redact_value_masks_env_args_keys_and_text_in_any_structure():
    result = {
        "patch": [{"op": "replace", "path": "/spec/template", "value": {"spec": {"containers": [{
            "name": "app", "args": ["--password", SECRET],
            "env": [{"name": "DB_PASSWORD", "value": SECRET}, {"name": "MODE", "value": "prod"}]}]}}}],
        "plan": {"template_changes": [{"path": "spec.containers[0].args[1]", "before": "--token=" + SECRET,
                                       "after": "x"}]},
        "change_cause": "rollback by bob: rotate postgres://u:%s@db/x" % SECRET,
        "history": [{"change_cause": "kubectl set env API_KEY=%s" % SECRET}],
    }
    out = r.redact_value(result)
    assert SECRET not in json.dumps(out)
    env = out["patch"][0]["value"]["spec"]["containers"][0]["env"]
    assert env[1] == {"name": "MODE", "value": "prod"}


def test_redact_value_replaces_absurdly_deep_structures_instead_of_failing():
    deep = current = {}
    for _level in range(5000):
        current["x"] = {}
        current = current["x"]
    current["password"] = SECRET
    out = r.redact_value(deep)
    assert SECRET not in repr(out)[:100000]
    assert "nested deeper" in repr(out)


# --- readable things stay readable ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "image: registry.example/app:1.4.2-b7f3c9a1e2d4",
    "image: registry.example/app@sha256:%s" % DIGEST,
    "image: registry.example:5000/team/app:1.4.2-b7f3c9a1e2d4@sha256:%s" % DIGEST,
    "docker://registry.example:5000/app@sha256:%s" % DIGEST,
    "uid: %s" % UUID,
    "build_id=b7f3c9a1e2d4f00d1234abcd",
    '{"sha256": "%s", "trace_id": "%s"}' % (DIGEST, UUID),
    "checksum/config: %s" % DIGEST,
    "https://registry.example/v2/app/manifests/sha256:%s" % DIGEST,
    "git@github.com:org/repo.git",
    "docker run -u 1000:1000 --rm img",
    "bypass: true",
    "compass=north",
])
def test_digests_image_references_build_ids_and_uuids_stay_readable(text):
    assert masked(text) == text
    assert r.scan_text(text + "\n") == []


# --- rollout_undo's result, built from real-world templates ----------------------------------------------------------

REAL_WORLD_SECRETS = ["S3cr3t-redis-pw", "Init-Pw-123", "pa/ss@db-pw", "AK-1234567890", "Mon1t0r-pw", "oauth-s3cr3t",
                      "literal-pg-pw", "repl-auth-pw"]


def real_world_template(version):
    """Shapes seen in charts and manifests: redis --requirepass, a mysql init container, a DSN in env, API keys in
    args, a curl sidecar with -u, a literal PGPASSWORD."""
    return {"metadata": {"labels": {"component": "frontend"}}, "spec": {
        "initContainers": [{"name": "init-db", "image": "mysql:8.0",
                            "command": ["sh", "-c", "mysql -h db -uroot -pInit-Pw-123 < /init/schema.sql"]}],
        "containers": [
            {"name": "app", "image": "registry.example/app:%s-b7f3c9a1e2d4" % version,
             "args": ["--api-key=AK-1234567890", "--oauth-client-secret", "oauth-s3cr3t", "--port=8080"],
             "env": [{"name": "DATABASE_URL", "value": "postgres://app:pa/ss@db-pw@db:5432/app"},
                     {"name": "PGPASSWORD", "value": "literal-pg-pw"},
                     {"name": "LOG_LEVEL", "value": "info"}]},
            {"name": "redis", "image": "redis:7.2",
             "command": ["redis-server", "--requirepass", "S3cr3t-redis-pw", "--masterauth", "repl-auth-pw"]},
            {"name": "metrics", "image": "curlimages/curl:8.5.0",
             "args": ["-sf", "-u", "monitor:Mon1t0r-pw", "http://localhost:9121/metrics"]},
        ]}}


def test_rollout_undo_results_from_real_world_templates_hold_no_secret():
    from ansible_collections.governed.rollback.plugins.module_utils import _revisions as rev
    from ansible_collections.governed.rollback.plugins.modules import rollout_undo

    uid = "uid-app"
    workload = {"metadata": {"name": "app", "namespace": "shop", "uid": uid, "generation": 4, "resourceVersion": "9",
                             "annotations": {rev.REVISION_ANNOTATION: "2"}},
                "spec": {"selector": {"matchLabels": {"component": "frontend"}}, "template": real_world_template("1.4.3")},
                "status": {"observedGeneration": 4}}
    items = []
    for number, version in ((1, "1.4.2"), (2, "1.4.3")):
        tmpl = real_world_template(version)
        tmpl["spec"]["containers"][0]["env"][1]["value"] += "-v%d" % number
        items.append({"metadata": {"name": "app-%d" % number, "uid": "rs-%d" % number,
                                   "labels": {"component": "frontend"},
                                   "annotations": {rev.REVISION_ANNOTATION: str(number),
                                                   rev.CHANGE_CAUSE_ANNOTATION: "deploy with --requirepass S3cr3t-redis-pw"},
                                   "ownerReferences": [{"uid": uid, "controller": True}]},
                      "spec": {"template": tmpl}})
    items[1]["spec"]["template"] = copy_template = real_world_template("1.4.3")
    copy_template["spec"]["containers"][0]["env"][1]["value"] = "literal-pg-pw"
    plan = rev.plan_rollback("Deployment", workload, items, actor="bob", reason="rotate postgres://u:pa/ss@db-pw@db/x")
    outcome = rollout_undo.Outcome("Deployment", "shop", "app")
    outcome.result.update(patch=rev.mask_patch("Deployment", plan.patch), plan=plan.plan(),
                          diff=rollout_undo._diff(plan, workload), history=[r.summary() for r in plan.history],
                          change_cause=plan.change_cause)
    shown = json.dumps(outcome.close().result)
    leaked = [s for s in REAL_WORLD_SECRETS if s in shown]
    assert leaked == []
    assert "registry.example/app:1.4.2-b7f3c9a1e2d4" in shown and "--port=8080" in shown
    sent = json.dumps(plan.patch)
    assert "S3cr3t-redis-pw" in sent, "the patch sent to the API server is the real template"
