"""The type roles call the shared steps' entry points as their argument specs say.

The type roles import ``governed.rollback.rollback_steps`` statically with ``rolespec_validate: false``. An
include_role of each step, with its argument validation at run time, cost about 1.4 s of a 5 s deployment rollback
(bench/deploy_rollback.py). The check moves here, before anything runs: every import names an entry point of
``meta/argument_specs.yml``, passes each required option (on the import or on an enclosing block), passes no option
the entry point does not declare, and a literal value has the declared type and one of the declared choices; no
enclosing block templates a keyword the import would evaluate too early. The
role's ``defaults/main.yml`` holds each declared default, because nothing applies the spec's defaults now.
"""

import os

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = "governed.rollback.rollback_steps"
ROLES_DIR = os.path.join(ROOT, "roles")
TYPE_ROLES = sorted(r for r in os.listdir(ROLES_DIR) if r != "rollback_steps" and os.path.isdir(os.path.join(
    ROLES_DIR, r, "tasks")))
ROLE_CALLS = ("ansible.builtin.import_role", "ansible.builtin.include_role", "import_role", "include_role")
SECTIONS = ("block", "rescue", "always")
TYPES = {"str": str, "list": list, "dict": dict, "bool": bool, "int": int}


def _load(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


SPECS = _load(os.path.join(ROLES_DIR, "rollback_steps", "meta", "argument_specs.yml"))["argument_specs"]


IMPORT_TASKS = ("ansible.builtin.import_tasks", "import_tasks")


def step_calls(tasks, inherited=None, where="", blocks=(), tasks_dir=None):
    """(location, entry point, module name, task, {var: value} from the task and its enclosing blocks, the enclosing
    blocks and imports) of each call of the steps role, walking into blocks and statically imported task files."""
    inherited = inherited or {}
    for index, task in enumerate(tasks or []):
        here = "%s[%d] %s" % (where, index, task.get("name", ""))
        scope = dict(inherited, **(task.get("vars") or {}))
        if any(section in task for section in SECTIONS):
            for section in SECTIONS:
                yield from step_calls(task.get(section), scope, here + " " + section, blocks + (task,), tasks_dir)
            continue
        for module in IMPORT_TASKS:
            if isinstance(task.get(module), str) and tasks_dir:
                imported = _load(os.path.join(tasks_dir, task[module]))
                yield from step_calls(imported, scope, "%s > %s" % (here, task[module]), blocks + (task,), tasks_dir)
        for module in ROLE_CALLS:
            args = task.get(module)
            if isinstance(args, dict) and args.get("name") == STEPS:
                yield here, args.get("tasks_from", "main"), module, task, scope, blocks


def imported_files(tasks_dir):
    """The task files another file of the role imports (walked through their importer, with its scope)."""
    found = set()

    def walk(tasks):
        for task in tasks or []:
            for section in SECTIONS:
                walk(task.get(section))
            for module in IMPORT_TASKS:
                if isinstance(task.get(module), str):
                    found.add(task[module])
    for name in os.listdir(tasks_dir):
        walk(_load(os.path.join(tasks_dir, name)))
    return found


def all_calls():
    for role in TYPE_ROLES:
        tasks_dir = os.path.join(ROLES_DIR, role, "tasks")
        imported = imported_files(tasks_dir)
        for name in sorted(set(os.listdir(tasks_dir)) - imported):
            yield from step_calls(_load(os.path.join(tasks_dir, name)), where="%s/%s" % (role, name),
                                  tasks_dir=tasks_dir)


CALLS = list(all_calls())


def is_template(value):
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def test_every_type_role_calls_the_steps():
    callers = set(where.split("/")[0] for where, _ep, _m, _t, _s, _b in CALLS)
    assert callers == set(TYPE_ROLES)
    # The run record, the receipt and the failure path are in every type role.
    for role in TYPE_ROLES:
        entries = set(ep for where, ep, _m, _t, _s, _b in CALLS if where.startswith(role + "/"))
        assert {"start", "approve", "capture", "succeeded", "failure", "receipt"} <= entries, role


@pytest.mark.parametrize("where,entry,module,task,scope,blocks", CALLS, ids=[c[0] for c in CALLS])
def test_each_call_of_a_step_matches_its_argument_spec(where, entry, module, task, scope, blocks):
    assert module.endswith("import_role"), "%s: import the steps statically (an include costs a task)" % where
    args = task[module]
    assert args.get("rolespec_validate") is False, "%s: validated here instead of at run time" % where
    assert entry in SPECS, "%s: %s has no entry point %r" % (where, STEPS, entry)
    options = SPECS[entry].get("options") or {}
    missing = [name for name, spec in options.items() if spec.get("required") and name not in scope]
    assert missing == [], "%s: %s needs %s" % (where, entry, missing)
    undeclared = [name for name in task.get("vars") or {} if name.startswith("rollback_steps_") and name not in options]
    assert undeclared == [], "%s: %s does not declare %s" % (where, entry, undeclared)
    for name, value in scope.items():
        spec = options.get(name)
        if spec is None or is_template(value):
            continue
        assert isinstance(value, TYPES[spec.get("type", "str")]), "%s: %s=%r is not a %s" % (
            where, name, value, spec.get("type", "str"))
        if spec.get("choices"):
            assert value in spec["choices"], "%s: %s=%r is not one of %s" % (where, name, value, spec["choices"])


@pytest.mark.parametrize("where,entry,module,task,scope,blocks", CALLS, ids=[c[0] for c in CALLS])
def test_no_block_around_a_step_templates_a_keyword_when_the_role_loads(where, entry, module, task, scope, blocks):
    """An import post-validates itself and its enclosing blocks while the role loads, with no host's variables (the
    inventory's are not there yet), and keeps the result: a templated block name fails with 'undefined', a templated
    environment would be fixed to what the play's variables alone give. `when` and `vars` are evaluated later."""
    for block in blocks + (task,):
        templated = sorted(k for k, v in block.items() if k not in SECTIONS + ("when", "vars") and is_template(v))
        assert templated == [], "%s: %r templates %s" % (where, block.get("name"), templated)


def test_the_defaults_file_holds_each_declared_default():
    defaults = _load(os.path.join(ROLES_DIR, "rollback_steps", "defaults", "main.yml"))
    for entry, spec in SPECS.items():
        for name, option in (spec.get("options") or {}).items():
            if "default" in option:
                assert defaults.get(name) == option["default"], "%s.%s" % (entry, name)


def test_the_walk_finds_calls_in_every_section():
    tasks = [{"name": "outer", "vars": {"rollback_steps_plan": "{{ p }}"},
              "block": [{"ansible.builtin.import_role": {"name": STEPS, "tasks_from": "approve"}}],
              "rescue": [{"ansible.builtin.include_role": {"name": STEPS, "tasks_from": "failure"},
                          "vars": {"rollback_steps_sources": []}}],
              "always": [{"ansible.builtin.import_role": {"name": "other.role"}}]}]
    found = [(entry, module, sorted(scope)) for _w, entry, module, _t, scope, _b in step_calls(tasks)]
    assert found == [("approve", "ansible.builtin.import_role", ["rollback_steps_plan"]),
                     ("failure", "ansible.builtin.include_role", ["rollback_steps_plan", "rollback_steps_sources"])]
