"""Shared fixtures: every test runs offline, on the CPU, in its own folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from resexp.config import load_config

# A tiny synthetic run: 256 images, batches of 64 -> 4 iterations per epoch.
TINY = ["dataset=synthetic", "dataset.train_args.size=256", "dataset.test_args.size=128",
        "train.batch_size=64", "train.iterations=null", "train.epochs=3", "train.milestones=[2]",
        "train.milestone_unit=epochs", "train.log_every=2", "train.device=cpu", "model.depth=8"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Data root and config search path of this test only; never the network."""
    monkeypatch.setenv("RESEXP_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("RESEXP_CONFIG_DIR", raising=False)
    monkeypatch.chdir(tmp_path)


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
