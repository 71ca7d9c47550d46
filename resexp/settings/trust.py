"""What a settings file read from a results folder may decide, and what it may not.

A results folder may come from someone else, so its config.yaml and sweep.yaml are
data. They may say what was trained (architecture, depths, seeds, schedule, dataset
name), which a rerun reproduces; they may not say where files are read or written,
which code runs, or how jobs are submitted. Those keys come from the user's own
command line and config folders only (docs/security.md):

- a saved sweep's override of a path or code key, or of the launcher, is refused
  unless the command line gives that key again (then the user's value is the one used);
  so is one holding an interpolation ``${...}``, which would read the user's environment
  (``${oc.env:TOKEN}``) or other keys into the results;
- a saved sweep's config folders are used only when the command line (or
  $RESEXP_CONFIG_DIR) names them again;
- a saved run config's dataset paths and class are replaced by those of the user's own
  config of the same dataset.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from resexp.errors import UserError
from resexp.settings import schema

# Keys whose value is a path or names code (section names stand for every key below).
PATH_OR_CODE = ("dataset.root", "dataset.source", "dataset.stage_dir", "dataset._target_", "launcher", "hydra")
DATASET_OWN = tuple(k.split(".", 1)[1] for k in PATH_OR_CODE if k.startswith("dataset."))
# A config group's option as a saved file may name it: a file name in a config folder,
# never a path that climbs out of one (dataset=../../elsewhere).
OPTION_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")


def is_option_name(value) -> bool:
    return isinstance(value, str) and bool(OPTION_NAME.match(value))


def is_path_or_code(key: str) -> bool:
    key = key.lstrip("+~")
    return any(key == k or key.startswith(k + ".") for k in PATH_OR_CODE)


def check_saved_overrides(path: Path, saved: Sequence, given_keys: set[str], groups: Sequence[str]) -> None:
    """UserError if the saved overrides (Hydra Override objects) set a path or code key
    that the command line (``given_keys``) does not set again, or pick an option of a
    config group by anything but its name: a group of ``groups``, or any top-level name
    that is no key (a group of the user's own config folders, ``+optim=fast``)."""
    for o in saved:
        key = o.key_or_group
        if key.split(".")[0] == "launcher":
            raise UserError(f"{path} sets {o.input_line}: launcher settings are never taken from a saved "
                            f"sweep; remove that entry and give --launcher (or launcher.KEY=...) yourself")
        if is_path_or_code(key) and key not in given_keys:
            raise UserError(f"{path} sets {o.input_line}: a saved sweep does not choose paths or code; "
                            f"give {key}=... on the command line to keep it")
        if "${" in o.input_line and key not in given_keys:  # never resolved: ${oc.env:TOKEN} reads the environment
            raise UserError(f"{path} sets {o.input_line}: a saved sweep's values are never resolved; "
                            f"give {key}=... on the command line to set it")
        is_group = key in groups or "." not in key and key not in schema.leaf_fields()
        if is_group and o.value() is not None and not is_option_name(o.value()):
            raise UserError(f"{path} sets {o.input_line}: an option of {key} is named by its file name "
                            f"in a config folder")


def check_saved_dirs(path: Path, saved_dirs: Sequence[str], given_dirs: Sequence[Path]) -> None:
    """UserError if a config folder saved in a sweep is not among the user's own."""
    given = {str(Path(d).expanduser().resolve()) for d in given_dirs}
    for d in saved_dirs:
        if str(Path(d).expanduser().resolve()) not in given:
            raise UserError(f"{path} was made with --config-dir {d}; a saved sweep does not choose config "
                            f"folders: give --config-dir {d} again to continue it")


def own_dataset_keys(saved: dict, own: dict | None, where: Path) -> dict:
    """The saved dataset section with its path and code keys taken from ``own`` (the
    user's config of the same dataset); UserError when the user has no such dataset."""
    if own is None or not is_option_name(saved.get("name")):
        raise UserError(f"{where}: its dataset {saved.get('name')!r} is none of your dataset configs; "
                        f"give dataset=NAME (one of `resexp datasets`)")
    return {**saved, **{k: own.get(k) for k in DATASET_OWN}}
