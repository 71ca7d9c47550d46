"""How long runs will take, from speeds measured on this machine.

A training step of these nets costs about ``a + b * depth`` seconds per image of its
batch: every layer adds the same kernels, and ``a`` is the fixed cost of a step (batch
gathering, augmentation, the optimiser call). Each architecture's line is fitted to the
seconds per image of runs that already trained in the sweep folder (their
``images_per_s``); an architecture with none there takes the line through the
other architectures' runs (a plain and a residual net of one depth cost the same).
With no run at all, the first architecture is timed for a few steps at its
smallest and largest planned depth (``resexp bench``'s loop on random images of
the dataset's shape): three steps after one of warm-up, on one thread, so that
cores others are using do not stretch the timing tenfold (docs/threads.md). An
evaluation pass is counted as a third of a training step per image (a forward
without the backward).

The estimate is honest about its basis: plan.estimate_costs says which runs or
timings it came from and how far to trust it, and the plan prints that.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from resexp.run.folder import RunState


@dataclass(frozen=True)
class Line:
    """Seconds per training image as a function of depth."""
    a: float
    b: float

    def at(self, depth: int) -> float:
        return max(self.a + self.b * depth, 1e-9)


def fit_line(points: list[tuple[int, float]]) -> Line:
    """Least squares through (depth, seconds per image); one depth: through the origin."""
    depths = {d for d, _ in points}
    if len(depths) < 2:
        return Line(0.0, sum(s for _, s in points) / sum(d for d, _ in points))
    n = len(points)
    mx, my = sum(d for d, _ in points) / n, sum(s for _, s in points) / n
    b = sum((d - mx) * (s - my) for d, s in points) / sum((d - mx) ** 2 for d, _ in points)
    if b <= 0:  # noise on nearly equal times: a flat line is the honest fit
        return Line(my, 0.0)
    return Line(my - b * mx, b)


def measured_points(states: Iterable[RunState]) -> dict[str, list[tuple[int, float]]]:
    """arch -> [(depth, seconds per image)] from the epochs the runs of ``states`` logged (a
    damaged file reads as missing here)."""
    points: dict[str, list[tuple[int, float]]] = {}
    for state in states:
        summary, rows = state.summary, state.rows
        rates = [r["images_per_s"] for r in rows if r.get("images_per_s") and math.isfinite(r["images_per_s"])]
        if not rates or "arch" not in summary or "depth" not in summary:
            continue
        median = sorted(rates)[len(rates) // 2]  # the first epoch also holds warm-up costs
        points.setdefault(summary["arch"], []).append((int(summary["depth"]), 1 / median))
    return points


TIMED_STEPS = 3     # timed steps per depth
WARMUP_STEPS = 1    # untimed before them: on the CPU only the first step is slower (allocations)


def timed_points(cfgs: dict[int, object]) -> list[tuple[int, float]]:
    """(depth, seconds per image) of one arch at its smallest and largest depth, timed here
    on one thread; ``cfgs`` maps each planned depth to its run config."""
    from omegaconf import OmegaConf

    from resexp.tools.bench import bench_one  # torch and the trainer: only when a timing is needed
    picks = sorted({min(cfgs), max(cfgs)})
    return [(d, bench_one(OmegaConf.merge(cfgs[d], {"train": {"threads": 1}}), TIMED_STEPS,
                          warmup=WARMUP_STEPS)["ms_per_step"] / 1000 / cfgs[d].train.batch_size)
            for d in picks]


def run_seconds(line: Line, depth: int, iterations: int, epochs: int, batch_size: int,
                eval_images: int) -> float:
    """Training steps of ``batch_size`` images plus one evaluation pass over ``eval_images``
    per epoch."""
    return line.at(depth) * (iterations * batch_size + epochs * eval_images / 3)
