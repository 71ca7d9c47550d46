"""Weights & Biases logging of one run (``train.wandb=true``; pip install 'resexp[wandb]').

One W&B run per run folder, named after it (``resnet-56-s0``) and grouped by the
experiment's name. What it holds:

- config: the run's resolved config, as config.yaml holds it;
- every metrics.csv row (its columns as keys), and the live running means as
  ``live/loss``, ``live/err``, ``live/lr``, ``live/images_per_s``, all plotted against
  ``iteration`` (``define_metric("*", step_metric="iteration")``);
- each diagnostics measurement as three tables, ``diagnostics/responses``,
  ``diagnostics/gradients`` and ``diagnostics/identity``: the rows just appended to
  their CSVs, so a table's columns are the CSV's.

The W&B run's id is kept in the run folder's wandb-id.txt: a resumed start goes on in the
same W&B run (``resume="allow"``). It first reads the transaction logs the run's earlier
starts left (resexp/inside/wandb_file.py) and logs no record they hold (a metrics row by its
epoch, the live means and a measurement by their iteration); its ``_step`` goes on after
theirs. Monitor hands it every kept metrics.csv row again, so a row a killed start never
got into its file is logged now, and each row is in the run's files once.

W&B's own environment applies ($WANDB_MODE, $WANDB_PROJECT, $WANDB_ENTITY, $WANDB_DIR)
unless train.wandb_mode, train.wandb_project or train.wandb_entity sets the same thing.
W&B's files go under the run folder's ``wandb/`` (under $WANDB_DIR/wandb/ if that is set),
its cache, data and config folders too unless $WANDB_CACHE_DIR, $WANDB_DATA_DIR or
$WANDB_CONFIG_DIR say otherwise, so nothing lands in ~/.cache. A start W&B refuses
(no API key, no network) is one line, and leaves nothing behind (``discard``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import string
from pathlib import Path

from omegaconf import OmegaConf

from resexp.errors import UserError
from resexp.inside.loggers import Logger
from resexp.inside.wandb_file import history
from resexp.run.folder import RunDir, writing
from resexp.run.safeio import real_dir

# W&B's own folders, kept in the run's wandb/ folder unless the user set them.
ENV_DIRS = {"WANDB_CACHE_DIR": "cache", "WANDB_DATA_DIR": "data", "WANDB_CONFIG_DIR": "config"}
PROJECT = "resexp"  # without train.wandb_project and $WANDB_PROJECT


def new_run_id() -> str:
    """A fresh W&B run id: 8 lowercase letters and digits, as W&B makes its own."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def init_args(cfg, run: RunDir, run_id: str) -> dict:
    """wandb.init's arguments. None leaves a setting to W&B's environment and defaults."""
    t, project = cfg.train, cfg.train.wandb_project
    if project is None and not os.environ.get("WANDB_PROJECT"):
        project = PROJECT
    return dict(project=project, entity=t.wandb_entity, mode=t.wandb_mode,
                dir=None if os.environ.get("WANDB_DIR") else str(run.path),
                tags=list(t.wandb_tags) or None, name=run.name, group=str(cfg.name),
                config=OmegaConf.to_container(cfg, resolve=True), id=run_id, resume="allow")


def kind(row: dict) -> tuple:
    """What one logged record is, as a resumed start recognises it in an earlier file."""
    if "epoch" in row:
        return "epoch", int(row["epoch"])
    if "diagnostics/fixed_batch_loss" in row:
        return "diagnostics", int(row["iteration"])
    return "live", int(row.get("iteration", -1))


class WandbLog(Logger):
    def __init__(self, cfg, run: RunDir):
        import wandb

        self.folder, self.made, self.env_set, self.run = run.path / "wandb", [], [], None
        self.before = None  # wandb/'s entries before this start, once known
        self.writes_to = self.folder
        run_id = run.read_wandb_id()  # DamagedFile unless a plain id
        try:
            with writing(self.folder):
                if not self.folder.exists():
                    self.made.append(self.folder)
                self.before = set(real_dir(self.folder).iterdir())  # never a link planted in a received folder
                self.env_set = [var for var in ENV_DIRS if var not in os.environ]
                for var in self.env_set:
                    os.environ[var] = str(real_dir(self.folder / ENV_DIRS[var]))
                if run_id is None:
                    run_id = new_run_id()
                    run.write_wandb_id(run_id)  # before the W&B run exists: a crash cannot leave one unnamed
                    self.made.append(run.wandb_id_file)
                self.run = wandb.init(**init_args(cfg, run, run_id), settings=wandb.Settings(console="off"))
            self.held, self.step = self._read_back(run_id)
        except wandb.errors.Error as err:
            self.discard()
            lines = str(err).strip().splitlines() or [type(err).__name__]
            raise UserError(f"W&B could not start the run {run.name}: {lines[0]} "
                            f"(without a network: train.wandb_mode=offline)") from None
        except BaseException:
            self.discard()
            raise
        self.run.define_metric("iteration")
        self.run.define_metric("*", step_metric="iteration")

    def _read_back(self, run_id: str) -> tuple[set, int]:
        """What the run's earlier transaction logs hold (``kind`` of each record), and the
        ``_step`` this start goes on from."""
        if self.run.disabled:
            return set(), 0
        own = Path(self.run.settings.sync_file).resolve()
        held, last = set(), -1
        for file in sorted(Path(self.run.settings.wandb_dir).glob(f"*-{run_id}/run-{run_id}.wandb")):
            if file.resolve() != own:
                for row in history(file):
                    held.add(kind(row))
                    last = max(last, row["_step"])
        return held, max(self.run.step, last + 1)

    def _log(self, data: dict) -> None:
        """One record, unless an earlier start's file holds it; ``_step`` counted here, so a
        resumed start goes on after the earlier files (W&B restarts it at 0 offline)."""
        if kind(data) in self.held:
            return
        self.run.log(data, step=self.step, commit=True)
        self.step += 1

    def live(self, iteration: int, scalars: dict) -> None:
        self._log({**{f"live/{k}": v for k, v in scalars.items()}, "iteration": iteration})

    def epoch(self, row: dict, last: bool) -> None:
        self._log(dict(row))

    def diagnostics(self, epoch: int, iteration: int, tables: dict[str, list[dict]], loss: float) -> None:
        import wandb

        if ("diagnostics", iteration) in self.held:
            return
        logged = {f"diagnostics/{name}": wandb.Table(columns=list(rows[0]), data=[list(r.values()) for r in rows])
                  for name, rows in tables.items() if rows}
        self._log({**logged, "diagnostics/fixed_batch_loss": loss, "iteration": iteration})

    def close(self, failed: bool = False) -> None:
        try:
            if self.run is not None:
                self.run.finish(exit_code=1 if failed else 0)
                self.run = None
        finally:  # unset the W&B folders this run set: the next run of a sweep sets its own
            for var in self.env_set:
                os.environ.pop(var, None)
            self.env_set = []

    def discard(self) -> None:
        """This start did not get going: finish its W&B run if it began, then remove what
        the start created (its W&B folder, wandb-id.txt if new, wandb/ if new)."""
        started = None if self.run is None or self.run.disabled else Path(self.run.settings.sync_dir)
        with contextlib.suppress(Exception):
            self.close(failed=True)
        new = set()
        if self.before is not None and self.folder not in self.made and self.folder.is_dir():
            new = set(self.folder.iterdir()) - self.before
        for path in [*new, *([started] if started else []), *reversed(self.made)]:
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
