"""The experiment loggers: TensorBoard's hparams record and Weights & Biases, read back from their files."""

from __future__ import annotations

import importlib.util
import os
import signal

import pandas as pd
import pytest
from helpers import wandb_records
from helpers.cli import DIAGNOSTICS, TINY, cli, rows
from helpers.stops import stopped
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import metadata, plugin_data_pb2

from resexp.errors import UserError
from resexp.inside import wandb_file
from resexp.inside.tensorboard import hparams_of
from resexp.run.folder import DamagedFile, RunDir
from resexp.train.loop import fit


class Stop(Exception):
    """Stands for a run killed after its first checkpoint."""


def stop(iteration: int) -> None:
    raise Stop


def interrupted_then_resumed(cfg, out) -> dict:
    """Train ``cfg`` for one epoch, stop, then run it again: it resumes after epoch 1."""
    with pytest.raises(Stop):
        fit(cfg, out, on_epoch=stop)
    return fit(cfg, out)


def hparams_records(run_dir) -> list:
    """Every hparams summary in the run folder's event files: (tag, HParamsPluginData)."""
    found = []
    for file in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(file)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == metadata.PLUGIN_NAME:
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    found.append((value.tag, data))
    return found


def final_scalars(run_dir) -> dict:
    found = {}
    for file in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(file)).Load():
            for value in event.summary.value:
                if value.tag.startswith("final/"):
                    found[value.tag] = (event.step, value.tensor.float_val[0] if value.tensor.float_val
                                        else value.simple_value)
    return found


def test_tensorboard_hparams_are_written_once_across_a_resume(tmp_path, tiny_cfg):
    out = tmp_path / "out"
    interrupted_then_resumed(tiny_cfg("train.tensorboard=true"), out)
    run = out / "resnet-8-s0"
    assert len(list(run.glob("events.out.tfevents.*"))) == 2 and not [p for p in run.iterdir() if p.is_dir()]
    records = hparams_records(run)
    tags = [tag for tag, _ in records]
    # one experiment and one session start (the first start's); the session's end once it finished
    assert tags == [metadata.EXPERIMENT_TAG, metadata.SESSION_START_INFO_TAG, metadata.SESSION_END_INFO_TAG]
    experiment, start = records[0][1].experiment, records[1][1].session_start_info
    assert [m.name.tag for m in experiment.metric_infos] == ["final/train_err", "final/test_err"]
    values = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    assert {k: values[k] for k in ("model.arch", "model.depth", "seed", "dataset.name", "train.lr",
                                   "train.batch_size", "train.epochs", "dataset.train_args.size")} == {
        "model.arch": "resnet", "model.depth": 8, "seed": 0, "dataset.name": "synthetic", "train.lr": 0.1,
        "train.batch_size": 64, "train.epochs": 3, "dataset.train_args.size": 256}
    assert {h.name for h in experiment.hparam_infos} == set(values)
    last = pd.read_csv(run / "metrics.csv").iloc[-1]
    finals = final_scalars(run)
    assert finals["final/train_err"] == (12, pytest.approx(last["train_err"], rel=1e-6))
    assert finals["final/test_err"] == (12, pytest.approx(last["test_err"], rel=1e-6))


def test_hparams_hold_the_result_settings_and_the_experiment_name(tiny_cfg):
    settings = hparams_of(tiny_cfg("train.tensorboard=true"))
    assert settings["name"] == "he2016_synthetic" and settings["train.milestone_unit"] == "epochs"
    # settings that do not change results, lists and nulls are no columns
    for absent in ("train.device", "train.tensorboard", "train.log_every", "model.widths", "train.iterations",
                   "sweep.archs", "launcher.type"):
        assert absent not in settings
    assert all(isinstance(v, (bool, int, float, str)) for v in settings.values())


@pytest.mark.parametrize("override", ["train.wandb_project=mine", "train.wandb_entity=me",
                                      "train.wandb_tags=[a]", "train.wandb_mode=offline"])
def test_a_wandb_setting_without_wandb_is_one_line(tiny_cfg, override):
    key, value = override.split("=")
    with pytest.raises(UserError) as info:
        tiny_cfg(override)
    assert str(info.value).startswith(f"{key}=") and "is set but train.wandb is false: set train.wandb=true" in str(
        info.value) and "\n" not in str(info.value)


