#!/usr/bin/env bash
# Install, lint, then run the whole test suite (CPU, offline; the slow real-data tests too).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check resexp tests scripts   # the linter first: seconds, and style stays one
.venv/bin/lint-imports                       # dependencies point one way (pyproject's [tool.importlinter])
# One pytest worker per core (pytest-xdist); an idle worker takes queued tests from a busy
# one (worksteal), so a few long tests at the end do not leave a core idle.
.venv/bin/python -m pytest -q -n "${RESEXP_TEST_WORKERS:-auto}" --dist worksteal --durations=15 "$@"
