# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The AUREUS rollback approval matrix, evaluated fail-closed (pure logic, no I/O).

The matrix is data (DEFAULT_MATRIX); callers may replace rows. Roles always come
from the roster, never from what the caller claims about a person.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import datetime
import unicodedata

from ansible_collections.governed.rollback.plugins.module_utils._common import (
    ROLLBACK_TYPE_NAMES as ROLLBACK_TYPES, RollbackError, json_sha256, rollback_type as type_entry, utc_stamp,
)

PRIORITIES = ("P0", "P1", "P2", "P3")
ROW_NAMES = ("deployment_last", "deployment_older", "configuration", "database", "policy", "state")

# The runbook's "Rollback Approval Matrix" table, one row per rollback type.
DEFAULT_MATRIX = {
    "deployment_last": {
        "label": "deployment rollback to the last version",
        "required_roles": ["on_call_engineer"],
        "auto_approved_roles": ["on_call_engineer"],
        "emergency": {"priorities": ["P0"], "extra_roles": [], "retroactive_hours": 4},
    },
    "deployment_older": {
        "label": "deployment rollback to an older version",
        "required_roles": ["engineering_lead"],
        "auto_approved_roles": [],
        "emergency": {"priorities": ["P0"], "extra_roles": [], "retroactive_hours": 4},
    },
    "configuration": {
        "label": "configuration rollback",
        "required_roles": ["devops_lead"],
        "auto_approved_roles": [],
        "emergency": {"priorities": ["P0"], "extra_roles": [], "retroactive_hours": 4},
    },
    "database": {
        "label": "database rollback",
        "required_roles": ["dba", "engineering_lead"],
        "auto_approved_roles": [],
        "emergency": {"priorities": ["P0"], "extra_roles": ["cto"], "retroactive_hours": 4},
    },
    "policy": {
        "label": "policy rollback",
        "required_roles": ["governance_lead", "security"],
        "auto_approved_roles": [],
        "emergency": {"priorities": ["P0"], "extra_roles": ["ciso"], "retroactive_hours": 4},
    },
    "state": {
        "label": "state rollback",
        "required_roles": ["data_owner", "approver"],
        "auto_approved_roles": [],
        "emergency": {"priorities": ["P0"], "extra_roles": ["engineering_lead"], "retroactive_hours": 4},
    },
}

INCIDENT_COMMANDER_ROLE = "incident_commander"


class ApprovalError(RollbackError):
    """The inputs cannot be evaluated at all (bad matrix, missing revisions): not a denial."""


def _is_str_list(value):
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def validate_row(name, row):
    """Raise ApprovalError naming the first structural problem of one matrix row."""
    if not isinstance(row, dict):
        raise ApprovalError("matrix row %s must be a dict, got %s" % (name, type(row).__name__))
    unknown = sorted(set(row) - {"label", "required_roles", "auto_approved_roles", "emergency"})
    if unknown:
        raise ApprovalError("matrix row %s has unknown keys: %s" % (name, ", ".join(unknown)))
    if not _is_str_list(row.get("required_roles")) or not row["required_roles"]:
        raise ApprovalError("matrix row %s needs required_roles: a non-empty list of role names" % name)
    if not _is_str_list(row.get("auto_approved_roles", [])):
        raise ApprovalError("matrix row %s: auto_approved_roles must be a list of role names" % name)
    emergency = row.get("emergency")
    if emergency is None:
        return
    if not isinstance(emergency, dict):
        raise ApprovalError("matrix row %s: emergency must be a dict or null (null disables the override)" % name)
    unknown = sorted(set(emergency) - {"priorities", "extra_roles", "retroactive_hours"})
    if unknown:
        raise ApprovalError("matrix row %s: emergency has unknown keys: %s" % (name, ", ".join(unknown)))
    priorities = emergency.get("priorities")
    if not _is_str_list(priorities) or not priorities or not set(priorities) <= set(PRIORITIES):
        raise ApprovalError("matrix row %s: emergency.priorities must be a non-empty subset of %s"
                            % (name, ", ".join(PRIORITIES)))
    if not _is_str_list(emergency.get("extra_roles", [])):
        raise ApprovalError("matrix row %s: emergency.extra_roles must be a list of role names" % name)
    hours = emergency.get("retroactive_hours")
    if isinstance(hours, bool) or not isinstance(hours, int) or hours <= 0:
        raise ApprovalError("matrix row %s: emergency.retroactive_hours must be a positive integer" % name)


