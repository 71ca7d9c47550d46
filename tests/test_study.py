"""A study of one's own: any setting as a sweep axis, the command each run records, a
finished run extended, and a schedule that would silently do nothing refused."""

from __future__ import annotations

import math
import pickle
import signal
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers.cli import SWEEP_TINY, TINY, cli, rows, sweep_here
from helpers.runs import make_run
from helpers.interrupt import interrupt_after_checkpoints
from omegaconf import OmegaConf

from resexp.analysis.plot import depth_data, make_figures, plot_depth
from resexp.analysis.report import make_report
from resexp.analysis.results import aggregate, load_runs
from resexp.errors import UserError
from resexp.run.folder import RunDir, parse_run_name, run_name
from resexp.settings.compose import load_config, shipped_config_dir
from resexp.sweep import plan as sw
from resexp.sweep.saved import planned_names, saved_spec
from resexp.train.schedule import make_schedule, planned_schedule

TIMING = {"seconds", "images_per_s", "elapsed"}
# SWEEP_TINY with its lr decay inside a 2-epoch run (iteration 4 of 8), as an extension must keep it.
SHORT = [*SWEEP_TINY, "train.epochs=2", "train.milestones=[1]"]


def numbers(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows(run_dir)]


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


# --------------------------------------------------------------------------- run folder names
@pytest.mark.parametrize("axes, name", [
    ({}, "plain-20-s0"),
    ({"train.lr": 0.05}, "plain-20-s0-lr=0.05"),
    ({"train.lr": 1e-05, "train.batch_size": 128}, "plain-20-s0-batch_size=128-lr=1e-05"),
    ({"model.shortcut": "B", "train.weight_decay": 0.0005}, "plain-20-s0-model.shortcut=B-weight_decay=0.0005"),
    ({"dataset.train_subset": None, "train.nesterov": True}, "plain-20-s0-dataset.train_subset=null-nesterov=true"),
    ({"model.widths": [16, 32, 64], "train.milestones": []}, "plain-20-s0-model.widths=[16,32,64]-milestones=[]"),
])
def test_run_names_carry_the_extra_axes_and_read_back(axes, name):
    assert run_name("plain", 20, 0, axes) == name
    assert parse_run_name(name) == {"arch": "plain", "depth": 20, "seed": 0, **axes}


def test_names_without_extra_axes_read_as_before():
    assert parse_run_name("mlp_plain-30-s2") == {"arch": "mlp_plain", "depth": 30, "seed": 2}
    assert parse_run_name("figures") is None and parse_run_name("plain-20-s0-lr=") is None


@pytest.mark.parametrize("value", [float("inf"), "a/b", "two words", "0.5"])
def test_a_value_no_folder_name_can_hold_is_one_line(value):
    """inf and '0.5' (text) would not read back as themselves; a slash or a space is no file name."""
    with pytest.raises(UserError, match="cannot be written in a run folder's name"):
        run_name("plain", 20, 0, {"model.shortcut" if isinstance(value, str) else "train.lr": value})


# --------------------------------------------------------------------------- planning
def test_any_setting_with_several_values_is_an_axis_of_the_plan(tmp_path):
    spec, _ = sw.resolve_spec("plain,resnet", "8,14", None, [*SWEEP_TINY, "train.lr=0.1,0.05"], tmp_path)
    runs = sw.plan(spec, tmp_path)
    assert spec.axes == {"train.lr": [0.1, 0.05]} and len(runs) == 8  # twice the 2 x 2 runs
    assert {r.name: r.cfg.train.lr for r in runs if r.arch == "plain" and r.depth == 8} == \
        {"plain-8-s0-lr=0.1": 0.1, "plain-8-s0-lr=0.05": 0.05}
    # choice() and range() as in Hydra
    spec, _ = sw.resolve_spec("resnet", "8", None, [*SWEEP_TINY, "train.batch_size=choice(32,64)",
                                                    "train.warmup_iters=range(0,2)"], tmp_path)
    names = [r.name for r in sw.plan(spec, tmp_path)]
    assert names == ["resnet-8-s0-batch_size=32-warmup_iters=0", "resnet-8-s0-batch_size=32-warmup_iters=1",
                     "resnet-8-s0-batch_size=64-warmup_iters=0", "resnet-8-s0-batch_size=64-warmup_iters=1"]
    # each value as its config holds it: lr=1 is 1.0, so the names planned and saved agree
    spec, _ = sw.resolve_spec("resnet", "8", None, [*SWEEP_TINY, "train.lr=1,0.5"], tmp_path)
    assert spec.axes == {"train.lr": [1.0, 0.5]} and isinstance(spec.axes["train.lr"][0], float)
    assert [r.name for r in sw.plan(spec, tmp_path)] == ["resnet-8-s0-lr=1.0", "resnet-8-s0-lr=0.5"]


