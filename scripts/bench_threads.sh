#!/usr/bin/env bash
# The default thread rule against the best fixed count, idle and loaded, in one call.
# Training speed (images/s of `resexp bench`: the real training step on random images) of
# resnet-20, TRIALS trials per phase; in each trial the default (train.threads null), then
# train.threads=N for each N in FIXED, in an order that rotates from trial to trial. The
# loaded phase runs BUSY processes spinning `while True: pass`, started and stopped here.
# Each trial prints default / best fixed; the targets are >= 0.95 idle and >= 0.8 loaded.
#   bash scripts/bench_threads.sh                       # TRIALS=3 STEPS=20 BATCH=128 FIXED="1 2" BUSY=2 CAP=300
#   STEPS=3 BATCH=32 TRIALS=1 bash scripts/bench_threads.sh   # a quick check that it works
# A command that runs past CAP seconds counts as 0 images/s (every core's thread on busy cores: up to 50x slower).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$PWD/.venv/bin/python}
TRIALS=${TRIALS:-3} STEPS=${STEPS:-20} BATCH=${BATCH:-128} FIXED=${FIXED:-"1 2"} BUSY=${BUSY:-2} CAP=${CAP:-300}
WORK=$(mktemp -d) PIDS=()
stop_load() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; PIDS=(); }
trap 'stop_load; rm -rf "$WORK"' EXIT

bench() {  # PHASE TRIAL POLICY: one row "phase,trial,policy,threads,images_per_s" into $WORK/rows.csv
  local extra=() out="$WORK/$1-$2-$3.csv"
  if [ "$3" != default ]; then extra=("train.threads=$3"); fi
  local rc=0
  timeout "$CAP" "$PY" -m resexp bench --archs resnet --depths 20 --steps "$STEPS" \
       "train.batch_size=$BATCH" train.device=cpu "${extra[@]}" --out "$out" > "$WORK/last.log" 2>&1 || rc=$?
  if [ $rc -eq 0 ]; then
    "$PY" - "$out" "$1,$2,$3" >> "$WORK/rows.csv" <<'EOF'
import re, sys
import pandas as pd
row = pd.read_csv(sys.argv[1]).iloc[0]
threads = re.search(r"(\d+) thread", row.device).group(1)
print(f"{sys.argv[2]},{threads},{row.images_per_s}")
EOF
  else
    echo "$1,$2,$3,?,0" >> "$WORK/rows.csv"
    why="failed (exit $rc): $(tail -1 "$WORK/last.log")"; [ $rc -eq 124 ] && why="stopped after ${CAP}s"
    echo "  $1 trial $2 $3: $why" >&2
  fi
}

echo "bench_threads: $(date -u +%FT%TZ), $("$PY" -c 'from resexp.train.threads import usable_cores; print(usable_cores())') usable cores," \
     "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), torch $("$PY" -c 'import torch; print(torch.__version__)')"
echo "  resexp $(git rev-parse --short HEAD)$(git diff --quiet -- resexp || echo '+changes'); resnet-20, batch $BATCH," \
     "$STEPS timed steps; $TRIALS trials; fixed counts: $FIXED; loaded: $BUSY busy processes"
POLICIES=(default $FIXED)
for phase in idle loaded; do
  if [ "$phase" = loaded ]; then
    for _ in $(seq "$BUSY"); do "$PY" -c 'while True: pass' & PIDS+=($!); done
  fi
  echo "phase $phase: load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
  for trial in $(seq "$TRIALS"); do
    n=${#POLICIES[@]}
    for k in $(seq 0 $((n - 1))); do bench "$phase" "$trial" "${POLICIES[$(((k + trial - 1) % n))]}"; done
  done
  stop_load
done

"$PY" - "$WORK/rows.csv" <<'EOF'
import sys
import pandas as pd
rows = pd.read_csv(sys.argv[1], names=["phase", "trial", "policy", "threads", "images_per_s"])
target = {"idle": 0.95, "loaded": 0.8}
print(f"{'phase':<7} {'trial':>5} {'default':>16} {'best fixed':>18} {'ratio':>6}   all fixed")
worst = {}
for (phase, trial), t in rows.groupby(["phase", "trial"], sort=False):
    default = t[t.policy == "default"].iloc[0]
    fixed = t[t.policy != "default"]
    best = fixed.loc[fixed.images_per_s.idxmax()]
    ratio = default.images_per_s / best.images_per_s if best.images_per_s > 0 else float("nan")
    worst[phase] = min(worst.get(phase, ratio), ratio)
    others = ", ".join(f"{r.policy} thr {r.images_per_s:.0f}" for r in fixed.itertuples())
    print(f"{phase:<7} {trial:>5} {default.images_per_s:>8.0f} ({default.threads} thr) "
          f"{best.images_per_s:>8.0f} ({best.policy} thr) {ratio:>6.2f}   {others}  img/s")
for phase, ratio in worst.items():
    ok = "met" if ratio >= target[phase] else "NOT met"
    print(f"{phase}: worst default/best-fixed ratio {ratio:.2f} (target >= {target[phase]}): {ok}")
EOF
