# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redaction of secrets, in one place: structural masking, then a pattern scan.

Everything the collection writes (evidence packs, receipts, ledgers) goes through
this file. Two stages, fail closed:

1. Structural redaction before anything touches disk: Kubernetes objects lose
   Secret values (replaced by ``{redacted: true, bytes: N}``), ``managedFields``
   and the ``last-applied-configuration`` annotation; env values, dict values and
   ``key=value`` text whose names look secret, URL credentials, ``Authorization``
   headers, bearer tokens and private key blocks are masked.
2. A pattern scan of what was written: ported gitleaks-style rules, the specific
   detect-secrets 1.5 plugins, and the exact values of Secrets read during the
   run. Any finding is reported by file, line and rule, never by value.

Pure logic only, except ``scan_file`` which reads the file it is given.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import bisect
import collections
import re

DETECT_SECRETS_IMP_ERR = None
try:
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.__version__ import VERSION as DETECT_SECRETS_VERSION

    HAS_DETECT_SECRETS = True
except ImportError:  # pragma: no cover - exercised only without the library
    HAS_DETECT_SECRETS = False
    DETECT_SECRETS_VERSION = None

# Bump whenever a rule below changes: manifests and receipts record which rules ran.
RULES_VERSION = "governed-redact/1"

# Starts with '*' so keyword detectors (which want a word character) never see it as a value.
REDACTED = "**REDACTED**"
REDACTED_PRIVATE_KEY = "**REDACTED PRIVATE KEY**"

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

# Env var names that look secret (research 4.2): a substring test, deliberately broad.
SECRET_ENV_NAME_RE = re.compile(r"(?i)pass|secret|token|key|cred|auth|dsn|conn")

# Keys whose value is a secret when the key *ends* with one of these words
# (DB_PASSWORD, client_secret, api-key; not secretName or secretKeyRef).
_SECRET_WORDS = (r"(?:pass(?:word|wd|phrase)|pwd|secret|token|api[_.-]?key|apikey|access[_.-]?key|"
                 r"private[_.-]?key|secret[_.-]?key|signing[_.-]?key|encryption[_.-]?key|"
                 r"session[_.-]?key|credentials?)")
SECRET_KEY_RE = re.compile(r"(?i)" + _SECRET_WORDS + r"$")

_SENSITIVE_HEADERS = frozenset(("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
                                "x-auth-token", "x-csrf-token", "x-xsrf-token", "api-key"))
_SENSITIVE_HEADER_RE = re.compile(r"(?i)token|secret|password|api[_-]?key|auth|cookie|session|signature")

# key=value / key: value / "key": "value" where the key ends in a secret word.
_ASSIGNMENT_RE = re.compile(
    r"(?i)(" + _SECRET_WORDS + r"[\"'`]?[ \t]*(?::=|=>|==?|:)[ \t]*[\"'`]?)"
    r"(\$\{[^}\s]*\}|\{\{[^}]*\}\}|[^\s\"'`,;&{}\[\]()<>]+)")
# SQL: CREATE ROLE x PASSWORD 'secret'
_SQL_PASSWORD_RE = re.compile(r"(?i)(\bpassword[ \t]+')([^']+)(')")
_URL_CREDENTIALS_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{1,20}://)([^\s/:@\"'<>]{1,256}):([^\s/@\"'<>]{1,256})@")
_URL_TOKEN_USER_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{1,20}://)([A-Za-z0-9_.~+-]{20,256})@")
_AUTH_HEADER_RE = re.compile(
    r"(?i)(\b(?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*[\"']?)"
    r"(?:((?:bearer|basic|token|digest|negotiate|aws4-hmac-sha256)[ \t]+))?([^\s\"',;]+)")
_BEARER_RE = re.compile(r"(?i)\b(bearer[ \t]+)([A-Za-z0-9._~+/-]{8,}=*)")
_COOKIE_HEADER_RE = re.compile(r"(?i)(\b(?:set-)?cookie[\"']?[ \t]*:[ \t]*[\"']?)([^\s\"'][^\"'\r\n]*)")
_PEM_BLOCK_RE = re.compile(r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----.*?"
                           r"(?:-----END[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----|\Z)", re.S)
