"""compare.py: each (arch, depth) at the setting chosen on the validation split, and each
depth's gap to the shallowest with a bootstrap interval over seeds; through report and plot."""

from __future__ import annotations

import csv
import html
import itertools
import math
import re
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.cli import SWEEP_TINY, cli
from helpers.runs import make_run

import resexp
from resexp.analysis.compare import (
    MIN_SEEDS,
    at_chosen,
    choose,
    depth_gaps,
    gap_interval,
    resampled_gaps,
    unchosen,
    with_final,
)
from resexp.analysis.report import make_report
from resexp.errors import UserError


def runs_table(cells: dict) -> pd.DataFrame:
    """load_runs' columns that compare reads, one row per seed: {(arch, depth, lr): [(train err,
    val err, status), ...]}; the lr in each folder name, as a sweep with an lr axis names it."""
    rows = []
    for (arch, depth, lr), seeds in cells.items():
        for seed, (train, val, status) in enumerate(seeds):
            rows.append({"run": f"{arch}-{depth}-s{seed}" + (f"-lr={lr}" if lr is not None else ""),
                         "arch": arch, "depth": depth, "seed": seed, "status": status,
                         "final_train_err": train, "final_test_err": train + 1, "final_val_err": val,
                         "train.lr": lr})
    return pd.DataFrame(rows)


def done(*vals, train=50.0):
    return [(train, v, "done") for v in vals]


def chosen_lr(choice: pd.DataFrame) -> dict:
    picked = choice[choice["chosen"]]
    return {(a, d): lr for a, d, lr in zip(picked["arch"], picked["depth"], picked["train.lr"])}


# --------------------------------------------------------------------------- choosing
def test_each_depth_gets_the_value_with_the_lowest_mean_val_err():
    runs = runs_table({
        # the lowest single seed (9.0 at lr 0.02) does not choose: the mean does (11.0 at lr 0.05)
        ("plain", 20, 0.1): done(10.0, 12.0, 14.0), ("plain", 20, 0.05): done(11.0, 11.0, 11.0),
        ("plain", 20, 0.02): done(9.0, 20.0, 10.0),
        ("plain", 56, 0.1): done(30.0, 31.0, 32.0), ("plain", 56, 0.05): done(25.0, 26.0, 27.0),
        ("plain", 56, 0.02): done(20.0, 21.0, 19.0),
    })
    choice = choose(runs)
    assert chosen_lr(choice) == {("plain", 20): 0.05, ("plain", 56): 0.02}
    means = choice.set_index(["depth", "setting"])["val_err_mean"]
    assert means[(20, "lr=0.02")] == pytest.approx(13.0) and means[(56, "lr=0.1")] == pytest.approx(31.0)
    assert sorted(at_chosen(runs, choice)["run"]) == sorted(
        [f"plain-20-s{s}-lr=0.05" for s in range(3)] + [f"plain-56-s{s}-lr=0.02" for s in range(3)])


def test_equal_means_go_to_the_smaller_value_whatever_the_order():
    # the larger value listed first; both means 15.0
    runs = runs_table({("resnet", 20, 0.1): done(10.0, 20.0), ("resnet", 20, 0.05): done(15.0, 15.0),
                       ("resnet", 20, 0.2): done(16.0, 16.0)})
    assert chosen_lr(choose(runs)) == {("resnet", 20): 0.05}


def test_a_value_at_which_a_seed_diverged_is_never_chosen():
    runs = runs_table({
        # lr 0.1's done seeds have the lowest mean, but its third seed diverged
        ("plain", 56, 0.1): [(40.0, 5.0, "done"), (41.0, 5.0, "done"), (90.0, 90.0, "diverged")],
        ("plain", 56, 0.05): done(8.0, 8.0, 8.0),
        ("plain", 110, 0.1): [(40.0, 5.0, "done"), (90.0, 90.0, "diverged")],
        ("plain", 110, 0.05): [(90.0, 90.0, "diverged"), (40.0, 5.0, "done")],
    })
    choice = choose(runs)
    assert chosen_lr(choice) == {("plain", 56): 0.05}
    assert unchosen(choice) == ["plain-110"]
    assert not at_chosen(runs, choice)["depth"].eq(110).any()


def test_without_a_setting_axis_or_a_validation_split_it_is_one_line():
    with pytest.raises(UserError, match="vary none"):
        choose(runs_table({("plain", 20, None): done(1.0), ("plain", 56, None): done(2.0)}))
    no_val = runs_table({("plain", 20, 0.1): done(1.0, 2.0), ("plain", 20, 0.05): done(3.0, math.nan)})
    with pytest.raises(UserError, match=r"plain-20-s1-lr=0.05 has none: .*dataset.val_size") as err:
        choose(no_val)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="--best-by must be one of val_err"):
        choose(no_val, "test_err")


