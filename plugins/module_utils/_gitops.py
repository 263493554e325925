# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pure core of a GitOps rollback: which release is the last good one, how a pin is written into a
Kustomization's ``images:``, what the rollback branch, commit and pull request say, when the reconciler has caught
up with a merge, and how a deploy freeze is put on and taken off. Plain data in, plain data out; the git, forge and
Kubernetes I/O lives in _git, _forge and the modules.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re

from ansible_collections.governed.rollback.plugins.module_utils._common import Refused, RollbackError, json_sha256

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
TRAILER_RE = re.compile(r"^(Rollback-[A-Za-z-]+):\s*(.*)$")
REVERTS_RE = re.compile(r"This reverts commit ([0-9a-f]{7,64})")
BRANCH_PREFIX = "ops/rollback-"
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

# Trailers every rollback commit carries: how a later run recognizes the rollback of the same incident.
T_INCIDENT = "Rollback-Incident"
T_COMPONENT = "Rollback-Component"
T_CURRENT = "Rollback-Current-Ref"
T_LAST_GOOD = "Rollback-Last-Good-Ref"
T_REASON = "Rollback-Reason"
T_ACTOR = "Rollback-Actor"
T_ID = "Rollback-Id"


# --------------------------------------------------------------------------- Kustomization images

def _strip(value):
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _images_block(lines):
    """(start, end) line indexes of the top-level ``images:`` list, or None."""
    for index, line in enumerate(lines):
        if re.match(r"^images:\s*(#.*)?$", line):
            end = index + 1
            while end < len(lines) and (not lines[end].strip() or lines[end].startswith((" ", "-", "#"))):
                end += 1
            return index + 1, end
    return None


def _entries(lines, block):
    """The ``images:`` entries as ``{fields, lines: {key: index}, start, end, indent}``."""
    start, end = block
    entries = []
    current = None
    for index in range(start, end):
        line = lines[index]
        item = re.match(r"^(\s*)-\s+([A-Za-z]+):\s*(.*?)\s*(#.*)?$", line)
        if item:
            current = {"fields": {}, "lines": {}, "start": index, "end": index + 1, "indent": len(item.group(1)) + 2}
            entries.append(current)
            current["fields"][item.group(2)] = _strip(item.group(3))
            current["lines"][item.group(2)] = index
            continue
        field = re.match(r"^(\s+)([A-Za-z]+):\s*(.*?)\s*(#.*)?$", line)
        if field and current is not None and len(field.group(1)) == current["indent"]:
            current["fields"][field.group(2)] = _strip(field.group(3))
            current["lines"][field.group(2)] = index
            current["end"] = index + 1
    return entries


def parse_images(text):
    """The ``images:`` entries of a Kustomization file, as dicts (``name``, ``newName``, ``newTag``, ``digest``)."""
    lines = text.splitlines()
    block = _images_block(lines)
    return [dict(entry["fields"]) for entry in _entries(lines, block)] if block else []


def select_image(images, image=None, where="the Kustomization"):
    """The ``images:`` entry to pin: the one named ``image``, else the only one. The rule is documented in
    gitops_revert's ``image`` option."""
    if image:
        found = [entry for entry in images if entry.get("name") == image]
        if not found:
            raise Refused("%s has no images: entry named %r (entries: %s); set image to one of them"
                          % (where, image, ", ".join(e.get("name", "?") for e in images) or "none"), "no_image")
        return found[0]
    if len(images) != 1:
        raise Refused("%s has %d images: entries (%s); name the one to pin with the image option"
                      % (where, len(images), ", ".join(e.get("name", "?") for e in images) or "none"), "no_image")
    return images[0]


def image_ref(entry):
    """What the Kustomization deploys for one entry: ``name@digest``, or ``name:tag``."""
    name = entry.get("newName") or entry.get("name")
    if entry.get("digest"):
        return "%s@%s" % (name, entry["digest"])
    return "%s:%s" % (name, entry.get("newTag") or "latest")


def tag_of(ref):
    """The tag of an image reference ``name:tag`` (or a bare tag), else None: what a pin writes as ``newTag`` when
    the image that runs has no digest."""
    value = (ref or "").strip()
    if not value or "@" in value or DIGEST_RE.match(value):
        return None
    tag = value.rsplit(":", 1)[1] if ":" in value.rsplit("/", 1)[-1] else (value if "/" not in value else None)
    return tag if tag and re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", tag) else None


