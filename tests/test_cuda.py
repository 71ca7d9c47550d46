"""The CUDA-only part of the graphed step: the capture and the replays.

Skipped where there is no GPU (CI); scripts/gpu_check.sh runs this file on one. The
tolerances allow for bf16 autocast and cuDNN's nondeterministic kernels: a graph
replays the very kernels the eager step launches, so anything larger is a bug.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from helpers.cli import TINY
from helpers.interrupt import interrupted_and_resumed
from helpers.steps import addresses, checkpoint_of, epochs

from resexp.settings.compose import load_config
from resexp.train.loop import fit, setup, train_epoch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# 200 images in batches of 64: 3 full batches and a partial one per epoch. The warm-up
# ends at iteration 5, after the capture (iteration 4), and a milestone follows at 9:
# the lr changes twice inside the captured graph.
CUDA = [*TINY, "train.device=cuda", "dataset.train_args.size=200", "train.warmup_iters=5",
        "train.warmup_from_depth=null", "train.warmup_lr=0.01", "train.milestone_unit=iterations",
        "train.milestones=[9]"]
REL = 2e-2


def cfg_of(*overrides):
    return load_config([*CUDA, *overrides])


def params(s) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten() for p in s.model.parameters()])


def test_graphed_step_captures_and_trains_the_eager_run():
    cfg = cfg_of()
    eager, graphed = setup(cfg, graphed=False), setup(cfg, graphed=True)
    a, b = epochs(cfg, eager, 3), epochs(cfg, graphed, 3)
    assert graphed.step.kind == "graphed" and graphed.step.graph is not None
    assert graphed.step.counts == {"warm-up": 3, "graph": 6, "eager": 3}
    assert b == pytest.approx(a, rel=REL)
    # The weights, not only the losses: an lr baked into the graph (0.01 for good) would
    # leave them far from the eager run's.
    gap = (params(graphed) - params(eager)).norm() / params(eager).norm()
    assert gap < REL, gap
    assert graphed.step.lr.item() == pytest.approx(0.01)  # after the milestone at 9


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
    again = train_epoch(cfg, s, 2, 5)  # replays only: the graph must see the restored state
    assert again["train_loss"] == pytest.approx(first["train_loss"], rel=1e-3)
    assert (params(s) - after_first).norm() / after_first.norm() < 1e-3


def test_graphed_run_resumes_and_diverges_as_the_eager_one(tmp_path, monkeypatch):
    interrupted_and_resumed(lambda: cfg_of("train.epochs=4"), tmp_path, monkeypatch)
    drop = ["seconds", "images_per_s", "elapsed"]
    full, cut = (pd.read_csv(tmp_path / d / "resnet-8-s0" / "metrics.csv").drop(columns=drop) for d in ("full", "cut"))
    pd.testing.assert_frame_equal(cut, full, rtol=REL)
    assert fit(cfg_of("train.lr=1e12"), tmp_path / "nan")["status"] == "diverged"
