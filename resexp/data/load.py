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
training device; each epoch shuffles indices and each batch is cropped, flipped
and normalised there, with no DataLoader workers and no host round trips.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import get_class

from resexp.data import cifar_binary
from resexp.data.stage import stage_source
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


def open_dataset(ds_cfg, train: bool):
    """The torchvision-style dataset object for one split, staging or downloading if needed."""
    cls, root = dataset_class(ds_cfg), data_root(ds_cfg)
    args = dict(ds_cfg.train_args if train else ds_cfg.test_args)
    try:
        return _construct(cls, root, False, args)
    except (RuntimeError, OSError):
        pass  # not on disk yet: torchvision says so with RuntimeError
    source = Path(ds_cfg.source).expanduser() if ds_cfg.get("source") else None
    binary = cifar_binary.find(ds_cfg["_target_"], source)
    if binary is not None:  # read where it is: torchvision has no reader for this version
        return binary.open(train, int(ds_cfg.num_classes), held_out=int(ds_cfg.val_size))
    if source is not None and source.is_dir() and any(source.iterdir()):
        stage_source(source, root, ds_cfg.stage_dir)
        try:
            return _construct(cls, root, False, args)
        except (RuntimeError, OSError) as err:
            raise UserError(f"dataset {ds_cfg.name}: the files staged from {source} are not "
                            f"usable ({err})") from err
    reason = "download disabled"
    if ds_cfg.download:
        try:
            return _construct(cls, root, True, args)
        except Exception as err:  # urllib/socket errors vary; any failure means "not here"
            reason = f"download failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    raise UserError(f"dataset {ds_cfg.name} is not under {root} ({reason}); {ds_cfg.missing_hint}")


def evaluated_per_epoch(ds_cfg) -> int:
    """How many images a run evaluates after each epoch (the dry run's estimate counts them):
    the test split plus the validation split, or the held-out images alone where they are the
    test split (CIFAR's binary version without its test file, see make_data)."""
    source = Path(ds_cfg.source).expanduser() if ds_cfg.get("source") else None
    binary = cifar_binary.find(ds_cfg["_target_"], source)
    if binary is not None and not binary.has_test() and ds_cfg.val_size:
        return min(ds_cfg.test_subset or ds_cfg.val_size, ds_cfg.val_size)
    return (ds_cfg.test_subset or ds_cfg.test_size) + ds_cfg.val_size


def on_disk(ds_cfg) -> str:
    """'ready' (loadable now), 'source' (will be staged from dataset.source) or 'missing'."""
    return found(ds_cfg)[0]


def found(ds_cfg) -> tuple[str, str]:
    """(on_disk's answer, the format found): 'torchvision' (the class's own files, staged from
    dataset.source where needed), 'binary(...)' (CIFAR's binary version, read in place) or '-'."""
    try:
        _construct(dataset_class(ds_cfg), data_root(ds_cfg), False, dict(ds_cfg.train_args))
        return "ready", "torchvision"
    except (RuntimeError, OSError):
        source = Path(ds_cfg.source).expanduser() if ds_cfg.get("source") else None
        binary = cifar_binary.find(ds_cfg["_target_"], source)
        if binary is not None:
            return "ready", binary.describe()
        return ("source", "torchvision") if source and source.is_dir() else ("missing", "-")


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
    test: Split
    val: Split | None
    mean: torch.Tensor  # 1 x C x 1 x 1, on the device
    std: torch.Tensor
    pad: int
    hflip: bool
    num_classes: int
    channels: int
    image_size: int

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float().div_(255) - self.mean) / self.std


def load_data(ds_cfg, device: torch.device) -> Data:
    """Both splits as tensors on ``device``, with the validation/subset cuts applied."""
    x, y = to_tensors(open_dataset(ds_cfg, train=True), ds_cfg.channels)
    test = open_test(ds_cfg)
    for split, n, key in (("training", len(y), "train_size"), ("test", test and len(test[1]), "test_size")):
        if n is not None and n != ds_cfg[key]:  # the YAML's size drives validation and estimates
            raise UserError(f"dataset {ds_cfg.name}: the {split} split has {n} images, "
                            f"but its YAML says {key}: {ds_cfg[key]}")
    return make_data(ds_cfg, (x, y), test, device)


