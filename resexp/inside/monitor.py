"""What a run records besides metrics.csv: diagnostics CSVs and, optionally, the experiment loggers.

``fit`` makes one Monitor per run and calls, in this order:

- ``begin(epoch, iteration)`` once, after resume() and before this start writes anything
  else (config.yaml, summary.json): it opens the loggers, and one that cannot start
  raises having removed what it created, so the run folder is as it was;
- ``live(iteration, scalars)`` every ``train.log_every`` steps;
- ``epoch(row, last)`` right after each metrics.csv row is appended;
- ``saved()`` right after the checkpoint of that epoch is saved: only now do the loggers
  get the row (and its measurement), so they never hold a row a resume trains again;
- ``finish()`` at the end, and ``finish(failed=True)`` on any exception, a stop (Ctrl-C,
  SIGTERM, SIGUSR2 as KeyboardInterrupt or SystemExit) included: the loggers write their
  last records and close.

Every diagnostics row is written through the run's RunDir.
Settings (resexp/settings/schema.py):

- ``train.diagnostics``: ``end`` (default) measures at iteration 0 and after the last
  epoch; ``epoch`` after every epoch too; ``off`` never (no hook, no pass, no file).
- ``train.diagnostics_images``: how many test images (the first ones) the layer responses
  and the identity test are measured on, in batches of ``train.eval_batch_size``; BN
  uses its running statistics (eval mode), except at iteration 0 (column ``bn``).
  Gradients use the first ``train.batch_size`` training images, without augmentation,
  in train mode: one fixed batch, as an SGD step sees it.
- ``train.tensorboard``, ``train.wandb``: also hand the live scalars, every epoch's row and
  the diagnostics to TensorBoard and Weights & Biases (resexp/inside/loggers.py,
  docs/logging.md). The CSVs stay the source of truth.

The measurements use no random numbers, write no ``.grad`` and restore BN's running
statistics, so a run's metrics are the same with the diagnostics on or off.
Rows go to ``responses.csv``, ``gradients.csv`` and ``identity.csv`` (docs/results-format.md);
epoch 0 is the measurement at initialisation.
"""

from __future__ import annotations

import contextlib
import math
import time
from functools import partial

import torch

from resexp.data import Split, eval_batches
from resexp.inside import diagnostics as dg
from resexp.inside.loggers import Logger, call, open_loggers
from resexp.run.files import DIAGNOSTIC_FILES
from resexp.run.folder import RunDir

FILES = dict(zip(("responses", "gradients", "identity"), DIAGNOSTIC_FILES))


class Monitor:
    """Diagnostics and experiment loggers of one run; every method is a no-op for what is off."""

    def __init__(self, cfg, run: RunDir, s):
        self.cfg, self.when, self.run, self.s = cfg, str(cfg.train.diagnostics), run, s
        self.ids = {"arch": cfg.model.arch, "depth": cfg.model.depth, "seed": cfg.seed}
        self.seconds = 0.0
        self.loggers: list[Logger] = []
        self.pending: list = []  # the loggers' calls for an epoch whose checkpoint is not saved yet
        self.layout = None

    # ---- the calls fit() makes
    def begin(self, epoch: int, iteration: int) -> None:
        """Before the first epoch to train: ``epoch`` 0 is a fresh run (measured at
        iteration 0), a larger one a run resumed at ``iteration``. Each logger is handed
        every kept metrics.csv row again and writes those its earlier files lack."""
        self.loggers = open_loggers(self.cfg, self.run)
        try:
            for row in self.run.read_rows() if epoch else []:
                self.pending.append(partial(self._each, "epoch", row, row["iteration"] >= self.s.schedule.total_iters))
            if epoch == 0 and self.when != "off":
                self.measure(epoch=0, iteration=0)
            self.saved()
        except BaseException:
            self.finish(failed=True)
            raise

    def epoch(self, row: dict, last: bool) -> None:
        """After epoch ``row['epoch']``'s metrics row (``last``: the run's final epoch): the
        diagnostics are measured now, and the loggers get both at ``saved()``."""
        self.pending.append(partial(self._each, "epoch", row, last))
        if math.isfinite(row["train_loss"]) and (self.when == "epoch" or (self.when == "end" and last)):
            self.measure(epoch=int(row["epoch"]), iteration=int(row["iteration"]))

    def saved(self) -> None:
        """Right after the checkpoint is saved: what it now covers goes to the loggers."""
        pending, self.pending = self.pending, []
        for held in pending:
            held()

    def live(self, iteration: int, scalars: dict) -> None:
        """Every ``train.log_every`` steps: running loss, error, lr, images/s."""
        self._each("live", iteration, scalars)

    def finish(self, failed: bool = False) -> dict:
        """At the end (``failed``: in an error or a stop): the summary's extra keys (seconds
        the diagnostics took). A diverged run's last row, which has no checkpoint, goes to
        the loggers now; after a failure, what no checkpoint covers does not (a resume
        trains it again). Every logger is closed, even when one of them fails to."""
        try:
            with contextlib.ExitStack() as closing:
                for logger in self.loggers:
                    closing.callback(call, logger, "close", failed)
                if not failed:
                    self.saved()
        finally:
            self.loggers, self.pending = [], []
        return {"diagnostics_seconds": round(self.seconds, 3)} if self.when != "off" else {}

    def _each(self, method: str, *args) -> None:
        for logger in self.loggers:
            call(logger, method, *args)

    # ---- measuring
    def measure(self, epoch: int, iteration: int) -> None:
        start = time.perf_counter()
        t, model, data = self.cfg.train, self.s.model, self.s.data
        test = Split(data.test.x[: t.diagnostics_images], data.test.y[: t.diagnostics_images])
        batches = [x for x, _ in eval_batches(data, test, t.eval_batch_size)]
        x, y = data.normalize(data.train.x[: t.batch_size]), data.train.y[: t.batch_size]
        if self.layout is None:
            self.layout = dg.layout(model, batches[0][:2])
        # Before any step BN's running statistics are still 0 and 1 and describe nothing:
        # at iteration 0 BN normalises with each batch's own statistics, as the first step does.
        bn = "batch" if iteration == 0 else "running"
        responses, identity = dg.forward_stats(model, self.layout, batches, batch_stats=bn == "batch")
        gradients, loss = dg.gradient_norms(model, self.layout, x, y)
        tagged, tables = {"epoch": epoch, "iteration": iteration}, {}
        for kind, rows, extra in (("responses", responses, {"bn": bn}), ("identity", identity, {"bn": bn}),
                                  ("gradients", gradients, {})):
            tables[kind] = [{**tagged, **row, **extra, **self.ids} for row in rows]
            self.run.append_rows(self.run.path / FILES[kind], tables[kind])
        self.pending.append(partial(self._each, "diagnostics", epoch, iteration, tables, loss))
        if self.s.step.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
