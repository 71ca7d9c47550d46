"""Launchers without a cluster: settings, --dry-run's sbatch lines, errors, job records, status;
the local launcher's --jobs workers under real signals.

The tests that submit to a real SLURM are in test_slurm.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.cli import SWEEP_TINY as TINY
from helpers.cli import cli

from resexp.run.folder import RunDir
from resexp.settings.compose import list_group
from resexp.sweep import launch as launchers
from resexp.sweep import plan as sw
from resexp.sweep.jobs import read_records
from resexp.sweep.local import LocalLauncher
from resexp.sweep.slurm import TrainJob
from resexp.sweep.status import status_with_jobs

CPU_SLURM = ["launcher.gpus_per_run=0", "launcher.cpus_per_run=1"]


def sbatch_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]


def write_site_launcher(folder: Path, name: str, text: str) -> Path:
    (folder / "launcher").mkdir(parents=True, exist_ok=True)
    (folder / "launcher" / f"{name}.yaml").write_text(text)
    return folder


# --------------------------------------------------------------------------- settings
@pytest.mark.parametrize("name", list_group("launcher"))
def test_every_shipped_launcher_composes_and_is_valid(tmp_path, name):
    spec, out = sw.resolve_spec(["plain"], [8], [0], [*TINY, f"launcher={name}"], tmp_path / "out")
    picked = launchers.pick(sw.plan(spec, out), None, False)
    assert picked.type == name  # local.yaml is of type local, slurm.yaml of type slurm


def test_launcher_keys_never_count_as_result_settings(tmp_path, tiny_cfg):
    run = RunDir(tmp_path / "plain-8-s0")
    run.path.mkdir()
    run.create(tiny_cfg("model.arch=plain"))
    assert run.config_conflicts(tiny_cfg("model.arch=plain", "launcher=slurm", "launcher.partition=gpu",
                                         "launcher.time_min=5")) == []
    # ... while a result-affecting key still does
    assert run.config_conflicts(tiny_cfg("model.arch=plain", "launcher=slurm", "train.lr=0.2"))


def test_launcher_overrides_are_not_saved_and_keep_the_saved_sweep(tmp_path):
    out = tmp_path / "out"
    spec, _ = sw.resolve_spec(["plain"], [8], [0], TINY, out)
    sw.save_spec(spec, out)

    again, _ = sw.resolve_spec(None, None, None, ["launcher=slurm", "launcher.partition=gpu"], out)

    assert again.overrides == spec.overrides  # the saved sweep, not replaced by launcher keys
    assert again.launcher == ["launcher=slurm", "launcher.partition=gpu"]
    assert "launcher" not in again.to_yaml()
    cfg = sw.plan(again, out)[0].cfg
    assert (cfg.launcher.type, cfg.launcher.partition, cfg.train.epochs) == ("slurm", "gpu", 3)


def test_local_launcher_takes_jobs_from_its_config_and_the_option_wins(tmp_path):
    spec, out = sw.resolve_spec(["plain"], [8], [0], [*TINY, "launcher.jobs=3"], tmp_path / "out")
    runs = sw.plan(spec, out)
    assert launchers.pick(runs, None, False).jobs == 3
    assert launchers.pick(runs, 2, False).jobs == 2


# --------------------------------------------------------------------------- --dry-run
def test_dry_run_shows_the_sbatch_parameters_and_submits_nothing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    code, _, stderr = cli(monkeypatch, capsys, "sweep", "--archs", "plain,resnet", "--depths", "8",
                               "--seeds", "0,1", "--out", out, "--dry-run", "--launcher", "slurm", *TINY,
                               "launcher.partition=gpu", "launcher.account=lab", "launcher.qos=low",
                               "launcher.time_min=90", "launcher.gpus_per_run=2", "launcher.cpus_per_run=6",
                               "launcher.mem_gb=12", "launcher.array_parallelism=3",
                               "launcher.signal_delay_s=45", "+launcher.sbatch.constraint=a100")
    assert code == 0, stderr
    lines = sbatch_lines(stderr)
    for expected in ["--partition=gpu", "--account=lab", "--qos=low", "--time=90", "--gpus-per-node=2",
                     "--cpus-per-task=6", "--mem=12GB", "--array=0-3%3", "--signal=USR2@45",
                     "--constraint=a100", "--requeue", f"--error={out.resolve()}/.slurm/%A_%a_0_log.err"]:
        assert f"#SBATCH {expected}" in lines, (expected, lines)
    tasks = [line.split(": ")[1] for line in stderr.splitlines() if "array task" in line]
    assert tasks == ["plain-8-s0", "plain-8-s1", "resnet-8-s0", "resnet-8-s1"]
    assert not out.exists()  # nothing written, nothing submitted


def test_launcher_option_is_the_launcher_override(tmp_path, monkeypatch, capsys):
    args = ["sweep", "--archs", "plain", "--depths", "8", "--out", tmp_path / "o", "--dry-run", *TINY, *CPU_SLURM]
    by_option = cli(monkeypatch, capsys, *args, "--launcher", "slurm")
    by_override = cli(monkeypatch, capsys, *args, "launcher=slurm")
    assert by_option == by_override
    assert "#SBATCH --time=240" in by_option[2]  # the shipped slurm.yaml's time limit
    assert "--gpus-per-node" not in by_option[2]  # 0 GPUs: not asked
    assert "#SBATCH --mem=16GB" in sbatch_lines(by_option[2])  # the shipped mem_gb, as sbatch takes it


def test_site_launcher_from_config_dir_extends_the_shipped_one(tmp_path, monkeypatch, capsys):
    site = write_site_launcher(tmp_path / "site", "mycluster",
                               "defaults: [slurm, _self_]\npartition: short\ntime_min: 30\n")
    code, _, stderr = cli(monkeypatch, capsys, "sweep", "--archs", "plain", "--depths", "8", "--out",
                          tmp_path / "o", "--dry-run", "--launcher", "mycluster", "--config-dir", site, *TINY)
    assert code == 0, stderr
    lines = sbatch_lines(stderr)
    assert "#SBATCH --partition=short" in lines and "#SBATCH --time=30" in lines
    assert "#SBATCH --cpus-per-task=4" in lines  # the rest from the shipped slurm.yaml


def test_local_dry_run_shows_no_sbatch_lines(tmp_path, monkeypatch, capsys):
    code, _, stderr = cli(monkeypatch, capsys, "sweep", "--archs", "plain", "--depths", "8", "--out",
                          tmp_path / "o", "--dry-run", *TINY)
    assert code == 0 and "#SBATCH" not in stderr and "plain-8-s0" in stderr


# --------------------------------------------------------------------------- user errors
LAUNCHER_ERRORS = {
    "wait-local": (["--wait"], "--wait is for the slurm launcher"),
    "jobs-slurm": (["--jobs", "2", "--launcher", "slurm"], "--jobs is for the local launcher"),
    "unknown-launcher": (["--launcher", "pbs"], "unknown launcher 'pbs'"),
    "unknown-key": (["launcher=slurm", "launcher.partiton=gpu"], "launcher.partiton"),
    "time": (["launcher=slurm", "launcher.time_min=0"], "launcher.time_min must be > 0, got 0"),
    "mem": (["launcher=slurm", "launcher.mem_gb=-2"], "launcher.mem_gb must be a positive number or null"),
    "signal": (["launcher=slurm", "launcher.time_min=1", "launcher.signal_delay_s=60"],
               "must be shorter than the time limit"),
    "sbatch": (["launcher=slurm", "launcher.sbatch=7"], "launcher.sbatch=7"),
    "jobs": (["launcher.jobs=0"], "launcher.jobs must be > 0, got 0"),
    "type": (["launcher.type=pbs"], "launcher.type must be one of local, slurm"),
    "slurm-key-local": (["launcher.partition=gpu"], "launcher.partition is not a setting of the local launcher"),
    "local-key-slurm": (["launcher=slurm", "launcher.jobs=4"], "launcher.jobs is not a setting of the slurm"),
}


@pytest.mark.parametrize("args,says", LAUNCHER_ERRORS.values(), ids=LAUNCHER_ERRORS.keys())
def test_launcher_mistakes_are_one_line_and_write_nothing(tmp_path, monkeypatch, capsys, args, says):
    out = tmp_path / "out"
    code, _, stderr = cli(monkeypatch, capsys, "sweep", "--archs", "plain", "--depths", "8", "--out", out,
                          *TINY, *args)
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and says in lines[0], stderr
    assert not out.exists()


def test_train_refuses_launcher_settings(tmp_path, monkeypatch, capsys):
    code, _, stderr = cli(monkeypatch, capsys, "train", "--out", tmp_path / "o", *TINY, "launcher=slurm")
    assert code == 2 and stderr.strip() == ("error: launcher=slurm: launchers are for resexp sweep; "
                                            "train runs here, in this process")
    assert not (tmp_path / "o").exists()


def test_a_site_copy_named_like_a_shipped_launcher_is_an_error(tmp_path, monkeypatch, capsys):
    """The shipped folder is searched first: a user's launcher/slurm.yaml would be ignored."""
    site = write_site_launcher(tmp_path / "site", "slurm", "type: slurm\npartition: mine\n")
    code, _, stderr = cli(monkeypatch, capsys, "sweep", "--archs", "plain", "--depths", "8", "--out",
                          tmp_path / "o", "--dry-run", "--launcher", "slurm", "--config-dir", site, *TINY)
    assert code == 2 and "has the name of a shipped launcher" in stderr and "mycluster" in stderr


