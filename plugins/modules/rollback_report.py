#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: rollback_report
short_description: Write the one-page rollback report and the post-rollback actions, or the ledger overview
version_added: 0.2.0
author: governed.rollback maintainers (@governed)
description:
  - With O(state=present), renders C(report.html) into the rollback's evidence pack (C(<evidence_dir>/<rollback_id>/))
    from its ledger entry and the pack's manifests - the timeline in UTC and O(zone), the approval decision (who,
    which rule, signed statements verified, emergency and the retroactive approval due), before and after (versions,
    references, images, configuration keys, migration, policy, snapshot), the verification checklist (with metric
    values and a small chart per metric when the receipt has C(verification_details)), the post-rollback actions,
    the evidence files with their sha256, and the receipt's id, seq and digests with how to verify them.
  - The page is self-contained (inline CSS and SVG, no script; its Content-Security-Policy forbids every network
    fetch), readable on a phone and printable. Every value is HTML-escaped, and the page passes the collection's
    secret scan (the evidence pack's) or is not written.
  - The report is written after the receipt, because it shows the receipt's ledger seq and digests, so the receipt
    cannot hold the report's digest. Instead the sidecar C(report.json) beside it records the report's sha256 with
    the seq and digests it was rendered from, and rendering is deterministic, so O(state=verify) (or
    C(playbooks/report.yml -e report_verify=true)) re-renders it from the ledger and the pack and fails on any
    difference.
  - Also returns RV(actions), the post-rollback actions as data (the policy-safe incident update in the KFM
    template, the timeline entries and the follow-up checklist with the 48-hour postmortem due date) for
    C(ansible.builtin.set_stats), and optionally POSTs them to a webhook (O(webhook_url)) with retries and
    exponential backoff. A notification failure never fails the task; it is reported in RV(notification).
  - With O(state=overview), writes the ledger overview page (every rollback and its outcome, and the emergency
    overrides whose retroactive approval is due or overdue), linking the reports found under O(evidence_dir).
extends_documentation_fragment:
  - governed.rollback.attributes
  - governed.rollback.attributes.ACTIONGROUP_ROLLBACK
attributes:
  check_mode:
    support: full
    details: Renders and scans the page and returns what would be written; writes and sends nothing.
  diff_mode:
    support: full
    details: The diff shows the sidecar (the report's digest and what it was rendered from) before and after.
  idempotent:
    support: full
    details:
      - The report is deterministic, so a second run changes nothing and sends no notification (O(notify=auto)).
      - The overview marks overdue retroactive approvals against the current time, so it changes when one falls due.
options:
  state:
    description:
      - V(present) writes the report (and notifies); V(verify) re-renders it and fails when the report or its sidecar on
        disk differ; V(overview) writes the ledger overview.
    type: str
    choices: [present, verify, overview]
    default: present
  rollback_id:
    description: The rollback whose report is written. Required unless O(state=overview).
    type: str
  evidence_dir:
    description:
      - The evidence directory the rollback's pack is in (C(<evidence_dir>/<rollback_id>/)). Required unless
        O(state=overview); with it, the overview links each rollback's report.
    type: path
  ledger:
    description: The receipt ledger (JSONL) the rollback's receipt is recorded in.
    type: path
    required: true
  zone:
    description:
      - The second time zone of the timeline (an IANA name). The KFM runbook records incident times in UTC and
        America/Chicago.
    type: str
    default: America/Chicago
  next_update_minutes:
    description: The incident update's "next update in" timebox.
    type: int
    default: 30
  restricted_names:
    description:
      - Names that must never appear in the policy-safe incident update (restricted datasets, systems, people). The
        update is built from fixed sentences and the incident reference only; a reference naming one is withheld.
    type: list
    elements: str
    default: []
  report_dir:
    description:
      - Where C(report.html) and C(report.json) go instead of the evidence pack.
      - Without it, a rollback that has no evidence pack (a denial stops before any capture, and a denied run writes
        nothing but its receipt) gets no page written; its actions are still returned (and notified).
    type: path
  overview_path:
    description: Where O(state=overview) writes the page. Defaults to C(ledger-report.html) beside the ledger.
    type: path
  notify:
    description:
      - When to POST the actions to O(webhook_url). V(auto) when the report was written or changed (so a rerun does
        not notify twice), V(always) on every run with O(state=present), V(never) not at all.
    type: str
    choices: [auto, always, never]
    default: auto
  webhook_url:
    description:
      - A generic webhook receiving the post-rollback actions as one JSON POST. Read from
        E(GOVERNED_ROLLBACK_WEBHOOK_URL) when not given (an AWX custom credential injects it). Never printed, because webhook
        paths often hold a token; results name only its scheme and host.
    type: str
  webhook_token:
    description: Sent as C(Authorization Bearer) when set. Read from E(GOVERNED_ROLLBACK_WEBHOOK_TOKEN) when not given.
    type: str
  webhook_retries:
    description: Retries after a transport error, HTTP 429 or 5xx (a 4xx is not retried).
    type: int
    default: 3
  webhook_backoff:
    description: Seconds before the first retry; each further retry waits twice as long (plus up to 10% jitter).
    type: float
    default: 1.0
  webhook_timeout:
    description: Seconds each POST may take.
    type: int
    default: 10
  validate_certs:
    description: Verify the webhook's TLS certificate.
    type: bool
    default: true
notes:
  - Rendering takes milliseconds (C(bench/report_render.py)); the module reads the ledger entry by a byte search, so
    its cost does not grow with the ledger.
seealso:
  - module: governed.rollback.rollback_receipt
  - module: governed.rollback.evidence_capture
"""

EXAMPLES = r"""
- name: Write the report of a rollback whose receipt is recorded, and publish its actions
  governed.rollback.rollback_report:
    rollback_id: "{{ rollback_id }}"
    evidence_dir: /var/lib/governed-rollback/evidence
    ledger: /var/lib/governed-rollback/ledger.jsonl
  register: report

- name: Hand the post-rollback actions to the AWX workflow
  ansible.builtin.set_stats:
    data:
      governed_rollback_actions: "{{ report.actions }}"

- name: Check a report against the ledger and the pack (fails on any difference)
  governed.rollback.rollback_report:
    state: verify
    rollback_id: rollback-20240115-103045-1a2b3c
    evidence_dir: /var/lib/governed-rollback/evidence
    ledger: /var/lib/governed-rollback/ledger.jsonl

- name: The ledger overview, with the emergency overrides still owing a retroactive approval
  governed.rollback.rollback_report:
    state: overview
    ledger: /var/lib/governed-rollback/ledger.jsonl
    evidence_dir: /var/lib/governed-rollback/evidence
"""

RETURN = r"""
report_path:
  description:
    - Path of C(report.html) (or of the overview page with O(state=overview)); null when no page was written because
      the rollback has no evidence pack and O(report_dir) was not given.
  returned: always
  type: str
  sample: /var/lib/governed-rollback/evidence/rollback-20240115-103045-1a2b3c/report.html
report_sha256:
  description: sha256 of the page's bytes.
  returned: always
  type: str
sidecar_path:
  description: Path of C(report.json), the report's digest and the ledger seq and digests it was rendered from.
  returned: state=present or state=verify
  type: str
sidecar:
  description: The sidecar's content.
  returned: state=present or state=verify
  type: dict
ledger_seq:
  description: The receipt's ledger seq shown in the report.
  returned: state=present or state=verify
  type: int
receipt_sha256:
  description: The receipt's sha256 shown in the report.
  returned: state=present or state=verify
  type: str
verified:
  description: Whether the report and sidecar on disk equal their regeneration (O(state=verify)).
  returned: state=verify
  type: bool
problems:
  description: What differs, when RV(verified) is false.
  returned: state=verify
  type: list
  elements: str
actions:
  description:
    - The post-rollback actions (rollback_id, outcome, rollback_type, incident_id, zone, incident_update, timeline
      [{at, at_local, event}], follow_ups [{id, text, due, required}], postmortem_due, retroactive_approval_due,
      receipt_sha256, ledger_seq), policy-safe, for C(set_stats) and the webhook.
  returned: state=present or state=verify
  type: dict
skipped_reason:
  description: Why no page was written (the rollback has no evidence pack and O(report_dir) was not given).
  returned: when no page was written
  type: str
notification:
  description:
    - The webhook delivery (sent, status, attempts, errors, endpoint as scheme and host only), or C(sent=false) with
      C(skipped) saying why. A failed delivery does not fail the task.
  returned: state=present
  type: dict
overview:
  description: With O(state=overview), entries, outcomes (counts) and retroactive_approvals_due.
  returned: state=overview
  type: dict
"""

import datetime
import os

from ansible.module_utils.basic import AnsibleModule, env_fallback
from ansible.module_utils.urls import open_url

from ansible_collections.governed.rollback.plugins.module_utils import _report
from ansible_collections.governed.rollback.plugins.module_utils import _report_files as files
from ansible_collections.governed.rollback.plugins.module_utils._common import (
    fail_from_exception, pretty_json, sha256_hex,
)


def argument_spec():
    return dict(
        state=dict(type="str", choices=["present", "verify", "overview"], default="present"),
        rollback_id=dict(type="str"),
        evidence_dir=dict(type="path"),
        ledger=dict(type="path", required=True),
        zone=dict(type="str", default=_report.DEFAULT_ZONE),
        next_update_minutes=dict(type="int", default=30),
        restricted_names=dict(type="list", elements="str", default=[], no_log=False),
        report_dir=dict(type="path"),
        overview_path=dict(type="path"),
        notify=dict(type="str", choices=["auto", "always", "never"], default="auto"),
        webhook_url=dict(type="str", no_log=True, fallback=(env_fallback, ["GOVERNED_ROLLBACK_WEBHOOK_URL"])),
        webhook_token=dict(type="str", no_log=True, fallback=(env_fallback, ["GOVERNED_ROLLBACK_WEBHOOK_TOKEN"])),
        webhook_retries=dict(type="int", default=3),
        webhook_backoff=dict(type="float", default=1.0),
        webhook_timeout=dict(type="int", default=10),
        validate_certs=dict(type="bool", default=True),
    )


def notify(module, actions, report):
    params = module.params
    url = params["webhook_url"]
    if not url:
        return {"sent": False, "skipped": "no webhook configured (webhook_url / GOVERNED_ROLLBACK_WEBHOOK_URL)"}
    headers = {"Content-Type": "application/json", "User-Agent": "governed.rollback"}
    if params["webhook_token"]:
        headers["Authorization"] = "Bearer %s" % params["webhook_token"]

    def post(body):
        response = None
        try:
            response = open_url(url, data=body, headers=headers, method="POST", timeout=params["webhook_timeout"],
                                validate_certs=params["validate_certs"], follow_redirects="none")
            return response.getcode()
        except Exception as exc:  # pylint: disable=broad-except
            code = getattr(exc, "code", None)
            if isinstance(code, int):
                return code
            raise
        finally:
            if response is not None:
                response.close()

    payload = {"event": "governed.rollback.post_rollback", "actions": actions, "report": report}
    result = files.deliver(post, payload, params["webhook_retries"], params["webhook_backoff"])
    result["endpoint"] = files.endpoint_label(url)
    return result


def run_overview(module):
    params = module.params
    path = params["overview_path"] or os.path.join(os.path.dirname(params["ledger"]), _report.OVERVIEW_NAME)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    page, summary = files.overview(params["ledger"], params["evidence_dir"], now, params["zone"])
    data = page.encode("utf-8")
    old = files.read_bytes(path)
    changed = old != data
    if changed and not module.check_mode:
        files.atomic_write_bytes(path, data)
    module.exit_json(changed=changed, report_path=path, report_sha256=sha256_hex(data), overview=summary)


def run(module):
    params = module.params
    state = params["state"]
    if not _report.zone_known(params["zone"]):
        module.fail_json(msg="zone %r is not a time zone this host knows; use an IANA name such as America/Chicago "
                             "(and install tzdata)" % params["zone"])
    if state == "overview":
        run_overview(module)
    for name in ("rollback_id", "evidence_dir"):
        if not params[name]:
            module.fail_json(msg="%s is required with state=%s" % (name, state))
    model, page, side = files.render_for(params["evidence_dir"], params["ledger"], params["rollback_id"],
                                         params["zone"], params["next_update_minutes"], params["restricted_names"])
    directory = params["report_dir"] or files.pack_dir(params["evidence_dir"], params["rollback_id"])
    if not params["report_dir"] and not os.path.isdir(directory):
        directory = None  # no evidence pack: a denied run leaves nothing but its receipt
    result = {"report_path": os.path.join(directory, _report.REPORT_NAME) if directory else None,
              "sidecar_path": os.path.join(directory, _report.SIDECAR_NAME) if directory else None,
              "report_sha256": side["report_sha256"], "sidecar": side, "ledger_seq": side["ledger_seq"],
              "receipt_sha256": side["receipt_sha256"], "actions": model["actions"], "changed": False}
    if state == "verify":
        problems = files.verify_report(params["evidence_dir"], params["rollback_id"], page, side, directory) \
            if directory else ["%s has no evidence pack; give report_dir where its report was written"
                               % params["rollback_id"]]
        result.update(verified=not problems, problems=problems)
        if problems:
            module.fail_json(msg="the report of %s does not verify: %s" % (params["rollback_id"], "; ".join(problems)),
                             **result)
        module.exit_json(**result)
    changed = False
    if directory:
        old_page, old_side = files.existing(params["evidence_dir"], params["rollback_id"], directory)
        changed = old_page != page.encode("utf-8") or old_side != pretty_json(side).encode("utf-8")
        if changed and not module.check_mode:
            files.write_report(params["evidence_dir"], params["rollback_id"], page, side, directory)
        if module._diff and changed:
            result["diff"] = {"before": old_side.decode("utf-8", "replace") if old_side else "",
                              "after": pretty_json(side), "before_header": result["sidecar_path"] + " (before)",
                              "after_header": result["sidecar_path"]}
    else:
        result["skipped_reason"] = ("%s has no evidence pack (nothing was captured), so no page was written; give "
                                    "report_dir to write one elsewhere" % params["rollback_id"])
    result["changed"] = changed
    # Without a page there is no earlier state to compare, so auto notifies.
    wanted = params["notify"] == "always" or (params["notify"] == "auto" and (changed or not directory))
    if module.check_mode or not wanted:
        reason = "check mode" if module.check_mode else "notify=%s and the report was %s" % (
            params["notify"], "changed" if changed else "unchanged")
        result["notification"] = {"sent": False, "skipped": reason}
    else:
        result["notification"] = notify(module, model["actions"], {
            "path": result["report_path"], "sha256": side["report_sha256"]})
    module.exit_json(**result)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        run(module)
    except Exception as exc:  # pylint: disable=broad-except
        fail_from_exception(module, exc)


if __name__ == "__main__":
    main()
