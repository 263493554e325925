#!/usr/bin/env bash
# Build the sandbox's binaries from the Go module proxy, cached by version under
# ~/.cache/governed-rollback (override with GOVERNED_ROLLBACK_CACHE). A cached build is reused.
# `sandbox/build.sh flyway` (opt-in) only fetches Flyway's command line from Maven Central into the same cache.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=sandbox/versions.sh
. "$HERE/versions.sh"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$CACHE/logs"

fail_build() {  # $1 component, $2 module (Go module@version, or Maven group:artifact@version), $3 log
    local source="Go module" tool="go"
    case $2 in *:*) source="Maven artifact" tool="mvn" ;; esac
    echo "sandbox build: FAILED to build $1 from $source $2" >&2
    echo "---- $tool's error (last 40 lines of $3) ----" >&2
    tail -n 40 "$3" >&2
    exit 1
}

need_go() {
    command -v go >/dev/null || { echo "sandbox build: 'go' not found on PATH; install Go >= 1.24" >&2; exit 1; }
}

# build NAME OUT_DIR MODULE@VERSION CMD...: unless OUT_DIR holds a finished build, run CMD (its output to a log
# under $CACHE/logs) and mark OUT_DIR finished; a failure names NAME and the module and prints go's error.
build() {
    local name=$1 out=$2 module=$3; shift 3
    local log; log="$CACHE/logs/$(basename "$(dirname "$out")").log"
    if [ -f "$out/.complete" ]; then return 0; fi
    case $module in *:*) ;; *) need_go ;; esac
    echo "sandbox build: $name ${module##*@}"
    mkdir -p "$out"
    "$@" >"$log" 2>&1 || fail_build "$name" "$module" "$log"
    touch "$out/.complete"
}

go_build_k8s() (  # a subshell: the cd stays inside
    v="-X k8s.io/component-base/version" c="-X k8s.io/client-go/pkg/version"
    minor=$(echo "$K8S_VERSION" | cut -d. -f2)
    cd "$HERE/tools/k8s" && go build -trimpath \
        -ldflags "-s -w $v.gitVersion=$K8S_VERSION $v.gitMajor=1 $v.gitMinor=$minor $c.gitVersion=$K8S_VERSION $c.gitMajor=1 $c.gitMinor=$minor" \
        -o "$K8S_BIN/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
)

go_build_etcd() (
    cd "$HERE/tools/etcd" && go build -trimpath -ldflags "-s -w" -o "$ETCD_BIN/etcd" go.etcd.io/etcd/server/v3
)

go_install() {  # $1 GOBIN, $2 module@version
    GOBIN="$1" go install -trimpath -ldflags "-s -w" "$2"
}

go_install_tags() {  # $1 build tags, $2 GOBIN, $3 module@version
    GOBIN="$2" go install -trimpath -tags "$1" -ldflags "-s -w" "$3"
}

install_kwok() {  # the stage definitions ship in the module zip; keep a copy next to the binary
    go_install "$KWOK_BIN" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" || return 1
    local src; src="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
    mkdir -p "$KWOK_BIN/stages" && cp -r "$src"/. "$KWOK_BIN/stages/" && chmod -R u+w "$KWOK_BIN/stages"
}

