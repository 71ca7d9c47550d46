#!/usr/bin/env bash
# Every GPU check of resexp in one call; it ends inside 8 minutes and says PASS or FAIL.
#
#   bash scripts/gpu_check.sh --fetch-wheels   # here, with PyPI: hydra-core, omegaconf, antlr4 into .whl/
#   bash scripts/gpu_check.sh                  # on the CUDA machine (carry .whl/ there if hydra is missing)
#   bash scripts/gpu_check.sh --cpu-smoke      # the same steps, tiny, on the CPU: checks the script itself
#   bash scripts/gpu_check.sh --verdict DIR    # only the verdict, over the files of an earlier run in DIR
#
# Steps, most important first, each with its own cap (CAP below), at least twice the work
# estimated for it (EST below); the caps and the kill grace of each step add up to less than
# the deadline, and `timeout -k` ends a hung step:
#   1. environment (nvidia-smi, torch, cuDNN)         -> env.txt
#   2. CUDA tests: capture, self-check, lr changes inside the graph, checkpoint restore,
#      BN stats and eval output against the eager step, resume and divergence (tests/test_cuda.py)
#   3. bench: graphed vs eager vs the conventional trainer (--baseline), ResNet-20/56/110 -> bench.csv;
#      the speeds count full batches (as the conventional trainer, which drops the last one), and
#      the partial batch of a real epoch is timed on its own (partial_batch_ms)
#   4. graphed vs eager per-step loss, first 300 steps of one seed, eager twice for the noise -> compare.csv;
#      the same for 60 steps with train.deterministic=true, where they must be equal -> compare_det.csv
#   5. ResNet-1202: graphed and eager, and graphed with activation checkpointing -> deep.csv
#   6. sweep --jobs 2 vs --jobs 1 on one GPU (both workers share it)  -> jobs.csv
# Then the verdict: one PASS or FAIL line per check and target, and RESULT on the last line.
# Exit 1 when anything failed: a step's exit status, a timeout, a step not reached in time,
# a "warning: CUDA graph ..." line (a failed capture or self-check), a row that should be
# graphed and is not, graphed != eager under deterministic kernels, a per-step gap beyond
# its tolerance, a missed target. Everything goes to $OUT (default: gpu-out/), log.txt included.
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
# What the verdict expects: the default step on the GPU is the graph; on the CPU the eager step.
if (( SMOKE )); then
  export EXPECT_STEP=eager SPEED_TARGETS="8:0" DEEP_DEPTH=14 SMOKE
else
  export EXPECT_STEP=${EXPECT_STEP:-graphed} SPEED_TARGETS=${SPEED_TARGETS:-"20:4,56:3,110:3"} \
    DEEP_DEPTH=${DEEP_DEPTH:-1202} SMOKE
fi
export MEM_TARGET_MB=${MEM_TARGET_MB:-6144}  # ResNet-1202 in <= 6 GB reserved, partial batch included

