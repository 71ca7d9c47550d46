"""Figures of a sweep: final error vs depth, and training curves as in He et al. 2016, Fig. 6.

Figures are matplotlib.figure.Figure objects drawn on an Agg canvas, never made
through pyplot: pyplot keeps every open figure in a global list, so nothing here
has to be closed and nothing leaks from one call (or test) into the next.
Each figure's data goes next to it as CSV (depth.csv, curves.csv, ...). Where the runs
hold diagnostics (resexp/monitor.py), three more figures look inside the networks:
responses (He et al. 2016, Fig. 7), gradients and identity.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from resexp.analysis.results import (
    TRAIN_ERRORS,
    aggregate,
    dataset_label,
    experiment_info,
    load_diagnostics,
    load_metrics,
    load_runs,
    pick_train_error,
    runs_to_average,
    sort_runs,
)
from resexp.errors import UserError
from resexp.run.safeio import atomic_write, real_dir

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
        return real_dir(out_dir)
    except OSError as err:
        raise UserError(f"cannot write to {out_dir}: {err.strerror or err}") from None


def _save(figure: Figure, stem: Path, formats: list[str]) -> list[Path]:
    paths = [stem.with_suffix(f".{fmt}") for fmt in formats]
    try:
        for path in paths:
            buf = io.BytesIO()  # drawn in memory, then put in place without following a link
            figure.savefig(buf, dpi=150, format=path.suffix[1:])
            atomic_write(path, buf.getvalue())
    except OSError as err:
        raise UserError(f"cannot write {err.filename or stem}: {err.strerror or err}") from None
    return paths


def _save_csv(table: pd.DataFrame, path: Path) -> Path:
    try:
        atomic_write(path, table.to_csv(index=False).encode())
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror or err}") from None
    return path


def make_figures(results_dir, out_dir=None, formats=("png", "pdf"), runs: pd.DataFrame | None = None,
                 train_error: str = "minibatch") -> dict:
    """Draw the depth and curves figures of results_dir into out_dir (default <results_dir>/figures),
    and the diagnostics figures where the runs hold diagnostics CSVs.
    ``runs``: load_runs(results_dir), if the caller has it already.

    ``train_error``: ``minibatch`` (Fig. 6's, the default) or ``clean`` (results.TRAIN_ERRORS).
    Returns {"paths": [every file written], "depth": depth_data, "curves": curves_data,
    and "responses"/"gradients"/"identity" data where drawn}.
    """
    formats = check_formats(formats)
    runs = load_runs(results_dir) if runs is None else runs
    runs, metrics = pick_train_error(runs, load_metrics(results_dir), train_error)
    info = experiment_info(runs)
    depth = depth_data(runs)
    curves = curves_data(metrics, runs)
    if curves.empty:
        raise UserError(f"nothing to plot in {results_dir}: no run has finished an epoch "
                        "(diverged runs are not plotted)")
    out = _writable_dir(Path(out_dir) if out_dir is not None else Path(results_dir) / "figures")
    which = "" if train_error == "minibatch" else f" (training error: {TRAIN_ERRORS[train_error]})"
    paths = _save(plot_depth(depth, title_of(info, "final error vs depth" + which)), out / "depth", formats)
    paths.append(_save_csv(depth, out / "depth.csv"))
    curves_title = title_of(info, "training error (dashed) and test error (bold)" + which)
    paths += _save(plot_curves(curves, curves_title), out / "curves", formats)
    paths.append(_save_csv(curves, out / "curves.csv"))
    made = {"depth": depth, "curves": curves}
    for kind, (prepare, draw, what) in DIAGNOSTIC_FIGURES.items():
        table = load_diagnostics(results_dir, kind, runs)
        data = prepare(table) if table is not None else None
        if data is not None and not data.empty:  # e.g. Fig. 7 before any run measured past epoch 0
            made[kind] = data
            paths += _save(draw(data, title_of(info, what)), out / kind, formats)
            paths.append(_save_csv(data, out / f"{kind}.csv"))
    return {"paths": paths, **made}


# --------------------------------------------------------------------------- inside the networks
def net_colours(nets) -> dict:
    """(arch, depth) -> colour: the arch's colour, lighter for shallower nets."""
    colours = {}
    for arch in dict.fromkeys(a for a, _ in nets):
        depths = sorted({d for a, d in nets if a == arch})
        base = np.array(to_rgb(arch_style(arch)["color"]))
        for i, depth in enumerate(depths):
            light = 0.6 * (len(depths) - 1 - i) / max(len(depths) - 1, 1)  # the deepest at full colour
            colours[(arch, depth)] = tuple(base + (1 - base) * light)
    return colours


def _seed_mean(table: pd.DataFrame, keys: list[str], values: list[str]) -> pd.DataFrame:
    agg = {v: (v, "mean") for v in values} | {"n": ("seed", "nunique")}
    return sort_runs(table.groupby(["arch", "depth", *keys], sort=False).agg(**agg).reset_index())


def responses_data(table: pd.DataFrame) -> pd.DataFrame:
    """Fig. 7's lines: each layer's response std at the end of training, mean over seeds,
    and ``rank``: the layer's place when a net's stds are sorted in descending order."""
    end = _seed_mean(table[table["point"] == "end"], ["layer", "stage", "block"], ["std"])
    end["rank"] = end.groupby(["arch", "depth"])["std"].rank(ascending=False, method="first").astype(int)
    return end


def plot_responses(data: pd.DataFrame, title: str = "") -> Figure:
    """He et al. 2016, Fig. 7: std of each 3x3 layer's response (after BN, before the ReLU or
    the addition; eval mode) in layer order (top) and sorted by magnitude (bottom)."""
    figure = _new_figure(8, 7)
    top, bottom = figure.subplots(2, 1)
    colours = net_colours(list(zip(data["arch"], data["depth"])))
    for (arch, depth), lines in data.groupby(["arch", "depth"], sort=False):
        label, colour = f"{arch}-{depth}", colours[(arch, depth)]
        lines = lines.sort_values("layer")
        top.plot(lines["layer"], lines["std"], color=colour, label=label, gid=f"{label}:layer")
        ranked = lines.sort_values("rank")
        bottom.plot(ranked["rank"], ranked["std"], color=colour, label=label, gid=f"{label}:sorted")
    top.set_xlabel("layer index (original)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    positive = data["std"][data["std"] > 0]
    wide = len(positive) and positive.max() / positive.min() > 100  # one broken net would flatten the rest
    for ax in (top, bottom):
        ax.set_ylabel("std (log scale)" if wide else "std")
        ax.set_yscale("log" if wide else "linear")
        ax.grid(alpha=0.3, which="both")
    top.legend(fontsize="small", ncols=2)
    figure.suptitle(title)
    return figure


def gradients_data(table: pd.DataFrame) -> pd.DataFrame:
    """Gradient norms at initialisation and at the end, per layer (weights) and per block
    (block outputs), mean over seeds."""
    points = table[table["point"].isin(["init", "end"])]
    return _seed_mean(points, ["point", "kind", "index", "stage"], ["norm"])


IDENTITY_VALUES = {"branch_ratio": "‖F(x)‖ / ‖x‖ (residual branch vs shortcut)",
                   "change": "‖block(x) − x‖ / ‖x‖ (distance from the identity)"}


def identity_data(table: pd.DataFrame) -> pd.DataFrame:
    """The identity test at initialisation and at the end, per block, mean over seeds."""
    points = table[table["point"].isin(["init", "end"])]
    return _seed_mean(points, ["point", "block", "stage"], list(IDENTITY_VALUES))


def _grid(rows: list[tuple[str, pd.DataFrame, str, str]], x: str, xlabel: str, title: str) -> Figure:
    """One row of panels per (key, its data, y column, y label); columns: at initialisation,
    at the end. One line per (arch, depth), log y."""
    figure = _new_figure(11, 3.6 * len(rows))
    axes = figure.subplots(len(rows), 2, squeeze=False)
    colours = net_colours([nd for _, part, _, _ in rows for nd in zip(part["arch"], part["depth"])])
    for panels, (key, part, y, ylabel) in zip(axes, rows):
        for ax, point in zip(panels, ("init", "end")):
            for (arch, depth), lines in part[part["point"] == point].groupby(["arch", "depth"], sort=False):
                lines = lines.sort_values(x)
                # markers: a plain block that changes the shape has no value, which may leave single points
                ax.plot(lines[x], lines[y], color=colours[(arch, depth)], label=f"{arch}-{depth}",
                        marker=".", markersize=3, gid=f"{arch}-{depth}:{key}:{point}")
            ax.set_yscale("log")
            ax.set_title("at initialisation" if point == "init" else "at the end of training")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3, which="both")
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize="small", ncols=2)
    figure.suptitle(title)
    return figure


def plot_gradients(data: pd.DataFrame, title: str = "") -> Figure:
    """Norm of the loss gradient w.r.t. each layer's weights (top) and each block's output
    (bottom), at initialisation (left) and at the end (right), log scale."""
    rows = [("weight", data[data["kind"] == "weight"], "norm", "‖∂loss/∂W‖ (layer weights)"),
            ("block_output", data[data["kind"] == "block_output"], "norm", "‖∂loss/∂(block output)‖")]
    return _grid(rows, "index", "layer index (top) / block index (bottom)", title)


def plot_identity(data: pd.DataFrame, title: str = "") -> Figure:
    """Per block, how far it is from the identity, at initialisation and at the end, log scale."""
    rows = [(value, data, value, label) for value, label in IDENTITY_VALUES.items()]
    return _grid(rows, "block", "block index", title)


DIAGNOSTIC_FIGURES = {
    "responses": (responses_data, plot_responses,
                  "std of layer responses after BN (He et al. 2016, Fig. 7), end of training"),
    "gradients": (gradients_data, plot_gradients, "gradient norms on a fixed batch"),
    "identity": (identity_data, plot_identity, "the identity test: how far each block is from the identity"),
}
