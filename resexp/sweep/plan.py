"""Planning a sweep (arch x depth x seed): one run folder each; what to train, at what cost.

A sweep is idempotent: finished runs are skipped, unfinished ones resume from
their checkpoints, so the same command can be stopped and rerun at any time.
Its settings are saved as ``<out>/sweep.yaml`` so ``resexp sweep --out DIR``
alone continues it.
"""

from __future__ import annotations

import copy
import numbers
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import yaml
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from resexp.data import iters_per_epoch, open_dataset
from resexp.data.load import evaluated_per_epoch
from resexp.errors import UserError
from resexp.models.footprint import check_fits, device_of
from resexp.models.registry import check_depths
from resexp.run import safeio
from resexp.run.folder import RUN_NAME, DamagedFile, RunDir, RunState, run_name
from resexp.run.state import Status
from resexp.settings import trust
from resexp.settings.compose import (
    compose_config,
    config_groups,
    extra_config_dirs,
    finish_config,
    is_launcher_override,
    merge_overrides,
    one_line,
    parse_overrides,
)
from resexp.sweep.saved import SWEEP_FILE, saved_spec
from resexp.sweep.estimate import (
    TIMED_STEPS,
    TIMING_BUDGET_S,
    fit_line,
    mean_line,
    measured_points,
    run_seconds,
    timed_points,
)
from resexp.sweep.task import usable_cores
from resexp.train.schedule import make_schedule

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
    _base: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def to_yaml(self) -> str:
        return yaml.safe_dump({"archs": self.archs, "depths": self.depths, "seeds": self.seeds,
                               "overrides": self.overrides, "config_dirs": self.config_dirs},
                              sort_keys=False)

    def run_config(self, arch: str, depth: int, seed: int | None = None):
        """The validated config of one run of this sweep. Whether it fits this host's
        device is checked only where it trains here (not for SLURM jobs)."""
        seed = self.seeds[0] if seed is None else seed
        cfg = copy.deepcopy(self._composed())
        try:  # what the overrides model.arch=, model.depth= and seed= would do, applied last
            cfg.model.arch, cfg.model.depth, cfg.seed = arch, depth, seed
        except OmegaConfBaseException as err:
            raise UserError(one_line(err)) from None
        cfg = finish_config(cfg)
        if cfg.launcher.type == "local":
            check_fits(cfg, device_of(cfg.train.device))
        return cfg

    def _composed(self):
        """The sweep's overrides composed once (a Hydra compose costs about 0.3 s; a sweep
        of 50 runs would spend a quarter of a minute composing the same thing)."""
        if self._base is None or self._base[0] != self._key():
            self._base = (self._key(), compose_config([*self.overrides, *self.launcher], self.config_dirs))
        return self._base[1]

    def _key(self) -> tuple:
        return tuple(self.overrides), tuple(self.launcher), tuple(self.config_dirs)


@dataclass
class PlannedRun:
    """One run of a sweep: its config, its folder and what RunDir.state() found there, and
    the plan's numbers (planned length, estimated seconds still to train)."""
    cfg: object
    run: RunDir
    state: RunState
    epochs_planned: int
    iterations: int      # planned total
    cost_s: float = 0.0  # estimated seconds still to train (estimate.py); a weight only unless estimated
    estimated: bool = False  # cost_s is in seconds, from measured or timed speeds

    arch = property(lambda self: self.cfg.model.arch)
    depth = property(lambda self: self.cfg.model.depth)
    seed = property(lambda self: self.cfg.seed)
    name = property(lambda self: self.run.name)
    status = property(lambda self: self.state.status)
    epochs_done = property(lambda self: self.state.epochs)

    @property
    def iterations_done(self) -> int:
        return self.state.last["iteration"] if self.state.last else 0

    @property
    def to_train(self) -> bool:
        return self.state.trainable


def _check_items(values: list, what: str) -> list:
    if not values:
        raise UserError(f"{what} is empty")
    dupes = sorted({v for v in values if values.count(v) > 1}, key=str)
    if dupes:
        raise UserError(f"{what} lists {', '.join(map(str, dupes))} more than once")
    return values


