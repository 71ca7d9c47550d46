
import pytest
import yaml
from omegaconf import OmegaConf

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


@pytest.mark.parametrize("name", list_group("model"))
def test_every_model_option_composes_and_picks_its_network(name):
    """model=NAME picks the network for train and, through sweep.archs, for a sweep: the
    model it sets is the one each sweep run trains."""
    cfg = load_config([f"model={name}"])
    assert list(cfg.sweep.archs) == [cfg.model.arch]
    assert cfg.model.shortcut == ("B" if name.endswith("_b") else "A")
    for depth in cfg.sweep.depths:
        assert load_config([f"model={name}", f"model.depth={depth}"]).model.depth == depth


def test_config_files_are_all_covered():
    files = {p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml")}
    covered = {"train.yaml"} | {f"dataset/{n}.yaml" for n in list_group("dataset")} | \
        {f"experiment/{n}.yaml" for n in list_group("experiment")} | \
        {f"model/{n}.yaml" for n in list_group("model")} | \
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


# --------------------------------------------------------------------------- one source of defaults
def _leaves(node, prefix=""):
    """(dotted key, value) of every leaf of a YAML mapping; Hydra's own keys left out."""
    for key, value in (node or {}).items():
        if key == "defaults" or str(key).startswith("_") and key != "_target_":
            continue
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in ("train_args", "test_args", "sbatch"):
            yield from _leaves(value, full + ".")
        else:
            yield full, value


def _second_copies(path, base) -> list[str]:
    """Keys a YAML file sets to the value they already have without it (a group's file
    sets the keys under its group's name unless its header says `# @package _global_`)."""
    text = path.read_text()
    doc = yaml.safe_load(text) or {}
    group = path.parent.name
    in_group = group in ("dataset", "launcher", "model") and not text.startswith("# @package _global_")
    prefix = f"{group}." if in_group else ""
    # a launcher file names its type and a model file its arch: the group's choice, not a repeated default
    return [f"{key}: {value!r}" for key, value in _leaves(doc, prefix)
            if base(key) == value and key not in ("launcher.type", "model.arch")]


@pytest.mark.parametrize("overrides,message", [
    (["dataset=nope"],
     "unknown dataset 'nope' (available datasets: cifar10, cifar100, fashion_mnist, mnist, synthetic)"),
    (["experiment=nope"], "unknown experiment 'nope'"),
    (["train.nope=1"], "unknown config key 'train.nope'"),
    (["+nope=1"], "unknown config group or key 'nope' (groups: dataset, experiment, launcher, model)"),
    (["+train.optimizer=adam"], "unknown config key 'train.optimizer'"),
    (["++train.optimizer=adam"], "unknown config key 'train.optimizer'"),
    (["+model.dpeth=56"], "unknown config key 'model.dpeth'"),
    (["model.depth"], "Error parsing override 'model.depth'"),
    (["=3"], "'=3': an override is key=value and needs a key"),
    (["dataset=null"], "dataset=null: dataset cannot be removed"),
    (["model.depth=20,56"], "sweep syntax (several values) is for `resexp sweep`"),
    (["model.depth=1000"], "depth 1000 is not 6n+2: nearest valid depths are 998 and 1004"),
    (["model.depth=abc"], "model.depth must be an integer, got 'abc'"),
    (["model.arch=vgg"], "model.arch must be one of mlp_plain, mlp_resnet, plain, preact_resnet, resnet, got 'vgg'"),
    (["sweep.archs=[resnet,vgg]"], "sweep.archs must be a non-empty list of mlp_plain, mlp_resnet, plain,"),
    (["model.shortcut=C"], "model.shortcut must be one of A, B, got 'C'"),
    (["model.widths=[]"], "model.widths must be three positive integers"),
    (["model.widths=[0,0,0]"], "model.widths must be three positive integers"),
    (["seed=-1"], "seed must be an integer in [0, 4294967295], got -1"),
    (["train.lr=0"], "train.lr must be in (0, 1e+06]"),
    (["train.momentum=-5"], "train.momentum must be in [0, 1), got -5.0"),
    (["train.momentum=1"], "train.momentum must be in [0, 1)"),
    (["train.gamma=abc"], "train.gamma must be a number, got 'abc'"),
    (["train.milestones=abc"], "train.milestones must be a list"),
    (["train.milestones=[abc]"], "train.milestones must be a list of numbers >= 0, each at most 1,000,000,000, "
                                 "got ['abc']"),
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


@pytest.mark.parametrize("path", sorted([CONFIGS / "train.yaml", *CONFIGS.glob("launcher/*.yaml"),
                                         *CONFIGS.glob("dataset/*.yaml"), *CONFIGS.glob("model/*.yaml")]),
                         ids=lambda p: p.name)
def test_no_yaml_repeats_a_schema_default(path):
    """resexp/settings/schema.py is the one source of defaults: a YAML file that writes a
    default again would drift from it unseen."""
    from resexp.settings.schema import default_of

    assert _second_copies(path, default_of) == []


@pytest.mark.parametrize("name", list_group("experiment"))
def test_experiments_hold_only_their_deltas(name):
    """Each key an experiment sets differs from what the run would have without it (the
    same dataset, experiment=null)."""
    path = CONFIGS / "experiment" / f"{name}.yaml"
    dataset = next((d["override /dataset"] for d in yaml.safe_load(path.read_text()).get("defaults", [])
                    if isinstance(d, dict) and "override /dataset" in d), "cifar10")
    base = load_config(["experiment=null", f"dataset={dataset}"])

    def value(key):
        node = OmegaConf.select(base, key)
        return OmegaConf.to_container(node) if OmegaConf.is_config(node) else node

    assert _second_copies(path, value) == []


def test_the_second_copy_check_finds_a_repeated_default(tmp_path):
    """The two tests above can fail: a file repeating train.lr's default is caught."""
    from resexp.settings.schema import default_of

    copy = tmp_path / "copy.yaml"
    copy.write_text("train:\n  lr: 0.1\n  momentum: 0.5\nlauncher:\n  mem_gb: 16.0\n")
    assert _second_copies(copy, default_of) == ["train.lr: 0.1", "launcher.mem_gb: 16.0"]
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "copy.yaml").write_text("val_size: 0\nchannels: 3\n")
    assert _second_copies(tmp_path / "dataset" / "copy.yaml", default_of) == ["dataset.val_size: 0"]
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "copy.yaml").write_text("# @package _global_\nmodel:\n  arch: plain\n  shortcut: A\n")
    assert _second_copies(tmp_path / "model" / "copy.yaml", default_of) == ["model.shortcut: 'A'"]
