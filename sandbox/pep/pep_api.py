"""The sandbox's governed API (the PEP): the KFM/AUREUS API as the runbooks describe it, on loopback.

Every request asks the sandbox's OPA for a decision (package ``pep.authz``, put into OPA through its policy API at
start and again whenever OPA answers without it; it delegates PII access to the bundle's ``data.aureus.pii``), so
the policy rollback changes what it answers. Denials and missing data answer the same policy-safe error:
404 ``{"error_code": "NOT_FOUND", "message": ..., "audit_ref": ...}`` (a restricted dataset cannot be told from a
missing one). Answers carry ``policy_label``, ``audit_ref`` and, for data, ``dataset_version_id``.

Endpoints (JSON; the caller's role in ``X-User-Role`` (default analyst), an approval in ``X-Approval: granted``,
a request id in ``X-Request-Id`` (echoed and logged)):
  GET  /health, /api/health          200 while OPA answers, 503 ``POLICY_UNAVAILABLE`` otherwise
  GET  /api/v1/datasets/{id}         the dataset (id = name) or 404
  POST /api/query                    {"dataset": name, "q": text} -> rows, or 404
  POST /api/policy/evaluate          {"user": {...}, "query": {...}, "approval": {...}} -> the PII decision
Prometheus metrics on their own port (``--metrics-port``, GET /metrics), so the API surface has no endpoint that
answers without a decision:
  pep_http_requests_total{handler,method,code}, pep_http_request_duration_seconds (histogram, by handler),
  pep_policy_decisions_total{decision,role,pii_level}, pep_audit_records_total{compliant},
  pep_release_info{image}, pep_policy_revision_info{revision}, pep_config_evidence_retention_days.
One JSON line per request on stdout (``.sandbox/logs/pep.log``): ts, level (error for 5xx), request_id, method,
path, handler, status, duration_ms, decision_id, decision, policy_revision, audit_ref, release, synthetic.

Its behaviour follows the live state of what it stands for, read from the API server every second:
  release  the image of Deployment aureus/aureus-frontend. ``--bad-image`` (v0.1.2): every second data request
           answers 500 and every data request takes 0.35 s more. ``--slow-image`` (v0.1.0, the old query planner):
           0.35 s more, no errors. Any other image: fast, no errors.
  config   ConfigMap aureus/aureus-config: ``evidence.retention.days`` below the compliance floor (2555 days, seven
           years) makes every audit record non-compliant (pep_audit_records_total{compliant="false"}, a warn line).
  policy   whatever OPA's active bundle decides (v2.1 denies analysts' low-PII reads without approval, v2.0 allows).
A synthetic client inside the process sends a small fixed mix of requests (``--traffic-interval``) so the metrics
always have traffic. Test switches for the verification's own tests: ``--bypass-path PATH`` answers PATH without
asking OPA (an endpoint that bypasses evaluation); ``--leak-existence`` answers a restricted dataset 403 with a
message naming it (an existence leak).

    python3 sandbox/pep/pep_api.py --port P --metrics-port M --opa-url URL --kubeconfig FILE
"""

import argparse
import datetime
import http.server
import json
import re
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import yaml

PEP_POLICY = """package pep.authz

import rego.v1

# The PEP's decision for one request: health is public, non-PII data is public, PII data follows the bundle's
# pii-access policy (data.aureus.pii), evaluating a hypothetical returns no data and is allowed.
default allow := false

allow if input.action == "health"

allow if input.action == "evaluate"

allow if {
\tinput.action in {"read", "query"}
\tinput.resource.pii_level == "none"
}

allow if {
\tinput.action in {"read", "query"}
\tinput.resource.pii_level in {"low", "high"}
\tdata.aureus.pii.allow
}

default policy_label := "public"

policy_label := sprintf("pii:%s", [input.resource.pii_level]) if input.resource.pii_level in {"low", "high"}

default pii_decision := null

pii_decision := data.aureus.pii.decision

decision := {"allow": allow, "policy_label": policy_label, "pii": pii_decision}
"""

CATALOG = {  # the seeded aureus_metadata datasets: name -> (pii_level, owner, version)
    "credit_risk": ("high", "risk-team", 7),
    "loan_book": ("low", "lending", 12),
    "test_dataset": ("none", "qa", 1),
    "customer_profiles": ("high", "crm", 4),
    "branch_metrics": ("none", "ops", 30),
}
RETENTION_FLOOR_DAYS = 2555
EXTRA_LATENCY = 0.35
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
NOT_FOUND_MESSAGE = "The requested resource was not found or you are not permitted to see it."
SYNTHETIC = [  # (method, path, role, body)
    ("GET", "/api/v1/datasets/loan_book", "analyst", None),
    ("POST", "/api/query", "analyst", {"dataset": "loan_book", "q": "select count(*)"}),
    ("GET", "/api/v1/datasets/branch_metrics", "analyst", None),
    ("GET", "/api/v1/datasets/credit_risk", "analyst", None),
    ("POST", "/api/query", "data_owner", {"dataset": "customer_profiles", "q": "select count(*)"}),
    ("GET", "/api/health", "analyst", None),
]


