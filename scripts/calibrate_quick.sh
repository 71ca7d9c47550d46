#!/usr/bin/env bash
# How the quick_fashion schedule was chosen: several candidate schedules, each with the
# same budget of ~64k training images per run (what 2 CPU cores train in ~10 minutes
# over depths 8/20/56 x plain/resnet), trained as parallel processes on one GPU
# (fp32, like the CPU). Prints the final training error of every run per candidate.
# Usage: FASHION_SRC=/path/with/fashion-mnist-gz bash scripts/calibrate_quick.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-calib-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" RESEXP_DATA=${RESEXP_DATA:-/tmp/resexp-data}
SRC=${FASHION_SRC:-/usr/share/datasets/fashion-mnist}
declare -A CAND=(
  [b128]="dataset.train_subset=8000 train.epochs=8 train.batch_size=128 train.milestones=[6]"
  [b32]="dataset.train_subset=8000 train.epochs=8 train.batch_size=32 train.milestones=[6]"
  [b32lr05]="dataset.train_subset=8000 train.epochs=8 train.batch_size=32 train.lr=0.05 train.milestones=[6]"
  [b32n16k]="dataset.train_subset=16000 train.epochs=4 train.batch_size=32 train.milestones=[3]"
  [b32warm]="dataset.train_subset=8000 train.epochs=8 train.batch_size=32 train.milestones=[6] train.warmup_iters=200"
)
# stage the data once, before the parallel runs
python3 -m resexp train experiment=quick_fashion dataset.source="$SRC" model.depth=8 train.epochs=1 \
  dataset.train_subset=128 --out /tmp/stage > /dev/null 2>&1
for name in "${!CAND[@]}"; do
  for arch in plain resnet; do for depth in 8 20 56; do
    timeout ${RUN_LIMIT:-220} python3 -m resexp train experiment=quick_fashion dataset.source="$SRC" \
      model.arch=$arch model.depth=$depth train.amp=false train.threads=1 ${CAND[$name]} \
      --out /tmp/calib/$name > /tmp/calib-$name-$arch-$depth.log 2>&1 &
  done; done
done
wait
python3 - "$OUT" <<'PY'
import sys, pathlib, pandas as pd
rows = []
for f in pathlib.Path("/tmp/calib").glob("*/*/metrics.csv"):
    df = pd.read_csv(f); df["candidate"] = f.parts[-3]; df["run"] = f.parts[-2]; rows.append(df)
all_ = pd.concat(rows); all_.to_csv(pathlib.Path(sys.argv[1]) / "calib.csv", index=False)
last = all_.sort_values("epoch").groupby(["candidate", "run"]).tail(1)
print(last.pivot(index="run", columns="candidate", values="train_err").round(2).to_string())
print(last.pivot(index="run", columns="candidate", values="epoch").to_string())
PY
