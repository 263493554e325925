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

# Parallel runs (make test): each test file is one unit of work, kept on one worker in file order, so its module
# fixtures and its own sequence hold. Files that change seeded state other files read are grouped by that state and
# a group runs one file after another on a single worker: AUREUS Guard, the database aureus_metadata, the sandbox's
# OPA with the governed APIs that ask it (and follow the aureus world), the GitOps loop. Files that change several of
# those at once (a full `seed.sh --reset`, every type's rollback, a frozen kube-controller-manager) are exclusive:
# `make test` runs them after the parallel run, alone (GOVERNED_TESTS=exclusive; GOVERNED_TESTS=parallel runs the
# rest). pytest-xdist's own `loadgroup` cannot do this with pytest 9 (it rewrites Item._nodeid, which pytest 9 no
# longer reads), so the scheduler is ours: xdist's LoadScopeScheduling with the scope of a test computed here.
SHARED_STATE = {
    "tests/sandbox/test_guard_api.py": "guard",  # seed.sh --reset guard
    "tests/integration/test_snapshot_rollback.py": "guard",
    "tests/integration/test_rollback_state_playbook.py": "guard",
    "tests/integration/test_rollback_db_playbook.py": "database",  # seed.sh --reset database
    "tests/integration/test_pg_schema_downgrade.py": "database",
    "tests/integration/test_rollback_policy_playbook.py": "opa",  # the sandbox's OPA and its bundle server
    "tests/integration/test_policy_bundle_revert.py": "opa",
    "tests/integration/test_rollback_verify.py": "opa",  # the governed APIs answer as OPA and the aureus world do
    "tests/integration/test_gitops_playbook.py": "gitops",  # aureus-deploy in Gitea, Flux, aureus/aureus-api
    "tests/integration/test_gitops_revert.py": "gitops",
    "tests/integration/test_gitops_freeze.py": "gitops",
    "tests/integration/test_gitops_realign.py": "gitops",  # the emergency path on aureus-api
    "tests/integration/test_gitops_helm.py": "gitops",  # aureus-web's HelmRelease in the same repository
}
EXCLUSIVE_FILES = frozenset((
    "tests/sandbox/test_sandbox.py",  # seed.sh --reset (everything), stops and starts components
    "tests/integration/test_verify_playbooks.py",  # seed.sh --reset; rolls the aureus world, OPA and GitOps back
    "tests/integration/test_fleet_backends_every_type.py",  # every type's rollback on the seeded incident
    "tests/integration/test_rollout_undo_unobserved.py",  # freezes the sandbox's kube-controller-manager (SIGSTOP)
))


def _relative(path):
    return os.path.relpath(str(path), ROOT)


def pytest_ignore_collect(collection_path, config):  # pylint: disable=unused-argument
    """GOVERNED_TESTS=parallel leaves the exclusive files out, GOVERNED_TESTS=exclusive collects only them."""
    phase = os.environ.get("GOVERNED_TESTS", "")
    if phase not in ("parallel", "exclusive") or not collection_path.name.startswith("test_"):
        return None
    if collection_path.suffix != ".py":
        return None
    exclusive = _relative(collection_path) in EXCLUSIVE_FILES
    return True if (phase == "parallel") == exclusive else None


def scope_of(nodeid):
    """The unit of parallel work a test belongs to: its shared-state group, or its file."""
    path = nodeid.split("::", 1)[0]
    return SHARED_STATE.get(path, path)


# The longest units of parallel work, started first so none of them is the run's tail (xdist would order the work
# by number of tests). Measured in make test on 2 cores: the GitOps group alone takes about a third of the run.
LONGEST_FIRST = ("gitops", "database", "opa", "guard")


def longest_first(scopes):
    """The scopes in the order to start them: LONGEST_FIRST's (those present), then the others as they were."""
    first = [scope for scope in LONGEST_FIRST if scope in scopes]
    return first + [scope for scope in scopes if scope not in LONGEST_FIRST]


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class SharedStateScheduling(LoadScopeScheduling):
        _ordered = False

        def _split_scope(self, nodeid):
            return scope_of(nodeid)

        def _assign_work_unit(self, node):
            if not self._ordered:
                self._ordered = True
                for scope in reversed(longest_first(list(self.workqueue))):
                    self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return SharedStateScheduling(config, log)
