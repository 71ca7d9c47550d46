"""The `resexp` command as a user meets it: exit codes, one-line errors, the files it writes."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
import typer.main
from helpers.cli import SWEEP_TINY, TINY, cli, rows, run_cli
from helpers.markers import need_fashion_mnist
from typer.testing import CliRunner

import resexp
from resexp.cli import app
from resexp.models import count_params, get_model
from resexp.settings.compose import load_config, shipped_config_dir
from resexp.train.loop import fit

CONTRACT_COLUMNS = ["epoch", "iteration", "lr", "train_loss", "train_err", "test_loss", "test_err",
                    "seconds", "images_per_s"]
CONTRACT_SUMMARY = ["arch", "depth", "seed", "dataset", "params", "status", "epochs", "final_train_err",
                    "final_test_err", "device", "torch_version", "git_commit"]


def snapshot(folder: Path) -> dict:
    """Every file below folder: its bytes and modification time."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


RESULT_FILES = {"metrics.csv", "summary.json", "checkpoint.pt", "sweep.yaml"}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny run, trained once for this module: results/he2016_synthetic/resnet-8-s0
    (TINY trains on synthetic images, so the default experiment is named after them)."""
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("finished") / "results" / "he2016_synthetic"
    fit(load_config(TINY), out)
    torch.set_num_threads(threads)
    return out.parent


# --------------------------------------------------------------------------- user errors
OFFLINE_MNIST = ["dataset=mnist", "dataset.download=false", "model.depth=8", "train.device=cpu"]
USER_ERRORS = {
    "bad-depth": (["train", *TINY, "model.depth=1000"], ["998", "1004"]),
    "unknown-dataset": (["train", *TINY, "dataset=nope"], ["unknown dataset 'nope'", "synthetic"]),
    "unknown-key": (["train", *TINY, "train.momentun=0.5"], ["unknown config key 'train.momentun'"]),
    "bad-stale-after": (["train", *TINY, "train.stale_after=0"], ["train.stale_after must be", "> 0"]),
    "unknown-top-key": (["train", *TINY, "+modle.depth=8"], ["modle"]),
    "malformed-override": (["train", *TINY, "model.depth"], ["model.depth"]),
    "bad-depth-list": (["sweep", "--depths", "20,abc", "--out", "results/he2016_synthetic", *SWEEP_TINY],
                       ["--depths", "20,abc"]),
    "bad-depth-in-sweep": (["sweep", "--depths", "8,10", "--out", "results/he2016_synthetic", *SWEEP_TINY],
                           ["depth 10", "8 and 14"]),
    "train-out-below-a-file": (["train", "--out", "a_file/results", *TINY], ["cannot write", "a_file/results"]),
    "sweep-out-below-a-file": (["sweep", "--depths", "8", "--out", "a_file/results", *SWEEP_TINY],
                               ["cannot write", "a_file/results"]),
    "train-data-missing": (["train", "--out", "elsewhere", *OFFLINE_MNIST],
                           ["dataset mnist", "download disabled", "dataset.source="]),
    "sweep-data-missing": (["sweep", "--depths", "8", "--out", "results/mnist", *OFFLINE_MNIST[:2], "train.device=cpu"],
                           ["dataset mnist", "download disabled"]),
    "sweep-changed-setting": (["sweep", "--archs", "resnet", "--depths", "8", "--out", "results/he2016_synthetic",
                               *SWEEP_TINY, "train.epochs=2"], ["resnet-8-s0", "train.epochs: 3 -> 2"]),
    "train-changed-setting": (["train", *TINY, "train.batch_size=32"], ["resnet-8-s0", "train.batch_size: 64 -> 32"]),
    "bad-diagnostics": (["train", *TINY, "train.diagnostics=sometimes"], ["train.diagnostics", "off, end, epoch"]),
    "eval-unknown-key": (["eval", "results/he2016_synthetic/resnet-8-s0", "train.momentun=1"],
                         ["unknown config key 'train.momentun'"]),
    "eval-not-a-run": (["eval", "results/he2016_synthetic"], ["results/he2016_synthetic is not a run folder"]),
    "plot-bad-train-error": (["plot", "results/he2016_synthetic", "--train-error", "dirty"],
                             ["--train-error", "clean"]),
    # data the runs cannot have: said before any folder, in a dry run too (nothing downloaded)
    "train-source-missing": (["train", "--out", "elsewhere", *OFFLINE_MNIST, "dataset.source=nowhere"],
                             ["dataset mnist: dataset.source=nowhere does not exist (download disabled)"]),
    "sweep-source-of-no-dataset": (["sweep", "--depths", "8", "--out", "elsewhere", "dataset=cifar10",
                                    "dataset.source=a_folder", "train.device=cpu"],
                                   ["dataset.source=a_folder holds none of the files CIFAR10 reads"]),
    "dry-run-data-missing": (["sweep", "--dry-run", "--depths", "8", "--out", "elsewhere", *OFFLINE_MNIST[:2],
                              "train.device=cpu"], ["dataset mnist", "download disabled"]),
    "train-num-classes-below-the-labels": (["train", "--out", "elsewhere", *TINY, "dataset.num_classes=3"],
                                           ["dataset.num_classes=3, but the labels of dataset synthetic go from 0 "
                                            "to 9: set dataset.num_classes=10"]),
    "sweep-num-classes-below-the-labels": (["sweep", "--depths", "8", "--out", "elsewhere", *SWEEP_TINY,
                                            "dataset.num_classes=3"], ["dataset.num_classes=3, but the labels"]),
    # sizes past any real net, or numbers that are no numbers: the schema's ranges, before torch sees them
    "huge-width": (["train", *TINY, "model.widths=[16,32,99999999999]"],
                   ["model.widths must be three positive integers up to 65536", "99999999999"]),
    "huge-mlp-width": (["train", *TINY, "model.arch=mlp_plain", "model.mlp_widths=[99999999999]"],
                       ["model.mlp_widths must be a non-empty list of positive integers up to 65536"]),
    "huge-pad": (["train", *TINY, "dataset.augment.pad=99999999999"],
                 ["dataset.augment.pad must be less than dataset.image_size (28), got 99999999999"]),
    "huge-image": (["train", *TINY, "dataset.image_size=99999999999"], ["dataset.image_size must be an integer in"]),
    "huge-epochs": (["train", *TINY, "train.epochs=100000000000000000000000"],
                    ["train.epochs must be a positive integer up to 1,000,000 or null"]),
    "float-epochs": (["train", *TINY, "train.epochs=1e23"], ["train.epochs must be an integer"]),
    "infinite-weight-decay": (["train", *TINY, "train.weight_decay=inf"], ["train.weight_decay must be in [0, 1]"]),
    "infinite-gamma": (["train", *TINY, "train.gamma=inf"], ["train.gamma must be in (0, 1]", "inf"]),
    "nan-gamma": (["train", *TINY, "train.gamma=nan"], ["train.gamma must be in (0, 1]", "nan"]),
    "infinite-milestone": (["train", *TINY, "train.milestones=[inf]"],
                           ["train.milestones must be a list of numbers >= 0, each at most 1,000,000,000"]),
    "infinite-mem": (["sweep", "--depths", "8", "--out", "elsewhere", "--launcher", "slurm", *SWEEP_TINY,
                      "launcher.mem_gb=inf"], ["launcher.mem_gb must be a positive number or null"]),
    # accepted and never used, or a folder nobody names that way
    "warmup-lr-without-warmup": (["train", *TINY, "train.warmup_iters=0", "train.warmup_lr=0.5"],
                                 ["train.warmup_lr=0.5 is set but train.warmup_iters is 0: set train.warmup_iters "
                                  "above 0, or leave train.warmup_lr out"]),
    "train-out-empty": (["train", "--out", "", *TINY], ["'--out'", "give a folder"]),
    "sweep-out-empty": (["sweep", "--depths", "8", "--out", "", *SWEEP_TINY], ["'--out'", "give a folder"]),
}


@pytest.mark.parametrize("args, says", USER_ERRORS.values(), ids=USER_ERRORS.keys())
def test_user_error_is_one_line_exit_2_and_leaves_results_alone(finished_run, monkeypatch, capsys, args, says):
    shutil.copytree(finished_run, "results")
    Path("a_file").write_text("not a folder\n")
    Path("a_folder").mkdir()
    (Path("a_folder") / "notes.txt").write_text("not a dataset\n")
    before, here = snapshot(Path("results")), snapshot(Path())

    code, stdout, stderr = cli(monkeypatch, capsys, *args)

    assert code == 2
    assert stdout == ""
    plan = r"(plain|resnet)-\d+-s\d+ |run |\d+ runs,|CPU threads: "  # the plan's lines, before the error
    lines = [line for line in error_lines(stderr) if not re.match(plan, line)]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    for text in says:
        assert text in lines[0]
    assert snapshot(Path("results")) == before
    results_elsewhere = [p for p in Path().rglob("*") if p.name in RESULT_FILES and p.parts[0] != "results"]
    assert results_elsewhere == []
    assert snapshot(Path()) == here  # no folder made (elsewhere/), no data staged or downloaded


def test_a_received_run_of_impossible_sizes_is_one_line_for_eval(finished_run, monkeypatch, capsys):
    """A config.yaml from elsewhere is checked against the same ranges as the command line:
    its 99999999999-filter stage is refused before the memory estimate builds anything."""
    shutil.copytree(finished_run, "results")
    config = Path("results/he2016_synthetic/resnet-8-s0/config.yaml")
    config.write_text(config.read_text().replace("  widths:\n  - 16\n  - 32\n  - 64\n",
                                                 "  widths:\n  - 16\n  - 32\n  - 99999999999\n"))
    before = snapshot(Path("results"))
    code, stdout, stderr = cli(monkeypatch, capsys, "eval", config.parent)
    assert (code, stdout) == (2, "")
    assert error_lines(stderr) == ["error: model.widths must be three positive integers up to 65536, one per "
                                   "stage (§4.2: 16, 32, 64), got [16, 32, 99999999999]"]
    assert snapshot(Path("results")) == before


BROKEN_YAML = {  # a dataset file of a --config-dir that YAML cannot read: its line names it, the others list
    "syntax": ("_target_: [unclosed\n", "line 3 is not valid YAML: expected ',' or ']'"),
    "tab": ("\t_target_: a\n", "line 2 is not valid YAML: found character '\\t' that cannot start any token"),
    "duplicate-key": ("name: twice\n", "line 2 is not valid YAML: found duplicate key name"),
    "python-tag": ("_target_: !!python/object/apply:os.system [echo hi]\n",
                   "line 2 is not valid YAML: could not determine a constructor for the tag"),
}


@pytest.mark.parametrize("text, says", BROKEN_YAML.values(), ids=BROKEN_YAML.keys())
def test_datasets_with_a_broken_yaml_file_is_one_line_for_it(monkeypatch, capsys, text, says):
    (Path("mine") / "dataset").mkdir(parents=True)
    (Path("mine") / "dataset" / "broken.yaml").write_text("name: broken\n" + text)
    code, stdout, stderr = cli(monkeypatch, capsys, "datasets", "--config-dir", "mine")
    assert (code, stderr) == (2, "")
    lines = {line.split()[0]: line for line in stdout.splitlines()[1:]}
    assert lines["broken"].split()[1] == "error" and f"mine/dataset/broken.yaml {says}" in lines["broken"]
    assert lines["synthetic"].split()[1] == "generated" and "Traceback" not in stdout
    assert not Path(os.environ["RESEXP_DATA"]).exists()


STOPPED = "interrupted: finished epochs are saved; rerun the same command to continue"


@pytest.mark.slow
@pytest.mark.parametrize("command", [["train", *TINY], ["sweep", "--depths", "8", "--archs", "resnet", *SWEEP_TINY]],
                         ids=["train", "sweep"])
def test_sigterm_stops_as_ctrl_c_does_with_one_line_and_exit_143(command, monkeypatch, capsys):
    """`kill PID` of a real resexp process in its second epoch or later: the Ctrl-C line, exit
    code 143 (128 + SIGTERM), the checkpointed epochs kept, and the same command resumes."""
    import signal
    import subprocess
    import sys

    args = [*command, "train.epochs=12", "train.diagnostics=off", "--out", "out"]
    proc = subprocess.Popen([sys.executable, "-m", "resexp", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        seen = []
        for line in proc.stderr:  # readiness: epoch 2's line, printed once epoch 1 is checkpointed
            seen.append(line)
            if "resnet-8-s0 epoch 2/12 " in line:
                proc.send_signal(signal.SIGTERM)
                break
        stdout, rest = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    stderr = "".join(seen) + rest
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert stdout == "" and error_lines(stderr)[-1] == STOPPED
    assert "Traceback" not in stderr
    kept = [int(r["epoch"]) for r in rows(Path("out/resnet-8-s0"))]
    assert kept == list(range(1, len(kept) + 1)) and 2 <= len(kept) < 12
    code, _, again = cli(monkeypatch, capsys, *args)
    assert code == 0, again
    assert "resnet-8-s0 epoch 12/12 " in again and "resnet-8-s0 epoch 1/12 " not in again  # resumed, not restarted
    assert [int(r["epoch"]) for r in rows(Path("out/resnet-8-s0"))] == list(range(1, 13))


def test_usage_error_exits_2(monkeypatch, capsys):
    code, stdout, stderr = cli(monkeypatch, capsys, "sweep", "--depths", "8", "--no-such-option")
    assert code == 2 and stdout == ""
    assert "No such option: --no-such-option" in stderr
    assert "Traceback" not in stderr
    assert list(Path().iterdir()) == []


def test_user_error_from_the_installed_entry_point():
    done = run_cli("train", *TINY, "model.depth=1000", "--out", "out", timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    assert error_lines(done.stderr) == [
        "error: depth 1000 is not 6n+2: nearest valid depths are 998 and 1004"]
    assert not Path("out").exists()


QUICK_EXIT = """
import atexit, sys, threading, time
from resexp.process import exit_quickly
atexit.register(lambda: print("atexit ran"))
threading.Thread(target=lambda: (time.sleep(0.2), print("thread done"))).start()
sys.stdout.write("buffered, no newline; ")
sys.stderr.write("to stderr")
exit_quickly(int(sys.argv[1]) if sys.argv[1].isdigit() else sys.argv[1], quick=True)
print("never")
"""


@pytest.mark.parametrize("code, rc", [("0", 0), ("3", 3), ("a message", 1)])
def test_quick_exit_keeps_what_a_normal_exit_does(code, rc):
    """The installed command ends with os._exit (no module teardown): its exit status,
    unflushed output, a thread still running and the atexit functions are kept."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", QUICK_EXIT, code], capture_output=True, text=True, timeout=60)
    assert done.returncode == rc
    assert done.stdout == "buffered, no newline; thread done\natexit ran\n"
    assert done.stderr == "to stderr" + ("a message\n" if rc == 1 else "")


