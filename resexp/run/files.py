"""The formats of a run folder's files, read strictly: what parses, and what is damage.

Every reader here either returns what the file says or raises DamagedFile naming the
file and what is wrong with it, so one damaged run is reported as such and never
takes a command on the whole results folder down with a parser's traceback. A file
may come from someone else, so each is bounded before it is parsed: its size (a file
larger than resexp ever writes is damage, read no further), its nesting (JSON and YAML
deeper than resexp writes) and the range of every value a reader uses (an error is a
percentage, a depth at least 1, a count not negative).

One thing is not damage: a last line of metrics.csv without its newline. A row is
appended in one write, but a full disk or a lost network mount can cut one short;
the reader leaves it out (``Log.torn``) and the next trainer cuts it off and redoes
that epoch.
"""

from __future__ import annotations

import json
import math
import os
import re
import reprlib
import stat
from dataclasses import dataclass
from pathlib import Path

import yaml

from resexp.errors import UserError
from resexp.run import bounded_yaml
from resexp.run.state import Status

COLUMNS = ["epoch", "iteration", "lr", "train_loss", "train_err", "test_loss", "test_err",
           "seconds", "images_per_s", "elapsed"]
TEST_COLUMNS = ["test_loss", "test_err"]  # the dataset's test split, and nothing else
VAL_COLUMNS = ["val_loss", "val_err"]  # images held out of the training split (dataset.val_size)
CLEAN_TRAIN_COLUMNS = ["clean_train_loss", "clean_train_err"]  # with train.eval_train=true
# Written by resexp/inside/diagnostics.py (train.diagnostics); readers: results.load_diagnostics.
DIAGNOSTIC_FILES = ("responses.csv", "gradients.csv", "identity.csv")
# With train.wandb=true: the id of the W&B run this folder logs to (resexp/inside/wandb_log.py).
WANDB_ID_FILE = "wandb-id.txt"
# What an id may be: W&B's own ids are 8 lowercase letters and digits; nothing else is used.
_WANDB_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")

MB = 1 << 20
# The most a file of a run or sweep folder may hold, far above what resexp writes: a
# summary.json is about 2 KB, a metrics.csv row 200 bytes (300,000 epochs in 64 MB), a
# diagnostics measurement of ResNet-1202 about 100 KB.
MAX_BYTES = {"config.yaml": bounded_yaml.MAX_BYTES, "summary.json": MB, "metrics.csv": 64 * MB,
             "jobs.jsonl": 64 * MB, WANDB_ID_FILE: 1024, **dict.fromkeys(DIAGNOSTIC_FILES, 256 * MB)}
MAX_DEPTH = 16  # JSON nesting: resexp writes at most 2 levels (summary.json's libraries)

# What a trainer writes into summary.json (the other states are decided from outside it).
SUMMARY_STATUSES = tuple(str(s) for s in (Status.RUNNING, Status.DONE, Status.DIVERGED, Status.FAILED))
# What a key that readers use may hold: its types (None: null allowed) and, for a number,
# its closed range. NaN is in no range.
TEXT, TEXT_OR_NULL = ((str,),), ((str, None),)
COUNT, PERCENT = ((int,), 0, math.inf), ((int, float, None), 0, 100)
AMOUNT = ((int, float, None), 0, math.inf)
SUMMARY_FIELDS = {
    "arch": TEXT, "depth": ((int,), 1, math.inf), "seed": COUNT, "status": TEXT, "epochs": COUNT,
    "dataset": TEXT_OR_NULL, "synthetic": ((bool, None),), "params": AMOUNT,
    "epochs_planned": AMOUNT, "iterations": AMOUNT, "iterations_planned": AMOUNT,
    "final_train_err": PERCENT, "final_test_err": PERCENT, "final_val_err": PERCENT, "wall_seconds": AMOUNT,
    "evaluated_on": TEXT_OR_NULL,
    "schedule": TEXT_OR_NULL, "experiment": TEXT_OR_NULL, "device": TEXT_OR_NULL, "error": TEXT_OR_NULL,
    "cpu_model": TEXT_OR_NULL, "cpu_bf16": ((list, None),), "torch_threads": ((int, None), 1, math.inf),
}
# config.yaml: what every run config holds (a file cut short at a line lacks its last
# sections: name, seed and model come first, dataset after train), and the keys readers
# use, dotted.
CONFIG_REQUIRED = ("name", "seed", "model.arch", "model.depth", "train", "dataset", "dataset.name")
CONFIG_FIELDS = {
    "model.arch": TEXT, "model.depth": ((int,), 1, math.inf), "seed": COUNT, "name": TEXT_OR_NULL,
    "train": ((dict,),), "dataset": ((dict,),), "dataset.name": TEXT, "dataset.display_name": TEXT_OR_NULL,
    "dataset.synthetic": ((bool, None),), "train.epochs": ((int, None), 1, math.inf),
    "train.iterations": ((int, None), 1, math.inf),
}