@pytest.mark.parametrize("override, says", [
    ("launcher.jobs=1,2", "launcher.jobs cannot take several values: how a sweep trains its runs"),
    ("dataset.root=a,b", "dataset.root cannot take several values: a path or code"),
    ("train.device=cpu,auto", "train.device cannot take several values: it does not change what a run computes"),
    ("dataset=synthetic,mnist", "dataset cannot take several values: a results folder holds one dataset"),
    ("train.lr=interval(0.01,0.1)", "train.lr takes a list, range() or choice(), not an interval"),
    ("train.lr=0.1,abc", "train.lr must be a number, got 'abc'"),
    ("train.lr=0.1,0.10", "train.lr lists 0.1 more than once"),
    ("model.shortcut=A,a", "shortcut must be one of A, B"),
])
def test_a_setting_that_cannot_be_swept_is_one_line(tmp_path, monkeypatch, capsys, override, says):
    code, stdout, stderr = cli(monkeypatch, capsys, "sweep", "--archs", "resnet", "--depths", "8", "--out",
                               tmp_path / "out", *SWEEP_TINY, override, "--dry-run")
    assert (code, stdout) == (2, "") and says in one_line(stderr)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- an lr sweep, end to end


def test_an_lr_sweep_resumes_from_its_folder_alone_as_the_uninterrupted_one_in_workers(tmp_path, monkeypatch,
                                                                                       capfd):
    """Stopped after the first lr's first epoch, the sweep goes on with `--out DIR` alone
    (its axes saved in sweep.yaml) and ends as the same sweep trained at once by two workers
    (--jobs 2); each run records the command that made it."""
    args = ["sweep", "--archs", "resnet", "--depths", "8", *SHORT, "train.lr=0.1,0.05"]
    with monkeypatch.context() as m:
        interrupt_after_checkpoints(m, 1)
        assert cli(m, capfd, *args, "--out", tmp_path / "cut")[0] == 130
    cut = tmp_path / "cut"
    assert yaml.safe_load((cut / "sweep.yaml").read_text())["axes"] == {"train.lr": [0.1, 0.05]}
    assert planned_names(saved_spec(cut)) == ["resnet-8-s0-lr=0.1", "resnet-8-s0-lr=0.05"]
    code, stdout, _ = cli(monkeypatch, capfd, "status", cut)
    assert code == 0 and [ln.split()[:2] for ln in stdout.splitlines()[1:3]] == \
        [["resnet-8-s0-lr=0.05", "new"], ["resnet-8-s0-lr=0.1", "partial"]]

    code, stdout, stderr = cli(monkeypatch, capfd, "sweep", "--out", cut)
    assert code == 0 and stdout.strip() == f"sweep {cut}: 2 done", stderr
    assert "resnet-8-s0-lr=0.1: resuming after epoch 1" in stderr
    code, _, stderr = cli(monkeypatch, capfd, *args, "--jobs", "2", "--out", tmp_path / "par")
    assert code == 0, stderr
    for name in ("resnet-8-s0-lr=0.1", "resnet-8-s0-lr=0.05"):
        assert numbers(cut / name) == numbers(tmp_path / "par" / name) and len(rows(cut / name)) == 2
        config = yaml.safe_load((cut / name / "config.yaml").read_text())
        assert config["train"]["lr"] == parse_run_name(name)["train.lr"]
        command = yaml.safe_load((tmp_path / "par" / name / "command.yaml").read_text())
        assert command["argv"][1:] == [*args[:3], *map(str, args[3:]), "--jobs", "2", "--out", str(tmp_path / "par")]
        again = load_config(command["overrides"], command["config_dirs"])  # it makes the run's own config
        assert OmegaConf.to_container(again) == {**config, "launcher": OmegaConf.to_container(again)["launcher"]}


