"""What a Hydra, timm or lightning user reaches for: --cfg, -m, hydra.* keys, --version, shell
completion, a dataset class beside its YAML, and names that follow the data."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml
from helpers.cli import SWEEP_TINY, TINY, cli
from helpers.runs import make_run
from omegaconf import OmegaConf
from typer.testing import CliRunner

import resexp
from resexp.cli import app
from resexp.completion import complete_words
from resexp.settings.compose import DEFAULT_EXPERIMENT, load_config, shipped_config_dir
from resexp.sweep.plan import SweepSpec, save_spec


def one_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


# --------------------------------------------------------------------------- --cfg
@pytest.mark.parametrize("part", ["job", "all"])
def test_train_cfg_prints_the_composed_config_and_trains_nothing(monkeypatch, capsys, part):
    code, stdout, stderr = cli(monkeypatch, capsys, "train", "--cfg", part, *TINY, "train.lr=0.05")
    assert code == 0, stderr
    shown = yaml.safe_load(stdout)
    expected = OmegaConf.to_container(load_config([*TINY, "train.lr=0.05"]))
    if part == "job":
        del expected["launcher"]
    assert shown == expected and shown["train"]["lr"] == 0.05
    assert not Path("results").exists()


def test_cfg_of_sweep_bench_and_eval(monkeypatch, capsys, tmp_path):
    code, stdout, stderr = cli(monkeypatch, capsys, "sweep", "-c", "job", "--depths", "8,14", "--out", "sw",
                               *SWEEP_TINY)
    assert code == 0, stderr
    assert "# sweep into sw: archs plain,resnet, depths 8,14, seeds 0" in stdout
    model = yaml.safe_load(stdout)["model"]
    assert (model["arch"], model["depth"]) == ("plain", 8)
    assert not Path("sw").exists()  # nothing planned, saved or trained

    code, stdout, stderr = cli(monkeypatch, capsys, "bench", "--cfg", "all", "--archs", "plain", "--depths", "14",
                               *TINY)
    assert code == 0, stderr
    shown = yaml.safe_load(stdout)
    assert (shown["model"]["depth"], shown["dataset"]["train_subset"], shown["launcher"]["type"]) == (14, None,
                                                                                                     "local")
    code, _, stderr = cli(monkeypatch, capsys, "train", "--out", "ev", *TINY, "train.epochs=1")
    assert code == 0, stderr
    code, stdout, stderr = cli(monkeypatch, capsys, "eval", "ev/resnet-8-s0", "--cfg", "job", "dataset.test_subset=64")
    assert code == 0, stderr
    shown = yaml.safe_load(stdout)
    assert (shown["model"]["depth"], shown["dataset"]["test_subset"]) == (8, 64)


def test_cfg_takes_job_or_all(monkeypatch, capsys):
    code, _, stderr = cli(monkeypatch, capsys, "train", "--cfg", "hydra", *TINY)
    assert code == 2 and one_error(stderr) == ("error: --cfg takes job or all, got 'hydra' "
                                               "(resexp composes no Hydra app config)")


# --------------------------------------------------------------------------- -m, hydra.*
def test_train_multirun_points_to_sweep_and_sweep_accepts_it(monkeypatch, capsys):
    code, _, stderr = cli(monkeypatch, capsys, "train", "-m", *TINY, "model.depth=8,14")
    assert code == 2 and "resexp sweep" in one_error(stderr)
    plans = []
    for flags in ([], ["-m"]):
        code, stdout, stderr = cli(monkeypatch, capsys, "sweep", *flags, "--dry-run", "--out", "sw", *SWEEP_TINY,
                                   "model.depth=8,14")
        assert code == 0, stderr
        plans.append(re.findall(r"(?:plain|resnet)-\d+-s0", stderr))
    assert plans[0] == plans[1] and len(plans[0]) == 4


def test_hydra_run_dir_is_the_results_folder(monkeypatch, capsys):
    code, stdout, stderr = cli(monkeypatch, capsys, "train", *TINY, "train.epochs=1", "hydra.run.dir=elsewhere/x")
    assert code == 0, stderr
    assert (Path("elsewhere/x/resnet-8-s0/summary.json")).is_file()
    assert not Path("results").exists()
    today = time.strftime("%Y-%m-%d")
    code, stdout, stderr = cli(monkeypatch, capsys, "sweep", "--cfg", "job", "--depths", "8", *SWEEP_TINY,
                               "hydra.sweep.dir=multirun/${now:%Y-%m-%d}")
    assert code == 0, stderr
    assert stdout.startswith(f"# sweep into multirun/{today}: archs plain,resnet, depths 8, seeds 0\n")


@pytest.mark.parametrize("args, expected", [
    (["train", "hydra.sweep.dir=x"], "error: hydra.sweep.dir=x: this command's results folder is hydra.run.dir=DIR"),
    (["sweep", "--dry-run", "hydra.run.dir=x"], "error: hydra.run.dir=x: this command's results folder is "
                                                "hydra.sweep.dir=DIR"),
    (["train", "--out", "a", "hydra.run.dir=b"], "error: --out a and hydra.run.dir=b name two folders"),
    (["train", "hydra.run.dir=${oc.env:HOME}"], "error: hydra.run.dir=${oc.env:HOME}: give a folder"),
    (["train", "hydra.job.chdir=true"], "error: hydra.job.chdir=true: Hydra's own settings are not run settings"),
    (["sweep", "--dry-run", "hydra/launcher=submitit_slurm"], "error: hydra/launcher=submitit_slurm: resexp's own "
                                                              "launchers do that: --launcher slurm"),
    (["bench", "hydra.run.dir=x"], "error: hydra.run.dir=x: Hydra's own settings are not run settings"),
])
def test_other_hydra_keys_are_one_line(monkeypatch, capsys, args, expected):
    tiny = SWEEP_TINY if args[0] == "sweep" else TINY
    code, _, stderr = cli(monkeypatch, capsys, *args, *tiny)
    assert code == 2
    assert one_error(stderr).startswith(expected)
    assert not Path("a").exists() and not Path("b").exists() and not Path("x").exists()


# --------------------------------------------------------------------------- --version
def test_version(monkeypatch, capsys):
    code, stdout, _ = cli(monkeypatch, capsys, "--version")
    assert (code, stdout) == (0, f"resexp {resexp.__version__}\n")


# --------------------------------------------------------------------------- completion
def complete(words: str, config_dir: Path | None = None) -> list[str]:
    """What typer's bash completion prints for the command line ``words`` (cursor at its end)."""
    line = f"resexp {words}"
    parts = line.split(" ")
    env = {"_RESEXP_COMPLETE": "complete_bash", "COMP_WORDS": line, "COMP_CWORD": str(len(parts) - 1)}
    result = CliRunner().invoke(app, [], env=env, prog_name="resexp")
    return result.output.split()