_PEM_BEGIN_RE = re.compile(r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----")
_PEM_END_RE = re.compile(r"-----END[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----")
# Cheap gate: a string without any of these cannot match a masking rule above.
_MAYBE_SENSITIVE_RE = re.compile(
    r"(?i)pass|pwd|secret|token|key|cred|auth|bearer|cookie|://|PRIVATE")

_PLACEHOLDERS = frozenset(("true", "false", "null", "none", "nil", "yes", "no", "redacted", "masked", "hidden",
                           "bearer", "basic", "token", "digest", "negotiate", "required", "optional",
                           "string", "secret", "password", "undefined", "empty"))
_TEMPLATED_RE = re.compile(r"^(?:\$\{.*\}|\$\(.*\)|\{\{.*\}\}|<.*>|%\(.*\)s|\$[A-Za-z_][A-Za-z0-9_]*)$")


def looks_secret_env_name(name):
    """True when an env var (or ConfigMap key) name suggests its value is a credential."""
    return bool(name) and bool(SECRET_ENV_NAME_RE.search(str(name)))


def looks_secret_key(key):
    """True when a mapping key ends in a secret word (password, token, api_key, ...)."""
    return bool(key) and bool(SECRET_KEY_RE.search(str(key)))


def is_placeholder(value):
    """Values that are masks, templates or flags rather than secrets."""
    text = str(value).strip().strip("\"'`")
    if not text or REDACTED in text or text.lower() in _PLACEHOLDERS:
        return True
    if set(text) <= set("*x.-_#X"):
        return True
    if _TEMPLATED_RE.match(text):
        return True
    # Paths after a secret word are file references (password_file style), not the secret itself.
    return bool(re.match(r"^\.{0,2}/[\w./-]*$", text))


def redacted_marker(value, encoded=False):
    """The structural mask: presence and length only, never a hash of the value."""
    if value is None:
        size = 0
    elif encoded:
        try:
            size = len(base64.b64decode(value, validate=False))
        except (binascii.Error, ValueError, TypeError):
            size = len(str(value).encode("utf-8"))
    elif isinstance(value, bytes):
        size = len(value)
    else:
        size = len(str(value).encode("utf-8"))
    return {"redacted": True, "bytes": size}


def _sub_assignment(match):
    if is_placeholder(match.group(2)):
        return match.group(0)
    return match.group(1) + REDACTED


def _sub_url(match):
    if is_placeholder(match.group(3)):
        return match.group(0)
    return "%s%s:%s@" % (match.group(1), match.group(2), REDACTED)


def _sub_auth_header(match):
    if is_placeholder(match.group(3)) and not match.group(2):
        return match.group(0)
    return match.group(1) + (match.group(2) or "") + REDACTED


def _sub_bearer(match):
    if is_placeholder(match.group(2)):
        return match.group(0)
    return match.group(1) + REDACTED


def mask_url_credentials(text):
    """scheme://user:password@host -> scheme://user:**REDACTED**@host (and long token-only userinfo)."""
    if not isinstance(text, str) or "://" not in text:
        return text
    text = _URL_CREDENTIALS_RE.sub(_sub_url, text)
    return _URL_TOKEN_USER_RE.sub(lambda m: m.group(1) + REDACTED + "@", text)


def url_passwords(text):
    """The passwords embedded in URLs of a text (so a caller can register them for masking)."""
    if not isinstance(text, str) or "://" not in text:
        return []
    return [m.group(3) for m in _URL_CREDENTIALS_RE.finditer(text) if not is_placeholder(m.group(3))]


def _mask_known(text, known_values):
    for value in known_values:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def redact_text(text, known_values=()):
    """Mask credentials inside free text: logs, config files, HTTP bodies, command output.

    Masks private key blocks, Authorization/Cookie headers, bearer tokens, URL
    credentials, ``secret_word = value`` assignments, SQL ``PASSWORD '...'`` and
    any of ``known_values`` (exact secret values read during this run).
    """
    if not isinstance(text, str) or not text:
        return text
    if known_values:
        text = _mask_known(text, known_values)
    if not _MAYBE_SENSITIVE_RE.search(text):
        return text
    if "PRIVATE KEY" in text:
        text = _PEM_BLOCK_RE.sub(REDACTED_PRIVATE_KEY, text)
    text = _AUTH_HEADER_RE.sub(_sub_auth_header, text)
    text = _COOKIE_HEADER_RE.sub(lambda m: m.group(1) + REDACTED, text)
    text = _BEARER_RE.sub(_sub_bearer, text)
    text = mask_url_credentials(text)
    text = _SQL_PASSWORD_RE.sub(lambda m: m.group(1) + REDACTED + m.group(3), text)
    return _ASSIGNMENT_RE.sub(_sub_assignment, text)


class LineRedactor(object):
    """redact_text for a stream of lines, keeping state across a multi-line private key block."""

    def __init__(self, known_values=()):
        self.known_values = tuple(known_values)
        self.in_private_key = False
        self.masked_lines = 0

    def redact_line(self, line):
        if self.in_private_key:
            if _PEM_END_RE.search(line):
                self.in_private_key = False
            return None
        if "PRIVATE KEY" in line and _PEM_BEGIN_RE.search(line) and not _PEM_END_RE.search(line):
            self.in_private_key = True
            self.masked_lines += 1
            prefix = line[:_PEM_BEGIN_RE.search(line).start()]
            return prefix + REDACTED_PRIVATE_KEY + ("\n" if line.endswith("\n") else "")
        out = redact_text(line, self.known_values)
        if out != line:
            self.masked_lines += 1
        return out


def mask_env(env):
    """A copy of a container ``env`` list with values of secret-looking names masked.

    ``valueFrom`` references are kept: they name a Secret, they do not carry its value.
    """
    if not isinstance(env, list):
        return env
    out = []
    for item in env:
        if isinstance(item, dict):
            item = dict(item)
            value = item.get("value")
            if value not in (None, "") and looks_secret_env_name(item.get("name")):
                item["value"] = redacted_marker(value)
        out.append(item)
    return out


def mask_headers(headers):
    """A copy of HTTP headers (dict or list of pairs) with credential-bearing values masked."""
    if headers is None:
        return None
    pairs = headers.items() if hasattr(headers, "items") else headers
    out = []
    for name, value in pairs:
        lowered = str(name).lower()
        if lowered in _SENSITIVE_HEADERS or _SENSITIVE_HEADER_RE.search(lowered):
            value = REDACTED
        else:
            value = redact_text(str(value))
        out.append((str(name), value))
    return dict(out) if hasattr(headers, "items") else out


class RedactionStats(object):
    """Counts of what structural redaction did, for the manifest."""

    FIELDS = ("secret_values", "env_values", "secret_keys", "managed_fields", "last_applied", "text")

    def __init__(self):
        self.counts = collections.Counter()

    def add(self, field, n=1):
        self.counts[field] += n

    def as_dict(self):
        return dict((field, self.counts.get(field, 0)) for field in self.FIELDS)


def _redact_walk(value, known_values, stats, parent_key=None):
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "managedFields" and parent_key == "metadata":
                stats.add("managed_fields")
                continue
            if key == "annotations" and isinstance(item, dict) and LAST_APPLIED in item:
                item = dict(item)
                del item[LAST_APPLIED]
                stats.add("last_applied")
            if key == "env" and isinstance(item, list):
                masked = mask_env(item)
                stats.add("env_values", sum(1 for a, b in zip(item, masked) if a is not b and a != b))
                item = masked
            if isinstance(item, str) and item and looks_secret_key(key) and not is_placeholder(item):
                out[key] = redacted_marker(item)
                stats.add("secret_keys")
                continue
            out[key] = _redact_walk(item, known_values, stats, key)
        return out
    if isinstance(value, list):
        return [_redact_walk(item, known_values, stats, parent_key) for item in value]
    if isinstance(value, str):
        masked = redact_text(value, known_values)
        if masked is not value and masked != value:
            stats.add("text")
        return masked
    return value


def _redact_secret_data(obj, stats):
    for field, encoded in (("data", True), ("stringData", False)):
        data = obj.get(field)
        if isinstance(data, dict):
            obj[field] = dict((key, redacted_marker(val, encoded=encoded)) for key, val in data.items())
            stats.add("secret_values", len(data))


def _redact_configmap_data(obj, stats):
    data = obj.get("data")
    if isinstance(data, dict):
        for key in list(data):
            if looks_secret_env_name(key) and data[key] not in (None, "") and not isinstance(data[key], dict):
                data[key] = redacted_marker(data[key])
                stats.add("secret_keys")
    binary = obj.get("binaryData")
    if isinstance(binary, dict):
        # Binary values can be neither text-redacted nor scanned: keep their size only.
        obj["binaryData"] = dict((key, redacted_marker(val, encoded=True)) for key, val in binary.items())


def redact_k8s_object(obj, known_values=(), stats=None, kind=None):
    """A redacted deep copy of a Kubernetes object (or a ``*List`` of them).

    ``kind`` names the object kind when the object itself does not say (list items
    returned by the API carry no ``kind``). ``stats`` (a RedactionStats) counts what
    was masked. The input is never modified.
    """
    stats = stats if stats is not None else RedactionStats()
    if not isinstance(obj, dict):
        return _redact_walk(obj, known_values, stats)
    kind = obj.get("kind") or kind
    if isinstance(obj.get("items"), list) and (not kind or kind.endswith("List")):
        item_kind = kind[:-4] if kind and kind.endswith("List") else None
        out = dict((key, _redact_walk(val, known_values, stats, key)) for key, val in obj.items() if key != "items")
        out["items"] = [redact_k8s_object(item, known_values, stats, item_kind) for item in obj["items"]]
        return out
    if kind == "Secret":
        # Values go before the walk sees them, so no text rule ever touches Secret data.
        shallow = dict(obj)
        for field in ("data", "stringData"):
            if isinstance(shallow.get(field), dict):
                shallow[field] = dict(shallow[field])
        _redact_secret_data(shallow, stats)
        return _redact_walk(shallow, known_values, stats)
    out = _redact_walk(obj, known_values, stats)
    if kind == "ConfigMap":
        _redact_configmap_data(out, stats)
    return out


def secret_values_of(secret, min_length=8, long_length=16):
    """Values of a Secret worth scanning for verbatim (decoded), without keeping keys.

    A value counts when its key looks secret and it has at least ``min_length``
    characters, or when it is at least ``long_length`` long whatever its key: a
    ``username: postgres`` would otherwise flag every schema dump.
    """
    values = []
    for field, encoded in (("data", True), ("stringData", False)):
        data = (secret or {}).get(field) or {}
        for key, raw in data.items():
            if raw is None:
                continue
            if encoded:
                try:
                    value = base64.b64decode(raw).decode("utf-8")
                except (binascii.Error, ValueError, UnicodeDecodeError):
                    continue
            else:
                value = str(raw)
            for part in value.splitlines() or [value]:
                part = part.strip()
                if len(part) >= long_length or (len(part) >= min_length and looks_secret_env_name(key)):
                    values.append(part)
    return values


def known_value_forms(value):
    """The forms in which a secret value can appear in text: as-is and base64-encoded."""
    forms = [value]
    encoded = base64.b64encode(value.encode("utf-8")).decode("ascii")
    forms.append(encoded)
    if encoded.endswith("="):
        forms.append(encoded.rstrip("="))
    return forms


# ---------------------------------------------------------------------------
# Pattern scan
# ---------------------------------------------------------------------------

Finding = collections.namedtuple("Finding", "path line rule engine")

# Ported from the shapes of gitleaks' default rules; the value group (if any) is checked
# against is_placeholder so our own masks never count as findings.
_BUILTIN_RULES = (
    ("private-key", r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----", None),
    ("aws-access-key-id", r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b", None),
    ("github-token", r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9_]{36,255}\b", None),
    ("github-fine-grained-pat", r"\bgithub_pat_[A-Za-z0-9_]{82}\b", None),
    ("gitlab-token", r"\bgl(?:pat|dt|ptt|rt|soat|cbt|oas)-[A-Za-z0-9_-]{20,}", None),
    ("slack-token", r"\bxox[abposre]-[A-Za-z0-9-]{10,}", None),
    ("slack-webhook", r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_-]{20,}", None),
    ("stripe-key", r"\b(?:sk|rk)_(?:test|live|prod)_[A-Za-z0-9]{10,99}\b", None),
    ("google-api-key", r"\bAIza[0-9A-Za-z_-]{35}\b", None),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", None),
    ("npm-token", r"\bnpm_[A-Za-z0-9]{36}\b", None),
    ("pypi-token", r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}", None),
    ("sendgrid-key", r"\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}\b", None),
    ("age-secret-key", r"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}", None),
    ("url-credentials", r"(?i)\b[a-z][a-z0-9+.-]{1,20}://[^\s/:@\"'<>]{1,256}:([^\s/@\"'<>]{1,256})@", 1),
    ("authorization-header", r"(?i)\b(?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*[\"']?"
                             r"(?:(?:bearer|basic|token|digest|negotiate)[ \t]+)?([^\s\"',;]{6,})", 1),
    ("bearer-token", r"(?i)\bbearer[ \t]+([A-Za-z0-9._~+/-]{16,}=*)", 1),
    ("secret-assignment", _ASSIGNMENT_RE.pattern, 2),
)

# detect-secrets plugins that are too noisy for Kubernetes evidence: entropy detectors flag
# every sha256 digest and certificate, IPPublic is not a secret, Keyword flags secretName lines
# (our secret-assignment rule covers the keyword case with end-of-key anchoring).
_DETECT_SECRETS_EXCLUDED = frozenset(("Base64HighEntropyString", "HexHighEntropyString", "IPPublicDetector",
                                      "KeywordDetector"))

_CHUNK_CHARS = 1 << 20
_CLEAN_CACHE_LINES = 200000


def _detect_secrets_plugins():
    if not HAS_DETECT_SECRETS:
        return []
    plugins = []
    for cls in sorted(get_mapping_from_secret_type_to_class().values(), key=lambda c: c.__name__):
        if cls.__name__ in _DETECT_SECRETS_EXCLUDED or not getattr(cls, "denylist", None):
            continue
        try:
            plugins.append(cls())
        except TypeError:  # a plugin that needs configuration we do not have
            continue
    return plugins


def _multiline(pattern):
    return re.compile(pattern.pattern, pattern.flags | re.M)


class SecretScanner(object):
    """Scan text or files for secrets; findings carry file, line and rule, never the value.

    ``known_values`` are exact secret values read during the run (Secret data): any
    verbatim or base64 occurrence is a finding. ``allowlist`` is a list of regexes;
    a finding on a line matching one is dropped and counted in ``allowlisted``.
    """

    def __init__(self, known_values=(), allowlist=(), use_detect_secrets=True):
        self._rules = [(rule_id, re.compile(pattern, re.M), group) for rule_id, pattern, group in _BUILTIN_RULES]
        self._plugins = _detect_secrets_plugins() if use_detect_secrets else []
        self._prefilters = [rx for _rule, rx, _group in self._rules]
        for plugin in self._plugins:
            self._prefilters.extend(_multiline(rx) for rx in plugin.denylist)
        self._known = set()
        self._clean = set()
        self._allowlist = [re.compile(pattern) for pattern in allowlist or ()]
        self.allowlisted = 0
        for value in known_values:
            self.add_known_value(value)

    @property
    def engines(self):
        engines = ["builtin %s (%d rules)" % (RULES_VERSION, len(self._rules))]
        if self._plugins:
            engines.append("detect-secrets %s (%s)" % (DETECT_SECRETS_VERSION, ", ".join(
                sorted(type(p).__name__ for p in self._plugins))))
        # No count here: the engines go into the archive index, which must not depend on the run.
        engines.append("known-values")
        return engines

    @property
    def known_value_count(self):
        return len(self._known)

    @property
    def known_values(self):
        """Every form of every known value (for masking), longest first."""
        return tuple(sorted(self._known, key=lambda v: (-len(v), v)))

    def add_known_value(self, value):
        if value:
            self._clean.clear()
            self._known.update(form for form in known_value_forms(value) if len(form) >= 8)

    def _line_findings(self, line, path, number):
        found = []
        for rule_id, regex, group in self._rules:
            for match in regex.finditer(line):
                if group is not None and is_placeholder(match.group(group)):
                    continue
                found.append(Finding(path, number, rule_id, "builtin"))
                break
        for plugin in self._plugins:
            for value in plugin.analyze_string(line):
                if not is_placeholder(value):
                    found.append(Finding(path, number, plugin.secret_type, "detect-secrets"))
                    break
        if any(value in line for value in self._known):
            found.append(Finding(path, number, "known-secret-value", "known-values"))
        if found and any(rx.search(line) for rx in self._allowlist):
            self.allowlisted += len(found)
            return []
        return found

    def _candidate_lines(self, text):
        """Indexes of the lines of ``text`` that a prefilter or a known value touches."""
        starts = set()
        for regex in self._prefilters:
            for match in regex.finditer(text):
                starts.add(match.start())
                starts.add(max(match.start(), match.end() - 1))
        for value in self._known:
            pos = text.find(value)
            while pos != -1:
                starts.add(pos)
                pos = text.find(value, pos + 1)
        if not starts:
            return []
        newlines = [m.start() for m in re.finditer("\n", text)]
        return sorted(set(bisect.bisect_left(newlines, pos) for pos in starts))

    def _scan_chunk(self, chunk, path, first_line):
        # Evidence repeats itself (a thousand pods of one template): each distinct line is
        # scanned once, and lines already found clean in this scanner's life are skipped.
        occurrences = {}
        for number, line in enumerate(chunk.split("\n")):
            if line in self._clean:
                continue
            if line in occurrences:
                occurrences[line].append(number)
            else:
                occurrences[line] = [number]
        unique = list(occurrences)
        findings = []
        flagged = set()
        for idx in self._candidate_lines("\n".join(unique)):
            line = unique[idx]
            found = self._line_findings(line, path, 0)
            if found:
                flagged.add(line)
                for number in occurrences[line]:
                    findings.extend(f._replace(line=first_line + number) for f in found)
        if len(self._clean) > _CLEAN_CACHE_LINES:
            self._clean.clear()
        self._clean.update(line for line in unique if line not in flagged)
        return findings

    def scan_chunks(self, chunks, path):
        """Scan an iterable of text chunks that each end at a line boundary (except the last)."""
        findings = []
        line = 1
        for chunk in chunks:
            findings.extend(self._scan_chunk(chunk, path, line))
            line += chunk.count("\n")
        return sorted(set(findings))

    def scan_text(self, text, path="<text>"):
        return self.scan_chunks([text], path)

    def scan_file(self, path, relpath=None):
        """Scan a file in bounded chunks (memory does not grow with the file)."""
        return self.scan_chunks(_read_line_chunks(path), relpath or path)


def _read_line_chunks(path, size=_CHUNK_CHARS):
    with open(path, "r", encoding="utf-8", errors="replace", newline="") as handle:
        carry = ""
        while True:
            block = handle.read(size)
            if not block:
                break
            block = carry + block
            cut = block.rfind("\n")
            if cut == -1:
                carry = block
                continue
            carry = block[cut + 1:]
            yield block[:cut + 1]
        if carry:
            yield carry


def scan_text(text, known_values=(), path="<text>"):
    """Findings in a string (see SecretScanner)."""
    return SecretScanner(known_values=known_values).scan_text(text, path)


def scan_file(path, known_values=(), relpath=None):
    """Findings in a file (see SecretScanner)."""
    return SecretScanner(known_values=known_values).scan_file(path, relpath)


def describe_findings(findings, limit=20):
    """One line per finding, safe to print: path:line rule (engine)."""
    lines = ["%s:%d %s (%s)" % (f.path, f.line, f.rule, f.engine) for f in findings[:limit]]
    if len(findings) > limit:
        lines.append("... and %d more" % (len(findings) - limit))
    return lines
