"""The artifact users install: built from this (used) checkout, it holds only what the collection ships, no key,
no canary, no link; it installs into an empty path and its modules, roles and playbooks work by FQCN from there."""

import json
import os
import re
import subprocess
import sys
import tarfile

import pytest

from tests.sandbox_env import ROOT

BIN = os.path.dirname(sys.executable)
ALLOWED_TOP = {"MANIFEST.json", "FILES.json", "README.md", "CHANGELOG.rst", "plugins", "roles", "playbooks", "meta", "docs",
               "changelogs", "requirements.txt", "requirements-test.txt", "requirements-nodeps.txt", "constraints.txt"}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--force", "--output-path", str(out),
                    ROOT], check=True, capture_output=True)
    (path,) = [os.path.join(str(out), name) for name in os.listdir(str(out)) if name.endswith(".tar.gz")]
    return path


def test_the_artifact_holds_only_what_a_collection_ships(artifact):
    with tarfile.open(artifact) as tar:
        members = tar.getmembers()
    tops = sorted({m.name.split("/", 1)[0] for m in members})
    assert set(tops) <= ALLOWED_TOP, sorted(set(tops) - ALLOWED_TOP)
    assert [m.name for m in members if m.issym() or m.islnk()] == []
    names = [m.name for m in members]
    for forbidden in (r"(^|/)\.sandbox", r"(^|/)\.ansible/", r"(^|/)collections/", r"\.key$", r"\.pem$", r"\.jsonl$",
                      r"(^|/)evidence/", r"__pycache__", r"\.pyc$", r"(^|/)\.venv/"):
        assert [n for n in names if re.search(forbidden, n)] == [], forbidden
    for required in ("plugins/modules/rollout_undo.py", "roles/rollback_steps/tasks/start.yml",
                     "roles/deployment_rollback/tasks/main.yml", "playbooks/rollback-deploy.yml",
                     "playbooks/rollback_deploy.yml", "meta/runtime.yml", "docs/plan-contract.md"):
        assert required in names, required


def test_no_private_key_or_canary_is_in_the_artifact(artifact, sandbox_env):
    needles = [v.encode() for k, v in sandbox_env.items() if k.startswith("SANDBOX_CANARY") and v]
    with open(os.path.join(ROOT, ".sandbox-keys", "signing.key"), "rb") as handle:
        key_lines = [line.strip() for line in handle if line.strip() and not line.startswith(b"-----")]
    needles += key_lines
    assert len(needles) > 2  # the key's lines and the canaries are really searched for
    with tarfile.open(artifact) as tar:
        for member in tar.getmembers():
            if member.isfile():
                data = tar.extractfile(member).read()
                assert [n for n in needles if n in data] == [], member.name
                # A PEM private key block with a body (the code only names the header in messages and patterns).
                assert not re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\s+[A-Za-z0-9+/=]{40,}", data), member.name


