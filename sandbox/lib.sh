# Helpers shared by the sandbox scripts.
# shellcheck shell=bash

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# start_component NAME BINARY ARGS... : start in the background, own session, log to logs/NAME.log, record PID.
start_component() {
    local name=$1; shift
    setsid "$@" >"$STATE/logs/$name.log" 2>&1 < /dev/null &
    echo $! >"$STATE/pids/$name.pid"
    echo "$name" >>"$STATE/pids/order"
}

component_failed() {  # NAME: say which component failed and show the tail of its log, then exit
    local name=$1
    echo "sandbox: $name did not become ready" >&2
    local log="$STATE/logs/${name%% *}.log"
    if [ -f "$log" ]; then
        echo "---- last 30 lines of $log ----" >&2
        tail -n 30 "$log" >&2
    fi
    exit 1
}

# wait_for NAME SECONDS CMD... : poll CMD until it succeeds; on timeout report NAME with its log.
wait_for() {
    local name=$1 limit=$2; shift 2
    local deadline=$(( $(date +%s) + limit ))
    local pidfile="$STATE/pids/${name%% *}.pid"
    until "$@" >/dev/null 2>&1; do
        if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            echo "sandbox: $name exited" >&2
            component_failed "$name"
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            component_failed "$name"
        fi
        sleep 0.5
    done
}

all_recorded_alive() {
    [ -f "$STATE/pids/order" ] || return 1
    local n
    while read -r n; do
        kill -0 "$(cat "$STATE/pids/$n.pid" 2>/dev/null)" 2>/dev/null || return 1
    done <"$STATE/pids/order"
    return 0
}

