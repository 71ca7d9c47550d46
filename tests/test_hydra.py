"""Hydra's override grammar, config groups of your own and errors that say what to fix:
docs/hydra.md run command by command, and the misuses it does not show."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from helpers.cli import SWEEP_TINY, TINY, cli
from omegaconf import OmegaConf

from resexp.settings.compose import load_config

DOC = Path(__file__).resolve().parent.parent / "docs" / "hydra.md"
TEXT = DOC.read_text()


def doc_files() -> dict[str, str]:
    """The files the page shows: a `path`: line, then a yaml block."""
    return dict(re.findall(r"^`([^`\n]+\.yaml)`:\n\n```yaml\n(.*?)```", TEXT, re.M | re.S))


def doc_commands() -> list[tuple[str, list[str]]]:
    """Each `$ resexp ...` line of the page's console blocks with the lines shown after it."""
    commands = []
    for block in re.findall(r"^```console\n(.*?)```", TEXT, re.M | re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            else:
                commands[-1][1].append(line)
    return commands


def shows(shown: list[str], printed: list[str]) -> bool:
    """``printed`` is ``shown`` with each `...` standing for any lines (none included)."""
    pattern = "".join(".*" if line == "..." else re.escape(line + "\n") for line in shown)
    return re.fullmatch(pattern, "".join(line + "\n" for line in printed), re.S) is not None


def write_doc_files() -> None:
    for path, text in doc_files().items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)


def test_the_page_is_read_whole():
    """The parsers above find every command and file: a changed layout fails here, not silently."""
    assert len(doc_commands()) == TEXT.count("\n$ resexp ") >= 30
    assert set(doc_files()) == set(re.findall(r"^`(mine/[^`]+)`:$", TEXT, re.M)) and len(doc_files()) == 4
    assert shows(["a", "...", "c"], ["a", "b", "c"]) and shows(["a", "...", "b"], ["a", "b"])
    assert not shows(["a", "c"], ["a", "b", "c"]) and not shows(["b", "..."], ["a", "b"])


@pytest.mark.parametrize("command, shown", doc_commands(), ids=[c for c, _ in doc_commands()])
def test_the_hydra_page_shows_what_resexp_prints(monkeypatch, capsys, command, shown):
    write_doc_files()
    words = shlex.split(command)
    assert words[0] == "resexp"
    code, stdout, stderr = cli(monkeypatch, capsys, *words[1:])
    errors = [line for line in shown if line.startswith("error: ")]
    if errors:
        assert (code, stderr.strip().splitlines(), stdout) == (2, errors, "")
    else:
        assert code == 0, stderr
        assert shows(shown, stdout.splitlines()), stdout
    assert not Path("results").exists() and not Path("multirun").exists()  # nothing is run or written


# --------------------------------------------------------------------------- misuses not on the page
@pytest.fixture
def mine(tmp_path) -> Path:
    write_doc_files()
    (tmp_path / "mine" / "optim" / "broken.yaml").write_text("# @package train\nlr: [0.1\n")
    (tmp_path / "mine" / "optim" / "late.yaml").write_text("# an optimizer\n# @package train\nlr: 0.05\n")
    (tmp_path / "mine" / "optim" / "badtype.yaml").write_text("# @package train\nlr: fast\n")
    return tmp_path / "mine"


@pytest.mark.parametrize("args, line", [
    (["+optim=broken"], "mine/optim/broken.yaml line 3 is not valid YAML: expected ',' or ']', but got '<stream end>'"),
    (["+optim=late"], "mine/optim/late.yaml: unknown config key 'optim' (its '# @package' line must be the "
                      "file's first line)"),
    (["+optim=badtype"], "mine/optim/badtype.yaml: train.lr must be a number, got 'fast'"),
    (["+optim=nope"], "unknown optim 'nope' (available optims: badtype, broken, headless, late, nesterov, typo)"),
    (["~optim"], "~optim: no optim is picked, so none can be removed"),
    (["+dataset=mnist"], "+dataset=mnist: dataset already has a place in train.yaml's defaults (default cifar10); "
                         "pick another with dataset=mnist"),
    (["dataset=null"], "dataset=null: dataset cannot be removed; pick another with dataset=NAME"),
    (["dataset=synthetic", "+dataset.train_args.size=3"],
     "+dataset.train_args.size=3: dataset.train_args.size is set already; set it with dataset.train_args.size=3 "
     "('++' sets a key whether or not it is there)"),
    (["dataset.train_args.size=3"], "dataset.train_args.size is not set yet; add it with +dataset.train_args.size=3"),
    (["~dataset.train_args.size"], "~dataset.train_args.size: dataset.train_args.size is not set, so it cannot "
                                   "be removed"),
    (["++train.optimizer=adam"], "unknown config key 'train.optimizer' ('+' adds keys only under "
                                 "dataset.train_args, dataset.test_args and launcher.sbatch)"),
    (["train.wandb_tag=[a]"], "unknown config key 'train.wandb_tag'; did you mean train.wandb_tags?"),
    (["~train.wandb_tag"], "unknown config key 'train.wandb_tag'; did you mean train.wandb_tags?"),
])
def test_each_misuse_is_one_line_naming_its_key(monkeypatch, capsys, mine, args, line):
    code, stdout, stderr = cli(monkeypatch, capsys, "train", "--cfg", "job", "--config-dir", "mine", *args)
    assert (code, stderr.strip().splitlines(), stdout) == (2, [f"error: {line}"], "")


