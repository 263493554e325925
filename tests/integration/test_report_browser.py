"""The rollback report in a real browser: sandbox rollbacks through playbooks/rollback-deploy.yml, their report.html
rendered by headless Chromium (Debian's chromium package), the post-rollback actions posted to a real HTTP listener
the test starts on loopback, and playbooks/report.yml regenerating the report byte for byte.

Screenshots and PDFs are kept under build/test-artifacts/report/ so a person can look at them.
"""

import hashlib
import html.parser
import http.server
import json
import os
import secrets
import shutil
import subprocess
import threading

import pytest

from tests.integration import _playbook as pb
from tests.sandbox_env import ROOT

NAME = "frontend"
ARTIFACTS = os.path.join(ROOT, "build", "test-artifacts", "report")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--disable-extensions"]


# --- the browser ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("headless Chromium is not installed: apt-get install -y chromium (.ci/run and the README's set-up "
                "install it)")


def browse(chromium, tmp_path, page, *flags):
    """Run headless Chromium once on a local file; returns its stdout."""
    profile = tmp_path / ("chromium-profile-%s" % secrets.token_hex(4))
    result = subprocess.run([chromium] + CHROMIUM_FLAGS + ["--user-data-dir=%s" % profile] + list(flags)
                            + ["file://" + page], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


class _Text(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts, self.tags, self._skip = [], [], 0

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._skip += tag in ("style", "title", "head")

    def handle_endtag(self, tag):
        self._skip -= tag in ("style", "title", "head")

    def handle_data(self, data):
        if self._skip <= 0:
            self.parts.append(data)


def dom_text(chromium, tmp_path, page):
    """The text of the DOM Chromium built from the page (its --dump-dom), whitespace collapsed; and its tags."""
    dom = browse(chromium, tmp_path, page, "--dump-dom")
    parser = _Text()
    parser.feed(dom)
    return " ".join(" ".join(parser.parts).split()), parser.tags, dom


def screenshot(chromium, tmp_path, page, name, width=412, height=2600):
    """A PNG of the page at a phone's width (kept under build/test-artifacts/report/)."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    png = os.path.join(ARTIFACTS, name + ".png")
    if os.path.exists(png):
        os.unlink(png)
    browse(chromium, tmp_path, page, "--window-size=%d,%d" % (width, height), "--screenshot=%s" % png)
    with open(png, "rb") as handle:
        data = handle.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000, "the screenshot of %s is empty" % page
    return png


def print_pdf(chromium, tmp_path, page, name):
    os.makedirs(ARTIFACTS, exist_ok=True)
    pdf = os.path.join(ARTIFACTS, name + ".pdf")
    browse(chromium, tmp_path, page, "--no-pdf-header-footer", "--print-to-pdf=%s" % pdf)
    with open(pdf, "rb") as handle:
        data = handle.read()
    assert data.startswith(b"%PDF") and len(data) > 5000
    return pdf


# --- a real webhook receiver ---------------------------------------------------------------------------------------


class Listener:
    """A small HTTP server on loopback that records every POST and answers with ``status``."""

    def __init__(self, status=204):
        self.status = status
        self.posts = []
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                listener.posts.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(listener.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self):
        return "http://127.0.0.1:%d/hooks/rollback/%s" % (self.server.server_address[1], "T0KENPATH")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


# --- the incidents -------------------------------------------------------------------------------------------------


def run_rollback(workdir, namespace, envvars=None, **extravars):
    evidence_dir, ledger = os.path.join(str(workdir), "evidence"), os.path.join(str(workdir), "ledger.jsonl")
    variables = {"namespace": namespace, "deployment": NAME, "evidence_dir": evidence_dir, "receipt_ledger": ledger}
    variables.update(extravars)
    run = pb.run_playbook(os.path.join(str(workdir), "runner-%s" % secrets.token_hex(3)), variables, envvars=envvars)
    return run, evidence_dir, ledger


def receipt_of(ledger, rollback_id):
    found = [e for e in pb.ledger_entries(ledger) if e["rollback_id"] == rollback_id]
    assert len(found) == 1
    return found[0]


@pytest.fixture(scope="module")
def canaries():
    return {"secret": "canary-rptsecret-" + secrets.token_hex(12), "env": "canary-rpttoken-" + secrets.token_hex(12)}


@pytest.fixture(scope="module")
def approved(kubectl, sandbox_env, tmp_path_factory, canaries):
    """An older-version rollback (target_rev=1) the Engineering Lead approves, on a workload holding two canaries
    (a Secret value read through secretKeyRef and a literal API_TOKEN, also in last-applied-configuration), with
    health and smoke checks against the sandbox's OPA and a real webhook listener receiving the actions."""
    namespace = pb.new_namespace(kubectl, "rpt")
    workdir = tmp_path_factory.mktemp("report-approved")
    try:
        pb.create_secret(kubectl, namespace, "frontend-secrets", {"db-password": canaries["secret"]})
        pb.frontend_with_history(kubectl, namespace, env={"API_TOKEN": canaries["env"]},
                                 secret_env={"AUREUS_DB_PASSWORD": ("frontend-secrets", "db-password")},
                                 save_config=True)
        health = sandbox_env["SANDBOX_OPA_URL"] + "/health"
        with Listener() as listener:
            run, evidence_dir, ledger = run_rollback(
                workdir, namespace, target_rev=1, approvals=["eng-lead"], rollback_id="rollback-report-approved",
                health_url=health, smoke_urls=[{"url": health, "status": 200}],
                rollback_webhook_url=listener.url)
        yield {"run": run, "evidence_dir": evidence_dir, "ledger": ledger, "workdir": workdir,
               "posts": listener.posts, "rollback_id": "rollback-report-approved"}
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


# --- tests ---------------------------------------------------------------------------------------------------------


def test_report_of_an_approved_rollback_reads_in_chromium(approved, chromium, tmp_path):
    run, rid = approved["run"], approved["rollback_id"]
    assert run.status == "successful", run.explain()
    entry = receipt_of(approved["ledger"], rid)
    receipt = entry["receipt"]
    page = os.path.join(approved["evidence_dir"], rid, "report.html")

    text, tags, _dom = dom_text(chromium, tmp_path, page)

    assert "script" not in tags
    assert "SUCCEEDED" in text and "deployment rollback in sandbox" in text
    assert "eng-lead (engineering_lead)" in text and "deployment rollback to an older version" in text
    for check in ("rollout complete", "pods on target images", "no fled pods left", "health check", "smoke tests"):
        assert check in text, check
    assert "aureus/frontend:v0.1.2" in text and "aureus/frontend:v0.1.0" in text
    assert receipt["evidence"]["archive_sha256"] in text
    assert entry["receipt_sha256"] in text and entry["entry_sha256"] in text
    assert "Ledger seq %d" % entry["seq"] in text
    assert "America/Chicago" in text and (" CST" in text or " CDT" in text)
    assert "Postmortem due:" in text and "playbooks/verify-receipts.yml" in text
    manifest_files = json.load(open(os.path.join(approved["evidence_dir"], rid, "before", "manifest.json")))["files"]
    assert manifest_files and all(f["sha256"] in text for f in manifest_files)

    png = screenshot(chromium, tmp_path, page, "approved-phone")
    screenshot(chromium, tmp_path, page, "approved-desktop", width=1280, height=3200)
    print_pdf(chromium, tmp_path, page, "approved")
    print("screenshot:", png)


def test_report_digest_and_actions_are_published_with_set_stats(approved):
    run, rid = approved["run"], approved["rollback_id"]
    stats = run.artifact_data["governed_rollback"]
    sidecar = json.load(open(os.path.join(approved["evidence_dir"], rid, "report.json")))
    with open(os.path.join(approved["evidence_dir"], rid, "report.html"), "rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == sidecar["report_sha256"] == stats["report_sha256"]
    entry = receipt_of(approved["ledger"], rid)
    assert sidecar["ledger_seq"] == entry["seq"] and sidecar["receipt_sha256"] == entry["receipt_sha256"]
    actions = stats["post_rollback"]
    assert actions["incident_update"].startswith("**Update (UTC):**")
    assert "regression in the deployment" in actions["incident_update"]
    assert actions["postmortem_due"] and [f for f in actions["follow_ups"] if f["id"] == "postmortem"][0]["due"] == \
        actions["postmortem_due"]
    assert [t["event"] for t in actions["timeline"]][0].startswith("Rollback started")
    for leak in ("frontend", approved["evidence_dir"], "eng-lead"):
        assert leak not in actions["incident_update"]


def test_actions_are_posted_to_the_webhook_once(approved):
    run, rid = approved["run"], approved["rollback_id"]
    posts = approved["posts"]
    assert len(posts) == 1, posts
    body = json.loads(posts[0]["body"].decode("utf-8"))
    assert posts[0]["headers"]["Content-Type"] == "application/json"
    assert body["event"] == "governed.rollback.post_rollback"
    assert body["actions"]["rollback_id"] == rid and body["actions"]["outcome"] == "succeeded"
    assert body["report"]["sha256"] == run.artifact_data["governed_rollback"]["report_sha256"]
    notification = run.artifact_data["governed_rollback"]["notification"]
    assert notification["sent"] is True and notification["attempts"] == 1
    # the webhook's path can hold its token: it is printed nowhere
    assert "T0KENPATH" not in run.stdout and "T0KENPATH" not in json.dumps(run.artifact_data)


def test_no_canary_reaches_the_report_its_sidecar_the_artifacts_or_the_webhook(approved, canaries, chromium, tmp_path):
    rid = approved["rollback_id"]
    needles = list(canaries.values())
    page = os.path.join(approved["evidence_dir"], rid, "report.html")
    assert os.path.exists(page)
    assert pb.files_containing(approved["evidence_dir"], needles) == []
    _text, _tags, dom = dom_text(chromium, tmp_path, page)
    for needle in needles:
        assert needle not in dom
        assert needle not in json.dumps(approved["run"].artifact_data)
        assert needle not in approved["run"].stdout
        assert all(needle not in p["body"].decode("utf-8") for p in approved["posts"])


def test_report_playbook_regenerates_the_same_bytes_verifies_and_renders_the_overview(approved, chromium, tmp_path):
    rid, evidence_dir, ledger = approved["rollback_id"], approved["evidence_dir"], approved["ledger"]
    page = os.path.join(evidence_dir, rid, "report.html")
    before = open(page, "rb").read()
    variables = {"rollback_id": rid, "evidence_dir": evidence_dir, "receipt_ledger": ledger, "report_verify": True}

    run = pb.run_playbook(tmp_path / "report", variables, playbook="playbooks/report.yml")

    assert run.status == "successful", run.explain()
    assert run.task_result("Check the report on disk against its regeneration from the ledger and the pack")[
        "verified"] is True
    assert run.task_result("Regenerate the report of %s" % rid)["changed"] is False
    assert open(page, "rb").read() == before
    overview = os.path.join(os.path.dirname(ledger), "ledger-report.html")
    text, _tags, _dom = dom_text(chromium, tmp_path, overview)
    assert "Rollback ledger overview" in text and rid in text and "succeeded 1" in text
    assert "No emergency overrides in this ledger." in text

    # an edited report no longer verifies (the twin playbook name runs the same play)
    with open(page, "ab") as handle:
        handle.write(b"<!-- approved by somebody else -->")
    run = pb.run_playbook(tmp_path / "report-edited", variables, playbook="playbooks/report_ledger.yml")
    assert run.status == "failed"
    assert "differs from its regeneration" in run.task_result(
        "Check the report on disk against its regeneration from the ledger and the pack")["msg"]
    # regenerating without verify writes the ledger's version back
    variables["report_verify"] = False
    run = pb.run_playbook(tmp_path / "report-again", variables, playbook="playbooks/report.yml")
    assert run.status == "successful", run.explain()
    assert open(page, "rb").read() == before


def test_report_of_a_failed_rollback_says_where_it_stopped(kubectl, namespace, chromium, tmp_path):
    # Revision 2 itself crash-loops: rolling back to it can never complete.
    pb.frontend_with_history(kubectl, namespace, broken=(2, 3))

    run, evidence_dir, ledger = run_rollback(tmp_path, namespace, target_rev=2, wait_timeout=15,
                                             rollback_id="rollback-report-failed")

    assert run.status == "failed"
    assert run.failed_tasks == ["Roll back and wait for the rollout", "Stop, escalate; do not attempt further rollbacks"]
    page = os.path.join(evidence_dir, "rollback-report-failed", "report.html")
    text, _tags, _dom = dom_text(chromium, tmp_path, page)
    assert "FAILED" in text
    assert "Stopped at: Roll back and wait for the rollout" in text
    assert "rollout did not complete (timeout)" in text
    assert "Rollback stopped at: Roll back and wait for the rollout; state preserved as evidence" in text
    assert "failure/manifest.json" in text
    assert "Escalate to the Engineering Lead and on-call SRE" in text
    screenshot(chromium, tmp_path, page, "failed-phone")
    stats = run.artifact_data["governed_rollback"]
    assert stats["outcome"] == "failed" and stats["report_sha256"]
    assert "it did not complete" in stats["post_rollback"]["incident_update"]


def test_a_failing_webhook_never_changes_the_outcome_and_is_reported(kubectl, namespace, tmp_path):
    pb.frontend_with_history(kubectl, namespace)

    with Listener(status=503) as listener:
        # the URL comes the way an AWX credential injects it: an environment variable
        run, _evidence_dir, ledger = run_rollback(tmp_path, namespace, target_rev=2,
                                                  rollback_id="rollback-report-hook-down",
                                                  envvars={"GOVERNED_ROLLBACK_WEBHOOK_URL": listener.url})

    assert run.status == "successful", run.explain()
    assert receipt_of(ledger, "rollback-report-hook-down")["receipt"]["outcome"] == "succeeded"
    assert len(listener.posts) == 4  # the first attempt and three retries with backoff
    notification = run.artifact_data["governed_rollback"]["notification"]
    assert notification["sent"] is False and notification["attempts"] == 4 and notification["status"] == 503
    assert notification["endpoint"].startswith("http://127.0.0.1:")
    summary = run.task_result("Summary")["msg"]
    assert any("notification: FAILED after 4 attempts: attempt 4: HTTP 503" in line for line in summary), summary
    assert "T0KENPATH" not in run.stdout


def test_denied_rollback_leaves_its_pack_empty_publishes_its_actions_and_gets_a_page_on_request(
        kubectl, namespace, chromium, tmp_path):
    pb.frontend_with_history(kubectl, namespace)

    run, evidence_dir, ledger = run_rollback(tmp_path, namespace, target_rev=1, approvals=[],
                                             rollback_id="rollback-report-denied")

    assert run.status == "failed"
    assert not os.path.exists(evidence_dir) or os.listdir(evidence_dir) == []  # a denial writes only its receipt
    stats = run.artifact_data["governed_rollback"]
    assert stats["outcome"] == "denied" and stats["report"] == ""
    actions = stats["post_rollback"]
    assert "not approved; nothing was changed" in actions["incident_update"]
    assert "approvals" in [f["id"] for f in actions["follow_ups"]]

    pages = str(tmp_path / "denied-report")
    report = pb.run_playbook(tmp_path / "report", {"rollback_id": "rollback-report-denied", "evidence_dir": evidence_dir,
                                                   "receipt_ledger": ledger, "report_dir": pages},
                             playbook="playbooks/report.yml")
    assert report.status == "successful", report.explain()
    text, _tags, _dom = dom_text(chromium, tmp_path, os.path.join(pages, "report.html"))
    assert "DENIED" in text and "Stopped at: Check approval against the approval matrix" in text
    assert "engineering_lead" in text
    assert "No evidence files were captured for this rollback." in text