# PostgreSQL refuses to run as root: run it as the 'postgres' system user when we are root.
pg_run() {
    if [ "$(id -u)" = 0 ]; then
        if ! id postgres >/dev/null 2>&1; then
            useradd --system --no-create-home --shell /usr/sbin/nologin postgres
        fi
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start_postgres() {
    local port=$1 pgdata=$STATE/pg/data rundir=$STATE/pg/run
    [ -x "$PG_BINDIR/initdb" ] || { echo "sandbox: PostgreSQL 15 server binaries not found in $PG_BINDIR; apt-get install postgresql-15" >&2; exit 1; }
    mkdir -p "$pgdata" "$rundir"
    openssl rand -hex 16 >"$STATE/pg-password"
    chmod 644 "$STATE/pg-password"
    if [ "$(id -u)" = 0 ]; then chown -R postgres "$STATE/pg"; fi
    chmod 700 "$pgdata"
    pg_run "$PG_BINDIR/initdb" -D "$pgdata" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        -E UTF8 --locale=C.UTF-8 >"$STATE/logs/postgres-initdb.log" 2>&1 || component_failed "postgres-initdb"
    cat >>"$pgdata/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$rundir'
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
EOF
    touch "$STATE/logs/postgres.log"
    if [ "$(id -u)" = 0 ]; then chown postgres "$STATE/logs/postgres.log"; fi
    pg_run "$PG_BINDIR/pg_ctl" -D "$pgdata" -l "$STATE/logs/postgres.log" -w -t 60 start >/dev/null \
        || component_failed postgres
    head -1 "$pgdata/postmaster.pid" >"$STATE/pids/postgres.pid"
    echo postgres >>"$STATE/pids/order"
    wait_for postgres 30 "$PG_BINDIR/pg_isready" -h 127.0.0.1 -p "$port"
}

# health_check [quiet]: every component answers; prints which one does not.
health_check() {
    local quiet=${1:-}
    local bad=""
    curl -sf --cacert "$STATE/pki/ca.crt" -H "Authorization: Bearer $(cut -d, -f1 "$STATE/pki/tokens.csv")" \
        "$SANDBOX_API_URL/readyz" >/dev/null 2>&1 || bad="$bad kube-apiserver"
    "$SANDBOX_KUBECTL" --cache-dir "$SANDBOX_KUBECTL_CACHE" get node kwok-node-0 \
        -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True || bad="$bad kwok"
    "$SANDBOX_KUBECTL" --cache-dir "$SANDBOX_KUBECTL_CACHE" get deployment aureus-frontend -n aureus >/dev/null 2>&1 \
        || bad="$bad seed"
    "$SANDBOX_PG_BINDIR/pg_isready" -h "$PGHOST" -p "$PGPORT" >/dev/null 2>&1 || bad="$bad postgres"
    curl -sf "$SANDBOX_OPA_URL/health" >/dev/null 2>&1 || bad="$bad opa"
    # The policy bundle server, and OPA having activated a bundle from it (GET /health?bundles). A sandbox started
    # before the bundle server existed has no SANDBOX_BUNDLE_SERVER_URL and stays healthy (others' tests may be
    # running on it); `sandbox/down.sh && sandbox/up.sh` brings the bundle server in.
    if [ -n "${SANDBOX_BUNDLE_SERVER_URL:-}" ]; then
        curl -sf "$SANDBOX_BUNDLE_SERVER_URL/health" >/dev/null 2>&1 || bad="$bad bundle-server"
        curl -sf "$SANDBOX_OPA_URL/health?bundles" >/dev/null 2>&1 || bad="$bad opa-bundle"
    fi
    # An env file from before the Guard existed has no SANDBOX_GUARD_URL: unhealthy, so up.sh restarts.
    curl -sf --cacert "$STATE/pki/ca.crt" "${SANDBOX_GUARD_URL:-https://127.0.0.1:1}/health" >/dev/null 2>&1 \
        || bad="$bad aureus-guard"
    # The governed API (PEP) and Prometheus; an env file from before they existed is unhealthy, so up.sh restarts.
    curl -sf "${SANDBOX_PEP_URL:-http://127.0.0.1:1}/health" >/dev/null 2>&1 || bad="$bad pep"
    curl -sf "${SANDBOX_API_PEP_URL:-http://127.0.0.1:1}/health" >/dev/null 2>&1 || bad="$bad pep-api"
    curl -sf "${SANDBOX_PROMETHEUS_URL:-http://127.0.0.1:1}/-/ready" >/dev/null 2>&1 || bad="$bad prometheus"
    curl -sf "${SANDBOX_S3_ENDPOINT_URL:-http://127.0.0.1:1}/healthz" >/dev/null 2>&1 || bad="$bad seaweedfs"
    # GitOps (issue 17): Gitea answers and Flux's Kustomization of aureus-api exists (an older env file: restart).
    if [ "${SANDBOX_GITOPS:-1}" != 0 ]; then
        curl -sf "${SANDBOX_GITEA_URL:-http://127.0.0.1:1}/api/healthz" >/dev/null 2>&1 || bad="$bad gitea"
        "$SANDBOX_KUBECTL" --cache-dir "$SANDBOX_KUBECTL_CACHE" get kustomization aureus-api -n flux-system \
            >/dev/null 2>&1 || bad="$bad kustomize-controller"
        "$SANDBOX_KUBECTL" --cache-dir "$SANDBOX_KUBECTL_CACHE" get crd helmreleases.helm.toolkit.fluxcd.io \
            >/dev/null 2>&1 || bad="$bad helm-controller"  # issue 17, Helm values pin
    fi
    # Argo CD's CRDs (no controller): deploy_freeze's Application and AppProject objects.
    "$SANDBOX_KUBECTL" --cache-dir "$SANDBOX_KUBECTL_CACHE" get crd appprojects.argoproj.io applications.argoproj.io \
        >/dev/null 2>&1 || bad="$bad argocd-crds"
    if [ -n "$bad" ]; then
        [ -n "$quiet" ] && return 1
        for b in $bad; do
            echo "sandbox: health check failed for $b" >&2
            [ -f "$STATE/logs/$b.log" ] && tail -n 20 "$STATE/logs/$b.log" >&2
        done
        return 1
    fi
    return 0
}
