"""resexp/train/step.py: the graphed training step, exercised on the CPU without the capture.

``setup(cfg, graphed=True)`` on the CPU builds the GraphedStep with ``capture=False``:
the static tensors, the lr tensor, the warm-up, the self-check, the eager path for
partial batches and the in-place checkpoint restore all run; only the CUDA capture and
replay do not. Stand-ins for ``torch.cuda.graph`` and for broken replays show what the
step does when a capture fails or a graph computes something else.
"""

from __future__ import annotations

import contextlib
import json
import warnings

import pandas as pd
import pytest
import torch
from helpers.cli import TINY
from helpers.interrupt import interrupted_and_resumed
from helpers.steps import TIMING, addresses, checkpoint_of, epochs, state_gaps, state_of

import resexp.train.loop as train_mod
import resexp.train.step as step_mod
from resexp.settings.compose import load_config
from resexp.train.loop import fit, setup, train_epoch
from resexp.train.self_check import restore, snapshot
from resexp.train.step import WARMUP_STEPS, GraphedStep, Step

# 200 images in batches of 64: three full batches and a partial one of 8 per epoch.
PARTIAL = [*TINY, "dataset.train_args.size=200"]


def cfg_of(*overrides):
    return load_config([*PARTIAL, *overrides])


def metrics(out, name="resnet-8-s0") -> pd.DataFrame:
    return pd.read_csv(out / name / "metrics.csv").drop(columns=TIMING)


def summary_of(out, name="resnet-8-s0") -> dict:
    return json.loads((out / name / "summary.json").read_text())


def with_step(cfg, step_class, **kwargs):
    """setup(cfg) with its step replaced by ``step_class`` built on the same model."""
    s = setup(cfg, graphed=False)
    s.step = step_class(s.model, cfg.train, s.step.device, **kwargs)
    s.optimizer = s.step.optimizer
    return s


@pytest.fixture
def graphed_everywhere(monkeypatch):
    """fit() builds the graphed step on the CPU too (its code minus the capture)."""
    monkeypatch.setattr(step_mod, "wants_graphs", lambda train_cfg, device: True)


# --------------------------------------------------------------------------- one lr, one optimizer
def spy_lr(s) -> list:
    """The lr object the optimizer holds at each of its steps, and its value then."""
    read, real_step = [], s.step.optimizer.step

    def spy_step(*args, **kwargs):
        lr = s.step.optimizer.param_groups[0]["lr"]
        read.append((lr, float(lr)))
        return real_step(*args, **kwargs)

    s.step.optimizer.step = spy_step
    return read


def test_lr_tensor_follows_warmup_and_milestones_at_every_iteration():
    cfg = cfg_of("train.warmup_iters=3", "train.warmup_lr=0.01", "train.warmup_from_depth=null",
                 "train.milestone_unit=iterations", "train.milestones=[5,9]")
    s = setup(cfg, graphed=True)
    address, read = s.step.lr.data_ptr(), spy_lr(s)
    epochs(cfg, s, 3)
    expected = [0.01] * 3 + [0.1] * 2 + [0.01] * 4 + [0.001] * 3  # warm-up, back to 0.1, two milestones
    assert [s.schedule.lr_at(i) for i in range(12)] == expected
    # Iteration 4 is the self-check: an eager step and a replay, both at that iteration's lr.
    read_at = expected[:5] + [expected[4]] + expected[5:]
    assert [v for _, v in read] == [torch.tensor(v, dtype=torch.float32).item() for v in read_at]
    assert all(lr is s.step.lr for lr, _ in read) and s.step.lr.data_ptr() == address  # never replaced


