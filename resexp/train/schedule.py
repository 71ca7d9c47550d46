"""Learning-rate schedule and run length, in iterations (the paper's unit, §4.2).

Milestones and the warm-up count from the run's start (in iterations, or in epochs
turned into iterations), never as shares of its length: a run extended to more epochs
(resexp/train/extend.py) keeps its lr where it was, and its first part is the shorter
run. A milestone or warm-up that the run never gets past would change nothing (or hold the
whole run at the warm-up lr): planned_schedule, where runs are planned (a sweep's plan,
`resexp train`), refuses it.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from resexp.data import iters_per_epoch
from resexp.errors import UserError


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


def planned_iterations(train, per_epoch: int) -> int:
    """A run's length in iterations: train.iterations, else train.epochs whole epochs (``train``:
    a config's train section, or a saved config.yaml's)."""
    return int(train["iterations"]) if train.get("iterations") is not None else int(train["epochs"]) * per_epoch


def make_schedule(train_cfg, iters_per_epoch: int, depth: int) -> Schedule:
    """The schedule of ``train_cfg`` for a net of ``depth`` layers."""
    total = planned_iterations(train_cfg, iters_per_epoch)
    milestones = tuple(sorted(_iteration(m, iters_per_epoch, train_cfg) for m in train_cfg.milestones))
    warm_depth = train_cfg.warmup_from_depth
    warmup = train_cfg.warmup_iters if warm_depth is None or depth >= warm_depth else 0
    return Schedule(lr=float(train_cfg.lr), milestones=milestones, gamma=float(train_cfg.gamma),
                    total_iters=total, iters_per_epoch=iters_per_epoch,
                    warmup_iters=int(warmup), warmup_lr=float(train_cfg.warmup_lr))


def config_iters_per_epoch(cfg) -> int:
    """Iterations per epoch of a run of ``cfg``, from the sizes its config gives (no data loaded)."""
    ds, t = cfg.dataset, cfg.train
    return iters_per_epoch(ds.train_subset or ds.train_size - ds.val_size, t.batch_size, t.drop_last)


def planned_schedule(cfg) -> Schedule:
    """The schedule a run of ``cfg`` will train, before any data is loaded. UserError (one line)
    for a warm-up or a milestone at or past the run's last iteration: the run would silently
    train at the warm-up lr throughout, or never decay."""
    train_cfg, depth = cfg.train, cfg.model.depth
    s = make_schedule(train_cfg, config_iters_per_epoch(cfg), depth)
    unused = []
    if s.warmup_iters >= s.total_iters:
        deep = f" (depth {depth} >= train.warmup_from_depth)" if train_cfg.warmup_from_depth is not None else ""
        unused.append(f"train.warmup_iters={s.warmup_iters}{deep} would hold it at the warm-up lr throughout")
    late = [it for it in s.milestones if it >= s.total_iters]
    if late:
        given = "[" + ",".join(f"{m:g}" for m in train_cfg.milestones) + "]"
        where = f" (in epochs: iteration {', '.join(map(str, late))})" if train_cfg.milestone_unit == "epochs" else ""
        unused.append(f"train.milestones={given}{where} would never lower the lr")
    if not unused:
        return s
    raise UserError(f"the run is {s.total_iters} iterations long ({s.total_iters / s.iters_per_epoch:g} epochs of "
                    f"{s.iters_per_epoch} iterations), so {' and '.join(unused)}; scale the schedule to the run or "
                    f"drop it (train.warmup_iters=0 train.milestones=[]); an experiment's schedule is sized for its "
                    f"own length, not for a shorter train.epochs, train.iterations or dataset.train_subset")


def _iteration(milestone, iters_per_epoch: int, train_cfg) -> int:
    """The iteration a milestone falls on: given in iterations, or in epochs (maybe 7.5)."""
    return int(round(milestone * (iters_per_epoch if train_cfg.milestone_unit == "epochs" else 1)))
