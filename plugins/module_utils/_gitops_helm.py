# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Helm values pin of a GitOps rollback (pure): where the image lives in a HelmRelease's ``spec.values`` or in
a chart's values file, and the file's text with that image pinned. Plain data and text in, plain data and text out;
like the Kustomization pin (_gitops.pin_digest) the edit is line based, so every other line - comments, quoting,
key order - is kept byte for byte.

The rule (documented in gitops_revert's ``values_key`` option):

- an *image candidate* is a mapping holding a string ``repository`` and a ``tag`` and/or ``digest`` key (the
  common ``image: {repository, tag, digest}`` shape, with an optional ``registry``), or a key named ``image`` whose
  value is a string image reference (``name:tag`` / ``name@sha256:...``);
- ``values_key`` (a dotted key path, e.g. ``api.image``) names the candidate explicitly; without it the values must
  hold exactly one candidate - none, or more than one, is refused and nothing is guessed;
- the HelmRelease's ``spec.values`` is searched first; only when it holds no candidate is the chart's values file
  searched, and then a pin there is refused when ``spec.values`` sets any key under the candidate's path (it would
  override the pin).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.governed.rollback.plugins.module_utils._common import Refused, RollbackError
from ansible_collections.governed.rollback.plugins.module_utils._gitops import DIGEST_RE, split_image_ref

try:
    import yaml
except ImportError:  # pragma: no cover - PyYAML ships with ansible-core
    yaml = None

TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
KEY_LINE = re.compile(r"^(\s*)([A-Za-z0-9_.\-\"']+):(?:\s+(.*?))?\s*$")


# --------------------------------------------------------------------------- plain data: the candidates

def _is_image_mapping(value):
    return (isinstance(value, dict) and isinstance(value.get("repository"), str)
            and ("tag" in value or "digest" in value))


def candidates(values, prefix=()):
    """The image candidates of a values mapping, as ``[{path: (keys...), shape: 'mapping'|'string'}]`` in document
    order (depth first)."""
    found = []
    if not isinstance(values, dict):
        return found
    for key, value in values.items():
        path = prefix + (str(key),)
        if _is_image_mapping(value):
            found.append({"path": path, "shape": "mapping"})
        elif key == "image" and isinstance(value, str):
            found.append({"path": path, "shape": "string"})
        elif isinstance(value, dict):
            found.extend(candidates(value, path))
    return found


def split_key(values_key):
    """``a.b.c`` as a tuple of keys; refuses an empty part."""
    parts = tuple(part for part in (values_key or "").split("."))
    if not values_key or any(not part for part in parts):
        raise RollbackError("values_key %r is not a dotted key path (e.g. image or api.image)" % (values_key,))
    return parts


def lookup(values, path):
    node = values
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def select(values, values_key=None, where="the values"):
    """The one candidate to pin: the one at ``values_key``, else the only one. Refused (``no_image``) when there is
    none or more than one, naming them."""
    if values_key:
        path = split_key(values_key)
        node = lookup(values, path)
        if len(path) > 1 and _is_image_mapping(lookup(values, path[:-1])):
            parent = ".".join(path[:-1])
            raise Refused("%s: values_key %r names a field of the image at %r, not an image; name the image itself: "
                          "values_key=%s" % (where, values_key, parent, parent), "no_image")
        if _is_image_mapping(node):
            return {"path": path, "shape": "mapping"}
        if isinstance(node, str) and _parse_ref(node):
            return {"path": path, "shape": "string"}
        raise Refused("%s has no image at values_key %r (%s); it must be a mapping with repository and tag/digest, "
                      "or an image reference string" % (where, values_key,
                                                        "absent" if node is None else "a %s" % type(node).__name__),
                      "no_image")
    found = candidates(values)
    if len(found) != 1:
        raise Refused("%s hold %d image candidates (%s); name the one to pin with values_key"
                      % (where, len(found), ", ".join(".".join(c["path"]) for c in found) or "none"), "no_image")
    return found[0]


