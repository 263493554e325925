# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rollback receipts: build, guard against secrets, validate, sign, chain into a ledger, verify.

Layout on disk (all next to each other):
  <ledger>              JSONL, one RFC 8785 canonical entry per line:
                        {seq, prev, rollback_id, recorded_at, receipt_sha256, receipt, signatures, entry_sha256}
                        entry_sha256 = sha256(JCS(entry without entry_sha256)); prev = previous entry_sha256;
                        signatures = the DSSE signatures over the receipt's in-toto Statement (the payload is
                        rebuilt from the receipt, so the ledger does not store the receipt twice).
  <ledger>.head         DSSE envelope over {size, head} of the whole ledger, rewritten after every append,
                        so cutting entries off the tail no longer matches the signed size.
  <dir>/<id>.intoto.jsonl   the receipt's DSSE envelope (in-toto Statement v1) as a one-line bundle.

Pure functions take bytes and dicts; the few I/O helpers (locking, fsync, atomic replace) sit at the end.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import copy
import errno
import fcntl
import json
import math
import mmap
import os
import re
import stat
import sys
import tempfile
import traceback
import unicodedata

from ansible_collections.governed.rollback.plugins.module_utils._common import (
    ROLLBACK_TYPES, RollbackError, new_rollback_id, sha256_hex, utc_now, utc_stamp,
)
from ansible_collections.governed.rollback.plugins.module_utils._redact import redact_text, scan_text
from ansible_collections.governed.rollback.plugins.module_utils._receipt_schema import (
    CONDITIONS,
    PREDICATE_TYPE,
    RECEIPT_SCHEMA,
    RECEIPT_VERSION,
    VERIFICATION_KEYS,
)

IMPORT_ERRORS = {}
try:
    import rfc8785
except ImportError:  # pragma: no cover - exercised only without the library
    rfc8785 = None
    IMPORT_ERRORS["rfc8785"] = traceback.format_exc()
try:
    import jsonschema
except ImportError:  # pragma: no cover
    jsonschema = None
    IMPORT_ERRORS["jsonschema"] = traceback.format_exc()
try:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
except ImportError:  # pragma: no cover
    IMPORT_ERRORS["cryptography"] = traceback.format_exc()
# securesystemslib.signer imports every signer it ships; its AWS KMS signer imports boto3, 0.1-0.2 s that receipts
# (signed with local ed25519 keys) never use. Unless boto3 is loaded already, it is hidden while securesystemslib
# loads: the AWS signer then records boto3 as missing, and S3 storage (_s3) still imports boto3 for real on first use.
_HIDE_BOTO3 = "boto3" not in sys.modules
if _HIDE_BOTO3:
    sys.modules["boto3"] = None
try:
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError
    from securesystemslib.signer import CryptoSigner, SSlibKey
except ImportError:  # pragma: no cover
    IMPORT_ERRORS["securesystemslib"] = traceback.format_exc()
finally:
    if _HIDE_BOTO3 and sys.modules.get("boto3", 0) is None:
        del sys.modules["boto3"]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
STATEMENT_PAYLOAD_TYPE = "application/vnd.in-toto+json"
CHECKPOINT_PAYLOAD_TYPE = "application/vnd.governed.rollback.ledger-checkpoint+json"
CHECKPOINT_TYPE = "https://governed.rollback/ledger-checkpoint/v1"
GENESIS = "0" * 64
GUARD_RULES = "receipt-secret-guard/v1"
ENTRY_KEYS = ("seq", "prev", "rollback_id", "recorded_at", "receipt_sha256", "receipt", "signatures", "entry_sha256")


class ReceiptError(RollbackError):
    """A receipt or key that must not be written/used; the message says which field and what to do."""

    def __init__(self, msg, fields=None, secret=False):
        super(ReceiptError, self).__init__(msg)
        self.msg = msg
        self.fields = fields or []
        self.secret = secret


class LedgerError(RollbackError):
    """The ledger does not verify; appending to it is refused."""

    def __init__(self, msg, result=None):
        super(LedgerError, self).__init__(msg)
        self.msg = msg
        self.result = result or {}


def missing_libraries():
    """Names of the Python libraries this module_utils needs but cannot import."""
    return sorted(IMPORT_ERRORS)


# --------------------------------------------------------------------------- canonical JSON and digests

def canonical(obj):
    """RFC 8785 (JCS) bytes: the only serialization that is ever hashed or signed."""
    try:
        return rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise ReceiptError("value cannot be canonicalized as JSON (RFC 8785): %s" % exc)


def receipt_sha256(receipt):
    return sha256_hex(canonical(receipt))


# --------------------------------------------------------------------------- secret guard
# A receipt that looks like it holds a secret is refused, never redacted into something half-true. The
# patterns are the collection's one redaction layer (_redact); receipts add a stricter random-string check.
# Messages name the field and the rule, never the value.

_SECRET_KEY_NAME = re.compile(
    r"(?i)(?:^|[_.-])(?:password|passwd|passphrase|secret|token|api[_-]?key|private[_-]?key|credentials?)$")
# Random base64-like runs: 20+ characters mixing upper case, lower case and digits that switch class as often
# as random text does (CamelCase words and dated names switch rarely).
_HIGH_ENTROPY_TOKEN = re.compile(r"[A-Za-z0-9+/=_-]{20,}")
_MIXED = (re.compile(r"[A-Z]"), re.compile(r"[a-z]"), re.compile(r"[0-9]"))
_HEX_ONLY = re.compile(r"^[0-9a-fA-F]+$")


def _entropy(text):
    counts = {}
    for char in text:
        counts[char] = counts.get(char, 0) + 1
    return -sum(c / float(len(text)) * math.log(c / float(len(text)), 2) for c in counts.values())


def secret_findings(value, path=""):
    """[(field_path, rule)] for every string (or key) that looks like a secret. Pure, never returns values."""
    findings = []
    if isinstance(value, dict):
        for key, item in value.items():
            sub = "%s.%s" % (path, key) if path else str(key)
            if _SECRET_KEY_NAME.search(str(key)) and item not in (None, "", False, [], {}):
                findings.append((sub, "field named like a secret"))
            findings.extend(secret_findings(key, sub + "<key>") if isinstance(key, str) and _scan_text(key) else [])
            findings.extend(secret_findings(item, sub))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            findings.extend(secret_findings(item, "%s[%d]" % (path, index)))
    elif isinstance(value, str):
        findings.extend((path, rule) for rule in _scan_text(value))
    return findings


def _scan_text(text):
    rules = sorted({finding.rule for finding in scan_text(text)})
    for token in _HIGH_ENTROPY_TOKEN.findall(text):
        if _looks_random(token):
            rules.append("high-entropy string")
            break
    return rules


def _char_class(char):
    if char.isupper():
        return 0
    if char.islower():
        return 1
    return 2 if char.isdigit() else 3


_SEGMENT_SEPARATORS = re.compile(r"[-_]")


def _plain_segment(segment):
    """A piece of a build id or image tag: hex (a git SHA or build hash), or a word/number with few class switches
    (``Linux``, ``x86``, ``64``, ``SNAPSHOT``, ``ubuntu22``). Random base64 pieces switch class all the time."""
    if not segment or _HEX_ONLY.match(segment):
        return True
    return sum(1 for a, b in zip(segment, segment[1:]) if _char_class(a) != _char_class(b)) <= 2


def _looks_random(token):
    # Hex (digests, key ids, git SHAs) is expected in receipts; random base64-like runs are not.
    if _HEX_ONLY.match(token) or not all(p.search(token) for p in _MIXED):
        return False
    # An image tag with a build id (1.4.2-b7f3c9a1e2d4-Linux-x86_64) is made of hex and plain words joined by - or _;
    # a base64url secret that happens to contain - or _ still has random pieces, so it is still judged as a whole.
    if _SEGMENT_SEPARATORS.search(token) and all(_plain_segment(s) for s in _SEGMENT_SEPARATORS.split(token)):
        return False
    switches = sum(1 for a, b in zip(token, token[1:]) if _char_class(a) != _char_class(b))
    return switches >= 0.5 * (len(token) - 1) and _entropy(token) >= 4.0


def mask_secret_text(text):
    """(text with every secret-looking span masked, [rules]) for captured error text; fails closed."""
    rules = [finding.rule for finding in scan_text(text)]
    text = redact_text(text)

    def entropy_mask(match):
        token = match.group(0)
        if not _looks_random(token):
            return token
        rules.append("high-entropy string")
        return "[MASKED:high-entropy string]"

    text = _HIGH_ENTROPY_TOKEN.sub(entropy_mask, text)
    left = sorted({finding.rule for finding in scan_text(text)})
    if left:
        # The scanner still sees something the structural masks did not cover: withhold the whole text.
        rules.extend(left)
        text = "[MASKED: message withheld, it looked like it held a secret (%s)]" % ", ".join(left)
    return text, sorted(set(rules))


