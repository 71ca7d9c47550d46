"""Figures of a sweep: final error vs depth, and training curves as in He et al. 2016, Fig. 6.

Figures are matplotlib.figure.Figure objects drawn on an Agg canvas, never made
through pyplot: pyplot keeps every open figure in a global list, so nothing here
has to be closed and nothing leaks from one call (or test) into the next.
Each figure's data goes next to it as CSV (depth.csv, curves.csv).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from resexp.errors import UserError
from resexp.results import (
    aggregate,
    dataset_label,
    experiment_info,
    load_metrics,
    load_runs,
    runs_to_average,
    sort_runs,
)

FORMATS = ("png", "pdf", "svg")

# Plain nets in warm colours, residual ones in cool colours, the same in every figure.
ARCH_STYLE = {
    "plain": {"label": "plain", "color": "#d62728", "marker": "o"},
    "resnet": {"label": "residual (resnet)", "color": "#1f77b4", "marker": "s"},
    "preact_resnet": {"label": "residual (preact_resnet)", "color": "#2ca02c", "marker": "D"},
    "mlp_plain": {"label": "plain (mlp_plain)", "color": "#ff7f0e", "marker": "o"},
    "mlp_resnet": {"label": "residual (mlp_resnet)", "color": "#17becf", "marker": "s"},
}
TRAIN_STYLE = {"linestyle": "--", "linewidth": 1.0}  # Fig. 6: dashed lines, training error
TEST_STYLE = {"linestyle": "-", "linewidth": 2.2}  # Fig. 6: bold lines, test error
LOST_MARKER = "x"  # a diverged or failed run, drawn at the top of the depth axes


def arch_style(arch: str) -> dict:
    """Label, colour and marker of an arch; grey crosses for one this module does not know."""
    return ARCH_STYLE.get(arch, {"label": arch, "color": "0.4", "marker": "x"})


def check_formats(formats) -> list[str]:
    """Figure formats as a list of lower-case names; 'png,pdf' is accepted too."""
    if isinstance(formats, str):
        formats = formats.split(",")
    names = [f.strip().lower().lstrip(".") for f in formats if f.strip()]
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        raise UserError(f"unknown figure format {', '.join(unknown) or '(none)'}; "
                        f"choose from {', '.join(FORMATS)}")
    return names


def depth_data(runs: pd.DataFrame) -> pd.DataFrame:
    """The depth figure's points: aggregate() plus each arch's legend label."""
    table = aggregate(runs)
    return table.assign(label=table["arch"].map(lambda a: arch_style(a)["label"]))


def curves_data(metrics: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The curves figure's lines: per arch, depth and epoch, the mean over seeds.

    Averaged over the same runs as the depth figure (results.runs_to_average);
    n is how many seeds reached that epoch.
    """
    keys = ["arch", "depth", "epoch"]
    used = metrics[metrics["run"].isin(runs_to_average(runs)["run"])]
    if used.empty:
        return pd.DataFrame(columns=keys + ["iteration", "train_err", "test_err", "n"])
    table = used.groupby(keys).agg(
        iteration=("iteration", "mean"),
        train_err=("train_err", "mean"),
        test_err=("test_err", "mean"),
        n=("seed", "size"),
    )
    return sort_runs(table.reset_index())


def title_of(info: dict, what: str) -> str:
    """Dataset (flagged when synthetic), what is shown, and the run length: the full
    schedule is in report.md and every summary.json, too long for a title."""
    length = f"\n{info['experiment']}: {info['length']}" if info.get("length") else ""
    return f"{dataset_label(info)}: {what}{length}"


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _depth_axis(ax, depths) -> None:
    depths = sorted({int(d) for d in depths})
    if depths and depths[0] > 0 and depths[-1] / depths[0] > 20:
        # 20 ... 1202 layers: on a linear axis every depth but the last would crowd at 0.
        ax.set_xscale("log")
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.set_xticks([], minor=True)
    ax.set_xlabel("depth (number of layers)")


def plot_depth(data: pd.DataFrame, title: str = "") -> Figure:
    """Final training (left) and test (right) error vs depth, one line per arch.

    Points are the mean over seeds with ±std error bars (none for one seed);
    hollow markers flag points from unfinished runs; a cross at the top of the axis
    marks a depth where runs diverged or failed, which the mean leaves out (or which
    has no mean at all), so no run disappears from the figure without a trace.
    """
    figure = _new_figure(11, 4.4)
    axes = figure.subplots(1, 2)
    for ax, metric, name in zip(axes, ("train_err", "test_err"), ("training error", "test error")):
        for arch, rows in data.groupby("arch", sort=False):
            points = rows.dropna(subset=[f"{metric}_mean"]).sort_values("depth")
            if not points.empty:
                _depth_line(ax, arch, points, metric)
            _lost_marks(ax, arch, rows, metric)
        _depth_axis(ax, data["depth"])
        ax.set_ylabel(f"{name} (%)")
        ax.set_title(f"final {name}")
        ax.grid(alpha=0.3)
    handles, _ = axes[0].get_legend_handles_labels()
    if (data["diverged"] + data["failed"]).gt(0).any():
        handles.append(Line2D([], [], color="0.3", marker=LOST_MARKER, linestyle="none", markersize=8,
                              label="diverged or failed run (not in the mean)"))
    if handles:
        axes[0].legend(handles=handles)
    figure.suptitle(title)
    figure.supxlabel(_depth_note(data), fontsize="small")
    return figure


