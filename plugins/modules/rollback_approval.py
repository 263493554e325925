#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: rollback_approval
short_description: Decide whether a rollback may proceed, from the AUREUS approval matrix, failing closed
version_added: 0.1.0
author: governed.rollback maintainers (@governed)
description:
  - Evaluates the runbook's rollback approval matrix for one request and returns the decision, ready to be put in
    a receipt by M(governed.rollback.rollback_receipt).
  - "The default matrix has one row per rollback type: C(deployment_last) (auto-approved for an on-call engineer),
    C(deployment_older) (engineering_lead), C(configuration) (devops_lead), C(database) (dba + engineering_lead),
    C(policy) (governance_lead + security) and C(state) (data_owner + approver)."
  - Every required role must be covered by a distinct approver who holds it in O(roster); roles are never taken
    from the caller's say-so. Names not in the roster are ignored.
  - The requester never approves their own rollback; the only exception is the on-call engineer's auto-approval
    of a rollback to the last version.
  - An emergency override is accepted only for P0, with an O(incident_commander) (someone other than the requester,
    holding the C(incident_commander) role) and the type's extra approver (database C(cto), policy C(ciso), state
    C(engineering_lead)). It returns RV(retroactive_approval_due) (4 hours after now) and
    RV(post_incident_review=required). If the ordinary approvals already suffice, no override is used.
  - A denial fails the task with a message naming what is missing, and still returns every decision field, so an
    C(always:) block can record a denied receipt from the registered result.
  - The module never changes anything; check mode evaluates exactly the same way.
