"""The formats of a run folder's files, read strictly: what parses, and what is damage.

Every reader here either returns what the file says or raises DamagedFile naming the
file and what is wrong with it, so one damaged run is reported as such and never
takes a command on the whole results folder down with a parser's traceback.

One thing is not damage: a last line of metrics.csv without its newline. A row is
appended in one write, but a full disk or a lost network mount can cut one short;
the reader leaves it out (``Log.torn``) and the next trainer cuts it off and redoes
that epoch.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from resexp.errors import UserError
from resexp.run import bounded_yaml
from resexp.run.state import Status

COLUMNS = ["epoch", "iteration", "lr", "train_loss", "train_err", "test_loss", "test_err",
           "seconds", "images_per_s", "elapsed"]
VAL_COLUMNS = ["val_loss", "val_err"]
CLEAN_TRAIN_COLUMNS = ["clean_train_loss", "clean_train_err"]  # with train.eval_train=true
# Written by resexp/inside/diagnostics.py (train.diagnostics); readers: results.load_diagnostics.
DIAGNOSTIC_FILES = ("responses.csv", "gradients.csv", "identity.csv")
# With train.wandb=true: the id of the W&B run this folder logs to (resexp/inside/wandb_log.py).
WANDB_ID_FILE = "wandb-id.txt"
# What an id may be: W&B's own ids are 8 lowercase letters and digits; nothing else is used.
_WANDB_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")

# What a trainer writes into summary.json (the other states are decided from outside it).
SUMMARY_STATUSES = tuple(str(s) for s in (Status.RUNNING, Status.DONE, Status.DIVERGED, Status.FAILED))
_NUMBER = (int, float)
# summary.json keys that readers use, with the types they may hold (None: null allowed).
SUMMARY_TYPES = {
    "arch": (str,), "depth": (int,), "seed": (int,), "status": (str,), "epochs": (int,),
    "dataset": (str, None), "synthetic": (bool, None), "params": (*_NUMBER, None),
    "epochs_planned": (*_NUMBER, None), "iterations": (*_NUMBER, None),
    "iterations_planned": (*_NUMBER, None), "final_train_err": (*_NUMBER, None),
    "final_test_err": (*_NUMBER, None), "wall_seconds": (*_NUMBER, None),
    "schedule": (str, None), "experiment": (str, None), "device": (str, None), "error": (str, None),
    "cpu_model": (str, None), "cpu_bf16": (list, None), "torch_threads": (int, None),
}


class DamagedFile(UserError):
    """A run file that exists but cannot be used: ``path`` and ``reason`` say which and why."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason

    def __reduce__(self):  # keeps both fields when a worker process hands it back
        return DamagedFile, (self.path, self.reason)


@dataclass
class Log:
    """metrics.csv: its header and complete rows, one per epoch in epoch order."""
    columns: list[str]
    rows: list[dict]
    torn: bool = False  # a last line without its newline was left out


def read_bytes(path: Path) -> bytes | None:
    """The file's bytes; None if it does not exist; DamagedFile if it cannot be read."""
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise DamagedFile(path, f"cannot be read ({err.strerror or err})") from err


