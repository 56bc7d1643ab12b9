#!/usr/bin/env bash
# Builds the documentation site into site/ (MkDocs + Material + mkdocstrings, mkdocs.yml) in
# strict mode: any warning (a broken link or anchor, a page missing from the nav, a docstring
# mkdocstrings cannot read, an include that is not there) fails the build. Installs what it needs
# into .venv first (docs/requirements.txt, pinned by constraints.txt); the build itself imports
# no package, so it needs no torch. tests/test_docs.py runs the pages' code blocks.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt \
  -r docs/requirements.txt
# NO_MKDOCS_2_WARNING: Material prints a banner about MkDocs 2 and Zensical on every build.
NO_MKDOCS_2_WARNING=1 .venv/bin/python -m mkdocs build --strict --clean "$@"
