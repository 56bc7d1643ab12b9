#!/usr/bin/env bash
# Creates .venv (if missing) and installs every package of the repository with the pinned versions
# of constraints.txt. Idempotent: a second run installs nothing new. Used by demo.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch first, from the pinned version: a plain resolve could pick a newer CUDA build.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt torch
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt \
  -e "core[test]" "$@"
