"""A results folder from someone else is data: each attack here must fail.

Every test runs with HOME pointed at a sandbox holding a victim file, and checks that
the victim is unchanged and nothing was written outside the sandbox's own folders; a
command that refuses says so in one line and exits 2 (docs/security.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers.cli import SWEEP_TINY, TINY, cli
from helpers.runs import make_run, write_lock

from resexp.analysis.plot import title_of
from resexp.data.stage import MANIFEST, stage_source
from resexp.errors import UserError
from resexp.run import files, safeio
from resexp.run.files import DIAGNOSTIC_FILES
from resexp.run.folder import DamagedFile, RunDir
from resexp.run.text import inert
from resexp.settings.compose import load_config
from resexp.sweep import plan as sw
from resexp.sweep.jobs import JOBS_FILE, read_records
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
def status_row(stdout: str, run: str) -> list[str]:
    """The fields of ``run``'s line in `resexp status` output."""
    return next(line.split() for line in stdout.splitlines() if line.split()[:1] == [run])


def warned(monkeypatch, capsys, *args, needle: str | None) -> str:
    """A whole-folder command, which shows every run it can read: exit 0, no traceback, and
    one warning naming the damaged file (``needle``; None: no warning). Returns stdout."""
    code, stdout, err = cli(monkeypatch, capsys, *args)
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert code == 0 and "Traceback" not in err, err
    if needle is None:
        assert warnings == [], err
    else:
        assert len(warnings) == 1 and needle in warnings[0], (needle, err)
    return stdout


JOB = {"run": "plain-8-s0", "job_id": "12_0", "submitted": "t", "stdout": "o", "stderr": "e"}
NESTED_JSON = "[" * 3000 + "]" * 3000
JOB_RECORDS = {
    "not text": b"\xff\xfe\x00garbage\n",
    "no job_id": (json.dumps({k: v for k, v in JOB.items() if k != "job_id"}) + "\n").encode(),
    "no stderr": (json.dumps({k: v for k, v in JOB.items() if k != "stderr"}) + "\n").encode(),
    "list job_id": (json.dumps({**JOB, "job_id": ["12"]}) + "\n").encode(),
    "option as job_id": (json.dumps({**JOB, "job_id": "--help"}) + "\n").encode(),
    "nested": (NESTED_JSON + "\n").encode(),
}


@pytest.mark.parametrize("case", sorted(JOB_RECORDS))
def test_damaged_job_records_leave_status_whole_and_stop_a_slurm_sweep(tmp_path, monkeypatch, capsys, case):
    out = tmp_path / "J"
    make_run(out, "plain", 8, 0, [50.0])
    (out / ".slurm").mkdir()
    (out / ".slurm" / "jobs.jsonl").write_bytes(JOB_RECORDS[case])
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm"))  # no squeue, no sacct
    stdout = warned(monkeypatch, capsys, "status", out, needle="jobs.jsonl: line 1 is not a job record")
    assert status_row(stdout, "plain-8-s0")[1] == "done"
    # a sweep that submits cannot tell which jobs are queued: after its plan, it stops
    code, _, err = cli(monkeypatch, capsys, "sweep", "--out", out, "--archs", "resnet", "--depths", "8",
                       "--dry-run", "--launcher", "slurm", *SWEEP_TINY)
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: ") and "jobs.jsonl: line 1 is not a job record" in last, err


def test_a_job_record_cut_short_is_left_out(tmp_path, monkeypatch, capsys):
    out = tmp_path / "J"
    make_run(out, "plain", 8, 0, [50.0])
    (out / ".slurm").mkdir()
    (out / ".slurm" / "jobs.jsonl").write_text(json.dumps(JOB) + '\n{"run": "pla')
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm"))  # no squeue, no sacct
    code, out_text, err = cli(monkeypatch, capsys, "status", out)
    assert code == 0 and "12_0 ended" in out_text, err


RESPONSES = "epoch,iteration,layer,name,stage,block,std,bn,arch,depth,seed\n" + "".join(
    f"{epoch},{epoch * 100},{layer},l{layer},1,{layer},{0.5 + layer / 10},batch,resnet,8,0\n"
    for epoch in (0, 2) for layer in (1, 2, 3))
