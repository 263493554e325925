"""The AWX job templates, survey and credentials stay consistent with the playbook and the modules."""

import json
import os
import re

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_yaml(*parts):
    with open(os.path.join(ROOT, *parts)) as handle:
        return yaml.safe_load(handle)


def survey():
    with open(os.path.join(ROOT, "awx", "surveys", "rollback-deploy.json")) as handle:
        return json.load(handle)


def test_every_survey_answer_is_a_declared_playbook_input():
    options = load_yaml("playbooks", "rollback-deploy.meta.yml")["argument_specs"]["main"]["options"]
    variables = [q["variable"] for q in survey()["spec"]]
    assert len(variables) == len(set(variables))
    assert set(variables) - set(options) == set()


def test_required_playbook_inputs_come_from_the_survey_or_the_inventory():
    options = load_yaml("playbooks", "rollback-deploy.meta.yml")["argument_specs"]["main"]["options"]
    required = {name for name, spec in options.items() if spec.get("required")}
    from_survey = {q["variable"] for q in survey()["spec"]}
    # evidence_dir and receipt_ledger are site settings, set in the production inventory like the sandbox's.
    inventory = set()
    for name in ("sandbox.yml", "incident.yml"):
        inventory |= set(load_yaml("inventories", "sandbox", "group_vars", "all", name))
    assert required - from_survey - inventory == set()


def test_survey_choices_match_the_playbook_choices():
    options = load_yaml("playbooks", "rollback-deploy.meta.yml")["argument_specs"]["main"]["options"]
    for question in survey()["spec"]:
        if question["type"] == "multiplechoice" and "choices" in options[question["variable"]]:
            assert question["choices"].split("\n") == options[question["variable"]]["choices"]


def test_credential_injectors_set_the_variables_the_modules_read():
    controller = load_yaml("awx", "controller.yml")
    injected = set()
    for ctype in controller["controller_credential_types"]:
        injected |= set(ctype["injectors"]["env"])
    receipt_source = ""
    # rollback_receipt's own options, and the shared ones it composes (the S3 options, for the storage credential).
    for path in (("plugins", "modules", "rollback_receipt.py"), ("plugins", "module_utils", "_argspec.py")):
        with open(os.path.join(ROOT, *path)) as handle:
            receipt_source += handle.read()
    for name in injected:
        assert re.search(r"env_fallback, \[[^\]]*['\"]%s['\"]" % name, receipt_source), name


def test_rollback_templates_never_run_concurrently_and_are_execute_only_for_oncall():
    controller = load_yaml("awx", "controller.yml")
    runs = [t for t in controller["controller_templates"] if t["job_type"] == "run"
            and t["playbook"].startswith("playbooks/rollback-")]
    assert runs and all(t["allow_simultaneous"] is False for t in runs)
    oncall = [r for r in controller["controller_roles"] if r.get("team") == "sre-oncall"]
    assert oncall and all(r["role"] == "execute" for r in oncall)
    assert not any("credentials" in r for r in oncall)
