"""Worker processes that die with the process that started them.

A sweep's ``--jobs`` workers train for hours. If the sweep is killed (``kill -9``
included, which no handler in the sweep can see), its workers must stop too:
otherwise they go on training behind the user's back, and rerunning the sweep, as
the way to resume it, finds their runs busy. Each worker asks the kernel for SIGKILL
when its parent dies (Linux's PR_SET_PDEATHSIG, set through ctypes since the
standard library has no call for it), and a watchdog thread checks the parent's pid
twice a second as well (other systems; and a parent gone before the signal was armed).
A worker forked by a fork server (the CPU's --jobs) is the server's child, so it watches
the sweep's pid itself (die_with). A killed worker leaves its run as a kill at any moment
does: the next sweep resumes it.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import threading

from resexp.run.lock import pid_alive

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with(pid: int, poll_s: float = 0.5) -> None:
    """For a worker forked by a fork server, whose parent is the server, not the sweep (and
    the server lives as long as any worker does): the worker is killed when the process
    ``pid`` ends, watched through a pidfd (readable once it has ended, before it is reaped),
    or by polling its pid where there is none."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # gone already
        os.kill(os.getpid(), signal.SIGKILL)
    except (AttributeError, OSError):  # not Linux 5.3+: poll
        fd = None
    threading.Thread(target=_watch_pid, args=(pid, fd, poll_s), name="sweep watchdog", daemon=True).start()


def _watch_pid(pid: int, fd: int | None, poll_s: float) -> None:
    if fd is not None:
        select.select([fd], [], [])
    else:
        stop = threading.Event()
        while pid_alive(pid):
            stop.wait(poll_s)
    os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent(parent_pid: int, poll_s: float = 0.5) -> None:
    """Call first thing in a worker (a multiprocessing.Pool initializer): from then on the
    worker is killed when the process ``parent_pid`` ends."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl: the watchdog alone
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=_watch, args=(parent_pid, poll_s), name="parent watchdog", daemon=True).start()


def _watch(parent_pid: int, poll_s: float) -> None:
    stop = threading.Event()
    while not stop.wait(poll_s):
        if os.getppid() != parent_pid:  # reparented: the parent is gone
            os.kill(os.getpid(), signal.SIGKILL)
