"""Real-data requirements: skipped where the data are absent, failed in CI (RESEXP_REQUIRE_REAL_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def need_fashion_mnist():
    """Skip where the Debian package is absent, except in CI, which must have it."""
    if not FASHION_DIR.is_dir():
        if os.environ.get("RESEXP_REQUIRE_REAL_DATA"):
            pytest.fail(f"{FASHION_DIR} missing: apt-get install dataset-fashion-mnist")
        pytest.skip("apt-get install dataset-fashion-mnist for the real-data tests")


# The four original MNIST files; on these machines beside the repository (../shared/data/mnist).
MNIST_DIR = Path(os.environ.get("RESEXP_MNIST_SOURCE",
                                Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"))


def need_mnist():
    """Skip where the MNIST files are absent, except in CI, which must have them."""
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        if os.environ.get("RESEXP_REQUIRE_REAL_DATA"):
            pytest.fail(f"{MNIST_DIR} lacks the MNIST *-ubyte.gz files: set RESEXP_MNIST_SOURCE=FOLDER")
        pytest.skip("MNIST's four *-ubyte.gz files not found: set RESEXP_MNIST_SOURCE to the folder that holds them")
    return MNIST_DIR


# The CIFAR-10 training set in the official binary version (../shared/data/cifar10, its README
# lists the checks); beside the repository on these machines.
CIFAR10_DIR = Path(os.environ.get("RESEXP_CIFAR10_SOURCE",
                                  Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10"))


def need_cifar10():
    """Skip where the CIFAR-10 binary files are absent, except in CI, which must have them."""
    if not (CIFAR10_DIR / "cifar-10-batches-bin" / "data_batch_1.bin").is_file():
        if os.environ.get("RESEXP_REQUIRE_REAL_DATA"):
            pytest.fail(f"{CIFAR10_DIR} lacks cifar-10-batches-bin/: set RESEXP_CIFAR10_SOURCE=FOLDER")
        pytest.skip("CIFAR-10's binary version (cifar-10-batches-bin/) not found: set RESEXP_CIFAR10_SOURCE to "
                    "the folder that holds it")
    return CIFAR10_DIR