DIAGNOSTICS = {
    "std not a number": ("arch,depth,seed,epoch,layer,name,stage,block,std\nplain,8,0,1,1,c,1,1,abc\n",
                         "line 2: std is not a number"),
    "no std column": ("arch,depth,seed,epoch,layer,name,stage,block\nplain,8,0,1,1,c,1,1\n", "has no std column"),
    "no layer": ("arch,depth,seed,epoch,layer,name,stage,block,std\nplain,8,0,1,,c,1,1,0.5\n",
                 "line 2: layer is not a number"),
    "negative std": ("arch,depth,seed,epoch,layer,name,stage,block,std\nplain,8,0,1,1,c,1,1,-0.5\n",
                     "line 2: std is out of range"),
    "layer 1.5": ("arch,depth,seed,epoch,layer,name,stage,block,std\nplain,8,0,1,1.5,c,1,1,0.5\n",
                  "line 2: layer is out of range"),
    "empty": ("", "is not a CSV table"),
    "binary": (bytes(range(256)), "is not a CSV table"),
}


@pytest.mark.parametrize("case", sorted(DIAGNOSTICS))
def test_a_damaged_diagnostics_file_leaves_the_other_runs_in_the_figure(tmp_path, monkeypatch, capsys, case):
    out = tmp_path / "D"
    run = make_run(out, "plain", 8, 0, [50.0, 40.0])
    (make_run(out, "resnet", 8, 0, [50.0, 40.0]) / "responses.csv").write_text(RESPONSES)
    content, needle = DIAGNOSTICS[case]
    (run / "responses.csv").write_bytes(content if isinstance(content, bytes) else content.encode())
    warned(monkeypatch, capsys, "plot", out, "--format", "png", needle=f"{run / 'responses.csv'}: {needle}")
    drawn = pd.read_csv(out / "figures" / "responses.csv")
    assert set(drawn["arch"]) == {"resnet"} and len(drawn) == 3  # the end of training, 3 layers
    assert (out / "figures" / "responses.png").exists() and (out / "figures" / "depth.png").exists()


# --------------------------------------------------------------------------- every file read is bounded
def _summary(run: Path, **changes) -> bytes:
    return json.dumps({**json.loads((run / "summary.json").read_text()), **changes}).encode()


def _config(run: Path, change) -> bytes:
    config = yaml.safe_load((run / "config.yaml").read_text())
    change(config)
    return yaml.safe_dump(config).encode()


