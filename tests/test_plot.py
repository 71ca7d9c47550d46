"""plot.py: the numbers on the figures are the seeds' mean and std; files get written."""

import re
import statistics

import numpy as np
import pandas as pd
import pytest
from helpers.cli import cli
from helpers.runs import make_run
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import rgb_to_hsv, to_rgb
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from resexp.analysis.figstyle import MIN_CONTRAST, contrast_on_white
from resexp.analysis.plot import (
    ARCH_STYLE,
    DIAGNOSTIC_FIGURES,
    MAX_DECADES,
    curves_data,
    depth_data,
    gradients_data,
    identity_data,
    lost_data,
    make_figures,
    plot_curves,
    plot_depth,
    plot_gradients,
    plot_identity,
    plot_responses,
    responses_data,
    title_of,
)
from resexp.analysis.results import experiment_info, load_metrics, load_runs
from resexp.errors import UserError

# Final training errors per (arch, depth) and seed: plain degrades with depth, resnet does not.
FINAL_TRAIN = {
    ("plain", 8): [6.0, 7.0, 6.5],
    ("plain", 20): [8.0, 9.5, 8.25],
    ("resnet", 8): [5.5, 6.0, 5.0],
    ("resnet", 20): [4.0, 4.5, 3.75],
}


def hue(colour) -> float:
    return round(float(rgb_to_hsv(to_rgb(colour))[0]), 3)


def lightness(colour) -> float:
    return float(sum(to_rgb(colour)))


def make_sweep(root, **kwargs):
    for (arch, depth), finals in FINAL_TRAIN.items():
        for seed, final in enumerate(finals):
            train = [40.0 + seed, 20.0 + depth / 10, final]
            make_run(root, arch, depth, seed, train, [t + 4.0 + seed for t in train], **kwargs)
    return root


def expected_points(root) -> pd.DataFrame:
    """mean/std of the last metrics row over seeds, read straight from the CSV files."""
    rows = []
    for run_dir in sorted(root.glob("*-s*")):
        arch, depth, _ = run_dir.name.split("-")
        last = pd.read_csv(run_dir / "metrics.csv").iloc[-1]
        rows.append({"arch": arch, "depth": int(depth), "train": last["train_err"],
                     "test": last["test_err"]})
    table = pd.DataFrame(rows).groupby(["arch", "depth"])
    return pd.DataFrame({
        "train_mean": table["train"].agg(statistics.mean),
        "train_std": table["train"].agg(statistics.stdev),
        "test_mean": table["test"].agg(statistics.mean),
        "test_std": table["test"].agg(statistics.stdev),
    })


def depth_lines(ax) -> dict:
    """label -> (x, y, band's lower edge, band's upper edge) of each line of the depth figure;
    the edges None where the line has no band."""
    bands = {band.get_gid(): band for band in ax.collections if isinstance(band, PolyCollection)}
    found = {}
    for line in ax.get_lines():
        if not re.search(r":(train|test)_err$", line.get_gid() or ""):
            continue
        x, band = line.get_xdata(), bands.get(f"{line.get_gid()}:band")
        low = high = None
        if band is not None:
            corners = band.get_paths()[0].vertices
            low = [corners[np.isclose(corners[:, 0], at), 1].min() for at in x]
            high = [corners[np.isclose(corners[:, 0], at), 1].max() for at in x]
        found[line.get_label()] = (x, line.get_ydata(), low, high)
    return found


def test_depth_points_are_mean_and_std_over_seeds(tmp_path):
    make_sweep(tmp_path)
    result = make_figures(tmp_path, formats=("png",))
    expected = expected_points(tmp_path)
    data = result["depth"].set_index(["arch", "depth"]).loc[expected.index]
    for ours, theirs in [("train_err_mean", "train_mean"), ("train_err_std", "train_std"),
                         ("test_err_mean", "test_mean"), ("test_err_std", "test_std")]:
        assert data[ours].to_numpy() == pytest.approx(expected[theirs].to_numpy())
    written = pd.read_csv(tmp_path / "figures" / "depth.csv").set_index(["arch", "depth"])
    assert written.loc[expected.index, "train_err_mean"].to_numpy() == pytest.approx(
        expected["train_mean"].to_numpy())


