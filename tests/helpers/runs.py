"""Build run folders by hand, in the trainer's file formats, for results/plot/report tests.

Each epoch's numbers are given explicitly, so a test can compute what a table or
a figure must show from the same lists (or by reading the written CSV back).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

METRICS_COLUMNS = [
    "epoch", "iteration", "lr", "train_loss", "train_err", "test_loss", "test_err",
    "seconds", "images_per_s", "elapsed",
]


def metrics_rows(train_errs, test_errs, iters_per_epoch=100, seconds=2.0) -> list[dict]:
    """One metrics.csv row per epoch; losses are derived from the errors so they vary too."""
    rows = []
    for i, (train_err, test_err) in enumerate(zip(train_errs, test_errs, strict=True)):
        rows.append({
            "epoch": i + 1,
            "iteration": (i + 1) * iters_per_epoch,
            "lr": 0.1,
            "train_loss": train_err / 40,
            "train_err": train_err,
            "test_loss": test_err / 40,
            "test_err": test_err,
            "seconds": seconds,
            "images_per_s": 128 * iters_per_epoch / seconds,
            "elapsed": (i + 1) * seconds,
        })
    return rows


def write_metrics(run_dir: Path, rows: list[dict]) -> Path:
    """metrics.csv with the trainer's header; rows may be empty (header only)."""
    lines = [",".join(METRICS_COLUMNS)]
    lines += [",".join(repr(float(row[c])) if c not in ("epoch", "iteration") else str(row[c])
                       for c in METRICS_COLUMNS) for row in rows]
    path = run_dir / "metrics.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def make_run(root, arch, depth, seed, train_errs=(), test_errs=None, status="done", *,
             iters_per_epoch=100, epochs_planned=None, dataset="fashion_mnist",
             synthetic=False, params=None, summary=True, pid=None, host=None,
             schedule="SGD lr 0.1, /10 at 32k and 48k it, 64k it",
             experiment="test_sweep", **summary_overrides) -> Path:
    """Write <root>/<arch>-<depth>-s<seed>/ with config.yaml, metrics.csv and (unless
    summary=False) summary.json. Extra keyword arguments override summary keys."""
    run_dir = Path(root) / f"{arch}-{depth}-s{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    train_errs = list(train_errs)
    test_errs = list(test_errs) if test_errs is not None else [e + 5.0 for e in train_errs]
    rows = metrics_rows(train_errs, test_errs, iters_per_epoch)
    write_metrics(run_dir, rows)
    epochs_planned = epochs_planned or max(len(rows), 1)
    config = {
        "name": experiment, "seed": seed,
        "model": {"arch": arch, "depth": depth},
        "dataset": {"name": dataset, "synthetic": synthetic},
        "train": {"epochs": epochs_planned, "iterations": None},
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    if summary:
        data = summary_dict(arch, depth, seed, rows, status, epochs_planned, iters_per_epoch,
                            dataset, synthetic, params, pid, host, schedule, experiment)
        data.update(summary_overrides)
        (run_dir / "summary.json").write_text(json.dumps(data, indent=2))
    return run_dir


def summary_dict(arch, depth, seed, rows, status, epochs_planned, iters_per_epoch,
                 dataset, synthetic, params, pid, host, schedule, experiment) -> dict:
    """summary.json as the trainer writes it; a running run has no final errors yet."""
    last = rows[-1] if rows else {}
    final = status != "running"
    return {
        "arch": arch, "depth": depth, "seed": seed, "dataset": dataset, "synthetic": synthetic,
        "params": params if params is not None else 1000 * depth,
        "status": status, "epochs": len(rows), "epochs_planned": epochs_planned,
        "iterations": len(rows) * iters_per_epoch,
        "iterations_planned": epochs_planned * iters_per_epoch,
        "final_train_err": last.get("train_err") if final else None,
        "final_test_err": last.get("test_err") if final else None,
        "device": "cpu", "torch_version": "2.0.0", "git_commit": "0123abc",
        "wall_seconds": last.get("elapsed", 0.0), "schedule": schedule,
        "experiment": experiment, "pid": pid if pid is not None else 999_999_999,
        "host": host if host is not None else socket.gethostname(),
        "updated": "2024-01-01T00:00:00", "error": None,
    }


def write_lock(run_dir: Path, pid: int, host: str | None = None, age: float = 0.0,
               stale_after: float = 300.0, job: str | None = None) -> Path:
    """run.lock as a trainer writes it, last refreshed ``age`` seconds ago by the locks' clock
    (resexp.run.lock.wall_clock: freeze it with the frozen_clock fixture for exact ages)."""
    from resexp.run.lock import pid_namespace, wall_clock

    path = Path(run_dir) / "run.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "host": host if host is not None else socket.gethostname(), "pid": pid, "pidns": pid_namespace(),
        "job": job, "started": "2026-11-27T00:00:00+00:00", "stale_after": stale_after,
        "token": f"token-{pid}-{age}"}))
    beat = wall_clock() - age
    os.utime(path, (beat, beat))
    return path


def dead_pid() -> int:
    """The pid of a process that has just exited."""
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def gone(pids: list[int], within_s: float = 30) -> bool:
    """Whether every pid has ended, checked until ``within_s`` has passed."""
    from resexp.run.lock import pid_alive

    deadline = time.monotonic() + within_s
    while any(pid_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
