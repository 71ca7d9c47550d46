"""sweep.py and `resexp sweep`: run folders, skipping, resuming, failures, the plan."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers.cli import SWEEP_TINY as TINY
from helpers.cli import cli, rows, sweep_here
from helpers.interrupt import interrupt_after_checkpoints
from omegaconf import OmegaConf

import resexp.train.loop as train_module
from resexp.run.folder import RunDir
from resexp.settings.compose import load_config
from resexp.sweep import plan as sw
from resexp.sweep.local import gpu_slots, visible_gpus

TIMING = {"seconds", "images_per_s", "elapsed"}


def summary(run_dir: Path) -> dict:
    return RunDir(run_dir).read_summary()


def snapshot(folder: Path) -> dict:
    """Every file below folder: its bytes and modification time."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}




sweep_in_process = sweep_here


# --------------------------------------------------------------------------- run folders
def test_sweep_writes_one_run_folder_per_arch_and_depth(tmp_path):
    out = tmp_path / "out"
    statuses = sweep_in_process(["plain", "resnet"], [8, 14], None, TINY, out)

    names = {"plain-8-s0", "plain-14-s0", "resnet-8-s0", "resnet-14-s0"}
    assert statuses == {name: "done" for name in names}
    assert {p.name for p in out.iterdir() if p.is_dir()} == names
    for name in names:
        arch, depth, _ = name.split("-")
        run = out / name
        metrics = rows(run)
        assert [int(r["epoch"]) for r in metrics] == [1, 2, 3]
        assert [int(r["iteration"]) for r in metrics] == [4, 8, 12]  # 256 images / batch 64
        s = summary(run)
        assert (s["status"], s["arch"], s["depth"], s["seed"], s["epochs"]) == ("done", arch, int(depth), 0, 3)
        assert s["final_train_err"] == float(metrics[-1]["train_err"])
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert (config["model"]["arch"], config["model"]["depth"]) == (arch, int(depth))
        assert config["dataset"]["name"] == "synthetic" and config["train"]["epochs"] == 3

    saved = yaml.safe_load((out / "sweep.yaml").read_text())
    assert saved["archs"] == ["plain", "resnet"] and saved["depths"] == [8, 14] and saved["seeds"] == [0]
    assert saved["overrides"] == TINY
    # plain and residual nets differ only in the shortcut: with option A, same parameter count
    assert summary(out / "plain-14-s0")["params"] == summary(out / "resnet-14-s0")["params"]
    assert summary(out / "plain-14-s0")["params"] > summary(out / "plain-8-s0")["params"]


def test_rerun_skips_finished_runs_without_touching_them(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    args = ["sweep", "--archs", "resnet", "--depths", "8", "--out", out, *TINY]
    assert cli(monkeypatch, capsys, *args)[0] == 0
    before = snapshot(out / "resnet-8-s0")
    updated = summary(out / "resnet-8-s0")["updated"]

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train_module, "setup", no_training)
    code, stdout, stderr = cli(monkeypatch, capsys, *args)
    assert code == 0
    assert "resnet-8-s0" in stderr and "done" in stderr.split("resnet-8-s0", 1)[1].splitlines()[0]
    assert stdout.strip() == f"sweep {out}: 1 done"
    assert snapshot(out / "resnet-8-s0") == before
    assert summary(out / "resnet-8-s0")["updated"] == updated

    # settings that do not change what a run computes are no reason to train again either
    code, stdout, _ = cli(monkeypatch, capsys, *args, "train.log_every=3", "train.keep_checkpoint=false")
    assert code == 0 and stdout.strip() == f"sweep {out}: 1 done"
    assert snapshot(out / "resnet-8-s0") == before


def test_a_sweep_reads_each_run_folder_once_before_and_once_under_its_lock(tmp_path, monkeypatch, capsys):
    """The plan hands each run's state to the trainer: a fresh sweep reads each run folder's
    state twice (the plan, and the trainer under the run's lock), a rerun of the finished
    sweep once (the plan: nothing to train)."""
    out = tmp_path / "out"
    args = ["sweep", "--archs", "plain,resnet", "--depths", "8", "--out", out, *TINY]
    reads, real = [], RunDir.state

    def counted(self):
        reads.append(self.name)
        return real(self)

    monkeypatch.setattr(RunDir, "state", counted)
    assert cli(monkeypatch, capsys, *args)[0] == 0
    assert sorted(reads) == ["plain-8-s0", "plain-8-s0", "resnet-8-s0", "resnet-8-s0"]
    reads.clear()
    assert cli(monkeypatch, capsys, *args)[0] == 0
    assert sorted(reads) == ["plain-8-s0", "resnet-8-s0"]