def parse_list(value, kind, what: str) -> list | None:
    """The values of a sweep axis: '20,56,110', [20, 56, 110], range(3) or a single 20 ->
    a list of ``kind`` (str or int); an empty, repeated or malformed item is one clear error.
    The CLI passes its option's text; Python callers either form."""
    if value is None:
        return None
    if isinstance(value, str):
        items = [t.strip() for t in value.split(",")]
        if any(not t for t in items):
            raise UserError(f"--{what} has an empty item: {value!r}")
        try:
            values = [kind(t) for t in items]
        except ValueError:
            raise UserError(f"--{what} must be a comma-separated list of {kind.__name__}s, got {value!r}") from None
        return _check_items(values, f"--{what}")
    items = list(value) if isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)) else [value]
    values = [_as_kind(v, kind) for v in items]
    if any(v is None for v in values):
        raise UserError(f"{what} must be a list of {kind.__name__}s or a comma-separated string, got {value!r}")
    return _check_items(values, what)


def _as_kind(value, kind):
    """One item of a list a Python caller gave: a str as such; an int (numpy's too, not a
    bool) as such; None if it is neither."""
    if kind is str:
        return value.strip() or None if isinstance(value, str) else None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return None


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


def resolve_spec(archs, depths, seeds, overrides: Sequence[str], out: Path | None,
                 config_dirs=()) -> tuple[SweepSpec, Path]:
    """What to sweep and where. A folder's saved sweep.yaml is extended, never
    replaced: new overrides apply on top of the saved ones (a result-affecting
    change then stops at the clash check), and --config-dir folders are kept.
    Axes come from --archs/--depths/--seeds or sweep syntax, else the saved
    sweep, else the experiment's ``sweep:`` defaults. archs, depths and seeds are lists or
    comma-separated strings (parse_list)."""
    archs = parse_list(archs, str, "archs")
    depths, seeds = parse_list(depths, int, "depths"), parse_list(seeds, int, "seeds")
    grid, rest = split_grid(overrides)
    flags = {"archs": archs, "depths": depths, "seeds": seeds}
    for name, values in grid.items():
        if flags[name] is not None:
            raise UserError(f"--{name} and {next(k for k, v in GRID.items() if v == name)}= both given; use one")
        flags[name] = values
    launcher = [o for o in rest if is_launcher_override(o)]
    rest = [o for o in rest if not is_launcher_override(o)]
    saved = saved_spec(out)
    merged, dirs = _merged(saved, rest, config_dirs)
    composed = compose_config([*merged, *launcher], dirs)
    base = finish_config(copy.deepcopy(composed))
    composed_for = (tuple(merged), tuple(launcher), tuple(dirs))
    if out is None:
        out = Path("results") / base.name
        saved = saved_spec(out)
        merged, dirs = _merged(saved, rest, config_dirs)
    pick = lambda key: flags[key] if flags[key] is not None else saved.get(key) or list(base.sweep[key])  # noqa: E731
    spec = SweepSpec(pick("archs"), pick("depths"), pick("seeds"), merged, dirs, launcher)
    check_depths(base.model, spec.archs, spec.depths)  # every bad depth in one line, before any run
    spec._base = (composed_for, composed)  # the plan's runs start from it (recomposed if the folder's sweep changed it)
    return spec, out


def survey(out: Path) -> dict[str, RunState]:
    """The state of every run folder in ``out``, each read once: the plan takes its runs'
    states from here, the estimate the speeds of all of them, and the trainer the state
    its run was planned in."""
    folders = sorted(p for p in Path(out).glob("*-*-s*") if p.is_dir()) if Path(out).is_dir() else []
    return {p.name: RunDir(p).state() for p in folders if RUN_NAME.match(p.name)}


