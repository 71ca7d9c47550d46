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
from hydra.errors import HydraException
from omegaconf import OmegaConf
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from resexp.data import iters_per_epoch, open_dataset
from resexp.errors import UserError
from resexp.models.footprint import check_fits, device_of
from resexp.run import safeio
from resexp.run.folder import CannotWrite, DamagedFile, RunBusy, RunDir, RunState, run_name
from resexp.run import bounded_yaml
from resexp.settings import trust
from resexp.settings.compose import config_groups, extra_config_dirs, load_config, merge_overrides, parse_overrides
from resexp.sweep.estimate import fit_line, measured_points, run_seconds, timed_points
from resexp.sweep.gpus import round_robin, start_worker, visible_gpus
from resexp.train.loop import fit, make_progress, pick_device
from resexp.train.schedule import make_schedule

SWEEP_FILE = "sweep.yaml"
# The sweep's axes: each combination is one run folder <arch>-<depth>-s<seed>.
GRID = {"model.arch": "archs", "model.depth": "depths", "seed": "seeds"}


@dataclass
class SweepSpec:
    archs: list[str]
    depths: list[int]
    seeds: list[int]
    overrides: list[str] = field(default_factory=list)
    config_dirs: list[str] = field(default_factory=list)
    # launcher=... / launcher.KEY=...: how this invocation trains the runs, not what the
    # sweep is, so they are not saved in sweep.yaml.
    launcher: list[str] = field(default_factory=list)

    def to_yaml(self) -> str:
        return yaml.safe_dump({"archs": self.archs, "depths": self.depths, "seeds": self.seeds,
                               "overrides": self.overrides, "config_dirs": self.config_dirs},
                              sort_keys=False)

    def run_config(self, arch: str, depth: int, seed: int | None = None):
        """The validated config of one run of this sweep. Whether it fits this host's
        device is checked only where it trains here (not for SLURM jobs)."""
        seed = self.seeds[0] if seed is None else seed
        cfg = load_config([*self.overrides, *self.launcher, f"model.arch={arch}", f"model.depth={depth}",
                           f"seed={seed}"], self.config_dirs, check_memory=False)
        if cfg.launcher.type == "local":
            check_fits(cfg, device_of(cfg.train.device))
        return cfg


@dataclass
class PlannedRun:
    arch: str
    depth: int
    seed: int
    cfg: object
    run: RunDir
    state: str          # RunDir.state()'s status: new | partial | running | done | ...
    epochs_done: int
    epochs_planned: int
    iterations_done: int
    iterations: int     # planned total
    cost_s: float = 0.0  # estimated seconds still to train (estimate.py)
    detail: RunState | None = None  # everything RunDir.state() found

    @property
    def to_train(self) -> bool:
        return self.detail.trainable


def _check_items(values: list, what: str) -> list:
    if not values:
        raise UserError(f"{what} is empty")
    dupes = sorted({v for v in values if values.count(v) > 1}, key=str)
    if dupes:
        raise UserError(f"{what} lists {', '.join(map(str, dupes))} more than once")
    return values


