#!/usr/bin/env bash
# Every GPU check of resexp in one call, time-boxed to end well inside 8 minutes.
#
#   bash scripts/gpu_check.sh --fetch-wheels   # here, with PyPI: hydra-core, omegaconf, antlr4 into .whl/
#   bash scripts/gpu_check.sh                  # on the CUDA machine (carry .whl/ there if hydra is missing)
#   bash scripts/gpu_check.sh --cpu-smoke      # the same steps, tiny, on the CPU: checks the script itself
#
# Steps, most important first; each is skipped once the time budget is spent:
#   1. environment (nvidia-smi, torch, cuDNN)         -> env.txt
#   2. CUDA tests: capture, lr changes inside the graph, checkpoint restore into it,
#      resume and divergence (tests/test_cuda.py)
#   3. bench: graphed vs eager vs the conventional trainer (--baseline), plain/resnet 20/56/110 -> bench.csv
#   4. graphed vs eager per-step loss, first 300 steps of one seed, eager twice for the noise -> compare.csv;
#      the same for 100 steps with train.deterministic=true, where they should be equal -> compare_det.csv
#   5. ResNet-1202: graphed and eager, and graphed with activation checkpointing -> deep.csv
#   6. sweep --jobs 2 vs --jobs 1 on one GPU (both workers share it)  -> jobs.csv
#   7. torch.compile(mode="reduce-overhead") as the alternative to our own graph (in log.txt)
# Everything goes to $OUT (default: gpu-out/) as at most 8 files, log.txt included.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-gpu}

