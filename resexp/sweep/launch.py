"""How a sweep trains its runs: here (``local``) or as SLURM jobs (``slurm``).

The launcher is a config group (configs/launcher/NAME.yaml, chosen with
``launcher=NAME`` or ``--launcher NAME``); its ``type`` says which of the two it is, so
a site can keep its own launcher/mycluster.yaml of type slurm. How runs are launched
never changes what they compute: launcher keys are not result-affecting settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from omegaconf import OmegaConf

from resexp.errors import UserError
from resexp.settings import schema
from resexp.settings.compose import extra_config_dirs, shipped_config_dir

# The keys each launcher type uses (resexp/settings/schema.py LauncherConfig holds them all).
USES = {"local": ("type", "jobs"),
        "slurm": ("type", "partition", "account", "qos", "time_min", "gpus_per_run", "cpus_per_run", "mem_gb",
                  "array_parallelism", "signal_delay_s", "max_requeues", "log_folder", "sbatch")}


@dataclass
class Launcher:
    type: str      # local | slurm
    cfg: object    # the launcher section of the run config
    jobs: int      # local: runs at once
    wait: bool     # slurm: follow the jobs until they end


def pick(runs, jobs: int | None, wait: bool, config_dirs: Sequence[str | Path] = ()) -> Launcher:
    """The launcher of a planned sweep, checked: a setting it cannot use is an error."""
    _check_site_names(config_dirs)
    cfg = runs[0].cfg.launcher
    _check_used(cfg)
    if cfg.type == "local":
        if wait:
            raise UserError("--wait is for the slurm launcher (a local sweep always waits for its runs)")
        return Launcher("local", cfg, jobs if jobs is not None else cfg.jobs, False)
    if jobs is not None:
        raise UserError("--jobs is for the local launcher; SLURM runs jobs side by side "
                        "(at most launcher.array_parallelism of one sweep)")
    from resexp.sweep.slurm import check_settings

    check_settings(cfg)
    return Launcher("slurm", cfg, 1, wait)


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


def module(launcher: Launcher):
    """The launcher's module (local.py or slurm.py): each has launch(), dry_run() and
    INTERRUPTED, the one small interface a sweep uses."""
    if launcher.type == "local":
        from resexp.sweep import local

        return local
    from resexp.sweep import slurm

    return slurm


def is_launcher_override(override: str) -> bool:
    """launcher=NAME or launcher.KEY=...: how a sweep trains its runs, never what they are."""
    return override.split("=")[0].lstrip("+~").split(".")[0] == "launcher"
