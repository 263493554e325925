# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redaction of secrets, in one place: structural masking, then a pattern scan.

Everything the collection writes (evidence packs, receipts, ledgers) goes through
this file. Two stages, fail closed:

1. Structural redaction before anything touches disk: Kubernetes objects lose
   Secret values (replaced by ``{redacted: true, bytes: N}``), ``managedFields``
   and the ``last-applied-configuration`` annotation; env values, dict values and
   ``key=value`` text whose names look secret (quotes JSON-escaped or not, colour
   codes or not), values on the line(s) after a bare key or in a YAML block scalar,
   secret command-line flags (in text and in ``command``/``args`` lists), URL
   credentials, ``Authorization`` headers, bearer tokens, private key blocks and the
   values of Secrets read during the run (and their encoded forms) are masked.
   ``redact_value`` applies the same to any module result.
2. A pattern scan of what was written: ported gitleaks-style rules, the specific
   detect-secrets 1.5 plugins, and the exact values of Secrets read during the
   run. Any finding is reported by file, line and rule, never by value. The scan is
   linear: long lines are scanned as bounded segments and each rule runs only where
   its literals occur.

Pure logic only, except ``scan_file`` which reads the file it is given.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import bisect
import collections
import json
import re

try:
    from urllib.parse import quote, quote_plus
except ImportError:  # pragma: no cover - Python 2 is not supported by the collection
    from urllib import quote, quote_plus

DETECT_SECRETS_IMP_ERR = None
try:
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.__version__ import VERSION as DETECT_SECRETS_VERSION

    HAS_DETECT_SECRETS = True
except ImportError:  # pragma: no cover - exercised only without the library
    HAS_DETECT_SECRETS = False
    DETECT_SECRETS_VERSION = None

# Bump whenever a rule below changes: manifests and receipts record which rules ran.
RULES_VERSION = "governed-redact/2"

# Starts with '*' so keyword detectors (which want a word character) never see it as a value.
REDACTED = "**REDACTED**"
REDACTED_PRIVATE_KEY = "**REDACTED PRIVATE KEY**"

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

# Env var names that look secret (research 4.2): a substring test, deliberately broad.
SECRET_ENV_NAME_RE = re.compile(r"(?i)pass|secret|token|key|cred|auth|dsn|conn")

# Keys whose value is a secret when the key *ends* with one of these words
# (DB_PASSWORD, client_secret, api-key; not secretName or secretKeyRef).
# A bare ``pass`` is a key only after a delimiter (DB_PASS, "pass", --pass) or alone at the start of a line
# (indented 0-8 spaces or a tab: embedded config), so "bypass", "compass" and prose ("tests pass: 12/12") are not.
_BARE_PASS = "|".join([r"(?<=[_.\-\"'`\\]pass)", r"(?<![^\n]pass)"] + [
    r"(?<=%spass)(?<![^\n]%spass)" % (indent, indent) for indent in ("\t", "  ", "    ", "      ", "        ")])
_SECRET_WORDS = (r"(?:pass(?:word|wd|phrase|" + _BARE_PASS + r")|pwd|secret|token|api[_.-]?key|apikey|access[_.-]?key|"
                 r"private[_.-]?key|secret[_.-]?key|signing[_.-]?key|encryption[_.-]?key|"
                 r"session[_.-]?key|credentials?|requirepass|masterauth)")
SECRET_KEY_RE = re.compile(r"(?i)" + _SECRET_WORDS + r"$")

_SENSITIVE_HEADERS = frozenset(("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
                                "x-auth-token", "x-csrf-token", "x-xsrf-token", "api-key"))
_SENSITIVE_HEADER_RE = re.compile(r"(?i)token|secret|password|api[_-]?key|auth|cookie|session|signature")

# key=value / key: value / "key": "value" where the key ends in a secret word.
# The quotes may be JSON-escaped (\\"password\\":\\"...\\" inside a log line); a value stops at an escaped quote.
_ASSIGNMENT_RE = re.compile(
    r"(?i)(" + _SECRET_WORDS + r"\\{0,8}[\"'`]?[ \t]*(?::=|=>|==?|:)[ \t]*\\{0,8}[\"'`]?)"
    r"(\$\{[^}\s]*\}|\{\{[^}]*\}\}|(?:[^\s\"'`,;&{}\[\]()<>\\]|\\(?![\"'`\\]))+)")
# SQL: CREATE ROLE x PASSWORD 'secret'
_SQL_PASSWORD_RE = re.compile(r"(?i)(\bpassword[ \t]+')([^']+)(')")
# scheme://[user]:password@host: the user may be empty (redis://:pw@host) and the password may hold '/' or '@'
# (it runs lazily to the '@' that is followed by a host and the end of the authority).
_URL_HOST_END = r"(?=[A-Za-z0-9._~%\[\]-]{1,253}(?::[0-9]{1,5})?(?:[/?#\s\"'<>,;)\]}]|$))"
_URL_CREDENTIALS_PATTERN = (r"(?i)\b([a-z][a-z0-9+.-]{1,20}://)([^\s/:@\"'<>]{0,256}):"
                            r"([^\s/@\"'<>]{1,256}|[^\s\"'<>?#]{1,128}?)@" + _URL_HOST_END)
