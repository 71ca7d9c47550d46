"""Experiment loggers: where a run's numbers go besides its CSVs (which stay the source of truth).

Monitor (resexp/inside/monitor.py) hands every logger the same four calls; each logger
turns them into its own records:

- TensorBoard (``train.tensorboard``, resexp/inside/tensorboard.py): event files in the
  run folder, plus an hparams record for TensorBoard's HParams view;
- Weights & Biases (``train.wandb``, resexp/inside/wandb_log.py): one W&B run per run folder.

After any stop, each metrics.csv row is in a logger's files once, with the CSV's values:

- a row reaches the loggers only once checkpoint.pt covers it (Monitor holds it back until
  then), so no logger ever holds a row that a resume drops and trains again;
- each logger, when it opens, reads back with its own reader what its earlier files hold
  and never writes a record again that they hold; Monitor then hands it every kept row,
  so a row a killed start (SIGKILL) had not got onto disk is written now;
- a stop the process sees (Ctrl-C, SIGTERM, SIGUSR2) unwinds as an exception, and fit
  finishes the loggers on the way out.

docs/logging.md says what each one records and where.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from resexp.run.folder import writing

if TYPE_CHECKING:
    from resexp.run.folder import RunDir


class Logger:
    """The calls a run makes on an experiment logger (through ``call``); each does nothing
    unless a logger records it. ``writes_to``: the files (a path or glob in the run folder)
    a failed write is reported as."""

    writes_to: Path

    def live(self, iteration: int, scalars: dict) -> None:
        """Every ``train.log_every`` iterations: the epoch's running loss, error, lr, images/s."""

    def epoch(self, row: dict, last: bool) -> None:
        """After each metrics.csv row; ``last``: the row of the run's final epoch."""

    def diagnostics(self, epoch: int, iteration: int, tables: dict[str, list[dict]], loss: float) -> None:
        """One diagnostics measurement: ``tables`` maps responses, gradients and identity to
        the rows just appended to their CSVs; ``loss``: the fixed batch's loss."""

    def close(self, failed: bool = False) -> None:
        """At the end of this process's training (``failed``: it ended in an error or a stop)."""

    def discard(self) -> None:
        """The run did not start (another logger could not): close, and remove what this
        start created."""


def call(logger: Logger, method: str, *args) -> None:
    """``logger.method(*args)``, whose writes, on a full or read-only disk, end as CannotWrite
    (one line) as for every other file of the run, named by the logger's ``writes_to``."""
    with writing(logger.writes_to):
        getattr(logger, method)(*args)


def open_loggers(cfg, run: RunDir) -> list[Logger]:
    """The loggers ``cfg`` switches on. One that cannot start (W&B without an API key, say)
    raises, and every one opened so far removes what it created: the run folder is as it was."""
    loggers: list[Logger] = []
    try:
        if cfg.train.wandb:  # first: the one a user's setup can refuse
            from resexp.inside.wandb_log import WandbLog

            loggers.append(WandbLog(cfg, run))
        if cfg.train.tensorboard:
            from resexp.inside.tensorboard import TBLog, hparams_of

            loggers.append(TBLog(run.path))
            call(loggers[-1], "hparams", hparams_of(cfg))  # unless an earlier start wrote it
    except BaseException:
        for logger in loggers:  # the error that stopped the opening is the one to report
            with contextlib.suppress(Exception):
                logger.discard()
        raise
    return loggers
