"""The files of one run directory: config.yaml, metrics.csv, summary.json, checkpoint.pt.

Every write is either an append of one whole line or an atomic replace, so a run
killed at any moment leaves files that parse, and the rows it wrote stay.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch
from omegaconf import OmegaConf

from resexp.errors import UserError

COLUMNS = ["epoch", "iteration", "lr", "train_loss", "train_err", "test_loss", "test_err",
           "seconds", "images_per_s", "elapsed"]
VAL_COLUMNS = ["val_loss", "val_err"]

# Keys that do not change what a run computes: a run may resume under new values.
NOT_RESULT_KEYS = ("name", "sweep", "train.device", "train.log_every", "train.keep_checkpoint",
                   "train.threads", "train.cuda_graphs", "dataset.root", "dataset.source", "dataset.download",
                   "dataset.missing_hint")


def run_name(arch: str, depth: int, seed: int) -> str:
    return f"{arch}-{depth}-s{seed}"


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


def _flat(cfg) -> dict:
    out = {}

    def walk(node, prefix):
        for key, value in node.items():
            full = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, full + ".")
            elif not any(full == k or full.startswith(k + ".") for k in NOT_RESULT_KEYS):
                out[full] = value

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.metrics = self.path / "metrics.csv"
        self.summary_file = self.path / "summary.json"
        self.checkpoint = self.path / "checkpoint.pt"

    # ---- creation and the config it was made with
    def create(self, cfg) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if not self.config.exists():
                atomic_write(self.config, OmegaConf.to_yaml(cfg, resolve=True).encode())
        except OSError as err:
            raise UserError(f"cannot write to {self.path}: {err.strerror or err}") from err

    def config_conflicts(self, cfg) -> list[str]:
        """Keys whose value differs from the config this run was started with."""
        if not self.config.exists():
            return []
        old, new = _flat(OmegaConf.load(self.config)), _flat(cfg)
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
        """summary.json, or None while it is missing or unreadable (a run just starting)."""
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
        if not self.metrics.exists():
            return []
        with open(self.metrics, newline="") as f:
            return [{k: float(v) if v not in ("", None) else None for k, v in row.items()}
                    for row in csv.DictReader(f)]

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
        writer.writerows({k: _csv_value(k, v) for k, v in r.items()} for r in rows if r["epoch"] <= epoch)
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


def _csv_value(key: str, value):
    return int(value) if key in ("epoch", "iteration") and value is not None else value
