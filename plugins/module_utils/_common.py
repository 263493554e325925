# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every module and module_utils file shares: the rollback-type registry, the error classes, the one
exception-to-``fail_json`` path, canonical JSON and UTC time stamps.

This file sits at the bottom of the layering (modules -> adapters -> pure cores -> _common) and imports
nothing from the collection.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import binascii
import datetime
import hashlib
import json
import os
import traceback

# --------------------------------------------------------------------------- the rollback types
# One entry per rollback type: the approval-matrix rows it may be decided by, the receipt's run_type and
# changed surface, and the action module that plans and performs it. Every other table in the collection
# (approval rows, receipt schema enum, surfaces) is derived from this one.
ROLLBACK_TYPES = {
    "deployment": {
        "label": "deployment",
        "run_type": "ops.deployment.rollback",
        "surfaces": ["deployment"],
        "approval_rows": ["deployment_last", "deployment_older"],
        "module": "rollout_undo",
    },
    "configuration": {
        "label": "configuration",
        "run_type": "ops.configuration.rollback",
        "surfaces": ["config"],
        "approval_rows": ["configuration"],
        "module": "config_revert",
    },
    "database": {
        "label": "database",
        "run_type": "ops.database.rollback",
        "surfaces": ["database"],
        "approval_rows": ["database"],
        "module": "pg_schema_downgrade",
    },
    "policy": {
        "label": "policy",
        "run_type": "ops.policy.rollback",
        "surfaces": ["policy"],
        "approval_rows": ["policy"],
        "module": "policy_bundle_revert",
    },
    "state": {
        "label": "application state",
        "run_type": "ops.state.rollback",
        "surfaces": ["state"],
        "approval_rows": ["state"],
        "module": "snapshot_rollback",
    },
    # A GitOps-managed workload rolled back through its config repository (gitops_revert): decided by the
    # deployment rows (the last good release, or an older one).
    "gitops": {
        "label": "GitOps",
        "run_type": "ops.gitops.rollback",
        "surfaces": ["gitops"],
        "approval_rows": ["deployment_last", "deployment_older"],
        "module": "gitops_revert",
    },
}
ROLLBACK_TYPE_NAMES = tuple(ROLLBACK_TYPES)


def rollback_type(name):
    """The registry entry of one type; an unknown name is a RollbackError listing the known ones."""
    try:
        return ROLLBACK_TYPES[name]
    except (KeyError, TypeError):
        raise RollbackError("unknown rollback_type %r; expected one of %s" % (name, ", ".join(ROLLBACK_TYPE_NAMES)))


# --------------------------------------------------------------------------- errors

class RollbackError(Exception):
    """A problem already phrased for an operator: what failed and what to do.

    ``details`` are extra return values for ``fail_json`` (never secrets).
    """

    def __init__(self, msg, **details):
        super(RollbackError, self).__init__(msg)
        self.msg = msg
        self.details = details


class Refused(RollbackError):
    """The module refused to act because a precondition does not hold; nothing was changed.

    ``code`` is a short machine-readable reason (``paused``, ``conflict``, ``not_found``, ...).
    """

    def __init__(self, msg, code="refused", **details):
        super(Refused, self).__init__(msg, **details)
        self.code = code


def fail_from_exception(module, exc, **result):
    """End a module run on any exception: ``fail_json`` with the operator's message, never a bare traceback.

    A RollbackError carries its own message and details; anything else is unexpected, so its traceback goes
    into ``exception`` (shown with -vvv) and the message names the type and says it is a bug to report.
    """
    if isinstance(exc, Refused):
        result.setdefault("refused", exc.code)
    if isinstance(exc, RollbackError):
        result.update(exc.details)
        module.fail_json(msg=exc.msg, **result)
    module.fail_json(msg="unexpected %s: %s (a bug in governed.rollback; please report it with the -vvv output)"
                     % (type(exc).__name__, exc), exception=traceback.format_exc(), **result)


# --------------------------------------------------------------------------- plan binding

def check_binding(what, expected, actual):
    """Refuse (code ``changed_since_approved``) when the world no longer matches the binding of the approved plan.

    ``expected`` is the ``binding`` an earlier check-mode plan returned (what the approval was for); ``actual`` is
    the binding computed from a fresh read just before acting. Only the keys of ``expected`` are compared.
    """
    moved = [(key, value, actual.get(key)) for key, value in sorted((expected or {}).items())
             if actual.get(key) != value]
    if moved:
        raise Refused("%s changed since it was approved (%s); nothing was changed: re-plan, get the new plan approved, "
                      "and run again" % (what, "; ".join("%s was %s, now %s" % m for m in moved)),
                      "changed_since_approved", binding=actual)


# --------------------------------------------------------------------------- canonical JSON and digests

def canonical_json(value):
    """Compact, key-sorted JSON text: the one spelling that is hashed or compared (not RFC 8785; receipts and
    signatures use _receipt.canonical)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def pretty_json(value):
    """Key-sorted, indented JSON text with a final newline: what evidence files and diffs hold."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def sha256_hex(data):
    if not isinstance(data, bytes):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def sha256_file(path, chunk=1 << 20):
    """sha256 of a file's bytes, read a chunk at a time (archives and backups are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def json_sha256(value):
    """sha256 of the canonical JSON of a value."""
    return sha256_hex(canonical_json(value))


# --------------------------------------------------------------------------- time

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def utc_stamp(moment=None):
    """RFC 3339 UTC time stamp at second precision (``2024-01-15T10:30:45Z``); now when no moment is given."""
    return (moment or utc_now()).astimezone(datetime.timezone.utc).strftime(TIME_FORMAT)


def backoff_interval(elapsed):
    """Seconds to sleep before the next poll of something usually done within a second (a rollout, a restore):
    every 50 ms in the first second, 0.2 s until 5 s, 0.5 s until 30 s, then 2 s. One small GET per poll."""
    if elapsed < 1.0:
        return 0.05
    if elapsed < 5.0:
        return 0.2
    return 0.5 if elapsed < 30 else 2.0


def utc_stamp_micro(moment=None):
    """RFC 3339 UTC time stamp at microsecond precision (``2024-01-15T10:30:45.123456Z``), for the moments a
    timeline or a benchmark measures (a patch accepted); now when no moment is given."""
    return (moment or utc_now()).astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_rollback_id(now=None):
    """The runbook's ROLLBACK_ID, rollback-YYYYmmdd-HHMMSS (UTC), plus a random suffix: two rollbacks started in
    the same second (AWX, one ledger) must not share an evidence pack or a receipt id."""
    stamp = (now or utc_now()).astimezone(datetime.timezone.utc).strftime("rollback-%Y%m%d-%H%M%S")
    return "%s-%s" % (stamp, binascii.hexlify(os.urandom(3)).decode("ascii"))


def list_files(root):
    """Every file below ``root``, as ``/``-separated paths relative to it, directories walked in name order."""
    found = []
    for base, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            found.append(os.path.relpath(os.path.join(base, name), root).replace(os.sep, "/"))
    return found
