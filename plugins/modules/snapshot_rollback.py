#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: snapshot_rollback
short_description: Restore an application's state from a platform snapshot (AUREUS Guard), reviewed and verified
version_added: 0.1.0
author: governed.rollback maintainers (@governed)
description:
  - The AUREUS runbook's application-state rollback (section 5) through the platform's snapshot API - list the
    snapshots, review one, C(POST /api/rollback), verify the restored object. The contract it expects is
    C(docs/aureus-guard-api.openapi.yaml); O(api_paths) adapts it to a platform's own routes.
  - Selects the snapshot by O(snapshot_id), or as the newest of O(state_type) (optionally matching O(description)
    and O(target)) taken before O(before). Refuses, restoring nothing, when none matches, listing the nearest
    candidates.
  - Reviews the snapshot before acting - every item of its content must have the sha256 its manifest recorded, and
    the whole content the recorded C(content_sha256); a snapshot that does not match is refused.
  - Restores with an C(Idempotency-Key) derived from O(rollback_id) and the snapshot, so a retried task (or a
    re-run with the same rollback id) replays the same operation and never restores twice. A lost answer to the
    restore request (a 5xx, a timeout, malformed JSON) is retried with the same key.
  - Restores are asynchronous - the operation is polled until O(wait_timeout). Only phase C(Completed) with
    items restored equal to items total and no error is a success; C(PartiallyFailed), C(Failed), or a
    C(Completed) with missing items or errors fail the task. Transient poll errors (5xx, timeouts, malformed
    answers) are retried until the deadline.
  - Verifies that the restored object now has the snapshot's content digest.
