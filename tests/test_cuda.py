"""The CUDA-only part of the graphed step (the capture, its self-check and the replays), and
scripts/gpu_check.sh, which runs these tests on a GPU and judges its numbers.

The CUDA tests are skipped where there is no GPU (CI); the script's tests (names with
``gpu_check``) run everywhere, and the script leaves them out when it runs this file.
The tolerance ``REL`` allows for bf16 autocast and cuDNN's nondeterministic kernels: a
graph replays the very kernels the eager step launches, so anything larger is a bug;
under ``train.deterministic=true`` nothing at all may differ.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers.cli import TINY
from helpers.interrupt import interrupted_and_resumed
from helpers.steps import addresses, checkpoint_of, epochs, state_gaps, state_of

from resexp.settings.compose import load_config
from resexp.train.loop import fit, setup, train_epoch

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"

# 200 images in batches of 64: 3 full batches and a partial one per epoch. The warm-up
# ends at iteration 5, after the capture and self-check (iteration 4), and a milestone
# follows at 9: the lr changes twice inside the captured graph.
CUDA = [*TINY, "train.device=cuda", "dataset.train_args.size=200", "train.warmup_iters=5",
        "train.warmup_from_depth=null", "train.warmup_lr=0.01", "train.milestone_unit=iterations",
        "train.milestones=[9]"]
REL = 2e-2


def cfg_of(*overrides):
    return load_config([*CUDA, *overrides])


def params(s) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten() for p in s.model.parameters()])


def graphed_and_eager(cfg, n_epochs=3):
    eager, graphed = setup(cfg, graphed=False), setup(cfg, graphed=True)
    a, b = epochs(cfg, eager, n_epochs), epochs(cfg, graphed, n_epochs)
    assert graphed.step.kind == "graphed" and graphed.step.check["result"] == "passed", graphed.step.check
    return eager, graphed, a, b


@needs_cuda
def test_graphed_step_captures_and_trains_the_eager_run():
    eager, graphed, a, b = graphed_and_eager(cfg_of())
    assert graphed.step.counts == {"warm-up": 3, "graph": 6, "eager": 3}
    assert b == pytest.approx(a, rel=REL)
    # Not only the losses: an lr baked into the graph, BN statistics left alone or an empty
    # replay leave weights, running stats, momentum or the eval-mode output far from eager's.
    gaps = state_gaps(state_of(eager), state_of(graphed))
    assert max(gaps.values()) < REL, {n: g for n, g in gaps.items() if g >= REL}
    assert graphed.step.lr.item() == pytest.approx(0.01)  # after the milestone at 9


@needs_cuda
def test_graphed_step_is_the_eager_step_bit_for_bit_under_deterministic_kernels():
    eager, graphed, a, b = graphed_and_eager(cfg_of("train.deterministic=true"))
    assert a == b and graphed.step.check["tolerance"] == 0
    gaps = state_gaps(state_of(eager), state_of(graphed))
    assert max(gaps.values()) == 0, {n: g for n, g in gaps.items() if g}


@needs_cuda
def test_graphed_step_with_activation_checkpointing_counts_each_batch_once():
    cfg = cfg_of("model.depth=14", "model.checkpoint_segments=2")
    eager, graphed, a, b = graphed_and_eager(cfg, 2)
    counters = {int(t) for n, t in graphed.model.named_buffers() if n.endswith("num_batches_tracked")}
    assert counters == {8}
    assert max(state_gaps(state_of(eager), state_of(graphed)).values()) < REL


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_a_run_on_the_second_gpu_captures_a_real_graph():
    eager, graphed, a, b = graphed_and_eager(cfg_of("train.device=cuda:1"), 2)
    assert graphed.step.device == torch.device("cuda", 1) and torch.cuda.current_device() == 0
    assert b == pytest.approx(a, rel=REL)


@needs_cuda
def test_checkpoint_restores_into_the_captured_graph():
    cfg = cfg_of("dataset.train_args.size=320")  # 5 full batches per epoch
    s = setup(cfg, graphed=True)
    train_epoch(cfg, s, 1, 0)
    assert s.step.graph is not None
    saved, before = checkpoint_of(s), addresses(s)
    first = train_epoch(cfg, s, 2, 5)
    after_first = params(s)
    s.step.load_state_dict(saved)
    assert addresses(s) == before
    assert s.step.optimizer.param_groups[0]["fused"] and s.step.optimizer.param_groups[0]["lr"] is s.step.lr
    again = train_epoch(cfg, s, 2, 5)  # replays only: the graph must see the restored state
    assert again["train_loss"] == pytest.approx(first["train_loss"], rel=1e-3)
    assert (params(s) - after_first).norm() / after_first.norm() < 1e-3


@needs_cuda
def test_graphed_run_resumes_and_diverges_as_the_eager_one(tmp_path, monkeypatch):
    interrupted_and_resumed(lambda: cfg_of("train.epochs=4"), tmp_path, monkeypatch)
    drop = ["seconds", "images_per_s", "elapsed"]
    full, cut = (pd.read_csv(tmp_path / d / "resnet-8-s0" / "metrics.csv").drop(columns=drop) for d in ("full", "cut"))
    pd.testing.assert_frame_equal(cut, full, rtol=REL)
    assert fit(cfg_of("train.lr=1e6"), tmp_path / "nan")["status"] == "diverged"


# --------------------------------------------------------------------------- scripts/gpu_check.sh
def gpu_check(*args, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "PYTHON": sys.executable, **env})


def write_gpu_results(folder: Path, **broken) -> None:
    """The files a GPU run of the script leaves, as they would be when everything holds,
    with the named parts broken."""
    bench = pd.DataFrame([
        {"arch": "resnet", "depth": d, "step": step, "vs_baseline": ratio}
        for d, fast in ((20, 4.4), (56, 3.3), (110, 3.1))
        for step, ratio in (("graphed", fast), ("eager", 0.9), ("baseline (4 workers)", 1.0))])
    if "fallback" in broken:
        bench.loc[3, "step"] = "eager (self-check failed)"  # resnet-56's graphed row
    if "slow" in broken:
        bench.loc[0, "vs_baseline"] = 3.9
    bench.to_csv(folder / "bench.csv", index=False)
    pd.DataFrame([{"arch": "resnet", "depth": 1202, "step": "graphed", "checkpoint_segments": segments,
                   "partial_batch": 80, "partial_batch_ms": None if "untimed" in broken else 300.0,
                   "peak_reserved_mb": mb + 4000 * ("memory" in broken)}
                  for segments, mb in ((0, 7800), (8, 2900))]).to_csv(folder / "deep.csv", index=False)
    steps = range(20)
    pd.DataFrame({"step": steps, "graphed_vs_eager": [0.01 + 0.2 * ("drift" in broken)] * 20,
                  "eager_vs_eager": [0.01] * 20}).to_csv(folder / "compare.csv", index=False)
    pd.DataFrame({"step": steps, "graphed_vs_eager": [1e-7 * ("inexact" in broken)] * 20,
                  "eager_vs_eager": [0.0] * 20}).to_csv(folder / "compare_det.csv", index=False)
    pd.DataFrame([{"jobs": j, "run": r, "status": "done", "train_step": "graphed",
                   "graph_check": "failed" if "jobs" in broken and j == 2 else "passed"}
                  for j in (1, 2) for r in ("plain-20-s0", "resnet-20-s0")]).to_csv(folder / "jobs.csv", index=False)


def test_gpu_check_verdict_passes_only_when_every_check_holds(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir(), bad.mkdir()
    write_gpu_results(good)
    write_gpu_results(bad, fallback=1, slow=1, memory=1, drift=1, inexact=1, jobs=1, untimed=1)
    passed = gpu_check("--verdict", good)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    lines = passed.stdout.splitlines()
    assert all(line.startswith("PASS") for line in lines) and len(lines) == 9, lines
    assert any("resnet-1202: 2900 MB reserved at most (checkpoint_segments=8" in line for line in lines)
    failed = gpu_check("--verdict", bad)
    assert failed.returncode == 1
    fails = [line for line in failed.stdout.splitlines() if line.startswith("FAIL")]
    for expected in ("bench resnet-56: step is 'eager (self-check failed)'", "resnet-56: no graphed row",
                     "resnet-20: graphed 3.90x the conventional trainer (target >= 4x)",
                     "resnet-1202: 6900 MB reserved", "mean per-step loss gap 0.21",
                     "max per-step loss gap 1e-07", "sweep --jobs 2", "resnet-1202: the partial batch timed"):
        assert any(expected in line for line in fails), (expected, fails)
    assert len(fails) == 8, fails
    (bad / "compare_det.csv").unlink()
    assert "FAIL  compare_det.csv missing" in gpu_check("--verdict", bad).stdout


def test_gpu_check_refuses_step_caps_beyond_its_deadline():
    run = gpu_check(DEADLINE="400")
    assert run.returncode == 2 and run.stdout.startswith("gpu_check: the step caps and kill graces add up to 445s")


def test_gpu_check_caps_each_step_at_twice_its_estimated_work_or_more():
    """A step's cap is no guess of its own: each step the script runs has an estimate of its
    work on the GPU beside its cap (the arithmetic in the script's comments), and the cap is at
    least twice that, so a slow start reads as slow, not as FAIL. The script refuses to run
    otherwise; this checks the numbers it ships with."""
    text = SCRIPT.read_text()
    caps, work = ({k: int(v) for k, v in re.findall(r"\[(\w+)\]=(\d+)", re.search(rf"declare -A {name}=\(([^)]*)\)",
                                                                                text).group(1))}
                  for name in ("CAP", "EST"))
    assert caps.keys() == work.keys() == set(re.findall(r"^\s*step (\w+) ", text, re.M))
    assert {k: (caps[k], work[k]) for k in caps if caps[k] < 2 * work[k]} == {}


@pytest.mark.slow
def test_gpu_check_cpu_smoke_runs_every_step_and_passes(tmp_path):
    run = gpu_check("--cpu-smoke", OUT=str(tmp_path))
    lines = run.stdout.splitlines()
    assert run.returncode == 0 and lines[-1].startswith("RESULT: PASS"), run.stdout[-3000:]
    assert not [line for line in lines if line.startswith("FAIL")]
    assert sum(line.startswith(("PASS", "n/a")) for line in lines) == 7
    assert {"bench.csv", "compare.csv", "compare_det.csv", "deep.csv", "env.txt", "jobs.csv", "log.txt"} == {
        p.name for p in tmp_path.iterdir()}
