"""The Python API: what the `resexp` commands do, as functions a notebook or script calls.

resexp.sweep, resexp.train, resexp.load_runs, resexp.load_metrics, resexp.load_diagnostics,
resexp.plot and resexp.report (docs/python-api.md). They take what the commands take, in
Python's forms: a sweep axis as a list or a comma-separated string, overrides as a list of
"key=value" strings or a dict. They return data (outcomes with short reprs and notebook
tables, DataFrames, matplotlib Figures) and raise resexp.errors.UserError where the command
would print its one-line error and exit 2. In a notebook a sweep or a run shows one live
progress display; elsewhere they print nothing unless ``progress=True``.
Each imports its module on first call, so `import resexp` stays light.
"""

from __future__ import annotations

import base64
import contextvars
import html
import io
import sys
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from resexp.errors import UserError


def sweep(archs=None, depths=None, seeds=None, overrides=None, out=None, *, config_dirs=None,
          jobs: int | None = None, launcher: str | None = None, wait: bool = False, dry_run: bool = False,
          progress: bool | None = None):
    """Train every (arch, depth, seed) not yet finished, as `resexp sweep` does.

    archs, depths, seeds: lists or comma-separated strings ("plain,resnet", [20, 56], "0,1");
        None takes the saved sweep's, else the experiment's.
    overrides: "key=value" strings as on the command line, or a dict ({"train.epochs": 2}).
    out: the results folder (default results/<experiment name>). The sweep is saved as
        <out>/sweep.yaml: a second call with the same ``out`` resumes it.
    config_dirs: one config folder or a list, searched before the shipped configs (--config-dir).
    jobs: runs trained at once, each in a worker process; launcher: "local" or "slurm";
        wait: follow SLURM jobs until they end.
    dry_run: plan and estimate only; the outcome's ``plan`` is the table.
    progress: None shows one live progress display in a notebook and nothing elsewhere;
        True also prints the plan and each run's messages; False prints nothing.

    Returns a SweepOutcome: ``statuses`` ({run name: status}), ``plan`` (a DataFrame: run,
    arch, depth, seed, state, epochs done and planned, estimated seconds), ``exit_code``
    and ``summary_line()``. A run that fails does not raise: its status says so, and
    load_runs' ``error`` column says why. A mistake is a UserError."""
    from resexp.sweep.command import sweep as run

    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise UserError(f"jobs must be a whole number of at least 1, got {jobs!r}")
    overrides = [*as_overrides(overrides), *([f"launcher={launcher}"] if launcher else [])]
    return run(archs, depths, seeds, overrides, _path(out), _paths(config_dirs), jobs, wait, dry_run,
               _console(progress))


def train(overrides=None, out=None, *, config_dirs=None, progress: bool | None = None):
    """Train (or resume, or skip if finished) the one run the overrides describe, in this
    process, as `resexp train` does.

    overrides: "key=value" strings or a dict ({"model.depth": 20, "train.epochs": 2}).
    out: the results folder (default results/<experiment name>); the run's own folder is
        out/<arch>-<depth>-s<seed>.
    config_dirs: one config folder or a list (--config-dir).
    progress: None shows one live progress bar in a notebook and nothing elsewhere; True
        also prints each epoch's line; False prints nothing.

    Returns a TrainOutcome: ``summary`` (the run's summary.json), ``status``, ``run_dir``
    and ``summary_line()``. A mistake is a UserError."""
    from resexp.train.command import train as run

    return run(as_overrides(overrides), _path(out), _paths(config_dirs), _console(progress))


def load_runs(results_dir):
    """One row per run folder in results_dir, as a pandas DataFrame.

    Columns: run, arch, depth, seed, status (as `resexp status` sees it), epochs, the final
    errors, ... (docs/results-format.md), then the settings that shape a result, as each
    run's config.yaml holds them: train.lr, train.batch_size, train.epochs,
    train.iterations, train.milestones, train.weight_decay, the model.* options its arch
    takes, and every setting its sweep varied. A folder without runs is a UserError."""
    from resexp.analysis.results import load_runs as load

    return load(_path(results_dir))


