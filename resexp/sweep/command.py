"""`resexp sweep` as a plain function: plan, estimate, then hand the runs to a launcher."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from rich.console import Console

from resexp.models.footprint import device_of
from resexp.run.state import Status
from resexp.errors import UserError
from resexp.sweep import claim
from resexp.sweep import launch as launchers
from resexp.sweep import plan as sw
from resexp.sweep.task import planned_threads


@dataclass(repr=False)
class SweepOutcome:
    """What a sweep did: its runs as planned, and how each ended. A notebook shows it as a
    table of the runs (the plan's columns, then each run's status)."""
    out: Path
    runs: list            # the PlannedRuns, as planned
    statuses: dict | None  # {run name: Status} once trained; None for a dry run or jobs only submitted
    dry_run: bool = False

    @property
    def exit_code(self) -> int:
        """2 if a run is damaged (a file the user must see to), 1 if one failed or is left
        unfinished, else 0."""
        found = set((self.statuses or {}).values())
        if Status.DAMAGED in found:
            return 2
        return 1 if found & {Status.FAILED, Status.UNFINISHED} else 0

    @property
    def plan(self):
        """The plan as a pandas DataFrame, one row per run: run, arch, depth, seed, state (what
        the sweep found in its folder), epochs_done, epochs_planned, to_train and est_seconds
        (seconds still to train; NaN where there was nothing to estimate from)."""
        import pandas as pd

        return pd.DataFrame([{"run": r.name, "arch": r.arch, "depth": r.depth, "seed": r.seed, "state": str(r.status),
                              "epochs_done": r.epochs_done, "epochs_planned": r.epochs_planned, "to_train": r.to_train,
                              "est_seconds": r.cost_s if r.estimated or not r.to_train else float("nan")}
                             for r in self.runs])

    def summary_line(self) -> str:
        if self.statuses is None:
            return self._plan_line()
        values = list(self.statuses.values())
        counts = {s: values.count(s) for s in sorted(set(values), key=str)}
        return f"sweep {self.out}: " + ", ".join(f"{n} {s}" for s, n in counts.items())

    def _plan_line(self) -> str:
        """What a dry run found, or what was submitted: 'sweep demo, dry run: 4 runs (2 new,
        2 done), 2 to train, about 1m 20s'."""
        from resexp.analysis.report import format_seconds

        states = [str(r.status) for r in self.runs]
        found = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
        todo = [r for r in self.runs if r.to_train]
        # Every run to train is estimated, or none is (plan.estimate_costs).
        cost = f", about {format_seconds(sum(r.cost_s for r in todo))}" if todo and todo[0].estimated else ""
        what = "dry run" if self.dry_run else "submitted, not followed"
        return f"sweep {self.out}, {what}: {len(self.runs)} runs ({found}), {len(todo)} to train{cost}"

    def __repr__(self) -> str:
        return f"<SweepOutcome {self.summary_line()}; exit code {self.exit_code}>"

    def _repr_html_(self) -> str:
        import html

        table = self.plan
        if self.statuses is not None:
            table["status"] = [str(self.statuses.get(name, "")) for name in table["run"]]
        return f"<p>{html.escape(self.summary_line())}</p>" + table.to_html(index=False)


def sweep(archs=None, depths=None, seeds=None, overrides: Sequence[str] = (), out: Path | None = None,
          config_dirs: Sequence = (), jobs: int | None = None, wait: bool = False, dry_run: bool = False,
          console: Console | None = None) -> SweepOutcome:
    """Train every (arch, depth, seed) not yet finished (lists, or None for the saved
    sweep's or the experiment's), print the plan first; with ``dry_run`` only the plan,
    its estimate and what the launcher would do. Ctrl-C raises Interrupted."""
    console = console or Console(stderr=True, soft_wrap=True)
    args = (archs, depths, seeds, list(overrides))
    if dry_run:
        spec, out = sw.resolve_spec(*args, out, list(config_dirs))
        how, runs = _plan(spec, out, jobs, wait, True, console)
        console.print(how.dry_run([r for r in runs if r.to_train], out) or "", markup=False)
        for note in sw.check_data(runs, fetch=False):  # data on disk or obtainable; UserError where not
            console.print(note, markup=False)
        return SweepOutcome(out, runs, None, dry_run=True)
    if out is None:  # the folder is named after the experiment: compose once to know it
        out = sw.resolve_spec(*args, out, list(config_dirs))[1]
    # The folder's saved sweep is checked and this one saved in one step (resexp/sweep/claim.py).
    with claim.planning(out) as others_training:
        spec, out = sw.resolve_spec(*args, out, list(config_dirs))  # sweep.yaml as it is now
        saved = out / sw.SWEEP_FILE  # checked by resolve_spec: a real file, or none
        if saved.exists() and spec.to_yaml() != saved.read_text() and others_training():
            raise UserError(f"another sweep is training in {out} with other settings (its {sw.SWEEP_FILE}); "
                            f"wait for it to end, run the same command as it, or use another --out")
        how, runs = _plan(spec, out, jobs, wait, False, console)
        sw.check_data(runs)
        sw.save_spec(spec, out)
        active = claim.training(out)
    try:
        statuses = how.launch([r for r in runs if r.to_train], out, console)
    except KeyboardInterrupt:
        raise Interrupted(how.interrupted.format(out=out)) from None
    finally:
        os.close(active)
    left = {r.name: r.status for r in runs if not r.to_train}  # damaged ones: the plan says why
    return SweepOutcome(out, runs, None if statuses is None else {**left, **statuses})


def _plan(spec, out: Path, jobs: int | None, wait: bool, dry_run: bool, console: Console):
    """Plan, estimate and print the sweep: (its launcher, its runs). ``dry_run``: steps may
    be timed here for the estimate."""
    found = sw.survey(out)  # every run folder read once; the plan hands each state on
    runs = sw.plan(spec, out, found)
    how = launchers.pick(runs, jobs, wait, spec.config_dirs)
    # Steps are timed here only for runs trained here: a login node says nothing of a GPU node.
    basis = sw.estimate_costs(runs, out, found, time_here=dry_run and how.type == "local")
    console.print(sw.format_plan(runs, basis), markup=False)  # holds text from the run folders
    todo = [r for r in runs if r.to_train]
    if todo:
        on_gpu = how.type == "local" and device_of(todo[0].cfg.train.device).type == "cuda"
        jobs = min(how.jobs, len(todo))
        console.print(planned_threads(todo[0].cfg, how.type, jobs, on_gpu))
    return how, runs


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep; its message says what its launcher keeps going or saved."""
