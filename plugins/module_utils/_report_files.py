# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollback report's I/O: read the evidence pack and the ledger, scan and write the report with its sidecar,
and deliver the post-rollback actions to a webhook.

The report is written after the receipt is in the ledger, because it shows the receipt's seq and digests; the
receipt cannot in turn hold the report's digest. The binding goes the other way and is checked by regeneration:

* ``<pack>/report.html`` is a deterministic rendering of the ledger entry and the pack's manifests (whose digests the
  signed receipt holds), so rendering it again from the same ledger and pack must give the same bytes;
* ``<pack>/report.json`` (the sidecar) records the report's sha256 and size with the ledger seq, receipt and entry
  digests it was rendered from;
* ``state: verify`` of ``rollback_report`` (and ``playbooks/report.yml -e report_verify=true``) re-renders and fails
  when report.html or the sidecar differ from what the ledger and the pack give.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import html
import json
import os
import random
import time

from ansible_collections.governed.rollback.plugins.module_utils import _redact, _report
from ansible_collections.governed.rollback.plugins.module_utils._common import RollbackError, pretty_json, sha256_hex
from ansible_collections.governed.rollback.plugins.module_utils._evidence import (
    MANIFEST_NAME, PHASES, validate_rollback_id,
)
from ansible_collections.governed.rollback.plugins.module_utils._receipt import atomic_write, find_entry, read_entries

SIDECAR_SCHEMA = "governed.rollback/report-sidecar/v1"


class ReportError(RollbackError):
    """The report could not be rendered, verified or written; phrased as what to do."""


def _load_json(path):
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return json.load(handle)
    except (IOError, OSError):
        return None
    except ValueError as exc:
        raise ReportError("%s is not valid JSON (%s); the evidence pack is damaged: restore it from its archive"
                          % (path, exc))


def pack_dir(evidence_dir, rollback_id):
    validate_rollback_id(rollback_id)
    return os.path.join(evidence_dir, rollback_id)


def load_pack(evidence_dir, rollback_id):
    """{manifest, phases} of a pack; missing files are left out (a denied rollback has none)."""
    directory = pack_dir(evidence_dir, rollback_id)
    phases = {}
    for phase in PHASES:
        manifest = _load_json(os.path.join(directory, phase, MANIFEST_NAME))
        if manifest is not None:
            phases[phase] = manifest
    return {"manifest": _load_json(os.path.join(directory, MANIFEST_NAME)), "phases": phases}


def load_entry(ledger, rollback_id):
    entry = find_entry(ledger, rollback_id)
    if entry is None:
        raise ReportError("no receipt of %s in the ledger %s: the report shows the recorded receipt, so it is "
                          "written after the receipt; check the rollback_id and the ledger path" % (rollback_id, ledger))
    return entry


def scan(text, path, known_values=()):
    """The collection's secret scan over the page with its entities unescaped: the values as they were given (HTML
    escaping turns the quotes of ``password="..."`` into entities, which must not hide it from the patterns)."""
    return _redact.SecretScanner(known_values=known_values).scan_text(html.unescape(text), path)


def sidecar(rollback_id, page, entry):
    receipt = entry.get("receipt") or {}
    evidence = receipt.get("evidence") or {}
    data = page.encode("utf-8")
    return {
        "schema": SIDECAR_SCHEMA,
        "rollback_id": rollback_id,
        "report": _report.REPORT_NAME,
        "report_sha256": sha256_hex(data),
        "report_size": len(data),
        "report_schema": _report.REPORT_SCHEMA,
        "ledger_seq": entry.get("seq"),
        "receipt_sha256": entry.get("receipt_sha256"),
        "entry_sha256": entry.get("entry_sha256"),
        "evidence_archive_sha256": evidence.get("archive_sha256"),
        "pack_manifest_sha256": evidence.get("manifest_sha256"),
    }


def read_bytes(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def atomic_write_bytes(path, data):
    """The ledger's atomic, durable write (never through a symlink), readable by all: a report is for people."""
    atomic_write(path, data, 0o644)


def render_for(evidence_dir, ledger, rollback_id, zone, next_update_minutes=30, restricted_names=()):
    """(model, page, sidecar dict) for one rollback, from its ledger entry and its pack; scanned, not written."""
    entry = load_entry(ledger, rollback_id)
    pack = load_pack(evidence_dir, rollback_id)
    model = _report.build_report(entry, pack, zone=zone, ledger=ledger, evidence_dir=evidence_dir,
                                 next_update_minutes=next_update_minutes, restricted_names=restricted_names)
    page = _report.render_report(model)
    findings = scan(page, _report.REPORT_NAME)
    if findings:
        raise ReportError("the report of %s was not written: the secret scan found %s; a receipt or manifest holds "
                          "a value that looks secret (run playbooks/verify-receipts.yml and inspect the pack)"
                          % (rollback_id, "; ".join(_redact.describe_findings(findings))))
    return model, page, sidecar(rollback_id, page, entry)


def existing(evidence_dir, rollback_id, directory=None):
    """(report bytes, sidecar bytes) on disk, None where absent."""
    directory = directory or pack_dir(evidence_dir, rollback_id)
    return (read_bytes(os.path.join(directory, _report.REPORT_NAME)),
            read_bytes(os.path.join(directory, _report.SIDECAR_NAME)))


def write_report(evidence_dir, rollback_id, page, side, directory=None):
    """Write report.html then its sidecar (atomically each) into the pack (or ``directory``); returns (changed,
    report path, sidecar path)."""
    directory = directory or pack_dir(evidence_dir, rollback_id)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o750)
    report_path = os.path.join(directory, _report.REPORT_NAME)
    sidecar_path = os.path.join(directory, _report.SIDECAR_NAME)
    data, side_data = page.encode("utf-8"), pretty_json(side).encode("utf-8")
    old_page, old_side = existing(evidence_dir, rollback_id, directory)
    changed = False
    if old_page != data:
        atomic_write_bytes(report_path, data)
        changed = True
    if old_side != side_data:
        atomic_write_bytes(sidecar_path, side_data)
        changed = True
    return changed, report_path, sidecar_path


