"""Hostile input against the receipt ledger: each case asserts a clear refusal (or invalid verdict) and no byte changed.

A genuine signed ledger of three entries is built once; every case copies it into its own directory, attacks it,
then checks that verification names the problem, that an append (O(1) tail check and full check) is refused, and
that the ledger, its head, its mirror and its envelopes are byte for byte what they were before the append.
"""

import datetime
import json
import os
import shutil

import pytest
from securesystemslib.signer import CryptoSigner

from ansible_collections.governed.rollback.plugins.module_utils import _receipt as R
from ansible_collections.governed.rollback.plugins.module_utils._approval import evaluate

ROSTER = {"oncall": ["on_call_engineer"], "eng-lead": ["engineering_lead"], "dba": ["dba"]}
NOW = datetime.datetime(2024, 1, 15, 10, 30, 45, tzinfo=datetime.timezone.utc)
IDS = ["rollback-20240115-10300%d" % i for i in range(3)]


def make_receipt(signer, rollback_id):
    decision = evaluate("database", "oncall", ["dba", "eng-lead"], ROSTER, now=NOW)
    return R.build_receipt(
        dict(rollback_id=rollback_id, outcome="succeeded", incident_id="INC-12345", environment="sandbox",
             reason="hostile ledger test", component="database", from_version="v0.1.2", to_version="v0.1.1",
             current_ref="sha256:" + "a" * 64, rollback_target_ref="b" * 40),
        approval={"decision": decision}, evidence={"archive": "/tmp/x.tar.gz", "archive_sha256": "c" * 64},
        keyid=signer.public_key.keyid, now=NOW)


@pytest.fixture(scope="module")
def signer():
    return R.load_signer(CryptoSigner.generate_ed25519().private_bytes)


@pytest.fixture(scope="module")
def genuine(tmp_path_factory, signer):
    """{name: bytes} of a genuine 3-entry ledger directory (ledger, head, envelopes), the mirror and the results."""
    directory = tmp_path_factory.mktemp("genuine")
    ledger = str(directory / "receipts" / "ledger.jsonl")
    mirror = str(directory / "mirror" / "ledger.head")
    results = [R.append_receipt(ledger, make_receipt(signer, rid), signer=signer, head_mirror=mirror) for rid in IDS]
    files = {}
    for name in os.listdir(os.path.dirname(ledger)):
        with open(os.path.join(os.path.dirname(ledger), name), "rb") as handle:
            files[name] = handle.read()
    with open(mirror, "rb") as handle:
        mirror_bytes = handle.read()
    return {"files": files, "mirror": mirror_bytes, "results": results}


class Ledger(object):
    def __init__(self, tmp_path, genuine):
        self.dir = tmp_path / "receipts"
        self.dir.mkdir()
        for name, data in genuine["files"].items():
            (self.dir / name).write_bytes(data)
        self.path = str(self.dir / "ledger.jsonl")
        self.head = R.head_path(self.path)
        (tmp_path / "mirror").mkdir()
        self.mirror = str(tmp_path / "mirror" / "ledger.head")
        with open(self.mirror, "wb") as handle:
            handle.write(genuine["mirror"])
        self.results = genuine["results"]

    def lines(self):
        return self.read(self.path).split(b"\n")[:-1]

    def write(self, path, data):
        with open(path, "wb") as handle:
            handle.write(data)

    @staticmethod
    def read(path):
        with open(path, "rb") as handle:
            return handle.read()

    def snapshot(self):
        found = {}
        for base in (str(self.dir), os.path.dirname(self.mirror)):
            for name in sorted(os.listdir(base)):
                path = os.path.join(base, name)
                found[path] = os.readlink(path) if os.path.islink(path) else self.read(path)
        return found


@pytest.fixture
def book(tmp_path, genuine):
    return Ledger(tmp_path, genuine)


def refuses_every_append(book, signer, match, **kwargs):
    """Both append checks refuse with `match` and change nothing on disk."""
    before = book.snapshot()
    for verify in ("tail", "full"):
        with pytest.raises(R.LedgerError, match=match):
            R.append_receipt(book.path, make_receipt(signer, "rollback-20240115-999999"), signer=signer,
                             verify=verify, **kwargs)
        assert book.snapshot() == before


def entry_json(entry):
    return json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()


