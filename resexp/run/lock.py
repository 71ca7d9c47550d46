"""One trainer per run folder, on any host: a lock file naming its owner, with a heartbeat.

``<run>/run.lock`` is created with ``O_CREAT | O_EXCL``: of several processes creating
it at once, on one host or on several hosts sharing the folder (NFS v3 and later),
exactly one succeeds. It holds its owner as JSON (host, pid, SLURM job id, start
time, how long it may stay silent); its modification time is the heartbeat, which a
daemon thread of the owner refreshes every ``stale_after / 10`` seconds while it trains.

A lock is *stale*, and may be taken over, when its owner is gone: no heartbeat for
``stale_after`` seconds (as the owner declared it), or the owner lived on this host,
in this pid namespace, and its pid is dead, or the owner was this same SLURM job before
SLURM requeued it (the lock records the job's restart count). Taking over is serialised by a second
file created the same way (``run.lock.takeover``), so of two processes that find the
same stale lock exactly one replaces it; the other then finds the new, live lock.
Heartbeat ages compare the file's time with this host's clock: hosts sharing a folder
must keep their clocks in step (NTP) to well within ``stale_after``.

Why not ``flock``/``fcntl`` locks (or the filelock package, which uses them): such a lock
says only *that* a file is locked, not by whom, so ``resexp status`` could not name the
host, pid and job of a running run, nor how long ago it was last heard from. And across
hosts they depend on the network filesystem's lock service (on NFS, the NLM daemon or
v4 state; Linux clients mounted with ``local_lock`` keep them local to one host), where
a file that exists looks the same from every host.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from resexp.errors import UserError

LOCK_FILE = "run.lock"
DEFAULT_STALE_AFTER = 300.0
# A takeover holds its guard for one read and one unlink: a guard this old was left by a
# process killed in between.
GUARD_STALE_AFTER = 30.0


class RunBusy(UserError):
    """The run is being trained by another live process (``owner`` says which)."""

    def __init__(self, message: str, owner: Owner | None = None):
        super().__init__(message)
        self.owner = owner


def pid_alive(pid) -> bool:
    """Whether a process with this id runs on this machine (signal 0 checks, sends nothing)."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:  # os.kill(0, ...) would address our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    except OverflowError:
        return False
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A process that has exited but was not yet reaped (Linux): dead for our purposes."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]


def pid_namespace() -> str | None:
    """This process's pid namespace (Linux): a pid means the same process only within one."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def slurm_job_id() -> str | None:
    """'<array job>_<task>' in a SLURM array task, '<job>' in another SLURM job, else None."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


def slurm_restarts() -> int:
    """How often SLURM has requeued this job (its time limit, preemption, a failed node)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return 0


def _earlier_run_of_this_job(data: dict) -> bool:
    """The lock was taken by this very SLURM job before it was requeued: a job runs in one
    place at a time, so that owner is gone, on whichever node it ran (its pid tells
    nothing there, and its heartbeat may be only seconds old)."""
    job, restarts = data.get("job"), data.get("restarts")
    return (job is not None and job == slurm_job_id() and isinstance(restarts, int)
            and restarts < slurm_restarts())


@dataclass(frozen=True)
class Owner:
    """Who holds a run's lock, as its lock file says, and how long ago it was last heard from."""
    host: str | None
    pid: int | None
    job: str | None
    started: str | None
    stale_after: float
    heartbeat_age: float  # seconds since the owner last refreshed the lock
    pid_dead: bool        # the owner lived on this host, in this pid namespace, and is gone
                          # (or was this SLURM job before its requeue)
    token: str | None     # unique per claim: tells a lock from its successor
    identity: tuple       # (inode, content): this very lock file, not a later one at the same path

    @property
    def stale(self) -> bool:
        return self.pid_dead or self.heartbeat_age > self.stale_after

    def who(self) -> str:
        """'host node7 pid 4711 (SLURM job 99_3)'."""
        job = f" (SLURM job {self.job})" if self.job else ""
        return f"host {self.host or '?'} pid {self.pid if self.pid is not None else '?'}{job}"

    def describe(self) -> str:
        """who(), and when it was last heard from."""
        return f"{self.who()}, heartbeat {self.heartbeat_age:.0f}s ago"


def wall_clock() -> float:
    """The time lock ages are measured against (the lock file's mtime is the heartbeat);
    tests put a fixed clock here instead of waiting."""
    return time.time()


