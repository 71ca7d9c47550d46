#!/usr/bin/env bash
# `resexp bench` of another commit (A) and of this checkout (B), alternated in one run,
# so both see the same machine load; prints each model's best and median images/s and
# B/A of each. On a machine others are using, the best of several rounds is the closest
# to the uncontended speed; the median shows how much the load moved.
#   bash scripts/bench_ab.sh main 3 --archs resnet --depths 20,56 --steps 10 dataset=fashion_mnist
set -euo pipefail
cd "$(dirname "$0")/.."
REF=${1:?usage: bench_ab.sh REF ROUNDS [bench options]}; ROUNDS=${2:?rounds}; shift 2
source scripts/ab_trees.sh  # REF's tree in $WORK/a, $HERE, $PY; runs from $WORK/cwd
for i in $(seq "$ROUNDS"); do
  PYTHONPATH="$WORK/a" "$PY" -m resexp bench "$@" --out "$WORK/a_$i.csv" > /dev/null
  PYTHONPATH="$HERE" "$PY" -m resexp bench "$@" --out "$WORK/b_$i.csv" > /dev/null
done
"$PY" - "$WORK" "$ROUNDS" "$REF" <<'PY'
import sys
import pandas as pd
work, rounds, ref = sys.argv[1], int(sys.argv[2]), sys.argv[3]
read = lambda side: pd.concat(pd.read_csv(f"{work}/{side}_{i}.csv").assign(round=i) for i in range(1, rounds + 1))
a, b = read("a"), read("b")
keys = ["arch", "depth"]
table = pd.DataFrame({f"{ref} best": a.groupby(keys).images_per_s.max(),
                      "this best": b.groupby(keys).images_per_s.max()})
table["best ratio"] = (table["this best"] / table[f"{ref} best"]).round(3)
table[f"{ref} median"] = a.groupby(keys).images_per_s.median()
table["this median"] = b.groupby(keys).images_per_s.median()
table["median ratio"] = (table["this median"] / table[f"{ref} median"]).round(3)
per_round = lambda df: df.groupby(keys).images_per_s.apply(lambda s: " ".join(f"{v:.0f}" for v in s))  # noqa: E731
table[f"{ref} rounds"], table["this rounds"] = per_round(a), per_round(b)
pd.set_option("display.width", 250)
print(table.to_string())
PY
