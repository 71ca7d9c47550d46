"""How many CPU threads a run computes with, and why.

Every intra-op operation of torch on the CPU waits for all of its threads. On a machine
whose cores others are using, one descheduled thread stalls each of thousands of small
operations per step: a run with as many threads as cores then went 6-50x slower than
the same run on one thread (docs/benchmarks.md, "Threads on a busy machine"). Idle, the
cores' parallelism pays (about 1.4x for resnet-20 at batch 32 on 2 cores). So the count
is measured, not assumed: where the user left ``train.threads`` null, a CPU run times a
few forward passes of a copy of its own model at one thread, at all usable cores, and at
the cores the load average leaves free, alternated, and takes the fewest threads within
10% of the fastest. A count that falls behind is stopped mid-pass, so the probe costs
about two passes on one thread however busy the cores are. The choice and its timings
go into summary.json. Between epochs the count changes where the load it was chosen for
has changed (``Recheck``): an epoch that trained at under half the speed of the fastest
since the choice lowers it to the cores others leave free (or, with none taken, measures
it again), and a load average that now leaves more cores free than before, while the run
uses fewer than all, measures it again (others left).

The count changes the order of floating-point sums, so a run's numbers depend on it;
``train.threads`` set by the user (or a sweep's worker share, a SLURM job's cores) is
used as it is, without a probe.
"""

from __future__ import annotations

import math
import os
import time
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

PROBE_BUDGET_S = 2.0  # the probe stops alternating after this (each count timed at least once)
PROBE_ROUNDS = 3      # at most this many timings of each count; the fastest of each is compared
MARGIN = 1.1          # more threads must be at least this much faster to be taken
GIVE_UP = 2.0         # a count is stopped at this many times the best so far, and not timed again
SLOWER = 2.0          # an epoch this many times slower than the fastest since the choice re-measures it


@dataclass(frozen=True)
class Choice:
    """A thread count, the rule that set it (user | workers | slurm | probe | gpu) and why."""
    threads: int
    policy: str
    why: str

    def record(self) -> dict:
        return {"threads_policy": self.policy, "threads_why": self.why}


class _Process:
    """torch's thread count is process state; what chose it is kept beside it, so that
    summary.json can say why (environment.py). ``pending`` is a count a launcher decided
    for the next run (task.py); setup() takes it."""
    pending: Choice | None = None
    current: Choice | None = None


