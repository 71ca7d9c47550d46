"""One SGD training step (forward, backward, update), eager or replayed from a CUDA graph.

``train_epoch`` calls ``step(x, y, lr)`` once per batch; the step adds the batch's
loss and error count to ``loss_sum`` and ``wrong`` on the device, so the loop reads
them once per epoch and never waits for the GPU in between.

Both steps build the same optimizer: torch's fused SGD reading its lr from one
float32 tensor on the device. So the graphed and the eager step compute with the very
same lr value and the same update kernel, and under deterministic kernels any
difference between them is a bug, not rounding.

- ``Step`` itself is the plain loop: what runs on the CPU, and on CUDA with
  ``train.cuda_graphs=false``.
- ``GraphedStep`` captures forward, backward, the SGD update and the two meters
  once as a CUDA graph and replays it per batch (docs/gpu.md). These small nets are
  bound by kernel launches, not arithmetic (docs/benchmarks.md); a replay launches the
  whole step at once. What a graph needs, and how it is met here:
  * fixed addresses: each batch is copied into static input/target tensors; the
    parameters, BN running stats, momentum buffers, gradients and meters are updated
    in place.
  * the lr changes without a new capture: the fused kernel reads the lr tensor when it
    runs (a Python float would be baked into the graph).
  * one device: warm-up, capture and replay run with the step's device current and on
    a stream of that device (``bound``); ``torch.cuda.graph`` would otherwise record on
    the current device, cuda:0, and a run on cuda:1 would capture nothing.
  * the first steps run eagerly (cudnn.benchmark's search, lazy initialisation, the
    momentum buffers), on a side stream as torch's CUDA-graph docs ask. They are real
    training steps on real batches.
  * the graph proves itself before it trains (``_capture_and_check``): the batch after
    the warm-up trains eagerly first, then the step is recorded (while the static input
    still holds the previous batch), then the graph is replayed on that batch staged into
    the static input and compared with the eager step from the same state; a graph that
    disagrees is dropped and the run goes on eagerly, with one warning line.
  * a batch of another size (an epoch's last, partial batch) runs eagerly on the same
    parameters, optimizer and lr tensor: one step in hundreds, no second graph.
  With ``capture=False`` it is the same code minus the capture and replay (a "replay" is
  an eager step), which is how the CPU tests exercise everything but the CUDA calls.
"""

from __future__ import annotations

import contextlib
import re
import sys
import warnings

import torch
import torch.nn.functional as F

from resexp.train.self_check import NONDETERMINISTIC, compare, restore, snapshot

# Eager steps before the capture (torch's whole-network capture example uses 3).
WARMUP_STEPS = 3
# What torch warns when a capture recorded nothing (it raises no error).
EMPTY_GRAPH = re.compile(r"graph is empty", re.IGNORECASE)


def wants_graphs(train_cfg, device: torch.device) -> bool:
    """CUDA graphs are used on CUDA only, where ``train.cuda_graphs`` is on."""
    return bool(train_cfg.cuda_graphs) and device.type == "cuda"


def settling_steps(train_cfg, device: torch.device) -> int:
    """Full batches a run trains before its steps take the time every later one takes: the
    graphed step's eager warm-ups and the batch of its capture and self-check; else the
    first step (cuDNN's algorithm search, torch.compile, the first allocations)."""
    return WARMUP_STEPS + 1 if wants_graphs(train_cfg, device) else 1


