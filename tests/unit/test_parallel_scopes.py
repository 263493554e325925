"""The parallel test run's units of work (tests/conftest.py): shared-state groups, files, and the order they start."""

from tests import conftest


def test_files_sharing_seeded_state_are_one_unit_and_other_files_their_own():
    assert conftest.scope_of("tests/integration/test_gitops_realign.py::test_x[a]") == "gitops"
    assert conftest.scope_of("tests/integration/test_pg_schema_downgrade.py::test_y") == "database"
    assert conftest.scope_of("tests/unit/test_awx_config.py::test_z") == "tests/unit/test_awx_config.py"


def test_the_longest_groups_start_first_and_the_rest_keep_their_order():
    scopes = ["tests/a.py", "opa", "tests/b.py", "gitops", "tests/c.py"]
    assert conftest.longest_first(scopes) == ["gitops", "opa", "tests/a.py", "tests/b.py", "tests/c.py"]
    assert conftest.longest_first(["tests/a.py"]) == ["tests/a.py"]


def test_every_exclusive_and_grouped_file_exists():
    import os

    for path in list(conftest.SHARED_STATE) + list(conftest.EXCLUSIVE_FILES):
        assert os.path.exists(os.path.join(conftest.ROOT, path)), path
