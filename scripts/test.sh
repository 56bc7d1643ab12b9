#!/usr/bin/env bash
# Installs what it needs, then runs the lint and the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy  # the core's public modules, strict ([tool.mypy] in pyproject.toml)
bash scripts/check_packages.sh  # build every package and check its sdist and wheel
bash scripts/docs.sh  # the documentation site, strict (tests/test_docs.py runs its code blocks)
.venv/bin/python -m benchmarks --quick  # smoke run of the benchmark suite: figures, no timing asserts
.venv/bin/python -m pytest "$@"