# verdict DIR: PASS/FAIL per check from the files in DIR; exit status 1 if any failed.
verdict() {
  ${PY:-${PYTHON:-python3}} - "$1" <<'PY'
import math, os, pathlib, sys
import pandas as pd
out, expect, smoke = pathlib.Path(sys.argv[1]), os.environ["EXPECT_STEP"], os.environ.get("SMOKE") == "1"
failed = 0
def say(ok, text):
    global failed
    ok = None if ok is None else bool(ok)  # (a numpy bool is not False)
    failed += ok is False
    print(f"{'PASS' if ok else 'FAIL' if ok is False else 'n/a '}  {text}")
def read(name):
    path = out / name
    if not path.exists():
        say(False, f"{name} missing (its step failed or was not reached)")
        return None
    return pd.read_csv(path)
def kinds(rows, what):
    """Rows of resexp's own step (not the baseline) must be the expected step, or eager on purpose."""
    wrong = rows[~rows.step.isin([expect, "eager"]) & ~rows.step.str.startswith("baseline")]
    for r in wrong.itertuples():
        say(False, f"{what} {r.arch}-{r.depth}: step is {r.step!r}, not {expect!r}")
    return rows[rows.step == expect]

bench = read("bench.csv")
if bench is not None:
    mine = kinds(bench, "bench")
    for target in os.environ["SPEED_TARGETS"].split(","):
        depth, ratio = int(target.split(":")[0]), float(target.split(":")[1])
        row = mine[(mine.arch == "resnet") & (mine.depth == depth)]
        if row.empty:
            say(False, f"resnet-{depth}: no {expect} row in bench.csv")
        else:
            got = row.vs_baseline.iloc[0]
            say(got >= ratio, f"resnet-{depth}: {expect} {got:.2f}x the conventional trainer (target >= {ratio:g}x)")
deep = read("deep.csv")
if deep is not None:
    mine = kinds(deep, "deep")
    depth, limit = int(os.environ["DEEP_DEPTH"]), float(os.environ["MEM_TARGET_MB"])
    rows = mine[mine.depth == depth]
    if rows.empty:
        say(False, f"resnet-{depth}: no {expect} row in deep.csv")
    else:
        timed = (rows.partial_batch > 0) & rows.partial_batch_ms.notna()
        say(bool(timed.all()), f"resnet-{depth}: the partial batch timed on its own, inside the peak memory: "
            + ", ".join(f"{int(r.partial_batch)} images {r.partial_batch_ms:g} ms" for r in rows.itertuples()))
        best = rows.sort_values("peak_reserved_mb").iloc[0]
        how = f"checkpoint_segments={best.checkpoint_segments}"
        if pd.isna(best.peak_reserved_mb):
            say(None if smoke else False, f"resnet-{depth}: no reserved memory measured ({how})")
        else:
            say(best.peak_reserved_mb <= limit, f"resnet-{depth}: {best.peak_reserved_mb:.0f} MB reserved at most "
                f"({how}, {expect}; target <= {limit:.0f} MB)")
# Per-step loss of two runs that are both right differs by the device's own noise: the
# graphed-vs-eager gap must stay within twice the eager-vs-eager gap, plus 0.02.
cmp = read("compare.csv")
if cmp is not None:
    gap, noise = cmp.graphed_vs_eager.mean(), cmp.eager_vs_eager.mean()
    say(bool(gap <= 2 * noise + 0.02), f"graphed vs eager, {len(cmp)} steps: mean per-step loss gap {gap:.4g} "
        f"(tolerance 2 x eager-vs-eager {noise:.4g} + 0.02)")
det = read("compare_det.csv")
if det is not None:
    gap, noise = det.graphed_vs_eager.max(), det.eager_vs_eager.max()
    say(bool(gap == 0 and noise == 0), f"graphed vs eager, train.deterministic=true, {len(det)} steps: "
        f"max per-step loss gap {gap:.4g} (eager vs eager {noise:.4g}; both must be 0)")
jobs = read("jobs.csv")
if jobs is not None:
    for jobs_n, runs in jobs.groupby("jobs"):
        ok = (runs.status == "done").all() and (runs.train_step == expect).all()
        if expect == "graphed":
            ok = ok and (runs.graph_check == "passed").all()
        say(bool(ok) and len(runs) == 2, f"sweep --jobs {jobs_n}: {len(runs)} runs "
            f"{', '.join(f'{r.run} {r.status} {r.train_step} (self-check {r.graph_check})' for r in runs.itertuples())}")
    if set(jobs.jobs) != {1, 2}:
        say(False, f"jobs.csv has sweeps --jobs {sorted(set(jobs.jobs))}, not 1 and 2")
sys.exit(1 if failed else 0)
PY
}

if [[ $MODE == --verdict ]]; then
  verdict "${2:?--verdict DIR}"
  exit $?
fi

