"""`resexp eval`: a finished run's checkpoint gives back its last row exactly."""

from __future__ import annotations

import pandas as pd
import pytest
from helpers.cli import TINY, cli

from resexp.settings.compose import load_config
from resexp.tools.evaluate import evaluate_run
from resexp.train.loop import fit


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("eval") / "out"
    fit(load_config([*TINY, "train.eval_train=true", "train.diagnostics=off"]), out)
    torch.set_num_threads(threads)
    return out / "resnet-8-s0"


def test_eval_reproduces_the_last_row_exactly(run_dir):
    last = pd.read_csv(run_dir / "metrics.csv").iloc[-1]
    result = evaluate_run(run_dir)
    assert (result["epoch"], result["test_images"], result["train_images"]) == (3, 128, 256)
    assert result["test_err"] == last["test_err"] and result["test_loss"] == last["test_loss"]
    assert result["clean_train_err"] == last["clean_train_err"]
    assert result["clean_train_loss"] == last["clean_train_loss"]


def test_eval_with_overrides_on_the_command_line(run_dir, monkeypatch, capsys):
    code, stdout, stderr = cli(monkeypatch, capsys, "eval", run_dir, "dataset.test_subset=32", "--no-train")
    assert code == 0, stderr
    alone = evaluate_run(run_dir, ["dataset.test_subset=32"], train=False)
    assert stdout.strip() == (f"resnet-8-s0 (epoch 3, synthetic): test err {alone['test_err']:.2f}% "
                              f"loss {alone['test_loss']:.4f} on 32 images")


@pytest.mark.parametrize("args, says", [
    (["train.momentun=1"], "unknown config key 'train.momentun'"),
    (["+train.new=1"], "key=value overrides of existing keys"),
    (["dataset=nope"], "unknown dataset 'nope'"),
    (["dataset=mnist", "dataset.download=false"], "dataset mnist is not under"),
])
def test_eval_mistakes_are_one_line(run_dir, monkeypatch, capsys, args, says):
    code, stdout, stderr = cli(monkeypatch, capsys, "eval", run_dir, *args)
    assert code == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and says in stderr


def test_eval_without_checkpoint_or_run_is_one_line(tmp_path, run_dir, monkeypatch, capsys):
    code, _, stderr = cli(monkeypatch, capsys, "eval", tmp_path)
    assert code == 2 and stderr.strip() == f"error: {tmp_path} is not a run folder (no config.yaml)"
    fit(load_config([*TINY, "train.epochs=1", "train.keep_checkpoint=false"]), tmp_path / "out")
    capsys.readouterr()  # the training's own lines
    code, _, stderr = cli(monkeypatch, capsys, "eval", tmp_path / "out" / "resnet-8-s0")
    assert code == 2 and "checkpoint.pt does not exist" in stderr and len(stderr.strip().splitlines()) == 1


def test_eval_of_a_run_made_before_newer_keys_existed(run_dir, tmp_path):
    """A config.yaml written by an older resexp lacks keys added since: today's defaults fill them."""
    import shutil

    from omegaconf import OmegaConf

    old = tmp_path / "resnet-8-s0"
    shutil.copytree(run_dir, old)
    config = OmegaConf.load(old / "config.yaml")
    # (not dataset.train_size: this synthetic run's size is not its YAML's default)
    for section, key in (("dataset", "display_name"), ("train", "diagnostics"), ("train", "tensorboard"),
                         ("train", "eval_train"), ("train", "stale_after")):
        del config[section][key]
    (old / "config.yaml").write_text(OmegaConf.to_yaml(config))
    last = pd.read_csv(run_dir / "metrics.csv").iloc[-1]
    assert evaluate_run(old, train=False)["test_err"] == last["test_err"]
