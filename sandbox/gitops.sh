#!/usr/bin/env bash
# The sandbox's GitOps loop (issue 17): Gitea (the config repository's forge) and Flux's source- and
# kustomize-controller. Sourced by sandbox/up.sh; also runs on its own against a running sandbox (it then appends its
# variables to .sandbox/env; run sandbox/seed.sh and sandbox/write_inventory_facts.py after it).
# Gitea on SQLite, installed by its config file (INSTALL_LOCK), one admin whose API token lives in a 0600 file;
# Flux's CRDs applied server-side and both controllers run out of cluster on the sandbox kubeconfig, scoped to
# flux-system. The config repository aureus-deploy and the Flux objects reconciling it are seeded by seed.sh.
if [ -z "${KUBECONFIG_PATH:-}" ]; then  # on its own
    set -euo pipefail
    HERE=$(cd "$(dirname "$0")" && pwd)
    # shellcheck source=sandbox/versions.sh
    . "$HERE/versions.sh"
    # shellcheck source=sandbox/lib.sh
    . "$HERE/lib.sh"
    KUBECONFIG_PATH=$STATE/kubeconfig
    KUBECTL=$K8S_BIN/kubectl
    export KUBECONFIG=$KUBECONFIG_PATH
fi
# A controller that starts before the API server serves its CRDs' group exits at once ("no matches for
# helm.toolkit.fluxcd.io/v2"): wait until the applied CRDs are Established and their resources are listable.
crd_served() {  # NAME: the CRD is Established and its resources can be listed
    [ "$("$KUBECTL" --cache-dir "$STATE/kcache" get crd "$1" \
        -o jsonpath='{.status.conditions[?(@.type=="Established")].status}')" = True ] \
        && "$KUBECTL" --cache-dir "$STATE/kcache" get "$1" -A --request-timeout=5s
}
# crds_served DIR: wait until every CRD in DIR is served. Polled rather than `kubectl wait --for condition=...`, which
# fails at once on a CRD created a moment ago that has no .status.conditions yet.
crds_served() {
    local crd crds
    crds=$("$KUBECTL" --cache-dir "$STATE/kcache" get -f "$1" -o name) || return 1
    for crd in $crds; do  # customresourcedefinition.apiextensions.k8s.io/<plural>.<group>
        wait_for "CRD ${crd#*/}" 60 crd_served "${crd#*/}"
    done
}

# ---- helm-controller (issue 17, the Helm values pin): start-if-missing, so it also joins a sandbox that is already
# running (`sandbox/gitops.sh helm-controller`): the HelmRelease CRD applied server-side, then Flux's helm-controller
# out of cluster like the other two, scoped to flux-system, unless its recorded PID is alive. It fetches charts from
# source-controller's storage (HelmCharts packaged from the GitRepository).
helm_controller_up() {
    [ -x "$FLUX_HELM_BIN/helm-controller" ] \
        || { echo "sandbox: $FLUX_HELM_BIN/helm-controller is not built; run sandbox/build.sh" >&2; return 1; }
    "$KUBECTL" --cache-dir "$STATE/kcache" apply --server-side -f "$FLUX_HELM_BIN/crds" >/dev/null
    crds_served "$FLUX_HELM_BIN/crds" || return 1
    local pidfile=$STATE/pids/helm-controller.pid health
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        return 0
    fi
    health=$(free_port)
    start_component helm-controller env KUBECONFIG="$KUBECONFIG_PATH" RUNTIME_NAMESPACE=flux-system \
        "$FLUX_HELM_BIN/helm-controller" --watch-all-namespaces=false --enable-leader-election=false \
        --log-level=info --metrics-addr="127.0.0.1:$(free_port)" --health-addr="127.0.0.1:$health"
    wait_for helm-controller 60 curl -sf "http://127.0.0.1:$health/readyz"
    grep -q '^export SANDBOX_FLUX_HELMRELEASE=' "$STATE/env" 2>/dev/null || cat >>"$STATE/env" <<EOF
export SANDBOX_FLUX_HELMRELEASE=aureus-web
export SANDBOX_FLUX_HELM_KUSTOMIZATION=aureus-web
EOF
}
if [ "${BASH_SOURCE[0]}" = "$0" ] && [ "${1:-}" = helm-controller ]; then
    helm_controller_up
    echo "sandbox: helm-controller $FLUX_HELM_VERSION running (PID $(cat "$STATE/pids/helm-controller.pid"))"
    exit 0
fi