def test_depth_figure_draws_those_points(tmp_path):
    make_sweep(tmp_path)
    expected = expected_points(tmp_path)
    figure = plot_depth(make_figures(tmp_path, formats="png")["depth"], "title")
    train_ax, test_ax = figure.axes
    for ax, column in [(train_ax, "train"), (test_ax, "test")]:
        lines = depth_lines(ax)
        assert set(lines) == {"plain", "residual (resnet)"}
        for arch, label in [("plain", "plain"), ("resnet", "residual (resnet)")]:
            x, y, low, high = lines[label]
            want = expected.loc[arch]
            assert list(x) == [8, 20]
            assert y == pytest.approx(want[f"{column}_mean"].to_numpy())
            assert low == pytest.approx((want[f"{column}_mean"] - want[f"{column}_std"]).to_numpy())
            assert high == pytest.approx((want[f"{column}_mean"] + want[f"{column}_std"]).to_numpy())
    assert "depth" in train_ax.get_xlabel() and "training error" in train_ax.get_ylabel()


def test_curves_are_the_seed_mean_of_the_metrics(tmp_path):
    make_sweep(tmp_path)
    result = make_figures(tmp_path, formats=("png",))
    metrics = pd.concat(pd.read_csv(d / "metrics.csv").assign(run=d.name)
                        for d in tmp_path.glob("*-s*"))
    metrics[["arch", "depth"]] = metrics["run"].str.extract(r"^(.+)-(\d+)-s\d+$")
    metrics["depth"] = metrics["depth"].astype(int)
    expected = metrics.groupby(["arch", "depth", "epoch"])[["iteration", "train_err", "test_err"]].mean()
    curves = result["curves"].set_index(["arch", "depth", "epoch"]).loc[expected.index]
    for column in expected.columns:
        assert curves[column].to_numpy() == pytest.approx(expected[column].to_numpy())
    assert (curves["n"] == 3).all()
    written = pd.read_csv(tmp_path / "figures" / "curves.csv")
    assert len(written) == len(expected)


def test_curves_figure_dashed_train_bold_test_arch_colour_depth_shade(tmp_path):
    make_sweep(tmp_path)
    data = curves_data(load_metrics(tmp_path), load_runs(tmp_path))
    figure = plot_curves(data, "title")
    assert [ax.get_title() for ax in figure.axes] == ["plain", "residual (resnet)"]
    ax = figure.axes[0]
    lines = {line.get_gid(): line for line in ax.get_lines() if line.get_gid()}
    train, test = lines["plain-20:train"], lines["plain-20:test"]
    want = data[(data["arch"] == "plain") & (data["depth"] == 20)]
    assert list(train.get_xdata()) == want["iteration"].tolist()
    assert list(train.get_ydata()) == pytest.approx(want["train_err"].tolist())
    assert list(test.get_ydata()) == pytest.approx(want["test_err"].tolist())
    assert train.get_linestyle() == "--" and test.get_linestyle() == "-"
    assert test.get_linewidth() > train.get_linewidth()
    assert train.get_color() == test.get_color() != lines["plain-8:test"].get_color()
    other = {line.get_gid(): line for line in figure.axes[1].get_lines() if line.get_gid()}
    # colour is the arch: resnet-20 is not plain-20's colour; depth is the marker, shared
    assert hue(other["resnet-20:test"].get_color()) != hue(test.get_color())
    assert other["resnet-20:test"].get_marker() == test.get_marker() != lines["plain-8:test"].get_marker()


