"""The typed schema of a run config: every key, its type, its allowed values, and
whether it changes what a run computes.

This file is the one source of every default: the YAML files under configs/ hold only
what differs from it (tests/test_config.py fails on a second copy). The dataclasses are
registered in Hydra's ConfigStore and sit at the root of
``configs/train.yaml``'s defaults list, so composition itself rejects unknown keys
(``+train.optimizer=adam`` included) and values of the wrong type
(``train.momentum=abc``). What a type cannot say — ranges, choices, list shapes —
is written beside each field as metadata and checked by ``check_values``; nothing
about a key's meaning lives anywhere else:

- ``check``: a rule name from RULES (or a tuple of choices), checked after composition;
- ``result=False``: the key does not change what a run computes (a run may resume
  under a new value, and a sweep folder may change it);
- ``excludes``: a key that means the same thing in another unit (train.epochs vs
  train.iterations): a value given on the command line for one clears the other;
- ``needs``: a switch (a key of the same section: a bool, or a count such as
  train.warmup_iters) without which the key is unused: the key set away from its default
  while the switch is off (false, 0) is an error, since a setting that is accepted must be
  used.

Every number has a finite range: inf and NaN pass no rule, and sizes and run lengths have
upper bounds far past any real run (MAX_* below), so a typo is one line here instead of an
overflow inside torch, a run that never ends or a lr that turns into inf.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, Callable, Dict, List, Optional, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from resexp.errors import UserError
from resexp.models import list_models


def key(default=None, *, check=None, result: bool = True, excludes: str | None = None, needs: str | None = None,
        factory=None):
    """A schema field: its default plus the metadata described in the module docstring."""
    meta = {"check": check, "result": result, "excludes": excludes, "needs": needs}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    arch: str = key("resnet", check="arch")  # plain | resnet | preact_resnet | mlp_plain | mlp_resnet
    depth: int = key(20, check="depth")   # CIFAR nets: 6n+2 (9n+2 with bottleneck); MLPs: 2k+2
    # resnet: A = identity + zero-padded channels (no parameters), B = 1x1 projection
    shortcut: str = key("A", check=("A", "B"))
    widths: List[int] = key(check="three_widths", factory=lambda: [16, 32, 64])  # filters per stage (§4.2)
    bottleneck: bool = key(False)  # 1x1-3x3-1x1 blocks (depth 9n+2), as in ResNet-164/1001
    checkpoint_segments: int = key(0, check="non_negative")  # >0: activation checkpointing (1000+ layers)
    mlp_widths: List[int] = key(check="widths", factory=lambda: [256])  # projection where width changes
    mlp_batch_norm: bool = key(True)


@dataclass
class TrainConfig:
    """The paper's CIFAR-10 recipe (§4.2): SGD, momentum 0.9, weight decay 1e-4, batch 128,
    lr 0.1 divided by 10 at 32k and 48k iterations, stop at 64k."""
    # Run length: epochs or iterations, not both. One given on the command line clears the
    # other (train.epochs=10 trains 10 epochs under any experiment).
    epochs: Optional[int] = key(None, check="epochs", excludes="iterations")
    iterations: Optional[int] = key(64000, check="iterations", excludes="epochs")
    batch_size: int = key(128, check="positive")
    lr: float = key(0.1, check="learning_rate")
    momentum: float = key(0.9, check="unit_interval")
    weight_decay: float = key(1e-4, check="weight_decay")
    nesterov: bool = key(False)
    milestones: List[Any] = key(check="milestones", factory=lambda: [32000, 48000])
    milestone_unit: str = key("iterations", check=("iterations", "epochs"))
    gamma: float = key(0.1, check="gamma")  # the lr is multiplied by it at each milestone
    # §4.2: for the 110-layer net "we use 0.01 to warm up the training until the training
    # error is below 80% (about 400 iterations), and then go back to 0.1".
    warmup_iters: int = key(0, check="warmup")
    warmup_lr: float = key(0.01, check="learning_rate", needs="warmup_iters")
    warmup_from_depth: Optional[int] = key(None, check="positive_or_none")  # null: every depth
    eval_batch_size: int = key(1000, check="positive")
    device: str = key("auto", check="device", result=False)  # auto (CUDA if available) | cpu | cuda | cuda:N
    amp: bool = key(True)  # bf16 autocast where it is fast: CUDA, CPUs with AVX512-BF16/AMX
    channels_last: bool = key(True)  # NHWC memory layout for the convs
    compile: bool = key(False)  # torch.compile the model (CUDA; pays off on long runs)
    # CUDA: forward+backward+SGD captured once as a CUDA graph and replayed per batch; it
    # trains the eager run (resexp/train/step.py), so a run may switch on resume. CPU: ignored.
    cuda_graphs: bool = key(True, result=False)
    deterministic: bool = key(False)  # deterministic kernels: bit-identical reruns on one machine
    drop_last: bool = key(False)  # keep the last, smaller batch of an epoch (391 it/epoch on 50k)
    keep_checkpoint: bool = key(True, result=False)  # keep checkpoint.pt once the run is done
    log_every: int = key(50, check="positive", result=False)  # progress refresh, iterations (a sync each)
    threads: Optional[int] = key(None, check="positive_or_none", result=False)  # CPU threads; null: chosen
    # A trainer refreshes its run's lock every stale_after/10 s; a lock not refreshed for
    # stale_after seconds was left by a dead process, and the next trainer takes the run
    # over (resexp/run/lock.py). Hosts sharing a results folder keep their clocks in step.
    stale_after: float = key(300.0, check="stale_after", result=False)
    # Clean training error: also evaluate the whole training set (eval-mode BN, no
    # augmentation) after each epoch, as clean_train_loss/clean_train_err columns; train_err
    # stays the mean minibatch error with augmentation (He et al. Fig. 6). Changes
    # metrics.csv's columns, so it is a result key.
    eval_train: bool = key(False)
    # Inside the network (resexp/inside/): layer responses (Fig. 7), gradient norms and the
    # identity test. end = at iteration 0 and after the last epoch; epoch = after every
    # epoch too; off = never. They never change a run's numbers.
    diagnostics: str = key("end", check="diagnostics", result=False)
    diagnostics_images: int = key(256, check="positive", result=False)  # the first N test images
    tensorboard: bool = key(False, result=False)  # TensorBoard events too (pip install 'resexp[tensorboard]')
    # Weights & Biases (pip install 'resexp[wandb]', docs/logging.md): one W&B run per run
    # folder, resumed with it. The wandb_* keys only mean something with wandb=true.
    wandb: bool = key(False, result=False)
    wandb_project: Optional[str] = key(None, result=False, needs="wandb")  # null: $WANDB_PROJECT, else resexp
    wandb_entity: Optional[str] = key(None, result=False, needs="wandb")  # null: your default entity
    wandb_tags: List[str] = key(result=False, needs="wandb", factory=list)
    # offline: no network, `wandb sync` uploads later; disabled: W&B's calls do nothing;
    # null: $WANDB_MODE, else online
    wandb_mode: Optional[str] = key(None, check="wandb_mode", result=False, needs="wandb")


@dataclass
class AugmentConfig:
    pad: int = key(0, check="non_negative")  # pixels padded on each side before a random crop (0: none); < image_size
    hflip: bool = key(False)                 # random horizontal flip


@dataclass
class DatasetConfig:
    """A dataset (configs/dataset/NAME.yaml sets the keys without a default)."""
    name: str = key("???")
    display_name: Optional[str] = key(None, result=False)  # in figure titles and reports; null: the name
    _target_: str = key("???")  # the dataset class, e.g. torchvision.datasets.MNIST
    train_args: Dict[str, Any] = key(factory=dict)  # passed to the class for the training split
    test_args: Dict[str, Any] = key(factory=dict)
    # The real sizes (checked when the data load): validation and estimates use them.
    train_size: int = key("???", check="positive", result=False)  # before val_size
    test_size: int = key("???", check="positive", result=False)
    num_classes: int = key("???", check="positive")
    channels: int = key("???", check="positive")
    image_size: int = key("???", check="image_size")
    mean: List[float] = key(check="unit_open_list", factory=list)  # per channel, pixel values in [0, 1]
    std: List[float] = key(check="unit_open_list", factory=list)
    augment: AugmentConfig = key(factory=AugmentConfig)
    # Hold out the last N training images as a validation split (val_loss/val_err columns);
    # the paper tuned on a 45k/5k split of CIFAR-10: 5000.
    val_size: int = key(0, check="non_negative")
    train_subset: Optional[int] = key(None, check="positive_or_none")  # the first N training images; null: all
    test_subset: Optional[int] = key(None, check="positive_or_none")   # the first N test images; null: all
    root: Optional[str] = key(None, result=False)  # data folder; null: $RESEXP_DATA, else ~/.cache/resexp/data
    download: bool = key(True, result=False)  # let the dataset class download where there is a network
    source: Optional[str] = key(None, result=False)  # offline: a folder with the original files, staged
    stage_dir: str = key(".", result=False)  # where under root the class looks for the staged files
    missing_hint: str = key("", result=False)  # the error line's advice when the data are missing
    synthetic: bool = key(False)  # generated images: results are labelled synthetic everywhere


@dataclass
class SweepConfig:
    """Defaults of `resexp sweep` (its --archs/--depths/--seeds win)."""
    archs: List[str] = key(check="arch_list", result=False, factory=lambda: ["plain", "resnet"])
    # Fig. 6 (left/middle); add 110 (and 1202) for the right panel
    depths: List[int] = key(check="depths", result=False, factory=lambda: [20, 32, 44, 56])
    seeds: List[int] = key(check="seed_list", result=False, factory=lambda: [0])


@dataclass
class LauncherConfig:
    """How a sweep trains its runs (configs/launcher/, resexp/sweep/launch.py): ``local``
    uses ``jobs``, ``slurm`` the keys after it. A key the chosen type does not use must
    keep its default (resexp.sweep.launch checks); none of them changes results."""
    type: str = key("local", check=("local", "slurm"))
    jobs: int = key(1, check="positive")  # local: runs trained at once, each in its own process
    partition: Optional[str] = key(None)  # sbatch --partition; null: the cluster's default
    account: Optional[str] = key(None)    # sbatch --account
    qos: Optional[str] = key(None)        # sbatch --qos
    time_min: int = key(240, check="positive")  # time limit per job; a longer run goes on in requeued jobs
    gpus_per_run: int = key(1, check="non_negative")  # GPUs per job (0: a CPU job)
    cpus_per_run: int = key(4, check="positive")      # cores per job; CPU training uses this many threads
    mem_gb: Optional[float] = key(16.0, check="positive_number_or_none")  # memory per job (null: site default)
    array_parallelism: int = key(64, check="positive")  # at most this many jobs of one submission at once
    signal_delay_s: int = key(120, check="non_negative")  # USR2 this long before the limit: the job requeues
    max_requeues: int = key(20, check="non_negative")  # requeues at the time limit before a run is given up
    log_folder: Optional[str] = key(None)  # job scripts and logs; null: <out>/.slurm
    sbatch: Dict[str, Any] = key(factory=dict)  # more sbatch options, e.g. {constraint: a100, mail-type: END}


@dataclass
class RunConfig:
    name: str = key("default", result=False)  # the experiment's name; results/<name>/ by default
    seed: int = key(0, check="seed")
    model: ModelConfig = key(factory=ModelConfig)
    train: TrainConfig = key(factory=TrainConfig)
    dataset: DatasetConfig = key(factory=DatasetConfig)
    sweep: SweepConfig = key(factory=SweepConfig, result=False)
    launcher: LauncherConfig = key(factory=LauncherConfig, result=False)


# Where train.yaml's defaults list finds the schema, for every compose of this process.
ConfigStore.instance().store(name="resexp_schema", node=RunConfig)


# --------------------------------------------------------------------------- rules
def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# train.diagnostics: when the measurements inside the nets are taken.
DIAGNOSTICS = ("off", "end", "epoch")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
# Seeds feed numpy and torch generators (at most 2**32 - 1 for numpy) and seed * 1_000_003
# + epoch (resexp.data.epoch_generators) must stay a 64-bit integer.
MAX_SEED = 2**32 - 1
# SGD's step size (the paper's is 0.1). At 1e6 every net here already diverges, which a run
# records as such; far larger values overflow float32 (1e308 is inf there) and are typos.
MAX_LR = 1e6
# The longest a trainer may stay silent (train.stale_after): a run.lock that claims longer
# is read as damage, since a received one could otherwise hold its run for ever.
MAX_STALE_AFTER = 86400.0
# Sizes far past any trainable net, which would otherwise end in an overflow deep inside torch
# (a meta tensor of 1e11 x 1e11 weights) instead of one line: filters per stage (the paper's
# widest is 64; WRN-28-10's 640), pixels per image side (ImageNet's 224).
MAX_WIDTH = 65536
MAX_DEPTH = 10**9  # layers; the paper's deepest net has 1202 (§4.2)
MAX_IMAGE_SIZE = 4096
# Run lengths: the paper's runs are 64k iterations (164 epochs of CIFAR-10); a run a million
# times longer would not end in a lifetime on any machine, and is a typo.
MAX_ITERATIONS = 10**9
MAX_EPOCHS = 10**6
# SGD's weight decay (the paper's is 1e-4): at lr 0.1 a decay of 1 already takes a tenth of
# every weight away at each step.
MAX_WEIGHT_DECAY = 1.0


def _finite(v) -> bool:
    """A number, not inf or NaN (both compare false with any bound, or true with one side)."""
    return _is_number(v) and math.isfinite(v)


def _in(v, low, high, open_low: bool = False) -> bool:
    return _finite(v) and (v > low if open_low else v >= low) and v <= high


# rule -> (test, what the value must be, or a function that says it). Types are already enforced by the dataclasses.
RULES: dict[str, tuple[Callable[[Any], bool], str | Callable[[], str]]] = {
    "positive": (lambda v: _finite(v) and v > 0, "> 0"),
    "non_negative": (lambda v: _finite(v) and v >= 0, ">= 0"),
    "positive_or_none": (lambda v: v is None or (_finite(v) and v > 0), "a positive integer or null"),
    "wandb_mode": (lambda v: v in (None, "online", "offline", "disabled"), "online, offline, disabled or null"),
    "positive_number_or_none": (lambda v: v is None or (_finite(v) and v > 0), "a positive number or null"),
    "seed": (lambda v: _in(v, 0, MAX_SEED), f"an integer in [0, {MAX_SEED}]"),
    "seed_list": (lambda v: len(v) > 0 and all(_in(x, 0, MAX_SEED) for x in v),
                  f"a non-empty list of integers in [0, {MAX_SEED}]"),
    "learning_rate": (lambda v: _in(v, 0, MAX_LR, open_low=True), f"in (0, {MAX_LR:g}]"),
    "weight_decay": (lambda v: _in(v, 0, MAX_WEIGHT_DECAY), f"in [0, {MAX_WEIGHT_DECAY:g}] (§4.2: 0.0001)"),
    "gamma": (lambda v: _in(v, 0, 1, open_low=True), "in (0, 1] (§4.2: 0.1, the lr divided by 10)"),
    "epochs": (lambda v: v is None or _in(v, 0, MAX_EPOCHS, open_low=True),
               f"a positive integer up to {MAX_EPOCHS:,} or null"),
    "iterations": (lambda v: v is None or _in(v, 0, MAX_ITERATIONS, open_low=True),
                   f"a positive integer up to {MAX_ITERATIONS:,} or null"),
    "warmup": (lambda v: _in(v, 0, MAX_ITERATIONS), f"an integer in [0, {MAX_ITERATIONS:,}]"),
    "milestones": (lambda v: all(_in(x, 0, MAX_ITERATIONS) for x in v),
                   f"a list of numbers >= 0, each at most {MAX_ITERATIONS:,}"),
    "stale_after": (lambda v: _in(v, 0, MAX_STALE_AFTER, open_low=True), f"> 0 and <= {MAX_STALE_AFTER:g}"),
    "unit_interval": (lambda v: _finite(v) and 0 <= v < 1, "in [0, 1)"),
    "depth": (lambda v: _in(v, 0, MAX_DEPTH, open_low=True), f"an integer in [1, {MAX_DEPTH:,}]"),
    "depths": (lambda v: len(v) > 0 and all(_in(x, 0, MAX_DEPTH, open_low=True) for x in v),
               f"a non-empty list of integers in [1, {MAX_DEPTH:,}]"),
    "widths": (lambda v: len(v) > 0 and all(_in(x, 0, MAX_WIDTH, open_low=True) for x in v),
               f"a non-empty list of positive integers up to {MAX_WIDTH}"),
    "three_widths": (lambda v: len(v) == 3 and all(_in(x, 0, MAX_WIDTH, open_low=True) for x in v),
                     f"three positive integers up to {MAX_WIDTH}, one per stage (§4.2: 16, 32, 64)"),
    "image_size": (lambda v: _in(v, 0, MAX_IMAGE_SIZE, open_low=True), f"an integer in [1, {MAX_IMAGE_SIZE}]"),
    "unit_open_list": (lambda v: len(v) > 0 and all(_finite(x) and 0 < x < 1 for x in v),
                       "a non-empty list of numbers in (0, 1)"),
    "device": (lambda v: bool(_DEVICE.match(str(v))), "auto, cpu, cuda or cuda:N"),
    "diagnostics": (lambda v: v in DIAGNOSTICS,
                    "one of off, end, epoch (in a YAML file quote \"off\": YAML reads a bare off as false)"),
    # the registry as it is when checking: an architecture registered later counts too
    "arch": (lambda v: v in list_models(), lambda: "one of " + ", ".join(list_models())),
    "arch_list": (lambda v: len(v) > 0 and all(a in list_models() for a in v),
                  lambda: "a non-empty list of " + ", ".join(list_models())),
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


NO_DEFAULT = object()


def default_of(dotted: str):
    """The schema default of a key (a key that a config from an older resexp lacks
    had this value then); a sentinel when the key has none."""
    f = leaf_fields().get(dotted)
    if f is None:
        return NO_DEFAULT
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return NO_DEFAULT if f.default in (MISSING, "???") else f.default


def exclusive_partner(dotted: str) -> str | None:
    """The key that ``dotted`` excludes (train.epochs -> train.iterations), if any."""
    f = leaf_fields().get(dotted)
    partner = f.metadata.get("excludes") if f is not None else None
    return f"{dotted.rsplit('.', 1)[0]}.{partner}" if partner else None


def check_values(cfg) -> None:
    """Every value against its rule, then every key that ``needs`` a switch against that
    switch: the first violation is one UserError line."""
    for dotted, f in leaf_fields().items():
        rule = f.metadata.get("check")
        if rule is None:
            continue
        value = OmegaConf.select(cfg, dotted)
        if isinstance(rule, tuple):
            ok, want = value in rule, "one of " + ", ".join(rule)
        else:
            test, want = RULES[rule]
            ok = test(value)
            want = want() if callable(want) else want
        if not ok:
            raise UserError(f"{dotted} must be {want}, got {_shown(value)!r}")
    for dotted, f in leaf_fields().items():
        if f.metadata.get("needs"):
            _check_needs(cfg, dotted, f"{dotted.rsplit('.', 1)[0]}.{f.metadata['needs']}")


def _shown(value):
    return list(value) if hasattr(value, "__len__") and not isinstance(value, str) else value


def _check_needs(cfg, dotted: str, switch: str) -> None:
    value, on = _shown(OmegaConf.select(cfg, dotted)), OmegaConf.select(cfg, switch)
    if not on and value != default_of(dotted):
        off, how = ("false", f"{switch}=true") if isinstance(on, bool) else (on, f"{switch} above {on}")
        raise UserError(f"{dotted}={value!r} is set but {switch} is {off}: set {how}, or leave {dotted} out")
