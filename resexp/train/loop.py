"""fit(): train one network from a resolved config into its run directory.

Read top to bottom: ``setup`` builds what a run trains (data, model, the step that
updates it, the schedule); ``fit`` skips a finished run, claims the folder, resumes, and
runs one loop over epochs: ``train_epoch`` (the one loop over batches, each a
``step(x, y, lr)``), the clean evaluations (``epoch_row``), the metrics row, then the
checkpoint. Below it, in the order fit() uses them, the pieces; at the end, resuming.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from resexp import __version__
from resexp.data import Data, eval_batches, iters_per_epoch, load_data, train_batches
from resexp.errors import UserError
from resexp.inside.monitor import Monitor
from resexp.models import count_params, get_model
from resexp.models.footprint import check_fits, device_of as pick_device
from resexp.run.files import CLEAN_TRAIN_COLUMNS, log_columns
from resexp.run.folder import (
    VAL_COLUMNS,
    CannotWrite,
    Lock,
    Log,
    RunBusy,
    RunDir,
    RunState,
    git_commit,
    now,
    Origin,
    run_name,
)
from resexp.train import checkpoint, extend, threads
from resexp.train.environment import describe, make_deterministic
from resexp.train.schedule import Schedule, make_schedule
from resexp.train.step import Step, make_step


def build_model(cfg) -> torch.nn.Module:
    """``cfg``'s network for its dataset's images (on the CPU)."""
    ds = cfg.dataset
    return get_model(**cfg.model, in_channels=ds.channels, num_classes=ds.num_classes, image_size=ds.image_size)


def make_progress(console: Console | None = None) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[stats]}"),
                    console=console, transient=True)


@dataclass
class Setup:
    """What one run trains, built once: the data, the model, the step that updates it (the
    one owner of device, forward, autocast, layout and optimizer: resexp/train/step.py) and
    the schedule that says for how long and at which lr; the CPU thread count and why."""
    data: Data
    step: Step
    schedule: Schedule
    threads: threads.Threads

    @property
    def model(self) -> torch.nn.Module:
        return self.step.model


def setup(cfg, data: Data | None = None, graphed: bool | None = None, jobs: int = 1) -> Setup:
    """Data (loaded unless given), model, training step and schedule for ``cfg``, one of
    ``jobs`` runs training at once on this machine.
    ``graphed`` overrides ``train.cuda_graphs`` (False: eager; True on the CPU: the graphed
    step's code without the capture)."""
    t = cfg.train
    device = pick_device(t.device)
    check_fits(cfg, device)  # a model too big for this device is one line, before any data or folder
    chosen = threads.decide(t.threads, jobs, device.type)  # once: the count never changes mid-run
    torch.set_num_threads(chosen.count)
    torch.manual_seed(cfg.seed)  # model init; data order is seeded per epoch (resexp/data/load.py)
    data = data if data is not None else load_data(cfg.dataset, device)
    model = build_model(cfg).to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv kernels once
    make_deterministic(bool(t.deterministic))  # after the benchmark flag: it wins when on
    step = make_step(t, model, device, graphed)
    ipe = iters_per_epoch(len(data.train), t.batch_size, t.drop_last)
    return Setup(data, step, make_schedule(t, ipe, cfg.model.depth), chosen)


def fit(cfg, out_dir: Path, progress: Progress | None = None, console: Console | None = None,
        on_epoch: Callable[[int], None] | None = None, jobs: int = 1, planned: RunState | None = None,
        origin: Origin | None = None) -> dict:
    """Train (or resume, or skip if finished) the run ``cfg`` describes; return its summary.
    RunBusy if another live process trains it. ``on_epoch(iteration)`` is called after
    every finished epoch (a sweep's ETA uses it); ``jobs`` runs train at once here (a sweep's
    --jobs); ``planned``: the run's state as a sweep's plan read it (else it is read here)."""
    console = console or Console(stderr=True, soft_wrap=True)
    # origin: how it was asked for (command.yaml) and its folder's name, which a sweep's extra axes lengthen
    run = RunDir(Path(out_dir) / (origin and origin.name or run_name(cfg.model.arch, cfg.model.depth, cfg.seed)))
    if (finished := _finished(run, cfg, planned or run.state(), console, busy_check=True)) is not None:
        return finished
    s = setup(cfg, jobs=jobs)  # data and model first: a run that cannot start leaves no folder behind
    shown = contextlib.nullcontext(progress) if progress is not None else make_progress(console)  # a sweep's, or own
    with run.claim(cfg.train.stale_after) as lock, shown as progress:
        found = run.state()  # again, under the lock: another trainer may have finished it while the data loaded
        if (finished := _finished(run, cfg, found, console)) is not None:
            return finished
        at = resume(run, s, found, console)
        monitor = Monitor(cfg, run, s)  # diagnostics and loggers (resexp/inside/monitor.py)
        monitor.begin(at.epoch, at.iteration)  # first: a logger that cannot start leaves the folder as it was
        run.create(cfg)
        extended = extend.record(run, cfg, origin)  # command.yaml; a longer run's config.yaml (resexp/train/extend.py)
        summary = {**base_summary(cfg, s), "status": "running", "started": now(),
                   **at.summary_fields(s.data.evaluated_on), **extended}
        record = Recorder(run, s, lock, monitor, summary, console, on_epoch)
        with _failures_recorded(run, summary, monitor):
            run.write_summary(summary)
            while not at.over(s.schedule.total_iters):
                at = record.epoch(train_and_evaluate(cfg, s, at, progress, run.name, monitor.live))
        summary.update(status="diverged" if at.diverged else "done", finished=now(), error=None, **monitor.finish())
        run.write_summary(summary)
        if summary["status"] == "done" and not cfg.train.keep_checkpoint:
            run.checkpoint.unlink(missing_ok=True)
        return summary


# ---- the pieces of one epoch, in the order fit() uses them

def train_and_evaluate(cfg, s: Setup, at: Position, progress: Progress, name: str, on_live) -> dict:
    """The epoch after ``at``: its steps (with a progress bar, and ``on_live``: the loggers'
    live scalars), then its clean evaluations; returns its metrics.csv row."""
    epoch = at.epoch + 1
    task = progress.add_task(f"{name} epoch {epoch}/{s.schedule.epochs}", stats="",
                             total=min(s.schedule.iters_per_epoch, s.schedule.total_iters - at.iteration))

    def show(iteration: int, live: dict) -> None:  # what train_epoch calls every log_every steps
        progress.update(task, completed=iteration - at.iteration,
                        stats=f"loss {live['loss']:.3f} err {live['err']:.1f}% {live['images_per_s']:.0f} img/s")
        on_live(iteration, live)

    start = time.perf_counter()
    trained = train_epoch(cfg, s, epoch, at.iteration, show)
    row = epoch_row(cfg, s, epoch, trained, started=start, at=at)
    progress.remove_task(task)
    return row


def train_epoch(cfg, s: Setup, epoch: int, iteration: int, bar=None) -> dict:
    """One epoch of SGD from ``iteration``: the only loop over training batches (``resexp
    bench`` times this very function). Loss and error are summed on the device by the step
    and read once at the end (plus every ``log_every`` steps for ``bar``): no host sync per step."""
    s.model.train()
    s.step.reset()
    seen, start, lr = 0, time.perf_counter(), s.schedule.lr_at(iteration)
    for x, y in train_batches(s.data, cfg.train.batch_size, cfg.seed, epoch, cfg.train.drop_last):
        if iteration >= s.schedule.total_iters:
            break
        lr = s.schedule.lr_at(iteration)
        s.step(x, y, lr)
        seen, iteration = seen + len(y), iteration + 1
        if bar is not None and iteration % cfg.train.log_every == 0:
            mean_loss = s.step.loss_sum.item() / seen  # a sync point, once every log_every steps
            bar(iteration, {"loss": mean_loss, "err": 100 * s.step.wrong.item() / seen, "lr": lr,
                            "images_per_s": seen / (time.perf_counter() - start)})
            if not math.isfinite(mean_loss):
                break
    if s.step.device.type == "cuda":
        torch.cuda.synchronize(s.step.device)  # the run's device, which need not be the current one
    seconds = time.perf_counter() - start
    return {"iteration": iteration, "lr": lr, "train_loss": s.step.loss_sum.item() / max(seen, 1),
            "train_err": 100.0 * s.step.wrong.item() / max(seen, 1), "train_seconds": seconds,
            "images_per_s": seen / seconds if seconds > 0 else float("nan")}


@torch.no_grad()
def evaluate(cfg, s: Setup, split) -> tuple[float, float]:
    """(mean loss, error %) on a clean split: eval-mode BN, no augmentation, the step's
    forward, autocast and layout."""
    s.model.eval()
    loss_sum = torch.zeros((), device=s.step.device)
    wrong = torch.zeros((), device=s.step.device, dtype=torch.long)
    for x, y in eval_batches(s.data, split, cfg.train.eval_batch_size):
        with s.step.autocast():
            out = s.step.forward(s.step.layout(x))
        loss_sum += F.cross_entropy(out.float(), y, reduction="sum")
        wrong += (out.argmax(1) != y).sum()
    return loss_sum.item() / len(split), 100.0 * wrong.item() / len(split)


def epoch_row(cfg, s: Setup, epoch: int, trained: dict, started: float, at: Position) -> dict:
    """The metrics.csv row of ``epoch``: what ``train_epoch`` returned, then the clean
    evaluations (test, or val where the held-out images take the test split's place; validation
    and the clean training set where asked for). The epoch's seconds run from ``started``
    (time.perf_counter) to the end of the evaluations."""
    held = s.data.evaluated_on
    row = {"epoch": epoch, "iteration": trained["iteration"], "lr": trained["lr"],
           "train_loss": trained["train_loss"], "train_err": trained["train_err"]}
    row[f"{held}_loss"], row[f"{held}_err"] = evaluate(cfg, s, s.data.test)
    if s.data.val is not None:
        row["val_loss"], row["val_err"] = evaluate(cfg, s, s.data.val)
    if cfg.train.eval_train:  # the clean training set in eval mode, beside Fig. 6's minibatch error
        row["clean_train_loss"], row["clean_train_err"] = evaluate(cfg, s, s.data.train)
    took = time.perf_counter() - started
    row.update(seconds=took, images_per_s=trained["images_per_s"], elapsed=at.elapsed + took)
    return {k: row[k] for k in log_columns(held) + (VAL_COLUMNS if s.data.val is not None else [])
            + (CLEAN_TRAIN_COLUMNS if cfg.train.eval_train else [])}


@contextlib.contextmanager
def _failures_recorded(run: RunDir, summary: dict, monitor: Monitor):
    """A failure inside the epoch loop is recorded in summary.json for ``resexp status``,
    then re-raised for the caller to report; a RunBusy leaves the files alone: the run is
    another process's now."""
    try:
        yield
    except (RunBusy, KeyboardInterrupt, SystemExit):  # another process's run now, or a stop: SIGINT/TERM/USR2
        monitor.finish(failed=True)
        raise
    except Exception as err:
        monitor.finish(failed=True)
        run.record_failure(summary, err.record() if isinstance(err, CannotWrite) else f"{type(err).__name__}: {err}")
        raise


def base_summary(cfg, s: Setup) -> dict:
    """summary.json's keys that are known before the first step."""
    return {
        "arch": cfg.model.arch, "depth": cfg.model.depth, "seed": cfg.seed,
        "dataset": cfg.dataset.name, "synthetic": bool(cfg.dataset.synthetic), "params": count_params(s.model),
        "experiment": cfg.name, "schedule": s.schedule.describe(),
        "epochs_planned": s.schedule.epochs, "iterations_planned": s.schedule.total_iters,
        "image_size": s.data.image_size, "train_images": len(s.data.train),
        f"{s.data.evaluated_on}_images": len(s.data.test), "evaluated_on": s.data.evaluated_on,
        **describe(s.step.device, s.step.amp), **s.threads.record(), **s.step.summary(),  # train_step, graph_check
        "torch_version": torch.__version__, "resexp_version": __version__, "git_commit": git_commit(),
    }


@dataclass
class Position:
    """Where a run stands: its last finished epoch, the iteration and wall time at its
    end, and that epoch's metrics row (None before the first epoch)."""
    epoch: int = 0
    iteration: int = 0
    elapsed: float = 0.0
    row: dict | None = None

    @classmethod
    def after(cls, row: dict) -> Position:
        return cls(row["epoch"], row["iteration"], row["elapsed"], row)

    @property
    def diverged(self) -> bool:
        return self.row is not None and not math.isfinite(self.row["train_loss"])

    def over(self, total_iters: int) -> bool:
        """Nothing left to train: the schedule's last iteration is reached, or the loss blew up."""
        return self.iteration >= total_iters or self.diverged

    def summary_fields(self, evaluated_on: str) -> dict:
        """The summary.json keys that follow the log: always those of its last row. The held-out
        error is final_test_err, or final_val_err where ``evaluated_on`` says the evaluated
        images were held out of the training split (Data.evaluated_on)."""
        row = self.row or {}
        return {"epochs": self.epoch, "iterations": self.iteration, "final_train_err": row.get("train_err"),
                f"final_{evaluated_on}_err": row.get(f"{evaluated_on}_err"), "wall_seconds": self.elapsed}


@dataclass
class Recorder:
    """What a finished epoch leaves behind, in this order: the metrics row (only while this
    process still holds the run), the diagnostics, the checkpoint, the loggers, the summary,
    then the log line. The row goes before the checkpoint: a crash in between makes resume drop that
    row and redo the epoch, never skip one. A diverged epoch is logged but not checkpointed."""
    run: RunDir
    s: Setup
    lock: Lock
    monitor: Monitor
    summary: dict
    console: Console
    on_epoch: Callable[[int], None] | None = None

    def epoch(self, row: dict) -> Position:
        run, s = self.run, self.s
        self.lock.verify()  # never log an epoch of a run another process has taken over
        run.append_row(row)
        self.monitor.epoch(row, last=row["iteration"] >= s.schedule.total_iters)
        at = Position.after(row)
        # train_step: graphed, or eager after a failed check
        self.summary.update(at.summary_fields(s.data.evaluated_on), **s.step.summary())
        if at.diverged:
            self.console.print(epoch_line(run.name, s, row), markup=False)
            self.console.print(f"{run.name}: loss is not finite at epoch {at.epoch}: diverged", markup=False)
            return at
        checkpoint.save(run, {"model": s.model.state_dict(), "optimizer": s.step.optimizer.state_dict(),
                              "epoch": at.epoch, "iteration": at.iteration, "elapsed": at.elapsed})
        self.monitor.saved()  # the loggers get the row once the checkpoint covers it
        run.write_summary(self.summary)
        # Printed once saved: a stop after this line ("finished epochs are saved") loses no epoch it showed.
        self.console.print(epoch_line(run.name, s, row), markup=False)
        if self.on_epoch is not None:
            self.on_epoch(at.iteration)
        return at


def resume(run: RunDir, s: Setup, found: RunState, console: Console) -> Position:
    """Where to go on from, with the model and optimiser loaded: the checkpoint's epoch,
    or the start (``found``: the folder's state, read under the lock). Rows after the
    checkpoint, in metrics.csv and in the diagnostics files, and a last line cut short, are
    dropped: that epoch is redone identically. A log that does not reach the checkpoint (or
    is damaged) cannot be trusted: the run starts again with its old files set aside, never
    with a hole in its log."""
    state = checkpoint.load(run, map_location=s.step.device)  # UserError if unreadable, before any change
    if found.log is None:
        return _start_again(run, console, f"metrics.csv {found.unreadable['metrics.csv']}")
    log = found.log
    if state is None:
        return _without_checkpoint(run, s, log, console)
    row = next((r for r in log.rows if r["epoch"] == state["epoch"]), None)
    if row is None or row["iteration"] != state["iteration"]:
        return _start_again(run, console, f"metrics.csv has {len(log.rows)} epochs but checkpoint.pt "
                                          f"is at epoch {state['epoch']}")
    try:
        s.step.load_state_dict(state)  # into the tensors a captured graph uses
    except (KeyError, RuntimeError, ValueError) as err:
        raise UserError(f"checkpoint {run.checkpoint} does not match this model ({type(err).__name__}); "
                        f"delete it to restart the run") from err
    if log.torn:
        console.print(f"{run.name}: the last line of metrics.csv was cut short: removed, that epoch is redone",
                      markup=False)
    run.keep_rows_until(state["epoch"])
    console.print(f"{run.name}: resuming after epoch {state['epoch']} (iteration {state['iteration']})", markup=False)
    return Position(state["epoch"], state["iteration"], state["elapsed"], row)


def _without_checkpoint(run: RunDir, s: Setup, log: Log, console: Console) -> Position:
    """A log but no checkpoint: a run that finished and deleted its checkpoint
    (train.keep_checkpoint=false) is taken as its log says; any other starts again. A run
    with no epoch yet starts from nothing: what a killed start left (a header, the
    diagnostics of iteration 0) goes."""
    at = Position.after(log.rows[-1]) if log.rows else Position()
    if at.epoch == 0 or at.over(s.schedule.total_iters):
        run.keep_rows_until(at.epoch)
        return at
    return _start_again(run, console, "metrics.csv has rows but there is no checkpoint.pt to go on from")


def _start_again(run: RunDir, console: Console, why: str) -> Position:
    aside = run.set_aside()
    console.print(f"{run.name}: {why}; training it again from epoch 1 (the old files are kept in {aside})",
                  markup=False)  # the reason quotes a damaged file: text from the folder
    return Position()


def _finished(run: RunDir, cfg, state: RunState, console: Console, busy_check: bool = False) -> dict | None:
    """The summary of a finished run (``state``), which is skipped; None if the run is to be
    trained. UserError if it is damaged beyond what resume repairs, or was started with
    other settings; RunBusy (with ``busy_check``) while another live process trains it."""
    if not state.trainable and not state.finished:
        raise UserError(f"{run.path} is damaged: {state.problem}; {state.advice}")
    extends = extend.lengthening(run, cfg, state)  # UserError for other settings (resexp/train/extend.py)
    if state.finished and extends is None:
        console.print(f"{run.name}: already {state.status}, skipped", markup=False)
        return state.summary
    if busy_check and state.status == "running":
        raise RunBusy(f"{run.path} is being trained by {state.owner.describe()}")
    return None


# How the log line names each held-out evaluation (Data.evaluated_on).
EVALUATED_ON = {"test": "test err", "val": "val err (held-out training images)"}


def epoch_line(name: str, s: Setup, row: dict) -> str:
    held = s.data.evaluated_on
    return (f"{name} epoch {row['epoch']}/{s.schedule.epochs} it {row['iteration']} lr {row['lr']:g} "
            f"train loss {row['train_loss']:.4f} err {row['train_err']:.2f}% | "
            f"{EVALUATED_ON[held]} {row[f'{held}_err']:.2f}% | {row['images_per_s']:.0f} img/s")