def test_png_and_pdf_written_and_not_empty(tmp_path):
    make_sweep(tmp_path)
    out = tmp_path / "elsewhere" / "figs"
    paths = make_figures(tmp_path, out_dir=out)["paths"]
    names = sorted(p.name for p in paths)
    assert names == ["curves.csv", "curves.pdf", "curves.png", "depth.csv", "depth.pdf", "depth.png"]
    for path in paths:
        assert path.parent == out and path.stat().st_size > 0
    assert (out / "depth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "depth.pdf").read_bytes()[:5] == b"%PDF-"


def test_partial_sweep_plots_what_exists(tmp_path):
    make_run(tmp_path, "plain", 20, 0, [30.0, 12.0])
    make_run(tmp_path, "resnet", 20, 0, [30.0], status="running", epochs_planned=5)
    make_run(tmp_path, "resnet", 56, 0, [], status="running")  # no finished epoch: skipped
    result = make_figures(tmp_path, formats=["png"])
    depth = result["depth"].set_index(["arch", "depth"])
    assert depth.loc[("resnet", 20), ["n", "finished", "train_err_mean"]].tolist() == [1, False, 30.0]
    assert depth.loc[("resnet", 56), "n"] == 0
    assert set(zip(result["curves"]["arch"], result["curves"]["depth"])) == {("plain", 20), ("resnet", 20)}
    figure = plot_depth(result["depth"])
    assert "unfinished" in figure.legends[0].get_title().get_text()


def test_title_flags_synthetic_data_and_names_schedule(tmp_path):
    make_sweep(tmp_path, synthetic=True, schedule="SGD lr 0.1, 3 epochs")
    result = make_figures(tmp_path, formats=("png",))
    assert (tmp_path / "figures" / "depth.png").stat().st_size > 0
    title = title_of(experiment_info(load_runs(tmp_path)), "final error vs depth")
    # runs whose config predates display names get the shipped dataset YAML's
    assert "Fashion-MNIST (synthetic data)" in title
    # the run length reads better than the raw schedule string (that is in report.md)
    assert re.search(r"test_sweep: [\d,]+ iterations \(\d+ epochs\)", title) and "SGD" not in title
    assert result["depth"]["n"].eq(3).all()


@pytest.mark.parametrize("formats", [("png", "jpgx"), "", ("bmp",)])
def test_unknown_format_is_a_user_error(tmp_path, formats):
    make_sweep(tmp_path)
    with pytest.raises(UserError, match="format"):
        make_figures(tmp_path, formats=formats)


def test_unwritable_out_dir_is_a_user_error(tmp_path):
    make_sweep(tmp_path)
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(UserError) as err:
        make_figures(tmp_path, out_dir=tmp_path / "a_file" / "figs", formats=("png",))
    assert "cannot write" in str(err.value) and "\n" not in str(err.value)


def test_runs_of_two_datasets_are_refused(tmp_path):
    make_run(tmp_path, "plain", 20, 0, [10.0], dataset="mnist")
    make_run(tmp_path, "resnet", 20, 0, [10.0], dataset="cifar10")
    with pytest.raises(UserError, match="several datasets"):
        make_figures(tmp_path)


# --------------------------------------------------------------------------- inside the networks
def write_responses(run_dir, stds_by_epoch: dict) -> None:
    """responses.csv as a run writes it: {epoch: [std of layer 1, 2, ...]}."""
    arch, depth, seed = run_dir.name.split("-")
    rows = [{"epoch": epoch, "iteration": epoch * 100, "layer": i + 1, "name": f"l{i}", "stage": 1,
             "block": i, "std": std, "arch": arch, "depth": int(depth), "seed": int(seed[1:])}
            for epoch, stds in stds_by_epoch.items() for i, std in enumerate(stds)]
    pd.DataFrame(rows).to_csv(run_dir / "responses.csv", index=False)


def test_fig7_is_the_seed_mean_in_layer_order_and_sorted(tmp_path):
    ends = {0: [1.0, 3.0, 2.0], 1: [2.0, 5.0, 1.0]}  # seed -> final stds of plain-20's 3 layers
    for seed, end in ends.items():
        run = make_run(tmp_path, "plain", 20, seed, [10.0, 9.0])
        write_responses(run, {0: [9.0, 9.0, 9.0], 2: end})
    make_run(tmp_path, "resnet", 20, 0, [10.0, 8.0])  # no diagnostics: no line, no error
    result = make_figures(tmp_path, formats=("png",))
    data = result["responses"]
    assert data["std"].tolist() == [1.5, 4.0, 1.5] and data["n"].tolist() == [2, 2, 2]
    assert data["rank"].tolist() == [2, 1, 3]  # layer 2 is the largest
    figure = plot_responses(data, "t")
    bottom = figure.axes[1]
    lines = {line.get_gid(): line for ax in figure.axes for line in ax.get_lines()}
    assert list(lines["plain-20:layer"].get_ydata()) == [1.5, 4.0, 1.5]
    assert list(lines["plain-20:sorted"].get_ydata()) == [4.0, 1.5, 1.5]
    assert "sorted" in bottom.get_xlabel()
    written = pd.read_csv(tmp_path / "figures" / "responses.csv")
    assert written["std"].tolist() == [1.5, 4.0, 1.5]
    assert not (tmp_path / "figures" / "gradients.csv").exists()  # no gradients.csv in any run


def test_gradient_figure_is_log_scale_at_init_and_end(tmp_path):
    run = make_run(tmp_path, "resnet", 8, 0, [10.0, 9.0])
    rows = [{"epoch": e, "iteration": 0, "kind": k, "index": i, "stage": 1, "block": i, "name": "x",
             "norm": (e + 1) * i * (10 if k == "weight" else 1), "arch": "resnet", "depth": 8, "seed": 0}
            for e in (0, 1, 2) for k in ("weight", "block_output") for i in (1, 2)]
    pd.DataFrame(rows).to_csv(run / "gradients.csv", index=False)
    data = make_figures(tmp_path, formats=("png",))["gradients"]
    assert set(data["point"]) == {"init", "end"}  # epoch 1 is neither
    figure = plot_gradients(data)
    lines = {line.get_gid(): line for ax in figure.axes for line in ax.get_lines()}
    assert list(lines["resnet-8:weight:init"].get_ydata()) == [10, 20]
    assert list(lines["resnet-8:weight:end"].get_ydata()) == [30, 60]
    assert list(lines["resnet-8:block_output:end"].get_ydata()) == [3, 6]
    assert all(ax.get_yscale() == "log" for ax in figure.axes)


def test_clean_training_error_is_plotted_and_reported_when_asked(tmp_path):
    run = make_run(tmp_path, "plain", 20, 0, [30.0, 12.0])
    metrics = pd.read_csv(run / "metrics.csv").assign(clean_train_loss=[1.0, 0.5], clean_train_err=[25.0, 7.5])
    metrics.to_csv(run / "metrics.csv", index=False)
    assert make_figures(tmp_path, formats=("png",))["depth"]["train_err_mean"].tolist() == [12.0]
    clean = make_figures(tmp_path, formats=("png",), train_error="clean")
    assert clean["depth"]["train_err_mean"].tolist() == [7.5]
    assert clean["curves"]["train_err"].tolist() == [25.0, 7.5]
    from resexp.analysis.report import make_report
    table, markdown = make_report(tmp_path, train_error="clean")
    assert table["train_err_mean"].tolist() == [7.5] and "clean training set in eval mode" in markdown
    make_run(tmp_path, "resnet", 20, 0, [30.0, 12.0])  # trained without train.eval_train
    with pytest.raises(UserError, match="resnet-20-s0 has no clean training error"):
        make_figures(tmp_path, train_error="clean")


def test_no_fig7_before_a_measurement_after_training(tmp_path):
    run = make_run(tmp_path, "resnet", 8, 0, [30.0], status="running", epochs_planned=5)
    write_responses(run, {0: [1.0, 1.0]})  # measured at initialisation only, so far
    result = make_figures(tmp_path, formats=("png",))
    assert "responses" not in result and not (tmp_path / "figures" / "responses.png").exists()


# --------------------------------------------------------------------------- read as a reviewer would
NETS = [("plain", 8), ("plain", 20), ("plain", 56), ("resnet", 8), ("resnet", 20), ("resnet", 56)]


def diagnostics_tables(stds=lambda arch, depth: [1.0, 1.1, 0.9]) -> dict:
    """responses, gradients and identity tables as load_diagnostics returns them, for NETS."""
    common = [{"arch": a, "depth": d, "seed": 0, "point": p} for a, d in NETS for p in ("init", "end")]
    responses = pd.DataFrame([{**c, "layer": i + 1, "stage": 1, "block": i, "std": std}
                              for c in common for i, std in enumerate(stds(c["arch"], c["depth"]))])
    gradients = pd.DataFrame([{**c, "kind": k, "index": i, "stage": 1, "norm": 1.0 + i / 10}
                              for c in common for k in ("weight", "block_output") for i in (1, 2, 3)])
    identity = pd.DataFrame([{**c, "block": b, "stage": 1, "branch_ratio": 0.5 + b / 10, "change": 0.4 + b / 10}
                             for c in common for b in (1, 2, 3)])
    return {"responses": responses_data(responses), "gradients": gradients_data(gradients),
            "identity": identity_data(identity)}


def net_of(gid) -> tuple[str, int] | None:
    """(arch, depth) of a line drawn for a net: gid 'arch-depth[-sSEED]:...'."""
    found = re.match(r"^([a-z_]+)-(\d+)(?:-s\d+)?:", gid or "")
    return (found.group(1), int(found.group(2))) if found and found.group(1) in ARCH_STYLE else None


def net_lines(figure) -> dict:
    """gid -> line for every line drawn for a net."""
    return {line.get_gid(): line for ax in figure.axes for line in ax.get_lines() if net_of(line.get_gid())}


def test_colour_means_arch_and_shade_and_marker_mean_depth_in_every_figure(tmp_path):
    for arch, depth in NETS:
        make_run(tmp_path, arch, depth, 0, [30.0, 10.0 + depth / 10])
    tables = diagnostics_tables()
    figures = {"curves": plot_curves(curves_data(load_metrics(tmp_path), load_runs(tmp_path))),
               "responses": plot_responses(tables["responses"]), "gradients": plot_gradients(tables["gradients"]),
               "identity": plot_identity(tables["identity"])}
    for name, figure in figures.items():
        lines = net_lines(figure)
        assert {gid.split(":")[0] for gid in lines} == {f"{a}-{d}" for a, d in NETS}, name
        for gid, line in lines.items():
            assert hue(line.get_color()) == hue(ARCH_STYLE[net_of(gid)[0]]["color"]), (name, gid)
        for arch in ("plain", "resnet"):
            first = {d: next(line for gid, line in lines.items() if net_of(gid) == (arch, d)) for d in (8, 20, 56)}
            # deeper nets darker, each depth its own marker, the same marker for both archs
            assert lightness(first[8].get_color()) > lightness(first[20].get_color()) > lightness(first[56].get_color())
            assert len({line.get_marker() for line in first.values()}) == 3, name
        legend_texts = [t.get_text() for t in figure.legends[0].get_texts()]
        assert all(f"{a}-{d}" in " ".join(legend_texts) for a, d in NETS), name  # the legend names each line
    depth_figure = plot_depth(depth_data(load_runs(tmp_path)))
    for ax in depth_figure.axes:
        drawn = [line.get_color() for line in ax.get_lines() if (line.get_gid() or "").endswith("_err")]
        assert {hue(c) for c in drawn} == {hue(ARCH_STYLE[a]["color"]) for a in ("plain", "resnet")}


def test_curves_ticks_are_whole_iterations_from_zero(tmp_path):
    make_run(tmp_path, "plain", 8, 0, [30.0], [35.0], iters_per_epoch=4)  # one point: ticks were 3.96, 3.98, ...
    figure = plot_curves(curves_data(load_metrics(tmp_path), load_runs(tmp_path)))
    figure.canvas.draw()
    ax = figure.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert ax.get_xlim()[0] == 0 and "0" in labels and "4" in labels
    assert all(label.isdigit() for label in labels), labels
    assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] > 35  # the full range unless zoomed


