#!/usr/bin/env bash
# Stop every process the sandbox started, by recorded PID only, newest first.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=sandbox/versions.sh
. "$HERE/versions.sh"
QUIET=${1:-}
say() { [ "$QUIET" = --quiet ] || echo "$@"; }

if [ ! -f "$STATE/pids/order" ]; then
    say "sandbox: nothing recorded in $STATE/pids; nothing to stop"
    rm -f "$STATE/env"
    exit 0
fi
# GitOps (issue 17): delete Flux's objects while its controllers still run, so their finalizers complete.
if [ -f "$STATE/pids/kustomize-controller.pid" ] && kill -0 "$(cat "$STATE/pids/kustomize-controller.pid")" 2>/dev/null \
   && [ -x "$K8S_BIN/kubectl" ] && [ -f "$STATE/kubeconfig" ]; then
    KUBECONFIG=$STATE/kubeconfig timeout 30 "$K8S_BIN/kubectl" --cache-dir "$STATE/kcache" -n flux-system delete \
        kustomizations.kustomize.toolkit.fluxcd.io,gitrepositories.source.toolkit.fluxcd.io --all --wait=true \
        --timeout=25s >/dev/null 2>&1 || say "sandbox: Flux objects not deleted cleanly (stopping anyway)"
fi
left=""
for name in $(tac "$STATE/pids/order"); do
    pid=$(cat "$STATE/pids/$name.pid" 2>/dev/null) || continue
    [ -n "$pid" ] || continue
    if kill -0 "$pid" 2>/dev/null; then
        # PostgreSQL: SIGINT is its "fast" shutdown; everything else takes SIGTERM.
        if [ "$name" = postgres ]; then kill -INT "$pid"; else kill -TERM "$pid"; fi
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null
            # a large process (SeaweedFS) can take a moment to be torn down and reaped, more on a busy machine
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        kill -0 "$pid" 2>/dev/null && left="$left $name($pid)"
        say "sandbox: stopped $name ($pid)"
    fi
    rm -f "$STATE/pids/$name.pid"
done
rm -f "$STATE/pids/order" "$STATE/env"
if [ -n "$left" ]; then
    echo "sandbox: could not stop:$left" >&2
    exit 1
fi
say "sandbox: down"