def test_submitting_where_there_is_no_slurm_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no srun, no sbatch
    code, _, stderr = cli(monkeypatch, capsys, "sweep", "--archs", "plain", "--depths", "8", "--out",
                          tmp_path / "o", "--launcher", "slurm", *TINY, *CPU_SLURM)
    assert code == 2 and stderr.strip().splitlines()[-1].startswith("error: cannot submit to SLURM here")
    assert read_records(tmp_path / "o") == {}


# --------------------------------------------------------------------------- job records, status
def test_records_keep_the_latest_job_of_each_run_and_survive_a_cut_line(tmp_path):
    folder = tmp_path / "out" / ".slurm"
    folder.mkdir(parents=True)
    lines = [{"run": "plain-8-s0", "job_id": "5_0", "stdout": "o", "stderr": "a"},
             {"run": "resnet-8-s0", "job_id": "5_1", "stdout": "o", "stderr": "b"},
             {"run": "plain-8-s0", "job_id": "9", "stdout": "o", "stderr": "c"}]
    (folder / "jobs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"run": "cut')
    records = read_records(tmp_path / "out")
    assert {name: r["job_id"] for name, r in records.items()} == {"plain-8-s0": "9", "resnet-8-s0": "5_1"}


def test_status_lists_submitted_runs_before_their_folders_exist(tmp_path, monkeypatch, capsys):
    """Jobs no longer in the queue (here: no squeue at all) read as ended; a run with no
    folder yet is listed from the job record, and the log folder is named."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "out"
    (out / ".slurm").mkdir(parents=True)
    record = {"run": "plain-8-s0", "job_id": "41_0", "stdout": "o", "stderr": str(out / ".slurm" / "41_0_0_log.err")}
    (out / ".slurm" / "jobs.jsonl").write_text(json.dumps(record) + "\n")

    code, stdout, _ = cli(monkeypatch, capsys, "status", out)
    assert code == 0
    row = next(line.split() for line in stdout.splitlines() if line.startswith("plain-8-s0"))
    assert row[1] == "new" and row[-2:] == ["41_0", "ended"]
    assert f"job logs: {out / '.slurm'}/" in stdout


def test_status_of_a_sweep_without_jobs_has_no_job_column(tmp_path, tiny_cfg):
    from resexp.train.loop import fit

    fit(tiny_cfg(), tmp_path / "out")
    table, logs = status_with_jobs(tmp_path / "out")
    assert logs is None and "job" not in table.columns and list(table["status"]) == ["done"]


def test_train_job_uses_the_job_cores_and_resumes_like_a_rerun(tmp_path, tiny_cfg, monkeypatch):
    """The call a SLURM job makes, here in this process: it trains the run with
    SLURM_CPUS_PER_TASK threads when train.threads is unset, and a second call (a requeued
    job) finds the run done."""
    import torch
    from omegaconf import OmegaConf

    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    cfg = tiny_cfg("train.threads=null")
    job = TrainJob(OmegaConf.to_yaml(cfg), str(tmp_path / "out"))
    torch.set_num_threads(2)
    assert job() == "done"
    assert torch.get_num_threads() == 1
    assert job() == "done" and len((tmp_path / "out" / "resnet-8-s0" / "metrics.csv").read_text().splitlines()) == 4
    summary = json.loads((tmp_path / "out" / "resnet-8-s0" / "summary.json").read_text())
    assert (summary["torch_threads"], summary["threads_policy"]) == (1, "slurm")


# --------------------------------------------------------------------------- the run lock in a job
def test_a_requeued_job_takes_over_the_lock_of_its_earlier_run(tmp_path, monkeypatch):
    """Killed hard on another node and requeued, a job finds its own lock with a fresh
    heartbeat: that owner is gone (a job runs in one place at a time). The same job
    before any requeue, or another job, still finds the lock live."""
    from helpers.runs import write_lock

    from resexp.run.lock import RunBusy, acquire

    lock = write_lock(tmp_path, pid=1, host="gpu-node-7", age=2, job="77_1")
    record = json.loads(lock.read_text())
    lock.write_text(json.dumps({**record, "restarts": 0}))
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    with pytest.raises(RunBusy, match="gpu-node-7"):
        acquire(lock)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with pytest.raises(RunBusy, match="gpu-node-7"):
        acquire(lock)

    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")  # 77_1 after its first requeue
    held = acquire(lock)
    try:
        assert json.loads(lock.read_text())["restarts"] == 1 and json.loads(lock.read_text())["pid"] == os.getpid()
    finally:
        held.release()


def test_a_job_whose_run_another_trainer_holds_skips_it(tmp_path, tiny_cfg):
    from helpers.runs import write_lock
    from omegaconf import OmegaConf

    run = tmp_path / "out" / "resnet-8-s0"
    write_lock(run, pid=os.getppid())  # a live process on this host
    job = TrainJob(OmegaConf.to_yaml(tiny_cfg()), str(tmp_path / "out"))
    assert job() == "running elsewhere"
    assert not (run / "metrics.csv").exists() and (run / "run.lock").exists()


def fake_command(folder: Path, name: str, output: str) -> None:
    """An executable ``name`` in ``folder`` that prints ``output`` (a stand-in for squeue/sacct)."""
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\ncat <<'END'\n{output}\nEND\n")
    path.chmod(0o755)


def test_status_reads_job_states_from_squeue_and_sacct(tmp_path, monkeypatch, capsys):
    """A queued job makes its run 'queued', a running one 'running' with its node; an
    ended job shows sacct's final state."""
    from helpers.runs import make_run

    out = tmp_path / "out"
    make_run(out, "plain", 8, 0, [50.0, 40.0], status="running", epochs_planned=4, pid=1, host="elsewhere")
    make_run(out, "resnet", 8, 0, [50.0], status="running", epochs_planned=4, pid=1, host="elsewhere")
    (out / ".slurm").mkdir()
    jobs = [("plain-8-s0", "7_0"), ("resnet-8-s0", "7_1"), ("plain-14-s0", "7_2")]
    (out / ".slurm" / "jobs.jsonl").write_text(
        "".join(json.dumps({"run": run, "job_id": job, "stdout": "x", "stderr": "x"}) + "\n" for run, job in jobs))
    bin_dir = tmp_path / "bin"
    fake_command(bin_dir, "squeue", "7_0|RUNNING|node3|None\n7_1|PENDING||Priority\n8|RUNNING|node1|None")
    fake_command(bin_dir, "sacct", "7_2|CANCELLED by 0")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    code, stdout, _ = cli(monkeypatch, capsys, "status", out)
    assert code == 0
    lines = {line.split()[0]: line for line in stdout.splitlines() if "-s0" in line}
    assert lines["plain-8-s0"].split()[1] == "running" and lines["plain-8-s0"].endswith("7_0 RUNNING on node3")
    assert lines["resnet-8-s0"].split()[1] == "queued" and lines["resnet-8-s0"].endswith("7_1 PENDING (Priority)")
    assert lines["plain-14-s0"].split()[1] == "new" and lines["plain-14-s0"].endswith("7_2 CANCELLED")
    assert list(lines) == ["plain-8-s0", "plain-14-s0", "resnet-8-s0"]  # legend order, folder or not


def test_the_documented_site_launcher_works_as_shown(tmp_path, monkeypatch, capsys):
    readme = (Path(__file__).resolve().parent.parent / "docs" / "slurm.md").read_text()
    site_yaml = readme.split("launcher/mycluster.yaml`:\n\n```yaml\n")[1].split("```")[0]
    site = write_site_launcher(tmp_path / "site", "mycluster", site_yaml)
    code, _, stderr = cli(monkeypatch, capsys, "sweep", "--archs", "plain", "--depths", "8", "--out",
                          tmp_path / "o", "--dry-run", "--config-dir", site, "--launcher", "mycluster",
                          "launcher.time_min=60", *TINY)
    assert code == 0, stderr
    lines = sbatch_lines(stderr)
    for expected in ["--partition=gpu", "--account=lab-he", "--time=60", "--cpus-per-task=8", "--mem=32GB",
                     "--constraint=a100", "--mail-type=FAIL", "--gpus-per-node=1"]:
        assert f"#SBATCH {expected}" in lines, expected
    assert not any("wckey" in line for line in lines)


# --------------------------------------------------------------------------- local --jobs workers
# `resexp sweep` in a fresh interpreter; its first argument "spawn" makes it count two GPUs,
# so its workers are spawned (their start where there are GPUs) while they train on the CPU.
SWEEP = """
import sys
if sys.argv.pop(1) == "spawn":
    import torch
    torch.cuda.device_count = lambda: 2
sys.argv[0] = "resexp"
from resexp.cli import entry
entry()
"""


def start_sweep(out: Path, start: str) -> subprocess.Popen:
    """Two long runs, two at a time, in a session of their own; returns once both workers
    train (each holds its run's lock and has written its summary.json)."""
    sweep = subprocess.Popen([sys.executable, "-c", SWEEP, start, "sweep", "--archs", "plain,resnet", "--depths", "8",
                              "--jobs", "2", "--out", str(out), *TINY, "train.epochs=400", "train.milestones=[200]"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not all((out / name / "run.lock").exists() and (out / name / "summary.json").exists()
                  for name in ("plain-8-s0", "resnet-8-s0")):
        if sweep.poll() is not None or time.monotonic() > deadline:
            sweep.kill()
            raise AssertionError(f"the workers never started: {sweep.communicate()}")
        time.sleep(0.05)
    return sweep


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # ended meanwhile
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found.update(kids)
        todo += kids
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie (one that has ended but is not yet reaped by init)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def ended(pids, within_s: float) -> set[int]:
    """The pids still running once ``within_s`` has passed (checked until then)."""
    deadline = time.monotonic() + within_s
    while (left := {p for p in pids if running(p)}) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


# What a run killed in its first epochs is left as: the next sweep resumes or starts it.
RESUMABLE = {"new", "partial", "stale"}


def lock_owners(out: Path) -> set[int]:
    return {RunDir(out / name).state().owner.pid for name in ("plain-8-s0", "resnet-8-s0")}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
@pytest.mark.parametrize("start", ["forkserver", "spawn"])
def test_kill_9_of_a_parallel_sweep_ends_all_its_processes(tmp_path, start):
    """No handler sees SIGKILL: each worker (a fork server's child on the CPU, the sweep's
    own where there are GPUs), the fork server and multiprocessing's resource tracker end
    within 5 s all the same, and the runs are left to resume."""
    out = tmp_path / "out"
    sweep = start_sweep(out, start)
    try:
        below = descendants(sweep.pid)
        assert lock_owners(out) <= below and len(below) >= (4 if start == "forkserver" else 3)
        owners = lock_owners(out)
        sweep.kill()
        sweep.wait()
        assert ended(below, within_s=5) == set()
    finally:
        sweep.kill()
        for pid in below:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
    states = [RunDir(out / n).state() for n in ("plain-8-s0", "resnet-8-s0")]
    assert {state.status for state in states} <= RESUMABLE
    # status names each lock's owner as ended, so the next sweep resumes the run
    assert sorted(state.owner.describe() for state in states) == sorted(
        f"its trainer (pid {pid}) has ended" for pid in owners)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_ctrl_c_to_a_parallel_sweep_alone_ends_it_and_every_worker(tmp_path):
    """SIGINT to the sweep's process only (not its group, as `kill -INT` does): exit 130 with
    the one interrupted line, and nothing of it left running."""
    out = tmp_path / "out"
    sweep = start_sweep(out, "forkserver")
    try:
        below = descendants(sweep.pid)
        os.kill(sweep.pid, signal.SIGINT)
        _, stderr = sweep.communicate(timeout=120)
        assert ended(below, within_s=5) == set()
    finally:
        sweep.kill()
    assert sweep.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == LocalLauncher.interrupted
    assert {RunDir(out / n).state().status for n in ("plain-8-s0", "resnet-8-s0")} <= RESUMABLE
