"""One SGD training step (forward, backward, update), eager or replayed from a CUDA graph.

``train_epoch`` calls ``step(x, y, lr)`` once per batch; the step adds the batch's
loss and error count to ``loss_sum`` and ``wrong`` on the device, so the loop reads
them once per epoch and never waits for the GPU in between.

- ``EagerStep`` is the plain loop: what runs on the CPU, and on CUDA with
  ``train.cuda_graphs=false``.
- ``GraphedStep`` captures forward, backward, the SGD update and the two meters
  once as a CUDA graph and replays it per batch. These small nets are bound by
  kernel launches, not arithmetic (docs/benchmarks.md); a replay launches the whole
  step at once. What a graph needs, and how it is met here:
  * fixed addresses: each batch is copied into static input/target tensors; the
    parameters, BN running stats, momentum buffers and meters are updated in place.
  * the lr changes without a new capture: it is a one-element float32 tensor on the
    device, which torch's fused SGD kernel reads when it runs (a Python float would be
    baked into the graph). It is refilled only when the schedule changes it.
  * the first steps run eagerly (cudnn.benchmark's search, lazy initialisation, the
    momentum buffers), on a side stream as torch's CUDA-graph docs ask. They are real
    training steps on real batches, so the graphed run is the eager run.
  * a batch of another size (an epoch's last, partial batch) runs eagerly on the same
    parameters, optimizer and lr tensor: one step in hundreds, no second graph.
  With ``capture=False`` it is the same code minus the capture and replay, which is
  how the CPU tests exercise everything but the CUDA calls.
"""

from __future__ import annotations

import contextlib
import sys

import torch
import torch.nn.functional as F

# Eager steps before the capture (torch's whole-network capture example uses 3).
WARMUP_STEPS = 3


def wants_graphs(train_cfg, device: torch.device) -> bool:
    """CUDA graphs are used on CUDA only, where ``train.cuda_graphs`` is on."""
    return bool(train_cfg.cuda_graphs) and device.type == "cuda"


def make_step(train_cfg, model: torch.nn.Module, forward, device: torch.device, amp: bool,
              channels_last: bool, graphed: bool | None = None) -> Step:
    """The step ``train_cfg`` asks for on ``device`` (``graphed`` overrides the choice)."""
    graphed = wants_graphs(train_cfg, device) if graphed is None else graphed
    if graphed:
        return GraphedStep(model, forward, train_cfg, device, amp, channels_last,
                           capture=device.type == "cuda")
    return EagerStep(model, forward, train_cfg, device, amp, channels_last)


def make_sgd(model: torch.nn.Module, train_cfg, lr, device: torch.device) -> torch.optim.SGD:
    """The paper's SGD; fused on CUDA (and wherever lr is a tensor), foreach on the CPU."""
    fused = device.type == "cuda" or isinstance(lr, torch.Tensor)
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=train_cfg.momentum,
                           weight_decay=train_cfg.weight_decay, nesterov=train_cfg.nesterov,
                           **({"fused": True} if fused else {"foreach": True}))


