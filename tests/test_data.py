import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch.utils._python_dispatch import TorchDispatchMode
from helpers.cli import cli
from helpers.formats import write_cifar10_tarball, write_mnist_source
from helpers.markers import need_fashion_mnist, need_mnist

from resexp.data import SyntheticImages, load_data, random_data, train_batches
from resexp.data.load import found
from resexp.errors import UserError
from resexp.settings.compose import load_config


def test_mnist_loaded_from_idx_files(tmp_path):
    arrays = write_mnist_source(tmp_path / "src", n_train=40, n_test=12)
    cfg = load_config(["dataset=mnist", f"dataset.source={tmp_path / 'src'}", "dataset.download=false",
                       "dataset.train_size=40", "dataset.test_size=12"])
    assert found(cfg.dataset)[0] == "source"
    data = load_data(cfg.dataset, torch.device("cpu"))
    assert found(cfg.dataset)[0] == "ready"
    assert data.train.x.shape == (40, 1, 28, 28) and data.train.x.dtype == torch.uint8
    assert np.array_equal(data.train.x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(data.train.y.numpy(), arrays["train-labels-idx1-ubyte"])
    assert np.array_equal(data.test.x[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])


def test_cifar10_loaded_from_python_tarball(tmp_path, monkeypatch):
    # torchvision checks the real archive's md5 sums; files written here cannot match them.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    batches = write_cifar10_tarball(tmp_path / "src", per_batch=6)
    cfg = load_config([f"dataset.source={tmp_path / 'src'}", "dataset.download=false", "dataset.val_size=5",
                       "dataset.train_size=30", "dataset.test_size=6"])
    data = load_data(cfg.dataset, torch.device("cpu"))
    train = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    # 3072 bytes = R plane, G plane, B plane of 32x32; the last 5 images are the validation split
    expected = train.reshape(-1, 3, 32, 32)
    assert data.train.x.shape == (25, 3, 32, 32)
    assert np.array_equal(data.train.x.numpy(), expected[:25])
    assert np.array_equal(data.val.x.numpy(), expected[25:])
    assert data.val.y.tolist() == labels[25:]
    assert np.array_equal(data.test.x.numpy(), batches["test_batch"][0].reshape(-1, 3, 32, 32))


def test_new_dataset_is_one_yaml_file(tmp_path, tiny_cfg):
    """KMNIST is used by no shipped config: a YAML file in a user config folder is enough."""
    arrays = write_mnist_source(tmp_path / "kmnist-src", n_train=64, n_test=16, seed=3)
    (tmp_path / "myconf" / "dataset").mkdir(parents=True)
    (tmp_path / "myconf" / "dataset" / "kmnist.yaml").write_text(f"""
name: kmnist
_target_: torchvision.datasets.KMNIST
train_args: {{train: true}}
test_args: {{train: false}}
train_size: 64
test_size: 16
num_classes: 10
channels: 1
image_size: 28
mean: [0.19]
std: [0.35]
augment: {{pad: 0, hflip: false}}
val_size: 0
train_subset: null
test_subset: null
root: null
download: false
source: {tmp_path / 'kmnist-src'}
stage_dir: KMNIST/raw
missing_hint: "put the KMNIST *-ubyte.gz files in a folder"
synthetic: false
""")
    from helpers.cli import TINY
    tiny = [o for o in TINY if not o.startswith("dataset")]
    cfg = load_config([*tiny, "dataset=kmnist", "train.epochs=1", "train.milestones=[]"],
                      config_dirs=[tmp_path / "myconf"])
    data = load_data(cfg.dataset, torch.device("cpu"))
    assert np.array_equal(data.train.x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    from resexp.train.loop import fit
    summary = fit(cfg, tmp_path / "out")
    assert summary["status"] == "done" and summary["dataset"] == "kmnist"


def test_a_wrong_size_in_the_yaml_is_one_clear_error(tmp_path):
    write_mnist_source(tmp_path / "src", n_train=50, n_test=20)
    cfg = load_config(["dataset=mnist", f"dataset.source={tmp_path / 'src'}", "dataset.test_size=20"])
    with pytest.raises(UserError, match="the training split has 50 images, but its YAML says train_size: 60000"):
        load_data(cfg.dataset, torch.device("cpu"))


def test_missing_data_offline_says_what_to_do(tmp_path):
    cfg = load_config(["dataset=mnist", "dataset.download=false"])
    with pytest.raises(UserError, match=r"dataset mnist is not under .*data.*put the four MNIST"):
        load_data(cfg.dataset, torch.device("cpu"))


def no_network(monkeypatch):
    """torchvision's downloads fail here as they do offline (the URL error of a name that
    does not resolve), and never reach the network."""
    from urllib.error import URLError

    def refused(url, *args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    for module in (torchvision.datasets.mnist, torchvision.datasets.cifar):
        monkeypatch.setattr(module, "download_and_extract_archive", refused)


HINT = {"mnist": "put the four MNIST *-ubyte.gz files in a folder and pass dataset.source=FOLDER",
        "cifar10": "put cifar-10-python.tar.gz or cifar-10-binary.tar.gz (or its extracted cifar-10-batches-bin/) "
                   "in a folder and pass dataset.source=FOLDER"}
MNIST_FILES = ("t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, "
               "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz")
# A dataset.source (made in the test's folder) and the error line's words after "error: dataset NAME".
WRONG_SOURCES = {
    "missing": ("mnist", "nowhere", ["dataset.download=false"], ": dataset.source=nowhere does not exist "
                "(download disabled)"),
    "missing-and-no-network": ("mnist", "nowhere", [], ": dataset.source=nowhere does not exist (the download "
                               "failed: Error downloading train-images-idx3-ubyte.gz: <urlopen error [Errno -2] Name "
                               "or service not known>)"),
    "no-source-no-network": ("cifar10", None, [], " is not under {root} (the download failed: <urlopen error "
                             "[Errno -2] Name or service not known>)"),
    "mnist-files-for-cifar10": ("cifar10", "mnist_files", [], ": dataset.source=mnist_files holds the files of "
                                f"torchvision's MNIST/FashionMNIST/KMNIST ({MNIST_FILES}), not the files CIFAR10 "
                                "reads (cifar-10-python.tar.gz or cifar-10-batches-py)"),
    "cifar10-files-for-mnist": ("mnist", "cifar_files", [], ": dataset.source=cifar_files holds the files of "
                                "torchvision's CIFAR10 (cifar-10-python.tar.gz), not the files MNIST reads "
                                f"({MNIST_FILES})"),
    "no-test-files": ("mnist", "train_only", [], ": dataset.source=train_only lacks t10k-images-idx3-ubyte.gz, "
                      "t10k-labels-idx1-ubyte.gz"),
    "empty": ("mnist", "empty", [], f": dataset.source=empty is empty (MNIST reads {MNIST_FILES})"),
    "a-file": ("mnist", "mnist_files/train-images-idx3-ubyte.gz", [],
               ": dataset.source=mnist_files/train-images-idx3-ubyte.gz is a file, not a folder"),
}


@pytest.mark.parametrize("name, source, extra, says", WRONG_SOURCES.values(), ids=WRONG_SOURCES.keys())
def test_a_wrong_data_source_is_named_in_one_line_and_nothing_is_written(monkeypatch, capsys, name, source,
                                                                         extra, says):
    """The data folder passed is said to be missing, empty, short of files or another
    dataset's, before anything is staged; a failed download says why. Nothing is written:
    no run folder, no data root."""
    no_network(monkeypatch)
    write_mnist_source(Path("mnist_files"), n_train=2, n_test=2)
    write_mnist_source(Path("train_only"), n_train=2, n_test=2)
    for test_file in Path("train_only").glob("t10k-*"):
        test_file.unlink()
    write_cifar10_tarball(Path("cifar_files"), per_batch=1)
    Path("empty").mkdir()
    before = sorted(Path().rglob("*"))
    root = Path(os.environ["RESEXP_DATA"])
    code, stdout, stderr = cli(monkeypatch, capsys, "train", "--out", "out", f"dataset={name}", "model.depth=8",
                               "train.device=cpu", *([f"dataset.source={source}"] if source else []), *extra)
    assert (code, stdout) == (2, "")
    assert stderr.strip().splitlines() == [f"error: dataset {name}{says.format(root=root)}; {HINT[name]}"]
    assert sorted(Path().rglob("*")) == before and not root.exists()


# A dry run's data: (dataset settings, its exit code, the line it ends with), with nothing
# written or downloaded. The sweep's own lines (plan, threads) come first.
DRY_RUNS = {
    "source-ready": (["dataset=mnist", "dataset.source=mnist_files"], 0, "CPU threads: "),
    "to-download": (["dataset=mnist"], 0, "data: dataset mnist is not under {root} and will be downloaded"),
    "source-missing-to-download": (["dataset=mnist", "dataset.source=nowhere"], 0,
                                   "data: dataset.source=nowhere does not exist: dataset mnist is not under {root} "
                                   "and will be downloaded"),
    "source-missing-offline": (["dataset=mnist", "dataset.source=nowhere", "dataset.download=false"], 2,
                               "error: dataset mnist: dataset.source=nowhere does not exist (download disabled); "
                               + HINT["mnist"]),
    "another-datasets-files": (["dataset=cifar10", "dataset.source=mnist_files"], 2,
                               "error: dataset cifar10: dataset.source=mnist_files holds the files of torchvision's "
                               f"MNIST/FashionMNIST/KMNIST ({MNIST_FILES}), not the files CIFAR10 reads "
                               f"(cifar-10-python.tar.gz or cifar-10-batches-py); {HINT['cifar10']}"),
}


@pytest.mark.parametrize("data, code, last", DRY_RUNS.values(), ids=DRY_RUNS.keys())
def test_a_dry_run_says_whether_each_runs_data_can_be_had(monkeypatch, capsys, data, code, last):
    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive",
                        lambda *a, **k: pytest.fail("a dry run downloads nothing"))
    write_mnist_source(Path("mnist_files"), n_train=2, n_test=2)
    before, root = sorted(Path().rglob("*")), Path(os.environ["RESEXP_DATA"])
    got, stdout, stderr = cli(monkeypatch, capsys, "sweep", "--dry-run", "--depths", "8", "--out", "out",
                              "train.device=cpu", "train.threads=1", *data)
    assert (got, stdout) == (code, ""), stderr
    assert stderr.strip().splitlines()[-1].startswith(last.format(root=root))
    assert sorted(Path().rglob("*")) == before and not root.exists()


def test_the_python_dry_run_checks_the_data_too():
    import resexp

    with pytest.raises(UserError, match=r"^dataset mnist: dataset.source=nowhere does not exist \(download disabled\)"):
        resexp.sweep(depths=[8], out="out", dry_run=True, progress=False,
                     overrides={"dataset": "mnist", "dataset.source": "nowhere", "dataset.download": False,
                                "train.device": "cpu", "train.threads": 1})
    assert not Path("out").exists()


def test_files_staged_but_unusable_get_the_datasets_own_advice(tmp_path):
    """torchvision's 'You can use download=True' is wrong offline: the line gives the dataset's hint."""
    write_cifar10_tarball(tmp_path / "src", per_batch=2)  # not the official files: their MD5s do not match
    cfg = load_config(["dataset=cifar10", f"dataset.source={tmp_path / 'src'}", "dataset.download=false"])
    with pytest.raises(UserError) as info:
        load_data(cfg.dataset, torch.device("cpu"))
    assert str(info.value) == (f"dataset cifar10: the files staged from {tmp_path / 'src'} are not usable (Dataset "
                               f"not found or corrupted.); {HINT['cifar10']}")


def test_subsets_take_the_first_images(tmp_path):
    write_mnist_source(tmp_path / "src", n_train=50, n_test=20)
    sizes = ["dataset.train_size=50", "dataset.test_size=20"]
    full = load_config(["dataset=mnist", f"dataset.source={tmp_path / 'src'}", *sizes])
    cut = load_config(["dataset=mnist", f"dataset.source={tmp_path / 'src'}", "dataset.train_subset=7",
                       "dataset.test_subset=3", *sizes])
    a, b = load_data(full.dataset, torch.device("cpu")), load_data(cut.dataset, torch.device("cpu"))
    assert len(b.train) == 7 and len(b.test) == 3
    assert torch.equal(b.train.x, a.train.x[:7]) and torch.equal(b.test.y, a.test.y[:3])


def old_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order an epoch's images have always come in: a permutation seeded by (seed, epoch)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def test_unaugmented_batches_are_the_old_ones_bit_for_bit(tiny_cfg):
    """Without augmentation an epoch is what it always was: the images in the same order,
    normalised to exactly the float32 values of (x / 255 - mean) / std."""
    cfg = tiny_cfg("dataset.mean=[0.2860]", "dataset.std=[0.3530]")
    data = load_data(cfg.dataset, torch.device("cpu"))
    order = old_order(len(data.train), seed=3, epoch=2)
    batches = list(train_batches(data, 64, seed=3, epoch=2))
    x, y = torch.cat([b for b, _ in batches]), torch.cat([labels for _, labels in batches])
    assert torch.equal(y, data.train.y[order])
    assert torch.equal(x, (data.train.x[order].float().div_(255) - 0.2860) / 0.3530)


def test_augmented_images_are_padded_windows_flipped_about_half_the_time(tiny_cfg):
    """Each image of an epoch (still in the old order) is a window of itself zero-padded by 2,
    mirrored or not; the windows and flips vary from image to image."""
    cfg = tiny_cfg("dataset.augment.pad=2", "dataset.augment.hflip=true")
    data = load_data(cfg.dataset, torch.device("cpu"))
    out = torch.cat([x for x, _ in train_batches(data, 64, seed=0, epoch=1)])
    found = []
    for k, i in enumerate(old_order(len(data.train), seed=0, epoch=1)[:128].tolist()):
        padded = torch.nn.functional.pad(data.train.x[i], (2, 2, 2, 2))
        windows = padded.unfold(1, 28, 1).unfold(2, 28, 1).permute(1, 2, 0, 3, 4).reshape(25, 1, 28, 28)
        same = (data.normalize(torch.cat([windows, windows.flip(3)])) == out[k]).flatten(1).all(1)
        assert same.any(), f"image {k} is no window of its padded source"
        found.append(int(same.nonzero()[0]))  # window dy * 5 + dx, plus 25 if flipped
    assert len({w % 25 for w in found}) > 20  # of 25
    assert 0.35 < sum(w >= 25 for w in found) / len(found) < 0.65


def test_an_epochs_crops_and_flips_are_drawn_once_for_all_its_batches(tiny_cfg):
    """Every image's window and flip are drawn per epoch, not per batch: the epoch's images
    are the same in batches of 64 and of 48 (and its last, partial batch is no exception)."""
    cfg = tiny_cfg("dataset.augment.pad=4", "dataset.augment.hflip=true")
    data = load_data(cfg.dataset, torch.device("cpu"))
    a, b = (torch.cat([x for x, _ in train_batches(data, size, seed=1, epoch=5)]) for size in (64, 48))
    assert torch.equal(a, b)


class Kernels(TorchDispatchMode):
    """The torch operations that compute something (views left out), as they run."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.ops.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(("augment", "most"), [([], 3), (["dataset.augment.pad=4", "dataset.augment.hflip=true"], 5)])
def test_a_batch_takes_a_handful_of_kernels(tiny_cfg, augment, most):
    """A graphed step is a few milliseconds on a GPU: making its batch must not take twenty
    launches. After the epoch's own draws, a batch is a gather, with augmentation a zero pad
    and one crop-and-flip gather, and the normalising lookup (its index, then the lookup)."""
    data = load_data(tiny_cfg(*augment).dataset, torch.device("cpu"))
    batches = train_batches(data, 64, seed=0, epoch=1)
    next(batches)
    with Kernels() as counted:
        next(batches)
    assert len(counted.ops) <= most, counted.ops


def test_random_data_has_the_datasets_shape_and_none_of_its_split_sizes():
    """Timings need images of the right shape, not the dataset's split: 32 random images of a
    dataset that holds out 5,000 for validation are 32 images to train on."""
    cfg = load_config(["dataset=cifar10", "dataset.val_size=5000", "dataset.train_subset=8000",
                       "dataset.test_subset=100"])
    data = random_data(cfg.dataset, 32, torch.device("cpu"))
    assert data.train.x.shape == (32, 3, 32, 32) and data.val is None and len(data.test) == 32
    assert (data.pad, data.hflip) == (4, True)


def test_synthetic_images_are_their_class_patterns_at_their_shifts():
    """The generated images, built in one gather, are each class pattern's window at the
    image's shift plus noise: the definition, image by image."""
    ds = SyntheticImages(size=40, num_classes=3, channels=2, image_size=9, noise=0.0, seed=4)
    g = torch.Generator().manual_seed(4)
    protos = torch.nn.functional.interpolate(torch.rand(3, 2, 7, 7, generator=g), size=13, mode="bilinear",
                                             align_corners=False)
    g = torch.Generator().manual_seed(5)
    labels, shifts = torch.randint(0, 3, (40,), generator=g), torch.randint(0, 5, (40, 2), generator=g)
    by_hand = torch.stack([protos[c, :, i:i + 9, j:j + 9] for c, (i, j) in zip(labels.tolist(), shifts.tolist())])
    assert ds.targets == labels.tolist()
    assert np.array_equal(ds.data, (by_hand.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())


def test_batches_are_seeded_per_epoch_and_cover_the_data(tiny_cfg):
    cfg = tiny_cfg("dataset.augment.pad=2", "dataset.augment.hflip=true")
    data = load_data(cfg.dataset, torch.device("cpu"))
    epoch = lambda e: list(train_batches(data, 64, seed=0, epoch=e))  # noqa: E731
    a, b, c = epoch(1), epoch(1), epoch(2)
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, b))
    assert not torch.equal(a[0][1], c[0][1])
    labels = torch.cat([y for _, y in a])
    assert sorted(labels.tolist()) == sorted(data.train.y.tolist())  # each image once per epoch
    x = torch.cat([x for x, _ in a])
    assert x.dtype == torch.float32 and abs(x.mean().item()) < 1.0


def test_synthetic_is_deterministic_and_labelled(tiny_cfg):
    cfg = tiny_cfg()
    a, b = load_data(cfg.dataset, torch.device("cpu")), load_data(cfg.dataset, torch.device("cpu"))
    assert torch.equal(a.train.x, b.train.x) and cfg.dataset.synthetic is True
    assert not torch.equal(a.train.x[:128], a.test.x)


@pytest.mark.slow
def test_real_fashion_mnist_from_debian_package(tmp_path):
    need_fashion_mnist()
    cfg = load_config(["dataset=fashion_mnist", "dataset.train_subset=500", "dataset.test_subset=300"])
    data = load_data(cfg.dataset, torch.device("cpu"))
    assert data.train.x.shape == (500, 1, 28, 28)
    assert set(data.train.y.tolist()) == set(range(10))
    # The package's real images: mean pixel of the first 500 is near the dataset's 0.286.
    assert abs(data.train.x.float().mean().item() / 255 - cfg.dataset.mean[0]) < 0.03
    assert (tmp_path / "data" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists()


@pytest.mark.slow
def test_real_mnist_offline_from_its_original_files(tmp_path):
    source = need_mnist()
    cfg = load_config(["dataset=mnist", f"dataset.source={source}", "dataset.download=false",
                       "dataset.test_subset=2000"])
    data = load_data(cfg.dataset, torch.device("cpu"))
    assert data.train.x.shape == (60000, 1, 28, 28) and len(data.test) == 2000
    # LeCun's files: the first training digits are 5 0 4 1 9 2 1 3 1 4, the first test ones 7 2 1 0 4
    assert data.train.y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert data.test.y[:5].tolist() == [7, 2, 1, 0, 4]
    pixels = data.train.x.float() / 255  # the config's normalisation constants are these files' own
    assert pixels.mean().item() == pytest.approx(cfg.dataset.mean[0], abs=1e-4)
    assert pixels.std().item() == pytest.approx(cfg.dataset.std[0], abs=1e-4)
