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
    choices: [deployment, configuration, database, policy, state]
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
decision:
  description:
    - The whole decision, ready for the O(governed.rollback.rollback_receipt#module:approval) option.
    - Keys include approved, rule, rule_label, approval_path (approval, auto_approval, emergency_override, denied),
      rollback_type, requested_by, approved_by, role_assignments, required_roles, missing_roles, ignored_approvals,
      priority, incident_commander, emergency_requested, emergency, emergency_extra_roles, retroactive_approval_due,
      retroactive_roles, post_incident_review, evaluated_at, matrix_sha256, approval_facts, message.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.governed.rollback.plugins.module_utils._approval import (
    PRIORITIES,
    ROLLBACK_TYPES,
    evaluate,
)
from ansible_collections.governed.rollback.plugins.module_utils._common import RollbackError, fail_from_exception

RETURN_KEYS = ("approved", "rule", "missing_roles", "emergency", "retroactive_approval_due", "post_incident_review",
               "approved_by", "message")


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
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        decision = evaluate(
            params["rollback_type"], params["requested_by"], params["approvals"], params["roster"],
            priority=params["priority"], incident_commander=params["incident_commander"],
            emergency_override=params["emergency_override"], approval_facts=params["approval_facts"],
            matrix=params["matrix"],
        )
    except RollbackError as exc:
        fail_from_exception(module, exc, approved=False)

    result = dict((key, decision[key]) for key in RETURN_KEYS)
    result.update(changed=False, decision=decision)
    if not decision["approved"]:
        module.fail_json(msg=decision["message"], **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