def make_diverged_sweep(root):
    """plain-20 done, plain-56 diverged 50 iterations into its first epoch, resnet-56 done."""
    make_run(root, "plain", 20, 0, [40.0, 12.0, 8.0])
    make_run(root, "resnet", 56, 0, [40.0, 10.0, 5.0])
    make_run(root, "plain", 56, 0, [89.5], [91.0], status="diverged", iters_per_epoch=50, epochs_planned=3)


def test_diverged_run_is_drawn_where_it_stopped(tmp_path):
    make_diverged_sweep(tmp_path)
    result = make_figures(tmp_path, formats=("svg",))
    lines = net_lines(plot_curves(result["curves"]))
    assert list(lines["plain-56-s0:test"].get_xydata()[-1]) == [50, 91.0]
    assert list(lines["plain-56-s0:test:lost"].get_xydata()[0]) == [50, 91.0]
    assert list(lines["plain-56-s0:train:lost"].get_xydata()[0]) == [50, 89.5]
    zoomed = plot_curves(result["curves"], zoom=20)
    assert list(net_lines(zoomed)["plain-56-s0:test:lost"].get_xydata()[0]) == [50, 20]  # on the top edge
    assert "diverged at it. 50" in " ".join(t.get_text() for t in zoomed.legends[0].get_texts())
    assert "cut at 20 %" in zoomed.legends[0].get_title().get_text()

    depth = plot_depth(result["depth"], lost=result["lost"])
    marks = {line.get_gid(): line for ax in depth.axes for line in ax.get_lines() if line.get_gid()}
    assert list(marks["plain:train_err:lost"].get_xydata()[0]) == [56, 89.5]
    assert list(marks["plain:test_err:lost"].get_xydata()[0]) == [56, 91.0]
    assert pd.read_csv(tmp_path / "figures" / "depth_lost.csv")["run"].tolist() == ["plain-56-s0"]


