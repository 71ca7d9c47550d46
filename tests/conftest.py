"""Shared fixtures: every test runs offline, on the CPU, in its own folders."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from resexp.cli import main
from resexp.config import load_config

# A tiny synthetic run: 256 images, batches of 64 -> 4 iterations per epoch. One torch
# thread: runs this small gain nothing from more, and on a busy CPU threads only wait.
TINY = ["dataset=synthetic", "dataset.train_args.size=256", "dataset.test_args.size=128",
        "train.batch_size=64", "train.iterations=null", "train.epochs=3", "train.milestones=[2]",
        "train.milestone_unit=epochs", "train.log_every=2", "train.device=cpu", "model.depth=8",
        "train.threads=1"]


# The same for a sweep, whose depths come from --depths (or sweep syntax), not model.depth.
SWEEP_TINY = [o for o in TINY if not o.startswith("model.depth=")]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Data root and config search path of this test only; never the network."""
    monkeypatch.setenv("RESEXP_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("RESEXP_CONFIG_DIR", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def restore_threads():
    """train.threads=1 sets torch's global thread count: give it back after each test."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_cfg():
    def make(*overrides, config_dirs=()):
        return load_config([*TINY, *overrides], config_dirs)
    return make


def run_cli(*args, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    """`resexp ARGS` in a fresh interpreter (exit codes and stderr as a user sees them)."""
    return subprocess.run([sys.executable, "-m", "resexp", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)


FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def need_fashion_mnist():
    """Skip where the Debian package is absent, except in CI, which must have it."""
    if not FASHION_DIR.is_dir():
        if os.environ.get("RESEXP_REQUIRE_REAL_DATA"):
            pytest.fail(f"{FASHION_DIR} missing: apt-get install dataset-fashion-mnist")
        pytest.skip("apt-get install dataset-fashion-mnist for the real-data tests")


# The four original MNIST files; on these machines beside the repository (../shared/data/mnist).
MNIST_DIR = Path(os.environ.get("RESEXP_MNIST_SOURCE",
                                Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"))


def need_mnist():
    """Skip where the MNIST files are absent, except in CI, which must have them."""
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        if os.environ.get("RESEXP_REQUIRE_REAL_DATA"):
            pytest.fail(f"{MNIST_DIR} lacks the MNIST *-ubyte.gz files: set RESEXP_MNIST_SOURCE=FOLDER")
        pytest.skip("put the four MNIST *-ubyte.gz files in ../shared/data/mnist or $RESEXP_MNIST_SOURCE")
    return MNIST_DIR


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


def interrupted_and_resumed(make_cfg, root: Path, monkeypatch, dies_in: int = 3) -> list[int]:
    """fit(make_cfg()) uninterrupted into root/full, and into root/cut with Ctrl-C during
    epoch ``dies_in``, then resumed there. Returns the epochs root/cut had logged when
    it was interrupted."""
    import resexp.train as train_mod

    train_mod.fit(make_cfg(), root / "full")
    real = train_mod.train_epoch

    def dies(cfg, s, epoch, iteration, bar=None):
        if epoch == dies_in:
            raise KeyboardInterrupt
        return real(cfg, s, epoch, iteration, bar)

    monkeypatch.setattr(train_mod, "train_epoch", dies)
    with pytest.raises(KeyboardInterrupt):
        train_mod.fit(make_cfg(), root / "cut")
    (run_dir,) = (root / "cut").iterdir()
    logged = [int(r["epoch"]) for r in rows(run_dir)]
    monkeypatch.setattr(train_mod, "train_epoch", real)
    train_mod.fit(make_cfg(), root / "cut")
    return logged
