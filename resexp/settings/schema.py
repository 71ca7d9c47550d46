"""The typed schema of a run config: every key, its type, its allowed values, and
whether it changes what a run computes.

The dataclasses are registered in Hydra's ConfigStore and sit at the root of
``configs/train.yaml``'s defaults list, so composition itself rejects unknown keys
(``+train.optimizer=adam`` included) and values of the wrong type
(``train.momentum=abc``). What a type cannot say — ranges, choices, list shapes —
is written beside each field as metadata and checked by ``check_values``; nothing
about a key's meaning lives anywhere else:

- ``check``: a rule name from RULES (or a tuple of choices), checked after composition;
- ``result=False``: the key does not change what a run computes (a run may resume
  under a new value, and a sweep folder may change it);
- ``excludes``: a key that means the same thing in another unit (train.epochs vs
  train.iterations): a value given on the command line for one clears the other.
"""

from __future__ import annotations

import functools
import re
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, Callable, Dict, List, Optional, get_type_hints

from hydra.core.config_store import ConfigStore

from resexp.errors import UserError


def key(default=None, *, check=None, result: bool = True, excludes: str | None = None, factory=None):
    """A schema field: its default plus the metadata described in the module docstring."""
    meta = {"check": check, "result": result, "excludes": excludes}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    arch: str = key("resnet", check="arch")
    depth: int = key(20, check="positive")
    shortcut: str = key("A", check=("A", "B"))
    widths: List[int] = key(check="three_positive", factory=lambda: [16, 32, 64])
    bottleneck: bool = key(False)
    checkpoint_segments: int = key(0, check="non_negative")
    mlp_widths: List[int] = key(check="positive_list", factory=lambda: [256])
    mlp_batch_norm: bool = key(True)


@dataclass
class TrainConfig:
    epochs: Optional[int] = key(None, check="positive_or_none", excludes="iterations")
    iterations: Optional[int] = key(64000, check="positive_or_none", excludes="epochs")
    batch_size: int = key(128, check="positive")
    lr: float = key(0.1, check="learning_rate")
    momentum: float = key(0.9, check="unit_interval")
    weight_decay: float = key(1e-4, check="non_negative")
    nesterov: bool = key(False)
    milestones: List[Any] = key(check="non_negative_list", factory=lambda: [32000, 48000])
    milestone_unit: str = key("iterations", check=("iterations", "epochs"))
    gamma: float = key(0.1, check="positive")
    warmup_iters: int = key(0, check="non_negative")
    warmup_lr: float = key(0.01, check="learning_rate")
    warmup_from_depth: Optional[int] = key(None, check="positive_or_none")
    eval_batch_size: int = key(1000, check="positive")
    device: str = key("auto", check="device", result=False)
    amp: bool = key(True)
    channels_last: bool = key(True)
    compile: bool = key(False)
    # the graphed step trains the eager run (resexp/step.py): a run may switch on resume
    cuda_graphs: bool = key(True, result=False)
    deterministic: bool = key(False)
    drop_last: bool = key(False)
    keep_checkpoint: bool = key(True, result=False)
    log_every: int = key(50, check="positive", result=False)
    threads: Optional[int] = key(None, check="positive_or_none", result=False)
    # seconds without a heartbeat after which a run's lock is stale (resexp/runlock.py)
    stale_after: float = key(300.0, check="positive", result=False)
    # Clean training error after each epoch: changes metrics.csv's columns, so it is a result key.
    eval_train: bool = key(False)
    # What a run records besides its metrics (resexp/monitor.py): never changes its numbers.
    diagnostics: str = key("end", check="diagnostics", result=False)
    diagnostics_images: int = key(256, check="positive", result=False)
    tensorboard: bool = key(False, result=False)


@dataclass
class AugmentConfig:
    pad: int = key(0, check="non_negative")
    hflip: bool = key(False)