def _metric_range(column: str) -> tuple[float, float, bool]:
    """(low, high, whether NaN/inf are allowed) of a metrics.csv column: errors are
    percentages, a loss is not negative (NaN or inf once a run diverges), times and
    speeds not negative (a speed NaN when an epoch took no time)."""
    if column.endswith("_err"):
        return 0.0, 100.0, False
    if column.endswith("_loss") or column == "images_per_s":
        return 0.0, math.inf, True
    if column in ("lr", "seconds", "elapsed") or column.endswith("_seconds"):
        return 0.0, math.inf, False
    return -math.inf, math.inf, True


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


def read_bytes(path: Path, limit: int | None = None) -> bytes | None:
    """The file's bytes; None if it does not exist; DamagedFile if it cannot be read, is
    not a regular file (a FIFO would block the reader), or holds more than ``limit``
    bytes (default: MAX_BYTES of its name)."""
    path = Path(path)
    limit = MAX_BYTES.get(path.name, MB) if limit is None else limit
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise DamagedFile(path, f"cannot be read ({err.strerror or err})") from err
    with open(fd, "rb") as file:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise DamagedFile(path, "is not a regular file")
            data = file.read(limit + 1)
        except OSError as err:
            raise DamagedFile(path, f"cannot be read ({err.strerror or err})") from err
    if len(data) > limit:
        raise DamagedFile(path, f"is larger than {_size(limit)}, more than resexp ever writes there")
    return data


def _size(n: int) -> str:
    return f"{n // MB} MB" if n >= MB else f"{n // 1024} KB" if n >= 1024 else f"{n} bytes"


