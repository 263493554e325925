#!/usr/bin/env bash
# Build the collection's docs site into docs/site/build/html: antsibull-docs renders the modules' and roles' own
# documentation, and the README and docs/*.md (the walkthrough, approvals, the plan contract, the architecture)
# become guide pages through MyST. Offline: no intersphinx, -W makes any warning an error.
# Run through `make docs` (the release tools' venv, .venv-release, and the collection link must exist).
set -euo pipefail
SITE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$SITE/../.." && pwd)
cd "$SITE"
rm -rf rst build
mkdir -p rst
chmod og-w rst  # antsibull-docs wants the directory readable by itself only
antsibull-docs --config-file antsibull-docs.cfg collection --cleanup everything --use-current --dest-dir rst \
    governed.rollback
# The guides: the same Markdown the repository shows, with its relative layout, so links between them resolve.
mkdir -p rst/guides/docs
cp "$ROOT/README.md" rst/guides/README.md
cp "$ROOT"/docs/*.md rst/guides/docs/
cp guides.rst ansible_refs.rst rst/
printf '\n.. toctree::\n   :maxdepth: 1\n   :caption: Guides\n\n   guides\n' >>rst/index.rst
sphinx-build -M html rst build -c . -q -W --keep-going
echo "docs site: $SITE/build/html/index.html"
