# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""S3-compatible object storage for evidence packs and the ledger's signed heads (boto3).

Objects are written with ``ChecksumAlgorithm=SHA256`` (the digest computed here, so the store refuses a body that
arrived different) and, where the bucket has Object Lock enabled, a retention (COMPLIANCE or GOVERNANCE, days);
after the write the stored object's checksum and retention are read back and compared. Options use the names of
``_argspec.S3`` (doc fragment ``governed.rollback.s3``) and fall back to the ``AWS_*`` variables an AWX credential
injects. Secrets never appear in messages.

Ledger heads: every append's signed checkpoint becomes a new object ``<prefix><name>/<inverted seq>.json`` whose key
sorts the newest head first (so the latest is one short listing away however long the ledger). Verification reads
the object VERSIONS, so a delete marker cannot hide a locked head, and compares the ledger with the newest one: a
ledger behind it was rolled back, truncated or deleted.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import datetime
import hashlib
import importlib
import importlib.util
import os
import sys

from ansible_collections.governed.rollback.plugins.module_utils._common import RollbackError
from ansible_collections.governed.rollback.plugins.module_utils._receipt import (
    LedgerError,
    _bad,
    parse_checkpoint,
    secret_findings,
)


class _OnFirstUse(object):
    """A module imported when one of its attributes is first read. boto3 and botocore take 0.1-0.2 s to import and
    only object storage needs them, so a rollback that stores nothing in S3 never imports them."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self._name), attr)


HAS_BOTO3 = all(importlib.util.find_spec(name) is not None for name in ("boto3", "botocore"))
BOTO3_IMP_ERR = None if HAS_BOTO3 else "No module named 'boto3' (or 'botocore') on %s" % sys.executable
boto3 = _OnFirstUse("boto3")
botocore_config = _OnFirstUse("botocore.config")
botocore_exceptions = _OnFirstUse("botocore.exceptions")

LOCK_MODES = ("COMPLIANCE", "GOVERNANCE")
SEQ_SPAN = 10 ** 19  # keys hold SEQ_SPAN - 1 - seq, zero-padded: the newest head lists first
SEQ_DIGITS = 19
EVIDENCE_PREFIX = "rollbacks/"
HEADS_PREFIX = "ledger-heads/"


class S3Error(RollbackError):
    """Object storage refused or contradicted a write/read; the message names bucket, key and what to do."""


def wanted(params):
    """Whether the options ask for object storage at all (a bucket is named)."""
    return bool(params.get("s3_bucket"))


def client(params):
    if not HAS_BOTO3:
        raise S3Error("boto3 is required for S3 evidence storage and ledger heads; install boto3 (requirements.txt)")
    config = botocore_config.Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                                    retries={"max_attempts": 4, "mode": "standard"},
                                    connect_timeout=10, read_timeout=60)
    kwargs = dict(endpoint_url=params.get("s3_endpoint_url") or None, region_name=params.get("s3_region") or None,
                  aws_access_key_id=params.get("s3_access_key") or None,
                  aws_secret_access_key=params.get("s3_secret_key") or None,
                  aws_session_token=params.get("s3_session_token") or None, config=config)
    if params.get("s3_ca_bundle"):
        kwargs["verify"] = params["s3_ca_bundle"]
    elif params.get("s3_validate_certs") is False:
        kwargs["verify"] = False
    return boto3.session.Session().client("s3", **kwargs)


def _code(exc):
    if isinstance(exc, botocore_exceptions.ClientError):
        return exc.response.get("Error", {}).get("Code", "")
    return type(exc).__name__


def _describe(exc):
    if isinstance(exc, botocore_exceptions.ClientError):
        error = exc.response.get("Error", {})
        return "%s: %s" % (error.get("Code", "error"), error.get("Message", "") or "")
    return str(exc)


def b64_sha256(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def retain_until(days, now=None):
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return (now + datetime.timedelta(days=days)).replace(microsecond=0)


def object_url(params, bucket, key):
    endpoint = (params.get("s3_endpoint_url") or "").rstrip("/")
    if endpoint:
        return "%s/%s/%s" % (endpoint, bucket, key)
    region = params.get("s3_region") or "us-east-1"
    return "https://%s.s3.%s.amazonaws.com/%s" % (bucket, region, key)


class Store(object):
    """One bucket, with the module's options (retention mode and days included)."""

    def __init__(self, params, s3_client=None):
        self.params = params
        self.bucket = params["s3_bucket"]
        self.prefix = params.get("s3_prefix") or ""
        self.mode = params.get("s3_object_lock_mode")
        self.days = params.get("s3_object_lock_days")
        if self.mode and self.mode not in LOCK_MODES:
            raise S3Error("s3_object_lock_mode must be COMPLIANCE or GOVERNANCE, not %s" % self.mode)
        if self.days is not None and self.days < 1:
            raise S3Error("s3_object_lock_days must be at least 1 (got %d)" % self.days)
        self.client = s3_client or client(params)
        self._lock = None

    def where(self, key=None):
        return "s3://%s/%s" % (self.bucket, key if key is not None else self.prefix)

    def lock_configuration(self):
        """{enabled, mode, days} of the bucket's Object Lock (enabled False where the bucket has none)."""
        if self._lock is None:
            try:
                conf = self.client.get_object_lock_configuration(Bucket=self.bucket)["ObjectLockConfiguration"]
            except botocore_exceptions.ClientError as exc:
                if _code(exc) in ("ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound",
                                  "NotImplemented", "InvalidRequest"):
                    self._lock = {"enabled": False, "mode": None, "days": None}
                    return self._lock
                raise S3Error("cannot read the Object Lock configuration of bucket %s (%s); check s3_bucket, the "
                              "endpoint and the credentials" % (self.bucket, _describe(exc)))
            except botocore_exceptions.BotoCoreError as exc:
                raise S3Error("cannot reach object storage for bucket %s: %s" % (self.bucket, _describe(exc)))
            rule = (conf.get("Rule") or {}).get("DefaultRetention") or {}
            days = rule.get("Days") or (rule.get("Years") and rule["Years"] * 365)
            self._lock = {"enabled": conf.get("ObjectLockEnabled") == "Enabled", "mode": rule.get("Mode"),
                          "days": days}
        return self._lock

    def retention_plan(self):
        """(mode, days) this store writes with: the options, else the bucket's default; (None, None) without lock."""
        lock = self.lock_configuration()
        if not lock["enabled"]:
            if self.mode:
                raise S3Error("s3_object_lock_mode=%s was asked for but bucket %s has no Object Lock (create it with "
                              "Object Lock enabled, or drop the option)" % (self.mode, self.bucket))
            return None, None
        mode = self.mode or lock["mode"] or "COMPLIANCE"
        days = self.days or lock["days"]
        if not days:
            raise S3Error("bucket %s has Object Lock but no default retention: set s3_object_lock_days" % self.bucket)
        return mode, days

    def head(self, key):
        """The stored object's metadata with its checksum, or None when key holds nothing."""
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except botocore_exceptions.ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise S3Error("cannot read %s: %s" % (self.where(key), _describe(exc)))

    def find(self, key, sha256_b64):
        """The stored version of key whose SHA256 checksum is sha256_b64 (newest first), or None."""
        head = self.head(key)
        if head is not None and head.get("ChecksumSHA256") == sha256_b64:
            return head
        return None

    def current(self, key):
        """put's result for the object stored under key now (changed False), or None when there is none."""
        head = self.head(key)
        if head is None:
            return None
        mode, days = self.retention_plan()
        checksum = head.get("ChecksumSHA256")
        return {"url": object_url(self.params, self.bucket, key), "uri": self.where(key), "bucket": self.bucket,
                "key": key, "sha256": base64.b64decode(checksum).hex() if checksum else None,
                "checksum_sha256": checksum, "version_id": head.get("VersionId"),
                "retention": self._retention(head, mode, days), "changed": False}

    def put(self, key, data, content_type="application/octet-stream", check_mode=False):
        """Write data under key with a SHA256 checksum and the retention; read the checksum back. Idempotent: an
        object already holding these bytes is kept. Returns {url, uri, bucket, key, version_id, sha256,
        checksum_sha256, retention: {mode, retain_until} or None, changed}."""
        digest, checksum = hashlib.sha256(data).hexdigest(), b64_sha256(data)
        mode, days = self.retention_plan()
        out = {"url": object_url(self.params, self.bucket, key), "uri": self.where(key), "bucket": self.bucket,
               "key": key, "sha256": digest, "checksum_sha256": checksum, "version_id": None,
               "retention": {"mode": mode, "days": days, "retain_until": None} if mode else None}
        found = self.find(key, checksum)
        if found is not None:
            out.update(changed=False, version_id=found.get("VersionId"))
            out["retention"] = self._retention(found, mode, days)
            return out
        if check_mode:
            out["changed"] = True
            return out
        kwargs = dict(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, ChecksumAlgorithm="SHA256",
                      ChecksumSHA256=checksum)
        if mode:
            kwargs.update(ObjectLockMode=mode, ObjectLockRetainUntilDate=retain_until(days))
        try:
            put = self.client.put_object(**kwargs)
            stored = self.client.head_object(Bucket=self.bucket, Key=key, VersionId=put["VersionId"],
                                             ChecksumMode="ENABLED") if put.get("VersionId") else \
                self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except botocore_exceptions.ClientError as exc:
            raise S3Error("uploading %s failed (%s); nothing is recorded as stored" % (self.where(key), _describe(exc)))
        except botocore_exceptions.BotoCoreError as exc:
            raise S3Error("uploading %s failed: %s" % (self.where(key), _describe(exc)))
        if stored.get("ChecksumSHA256") != checksum or stored.get("ContentLength") != len(data):
            raise S3Error("%s was stored but its checksum does not match what was sent (stored %s, sent %s, %s of "
                          "%d bytes): the object cannot be trusted; check the store"
                          % (self.where(key), stored.get("ChecksumSHA256"), checksum, stored.get("ContentLength"),
                             len(data)))
        out.update(changed=True, version_id=stored.get("VersionId") or put.get("VersionId"))
        out["retention"] = self._retention(stored, mode, days)
        return out

    def _retention(self, head, mode, days):
        if not head.get("ObjectLockMode"):
            if mode:
                raise S3Error("%s has no Object Lock retention although the bucket enforces it" % self.where())
            return None
        until = head.get("ObjectLockRetainUntilDate")
        return {"mode": head["ObjectLockMode"], "days": days,
                "retain_until": until.strftime("%Y-%m-%dT%H:%M:%SZ") if hasattr(until, "strftime") else until}


