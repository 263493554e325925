#!/usr/bin/env bash
# Seed the runbooks' world into a running sandbox. With --reset, first put everything back in its
# "incident" state (aureus-frontend on the problematic v0.1.2 with revisions 1..3, config, database
# at v0.1.2, PEP on policy v2.1 (ConfigMap and the bundle server's bundle), AUREUS Guard's
# credit_risk_pipeline_v2 corrupted with its good snapshot),
# so drills are repeatable. `seed.sh --reset guard` resets and seeds AUREUS Guard only (a second, not minutes);
# `seed.sh --reset database` resets the database aureus_metadata only; `seed.sh --reset config` the config history of
# aureus-config only; `seed.sh --reset gitops` the GitOps loop of aureus-api only (the bad release back through git).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=sandbox/versions.sh
. "$HERE/versions.sh"
# shellcheck disable=SC1091
. "$STATE/env"
RESET=${1:-}
ONLY=${2:-}
SEED=$HERE/seed
k() { "$SANDBOX_KUBECTL" --cache-dir "$SANDBOX_KUBECTL_CACHE" "$@"; }
psql_su() { "$SANDBOX_PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$STATE/pg/run" -p "$PGPORT" -U postgres "$@"; }

# ---- canaries: secret values that tests search every artifact for ----------------------------
if [ ! -f "$STATE/canaries.env" ]; then
    {
        echo "export SANDBOX_CANARY_DB_PASSWORD=canary-dbpw-$(openssl rand -hex 12)"
        echo "export SANDBOX_CANARY_API_TOKEN=canary-token-$(openssl rand -hex 16)"
    } >"$STATE/canaries.env"
    cat "$STATE/canaries.env" >>"$STATE/env"
fi
# shellcheck disable=SC1091
. "$STATE/canaries.env"

