"""TensorBoard events of one run, written next to its CSVs (which stay the source of truth).

``tensorboard --logdir results/NAME`` then shows every run of a sweep, named by its folder.
Tags:

- ``live/loss``, ``live/err``, ``live/lr``, ``live/images_per_s``: the running means of
  the epoch so far, every ``train.log_every`` iterations (x axis: iteration);
- ``epoch/<column>``: every column of each metrics.csv row (x axis: iteration);
- ``responses/epoch_NNNN``, ``gradients/weight_epoch_NNNN``,
  ``gradients/block_output_epoch_NNNN``, ``identity/branch_ratio_epoch_NNNN``: one
  diagnostics measurement as a curve over the layer (or block) index, the x axis of Fig. 7;
- ``final/train_err``, ``final/test_err``: the last epoch's errors, once the run is done.

For TensorBoard's HParams view, a fresh run also writes one hparams record into its own
event file: the settings that change what it computes, flattened (``model.depth``,
``train.lr``, ``dataset.name``, ...; scalars only, null ones left out) and the
experiment's ``name``, with the two ``final/`` tags as its metrics. A resumed run writes
none (its first start did), and the status ``success`` comes with the final errors.
"""

from __future__ import annotations

import threading
from pathlib import Path

from omegaconf import OmegaConf

from resexp.inside.loggers import Logger, disk_errors
from resexp.run.folder import writing
from resexp.settings.schema import non_result_keys

# The HParams view's metrics: scalar tags written at the run's last epoch.
FINAL = {"final/train_err": "train_err", "final/test_err": "test_err"}
EVENTS = "events.out.tfevents.*"


def _quiet_writer_thread(args) -> None:
    """threading.excepthook: TensorBoard's writer thread keeps its error and raises it again
    in this thread at the next write or flush (CannotWrite below), so its own traceback
    would only print the same error twice, the second time as a traceback."""
    if type(args.thread).__name__ != "_AsyncWriterThread":
        _default_hook(args)


_default_hook = threading.excepthook


def hparams_of(cfg) -> dict:
    """The run's settings that change what it computes, flattened to dotted keys, scalars
    only (lists and nulls left out), plus the experiment's name: the HParams view's columns."""
    skip = non_result_keys()
    flat = {"name": str(cfg.name)}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            full = f"{prefix}{key}"
            if any(full == k or full.startswith(k + ".") for k in skip):
                continue
            if isinstance(value, dict):
                walk(value, full + ".")
            elif isinstance(value, (bool, int, float, str)):
                flat[full] = value

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def _holds_hparams(files: list[Path]) -> bool:
    """Whether any of these event files already holds an hparams record."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams.metadata import SESSION_START_INFO_TAG

    for file in files:
        for event in EventFileLoader(str(file)).Load():
            if any(value.tag == SESSION_START_INFO_TAG for value in event.summary.value):
                return True
    return False


class TBLog(Logger):
    def __init__(self, run_dir: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.path = Path(run_dir)
        self.writes_to = self.path / EVENTS
        self.earlier = sorted(self.path.glob(EVENTS))  # a start that failed before its first epoch left some
        threading.excepthook = _quiet_writer_thread
        with writing(self.writes_to):
            # purge_step: a resumed run drops the events it logged after its checkpoint.
            self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)

    @disk_errors
    def live(self, iteration: int, scalars: dict) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(f"live/{key}", value, iteration)

    @disk_errors
    def hparams(self, settings: dict) -> None:
        """The run's hparams record (``hparams_of``), unless an earlier start wrote one."""
        from torch.utils.tensorboard.summary import hparams

        if _holds_hparams(self.earlier):
            return
        experiment, start, _ = hparams(settings, dict.fromkeys(FINAL, 0.0))  # metrics: only their names
        for summary in (experiment, start):
            self.writer._get_file_writer().add_summary(summary)
        self.writer.flush()

    @disk_errors
    def epoch(self, row: dict, last: bool = False) -> None:
        for key, value in row.items():
            if key not in ("epoch", "iteration"):
                self.writer.add_scalar(f"epoch/{key}", value, int(row["iteration"]))
        if last:
            from torch.utils.tensorboard.summary import hparams

            for tag, column in FINAL.items():
                self.writer.add_scalar(tag, row[column], int(row["iteration"]))
            self.writer._get_file_writer().add_summary(hparams({}, {})[2])  # the session's end: success
        self.writer.flush()

    def curve(self, tag: str, rows: list[dict], x: str, y: str) -> None:
        for row in rows:
            self.writer.add_scalar(tag, row[y], int(row[x]))

    @disk_errors
    def diagnostics(self, epoch: int, iteration: int, tables: dict[str, list[dict]], loss: float) -> None:
        suffix = f"epoch_{epoch:04d}"
        self.curve(f"responses/{suffix}", tables["responses"], "layer", "std")
        for kind in ("weight", "block_output"):
            rows = [r for r in tables["gradients"] if r["kind"] == kind]
            self.curve(f"gradients/{kind}_{suffix}", rows, "index", "norm")
        self.curve(f"identity/branch_ratio_{suffix}", tables["identity"], "block", "branch_ratio")
        self.writer.add_scalar("diagnostics/fixed_batch_loss", loss, iteration)
        self.writer.flush()

    @disk_errors
    def close(self, failed: bool = False) -> None:
        self.writer.close()
