"""The deployment, configuration and policy playbooks on the sandbox's seeded incident, verified by measurement.

The sandbox's governed API (PEP) follows the live aureus world: aureus-frontend's release (v0.1.2 answers 5xx and
slowly, v0.1.0 slowly, v0.1.1 neither), aureus-config's evidence retention (below seven years every audit record
is non-compliant) and OPA's active bundle (v2.1 denies analysts' low-PII reads). Prometheus scrapes it every 2 s.
Each scenario measures its metric failing before the rollback (rollback_verify, the inventory's own spec) and the
playbook's receipt then carries it passing, with the values; a rollback to a release that is also slow fails its
verification with a failed receipt and failure evidence holding the raw answers.

The scenarios run in order on the seeded aureus namespace (one full `seed.sh --reset` first), so they change the
shared sandbox: the molecule drills and the incident reset put it back.
"""

import json
import os
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from tests.integration import _gitops as g
from tests.integration import _playbook as pb
from tests.sandbox_env import ROOT, reseed

SPECS = os.path.join(ROOT, "inventories", "sandbox", "group_vars", "all", "verify.yml")


def spec(kind):
    """The inventory's metric specs of one rollback type (their queries and conditions are plain text)."""
    with open(SPECS) as handle:
        specs = yaml.safe_load(handle)["rollback_verify_specs"]
    metrics = [s for s in specs if s["type"] == kind][0]["metrics"]
    return [dict(m, initial_delay="0s", count=1) for m in metrics]


class World:
    def __init__(self, env, workdir):
        self.env, self.workdir = env, workdir
        self.evidence_dir = os.path.join(str(workdir), "evidence")
        self.ledger = os.path.join(str(workdir), "ledger.jsonl")
        self.runs = 0

    def measure(self, kind):
        """The inventory's metrics of ``kind`` measured now (one measurement each): {name: (result, value)}."""
        self.runs += 1
        failed, result = pb.run_module(os.path.join(str(self.workdir), "measure-%d" % self.runs),
                                       "governed.rollback.rollback_verify",
                                       {"prometheus_url": self.env["SANDBOX_PROMETHEUS_URL"], "metrics": spec(kind),
                                        "fail_on_unverified": False})
        assert not failed, result
        return dict((m["name"], (m["result"], m["value"])) for m in result["verification_details"]["metrics"])

    def settle(self, metric, job="pep", timeout=60, **label):
        """Until Prometheus has seen ``metric`` of the PEP ``job`` unchanged for 10 s, with ``label`` (one
        ``name=value``, the live release's image or the policy revision) and no other value of that label: its 6 s
        rates then measure that state alone, not the transition into it (pep_release_info{image=...},
        pep_config_evidence_retention_days, ...)."""
        selector = '%s{job="%s"%s}' % (metric, job, "".join(',%s="%s"' % kv for kv in label.items()))
        query = 'count_over_time(%s[10s]) >= 4 unless on() changes(%s{job="%s"}[10s]) > 0' % (selector, metric, job)
        for name, value in label.items():  # and no sample of another value (the release before) in those 10 s
            query += ' unless on() count_over_time(%s{job="%s",%s!="%s"}[10s])' % (metric, job, name, value)
        deadline = time.time() + timeout
        while True:
            url = "%s/api/v1/query?%s" % (self.env["SANDBOX_PROMETHEUS_URL"], urllib.parse.urlencode({"query": query}))
            with urllib.request.urlopen(url, timeout=5) as answer:
                if json.loads(answer.read())["data"]["result"]:
                    return
            assert time.time() < deadline, "Prometheus never saw %s alone for 10 s" % selector
            time.sleep(1)

    def wait_for(self, kind, result, names=None, timeout=40):
        """Until every metric of ``kind`` (or those ``names``) is ``result`` (Prometheus sees the world's state)."""
        deadline = time.time() + timeout
        while True:
            measured = self.measure(kind)
            if all(r == result for name, (r, value) in measured.items() if names is None or name in names):
                return measured
            assert time.time() < deadline, "metrics of %s never became %s: %s" % (kind, result, measured)
            time.sleep(2)

    def run(self, playbook, **extravars):
        self.runs += 1
        variables = {"evidence_dir": self.evidence_dir, "receipt_ledger": self.ledger}
        variables.update(extravars)
        return pb.run_playbook(os.path.join(str(self.workdir), "runner-%d" % self.runs), variables,
                               playbook=playbook)

    def receipt(self, rollback_id):
        found = [e["receipt"] for e in pb.ledger_entries(self.ledger) if e["rollback_id"] == rollback_id]
        assert len(found) == 1, "expected one receipt for %s" % rollback_id
        return found[0]


@pytest.fixture(scope="module")
def world(sandbox_env, tmp_path_factory):
    reseed("--reset", env=dict(os.environ, **sandbox_env))
    return World(sandbox_env, tmp_path_factory.mktemp("verify-world"))


def _metrics(receipt):
    return dict((m["name"], m) for m in receipt["verification_details"]["metrics"])


