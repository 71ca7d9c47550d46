"""The official binary version of CIFAR-10 and CIFAR-100 ("suitable for C programs").

Each file is a run of fixed-length records: the label byte(s), then 1024 red, 1024 green
and 1024 blue bytes of one 32x32 image, each plane row-major. CIFAR-10 has one label byte
and 10,000 records per ``data_batch_N.bin`` / ``test_batch.bin``; CIFAR-100 has two
(coarse, then fine) in ``train.bin`` (50,000) and ``test.bin`` (10,000), and its class is
the fine label, as in torchvision's CIFAR100.

``dataset.source`` may hold the archive as distributed or its extracted folder (or be that
folder). Both are read where they are, nothing is copied, and every file is checked
against its published MD5 before use. The images come out as torchvision's classes give
them, so a run on either version of the same files computes the same thing.
"""

from __future__ import annotations

import hashlib
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from resexp.errors import UserError

PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class BinaryVersion:
    archive: str                  # the file as distributed
    archive_md5: str              # published beside the download link
    folder: str                   # what the archive extracts to
    train: tuple[str, ...]
    test: tuple[str, ...]
    records: dict[str, int]       # images per file
    label_bytes: int              # bytes before the pixels of a record
    label_at: int                 # which of them is the class
    classes: int                  # labels are 0 .. classes - 1: a larger one marks a foreign file
    md5: dict[str, str] = field(default_factory=dict)  # of the extracted files, where known

    @property
    def record_bytes(self) -> int:
        return self.label_bytes + PIXELS


CIFAR10 = BinaryVersion(
    archive="cifar-10-binary.tar.gz", archive_md5="c32a1d4ab5d03f1284b67883e8d87530",
    folder="cifar-10-batches-bin",
    train=tuple(f"data_batch_{i}.bin" for i in range(1, 6)), test=("test_batch.bin",),
    records={**{f"data_batch_{i}.bin": 10_000 for i in range(1, 6)}, "test_batch.bin": 10_000},
    label_bytes=1, label_at=0, classes=10,
    md5={"data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25",
         "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
         "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421",
         "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
         "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d",
         "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d"},
)

# Only the archive's MD5 is published for CIFAR-100's binary version: its extracted files
# are checked by their size and by the range of their labels instead.
CIFAR100 = BinaryVersion(
    archive="cifar-100-binary.tar.gz", archive_md5="03b5dce01913d631647c71ecec9e9cb8",
    folder="cifar-100-binary", train=("train.bin",), test=("test.bin",),
    records={"train.bin": 50_000, "test.bin": 10_000}, label_bytes=2, label_at=1, classes=100,
)

# The dataset YAML's _target_ -> the binary version of the same images.
VERSIONS = {"torchvision.datasets.CIFAR10": CIFAR10, "torchvision.datasets.CIFAR100": CIFAR100}


class NoTestImages(UserError):
    """The source holds the training files of the binary version but not its test file."""


