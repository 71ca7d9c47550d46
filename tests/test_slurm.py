"""Sweeps through a real SLURM: a one-node cluster on this machine (scripts/start-test-slurm.sh).

The cluster is started once per session where the suite may (root or password-less sudo,
apt-get for Debian's slurm-wlm and munge); elsewhere these tests are skipped, except
with RESEXP_REQUIRE_SLURM=1 (CI), where a cluster that cannot start is a failure.
Jobs inherit this process's environment (PYTHONPATH, RESEXP_DATA), as sbatch's do by default.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from helpers.cli import SWEEP_TINY as TINY
from helpers.cli import cli, rows

from resexp.settings.compose import load_config
from resexp.train.loop import fit

# Both suite workers may submit at once: the cluster declares at least 4 CPUs, and each
# worker's first test starts it or waits for the other's start (start-test-slurm.sh's lock).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SLURM = ["--launcher", "slurm", "launcher.gpus_per_run=0", "launcher.cpus_per_run=1",
         "launcher.time_min=10"]
# A run long enough to be caught between two epochs: 16 epochs of 2 steps.
LONG = [*TINY, "dataset.train_args.size=128", "train.epochs=16", "train.milestones=[8]"]
TIMING = ("seconds", "images_per_s", "elapsed")


def _can_be_root() -> bool:
    if os.geteuid() == 0:
        return True
    return subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def slurm_cluster():
    """Start the test cluster, or find it running. It is left running at the end (another
    test session may be using it); `bash scripts/start-test-slurm.sh --stop` stops it."""
    required = os.environ.get("RESEXP_REQUIRE_SLURM") == "1"
    script = ROOT / "scripts" / "start-test-slurm.sh"
    if not _can_be_root():
        reason = "a test SLURM needs root or password-less sudo"
    else:
        started = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600)
        reason = None if started.returncode == 0 else f"test SLURM did not start: {started.stdout}{started.stderr}"
    if reason:
        if required:
            pytest.fail(f"RESEXP_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture
def slurm(slurm_cluster, tmp_path):
    """The cluster for one test; the jobs the test submitted are cancelled after it."""
    yield
    ids = [json.loads(line)["job_id"] for f in tmp_path.rglob(".slurm/jobs.jsonl")
           for line in f.read_text().splitlines()]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=60)


# --------------------------------------------------------------------------- helpers
def wait_for(condition, what: str, timeout: float = 90.0):
    """Poll condition() every 0.1 s until it returns something true; fail after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def job_state(job_id: str, what: str = "%T") -> str | None:
    """squeue's state of a job (or another field), None once it has left the queue."""
    result = subprocess.run(["squeue", "-h", "-j", job_id, "-o", what], capture_output=True, text=True)
    return result.stdout.strip() or None


def metrics_rows(run_dir: Path) -> list[dict]:
    return rows(run_dir) if (run_dir / "metrics.csv").exists() else []


def submitted_ids(stdout: str) -> dict[str, str]:
    """{run: job id} from the lines `<run>: job <id>` a submission prints."""
    pairs = [line.split(": job ") for line in stdout.splitlines() if ": job " in line]
    return {run: job for run, job in pairs}


def requeue_now(job_id: str) -> None:
    """SLURM holds a requeued job for about two minutes before it may start again;
    move its start to now once it is held, to keep the test short. Not at once: slurmd
    refuses a job whose credential is from the second its last one was revoked in."""
    wait_for(lambda: job_state(job_id, "%T %r") == "PENDING BeginTime", f"job {job_id} held after its requeue")
    time.sleep(2)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True, capture_output=True)


def assert_epochs_once(run_dir: Path, epochs: int) -> None:
    assert [int(r["epoch"]) for r in rows(run_dir)] == list(range(1, epochs + 1))


