"""Datasets as uint8 tensors in memory, batches made on the device.

A dataset is one YAML file (configs/dataset/) naming a torchvision-style class
(``_target_``): anything whose constructor takes the YAML's ``train_args``/``test_args``
(and ``root`` and ``download``, passed where it takes them), and that exposes
``data``/``targets`` (or ``labels``) or at least yields (image, label) pairs.

Offline, a ``source`` folder with the original files is staged into the class's
folder layout first (torchvision cannot download from a local mirror; stage.py).
CIFAR's binary version, which torchvision cannot read, is read in place instead
(cifar_binary.py).

Hot path (airbench-style): the whole training set is one uint8 tensor on the
training device; each epoch draws its order and every image's crop and flip at once,
and each batch is then gathered, cropped, flipped and normalised there in a handful of
kernels (a CUDA-graphed step replays in milliseconds, so each small launch around it
shows), with no DataLoader workers and no host round trips.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import get_class

from resexp.data import cifar_binary
from resexp.data.stage import source_problem, stage_source
from resexp.errors import UserError

DEFAULT_ROOT = Path("~/.cache/resexp/data")


def data_root(ds_cfg) -> Path:
    """``dataset.root``, else $RESEXP_DATA, else ~/.cache/resexp/data."""
    root = ds_cfg.get("root") or os.environ.get("RESEXP_DATA") or DEFAULT_ROOT
    return Path(root).expanduser()


# --------------------------------------------------------------------------- opening
def _construct(cls, root: Path, download: bool, args: dict):
    """``cls(root=..., download=..., **args)``, passing ``root`` and ``download`` only where
    the class takes them (torchvision's FakeData takes neither)."""
    kwargs = dict(args)
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # a builtin (builtins.int): not a dataset class
        raise UserError(f"dataset _target_ {cls.__module__}.{cls.__qualname__} is not a dataset class") from None
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    if "root" in signature.parameters or takes_any:
        kwargs["root"] = str(root)
    if "download" in signature.parameters:
        kwargs["download"] = download
    try:
        signature.bind(**kwargs)
    except TypeError as err:  # a train_args/test_args key the class does not take
        raise UserError(f"{cls.__name__} does not accept these arguments ({err})") from None
    return cls(**kwargs)


def dataset_class(ds_cfg):
    try:
        cls = get_class(ds_cfg["_target_"])
    except Exception as err:  # hydra wraps ImportError/AttributeError in its own types
        raise UserError(f"dataset {ds_cfg.name}: cannot import _target_ {ds_cfg['_target_']!r}") from err
    return cls


def source_of(ds_cfg) -> Path | None:
    return Path(ds_cfg.source).expanduser() if ds_cfg.get("source") else None


def open_dataset(ds_cfg, train: bool):
    """The torchvision-style dataset object for one split: from the data root, else from
    dataset.source (read in place, or staged), else downloaded. UserError, one line saying
    why, where none of these works."""
    cls, root = dataset_class(ds_cfg), data_root(ds_cfg)
    args = dict(ds_cfg.train_args if train else ds_cfg.test_args)
    try:
        return _construct(cls, root, False, args)
    except (RuntimeError, OSError):
        pass  # not on disk yet: torchvision says so with RuntimeError
    how, source = obtainable(ds_cfg, cls), source_of(ds_cfg)
    if how == "binary":  # read where it is: torchvision has no reader for this version
        return cifar_binary.find(ds_cfg["_target_"], source).open(train, held_out=int(ds_cfg.val_size))
    if how == "staged":
        stage_source(source, root, ds_cfg.stage_dir)
        try:
            return _construct(cls, root, False, args)
        except (RuntimeError, OSError) as err:
            raise UserError(f"dataset {ds_cfg.name}: the files staged from {source} are not "
                            f"usable ({reason(err)}); {ds_cfg.missing_hint}") from err
    # torchvision makes its folders before it downloads: a failed download leaves none behind
    made = [folder for folder in (root / cls.__name__ / "raw", root / cls.__name__, root) if not folder.exists()]
    try:
        return _construct(cls, root, True, args)
    except Exception as err:  # urllib/socket errors vary; any failure means "not here"
        for folder in made:
            with contextlib.suppress(OSError):  # one that holds something stays
                folder.rmdir()
        raise UserError(_missing(ds_cfg, f"the download failed: {reason(err)}")) from err


def obtainable(ds_cfg, cls=None) -> str:
    """How a dataset that is not under its root would be had, looked at without writing or
    downloading anything: 'binary' (CIFAR's binary version in dataset.source, read where it
    is), 'staged' (dataset.source holds the files the class reads) or 'download'. UserError,
    one line saying why, where none of them can work."""
    cls = cls or dataset_class(ds_cfg)
    source = source_of(ds_cfg)
    if source is not None and source.exists():
        if cifar_binary.find(ds_cfg["_target_"], source) is not None:
            return "binary"
        problem = "is a file, not a folder" if not source.is_dir() else source_problem(source, cls)
        if problem is None:
            return "staged"
        raise UserError(f"dataset {ds_cfg.name}: dataset.source={source} {problem}; {ds_cfg.missing_hint}")
    if ds_cfg.download:
        return "download"
    raise UserError(_missing(ds_cfg, "download disabled"))


def _missing(ds_cfg, why: str) -> str:
    """The error line of a dataset found nowhere: a dataset.source that does not exist first."""
    source = source_of(ds_cfg)
    if source is not None:
        return f"dataset {ds_cfg.name}: dataset.source={source} does not exist ({why}); {ds_cfg.missing_hint}"
    return f"dataset {ds_cfg.name} is not under {data_root(ds_cfg)} ({why}); {ds_cfg.missing_hint}"


# torchvision's advice when its files are missing, which is wrong offline and where a
# source was staged: the error line gives its own (the dataset's missing_hint).
_DOWNLOAD_ADVICE = re.compile(r"\s*You can use download=True to download it\.?")


def reason(err: BaseException) -> str:
    """Why ``err`` happened, in one line: its message's first line, and where that only
    introduces the rest (torchvision's "Error downloading X:" before each mirror's error,
    e.g. <urlopen error [Errno -2] Name or service not known>), its last line too."""
    lines = [line.strip() for line in _DOWNLOAD_ADVICE.sub("", str(err)).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return f"{lines[0]} {lines[-1]}" if len(lines) > 1 and lines[0].endswith(":") else lines[0]


def evaluated_per_epoch(ds_cfg) -> int:
    """How many images a run evaluates after each epoch (the dry run's estimate counts them):
    the test split plus the validation split, or the held-out images alone where they are the
    test split (CIFAR's binary version without its test file, see make_data)."""
    binary = cifar_binary.find(ds_cfg["_target_"], source_of(ds_cfg))
    if binary is not None and not binary.has_test() and ds_cfg.val_size:
        return min(ds_cfg.test_subset or ds_cfg.val_size, ds_cfg.val_size)
    return (ds_cfg.test_subset or ds_cfg.test_size) + ds_cfg.val_size


def found(ds_cfg) -> tuple[str, str]:
    """('ready' (loadable now), 'source' (will be staged from dataset.source) or 'missing',
    the format found): 'torchvision' (the class's own files, staged from
    dataset.source where needed), 'binary(...)' (CIFAR's binary version, read in place) or '-'.
    UserError where dataset.source is set and cannot serve (missing, or another dataset's)."""
    cls = dataset_class(ds_cfg)
    try:
        _construct(cls, data_root(ds_cfg), False, dict(ds_cfg.train_args))
        return "ready", "torchvision"
    except (RuntimeError, OSError):
        pass
    try:
        how = obtainable(ds_cfg, cls)
    except UserError:
        if source_of(ds_cfg) is not None:
            raise
        return "missing", "-"  # nothing set wrong: the files are just not here (download disabled)
    if how == "binary":
        return "ready", cifar_binary.find(ds_cfg["_target_"], source_of(ds_cfg)).describe()
    return ("source", "torchvision") if how == "staged" else ("missing", "-")


def check(ds_cfg, fetch: bool = True) -> str | None:
    """A dataset checked before a sweep starts. ``fetch``: its training split is opened
    (staged, downloaded) and its labels checked against dataset.num_classes. Without (a dry
    run) nothing is written or downloaded: a note where it would be downloaded, else None.
    UserError, one line, where it cannot be had."""
    if fetch:
        check_labels(ds_cfg, to_tensors(open_dataset(ds_cfg, train=True), ds_cfg.channels)[1])
        return None
    if ds_cfg.synthetic or found(ds_cfg)[0] != "missing":
        return None
    obtainable(ds_cfg)  # UserError where no download may fetch it
    where = f"dataset.source={source_of(ds_cfg)} does not exist: " if source_of(ds_cfg) else ""
    return f"data: {where}dataset {ds_cfg.name} is not under {data_root(ds_cfg)} and will be downloaded"


def check_labels(ds_cfg, labels: torch.Tensor) -> None:
    """UserError where a label is no class of dataset.num_classes (0 .. num_classes - 1): the
    loss would fail on it in the middle of the first epoch."""
    if len(labels) and (labels.min() < 0 or labels.max() >= ds_cfg.num_classes):
        low, high = int(labels.min()), int(labels.max())
        raise UserError(f"dataset.num_classes={ds_cfg.num_classes}, but the labels of dataset {ds_cfg.name} go "
                        f"from {low} to {high}" + (f": set dataset.num_classes={high + 1}" if low >= 0 else ""))


# --------------------------------------------------------------------------- tensors
def to_tensors(ds, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images N x C x H x W, int64 labels N) from a torchvision-style dataset."""
    data = getattr(ds, "data", None)
    labels = getattr(ds, "targets", None)
    if labels is None:
        labels = getattr(ds, "labels", None)
    if data is None or labels is None or len(data) != len(labels):
        pairs = [ds[i] for i in range(len(ds))]  # generic path: decode every image
        data = np.stack([np.asarray(img) for img, _ in pairs])
        labels = [label for _, label in pairs]
    x = torch.as_tensor(np.asarray(data))
    if x.dtype != torch.uint8:
        raise UserError(f"{type(ds).__name__}: expected uint8 images, got {x.dtype}")
    if x.ndim == 3:  # N x H x W (MNIST family)
        x = x.unsqueeze(1)
    elif x.shape[1] != channels and x.shape[-1] == channels:  # N x H x W x C (CIFAR)
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] != channels:
        raise UserError(f"{type(ds).__name__}: images have shape {tuple(x.shape[1:])}, "
                        f"config says {channels} channels")
    return x.contiguous(), torch.as_tensor(np.asarray(labels), dtype=torch.int64)


@dataclass
class Split:
    x: torch.Tensor  # uint8, N x C x H x W, on the training device
    y: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Data:
    train: Split
    test: Split  # what each epoch is evaluated on: the test split, or see evaluated_on
    val: Split | None
    levels: torch.Tensor  # C x 256 float32: what each pixel value of each channel normalises to
    channel: torch.Tensor  # 1 x C x 1 x 1 channel indices, for the lookup
    pad: int
    hflip: bool
    num_classes: int
    channels: int
    image_size: int
    # "test", or "val" where ``test`` holds images held out of the training split (the files
    # have no test split, see make_data): what every file and line calls that evaluation
    evaluated_on: str = "test"

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images as float32 ``(x / 255 - mean) / std``, in one lookup."""
        return self.levels[self.channel, x.long()]


def pixel_levels(mean, std, device: torch.device) -> torch.Tensor:
    """C x 256: ``(v / 255 - mean) / std`` for every pixel value v, computed with the very
    float32 operations a batch would take, so a lookup gives the arithmetic's result bit
    for bit in two kernels instead of four."""
    v = torch.arange(256, dtype=torch.float32, device=device).div_(255)
    column = lambda t: torch.tensor(list(t), dtype=torch.float32, device=device)[:, None]  # noqa: E731
    return (v - column(mean)) / column(std)


def load_data(ds_cfg, device: torch.device) -> Data:
    """Both splits as tensors on ``device``, with the validation/subset cuts applied."""
    x, y = to_tensors(open_dataset(ds_cfg, train=True), ds_cfg.channels)
    test = open_test(ds_cfg)
    for split, n, key in (("training", len(y), "train_size"), ("test", test and len(test[1]), "test_size")):
        if n is not None and n != ds_cfg[key]:  # the YAML's size drives validation and estimates
            raise UserError(f"dataset {ds_cfg.name}: the {split} split has {n} images, "
                            f"but its YAML says {key}: {ds_cfg[key]}")
    check_labels(ds_cfg, y if test is None else torch.cat([y, test[1]]))
    return make_data(ds_cfg, (x, y), test, device)


def open_test(ds_cfg) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The test split, or None where the files hold only training images and
    ``dataset.val_size`` holds some out: those then take its place (named val, make_data)."""
    try:
        return to_tensors(open_dataset(ds_cfg, train=False), ds_cfg.channels)
    except cifar_binary.NoTestImages:
        if not ds_cfg.val_size:
            raise
        return None


def random_data(ds_cfg, n: int, device: torch.device) -> Data:
    """``n`` random training images of the dataset's shape and up to 1,000 of them as the
    test split (timings: speed, not learning). Nothing of the dataset's split sizes applies:
    val_size and the subsets count the dataset's own images, not these."""
    g = torch.Generator().manual_seed(0)
    shape = (n, ds_cfg.channels, ds_cfg.image_size, ds_cfg.image_size)
    x = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8).to(device)
    y = torch.randint(0, ds_cfg.num_classes, (n,), generator=g).to(device)
    return assemble(ds_cfg, Split(x, y), Split(x[:1000], y[:1000]), None, device)


def make_data(ds_cfg, train, test, device: torch.device) -> Data:
    """Data from (images, labels) of both splits: validation split, subsets, device copy.
    ``test`` None (no test images on disk, see open_test): the held-out images take the test
    split's place instead of being a validation split beside it, so they are evaluated once
    per epoch, not twice, and that evaluation is named val (``evaluated_on``), never test."""
    x, y = train
    val = None
    if ds_cfg.val_size:  # the last val_size training images, as in the paper's 45k/5k split
        if ds_cfg.val_size >= len(y):
            raise UserError(f"dataset.val_size={ds_cfg.val_size} leaves no training images")
        val = Split(x[-ds_cfg.val_size:].to(device), y[-ds_cfg.val_size:].to(device))
        x, y = x[: -ds_cfg.val_size], y[: -ds_cfg.val_size]
    held_out = test is None
    xt, yt = (val.x, val.y) if held_out else test
    val = None if held_out else val
    n, nt = ds_cfg.train_subset or len(y), ds_cfg.test_subset or len(yt)
    data = assemble(ds_cfg, Split(x[:n].to(device), y[:n].to(device)), Split(xt[:nt].to(device), yt[:nt].to(device)),
                    val, device)
    data.evaluated_on = "val" if held_out else "test"
    return data


def assemble(ds_cfg, train: Split, test: Split, val: Split | None, device: torch.device) -> Data:
    """Data of splits already on ``device``, with the dataset's normalisation and augmentation."""
    return Data(
        train=train, test=test, val=val, levels=pixel_levels(ds_cfg.mean, ds_cfg.std, device),
        channel=torch.arange(int(ds_cfg.channels), device=device).view(1, -1, 1, 1),
        pad=int(ds_cfg.augment.pad), hflip=bool(ds_cfg.augment.hflip),
        num_classes=int(ds_cfg.num_classes), channels=int(ds_cfg.channels),
        image_size=int(ds_cfg.image_size),
    )


# --------------------------------------------------------------------------- batches
def epoch_generators(seed: int, epoch: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """Shuffling (CPU) and augmentation (device) generators that depend only on
    (seed, epoch): a resumed run replays exactly the batches it would have seen."""
    key = seed * 1_000_003 + epoch
    shuffle = torch.Generator().manual_seed(key)
    augment = torch.Generator(device=device).manual_seed(key)
    return shuffle, augment


def crop_windows(n: int, size: int, pad: int, hflip: bool, gen: torch.Generator,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The crop window and flip of each of an epoch's ``n`` images, drawn in one call: the
    rows (n x size) and columns (n x size) of its zero-padded copy that the augmented image
    takes, the columns reversed where it is flipped. One draw per image codes both offsets
    and the flip, each uniform and independent of the others (§4.2: a random crop of the
    image padded by 4 pixels on each side, a random horizontal flip)."""
    k = 2 * pad + 1
    code = torch.randint(0, k * k * (2 if hflip else 1), (n,), generator=gen, device=device)
    steps = torch.arange(size, device=device)
    rows = (code % k)[:, None] + steps
    cols = (code // k % k)[:, None] + torch.where((code >= k * k)[:, None], size - 1 - steps, steps)
    return rows, cols


def train_batches(data: Data, batch_size: int, seed: int, epoch: int,
                  drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled, augmented, normalised batches on the data's device. The order,
    the labels in that order and every image's crop and flip are made once per epoch; a
    batch is then a gather, a zero pad, one crop-and-flip gather and the normalising lookup."""
    n, device = len(data.train), data.train.y.device
    shuffle, gen = epoch_generators(seed, epoch, device)
    order = torch.randperm(n, generator=shuffle).to(device)
    labels = data.train.y[order]
    augment = bool(data.pad or data.hflip)
    if augment:
        rows, cols = crop_windows(n, data.image_size, data.pad, data.hflip, gen, device)
        rows, cols = rows[:, None, :, None], cols[:, None, None, :]
        images = torch.arange(batch_size, device=device).view(-1, 1, 1, 1)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        end = start + batch_size
        x = data.train.x[order[start:end]]
        if augment:
            padded = F.pad(x, (data.pad,) * 4) if data.pad else x
            x = padded[images[: len(x)], data.channel, rows[start:end], cols[start:end]]
        yield data.normalize(x), labels[start:end]


def iters_per_epoch(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def eval_batches(data: Data, split: Split, batch_size: int):
    for start in range(0, len(split), batch_size):
        yield data.normalize(split.x[start: start + batch_size]), split.y[start: start + batch_size]


# --------------------------------------------------------------------------- synthetic
class SyntheticImages:
    """A generated, learnable stand-in for an image dataset (torchvision-style API).

    Each class is a fixed random smooth pattern; an image is its class pattern,
    shifted by up to 2 pixels, plus noise. Train and test share the patterns and
    differ in the draws. Deterministic for a given ``seed``."""

    def __init__(self, root: str = "", train: bool = True, size: int = 2048, num_classes: int = 10,
                 channels: int = 1, image_size: int = 28, noise: float = 0.35, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        coarse = torch.rand(num_classes, channels, 7, 7, generator=g)
        protos = F.interpolate(coarse, size=image_size + 4, mode="bilinear", align_corners=False)
        g = torch.Generator().manual_seed(seed + (1 if train else 2))
        labels = torch.randint(0, num_classes, (size,), generator=g)
        shifts = torch.randint(0, 5, (size, 2), generator=g)
        # Each image is its class pattern's window at its shift: one gather from the view of
        # every pattern's 5 x 5 windows (classes x 5 x 5 x C x H x W), no loop over images.
        windows = protos.unfold(2, image_size, 1).unfold(3, image_size, 1).permute(0, 2, 3, 1, 4, 5)
        imgs = windows[labels, shifts[:, 0], shifts[:, 1]]
        imgs = imgs + noise * torch.randn(imgs.shape, generator=g)
        self.data = (imgs.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        self.targets = labels.tolist()

    def __len__(self) -> int:
        return len(self.targets)
