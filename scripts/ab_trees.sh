# Sourced by the A/B benchmarks (bench_ab.sh, bench_status.sh) from the repository root, with
# REF set: REF's tree in $WORK/a and this checkout at $HERE, both run by $PY, from a neutral
# working folder (python puts the working folder first on sys.path); $WORK goes on exit.
HERE=$PWD PY=${PYTHON:-$PWD/.venv/bin/python}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/a" "$WORK/cwd"
git archive "$REF" | tar -x -C "$WORK/a"
cd "$WORK/cwd"