@dataclass
class DatasetConfig:
    name: str = key("???")
    display_name: Optional[str] = key(None, result=False)  # null: the name
    _target_: str = key("???")
    train_args: Dict[str, Any] = key(factory=dict)
    test_args: Dict[str, Any] = key(factory=dict)
    # The real sizes (checked when the data load): validation and estimates use them.
    train_size: int = key("???", check="positive", result=False)
    test_size: int = key("???", check="positive", result=False)
    num_classes: int = key("???", check="positive")
    channels: int = key("???", check="positive")
    image_size: int = key("???", check="positive")
    mean: List[float] = key(check="unit_open_list", factory=list)
    std: List[float] = key(check="unit_open_list", factory=list)
    augment: AugmentConfig = key(factory=AugmentConfig)
    val_size: int = key(0, check="non_negative")
    train_subset: Optional[int] = key(None, check="positive_or_none")
    test_subset: Optional[int] = key(None, check="positive_or_none")
    root: Optional[str] = key(None, result=False)
    download: bool = key(True, result=False)
    source: Optional[str] = key(None, result=False)
    stage_dir: str = key(".", result=False)
    missing_hint: str = key("", result=False)
    synthetic: bool = key(False)


@dataclass
class SweepConfig:
    archs: List[str] = key(check="arch_list", result=False, factory=lambda: ["plain", "resnet"])
    depths: List[int] = key(check="positive_list", result=False, factory=lambda: [20, 32, 44, 56])
    seeds: List[int] = key(check="seed_list", result=False, factory=lambda: [0])


@dataclass
class LauncherConfig:
    """How a sweep trains its runs (configs/launcher/, resexp/launchers.py): ``local``
    uses ``jobs``, ``slurm`` the keys after it. A key the chosen type does not use must
    keep its default (resexp.sweep.launch checks); none of them changes results."""
    type: str = key("local", check=("local", "slurm"))
    jobs: int = key(1, check="positive")
    partition: Optional[str] = key(None)
    account: Optional[str] = key(None)
    qos: Optional[str] = key(None)
    time_min: int = key(240, check="positive")
    gpus_per_run: int = key(1, check="non_negative")
    cpus_per_run: int = key(4, check="positive")
    mem_gb: Optional[float] = key(16.0, check="positive_number_or_none")
    array_parallelism: int = key(64, check="positive")
    signal_delay_s: int = key(120, check="non_negative")
    max_requeues: int = key(20, check="non_negative")
    log_folder: Optional[str] = key(None)
    sbatch: Dict[str, Any] = key(factory=dict)


@dataclass
class RunConfig:
    name: str = key("???", result=False)
    seed: int = key(0, check="seed")
    model: ModelConfig = key(factory=ModelConfig)
    train: TrainConfig = key(factory=TrainConfig)
    dataset: DatasetConfig = key(factory=DatasetConfig)
    sweep: SweepConfig = key(factory=SweepConfig, result=False)
    launcher: LauncherConfig = key(factory=LauncherConfig, result=False)


def register() -> None:
    """Put the schema where train.yaml's defaults list finds it (idempotent)."""
    ConfigStore.instance().store(name="resexp_schema", node=RunConfig)


# --------------------------------------------------------------------------- rules
def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _archs() -> list[str]:
    from resexp.models import list_models  # the registry, imported only when checking
    return list_models()


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
# Seeds feed numpy and torch generators (at most 2**32 - 1 for numpy) and seed * 1_000_003
# + epoch (resexp.data.epoch_generators) must stay a 64-bit integer.
MAX_SEED = 2**32 - 1
# SGD's step size (the paper's is 0.1). At 1e6 every net here already diverges, which a run
# records as such; far larger values overflow float32 (1e308 is inf there) and are typos.
MAX_LR = 1e6