def _text(path: Path, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DamagedFile(path, f"is not text (a bad byte at offset {err.start})") from None
    if "\x00" in text:
        raise DamagedFile(path, f"holds a NUL byte at offset {text.index(chr(0))}")
    return text


def parse_log(path: Path, data: bytes) -> Log:
    """metrics.csv's bytes -> Log. DamagedFile for anything but a torn last line."""
    lines = _text(path, data).split("\n")
    torn = lines.pop() != ""  # text after the last newline: a row (or header) cut short
    lines = [line.removesuffix("\r") for line in lines]  # csv writes \r\n
    if not lines:
        return Log([], [], torn)
    header = lines[0].split(",")
    missing = [c for c in COLUMNS if c not in header]
    if missing or len(set(header)) != len(header):
        raise DamagedFile(path, f"line 1 is not a metrics header (missing {', '.join(missing) or 'nothing'}, "
                                f"{len(header)} names)")
    by_epoch = {}
    for number, line in enumerate(lines[1:], start=2):
        row = _parse_row(path, number, header, line)
        by_epoch[row["epoch"]] = row  # an epoch written twice (by an older resexp): the later row counts
    epochs = sorted(by_epoch)
    if epochs != list(range(1, len(epochs) + 1)):
        hole = next(e for e in range(1, len(epochs) + 2) if e not in by_epoch)
        raise DamagedFile(path, f"epoch {hole} is missing (epochs {epochs[0]}..{epochs[-1]} logged)")
    return Log(header, [by_epoch[e] for e in epochs], torn)


def _parse_row(path: Path, number: int, header: list[str], line: str) -> dict:
    fields = line.split(",")
    if len(fields) != len(header):
        raise DamagedFile(path, f"line {number} has {len(fields)} fields, the header {len(header)}")
    try:
        row = {name: float(value) for name, value in zip(header, fields)}
    except ValueError:
        raise DamagedFile(path, f"line {number} holds a value that is not a number") from None
    for key in ("epoch", "iteration"):
        value = row[key]
        if not (math.isfinite(value) and value.is_integer() and value >= (1 if key == "epoch" else 0)):
            raise DamagedFile(path, f"line {number}: {key} {value!r} is not a count")
        row[key] = int(value)
    return row


def parse_summary(path: Path, data: bytes) -> dict:
    """summary.json's bytes -> dict. DamagedFile unless it is a JSON object whose keys
    that readers use hold values of their types."""
    try:
        summary = json.loads(_text(path, data))
    except ValueError as err:
        raise DamagedFile(path, f"is not valid JSON ({str(err).split(':')[0]})") from None
    if not isinstance(summary, dict):
        raise DamagedFile(path, f"holds a JSON {type(summary).__name__}, not an object")
    for key, kinds in SUMMARY_TYPES.items():
        if key in summary and not _is(summary[key], kinds):
            raise DamagedFile(path, f"{key} is {summary[key]!r}, not {_names(kinds)}")
    if "status" in summary and summary["status"] not in SUMMARY_STATUSES:
        raise DamagedFile(path, f"status {summary['status']!r} is none of {', '.join(SUMMARY_STATUSES)}")
    return summary


def parse_config(path: Path, data: bytes) -> dict:
    """config.yaml's bytes -> dict. DamagedFile unless it is a mapping naming the model's
    arch and depth and the seed."""
    try:
        config = bounded_yaml.load(_text(path, data))
    except bounded_yaml.TooLarge as err:
        raise DamagedFile(path, f"is not a run config ({err})") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise DamagedFile(path, f"is not valid YAML{line}") from None
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict):
        raise DamagedFile(path, "is not a run config (no model section)")
    for key, value in (("model.arch", model.get("arch")), ("model.depth", model.get("depth")),
                       ("seed", config.get("seed"))):
        if not _is(value, (str,) if key == "model.arch" else (int,)):
            raise DamagedFile(path, f"{key} is {value!r}")
    return config


def parse_wandb_id(path: Path, data: bytes) -> str:
    """wandb-id.txt's bytes -> the W&B run id it names. DamagedFile unless it is one plain
    id (letters and digits), so a received folder can name a run and nothing else."""
    text = data.decode("ascii", errors="replace").strip()
    if not _WANDB_ID.match(text):
        raise DamagedFile(path, "does not hold a plain W&B run id (letters and digits); "
                                "delete it to log to a new W&B run")
    return text


def _is(value, kinds) -> bool:
    if value is None:
        return None in kinds
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, tuple(k for k in kinds if k is not None and k is not bool))


def _names(kinds) -> str:
    return " or ".join("null" if k is None else k.__name__ for k in kinds)