def verify_report(evidence_dir, rollback_id, page, side, directory=None):
    """Problems (list of str) of the report on disk against its regeneration; empty when it verifies."""
    directory = directory or pack_dir(evidence_dir, rollback_id)
    old_page, old_side = existing(evidence_dir, rollback_id, directory)
    problems = []
    if old_page is None:
        problems.append("%s has no %s" % (directory, _report.REPORT_NAME))
    elif old_page != page.encode("utf-8"):
        problems.append("%s differs from its regeneration from the ledger and the pack (sha256 %s on disk, %s "
                        "regenerated): it was edited or the pack changed" % (
                            _report.REPORT_NAME, sha256_hex(old_page), side["report_sha256"]))
    if old_side is None:
        problems.append("%s has no %s" % (directory, _report.SIDECAR_NAME))
    else:
        try:
            recorded = json.loads(old_side.decode("utf-8"))
        except ValueError:
            recorded = {}
        for key in ("report_sha256", "ledger_seq", "receipt_sha256", "entry_sha256"):
            if recorded.get(key) != side.get(key):
                problems.append("%s says %s %s but the regeneration gives %s" % (
                    _report.SIDECAR_NAME, key, recorded.get(key), side.get(key)))
        if old_page is not None and recorded.get("report_sha256") != sha256_hex(old_page):
            problems.append("%s does not match the sha256 its sidecar records" % _report.REPORT_NAME)
    return problems


def overview(ledger, evidence_dir, now, zone):
    """(page, counts) of the ledger overview; reports found under evidence_dir are linked."""
    entries = read_entries(ledger)
    reports = []
    if evidence_dir:
        for entry in entries:
            rid = entry.get("rollback_id") or ""
            try:
                if os.path.exists(os.path.join(pack_dir(evidence_dir, rid), _report.REPORT_NAME)):
                    reports.append(rid)
            except RollbackError:
                continue
    page = _report.render_overview(entries, now=now, zone=zone, ledger=ledger, reports=reports)
    findings = scan(page, _report.OVERVIEW_NAME)
    if findings:
        raise ReportError("the ledger overview was not written: the secret scan found %s"
                          % "; ".join(_redact.describe_findings(findings)))
    rows, emergencies, counts = _report.overview_rows(entries, now)
    return page, {"entries": len(rows), "outcomes": counts,
                  "retroactive_approvals_due": list(emergencies)}


# --------------------------------------------------------------------------- the webhook

def endpoint_label(url):
    """scheme://host[:port] of a URL: what may be printed (webhook paths often hold the token)."""
    scheme, _sep, rest = (url or "").partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return "%s://%s" % (scheme, host) if host else "(not a URL)"


def deliver(post, payload, retries=3, backoff=1.0, sleep=time.sleep, jitter=random.random):
    """POST ``payload`` with ``post(body_bytes) -> status`` (raising on a transport error), retrying a transport
    error or a 5xx/429 answer with exponential backoff (backoff * 2**n, plus up to 10% jitter). A 4xx other than
    429 is not retried. Returns {sent, status, attempts, errors} and never raises: a notification must not change
    the rollback's outcome; its failure is reported."""
    body = json.dumps(payload, sort_keys=True).encode("utf-8")
    errors, status = [], None
    attempts = 0
    for attempt in range(int(retries) + 1):
        attempts = attempt + 1
        try:
            status = post(body)
        except Exception as exc:  # pylint: disable=broad-except  # any transport error is one failed attempt
            status = None
            errors.append("attempt %d: %s" % (attempts, _redact.redact_text(str(getattr(exc, "reason", exc))[:200])))
        else:
            if 200 <= status < 300:
                return {"sent": True, "status": status, "attempts": attempts, "errors": errors}
            errors.append("attempt %d: HTTP %s" % (attempts, status))
            if 400 <= status < 500 and status != 429:
                break
        if attempt < int(retries):
            delay = float(backoff) * (2 ** attempt)
            sleep(delay + delay * 0.1 * jitter())
    return {"sent": False, "status": status, "attempts": attempts, "errors": errors}