_URL_CREDENTIALS_RE = re.compile(_URL_CREDENTIALS_PATTERN)
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
# Command-line forms: --password X, "--password", "X" (a JSON argv in a log line), mysql -pX, -u user:pw.
_FLAG_WORD = r"--?[A-Za-z0-9_.-]*?" + _SECRET_WORDS
# Any flag and its value are matched (linear: no backtracking into the flag name); the substitution keeps
# those whose flag does not end in a secret word.
_CLI_FLAG_RE = re.compile(r"(?<![\w-])(--?[A-Za-z0-9_.-]{1,64}[ \t]+)(\"[^\"\n]{1,256}\"|'[^'\n]{1,256}'|(?!-)[^\s\"'`]+)")
_JSON_ARGV_RE = re.compile(r"([\"']--?[A-Za-z0-9_.-]{1,64}\\?[\"'][ \t]*,[ \t]*\\?[\"'])([^\"'\\\n]+)")
_FLAG_NAME_RE = re.compile(r"(?i)" + _SECRET_WORDS + r"\\?[\"']?[ \t,\\\"']*$")
_MYSQL_P_RE = re.compile(r"(?i)(\b(?:mysql|mariadb)[\w-]*[^\n]{0,512}?(?<![\w-])-p)([^\s\"'`]+)")
_USER_PW_RE = re.compile(r"(?<![\w-])(-u|--user)([ \t]+|=)([\"']?)([^\s:\"'`@]{1,256}):([^\s\"'`]+)")
# {"name": "DB_PASSWORD", "value": "..."}: an env entry printed on one line.
_ENV_PAIR_RE = re.compile(r"(?i)([\"']?name[\"']?[ \t]*[:=][ \t]*[\"']?[A-Za-z0-9_.-]*" + _SECRET_WORDS
                          + r"[\"']?[ \t]*,[ \t]*[\"']?value[\"']?[ \t]*[:=][ \t]*[\"']?)([^\"'\s,}]+)")
_SECRET_WORD_LITERALS = ("pass", "pwd", "secret", "token", "key", "cred", "masterauth")
_ANSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
# Cheap gate: a string without any of these cannot match a masking rule above.
_MAYBE_SENSITIVE_LITERALS = ("pass", "pwd", "secret", "token", "key", "cred", "auth", "bearer", "cookie", "://",
                             "private", "-u", "--user")


def maybe_sensitive(text, lowered=None):
    """False when no masking rule can match ``text`` (substring tests only: linear and fast)."""
    lowered = text.lower() if lowered is None else lowered
    return any(literal in lowered for literal in _MAYBE_SENSITIVE_LITERALS)


_PLACEHOLDERS = frozenset(("true", "false", "null", "none", "nil", "yes", "no", "redacted", "masked", "hidden",
                           "bearer", "basic", "token", "digest", "negotiate", "required", "optional",
                           "string", "secret", "password", "undefined", "empty"))
_TEMPLATED_RE = re.compile(r"^(?:\$\{.*\}|\$\(.*\)|\{\{.*\}\}|<.*>|%\(.*\)s|\$[A-Za-z_][A-Za-z0-9_]*)$")
# A YAML block scalar indicator (password: |) announces the value on the next lines; it is not the value.
_BLOCK_INDICATOR_RE = re.compile(r"^[|>][-+0-9]{0,3}$")


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
    if _TEMPLATED_RE.match(text) or _BLOCK_INDICATOR_RE.match(text):
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


def _sub_cli_flag(match):
    if not _FLAG_NAME_RE.search(match.group(1)):
        return match.group(0)
    value = match.group(2)
    quoted = value[:1] in ("'", '"') and len(value) > 1
    if is_placeholder(value[1:-1] if quoted else value):
        return match.group(0)
    return match.group(1) + (value[0] + REDACTED + value[-1] if quoted else REDACTED)


def _sub_user_pw(match):
    user, password = match.group(4), match.group(5).rstrip("\"'")
    # docker/podman -u 1000:1000 is uid:gid, not a credential.
    if (user.isdigit() and password.isdigit()) or is_placeholder(password):
        return match.group(0)
    return match.group(1) + match.group(2) + match.group(3) + user + ":" + REDACTED


def _sub_json_argv(match):
    if not _FLAG_NAME_RE.search(match.group(1)):
        return match.group(0)
    return _sub_value_group(match)


def _sub_value_group(match):
    if is_placeholder(match.group(2)):
        return match.group(0)
    return match.group(1) + REDACTED


