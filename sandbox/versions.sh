# Versions and paths of the sandbox's components; sourced by the other sandbox scripts.
# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this file
K8S_VERSION=${K8S_VERSION:-v1.33.13}
ETCD_VERSION=${ETCD_VERSION:-v3.5.21}
KWOK_VERSION=${KWOK_VERSION:-v0.7.0}
OPA_VERSION=${OPA_VERSION:-v1.22.2}

CACHE=${GOVERNED_ROLLBACK_CACHE:-$HOME/.cache/governed-rollback}
K8S_BIN=$CACHE/k8s-$K8S_VERSION/bin
ETCD_BIN=$CACHE/etcd-$ETCD_VERSION/bin
KWOK_BIN=$CACHE/kwok-$KWOK_VERSION/bin
OPA_BIN=$CACHE/opa-$OPA_VERSION/bin

SANDBOX_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${GOVERNED_ROLLBACK_STATE:-$SANDBOX_ROOT/.sandbox}

PG_BINDIR=${PG_BINDIR:-$( (ls -d /usr/lib/postgresql/15/bin 2>/dev/null || dirname "$(command -v initdb 2>/dev/null || echo /x/initdb)") | head -1)}