def test_a_slurm_job_trains_into_its_runs_named_folder(tmp_path):
    """The job is pickled with the run's origin (submitit's way), and trains the run it names."""
    from resexp.sweep.slurm import TrainJob

    spec, out = sw.resolve_spec("resnet", "8", None, [*SHORT, "train.lr=choice(0.05)"], tmp_path / "out")
    r = sw.plan(spec, out)[0]
    job = pickle.loads(pickle.dumps(TrainJob(OmegaConf.to_yaml(r.cfg), str(out), (), r.origin)))
    handler = signal.getsignal(signal.SIGTERM)
    try:
        assert job() == "done"
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert RunDir(out / "resnet-8-s0-lr=0.05").read_summary()["status"] == "done"


# --------------------------------------------------------------------------- analysis
def lr_run(root: Path, arch: str, depth: int, lr: float, train_errs, seed: int = 0) -> Path:
    """A finished run of an lr sweep, its files as the trainer writes them."""
    plain = make_run(root, arch, depth, seed, train_errs)
    named = plain.rename(plain.with_name(run_name(arch, depth, seed, {"train.lr": lr})))
    config = yaml.safe_load((named / "config.yaml").read_text())
    config["train"].update(lr=lr, batch_size=32)
    (named / "config.yaml").write_text(yaml.safe_dump(config))
    return named


def test_tables_report_and_depth_figure_have_a_line_per_swept_value(tmp_path):
    for lr, (shallow, deep) in {0.1: (10.0, 30.0), 0.05: (12.0, 20.0)}.items():
        for arch in ("plain", "resnet"):
            lr_run(tmp_path, arch, 20, lr, [shallow, shallow])
            lr_run(tmp_path, arch, 56, lr, [deep, deep])
        lr_run(tmp_path, "plain", 56, lr, [deep + 2, deep + 2], seed=1)
    runs = load_runs(tmp_path)
    assert {"train.lr", "train.batch_size"} <= set(runs.columns) and set(runs["train.batch_size"]) == {32}
    table = aggregate(runs)
    point = table[(table["arch"] == "plain") & (table["depth"] == 56)].set_index("train.lr")
    assert point.loc[0.05, "n"] == 2 and point.loc[0.05, "train_err_mean"] == 21.0  # its own seeds only
    assert point.loc[0.1, "train_err_mean"] == 31.0
    _, markdown = make_report(tmp_path)
    header = next(ln for ln in markdown.splitlines() if ln.startswith("| arch"))
    assert header.startswith("| arch | depth | lr | params")
    assert "| plain | 56 | 0.05 |" in markdown
    figure = plot_depth(depth_data(runs))
    labels = figure.legends[0].get_texts()
    assert sorted(t.get_text() for t in labels) == sorted(f"{name} lr={lr}" for lr in (0.05, 0.1)
                                                          for name in ("plain", "residual (resnet)"))
    made = make_figures(tmp_path, formats=("png",))
    assert {p.name for p in made["paths"]} >= {"curves-lr=0.1.png", "curves-lr=0.05.png", "depth.png"}
    assert set(made["curves-lr=0.05"]["train_err"]) == {12.0, 20.0, 21.0}  # no mean across lrs


