"""How a resexp process ends: the command and each sweep worker, quickly once torch is in."""

from __future__ import annotations

import atexit
import os
import sys
import threading


def exit_quickly(code, quick: bool | None = None) -> None:
    """End the process as Python would, without tearing down every module: once torch and
    its compiler are imported that teardown alone takes about 1.2 s on a 2-core machine
    (docs/benchmarks.md), a tenth of a dry run. Non-daemon threads are joined and the
    atexit functions run (multiprocessing's, logging's, the loggers'), stdout and stderr
    are flushed, then os._exit. ``quick`` None: only where torch was imported."""
    if code is not None and not isinstance(code, int):  # sys.exit("text") prints it, exit 1
        print(code, file=sys.stderr)
        code = 1
    # Kept: `resexp sweep --dry-run` ends 0.10-0.18 s after main() with it, 1.16-2.41 s without (3 trials, 2026-12-06).
    if not (("torch" in sys.modules) if quick is None else quick):
        sys.exit(code)
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (resexp ... | head): nothing more to say
            pass
    os._exit(code or 0)