def test_both_steps_hand_sgd_the_same_lr_value_and_train_bit_for_bit_alike():
    """The same float32 lr tensor and the same fused SGD in both steps: a graphed (here: its
    code without the capture) and an eager run agree exactly, BN statistics, momentum and
    eval-mode output included, so any difference on a GPU under deterministic kernels is a bug."""
    cfg = cfg_of("train.milestones=[2]")  # the lr changes inside the graph
    eager, graphed = setup(cfg, graphed=False), setup(cfg, graphed=True)
    assert (eager.step.kind, graphed.step.kind) == ("eager", "graphed (no capture)")
    reads = spy_lr(eager), spy_lr(graphed)
    a, b = epochs(cfg, eager, 3), epochs(cfg, graphed, 3)
    rounded = {torch.tensor(v, dtype=torch.float32).item() for v in (0.1, 0.01)}  # before, after the milestone
    for read in reads:
        assert all(lr.dtype == torch.float32 for lr, _ in read) and {v for _, v in read} == rounded
    for s in (eager, graphed):
        assert all(g["fused"] and not g["foreach"] for g in s.step.optimizer.param_groups)
    assert a == b and a[0] != a[4]  # the loss moves: the comparison compares something
    gaps = state_gaps(state_of(eager), state_of(graphed))
    assert any("running_var" in n for n in gaps) and any(n.startswith("momentum of") for n in gaps)
    assert max(gaps.values()) == 0, {n: g for n, g in gaps.items() if g}
    # 4 batches per epoch: the first 3 full ones warm up, the partial ones run eagerly.
    assert graphed.step.counts == {"warm-up": WARMUP_STEPS, "graph": 9 - WARMUP_STEPS, "eager": 3}
    assert graphed.step.check["result"] == "passed" and graphed.step.check["difference"] == 0


def test_graphed_fit_writes_the_eager_metrics_and_records_its_self_check(tmp_path, monkeypatch):
    kinds = []
    real_make_step = step_mod.make_step
    monkeypatch.setattr(step_mod, "wants_graphs", lambda train_cfg, device: True)
    monkeypatch.setattr(train_mod, "make_step", lambda *a, **k: kinds.append(real_make_step(*a, **k)) or kinds[-1])
    fit(cfg_of(), tmp_path / "graphed")
    monkeypatch.undo()
    fit(cfg_of(), tmp_path / "eager")
    assert [k.kind for k in kinds] == ["graphed (no capture)"] and kinds[0].counts["graph"] > 0
    pd.testing.assert_frame_equal(metrics(tmp_path / "graphed"), metrics(tmp_path / "eager"), check_exact=True)
    graphed, eager = summary_of(tmp_path / "graphed"), summary_of(tmp_path / "eager")
    assert graphed["train_step"] == "graphed (no capture)" and graphed["graph_check"]["result"] == "passed"
    assert graphed["graph_check"]["tolerance"] == 0.01  # train.deterministic=false
    assert (eager["train_step"], eager["graph_check"]) == ("eager", None)


# --------------------------------------------------------------------------- the self-check
class FrozenLr(GraphedStep):
    """A "graph" that baked in the lr the tensor held while it was recorded."""

    def _record(self):
        self.baked = self.lr.item()
        return super()._record()

    def _replay(self):
        real = self.lr.item()
        self.lr.fill_(self.baked)
        super()._replay()
        self.lr.fill_(real)


class StaleBatchNorm(GraphedStep):
    """A "graph" whose BN layers do not update their running statistics."""

    def _replay(self):
        kept = {n: b.clone() for n, b in self.model.named_buffers()}
        super()._replay()
        for n, b in self.model.named_buffers():
            b.copy_(kept[n])


class EmptyReplay(GraphedStep):
    """A "graph" that records nothing: every replay is a no-op."""

    def _replay(self):
        pass


class StaleInput(GraphedStep):
    """A "graph" that reads the batch it was recorded with, not what the static input holds
    when it replays (as one recorded on a temporary copy of the batch would)."""

    def _record(self):
        self.recorded = self.x.clone(), self.y.clone()
        return super()._record()

    def _replay(self):
        staged = self.x.clone(), self.y.clone()
        self.x.copy_(self.recorded[0]), self.y.copy_(self.recorded[1])
        super()._replay()
        self.x.copy_(staged[0]), self.y.copy_(staged[1])


@pytest.mark.parametrize(("broken", "named"), [(FrozenLr, "weight"), (StaleBatchNorm, "running_"),
                                               (EmptyReplay, ""), (StaleInput, "")])
def test_self_check_catches_a_broken_graph_and_trains_eagerly(broken, named, capsys):
    cfg = cfg_of()
    eager, s = setup(cfg, graphed=False), with_step(cfg, broken, capture=False)
    capsys.readouterr()
    assert epochs(cfg, s, 3) == epochs(cfg, eager, 3)  # the broken replay trained nothing
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: CUDA graph self-check failed: ")
    assert lines[0].endswith("; training eagerly") and "tolerance 0.01" in lines[0]
    check = s.step.check
    assert check["result"] == "failed" and named in check["worst"] and s.step.kind == "eager (self-check failed)"
    assert check["difference"] is None or check["difference"] > 0.3  # far outside the tolerance
    assert max(state_gaps(state_of(eager), state_of(s)).values()) == 0
    assert s.step.counts == {"warm-up": WARMUP_STEPS, "graph": 0, "eager": 12 - WARMUP_STEPS}