# Each step's work on one H100, estimated in seconds (arithmetic, not yet measured: docs/gpu.md):
# a Python process that imports torch and starts CUDA ~8; batches of 128 at the H100 rates of
# docs/benchmarks.md (eager ResNet-20/56/110/1202: 8/22/44/398 ms, checkpointed 1202: 892 ms;
# graphed 20/56/110 at the prototype's 2/5.5/11 ms).
#   env 4          nvidia-smi and one torch import
#   tests 25       8 + five CUDA tests of ResNet-8 (captures, cuDNN's searches, a few in-process runs)
#   bench 35       8 + per depth 101 graphed and 101 eager steps, 2 partial batches each, 100 conventional
#                  steps with 4 workers started: 20 ~5, 56 ~7, 110 ~12
#   compare 24     8 + 300 ResNet-56 steps eagerly twice (a sync each: 13) and graphed once (2), 12,864 images
#   compare_det 14 8 + 60 such steps with deterministic kernels (about 1.5x slower)
#   deep 28        8 + ResNet-1202 built twice (3), 21 eager steps (8.4) and 21 graphed ones (4 eager, 3),
#                  4 partial batches (1.2) and 4 evaluation passes (2)
#   deep_ckpt 19   8 + 21 graphed steps with recomputation (4 eager: 3.6, the rest 3), 2 partial batches, eval
#   jobs1 16       8 + two runs one after the other: 12,800 images generated (0.4), 600 ResNet-20 steps
#                  (1.5), 6 evaluations and checkpoints (0.6), set-up and capture (1)
#   jobs2 22       8 + two worker processes starting at once (8) + both runs on one GPU (5)
# A step that does not end within its cap gets SIGTERM, then SIGKILL after the grace.
declare -A EST=([env]=4 [tests]=25 [bench]=35 [compare]=24 [compare_det]=14 [deep]=28 [deep_ckpt]=19
                [jobs1]=16 [jobs2]=22)
declare -A CAP=([env]=10 [tests]=50 [bench]=80 [compare]=50 [compare_det]=30 [deep]=60 [deep_ckpt]=40
                [jobs1]=35 [jobs2]=45)
KILL_GRACE=5
for key in "${!CAP[@]}"; do
  if (( CAP[$key] < 2 * EST[$key] )); then
    echo "gpu_check: step $key's cap of ${CAP[$key]}s is under twice its estimated ${EST[$key]}s"
    exit 2
  fi
done
if (( SMOKE )); then
  # A busy 2-core CPU starts each worker process slowly: twice the time, the same arithmetic.
  PY=${PYTHON:-.venv/bin/python}; OUT=${OUT:-/tmp/gpu-check-smoke}; DEADLINE=${DEADLINE:-900}
  for key in "${!CAP[@]}"; do CAP[$key]=$(( 2 * CAP[$key] )); done
else
  PY=${PYTHON:-python3}; OUT=${OUT:-gpu-out}; DEADLINE=${DEADLINE:-450}
fi
BUDGET=0
for key in "${!CAP[@]}"; do BUDGET=$(( BUDGET + CAP[$key] + KILL_GRACE )); done
if (( BUDGET >= DEADLINE )); then
  echo "gpu_check: the step caps and kill graces add up to ${BUDGET}s, not less than the ${DEADLINE}s deadline"
  exit 2
