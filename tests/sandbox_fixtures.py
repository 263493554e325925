"""Fixtures for tests that talk to the real sandbox (API server, PostgreSQL, OPA); loaded by tests/conftest.py."""

import json
import os
import subprocess
import time
import uuid

import pytest

from tests.sandbox_env import load_sandbox_env, ROOT


@pytest.fixture(scope="session")
def sandbox_env():
    return load_sandbox_env()


@pytest.fixture(scope="session")
def kubeconfig(sandbox_env):
    return sandbox_env["KUBECONFIG"]


@pytest.fixture(scope="session")
def k8s_api(kubeconfig):
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return client.ApiClient(configuration)


@pytest.fixture(scope="session")
def kubectl(sandbox_env):
    """Run kubectl against the sandbox; returns CompletedProcess (check=True by default)."""

    def run(*args, check=True, input=None):
        cmd = [sandbox_env.get("SANDBOX_KUBECTL", "kubectl"), "--kubeconfig", sandbox_env["KUBECONFIG"],
               "--cache-dir", os.path.join(ROOT, ".sandbox", "kcache")] + list(args)
        return subprocess.run(cmd, check=check, capture_output=True, text=True, input=input)

    return run


@pytest.fixture
def namespace(kubectl):
    """A fresh namespace per test, deleted afterwards."""
    name = "t-" + uuid.uuid4().hex[:8]
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def get(kubectl, kind, namespace, name):
    """One object as a dict, read with kubectl."""
    return json.loads(kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)


def items(kubectl, kind, namespace, selector=None):
    """The objects of a kind in a namespace (optionally by label selector), as dicts."""
    args = ["get", kind, "-n", namespace, "-o", "json"] + (["-l", selector] if selector else [])
    return json.loads(kubectl(*args).stdout)["items"]


def wait_until(predicate, timeout=90, what="condition", interval=0.3):
    """Poll predicate until it returns something truthy; fail the test naming what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
