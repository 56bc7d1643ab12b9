#!/usr/bin/env bash
# Installs what it needs, then trains the quickstart model on the default device, printing losses.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python examples/quickstart.py "$@"