def test_a_failed_self_check_is_in_summary_json(tmp_path, monkeypatch, graphed_everywhere):
    monkeypatch.setattr(GraphedStep, "_replay", EmptyReplay._replay)
    summary = fit(cfg_of("train.epochs=2"), tmp_path / "out")
    assert summary_of(tmp_path / "out")["train_step"] == summary["train_step"] == "eager (self-check failed)"
    assert summary["graph_check"]["result"] == "failed"


def test_self_check_is_exact_under_deterministic_kernels(monkeypatch):
    """train.deterministic=true: a replay off by one rounding step fails the check."""
    cfg = cfg_of("train.deterministic=true")
    real_replay = GraphedStep._replay

    def off_by_rounding(step):
        real_replay(step)
        with torch.no_grad():
            next(step.model.parameters()).mul_(1 + 2**-20)

    monkeypatch.setattr(GraphedStep, "_replay", off_by_rounding)
    s = setup(cfg, graphed=True)
    epochs(cfg, s, 2)
    assert s.step.check["result"] == "failed" and s.step.check["tolerance"] == 0
    loose = setup(cfg_of(), graphed=True)
    epochs(cfg_of(), loose, 2)
    assert loose.step.check["result"] == "passed"  # within 1% of the step's change


# --------------------------------------------------------------------------- a capture that fails
def test_failed_capture_warns_once_and_trains_eagerly(capsys):
    """No CUDA here, so the capture fails for real: one warning line, and the run is the
    eager one (nothing of the failed step was applied before it reran eagerly)."""
    cfg = cfg_of()
    eager, s = setup(cfg, graphed=False), with_step(cfg, GraphedStep, capture=True)
    capsys.readouterr()
    assert epochs(cfg, s, 3) == epochs(cfg, eager, 3)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: CUDA graph capture failed: ")
    assert s.step.kind == "eager (capture failed)" and s.step.graph is None
    assert s.step.check["result"] == "capture failed"
    assert s.step.counts == {"warm-up": WARMUP_STEPS, "graph": 0, "eager": 12 - WARMUP_STEPS}


class StandInCapture:
    """torch.cuda.graph as a failing capture behaves: an error inside the block makes
    capture_end fail too, and an empty capture only warns."""

    capturing, step = False, None

    def __init__(self, graph, stream=None, warn_empty=False):
        self.warn_empty = warn_empty

    def __enter__(self):
        StandInCapture.capturing = True
        self.before = snapshot(self.step.state_tensors())  # nothing recorded runs

    def __exit__(self, kind, err, tb):
        StandInCapture.capturing = False
        restore(self.before, self.step.state_tensors())
        if err is not None:
            raise RuntimeError("CUDA error: operation failed due to a previous error during capture")
        if self.warn_empty:
            warnings.warn("The CUDA Graph is empty. This usually means that the graph was attempted to be "
                          "captured on wrong device or stream.", stacklevel=2)


def capture_stand_in(monkeypatch, cfg, warn_empty=False):
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: object())
    monkeypatch.setattr(torch.cuda, "graph", lambda g, stream=None: StandInCapture(g, stream, warn_empty))
    s = with_step(cfg, GraphedStep, capture=True)
    StandInCapture.step, model = s.step, s.step.forward

    def forward(x):
        if StandInCapture.capturing:
            raise RuntimeError("Cannot call CUDAGeneratorImpl::current_seed during CUDA graph capture")
        return model(x)

    s.step.forward = forward
    return s


def test_failed_capture_names_the_error_that_broke_it(monkeypatch, capsys):
    cfg = cfg_of()
    s = capture_stand_in(monkeypatch, cfg)
    capsys.readouterr()
    epochs(cfg, s, 2)
    (line,) = capsys.readouterr().err.splitlines()
    assert "RuntimeError: Cannot call CUDAGeneratorImpl::current_seed" in line, line
    assert "previous error" not in line


def test_an_empty_capture_counts_as_failed(monkeypatch, capsys):
    cfg = cfg_of()
    s = capture_stand_in(monkeypatch, cfg, warn_empty=True)
    s.step.forward = s.model  # the block itself runs fine: only the warning tells
    capsys.readouterr()
    assert epochs(cfg, s, 2) == epochs(cfg, setup(cfg, graphed=False), 2)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("warning: CUDA graph capture failed: the graph is empty (The CUDA Graph is empty.")
    assert s.step.kind == "eager (capture failed)"