def rehash(entry):
    body = dict((k, v) for k, v in entry.items() if k != "entry_sha256")
    try:
        entry["entry_sha256"] = R.sha256_hex(R.canonical(body))
    except R.ReceiptError:
        pass  # not canonicalizable (2**64): the attacker cannot rehash it either
    return entry


# ---------------------------------------------------------------- hostile last lines

DEEP = 100000
HOSTILE_LINES = {
    "deeply nested list": b"[" * DEEP + b"]" * DEEP,
    "deeply nested object": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "huge integer seq": b'{"seq":' + b"9" * 5000 + b"}",
    "huge float seq": b'{"seq":1e999}',
    "NaN seq": b'{"seq":NaN}',
    "Infinity seq": b'{"seq":Infinity}',
    "negative Infinity": b'{"seq":-Infinity}',
    "duplicate keys": b'{"seq":3,"seq":3}',
    "empty line": b"",
    "whitespace line": b"   ",
    "not UTF-8": b"\xff\xfe\x00{",
    "a JSON string": b'"entry"',
    "a JSON number": b"3",
    "JSON null": b"null",
    "a JSON array of entries": b"[{}]",
    "an empty object": b"{}",
    "binary garbage": bytes(range(1, 256)).replace(b"\n", b""),
    "NUL bytes": b"\x00" * 64,
}


@pytest.mark.parametrize("name", sorted(HOSTILE_LINES))
def test_hostile_line_appended_is_named_and_refused(book, signer, name):
    book.write(book.path, book.read(book.path) + HOSTILE_LINES[name] + b"\n")
    state = R.verify_ledger(book.path, [signer.public_key])
    assert state["valid"] is False and state["first_bad_entry"] == 4
    assert state["message"].startswith("entry 4 ")
    refuses_every_append(book, signer, "refusing to append")


def test_deeply_nested_receipt_inside_a_real_entry_is_refused_without_a_traceback(book, signer):
    lines = book.lines()
    deep = b'{"x":' * 20000 + b"1" + b"}" * 20000
    lines[-1] = lines[-1].replace(b'"component":', b'"details":' + deep + b',"component":', 1)
    book.write(book.path, b"\n".join(lines) + b"\n")
    state = R.verify_ledger(book.path, [signer.public_key])
    assert state["valid"] is False and state["first_bad_entry"] == 3
    refuses_every_append(book, signer, "refusing to append")


WRONG_VALUES = [None, True, 0, -1, 1.5, 2 ** 64, "3", "", [], {}]


@pytest.mark.parametrize("field", R.ENTRY_KEYS)
@pytest.mark.parametrize("value", WRONG_VALUES, ids=repr)
def test_wrong_type_in_every_entry_field_even_rehashed_is_refused(book, signer, field, value):
    lines = book.lines()
    entry = json.loads(lines[-1])
    if entry[field] == value and type(entry[field]) is type(value):
        pytest.skip("not a change")
    entry[field] = value
    if field != "entry_sha256":
        rehash(entry)  # the attacker recomputes the entry's own hash; the chain, digests and head still catch it
    lines[-1] = entry_json(entry)
    book.write(book.path, b"\n".join(lines) + b"\n")
    state = R.verify_ledger(book.path, [signer.public_key])
    assert state["valid"] is False and state["first_bad_entry"] in (3, None)
    assert state["message"]
    refuses_every_append(book, signer, "refusing to append")


@pytest.mark.parametrize("cut", [1, 2, 40, 400])
def test_torn_last_line_is_named_and_refused(book, signer, cut):
    book.write(book.path, book.read(book.path)[:-cut])
    state = R.verify_ledger(book.path, [signer.public_key])
    assert state["valid"] is False and "entry 3 is incomplete" in state["message"]
    refuses_every_append(book, signer, "incomplete|refusing to append")


def test_a_torn_line_followed_by_a_newline_is_not_an_entry(book, signer):
    data = book.read(book.path)
    book.write(book.path, data[:-200] + b"\n")
    state = R.verify_ledger(book.path, [signer.public_key])
    assert state["valid"] is False and state["first_bad_entry"] == 3 and "not valid JSON" in state["message"]
    refuses_every_append(book, signer, "refusing to append")


# ---------------------------------------------------------------- truncation and rollback of the whole ledger