# ---- GitOps: the config repository aureus-deploy in Gitea, reconciled by Flux (gitops rollback) -----------------
# History of apps/aureus-api: the base manifests, release v1.4.0 (last known good), release v1.5.0 (the bad one),
# each release setting the image digest in the Kustomization's images:. --reset puts the bad release back through
# git only: open rollback pull requests closed, ops/rollback-* branches deleted, main force-pushed to the seeded bad
# release commit, a freeze lifted, and a reconcile requested; the cluster's workload is never edited.
# `seed.sh --reset gitops` does this block alone.
gitea_api() {  # METHOD PATH [JSON]: the Gitea API with the token read from its 0600 header file
    curl -sf -X "$1" -H @"$SANDBOX_GITEA_AUTH_HEADER_FILE" -H 'Content-Type: application/json' \
        ${3:+--data "$3"} "$SANDBOX_GITEA_URL/api/v1$2"
}
gitops_git() {  # git with the forge's credentials in a 0600 config file (GIT_CONFIG_GLOBAL), never on argv
    GIT_CONFIG_GLOBAL=$STATE/gitops/gitconfig GIT_CONFIG_NOSYSTEM=1 GIT_TERMINAL_PROMPT=0 git "$@"
}
gitops_release() {  # DIR VERSION MESSAGE DATE: one release commit setting aureus-api's image digest
    sed "s#@DIGEST@#$(gitops_digest "$2")#" "$SEED/gitops/repo/apps/aureus-api/kustomization.yaml.in" \
        >"$1/apps/aureus-api/kustomization.yaml"
    gitops_git -C "$1" add -A
    GIT_AUTHOR_DATE=$4 GIT_COMMITTER_DATE=$4 gitops_git -C "$1" -c user.name="Release Pipeline" \
        -c user.email=release@aureus.example commit -q -m "$3"
}
gitops_web_release() {  # DIR VERSION: aureus-web's HelmRelease with that release's image (tag and digest)
    sed -e "s#@DIGEST@#$(gitops_image_digest aureus/web "$2")#" -e "s#@TAG@#${2#v}#" \
        "$SEED/gitops/repo/apps/aureus-web/helmrelease.yaml.in" >"$1/apps/aureus-web/helmrelease.yaml"
}
flux_reconcile() {  # ask Flux to reconcile now (what `flux reconcile` does)
    local now; now=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
    RECONCILE_AT=$now
    k -n flux-system annotate --overwrite gitrepository/aureus-deploy "reconcile.fluxcd.io/requestedAt=$now" >/dev/null
    k -n flux-system annotate --overwrite kustomization/aureus-api "reconcile.fluxcd.io/requestedAt=$now" >/dev/null
    k -n flux-system annotate --overwrite kustomization/aureus-web "reconcile.fluxcd.io/requestedAt=$now" >/dev/null
    k -n flux-system annotate --overwrite helmrelease/aureus-web "reconcile.fluxcd.io/requestedAt=$now" \
        >/dev/null 2>&1 || true  # not there before the first apply
}
gitops_web_settled() {  # BAD_SHA: aureus-web (Helm) is on its bad release v2.1.0 at that commit, Ready, rolled out
    local hr
    [ "$(k -n flux-system get kustomization aureus-web -o jsonpath='{.status.lastAppliedRevision}' 2>/dev/null)" = "main@sha1:$1" ] || return 1
    if [ -z "${WEB_RECONCILE_AT:-}" ]; then
        # The HelmRelease exists now: a one-off forced upgrade to this reset's values (forceAt with requestedAt), so
        # an emergency undo of the Deployment is put back too (helm-controller does not correct drift by default).
        WEB_RECONCILE_AT=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
        k -n flux-system annotate --overwrite helmrelease/aureus-web "reconcile.fluxcd.io/requestedAt=$WEB_RECONCILE_AT" \
            "reconcile.fluxcd.io/forceAt=$WEB_RECONCILE_AT" >/dev/null 2>&1 || { WEB_RECONCILE_AT=; return 1; }
    fi
    hr=$(k -n flux-system get helmrelease aureus-web -o jsonpath='{.metadata.generation}={.status.observedGeneration} {.status.lastHandledReconcileAt} {.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)
    [ "${hr%% *}" = "${hr%%=*}=${hr%%=*}" ] || return 1
    [ "${hr#* }" = "$WEB_RECONCILE_AT True" ] || return 1
    [ "$(k -n aureus get deployment aureus-web -o jsonpath='{.spec.template.spec.containers[0].image}' 2>/dev/null)" = "aureus/web@$(gitops_image_digest aureus/web v2.1.0)" ] \
        && k -n aureus rollout status deployment/aureus-web --timeout=1s >/dev/null 2>&1
}
seed_gitops() {
    local gs=$STATE/gitops work bad owner=$SANDBOX_GITEA_USER
    install -d -m 700 "$gs"
    printf '[http]\n\textraHeader = Authorization: Basic %s\n' \
        "$(printf '%s:%s' "$owner" "$(cat "$SANDBOX_GITEA_TOKEN_FILE")" | base64 -w0)" >"$gs/gitconfig"
    chmod 600 "$gs/gitconfig"
    k apply -f "$SEED/aureus-namespace.yaml" >/dev/null
    # A repository seeded before aureus-web's HelmRelease existed is seeded again (its history is the seed's own).
    if gitea_api GET "/repos/$owner/aureus-deploy" >/dev/null 2>&1 \
       && ! gitea_api GET "/repos/$owner/aureus-deploy/contents/apps/aureus-web/helmrelease.yaml" >/dev/null 2>&1; then
        gitea_api DELETE "/repos/$owner/aureus-deploy" >/dev/null
    fi
    if ! gitea_api GET "/repos/$owner/aureus-deploy" >/dev/null 2>&1; then
        gitea_api POST /user/repos '{"name":"aureus-deploy","default_branch":"main","private":false,"description":"Desired state of the AUREUS platform (Flux)"}' >/dev/null
        work=$(mktemp -d)
        cp -r "$SEED/gitops/repo/." "$work/" && rm "$work/apps/aureus-api/kustomization.yaml.in"
        rm "$work/apps/aureus-web/helmrelease.yaml.in"
        gitops_git -C "$work" init -q -b main
        sed "s#@DIGEST@#$(gitops_digest v1.3.0)#" "$SEED/gitops/repo/apps/aureus-api/kustomization.yaml.in" \
            >"$work/apps/aureus-api/kustomization.yaml"
        gitops_web_release "$work" v2.0.0
        gitops_git -C "$work" add -A
        GIT_AUTHOR_DATE=2026-11-01T09:00:00Z GIT_COMMITTER_DATE=2026-11-01T09:00:00Z gitops_git -C "$work" \
            -c user.name="Platform Team" -c user.email=platform@aureus.example commit -q -m "aureus-api: base manifests, release v1.3.0"
        # aureus-web (Helm): its good release v2.0.0 came with the base, its bad release v2.1.0 before aureus-api's
        gitops_web_release "$work" v2.1.0
        gitops_git -C "$work" add -A
        GIT_AUTHOR_DATE=2026-11-05T09:00:00Z GIT_COMMITTER_DATE=2026-11-05T09:00:00Z gitops_git -C "$work" \
            -c user.name="Release Pipeline" -c user.email=release@aureus.example commit -q -m "release: aureus-web v2.1.0"
        gitops_release "$work" v1.4.0 "release: aureus-api v1.4.0" 2026-11-10T09:00:00Z
        gitops_release "$work" v1.5.0 "release: aureus-api v1.5.0" 2026-11-20T09:00:00Z
        gitops_git -C "$work" push -q "$SANDBOX_GITOPS_REPO_URL" main
        gitops_git -C "$work" rev-parse HEAD~1 >"$gs/good.sha"
        gitops_git -C "$work" rev-parse HEAD >"$gs/bad.sha"
        rm -rf "$work"
    fi
    bad=$(cat "$gs/bad.sha")
    if [ "$RESET" = --reset ]; then
        # rollback pull requests and branches a drill left, then main back to the bad release
        for n in $(gitea_api GET "/repos/$owner/aureus-deploy/pulls?state=open&limit=50" \
                   | python3 -c 'import json,sys; print(" ".join(str(p["number"]) for p in json.load(sys.stdin) or []))'); do
            gitea_api PATCH "/repos/$owner/aureus-deploy/pulls/$n" '{"state":"closed"}' >/dev/null
        done
        for b in $(gitea_api GET "/repos/$owner/aureus-deploy/branches?limit=100" \
                   | python3 -c 'import json,sys; print(" ".join(b["name"] for b in json.load(sys.stdin) or [] if b["name"].startswith("ops/")))'); do
            gitea_api DELETE "/repos/$owner/aureus-deploy/branches/$b" >/dev/null
        done
        work=$(mktemp -d)
        gitops_git clone -q "$SANDBOX_GITOPS_REPO_URL" "$work"
        gitops_git -C "$work" push -q --force origin "$bad:refs/heads/main"
        rm -rf "$work"
        k -n flux-system patch kustomization aureus-api --type merge -p '{"spec":{"suspend":null}}' >/dev/null 2>&1 || true
        k -n flux-system annotate kustomization aureus-api freeze.governed.io/record- >/dev/null 2>&1 || true
        k -n flux-system patch helmrelease aureus-web --type merge -p '{"spec":{"suspend":null}}' >/dev/null 2>&1 || true
        k -n flux-system annotate helmrelease aureus-web freeze.governed.io/record- >/dev/null 2>&1 || true
    fi
    sed "s#@URL@#$SANDBOX_GITOPS_REPO_URL#" "$SEED/gitops/flux.yaml.in" | k apply -f - >/dev/null
    flux_reconcile
    local want; want="aureus/api@$(gitops_digest v1.5.0)"
    for _ in $(seq 1 240); do
        if [ "$(k -n flux-system get gitrepository aureus-deploy -o jsonpath='{.status.artifact.revision}' 2>/dev/null)" = "main@sha1:$bad" ] \
           && [ "$(k -n aureus get deployment aureus-api -o jsonpath='{.spec.template.spec.containers[0].image}' 2>/dev/null)" = "$want" ] \
           && k -n aureus rollout status deployment/aureus-api --timeout=1s >/dev/null 2>&1 \
           && [ "$(k -n flux-system get gitrepository aureus-deploy -o jsonpath='{.status.lastHandledReconcileAt}' 2>/dev/null)" = "$RECONCILE_AT" ] \
           && [ "$(k -n flux-system get kustomization aureus-api -o jsonpath='{.status.lastHandledReconcileAt} {.status.lastAppliedRevision} {.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Reconciling")].status}' 2>/dev/null)" = "$RECONCILE_AT main@sha1:$bad True " ] \
           && gitops_web_settled "$bad"; then
            # Flux has settled too: both objects handled this reset's reconcile request, the Kustomization is Ready
            # at the bad release and no longer reconciling, so no status write of this reset is still to come
            return 0
        fi
        sleep 0.5
    done
    echo "sandbox: Flux did not deploy aureus-api $want from $SANDBOX_GITOPS_REPO_URL ($bad) within 120s" >&2
    k -n flux-system get gitrepository,kustomization -o wide >&2 || true
    return 1
}
if [ "$ONLY" = gitops ]; then
    seed_gitops
    echo "sandbox: aureus-deploy seeded; aureus-api on release v1.5.0 (main at $(cut -c1-12 "$STATE/gitops/bad.sha"))"
    exit 0
