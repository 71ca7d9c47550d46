"""What a run records beside metrics.csv: TensorBoard events, the clean training error."""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest
from helpers.cli import DIAGNOSTICS, TINY, cli
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from resexp.train.loop import fit


def scalars(run_dir) -> dict:
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_events_hold_the_logged_scalars(tmp_path, tiny_cfg):
    fit(tiny_cfg("train.tensorboard=true", "train.eval_train=true", DIAGNOSTICS), tmp_path / "out")
    run = tmp_path / "out" / "resnet-8-s0"
    events = scalars(run)
    metrics = pd.read_csv(run / "metrics.csv")
    # every column of every metrics row, at its iteration (float32 in the event file)
    for column in ("train_err", "test_err", "test_loss", "lr", "clean_train_err"):
        steps, values = zip(*events[f"epoch/{column}"])
        assert list(steps) == metrics["iteration"].tolist()
        assert list(values) == pytest.approx(metrics[column].tolist(), rel=1e-6)
    # live scalars every train.log_every=2 iterations; at an epoch's end the running mean is the row's
    assert [step for step, _ in events["live/loss"]] == [2, 4, 6, 8, 10, 12]
    live = dict(events["live/err"])
    assert [live[it] for it in metrics["iteration"]] == pytest.approx(metrics["train_err"].tolist(), rel=1e-6)
    # diagnostics: one curve over the layer index per measurement
    responses = pd.read_csv(run / "responses.csv").query("epoch == 3")
    steps, values = zip(*events["responses/epoch_0003"])
    assert list(steps) == responses["layer"].tolist()
    assert list(values) == pytest.approx(responses["std"].tolist(), rel=1e-6)
    assert "gradients/weight_epoch_0000" in events and "identity/branch_ratio_epoch_0003" in events


def test_tensorboard_missing_is_one_error_line(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    code, stdout, stderr = cli(monkeypatch, capsys, "train", "--out", "out", *TINY, "train.tensorboard=true")
    assert code == 2 and stdout == ""
    assert stderr.strip() == ("error: train.tensorboard=true needs the tensorboard package: "
                              "pip install 'resexp[tensorboard]'")


def test_clean_training_error_is_an_extra_column_and_changes_nothing_else(tmp_path, tiny_cfg):
    fit(tiny_cfg(), tmp_path / "a")
    fit(tiny_cfg("train.eval_train=true"), tmp_path / "b")
    a = pd.read_csv(tmp_path / "a" / "resnet-8-s0" / "metrics.csv")
    b = pd.read_csv(tmp_path / "b" / "resnet-8-s0" / "metrics.csv")
    assert list(b.columns) == list(a.columns) + ["clean_train_loss", "clean_train_err"]
    timing = ["seconds", "images_per_s", "elapsed"]
    pd.testing.assert_frame_equal(a.drop(columns=timing), b[a.columns].drop(columns=timing))
    wrong = b["clean_train_err"] * 256 / 100  # whole images of the 256
    assert wrong.tolist() == pytest.approx(wrong.round().tolist())
    assert not b["clean_train_err"].equals(b["train_err"])


def test_runs_made_before_a_setting_existed_still_match(tmp_path, tiny_cfg):
    """A config.yaml written before train.eval_train existed matches eval_train=false."""
    fit(tiny_cfg("train.epochs=1"), tmp_path / "out")
    config = tmp_path / "out" / "resnet-8-s0" / "config.yaml"
    old = OmegaConf.load(config)
    for key in ("eval_train", "diagnostics", "diagnostics_images", "tensorboard"):
        del old.train[key]
    config.write_text(OmegaConf.to_yaml(old))
    assert fit(tiny_cfg("train.epochs=1"), tmp_path / "out")["status"] == "done"
    from resexp.errors import UserError
    with pytest.raises(UserError, match="train.eval_train: None -> True"):
        fit(tiny_cfg("train.epochs=1", "train.eval_train=true"), tmp_path / "out")