def _parse_ref(ref):
    """``(name, tag, digest)`` of an image reference string, or None when it is not one."""
    value = (ref or "").strip()
    if not value or " " in value:
        return None
    name, tag, digest = split_image_ref(value)
    if digest and not DIGEST_RE.match(digest):
        return None
    return name, tag, digest


def image_of(values, candidate):
    """What the candidate deploys: ``{image, digest, tag, repository}`` (``image`` is ``name@digest`` or
    ``name:tag``)."""
    node = lookup(values, candidate["path"])
    if candidate["shape"] == "string":
        parsed = _parse_ref(node) or (node, None, None)
        name, tag, digest = parsed
    else:
        name = node["repository"]
        if node.get("registry"):
            name = "%s/%s" % (node["registry"], name)
        tag = node.get("tag")
        tag = str(tag) if tag not in (None, "") else None
        digest = node.get("digest") or None
    image = "%s@%s" % (name, digest) if digest else "%s:%s" % (name, tag or "latest")
    return {"image": image, "digest": digest, "tag": tag, "repository": name}


def overridden(values, path):
    """Whether ``values`` (the HelmRelease's ``spec.values``) sets anything at or under ``path``."""
    return lookup(values, path) is not None


# --------------------------------------------------------------------------- documents

def load(text, where):
    """All YAML documents of a file (plain data)."""
    if yaml is None:  # pragma: no cover
        raise RollbackError("PyYAML is required to read %s" % where)
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        raise RollbackError("%s is not valid YAML: %s" % (where, error))


def helmrelease_doc(text, name=None, where="the file"):
    """``(index, document)`` of the HelmRelease (named ``name``, when given) among the file's documents, or None."""
    for index, doc in enumerate(load(text, where)):
        if isinstance(doc, dict) and doc.get("kind") == "HelmRelease" and (
                name is None or (doc.get("metadata") or {}).get("name") == name):
            return index, doc
    return None


def release_values(doc):
    return ((doc or {}).get("spec") or {}).get("values") or {}


# --------------------------------------------------------------------------- text: the line-based edit

def _doc_ranges(lines):
    """(start, end) line ranges of the YAML documents of a file (split on ``---`` lines); empty documents dropped
    the way safe_load_all drops them."""
    ranges, start = [], 0
    for index, line in enumerate(lines):
        if re.match(r"^---\s*(#.*)?$", line.rstrip("\r\n")):
            ranges.append((start, index))
            start = index + 1
    ranges.append((start, len(lines)))
    kept = []
    for begin, end in ranges:
        if any(_content(lines[i]) for i in range(begin, end)):
            kept.append((begin, end))
    return kept


def _content(line):
    bare = line.rstrip("\r\n")
    stripped = bare.strip()
    return bool(stripped) and not stripped.startswith("#") and stripped not in ("...",)


def _indent(line):
    return len(line) - len(line.lstrip(" "))


def _unquote(key):
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] and key[0] in "'\"" else key


def _find_key(lines, start, end, key):
    """The line index of ``key:`` among the direct children of the block mapping in ``lines[start:end]`` (their
    indent is the first content line's), and the end of its block; None when absent or not block style."""
    child = None
    for index in range(start, end):
        if _content(lines[index]):
            child = _indent(lines[index])
            break
    if child is None:
        return None
    for index in range(start, end):
        line = lines[index].rstrip("\r\n")
        if not _content(line) or _indent(line) != child:
            continue
        match = KEY_LINE.match(line)
        if match and _unquote(match.group(2)) == key:
            block_end = index + 1
            while block_end < end and (not _content(lines[block_end]) or _indent(lines[block_end]) > child):
                block_end += 1
            return index, block_end
    return None


def locate(lines, start, end, path, where):
    """``(line, block_end)`` of the key path in ``lines[start:end]``; refused when the text does not hold it in
    block style (a flow mapping ``{...}`` or an anchor is not edited line by line)."""
    found = None
    for key in path:
        found = _find_key(lines, start, end, key)
        if found is None:
            raise Refused("%s: %s is not written as a block mapping this pin can edit line by line; pin it by hand"
                          % (where, ".".join(path)), "no_image")
        start, end = found[0] + 1, found[1]
    return found


