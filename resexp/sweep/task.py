"""The run task: how every launcher trains one run of a sweep.

The local launcher (in this process or in a ``--jobs`` worker) and a SLURM job all call
``train_run``, so how many runs share the cores (for the thread count), the lock, a run
another trainer holds and how a run that stopped is named are decided here once.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from resexp.errors import UserError
from resexp.run.files import DamagedFile
from resexp.run.folder import CannotWrite, Origin, RunBusy, RunState, run_name
from resexp.run.state import Status
from resexp.train import threads


def planned_threads(cfg, launcher_type: str, jobs: int, on_gpu: bool) -> str:
    """The plan's line on CPU threads: the rule setup() applies to these runs (resexp/train/threads.py)."""
    cores = threads.usable_cores()
    if cfg.train.threads is not None:
        return f"CPU threads: {cfg.train.threads} per run (train.threads, as set)"
    if launcher_type == "slurm":
        return f"CPU threads: each job's own cores (launcher.cpus_per_run={cfg.launcher.cpus_per_run})"
    if jobs > 1:
        return f"CPU threads: {max(1, cores // jobs)} per run ({jobs} runs at once on {cores} usable cores)"
    if on_gpu:
        return "CPU threads: torch's default (the runs train on the GPU)"
    return (f"CPU threads: the {cores} usable cores less those others keep busy at each run's start, "
            f"kept for the whole run; train.threads=N fixes it")


def train_run(cfg, out: Path, console: Console, progress: Progress | None = None, on_epoch=None,
              jobs: int = 1, origin: Origin | None = None, planned: RunState | None = None) -> Status:
    """fit() one run and return how it ended, so that a sweep goes on after any one run.

    A run another live process trains (here or on another host) is left to it: BUSY. A
    damaged file the user must see to (a corrupt checkpoint) is DAMAGED; any other error,
    a setting that cannot be used included, is a FAILED run (recorded by fit in its
    summary.json where it got that far). A disk that refuses writes (full, read-only)
    raises CannotWrite and ends the sweep, since every other run would fail alike.
    Ctrl-C is not caught. ``origin``: how the sweep asked for the run, and its folder's name;
    ``planned``: the run folder's state as the plan read it (a SLURM job, which starts later,
    reads it again)."""
    from resexp.train.loop import fit  # torch: imported only where a run trains

    name = origin.name if origin is not None and origin.name else run_name(cfg.model.arch, cfg.model.depth, cfg.seed)
    try:
        summary = fit(cfg, Path(out), progress=progress or Progress(disable=True), console=console,
                      on_epoch=on_epoch, jobs=jobs, origin=origin, planned=planned)
        return Status(summary["status"])
    except RunBusy as err:
        console.print(f"{name} skipped: {err}", markup=False)  # names the lock's owner: text from the folder
        return Status.BUSY
    except CannotWrite:
        raise
    except UserError as err:  # a damaged file, or a setting that cannot be used
        console.print(f"error: {name}: {err}", style="red", markup=False)
        return Status.DAMAGED if isinstance(err, DamagedFile) else Status.FAILED
    except Exception as err:
        console.print(f"{name} failed: {type(err).__name__}: {err}", style="red", markup=False)
    return Status.FAILED


def sweep_progress(console: Console, runs) -> tuple[Progress, int]:
    """The one overall line of a sweep of ``runs`` (local or followed SLURM jobs) and its
    task, counted in estimated seconds so that the time left weighs deep runs properly."""
    progress = Progress(TextColumn("[bold cyan]{task.description}"), BarColumn(), TimeRemainingColumn(),
                        console=console, transient=True)
    return progress, progress.add_task("sweep", total=sum(r.cost_s for r in runs) or 1)
