"""`resexp sweep` as a plain function: plan, estimate, then hand the runs to a launcher."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from rich.console import Console

from resexp.models.footprint import device_of
from resexp.run.state import Status
from resexp.sweep import launch as launchers
from resexp.sweep import plan as sw
from resexp.sweep.task import planned_threads


@dataclass
class SweepOutcome:
    out: Path
    runs: list            # the PlannedRuns, as planned
    statuses: dict | None  # {run name: Status} once trained; None for a dry run or jobs only submitted

    @property
    def exit_code(self) -> int:
        """2 if a run is damaged (a file the user must see to), 1 if one failed or is left
        unfinished, else 0."""
        found = set((self.statuses or {}).values())
        if Status.DAMAGED in found:
            return 2
        return 1 if found & {Status.FAILED, Status.UNFINISHED} else 0

    def summary_line(self) -> str:
        values = list((self.statuses or {}).values())
        counts = {s: values.count(s) for s in sorted(set(values), key=str)}
        return f"sweep {self.out}: " + ", ".join(f"{n} {s}" for s, n in counts.items())


def sweep(archs=None, depths=None, seeds=None, overrides: Sequence[str] = (), out: Path | None = None,
          config_dirs: Sequence = (), jobs: int | None = None, wait: bool = False, dry_run: bool = False,
          console: Console | None = None) -> SweepOutcome:
    """Train every (arch, depth, seed) not yet finished (lists, or None for the saved
    sweep's or the experiment's), print the plan first; with ``dry_run`` only the plan,
    its estimate and what the launcher would do. Ctrl-C raises Interrupted."""
    console = console or Console(stderr=True, soft_wrap=True)
    spec, out = sw.resolve_spec(archs, depths, seeds, list(overrides), out, list(config_dirs))
    found = sw.survey(out)  # every run folder read once; the plan hands each state on
    runs = sw.plan(spec, out, found)
    how = launchers.pick(runs, jobs, wait, spec.config_dirs)
    # Steps are timed here only for runs trained here: a login node says nothing of a GPU node.
    basis = sw.estimate_costs(runs, out, found, time_here=dry_run and how.type == "local")
    console.print(sw.format_plan(runs, basis))
    todo = [r for r in runs if r.to_train]
    if todo:
        on_gpu = how.type == "local" and device_of(todo[0].cfg.train.device).type == "cuda"
        jobs = min(how.jobs, len(todo))
        console.print(planned_threads(todo[0].cfg, how.type, jobs, on_gpu))
    if dry_run:
        console.print(how.dry_run(runs, out) or "")
        return SweepOutcome(out, runs, None)
    sw.check_data(runs)
    sw.save_spec(spec, out)
    try:
        return SweepOutcome(out, runs, how.launch(runs, out, console))
    except KeyboardInterrupt:
        raise Interrupted(how.interrupted.format(out=out)) from None


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep, with what its launcher keeps going or saved."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message
