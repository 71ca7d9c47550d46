"""One trainer per run: the lock file, its heartbeat, takeover of stale locks, and what
train, sweep and status do with a run another process trains."""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.cli import SWEEP_TINY, TINY, cli, rows
from helpers.runs import dead_pid, make_run, write_lock

from resexp.errors import UserError
from resexp.run.files import DamagedFile
from resexp.run.lock import RunBusy, acquire, read_owner
from resexp.run.text import inert


def lock_record(path: Path) -> dict:
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- the lock itself
def test_a_live_lock_is_not_taken_over(tmp_path):
    lock = write_lock(tmp_path, pid=os.getppid())  # a live process on this host
    before = lock.read_bytes()
    with pytest.raises(RunBusy, match=f"is being trained by host {socket.gethostname()} pid {os.getppid()}"):
        acquire(lock)
    assert lock.read_bytes() == before


def test_a_lock_on_another_host_is_live_while_its_heartbeat_is(tmp_path):
    """On another host the pid tells nothing: only the heartbeat counts."""
    lock = write_lock(tmp_path, pid=dead_pid(), host="other-node", age=5, stale_after=60)
    with pytest.raises(RunBusy, match="host other-node"):
        acquire(lock)
    write_lock(tmp_path, pid=os.getppid(), host="other-node", age=61, stale_after=60)
    held = acquire(lock, stale_after=60)
    try:
        assert lock_record(lock)["pid"] == os.getpid() and lock_record(lock)["token"] == held.token
    finally:
        held.release()
    assert not lock.exists()


def test_a_lock_whose_owner_died_on_this_host_is_taken_over(tmp_path):
    lock = write_lock(tmp_path, pid=dead_pid(), age=0)  # fresh heartbeat, but the process is gone
    held = acquire(lock)
    try:
        record = lock_record(lock)
        assert (record["host"], record["pid"]) == (socket.gethostname(), os.getpid())
    finally:
        held.release()


def test_heartbeat_keeps_the_lock_live_and_a_stalled_owner_loses_it(tmp_path, frozen_clock):
    path = tmp_path / "run.lock"
    first = acquire(path, stale_after=60)
    assert first.interval == 6.0  # ten beats per stale_after
    first._stop.set()  # the test beats by hand from here on
    first._thread.join()
    os.utime(path, (frozen_clock - 59, frozen_clock - 59))  # a beat 59 s ago: still live
    with pytest.raises(RunBusy):
        acquire(path, stale_after=60)
    os.utime(path, (frozen_clock - 61, frozen_clock - 61))  # silent for longer than stale_after...
    first.beat()  # ...until it beats again
    assert read_owner(path).heartbeat_age < 60
    with pytest.raises(RunBusy):
        acquire(path, stale_after=60)
    os.utime(path, (frozen_clock - 61, frozen_clock - 61))  # its heartbeat stalls (a frozen node)
    second = acquire(path, stale_after=60)  # same pid (alive): taken over on the heartbeat alone
    with pytest.raises(RunBusy, match="was taken over by"):
        first.verify()  # the stalled trainer finds out before it writes another row
    second.verify()
    first.beat()  # not its lock any more: a late beat leaves the new owner's lock alone
    first.release()
    assert lock_record(path)["token"] == second.token
    second.release()
    assert not path.exists()


RACER = """
import sys, time
from pathlib import Path
from resexp.run.lock import RunBusy, acquire
lock, go, me = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
folder = go.parent
(folder / f"ready-{me}").touch()
while not go.exists():
    time.sleep(0.001)
try:
    held = acquire(lock)
except RunBusy:
    (folder / f"said-{me}").write_text("busy")
else:
    (folder / f"said-{me}").write_text("won")
    while not (folder / "release").exists():  # hold it until every other racer has tried
        time.sleep(0.01)
    held.release()
"""


def wait_for_files(paths: list[Path], procs, within_s: float = 120) -> None:
    deadline = time.monotonic() + within_s
    while not all(p.exists() for p in paths):
        # a loser exits once it has said so; a racer that failed exits non-zero
        assert time.monotonic() < deadline and all(proc.poll() in (None, 0) for proc in procs), "a racer got lost"
        time.sleep(0.01)


def test_of_four_takers_of_a_stale_lock_exactly_one_wins(tmp_path):
    lock = write_lock(tmp_path, pid=dead_pid())
    go = tmp_path / "go"
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(lock), str(go), str(k)],
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
              for k in range(4)]
    try:
        wait_for_files([tmp_path / f"ready-{k}" for k in range(4)], racers)  # all four waiting
        go.touch()
        wait_for_files([tmp_path / f"said-{k}" for k in range(4)], racers)
        said = sorted((tmp_path / f"said-{k}").read_text() for k in range(4))
        (tmp_path / "release").touch()
        assert [proc.wait(timeout=60) for proc in racers] == [0, 0, 0, 0]
    finally:
        for proc in racers:
            proc.kill()
    assert said == ["busy", "busy", "busy", "won"]
    assert not lock.exists()  # the winner's lock, released; no loser left one


