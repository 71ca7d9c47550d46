"""Figures of a sweep: final error vs depth, and training curves as in He et al. 2016, Fig. 6.

Figures are matplotlib.figure.Figure objects drawn on an Agg canvas, never made
through pyplot: pyplot keeps every open figure in a global list, so nothing here
has to be closed and nothing leaks from one call (or test) into the next.
Each figure's data goes next to it as CSV (depth.csv, curves.csv, ...). Where the runs
hold diagnostics (resexp/inside/monitor.py), three more figures look inside the networks:
responses (He et al. 2016, Fig. 7), gradients and identity.

One visual language in every figure (docs/figures.md): colour is the architecture;
depth is the shade of that colour (light: shallow, dark: deep) and the marker; in the
curves, dashed is training error and bold is test error (or, where the dataset has no test
split, the error on images held out of the training split, named so: results.EVALUATED); a
cross is where a diverged run stopped. Sizes are for a two-column paper: 8 pt text at the
width each figure is drawn.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from resexp.analysis.figstyle import fit_title, log_window, readable_log_ticks, shade, wrap

from resexp.analysis.compare import at_chosen, choose, selection_phrase, unchosen, with_final
from resexp.analysis.report import study_name
from resexp.analysis.results import (
    aggregate,
    dataset_label,
    EVALUATED,
    evaluated_split,
    experiment_info,
    held_out,
    file_warning,
    load_diagnostics,
    Results,
    read_results,
    pick_train_error,
    runs_to_average,
    setting_text,
    sort_runs,
    swept_settings,
)
from resexp.errors import UserError
from resexp.models.registry import arch_info, list_models
from resexp.run.safeio import atomic_write, real_dir

FORMATS = ("png", "pdf", "svg")
DPI = 200  # PNGs sharp on screen at twice their size in print; PDF and SVG are vector
COLUMN_WIDTH = 3.5  # inches: one column of a two-column paper (depth, Fig. 7)
PAGE_WIDTH = 7.1  # the full text width (curves, gradients, identity)
# Text sizes in points at the widths above; pdf/svg keep text as text (editable, searchable).
RC = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
      "xtick.labelsize": 7, "ytick.labelsize": 7, "figure.titlesize": 8.5,
      "lines.linewidth": 1.2, "lines.markersize": 4, "axes.linewidth": 0.6, "grid.linewidth": 0.4,
      "legend.frameon": False, "pdf.fonttype": 42, "svg.fonttype": "none"}

# Each arch's label, colour and marker, as registered with it (resexp/models/archs.py); the colour
# darkened where it has less than 3:1 contrast on white (figstyle.shade).
ARCH_STYLE = {arch: {"label": info.label, "color": shade(info.colour, 0, 1), "marker": info.marker}
              for arch, info in ((a, arch_info(a)) for a in list_models())}
# Depth's marker, by the depth's rank among a figure's depths (so plain-20 and resnet-20 share one).
DEPTH_MARKERS = ("o", "s", "^", "D", "v", "p", "h", "<", ">")
TRAIN_STYLE = {"linestyle": "--", "linewidth": 0.9}  # Fig. 6: dashed lines, training error
TEST_STYLE = {"linestyle": "-", "linewidth": 1.8}  # Fig. 6: bold lines, test error
LOST_MARKER = "x"  # where a diverged (or failed) run stopped
# Fig. 7 on a log axis once its largest std is this many times its smallest: on a linear
# axis the lines near the bottom would share a band a third of the height or less.
WIDE_RANGE = 3.0
MAX_MARKERS = 12  # markers along one line; more would hide the line
# A row of log panels (gradients, identity) spans at most this many decades: a net whose gradients
# explode to 1e10 would otherwise squeeze every other line into a sliver (figstyle.log_window).
MAX_DECADES = 8
FIG7_DECADES = 4  # the same for Fig. 7, whose stds lie near 1 (the paper's axis: 0 to 3)
BAND_ALPHA = 0.2  # the seeds' ± std band behind a line of their mean


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


def check_zoom(zoom) -> float | None:
    """The curves' upper error limit in %, or None for the full range."""
    if zoom is None:
        return None
    try:
        value = float(zoom)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0 < value <= 100:
        shown = f"{zoom:g}" if isinstance(zoom, float) else repr(zoom)
        raise UserError(f"--zoom must be an error in % above 0 and at most 100 (20 is He et al. 2016, "
                        f"Fig. 6), got {shown}")
    return value


def net_styles(nets) -> dict:
    """(arch, depth) -> {"color", "marker"}: the arch's colour in a shade for the depth
    (lighter for shallower nets, darker for deeper ones) and the depth's marker."""
    nets = list(dict.fromkeys((arch, int(depth)) for arch, depth in nets))
    all_depths = sorted({depth for _, depth in nets})
    markers = {depth: DEPTH_MARKERS[i % len(DEPTH_MARKERS)] for i, depth in enumerate(all_depths)}
    styles = {}
    for arch in dict.fromkeys(arch for arch, _ in nets):
        depths = sorted({depth for a, depth in nets if a == arch})
        for i, depth in enumerate(depths):
            styles[(arch, depth)] = {"color": shade(arch_style(arch)["color"], i, len(depths)),
                                     "marker": markers[depth]}
    return styles