def test_legend_hides_no_point(tmp_path):
    make_diverged_sweep(tmp_path)
    runs = load_runs(tmp_path)
    for figure in (plot_depth(depth_data(runs), "t", lost_data(runs)),
                   plot_curves(curves_data(load_metrics(tmp_path), runs), "t")):
        figure.canvas.draw()
        box = figure.legends[0].get_window_extent()
        assert all(ax.get_legend() is None for ax in figure.axes)
        for ax in figure.axes:
            for line in ax.get_lines():
                points = ax.transData.transform(line.get_xydata())
                assert not any(box.contains(x, y) for x, y in points), line.get_gid()


def test_depth_axis_is_log_with_the_depths_as_ticks_for_cnns_and_mlps(tmp_path):
    for root, nets in ((tmp_path / "cnn", [("plain", 8), ("plain", 20), ("plain", 56)]),
                       (tmp_path / "mlp", [("mlp_plain", 10), ("mlp_plain", 300)])):
        for arch, depth in nets:
            make_run(root, arch, depth, 0, [20.0, 10.0])
        figure = plot_depth(depth_data(load_runs(root)))
        for ax in figure.axes:
            assert ax.get_xscale() == "log"
            assert [t.get_text() for t in ax.get_xticklabels()] == [str(d) for _, d in nets]