def load_metrics(results_dir):
    """Every epoch of every run in results_dir as one long pandas DataFrame: run, arch,
    depth, seed, then metrics.csv's columns (epoch, iteration, lr, train_err, test_err, ...),
    then the same setting columns as load_runs. A run whose metrics.csv is damaged has no
    rows (load_runs says why)."""
    from resexp.analysis.results import load_metrics as load

    return load(_path(results_dir))


def load_diagnostics(results_dir, kind: str):
    """What the runs in results_dir measured inside their networks, as one pandas DataFrame:
    ``kind`` is "responses" (layer responses, He et al. Fig. 7), "gradients" or "identity",
    each row with its run, arch, depth, seed and ``point`` (init, epoch or end). Only the
    runs the figures average count; None when none of them has that file
    (train.diagnostics=off)."""
    from resexp.analysis.results import DIAGNOSTIC_KEYS, load_diagnostics as load

    if kind not in DIAGNOSTIC_KEYS:
        raise UserError(f"kind must be one of {', '.join(DIAGNOSTIC_KEYS)}, got {kind!r}")
    return load(_path(results_dir), kind)


def plot(results_dir, out=None, formats="png,pdf", train_error: str = "minibatch", zoom: float | None = None,
         best_by: str | None = None):
    """Draw the figures of results_dir, as `resexp plot` does, each with its CSV.

    out: the figure folder (default results_dir/figures).
    formats: a list or comma-separated string of png, pdf, svg.
    train_error: "minibatch" (He et al. Fig. 6's) or "clean" (needs train.eval_train=true).
    zoom: end the curves' error axis at this %.
    best_by: "val_err" draws each (arch, depth) of the depth figure at the value of the swept
    setting (train.lr=0.1,0.05) with the lowest final validation error (needs dataset.val_size).

    Returns Figures: a dict of name ("depth", "curves", ...) -> matplotlib Figure, which a
    notebook shows, and ``paths``, every file written."""
    from resexp.analysis.plot import make_figures

    made = make_figures(_path(results_dir), _path(out), formats, results=_load_and_warn(results_dir),
                        train_error=train_error, zoom=zoom, best_by=best_by)
    for line in made["warnings"]:  # a damaged diagnostics file, left out of its figure
        warnings.warn(line, stacklevel=2)
    return Figures(made["figures"], [Path(p) for p in made["paths"]])


class Figures(dict):
    """What resexp.plot returns: name -> matplotlib Figure, and ``paths``, the files written.
    A notebook shows every figure (as PNG, so it needs no matplotlib backend)."""

    def __init__(self, figures: dict, paths: list[Path]):
        super().__init__(figures)
        self.paths = paths

    def __repr__(self) -> str:
        where = f" in {self.paths[0].parent}" if self.paths else ""
        return f"<Figures {', '.join(self)}: {len(self.paths)} files{where}>"

    def _repr_html_(self) -> str:
        return "".join(f"<figure><img src='data:image/png;base64,{_png(figure)}'>"
                       f"<figcaption>{html.escape(name)}</figcaption></figure>" for name, figure in self.items())


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return base64.b64encode(buffer.getvalue()).decode()


@dataclass(repr=False)
class Report:
    """What resexp.report returns; a notebook shows it as its Markdown."""
    table: object     # the numbers (= report.csv), a pandas DataFrame
    markdown: str     # report.md's text
    paths: list[Path]  # report.md and report.csv

    def _repr_markdown_(self) -> str:
        return self.markdown

    def __str__(self) -> str:
        return self.markdown

    def __repr__(self) -> str:
        where = f" in {self.paths[0].parent}" if self.paths else ""
        return f"<Report: {len(self.table)} rows (arch x depth){where}>"


def report(results_dir, out=None, train_error: str = "minibatch", best_by: str | None = None) -> Report:
    """Write report.md and report.csv into ``out`` (default results_dir), as `resexp report`
    does: every (arch, depth) beside He et al.'s Table 6 for CIFAR-10.

    train_error: "minibatch" (He et al. Fig. 6's) or "clean" (needs train.eval_train=true).
    best_by: "val_err" for each (arch, depth) at the value of the swept setting with the lowest
    final validation error (needs dataset.val_size), as plot's.
    Returns a Report: ``table`` (report.csv's DataFrame), ``markdown`` (report.md's text,
    what a notebook shows) and ``paths``."""
    from resexp.analysis.report import make_report

    where = _path(out) if out is not None else _path(results_dir)
    table, markdown = make_report(_path(results_dir), where, results=_load_and_warn(results_dir),
                                  train_error=train_error, best_by=best_by)
    return Report(table, markdown, [where / "report.md", where / "report.csv"])


