# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signed approval statements (pure logic, no I/O but what the caller reads for us).

An approval is a short JSON statement that binds one approver's "yes" to one plan: the rollback type, the target,
the from and to references, the digest of the plan's binding, the incident and an expiry. The approver signs the
statement's exact bytes with the SSH key they already have::

    ssh-keygen -Y sign -f ~/.ssh/id_ed25519 -n governed-rollback-approval statement.json   # -> statement.json.sig

and the roster lists each person's public key(s) (the ``allowed_signers`` idea of OpenSSH, as inventory data or an
allowed_signers file). SSH signatures were chosen over a DSSE envelope because every engineer already has an SSH key
and ``ssh-keygen``, hardware-backed keys included, so approving needs no new tool; the verification below is
OpenSSH's SSHSIG format (PROTOCOL.sshsig) checked with ``cryptography``. Ed25519 keys only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import datetime
import hashlib
import json
import re
import struct

from ansible_collections.governed.rollback.plugins.module_utils._common import (
    RollbackError, json_sha256, utc_now, utc_stamp,
)

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - exercised only without the library
    HAS_CRYPTOGRAPHY = False

STATEMENT_TYPE = "governed.rollback/approval/v1"
NAMESPACE = "governed-rollback-approval"
STATEMENT_KEYS = ("type", "rollback_type", "target", "from_ref", "to_ref", "binding_sha256", "incident_id",
                  "expires_at")
MAX_STATEMENT_BYTES = 8192
MAX_TTL_HOURS = 24
_MAGIC = b"SSHSIG"
_ARMOR_RE = re.compile(r"-----BEGIN SSH SIGNATURE-----\s*(.*?)\s*-----END SSH SIGNATURE-----", re.S)
_TIME_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")


class StatementError(RollbackError):
    """A signed approval that cannot count; the message says why (never a key or signature byte)."""


# --------------------------------------------------------------------------- the statement

def binding_sha256(binding):
    return json_sha256(binding or {})


def build_statement(rollback_type, target, from_ref, to_ref, binding, incident_id, expires_at):
    """The statement an approver signs for one plan (a dict; sign ``statement_bytes`` of it)."""
    return {
        "type": STATEMENT_TYPE,
        "rollback_type": rollback_type,
        "target": target,
        "from_ref": from_ref,
        "to_ref": to_ref,
        "binding_sha256": binding_sha256(binding),
        "incident_id": incident_id,
        "expires_at": expires_at,
    }


def statement_bytes(statement):
    """The exact bytes to sign: compact, key-sorted JSON and a final newline (what a shell redirect leaves)."""
    return (json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def default_expiry(now=None, hours=1):
    return utc_stamp((now or utc_now()) + datetime.timedelta(hours=hours))


def _parse_time(text):
    if not isinstance(text, str) or not _TIME_RE.match(text):
        return None
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)


def load_statement(data):
    """Parse a signed statement's bytes into a dict; StatementError if it is not one."""
    if not isinstance(data, bytes):
        data = data.encode("utf-8")
    if len(data) > MAX_STATEMENT_BYTES:
        raise StatementError("the statement is %d bytes; a statement is at most %d" % (len(data), MAX_STATEMENT_BYTES))
    try:
        statement = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StatementError("the statement is not JSON: %s" % exc)
    if not isinstance(statement, dict):
        raise StatementError("the statement is not a JSON object")
    missing = [key for key in STATEMENT_KEYS if key not in statement]
    if missing:
        raise StatementError("the statement lacks %s" % ", ".join(missing))
    unknown = sorted(set(statement) - set(STATEMENT_KEYS))
    if unknown:
        raise StatementError("the statement has unknown keys %s" % ", ".join(unknown))
    if statement["type"] != STATEMENT_TYPE:
        raise StatementError("the statement's type is %r, not %s" % (statement["type"], STATEMENT_TYPE))
    return statement


def check_statement(statement, expected, now=None, max_ttl_hours=MAX_TTL_HOURS):
    """Compare a statement with the statement expected for this plan; return the reasons it cannot count."""
    now = now or utc_now()
    reasons = []
    for key in ("rollback_type", "target", "from_ref", "to_ref", "binding_sha256", "incident_id"):
        if statement.get(key) != expected.get(key):
            reasons.append("it approves %s %r, this plan has %r" % (key, statement.get(key), expected.get(key)))
    expires = _parse_time(statement.get("expires_at"))
    if expires is None:
        reasons.append("its expires_at %r is not a UTC time like 2024-01-15T10:30:45Z" % (statement.get("expires_at"),))
    elif expires <= now:
        reasons.append("it expired at %s" % statement["expires_at"])
    elif expires > now + datetime.timedelta(hours=max_ttl_hours):
        reasons.append("it expires at %s, more than %d hours from now (approvals are short-lived)"
                       % (statement["expires_at"], max_ttl_hours))
    return reasons


