"""TensorBoard events of one run, written next to its CSVs (which stay the source of truth).

``tensorboard --logdir results/NAME`` then shows every run of a sweep, named by its folder.
Tags:

- ``live/loss``, ``live/err``, ``live/lr``, ``live/images_per_s``: the running means of
  the epoch so far, every ``train.log_every`` iterations (x axis: iteration);
- ``epoch/<column>``: every column of each metrics.csv row (x axis: iteration);
- ``responses/epoch_NNNN``, ``gradients/weight_epoch_NNNN``,
  ``gradients/block_output_epoch_NNNN``, ``identity/branch_ratio_epoch_NNNN``: one
  diagnostics measurement as a curve over the layer (or block) index, the x axis of Fig. 7;
- ``final/train_err``, ``final/test_err``: the last epoch's errors, once the run is done (no
  ``final/test_err`` where the dataset has no test split: ``epoch/val_err`` is its held-out error).

For TensorBoard's HParams view, the run's first start with TensorBoard on also writes one
hparams record into its own event file: the settings that change what it computes,
flattened (``model.depth``, ``train.lr``, ``dataset.name``, ...; scalars only, null ones
left out) and the experiment's ``name``, with the two ``final/`` tags as its metrics; the
status ``success`` comes with the final errors.

Resumes and stops: each start opens a new event file in the run folder and first reads,
with TensorBoard's own reader (EventAccumulator), what the earlier files hold. It writes
no scalar at a (tag, step) they hold, nor a second hparams record, so every point is in
the folder once; Monitor hands it every kept metrics.csv row again, so a row a killed
start never flushed is written now. No ``purge_step``: TensorBoard purges by step across
all tags, which would also cut the diagnostics curves, whose x axis is the layer index.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from omegaconf import OmegaConf

from resexp.inside.loggers import Logger
from resexp.run.folder import result_settings, writing

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
    flat = result_settings(OmegaConf.to_container(cfg, resolve=True))  # as config.yaml's clash check reads them
    return {"name": str(cfg.name), **{k: v for k, v in flat.items() if isinstance(v, (bool, int, float, str))}}


def held(run_dir: Path) -> tuple[dict[str, set[int]], set[str]]:
    """What TensorBoard shows of the event files in ``run_dir``: each scalar tag's steps, and
    the hparams tags present."""
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.plugins.hparams.metadata import PLUGIN_NAME

    events = ea.EventAccumulator(str(run_dir), size_guidance={ea.SCALARS: 0})  # 0: every point, no sampling
    events.Reload()  # a file a killed start left cut short is read up to its last whole record
    steps = {tag: {e.step for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    try:
        return steps, set(events.PluginTagToContent(PLUGIN_NAME))
    except KeyError:  # no hparams record
        return steps, set()


class TBLog(Logger):
    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.path = Path(run_dir)
        self.writes_to = self.path / EVENTS
        earlier = set(self.path.glob(EVENTS))  # an earlier start's, or one that failed before its first epoch
        self.steps, self.summaries = held(self.path) if earlier else ({}, set())
        threading.excepthook = _quiet_writer_thread
        with writing(self.writes_to):
            self.writer = SummaryWriter(log_dir=str(run_dir))
        self.own = set(self.path.glob(EVENTS)) - earlier

    def scalar(self, tag: str, value, step: int) -> None:
        """One point, unless an earlier event file holds this tag at this step."""
        if step not in self.steps.get(tag, ()):
            self.writer.add_scalar(tag, value, step)

    def summary(self, tag: str, summary) -> None:
        """An hparams summary (tag ``tag``), unless an earlier event file holds one."""
        if tag not in self.summaries:
            self.writer._get_file_writer().add_summary(summary)

    def live(self, iteration: int, scalars: dict) -> None:
        for key, value in scalars.items():
            self.scalar(f"live/{key}", value, iteration)

    def hparams(self, settings: dict) -> None:
        """The run's hparams record (``hparams_of``), unless an earlier start wrote one."""
        from tensorboard.plugins.hparams.metadata import EXPERIMENT_TAG, SESSION_START_INFO_TAG
        from torch.utils.tensorboard.summary import hparams

        experiment, start, _ = hparams(settings, dict.fromkeys(FINAL, 0.0))  # metrics: only their names
        self.summary(EXPERIMENT_TAG, experiment)
        self.summary(SESSION_START_INFO_TAG, start)
        self.writer.flush()

    def epoch(self, row: dict, last: bool = False) -> None:
        for key, value in row.items():
            if key not in ("epoch", "iteration"):
                self.scalar(f"epoch/{key}", value, int(row["iteration"]))
        if last:
            from tensorboard.plugins.hparams.metadata import SESSION_END_INFO_TAG
            from torch.utils.tensorboard.summary import hparams

            for tag, column in FINAL.items():
                if column in row:  # no test_err where the evaluated images are held-out training images
                    self.scalar(tag, row[column], int(row["iteration"]))
            self.summary(SESSION_END_INFO_TAG, hparams({}, {})[2])  # the session's end: success
        self.writer.flush()

    def curve(self, tag: str, rows: list[dict], x: str, y: str) -> None:
        for row in rows:
            self.scalar(tag, row[y], int(row[x]))

    def diagnostics(self, epoch: int, iteration: int, tables: dict[str, list[dict]], loss: float) -> None:
        suffix = f"epoch_{epoch:04d}"
        self.curve(f"responses/{suffix}", tables["responses"], "layer", "std")
        for kind in ("weight", "block_output"):
            rows = [r for r in tables["gradients"] if r["kind"] == kind]
            self.curve(f"gradients/{kind}_{suffix}", rows, "index", "norm")
        self.curve(f"identity/branch_ratio_{suffix}", tables["identity"], "block", "branch_ratio")
        self.scalar("diagnostics/fixed_batch_loss", loss, iteration)
        self.writer.flush()

    def close(self, failed: bool = False) -> None:
        self.writer.close()

    def discard(self) -> None:
        """This start did not get going: its event file goes."""
        with contextlib.suppress(Exception):
            self.writer.close()
        for file in self.own:
            file.unlink(missing_ok=True)