def test_lr_and_batch_size_are_columns_of_any_run(tmp_path):
    make_run(tmp_path, "plain", 20, 0, [10.0])
    runs = load_runs(tmp_path)
    assert {"train.lr", "train.batch_size"} <= set(runs.columns) and runs["train.lr"].isna().all()
    assert not [c for c in aggregate(runs).columns if "." in c]  # nothing swept: one point per (arch, depth)


# --------------------------------------------------------------------------- extending a finished run
def test_a_finished_run_extended_to_3_epochs_is_the_3_epoch_run(tmp_path, monkeypatch, capsys):
    """2 epochs, then train.epochs=3: it goes on from its checkpoint, its lr decay where it
    was, and ends as a run trained for 3 epochs at once; the summary says from where."""
    run = ["train", "--out", tmp_path / "ext", *TINY, "train.milestones=[1]"]
    assert cli(monkeypatch, capsys, *run, "train.epochs=2")[0] == 0
    code, _, stderr = cli(monkeypatch, capsys, *run, "train.epochs=3")
    assert code == 0 and "resnet-8-s0: resuming after epoch 2" in stderr, stderr
    assert cli(monkeypatch, capsys, "train", "--out", tmp_path / "once", *TINY, "train.milestones=[1]")[0] == 0
    ext, once = tmp_path / "ext" / "resnet-8-s0", tmp_path / "once" / "resnet-8-s0"
    assert numbers(ext) == numbers(once) and [float(r["lr"]) for r in rows(ext)] == [0.1, 0.01, 0.01]
    summary = RunDir(ext).read_summary()
    assert (summary["status"], summary["epochs"]) == ("done", 3)
    assert summary["extended_from"] == {"epochs": 2, "iterations": 8}
    assert yaml.safe_load((ext / "config.yaml").read_text())["train"]["epochs"] == 3
    command = yaml.safe_load((ext / "command.yaml").read_text())
    assert "train.epochs=2" in command["overrides"]
    assert [(e["extended_from"], "train.epochs=3" in e["overrides"]) for e in command["extended"]] == \
        [({"epochs": 2, "iterations": 8}, True)]

    code, _, stderr = cli(monkeypatch, capsys, *run, "train.epochs=3")
    assert code == 0 and "already done, skipped" in stderr
    for shorter_or_other in (["train.epochs=2"], ["train.epochs=4", "train.momentum=0.8"]):
        code, _, stderr = cli(monkeypatch, capsys, *run, *shorter_or_other)
        assert code == 2 and "was started with another config" in one_line(stderr)
    assert RunDir(ext).read_summary()["extended_from"] == {"epochs": 2, "iterations": 8}