def test_the_artifact_installs_and_runs_by_fqcn_outside_the_checkout(artifact, tmp_path):
    installed = tmp_path / "collections"
    # A user's shell: nothing of the checkout, the test run or pytest-ansible's link tree (with the checkout on the
    # collections path, ansible-galaxy would call the collection installed already and install nothing).
    env = {"PATH": BIN + os.pathsep + os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "ANSIBLE_COLLECTIONS_PATH": str(installed), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp")}
    subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", "-p", str(installed), artifact],
                   check=True, capture_output=True, env=env)
    assert os.path.isfile(os.path.join(str(installed), "ansible_collections", "governed", "rollback", "MANIFEST.json"))
    work = tmp_path / "elsewhere"
    work.mkdir()
    # A module by FQCN: the approval matrix decides from the installed copy.
    done = subprocess.run(["ansible", "localhost", "-m", "governed.rollback.rollback_approval", "-a", json.dumps({
        "rollback_type": "configuration", "requested_by": "oncall", "approvals": ["devops-lead"],
        "approval_mode": "asserted", "roster": {"oncall": ["on_call_engineer"], "devops-lead": ["devops_lead"]}})],
        cwd=str(work), env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and '"rule": "configuration"' in done.stdout, done.stdout + done.stderr
    # A role by FQCN from the user's own playbook, and every playbook by FQCN: they parse from the installed copy.
    (work / "mine.yml").write_text("- hosts: localhost\n  gather_facts: false\n  roles:\n"
                                   "    - role: governed.rollback.deployment_rollback\n")
    playbooks = sorted(n[:-4] for n in os.listdir(os.path.join(str(installed), "ansible_collections", "governed",
                                                               "rollback", "playbooks"))
                       if re.match(r"^[a-z_]+\.yml$", n))
    assert "rollback_deploy" in playbooks
    for playbook in ["mine.yml"] + ["governed.rollback." + name for name in playbooks]:
        done = subprocess.run(["ansible-playbook", "--syntax-check", playbook], cwd=str(work), env=env,
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, (playbook, done.stdout + done.stderr)


def _readme_install_commands():
    """The shell commands of the README's "Install and run it as a user" block, in order."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    section = text.split("## Install and run it as a user", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_readme_install_commands_run_as_written(artifact, tmp_path, kubectl):
    """The README's install section, typed as written by a user in their own directory, against the sandbox: install
    the artifact, its Python requirements, then roll back by FQCN, verify the ledger and read a module's docs."""
    import glob
    import shutil

    import yaml

    from tests.integration._playbook import IMAGES, frontend_with_history, new_namespace, template_image
    from tests.sandbox_fixtures import get

    commands = _readme_install_commands()
    galaxy = [c for c in commands if c == "ansible-galaxy collection install governed.rollback"]
    assert len(galaxy) == 1  # from a Galaxy server, which this machine has not: the artifact line stands in for it
    commands.remove(galaxy[0])
    assert any(c.startswith("ansible-playbook governed.rollback.rollback_deploy") for c in commands)

    user = tmp_path / "user"
    (user / "build" / "dist").mkdir(parents=True)
    shutil.copy(artifact, str(user / "build" / "dist"))
    assert [c for c in commands if "build/dist/" in c] == \
        ["ansible-galaxy collection install build/dist/%s" % os.path.basename(artifact)]

    # The user's inventory: the sandbox's variables, a throwaway workload, evidence and ledger in the user's space.
    namespace = new_namespace(kubectl, prefix="readme")
    try:
        frontend_with_history(kubectl, namespace)
        inventory_vars = {}
        for path in sorted(glob.glob(os.path.join(ROOT, "inventories", "sandbox", "group_vars", "all", "*.yml"))):
            with open(path, encoding="utf-8") as handle:
                inventory_vars.update(yaml.safe_load(handle) or {})
        inventory_vars.update({"rollback_namespace": namespace, "deployment": "frontend",
                               "evidence_dir": str(user / "evidence"),
                               "receipt_ledger": str(user / "evidence" / "ledger.jsonl")})
        (user / "inventory.yml").write_text(yaml.safe_dump({"all": {
            "hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}},
            "vars": inventory_vars}}))
        env = {"PATH": BIN + os.pathsep + os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8",
               "GOVERNED_ROLLBACK_HOME": ROOT, "ANSIBLE_NOCOLOR": "1"}
        for command in commands:
            done = subprocess.run(["bash", "-c", command], cwd=str(user), env=env, capture_output=True, text=True,
                                  check=False)
            assert done.returncode == 0, (command, done.stdout[-3000:], done.stderr[-3000:])
            if command.startswith("ansible-doc"):
                assert "rollout_undo" in done.stdout and "to_revision" in done.stdout
        installed = tmp_path / ".ansible" / "collections" / "ansible_collections" / "governed" / "rollback"
        assert (installed / "MANIFEST.json").is_file()
        assert template_image(get(kubectl, "deployment", namespace, "frontend")) == IMAGES[1]
        with open(str(user / "evidence" / "ledger.jsonl"), encoding="utf-8") as handle:
            entries = [json.loads(line) for line in handle if line.strip()]
        assert [e["receipt"]["outcome"] for e in entries] == ["succeeded"]
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)