def _entry_lines(text, image):
    """The text's lines (with and without their line ends), the ``images:`` entry named ``image`` and the line end
    it uses: what a pin edits in place."""
    lines = text.splitlines(True)
    bare = [line.rstrip("\r\n") for line in lines]
    block = _images_block(bare)
    entries = _entries(bare, block) if block else []
    entry = next((e for e in entries if e["fields"].get("name") == image), None)
    if entry is None:
        raise Refused("the Kustomization has no images: entry named %r" % image, "no_image")
    return lines, bare, entry, "\r\n" if lines[entry["start"]].endswith("\r\n") else "\n"


def pin_tag(text, image, tag):
    """The Kustomization text with the ``images:`` entry ``image`` set to ``newTag: "<tag>"``; its ``digest`` (which
    would win over the tag) is replaced. Every other line is kept byte for byte."""
    lines, bare, entry, newline = _entry_lines(text, image)
    value = '"%s"' % tag
    drop = [entry["lines"][key] for key in ("digest", "newTag") if key in entry["lines"]]
    keep = drop[0] if drop else None
    for index in sorted(drop, reverse=True):
        if index == keep:
            dash = bare[index].lstrip().startswith("- ")
            lines[index] = ("%s- newTag: %s%s" % (" " * (entry["indent"] - 2), value, newline) if dash
                            else "%snewTag: %s%s" % (" " * entry["indent"], value, newline))
        else:
            del lines[index]
    if keep is None:
        lines.insert(entry["end"], "%snewTag: %s%s" % (" " * entry["indent"], value, newline))
    return "".join(lines)


def digest_of(ref):
    """The digest of ``last_good_ref`` given as ``sha256:<hex>`` or as an image reference ``name@sha256:<hex>``
    (what a workload runs after an in-cluster rollback), else the value unchanged (pin_digest refuses it)."""
    value = (ref or "").strip()
    if "@" in value:
        value = value.rpartition("@")[2]
    return value if DIGEST_RE.match(value) else ref


def pin_digest(text, image, digest):
    """The Kustomization text with the ``images:`` entry ``image`` pinned to ``digest`` (a ``newTag`` is replaced:
    a digest wins over a tag in Kustomize). Every other line is kept byte for byte."""
    if not DIGEST_RE.match(digest or ""):
        raise RollbackError("last_good_ref %r is not an image digest (sha256:<64 hex>)" % (digest,))
    lines, bare, entry, newline = _entry_lines(text, image)
    new_line = "%sdigest: %s%s" % (" " * entry["indent"], digest, newline)
    if "digest" in entry["lines"]:
        index = entry["lines"]["digest"]
        if bare[index].lstrip().startswith("- "):
            new_line = "%s- digest: %s%s" % (" " * (entry["indent"] - 2), digest, newline)
        lines[index] = new_line
    elif "newTag" in entry["lines"]:
        index = entry["lines"]["newTag"]
        if bare[index].lstrip().startswith("- "):
            new_line = "%s- digest: %s%s" % (" " * (entry["indent"] - 2), digest, newline)
        lines[index] = new_line
    else:
        lines.insert(entry["end"], new_line)
    return "".join(lines)


# --------------------------------------------------------------------------- release history

def digest_history(entries):
    """Collapse ``[(sha, digest)]`` (newest first, one per commit touching the Kustomization) into the releases:
    ``[{sha, digest}]`` newest first, one per change of digest (the sha that introduced it)."""
    releases = []
    for sha, digest in entries:
        if not digest:
            continue
        if releases and releases[-1]["digest"] == digest:
            releases[-1]["sha"] = sha  # an older commit introduced this digest
            continue
        releases.append({"sha": sha, "digest": digest})
    return releases


def last_good_release(releases, current_digest):
    """The documented rule for ``last_good_ref``: the newest release whose digest differs from the current one."""
    for release in releases:
        if release["digest"] != current_digest:
            return release
    return None