def test_a_sweep_with_a_larger_count_extends_every_finished_run(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert sweep_here(["resnet"], [8], None, [*SHORT, "train.lr=0.1,0.05"], out) == \
        {"resnet-8-s0-lr=0.1": "done", "resnet-8-s0-lr=0.05": "done"}
    code, _, stderr = cli(monkeypatch, capsys, "sweep", "--out", out, "train.epochs=3", "--dry-run")
    assert code == 0 and "2 finished runs extended from 2 epochs (8 it)" in stderr
    assert "2 runs, 2 to train" in stderr
    code, stdout, _ = cli(monkeypatch, capsys, "sweep", "--out", out, "train.epochs=3")
    assert code == 0 and stdout.strip() == f"sweep {out}: 2 done"
    for name in ("resnet-8-s0-lr=0.1", "resnet-8-s0-lr=0.05"):
        assert len(rows(out / name)) == 3
        assert RunDir(out / name).read_summary()["extended_from"] == {"epochs": 2, "iterations": 8}
    # any other change is still a clash: one line, nothing trained
    code, _, stderr = cli(monkeypatch, capsys, "sweep", "--out", out, "train.momentum=0.8", "--dry-run")
    line = one_line(stderr)
    assert code == 2 and "resnet-8-s0-lr=0.1 was started with another config (train.momentum" in line
    assert "(and 1 more run)" in line


def test_a_run_without_its_checkpoint_cannot_be_extended(tmp_path, monkeypatch, capsys):
    run = ["train", "--out", tmp_path, *TINY, "train.milestones=[1]", "train.keep_checkpoint=false"]
    assert cli(monkeypatch, capsys, *run, "train.epochs=2")[0] == 0
    before = (tmp_path / "resnet-8-s0" / "metrics.csv").read_bytes()
    code, _, stderr = cli(monkeypatch, capsys, *run, "train.epochs=3")
    assert code == 2 and "without keeping its checkpoint.pt (train.keep_checkpoint=false)" in one_line(stderr)
    assert "from 2 epochs (8 iterations)" in stderr
    assert (tmp_path / "resnet-8-s0" / "metrics.csv").read_bytes() == before


# --------------------------------------------------------------------------- a schedule that does nothing
def test_a_warm_up_or_milestone_past_the_run_is_one_line_at_plan_time(tmp_path, monkeypatch, capsys):
    code, stdout, stderr = cli(monkeypatch, capsys, "sweep", "--out", tmp_path / "q", "--dry-run",
                               "experiment=quick_fashion", "train.epochs=2", "dataset.train_subset=1024")
    line = one_line(stderr)
    assert code == 2 and stdout == ""
    for says in ("the run is 64 iterations long", "train.warmup_iters=250",
                 "train.milestones=[8] (in epochs: iteration 256)", "train.warmup_iters=0 train.milestones=[]",
                 "dataset.train_subset"):
        assert says in line


def test_resexp_train_refuses_a_warm_up_as_long_as_the_run_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    code, _, stderr = cli(monkeypatch, capsys, "train", "--out", tmp_path / "out", *TINY, "train.milestones=[]",
                          "train.warmup_iters=12", "train.warmup_from_depth=null")
    assert code == 2 and "the run is 12 iterations long" in one_line(stderr)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("setting, total, refused", [
    ({"milestones": [11], "milestone_unit": "iterations"}, 12, False),  # the last step runs at the lower lr
    ({"milestones": [12], "milestone_unit": "iterations"}, 12, True),
    ({"milestones": [2.75]}, 12, False),  # epochs (of 4 iterations): iteration 11
    ({"milestones": [3]}, 12, True),
    ({"warmup_iters": 11, "warmup_from_depth": "null", "milestones": []}, 12, False),
    ({"warmup_iters": 12, "warmup_from_depth": "null", "milestones": []}, 12, True),
    ({"warmup_iters": 12, "warmup_from_depth": 20, "milestones": []}, 12, False),  # depth 8 does not warm up
])
def test_the_schedule_must_end_inside_the_run(tiny_cfg, setting, total, refused):
    cfg = tiny_cfg(*(f"train.{k}={v}" for k, v in setting.items()))  # 3 epochs of 4 iterations
    if refused:
        with pytest.raises(UserError, match=f"the run is {total} iterations long"):
            planned_schedule(cfg)
    else:
        assert planned_schedule(cfg).total_iters == total


def test_extending_keeps_milestones_and_warm_up_where_they_were(tiny_cfg):
    short, long = (make_schedule(tiny_cfg(f"train.epochs={n}", "train.milestones=[1]", "train.warmup_iters=2",
                                          "train.warmup_from_depth=null").train, 4, depth=8) for n in (2, 3))
    assert short.lr_at(0) == 0.01 and short.lr_at(4) == 0.01
    assert [short.lr_at(i) for i in range(8)] == [long.lr_at(i) for i in range(8)]


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (shipped_config_dir() / "experiment").glob("*.yaml")))
def test_every_shipped_experiment_plans_as_shipped(tmp_path, experiment):
    spec, out = sw.resolve_spec(None, None, None, [f"experiment={experiment}", "train.device=cpu"], tmp_path)
    runs = sw.plan(spec, out)
    assert runs and all(r.iterations > 0 and not math.isnan(r.iterations) for r in runs)
    assert pd.Series([r.name for r in runs]).is_unique
