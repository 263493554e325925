# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollback receipt's verification block, from a run record's checks.

The shared steps' receipt task used to compute this block with a dozen chained Jinja expressions and task variables.
Ansible compiles every template again in every task worker; the block was 12 of the 67 compilations of each receipt
task (the draft before the change and the receipt after it). The same rules as one Python function: one template,
and unit-tested with plain data.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: receipt_verification
author: governed.rollback maintainers
version_added: 0.1.0
short_description: The verification block of a rollback receipt, from the run's recorded checks
description:
  - Maps the checks a rollback recorded (the type's own checklist, the health and smoke checks and the measured
    ones) to the receipt's C(verification) block, whose values are V(pass), V(fail), V(inconclusive), V(not_run),
    V(pending) or V(not_required) for the runbook's fields and the type's own check results under their names.
  - C(health) passes only when every check of the type's checklist is V(true) and the health endpoint did not fail;
    failing or inconclusive metrics make it so too.
  - C(contract_smoke) combines the smoke tests and the measured contract checks; C(policy_invariants) the type's
    own check of that name and the measured one. A V(fail) of either wins over V(inconclusive), which wins over
    V(pass).
  - C(user_validation) is V(pending) for a P0 or P1 incident, V(not_required) otherwise.
options:
  _input:
    description:
      - The run record of M(governed.rollback.rollback_receipt)'s caller, the shared steps' C(rollback_steps_run).
      - Its C(checks) maps check names to results; C(checklist) lists the type's own checks; C(priority) is the
        incident's priority.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Write the receipt with the verification block of this run
  governed.rollback.rollback_receipt:
    ledger: /var/lib/rollback/ledger.jsonl
    rollback_id: "{{ run.rollback_id }}"
    rollback_type: deployment
    outcome: succeeded
    incident_id: INC-1
    requested_by: alice
    verification: "{{ run | governed.rollback.receipt_verification }}"
  vars:
    run:
      rollback_id: rollback-20261130-101500-a1b2c3
      priority: P1
      checklist: [rollout_complete]
      checks: {rollout_complete: true, health_check: passed, smoke_tests: skipped}
"""

RETURN = r"""
_value:
  description: The receipt's verification block.
  type: dict
  sample:
    health: pass
    contract_smoke: not_run
    metrics_normal: not_run
    logs_clean: not_run
    health_check: passed
    smoke_tests: skipped
    user_validation: pending
    rollout_complete: true
    policy_invariants: not_run
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError
from ansible_collections.governed.rollback.plugins.module_utils._analysis import FAIL, INCONCLUSIVE, PASS, overall

NOT_RUN = "not_run"
_SMOKE = {"passed": PASS, "failed": FAIL}


def worst(results):
    """``fail`` over ``inconclusive`` over ``pass`` (rollback_verify's own ordering); ``not_run`` when none of them
    is there."""
    return overall([result for result in results if result in (PASS, FAIL, INCONCLUSIVE)]) or NOT_RUN


def _true(value):
    # Jinja's `equalto true` compared with ==, so 1 counted as true and "true" did not; kept exactly.
    return value == 1


def receipt_verification(run):
    """The receipt's verification block for the run record ``run`` (see DOCUMENTATION)."""
    if not isinstance(run, Mapping):
        raise AnsibleFilterError("receipt_verification expects the run record (a dict), got %s" % type(run).__name__)
    checks = {} if run.get("checks") is None else run["checks"]
    checklist = [] if run.get("checklist") is None else run["checklist"]
    if not isinstance(checks, Mapping) or not isinstance(checklist, (list, tuple)):
        raise AnsibleFilterError("receipt_verification: the run record's checks must be a dict and its checklist a "
                                 "list, got %s and %s" % (type(checks).__name__, type(checklist).__name__))
    metrics = checks.get("metrics_normal", NOT_RUN)
    type_checks = [checks.get(name, False) for name in checklist]
    health_ok = bool(type_checks) and all(_true(value) for value in type_checks) and \
        checks.get("health_check", "skipped") != "failed"
    if not health_ok:
        health = "fail"
    elif metrics in ("fail", "inconclusive"):
        health = metrics
    else:
        health = "pass"
    if "policy_invariants" in checks:
        own_invariants = "pass" if checks["policy_invariants"] else "fail"
    else:
        own_invariants = NOT_RUN
    verification = {
        "health": health,
        "contract_smoke": worst([_SMOKE.get(checks.get("smoke_tests", NOT_RUN), NOT_RUN),
                                 checks.get("contract_checks", NOT_RUN)]),
        "metrics_normal": metrics,
        "logs_clean": checks.get("logs_clean", NOT_RUN),
        "health_check": checks.get("health_check", NOT_RUN),
        "smoke_tests": checks.get("smoke_tests", NOT_RUN),
        "user_validation": "pending" if run.get("priority") in ("P0", "P1") else "not_required",
    }
    verification.update((name, checks.get(name, NOT_RUN)) for name in checklist)
    verification["policy_invariants"] = worst([own_invariants, checks.get("measured_policy_invariants", NOT_RUN)])
    return verification


class FilterModule(object):
    def filters(self):
        return {"receipt_verification": receipt_verification}