def release_revisions(releases, target_digest):
    """Approval facts in the deployment rows' terms: releases numbered oldest = 1; ``previous_revision`` is the one
    before the current release, ``to_revision`` the newest release with the target digest (0 when it never was)."""
    numbered = list(reversed(releases))
    current = len(numbered)
    to_revision = 0
    for index, release in enumerate(numbered, 1):
        if release["digest"] == target_digest and index != current:
            to_revision = index
    return {"current_revision": current, "previous_revision": current - 1, "to_revision": to_revision}


def reverted_shas(messages):
    """The commits that later commits revert (``This reverts commit <sha>.``)."""
    found = set()
    for message in messages:
        found.update(REVERTS_RE.findall(message or ""))
    return found


def is_reverted(sha, reverted):
    return any(sha.startswith(short) or short.startswith(sha) for short in reverted)


# --------------------------------------------------------------------------- trailers, branch, commit, pull request

def parse_trailers(message):
    trailers = {}
    for line in (message or "").splitlines():
        match = TRAILER_RE.match(line.strip())
        if match:
            trailers[match.group(1)] = match.group(2).strip()
    return trailers


def find_rollback(log, incident_id, component):
    """The newest commit of ``log`` (``[{sha, message}]``, newest first) that is this incident's rollback of this
    component, or None: a second run must not roll back again."""
    for entry in log:
        trailers = parse_trailers(entry.get("message"))
        if trailers.get(T_INCIDENT) == incident_id and trailers.get(T_COMPONENT) == component:
            return entry
    return None


def slug(value):
    value = re.sub(r"[^a-z0-9.-]+", "-", (value or "").lower()).strip("-.")
    return value or "component"


def rollback_branch(component, moment):
    """``ops/rollback-<component>-<UTC stamp>``."""
    return "%s%s-%s" % (BRANCH_PREFIX, slug(component), moment.strftime("%Y%m%dT%H%M%SZ"))


def _one_line(value):
    return " ".join(str(value or "").split())


def commit_message(mode, component, incident_id, reason, actor, current, target, reverted_commit=None,
                   rollback_id=None):
    """The rollback commit's message: subject, reason, the ``This reverts commit`` line of a revert, trailers."""
    if mode == "revert":
        subject = "rollback(%s): revert %s for %s" % (component, reverted_commit[:12], incident_id)
    else:
        subject = "rollback(%s): pin %s for %s" % (component, target["digest"] or target["image"], incident_id)
    body = [subject, "", _one_line(reason) or "(no reason given)", ""]
    if mode == "revert":
        body += ["This reverts commit %s." % reverted_commit, ""]
    body += ["%s: %s" % (T_INCIDENT, _one_line(incident_id)),
             "%s: %s" % (T_COMPONENT, component),
             "%s: %s (%s)" % (T_CURRENT, current["sha"], current["image"]),
             "%s: %s" % (T_LAST_GOOD, target["image"]),
             "%s: %s" % (T_REASON, _one_line(reason)),
             "%s: %s" % (T_ACTOR, _one_line(actor) or "unknown")]
    if rollback_id:
        body.append("%s: %s" % (T_ID, rollback_id))
    return "\n".join(body) + "\n"


def pull_request(mode, component, incident_id, reason, actor, current, target, branch, base, diff,
                 reverted_commit=None):
    """Title and body of the rollback's pull request (what a reviewer needs to expedite it)."""
    shown = target["digest"][:19] if target["digest"] else target["image"]
    title = "Rollback %s to %s (%s)" % (component, shown, incident_id)
    what = ("Reverts %s." % reverted_commit if mode == "revert"
            else "Pins `%s` to the last known good digest." % target["image"])
    body = "\n".join([
        "**Rollback of `%s` for incident %s**" % (component, incident_id),
        "",
        what,
        "",
        "| | |",
        "|---|---|",
        "| incident | %s |" % _one_line(incident_id),
        "| reason | %s |" % _one_line(reason),
        "| requested by | %s |" % (_one_line(actor) or "unknown"),
        "| current_ref | `%s` (`%s`) |" % (current["sha"], current["image"]),
        "| last_good_ref | `%s` |" % target["image"],
        "| branch | `%s` -> `%s` |" % (branch, base),
        "",
        "```diff",
        diff.rstrip("\n"),
        "```",
        "",
        "Opened by governed.rollback.gitops_revert; merge it to roll back (the reconciler applies it).",
    ])
    return {"title": title, "body": body, "head": branch, "base": base}