def now_stamp():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_audit_ref():
    return "aud_" + uuid.uuid4().hex[:20]


class Metrics(object):
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = {}
        self.hist = {}
        self.decisions = {}
        self.audit = {"true": 0, "false": 0}

    def observe(self, handler, method, code, seconds):
        with self.lock:
            key = (handler, method, str(code))
            self.requests[key] = self.requests.get(key, 0) + 1
            counts, total = self.hist.get(handler, ([0] * len(BUCKETS), [0.0, 0]))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            total[0] += seconds
            total[1] += 1
            self.hist[handler] = (counts, total)

    def decision(self, decision, role, pii_level):
        with self.lock:
            key = (decision, role, pii_level)
            self.decisions[key] = self.decisions.get(key, 0) + 1

    def audit_record(self, compliant):
        with self.lock:
            self.audit["true" if compliant else "false"] += 1

    def render(self, state):
        lines = []
        with self.lock:
            lines += ["# HELP pep_http_requests_total Requests answered by the governed API.",
                      "# TYPE pep_http_requests_total counter"]
            for (handler, method, code), value in sorted(self.requests.items()):
                lines.append('pep_http_requests_total{handler="%s",method="%s",code="%s"} %d'
                             % (handler, method, code, value))
            lines += ["# HELP pep_http_request_duration_seconds Time to answer a request.",
                      "# TYPE pep_http_request_duration_seconds histogram"]
            for handler, (counts, total) in sorted(self.hist.items()):
                for bound, count in zip(BUCKETS, counts):
                    lines.append('pep_http_request_duration_seconds_bucket{handler="%s",le="%s"} %d'
                                 % (handler, bound, count))
                lines.append('pep_http_request_duration_seconds_bucket{handler="%s",le="+Inf"} %d' % (handler, total[1]))
                lines.append('pep_http_request_duration_seconds_sum{handler="%s"} %.6f' % (handler, total[0]))
                lines.append('pep_http_request_duration_seconds_count{handler="%s"} %d' % (handler, total[1]))
            lines += ["# HELP pep_policy_decisions_total Decisions asked of OPA, by result.",
                      "# TYPE pep_policy_decisions_total counter"]
            for (decision, role, pii), value in sorted(self.decisions.items()):
                lines.append('pep_policy_decisions_total{decision="%s",role="%s",pii_level="%s"} %d'
                             % (decision, role, pii, value))
            lines += ["# HELP pep_audit_records_total Audit records written, by retention compliance.",
                      "# TYPE pep_audit_records_total counter"]
            for compliant in ("true", "false"):
                lines.append('pep_audit_records_total{compliant="%s"} %d' % (compliant, self.audit[compliant]))
        lines += ["# TYPE pep_release_info gauge", 'pep_release_info{image="%s"} 1' % state.image,
                  "# TYPE pep_policy_revision_info gauge",
                  'pep_policy_revision_info{revision="%s"} 1' % (state.revision or ""),
                  "# TYPE pep_config_evidence_retention_days gauge",
                  "pep_config_evidence_retention_days %s" % (state.retention_days if state.retention_days is not None
                                                             else "NaN")]
        return ("\n".join(lines) + "\n").encode("utf-8")


class LiveState(object):
    """The live release and config, read from the API server every second; the policy revision from OPA."""

    def __init__(self, args):
        self.args = args
        self.image = ""
        self.retention_days = None
        self.revision = ""
        self.ready = threading.Event()
        self._api = None

    def _client(self):
        if self._api is None:
            with open(self.args.kubeconfig) as handle:
                config = yaml.safe_load(handle)
            cluster = config["clusters"][0]["cluster"]
            user = config["users"][0]["user"]
            context = ssl.create_default_context(cafile=cluster["certificate-authority"])
            self._api = (cluster["server"], user["token"], context)
        return self._api

    def _get(self, path):
        server, token, context = self._client()
        request = urllib.request.Request(server + path, headers={"Authorization": "Bearer " + token})
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return json.loads(response.read())

    def refresh(self):
        ns = self.args.namespace
        try:
            deployment = self._get("/apis/apps/v1/namespaces/%s/deployments/%s" % (ns, self.args.deployment))
            self.image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError) as exc:
            if getattr(exc, "code", None) == 404:
                self.image = ""
        try:
            data = self._get("/api/v1/namespaces/%s/configmaps/%s" % (ns, self.args.config_map)).get("data") or {}
            self.retention_days = int(data.get("evidence.retention.days", "0"))
        except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
            if getattr(exc, "code", None) == 404:
                self.retention_days = None
        self.ready.set()

    def loop(self):
        while True:
            self.refresh()
            time.sleep(1.0)

    @property
    def bad(self):
        return self.image in self.args.bad_image

    @property
    def slow(self):
        return self.image in self.args.bad_image or self.image in self.args.slow_image


