"""Fixtures the integration tests of one area share."""

import pytest

from tests.integration import _gitops as g


@pytest.fixture(scope="module")
def forge(sandbox_env):
    """The sandbox's Gitea, as the GitOps tests reach it (one per test file)."""
    return g.Forge(sandbox_env)