def approval_comment(approval):
    """The approval decision and signed statements, as a pull-request comment (no secrets: names, roles, rows)."""
    approval = approval or {}
    lines = ["**Rollback approval** (governed.rollback.rollback_approval)", "",
             "- decision: %s" % ("approved" if approval.get("approved") else "NOT approved"),
             "- rule: %s" % approval.get("rule", "?"),
             "- path: %s" % approval.get("approval_path", "?"),
             "- requested by: %s" % approval.get("requested_by", "?"),
             "- emergency: %s" % bool(approval.get("emergency"))]
    for approver in approval.get("approved_by") or []:
        lines.append("- approved by: %s (%s)" % (approver.get("name"), ", ".join(approver.get("roles") or [])))
    statements = approval.get("statements") or approval.get("signed_statements") or []
    if statements:
        lines += ["", "Signed statements:", "", "```json", json.dumps(statements, indent=2, sort_keys=True), "```"]
    if approval.get("plan_sha256"):
        lines.append("- plan sha256: %s" % approval["plan_sha256"])
    return "\n".join(lines) + "\n"


def may_merge(merge, approval):
    """Merge only when told to and the approval step approved."""
    return bool(merge) and bool((approval or {}).get("approved"))


# --------------------------------------------------------------------------- the repository the cluster reconciles

def normalize_repo_url(url):
    """scheme://host[:port]/path, lower-case host, no credentials, no ``.git`` or trailing slash."""
    match = re.match(r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?:[^@/]*@)?(?P<host>[^/]+)(?P<path>/.*)?$", url or "", re.I)
    if not match:
        return (url or "").strip().rstrip("/")
    path = (match.group("path") or "").rstrip("/")
    if path.endswith(".git"):
        path = path[:-4]
    return "%s://%s%s" % (match.group("scheme").lower(), match.group("host").lower(), path)


def reconciled_source(gitrepository, kustomization):
    """Where a Flux Kustomization takes its manifests from: ``{repo_url, branch, path}`` (the GitRepository's URL
    without credentials, the branch it follows, the Kustomization's ``spec.path``). Refuses (``not_reconciled``) a
    source that follows a tag, a semver range or a commit: a pull request cannot move those."""
    spec = gitrepository.get("spec") or {}
    where = "GitRepository %s/%s" % (gitrepository["metadata"]["namespace"], gitrepository["metadata"]["name"])
    ref = spec.get("ref") or {}
    pinned = [key for key in ("tag", "semver", "commit", "name") if ref.get(key)]
    if pinned and not ref.get("branch"):
        raise Refused("%s follows %s %s, not a branch: a pull request cannot re-align it; change the reference by "
                      "hand" % (where, pinned[0], ref[pinned[0]]), "not_reconciled")
    url = re.sub(r"^([a-z][a-z0-9+.-]*://)[^@/]*@", r"\1", (spec.get("url") or "").strip(), flags=re.I)
    if not re.match(r"^https?://", url, re.I):
        raise Refused("%s pulls %s; only HTTP(S) repositories are supported (the forge's API and token are HTTP)"
                      % (where, url or "nothing"), "not_reconciled")
    path = ((kustomization.get("spec") or {}).get("path") or "./").strip()
    path = path.lstrip("./").rstrip("/") or "."
    return {"repo_url": url, "branch": ref.get("branch") or "master", "path": path}


