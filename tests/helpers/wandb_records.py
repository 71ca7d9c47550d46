"""Read back what a W&B run wrote, with W&B's own reader: ``wandb leet inspect --json FILE``
prints each record of a ``run-<id>.wandb`` transaction log as one JSON line, up to where
the file is cut short. Independent of resexp's reader (resexp/inside/wandb_file.py), so a
test does not check that reader against itself. About a second per file (the wandb CLI).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def records(path: Path) -> list[dict]:
    """Every record of a .wandb file, in order: {"type": kind, kind: {...}}."""
    done = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)],
                          capture_output=True, text=True, timeout=120)
    found = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert found or done.returncode == 0, f"wandb leet inspect {path}: {done.stderr[-500:]}"
    return found


def of_type(recs: list[dict], kind: str) -> list[dict]:
    return [r[kind] for r in recs if r.get("type") == kind]


def history(path: Path, recs: list[dict] | None = None) -> list[dict]:
    """The logged rows: {key: value} for each history record (nested keys joined with '.')."""
    return [h["item"] for h in of_type(recs if recs is not None else records(path), "history")]


def config(path: Path) -> dict:
    """The run's config, as its run record sets it."""
    (run,) = of_type(records(path), "run")
    return run["config"]["update"]


def run_ids(path: Path) -> set[str]:
    """The run ids the file's run records name."""
    return {r["run_id"] for r in of_type(records(path), "run")}
