"""The local launcher: a sweep's runs trained on this machine, one after another in this
process, or ``jobs`` at a time, each in a worker process of its own.

Every run goes through the run task (task.py). Workers are multiprocessing Processes, one
per run, watched through their sentinels: a worker that dies (kill -9, the OOM killer, a
segfault in a kernel) ends as a failed, resumable run while the others go on, where one
dead worker of a Pool or a ProcessPoolExecutor would break the whole pool. On the CPU they
fork from multiprocessing's fork server, which imported torch once (worker_context); where
there are GPUs they are spawned. A worker ends with the sweep, Ctrl-C and kill -9 included.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import ClassVar, Mapping

from omegaconf import OmegaConf
from rich.console import Console, Group
from rich.live import Live
from rich.progress import Progress

from resexp.process import exit_quickly
from resexp.run.state import Status
from resexp.sweep.task import sweep_progress, train_run


@dataclass
class LocalLauncher:
    """The launcher (launch.Launcher) that trains on this machine, ``jobs`` runs at a time."""

    jobs: int
    type: ClassVar[str] = "local"
    interrupted: ClassVar[str] = "interrupted: finished epochs are saved; rerun the same command to continue"

    def dry_run(self, runs, out: Path) -> None:
        """Nothing to show beyond the plan: the runs train here."""
        return None

    def launch(self, runs, out: Path, console: Console) -> dict[str, Status]:
        """Train the runs; a failed run is recorded and the sweep goes on. Returns {run name:
        final status}."""
        overall, task = sweep_progress(console, runs)
        jobs = min(self.jobs, len(runs))
        if jobs > 1:
            return _parallel(runs, out, console, overall, task, jobs)
        return _serial(runs, out, console, overall, task)


def _serial(todo, out: Path, console: Console, overall: Progress, task) -> dict[str, Status]:
    from resexp.train.loop import make_progress

    progress, spent, statuses = make_progress(console), 0.0, {}
    # The overall line sits above the per-epoch bar, both in one live display.
    with Live(Group(overall, progress), console=console, transient=True, refresh_per_second=4):
        for k, r in enumerate(todo, 1):
            overall.update(task, description=f"sweep: run {k} of {len(todo)} ({r.name})")
            per_iter = r.cost_s / max(r.iterations - r.iterations_done, 1)
            tick = lambda it, r=r, base=spent, per_iter=per_iter: overall.update(  # noqa: E731
                task, completed=base + per_iter * (it - r.iterations_done))
            statuses[r.name] = train_run(r.cfg, out, console, progress, tick, origin=r.origin, planned=r.state)
            spent += r.cost_s
            overall.update(task, completed=spent)
    return statuses


def visible_gpus(environ: Mapping[str, str], count: int) -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries: the entries of its
    own CUDA_VISIBLE_DEVICES (indices or UUIDs) if set, else 0 .. count-1."""
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(count)]
    return [d.strip() for d in listed.split(",") if d.strip()][:count]


def gpu_slots(cfgs, jobs: int, count: int) -> list[str] | None:
    """The CUDA_VISIBLE_DEVICES of each of ``jobs`` worker slots (the ``count`` visible GPUs
    in turn: --jobs 8 on 4 GPUs puts two workers on each), or None where no run picks its
    GPU itself (train.device auto or cuda): CPU runs, and runs the user pinned to one device (cuda:N)."""
    devices = {c.train.device for c in cfgs}
    if count == 0 or not devices & {"auto", "cuda"} or any(d.startswith("cuda:") for d in devices):
        return None
    gpus = visible_gpus(os.environ, count)
    return [gpus[k % len(gpus)] for k in range(jobs)]