def cgroup_cpus(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in cores (v2 cpu.max, v1 cfs quota), or None
    where there is none. A container limited to 2 cores still sees all the host's cores."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def affinity_cores() -> int:
    """Cores this process may run on (its affinity mask: taskset, cpusets, SLURM's binding)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def usable_cores(environ=None, affinity: int | None = None, quota: float | None = None,
                 quota_known: bool = False) -> int:
    """The fewest of: the affinity mask, the cgroup CPU quota (rounded up) and a SLURM
    job's SLURM_CPUS_PER_TASK."""
    environ = os.environ if environ is None else environ
    limits = [affinity if affinity is not None else affinity_cores()]
    quota = quota if quota_known else cgroup_cpus()
    if quota:
        limits.append(max(1, math.ceil(quota)))
    slurm = environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        limits.append(int(slurm))
    return max(1, min(limits))


def candidates(cores: int, load: float | None) -> list[int]:
    """Thread counts worth timing: one, every usable core, and the cores the 1-minute load
    average leaves free (others' runnable processes)."""
    free = cores if load is None else max(1, min(cores, round(cores - load)))
    return sorted({1, free, cores})


def probe(time_step: Callable[[int, float], float], counts: list[int], budget_s: float = PROBE_BUDGET_S,
          clock: Callable[[], float] = time.perf_counter) -> Choice:
    """Time ``time_step(n, limit)`` (seconds of one pass on n threads, or inf where it was
    stopped after ``limit`` seconds) for each count in turn, up to PROBE_ROUNDS rounds or
    ``budget_s``; the fewest threads within MARGIN of the fastest win. A count is stopped,
    and not timed again, once it takes GIVE_UP times the best so far: on busy cores many
    threads can take seconds a pass, and waiting for it would cost more than the probe
    saves. The first timing of each count holds warm-up costs; the fastest of each is
    compared."""
    best: dict[int, float] = {}
    stopped: dict[int, float] = {}
    start, live = clock(), list(counts)
    for _ in range(PROBE_ROUNDS):
        for n in list(live):
            limit = GIVE_UP * min(best.values()) if best else math.inf
            seconds = time_step(n, limit)
            if seconds > limit:
                stopped[n] = limit
                live.remove(n)
            else:
                best[n] = min(best.get(n, math.inf), seconds)
        if clock() - start > budget_s or len(live) < 2:
            break
    fastest = min(best.values())
    threads = min(n for n, s in best.items() if s <= fastest * MARGIN)
    timings = [(n, f"{1000 * s:.0f} ms") for n, s in best.items() if n not in stopped]
    timings += [(n, f"over {1000 * s:.0f} ms (stopped)") for n, s in stopped.items()]
    text = ", ".join(f"{n} thread{'s' if n > 1 else ''} {t}" for n, t in sorted(timings))
    return Choice(threads, "probe", f"fastest forward pass of a short probe: {text}")


class _TooSlow(Exception):
    pass


def model_timer(step, batch: int, shape: tuple[int, ...], classes: int):
    """``time_step(n, limit)``: one forward pass (with autograd recording, as in training,
    in the step's autocast and memory layout) of a copy of ``step``'s model on n threads, on
    a fixed random batch (its own generator: the
    run's random stream is untouched); stopped between two layers once it has taken
    ``limit`` seconds (then inf). The backward pass runs the same kind of kernels, twice
    over: the forward alone ranks the counts at a third of the cost."""
    import torch
    import torch.nn.functional as F

    copy = deepcopy(step.model).train()
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, *shape, generator=gen), torch.randint(classes, (batch,), generator=gen)
    x = step.layout(x)
    deadline = [math.inf]

    def check(*_):
        if time.perf_counter() > deadline[0]:
            raise _TooSlow

    for m in copy.modules():
        if not any(True for _ in m.children()):
            m.register_forward_pre_hook(check)

    def time_step(n: int, limit: float = math.inf) -> float:
        torch.set_num_threads(n)
        begin = time.perf_counter()
        deadline[0] = begin + limit
        try:
            with step.autocast():
                F.cross_entropy(copy(x).float(), y).item()
        except _TooSlow:
            return math.inf
        return time.perf_counter() - begin

    return time_step


def choose(user_threads: int | None, device_type: str, time_step_for: Callable[[], Callable[[int], float]],
           cores: int | None = None, load: float | None = None) -> Choice:
    """The thread count of a run (not yet applied): the one its config or its launcher set,
    else on the CPU the probe's, else (a GPU run: the CPU only queues kernels) torch's."""
    import torch

    pending, _Process.pending = _Process.pending, None
    if user_threads:
        if pending is not None and pending.threads == user_threads:
            return pending
        return Choice(int(user_threads), "user", f"train.threads={user_threads}")
    if device_type != "cpu":
        return Choice(torch.get_num_threads(), "gpu", "torch's default: the CPU only launches the GPU's work")
    cores = usable_cores() if cores is None else cores
    if load is None:
        load = _load_average()
    counts = candidates(cores, load)
    if counts == [1]:
        return Choice(1, "probe", "1 usable core")
    return probe(time_step_for(), counts)


