"""resexp/step.py: the graphed training step, exercised on the CPU without the capture.

``setup(cfg, graphed=True)`` on the CPU builds the GraphedStep with ``capture=False``:
the static tensors, the lr tensor, the warm-up, the eager path for partial batches and
the in-place checkpoint restore all run; only the CUDA capture and replay do not.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from helpers.cli import TINY
from helpers.interrupt import interrupted_and_resumed
from helpers.steps import TIMING, addresses, checkpoint_of, epochs

import resexp.train.loop as train_mod
import resexp.train.step as step_mod
from resexp.settings.compose import load_config
from resexp.train.loop import fit, setup, train_epoch
from resexp.train.step import WARMUP_STEPS, GraphedStep

# 200 images in batches of 64: three full batches and a partial one of 8 per epoch.
PARTIAL = [*TINY, "dataset.train_args.size=200"]


def cfg_of(*overrides):
    return load_config([*PARTIAL, *overrides])


def metrics(out, name="resnet-8-s0") -> pd.DataFrame:
    return pd.read_csv(out / name / "metrics.csv").drop(columns=TIMING)


@pytest.fixture
def graphed_everywhere(monkeypatch):
    """fit() builds the graphed step on the CPU too (its code minus the capture)."""
    monkeypatch.setattr(step_mod, "wants_graphs", lambda train_cfg, device: True)


def test_lr_tensor_follows_warmup_and_milestones_at_every_iteration():
    cfg = cfg_of("train.warmup_iters=3", "train.warmup_lr=0.01", "train.warmup_from_depth=null",
                 "train.milestone_unit=iterations", "train.milestones=[5,9]")
    s = setup(cfg, graphed=True)
    lr_tensor, address = s.step.lr, s.step.lr.data_ptr()
    read, real_step = [], s.optimizer.step

    def spy_step(*args, **kwargs):  # what the optimizer reads, at the moment it reads it
        lr = s.optimizer.param_groups[0]["lr"]
        read.append((lr is lr_tensor, lr.item()))
        return real_step(*args, **kwargs)

    s.optimizer.step = spy_step
    epochs(cfg, s, 3)
    expected = [0.01] * 3 + [0.1] * 2 + [0.01] * 4 + [0.001] * 3  # warm-up, back to 0.1, two milestones
    assert [s.schedule.lr_at(i) for i in range(12)] == expected
    assert [lr for _, lr in read] == [torch.tensor(v, dtype=torch.float32).item() for v in expected]
    assert all(same for same, _ in read) and s.step.lr.data_ptr() == address  # never replaced


def test_graphed_step_trains_the_eager_run_with_partial_batches():
    cfg = cfg_of()
    eager, graphed = setup(cfg, graphed=False), setup(cfg, graphed=True)
    assert (eager.step.kind, graphed.step.kind) == ("eager", "graphed (no capture)")
    a, b = epochs(cfg, eager, 3), epochs(cfg, graphed, 3)
    assert b == pytest.approx(a, rel=1e-5)
    assert a[0] != a[2]  # the loss moves: the comparison compares something
    # 4 batches per epoch: the first 3 full ones warm up, the partial ones run eagerly.
    assert graphed.step.counts == {"warm-up": WARMUP_STEPS, "graph": 9 - WARMUP_STEPS, "eager": 3}


def test_graphed_fit_writes_the_eager_metrics(tmp_path, monkeypatch):
    kinds = []
    real_make_step = step_mod.make_step
    monkeypatch.setattr(step_mod, "wants_graphs", lambda train_cfg, device: True)
    monkeypatch.setattr(train_mod, "make_step", lambda *a, **k: kinds.append(real_make_step(*a, **k)) or kinds[-1])
    fit(cfg_of(), tmp_path / "graphed")
    monkeypatch.undo()
    fit(cfg_of(), tmp_path / "eager")
    assert [k.kind for k in kinds] == ["graphed (no capture)"] and kinds[0].counts["graph"] > 0
    pd.testing.assert_frame_equal(metrics(tmp_path / "graphed"), metrics(tmp_path / "eager"), rtol=1e-5)


def test_checkpoint_restores_into_the_static_tensors():
    cfg = cfg_of("dataset.train_args.size=320")  # 5 full batches: the graph path runs
    s = setup(cfg, graphed=True)
    train_epoch(cfg, s, 1, 0)
    saved, before = checkpoint_of(s), addresses(s)
    second = train_epoch(cfg, s, 2, 5)
    s.step.load_state_dict(saved)
    assert addresses(s) == before
    for name, value in s.model.state_dict().items():
        assert torch.equal(value, saved["model"][name]), name
    for i, state in enumerate(s.optimizer.state.values()):
        assert torch.equal(state["momentum_buffer"], saved["optimizer"]["state"][i]["momentum_buffer"])
    assert s.optimizer.param_groups[0]["lr"] is s.step.lr  # not the checkpoint's own lr tensor
    again = train_epoch(cfg, s, 2, 5)
    assert (again["train_loss"], again["train_err"]) == (second["train_loss"], second["train_err"])


def test_interrupted_graphed_run_resumes_to_the_same_result(tmp_path, monkeypatch, graphed_everywhere):
    interrupted_and_resumed(lambda: cfg_of("train.epochs=4"), tmp_path, monkeypatch)
    pd.testing.assert_frame_equal(metrics(tmp_path / "cut"), metrics(tmp_path / "full"))


def test_nan_loss_under_the_graphed_step_ends_as_diverged(tmp_path, graphed_everywhere):
    summary = fit(cfg_of("train.lr=1e12"), tmp_path / "out")
    assert summary["status"] == "diverged"
    assert not metrics(tmp_path / "out").train_loss.iloc[-1] < float("inf")


def test_failed_capture_warns_once_and_trains_eagerly(capsys):
    """No CUDA here, so the capture fails for real: one warning line, and the run is the
    eager one (nothing of the failed step was applied before it reran eagerly)."""
    cfg = cfg_of()
    eager = setup(cfg, graphed=False)
    s = setup(cfg, graphed=False)
    s.step = GraphedStep(s.model, s.forward, cfg.train, s.device, s.amp, s.channels_last, capture=True)
    capsys.readouterr()
    assert epochs(cfg, s, 3) == pytest.approx(epochs(cfg, eager, 3), rel=1e-5)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: CUDA graph capture failed (")
    assert s.step.kind == "eager (capture failed)" and s.step.graph is None
    assert s.step.counts == {"warm-up": WARMUP_STEPS, "graph": 0, "eager": 12 - WARMUP_STEPS}


def test_cuda_graphs_is_used_only_on_cuda():
    cfg = load_config(TINY)
    assert step_mod.wants_graphs(cfg.train, torch.device("cuda"))
    assert not step_mod.wants_graphs(cfg.train, torch.device("cpu"))
    off = load_config([*TINY, "train.cuda_graphs=false"])
    assert not step_mod.wants_graphs(off.train, torch.device("cuda"))
    assert setup(cfg).step.kind == "eager"  # the default config, on this CPU


def test_a_run_may_continue_with_or_without_cuda_graphs(tmp_path):
    """Graphed and eager train the same run: switching is not a changed configuration."""
    fit(cfg_of("train.epochs=1"), tmp_path / "out")
    summary = fit(cfg_of("train.epochs=1", "train.cuda_graphs=false"), tmp_path / "out")
    assert summary["status"] == "done"  # accepted and skipped as finished, not refused
