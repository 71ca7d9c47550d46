"""Weights & Biases logging of one run (``train.wandb=true``; pip install 'resexp[wandb]').

One W&B run per run folder, named after it (``resnet-56-s0``) and grouped by the
experiment's name. What it holds:

- config: the run's resolved config, as config.yaml holds it;
- every metrics.csv row as it is written (its columns as keys), and the live running
  means as ``live/loss``, ``live/err``, ``live/lr``, ``live/images_per_s``, all plotted
  against ``iteration`` (``define_metric("*", step_metric="iteration")``);
- each diagnostics measurement as three tables, ``diagnostics/responses``,
  ``diagnostics/gradients`` and ``diagnostics/identity``: the rows just appended to
  their CSVs, so a table's columns are the CSV's.

The W&B run's id is kept in the run folder's wandb-id.txt: a resumed run goes on in the
same W&B run (``resume="allow"``). W&B's files go under the run folder's ``wandb/``, its
cache, data and config folders too unless $WANDB_CACHE_DIR, $WANDB_DATA_DIR or
$WANDB_CONFIG_DIR say otherwise, so nothing lands in ~/.cache. ``train.wandb_mode=offline``
needs no network: ``wandb sync RUN/wandb/offline-run-*`` uploads later (docs/logging.md).
"""

from __future__ import annotations

import os
import secrets
import string

from omegaconf import OmegaConf

from resexp.errors import UserError
from resexp.inside.loggers import Logger, disk_errors
from resexp.run.folder import RunDir, writing
from resexp.run.safeio import real_dir

# W&B's own folders, kept in the run's wandb/ folder unless the user set them.
ENV_DIRS = {"WANDB_CACHE_DIR": "cache", "WANDB_DATA_DIR": "data", "WANDB_CONFIG_DIR": "config"}


def new_run_id() -> str:
    """A fresh W&B run id: 8 lowercase letters and digits, as W&B makes its own."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


class WandbLog(Logger):
    def __init__(self, cfg, run: RunDir):
        import wandb

        t, self.folder = cfg.train, run.path / "wandb"
        self.writes_to = self.folder
        run_id = run.read_wandb_id()  # DamagedFile unless a plain id
        with writing(self.folder):
            real_dir(self.folder)  # never a link planted in a received folder
            self.env_set = [var for var in ENV_DIRS if var not in os.environ]
            for var in self.env_set:
                os.environ[var] = str(real_dir(self.folder / ENV_DIRS[var]))
        if run_id is None:
            run_id = new_run_id()
            run.write_wandb_id(run_id)  # before the W&B run exists: a crash cannot leave one unnamed
        self.run = None
        try:
            with writing(self.folder):
                self.run = wandb.init(
                    project=t.wandb_project, entity=t.wandb_entity, tags=list(t.wandb_tags) or None,
                    name=run.name, group=str(cfg.name), config=OmegaConf.to_container(cfg, resolve=True),
                    id=run_id, resume="allow", dir=str(run.path), mode=t.wandb_mode,
                    settings=wandb.Settings(console="off"))
        except wandb.errors.Error as err:
            self._restore_env()
            lines = str(err).strip().splitlines() or [type(err).__name__]
            raise UserError(f"W&B could not start the run {run.name}: {lines[0]} "
                            f"(without a network: train.wandb_mode=offline)") from None
        except BaseException:
            self._restore_env()
            raise
        self.run.define_metric("iteration")
        self.run.define_metric("*", step_metric="iteration")

    @disk_errors
    def live(self, iteration: int, scalars: dict) -> None:
        self.run.log({**{f"live/{k}": v for k, v in scalars.items()}, "iteration": iteration})

    @disk_errors
    def epoch(self, row: dict, last: bool) -> None:
        self.run.log(dict(row))

    @disk_errors
    def diagnostics(self, epoch: int, iteration: int, tables: dict[str, list[dict]], loss: float) -> None:
        import wandb

        logged = {f"diagnostics/{kind}": wandb.Table(columns=list(rows[0]), data=[list(r.values()) for r in rows])
                  for kind, rows in tables.items() if rows}
        self.run.log({**logged, "diagnostics/fixed_batch_loss": loss, "iteration": iteration})

    def close(self, failed: bool = False) -> None:
        try:
            if self.run is not None:
                with writing(self.folder):
                    self.run.finish(exit_code=1 if failed else 0)
                self.run = None
        finally:
            self._restore_env()

    def _restore_env(self) -> None:
        """Unset the W&B folders this run set: the next run of a sweep sets its own."""
        for var in self.env_set:
            os.environ.pop(var, None)
        self.env_set = []