# SeaweedFS: `go install` is refused (its go.mod has a replace directive), so build from the module's source: download
# the version, copy it out of the read-only module cache and `go build ./weed` there (~5 min on 2 cores).
go_build_seaweedfs() (
    mod=github.com/seaweedfs/seaweedfs@$SEAWEEDFS_VERSION
    dir=$(go mod download -json "$mod" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [ -n "$dir" ] || { echo "go mod download $mod: no module directory" >&2; exit 1; }
    work=$(mktemp -d) && trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
    cp -r "$dir"/. "$work/src" && chmod -R u+w "$work/src"
    cd "$work/src" && go build -trimpath -ldflags "-s -w" -o "$SEAWEEDFS_BIN/weed" ./weed
)

# ---- gitops (issue 17)
# Flux's controllers carry `replace` lines, so `go install` refuses them: each builds through a wrapper module
# (sandbox/tools/flux-*) holding those lines and a `tool` directive for the controller's main package.
go_build_flux() (  # $1 wrapper directory, $2 main package, $3 binary name
    cd "$HERE/tools/$1" && go build -trimpath -ldflags "-s -w" -o "$FLUX_BIN/$3" "$2"
)

flux_crds() {  # the CRDs ship in the modules; keep a copy next to the binaries for sandbox/up.sh
    local mod; mod="$(go env GOMODCACHE)/github.com/fluxcd"
    mkdir -p "$FLUX_BIN/crds"
    cp "$mod/source-controller@$FLUX_VERSION"/config/crd/bases/*.yaml \
        "$mod/kustomize-controller@$FLUX_VERSION"/config/crd/bases/*.yaml "$FLUX_BIN/crds/"
    chmod -R u+w "$FLUX_BIN/crds"
}

build_flux() {
    go_build_flux flux-source github.com/fluxcd/source-controller source-controller || return 1
    go_build_flux flux-kustomize github.com/fluxcd/kustomize-controller kustomize-controller || return 1
    (cd "$HERE/tools/flux-source" && go mod download github.com/fluxcd/source-controller) || return 1
    (cd "$HERE/tools/flux-kustomize" && go mod download github.com/fluxcd/kustomize-controller) || return 1
    flux_crds
}

# ---- helm-controller (issue 17, the Helm values pin): through its wrapper module like the other two; its CRD
# (HelmRelease) ships in the module.
build_flux_helm() {
    (cd "$HERE/tools/flux-helm" && go build -trimpath -ldflags "-s -w" -o "$FLUX_HELM_BIN/helm-controller" \
        github.com/fluxcd/helm-controller && go mod download github.com/fluxcd/helm-controller) || return 1
    mkdir -p "$FLUX_HELM_BIN/crds"
    cp "$(go env GOMODCACHE)/github.com/fluxcd/helm-controller@$FLUX_HELM_VERSION"/config/crd/bases/*.yaml \
        "$FLUX_HELM_BIN/crds/" && chmod -R u+w "$FLUX_HELM_BIN/crds"
}

# Gitea's go.mod has replace lines too and its templates/translations are read from the source tree at run time:
# copy the module source into the cache (it stays there as STATIC_ROOT_PATH) and build it in place. SQLite needs cgo.
build_gitea() (
    src="$(go env GOMODCACHE)/code.gitea.io/gitea@$GITEA_VERSION"
    [ -d "$src" ] || go mod download "code.gitea.io/gitea@$GITEA_VERSION" || exit 1
    rm -rf "$GITEA_DIR/src" && mkdir -p "$GITEA_DIR" && cp -r "$src" "$GITEA_DIR/src" && chmod -R u+w "$GITEA_DIR/src"
    cd "$GITEA_DIR/src" && go mod download && CGO_ENABLED=1 go build -trimpath -tags 'sqlite sqlite_unlock_notify' \
        -ldflags "-s -w -X main.Version=${GITEA_VERSION#v}" -o "$GITEA_BIN/gitea" .
)

# Flyway's command line without its tarball: a pom-packaging project whose dependencies are the CLI's jar (its own
# dependencies excluded), flyway-core, the PostgreSQL module and driver, and what the CLI needs at run time.
fetch_flyway() (
    command -v mvn >/dev/null || { echo "sandbox build: 'mvn' not found on PATH; install Maven (and Java >= 17)" >&2; exit 1; }
    work=$(mktemp -d) && trap 'rm -rf "$work"' EXIT
    dep() { echo "<dependency><groupId>$1</groupId><artifactId>$2</artifactId><version>$3</version>${4:-}</dependency>"; }
    {
        echo '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        echo '<groupId>governed.rollback.sandbox</groupId><artifactId>flyway-cli</artifactId><version>1</version>'
        echo '<packaging>pom</packaging><dependencies>'
        dep org.flywaydb flyway-commandline "$FLYWAY_VERSION" \
            '<exclusions><exclusion><groupId>*</groupId><artifactId>*</artifactId></exclusion></exclusions>'
        dep org.flywaydb flyway-core "$FLYWAY_VERSION"
        dep org.flywaydb flyway-database-postgresql "$FLYWAY_VERSION"
        dep org.postgresql postgresql "$FLYWAY_PG_JDBC_VERSION"
        dep org.fusesource.jansi jansi 2.4.1
        dep com.fasterxml.jackson.core jackson-databind "$FLYWAY_JACKSON_VERSION"
        dep com.fasterxml.jackson.dataformat jackson-dataformat-xml "$FLYWAY_JACKSON_VERSION"
        dep com.fasterxml.jackson.dataformat jackson-dataformat-toml "$FLYWAY_JACKSON_VERSION"
        dep org.apache.commons commons-text 1.13.1
        dep org.slf4j slf4j-nop 2.0.17
        echo '</dependencies></project>'
    } >"$work/pom.xml"
    mkdir -p "$FLYWAY_LIB"
    cd "$work" && mvn -q -B dependency:copy-dependencies -DoutputDirectory="$FLYWAY_LIB"
)

# ---- argocd CRDs (issue 17): Argo CD's module zip from the Go module proxy (go verifies it against the checksum
# database, then refuses to extract it: v3.6 asks for Go 1.27); the two CRDs are read out of the zip after its h1
# hash is checked against the pinned go.sum line. No controller is built (see README, GitOps).
fetch_argocd_crds() (
    module="github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION"
    zip="$(go env GOMODCACHE)/cache/download/github.com/argoproj/argo-cd/v3/@v/$ARGOCD_VERSION.zip"
    cd "$(mktemp -d)" && { GOFLAGS="" go mod download -json "$module" || true; }
    [ -f "$zip" ] || { echo "go mod download did not leave $zip"; exit 1; }
    python3 "$HERE/argocd_crds.py" "$zip" "$ARGOCD_MODULE_H1" "$module" "$ARGOCD_CRDS"
)

if [ "${1:-}" = flyway ]; then
    build "flyway command line (Maven Central)" "$FLYWAY_LIB" "org.flywaydb:flyway-commandline@$FLYWAY_VERSION" fetch_flyway
    echo "sandbox build: flyway $FLYWAY_VERSION in $FLYWAY_LIB (java -cp '$FLYWAY_LIB/*' org.flywaydb.commandline.Main)"
    exit 0
fi

start=$(date +%s)
[ -f "$K8S_BIN/.complete" ] || echo "sandbox build: the Kubernetes components take ~10 min cold on 2 cores"
build "kubernetes components (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl)" "$K8S_BIN" \
    "k8s.io/kubernetes@$K8S_VERSION" go_build_k8s
build etcd "$ETCD_BIN" "go.etcd.io/etcd/server/v3@$ETCD_VERSION" go_build_etcd
build kwok "$KWOK_BIN" "sigs.k8s.io/kwok@$KWOK_VERSION" install_kwok
build opa "$OPA_BIN" "github.com/open-policy-agent/opa@$OPA_VERSION" \
    go_install "$OPA_BIN" "github.com/open-policy-agent/opa@$OPA_VERSION"
# Prometheus for rollback_verify's metric analysis; the sandbox scrapes static targets only, so the service discovery
# plugins (cloud SDKs, most of the build) are left out with the upstream build tag remove_all_sd.
build prometheus "$PROMETHEUS_BIN" "github.com/prometheus/prometheus@$PROMETHEUS_VERSION" \
    go_install_tags remove_all_sd "$PROMETHEUS_BIN" "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION"
build seaweedfs "$SEAWEEDFS_BIN" "github.com/seaweedfs/seaweedfs@$SEAWEEDFS_VERSION" go_build_seaweedfs
# ---- gitops (issue 17)
if [ "${SANDBOX_GITOPS:-1}" != 0 ]; then
    [ -f "$FLUX_BIN/.complete" ] && [ -f "$GITEA_BIN/.complete" ] \
        || echo "sandbox build: Flux's controllers and Gitea take ~10 min cold on 2 cores"
    build "flux source-controller and kustomize-controller" "$FLUX_BIN" \
        "github.com/fluxcd/source-controller@$FLUX_VERSION" build_flux
    build gitea "$GITEA_BIN" "code.gitea.io/gitea@$GITEA_VERSION" build_gitea
    build "flux helm-controller" "$FLUX_HELM_BIN" "github.com/fluxcd/helm-controller@$FLUX_HELM_VERSION" \
        build_flux_helm
fi
build "argo cd CRDs (Application, AppProject)" "$ARGOCD_CRDS" "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION" \
    fetch_argocd_crds
echo "sandbox build: ready in $(( $(date +%s) - start ))s (cache: $CACHE, $(du -sh "$CACHE" 2>/dev/null | cut -f1))"