def guard_secrets(receipt):
    """Refuse a receipt that looks like it carries a secret (ReceiptError names fields and rules only)."""
    findings = secret_findings(receipt)
    if findings:
        fields = sorted({finding[0] for finding in findings})
        raise ReceiptError(
            "receipt refused: %s look%s like %s; receipts never carry secrets (remove the value, describe it "
            "without quoting it)" % (", ".join(fields), "s" if len(fields) == 1 else "",
                                     ", ".join(sorted({finding[1] for finding in findings}))),
            fields=fields, secret=True)


def mask_paths(obj, fields):
    """Copy of obj with every value under the given dotted field paths replaced by a mask (for error output)."""
    masked = copy.deepcopy(obj)
    for field in fields:
        parts = re.findall(r"[^.\[\]]+|\[\d+\]", field.replace("<key>", ""))
        _mask(masked, parts)
    return masked


def _mask(node, parts):
    if not parts:
        return
    head = parts[0]
    if head.startswith("["):
        index = int(head[1:-1])
        if isinstance(node, list) and index < len(node):
            if len(parts) == 1:
                node[index] = "********"
            else:
                _mask(node[index], parts[1:])
        return
    if isinstance(node, dict):
        for key in list(node):
            if str(key) != head:
                continue
            if len(parts) == 1:
                node[key] = "********"
            else:
                _mask(node[key], parts[1:])


# --------------------------------------------------------------------------- schema

_VALIDATOR = []


def _validator():
    # The schema itself is checked against its metaschema by the unit tests (test_receipt_schema_is_valid): doing it
    # here cost about 0.3-0.7 s per receipt, more than everything else the receipt step does.
    if not _VALIDATOR:
        _VALIDATOR.append(jsonschema.validators.validator_for(RECEIPT_SCHEMA)(RECEIPT_SCHEMA))
    return _VALIDATOR[0]


def _error_field(error):
    if error.validator == "anyOf" and error.instance is not None:
        # A nullable field: report why the value fails the non-null branch, not "valid under none".
        real = [e for e in error.context or () if list(e.relative_schema_path)[:1] == [0]]
        if real:
            return _error_field(real[0])
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [name for name in error.validator_value if name not in error.instance]
        return ("%s.%s" % (path, missing[0]) if path else missing[0]), "is missing (required)"
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in known)
        return (path or "receipt"), "has unknown fields: %s" % ", ".join(extra)
    condition = ""
    schema_path = list(error.absolute_schema_path)
    if len(schema_path) > 2 and schema_path[0] == "allOf" and schema_path[2] == "then":
        condition = " " + CONDITIONS[schema_path[1]]
    if error.instance is None:
        return (path or "receipt"), "is missing (null)" + condition
    return (path or "receipt"), error.message + condition


