# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""JSON Schema (draft 2020-12) of a rollback receipt, the one place it is defined.

Kept as a Python dict so it travels inside module_utils (AnsiballZ ships no data files).
Fields: the KFM runbook's minimum receipt, the AUREUS runbook's rollback manifests, plus
outcome, approval decision, emergency, evidence digests, signing and redaction status.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.governed.rollback.plugins.module_utils._common import ROLLBACK_TYPE_NAMES

RECEIPT_VERSION = 1
PREDICATE_TYPE = "https://governed.rollback/rollback-receipt/v1"

ROLLBACK_TYPES = list(ROLLBACK_TYPE_NAMES)
OUTCOMES = ["succeeded", "failed", "denied"]
VERIFICATION_KEYS = ["health", "policy_invariants", "contract_smoke", "health_check", "smoke_tests", "user_validation"]
# The KFM runbook says pass|fail, the AUREUS one passed/pending: both vocabularies are accepted.
VERIFICATION_RESULTS = ["pass", "fail", "passed", "failed", "pending", "inconclusive", "skipped", "not_run",
                        "not_required"]

_TIMESTAMP = {"type": "string", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$"}
_SHA256_HEX = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
# A digest (sha256:<hex>, optionally image@sha256:<hex>) or a git commit SHA (40 or 64 hex).
_REF = {"type": "string", "pattern": r"^(([^\s@]+@)?sha256:[0-9a-f]{64}|[0-9a-f]{40}|[0-9a-f]{64})$"}
_TEXT = {"type": "string", "minLength": 1, "maxLength": 4096}
_NAME = {"type": "string", "minLength": 1, "maxLength": 256}


def _nullable(schema):
    return {"anyOf": [schema, {"type": "null"}]}


_RESULT = {"enum": ["pass", "fail", "inconclusive"]}
_NUMBER_OR_NULL = {"type": ["number", "null"]}
# What rollback_verify measured (metric analysis, contracts, policy invariants, logs clean): the values behind the
# pass/fail/inconclusive of the verification map.
_VERIFICATION_DETAILS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "metrics": {"type": "array", "items": {
            "type": "object",
            "required": ["name", "query", "result", "baseline", "value", "measurements", "condition"],
            "properties": {
                "name": _NAME, "query": _TEXT, "result": _RESULT, "reason": _nullable(_TEXT),
                "baseline": _NUMBER_OR_NULL, "value": _NUMBER_OR_NULL, "condition": {"type": "string"},
                "measurements": {"type": "array", "items": {
                    "type": "object", "required": ["at", "value"],
                    "properties": {"at": {"type": "string"}, "value": _NUMBER_OR_NULL,
                                   "phase": {"type": "string"}}}},
            }}},
        "contracts": {"type": "array", "items": {
            "type": "object",
            "required": ["name", "url", "status", "result", "failed"],
            "properties": {"name": _NAME, "url": _TEXT, "status": {"type": "integer"}, "result": _RESULT,
                           "failed": {"type": "array", "items": {"type": "string"}}}}},
        "policy_invariants": {"type": "array", "items": {
            "type": "object",
            "required": ["endpoint", "result", "decision_id"],
            "properties": {"endpoint": _TEXT, "result": _RESULT, "decision_id": _nullable(_NAME),
                           "reason": _nullable(_TEXT)}}},
        "logs": _nullable({
            "type": "object",
            "required": ["result", "errors_before", "errors_after"],
            "properties": {"result": _RESULT, "errors_before": {"type": "integer", "minimum": 0},
                           "errors_after": {"type": "integer", "minimum": 0}}}),
    },
}


