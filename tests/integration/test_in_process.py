"""The collection's modules run in the controller's task worker (plugins/plugin_utils/_in_process.py) and give the
same results as the same module started as its own process: same plan, same diff, same validation errors, no_log
values masked, and the plain module process whenever the worker would not be the same thing. Against the sandbox's
real API server, through ansible-runner (as AWX runs jobs)."""

import os

import yaml

from tests.integration import _playbook as pb
from tests.integration.test_awx_runner import awx_job

CANARY = "canary-api-key-7d1e5f0b93"
IN_WORKER = "governed.rollback.rollout_undo runs in the task worker"
AS_PROCESS = "governed.rollback.rollout_undo runs as a module process: "
# What differs between two runs of the same plan: wall-clock timings.
VOLATILE = ("timings",)


def _plan_task(name, namespace, kubeconfig, **extra):
    task = {"name": name, "register": name.replace(" ", "_"), "check_mode": True, "diff": True,
            "governed.rollback.rollout_undo": {
                "name": "frontend", "namespace": namespace, "to_revision": 2, "wait": False,
                "kubeconfig": kubeconfig, "api_key": CANARY, "actor": "oncall", "incident_id": "INC-12345",
                "reason": "Breaking UI changes affecting user workflows"}}
    task.update(extra)
    return task


def _playbook(tmp_path, tasks):
    path = tmp_path / "in_process.yml"
    play = {"name": "in-process check", "hosts": "localhost", "gather_facts": False, "tasks": tasks}
    path.write_text(yaml.safe_dump([play], sort_keys=False))
    return str(path)


def _failed(run, task):
    return [e["event"] for e in run.events if e["event_data"].get("task") == task
            and e["event"].startswith("runner_on_")] == ["runner_on_start", "runner_on_failed"]


def _stable(result):
    return dict((k, v) for k, v in result.items() if k not in VOLATILE)


def test_a_module_in_the_worker_plans_exactly_as_its_own_process_does_and_masks_no_log_values(
        kubectl, namespace, kubeconfig, tmp_path):
    pb.frontend_with_history(kubectl, namespace)
    before = pb.resource_versions(kubectl, namespace, "frontend")
    playbook = _playbook(tmp_path, [
        _plan_task("plan in the worker", namespace, kubeconfig),
        _plan_task("plan in a process", namespace, kubeconfig, vars={"governed_rollback_in_process": False}),
    ])
    run = pb.run_playbook(tmp_path / "job", {}, playbook=playbook, verbosity=3, cmdline=["--diff"])
    assert run.status == "successful", run.explain()
    assert IN_WORKER in run.stdout
    assert AS_PROCESS + "governed_rollback_in_process is false" in run.stdout
    worker, process = run.task_result("plan in the worker"), run.task_result("plan in a process")
    assert worker["changed"] is True and worker["to_revision"] == 2
    assert worker["plan"]["dry_run"].startswith("accepted by the API server")
    assert _stable(worker) == _stable(process)
    assert worker["invocation"]["module_args"]["api_key"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    # A dry run changed nothing, and the canary credential is nowhere: not in the output, not in the job's files.
    assert pb.resource_versions(kubectl, namespace, "frontend") == before
    assert CANARY not in run.stdout
    assert pb.leaked(tmp_path / "job", [CANARY]) == []


def test_bad_input_is_refused_the_same_way_in_the_worker_and_changes_nothing(kubectl, namespace, kubeconfig, tmp_path):
    pb.frontend_with_history(kubectl, namespace)
    before = pb.resource_versions(kubectl, namespace, "frontend")
    bad = {"ignore_errors": True, "check_mode": False}
    tasks = []
    for where, extra in (("worker", {}), ("process", {"vars": {"governed_rollback_in_process": False}})):
        unknown = _plan_task("unknown option in the %s" % where, namespace, kubeconfig, **dict(bad, **extra))
        unknown["governed.rollback.rollout_undo"]["colour"] = "blue"
        missing = _plan_task("missing revision in the %s" % where, namespace, kubeconfig, **dict(bad, **extra))
        missing["governed.rollback.rollout_undo"]["to_revision"] = 9
        tasks += [unknown, missing]
    run = pb.run_playbook(tmp_path / "job", {}, playbook=_playbook(tmp_path, tasks))
    assert run.status == "successful", run.explain()
    for task in ("unknown option in the %s", "missing revision in the %s"):
        worker, process = run.task_result(task % "worker"), run.task_result(task % "process")
        assert _failed(run, task % "worker") and _failed(run, task % "process")
        assert worker["msg"] == process["msg"]
    assert "colour" in run.task_result("unknown option in the worker")["msg"]
    assert "9" in run.task_result("missing revision in the worker")["msg"]
    assert pb.resource_versions(kubectl, namespace, "frontend") == before


def test_another_python_for_the_host_gets_the_module_process(kubectl, namespace, kubeconfig, tmp_path):
    """A host whose interpreter is not the controller's runs the module with that interpreter, as before."""
    pb.frontend_with_history(kubectl, namespace)
    other = tmp_path / "python"
    # Another path to another interpreter binary (a copy, not a link: the same file counts as the same Python).
    other.write_bytes(open(os.path.realpath(os.path.join(pb.VENV_BIN, "python")), "rb").read())
    other.chmod(0o755)
    venv_site = [p for p in __import__("sys").path if p.endswith("site-packages")]
    playbook = _playbook(tmp_path, [_plan_task("plan", namespace, kubeconfig, vars={
        "ansible_python_interpreter": str(other)}, environment={"PYTHONPATH": os.pathsep.join(venv_site)})])
    run = pb.run_playbook(tmp_path / "job", {}, playbook=playbook, verbosity=3)
    assert run.status == "successful", run.explain()
    assert AS_PROCESS + "the host's Python (%s) is not the controller's" % other in run.stdout
    assert run.task_result("plan")["to_revision"] == 2


def test_the_awx_job_runs_every_governed_module_in_the_worker(kubectl, namespace, tmp_path, monkeypatch):
    """The AWX path (ansible-runner, the project's ansible.cfg, credentials as environment variables): the whole
    deployment rollback with each governed module in the task worker, and a good receipt."""
    pb.frontend_with_history(kubectl, namespace)
    private_dir = tmp_path / "awx-job"
    inventory, credentials, signing_key = awx_job(private_dir, monkeypatch)
    survey = dict(pb.INCIDENT, namespace=namespace, deployment="frontend", target_rev=2, approvals=[],
                  evidence_dir=str(tmp_path / "evidence"), receipt_ledger=str(tmp_path / "ledger.jsonl"),
                  awx_user_name="oncall")
    run = pb.run_playbook(private_dir, survey, envvars=credentials, inventory=inventory, ansible_config=False,
                          verbosity=3)
    assert run.status == "successful", run.explain()
    ran = [line.split(" runs ")[0].strip() for line in run.stdout.splitlines() if line.startswith("governed.rollback.")
           and " runs " in line]
    assert {"governed.rollback.rollout_undo", "governed.rollback.evidence_capture", "governed.rollback.rollback_approval",
            "governed.rollback.rollback_receipt"} <= set(ran)
    assert "runs as a module process" not in run.stdout
    (entry,) = pb.ledger_entries(tmp_path / "ledger.jsonl")
    assert entry["receipt"]["outcome"] == "succeeded"
    assert pb.template_image(pb.get(kubectl, "deployment", namespace, "frontend")) == pb.IMAGES[1]
    key_body = "".join(line for line in signing_key.splitlines() if line and not line.startswith("-----"))
    assert pb.leaked(tmp_path / "evidence", [key_body]) == []
