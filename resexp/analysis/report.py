"""The sweep as a table (arch x depth), in Markdown for people and CSV for scripts.

Next to the ResNet rows of a real CIFAR-10 sweep stands the paper's test error,
so a reproduction can be read against He et al. 2016, Table 6 at a glance.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from resexp.analysis.results import (
    aggregate,
    dataset_label,
    experiment_info,
    load_metrics,
    load_runs,
    pick_train_error,
    status_tally,
)
from resexp.errors import UserError
from resexp.run.safeio import atomic_write, real_dir

# He et al. 2016, Table 6: CIFAR-10 test error (%) of ResNet-n, option A shortcuts,
# 64k iterations. The 110-layer value is the best of 5 runs (their mean: 6.61 ± 0.16).
PAPER_TABLE6_TEST_ERR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}


def training_error_note(augmented, train_error: str = "minibatch") -> str:
    """How the numbers were measured, in words that match the data (``augmented``:
    True, False, "mixed" or None as in results.experiment_info; ``train_error``: which
    training error the table shows, results.TRAIN_ERRORS)."""
    how = {True: ", with the training augmentation on (as in He et al. 2016, Fig. 6)",
           False: ", on unaugmented images (this dataset's config has no augmentation)",
           "mixed": ", with each run's own augmentation setting (they differ)", None: ""}[augmented]
    what = (f"the mean minibatch error over the last epoch{how}" if train_error == "minibatch" else
            "the error on the clean training set in eval mode after the last epoch (no augmentation; "
            "train.eval_train=true), not Fig. 6's minibatch error")
    return (f"Training error is {what}. Errors in %, "
            "mean ± std over seeds (std with ddof=1; a single seed has no ±). Diverged and damaged "
            "runs are left out of the means and counted apart.")


def hardware_note(hardware: dict) -> list[str]:
    """A warning when the runs come from different hardware: the same config gives other
    numbers on another CPU or GPU (environment.py), so differences may not be seed noise."""
    if len(hardware) < 2:
        return [f"Hardware: {next(iter(hardware))}  "] if hardware else []
    parts = ", ".join(f"{name} ({n} run{'s' if n > 1 else ''})" for name, n in hardware.items())
    return [f"**Mixed hardware:** {parts}. The same config gives different numbers on different "
            "hardware; compare runs from one machine.  "]


def paper_test_err(table: pd.DataFrame, info: dict) -> pd.Series:
    """Table 6's value on resnet rows of a real CIFAR-10 sweep; NaN on every other row.

    Synthetic data shaped like CIFAR-10 gets no paper column: it is not the paper's task.
    """
    if info["dataset"] != "cifar10" or info["synthetic"]:
        return pd.Series(math.nan, index=table.index)
    return table["depth"].map(PAPER_TABLE6_TEST_ERR).where(table["arch"].eq("resnet"))


def report_table(runs: pd.DataFrame) -> pd.DataFrame:
    """aggregate() of the runs plus the paper's column (paper_test_err)."""
    table = aggregate(runs)
    return table.assign(paper_test_err=paper_test_err(table, experiment_info(runs)))


def format_params(params: float) -> str:
    """Parameter counts the way the paper writes them: 0.27M, 1.7M, 19.4M (k below 0.1M)."""
    if pd.isna(params):
        return "—"
    if params < 1e5:
        return f"{params / 1e3:.1f}k"
    return f"{params / 1e6:.2f}M" if params < 1e7 else f"{params / 1e6:.1f}M"


def format_error(mean: float, std: float) -> str:
    """'8.12 ± 0.21'; just the mean for one seed; a dash when there is no run to average."""
    if pd.isna(mean):
        return "—"
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


def format_seconds(seconds: float) -> str:
    """Wall time as 45s, 3m 12s or 2h 05m."""
    if pd.isna(seconds):
        return "—"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _seeds_cell(row) -> str:
    """How many runs the mean holds and which runs it leaves out."""
    cell = f"{row.n}" if row.finished or row.n == 0 else f"{row.n} unfinished"
    extras = []
    if row.finished and row.unfinished:
        extras.append(f"+{row.unfinished} unfinished")
    if row.diverged:
        extras.append(f"+{row.diverged} diverged")
    if row.damaged:
        extras.append(f"+{row.damaged} damaged")
    return f"{cell} ({', '.join(extras)})" if extras else cell


def _epochs_cell(row) -> str:
    if pd.isna(row.epochs):
        return "—"
    planned = row.epochs_planned
    if pd.isna(planned) or int(planned) == int(row.epochs):
        return f"{int(row.epochs)}"
    return f"{int(row.epochs)}/{int(planned)}"


def markdown_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells; the paper column only when some row has a value."""
    header = ["arch", "depth", "params", "seeds", "train err (%)", "test err (%)"]
    with_paper = table["paper_test_err"].notna().any()
    if with_paper:
        header.append("paper test err (%)")
    header += ["epochs", "wall time"]
    rows = []
    for row in table.itertuples(index=False):
        cells = [row.arch, str(row.depth), format_params(row.params), _seeds_cell(row),
                 format_error(row.train_err_mean, row.train_err_std),
                 format_error(row.test_err_mean, row.test_err_std)]
        if with_paper:
            cells.append("" if pd.isna(row.paper_test_err) else f"{row.paper_test_err:.2f}")
        rows.append(cells + [_epochs_cell(row), format_seconds(row.wall_seconds)])
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-style table, text columns left-aligned, the others right-aligned."""
    left = {"arch", "seeds"}
    rule = [":---" if name in left else "---:" for name in header]
    lines = [header, rule] + rows
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def render_markdown(table: pd.DataFrame, runs: pd.DataFrame, train_error: str = "minibatch") -> str:
    """The whole report.md: what was run, how to read it, then the table."""
    info = experiment_info(runs)
    name = info["experiment"] or "sweep"
    tally = status_tally(runs["status"])
    lines = [f"# {name}: plain vs residual networks on {dataset_label(info)}", ""]
    if info["schedule"]:
        lines.append(f"Schedule: {info['schedule']}  ")
    lines += hardware_note(info["hardware"])
    lines += [f"Runs: {len(runs)} ({tally})", "", training_error_note(info["augmented"], train_error), ""]
    if table["paper_test_err"].notna().any():
        lines += ["Paper test err: He et al. 2016, Table 6 (ResNet-110: best of 5 runs).", ""]
    lines.append(markdown_table(*markdown_rows(table)))
    return "\n".join(lines) + "\n"


def make_report(results_dir, out_dir=None, runs: pd.DataFrame | None = None,
                train_error: str = "minibatch") -> tuple[pd.DataFrame, str]:
    """Write report.md and report.csv into out_dir (default results_dir); return both.
    ``runs``: load_runs(results_dir), if the caller has it already; ``train_error``:
    ``minibatch`` (Fig. 6's) or ``clean`` (results.TRAIN_ERRORS).

    The DataFrame (= report.csv) holds the numbers: aggregate() plus paper_test_err.
    """
    runs = load_runs(results_dir) if runs is None else runs
    if train_error != "minibatch":
        runs, _ = pick_train_error(runs, load_metrics(results_dir), train_error)
    table = report_table(runs)
    markdown = render_markdown(table, runs, train_error)
    out = Path(out_dir) if out_dir is not None else Path(results_dir)
    try:
        real_dir(out)
        atomic_write(out / "report.md", markdown.encode())
        atomic_write(out / "report.csv", table.to_csv(index=False).encode())
    except OSError as err:
        raise UserError(f"cannot write the report to {out}: {err.strerror or err}") from None
    return table, markdown