fi

# ---- Config history of aureus-config (configuration rollback, playbooks/rollback-config.yml) ---------------------
# Kubernetes keeps no history of a ConfigMap, so the deploy pipeline records one with config_revert state=snapshot:
# the good content (what seed/aureus-config.yaml holds, deployed with v0.1.1), then the bad push (a retention of 30
# days and a rate limit of 10000: "Incorrect retention policy causing compliance issue"), each a snapshot object
# labelled rollback.governed.io/source-name=aureus-config. Every run ends with the bad content live and both
# snapshots present; --reset first deletes the snapshots (and what rollbacks left: fled marks, pre-revert copies).
# `seed.sh --reset config` does this block alone (seconds), leaving everything else as it is.
seed_config_history() {
    if [ "$RESET" = --reset ]; then
        k -n aureus delete configmap --ignore-not-found >/dev/null \
            -l rollback.governed.io/config-snapshot=true,rollback.governed.io/source-name=aureus-config
    fi
    k apply -f "$SEED/aureus-config.yaml" >/dev/null
    config_snapshot "deploy v0.1.1 (config known good)"
    k -n aureus patch configmap aureus-config --type merge \
        -p '{"data":{"evidence.retention.days":"30","ratelimit.query.limit":"10000"}}' >/dev/null
    config_snapshot "deploy v0.1.2 config (retention and rate limit changed)"
}
config_snapshot() {  # REASON: record aureus-config's current content the way a deploy pipeline does
    PYTHONPATH="$HERE/../build/collections" "$HERE/../.venv/bin/python" - "$1" <<'PY'
import os
import sys
from ansible_collections.governed.rollback.plugins.module_utils._k8s import KubeRest, build_api_client
from ansible_collections.governed.rollback.plugins.modules import config_revert
params = dict((k, v.get("default")) for k, v in config_revert.argument_spec().items())
params.update(state="snapshot", namespace="aureus", name="aureus-config", actor="deploy-pipeline", reason=sys.argv[1],
              kubeconfig=os.environ["KUBECONFIG"])
outcome = config_revert.execute(KubeRest(build_api_client(params)), params)
if outcome.failed_msg:
    sys.exit("sandbox: config snapshot of aureus/aureus-config failed: %s" % outcome.failed_msg)
PY
}
if [ "$ONLY" = config ]; then
    seed_config_history
    echo "sandbox: aureus-config seeded with its history (good, then bad: $(k -n aureus get configmap \
        -l rollback.governed.io/source-name=aureus-config -o name | wc -l) snapshots)"
    exit 0
