"""Read the running sandbox's coordinates from .sandbox/env (written by `make sandbox-up`)."""

import os
import shlex

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV_FILE = os.path.join(ROOT, ".sandbox", "env")


def load_sandbox_env():
    """Return the sandbox's variables; raise with the fix if the sandbox is not up."""
    if not os.path.exists(ENV_FILE):
        raise RuntimeError("%s is missing: the sandbox is not up; run `make sandbox-up`" % ENV_FILE)
    env = {}
    with open(ENV_FILE) as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("export "):
                line = line[len("export "):]
            key, sep, value = line.partition("=")
            parts = shlex.split(value) if sep else []
            env[key] = parts[0] if parts else ""
    return env
