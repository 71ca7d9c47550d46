"""The graphed step's self-check: the state a training step changes, copied, restored and
compared between an eager step and a replay of the graph from the same state.

A difference is measured per tensor, relative to what the eager step changed in that
tensor: ``|replay - eager| / |eager - before|`` (Euclidean norms). A graph that skips the
BN update, replays nothing, or uses another lr differs by a large part of the step's
change (0.5 to 1); a correct graph on a GPU differs only by the summation order of
cuDNN's nondeterministic kernels.
"""

from __future__ import annotations

import math

import torch

# Allowed difference, as a fraction of the step's own change to each tensor. Under
# deterministic kernels a replay runs the eager step's kernels on the same numbers: no
# difference is allowed at all.
NONDETERMINISTIC = 1e-2


def snapshot(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copies of named tensors, for ``restore``."""
    return {name: t.detach().clone() for name, t in tensors.items()}


def restore(copies: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> None:
    """Put ``copies`` back into ``tensors`` in place (a graph keeps their addresses)."""
    for name, t in tensors.items():
        if name in copies:
            t.detach().copy_(copies[name])


def _gap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Norm of a - b in float64, where equal values (both inf, or both NaN) count as no gap."""
    a, b = a.detach().double(), b.detach().double()
    same = (a == b) | (a.isnan() & b.isnan())
    return torch.where(same, torch.zeros_like(a), a - b).norm()


def compare(before: dict, eager: dict, replayed: dict[str, torch.Tensor], tol: float) -> dict:
    """The self-check's verdict (what summary.json records): passed when every tensor the
    replay left is within ``tol`` of the eager step's (snapshots), relative to that step's change."""
    names = [name for name in replayed if name in eager and name in before]
    diffs = torch.stack([_gap(replayed[n], eager[n]) for n in names]).tolist()  # one sync
    changes = torch.stack([_gap(eager[n], before[n]) for n in names]).tolist()
    relative = [_relative(d, c) for d, c in zip(diffs, changes)]
    worst = max(range(len(names)), key=lambda i: relative[i])
    return {"result": "passed" if relative[worst] <= tol else "failed", "worst": names[worst],
            "difference": relative[worst] if math.isfinite(relative[worst]) else None,
            "tolerance": tol, "tensors": len(names)}


def _relative(diff: float, change: float) -> float:
    if diff == 0:
        return 0.0
    if not (math.isfinite(diff) and math.isfinite(change)) or change == 0:
        return math.inf
    return diff / change
