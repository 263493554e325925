"""governed.rollback.rollback_receipt run for real: playbooks through ansible-runner, the way AWX runs them."""

import json
import os
import sys

import ansible_runner
import pytest
from securesystemslib.signer import CryptoSigner

from ansible_collections.governed.rollback.plugins.module_utils import _receipt as R

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
ROSTER = {"oncall": ["on_call_engineer"], "eng-lead": ["engineering_lead"], "dba": ["dba"], "cto": ["cto"],
          "ic": ["incident_commander"], "devops-lead": ["devops_lead"]}
CANARY = "CanaryS3cret-7f3a9Zq"


class Run(object):
    def __init__(self, runner):
        self.runner = runner
        self.events = list(runner.events)
        self.results = {}
        self.failed = {}
        self.stats = {}
        for event in self.events:
            data = event.get("event_data", {})
            if event["event"] in ("runner_on_ok", "runner_on_failed"):
                self.results[data["task"]] = data["res"]
                if event["event"] == "runner_on_failed":
                    self.failed[data["task"]] = data["res"]
            if event["event"] == "playbook_on_stats":
                self.stats = data.get("artifact_data") or {}

    @property
    def text(self):
        """Everything the run printed or reported, to prove what never appears."""
        return json.dumps(self.events) + self.runner.stdout.read()


