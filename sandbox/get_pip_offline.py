"""Stand-in for ansible-test's get-pip bootstrap, which it downloads from a host CI cannot reach.

ansible-test runs this inside a fresh venv with pip options and the pinned pip requirement;
ensurepip seeds pip from the interpreter's bundled wheel and pip fetches the pin from PyPI.
"""
import subprocess
import sys

ARGS = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "-q"] + ARGS)