def _scalar(line):
    """The scalar on a ``key: value  # comment`` line: (value text, quote char, comment with its spacing)."""
    bare = line.rstrip("\r\n")
    match = re.match(r"^(\s*[^:]+:\s+)(\"[^\"]*\"|'[^']*'|[^#]*?)(\s+#.*)?$", bare)
    if not match:
        return None
    value = match.group(2)
    quote = value[0] if value[:1] in ("'", '"') else ""
    return match.group(1), quote, match.group(3) or ""


def _set_scalar(line, value, where, key):
    newline = "\r\n" if line.endswith("\r\n") else "\n"
    parts = _scalar(line)
    if parts is None:
        # ``key:`` with nothing after it (null)
        match = KEY_LINE.match(line.rstrip("\r\n"))
        if not match or match.group(3):
            raise Refused("%s: %s is not a plain scalar line; pin it by hand" % (where, key), "no_image")
        return "%s %s%s" % (line.rstrip("\r\n").rstrip(), value, newline)
    head, quote, comment = parts
    if value == "":
        quote = quote or '"'
    return "%s%s%s%s%s%s" % (head, quote, value, quote, comment, newline)


def _value_block(lines, doc_range, values_path, where):
    """(start, end) of the mapping at ``values_path`` (``()`` for the whole document)."""
    start, end = doc_range
    if values_path:
        line, end = locate(lines, start, end, values_path, where)
        start = line + 1
    return start, end


def pin(text, candidate, values_path, digest=None, tag=None, doc_index=0, where="the file"):
    """The file's text with the candidate (found under ``values_path`` of document ``doc_index``: ``('spec',
    'values')`` in a HelmRelease, ``()`` in a chart's values file) pinned to ``digest`` - or, without a digest, to
    ``tag`` (its ``digest`` emptied, since a digest wins over a tag). Every other line is kept byte for byte."""
    if digest is not None and not DIGEST_RE.match(digest):
        raise RollbackError("last_good_ref %r is not an image digest (sha256:<64 hex>)" % (digest,))
    if digest is None and not (tag and TAG_RE.match(tag)):
        raise RollbackError("nothing to pin: give a digest (sha256:<64 hex>) or a tag")
    lines = text.splitlines(True)
    ranges = _doc_ranges(lines)
    if doc_index >= len(ranges):
        raise Refused("%s has no YAML document %d" % (where, doc_index), "no_image")
    start, end = _value_block(lines, ranges[doc_index], values_path, where)
    line, block_end = locate(lines, start, end, candidate["path"], where)
    dotted = ".".join(candidate["path"])
    if candidate["shape"] == "string":
        parts = _scalar(lines[line])
        current = parts and _parse_ref(lines[line].rstrip("\r\n")[len(parts[0]):].split(" #")[0].strip().strip("'\""))
        if not current:
            raise Refused("%s: %s is not an image reference" % (where, dotted), "no_image")
        name = current[0]
        ref = "%s@%s" % (name, digest) if digest else "%s:%s" % (name, tag)
        lines[line] = _set_scalar(lines[line], ref, where, dotted)
        return "".join(lines)
    inline = KEY_LINE.match(lines[line].rstrip("\r\n")).group(3)
    if inline and not inline.startswith("#"):
        raise Refused("%s: %s is not written as a block mapping this pin can edit line by line; pin it by hand"
                      % (where, dotted), "no_image")
    inner = (line + 1, block_end)
    digest_at = _find_key(lines, inner[0], inner[1], "digest")
    tag_at = _find_key(lines, inner[0], inner[1], "tag")
    if digest is not None:
        if digest_at is None:
            raise Refused("%s: %s has no digest key, so the chart may not deploy by digest; add digest to the chart's "
                          "values (and its template), or pin a tag (last_good_ref name:tag)" % (where, dotted),
                          "no_image")
        lines[digest_at[0]] = _set_scalar(lines[digest_at[0]], digest, where, dotted + ".digest")
        return "".join(lines)
    if tag_at is None:
        raise Refused("%s: %s has no tag key to pin %r into" % (where, dotted, tag), "no_image")
    lines[tag_at[0]] = _set_scalar(lines[tag_at[0]], tag, where, dotted + ".tag")
    if digest_at is not None:
        lines[digest_at[0]] = _set_scalar(lines[digest_at[0]], "", where, dotted + ".digest")
    return "".join(lines)


