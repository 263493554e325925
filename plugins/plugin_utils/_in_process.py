# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run a collection module's own code in the controller's task worker instead of a new Python process.

Every module of this collection talks to APIs, databases and files from the controller (or the AWX execution
environment), never from a managed host. Started the usual way, each task pays for a new interpreter, the
AnsiballZ payload, ``ansible.module_utils.basic`` and the module's imports (the kubernetes client alone is about
0.6 s on a small machine), which is most of a rollback's wall time. This base runs the very same module code in
the task's worker process, exactly as AnsiballZ would run it: the task's arguments go through
``ActionBase._update_module_args`` and the module's JSON encoding, ``AnsibleModule`` validates them against the
module's own argument spec (check mode, diff, ``no_log`` masking, fallbacks to environment variables included),
and the module's printed result is decoded by ``ActionBase._parse_returned_data``.

The module's Python code is imported when the strategy first loads the action class, in the controller's main
process, so every later task's forked worker starts with it (and the kubernetes client) already imported.

Ansible's collection loader compiles a collection's Python from source on every import and never keeps the
bytecode: for the 40-odd module files a rollback loads that is 0.1-0.2 s of the controller's start, before the first
change. ``BytecodeCachingFinder`` imports this collection's modules and module_utils with Python's own source loader
instead, which uses the ``__pycache__`` bytecode that ``python -m compileall`` (``make collection``, the execution
environment's build) leaves beside the source, checked against the source's size and time like any Python package's,
and writes it where Python may (not under ``PYTHONDONTWRITEBYTECODE``).

The plain module process is used instead whenever running in the worker would not be the same thing: a
connection other than ``local`` (a delegated or remote host), become, async, a Python interpreter for the host
other than the controller's own, or the variable ``governed_rollback_in_process`` set to false.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.abc
import importlib.util
import io
import json
import os
import sys
import traceback

from ansible.module_utils import basic
from ansible.module_utils.common.json import Direction, get_module_encoder
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible.vars.clean import remove_internal_keys

display = Display()

# The serialization profile of plain Python modules (what AnsiballZ uses for them).
PROFILE = "legacy"
OPT_OUT_VAR = "governed_rollback_in_process"
INTERPRETER_VAR = "ansible_python_interpreter"


# This collection's packages whose modules BytecodeCachingFinder imports (leaf modules only: the packages themselves
# stay with ansible-core's collection loader).
COLLECTION_PREFIX = "ansible_collections.governed.rollback.plugins."
CACHED_PACKAGES = frozenset((COLLECTION_PREFIX + "module_utils", COLLECTION_PREFIX + "modules"))


class BytecodeCachingFinder(importlib.abc.MetaPathFinder):
    """Finds this collection's module and module_utils files for Python's source loader, which keeps their bytecode.

    The file is the one ansible-core's loader would import: ``<leaf>.py`` in the parent package's ``__path__``.
    Anything else (other collections, packages, names without a file) is left to the finders after this one."""

    def find_spec(self, fullname, path=None, target=None):
        package, _dot, leaf = fullname.rpartition(".")
        if package not in CACHED_PACKAGES or not path:
            return None
        for directory in path:
            source = os.path.join(directory, leaf + ".py")
            if os.path.isfile(source):
                return importlib.util.spec_from_file_location(fullname, source)
        return None


@contextlib.contextmanager
def bytecode_cache(meta_path=None):
    """A BytecodeCachingFinder first on ``meta_path`` (sys.meta_path), ahead of ansible-core's loader, for the
    imports of the block only: sys.meta_path is as it was afterwards (ansible-test's import check requires it), and
    what the module imports later, in a worker, takes ansible-core's path as before."""
    meta_path = sys.meta_path if meta_path is None else meta_path
    finder = BytecodeCachingFinder()
    meta_path.insert(0, finder)
    try:
        yield finder
    finally:
        meta_path.remove(finder)


def module_name_for(action_module_name):
    """``ansible_collections.ns.coll.plugins.action.x`` -> ``ansible_collections.ns.coll.plugins.modules.x``."""
    head, sep, tail = action_module_name.rpartition(".plugins.action.")
    if not sep or not head.startswith("ansible_collections."):
        raise ValueError("%s is not an action plugin of a collection" % action_module_name)
    return head + ".plugins.modules." + tail


def preload(action_module_name):
    """Import the module's code now (the strategy loads action classes in the controller's main process)."""
    with bytecode_cache():
        module = importlib.import_module(module_name_for(action_module_name))
    # What the controller has imported by now (ansible-core, this module and its module_utils) lives as long as the
    # controller. Frozen, it is left out of every later collection: those of the task workers forked from here, which
    # would walk the whole inherited heap (and copy its pages), and the one at the interpreter's exit (0.2-0.3 s).
    gc.freeze()
    return module


def same_interpreter(configured, current=None):
    """Whether a host's configured Python is this process's (unset or interpreter discovery counts as the same)."""
    current = current or sys.executable
    if not configured or str(configured).startswith("auto"):
        return True
    try:
        return os.path.realpath(str(configured)) == os.path.realpath(current) or \
            os.path.samefile(str(configured), current)
    except OSError:
        return False


def run_module_main(module, json_params):
    """Run ``module.main()`` as AnsiballZ would, returning (rc, printed stdout)."""
    basic._ANSIBLE_ARGS = json_params  # pylint: disable=protected-access
    basic._ANSIBLE_PROFILE = PROFILE  # pylint: disable=protected-access
    out = io.StringIO()
    rc = 0
    with contextlib.redirect_stdout(out):
        try:
            module.main()
            rc = 1
            print(json.dumps({"failed": True, "msg": "module %s returned without printing its result"
                              % module.__name__}))
        except SystemExit as exit_:
            rc = exit_.code if isinstance(exit_.code, int) else 1
        except Exception as exc:  # pylint: disable=broad-except  # the module process would report it the same way
            rc = 1
            print(json.dumps({"failed": True, "msg": "unexpected %s: %s" % (type(exc).__name__, exc),
                              "exception": traceback.format_exc()}))
    return rc, out.getvalue()


class InProcessModuleAction(ActionBase):
    """Action plugin base: the module of the same name, run in the task worker when that is equivalent."""

    _supports_check_mode = True
    _supports_async = True

    def _why_module_process(self, task_vars):
        """The reason the plain module process must run this task, or None when the worker may."""
        opt = task_vars.get(OPT_OUT_VAR, True)
        if not boolean(self._templar.template(opt) if isinstance(opt, str) else opt, strict=False):
            return "%s is false" % OPT_OUT_VAR
        if getattr(self._connection, "transport", None) != "local":
            return "the connection is %s, not local" % getattr(self._connection, "transport", "unknown")
        if self._play_context.become:
            return "become is set"
        if self._task.async_val:
            return "the task is async"
        interpreter = task_vars.get(INTERPRETER_VAR)
        if isinstance(interpreter, str) and "{{" in interpreter:
            interpreter = self._templar.template(interpreter)
        if not same_interpreter(interpreter):
            return "the host's Python (%s) is not the controller's (%s)" % (interpreter, sys.executable)
        return None

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(InProcessModuleAction, self).run(tmp, task_vars)
        del tmp
        module_fqcn = self._task.resolved_action or self._task.action
        why = self._why_module_process(task_vars)
        if why:
            display.vvv("%s runs as a module process: %s" % (module_fqcn, why))
            wrap_async = self._task.async_val and not self._connection.has_native_async
            result.update(self._execute_module(task_vars=task_vars, wrap_async=wrap_async))
            if not wrap_async:
                self._remove_tmp_path(self._connection._shell.tmpdir)
            return result
        display.vvv("%s runs in the task worker (%s)" % (module_fqcn, sys.executable))
        result.update(self._run_in_worker(module_fqcn, task_vars))
        return result

    def _run_in_worker(self, module_fqcn, task_vars):
        module = preload(type(self).__module__)
        module_args = dict(self._task.args)
        self._update_module_args(module_fqcn, module_args, task_vars)
        encoder = get_module_encoder(PROFILE, Direction.CONTROLLER_TO_MODULE)
        json_params = json.dumps({"ANSIBLE_MODULE_ARGS": module_args}, cls=encoder).encode()
        environment = {}
        self._compute_environment_string(raw_environment_out=environment)
        # The worker is a forked child of the controller, so the task's environment and the module's globals end
        # with it, as they would with a module process.
        os.environ.update(dict((str(k), str(v)) for k, v in environment.items()))
        rc, stdout = run_module_main(module, json_params)
        data = self._parse_returned_data({"rc": rc, "stdout": stdout, "stderr": ""}, PROFILE)
        data.pop("_ansible_suppress_tmpdir_delete", None)
        remove_internal_keys(data)
        return data
