"""The sweep as a table (arch x depth), in Markdown for people and CSV for scripts.

Next to the ResNet rows of a real CIFAR-10 sweep stands the paper's test error,
so a reproduction can be read against He et al. 2016, Table 6 at a glance. report.md
links the figures that `resexp plot` drew into the results folder (docs/figures.md).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pandas as pd

from resexp.analysis.compare import (
    at_chosen,
    BEST_BY,
    BOOTSTRAP_SEED,
    choose,
    CONFIDENCE,
    depth_gaps,
    MIN_SEEDS,
    RESAMPLES,
    selection_phrase,
    setting_label,
    unchosen,
    with_final,
)
from resexp.analysis.results import (
    aggregate,
    dataset_label,
    experiment_info,
    held_out,
    Results,
    read_results,
    pick_train_error,
    runs_to_average,
    setting_name,
    setting_value,
    status_tally,
    swept_settings,
)
from resexp.errors import UserError
from resexp.run.safeio import atomic_write, real_dir
from resexp.run.text import inert

# He et al. 2016, Table 6: CIFAR-10 test error (%) of ResNet-n, option A shortcuts,
# 64k iterations. The 110-layer value is the best of 5 runs (their mean: 6.61 ± 0.16).
PAPER_TABLE6_TEST_ERR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}
# How Table 6's nets were trained and tested (§4.2): a row run otherwise says so beside the value.
PAPER_ITERATIONS, PAPER_BATCH, PAPER_TEST_IMAGES, PAPER_SHORTCUT = 64_000, 128, 10_000, "A"
FOOTNOTE_MARKS = "¹²³⁴⁵⁶⁷⁸⁹"


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


def report_table(runs: pd.DataFrame, gaps: pd.DataFrame, choice: pd.DataFrame | None) -> pd.DataFrame:
    """aggregate() of the runs plus the paper's column (paper_test_err); ``paper_note``: where a row
    has a paper value, how its runs differ from Table 6's (paper_gaps), "" where they do not; the
    row's gap to its arch's shallowest depth (``gaps``: compare.depth_gaps) and, where a value was
    chosen (``choice``: compare.choose), the chosen value's mean and std of the validation error."""
    settings = swept_settings(runs)
    keys, cells = ["arch", "depth", *settings], ["arch", "depth", "setting"]
    table = aggregate(runs)
    table = table.assign(paper_test_err=paper_test_err(table, experiment_info(runs)))
    used = runs_to_average(runs)
    notes = used.assign(paper_note=[paper_gaps(row) for _, row in used.iterrows()]) \
        .groupby(keys, dropna=False)["paper_note"].agg(lambda s: "; ".join(dict.fromkeys(n for n in s if n)))
    table = table.merge(notes.reset_index(), on=keys, how="left")
    table = table.assign(paper_note=table["paper_note"].fillna("").where(table["paper_test_err"].notna(), ""),
                         setting=[setting_label(row, settings) for row in table[settings].to_dict("records")])
    table = table.merge(gaps[[*cells, "gap", "gap_low", "gap_high"]].rename(columns={"gap": "gap_to_shallowest"}),
                        on=cells, how="left")
    if choice is None:
        return table.drop(columns="setting")
    scores = [c for c in choice.columns if c.endswith(("_mean", "_std"))]
    table = table.merge(choice.loc[choice["chosen"], [*cells, *scores]], on=cells, how="left")
    # one row per (arch, depth), each at its own value: in depth order, not grouped by value
    arch_order = table["arch"].map({arch: i for i, arch in enumerate(dict.fromkeys(table["arch"]))})
    return table.assign(_arch=arch_order).sort_values(["_arch", "depth"], kind="stable") \
        .drop(columns=["_arch", "setting"]).reset_index(drop=True)


def paper_gaps(run: pd.Series) -> str:
    """How one run was trained or tested otherwise than Table 6's nets, in words; "" if it was not."""
    def count(value) -> str:
        return "?" if pd.isna(value) else f"{value:,.0f}"

    gaps = []
    iterations, batch = run.get("iterations"), run.get("train.batch_size")
    if iterations != PAPER_ITERATIONS or batch != PAPER_BATCH:
        gaps.append(f"{count(iterations)} iterations at batch {count(batch)} "
                    f"(Table 6: {PAPER_ITERATIONS:,} at {PAPER_BATCH})")
    images = run.get("test_images")
    if run.get("evaluated_on") == "val":
        gaps.append(f"val error on images held out of the training split, not on the {PAPER_TEST_IMAGES:,} "
                    "of the test set")
    elif pd.isna(images):
        gaps.append("the size of its test split is not recorded")
    elif images != PAPER_TEST_IMAGES:
        gaps.append(f"test error on {images:,.0f} images, not the {PAPER_TEST_IMAGES:,} of the test set")
    shortcut = run.get("model.shortcut")
    if isinstance(shortcut, str) and shortcut != PAPER_SHORTCUT:
        gaps.append(f"option {shortcut} shortcuts (Table 6: {PAPER_SHORTCUT})")
    return "; ".join(gaps)