def _lower_twin(regex):
    """The same pattern without IGNORECASE, to run on lowercased text: every branch then starts with a literal
    and the regex engine skips ahead instead of trying each position (several times faster on long lines)."""
    return re.compile(regex.pattern.replace("(?i)", "", 1), regex.flags & ~re.IGNORECASE)


class _Span(object):
    """A match found in lowercased text, read back from the original text (same length)."""

    def __init__(self, match, text):
        self._match = match
        self._text = text

    def group(self, index=0):
        start, end = self._match.span(index)
        return None if start < 0 else self._text[start:end]

    def start(self, index=0):
        return self._match.start(index)

    def end(self, index=0):
        return self._match.end(index)


def _isub(regex, twin, func, text):
    """regex.sub(func, text) for a case-insensitive regex, run as its lowercase twin when that is exact."""
    lowered = text.lower()
    if len(lowered) != len(text):
        return regex.sub(func, text)
    out = []
    last = 0
    for match in twin.finditer(lowered):
        out.append(text[last:match.start()])
        out.append(func(_Span(match, text)))
        last = match.end()
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


_ASSIGNMENT_TWIN = _lower_twin(_ASSIGNMENT_RE)


def strip_ansi(text):
    """Text without ANSI escape sequences (colour codes), which can split a key from its value."""
    return _ANSI_RE.sub("", text) if isinstance(text, str) and "\x1b" in text else text


def mask_url_credentials(text):
    """scheme://user:password@host -> scheme://user:**REDACTED**@host (and long token-only userinfo)."""
    if not isinstance(text, str) or "://" not in text or "@" not in text:
        return text
    text = _URL_CREDENTIALS_RE.sub(_sub_url, text)
    return _URL_TOKEN_USER_RE.sub(lambda m: m.group(1) + REDACTED + "@", text)


def url_passwords(text):
    """The passwords embedded in URLs of a text (so a caller can register them for masking)."""
    if not isinstance(text, str) or "://" not in text:
        return []
    return [m.group(3) for m in _URL_CREDENTIALS_RE.finditer(text) if not is_placeholder(m.group(3))]


# Values learned from Secrets: at least MIN_KNOWN_VALUE characters. Values shorter than SHORT_KNOWN_VALUE are
# masked only as a whole token (not inside a longer run of letters and digits), so a 5-character password
# masks "pw=abcde" and "abcde" but not every word that happens to contain it; shorter values are ignored (a
# 1-3 character value would mask ordinary words and numbers all over the evidence and protects nothing).
MIN_KNOWN_VALUE = 4
SHORT_KNOWN_VALUE = 8
_SHORT_VALUE_CACHE = {}


def _short_value_re(value):
    regex = _SHORT_VALUE_CACHE.get(value)
    if regex is None:
        before = r"(?<![A-Za-z0-9])" if value[:1].isalnum() else ""
        after = r"(?![A-Za-z0-9])" if value[-1:].isalnum() else ""
        regex = re.compile(before + re.escape(value) + after)
        if len(_SHORT_VALUE_CACHE) > 4096:
            _SHORT_VALUE_CACHE.clear()
        _SHORT_VALUE_CACHE[value] = regex
    return regex


def known_value_in(value, text):
    """True when a known secret value occurs in text (short values only as a whole token)."""
    if value not in text:
        return False
    return len(value) >= SHORT_KNOWN_VALUE or bool(_short_value_re(value).search(text))


def _mask_known(text, known_values):
    for value in known_values:
        if value and value in text:
            if len(value) >= SHORT_KNOWN_VALUE:
                text = text.replace(value, REDACTED)
            else:
                text = _short_value_re(value).sub(REDACTED, text)
    return text


def _redact_core(text, known_values):
    if known_values:
        text = _mask_known(text, known_values)
    # Each rule runs only when its literal is present: a long line pays for the rules it can match.
    lowered = text.lower()
    if not maybe_sensitive(text, lowered):
        return text
    if "PRIVATE KEY" in text:
        text = _PEM_BLOCK_RE.sub(REDACTED_PRIVATE_KEY, text)
    if "authorization" in lowered:
        text = _AUTH_HEADER_RE.sub(_sub_auth_header, text)
    if "cookie" in lowered:
        text = _COOKIE_HEADER_RE.sub(lambda m: m.group(1) + REDACTED, text)
    if "bearer" in lowered:
        text = _BEARER_RE.sub(_sub_bearer, text)
    text = mask_url_credentials(text)
    if "password" in lowered:
        text = _SQL_PASSWORD_RE.sub(lambda m: m.group(1) + REDACTED + m.group(3), text)
    if "-" in text:
        if any(word in lowered for word in _SECRET_WORD_LITERALS):
            text = _CLI_FLAG_RE.sub(_sub_cli_flag, text)
            text = _JSON_ARGV_RE.sub(_sub_json_argv, text)
        if "-u" in text or "--user" in text:
            text = _USER_PW_RE.sub(_sub_user_pw, text)
        if "-p" in text and ("mysql" in lowered or "mariadb" in lowered):
            text = _MYSQL_P_RE.sub(_sub_value_group, text)
    if "name" in lowered and "value" in lowered:
        text = _ENV_PAIR_RE.sub(_sub_value_group, text)
    if any(word in lowered for word in _SECRET_WORD_LITERALS):
        text = _isub(_ASSIGNMENT_RE, _ASSIGNMENT_TWIN, _sub_assignment, text)
    return text


