"""The in-process module runner's plain parts: which module an action stands for, when the controller's Python
counts as the host's, and a module's main() run as AnsiballZ would run it (arguments validated by AnsibleModule,
no_log values masked, the printed result and exit code returned)."""

import json
import os
import sys
import types

import pytest

from ansible_collections.governed.rollback.plugins.plugin_utils import _in_process


def test_action_module_names_map_to_the_module_of_the_same_name():
    assert _in_process.module_name_for("ansible_collections.governed.rollback.plugins.action.rollout_undo") == \
        "ansible_collections.governed.rollback.plugins.modules.rollout_undo"


def test_a_module_outside_a_collections_action_plugins_is_refused():
    with pytest.raises(ValueError, match="not an action plugin of a collection"):
        _in_process.module_name_for("ansible.plugins.action.normal")


@pytest.mark.parametrize("configured", [None, "", "auto", "auto_silent", "auto_legacy"])
def test_unset_or_discovered_interpreters_are_the_controllers(configured):
    assert _in_process.same_interpreter(configured, "/usr/bin/python3")


def test_the_controllers_own_python_by_another_path_is_the_same(tmp_path):
    link = tmp_path / "python"
    os.symlink(sys.executable, str(link))
    assert _in_process.same_interpreter(str(link), sys.executable)


def test_another_python_is_not_the_same(tmp_path):
    other = tmp_path / "python3.9"
    other.write_text("#!/bin/sh\n")
    assert not _in_process.same_interpreter(str(other), sys.executable)
    assert not _in_process.same_interpreter("/nonexistent/python", sys.executable)


def _module(main):
    return types.SimpleNamespace(__name__="tests.fake_module", main=main)


def _params(**args):
    args.setdefault("_ansible_check_mode", False)
    args.setdefault("_ansible_no_log", False)
    return json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode()


def _echo_main():
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(argument_spec=dict(name=dict(type="str", required=True),
                                              token=dict(type="str", no_log=True)),
                           supports_check_mode=True)
    module.exit_json(changed=not module.check_mode, name=module.params["name"],
                     said="the token is %s" % module.params["token"])


def test_main_runs_with_the_arguments_validated_and_no_log_values_masked():
    rc, stdout = _in_process.run_module_main(_module(_echo_main), _params(name="web", token="canary-4f2a9c"))
    result = json.loads(stdout)
    assert rc == 0
    assert result["changed"] is True and result["name"] == "web"
    assert "canary-4f2a9c" not in stdout
    assert result["said"] == "the token is ********"
    assert result["invocation"]["module_args"]["token"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"


def test_check_mode_reaches_the_module():
    rc, stdout = _in_process.run_module_main(_module(_echo_main), _params(name="web", _ansible_check_mode=True))
    assert rc == 0 and json.loads(stdout)["changed"] is False


@pytest.mark.parametrize("args, named", [({"token": "x"}, "missing required arguments: name"),
                                         ({"name": "web", "colour": "blue"}, "colour")])
def test_bad_arguments_fail_the_way_ansiblemodule_fails_them(args, named):
    rc, stdout = _in_process.run_module_main(_module(_echo_main), _params(**args))
    result = json.loads(stdout)
    assert rc == 1 and result["failed"] is True
    assert named in result["msg"]


def test_an_exception_escaping_main_is_a_failed_result_with_its_traceback():
    def broken():
        raise KeyError("spec")

    rc, stdout = _in_process.run_module_main(_module(broken), _params())
    result = json.loads(stdout)
    assert rc == 1 and result["failed"] is True
    assert result["msg"] == "unexpected KeyError: 'spec'" and "Traceback" in result["exception"]


def test_a_main_that_returns_without_a_result_is_a_failure():
    rc, stdout = _in_process.run_module_main(_module(lambda: None), _params())
    assert rc == 1 and "returned without printing its result" in json.loads(stdout)["msg"]


def test_every_module_has_its_in_process_action_plugin():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__)))))
    modules = sorted(f[:-3] for f in os.listdir(os.path.join(root, "plugins", "modules")) if f.endswith(".py"))
    actions = sorted(f[:-3] for f in os.listdir(os.path.join(root, "plugins", "action")) if f.endswith(".py"))
    assert modules and actions == modules
    import importlib

    for name in modules:
        action = importlib.import_module("ansible_collections.governed.rollback.plugins.action." + name)
        assert issubclass(action.ActionModule, _in_process.InProcessModuleAction), name