def format_params(params: float) -> str:
    """A parameter count in millions, the unit of the table's header and of the paper
    (0.27M, 1.7M, 19.4M): two significant digits, one decimal from 10M up. One unit for
    every row, so 75k reads 0.075 beside 0.27 rather than 75.0k beside 0.27M."""
    if pd.isna(params):
        return "—"
    millions = params / 1e6
    return f"{millions:.1f}" if millions >= 10 else f"{millions:.2g}"


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


# The table's column of the held-out error (results.held_out), and what report.md says of a val one.
HELD_OUT_HEADER = {"test": "test err (%)", "val": "val err (%, held-out training images)"}
VAL_NOTE = ("Val err is the error on images held out of the training split (dataset.val_size), not a test "
            "error: these runs had no test split (the dataset's files hold none).")


def markdown_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells; the paper column only when some row has a value, each
    value that is not comparable marked (footnotes) with its note."""
    settings = [c for c in table.columns if "." in c]  # swept besides depth (results.swept_settings)
    marks, held = footnotes(table), held_out(table)
    header = ["arch", "depth", *map(setting_name, settings),
              "params (M)", "seeds", "train err (%)", HELD_OUT_HEADER[held]]
    with_paper = table["paper_test_err"].notna().any()
    if with_paper:
        header.append("paper test err (%)")
    header += ["epochs", "wall time"]
    rows = []
    for row in table.itertuples():
        cells = [row.arch, str(row.depth), *map(setting_value, table.loc[row.Index, settings]),
                 format_params(row.params), _seeds_cell(row),
                 format_error(row.train_err_mean, row.train_err_std),
                 format_error(getattr(row, f"{held}_err_mean"), getattr(row, f"{held}_err_std"))]
        if with_paper:
            note = marks.get(getattr(row, "paper_note", ""), "")
            cells.append("" if pd.isna(row.paper_test_err) else f"{row.paper_test_err:.2f}{note and ' ' + note}")
        rows.append(cells + [_epochs_cell(row), format_seconds(row.wall_seconds)])
    return header, rows


def footnotes(table: pd.DataFrame) -> dict[str, str]:
    """paper_note -> its footnote mark (¹, ², ...; [10] on), one per different note."""
    notes = dict.fromkeys(n for n in table.get("paper_note", pd.Series(dtype=str)) if isinstance(n, str) and n)
    return {note: FOOTNOTE_MARKS[i] if i < len(FOOTNOTE_MARKS) else f"[{i + 1}]" for i, note in enumerate(notes)}


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-style table, text columns left-aligned, the others right-aligned."""
    left = {"arch", "seeds", "compared", "reading", "chosen"}
    rule = [":---" if name in left else "---:" for name in header]
    lines = [header, rule] + rows
    return "\n".join("| " + " | ".join(map(inert, cells)) + " |" for cells in lines)


def study_name(info: dict) -> tuple[str, bool]:
    """(the experiment as titles name it, whether its name describes the runs). A run of
    an experiment on another dataset (the default he2016_cifar10 with dataset=mnist) is
    named 'he2016_cifar10 with dataset=mnist': the bare name would promise CIFAR-10."""
    from resexp.settings.compose import experiment_dataset, experiment_settings

    name = info["experiment"]
    own = experiment_dataset(experiment_settings(name)) if name and "," not in name else None
    if own is None or own == info["dataset"]:
        return name, True
    return f"{name} with dataset={info['dataset']}", False


def _milestone(text: str) -> int:
    return int(float(text[:-1]) * 1000) if text.endswith("k") else int(text)


def reached_schedule(schedule: str, iterations: float) -> str:
    """A run's schedule line (train/schedule.py's Schedule.describe) with only the lr
    milestones the run reaches: a milestone at or after its last iteration never
    changes its lr (64k-iteration milestones on an 8-iteration run). ``iterations``:
    the planned length, else the one the line states."""
    total = re.search(r"(\d+k?) it \(\d+ epochs?\)$", schedule)
    if pd.isna(iterations):
        if not total:
            return schedule
        iterations = _milestone(total.group(1))
    parts = []
    for part in schedule.split("; "):
        decay = re.fullmatch(r"(x\S+) at it (.+)", part)
        if decay:
            kept = [m for m in decay.group(2).split(", ") if _milestone(m) < iterations]
            if not kept:
                continue
            part = f"{decay.group(1)} at it {', '.join(kept)}"
        parts.append(part)
    return "; ".join(parts)


