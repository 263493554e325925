# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollback report and the post-rollback actions, as pure functions over plain data.

``build_report(entry, pack, ...)`` turns one ledger entry (the receipt, its seq and digests) and the evidence pack's
manifests into a model; ``render_report(model)`` turns the model into one self-contained HTML page (inline CSS and
SVG, no script, no network: a Content-Security-Policy forbids every fetch), readable on a phone and printable.
``post_rollback_actions`` is what both runbooks' "post-rollback actions" ask for, as data: a policy-safe incident
update in the KFM template, the incident timeline entries, and the follow-up checklist with the 48-hour postmortem.
``render_overview`` is the ledger's one-page overview.

Rendering is deterministic: the same entry and pack give the same bytes (no clock is read), which is what makes a
report verifiable by regenerating it. Every value is HTML-escaped; nothing here reads files or the network.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import html
import math
import re

from ansible_collections.governed.rollback.plugins.module_utils._common import ROLLBACK_TYPES

try:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    HAS_ZONEINFO = True
except ImportError:  # Python < 3.9 on a managed node: America/Chicago is computed from the US rule below
    HAS_ZONEINFO = False

REPORT_SCHEMA = "governed.rollback/report/v1"
REPORT_NAME = "report.html"
SIDECAR_NAME = "report.json"
OVERVIEW_NAME = "ledger-report.html"
# The KFM runbook records incident times in UTC and America/Chicago.
DEFAULT_ZONE = "America/Chicago"
POSTMORTEM_HOURS = 48
MAX_FILE_ROWS = 400
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_STAMP_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$")
# What may appear of an incident id in the policy-safe update: a ticket reference, nothing free-form.
_SAFE_REFERENCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

PASS_WORDS = ("pass", "passed", "ok", "succeeded", "true")
FAIL_WORDS = ("fail", "failed", "false", "error")
NEUTRAL_WORDS = ("pending", "inconclusive", "skipped", "not_run", "not_required", "unknown")


# --------------------------------------------------------------------------- times

def parse_stamp(value):
    """An aware UTC datetime from ``YYYY-MM-DDTHH:MM:SS[.f]Z``; None for anything else."""
    if not isinstance(value, str) or not _STAMP_RE.match(value):
        return None
    moment = datetime.datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")
    return moment.replace(tzinfo=datetime.timezone.utc)


def stamp(moment):
    return moment.astimezone(datetime.timezone.utc).strftime(TIME_FORMAT)


def _nth_sunday(year, month, nth):
    first = datetime.date(year, month, 1)
    offset = (6 - first.weekday()) % 7
    return first + datetime.timedelta(days=offset + 7 * (nth - 1))


def _chicago_offset(moment):
    """US Central rule since 2007: CDT (-5) from the second Sunday of March 02:00 CST to the first Sunday of
    November 02:00 CDT, else CST (-6). Used only where the zone database is missing."""
    year = moment.year
    start = datetime.datetime.combine(_nth_sunday(year, 3, 2), datetime.time(8), datetime.timezone.utc)
    end = datetime.datetime.combine(_nth_sunday(year, 11, 1), datetime.time(7), datetime.timezone.utc)
    return (-5, "CDT") if start <= moment < end else (-6, "CST")


def local_time(moment, zone=DEFAULT_ZONE):
    """``YYYY-MM-DD HH:MM:SS ABBR`` of a UTC moment in ``zone``; None when the zone cannot be resolved."""
    if moment is None or not zone:
        return None
    if HAS_ZONEINFO:
        try:
            local = moment.astimezone(ZoneInfo(zone))
            return local.strftime("%Y-%m-%d %H:%M:%S ") + (local.tzname() or zone)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    if zone == "America/Chicago":
        hours, name = _chicago_offset(moment)
        local = moment + datetime.timedelta(hours=hours)
        return local.strftime("%Y-%m-%d %H:%M:%S ") + name
    return None


def zone_known(zone):
    return local_time(datetime.datetime(2024, 1, 15, tzinfo=datetime.timezone.utc), zone) is not None


# --------------------------------------------------------------------------- small helpers

def esc(value):
    """HTML-escaped text of any value (None becomes an empty string)."""
    if value is None:
        return ""
    return html.escape(value if isinstance(value, str) else str(value), quote=True)


def verdict_class(value):
    word = str(value).strip().lower() if value is not None else "unknown"
    if word in PASS_WORDS:
        return "pass"
    if word in FAIL_WORDS:
        return "fail"
    if word == "inconclusive":
        return "inconclusive"
    return "neutral"


