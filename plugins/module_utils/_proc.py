# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run a program (git, opa, pg_dump, pg_restore, alembic, ...) the one way the collection does: an argv list, never
a shell, a deadline, stdin closed, and stderr redacted before anyone sees it."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import subprocess
import tempfile
import threading

from ansible_collections.governed.rollback.plugins.module_utils._common import RollbackError
from ansible_collections.governed.rollback.plugins.module_utils._redact import redact_text

CHUNK = 64 * 1024
STDERR_TAIL = 2000


class ProcError(RollbackError):
    """The program could not be started at all (not found, not executable)."""


class ProcResult(object):
    """What a finished program left: exit code, what the consumer returned (or stdout text), redacted stderr."""

    def __init__(self, argv, rc, value, stderr, timed_out, timeout):
        self.argv = argv
        self.rc = rc
        self.value = value
        self.stderr = stderr
        self.timed_out = timed_out
        self.timeout = timeout

    @property
    def ok(self):
        return self.rc == 0 and not self.timed_out

    @property
    def stderr_tail(self):
        """The end of stderr (redacted), prefixed with the kill when the deadline passed."""
        tail = self.stderr.strip()[-STDERR_TAIL:]
        if self.timed_out:
            tail = "killed after %ss timeout. %s" % (self.timeout, tail)
        return tail

    def explain(self, what=None):
        """One sentence for an error message: which program, its exit code, the end of its stderr."""
        return "%s exited %s: %s" % (what or os.path.basename(self.argv[0]), self.rc,
                                     self.stderr_tail or "(no output on stderr)")


def stream(argv, consume, env=None, chdir=None, timeout=60, known_values=()):
    """Run ``argv`` and hand an iterator over its stdout chunks (bytes) to ``consume``; return a ProcResult whose
    ``value`` is what ``consume`` returned. stderr goes to a temporary file (no pipe to fill), redacted with the
    collection's rules and the run's ``known_values``. The program is killed when ``timeout`` seconds pass."""
    argv = [str(arg) for arg in argv]
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                    cwd=chdir)
        except OSError as exc:
            raise ProcError("cannot run %s: %s" % (os.path.basename(argv[0]), exc.strerror or exc))
        killed = []

        def kill():
            killed.append(True)
            proc.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            value = consume(iter(lambda: proc.stdout.read(CHUNK), b""))
            # Whatever the consumer left unread must not block the program on a full pipe.
            for _chunk in iter(lambda: proc.stdout.read(CHUNK), b""):
                pass
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
            proc.stdout.close()
        err.seek(0)
        stderr = redact_text(err.read().decode("utf-8", "replace"), known_values)
    return ProcResult(argv, rc, value, stderr, bool(killed), timeout)


def run(argv, env=None, chdir=None, timeout=60, known_values=()):
    """Run ``argv`` to completion; ``value`` is its stdout as text (not redacted: callers decide what to keep)."""
    return stream(argv, lambda chunks: b"".join(chunks).decode("utf-8", "replace"), env=env, chdir=chdir,
                  timeout=timeout, known_values=known_values)