def build_matrix(overrides=None):
    """Return the default matrix with whole rows replaced by ``overrides`` (validated)."""
    matrix = copy.deepcopy(DEFAULT_MATRIX)
    if overrides:
        if not isinstance(overrides, dict):
            raise ApprovalError("matrix must be a dict of rows keyed by %s" % ", ".join(ROW_NAMES))
        unknown = sorted(set(overrides) - set(ROW_NAMES))
        if unknown:
            raise ApprovalError("matrix has unknown rows: %s; rows are %s" % (", ".join(unknown), ", ".join(ROW_NAMES)))
        for name, row in overrides.items():
            merged = copy.deepcopy(row)
            if isinstance(merged, dict):
                merged.setdefault("label", DEFAULT_MATRIX[name]["label"])
                merged.setdefault("auto_approved_roles", [])
            matrix[name] = merged
    for name in ROW_NAMES:
        validate_row(name, matrix[name])
    return matrix


def matrix_sha256(matrix):
    """Stable digest of the matrix that decided, so a receipt shows whether the default was overridden."""
    return json_sha256(matrix)


def select_row(rollback_type, approval_facts=None):
    """Name the matrix row for a rollback from its type and the facts its plan returned.

    Only deployments have two rows: ``deployment_last`` when the plan's ``to_revision`` is its
    ``previous_revision`` (the last good version), else ``deployment_older``.
    """
    if rollback_type not in ROLLBACK_TYPES:
        raise ApprovalError("unknown rollback_type %r; expected one of %s" % (rollback_type, ", ".join(ROLLBACK_TYPES)))
    rows = type_entry(rollback_type)["approval_rows"]
    if len(rows) == 1:
        return rollback_type
    facts = approval_facts if isinstance(approval_facts, dict) else {}
    to_revision, previous_revision = facts.get("to_revision"), facts.get("previous_revision")
    if to_revision is None or previous_revision is None:
        raise ApprovalError("a %s rollback needs approval_facts with to_revision and previous_revision (from "
                            "its plan: rollout_undo's rollout history, gitops_revert's release history; the approval "
                            "never guesses which row applies)" % rollback_type)
    if isinstance(to_revision, bool) or isinstance(previous_revision, bool):
        raise ApprovalError("approval_facts.to_revision and previous_revision must be integers, got %r and %r"
                            % (to_revision, previous_revision))
    try:
        target, previous = int(to_revision), int(previous_revision)
    except (TypeError, ValueError):
        raise ApprovalError("approval_facts.to_revision and previous_revision must be integers, got %r and %r"
                            % (to_revision, previous_revision))
    return rows[0] if target == previous else rows[1]


# Characters that make two names look alike on screen but compare different: format (zero-width, bidi
# controls), control, private-use, surrogate and line/paragraph separators.
_INVISIBLE_CATEGORIES = frozenset(("Cf", "Cc", "Co", "Cs", "Zl", "Zp"))


def normalize_name(name, what="name"):
    """A person's name as compared everywhere: Unicode NFKC, case-folded, trimmed; invisible characters refused."""
    if not isinstance(name, str):
        raise ApprovalError("%s must be a string, got %s" % (what, type(name).__name__))
    bad = sorted({"U+%04X" % ord(c) for c in name if unicodedata.category(c) in _INVISIBLE_CATEGORIES})
    if bad:
        raise ApprovalError("%s %r contains invisible or control characters (%s); type the name plainly"
                            % (what, name, ", ".join(bad)))
    return unicodedata.normalize("NFKC", name).casefold().strip()


def _roster_entry(name, entry):
    """(roles, public key lines) of one roster entry: a list of roles, one role, or {roles, keys}."""
    keys = []
    if isinstance(entry, dict):
        unknown = sorted(set(entry) - {"roles", "keys"})
        if unknown:
            raise ApprovalError("roster entry %s has unknown keys %s; use roles and keys" % (name, ", ".join(unknown)))
        keys = entry.get("keys") or []
        entry = entry.get("roles") or []
        if isinstance(keys, str):
            keys = [keys]
    if isinstance(entry, str):
        entry = [entry]
    if not isinstance(entry, (list, tuple)) or not isinstance(keys, (list, tuple)):
        raise ApprovalError("roster entry %s must be a list of role names, or {roles: [...], keys: [...]}" % name)
    return entry, keys


def normalize_roster(roster):
    """normalized name -> sorted list of roles; a single role string and {roles, keys} entries are accepted."""
    if roster is not None and not isinstance(roster, dict):
        raise ApprovalError("roster must be a mapping of name to roles")
    result = {}
    for name, entry in (roster or {}).items():
        roles, _keys = _roster_entry(name, entry)
        key = normalize_name(str(name), "roster name")
        if key in result:
            raise ApprovalError("roster names %r collide after normalization (NFKC, case-folded); each person must "
                                "appear once" % key)
        result[key] = sorted({str(r).strip() for r in roles if str(r).strip()})
    return result