def put_back_older(book, signer, keep):
    """Truncate to `keep` entries and put back the genuine head of that moment (re-signed as the tool signs)."""
    lines = book.lines()[:keep]
    book.write(book.path, b"".join(line + b"\n" for line in lines))
    if keep:
        entry = json.loads(lines[-1])
        book.write(book.head, R.canonical(R.make_checkpoint(keep, entry["entry_sha256"], "2024-01-15T10:30:45Z",
                                                            signer)) + b"\n")
    else:
        os.unlink(book.head)
    for rid in IDS[keep:]:
        os.unlink(str(book.dir / ("%s.intoto.jsonl" % rid)))


def witnesses_of(book, kind="receipt"):
    key = "receipt_sha256" if kind == "receipt" else "entry_sha256"
    return [{"seq": r["ledger_seq"], key: r[key], "name": "AWX job %d" % r["ledger_seq"]} for r in book.results]


@pytest.mark.parametrize("keep", [2, 1])
def test_older_genuine_head_with_truncated_ledger_passes_alone_but_fails_with_witnesses(book, signer, keep):
    put_back_older(book, signer, keep)
    assert R.verify_ledger(book.path, [signer.public_key])["valid"] is True  # the gap witnesses and the mirror close
    for kind in ("receipt", "entry"):
        state = R.verify_ledger(book.path, [signer.public_key], witnesses=witnesses_of(book, kind))
        assert state["valid"] is False
        assert "ledger lacks entry %d, which witness %d (AWX job %d) saw" % (keep + 1, keep + 1, keep + 1) in state["message"]


@pytest.mark.parametrize("keep", [2, 1])
def test_older_genuine_head_with_truncated_ledger_fails_against_the_mirror_and_append_is_refused(book, signer, keep):
    put_back_older(book, signer, keep)
    state = R.verify_ledger(book.path, [signer.public_key], head_mirror=book.mirror)
    assert state["valid"] is False
    assert "head mirror %s is at seq 3 but the ledger holds %d entries" % (book.mirror, keep) in state["message"]
    refuses_every_append(book, signer, "head mirror .* is at seq 3 but the ledger holds %d" % keep, head_mirror=book.mirror)


def test_deleted_ledger_and_head_with_envelopes_left_is_an_erased_receipt(book, signer):
    os.unlink(book.path)
    os.unlink(book.head)
    state = R.verify_ledger(book.path, [signer.public_key])
    assert state["valid"] is False
    assert "receipt envelope %s.intoto.jsonl holds the receipt of %s" % (IDS[0], IDS[0]) in state["message"]
    assert "an erased receipt" in state["message"] and state["bad_rollback_id"] == IDS[0]
    state = R.verify_ledger(book.path, [signer.public_key], head_mirror=book.mirror, envelopes=False)
    assert state["valid"] is False and "head mirror" in state["message"]


def test_truncation_without_touching_the_envelopes_is_an_erased_receipt(book, signer):
    lines = book.lines()[:2]
    book.write(book.path, b"".join(line + b"\n" for line in lines))
    entry = json.loads(lines[-1])
    book.write(book.head, R.canonical(R.make_checkpoint(2, entry["entry_sha256"], "2024-01-15T10:30:45Z", signer)) + b"\n")
    state = R.verify_ledger(book.path, [signer.public_key])
    assert state["valid"] is False and IDS[2] in state["message"] and "erased receipt" in state["message"]


def test_an_envelope_that_contradicts_its_entry_is_named(book, signer):
    name = "%s.intoto.jsonl" % IDS[1]
    forged = make_receipt(signer, IDS[1])
    forged["reason"] = "a different story"
    envelope = R.receipt_envelope(forged, R._sign_receipt(forged, signer))
    book.write(str(book.dir / name), R.canonical(envelope) + b"\n")
    state = R.verify_ledger(book.path, [signer.public_key])
    assert state["valid"] is False and "receipt envelope %s contradicts entry 2" % name in state["message"]


@pytest.mark.parametrize("garbage", [b"", b"{", b"[]", b"{}", b'{"payload":"!!","payloadType":"x","signatures":[]}',
                                     b"[" * 50000 + b"]" * 50000])
def test_a_garbage_envelope_beside_the_ledger_is_named(book, signer, garbage):
    book.write(str(book.dir / "planted.intoto.jsonl"), garbage)
    state = R.verify_ledger(book.path, [signer.public_key])
    assert state["valid"] is False and "receipt envelope planted.intoto.jsonl" in state["message"]