extends_documentation_fragment:
  - governed.rollback.attributes
  - governed.rollback.attributes.ACTIONGROUP_ROLLBACK
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  rollback_type:
    description: Kind of rollback being requested.
    type: str
    required: true
    choices: [deployment, configuration, database, policy, state, gitops]
  requested_by:
    description: Name of the person requesting the rollback (as written in O(roster)).
    type: str
    required: true
  approvals:
    description: Names of the people who approved. Their roles are looked up in O(roster).
    type: list
    elements: str
    default: []
  roster:
    description:
      - Who holds which role, as a mapping of person name to a list of role names.
      - "Role names used by the default matrix: C(on_call_engineer), C(engineering_lead), C(devops_lead), C(dba),
        C(governance_lead), C(security), C(data_owner), C(approver), C(incident_commander), C(cto), C(ciso)."
      - "An entry may also be a dict C({roles: [...], keys: ['ssh-ed25519 AAAA...']}): the keys the person signs
        approvals with."
      - Names are compared after Unicode NFKC normalization and case folding; names with invisible or control
        characters are refused. The requester must be in the roster.
    type: dict
    required: true
  priority:
    description: Incident priority. Only P0 allows an emergency override with the default matrix.
    type: str
    choices: [P0, P1, P2, P3]
  incident_commander:
    description: Name of the incident commander who declared the emergency (needed for an emergency override).
    type: str
  emergency_override:
    description: Ask for the emergency override when the ordinary approvals are not complete.
    type: bool
    default: false
  approval_mode:
    description:
      - C(signed) counts only approvals proven by a signed statement bound to this plan (O(signed_approvals),
        O(signed_approvals_dir)), verified against the public keys the roster (or O(allowed_signers)) lists for
        each person. Typed names in O(approvals) without a valid statement are ignored, with the reason.
      - C(asserted) takes the names in O(approvals) as typed. It is refused in a production environment
        (O(environment) C(prod) or C(production)); inventories for sandboxes and drills may choose it.
      - The on-call engineer's auto-approval of a rollback to the last version needs no statement in either mode.
    type: str
    choices: [signed, asserted]
    default: signed
  environment:
    description: The environment the rollback runs in; C(asserted) approvals are refused for C(prod) and C(production).
    type: str
  launched_by:
    description:
      - The identity the platform launched the job as - under AWX the job's C(awx_user_name) (or C(tower_user_name)).
      - When given, O(requested_by) must be the same person (after Unicode NFKC and case folding), or the request is
        refused.
    type: str
  plan:
    description:
      - What the signed statements must approve - C(target) (for example C(Deployment aureus/aureus-frontend)),
        C(from_ref), C(to_ref) and C(binding), as the action module's plan returned them. Needed with
        O(approval_mode=signed); with it the module also returns RV(statement), the text an approver signs.
    type: dict
  incident_id:
    description: The incident the statements must name.
    type: str
  signed_approvals:
    description:
      - Signed statements, each a dict with C(statement) (the exact text that was signed) and C(signature) (the armored
        output of C(ssh-keygen -Y sign -n governed-rollback-approval)).
    type: list
    elements: dict
    default: []
  signed_approvals_dir:
    description:
      - A directory of signed statements - every C(*.json) file with its C(*.json.sig) beside it.
    type: path
  allowed_signers:
    description:
      - An OpenSSH C(allowed_signers) file (C(principal[,principal] [namespaces="..."] ssh-ed25519 AAAA...)) listing
        approvers' public keys, in addition to the C(keys) of roster entries.
    type: path
  statement_ttl_hours:
    description: Lifetime of the RV(statement) this module proposes for signing (at most 24 hours are accepted).
    type: int
    default: 1
  approval_facts:
    description:
      - What the matrix needs to know about this rollback, as returned by the action module's plan
        (RV(governed.rollback.rollout_undo#module:approval_facts) and the like). See C(docs/plan-contract.md).
      - For O(rollback_type=deployment) it must hold C(to_revision) and C(previous_revision), both resolved from the
        rollout history; the row is C(deployment_last) when they are equal (the last good version), else
        C(deployment_older). The module never guesses which row applies.
      - The other rollback types have one row each and need no facts.
    type: dict
  matrix:
    description:
      - Rows replacing those of the default matrix, keyed by row name (C(deployment_last), C(deployment_older),
        C(configuration), C(database), C(policy), C(state)).
      - "Each row: C(required_roles) (list), optional C(auto_approved_roles) (list; a requester holding them is
        auto-approved), C(label), and C(emergency) (C(null) disables the override, or a dict with C(priorities),
        C(extra_roles), C(retroactive_hours))."
    type: dict
notes:
  - The decision includes C(matrix_sha256), the digest of the matrix that decided, so a receipt shows whether the
    default matrix was overridden.
seealso:
  - module: governed.rollback.rollback_receipt
"""

EXAMPLES = r"""
- name: Approve a database rollback (DBA and engineering lead)
  governed.rollback.rollback_approval:
    rollback_type: database
    requested_by: oncall
    approvals: [dba, eng-lead]
    roster: "{{ rollback_roster }}"
    priority: P1
  register: approval

- name: On-call rolls the frontend back to the last version (auto-approved)
  governed.rollback.rollback_approval:
    rollback_type: deployment
    requested_by: oncall
    roster: "{{ rollback_roster }}"
    approval_facts: "{{ plan.approval_facts }}"  # registered from rollout_undo in check mode

- name: P0 emergency override of a policy rollback, CISO approving
  governed.rollback.rollback_approval:
    rollback_type: policy
    requested_by: oncall
    approvals: [ciso]
    roster: "{{ rollback_roster }}"
    priority: P0
    incident_commander: ic
    emergency_override: true
  register: approval

- name: Record a denied receipt from a failed approval
  block:
    - name: Decide
      governed.rollback.rollback_approval:
        rollback_type: configuration
        requested_by: oncall
        approvals: "{{ approvals }}"
        roster: "{{ rollback_roster }}"
      register: approval
  always:
    - name: Receipt
      governed.rollback.rollback_receipt:
        ledger: /var/lib/governed-rollback/ledger.jsonl
        outcome: "{{ 'denied' if approval is failed else 'succeeded' }}"
        approval: "{{ approval }}"
        environment: sandbox
        component: configuration
        reason: Incorrect retention policy
"""

RETURN = r"""
approved:
  description: Whether the rollback may proceed.
  returned: always
  type: bool
  sample: false
rule:
  description: The matrix row that decided.
  returned: always
  type: str
  sample: database
missing_roles:
  description: Required roles no valid approver covers (empty when approved).
  returned: always
  type: list
  elements: str
  sample: [engineering_lead]
emergency:
  description: Whether the decision rests on the emergency override.
  returned: always
  type: bool
  sample: false
retroactive_approval_due:
  description: With an emergency override, when the retroactive approval is due (UTC, 4 hours after now).
  returned: always
  type: str
  sample: "2024-01-15T14:30:45Z"
post_incident_review:
  description: C(required) after an emergency override, otherwise C(not_required).
  returned: always
  type: str
  sample: required
approved_by:
  description: Approvals that counted (in the roster, not the requester), with the roles the roster gives them.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "dba", "roles": ["dba"]}]
