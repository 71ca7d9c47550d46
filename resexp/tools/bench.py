"""`resexp bench`: training throughput of the real hot loop, per model, on this device.

It times train.train_epoch() itself on random images of the dataset's shape, so
the number includes batch gathering, augmentation, the optimiser step and the
lr update exactly as a run does. One untimed warm-up epoch first absorbs
cudnn.benchmark's search, torch.compile and the CUDA graph capture.

``--eager`` adds the eager step (train.cuda_graphs=false) where the default is
graphed, and ``--baseline`` the conventional trainer of resexp/baseline.py, timed in
the same process on the same models, with each row's speed relative to it.
``--compare-steps`` checks instead that the graphed step trains the eager run.
"""

from __future__ import annotations

import gc
import platform
import time

import pandas as pd
import torch

from resexp.data import load_data, random_data, train_batches
from resexp.models import count_params
from resexp.settings.compose import load_config
from resexp.tools.baseline import bench_baseline
from resexp.train.loop import evaluate, pick_device, setup, train_epoch


def describe(cfg, device: torch.device) -> dict:
    """The columns that say where and on what a row was measured."""
    ds = cfg.dataset
    n = torch.get_num_threads()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({n} thread{'s' * (n != 1)})"
    return {"device": name,
            "arch": cfg.model.arch, "depth": cfg.model.depth, "checkpoint_segments": cfg.model.checkpoint_segments,
            "batch": cfg.train.batch_size,
            "image": f"{ds.channels}x{ds.image_size}x{ds.image_size}"}


def partial_batch(cfg) -> int:
    """The size of the last, smaller batch of a real epoch of the dataset (CIFAR-10 at batch
    128: 50,000 % 128 = 80), which a run trains eagerly beside the graph; 0 if none."""
    ds, t = cfg.dataset, cfg.train
    size = ds.get("train_size")
    if not size or t.drop_last:
        return 0
    return (min(size, ds.train_subset or size) - (ds.val_size or 0)) % t.batch_size


def bench_one(cfg, steps: int, time_eval: bool = False, warmup: int | None = None) -> dict:
    """One row: ``steps`` timed training steps of ``cfg``'s model on random images, after
    ``warmup`` untimed ones (default: as many; on CUDA the graph is captured there)."""
    device = pick_device(cfg.train.device)
    partial = partial_batch(cfg)
    data = random_data(cfg.dataset, steps * cfg.train.batch_size + partial, device)
    cuda = device.type == "cuda"
    if cuda:  # what earlier rows left cached would count as this row's reserved memory
        gc.collect()
        torch.cuda.empty_cache()
    s = setup(cfg, data)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    # warm-up (and capture), untimed: the epoch stops at the schedule's end, ``warmup`` steps on
    train_epoch(cfg, s, epoch=1, iteration=0 if warmup is None else max(0, s.schedule.total_iters - warmup))
    stats = train_epoch(cfg, s, epoch=2, iteration=0)   # timed: `steps` iterations and the partial one
    row = {
        **describe(cfg, device), "params": count_params(s.model), "step": s.step.kind, "amp": s.step.amp,
        "compile": bool(cfg.train.compile and cuda), "partial_batch": partial,
        "images_per_s": round(stats["images_per_s"], 1),
        "ms_per_step": round(1000 * stats["train_seconds"] / (steps + bool(partial)), 2),
        "peak_mem_mb": round(torch.cuda.max_memory_allocated(device) / 2**20) if cuda else None,
        # Reserved, not only allocated: a CUDA graph's private memory pool stays reserved
        # between replays, and max_memory_allocated does not count it.
        "peak_reserved_mb": round(torch.cuda.max_memory_reserved(device) / 2**20) if cuda else None,
    }
    if time_eval:  # after the training peak was read
        row["eval_images_per_s"] = round(eval_speed(cfg, s), 1)
    return row


def eval_speed(cfg, s) -> float:
    """Images/s of the per-epoch evaluation pass (after one untimed pass): a run spends
    test images / this per epoch outside the training steps."""
    evaluate(cfg, s, s.data.test)
    start = time.perf_counter()
    evaluate(cfg, s, s.data.test)  # ends with .item(): the device is done
    return len(s.data.test) / (time.perf_counter() - start)


def _model_rows(cfg_for, steps: int, compile: bool, eager: bool, baseline: bool, workers: int) -> list[dict]:
    """The rows of one model: resexp's step(s), then the baseline (never the first, cold, run)."""
    rows = []
    for compiled in ([False, True] if compile else [False]):
        if compiled and rows[-1]["device"].startswith("cpu"):
            break  # torch.compile is used on CUDA only: the row would repeat the one above
        for graphs in ([True, False] if eager else [None]):
            if graphs is False and rows[-1]["step"] == "eager":
                break  # the graph setting gave the eager step already (the CPU): nothing else to time
            rows.append(bench_one(cfg_for(compiled, graphs), steps, time_eval=True))
    if baseline:
        cfg = cfg_for(False, None)
        device = pick_device(cfg.train.device)
        rows.append({**describe(cfg, device), **bench_baseline(cfg, device, steps, workers)})
    return rows