def roster_keys(roster, allowed_signers=None):
    """normalized name -> [ssh-ed25519 key blobs] from the roster's keys and an allowed_signers mapping."""
    from ansible_collections.governed.rollback.plugins.module_utils._approval_statement import parse_public_key

    keys = {}
    for name, entry in (roster or {}).items():
        for line in _roster_entry(name, entry)[1]:
            keys.setdefault(normalize_name(str(name), "roster name"), []).append(parse_public_key(line))
    for name, blobs in (allowed_signers or {}).items():
        keys.setdefault(normalize_name(str(name), "allowed_signers principal"), []).extend(blobs)
    return keys


def _assign_roles(required, candidates):
    """Maximum matching of roles to distinct people: {role: name} (augmenting paths; sizes are tiny)."""
    holders = {role: sorted(name for name, roles in candidates.items() if role in roles) for role in required}
    owner = {}  # name -> role

    def try_assign(role, seen):
        for name in holders[role]:
            if name in seen:
                continue
            seen.add(name)
            if name not in owner or try_assign(owner[name], seen):
                owner[name] = role
                return True
        return False

    for role in required:
        try_assign(role, set())
    return {role: name for name, role in owner.items()}


def _people(names, roster):
    return ", ".join("%s (%s)" % (n, ", ".join(roster.get(n, [])) or "no roles") for n in names) or "none"


APPROVAL_MODES = ("signed", "asserted")


def evaluate(rollback_type, requested_by, approvals, roster, priority=None, incident_commander=None,
             emergency_override=False, approval_facts=None, matrix=None, now=None, approval_mode="asserted",
             verified_signers=None, launched_by=None):
    """Decide one rollback request. Returns a decision dict; ``approved`` False means denied.

    ``approval_mode`` ``asserted`` takes the names in ``approvals`` as typed; ``signed`` counts only the people in
    ``verified_signers`` (``[{name, fingerprint, ...}]`` from verified statements bound to this plan), and needs the
    incident commander's own signed statement for an emergency override. ``launched_by`` is the identity the
    platform launched the job as (AWX's user): a different ``requested_by`` is refused.

    Raises ApprovalError only when the request cannot be evaluated (bad matrix, missing approval facts, a requester
    who is not the launching user or not in the roster).
    """
    if approval_mode not in APPROVAL_MODES:
        raise ApprovalError("approval_mode %r is not one of %s" % (approval_mode, ", ".join(APPROVAL_MODES)))
    matrix = build_matrix(matrix)
    row_name = select_row(rollback_type, approval_facts)
    row = matrix[row_name]
    roster = normalize_roster(roster)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    requested_by = normalize_name(requested_by or "", "requested_by")
    incident_commander = normalize_name(incident_commander or "", "incident_commander") or None
    if launched_by and normalize_name(launched_by, "the launching user") != requested_by:
        raise ApprovalError("requested_by %r is not the user who launched this job (%r): the requester is the "
                            "launching identity; launch it as yourself or leave requested_by to the platform"
                            % (requested_by, normalize_name(launched_by)))
    if priority is not None and priority not in PRIORITIES:
        raise ApprovalError("priority %r is not one of %s" % (priority, ", ".join(PRIORITIES)))
    if not requested_by:
        raise ApprovalError("requested_by is empty: every rollback names the person who asked for it")
    if requested_by not in roster:
        raise ApprovalError("requested_by %r is not in the roster: only people the roster lists may request a "
                            "rollback" % requested_by)

    ignored = []
    valid = {}
    signers = dict((normalize_name(v["name"]), v) for v in (verified_signers or []))
    if approval_mode == "signed":
        typed = [normalize_name(str(raw), "approval") for raw in approvals or [] if str(raw).strip()]
        names = sorted(signers) + [n for n in typed if n not in signers]
    else:
        names = [normalize_name(str(raw), "approval") for raw in approvals or []]
    for name in names:
        if not name or name in valid or any(i["name"] == name for i in ignored):
            continue
        if name == requested_by:
            ignored.append({"name": name, "reason": "requester cannot approve their own rollback"})
        elif name not in roster:
            ignored.append({"name": name, "reason": "not in the roster"})
        elif approval_mode == "signed" and name not in signers:
            ignored.append({"name": name, "reason": "no valid signed statement for this plan"})
        else:
            valid[name] = roster[name]

    required = list(row["required_roles"])
    requester_roles = roster.get(requested_by, [])
    auto_roles = [r for r in row.get("auto_approved_roles", []) if r in requester_roles]
    assignments = {}
    approval_path = None
    if auto_roles and set(required) <= set(auto_roles):
        # The runbook's only self-service path: on-call rolls back to the last version.
        assignments = {role: requested_by for role in required}
        approval_path = "auto_approval"
    else:
        assignments = _assign_roles(required, valid)
        if len(assignments) == len(required):
            approval_path = "approval"
    missing = [r for r in required if r not in assignments]

    emergency_problems = []
    emergency = False
    retro_due = None
    retro_roles = []
    extra_roles = []
    spec = row.get("emergency")
    if approval_path is None and emergency_override:
        if spec is None:
            emergency_problems.append("the matrix allows no emergency override for %s" % row_name)
        else:
            extra_roles = list(spec.get("extra_roles", []))
            if priority not in spec["priorities"]:
                emergency_problems.append("an emergency override is only for %s incidents, this one is %s"
                                          % ("/".join(spec["priorities"]), priority or "without a priority"))
            if not incident_commander:
                emergency_problems.append("no incident commander declared the emergency")
            elif INCIDENT_COMMANDER_ROLE not in roster.get(incident_commander, []):
                emergency_problems.append("incident commander %s does not hold the incident_commander role in the "
                                          "roster" % incident_commander)
            elif incident_commander == requested_by:
                emergency_problems.append("the requester cannot declare their own emergency (incident commander "
                                          "must be someone else)")
            elif approval_mode == "signed" and incident_commander not in signers:
                emergency_problems.append("incident commander %s has no valid signed statement for this plan"
                                          % incident_commander)
            # One person never fills two roles: the commander who declares the emergency is not its extra approver.
            extra_assign = _assign_roles(extra_roles, dict((n, r) for n, r in valid.items() if n != incident_commander))
            extra_missing = [r for r in extra_roles if r not in extra_assign]
            if extra_missing:
                emergency_problems.append("the emergency override also needs %s approval from someone other than "
                                          "the requester and the incident commander" % ", ".join(extra_missing))
            if not emergency_problems:
                emergency = True
                approval_path = "emergency_override"
                retro_roles = missing
                missing = []
                for role, name in extra_assign.items():
                    assignments["emergency:" + role] = name
                retro_due = utc_stamp(now + datetime.timedelta(hours=spec["retroactive_hours"]))

    approved = approval_path is not None
    # Only the people whose roles counted; the others are listed in ignored_approvals or simply were not needed.
    counted = sorted(set(assignments.values()))
    approved_by = [{"name": n, "roles": valid[n]} for n in counted if n in valid]
    if approval_path == "auto_approval":
        approved_by = [{"name": requested_by, "roles": requester_roles}]
    decision = {
        "approved": approved,
        "rule": row_name,
        "rule_label": row["label"],
        "approval_path": approval_path or "denied",
        "rollback_type": rollback_type,
        "requested_by": requested_by,
        "approved_by": approved_by,
        "role_assignments": assignments,
        "required_roles": required,
        "missing_roles": missing,
        "ignored_approvals": ignored,
        "priority": priority,
        "incident_commander": incident_commander,
        "emergency_requested": bool(emergency_override),
        "emergency": emergency,
        "emergency_extra_roles": extra_roles,
        "retroactive_approval_due": retro_due,
        "retroactive_roles": retro_roles,
        "post_incident_review": "required" if emergency else "not_required",
        "evaluated_at": utc_stamp(now),
        "matrix_sha256": matrix_sha256(matrix),
        "approval_facts": copy.deepcopy(approval_facts) if approval_facts else {},
        "approval_mode": approval_mode,
        "verified_signers": [dict(signers[n]) for n in sorted(signers) if n in counted or n == incident_commander],
    }
    decision["message"] = explain(decision, valid, emergency_problems)
    return decision


