#!/usr/bin/env bash
# GPU checks and benchmarks in one call, for a CUDA machine with torch installed.
# Writes at most 8 files into $OUT (default: gpu-out/):
#   gpu.txt, bench.csv, log.txt, qf_report.md, qf_depth.png, full_report.md, full_depth.png, full_curves.png
# Usage: FASHION_SRC=/path/to/fashion-mnist-gz-files bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" RESEXP_DATA=${RESEXP_DATA:-/tmp/resexp-data}
R="python3 -m resexp"
SRC=${FASHION_SRC:-/usr/share/datasets/fashion-mnist}
exec > >(tee "$OUT/log.txt") 2>&1

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name())"
} | tee "$OUT/gpu.txt"

step() { echo "=== $1 ($(date +%T))"; }
bench() { local name=$1; shift; timeout "$@" || echo "bench $name: timed out or failed"; }

step "throughput, eager, CIFAR-shaped input (3x32x32), batch 128, bf16"
bench eager 150 $R bench --archs plain,resnet --depths 20,56,110 --steps 50 --out "$OUT/b1.csv" dataset=cifar10
step "throughput, 1202 layers, with and without activation checkpointing"
bench 1202 90 $R bench --archs resnet --depths 1202 --steps 10 --out "$OUT/b2.csv" dataset=cifar10
bench 1202ckpt 90 $R bench --archs resnet --depths 1202 --steps 10 --out "$OUT/b3.csv" dataset=cifar10 model.checkpoint_segments=8
step "throughput, torch.compile"
bench compile 150 $R bench --archs resnet --depths 56,110 --steps 50 --compile --out "$OUT/b4.csv" dataset=cifar10
python3 - "$OUT" <<'PY'
import sys, pandas as pd, pathlib
out = pathlib.Path(sys.argv[1]); parts = []
for i, f in enumerate(sorted(out.glob("b[0-9].csv"))):
    df = pd.read_csv(f); df["checkpoint_segments"] = 8 if f.name == "b3.csv" else 0; parts.append(df); f.unlink()
if parts: pd.concat(parts).to_csv(out / "bench.csv", index=False); print(pd.concat(parts).to_string(index=False))
PY

step "end to end: quick_fashion sweep on CUDA"
timeout 150 $R sweep experiment=quick_fashion --out /tmp/qf dataset.source="$SRC"
$R plot /tmp/qf --format png --out /tmp/qf/fig && cp /tmp/qf/fig/depth.png "$OUT/qf_depth.png"
$R report /tmp/qf > "$OUT/qf_report.md"

step "full Fashion-MNIST, depths 20/56/110, 12 epochs (time-boxed; partial results still plot)"
timeout 200 $R sweep experiment=quick_fashion --depths 20,56,110 --out /tmp/full dataset.source="$SRC" \
  dataset.train_subset=null dataset.test_subset=null train.epochs=12 'train.milestones=[8,10]'
$R plot /tmp/full --format png --out /tmp/full/fig && cp /tmp/full/fig/depth.png "$OUT/full_depth.png" \
  && cp /tmp/full/fig/curves.png "$OUT/full_curves.png"
$R report /tmp/full > "$OUT/full_report.md"
$R status /tmp/full
step "done"