def test_wandb_missing_is_one_error_line(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    code, stdout, stderr = cli(monkeypatch, capsys, "train", "--out", "out", *TINY, "train.wandb=true")
    assert code == 2 and stdout == ""
    assert stderr.strip() == "error: train.wandb=true needs the wandb package: pip install 'resexp[wandb]'"


def test_logger_settings_never_make_a_finished_run_clash(tmp_path, tiny_cfg):
    fit(tiny_cfg("train.epochs=1", "train.milestones=[]"), tmp_path / "out")
    again = tiny_cfg("train.epochs=1", "train.milestones=[]", "train.tensorboard=true", "train.wandb=true",
                     "train.wandb_mode=disabled", "train.wandb_project=other", "train.wandb_tags=[x,y]")
    assert RunDir(tmp_path / "out" / "resnet-8-s0").config_conflicts(again) == []
    assert fit(again, tmp_path / "out")["status"] == "done"  # skipped as finished: nothing is logged


@pytest.mark.parametrize("content", [b"../../elsewhere\n", b"abc def", b"x" * 65, b"", b"\xff\xfe"])
def test_a_wandb_id_file_names_a_plain_id_or_is_refused(tmp_path, content):
    run = RunDir(tmp_path / "resnet-8-s0")
    run.path.mkdir()
    assert run.read_wandb_id() is None
    run.wandb_id_file.write_bytes(content)
    with pytest.raises(DamagedFile, match="does not hold a plain W&B run id"):
        run.read_wandb_id()
    run.write_wandb_id("a1b2c3d4")
    assert run.read_wandb_id() == "a1b2c3d4"


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """W&B in this test only: quiet, no home of the user's, none of W&B's settings from outside.
    W&B reads its environment once per process (wandb.setup): teardown makes the next
    wandb.init read this test's."""
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_API_KEY", "WANDB_CACHE_DIR", "WANDB_DATA_DIR",
                "WANDB_CONFIG_DIR", "WANDB_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    wandb.teardown()
    yield
    wandb.teardown()


def wandb_files(run_dir) -> list:
    """The run's W&B transaction logs, one per start, in the order they were written."""
    return sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))


def test_wandb_offline_run_is_resumed_in_one_wandb_run(tmp_path, tiny_cfg, wandb_env):
    """One tiny run, stopped after epoch 1 and resumed, logged offline: config, every
    metrics row at its iteration, diagnostics tables, one W&B run id, nothing outside the run."""
    out = tmp_path / "out"
    cfg = tiny_cfg("train.wandb=true", "train.wandb_mode=offline", "train.wandb_tags=[tiny]", DIAGNOSTICS)
    assert interrupted_then_resumed(cfg, out)["status"] == "done"
    run = RunDir(out / "resnet-8-s0")
    run_id = run.read_wandb_id()
    logs = wandb_files(run.path)
    assert len(logs) == 2 and {p.name for p in logs} == {f"run-{run_id}.wandb"}
    assert set().union(*(wandb_records.run_ids(p) for p in logs)) == {run_id}
    config = wandb_records.config(logs[0])
    assert (config["model"]["arch"], config["model"]["depth"]) == ("resnet", 8)
    assert config["train"]["wandb_tags"] == ["tiny"] and config["seed"] == 0
    rows = [row for p in logs for row in wandb_records.history(p)]
    epochs = [row for row in rows if "train_err" in row]
    metrics = pd.read_csv(run.metrics)
    assert [row["iteration"] for row in epochs] == [4, 8, 12] == metrics["iteration"].tolist()
    assert [row["test_err"] for row in epochs] == pytest.approx(metrics["test_err"].tolist())
    tables = [row for row in rows if "diagnostics/responses._type" in row]  # a table's fields, one item each
    assert [row["iteration"] for row in tables] == [0, 12]
    assert {row["diagnostics/responses._type"] for row in tables} == {"table-file"}
    assert [row["diagnostics/responses.nrows"] for row in tables] == [len(g) for _, g in pd.read_csv(
        run.path / "responses.csv").groupby("iteration")]
    assert not (tmp_path / "home").exists()  # no ~/.cache, ~/.config or ~/.netrc
    assert "WANDB_CACHE_DIR" not in os.environ  # set for the run only


# ---- after any stop, each logger holds every metrics.csv row once, with its values

LOGGED = ["train.tensorboard=true", "train.wandb=true", "train.wandb_mode=offline"]


def tensorboard_points(run_dir) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard shows of the run folder, read by its own EventAccumulator: each
    scalar tag's (step, value) points in step order."""
    events = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0})  # 0: every point
    events.Reload()
    return {tag: sorted((e.step, e.value) for e in events.Scalars(tag)) for tag in events.Tags()["scalars"]}


