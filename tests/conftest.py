"""Shared fixtures: every test runs offline, on the CPU, in its own folders. Helpers live in tests/helpers/."""

from __future__ import annotations

import pytest
import torch
from helpers.cli import TINY

from resexp.settings.compose import load_config


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


@pytest.fixture
def frozen_clock(monkeypatch):
    """The clock lock ages are read against, stopped now: a lock written ``age`` seconds ago
    reads exactly ``age`` seconds old however long the test takes."""
    import time

    frozen = time.time()
    monkeypatch.setattr("resexp.run.lock.wall_clock", lambda: frozen)
    return frozen