fi

# ---- PostgreSQL: role aureus, database aureus_metadata at migration v0.1.2 --------------------
# Seeded before AUREUS Guard and the cluster, so `seed.sh --reset database` resets the database alone (a second):
# drills and tests of the database rollback (playbooks/rollback-db.yml) reset it without touching anything else.
# aureus may create databases: playbooks/restore-db.yml restores a backup into a new one and swaps the names.
if [ -z "$ONLY" ] || [ "$ONLY" = database ]; then
    if [ "$RESET" = --reset ]; then
        psql_su -d postgres -c "DROP DATABASE IF EXISTS aureus_metadata WITH (FORCE)"
        # what restore-db.yml drills left behind: the kept pre-restore databases and abandoned restores
        for leftover in $(psql_su -d postgres -tAc "SELECT datname FROM pg_database WHERE datname LIKE 'aureus\_metadata\_pre\_restore\_%' OR datname LIKE 'aureus\_metadata\_restoring\_%'"); do
            psql_su -d postgres -c "DROP DATABASE IF EXISTS \"$leftover\" WITH (FORCE)"
        done
    fi
    if ! psql_su -d postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname='aureus'" | grep -q 1; then
        psql_su -d postgres -c "CREATE ROLE aureus LOGIN PASSWORD '$PGPASSWORD'"
    fi
    if ! psql_su -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='aureus_metadata'" | grep -q 1; then
        psql_su -d postgres -c "CREATE DATABASE aureus_metadata OWNER aureus"
        {
            echo "BEGIN;"
            echo "CREATE TABLE schema_migrations (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now(), checksum text NOT NULL);"
            for m in v0.1.0-initial-schema v0.1.1-add-dataset-owner v0.1.2-add-pii-tracking-table; do
                cat "$SEED/migrations/$m/up.sql"
                echo "INSERT INTO schema_migrations (version, checksum) VALUES ('$m', '$(sha256sum "$SEED/migrations/$m/up.sql" | cut -d' ' -f1)');"
                [ "$m" = v0.1.1-add-dataset-owner ] && cat <<'SQL'
INSERT INTO datasets (name, pii_level, owner) VALUES
  ('credit_risk', 'high', 'risk-team'), ('loan_book', 'low', 'lending'), ('test_dataset', 'none', 'qa'),
  ('customer_profiles', 'high', 'crm'), ('branch_metrics', 'none', 'ops');
SQL
            done
            echo "INSERT INTO pii_access_tracking (dataset_id, accessed_by) SELECT id, 'analyst-' || id FROM datasets WHERE pii_level <> 'none';"
            echo "COMMIT;"
        } | PGPASSWORD=$PGPASSWORD "$SANDBOX_PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" -U aureus -d aureus_metadata >/dev/null
    fi
    psql_su -d postgres -c "ALTER ROLE aureus CREATEDB" >/dev/null
