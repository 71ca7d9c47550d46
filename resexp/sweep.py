"""Sweep (arch x depth x seed): one run directory each, in this process, in order.

A sweep is idempotent: finished runs are skipped, unfinished ones resume from
their checkpoints, so the same command can be stopped and rerun at any time.
Its settings are saved as ``<out>/sweep.yaml`` so ``resexp sweep --out DIR``
alone continues it.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import yaml
from omegaconf import OmegaConf
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from resexp.config import load_config
from resexp.data import iters_per_epoch, open_dataset
from resexp.errors import UserError
from resexp.gpus import pin_worker, round_robin, visible_gpus
from resexp.rundir import RunDir, atomic_write, run_name
from resexp.schedule import make_schedule
from resexp.train import fit, make_progress, pick_device

DEFAULT_EXPERIMENT = "he2016_cifar10"
SWEEP_FILE = "sweep.yaml"
# Rough CPU speed for --dry-run estimates when no finished run can calibrate it:
# ResNet-20 trains at about 1,000 28x28 images/s on 2 cores, i.e. about
# 20 layers * 784 pixels * 1000 = 1.6e7 layer-pixels per second.
CPU_LAYER_PIXELS_PER_S = 1.6e7


@dataclass
class SweepSpec:
    archs: list[str]
    depths: list[int]
    seeds: list[int]
    overrides: list[str] = field(default_factory=list)

    def to_yaml(self) -> str:
        return yaml.safe_dump({"archs": self.archs, "depths": self.depths, "seeds": self.seeds,
                               "overrides": self.overrides}, sort_keys=False)


@dataclass
class PlannedRun:
    arch: str
    depth: int
    seed: int
    cfg: object
    run: RunDir
    state: str          # new | partial | done | diverged | failed
    epochs_done: int
    epochs_planned: int
    iterations_done: int
    iterations: int     # planned total
    cost_s: float       # rough remaining seconds


def parse_list(text: str | None, kind, what: str) -> list | None:
    """'20,56,110' -> [20, 56, 110]; a bad item is one clear error."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        values = [kind(t) for t in items]
    except ValueError:
        raise UserError(f"--{what} must be a comma-separated list of {kind.__name__}s, got {text!r}") from None
    if not values:
        raise UserError(f"--{what} is empty")
    return values


def _saved(out: Path | None) -> dict:
    path = out / SWEEP_FILE if out is not None else None
    return (yaml.safe_load(path.read_text()) or {}) if path is not None and path.exists() else {}


def resolve_spec(archs, depths, seeds, overrides: Sequence[str], out: Path | None,
                 config_dirs=()) -> tuple[SweepSpec, Path]:
    """What to sweep and where: each setting comes from the command line, else the
    folder's saved sweep.yaml, else the experiment's ``sweep:`` defaults."""
    saved = _saved(out)
    overrides = list(overrides) if overrides else list(saved.get("overrides", []))
    if not any(o.split("=")[0].lstrip("+") == "experiment" for o in overrides):
        overrides.insert(0, f"experiment={DEFAULT_EXPERIMENT}")
    base = load_config(overrides, config_dirs)
    if out is None:
        out = Path("results") / base.name
        saved = _saved(out)
    pick = lambda given, key: given if given is not None else saved.get(key) or list(base.sweep[key])  # noqa: E731
    return SweepSpec(pick(archs, "archs"), pick(depths, "depths"), pick(seeds, "seeds"), overrides), out