def schema_errors(receipt):
    """[(field, problem)] in a stable order; empty when the receipt is valid."""
    errors = sorted(_validator().iter_errors(receipt), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    return [_error_field(e) for e in errors]


# --------------------------------------------------------------------------- consistency with the decision

def _same_name(one, other):
    if not isinstance(one, str) or not isinstance(other, str):
        return one == other
    return unicodedata.normalize("NFKC", one).casefold().strip() == unicodedata.normalize("NFKC", other).casefold().strip()


def _approvers(items):
    """{name: set(roles)} of an approved_by list; None when it is not a list of {name, roles} dicts."""
    if not isinstance(items, list):
        return None
    result = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not isinstance(item.get("roles", []), list):
            return None
        key = unicodedata.normalize("NFKC", item["name"]).casefold().strip()
        result.setdefault(key, set()).update(r for r in item.get("roles", []) if isinstance(r, str))
    return result


def consistency_errors(receipt):
    """[(field, problem)]: where the receipt contradicts its own approval decision (pure; tolerant of bad types).

    A receipt is the record of one decision and one outcome: it may not claim success for a denied request, another
    requester, a rule of another rollback type, approvers the decision did not count, or a normal run when the
    decision was an emergency override (or the reverse).
    """
    if not isinstance(receipt, dict):
        return []
    errors = []
    decision = receipt.get("approval")
    outcome = receipt.get("outcome")
    names = receipt.get("approved_by")
    if not isinstance(decision, dict):
        if isinstance(names, list) and names:
            errors.append(("approved_by", "lists approvers but the receipt carries no approval decision to derive "
                                          "them from"))
        if receipt.get("approver") not in (None, ""):
            errors.append(("approver", "names an approver but the receipt carries no approval decision"))
        if receipt.get("emergency") is True:
            errors.append(("emergency", "is true but the receipt carries no approval decision (no emergency override "
                                        "was granted)"))
        return errors
    approved = decision.get("approved")
    if outcome in ("succeeded", "failed") and approved is not True and decision.get("rule") != "unevaluated":
        errors.append(("outcome", "is %s but the approval decision denied the rollback (a denied rollback is never "
                                  "carried out: record outcome denied)" % outcome))
    if outcome == "succeeded" and approved is not True and decision.get("rule") == "unevaluated":
        errors.append(("outcome", "is succeeded but the approval could not be evaluated"))
    if outcome == "denied" and approved is True:
        errors.append(("outcome", "is denied but the approval decision approved the rollback"))
    if "requested_by" in decision and not _same_name(receipt.get("requested_by"), decision.get("requested_by")):
        errors.append(("requested_by", "differs from the approval decision's requester %r" % (decision.get("requested_by"),)))
    rollback_type = receipt.get("rollback_type")
    rule = decision.get("rule")
    rows = ROLLBACK_TYPES.get(rollback_type, {}).get("approval_rows") if isinstance(rollback_type, str) else None
    if rows is not None and rule != "unevaluated" and rule not in rows:
        errors.append(("approval.rule", "%r is not a rule of the %s rollback type (its rules: %s)"
                       % (rule, rollback_type, ", ".join(rows))))
    if decision.get("rollback_type") not in (None, rollback_type):
        errors.append(("approval.rollback_type", "%r differs from the receipt's rollback_type %r"
                       % (decision.get("rollback_type"), rollback_type)))
    errors.extend(_approver_errors(receipt, decision))
    errors.extend(_emergency_errors(receipt, decision))
    return errors


def _approver_errors(receipt, decision):
    errors = []
    counted = _approvers(decision.get("approved_by", []))
    given = _approvers(receipt.get("approved_by"))
    if counted is None:
        return [("approval.approved_by", "is not a list of {name, roles}")]
    if given is None:
        return [("approved_by", "is not a list of {name, roles}")]
    extra = sorted(set(given) - set(counted))
    if extra:
        errors.append(("approved_by", "names %s, whom the approval decision did not count" % ", ".join(extra)))
    inflated = sorted(name for name in set(given) & set(counted) if not given[name] <= counted[name])
    if inflated:
        errors.append(("approved_by", "gives %s roles the approval decision did not count them for" % ", ".join(inflated)))
    if set(given) != set(counted) and not extra:
        errors.append(("approved_by", "leaves out %s, counted by the approval decision"
                       % ", ".join(sorted(set(counted) - set(given)))))
    approver = receipt.get("approver")
    if approver is not None:
        listed = {unicodedata.normalize("NFKC", n).casefold().strip() for n in str(approver).split(",") if n.strip()}
        if listed != set(counted):
            errors.append(("approver", "is not derived from the approval decision (it counted: %s)"
                           % (", ".join(sorted(counted)) or "nobody")))
    return errors


def _emergency_errors(receipt, decision):
    errors = []
    emergency = decision.get("emergency") is True
    path = decision.get("approval_path")
    if emergency:
        if path != "emergency_override":
            errors.append(("approval.approval_path", "is %r but the decision is an emergency (emergency_override "
                                                     "expected): an emergency edited to look normal" % (path,)))
        if not decision.get("retroactive_approval_due"):
            errors.append(("approval.retroactive_approval_due", "is cleared although the decision is an emergency"))
        if decision.get("post_incident_review") != "required":
            errors.append(("approval.post_incident_review", "is not required although the decision is an emergency"))
    elif path == "emergency_override" or decision.get("retroactive_approval_due"):
        errors.append(("approval.emergency", "is false but the decision is an emergency override (approval_path %s, "
                                             "retroactive approval due %s): an emergency edited to look normal"
                       % (path, decision.get("retroactive_approval_due"))))
    if receipt.get("emergency") is not emergency:
        errors.append(("emergency", "is %r but the approval decision's emergency is %r" % (receipt.get("emergency"), emergency)))
    if emergency:
        if receipt.get("retroactive_approval_due") != decision.get("retroactive_approval_due"):
            errors.append(("retroactive_approval_due", "differs from the emergency decision's"))
        if receipt.get("post_incident_review") != "required":
            errors.append(("post_incident_review", "is not required although the decision is an emergency"))
    return errors


MAX_DEPTH = 32


def check_depth(value, limit=MAX_DEPTH):
    """Refuse values nested deeper than ``limit`` (checked without recursion, so hostile input cannot blow the stack)."""
    stack = [(value, "receipt", 0)]
    while stack:
        node, path, depth = stack.pop()
        if depth > limit:
            raise ReceiptError("receipt refused: %s is nested more than %d levels deep; nothing was written"
                               % (path, limit), fields=[path])
        if isinstance(node, dict):
            stack.extend((item, "%s.%s" % (path, key) if path != "receipt" else str(key), depth + 1)
                         for key, item in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((item, "%s[%d]" % (path, index), depth + 1) for index, item in enumerate(node))


def check_consistency(receipt):
    errors = consistency_errors(receipt)
    if errors:
        raise ReceiptError("receipt refused, it contradicts its approval decision: %s; nothing was written"
                           % "; ".join("%s %s" % e for e in errors), fields=sorted({e[0] for e in errors}))


def validate_receipt(receipt):
    """Secret guard first (so no error ever echoes a secret), then the JSON Schema, then consistency with the
    approval decision; ReceiptError names fields."""
    check_depth(receipt)
    guard_secrets(receipt)
    errors = schema_errors(receipt)
    if errors:
        raise ReceiptError("receipt refused by the schema: " + "; ".join("%s %s" % (f, p) for f, p in errors),
                           fields=[error[0] for error in errors])
    check_consistency(receipt)
    return receipt


# --------------------------------------------------------------------------- building the receipt

def decision_from_approval(approval, requested_by=None):
    """Accept a registered rollback_approval result or its ``decision`` dict; None when absent.

    A failed approval task without a decision (bad arguments, bad matrix) becomes a denial that could not be
    evaluated, so the receipt of that run can still be written.
    """
    if not approval:
        return None
    if not isinstance(approval, dict):
        raise ReceiptError("approval must be the registered rollback_approval result or its decision dict")
    if approval.get("failed") and "decision" not in approval:
        args = (approval.get("invocation") or {}).get("module_args") or {}
        return {"approved": False, "rule": "unevaluated", "approval_path": "denied", "missing_roles": [],
                "emergency": False, "requested_by": requested_by or args.get("requested_by") or "unknown",
                "post_incident_review": "not_required", "retroactive_approval_due": None, "approved_by": [],
                "message": "approval could not be evaluated: %s" % (approval.get("msg") or "no message")}
    decision = approval.get("decision", approval)
    if not isinstance(decision, dict) or "approved" not in decision or "rule" not in decision:
        raise ReceiptError("approval does not look like a rollback_approval decision (needs approved and rule); "
                           "pass the registered result of governed.rollback.rollback_approval")
    return copy.deepcopy(decision)


def normalize_evidence(evidence):
    """{archive, archive_sha256, manifest, manifest_sha256} from an evidence dict.

    Accepts the registered result of governed.rollback.evidence_capture (archive_path, archive_sha256,
    pack_manifest_path, pack_manifest_sha256, manifest_path, manifest{path, sha256}, evidence_manifest{...}) or a
    plain dict with the four keys. A finalized pack's manifest (it covers the archive and every phase manifest)
    is preferred over the last phase's.
    """
    if not evidence:
        return None
    nested = [evidence]
    for key in ("evidence_manifest", "manifest"):
        if isinstance(evidence.get(key), dict):
            nested.append(evidence[key])
    candidates = {
        "archive": ("archive", "archive_path"),
        "archive_sha256": ("archive_sha256",),
        "manifest": ("pack_manifest_path", "manifest", "manifest_path", "path"),
        "manifest_sha256": ("pack_manifest_sha256", "manifest_sha256", "sha256"),
    }
    result = {}
    for field, names in candidates.items():
        value = None
        for source in nested:
            for name in names:
                # "path"/"sha256" only mean the manifest's inside a nested manifest dict.
                if name in ("path", "sha256") and source is evidence:
                    continue
                if isinstance(source.get(name), str) and source[name]:
                    value = source[name]
                    break
            if value is not None:
                break
        if value is not None and field.endswith("sha256") and value.startswith("sha256:"):
            value = value[len("sha256:"):]
        result[field] = value
    return result


def _verification(given):
    result = dict((key, "not_run") for key in VERIFICATION_KEYS)
    for key, value in (given or {}).items():
        if isinstance(value, bool):
            value = "pass" if value else "fail"
        result[key] = value.strip().lower() if isinstance(value, str) else value
    return result


def _approved_by(given, decision):
    if given is None:
        return [dict(name=a["name"], roles=list(a.get("roles", []))) for a in (decision or {}).get("approved_by", [])]
    result = []
    for item in given:
        if isinstance(item, dict):
            result.append({"name": item.get("name"), "roles": list(item.get("roles") or [])})
        else:
            result.append({"name": str(item), "roles": []})
    return result


OPTIONAL_FIELDS = ("config_type", "changed_keys", "migration_reverted", "backup_location", "data_loss", "downtime",
                   "dba_approval", "policy_name", "security_review", "affected_users", "snapshot_id",
                   "pull_request_url", "pull_request_number", "merge_sha", "freeze", "failure", "details",
                   "verification_details")


def build_receipt(fields, approval=None, evidence=None, signing_required=True, keyid=None, now=None,
                  masked_fields=()):
    """Assemble the receipt dict from caller fields and the approval decision (pure; validation is separate).

    ``fields`` holds the receipt field names; None means "not given". Derived values (requested_by,
    approved_by, approver, dba_approval, security_review, emergency, started_at) come from the decision
    unless given explicitly.
    """
    now = now or utc_now()
    decision = decision_from_approval(approval, fields.get("requested_by"))
    assignments = (decision or {}).get("role_assignments") or {}
    rollback_type = fields.get("rollback_type") or (decision or {}).get("rollback_type")
    approved_by = _approved_by(fields.get("approved_by"), decision)
    completed_at = fields.get("completed_at") or utc_stamp(now)
    receipt = {
        "receipt_version": RECEIPT_VERSION,
        "rollback_id": fields.get("rollback_id") or new_rollback_id(now),
        "run_type": fields.get("run_type") or ROLLBACK_TYPES.get(rollback_type, {}).get("run_type"),
        "rollback_type": rollback_type,
        "outcome": fields.get("outcome"),
        "incident_id": fields.get("incident_id"),
        "requested_by": fields.get("requested_by") or (decision or {}).get("requested_by"),
        "approved_by": approved_by,
        "approver": fields.get("approver") or (", ".join(a["name"] for a in approved_by) or None),
        "started_at": fields.get("started_at") or (decision or {}).get("evaluated_at"),
        "completed_at": completed_at,
        "timestamp": completed_at,
        "environment": fields.get("environment"),
        "reason": fields.get("reason"),
        "current_ref": fields.get("current_ref"),
        "rollback_target_ref": fields.get("rollback_target_ref"),
        "changed_surfaces": (fields.get("changed_surfaces") if fields.get("changed_surfaces") is not None
                             else list(ROLLBACK_TYPES.get(rollback_type, {}).get("surfaces", []))),
        "verification": _verification(fields.get("verification")),
        "notes": fields.get("notes"),
        "component": fields.get("component"),
        "from_version": fields.get("from_version"),
        "to_version": fields.get("to_version"),
        "approval": decision,
        "emergency": bool((decision or {}).get("emergency")),
        "retroactive_approval_due": (decision or {}).get("retroactive_approval_due"),
        "post_incident_review": (decision or {}).get("post_incident_review") or "not_required",
        "evidence": normalize_evidence(evidence),
        "signing": {"required": bool(signing_required), "signed": keyid is not None, "keyid": keyid,
                    "predicate_type": PREDICATE_TYPE},
        "redaction": {"status": "masked" if masked_fields else "passed", "rules": GUARD_RULES,
                      "masked_fields": sorted(masked_fields)},
    }
    derived = dict(fields)
    if rollback_type == "database" and derived.get("dba_approval") is None:
        derived["dba_approval"] = assignments.get("dba")
    if rollback_type == "policy" and derived.get("security_review") is None and assignments.get("security"):
        derived["security_review"] = "approved"
    for name in OPTIONAL_FIELDS:
        if derived.get(name) is not None:
            receipt[name] = derived[name]
    storage = evidence_storage(evidence)
    if storage is not None:
        receipt["evidence_storage"] = storage
    return receipt


def evidence_storage(evidence):
    """The evidence pack's object-storage record (evidence_capture's evidence_storage), or None."""
    if not isinstance(evidence, dict):
        return None
    for source in (evidence, evidence.get("evidence_manifest")):
        if isinstance(source, dict) and isinstance(source.get("evidence_storage"), dict):
            return copy.deepcopy(source["evidence_storage"])
    return None


# --------------------------------------------------------------------------- keys and DSSE

def load_signer(pem):
    """CryptoSigner from an unencrypted PEM ed25519 private key (bytes or str)."""
    if isinstance(pem, str):
        pem = pem.encode("utf-8")
    try:
        private_key = load_pem_private_key(pem.strip() + b"\n", password=None)
    except TypeError:
        raise ReceiptError("the signing key is encrypted; provide an unencrypted PKCS#8 PEM ed25519 key")
    except (ValueError, binascii.Error):
        raise ReceiptError("the signing key is not a PEM private key; provide an ed25519 key in PKCS#8 PEM "
                           "(openssl genpkey -algorithm ed25519)")
    if not isinstance(private_key, Ed25519PrivateKey):
        raise ReceiptError("the signing key is a %s key; receipts are signed with ed25519 only"
                           % type(private_key).__name__.replace("_", "").replace("PrivateKey", ""))
    return CryptoSigner(private_key, SSlibKey.from_crypto(private_key.public_key(), scheme="ed25519"))


def load_public_key(material):
    """SSlibKey from a PEM public key, a PEM private key (its public half) or a securesystemslib key dict/JSON."""
    if isinstance(material, dict):
        return _sslib_key_from_dict(material)
    text = material.decode("utf-8") if isinstance(material, bytes) else str(material)
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            return _sslib_key_from_dict(json.loads(stripped))
        except ValueError as exc:
            raise ReceiptError("public key JSON does not parse: %s" % exc)
    if "PRIVATE KEY" in stripped:
        return load_signer(stripped).public_key
    try:
        public_key = load_pem_public_key(stripped.encode("utf-8") + b"\n")
    except (ValueError, binascii.Error):
        raise ReceiptError("the public key is neither a PEM public key nor a securesystemslib key dict")
    if not isinstance(public_key, Ed25519PublicKey):
        raise ReceiptError("the public key is not ed25519; receipts are verified with ed25519 keys only")
    return SSlibKey.from_crypto(public_key, scheme="ed25519")


def _sslib_key_from_dict(data):
    data = copy.deepcopy(data)
    keyid = data.pop("keyid", None)
    if data.get("keytype") != "ed25519":
        raise ReceiptError("the public key dict is keytype %r; receipts are verified with ed25519 keys only"
                           % data.get("keytype"))
    if keyid is None:
        return SSlibKey.from_crypto(SSlibKey("0", data["keytype"], data["scheme"], data["keyval"])._crypto_key(),
                                    scheme="ed25519")
    return SSlibKey.from_dict(keyid, data)


def public_key_pem(key):
    """PEM text of an SSlibKey's public half (what verify-receipts.yml is given)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    return key._crypto_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def sign_payload(payload, payload_type, signer):
    envelope = Envelope(payload, payload_type, {})
    if signer is not None:
        envelope.sign(signer)
    return envelope.to_dict()


def open_envelope(envelope_dict, keys=None):
    """Decode a DSSE envelope; with keys, require one valid signature. Returns (payload_bytes, keyids)."""
    if not isinstance(envelope_dict, dict) or not isinstance(envelope_dict.get("signatures"), list):
        raise ReceiptError("not a DSSE envelope (payload, payloadType, signatures)")
    try:
        # securesystemslib 1.x from_dict mutates its input: hand it a copy.
        envelope = Envelope.from_dict(copy.deepcopy(envelope_dict))
    except (KeyError, ValueError, TypeError, binascii.Error) as exc:
        raise ReceiptError("DSSE envelope does not parse: %s" % exc)
    except Exception as exc:  # securesystemslib FormatError and friends  # pylint: disable=broad-exception-caught
        raise ReceiptError("DSSE envelope does not parse: %s" % exc)
    keyids = sorted(envelope.signatures)
    if keys:
        try:
            envelope.verify(list(keys), 1)
        except VerificationError:
            raise ReceiptError("signature does not verify with the given public key(s) (keyid %s; signed by %s)"
                               % (", ".join(k.keyid[:16] for k in keys), ", ".join(k[:16] for k in keyids) or
                                  "nobody"))
    return envelope.payload, envelope.payload_type, keyids


def make_statement(receipt, digest):
    """in-toto Statement v1 carrying the receipt as a custom predicate; every subject has a digest."""
    subjects = [{"name": "receipt:%s" % receipt["rollback_id"], "digest": {"sha256": digest}}]
    evidence = receipt.get("evidence") or {}
    if evidence.get("archive_sha256"):
        subjects.append({"name": os.path.basename(evidence.get("archive") or "evidence.tar.gz"),
                         "digest": {"sha256": evidence["archive_sha256"]}})
    if evidence.get("manifest_sha256"):
        subjects.append({"name": os.path.basename(evidence.get("manifest") or "manifest.json"),
                         "digest": {"sha256": evidence["manifest_sha256"]}})
    target = receipt.get("rollback_target_ref")
    if target:
        if "sha256:" in target:
            subjects.append({"name": "rollback_target_ref", "digest": {"sha256": target.split("sha256:", 1)[1]}})
        else:
            subjects.append({"name": "rollback_target_ref", "digest": {"gitCommit": target}})
    return {"_type": STATEMENT_TYPE, "subject": subjects, "predicateType": PREDICATE_TYPE, "predicate": receipt}


# --------------------------------------------------------------------------- ledger entries (pure)

def join_canonical(members):
    """JCS bytes of an object whose member values are already canonical bytes (keys are ASCII names here).

    RFC 8785 writes an object as its members sorted by key, so splicing pre-serialized values gives the same
    bytes as serializing the whole; the ledger uses it to canonicalize each receipt once, not four times.
    """
    return b"{" + b",".join(canonical(key) + b":" + members[key] for key in sorted(members)) + b"}"


def statement_payload(receipt, receipt_bytes=None):
    """JCS of the receipt's in-toto Statement (the DSSE payload), reusing the receipt's canonical bytes."""
    receipt_bytes = receipt_bytes or canonical(receipt)
    statement = make_statement(receipt, sha256_hex(receipt_bytes))
    members = dict((key, canonical(value)) for key, value in statement.items() if key != "predicate")
    members["predicate"] = receipt_bytes
    return join_canonical(members)


def receipt_envelope(receipt, signatures, receipt_bytes=None):
    """The receipt's DSSE envelope (what goes into <id>.intoto.jsonl) from its recorded signatures."""
    payload = statement_payload(receipt, receipt_bytes)
    return {"payload": base64.b64encode(payload).decode("ascii"), "payloadType": STATEMENT_PAYLOAD_TYPE,
            "signatures": copy.deepcopy(signatures)}


def make_entry(seq, prev, receipt, signatures, recorded_at):
    entry = {
        "seq": seq,
        "prev": prev,
        "rollback_id": receipt["rollback_id"],
        "recorded_at": recorded_at,
        "receipt_sha256": receipt_sha256(receipt),
        "receipt": receipt,
        "signatures": signatures,
    }
    entry["entry_sha256"] = sha256_hex(canonical(entry))
    return entry


def entry_line(entry):
    return canonical(entry) + b"\n"


def _entry_members(entry, receipt_bytes):
    members = dict((key, canonical(entry[key])) for key in ENTRY_KEYS if key not in ("receipt", "entry_sha256"))
    members["receipt"] = receipt_bytes
    return members


def make_checkpoint(size, head, updated_at, signer):
    payload = canonical({"_type": CHECKPOINT_TYPE, "size": size, "head": head, "updated_at": updated_at})
    return sign_payload(payload, CHECKPOINT_PAYLOAD_TYPE, signer)


def _reject_duplicates(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate key %r" % key)
        result[key] = value
    return result


def _check_entry(line, seq, prev, keys, seen_ids):
    """Problems with one ledger line, as a string, or (None, entry)."""
    try:
        entry = json.loads(line.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        return "is not valid JSON (%s)" % exc, None
    except RecursionError:
        return "is not valid JSON (nested too deeply)", None
    if not isinstance(entry, dict) or sorted(entry) != sorted(ENTRY_KEYS):
        return "does not have the entry fields %s" % ", ".join(ENTRY_KEYS), None
    receipt = entry["receipt"]
    if not isinstance(receipt, dict):
        return "receipt is not an object", entry
    try:
        receipt_bytes = canonical(receipt)
        members = _entry_members(entry, receipt_bytes)
        body = join_canonical(members)
        members["entry_sha256"] = canonical(entry["entry_sha256"])
        if join_canonical(members) != line:
            return "is not in canonical (RFC 8785) form: it was edited", entry
    except ReceiptError as exc:
        return exc.msg, entry
    except RecursionError:
        return "receipt is nested too deeply", entry
    if sha256_hex(body) != entry["entry_sha256"]:
        return "does not match its own entry_sha256: it was altered", entry
    if type(entry["seq"]) is not int or entry["seq"] != seq:  # pylint: disable=unidiomatic-typecheck
        return "has seq %r where %d was expected (entries missing or reordered)" % (entry["seq"], seq), entry
    if entry["prev"] != prev:
        return "does not chain to entry %d (prev is not the previous entry_sha256)" % (seq - 1), entry
    if sha256_hex(receipt_bytes) != entry["receipt_sha256"]:
        return "receipt does not match receipt_sha256", entry
    if receipt.get("rollback_id") != entry["rollback_id"]:
        return "rollback_id differs from its receipt's", entry
    if entry["rollback_id"] in seen_ids:
        return "repeats rollback_id %s already recorded at entry %d" % (entry["rollback_id"],
                                                                        seen_ids[entry["rollback_id"]]), entry
    errors = schema_errors(receipt)
    if errors:
        return "receipt fails the schema: %s" % "; ".join("%s %s" % e for e in errors[:3]), entry
    errors = consistency_errors(receipt)
    if errors:
        return "receipt contradicts its approval decision: %s" % "; ".join("%s %s" % e for e in errors[:3]), entry
    signing = receipt.get("signing") or {}
    if not isinstance(entry["signatures"], list):
        return "signatures is not a list", entry
    if not entry["signatures"]:
        if signing.get("required") or signing.get("signed"):
            return "has no signature although its receipt says it is signed", entry
        return None, entry
    try:
        keyids = open_envelope(receipt_envelope(receipt, entry["signatures"], receipt_bytes), keys)[2]
    except ReceiptError as exc:
        return exc.msg, entry
    if signing.get("keyid") not in keyids:
        return "receipt names keyid %s but the envelope is signed by %s" % (signing.get("keyid"), keyids), entry
    return None, entry


def verify_ledger_bytes(data, head_bytes=None, keys=None):
    """Walk the whole ledger and its signed head. Pure: bytes in, result dict out.

    keys: SSlibKeys that signatures must verify against; None/empty skips signature checks (chain, digests
    and schema are always checked). Returns {valid, entries, first_bad_entry, bad_rollback_id, message,
    checkpoint, unsigned_entries, signatures_checked, last_entry_sha256, index}.
    """
    result = new_result(keys)
    data = data or b""
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]
    prev = GENESIS
    for offset, line in enumerate(complete):
        seq = offset + 1
        problem, entry = _check_entry(line, seq, prev, keys, result["index"])
        if problem:
            return _bad(result, seq, entry, "entry %d%s %s" % (seq, _named(entry), problem))
        prev = _accept_entry(result, seq, entry)
    result["last_entry_sha256"] = prev
    if tail:
        seq = len(complete) + 1
        return _bad(result, seq, None, "entry %d is incomplete (no trailing newline): a write was cut short; "
                                       "move the ledger aside and restore it from its last good copy" % seq)
    return _check_head(result, head_bytes, keys)


def new_result(keys, **extra):
    """A verification result before any entry was read (verify_ledger_bytes' keys)."""
    result = {"valid": False, "entries": 0, "first_bad_entry": None, "bad_rollback_id": None, "message": "",
              "checkpoint": None, "unsigned_entries": [], "signatures_checked": bool(keys),
              "last_entry_sha256": GENESIS, "index": {}, "digests": []}
    result.update(extra)
    return result


def _accept_entry(result, seq, entry):
    """Record a checked entry in the verify result (index, digests, unsigned, count); return its hash (the next prev)."""
    if not entry["signatures"]:
        result["unsigned_entries"].append(seq)
    result["index"][entry["rollback_id"]] = seq
    result["digests"].append((entry["receipt_sha256"], entry["entry_sha256"]))
    result["entries"] = seq
    return entry["entry_sha256"]


def _named(entry):
    if isinstance(entry, dict) and isinstance(entry.get("rollback_id"), str):
        return " (%s)" % entry["rollback_id"]
    return ""


def _bad(result, seq, entry, message):
    result.update(valid=False, first_bad_entry=seq, message=message,
                  bad_rollback_id=entry.get("rollback_id") if isinstance(entry, dict) else None)
    return result


def parse_checkpoint(head_bytes, keys, what="signed head"):
    """(checkpoint {size, head, updated_at, signed, keyids}, None) or (None, problem) for a head or mirror file."""
    try:
        envelope = json.loads(head_bytes.decode("utf-8"))
        payload, payload_type, keyids = open_envelope(envelope, keys)
        checkpoint = json.loads(payload.decode("utf-8"))
        size, head = checkpoint["size"], checkpoint["head"]
    except ReceiptError as exc:
        return None, "%s: %s" % (what, exc.msg)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return None, "%s does not parse: %s" % (what, exc)
    except RecursionError:
        return None, "%s does not parse: nested too deeply" % what
    if payload_type != CHECKPOINT_PAYLOAD_TYPE or not isinstance(checkpoint, dict) or checkpoint.get("_type") != CHECKPOINT_TYPE:
        return None, "%s is not a ledger checkpoint" % what
    if keys and not keyids:
        return None, "%s carries no signature" % what
    if type(size) is not int or size < 0 or size >= 2 ** 63:  # pylint: disable=unidiomatic-typecheck
        return None, "%s has an invalid size" % what
    if not isinstance(head, str) or not re.match(r"^[0-9a-f]{64}$", head):
        return None, "%s has an invalid head digest" % what
    return {"size": size, "head": head, "updated_at": checkpoint.get("updated_at"), "signed": bool(keyids),
            "keyids": keyids}, None


def _check_head(result, head_bytes, keys):
    count = result["entries"]
    if not head_bytes:
        if count == 0:
            result.update(valid=True, message="ledger is empty")
            return result
        return _bad(result, count, None, "signed head missing: %d entries but no checkpoint, so a cut-off tail "
                                         "could not be detected; restore the .head file" % count)
    checkpoint, problem = parse_checkpoint(head_bytes, keys, "signed head")
    if problem:
        return _bad(result, count or None, None, problem)
    result["checkpoint"] = checkpoint
    size, head = checkpoint["size"], checkpoint["head"]
    if size > count:
        return _bad(result, count + 1, None,
                    "ledger truncated: the signed head covers %d entries but the file holds %d; entries %d..%d are "
                    "missing" % (size, count, count + 1, size))
    if size < count:
        return _bad(result, size + 1, None,
                    "entries %d..%d are not covered by the signed head (size %d): appended without the ledger "
                    "lock or the head was rolled back" % (size + 1, count, size))
    if head != result["last_entry_sha256"]:
        return _bad(result, count, None, "entry %d does not match the signed head (head %s…, entry %s…): the "
                                         "ledger was rewritten" % (count, str(head)[:16],
                                                                   result["last_entry_sha256"][:16]))
    result.update(valid=True, message="ledger verifies: %d entries, head %s…%s" % (
        count, result["last_entry_sha256"][:16], "" if keys else " (signatures not checked: no public key given)"))
    return result


# --------------------------------------------------------------------------- witnesses, head mirror, envelopes (pure)

_DIGEST = re.compile(r"^(?:sha256:)?([0-9a-f]{64})$")


def normalize_witnesses(witnesses):
    """[{seq, kind, sha256, rollback_id, name}] from what operators gather elsewhere; LedgerError names a bad one.

    A witness is ``{seq, sha256}`` where ``sha256`` is the RECEIPT digest (``receipt_sha256``, what the AWX job
    artifacts carry from set_stats as ``ledger_seq`` + ``receipt_sha256``); ``entry_sha256`` instead pins the ledger
    entry's own hash. ``ledger_seq`` is accepted for ``seq``, ``rollback_id`` and ``name`` are optional. Also accepted:
    the artifacts themselves, ``{"governed_rollback_receipts": {rollback_id: summary}}`` or
    ``{"governed_rollback": {...}}``; an artifact of a run that wrote no receipt (``ledger_seq`` -1) is skipped.
    """
    if witnesses is None:
        return []
    items = _witness_items(witnesses)
    result = []
    for index, item in enumerate(items):
        label = "witness %d" % (index + 1)
        if not isinstance(item, dict):
            raise LedgerError("%s is not a mapping with seq and sha256" % label)
        if isinstance(item.get("name"), str) and item["name"]:
            label = "witness %d (%s)" % (index + 1, item["name"][:128])
        seq = item.get("seq", item.get("ledger_seq"))
        if seq in (-1, "-1") and not item.get("receipt_sha256") and not item.get("sha256"):
            continue
        if isinstance(seq, str) and re.match(r"^[0-9]{1,18}$", seq):
            seq = int(seq)
        if type(seq) is not int or not 1 <= seq < 2 ** 63:  # pylint: disable=unidiomatic-typecheck
            raise LedgerError("%s has no valid seq (a positive integer; got %s)" % (label, type(seq).__name__))
        kind = "entry" if item.get("entry_sha256") is not None else "receipt"
        digest = item.get("entry_sha256") if kind == "entry" else item.get("sha256", item.get("receipt_sha256"))
        match = _DIGEST.match(digest) if isinstance(digest, str) else None
        if not match:
            raise LedgerError("%s (seq %d) has no valid sha256 (64 lower-case hex digits of the receipt, or "
                              "entry_sha256)" % (label, seq))
        rollback_id = item.get("rollback_id")
        if rollback_id is not None and not isinstance(rollback_id, str):
            raise LedgerError("%s (seq %d) has a rollback_id that is not a string" % (label, seq))
        result.append({"seq": seq, "kind": kind, "sha256": match.group(1), "rollback_id": rollback_id, "name": label})
    return result


def _witness_items(witnesses):
    if isinstance(witnesses, (bytes, str)):
        witnesses = parse_witness_text(witnesses)
    if isinstance(witnesses, dict):
        if "governed_rollback_receipts" in witnesses or "governed_rollback" in witnesses:
            items = []
            receipts = witnesses.get("governed_rollback_receipts")
            if isinstance(receipts, dict):
                items.extend(dict(v, rollback_id=v.get("rollback_id", k)) if isinstance(v, dict) else v
                             for k, v in sorted(receipts.items()))
            if "governed_rollback" in witnesses:
                items.append(witnesses["governed_rollback"])
            return items
        if "seq" in witnesses or "ledger_seq" in witnesses:
            return [witnesses]
        return [dict(v, rollback_id=v.get("rollback_id", k)) if isinstance(v, dict) else v
                for k, v in sorted(witnesses.items())]
    if isinstance(witnesses, list):
        items = []
        for item in witnesses:
            items.extend(_witness_items(item) if isinstance(item, dict) and "seq" not in item
                         and "ledger_seq" not in item else [item])
        return items
    raise LedgerError("witnesses must be a list of {seq, sha256} (or AWX job artifacts), not %s"
                      % type(witnesses).__name__)


def parse_witness_text(text):
    """A witnesses file: one JSON document (list or artifacts) or JSONL (one witness per line)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise LedgerError("witnesses file is not UTF-8")
    try:
        return json.loads(text)
    except RecursionError:
        raise LedgerError("witnesses file is nested too deeply")
    except ValueError:
        pass
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except (ValueError, RecursionError) as exc:
            raise LedgerError("witnesses file line %d is not JSON (%s)" % (number, str(exc)[:200]))
    return items


def check_witnesses(result, witnesses):
    """Refuse a ledger that lacks or contradicts any witness (truncation, an older head put back, a rewrite)."""
    result["witnesses_checked"] = 0
    if not result["valid"]:
        return result
    for witness in witnesses:
        seq, short = witness["seq"], witness["sha256"][:16]
        if seq > result["entries"]:
            return _bad(result, result["entries"] + 1, None,
                        "ledger lacks entry %d, which %s saw (%s sha256 %s…): the ledger holds %d entries, so it was "
                        "truncated or an older ledger and head were put back" % (
                            seq, witness["name"], witness["kind"], short, result["entries"]))
        receipt_digest, entry_digest = result["digests"][seq - 1]
        have = entry_digest if witness["kind"] == "entry" else receipt_digest
        if have != witness["sha256"]:
            return _bad(result, seq, None,
                        "entry %d contradicts %s: it saw %s sha256 %s…, the ledger has %s…: the ledger was rewritten "
                        "or replaced" % (seq, witness["name"], witness["kind"], short, have[:16]))
        if witness["rollback_id"] is not None and result["index"].get(witness["rollback_id"]) != seq:
            return _bad(result, seq, None, "entry %d contradicts %s: it saw rollback_id %s there"
                        % (seq, witness["name"], witness["rollback_id"][:128]))
        result["witnesses_checked"] += 1
    return result


def check_mirror(result, mirror_bytes, keys, mirror):
    """The ledger against its head mirror (a second copy of the signed head kept elsewhere, which only grows)."""
    if not result["valid"]:
        return result
    if mirror_bytes is None:
        if result["entries"] == 0:
            return result
        return _bad(result, result["entries"], None,
                    "head mirror %s is missing but the ledger has %d entries: the mirror was deleted (if the mirror "
                    "was only just configured, the next append writes it)" % (mirror, result["entries"]))
    checkpoint, problem = parse_checkpoint(mirror_bytes, keys, "head mirror %s" % mirror)
    if problem:
        return _bad(result, result["entries"] or None, None, problem)
    size = checkpoint["size"]
    result["mirror"] = {"path": mirror, "size": size, "head": checkpoint["head"], "lag": max(result["entries"] - size, 0)}
    if size > result["entries"]:
        return _bad(result, result["entries"] + 1, None,
                    "head mirror %s is at seq %d but the ledger holds %d entries: the ledger was truncated or rolled "
                    "back to an older copy (entries %d..%d are gone)" % (mirror, size, result["entries"],
                                                                         result["entries"] + 1, size))
    if size and result["digests"][size - 1][1] != checkpoint["head"]:
        return _bad(result, size, None, "entry %d does not match head mirror %s (mirror %s…, entry %s…): the ledger "
                                        "was rewritten" % (size, mirror, checkpoint["head"][:16],
                                                           result["digests"][size - 1][1][:16]))
    if size < result["entries"]:
        result["message"] += "; head mirror lags at seq %d (a mirror write was missed; the next append updates it)" % size
    return result


def check_envelopes(result, envelopes, keys):
    """Every receipt envelope beside the ledger must have its entry: an envelope without one is an erased receipt.

    envelopes: {file name: bytes, or an error string}. Files whose statement is not a rollback receipt are ignored.
    """
    result["envelopes_checked"] = 0
    if not result["valid"]:
        return result
    for name in sorted(envelopes):
        data = envelopes[name]
        if not isinstance(data, bytes):
            return _bad(result, None, None, "receipt envelope %s: %s" % (name, data))
        try:
            payload, payload_type, _keyids = open_envelope(json.loads(data.decode("utf-8")), keys)
            statement = json.loads(payload.decode("utf-8"))
            predicate = statement.get("predicate") if statement.get("predicateType") == PREDICATE_TYPE else None
            digest = receipt_sha256(predicate) if isinstance(predicate, dict) else None
        except ReceiptError as exc:
            return _bad(result, None, None, "receipt envelope %s: %s" % (name, exc.msg))
        except (UnicodeDecodeError, ValueError, AttributeError, TypeError, RecursionError) as exc:
            return _bad(result, None, None, "receipt envelope %s does not parse: %s" % (name, str(exc)[:200]))
        if payload_type != STATEMENT_PAYLOAD_TYPE or predicate is None:
            continue
        rollback_id = predicate.get("rollback_id")
        seq = result["index"].get(rollback_id) if isinstance(rollback_id, str) else None
        if seq is None:
            result.update(valid=False, first_bad_entry=None, bad_rollback_id=rollback_id if isinstance(rollback_id, str) else None,
                          message="receipt envelope %s holds the receipt of %s (receipt sha256 %s…) but the ledger has "
                                  "no entry for it: an erased receipt (the ledger was truncated, rolled back or "
                                  "deleted)" % (name, str(rollback_id)[:128], digest[:16]))
            return result
        if result["digests"][seq - 1][0] != digest:
            return _bad(result, seq, None, "receipt envelope %s contradicts entry %d (%s): envelope receipt sha256 "
                                           "%s…, ledger %s…" % (name, seq, rollback_id, digest[:16],
                                                                result["digests"][seq - 1][0][:16]))
        result["envelopes_checked"] += 1
    return result


# --------------------------------------------------------------------------- ledger I/O

ENVELOPE_SUFFIX = ".intoto.jsonl"
MAX_HEAD_BYTES = 1 << 20
MAX_ENVELOPE_BYTES = 16 << 20
MAX_ENTRY_BYTES = 16 << 20


def head_path(ledger):
    return ledger + ".head"


def envelope_path_for(ledger, rollback_id):
    return os.path.join(os.path.dirname(os.path.abspath(ledger)), "%s%s" % (rollback_id, ENVELOPE_SUFFIX))


def open_nofollow(path, flags=os.O_RDONLY, mode=0o640):
    """os.open that refuses a symlink (O_NOFOLLOW): a link could point the record, or the key, somewhere else."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LedgerError("%s is a symbolic link; refusing to follow it (a link can redirect the record to another "
                              "file): point the option at the real file" % path)
        raise


def _read_all(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _read_file(path, limit=MAX_HEAD_BYTES):
    """Bytes of a regular file (no symlink), None when absent; LedgerError when it is a link, not a file or too big."""
    try:
        fd = open_nofollow(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise LedgerError("%s is not a regular file" % path)
        if os.fstat(fd).st_size > limit:
            raise LedgerError("%s is larger than %d bytes; it is not a file this collection wrote" % (path, limit))
        return _read_all(fd)
    finally:
        os.close(fd)


def read_private_key_file(path):
    """A private key file's bytes, refused when it is a symlink or readable/writable by group or others."""
    try:
        fd = open_nofollow(path)
    except LedgerError as exc:
        raise ReceiptError("signing key: %s" % exc.msg)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ReceiptError("signing key %s is not a regular file" % path)
        if mode & 0o077:
            raise ReceiptError("signing key file %s is readable or writable by group/others (mode %04o); refusing to "
                               "use it: run chmod 600 %s (and rotate the key if others may have read it)"
                               % (path, stat.S_IMODE(mode), path))
        return _read_all(fd)
    finally:
        os.close(fd)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, data, mode=0o640):
    """Write a file so readers see either the old or the new content, durably; never through a symlink."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.islink(path):
        raise LedgerError("%s is a symbolic link; refusing to replace it (a link can redirect the record to another "
                          "file): point the option at the real file" % path)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        os.unlink(tmp)
        raise
    _fsync_dir(directory)


def read_envelopes(ledger):
    """{name: bytes or error} of the receipt envelopes (*.intoto.jsonl) in the ledger's directory."""
    directory = os.path.dirname(os.path.abspath(ledger))
    found = {}
    try:
        names = os.listdir(directory)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return found
        raise
    for name in names:
        if not name.endswith(ENVELOPE_SUFFIX) or name.startswith("."):
            continue
        try:
            found[name] = _read_file(os.path.join(directory, name), MAX_ENVELOPE_BYTES)
        except LedgerError as exc:
            found[name] = exc.msg
        if found[name] is None:
            del found[name]
    return found


def verify_ledger(ledger, keys=None, witnesses=None, head_mirror=None, envelopes=True, s3_heads=None):
    """Full verification over the files, read under a shared lock so a concurrent append is never half-seen.

    Beyond verify_ledger_bytes: every witness ({seq, sha256}, see normalize_witnesses), the head mirror (when given)
    and, with envelopes=True, every receipt envelope in the ledger's directory must agree with the ledger.
    """
    witnesses = normalize_witnesses(witnesses)
    fd = None
    try:
        fd = open_nofollow(ledger)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
    try:
        if fd is not None:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise LedgerError("ledger %s is not a regular file" % ledger)
            fcntl.flock(fd, fcntl.LOCK_SH)
            data = _read_all(fd)
        else:
            data = b""
        result = verify_ledger_bytes(data, _read_file(head_path(ledger)), keys)
        if fd is None and result["valid"]:
            result["message"] = "ledger %s does not exist yet (no receipts)" % ledger
        check_witnesses(result, witnesses)
        if head_mirror:
            check_mirror(result, _read_file(head_mirror), keys, head_mirror)
        if envelopes:
            check_envelopes(result, read_envelopes(ledger), keys)
        if s3_heads is not None:
            s3_heads.check(result, keys)
    finally:
        if fd is not None:
            os.close(fd)
    result["witnesses"] = len(witnesses)
    return result


def _find_existing(data, index, rollback_id):
    seq = index.get(rollback_id)
    if not seq:
        return None
    line = data.split(b"\n")[seq - 1]
    return json.loads(line.decode("utf-8"))


# --------------------------------------------------------------------------- O(1) tail check for appends

def _last_line(fd, length):
    """(start offset, bytes) of the ledger's last complete line (without its newline); the file ends in a newline."""
    chunk = 1 << 16
    end = length - 1  # the final newline
    start = end
    while start > 0:
        step = min(chunk, start)
        os.lseek(fd, start - step, os.SEEK_SET)
        block = os.read(fd, step)
        newline = block.rfind(b"\n")
        if newline >= 0:
            start = start - step + newline + 1
            break
        start -= step
        if end - start > MAX_ENTRY_BYTES:
            raise LedgerError("the last ledger entry is larger than %d bytes; run state=verify" % MAX_ENTRY_BYTES)
        chunk *= 2
    os.lseek(fd, start, os.SEEK_SET)
    line = b""
    while len(line) < end - start:
        part = os.read(fd, end - start - len(line))
        if not part:
            break
        line += part
    return start, line


def tail_state(fd, head_bytes, keys):
    """What append needs, in O(1) of the ledger's size: the signed head and the tail entry it signs.

    Checks the head's signature, that the last line is a complete, canonical, self-consistent and signed entry whose
    seq and hash are the head's (so no entry after the head's seq exists). Entries before the tail are only checked by
    full verification (state=verify). Returns the same keys verify_ledger_bytes does (index and digests empty).
    """
    result = new_result(keys, tail_only=True)
    length = os.fstat(fd).st_size
    if length == 0:
        return _check_head(result, head_bytes, keys)
    os.lseek(fd, length - 1, os.SEEK_SET)
    checkpoint = parse_checkpoint(head_bytes, keys)[0] if head_bytes else None
    if os.read(fd, 1) != b"\n":
        seq = checkpoint["size"] + 1 if checkpoint else None
        return _bad(result, seq, None, "entry %s is incomplete (no trailing newline): a write was cut short; move the "
                                       "ledger aside and restore it from its last good copy" % (seq or "at the end"))
    _start, line = _last_line(fd, length)
    try:
        entry = json.loads(line.decode("utf-8"), object_pairs_hook=_reject_duplicates)
        seq, prev = entry["seq"], entry["prev"]
    except (UnicodeDecodeError, ValueError, RecursionError, KeyError, TypeError) as exc:
        return _bad(result, checkpoint["size"] if checkpoint else None, None,
                    "the last entry is not a ledger entry (%s)" % str(exc)[:200])
    if type(seq) is not int or seq < 1:  # pylint: disable=unidiomatic-typecheck
        return _bad(result, None, entry, "the last entry has no valid seq")
    problem, entry = _check_entry(line, seq, prev, keys, {})
    if problem:
        return _bad(result, seq, entry, "entry %d%s %s" % (seq, _named(entry), problem))
    result.update(entries=seq, last_entry_sha256=entry["entry_sha256"])
    result["digests"] = None
    return _check_head(result, head_bytes, keys)


def _find_by_id(fd, length, rollback_id, keys):
    """The recorded entry of rollback_id, by a byte search for its entry-level key (canonical JSON escapes the
    quotes of any string, so ``"rollback_id":"<id>","seq":`` only occurs as an entry's own field); None if absent."""
    if length == 0:
        return None
    needle = b'"rollback_id":' + canonical(rollback_id) + b',"seq":'
    with mmap.mmap(fd, length, access=mmap.ACCESS_READ) as mapped:
        found = mapped.find(needle)
        if found < 0:
            return None
        start = mapped.rfind(b"\n", 0, found) + 1
        end = mapped.find(b"\n", found)
        line = mapped[start:end if end >= 0 else length]
    try:
        entry = json.loads(line.decode("utf-8"), object_pairs_hook=_reject_duplicates)
        seq, prev = entry["seq"], entry["prev"]
    except (UnicodeDecodeError, ValueError, RecursionError, KeyError, TypeError) as exc:
        raise LedgerError("the entry recording %s is not a ledger entry (%s)" % (rollback_id, str(exc)[:200]))
    if type(seq) is not int:  # pylint: disable=unidiomatic-typecheck
        raise LedgerError("the entry recording %s has no valid seq" % rollback_id)
    problem, entry = _check_entry(line, seq, prev, keys, {})
    if problem:
        raise LedgerError("the entry recording %s does not verify: %s" % (rollback_id, problem))
    return entry


# Times a rerun of the same rollback computes afresh; idempotence compares receipts without them.
RERUN_TIME_FIELDS = ("started_at", "completed_at", "timestamp", "retroactive_approval_due")
RERUN_APPROVAL_TIME_FIELDS = ("evaluated_at", "retroactive_approval_due", "message")


def without_rerun_times(receipt):
    """The receipt with the fields a rerun recomputes from the clock blanked (approval.message embeds a due time)."""
    timeless = copy.deepcopy(receipt)
    for field in RERUN_TIME_FIELDS:
        timeless[field] = None
    if isinstance(timeless.get("approval"), dict):
        for field in RERUN_APPROVAL_TIME_FIELDS:
            timeless["approval"][field] = None
    return timeless


def _differing_fields(one, other):
    fields = []
    for key in sorted(set(one) | set(other)):
        if isinstance(one.get(key), dict) and isinstance(other.get(key), dict):
            fields.extend("%s.%s" % (key, sub) for sub in _differing_fields(one[key], other[key]))
        elif one.get(key) != other.get(key):
            fields.append(key)
    return fields


def append_receipt(ledger, receipt, signer=None, trusted_keys=None, check_mode=False, now=None,
                   envelope_path=None, head_mirror=None, verify="tail", s3_heads=None):
    """Validate, sign and append one receipt under an exclusive lock; refuse a ledger that does not verify.

    verify="tail" (default) costs O(1) in the ledger's size: the signed head's signature, the tail entry it signs
    (canonical, hashes, schema, signature) and the head mirror; the entries before the tail are checked by full
    verification (state=verify), which verify="full" also runs before appending.
    s3_heads (optional, _s3.S3Heads): locked copies of the signed head in object storage, checked like the head
    mirror before the append and written after it.
    Idempotent per rollback_id: the same receipt again (differing at most in the times a rerun recomputes)
    returns the recorded entry unchanged (changed False); different content under a recorded rollback_id
    is refused, naming the fields that differ.
    Returns {changed, rollback_id, receipt, receipt_sha256, ledger_seq, entry_sha256, signed, keyid, envelope,
    head} (the module's return values).
    """
    now = now or utc_now()
    keys = list(trusted_keys or [])
    if signer is not None and all(k.keyid != signer.public_key.keyid for k in keys):
        keys.append(signer.public_key)
    check_depth(receipt)
    receipt = copy.deepcopy(receipt)
    validate_receipt(receipt)
    expected_keyid = signer.public_key.keyid if signer is not None else None
    if receipt["signing"]["keyid"] != expected_keyid:
        raise ReceiptError("receipt signing.keyid %s does not match the signing key %s"
                           % (receipt["signing"]["keyid"], expected_keyid), fields=["signing.keyid"])
    directory = os.path.dirname(os.path.abspath(ledger))
    path = envelope_path or envelope_path_for(ledger, receipt["rollback_id"])
    if not os.path.isdir(directory):
        if check_mode:
            return _plan(receipt, signer, 1, path, ledger)
        os.makedirs(directory, 0o750)
    flags = os.O_RDONLY if check_mode else (os.O_RDWR | os.O_CREAT | os.O_APPEND)
    try:
        fd = open_nofollow(ledger, flags, 0o640)
    except OSError as exc:
        if check_mode and exc.errno == errno.ENOENT:
            fd = None
        else:
            raise
    try:
        if fd is not None:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise LedgerError("ledger %s is not a regular file" % ledger)
            fcntl.flock(fd, fcntl.LOCK_SH if check_mode else fcntl.LOCK_EX)
        state, existing, length = _state_for_append(ledger, fd, keys, verify, receipt["rollback_id"])
        if not state["valid"]:
            raise LedgerError("refusing to append to %s: it does not verify: %s" % (ledger, state["message"]), state)
        if signer is None and state["checkpoint"] and state["checkpoint"]["signed"]:
            raise LedgerError("refusing to append to %s without a signing key: its head is signed and an unsigned "
                              "append would downgrade it; provide signing_key or signing_key_path" % ledger, state)
        if head_mirror:
            _check_mirror_for_append(head_mirror, state, keys)
        if s3_heads is not None:
            s3_heads.check_for_append(state, keys)
        if existing is not None:
            recorded, wanted = without_rerun_times(existing["receipt"]), without_rerun_times(receipt)
            if receipt_sha256(recorded) != receipt_sha256(wanted):
                differing = _differing_fields(wanted, recorded)
                raise LedgerError("rollback_id %s is already recorded at entry %d with different content (%s); a "
                                  "receipt is immutable: record this run under a new rollback_id"
                                  % (receipt["rollback_id"], existing["seq"], ", ".join(differing)), state)
            changed = False
            if existing["signatures"] and not check_mode:
                changed = _write_envelope_file(path, receipt_envelope(existing["receipt"], existing["signatures"]))
            return _result(existing, changed, path, ledger)
        signatures = _sign_receipt(receipt, signer)
        entry = make_entry(state["entries"] + 1, state["last_entry_sha256"], receipt, signatures, utc_stamp(now))
        if check_mode:
            return _result(entry, True, path, ledger)
        line = entry_line(entry)
        written = os.write(fd, line)
        if written != len(line):
            raise LedgerError("short write to %s (%d of %d bytes); the ledger now needs repair from its last good "
                              "copy" % (ledger, written, len(line)))
        os.fsync(fd)
        if not length:
            _fsync_dir(directory)
        head = canonical(make_checkpoint(entry["seq"], entry["entry_sha256"], utc_stamp(now), signer)) + b"\n"
        atomic_write(head_path(ledger), head)
        if head_mirror:
            _write_mirror(head_mirror, head, entry["seq"])
        if s3_heads is not None:
            s3_heads.put(head, entry["seq"])
        if signatures:
            _write_envelope_file(path, receipt_envelope(receipt, signatures))
        return _result(entry, True, path, ledger)
    finally:
        if fd is not None:
            os.close(fd)  # closing drops the flock


def _state_for_append(ledger, fd, keys, verify, rollback_id):
    """(state, recorded entry of rollback_id or None, ledger length) under the caller's lock."""
    head_bytes = _read_file(head_path(ledger))
    if fd is None:
        return verify_ledger_bytes(b"", head_bytes, keys or None), None, 0
    if verify == "full":
        data = _read_all(fd)
        state = verify_ledger_bytes(data, head_bytes, keys or None)
        existing = _find_existing(data, state["index"], rollback_id) if state["valid"] else None
        return state, existing, len(data)
    length = os.fstat(fd).st_size
    state = tail_state(fd, head_bytes, keys or None)
    existing = _find_by_id(fd, length, rollback_id, keys or None) if state["valid"] else None
    return state, existing, length


def _check_mirror_for_append(mirror, state, keys):
    """The head mirror never shrinks and never disagrees: refuse an append to a ledger behind or off its mirror."""
    mirror_bytes = _read_file(mirror)
    if mirror_bytes is None:
        return
    checkpoint, problem = parse_checkpoint(mirror_bytes, keys, "head mirror %s" % mirror)
    if problem:
        raise LedgerError("refusing to append: %s" % problem, state)
    if checkpoint["size"] > state["entries"]:
        raise LedgerError("refusing to append: head mirror %s is at seq %d but the ledger holds %d entries: the ledger "
                          "was truncated or rolled back to an older copy"
                          % (mirror, checkpoint["size"], state["entries"]), state)
    if checkpoint["size"] == state["entries"] and checkpoint["head"] != state["last_entry_sha256"]:
        raise LedgerError("refusing to append: entry %d does not match head mirror %s: the ledger was rewritten"
                          % (checkpoint["size"], mirror), state)


def _write_mirror(mirror, head, seq):
    directory = os.path.dirname(os.path.abspath(mirror))
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o750)
        atomic_write(mirror, head)
    except (IOError, OSError) as exc:
        raise LedgerError("the receipt is recorded at entry %d but the head mirror %s could not be written (%s): fix "
                          "it and append again; state=verify reports the mirror lagging until then" % (seq, mirror, exc))


def _write_envelope_file(path, envelope):
    content = canonical(envelope) + b"\n"
    if _read_file(path, MAX_ENVELOPE_BYTES) == content:
        return False
    atomic_write(path, content, 0o644)
    return True


def _sign_receipt(receipt, signer):
    if signer is None:
        return []
    return sign_payload(statement_payload(receipt), STATEMENT_PAYLOAD_TYPE, signer)["signatures"]


def _plan(receipt, signer, seq, envelope_path, ledger):
    entry = make_entry(seq, GENESIS, receipt, _sign_receipt(receipt, signer), utc_stamp(utc_now()))
    return _result(entry, True, envelope_path, ledger)


def _result(entry, changed, envelope_path, ledger):
    return entry_result(entry, changed, envelope_path, head_path(ledger))


def entry_result(entry, changed, envelope_path, head):
    """append's return values for an entry (the module's): envelope only when signed, head where it is kept."""
    signed = bool(entry["signatures"])
    return {
        "changed": changed,
        "rollback_id": entry["rollback_id"],
        "receipt": entry["receipt"],
        "receipt_sha256": entry["receipt_sha256"],
        "ledger_seq": entry["seq"],
        "entry_sha256": entry["entry_sha256"],
        "signed": signed,
        "keyid": entry["receipt"]["signing"]["keyid"],
        "envelope": envelope_path if signed else None,
        "head": head,
    }


def receipt_summary(receipt, digest, seq):
    """The small dict published through set_stats / ansible_stats for AWX job artifacts."""
    return {
        "rollback_id": receipt["rollback_id"],
        "outcome": receipt["outcome"],
        "rollback_type": receipt["rollback_type"],
        "incident_id": receipt["incident_id"],
        "requested_by": receipt["requested_by"],
        "approver": receipt["approver"],
        "emergency": receipt["emergency"],
        "retroactive_approval_due": receipt["retroactive_approval_due"],
        "evidence_archive_sha256": (receipt.get("evidence") or {}).get("archive_sha256"),
        "receipt_sha256": digest,
        "ledger_seq": seq,
        "signed": receipt["signing"]["signed"],
    }


def find_entry(ledger, rollback_id, keys=None):
    """The ledger entry recording ``rollback_id`` (its own hash, receipt digest and, with ``keys``, signature
    checked), or None when the ledger or the entry does not exist. For readers such as the rollback report."""
    try:
        fd = open_nofollow(ledger, os.O_RDONLY)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        return _find_by_id(fd, os.fstat(fd).st_size, rollback_id, keys)
    finally:
        os.close(fd)


def read_entries(ledger):
    """Every entry of the ledger as parsed JSON, in order (no verification: state=verify does that)."""
    data = _read_file(ledger, 1 << 40)
    if not data:
        return []
    return [json.loads(line.decode("utf-8")) for line in data.split(b"\n") if line.strip()]