def plan(spec: SweepSpec, out: Path, found: dict[str, RunState] | None = None) -> list[PlannedRun]:
    """Every run of the sweep with its config and state (from ``found``, survey(out));
    validates all configs first."""
    found = survey(out) if found is None else found
    runs = [_planned(spec.run_config(arch, depth, seed), out, found)
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


def _planned(cfg, out: Path, found: dict[str, RunState]) -> PlannedRun:
    run = RunDir(out / run_name(cfg.model.arch, cfg.model.depth, cfg.seed))
    ds, t = cfg.dataset, cfg.train
    n_train = ds.train_subset or ds.train_size - ds.val_size
    sched = make_schedule(t, iters_per_epoch(n_train, t.batch_size, t.drop_last), cfg.model.depth)
    state = found[run.name] if run.name in found else run.state()
    return PlannedRun(cfg, run, state, sched.epochs, sched.total_iters)


def estimate_costs(runs: list[PlannedRun], out: Path, found: dict[str, RunState] | None = None,
                   time_here: bool = False, clock=time.perf_counter) -> str | None:
    """Set each run's ``cost_s`` (seconds still to train) and return what the figures
    rest on and how far to trust them. Speeds: the runs of ``out`` (``found``: survey(out));
    an arch with no run of its own there takes the other archs' (a plain and a residual net
    of one depth cost the same: the shortcut is an addition); with none at all and
    ``time_here``, a few steps are timed here on one thread while the time budget lasts
    (estimate.py). An arch with neither is not estimated
    (``estimated`` False): its cost_s only weighs it on a progress bar, never printed."""
    todo = [r for r in runs if r.to_train]
    if not todo:
        return None
    batch = todo[0].cfg.train.batch_size
    found = survey(out) if found is None else found
    points, timed, start = measured_points(found.values(), batch), [], clock()
    for arch in dict.fromkeys(r.arch for r in todo):
        if not points and time_here and clock() - start < TIMING_BUDGET_S:
            points[arch] = timed_points({r.depth: r.cfg for r in todo if r.arch == arch})
            timed.append(arch)
    lines = {arch: fit_line(p) for arch, p in points.items()}
    borrowed = [a for a in dict.fromkeys(r.arch for r in todo) if a not in lines and points]
    if borrowed:
        pooled = fit_line([p for arch_points in points.values() for p in arch_points])
        lines.update({arch: pooled for arch in borrowed})
    stand_in = mean_line(list(lines.values())) if lines else fit_line([(1, 1.0)])  # a weight, not seconds
    for r in todo:
        eval_images = evaluated_per_epoch(r.cfg.dataset)
        r.estimated = r.arch in lines
        r.cost_s = run_seconds(lines.get(r.arch, stand_in), r.depth, r.iterations - r.iterations_done,
                               r.epochs_planned - r.epochs_done, batch, eval_images)
    return _basis(out, points, timed, borrowed, clock() - start)


def _basis(out: Path, points: dict, timed: list[str], borrowed: list[str], timing_s: float) -> str | None:
    """Where the estimate comes from, and how sure it is."""
    measured = sorted(set(points) - set(timed))
    parts = []
    if measured:
        count = sum(len(points[a]) for a in measured)
        parts.append(f"speeds of the runs in {out} ({', '.join(measured)}; {count} run{'s' * (count > 1)}): "
                     f"within 2x on the committed sweeps")
    if timed:
        parts.append(f"{', '.join(timed)} timed here for {TIMED_STEPS} steps on 1 thread in {timing_s:.0f} s"
                     f"{_load_note()}: a rough guess, within about 2x on an idle machine")
    if borrowed:
        parts.append(f"{', '.join(borrowed)} at the speed of {', '.join(sorted(points))} of equal depth "
                     f"(the shortcut adds no measurable cost)")
    return "; ".join(parts) or None


def _load_note() -> str:
    """The machine's load while it timed: cores others use slow the runs down as well."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return ""
    cores = usable_cores()
    return f", load {load:.1f} on {cores} cores: busier or idler cores move it" if load >= cores / 2 else ""


def format_plan(runs: list[PlannedRun], basis: str | None = None) -> str:
    lines = [f"{'run':<22} {'state':<9} {'epochs':>9} {'iters':>7} {'est.':>8}"]
    for r in runs:
        est = _hms(r.cost_s) if r.estimated or not r.to_train and basis else ("?" if basis else "-")
        lines.append(f"{r.name:<22} {r.status:<9} {f'{r.epochs_done}/{r.epochs_planned}':>9} "
                     f"{r.iterations:>7} {est:>8}")
    for r in runs:
        if r.status == Status.DAMAGED:
            lines.append(f"{r.name} is damaged: {r.state.problem}; {r.state.advice}")
    todo = [r for r in runs if r.to_train]
    known, unknown = [r for r in todo if r.estimated], [r for r in todo if not r.estimated]
    total = ""
    if basis and known:
        total = f", about {_hms(sum(r.cost_s for r in known))}"
        if unknown:
            archs = ", ".join(dict.fromkeys(r.arch for r in unknown))
            total += f" for {len(known)} of them ({len(unknown)} not estimated: no {archs} run to go by)"
        total += f" (from {basis})"
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