@pytest.mark.parametrize("args, key, value", [
    (["++train.lr=0.5"], "train.lr", 0.5),
    (["++optim=nesterov"], "train.nesterov", True),  # as +optim=nesterov: the group has no default
    (["~train.wandb_tags"], "train.wandb_tags", []),  # refused once: "cannot be removed"
    (["experiment=quick_fashion", "~train.milestones"], "train.milestones", [32000, 48000]),
    (["~train"], "train.warmup_iters", 0),  # a whole section back to the schema
    (["~train.warmup_iters=400"], "train.warmup_iters", 0),  # it is 400: removed
    (["launcher.sbatch={constraint:a100}"], "launcher.sbatch", {"constraint": "a100"}),
    (["launcher.sbatch={constraint:a100,qos:long}", "~launcher.sbatch.qos"], "launcher.sbatch", {"constraint": "a100"}),
    (["model=null"], "model.arch", "resnet"),
    (["~model"], "model.arch", "resnet"),
    (["model=plain", "experiment=mlp_depth", "model.mlp_widths=[256]"], "model.arch", "plain"),  # the model wins
])
def test_the_grammar_sets_what_hydra_would(mine, args, key, value):
    cfg = load_config(args, [mine])
    got = OmegaConf.select(cfg, key)
    assert (OmegaConf.to_container(got) if OmegaConf.is_config(got) else got) == value


def test_a_sweep_saves_and_continues_every_kind_of_override(monkeypatch, capsys, mine):
    overrides = ["--config-dir", "mine", "+optim=nesterov", "++train.lr=0.05", "~train.warmup_iters",
                 "model=resnet_b"]
    code, stdout, stderr = cli(monkeypatch, capsys, "sweep", "--depths", "8", "--out", "out", *SWEEP_TINY,
                               *overrides)
    assert code == 0, stderr
    config = yaml.safe_load(Path("out/resnet-8-s0/config.yaml").read_text())
    assert (config["train"]["nesterov"], config["train"]["lr"], config["train"]["warmup_iters"],
            config["model"]["shortcut"]) == (True, 0.05, 0, "B")
    assert sorted(p.name for p in Path("out").glob("*-s0")) == ["resnet-8-s0"]  # model=resnet_b: resnets only
    assert yaml.safe_load(Path("out/sweep.yaml").read_text())["overrides"][-4:] == overrides[2:]
    code, stdout, stderr = cli(monkeypatch, capsys, "sweep", "--out", "out", "--config-dir", "mine")
    assert code == 0, stderr
    assert stdout.strip() == "sweep out: 1 done"


def test_a_saved_sweep_names_an_option_of_your_own_group_by_its_name_only(monkeypatch, capsys, mine):
    Path("out").mkdir()
    Path("out/sweep.yaml").write_text(yaml.safe_dump({
        "archs": ["resnet"], "depths": [8], "seeds": [0], "overrides": [*SWEEP_TINY, "+optim=../../elsewhere"],
        "config_dirs": [str(mine.resolve())]}))
    code, _, stderr = cli(monkeypatch, capsys, "sweep", "--dry-run", "--out", "out", "--config-dir", "mine")
    assert code == 2
    assert stderr.strip().splitlines() == [
        f"error: {Path('out/sweep.yaml')} sets +optim=../../elsewhere: an option of optim is named by its file "
        f"name in a config folder"]


def test_train_uses_a_group_of_your_own(monkeypatch, capsys, mine):
    code, _, stderr = cli(monkeypatch, capsys, "train", "--out", "out", "--config-dir", "mine", *TINY,
                          "+optim=nesterov")
    assert code == 0, stderr
    config = yaml.safe_load(Path("out/resnet-8-s0/config.yaml").read_text())
    assert (config["train"]["nesterov"], config["train"]["momentum"]) == (True, 0.95)