fi
if [ "$ONLY" = database ]; then
    echo "sandbox: database aureus_metadata seeded at $(psql_su -d aureus_metadata -tAc "SELECT max(version) FROM schema_migrations")"
    exit 0
fi

# ---- AUREUS Guard: pipelines and their snapshots, deployed through its API -----------------------
# --reset also cancels running restores and clears injected faults (sandbox/guard/seed_guard.py).
if [ -n "${SANDBOX_GUARD_URL:-}" ]; then
    "$SANDBOX_GUARD_PYTHON" "$HERE/guard/seed_guard.py" ${RESET:+"$RESET"}
else
    echo "sandbox: this sandbox was started before AUREUS Guard existed; restart it (sandbox/down.sh && sandbox/up.sh)" >&2
    [ "$ONLY" != guard ] || exit 1
fi
if [ "$ONLY" = guard ]; then
    exit 0
fi

# ---- Container logs (CRI format) that KWOK serves for every pod --------------------------------
# The frontend "leaks" a bearer token in an error line, as real apps do: evidence must mask it.
mkdir -p "$STATE/kwok-logs"
cat >"$STATE/kwok-logs/current.log" <<LOG
2026-11-21T10:00:00.000000000Z stdout F {"level":"info","msg":"aureus-frontend listening","addr":":8080"}
2026-11-21T10:00:01.000000000Z stdout F 10.0.0.1 - - "GET /health HTTP/1.1" 200 2
2026-11-21T10:00:02.000000000Z stderr F {"level":"error","msg":"upstream rejected request","status":401,"header":"Authorization: Bearer $SANDBOX_CANARY_API_TOKEN"}
2026-11-21T10:00:03.000000000Z stdout F {"level":"warn","msg":"slow query","dataset":"credit_risk","ms":812}
2026-11-21T10:00:04.000000000Z stdout F 10.0.0.1 - - "POST /api/query HTTP/1.1" 500 31
LOG
cat >"$STATE/kwok-logs/previous.log" <<LOG
2026-11-21T09:59:58.000000000Z stderr F {"level":"fatal","msg":"panic: nil map write in query planner","goroutine":41}
LOG

