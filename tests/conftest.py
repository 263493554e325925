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


# Parallel runs (make test: pytest -n N): each test file is one unit of work, kept on one worker in file order, so
# its module fixtures and its own sequence hold. Files that change state other files read (the sandbox's seeded
# world: `seed.sh --reset`, AUREUS Guard, the aureus namespace and its database, the GitOps loop, the governed API
# that follows them) are one unit and run one after another on a single worker. pytest-xdist's own `loadgroup`
# cannot do this with pytest 9 (it rewrites Item._nodeid, which pytest 9 no longer reads), so the scheduler is ours:
# xdist's LoadScopeScheduling with the scope of a test computed here.
SHARED_STATE = "sandbox-seeded-state"
SHARED_STATE_FILES = frozenset((
    "tests/sandbox/test_sandbox.py",  # seed.sh --reset (everything)
    "tests/sandbox/test_guard_api.py",  # seed.sh --reset guard
    "tests/integration/test_snapshot_rollback.py",  # AUREUS Guard's pipelines and snapshots
    "tests/integration/test_rollback_state_playbook.py",
    "tests/integration/test_rollback_db_playbook.py",  # aureus_metadata, seed.sh --reset database
    "tests/integration/test_pg_schema_downgrade.py",
    "tests/integration/test_verify_playbooks.py",  # seed.sh --reset; rolls the seeded aureus world back
    "tests/integration/test_rollback_verify.py",  # the governed API answers as the live aureus world is
    "tests/integration/test_rollback_policy_playbook.py",  # the sandbox's OPA and its bundle server
    "tests/integration/test_policy_bundle_revert.py",
    "tests/integration/test_gitops_playbook.py",  # the GitOps loop: aureus-deploy, aureus/aureus-api
    "tests/integration/test_gitops_revert.py",
    "tests/integration/test_gitops_freeze.py",
))


def scope_of(nodeid):
    """The unit of parallel work a test belongs to: its file, or the shared-state group."""
    path = nodeid.split("::", 1)[0]
    return SHARED_STATE if path in SHARED_STATE_FILES else path


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class SharedStateScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return scope_of(nodeid)

    return SharedStateScheduling(config, log)
