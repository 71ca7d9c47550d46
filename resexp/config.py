"""Compose the run config with Hydra, check it, and turn mistakes into one line.

typer parses the command line; the trailing ``key=value`` arguments go to Hydra's
compose API untouched, so the two never both parse argv.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from resexp.errors import UserError
from resexp.models import check_depth

TOP_LEVEL_KEYS = {"name", "seed", "model", "train", "sweep", "dataset", "launcher"}


def shipped_config_dir() -> Path:
    """The configs/ folder shipped with the package (the repo's configs/ when editable,
    or when the source tree is used uninstalled, e.g. with PYTHONPATH)."""
    try:
        return Path(str(resources.files("resexp.configs")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "configs"


def extra_config_dirs(config_dirs: Sequence[str | Path] = ()) -> list[Path]:
    """User config folders (``--config-dir`` and $RESEXP_CONFIG_DIR, ':'-separated),
    searched after the shipped one: a new dataset is one YAML file there."""
    env = [p for p in os.environ.get("RESEXP_CONFIG_DIR", "").split(os.pathsep) if p]
    dirs = [Path(p).expanduser().resolve() for p in [*config_dirs, *env]]
    for d in dirs:
        if not d.is_dir():
            raise UserError(f"config folder {d} does not exist")
    return dirs


def _one_line(err: Exception) -> str:
    """Hydra's multi-line messages, cut to what a user needs."""
    text = str(err)
    if isinstance(err, MissingConfigException):
        m = re.search(r"Could not find '([^']+)'", text)
        options = re.findall(r"^\t(\S+)$", text.split("Config search path")[0], re.M)
        what = m.group(1) if m else text.splitlines()[0]
        group = what.split("/")[0]
        avail = f" (available {group}s: {', '.join(options)})" if options else ""
        return f"unknown {group} '{what.split('/', 1)[-1]}'{avail}"
    if err.__cause__ is not None and "not in struct" in str(err.__cause__):
        key = re.search(r"full_key: (\S+)", str(err.__cause__))
        return f"unknown config key '{key.group(1) if key else text}'"
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("See https")]
    return "; ".join(lines[:2])


def load_config(overrides: Sequence[str] = (), config_dirs: Sequence[str | Path] = ()) -> DictConfig:
    """The resolved, validated run config for ``train.yaml`` + ``overrides``."""
    overrides = list(overrides)
    extra = extra_config_dirs(config_dirs)
    if extra:
        overrides.append("hydra.searchpath=[" + ",".join(f"file://{d}" for d in extra) + "]")
    GlobalHydra.instance().clear()  # compose may be called many times in one process
    try:
        with initialize_config_dir(config_dir=str(shipped_config_dir()), version_base=None):
            cfg = compose(config_name="train", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(_one_line(err)) from err
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise UserError(f"config: {str(err).splitlines()[0]}") from err
    validate(cfg)
    return cfg


def list_group(group: str, config_dirs: Sequence[str | Path] = ()) -> list[str]:
    """Names of the options of a config group (e.g. every dataset), user folders included."""
    names = set()
    for d in [shipped_config_dir(), *extra_config_dirs(config_dirs)]:
        names.update(p.stem for p in (d / group).glob("*.yaml"))
    return sorted(names)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _positive_int(value, key: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    _require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
             f"{key} must be a positive integer, got {value!r}")


def validate(cfg: DictConfig) -> None:
    """Reject values that would fail later (or silently do the wrong thing)."""
    unknown = set(cfg.keys()) - TOP_LEVEL_KEYS
    if unknown:
        raise UserError(f"unknown config key '{sorted(unknown)[0]}'")
    t, ds = cfg.train, cfg.dataset
    _positive_int(cfg.model.depth, "model.depth")
    check_depth(**cfg.model)
    _require(isinstance(cfg.seed, int), f"seed must be an integer, got {cfg.seed!r}")
    _positive_int(t.epochs, "train.epochs", allow_none=True)
    _positive_int(t.iterations, "train.iterations", allow_none=True)
    _require(t.epochs is not None or t.iterations is not None,
             "set train.epochs or train.iterations")
    _positive_int(t.batch_size, "train.batch_size")
    _require(isinstance(t.lr, (int, float)) and t.lr > 0, f"train.lr must be > 0, got {t.lr!r}")
    _require(isinstance(t.stale_after, (int, float)) and not isinstance(t.stale_after, bool)
             and t.stale_after > 0, f"train.stale_after must be a number of seconds > 0, got {t.stale_after!r}")
    _require(t.milestone_unit in ("iterations", "epochs"),
             f"train.milestone_unit must be iterations or epochs, got {t.milestone_unit!r}")
    _require(cfg.model.shortcut in ("A", "B"), f"model.shortcut must be A or B, got {cfg.model.shortcut!r}")
    for key in ("train_subset", "test_subset"):
        _positive_int(ds.get(key), f"dataset.{key}", allow_none=True)
    _require(len(ds.mean) == ds.channels == len(ds.std),
             f"dataset {ds.name}: mean and std need one value per channel ({ds.channels})")
