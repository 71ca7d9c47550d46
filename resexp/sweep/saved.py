"""A sweep's saved settings, <out>/sweep.yaml: read back as data (resexp/settings/trust.py
decides what a saved file may set). Light: `resexp status` reads it without torch."""

from __future__ import annotations

from pathlib import Path

import yaml

from resexp.errors import UserError
from resexp.run import bounded_yaml
from resexp.run.folder import RUN_NAME, run_name
from resexp.settings.compose import parse_overrides

SWEEP_FILE = "sweep.yaml"

SAVED_TYPES = {"archs": str, "depths": int, "seeds": int, "overrides": str, "config_dirs": str}


def saved_spec(out: Path | None) -> dict:
    """The settings saved in <out>/sweep.yaml; {} if there is none. UserError if it is damaged
    (safe_load also refuses tags that would run code, such as !!python/object, and
    bounded_yaml a file that expands past any settings file's size)."""
    path = out / SWEEP_FILE if out is not None else None
    if path is None or not path.exists():
        return {}
    try:
        saved = bounded_yaml.load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as err:
        reason = f"not valid YAML ({type(err).__name__})" if not isinstance(err, bounded_yaml.TooLarge) else str(err)
    else:
        reason = _saved_problem(saved)
        if reason is None:
            return {**saved, "path": path}
    raise UserError(f"{path} is damaged ({reason}); fix it, or delete it and give --archs, --depths, "
                    f"--seeds and the overrides again")


def planned_names(out: Path) -> list[str]:
    """The run folders the saved sweep of ``out`` plans, e.g. ['plain-20-s0', ...]; [] when
    ``out`` holds no sweep.yaml or a damaged one (`resexp sweep` says what is wrong with it).
    A received sweep.yaml is data: a name that is not a run folder's (an arch with a slash or
    an escape sequence) is left out, never printed."""
    try:
        saved = saved_spec(out)
    except UserError:
        return []
    names = [run_name(a, d, s) for a in saved.get("archs", []) for d in saved.get("depths", [])
             for s in saved.get("seeds", [])]
    return [n for n in names if RUN_NAME.match(n)]


def _saved_problem(saved) -> str | None:
    """What is wrong with a parsed sweep.yaml (save_spec writes every key; config_dirs is
    newer, so an older file may lack it), or None."""
    if not isinstance(saved, dict):
        return "it is empty" if saved is None else f"it holds a {type(saved).__name__}, not a mapping"
    keys, needed = set(saved), set(SAVED_TYPES) - {"config_dirs"}
    if not needed <= keys <= set(SAVED_TYPES):
        return f"it holds {', '.join(map(str, saved)) or 'no keys'}, not {', '.join(SAVED_TYPES)}"
    for key, value in saved.items():
        kind = SAVED_TYPES[key]
        if not isinstance(value, list) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
            return f"{key} is not a list of {kind.__name__}s"
    try:
        parse_overrides(saved["overrides"])
    except UserError as err:
        return f"an override does not parse: {err}"
    return None