def test_an_envelope_signed_by_another_key_is_named(book, signer):
    stranger = R.load_signer(CryptoSigner.generate_ed25519().private_bytes)
    receipt = make_receipt(stranger, "rollback-20240115-777777")
    book.write(str(book.dir / "rollback-20240115-777777.intoto.jsonl"),
               R.canonical(R.receipt_envelope(receipt, R._sign_receipt(receipt, stranger))) + b"\n")
    state = R.verify_ledger(book.path, [signer.public_key])
    assert state["valid"] is False and "signature does not verify" in state["message"]


def test_a_mirror_that_disagrees_with_the_ledger_is_a_rewrite(book, signer):
    book.write(book.mirror, R.canonical(R.make_checkpoint(3, "e" * 64, "2024-01-15T10:30:45Z", signer)) + b"\n")
    state = R.verify_ledger(book.path, [signer.public_key], head_mirror=book.mirror)
    assert state["valid"] is False and "entry 3 does not match head mirror" in state["message"]
    refuses_every_append(book, signer, "entry 3 does not match head mirror", head_mirror=book.mirror)


def test_a_missing_mirror_beside_a_ledger_is_invalid(book, signer):
    os.unlink(book.mirror)
    state = R.verify_ledger(book.path, [signer.public_key], head_mirror=book.mirror)
    assert state["valid"] is False and "head mirror %s is missing" % book.mirror in state["message"]


def test_a_mirror_signed_by_another_key_is_refused(book, signer):
    stranger = R.load_signer(CryptoSigner.generate_ed25519().private_bytes)
    head = json.loads(book.read(book.head))
    checkpoint = json.loads(R.base64.b64decode(head["payload"]))
    book.write(book.mirror, R.canonical(R.make_checkpoint(checkpoint["size"], checkpoint["head"], "x", stranger)) + b"\n")
    state = R.verify_ledger(book.path, [signer.public_key], head_mirror=book.mirror)
    assert state["valid"] is False and "head mirror" in state["message"] and "does not verify" in state["message"]
    refuses_every_append(book, signer, "head mirror .* does not verify", head_mirror=book.mirror)


def test_the_mirror_grows_with_every_append_and_never_shrinks(book, signer):
    result = R.append_receipt(book.path, make_receipt(signer, "rollback-20240115-999999"), signer=signer,
                              head_mirror=book.mirror)
    assert result["ledger_seq"] == 4
    assert book.read(book.mirror) == book.read(book.head)
    state = R.verify_ledger(book.path, [signer.public_key], head_mirror=book.mirror, witnesses=witnesses_of(book))
    assert state["valid"] is True and state["mirror"]["size"] == 4 and state["witnesses_checked"] == 3


# ---------------------------------------------------------------- witnesses that contradict, and hostile witnesses

def test_a_witness_with_another_digest_is_named(book, signer):
    witnesses = witnesses_of(book)
    witnesses[1]["receipt_sha256"] = "f" * 64
    state = R.verify_ledger(book.path, [signer.public_key], witnesses=witnesses)
    assert state["valid"] is False and state["first_bad_entry"] == 2
    assert "entry 2 contradicts witness 2 (AWX job 2)" in state["message"]


def test_a_witness_naming_another_rollback_id_is_named(book, signer):
    witnesses = witnesses_of(book)
    witnesses[0]["rollback_id"] = IDS[2]
    state = R.verify_ledger(book.path, [signer.public_key], witnesses=witnesses)
    assert state["valid"] is False and "saw rollback_id %s" % IDS[2] in state["message"]


def test_awx_artifacts_are_witnesses(book, signer):
    artifacts = {"governed_rollback_receipts": dict(
        (r["rollback_id"], {"ledger_seq": r["ledger_seq"], "receipt_sha256": r["receipt_sha256"]}) for r in book.results),
        "governed_rollback": {"rollback_id": "none", "ledger_seq": -1, "receipt_sha256": ""}}
    state = R.verify_ledger(book.path, [signer.public_key], witnesses=[artifacts])
    assert state["valid"] is True and state["witnesses_checked"] == 3