def bench_config(arch: str, depth: int, overrides=(), config_dirs=(), compiled: bool = False,
                 graphs: bool | None = None):
    """The config bench times ``arch``-``depth`` with: the overrides, on the whole training set
    (no subset, no held-out part), with no progress lines; ``graphs`` sets train.cuda_graphs."""
    extra = [] if graphs is None else [f"train.cuda_graphs={str(graphs).lower()}"]
    return load_config([*overrides, f"model.arch={arch}", f"model.depth={depth}", f"train.compile={compiled}",
                        "train.log_every=1000000", "dataset.train_subset=null", "dataset.val_size=0", *extra],
                       config_dirs)


def run_bench(archs, depths, steps: int, compile: bool, overrides=(), config_dirs=(),
              eager: bool = False, baseline: bool = False, workers: int = 4) -> pd.DataFrame:
    rows = []
    for arch in archs:
        for depth in depths:
            def cfg_for(compiled: bool, graphs: bool | None, arch=arch, depth=depth):
                return bench_config(arch, depth, overrides, config_dirs, compiled, graphs)
            rows += _model_rows(cfg_for, steps, compile, eager, baseline, workers)
    table = pd.DataFrame(rows)
    if baseline:
        base = table[table.step.str.startswith("baseline")].set_index(["arch", "depth"]).images_per_s
        table["vs_baseline"] = [round(r.images_per_s / base[(r.arch, r.depth)], 2) for r in table.itertuples()]
    table.attrs["host"] = f"{platform.processor() or platform.machine()}, torch {torch.__version__}"
    return table


def format_bench(table: pd.DataFrame) -> str:
    return table.to_string(index=False) + f"\n({table.attrs.get('host', '')})"


# --------------------------------------------------------------------------- graphed == eager
def step_losses(cfg, s, steps: int) -> list[float]:
    """The training loss of each of the first ``steps`` steps of ``cfg``'s run (one read
    per step: this checks numbers, it is not timed)."""
    losses, epoch = [], 0
    s.model.train()
    while len(losses) < steps:
        epoch += 1
        for x, y in train_batches(s.data, cfg.train.batch_size, cfg.seed, epoch, cfg.train.drop_last):
            if len(losses) == steps:
                break
            s.step.reset()
            s.step(x, y, s.schedule.lr_at(len(losses)))
            losses.append(s.step.loss_sum.item() / len(y))
    return losses


def compare_steps(cfg, steps: int) -> pd.DataFrame:
    """Per-step training loss of the first ``steps`` steps, trained eagerly twice and with
    the graphed step once, each from the same initial weights on the same batches. The
    two eager runs show the device's own run-to-run noise (none on the CPU; on a GPU,
    cuDNN's nondeterministic kernels), the yardstick for the graphed-vs-eager gap."""
    device = pick_device(cfg.train.device)
    data = load_data(cfg.dataset, device)
    runs, kinds = {}, {}
    for name, graphed in (("eager", False), ("eager_again", False), ("graphed", True)):
        s = setup(cfg, data, graphed=graphed)
        runs[name], kinds[name] = step_losses(cfg, s, steps), s.step.kind
    table = pd.DataFrame({"step": range(steps), "lr": [s.schedule.lr_at(i) for i in range(steps)], **runs})
    table["graphed_vs_eager"] = (table.graphed - table.eager).abs()
    table["eager_vs_eager"] = (table.eager_again - table.eager).abs()
    table.attrs.update(graphed_kind=kinds["graphed"], precision="bf16 autocast" if s.step.amp else "fp32",
                       model=f"{cfg.model.arch}-{cfg.model.depth}")
    return table


def run_compare(archs, depths, steps: int, overrides=(), config_dirs=()) -> list[pd.DataFrame]:
    tables = []
    for arch in archs:
        for depth in depths:
            cfg = load_config([*overrides, f"model.arch={arch}", f"model.depth={depth}"], config_dirs)
            tables.append(compare_steps(cfg, steps).assign(arch=arch, depth=depth))
    return tables


def format_compare(table: pd.DataFrame) -> str:
    def worst(column: str) -> str:
        i = table[column].idxmax()
        return f"max {table[column].max():.3g} (step {i}), mean {table[column].mean():.3g}"
    a = table.attrs
    return (f"{a['model']}, {len(table)} steps, {a['precision']}, graphed step: {a['graphed_kind']}\n"
            f"  |graphed - eager| loss: {worst('graphed_vs_eager')}\n"
            f"  |eager - eager|   loss: {worst('eager_vs_eager')}  (this device's run-to-run noise)\n"
            f"  loss at step 0 / {len(table) - 1}: eager {table.eager.iloc[0]:.4f} / {table.eager.iloc[-1]:.4f}, "
            f"graphed {table.graphed.iloc[0]:.4f} / {table.graphed.iloc[-1]:.4f}")