class Step:
    """What both steps share: the meters, the update itself, and checkpoint state."""

    kind = "eager"
    autocast_cache = True

    def __init__(self, model, forward, optimizer, device: torch.device, amp: bool, channels_last: bool):
        self.model, self.forward, self.optimizer = model, forward, optimizer
        self.device, self.amp, self.channels_last = device, amp, channels_last
        self.loss_sum = torch.zeros((), device=device)
        self.wrong = torch.zeros((), device=device, dtype=torch.long)

    def reset(self) -> None:
        """Zero the meters in place (a graph keeps adding into the same tensors)."""
        self.loss_sum.zero_()
        self.wrong.zero_()

    def _autocast(self):
        if self.amp:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                                  cache_enabled=self.autocast_cache)
        return contextlib.nullcontext()

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Forward, backward, SGD step; loss and error count added on the device."""
        with self._autocast():
            out = self.forward(x)
            loss = F.cross_entropy(out, y)
        # After the forward, not before: freeing the old gradients first made the CPU
        # allocator fault in fresh pages for the activations (about 7% slower on 2 cores).
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.detach().float() * len(y)
        self.wrong += (out.argmax(1) != y).sum()

    def load_state_dict(self, state: dict) -> None:
        """Restore a checkpoint's model and optimizer into the tensors in use: parameters and
        BN buffers are copied in place (nn.Module does that), and so are momentum buffers
        that already exist, so a captured graph goes on reading and writing the right memory."""
        self.model.load_state_dict(state["model"])
        kept = {p: s.get("momentum_buffer") for p, s in self.optimizer.state.items()}
        self.optimizer.load_state_dict(state["optimizer"])
        for p, buf in kept.items():
            loaded = self.optimizer.state[p].get("momentum_buffer")
            if buf is not None and loaded is not None:
                buf.copy_(loaded)
                self.optimizer.state[p]["momentum_buffer"] = buf


class EagerStep(Step):
    """The plain training step: lr set as a float, one op at a time."""

    def __init__(self, model, forward, train_cfg, device, amp, channels_last):
        super().__init__(model, forward, make_sgd(model, train_cfg, float(train_cfg.lr), device),
                         device, amp, channels_last)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._update(self._layout(x), y)


class GraphedStep(Step):
    """Capture the step once, replay it per batch (see the module docstring)."""

    # Autocast's cast cache would keep bf16 weight copies made outside the capture; with
    # it off every cast is part of the graph (torch's CUDA-graph docs ask for this).
    autocast_cache = False

    def __init__(self, model, forward, train_cfg, device, amp, channels_last, capture: bool = True):
        self.lr = torch.tensor(float(train_cfg.lr), dtype=torch.float32, device=device)
        super().__init__(model, forward, make_sgd(model, train_cfg, self.lr, device),
                         device, amp, channels_last)
        self.batch_size, self.capture = int(train_cfg.batch_size), capture
        self.lr_value: float | None = None  # what self.lr holds, known without reading it
        self.x = self.y = self.graph = self.side_stream = None
        self.failed: str | None = None      # why the capture failed; then every step is eager
        self.counts = {"warm-up": 0, "graph": 0, "eager": 0}

    @property
    def kind(self) -> str:
        if self.failed:
            return "eager (capture failed)"
        return "graphed" if self.capture else "graphed (no capture)"

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        self._set_lr(lr)
        if len(y) != self.batch_size or self.failed:
            self.counts["eager"] += 1
            self._update(self._layout(x), y)
            return
        self._stage(x, y)
        if self.counts["warm-up"] < WARMUP_STEPS:
            self.counts["warm-up"] += 1
            self._warm_up()
            return
        if self.capture and self.graph is None and not self._capture():
            self.counts["eager"] += 1
            self._update(self.x, self.y)
            return
        self.counts["graph"] += 1
        if self.graph is not None:
            self.graph.replay()
        else:
            self._update(self.x, self.y)

    def _set_lr(self, lr: float) -> None:
        """Fill the lr tensor when the schedule changes it (a tiny kernel, no sync)."""
        if lr != self.lr_value:
            self.lr.fill_(lr)
            self.lr_value = lr

    def _stage(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Copy the batch into the static tensors the graph reads (channels_last on copy)."""
        if self.x is None:
            fmt = torch.channels_last if self.channels_last and x.dim() == 4 else torch.contiguous_format
            self.x, self.y = torch.empty_like(x, memory_format=fmt), torch.empty_like(y)
        self.x.copy_(x)
        self.y.copy_(y)

    def _warm_up(self) -> None:
        if self.device.type != "cuda":
            self._update(self.x, self.y)
            return
        main = torch.cuda.current_stream(self.device)
        if self.side_stream is None:
            self.side_stream = torch.cuda.Stream(self.device)
        self.side_stream.wait_stream(main)
        with torch.cuda.stream(self.side_stream):
            self._update(self.x, self.y)
        main.wait_stream(self.side_stream)

    def _capture(self) -> bool:
        """Record one step into a CUDA graph (nothing runs while recording). On failure, say
        so in one line and train eagerly from here on: nothing of the step was applied."""
        main = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        try:
            graph = torch.cuda.CUDAGraph()
            # Gradients allocated inside the capture live in the graph's memory pool; the
            # replayed backward then writes them in place, so no zero_grad between replays.
            self.optimizer.zero_grad(set_to_none=True)
            with torch.cuda.graph(graph):
                self._update(self.x, self.y)
        except Exception as err:  # any capture error: eager is always a correct fallback
            self.failed = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
            print(f"warning: CUDA graph capture failed ({self.failed}); training eagerly", file=sys.stderr)
            if main is not None:
                torch.cuda.set_stream(main)  # a capture that raised may not have restored it
            self.optimizer.zero_grad(set_to_none=True)
            return False
        self.graph = graph
        return True

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        # The checkpoint's lr (a float, or a tensor of its own) must not replace the tensor the
        # graph reads; the next step refills it from the schedule.
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        self.lr_value = None
