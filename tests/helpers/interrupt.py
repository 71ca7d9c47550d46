"""Ctrl-C in the middle of a run, then resume: the one helper every resume test uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.cli import rows


def interrupted_and_resumed(make_cfg, root: Path, monkeypatch, dies_in: int = 3) -> list[int]:
    """fit(make_cfg()) uninterrupted into root/full, and into root/cut with Ctrl-C during
    epoch ``dies_in``, then resumed there. Returns the epochs root/cut had logged when
    it was interrupted."""
    import resexp.train.loop as train_mod

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
    logged = [int(r["epoch"]) for r in rows(run_dir)] if (run_dir / "metrics.csv").exists() else []
    monkeypatch.setattr(train_mod, "train_epoch", real)
    train_mod.fit(make_cfg(), root / "cut")
    return logged


def interrupt_after_checkpoints(monkeypatch, n: int) -> None:
    """Ctrl-C right after the n-th checkpoint of this process is written (a kill at that moment)."""
    from resexp.train import checkpoint

    original, count = checkpoint.save, [0]

    def save_then_interrupt(run, state):
        original(run, state)
        count[0] += 1
        if count[0] == n:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_interrupt)
