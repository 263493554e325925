# Versions and paths of the sandbox's components; sourced by the other sandbox scripts.
# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this file
K8S_VERSION=${K8S_VERSION:-v1.33.13}
ETCD_VERSION=${ETCD_VERSION:-v3.5.21}
KWOK_VERSION=${KWOK_VERSION:-v0.7.0}
OPA_VERSION=${OPA_VERSION:-v1.22.2}
# Prometheus scrapes the sandbox's governed API (the PEP) for rollback_verify's metric analysis.
PROMETHEUS_VERSION=${PROMETHEUS_VERSION:-v0.316.0}
# Opt-in (sandbox/build.sh flyway): Flyway's command line from Maven Central, for tests that need a genuine
# flyway_schema_history. 11.20.3 resolves from Maven Central alone (13.x does not; 12.x needs Jackson 3).
FLYWAY_VERSION=${FLYWAY_VERSION:-11.20.3}
FLYWAY_PG_JDBC_VERSION=${FLYWAY_PG_JDBC_VERSION:-42.7.8}
FLYWAY_JACKSON_VERSION=${FLYWAY_JACKSON_VERSION:-2.19.2}
# SeaweedFS (Apache-2.0) as the sandbox's S3 store with Object Lock; the proxy serves this pseudo-version (weed 4.53).
SEAWEEDFS_VERSION=${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}

CACHE=${GOVERNED_ROLLBACK_CACHE:-$HOME/.cache/governed-rollback}
K8S_BIN=$CACHE/k8s-$K8S_VERSION/bin
ETCD_BIN=$CACHE/etcd-$ETCD_VERSION/bin
KWOK_BIN=$CACHE/kwok-$KWOK_VERSION/bin
OPA_BIN=$CACHE/opa-$OPA_VERSION/bin
PROMETHEUS_BIN=$CACHE/prometheus-$PROMETHEUS_VERSION/bin
FLYWAY_LIB=$CACHE/flyway-$FLYWAY_VERSION/lib
SEAWEEDFS_BIN=$CACHE/seaweedfs-$SEAWEEDFS_VERSION/bin
# ---- gitops (issue 17): a git forge with a pull-request API and Flux's two controllers
GITEA_VERSION=${GITEA_VERSION:-v1.26.0}
FLUX_VERSION=${FLUX_VERSION:-v1.9.6}
GITEA_DIR=$CACHE/gitea-$GITEA_VERSION
GITEA_BIN=$GITEA_DIR/bin
FLUX_BIN=$CACHE/flux-$FLUX_VERSION/bin
# The digest of a seeded aureus-api release (seed.sh writes it into the config repository; the governed API that
# stands for aureus-api is told which one is the bad release): sha256 of "aureus/api:<version>".
gitops_digest() { printf 'sha256:%s' "$(printf 'aureus/api:%s' "$1" | sha256sum | cut -d' ' -f1)"; }

# ---- helm-controller (issue 17, the Helm values pin): Flux's helm-controller on the same source-controller API
# (source-controller/api v1.9.0, fluxcd/pkg/runtime v0.110.3) as source- and kustomize-controller v1.9.6.
FLUX_HELM_VERSION=${FLUX_HELM_VERSION:-v1.6.4}
FLUX_HELM_BIN=$CACHE/flux-helm-$FLUX_HELM_VERSION/bin
# The digest of a seeded release of another image: sha256 of "<image>:<version>" (aureus/web's Helm releases).
gitops_image_digest() { printf 'sha256:%s' "$(printf '%s:%s' "$1" "$2" | sha256sum | cut -d' ' -f1)"; }

# ---- argocd CRDs (issue 17): Argo CD's Application and AppProject CRDs, extracted from its Go module's zip (no
# controller: Argo CD v3.6 needs Go 1.27 to build, and a repo-server and Redis to run). The h1 hash is go.sum's line.
ARGOCD_VERSION=${ARGOCD_VERSION:-v3.6.1}
ARGOCD_MODULE_H1=${ARGOCD_MODULE_H1:-h1:OmhqeKiR3C//awbFrhQqFdtRI+Qiv17j8vqm3UkMj/g=}
ARGOCD_CRDS=$CACHE/argocd-crds-$ARGOCD_VERSION/crds

SANDBOX_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${GOVERNED_ROLLBACK_STATE:-$SANDBOX_ROOT/.sandbox}

PG_BINDIR=${PG_BINDIR:-$( (ls -d /usr/lib/postgresql/15/bin 2>/dev/null || dirname "$(command -v initdb 2>/dev/null || echo /x/initdb)") | head -1)}