def test_the_final_val_err_is_each_runs_last_row():
    runs = pd.DataFrame({"run": ["a", "b", "c"]})
    metrics = pd.DataFrame({"run": ["a", "a", "b", "b"], "epoch": [2, 1, 1, 2], "val_err": [7.0, 9.0, 3.0, 4.0]})
    assert with_final(runs, metrics, "val_err")["final_val_err"].tolist()[:2] == [7.0, 4.0]
    assert math.isnan(with_final(runs, metrics, "val_err")["final_val_err"].iloc[2])
    assert with_final(runs, metrics.drop(columns="val_err"), "val_err")["final_val_err"].isna().all()


# --------------------------------------------------------------------------- the bootstrap
def test_the_interval_is_the_percentile_of_resamples_drawn_within_each_depth():
    shallow, deep, draws = [10.0, 11.5, 9.0], [14.0, 15.0, 16.5, 13.0], 1000
    gaps = resampled_gaps(shallow, deep, draws, seed=7)
    # each replicate is a mean of 4 of the deep seeds minus a mean of 3 of the shallow ones, each drawn
    # with replacement from its own depth (pooling the seven would give other values)
    possible = {round(np.mean(b) - np.mean(a), 9) for a in itertools.product(shallow, repeat=3)
                for b in itertools.product(deep, repeat=4)}
    assert len(gaps) == draws and {round(g, 9) for g in gaps} <= possible and len(set(gaps)) > 50
    ordered = sorted(gaps)
    def percentile(p):  # linear interpolation between the two nearest order statistics, by hand
        at = p / 100 * (draws - 1)
        low = int(at)
        return ordered[low] + (at - low) * (ordered[low + 1] - ordered[low])
    assert gap_interval(shallow, deep, draws, seed=7) == pytest.approx((percentile(2.5), percentile(97.5)))
    assert gap_interval(shallow, deep, draws, seed=7) == gap_interval(shallow, deep, draws, seed=7)
    assert gap_interval(shallow, deep, draws, seed=8) != gap_interval(shallow, deep, draws, seed=7)


def test_separated_seeds_exclude_0_and_overlapping_ones_include_it():
    runs = runs_table({
        ("plain", 20, None): [(5.0, 0, "done"), (5.2, 0, "done"), (4.9, 0, "done")],
        ("plain", 56, None): [(12.0, 0, "done"), (12.4, 0, "done"), (11.8, 0, "done")],
        ("resnet", 20, None): [(5.0, 0, "done"), (7.0, 0, "done"), (6.0, 0, "done")],
        ("resnet", 56, None): [(6.5, 0, "done"), (5.0, 0, "done"), (6.0, 0, "done"), (7.0, 0, "done")],
        ("resnet", 110, None): [(4.0, 0, "done"), (4.5, 0, "done")],
    })
    gaps = depth_gaps(runs, []).set_index(["arch", "depth"])
    plain, resnet = gaps.loc[("plain", 56)], gaps.loc[("resnet", 56)]
    assert plain["gap"] == pytest.approx(statistics.mean([12.0, 12.4, 11.8]) - statistics.mean([5.0, 5.2, 4.9]))
    assert 0 < plain["gap_low"] < plain["gap"] < plain["gap_high"]
    assert resnet["gap_low"] < 0 < resnet["gap_high"] and resnet["n"] == 4 and resnet["shallowest"] == 20
    assert math.isnan(gaps.loc[("resnet", 110), "gap_low"]) and gaps.loc[("resnet", 110), "n"] < MIN_SEEDS


# --------------------------------------------------------------------------- in the report
def test_the_report_says_which_gaps_exclude_0(tmp_path):
    finals = {("plain", 20): [5.0, 5.2, 4.9], ("plain", 56): [12.0, 12.4, 11.8],
              ("resnet", 20): [5.0, 7.0, 6.0], ("resnet", 56): [6.5, 5.0, 6.0], ("resnet", 110): [4.0, 4.5]}
    for (arch, depth), errs in finals.items():
        for seed, err in enumerate(errs):
            make_run(tmp_path, arch, depth, seed, [30.0, err])
    table, markdown = make_report(tmp_path)
    lines = {line.split(" | ")[0].lstrip("| "): line for line in markdown.splitlines() if " vs " in line}
    assert "degrades: the interval excludes 0" in lines["plain-56 vs plain-20"]
    assert "the interval holds 0" in lines["resnet-56 vs resnet-20"]
    assert f"no interval: fewer than {MIN_SEEDS} seeds" in lines["resnet-110 vs resnet-20"]
    row = pd.read_csv(tmp_path / "report.csv").set_index(["arch", "depth"]).loc[("plain", 56)]
    low, high = gap_interval(finals[("plain", 20)], finals[("plain", 56)])
    assert (row["gap_low"], row["gap_high"]) == pytest.approx((low, high))
    assert f"[{low:+.2f}, {high:+.2f}]" in lines["plain-56 vs plain-20"]


