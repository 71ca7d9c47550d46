"""TensorBoard events of one run, written next to its CSVs (which stay the source of truth).

``tensorboard --logdir results/NAME`` then shows every run of a sweep, named by its folder.
Tags:

- ``live/loss``, ``live/err``, ``live/lr``, ``live/images_per_s``: the running means of
  the epoch so far, every ``train.log_every`` iterations (x axis: iteration);
- ``epoch/<column>``: every column of each metrics.csv row (x axis: iteration);
- ``responses/epoch_NNNN``, ``gradients/weight_epoch_NNNN``,
  ``gradients/block_output_epoch_NNNN``, ``identity/branch_ratio_epoch_NNNN``: one
  diagnostics measurement as a curve over the layer (or block) index, the x axis of Fig. 7.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

from resexp.run.folder import writing


def _quiet_writer_thread(args) -> None:
    """threading.excepthook: TensorBoard's writer thread keeps its error and raises it again
    in this thread at the next write or flush (CannotWrite below), so its own traceback
    would only print the same error twice, the second time as a traceback."""
    if type(args.thread).__name__ != "_AsyncWriterThread":
        _default_hook(args)


_default_hook = threading.excepthook


def _disk_errors(method):
    """A full or read-only disk under TensorBoard's writer is CannotWrite, one line, as for
    every other file of the run."""
    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        folder = self.__dict__.get("path") or Path(args[0])  # __init__: its run_dir argument
        with writing(folder / "events.out.tfevents.*"):
            return method(self, *args, **kwargs)
    return wrapped


class TBLog:
    @_disk_errors
    def __init__(self, run_dir: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.path = Path(run_dir)
        threading.excepthook = _quiet_writer_thread
        # purge_step: a resumed run drops the events it logged after its checkpoint.
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)

    @_disk_errors
    def live(self, iteration: int, scalars: dict) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(f"live/{key}", value, iteration)

    @_disk_errors
    def epoch(self, row: dict) -> None:
        for key, value in row.items():
            if key not in ("epoch", "iteration"):
                self.writer.add_scalar(f"epoch/{key}", value, int(row["iteration"]))
        self.writer.flush()

    def curve(self, tag: str, rows: list[dict], x: str, y: str) -> None:
        for row in rows:
            self.writer.add_scalar(tag, row[y], int(row[x]))

    @_disk_errors
    def diagnostics(self, epoch: int, iteration: int, responses, gradients, identity, loss: float) -> None:
        suffix = f"epoch_{epoch:04d}"
        self.curve(f"responses/{suffix}", responses, "layer", "std")
        for kind in ("weight", "block_output"):
            self.curve(f"gradients/{kind}_{suffix}", [r for r in gradients if r["kind"] == kind], "index", "norm")
        self.curve(f"identity/branch_ratio_{suffix}", identity, "block", "branch_ratio")
        self.writer.add_scalar("diagnostics/fixed_batch_loss", loss, iteration)
        self.writer.flush()

    @_disk_errors
    def close(self) -> None:
        self.writer.close()