def schedule_line(runs: pd.DataFrame) -> str:
    """The runs' schedules (reached_schedule), each once, in the order of the table."""
    lines = [reached_schedule(inert(s), its) for s, its in zip(runs["schedule"], runs["iterations_planned"])
             if isinstance(s, str) and s]
    return "; ".join(dict.fromkeys(lines))


# The figures `resexp plot` draws into <results>/figures/, in the order report.md links them.
FIGURE_NAMES = {"depth": "final error vs depth", "curves": "training curves (He et al. 2016, Fig. 6)",
                "responses": "layer responses (Fig. 7)", "gradients": "gradient norms",
                "identity": "the identity test"}


def figure_links(figures_dir: Path, out: Path) -> list[str]:
    """One Markdown line per figure in figures_dir, linked relative to report.md's folder
    ``out``: the PNG, the PDF and the CSV that holds its numbers, where they exist."""
    lines = []
    for stem, what in FIGURE_NAMES.items():
        files = [(kind.upper(), figures_dir / f"{stem}.{kind}") for kind in ("png", "pdf", "svg")]
        files += [("data", figures_dir / f"{stem}.csv"), ("diverged or failed runs", figures_dir / f"{stem}_lost.csv")]
        found = [(kind, os.path.relpath(path, out)) for kind, path in files if path.is_file()]
        if found:
            lines.append(f"- {what}: " + ", ".join(f"[{kind}]({path})" for kind, path in found))
    return lines


def render_markdown(table: pd.DataFrame, runs: pd.DataFrame, train_error: str = "minibatch",
                    figures: list[str] | None = None, intro: list[str] = (), sections: list[str] = ()) -> str:
    """The whole report.md: what was run, how to read it, the table, then links to the
    figures (``figures``: figure_links' lines; none: a line on how to draw them).
    ``intro``: lines on which runs the table holds, above it; ``sections``: lines below it
    (comparison_lines)."""
    info = experiment_info(runs)
    name, describes = study_name(info)
    tally = status_tally(runs["status"])
    title = f"plain vs residual networks on {dataset_label(info)}"
    lines = [f"# {name}: {title}" if name and describes else f"# {title[0].upper()}{title[1:]}", ""]
    if name and not describes:
        lines.append(f"Experiment: {name}  ")
    schedule = schedule_line(runs)
    if schedule:
        lines.append(f"Schedule: {schedule}  ")
    lines += hardware_note(info["hardware"])
    lines += [f"Runs: {len(runs)} ({tally})", "", training_error_note(info["augmented"], train_error), ""]
    lines += [VAL_NOTE, ""] if info["evaluated_on"] == "val" else []
    lines += [*intro, ""] if intro else []
    if table["paper_test_err"].notna().any():
        lines += [f"Paper test err: He et al. 2016, Table 6 (ResNet-110: best of 5 runs), after "
                  f"{PAPER_ITERATIONS:,} iterations at batch {PAPER_BATCH} on the {PAPER_TEST_IMAGES:,} "
                  f"CIFAR-10 test images. A marked value stands beside runs trained or tested otherwise: "
                  "it is not a comparison (notes under the table).", ""]
    lines.append(markdown_table(*markdown_rows(table)))
    marks = footnotes(table)
    if marks:
        lines += [""] + [f"{mark} Not comparable with Table 6: {inert(note)}.  " for note, mark in marks.items()]
    lines += sections
    if figures:
        lines += ["", "Figures (each with its numbers as CSV):", "", *figures]
    else:
        lines += ["", "No figures yet: `resexp plot RESULTS_DIR` draws them into RESULTS_DIR/figures/."]
    return "\n".join(lines) + "\n"