def open_test(ds_cfg) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The test split, or None where the files hold only training images and
    ``dataset.val_size`` holds some out: those then are the test split."""
    try:
        return to_tensors(open_dataset(ds_cfg, train=False), ds_cfg.channels)
    except cifar_binary.NoTestImages:
        if not ds_cfg.val_size:
            raise
        return None


def random_data(ds_cfg, n: int, device: torch.device, seed: int = 0) -> Data:
    """Random images of the dataset's shape (for benchmarks: speed, not learning)."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, ds_cfg.channels, ds_cfg.image_size, ds_cfg.image_size)
    x = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    y = torch.randint(0, ds_cfg.num_classes, (n,), generator=g)
    return make_data(ds_cfg, (x, y), (x[: min(n, 1000)], y[: min(n, 1000)]), device)


def make_data(ds_cfg, train, test, device: torch.device) -> Data:
    """Data from (images, labels) of both splits: validation split, subsets, device copy.
    ``test`` None (no test images on disk, see open_test): the held-out images are the test
    split instead of a validation split, so they are evaluated once per epoch, not twice."""
    x, y = train
    val = None
    if ds_cfg.val_size:  # the last val_size training images, as in the paper's 45k/5k split
        if ds_cfg.val_size >= len(y):
            raise UserError(f"dataset.val_size={ds_cfg.val_size} leaves no training images")
        val = Split(x[-ds_cfg.val_size:].to(device), y[-ds_cfg.val_size:].to(device))
        x, y = x[: -ds_cfg.val_size], y[: -ds_cfg.val_size]
    xt, yt = test if test is not None else (val.x, val.y)
    val = val if test is not None else None
    n, nt = ds_cfg.train_subset or len(y), ds_cfg.test_subset or len(yt)
    shape = lambda t: torch.tensor(t, dtype=torch.float32, device=device).view(1, -1, 1, 1)  # noqa: E731
    return Data(
        train=Split(x[:n].to(device), y[:n].to(device)), test=Split(xt[:nt].to(device), yt[:nt].to(device)),
        val=val, mean=shape(list(ds_cfg.mean)), std=shape(list(ds_cfg.std)),
        pad=int(ds_cfg.augment.pad), hflip=bool(ds_cfg.augment.hflip),
        num_classes=int(ds_cfg.num_classes), channels=int(ds_cfg.channels),
        image_size=int(ds_cfg.image_size),
    )


# --------------------------------------------------------------------------- batches
def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``pad`` and cut a random HxW window per image, in one gather."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b, 1), device=x.device, generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b, 1), device=x.device, generator=gen)
    rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], device=x.device, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def epoch_generators(seed: int, epoch: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """Shuffling (CPU) and augmentation (device) generators that depend only on
    (seed, epoch): a resumed run replays exactly the batches it would have seen."""
    key = seed * 1_000_003 + epoch
    shuffle = torch.Generator().manual_seed(key)
    augment = torch.Generator(device=device).manual_seed(key)
    return shuffle, augment


def train_batches(data: Data, batch_size: int, seed: int, epoch: int,
                  drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled, augmented, normalised batches on the data's device."""
    n, device = len(data.train), data.train.y.device
    shuffle, gen = epoch_generators(seed, epoch, device)
    order = torch.randperm(n, generator=shuffle).to(device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start: start + batch_size]
        x = data.train.x[idx]
        if data.pad:
            x = random_crop(x, data.pad, gen)
        if data.hflip:
            x = random_flip(x, gen)
        yield data.normalize(x), data.train.y[idx]


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
        imgs = torch.stack([protos[c, :, i: i + image_size, j: j + image_size]
                            for c, (i, j) in zip(labels.tolist(), shifts.tolist())])
        imgs = imgs + noise * torch.randn(imgs.shape, generator=g)
        self.data = (imgs.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        self.targets = labels.tolist()

    def __len__(self) -> int:
        return len(self.targets)
