"""`resexp bench`: training throughput of the real hot loop, per model, on this device.

It times train.train_epoch() itself on random images of the dataset's shape, so
the number includes batch gathering, augmentation, the optimiser step and the
lr update exactly as a run does. One untimed warm-up epoch first absorbs
cudnn.benchmark's search and torch.compile.
"""

from __future__ import annotations

import platform

import pandas as pd
import torch

from resexp.config import load_config
from resexp.data import random_data
from resexp.models import count_params
from resexp.train import pick_device, setup, train_epoch


def bench_one(cfg, steps: int) -> dict:
    device = pick_device(cfg.train.device)
    data = random_data(cfg.dataset, steps * cfg.train.batch_size, device)
    s = setup(cfg, data)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train_epoch(cfg, s, epoch=1, iteration=0)           # warm-up, untimed
    stats = train_epoch(cfg, s, epoch=2, iteration=0)   # timed: `steps` iterations
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "arch": cfg.model.arch, "depth": cfg.model.depth, "params": count_params(s.model),
        "batch": cfg.train.batch_size, "image": f"{cfg.dataset.channels}x{cfg.dataset.image_size}x{cfg.dataset.image_size}",
        "amp": s.amp, "compile": bool(cfg.train.compile and device.type == "cuda"),
        "images_per_s": round(stats["images_per_s"], 1),
        "ms_per_step": round(1000 * stats["train_seconds"] / steps, 2),
        "peak_mem_mb": round(torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None,
    }


def run_bench(archs, depths, steps: int, compile: bool, overrides=(), config_dirs=()) -> pd.DataFrame:
    rows = []
    for arch in archs:
        for depth in depths:
            for compiled in ([False, True] if compile else [False]):
                cfg = load_config([*overrides, f"model.arch={arch}", f"model.depth={depth}",
                                   f"train.compile={compiled}", "train.log_every=1000000",
                                   "dataset.train_subset=null", "dataset.val_size=0"], config_dirs)
                rows.append(bench_one(cfg, steps))
    table = pd.DataFrame(rows)
    table.attrs["host"] = f"{platform.processor() or platform.machine()}, torch {torch.__version__}"
    return table


def format_bench(table: pd.DataFrame) -> str:
    return table.to_string(index=False) + f"\n({table.attrs.get('host', '')})"