# --------------------------------------------------------------------------- end to end
def final_rows(out: Path) -> dict:
    """{run folder name: its last metrics.csv row}, read with csv alone."""
    found = {}
    for metrics in out.glob("*/metrics.csv"):
        with open(metrics, newline="") as f:
            found[metrics.parent.name] = list(csv.DictReader(f))[-1]
    return found


def test_best_by_val_err_through_the_cli(tmp_path, monkeypatch, capsys):
    out = tmp_path / "lr"
    code, _, _ = cli(monkeypatch, capsys, "sweep", "--archs", "plain", "--depths", "8,14", "--out", out, *SWEEP_TINY,
                     "train.epochs=1", "train.diagnostics=off", "dataset.val_size=64", "train.lr=0.1,0.05")
    assert code == 0
    last = final_rows(out)
    expected = {}  # depth -> (lr, train err, val err): the lowest final val err; a tie goes to the smaller lr
    for depth in (8, 14):
        val = {lr: float(last[f"plain-{depth}-s0-lr={lr}"]["val_err"]) for lr in (0.05, 0.1)}
        lr = min(val, key=lambda v: (val[v], v))
        expected[depth] = (lr, float(last[f"plain-{depth}-s0-lr={lr}"]["train_err"]), val[lr])

    code, stdout, _ = cli(monkeypatch, capsys, "report", out, "--best-by", "val_err")
    assert code == 0 and "each (arch, depth) at the lr with the lowest final val err" in stdout
    table = pd.read_csv(out / "report.csv").set_index("depth")
    assert len(table) == 2
    for depth, (lr, train, val) in expected.items():
        assert table.loc[depth, "train.lr"] == lr
        assert table.loc[depth, "train_err_mean"] == pytest.approx(train)
        assert table.loc[depth, "val_err_mean"] == pytest.approx(val)
    assert f"plain-14 lr={expected[14][0]} vs plain-8 lr={expected[8][0]}" in stdout
    assert "no interval: fewer than 3 seeds" in stdout

    code, _, _ = cli(monkeypatch, capsys, "plot", out, "--best-by", "val_err", "--format", "svg")
    depth_csv = pd.read_csv(out / "figures" / "depth.csv").set_index("depth")
    assert code == 0 and {d: depth_csv.loc[d, "train.lr"] for d in (8, 14)} == {d: e[0] for d, e in expected.items()}
    # svg keeps text as text: the title's lines, and the chosen lr written beside each point
    svg = (out / "figures" / "depth.svg").read_text()
    texts = [html.unescape(t) for t in re.findall(r"<text[^>]*>(.*?)</text>", svg, re.S)]
    assert "each (arch, depth) at the lr with the lowest final val err" in " ".join(texts)
    assert sorted(t for t in texts if t.startswith("lr=")) == sorted(f"lr={e[0]}" for e in expected.values())
    # the Python API takes the same choice
    api = resexp.report(out, out=tmp_path / "api", best_by="val_err").table.set_index("depth")
    assert api["train.lr"].to_dict() == {d: e[0] for d, e in expected.items()}


def test_best_by_without_a_validation_split_or_a_setting_axis_is_one_line(tmp_path, monkeypatch, capsys):
    plain = tmp_path / "plain"
    for depth in (20, 56):
        make_run(plain, "plain", depth, 0, [30.0, 10.0])
    code, _, stderr = cli(monkeypatch, capsys, "plot", plain, "--best-by", "val_err")
    assert code == 2 and stderr.count("\n") == 1 and "vary none" in stderr
    assert not (plain / "figures").exists()
    swept = tmp_path / "swept"
    for lr in (0.1, 0.05):  # an lr axis, trained without dataset.val_size: no val_err column
        make_run(swept, "plain", 20, 0, [30.0, 10.0]).rename(swept / f"plain-20-s0-lr={lr}")
    for command in ("plot", "report"):
        code, _, stderr = cli(monkeypatch, capsys, command, swept, "--best-by", "val_err")
        assert code == 2 and stderr.count("\n") == 1 and "dataset.val_size" in stderr
    assert not (swept / "report.md").exists()
    with pytest.raises(UserError, match="dataset.val_size"):
        resexp.plot(swept, best_by="val_err")