def _depth_note(data: pd.DataFrame) -> str:
    """How many seeds each point averages, and what hollow markers mean."""
    seeds = data.loc[data["n"] > 0, "n"]
    if seeds.empty:
        return "no finished epoch yet"
    low, high = int(seeds.min()), int(seeds.max())
    if high == 1:
        note = "one seed per point (no error bars)"
    else:
        note = f"mean ± std over {low if low == high else f'{low}-{high}'} seeds"
    if (~data["finished"] & (data["n"] > 0)).any():
        note += "; hollow markers: unfinished runs, at their latest epoch"
    return note


def _depth_line(ax, arch: str, rows: pd.DataFrame, metric: str) -> None:
    style = arch_style(arch)
    ax.errorbar(
        rows["depth"], rows[f"{metric}_mean"], yerr=rows[f"{metric}_std"].fillna(0.0),
        color=style["color"], marker=style["marker"], label=style["label"],
        capsize=3, linewidth=1.8, markersize=6, gid=f"{arch}:{metric}",
    )
    unfinished = rows[~rows["finished"]]
    if not unfinished.empty:
        ax.plot(unfinished["depth"], unfinished[f"{metric}_mean"], linestyle="none",
                marker=style["marker"], markersize=6, markerfacecolor="white",
                markeredgecolor=style["color"], zorder=3)


def _lost_marks(ax, arch: str, rows: pd.DataFrame, metric: str) -> None:
    """A cross at the top of the axis at each depth where runs of ``arch`` diverged or failed."""
    lost = rows[(rows["diverged"] + rows["failed"]) > 0].sort_values("depth")
    if lost.empty:
        return
    # x in data units, y in axes units: the top edge whatever the errors' range.
    ax.plot(lost["depth"], [0.97] * len(lost), transform=ax.get_xaxis_transform(), linestyle="none",
            marker=LOST_MARKER, markersize=9, markeredgewidth=2, color=arch_style(arch)["color"],
            clip_on=False, gid=f"{arch}:{metric}:lost")


def plot_curves(data: pd.DataFrame, title: str = "") -> Figure:
    """One panel per arch, one colour per depth: training error dashed, test error bold."""
    archs = list(dict.fromkeys(data["arch"]))
    depths = sorted(data["depth"].unique())
    palette = matplotlib.colormaps["tab10"]
    colour = {depth: palette(i % 10) for i, depth in enumerate(depths)}
    figure = _new_figure(max(4.6 * len(archs), 6), 4.4)
    axes = figure.subplots(1, max(len(archs), 1), sharey=True, squeeze=False)[0]
    for ax, arch in zip(axes, archs):
        for depth, curve in data[data["arch"] == arch].groupby("depth"):
            _curve_lines(ax, arch, int(depth), curve.sort_values("epoch"), colour[depth])
        ax.set_title(arch_style(arch)["label"])
        ax.set_xlabel("iterations")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(handles=_curve_legend(ax), fontsize="small")
    axes[0].set_ylabel("error (%)")
    figure.suptitle(title)
    return figure


def _curve_lines(ax, arch: str, depth: int, curve: pd.DataFrame, colour) -> None:
    marker = "." if len(curve) == 1 else None  # a one-epoch line would draw nothing
    ax.plot(curve["iteration"], curve["train_err"], color=colour, marker=marker,
            gid=f"{arch}-{depth}:train", **TRAIN_STYLE)
    ax.plot(curve["iteration"], curve["test_err"], color=colour, marker=marker,
            label=f"{arch}-{depth}", gid=f"{arch}-{depth}:test", **TEST_STYLE)


def _curve_legend(ax) -> list:
    depth_handles = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
    key = [Line2D([], [], color="black", label="train (dashed)", **TRAIN_STYLE),
           Line2D([], [], color="black", label="test (bold)", **TEST_STYLE)]
    return depth_handles + key


def _writable_dir(out_dir: Path) -> Path:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot write to {out_dir}: {err.strerror or err}") from None
    return out_dir


def _save(figure: Figure, stem: Path, formats: list[str]) -> list[Path]:
    paths = [stem.with_suffix(f".{fmt}") for fmt in formats]
    try:
        for path in paths:
            figure.savefig(path, dpi=150)
    except OSError as err:
        raise UserError(f"cannot write {err.filename or stem}: {err.strerror or err}") from None
    return paths


def _save_csv(table: pd.DataFrame, path: Path) -> Path:
    try:
        table.to_csv(path, index=False)
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror or err}") from None
    return path


def make_figures(results_dir, out_dir=None, formats=("png", "pdf"), runs: pd.DataFrame | None = None) -> dict:
    """Draw the depth and curves figures of results_dir into out_dir (default <results_dir>/figures).
    ``runs``: load_runs(results_dir), if the caller has it already.

    Returns {"paths": [every file written], "depth": depth_data, "curves": curves_data}.
    """
    formats = check_formats(formats)
    runs = load_runs(results_dir) if runs is None else runs
    info = experiment_info(runs)
    depth = depth_data(runs)
    curves = curves_data(load_metrics(results_dir), runs)
    if curves.empty:
        raise UserError(f"nothing to plot in {results_dir}: no run has finished an epoch "
                        "(diverged runs are not plotted)")
    out = _writable_dir(Path(out_dir) if out_dir is not None else Path(results_dir) / "figures")
    paths = _save(plot_depth(depth, title_of(info, "final error vs depth")), out / "depth", formats)
    paths.append(_save_csv(depth, out / "depth.csv"))
    curves_title = title_of(info, "training error (dashed) and test error (bold)")
    paths += _save(plot_curves(curves, curves_title), out / "curves", formats)
    paths.append(_save_csv(curves, out / "curves.csv"))
    return {"paths": paths, "depth": depth, "curves": curves}
