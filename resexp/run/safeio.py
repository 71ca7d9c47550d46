"""Writes into a results folder that never follow a symbolic link out of it.

A results folder may come from someone else (copied, shared on a cluster disk), and a
link planted in it (``report.md -> ~/.bashrc``, ``figures -> /elsewhere``) must not
turn a resexp command into a write somewhere else. So every writer of a run or sweep
folder goes through here:

- a replace writes a fresh temporary file (created exclusively, never through a link)
  and renames it over the target: a link standing there is replaced, not followed;
- an append opens the file with O_NOFOLLOW: a link there is refused;
- a folder written into must be a real folder, not a link (``real_dir``).

The folder the user names on the command line is theirs to choose (it may well be a
link to a scratch disk); what is checked is everything inside it.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import time
from pathlib import Path

from resexp.errors import UserError

# A temporary file older than this was left by a writer that is gone (a write takes
# seconds); a younger one may belong to a live process on another host.
STALE_TMP_S = 3600.0


class LinkRefused(UserError):
    """A write would have gone through a symbolic link."""

    def __init__(self, path: Path):
        super().__init__(f"{path} is a symbolic link; resexp does not write through links in a results "
                         f"folder (remove it, or move the folder aside)")
        self.path = Path(path)

    def __reduce__(self):  # keeps the path when a worker process hands it back
        return LinkRefused, (self.path,)


def real_dir(path: Path) -> Path:
    """``path`` as a folder to write into: created if missing; LinkRefused if it is a link."""
    path = Path(path)
    if os.path.islink(path):
        raise LinkRefused(path)
    path.mkdir(parents=True, exist_ok=True)
    if os.path.islink(path):  # made a link between the check and the mkdir
        raise LinkRefused(path)
    return path


def tmp_name(path: Path) -> Path:
    """The temporary file of this process for ``path`` (two writers never share one)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _create_exclusive(path: Path) -> int:
    """A new file, opened for writing; whatever stands at ``path`` (a temporary file left by a
    killed process of the same pid, a planted link) is removed first, never written through."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        return os.open(path, flags, 0o644)
    except FileExistsError:
        os.unlink(path)  # removes a link itself, not what it points to
        return os.open(path, flags, 0o644)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` at once: write a hidden temporary file, then rename it
    over ``path`` (a link at ``path`` is replaced by the file, its target left alone). The
    temporary file is removed if the write fails."""
    atomic_copy(path, io.BytesIO(data))


def atomic_copy(path: Path, source) -> None:
    """atomic_write of what the binary file object ``source`` holds, read in chunks."""
    path = Path(path)
    if os.path.islink(path.parent) and path.parent.name:
        raise LinkRefused(path.parent)
    tmp = tmp_name(path)
    try:
        fd = _create_exclusive(tmp)
        with os.fdopen(fd, "wb") as f:
            shutil.copyfileobj(source, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # cleaning up is best effort (it may never have been made)
            tmp.unlink()
        raise


def append(path: Path, data: bytes) -> None:
    """Append ``data`` in one write (whole lines stay whole); LinkRefused if ``path`` is a link."""
    path = Path(path)
    if os.path.islink(path.parent) and path.parent.name:
        raise LinkRefused(path.parent)
    with os.fdopen(_open_no_follow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _open_no_follow(path: Path, flags: int) -> int:
    """os.open without following a link at ``path``: LinkRefused if it is one."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, 0o644)
    except OSError:
        if os.path.islink(path):  # ELOOP on Linux, EMLINK on some BSDs
            raise LinkRefused(path) from None
        raise


def overwrite(path: Path, data: bytes) -> None:
    """Write ``data`` over the existing file ``path`` in place (no new blocks for the name);
    LinkRefused if it is a link."""
    with os.fdopen(_open_no_follow(path, os.O_RDWR), "r+b") as f:
        f.write(data)
        f.truncate()
        os.fsync(f.fileno())


def clean_tmp(folder: Path, name: str) -> None:
    """Remove the temporary files of ``name`` in ``folder`` that no live writer can own: links
    (resexp never makes one), this process's own, and those older than STALE_TMP_S."""
    for tmp in Path(folder).glob(f".{name}.*.tmp"):
        with contextlib.suppress(OSError):  # cleaning up is best effort
            mine = tmp == tmp_name(Path(folder) / name)
            if os.path.islink(tmp) or mine or time.time() - tmp.lstat().st_mtime > STALE_TMP_S:
                tmp.unlink()
