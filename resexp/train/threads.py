"""How many CPU threads a run computes with, decided once at its start, and why.

Each intra-op operation of torch on the CPU waits for all of its threads: on cores others
use, a run on every core went 6-50x slower than on one (docs/benchmarks.md). So a CPU run
takes the cores it may use less those others keep busy at its start, and keeps that count:
it orders floating-point sums, and numbers must not depend on when a load came and went.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

NOISE = 0.25  # cores of others' load ignored (daemons, a shell); more takes a core from the run
CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Threads:
    """A thread count, the rule that set it (user | slurm | workers | gpu | cores) and why."""
    count: int
    policy: str
    why: str

    def record(self) -> dict:
        return {"torch_threads": self.count, "threads_policy": self.policy, "threads_why": self.why}


def cgroup_cpus(root: Path = CGROUP) -> float | None:
    """This cgroup's CPU quota in cores (v2, else v1), or None: a container sees all the host's cores."""
    for files in (["cpu.max"], ["cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us"]):  # "max" and -1: none
        try:
            quota, period = " ".join((root / f).read_text() for f in files).split()[:2]
            return int(quota) / int(period) if quota != "max" and int(quota) > 0 else None
        except (OSError, ValueError, ZeroDivisionError):
            continue
    return None


def cpus() -> set[int]:
    """The CPUs this process may run on: its affinity mask (taskset, cpusets), or all of them."""
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def usable_cores(environ: Mapping = os.environ, affinity: set[int] | None = None, cgroup: Path = CGROUP) -> int:
    """The fewest of: the CPUs of the affinity mask, the cgroup quota rounded up, SLURM_CPUS_PER_TASK."""
    slurm = environ.get("SLURM_CPUS_PER_TASK", "")
    quota = cgroup_cpus(cgroup)
    limits = [len(cpus() if affinity is None else affinity), math.ceil(quota) if quota else math.inf,
              int(slurm) if slurm.isdigit() else math.inf]
    return max(1, min(limits))


def others_busy(mask: set[int], seconds: float = 0.3, stat: Path = Path("/proc/stat"),
                own: Callable[[], float] = lambda: sum(os.times()[:2]), sleep=time.sleep) -> float | None:
    """Cores others kept busy on the CPUs of ``mask`` over ``seconds``: /proc/stat's busy time less
    this process's own CPU time (unlike the load average, a sweep's previous run is not others'), or None."""
    def busy() -> float:  # cpuN user nice system idle iowait irq softirq steal ...: all but idle and iowait
        rows = [line.split() for line in stat.read_text().splitlines() if line[:3] == "cpu" and line[3].isdigit()]
        ticks = sum(sum(map(int, r[1:9])) - int(r[4]) - int(r[5]) for r in rows if int(r[0][3:]) in mask)
        return ticks / os.sysconf("SC_CLK_TCK") - own()

    try:
        before, start = busy(), time.perf_counter()
        sleep(seconds)
        return max(0.0, busy() - before) / max(seconds, time.perf_counter() - start)  # a sleep can overrun
    except (OSError, ValueError, IndexError, AttributeError):  # no /proc (macOS), no sysconf (Windows)
        return None


def decide(user: int | None, jobs: int = 1, device_type: str = "cpu", environ: Mapping = os.environ,
           affinity: set[int] | None = None, cgroup: Path = CGROUP,
           others: Callable[[set[int]], float | None] = others_busy) -> Threads:
    """The count of one of ``jobs`` runs at once: the user's, a SLURM job's, a worker's share,
    torch's own on a GPU (the CPU only queues kernels), else the usable cores less others'."""
    affinity = cpus() if affinity is None else affinity
    cores, slurm = usable_cores(environ, affinity, cgroup), environ.get("SLURM_CPUS_PER_TASK", "0")
    if user:
        return Threads(int(user), "user", f"train.threads={user}")
    if slurm.isdigit() and int(slurm) > 0:
        return Threads(int(slurm), "slurm", f"SLURM_CPUS_PER_TASK={slurm}: the job's own cores")
    if jobs > 1:
        return Threads(max(1, cores // jobs), "workers", f"{jobs} runs at once share {cores} usable cores")
    if device_type != "cpu":
        import torch

        return Threads(torch.get_num_threads(), "gpu", "torch's default: the CPU only launches the GPU's work")
    taken = others(affinity) if cores > 1 else 0.0  # one core: nothing to measure
    count = cores if taken is None else max(1, min(cores, len(affinity) - math.ceil(max(0.0, taken - NOISE))))
    load = "unknown (no /proc/stat)" if taken is None else f"{taken:.1f} of {len(affinity)} CPUs"
    return Threads(count, "cores", f"{cores} usable core{'s' * (cores > 1)}, others kept {load} busy at its start")