def depth_data(runs: pd.DataFrame) -> pd.DataFrame:
    """The depth figure's points: aggregate() plus each arch's legend label."""
    table = aggregate(runs)
    return table.assign(label=table["arch"].map(lambda a: arch_style(a)["label"]))


def lost_data(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs the depth figure's means leave out because they stopped early: diverged
    runs, and failed ones where the point has runs that are done; each with its last
    recorded errors (NaN before its first epoch) and how far it got."""
    averaged = runs["run"].isin(runs_to_average(runs)["run"])
    lost = runs[runs["status"].eq("diverged") | (runs["status"].eq("failed") & ~averaged)]
    columns = ["run", "arch", "depth", "seed", "status", "epochs", "iterations"]
    held = f"{evaluated_split(runs)}_err"
    return lost[columns].assign(train_err=lost["final_train_err"], **{held: lost[f"final_{held}"]}) \
        .reset_index(drop=True)


def curves_data(metrics: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The curves figure's lines, one point per metrics.csv row: per arch, depth and epoch,
    the mean and std (ddof=1; NaN for one seed) over the seeds the depth figure averages
    (results.runs_to_average; n: how many reached that epoch), and each diverged run on its
    own (``diverged``, ``seed``), up to the iteration where it stopped."""
    keys, held = ["arch", "depth", "epoch"], f"{evaluated_split(runs)}_err"  # test_err, or val_err
    columns = keys + ["iteration", "train_err", held, "train_err_std", f"{held}_std", "n", "diverged", "seed"]
    used = metrics[metrics["run"].isin(runs_to_average(runs)["run"])]
    frames = []
    if not used.empty:
        means = used.groupby(keys).agg(iteration=("iteration", "mean"), train_err=("train_err", "mean"),
                                       **{held: (held, "mean")}, train_err_std=("train_err", "std"),
                                       **{f"{held}_std": (held, "std")}, n=("seed", "size"))
        frames.append(means.reset_index().assign(diverged=False, seed=np.nan))
    diverged = metrics[metrics["run"].isin(runs.loc[runs["status"].eq("diverged"), "run"])]
    if not diverged.empty:
        frames.append(diverged.assign(train_err_std=np.nan, n=1, diverged=True, **{f"{held}_std": np.nan})[columns])
    if not frames:
        return pd.DataFrame(columns=columns)
    return sort_runs(pd.concat(frames, ignore_index=True)[columns])


def title_of(info: dict, what: str) -> str:
    """Dataset (flagged when synthetic), what is shown, and the run length: the full
    schedule is in report.md and every summary.json, too long for a title."""
    name, _ = study_name(info)
    length = f"\n{name}: {info['length']}" if info.get("length") else ""
    # the names come from the runs' files (inert already); a '$' would start mathtext there
    return f"{dataset_label(info)}: {what}{length}".replace("$", r"\$")


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _styled(draw):
    """Draw inside RC; tick sizes set on the axes too, since ticks are made again when saved."""
    @functools.wraps(draw)
    def styled(*args, **kwargs) -> Figure:
        with matplotlib.rc_context(RC):
            figure = draw(*args, **kwargs)
        for ax in figure.axes:
            ax.tick_params(which="both", labelsize=RC["xtick.labelsize"], width=0.6)
        return figure
    return styled


def _suptitle(figure: Figure, title: str, lines: int = 2) -> None:
    """The title in at most ``lines`` lines across the figure (figstyle.fit_title)."""
    text, size = fit_title(figure, title, RC["figure.titlesize"], lines)
    figure.suptitle(text, fontsize=size)


def _markevery(n: int) -> int:
    return max(1, -(-n // MAX_MARKERS))


def _bottom_legend(figure: Figure, handles: list, ncols: int, note: str = "") -> None:
    """The legend below the panels, where it can hide no data; ``note``, what else a reader
    must know to read the figure, as its title (a figure's supxlabel would overlap it)."""
    if handles or note:
        figure.legend(handles=handles, labels=[_label_of(h) for h in handles], loc="outside lower center",
                      ncols=max(1, min(ncols, len(handles))),
                      title=wrap(note, figure, RC["legend.fontsize"]) or None,
                      title_fontsize=RC["legend.fontsize"])


# --------------------------------------------------------------------------- error vs depth
def _depth_axis(ax, depths) -> None:
    """Depth on a log axis in every figure: sweeps space depths roughly geometrically
    (8, 20, 56; 10, 30, 100, 300; 20 ... 1202), which a log axis spreads evenly."""
    depths = sorted({int(d) for d in depths if d > 0})
    ax.set_xscale("log")
    if depths:
        ax.set_xlim(depths[0] / 1.3, depths[-1] * 1.3)
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.set_xticks([], minor=True)
    ax.set_xlabel("depth (layers, log scale)")


@_styled
def plot_depth(data: pd.DataFrame, title: str = "", lost: pd.DataFrame | None = None) -> Figure:
    """Final training (left) and test (right) error vs depth, one line per arch; on the right
    the val error instead where ``data`` has it in the test error's place (held_out).

    Lines are the mean over seeds, bands ± their std (none for one seed); hollow
    markers flag points from unfinished runs. ``lost`` (lost_data): runs the mean leaves
    out, each a cross at its last recorded error, so no run disappears without a trace.
    Where ``data`` is chosen_depth_data, one line per arch, each point at its own value, which is
    written beside it in the training error panel; the title in up to three lines (the choice its own).
    """
    held, chosen = held_out(data), "setting" in data
    lost = lost if lost is not None else pd.DataFrame(columns=["arch", "depth", "train_err", f"{held}_err"])
    figure = _new_figure(COLUMN_WIDTH, 3.0)
    axes = figure.subplots(1, 2)
    # swept besides depth: a line per (arch, their values), unless each point is at its chosen value
    settings = [c for c in data.columns if "." in c and not chosen]
    styles = _setting_styles(data, settings)
    entries = {}  # legend label -> handle; one with a band wins over one without
    for ax, metric, name in zip(axes, ("train_err", f"{held}_err"), ("training error", EVALUATED[held])):
        for line, rows in data.groupby(["arch", *settings], sort=False, dropna=False):
            points = rows.dropna(subset=[f"{metric}_mean"]).sort_values("depth")
            if not points.empty:
                handle = _depth_line(ax, points, metric, styles[tuple(map(str, line))])
                label = _label_of(handle)
                entries[label] = handle if isinstance(handle, tuple) else entries.get(label, handle)
        _lost_marks(ax, lost, metric)
        _depth_axis(ax, list(data["depth"]) + list(lost["depth"]))
        ax.set_ylabel(f"{name.split(' (')[0]} (%)")  # the panel's title says the rest
        ax.set_title(f"final {name}".replace(" (", "\n("))
        ax.grid(alpha=0.3)
    handles = list(entries.values())
    if lost[["train_err", f"{held}_err"]].notna().any(axis=None):
        statuses = " or ".join(sorted(set(lost["status"])))
        handles.append(Line2D([], [], color="0.3", marker=LOST_MARKER, linestyle="none", markeredgewidth=1.5,
                              label=f"{statuses} run: its last\nerror (not in the mean)"))
    _bottom_legend(figure, handles, 2, _depth_note(data, lost))
    _suptitle(figure, title, 3 if chosen else 2)
    deepest = data["depth"].max()
    for row in data.dropna(subset=["train_err_mean"]).itertuples() if chosen else ():
        left = row.depth == deepest  # inside the panel: the axis ends just past the deepest point
        axes[0].annotate(row.setting, (row.depth, row.train_err_mean), xytext=(-3 if left else 3, 3),
                         textcoords="offset points", ha="right" if left else "left",
                         fontsize=RC["legend.fontsize"] - 1.5, color=arch_style(row.arch)["color"],
                         gid=f"{row.arch}-{row.depth}:chosen")
    return figure


def _depth_note(data: pd.DataFrame, lost: pd.DataFrame) -> str:
    """How many seeds each point averages, what hollow markers mean, and runs with no point."""
    seeds = data.loc[data["n"] > 0, "n"]
    if seeds.empty:
        note = "no finished epoch yet"
    else:
        low, high = int(seeds.min()), int(seeds.max())
        note = "one seed per point" if high == 1 else _seeds_note(low, high)
    if (~data["finished"] & (data["n"] > 0)).any():
        note += "; hollow: unfinished runs, at their latest epoch"
    early = int(lost["train_err"].isna().sum()) if len(lost) else 0
    if early:
        note += f"; {early} run{'s' if early > 1 else ''} stopped before a first epoch (no point)"
    return note


def _setting_styles(data: pd.DataFrame, settings: list[str]) -> dict:
    """str of (arch, *setting values) -> the depth figure's style of that line: the arch's own, or,
    where settings were swept, a shade of its colour and a marker per value, named in the
    legend (ResNet lr=0.05)."""
    lines = list(dict.fromkeys(tuple(k) for k in data[["arch", *settings]].itertuples(index=False)))
    styles = {}
    for line in lines:
        arch, values = line[0], line[1:]
        style = {**arch_style(arch), "gid": arch}
        if settings:
            own = [other for other in lines if other[0] == arch]
            i = own.index(line)
            named = " ".join(setting_text(k, v) for k, v in zip(settings, values))
            style = {**style, "label": f"{style['label']} {named}", "color": shade(style["color"], i, len(own)),
                     "marker": DEPTH_MARKERS[i % len(DEPTH_MARKERS)], "gid": f"{arch} {named}"}
        styles[tuple(map(str, line))] = style  # as text: a null setting is NaN, which equals nothing
    return styles


def _seeds_note(low: int, high: int) -> str:
    """What the lines and bands of a figure whose points average low to high seeds are."""
    return f"mean ± std of {low if low == high else f'{low}-{high}'} seeds (line ± band)"


def _band(ax, x, mean, std, colour, gid: str) -> bool:
    """mean ± std as a pale band behind its line, where std is known (more than one seed)."""
    if not std.notna().any():
        return False
    ax.fill_between(x, mean - std, mean + std, color=colour, alpha=BAND_ALPHA, linewidth=0, gid=gid)
    return True


def _label_of(handle) -> str:
    return (handle[-1] if isinstance(handle, tuple) else handle).get_label()


def _depth_line(ax, rows: pd.DataFrame, metric: str, style: dict):
    """One line's points on one panel; its legend handle, as drawn: the line, over its band if it has one."""
    look = {"color": style["color"], "marker": style["marker"], "linewidth": 1.4, "markersize": 4.5}
    gid = f"{style['gid']}:{metric}"
    ax.plot(rows["depth"], rows[f"{metric}_mean"], label=style["label"], gid=gid, **look)
    handle = Line2D([], [], label=style["label"], **look)
    if _band(ax, rows["depth"], rows[f"{metric}_mean"], rows[f"{metric}_std"], style["color"], f"{gid}:band"):
        handle = (Patch(color=style["color"], alpha=BAND_ALPHA, linewidth=0), handle)
    unfinished = rows[~rows["finished"]]
    if not unfinished.empty:
        ax.plot(unfinished["depth"], unfinished[f"{metric}_mean"], linestyle="none",
                marker=style["marker"], markersize=4.5, markerfacecolor="white",
                markeredgecolor=style["color"], zorder=3)
    return handle


def _lost_marks(ax, lost: pd.DataFrame, metric: str) -> None:
    """A cross at each lost run's last recorded error, at its depth."""
    for arch, rows in lost.dropna(subset=[metric]).groupby("arch", sort=False):
        rows = rows.sort_values("depth")
        ax.plot(rows["depth"], rows[metric], linestyle="none", marker=LOST_MARKER, markersize=6,
                markeredgewidth=1.5, color=arch_style(arch)["color"], clip_on=False, zorder=4,
                gid=f"{arch}:{metric}:lost")


def chosen_depth_data(runs: pd.DataFrame, metrics: pd.DataFrame,
                      best_by: str) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The depth figure of each (arch, depth) at its value of the swept settings chosen on the
    validation split (compare.choose): its points (depth_data of those runs, with ``setting``, the
    value, and its <best_by>_mean and _std), its lost runs (lost_data; an (arch, depth) with nothing
    to choose keeps all of its own), and the choice in words for the title."""
    choice = choose(with_final(runs, metrics, best_by), best_by)
    shown, missing = at_chosen(runs, choice), unchosen(choice)
    scores = [c for c in choice.columns if c.endswith(("_mean", "_std"))]
    data = depth_data(shown).merge(choice.loc[choice["chosen"], ["arch", "depth", "setting", *scores]],
                                   on=["arch", "depth"], how="left")
    nothing = (runs["arch"] + "-" + runs["depth"].astype(str)).isin(missing)
    lost = lost_data(runs[runs["run"].isin(shown["run"]) | nothing])
    words = selection_phrase([c for c in choice.columns if "." in c], best_by)
    return data, lost, words + (f"; none for {', '.join(missing)} (a run diverged at every value)" if missing else "")


# --------------------------------------------------------------------------- training curves
def _iteration_axis(ax) -> None:
    """Whole iterations from 0, 12.5k-style labels from 10,000 up."""
    ax.set_xlim(left=0)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True, min_n_ticks=2))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value / 1000:g}k" if value >= 10_000
                                               else f"{value:g}"))
    ax.set_xlabel("iterations")


@_styled
def plot_curves(data: pd.DataFrame, title: str = "", zoom: float | None = None) -> Figure:
    """One panel per arch, one line pair per depth: training error dashed, test error (val
    error where ``data`` has it instead: held_out) bold, a point per metrics.csv row, each the
    mean over seeds with a band of ± their std where there are several; a diverged run as its
    own line with a cross where it stopped.
    ``zoom``: the error axis ends there (He et al. 2016, Fig. 6: 20 %)."""
    archs, held = list(dict.fromkeys(data["arch"])), held_out(data)
    styles = net_styles(zip(data["arch"], data["depth"]))
    figure = _new_figure(PAGE_WIDTH, 3.1)
    axes = figure.subplots(1, max(len(archs), 1), sharey=True, squeeze=False)[0]
    entries, banded = [], False
    for ax, arch in zip(axes, archs):
        lines = data[data["arch"] == arch].groupby(["depth", "diverged", "seed"], sort=False, dropna=False)
        for (depth, diverged, seed), curve in lines:
            name = f"{arch}-{int(depth)}" + (f"-s{int(seed)}" if diverged else "")
            style = styles[(arch, int(depth))]
            banded |= _curve_lines(ax, name, curve.sort_values("iteration"), style, bool(diverged), zoom, held)
            end = int(curve["iteration"].max())
            label = f"{arch}-{int(depth)}" + (f" (seed {int(seed)}: diverged at it. {end:,})" if diverged else "")
            entries.append(Line2D([], [], color=style["color"], marker=style["marker"], label=label,
                                  **TEST_STYLE))
        ax.set_title(arch_style(arch)["label"])
        _iteration_axis(ax)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(0, zoom) if zoom else axes[0].set_ylim(bottom=0)
    axes[0].set_ylabel("error (%)")
    entries += [Line2D([], [], color="0.3", label="training error (dashed)", **TRAIN_STYLE),
                Line2D([], [], color="0.3", label=f"{EVALUATED[held]} (bold)", **TEST_STYLE)]
    seeds = data.loc[~data["diverged"].astype(bool), "n"]
    if banded:
        entries.append(Patch(color="0.3", alpha=BAND_ALPHA, linewidth=0, label="± std over seeds"))
    if data["diverged"].any():
        entries.append(Line2D([], [], color="0.3", marker=LOST_MARKER, linestyle="none", markeredgewidth=1.5,
                              label="where a diverged run stopped"))
    cut = zoom and (data[["train_err", f"{held}_err"]] > zoom).any(axis=None)
    notes = [_seeds_note(int(seeds.min()), int(seeds.max()))] if banded else []
    if cut:
        notes.append(f"error axis cut at {zoom:g} % (--zoom): points above it are not shown, "
                     "crosses above it sit on the top edge")
    _bottom_legend(figure, entries, 4, "; ".join(notes))
    _suptitle(figure, title)
    return figure


def _curve_lines(ax, name: str, curve: pd.DataFrame, style: dict, diverged: bool, zoom, held: str) -> bool:
    """The training (dashed, hollow markers) and test (bold; ``held``: val, see held_out) lines
    of one net, each over its band of ± std where it averages several seeds; a cross at the last
    point of a diverged run, on the top edge when that is above ``zoom``. Whether it drew a band."""
    banded = False
    for column, line_style, part in (("train_err", TRAIN_STYLE, "train"), (f"{held}_err", TEST_STYLE, held)):
        points = curve.dropna(subset=[column])
        face = "white" if part == "train" else style["color"]
        ax.plot(points["iteration"], points[column], color=style["color"], marker=style["marker"],
                markevery=_markevery(len(points)), markerfacecolor=face, markersize=3.5,
                gid=f"{name}:{part}", **line_style)
        banded |= _band(ax, points["iteration"], points[column], points[f"{column}_std"], style["color"],
                        f"{name}:{part}:band")
        if diverged and not points.empty:
            x, y = points["iteration"].iloc[-1], points[column].iloc[-1]
            ax.plot([x], [min(y, zoom) if zoom else y], linestyle="none", marker=LOST_MARKER, markersize=7,
                    markeredgewidth=1.5, color=style["color"], clip_on=False, zorder=4,
                    gid=f"{name}:{part}:lost")
    return banded


def _write(path: Path, data: bytes) -> Path:
    try:
        atomic_write(path, data)  # put in place at once, without following a link
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror or err}") from None
    return path


def _save(figure: Figure, stem: Path, formats: list[str]) -> list[Path]:
    paths = []
    for fmt in formats:
        buf = io.BytesIO()
        with matplotlib.rc_context(RC):  # the font embedding of pdf and svg is read when saving
            figure.savefig(buf, dpi=DPI, format=fmt)
        paths.append(_write(stem.with_name(f"{stem.name}.{fmt}"), buf.getvalue()))  # a stem may hold a dot
    return paths


def make_figures(results_dir, out_dir=None, formats=("png", "pdf"), results: Results | None = None,
                 train_error: str = "minibatch", zoom: float | None = None, best_by: str | None = None) -> dict:
    """Draw the depth and curves figures of results_dir into out_dir (default <results_dir>/figures),
    and the diagnostics figures where the runs hold diagnostics CSVs (with the default
    training error only: they do not depend on it, and a copy would add nothing).
    ``results``: read_results(results_dir), if the caller has it already.

    ``train_error``: ``minibatch`` (Fig. 6's, the default) or ``clean`` (results.TRAIN_ERRORS).
    ``zoom``: the curves' error axis ends at this % (check_zoom); None: the full range.
    ``best_by``: "val_err" draws the depth figure with each (arch, depth) at the value of the swept
    settings with the lowest mean final validation error (chosen_depth_data); None: a line per value.
    Returns {"paths": [every file written], "figures": {name: the Figure drawn, e.g. "depth",
    "curves"}, "depth": depth_data, "lost": lost_data,
    "curves": curves_data, "warnings": [a line per damaged diagnostics file, left out], and
    "responses"/"gradients"/"identity" data where drawn}.
    depth_lost.csv (the crosses of the depth figure) is written when some run diverged or failed.
    """
    formats, zoom = check_formats(formats), check_zoom(zoom)
    results = read_results(results_dir) if results is None else results
    runs, metrics = pick_train_error(results.runs, results.metrics, train_error)
    info = experiment_info(runs)
    depth, lost, curves = depth_data(runs), lost_data(runs), curves_data(metrics, runs)
    if curves.empty:
        raise UserError(f"nothing to plot in {results_dir}: no run has finished an epoch")
    chosen = ""
    if best_by is not None:  # before any file is written: a sweep without a validation split is a UserError
        depth, lost, chosen = chosen_depth_data(runs, metrics, best_by)
    out = Path(out_dir) if out_dir is not None else Path(results_dir) / "figures"
    try:
        real_dir(out)
    except OSError as err:
        raise UserError(f"cannot write to {out}: {err.strerror or err}") from None
    # results.TRAIN_ERRORS says it in full; a title has room for this much
    which = "" if train_error == "minibatch" else " (clean training error)"
    training = "training error" if train_error == "minibatch" else "clean training error"
    diagnostics = DIAGNOSTIC_FIGURES if train_error == "minibatch" else {}
    what = "final error vs depth" + which + (f"\n{chosen}" if chosen else "")
    figures, made, paths, damaged = {}, {"lost": lost}, [], []

    def keep(name: str, figure: Figure, data: pd.DataFrame) -> None:
        """The figure in each format, and its numbers as <name>.csv."""
        figures[name], made[name] = figure, data
        paths.extend(_save(figure, out / name, formats))
        paths.append(_write(out / f"{name}.csv", data.to_csv(index=False).encode()))

    keep("depth", plot_depth(depth, title_of(info, what), lost), depth)
    if not lost.empty:
        paths.append(_write(out / "depth_lost.csv", lost.to_csv(index=False).encode()))
    # One line per (arch, depth) in the figures below: where the sweep varied other settings,
    # one figure of each per value (curves-lr=0.05.png), never a mean over different settings.
    for suffix, named, part in _by_setting(runs):
        curves = curves_data(metrics[metrics["run"].isin(part["run"])], part)
        if curves.empty:
            continue
        curves_title = title_of(info, f"{training} (dashed) and {EVALUATED[info['evaluated_on']]} (bold){named}")
        keep(f"curves{suffix}", plot_curves(curves, curves_title, zoom), curves)
        for kind, (prepare, draw, what) in diagnostics.items():
            table = load_diagnostics(results_dir, kind, part, damaged)  # a damaged file is left out
            data = prepare(table) if table is not None else None
            if data is not None and not data.empty:  # e.g. Fig. 7 before any run measured past epoch 0
                keep(f"{kind}{suffix}", draw(data, title_of(info, what + named)), data)
    warnings = [file_warning(err, "that run is left out of its figure") for err in damaged]
    return {"paths": paths, "figures": figures, "warnings": warnings, **made}


def _by_setting(runs: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(file name suffix, title suffix, runs) per value of the swept settings (results.swept_settings):
    ("-lr=0.05", " (lr=0.05)", its runs); one ("", "", all runs) where only arch, depth and seed vary."""
    settings = swept_settings(runs)
    if not settings:
        return [("", "", runs)]
    parts = []
    for values, part in runs.groupby(settings, sort=False, dropna=False):
        texts = [setting_text(k, v) for k, v in zip(settings, values)]
        parts.append(("-" + "-".join(texts), f" ({', '.join(texts)})", part))
    return parts


# --------------------------------------------------------------------------- inside the networks
def _seed_mean(table: pd.DataFrame, keys: list[str], values: list[str]) -> pd.DataFrame:
    agg = {v: (v, "mean") for v in values} | {"n": ("seed", "nunique")}
    return sort_runs(table.groupby(["arch", "depth", *keys], sort=False).agg(**agg).reset_index())


def _net_line(ax, lines: pd.DataFrame, x: str, y: str, style: dict, gid: str, window,
              what: str) -> tuple[bool, list[str]]:
    """One net's line, named as its gid's first part. A point with no measured neighbour (alone,
    or between gaps) has no segment to be seen by: it is drawn as a larger ring on top. Where
    the line goes beyond ``window`` (None: no limit), a triangle on that edge at its extreme.
    Whether there was a ring, and ``what`` (the line's name) with each extreme, in a few words."""
    ax.plot(lines[x], lines[y], color=style["color"], marker=style["marker"], markersize=3,
            markevery=_markevery(len(lines)), linewidth=1.1, label=gid.split(":")[0], gid=gid)
    values = lines[y].to_numpy(dtype=float)
    known = np.isfinite(values)
    lone = known & ~np.r_[False, known[:-1]] & ~np.r_[known[1:], False]
    if lone.any():
        ax.plot(lines[x][lone], lines[y][lone], linestyle="none", marker=style["marker"], markersize=6,
                markerfacecolor="none", markeredgecolor=style["color"], markeredgewidth=1.4, zorder=3,
                gid=f"{gid}:lone")
    beyond, edges = [], ((window[1], values > window[1], "^", "up to"),
                         (window[0], (values > 0) & (values < window[0]), "v", "down to")) if window else ()
    for edge, outside, marker, word in edges:
        if outside.any():
            i = int(np.flatnonzero(outside)[np.argmax(np.abs(np.log10(values[outside] / edge)))])
            ax.plot([lines[x].iloc[i]], [edge], linestyle="none", marker=marker, markersize=6, color=style["color"],
                    clip_on=False, zorder=4, gid=f"{gid}:beyond")
            mantissa, exponent = f"{values[i]:.1e}".split("e")
            beyond.append(rf"{what} {word} ${mantissa}\times10^{{{int(exponent)}}}$")
    return bool(lone.any()), beyond


def _net_handles(styles: dict) -> list:
    """One legend entry per net, named arch-depth, in legend order."""
    return [Line2D([], [], color=s["color"], marker=s["marker"], markersize=3, linewidth=1.1,
                   label=f"{arch}-{depth}") for (arch, depth), s in styles.items()]


def responses_data(table: pd.DataFrame) -> pd.DataFrame:
    """Fig. 7's lines: each layer's response std at the end of training, mean over seeds;
    ``rank``: the layer's place when a net's stds are sorted in descending order; ``bn``:
    the BN statistics the measurement used (responses.csv's column; "" where not recorded)."""
    rows = table[table["point"] == "end"]
    end = _seed_mean(rows, ["layer", "stage", "block"], ["std"])
    end["rank"] = end.groupby(["arch", "depth"])["std"].rank(ascending=False, method="first").astype(int)
    bn = rows["bn"].fillna("").astype(str) if "bn" in rows else pd.Series("", index=rows.index)
    used = bn.groupby([rows["arch"], rows["depth"]]).agg(lambda s: "/".join(sorted(set(s))))
    return end.merge(used.rename("bn").reset_index(), on=["arch", "depth"], how="left")


# What Fig. 7's caption says of the BN statistics its responses were measured with (column bn)
BN_NOTES = {"running": "Responses after BN with its running statistics (eval mode), as the trained net is tested.",
            "batch": "Responses after BN with each batch's own statistics (train mode)."}


def _bn_note(data: pd.DataFrame) -> str:
    used = sorted(set("/".join(data["bn"].fillna("")).split("/")) - {""}) if "bn" in data else []
    if not used:
        return "Which BN statistics the responses were measured with is not recorded."
    if len(used) > 1:
        return "BN statistics differ between runs (" + " and ".join(used) + "; column bn of responses.csv)."
    return BN_NOTES.get(used[0], f"Responses after BN with its {used[0]} statistics.")


@_styled
def plot_responses(data: pd.DataFrame, title: str = "") -> Figure:
    """He et al. 2016, Fig. 7: std of each 3x3 layer's response (after BN, before the ReLU or
    the addition) in layer order (top) and sorted by magnitude (bottom); log y once the
    largest std is WIDE_RANGE times the smallest. Its caption names the BN statistics used."""
    figure = _new_figure(COLUMN_WIDTH, 4.6)
    top, bottom = figure.subplots(2, 1)
    styles = net_styles(zip(data["arch"], data["depth"]))
    positive = data["std"][data["std"] > 0]
    wide = len(positive) > 0 and positive.max() / positive.min() > WIDE_RANGE
    nets = data.groupby(["arch", "depth"], sort=False)
    window = log_window([lines["std"] for _, lines in nets], FIG7_DECADES) if wide else None
    beyond = []
    for ax, x, part in ((top, "layer", "layer"), (bottom, "rank", "sorted")):
        if wide:
            ax.set_yscale("log")
        for (arch, depth), lines in nets:
            label, style = f"{arch}-{depth}", styles[(arch, int(depth))]
            _, found = _net_line(ax, lines.sort_values(x), x, "std", style, f"{label}:{part}", window, label)
            beyond += found if ax is top else []
        if window:
            ax.set_ylim(window)
        ax.set_ylabel("std" + (" (log scale)" if wide else ""))
        ax.grid(alpha=0.3)
        if wide:
            readable_log_ticks(ax)
    top.set_xlabel("layer index (forward order)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    _bottom_legend(figure, _net_handles(styles), 3, "\n".join([_bn_note(data), *_beyond_note(beyond)]))
    _suptitle(figure, title)
    return figure


def gradients_data(table: pd.DataFrame) -> pd.DataFrame:
    """Gradient norms at initialisation and at the end, per layer (weights) and per block
    (block outputs), mean over seeds."""
    points = table[table["point"].isin(["init", "end"])]
    return _seed_mean(points, ["point", "kind", "index", "stage"], ["norm"])


# y label of each identity value; F(x), s(x) and the gaps are explained under the figure
IDENTITY_VALUES = {"branch_ratio": "‖F(x)‖ / ‖s(x)‖", "change": "‖block(x) − s(x)‖ / ‖s(x)‖"}
IDENTITY_NOTE = ("F(x): the block's residual branch before the addition (in a plain block: the block itself); "
                 "s(x): its shortcut (identity or projection), in a plain block its input.\n"
                 "Gaps: a plain block that changes the shape (the first of a stage) has no s(x) to compare with.")


def identity_data(table: pd.DataFrame) -> pd.DataFrame:
    """The identity test at initialisation and at the end, per block, mean over seeds."""
    points = table[table["point"].isin(["init", "end"])]
    return _seed_mean(points, ["point", "block", "stage"], list(IDENTITY_VALUES))


def _grid(rows: list[tuple], title: str, note: str = "") -> Figure:
    """One row of panels per (key, its data, x column, x label, y column, y label); columns:
    at initialisation, at the end, on one log y range per row so that the two compare. One
    line per (arch, depth). A row spans at most MAX_DECADES (figstyle.log_window): a line
    beyond it ends in a triangle on the edge, and the legend names its extreme."""
    figure = _new_figure(PAGE_WIDTH, 2.4 * len(rows) + 0.9)
    axes = figure.subplots(len(rows), 2, squeeze=False, sharey="row")
    styles = net_styles([net for row in rows for net in zip(row[1]["arch"], row[1]["depth"])])
    lone, beyond = [], []
    for panels, (key, part, x, xlabel, y, ylabel) in zip(axes, rows):
        window = log_window([lines[y] for _, lines in part.groupby(["point", "arch", "depth"])], MAX_DECADES)
        for ax, point in zip(panels, ("init", "end")):
            ax.set_yscale("log")
            for (arch, depth), lines in part[part["point"] == point].groupby(["arch", "depth"], sort=False):
                name, style, lines = f"{arch}-{depth}", styles[(arch, depth)], lines.sort_values(x)
                when = "at initialisation" if point == "init" else "at the end"
                ring, found = _net_line(ax, lines, x, y, style, f"{name}:{key}:{point}", window,
                                        f"{name} ({key.replace('_', ' ')}, {when})")
                lone += [name] if ring else []
                beyond += found
            ax.set_title("at initialisation" if point == "init" else "at the end of training")
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
        if window:
            panels[0].set_ylim(window)
        readable_log_ticks(panels[0])
        panels[0].set_ylabel(ylabel)
    notes = [note] if note else []
    notes += _beyond_note(beyond)
    if lone:
        notes.append(f"A ring: a point with no measured neighbour ({', '.join(dict.fromkeys(lone))}).")
    _bottom_legend(figure, _net_handles(styles), 6, "\n".join(notes))
    _suptitle(figure, title)
    return figure


def _beyond_note(beyond: list[str]) -> list[str]:
    return ["▲ / ▼ on an edge: a line beyond the scale, " + "; ".join(beyond)] if beyond else []


@_styled
def plot_gradients(data: pd.DataFrame, title: str = "") -> Figure:
    """Norm of the loss gradient w.r.t. each layer's weights (top) and each block's output
    (bottom), at initialisation (left) and at the end (right), log scale."""
    rows = [("weight", data[data["kind"] == "weight"], "index", "layer index (forward order)",
             "norm", "‖∂loss/∂W‖ (layer weights)"),
            ("block_output", data[data["kind"] == "block_output"], "index", "block index (forward order)",
             "norm", "‖∂loss/∂(block output)‖")]
    return _grid(rows, title)


@_styled
def plot_identity(data: pd.DataFrame, title: str = "") -> Figure:
    """Per block, how far it is from the identity, at initialisation and at the end, log scale."""
    rows = [(value, data, "block", "block index", value, label) for value, label in IDENTITY_VALUES.items()]
    return _grid(rows, title, IDENTITY_NOTE)


DIAGNOSTIC_FIGURES = {
    "responses": (responses_data, plot_responses, "layer responses (He et al. 2016, Fig. 7), end of training"),
    "gradients": (gradients_data, plot_gradients, "gradient norms on a fixed batch"),
    "identity": (identity_data, plot_identity, "the identity test: how far each block is from the identity"),
}
