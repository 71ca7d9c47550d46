"""The experiment loggers: TensorBoard's hparams record and Weights & Biases, read back from their files."""

from __future__ import annotations

import importlib.util
import os

import pandas as pd
import pytest
from helpers import wandb_records
from helpers.cli import TINY, cli
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import metadata, plugin_data_pb2

from resexp.errors import UserError
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
    fit(tiny_cfg("train.epochs=1"), tmp_path / "out")
    again = tiny_cfg("train.epochs=1", "train.tensorboard=true", "train.wandb=true", "train.wandb_mode=disabled",
                     "train.wandb_project=other", "train.wandb_tags=[x,y]")
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


def test_wandb_offline_run_is_resumed_in_one_wandb_run(tmp_path, tiny_cfg, monkeypatch):
    """One tiny run, stopped after epoch 1 and resumed, logged offline: config, every
    metrics row at its iteration, diagnostics tables, one W&B run id, nothing outside the run."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("WANDB_MODE", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "WANDB_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "out"
    cfg = tiny_cfg("train.wandb=true", "train.wandb_mode=offline", "train.wandb_tags=[tiny]")
    assert interrupted_then_resumed(cfg, out)["status"] == "done"
    run = RunDir(out / "resnet-8-s0")
    run_id = run.read_wandb_id()
    logs = sorted(run.path.glob("wandb/offline-run-*/run-*.wandb"))
    assert logs and {p.name for p in logs} == {f"run-{run_id}.wandb"}
    assert set().union(*(wandb_records.run_ids(p) for p in logs)) == {run_id}
    config = wandb_records.config(logs[0])
    assert (config["model"]["arch"], config["model"]["depth"]) == ("resnet", 8)
    assert config["train"]["wandb_tags"] == ["tiny"] and config["seed"] == 0
    rows = [row for p in logs for row in wandb_records.history(p)]
    epochs = [row for row in rows if "train_err" in row]
    metrics = pd.read_csv(run.metrics)
    assert [row["iteration"] for row in epochs] == [4, 8, 12] == metrics["iteration"].tolist()
    assert [row["test_err"] for row in epochs] == pytest.approx(metrics["test_err"].tolist())
    tables = [row for row in rows if "diagnostics/responses/_type" in row]  # a table's fields, one item each
    assert [row["iteration"] for row in tables] == [0, 12]
    assert {row["diagnostics/responses/_type"] for row in tables} == {"table-file"}
    assert [row["diagnostics/responses/nrows"] for row in tables] == [len(g) for _, g in pd.read_csv(
        run.path / "responses.csv").groupby("iteration")]
    assert not (tmp_path / "home").exists()  # no ~/.cache, ~/.config or ~/.netrc
    assert "WANDB_CACHE_DIR" not in os.environ  # set for the run only
