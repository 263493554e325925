#!/usr/bin/env bash
# ansible-test needs the collection at ansible_collections/governed/rollback/: copy the tracked
# (and new, not ignored) files there and run sanity with no ignore file.
# SANITY_SOURCE=<dir>: test that directory instead (an installed copy of the collection: make release).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# A private copy per run, so concurrent runs do not pull the tree from under each other.
WORK=$(mktemp -d "$ROOT/build/sanity.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
DEST=$WORK/ansible_collections/governed/rollback
mkdir -p "$DEST"
if [ -n "${SANITY_SOURCE:-}" ]; then
    cp -r "$SANITY_SOURCE"/. "$DEST"/
else
    git ls-files -co --exclude-standard -z | grep -zv '^sandbox/tools/' | xargs -0 cp --parents -t "$DEST" 2>/dev/null || true
fi
# ansible-test downloads a get-pip script from a host outside the package registries; seed its cache.
PIPV=$(sed -n "s/.*pip_version=['\"]\([0-9.]*\)['\"].*/\1/p" "$ROOT"/.venv/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py | head -1)
PIPV=${PIPV:-24.2}
mkdir -p ~/.ansible/test/cache
cp "$ROOT/sandbox/get_pip_offline.py" ~/.ansible/test/cache/get_pip_"${PIPV//./_}".py
cd "$DEST"
git init -q . && git add -A >/dev/null 2>&1 && git -c user.email=ci@local -c user.name=ci commit -qm sanity >/dev/null
"$ROOT/.venv/bin/ansible-test" sanity --python 3.11 --local --color no "$@"
