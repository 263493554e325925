#!/usr/bin/env bash
# Seed the runbooks' world into a running sandbox. With --reset, first put everything back in its
# "incident" state (aureus-frontend on the problematic v0.1.2 with revisions 1..3, config, database
# at v0.1.2, PEP on policy v2.1, AUREUS Guard's credit_risk_pipeline_v2 corrupted with its good snapshot),
# so drills are repeatable. `seed.sh --reset guard` resets and seeds AUREUS Guard only (a second, not minutes).
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

# The PEP: ConfigMap aureus-policies holds the active policy (v2.1), mounted by Deployment aureus-policy.
k -n aureus create configmap aureus-policies --from-file="$SEED/policies/v2.1/pii-access-policy.rego" \
    --from-file="$SEED/policies/v2.1/policy-manifest.json" --dry-run=client -o yaml | k apply -f - >/dev/null
k apply -f "$SEED/aureus-policy.yaml" >/dev/null

# ---- PostgreSQL: role aureus, database aureus_metadata at migration v0.1.2 --------------------
if [ "$RESET" = --reset ]; then
    psql_su -d postgres -c "DROP DATABASE IF EXISTS aureus_metadata WITH (FORCE)"
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

echo "sandbox: seeded (aureus-frontend revisions: $(k -n aureus get rs -l component=frontend \
    -o jsonpath='{range .items[*]}{.metadata.annotations.deployment\.kubernetes\.io/revision}{" "}{end}'))"
