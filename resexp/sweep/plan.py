"""Planning a sweep (arch x depth x seed, times any other settings it varies): one run
folder each; what to train, at what cost.

A sweep is idempotent: finished runs are skipped, unfinished ones resume from
their checkpoints, so the same command can be stopped and rerun at any time; a
longer train.epochs or train.iterations extends the finished ones (resexp/train/extend.py).
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

from resexp.data.load import check as check_dataset
from resexp.data.load import evaluated_per_epoch
from resexp.errors import UserError
from resexp.models.footprint import check_fits, device_of
from resexp.models.registry import check_depths
from resexp.run import safeio
from resexp.run.folder import RUN_NAME, DamagedFile, Origin, RunDir, RunState, run_name
from resexp.run.names import value_text
from resexp.run.state import Status
from resexp.settings import schema, trust
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
from resexp.sweep.saved import GRID, SWEEP_FILE, axis_problem, combinations, saved_spec
from resexp.sweep.estimate import TIMED_STEPS, Line, fit_line, measured_points, run_seconds, timed_points
from resexp.train import extend
from resexp.train.threads import usable_cores
from resexp.train.schedule import planned_schedule


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
    # The other settings it varies, {config key: [values]} (each as its config holds it);
    # each run's folder name carries its values (resexp.run.folder.run_name).
    axes: dict[str, list] = field(default_factory=dict)
    # The overrides composed once, by resolve_spec or the first run_config: a Hydra compose
    # costs about 70 ms on an idle 2-core machine, and a sweep of 50 runs would spend 3.5 s
    # composing the same thing. Each run's arch, depth, seed and axes are set on a copy.
    composed: object = field(default=None, repr=False, compare=False)

    def to_yaml(self) -> str:
        spec = {"archs": self.archs, "depths": self.depths, "seeds": self.seeds, "overrides": self.overrides,
                "config_dirs": self.config_dirs}
        return yaml.safe_dump({**spec, **({"axes": self.axes} if self.axes else {})}, sort_keys=False)

    def run_config(self, arch: str, depth: int, seed: int | None = None, setting: dict | None = None):
        """The validated config of one run of this sweep (``setting``: its values of the
        extra axes). Whether it fits this host's device is checked only where it trains
        here (not for SLURM jobs)."""
        seed = self.seeds[0] if seed is None else seed
        if self.composed is None:
            self.composed = compose_config([*self.overrides, *self.launcher], self.config_dirs)
        cfg = copy.deepcopy(self.composed)
        # What the overrides model.arch=, model.depth=, seed= and the axes' would do, applied last (each
        # axis value was set once already, by _canonical: none fails here).
        cfg.model.arch, cfg.model.depth, cfg.seed = arch, depth, seed
        for key, value in (setting or {}).items():
            _set(cfg, key, value)
        cfg = finish_config(cfg)
        if cfg.launcher.type == "local":
            check_fits(cfg, device_of(cfg.train.device))
        return cfg

    def origin(self, arch: str, depth: int, seed: int, setting: dict) -> Origin:
        """How one run was asked for (its command.yaml): this command, and the overrides
        that compose its config alone (the launcher's left out: ``resexp train`` takes none)."""
        own = [f"model.arch={arch}", f"model.depth={depth}", f"seed={seed}",
               *(f"{key}={value_text(value)}" for key, value in setting.items())]
        return Origin(tuple([*self.overrides, *own]), tuple(self.config_dirs),
                      name=run_name(arch, depth, seed, setting))


def _set(cfg, key: str, value) -> None:
    """``key=value`` on a composed config, as a command-line override would set it: a run
    length given in one unit clears the other (resexp/settings/schema.py, ``excludes``)."""
    OmegaConf.update(cfg, key, value, merge=False)
    partner = schema.exclusive_partner(key)
    if partner and value is not None:
        OmegaConf.update(cfg, partner, None, merge=False)


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
    origin: Origin | None = None  # how it was asked for: its command.yaml, and its folder's name
    extends: dict | None = None  # the length it is extended from (resexp/train/extend.py), or None

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
        return self.state.trainable or self.extends is not None


def _check_items(values: list, what: str) -> list:
    if not values:
        raise UserError(f"{what} is empty")
    dupes = sorted({str(v) for v in values if values.count(v) > 1})  # str: a list value is not hashable
    if dupes:
        raise UserError(f"{what} lists {', '.join(dupes)} more than once")
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


def split_grid(overrides: Sequence[str]) -> tuple[dict[str, list], dict[str, list], list[str]]:
    """The sweep axes given as Hydra overrides apart from the other overrides:
    (arch/depth/seed axes by name, ``model.depth=20,56,110`` or a single value; the extra
    axes by config key, any setting given several values (``train.lr=0.1,0.05``,
    ``range()``, ``choice()``); the rest). Read by Hydra's own parser; a key that cannot
    be an axis (saved.axis_problem) is one line."""
    grid, axes, rest = {}, {}, []
    for o in parse_overrides(overrides):
        key = o.key_or_group
        name = GRID.get(key)
        if name is None and not o.is_sweep_override():
            rest.append(o.input_line)
            continue
        problem = None if name else axis_problem(key)
        if problem:
            raise UserError(f"{o.input_line}: {key} cannot take several values: {problem}")
        values = _check_items(_values(o), key)
        if name is None:
            axes[key] = values
            continue
        kind = str if name == "archs" else int
        if not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
            raise UserError(f"{o.input_line}: {key} takes {kind.__name__}s")
        grid[name] = values
    return grid, axes, rest


def _values(o) -> list:
    """An override's values: each of its sweep, or its one value."""
    try:
        return list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()]
    except HydraException:  # interval(a,b): a range of numbers, not a list of runs
        raise UserError(f"{o.input_line}: {o.key_or_group} takes a list, range() or choice(), "
                        f"not an interval") from None