# --------------------------------------------------------------------------- SSH keys and signatures

def _read_string(data, offset):
    if offset + 4 > len(data):
        raise StatementError("truncated SSH data")
    (length,) = struct.unpack(">I", data[offset:offset + 4])
    start, end = offset + 4, offset + 4 + length
    if end > len(data):
        raise StatementError("truncated SSH data")
    return data[start:end], end


def _ssh_string(value):
    return struct.pack(">I", len(value)) + value


def key_sha256(blobs, wanted_fingerprint):
    """Hex sha256 of the key blob whose OpenSSH fingerprint is ``wanted_fingerprint``."""
    for blob in blobs:
        if fingerprint(blob) == wanted_fingerprint:
            return hashlib.sha256(blob).hexdigest()
    raise StatementError("internal: the verified key is not among the signer's keys")


def fingerprint(blob):
    """OpenSSH's SHA256 fingerprint of a public key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def parse_public_key(line):
    """``ssh-ed25519 AAAA... [comment]`` -> the key blob; StatementError for anything else."""
    parts = (line or "").split()
    if len(parts) < 2:
        raise StatementError("not an SSH public key line: expected 'ssh-ed25519 AAAA...'")
    keytype, encoded = parts[0], parts[1]
    if keytype != "ssh-ed25519":
        raise StatementError("key type %s is not supported; approvals use ssh-ed25519 keys" % keytype)
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise StatementError("the ssh-ed25519 key is not valid base64")
    name, offset = _read_string(blob, 0)
    raw, offset = _read_string(blob, offset)
    if name != b"ssh-ed25519" or len(raw) != 32 or offset != len(blob):
        raise StatementError("the ssh-ed25519 key blob is malformed")
    return blob


def parse_allowed_signers(text):
    """OpenSSH allowed_signers lines -> {principal: [key blob, ...]} (options such as namespaces= are honoured:
    a key limited to other namespaces is left out)."""
    signers = {}
    for number, raw in enumerate((text or "").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        principals = fields[0].split(",")
        rest = fields[1:]
        options = ""
        if rest and not rest[0].startswith("ssh-") and not rest[0].startswith("ecdsa-") and not rest[0].startswith("sk-"):
            options, rest = rest[0], rest[1:]
        namespaces = [o.split("=", 1)[1].strip('"') for o in options.split(",") if o.startswith("namespaces=")]
        if namespaces and NAMESPACE not in ",".join(namespaces).split(","):
            continue
        try:
            blob = parse_public_key(" ".join(rest))
        except StatementError as exc:
            raise StatementError("allowed_signers line %d: %s" % (number, exc.msg))
        for principal in principals:
            signers.setdefault(principal, []).append(blob)
    return signers


def parse_signature(armored):
    """An armored SSH signature -> (public key blob, namespace, hash algorithm, raw signature)."""
    match = _ARMOR_RE.search(armored or "")
    if not match:
        raise StatementError("not an SSH signature (expected -----BEGIN SSH SIGNATURE----- ... as ssh-keygen -Y sign "
                             "writes it)")
    try:
        data = base64.b64decode("".join(match.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        raise StatementError("the SSH signature is not valid base64")
    if data[:6] != _MAGIC or len(data) < 10:
        raise StatementError("the SSH signature lacks the SSHSIG preamble")
    (version,) = struct.unpack(">I", data[6:10])
    if version != 1:
        raise StatementError("SSH signature version %d is not supported" % version)
    public_key, offset = _read_string(data, 10)
    namespace, offset = _read_string(data, offset)
    _reserved, offset = _read_string(data, offset)
    hash_algorithm, offset = _read_string(data, offset)
    signature, offset = _read_string(data, offset)
    if offset != len(data):
        raise StatementError("the SSH signature has trailing bytes")
    sig_type, sig_offset = _read_string(signature, 0)
    raw, sig_offset = _read_string(signature, sig_offset)
    if sig_type != b"ssh-ed25519" or len(raw) != 64 or sig_offset != len(signature):
        raise StatementError("the SSH signature is not an ssh-ed25519 signature")
    return public_key, namespace.decode("utf-8", "replace"), hash_algorithm.decode("ascii", "replace"), raw


def signed_data(message, namespace, hash_algorithm):
    digest = {"sha512": hashlib.sha512, "sha256": hashlib.sha256}[hash_algorithm](message).digest()
    return (_MAGIC + _ssh_string(namespace.encode("utf-8")) + _ssh_string(b"")
            + _ssh_string(hash_algorithm.encode("ascii")) + _ssh_string(digest))


def verify_signature(message, armored, allowed_blobs):
    """Verify an SSHSIG over ``message`` by one of ``allowed_blobs``; return the signing key's fingerprint."""
    if not HAS_CRYPTOGRAPHY:
        raise StatementError("the cryptography Python library is required to verify signed approvals")
    public_key, namespace, hash_algorithm, raw = parse_signature(armored)
    if namespace != NAMESPACE:
        raise StatementError("it is signed for namespace %r; sign with -n %s" % (namespace, NAMESPACE))
    if hash_algorithm not in ("sha512", "sha256"):
        raise StatementError("hash algorithm %s is not supported" % hash_algorithm)
    if public_key not in allowed_blobs:
        raise StatementError("it is signed by key %s, which the roster does not list for this person"
                             % fingerprint(public_key))
    _name, offset = _read_string(public_key, 0)
    key_bytes, _offset = _read_string(public_key, offset)
    try:
        Ed25519PublicKey.from_public_bytes(key_bytes).verify(raw, signed_data(message, namespace, hash_algorithm))
    except InvalidSignature:
        raise StatementError("its signature does not verify (the statement was changed after signing, or signed "
                             "by another key)")
    return fingerprint(public_key)