GITEA_PORT=$(free_port); SC_STORAGE_PORT=$(free_port)
GT=$STATE/gitea
install -d -m 700 "$GT" "$GT/data" "$GT/repos" "$GT/log"
cat >"$GT/app.ini" <<EOF
APP_NAME = aureus-forge
RUN_USER = $(id -un)
RUN_MODE = prod
I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true
WORK_PATH = $GT
[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = $GITEA_PORT
ROOT_URL = http://127.0.0.1:$GITEA_PORT/
DISABLE_SSH = true
START_SSH_SERVER = false
OFFLINE_MODE = true
LFS_START_SERVER = false
STATIC_ROOT_PATH = $GITEA_DIR/src
APP_DATA_PATH = $GT/data
[database]
DB_TYPE = sqlite3
PATH = $GT/data/gitea.db
SQLITE_JOURNAL_MODE = WAL
[repository]
ROOT = $GT/repos
DEFAULT_BRANCH = main
[security]
INSTALL_LOCK = true
SECRET_KEY = $(openssl rand -hex 24)
INTERNAL_TOKEN = $(openssl rand -hex 32)
[oauth2]
ENABLED = false
[service]
DISABLE_REGISTRATION = true
REQUIRE_SIGNIN_VIEW = false
[mailer]
ENABLED = false
[session]
PROVIDER = memory
[cache]
ADAPTER = memory
[actions]
ENABLED = false
[cron]
ENABLED = false
[log]
MODE = console
LEVEL = Warn
ROOT_PATH = $GT/log
EOF
chmod 600 "$GT/app.ini"
gitea_cli() { GITEA_WORK_DIR=$GT HOME=$GT "$GITEA_BIN/gitea" --config "$GT/app.ini" --work-path "$GT" "$@"; }
gitea_cli migrate >"$STATE/logs/gitea-migrate.log" 2>&1 || component_failed gitea-migrate
GITEA_USER=gitops-admin
gitea_cli admin user create --username "$GITEA_USER" --email gitops-admin@aureus.example --admin \
    --must-change-password=false --random-password >/dev/null 2>"$STATE/logs/gitea-user.log" \
    || component_failed gitea-user
gitea_cli admin user generate-access-token --username "$GITEA_USER" --token-name sandbox --scopes all --raw \
    2>"$STATE/logs/gitea-token.log" | tail -n 1 >"$GT/token" || component_failed gitea-token
chmod 600 "$GT/token"
# curl reads the Authorization header from this file (-H @file), so the token is on no command line.
printf 'Authorization: token %s\n' "$(cat "$GT/token")" >"$GT/auth-header"
chmod 600 "$GT/auth-header"
start_component gitea env GITEA_WORK_DIR="$GT" HOME="$GT" "$GITEA_BIN/gitea" --config "$GT/app.ini" \
    --work-path "$GT" web
wait_for gitea 90 curl -sf "http://127.0.0.1:$GITEA_PORT/api/healthz"

FX=$STATE/flux
mkdir -p "$FX/storage"
"$KUBECTL" --cache-dir "$STATE/kcache" apply --server-side -f "$FLUX_BIN/crds" >/dev/null
crds_served "$FLUX_BIN/crds"
"$KUBECTL" --cache-dir "$STATE/kcache" create namespace flux-system --dry-run=client -o yaml \
    | "$KUBECTL" --cache-dir "$STATE/kcache" apply -f - >/dev/null
flux_controller() {  # NAME HEALTH_PORT ARGS...: the controller itself is the recorded PID (env execs it)
    local name=$1 health=$2; shift 2
    start_component "$name" env KUBECONFIG="$KUBECONFIG_PATH" RUNTIME_NAMESPACE=flux-system "$FLUX_BIN/$name" \
        --watch-all-namespaces=false --enable-leader-election=false --log-level=info \
        --metrics-addr="127.0.0.1:$(free_port)" --health-addr="127.0.0.1:$health" "$@"
    wait_for "$name" 60 curl -sf "http://127.0.0.1:$health/readyz"
}
flux_controller source-controller "$(free_port)" --storage-path="$FX/storage" \
    --storage-addr="127.0.0.1:$SC_STORAGE_PORT" --storage-adv-addr="127.0.0.1:$SC_STORAGE_PORT"
flux_controller kustomize-controller "$(free_port)" --no-remote-bases=true
helm_controller_up || component_failed helm-controller
cat >>"$STATE/env" <<EOF
export SANDBOX_GITEA_URL=http://127.0.0.1:$GITEA_PORT
export SANDBOX_GITEA_USER=$GITEA_USER
export SANDBOX_GITEA_TOKEN_FILE=$GT/token
export SANDBOX_GITEA_AUTH_HEADER_FILE=$GT/auth-header
export SANDBOX_GITEA_CONFIG=$GT/app.ini
export SANDBOX_GITEA_BIN=$GITEA_BIN/gitea
export SANDBOX_GITOPS_REPO_URL=http://127.0.0.1:$GITEA_PORT/$GITEA_USER/aureus-deploy.git
export SANDBOX_FLUX_NAMESPACE=flux-system
export SANDBOX_FLUX_KUSTOMIZATION=aureus-api
export SANDBOX_FLUX_GITREPOSITORY=aureus-deploy
EOF