class Recheck:
    """Measures a probed count again between epochs (fit() calls ``after_epoch``) when the
    load it was chosen for has changed, in either direction:

    - an epoch trained at under 1/SLOWER of the speed of the fastest epoch since the count
      was chosen: many threads may have collapsed. Where others' load now takes cores, the
      run goes down to the cores it leaves free without a probe: the stalls of a collapse
      come in bursts that a probe of a few short passes can miss (on a KVM Xeon, two probes
      after collapsed epochs timed 2 threads faster and kept them, and the next epochs
      collapsed again). Otherwise the count is measured again;
    - the run uses fewer threads than its usable cores, and the 1-minute load average of
      others (less this run's own threads) now leaves more cores free than the fewest it
      left since the last measurement: others left.

    Each measurement restarts both baselines, so a lasting change is measured once, not at
    every epoch. A count the user, a launcher's share or a SLURM job set is never measured
    again, and neither is a run with one usable core. ``time_step_for()`` gives the probe's
    timer (``model_timer``); ``cores`` and ``load`` are injected by tests."""

    def __init__(self, time_step_for: Callable[[], Callable[[int, float], float]], cores: int | None = None,
                 load: Callable[[], float | None] | None = None):
        self._time_step_for = time_step_for
        self._cores = usable_cores() if cores is None else cores
        self._load = load or _load_average
        self._fastest = 0.0
        self._fewest_free = self._free(own=0)

    def _free(self, own: int) -> int:
        """Cores the others' load leaves free (``own``: this run's threads, in the load average)."""
        load = self._load()
        return self._cores if load is None else max(1, min(self._cores, round(self._cores - max(0.0, load - own))))

    def after_epoch(self, epoch: int, images_per_s: float) -> dict | None:
        """After ``epoch``, which trained at ``images_per_s``: None, or the record of a new
        measurement (applied already): {"after_epoch", "threads", "was", "why"}."""
        choice = _Process.current
        if choice is None or choice.policy != "probe" or self._cores < 2 or not images_per_s > 0:
            return None
        free = self._free(own=choice.threads)
        if images_per_s * SLOWER < self._fastest:
            reason = f"epoch {epoch} trained at {images_per_s / self._fastest:.2f}x the speed of the fastest before it"
            if free < choice.threads:  # others took cores: the stalls were real, a short probe may miss them
                return self._changed(epoch, choice, Choice(
                    free, "probe", f"lowered after epoch {epoch} ({reason}, and others' load leaves "
                                   f"{free} of {self._cores} cores free: fewer threads do not stall)"), free)
        elif choice.threads < self._cores and free > self._fewest_free:
            reason = f"the load average now leaves {free} of {self._cores} cores free (it left {self._fewest_free})"
        else:
            self._fastest = max(self._fastest, images_per_s)
            self._fewest_free = min(self._fewest_free, free)
            return None
        new = probe(self._time_step_for(), candidates(self._cores, self._cores - free))
        return self._changed(epoch, choice, Choice(
            new.threads, "probe", f"measured again after epoch {epoch} ({reason}): {new.why}"), free)

    def _changed(self, epoch: int, was: Choice, new: Choice, free: int) -> dict:
        """Apply ``new``, restart both baselines, and say what changed."""
        apply(new)
        self._fastest, self._fewest_free = 0.0, free
        return {"after_epoch": epoch, "threads": new.threads, "was": was.threads, "why": new.why}


def recheck(step, data, batch: int) -> Recheck:
    """The Recheck of a run that trains with ``step`` on ``data`` (fit())."""
    return Recheck(_timer_for(step, data, batch))


def apply(choice: Choice) -> Choice:
    import torch

    torch.set_num_threads(choice.threads)
    _Process.current = choice
    return choice


def _timer_for(step, data, batch: int) -> Callable[[], Callable[[int, float], float]]:
    """The probe's timer, built when a probe runs, for a run that trains with ``step`` on ``data``."""
    shape = (data.channels, data.image_size, data.image_size)
    return lambda: model_timer(step, batch, shape, data.num_classes)


def settle(user_threads: int | None, step, data, batch: int) -> Choice:
    """Choose and apply the thread count of a run that trains with ``step`` (its model, device,
    autocast and layout) on ``data`` (setup())."""
    return apply(choose(user_threads, step.device.type, _timer_for(step, data, batch)))


def set_for_next_run(choice: Choice) -> None:
    """A launcher's count for the run it is about to train (task.py): setup() records its
    reason instead of calling it the user's."""
    _Process.pending = choice


def current() -> Choice | None:
    """The last count resexp set in this process, and why."""
    return _Process.current


def recorded() -> dict:
    """summary.json's account of the thread count: torch's count now, and what chose it
    (None where resexp did not set it)."""
    import torch

    threads, choice = torch.get_num_threads(), _Process.current
    known = choice is not None and choice.threads == threads
    return {"torch_threads": threads, "threads_policy": choice.policy if known else None,
            "threads_why": choice.why if known else None}


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