# --------------------------------------------------------------------------- evidence

def evidence_keys(prefix, rollback_id, archive_name, manifest_name="pack-manifest.json"):
    base = "%s%s%s/" % (prefix or "", EVIDENCE_PREFIX, rollback_id)
    return base + archive_name, base + manifest_name


def upload_evidence(store, rollback_id, archive_path, manifest_path, check_mode=False):
    """Upload the sealed archive and the pack manifest; {archive: put result, manifest: put result, changed}."""
    archive_key, manifest_key = evidence_keys(store.prefix, rollback_id, os.path.basename(archive_path))
    with open(archive_path, "rb") as handle:
        results = {"archive": store.put(archive_key, handle.read(), "application/gzip", check_mode=check_mode)}
    # The pack manifest carries its finalize time, so finalizing the same pack again rewrites it; the stored one
    # stays while the stored archive is this archive (a new archive always brings its manifest).
    kept = None if results["archive"]["changed"] else store.current(manifest_key)
    if kept is not None:
        results["manifest"] = kept
    else:
        with open(manifest_path, "rb") as handle:
            results["manifest"] = store.put(manifest_key, handle.read(), "application/json", check_mode=check_mode)
    results["changed"] = any(results[n]["changed"] for n in ("archive", "manifest"))
    return results


