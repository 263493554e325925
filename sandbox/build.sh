#!/usr/bin/env bash
# Build the sandbox's binaries from the Go module proxy, cached by version under
# ~/.cache/governed-rollback (override with GOVERNED_ROLLBACK_CACHE). A cached build is reused.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=sandbox/versions.sh
. "$HERE/versions.sh"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$CACHE/logs"

fail_build() {  # $1 component, $2 module, $3 log
    echo "sandbox build: FAILED to build $1 from Go module $2" >&2
    echo "---- go's error (last 40 lines of $3) ----" >&2
    tail -n 40 "$3" >&2
    exit 1
}

need_go() {
    command -v go >/dev/null || { echo "sandbox build: 'go' not found on PATH; install Go >= 1.24" >&2; exit 1; }
}

build_k8s() {
    local out="$K8S_BIN" log="$CACHE/logs/k8s-$K8S_VERSION.log"
    if [ -f "$out/.complete" ]; then return 0; fi
    need_go
    echo "sandbox build: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl $K8S_VERSION (cold: ~10 min on 2 cores)"
    mkdir -p "$out"
    local v="-X k8s.io/component-base/version" c="-X k8s.io/client-go/pkg/version"
    local minor; minor=$(echo "$K8S_VERSION" | cut -d. -f2)
    (cd "$HERE/tools/k8s" && go build -trimpath \
        -ldflags "-s -w $v.gitVersion=$K8S_VERSION $v.gitMajor=1 $v.gitMinor=$minor $c.gitVersion=$K8S_VERSION $c.gitMajor=1 $c.gitMinor=$minor" \
        -o "$out/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl) >"$log" 2>&1 \
        || fail_build "kubernetes components" "k8s.io/kubernetes@$K8S_VERSION" "$log"
    touch "$out/.complete"
}

build_etcd() {
    local out="$ETCD_BIN" log="$CACHE/logs/etcd-$ETCD_VERSION.log"
    if [ -f "$out/.complete" ]; then return 0; fi
    need_go
    echo "sandbox build: etcd $ETCD_VERSION"
    mkdir -p "$out"
    (cd "$HERE/tools/etcd" && go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3) >"$log" 2>&1 \
        || fail_build etcd "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "$log"
    touch "$out/.complete"
}

build_kwok() {
    local out="$KWOK_BIN" log="$CACHE/logs/kwok-$KWOK_VERSION.log"
    if [ -f "$out/.complete" ]; then return 0; fi
    need_go
    echo "sandbox build: kwok $KWOK_VERSION"
    mkdir -p "$out"
    GOBIN="$out" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >"$log" 2>&1 \
        || fail_build kwok "sigs.k8s.io/kwok@$KWOK_VERSION" "$log"
    # The stage definitions ship in the module zip; keep a copy next to the binary.
    local src; src="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
    mkdir -p "$out/stages"
    cp -r "$src"/. "$out/stages/"
    chmod -R u+w "$out/stages"
    touch "$out/.complete"
}

build_opa() {
    local out="$OPA_BIN" log="$CACHE/logs/opa-$OPA_VERSION.log"
    if [ -f "$out/.complete" ]; then return 0; fi
    need_go
    echo "sandbox build: opa $OPA_VERSION"
    mkdir -p "$out"
    GOBIN="$out" go install -trimpath -ldflags "-s -w" "github.com/open-policy-agent/opa@$OPA_VERSION" >"$log" 2>&1 \
        || fail_build opa "github.com/open-policy-agent/opa@$OPA_VERSION" "$log"
    touch "$out/.complete"
}

start=$(date +%s)
build_k8s
build_etcd
build_kwok
build_opa
echo "sandbox build: ready in $(( $(date +%s) - start ))s (cache: $CACHE, $(du -sh "$CACHE" 2>/dev/null | cut -f1))"