# rule -> (test, what the value must be). Types are already enforced by the dataclasses.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "positive": (lambda v: _is_number(v) and v > 0, "> 0"),
    "non_negative": (lambda v: _is_number(v) and v >= 0, ">= 0"),
    "positive_or_none": (lambda v: v is None or (_is_number(v) and v > 0), "a positive integer or null"),
    "positive_number_or_none": (lambda v: v is None or (_is_number(v) and v > 0), "a positive number or null"),
    "seed": (lambda v: _is_number(v) and 0 <= v <= MAX_SEED, f"an integer in [0, {MAX_SEED}]"),
    "seed_list": (lambda v: len(v) > 0 and all(_is_number(x) and 0 <= x <= MAX_SEED for x in v),
                  f"a non-empty list of integers in [0, {MAX_SEED}]"),
    "learning_rate": (lambda v: _is_number(v) and 0 < v <= MAX_LR, f"in (0, {MAX_LR:g}]"),
    "unit_interval": (lambda v: _is_number(v) and 0 <= v < 1, "in [0, 1)"),
    "positive_list": (lambda v: len(v) > 0 and all(_is_number(x) and x > 0 for x in v),
                      "a non-empty list of positive integers"),
    "three_positive": (lambda v: len(v) == 3 and all(_is_number(x) and x > 0 for x in v),
                       "three positive integers, one per stage (§4.2: 16, 32, 64)"),
    "non_negative_list": (lambda v: all(_is_number(x) and x >= 0 for x in v), "a list of numbers >= 0"),
    "unit_open_list": (lambda v: len(v) > 0 and all(_is_number(x) and 0 < x < 1 for x in v),
                       "a non-empty list of numbers in (0, 1)"),
    "device": (lambda v: bool(_DEVICE.match(str(v))), "auto, cpu, cuda or cuda:N"),
    "diagnostics": (lambda v: v in ("off", "end", "epoch"),
                    "one of off, end, epoch (in a YAML file quote \"off\": YAML reads a bare off as false)"),
    "arch": (lambda v: v in _archs(), "one of the registered architectures"),
    "arch_list": (lambda v: len(v) > 0 and all(a in _archs() for a in v), "registered architectures"),
}


def _walk(schema_cls, prefix: str = ""):
    """(dotted key, dataclass field) for every leaf of the schema."""
    hints = get_type_hints(schema_cls)
    for f in fields(schema_cls):
        full = f"{prefix}{f.name}"
        if is_dataclass(hints[f.name]):
            yield from _walk(hints[f.name], full + ".")
        else:
            yield full, f


@functools.lru_cache(maxsize=1)
def leaf_fields() -> dict[str, Any]:
    """Every leaf key of a run config with its field (metadata: check, result, excludes)."""
    return dict(_walk(RunConfig))


def non_result_keys() -> tuple[str, ...]:
    """Keys that do not change what a run computes (section keys stand for all below)."""
    top = tuple(f.name for f in fields(RunConfig) if f.metadata.get("result") is False)
    leaves = tuple(k for k, f in leaf_fields().items()
                   if f.metadata.get("result") is False and not k.startswith(tuple(t + "." for t in top)))
    return tuple(dict.fromkeys(top + leaves))


_NO_DEFAULT = object()


def default_of(dotted: str):
    """The schema default of a key (a key that a config from an older resexp lacks
    had this value then); a sentinel when the key has none."""
    f = leaf_fields().get(dotted)
    if f is None:
        return _NO_DEFAULT
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return _NO_DEFAULT if f.default in (MISSING, "???") else f.default


def exclusive_partner(dotted: str) -> str | None:
    """The key that ``dotted`` excludes (train.epochs -> train.iterations), if any."""
    f = leaf_fields().get(dotted)
    partner = f.metadata.get("excludes") if f is not None else None
    return f"{dotted.rsplit('.', 1)[0]}.{partner}" if partner else None


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def check_values(cfg) -> None:
    """Every value against its rule: the first violation is one UserError line."""
    for dotted, f in leaf_fields().items():
        rule = f.metadata.get("check")
        if rule is None:
            continue
        value = _get(cfg, dotted)
        if isinstance(rule, tuple):
            ok, want = value in rule, "one of " + ", ".join(rule)
        else:
            test, want = RULES[rule]
            ok = test(value)
        if not ok:
            shown = list(value) if hasattr(value, "__len__") and not isinstance(value, str) else value
            raise UserError(f"{dotted} must be {want}, got {shown!r}")
