import numpy as np
import pytest
import torch
import torchvision
from helpers.formats import write_cifar10_tarball, write_mnist_source
from helpers.markers import need_fashion_mnist, need_mnist

from resexp.data import load_data, on_disk, random_crop, random_flip, train_batches
from resexp.errors import UserError
from resexp.settings.compose import load_config


def test_mnist_loaded_from_idx_files(tmp_path):
    arrays = write_mnist_source(tmp_path / "src", n_train=40, n_test=12)
    cfg = load_config(["dataset=mnist", f"dataset.source={tmp_path / 'src'}", "dataset.download=false",
                       "dataset.train_size=40", "dataset.test_size=12"])
    assert on_disk(cfg.dataset) == "source"
    data = load_data(cfg.dataset, torch.device("cpu"))
    assert on_disk(cfg.dataset) == "ready"
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
    cfg = load_config([*tiny, "dataset=kmnist", "train.epochs=1"], config_dirs=[tmp_path / "myconf"])
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


def test_subsets_take_the_first_images(tmp_path):
    write_mnist_source(tmp_path / "src", n_train=50, n_test=20)
    sizes = ["dataset.train_size=50", "dataset.test_size=20"]
    full = load_config(["dataset=mnist", f"dataset.source={tmp_path / 'src'}", *sizes])
    cut = load_config(["dataset=mnist", f"dataset.source={tmp_path / 'src'}", "dataset.train_subset=7",
                       "dataset.test_subset=3", *sizes])
    a, b = load_data(full.dataset, torch.device("cpu")), load_data(cut.dataset, torch.device("cpu"))
    assert len(b.train) == 7 and len(b.test) == 3
    assert torch.equal(b.train.x, a.train.x[:7]) and torch.equal(b.test.y, a.test.y[:3])


def test_random_crop_is_a_shifted_window():
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = random_crop(x, 2, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(len(x)):
        found = [(dy, dx) for dy in range(5) for dx in range(5)
                 if torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8])]
        assert found, f"image {i} is not a window of its padded input"
        offsets.add(found[0])
    assert len(offsets) > 10  # offsets really are random, not one fixed shift


def test_random_flip_flips_about_half():
    x = torch.randint(0, 256, (400, 1, 4, 4), dtype=torch.uint8)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, xi.flip(2)) and not torch.equal(o, xi) for o, xi in zip(out, x)])
    same = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    assert bool((flipped | same).all())
    assert 150 < int(flipped.sum()) < 250


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
