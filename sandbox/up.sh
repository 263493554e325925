#!/usr/bin/env bash
# Start the local platform on loopback: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# KWOK (+ one fake node), PostgreSQL 15, a policy bundle server, OPA, AUREUS Guard, the governed API (PEP)
# and Prometheus; seed the runbooks' world;
# write .sandbox/env.
# Idempotent: when everything is already up it only checks health.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=sandbox/versions.sh
. "$HERE/versions.sh"
# shellcheck source=sandbox/lib.sh
. "$HERE/lib.sh"

T0=$(date +%s)

if [ -f "$STATE/env" ] && all_recorded_alive; then
    # shellcheck disable=SC1091
    . "$STATE/env"
    if health_check quiet; then
        echo "sandbox: already up (KUBECONFIG=$KUBECONFIG); health OK"
        exit 0
    fi
    echo "sandbox: recorded processes are alive but unhealthy; restarting" >&2
fi

if [ -d "$STATE/pids" ] && ls "$STATE"/pids/*.pid >/dev/null 2>&1; then
    echo "sandbox: found state from an earlier run in $STATE; stopping what is left of it and starting clean"
    "$HERE/down.sh" --quiet || true
fi

"$HERE/build.sh"

rm -rf "$STATE"
mkdir -p "$STATE"/{pids,logs,pki,kcache}
chmod 755 "$STATE"

API_PORT=$(free_port); ETCD_PORT=$(free_port); PEER_PORT=$(free_port); KCM_PORT=$(free_port)
SCHED_PORT=$(free_port); PG_PORT=$(free_port); OPA_PORT=$(free_port); GUARD_PORT=$(free_port)

# ---- PKI and credentials -------------------------------------------------------------------
P=$STATE/pki
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=governed-sandbox-ca -keyout "$P/ca.key" \
    -out "$P/ca.crt" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign >/dev/null 2>&1
openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver -keyout "$P/apiserver.key" -out "$P/apiserver.csr" >/dev/null 2>&1
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$P/ext.cnf"
openssl x509 -req -in "$P/apiserver.csr" -CA "$P/ca.crt" -CAkey "$P/ca.key" -CAcreateserial -days 30 \
    -extfile "$P/ext.cnf" -out "$P/apiserver.crt" >/dev/null 2>&1
openssl genrsa -out "$P/sa.key" 2048 >/dev/null 2>&1
TOKEN=$(openssl rand -hex 24)
echo "$TOKEN,admin,admin,system:masters" >"$P/tokens.csv"
chmod 600 "$P"/*.key "$P/tokens.csv"
KUBECONFIG_PATH=$STATE/kubeconfig
cat >"$KUBECONFIG_PATH" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sandbox
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $P/ca.crt
users:
- name: admin
  user:
    token: $TOKEN
contexts:
- name: sandbox
  context: {cluster: sandbox, user: admin}
current-context: sandbox
EOF
chmod 600 "$KUBECONFIG_PATH"
export KUBECONFIG=$KUBECONFIG_PATH
KUBECTL=$K8S_BIN/kubectl

# ---- etcd ----------------------------------------------------------------------------------
install -d -m 700 "$STATE/etcd"
start_component etcd "$ETCD_BIN/etcd" --name=n0 --data-dir="$STATE/etcd" --unsafe-no-fsync \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$PEER_PORT" \
    --initial-cluster="n0=http://127.0.0.1:$PEER_PORT" --listen-metrics-urls=""
wait_for etcd 60 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

# ---- kube-apiserver ------------------------------------------------------------------------
start_component kube-apiserver "$K8S_BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --secure-port="$API_PORT" --cert-dir="$P" \
    --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --token-auth-file="$P/tokens.csv" \
    --authorization-mode=RBAC --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$P/sa.key" --service-account-signing-key-file="$P/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 --endpoint-reconciler-type=none \
    --disable-admission-plugins=ServiceAccount --enable-priority-and-fairness=false --allow-privileged=true
wait_for kube-apiserver 120 "$KUBECTL" --cache-dir "$STATE/kcache" get --raw /readyz

# The controller-manager and scheduler authenticate with the same admin token (sandbox only).
start_component kube-controller-manager "$K8S_BIN/kube-controller-manager" --kubeconfig="$KUBECONFIG_PATH" \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --root-ca-file="$P/ca.crt" \
    --service-account-private-key-file="$P/sa.key" --use-service-account-credentials=false \
    --authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics --controllers='*' \
    --concurrent-deployment-syncs=10 --concurrent-replicaset-syncs=10
start_component kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig="$KUBECONFIG_PATH" --leader-elect=false \
    --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" \
    --authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics

# ---- KWOK: stages for fast node/pod lifecycle, pod deletion, and the chaos stage --------------
S=$KWOK_BIN/stages
{
    for f in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
        pod/fast/pod-complete pod/fast/pod-delete; do
        cat "$S/$f.yaml"; echo "---"
    done
    # pod-ready, except for pods carrying the chaos label: those go to pod-crashloop instead.
    sed "/^    matchExpressions:/r $HERE/seed/kwok/pod-ready-exclude-chaos.yaml" "$S/pod/fast/pod-ready.yaml"
    echo "---"
    cat "$HERE/seed/kwok/pod-crashloop.yaml"
    echo "---"
    # Container logs for every pod (current and previous), served by KWOK's kubelet-like server so that
    # `kubectl logs` and the log evidence read real streams. seed.sh writes the files.
    mkdir -p "$STATE/kwok-logs"
    sed "s#@LOGS@#$STATE/kwok-logs#g" "$HERE/seed/kwok/cluster-logs.yaml"
} >"$STATE/kwok-stages.yaml"
touch "$STATE/kwok-logs/current.log" "$STATE/kwok-logs/previous.log"
KWOK_PORT=$(free_port)
start_component kwok "$KWOK_BIN/kwok" --kubeconfig="$KUBECONFIG_PATH" --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake --node-lease-duration-seconds=40 \
    --node-ip=127.0.0.1 --node-port="$KWOK_PORT" --server-address="127.0.0.1:$KWOK_PORT" \
    --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" \
    --config="$STATE/kwok-stages.yaml"

"$KUBECTL" --cache-dir "$STATE/kcache" apply -f "$HERE/seed/node.yaml" >/dev/null
wait_for "fake node (kwok)" 90 "$KUBECTL" --cache-dir "$STATE/kcache" wait --for=condition=Ready node/kwok-node-0 --timeout=5s
wait_for "kube-controller-manager (default service account)" 90 "$KUBECTL" --cache-dir "$STATE/kcache" get sa default -n default

# ---- PostgreSQL 15 -----------------------------------------------------------------------
start_postgres "$PG_PORT"

# ---- Policy bundle server + OPA (the PEP's policy server) ------------------------------------------
# As real fleets run it: OPA pulls bundles/aureus.tar.gz (built by `opa build --revision <git sha>`, published
# by seed.sh) from a static bundle server on loopback, polls it every 1-2 s, and reports the active revision
# (GET /v1/status, data.system.bundles). policy-active still holds the seeded v2.1 sources, as before.
mkdir -p "$STATE/policy-active" "$STATE/bundle-server/bundles"
BUNDLE_PORT=$(free_port)
BUNDLE_PY=$SANDBOX_ROOT/.venv/bin/python
[ -x "$BUNDLE_PY" ] || BUNDLE_PY=$(command -v python3)
start_component bundle-server "$BUNDLE_PY" "$HERE/bundle_server.py" --root "$STATE/bundle-server" --port "$BUNDLE_PORT"
wait_for bundle-server 30 curl -sf "http://127.0.0.1:$BUNDLE_PORT/health"
cat >"$STATE/opa-config.yaml" <<EOF
services:
  bundles:
    url: http://127.0.0.1:$BUNDLE_PORT
bundles:
  aureus:
    service: bundles
    resource: bundles/aureus.tar.gz
    polling:
      min_delay_seconds: 1
      max_delay_seconds: 2
status:
  service: bundles
EOF
start_component opa "$OPA_BIN/opa" run --server --addr="127.0.0.1:$OPA_PORT" --log-level=error \
    --config-file="$STATE/opa-config.yaml"
wait_for opa 30 curl -sf "http://127.0.0.1:$OPA_PORT/health"

# ---- AUREUS Guard: the platform's snapshot API (a stand-in, sandbox/guard/guard_api.py) ---------------
# HTTPS with a certificate from the sandbox CA; its own database and role in the sandbox PostgreSQL; three
# bearer tokens (operator, read-only auditor, admin for fault injection). Secrets live in files only.
G=$STATE/guard
install -d -m 700 "$G"
openssl rand -hex 16 >"$G/db-password"
for t in token readonly-token admin-token; do openssl rand -hex 24 >"$G/$t"; done
openssl req -newkey rsa:2048 -nodes -subj /CN=aureus-guard -keyout "$G/tls.key" -out "$G/tls.csr" >/dev/null 2>&1
openssl x509 -req -in "$G/tls.csr" -CA "$P/ca.crt" -CAkey "$P/ca.key" -CAcreateserial -days 30 \
    -extfile "$P/ext.cnf" -out "$G/tls.crt" >/dev/null 2>&1
chmod 600 "$G"/*
# The password goes through psql's stdin, not its command line.
"$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$STATE/pg/run" -p "$PG_PORT" -U postgres -d postgres >/dev/null <<SQL
CREATE ROLE aureus_guard LOGIN PASSWORD '$(cat "$G/db-password")';
CREATE DATABASE aureus_guard OWNER aureus_guard;
SQL
GUARD_PY=$SANDBOX_ROOT/.venv/bin/python
[ -x "$GUARD_PY" ] || GUARD_PY=$(command -v python3)
"$GUARD_PY" -c 'import psycopg2' 2>/dev/null \
    || { echo "sandbox: $GUARD_PY cannot import psycopg2 (AUREUS Guard needs it): run make venv" >&2; exit 1; }
start_component aureus-guard "$GUARD_PY" "$HERE/guard/guard_api.py" --port "$GUARD_PORT" \
    --tls-cert "$G/tls.crt" --tls-key "$G/tls.key" --db-port "$PG_PORT" --db-password-file "$G/db-password" \
    --token-file "$G/token" --readonly-token-file "$G/readonly-token" --admin-token-file "$G/admin-token" \
    --restore-item-delay "${SANDBOX_GUARD_RESTORE_DELAY:-0.25}"
wait_for aureus-guard 30 curl -sf --cacert "$P/ca.crt" "https://127.0.0.1:$GUARD_PORT/health"

# ---- The governed API (PEP, sandbox/pep/pep_api.py) and Prometheus -------------------------------------------
# The PEP asks OPA for a decision on every request and follows the live release of aureus-frontend, the live
# aureus-config and OPA's active bundle (see its docstring); Prometheus scrapes it (and OPA) every 2 s.
PEP_PORT=$(free_port); PEP_METRICS_PORT=$(free_port); PROM_PORT=$(free_port)
start_component pep "$GUARD_PY" "$HERE/pep/pep_api.py" --port "$PEP_PORT" --metrics-port "$PEP_METRICS_PORT" \
    --opa-url "http://127.0.0.1:$OPA_PORT" --kubeconfig "$KUBECONFIG_PATH" \
    --traffic-interval "${SANDBOX_PEP_TRAFFIC_INTERVAL:-0.1}"
wait_for pep 30 curl -sf "http://127.0.0.1:$PEP_METRICS_PORT/metrics"
# The same program standing for aureus-api, the GitOps-managed PEP (sandbox/gitops.sh): its bad release is the
# seeded v1.5.0 digest (5xx and slow), the last good v1.4.0 is neither. Without the GitOps loop it follows nothing.
API_PEP_PORT=$(free_port); API_PEP_METRICS_PORT=$(free_port)
start_component pep-api "$GUARD_PY" "$HERE/pep/pep_api.py" --port "$API_PEP_PORT" \
    --metrics-port "$API_PEP_METRICS_PORT" --opa-url "http://127.0.0.1:$OPA_PORT" --kubeconfig "$KUBECONFIG_PATH" \
    --deployment aureus-api --bad-image "aureus/api@$(gitops_digest v1.5.0)" --slow-image none \
    --traffic-interval "${SANDBOX_PEP_TRAFFIC_INTERVAL:-0.1}"
wait_for pep-api 30 curl -sf "http://127.0.0.1:$API_PEP_METRICS_PORT/metrics"
mkdir -p "$STATE/prometheus"
cat >"$STATE/prometheus/prometheus.yml" <<EOF
global:
  scrape_interval: 2s
  scrape_timeout: 1s
  evaluation_interval: 2s
scrape_configs:
  - job_name: pep
    static_configs:
      - targets: ["127.0.0.1:$PEP_METRICS_PORT"]
  - job_name: pep-api
    static_configs:
      - targets: ["127.0.0.1:$API_PEP_METRICS_PORT"]
  - job_name: opa
    static_configs:
      - targets: ["127.0.0.1:$OPA_PORT"]
EOF
start_component prometheus "$PROMETHEUS_BIN/prometheus" --config.file="$STATE/prometheus/prometheus.yml" \
    --storage.tsdb.path="$STATE/prometheus/data" --storage.tsdb.retention.time=2d \
    --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn
wait_for prometheus 60 curl -sf "http://127.0.0.1:$PROM_PORT/-/ready"

PG_PASSWORD=$(cat "$STATE/pg-password")
cat >"$STATE/env" <<EOF
# Written by sandbox/up.sh; source it to talk to the sandbox.
export KUBECONFIG=$KUBECONFIG_PATH
export K8S_AUTH_KUBECONFIG=$KUBECONFIG_PATH
export SANDBOX_KUBECTL=$KUBECTL
export SANDBOX_KUBECTL_CACHE=$STATE/kcache
export SANDBOX_API_URL=https://127.0.0.1:$API_PORT
export PGHOST=127.0.0.1
export PGPORT=$PG_PORT
export PGUSER=aureus
export PGPASSWORD=$PG_PASSWORD
export PGDATABASE=aureus_metadata
export PGSUPERUSER=postgres
export SANDBOX_PG_BINDIR=$PG_BINDIR
export SANDBOX_OPA=$OPA_BIN/opa
export SANDBOX_OPA_URL=http://127.0.0.1:$OPA_PORT
export SANDBOX_POLICY_REPO=$STATE/policy-repo
export SANDBOX_POLICY_ACTIVE=$STATE/policy-active
export SANDBOX_BUNDLE_SERVER_URL=http://127.0.0.1:$BUNDLE_PORT
export SANDBOX_BUNDLE_SERVER_DIR=$STATE/bundle-server
export SANDBOX_BUNDLE_NAME=aureus
export SANDBOX_OPA_CONFIG=$STATE/opa-config.yaml
export SANDBOX_STATE=$STATE
export SANDBOX_GUARD_URL=https://127.0.0.1:$GUARD_PORT
export SANDBOX_GUARD_CA_FILE=$P/ca.crt
export SANDBOX_GUARD_TOKEN=$(cat "$G/token")
export SANDBOX_GUARD_TOKEN_FILE=$G/token
export SANDBOX_GUARD_READONLY_TOKEN_FILE=$G/readonly-token
export SANDBOX_GUARD_ADMIN_TOKEN_FILE=$G/admin-token
export SANDBOX_GUARD_PGUSER=aureus_guard
export SANDBOX_GUARD_PGDATABASE=aureus_guard
export SANDBOX_GUARD_PGPASSWORD_FILE=$G/db-password
export SANDBOX_GUARD_PYTHON=$GUARD_PY
EOF

# The sandbox's ed25519 receipt-signing key (PKCS#8 PEM, as an AWX credential would inject it). It lives
# beside the state directory and survives restarts: a new key would make the existing ledger unverifiable.
KEYS=$STATE-keys
if [ ! -f "$KEYS/signing.key" ]; then
    install -d -m 700 "$KEYS"
    openssl genpkey -algorithm ed25519 -out "$KEYS/signing.key" 2>/dev/null
    openssl pkey -in "$KEYS/signing.key" -pubout -out "$KEYS/signing.pub" 2>/dev/null
    chmod 600 "$KEYS/signing.key"
fi
cp "$KEYS/signing.key" "$KEYS/signing.pub" "$STATE/"
cat >>"$STATE/env" <<EOF
export GOVERNED_ROLLBACK_SIGNING_KEY_FILE=$STATE/signing.key
export SANDBOX_SIGNING_PUBLIC_KEY=$STATE/signing.pub
EOF

cat >>"$STATE/env" <<EOF
export SANDBOX_PEP_URL=http://127.0.0.1:$PEP_PORT
export SANDBOX_PEP_METRICS_URL=http://127.0.0.1:$PEP_METRICS_PORT
export SANDBOX_PEP_LOG=$STATE/logs/pep.log
export SANDBOX_PEP_PYTHON=$GUARD_PY
export SANDBOX_API_PEP_URL=http://127.0.0.1:$API_PEP_PORT
export SANDBOX_API_PEP_LOG=$STATE/logs/pep-api.log
export SANDBOX_PROMETHEUS_URL=http://127.0.0.1:$PROM_PORT
EOF

# ---- SeaweedFS: S3 with Object Lock (evidence packs, locked ledger heads) -------------------------------
# One `weed server` process (master, volume server, filer, S3 gateway) on loopback, every port and socket its own
# (other sandboxes run beside this one). The identities file holds the sandbox's key pair; SigV4 is enforced.
# Its SIGTERM takes ~20 s: down.sh SIGKILLs it after 10 s, which loses nothing (up.sh starts from a clean state).
S3D=$STATE/s3
install -d -m 700 "$S3D" "$S3D/data"
S3_PORT=$(free_port); S3_GRPC=$(free_port); SW_MASTER=$(free_port); SW_MASTER_GRPC=$(free_port)
SW_VOLUME=$(free_port); SW_VOLUME_GRPC=$(free_port); SW_FILER=$(free_port); SW_FILER_GRPC=$(free_port)
echo "GRSANDBOX$(openssl rand -hex 6 | tr 'a-f' 'A-F')" >"$S3D/access-key"
openssl rand -hex 20 >"$S3D/secret-key"
printf '{"identities":[{"name":"sandbox","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
    "$(cat "$S3D/access-key")" "$(cat "$S3D/secret-key")" >"$S3D/identities.json"
chmod 600 "$S3D/access-key" "$S3D/secret-key" "$S3D/identities.json"
start_component seaweedfs "$SEAWEEDFS_BIN/weed" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$S3D/data" \
    -master.port="$SW_MASTER" -master.port.grpc="$SW_MASTER_GRPC" -master.volumeSizeLimitMB=64 \
    -master.telemetry=false -volume.port="$SW_VOLUME" -volume.port.grpc="$SW_VOLUME_GRPC" -volume.max=32 \
    -filer -filer.port="$SW_FILER" -filer.port.grpc="$SW_FILER_GRPC" -filer.localSocket="$S3D/filer.sock" \
    -s3 -s3.port="$S3_PORT" -s3.port.grpc="$S3_GRPC" -s3.port.iceberg=0 -s3.port.lance=0 \
    -s3.config="$S3D/identities.json" -s3.localSocket="$S3D/s3.sock"
wait_for seaweedfs 90 curl -sf "http://127.0.0.1:$S3_PORT/healthz"
"$GUARD_PY" "$HERE/s3_buckets.py" "http://127.0.0.1:$S3_PORT" "$S3D/access-key" "$S3D/secret-key" \
    governed-evidence governed-plain || component_failed seaweedfs

# ---- PostgreSQL receipt ledger: its own database; the owner created the tables, the writer may INSERT and SELECT --
L=$STATE/ledger
install -d -m 700 "$L"
openssl rand -hex 16 >"$L/owner-password"
openssl rand -hex 16 >"$L/writer-password"
chmod 600 "$L"/*-password
"$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$STATE/pg/run" -p "$PG_PORT" -U postgres -d postgres >/dev/null <<SQL
CREATE ROLE gr_ledger_owner LOGIN PASSWORD '$(cat "$L/owner-password")';
CREATE ROLE gr_ledger_writer LOGIN PASSWORD '$(cat "$L/writer-password")';
CREATE DATABASE governed_ledger OWNER gr_ledger_owner;
SQL
COLL=$SANDBOX_ROOT/build/collections
[ -e "$COLL/ansible_collections/governed/rollback" ] || {
    mkdir -p "$COLL/ansible_collections/governed" && ln -sfn ../../../.. "$COLL/ansible_collections/governed/rollback"; }
{
    echo "SET client_min_messages = warning; SET ROLE gr_ledger_owner;"
    PYTHONPATH=$COLL "$GUARD_PY" -c 'from ansible_collections.governed.rollback.plugins.module_utils._ledger_pg import schema_sql
print(schema_sql("governed_rollback_ledger", "gr_ledger_writer"))'
} | "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$STATE/pg/run" -p "$PG_PORT" -U postgres -d governed_ledger >/dev/null

cat >>"$STATE/env" <<EOF
export SANDBOX_S3_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
export SANDBOX_S3_REGION=us-east-1
export SANDBOX_S3_BUCKET=governed-evidence
export SANDBOX_S3_PLAIN_BUCKET=governed-plain
export SANDBOX_S3_ACCESS_KEY_ID=$(cat "$S3D/access-key")
export SANDBOX_S3_SECRET_ACCESS_KEY_FILE=$S3D/secret-key
export SANDBOX_LEDGER_PGDATABASE=governed_ledger
export SANDBOX_LEDGER_PGUSER=gr_ledger_writer
export SANDBOX_LEDGER_PGPASSWORD_FILE=$L/writer-password
export SANDBOX_LEDGER_OWNER=gr_ledger_owner
export SANDBOX_LEDGER_OWNER_PGPASSWORD_FILE=$L/owner-password
EOF
# ---- gitops: Gitea and Flux's source- and kustomize-controller (sandbox/gitops.sh) ------------------------------
# SANDBOX_GITOPS=0 leaves it out (build.sh skips its builds too).
if [ "${SANDBOX_GITOPS:-1}" != 0 ]; then
    # shellcheck source=sandbox/gitops.sh
    . "$HERE/gitops.sh"
fi

# ---- argocd CRDs: Argo CD's Application and AppProject CRDs (no controller), so the API server validates what
# deploy_freeze writes; tests keep their Applications and AppProjects in namespaces of their own.
"$KUBECTL" --cache-dir "$STATE/kcache" apply --server-side -f "$ARGOCD_CRDS" >/dev/null
# (kubectl wait fails outright on a CRD whose status is not written yet, hence the retry)
wait_for "argocd CRDs established" 60 "$KUBECTL" --cache-dir "$STATE/kcache" wait --for condition=established \
    --timeout=5s crd/applications.argoproj.io crd/appprojects.argoproj.io

"$HERE/seed.sh"

# The same coordinates as JSON for the sandbox inventory (no secrets: the DB password stays in a file).
"$(command -v python3)" "$HERE/write_inventory_facts.py" "$STATE"

# shellcheck disable=SC1091
. "$STATE/env"
wait_for "opa (bundle from the bundle server)" 30 curl -sf "$SANDBOX_OPA_URL/health?bundles"
health_check
echo "sandbox: up in $(( $(date +%s) - T0 ))s; source $STATE/env to use it"