def test_corrupt_checkpoint_is_named_and_metrics_are_kept(monkeypatch, capsys):
    from resexp.train import checkpoint

    original = checkpoint.save

    def save_then_interrupt(run, state):
        original(run, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt  # as if killed after epoch 2

    with monkeypatch.context() as m:
        m.setattr(checkpoint, "save", save_then_interrupt)
        code, _, stderr = cli(m, capsys, "train", "--out", "out", *TINY)
    assert code == 130
    assert "interrupted: finished epochs are saved" in stderr
    run = Path("out/resnet-8-s0")
    assert [r["epoch"] for r in rows(run)] == ["1", "2"]
    (run / "checkpoint.pt").write_bytes(b"this is not a checkpoint")
    metrics = (run / "metrics.csv").read_bytes()

    code, stdout, stderr = cli(monkeypatch, capsys, "train", "--out", "out", *TINY)
    assert code == 2 and stdout == ""
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"error: {run / 'checkpoint.pt'}: unreadable (")
    assert (run / "metrics.csv").read_bytes() == metrics


# --------------------------------------------------------------------------- train
def test_train_writes_the_contracted_run_files(monkeypatch, capsys):
    code, stdout, stderr = cli(monkeypatch, capsys, "train", "--out", "out", *TINY, "seed=4", "train.milestones=[2]")
    assert code == 0, stderr
    run = Path("out/resnet-8-s4")
    assert sorted(p.name for p in Path("out").iterdir()) == ["resnet-8-s4"]
    assert {"config.yaml", "metrics.csv", "summary.json"} <= {p.name for p in run.iterdir()}

    metrics = rows(run)
    assert list(metrics[0])[:len(CONTRACT_COLUMNS)] == CONTRACT_COLUMNS
    assert [int(r["epoch"]) for r in metrics] == [1, 2, 3]
    assert [int(r["iteration"]) for r in metrics] == [4, 8, 12]  # epoch * (256 images / batch 64)
    assert [float(r["lr"]) for r in metrics] == [0.1, 0.1, 0.01]  # /10 after train.milestones=[2] epochs
    for r in metrics:
        for key, images in (("train_err", 256), ("test_err", 128)):
            assert 0 <= float(r[key]) <= 100
            wrong = float(r[key]) * images / 100  # a percentage of whole images
            assert wrong == pytest.approx(round(wrong))
        assert math.isfinite(float(r["train_loss"])) and float(r["train_loss"]) > 0
        assert float(r["seconds"]) > 0 and float(r["images_per_s"]) > 0

    summary = json.loads((run / "summary.json").read_text())
    assert set(CONTRACT_SUMMARY) <= set(summary)
    cfg = load_config([*TINY, "seed=4"])
    model = get_model(**cfg.model, in_channels=1, num_classes=10, image_size=28)
    assert (summary["arch"], summary["depth"], summary["seed"], summary["dataset"]) == ("resnet", 8, 4, "synthetic")
    assert (summary["status"], summary["epochs"]) == ("done", 3)
    assert summary["params"] == count_params(model)
    assert summary["final_train_err"] == float(metrics[-1]["train_err"])
    assert summary["final_test_err"] == float(metrics[-1]["test_err"])
    assert (summary["device"], summary["torch_version"]) == ("cpu", torch.__version__)
    assert summary["resexp_version"] == resexp.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", summary["resexp_version"])
    if (Path(resexp.__file__).resolve().parents[1] / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", summary["git_commit"])
    assert stdout.strip() == (f"done: out/resnet-8-s4 train err {summary['final_train_err']:.2f}%, "
                              f"test err {summary['final_test_err']:.2f}%")


# --------------------------------------------------------------------------- datasets, help
def test_datasets_lists_every_dataset_config(tmp_path, monkeypatch, capsys):
    extra = tmp_path / "my_configs"
    (extra / "dataset").mkdir(parents=True)
    (extra / "dataset" / "kmnist.yaml").write_text(
        (shipped_config_dir() / "dataset" / "mnist.yaml").read_text()
        .replace("name: mnist", "name: kmnist").replace("torchvision.datasets.MNIST", "torchvision.datasets.KMNIST"))

    code, stdout, stderr = cli(monkeypatch, capsys, "datasets", "--config-dir", extra)
    assert code == 0, stderr
    header, *lines = stdout.splitlines()
    assert header.split() == ["dataset", "on", "disk", "class", "format", "folder"]
    listed = {line.split()[0]: line.split() for line in lines}
    shipped = {p.stem for p in (shipped_config_dir() / "dataset").glob("*.yaml")}
    assert {"cifar10", "mnist", "fashion_mnist", "synthetic"} <= shipped
    assert set(listed) == shipped | {"kmnist"}
    assert listed["synthetic"][1:3] == ["generated", "resexp.data.SyntheticImages"]
    assert listed["mnist"][1:3] == ["missing", "torchvision.datasets.MNIST"]  # RESEXP_DATA is empty
    assert listed["kmnist"][1:3] == ["missing", "torchvision.datasets.KMNIST"]
    assert listed["cifar10"][-1] == os.environ["RESEXP_DATA"]
    fashion = "source" if Path("/usr/share/datasets/fashion-mnist").is_dir() else "missing"
    assert listed["fashion_mnist"][1] == fashion


COMMANDS = ["train", "sweep", "plot", "report", "status", "datasets", "bench", "eval"]


def test_every_command_is_registered():
    assert sorted(typer.main.get_command(app).commands) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command_names_its_options(command):
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())  # one line, as if never wrapped
    click_command = typer.main.get_command(app).commands[command]
    for param in click_command.params:
        if param.param_type_name == "argument":
            assert (param.metavar or param.name).lower() in text.lower()
        elif param.opts[0] != "--help":
            assert param.opts[0] in text
            assert " ".join((param.help or "").split()) in text  # the whole help, "[default: ...]" included
    expected = {"train": ["--out", "[default: results/<name>]"],
                "sweep": ["--depths", "--archs", "--seeds", "--out", "--dry-run", "[default: plain,resnet]"],
                "plot": ["--format", "results_dir", "[default: RESULTS_DIR/figures]"],
                "report": ["results_dir", "[default: RESULTS_DIR]"], "status": ["results_dir"],
                "datasets": ["--config-dir"], "bench": ["--steps", "--compile", "--depths"],
                "eval": ["run_dir", "--no-train", "dataset=mnist"]}[command]
    for name in expected:
        assert name.lower() in text.lower()


