"""Signed approval statements: the SSHSIG format, OpenSSH's allowed_signers, and a statement's binding to a plan."""

import datetime
import json
import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ansible_collections.governed.rollback.plugins.module_utils import _approval_statement as stmt

NOW = datetime.datetime(2024, 1, 15, 10, 30, 45, tzinfo=datetime.timezone.utc)
PLAN = dict(rollback_type="policy", target="policy pii-access-requires-approval", from_ref="a" * 40, to_ref="b" * 40,
            binding={"revision": "a" * 40}, incident_id="INC-7", expires_at="2024-01-15T11:30:45Z")


def statement():
    return stmt.build_statement(**PLAN)


def test_a_signature_made_here_verifies_and_names_the_key():
    key = Ed25519PrivateKey.generate()
    message = stmt.statement_bytes(statement())
    armored = stmt.sign_statement_for_tests(key, message)
    blob = stmt.parse_public_key(stmt.public_key_line(key, "eng-lead"))
    assert stmt.verify_signature(message, armored, [blob]) == stmt.fingerprint(blob)


def test_one_changed_byte_of_the_statement_fails_verification():
    key = Ed25519PrivateKey.generate()
    message = stmt.statement_bytes(statement())
    armored = stmt.sign_statement_for_tests(key, message)
    blob = stmt.parse_public_key(stmt.public_key_line(key))
    with pytest.raises(stmt.StatementError, match="does not verify"):
        stmt.verify_signature(message.replace(b"INC-7", b"INC-8"), armored, [blob])


def test_another_namespace_and_an_unlisted_key_are_refused():
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    message = stmt.statement_bytes(statement())
    blob = stmt.parse_public_key(stmt.public_key_line(key))
    with pytest.raises(stmt.StatementError, match="signed for namespace 'git'"):
        stmt.verify_signature(message, stmt.sign_statement_for_tests(key, message, namespace="git"), [blob])
    with pytest.raises(stmt.StatementError, match="which the roster does not list"):
        stmt.verify_signature(message, stmt.sign_statement_for_tests(other, message), [blob])


@pytest.mark.skipif(not shutil.which("ssh-keygen"), reason="ssh-keygen (OpenSSH client) is not installed")
def test_signatures_are_byte_compatible_with_ssh_keygen_both_ways(tmp_path):
    key_path = str(tmp_path / "id")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "eng-lead", "-f", key_path], check=True)
    public = open(key_path + ".pub").read().strip()
    message = stmt.statement_bytes(statement())
    (tmp_path / "s.json").write_bytes(message)
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", key_path, "-n", stmt.NAMESPACE, str(tmp_path / "s.json")],
                   check=True, capture_output=True)
    assert stmt.verify_signature(message, (tmp_path / "s.json.sig").read_text(), [stmt.parse_public_key(public)])
    # And ssh-keygen -Y verify accepts what sign_statement_for_tests writes.
    key = Ed25519PrivateKey.generate()
    (tmp_path / "allowed").write_text("eng-lead %s\n" % stmt.public_key_line(key))
    (tmp_path / "ours.sig").write_text(stmt.sign_statement_for_tests(key, message))
    done = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(tmp_path / "allowed"), "-I", "eng-lead", "-n",
                           stmt.NAMESPACE, "-s", str(tmp_path / "ours.sig")], input=message, capture_output=True,
                          check=False)
    assert done.returncode == 0, done.stderr


def test_allowed_signers_lines_with_principals_options_and_comments():
    one, two = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    text = "\n".join([
        "# approvers",
        "eng-lead,el@example.org %s" % stmt.public_key_line(one, "laptop"),
        'dba namespaces="governed-rollback-approval,file" %s' % stmt.public_key_line(two),
        'git-only namespaces="git" %s' % stmt.public_key_line(two),
        "",
    ])
    signers = stmt.parse_allowed_signers(text)
    assert sorted(signers) == ["dba", "el@example.org", "eng-lead"]
    assert signers["dba"] == [stmt.parse_public_key(stmt.public_key_line(two))]


@pytest.mark.parametrize("line, message", [
    ("ssh-rsa AAAAB3NzaC1yc2E", "not supported"),
    ("ssh-ed25519 !!!", "not valid base64"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5", "truncated"),
    ("ssh-ed25519", "not an SSH public key line"),
])
def test_bad_public_keys_are_refused_clearly(line, message):
    with pytest.raises(stmt.StatementError, match=message):
        stmt.parse_public_key(line)


@pytest.mark.parametrize("armored, message", [
    ("", "not an SSH signature"),
    ("-----BEGIN SSH SIGNATURE-----\n!!!\n-----END SSH SIGNATURE-----", "not valid base64"),
    ("-----BEGIN SSH SIGNATURE-----\nQUJD\n-----END SSH SIGNATURE-----", "SSHSIG preamble"),
])
def test_bad_signatures_are_refused_clearly(armored, message):
    with pytest.raises(stmt.StatementError, match=message):
        stmt.parse_signature(armored)


@pytest.mark.parametrize("data, message", [
    (b"[]", "not a JSON object"),
    (b"{", "not JSON"),
    (json.dumps(dict(statement(), extra=1)).encode(), "unknown keys extra"),
    (json.dumps(dict(statement(), type="other")).encode(), "type is 'other'"),
    (b"{" + b" " * 9000 + b"}", "at most 8192"),
])
def test_malformed_statements_are_refused(data, message):
    with pytest.raises(stmt.StatementError, match=message):
        stmt.load_statement(data)


def test_a_statement_checks_against_the_plan_and_its_expiry():
    expected = statement()
    assert stmt.check_statement(statement(), expected, now=NOW) == []
    assert stmt.check_statement(statement(), expected, now=NOW + datetime.timedelta(hours=2)) == [
        "it expired at 2024-01-15T11:30:45Z"]
    moved = dict(statement(), binding_sha256="0" * 64)
    assert stmt.check_statement(moved, expected, now=NOW)[0].startswith("it approves binding_sha256")
