import re

import pytest
import yaml

from resexp.errors import UserError
from resexp.models import list_models
from resexp.settings.compose import list_group, load_config, shipped_config_dir

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
    (["dataset=nope"],
     "unknown dataset 'nope' (available datasets: cifar10, cifar100, fashion_mnist, mnist, synthetic)"),
    (["experiment=nope"], "unknown experiment 'nope'"),
    (["train.nope=1"], "unknown config key 'train.nope'"),
    (["+nope=1"], "unknown config key 'nope'"),
    (["+train.optimizer=adam"], "unknown config key 'train.optimizer'"),
    (["++train.optimizer=adam"], "unknown config key 'train.optimizer'"),
    (["+model.dpeth=56"], "unknown config key 'model.dpeth'"),
    (["model.depth"], "Error parsing override 'model.depth'"),
    (["=3"], "'=3': an override is key=value and needs a key"),
    (["model=null"], "model=null: field 'model' is not Optional"),
    (["~model"], "~model: model cannot be removed"),
    (["dataset=null"], "dataset=null: dataset cannot be removed"),
    (["model.depth=20,56"], "sweep syntax (several values) is for `resexp sweep`"),
    (["model.depth=1000"], "depth 1000 is not 6n+2: nearest valid depths are 998 and 1004"),
    (["model.depth=abc"], "model.depth must be an integer, got 'abc'"),
    (["model.depth=999999998"], "resnet-999999998 needs about"),
    (["model.arch=vgg"], "model.arch must be one of the registered architectures, got 'vgg'"),
    (["model.shortcut=C"], "model.shortcut must be one of A, B, got 'C'"),
    (["model.widths=[]"], "model.widths must be three positive integers"),
    (["model.widths=[0,0,0]"], "model.widths must be three positive integers"),
    (["seed=-1"], "seed must be an integer in [0, 4294967295], got -1"),
    (["train.lr=0"], "train.lr must be in (0, 1e+06]"),
    (["train.momentum=-5"], "train.momentum must be in [0, 1), got -5.0"),
    (["train.momentum=1"], "train.momentum must be in [0, 1)"),
    (["train.gamma=abc"], "train.gamma must be a number, got 'abc'"),
    (["train.milestones=abc"], "train.milestones must be a list"),
    (["train.milestones=[abc]"], "train.milestones must be a list of numbers >= 0, got ['abc']"),
    (["train.weight_decay=abc"], "train.weight_decay must be a number, got 'abc'"),
    (["train.warmup_iters=abc"], "train.warmup_iters must be an integer, got 'abc'"),
    (["train.amp=maybe"], "train.amp must be true or false, got 'maybe'"),
    (["train.batch_size=0"], "train.batch_size must be > 0"),
    (["train.eval_batch_size=0"], "train.eval_batch_size must be > 0"),
    (["train.log_every=0"], "train.log_every must be > 0"),
    (["train.threads=-3"], "train.threads must be a positive integer or null, got -3"),
    (["train.device=tpu"], "train.device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    (["train.milestone_unit=days"], "train.milestone_unit must be one of iterations, epochs"),
    (["train.iterations=null"], "set exactly one of train.epochs and train.iterations"),
    (["train.epochs=2", "train.iterations=5"], "train.epochs and train.iterations are both set"),
    (["dataset.train_subset=-5"], "dataset.train_subset must be a positive integer or null"),
    (["dataset.train_subset=100000"], "dataset.train_subset=100000 is more than the 50000 training images"),
    (["dataset.test_subset=10001"], "dataset.test_subset=10001 is more than the 10000 test images"),
    (["dataset.val_size=-5"], "dataset.val_size must be >= 0, got -5"),
    (["dataset.val_size=50000"], "dataset.val_size=50000 leaves no training images"),
    (["dataset.mean=[0.5,0.5]"], "mean and std need one value per channel (3)"),
])
def test_mistakes_are_one_clear_line(overrides, message):
    with pytest.raises(UserError) as info:
        load_config(overrides)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_run_length_given_on_the_command_line_wins_over_the_experiments():
    # The default experiment sets train.iterations: a user's train.epochs replaces it.
    cfg = load_config(["train.epochs=1"])
    assert (cfg.train.epochs, cfg.train.iterations) == (1, None)
    # quick_fashion sets train.epochs: a user's train.iterations replaces it.
    cfg = load_config(["experiment=quick_fashion", "train.iterations=100"])
    assert (cfg.train.epochs, cfg.train.iterations) == (None, 100)


def test_one_default_experiment_and_none_on_request():
    assert load_config([]).name == "he2016_cifar10"
    bare = load_config(["experiment=null"])
    assert bare.name == "default" and bare.train.warmup_iters == 0


def test_added_keys_only_where_the_dataset_class_takes_them():
    cfg = load_config(["+dataset.train_args.download_mirror=x"])
    assert cfg.dataset.train_args.download_mirror == "x"


def test_schema_knows_which_keys_change_results():
    from resexp.settings.schema import exclusive_partner, non_result_keys
    keys = non_result_keys()
    assert {"train.threads", "train.device", "dataset.root", "sweep"} <= set(keys)
    assert not {"train.lr", "model.depth", "seed", "train.deterministic"} & set(keys)
    assert exclusive_partner("train.epochs") == "train.iterations"
    assert exclusive_partner("train.lr") is None


def test_merge_overrides_replaces_same_key_and_its_partner():
    from resexp.settings.compose import merge_overrides
    saved = ["experiment=quick_fashion", "train.epochs=3", "train.threads=2"]
    assert merge_overrides(saved, ["train.threads=1"]) == ["experiment=quick_fashion", "train.epochs=3",
                                                          "train.threads=1"]
    assert merge_overrides(saved, ["train.iterations=50"]) == ["experiment=quick_fashion", "train.threads=2",
                                                              "train.iterations=50"]


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
