#!/usr/bin/env bash
# The checks a release passes (make release runs them on the artifact it just built):
#   1. galaxy-importer, as Galaxy and Automation Hub run it on upload (its checks that need no container engine), and
#      its ansible-lint call on the installed copy (run here: galaxy-importer gives ansible-lint 180 s, which a busy
#      2-core machine can exceed, and then fails on the timeout, not on a finding);
#   2. ansible-test sanity on the installed copy (ansible-galaxy collection install into an empty path);
#   3. ansible-builder create on awx/execution-environment.yml, and the context's Python pins match ours.
# Usage: hacking/release_check.sh ARTIFACT.tar.gz   (PATH must start with .venv-release/bin, then .venv/bin)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ARTIFACT=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
WORK=$(mktemp -d "$ROOT/build/release.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

echo "release: galaxy-importer on $(basename "$ARTIFACT")"
cat >"$WORK/importer.cfg" <<CFG
[galaxy-importer]
RUN_ANSIBLE_TEST = False
RUN_ANSIBLE_LINT = False
RUN_ANSIBLE_DOC = True
CFG
(cd "$WORK" && GALAXY_IMPORTER_CONFIG="$WORK/importer.cfg" python -m galaxy_importer.main "$ARTIFACT" >"$WORK/importer.log" 2>&1) \
    || { cat "$WORK/importer.log" >&2; echo "release: galaxy-importer failed" >&2; exit 1; }
if grep -E '^(WARNING|ERROR)' "$WORK/importer.log" >&2; then
    echo "release: galaxy-importer reported the problems above" >&2; exit 1
fi
grep -q 'Importer processing completed successfully' "$WORK/importer.log"

echo "release: install into an empty path, then ansible-test sanity on the installed copy"
ANSIBLE_COLLECTIONS_PATH="$WORK/installed" "$ROOT/.venv/bin/ansible-galaxy" collection install --force \
    -p "$WORK/installed" "$ARTIFACT" >/dev/null
test -f "$WORK/installed/ansible_collections/governed/rollback/MANIFEST.json"
INSTALLED="$WORK/installed/ansible_collections/governed/rollback"
echo "release: galaxy-importer's ansible-lint call on the installed copy"
(cd "$INSTALLED" && ANSIBLE_COLLECTIONS_PATH="$WORK/installed" ANSIBLE_LOCAL_TEMP="$WORK/tmp" XDG_CACHE_HOME="$WORK/tmp" \
    ansible-lint --profile production --exclude tests/integration/ --exclude tests/unit/ --format=pep8 --nocolor \
    -x yaml,var-naming,avoid-dot-notation,import-task-no-when,single-entry-point,use-loop --offline)
SANITY_SOURCE="$INSTALLED" "$ROOT/sandbox/sanity.sh"

echo "release: ansible-builder create (awx/execution-environment.yml)"
ansible-builder create -f "$ROOT/awx/execution-environment.yml" -c "$WORK/ee" >/dev/null
pins() { grep -E '^[A-Za-z0-9_.-]+==' "$1" | sed 's/[[:space:]]*#.*//' | tr 'A-Z_' 'a-z-' | sort; }
diff <(pins "$WORK/ee/_build/requirements.txt") <(pins "$ROOT/requirements.txt" | grep -v '^ansible-core==') \
    || { echo "release: the execution environment's Python pins differ from requirements.txt" >&2; exit 1; }
grep -q "ansible-core==$(sed -n 's/^ansible-core==//p' "$ROOT/requirements.txt")" "$WORK/ee/Dockerfile" \
    || { echo "release: the execution environment's ansible-core differs from requirements.txt" >&2; exit 1; }
for need in 'opa' 'postgresql' 'git'; do
    grep -qi "$need" "$WORK/ee/Dockerfile" "$WORK/ee/_build/bindep.txt" \
        || { echo "release: the execution environment does not bring $need" >&2; exit 1; }
done
echo "release: $(basename "$ARTIFACT") passed galaxy-importer, sanity on the installed copy and ansible-builder create"