def check_reconciled_from(repo_url, branch, path, gitrepository, kustomization):
    """Refuse (``not_reconciled``) a repository, branch or path the cluster does not reconcile from."""
    spec = gitrepository.get("spec") or {}
    where = "GitRepository %s/%s" % (gitrepository["metadata"]["namespace"], gitrepository["metadata"]["name"])
    if normalize_repo_url(spec.get("url")) != normalize_repo_url(repo_url):
        raise Refused("the cluster does not reconcile from %s: %s pulls %s; nothing was changed. Point repo_url at "
                      "the repository Flux reconciles" % (normalize_repo_url(repo_url), where,
                                                          normalize_repo_url(spec.get("url"))), "not_reconciled")
    ref = spec.get("ref") or {}
    if ref.get("branch", "master" if not ref else None) != branch:
        raise Refused("%s follows %s, not branch %s; nothing was changed"
                      % (where, ref or "its default branch", branch), "not_reconciled")
    kpath = ((kustomization.get("spec") or {}).get("path") or "./").strip()
    if kpath.lstrip("./").rstrip("/") != (path or "").lstrip("./").rstrip("/"):
        raise Refused("Kustomization %s/%s applies path %s, not %s; nothing was changed"
                      % (kustomization["metadata"]["namespace"], kustomization["metadata"]["name"], kpath, path),
                      "not_reconciled")


# --------------------------------------------------------------------------- Flux status

def revision_sha(revision):
    """The commit of a Flux revision (``main@sha1:<sha>``, ``sha1:<sha>`` or ``main/<sha>``), else None."""
    match = re.search(r"(?:sha1:|sha256:|/)([0-9a-f]{40,64})$", revision or "")
    return match.group(1) if match else None


def condition(obj, kind):
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return {}


def reconcile_progress(gitrepository, kustomization, sha):
    """How far Flux has got with commit ``sha``: the source's artifact, the Kustomization's applied revision and
    Ready condition, and whether it has failed at that revision (Ready=False at it, not progressing)."""
    source_sha = revision_sha(((gitrepository.get("status") or {}).get("artifact") or {}).get("revision"))
    kstatus = kustomization.get("status") or {}
    applied_sha = revision_sha(kstatus.get("lastAppliedRevision"))
    attempted_sha = revision_sha(kstatus.get("lastAttemptedRevision"))
    ready = condition(kustomization, "Ready")
    generation = (kustomization.get("metadata") or {}).get("generation")
    observed = kstatus.get("observedGeneration") == generation
    return {
        "source_revision": source_sha,
        "source_at_target": source_sha == sha,
        "applied_revision": applied_sha,
        "attempted_revision": attempted_sha,
        "ready": ready.get("status") == "True" and applied_sha == sha and observed,
        "ready_status": ready.get("status"),
        "ready_reason": ready.get("reason"),
        "ready_message": ready.get("message"),
        "failed_at_target": attempted_sha == sha and ready.get("status") == "False"
        and ready.get("reason") not in ("Progressing", "ProgressingWithRetry", "DependencyNotReady"),
    }


def pods_on_image(pods, container, image):
    """Ready pods and whether every one of them runs ``image`` in ``container`` (by spec)."""
    summaries = []
    for pod in pods:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        images = dict((c.get("name"), c.get("image")) for c in (pod.get("spec") or {}).get("containers") or [])
        ready = condition(pod, "Ready").get("status") == "True"
        summaries.append({"name": pod["metadata"]["name"], "ready": ready, "image": images.get(container),
                          "on_target": images.get(container) == image})
    return summaries


def split_image_ref(ref):
    """``(name, tag, digest)`` of an image reference: the digest after ``@``, the tag after a colon in the last path
    segment (a colon before it is a registry's port); None for a part that is absent."""
    name, _sep, digest = (ref or "").partition("@")
    tag = None
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    return name, tag, digest or None


def image_name(ref):
    """The repository part of an image reference (no tag, no digest)."""
    return split_image_ref(ref)[0]


def pods_report_digest(pods, container, digest):
    """Whether every live (not terminating) pod is Ready and reports ``digest`` as the image ID of ``container``:
    a workload whose image has only a tag runs that digest (what pinning the digest instead of the tag needs)."""
    live = [pod for pod in pods if not (pod.get("metadata") or {}).get("deletionTimestamp")]
    if not live:
        return False
    for pod in live:
        statuses = dict((s.get("name"), s.get("imageID") or "")
                        for s in (pod.get("status") or {}).get("containerStatuses") or [])
        if condition(pod, "Ready").get("status") != "True" or not statuses.get(container, "").endswith("@" + digest):
            return False
    return True


# --------------------------------------------------------------------------- binding and receipt