def redact_text(text, known_values=()):
    """Mask credentials inside free text: logs, config files, HTTP bodies, command output.

    Masks private key blocks, Authorization/Cookie headers, bearer tokens, URL
    credentials, ``secret_word = value`` assignments (quotes JSON-escaped or not),
    command-line flags (``--password X``, ``mysql -pX``, ``-u user:pw``), SQL
    ``PASSWORD '...'``, values on the line after a bare ``password:`` and in a YAML
    block scalar (``password: |``), and any of ``known_values`` (exact secret values
    read during this run). Text whose colour codes split a secret from its key loses
    its colour codes when (and only when) that reveals something to mask.
    """
    if not isinstance(text, str) or not text:
        return text
    out = _redact_core(text, known_values)
    if "\x1b" in text:
        plain = strip_ansi(text)
        masked = _redact_core(plain, known_values)
        if masked != plain:
            out = masked
    if "\n" in out and (maybe_sensitive(out) or "mysql" in out or "mariadb" in out):
        out = _redact_continuations(out)
    return out


# A key with no value on its line: the value follows on the next line (or lines, for a YAML block scalar).
_DANGLING_KEY_RE = re.compile(r"(?i)" + _SECRET_WORDS + r"\\{0,8}[\"'`]?[ \t]*(?::=|=>|=|:)[ \t]*$")
_BLOCK_KEY_RE = re.compile(r"(?i)^([ \t]*(?:-[ \t]+)?)[\"']?[A-Za-z0-9_.-]*?" + _SECRET_WORDS
                           + r"[\"']?[ \t]*:[ \t]*[|>][-+0-9]{0,3}[ \t]*(?:#.*)?$")
_DANGLING_FLAG_RE = re.compile(r"(?i)^[ \t]*-[ \t]+[\"']?" + _FLAG_WORD + r"[\"']?[ \t]*$")
_ENV_NAME_LINE_RE = re.compile(r"(?i)^[ \t]*(?:-[ \t]+)?[\"']?name[\"']?[ \t]*:[ \t]*[\"']?[A-Za-z0-9_.-]*"
                               + _SECRET_WORDS + r"[\"']?[ \t]*$")
_ENV_VALUE_LINE_RE = re.compile(r"^([ \t]*(?:-[ \t]+)?[\"']?value[\"']?[ \t]*:[ \t]*)(\S.*)$")
_MYSQL_ITEM_RE = re.compile(r"(?i)^[ \t]*-[ \t]+[\"']?(?:\S*/)?(?:mysql|mariadb)[\w-]*[\"']?[ \t]*$")
_P_ITEM_RE = re.compile(r"^([ \t]*-[ \t]+[\"']?-p)([^\s\"']+)")
_LIST_ITEM_RE = re.compile(r"^[ \t]*-[ \t]")
_MAPPING_LINE_RE = re.compile(r"^[ \t]*(?:-[ \t]+)?[\"']?[A-Za-z0-9_.\-/]+[\"']?[ \t]*:(?:[ \t]|$)")


class _Continuation(object):
    """State carried from one line to the next: a secret key whose value is on the following line(s)."""

    def __init__(self):
        self.mode = None
        self.column = 0
        self.mysql_argv = False

    def consume(self, line):
        """The masked line when the state says this line is (part of) a value, else None."""
        if self.mysql_argv:
            item = _P_ITEM_RE.match(line)
            if item and not is_placeholder(item.group(2)):
                return item.group(1) + REDACTED + line[item.end():]
        if self.mode is None:
            return None
        body = line.rstrip("\r\n")
        ending = line[len(body):]
        if not body.strip():
            return None if self.mode == "env" else line
        indent = len(body) - len(body.lstrip(" \t"))
        if self.mode == "block":
            if indent > self.column:
                return body[:indent] + REDACTED + ending
            self.mode = None
            return None
        mode, self.mode = self.mode, None
        content = body.strip()
        if mode == "env":
            match = _ENV_VALUE_LINE_RE.match(body)
            if match and not is_placeholder(match.group(2)):
                return match.group(1) + REDACTED + ending
            return None
        if _MAPPING_LINE_RE.match(body) or content in ("{", "[", "|", ">") or is_placeholder(content.rstrip(",")):
            return None
        dash = "- " if content.startswith("- ") else ""
        if dash and is_placeholder(content[2:]):
            return None
        return body[:indent] + dash + REDACTED + ending

    def arm(self, line):
        """Look at a line (as read) for a key whose value is on the next line(s)."""
        body = strip_ansi(line.rstrip("\r\n"))
        if len(body) > 4096:
            return
        if _MYSQL_ITEM_RE.match(body):
            self.mysql_argv = True
        elif not _LIST_ITEM_RE.match(body):
            self.mysql_argv = False
        if not maybe_sensitive(body):
            return
        block = _BLOCK_KEY_RE.match(body)
        if block:
            self.mode, self.column = "block", len(block.group(1))
        elif _DANGLING_KEY_RE.search(body.rstrip()) or _DANGLING_FLAG_RE.match(body):
            self.mode = "next"
        elif _ENV_NAME_LINE_RE.match(body):
            self.mode = "env"