# --------------------------------------------------------------------------- real data, end to end
@pytest.mark.slow
def test_quick_fashion_sweep_plot_and_report(monkeypatch, capsys):
    need_fashion_mnist()
    out = Path("quick")
    code, stdout, stderr = cli(monkeypatch, capsys, "sweep", "--depths", "8", "--out", out,
                               "experiment=quick_fashion", "dataset.train_subset=256", "dataset.test_subset=256",
                               "train.epochs=1", "train.warmup_iters=0", "train.milestones=[]", "train.device=cpu",
                               "train.threads=1")
    assert code == 0, stderr
    assert stdout.strip() == f"sweep {out}: 2 done"
    summaries = {name: json.loads((out / name / "summary.json").read_text()) for name in ("plain-8-s0", "resnet-8-s0")}
    for s in summaries.values():
        assert (s["dataset"], s["synthetic"], s["experiment"], s["train_images"]) == ("fashion_mnist", False,
                                                                                      "quick_fashion", 256)

    code, stdout, stderr = cli(monkeypatch, capsys, "plot", out)
    assert code == 0, stderr
    figures = {f"{name}.{ext}" for name in ("depth", "curves", "responses", "gradients", "identity")
               for ext in ("png", "pdf", "csv")}  # diagnostics are on by default (train.diagnostics=end)
    assert {Path(p).name for p in stdout.split()} == figures
    for name in figures:
        assert (out / "figures" / name).stat().st_size > 0

    code, stdout, stderr = cli(monkeypatch, capsys, "report", out)
    assert code == 0, stderr
    report = (out / "report.md").read_text()
    assert "on Fashion-MNIST" in report and "on unaugmented images" in report
    with open(out / "report.csv", newline="") as f:
        table = {(r["arch"], int(r["depth"])): r for r in csv.DictReader(f)}
    assert set(table) == {("plain", 8), ("resnet", 8)}
    for (arch, depth), r in table.items():
        s = summaries[f"{arch}-{depth}-s0"]
        assert float(r["train_err_mean"]) == pytest.approx(s["final_train_err"], abs=1e-9)
        assert float(r["test_err_mean"]) == pytest.approx(s["final_test_err"], abs=1e-9)
        assert int(float(r["params"])) == s["params"]
        assert int(float(r["n"])) == 1 and int(float(r["epochs"])) == 1
