"""rollout_undo refuses a Deployment whose spec its controller has not observed yet: the sandbox's real
kube-controller-manager is frozen (SIGSTOP) for the test, which stalls every rollout on the sandbox, so this file runs
alone after the parallel tests (tests/conftest.py, EXCLUSIVE_FILES); the rest of rollout_undo's cases are in
test_rollout_undo.py."""

import contextlib
import os
import signal

from tests.integration import test_rollout_undo as undo
from tests.sandbox_fixtures import get

run_module = undo.run_module  # the module run against the sandbox, as in test_rollout_undo.py


@contextlib.contextmanager
def controller_manager_frozen(sandbox_env):
    """Freeze the sandbox's real kube-controller-manager (SIGSTOP) so a spec change stays unobserved; thaw after."""
    with open(os.path.join(sandbox_env["SANDBOX_STATE"], "pids", "kube-controller-manager.pid")) as handle:
        pid = int(handle.read().strip())
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_rollback_while_the_controller_has_not_observed_the_spec_is_refused(
        kubectl, run_module, namespace, sandbox_env):
    undo.workload_with_history(kubectl, namespace, ["app:v1", "app:v2"])
    with controller_manager_frozen(sandbox_env):
        kubectl("scale", "deployment/web", "-n", namespace, "--replicas=3")
        before = get(kubectl, "deployment", namespace, "web")
        assert before["metadata"]["generation"] > before["status"]["observedGeneration"]

        failed, result = run_module(namespace=namespace, name="web")

        undo.assert_refused_and_unchanged(kubectl, namespace, result, failed, "generation_not_observed",
                                          before["metadata"]["resourceVersion"])
        assert "has generation %d but its controller has only observed generation %d" % (
            before["metadata"]["generation"], before["status"]["observedGeneration"]) in result["msg"]
    undo.wait_observed(kubectl, "deployment", namespace, "web")
    assert undo.container_image(get(kubectl, "deployment", namespace, "web")) == "app:v2"