def _redact_continuations(text):
    state = _Continuation()
    out = []
    for line in text.splitlines(True):
        masked = state.consume(line)
        out.append(line if masked is None else masked)
        if masked is None or state.mysql_argv:
            state.arm(line)
    return "".join(out)


class LineRedactor(object):
    """redact_text for a stream of lines, keeping state across lines: a multi-line private key block, a
    value on the line after its key (``password:`` then the value), a YAML block scalar (``password: |``)."""

    def __init__(self, known_values=()):
        self.known_values = tuple(known_values)
        self.in_private_key = False
        self.masked_lines = 0
        self._continuation = _Continuation()

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
        masked = self._continuation.consume(line)
        if masked is not None:
            if masked != line:
                self.masked_lines += 1
            if self._continuation.mysql_argv:
                self._continuation.arm(line)
            return masked
        self._continuation.arm(line)
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


_ARGV_FLAG_RE = re.compile(r"(?i)^" + _FLAG_WORD + r"$")
_MYSQL_PROGRAM_RE = re.compile(r"(?i)(?:^|[/\s])(?:mysql|mariadb)[\w-]*(?:\s|$)")


def mask_argv(argv, known_values=()):
    """A copy of a container ``command``/``args`` list with credentials masked: the item after a secret flag
    (``--password``, ``X``), ``--password=X``, ``-u user:pw``, and ``-pX`` when the command is mysql/mariadb."""
    if not isinstance(argv, list):
        return argv
    mysql = any(isinstance(item, str) and _MYSQL_PROGRAM_RE.search(item) for item in argv)
    out = []
    pending = None
    for item in argv:
        if not isinstance(item, str):
            out.append(item)
            pending = None
            continue
        if pending == "value" and not item.startswith("-") and not is_placeholder(item):
            out.append(REDACTED)
        elif pending == "user" and ":" in item and not item.startswith("-"):
            out.append(_USER_PW_RE.sub(_sub_user_pw, "-u " + item)[3:])
        elif mysql and item.startswith("-p") and len(item) > 2 and not item.startswith("--") \
                and not is_placeholder(item[2:]):
            out.append("-p" + REDACTED)
        else:
            out.append(redact_text(item, known_values))
        pending = None
        if _ARGV_FLAG_RE.match(item):
            pending = "value"
        elif item in ("-u", "--user"):
            pending = "user"
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


# Deeper structures are replaced whole: no Kubernetes object nests this far, and a hostile one must not
# end in a RecursionError (or in an unredacted fallback).
MAX_DEPTH = 100
_ARGV_KEYS = frozenset(("args", "command", "argv"))


def _too_deep():
    return {"redacted": True, "reason": "nested deeper than %d levels" % MAX_DEPTH}


def _redact_walk(value, known_values, stats, parent_key=None, depth=0):
    if depth > MAX_DEPTH and isinstance(value, (dict, list)):
        stats.add("text")
        return _too_deep()
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
            if key in _ARGV_KEYS and isinstance(item, list):
                masked = mask_argv(item, known_values)
                if masked != item:
                    stats.add("text")
                out[key] = masked
                continue
            if isinstance(item, str) and item and looks_secret_key(key) and not is_placeholder(item):
                out[key] = redacted_marker(item)
                stats.add("secret_keys")
                continue
            out[key] = _redact_walk(item, known_values, stats, key, depth + 1)
        return out
    if isinstance(value, list):
        return [_redact_walk(item, known_values, stats, parent_key, depth + 1) for item in value]
    if isinstance(value, str):
        masked = redact_text(value, known_values)
        if masked is not value and masked != value:
            stats.add("text")
        return masked
    return value


def redact_value(value, known_values=(), stats=None):
    """A redacted deep copy of any value a module returns (dicts, lists, strings): the same structural and text
    rules as the evidence pack (env values and keys that look secret, argv flags, URL credentials, headers,
    assignments, known values), without the Kubernetes-object specifics (Secret data is not recognised here)."""
    return _redact_walk(value, tuple(known_values or ()), stats if stats is not None else RedactionStats())


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


