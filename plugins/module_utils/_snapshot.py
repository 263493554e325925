# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pure core of an application-state rollback from a platform snapshot (AUREUS runbook section 5).

Plain data in, plain data out: choosing the snapshot, checking a snapshot's content against its manifest, judging a
restore operation (Velero's rule: only ``Completed`` with every item restored and no error is a success), the diff
between the current object and the snapshot, the idempotency key, the plan contract. No I/O.

Digests: an item's sha256 is sha256(canonical JSON of its value); the content's is sha256(canonical JSON of the whole
item -> value object), with _common.canonical_json (key-sorted, compact, UTF-8), which is how the platform computes
them (docs/aureus-guard-api.openapi.yaml).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import re

from ansible_collections.governed.rollback.plugins.module_utils._common import (
    Refused, RollbackError, json_sha256, sha256_hex, utc_stamp,
)

TERMINAL_PHASES = ("Completed", "PartiallyFailed", "Failed")
KNOWN_PHASES = ("New", "InProgress") + TERMINAL_PHASES

_RFC3339_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
                         r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))$")


# --------------------------------------------------------------------------- time

def parse_time(text, what="time"):
    """An RFC 3339 time stamp (fractional seconds and offsets allowed) as an aware UTC datetime."""
    match = _RFC3339_RE.match(str(text or "").strip())
    if not match:
        raise RollbackError("%s %r is not an RFC 3339 time such as 2024-01-15T10:30:45Z" % (what, text))
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        moment = datetime.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro,
                                   tzinfo=datetime.timezone.utc)
    except ValueError as exc:
        raise RollbackError("%s %r is not a valid time: %s" % (what, text, exc))
    if not zulu:
        offset = datetime.timedelta(hours=int(off_h), minutes=int(off_m))
        moment = moment - offset if sign == "+" else moment + offset
    return moment


def data_window(snapshot_time, now):
    """What a restore loses: every change made between the snapshot and now."""
    seconds = max(0, int((now - snapshot_time).total_seconds()))
    return {"from": utc_stamp(snapshot_time), "to": utc_stamp(now), "seconds": seconds}


# --------------------------------------------------------------------------- selection

def _summary(snapshot):
    return {"id": snapshot.get("id"), "timestamp": snapshot.get("timestamp"), "state_type": snapshot.get("state_type"),
            "description": snapshot.get("description"), "target": snapshot.get("target")}


def _target_name(snapshot):
    target = snapshot.get("target")
    return target.get("name") if isinstance(target, dict) else target


def select_snapshot(snapshots, snapshot_id=None, state_type=None, description=None, target=None, before=None,
                    nearest=5):
    """The snapshot to restore, from the platform's list.

    By id (it must be in the list and match the other criteria given), else the newest of ``state_type`` (optional
    ``description`` substring, case-insensitive, and ``target`` name) taken strictly before ``before`` (a datetime).
    Refuses (``snapshot_not_found`` / ``no_snapshot``) listing the nearest candidates: the same criteria without the
    time bound and description, closest in time to ``before`` first.
    """
    if not snapshot_id and not state_type:
        raise RollbackError("give snapshot_id, or state_type to select the newest snapshot of that type")
    parsed = []
    for snapshot in snapshots or []:
        if not isinstance(snapshot, dict) or not snapshot.get("id"):
            raise RollbackError("the snapshot list holds an entry without an id: %r" % (snapshot,))
        parsed.append((parse_time(snapshot.get("timestamp"), "timestamp of snapshot %s" % snapshot["id"]), snapshot))

    def fits(moment, snapshot, strict=True):
        if state_type and snapshot.get("state_type") != state_type:
            return False
        if target and _target_name(snapshot) != target:
            return False
        if strict and description and description.lower() not in str(snapshot.get("description") or "").lower():
            return False
        if strict and before is not None and not moment < before:
            return False
        return True

    if snapshot_id:
        found = [(m, s) for m, s in parsed if s["id"] == snapshot_id]
        if found and fits(found[0][0], found[0][1]):
            return _summary(found[0][1])
        why = "does not exist" if not found else "does not match the criteria given (%s)" % _criteria(
            state_type, description, target, before)
        raise Refused("snapshot %s %s; nothing was restored" % (snapshot_id, why), "snapshot_not_found",
                      candidates=_nearest(parsed, lambda m, s: fits(m, s, strict=False), before, nearest))
    chosen = sorted(((m, s) for m, s in parsed if fits(m, s)), key=lambda pair: pair[0], reverse=True)
    if chosen:
        return _summary(chosen[0][1])
    candidates = _nearest(parsed, lambda m, s: fits(m, s, strict=False), before, nearest)
    raise Refused("no snapshot matches (%s); nothing was restored. Nearest candidates: %s"
                  % (_criteria(state_type, description, target, before),
                     "; ".join("%s %s %r" % (c["id"], c["timestamp"], c["description"]) for c in candidates) or "none"),
                  "no_snapshot", candidates=candidates)


