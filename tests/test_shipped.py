"""Every shipped experiment, and train.yaml without one, through every command that needs no
dataset on disk: `--cfg`, `sweep --dry-run` (which times steps here), `bench --steps 1`, and
one training step of the sweep's smallest net on random images of its dataset's shape.

Shrunk only as a user would shrink them (batches of 2, one thread); the dataset's files are
nowhere (this test's empty data root, and an empty dataset.source folder as in a user's
`dataset.source=FOLDER` whose files are elsewhere): commands that need only shapes must not
need them, nor apply the dataset's split sizes (val_size, the subsets) to random images.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import yaml
from helpers.cli import cli
from omegaconf import OmegaConf

from resexp.data import random_data, train_batches
from resexp.settings.compose import load_config, shipped_config_dir
from resexp.sweep.plan import resolve_spec
from resexp.tools.bench import steady
from resexp.train.loop import setup

EXPERIMENTS = sorted(p.stem for p in (shipped_config_dir() / "experiment").glob("*.yaml"))
CONFIGS = [*EXPERIMENTS, "null"]  # "null": train.yaml's own defaults, no experiment
SMALL = ["train.batch_size=2", "train.threads=1", "train.device=cpu"]


@pytest.fixture
def given(tmp_path):
    """The overrides of one config: the experiment, small batches, an empty source folder."""
    (tmp_path / "elsewhere").mkdir()

    def overrides(experiment: str) -> list[str]:
        return [f"experiment={experiment}", *SMALL, f"dataset.source={tmp_path / 'elsewhere'}"]
    return overrides


def smallest(overrides: list[str]) -> tuple[str, int]:
    """The sweep's first arch at its smallest depth."""
    sweep = load_config(overrides).sweep
    return sweep.archs[0], min(sweep.depths)


def test_the_default_config_is_the_default_experiment():
    """train.yaml with no experiment named composes exactly as he2016_cifar10, which the
    tests below take through every command."""
    assert OmegaConf.to_yaml(load_config(SMALL)) == OmegaConf.to_yaml(
        load_config(["experiment=he2016_cifar10", *SMALL]))


@pytest.mark.parametrize("experiment", CONFIGS)
def test_cfg_prints_the_composed_config_of_each_command(experiment, given, monkeypatch, capsys):
    overrides = given(experiment)
    arch, depth = smallest(overrides)
    for command in (["train"], ["sweep"], ["bench", "--archs", arch, "--depths", str(depth)]):
        code, out, err = cli(monkeypatch, capsys, *command, "--cfg", "job", *overrides)
        assert code == 0, (command, err)
        printed = yaml.safe_load(out)  # what comes before the config are comment lines
        assert printed["train"]["batch_size"] == 2 and printed["dataset"]["source"].endswith("elsewhere")
    assert (printed["model"]["arch"], printed["model"]["depth"]) == (arch, depth)  # bench's: the timed model's


@pytest.mark.parametrize("experiment", CONFIGS)
def test_a_dry_run_plans_and_times_steps_here(experiment, given, monkeypatch, capsys, tmp_path):
    code, _, err = cli(monkeypatch, capsys, "sweep", "--dry-run", "--out", tmp_path / "out", *given(experiment))
    assert code == 2, err  # the plan and its timing, then one line: the data are not in the empty source folder
    assert "timed here for 3 steps" in err and not (tmp_path / "out").exists()
    assert err.strip().splitlines()[-1].startswith("error: dataset ") and "elsewhere is empty" in err


@pytest.mark.parametrize("experiment", CONFIGS)
def test_bench_times_the_smallest_net(experiment, given, monkeypatch, capsys, tmp_path):
    overrides = given(experiment)
    arch, depth = smallest(overrides)
    code, _, err = cli(monkeypatch, capsys, "bench", "--steps", "1", "--archs", arch, "--depths", str(depth),
                       "--out", tmp_path / "bench.csv", *overrides)
    assert code == 0, err
    (row,) = pd.read_csv(tmp_path / "bench.csv").itertuples()
    assert (row.arch, row.depth) == (arch, depth) and row.images_per_s > 0


@pytest.mark.parametrize("experiment", CONFIGS)
def test_one_training_step_of_the_smallest_net(experiment, given, tmp_path):
    """The run config a sweep trains, one step on random images of its dataset's shape, with
    its augmentation: the loss is a number and the weights move."""
    overrides = given(experiment)
    spec, _ = resolve_spec(None, None, None, overrides, tmp_path / "out")
    cfg = spec.run_config(spec.archs[0], min(spec.depths))
    s = setup(steady(cfg), random_data(cfg.dataset, 2, torch.device("cpu")))
    before = [p.detach().clone() for p in s.model.parameters()]
    x, y = next(train_batches(s.data, 2, cfg.seed, epoch=1))
    assert x.shape == (2, cfg.dataset.channels, cfg.dataset.image_size, cfg.dataset.image_size)
    s.step(x, y, s.schedule.lr_at(0))
    assert math.isfinite(s.step.loss_sum.item())
    assert any(not torch.equal(a, b) for a, b in zip(before, s.model.parameters()))