def assert_tensorboard_holds(run_dir, metrics: pd.DataFrame) -> None:
    shown = tensorboard_points(run_dir)
    for column in metrics.columns.drop(["epoch", "iteration"]):
        points = shown[f"epoch/{column}"]
        assert [step for step, _ in points] == metrics["iteration"].tolist(), column
        assert [value for _, value in points] == pytest.approx(metrics[column].tolist(), rel=1e-6), column


def assert_wandb_holds(histories: list[list[dict]], metrics: pd.DataFrame) -> None:
    """``histories``: the history rows of each of a run's W&B files (W&B's own reader)."""
    logged = sorted((row for rows in histories for row in rows if "epoch" in row), key=lambda r: r["epoch"])
    assert [row["epoch"] for row in logged] == metrics["epoch"].tolist()
    for column in metrics.columns:
        assert [row[column] for row in logged] == pytest.approx(metrics[column].tolist(), rel=1e-12), column


STOPS = {  # how the process is stopped: (what runs, signal, where it waits, at, its exit code)
    "sigterm": ("train", signal.SIGTERM, "live", 10, 128 + signal.SIGTERM),
    "ctrl-c": ("train", signal.SIGINT, "live", 10, 130),
    "sigterm-slurm-job": ("job", signal.SIGTERM, "live", 10, 128 + signal.SIGTERM),
    "sigusr2-requeue": ("job", signal.SIGUSR2, "live", 10, 144),  # submitit's local requeue exit code
    "kill-9-mid-epoch": ("train", signal.SIGKILL, "live", 10, -signal.SIGKILL),
    "kill-9-after-checkpoint": ("train", signal.SIGKILL, "saved", 2, -signal.SIGKILL),
}


@pytest.mark.slow
@pytest.mark.parametrize("stop", STOPS)
def test_after_any_stop_and_a_resume_the_loggers_hold_every_row_once(tmp_path, tiny_cfg, wandb_env, stop):
    """A real `resexp train` (or SLURM job) process of 3 epochs, stopped in epoch 3 (or
    right after epoch 2's checkpoint) by a real signal, then resumed: TensorBoard's and W&B's
    own readers find each metrics.csv row once with its values. A stop the process sees
    finishes both loggers first: its own files already hold epochs 1 and 2, and W&B's an
    exit record. A killed process leaves W&B nothing (W&B buffers): the resume logs it all."""
    how, sig, where, at, code = STOPS[stop]
    out = tmp_path / "out"
    quick = [*LOGGED, "train.diagnostics=off"]  # not what is checked here: seconds saved
    ended = stopped(tmp_path, ["--out", out, *TINY, *quick], sig, how, where, at)
    assert ended.returncode == code, ended.stderr[-2000:]
    run = out / "resnet-8-s0"
    assert [int(r["epoch"]) for r in rows(run)] == [1, 2]
    (first,) = wandb_files(run)
    seen = sig != signal.SIGKILL
    if seen:
        stopped_records = wandb_records.records(first)  # complete: the file is not written again
        assert_tensorboard_holds(run, pd.read_csv(run / "metrics.csv"))
        assert_wandb_holds([wandb_records.history(first, stopped_records)], pd.read_csv(run / "metrics.csv"))
        assert [e["exit_code"] for e in wandb_records.of_type(stopped_records, "exit")] == [1]
    assert fit(tiny_cfg(*quick), out)["status"] == "done"
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2, 3]
    assert_tensorboard_holds(run, metrics)
    files = wandb_files(run)
    assert len(files) == 2 and files[0] == first
    recs = [stopped_records if seen else wandb_records.records(first), wandb_records.records(files[1])]
    histories = [wandb_records.history(f, r) for f, r in zip(files, recs)]
    assert_wandb_holds(histories, metrics)
    # one W&B run: the resumed start names the same id in resume mode, its _step goes on after the first's
    runs = [run for r in recs for run in wandb_records.of_type(r, "run")]  # a killed start's file may hold none
    assert {r["run_id"] for r in runs} == {RunDir(run).read_wandb_id()} and runs[-1]["resume"]
    steps = [[row["_step"] for row in rows] for rows in histories]
    assert steps[1] and (not steps[0] or min(steps[1]) > max(steps[0]))
    # the live means: each iteration at most once; all of them where the stop flushed both loggers
    shown_live = [step for step, _ in tensorboard_points(run)["live/loss"]]
    wandb_live = sorted(row["iteration"] for rows in histories for row in rows if "live/loss" in row)
    for live in (shown_live, wandb_live):
        assert len(set(live)) == len(live) and (not seen or live == [2, 4, 6, 8, 10, 12])