fi
mkdir -p "$OUT"
rm -f "$OUT"/*.csv "$OUT"/env.txt
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" RESEXP_DATA=${RESEXP_DATA:-/tmp/resexp-data}
if ! $PY -c "import hydra, omegaconf" 2>/dev/null; then
  [[ -d .whl ]] || { echo "hydra-core missing and no .whl/: run 'bash scripts/gpu_check.sh --fetch-wheels' first"; exit 2; }
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
exec > >(tee "$OUT/log.txt") 2>&1
TEE_PID=$!
R="$PY -m resexp"
STEP_OUT=$(mktemp)
FAILS=()
echo "gpu_check: $MODE, deadline ${DEADLINE}s, step caps and kill graces ${BUDGET}s"

# step KEY NAME CMD...: run CMD for at most CAP[KEY] seconds, never past the deadline.
step() {
  local key=$1 name=$2; shift 2
  local left=$(( DEADLINE - SECONDS - KILL_GRACE ))
  local limit=$(( CAP[$key] < left ? CAP[$key] : left ))
  echo "=== $name (at ${SECONDS}s, limit ${limit}s)"
  if (( limit < 5 )); then FAILS+=("$name: not run, the time budget is spent"); return; fi
  timeout -k "$KILL_GRACE" "$limit" "$@" 2>&1 | tee "$STEP_OUT"
  local rc=${PIPESTATUS[0]}
  if (( rc == 124 || rc == 137 )); then FAILS+=("$name: timed out after ${limit}s")
  elif (( rc != 0 )); then FAILS+=("$name: exit status $rc"); fi
  local warned; warned=$(grep -m1 "warning: CUDA graph" "$STEP_OUT")
  [[ -n $warned ]] && FAILS+=("$name: $warned")
  return 0
}

# Synthetic, learnable images of CIFAR's shape, with CIFAR's augmentation (no download).
synthetic() {  # synthetic TRAIN_SIZE TEST_SIZE: the overrides, in the array SYN
  SYN=(dataset=synthetic dataset.channels=3 dataset.image_size=32 "dataset.mean=[0.5,0.5,0.5]"
    "dataset.std=[0.25,0.25,0.25]" dataset.augment.pad=4 dataset.augment.hflip=true
    dataset.train_args.size=$1 +dataset.train_args.channels=3 +dataset.train_args.image_size=32
    dataset.test_args.size=$2 +dataset.test_args.channels=3 +dataset.test_args.image_size=32)
}

if (( SMOKE )); then
  DEPTHS=8; STEPS=2; WORKERS=0; CMP=6; CMP_DET=4; CMP_DEPTH=8; DEEP_STEPS=2; SEGMENTS=2; JOBS_N=264; JOBS_IT=5
  TEST_N=200; DEV=(train.device=cpu train.threads=1); SYN_N=264
  DEEP=(train.batch_size=32)  # 50,000 % 32 = 16: the timed epochs still end in a partial batch
else
  DEPTHS=20,56,110; STEPS=50; WORKERS=4; CMP=300; CMP_DET=60; CMP_DEPTH=56; DEEP_STEPS=10; SEGMENTS=8
  JOBS_N=12800; JOBS_IT=600; TEST_N=1000; DEV=(); SYN_N=12864   # 100 full batches of 128, a partial one of 64
  DEEP=()
fi

step env "environment" bash -c "{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || echo 'no nvidia-smi';
  $PY -c \"import torch, sys, platform; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| cudnn', torch.backends.cudnn.version(), '| device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu', '|', platform.processor() or platform.machine(), '|', __import__('os').cpu_count(), 'cpus')\";
  git log -1 --format='resexp commit %h %s' 2>/dev/null || true; } | tee '$OUT/env.txt'"

# (the tests of this script itself, in the same file, run on the CPU in CI; the smoke leaves
# the CUDA tests to that suite, which runs this very smoke too)
if (( SMOKE )); then
  echo "=== CUDA tests (tests/test_cuda.py): left to the test suite in --cpu-smoke"
else
  step tests "CUDA tests (tests/test_cuda.py)" $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py -k "not gpu_check"
fi

step bench "bench: graphed vs eager vs conventional trainer" \
  $R bench --archs resnet --depths $DEPTHS --steps $STEPS --baseline --eager --workers $WORKERS \
  --out "$OUT/bench.csv" dataset=cifar10 "${DEV[@]}"

synthetic $SYN_N $TEST_N
step compare "graphed vs eager, per-step loss" \
  $R bench --archs resnet --depths $CMP_DEPTH --compare-steps $CMP --out "$OUT/compare.csv" "${SYN[@]}" \
  train.warmup_iters=50 train.warmup_lr=0.01 train.warmup_from_depth=null train.milestone_unit=iterations "train.milestones=[200]" "${DEV[@]}"

# With deterministic kernels eager reruns are bit-identical, and a replay runs the eager
# step's kernels with the same lr tensor and fused SGD: graphed and eager must not differ at all.
step compare_det "graphed vs eager, per-step loss, train.deterministic=true" \
  $R bench --archs resnet --depths $CMP_DEPTH --compare-steps $CMP_DET --out "$OUT/compare_det.csv" "${SYN[@]}" \
  train.deterministic=true "${DEV[@]}"

step deep "deep net: graphed and eager" \
  $R bench --archs resnet --depths $DEEP_DEPTH --steps $DEEP_STEPS --eager --out "$OUT/deep_a.csv" dataset=cifar10 "${DEEP[@]}" "${DEV[@]}"
step deep_ckpt "deep net: graphed, activation checkpointing" \
  $R bench --archs resnet --depths $DEEP_DEPTH --steps $DEEP_STEPS --out "$OUT/deep_b.csv" dataset=cifar10 \
  model.checkpoint_segments=$SEGMENTS "${DEEP[@]}" "${DEV[@]}"
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

synthetic $JOBS_N $TEST_N
JOBS_CFG=(--archs plain,resnet --depths ${DEPTHS%%,*} "${SYN[@]}" train.iterations=$JOBS_IT
  "train.milestones=[]" train.warmup_iters=0 train.eval_batch_size=500 train.diagnostics=off "${DEV[@]}")
rm -rf /tmp/gpu-check-jobs1 /tmp/gpu-check-jobs2
step jobs1 "sweep --jobs 1" $R sweep --jobs 1 --out /tmp/gpu-check-jobs1 "${JOBS_CFG[@]}"
step jobs2 "sweep --jobs 2 (both workers on one GPU)" $R sweep --jobs 2 --out /tmp/gpu-check-jobs2 "${JOBS_CFG[@]}"
$PY - "$OUT" <<'PY'
import json, pathlib, sys
import pandas as pd
rows = []
for jobs in (1, 2):
    for run in sorted(pathlib.Path(f"/tmp/gpu-check-jobs{jobs}").glob("*-s0")):
        m = pd.read_csv(run / "metrics.csv")
        s = json.loads((run / "summary.json").read_text())
        check = s.get("graph_check") or {}
        rows.append({"jobs": jobs, "run": run.name, "status": s["status"], "train_step": s.get("train_step"),
                     "graph_check": check.get("result", "none"), "epochs": len(m),
                     "images_per_s_last_epoch": round(m.images_per_s.iloc[-1]),
                     "wall_seconds": round(s.get("wall_seconds", float("nan")), 1)})
table = pd.DataFrame(rows)
if len(table):
    table.to_csv(pathlib.Path(sys.argv[1]) / "jobs.csv", index=False)
    print(table.to_string(index=False))
    total = table.groupby("jobs").images_per_s_last_epoch.sum()
    if {1, 2} <= set(total.index):
        print(f"2 runs at once on one GPU: {total[2]:.0f} img/s together vs {total[1] / 2:.0f} img/s "
              f"for one run alone (mean of the two) -> {total[2] / (total[1] / 2):.2f}x")
PY

echo "=== tables (at ${SECONDS}s)"
$PY - "$OUT" <<'PY'
import pathlib, sys
import pandas as pd
out = pathlib.Path(sys.argv[1])
pd.set_option("display.width", 200)
cols = ["arch", "depth", "step", "checkpoint_segments", "images_per_s", "ms_per_step",
        "peak_mem_mb", "peak_reserved_mb", "vs_baseline", "eval_images_per_s"]
for name in ("bench.csv", "deep.csv"):
    if (out / name).exists():
        t = pd.read_csv(out / name)
        print(t[[c for c in cols if c in t]].to_string(index=False))
        # Not in images_per_s, nor in the ratio to the conventional trainer (which drops it):
        part = t[t.get("partial_batch_ms", pd.Series(dtype=float)).notna()]
        for r in part.itertuples():
            print(f"  partial batch of {r.arch}-{r.depth} ({r.step}): {int(r.partial_batch)} images, eager, "
                  f"{r.partial_batch_ms:g} ms")
PY
echo "=== verdict (at ${SECONDS}s)"
for failure in "${FAILS[@]}"; do echo "FAIL  step $failure"; done
verdict "$OUT"
checks=$?
rm -f "$STEP_OUT"
if (( checks == 0 && ${#FAILS[@]} == 0 )); then
  echo "RESULT: PASS (at ${SECONDS}s; files in $OUT: $(ls "$OUT" | tr '\n' ' '))"; status=0
else
  echo "RESULT: FAIL, ${#FAILS[@]} step(s) and the checks above marked FAIL (at ${SECONDS}s)"; status=1
fi
exec >&- 2>&-
wait "$TEE_PID"  # let tee write the last lines (a bare wait would hang on the process substitution)
exit $status
