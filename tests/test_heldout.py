""""test" means the dataset's test split only: a run on a dataset without one evaluates the
images held out of its training split and names them val, in its files, its log line, and
every table and figure made from it; a run with a test split says test as before."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers.cli import TINY
from helpers.formats import write_cifar_binary
from helpers.runs import make_run
from rich.console import Console

from resexp.analysis.compare import choose
from resexp.analysis.plot import make_figures
from resexp.analysis.report import make_report
from resexp.analysis.results import format_status, load_metrics, load_runs, read_results, status_table
from resexp.data import cifar_binary
from resexp.data.cifar_binary import CIFAR10
from resexp.errors import UserError
from resexp.run.files import COLUMNS, DamagedFile, parse_log
from resexp.settings.compose import load_config
from resexp.train.command import TrainOutcome
from resexp.train.loop import fit

REPO = Path(__file__).resolve().parents[1]
PER_FILE = 6  # images per CIFAR file: 30 training images, the last 5 held out
HELD_OUT = 5
RUN_SETTINGS = [o for o in TINY if not o.startswith("dataset")] + ["train.batch_size=5", "train.epochs=2",
                                                                   "train.diagnostics=off"]
VAL_HEADER = ["epoch", "iteration", "lr", "train_loss", "train_err", "val_loss", "val_err",
              "seconds", "images_per_s", "elapsed"]


def train(out: Path, cfg) -> tuple[dict, str]:
    """fit() of ``cfg`` into ``out``: (its summary, what it printed)."""
    printed = io.StringIO()
    summary = fit(cfg, out, console=Console(file=printed, width=300))
    return summary, printed.getvalue()


def header(run: Path) -> list[str]:
    return (run / "metrics.csv").read_text().splitlines()[0].split(",")


def last_row(run: Path) -> dict:
    return list(csv.DictReader(io.StringIO((run / "metrics.csv").read_text())))[-1]


@pytest.fixture(scope="module")
def held_out_run(tmp_path_factory):
    """resnet-8 trained on CIFAR-10's binary version without its test file (30 images, 5 held
    out by dataset.val_size): (results folder, summary, what it printed)."""
    tmp = tmp_path_factory.mktemp("held_out")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RESEXP_DATA", str(tmp / "data"))
        patch.delenv("RESEXP_CONFIG_DIR", raising=False)
        write_cifar_binary(tmp / "src", CIFAR10, PER_FILE, skip=CIFAR10.test)
        md5 = {name: hashlib.md5((tmp / "src" / CIFAR10.folder / name).read_bytes()).hexdigest()
               for name in CIFAR10.train}
        small = dataclasses.replace(CIFAR10, records=dict.fromkeys(CIFAR10.train + CIFAR10.test, PER_FILE), md5=md5)
        patch.setitem(cifar_binary.VERSIONS, "torchvision.datasets.CIFAR10", small)
        cfg = load_config(["dataset=cifar10", f"dataset.source={tmp / 'src'}", "dataset.download=false",
                           f"dataset.train_size={5 * PER_FILE}", f"dataset.val_size={HELD_OUT}", *RUN_SETTINGS])
        summary, printed = train(tmp / "out", cfg)
    return tmp / "out", summary, printed


@pytest.fixture(scope="module")
def test_split_run(tmp_path_factory):
    """resnet-8 on the synthetic images, which have a test split, with a validation split beside it."""
    tmp = tmp_path_factory.mktemp("test_split")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("RESEXP_CONFIG_DIR", raising=False)
        cfg = load_config([*TINY, "train.epochs=1", "train.diagnostics=off", "dataset.val_size=64"])
        summary, printed = train(tmp / "out", cfg)
    return tmp / "out", summary, printed


# --------------------------------------------------------------------------- the run's own files and line
def test_a_run_without_a_test_split_names_its_held_out_error_val(held_out_run):
    out, summary, printed = held_out_run
    run = out / "resnet-8-s0"
    assert header(run) == VAL_HEADER  # the val pair in the test pair's place, and no test column
    last = last_row(run)
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk["status"] == "done" and on_disk["evaluated_on"] == "val"
    assert on_disk["final_val_err"] == float(last["val_err"]) and on_disk["val_images"] == HELD_OUT
    assert "final_test_err" not in on_disk and "test_images" not in on_disk
    lines = [line for line in printed.splitlines() if " epoch " in line]
    assert len(lines) == 2
    assert all(f"val err (held-out training images) {float(r['val_err']):.2f}%" in line
               for line, r in zip(lines, csv.DictReader(io.StringIO((run / "metrics.csv").read_text()))))
    assert "test" not in printed
    assert TrainOutcome(out, on_disk).summary_line().endswith(f"val err {on_disk['final_val_err']:.2f}%")


def test_a_run_with_a_test_split_still_says_test(test_split_run):
    out, summary, printed = test_split_run
    run = out / "resnet-8-s0"
    assert header(run) == COLUMNS + ["val_loss", "val_err"]
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk["evaluated_on"] == "test" and on_disk["test_images"] == 128
    assert on_disk["final_test_err"] == float(last_row(run)["test_err"]) and "final_val_err" not in on_disk
    assert f"test err {float(last_row(run)['test_err']):.2f}%" in printed and "held-out" not in printed
    runs = load_runs(out)
    assert runs["evaluated_on"].tolist() == ["test"]
    assert runs["final_val_err"].iloc[0] == pytest.approx(float(last_row(run)["val_err"]))
    text = format_status(status_table(out))
    assert "test_err" in text.splitlines()[0] and "val_err" not in text
    _, markdown = make_report(out)
    assert "| test err (%) |" in markdown and "held-out" not in markdown
    figures = make_figures(out, formats=["png"])["figures"]
    assert "and test error (bold)" in figures["curves"].get_suptitle()
    assert "test error (bold)" in legend(figures["curves"])


# --------------------------------------------------------------------------- what the analysis shows of it
def legend(figure) -> list[str]:
    return [t.get_text() for t in figure.legends[0].get_texts()]


def assert_shown_as_held_out(out: Path) -> None:
    """status, report (md and csv) and the figures of ``out`` name the held-out error as such."""
    text = format_status(status_table(out))
    assert "val_err" in text.splitlines()[0] and "test_err" not in text
    assert text.splitlines()[-1].startswith("val_err: the error on images held out of the training split")
    table, markdown = make_report(out)
    assert "| val err (%, held-out training images) |" in markdown and "| test err (%) |" not in markdown
    assert "Val err is the error on images held out of the training split" in markdown
    assert {"val_err_mean", "val_err_std"} <= set(table.columns) and "test_err_mean" not in table.columns
    made = make_figures(out, formats=["png"])
    curves, depth = made["figures"]["curves"], made["figures"]["depth"]
    assert "and held-out error (val, training images) (bold)" in curves.get_suptitle()
    assert "held-out error (val, training images) (bold)" in legend(curves)
    assert not [t for t in legend(curves) + [curves.get_suptitle()] if "test" in t]
    assert depth.axes[1].get_title() == "final held-out error\n(val, training images)"
    assert "val_err_mean" in made["depth"].columns and "val_err" in made["curves"].columns
    assert "test_err" not in made["curves"].columns


def test_status_report_and_figures_say_held_out(held_out_run):
    out, summary, _ = held_out_run
    runs = load_runs(out)
    assert runs["evaluated_on"].tolist() == ["val"] and math.isnan(runs["final_test_err"].iloc[0])
    assert runs["final_val_err"].iloc[0] == summary["final_val_err"]
    assert_shown_as_held_out(out)


@pytest.fixture
def old_format(tmp_path):
    """A copy of results/quick_cifar10: runs made before evaluated_on was recorded, on CIFAR-10's
    training files alone, whose 5,000 held-out images were logged as test_loss, test_err."""
    source = REPO / "results" / "quick_cifar10"
    if not source.is_dir():
        pytest.skip("results/quick_cifar10 is not in this checkout")
    out = tmp_path / "quick_cifar10"
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("figures", "report.*", "*.pt", "responses.csv",
                                                               "gradients.csv", "identity.csv"))
    runs = sorted(p for p in out.iterdir() if (p / "metrics.csv").is_file())
    assert len(runs) == 6 and all(header(run) == COLUMNS for run in runs)
    assert all("evaluated_on" not in json.loads((run / "summary.json").read_text()) for run in runs)
    return out, runs


def test_a_run_from_before_the_change_is_read_as_held_out(old_format):
    out, folders = old_format
    results = read_results(out)
    runs, metrics = results.runs.set_index("run"), results.metrics
    assert set(runs["evaluated_on"]) == {"val"}
    for folder in folders:
        logged = pd.read_csv(folder / "metrics.csv")
        assert runs.at[folder.name, "final_val_err"] == logged["test_err"].iloc[-1]
        assert math.isnan(runs.at[folder.name, "final_test_err"]) and math.isnan(runs.at[folder.name, "test_images"])
        mine = metrics[metrics["run"] == folder.name]
        assert mine["val_err"].tolist() == logged["test_err"].tolist()
    assert "test_err" not in metrics.columns and "test_loss" not in metrics.columns
    assert_shown_as_held_out(out)


@pytest.mark.parametrize("change", ["no val_size", "test_images other than val_size"])
def test_an_old_run_is_held_out_only_where_every_sign_says_so(old_format, change):
    out, folders = old_format
    run = folders[0]
    for other in folders[1:]:
        shutil.rmtree(other)
    if change == "no val_size":
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["dataset"]["val_size"] = 0
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    else:
        summary = json.loads((run / "summary.json").read_text())
        (run / "summary.json").write_text(json.dumps({**summary, "test_images": 10_000}))
    runs = load_runs(out)
    assert runs["evaluated_on"].tolist() == ["test"]
    assert runs["final_test_err"].iloc[0] == pd.read_csv(run / "metrics.csv")["test_err"].iloc[-1]
    assert "test_err" in load_metrics(out).columns


# --------------------------------------------------------------------------- what cannot be mixed or chosen
def test_one_folder_of_test_and_held_out_runs_is_refused(tmp_path):
    make_run(tmp_path, "plain", 20, 0, [30.0, 20.0])
    make_run(tmp_path, "resnet", 20, 0, [30.0, 18.0], evaluated_on="val")  # logged as test by an older resexp
    runs = load_runs(tmp_path).set_index("run")
    assert runs.at["resnet-20-s0", "final_val_err"] == 23.0 and math.isnan(runs.at["resnet-20-s0", "final_test_err"])
    assert runs.at["plain-20-s0", "final_test_err"] == 25.0
    text = format_status(status_table(tmp_path))
    assert "test_err" in text and "val_err" in text  # each run's own, side by side
    for make in (make_report, make_figures):
        with pytest.raises(UserError, match=r"evaluated on the test split \(plain-20-s0.*held out of the "
                                            r"training split \(resnet-20-s0"):
            make(tmp_path)


def test_best_by_val_err_is_refused_where_val_is_the_error_shown(tmp_path):
    for lr in (0.1, 0.05):
        run = make_run(tmp_path, "plain", 20, 0, [30.0, 20.0 + lr], evaluated_on="val")
        run.rename(tmp_path / f"plain-20-s0-lr={lr}")
    with pytest.raises(UserError, match="these runs have no test split"):
        choose(load_runs(tmp_path), "val_err")


def test_metrics_header_holds_the_test_pair_or_the_val_pair(tmp_path):
    row = "1,10,0.1,2.0,50.0,2.1,51.0,1.0,100.0,1.0\n"
    log = parse_log(tmp_path / "metrics.csv", (",".join(VAL_HEADER) + "\n" + row).encode())
    assert log.columns == VAL_HEADER and log.rows[0]["val_err"] == 51.0
    neither = [c for c in VAL_HEADER if not c.startswith("val_")]
    with pytest.raises(DamagedFile, match="missing test_loss, test_err"):
        parse_log(tmp_path / "metrics.csv", (",".join(neither) + "\n").encode())


def test_tensorboard_ends_a_held_out_run_without_a_test_error(tmp_path):
    from resexp.inside.tensorboard import TBLog, held

    log = TBLog(tmp_path)
    log.epoch({"epoch": 1, "iteration": 5, "train_err": 60.0, "val_err": 55.0}, last=True)
    log.close()
    steps, _ = held(tmp_path)
    assert steps["final/train_err"] == {5} and steps["epoch/val_err"] == {5}
    assert not [tag for tag in steps if "test" in tag]