def read_owner(path: Path) -> Owner | None:
    """The owner of the lock at ``path``; None when there is no lock. A lock whose content
    cannot be read (its creator was killed before writing it) has an unknown owner and
    becomes stale by its age alone."""
    try:
        info = path.stat()
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    data = data if isinstance(data, dict) else {}
    pid = data.get("pid") if isinstance(data.get("pid"), int) else None
    host = data.get("host") if isinstance(data.get("host"), str) else None
    stale_after = data.get("stale_after")
    if not isinstance(stale_after, (int, float)) or isinstance(stale_after, bool) or stale_after <= 0:
        stale_after = DEFAULT_STALE_AFTER
    here = host == socket.gethostname() and data.get("pidns") == pid_namespace()
    return Owner(host=host, pid=pid, job=_str(data.get("job")), started=_str(data.get("started")),
                 stale_after=float(stale_after), heartbeat_age=max(0.0, wall_clock() - info.st_mtime),
                 pid_dead=(here and pid is not None and not pid_alive(pid)) or _earlier_run_of_this_job(data),
                 token=_str(data.get("token")), identity=(info.st_ino, raw))


def _str(value) -> str | None:
    return value if isinstance(value, str) else (str(value) if isinstance(value, int) else None)


def _create(path: Path, record: dict) -> bool:
    """Create the lock holding ``record``; False if a lock exists already."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
        os.fsync(fd)
    except OSError:
        os.close(fd)
        path.unlink(missing_ok=True)  # a disk too full for the record: leave no lock behind
        raise
    os.close(fd)
    return True


def _break(path: Path, stale: Owner) -> None:
    """Remove the lock at ``path`` if it is still the stale one read before, under a guard,
    so that two takers cannot both remove it (the second would remove the first's new lock)."""
    guard = path.with_name(path.name + ".takeover")
    try:
        os.close(os.open(guard, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        try:
            if time.time() - guard.stat().st_mtime > GUARD_STALE_AFTER:
                guard.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        time.sleep(0.05)  # another taker is at work: look again once it is done
        return
    try:
        now = read_owner(path)
        if now is not None and now.identity == stale.identity and now.stale:
            path.unlink(missing_ok=True)
    finally:
        guard.unlink(missing_ok=True)


class Lock:
    """A held run lock: its heartbeat thread, a check that it is still ours, and its release."""

    def __init__(self, path: Path, record: dict):
        self.path, self.record = path, record
        self.interval = record["stale_after"] / 10
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {path.parent.name}", daemon=True)
        self._thread.start()

    @property
    def token(self) -> str:
        return self.record["token"]

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        """Refresh the lock's heartbeat if it is still ours (the thread does, every interval)."""
        try:
            owner = read_owner(self.path)
            if owner is not None and owner.token == self.token:
                os.utime(self.path)  # on NFS the server's clock: one time base for every host
        except OSError:
            pass  # a slow or briefly unreachable filesystem: try again at the next beat

    def verify(self) -> None:
        """RunBusy if another process has taken this run over (after our heartbeat stalled
        for longer than stale_after). A lock file deleted by hand is created again."""
        owner = read_owner(self.path)
        if owner is None and _create(self.path, self.record):
            return
        owner = owner or read_owner(self.path)
        if owner is None or owner.token != self.token:
            who = owner.describe() if owner else "another process"
            raise RunBusy(f"{self.path.parent} was taken over by {who}; this trainer stopped", owner)

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        owner = read_owner(self.path)
        if owner is not None and owner.token == self.token:
            self.path.unlink(missing_ok=True)


def acquire(path: Path, stale_after: float = DEFAULT_STALE_AFTER) -> Lock:
    """Hold the lock at ``path``: create it, or take over a stale one. RunBusy if a live
    process holds it. OSError if the folder cannot be written."""
    record = {"host": socket.gethostname(), "pid": os.getpid(), "pidns": pid_namespace(),
              "job": slurm_job_id(), "restarts": slurm_restarts(),
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "stale_after": float(stale_after), "token": uuid.uuid4().hex}
    for _ in range(10_000):  # each pass creates the lock, or finds an owner, or breaks a stale lock
        if _create(path, record):
            return Lock(path, record)
        owner = read_owner(path)
        if owner is None:
            continue  # released in between: try again
        if not owner.stale:
            raise RunBusy(f"{path.parent} is being trained by {owner.describe()}", owner)
        _break(path, owner)
    raise OSError(f"could not take the lock {path}: it kept changing")
