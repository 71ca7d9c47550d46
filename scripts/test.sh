#!/usr/bin/env bash
# Install, lint, then run the whole test suite (CPU, offline; the slow real-data tests too).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check resexp tests scripts   # the linter first: seconds, and style stays one
# One pytest worker per core (pytest-xdist); tests that share the one-node SLURM run in one
# worker, one after another (xdist_group "slurm", --dist loadgroup).
.venv/bin/python -m pytest -q -n "${RESEXP_TEST_WORKERS:-auto}" --dist loadgroup --durations=15 "$@"