RECEIPT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": PREDICATE_TYPE,
    "title": "governed.rollback rollback receipt",
    "type": "object",
    "additionalProperties": False,
    "required": [
        "receipt_version", "rollback_id", "run_type", "rollback_type", "outcome", "incident_id", "requested_by",
        "approved_by", "approver", "started_at", "completed_at", "timestamp", "environment", "reason", "current_ref",
        "rollback_target_ref", "changed_surfaces", "verification", "notes", "component", "from_version", "to_version",
        "approval", "emergency", "retroactive_approval_due", "post_incident_review", "evidence", "signing",
        "redaction",
    ],
    "properties": {
        "receipt_version": {"const": RECEIPT_VERSION},
        "rollback_id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"},
        "run_type": {"type": "string", "pattern": r"^[a-z][a-z0-9_]*(\.[a-z0-9_-]+)+$"},
        "rollback_type": {"enum": ROLLBACK_TYPES},
        "outcome": {"enum": OUTCOMES},
        "incident_id": _nullable(_NAME),
        "requested_by": _NAME,
        "approved_by": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "roles"],
                "properties": {"name": _NAME, "roles": {"type": "array", "items": _NAME}},
            },
        },
        "approver": _nullable(_TEXT),
        "started_at": _TIMESTAMP,
        "completed_at": _TIMESTAMP,
        "timestamp": _TIMESTAMP,
        "environment": _NAME,
        "reason": _TEXT,
        "current_ref": _nullable(_REF),
        "rollback_target_ref": _nullable(_REF),
        "changed_surfaces": {"type": "array", "uniqueItems": True,
                             "items": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]*$"}},
        "verification": {
            "type": "object",
            "required": VERIFICATION_KEYS,
            "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"},
            "additionalProperties": {"enum": VERIFICATION_RESULTS},
        },
        "notes": _nullable(_TEXT),
        "component": _NAME,
        "from_version": _nullable(_NAME),
        "to_version": _nullable(_NAME),
        "config_type": _nullable(_NAME),
        "changed_keys": _nullable({"type": "array", "items": _NAME}),
        "migration_reverted": _nullable(_NAME),
        "backup_location": _nullable(_TEXT),
        "data_loss": _nullable(_TEXT),
        "downtime": _nullable(_NAME),
        "dba_approval": _nullable(_NAME),
        "policy_name": _nullable(_NAME),
        "security_review": _nullable(_NAME),
        "affected_users": _nullable({"type": "integer", "minimum": 0}),
        "snapshot_id": _nullable(_NAME),
        "verification_details": _nullable(_VERIFICATION_DETAILS),
        # GitOps rollbacks (gitops_revert, deploy_freeze): the pull request, its merge, the deploy freeze.
        "pull_request_url": _nullable(_TEXT),
        "pull_request_number": _nullable({"type": "integer", "minimum": 1}),
        "merge_sha": _nullable({"type": "string", "pattern": "^[0-9a-f]{40}([0-9a-f]{24})?$"}),
        "freeze": _nullable({"type": "object"}),
        "failure": _nullable({
            "type": "object",
            "additionalProperties": False,
            "properties": {"task": _nullable(_TEXT), "message": _nullable(_TEXT)},
        }),
        "approval": _nullable({
            "type": "object",
            "required": ["approved", "rule", "approval_path", "missing_roles", "emergency", "requested_by"],
            "properties": {
                "approved": {"type": "boolean"},
                "rule": _NAME,
                "approval_path": {"enum": ["approval", "auto_approval", "emergency_override", "denied"]},
                "missing_roles": {"type": "array", "items": _NAME},
                "emergency": {"type": "boolean"},
                "requested_by": _NAME,
            },
        }),
        "emergency": {"type": "boolean"},
        "retroactive_approval_due": _nullable(_TIMESTAMP),
        "post_incident_review": {"enum": ["required", "not_required"]},
        "evidence": _nullable({
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "archive": _nullable(_TEXT),
                "archive_sha256": _nullable(_SHA256_HEX),
                "manifest": _nullable(_TEXT),
                "manifest_sha256": _nullable(_SHA256_HEX),
            },
        }),
        # Optional (issue 20): where the evidence archive and pack manifest are kept in object storage.
        "evidence_storage": _nullable({
            "type": "object",
            "additionalProperties": False,
            "required": ["archive_url", "archive_version_id", "manifest_url", "manifest_version_id", "retention_mode",
                         "retain_until"],
            "properties": {
                "archive_url": _TEXT,
                "archive_version_id": _nullable(_NAME),
                "manifest_url": _TEXT,
                "manifest_version_id": _nullable(_NAME),
                "retention_mode": _nullable({"enum": ["COMPLIANCE", "GOVERNANCE"]}),
                "retain_until": _nullable(_TIMESTAMP),
            },
        }),
        "signing": {
            "type": "object",
            "additionalProperties": False,
            "required": ["required", "signed", "keyid", "predicate_type"],
            "properties": {
                "required": {"type": "boolean"},
                "signed": {"type": "boolean"},
                "keyid": _nullable({"type": "string", "pattern": "^[0-9a-f]{64}$"}),
                "predicate_type": {"const": PREDICATE_TYPE},
            },
        },
        "redaction": {
            "type": "object",
            "additionalProperties": False,
            "required": ["status", "rules", "masked_fields"],
            "properties": {
                "status": {"enum": ["passed", "masked"]},
                "rules": _NAME,
                "masked_fields": {"type": "array", "items": {"enum": ["failure.message"]}},
            },
        },
        "details": {"type": "object"},
    },
    # CONDITIONS[i] explains allOf[i] in error messages.
    "allOf": [
        {   # A succeeded rollback was approved, knows both refs and has its evidence archive digest.
            "if": {"required": ["outcome"], "properties": {"outcome": {"const": "succeeded"}}},
            "then": {"properties": {
                "approval": {"type": "object", "required": ["approved"], "properties": {"approved": {"const": True}}},
                "current_ref": {"type": "string"},
                "rollback_target_ref": {"type": "string"},
                "evidence": {"type": "object", "required": ["archive_sha256"],
                             "properties": {"archive_sha256": {"type": "string"}}},
            }},
        },
        {   # A denied receipt carries the decision that denied it.
            "if": {"required": ["outcome"], "properties": {"outcome": {"const": "denied"}}},
            "then": {"properties": {
                "approval": {"type": "object", "properties": {"approved": {"const": False}}},
            }},
        },
        {   # An emergency override always carries its retroactive approval deadline and review.
            "if": {"required": ["emergency"], "properties": {"emergency": {"const": True}}},
            "then": {"properties": {
                "retroactive_approval_due": {"type": "string"},
                "post_incident_review": {"const": "required"},
            }},
        },
        {   # Required signing means signed: an unsigned receipt only exists when signing was optional.
            "if": {"required": ["signing"],
                   "properties": {"signing": {"required": ["required"], "properties": {"required": {"const": True}}}}},
            "then": {"properties": {"signing": {"properties": {"signed": {"const": True},
                                                               "keyid": {"type": "string"}}}}},
        },
    ],
}

CONDITIONS = [
    "when outcome is succeeded",
    "when outcome is denied",
    "when emergency is true",
    "when signing is required",
]
