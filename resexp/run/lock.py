"""One trainer per run folder, on any host: a lock file naming its owner, with a heartbeat.

``<run>/run.lock`` is created with ``O_CREAT | O_EXCL``: of several processes creating it
at once, on one host or on several sharing the folder (NFS v3 and later), exactly one
succeeds. It holds its owner as JSON, so that ``resexp status`` can name the run's trainer
(a flock names no one); its modification time is the heartbeat, refreshed by a thread of
the owner every ``stale_after / 10`` seconds. A lock is stale, and is taken over, when its
owner is gone: silent for longer than its ``stale_after`` (hosts sharing a folder keep
their clocks in step to well within it), dead on this host, or this very SLURM job before
SLURM requeued it. A lock that could never go stale is damage: it is never taken over, and
the user removes it.

The one guard: a taker removes a stale lock only while it holds a flock on that very file,
else a slower taker could remove the lock a faster one has just made in its place.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import stat
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from resexp.errors import UserError
from resexp.run.files import DamagedFile
from resexp.run.text import inert
from resexp.settings.schema import MAX_STALE_AFTER

LOCK_FILE = "run.lock"
DEFAULT_STALE_AFTER = 300.0
CLOCK_SKEW = 60.0  # how far ahead of ours another host's clock may set a heartbeat
MAX_BYTES = 4096  # a record takes about 250; a larger file is no record


class RunBusy(UserError):
    """The run is being trained by another live process (the message names it)."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine; one that has exited and is not yet
    reaped (a zombie, seen on Linux) does not."""
    if pid <= 0:  # 0 and below address process groups
        return False
    try:
        os.kill(pid, 0)  # sends nothing
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def pid_namespace() -> str | None:
    """This process's pid namespace (Linux): a pid names the same process only within one."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def this_job() -> tuple[str | None, int]:
    """This SLURM job ('<array job>_<task>' in an array; None outside SLURM) and how often
    SLURM has requeued it."""
    env = os.environ.get
    array, task, restarts = (env(k, "") for k in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"))
    job = f"{array}_{task}" if array and task else env("SLURM_JOB_ID") or None
    return job, int(restarts) if restarts.isdigit() else 0


def wall_clock() -> float:
    """The time heartbeats are measured against; tests put a fixed clock here instead of waiting."""
    return time.time()


@dataclass(frozen=True)
class Owner:
    """A run's lock as its file says. ``stale``: it may be taken over; ``ended``: its process
    ran on this host, in this pid namespace, and is gone; ``damage``: why the lock could
    never go stale (it is then neither live nor stale)."""
    path: Path
    host: str | None
    pid: int | None
    job: str | None
    token: str | None
    heartbeat_age: float
    stale: bool
    ended: bool
    damage: str | None

    @property
    def live(self) -> bool:
        return not self.stale and self.damage is None

    def describe(self) -> str:
        """'host node7 pid 4711 (SLURM job 99_3), heartbeat 5s ago', inert whatever the file
        holds; or that its process has ended."""
        if self.ended:
            return f"its trainer (pid {self.pid}) has ended"
        job = f" (SLURM job {inert(self.job)})" if self.job else ""
        beat = "" if self.damage else f", heartbeat {self.heartbeat_age:.0f}s ago"
        return f"host {inert(self.host or '?')} pid {'?' if self.pid is None else self.pid}{job}{beat}"


def read_owner(path: Path) -> Owner | None:
    """The lock at ``path``; None when there is none. A record that cannot be read (its
    creator was killed before writing it) is an unknown owner, stale by its age alone."""
    raw = b""
    try:
        info = path.lstat()
        if stat.S_ISREG(info.st_mode):  # never read through a link, nor a FIFO that blocks
            with open(path, "rb") as file:
                raw = file.read(MAX_BYTES)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        data = None
    data = data if isinstance(data, dict) else {}
    host, job, token = (data.get(k) if isinstance(data.get(k), str) else None for k in ("host", "job", "token"))
    pid, restarts = (data.get(k) if type(data.get(k)) is int else None for k in ("pid", "restarts"))
    age, stale_after = wall_clock() - info.st_mtime, data.get("stale_after", DEFAULT_STALE_AFTER)
    damage = _damage(info.st_mode, stale_after, age)
    here = host == socket.gethostname() and data.get("pidns") == pid_namespace()
    ended = not damage and here and pid is not None and not pid_alive(pid)
    job_now, restarts_now = this_job()
    requeued = job is not None and job == job_now and restarts is not None and restarts < restarts_now
    stale = not damage and (ended or requeued or age > stale_after)
    return Owner(path, host, pid, job, token, max(0.0, age), stale, ended, damage)


def _damage(mode: int, stale_after, age: float) -> str | None:
    """Why the lock could never go stale, or None."""
    if not stat.S_ISREG(mode):
        return "is a symbolic link" if stat.S_ISLNK(mode) else "is not a regular file"
    if type(stale_after) not in (int, float) or not 0 < stale_after <= MAX_STALE_AFTER:
        return (f"has stale_after {inert(json.dumps(stale_after))[:40]}, not a number of seconds "
                f"in (0, {MAX_STALE_AFTER:g}]")
    return f"has its heartbeat {-age:.0f}s in the future" if age < -CLOCK_SKEW else None


def _create(path: Path, record: dict) -> bool:
    """Create the file holding ``record``; False if it exists already."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        with open(fd, "w") as file:
            file.write(json.dumps(record) + "\n")
    except OSError:
        path.unlink(missing_ok=True)  # a disk too full for the record: leave no lock behind
        raise
    return True


def _take_over(path: Path) -> None:
    """Remove the lock at ``path`` if it is stale, holding a flock on it (released by the
    kernel however the taker ends). RunBusy while another taker holds that flock."""
    # O_RDWR: over NFS an exclusive flock is granted only to a file open for writing
    with contextlib.suppress(FileNotFoundError), open(os.open(path, os.O_RDWR | os.O_NOFOLLOW), "rb") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusy(f"{path.parent} is being taken over by another trainer") from None
        owner = read_owner(path)
        # still the file flocked: a faster taker may have replaced it since it was opened
        if owner is not None and owner.stale and os.path.samestat(os.fstat(held.fileno()), path.lstat()):
            path.unlink()


class Lock:
    """A held run lock: the thread that beats its heartbeat, the check that it is still ours,
    and its release."""

    def __init__(self, path: Path, record: dict):
        self.path, self.record, self.token = path, record, record["token"]
        self.interval = record["stale_after"] / 10
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {path.parent.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def _ours(self) -> bool:
        owner = read_owner(self.path)
        return owner is not None and owner.token == self.token

    def beat(self) -> None:
        """Refresh the heartbeat while the lock is ours (on NFS the server's clock sets it)."""
        try:
            if self._ours():
                os.utime(self.path)
        except OSError:
            pass  # a slow or briefly unreachable filesystem: the next beat tries again

    def verify(self) -> None:
        """RunBusy if another process has taken the run over (this one was silent for longer
        than stale_after). A lock removed by hand is made again."""
        owner = read_owner(self.path)
        if owner is None and _create(self.path, self.record):
            return
        owner = owner or read_owner(self.path)
        if owner is None or owner.token != self.token:
            who = owner.describe() if owner else "another process"
            raise RunBusy(f"{self.path.parent} was taken over by {who}; this trainer stopped")

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        if self._ours():
            self.path.unlink(missing_ok=True)


def acquire(path: Path, stale_after: float = DEFAULT_STALE_AFTER) -> Lock:
    """Hold the lock at ``path``: create it, or take over a stale one. RunBusy while a live
    process holds it; DamagedFile if it could never go stale; OSError if the folder cannot
    be written."""
    job, restarts = this_job()
    record = {"host": socket.gethostname(), "pid": os.getpid(), "pidns": pid_namespace(), "job": job,
              "restarts": restarts, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "stale_after": float(stale_after), "token": uuid.uuid4().hex}
    for _ in range(100):  # each pass creates the lock, or finds its owner, or removes a stale lock
        if _create(path, record):
            return Lock(path, record)
        owner = read_owner(path)
        if owner is None:
            continue  # released in between
        if owner.damage:
            raise DamagedFile(path, f"{owner.damage}; remove it if no trainer is running")
        if owner.live:
            raise RunBusy(f"{path.parent} is being trained by {owner.describe()}")
        _take_over(path)
    raise OSError(f"could not take the lock {path}: it kept changing")
