#!/usr/bin/env bash
# Thread policies side by side, on this machine as it is ("idle") and with a competing
# load this script starts itself (BUSY processes spinning `while True: pass`, stopped at
# the end). In each phase the policies alternate in one call, so they see the same load:
#   before   the code at REF (default: 973cd9e, the last commit before the thread policy),
#            its defaults: every core's threads for one run, 5 timed steps per dry-run timing
#   now      this checkout's defaults: thread count measured per run (resexp/train/threads.py)
#   1thread  this checkout with train.threads=1
#   jobs     (sweep only) this checkout with --jobs <usable cores>, 1 thread per run
# Measured: `resexp bench` images/s, the wall time of `resexp sweep --dry-run` and of the
# quick_fashion sweep (SWEEP=full: the whole sweep, about 10 min idle per policy; SWEEP=short,
# the default: the same 6 runs on 1/10 of the images; SWEEP=none: no sweep). A command that
# runs past CAP seconds is stopped and shown as ">CAP".
#   bash scripts/bench_busy.sh                 # ROUNDS=2 BUSY=2 SWEEP=short CAP=1800
#   SWEEP=full ROUNDS=1 bash scripts/bench_busy.sh
#   SWEEP=full SWEEP_LOADED=short ROUNDS=1 bash scripts/bench_busy.sh   # the loaded phase on the short sweep
#   SWEEP=full ROUNDS=1 SWEEP_POLICIES="before now" LOADED_BEFORE_CAP=1500 bash scripts/bench_busy.sh
# SWEEP_POLICIES picks the sweep's policies; LOADED_BEFORE_CAP caps `before`'s loaded sweep
# alone (it collapses there). A sweep stopped at its cap is still compared: every epoch it
# finished is matched with the same run's same epoch under the other policies, and the
# epochs' own training seconds (metrics.csv) are summed on both sides.
set -euo pipefail
cd "$(dirname "$0")/.."
HERE=$PWD PY=${PYTHON:-$PWD/.venv/bin/python}
REF=${REF:-973cd9e} ROUNDS=${ROUNDS:-2} BUSY=${BUSY:-2} SWEEP=${SWEEP:-short} CAP=${CAP:-1800}
SWEEP_POLICIES=${SWEEP_POLICIES:-"before now jobs"} LOADED_BEFORE_CAP=${LOADED_BEFORE_CAP:-$CAP}
PHASES=${PHASES:-"idle loaded"}
BENCH=(bench --archs resnet --depths 20 --steps 10 dataset=fashion_mnist train.batch_size=32)
SWEEP_LOADED=${SWEEP_LOADED:-$SWEEP}
scale_of() {  # the sweep's size overrides for SWEEP=$1
  case $1 in
    full|none) SCALE=() ;;
    short) SCALE=(dataset.train_subset=800 dataset.test_subset=200 train.warmup_iters=25) ;;
    *) echo "SWEEP and SWEEP_LOADED must be full, short or none" >&2; exit 2 ;;
  esac
}
scale_of "$SWEEP"; scale_of "$SWEEP_LOADED"
WORK=$(mktemp -d) PIDS=()
stop_load() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; PIDS=(); }
KEEP=${KEEP:-}  # a folder to keep the raw CSVs in
trap 'stop_load; [ -n "$KEEP" ] && mkdir -p "$KEEP" && cp "$WORK"/*.csv "$KEEP"/ 2>/dev/null; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/before" "$WORK/now" "$WORK/cwd"
git archive "$REF" | tar -x -C "$WORK/before"
cp -r "$HERE/resexp" "$WORK/now/"  # this checkout as it is now: later edits do not leak into the timings
CORES=$("$PY" -c "from resexp.train.threads import usable_cores; print(usable_cores())")
cd "$WORK/cwd"  # python puts the working folder first on sys.path: keep it neutral