@pytest.mark.parametrize("witness, problem", [
    ({"seq": True, "sha256": "a" * 64}, "no valid seq"),
    ({"seq": 0, "sha256": "a" * 64}, "no valid seq"),
    ({"seq": -5, "sha256": "a" * 64}, "no valid seq"),
    ({"seq": 2 ** 63, "sha256": "a" * 64}, "no valid seq"),
    ({"seq": 1.0, "sha256": "a" * 64}, "no valid seq"),
    ({"seq": "1e3", "sha256": "a" * 64}, "no valid seq"),
    ({"seq": None, "sha256": "a" * 64}, "no valid seq"),
    ({"seq": 1, "sha256": "A" * 64}, "no valid sha256"),
    ({"seq": 1, "sha256": "a" * 63}, "no valid sha256"),
    ({"seq": 1, "sha256": 12345}, "no valid sha256"),
    ({"seq": 1}, "no valid sha256"),
    ({"seq": 1, "sha256": "a" * 64, "rollback_id": ["x"]}, "rollback_id that is not a string"),
    ("seq=1", "not a mapping"),
])
def test_hostile_witness_is_refused_naming_it(book, signer, witness, problem):
    with pytest.raises(R.LedgerError, match="witness 1.*%s" % problem):
        R.verify_ledger(book.path, [signer.public_key], witnesses=[witness])


@pytest.mark.parametrize("text", [b"\xff\xfe", b"{not json\n", b"[" * 100000, b'{"seq": 1, "sha256": "zz"}'])
def test_hostile_witness_file_is_refused(book, signer, text):
    with pytest.raises(R.LedgerError, match="witness"):
        R.verify_ledger(book.path, [signer.public_key], witnesses=R.parse_witness_text(text))


# ---------------------------------------------------------------- symlinks and key files

@pytest.mark.parametrize("what", ["ledger", "head", "mirror"])
def test_symlinked_ledger_files_are_refused_and_the_target_is_untouched(book, signer, tmp_path, what):
    path = {"ledger": book.path, "head": book.head, "mirror": book.mirror}[what]
    target = str(tmp_path / ("elsewhere-" + what))
    os.rename(path, target)
    os.symlink(target, path)
    target_before = book.read(target)
    with pytest.raises(R.LedgerError, match="is a symbolic link"):
        R.verify_ledger(book.path, [signer.public_key], head_mirror=book.mirror)
    refuses_every_append(book, signer, "is a symbolic link", head_mirror=book.mirror)
    assert book.read(target) == target_before and os.path.islink(path)


def test_symlinked_envelope_is_named_by_verify_and_never_written_through(book, signer, tmp_path):
    name = "%s.intoto.jsonl" % IDS[0]
    target = str(tmp_path / "elsewhere.jsonl")
    shutil.move(str(book.dir / name), target)
    os.symlink(target, str(book.dir / name))
    state = R.verify_ledger(book.path, [signer.public_key])
    assert state["valid"] is False and "receipt envelope %s" % name in state["message"] and "symbolic link" in state["message"]
    with pytest.raises(R.LedgerError, match="symbolic link"):
        R.append_receipt(book.path, make_receipt(signer, "rollback-20240115-999999"), signer=signer,
                         envelope_path=str(book.dir / name))


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666, 0o620, 0o602, 0o610])
def test_signing_key_readable_or_writable_by_others_is_refused_with_the_chmod(tmp_path, signer, mode):
    key = tmp_path / "signing.pem"
    key.write_bytes(CryptoSigner.generate_ed25519().private_bytes)
    key.chmod(mode)
    with pytest.raises(R.ReceiptError, match="mode %04o.*chmod 600 %s" % (mode, key)):
        R.read_private_key_file(str(key))


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_signing_key_private_to_its_owner_is_read(tmp_path, mode):
    key = tmp_path / "signing.pem"
    pem = CryptoSigner.generate_ed25519().private_bytes
    key.write_bytes(pem)
    key.chmod(mode)
    assert R.load_signer(R.read_private_key_file(str(key))).public_key.keyid


def test_symlinked_signing_key_is_refused(tmp_path):
    key = tmp_path / "signing.pem"
    key.write_bytes(CryptoSigner.generate_ed25519().private_bytes)
    key.chmod(0o600)
    (tmp_path / "link.pem").symlink_to(key)
    with pytest.raises(R.ReceiptError, match="symbolic link"):
        R.read_private_key_file(str(tmp_path / "link.pem"))