# --------------------------------------------------------------------------- one device
def test_cuda_index_and_binding_are_the_same_for_every_gpu(monkeypatch):
    """A sweep worker sees its GPU as cuda (index None); train.device=cuda:1 names another.
    Both resolve to an index, and the step makes that device current around every CUDA call."""
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert step_mod.resolved(torch.device("cuda")) == torch.device("cuda", 0)
    assert step_mod.resolved(torch.device("cuda:1")) == torch.device("cuda", 1)
    assert step_mod.bound(torch.device("cuda:1")).idx == 1  # torch.cuda.device, not yet entered
    assert step_mod.bound(torch.device("cuda", 0)).idx == 0
    assert isinstance(step_mod.bound(torch.device("cpu")), contextlib.nullcontext)


def graph_stand_ins(monkeypatch, step, where=lambda: None) -> list:
    """Stand-ins for torch.cuda's CUDAGraph and graph around ``step``: a "capture" runs the
    step's code and puts the state back (a real one runs nothing of it), a "replay" runs it
    on the static tensors. Returns the log they and the step's updates outside them write:
    (event, sum of the input it reads, ``where()`` then)."""
    log, inside = [], []
    real = step._update

    def update(x, y):
        if not inside:
            log.append(("step", x.sum().item(), where()))
        real(x, y)

    class Graph:
        def replay(self):
            log.append(("replay", step.x.sum().item(), where()))
            inside.append(self)
            real(step.x, step.y)
            inside.pop()

    class Capture:
        def __init__(self, graph, stream=None):
            pass

        def __enter__(self):
            log.append(("capture", step.x.sum().item(), where()))
            inside.append(self)
            self.before = snapshot(step.state_tensors())

        def __exit__(self, *exc):
            restore(self.before, step.state_tensors())
            inside.pop()

    monkeypatch.setattr(step, "_update", update)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", Capture)
    return log


def test_capture_and_replay_run_with_the_steps_device_current(monkeypatch):
    """Through stand-ins for the binding and for torch.cuda's graph: the capture and every
    replay happen while the step's own device is the current one."""
    current = []

    @contextlib.contextmanager
    def binding(device):
        current.append(device)
        yield
        current.pop()

    monkeypatch.setattr(step_mod, "bound", binding)
    cfg = cfg_of()
    s = with_step(cfg, GraphedStep, capture=True)
    log = graph_stand_ins(monkeypatch, s.step, lambda: list(current))
    epochs(cfg, s, 2)
    seen = [(what, devices) for what, _, devices in log if what != "step"]
    assert [what for what, _ in seen] == ["capture"] + ["replay"] * (6 - WARMUP_STEPS)
    assert all(devices == [s.step.device] for _, devices in seen), seen
    assert s.step.kind == "graphed" and s.step.check["result"] == "passed"


def test_the_check_steps_eagerly_then_captures_then_replays_a_batch_it_was_not_recorded_with(monkeypatch):
    """The self-check's eager step runs before the capture: on a GPU its memory is then back in
    the cache when torch.cuda.graph empties it, and the graph's pool takes its place instead
    of coming on top of it. The graph is recorded while the static input holds the last
    warm-up batch, and replayed on the checked batch staged there."""
    cfg = cfg_of()
    s = with_step(cfg, GraphedStep, capture=True)
    log = graph_stand_ins(monkeypatch, s.step)
    epochs(cfg, s, 2)
    kinds = [what for what, _, _ in log]
    at = kinds.index("capture")
    # 3 warm-ups and the partial batch of epoch 1, then the first full batch of epoch 2
    assert kinds[:at + 2] == ["step"] * (WARMUP_STEPS + 2) + ["capture", "replay"]
    warm_up, checked, recorded, replayed = (log[i][1] for i in (WARMUP_STEPS - 1, at - 1, at, at + 1))
    assert recorded == warm_up and replayed == checked != warm_up
    assert s.step.check["result"] == "passed"


# --------------------------------------------------------------------------- checkpoints and resume
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
    for i, state in enumerate(s.step.optimizer.state.values()):
        assert torch.equal(state["momentum_buffer"], saved["optimizer"]["state"][i]["momentum_buffer"])
    assert s.step.optimizer.param_groups[0]["lr"] is s.step.lr  # not the checkpoint's own lr tensor
    again = train_epoch(cfg, s, 2, 5)
    assert (again["train_loss"], again["train_err"]) == (second["train_loss"], second["train_err"])


