"""One sweep's settings per results folder: the check of a folder's saved sweep and the
save of this sweep's are one step, under an exclusive lock on the folder's parent (so a
sweep that stops at a mistake creates nothing); a sweep that trains holds a shared lock
on <out>/.sweep.active until it ends.

So of two sweeps started at once on one folder with different settings, the second sees
the first's sweep.yaml and that it is training, and is refused in one line; sweeps with
the same settings share the folder (each run is still trained once: its own lock). Both
are flock(2) locks, which the kernel releases when their process ends, however it ends,
so a killed sweep never leaves one behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path
from typing import Callable, Iterator

from resexp.errors import UserError

ACTIVE_LOCK = ".sweep.active"
WAIT_S = 120.0  # the longest a sweep waits for another to finish planning (a plan takes seconds)


def _open(path: Path, create: bool = True) -> int:
    """The lock file, never through a link planted in a received folder."""
    flags = (os.O_RDWR | os.O_CREAT if create else os.O_RDONLY) | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o644)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.EISDIR):
            raise UserError(f"cannot lock {path}: {err.strerror} (a link or a folder there is not a lock file)") \
                from None
        raise UserError(f"cannot write to {path.parent}: {err.strerror or err}") from None


@contextlib.contextmanager
def planning(out: Path) -> Iterator[Callable[[], bool]]:
    """Hold a lock on the nearest existing folder above ``out`` while a sweep reads the
    folder's saved sweep and saves its own (nothing is created for it: a sweep that stops
    at a mistake leaves no trace); yields ``others_training()``: whether another sweep
    trains in ``out`` now."""
    anchor = Path(os.path.abspath(out)).parent
    while not anchor.is_dir() and anchor != anchor.parent:
        anchor = anchor.parent
    try:
        fd = os.open(anchor, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise UserError(f"cannot write to {out}: {err.strerror or err}") from None
    start = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - start > WAIT_S:
                    raise UserError(f"another sweep has been planning in {out} for {WAIT_S:.0f} s; "
                                    f"try again once it has started") from None
                time.sleep(0.2)
        if os.path.lexists(out / ACTIVE_LOCK):  # a planted link is one line before anything is planned
            os.close(_open(out / ACTIVE_LOCK, create=False))
        yield lambda: _held_by_others(out / ACTIVE_LOCK)
    finally:
        os.close(fd)


def _held_by_others(path: Path) -> bool:
    if not path.exists():
        return False
    fd = _open(path, create=False)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's lock


def training(out: Path) -> int:
    """Mark this process as a sweep training in ``out`` (a shared lock held until the process
    ends or the returned descriptor is closed)."""
    fd = _open(out / ACTIVE_LOCK)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd
