"""CIFAR's official binary version as a source: files written here in that format, and the
real CIFAR-10 training files where they are at hand (tests/helpers/markers.py)."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch
from helpers.cli import cli
from helpers.formats import write_cifar10_tarball, write_cifar_binary
from helpers.markers import need_cifar10

from resexp.data import cifar_binary, load_data, open_dataset
from resexp.data.cifar_binary import CIFAR10, CIFAR100
from resexp.data.load import found
from resexp.errors import UserError
from resexp.settings.compose import load_config

PER_FILE = 6


def small(monkeypatch, version, written, folder):
    """``version`` with PER_FILE records per file and the MD5s of the files written here (the
    checks run as on the official files, against these), put where the loader looks."""
    payloads = {name: np.concatenate([labels, images.reshape(len(images), -1)], axis=1).tobytes()
                for name, (images, labels) in written.items()}
    archive = folder / version.archive
    archive_md5 = hashlib.md5(archive.read_bytes()).hexdigest() if archive.is_file() else version.archive_md5
    md5 = {name: hashlib.md5(p).hexdigest() for name, p in payloads.items()} if version.md5 else {}
    patched = dataclasses.replace(version, records={name: PER_FILE for name in written}, md5=md5,
                                  archive_md5=archive_md5)
    target = next(t for t, v in cifar_binary.VERSIONS.items() if v is version)
    monkeypatch.setitem(cifar_binary.VERSIONS, target, patched)
    return patched


def cifar10_cfg(source, *extra):
    n = 5 * PER_FILE
    return load_config(["dataset=cifar10", f"dataset.source={source}", "dataset.download=false",
                        f"dataset.train_size={n}", f"dataset.test_size={PER_FILE}", *extra])


@pytest.mark.parametrize("archive", [False, True], ids=["folder", "archive"])
def test_cifar10_binary_round_trip(tmp_path, monkeypatch, archive):
    written = write_cifar_binary(tmp_path / "src", CIFAR10, PER_FILE, archive=archive)
    small(monkeypatch, CIFAR10, written, tmp_path / "src")
    data = load_data(cifar10_cfg(tmp_path / "src", "dataset.val_size=4").dataset, torch.device("cpu"))
    images = np.concatenate([written[f"data_batch_{i}.bin"][0] for i in range(1, 6)])
    labels = np.concatenate([written[f"data_batch_{i}.bin"][1][:, 0] for i in range(1, 6)])
    assert data.train.x.dtype == torch.uint8 and data.train.x.shape == (26, 3, 32, 32)
    assert np.array_equal(data.train.x.numpy(), images[:26]) and np.array_equal(data.train.y.numpy(), labels[:26])
    assert np.array_equal(data.val.x.numpy(), images[26:]) and np.array_equal(data.val.y.numpy(), labels[26:])
    assert np.array_equal(data.test.x.numpy(), written["test_batch.bin"][0])
    assert np.array_equal(data.test.y.numpy(), written["test_batch.bin"][1][:, 0])


def test_record_layout_is_label_then_red_green_blue_planes_row_major(tmp_path, monkeypatch):
    written = write_cifar_binary(tmp_path / "src", CIFAR10, PER_FILE)
    small(monkeypatch, CIFAR10, written, tmp_path / "src")
    data = load_data(cifar10_cfg(tmp_path / "src").dataset, torch.device("cpu"))
    raw = (tmp_path / "src" / "cifar-10-batches-bin" / "data_batch_2.bin").read_bytes()
    record = raw[3073: 2 * 3073]  # the second image of data_batch_2 = image PER_FILE + 1 overall
    x, y = data.train.x[PER_FILE + 1], data.train.y[PER_FILE + 1]
    assert y == record[0]
    # green plane (1024 bytes in), row 2, column 5; blue plane, row 31, column 0
    assert x[1, 2, 5] == record[1 + 1024 + 2 * 32 + 5] and x[2, 31, 0] == record[1 + 2048 + 31 * 32]


def test_cifar100_class_is_the_fine_label(tmp_path, monkeypatch):
    written = write_cifar_binary(tmp_path / "src", CIFAR100, PER_FILE, archive=True, seed=1)
    small(monkeypatch, CIFAR100, written, tmp_path / "src")
    cfg = load_config(["dataset=cifar100", f"dataset.source={tmp_path / 'src'}", "dataset.download=false",
                       f"dataset.train_size={PER_FILE}", f"dataset.test_size={PER_FILE}"])
    data = load_data(cfg.dataset, torch.device("cpu"))
    coarse, fine = written["train.bin"][1][:, 0], written["train.bin"][1][:, 1]
    assert not np.array_equal(coarse, fine)
    assert np.array_equal(data.train.y.numpy(), fine)
    assert np.array_equal(data.train.x.numpy(), written["train.bin"][0])


def test_without_the_test_file_the_held_out_images_are_the_test_split(tmp_path, monkeypatch):
    written = write_cifar_binary(tmp_path / "src", CIFAR10, PER_FILE, skip=("test_batch.bin",))
    small(monkeypatch, CIFAR10, written, tmp_path / "src")
    data = load_data(cifar10_cfg(tmp_path / "src", "dataset.val_size=5").dataset, torch.device("cpu"))
    assert len(data.train) == 25 and data.val is None  # evaluated once per epoch, as the test split
    assert np.array_equal(data.test.x.numpy(), written["data_batch_5.bin"][0][1:])
    assert np.array_equal(data.test.y.numpy(), written["data_batch_5.bin"][1][1:, 0])
    # nothing held out: one line already where a sweep checks its data (the training split)
    with pytest.raises(UserError, match=r"has no test_batch.bin .*set dataset.val_size=5000"):
        open_dataset(cifar10_cfg(tmp_path / "src").dataset, train=True)


@pytest.mark.parametrize("damage, message", [
    ("cut", r"data_batch_3.bin is damaged or cut short \(18,432 bytes, the official file has 18,438\)"),
    ("flip", r"data_batch_3.bin is damaged \(its MD5 is not the official"),
    ("remove", r"data_batch_3.bin is missing"),
])
def test_a_damaged_file_is_one_line_naming_it(tmp_path, monkeypatch, damage, message):
    written = write_cifar_binary(tmp_path / "src", CIFAR10, PER_FILE)
    small(monkeypatch, CIFAR10, written, tmp_path / "src")
    path = tmp_path / "src" / "cifar-10-batches-bin" / "data_batch_3.bin"
    raw = bytearray(path.read_bytes())
    if damage == "cut":
        path.write_bytes(raw[:-6])
    elif damage == "flip":
        raw[5000] ^= 0xFF
        path.write_bytes(raw)
    else:
        path.unlink()
    with pytest.raises(UserError, match=message):
        load_data(cifar10_cfg(tmp_path / "src").dataset, torch.device("cpu"))


def test_a_cut_archive_is_one_line_naming_it(tmp_path, monkeypatch):
    written = write_cifar_binary(tmp_path / "src", CIFAR10, PER_FILE, archive=True)
    small(monkeypatch, CIFAR10, written, tmp_path / "src")
    archive = tmp_path / "src" / CIFAR10.archive
    archive.write_bytes(archive.read_bytes()[:-100])
    with pytest.raises(UserError, match=r"cifar-10-binary.tar.gz is damaged or cut short \(MD5"):
        load_data(cifar10_cfg(tmp_path / "src").dataset, torch.device("cpu"))


def test_labels_out_of_range_are_a_damaged_file(tmp_path, monkeypatch):
    """CIFAR-100's extracted files have no published MD5: a wrong file of the right size is caught
    by its labels (here the coarse and fine bytes swapped: coarse labels < 20 pass, fine ones not)."""
    written = write_cifar_binary(tmp_path / "src", CIFAR100, PER_FILE)
    small(monkeypatch, CIFAR100, written, tmp_path / "src")
    path = tmp_path / "src" / "cifar-100-binary" / "train.bin"
    raw = bytearray(path.read_bytes())
    raw[1] = 100  # the first record's fine label
    path.write_bytes(raw)
    cfg = load_config(["dataset=cifar100", f"dataset.source={tmp_path / 'src'}", "dataset.download=false",
                       f"dataset.train_size={PER_FILE}", f"dataset.test_size={PER_FILE}"])
    with pytest.raises(UserError, match=r"train.bin is damaged: a label is 100, but the dataset has 100 classes"):
        load_data(cfg.dataset, torch.device("cpu"))


def test_datasets_shows_the_format_found(tmp_path, monkeypatch, capsys):
    write_cifar_binary(tmp_path / "folder", CIFAR10, 1, skip=("test_batch.bin",))
    write_cifar_binary(tmp_path / "tarball", CIFAR10, 1, archive=True)
    write_cifar10_tarball(tmp_path / "python", per_batch=1)
    lines, codes = {}, {}
    for form in ("folder", "tarball", "python", "empty"):
        (tmp_path / form).mkdir(exist_ok=True)
        codes[form], out, err = cli(monkeypatch, capsys, "datasets", "dataset=cifar10",
                                    f"dataset.source={tmp_path / form}")
        lines[form] = out.splitlines()[-1].split()  # after the header
    assert codes == {"folder": 0, "tarball": 0, "python": 0, "empty": 2}
    assert lines["folder"][:4] == ["cifar10", "ready", "torchvision.datasets.CIFAR10",
                                   "binary(cifar-10-batches-bin/,no-test-file)"]
    assert lines["tarball"][1:4:2] == ["ready", "binary(cifar-10-binary.tar.gz)"]
    assert lines["python"][1:4:2] == ["source", "torchvision"]  # staged when a run needs it
    assert lines["empty"][1] == "error" and f"dataset.source={tmp_path / 'empty'} is empty" in " ".join(lines["empty"])


def test_num_classes_below_the_labels_is_one_line_not_a_damaged_file(tmp_path, monkeypatch):
    """The files' labels go up to 9: dataset.num_classes=3 is the setting's mistake, not the files'."""
    written = write_cifar_binary(tmp_path / "src", CIFAR10, PER_FILE)
    small(monkeypatch, CIFAR10, written, tmp_path / "src")
    top = max(int(labels.max()) for _, labels in written.values())
    with pytest.raises(UserError, match=rf"^dataset.num_classes=3, but the labels of dataset cifar10 go from 0 "
                                        rf"to {top}: set dataset.num_classes={top + 1}$"):
        load_data(cifar10_cfg(tmp_path / "src", "dataset.num_classes=3").dataset, torch.device("cpu"))