def test_a_takeover_in_progress_leaves_the_run_busy(tmp_path):
    lock = write_lock(tmp_path, pid=dead_pid())
    with open(lock, "r+b") as taker:  # another taker is removing the stale lock right now
        fcntl.flock(taker, fcntl.LOCK_EX)
        with pytest.raises(RunBusy, match="is being taken over by another trainer"):
            acquire(lock)
    held = acquire(lock)  # that taker is gone (its flock with it, however it ended)
    try:
        assert lock_record(lock)["token"] == held.token
    finally:
        held.release()


def test_the_lock_names_the_slurm_job(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4200")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    held = acquire(tmp_path / "run.lock")
    try:
        assert lock_record(tmp_path / "run.lock")["job"] == "4200_7"
        assert "(SLURM job 4200_7)" in read_owner(tmp_path / "run.lock").describe()
    finally:
        held.release()


# --------------------------------------------------------------------------- train, sweep, status
def test_two_trainers_started_together_log_every_epoch_once(tmp_path):
    args = [sys.executable, "-m", "resexp", "train", "--out", "out", *TINY, "train.epochs=6",
            "train.milestones=[4]"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    done = [(proc.wait(timeout=300), *proc.communicate()) for proc in procs]
    assert [int(r["epoch"]) for r in rows(Path("out/resnet-8-s0"))] == [1, 2, 3, 4, 5, 6]
    codes = sorted(code for code, _, _ in done)
    assert codes in ([0, 0], [0, 2])  # the second finds it running (2), or finished (0)
    for code, stdout, stderr in done:
        if code == 2:
            lines = [line for line in stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("error: out/resnet-8-s0 is being trained by host")
            assert stdout == ""
    assert not Path("out/resnet-8-s0/run.lock").exists()


def test_sweep_leaves_a_run_trained_elsewhere_and_status_names_its_owner(tmp_path, monkeypatch, capsys,
                                                                         frozen_clock):
    out = tmp_path / "out"
    write_lock(out / "plain-8-s0", pid=os.getppid(), host="gpu-node-3", age=2, job="991_0")
    code, stdout, stderr = cli(monkeypatch, capsys, "sweep", "--archs", "plain,resnet", "--depths", "8",
                               "--out", out, *SWEEP_TINY)
    assert code == 0, stderr
    assert stdout.strip() == f"sweep {out}: 1 done, 1 running elsewhere"
    assert "plain-8-s0 skipped: " in stderr and "host gpu-node-3" in stderr
    assert not (out / "plain-8-s0" / "metrics.csv").exists()  # not trained here
    assert len(rows(out / "resnet-8-s0")) == 3

    write_lock(out / "plain-8-s0", pid=os.getppid(), host="gpu-node-3", age=2, job="991_0")  # still beating
    code, stdout, _ = cli(monkeypatch, capsys, "status", out)
    assert code == 0
    line = next(line for line in stdout.splitlines() if line.strip().startswith("plain-8-s0"))
    assert "running" in line and "host gpu-node-3 pid" in line
    assert "(SLURM job 991_0), heartbeat 2s ago" in line, line  # exactly: the clock is frozen


def test_a_stale_run_is_shown_and_then_taken_over(tmp_path, monkeypatch, capsys, frozen_clock):
    out = tmp_path / "out"
    assert cli(monkeypatch, capsys, "train", "--out", out, *TINY, "train.epochs=1")[0] == 0
    run = out / "resnet-8-s0"
    summary = (run / "summary.json").read_text()
    (run / "summary.json").write_text(summary.replace('"status": "done"', '"status": "running"'))
    # a trainer on a node that froze after its last epoch, and its half-written file
    write_lock(run, pid=4711, host="gpu-node-3", age=301, stale_after=300)
    (run / ".summary.json.123.tmp").write_text("half a file")
    code, stdout, _ = cli(monkeypatch, capsys, "status", out)
    line = stdout.splitlines()[1].strip()
    assert line.split()[:2] == ["resnet-8-s0", "stale"] and "host gpu-node-3 pid 4711, heartbeat 301s ago" in line
    code, _, stderr = cli(monkeypatch, capsys, "train", "--out", out, *TINY, "train.epochs=1", "train.lr=0.05")
    assert code == 2 and "train.lr: 0.1 -> 0.05" in stderr  # settings are checked before the lock
    code, stdout, stderr = cli(monkeypatch, capsys, "train", "--out", out, *TINY, "train.epochs=1")
    assert code == 0, stderr
    assert stdout.startswith("done: ")
    assert [int(r["epoch"]) for r in rows(run)] == [1]
    assert not (run / ".summary.json.123.tmp").exists() and not (run / "run.lock").exists()


HOLDER = """
import sys, threading
from pathlib import Path
from resexp.run.lock import acquire
acquire(Path(sys.argv[1]))
print("held", flush=True)
threading.Event().wait()
"""


def test_a_run_whose_trainer_was_killed_on_this_host_reads_as_stopped(tmp_path, monkeypatch, capsys, frozen_clock):
    """kill PID of a trainer leaves its lock with a fresh heartbeat: that owner is known to be
    gone, so the run is partial (the next train or sweep resumes it), not stale."""
    out = tmp_path / "out"
    run = make_run(out, "plain", 8, 0, [50.0], status="running", epochs_planned=3)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run / "run.lock")], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    try:
        assert holder.stdout.readline() == "held\n"  # it holds the lock
        code, stdout, _ = cli(monkeypatch, capsys, "status", out)
        assert stdout.splitlines()[1].split()[:2] == ["plain-8-s0", "running"] and f"pid {holder.pid}" in stdout
        holder.kill()
        holder.wait()
    finally:
        holder.kill()
    assert (run / "run.lock").exists()
    code, stdout, _ = cli(monkeypatch, capsys, "status", out)
    line = stdout.splitlines()[1]
    assert code == 0 and line.split()[:2] == ["plain-8-s0", "partial"], stdout
    assert f"its trainer (pid {holder.pid}) has ended" in line and "stale" not in stdout and "heartbeat" not in line


# --------------------------------------------------------------------------- a lock that could never go stale
def test_inert_escapes_what_would_drive_a_terminal_or_reorder_text():
    shown = inert("node\x1b[2J\x07\n\u202eevil\u2066x\u2069 é 漢")
    assert shown == "node\\x1b[2J\\x07\\n\\u202eevil\\u2066x\\u2069 é 漢"
    assert shown.isprintable()


# stale_after values no lock may hold, as they read in the file
BAD_STALE_AFTER = {"Infinity": math.inf, "NaN": math.nan, "-5": -5, "1e+300": 1e300, '"300"': "300"}


def plant(run: Path, how: str) -> Path:
    """A run.lock a received folder may hold, each written by a live process on another host."""
    lock = run / "run.lock"
    if how == "future":
        return write_lock(run, pid=os.getppid(), host="other-node", age=-3600)
    if how == "symlink":
        target = write_lock(run.parent / "elsewhere", pid=os.getppid(), host="other-node")
        run.mkdir(parents=True, exist_ok=True)
        lock.symlink_to(target)
        return lock
    if how == "directory":
        (lock / "x").mkdir(parents=True)
        return lock
    return write_lock(run, pid=os.getppid(), host="other-node", age=10 ** 6, stale_after=BAD_STALE_AFTER[how])


NEVER_STALE = {**{how: f"has stale_after {how}, not a number of seconds in (0, 86400]" for how in BAD_STALE_AFTER},
               "future": "has its heartbeat 3600s in the future", "symlink": "is a symbolic link",
               "directory": "is not a regular file"}


@pytest.mark.parametrize("how", NEVER_STALE)
def test_a_lock_that_could_never_go_stale_is_damage_never_taken_over(tmp_path, frozen_clock, how):
    lock = plant(tmp_path / "run", how)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(DamagedFile, match=re.escape(f"{NEVER_STALE[how]}; remove it if no trainer is running")):
        acquire(lock)
    owner = read_owner(lock)
    assert (owner.live, owner.stale, owner.damage) == (False, False, NEVER_STALE[how])
    assert sorted(p.name for p in tmp_path.rglob("*")) == before and (lock.is_symlink() or lock.exists())


def test_status_and_sweep_say_how_to_clear_a_lock_that_could_never_go_stale(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    lock = write_lock(out / "plain-8-s0", pid=os.getppid(), host="node\x1b]0;owned\x07\u202eevil\n", age=10 ** 6,
                      stale_after=math.inf)
    code, stdout, stderr = cli(monkeypatch, capsys, "status", out)
    assert code == 0 and stdout.splitlines()[1].split()[:2] == ["plain-8-s0", "damaged"], stdout
    assert f"remove {lock} if no trainer is running" in stderr
    assert "host node\\x1b]0;owned\\x07\\u202eevil\\n pid" in stdout  # the owner, inert
    assert not any(c in stdout + stderr for c in "\x1b\x07\u202e")

    code, stdout, stderr = cli(monkeypatch, capsys, "sweep", "--archs", "plain", "--depths", "8", "--out", out,
                               *SWEEP_TINY)
    assert code == 2 and stdout.strip() == f"sweep {out}: 1 damaged", stdout + stderr
    said = [line for line in stderr.splitlines() if "run.lock" in line]
    assert said == [f"plain-8-s0 is damaged: run.lock has stale_after Infinity, not a number of seconds in "
                    f"(0, 86400]; remove {lock} if no trainer is running"], stderr
    assert "elsewhere" not in stdout + stderr and lock.exists()


def test_a_stale_after_no_lock_could_hold_is_refused(tiny_cfg):
    for value in ("inf", "1e9"):
        with pytest.raises(UserError, match="train.stale_after must be > 0 and <= 86400"):
            tiny_cfg(f"train.stale_after={value}")
