# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A private clone of a config repository, driven through _proc (argv only, a deadline, stderr redacted).

The forge's credentials never reach a command line, the environment or the output: git reads the
``Authorization`` header from ``http.<url>.extraHeader`` in a configuration file of its own (mode 0600, inside a
0700 directory that is removed afterwards), named by ``GIT_CONFIG_GLOBAL``. Every message is redacted with the
token and the header as known values.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import tempfile

from ansible_collections.governed.rollback.plugins.module_utils import _proc
from ansible_collections.governed.rollback.plugins.module_utils._common import RollbackError
from ansible_collections.governed.rollback.plugins.module_utils._redact import redact_text

GIT_TIMEOUT = 120
AUTHOR = ("governed.rollback", "rollback@governed.invalid")


class GitError(RollbackError):
    """A git command failed; the message is redacted."""


class Clone(object):
    """A private working clone of one branch; use as a context manager (the directory and credentials go away)."""

    def __init__(self, url, auth_header=None, secrets=(), timeout=GIT_TIMEOUT, author=AUTHOR):
        self.url = url
        self.timeout = timeout
        self.secrets = [s for s in list(secrets) + [auth_header] if s]
        self.root = tempfile.mkdtemp(prefix="governed-gitops-")
        os.chmod(self.root, 0o700)
        self.dir = os.path.join(self.root, "repo")
        config = os.path.join(self.root, "gitconfig")
        descriptor = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write("[user]\n\tname = %s\n\temail = %s\n" % author)
            handle.write("[advice]\n\tdetachedHead = false\n")
            if auth_header:
                handle.write('[http "%s"]\n\textraHeader = Authorization: %s\n' % (url, auth_header))
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self.root,
            "GIT_CONFIG_GLOBAL": config,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "/bin/false",
            "LC_ALL": "C",
        }

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)

    def redact(self, text):
        return redact_text(text, self.secrets)

    def run(self, *args, **kwargs):
        """``git -C <clone> args``; the ProcResult (stdout not redacted: callers keep only what they need)."""
        chdir = kwargs.get("chdir", self.dir)
        argv = ["git"] + list(args)
        if chdir is not None:
            argv = ["git", "-C", chdir] + list(args)
        return _proc.run(argv, env=self.env, timeout=kwargs.get("timeout", self.timeout), known_values=self.secrets)

    def ok(self, what, *args, **kwargs):
        result = self.run(*args, **kwargs)
        if not result.ok:
            raise GitError("%s failed: %s" % (what, result.explain("git")))
        return result.value

    # ---- the operations a GitOps rollback needs
    def clone(self, branch):
        self.ok("cloning %s (branch %s)" % (self.url, branch), "clone", "--quiet", "--no-tags", "--single-branch",
                "--branch", branch, "--", self.url, self.dir, chdir=None)

    def head(self):
        return self.ok("reading HEAD", "rev-parse", "HEAD").strip()

    def is_ancestor(self, ancestor, descendant="HEAD"):
        result = self.run("merge-base", "--is-ancestor", ancestor, descendant)
        if result.rc not in (0, 1):
            raise GitError("checking whether %s is in the history failed: %s" % (ancestor, result.explain("git")))
        return result.rc == 0

    def resolve(self, ref):
        result = self.run("rev-parse", "--verify", "--quiet", "%s^{commit}" % ref)
        return result.value.strip() if result.ok and result.value.strip() else None

    def log(self, path, limit=200):
        """``[{sha, message}]`` newest first, of the commits touching ``path`` (a merged rollback branch's commit
        included: its trailers are how a later run recognizes it)."""
        out = self.ok("reading the history of %s" % path, "log", "-n", str(limit),
                      "--format=%H%x00%B%x1e", "--", path)
        entries = []
        for record in out.split("\x1e"):
            record = record.strip("\n")
            if not record:
                continue
            sha, _sep, message = record.partition("\x00")
            entries.append({"sha": sha.strip(), "message": message})
        return entries

    def show(self, sha, path):
        """The text of ``path`` at ``sha``, or None when it does not exist there."""
        result = self.run("show", "%s:%s" % (sha, path))
        return result.value if result.ok else None

    def parents(self, sha):
        return self.ok("reading the parents of %s" % sha, "rev-list", "--parents", "-n", "1", sha).split()[1:]

    def checkout_new(self, branch):
        self.ok("creating branch %s" % branch, "checkout", "--quiet", "-b", branch)

    def revert(self, sha):
        """``git revert --no-commit``; a conflict aborts the revert and returns the conflicting paths."""
        result = self.run("revert", "--no-commit", "--no-edit", sha)
        if result.ok:
            return []
        conflicts = self.run("diff", "--name-only", "--diff-filter=U").value.split()
        self.run("revert", "--abort")
        if not conflicts:
            raise GitError("git revert of %s failed: %s" % (sha, result.explain("git")))
        return conflicts

    def commit_all(self, message):
        """Commit everything in the working tree with ``message`` (read from a file: _proc closes stdin)."""
        self.ok("staging the rollback", "add", "-A")
        path = os.path.join(self.root, "message")
        with open(path, "w") as handle:
            handle.write(message)
        self.ok("committing the rollback", "commit", "--quiet", "--no-verify", "-F", path)
        return self.head()

    def diff(self, base, head="HEAD"):
        return self.ok("diffing", "diff", "--no-color", base, head)

    def status_clean(self):
        return not self.ok("reading the status", "status", "--porcelain").strip()

    def push(self, branch):
        self.ok("pushing %s" % branch, "push", "--quiet", "origin", "HEAD:refs/heads/%s" % branch)

    def remote_head(self, branch):
        out = self.ok("reading %s on the remote" % branch, "ls-remote", "origin", "refs/heads/%s" % branch)
        return out.split()[0] if out.strip() else None
