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