def sign_statement_for_tests(private_key, message, namespace=NAMESPACE, hash_algorithm="sha512"):
    """An armored SSHSIG made with a cryptography Ed25519PrivateKey, byte-compatible with ``ssh-keygen -Y sign``
    (used by tests and by approvers without OpenSSH)."""
    from cryptography.hazmat.primitives import serialization

    raw_public = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    blob = _ssh_string(b"ssh-ed25519") + _ssh_string(raw_public)
    raw = private_key.sign(signed_data(message, namespace, hash_algorithm))
    data = (_MAGIC + struct.pack(">I", 1) + _ssh_string(blob) + _ssh_string(namespace.encode("utf-8"))
            + _ssh_string(b"") + _ssh_string(hash_algorithm.encode("ascii"))
            + _ssh_string(_ssh_string(b"ssh-ed25519") + _ssh_string(raw)))
    encoded = base64.b64encode(data).decode("ascii")
    lines = [encoded[i:i + 70] for i in range(0, len(encoded), 70)]
    return "-----BEGIN SSH SIGNATURE-----\n%s\n-----END SSH SIGNATURE-----\n" % "\n".join(lines)


def public_key_line(private_key, comment=""):
    from cryptography.hazmat.primitives import serialization

    raw_public = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    blob = _ssh_string(b"ssh-ed25519") + _ssh_string(raw_public)
    return ("ssh-ed25519 %s %s" % (base64.b64encode(blob).decode("ascii"), comment)).strip()


def verify_signed_approvals(signed, expected, keys_by_name, now=None):
    """Check each ``{statement, signature}`` against the plan's expected statement and the roster's keys.

    Returns ``(verified, rejected)``: verified ``[{name, fingerprint, statement_sha256, expires_at}]`` (one per
    person: a second valid statement by the same person adds nothing), rejected ``[{index, name, reason}]``.
    """
    verified, rejected, seen = [], [], set()
    for index, item in enumerate(signed or []):
        if not isinstance(item, dict) or not isinstance(item.get("statement"), str) \
                or not isinstance(item.get("signature"), str):
            rejected.append({"index": index, "name": None,
                             "reason": "each signed approval needs 'statement' (the signed text) and 'signature'"})
            continue
        message = item["statement"].encode("utf-8")
        try:
            statement = load_statement(message)
            public_key = parse_signature(item["signature"])[0]
        except StatementError as exc:
            rejected.append({"index": index, "name": None, "reason": exc.msg})
            continue
        owners = sorted(name for name, blobs in keys_by_name.items() if public_key in blobs)
        if not owners:
            rejected.append({"index": index, "name": None,
                             "reason": "signed by key %s, which no one in the roster holds" % fingerprint(public_key)})
            continue
        if len(owners) > 1:
            rejected.append({"index": index, "name": None, "reason": "key %s is listed for several people (%s); a "
                             "key must belong to one person" % (fingerprint(public_key), ", ".join(owners))})
            continue
        name = owners[0]
        try:
            key_fingerprint = verify_signature(message, item["signature"], keys_by_name[name])
        except StatementError as exc:
            rejected.append({"index": index, "name": name, "reason": exc.msg})
            continue
        reasons = check_statement(statement, expected, now)
        if reasons:
            rejected.append({"index": index, "name": name, "reason": "; ".join(reasons)})
            continue
        if name in seen:
            continue
        seen.add(name)
        # The key as a hex digest: receipts refuse base64-looking strings as possible secrets, and a hex sha256 is
        # as checkable (OpenSSH's SHA256:<base64> fingerprint is the same digest, differently written).
        verified.append({"name": name, "key_sha256": key_sha256(keys_by_name[name], key_fingerprint),
                         "statement_sha256": hashlib.sha256(message).hexdigest(), "expires_at": statement["expires_at"]})
    return verified, rejected