def test_a_logger_switched_on_at_a_resume_gets_the_earlier_rows(tmp_path, tiny_cfg, wandb_env):
    """Epoch 1 trained without loggers, the rest with both: each holds all three rows once,
    and TensorBoard the run's one hparams record."""
    out = tmp_path / "out"
    with pytest.raises(Stop):
        fit(tiny_cfg(), out, on_epoch=stop)
    fit(tiny_cfg(*LOGGED), out)
    run = out / "resnet-8-s0"
    metrics = pd.read_csv(run / "metrics.csv")
    assert_tensorboard_holds(run, metrics)
    assert_wandb_holds([wandb_records.history(f) for f in wandb_files(run)], metrics)
    assert [tag for tag, _ in hparams_records(run)] == [metadata.EXPERIMENT_TAG, metadata.SESSION_START_INFO_TAG,
                                                         metadata.SESSION_END_INFO_TAG]


def test_resexp_reads_what_wandbs_own_reader_reads_and_no_more_of_a_file_cut_short(tmp_path, tiny_cfg, wandb_env):
    """resexp's reader of W&B's transaction log (what a resume trusts) against W&B's own: the
    same history from a whole file, and from that file cut anywhere a prefix of it, never a
    record that is not wholly there."""
    fit(tiny_cfg("train.wandb=true", "train.wandb_mode=offline"), tmp_path / "out")
    (whole,) = wandb_files(tmp_path / "out" / "resnet-8-s0")
    steps = [row["_step"] for row in wandb_records.history(whole)]
    assert steps and [row["_step"] for row in wandb_file.history(whole)] == steps
    data, cut = whole.read_bytes(), tmp_path / "cut.wandb"
    read = []
    for size in range(0, len(data) + 1, 97):
        cut.write_bytes(data[:size])
        read.append([row["_step"] for row in wandb_file.history(cut)])
        assert read[-1] == steps[:len(read[-1])]
    assert read[0] == [] and len(set(map(len, read))) > 2  # the cuts fall before, between and after records


# ---- W&B's own environment, and a start W&B refuses

def test_wandb_follows_its_own_environment_unless_a_key_sets_it(tmp_path, monkeypatch, capsys, wandb_env):
    """$WANDB_MODE, $WANDB_PROJECT, $WANDB_ENTITY and $WANDB_DIR as W&B documents them; a
    train.wandb_* key wins over its variable."""
    one_epoch = [*TINY, "train.epochs=1", "train.milestones=[]", "train.wandb=true"]
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    monkeypatch.setenv("WANDB_ENTITY", "team-env")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    code, _, err = cli(monkeypatch, capsys, "train", "--out", tmp_path / "a", *one_epoch)
    assert code == 0, err
    (log,) = sorted((tmp_path / "wandb-dir" / "wandb").glob("offline-run-*/run-*.wandb"))
    (run,) = wandb_records.of_type(wandb_records.records(log), "run")
    assert (run["project"], run["entity"]) == ("from-env", "team-env")
    assert not wandb_files(tmp_path / "a" / "resnet-8-s0")  # $WANDB_DIR, not the run folder
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the key wins: offline, so a file is written
    monkeypatch.delenv("WANDB_DIR")
    code, _, err = cli(monkeypatch, capsys, "train", "--out", tmp_path / "b", *one_epoch, "train.wandb_mode=offline",
                       "train.wandb_project=from-key", "train.wandb_entity=team-key")
    assert code == 0, err
    (log,) = wandb_files(tmp_path / "b" / "resnet-8-s0")
    (run,) = wandb_records.of_type(wandb_records.records(log), "run")
    assert (run["project"], run["entity"]) == ("from-key", "team-key")


def files_in(folder) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_wandb_run_that_cannot_start_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, tiny_cfg,
                                                                      wandb_env):
    """Online without an API key: exit 2 with W&B's reason, and the run folder as it was,
    for a new run (nothing at all) and for one resumed after an epoch (not a byte changed)."""
    for out in (tmp_path / "new", tmp_path / "resumed"):
        if out.name == "resumed":
            with pytest.raises(Stop):
                fit(tiny_cfg("train.tensorboard=true"), out, on_epoch=stop)
        before = files_in(out) if out.exists() else {}
        capsys.readouterr()
        code, stdout, stderr = cli(monkeypatch, capsys, "train", "--out", out, *TINY, "train.tensorboard=true",
                                   "train.wandb=true")
        lines = [line for line in stderr.splitlines() if line.strip()]  # a resume first says from where
        assert code == 2 and stdout == "" and len(lines) == (2 if out.name == "resumed" else 1), stderr
        assert lines[-1].startswith("error: W&B could not start the run resnet-8-s0: No API key configured")
        assert files_in(out) == before
    assert not files_in(tmp_path / "new")
