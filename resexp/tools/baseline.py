"""`resexp bench --baseline`: the conventional CIFAR trainer, as a yardstick for resexp's speed.

What most CIFAR training scripts do, written plainly: a Dataset that turns each stored
uint8 image into a PIL image (as torchvision's CIFAR10 class does), per-image
torchvision transforms (RandomCrop with padding, RandomHorizontalFlip, ToTensor,
Normalize) in DataLoader worker processes, pinned memory, an fp32 NCHW model with
cudnn.benchmark, torch's default SGD, and per-step meters read with ``.item()`` (a
host sync per step). Same network, batch size and SGD settings as resexp; the lr stays
at ``train.lr`` (a schedule changes nothing of the speed). Images are random, of the
dataset's shape, as in the rest of ``resexp bench``; its loader drops the last, partial
batch, and resexp's own speed beside it counts full batches too.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from resexp.models import count_params
from resexp.train.loop import build_model


class PILImages(Dataset):
    """uint8 images (N x H x W x C) handed out as transformed PIL images."""

    def __init__(self, images: np.ndarray, labels: list[int], transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = self.images[i]
        return self.transform(Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)), self.labels[i]


def conventional_transform(ds_cfg) -> transforms.Compose:
    """The dataset's augmentation as per-image torchvision transforms."""
    steps = []
    if ds_cfg.augment.pad:
        steps.append(transforms.RandomCrop(ds_cfg.image_size, padding=ds_cfg.augment.pad))
    if ds_cfg.augment.hflip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(list(ds_cfg.mean), list(ds_cfg.std))]
    return transforms.Compose(steps)


def random_pil_dataset(ds_cfg, n: int, seed: int = 0) -> PILImages:
    g = torch.Generator().manual_seed(seed)
    shape = (n, ds_cfg.image_size, ds_cfg.image_size, ds_cfg.channels)
    images = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8).numpy()
    labels = torch.randint(0, ds_cfg.num_classes, (n,), generator=g).tolist()
    return PILImages(images, labels, conventional_transform(ds_cfg))


def bench_baseline(cfg, device: torch.device, steps: int, workers: int) -> dict:
    """Images/s of ``steps`` conventional training steps, after as many untimed ones
    (worker start-up, cudnn.benchmark's search). Returns a row of `resexp bench`'s table."""
    t, ds = cfg.train, cfg.dataset
    cuda = device.type == "cuda"
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    if cuda:
        torch.backends.cudnn.benchmark = True
    optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum,
                                weight_decay=t.weight_decay, nesterov=t.nesterov)
    loader = DataLoader(random_pil_dataset(ds, 2 * steps * t.batch_size, cfg.seed), batch_size=t.batch_size,
                        shuffle=True, num_workers=workers, pin_memory=cuda, drop_last=True)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    loss_sum, correct, seen, start = 0.0, 0, 0, time.perf_counter()
    for i, (x, y) in enumerate(loader):
        if i == steps:  # the meters' .item() has synchronised: the warm-up half is done
            start, seen = time.perf_counter(), 0
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        out = model(x)
        loss = F.cross_entropy(out, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(y)
        correct += (out.argmax(1) == y).sum().item()
        seen += len(y)
    seconds = time.perf_counter() - start
    return {"params": count_params(model),
            "step": f"baseline ({workers} workers)", "amp": False, "compile": False,
            "images_per_s": round(seen / seconds, 1), "ms_per_step": round(1000 * seconds / steps, 2),
            "peak_mem_mb": round(torch.cuda.max_memory_allocated(device) / 2**20) if cuda else None}