def resolved(device: torch.device) -> torch.device:
    """``cuda`` (no index: a sweep worker's one visible GPU) as the index it means, so a
    run on cuda, cuda:0 and cuda:1 takes one path through the step."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def bound(device: torch.device):
    """Make ``device`` the current CUDA device for the block (nothing on the CPU): graph
    capture, its memory pool and replay all work on the current device."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def make_step(train_cfg, model: torch.nn.Module, device: torch.device, graphed: bool | None = None) -> Step:
    """The step ``train_cfg`` asks for, training ``model`` (already on ``device``);
    ``graphed`` overrides the choice between the eager and the graphed step."""
    device = resolved(device)
    graphed = wants_graphs(train_cfg, device) if graphed is None else graphed
    if graphed:
        return GraphedStep(model, train_cfg, device, capture=device.type == "cuda")
    return Step(model, train_cfg, device)


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 autocast pays on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX: about 2x
    on 2 cores, docs/benchmarks.md); elsewhere it would be emulated and slow."""
    if device.type == "cuda":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class Step:
    """How a network is trained on its device, and the update itself: the one owner of the
    device, the forward (the model, or its torch.compile'd wrapper), bf16 autocast, the
    memory layout, the lr tensor, the optimizer, the meters and checkpoint state. Called
    as ``step(x, y, lr)``: the plain eager step. Evaluation uses its ``forward``,
    ``autocast()`` and ``layout()`` too, so training and evaluation never disagree."""

    kind = "eager"
    autocast_cache = True

    def __init__(self, model: torch.nn.Module, train_cfg, device: torch.device):
        self.device = device
        self.amp = bool(train_cfg.amp) and bf16_is_fast(device)
        # NHWC is what cuDNN's and oneDNN's fast convs want (+10-30% on a 2-core CPU too).
        self.channels_last = bool(train_cfg.channels_last)
        self.model = model.to(memory_format=torch.channels_last) if self.channels_last else model
        self.forward = torch.compile(self.model) if (train_cfg.compile and device.type == "cuda") else self.model
        self.lr = torch.tensor(float(train_cfg.lr), dtype=torch.float32, device=device)
        self.lr_value: float | None = None  # what self.lr holds, known without reading it
        # The paper's SGD, fused, reading its lr from the tensor (torch >= 2.4 on the CPU, pyproject.toml).
        self.optimizer = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=train_cfg.momentum,
                                         weight_decay=train_cfg.weight_decay, nesterov=train_cfg.nesterov, fused=True)
        self.loss_sum = torch.zeros((), device=device)
        self.wrong = torch.zeros((), device=device, dtype=torch.long)
        self.keep_grads = False  # True: gradients are written in place (a graph reads them)
        self.check: dict | None = None  # the graphed step's self-check, for summary.json

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        self._set_lr(lr)
        self._update(self.layout(x), y)

    def summary(self) -> dict:
        """The summary.json keys that say which step trained the run."""
        return {"train_step": self.kind, "graph_check": self.check}

    def reset(self) -> None:
        """Zero the meters in place (a graph keeps adding into the same tensors)."""
        self.loss_sum.zero_()
        self.wrong.zero_()

    def _set_lr(self, lr: float) -> None:
        """Fill the lr tensor when the schedule changes it (a tiny kernel, no sync)."""
        if lr != self.lr_value:
            self.lr.fill_(lr)
            self.lr_value = lr

    def autocast(self):
        """bf16 autocast where the step uses it (``amp``), else nothing."""
        if self.amp:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                                  cache_enabled=self.autocast_cache)
        return contextlib.nullcontext()

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in the memory layout the model was put in."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Forward, backward, SGD step; loss and error count added on the device."""
        with self.autocast():
            out = self.forward(x)
            loss = F.cross_entropy(out, y)
        # After the forward, not before: freeing the old gradients first made the CPU
        # allocator fault in fresh pages for the activations (about 7% slower on 2 cores).
        self.optimizer.zero_grad(set_to_none=not self.keep_grads)
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.detach().float() * len(y)
        self.wrong += (out.argmax(1) != y).sum()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor a training step changes, by name: what a self-check compares."""
        names = {p: name for name, p in self.model.named_parameters()}
        tensors = {**dict(self.model.named_parameters()), **dict(self.model.named_buffers())}
        for p, state in self.optimizer.state.items():
            if state.get("momentum_buffer") is not None:
                tensors[f"momentum of {names[p]}"] = state["momentum_buffer"]
        tensors.update(loss_sum=self.loss_sum, wrong=self.wrong)
        return tensors

    def load_state_dict(self, state: dict) -> None:
        """Restore a checkpoint's model and optimizer into the tensors in use: parameters and
        BN buffers are copied in place (nn.Module does that), and so are momentum buffers
        that already exist, so a captured graph goes on reading and writing the right memory.
        The checkpoint brings the optimizer's state only: its param-group settings (a float
        lr, foreach=True from an older run) would replace this step's fused SGD and lr tensor."""
        self.model.load_state_dict(state["model"])
        own = [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]
        kept = {p: s.get("momentum_buffer") for p, s in self.optimizer.state.items()}
        self.optimizer.load_state_dict(state["optimizer"])
        for group, settings in zip(self.optimizer.param_groups, own):
            group.update(settings)
        for p, buf in kept.items():
            loaded = self.optimizer.state[p].get("momentum_buffer")
            if buf is not None and loaded is not None:
                buf.copy_(loaded)
                self.optimizer.state[p]["momentum_buffer"] = buf
        self.lr_value = None  # the next step refills the lr tensor from the schedule