def test_the_binary_version_given_for_another_dataset_is_named(tmp_path, monkeypatch, capsys):
    write_cifar_binary(tmp_path / "src", CIFAR10, 1)
    code, out, err = cli(monkeypatch, capsys, "train", "--out", "out", "dataset=mnist", "dataset.download=false",
                         f"dataset.source={tmp_path / 'src'}", "model.depth=8", "train.device=cpu")
    assert (code, out) == (2, "")
    assert err.strip().splitlines() == [
        f"error: dataset mnist: dataset.source={tmp_path / 'src'} holds the binary version of CIFAR10 "
        f"(cifar-10-batches-bin), not the files MNIST reads (t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, "
        f"train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz); put the four MNIST *-ubyte.gz files in a folder "
        f"and pass dataset.source=FOLDER"]
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_real_cifar10_training_files():
    """The 50,000 official training images (checks as listed in the README beside them)."""
    source = need_cifar10()
    cfg = load_config(["dataset=cifar10", f"dataset.source={source}", "dataset.download=false",
                       "dataset.val_size=5000"])
    assert found(cfg.dataset) == ("ready", "binary(cifar-10-batches-bin/,no-test-file)")
    data = load_data(cfg.dataset, torch.device("cpu"))
    assert (len(data.train), len(data.test)) == (45_000, 5_000) and data.val is None
    labels = torch.cat([data.train.y, data.test.y])
    assert torch.bincount(labels, minlength=10).tolist() == [5000] * 10
    # exact, from each channel's histogram of pixel values (no float copy of 150M pixels)
    x = torch.cat([data.train.x, data.test.x])
    counts = torch.stack([torch.bincount(x[:, c].flatten(), minlength=256) for c in range(3)]).double()
    values = torch.arange(256, dtype=torch.float64) / 255
    mean = counts @ values / counts.sum(1)
    std = (counts @ values**2 / counts.sum(1) - mean**2).sqrt()
    assert torch.allclose(mean, torch.tensor([0.4914, 0.4822, 0.4465], dtype=torch.float64), atol=1e-4)
    assert torch.allclose(std, torch.tensor([0.2470, 0.2435, 0.2616], dtype=torch.float64), atol=1e-4)
    assert cfg.dataset.mean == pytest.approx(mean.tolist(), abs=1e-4)  # the YAML's numbers are these


def test_the_estimate_counts_the_images_a_run_evaluates(tmp_path, monkeypatch):
    """Without the test file the 5k held-out images are the test split, evaluated once per
    epoch: a dry run must not count 10k test images plus 5k validation images."""
    from resexp.data.load import evaluated_per_epoch

    written = write_cifar_binary(tmp_path / "src", CIFAR10, PER_FILE, skip=("test_batch.bin",))
    small(monkeypatch, CIFAR10, written, tmp_path / "src")
    held_out_only = cifar10_cfg(tmp_path / "src", "dataset.val_size=5").dataset
    assert evaluated_per_epoch(held_out_only) == 5 == len(load_data(held_out_only, torch.device("cpu")).test)
    subset = cifar10_cfg(tmp_path / "src", "dataset.val_size=5", "dataset.test_subset=3").dataset
    assert evaluated_per_epoch(subset) == 3
    write_cifar_binary(tmp_path / "full", CIFAR10, PER_FILE)  # with the test file: test + validation
    both = cifar10_cfg(tmp_path / "full", "dataset.val_size=5").dataset
    assert evaluated_per_epoch(both) == PER_FILE + 5