code_of() { [ "$1" = before ] && echo "$WORK/before" || echo "$WORK/now"; }
extra_of() { case $1 in 1thread) echo "train.threads=1" ;; *) echo "" ;; esac; }
timed() {  # LABEL CMD...: wall seconds into $WORK/times.csv, or >CAP if stopped (CAP from the env)
  local label=$1 cap=${TIMED_CAP:-$CAP}; shift
  local t0=$(date +%s.%N) rc=0
  timeout "$cap" "$@" > "$WORK/last.log" 2>&1 || rc=$?
  local t1=$(date +%s.%N)
  if [ $rc -eq 124 ]; then echo "$label,>$cap" >> "$WORK/times.csv"
  elif [ $rc -ne 0 ]; then echo "$label failed (exit $rc):" >&2; tail -5 "$WORK/last.log" >&2; echo "$label,failed" >> "$WORK/times.csv"
  else echo "$label,$(awk "BEGIN{print $t1 - $t0}")" >> "$WORK/times.csv"; fi
}

echo "bench_busy: $(date -u +%FT%TZ), $(uname -m), $CORES usable cores, $("$PY" -c 'import platform; print(platform.processor() or "")')"
echo "  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), torch $("$PY" -c 'import torch; print(torch.__version__)')"
echo "  before = $REF, now = $(git -C "$HERE" rev-parse --short HEAD)$(git -C "$HERE" diff --quiet || echo '+changes'); rounds $ROUNDS, sweep $SWEEP (loaded: $SWEEP_LOADED), cap ${CAP}s"
for phase in $PHASES; do
  sweep=$SWEEP; [ "$phase" = loaded ] && sweep=$SWEEP_LOADED
  scale_of "$sweep"
  if [ "$phase" = loaded ]; then
    for _ in $(seq "$BUSY"); do "$PY" -c 'while True: pass' & PIDS+=($!); done
    sleep 5  # let the spinners take their cores
  fi
  echo "phase $phase: $([ "$phase" = loaded ] && echo "$BUSY busy processes started by this script; ")load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  for i in $(seq "$ROUNDS"); do
    for policy in before now 1thread; do
      PYTHONPATH=$(code_of $policy) timeout "$CAP" "$PY" -m resexp "${BENCH[@]}" $(extra_of $policy) \
        --out "$WORK/bench_${phase}_${policy}_$i.csv" > /dev/null 2>&1 || echo "bench $policy timed out or failed" >&2
    done
    for policy in before now; do
      rm -rf "$WORK/dry"
      PYTHONPATH=$(code_of $policy) timed "$phase,dry-run,$policy,$i" "$PY" -m resexp sweep experiment=quick_fashion \
        --dry-run --out "$WORK/dry"
      grep -o 'about [0-9hms]*' "$WORK/last.log" | head -1 | sed "s/^/$phase,dry-run-estimate,$policy,$i,/" >> "$WORK/estimates.csv" || true
    done
    if [ "$sweep" != none ]; then
      for policy in $SWEEP_POLICIES; do
        rm -rf "$WORK/sweep"
        jobs=(); [ "$policy" = jobs ] && jobs=(--jobs "$CORES")
        cap=$CAP; [ "$phase/$policy" = loaded/before ] && cap=$LOADED_BEFORE_CAP
        TIMED_CAP=$cap PYTHONPATH=$(code_of $policy) timed "$phase,sweep-$sweep,$policy,$i" "$PY" -m resexp sweep \
          experiment=quick_fashion "${SCALE[@]}" "${jobs[@]}" --out "$WORK/sweep"
        for f in "$WORK"/sweep/*/metrics.csv; do  # every finished epoch's own seconds, stopped sweeps too
          [ -f "$f" ] && "$PY" -c "import sys, pandas as pd; t=pd.read_csv(sys.argv[1]); run=sys.argv[1].split('/')[-2]
for e, s in zip(t.epoch, t.seconds): print(sys.argv[2], run, e, s, sep=',')" "$f" "$phase,$policy,$i" >> "$WORK/epochs.csv"
        done
        for f in "$WORK"/sweep/*/summary.json; do  # the policies must train the same nets to the same errors
          [ -f "$f" ] && "$PY" -c "import json,sys; s=json.load(open(sys.argv[1])); print(sys.argv[2], s['arch'], s['depth'], \
            s['status'], s.get('final_train_err'), s.get('torch_threads'), sep=',')" "$f" "$phase,$policy" >> "$WORK/finals.csv"
        done
      done
    fi
  done
  echo "  load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  stop_load