# ---- Kubernetes ----------------------------------------------------------------------------
k apply -f "$SEED/aureus-namespace.yaml" -f "$SEED/aureus-config.yaml" >/dev/null
k -n aureus create secret generic aureus-secrets --from-literal=db-password="$SANDBOX_CANARY_DB_PASSWORD" \
    --from-literal=api-token="$SANDBOX_CANARY_API_TOKEN" --dry-run=client -o yaml | k apply -f - >/dev/null
until k get sa default -n aureus >/dev/null 2>&1; do sleep 0.3; done

seed_frontend_history() {
    k create -f "$SEED/aureus-frontend.yaml" >/dev/null
    k -n aureus rollout status deployment/aureus-frontend --timeout=120s >/dev/null
    k -n aureus patch deployment aureus-frontend --type strategic -p \
        '{"metadata":{"annotations":{"kubernetes.io/change-cause":"Update to v0.1.1"}},"spec":{"template":{"spec":{"containers":[{"name":"frontend","image":"aureus/frontend:v0.1.1"}]}}}}' >/dev/null
    k -n aureus rollout status deployment/aureus-frontend --timeout=120s >/dev/null
    # v0.1.2 is the problematic release: KWOK's chaos stage fails its containers, so it never becomes Ready.
    k -n aureus patch deployment aureus-frontend --type strategic -p \
        '{"metadata":{"annotations":{"kubernetes.io/change-cause":"Update to v0.1.2"}},"spec":{"template":{"metadata":{"labels":{"pod-container-running-failed.stage.kwok.x-k8s.io":"true"}},"spec":{"containers":[{"name":"frontend","image":"aureus/frontend:v0.1.2"}]}}}}' >/dev/null
    for _ in $(seq 1 100); do
        [ "$(k -n aureus get rs -l component=frontend -o name | wc -l)" -ge 3 ] && break
        sleep 0.2
    done
}

if [ "$RESET" = --reset ]; then
    k -n aureus delete deployment aureus-frontend --ignore-not-found --cascade=foreground --wait=true --timeout=120s >/dev/null
    k apply -f "$SEED/aureus-namespace.yaml" -f "$SEED/aureus-config.yaml" >/dev/null
fi
if ! k -n aureus get deployment aureus-frontend >/dev/null 2>&1; then
    seed_frontend_history
fi

# The config incident (see "Config history of aureus-config" above): good content recorded, then the bad push.
seed_config_history

# The PEP: ConfigMap aureus-policies holds the active policy (v2.1), mounted by Deployment aureus-policy.
k -n aureus create configmap aureus-policies --from-file="$SEED/policies/v2.1/pii-access-policy.rego" \
    --from-file="$SEED/policies/v2.1/policy-manifest.json" --dry-run=client -o yaml | k apply -f - >/dev/null
k apply -f "$SEED/aureus-policy.yaml" >/dev/null

