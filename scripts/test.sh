#!/usr/bin/env bash
# Install, then run the whole test suite (CPU, offline; the slow real-data tests too).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/python -m pytest -q "$@"