def old_style_checkpoint(s) -> dict:
    """A checkpoint of an eager CPU run before both steps used fused SGD: foreach, float lr."""
    sgd = torch.optim.SGD(s.model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, foreach=True)
    s.model(torch.rand(4, s.data.channels, s.data.image_size, s.data.image_size)).sum().backward()
    sgd.step()
    return {"model": s.model.state_dict(), "optimizer": sgd.state_dict()}


@pytest.mark.parametrize("step_class", [Step, GraphedStep])
def test_resume_keeps_this_steps_fused_sgd_and_lr_tensor(step_class):
    cfg = cfg_of()
    other_kind = setup(cfg, graphed=step_class is Step)
    epochs(cfg, other_kind, 1)
    for saved in (old_style_checkpoint(setup(cfg)), checkpoint_of(other_kind)):
        s = with_step(cfg, step_class, **({"capture": False} if step_class is GraphedStep else {}))
        s.step.load_state_dict(saved)
        group = s.step.optimizer.param_groups[0]
        assert group["fused"] and not group["foreach"] and group["lr"] is s.step.lr
        assert group["momentum"] == cfg.train.momentum and s.step.optimizer.state  # the momentum came along
        epochs(cfg, s, 1)  # and it trains


def test_interrupted_graphed_run_resumes_to_the_same_result(tmp_path, monkeypatch, graphed_everywhere):
    interrupted_and_resumed(lambda: cfg_of("train.epochs=4"), tmp_path, monkeypatch)
    pd.testing.assert_frame_equal(metrics(tmp_path / "cut"), metrics(tmp_path / "full"))


def test_nan_loss_under_the_graphed_step_ends_as_diverged(tmp_path, graphed_everywhere):
    summary = fit(cfg_of("train.lr=1e6"), tmp_path / "out")
    assert summary["status"] == "diverged"
    assert not metrics(tmp_path / "out").train_loss.iloc[-1] < float("inf")


# --------------------------------------------------------------------------- activation checkpointing
def test_checkpointed_training_step_counts_each_batch_once_in_batchnorm():
    """model.checkpoint_segments recomputes the segments in backward, train-mode BN included:
    the running statistics must move as without checkpointing, not twice as far."""
    plain, ckpt = setup(cfg_of("model.depth=14")), setup(cfg_of("model.depth=14", "model.checkpoint_segments=2"))
    assert ckpt.model.checkpoint_segments == 2
    a, b = epochs(cfg_of(), plain, 1), epochs(cfg_of(), ckpt, 1)
    counters = {int(t) for n, t in ckpt.model.named_buffers() if n.endswith("num_batches_tracked")}
    assert counters == {4}  # 4 batches, each counted once
    gaps = state_gaps(state_of(plain), state_of(ckpt))
    assert all(gaps[n] == 0 for n in gaps if "running_" in n or "num_batches" in n), gaps
    assert max(gaps.values()) < 1e-5 and a == pytest.approx(b, rel=1e-6)
    assert {m.momentum for m in ckpt.model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.1}


# --------------------------------------------------------------------------- the choice of step
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


@pytest.mark.slow  # tracing and compiling take seconds even for ResNet-8
def test_compile_takes_the_checkpointed_net_and_counts_each_batch_once():
    """train.compile=true with model.checkpoint_segments: dynamo and AOT autograd, the two
    tracers of torch.compile, take the checkpointed segments and their BN guard, and the
    compiled step trains as the plain one (the aot_eager backend runs the traced forward and
    backward as they are: resexp compiles on CUDA only, where inductor generates kernels
    from these very graphs)."""
    cfg = cfg_of("model.checkpoint_segments=2", "dataset.train_args.size=128")  # 2 full batches: one shape
    plain, compiled = setup(cfg), setup(cfg)
    compiled.step.forward = torch.compile(compiled.model, backend="aot_eager")
    a, b = epochs(cfg, plain, 1), epochs(cfg, compiled, 1)
    counters = {int(t) for n, t in compiled.model.named_buffers() if n.endswith("num_batches_tracked")}
    assert counters == {2}
    gaps = state_gaps(state_of(plain), state_of(compiled))
    assert max(gaps.values()) < 1e-5 and a == pytest.approx(b, rel=1e-6)