def _criteria(state_type, description, target, before):
    parts = []
    if state_type:
        parts.append("state_type %s" % state_type)
    if description:
        parts.append("description containing %r" % description)
    if target:
        parts.append("target %s" % target)
    if before is not None:
        parts.append("taken before %s" % utc_stamp(before))
    return ", ".join(parts) or "any"


def _nearest(parsed, keep, before, limit):
    kept = [(m, s) for m, s in parsed if keep(m, s)] or parsed
    if before is None:
        ordered = sorted(kept, key=lambda pair: pair[0], reverse=True)
    else:
        ordered = sorted(kept, key=lambda pair: abs((pair[0] - before).total_seconds()))
    return [_summary(s) for _m, s in ordered[:limit]]


# --------------------------------------------------------------------------- review

def content_sha256(content):
    return json_sha256(content)


def item_sha256(value):
    return json_sha256(value)


def review_snapshot(snapshot):
    """Check a fetched snapshot: its content matches its manifest item by item, and its recorded digest.

    Returns the review (manifest, recorded and computed digests). Refuses (``digest_mismatch``) a snapshot whose
    content does not match what was recorded when it was taken: restoring it would restore something else.
    """
    content = snapshot.get("content")
    manifest = snapshot.get("manifest")
    recorded = snapshot.get("content_sha256")
    if not isinstance(content, dict) or not isinstance(manifest, list) or not recorded:
        raise RollbackError("snapshot %s has no content, manifest or content_sha256: the API does not answer as "
                            "expected (see api_paths)" % snapshot.get("id"))
    problems = []
    listed = {}
    for entry in manifest:
        if not isinstance(entry, dict) or "key" not in entry or "sha256" not in entry:
            raise RollbackError("snapshot %s has a malformed manifest entry: %r" % (snapshot.get("id"), entry))
        listed[entry["key"]] = entry["sha256"]
    for key in sorted(set(listed) | set(content)):
        if key not in content:
            problems.append("%s is in the manifest but not in the content" % key)
        elif key not in listed:
            problems.append("%s is in the content but not in the manifest" % key)
        elif item_sha256(content[key]) != listed[key]:
            problems.append("%s has sha256 %s, the manifest says %s" % (key, item_sha256(content[key]), listed[key]))
    computed = content_sha256(content)
    if computed != recorded:
        problems.append("the content has sha256 %s, the snapshot recorded %s" % (computed, recorded))
    review = {"snapshot_id": snapshot.get("id"), "manifest": [{"key": k, "sha256": listed[k]} for k in sorted(listed)],
              "recorded_sha256": recorded, "computed_sha256": computed, "items": len(content),
              "matches": not problems, "problems": problems}
    if problems:
        raise Refused("snapshot %s does not match its manifest (%s); it was not restored: its content changed since it "
                      "was taken" % (snapshot.get("id"), "; ".join(problems)), "digest_mismatch", review=review)
    return review


def diff_items(current, wanted):
    """Item keys the restore adds, removes and changes (current -> snapshot)."""
    current = current or {}
    wanted = wanted or {}
    return {
        "added": sorted(k for k in wanted if k not in current),
        "removed": sorted(k for k in current if k not in wanted),
        "changed": sorted(k for k in wanted if k in current and item_sha256(wanted[k]) != item_sha256(current[k])),
    }