@dataclass(frozen=True)
class BinarySource:
    """Where the binary version was found: an extracted folder or the archive."""
    version: BinaryVersion
    path: Path
    archive: bool

    def has_test(self) -> bool:
        if self.archive:  # the official archive always holds the test file (its MD5 says so)
            return True
        return all((self.path / name).is_file() for name in self.version.test)

    def describe(self) -> str:
        """For `resexp datasets`: which of the two forms, and whether the test file is there."""
        form = self.version.archive if self.archive else f"{self.version.folder}/"
        return f"binary({form}{'' if self.has_test() else ',no-test-file'})"

    def open(self, train: bool, held_out: int = 0) -> "CIFARBinary":
        """One split's images; NoTestImages for the test split where the test file is absent,
        and for both where nothing is held out either (a run then has no test split)."""
        names = self.version.train if train else self.version.test
        if not self.has_test() and not (train and held_out):
            raise NoTestImages(f"{self.path} has no {', '.join(self.version.test)} (the test images): set "
                               f"dataset.val_size=5000 to hold out the last 5,000 training images "
                               f"instead (the paper's 45k/5k split, §4.2), or add the test file")
        payloads = self._read_archive(names) if self.archive else {n: self._read_file(n) for n in names}
        return CIFARBinary([decode(self.version, n, payloads[n], self._where(n)) for n in names])

    def _where(self, name: str) -> str:
        return f"{self.path}:{self.version.folder}/{name}" if self.archive else str(self.path / name)

    def _read_file(self, name: str) -> bytes:
        path = self.path / name
        if not path.is_file():
            raise UserError(f"{path} is missing: the binary version has {', '.join(self.version.train)} "
                            f"beside it; put the whole {self.version.folder}/ there")
        payload = path.read_bytes()
        check_file(self.version, name, payload, str(path))
        return payload

    def _read_archive(self, names) -> dict[str, bytes]:
        digest = md5_of_file(self.path)
        if digest != self.version.archive_md5:
            raise UserError(f"{self.path} is damaged or cut short (MD5 {digest}, the official archive's "
                            f"is {self.version.archive_md5}); replace it with an intact copy")
        try:
            with tarfile.open(self.path) as tar:
                payloads = {n: tar.extractfile(f"{self.version.folder}/{n}").read() for n in names}
        except (tarfile.TarError, KeyError, EOFError, zlib.error, AttributeError) as err:
            raise UserError(f"cannot read {self.path} ({type(err).__name__}); "
                            f"replace it with an intact copy") from err
        for name, payload in payloads.items():
            check_file(self.version, name, payload, self._where(name))
        return payloads


def find(target: str, source: Path | None) -> BinarySource | None:
    """The binary version of ``target``'s dataset in ``source``, if it is there: the extracted
    folder inside it, ``source`` itself being that folder, or the archive."""
    version = VERSIONS.get(target)
    if version is None or source is None or not source.is_dir():
        return None
    for folder in (source / version.folder, source):
        if any((folder / name).is_file() for name in version.train):
            return BinarySource(version, folder, archive=False)
    if (source / version.archive).is_file():
        return BinarySource(version, source / version.archive, archive=True)
    return None


def md5_of_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def check_file(version: BinaryVersion, name: str, payload: bytes, where: str) -> None:
    """One line naming the file if it is not the official one: wrong size, then wrong MD5."""
    expected = version.records[name] * version.record_bytes
    if len(payload) != expected:
        raise UserError(f"{where} is damaged or cut short ({len(payload):,} bytes, the official file "
                        f"has {expected:,}); replace it with an intact copy")
    known = version.md5.get(name)
    if known is not None and hashlib.md5(payload).hexdigest() != known:
        raise UserError(f"{where} is damaged (its MD5 is not the official {known}); "
                        f"replace it with an intact copy")


def decode(version: BinaryVersion, name: str, payload: bytes, where: str):
    """(uint8 images N x 3 x 32 x 32, int64 labels N) of one file's records. A label beyond the
    version's own classes marks the file damaged; dataset.num_classes is checked against the
    labels where any dataset's are (resexp.data.load.check_labels)."""
    records = np.frombuffer(payload, dtype=np.uint8).reshape(-1, version.record_bytes)
    labels = records[:, version.label_at].astype(np.int64)
    if labels.size and labels.max() >= version.classes:  # a shifted or foreign file
        raise UserError(f"{where} is damaged: a label is {labels.max()}, "
                        f"but the dataset has {version.classes} classes")
    images = records[:, version.label_bytes:].reshape(-1, 3, 32, 32)
    return images, labels


class CIFARBinary:
    """A torchvision-style dataset over decoded files: ``data`` (N x 3 x 32 x 32 uint8) and
    ``targets``, in file order."""

    def __init__(self, parts: list[tuple[np.ndarray, np.ndarray]]):
        self.data = np.concatenate([images for images, _ in parts])
        self.targets = np.concatenate([labels for _, labels in parts])

    def __len__(self) -> int:
        return len(self.targets)