def receipt_version_id(version_id):
    """A version id as the receipt records it: as is, or ``hex:<hex of it>`` when it looks like a secret to the
    receipt's guard (AWS's random version ids do; SeaweedFS's hex ones do not), so the receipt is not refused."""
    if version_id is None or not secret_findings(version_id):
        return version_id
    return "hex:" + version_id.encode("utf-8").hex()


def storage_record(uploaded):
    """The receipt's evidence_storage field (nullable): where the archive and manifest are kept, and how long."""
    archive, manifest = uploaded["archive"], uploaded["manifest"]
    return {"archive_url": archive["url"], "archive_version_id": receipt_version_id(archive["version_id"]),
            "manifest_url": manifest["url"], "manifest_version_id": receipt_version_id(manifest["version_id"]),
            "retention_mode": (archive["retention"] or {}).get("mode"),
            "retain_until": (archive["retention"] or {}).get("retain_until")}


# --------------------------------------------------------------------------- ledger heads

def head_key(prefix, name, seq):
    return "%s%s%s/%0*d.json" % (prefix or "", HEADS_PREFIX, name, SEQ_DIGITS, SEQ_SPAN - 1 - seq)


def seq_of_key(key):
    stem = key.rsplit("/", 1)[-1][:-len(".json")] if key.endswith(".json") else ""
    if len(stem) != SEQ_DIGITS or not stem.isdigit():
        return None
    return SEQ_SPAN - 1 - int(stem)


