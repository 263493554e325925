"""Read the running sandbox's coordinates from .sandbox/env (written by `make sandbox-up`)."""

import os
import shlex
import subprocess

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


def reseed(*args, env=None):
    """Run ``sandbox/seed.sh ARGS`` (``--reset``, ``--reset gitops``, ...); if it fails, raise with what it printed.

    The seed's output is captured to keep the test log quiet, so a reset that fails in a fixture must carry it, or the
    log says only "returned non-zero exit status 1"."""
    argv = [os.path.join(ROOT, "sandbox", "seed.sh")] + list(args)
    result = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise RuntimeError("sandbox/seed.sh %s exited with %d\n--- its stdout (end) ---\n%s\n--- its stderr (end) ---\n%s"
                           % (" ".join(args), result.returncode, result.stdout[-4000:], result.stderr[-4000:]))
    return result