_FILE_ASSIGNMENT_RE = re.compile(r"^[ \t]*(?:export[ \t]+)?[\"']?([A-Za-z0-9_.-]+)[\"']?[ \t]*(?:=|:)[ \t]*(.*?)[ \t]*$")


def secret_values_of(secret, min_length=MIN_KNOWN_VALUE, long_length=16):
    """Values of a Secret worth scanning for verbatim (decoded), without keeping keys.

    A value counts when its key looks secret and it has at least ``min_length``
    characters, or when it is at least ``long_length`` long whatever its key: a
    ``username: postgres`` would otherwise flag every schema dump. A multi-line value
    (a file) counts whole, line by line, and by the bare value of each ``key=value`` /
    ``key: value`` line in it (under the same rule, with the inner key).
    """
    values = []

    def keep(key, part):
        part = part.strip() if part else part
        if part and (len(part) >= long_length or (len(part) >= min_length and looks_secret_env_name(key))):
            values.append(part)

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
            lines = value.splitlines()
            if len(lines) > 1:
                keep(key, value)
            for part in lines or [value]:
                keep(key, part)
                if len(lines) > 1:
                    pair = _FILE_ASSIGNMENT_RE.match(part)
                    if pair and pair.group(2):
                        keep(key if looks_secret_env_name(key) else pair.group(1), pair.group(2).strip("\"'"))
    seen = set()
    return [v for v in values if not (v in seen or seen.add(v))]


def known_value_forms(value):
    """The forms in which a secret value can appear in text: as-is, base64-encoded, URL-encoded (both ways)
    and JSON-escaped; no duplicates."""
    forms = [value]
    encoded = base64.b64encode(value.encode("utf-8")).decode("ascii")
    forms.append(encoded)
    if encoded.endswith("="):
        forms.append(encoded.rstrip("="))
    forms.extend([quote(value, safe=""), quote_plus(value, safe=""), json.dumps(value)[1:-1],
                  json.dumps(value, ensure_ascii=False)[1:-1]])
    seen = set()
    return [f for f in forms if f and not (f in seen or seen.add(f))]


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
    ("url-credentials", _URL_CREDENTIALS_PATTERN, 3),
    ("authorization-header", r"(?i)\b(?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*[\"']?"
                             r"(?:(?:bearer|basic|token|digest|negotiate)[ \t]+)?([^\s\"',;]{6,})", 1),
    ("bearer-token", r"(?i)\bbearer[ \t]+([A-Za-z0-9._~+/-]{16,}=*)", 1),
    ("secret-assignment", _ASSIGNMENT_RE.pattern, 2),
)

# Literal gates: a rule runs on a text only when the text holds one literal of every group ("i": compared
# lowercased; "re": a regex searched in the lowercased text). They keep a long line from paying for every regex, and some detect-secrets patterns
# (NpmDetector's //.+/:_authToken) are quadratic on long lines without their literal.


_RULE_GATES = {
    "private-key": (("", ("PRIVATE KEY",)),),
    "aws-access-key-id": (("", ("A3T", "AKIA", "ASIA", "ABIA", "ACCA")),),
    "github-token": (("", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),),
    "github-fine-grained-pat": (("", ("github_pat_",)),),
    "gitlab-token": (("", ("glpat-", "gldt-", "glptt-", "glrt-", "glsoat-", "glcbt-", "gloas-")),),
    "slack-token": (("", ("xox",)),),
    "slack-webhook": (("", ("hooks.slack.com",)),),
    "stripe-key": (("", ("_test_", "_live_", "_prod_")),),
    "google-api-key": (("", ("AIza",)),),
    "jwt": (("", ("eyJ",)),),
    "npm-token": (("", ("npm_",)),),
    "pypi-token": (("", ("pypi-",)),),
    "sendgrid-key": (("", ("SG.",)),),
    "age-secret-key": (("", ("AGE-SECRET-KEY-1",)),),
    "url-credentials": (("", ("://",)), ("", ("@",))),
    "authorization-header": (("i", ("authorization",)),),
    "bearer-token": (("i", ("bearer",)),),
    "secret-assignment": (("i", _SECRET_WORD_LITERALS),),
    # detect-secrets 1.5 plugins, by class name (a plugin not listed always runs)
    "AWSKeyDetector": (("i", ("a3t", "akia", "asia", "abia", "acca", "aws")),),
    "ArtifactoryDetector": (("", ("AKC", "AP")),),
    "AzureStorageKeyDetector": (("", ("AccountKey=",)),),
    "BasicAuthDetector": (("", ("://",)), ("", ("@",))),
    "CloudantDetector": (("i", ("cl",)),
                         ("re", re.compile(r"cl(?:ou(?:dant)?)?[_-]?(?:api)?(?:key|pw|pass|token)|cloudant\.com"))),
    "GitHubTokenDetector": (("", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),),
    "GitLabTokenDetector": (("", ("glpat-", "gldt-", "glft-", "glsoat-", "glrt-", "GR1348941", "glcbt-", "glimt-",
                                  "glptt-", "glagent-", "gloas-")),),
    "IbmCloudIamDetector": (("i", ("key", "pwd", "pass", "token")),),
    "IbmCosHmacDetector": (("i", ("secret",)),),
    "JwtTokenDetector": (("", ("eyJ",)),),
    "MailchimpDetector": (("", ("-us",)),),
    "NpmDetector": (("", ("_authToken",)),),
    "OpenAIDetector": (("", ("T3BlbkFJ",)),),
    "PrivateKeyDetector": (("", ("PRIVATE KEY", "PuTTY-User-Key-File-2")),),
    "PypiTokenDetector": (("", ("pypi-",)),),
    "SendGridDetector": (("", ("SG.",)),),
    "SlackDetector": (("i", ("xox", "hooks.slack.com")),),
    "SoftlayerDetector": (("i", ("sl", "softlayer")),
                          ("re", re.compile(r"(?:sl|softlayer)[_-]?(?:api)?[_-]?(?:key|pwd|pass|token)|api\.softlayer\.com"))),
    "SquareOAuthDetector": (("", ("sq0csp-",)),),
    "StripeDetector": (("", ("k_live_",)),),
    "TelegramBotTokenDetector": (("", (":",)),),
    "TwilioKeyDetector": (("", ("AC", "SK")),),
}


