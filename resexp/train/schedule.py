"""Learning-rate schedule and run length, in iterations (the paper's unit, §4.2)."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    lr: float
    milestones: tuple[int, ...]  # iterations at which lr is multiplied by gamma
    gamma: float
    total_iters: int
    iters_per_epoch: int
    warmup_iters: int = 0
    warmup_lr: float = 0.0

    @property
    def epochs(self) -> int:
        return math.ceil(self.total_iters / self.iters_per_epoch)

    def lr_at(self, iteration: int) -> float:
        """lr for the step that starts at ``iteration`` (0-based). The warm-up uses
        its own lr and then returns to the schedule (cf. akamaster issue #21, where
        a warm-up never switched back)."""
        if iteration < self.warmup_iters:
            return self.warmup_lr
        # round(): 0.1 * 0.1 would otherwise be logged as 0.010000000000000002
        return round(self.lr * self.gamma ** bisect.bisect_right(self.milestones, iteration), 12)

    def describe(self) -> str:
        ks = lambda i: f"{i // 1000}k" if i >= 1000 and i % 1000 == 0 else str(i)  # noqa: E731
        parts = [f"SGD lr {self.lr:g}"]
        if self.milestones:
            parts.append(f"x{self.gamma:g} at it " + ", ".join(ks(m) for m in self.milestones))
        if self.warmup_iters:
            parts.append(f"warm-up lr {self.warmup_lr:g} for {self.warmup_iters} it")
        parts.append(f"{ks(self.total_iters)} it ({self.epochs} epochs)")
        return "; ".join(parts)


def make_schedule(train_cfg, iters_per_epoch: int, depth: int) -> Schedule:
    """The schedule of ``train_cfg`` for a net of ``depth`` layers."""
    if train_cfg.iterations is not None:
        total = int(train_cfg.iterations)
    else:
        total = int(train_cfg.epochs) * iters_per_epoch
    scale = iters_per_epoch if train_cfg.milestone_unit == "epochs" else 1
    milestones = tuple(sorted(int(round(m * scale)) for m in train_cfg.milestones))
    warm_depth = train_cfg.warmup_from_depth
    warmup = train_cfg.warmup_iters if warm_depth is None or depth >= warm_depth else 0
    return Schedule(lr=float(train_cfg.lr), milestones=milestones, gamma=float(train_cfg.gamma),
                    total_iters=total, iters_per_epoch=iters_per_epoch,
                    warmup_iters=int(warmup), warmup_lr=float(train_cfg.warmup_lr))