def plan_binding(current, target, kustomization_uid, mode, reverted_commit=None):
    """What an approval of a GitOps plan is for: the branch head and digest it was planned from, the target."""
    return {
        "branch_head": current["sha"],
        "from_image": current["image"],
        "to_image": target["image"],
        "mode": mode,
        "reverted_commit": reverted_commit,
        "kustomization_uid": kustomization_uid,
        "plan_sha256": json_sha256([current["sha"], current["image"], target["image"], mode, reverted_commit]),
    }


# --------------------------------------------------------------------------- deploy freeze (pure patch logic)

FREEZE_ANNOTATION = "freeze.governed.io/record"
ARGO_PROJECT_ANNOTATION = "freeze.governed.io/argocd-windows"


def freeze_record(actor, reason, until, incident_id, at, previous):
    return {"who": actor, "why": reason, "until": until, "incident": incident_id, "at": at, "previous": previous}


def read_record(obj, annotation=FREEZE_ANNOTATION):
    raw = (((obj or {}).get("metadata") or {}).get("annotations") or {}).get(annotation)
    if not raw:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        raise RollbackError("annotation %s is not the JSON a freeze writes; remove it by hand after checking who "
                            "set it" % annotation)
    return record if isinstance(record, dict) else None


def flux_freeze_patch(obj, actor, reason, until, incident_id, at):
    """The merge patch that freezes a Flux object (``spec.suspend: true`` plus the record of who/why/until and the
    previous ``suspend``), or None when it is already frozen by us."""
    if read_record(obj):
        return None
    spec = obj.get("spec") or {}
    previous = {"suspend": spec["suspend"]} if "suspend" in spec else {}
    record = freeze_record(actor, reason, until, incident_id, at, previous)
    return {"metadata": {"annotations": {FREEZE_ANNOTATION: json.dumps(record, sort_keys=True)}},
            "spec": {"suspend": True}}


def flux_thaw_patch(obj):
    """The merge patch that restores exactly what the freeze changed (``suspend`` back to its previous value, or
    removed when it was absent; the record removed), or None when there is no freeze of ours."""
    record = read_record(obj)
    if record is None:
        return None
    previous = record.get("previous") or {}
    return {"metadata": {"annotations": {FREEZE_ANNOTATION: None}},
            "spec": {"suspend": previous["suspend"] if "suspend" in previous else None}}


# Argo CD: a deny window that starts every minute is open at every moment, whatever its duration, until removed.
ARGO_WINDOW_SCHEDULE = "* * * * *"
ARGO_WINDOW_DURATION = "1h"


def argocd_deny_window(app_name, incident_id, reason):
    """The AppProject sync window a freeze adds: ``deny`` for this one application, manual syncs denied too."""
    return {"kind": "deny", "schedule": ARGO_WINDOW_SCHEDULE, "duration": ARGO_WINDOW_DURATION,
            "applications": [app_name], "manualSync": False,
            "description": _one_line("deploy freeze (governed.rollback) %s: %s" % (incident_id or "-", reason or "-"))}


def _automated(application):
    sync_policy = (application.get("spec") or {}).get("syncPolicy") or {}
    return sync_policy.get("automated")


def _app_key(application):
    meta = application["metadata"]
    return "%s/%s" % (meta.get("namespace") or "", meta["name"])


def _project_record(project):
    record = read_record(project, ARGO_PROJECT_ANNOTATION) or {}
    return {"absent": bool(record.get("absent")), "applications": dict(record.get("applications") or {})}


def _describe(obj):
    meta = obj["metadata"]
    return "%s %s/%s" % (obj.get("kind") or "object", meta.get("namespace"), meta["name"])


def argocd_changed_since_freeze(project, application):
    """What someone else changed since our freeze (a list of sentences, empty when the freeze is as we left it):
    our deny window gone from the AppProject, or auto-sync switched back on in the Application."""
    problems = []
    entry = _project_record(project)["applications"].get(_app_key(application)) if project else None
    if entry is not None and entry.get("window") not in ((project.get("spec") or {}).get("syncWindows") or []):
        problems.append("the deny window of our freeze is no longer in %s's spec.syncWindows" % _describe(project))
    if read_record(application) is not None and _automated(application) is not None:
        problems.append("auto-sync (spec.syncPolicy.automated) of %s was switched back on: %s"
                        % (_describe(application), json.dumps(_automated(application), sort_keys=True)))
    return problems


