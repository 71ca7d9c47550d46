"""Experiment loggers: where a run's numbers go besides its CSVs (which stay the source of truth).

Monitor (resexp/inside/monitor.py) hands every logger the same four calls; each logger
turns them into its own records:

- TensorBoard (``train.tensorboard``, resexp/inside/tensorboard.py): event files in the
  run folder, plus an hparams record for TensorBoard's HParams view;
- Weights & Biases (``train.wandb``, resexp/inside/wandb_log.py): one W&B run per run folder.

docs/logging.md says what each one records and where.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import TYPE_CHECKING

from resexp.run.folder import writing

if TYPE_CHECKING:
    from resexp.run.folder import RunDir


def disk_errors(method):
    """A logger method whose writes, on a full or read-only disk, end as CannotWrite (one
    line) as for every other file of the run, named by the logger's ``writes_to``."""
    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        with writing(self.writes_to):
            return method(self, *args, **kwargs)
    return wrapped


class Logger:
    """The calls a run makes on an experiment logger; each does nothing unless a logger
    records it. ``writes_to``: the files (a path or glob in the run folder) a failed write
    is reported as."""

    writes_to: Path

    def live(self, iteration: int, scalars: dict) -> None:
        """Every ``train.log_every`` iterations: the epoch's running loss, error, lr, images/s."""

    def epoch(self, row: dict, last: bool) -> None:
        """After each metrics.csv row; ``last``: the row of the run's final epoch."""

    def diagnostics(self, epoch: int, iteration: int, tables: dict[str, list[dict]], loss: float) -> None:
        """One diagnostics measurement: ``tables`` maps responses, gradients and identity to
        the rows just appended to their CSVs; ``loss``: the fixed batch's loss."""

    def close(self, failed: bool = False) -> None:
        """At the end of this process's training (``failed``: it ended in an error)."""


def open_loggers(cfg, run: RunDir, epoch: int, iteration: int) -> list[Logger]:
    """The loggers ``cfg`` switches on, opened for a run that goes on after ``epoch``
    (0: a fresh run) at ``iteration``."""
    loggers: list[Logger] = []
    try:
        if cfg.train.tensorboard:
            from resexp.inside.tensorboard import TBLog, hparams_of

            tb = TBLog(run.path, purge_step=iteration or None)
            loggers.append(tb)
            if epoch == 0:  # a resumed run has its record from its first start
                tb.hparams(hparams_of(cfg))
        if cfg.train.wandb:
            from resexp.inside.wandb_log import WandbLog

            loggers.append(WandbLog(cfg, run))
    except BaseException:
        for logger in loggers:  # the error that stopped the opening is the one to report
            with contextlib.suppress(Exception):
                logger.close(failed=True)
        raise
    return loggers