def parse_list(text: str | None, kind, what: str) -> list | None:
    """'20,56,110' -> [20, 56, 110]; an empty, repeated or malformed item is one clear error."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",")]
    if any(not t for t in items):
        raise UserError(f"--{what} has an empty item: {text!r}")
    try:
        values = [kind(t) for t in items]
    except ValueError:
        raise UserError(f"--{what} must be a comma-separated list of {kind.__name__}s, got {text!r}") from None
    return _check_items(values, f"--{what}")


def split_grid(overrides: Sequence[str]) -> tuple[dict[str, list], list[str]]:
    """The sweep axes given as Hydra overrides (``model.depth=20,56,110``,
    ``seed=range(0,3)``, or a single value) apart from the other overrides.
    Read by Hydra's own parser; sweeping any other key is an error, since a run
    folder is named by (arch, depth, seed) only."""
    grid, rest = {}, []
    for o in parse_overrides(overrides):
        name = GRID.get(o.key_or_group)
        if name is None:
            if o.is_sweep_override():
                raise UserError(f"{o.input_line}: only model.arch, model.depth and seed can take several "
                                f"values (run folders are <arch>-<depth>-s<seed>); use one --out per value")
            rest.append(o.input_line)
            continue
        try:
            values = list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()]
        except HydraException:  # interval(a,b): a range of numbers, not a list of runs
            raise UserError(f"{o.input_line}: {o.key_or_group} takes a list or range(), not an interval") from None
        kind = str if name == "archs" else int
        if not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
            raise UserError(f"{o.input_line}: {o.key_or_group} takes {kind.__name__}s")
        grid[name] = _check_items(values, o.key_or_group)
    return grid, rest


SAVED_TYPES = {"archs": str, "depths": int, "seeds": int, "overrides": str, "config_dirs": str}


def _saved(out: Path | None) -> dict:
    """The settings saved in <out>/sweep.yaml; {} if there is none. UserError if it is damaged
    (safe_load also refuses tags that would run code, such as !!python/object, and
    bounded_yaml a file that expands past any settings file's size)."""
    path = out / SWEEP_FILE if out is not None else None
    if path is None or not path.exists():
        return {}
    try:
        saved = bounded_yaml.load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as err:
        reason = f"not valid YAML ({type(err).__name__})" if not isinstance(err, bounded_yaml.TooLarge) else str(err)
    else:
        reason = _saved_problem(saved)
        if reason is None:
            return {**saved, "path": path}
    raise UserError(f"{path} is damaged ({reason}); fix it, or delete it and give --archs, --depths, "
                    f"--seeds and the overrides again")


def _saved_problem(saved) -> str | None:
    """What is wrong with a parsed sweep.yaml (save_spec writes every key; config_dirs is
    newer, so an older file may lack it), or None."""
    if not isinstance(saved, dict):
        return "it is empty" if saved is None else f"it holds a {type(saved).__name__}, not a mapping"
    keys, needed = set(saved), set(SAVED_TYPES) - {"config_dirs"}
    if not needed <= keys <= set(SAVED_TYPES):
        return f"it holds {', '.join(map(str, saved)) or 'no keys'}, not {', '.join(SAVED_TYPES)}"
    for key, value in saved.items():
        kind = SAVED_TYPES[key]
        if not isinstance(value, list) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
            return f"{key} is not a list of {kind.__name__}s"
    try:
        parse_overrides(saved["overrides"])
    except UserError as err:
        return f"an override does not parse: {err}"
    return None


def _merged(saved: dict, overrides: list[str], config_dirs) -> tuple[list[str], list[str]]:
    """Overrides and config folders of a saved sweep, extended by the new ones. What the
    saved file may not decide (paths, code, the launcher: resexp.settings.trust) must be
    given again on the command line."""
    if saved:
        given = {o.key_or_group for o in parse_overrides(overrides)}
        trust.check_saved_overrides(saved["path"], parse_overrides(saved["overrides"]), given, config_groups())
        trust.check_saved_dirs(saved["path"], saved.get("config_dirs", []), extra_config_dirs(config_dirs))
    dirs = [str(Path(d).expanduser().resolve()) for d in [*saved.get("config_dirs", []), *config_dirs]]
    return merge_overrides(saved.get("overrides", []), overrides), list(dict.fromkeys(dirs))


def is_launcher_override(override: str) -> bool:
    return override.split("=")[0].lstrip("+~").split(".")[0] == "launcher"


def resolve_spec(archs, depths, seeds, overrides: Sequence[str], out: Path | None,
                 config_dirs=()) -> tuple[SweepSpec, Path]:
    """What to sweep and where. A folder's saved sweep.yaml is extended, never
    replaced: new overrides apply on top of the saved ones (a result-affecting
    change then stops at the clash check), and --config-dir folders are kept.
    Axes come from --archs/--depths/--seeds or sweep syntax, else the saved
    sweep, else the experiment's ``sweep:`` defaults."""
    grid, rest = split_grid(overrides)
    flags = {"archs": archs, "depths": depths, "seeds": seeds}
    for name, values in grid.items():
        if flags[name] is not None:
            raise UserError(f"--{name} and {next(k for k, v in GRID.items() if v == name)}= both given; use one")
        flags[name] = values
    launcher = [o for o in rest if is_launcher_override(o)]
    rest = [o for o in rest if not is_launcher_override(o)]
    saved = _saved(out)
    merged, dirs = _merged(saved, rest, config_dirs)
    base = load_config([*merged, *launcher], dirs, check_memory=False)
    if out is None:
        out = Path("results") / base.name
        saved = _saved(out)
        merged, dirs = _merged(saved, rest, config_dirs)
    pick = lambda key: flags[key] if flags[key] is not None else saved.get(key) or list(base.sweep[key])  # noqa: E731
    return SweepSpec(pick("archs"), pick("depths"), pick("seeds"), merged, dirs, launcher), out


def plan(spec: SweepSpec, out: Path) -> list[PlannedRun]:
    """Every run of the sweep with its config and state; validates all configs first."""
    runs = [_planned(spec.run_config(arch, depth, seed), out)
            for arch in spec.archs for depth in spec.depths for seed in spec.seeds]
    _check_same_configs(runs)
    return runs


def _check_same_configs(runs: list[PlannedRun]) -> None:
    """A run folder started under other result-affecting settings must not join this sweep:
    a finished one would be skipped as if it matched, an unfinished one would fail alone.
    One error before anything trains instead."""
    clashes = [r for r in runs if _conflicts(r)]
    if clashes:
        clashes[0].run.check_config(clashes[0].cfg, others=len(clashes) - 1)


def _conflicts(r: PlannedRun) -> list[str]:
    try:
        return r.run.config_conflicts(r.cfg)
    except DamagedFile:
        return []  # its state says damaged: the sweep reports it and leaves it alone


def _planned(cfg, out: Path) -> PlannedRun:
    run = RunDir(out / run_name(cfg.model.arch, cfg.model.depth, cfg.seed))
    ds, t = cfg.dataset, cfg.train
    n_train = ds.train_subset or ds.train_size - ds.val_size
    sched = make_schedule(t, iters_per_epoch(n_train, t.batch_size, t.drop_last), cfg.model.depth)
    state = run.state()
    iters_done = state.last["iteration"] if state.last else 0
    return PlannedRun(cfg.model.arch, cfg.model.depth, cfg.seed, cfg, run, state.status, state.epochs,
                      sched.epochs, iters_done, sched.total_iters, detail=state)


def estimate_costs(runs: list[PlannedRun], out: Path, cfg_for=None) -> str | None:
    """Set each run's ``cost_s`` (seconds still to train) and return what the figures
    rest on. Speeds: runs already in ``out``; else, with ``cfg_for(arch, depth)``
    (SweepSpec.run_config), a few steps timed here (estimate.py); else None, and the
    costs are relative only (weights for a progress bar)."""
    todo = [r for r in runs if r.to_train]
    if not todo:
        return None
    batch = todo[0].cfg.train.batch_size
    points, timed = measured_points(out, batch), []
    for arch in dict.fromkeys(r.arch for r in todo):
        if arch not in points and cfg_for is not None:
            points[arch] = timed_points(cfg_for, arch, [r.depth for r in todo if r.arch == arch])
            timed.append(arch)
    lines = {arch: fit_line(p) for arch, p in points.items()}
    for r in todo:
        ds = r.cfg.dataset
        eval_images = (ds.test_subset or ds.test_size) + ds.val_size
        line = lines.get(r.arch, fit_line([(1, 1.0)]))  # unknown speed: depth stands in (relative)

        r.cost_s = run_seconds(line, r.depth, r.iterations - r.iterations_done,
                               r.epochs_planned - r.epochs_done, batch, eval_images)
    measured = sorted(set(points) - set(timed))
    parts = [f"speeds of the runs in {out} ({', '.join(measured)})"] if measured else []
    if timed:
        parts.append(f"{', '.join(timed)} timed for a few steps here")
    return " and ".join(parts) or None


def format_plan(runs: list[PlannedRun], basis: str | None = None) -> str:
    lines = [f"{'run':<22} {'state':<9} {'epochs':>9} {'iters':>7} {'est.':>8}"]
    for r in runs:
        lines.append(f"{r.run.path.name:<22} {r.state:<9} {f'{r.epochs_done}/{r.epochs_planned}':>9} "
                     f"{r.iterations:>7} {_hms(r.cost_s) if basis else '-':>8}")
    for r in runs:
        if r.state == "damaged":
            lines.append(f"{r.run.name} is damaged: {r.detail.problem}; {r.detail.advice}")
    todo = [r for r in runs if r.to_train]
    total = f", about {_hms(sum(r.cost_s for r in todo))} (from {basis})" if basis else ""
    lines.append(f"{len(runs)} runs, {len(todo)} to train{total}")
    return "\n".join(lines)


def check_data(runs: list[PlannedRun]) -> None:
    """Open (stage, download) each dataset the runs still to train need, once: missing data
    is then one error before anything starts, not the same failure repeated for every run."""
    seen = set()
    for r in runs:
        key = OmegaConf.to_yaml(r.cfg.dataset)
        if r.to_train and key not in seen:
            seen.add(key)
            open_dataset(r.cfg.dataset, train=True)


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def save_spec(spec: SweepSpec, out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        safeio.clean_tmp(out, SWEEP_FILE)  # left by a killed sweep, or planted links
        safeio.atomic_write(out / SWEEP_FILE, spec.to_yaml().encode())
    except OSError as err:
        raise UserError(f"cannot write to {out}: {err.strerror or err}") from err


BUSY = "running elsewhere"


def _train_one(cfg, out: Path, console: Console, progress: Progress, on_epoch=None) -> str:
    """fit() one run and return how it ended, so the sweep goes on after any one run:
    a failure is reported and recorded (by fit, in its summary.json) as 'failed'; a
    damaged file the user must see to (a corrupt checkpoint) is 'damaged'; a run another
    live process trains (on this host or another) is left to it: BUSY. A disk that
    refuses writes (full, read-only) ends the sweep: every other run would fail alike.
    Ctrl-C is not caught."""
    name = run_name(cfg.model.arch, cfg.model.depth, cfg.seed)
    try:
        return fit(cfg, out, progress=progress, console=console, on_epoch=on_epoch)["status"]
    except RunBusy as err:
        console.print(f"{name} skipped: {err}")
        return BUSY
    except CannotWrite:
        raise
    except UserError as err:
        console.print(f"[red]error: {name}: {err}")
        return "damaged"
    except Exception as err:
        console.print(f"[red]{name} failed: {type(err).__name__}: {err}")
    return "failed"


def run_sweep(runs: list[PlannedRun], out: Path, console: Console, jobs: int = 1) -> dict[str, str]:
    """Train every planned run (``jobs`` at a time); a failed run is recorded and the
    sweep goes on. Returns {run name: final status}."""
    statuses = {r.run.name: r.state for r in runs if not r.to_train}  # damaged ones: format_plan says why
    todo = [r for r in runs if r.to_train]
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
    statuses, counter = {}, ctx.Value("i", 0)
    pool = ctx.Pool(jobs, initializer=start_worker, initargs=(os.getpid(), counter, slots))
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