def test_fig7_log_axis_when_the_range_is_wide_with_plain_tick_labels():
    wide = diagnostics_tables(lambda arch, depth: [5.0, 1.0, 0.9] if (arch, depth) == ("plain", 56) else [1.0, 1.1])
    figure = plot_responses(wide["responses"])
    figure.canvas.draw()
    for ax in figure.axes:
        assert ax.get_yscale() == "log" and "log" in ax.get_ylabel()
        labels = [t.get_text() for t in ax.get_yticklabels(which="both") if t.get_text()]
        assert len(labels) >= 3 and not any("times" in lab or "^" in lab or "×" in lab for lab in labels), labels
    narrow = plot_responses(diagnostics_tables()["responses"])  # 0.9 ... 1.1: linear
    assert all(ax.get_yscale() == "linear" for ax in narrow.axes)


def test_panel_labels_say_what_each_panel_shows():
    tables = diagnostics_tables()
    gradients = plot_gradients(tables["gradients"])
    top, bottom = gradients.axes[0], gradients.axes[2]
    assert "layer" in top.get_xlabel() and "block" not in top.get_xlabel()
    assert "block" in bottom.get_xlabel() and "layer" not in bottom.get_xlabel()
    identity = plot_identity(tables["identity"])
    labels = " ".join(ax.get_ylabel() for ax in identity.axes)
    assert "shortcut" not in labels and "s(x)" in labels  # plain nets have no shortcut
    note = identity.legends[0].get_title().get_text()
    assert "plain block" in note and "Gaps" in note


@pytest.mark.parametrize("zoom", [0, -5, 150, "abc"])
def test_zoom_out_of_range_is_a_user_error(tmp_path, zoom):
    make_run(tmp_path, "plain", 8, 0, [30.0, 20.0])
    with pytest.raises(UserError, match="--zoom must be"):
        make_figures(tmp_path, formats=("svg",), zoom=zoom)
    assert not (tmp_path / "figures").exists()


def test_zoom_from_the_command_line(tmp_path, monkeypatch, capsys):
    make_run(tmp_path, "plain", 8, 0, [30.0, 20.0, 15.0])
    code, _, stderr = cli(monkeypatch, capsys, "plot", tmp_path, "--zoom", "101")
    assert code == 2 and stderr.strip().splitlines()[-1].startswith("error: --zoom must be")
    code, stdout, _ = cli(monkeypatch, capsys, "plot", "--help")
    assert "--zoom" in stdout and "Fig. 6" in stdout
    monkeypatch.setattr("resexp.analysis.plot.plot_curves", spy := _Spy(plot_curves))
    code, _, stderr = cli(monkeypatch, capsys, "plot", tmp_path, "--zoom", "20", "--format", "svg")
    assert code == 0, stderr
    assert spy.figure.axes[0].get_ylim() == (0, 20)


class _Spy:
    """Calls the wrapped plot function and keeps the figure it made."""
    def __init__(self, draw):
        self.draw, self.figure = draw, None

    def __call__(self, *args, **kwargs):
        self.figure = self.draw(*args, **kwargs)
        return self.figure


# --------------------------------------------------------------------------- what a reviewer checks
def test_depth_legend_draws_what_the_panels_draw(tmp_path):
    """One seed: lines alone, and line glyphs (the legend showed error bars beside "no error
    bars"). Several: a band of ± std behind each line, and the band in its glyph."""
    for arch, depth in [("plain", 8), ("plain", 20), ("resnet", 8), ("resnet", 20)]:
        make_run(tmp_path / "one", arch, depth, 0, [30.0, 10.0])
    single = plot_depth(depth_data(load_runs(tmp_path / "one")))
    assert not any(ax.containers for ax in single.axes)  # no error bars
    assert not any(isinstance(c, PolyCollection) for ax in single.axes for c in ax.collections)
    legend = single.legends[0]
    assert not legend.findobj(LineCollection)  # an error bar's glyph
    assert all(isinstance(handle, Line2D) for handle in legend.legend_handles)
    assert legend.get_title().get_text() == "one seed per point"

    make_sweep(tmp_path / "three")
    several = plot_depth(depth_data(load_runs(tmp_path / "three")))
    for ax, metric in zip(several.axes, ("train_err", "test_err")):
        assert sorted(c.get_gid() for c in ax.collections if isinstance(c, PolyCollection)) == [
            f"{arch}:{metric}:band" for arch in ("plain", "resnet")]
    legend = several.legends[0]
    assert [type(handle) for handle in legend.legend_handles] == [Rectangle, Rectangle]  # band, line on it
    assert not legend.findobj(LineCollection)
    assert "mean ± std of 3 seeds" in legend.get_title().get_text()