if [[ $MODE == --fetch-wheels ]]; then
  # Pure-Python wheels the CUDA image lacks (same versions as the venv here).
  mkdir -p .whl && rm -f .whl/*.whl
  PIP="${PYTHON:-.venv/bin/python} -m pip"
  $PIP download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .whl hydra-core==1.3.8 omegaconf==2.3.1 || exit 1
  $PIP wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3 || exit 1  # PyPI has only its sdist
  ls -l .whl
  exit 0
fi

SMOKE=0
[[ $MODE == --cpu-smoke ]] && SMOKE=1
if (( SMOKE )); then
  PY=${PYTHON:-.venv/bin/python}; OUT=${OUT:-/tmp/gpu-check-smoke}; DEADLINE=${DEADLINE:-300}
else
  PY=${PYTHON:-python3}; OUT=${OUT:-gpu-out}; DEADLINE=${DEADLINE:-420}
fi
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" RESEXP_DATA=${RESEXP_DATA:-/tmp/resexp-data}
if ! $PY -c "import hydra, omegaconf" 2>/dev/null; then
  [[ -d .whl ]] || { echo "hydra-core missing and no .whl/: run 'bash scripts/gpu_check.sh --fetch-wheels' first"; exit 2; }
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
exec > >(tee "$OUT/log.txt") 2>&1
TEE_PID=$!
R="$PY -m resexp"

# step NAME SECONDS CMD...: run CMD with at most SECONDS, and never past the DEADLINE.
step() {
  local name=$1 cap=$2; shift 2
  local left=$(( DEADLINE - SECONDS )); local limit=$(( cap < left ? cap : left ))
  echo "=== $name (at ${SECONDS}s, limit ${limit}s)"
  if (( limit < 15 )); then echo "$name: SKIPPED, time budget spent"; return 0; fi
  timeout "$limit" "$@" || echo "$name: FAILED or timed out (exit $?)"
}

# Synthetic, learnable images of CIFAR's shape, with CIFAR's augmentation (no download).
synthetic() {  # synthetic TRAIN_SIZE: the overrides, in the array SYN
  SYN=(dataset=synthetic dataset.channels=3 dataset.image_size=32 "dataset.mean=[0.5,0.5,0.5]"
    "dataset.std=[0.25,0.25,0.25]" dataset.augment.pad=4 dataset.augment.hflip=true
    dataset.train_args.size=$1 +dataset.train_args.channels=3 +dataset.train_args.image_size=32
    dataset.test_args.size=1000 +dataset.test_args.channels=3 +dataset.test_args.image_size=32)
}

if (( SMOKE )); then
  DEPTHS=8; STEPS=2; WORKERS=0; CMP=6; CMP_DET=4; CMP_DEPTH=8; DEEP=14; DEEP_STEPS=2; SEGMENTS=2; JOBS_N=640; JOBS_IT=6
  DEV=(train.device=cpu train.threads=1); SYN_N=264
else
  DEPTHS=20,56,110; STEPS=50; WORKERS=4; CMP=300; CMP_DET=100; CMP_DEPTH=56; DEEP=1202; DEEP_STEPS=10; SEGMENTS=8; JOBS_N=51200; JOBS_IT=1600
  DEV=(); SYN_N=12864   # 100 full batches of 128 and a partial one of 64 per epoch
fi

step "environment" 60 bash -c "{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || echo 'no nvidia-smi';
  $PY -c \"import torch, sys, platform; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| cudnn', torch.backends.cudnn.version(), '| device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu', '|', platform.processor() or platform.machine(), '|', __import__('os').cpu_count(), 'cpus')\";
  git log -1 --format='resexp commit %h %s' 2>/dev/null || true; } | tee '$OUT/env.txt'"

step "CUDA tests (tests/test_cuda.py)" 90 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py

step "bench: graphed vs eager vs conventional trainer" 200 \
  $R bench --archs plain,resnet --depths $DEPTHS --steps $STEPS --baseline --eager --workers $WORKERS \
  --out "$OUT/bench.csv" dataset=cifar10 "${DEV[@]}"

synthetic $SYN_N
step "graphed vs eager, per-step loss" 120 \
  $R bench --archs resnet --depths $CMP_DEPTH --compare-steps $CMP --out "$OUT/compare.csv" "${SYN[@]}" \
  train.warmup_iters=50 train.warmup_lr=0.01 train.warmup_from_depth=null train.milestone_unit=iterations "train.milestones=[200]" "${DEV[@]}"

# With deterministic kernels eager reruns are bit-identical, and a replay runs the eager
# step's kernels: graphed vs eager should then differ by nothing at all.
step "graphed vs eager, per-step loss, train.deterministic=true" 60 \
  $R bench --archs resnet --depths $CMP_DEPTH --compare-steps $CMP_DET --out "$OUT/compare_det.csv" "${SYN[@]}" \
  train.deterministic=true "${DEV[@]}"

step "deep net: graphed and eager" 120 \
  $R bench --archs resnet --depths $DEEP --steps $DEEP_STEPS --eager --out "$OUT/deep_a.csv" dataset=cifar10 "${DEV[@]}"
step "deep net: graphed, activation checkpointing" 90 \
  $R bench --archs resnet --depths $DEEP --steps $DEEP_STEPS --out "$OUT/deep_b.csv" dataset=cifar10 \
  model.checkpoint_segments=$SEGMENTS "${DEV[@]}"
$PY - "$OUT" <<'PY'
import pathlib, sys
import pandas as pd
out = pathlib.Path(sys.argv[1])
parts = [pd.read_csv(f) for f in (out / "deep_a.csv", out / "deep_b.csv") if f.exists()]
if parts:
    pd.concat(parts).to_csv(out / "deep.csv", index=False)
for f in ("deep_a.csv", "deep_b.csv"):
    (out / f).unlink(missing_ok=True)
PY

synthetic $JOBS_N
JOBS_CFG=(--archs plain,resnet --depths ${DEPTHS%%,*} "${SYN[@]}" train.iterations=$JOBS_IT
  "train.milestones=[]" train.warmup_iters=0 train.eval_batch_size=500 "${DEV[@]}")
rm -rf /tmp/gpu-check-jobs1 /tmp/gpu-check-jobs2
step "sweep --jobs 1" 75 $R sweep --jobs 1 --out /tmp/gpu-check-jobs1 "${JOBS_CFG[@]}"
step "sweep --jobs 2 (both workers on one GPU)" 75 $R sweep --jobs 2 --out /tmp/gpu-check-jobs2 "${JOBS_CFG[@]}"
$PY - "$OUT" <<'PY'
import json, pathlib, sys
import pandas as pd
rows = []
for jobs in (1, 2):
    for run in sorted(pathlib.Path(f"/tmp/gpu-check-jobs{jobs}").glob("*-s0")):
        m = pd.read_csv(run / "metrics.csv")
        s = json.loads((run / "summary.json").read_text())
        rows.append({"jobs": jobs, "run": run.name, "status": s["status"], "epochs": len(m),
                     "images_per_s_last_epoch": round(m.images_per_s.iloc[-1]),
                     "wall_seconds": round(s.get("wall_seconds", float("nan")), 1)})
table = pd.DataFrame(rows)
table.to_csv(pathlib.Path(sys.argv[1]) / "jobs.csv", index=False)
if len(table):
    print(table.to_string(index=False))
    total = table.groupby("jobs").images_per_s_last_epoch.sum()
    if {1, 2} <= set(total.index):
        print(f"2 runs at once on one GPU: {total[2]:.0f} img/s together vs {total[1] / 2:.0f} img/s "
              f"for one run alone (mean of the two) -> {total[2] / (total[1] / 2):.2f}x")
PY

if (( ! SMOKE )); then
  step "torch.compile(mode=reduce-overhead), resnet-56, eager step around it" 120 $PY - <<'PY'
import time
import torch
from resexp.settings.compose import load_config
from resexp.data import random_data
from resexp.train.step import EagerStep
from resexp.train.loop import setup, train_epoch

steps = 50
cfg = load_config(["dataset=cifar10", "model.arch=resnet", "model.depth=56", "train.cuda_graphs=false",
                   "train.log_every=1000000"])
s = setup(cfg, random_data(cfg.dataset, steps * cfg.train.batch_size, torch.device("cuda")))
forward = torch.compile(s.model, mode="reduce-overhead")
s.step = EagerStep(s.model, forward, cfg.train, s.device, s.amp, s.channels_last)
start = time.perf_counter()
train_epoch(cfg, s, 1, 0)
warm = time.perf_counter() - start
for epoch in (2, 3):
    stats = train_epoch(cfg, s, epoch, 0)
    print(f"reduce-overhead resnet-56: {stats['images_per_s']:.0f} img/s "
          f"({1000 * stats['train_seconds'] / steps:.2f} ms/step; first epoch incl. compile {warm:.0f} s)")
PY
fi

echo "=== summary (at ${SECONDS}s)"
$PY - "$OUT" <<'PY'
import pathlib, sys
import pandas as pd
out = pathlib.Path(sys.argv[1])
pd.set_option("display.width", 200)
for name, cols in (("bench.csv", ["arch", "depth", "step", "images_per_s", "ms_per_step", "peak_mem_mb", "vs_baseline",
                                  "eval_images_per_s"]),
                   ("deep.csv", ["arch", "depth", "step", "checkpoint_segments", "images_per_s", "ms_per_step", "peak_mem_mb"])):
    if (out / name).exists():
        print(pd.read_csv(out / name)[cols].to_string(index=False))
for name in ("compare.csv", "compare_det.csv"):
    if (out / name).exists():
        c = pd.read_csv(out / name)
        print(f"{name}: per-step loss over {len(c)} steps: max |graphed-eager| {c.graphed_vs_eager.max():.4g}, "
              f"max |eager-eager| {c.eager_vs_eager.max():.4g}")
PY
echo "=== done at ${SECONDS}s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exec >&- 2>&-
wait "$TEE_PID"  # let tee write the last lines (a bare wait would hang on the process substitution)
