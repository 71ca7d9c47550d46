"""Extending a run: its own config with a larger train.epochs or train.iterations goes on
from its checkpoint to the new length, where any other change is refused (RunDir.check_config).

Nothing of the schedule has to be pinned for that: milestones and the warm-up count from
the run's start, in iterations or epochs (resexp/train/schedule.py), never as shares of its
length, so the first part of the longer run is the run it was, and a run extended from 2 to
3 epochs ends as a 3-epoch run would (tested). config.yaml then holds the new length;
command.yaml lists each extension with the length it started from, and summary.json says
the latest as ``extended_from``.
"""

from __future__ import annotations

import copy
import math

from resexp.errors import UserError
from resexp.run.folder import DamagedFile, Origin, RunDir, RunState
from resexp.run.state import Status
from resexp.train.schedule import config_iters_per_epoch, planned_iterations


def longer(run: RunDir, cfg) -> dict | None:
    """The length the run was started with, e.g. {"epochs": 2, "iterations": 64}, when ``cfg``
    is its config but for a longer train.epochs or train.iterations; None when ``cfg`` is its
    own config or the run has none yet. UserError (RunDir.check_config's line) for any other
    change, a shorter run included. DamagedFile if config.yaml is."""
    old = run.read_config()
    train = old.get("train") if old else None
    if not isinstance(train, dict):
        run.check_config(cfg)
        return None
    was = {"epochs": train.get("epochs"), "iterations": train.get("iterations")}
    per_epoch = config_iters_per_epoch(cfg)
    before = planned_iterations(was, per_epoch)
    same_length = copy.deepcopy(cfg)
    same_length.train.epochs, same_length.train.iterations = was["epochs"], was["iterations"]
    if planned_iterations(cfg.train, per_epoch) <= before or run.config_conflicts(same_length):
        run.check_config(cfg)
        return None
    return {"epochs": math.ceil(before / per_epoch), "iterations": before}


def lengthening(run: RunDir, cfg, state: RunState) -> dict | None:
    """What a run folder in ``state`` is extended from when trained with ``cfg`` (longer), or
    None: ``cfg`` is its own config, or the run diverged (more steps of a blown-up loss are
    no result; it stays as it is). UserError for any other change, and for a finished run
    that cannot go on: its checkpoint.pt was not kept (train.keep_checkpoint=false)."""
    was = longer(run, cfg)
    if was is None or state.status == Status.DIVERGED:
        return None
    if state.finished and not run.checkpoint.exists():
        raise UserError(f"{run.path} finished without keeping its checkpoint.pt (train.keep_checkpoint=false), so "
                        f"it cannot be extended from {was['epochs']} epochs ({was['iterations']} iterations); "
                        f"use another --out to train it at the new length")
    return was


def record(run: RunDir, cfg, origin: Origin | None) -> dict:
    """Under the run's lock, once config.yaml exists (RunDir.create): command.yaml written
    for a run that has none; for a run ``cfg`` extends, the extension added to it and then
    config.yaml rewritten to the new length (a kill in between repeats that entry, never
    adds a second). Returns what summary.json says of it: {"extended_from": the latest
    extension's length}, {} for a run never extended."""
    was = longer(run, cfg)
    try:
        command, damaged = run.read_command(), False
    except DamagedFile:  # only a record: left as it is for the user to see
        command, damaged = None, True
    entries = _extensions(command or {})
    if was is not None:
        entries = entries[:-1] if entries and entries[-1]["extended_from"] == was else entries
        entries.append({**(origin.record() if origin is not None else {}), "extended_from": was})
    if not damaged and (command is None or was is not None):
        command = dict(command or (origin.record() if origin is not None else {}))
        if was is not None:
            command["extended"] = entries
        if command:
            run.write_command(command)
    if was is not None:
        run.replace_config(cfg)
    return {"extended_from": entries[-1]["extended_from"]} if entries else {}


def _extensions(command: dict) -> list[dict]:
    """command.yaml's extension entries (a received file is data: malformed ones are left out)."""
    entries = command.get("extended")
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("extended_from"), dict)] \
        if isinstance(entries, list) else []
