"""A real stop of a real training process: run resexp in a fresh interpreter, let it reach
a chosen point, send it a signal, and wait for it to end.

The process waits at that point (signal.pause) after writing a readiness file, so the
signal always lands in the same place, without a sleep:

- ``live``: inside the last epoch, at iteration ``at`` (a multiple of train.log_every),
  before the loggers get that iteration's live means: the usual stop, mid-epoch;
- ``saved``: epoch ``at`` is checkpointed but its row not yet handed to the loggers: the
  worst place for a kill, as the checkpoint covers a row no logger has.

``how``: ``train`` runs `resexp train` (SIGTERM, Ctrl-C and SIGKILL as a user or a batch
system sends them); ``job`` runs the SLURM job callable (resexp.sweep.slurm.TrainJob)
under submitit's own signal handler, so SIGUSR2 checkpoints and requeues it as on a
cluster (submitit's local environment: the requeue is exit code 144 instead of scontrol).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

STOPPER = r"""
import os, signal, sys
from pathlib import Path

ready, how, where, at, args = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]
signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, even where the test runner ignores SIGINT

from resexp.inside.monitor import Monitor

def wait_here():
    tmp = ready.with_name(ready.name + ".tmp")
    tmp.write_text(str(os.getpid()))
    os.rename(tmp, ready)
    while True:
        signal.pause()  # returns only to run a handler, which raises (or never: SIGKILL)

if where == "live":
    real_live = Monitor.live
    def live(self, iteration, scalars):
        if iteration == at:
            wait_here()
        real_live(self, iteration, scalars)
    Monitor.live = live
else:
    real_epoch, real_saved = Monitor.epoch, Monitor.saved
    def epoch(self, row, last):
        self.stop_here = row["epoch"] == at
        real_epoch(self, row, last)
    def saved(self):
        if getattr(self, "stop_here", False):
            wait_here()
        real_saved(self)
    Monitor.epoch, Monitor.saved = epoch, saved

if how == "train":
    from resexp.cli import entry
    sys.argv = ["resexp", "train", *args]
    entry()
else:
    from omegaconf import OmegaConf
    from submitit.core.utils import DelayedSubmission, JobPaths
    from submitit.local.local import LocalJobEnvironment
    from resexp.settings.compose import load_config
    from resexp.sweep.slurm import TrainJob

    out, overrides = args[1], args[2:]  # args: --out OUT overrides...
    job = TrainJob(OmegaConf.to_yaml(load_config(overrides)), out)
    delayed = DelayedSubmission(job)
    delayed.set_timeout(60, 3)
    os.environ.update(SUBMITIT_LOCAL_JOB_ID="1", SUBMITIT_LOCAL_NTASKS="1", SUBMITIT_LOCAL_JOB_NUM_NODES="1",
                      SUBMITIT_LOCAL_NODEID="0", SUBMITIT_LOCAL_GLOBALID="0", SUBMITIT_LOCAL_LOCALID="0")
    paths = JobPaths(Path(out) / ".submitit", "1", 0)
    paths.folder.mkdir(parents=True, exist_ok=True)
    LocalJobEnvironment()._handle_signals(paths, delayed)
    job()
"""


def stopped(tmp: Path, args: list[str], sig: int, how: str = "train", where: str = "live", at: int = 10,
            env: dict | None = None, within_s: float = 300) -> subprocess.CompletedProcess:
    """Run resexp (``args``: `resexp train`'s) until it waits at ``where``/``at``, send ``sig``,
    and return the ended process (returncode, stdout, stderr)."""
    ready = tmp / f"ready-{sig}-{where}"
    proc = subprocess.Popen([sys.executable, "-c", STOPPER, str(ready), how, where, str(at), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + within_s
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                out, err = proc.communicate()
                raise AssertionError(f"the run never reached {where} {at} (exit {proc.returncode}): {err[-3000:]}")
            time.sleep(0.02)
        os.kill(int(ready.read_text()), sig)
        out, err = proc.communicate(timeout=within_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

