"""How long runs will take, from speeds measured on this machine.

A training step of these nets costs about ``a + b * depth`` seconds: every layer
adds the same kernels, and ``a`` is the fixed cost of a step (batch gathering,
augmentation, the optimiser call). Each architecture's line is fitted to the
seconds per step of runs that already trained in the sweep folder (their
``images_per_s``); an architecture with none is timed for a few steps at its
smallest and largest planned depth (``resexp bench``'s loop on random images of
the dataset's shape). An evaluation pass is counted as a third of a training step
per image (a forward without the backward).

The estimate is honest about its basis: ``plan.estimate_costs`` returns which runs or
timings it came from, and the plan's footer prints it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from resexp.run.folder import RunDir


@dataclass(frozen=True)
class Line:
    """Seconds per training step as a function of depth."""
    a: float
    b: float

    def at(self, depth: int) -> float:
        return max(self.a + self.b * depth, 1e-6)


def fit_line(points: list[tuple[int, float]]) -> Line:
    """Least squares through (depth, seconds per step); one depth: through the origin."""
    depths = {d for d, _ in points}
    if len(depths) < 2:
        return Line(0.0, sum(s for _, s in points) / sum(d for d, _ in points))
    n = len(points)
    mx, my = sum(d for d, _ in points) / n, sum(s for _, s in points) / n
    b = sum((d - mx) * (s - my) for d, s in points) / sum((d - mx) ** 2 for d, _ in points)
    if b <= 0:  # noise on nearly equal times: a flat line is the honest fit
        return Line(my, 0.0)
    return Line(my - b * mx, b)


def measured_points(folder: Path, batch_size: int) -> dict[str, list[tuple[int, float]]]:
    """arch -> [(depth, seconds per step)] from the epochs runs in ``folder`` logged."""
    points: dict[str, list[tuple[int, float]]] = {}
    for run_dir in sorted(p for p in Path(folder).glob("*-*-s*") if p.is_dir()):
        state = RunDir(run_dir).state()  # a damaged file reads as missing here, never raises
        summary, rows = state.summary, state.rows
        rates = [r["images_per_s"] for r in rows if r.get("images_per_s") and math.isfinite(r["images_per_s"])]
        if not rates or "arch" not in summary or "depth" not in summary:
            continue
        median = sorted(rates)[len(rates) // 2]  # the first epoch also holds warm-up costs
        points.setdefault(summary["arch"], []).append((int(summary["depth"]), batch_size / median))
    return points


def timed_points(cfg_for, arch: str, depths: list[int], steps: int = 5) -> list[tuple[int, float]]:
    """(depth, seconds per step) for ``arch`` at its smallest and largest depth, timed here.
    ``cfg_for(arch, depth)`` gives the run config."""
    from resexp.tools.bench import bench_one  # torch and the trainer: only when a timing is needed
    picks = sorted({min(depths), max(depths)})
    return [(d, bench_one(cfg_for(arch, d), steps)["ms_per_step"] / 1000) for d in picks]


def run_seconds(line: Line, depth: int, iterations: int, epochs: int, batch_size: int,
                eval_images: int) -> float:
    """Training steps plus one evaluation pass over ``eval_images`` per epoch."""
    step = line.at(depth)
    return iterations * step + epochs * eval_images * step / batch_size / 3