def _metrics(run: Path, line: int, column: str, value: str) -> bytes:
    lines = (run / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    fields = lines[line - 1].split(",")
    fields[header.index(column)] = value
    lines[line - 1] = ",".join(fields)
    return ("\n".join(lines) + "\n").encode()


def _padded_summary(run: Path) -> bytes:
    return _summary(run)[:-1] + b" " * 5000 + b"}"


# Every file of a run or sweep folder that resexp reads, damaged past its bound (size, with
# the limit lowered to 4 KB here; nesting; a value's range): (file, its new bytes from the
# run folder plain-8-s0, the warning's words, the commands that read it). The other run,
# resnet-8-s0, stays whole. checkpoint.pt is read by torch.load(weights_only=True) alone.
PLAIN = "plain-8-s0"
WHOLE_FOLDER = ("status", "report", "plot")
BOUNDS = {
    "config.yaml nested": ("config.yaml", lambda run: b"seed: 0\nmodel: " + b"[" * 3000 + b"]" * 3000 + b"\n",
                           "config.yaml is not a run config (it is nested too deeply)", WHOLE_FOLDER),
    "config.yaml depth -3": ("config.yaml", lambda run: _config(run, lambda c: c["model"].update(depth=-3)),
                             "config.yaml model.depth is -3, out of its range [1, inf]", WHOLE_FOLDER),
    "config.yaml epochs text": ("config.yaml", lambda run: _config(run, lambda c: c["train"].update(epochs="3")),
                                "config.yaml train.epochs is '3', not int or null", WHOLE_FOLDER),
    "config.yaml over 4 KB": ("config.yaml", lambda run: (run / "config.yaml").read_bytes() + b"#" * 5000,
                              "config.yaml is larger than 4 KB", WHOLE_FOLDER),
    "summary.json nested": ("summary.json", lambda run: NESTED_JSON.encode(),
                            "summary.json is nested more than 16 levels deep", WHOLE_FOLDER),
    "summary.json error 200": ("summary.json", lambda run: _summary(run, final_test_err=200.0),
                               "summary.json final_test_err is 200.0, out of its range [0, 100]", WHOLE_FOLDER),
    "summary.json cpu_bf16 numbers": ("summary.json", lambda run: _summary(run, cpu_bf16=[1, 2]),
                                      "summary.json cpu_bf16 is not a list of names", WHOLE_FOLDER),
    "summary.json over 4 KB": ("summary.json", _padded_summary, "summary.json is larger than 4 KB", WHOLE_FOLDER),
    "metrics.csv error 200": ("metrics.csv", lambda run: _metrics(run, 2, "train_err", "200"),
                              "metrics.csv line 2: train_err 200 is out of range", WHOLE_FOLDER),
    "metrics.csv negative lr": ("metrics.csv", lambda run: _metrics(run, 2, "lr", "-0.1"),
                                "metrics.csv line 2: lr -0.1 is out of range", WHOLE_FOLDER),
    "metrics.csv over 4 KB": ("metrics.csv", lambda run: (run / "metrics.csv").read_bytes() * 40,
                              "metrics.csv is larger than 4 KB", WHOLE_FOLDER),
    "responses.csv negative std": ("responses.csv", lambda run: RESPONSES.replace(",0.6,", ",-0.6,").encode(),
                                   "responses.csv: line 2: std is out of range", ("plot",)),
    "responses.csv over 4 KB": ("responses.csv", lambda run: RESPONSES.encode() * 20,
                                "responses.csv: is larger than 4 KB", ("plot",)),
    "gradients.csv over 4 KB": ("gradients.csv", lambda run: b"epoch\n" * 1000, "gradients.csv: is larger than 4 KB",
                                ("plot",)),
    "identity.csv over 4 KB": ("identity.csv", lambda run: b"epoch\n" * 1000, "identity.csv: is larger than 4 KB",
                               ("plot",)),
    "jobs.jsonl nested": ("../.slurm/jobs.jsonl", lambda run: (NESTED_JSON + "\n").encode(),
                          "jobs.jsonl: line 1 is not a job record", ("status",)),
    "jobs.jsonl over 4 KB": ("../.slurm/jobs.jsonl", lambda run: (json.dumps(JOB) + "\n").encode() * 100,
                             "jobs.jsonl: is larger than 4 KB", ("status",)),
    "sweep.yaml nested": ("../sweep.yaml", lambda run: b"archs: " + b"[" * 3000 + b"]" * 3000 + b"\n",
                          "sweep.yaml is damaged (it is nested too deeply)", ("status",)),
    "sweep.yaml over 1 MB": ("../sweep.yaml", lambda run: b"#" * (1 << 20) + b"\narchs: [plain]\n",
                             "sweep.yaml is damaged (is larger than 1 MB", ("status",)),
    "run.lock nested": ("run.lock", lambda run: NESTED_JSON.encode(), None, ()),
    "wandb-id.txt over 1 KB": ("wandb-id.txt", lambda run: b"a" * 2000, None, ()),  # read when W&B starts
}


@pytest.mark.parametrize("case", sorted(BOUNDS))
def test_every_file_read_is_bounded_and_its_damage_leaves_the_other_runs_shown(tmp_path, monkeypatch, capsys,
                                                                               case):
    out = tmp_path / "B"
    run = make_run(out, "plain", 8, 0, [50.0, 40.0])
    make_run(out, "resnet", 8, 0, [50.0, 40.0])
    name, damage, needle, commands = BOUNDS[case]
    path = run / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(damage(run))
    if "over 4 KB" in case:
        monkeypatch.setitem(files.MAX_BYTES, Path(name).name, 4096)
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm"))  # no squeue, no sacct
    for command in WHOLE_FOLDER:
        extra = ["--format", "png"] if command == "plot" else []
        stdout = warned(monkeypatch, capsys, command, out, *extra, needle=needle if command in commands else None)
        if command == "status":
            assert status_row(stdout, "resnet-8-s0")[1] == "done"
    if name == "wandb-id.txt":
        with pytest.raises(DamagedFile, match="is larger than 1 KB"):
            RunDir(run).read_wandb_id()


def test_every_file_a_run_or_sweep_folder_holds_has_its_bound_tested():
    run = RunDir(Path("r"))
    read = {run.config.name, run.metrics.name, run.summary_file.name, run.lock_file.name, run.wandb_id_file.name,
            *DIAGNOSTIC_FILES, f"../{sw.SWEEP_FILE}", f"../.slurm/{JOBS_FILE}"}
    assert {name for name, *_ in BOUNDS.values()} == read


def test_a_fifo_in_a_results_folder_is_damage_not_a_hang(tmp_path, monkeypatch, capsys):
    out = tmp_path / "F"
    run = make_run(out, "plain", 8, 0, [50.0, 40.0])
    make_run(out, "resnet", 8, 0, [50.0, 40.0])
    (run / "summary.json").unlink()
    os.mkfifo(run / "summary.json")
    os.mkfifo(out / "sweep.yaml")
    code, stdout, err = cli(monkeypatch, capsys, "status", out)
    assert code == 0 and "summary.json is not a regular file" in err and "sweep.yaml is damaged" in err
    assert status_row(stdout, "resnet-8-s0")[1] == "done"


# --------------------------------------------------------------------------- folders written into
@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """Stand-ins for srun and sbatch: sbatch records each submission in <bin>/submitted and
    answers as SLURM does."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "srun").write_text("#!/bin/sh\nexit 0\n")
    (folder / "sbatch").write_text(f'#!/bin/sh\necho "$@" >> {folder}/submitted\necho "Submitted batch job 42"\n')
    for tool in ("srun", "sbatch"):
        (folder / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


SUBMIT = ["--archs", "plain", "--depths", "8", "--launcher", "slurm", "launcher.gpus_per_run=0",
          "launcher.cpus_per_run=1", *SWEEP_TINY]


def test_a_slurm_submission_writes_its_files_into_the_sweeps_own_folder(tmp_path, fake_slurm, monkeypatch,
                                                                          capsys):
    """The stand-ins work: a sweep submits, and submitit's files and the job record land in
    <out>/.slurm (what the two tests below must prevent when .slurm is not that folder)."""
    out = tmp_path / "R"
    code, stdout, err = cli(monkeypatch, capsys, "sweep", "--out", out, *SUBMIT)
    assert code == 0 and "plain-8-s0: job 42" in stdout, err
    assert (fake_slurm / "submitted").exists() and (out / ".slurm" / "42_submitted.pkl").is_file()
    assert read_records(out)["plain-8-s0"]["job_id"] == "42"


def _slurm_link(out: Path, elsewhere: Path) -> None:
    (out / ".slurm").symlink_to(elsewhere)


def _job_log_link(out: Path, elsewhere: Path) -> None:
    """A real .slurm holding a link under the name the next job's log will have."""
    (out / ".slurm").mkdir()
    (out / ".slurm" / "42_0_log.out").symlink_to(elsewhere / "victim")


def _wandb_link(out: Path, elsewhere: Path) -> None:
    (out / "plain-8-s0").mkdir()
    (out / "plain-8-s0" / "wandb").symlink_to(elsewhere)


def _figures_link(out: Path, elsewhere: Path) -> None:
    make_run(out, "plain", 8, 0, [50.0, 40.0])
    (out / "figures").symlink_to(elsewhere)


def _run_link(out: Path, elsewhere: Path) -> None:
    (out / "plain-8-s0").symlink_to(elsewhere)


# Every folder resexp, or a library it calls (submitit, SLURM, W&B), writes into, planted as
# a link: (the plant, the command, the words of its one line). TensorBoard writes into the
# run folder itself.
WRITTEN_FOLDERS = {
    ".slurm": (_slurm_link, ["sweep", *SUBMIT], ".slurm is a symbolic link"),
    ".slurm/<job>_0_log.out": (_job_log_link, ["sweep", *SUBMIT], "42_0_log.out is a symbolic link"),
    "wandb": (_wandb_link, ["train", *TINY, "model.arch=plain", "train.wandb=true", "train.wandb_mode=offline"],
              "wandb is a symbolic link"),
    "figures": (_figures_link, ["plot", "--format", "png"], "figures is a symbolic link"),
    "run folder": (_run_link, ["train", *TINY, "model.arch=plain"], "plain-8-s0 is a symbolic link"),
}


@pytest.mark.parametrize("case", sorted(WRITTEN_FOLDERS))
def test_a_folder_written_into_is_checked_before_anything_is_written_or_submitted(tmp_path, home, fake_slurm,
                                                                                 monkeypatch, capsys, case):
    out, elsewhere = tmp_path / "R", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (elsewhere / "victim").write_text(VICTIM)
    plant, command, needle = WRITTEN_FOLDERS[case]
    plant(out, elsewhere)
    where = [out] if command[0] == "plot" else ["--out", out]
    code, _, err = cli(monkeypatch, capsys, command[0], *where, *command[1:])
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: ") and needle in last, err
    assert [p.name for p in elsewhere.iterdir()] == ["victim"] and (elsewhere / "victim").read_text() == VICTIM
    assert not (fake_slurm / "submitted").exists()  # nothing submitted
    untouched(home)


# --------------------------------------------------------------------------- text from a folder is inert
EVIL = "x\x1b]0;owned\x07\u202eevil\n# heading"
INERT = "x\\x1b]0;owned\\x07\\u202eevil\\n# heading"


def _lock_host(out: Path) -> None:
    write_lock(out / "plain-8-s0", os.getpid(), host=EVIL)


def _job_log_path(out: Path) -> None:
    make_run(out, "plain", 8, 0, [50.0])
    (out / ".slurm").mkdir()
    (out / ".slurm" / "jobs.jsonl").write_text(json.dumps({**JOB, "stderr": f"/logs/{EVIL}/12_0_0_log.err"}) + "\n")


def _summary_text(key: str):
    def plant(out: Path) -> None:
        make_run(out, "plain", 8, 0, [50.0], device="cpu", **{key: EVIL})
    return plant


def _display_name(out: Path) -> None:
    run = make_run(out, "plain", 8, 0, [50.0])
    (run / "config.yaml").write_bytes(_config(run, lambda c: c["dataset"].update(display_name=EVIL)))


# Every text a received folder can make resexp print or write: (where it is, the commands).
TEXTS = {
    "run.lock host": (_lock_host, [["status"], ["sweep", "--archs", "plain", "--depths", "8", "--dry-run",
                                                "--launcher", "slurm", *SWEEP_TINY]]),
    "jobs.jsonl stderr": (_job_log_path, [["status"]]),
    "summary.json schedule": (_summary_text("schedule"), [["report"]]),
    "summary.json experiment": (_summary_text("experiment"), [["report"]]),
    "summary.json cpu_model": (_summary_text("cpu_model"), [["report"]]),
    "config.yaml display_name": (_display_name, [["report"]]),
}


@pytest.mark.parametrize("case", sorted(TEXTS))
def test_text_from_a_folder_is_printed_and_written_inert(tmp_path, monkeypatch, capsys, case):
    out = tmp_path / "T"
    plant, commands = TEXTS[case]
    plant(out)
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm"))  # no squeue, no sacct
    for command in commands:
        where = ["--out", out] if command[0] == "sweep" else [out]
        code, stdout, err = cli(monkeypatch, capsys, command[0], *where, *command[1:])
        written = (out / "report.md").read_text() if command[0] == "report" else ""
        shown = stdout + err + written
        assert code == 0 and INERT in shown, (command, shown)
        assert not any(c in shown for c in "\x1b\x07\u202e") and "\n# heading" not in shown


def test_figure_titles_are_inert_and_hold_no_mathtext():
    info = {"dataset": "d", "display_name": inert(EVIL + "$\\foo{$"), "synthetic": False, "experiment": "e",
            "length": "", "hardware": {}}
    title = title_of(info, "final error vs depth")
    assert INERT in title and "\\$\\foo{\\$" in title and not any(c in title for c in "\x1b\x07\u202e")


def test_a_rich_markup_tag_in_a_folder_is_printed_as_text(tmp_path, monkeypatch, capsys):
    """'[/x]' closes no open tag: printed as markup, it would end the sweep with a traceback."""
    out = tmp_path / "M"
    write_lock(out / "plain-8-s0", os.getpid(), host="[/x][link=http://evil]h")
    (out / "resnet-8-s0").mkdir()
    (out / "resnet-8-s0" / "summary.json").write_text(json.dumps({"depth": "[/x]"}))
    for launcher in ("local", "slurm"):
        code, _, err = cli(monkeypatch, capsys, "sweep", "--out", out, "--archs", "plain,resnet", "--depths", "8",
                           "--dry-run", "--launcher", launcher, *SWEEP_TINY)
        assert code == 0 and "depth is '[/x]'" in err, err
    assert "host [/x][link=http://evil]h" in err  # the slurm dry run names the lock's owner


# --------------------------------------------------------------------------- no interpolation from a folder
def test_a_saved_sweep_never_resolves_an_interpolation(tmp_path, monkeypatch, capsys):
    out = tmp_path / "I"
    out.mkdir()
    monkeypatch.setenv("SECRET_TOKEN", "s3cr3t-token")
    saved = {"archs": ["plain"], "depths": [8], "seeds": [0], "overrides": [*SWEEP_TINY, "name=${oc.env:SECRET_TOKEN}"]}
    (out / "sweep.yaml").write_text(yaml.safe_dump(saved))
    code, _, err = cli(monkeypatch, capsys, "sweep", "--out", out, "--depths", "8,14")
    one_line_error(code, err, "sets name=${oc.env:SECRET_TOKEN}: a saved sweep's values are never resolved")
    assert sorted(p.name for p in out.iterdir()) == ["sweep.yaml"]
    # given again on the command line, the value is the user's own
    code, _, err = cli(monkeypatch, capsys, "sweep", "--out", out, "--dry-run", "name=mine")
    assert code == 0, err


@pytest.mark.parametrize("value", ["${oc.env:NOPE}", "${name}", "pre-${oc.env:HOME}"])
def test_a_run_config_never_resolves_an_interpolation(tmp_path, monkeypatch, capsys, value):
    run = make_run(tmp_path / "I", "plain", 8, 0, [50.0, 40.0])
    (run / "config.yaml").write_bytes(_config(run, lambda c: c["dataset"].update(display_name=value)))
    (run / "checkpoint.pt").write_bytes(b"not reached")
    code, _, err = cli(monkeypatch, capsys, "eval", run)
    one_line_error(code, err, "config.yaml: dataset.display_name holds an interpolation")
    warned(monkeypatch, capsys, "status", tmp_path / "I", needle="dataset.display_name holds an interpolation")


# --------------------------------------------------------------------------- a config.yaml cut short
def test_a_config_cut_short_at_a_line_is_damage(tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path / "C", "plain", 8, 0, [50.0, 40.0])
    make_run(tmp_path / "C", "resnet", 8, 0, [50.0, 40.0])
    config = yaml.safe_load((run / "config.yaml").read_text())
    in_order = yaml.safe_dump({k: config[k] for k in ("name", "seed", "model", "train", "dataset")}, sort_keys=False)
    (run / "config.yaml").write_text(in_order[:in_order.index("dataset:\n")])  # cut at a line, as resexp orders it
    for command in WHOLE_FOLDER:
        extra = ["--format", "png"] if command == "plot" else []
        warned(monkeypatch, capsys, command, tmp_path / "C", *extra,
               needle="plain-8-s0 is damaged: config.yaml lacks dataset, dataset.name")
    (run / "checkpoint.pt").write_bytes(b"not reached")
    code, _, err = cli(monkeypatch, capsys, "eval", run)
    one_line_error(code, err, "config.yaml: lacks dataset")


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