def _refuse_if_changed(project, application, doing):
    problems = argocd_changed_since_freeze(project, application)
    if problems:
        raise Refused("refusing to %s %s: someone changed it since our freeze - %s. Nothing was changed. Find out "
                      "who and why; to start over, remove the annotation %s (and %s on the AppProject) by hand"
                      % (doing, _describe(application), "; ".join(problems), FREEZE_ANNOTATION,
                         ARGO_PROJECT_ANNOTATION), "changed_since_freeze", changes=problems)


def argocd_freeze_patches(project, application, actor, reason, until, incident_id, at, window=True,
                          auto_sync=True):
    """Argo CD: a ``deny`` sync window for the application on its AppProject (``window``) and auto-sync switched off
    with the previous ``spec.syncPolicy.automated`` recorded (``auto_sync``). Returns
    ``(project_patch, application_patch)`` (merge patches); None for a part not asked for or already frozen by us.
    Refused when our freeze is on but someone changed what it set."""
    _refuse_if_changed(project, application, "freeze")
    project_patch = None
    record = _project_record(project) if project else None
    key = _app_key(application)
    if window and key not in record["applications"]:
        spec = project.get("spec") or {}
        windows = list(spec.get("syncWindows") or [])
        if not record["applications"]:
            record["absent"] = spec.get("syncWindows") is None
        deny = argocd_deny_window(application["metadata"]["name"], incident_id, reason)
        record["applications"][key] = {"window": deny, "who": actor, "why": reason, "until": until,
                                       "incident": incident_id, "at": at}
        project_patch = {"metadata": {"annotations": {ARGO_PROJECT_ANNOTATION: json.dumps(record, sort_keys=True)}},
                         "spec": {"syncWindows": windows + [deny]}}
    app_patch = None
    if auto_sync and read_record(application) is None:
        automated = _automated(application)
        previous = {"automated": automated} if automated is not None else {}
        app_patch = {"metadata": {"annotations": {FREEZE_ANNOTATION: json.dumps(
            freeze_record(actor, reason, until, incident_id, at, previous), sort_keys=True)}}}
        if automated is not None:
            app_patch["spec"] = {"syncPolicy": {"automated": None}}
    return project_patch, app_patch


def argocd_thaw_patches(project, application):
    """Undo argocd_freeze_patches exactly: our window removed (only ours; others' windows, added before or since,
    stay; ``syncWindows`` removed when it was absent and nothing else is left), auto-sync restored as recorded.
    Refused, changing nothing, when someone changed what the freeze set."""
    _refuse_if_changed(project, application, "thaw")
    project_patch = None
    record = _project_record(project) if project else None
    key = _app_key(application)
    if record and key in record["applications"]:
        ours = record["applications"].pop(key)["window"]
        windows = list((project.get("spec") or {}).get("syncWindows") or [])
        windows.remove(ours)
        rest = record if record["applications"] else None
        project_patch = {"metadata": {"annotations": {ARGO_PROJECT_ANNOTATION: json.dumps(rest, sort_keys=True)
                                                      if rest else None}},
                         "spec": {"syncWindows": None if (rest is None and record["absent"] and not windows)
                                  else windows}}
    app_patch = None
    app_record = read_record(application)
    if app_record is not None:
        previous = app_record.get("previous") or {}
        app_patch = {"metadata": {"annotations": {FREEZE_ANNOTATION: None}}}
        if previous.get("automated") is not None:
            app_patch["spec"] = {"syncPolicy": {"automated": previous["automated"]}}
    return project_patch, app_patch


def argocd_freeze_state(project, application):
    """What our freeze holds on an Argo CD application: ``window`` (the project record's entry, or None) and
    ``record`` (the Application's freeze record, or None)."""
    entry = _project_record(project)["applications"].get(_app_key(application)) if project else None
    return {"window": entry, "record": read_record(application)}


def apply_merge_patch(obj, patch):
    """RFC 7386 merge patch applied to plain data (what the API server does with a merge patch); for diffs and
    unit tests."""
    if not isinstance(patch, dict):
        return patch
    result = dict(obj) if isinstance(obj, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result