def _calibrated_rate(out: Path) -> float | None:
    """layer-pixels/s measured by finished runs of this sweep, if any."""
    rates = []
    for summary_file in out.glob("*/summary.json"):
        rd = RunDir(summary_file.parent)
        s, rows = rd.read_summary() or {}, rd.read_rows()
        if rows and s.get("depth") and rows[-1].get("images_per_s"):
            rates.append(rows[-1]["images_per_s"] * s["depth"] * s.get("image_size", 28) ** 2)
    return sorted(rates)[len(rates) // 2] if rates else None


def plan(spec: SweepSpec, out: Path, config_dirs=()) -> list[PlannedRun]:
    """Every run of the sweep with its config and state; validates all configs first."""
    runs, rate = [], _calibrated_rate(out) or CPU_LAYER_PIXELS_PER_S
    for arch in spec.archs:
        for depth in spec.depths:
            for seed in spec.seeds:
                cfg = load_config([*spec.overrides, f"model.arch={arch}", f"model.depth={depth}",
                                   f"seed={seed}"], config_dirs)
                runs.append(_planned(cfg, out, rate))
    _check_same_configs(runs)
    return runs


def _check_same_configs(runs: list[PlannedRun]) -> None:
    """A run folder started under other result-affecting settings must not join this sweep:
    a finished one would be skipped as if it matched, an unfinished one would fail alone.
    One error before anything trains instead."""
    clashes = [r for r in runs if r.run.config_conflicts(r.cfg)]
    if clashes:
        clashes[0].run.check_config(clashes[0].cfg, others=len(clashes) - 1)


def _planned(cfg, out: Path, rate: float) -> PlannedRun:
    run = RunDir(out / run_name(cfg.model.arch, cfg.model.depth, cfg.seed))
    ds, t = cfg.dataset, cfg.train
    n_train = ds.train_subset or _known_size(ds)
    sched = make_schedule(t, iters_per_epoch(n_train, t.batch_size, t.drop_last), cfg.model.depth)
    summary, rows = run.read_summary() or {}, run.read_rows()
    state = summary.get("status") or ("partial" if rows else "new")
    if state == "running":
        state = "partial"
    if state == "partial" and not rows and not run.checkpoint.exists():
        state = "new"
    done = int(rows[-1]["epoch"]) if rows else 0
    iters_done = int(rows[-1]["iteration"]) if rows else 0
    left = 0 if state in ("done", "diverged") else max(sched.total_iters - iters_done, 0)
    pixels = ds.image_size ** 2
    cost = left * t.batch_size * cfg.model.depth * pixels / rate
    return PlannedRun(cfg.model.arch, cfg.model.depth, cfg.seed, cfg, run, state, done,
                      sched.epochs, iters_done, sched.total_iters, cost)


def _known_size(ds) -> int:
    """Training-set size for the estimate, without loading the data."""
    size = (ds.train_args or {}).get("size")
    known = {"cifar10": 50000, "cifar100": 50000, "mnist": 60000, "fashion_mnist": 60000}
    return int(size or known.get(ds.name, 50000)) - int(ds.val_size or 0)


def format_plan(runs: list[PlannedRun]) -> str:
    lines = [f"{'run':<22} {'state':<9} {'epochs':>9} {'iters':>7} {'est.':>8}"]
    for r in runs:
        lines.append(f"{r.run.path.name:<22} {r.state:<9} {f'{r.epochs_done}/{r.epochs_planned}':>9} "
                     f"{r.iterations:>7} {_hms(r.cost_s):>8}")
    todo = [r for r in runs if r.state not in ("done", "diverged")]
    lines.append(f"{len(runs)} runs, {len(todo)} to train, about {_hms(sum(r.cost_s for r in todo))} "
                 f"(rough: measured speed of finished runs, else a 2-core CPU figure)")
    return "\n".join(lines)


def check_data(runs: list[PlannedRun]) -> None:
    """Open (stage, download) each dataset the runs still to train need, once: missing data
    is then one error before anything starts, not the same failure repeated for every run."""
    seen = set()
    for r in runs:
        key = OmegaConf.to_yaml(r.cfg.dataset)
        if r.state not in ("done", "diverged") and key not in seen:
            seen.add(key)
            open_dataset(r.cfg.dataset, train=True)


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def save_spec(spec: SweepSpec, out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / SWEEP_FILE, spec.to_yaml().encode())
    except OSError as err:
        raise UserError(f"cannot write to {out}: {err.strerror or err}") from err


def _train_one(cfg, out: Path, console: Console, progress: Progress, on_epoch=None) -> str:
    """fit() one run; a failure is reported and recorded (by fit, in its summary.json) and
    returned as 'failed', so the sweep goes on. Ctrl-C is not caught."""
    name = run_name(cfg.model.arch, cfg.model.depth, cfg.seed)
    try:
        return fit(cfg, out, progress=progress, console=console, on_epoch=on_epoch)["status"]
    except UserError as err:
        console.print(f"[red]{name}: {err}")
    except Exception as err:
        console.print(f"[red]{name} failed: {type(err).__name__}: {err}")
    return "failed"


def run_sweep(runs: list[PlannedRun], out: Path, console: Console, jobs: int = 1) -> dict[str, str]:
    """Train every planned run (``jobs`` at a time); a failed run is recorded and the
    sweep goes on. Returns {run name: final status}."""
    statuses = {r.run.path.name: r.state for r in runs if r.state in ("done", "diverged")}
    todo = [r for r in runs if r.state not in ("done", "diverged")]
    overall = Progress(TextColumn("[bold cyan]{task.description}"), BarColumn(), TimeRemainingColumn(),
                       console=console, transient=True)
    # Progress is counted in estimated seconds, so the ETA weighs deep runs properly.
    task = overall.add_task("sweep", total=sum(r.cost_s for r in todo) or 1)
    if jobs > 1 and len(todo) > 1:
        statuses.update(_run_parallel(todo, out, console, overall, task, min(jobs, len(todo))))
        return statuses
    progress, spent = make_progress(console), 0.0
    # The overall line sits above the per-epoch bar, both in one live display.
    with Live(Group(overall, progress), console=console, transient=True, refresh_per_second=4):
        for k, r in enumerate(todo, 1):
            overall.update(task, description=f"sweep: run {k} of {len(todo)} ({r.run.path.name})")
            per_iter = r.cost_s / max(r.iterations - r.iterations_done, 1)
            tick = lambda it, r=r, base=spent, per_iter=per_iter: overall.update(  # noqa: E731
                task, completed=base + per_iter * (it - r.iterations_done))
            statuses[r.run.path.name] = _train_one(r.cfg, out, console, progress, tick)
            spent += r.cost_s
            overall.update(task, completed=spent)
    return statuses


def _worker(args: tuple[str, str, bool]) -> tuple[str, str]:
    """One run in a worker process: no progress bars (they would interleave), only the
    per-epoch lines, each a whole line on stderr."""
    cfg_yaml, out, pinned = args
    cfg = OmegaConf.create(cfg_yaml)
    console = Console(stderr=True, soft_wrap=True)
    name = run_name(cfg.model.arch, cfg.model.depth, cfg.seed)
    if pinned:
        console.print(f"{name}: GPU {os.environ['CUDA_VISIBLE_DEVICES']}")
    return name, _train_one(cfg, Path(out), console, Progress(disable=True))


def gpu_slots(cfgs, jobs: int, count: int) -> list[str] | None:
    """The CUDA_VISIBLE_DEVICES of each of ``jobs`` workers (the ``count`` visible GPUs in
    turn), or None where no run picks its GPU itself (train.device auto or cuda): CPU
    runs, and runs the user pinned to one device (cuda:N)."""
    devices = {c.train.device for c in cfgs}
    if count == 0 or not devices & {"auto", "cuda"} or any(d.startswith("cuda:") for d in devices):
        return None
    return round_robin(visible_gpus(os.environ, count), jobs)


def worker_config(cfg, jobs: int):
    """The config a worker runs: on the CPU, cores/jobs threads unless train.threads is set."""
    if pick_device(cfg.train.device).type != "cpu" or cfg.train.threads:
        return cfg
    return OmegaConf.merge(cfg, {"train": {"threads": max(1, (os.cpu_count() or 1) // jobs)}})


def _run_parallel(todo, out: Path, console: Console, overall: Progress, task, jobs: int) -> dict[str, str]:
    """``jobs`` runs at a time in worker processes (spawned: CUDA cannot be forked).
    On CUDA the workers take the visible GPUs in turn, one GPU each (gpu_slots); a GPU
    with several workers shares its time between them. On the CPU, workers that each
    took every core would fight (3.4x slower on 2 cores), so each gets cores/jobs
    threads (worker_config). The thread count changes the CPU's floating-point sums:
    the numbers equal those of a sequential sweep with the same train.threads."""
    cost = {r.run.path.name: r.cost_s for r in todo}
    slots = gpu_slots([r.cfg for r in todo], jobs, torch.cuda.device_count())
    args = [(OmegaConf.to_yaml(worker_config(r.cfg, jobs)), str(out), slots is not None) for r in todo]
    ctx = multiprocessing.get_context("spawn")
    pinning = {"initializer": pin_worker, "initargs": (ctx.Value("i", 0), slots)} if slots else {}
    statuses, pool = {}, ctx.Pool(jobs, **pinning)
    where = f" on GPU {','.join(dict.fromkeys(slots))}" if slots else ""
    try:
        with overall:
            overall.update(task, description=f"sweep: {len(todo)} runs, {jobs} at a time{where}")
            for name, status in pool.imap_unordered(_worker, args):
                statuses[name] = status
                overall.advance(task, cost[name])
        pool.close()
    finally:
        pool.terminate()  # Ctrl-C or an error: stop the other runs too (they resume later)
        pool.join()
    return statuses
