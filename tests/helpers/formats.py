"""Writers for the original dataset file formats, so loaders are tested offline."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX (LeCun's MNIST format): magic 0x0000 08 ndim, big-endian dims, uint8 data; gzipped."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_mnist_source(folder: Path, n_train: int, n_test: int, seed: int = 0) -> dict:
    """The four *-ubyte.gz files of an MNIST-style dataset; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(folder / f"{name}.gz", array)
    return arrays


def write_cifar10_tarball(folder: Path, per_batch: int, seed: int = 0) -> dict:
    """cifar-10-python.tar.gz as distributed: pickled dicts of 3072-byte rows (R, G, B planes)."""
    rng = np.random.default_rng(seed)
    batches = {f"data_batch_{i}": None for i in range(1, 6)} | {"test_batch": None}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in batches:
            data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
            labels = rng.integers(0, 10, per_batch).tolist()
            batches[name] = (data, labels)
            # The original was pickled by Python 2: str keys, read back with encoding="latin1".
            _add(tar, f"cifar-10-batches-py/{name}",
                 pickle.dumps({"batch_label": name, "data": data, "labels": labels}, protocol=2))
        meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                "horse", "ship", "truck"]}
        _add(tar, "cifar-10-batches-py/batches.meta", pickle.dumps(meta, protocol=2))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cifar-10-python.tar.gz").write_bytes(buf.getvalue())
    return batches


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def write_cifar_binary(folder: Path, version, per_file: int, archive: bool = False,
                       skip: tuple[str, ...] = (), seed: int = 0) -> dict:
    """A CIFAR binary version (resexp.data.cifar_binary.BinaryVersion) with ``per_file`` random
    records per file: the extracted folder, or the archive when ``archive``. Files named in
    ``skip`` are left out. Returns {file: (images N x 3 x 32 x 32, all label bytes N x k)}."""
    rng = np.random.default_rng(seed)
    written = {}
    for name in version.train + version.test:
        images = rng.integers(0, 256, (per_file, 3, 32, 32), dtype=np.uint8)
        # label bytes as the format has them: CIFAR-100 a coarse (0-19) then a fine (0-99) one
        labels = np.stack([rng.integers(0, 20 if i < version.label_bytes - 1 else 10, per_file)
                           for i in range(version.label_bytes)], axis=1).astype(np.uint8)
        written[name] = (images, labels)
    payloads = {name: np.concatenate([labels, images.reshape(per_file, -1)], axis=1).tobytes()
                for name, (images, labels) in written.items() if name not in skip}
    folder.mkdir(parents=True, exist_ok=True)
    if archive:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name, payload in payloads.items():
                _add(tar, f"{version.folder}/{name}", payload)
        (folder / version.archive).write_bytes(buf.getvalue())
    else:
        (folder / version.folder).mkdir(exist_ok=True)
        for name, payload in payloads.items():
            (folder / version.folder / name).write_bytes(payload)
    return written
