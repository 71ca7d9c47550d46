"""The Python API: what the `resexp` commands do, as functions a notebook or script calls.

resexp.sweep, resexp.train, resexp.load_runs, resexp.plot and resexp.report
(docs/python-api.md). They take what the commands take, in Python's forms: a sweep axis as
a list or a comma-separated string, overrides as a list of "key=value" strings or a dict.
They print nothing unless ``progress=True``, return data (outcomes, a DataFrame, paths), and
raise resexp.errors.UserError where the command would print its one-line error and exit 2.
Each imports its module on first call, so `import resexp` stays light.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from resexp.errors import UserError


def sweep(archs=None, depths=None, seeds=None, overrides=None, out=None, *, config_dirs=None,
          jobs: int | None = None, launcher: str | None = None, wait: bool = False, dry_run: bool = False,
          progress: bool = False):
    """`resexp sweep`: train every (arch, depth, seed) not yet finished into ``out`` (default
    results/<experiment name>), saving the sweep as <out>/sweep.yaml; rerun to resume.
    archs, depths, seeds: lists or comma-separated strings, None for the saved sweep's or
    the experiment's. Returns the SweepOutcome (resexp/sweep/command.py): its ``statuses``
    ({run name: Status}; None for a dry run or SLURM jobs only submitted), ``exit_code``
    (what the command would exit with) and ``summary_line()``. A run that fails does not
    raise: its status says so, and load_runs' ``error`` column says why."""
    from resexp.sweep.command import sweep as run

    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise UserError(f"jobs must be a whole number of at least 1, got {jobs!r}")
    overrides = [*as_overrides(overrides), *([f"launcher={launcher}"] if launcher else [])]
    return run(archs, depths, seeds, overrides, _path(out), _paths(config_dirs), jobs, wait, dry_run,
               _console(progress))


def train(overrides=None, out=None, *, config_dirs=None, progress: bool = False):
    """`resexp train`: train (or resume, or skip if finished) the one run the overrides
    describe, in this process, into out/<arch>-<depth>-s<seed> (out defaults to
    results/<name>). Returns the TrainOutcome (resexp/train/command.py): ``summary`` (the
    run's summary.json), ``status``, ``run_dir`` and ``summary_line()``."""
    from resexp.train.command import train as run

    return run(as_overrides(overrides), _path(out), _paths(config_dirs), _console(progress))


def load_runs(results_dir):
    """One row per run folder in results_dir (a pandas DataFrame; columns:
    resexp.analysis.results.RUN_COLUMNS), with each run's status as `resexp status` sees it."""
    from resexp.analysis.results import load_runs as load

    return load(_path(results_dir))


def plot(results_dir, out=None, formats="png,pdf", train_error: str = "minibatch", zoom: float | None = None):
    """`resexp plot`: draw the figures of results_dir into ``out`` (default
    results_dir/figures), each with its CSV. formats: a list or comma-separated string of
    png, pdf, svg; train_error: "minibatch" (Fig. 6's) or "clean"; zoom: end the curves'
    error axis at this %. Returns the list of paths written."""
    from resexp.analysis.plot import make_figures

    made = make_figures(_path(results_dir), _path(out), formats, results=_load_and_warn(results_dir),
                        train_error=train_error, zoom=zoom)
    return [Path(p) for p in made["paths"]]


@dataclass
class Report:
    """What resexp.report returns; a notebook shows it as its Markdown."""
    table: object     # the numbers (= report.csv), a pandas DataFrame
    markdown: str     # report.md's text
    paths: list[Path] = field(default_factory=list)  # report.md and report.csv

    def _repr_markdown_(self) -> str:
        return self.markdown

    def __str__(self) -> str:
        return self.markdown


def report(results_dir, out=None, train_error: str = "minibatch") -> Report:
    """`resexp report`: write report.md and report.csv into ``out`` (default results_dir),
    every (arch, depth) beside He et al.'s Table 6 for CIFAR-10; returns them as a Report."""
    from resexp.analysis.report import make_report

    where = _path(out) if out is not None else _path(results_dir)
    table, markdown = make_report(_path(results_dir), where, results=_load_and_warn(results_dir),
                                  train_error=train_error)
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


def _console(progress: bool):
    """Where the plan, bars and per-run messages go: stderr as the commands show them, or nowhere."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True) if progress else Console(quiet=True)


def _load_and_warn(results_dir):
    """results_dir read once (resexp.analysis.results.Results), with a warning per damaged run
    (the commands print these on stderr)."""
    from resexp.analysis.results import damage_warnings, read_results

    results = read_results(_path(results_dir))
    for line in damage_warnings(results.runs):
        warnings.warn(line, stacklevel=3)
    return results