def run_play(tmp_path, tasks, check=False, envvars=None, extravars=None, playbook=None):
    private = tmp_path / ("runner-%d" % len(list(tmp_path.glob("runner-*"))))
    private.mkdir(parents=True)
    if playbook is None:
        playbook = str(private / "play.yml")
        with open(playbook, "w") as handle:
            json.dump([{"hosts": "localhost", "gather_facts": False, "vars": {"roster": ROSTER}, "tasks": tasks}],
                      handle)
    env = {"ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    env.update(envvars or {})
    runner = ansible_runner.run(
        private_data_dir=str(private), playbook=playbook, quiet=True, envvars=env, extravars=extravars or {},
        inventory="localhost ansible_connection=local ansible_python_interpreter=%s" % sys.executable,
        cmdline="--check" if check else None,
    )
    return Run(runner)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    signer = CryptoSigner.generate_ed25519()
    directory = tmp_path_factory.mktemp("keys")
    private = directory / "signing.pem"
    public = directory / "signing.pub"
    private.write_bytes(signer.private_bytes)
    private.chmod(0o600)  # a key file others can read is refused
    public.write_text(R.public_key_pem(signer.public_key))
    other = directory / "other.pub"
    other.write_text(R.public_key_pem(CryptoSigner.generate_ed25519().public_key))
    return {"private": str(private), "public": str(public), "other": str(other), "pem": signer.private_bytes.decode()}


def approve(approvals):
    return {"name": "approve", "governed.rollback.rollback_approval": {
        "rollback_type": "database", "requested_by": "oncall", "approvals": approvals, "roster": "{{ roster }}",
        "priority": "P2", "approval_mode": "asserted"}, "register": "approval"}


def receipt_task(ledger, name="receipt", **overrides):
    args = {
        "ledger": ledger, "rollback_id": "rollback-20240115-103045", "outcome": "succeeded",
        "approval": "{{ approval }}", "incident_id": "INC-12345", "environment": "sandbox",
        "reason": "v0.1.2-add-pii-tracking-table breaks the metadata API", "component": "database",
        "from_version": "v0.1.2", "to_version": "v0.1.1", "started_at": "2024-01-15T10:30:45Z",
        "current_ref": "sha256:" + "a" * 64, "rollback_target_ref": "b" * 40,
        "verification": {"health_check": "passed", "smoke_tests": "passed", "user_validation": "pending"},
        "evidence": {"archive_path": "/tmp/rollback-20240115-103045.tar.gz", "archive_sha256": "c" * 64},
    }
    args.update(overrides)
    return {"name": name, "governed.rollback.rollback_receipt": args, "register": name}


def verify_task(ledger, public_key_path, name="verify", **extra):
    args = dict(state="verify", ledger=ledger, public_key_path=public_key_path)
    args.update(extra)
    return {"name": name, "governed.rollback.rollback_receipt": args, "register": name}


def files_under(directory):
    found = {}
    for base, _dirs, names in os.walk(directory):
        for name in names:
            with open(os.path.join(base, name), "rb") as handle:
                found[os.path.join(base, name)] = handle.read()
    return found


def test_receipt_is_signed_chained_published_and_verifies_and_a_rerun_changes_nothing(tmp_path, keys):
    ledger = str(tmp_path / "receipts" / "ledger.jsonl")
    tasks = [approve(["dba", "eng-lead"]), receipt_task(ledger, signing_key_path=keys["private"]),
             verify_task(ledger, keys["public"])]
    first = run_play(tmp_path, tasks)
    assert first.failed == {}
    receipt = first.results["receipt"]
    assert receipt["changed"] is True
    assert receipt["ledger_seq"] == 1 and receipt["signed"] is True
    assert receipt["rollback_id"] == "rollback-20240115-103045"
    assert receipt["receipt"]["dba_approval"] == "dba"
    assert receipt["receipt"]["approval"]["rule"] == "database"
    assert receipt["receipt_sha256"] == R.receipt_sha256(receipt["receipt"])
    assert receipt["envelope"] == str(tmp_path / "receipts" / "rollback-20240115-103045.intoto.jsonl")
    assert os.path.exists(receipt["envelope"]) and os.path.exists(ledger + ".head")
    assert first.results["verify"]["valid"] is True and first.results["verify"]["entries"] == 1
    # AWX keeps custom stats as job artifacts: the module's ansible_stats reached them.
    summary = first.stats["governed_rollback_receipts"]["rollback-20240115-103045"]
    assert summary["receipt_sha256"] == receipt["receipt_sha256"] and summary["outcome"] == "succeeded"

    before = files_under(str(tmp_path / "receipts"))
    again = run_play(tmp_path, tasks)
    assert again.failed == {}
    assert again.results["receipt"]["changed"] is False
    assert again.results["receipt"]["ledger_seq"] == 1
    assert files_under(str(tmp_path / "receipts")) == before


def test_check_mode_returns_the_receipt_and_writes_nothing(tmp_path, keys):
    ledger = str(tmp_path / "receipts" / "ledger.jsonl")
    run = run_play(tmp_path, [approve(["dba", "eng-lead"]), receipt_task(ledger, signing_key_path=keys["private"])],
                   check=True)
    assert run.failed == {}
    assert run.results["receipt"]["changed"] is True
    assert run.results["receipt"]["ledger_seq"] == 1
    assert run.results["receipt"]["receipt"]["outcome"] == "succeeded"
    assert not os.path.exists(str(tmp_path / "receipts"))


def test_signing_required_without_a_key_refuses_and_writes_nothing(tmp_path):
    ledger = str(tmp_path / "receipts" / "ledger.jsonl")
    run = run_play(tmp_path, [approve(["dba", "eng-lead"]), receipt_task(ledger)],
                   envvars={"GOVERNED_ROLLBACK_SIGNING_KEY": "", "GOVERNED_ROLLBACK_SIGNING_KEY_FILE": ""})
    assert "signing is required but no key was given" in run.failed["receipt"]["msg"]
    assert not os.path.exists(str(tmp_path / "receipts"))


def test_optional_signing_without_a_key_writes_an_unsigned_receipt_that_says_so(tmp_path):
    ledger = str(tmp_path / "receipts" / "ledger.jsonl")
    run = run_play(tmp_path, [approve(["dba", "eng-lead"]), receipt_task(ledger, signing="optional"),
                              verify_task(ledger, None, allow_unsigned=True)])
    assert run.failed == {}
    assert run.results["receipt"]["signed"] is False and run.results["receipt"]["envelope"] is None
    assert run.results["receipt"]["receipt"]["signing"]["signed"] is False
    assert run.results["verify"]["signatures_checked"] is False
    assert run.results["verify"]["unsigned_entries"] == [1]


def test_key_injected_through_the_environment_like_an_awx_credential_never_shows(tmp_path, keys):
    ledger = str(tmp_path / "receipts" / "ledger.jsonl")
    run = run_play(tmp_path, [approve(["dba", "eng-lead"]), receipt_task(ledger), verify_task(ledger, keys["public"])],
                   envvars={"GOVERNED_ROLLBACK_SIGNING_KEY": keys["pem"]})
    assert run.failed == {}
    assert run.results["receipt"]["signed"] is True
    assert run.results["verify"]["valid"] is True
    key_body = keys["pem"].splitlines()[1]
    assert key_body not in run.text
    assert all(key_body.encode() not in data for data in files_under(str(tmp_path / "receipts")).values())


def test_key_file_from_the_environment_signs(tmp_path, keys):
    ledger = str(tmp_path / "receipts" / "ledger.jsonl")
    run = run_play(tmp_path, [approve(["dba", "eng-lead"]), receipt_task(ledger), verify_task(ledger, keys["public"])],
                   envvars={"GOVERNED_ROLLBACK_SIGNING_KEY_FILE": keys["private"]})
    assert run.failed == {} and run.results["verify"]["valid"] is True


def test_denied_approval_leaves_a_denied_receipt_from_the_always_block(tmp_path, keys):
    ledger = str(tmp_path / "receipts" / "ledger.jsonl")
    tasks = [{"name": "governed rollback", "block": [approve(["dba"])], "always": [
        receipt_task(ledger, outcome="denied", signing_key_path=keys["private"], current_ref=None,
                     rollback_target_ref=None, evidence=None)]}]
    run = run_play(tmp_path, tasks)
    assert run.failed["approve"]["msg"].startswith("database rollback needs roles dba, engineering_lead; have: dba")
    assert run.results["receipt"]["changed"] is True
    written = run.results["receipt"]["receipt"]
    assert written["outcome"] == "denied"
    assert written["approval"]["approved"] is False
    assert written["approval"]["missing_roles"] == ["engineering_lead"]
    state = R.verify_ledger(ledger, [R.load_public_key(open(keys["public"]).read())])
    assert state["valid"] is True and state["entries"] == 1


def test_secret_looking_value_is_refused_and_never_written_or_echoed(tmp_path, keys):
    ledger = str(tmp_path / "receipts" / "ledger.jsonl")
    first = run_play(tmp_path, [approve(["dba", "eng-lead"]), receipt_task(ledger, signing_key_path=keys["private"])])
    assert first.failed == {}
    before = files_under(str(tmp_path / "receipts"))
    run = run_play(tmp_path, [approve(["dba", "eng-lead"]), receipt_task(
        ledger, rollback_id="rollback-20240115-110000", signing_key_path=keys["private"],
        notes="db creds were postgresql://aureus:%s@db:5432/aureus_metadata" % CANARY)])
    failed = run.failed["receipt"]
    assert "notes looks like Basic Auth Credentials, url-credentials" in failed["msg"]
    assert failed["fields"] == ["notes"]
    assert failed["invocation"]["module_args"]["notes"] == "********"
    assert CANARY not in run.text
    assert files_under(str(tmp_path / "receipts")) == before


def test_failure_message_with_a_secret_is_masked_and_the_receipt_says_so(tmp_path, keys):
    ledger = str(tmp_path / "receipts" / "ledger.jsonl")
    run = run_play(tmp_path, [approve(["dba", "eng-lead"]), receipt_task(
        ledger, outcome="failed", signing_key_path=keys["private"], evidence=None,
        failure={"task": "Run rollback migration",
                 "message": "psql: connection to postgresql://aureus:%s@db failed" % CANARY})])
    assert run.failed == {}
    written = run.results["receipt"]["receipt"]
    assert written["failure"]["message"] == "psql: connection to postgresql://aureus:**REDACTED**@db failed"
    assert written["redaction"] == {"status": "masked", "rules": "receipt-secret-guard/v1",
                                    "masked_fields": ["failure.message"]}
    assert run.results["receipt"]["invocation"]["module_args"]["failure"]["message"] == "********"
    assert CANARY not in run.text
    assert all(CANARY.encode() not in data for data in files_under(str(tmp_path / "receipts")).values())


def test_receipt_missing_a_required_field_is_refused_naming_it_and_writes_nothing(tmp_path, keys):
    ledger = str(tmp_path / "receipts" / "ledger.jsonl")
    run = run_play(tmp_path, [approve(["dba", "eng-lead"]),
                              receipt_task(ledger, signing_key_path=keys["private"], reason=None, evidence=None)])
    failed = run.failed["receipt"]
    assert "receipt refused by the schema" in failed["msg"]
    assert "reason is missing (null)" in failed["msg"]
    assert "evidence is missing (null) when outcome is succeeded" in failed["msg"]
    assert sorted(failed["fields"]) == ["evidence", "reason"]
    assert not os.path.exists(ledger)


def test_verify_names_the_tampered_entry(tmp_path, keys):
    ledger = str(tmp_path / "receipts" / "ledger.jsonl")
    tasks = [approve(["dba", "eng-lead"])]
    for index in range(3):
        tasks.append(receipt_task(ledger, name="receipt%d" % index, rollback_id="rollback-20240115-10304%d" % index,
                                  signing_key_path=keys["private"]))
    assert run_play(tmp_path, tasks).failed == {}
    data = bytearray(open(ledger, "rb").read())
    second_line = data.index(b"\n") + 1
    data[data.index(b'"environment":"sandbox"', second_line) + 16] ^= 0x20
    with open(ledger, "wb") as handle:
        handle.write(bytes(data))
    run = run_play(tmp_path, [verify_task(ledger, keys["public"])])
    failed = run.failed["verify"]
    assert failed["valid"] is False and failed["first_bad_entry"] == 2
    assert failed["bad_rollback_id"] == "rollback-20240115-103041"
    assert failed["msg"].startswith("entry 2 (rollback-20240115-103041)")


def test_wrong_public_key_fails_verification(tmp_path, keys):
    ledger = str(tmp_path / "receipts" / "ledger.jsonl")
    run = run_play(tmp_path, [approve(["dba", "eng-lead"]), receipt_task(ledger, signing_key_path=keys["private"]),
                              verify_task(ledger, keys["other"])])
    failed = run.failed["verify"]
    assert failed["valid"] is False and failed["first_bad_entry"] == 1
    assert "signature does not verify with the given public key" in failed["msg"]


def test_verify_receipts_playbook_passes_then_catches_truncation(tmp_path, keys):
    ledger = str(tmp_path / "receipts" / "ledger.jsonl")
    tasks = [approve(["dba", "eng-lead"])] + [
        receipt_task(ledger, name="r%d" % i, rollback_id="rollback-20240115-10300%d" % i,
                     signing_key_path=keys["private"]) for i in range(2)]
    assert run_play(tmp_path, tasks).failed == {}
    playbook = os.path.join(ROOT, "playbooks", "verify-receipts.yml")
    extravars = {"receipt_ledger": ledger, "receipt_public_key_path": keys["public"]}
    good = run_play(tmp_path, None, playbook=playbook, extravars=extravars)
    assert good.runner.rc == 0, good.runner.stdout.read()
    assert good.stats["governed_rollback_ledger_check"]["valid"] is True
    assert good.stats["governed_rollback_ledger_check"]["entries"] == 2

    with open(ledger, "rb") as handle:
        first_line = handle.readline()
    with open(ledger, "wb") as handle:
        handle.write(first_line)
    bad = run_play(tmp_path, None, playbook=playbook, extravars=extravars)
    assert bad.runner.rc != 0
    check = bad.stats["governed_rollback_ledger_check"]
    assert check["valid"] is False and check["first_bad_entry"] == 2
    assert check["message"].startswith("ledger truncated: the signed head covers 2 entries but the file holds 1")


def test_key_file_readable_by_others_or_symlinked_is_refused_with_the_chmod_and_writes_nothing(tmp_path, keys):
    ledger = str(tmp_path / "receipts" / "ledger.jsonl")
    loose = tmp_path / "loose.pem"
    loose.write_bytes(open(keys["private"], "rb").read())
    loose.chmod(0o644)
    link = tmp_path / "link.pem"
    link.symlink_to(keys["private"])
    run = run_play(tmp_path, [approve(["dba", "eng-lead"]),
                              dict(receipt_task(ledger, name="loose", signing_key_path=str(loose)), ignore_errors=True),
                              dict(receipt_task(ledger, name="link", signing_key_path=str(link)), ignore_errors=True)])
    assert "mode 0644" in run.failed["loose"]["msg"] and "chmod 600 %s" % loose in run.failed["loose"]["msg"]
    assert "is a symbolic link" in run.failed["link"]["msg"]
    assert not os.path.exists(os.path.dirname(ledger))
    assert CANARY not in run.text and keys["pem"].splitlines()[1] not in run.text


def test_verify_with_a_mirror_and_witnesses_catches_an_older_head_put_back(tmp_path, keys):
    ledger = str(tmp_path / "receipts" / "ledger.jsonl")
    mirror = str(tmp_path / "mirror" / "ledger.head")
    tasks = [approve(["dba", "eng-lead"])] + [
        receipt_task(ledger, name="r%d" % i, rollback_id="rollback-20240115-10304%d" % i,
                     signing_key_path=keys["private"], head_mirror=mirror) for i in range(3)]
    first = run_play(tmp_path, tasks)
    assert first.failed == {}
    witnesses = [{"seq": first.results["r%d" % i]["ledger_seq"], "sha256": first.results["r%d" % i]["receipt_sha256"],
                  "name": "AWX job %d" % i} for i in range(3)]
    with open(ledger, "rb") as handle:
        lines = handle.read().split(b"\n")
    with open(ledger, "wb") as handle:
        handle.write(b"\n".join(lines[:2]) + b"\n")
    signer = R.load_signer(keys["pem"])
    entry = json.loads(lines[1])
    with open(R.head_path(ledger), "wb") as handle:  # a genuine older head, re-signed as the tool would have
        handle.write(R.canonical(R.make_checkpoint(2, entry["entry_sha256"], "2024-01-15T10:30:45Z", signer)) + b"\n")
    os.unlink(str(tmp_path / "receipts" / "rollback-20240115-103042.intoto.jsonl"))
    witness_file = tmp_path / "witnesses.jsonl"
    witness_file.write_text("\n".join(json.dumps(w) for w in witnesses) + "\n")
    run = run_play(tmp_path, [
        verify_task(ledger, keys["public"], name="alone", check_envelopes=False),
        dict(verify_task(ledger, keys["public"], name="mirror", head_mirror=mirror, check_envelopes=False), ignore_errors=True),
        dict(verify_task(ledger, keys["public"], name="witnessed", witnesses_path=str(witness_file), check_envelopes=False),
             ignore_errors=True)])
    assert run.results["alone"]["valid"] is True  # truncation plus an older genuine head: invisible alone
    assert "head mirror %s is at seq 3 but the ledger holds 2 entries" % mirror in run.failed["mirror"]["msg"]
    assert "ledger lacks entry 3, which witness 3 (AWX job 2) saw" in run.failed["witnessed"]["msg"]