def test_curves_of_several_seeds_are_their_mean_in_a_band_of_std(tmp_path):
    make_sweep(tmp_path)
    metrics = pd.concat(pd.read_csv(d / "metrics.csv").assign(run=d.name) for d in tmp_path.glob("*-s*"))
    figure = plot_curves(curves_data(load_metrics(tmp_path), load_runs(tmp_path)))
    for ax, arch in zip(figure.axes, ("plain", "resnet")):
        bands = {c.get_gid(): c for c in ax.collections if isinstance(c, PolyCollection)}
        assert set(bands) == {f"{arch}-{d}:{part}:band" for d in (8, 20) for part in ("train", "test")}
        seeds = metrics[metrics["run"].str.startswith(f"{arch}-20-")].groupby("epoch")["test_err"]
        corners = bands[f"{arch}-20:test:band"].get_paths()[0].vertices[:, 1]
        assert corners.max() == pytest.approx((seeds.mean() + seeds.std()).max())
        assert corners.min() == pytest.approx((seeds.mean() - seeds.std()).min())
    legend = figure.legends[0]
    assert "± std over seeds" in [t.get_text() for t in legend.get_texts()]
    assert "mean ± std of 3 seeds" in legend.get_title().get_text().replace("\n", " ")

    make_run(tmp_path / "one", "plain", 8, 0, [30.0, 20.0])
    single = plot_curves(curves_data(load_metrics(tmp_path / "one"), load_runs(tmp_path / "one")))
    assert not any(isinstance(c, PolyCollection) for c in single.axes[0].collections)
    assert "± std over seeds" not in [t.get_text() for t in single.legends[0].get_texts()]


def test_titles_take_at_most_two_lines_at_the_default_size(tmp_path):
    """The longest titles: an experiment run on another dataset, the clean training error,
    swept settings, Fig. 7 at one column's width (they took 3 and 4 lines)."""
    for arch in ("mlp_plain", "mlp_resnet"):
        for depth in (10, 30, 100, 300):
            make_run(tmp_path, arch, depth, 0, [50.0, 40.0], dataset="mnist", experiment="he2016_cifar10",
                     iters_per_epoch=313)
    runs = load_runs(tmp_path)
    info = experiment_info(runs)
    figures = [
        plot_depth(depth_data(runs), title_of(info, "final error vs depth (clean training error)")),
        plot_responses(diagnostics_tables()["responses"], title_of(info, DIAGNOSTIC_FIGURES["responses"][2])),
        plot_curves(curves_data(load_metrics(tmp_path), runs),
                    title_of(info, "clean training error (dashed) and test error (bold) (lr=0.05, batch_size=64)")),
    ]
    for figure in figures:
        figure.canvas.draw()
        title = figure._suptitle
        assert len(title.get_text().splitlines()) <= 2, title.get_text()
        assert title.get_window_extent().width <= figure.bbox.width
        assert "he2016_cifar10 with dataset=mnist" in title.get_text().replace("\n", " ")  # nothing cut


@pytest.mark.parametrize("bn, says", [("running", "running statistics (eval mode)"),
                                      ("batch", "each batch's own statistics"), (None, "not recorded")])
def test_fig7_caption_names_the_bn_statistics_it_was_measured_with(tmp_path, bn, says):
    run = make_run(tmp_path, "plain", 20, 0, [10.0, 9.0])
    write_responses(run, {0: [1.0, 1.0], 2: [2.0, 1.0]})
    if bn:
        table = pd.read_csv(run / "responses.csv")
        table.assign(bn=["batch", "batch", bn, bn]).to_csv(run / "responses.csv", index=False)
    figure = make_figures(tmp_path, formats=("png",))["figures"]["responses"]
    assert says in figure.legends[0].get_title().get_text().replace("\n", " ")