# ---- Policy repository (git) with history, and the OPA server's active bundle ----------------
REPO=$SANDBOX_POLICY_REPO
if [ ! -d "$REPO/.git" ]; then
    mkdir -p "$REPO/policies"
    git -C "$REPO" init -q -b main
    for v in v2.0 v2.1; do
        cp "$SEED/policies/$v/"* "$REPO/policies/"
        git -C "$REPO" add -A
        GIT_AUTHOR_DATE="2024-01-1${v#v2.}T10:00:00Z" GIT_COMMITTER_DATE="2024-01-1${v#v2.}T10:00:00Z" \
            git -C "$REPO" -c user.name="Governance Lead" -c user.email=governance.lead@example.com \
            commit -q -m "pii-access-requires-approval $v"
        git -C "$REPO" tag "pii-access-requires-approval-$v"
    done
fi
if [ "$RESET" = --reset ] || [ -z "$(ls -A "$SANDBOX_POLICY_ACTIVE" 2>/dev/null)" ]; then
    rm -rf "${SANDBOX_POLICY_ACTIVE:?}"/*
    git -C "$REPO" archive pii-access-requires-approval-v2.1 policies | tar -x -C "$SANDBOX_POLICY_ACTIVE" --strip-components=1
    rm -f "$SANDBOX_POLICY_ACTIVE"/*_test.rego
fi

# ---- Policy bundle server: bundles/aureus.tar.gz = v2.1, as `opa build --revision <sha>` makes it --------------
# OPA polls it (sandbox/up.sh); --reset publishes v2.1 again and waits until OPA reports it active.
publish_policy_bundle() {
    local tag=pii-access-requires-approval-v2.1 build sha
    sha=$(git -C "$REPO" rev-parse "$tag^{commit}")
    build=$(mktemp -d)
    git -C "$REPO" archive "$sha" policies | tar -x -C "$build"
    printf '{"revision":"%s","roots":["aureus"]}\n' "$sha" >"$build/policies/.manifest"
    (cd "$build/policies" && "$SANDBOX_OPA" build -b . --ignore '*_test.rego' --revision "$sha" \
        -o "$build/aureus.tar.gz")
    mkdir -p "$SANDBOX_BUNDLE_SERVER_DIR/bundles"
    cp "$build/aureus.tar.gz" "$SANDBOX_BUNDLE_SERVER_DIR/bundles/.aureus.tar.gz.seed"
    mv -f "$SANDBOX_BUNDLE_SERVER_DIR/bundles/.aureus.tar.gz.seed" "$SANDBOX_BUNDLE_SERVER_DIR/bundles/aureus.tar.gz"
    rm -rf "$build"
    for _ in $(seq 1 60); do
        curl -sf "$SANDBOX_OPA_URL/v1/status" | grep -q "\"active_revision\":\"$sha\"" && return 0
        sleep 0.5
    done
    echo "sandbox: OPA did not activate policy bundle $sha from $SANDBOX_BUNDLE_SERVER_URL within 30s" >&2
    return 1
}
if [ -z "${SANDBOX_BUNDLE_SERVER_DIR:-}" ]; then
    echo "sandbox: this sandbox was started before the policy bundle server existed; restart it (sandbox/down.sh && sandbox/up.sh)" >&2
elif [ "$RESET" = --reset ] || [ ! -f "$SANDBOX_BUNDLE_SERVER_DIR/bundles/aureus.tar.gz" ]; then
    publish_policy_bundle
fi
if [ "$RESET" = --reset ]; then  # a policy rollback's revision marks would now describe v2.1 wrongly
    k -n aureus annotate configmap aureus-policies policy.governed.io/revision- policy.governed.io/version- >/dev/null 2>&1 || true
fi

if [ -n "${SANDBOX_GITEA_URL:-}" ]; then  # a sandbox started before the GitOps loop existed has no Gitea
    seed_gitops
fi

echo "sandbox: seeded (aureus-frontend revisions: $(k -n aureus get rs -l component=frontend \
    -o jsonpath='{range .items[*]}{.metadata.annotations.deployment\.kubernetes\.io/revision}{" "}{end}'))"