done
"$PY" - "$WORK" <<'PY'
import glob, os, re, sys
import pandas as pd
work = sys.argv[1]
rows = []
for path in glob.glob(f"{work}/bench_*.csv"):
    phase, policy, i = re.match(r"bench_(\w+?)_(\w+)_(\d+)\.csv", os.path.basename(path)).groups()
    t = pd.read_csv(path)
    rows.append({"phase": phase, "policy": policy, "round": int(i), "img_s": t.images_per_s.iloc[0],
                 "device": t.device.iloc[0]})
pd.set_option("display.width", 200)
if rows:
    b = pd.DataFrame(rows)
    print("\nresexp bench --archs resnet --depths 20 --steps 10 dataset=fashion_mnist train.batch_size=32 (images/s)")
    for phase, g in b.groupby("phase", sort=False):
        med = g.groupby("policy").img_s.median()
        for policy, h in g.groupby("policy"):
            print(f"  {phase:<7} {policy:<8} rounds {' '.join(f'{v:.0f}' for v in h.sort_values('round').img_s):<24} "
                  f"median {med[policy]:7.1f}  x{med[policy] / med.get('before', float('nan')):.2f} of before"
                  f"  [{h.device.iloc[-1]}]")
times = pd.read_csv(f"{work}/times.csv", names=["phase", "what", "policy", "round", "seconds"]) \
    if os.path.exists(f"{work}/times.csv") else pd.DataFrame()
for what, g in times.groupby("what", sort=False) if len(times) else []:
    print(f"\n{what}: wall seconds (lower is better; '>N' stopped at the cap)")
    for (phase, policy), h in g.groupby(["phase", "policy"], sort=False):
        vals = pd.to_numeric(h.seconds, errors="coerce")
        shown = " ".join(str(s) if pd.isna(v) else f"{v:.1f}" for s, v in zip(h.seconds, vals))
        print(f"  {phase:<7} {policy:<8} {shown}")
if os.path.exists(f"{work}/finals.csv"):
    f = pd.read_csv(f"{work}/finals.csv", names=["phase", "policy", "arch", "depth", "status", "train_err", "threads"])
    print("\nfinal training error (%) of each sweep's runs [threads]:")
    for (phase, policy), g in f.groupby(["phase", "policy"], sort=False):
        g = g.sort_values(["arch", "depth"])
        print(f"  {phase:<7} {policy:<8} " + "  ".join(f"{a}-{d} {e} [{t}]" for a, d, e, t in
                                                    zip(g.arch, g.depth, g.train_err, g.threads)))
if os.path.exists(f"{work}/epochs.csv"):
    e = pd.read_csv(f"{work}/epochs.csv", names=["phase", "policy", "round", "run", "epoch", "seconds"])
    e = e.groupby(["phase", "policy", "run", "epoch"]).seconds.median().reset_index()
    print("\nthe same runs' same epochs, training seconds summed (stopped sweeps count the epochs they finished):")
    for phase, g in e.groupby("phase", sort=False):
        base = g[g.policy == "before"].set_index(["run", "epoch"]).seconds
        for policy, h in g.groupby("policy", sort=False):
            h = h.set_index(["run", "epoch"]).seconds
            both = h.index.intersection(base.index)
            line = f"  {phase:<7} {policy:<8} {len(h):3d} epochs, {h.sum():8.1f} s"
            if policy != "before" and len(both):
                line += (f"; on the {len(both)} epochs before also finished: {h[both].sum():.1f} s against "
                         f"{base[both].sum():.1f} s, x{base[both].sum() / h[both].sum():.2f} the speed of before")
            print(line)
if os.path.exists(f"{work}/estimates.csv"):
    print("\ndry-run estimates of the whole quick_fashion sweep:")
    for line in open(f"{work}/estimates.csv"):
        print("  " + line.strip().replace(",", " "))
PY