def _gate_passes(gate, text, lowered):
    if not gate:
        return True
    for mode, literals in gate:
        if mode == "re":
            if not literals.search(lowered):
                return False
            continue
        haystack = lowered if mode == "i" else text
        if not any(literal in haystack for literal in literals):
            return False
    return True


# Lines longer than _SEGMENT + _OVERLAP are scanned as overlapping segments, so the cost of a rule on a
# line is bounded by the segment, not the line: the scan is linear in the text. A secret up to _OVERLAP
# characters long lies whole in one segment; known values are checked on the whole line.
_SEGMENT = 2048
_OVERLAP = 512
# Above this size, the prefilter runs each rule over the segments holding its gate literals only.
_GATED_TEXT = 1 << 16


def _segments(line):
    if len(line) <= _SEGMENT + _OVERLAP:
        return [line]
    return [line[start:start + _SEGMENT + _OVERLAP] for start in range(0, len(line) - _OVERLAP, _SEGMENT)]


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


_COMPILED_RULES = {}


def _compiled_rules(use_detect_secrets):
    """(rules, plugins, prefilters), compiled once per process: a scanner is made per text scanned, and compiling
    the rules and instantiating detect-secrets' plugins every time cost more than the scans (receipts scan ~150
    strings). All three are read-only after this."""
    if use_detect_secrets not in _COMPILED_RULES:
        rules = []
        for rule_id, pattern, group in _BUILTIN_RULES:
            regex = re.compile(pattern, re.M)
            rules.append((rule_id, regex, group, _lower_twin(regex) if pattern.startswith("(?i)") else None))
        plugins = _detect_secrets_plugins() if use_detect_secrets else []
        prefilters = [(_RULE_GATES.get(rule_id), rx, twin) for rule_id, rx, _group, twin in rules]
        for plugin in plugins:
            gate = _RULE_GATES.get(type(plugin).__name__)
            prefilters.extend((gate, _multiline(rx), None) for rx in plugin.denylist)
        _COMPILED_RULES[use_detect_secrets] = (tuple(rules), tuple(plugins), tuple(prefilters))
    return _COMPILED_RULES[use_detect_secrets]


