"""The run task: how every launcher trains one run of a sweep.

The local launcher (in this process or in a ``--jobs`` worker) and a SLURM job all call
``train_run``, so the thread count, the lock, a run another trainer holds and how a run
that stopped is named are decided here once.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from resexp.errors import UserError
from resexp.run.files import DamagedFile
from resexp.run.folder import CannotWrite, RunBusy, run_name
from resexp.run.state import Status
from resexp.train import threads


def usable_cores() -> int:
    """Cores this process may use: its affinity mask, cgroup CPU quota and SLURM job."""
    return threads.usable_cores()


def with_threads(cfg, jobs: int = 1):
    """``cfg`` with train.threads decided where the user left it null and a launcher knows
    better than a probe: a SLURM job's own cores, and in each of ``jobs`` local workers its
    share of the usable cores (workers that each took every core would fight: 3.4x slower
    on 2 cores). Otherwise it stays null and setup() measures (resexp/train/threads.py). A
    value the user set always wins. Only CPU training reads it; the thread count changes
    the CPU's floating-point sums, so summary.json records it and what chose it."""
    threads.set_for_next_run(None)
    if cfg.train.threads is not None:
        return cfg
    slurm_cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm_cpus and slurm_cpus.isdigit():
        choice = threads.Choice(int(slurm_cpus), "slurm", f"SLURM_CPUS_PER_TASK={slurm_cpus}: the job's own cores")
    elif jobs > 1:
        cores = usable_cores()
        share = max(1, cores // jobs)
        choice = threads.Choice(share, "workers", f"{jobs} runs at once share {cores} usable cores")
    else:
        return cfg
    threads.set_for_next_run(choice)
    return OmegaConf.merge(cfg, {"train": {"threads": choice.threads}})


def planned_threads(cfg, launcher_type: str, jobs: int, on_gpu: bool, probe_now: bool = False) -> str:
    """The plan's line on CPU threads: what with_threads and setup() will do for these runs;
    with ``probe_now``, also what the probe picks for ``cfg``'s run at this moment."""
    if on_gpu and launcher_type == "local":
        return "CPU threads: torch's default (the runs train on the GPU)"
    if cfg.train.threads is not None:
        return f"CPU threads: {cfg.train.threads} per run (train.threads, as set)"
    if launcher_type == "slurm":
        return f"CPU threads: each job's own cores (launcher.cpus_per_run={cfg.launcher.cpus_per_run})"
    cores = usable_cores()
    if jobs > 1:
        return f"CPU threads: {max(1, cores // jobs)} per run ({jobs} runs at once on {cores} usable cores)"
    line = (f"CPU threads: measured at each run's start, 1 to {cores} (the fewest within 10% of the fastest: "
            f"on cores others are using, fewer threads are often many times faster); train.threads=N fixes it")
    if probe_now:
        choice = probe_here(cfg)
        line += f"\n  now, for {run_name(cfg.model.arch, cfg.model.depth, cfg.seed)}: {choice.threads} ({choice.why})"
    return line


def probe_here(cfg) -> threads.Choice:
    """The probe of setup() for ``cfg``'s model on one random batch, torch's count left as it was."""
    import torch

    from resexp.data import random_data
    from resexp.train.loop import pick_device, setup

    before = torch.get_num_threads()
    try:
        setup(cfg, random_data(cfg.dataset, cfg.train.batch_size, pick_device(cfg.train.device)))
        return threads.current()
    finally:
        torch.set_num_threads(before)


def train_run(cfg, out: Path, console: Console, progress: Progress | None = None, on_epoch=None,
              jobs: int = 1) -> Status:
    """fit() one run and return how it ended, so that a sweep goes on after any one run.

    A run another live process trains (here or on another host) is left to it: BUSY. A
    damaged file the user must see to (a corrupt checkpoint) is DAMAGED; any other error,
    a setting that cannot be used included, is a FAILED run (recorded by fit in its
    summary.json where it got that far). A disk that refuses writes (full, read-only)
    raises CannotWrite and ends the sweep, since every other run would fail alike.
    Ctrl-C is not caught."""
    from resexp.train.loop import fit  # torch: imported only where a run trains

    name = run_name(cfg.model.arch, cfg.model.depth, cfg.seed)
    try:
        summary = fit(with_threads(cfg, jobs), Path(out), progress=progress or Progress(disable=True),
                      console=console, on_epoch=on_epoch)
        return Status(summary["status"])
    except RunBusy as err:
        console.print(f"{name} skipped: {err}")
        return Status.BUSY
    except CannotWrite:
        raise
    except DamagedFile as err:
        console.print(f"[red]error: {name}: {err}")
        return Status.DAMAGED
    except UserError as err:
        console.print(f"[red]error: {name}: {err}")
    except Exception as err:
        console.print(f"[red]{name} failed: {type(err).__name__}: {err}")
    return Status.FAILED


def sweep_progress(console: Console) -> Progress:
    """The one overall line of a sweep (local or followed SLURM jobs), counted in estimated
    seconds so that the time left weighs deep runs properly."""
    return Progress(TextColumn("[bold cyan]{task.description}"), BarColumn(), TimeRemainingColumn(),
                    console=console, transient=True)