def _settings(saved: dict, given_axes: dict[str, list], rest: list[str], config_dirs) -> tuple[dict, list, list]:
    """(extra axes, overrides, config folders) of a saved sweep extended by the new ones.
    A saved axis is replaced by the same key given again: with several values, or with one
    (``train.lr=0.02`` on a sweep of lrs sweeps that one lr); an override of a key that is
    now an axis is dropped. What the saved file may not decide (paths, code, the launcher:
    resexp.settings.trust) must be given again on the command line."""
    saved_axes = saved.get("axes") or {}
    singles = [o for o in parse_overrides(rest) if o.key_or_group in saved_axes]
    axes = {**saved_axes, **{o.key_or_group: _values(o) for o in singles}, **given_axes}
    overrides = [o for o in rest if o not in {s.input_line for s in singles}]
    if saved:
        given = {o.key_or_group for o in parse_overrides(overrides)}
        trust.check_saved_overrides(saved["path"], parse_overrides(saved["overrides"]), given, config_groups())
        trust.check_saved_dirs(saved["path"], saved.get("config_dirs", []), extra_config_dirs(config_dirs))
    dirs = [str(Path(d).expanduser().resolve()) for d in [*saved.get("config_dirs", []), *config_dirs]]
    merged = merge_overrides(saved.get("overrides", []), overrides)
    return axes, [o for o in merged if parse_overrides([o])[0].key_or_group not in axes], list(dict.fromkeys(dirs))


def _canonical(composed, axes: dict[str, list]) -> dict[str, list]:
    """Each axis value as a run's config holds it (train.lr=1 is 1.0), so that the folder
    names saved and planned from them agree; a value of the wrong type is one line."""
    out = {}
    for key, values in sorted(axes.items()):
        cfg, kept = copy.deepcopy(composed), []
        for value in values:
            try:
                _set(cfg, key, value)
            except OmegaConfBaseException as err:
                raise UserError(one_line(err)) from None
            got = OmegaConf.select(cfg, key)
            kept.append(OmegaConf.to_container(got) if OmegaConf.is_config(got) else got)
        out[key] = _check_items(kept, key)
    return out