class S3Heads(object):
    """Locked copies of the ledger's signed head, one object per append (see the module docstring)."""

    def __init__(self, store, name):
        self.store = store
        self.name = name
        self.prefix = "%s%s%s/" % (store.prefix, HEADS_PREFIX, name)
        self.last_put = None

    def where(self):
        return self.store.where(self.prefix)

    def put(self, head_bytes, seq):

        try:
            self.last_put = self.store.put(head_key(self.store.prefix, self.name, seq), head_bytes, "application/json")
            return self.last_put
        except S3Error as exc:
            raise LedgerError("the receipt is recorded at entry %d but its locked head could not be written to %s "
                              "(%s): fix the store; state=verify reports the heads lagging until the next append"
                              % (seq, self.where(), exc.msg))

    def latest(self, keys):
        """(checkpoint, key, problem): the newest locked head over all object versions (delete markers ignored)."""

        client = self.store.client
        try:
            listing = client.list_object_versions(Bucket=self.store.bucket, Prefix=self.prefix, MaxKeys=50)
        except (botocore_exceptions.ClientError, botocore_exceptions.BotoCoreError) as exc:
            return None, None, "cannot list the locked heads in %s: %s" % (self.where(), _describe(exc))
        versions = [v for v in listing.get("Versions", []) if seq_of_key(v["Key"]) is not None]
        if not versions:
            return None, None, None
        newest = min(v["Key"] for v in versions)  # the inverted seq: the smallest key is the newest head
        seen = None
        for version in (v for v in versions if v["Key"] == newest):
            try:
                body = client.get_object(Bucket=self.store.bucket, Key=newest, VersionId=version["VersionId"],
                                         ChecksumMode="ENABLED")["Body"].read()
            except (botocore_exceptions.ClientError, botocore_exceptions.BotoCoreError) as exc:
                return None, newest, "cannot read locked head %s: %s" % (self.store.where(newest), _describe(exc))
            checkpoint, problem = parse_checkpoint(body, keys, "locked head %s" % self.store.where(newest))
            if problem:
                return None, newest, problem
            if checkpoint["size"] != seq_of_key(newest):
                return None, newest, "locked head %s signs size %d, not the seq its key names" % (
                    self.store.where(newest), checkpoint["size"])
            if seen is not None and seen["head"] != checkpoint["head"]:
                return None, newest, "locked head %s has versions that disagree: a second head was written for " \
                                     "seq %d" % (self.store.where(newest), checkpoint["size"])
            seen = checkpoint
        return seen, newest, None

    def check_for_append(self, state, keys):
        """Refuse an append to a ledger behind (rolled back, truncated, deleted) or off the newest locked head."""

        checkpoint, key, problem = self.latest(keys)
        if problem:
            raise LedgerError("refusing to append: %s" % problem, state)
        if checkpoint is None:
            return
        if checkpoint["size"] > state["entries"]:
            raise LedgerError("refusing to append: the newest locked head %s is at seq %d but the ledger holds %d "
                              "entries: the ledger was rolled back, truncated or deleted"
                              % (self.store.where(key), checkpoint["size"], state["entries"]), state)
        if checkpoint["size"] == state["entries"] and checkpoint["head"] != state["last_entry_sha256"]:
            raise LedgerError("refusing to append: entry %d does not match the locked head %s: the ledger was "
                              "rewritten" % (checkpoint["size"], self.store.where(key)), state)

    def check(self, result, keys):
        """verify's check: the ledger against the newest locked head (as check_mirror does for a file mirror)."""

        if not result["valid"]:
            return result
        checkpoint, key, problem = self.latest(keys)
        if problem:
            return _bad(result, result["entries"] or None, None, problem)
        if checkpoint is None:
            result["s3_head"] = {"location": self.where(), "size": 0, "head": None, "lag": result["entries"]}
            if result["entries"]:
                return _bad(result, result["entries"], None,
                            "no locked head in %s although the ledger has %d entries: the heads were never written "
                            "there or the prefix is wrong (the next append writes one)"
                            % (self.where(), result["entries"]))
            return result
        size = checkpoint["size"]
        result["s3_head"] = {"location": self.store.where(key), "size": size, "head": checkpoint["head"],
                             "lag": max(result["entries"] - size, 0)}
        if size > result["entries"]:
            return _bad(result, result["entries"] + 1, None,
                        "the newest locked head %s is at seq %d but the ledger holds %d entries: the ledger was "
                        "rolled back, truncated or deleted (entries %d..%d are gone)"
                        % (self.store.where(key), size, result["entries"], result["entries"] + 1, size))
        if result["digests"][size - 1][1] != checkpoint["head"]:
            return _bad(result, size, None, "entry %d does not match the locked head %s (head %s…, entry %s…): the "
                                            "ledger was rewritten" % (size, self.store.where(key),
                                                                      checkpoint["head"][:16],
                                                                      result["digests"][size - 1][1][:16]))
        if size < result["entries"]:
            result["message"] += "; the locked heads lag at seq %d (a head write was missed; the next append " \
                                 "writes one)" % size
        return result