def test_completion_of_commands_options_groups_and_choices(tmp_path):
    assert {"train", "sweep", "plot", "status"} <= set(complete(""))
    assert {"--cfg", "--out", "--config-dir"} <= set(complete("train --"))
    keys = complete("train data")
    assert "dataset=" in keys and "dataset.source=" in keys and all(k.startswith("dataset") for k in keys)
    datasets = {p.stem for p in (shipped_config_dir() / "dataset").glob("*.yaml")}
    assert set(complete("train dataset=")) == {f"dataset={d}" for d in datasets}
    assert complete("sweep experiment=quick_f") == ["experiment=quick_fashion"]
    assert complete("train model.shortcut=") == ["model.shortcut=A", "model.shortcut=B"]
    assert complete("train train.amp=") == ["train.amp=true", "train.amp=false"]
    assert "model.arch=preact_resnet" in complete("train model.arch=p")
    # bash splits 'dataset=fa' at '=' (COMP_WORDBREAKS): only the value is completed then
    assert complete("train dataset = fa") == ["fashion_mnist"]
    # a --config-dir folder's datasets are offered too
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "kmnist.yaml").write_text("name: kmnist\n")
    assert complete(f"train --config-dir {tmp_path} dataset=k") == ["dataset=kmnist"]
    assert complete_words([], "dataset=", ["/no/such/folder"]) == []  # never a traceback


# --------------------------------------------------------------------------- names follow the data
def test_the_experiment_name_follows_the_dataset(monkeypatch, capsys):
    assert load_config([]).name == DEFAULT_EXPERIMENT == "he2016_cifar10"
    assert load_config(["dataset=fashion_mnist"]).name == "he2016_fashion_mnist"
    assert load_config(["experiment=quick_fashion", "dataset=mnist"]).name == "quick_fashion_on_mnist"
    assert load_config(["experiment=quick_fashion", "dataset=fashion_mnist"]).name == "quick_fashion"
    assert load_config(["dataset=mnist", "name=mine"]).name == "mine"
    assert load_config(["experiment=null", "dataset=mnist"]).name == "default"
    defaults = yaml.safe_load((shipped_config_dir() / "train.yaml").read_text())["defaults"]
    assert {"experiment": DEFAULT_EXPERIMENT} in defaults  # one default experiment, said once in code
    code, stdout, stderr = cli(monkeypatch, capsys, "train", *TINY, "train.epochs=1")
    assert code == 0, stderr
    assert stdout.startswith("done: results/he2016_synthetic/resnet-8-s0 ")


