"""Cost probe of scripts/calibrate_cifar.sh: per-iteration and per-evaluated-image cost of each
arch and depth on real CIFAR-10, as wall time AND as this process's CPU time. On a shared
machine the wall time depends on what else runs; the CPU time of a one-thread process hardly
does, so it estimates the idle machine's wall time per thread.
Usage: python scripts/calibrate_cifar_probe.py SOURCE OUT.csv [threads] [iterations]"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import pandas as pd
import torch

from resexp.data import Split, load_data
from resexp.settings.compose import load_config
from resexp.train.loop import evaluate, setup, train_epoch


def timed(fn, *args) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def probe(cfg, data, iters: int) -> dict:
    """Wall and CPU time of ``iters`` training steps (after as many untimed) and of
    evaluating 1,000 held-out images, for ``cfg``'s net."""
    b = cfg.train.batch_size
    few = dataclasses.replace(data, train=Split(data.train.x[: iters * b], data.train.y[: iters * b]))
    s = setup(cfg, few)
    train_epoch(cfg, s, epoch=1, iteration=0)                      # warm-up, untimed
    tw, tc = timed(train_epoch, cfg, s, 2, 0)
    ew, ec = timed(evaluate, cfg, s, Split(data.test.x[:1000], data.test.y[:1000]))
    return {"ms_per_iter_wall": 1000 * tw / iters, "ms_per_iter_cpu": 1000 * tc / iters,
            "ms_per_eval_image_wall": ew, "ms_per_eval_image_cpu": ec}  # s per 1,000 = ms per image


def main(source: str, out: str, threads: int = 1, iters: int = 30) -> None:
    base = ["experiment=quick_cifar10", f"dataset.source={source}", f"train.threads={threads}"]
    data, rows = None, []
    for arch in ("plain", "resnet"):
        for depth in (8, 20, 32, 56):
            cfg = load_config([*base, f"model.arch={arch}", f"model.depth={depth}"])
            data = data or load_data(cfg.dataset, torch.device("cpu"))
            rows.append({"arch": arch, "depth": depth, "threads": threads, "batch": cfg.train.batch_size,
                         **probe(cfg, data, iters), "load_1min": os.getloadavg()[0]})
            print(rows[-1], flush=True)
    pd.DataFrame(rows).round(3).to_csv(out, index=False)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:]))
