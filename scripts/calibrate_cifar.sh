#!/usr/bin/env bash
# How the quick_cifar10 schedule was chosen, on real CIFAR-10 on the 2-core CPU it targets:
# 1. a cost probe (scripts/calibrate_cifar_probe.py): ms per iteration and per evaluated
#    image of every arch and depth, as wall and as CPU time (one thread);
# 2. candidate schedules at a quarter of the final cost (3 epochs of 2,000 images, warm-up
#    and lr drop scaled alike; depths 8 and 56, plain and resnet; 500 held-out images
#    evaluated), two runs at a time, one thread each.
# Prints the final training error of every run per candidate; calibration.csv collects both.
# Usage: CIFAR10_SRC=/path/holding/cifar-10-batches-bin bash scripts/calibrate_cifar.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-calib-cifar}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-.venv/bin/python}
SRC=${CIFAR10_SRC:-../shared/data/cifar10}
COMMON="experiment=quick_cifar10 dataset.source=$SRC train.threads=1 dataset.train_subset=2000"
COMMON+=" dataset.test_subset=500 train.epochs=3 train.milestones=[2] train.diagnostics=off"
declare -A CAND=(
  [b32lr05]="train.batch_size=32 train.lr=0.05 train.warmup_iters=63"
  [b32lr025]="train.batch_size=32 train.lr=0.025 train.warmup_iters=63"
)
[ -n "${SKIP_PROBE:-}" ] || $PY scripts/calibrate_cifar_probe.py "$SRC" "$OUT/probe.csv" 1 30
jobs_=()
for name in ${CANDIDATES:-b32lr05 b32lr025}; do
  for arch in plain resnet; do for depth in 56 8; do
    jobs_+=("$PY -m resexp train $COMMON ${CAND[$name]} model.arch=$arch model.depth=$depth --out $OUT/runs/$name")
  done; done
done
printf '%s\n' "${jobs_[@]}" | xargs -P 2 -I{} sh -c '{} > /dev/null 2>&1'
$PY - "$OUT" <<'PY'
import sys, pathlib, pandas as pd
out = pathlib.Path(sys.argv[1]); rows = []
for f in sorted(out.glob("runs/*/*/metrics.csv")):
    df = pd.read_csv(f); df["candidate"] = f.parts[-3]; df["run"] = f.parts[-2]; rows.append(df)
runs = pd.concat(rows); runs.to_csv(out / "candidates.csv", index=False)
last = runs.sort_values("epoch").groupby(["candidate", "run"]).tail(1)
print(last.pivot(index="run", columns="candidate", values="train_err").round(2).to_string())
print(last.pivot(index="run", columns="candidate", values="test_err").round(2).to_string())
PY