class SecretScanner(object):
    """Scan text or files for secrets; findings carry file, line and rule, never the value.

    ``known_values`` are exact secret values read during the run (Secret data): any
    verbatim or base64 occurrence is a finding. ``allowlist`` is a list of regexes;
    a finding on a line matching one is dropped and counted in ``allowlisted``.
    """

    def __init__(self, known_values=(), allowlist=(), use_detect_secrets=True):
        self._rules, self._plugins, self._prefilters = _compiled_rules(bool(use_detect_secrets))
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
            self._known.update(form for form in known_value_forms(value) if len(form) >= MIN_KNOWN_VALUE)

    def _segment_findings(self, segment, path, number):
        """Rule and plugin findings in one (bounded) segment of a line, colour codes removed."""
        found = []
        lowered = segment.lower()
        exact = len(lowered) == len(segment)
        for rule_id, regex, group, twin in self._rules:
            if not _gate_passes(_RULE_GATES.get(rule_id), segment, lowered):
                continue
            matches = twin.finditer(lowered) if twin is not None and exact else regex.finditer(segment)
            for match in matches:
                if group is not None and is_placeholder(segment[match.start(group):match.end(group)]):
                    continue
                found.append(Finding(path, number, rule_id, "builtin"))
                break
        for plugin in self._plugins:
            if not _gate_passes(_RULE_GATES.get(type(plugin).__name__), segment, lowered):
                continue
            for value in plugin.analyze_string(segment):
                if not is_placeholder(value):
                    found.append(Finding(path, number, plugin.secret_type, "detect-secrets"))
                    break
        return found

    def _line_findings(self, line, path, number, segments=None):
        found = []
        for segment in segments if segments is not None else _segments(strip_ansi(line)):
            found.extend(f for f in self._segment_findings(segment, path, number) if f not in found)
        plain = strip_ansi(line)
        if any(known_value_in(value, line) or known_value_in(value, plain) for value in self._known):
            found.append(Finding(path, number, "known-secret-value", "known-values"))
        if found and any(rx.search(line) for rx in self._allowlist):
            self.allowlisted += len(found)
            return []
        return found

    def _candidate_lines(self, text):
        """Indexes of the lines of ``text`` that a prefilter touches (``text`` holds bounded segments)."""
        if len(text) > _GATED_TEXT:
            return self._gated_candidate_lines(text.split("\n"))
        starts = set()
        lowered = text.lower()
        exact = len(lowered) == len(text)
        for gate, regex, twin in self._prefilters:
            if not _gate_passes(gate, text, lowered):
                continue
            for match in (twin.finditer(lowered) if twin is not None and exact else regex.finditer(text)):
                starts.add(match.start())
                starts.add(max(match.start(), match.end() - 1))
        return self._line_indexes(text, starts)

    def _gated_candidate_lines(self, pieces):
        """_candidate_lines for a large text: each rule runs only over the pieces that hold its gate literals,
        so a megabyte of base64 or JSON pays for a few regexes over a few segments, not for all of them."""
        text = "\n".join(pieces)
        lowered = text.lower()
        if len(lowered) != len(text):
            lowered = "\n".join(piece.lower() if len(piece.lower()) == len(piece) else piece for piece in pieces)
        bounds = []
        position = 0
        for piece in pieces:
            bounds.append(position)
            position += len(piece) + 1
        memo = {}
        candidates = set()
        for gate, regex, twin in self._prefilters:
            key = id(gate)
            if key not in memo:
                memo[key] = self._pieces_passing(gate, text, lowered, bounds, len(pieces))
            selected = memo[key]
            if not selected:
                continue
            subset = [pieces[i] for i in selected]
            joined = "\n".join(subset)
            low = joined.lower()
            matches = twin.finditer(low) if twin is not None and len(low) == len(joined) else regex.finditer(joined)
            for index in self._line_indexes(joined, set(m.start() for m in matches)):
                candidates.add(selected[index])
        return sorted(candidates)

    @staticmethod
    def _pieces_passing(gate, text, lowered, bounds, count):
        """Sorted indexes of the pieces (starting at ``bounds``) in which the gate passes."""
        if not gate:
            return list(range(count))
        passing = None
        for mode, literals in gate:
            hits = set()
            if mode == "re":
                for match in literals.finditer(lowered):
                    hits.add(bisect.bisect_right(bounds, match.start()) - 1)
            else:
                haystack = lowered if mode == "i" else text
                for literal in literals:
                    pos = haystack.find(literal)
                    while pos != -1:
                        index = bisect.bisect_right(bounds, pos) - 1
                        hits.add(index)
                        # one hit per piece is enough: jump to the next piece
                        pos = haystack.find(literal, bounds[index + 1]) if index + 1 < count else -1
            passing = hits if passing is None else passing & hits
            if not passing:
                return []
        return sorted(passing)

    @staticmethod
    def _line_indexes(text, starts):
        if not starts:
            return []
        newlines = [m.start() for m in re.finditer("\n", text)]
        return sorted(set(bisect.bisect_left(newlines, pos) for pos in starts))

    def _known_lines(self, text):
        """Indexes of the lines of ``text`` holding a known value (whole lines: a value may span segments)."""
        starts = set()
        for value in self._known:
            pos = text.find(value)
            while pos != -1:
                starts.add(pos)
                pos = text.find(value, pos + 1)
        return self._line_indexes(text, starts)

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
        pieces, owners, segmented = [], [], {}
        for idx, line in enumerate(unique):
            segments = _segments(strip_ansi(line))
            if len(segments) > 1:
                segmented[idx] = segments
            pieces.extend(segments)
            owners.extend([idx] * len(segments))
        candidates = set(owners[piece] for piece in self._candidate_lines("\n".join(pieces)))
        if self._known:
            candidates.update(self._known_lines("\n".join(unique)))
            if "\x1b" in chunk:
                candidates.update(self._known_lines("\n".join(strip_ansi(line) for line in unique)))
        findings = []
        flagged = set()
        for idx in sorted(candidates):
            line = unique[idx]
            found = self._line_findings(line, path, 0, segmented.get(idx))
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


# Compiled when the module is imported: the controller imports the collection's modules once (plugin_utils/
# _in_process.py) and every task's worker then starts with the rules ready.
_compiled_rules(True)


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
