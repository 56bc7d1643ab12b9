#!/usr/bin/env bash
# Creates .venv (if missing) and installs every package of the repository, editable, with its
# test extras and the pinned versions of constraints.txt. Idempotent. Used by demo.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt)
# torch first, at the pinned version: a plain resolve could pick a newer CUDA build.
"${pip[@]}" torch
packages=(-e "core[test]")
for pkg in accelerate_*/ plugins/*/; do
  # Example plugins (plugins/accelerate-example-*) stand for third-party packages: their tests
  # install them into a temporary directory, because in .venv they would be in every test run.
  case "$pkg" in plugins/accelerate-example-*) continue ;; esac
  if [ -f "${pkg}pyproject.toml" ]; then
    packages+=(-e "${pkg%/}[test]")
  fi
done
packages+=(-e examples)  # accelerate-core-examples: python -m accelerate_core_examples.quickstart
"${pip[@]}" "${packages[@]}" "$@"
