#!/usr/bin/env bash
# `resexp status DIR` of another commit (A) and of this checkout (B), alternated in one run
# so both see the same machine load; prints each side's wall times, medians and B/A.
#   bash scripts/bench_status.sh 8890b74 5 results/quick_fashion_3seeds
set -euo pipefail
cd "$(dirname "$0")/.."
REF=${1:?usage: bench_status.sh REF ROUNDS DIR}; ROUNDS=${2:?rounds}; DIR=$(realpath "${3:?results folder}")
source scripts/ab_trees.sh  # REF's tree in $WORK/a, $HERE, $PY; runs from $WORK/cwd
time_one() {  # milliseconds of one `resexp status` with PYTHONPATH=$1
  local start end
  start=$(date +%s%N)
  PYTHONPATH="$1" "$PY" -m resexp status "$DIR" > /dev/null
  end=$(date +%s%N)
  echo $(((end - start) / 1000000))
}
a=() b=()
for _ in $(seq "$ROUNDS"); do
  a+=("$(time_one "$WORK/a")")
  b+=("$(time_one "$HERE")")
done
"$PY" - "$REF" "${a[*]}" "${b[*]}" <<'PY'
import statistics, sys
ref, a, b = sys.argv[1], [int(v) / 1000 for v in sys.argv[2].split()], [int(v) / 1000 for v in sys.argv[3].split()]
print(f"{ref}: " + " ".join(f"{v:.2f}" for v in a) + f"  median {statistics.median(a):.2f} s")
print("this: " + " ".join(f"{v:.2f}" for v in b) + f"  median {statistics.median(b):.2f} s")
print(f"this / {ref}: {statistics.median(b) / statistics.median(a):.2f}")
PY