def resolve_spec(archs, depths, seeds, overrides: Sequence[str], out: Path | None,
                 config_dirs=()) -> tuple[SweepSpec, Path]:
    """What to sweep and where. A folder's saved sweep.yaml is extended, never
    replaced: new overrides apply on top of the saved ones (a result-affecting
    change then stops at the clash check; a longer run extends the finished ones), and
    --config-dir folders are kept. Axes come from --archs/--depths/--seeds or sweep
    syntax, else the saved sweep, else the experiment's ``sweep:`` defaults; any other
    setting given several values is an extra axis. archs, depths and seeds are lists or
    comma-separated strings (parse_list)."""
    archs = parse_list(archs, str, "archs")
    depths, seeds = parse_list(depths, int, "depths"), parse_list(seeds, int, "seeds")
    grid, given_axes, rest = split_grid(overrides)
    flags = {"archs": archs, "depths": depths, "seeds": seeds}
    for name, values in grid.items():
        if flags[name] is not None:
            raise UserError(f"--{name} and {next(k for k, v in GRID.items() if v == name)}= both given; use one")
        flags[name] = values
    launcher = [o for o in rest if is_launcher_override(o)]
    rest = [o for o in rest if not is_launcher_override(o)]
    saved = saved_spec(out)
    axes, merged, dirs = _settings(saved, given_axes, rest, config_dirs)
    composed = compose_config([*merged, *launcher], dirs)
    if out is None:
        out = Path("results") / finish_config(copy.deepcopy(composed)).name
        saved = saved_spec(out)
        if saved:  # the sweep saved there goes on, with its settings under these
            axes, merged, dirs = _settings(saved, given_axes, rest, config_dirs)
            composed = compose_config([*merged, *launcher], dirs)
    base = finish_config(copy.deepcopy(composed))
    pick = lambda key: flags[key] if flags[key] is not None else saved.get(key) or list(base.sweep[key])  # noqa: E731
    spec = SweepSpec(pick("archs"), pick("depths"), pick("seeds"), merged, dirs, launcher,
                     _canonical(composed, axes), composed)
    check_depths(base.model, spec.archs, spec.depths)  # every bad depth in one line, before any run
    return spec, out


def survey(out: Path) -> dict[str, RunState]:
    """The state of every run folder in ``out``, each read once: the plan takes its runs'
    states from here, the estimate the speeds of all of them, and the trainer the state
    its run was planned in."""
    folders = sorted(p for p in Path(out).glob("*-*-s*") if p.is_dir() and RUN_NAME.match(p.name))
    return {p.name: RunDir(p).state() for p in folders}


def plan(spec: SweepSpec, out: Path, found: dict[str, RunState] | None = None) -> list[PlannedRun]:
    """Every run of the sweep with its config and state (from ``found``, survey(out));
    validates all configs first."""
    found = survey(out) if found is None else found
    runs = [_planned(spec, *run, out, found) for run in combinations(spec.archs, spec.depths, spec.seeds, spec.axes)]
    _check_names(runs)
    _check_same_configs(runs)
    return runs


def _check_names(runs: list[PlannedRun]) -> None:
    """Two runs whose folder names differ only in case would share one folder where file
    names ignore case (macOS, Windows): one line before anything trains."""
    seen = {}
    for r in runs:
        other = seen.setdefault(r.name.lower(), r.name)
        if other != r.name:
            raise UserError(f"runs {other} and {r.name} would share one folder on a file system that ignores case; "
                            f"sweep values that differ in more than case")


def _check_same_configs(runs: list[PlannedRun]) -> None:
    """A run folder started under other result-affecting settings must not join this sweep:
    a finished one would be skipped as if it matched, an unfinished one would fail alone.
    One error before anything trains instead. A longer run length is no clash: it extends
    the run (resexp/train/extend.py), so long as its checkpoint is there to go on from."""
    clashes = [r for r in runs if _clashes(r)]
    if clashes:
        clashes[0].run.check_config(clashes[0].cfg, others=len(clashes) - 1)
    for r in runs:
        try:
            r.extends = extend.lengthening(r.run, r.cfg, r.state)
        except DamagedFile:
            pass  # its state says damaged: the sweep reports it and leaves it alone


def _clashes(r: PlannedRun) -> bool:
    try:
        extend.longer(r.run, r.cfg)
    except DamagedFile:
        return False  # as above
    except UserError:
        return True
    return False


def _planned(spec: SweepSpec, arch: str, depth: int, seed: int, setting: dict, out: Path,
             found: dict[str, RunState]) -> PlannedRun:
    cfg = spec.run_config(arch, depth, seed, setting)
    origin = spec.origin(arch, depth, seed, setting)
    run = RunDir(out / origin.name)
    sched = planned_schedule(cfg)  # a warm-up or milestone past its end: one line before anything trains
    state = found[run.name] if run.name in found else run.state()
    return PlannedRun(cfg, run, state, sched.epochs, sched.total_iters, origin=origin)