def _parallel(todo, out: Path, console: Console, overall: Progress, task, jobs: int) -> dict[str, Status]:
    """``jobs`` runs at a time, each in its own worker. On CUDA a worker takes a free
    slot's GPU (gpu_slots); on the CPU each gets its share of the cores (task.py)."""
    import torch  # only to count GPUs; the workers import it themselves

    gpus = torch.cuda.device_count()
    slots = gpu_slots([r.cfg for r in todo], jobs, gpus)
    ctx = worker_context(gpus)
    waiting, running, statuses = list(todo), {}, {}
    free = list(range(jobs))
    where = f" on GPU {','.join(dict.fromkeys(slots))}" if slots else ""
    try:
        with overall:
            overall.update(task, description=f"sweep: {len(todo)} runs, {jobs} at a time{where}")
            while waiting or running:
                while waiting and free:
                    r, slot = waiting.pop(0), free.pop(0)
                    proc, conn = _start(ctx, r, out, jobs, slots[slot] if slots else None)
                    running[proc.sentinel] = (proc, conn, r, slot)
                for sentinel in wait(list(running)):
                    proc, conn, r, slot = running.pop(sentinel)
                    proc.join()
                    statuses[r.name] = _outcome(r, proc, conn, console)
                    free.append(slot)
                    overall.advance(task, r.cost_s)
    finally:  # Ctrl-C or an error: stop the other runs too (they resume from their last epoch)
        for proc, *_ in running.values():
            proc.terminate()
        for proc, *_ in running.values():
            proc.join()
    return statuses


# What a fork server imports once for every worker it forks (worker_context).
PRELOAD = ["torch", "torch._dynamo", "resexp.sweep.local", "resexp.train.loop"]


def worker_context(gpus: int):
    """How workers start. With no GPU, forked from a fork server that imported torch, its
    compiler (which every optimizer imports) and the trainer once: a worker is ready at once
    where a spawned one spent about 5 s on those imports (docs/benchmarks.md). Where there
    are GPUs, spawned, the start CUDA documents: each worker sets CUDA_VISIBLE_DEVICES before
    CUDA starts. Either way a worker runs in the sweep's current folder, sys.path and
    environment (_worker sets the last)."""
    if gpus:
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _start(ctx, r, out: Path, jobs: int, gpu: str | None):
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker, args=(OmegaConf.to_yaml(r.cfg), str(out), jobs, gpu, dict(os.environ), send,
                                             r.origin, r.state),
                       name=f"resexp {r.name}")
    proc.start()
    send.close()  # the worker holds the only sending end: a dead worker reads as EOF here
    return proc, receive


def _worker(cfg_yaml: str, out: str, jobs: int, gpu: str | None, environ: dict, conn, origin, planned) -> None:
    """One run in a worker process: no progress bars (they would interleave), only the
    per-epoch lines, each a whole line on stderr. Hands back its status through ``conn``."""
    threading.Thread(target=_end_with_sweep, name="sweep watch", daemon=True).start()
    # multiprocessing passes no environment: a forked worker would have its fork server's, from its start.
    os.environ.clear()
    os.environ.update(environ)
    if gpu is not None:  # before torch starts CUDA
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    console = Console(stderr=True, soft_wrap=True)
    cfg = OmegaConf.create(cfg_yaml)
    if gpu is not None:
        console.print(f"{origin.name}: GPU {gpu}")
    try:
        conn.send(str(train_run(cfg, Path(out), console, jobs=jobs, origin=origin, planned=planned)))
    except KeyboardInterrupt:
        pass  # the sweep was interrupted: it stops every worker and says so once
    except BaseException as err:  # CannotWrite (a full disk) included: the sweep reports it
        conn.send(err)
    conn.close()
    # Its status is sent: run the atexit functions (multiprocessing's forked child skips them) and skip
    # torch's teardown (a spawned one's would take about 1.2 s).
    exit_quickly(0, quick=True)


def _end_with_sweep() -> None:
    """End this worker as soon as the sweep has ended (kill -9 included), so that no run
    goes on training unseen and a rerun of the sweep finds it free to resume."""
    # No standard part ends a child with its parent, and Linux's PR_SET_PDEATHSIG would watch the
    # fork server, which outlives the sweep while any worker lives: wait on the sweep's sentinel.
    multiprocessing.parent_process().join()
    os._exit(1)


def _outcome(r, proc, conn, console: Console) -> Status:
    """What a finished worker handed back; a worker that died without a word ended its
    run as failed (recorded in summary.json) and resumable."""
    try:
        result = conn.recv() if conn.poll() else None
    except (EOFError, OSError):
        result = None
    finally:
        conn.close()
    if isinstance(result, BaseException):
        raise result
    if result is not None:
        return Status(result)
    why = f"its worker process died (exit code {proc.exitcode})"
    console.print(f"[red]{r.name} failed: {why}; rerun the sweep to resume it from its last epoch")
    r.run.record_lost(why, proc.pid)
    return Status.FAILED