def _number(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _fmt_number(value):
    number = _number(value)
    if number is None:
        return "" if value is None else str(value)
    if number == int(number) and abs(number) < 1e15:
        return str(int(number))
    return ("%.6g" % number)


def _scalar_text(value):
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(_scalar_text(v) for v in value)
    if isinstance(value, dict):
        return ", ".join("%s=%s" % (k, _scalar_text(v)) for k, v in sorted(value.items(), key=lambda kv: str(kv[0])))
    if isinstance(value, float):
        return _fmt_number(value)
    return "" if value is None else str(value)


# --------------------------------------------------------------------------- the model

def _phase_times(pack):
    phases = ((pack or {}).get("manifest") or {}).get("phases") or {}
    found = {}
    for name, manifest in ((pack or {}).get("phases") or {}).items():
        found[name] = {"started_at": manifest.get("started_at"), "finished_at": manifest.get("finished_at")}
    for name, summary in phases.items():
        found.setdefault(name, {"started_at": summary.get("started_at"), "finished_at": summary.get("finished_at")})
    return found


def build_timeline(receipt, pack=None, zone=DEFAULT_ZONE, recorded_at=None):
    """The incident timeline of one rollback, sorted: [{at, at_local, event}] from the receipt and the pack.

    The receipt gives the start, the approval decision and the end; the phase manifests give the evidence
    captures (the freeze before the change, the state after or at the failure); the action's own timing (for a
    deployment, the seconds the rollout took) places the change between them.
    """
    receipt = receipt or {}
    approval = receipt.get("approval") or {}
    details = receipt.get("details") or {}
    phases = _phase_times(pack)
    events = []

    def add(when, text):
        moment = parse_stamp(when)
        if moment is not None:
            events.append((moment, len(events), text))

    add(receipt.get("started_at"), "Rollback started: plan checked (server-side dry run where the API has one)")
    if approval:
        if approval.get("approved"):
            text = "Approval granted (rule %s%s)" % (
                approval.get("rule"), ", EMERGENCY override" if approval.get("emergency") else "")
        else:
            text = "Approval denied (rule %s): nothing was changed" % approval.get("rule")
        add(approval.get("evaluated_at"), text)
    before = phases.get("before") or {}
    add(before.get("started_at"), "Freeze and preserve evidence: capture of the state before the change started")
    add(before.get("finished_at"), "Evidence before captured; the change is applied (patch / revert / restore)")
    seconds = _number(details.get("rollout_seconds"))
    patched = parse_stamp(before.get("finished_at"))
    if seconds is not None and patched is not None:
        after = phases.get("after") or {}
        add(stamp(patched + datetime.timedelta(seconds=seconds)),
            ("Rollout complete (%s s after the change)" if after.get("started_at")
             else "Rollout wait ended without completing (%s s after the change)") % _fmt_number(round(seconds, 1)))
    after = phases.get("after") or {}
    add(after.get("started_at"), "Verification checklist passed; capture of the state after the change started")
    add(after.get("finished_at"), "Evidence after captured; pack sealed")
    failure = phases.get("failure") or {}
    stopped = (receipt.get("failure") or {}).get("task")
    add(failure.get("started_at"), "Rollback stopped%s; state preserved as evidence"
        % ((" at: %s" % stopped) if stopped else ""))
    outcome = receipt.get("outcome") or "unknown"
    add(receipt.get("completed_at"), "Rollback %s; receipt recorded" % outcome.upper())
    if recorded_at and recorded_at != receipt.get("completed_at"):
        add(recorded_at, "Receipt appended to the ledger")
    if receipt.get("emergency") and receipt.get("retroactive_approval_due"):
        add(receipt.get("retroactive_approval_due"), "Retroactive approval of the emergency override due")
    events.sort(key=lambda item: (item[0], item[1]))
    return [{"at": stamp(m), "at_local": local_time(m, zone), "event": text} for m, _i, text in events]


def _label(rollback_type):
    return (ROLLBACK_TYPES.get(rollback_type) or {}).get("label") or "service"


def policy_safe(text, restricted_names=()):
    """True when ``text`` names none of ``restricted_names`` (case-insensitive)."""
    lowered = (text or "").lower()
    return not any(name and str(name).lower() in lowered for name in restricted_names or ())


def incident_update(receipt, zone=DEFAULT_ZONE, next_update_minutes=30, restricted_names=()):
    """The KFM runbook's suggested incident update (policy-safe), filled for this rollback.

    Built from fixed sentences plus the outcome, the rollback type, the times and the incident reference only:
    never a component, namespace, dataset or person's name, the free-text reason or a failure message, so nothing
    restricted or secret can travel in it. A reference naming a restricted name is withheld.
    """
    receipt = receipt or {}
    completed = parse_stamp(receipt.get("completed_at"))
    when = completed.strftime("%H:%M UTC") if completed else "time unknown"
    local = local_time(completed, zone) if completed else None
    if local:
        when += " / %s" % local[11:16] + local[19:]
    label = _label(receipt.get("rollback_type"))
    reference = receipt.get("incident_id")
    if not (isinstance(reference, str) and _SAFE_REFERENCE_RE.match(reference)
            and policy_safe(reference, restricted_names)):
        reference = None
    verification = receipt.get("verification") or {}
    outcome = receipt.get("outcome")
    lines = ["**Update (UTC):** %s%s" % (when, (" - %s" % reference) if reference else "")]
    if outcome == "succeeded":
        lines.append("We identified a regression in the %s affecting availability and/or policy enforcement." % label)
        lines.append("We rolled back to the last-known-good version and verified service health (health: %s)%s."
                     % (verification.get("health", "not_run"),
                        "" if verification.get("user_validation") != "pending" else "; user validation is pending"))
        lines.append("We are monitoring.")
    elif outcome == "denied":
        lines.append("A rollback of the %s was requested and not approved; nothing was changed." % label)
        lines.append("We are gathering the required approvals.")
    else:
        lines.append("We identified a regression in the %s affecting availability and/or policy enforcement." % label)
        lines.append("We initiated a rollback to the last-known-good build; it did not complete. The state is "
                     "preserved and the incident is escalated.")
    lines.append("Next update in: %d minutes." % int(next_update_minutes))
    text = "\n".join(lines)
    return text if policy_safe(text, restricted_names) else \
        "**Update (UTC):** %s\nA rollback is in progress; details follow through the incident channel.\n" \
        "Next update in: %d minutes." % (when, int(next_update_minutes))


def follow_ups(receipt, report_path=None):
    """The runbooks' post-rollback checklist for this rollback: [{id, text, due, required}]."""
    receipt = receipt or {}
    completed = parse_stamp(receipt.get("completed_at"))
    due_48 = stamp(completed + datetime.timedelta(hours=POSTMORTEM_HOURS)) if completed else None
    now_due = receipt.get("completed_at")
    outcome = receipt.get("outcome")
    evidence = receipt.get("evidence") or {}
    verification = receipt.get("verification") or {}
    items = [("incident-timeline", "Update the incident timeline with the rollback's exact timestamps (UTC and %s)"
              % DEFAULT_ZONE, now_due, True)]
    if outcome == "failed":
        items.append(("escalate", "Escalate to the Engineering Lead and on-call SRE; do not attempt further "
                                  "rollbacks", now_due, True))
    if outcome == "denied":
        missing = ", ".join((receipt.get("approval") or {}).get("missing_roles") or []) or "the required roles"
        items.append(("approvals", "Collect the missing approvals (%s) and run the rollback again" % missing,
                      now_due, True))
    items.append(("notify", "Notify stakeholders of %s" % (
        "service restoration" if outcome == "succeeded" else "the rollback's outcome"), now_due, True))
    if outcome == "succeeded":
        items.append(("status-page", "Update the status page to \"Monitoring\" or \"Resolved\"", now_due, True))
    if verification.get("user_validation") == "pending":
        items.append(("user-validation", "Confirm user validation (pending for a P0/P1 incident)", now_due, True))
    if evidence.get("archive_sha256"):
        items.append(("archive-evidence", "Archive the evidence pack %s (sha256 %s) to permanent storage"
                      % (evidence.get("archive") or "", evidence["archive_sha256"]), now_due, True))
    if receipt.get("emergency"):
        items.append(("retroactive-approval", "Obtain the retroactive approval of the emergency override",
                      receipt.get("retroactive_approval_due"), True))
        items.append(("post-incident-review", "Hold the post-incident review the emergency override requires",
                      due_48, True))
    if outcome != "denied":
        items.append(("postmortem", "Hold the postmortem (within %d hours)" % POSTMORTEM_HOURS, due_48, True))
        items.append(("follow-up-pr", "Open a follow-up PR: tests that would have caught the regression, a "
                                      "canary/preview guardrail if missing, automated rollback verification",
                      due_48, True))
        if receipt.get("rollback_type") == "policy" or verdict_class(verification.get("policy_invariants")) == "fail":
            items.append(("governance-review", "Governance review: policy bypass, redaction failure, licensing or "
                                               "sensitivity mislabel", due_48, True))
        for key, text in (("root-cause", "Fix the root cause"),
                          ("rollback-test", "Add a rollback test to CI/CD"),
                          ("runbook", "Update the runbook with learnings"),
                          ("monitoring", "Improve monitoring/alerting to detect it earlier")):
            items.append((key, text, None, False))
    if report_path:
        items.append(("link-report", "Link the rollback report and receipt from the incident ticket", now_due, True))
    return [{"id": key, "text": text, "due": due, "required": required} for key, text, due, required in items]


def post_rollback_actions(receipt, entry=None, pack=None, zone=DEFAULT_ZONE, next_update_minutes=30,
                          restricted_names=(), report_path=None):
    """What an AWX workflow posts after the rollback: the incident update, the timeline and the follow-ups."""
    receipt = receipt or {}
    completed = parse_stamp(receipt.get("completed_at"))
    return {
        "rollback_id": receipt.get("rollback_id"),
        "outcome": receipt.get("outcome"),
        "rollback_type": receipt.get("rollback_type"),
        "incident_id": receipt.get("incident_id"),
        "zone": zone,
        "incident_update": incident_update(receipt, zone, next_update_minutes, restricted_names),
        "timeline": build_timeline(receipt, pack, zone, (entry or {}).get("recorded_at")),
        "follow_ups": follow_ups(receipt, report_path),
        "postmortem_due": stamp(completed + datetime.timedelta(hours=POSTMORTEM_HOURS)) if completed else None,
        "retroactive_approval_due": receipt.get("retroactive_approval_due") if receipt.get("emergency") else None,
        "receipt_sha256": (entry or {}).get("receipt_sha256"),
        "ledger_seq": (entry or {}).get("seq"),
    }


def _before_after(receipt, pack):
    """Rows (what, before, after) of what changed, from the type's receipt fields and the pack's diff summary."""
    details = receipt.get("details") or {}
    rows = [("Version", receipt.get("from_version"), receipt.get("to_version")),
            ("Reference (digest / commit)", receipt.get("current_ref"), receipt.get("rollback_target_ref"))]
    pairs = []
    for key in sorted(details):
        if key.startswith("from_") and ("to_" + key[5:]) in details:
            pairs.append(key[5:])
    for name in pairs:
        rows.append((name.replace("_", " ").capitalize(), _scalar_text(details["from_" + name]),
                     _scalar_text(details["to_" + name])))
    singles = []
    for key, label in (("config_type", "Configuration kind"), ("changed_keys", "Configuration keys changed"),
                       ("migration_reverted", "Migration reverted"), ("backup_location", "Backup taken before"),
                       ("data_loss", "Data loss"), ("downtime", "Downtime"), ("policy_name", "Policy"),
                       ("security_review", "Security review"), ("affected_users", "Affected users"),
                       ("snapshot_id", "Snapshot restored")):
        if receipt.get(key) not in (None, "", []):
            singles.append((label, _scalar_text(receipt.get(key))))
    paired = set("from_" + n for n in pairs) | set("to_" + n for n in pairs)
    for key in sorted(details):
        if key in paired:
            continue
        value = details[key]
        if isinstance(value, (dict, list)) and len(_scalar_text(value)) > 400:
            value = "(%d items, see the evidence pack)" % len(value)
        singles.append((key.replace("_", " ").capitalize(), _scalar_text(value)))
    diff = ((pack or {}).get("manifest") or {}).get("diff") or {}
    return [r for r in rows if r[1] not in (None, "") or r[2] not in (None, "")], singles, diff


def _evidence_files(pack):
    rows = []
    for phase in sorted(((pack or {}).get("phases") or {})):
        for record in (pack["phases"][phase].get("files") or []):
            rows.append({"phase": phase, "path": record.get("path"), "sha256": record.get("sha256"),
                         "size": record.get("size")})
    manifest = (pack or {}).get("manifest") or {}
    for phase, summary in sorted((manifest.get("phases") or {}).items()):
        rows.append({"phase": "pack", "path": summary.get("manifest") or "%s/manifest.json" % phase,
                     "sha256": summary.get("manifest_sha256"), "size": None})
    archive = manifest.get("archive") or {}
    if archive.get("index_sha256"):
        rows.append({"phase": "pack", "path": "index.json", "sha256": archive["index_sha256"], "size": None})
    if archive.get("sha256"):
        rows.append({"phase": "pack", "path": "../" + (archive.get("path") or "archive"), "sha256": archive["sha256"],
                     "size": archive.get("size")})
    return rows


def build_report(entry, pack=None, zone=DEFAULT_ZONE, ledger=None, evidence_dir=None, next_update_minutes=30,
                 restricted_names=()):
    """The report model: plain data that render_report turns into HTML (and that a test can read directly).

    ``entry`` is the ledger entry (``seq``, ``receipt_sha256``, ``entry_sha256``, ``recorded_at``, ``receipt``);
    ``pack`` is ``{manifest: <pack manifest.json>, phases: {phase: <phase manifest.json>}}`` (either may be
    missing: a denied rollback has no pack). Missing fields degrade to "not recorded", never to an error.
    """
    entry = entry or {}
    receipt = entry.get("receipt") or {}
    pack = pack or {}
    approval = receipt.get("approval") or {}
    rows, singles, diff = _before_after(receipt, pack)
    manifest = pack.get("manifest") or {}
    return {
        "schema": REPORT_SCHEMA,
        "rollback_id": receipt.get("rollback_id") or manifest.get("rollback_id"),
        "zone": zone,
        "receipt": receipt,
        "entry": {"seq": entry.get("seq"), "receipt_sha256": entry.get("receipt_sha256"),
                  "entry_sha256": entry.get("entry_sha256"), "recorded_at": entry.get("recorded_at"),
                  "signed": bool(entry.get("signatures"))},
        "approval": approval,
        "before_after": rows,
        "facts": singles,
        "diff": diff,
        "verification": receipt.get("verification") or {},
        "verification_details": receipt.get("verification_details") or {},
        "timeline": build_timeline(receipt, pack, zone, entry.get("recorded_at")),
        "actions": post_rollback_actions(receipt, entry, pack, zone, next_update_minutes, restricted_names),
        "files": _evidence_files(pack),
        "pack": {"incomplete": manifest.get("incomplete"), "redaction": (manifest.get("redaction") or {}).get("status"),
                 "archive": manifest.get("archive") or {}, "phases": sorted((pack.get("phases") or {}))},
        "ledger": ledger,
        "evidence_dir": evidence_dir,
    }


# --------------------------------------------------------------------------- HTML

CSS = """
:root{--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--bg:#fff;--good:#1a7f37;--bad:#cf222e;--inc:#9a6700;
--neutral:#57606a;--band:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.45 -apple-system,"Segoe UI",Roboto,"DejaVu Sans",
Helvetica,Arial,sans-serif;-webkit-text-size-adjust:100%}
main{max-width:980px;margin:0 auto;padding:12px}
h1{font-size:1.35rem;margin:.2rem 0 .4rem;overflow-wrap:anywhere}
h2{font-size:1.1rem;margin:1.4rem 0 .5rem;padding-bottom:.2rem;border-bottom:2px solid var(--line)}
h3{font-size:.98rem;margin:1rem 0 .4rem}
p{margin:.3rem 0}
.badge{display:inline-block;padding:.1rem .55rem;border-radius:1rem;font-weight:600;font-size:.85rem;color:#fff;
background:var(--neutral);white-space:nowrap}
.badge.pass{background:var(--good)}.badge.fail{background:var(--bad)}.badge.inconclusive{background:var(--inc)}
.outcome{font-size:1rem;padding:.2rem .8rem}
.stop{border-left:4px solid var(--bad);background:#ffebe9;padding:.5rem .7rem;margin:.6rem 0;overflow-wrap:anywhere}
.emergency{border-left:4px solid var(--inc);background:#fff8c5;padding:.5rem .7rem;margin:.6rem 0}
.facts{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:.3rem .9rem;margin:.4rem 0}
.facts div{border-bottom:1px solid var(--line);padding:.2rem 0;overflow-wrap:anywhere}
.facts b{display:block;font-size:.75rem;color:var(--muted);font-weight:600;text-transform:uppercase}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;vertical-align:top;padding:.3rem .45rem;border-bottom:1px solid var(--line)}
th{background:var(--band);font-weight:600}
td.mono,.mono{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.8rem;overflow-wrap:anywhere;
word-break:break-all}
td.when{white-space:nowrap;word-break:normal}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:var(--band);border:1px solid var(--line);padding:.6rem;
font-size:.85rem}
ul.checklist{list-style:none;padding-left:0}ul.checklist li{padding:.2rem 0 .2rem 1.6rem;position:relative}
ul.checklist li:before{content:"\\2610";position:absolute;left:0;font-size:1.05rem}
.chart{display:block;max-width:100%;height:auto}
.muted{color:var(--muted);font-size:.85rem}
footer{margin-top:1.5rem;color:var(--muted);font-size:.8rem}
@media (max-width:600px){body{font-size:14px}main{padding:8px}th,td{padding:.25rem .3rem}}
@media print{body{font-size:10pt;color:#000}main{max-width:none;padding:0}.scroll{overflow:visible}
h2{break-after:avoid}table,tr,.facts,figure,pre{break-inside:avoid}
.badge{color:#000;background:none!important;border:1px solid #000}a{color:#000;text-decoration:none}
@page{margin:14mm}}
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def _badge(value, extra=""):
    text = value if value is not None else "not recorded"
    return '<span class="badge %s%s">%s</span>' % (verdict_class(value), extra, esc(text))


def _time_cells(value, zone):
    moment = parse_stamp(value)
    if moment is None:
        return "<td>%s</td><td></td>" % esc(value or "not recorded")
    utc, local = stamp(moment), local_time(moment, zone) or ""
    return '<td class="mono when">%s<br>%s</td><td class="mono when">%s<br>%s</td>' % (
        esc(utc[:10]), esc(utc[11:]), esc(local[:10]), esc(local[11:]))


def _fact(label, value, mono=False):
    text = _scalar_text(value) if value not in (None, "", []) else "not recorded"
    return '<div><b>%s</b><span%s>%s</span></div>' % (esc(label), ' class="mono"' if mono else "", esc(text))


def _table(headers, rows, mono_columns=()):
    out = ['<div class="scroll"><table><thead><tr>']
    out.extend("<th>%s</th>" % esc(h) for h in headers)
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        for index, cell in enumerate(row):
            if isinstance(cell, tuple) and cell and cell[0] == "html":
                out.append("<td>%s</td>" % cell[1])
            else:
                out.append('<td%s>%s</td>' % (' class="mono"' if index in mono_columns else "", esc(cell)))
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def metric_chart(metric, marker=None, width=320, height=90):
    """A small inline SVG line chart of a metric's measurements, with its baseline dashed and the moment of the
    change marked; None when there are fewer than two numeric measurements."""
    points = []
    for item in metric.get("measurements") or []:
        if not isinstance(item, dict):
            continue
        moment, value = parse_stamp(item.get("at")), _number(item.get("value"))
        if moment is not None and value is not None:
            points.append((moment, value))
    if len(points) < 2:
        return None
    points.sort(key=lambda p: p[0])
    baseline = _number(metric.get("baseline"))
    values = [v for _m, v in points] + ([baseline] if baseline is not None else [])
    low, high = min(values), max(values)
    if high == low:
        high, low = high + 1.0, low - 1.0 if low != 0 else 0.0
    start, end = points[0][0], points[-1][0]
    span = (end - start).total_seconds() or 1.0
    pad_left, pad_right, pad_top, pad_bottom = 44, 8, 8, 18
    plot_w, plot_h = width - pad_left - pad_right, height - pad_top - pad_bottom

    def x_of(moment):
        return pad_left + plot_w * ((moment - start).total_seconds() / span)

    def y_of(value):
        return pad_top + plot_h * (1 - (value - low) / (high - low))

    name = metric.get("name") or "metric"
    result = verdict_class(metric.get("result"))
    colour = {"pass": "#1a7f37", "fail": "#cf222e", "inconclusive": "#9a6700"}.get(result, "#0969da")
    parts = ['<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" '
             'role="img" aria-label="%s">' % (width, height, width, height, esc("%s over time" % name)),
             "<title>%s</title>" % esc("%s: %d measurements from %s to %s"
                                       % (name, len(points), stamp(start), stamp(end))),
             '<rect x="%d" y="%d" width="%d" height="%d" fill="#f6f8fa" stroke="#d0d7de"/>'
             % (pad_left, pad_top, plot_w, plot_h),
             '<text x="%d" y="%d" font-size="10" text-anchor="end" fill="#57606a">%s</text>'
             % (pad_left - 4, pad_top + 9, esc(_fmt_number(high))),
             '<text x="%d" y="%d" font-size="10" text-anchor="end" fill="#57606a">%s</text>'
             % (pad_left - 4, pad_top + plot_h, esc(_fmt_number(low))),
             '<text x="%d" y="%d" font-size="10" fill="#57606a">%s</text>'
             % (pad_left, height - 4, esc(stamp(start)[11:19] + "Z")),
             '<text x="%d" y="%d" font-size="10" text-anchor="end" fill="#57606a">%s</text>'
             % (width - pad_right, height - 4, esc(stamp(end)[11:19] + "Z"))]
    if baseline is not None:
        y = y_of(baseline)
        parts.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#57606a" stroke-dasharray="4 3"/>'
                     % (pad_left, pad_left + plot_w, y, y))
    mark = parse_stamp(marker)
    if mark is not None and start <= mark <= end:
        x = x_of(mark)
        parts.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#8250df" stroke-width="1.5"/>'
                     '<text x="%.1f" y="%d" font-size="9" fill="#8250df">rollback</text>'
                     % (x, x, pad_top, pad_top + plot_h, x + 2, pad_top + 9))
    path = " ".join("%.1f,%.1f" % (x_of(m), y_of(v)) for m, v in points)
    parts.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (colour, path))
    parts.extend('<circle cx="%.1f" cy="%.1f" r="2.2" fill="%s"/>' % (x_of(m), y_of(v), colour) for m, v in points)
    parts.append("</svg>")
    return "".join(parts)


def _generic_items(items):
    """Rows for contract / policy-invariant checks of unknown shape: name, result, the rest as text."""
    rows = []
    for item in items or []:
        if not isinstance(item, dict):
            rows.append((_scalar_text(item), ("html", _badge("unknown")), ""))
            continue
        name = item.get("name") or item.get("id") or item.get("endpoint") or item.get("query") or "check"
        used = [k for k in ("result", "verdict", "status") if k in item][:1]
        result = item[used[0]] if used else None
        rest = dict((k, v) for k, v in item.items() if k not in ["name", "id"] + used)
        rows.append((_scalar_text(name), ("html", _badge(result)), _scalar_text(rest)))
    return rows


def _verification_section(model):
    receipt = model["receipt"]
    out = ['<section id="verification"><h2>Verification checklist</h2>']
    verification = model["verification"]
    if not verification:
        out.append("<p>No verification was recorded.</p>")
    else:
        rows = [(key.replace("_", " "), ("html", _badge(value))) for key, value in sorted(verification.items())]
        out.append(_table(["Check", "Result"], rows))
    details = model["verification_details"]
    if not isinstance(details, dict) or not details:
        out.append('<p class="muted">No metric, contract or invariant details were recorded for this rollback.</p>')
        out.append("</section>")
        return "".join(out)
    marker = None
    before = ((model.get("timeline") or []))
    for item in before:
        if item["event"].startswith("Evidence before captured"):
            marker = item["at"]
    metrics = details.get("metrics") or []
    if metrics:
        out.append("<h3>Metrics</h3>")
        rows = []
        for metric in metrics:
            if not isinstance(metric, dict):
                continue
            rows.append((metric.get("name") or "metric", ("html", _badge(metric.get("result"))),
                         _fmt_number(metric.get("value")), _fmt_number(metric.get("baseline")),
                         metric.get("condition") or "", metric.get("query") or ""))
        out.append(_table(["Metric", "Result", "Value", "Baseline", "Condition", "Query"], rows, mono_columns=(5,)))
        for metric in metrics:
            if not isinstance(metric, dict):
                continue
            chart = metric_chart(metric, marker)
            if chart:
                out.append('<figure><figcaption>%s <span class="muted">(dashed: baseline; violet: the change)'
                           '</span></figcaption>%s</figure>' % (esc(metric.get("name") or "metric"), chart))
    for key, title in (("contracts", "Contract checks"), ("policy_invariants", "Policy invariants")):
        items = details.get(key)
        if items:
            out.append("<h3>%s</h3>" % title)
            out.append(_table(["Check", "Result", "Details"], _generic_items(items)))
    logs = details.get("logs")
    if isinstance(logs, dict) and logs:
        out.append("<h3>Logs</h3>")
        out.append(_table(["Field", "Value"], [(k.replace("_", " "), _scalar_text(v))
                                               for k, v in sorted(logs.items())]))
    known = set(("metrics", "contracts", "policy_invariants", "logs"))
    others = [(k, _scalar_text(v)) for k, v in sorted(details.items()) if k not in known]
    if others:
        out.append(_table(["Detail", "Value"], others))
    del receipt
    out.append("</section>")
    return "".join(out)


def _approval_section(model):
    receipt, approval = model["receipt"], model["approval"]
    out = ['<section id="approval"><h2>Approval decision</h2>']
    if not approval:
        out.append("<p>No approval decision was recorded (the rollback stopped before approval was evaluated).</p>"
                   "</section>")
        return "".join(out)
    approvers = ", ".join("%s (%s)" % (a.get("name"), ", ".join(a.get("roles") or []) or "no role")
                          for a in receipt.get("approved_by") or approval.get("approved_by") or [])
    out.append('<div class="facts">')
    out.append(_fact("Decision", "approved" if approval.get("approved") else "denied"))
    out.append(_fact("Rule", approval.get("rule_label") or approval.get("rule")))
    out.append(_fact("Approval path", approval.get("approval_path")))
    out.append(_fact("Requested by", receipt.get("requested_by") or approval.get("requested_by")))
    out.append(_fact("Approved by", approvers or "nobody"))
    out.append(_fact("Approval mode", approval.get("approval_mode")))
    out.append(_fact("Decided at (UTC)", approval.get("evaluated_at"), True))
    out.append(_fact("Missing roles", approval.get("missing_roles") or "none"))
    out.append("</div>")
    if approval.get("message"):
        out.append("<p>%s</p>" % esc(approval["message"]))
    signers = approval.get("verified_signers") or []
    if signers:
        out.append("<h3>Signed statements verified</h3>")
        out.append(_table(["Signer", "Key sha256", "Statement sha256", "Expires"],
                          [(s.get("name"), s.get("key_sha256") or s.get("fingerprint"),
                            s.get("statement_sha256") or s.get("sha256"), s.get("expires") or s.get("expiry"))
                           for s in signers if isinstance(s, dict)], mono_columns=(1, 2)))
    elif approval.get("approval_mode") == "asserted":
        out.append('<p class="muted">Approvals were typed names (approval_mode asserted, allowed only where the '
                   'inventory permits it, never in production); no signed statement was involved.</p>')
    if receipt.get("emergency") or approval.get("emergency"):
        due = receipt.get("retroactive_approval_due") or approval.get("retroactive_approval_due")
        moment = parse_stamp(due)
        out.append('<div class="emergency"><b>EMERGENCY override</b> by incident commander %s. Retroactive approval '
                   'due <span class="mono">%s</span>%s; post-incident review %s.</div>'
                   % (esc(approval.get("incident_commander") or "not recorded"), esc(due or "not recorded"),
                      esc(" (%s)" % local_time(moment, model["zone"])) if moment and local_time(moment, model["zone"])
                      else "", esc(receipt.get("post_incident_review") or "required")))
    out.append("</section>")
    return "".join(out)


def _changes_section(model):
    out = ['<section id="changes"><h2>Before and after</h2>']
    if model["before_after"]:
        out.append(_table(["What", "Before", "After"], model["before_after"], mono_columns=(1, 2)))
    else:
        out.append("<p>No before/after references were recorded.</p>")
    if model["facts"]:
        out.append(_table(["Fact", "Value"], model["facts"], mono_columns=(1,)))
    diff = model["diff"]
    changed = [item for item in (diff or {}).get("changed") or [] if isinstance(item, dict)]
    if changed:
        out.append("<h3>What the evidence shows changed (before to %s)</h3>" % esc(diff.get("to") or "after"))
        rows = []
        for item in changed[:100]:
            fields = item.get("changed_fields") or []
            shown = ", ".join(str(f) for f in fields[:8]) + (" ... (%d more)" % (len(fields) - 8) if len(fields) > 8
                                                             else "")
            rows.append((item.get("status") or "changed", item.get("path") or "", shown))
        out.append(_table(["Change", "File", "Fields changed"], rows, mono_columns=(1, 2)))
        if len(changed) > 100:
            out.append('<p class="muted">... and %d more changed files, in diff/summary.json.</p>'
                       % (len(changed) - 100))
    out.append("</section>")
    return "".join(out)


def _actions_section(model):
    actions = model["actions"]
    out = ['<section id="actions"><h2>Post-rollback actions</h2>',
           "<h3>Incident update (policy-safe)</h3><pre>%s</pre>" % esc(actions["incident_update"]),
           '<h3>Follow-up checklist</h3><ul class="checklist">']
    for item in actions["follow_ups"]:
        due = item.get("due")
        when = (' <span class="muted">due <span class="mono">%s</span></span>' % esc(due)) if due else ""
        out.append("<li>%s%s</li>" % (esc(item["text"]), when))
    out.append("</ul>")
    if actions.get("postmortem_due"):
        out.append('<p><b>Postmortem due:</b> <span class="mono">%s</span> (%s)</p>' % (
            esc(actions["postmortem_due"]), esc(local_time(parse_stamp(actions["postmortem_due"]), model["zone"])
                                                or "")))
    out.append("</section>")
    return "".join(out)


def _evidence_section(model):
    receipt = model["receipt"]
    evidence = receipt.get("evidence") or {}
    pack = model["pack"]
    out = ['<section id="evidence"><h2>Evidence</h2><div class="facts">',
           _fact("Archive", evidence.get("archive")),
           _fact("Archive sha256", evidence.get("archive_sha256"), True),
           _fact("Pack manifest", evidence.get("manifest")),
           _fact("Pack manifest sha256", evidence.get("manifest_sha256"), True),
           _fact("Phases captured", pack.get("phases") or "none"),
           _fact("Redaction scan", pack.get("redaction") or (receipt.get("redaction") or {}).get("status")),
           _fact("Pack complete", None if pack.get("incomplete") is None else not pack.get("incomplete")),
           "</div>"]
    files = model["files"]
    if files:
        rows = [(f["phase"], f["path"], f["sha256"], f.get("size")) for f in files[:MAX_FILE_ROWS]]
        out.append(_table(["Phase", "File", "sha256", "Bytes"], rows, mono_columns=(1, 2)))
        if len(files) > MAX_FILE_ROWS:
            out.append('<p class="muted">... and %d more files, listed in the phase manifests.</p>'
                       % (len(files) - MAX_FILE_ROWS))
    else:
        out.append("<p>No evidence files were captured for this rollback.</p>")
    out.append("</section>")
    return "".join(out)


def _receipt_section(model):
    entry, receipt = model["entry"], model["receipt"]
    signing = receipt.get("signing") or {}
    ledger = model.get("ledger") or "<ledger.jsonl>"
    out = ['<section id="receipt"><h2>Receipt</h2><div class="facts">',
           _fact("Rollback id", receipt.get("rollback_id"), True),
           _fact("Ledger seq", entry.get("seq")),
           _fact("Receipt sha256 (RFC 8785)", entry.get("receipt_sha256"), True),
           _fact("Ledger entry sha256", entry.get("entry_sha256"), True),
           _fact("Recorded at (UTC)", entry.get("recorded_at"), True),
           _fact("Signed", "yes (DSSE ed25519, key id %s)" % signing.get("keyid") if signing.get("signed")
                 else "no (signing was optional)"),
           "</div>",
           "<h3>How to verify</h3><pre>%s</pre>" % esc(
               "# the whole ledger: chain, digests, schema, signatures, signed head\n"
               "ansible-playbook playbooks/verify-receipts.yml -e receipt_ledger=%s \\\n"
               "  -e receipt_public_key_path=<receipt signing public key>\n"
               "# the evidence archive against the receipt\n"
               "sha256sum %s    # must print %s\n"
               "# this report: regenerated from the pack and the ledger, it must be byte-identical\n"
               "ansible-playbook playbooks/report.yml -e rollback_id=%s"
               % (ledger, (receipt.get("evidence") or {}).get("archive") or "<archive>",
                  (receipt.get("evidence") or {}).get("archive_sha256") or "<archive_sha256>",
                  receipt.get("rollback_id") or "<rollback_id>")),
           "</section>"]
    return "".join(out)


def render_report(model):
    """The report page (str). Deterministic for a given model."""
    receipt = model["receipt"]
    zone = model["zone"]
    outcome = receipt.get("outcome") or "not recorded"
    title = "Rollback %s: %s" % (model.get("rollback_id") or "unknown", outcome.upper())
    failure = receipt.get("failure") or {}
    out = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
           '<meta http-equiv="Content-Security-Policy" content="%s">' % esc(_CSP),
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           '<meta name="generator" content="governed.rollback %s">' % esc(REPORT_SCHEMA),
           "<title>%s</title><style>%s</style></head><body><main>" % (esc(title), CSS),
           '<header><h1>Rollback <span class="mono">%s</span></h1>' % esc(model.get("rollback_id") or "unknown"),
           '<p>%s <span class="muted">%s rollback in %s</span></p>' % (
               _badge(outcome.upper(), " outcome"), esc(_label(receipt.get("rollback_type"))),
               esc(receipt.get("environment") or "an unrecorded environment"))]
    if outcome in ("failed", "denied"):
        stopped = failure.get("task") or ("approval" if outcome == "denied" else "not recorded")
        out.append('<div class="stop"><b>Stopped at:</b> %s<br>%s</div>' % (
            esc(stopped), esc(failure.get("message") or (receipt.get("approval") or {}).get("message") or "")))
    out.append('<div class="facts">')
    out.append(_fact("Incident", receipt.get("incident_id")))
    out.append(_fact("Priority", (receipt.get("details") or {}).get("priority")))
    out.append(_fact("Component", receipt.get("component")))
    out.append(_fact("Reason", receipt.get("reason")))
    out.append(_fact("Requested by", receipt.get("requested_by")))
    out.append(_fact("Approver", receipt.get("approver")))
    out.append(_fact("Started (UTC)", receipt.get("started_at"), True))
    out.append(_fact("Completed (UTC)", receipt.get("completed_at"), True))
    out.append("</div></header>")
    out.append('<section id="timeline"><h2>Timeline</h2>')
    if model["timeline"]:
        out.append('<div class="scroll"><table><thead><tr><th>UTC</th><th>%s</th><th>Event</th></tr></thead><tbody>'
                   % esc(zone))
        for item in model["timeline"]:
            out.append("<tr>%s<td>%s</td></tr>" % (_time_cells(item["at"], zone), esc(item["event"])))
        out.append("</tbody></table></div>")
    else:
        out.append("<p>No times were recorded.</p>")
    out.append("</section>")
    out.append(_approval_section(model))
    out.append(_changes_section(model))
    out.append(_verification_section(model))
    out.append(_actions_section(model))
    out.append(_evidence_section(model))
    out.append(_receipt_section(model))
    out.append('<footer>Rendered by governed.rollback (%s) from the receipt at ledger seq %s and the evidence pack '
               'manifests; self-contained, no network resources.</footer>' % (
                   esc(REPORT_SCHEMA), esc(model["entry"].get("seq") if model["entry"].get("seq") is not None
                                           else "(not recorded)")))
    out.append("</main></body></html>\n")
    return "".join(out)


# --------------------------------------------------------------------------- the ledger overview

def overview_rows(entries, now=None):
    """One row per ledger entry (newest first) and the emergency overrides whose retroactive approval is open."""
    rows, emergencies, counts = [], [], {}
    for entry in entries:
        receipt = entry.get("receipt") or {}
        outcome = receipt.get("outcome") or "unknown"
        counts[outcome] = counts.get(outcome, 0) + 1
        rows.append({"seq": entry.get("seq"), "rollback_id": receipt.get("rollback_id"),
                     "rollback_type": receipt.get("rollback_type"), "outcome": outcome,
                     "environment": receipt.get("environment"), "incident_id": receipt.get("incident_id"),
                     "completed_at": receipt.get("completed_at"), "emergency": bool(receipt.get("emergency")),
                     "receipt_sha256": entry.get("receipt_sha256")})
        if receipt.get("emergency"):
            due = parse_stamp(receipt.get("retroactive_approval_due"))
            emergencies.append({"rollback_id": receipt.get("rollback_id"), "seq": entry.get("seq"),
                                "incident_id": receipt.get("incident_id"),
                                "retroactive_approval_due": receipt.get("retroactive_approval_due"),
                                "overdue": bool(due and now and now > due)})
    rows.sort(key=lambda r: -(r["seq"] or 0))
    return rows, emergencies, counts


def render_overview(entries, now=None, zone=DEFAULT_ZONE, ledger=None, reports=()):
    """The ledger overview page: every rollback with its outcome, and the emergency overrides still owing a
    retroactive approval. ``reports`` names the rollback ids that have a report.html beside the overview."""
    rows, emergencies, counts = overview_rows(entries, now)
    reports = set(reports or ())
    out = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
           '<meta http-equiv="Content-Security-Policy" content="%s">' % esc(_CSP),
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           "<title>Rollback ledger overview</title><style>%s</style></head><body><main>" % CSS,
           "<header><h1>Rollback ledger overview</h1>",
           '<p class="muted">Ledger <span class="mono">%s</span>; %d entries.</p>' % (
               esc(ledger or "not named"), len(rows)),
           '<div class="facts">%s</div></header>' % "".join(_fact(k, v) for k, v in sorted(counts.items()))]
    out.append('<section id="emergencies"><h2>Emergency overrides: retroactive approvals due</h2>')
    if emergencies:
        out.append('<p class="muted">The ledger records the emergency decision and its deadline; obtain each '
                   'retroactive approval and close it in the incident ticket.</p>')
        out.append(_table(["Rollback", "Seq", "Incident", "Due (UTC)", zone, "State"], [
            (e["rollback_id"], e["seq"], e["incident_id"], e["retroactive_approval_due"],
             local_time(parse_stamp(e["retroactive_approval_due"]), zone) or "",
             ("html", '<span class="badge %s">%s</span>' % (("fail", "OVERDUE") if e["overdue"] else ("inconclusive", "DUE"))))
            for e in emergencies], mono_columns=(0, 3, 4)))
    else:
        out.append("<p>No emergency overrides in this ledger.</p>")
    out.append('</section><section id="rollbacks"><h2>All rollbacks</h2>')
    table_rows = []
    for row in rows:
        rid = row["rollback_id"] or ""
        cell = ('<a href="%s/%s" class="mono">%s</a>' % (esc(rid), REPORT_NAME, esc(rid)) if rid in reports
                else '<span class="mono">%s</span>' % esc(rid))
        table_rows.append((row["seq"], ("html", cell), _label(row["rollback_type"]), ("html", _badge(row["outcome"])),
                           row["environment"], row["incident_id"], row["completed_at"],
                           "EMERGENCY" if row["emergency"] else ""))
    out.append(_table(["Seq", "Rollback", "Type", "Outcome", "Environment", "Incident", "Completed (UTC)", ""],
                      table_rows, mono_columns=(6,)))
    out.append('</section><footer>Rendered by governed.rollback (%s) from the ledger. Verify the ledger itself with '
               'playbooks/verify-receipts.yml.</footer></main></body></html>\n' % esc(REPORT_SCHEMA))
    return "".join(out)
