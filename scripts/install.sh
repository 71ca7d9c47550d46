#!/usr/bin/env bash
# Install resexp into ./.venv (and the real Fashion-MNIST files, from Debian's package).
# Safe to rerun: an existing venv is reused.
set -euo pipefail
cd "$(dirname "$0")/.."

FASHION=/usr/share/datasets/fashion-mnist
if [ ! -d "$FASHION" ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if command -v apt-get >/dev/null; then
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
  fi
  [ -d "$FASHION" ] || echo "warning: $FASHION missing; pass dataset.source=FOLDER with the four *-ubyte.gz files" >&2
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# Compat editable mode: the clone's root goes on sys.path through a .pth file, so Python run
# from the folder that holds this clone still imports the package, not the clone folder as a
# namespace package (the default mode's behaviour), and a dataset YAML added later is seen at
# once (strict mode links only the files present at install; docs/python-api.md measures all three).
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]" --config-settings editable_mode=compat
echo "installed: $(.venv/bin/resexp --help >/dev/null && echo resexp) in $PWD/.venv"
