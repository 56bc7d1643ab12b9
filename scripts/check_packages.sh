#!/usr/bin/env bash
# Builds every package (sdist + wheel) from a copy of the tracked tree and checks what a user
# would install: py.typed, LICENSE, README as long description, classifiers, twine check, mypy on
# a user script. Needs the .venv of scripts/setup.sh (build, twine, mypy, setuptools). ~30 s.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/check_packages.py "$@"