options:
  url:
    description:
      - Base URL of the platform's API, for example C(https://aureus.example.com).
      - Read from E(AUREUS_GUARD_URL) when not given.
    type: str
    required: true
  token:
    description:
      - Bearer token for the API. Read from E(AUREUS_GUARD_TOKEN) when not given, which is how an AWX custom
        credential injects it. Never logged, returned or recorded.
    type: str
  validate_certs:
    description:
      - Verify the API's TLS certificate. Read from E(AUREUS_GUARD_VALIDATE_CERTS) when not given.
    type: bool
    default: true
  ca_path:
    description:
      - PEM file of the CA that signed the API's certificate (instead of the system trust store).
      - Read from E(AUREUS_GUARD_CA_PATH) when not given.
    type: path
  request_timeout:
    description: Seconds before one HTTP request gives up.
    type: int
    default: 10
  api_paths:
    description:
      - The API's routes, relative to O(url). C({id}), C({operation_id}), C({kind}) and C({name}) are replaced
        (URL-quoted).
    type: dict
    default: {}
    suboptions:
      snapshots:
        description: List of snapshots (C(GET)); answers C({"snapshots" [...]}).
        type: str
        default: /api/snapshots
      snapshot:
        description: One snapshot with its C(content), C(manifest) and C(content_sha256) (C(GET)).
        type: str
        default: /api/snapshots/{id}
      restore:
        description: Start a restore (C(POST)); answers an operation.
        type: str
        default: /api/rollback
      operation:
        description: One restore operation (C(GET)).
        type: str
        default: /api/rollback/{operation_id}
      object:
        description: The object a snapshot is of (C(GET)), from the snapshot's C(target.kind) and C(target.name).
        type: str
        default: /api/{kind}s/{name}
  snapshot_id:
    description: The snapshot to restore. Without it, the newest snapshot of O(state_type) before O(before).
    type: str
  state_type:
    description: The kind of snapshot to select, for example C(pipeline_deployment).
    type: str
  description:
    description: Select only snapshots whose description contains this text (case-insensitive).
    type: str
  target:
    description: Select only snapshots of the object of this name (for example C(credit_risk_pipeline_v2)).
    type: str
  before:
    description:
      - Select only snapshots taken strictly before this RFC 3339 time - the incident's start, so the snapshot
        holds the state before the bad change. Defaults to now.
    type: str
  rollback_id:
    description:
      - The rollback's identifier; the restore's idempotency key is derived from it and the snapshot id. A re-run
        with the same id never starts a second restore.
      - Without it, the key is derived from the plan's binding.
    type: str
  approver:
    description: Who approved the restore, sent with the request (the runbook's C(approver)).
    type: str
    default: governed.rollback
  expected_binding:
    description:
      - The RV(binding) of an earlier check-mode plan, i.e. what was approved. The restore is refused, changing
        nothing, when the snapshot, its digest or the current object's digest no longer match it.
    type: dict
  poll_interval:
    description:
      - Seconds between two polls of the restore operation.
      - Unset, the polls start every 50 ms and back off (0.2 s after a second, 0.5 s after five, 2 s after thirty),
        so a restore done within a second is seen within 50 ms and a long one costs few requests.
    type: float
extends_documentation_fragment:
  - governed.rollback.runbook_context
  - governed.rollback.wait
  - governed.rollback.attributes
  - governed.rollback.attributes.ACTIONGROUP_ROLLBACK
attributes:
  check_mode:
    support: full
    details: Selects and reviews the snapshot, reads the current object and returns the plan and the diff; nothing
      is restored.
  diff_mode:
    support: full
    details: The current object's content and the snapshot's (secret-looking values masked).
  idempotent:
    support: full
    details: When the object already has the snapshot's content the task reports no change.
notes:
  - The token needs read access to snapshots and the object, and the right to start restores; a read-only token
    gets C(403) and the task refuses, restoring nothing.
  - Digests are computed on the unmasked content (they must equal the platform's); only the output is masked.
seealso:
  - name: Velero restore
    description: The model for asynchronous restores and for judging their outcome.
    link: https://velero.io/docs/main/restore-reference/
"""

EXAMPLES = r"""
- name: Restore credit_risk_pipeline_v2 from the newest deployment snapshot taken before the incident
  governed.rollback.snapshot_rollback:
    url: https://aureus.example.com
    state_type: pipeline_deployment
    description: credit_risk_pipeline_v2
    before: "2024-01-15T11:00:00Z"
    rollback_id: rollback-20240115-110500
    approver: data-owner
    actor: oncall
    incident_id: INC-12345
    reason: Corrupted pipeline configuration
  environment:
    AUREUS_GUARD_TOKEN: "{{ aureus_token }}"

- name: Plan a restore of one snapshot without changing anything
  governed.rollback.snapshot_rollback:
    url: https://aureus.example.com
    snapshot_id: snap-20240115-103045
  check_mode: true
  register: plan
"""

RETURN = r"""
from_ref:
  description: The plan contract's from reference - C(sha256:) of the current object's content.
  returned: when a snapshot was selected and reviewed
  type: str
to_ref:
  description: The plan contract's to reference - C(sha256:) of the snapshot's content.
  returned: when a snapshot was selected and reviewed
  type: str
approval_facts:
  description: What M(governed.rollback.rollback_approval) needs - nothing for a state rollback (one matrix row).
  returned: when a snapshot was selected and reviewed
  type: dict
  sample: {}
binding:
  description:
    - What an approval of this plan is for - C(snapshot_id), C(snapshot_sha256), C(current_sha256). Pass it back
      as O(expected_binding) on the real run.
  returned: when a snapshot was selected and reviewed
  type: dict
receipt_fields:
  description:
    - The receipt fields (C(component), C(changed_surfaces), C(current_ref), C(rollback_target_ref),
      C(from_version), C(to_version), C(snapshot_id), C(data_loss), C(details) with C(state_type) and the
      C(data_window) lost), for M(governed.rollback.rollback_receipt).
  returned: when a snapshot was selected and reviewed
  type: dict
skipped_reason:
  description: Why nothing was restored (the object already has the snapshot's content).
  returned: always
  type: str
snapshot_id:
  description: The snapshot selected.
  returned: when a snapshot was selected
  type: str
  sample: snap-20240115-103045
state_type:
  description: Its state type.
  returned: when a snapshot was selected
  type: str
  sample: pipeline_deployment
snapshot_timestamp:
  description: When it was taken.
  returned: when a snapshot was selected
  type: str
  sample: "2024-01-15T10:30:45Z"
snapshot_description:
  description: Its description.
  returned: when a snapshot was selected
  type: str
  sample: Before deploying credit_risk_pipeline_v2
selected_by:
  description: How the snapshot was chosen.
  returned: when a snapshot was selected
  type: str
target:
  description: The object the snapshot is of (C(kind), C(name)).
  returned: when a snapshot was selected
  type: dict
review:
  description:
    - The review of the snapshot - its C(manifest) (item key and sha256), C(recorded_sha256), C(computed_sha256),
      C(items), C(matches) and C(problems).
  returned: when a snapshot was fetched
  type: dict
candidates:
  description: The nearest snapshots (id, timestamp, state_type, description, target) when none matched.
  returned: on refusal about the selection
  type: list
  elements: dict
snapshot_sha256:
  description: The snapshot's content digest.
  returned: when a snapshot was reviewed
  type: str
digest_before:
  description: The current object's content digest before the restore (null when the object does not exist).
  returned: when a snapshot was reviewed
  type: str
digest_after:
  description: The object's content digest read after the restore (in check mode, and when nothing was restored, the
    same as RV(digest_before)).
  returned: when a snapshot was reviewed
  type: str
items:
  description: Item keys the restore adds, removes and changes.
  returned: when a snapshot was reviewed
  type: dict
data_window:
  description: The changes a restore loses - C(from) the snapshot's time C(to) now, in C(seconds).
  returned: when a snapshot was selected
  type: dict
idempotency_key:
  description: The C(Idempotency-Key) the restore was requested with.
  returned: when a restore was requested
  type: str
operation_id:
  description: The restore operation's id.
  returned: when a restore was requested
  type: str
replayed:
  description: Whether the platform answered an operation already started with the same key (a retry).
  returned: when a restore was requested
  type: bool
phase:
  description: The operation's last phase seen (C(InProgress), C(Completed), C(PartiallyFailed), C(Failed)).
  returned: when a restore was requested
  type: str
items_restored:
  description: Items the operation restored.
  returned: when a restore was requested
  type: int
items_total:
  description: Items the operation had to restore.
  returned: when a restore was requested
  type: int
errors:
  description: The operation's errors (C(item), C(message)).
  returned: when a restore was requested
  type: list
  elements: dict
transient_errors:
  description: Poll and request errors retried (5xx, timeouts, malformed answers), as messages.
  returned: always
  type: list
  elements: str
verified:
  description: Whether the object read after the restore has the snapshot's content digest.
  returned: always
  type: bool
refused:
  description: The rule that refused (nothing restored) - C(no_snapshot), C(snapshot_not_found), C(digest_mismatch),
    C(unauthorized), C(forbidden), C(conflict), C(changed_since_approved).
  returned: on refusal
  type: str
plan:
  description: What the restore does (check mode) - snapshot, target, digests, items.
  returned: in check mode
  type: dict
timings:
  description: Seconds spent reading, restoring (request and polls), verifying, and in total.
  returned: always
  type: dict
"""

import json
import time

from ansible.module_utils.basic import AnsibleModule, env_fallback
from urllib.parse import quote, urlencode
from ansible.module_utils.urls import open_url
from ansible_collections.governed.rollback.plugins.module_utils import _argspec, _redact
from ansible_collections.governed.rollback.plugins.module_utils._common import (
    Refused, RollbackError, backoff_interval, check_binding, fail_from_exception, utc_now,
)
from ansible_collections.governed.rollback.plugins.module_utils._snapshot import (
    content_sha256, contract, data_window, diff_items, idempotency_key, judge_operation, parse_time,
    review_snapshot, select_snapshot,
)

DEFAULT_PATHS = {
    "snapshots": "/api/snapshots",
    "snapshot": "/api/snapshots/{id}",
    "restore": "/api/rollback",
    "operation": "/api/rollback/{operation_id}",
    "object": "/api/{kind}s/{name}",
}
POST_ATTEMPTS = 4


class ApiError(RollbackError):
    """An answer the module cannot use; ``transient`` when retrying may help (5xx, timeout, malformed)."""

    def __init__(self, msg, status=None, transient=False):
        super(ApiError, self).__init__(msg)
        self.status = status
        self.transient = transient


class Guard(object):
    """The platform's snapshot API over HTTPS (open_url): JSON in and out, bearer token, never in a message."""

    def __init__(self, params):
        self.base = params["url"].rstrip("/")
        self.token = params.get("token")
        self.validate_certs = params["validate_certs"]
        self.ca_path = params.get("ca_path")
        self.timeout = params["request_timeout"]
        self.paths = dict(DEFAULT_PATHS)
        self.paths.update(dict((k, v) for k, v in (params.get("api_paths") or {}).items() if v))

    def path(self, route, **values):
        return self.paths[route].format(**dict((k, quote(str(v), safe="")) for k, v in values.items()))

    def call(self, method, path, body=None, headers=None, query=None):
        """(status, JSON body, headers) of a 2xx answer; anything else raises ApiError or Refused."""
        if not self.token:
            raise RollbackError("no API token: set the token option or AUREUS_GUARD_TOKEN (an AWX custom credential)")
        url = self.base + path + ("?" + urlencode(query) if query else "")
        all_headers = {"Accept": "application/json", "Authorization": "Bearer " + self.token}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        what = "%s %s" % (method, path)
        try:
            response = open_url(url, data=data, method=method, headers=all_headers, timeout=self.timeout,
                                validate_certs=self.validate_certs, ca_path=self.ca_path, follow_redirects="none",
                                use_proxy=True)
            status, raw, answer_headers = response.getcode(), response.read(), dict(response.headers.items())
        except Exception as exc:  # pylint: disable=broad-except  # urllib raises many unrelated types
            if hasattr(exc, "code") and hasattr(exc, "read"):
                self.raise_for_status(what, exc.code, exc.read())
            reason = getattr(exc, "reason", None) or exc
            # A certificate problem stays one on a retry; a timeout, a refused or dropped connection may not.
            transient = "certificate" not in str(reason).lower() and "ssl" not in type(exc).__name__.lower()
            raise ApiError("%s failed: %s" % (what, _redact.redact_text(str(reason), (self.token,))),
                           transient=transient)
        try:
            return status, json.loads(raw.decode("utf-8")), answer_headers
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError("%s answered %s with malformed JSON (%s)" % (what, status, exc), status, transient=True)

    @staticmethod
    def raise_for_status(what, status, raw):
        try:
            error = (json.loads(raw.decode("utf-8")) or {}).get("error") or {}
            message = error.get("message") if isinstance(error, dict) else str(error)
        except (ValueError, UnicodeDecodeError, AttributeError):
            message = None
        detail = ": %s" % message if message else ""
        if status == 401:
            raise Refused("%s: the API refused the token (401)%s; check the token option or AUREUS_GUARD_TOKEN"
                          % (what, detail), "unauthorized")
        if status == 403:
            raise Refused("%s: the token may not do this (403)%s; a read-only token cannot restore" % (what, detail),
                          "forbidden")
        raise ApiError("%s answered %s%s" % (what, status, detail), status, transient=status >= 500)


class Outcome(object):
    def __init__(self):
        self.started = time.monotonic()
        self.timings = {"read": 0.0, "restore": 0.0, "verify": 0.0, "total": 0.0}
        self.failed_msg = None
        self.result = {"changed": False, "skipped_reason": None, "transient_errors": [], "verified": False,
                       "timings": self.timings}

    def fail(self, msg, **extra):
        self.failed_msg = msg
        self.result.update(extra)
        return self

    def close(self):
        self.timings["total"] = time.monotonic() - self.started
        for key in self.timings:
            self.timings[key] = round(self.timings[key], 3)
        return self


def read_object(guard, target):
    """The current object (None when it does not exist), its content digest computed here."""
    try:
        current = guard.call("GET", guard.path("object", kind=target.get("kind") or "object",
                                               name=target.get("name")))[1]
    except ApiError as error:
        if error.status == 404:
            return None
        raise
    if not isinstance(current, dict) or not isinstance(current.get("content"), dict):
        raise ApiError("the object %s answered without a content object" % target.get("name"))
    current["content_sha256"] = content_sha256(current["content"])
    return current


def select(guard, params, before):
    query = dict((k, params[k]) for k in ("state_type", "target") if params.get(k) and not params.get("snapshot_id"))
    if query:
        query["limit"] = 1000
    listed = guard.call("GET", guard.path("snapshots"), query=query or None)[1]
    snapshots = listed.get("snapshots") if isinstance(listed, dict) else None
    if not isinstance(snapshots, list):
        raise ApiError("%s answered without a snapshots list" % guard.path("snapshots"))
    if params.get("snapshot_id") and not any(s.get("id") == params["snapshot_id"] for s in snapshots
                                             if isinstance(s, dict)):
        # The list may be paged: ask for the snapshot itself before calling it unknown.
        try:
            found = guard.call("GET", guard.path("snapshot", id=params["snapshot_id"]))[1]
            snapshots = snapshots + [found]
        except ApiError as error:
            if error.status != 404:
                raise
    summary = select_snapshot(snapshots, params.get("snapshot_id"), params.get("state_type"),
                              params.get("description"), params.get("target"), before)
    how = ("by id" if params.get("snapshot_id") else
           "newest %s snapshot before %s" % (params.get("state_type"), params.get("before") or "now"))
    return summary, how


def _masked(value):
    return _redact.redact_k8s_object(value)


def request_restore(guard, outcome, snapshot_id, key, body):
    """POST the restore; lost answers (5xx, timeouts, malformed JSON) are retried with the same key."""
    last = None
    for attempt in range(POST_ATTEMPTS):
        try:
            status, answer, headers = guard.call("POST", guard.path("restore"), body=body,
                                                 headers={"Idempotency-Key": key})
        except ApiError as error:
            if error.status == 404:
                raise Refused("snapshot %s is gone (404 on the restore request); nothing was restored" % snapshot_id,
                              "snapshot_not_found")
            if error.status == 409:
                raise Refused("a restore is already running on this object (409); nothing was started: wait for it "
                              "and re-plan", "conflict")
            if not error.transient:
                raise
            last = error
            outcome.result["transient_errors"].append(error.msg)
            time.sleep(min(2 ** attempt, 5))
            continue
        if not isinstance(answer, dict) or not answer.get("operation_id"):
            raise ApiError("the restore request answered %s without an operation_id" % status)
        replayed = str(headers.get("Idempotent-Replayed") or headers.get("idempotent-replayed") or "").lower() == "true"
        return answer, replayed
    raise ApiError("the restore request failed %d times (%s); re-run with the same rollback_id: the idempotency key "
                   "makes sure it is not started twice" % (POST_ATTEMPTS, last.msg if last else "?"))


def poll(guard, outcome, operation, params):
    """Poll the operation until it is terminal or the deadline passes; returns (state, reason, operation)."""
    started = time.monotonic()
    deadline = started + params["wait_timeout"]
    op_id = operation["operation_id"]
    state, reason = judge_operation(operation)
    while state == "running":
        if time.monotonic() >= deadline:
            return "timeout", "operation %s did not finish within %ss (%s)" % (op_id, params["wait_timeout"], reason), \
                operation
        interval = params["poll_interval"] or backoff_interval(time.monotonic() - started)
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
        try:
            answer = guard.call("GET", guard.path("operation", operation_id=op_id))[1]
        except ApiError as error:
            if not error.transient:
                raise
            outcome.result["transient_errors"].append(error.msg)
            continue
        if not isinstance(answer, dict):
            outcome.result["transient_errors"].append("operation %s answered %r" % (op_id, answer))
            continue
        operation = answer
        state, reason = judge_operation(operation)
    return state, reason, operation


def _record_operation(result, operation):
    """The operation's state in the result and in the receipt's details (what the restore did)."""
    seen = dict(operation_id=operation.get("operation_id"), phase=operation.get("phase"),
                items_restored=operation.get("items_restored"), items_total=operation.get("items_total"),
                errors=operation.get("errors") or [])
    result.update(seen)
    details = result["receipt_fields"]["details"]
    details.update(seen, idempotency_key=result.get("idempotency_key"), replayed=result.get("replayed", False))


def execute(guard, params, check_mode=False, diff=False):
    outcome = Outcome()
    result = outcome.result
    now = utc_now()
    try:
        before = parse_time(params["before"], "before") if params.get("before") else now
        summary, how = select(guard, params, before)
        result.update(snapshot_id=summary["id"], state_type=summary["state_type"],
                      snapshot_timestamp=summary["timestamp"], snapshot_description=summary["description"],
                      selected_by=how, target=summary.get("target"))
        window = data_window(parse_time(summary["timestamp"]), now)
        result["data_window"] = window
        snapshot = guard.call("GET", guard.path("snapshot", id=summary["id"]))[1]
        if not isinstance(snapshot, dict) or snapshot.get("id") != summary["id"]:
            raise ApiError("snapshot %s answered something else" % summary["id"])
        review = review_snapshot(snapshot)
        result["review"] = review
        target = snapshot.get("target") if isinstance(snapshot.get("target"), dict) else {"name": snapshot.get("target")}
        current = read_object(guard, target)
    except Refused as refused:
        return outcome.fail(refused.msg, refused=refused.code, **refused.details).close()
    except RollbackError as error:
        return outcome.fail(error.msg).close()
    finally:
        outcome.timings["read"] = time.monotonic() - outcome.started

    plan = contract(snapshot, review, current, window)
    result.update(plan)
    current_sha = current["content_sha256"] if current else None
    result.update(snapshot_sha256=review["recorded_sha256"], digest_before=current_sha, digest_after=current_sha,
                  items=diff_items(current and current["content"], snapshot["content"]))
    if diff:
        result["diff"] = {"before_header": "%s %s (sha256 %s)" % (target.get("kind"), target.get("name"), current_sha),
                          "after_header": "snapshot %s (sha256 %s)" % (snapshot["id"], review["recorded_sha256"]),
                          "before": _masked(current["content"]) if current else {},
                          "after": _masked(snapshot["content"])}
    if check_mode:
        result["plan"] = {"action": "none" if plan["skipped_reason"] else "restore", "snapshot_id": snapshot["id"],
                          "selected_by": how, "target": target, "from_sha256": current_sha,
                          "to_sha256": review["recorded_sha256"], "items": result["items"], "data_window": window}
    try:
        check_binding("%s %s" % (target.get("kind") or "object", target.get("name")), params.get("expected_binding"),
                      plan["binding"])
    except Refused as refused:
        return outcome.fail(refused.msg, refused=refused.code).close()
    if plan["skipped_reason"]:
        result["verified"] = True
        return outcome.close()
    result["changed"] = True
    if check_mode:
        return outcome.close()

    key = idempotency_key(params.get("rollback_id"), snapshot["id"], plan["binding"])
    result["idempotency_key"] = key
    reason = "%s [incident %s, requested by %s, rollback %s]" % (
        params.get("reason") or "rollback", params.get("incident_id") or "-", params.get("actor") or "-",
        params.get("rollback_id") or "-")
    body = {"snapshot_id": snapshot["id"], "reason": reason, "approver": params["approver"]}
    restore_started = time.monotonic()
    try:
        operation, replayed = request_restore(guard, outcome, snapshot["id"], key, body)
    except Refused as refused:
        result["changed"] = False
        return outcome.fail(refused.msg, refused=refused.code).close()
    except RollbackError as error:
        return outcome.fail("the restore of snapshot %s may or may not have started: %s" % (snapshot["id"], error.msg)
                            ).close()
    finally:
        outcome.timings["restore"] = time.monotonic() - restore_started
    result["replayed"] = replayed
    _record_operation(result, operation)
    if not params["wait"]:
        return outcome.close()
    try:
        state, why, operation = poll(guard, outcome, operation, params)
    except RollbackError as error:
        return outcome.fail("polling restore operation %s failed: %s; re-run with the same rollback_id to resume "
                            "without restoring twice" % (operation["operation_id"], error.msg)).close()
    finally:
        outcome.timings["restore"] = time.monotonic() - restore_started
    _record_operation(result, operation)
    if state == "timeout":
        return outcome.fail("%s; the restore may still complete: re-run with the same rollback_id to resume without "
                            "restoring twice" % why).close()
    if state != "succeeded":
        return outcome.fail("restore operation %s of snapshot %s failed: %s"
                            % (operation["operation_id"], snapshot["id"], why)).close()
    verify_started = time.monotonic()
    try:
        after = read_object(guard, target)
    except RollbackError as error:
        return outcome.fail("the restore completed but %s %s could not be read back: %s"
                            % (target.get("kind"), target.get("name"), error.msg)).close()
    finally:
        outcome.timings["verify"] = time.monotonic() - verify_started
    result["digest_after"] = after["content_sha256"] if after else None
    result["verified"] = result["digest_after"] == review["recorded_sha256"]
    result["receipt_fields"]["details"].update(digest_after=result["digest_after"], verified=result["verified"])
    if not result["verified"]:
        return outcome.fail("restore operation %s says Completed, but %s %s has sha256 %s, not the snapshot's %s"
                            % (operation["operation_id"], target.get("kind"), target.get("name"),
                               result["digest_after"], review["recorded_sha256"])).close()
    return outcome.close()


PATH_OPTIONS = dict((name, dict(type="str", default=default)) for name, default in DEFAULT_PATHS.items())


def argument_spec():
    return _argspec.compose(dict(
        url=dict(type="str", required=True, fallback=(env_fallback, ["AUREUS_GUARD_URL"])),
        token=dict(type="str", no_log=True, fallback=(env_fallback, ["AUREUS_GUARD_TOKEN"])),
        validate_certs=dict(type="bool", default=True, fallback=(env_fallback, ["AUREUS_GUARD_VALIDATE_CERTS"])),
        ca_path=dict(type="path", fallback=(env_fallback, ["AUREUS_GUARD_CA_PATH"])),
        request_timeout=dict(type="int", default=10),
        api_paths=dict(type="dict", default={}, options=PATH_OPTIONS),
        snapshot_id=dict(type="str"),
        state_type=dict(type="str"),
        description=dict(type="str"),
        target=dict(type="str"),
        before=dict(type="str"),
        rollback_id=dict(type="str"),
        approver=dict(type="str", default="governed.rollback"),
        expected_binding=dict(type="dict"),
        poll_interval=dict(type="float"),
    ), _argspec.RUNBOOK_CONTEXT, _argspec.WAIT)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           required_one_of=[("snapshot_id", "state_type")])
    try:
        outcome = execute(Guard(module.params), module.params, module.check_mode, module._diff)
    except Exception as exc:  # pylint: disable=broad-except  # anything unforeseen still ends in fail_json
        fail_from_exception(module, exc, changed=False)
    result = _redact.redact_k8s_object(outcome.result, known_values=[module.params["token"]] if module.params.get("token") else ())
    result["changed"] = outcome.result["changed"]
    if outcome.failed_msg:
        module.fail_json(msg=_redact.redact_text(outcome.failed_msg), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
