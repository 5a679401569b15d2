#!/usr/bin/env bash
# Set up, then lint, type-check and run the whole test suite (unit, integration, slow).
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check platform operators tests bench
.venv/bin/ruff format --check platform operators tests bench
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
