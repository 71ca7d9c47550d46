#!/usr/bin/env bash
# Install, lint, then run the whole test suite (CPU, offline; the slow real-data tests too).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check resexp tests scripts   # the linter first: seconds, and style stays one
.venv/bin/python -m pytest -q "$@"
