"""The rollback playbook run the way AWX runs a job template, through ansible-runner.

AWX gives the job: the project checkout as its working directory (so the project's ansible.cfg applies), its own
inventory (here built from .sandbox/sandbox.json: a localhost and the roster, no file paths of the controller),
the survey answers as extra vars, and credentials as environment variables: the cluster through K8S_AUTH_KUBECONFIG
and the receipt signing key as PEM content in GOVERNED_ROLLBACK_SIGNING_KEY (a custom credential type's env
injector). No rollback_signing_key_path and no key file anywhere in the job's inputs.
"""

import json
import os
import sys

import yaml

from tests.integration import _playbook as pb
from tests.sandbox_env import ROOT

NAME = "frontend"


def awx_inventory(private_dir):
    """What an AWX inventory for the sandbox holds: the controller host and the roster, from sandbox.json."""
    with open(os.path.join(ROOT, ".sandbox", "sandbox.json")) as handle:
        sandbox = json.load(handle)
    with open(os.path.join(ROOT, "inventories", "sandbox", "group_vars", "all", "roster.yml")) as handle:
        roster = yaml.safe_load(handle)["rollback_roster"]
    inventory = {"all": {
        "hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}},
        "vars": {"rollback_roster": roster, "rollback_environment": "sandbox"}}}
    path = os.path.join(str(private_dir), "inventory", "hosts.yml")
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as handle:
        yaml.safe_dump(inventory, handle)
    return sandbox, path


def awx_job(private_dir, monkeypatch):
    """What AWX gives a job besides the survey: its inventory and, as environment variables, the cluster (a
    Kubernetes credential) and the receipt signing key as PEM content (a custom credential). Nothing from the
    developer's shell may stand in for what AWX injects. Returns (inventory path, credentials, signing key)."""
    sandbox, inventory = awx_inventory(private_dir)
    with open(sandbox["signing_key_file"]) as handle:
        signing_key = handle.read()
    for variable in ("ANSIBLE_CONFIG", "GOVERNED_ROLLBACK_SIGNING_KEY_FILE", "GOVERNED_ROLLBACK_SIGNING_KEY",
                     "KUBECONFIG", "K8S_AUTH_KUBECONFIG", "ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_INVENTORY"):
        monkeypatch.delenv(variable, raising=False)
    credentials = {"K8S_AUTH_KUBECONFIG": sandbox["kubeconfig"], "GOVERNED_ROLLBACK_SIGNING_KEY": signing_key,
                   "ANSIBLE_COLLECTIONS_PATH": os.path.join(ROOT, "build", "collections")}
    return inventory, credentials, signing_key


def test_awx_job_with_survey_and_env_injected_signing_key_rolls_back_and_keeps_the_key_out_of_artifacts(
        kubectl, namespace, tmp_path, monkeypatch):
    pb.frontend_with_history(kubectl, namespace)
    private_dir = tmp_path / "awx-job"
    inventory, credentials, signing_key = awx_job(private_dir, monkeypatch)
    key_body = "".join(line for line in signing_key.splitlines() if line and not line.startswith("-----"))
    survey = {"namespace": namespace, "deployment": NAME, "target_rev": 2,
              "reason": "Breaking UI changes affecting user workflows", "incident_id": "INC-12345",
              "priority": "P2", "requested_by": "oncall", "approvals": [],
              "evidence_dir": str(tmp_path / "evidence"), "receipt_ledger": str(tmp_path / "receipts" / "ledger.jsonl"),
              # AWX adds the launching user to every job's extra vars; the requester must be that user.
              "awx_user_name": "oncall"}

    run = pb.run_playbook(private_dir, survey, envvars=credentials, inventory=inventory, ansible_config=False,
                          verbosity=1)

    assert run.status == "successful", run.explain()
    assert pb.template_image(pb.get(kubectl, "deployment", namespace, NAME)) == "aureus/frontend:v0.1.1"

    # The job artifacts AWX shows: the rollback id and the receipt digest, matching the ledger.
    (entry,) = pb.ledger_entries(survey["receipt_ledger"])
    artifacts = run.artifact_data["governed_rollback"]
    assert artifacts["outcome"] == "succeeded"
    assert artifacts["rollback_id"] == entry["rollback_id"]
    assert artifacts["receipt_sha256"] == entry["receipt_sha256"]
    assert run.artifact_data["governed_rollback_receipts"][entry["rollback_id"]]["signed"] is True

    # Signed with the injected key: the ledger verifies against the sandbox's public key.
    failed, verified = pb.verify_ledger(tmp_path / "verify", survey["receipt_ledger"])
    assert not failed and verified["valid"] and verified["signatures_checked"], verified.get("message")
    assert entry["receipt"]["signing"]["signed"] is True

    # The key never lands in what the job leaves behind: events, stdout, evidence, receipts.
    needles = [signing_key, key_body]
    assert key_body not in run.stdout
    assert pb.files_containing(os.path.join(run.artifact_dir, "job_events"), needles) == []
    assert pb.files_containing(tmp_path / "evidence", needles) == []
    assert pb.files_containing(tmp_path / "receipts", needles) == []
    # ansible-runner itself records the environment it was started with in artifacts/<job>/command; that file
    # is the runner's copy of AWX's input, not something the playbook wrote, and it is the only place the key is.
    leaks = [where for where, _needle in pb.files_containing(run.artifact_dir, needles)]
    assert sorted(set(leaks)) == [os.path.join(run.artifact_dir, "command")]
    with open(os.path.join(run.artifact_dir, "command")) as handle:
        launch = json.load(handle)
    assert launch["env"]["GOVERNED_ROLLBACK_SIGNING_KEY"] == signing_key
    assert key_body not in json.dumps(dict(launch, env={}))


def test_awx_job_whose_requester_is_not_the_launching_user_is_denied_and_changes_nothing(
        kubectl, namespace, tmp_path, monkeypatch):
    pb.frontend_with_history(kubectl, namespace)
    before = pb.resource_versions(kubectl, namespace, NAME)
    private_dir = tmp_path / "awx-job"
    inventory, credentials, _signing_key = awx_job(private_dir, monkeypatch)
    ledger = str(tmp_path / "receipts" / "ledger.jsonl")
    # mallory may launch the template, and types the on-call engineer's name to get the auto-approval.
    survey = {"namespace": namespace, "deployment": NAME, "target_rev": 2, "reason": "Breaking UI changes",
              "incident_id": "INC-12345", "priority": "P2", "requested_by": "oncall", "approvals": [],
              "evidence_dir": str(tmp_path / "evidence"), "receipt_ledger": ledger, "awx_user_name": "mallory",
              "rollback_id": "rollback-impersonated"}

    run = pb.run_playbook(private_dir, survey, envvars=credentials, inventory=inventory, ansible_config=False)

    assert run.status == "failed"
    approval = run.task_result("Check approval against the approval matrix (fails closed)")
    assert "'oncall' is not the user who launched this job ('mallory')" in approval["msg"], approval["msg"]
    assert pb.resource_versions(kubectl, namespace, NAME) == before
    (entry,) = pb.ledger_entries(ledger)
    assert entry["receipt"]["outcome"] == "denied"
    assert entry["receipt"]["approval"]["approved"] is False
