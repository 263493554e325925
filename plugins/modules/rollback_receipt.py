#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: governed.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: rollback_receipt
short_description: Record a signed rollback receipt in a hash-chained ledger, or verify a ledger
version_added: 0.1.0
author: governed.rollback maintainers (@governed)
description:
  - With O(state=present), builds the rollback receipt (every field of the KFM runbook's minimum receipt and of the
    AUREUS runbook's rollback manifests, plus the outcome, the approval decision, the emergency flag with its
    retroactive due time and the evidence archive digest), refuses it if any value looks like a secret, validates it
    against the collection's JSON Schema, signs it and appends it to the ledger.
  - The ledger is an append-only JSONL file. Each entry holds C(seq), C(prev) (the previous entry's hash), the
    sha256 of the RFC 8785 canonical receipt, the receipt, the DSSE signatures and its own C(entry_sha256).
    Appends take an exclusive lock and fsync; an append to a ledger that does not verify is refused.
  - After every append the file C(<ledger>.head) is rewritten with a signed checkpoint (entry count and last
    hash), so cutting entries off the tail is detected.
  - Each receipt is also written as an in-toto Statement v1 (predicate type
    C(https://governed.rollback/rollback-receipt/v1)) in a DSSE envelope signed with ed25519, to
    C(<ledger directory>/<rollback_id>.intoto.jsonl) unless O(envelope_path) says otherwise.
  - Unsigned receipts are written only with O(signing=optional) and no key; the receipt then says C(signed=false).
  - Idempotent per O(rollback_id), which is therefore worth passing explicitly. The same receipt again changes
    nothing and returns the recorded entry, even when a rerun recomputed its times (O(started_at), O(completed_at),
    the approval's evaluation and due times); a receipt that differs in anything else under a recorded
    O(rollback_id) is refused, naming the fields that differ.
  - With O(state=verify), checks the whole ledger (canonical form, each entry's own hash, the chain, the receipt
    digests, the schema, every signature against the public key, and the signed head) and names the first bad
    entry. An invalid ledger fails the task, still returning the verification fields.
  - Modules cannot call C(ansible.builtin.set_stats); this module returns RV(ansible_stats), which Ansible applies
    exactly like C(set_stats) does, so the summary becomes an AWX job artifact under C(governed_rollback_receipts).
    Roles may also pass RV(stats) to C(ansible.builtin.set_stats) themselves.
  - "Backends: the file ledger above (the default, for one machine), or a PostgreSQL database (O(ledger) a
    C(postgresql://) URL, or O(ledger_backend=postgresql) with the connection options) for jobs that run on several
    AWX execution nodes. The PostgreSQL ledger has the same entries as columns of the table O(ledger_table) and one
    signed head per append in C(<ledger_table>_head); an append is one transaction under a transaction-level advisory
    lock (seq, rollback_id, prev and entry_sha256 are UNIQUE), so concurrent jobs append one valid chain and a killed
    job leaves no gap or torn entry. O(state=verify) runs the same checks over the rows."
  - With O(s3_bucket), every append also writes the signed head to object storage as a new object under Object Lock
    retention (C(<s3_prefix>ledger-heads/<s3_heads_name>/)), and an append to a ledger behind or off the newest
    locked head is refused; O(state=verify) compares the ledger with the newest locked head (over all object
    versions, so a delete marker cannot hide one), which catches a ledger rolled back, truncated or deleted.
extends_documentation_fragment:
  - governed.rollback.attributes
  - governed.rollback.attributes.ACTIONGROUP_ROLLBACK
  - governed.rollback.postgres
  - governed.rollback.s3
attributes:
  check_mode:
    support: full
    details: Validates and signs the receipt and returns the entry it would append; writes nothing.
  diff_mode:
    support: full
    details: The diff shows the receipt being appended.
  idempotent:
    support: full
    details: Per O(rollback_id); a generated O(rollback_id) is new on every run.
options:
  state:
    description: V(present) records a receipt; V(verify) checks the ledger.
    type: str
    choices: [present, verify]
    default: present
  ledger:
    description:
      - Path of the ledger (JSONL), created with its directory on the first append; required with the file backend.
      - Or a C(postgresql://user@host:port/database) URL (optionally C(?table=<name>)) for the PostgreSQL backend.
        Give the password as O(login_password) or in E(GOVERNED_ROLLBACK_LEDGER_PGPASSWORD)/E(PGPASSWORD) rather
        than in the URL; a password in the URL is accepted, never logged, and masked in every returned location.
    type: path
  ledger_backend:
    description:
      - V(file) (the JSONL file) or V(postgresql). Defaults to V(postgresql) for a C(postgresql://) O(ledger), else
        V(file).
      - With V(postgresql) and no O(ledger), the connection comes from O(login_host), O(login_port), O(login_user),
        O(login_password) and O(db); each also falls back to E(GOVERNED_ROLLBACK_LEDGER_PGHOST),
        E(GOVERNED_ROLLBACK_LEDGER_PGPORT), E(GOVERNED_ROLLBACK_LEDGER_PGUSER),
        E(GOVERNED_ROLLBACK_LEDGER_PGPASSWORD), E(GOVERNED_ROLLBACK_LEDGER_PGDATABASE) before the C(PG*) variables,
        so the ledger's credential and a database rollback's credential can both be attached to one AWX job.
    type: str
    choices: [file, postgresql]
  ledger_table:
    description:
      - PostgreSQL backend, the ledger table (its heads are in C(<ledger_table>_head)). Defaults to the URL's
        C(table) parameter, else C(governed_rollback_ledger).
    type: str
  ledger_create:
    description:
      - PostgreSQL backend, create the tables (and their append-only triggers) when they do not exist. Needs the
        privilege to create tables, so run it once as the table owner; the jobs' role needs only C(INSERT) and
        C(SELECT) (see O(ledger_writer_role)). With it off, a missing table fails the task naming this option.
    type: bool
    default: false
  ledger_writer_role:
    description:
      - PostgreSQL backend with O(ledger_create=true), the role to grant C(SELECT, INSERT) on both tables (and
        nothing else), for the AWX jobs to connect as.
    type: str
  s3_heads_name:
    description:
      - The ledger's name under C(<s3_prefix>ledger-heads/) when O(s3_bucket) mirrors its heads. Defaults to
        O(ledger_table) for PostgreSQL and to the ledger file's name for the file backend.
    type: str
  rollback_id:
    description:
      - Receipt identifier. Defaults to C(rollback-YYYYmmdd-HHMMSS-xxxxxx), UTC now and a random hex suffix, so
        two rollbacks started in the same second never share one.
    type: str
  rollback_type:
    description: Kind of rollback. Defaults to the approval decision's.
    type: str
    choices: [deployment, configuration, database, policy, state, gitops]
  run_type:
    description: Run type, for example C(ops.api.rollback). Defaults to C(ops.<rollback_type>.rollback).
    type: str
  outcome:
    description: How the rollback ended. Required with O(state=present).
    type: str
    choices: [succeeded, failed, denied]
  incident_id:
    description: Incident or ticket reference.
    type: str
  requested_by:
    description: Who asked for the rollback. Defaults to the approval decision's requester.
    type: str
  approved_by:
    description:
      - Approvers, as names or dicts with C(name) and C(roles). Defaults to the approval decision's approvers.
    type: list
    elements: raw
  approver:
    description: The AUREUS manifest's approver field. Defaults to the approvers' names joined by commas.
    type: str
  started_at:
    description: When the rollback started (UTC, C(YYYY-MM-DDTHH:MM:SSZ)). Defaults to the approval's evaluation time.
    type: str
  completed_at:
    description: When it ended (UTC). Defaults to now; also recorded as the manifest's C(timestamp).
    type: str
  environment:
    description: Environment, for example C(prod) or C(sandbox). Required for a valid receipt.
    type: str
  reason:
    description: Why the rollback was done (policy-safe text). Required for a valid receipt.
    type: str
  current_ref:
    description:
      - What was running before, as a digest (C(sha256:<hex>), C(image@sha256:<hex>)) or a git commit SHA.
      - Required when O(outcome=succeeded).
    type: str
  rollback_target_ref:
    description: What was rolled back to, in the same forms as O(current_ref). Required when O(outcome=succeeded).
    type: str
  changed_surfaces:
    description: Surfaces touched, for example C(api), C(config), C(policy). Defaults from the rollback type.
    type: list
    elements: str
  verification:
    description:
      - Verification results. Keys C(health), C(policy_invariants), C(contract_smoke) (KFM) and C(health_check),
        C(smoke_tests), C(user_validation) (AUREUS) default to C(not_run); more keys may be added.
      - Values are C(pass), C(fail), C(passed), C(failed), C(pending), C(inconclusive), C(skipped), C(not_run) or C(not_required);
        booleans become C(pass)/C(fail).
    type: dict
  notes:
    description: Policy-safe summary.
    type: str
  component:
    description: Component rolled back, for example C(frontend), C(configuration), C(database), C(policy-engine).
    type: str
  from_version:
    description: Version rolled back from.
    type: str
  to_version:
    description: Version rolled back to.
    type: str
  config_type:
    description: Configuration rollbacks, for example C(ConfigMap).
    type: str
  changed_keys:
    description: Configuration rollbacks, the keys that changed (names only, never values).
    type: list
    elements: str
  migration_reverted:
    description: Database rollbacks, the migration that was reverted.
    type: str
  backup_location:
    description: Database rollbacks, where the pre-rollback backup is.
    type: str
  data_loss:
    description: Database rollbacks, data loss assessment, for example C(none).
    type: str
  downtime:
    description: Database rollbacks, downtime, for example C(5 minutes).
    type: str
  dba_approval:
    description: Database rollbacks, the DBA who approved. Defaults to the approval decision's C(dba).
    type: str
  policy_name:
    description: Policy rollbacks, the policy rolled back.
    type: str
  security_review:
    description: Policy rollbacks, the security review result. Defaults to C(approved) when the security role approved.
    type: str
  affected_users:
    description: Policy rollbacks, number of affected users.
    type: int
  snapshot_id:
    description: State rollbacks, the snapshot restored.
    type: str
  pull_request_url:
    description: GitOps rollbacks, the URL of the rollback's pull request.
    type: str
  pull_request_number:
    description: GitOps rollbacks, the number of the rollback's pull request.
    type: int
  merge_sha:
    description: GitOps rollbacks, the merge commit of the rollback's pull request.
    type: str
  freeze:
    description: GitOps rollbacks, the deploy freeze record (who, why, until, incident, at, and whether it is still in
      place).
    type: dict
  failure:
    description:
      - For O(outcome=failed), a dict with C(task) and C(message) (for example from C(ansible_failed_task.name) and
        C(ansible_failed_result.msg)). Secret-looking parts of C(message) are masked, and the receipt's
        C(redaction) says so.
    type: dict
  details:
    description: Free-form extra facts (names, counts, digests; never values of secrets).
    type: dict
  verification_details:
    description:
      - The values behind O(verification) as M(governed.rollback.rollback_verify) returns them
        (RV(governed.rollback.rollback_verify#module:verification_details)) - C(metrics) (name, query, result,
        baseline, value, measurements, condition), C(contracts) (name, url, status, result, failed),
        C(policy_invariants) (endpoint, result, decision_id) and C(logs) (result, errors_before, errors_after).
    type: dict
  receipt_fields:
    description:
      - The type's receipt fields as an action module returns them (RV(governed.rollback.rollout_undo#module:receipt_fields)
        and the like, see C(docs/plan-contract.md)), so a role passes them through without knowing the type.
      - Keys are names of this module's receipt options (for example C(component), C(current_ref), C(from_version),
        C(changed_keys), C(migration_reverted), C(snapshot_id), C(details)). An option given explicitly wins over the
        same key here; C(details) are merged, explicit keys winning. An unknown key is refused.
    type: dict
  approval:
    description:
      - The registered result of M(governed.rollback.rollback_approval), or its C(decision). A failed approval
        without a decision is recorded as a denial that could not be evaluated.
    type: dict
  evidence:
    description:
      - The evidence pack, a dict with C(archive), C(archive_sha256), C(manifest) and C(manifest_sha256)
        (C(archive_path), C(manifest_path), C(evidence_manifest) are accepted too).
      - C(archive_sha256) is required when O(outcome=succeeded).
      - When it carries C(evidence_storage) (M(governed.rollback.evidence_capture) with O(s3_bucket), directly or
        inside C(evidence_manifest)), the receipt records it in its optional C(evidence_storage) field - the archive's
        and manifest's object URLs and version ids, the retention mode and the retain-until date.
    type: dict
  signing:
    description:
      - V(required) refuses to write without a signing key. V(optional) writes an unsigned receipt when no key is
        given, and the receipt records C(signing.signed=false).
    type: str
    choices: [required, optional]
    default: required
  signing_key:
    description:
      - The ed25519 private key, unencrypted PKCS#8 PEM content (C(openssl genpkey -algorithm ed25519)).
      - Read from E(GOVERNED_ROLLBACK_SIGNING_KEY) when not given, which is how an AWX custom credential injects it.
      - Takes precedence over O(signing_key_path).
    type: str
  signing_key_path:
    description:
      - Path of the ed25519 private key PEM file. Read from E(GOVERNED_ROLLBACK_SIGNING_KEY_FILE) when not given.
      - Refused when it is a symlink or its mode lets group or others read or write it (C(chmod 600) it).
    type: path
  public_key:
    description:
      - An ed25519 public key (PEM, or a securesystemslib key dict as JSON) that signatures are checked against.
      - With O(state=verify), required unless O(public_key_path) or a signing key is given, or O(allow_unsigned=true).
      - With O(state=present), an extra trusted key for existing entries (for example after a key rotation).
    type: str
  public_key_path:
    description: Path of a public key file, in the forms O(public_key) accepts.
    type: path
  envelope_path:
    description:
      - Where to write the receipt's DSSE envelope. Defaults to C(<ledger directory>/<rollback_id>.intoto.jsonl).
      - The PostgreSQL ledger keeps the signatures in its rows and writes an envelope file only where this option
        says.
    type: path
  allow_unsigned:
    description:
      - With O(state=verify) and no key at all, check only canonical form, hashes, chain, schema and head size,
        without signatures. The result then says RV(signatures_checked=false).
    type: bool
    default: false
  head_mirror:
    description:
      - A second copy of the signed head kept in another location (another volume, a WORM bucket mount).
      - With O(state=present), every append also writes the signed head there (atomically), and an append to a
        ledger behind its mirror (truncated or rolled back) or off it (rewritten) is refused.
      - With O(state=verify), the ledger must match the mirror, and a mirror ahead of the ledger means the ledger
        was truncated or rolled back. A missing mirror beside a non-empty ledger is invalid.
    type: path
  witnesses:
    description:
      - With O(state=verify), ledger positions seen elsewhere, for example the AWX job artifacts of earlier runs
        (C(ledger_seq) and C(receipt_sha256) from C(governed_rollback) or C(governed_rollback_receipts)).
      - Each item is C({seq, sha256}), where C(sha256) is the RECEIPT digest (C(receipt_sha256)); C(entry_sha256)
        instead pins the ledger entry's own hash. C(ledger_seq) is accepted for C(seq); C(rollback_id) and C(name)
        are optional. The artifacts dicts themselves are accepted too; a run that wrote no receipt (C(ledger_seq=-1))
        is skipped.
      - The ledger is invalid when it lacks a witnessed entry (truncated, or an older ledger and head put back) or
        contradicts one (rewritten); the message names the witness.
    type: list
    elements: dict
  witnesses_path:
    description: A file of witnesses, in the forms O(witnesses) takes, as one JSON document or JSONL (one per line).
    type: path
  check_envelopes:
    description:
      - With O(state=verify), cross-check every receipt envelope (C(*.intoto.jsonl)) in the ledger's directory against
        the ledger. An envelope whose receipt has no entry is an erased receipt and makes the ledger invalid, as does
        an envelope that contradicts its entry or does not verify. Keep other ledgers' envelopes out of the directory.
      - File ledger only (the PostgreSQL ledger has no directory).
    type: bool
    default: true
  append_check:
    description:
      - How much of the ledger an append verifies first. V(tail) costs the same at any ledger size (constant time) - the signed
        head's signature, the tail entry it signs (canonical form, hashes, schema, signature), the head mirror - and
        relies on O(state=verify) (for example C(playbooks/verify-receipts.yml) on a schedule) for the entries before
        the tail. V(full) verifies the whole ledger before every append (linear in its entries).
      - Either way an append never follows a symlink and the O(rollback_id) lookup is a byte search, not a parse.
    type: str
    choices: [tail, full]
    default: tail
notes:
  - "Receipt limits: free text (O(reason), O(notes), O(approver), O(backup_location), O(data_loss), failure task and
    message) 1 to 4096 characters; names and versions (O(incident_id), O(environment), O(component),
    O(from_version), O(to_version), O(requested_by), approver names and roles, ...) 1 to 256; O(rollback_id)
    C(^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$); refs are C(sha256:<64 hex>), C(<image>@sha256:<64 hex>) or a git SHA (40
    or 64 hex). Image tags with build ids (C(1.4.2-b7f3c9a1e2d4)) belong in O(from_version)/O(to_version) or
    O(details)."
  - "The secret guard (rules C(receipt-secret-guard/v1)) refuses a receipt when any key is named like a secret
    (C(password), C(passwd), C(passphrase), C(secret), C(token), C(api_key), C(private_key), C(credentials)) and has a
    value, or any value matches the collection's redaction patterns (private key blocks, C(Authorization) headers,
    JWTs, provider keys and tokens, passwords in URLs or in C(key=value)/C(key: value) assignments), or holds a
    high-entropy run: 20 or more characters of C([A-Za-z0-9+/=_-]) mixing upper case, lower case and digits that
    switch character class at least every other character with a Shannon entropy of 4 bits or more. Hex runs
    (digests, git SHAs, key ids) never count, nor runs made only of hex pieces and plain words joined by C(-) or C(_)
    (C(b7f3c9a1e2d4-Linux-x86_64)). The error names the field and the rule, never the value."
  - "A receipt must agree with its approval decision, or it is refused and nothing is written: O(outcome=succeeded)
    or V(failed) needs an approved decision, V(denied) a denial; O(requested_by) is the decision's requester
    (compared after NFKC and case folding); the decision's rule is one of the rollback type's approval rows;
    O(approved_by) and O(approver) list exactly whom the decision counted, with no extra roles; an emergency decision
    keeps C(approval_path=emergency_override), its retroactive approval due time and C(post_incident_review=required),
    and the receipt's C(emergency) matches it."
  - The signing key file (O(signing_key_path)) is refused when it is a symlink or readable by group or others (run
    C(chmod 600) on it). The ledger, its head, the head mirror and the envelopes are never opened through a symlink.
  - Nothing secret may go into a receipt. Values that look like secrets (private keys, tokens, passwords in
    assignments or URLs, high-entropy strings) make the module refuse the receipt; the error names the fields and
    never the values, and the invocation echoed back has them masked.
  - The ledger is the record; keep the C(.head) file with it, and ship both to WORM storage.
seealso:
  - module: governed.rollback.rollback_approval
  - name: in-toto Statement v1
    description: The statement layer the receipt envelope uses.
    link: https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md
  - name: RFC 8785 JSON Canonicalization Scheme
    description: The serialization hashed and signed.
    link: https://www.rfc-editor.org/rfc/rfc8785
"""

EXAMPLES = r"""
- name: Record the receipt of a deployment rollback (always, also on failure)
  governed.rollback.rollback_receipt:
    ledger: "{{ receipt_ledger }}"
    rollback_id: "{{ rollback_id }}"
    outcome: "{{ 'succeeded' if rollback_ok else 'failed' }}"
    run_type: ops.deployment.rollback
    incident_id: INC-12345
    environment: sandbox
    reason: Breaking UI changes affecting user workflows
    component: frontend
    from_version: v0.1.2
    to_version: v0.1.1
    current_ref: "sha256:{{ before_template_sha256 }}"
    rollback_target_ref: "sha256:{{ after_template_sha256 }}"
    started_at: "{{ started_at }}"
    verification:
      health_check: passed
      smoke_tests: passed
      user_validation: pending
    approval: "{{ approval }}"
    evidence: "{{ evidence_after }}"
    signing_key_path: /run/secrets/receipt-signing.pem
  register: receipt

- name: Publish the receipt summary as an AWX artifact yourself (the module already returns ansible_stats)
  ansible.builtin.set_stats:
    data:
      governed_rollback_receipts: "{{ receipt.stats }}"

- name: Record an unsigned receipt in a drill without a key (the receipt says it is unsigned)
  governed.rollback.rollback_receipt:
    ledger: /tmp/drill/ledger.jsonl
    rollback_id: drill-20240115-103045
    outcome: denied
    approval: "{{ approval }}"
    environment: sandbox
    component: configuration
    reason: Drill of a denied configuration rollback
    signing: optional

- name: Verify the whole ledger
  governed.rollback.rollback_receipt:
    state: verify
    ledger: "{{ receipt_ledger }}"
    public_key_path: /etc/governed-rollback/receipt-signing.pub
  register: ledger_check

- name: Verify against a head mirror and the positions earlier AWX jobs published (ledger_seq + receipt_sha256)
  governed.rollback.rollback_receipt:
    state: verify
    ledger: "{{ receipt_ledger }}"
    public_key_path: /etc/governed-rollback/receipt-signing.pub
    head_mirror: /mnt/worm/governed-rollback/ledger.jsonl.head
    witnesses:
      - {seq: 41, sha256: 3f5b0c1e9d4a7b2c6e8f1a0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b, name: "AWX job 5123"}
    witnesses_path: /var/lib/governed-rollback/witnesses.jsonl

- name: Record a receipt in the fleet's PostgreSQL ledger, mirroring each head to a locked S3 object
  governed.rollback.rollback_receipt:
    ledger_backend: postgresql
    # login_host/login_user/login_password/db from GOVERNED_ROLLBACK_LEDGER_PG* (an AWX credential injects them)
    outcome: succeeded
    approval: "{{ approval }}"
    evidence: "{{ evidence }}"
    environment: prod
    reason: Error rate above 5% after deploy
    current_ref: "sha256:2222222222222222222222222222222222222222222222222222222222222222"
    rollback_target_ref: "sha256:1111111111111111111111111111111111111111111111111111111111111111"
    s3_bucket: governed-rollback-evidence
    s3_object_lock_mode: COMPLIANCE
    s3_object_lock_days: 2555

- name: Verify the PostgreSQL ledger against the newest locked head
  governed.rollback.rollback_receipt:
    state: verify
    ledger: postgresql://ledger_reader@db.example.internal:5432/governed?table=governed_rollback_ledger
    public_key_path: /etc/governed-rollback/signing.pub
    s3_bucket: governed-rollback-evidence
"""

RETURN = r"""
rollback_id:
  description: The receipt's identifier.
  returned: state=present
  type: str
  sample: rollback-20240115-103045
receipt:
  description: The receipt as written (or as it would be written in check mode).
  returned: state=present
  type: dict
receipt_sha256:
  description: sha256 of the RFC 8785 canonical receipt.
  returned: state=present
  type: str
  sample: 3f5b0c1e9d4a7b2c6e8f1a0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b
ledger_seq:
  description: The ledger entry's sequence number (1-based, also its line number).
  returned: state=present
  type: int
  sample: 4
entry_sha256:
  description: Hash of the ledger entry; the next entry's C(prev).
  returned: state=present
  type: str
signed:
  description: Whether the receipt carries a signature.
  returned: state=present
  type: bool
  sample: true
keyid:
  description: securesystemslib key id of the signing key (null when unsigned).
  returned: state=present
  type: str
envelope:
  description: Path of the C(.intoto.jsonl) file holding the receipt's DSSE envelope (null when unsigned).
  returned: state=present
  type: str
  sample: /var/lib/governed-rollback/rollback-20240115-103045.intoto.jsonl
head:
  description: Path of the signed head (checkpoint) file; for PostgreSQL, the ledger's location and head table.
  returned: always
  type: str
  sample: /var/lib/governed-rollback/ledger.jsonl.head
ledger:
  description: The ledger's location (a PostgreSQL URL never shows a password).
  returned: always
  type: str
  sample: postgresql://ledger_writer@db.example.internal:5432/governed?table=governed_rollback_ledger
ledger_backend:
  description: The backend used, V(file) or V(postgresql).
  returned: always
  type: str
s3_head:
  description:
    - With O(s3_bucket), the newest locked head in object storage (C(location), C(size), C(head), C(lag) behind the
      ledger), as O(state=verify) compared it.
  returned: state=verify with s3_bucket
  type: dict
s3_head_object:
  description:
    - With O(s3_bucket), the locked head object this append wrote (C(url), C(key), C(version_id), C(retention)).
  returned: state=present with s3_bucket, when an entry was appended
  type: dict
stats:
  description:
    - The receipt summary keyed by rollback_id, ready for C(ansible.builtin.set_stats) under
      C(governed_rollback_receipts) (rollback_id, outcome, rollback_type, incident_id, requested_by, approver,
      emergency, retroactive_approval_due, evidence_archive_sha256, receipt_sha256, ledger_seq, signed).
  returned: state=present
  type: dict
ansible_stats:
  description:
    - What C(set_stats) would return; Ansible records it as custom stats (AWX job artifacts), aggregated under
      C(governed_rollback_receipts) keyed by rollback_id.
  returned: state=present and not check mode
  type: dict
valid:
  description: Whether the whole ledger verifies.
  returned: state=verify
  type: bool
entries:
  description: Number of entries that verified (all of them when RV(valid)).
  returned: state=verify
  type: int
first_bad_entry:
  description: Sequence number (line) of the first entry that does not verify, or that is missing after truncation.
  returned: state=verify
  type: int
bad_rollback_id:
  description: rollback_id of the first bad entry, when it can still be read.
  returned: state=verify
  type: str
message:
  description: What was found, naming the entry and the problem.
  returned: state=verify
  type: str
  sample: "entry 3 (rollback-20240115-103045) does not match its own entry_sha256: it was altered"
unsigned_entries:
  description: Sequence numbers of entries recorded without a signature (signing was optional).
  returned: state=verify
  type: list
  elements: int
signatures_checked:
  description: Whether signatures were checked against a key.
  returned: state=verify
  type: bool
checkpoint:
  description: The signed head's content (size, head, updated_at, signed, keyids).
  returned: state=verify
  type: dict
witnesses_checked:
  description: Number of witnesses the ledger agreed with.
  returned: state=verify
  type: int
mirror:
  description: The head mirror's position (path, size, head, lag behind the ledger), when O(head_mirror) was given.
  returned: state=verify
  type: dict
envelopes_checked:
  description: Number of receipt envelopes beside the ledger that matched their entry.
  returned: state=verify
  type: int
"""

import copy
import json
import os
import traceback

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

from ansible_collections.governed.rollback.plugins.module_utils import _argspec, _ledger, _ledger_pg, _pg, _s3

from ansible_collections.governed.rollback.plugins.module_utils._receipt import (
    IMPORT_ERRORS,
    LedgerError,
    ReceiptError,
    build_receipt,
    load_public_key,
    load_signer,
    mask_paths,
    mask_secret_text,
    parse_witness_text,
    read_private_key_file,
    receipt_summary,
)
from ansible_collections.governed.rollback.plugins.module_utils._receipt_schema import OUTCOMES, ROLLBACK_TYPES

RECEIPT_FIELDS = (
    "rollback_id", "rollback_type", "run_type", "outcome", "incident_id", "requested_by", "approved_by", "approver",
    "started_at", "completed_at", "environment", "reason", "current_ref", "rollback_target_ref", "changed_surfaces",
    "verification", "notes", "component", "from_version", "to_version", "config_type", "changed_keys",
    "migration_reverted", "backup_location", "data_loss", "downtime", "dba_approval", "policy_name",
    "security_review", "affected_users", "snapshot_id", "pull_request_url", "pull_request_number", "merge_sha",
    "freeze", "failure", "details", "verification_details",
)
STATS_KEY = "governed_rollback_receipts"
VERIFY_RETURN = ("valid", "entries", "first_bad_entry", "bad_rollback_id", "message", "unsigned_entries",
                 "signatures_checked", "checkpoint", "witnesses_checked", "mirror", "envelopes_checked", "s3_head")


def argument_spec():
    spec = dict(
        state=dict(type="str", choices=["present", "verify"], default="present"),
        ledger=dict(type="path"),
        ledger_backend=dict(type="str", choices=list(_ledger.BACKENDS)),
        ledger_table=dict(type="str"),
        ledger_create=dict(type="bool", default=False),
        ledger_writer_role=dict(type="str"),
        s3_heads_name=dict(type="str"),
        rollback_type=dict(type="str", choices=list(ROLLBACK_TYPES)),
        outcome=dict(type="str", choices=list(OUTCOMES)),
        approved_by=dict(type="list", elements="raw"),
        changed_surfaces=dict(type="list", elements="str"),
        changed_keys=dict(type="list", elements="str", no_log=False),
        verification=dict(type="dict"),
        affected_users=dict(type="int"),
        pull_request_number=dict(type="int"),
        freeze=dict(type="dict"),
        failure=dict(type="dict"),
        details=dict(type="dict"),
        verification_details=dict(type="dict"),
        receipt_fields=dict(type="dict"),
        approval=dict(type="dict"),
        evidence=dict(type="dict"),
        signing=dict(type="str", choices=["required", "optional"], default="required"),
        signing_key=dict(type="str", no_log=True, fallback=(env_fallback, ["GOVERNED_ROLLBACK_SIGNING_KEY"])),
        signing_key_path=dict(type="path", no_log=False,
                              fallback=(env_fallback, ["GOVERNED_ROLLBACK_SIGNING_KEY_FILE"])),
        public_key=dict(type="str", no_log=False),
        public_key_path=dict(type="path", no_log=False),
        envelope_path=dict(type="path"),
        allow_unsigned=dict(type="bool", default=False),
        head_mirror=dict(type="path"),
        witnesses=dict(type="list", elements="dict"),
        witnesses_path=dict(type="path"),
        check_envelopes=dict(type="bool", default=True),
        append_check=dict(type="str", choices=["tail", "full"], default="tail"),
    )
    for name in RECEIPT_FIELDS:
        spec.setdefault(name, dict(type="str"))
    spec = _argspec.compose(spec, _argspec.PG_CONN, _argspec.S3)
    # The ledger's own PostgreSQL credential first, so a database rollback's PG* credential can sit beside it.
    spec["login_host"]["fallback"] = (env_fallback, ["GOVERNED_ROLLBACK_LEDGER_PGHOST", "PGHOST"])
    spec["login_port"]["fallback"] = (env_fallback, ["GOVERNED_ROLLBACK_LEDGER_PGPORT", "PGPORT"])
    spec["login_user"]["fallback"] = (env_fallback, ["GOVERNED_ROLLBACK_LEDGER_PGUSER", "PGUSER"])
    spec["login_password"]["fallback"] = (env_fallback, ["GOVERNED_ROLLBACK_LEDGER_PGPASSWORD", "PGPASSWORD"])
    spec["db"]["fallback"] = (env_fallback, ["GOVERNED_ROLLBACK_LEDGER_PGDATABASE", "PGDATABASE"])
    return spec


def open_backend(module):
    """(backend, s3 heads or None) from the options; a bad combination fails naming the options."""
    params = module.params
    ledger = params["ledger"]
    # A password in the URL is not an option Ansible knows to hide: register it so every output masks it.
    module.no_log_values.update(_ledger_pg.url_secrets(ledger))
    try:
        backend = _ledger.open_ledger(ledger, params["ledger_backend"], params, params["ledger_table"])
        heads = None
        if _s3.wanted(params):
            name = params["s3_heads_name"] or (backend.table if backend.kind == "postgresql"
                                               else os.path.basename(backend.path))
            heads = _s3.S3Heads(_s3.Store(params), name)
        if backend.kind == "postgresql" and params["ledger_create"] and not module.check_mode:
            conn = backend.connect()
            try:
                backend.create(conn, params["ledger_writer_role"])
                conn.commit()
            finally:
                conn.close()
    except (LedgerError, _pg.PgError, _s3.S3Error) as exc:
        module.fail_json(msg=getattr(exc, "msg", str(exc)), changed=False)
    except _pg.psycopg2.Error as exc:
        module.fail_json(msg="creating the ledger tables failed: %s" % str(exc).strip(), changed=False)
    return backend, heads


def _read(module, path, what):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (IOError, OSError) as exc:
        module.fail_json(msg="cannot read %s %s: %s" % (what, path, exc.strerror or exc))


def load_keys(module):
    """(signer or None, [trusted public keys]) from the module options."""
    params = module.params
    signer = None
    try:
        if params["signing_key"]:
            signer = load_signer(params["signing_key"])
        elif params["signing_key_path"]:
            signer = load_signer(read_private_key_file(params["signing_key_path"]))
        keys = []
        if params["public_key"]:
            keys.append(load_public_key(params["public_key"]))
        if params["public_key_path"]:
            keys.append(load_public_key(_read(module, params["public_key_path"], "public key")))
    except ReceiptError as exc:
        module.fail_json(msg=exc.msg)
    except (IOError, OSError) as exc:
        module.fail_json(msg="cannot read signing key %s: %s" % (params["signing_key_path"], exc.strerror or exc))
    return signer, keys


def safe_invocation(module, fields):
    """The module args echoed back with refused or masked fields hidden, so a secret is not printed either."""
    args = dict((k, v) for k, v in module.params.items()
                if k not in ("signing_key", "login_password", "s3_secret_key", "s3_session_token"))
    args["ledger"] = _ledger_pg.redact_url(args.get("ledger"))
    return {"module_args": mask_paths(args, fields)}


def run_verify(module, signer, keys, backend, heads):
    if signer is not None and all(k.keyid != signer.public_key.keyid for k in keys):
        keys.append(signer.public_key)
    if not keys and not module.params["allow_unsigned"]:
        module.fail_json(msg="verifying %s needs the public key: pass public_key or public_key_path (or the signing "
                             "key), or set allow_unsigned=true to check only the chain and digests"
                         % backend.location())
    params = module.params
    witnesses = list(params["witnesses"] or [])
    try:
        if params["witnesses_path"]:
            gathered = parse_witness_text(_read(module, params["witnesses_path"], "witnesses file"))
            witnesses.extend(gathered if isinstance(gathered, list) else [gathered])
        state = backend.verify(keys or None, witnesses=witnesses, head_mirror=params["head_mirror"],
                               envelopes=params["check_envelopes"], s3_heads=heads)
    except (LedgerError, _pg.PgError) as exc:
        module.fail_json(msg=exc.msg, valid=False, changed=False)
    except (IOError, OSError) as exc:
        module.fail_json(msg="cannot read ledger %s: %s" % (backend.location(), exc), exception=traceback.format_exc())
    result = dict((key, state.get(key)) for key in VERIFY_RETURN)
    if heads is None:
        result.pop("s3_head")
    result.update(changed=False, head=backend.head_location(), ledger=backend.location(), ledger_backend=backend.kind)
    if not state["valid"]:
        module.fail_json(msg=state["message"], **result)
    module.exit_json(**result)


def mask_failure_message(fields):
    """Mask secret-looking spans of a captured failure message (the one field that is masked, not refused)."""
    failure = fields.get("failure")
    if not isinstance(failure, dict):
        return []
    failure = dict((k, failure.get(k)) for k in ("task", "message"))
    masked = []
    if isinstance(failure.get("message"), str):
        failure["message"], rules = mask_secret_text(failure["message"])
        if rules:
            masked.append("failure.message")
    fields["failure"] = failure
    return masked


def merge_receipt_fields(module, fields, given):
    """The action module's receipt_fields under the explicit options (which win); details are merged."""
    given = copy.deepcopy(given or {})
    unknown = sorted(set(given) - set(RECEIPT_FIELDS))
    if unknown:
        module.fail_json(msg="receipt_fields has unknown field(s) %s; known fields: %s; nothing was written"
                         % (", ".join(unknown), ", ".join(RECEIPT_FIELDS)))
    details = given.pop("details", None)
    if isinstance(details, dict):
        fields["details"] = dict(details, **(fields.get("details") or {}))
    for name, value in given.items():
        if fields.get(name) is None:
            fields[name] = value
    return fields


def run_present(module, signer, keys, backend, heads):
    params = module.params
    if signer is None and params["signing"] == "required":
        module.fail_json(msg="signing is required but no key was given: set signing_key (or GOVERNED_ROLLBACK_SIGNING_KEY)"
                             " or signing_key_path (or GOVERNED_ROLLBACK_SIGNING_KEY_FILE), or set signing=optional "
                             "to record an unsigned receipt that says so; nothing was written")
    if not params["outcome"]:
        module.fail_json(msg="outcome is required with state=present (succeeded, failed or denied); nothing was written")
    fields = merge_receipt_fields(module, dict((name, copy.deepcopy(params[name])) for name in RECEIPT_FIELDS),
                                  params["receipt_fields"])
    masked = mask_failure_message(fields)
    try:
        receipt = build_receipt(fields, approval=params["approval"], evidence=params["evidence"],
                                signing_required=params["signing"] == "required",
                                keyid=signer.public_key.keyid if signer is not None else None,
                                masked_fields=masked)
        outcome = backend.append(receipt, signer=signer, trusted_keys=keys, check_mode=module.check_mode,
                                 envelope_path=params["envelope_path"], head_mirror=params["head_mirror"],
                                 verify=params["append_check"], s3_heads=heads)
    except ReceiptError as exc:
        module.fail_json(msg=exc.msg, fields=exc.fields,
                         invocation=safe_invocation(module, masked + (exc.fields if exc.secret else [])))
    except (LedgerError, _pg.PgError) as exc:
        module.fail_json(msg=exc.msg, first_bad_entry=getattr(exc, "result", {}).get("first_bad_entry"),
                         bad_rollback_id=getattr(exc, "result", {}).get("bad_rollback_id"),
                         invocation=safe_invocation(module, masked))
    except (IOError, OSError) as exc:
        module.fail_json(msg="cannot write ledger %s: %s" % (backend.location(), exc), exception=traceback.format_exc(),
                         invocation=safe_invocation(module, masked))

    receipt = outcome["receipt"]
    summary = receipt_summary(receipt, outcome["receipt_sha256"], outcome["ledger_seq"])
    result = dict(outcome, stats={receipt["rollback_id"]: summary}, invocation=safe_invocation(module, masked),
                  ledger=backend.location(), ledger_backend=backend.kind)
    if heads is not None and heads.last_put is not None:
        result["s3_head_object"] = heads.last_put
    if not module.check_mode:
        # Returned like set_stats' own result, so Ansible records it as custom stats (AWX artifacts).
        result["ansible_stats"] = {"data": {STATS_KEY: {receipt["rollback_id"]: summary}}, "per_host": False,
                                   "aggregate": True}
    if module._diff and outcome["changed"]:
        result["diff"] = {"before": "", "after": json.dumps(receipt, indent=2, sort_keys=True) + "\n",
                          "before_header": "%s (before)" % backend.location(),
                          "after_header": "%s entry %d" % (backend.location(), outcome["ledger_seq"])}
    module.exit_json(**result)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    for name in sorted(IMPORT_ERRORS):
        module.fail_json(msg=missing_required_lib(name), exception=IMPORT_ERRORS[name])
    if not _s3.HAS_BOTO3 and _s3.wanted(module.params):
        module.fail_json(msg=missing_required_lib("boto3"), exception=_s3.BOTO3_IMP_ERR)
    signer, keys = load_keys(module)
    backend, heads = open_backend(module)
    if module.params["state"] == "verify":
        run_verify(module, signer, keys, backend, heads)
    run_present(module, signer, keys, backend, heads)


if __name__ == "__main__":
    main()