def _text(path: Path, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DamagedFile(path, f"is not text (a bad byte at offset {err.start})") from None
    if "\x00" in text:
        raise DamagedFile(path, f"holds a NUL byte at offset {text.index(chr(0))}")
    return text


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def json_depth(text: str) -> int:
    """How deeply the JSON ``text`` nests arrays and objects, counted without parsing it
    (the parser itself recurses, and a few KB of '[' exhaust Python's stack)."""
    depth = deepest = 0
    for char in re.sub(r"[^\[\]{}]", "", _JSON_STRING.sub("", text)):
        depth += 1 if char in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_json(path: Path, text: str) -> object:
    """JSON ``text`` -> its value; DamagedFile if it is not JSON or nests deeper than MAX_DEPTH."""
    if json_depth(text) > MAX_DEPTH:
        raise DamagedFile(path, f"is nested more than {MAX_DEPTH} levels deep, deeper than resexp writes")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        raise DamagedFile(path, f"is not valid JSON ({str(err).split(':')[0]})") from None


def log_columns(evaluated_on: str = "test") -> list[str]:
    """metrics.csv's first columns: COLUMNS, with the val pair in the test pair's place where
    the evaluated images are held out of the training split ("val": the dataset has no test
    split), so that no column says test of images that are not the test split."""
    named = dict(zip(TEST_COLUMNS, VAL_COLUMNS)) if evaluated_on == "val" else {}
    return [named.get(column, column) for column in COLUMNS]


def parse_log(path: Path, data: bytes) -> Log:
    """metrics.csv's bytes -> Log. DamagedFile for anything but a torn last line."""
    lines = _text(path, data).split("\n")
    torn = lines.pop() != ""  # text after the last newline: a row (or header) cut short
    lines = [line.removesuffix("\r") for line in lines]  # csv writes \r\n
    if not lines:
        return Log([], [], torn)
    header = lines[0].split(",")
    held_out = "test_err" not in header and "val_err" in header  # a run without a test split
    missing = [c for c in log_columns("val" if held_out else "test") if c not in header]
    if missing or len(set(header)) != len(header):
        raise DamagedFile(path, f"line 1 is not a metrics header (missing {', '.join(missing) or 'nothing'}, "
                                f"{len(header)} names)")
    ranges = [_metric_range(column) for column in header]
    by_epoch = {}
    for number, line in enumerate(lines[1:], start=2):
        row = _parse_row(path, number, header, ranges, line)
        by_epoch[row["epoch"]] = row  # an epoch written twice (by an older resexp): the later row counts
    epochs = sorted(by_epoch)
    if epochs != list(range(1, len(epochs) + 1)):
        hole = next(e for e in range(1, len(epochs) + 2) if e not in by_epoch)
        raise DamagedFile(path, f"epoch {hole} is missing (epochs {epochs[0]}..{epochs[-1]} logged)")
    return Log(header, [by_epoch[e] for e in epochs], torn)


def _parse_row(path: Path, number: int, header: list[str], ranges: list, line: str) -> dict:
    fields = line.split(",")
    if len(fields) != len(header):
        raise DamagedFile(path, f"line {number} has {len(fields)} fields, the header {len(header)}")
    try:
        row = {name: float(value) for name, value in zip(header, fields)}
    except ValueError:
        raise DamagedFile(path, f"line {number} holds a value that is not a number") from None
    for (name, value), (low, high, odd) in zip(row.items(), ranges):
        if not (low <= value <= high or odd and not math.isfinite(value) and value != -math.inf):
            raise DamagedFile(path, f"line {number}: {name} {value:g} is out of range")
    for key in ("epoch", "iteration"):
        value = row[key]
        if not (math.isfinite(value) and value.is_integer() and value >= (1 if key == "epoch" else 0)):
            raise DamagedFile(path, f"line {number}: {key} {value!r} is not a count")
        row[key] = int(value)
    return row


def parse_summary(path: Path, data: bytes) -> dict:
    """summary.json's bytes -> dict. DamagedFile unless it is a JSON object whose keys
    that readers use hold values of their types and ranges."""
    summary = parse_json(path, _text(path, data))
    if not isinstance(summary, dict):
        raise DamagedFile(path, f"holds a JSON {type(summary).__name__}, not an object")
    check_fields(path, summary, SUMMARY_FIELDS)
    if "status" in summary and summary["status"] not in SUMMARY_STATUSES:
        raise DamagedFile(path, f"status {summary['status']!r} is none of {', '.join(SUMMARY_STATUSES)}")
    if not all(isinstance(v, str) for v in summary.get("cpu_bf16") or []):
        raise DamagedFile(path, "cpu_bf16 is not a list of names")
    return summary


def parse_config(path: Path, data: bytes) -> dict:
    """config.yaml's bytes -> dict. DamagedFile unless it is a mapping with every key of a
    run config in CONFIG_REQUIRED, whose keys that readers use hold values of their types
    and ranges, and no ``${...}``: a run config is saved resolved, so an interpolation in
    one was not written by resexp, and resolving it would read the environment."""
    config = _yaml(path, data, "a run config")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise DamagedFile(path, "is not a run config (no model section)")
    missing = [key for key in CONFIG_REQUIRED if not _lookup(config, key)[0]]
    if missing:
        raise DamagedFile(path, f"lacks {', '.join(missing)} (a run config holds them all; cut short?)")
    check_fields(path, config, CONFIG_FIELDS)
    where = _interpolation(config)
    if where is not None:
        raise DamagedFile(path, f"{where} holds an interpolation ${{...}}, which resexp never saves in a run config")
    return config


def parse_command(path: Path, data: bytes) -> dict:
    """command.yaml's bytes -> dict; DamagedFile unless it is a YAML mapping."""
    command = _yaml(path, data, "a YAML mapping")
    if not isinstance(command, dict):
        raise DamagedFile(path, "is not a YAML mapping")
    return command


def _yaml(path: Path, data: bytes, what: str) -> object:
    """A YAML file's value; DamagedFile if it is not YAML, or larger than ``what`` (a run
    config, a YAML mapping) can be (resexp.run.bounded_yaml)."""
    try:
        return bounded_yaml.load(_text(path, data))
    except bounded_yaml.TooLarge as err:
        raise DamagedFile(path, f"is not {what} ({err})") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise DamagedFile(path, f"is not valid YAML{line}") from None


def _interpolation(node, prefix: str = "") -> str | None:
    """The dotted key of the first string in ``node`` (keys included) holding '${', or None."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        full = f"{prefix}{key}"
        if "${" in str(key) or isinstance(value, str) and "${" in value:
            return full
        found = _interpolation(value, full + ".")
        if found is not None:
            return found
    return None


def check_fields(path: Path, record: dict, fields: dict) -> None:
    """DamagedFile unless each dotted key of ``fields`` present in ``record`` holds one of
    its types (exactly: JSON and YAML make no subclasses, and a bool is no int here), within
    its range."""
    for key, (kinds, *bounds) in fields.items():
        found, value = _lookup(record, key)
        if not found:
            continue
        if (None if value is None else type(value)) not in kinds:
            names = " or ".join("null" if k is None else k.__name__ for k in kinds)
            raise DamagedFile(path, f"{key} is {reprlib.repr(value)}, not {names}")
        if bounds and value is not None and not bounds[0] <= value <= bounds[1]:
            raise DamagedFile(path, f"{key} is {value!r}, out of its range [{bounds[0]:g}, {bounds[1]:g}]")


def _lookup(record: dict, key: str) -> tuple[bool, object]:
    node = record
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def parse_wandb_id(path: Path, data: bytes) -> str:
    """wandb-id.txt's bytes -> the W&B run id it names. DamagedFile unless it is one plain
    id (letters and digits), so a received folder can name a run and nothing else."""
    text = data.decode("ascii", errors="replace").strip()
    if not _WANDB_ID.match(text):
        raise DamagedFile(path, "does not hold a plain W&B run id (letters and digits); "
                                "delete it to log to a new W&B run")
    return text