# --------------------------------------------------------------------------- your own dataset class
MY_DATASET = '''
import torch
from torch.utils.data import Dataset


class Stripes(Dataset):
    """Vertical or horizontal stripes: 2 classes, 8x8 grey images."""

    def __init__(self, train: bool, size: int):
        g = torch.Generator().manual_seed(0 if train else 1)
        self.targets = torch.randint(0, 2, (size,), generator=g).tolist()
        base = (torch.arange(8) % 2 * 255).to(torch.uint8)
        self.data = torch.stack([base.expand(8, 8) if t else base[:, None].expand(8, 8) for t in self.targets])

    def __len__(self):
        return len(self.targets)
'''


def test_a_dataset_class_beside_its_yaml_needs_no_pythonpath(monkeypatch, capsys, tmp_path):
    folder = tmp_path / "site"
    (folder / "dataset").mkdir(parents=True)
    (folder / "stripes_data.py").write_text(MY_DATASET)
    stripes = ("name: stripes\n_target_: stripes_data.Stripes\nchannels: 1\nimage_size: 8\nnum_classes: 2\n"
               "train_size: 128\ntest_size: 64\nmean: [0.5]\nstd: [0.5]\n"
               "train_args: {train: true, size: 128}\ntest_args: {train: false, size: 64}\n")
    (folder / "dataset" / "stripes.yaml").write_text(stripes)
    (folder / "dataset" / "broken.yaml").write_text(stripes.replace("stripes", "broken").replace(
        "broken_data.Stripes", "no_such_module.Data"))
    code, stdout, stderr = cli(monkeypatch, capsys, "datasets", "--config-dir", folder)
    assert code == 2  # broken.yaml is, and says so on its line; the others are still listed
    lines = {line.split()[0]: line for line in stdout.splitlines()[1:]}
    assert {"stripes", "broken", "mnist", "synthetic"} <= set(lines)
    assert lines["broken"].split()[1] == "error"
    assert "dataset broken: cannot import _target_ 'no_such_module.Data'" in lines["broken"]
    assert lines["stripes"].split()[1:3] == ["ready", "stripes_data.Stripes"]
    code, stdout, stderr = cli(monkeypatch, capsys, "train", "--config-dir", folder, "--out", "own",
                               *[o for o in TINY if not o.startswith("dataset.")], "dataset=stripes",
                               "train.batch_size=32", "model.arch=plain")
    assert code == 0, stderr
    assert (Path("own") / "plain-8-s0" / "summary.json").is_file()


def test_fake_data_takes_no_root():
    from torchvision.datasets import FakeData

    from resexp.data.load import _construct

    ds = _construct(FakeData, Path("unused"), download=True, args={"size": 3, "image_size": (1, 4, 4)})
    assert len(ds) == 3


# --------------------------------------------------------------------------- nits
def test_an_unknown_arch_lists_the_registered_ones(monkeypatch, capsys):
    code, _, stderr = cli(monkeypatch, capsys, "train", *TINY, "model.arch=resnet50")
    assert code == 2
    assert one_error(stderr) == ("error: model.arch must be one of mlp_plain, mlp_resnet, plain, preact_resnet, "
                                 "resnet, got 'resnet50'")


def test_status_lists_the_runs_a_sweep_has_not_started(monkeypatch, capsys, tmp_path):
    out = tmp_path / "sw"
    save_spec(SweepSpec(["plain", "resnet"], [8, 14], [0], overrides=["dataset=synthetic"]), out)
    make_run(out, "plain", 8, 0, [50.0, 40.0], epochs_planned=2)
    make_run(out, "resnet", 8, 0, [50.0, 30.0], epochs_planned=2)
    code, stdout, stderr = cli(monkeypatch, capsys, "status", out)
    assert code == 0, stderr
    runs = [line.split()[:2] for line in stdout.splitlines()[1:-1]]
    assert runs == [["plain-8-s0", "done"], ["plain-14-s0", "new"], ["resnet-8-s0", "done"],
                    ["resnet-14-s0", "new"]]
    assert stdout.splitlines()[-1] == "4 runs: 2 done, 2 new"
    # a received sweep.yaml is data: an arch that is no run folder's name is not printed
    save_spec(SweepSpec(["plain", "x\x1b[2J/../y"], [8, 14], [0], overrides=["dataset=synthetic"]), out)
    code, stdout, stderr = cli(monkeypatch, capsys, "status", out)
    assert code == 0 and "\x1b" not in stdout and stdout.splitlines()[-1] == "3 runs: 2 done, 1 new"


def test_top_level_help_shows_whole_command_descriptions():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for line in result.output.splitlines():
        if line.strip().startswith(("train ", "sweep ", "plot ", "eval ")):
            assert not line.rstrip().endswith("..."), line
