"""A sweep's saved settings, <out>/sweep.yaml: read back as data (resexp/settings/trust.py
decides what a saved file may set). Light: `resexp status` reads it without torch."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterator

import yaml

from resexp.errors import UserError
from resexp.run import bounded_yaml
from resexp.run.files import DamagedFile, read_bytes
from resexp.run.folder import RUN_NAME, run_name
from resexp.settings import schema, trust
from resexp.settings.compose import FREE_DICTS, config_groups, parse_overrides

SWEEP_FILE = "sweep.yaml"

SAVED_TYPES = {"archs": str, "depths": int, "seeds": int, "overrides": str, "config_dirs": str}
# Newer keys: a sweep.yaml of an older resexp lacks them.
OPTIONAL = {"config_dirs", "axes"}
# The sweep axes every run folder is named by (<arch>-<depth>-s<seed>); any other setting
# that changes results may be an axis too (axis_problem), and adds -KEY=VALUE to the names.
GRID = {"model.arch": "archs", "model.depth": "depths", "seed": "seeds"}


def axis_problem(key: str) -> str | None:
    """Why the config key ``key`` cannot be an extra sweep axis (one line), or None."""
    group = key.split(".")[0]
    if key in config_groups():
        return f"a results folder holds one {key}; use one --out per {key}"
    if group == "launcher":
        return "how a sweep trains its runs is one choice per command, not a sweep axis"
    if trust.is_path_or_code(key):
        return "a path or code cannot be a sweep axis; give one value"
    if any(key.startswith(d + ".") for d in FREE_DICTS):
        return "the dataset class's own arguments cannot be a sweep axis; give one value"
    if key not in schema.leaf_fields():
        return f"unknown config key '{key}'"
    if key == "dataset.name":
        return "a results folder holds one dataset; use one --out per dataset"
    if any(key == k or key.startswith(k + ".") for k in schema.non_result_keys()):
        return "it does not change what a run computes, so every value would train the same runs"
    return None


def saved_spec(out: Path | None) -> dict:
    """The settings saved in <out>/sweep.yaml; {} if there is none. UserError if it is damaged
    (safe_load also refuses tags that would run code, such as !!python/object, and
    bounded_yaml a file that expands past any settings file's size)."""
    path = out / SWEEP_FILE if out is not None else None
    if path is None or not path.exists():
        return {}
    try:  # read bounded: no more than a settings file holds, never from a FIFO
        saved = bounded_yaml.load((read_bytes(path, bounded_yaml.MAX_BYTES) or b"").decode())
    except DamagedFile as err:
        reason = err.reason
    except (OSError, ValueError, yaml.YAMLError) as err:
        reason = f"not valid YAML ({type(err).__name__})" if not isinstance(err, bounded_yaml.TooLarge) else str(err)
    else:
        reason = _saved_problem(saved)
        if reason is None:
            return {**saved, "path": path}
    raise UserError(f"{path} is damaged ({reason}); fix it, or delete it and give --archs, --depths, "
                    f"--seeds and the overrides again")


def combinations(archs, depths, seeds, axes: dict) -> Iterator[tuple[str, int, int, dict]]:
    """Every run of a sweep as (arch, depth, seed, {extra axis: value}), in the plan's order."""
    keys = sorted(axes)
    settings = [dict(zip(keys, values)) for values in itertools.product(*(axes[k] for k in keys))]
    return itertools.product(archs, depths, seeds, settings)


def planned_names(saved: dict) -> list[str]:
    """The run folders a saved sweep (saved_spec) plans, e.g. ['plain-20-s0', ...]. A
    received sweep.yaml is data: a name that is not a run folder's (an arch with a slash or
    an escape sequence) is left out, never printed."""
    names = []
    for a, d, s, setting in combinations(saved.get("archs", []), saved.get("depths", []), saved.get("seeds", []),
                                         saved.get("axes") or {}):
        try:
            names.append(run_name(a, d, s, setting))
        except UserError:  # a value no folder name holds: resexp sweep says so
            continue
    return [n for n in names if RUN_NAME.match(n)]


def _saved_problem(saved) -> str | None:
    """What is wrong with a parsed sweep.yaml (save_spec writes every key; config_dirs is
    newer, so an older file may lack it), or None."""
    if not isinstance(saved, dict):
        return "it is empty" if saved is None else f"it holds a {type(saved).__name__}, not a mapping"
    keys, needed = set(saved), set(SAVED_TYPES) - OPTIONAL
    if not needed <= keys <= set(SAVED_TYPES) | OPTIONAL:
        return f"it holds {', '.join(map(str, saved)) or 'no keys'}, not {', '.join([*SAVED_TYPES, 'axes'])}"
    if "axes" in saved:
        problem = _axes_problem(saved["axes"])
        if problem:
            return problem
    for key, kind in SAVED_TYPES.items():
        value = saved.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
            return f"{key} is not a list of {kind.__name__}s"
    try:
        parse_overrides(saved["overrides"])
    except UserError as err:
        return f"an override does not parse: {err}"
    return None


def _axes_problem(axes) -> str | None:
    """What is wrong with a saved sweep's ``axes`` ({config key: [values]}), or None."""
    if not isinstance(axes, dict):
        return "axes is not a mapping of config keys to lists"
    for key, values in axes.items():
        if not isinstance(key, str) or not isinstance(values, list) or not values:
            return f"axes: {key!s:.40} does not map to a list of values"
        problem = GRID.get(key) and "it is an axis of its own" or axis_problem(key)
        if problem:
            return f"axes: {key} cannot be a sweep axis ({problem})"
    return None
