"""A results folder from someone else is data: each attack here must fail.

Every test runs with HOME pointed at a sandbox holding a victim file, and checks that
the victim is unchanged and nothing was written outside the sandbox's own folders; a
command that refuses says so in one line and exits 2 (docs/security.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from helpers.cli import SWEEP_TINY, TINY, cli
from helpers.runs import make_run

from resexp.data.stage import MANIFEST, stage_source
from resexp.errors import UserError
from resexp.run import safeio
from resexp.run.folder import RunDir
from resexp.settings.compose import load_config
from resexp.sweep import plan as sw
from resexp.sweep.slurm import executor_parameters, sbatch_preview

VICTIM = "# the user's own shell setup\n"
PAYLOAD = "touch /tmp/PWNED\n"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A sandboxed HOME with a victim ~/.bashrc."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text(VICTIM)
    monkeypatch.setenv("HOME", str(home))
    return home


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def untouched(home: Path) -> None:
    assert (home / ".bashrc").read_text() == VICTIM
    assert sorted(p.name for p in home.iterdir()) == [".bashrc"]


def payload_folder(folder: Path) -> Path:
    payload = folder / "payload"
    payload.mkdir(parents=True)
    (payload / ".bashrc").write_text(PAYLOAD)
    return payload


# --------------------------------------------------------------------------- 1: writes outside itself
def test_a_run_config_cannot_stage_into_home(tmp_path, home, monkeypatch, capsys):
    run = make_run(tmp_path / "G", "plain", 8, 0, [50.0])
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["dataset"] = {"name": "mnist", "root": "~", "source": str(payload_folder(tmp_path / "G")),
                         "stage_dir": ".", "download": False}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "checkpoint.pt").write_bytes(b"not reached")
    code, _, err = cli(monkeypatch, capsys, "eval", run, "train.device=cpu")
    # the user's own mnist config decides where the data is: not there, and not downloaded
    one_line_error(code, err, "dataset mnist is not under", str(tmp_path / "data"))
    untouched(home)


def test_a_run_config_naming_no_dataset_of_the_user_is_refused(tmp_path, home, monkeypatch, capsys):
    run = make_run(tmp_path / "G", "plain", 8, 0, [50.0])
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["dataset"] = {"name": "../../../G/evil", "_target_": "os.system"}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "checkpoint.pt").write_bytes(b"")
    code, _, err = cli(monkeypatch, capsys, "eval", run)
    one_line_error(code, err, "none of your dataset configs")
    untouched(home)


@pytest.mark.parametrize("overrides, needle", [
    (["dataset.root='~'", "dataset.source=PAYLOAD", "dataset.stage_dir=."], "dataset.root"),
    (["dataset._target_=os.system"], "dataset._target_"),
    (["launcher=slurm"], "launcher settings are never taken"),
    (["launcher.partition=x"], "launcher settings are never taken"),
    (["dataset=../../G2/evil"], "named by its file name"),
])
def test_a_saved_sweep_cannot_choose_paths_code_or_the_launcher(tmp_path, home, monkeypatch, capsys,
                                                                overrides, needle):
    out = tmp_path / "G2"
    payload = payload_folder(out)
    saved = {"archs": ["plain"], "depths": [8], "seeds": [0],
             "overrides": [*SWEEP_TINY, *(o.replace("PAYLOAD", str(payload)) for o in overrides)]}
    out.mkdir(exist_ok=True)
    (out / "sweep.yaml").write_text(yaml.safe_dump(saved))
    code, _, err = cli(monkeypatch, capsys, "sweep", "--out", out)
    one_line_error(code, err, str(out / "sweep.yaml"), needle)
    untouched(home)
    assert sorted(p.name for p in out.iterdir()) == ["payload", "sweep.yaml"]  # nothing trained


def test_the_users_own_command_line_wins_over_a_saved_path(tmp_path, home):
    out = tmp_path / "G3"
    out.mkdir()
    saved = {"archs": ["plain"], "depths": [8], "seeds": [0], "overrides": [*SWEEP_TINY, "dataset.root='~'"]}
    (out / "sweep.yaml").write_text(yaml.safe_dump(saved))
    spec, _ = sw.resolve_spec(None, None, None, [f"dataset.root={tmp_path / 'd'}"], out)
    assert spec.run_config("plain", 8).dataset.root == str(tmp_path / "d")
    untouched(home)


def test_saved_config_folders_are_used_only_when_given_again(tmp_path, home, monkeypatch, capsys):
    out, site = tmp_path / "F2", tmp_path / "F2" / "cfg"
    (site / "launcher").mkdir(parents=True)
    (site / "launcher" / "site.yaml").write_text(
        'defaults: [slurm, _self_]\nsbatch: {"requeue\\ntouch /tmp/PWNED\\n#x": true}\n')
    saved = {"archs": ["plain"], "depths": [8], "seeds": [0], "overrides": SWEEP_TINY, "config_dirs": [str(site)]}
    (out / "sweep.yaml").write_text(yaml.safe_dump(saved))
    code, _, err = cli(monkeypatch, capsys, "sweep", "--out", out, "--dry-run")
    one_line_error(code, err, f"--config-dir {site}")
    # given by the user, the folder is theirs; its launcher still cannot break a #SBATCH line
    code, _, err = cli(monkeypatch, capsys, "sweep", "--out", out, "--dry-run", "--config-dir", site,
                       "--launcher", "site")
    one_line_error(code, err, "is not an sbatch option name")
    untouched(home)


# --------------------------------------------------------------------------- staging itself
def test_staging_never_replaces_a_file_it_did_not_make(tmp_path, home):
    payload = payload_folder(tmp_path / "G")
    with pytest.raises(UserError, match="which it did not make"):
        stage_source(payload, home, ".")
    untouched(home)


def test_staging_replaces_only_its_own_files(tmp_path):
    source, root = tmp_path / "src", tmp_path / "root"
    source.mkdir()
    (source / "a.bin").write_bytes(b"one")
    stage_source(source, root, "A/raw")
    (source / "a.bin").write_bytes(b"two")
    stage_source(source, root, "A/raw")  # staged before: may be staged again
    assert (root / "A/raw/a.bin").read_bytes() == b"two"
    assert (root / MANIFEST).read_text().splitlines() == ["A/raw/a.bin"]


@pytest.mark.parametrize("stage_dir", ["..", "../elsewhere", "/abs", "a/../../b", "out"])
def test_staging_stays_inside_the_data_root(tmp_path, stage_dir):
    source, root, outside = tmp_path / "src", tmp_path / "root", tmp_path / "outside"
    source.mkdir()
    (source / "a.bin").write_bytes(b"x")
    root.mkdir()
    outside.mkdir()
    (root / "out").symlink_to(outside)
    with pytest.raises(UserError, match="inside the data root|symbolic link"):
        stage_source(source, root, stage_dir)
    assert list(outside.iterdir()) == [] and not (tmp_path / "elsewhere").exists()


# --------------------------------------------------------------------------- 3: links lead writes outside
def test_report_replaces_a_link_and_escapes_newlines(tmp_path, home, monkeypatch, capsys):
    out = tmp_path / "R"
    make_run(out, "plain", 8, 0, [50.0, 40.0], experiment=f"x\n{PAYLOAD}")
    (out / "report.md").symlink_to(home / ".bashrc")
    code, _, err = cli(monkeypatch, capsys, "report", out)
    assert code == 0, err
    untouched(home)
    report = out / "report.md"
    assert not report.is_symlink()
    assert not any(line.startswith("touch") for line in report.read_text().splitlines())
    assert "x\\ntouch /tmp/PWNED\\n" in report.read_text()


def test_plot_refuses_a_figures_link(tmp_path, home, monkeypatch, capsys):
    out, elsewhere = tmp_path / "P", tmp_path / "elsewhere"
    make_run(out, "plain", 8, 0, [50.0, 40.0])
    elsewhere.mkdir()
    (out / "figures").symlink_to(elsewhere)
    code, _, err = cli(monkeypatch, capsys, "plot", out, "--format", "png")
    one_line_error(code, err, "figures is a symbolic link")
    assert list(elsewhere.iterdir()) == []


def _diagnostics_row():
    return [{"arch": "plain", "depth": 8, "seed": 0, "epoch": 1, "layer": 1, "std": 0.5}]


WRITERS = {  # writer of a run file -> what it does with a link standing at that file
    "metrics.csv": (lambda run: run.append_row({"epoch": 1}), "refused"),
    "responses.csv": (lambda run: run.append_rows(run.path / "responses.csv", _diagnostics_row()), "refused"),
    "gradients.csv": (lambda run: run.append_rows(run.path / "gradients.csv", _diagnostics_row()), "refused"),
    "summary.json": (lambda run: run.write_summary({"status": "running"}), "replaced"),
    "checkpoint.pt": (lambda run: run.write_checkpoint(b"checkpoint"), "replaced"),
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_run_file_writers_never_write_through_a_link(tmp_path, home, name):
    run = RunDir(tmp_path / "G" / "plain-8-s0")
    run.path.mkdir(parents=True)
    (run.path / name).symlink_to(home / ".bashrc")
    write, outcome = WRITERS[name]
    if outcome == "refused":
        with pytest.raises(safeio.LinkRefused):
            write(run)
        assert (run.path / name).is_symlink()
    else:
        write(run)
        assert not (run.path / name).is_symlink() and (run.path / name).stat().st_size > 0
    untouched(home)


def test_a_run_folder_that_is_a_link_is_not_trained_into(tmp_path, home):
    (tmp_path / "G").mkdir()
    (tmp_path / "G" / "plain-8-s0").symlink_to(home)
    with pytest.raises(safeio.LinkRefused), RunDir(tmp_path / "G" / "plain-8-s0").claim():
        pass
    untouched(home)


def test_sweep_yaml_is_written_past_planted_temporary_links(tmp_path, home):
    out = tmp_path / "S"
    out.mkdir()
    mine = safeio.tmp_name(out / sw.SWEEP_FILE)
    other = out / f".{sw.SWEEP_FILE}.1.tmp"
    for link in (mine, other):
        link.symlink_to(home / ".bashrc")
    stale = out / f".{sw.SWEEP_FILE}.2.tmp"
    stale.write_text("left by a killed sweep")
    os.utime(stale, (0, 0))
    sw.save_spec(sw.SweepSpec(["plain"], [8], [0]), out)
    untouched(home)
    assert yaml.safe_load((out / sw.SWEEP_FILE).read_text())["archs"] == ["plain"]
    assert sorted(p.name for p in out.iterdir()) == [sw.SWEEP_FILE]


# --------------------------------------------------------------------------- 4: SLURM memory
def test_the_job_script_asks_for_the_memory_dry_run_shows(tmp_path):
    from submitit.slurm.slurm import _make_sbatch_string

    launcher = load_config(["launcher=slurm"]).launcher  # the shipped defaults
    script = _make_sbatch_string(command="x", folder=tmp_path, **executor_parameters(launcher, "j"))
    assert "#SBATCH --mem=16GB" in script.splitlines()  # what submitit's SlurmExecutor submits
    runs = [type("R", (), {"run": RunDir(tmp_path / "plain-8-s0")})()]
    assert "#SBATCH --mem=16GB" in sbatch_preview(launcher, tmp_path, runs).splitlines()


@pytest.mark.parametrize("override, needle", [
    ('+launcher.sbatch.comment="a\\ntouch x"', "an sbatch value is one word"),
    ("+launcher.sbatch.comment='two words'", "an sbatch value is one word"),
    ("launcher.partition='gpu\ntouch x'", "launcher.partition="),
])
def test_sbatch_settings_that_break_a_line_are_refused(tmp_path, monkeypatch, capsys, override, needle):
    code, _, err = cli(monkeypatch, capsys, "sweep", "--archs", "plain", "--depths", "8", "--out", tmp_path / "o",
                       "--dry-run", "--launcher", "slurm", *SWEEP_TINY, override)
    one_line_error(code, err, needle)


# --------------------------------------------------------------------------- 6: an alias bomb
def bomb() -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\nmodel: {arch: plain, depth: 8}\nseed: 0\n"


def test_a_yaml_bomb_in_a_run_config_is_damage(tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path / "B", "plain", 8, 0, [50.0])
    (run / "config.yaml").write_text(bomb())
    code, _, err = cli(monkeypatch, capsys, "eval", run)
    one_line_error(code, err, "expands to more than")
    code, _, err = cli(monkeypatch, capsys, "sweep", "--out", tmp_path / "B", "--archs", "plain", "--depths", "8",
                       *SWEEP_TINY)
    assert code == 2 and "plain-8-s0 is damaged: config.yaml is not a run config (it expands" in err, err


def test_a_yaml_bomb_in_sweep_yaml_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "B").mkdir()
    (tmp_path / "B" / "sweep.yaml").write_text(bomb())
    code, _, err = cli(monkeypatch, capsys, "sweep", "--out", tmp_path / "B")
    one_line_error(code, err, "sweep.yaml is damaged (it expands to more than")


# --------------------------------------------------------------------------- 7: damaged files
JOB = {"run": "plain-8-s0", "job_id": "12_0", "submitted": "t", "stdout": "o", "stderr": "e"}
JOB_RECORDS = {
    "not text": b"\xff\xfe\x00garbage\n",
    "no job_id": (json.dumps({k: v for k, v in JOB.items() if k != "job_id"}) + "\n").encode(),
    "no stderr": (json.dumps({k: v for k, v in JOB.items() if k != "stderr"}) + "\n").encode(),
    "list job_id": (json.dumps({**JOB, "job_id": ["12"]}) + "\n").encode(),
    "option as job_id": (json.dumps({**JOB, "job_id": "--help"}) + "\n").encode(),
}


@pytest.mark.parametrize("case", sorted(JOB_RECORDS))
def test_damaged_job_records_are_one_line(tmp_path, monkeypatch, capsys, case):
    out = tmp_path / "J"
    make_run(out, "plain", 8, 0, [50.0])
    (out / ".slurm").mkdir()
    (out / ".slurm" / "jobs.jsonl").write_bytes(JOB_RECORDS[case])
    code, _, err = cli(monkeypatch, capsys, "status", out)
    one_line_error(code, err, "jobs.jsonl line 1 is not a job record")


def test_a_job_record_cut_short_is_left_out(tmp_path, monkeypatch, capsys):
    out = tmp_path / "J"
    make_run(out, "plain", 8, 0, [50.0])
    (out / ".slurm").mkdir()
    (out / ".slurm" / "jobs.jsonl").write_text(json.dumps(JOB) + '\n{"run": "pla')
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm"))  # no squeue, no sacct
    code, out_text, err = cli(monkeypatch, capsys, "status", out)
    assert code == 0 and "12_0 ended" in out_text, err


DIAGNOSTICS = {
    "std not a number": ("arch,depth,seed,epoch,layer,name,stage,block,std\nplain,8,0,1,1,c,1,1,abc\n",
                         "line 2: std is not a number"),
    "no std column": ("arch,depth,seed,epoch,layer,name,stage,block\nplain,8,0,1,1,c,1,1\n", "has no std column"),
    "no layer": ("arch,depth,seed,epoch,layer,name,stage,block,std\nplain,8,0,1,,c,1,1,0.5\n",
                 "line 2: layer is not a number"),
}


@pytest.mark.parametrize("case", sorted(DIAGNOSTICS))
def test_damaged_diagnostics_are_one_line(tmp_path, monkeypatch, capsys, case):
    out = tmp_path / "D"
    run = make_run(out, "plain", 8, 0, [50.0, 40.0])
    text, needle = DIAGNOSTICS[case]
    (run / "responses.csv").write_text(text)
    code, _, err = cli(monkeypatch, capsys, "plot", out, "--format", "png")
    one_line_error(code, err, "responses.csv", needle)


# --------------------------------------------------------------------------- 8: bad inputs
SWEEP = ["sweep", "--archs", "plain", "--depths", "8", "--dry-run", *SWEEP_TINY]
BAD_INPUTS = {
    "huge seed": ([*SWEEP, "--seeds", "99999999999999999999"], "seed must be an integer in [0, 4294967295]"),
    "interval": (["sweep", "--dry-run", *SWEEP_TINY, "model.depth=interval(8,14)"], "not an interval"),
    "builtin target": (["train", *TINY, "dataset._target_=builtins.int"], "builtins.int is not a dataset class"),
    "huge lr": (["train", *TINY, "train.lr=1e308"], "train.lr must be in (0, 1e+06]"),
    "hydra key": ([*SWEEP, "hydra.job.chdir=true"], "Hydra's own settings"),
    "jobs 0": ([*SWEEP, "--jobs", "0"], "Invalid value for '--jobs'"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_are_one_line(tmp_path, monkeypatch, capsys, case):
    args, needle = BAD_INPUTS[case]
    code, _, err = cli(monkeypatch, capsys, *args, "--out", tmp_path / "o")
    one_line_error(code, err, needle)
    assert not (tmp_path / "o" / "sweep.yaml").exists()  # nothing saved


def test_bench_to_an_unwritable_file_is_one_line(tmp_path, monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, "bench", "--archs", "plain", "--depths", "8", "--steps", "1",
                       "--out", "/proc/x.csv", "dataset=synthetic", "train.device=cpu", "train.threads=1",
                       "train.batch_size=8")
    one_line_error(code, err, "cannot write /proc/x.csv")


def test_a_truncated_sweep_yaml_names_the_file(tmp_path, monkeypatch, capsys):
    out = tmp_path / "T"
    out.mkdir()
    (out / "sweep.yaml").write_text("archs: [plain]\ndepths: [8]\nseeds: [0]\noverrides: [dataset]\n")
    code, _, err = cli(monkeypatch, capsys, "sweep", "--out", out)
    one_line_error(code, err, f"{out / 'sweep.yaml'} is damaged (an override does not parse")