def test_identity_axes_label_their_top_and_show_a_lone_point():
    """plain-8 has one block with a shortcut to compare: one point, between gaps."""
    rows = []
    for point in ("init", "end"):
        net = {"seed": 0, "point": point}
        rows += [{**net, "arch": "plain", "depth": 8, "block": b, "stage": b, "branch_ratio": r, "change": r}
                 for b, r in ((1, 1.4), (2, np.nan), (3, np.nan))]
        rows += [{**net, "arch": "resnet", "depth": 20, "block": b, "stage": 1, "branch_ratio": r, "change": r}
                 for b, r in enumerate(np.geomspace(1.45, 0.27, 9), 1)]
    figure = plot_identity(identity_data(pd.DataFrame(rows)))
    figure.canvas.draw()
    for ax in figure.axes[::2]:  # the left panels hold the labels of each row
        low, high = np.log10(ax.get_ylim())
        ticks = [np.log10(t) for t, label in zip(ax.get_yticks(), ax.get_yticklabels())
                 if label.get_text() and low <= np.log10(t) <= high]
        assert (high - max(ticks)) / (high - low) < 0.2 and (min(ticks) - low) / (high - low) < 0.2, ticks
    lines = net_lines(figure)
    lone = lines["plain-8:branch_ratio:init:lone"]
    assert list(lone.get_xdata()) == [1]
    assert lone.get_zorder() > lines["resnet-20:branch_ratio:init"].get_zorder()
    assert lone.get_markersize() > lines["plain-8:branch_ratio:init"].get_markersize()
    assert "plain-8" in figure.legends[0].get_title().get_text()


def test_gradient_rows_share_one_range_that_an_exploding_net_cannot_stretch():
    rows = []
    for point in ("init", "end"):
        for kind in ("weight", "block_output"):
            net = {"seed": 0, "point": point, "kind": kind, "stage": 1}
            rows += [{**net, "arch": "mlp_resnet", "depth": 30, "index": i,
                      "norm": (2.0 if point == "init" else 0.05) * (1 + i / 10)} for i in range(1, 11)]
            rows += [{**net, "arch": "mlp_plain", "depth": 10, "index": i,
                      "norm": 10.0 ** (10 - i) if point == "init" else 0.01 * i} for i in range(1, 11)]
    figure = plot_gradients(gradients_data(pd.DataFrame(rows)))
    axes = figure.axes
    assert axes[0].get_ylim() == axes[1].get_ylim() and axes[2].get_ylim() == axes[3].get_ylim()
    low, high = np.log10(axes[0].get_ylim())
    assert high - low <= MAX_DECADES * 1.1
    lines = net_lines(figure)
    for gid, line in lines.items():
        if gid.startswith("mlp_resnet"):  # every other line in view, whole
            assert all(low <= np.log10(y) <= high for y in line.get_ydata()), gid
    assert lines["mlp_plain-10:weight:init:beyond"].get_marker() == "^"
    assert "mlp_plain-10 (weight, at initialisation) up to" in figure.legends[0].get_title().get_text()


def test_every_line_stands_out_on_white(tmp_path):
    """Okabe and Ito's orange in its palest shade (mlp_plain-10) was 1.4:1 on white."""
    for arch in ("mlp_plain", "mlp_resnet"):
        for depth in (10, 30, 100, 300):
            make_run(tmp_path, arch, depth, 0, [30.0, 10.0])
    runs = load_runs(tmp_path)
    for figure in (plot_depth(depth_data(runs)), plot_curves(curves_data(load_metrics(tmp_path), runs))):
        for line in (line for ax in figure.axes for line in ax.get_lines()):
            assert contrast_on_white(line.get_color()) >= MIN_CONTRAST, line.get_gid()


def test_clean_figures_are_only_those_the_training_error_changes(tmp_path):
    run = make_run(tmp_path, "plain", 20, 0, [30.0, 12.0])
    metrics = pd.read_csv(run / "metrics.csv").assign(clean_train_loss=[1.0, 0.5], clean_train_err=[25.0, 7.5])
    metrics.to_csv(run / "metrics.csv", index=False)
    write_responses(run, {0: [1.0, 1.0], 2: [1.2, 0.9]})
    result = make_figures(tmp_path, out_dir=tmp_path / "clean", formats=("png",), train_error="clean")
    assert sorted(p.name for p in (tmp_path / "clean").iterdir()) == [
        "curves.csv", "curves.png", "depth.csv", "depth.png"]  # Fig. 7 is the same with either error
    title = result["figures"]["curves"].get_suptitle().replace("\n", " ")
    assert "clean training error (dashed) and test error (bold)" in title and "(bold) (" not in title
    assert "responses" in make_figures(tmp_path, formats=("png",))["figures"]