# --------------------------------------------------------------------------- the rule over a repository's files

def find_target(release_text, release_where, chart_values, values_key=None, release_name=None):
    """Where the pin goes, by the documented rule: ``{file: 'release'|'chart', candidate, values_path, doc_index,
    values}``. ``chart_values`` is ``(text, where)`` of the chart's values file, or None when the chart is not in
    the repository."""
    found = helmrelease_doc(release_text, release_name, release_where)
    if found is None:
        raise Refused("%s holds no HelmRelease%s" % (release_where, " named %r" % release_name if release_name else ""),
                      "no_image")
    doc_index, doc = found
    spec_values = release_values(doc)
    in_release = (lookup(spec_values, split_key(values_key)) is not None if values_key
                  else bool(candidates(spec_values)))
    if in_release:
        candidate = select(spec_values, values_key, "%s spec.values" % release_where)
        return {"file": "release", "candidate": candidate, "values_path": ("spec", "values"), "doc_index": doc_index,
                "values": spec_values}
    if chart_values is None:
        raise Refused("%s spec.values holds no image candidate%s and the chart's values file is not in the "
                      "repository; name the key with values_key" % (
                          release_where, " at %r" % values_key if values_key else ""), "no_image")
    text, where = chart_values
    docs = load(text, where)
    values = docs[0] if docs and isinstance(docs[0], dict) else {}
    candidate = select(values, values_key, where)
    if overridden(spec_values, candidate["path"]):
        raise Refused("%s spec.values sets %s, which overrides the chart's values file %s: a pin there would not "
                      "deploy; pin it in spec.values (values_key)"
                      % (release_where, ".".join(candidate["path"]), where), "no_image")
    return {"file": "chart", "candidate": candidate, "values_path": (), "doc_index": 0, "values": values}


def current_image(release_text, release_where, chart_values, values_key=None, release_name=None):
    """The image the repository deploys by the rule (``image_of``), with the target it was read from."""
    target = find_target(release_text, release_where, chart_values, values_key, release_name)
    return image_of(target["values"], target["candidate"]), target


# --------------------------------------------------------------------------- the reconcile of a HelmRelease

def release_progress(helmrelease, requested_at, candidate, target_image):
    """How far helm-controller has got with the merged values: the live HelmRelease holds the target image at the
    candidate's path in ``spec.values`` (the Kustomization applied the merge), it observed that generation, handled
    our reconcile request and is Ready; ``failed`` when it is Ready=False at that generation and not progressing."""
    meta = (helmrelease or {}).get("metadata") or {}
    status = (helmrelease or {}).get("status") or {}
    ready = {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            ready = cond
    values = release_values(helmrelease)
    live = image_of(values, candidate)["image"] if lookup(values, candidate["path"]) is not None else None
    observed = status.get("observedGeneration") == meta.get("generation")
    handled = requested_at is not None and status.get("lastHandledReconcileAt") == requested_at
    history = status.get("history") or [{}]
    return {
        "spec_image": live,
        "spec_at_target": live == target_image,
        "observed_generation": observed,
        "handled_request": handled,
        "ready_status": ready.get("status"),
        "ready_reason": ready.get("reason"),
        "ready_message": ready.get("message"),
        "release": "%s.v%s" % (history[0].get("name"), history[0].get("version")) if history[0] else None,
        "chart_version": history[0].get("chartVersion"),
        "ready": live == target_image and observed and handled and ready.get("status") == "True",
        "failed": live == target_image and observed and ready.get("status") == "False"
        and ready.get("reason") not in ("Progressing", "ProgressingWithRetry", "DependencyNotReady"),
    }
