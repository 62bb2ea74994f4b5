#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), then lints and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/pytest -q -rs "$@"