# --------------------------------------------------------------------------- acting

def idempotency_key(rollback_id, snapshot_id, fallback=None):
    """The restore's Idempotency-Key: one per rollback and snapshot, so a retried task replays the same operation.

    Without a rollback id, ``fallback`` (the binding: the same plan retried) makes it deterministic.
    """
    seed = rollback_id if rollback_id else "plan:" + json_sha256(fallback or {})
    return "governed-rollback:%s:%s" % (sha256_hex("%s\n%s" % (seed, snapshot_id))[:40], snapshot_id)


def judge_operation(operation):
    """(state, reason) of a restore operation: ``running``, ``succeeded`` or ``failed``.

    Only ``Completed`` with items_restored == items_total and no error is a success; any other terminal phase, or a
    ``Completed`` that restored fewer items than it counted or reports errors, is a failure (the way restore tooling
    has reported success it did not have).
    """
    phase = operation.get("phase")
    restored, total = operation.get("items_restored"), operation.get("items_total")
    errors = operation.get("errors") or []
    if phase not in TERMINAL_PHASES:
        if phase not in KNOWN_PHASES:
            return "failed", "the operation reports an unknown phase %r" % (phase,)
        return "running", "phase %s, %s of %s items restored" % (phase, restored, total)
    counts = "%s of %s items restored" % (restored, total)
    if errors:
        details = "; ".join("%s: %s" % (e.get("item"), e.get("message")) if isinstance(e, dict) else str(e)
                            for e in errors[:5])
    if phase != "Completed":
        return "failed", "the restore ended %s (%s)%s" % (phase, counts, (": " + details) if errors else "")
    if not isinstance(restored, int) or not isinstance(total, int) or restored != total:
        return "failed", "the restore says Completed but %s" % counts
    if errors:
        return "failed", "the restore says Completed but reports errors: %s" % details
    return "succeeded", "Completed, %s" % counts


# --------------------------------------------------------------------------- the plan contract

def binding(snapshot_id, snapshot_sha, current_sha):
    return {"snapshot_id": snapshot_id, "snapshot_sha256": snapshot_sha, "current_sha256": current_sha}


def contract(snapshot, review, current, window):
    """from_ref/to_ref, skipped_reason, approval_facts, binding and receipt_fields (docs/plan-contract.md)."""
    target = snapshot.get("target") or {}
    name = target.get("name") if isinstance(target, dict) else target
    kind = target.get("kind") if isinstance(target, dict) else None
    current_sha = current.get("content_sha256") if current else None
    snapshot_sha = review["recorded_sha256"]
    equal = current_sha == snapshot_sha
    return {
        "from_ref": "sha256:" + current_sha if current_sha else None,
        "to_ref": "sha256:" + snapshot_sha,
        "skipped_reason": ("skipped rollback: %s %s already has the content of snapshot %s (sha256 %s)"
                           % (kind or "object", name, snapshot["id"], snapshot_sha)) if equal else None,
        "approval_facts": {},
        "binding": binding(snapshot["id"], snapshot_sha, current_sha),
        "receipt_fields": {
            "component": name,
            "changed_surfaces": ["state"],
            "current_ref": "sha256:" + current_sha if current_sha else None,
            "rollback_target_ref": "sha256:" + snapshot_sha,
            "from_version": str(current["version"]) if current and current.get("version") is not None else None,
            "to_version": snapshot["id"],
            "snapshot_id": snapshot["id"],
            "data_loss": "changes to %s %s made between the snapshot (%s) and the restore (%s, %d s later) are lost"
                         % (kind or "object", name, window["from"], window["to"], window["seconds"]),
            "details": {
                "state_type": snapshot.get("state_type"),
                "snapshot_id": snapshot["id"],
                "snapshot_timestamp": snapshot.get("timestamp"),
                "snapshot_description": snapshot.get("description"),
                "target_kind": kind,
                "data_window": window,
            },
        },
    }