# --------------------------------------------------------------------------- resuming
def test_killed_sweep_resumes_to_the_results_of_an_uninterrupted_one(tmp_path):
    # Long enough (6 epochs) that the sweep is still in its first run when the kill comes,
    # however slow or fast the machine: the kill follows the first checkpoint at once.
    six_epochs = [*TINY, "train.epochs=6", "train.milestones=[4]"]
    args = ["sweep", "--archs", "plain,resnet", "--depths", "8", *six_epochs]
    killed = tmp_path / "killed"
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "resexp", *args, "--out", str(killed)],
                                stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 120
        # a checkpoint is written right after an epoch's row: kill in the middle of a later epoch
        while not list(killed.glob("*/checkpoint.pt")):
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "no epoch finished in time"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert summary(killed / "plain-8-s0")["status"] == "running"  # as a killed process leaves it
    assert 1 <= len(rows(killed / "plain-8-s0")) < 6
    assert not (killed / "resnet-8-s0").exists()

    # the same command again, and meanwhile the killed run uninterrupted in another folder
    # (resnet-8 was never started: the second sweep trains it as any sweep does)
    with open(tmp_path / "second.log", "w+") as log:
        proc = subprocess.Popen([sys.executable, "-m", "resexp", *args, "--out", str(killed)],
                                stdout=log, stderr=subprocess.STDOUT, text=True)
        reference = tmp_path / "reference"
        assert set(sweep_in_process(["plain"], [8], None, six_epochs, reference).values()) == {"done"}
        assert proc.wait(timeout=180) == 0
        log.seek(0)
        second = log.read()
    assert f"sweep {killed}: 2 done" in second.splitlines()
    assert "plain-8-s0: resuming after epoch" in second  # went on from its checkpoint

    assert [int(r["epoch"]) for r in rows(killed / "resnet-8-s0")] == list(range(1, 7))
    name = "plain-8-s0"
    got, want = rows(killed / name), rows(reference / name)
    assert [int(r["epoch"]) for r in got] == list(range(1, 7))  # no gap, no repeat
    assert [int(r["iteration"]) for r in got] == list(range(4, 28, 4))
    assert [{k: v for k, v in r.items() if k not in TIMING} for r in got] == \
           [{k: v for k, v in r.items() if k not in TIMING} for r in want]
    s, ref = summary(killed / name), summary(reference / name)
    assert s["status"] == "done" and s["epochs"] == 6
    assert (s["final_train_err"], s["final_test_err"]) == (ref["final_train_err"], ref["final_test_err"])