message:
  description: The decision in one sentence (also the failure message on a denial).
  returned: always
  type: str
  sample: "database rollback needs roles dba, engineering_lead; have: dba (dba); missing: engineering_lead (rule database)"
statement:
  description:
    - With O(approval_mode=signed), the statement an approver signs for this plan (save it byte for byte, then
      C(ssh-keygen -Y sign -f ~/.ssh/id_ed25519 -n governed-rollback-approval statement.json)). It names the rollback
      type, target, from and to references, the digest of the plan's binding, the incident and an expiry.
  returned: always
  type: str
rejected_statements:
  description: Signed statements that did not count, each with its index, the signer (when known) and the reason.
  returned: always
  type: list
  elements: dict
  sample: [{"index": 0, "name": "eng-lead", "reason": "it expired at 2024-01-15T09:00:00Z"}]
decision:
  description:
    - The whole decision, ready for the O(governed.rollback.rollback_receipt#module:approval) option.
    - Keys include approved, rule, rule_label, approval_path (approval, auto_approval, emergency_override, denied),
      rollback_type, requested_by, approved_by, role_assignments, required_roles, missing_roles, ignored_approvals,
      priority, incident_commander, emergency_requested, emergency, emergency_extra_roles, retroactive_approval_due,
      retroactive_roles, post_incident_review, evaluated_at, matrix_sha256, approval_facts, approval_mode,
      verified_signers (name, key_sha256 - the hex sha256 of the public key blob -, statement sha256, expiry of each signed approval that counted),
      rejected_statements, message.
  returned: always
  type: dict
"""

import glob
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.governed.rollback.plugins.module_utils._approval import (
    APPROVAL_MODES,
    PRIORITIES,
    ROLLBACK_TYPES,
    ApprovalError,
    evaluate,
    roster_keys,
)
from ansible_collections.governed.rollback.plugins.module_utils import _approval_statement as stmt
from ansible_collections.governed.rollback.plugins.module_utils._common import fail_from_exception

RETURN_KEYS = ("approved", "rule", "missing_roles", "emergency", "retroactive_approval_due", "post_incident_review",
               "approved_by", "message")


PRODUCTION_ENVIRONMENTS = ("prod", "production")


def read_signed_dir(path):
    """``{statement, signature}`` pairs from ``*.json`` files with their ``*.json.sig`` beside them."""
    if not os.path.isdir(path):
        raise ApprovalError("signed_approvals_dir %s is not a directory" % path)
    found = []
    for statement_path in sorted(glob.glob(os.path.join(path, "*.json"))):
        signature_path = statement_path + ".sig"
        if not os.path.exists(signature_path):
            raise ApprovalError("%s has no signature %s beside it; sign it with ssh-keygen -Y sign -n %s"
                                % (statement_path, signature_path, stmt.NAMESPACE))
        with open(statement_path, "rb") as handle:
            statement = handle.read(stmt.MAX_STATEMENT_BYTES + 1).decode("utf-8", "replace")
        with open(signature_path, "r") as handle:
            signature = handle.read(16384)
        found.append({"statement": statement, "signature": signature})
    return found


def verify_statements(params, expected):
    allowed = {}
    if params["allowed_signers"]:
        with open(params["allowed_signers"], "r") as handle:
            allowed = stmt.parse_allowed_signers(handle.read())
    signed = list(params["signed_approvals"])
    if params["signed_approvals_dir"]:
        signed.extend(read_signed_dir(params["signed_approvals_dir"]))
    return stmt.verify_signed_approvals(signed, expected, roster_keys(params["roster"], allowed))


def decide(params):
    """The decision, the statement to sign for this plan (signed mode) and the statements that did not count."""
    mode = params["approval_mode"]
    if mode == "asserted" and (params["environment"] or "").strip().lower() in PRODUCTION_ENVIRONMENTS:
        raise ApprovalError("typed (asserted) approvals are not accepted in environment %s: approvers sign a statement "
                            "for this plan (approval_mode=signed); see the collection's docs/approvals.md"
                            % params["environment"])
    verified, rejected, statement = None, [], None
    if mode == "signed":
        plan = params["plan"] or {}
        if not plan.get("target"):
            raise ApprovalError("signed approvals need the plan they approve (plan: target, from_ref, to_ref, binding)")
        expected = stmt.build_statement(params["rollback_type"], plan.get("target"), plan.get("from_ref"),
                                        plan.get("to_ref"), plan.get("binding"), params["incident_id"],
                                        stmt.default_expiry(hours=min(max(params["statement_ttl_hours"], 1),
                                                                      stmt.MAX_TTL_HOURS)))
        statement = stmt.statement_bytes(expected).decode("utf-8")
        verified, rejected = verify_statements(params, expected)
    decision = evaluate(
        params["rollback_type"], params["requested_by"], params["approvals"], params["roster"],
        priority=params["priority"], incident_commander=params["incident_commander"],
        emergency_override=params["emergency_override"], approval_facts=params["approval_facts"],
        matrix=params["matrix"], approval_mode=mode, verified_signers=verified, launched_by=params["launched_by"],
    )
    decision["rejected_statements"] = rejected
    if rejected and not decision["approved"]:
        decision["message"] += "; statements not counted: %s" % "; ".join(
            "#%d%s: %s" % (r["index"], " (%s)" % r["name"] if r["name"] else "", r["reason"]) for r in rejected)
    return decision, statement


def main():
    module = AnsibleModule(
        argument_spec=dict(
            rollback_type=dict(type="str", required=True, choices=list(ROLLBACK_TYPES)),
            requested_by=dict(type="str", required=True),
            approvals=dict(type="list", elements="str", default=[]),
            roster=dict(type="dict", required=True),
            priority=dict(type="str", choices=list(PRIORITIES)),
            incident_commander=dict(type="str"),
            emergency_override=dict(type="bool", default=False),
            approval_facts=dict(type="dict"),
            matrix=dict(type="dict"),
            approval_mode=dict(type="str", choices=list(APPROVAL_MODES), default="signed"),
            environment=dict(type="str"),
            launched_by=dict(type="str"),
            plan=dict(type="dict"),
            incident_id=dict(type="str"),
            signed_approvals=dict(type="list", elements="dict", default=[]),
            signed_approvals_dir=dict(type="path"),
            allowed_signers=dict(type="path"),
            statement_ttl_hours=dict(type="int", default=1),
        ),
        supports_check_mode=True,
    )
    try:
        decision, statement = decide(module.params)
    except (OSError, IOError) as exc:
        module.fail_json(msg="cannot read the signed approvals: %s" % exc, approved=False)
    except Exception as exc:  # pylint: disable=broad-except  # a RollbackError says what to do; anything else is a bug
        fail_from_exception(module, exc, approved=False)

    result = dict((key, decision[key]) for key in RETURN_KEYS)
    result.update(changed=False, decision=decision, statement=statement,
                  rejected_statements=decision["rejected_statements"])
    if not decision["approved"]:
        module.fail_json(msg=decision["message"], **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
