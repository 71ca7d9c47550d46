"""The one owner of a run folder: its files, their readers and writers, and its state().

A run folder ``<out>/<arch>-<depth>-s<seed>/`` holds config.yaml, metrics.csv,
summary.json and checkpoint.pt. Each file has one reader and one writer here, and
``RunDir.state()`` is the one place that decides what a run is (new, partial,
running, done, ...): train, sweep, results and status all ask it.

Every write is either an append of one whole line or an atomic replace, so a run
killed at any moment leaves files that parse, and the rows it wrote stay.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import socket
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import torch
import yaml
from omegaconf import OmegaConf

from resexp.errors import UserError
from resexp.runlock import DEFAULT_STALE_AFTER, LOCK_FILE, Lock, Owner, RunBusy, acquire, read_owner
from resexp.schema import default_of, non_result_keys

__all__ = ["COLUMNS", "FINISHED", "DEFAULT_STALE_AFTER", "Lock", "NOT_RESULT_KEYS", "Owner", "RunBusy",
           "RunDir", "RunState", "run_name", "parse_run_name"]

COLUMNS = ["epoch", "iteration", "lr", "train_loss", "train_err", "test_loss", "test_err",
           "seconds", "images_per_s", "elapsed"]
VAL_COLUMNS = ["val_loss", "val_err"]

# A run in one of these states is never trained again.
FINISHED = ("done", "diverged")

# Keys that do not change what a run computes (``result=False`` in resexp/schema.py):
# a run may resume under new values.
NOT_RESULT_KEYS = non_result_keys()

# <arch>-<depth>-s<seed>; an arch may hold underscores (mlp_plain-30-s0) but no dash.
RUN_NAME = re.compile(r"^(?P<arch>[A-Za-z0-9_]+)-(?P<depth>\d+)-s(?P<seed>\d+)$")


def run_name(arch: str, depth: int, seed: int) -> str:
    return f"{arch}-{depth}-s{seed}"


def parse_run_name(name: str) -> dict | None:
    """arch, depth and seed from a run folder's name, or None if it is not named like a run."""
    match = RUN_NAME.match(name)
    if match is None:
        return None
    return {"arch": match["arch"], "depth": int(match["depth"]), "seed": int(match["seed"])}


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` at once: write a hidden temporary file, then rename it.
    The temporary file is named after this process (two writers never share one) and
    removed if the write fails; one left by a killed trainer is removed by RunDir.claim()."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_commit() -> str | None:
    """The commit of the resexp source in use (with '+dirty' for local edits), if it is a checkout."""
    src = Path(__file__).resolve().parent
    try:
        run = lambda *a: subprocess.run(["git", "-C", str(src), *a], capture_output=True,  # noqa: E731
                                        text=True, timeout=5, check=True).stdout.strip()
        commit = run("rev-parse", "HEAD")
        return commit + ("+dirty" if run("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _flat(config: dict) -> dict:
    out = {}

    def walk(node, prefix):
        for key, value in node.items():
            full = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, full + ".")
            elif not any(full == k or full.startswith(k + ".") for k in NOT_RESULT_KEYS):
                out[full] = value

    walk(config, "")
    return out


@dataclass
class RunState:
    """What a run folder holds, as state() reads it.

    status: new | partial | running | stale | done | diverged | failed. ``running``:
    a live process holds the run's lock (``owner`` names it); ``stale``: a lock is
    left by a process that is gone, and the next trainer takes it over. ``epochs``
    counts the rows of metrics.csv and ``last`` is its last row: the log is the
    record, and summary.json may lag it by one epoch (a kill between the two writes).
    """
    status: str
    epochs: int = 0
    last: dict | None = None
    summary: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    owner: Owner | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.metrics = self.path / "metrics.csv"
        self.summary_file = self.path / "summary.json"
        self.checkpoint = self.path / "checkpoint.pt"
        self.lock_file = self.path / LOCK_FILE

    @property
    def name(self) -> str:
        return self.path.name

    # ---- the state every command asks for
    def state(self) -> RunState:
        summary, config, rows = self.read_summary() or {}, self.read_config() or {}, self.read_rows()
        try:
            owner = read_owner(self.lock_file)
        except OSError:
            owner = None
        found = RunState("new", len(rows), rows[-1] if rows else None, summary, config, owner)
        found.status = self._status(found)
        return found

    def _status(self, found: RunState) -> str:
        status = found.summary.get("status")
        if status in FINISHED:
            return status
        if found.owner is not None:
            return "stale" if found.owner.stale else "running"
        if status == "failed":
            return status
        # "running" in a summary with no lock beside it: its trainer was killed.
        return "partial" if found.last or self.checkpoint.exists() else "new"

    # ---- the lock: one trainer per run, on any host
    @contextlib.contextmanager
    def claim(self, stale_after: float = DEFAULT_STALE_AFTER) -> Iterator[Lock]:
        """Hold this run's lock while training it (resexp.runlock): creates the folder and
        the lock, or takes over a stale lock; raises RunBusy while a live process holds it.
        The lock's heartbeat runs until the block ends; ``Lock.verify()`` raises RunBusy if
        the run was taken over meanwhile (a heartbeat stalled for longer than stale_after).
        Temporary files left by a killed trainer are removed once the lock is held."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            lock = acquire(self.lock_file, stale_after)
        except OSError as err:
            raise UserError(f"cannot write to {self.path}: {err.strerror or err}") from err
        try:
            for tmp in self.path.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
            yield lock
        finally:
            lock.release()

    # ---- config.yaml: created once, checked on every resume
    def create(self, cfg) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if not self.config.exists():
                atomic_write(self.config, OmegaConf.to_yaml(cfg, resolve=True).encode())
        except OSError as err:
            raise UserError(f"cannot write to {self.path}: {err.strerror or err}") from err

    def read_config(self) -> dict | None:
        """The resolved config this run was started with; None while it is missing or unreadable."""
        try:
            config = yaml.safe_load(self.config.read_text())
        except (OSError, ValueError, yaml.YAMLError):
            return None
        return config if isinstance(config, dict) else None

    def config_conflicts(self, cfg) -> list[str]:
        """Keys whose value differs from the config this run was started with."""
        config = self.read_config()
        if config is None:
            return []
        old, new = _flat(config), _flat(OmegaConf.to_container(cfg, resolve=True))
        # A key newer than the run's config had its schema default then.
        old.update({k: default_of(k) for k in set(new) - set(old) if default_of(k) == new[k]})
        return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
                for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]

    def check_config(self, cfg, others: int = 0) -> None:
        """UserError if this run was started with other result-affecting settings
        (``others``: how many more runs of a sweep clash too, for the message)."""
        conflicts = self.config_conflicts(cfg)
        if conflicts:
            more = f" (and {others} more run{'s' if others > 1 else ''})" if others else ""
            raise UserError(f"{self.path} was started with another config ({'; '.join(conflicts[:3])}){more}; "
                            f"use another --out or delete that run")

    # ---- summary.json
    def read_summary(self) -> dict | None:
        """summary.json, or None while it is missing or unreadable."""
        try:
            summary = json.loads(self.summary_file.read_text())
        except (OSError, ValueError):
            return None
        return summary if isinstance(summary, dict) else None

    def write_summary(self, summary: dict) -> None:
        summary = {**summary, "pid": os.getpid(), "host": socket.gethostname(), "updated": now()}
        atomic_write(self.summary_file, (json.dumps(summary, indent=2) + "\n").encode())

    # ---- metrics.csv
    def read_rows(self) -> list[dict]:
        """metrics.csv, one row per epoch in epoch order; [] when there is none yet.
        If an epoch appears twice (a run resumed by an older resexp), the later row counts."""
        try:
            with open(self.metrics, newline="") as f:
                table = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error):
            return []
        rows = {}
        for raw in table:
            row = {k: _number(v) for k, v in raw.items() if k is not None}
            if isinstance(row.get("epoch"), float) and math.isfinite(row["epoch"]):
                rows[int(row["epoch"])] = {**row, "epoch": int(row["epoch"]),
                                           "iteration": int(row.get("iteration") or 0)}
        return [rows[e] for e in sorted(rows)]

    def append_row(self, row: dict) -> None:
        new = not self.metrics.exists() or self.metrics.stat().st_size == 0
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
        with open(self.metrics, "a", newline="") as f:  # one write of whole lines
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())

    def keep_rows_until(self, epoch: int) -> None:
        """Drop rows after ``epoch`` (written after the last checkpoint, about to be redone)."""
        rows = self.read_rows()
        if all(r["epoch"] <= epoch for r in rows):
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if r["epoch"] <= epoch)
        atomic_write(self.metrics, buf.getvalue().encode())

    # ---- checkpoint.pt
    def save_checkpoint(self, state: dict) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write(self.checkpoint, buf.getvalue())

    def load_checkpoint(self, map_location) -> dict | None:
        if not self.checkpoint.exists():
            return None
        try:
            return torch.load(self.checkpoint, map_location=map_location, weights_only=True)
        except Exception as err:  # truncated zip, pickle error, ... all mean the same here
            raise UserError(f"checkpoint {self.checkpoint} is unreadable ({type(err).__name__}); "
                            f"delete it to restart this run from scratch") from err


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None