def estimate_costs(runs: list[PlannedRun], out: Path, found: dict[str, RunState] | None = None,
                   time_here: bool = False) -> str | None:
    """Set each run's ``cost_s`` (seconds still to train) and return what the figures
    rest on and how far to trust them. Speeds: the runs of ``out`` (``found``: survey(out));
    an arch with no run of its own there takes the other archs' (a plain and a residual net
    of one depth cost the same: the shortcut is an addition); with none at all and
    ``time_here``, the first arch is timed here for a few steps on one thread (estimate.py).
    With neither, nothing is estimated (``estimated`` False): cost_s only weighs a run on a
    progress bar, never printed."""
    todo = [r for r in runs if r.to_train]
    if not todo:
        return None
    found = survey(out) if found is None else found
    points, timed, timing_s = measured_points(found.values()), None, 0.0
    if not points and time_here:
        timed, start = todo[0].arch, time.perf_counter()
        points[timed] = timed_points({r.depth: r.cfg for r in todo if r.arch == timed})
        timing_s = time.perf_counter() - start
    lines = {arch: fit_line(p) for arch, p in points.items()}
    borrowed = [a for a in dict.fromkeys(r.arch for r in todo) if a not in lines and points]
    if borrowed:
        pooled = fit_line([p for arch_points in points.values() for p in arch_points])
        lines.update({arch: pooled for arch in borrowed})
    for r in todo:
        r.estimated = r.arch in lines
        line = lines.get(r.arch, Line(0.0, 1.0))  # a weight, not seconds
        r.cost_s = run_seconds(line, r.depth, r.iterations - r.iterations_done, r.epochs_planned - r.epochs_done,
                               r.cfg.train.batch_size, evaluated_per_epoch(r.cfg.dataset))
    return _basis(out, points, timed, borrowed, timing_s)


def _basis(out: Path, points: dict, timed: str | None, borrowed: list[str], timing_s: float) -> str | None:
    """Where the estimate comes from, and how sure it is."""
    measured = sorted(set(points) - {timed})
    parts = []
    if measured:
        count = sum(len(points[a]) for a in measured)
        parts.append(f"speeds of the runs in {out} ({', '.join(measured)}; {count} run{'s' * (count > 1)}): "
                     f"within 2x on the committed sweeps")
    if timed:
        parts.append(f"{timed} timed here for {TIMED_STEPS} steps on 1 thread in {timing_s:.0f} s"
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
    width = max([22, *(len(r.name) for r in runs)])
    lines = [f"{'run':<{width}} {'state':<9} {'epochs':>9} {'iters':>7} {'est.':>8}"]
    for r in runs:
        est = _hms(r.cost_s) if r.estimated or not r.to_train and basis else "-"
        lines.append(f"{r.name:<{width}} {r.status:<9} {f'{r.epochs_done}/{r.epochs_planned}':>9} "
                     f"{r.iterations:>7} {est:>8}")
    extended = [r for r in runs if r.extends is not None and r.state.finished]
    if extended:
        froms = ", ".join(dict.fromkeys(f"{r.extends['epochs']} epochs ({r.extends['iterations']} it)"
                                        for r in extended))
        lines.append(f"{len(extended)} finished run{'s' * (len(extended) > 1)} extended from {froms}: "
                     f"each goes on from its checkpoint")
    for r in runs:
        if r.status == Status.DAMAGED:
            lines.append(f"{r.name} is damaged: {r.state.problem}; {r.state.advice}")
    # With a basis every run to train is estimated: an arch without speeds borrows the others'.
    todo = [r for r in runs if r.to_train]
    total = f", about {_hms(sum(r.cost_s for r in todo))} (from {basis})" if basis and todo else ""
    lines.append(f"{len(runs)} runs, {len(todo)} to train{total}")
    return "\n".join(lines)


def check_data(runs: list[PlannedRun], fetch: bool = True) -> list[str]:
    """Each dataset the runs still to train need, once (resexp.data.check): opened (staged,
    downloaded) and its labels checked, or with ``fetch`` False (a dry run) only looked for,
    nothing written. Missing data is then one error before anything starts, not the same
    failure repeated for every run. Returns the dry run's notes (data to be downloaded)."""
    datasets = {OmegaConf.to_yaml(r.cfg.dataset): r.cfg.dataset for r in runs if r.to_train}
    notes = [check_dataset(dataset, fetch) for dataset in datasets.values()]
    return [note for note in notes if note]


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