class Opa(object):
    def __init__(self, url):
        self.url = url.rstrip("/")

    def _call(self, method, path, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=3) as response:
            return json.loads(response.read() or b"{}")

    def install(self):
        self._call("PUT", "/v1/policies/governed-pep", PEP_POLICY.encode("utf-8"), "text/plain")

    def decide(self, data):
        """(decision dict, bundle revision); the policy is put again when OPA does not have it (restarted)."""
        for attempt in (1, 2):
            answer = self._call("POST", "/v1/data/pep/authz/decision?provenance=true", {"input": data})
            if "result" in answer:
                bundles = (answer.get("provenance") or {}).get("bundles") or {}
                revision = ",".join(sorted(b.get("revision", "") for b in bundles.values()))
                return answer["result"], revision
            if attempt == 1:
                self.install()
        raise RuntimeError("OPA has no pep.authz decision")


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "aureus-pep/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # the structured line per request replaces the access log
        return

    def _route(self):
        path = self.path.split("?", 1)[0]
        if path in ("/health", "/api/health"):
            return path, path, "health", None
        match = re.match(r"^/api/v1/datasets/([^/]+)$", path)
        if match:
            return path, "/api/v1/datasets/{id}", "read", match.group(1)
        if path == "/api/query":
            return path, "/api/query", "query", None
        if path == "/api/policy/evaluate":
            return path, "/api/policy/evaluate", "evaluate", None
        return path, "other", "unknown", None

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        try:
            value = json.loads(self.rfile.read(length))
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def _handle(self, method):
        server = self.server
        start = time.monotonic()
        request_id = self.headers.get("X-Request-Id") or uuid.uuid4().hex
        role = self.headers.get("X-User-Role") or "analyst"
        approval = (self.headers.get("X-Approval") or "").lower() == "granted"
        synthetic = self.headers.get("X-Synthetic") == "1"
        path, handler, action, dataset = self._route()
        body = self._body() if method == "POST" else {}
        audit_ref = new_audit_ref()
        if action == "query":
            dataset = str(body.get("dataset") or "")
        entry = CATALOG.get(dataset) if dataset else None
        pii_level = entry[0] if entry else ("unknown" if dataset else "none")
        if action == "evaluate":
            pii_level = str(((body.get("query") or {}).get("pii_level")) or "none")
        log = {"request_id": request_id, "method": method, "path": path, "handler": handler, "role": role,
               "audit_ref": audit_ref, "release": server.state.image, "synthetic": synthetic,
               "decision_id": None, "decision": None, "policy_revision": None}
        status, payload, level = 500, None, "info"
        if path in server.args.bypass_path:
            status, payload = 200, {"status": "ok", "audit_ref": audit_ref}  # no decision asked: the test's defect
        else:
            decision_id = uuid.uuid4().hex
            opa_input = {"action": action, "method": method, "path": path, "user": {"role": role},
                         "query": {"pii_level": pii_level}, "approval": {"granted": approval},
                         "resource": {"type": "dataset" if dataset else action, "id": dataset or "",
                                      "pii_level": pii_level}}
            if action == "evaluate":
                opa_input.update({k: body[k] for k in ("user", "query", "approval") if isinstance(body.get(k), dict)})
            try:
                decision, revision = server.opa.decide(opa_input)
                allowed = bool(decision.get("allow"))
                server.state.revision = revision
                log.update(decision_id=decision_id, decision="allow" if allowed else "deny", policy_revision=revision)
            except (urllib.error.URLError, OSError, ValueError, RuntimeError) as exc:
                decision, allowed = None, False
                log.update(decision="error", opa_error=str(exc)[:200])
            server.metrics.decision(log["decision"], role, pii_level)
            compliant = (server.state.retention_days or 0) >= RETENTION_FLOOR_DAYS
            server.metrics.audit_record(compliant)
            if not compliant:
                level = "warn"
                log["audit"] = "retention below the compliance floor (%s < %d days)" % (
                    server.state.retention_days, RETENTION_FLOOR_DAYS)
            status, payload = self._answer(action, dataset, entry, decision, allowed, audit_ref, body)
        if status < 500 and action in ("read", "query", "evaluate") and server.state.slow:
            time.sleep(EXTRA_LATENCY)
        if status < 500 and action in ("read", "query", "evaluate") and server.state.bad:
            with server.counter_lock:
                server.counter += 1
                failing = server.counter % 2 == 0
            if failing:
                status, payload = 500, {"error_code": "INTERNAL", "message": "The request could not be completed.",
                                        "audit_ref": audit_ref}
        if status >= 500:
            level = "error"
        data = json.dumps(payload, sort_keys=True).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Request-Id", request_id)
        self.end_headers()
        self.wfile.write(data)
        elapsed = time.monotonic() - start
        server.metrics.observe(handler, method, status, elapsed)
        log.update(ts=now_stamp(), level=level, status=status, duration_ms=round(elapsed * 1000, 2))
        with server.log_lock:
            sys.stdout.write(json.dumps(log, sort_keys=True) + "\n")
            sys.stdout.flush()

    def _answer(self, action, dataset, entry, decision, allowed, audit_ref, body):
        if decision is None:
            return 503, {"error_code": "POLICY_UNAVAILABLE", "audit_ref": audit_ref,
                         "message": "The policy decision point is unavailable; the request was not served."}
        label = decision.get("policy_label") or "public"
        if action == "health":
            return 200, {"status": "ok", "policy_label": label, "audit_ref": audit_ref}
        if action == "evaluate":
            pii = decision.get("pii") or {}
            return 200, {"allow": bool(pii.get("allow")), "policy": pii.get("policy"), "version": pii.get("version"),
                         "policy_label": label, "audit_ref": audit_ref}
        if entry is not None and not allowed and self.server.args.leak_existence:
            return 403, {"error_code": "FORBIDDEN", "audit_ref": audit_ref,
                         "message": "Dataset %s exists but needs an approval." % dataset}
        if entry is None or not allowed:
            return 404, {"error_code": "NOT_FOUND", "message": NOT_FOUND_MESSAGE, "audit_ref": audit_ref}
        version = "dsv_%s_v%d" % (dataset, entry[2])
        if action == "read":
            return 200, {"dataset_id": dataset, "name": dataset, "pii_level": entry[0], "owner": entry[1],
                         "dataset_version_id": version, "policy_label": label, "audit_ref": audit_ref}
        return 200, {"dataset_id": dataset, "rows": [{"count": 42}], "query": str(body.get("q") or "")[:200],
                     "dataset_version_id": version, "policy_label": label, "audit_ref": audit_ref}


class MetricsHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        return

    def do_GET(self):
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_error(404)
            return
        data = self.server.pep.metrics.render(self.server.pep.state)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def synthetic_traffic(port, interval):
    step = 0
    while True:
        method, path, role, body = SYNTHETIC[step % len(SYNTHETIC)]
        step += 1
        data = json.dumps(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data, method=method,
                                         headers={"X-User-Role": role, "X-Synthetic": "1",
                                                  "Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=5).read()
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(interval)


def main(argv=None):
    parser = argparse.ArgumentParser(description="The sandbox's governed API (PEP)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--opa-url", required=True)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", default="aureus")
    parser.add_argument("--deployment", default="aureus-frontend")
    parser.add_argument("--config-map", default="aureus-config")
    parser.add_argument("--bad-image", action="append", default=None)
    parser.add_argument("--slow-image", action="append", default=None)
    parser.add_argument("--traffic-interval", type=float, default=0.1, help="0 turns the synthetic client off")
    parser.add_argument("--bypass-path", action="append", default=[])
    parser.add_argument("--leak-existence", action="store_true")
    args = parser.parse_args(argv)
    args.bad_image = args.bad_image or ["aureus/frontend:v0.1.2"]
    args.slow_image = args.slow_image or ["aureus/frontend:v0.1.0"]
    server = Server(("127.0.0.1", args.port), Handler)
    server.args, server.metrics, server.state, server.opa = args, Metrics(), LiveState(args), Opa(args.opa_url)
    server.counter, server.counter_lock, server.log_lock = 0, threading.Lock(), threading.Lock()
    try:
        server.opa.install()
    except (urllib.error.URLError, OSError) as exc:
        sys.stderr.write("pep: could not put the pep.authz policy into OPA yet: %s\n" % exc)
    threading.Thread(target=server.state.loop, daemon=True).start()
    server.state.ready.wait(10)
    metrics = Server(("127.0.0.1", args.metrics_port), MetricsHandler)
    metrics.pep = server
    threading.Thread(target=metrics.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    if args.traffic_interval > 0:
        threading.Thread(target=synthetic_traffic, args=(args.port, args.traffic_interval), daemon=True).start()
    server.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