def explain(decision, valid, emergency_problems=()):
    """One sentence an operator can act on: what the rule needs, who counted, what is missing."""
    label = decision["rule_label"]
    if decision["approval_path"] == "auto_approval":
        return "%s auto-approved: requester %s is on call (rule %s)" % (label, decision["requested_by"],
                                                                        decision["rule"])
    if decision["approval_path"] == "emergency_override":
        return ("%s approved by emergency override (rule %s, incident commander %s); retroactive approval by %s "
                "due %s; post-incident review required"
                % (label, decision["rule"], decision["incident_commander"],
                   ", ".join(decision["retroactive_roles"]) or "nobody", decision["retroactive_approval_due"]))
    have = _people(sorted(valid), valid)
    if decision["approved"]:
        return "%s approved (rule %s): roles %s covered by %s" % (
            label, decision["rule"], ", ".join(decision["required_roles"]),
            ", ".join("%s (%s)" % (decision["role_assignments"][r], r) for r in decision["required_roles"]))
    msg = "%s needs roles %s; have: %s" % (label, ", ".join(decision["required_roles"]), have)
    msg += "; missing: %s" % ", ".join(decision["missing_roles"])
    if decision["ignored_approvals"]:
        msg += "; ignored: %s" % ", ".join("%s (%s)" % (i["name"], i["reason"]) for i in decision["ignored_approvals"])
    if emergency_problems:
        msg += "; emergency override refused: %s" % "; ".join(emergency_problems)
    return msg + " (rule %s)" % decision["rule"]
