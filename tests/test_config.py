import re

import pytest
import yaml

from resexp.config import list_group, load_config, shipped_config_dir
from resexp.errors import UserError
from resexp.models import list_models

CONFIGS = shipped_config_dir()


@pytest.mark.parametrize("name", list_group("dataset"))
def test_every_dataset_config_composes(name):
    ds = load_config([f"dataset={name}"]).dataset
    assert ds.name == name  # the file name is the dataset's name
    assert len(ds.mean) == len(ds.std) == ds.channels
    assert all(0 < m < 1 for m in ds.mean) and all(0 < s < 1 for s in ds.std)


@pytest.mark.parametrize("name", list_group("experiment"))
def test_every_experiment_composes_for_each_of_its_runs(name):
    cfg = load_config([f"experiment={name}"])
    assert cfg.name == name
    assert set(cfg.sweep.archs) <= set(list_models())
    for arch in cfg.sweep.archs:
        for depth in cfg.sweep.depths:
            run = load_config([f"experiment={name}", f"model.arch={arch}", f"model.depth={depth}"])
            assert (run.model.arch, run.model.depth) == (arch, depth)


def test_config_files_are_all_covered():
    files = {p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml")}
    covered = {"train.yaml"} | {f"dataset/{n}.yaml" for n in list_group("dataset")} | \
        {f"experiment/{n}.yaml" for n in list_group("experiment")} | \
        {f"launcher/{n}.yaml" for n in list_group("launcher")}  # test_launchers.py composes each
    assert files == covered


def test_default_is_the_paper_recipe():
    cfg = load_config([])
    t = cfg.train
    assert (cfg.dataset.name, t.batch_size, t.lr, t.momentum, t.weight_decay) == ("cifar10", 128, 0.1, 0.9, 1e-4)
    assert (t.iterations, list(t.milestones), t.milestone_unit) == (64000, [32000, 48000], "iterations")
    assert cfg.dataset.augment.pad == 4 and cfg.dataset.augment.hflip is True


def test_he2016_experiment_warms_up_only_110_layers():
    cfg = load_config(["experiment=he2016_cifar10"])
    assert (cfg.train.warmup_iters, cfg.train.warmup_lr, cfg.train.warmup_from_depth) == (400, 0.01, 110)


def test_weight_decay_is_a_number_in_every_yaml():
    # YAML 1.1 reads "1e-4" as a string; every numeric key must load as a number.
    for path in CONFIGS.rglob("*.yaml"):
        doc = yaml.safe_load(path.read_text()) or {}
        wd = (doc.get("train") or {}).get("weight_decay")
        assert wd is None or isinstance(wd, float), path


@pytest.mark.parametrize("overrides,message", [
    (["dataset=nope"], "unknown dataset 'nope' (available datasets: cifar10, cifar100, fashion_mnist, mnist, synthetic)"),
    (["experiment=nope"], "unknown experiment 'nope'"),
    (["train.nope=1"], "unknown config key 'train.nope'"),
    (["+nope=1"], "unknown config key 'nope'"),
    (["model.depth"], "Error parsing override 'model.depth'"),
    (["model.depth=1000"], "depth 1000 is not 6n+2: nearest valid depths are 998 and 1004"),
    (["model.depth=abc"], "model.depth must be a positive integer, got 'abc'"),
    (["model.arch=vgg"], "unknown model.arch 'vgg'"),
    (["model.shortcut=C"], "model.shortcut must be A or B"),
    (["train.lr=0"], "train.lr must be > 0"),
    (["train.batch_size=0"], "train.batch_size must be a positive integer"),
    (["train.iterations=null"], "set train.epochs or train.iterations"),
    (["dataset.train_subset=-5"], "dataset.train_subset must be a positive integer"),
])
def test_mistakes_are_one_clear_line(overrides, message):
    with pytest.raises(UserError) as info:
        load_config(overrides)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_user_config_dir_from_environment(tmp_path, monkeypatch):
    (tmp_path / "dataset").mkdir()
    src = (CONFIGS / "dataset" / "mnist.yaml").read_text()
    (tmp_path / "dataset" / "mnist2.yaml").write_text(re.sub(r"^name: mnist$", "name: mnist2", src, flags=re.M))
    monkeypatch.setenv("RESEXP_CONFIG_DIR", str(tmp_path))
    assert "mnist2" in list_group("dataset")
    assert load_config(["dataset=mnist2"]).dataset.name == "mnist2"


def test_missing_config_dir_is_an_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config([], config_dirs=[tmp_path / "nowhere"])