def as_overrides(overrides) -> list[str]:
    """Hydra overrides from a list of "key=value" strings, one such string, or a dict
    ({"train.epochs": 2, "train.milestones": [1]} -> ["train.epochs=2", "train.milestones=[1]"]).
    A dict's string values are written as given: Hydra's syntax, quotes included."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        return [overrides]
    if isinstance(overrides, Mapping):
        return [f"{key}={_hydra_value(value)}" for key, value in overrides.items()]
    items = list(overrides)
    wrong = [o for o in items if not isinstance(o, str)]
    if wrong:
        raise UserError(f"overrides takes 'key=value' strings or a dict, got {wrong[0]!r}")
    return items


def _hydra_value(value) -> str:
    """A Python value as Hydra's override grammar writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(_hydra_value, value)) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _path(value) -> Path | None:
    return None if value is None else Path(value).expanduser()


def _paths(values) -> list[Path]:
    """Config folders: None, one folder (a str or Path), or a list of them."""
    if values is None:
        return []
    if isinstance(values, (str, Path)):
        return [_path(values)]
    return [_path(v) for v in values]


def _load_and_warn(results_dir):
    """results_dir read once (resexp.analysis.results.Results), with a warning per damaged run
    (the commands print each as a line on stderr)."""
    from resexp.analysis.results import damage_warnings, read_results

    results = read_results(_path(results_dir))
    for line in damage_warnings(results.runs):
        warnings.warn(line, stacklevel=3)
    return results


# --------------------------------------------------------------------------- progress
def _console(progress: bool | None) -> Console:
    """Where the plan, the progress bars and the runs' messages go. Never rich's Jupyter mode:
    its live display needs ipywidgets (and warns where they are missing); in a notebook the
    NotebookConsole shows it instead. No highlighting: digits in run names stay plain."""
    notebook = in_notebook()
    if notebook and progress is not False:
        return NotebookConsole(lines=progress is True)
    if progress:
        return Console(stderr=True, soft_wrap=True, highlight=False, force_jupyter=False)
    return Console(quiet=True, force_jupyter=False)


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (IPython with a kernel; a terminal IPython has none)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


class NotebookConsole(Console):
    """A notebook cell's console: rich's live display (a sweep's bars) as one text output that
    IPython updates in place twice a second, and, with ``lines``, the plan and the runs'
    messages as plain text on stdout. To rich it is not a terminal, so rich itself draws no
    live display here; this class draws what the live display holds."""

    REFRESH_S = 0.5

    def __init__(self, lines: bool):
        super().__init__(file=None, quiet=not lines, force_jupyter=False, force_terminal=False,
                         highlight=False, soft_wrap=True)
        self._lives, self._handle, self._stop = [], None, threading.Event()
        self._thread: threading.Thread | None = None

    def set_live(self, live):
        top = super().set_live(live)  # rich 14 nests live displays (and says whether this is the first), 13 does not
        self._lives.append(live)
        if len(self._lives) == 1:  # rich draws nested live displays as part of the first one
            from IPython.display import display

            self._handle = display({"text/plain": self._text()}, raw=True, display_id=True)
            self._stop.clear()
            # the cell's context goes with the thread: ipykernel sends its updates to this cell
            self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._refresh,),
                                            daemon=True)
            self._thread.start()
        return top

    def clear_live(self) -> None:
        if len(self._lives) == 1:  # the first, whose set_live started the thread
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._handle.update({"text/plain": self._text()}, raw=True)  # as it ended
        self._lives.pop()
        super().clear_live()

    def _refresh(self) -> None:
        while not self._stop.wait(self.REFRESH_S):
            self._handle.update({"text/plain": self._text()}, raw=True)

    def _text(self) -> str:
        """The first live display (the others nested in it) as plain text."""
        plain = Console(file=io.StringIO(), width=100, color_system=None, force_jupyter=False,
                        force_terminal=False, highlight=False)
        plain.print(self._lives[0].renderable)
        return plain.file.getvalue().rstrip()
