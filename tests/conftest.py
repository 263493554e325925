"""Shared pytest set-up: import the collection as ansible_collections.governed.rollback."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, "build", "collections")
LINK = os.path.join(COLLECTIONS, "ansible_collections", "governed", "rollback")

if not os.path.exists(LINK):
    os.makedirs(os.path.dirname(LINK), exist_ok=True)
    os.symlink("../../../..", LINK)
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
os.environ.setdefault("ANSIBLE_CONFIG", os.path.join(ROOT, "ansible.cfg"))

# The sandbox fixtures (sandbox_env, kubeconfig, k8s_api, kubectl, namespace) serve tests/sandbox and
# tests/integration alike.
pytest_plugins = ["tests.sandbox_fixtures"]


# Parallel runs (make test: pytest -n N --dist loadgroup): each test file is one unit of work, kept on one worker in
# file order, so its module fixtures and its own sequence hold. Files that change state other files read (the
# sandbox's seeded world: `seed.sh --reset`, AUREUS Guard, the aureus namespace, the GitOps loop, the governed API)
# share one group and run one after another on a single worker.
SHARED_STATE = "sandbox-seeded-state"
SHARED_STATE_FILES = {
    "tests/sandbox/test_sandbox.py",            # seed.sh --reset (everything)
    "tests/sandbox/test_guard_api.py",          # seed.sh --reset guard
    "tests/integration/test_snapshot_rollback.py",
    "tests/integration/test_rollback_state_playbook.py",
    "tests/integration/test_rollback_db_playbook.py",  # aureus_metadata, seed.sh --reset database
    "tests/integration/test_verify_playbooks.py",      # seed.sh --reset; rolls the seeded aureus world back
    "tests/integration/test_rollback_verify.py",       # the governed API answers as the live aureus world is
    "tests/integration/test_gitops_playbook.py",       # the GitOps loop: aureus-deploy, aureus/aureus-api
    "tests/integration/test_gitops_revert.py",
    "tests/integration/test_gitops_freeze.py",
}


def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
    import pytest

    for item in items:
        path = os.path.relpath(str(item.fspath), ROOT)
        group = SHARED_STATE if path in SHARED_STATE_FILES else path
        item.add_marker(pytest.mark.xdist_group(group))