def numbers(run_dir: Path) -> list[dict]:
    """metrics.csv without its timing columns: what must not depend on where a run trained."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows(run_dir)]


# --------------------------------------------------------------------------- tests
def test_the_cluster_start_leaves_its_lock_free(slurm):
    """The daemons the start script launched must not hold its lock: a munged that inherited
    it held it for as long as it lived, and every later start (the suite's other worker, the
    next test session) waited forever for it."""
    assert subprocess.run(["flock", "-n", "/tmp/resexp-slurm-start.lock", "true"]).returncode == 0


def test_slurm_sweep_gives_the_numbers_of_a_local_sweep(slurm, tmp_path, monkeypatch, capsys):
    sweep = ["sweep", "--archs", "plain,resnet", "--depths", "8", "--seeds", "1", *TINY]
    code, stdout, stderr = cli(monkeypatch, capsys, *sweep, "--out", tmp_path / "slurm", *SLURM)
    assert code == 0, stderr
    jobs = submitted_ids(stdout)
    assert sorted(jobs) == ["plain-8-s1", "resnet-8-s1"]
    assert len({job.split("_")[0] for job in jobs.values()}) == 1  # one array

    # While the jobs run: the same sweep here, then the same submission with --wait,
    # which submits nothing new and follows the jobs already queued.
    code, _, stderr = cli(monkeypatch, capsys, *sweep, "--out", tmp_path / "local")
    assert code == 0, stderr
    code, stdout, stderr = cli(monkeypatch, capsys, *sweep, "--out", tmp_path / "slurm", *SLURM, "--wait")
    assert code == 0, stderr
    for run, job in jobs.items():  # each run: its job still queued or running, or already done
        assert f"{run}: already queued as job {job}, not submitted again" in stderr or \
            re.search(rf"^{run}\s+done\s", stderr, re.M), (run, stderr)
    assert "nothing to submit" in stdout.splitlines()
    assert submitted_ids(stdout) == {} and f"sweep {tmp_path / 'slurm'}: 2 done" in stdout

    for run in jobs:
        assert numbers(tmp_path / "slurm" / run) == numbers(tmp_path / "local" / run), run
        assert_epochs_once(tmp_path / "slurm" / run, 3)
    # The runs are done before SLURM has let go of their jobs (COMPLETING): give it 60 s.
    for _ in range(60):
        code, stdout, _ = cli(monkeypatch, capsys, "status", tmp_path / "slurm")
        if all(f"{job} ended" in stdout for job in jobs.values()):
            break
        time.sleep(1)
    assert code == 0 and all(f"{job} ended" in stdout for job in jobs.values()), stdout


def test_requeued_then_cancelled_run_resumes_without_losing_or_repeating_an_epoch(slurm, tmp_path,
                                                                                  monkeypatch, capsys):
    out, run = tmp_path / "out", tmp_path / "out" / "resnet-8-s0"
    submit = ["sweep", "--archs", "resnet", "--depths", "8", *LONG, "--out", out, *SLURM]
    code, stdout, stderr = cli(monkeypatch, capsys, *submit)
    assert code == 0, stderr
    job = submitted_ids(stdout)["resnet-8-s0"]

    wait_for(lambda: len(metrics_rows(run)) >= 2, "two epochs")
    subprocess.run(["scontrol", "requeue", job], check=True, capture_output=True)
    requeue_now(job)
    before = len(metrics_rows(run))
    wait_for(lambda: len(metrics_rows(run)) >= before + 2, "two more epochs after the requeue")
    subprocess.run(["scancel", job], check=True)
    assert len(metrics_rows(run)) < 16, "the run finished before it could be cancelled"

    code, stdout, stderr = cli(monkeypatch, capsys, *submit, "--wait")  # the same command again
    assert code == 0, stderr
    assert submitted_ids(stdout)["resnet-8-s0"] != job and "1 done" in stdout
    assert_epochs_once(run, 16)
    fit(load_config([*LONG, "model.arch=resnet", "model.depth=8"]), tmp_path / "here")  # never interrupted
    assert numbers(run) == numbers(tmp_path / "here" / "resnet-8-s0")
    log = Path(json.loads((out / ".slurm" / "jobs.jsonl").read_text().splitlines()[0])["stderr"]).read_text()
    assert log.count("SIGTERM received") == 2 and "resnet-8-s0: resuming after epoch" in log


def test_time_limit_signal_requeues_the_job_until_max_requeues(slurm, tmp_path, monkeypatch, capsys):
    """USR2 is what SLURM sends signal_delay_s before the time limit: submitit requeues the
    job, which resumes the run. With max_requeues=1 the second one ends the job, and the
    same submit command finishes the run."""
    out, run = tmp_path / "out", tmp_path / "out" / "plain-8-s0"
    submit = ["sweep", "--archs", "plain", "--depths", "8", *LONG, "--out", out, *SLURM, "launcher.max_requeues=1"]
    code, stdout, stderr = cli(monkeypatch, capsys, *submit)
    assert code == 0, stderr
    job = submitted_ids(stdout)["plain-8-s0"]

    def running_with(least: int) -> int:  # the rows logged, once at least ``least`` and the job runs
        n = len(metrics_rows(run))
        return n if n >= least and job_state(job) == "RUNNING" else 0

    least = 2
    for k in range(2):
        done = wait_for(lambda least=least: running_with(least), f"epochs before signal {k + 1}")
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        if k == 0:
            requeue_now(job)
            # Two epochs of the requeued job: the first one may have logged more before it
            # was stopped, and a signal to a job still pending fails.
            least = len(metrics_rows(run)) + 2
    wait_for(lambda: job_state(job) is None, "the job to end after its last allowed requeue")
    assert done < 16, "the run finished before the second signal"
    log = (out / ".slurm" / f"{job}_0_log.out").read_text()
    assert log.count("Starting with") == 2 and "timed-out too many times" in log  # one requeue, not two

    code, stdout, stderr = cli(monkeypatch, capsys, *submit, "--wait")
    assert code == 0, stderr
    assert_epochs_once(run, 16)


def test_two_slurm_sweeps_and_a_local_one_on_one_folder_train_each_run_once(slurm, tmp_path, monkeypatch, capsys):
    """Two submissions of the same sweep at once and a local sweep beside them, on one
    --out, with a stale lock (its owner died) on one run and a live one (this test
    process) on another: every other run is trained exactly once, each epoch in exactly
    one place; the stale lock is taken over, the live run is left alone."""
    import sys

    from helpers.runs import dead_pid, write_lock

    out = tmp_path / "out"
    sweep = ["sweep", "--archs", "plain,resnet", "--depths", "8", "--seeds", "0,1", *TINY, "train.epochs=6",
             "--out", out]
    write_lock(out / "plain-8-s1", pid=dead_pid())  # fresh heartbeat, dead owner
    live = write_lock(out / "resnet-8-s1", pid=os.getpid())
    live_lock = live.read_bytes()
    # Each submission one task at a time, so that jobs, the local sweep and each other meet.
    submit = [os.fspath(Path(sys.executable)), "-m", "resexp", *map(str, sweep), *SLURM,
              "launcher.array_parallelism=1"]
    first = subprocess.Popen([*submit, "--wait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(submit, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any((out / run / "run.lock").exists() for run in ("plain-8-s0", "resnet-8-s0")),
             "a job to start training")
    code, _, local_log = cli(monkeypatch, capsys, *sweep)
    assert code == 0, local_log
    first_out, first_err = first.communicate(timeout=120)
    second_out, second_err = second.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, first_err + second_err
    jobs = [*submitted_ids(first_out).values(), *submitted_ids(second_out).values()]
    wait_for(lambda: all(job_state(job) is None for job in jobs), "every job to end")

    assert "3 done" in first_out and "1 running elsewhere" in first_out
    logs = local_log + "".join(p.read_text() for p in (out / ".slurm").glob("*_log.err"))
    for run in ("plain-8-s0", "resnet-8-s0", "plain-8-s1"):
        assert_epochs_once(out / run, 6)
        trained = [f"{run} epoch {k}/6 " for k in range(1, 7)]
        assert [logs.count(line) for line in trained] == [1] * 6, run  # each epoch trained in one place
    assert live.read_bytes() == live_lock and not (out / "resnet-8-s1" / "metrics.csv").exists()
    assert "resnet-8-s1: being trained by" in first_err + second_err


def test_sbatch_refusing_a_setting_is_one_line(slurm, tmp_path, monkeypatch, capsys):
    code, stdout, stderr = cli(monkeypatch, capsys, "sweep", "--archs", "plain", "--depths", "8", *TINY,
                               "--out", tmp_path / "out", *SLURM, "launcher.partition=nope")
    error = [line for line in stderr.splitlines() if "sbatch" in line]
    assert code == 2 and len(error) == 1 and error[0].startswith("error: sbatch failed: ") and "partition" in error[0]
    assert submitted_ids(stdout) == {} and not (tmp_path / "out" / ".slurm" / "jobs.jsonl").exists()


@pytest.mark.parametrize("asked", ["sinfo", "sbatch"])
def test_the_shipped_launcher_on_a_cluster_without_gpus_names_gpus_per_run_0(slurm, tmp_path, monkeypatch, capsys,
                                                                            asked):
    """The test cluster has no GPU, and the shipped launcher asks for one per job: one line that
    says to set launcher.gpus_per_run=0, from sinfo's GRES before anything is submitted, or from
    sbatch's own refusal where sinfo does not say (a partition it does not list)."""
    import resexp.sweep.slurm as slurm_launcher

    if asked == "sbatch":
        monkeypatch.setattr(slurm_launcher, "gpus_listed", lambda sinfo, partition: None)
    out = tmp_path / "out"
    code, stdout, stderr = cli(monkeypatch, capsys, "sweep", "--archs", "plain", "--depths", "8", *TINY, "--out", out,
                               "--launcher", "slurm")  # gpus_per_run, cpus_per_run, mem_gb, time_min as shipped
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert code == 2 and stdout == "" and len(errors) == 1, stderr
    assert "launcher.gpus_per_run=0" in errors[0]
    assert ("sinfo lists no GPU on the default partition" if asked == "sinfo" else
            "sbatch failed: sbatch: error: Invalid generic resource (gres) specification") in errors[0]
    assert submitted_ids(stdout) == {} and not (out / ".slurm" / "jobs.jsonl").exists()
    assert asked == "sbatch" or not (out / ".slurm").exists()  # refused before submitit wrote a job


@pytest.mark.parametrize("sinfo, partition, gpus", [
    ("debug* (null)\n", None, False),
    ("debug* (null)\ngpu gpu:a100:4(S:0-1)\n", None, False),
    ("debug* (null)\ngpu gpu:a100:4(S:0-1)\n", "gpu", True),
    ("debug* (null)\ngpu gpu:a100:4(S:0,1),mps:400\n", "debug,gpu", True),
    ("batch* gpu:2\nbatch* (null)\n", None, True),  # one line per kind of node: some have GPUs
    ("batch* mps:100,shard:gpu:4\n", None, False),  # a GRES that only mentions gpu is none
    ("batch* gpu:0\n", None, False),
    ("batch* gpu:tesla:2\n", "other", None),  # sinfo does not list that partition: sbatch will say
    ("", None, None),
])
def test_gpus_are_read_from_sinfos_gres(sinfo, partition, gpus):
    """Without a cluster: sinfo -h -o '%P %G' lines, as SLURM prints them."""
    from resexp.sweep.slurm import gpus_listed

    assert gpus_listed(sinfo, partition) is gpus
