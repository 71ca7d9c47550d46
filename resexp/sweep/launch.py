"""How a sweep trains its runs: here (``local``) or as SLURM jobs (``slurm``).

The launcher is a config group (configs/launcher/NAME.yaml, chosen with
``launcher=NAME`` or ``--launcher NAME``); its ``type`` says which of the two it is, so
a site can keep its own launcher/mycluster.yaml of type slurm. How runs are launched
never changes what they compute: launcher keys are not result-affecting settings.
Each type is one class behind the small interface a sweep uses (Launcher), as submitit
has one Executor per backend: LocalLauncher (local.py) and SlurmLauncher (slurm.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

from omegaconf import OmegaConf
from rich.console import Console

from resexp.errors import UserError
from resexp.run.state import Status
from resexp.settings import schema
from resexp.settings.compose import extra_config_dirs, shipped_config_dir

# The keys each launcher type uses (resexp/settings/schema.py LauncherConfig holds them all).
USES = {"local": ("type", "jobs"),
        "slurm": ("type", "partition", "account", "qos", "time_min", "gpus_per_run", "cpus_per_run", "mem_gb",
                  "array_parallelism", "signal_delay_s", "max_requeues", "log_folder", "sbatch")}


class Launcher(Protocol):
    """What a sweep asks of a launcher."""

    type: str         # its config's type: local | slurm
    jobs: int         # runs at once on this machine (slurm: 1, its jobs run elsewhere)
    interrupted: str  # what Ctrl-C during launch() leaves, with {out} for the sweep's folder

    def dry_run(self, runs, out: Path) -> str | None:
        """What --dry-run shows beyond the plan of the runs still to train, if anything."""

    def launch(self, runs, out: Path, console: Console) -> dict[str, Status] | None:
        """Train (or submit) the runs still to train: {run name: final status}, or None
        where they were only submitted."""


def pick(runs, jobs: int | None, wait: bool, config_dirs: Sequence[str | Path] = ()) -> Launcher:
    """The launcher of a planned sweep, checked: a setting it cannot use is an error."""
    _check_site_names(config_dirs)
    cfg = runs[0].cfg.launcher
    _check_used(cfg)
    if cfg.type == "local":
        if wait:
            raise UserError("--wait is for the slurm launcher (a local sweep always waits for its runs)")
        from resexp.sweep.local import LocalLauncher

        return LocalLauncher(jobs if jobs is not None else cfg.jobs)
    if jobs is not None:
        raise UserError("--jobs is for the local launcher; SLURM runs jobs side by side "
                        "(at most launcher.array_parallelism of one sweep)")
    from resexp.sweep.slurm import SlurmLauncher, check_settings

    check_settings(cfg)
    return SlurmLauncher(cfg, wait)


def _check_used(cfg) -> None:
    """The schema holds the keys of both types: one the chosen type does not use must keep
    its default, or a setting would be accepted and ignored (launcher.partition=gpu with
    the local launcher)."""
    used = USES[cfg.type]
    for name, value in cfg.items():
        if name in used:
            continue
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        if value != schema.default_of(f"launcher.{name}"):
            raise UserError(f"launcher.{name} is not a setting of the {cfg.type} launcher "
                            f"(its keys: {', '.join(k for k in used if k != 'type')})")


def _check_site_names(config_dirs) -> None:
    """A user's launcher/slurm.yaml would be shadowed by the shipped one (the shipped
    folder is searched first) and silently ignored: ask for another name instead."""
    shipped = {p.name for p in (shipped_config_dir() / "launcher").glob("*.yaml")}
    for folder in extra_config_dirs(config_dirs):
        for path in sorted((folder / "launcher").glob("*.yaml")):
            if path.name in shipped:
                raise UserError(f"{path} has the name of a shipped launcher and would be ignored; "
                                f"rename it (e.g. launcher/mycluster.yaml with defaults: [slurm, _self_]) "
                                f"and use --launcher mycluster")