def test_sweep_with_only_out_continues_the_saved_sweep(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        interrupt_after_checkpoints(m, 1)
        code, _, stderr = cli(m, capsys, "sweep", "--archs", "resnet", "--depths", "8",
                              "--seeds", "3", "--out", out, *TINY)
    assert code == 130 and "interrupted" in stderr
    assert len(rows(out / "resnet-8-s3")) == 1

    spec, where = sw.resolve_spec(None, None, None, [], out)
    assert (spec.archs, spec.depths, spec.seeds, where) == (["resnet"], [8], [3], out)
    assert spec.overrides == TINY

    code, stdout, stderr = cli(monkeypatch, capsys, "sweep", "--out", out)
    assert code == 0, stderr
    assert "resnet-8-s3: resuming after epoch 1" in stderr
    assert stdout.strip() == f"sweep {out}: 1 done"
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["resnet-8-s3"]  # not the 20..56 defaults
    assert [int(r["epoch"]) for r in rows(out / "resnet-8-s3")] == [1, 2, 3]
    config = yaml.safe_load((out / "resnet-8-s3" / "config.yaml").read_text())
    assert config["dataset"]["name"] == "synthetic" and config["train"]["batch_size"] == 64


# --------------------------------------------------------------------------- the plan
def test_dry_run_trains_nothing_and_shows_each_runs_state(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    args = ["sweep", "--archs", "plain,resnet", "--depths", "8", "--out", out, *TINY]
    code, stdout, stderr = cli(monkeypatch, capsys, *args, "--dry-run")
    assert code == 0 and stdout == ""
    assert not out.exists()  # no run folders, no sweep.yaml
    plan = {line.split()[0]: line.split()[1:3] for line in stderr.splitlines() if line.startswith(("plain", "resnet"))}
    assert plan == {"plain-8-s0": ["new", "0/3"], "resnet-8-s0": ["new", "0/3"]}
    assert "2 runs, 2 to train" in stderr

    with monkeypatch.context() as m:
        interrupt_after_checkpoints(m, 4)  # plain-8 finishes (3 epochs), resnet-8 stops after 1
        assert cli(m, capsys, *args)[0] == 130
    before = snapshot(out)
    code, stdout, stderr = cli(monkeypatch, capsys, *args, "--dry-run")
    assert code == 0
    plan = {line.split()[0]: line.split()[1:3] for line in stderr.splitlines() if line.startswith(("plain", "resnet"))}
    assert plan == {"plain-8-s0": ["done", "3/3"], "resnet-8-s0": ["partial", "1/3"]}
    assert "2 runs, 1 to train" in stderr
    assert snapshot(out) == before

    runs = sw.plan(*sw.resolve_spec(None, None, None, [], out))
    assert [(r.name, r.status, r.epochs_done, r.iterations) for r in runs] == \
           [("plain-8-s0", "done", 3, 12), ("resnet-8-s0", "partial", 1, 12)]
    assert "speeds of the runs in" in sw.estimate_costs(runs, out)
    assert runs[0].cost_s == 0 and runs[1].cost_s > 0


def test_a_plan_with_nothing_to_go_by_shows_no_seconds(tmp_path):
    """No run in the folder and nothing timed (a sweep that trains at once): no run is
    estimated, and none is shown with a number of seconds."""
    runs = sw.plan(*sw.resolve_spec(["plain", "resnet"], [8], None, TINY, tmp_path / "out"))
    basis = sw.estimate_costs(runs, tmp_path / "out")
    assert basis is None and [r.estimated for r in runs] == [False, False]
    assert [line.split()[-1] for line in sw.format_plan(runs, basis).splitlines()[1:3]] == ["-", "-"]


# --------------------------------------------------------------------------- failures
def test_a_failed_run_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    real_epoch = train_module.train_epoch

    def broken_for_depth_14(cfg, *args, **kwargs):
        if cfg.model.depth == 14:
            raise RuntimeError("boom in depth 14")
        return real_epoch(cfg, *args, **kwargs)

    monkeypatch.setattr(train_module, "train_epoch", broken_for_depth_14)
    out = tmp_path / "out"
    code, stdout, stderr = cli(monkeypatch, capsys, "sweep", "--archs", "plain", "--depths", "14,8",
                                  "--out", out, *TINY)
    assert code == 1
    assert stdout.strip() == f"sweep {out}: 1 done, 1 failed"
    assert "plain-14-s0 failed: RuntimeError: boom in depth 14" in stderr
    failed = summary(out / "plain-14-s0")
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: boom in depth 14"
    assert summary(out / "plain-8-s0")["status"] == "done"  # trained after the failure
    assert len(rows(out / "plain-8-s0")) == 3

    states = {r.name: r.status for r in sw.plan(*sw.resolve_spec(None, None, None, [], out))}
    assert states == {"plain-14-s0": "failed", "plain-8-s0": "done"}  # the failed one is retried next time


def test_a_diverged_run_is_recorded_and_is_not_an_error(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    args = ["sweep", "--archs", "plain", "--depths", "8", "--out", out, *TINY, "train.lr=1e6"]
    code, stdout, stderr = cli(monkeypatch, capsys, *args)
    assert code == 0, stderr
    assert stdout.strip() == f"sweep {out}: 1 diverged"
    metrics = rows(out / "plain-8-s0")
    assert not math.isfinite(float(metrics[-1]["train_loss"]))
    assert all(math.isfinite(float(r["train_loss"])) for r in metrics[:-1])  # stopped at the first bad epoch
    s = summary(out / "plain-8-s0")
    assert s["status"] == "diverged" and s["epochs"] == len(metrics) < 3

    code, stdout, _ = cli(monkeypatch, capsys, *args)  # not retried
    assert code == 0 and stdout.strip() == f"sweep {out}: 1 diverged"
    assert rows(out / "plain-8-s0") == metrics


# --------------------------------------------------------------------------- changed settings
@pytest.mark.parametrize("extra_depth", [False, True], ids=["same-runs", "with-a-new-run"])
def test_changed_result_setting_is_one_clear_error(tmp_path, monkeypatch, capsys, extra_depth):
    out = tmp_path / "out"
    args = ["sweep", "--archs", "resnet", "--out", out]
    assert cli(monkeypatch, capsys, *args, "--depths", "8", *TINY)[0] == 0
    before = snapshot(out)

    depths = "8,14" if extra_depth else "8"
    code, stdout, stderr = cli(monkeypatch, capsys, *args, "--depths", depths, *TINY, "train.lr=0.05")
    assert code == 2 and stdout == ""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr  # before the plan, before any training
    assert lines[0].startswith("error: ") and "resnet-8-s0" in lines[0] and "train.lr: 0.1 -> 0.05" in lines[0]
    assert snapshot(out) == before  # nothing trained, nothing rewritten
    assert not (out / "resnet-14-s0").exists()


# --------------------------------------------------------------------------- parallel
def test_parallel_sweep_gives_the_sequential_results(tmp_path, monkeypatch, capfd):
    """--jobs 2: the same runs, the same numbers, in worker processes. With device auto
    and (faked) 2 GPUs, each worker is pinned to one GPU before it starts; here, with no
    CUDA, the workers still train on the CPU."""
    sweep_in_process(["plain", "resnet"], [8], None, TINY, tmp_path / "seq")
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    code, _, err = cli(monkeypatch, capfd, "sweep", "--archs", "plain,resnet", "--depths", "8",
                       "--jobs", "2", "--out", tmp_path / "par", *TINY, "train.device=auto")
    assert code == 0
    for name in ("plain-8-s0", "resnet-8-s0"):
        seq, par = rows(tmp_path / "seq" / name), rows(tmp_path / "par" / name)
        drop = lambda rs: [{k: v for k, v in r.items() if k not in TIMING} for r in rs]  # noqa: E731
        assert drop(par) == drop(seq) and len(par) == 3
        assert summary(tmp_path / "par" / name)["status"] == "done"
        assert len([ln for ln in err.splitlines() if ln in (f"{name}: GPU 0", f"{name}: GPU 1")]) == 1, err


PROBE_DATASET = """
import os
from resexp.data import SyntheticImages

class Probe(SyntheticImages):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with open(os.environ["RESEXP_PROBE_FILE"], "a") as f:
            f.write(f"{os.getpid()} {os.environ.get('RESEXP_PROBE')}\\n")
"""


def test_forked_workers_see_the_sweeps_environment_not_the_fork_servers(tmp_path, monkeypatch, capsys):
    """The fork server keeps the environment it started with; each worker takes the
    sweep's own at the moment it starts (a setting made between two sweeps included)."""
    conf = tmp_path / "conf"
    (conf / "dataset").mkdir(parents=True)
    (conf / "probe_ds.py").write_text(PROBE_DATASET)
    (conf / "dataset" / "probe.yaml").write_text(
        "defaults: [synthetic]\nname: probe\n_target_: probe_ds.Probe\n")
    monkeypatch.setenv("RESEXP_PROBE_FILE", str(tmp_path / "seen.txt"))
    for value in ("first", "second"):
        monkeypatch.setenv("RESEXP_PROBE", value)
        code, _, err = cli(monkeypatch, capsys, "sweep", "--archs", "plain,resnet", "--depths", "8", "--jobs", "2",
                           "--config-dir", conf, "--out", tmp_path / value, *TINY, "dataset=probe",
                           "train.epochs=1")
        assert code == 0, err
    seen = [line.split() for line in (tmp_path / "seen.txt").read_text().splitlines()]
    workers = {}  # each worker's pid -> what it saw (it opens the train and the test split)
    for pid, value in seen:
        if int(pid) != os.getpid():
            workers.setdefault(pid, set()).add(value)
    assert sorted(map(sorted, workers.values())) == [["first"], ["first"], ["second"], ["second"]]


def test_workers_take_the_visible_gpus_in_turn(tmp_path):
    auto, cpu = load_config([*TINY, "train.device=auto"]), load_config(TINY)
    assert gpu_slots([auto], jobs=5, count=2) == ["0", "1", "0", "1", "0"]
    assert gpu_slots([auto, cpu], jobs=3, count=4) == ["0", "1", "2"]
    assert gpu_slots([auto], jobs=2, count=0) is None  # no GPU: CPU workers
    assert gpu_slots([cpu], jobs=2, count=2) is None
    pinned = OmegaConf.merge(cpu, {"train": {"device": "cuda:1"}})  # load_config would want that GPU here
    assert gpu_slots([auto, pinned], jobs=2, count=2) is None  # the user chose the device
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "3, 5"}, 2) == ["3", "5"]  # the parent's own subset
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-a,GPU-b,7"}, 2) == ["GPU-a", "GPU-b"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, 0) == [] and visible_gpus({}, 3) == ["0", "1", "2"]


def test_workers_fork_from_a_server_with_torch_loaded_on_the_cpu_and_spawn_where_there_are_gpus():
    from resexp.sweep.local import PRELOAD, worker_context
    assert worker_context(0).get_start_method() == "forkserver"
    assert worker_context(2).get_start_method() == "spawn"
    assert {"torch", "torch._dynamo", "resexp.train.loop"} <= set(PRELOAD)


def test_a_setting_that_cannot_be_used_is_a_failed_run_not_damage(tmp_path, monkeypatch, capsys):
    """Only a damaged file is 'damaged': a dataset size the data do not have fails the run
    (exit 1, one error line naming it) and the other runs still train."""
    out = tmp_path / "out"
    code, stdout, stderr = cli(monkeypatch, capsys, "sweep", "--archs", "plain", "--depths", "8", "--out", out,
                               *TINY, "dataset.train_size=999")
    assert code == 1 and stdout.strip() == f"sweep {out}: 1 failed"
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error")]
    assert len(errors) == 1 and errors[0].startswith("error: plain-8-s0: ") and "999" in errors[0]


# --------------------------------------------------------------------------- one sweep's settings per folder
def test_a_sweep_with_other_settings_is_refused_while_another_trains_in_the_folder(tmp_path, monkeypatch, capsys):
    """While a sweep trains in a folder (its shared lock on .sweep.active, held here as
    that sweep would), a second one with other settings is refused in one line and writes
    nothing; one with the same settings joins it; once the first has ended, the changed
    sweep goes on as usual."""
    from resexp.sweep import claim

    out = tmp_path / "C"
    first = ["sweep", "--archs", "resnet", "--depths", "8", "--out", out, *TINY]
    assert cli(monkeypatch, capsys, *first)[0] == 0
    saved = (out / "sweep.yaml").read_text()
    active = claim.training(out)
    try:
        code, stdout, stderr = cli(monkeypatch, capsys, "sweep", "--archs", "resnet", "--depths", "14",
                                   "--out", out, *TINY)
        assert code == 2 and stdout == ""
        assert stderr.strip().splitlines() == [f"error: another sweep is training in {out} with other settings "
                                               f"(its sweep.yaml); wait for it to end, run the same command as it, "
                                               f"or use another --out"]
        assert (out / "sweep.yaml").read_text() == saved and not (out / "resnet-14-s0").exists()
        assert cli(monkeypatch, capsys, *first)[0] == 0  # the same sweep joins it
    finally:
        os.close(active)
    assert cli(monkeypatch, capsys, "sweep", "--archs", "resnet", "--depths", "14", "--out", out, *TINY)[0] == 0
    assert (out / "resnet-14-s0" / "metrics.csv").exists()


@pytest.mark.slow
def test_two_sweeps_started_together_with_other_settings_never_share_a_folder(tmp_path):
    """Two real sweeps started at once on one folder, one of 20 and one of 25 epochs (long
    enough that the first still trains while the second plans): whichever saves its
    sweep.yaml first trains; the other is refused in one line, so every run in the folder
    has one length and sweep.yaml names the sweep that trained."""
    out = tmp_path / "C"
    base = [sys.executable, "-m", "resexp", "sweep", "--archs", "resnet", "--out", str(out), *TINY]
    procs = [subprocess.Popen([*base, "--depths", "8", "train.epochs=20"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path),
             subprocess.Popen([*base, "--depths", "14", "train.epochs=25"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "another sweep is training in" in refused
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1
    saved = yaml.safe_load((out / "sweep.yaml").read_text())
    epochs = {20: [8], 25: [14]}[len(rows(runs[0]))]
    assert saved["depths"] == epochs


def test_a_link_planted_as_the_sweep_lock_is_one_line_and_never_followed(tmp_path, monkeypatch, capsys):
    out, target = tmp_path / "C", tmp_path / "elsewhere"
    out.mkdir()
    (out / ".sweep.active").symlink_to(target)
    code, _, stderr = cli(monkeypatch, capsys, "sweep", "--archs", "resnet", "--depths", "8", "--out", out, *TINY)
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert f"cannot lock {out / '.sweep.active'}" in stderr
    assert not target.exists() and sorted(p.name for p in out.iterdir()) == [".sweep.active"]
