# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The git forge's pull-request API behind one small interface, so a GitOps rollback does not care which forge
hosts the config repository.

The interface (``Forge``) is what gitops_revert needs and nothing more:

==========================  ==========================================================================
``user()``                  the login the token belongs to (for git's HTTP Basic credentials)
``git_auth_header()``       the ``Authorization`` header value git sends (kept out of every command line)
``pull_requests(prefix)``   open pull requests whose head branch starts with ``prefix``
``open_pull_request(pr)``   open one (``title``, ``body``, ``head``, ``base``); returns it
``pull_request(number)``    one pull request, re-read (state, merged, merge SHA)
``comment(number, body)``   a comment on it (the approval decision)
``merge(number, message)``  merge it with a merge commit; returns the merge commit SHA
``delete_branch(name)``     remove a rollback branch (after a merge, or when nothing may stay half-done)
==========================  ==========================================================================

A pull request is returned as ``{number, url, head, base, state, merged, merge_sha, title, body}``.

Adding a forge is one adapter class implementing these eight calls and one line in ``ADAPTERS``. GitHub maps
them to ``GET /user``, ``GET /repos/{o}/{r}/pulls?state=open``, ``POST /repos/{o}/{r}/pulls``,
``GET /repos/{o}/{r}/pulls/{n}``, ``POST /repos/{o}/{r}/issues/{n}/comments``,
``PUT /repos/{o}/{r}/pulls/{n}/merge`` (its answer carries ``sha``) and ``DELETE /repos/{o}/{r}/git/refs/heads/{b}``
with ``Authorization: Bearer``; git authenticates as ``x-access-token:<token>``. GitLab maps them to
``GET /api/v4/user``, ``GET /projects/{id}/merge_requests?state=opened``, ``POST /projects/{id}/merge_requests``
(``source_branch``/``target_branch``), ``GET .../merge_requests/{iid}``, ``POST .../merge_requests/{iid}/notes``,
``PUT .../merge_requests/{iid}/merge`` (``merge_commit_sha``) and ``DELETE /projects/{id}/repository/branches/{b}``
with ``PRIVATE-TOKEN``; git authenticates as ``oauth2:<token>``. Only the Gitea adapter is implemented here.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import json
import re
import time

from urllib.error import HTTPError, URLError
from urllib.parse import quote
from ansible.module_utils.urls import open_url

from ansible_collections.governed.rollback.plugins.module_utils._common import Refused, RollbackError
from ansible_collections.governed.rollback.plugins.module_utils._redact import redact_text

HTTP_TIMEOUT = 20


class ForgeError(RollbackError):
    """The forge answered with an error or could not be reached; ``status`` is the HTTP status (None when down)."""

    def __init__(self, msg, status=None, **details):
        super(ForgeError, self).__init__(msg, **details)
        self.status = status


def split_repo_url(url):
    """``(base URL, owner, repository)`` of ``scheme://host[:port][/prefix]/<owner>/<repo>[.git]``."""
    match = re.match(r"^(?P<base>https?://[^/@]+(?:/.*)?)/(?P<owner>[^/]+)/(?P<repo>[^/]+?)(?:\.git)?/?$", url or "")
    if not match:
        raise RollbackError("repo_url %r is not an http(s) URL of the form https://host/<owner>/<repository>.git"
                            % (url,))
    if "@" in url.split("://", 1)[1].split("/", 1)[0]:
        raise RollbackError("repo_url carries credentials; give the token as repo_token (or GITOPS_TOKEN) instead, "
                            "so it stays out of command lines and logs")
    return match.group("base"), match.group("owner"), match.group("repo")


class Forge(object):
    """The interface; see the module docstring."""

    name = "forge"

    def user(self):
        raise NotImplementedError

    def git_auth_header(self):
        raise NotImplementedError

    def pull_requests(self, head_prefix):
        raise NotImplementedError

    def open_pull_request(self, pr):
        raise NotImplementedError

    def pull_request(self, number):
        raise NotImplementedError

    def comment(self, number, body):
        raise NotImplementedError

    def merge(self, number, message):
        raise NotImplementedError

    def delete_branch(self, name):
        raise NotImplementedError


class GiteaForge(Forge):
    """Gitea's API v1 (also Forgejo's)."""

    name = "gitea"

    def __init__(self, repo_url, token, api_url=None, validate_certs=True, timeout=HTTP_TIMEOUT, sync_timeout=30):
        base, self.owner, self.repo = split_repo_url(repo_url)
        self.api = (api_url or base + "/api/v1").rstrip("/")
        self.token = token
        self.validate_certs = validate_certs
        self.timeout = timeout
        self.sync_timeout = sync_timeout
        self._user = None

    # ---- HTTP
    def _request(self, method, path, body=None, expect=(200, 201, 204)):
        url = self.api + path
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Authorization": "token %s" % self.token, "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = open_url(url, data=data, method=method, headers=headers, timeout=self.timeout,
                                validate_certs=self.validate_certs, follow_redirects="safe")
            status, raw = response.getcode(), response.read()
        except HTTPError as exc:
            status = exc.code
            try:
                raw = exc.read()
            except Exception:  # pylint: disable=broad-except
                raw = b""
        except (URLError, OSError, ValueError) as exc:
            raise ForgeError("the forge (%s) cannot be reached for %s %s: %s"
                             % (self.name, method, path, redact_text(str(exc), [self.token])))
        text = raw.decode("utf-8", "replace") if raw else ""
        if status not in expect:
            detail = text
            try:
                detail = json.loads(text).get("message") or text
            except (ValueError, AttributeError):
                pass
            raise ForgeError("the forge (%s) answered %s %s with HTTP %s: %s"
                             % (self.name, method, path, status, redact_text(detail[:500], [self.token])), status)
        return json.loads(text) if text.strip() else None

    def _repo_path(self, suffix=""):
        return "/repos/%s/%s%s" % (quote(self.owner, safe=""), quote(self.repo, safe=""), suffix)

    @staticmethod
    def _pr(raw):
        return {
            "number": raw.get("number"),
            "url": raw.get("html_url"),
            "head": (raw.get("head") or {}).get("ref"),
            "base": (raw.get("base") or {}).get("ref"),
            "state": raw.get("state"),
            "merged": bool(raw.get("merged")),
            "merge_sha": raw.get("merge_commit_sha") if raw.get("merged") else None,
            "title": raw.get("title"),
            "body": raw.get("body") or "",
        }

    # ---- the interface
    def user(self):
        if self._user is None:
            self._user = (self._request("GET", "/user") or {}).get("login")
        return self._user

    def git_auth_header(self):
        pair = "%s:%s" % (self.user(), self.token)
        return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")

    def repository(self):
        return self._request("GET", self._repo_path())

    def pull_requests(self, head_prefix):
        found = []
        page = 1
        while True:
            batch = self._request("GET", self._repo_path("/pulls?state=open&limit=50&page=%d" % page)) or []
            found += [self._pr(raw) for raw in batch if ((raw.get("head") or {}).get("ref") or "").startswith(
                head_prefix)]
            if len(batch) < 50:
                return found
            page += 1

    def open_pull_request(self, pr):
        # The forge syncs a pushed branch asynchronously: right after the push it can answer "not found".
        deadline = time.monotonic() + self.sync_timeout
        while True:
            try:
                return self._pr(self._request("POST", self._repo_path("/pulls"), {
                    "title": pr["title"], "body": pr["body"], "head": pr["head"], "base": pr["base"]}))
            except ForgeError as error:
                if error.status not in (404, 422) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def pull_request(self, number):
        return self._pr(self._request("GET", self._repo_path("/pulls/%d" % int(number))))

    def comment(self, number, body):
        self._request("POST", self._repo_path("/issues/%d/comments" % int(number)), {"body": body})

    def merge(self, number, message):
        deadline = time.monotonic() + self.sync_timeout
        while True:
            try:
                self._request("POST", self._repo_path("/pulls/%d/merge" % int(number)),
                              {"Do": "merge", "MergeTitleField": message.splitlines()[0],
                               "MergeMessageField": "\n".join(message.splitlines()[1:]).strip()},
                              expect=(200, 204))
                break
            except ForgeError as error:
                # 405: not mergeable yet (the forge is still checking the branch); 409: a conflict.
                if error.status == 409:
                    raise Refused("pull request #%s cannot be merged: it conflicts with its base; nothing was merged"
                                  % number, "conflict")
                if error.status != 405 or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        merged = self.pull_request(number)
        if not merged["merged"] or not merged["merge_sha"]:
            raise ForgeError("the forge reports pull request #%s as not merged after the merge call" % number)
        return merged["merge_sha"]

    def delete_branch(self, name):
        try:
            self._request("DELETE", self._repo_path("/branches/%s" % quote(name, safe="/")), expect=(204, 200))
        except ForgeError as error:
            if error.status != 404:
                raise


ADAPTERS = {"gitea": GiteaForge}


def forge_for(kind, repo_url, token, **options):
    try:
        adapter = ADAPTERS[kind]
    except KeyError:
        raise RollbackError("forge %r is not supported; supported: %s" % (kind, ", ".join(sorted(ADAPTERS))))
    return adapter(repo_url, token, **options)
