#!/usr/bin/env bash
# A load that changes during a run: the thread count chosen at the start only (REF, default
# 01b5c1e) against this checkout, which measures it again between epochs (docs/threads.md).
# Two scenarios, each policy alternated in one call, one `resexp train` of plain-56 on the
# quick_fashion settings (10 epochs of 8,000 Fashion-MNIST images):
#   arrives  the run starts on the idle machine; once its epoch AT is logged, BUSY processes
#            (`while True: pass`, started by this script) take the cores until it ends
#   leaves   the BUSY processes run from before the start until epoch AT is logged
# Prints each run's wall seconds, its thread counts, and its epochs' own seconds.
#   bash scripts/bench_midrun.sh                    # ROUNDS=1 AT=2 BUSY=2 ARCH=plain DEPTH=56
set -euo pipefail
cd "$(dirname "$0")/.."
HERE=$PWD PY=${PYTHON:-$PWD/.venv/bin/python}
REF=${REF:-01b5c1e} ROUNDS=${ROUNDS:-1} AT=${AT:-2} BUSY=${BUSY:-2} ARCH=${ARCH:-plain} DEPTH=${DEPTH:-56}
SCENARIOS=${SCENARIOS:-"arrives leaves"} CAP=${CAP:-1200}
WORK=$(mktemp -d) PIDS=()
stop_load() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; PIDS=(); }
start_load() { for _ in $(seq "$BUSY"); do "$PY" -c 'while True: pass' & PIDS+=($!); done; }
trap 'stop_load; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/before" "$WORK/now" "$WORK/cwd"
git archive "$REF" | tar -x -C "$WORK/before"
cp -r "$HERE/resexp" "$WORK/now/"  # this checkout as it is now
cd "$WORK/cwd"  # python puts the working folder first on sys.path: keep it neutral
echo "bench_midrun: $(date -u +%FT%TZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "  before = $REF, now = $(git -C "$HERE" rev-parse --short HEAD)$(git -C "$HERE" diff --quiet || echo '+changes');" \
     "$ARCH-$DEPTH, load changes after epoch $AT, $BUSY busy processes"

epochs_logged() { [ -f "$1/metrics.csv" ] && echo $(( $(wc -l < "$1/metrics.csv") - 1 )) || echo 0; }
for i in $(seq "$ROUNDS"); do
  for scenario in $SCENARIOS; do
    for policy in before now; do
      out="$WORK/out_${scenario}_${policy}_$i" run="$WORK/out_${scenario}_${policy}_$i/$ARCH-$DEPTH-s0"
      sleep 20  # the previous call's processes leave the load average (it is a 1-minute mean)
      [ "$scenario" = leaves ] && { start_load; sleep 10; }
      t0=$(date +%s.%N)
      PYTHONPATH="$WORK/$policy" timeout "$CAP" "$PY" -m resexp train experiment=quick_fashion \
        model.arch="$ARCH" model.depth="$DEPTH" --out "$out" > "$WORK/log_${scenario}_${policy}_$i.txt" 2>&1 &
      train=$!
      while kill -0 "$train" 2>/dev/null && [ "$(epochs_logged "$run")" -lt "$AT" ]; do sleep 0.5; done
      if [ "$scenario" = arrives ]; then start_load; else stop_load; fi
      wait "$train" || echo "$scenario $policy: exit $?" >&2
      t1=$(date +%s.%N)
      stop_load
      echo "$scenario,$policy,$i,$(awk "BEGIN{print $t1 - $t0}")" >> "$WORK/walls.csv"
      cp "$run/metrics.csv" "$WORK/metrics_${scenario}_${policy}_$i.csv"
      cp "$run/summary.json" "$WORK/summary_${scenario}_${policy}_$i.json"
    done
  done
done
"$PY" - "$WORK" <<'PY'
import json, sys
import pandas as pd
work = sys.argv[1]
walls = pd.read_csv(f"{work}/walls.csv", names=["scenario", "policy", "round", "seconds"])
for (scenario, policy, i), w in walls.groupby(["scenario", "policy", "round"], sort=False):
    m = pd.read_csv(f"{work}/metrics_{scenario}_{policy}_{i}.csv")
    s = json.load(open(f"{work}/summary_{scenario}_{policy}_{i}.json"))
    changes = "; ".join(f"after epoch {c['after_epoch']}: {c['was']} -> {c['threads']}"
                        for c in s.get("threads_rechosen", [])) or "none"
    print(f"{scenario:<8} {policy:<7} round {i}: {w.seconds.iloc[0]:6.1f} s wall, {s['status']}, "
          f"ended on {s['torch_threads']} thread(s), changes: {changes}, final train err {s['final_train_err']}")
    print(f"{'':17}epoch seconds: {' '.join(f'{v:.1f}' for v in m.seconds)}")
PY
