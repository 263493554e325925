"""The in-process module runner's plain parts: which module an action stands for, when the controller's Python
counts as the host's, a module's main() run as AnsiballZ would run it (arguments validated by AnsibleModule,
no_log values masked, the printed result and exit code returned), and the bytecode cache for the collection's own
modules and module_utils."""

import compileall
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import types

import pytest

from ansible_collections.governed.rollback.plugins.plugin_utils import _in_process

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__)))))


def in_a_fresh_controller(tmp_path, body):
    """Run ``body`` in a new Python that has ansible-core's collection finder installed for this checkout, as the
    controller has; return what it printed, as JSON."""
    script = tmp_path / "controller.py"
    script.write_text(
        "from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder\n"
        "_AnsibleCollectionFinder(paths=[%r])._install()\n" % os.path.join(ROOT, "build", "collections") + body)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=False,
                          env=dict(os.environ, PYTHONPATH=""))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


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
    modules = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "plugins", "modules")) if f.endswith(".py"))
    actions = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "plugins", "action")) if f.endswith(".py"))
    assert modules and actions == modules
    import importlib

    for name in modules:
        action = importlib.import_module("ansible_collections.governed.rollback.plugins.action." + name)
        assert issubclass(action.ActionModule, _in_process.InProcessModuleAction), name


# The bytecode cache for the collection's own code: Python's source loader, the file ansible-core's loader would
# import, and no other name.
UTILS = "ansible_collections.governed.rollback.plugins.module_utils"


def _source(directory, name, text):
    path = directory / (name + ".py")
    path.write_text(text)
    return path


def _load(spec):
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_collections_module_utils_load_through_pythons_source_loader_and_its_bytecode(tmp_path):
    source = _source(tmp_path, "_cached", "VALUE = 'compiled'\n")
    assert compileall.compile_file(str(source), quiet=2)
    stat = source.stat()
    # The same size and time with other text: only a loader that reads the compiled file still says 'compiled'.
    source.write_text("VALUE = 'source!!'\n")
    os.utime(str(source), ns=(stat.st_atime_ns, stat.st_mtime_ns))

    spec = _in_process.BytecodeCachingFinder().find_spec(UTILS + "._cached", [str(tmp_path)])

    assert isinstance(spec.loader, importlib.machinery.SourceFileLoader)
    assert spec.origin == str(source) and os.path.isfile(spec.cached)
    assert _load(spec).VALUE == "compiled"


def test_an_edited_file_is_imported_from_its_source_not_from_stale_bytecode(tmp_path):
    source = _source(tmp_path, "_edited", "VALUE = 1\n")
    assert compileall.compile_file(str(source), quiet=2)
    source.write_text("VALUE = 'edited since'\n")

    spec = _in_process.BytecodeCachingFinder().find_spec(UTILS + "._edited", [str(tmp_path)])

    assert _load(spec).VALUE == "edited since"


@pytest.mark.parametrize("fullname", [
    "ansible_collections.governed.rollback.plugins.action._leaf",      # action plugins: ansible's plugin loader
    "ansible_collections.other.collection.plugins.module_utils._leaf",  # another collection
    "ansible_collections.governed.rollback.plugins.module_utils",       # the package itself
    "_leaf",
])
def test_other_names_are_left_to_ansibles_loader(tmp_path, fullname):
    _source(tmp_path, "_leaf", "VALUE = 1\n")
    (tmp_path / "module_utils.py").write_text("")

    assert _in_process.BytecodeCachingFinder().find_spec(fullname, [str(tmp_path)]) is None


def test_a_name_without_a_file_or_without_a_package_path_is_not_found(tmp_path):
    finder = _in_process.BytecodeCachingFinder()
    assert finder.find_spec(UTILS + "._missing", [str(tmp_path)]) is None
    assert finder.find_spec(UTILS + "._missing", None) is None


def test_the_finder_goes_first_for_the_preload_only_and_leaves_the_meta_path_as_it_was():
    ansible_finder = object()
    meta_path = [ansible_finder]

    with _in_process.bytecode_cache(meta_path) as finder:
        assert meta_path == [finder, ansible_finder]
    assert meta_path == [ansible_finder]

    with pytest.raises(ImportError):
        with _in_process.bytecode_cache(meta_path):
            raise ImportError("a module that does not import")
    assert meta_path == [ansible_finder]


def test_preloading_an_action_leaves_sys_meta_path_as_it_was():
    before = list(sys.meta_path)
    _in_process.preload("ansible_collections.governed.rollback.plugins.action.rollback_approval")
    assert sys.meta_path == before


def test_the_controller_imports_the_collections_modules_from_bytecode(tmp_path):
    """The real collection, loaded as the controller loads it: ansible-core's collection finder, then an action
    plugin's preload; the modules and module_utils it pulls in come through the source loader."""
    loaders = in_a_fresh_controller(tmp_path, (
        "import importlib, json, sys\n"
        "importlib.import_module('ansible_collections.governed.rollback.plugins.action.rollout_undo')\n"
        "print(json.dumps(dict((n, type(m.__loader__).__name__) for n, m in sys.modules.items()\n"
        "      if n.startswith('ansible_collections.governed.rollback.plugins.module'))))\n"))

    assert loaders["ansible_collections.governed.rollback.plugins.modules.rollout_undo"] == "SourceFileLoader"
    assert loaders["ansible_collections.governed.rollback.plugins.module_utils._rollout"] == "SourceFileLoader"
    leaves = [n for n in loaders if n.count(".") == 5]
    assert len(leaves) > 5 and all(loaders[n] == "SourceFileLoader" for n in leaves), loaders


def test_what_the_controller_preloads_is_left_out_of_later_garbage_collections(tmp_path):
    """After a preload the controller's heap so far (ansible's code, the module's) is frozen: the collections in
    the forked workers and the one at the controller's exit do not walk it again."""
    frozen = in_a_fresh_controller(tmp_path, (
        "import gc, json, importlib\n"
        "before = gc.get_freeze_count()\n"
        "importlib.import_module('ansible_collections.governed.rollback.plugins.action.rollout_undo')\n"
        "module = importlib.import_module('ansible_collections.governed.rollback.plugins.modules.rollout_undo')\n"
        "tracked = set(map(id, gc.get_objects()))\n"
        "print(json.dumps({'before': before, 'after': gc.get_freeze_count(),\n"
        "                  'main_tracked': id(module.main) in tracked}))\n"))

    assert frozen["before"] == 0 and frozen["after"] > 10000
    assert frozen["main_tracked"] is False
