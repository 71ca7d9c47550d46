"""plot.py: the numbers on the figures are the seeds' mean and std; files get written."""

import re
import statistics

import numpy as np
import pandas as pd
import pytest
from helpers.runs import make_run

from resexp.analysis.plot import (
    curves_data,
    make_figures,
    plot_curves,
    plot_depth,
    plot_gradients,
    plot_responses,
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


def errorbars(ax) -> dict:
    """label -> (x, y, lower ends, upper ends) of each errorbar drawn on ax."""
    found = {}
    for container in ax.containers:
        line, _, (bars,) = container.lines
        segments = np.array(bars.get_segments())
        found[container.get_label()] = (line.get_xdata(), line.get_ydata(),
                                        segments[:, 0, 1], segments[:, 1, 1])
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
        bars = errorbars(ax)
        assert set(bars) == {"plain", "residual (resnet)"}
        for arch, label in [("plain", "plain"), ("resnet", "residual (resnet)")]:
            x, y, low, high = bars[label]
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


def test_curves_figure_dashed_train_bold_test_one_colour_per_depth(tmp_path):
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
    assert other["resnet-20:test"].get_color() == test.get_color()


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
    assert "unfinished" in figure.get_supxlabel()


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