class GraphedStep(Step):
    """Capture the step once, check it, replay it per batch (see the module docstring)."""

    # Autocast's cast cache would keep bf16 weight copies made outside the capture; with
    # it off every cast is part of the graph (torch's CUDA-graph docs ask for this).
    autocast_cache = False

    def __init__(self, model, train_cfg, device, capture: bool = True):
        super().__init__(model, train_cfg, device)
        self.batch_size, self.capture = int(train_cfg.batch_size), capture
        self.tolerance = 0.0 if train_cfg.deterministic else NONDETERMINISTIC
        self.x = self.y = self.graph = None
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.failed: str | None = None      # why the graph is not used; then every step is eager
        self.check: dict = {"result": "not reached"}  # the self-check's outcome, for summary.json
        self.counts = {"warm-up": 0, "graph": 0, "eager": 0}

    @property
    def kind(self) -> str:
        if self.failed:
            return f"eager ({self.failed.split(':')[0]})"
        return "graphed" if self.capture else "graphed (no capture)"

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        self._set_lr(lr)
        if len(y) != self.batch_size or self.failed:
            self.counts["eager"] += 1
            self._update(self.layout(x), y)
            return
        if self.check["result"] == "not reached" and self.counts["warm-up"] == WARMUP_STEPS:
            self.counts["graph" if self._capture_and_check(x, y) else "eager"] += 1
            return
        self._stage(x, y)
        if self.counts["warm-up"] < WARMUP_STEPS:
            self.counts["warm-up"] += 1
            self._warm_up()
            return
        self.counts["graph"] += 1
        self._replay()

    def _capture_and_check(self, x: torch.Tensor, y: torch.Tensor) -> bool:
        """The first batch after the warm-up: its eager step, the capture, then the self-check
        (the graph replayed on this batch, staged into the static input, against that eager
        step); True if the graph is used. The eager step comes first so that its memory is
        back in the allocator's cache when torch.cuda.graph empties the cache before it
        records: the graph's private pool then takes that memory's place instead of coming
        on top of it. The static input still holds the last warm-up batch while the graph is
        recorded, so a graph that reads anything but the static input when it replays (its
        recording batch, say) fails the check."""
        before = snapshot(self.state_tensors())
        self._update(self.layout(x), y)
        eager = snapshot(self.state_tensors())
        restore(before, self.state_tensors())
        if not self._capture():
            restore(eager, self.state_tensors())  # the batch's eager step: the failed capture applied nothing
            return False
        self._stage(x, y)
        self._replay()
        return self._self_check(before, eager)

    def _stage(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Copy the batch into the static tensors the graph reads (channels_last on copy)."""
        if self.x is None:
            fmt = torch.channels_last if self.channels_last and x.dim() == 4 else torch.contiguous_format
            self.x, self.y = torch.empty_like(x, memory_format=fmt), torch.empty_like(y)
        self.x.copy_(x)
        self.y.copy_(y)

    def _warm_up(self) -> None:
        if self.stream is None:
            self._update(self.x, self.y)
            return
        with bound(self.device):
            main = torch.cuda.current_stream()
            self.stream.wait_stream(main)
            with torch.cuda.stream(self.stream):
                self._update(self.x, self.y)
            main.wait_stream(self.stream)

    def _capture(self) -> bool:
        """Record one step (nothing of it runs); False, with one warning line, if that failed.
        The lr tensor holds another value while recording: a correct graph reads the lr when
        it replays, so only a graph that baked the lr in fails the self-check that follows."""
        lr = self.lr_value
        self._set_lr(lr / 2 if lr else 0.1)
        try:
            with bound(self.device):
                self.graph = self._record()
        except CaptureFailed as err:
            self._give_up(f"capture failed: {err}")
            self.optimizer.zero_grad(set_to_none=True)
            return False
        finally:
            self._set_lr(lr)
        self.keep_grads = self.graph is not None  # the replayed backward writes the graph's gradients
        return True

    def _record(self):
        """The CUDA graph of one step; None without capture. CaptureFailed names the error
        that broke the capture, not the one ``capture_end`` raises after it."""
        if not self.capture:
            return None
        main = torch.cuda.current_stream() if self.stream is not None else None
        first: list[Exception] = []
        # Gradients allocated inside the capture live in the graph's memory pool; the replayed
        # backward then writes them in place, so no zero_grad between replays.
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=self.stream):
                    try:
                        self._update(self.x, self.y)
                    except Exception as err:
                        first.append(err)
                        raise
            except Exception as err:  # any capture error: eager is always a correct fallback
                if main is not None:
                    torch.cuda.set_stream(main)  # a capture that raised may not have restored it
                cause = first[0] if first else err
                raise CaptureFailed(f"{type(cause).__name__}: {(str(cause).splitlines() or [''])[0]}") from cause
        for w in caught:
            if EMPTY_GRAPH.search(str(w.message)):
                raise CaptureFailed(f"the graph is empty ({w.message})")
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return graph

    def _replay(self) -> None:
        if self.graph is None:
            self._update(self.x, self.y)
            return
        with bound(self.device):
            self.graph.replay()

    def _self_check(self, before: dict, eager: dict) -> bool:
        """The replay just run against the eager step from the same state on the same batch
        (parameters, buffers, momentum, meters). Agreed: the replay was this batch's step. Not:
        one warning line, the eager result is kept, and the run goes on eagerly. True if the
        graph is used."""
        self.check = compare(before, eager, self.state_tensors(), self.tolerance)
        if self.check["result"] == "passed":
            return True
        restore(eager, self.state_tensors())
        by = self.check["difference"]
        self._give_up(f"self-check failed: {self.check['worst']} differs from the eager step by "
                      f"{'all' if by is None else f'{by:.3g}'} of the step's change to it "
                      f"(tolerance {self.check['tolerance']:g})")
        return False

    def _give_up(self, why: str) -> None:
        """Train eagerly from here on; say why in one line."""
        self.failed, self.graph, self.keep_grads = why, None, False
        if self.check["result"] == "not reached":
            self.check = {"result": "capture failed", "why": why}
        print(f"warning: CUDA graph {why}; training eagerly", file=sys.stderr)


class CaptureFailed(RuntimeError):
    """The capture raised, or recorded nothing."""
