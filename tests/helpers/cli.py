"""Calling resexp as a user does: in this process (fast) or in a fresh interpreter (exit codes
and stderr exactly as a shell sees them), and the tiny settings every such test starts from."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resexp.cli import main

# A tiny synthetic run: 256 images, batches of 64 -> 4 iterations per epoch. One torch
# thread: runs this small gain nothing from more, and on a busy CPU threads only wait. No lr
# decay, so that a test may shorten it (train.epochs=1): a milestone past a run's end is refused.
# No diagnostics (they cost a third of such a run, and three more figures per plot): a test of
# them, or of what reads their files, adds DIAGNOSTICS.
TINY = ["dataset=synthetic", "dataset.train_args.size=256", "dataset.test_args.size=128",
        "train.batch_size=64", "train.iterations=null", "train.epochs=3", "train.milestones=[]",
        "train.milestone_unit=epochs", "train.log_every=2", "train.device=cpu", "model.depth=8",
        "train.threads=1", "train.diagnostics=off"]
DIAGNOSTICS = "train.diagnostics=end"  # the shipped default: layer responses, gradients and identity at 0 and the end


# The same for a sweep, whose depths come from --depths (or sweep syntax), not model.depth.
SWEEP_TINY = [o for o in TINY if not o.startswith("model.depth=")]


def run_cli(*args, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    """`resexp ARGS` in a fresh interpreter (exit codes and stderr as a user sees them)."""
    return subprocess.run([sys.executable, "-m", "resexp", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)


def cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`resexp ARGS` in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["resexp", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, captured.err


def rows(run_dir: Path) -> list[dict]:
    """metrics.csv as it is on disk (strings)."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def sweep_here(archs, depths, seeds, overrides, out, jobs=None) -> dict:
    """A local sweep in this process, as `resexp sweep` runs it (plan, save, train), with its
    output swallowed: {run name: final status}."""
    import io

    from rich.console import Console

    from resexp.sweep.command import sweep

    return sweep(archs, depths, seeds, overrides, out, jobs=jobs, console=Console(file=io.StringIO())).statuses
