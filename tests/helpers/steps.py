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
    torch.save({"model": s.model.state_dict(), "optimizer": s.step.optimizer.state_dict()}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def addresses(s) -> list[int]:
    tensors = [*s.model.parameters(), *s.model.buffers(), s.step.lr, s.step.x, s.step.y,
               s.step.loss_sum, s.step.wrong]
    tensors += [state["momentum_buffer"] for state in s.step.optimizer.state.values()]
    return [t.data_ptr() for t in tensors]


def state_of(s) -> dict[str, torch.Tensor]:
    """Copies of everything a training step changes (parameters, BN running stats and
    counters, momentum, meters), plus the eval-mode output on a fixed batch: what a broken
    graph would get wrong even where the training loss looks right."""
    state = {name: t.detach().clone() for name, t in s.step.state_tensors().items()}
    x = torch.randn(16, s.data.channels, s.data.image_size, s.data.image_size,
                    generator=torch.Generator().manual_seed(1)).to(s.step.device)
    if s.step.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    was_training = s.model.training
    s.model.eval()
    with torch.no_grad():
        state["eval-mode output"] = s.model(x).float()
    s.model.train(was_training)
    return state


def state_gaps(a: dict, b: dict) -> dict[str, float]:
    """Per tensor, the largest |a - b| relative to the largest |a| (0: bit for bit)."""
    assert a.keys() == b.keys()
    return {name: ((a[name].double() - b[name].double()).abs().max()
                   / a[name].double().abs().max().clamp_min(1e-12)).item() for name in a}
