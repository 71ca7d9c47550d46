"""Looking at a training step from outside: per-epoch numbers, what a checkpoint holds, where
the step's tensors live (a graph replays on fixed addresses)."""

from __future__ import annotations

import io

import torch

from resexp.train.loop import train_epoch

# metrics.csv columns that measure time, not training: left out when two runs are compared.
TIMING = ["seconds", "images_per_s", "elapsed"]


def epochs(cfg, s, n: int) -> list[float]:
    """Train loss and train error of each of ``n`` epochs of ``train_epoch``, in one list."""
    out, iteration = [], 0
    for epoch in range(1, n + 1):
        stats = train_epoch(cfg, s, epoch, iteration)
        iteration = stats["iteration"]
        out += [stats["train_loss"], stats["train_err"]]
    return out


def checkpoint_of(s) -> dict:
    """What fit() saves, through torch.save and back, as a resume reads it."""
    buffer = io.BytesIO()
    torch.save({"model": s.model.state_dict(), "optimizer": s.optimizer.state_dict()}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def addresses(s) -> list[int]:
    tensors = [*s.model.parameters(), *s.model.buffers(), s.step.lr, s.step.x, s.step.y,
               s.step.loss_sum, s.step.wrong]
    tensors += [state["momentum_buffer"] for state in s.optimizer.state.values()]
    return [t.data_ptr() for t in tensors]