def make_report(results_dir, out_dir=None, results: Results | None = None,
                train_error: str = "minibatch", best_by: str | None = None) -> tuple[pd.DataFrame, str]:
    """Write report.md and report.csv into out_dir (default results_dir); return both.
    ``results``: read_results(results_dir), if the caller has it already; ``train_error``:
    ``minibatch`` (Fig. 6's) or ``clean`` (results.TRAIN_ERRORS); ``best_by``: "val_err" for
    each (arch, depth) at the value of the swept settings with the lowest mean final
    validation error (compare.choose), None for a row per value.

    The DataFrame (= report.csv) holds the numbers (report_table): aggregate() plus paper_test_err,
    each depth's gap to its arch's shallowest (gap_to_shallowest, gap_low, gap_high:
    compare.depth_gaps) and, with best_by, the chosen value's <best_by>_mean and _std.
    """
    results = read_results(results_dir) if results is None else results
    runs, _ = pick_train_error(results.runs, results.metrics, train_error)
    shown, choice = runs, None
    if best_by is not None:
        choice = choose(with_final(runs, results.metrics, best_by), best_by)
        shown = at_chosen(runs, choice)
    gaps = depth_gaps(shown, swept_settings(runs) if choice is None else [])
    table = report_table(shown, gaps, choice)
    out = Path(out_dir) if out_dir is not None else Path(results_dir)
    markdown = render_markdown(table, runs, train_error, figure_links(Path(results_dir) / "figures", out),
                               choice_lines(choice, best_by, len(shown), len(runs)),
                               comparison_lines(gaps, choice, best_by))
    try:
        real_dir(out)
        atomic_write(out / "report.md", markdown.encode())
        atomic_write(out / "report.csv", table.to_csv(index=False).encode())
    except OSError as err:
        raise UserError(f"cannot write the report to {out}: {err.strerror or err}") from None
    return table, markdown


# --------------------------------------------------------------------------- fair comparisons (compare.py)
def choice_lines(choice: pd.DataFrame | None, best_by: str | None, shown: int, total: int) -> list[str]:
    """Above the table: which runs it holds, where a value was chosen for each (arch, depth)."""
    if choice is None:
        return []
    lines = [f"The table holds {selection_phrase([c for c in choice.columns if '.' in c], best_by)} "
             f"(the mean over its seeds; equal means go to the smaller value; a value at which a run "
             f"diverged is never chosen): {shown} of the {total} runs. The choice is made on the validation "
             "split, never on the test error the table shows; each value's numbers are under the table."]
    missing = unchosen(choice)
    if missing:
        lines.append(f"Nothing to choose for {', '.join(missing)}: a run diverged at every value.")
    return lines


def comparison_lines(gaps: pd.DataFrame, choice: pd.DataFrame | None, best_by: str | None) -> list[str]:
    """Below the table: each value's validation error (where one was chosen), then each depth's
    gap to the arch's shallowest with its bootstrap interval (compare.depth_gaps)."""
    lines = []
    if choice is not None:
        lines += ["", f"Final {BEST_BY[best_by]} (%) of each value, mean ± std over seeds:", "",
                  markdown_table(*_choice_rows(choice, best_by))]
    if gaps.empty:
        return lines
    held = "each at its chosen value" if choice is not None else "at the same settings"
    lines += ["", f"Depth against the shallowest: a depth's final training error minus that of its arch's "
                  f"shallowest depth {held}, in percentage points (above 0: the deeper net trains worse), with a "
                  f"{CONFIDENCE:.0%} bootstrap interval over seeds (each depth's seeds drawn with replacement, "
                  f"{RESAMPLES:,} times, generator seed {BOOTSTRAP_SEED}). An interval needs {MIN_SEEDS} seeds "
                  "or more at both depths.", "", markdown_table(*_gap_rows(gaps))]
    return lines


def _gap_rows(gaps: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    rows = []
    for row in gaps.itertuples():
        if pd.isna(row.gap_low):
            interval, reading = "—", f"no interval: fewer than {MIN_SEEDS} seeds"
        else:
            interval = f"[{row.gap_low:+.2f}, {row.gap_high:+.2f}]"
            reading = ("degrades: the interval excludes 0" if row.gap_low > 0 else
                       "improves: the interval excludes 0" if row.gap_high < 0 else "unresolved: the interval holds 0")
        rows.append([row.compared, f"{row.n} vs {row.n_shallowest}", f"{row.gap:+.2f}", interval, reading])
    return ["compared", "seeds", "gap (pp)", f"{CONFIDENCE:.0%} interval", "reading"], rows


def _choice_rows(choice: pd.DataFrame, best_by: str) -> tuple[list[str], list[list[str]]]:
    """One row per (arch, depth), one column per value: its mean ± std, and the value chosen."""
    values = list(dict.fromkeys(choice["setting"]))
    rows = []
    for (arch, depth), options in choice.groupby(["arch", "depth"], sort=False):
        cells = dict.fromkeys(values, "")
        for row in options.to_dict("records"):
            lost = f" (+{row['diverged']} diverged)" if row["diverged"] else ""
            cells[row["setting"]] = format_error(row[f"{best_by}_mean"], row[f"{best_by}_std"]) + lost
        picked = options.loc[options["chosen"], "setting"]
        rows.append([arch, str(depth), *cells.values(), picked.iloc[0] if len(picked) else "none"])
    return ["arch", "depth", *values, "chosen"], rows