def test_a_rollback_to_a_release_that_is_also_slow_fails_verification_with_failure_evidence(world):
    world.settle("pep_release_info", image="aureus/frontend:v0.1.2")  # the seeded incident's release
    before = world.wait_for("deployment", "fail")
    assert before["error_rate_5xx"][1] > 0.2 and before["latency_p95_seconds"][1] > 0.25, before
    run = world.run("playbooks/rollback-deploy.yml", target_rev=1, approvals=["eng-lead"],
                    rollback_id="rollback-verify-slow")
    assert run.status == "failed", run.explain()
    receipt = world.receipt("rollback-verify-slow")
    assert receipt["outcome"] == "failed"
    assert (receipt["verification"]["metrics_normal"], receipt["verification"]["health"]) == ("fail", "fail")
    metrics = _metrics(receipt)
    assert metrics["latency_p95_seconds"]["result"] == "fail" and metrics["latency_p95_seconds"]["value"] > 0.25
    assert "Verification failed" in receipt["failure"]["message"]
    raw = os.path.join(world.evidence_dir, "rollback-verify-slow", "failure", "verification")
    assert os.path.isdir(raw), os.listdir(os.path.join(world.evidence_dir, "rollback-verify-slow"))
    names = [os.path.join(d, f) for d, dirs, files in os.walk(raw) for f in files]
    with open([n for n in names if n.endswith(".json")][0]) as handle:
        assert json.load(handle)["metrics"][0]["measurements"][0]["answer"]["status"] == "success"


def test_the_deployment_rollback_brings_5xx_and_p95_back_with_the_values_in_the_receipt(world):
    world.settle("pep_release_info", image="aureus/frontend:v0.1.0")
    slow = world.wait_for("deployment", "fail", names=["latency_p95_seconds"])  # v0.1.0, the scenario before
    assert slow["error_rate_5xx"] == ("pass", 0.0)  # v0.1.0 answers no 5xx: a measured baseline of 0
    baseline_at = "%.3f" % time.time()
    started = time.monotonic()
    run = world.run("playbooks/rollback-deploy.yml", target_rev=2, approvals=["eng-lead"],
                    rollback_id="rollback-verify-deploy", verify_baseline_at=baseline_at)
    elapsed = time.monotonic() - started
    assert run.status == "successful", run.explain()
    receipt = world.receipt("rollback-verify-deploy")
    assert receipt["outcome"] == "succeeded"
    verification = receipt["verification"]
    assert all(verification[k] == "pass" for k in ("health", "metrics_normal", "policy_invariants", "contract_smoke",
                                                   "logs_clean")), verification
    metrics = _metrics(receipt)
    assert metrics["error_rate_5xx"]["result"] == "pass" and metrics["error_rate_5xx"]["value"] <= 0.01
    assert metrics["error_rate_5xx"]["baseline"] == 0
    assert metrics["latency_p95_seconds"]["value"] < 0.25 and len(metrics["latency_p95_seconds"]["measurements"]) == 3
    details = receipt["verification_details"]
    assert all(p["result"] == "pass" for p in details["policy_invariants"])
    assert all(p["decision_id"] for p in details["policy_invariants"][:-1])
    assert all(c["result"] == "pass" for c in details["contracts"])
    assert details["logs"]["result"] == "pass"
    assert all(result == "pass" for result, value in world.measure("deployment").values())
    print("deployment playbook with measured verification: %.1fs" % elapsed)


def test_the_config_rollback_makes_every_audit_record_compliant_again(world):
    world.settle("pep_config_evidence_retention_days")
    before = world.wait_for("configuration", "fail")
    assert before["noncompliant_audit_ratio"][1] == 1.0
    run = world.run("playbooks/rollback-config.yml", rollback_id="rollback-verify-config")
    assert run.status == "successful", run.explain()
    receipt = world.receipt("rollback-verify-config")
    assert receipt["verification"]["metrics_normal"] == "pass" and receipt["verification"]["health"] == "pass"
    metric = _metrics(receipt)["noncompliant_audit_ratio"]
    assert metric["result"] == "pass" and metric["value"] == 0


def test_the_policy_rollback_lets_analysts_routine_reads_through_again(world):
    world.settle("pep_policy_revision_info")
    before = world.wait_for("policy", "fail")
    assert before["analyst_low_pii_denial_ratio"][1] == 1.0
    run = world.run("playbooks/rollback-policy.yml", rollback_id="rollback-verify-policy")
    assert run.status == "successful", run.explain()
    receipt = world.receipt("rollback-verify-policy")
    assert receipt["verification"]["metrics_normal"] == "pass"
    assert receipt["verification"]["policy_invariants"] == "pass"
    assert all(p["result"] == "pass" for p in receipt["verification_details"]["policy_invariants"])
    metric = _metrics(receipt)["analyst_low_pii_denial_ratio"]
    assert metric["result"] == "pass" and metric["value"] < 0.05


def test_the_gitops_rollback_brings_the_api_back_with_the_values_in_the_receipt(world):
    g.reset()  # aureus-deploy's main at the bad release v1.5.0, no freeze
    try:
        world.settle("pep_release_info", job="pep-api", image=g.BAD)
        before = world.wait_for("gitops", "fail")
        assert before["error_rate_5xx"][1] > 0.2 and before["latency_p95_seconds"][1] > 0.25, before
        run = world.run("playbooks/rollback-gitops.yml", rollback_id="rollback-verify-gitops",
                        incident_id="INC-VERIFY-GITOPS", reason="aureus-api v1.5.0 answers 500", wait_timeout=120)
        assert run.status == "successful", run.explain()
        receipt = world.receipt("rollback-verify-gitops")
        assert receipt["outcome"] == "succeeded" and receipt["to_version"] == g.GOOD
        verification = receipt["verification"]
        assert all(verification[k] == "pass" for k in ("health", "metrics_normal", "policy_invariants",
                                                       "contract_smoke", "logs_clean")), verification
        metrics = _metrics(receipt)
        assert metrics["error_rate_5xx"]["result"] == "pass" and metrics["error_rate_5xx"]["value"] <= 0.01
        assert metrics["latency_p95_seconds"]["result"] == "pass" and metrics["latency_p95_seconds"]["value"] < 0.25
        assert all(c["result"] == "pass" for c in receipt["verification_details"]["contracts"])
        assert all(p["result"] == "pass" for p in receipt["verification_details"]["policy_invariants"])
    finally:
        g.reset()
