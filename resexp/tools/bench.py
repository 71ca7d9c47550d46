"""`resexp bench`: training throughput of the real hot loop, per model, on this device.

It times train.train_epoch() itself on random images of the dataset's shape, so
the number includes batch gathering, augmentation, the optimiser step and the
lr update exactly as a run does. Untimed steps come first: as many as are timed, and
at least those a run takes before its steps settle (cudnn.benchmark's search,
torch.compile, the CUDA graph's warm-up, capture and self-check). The timed steps are
full batches only, as the conventional trainer's are; the partial batch that ends a real
epoch (an eager step beside the graph) is timed on its own, in its own column.

``--eager`` adds the eager step (train.cuda_graphs=false) where the default is
graphed, and ``--baseline`` the conventional trainer of resexp/tools/baseline.py, timed in
the same process on the same models, with each row's speed relative to it.
``--compare-steps`` checks instead that the graphed step trains the eager run.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import itertools
import platform
import time

import pandas as pd
import torch
from omegaconf import OmegaConf

from resexp.data import Split, load_data, random_data, train_batches
from resexp.models import count_params
from resexp.settings.compose import load_config
from resexp.tools.baseline import bench_baseline
from resexp.train.loop import evaluate, pick_device, setup, train_epoch
from resexp.train.step import settling_steps


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
    128: 50,000 % 128 = 80), which a run trains eagerly beside the graph; 0 if none. A run's
    epoch is ``dataset.train_subset`` images, else those ``dataset.val_size`` leaves."""
    ds, t = cfg.dataset, cfg.train
    return 0 if t.drop_last else (ds.train_subset or ds.train_size - ds.val_size) % t.batch_size


def steady(cfg):
    """``cfg`` with an lr that stays ``train.lr`` for as long as bench trains: its epochs of a
    few random batches are not the run's, so the run's warm-up and milestones (sized in its
    own epochs) do not apply to them; a schedule costs nothing of a step's time anyway."""
    return OmegaConf.merge(cfg, {"train": {"iterations": 2**62, "epochs": None, "warmup_iters": 0,
                                           "milestones": []}})


def first(s, n: int):
    """The run set up in ``s``, training on only its first ``n`` images."""
    train = s.data.train
    return dataclasses.replace(s, data=dataclasses.replace(s.data, train=Split(train.x[:n], train.y[:n])))


def bench_one(cfg, steps: int, extras: bool = False, warmup: int | None = None) -> dict:
    """One row: ``steps`` timed full training steps of ``cfg``'s model on random images, after
    ``warmup`` untimed ones (default: as many), never fewer than the step needs to settle (on
    CUDA: its warm-up, the capture and the self-check). With ``extras`` (a row of `resexp
    bench`'s table) the epoch's partial batch and the evaluation pass are timed too, each
    on its own, and the partial batch is inside the peak memory."""
    device = pick_device(cfg.train.device)
    batch, partial = cfg.train.batch_size, partial_batch(cfg) if extras else 0
    cfg = steady(cfg)
    warm = max(steps if warmup is None else warmup, settling_steps(cfg.train, device))
    cuda = device.type == "cuda"
    if cuda:  # what earlier rows left cached would count as this row's reserved memory
        gc.collect()
        torch.cuda.empty_cache()
    s = setup(cfg, random_data(cfg.dataset, max(steps, warm) * batch + partial, device))
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    train_epoch(cfg, first(s, warm * batch + partial), epoch=1, iteration=0)  # untimed, the partial batch last
    timed = train_epoch(cfg, first(s, steps * batch), epoch=2, iteration=0)   # full batches only
    row = {
        **describe(cfg, device), "params": count_params(s.model), "step": s.step.kind, "amp": s.step.amp,
        "compile": bool(cfg.train.compile and cuda),
        "images_per_s": round(timed["images_per_s"], 1),
        "ms_per_step": round(1000 * timed["train_seconds"] / max(timed["iteration"], 1), 2),
    }
    if extras:
        seconds = train_epoch(cfg, first(s, partial), epoch=3, iteration=0)["train_seconds"] if partial else None
        row.update(partial_batch=partial, partial_batch_ms=None if seconds is None else round(1000 * seconds, 2))
    row.update({
        "peak_mem_mb": round(torch.cuda.max_memory_allocated(device) / 2**20) if cuda else None,
        # Reserved, not only allocated: a CUDA graph's private memory pool stays reserved
        # between replays, and max_memory_allocated does not count it.
        "peak_reserved_mb": round(torch.cuda.max_memory_reserved(device) / 2**20) if cuda else None,
    })
    if extras:  # after the training peak was read
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
            rows.append(bench_one(cfg_for(compiled, graphs), steps, extras=True))
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
    for arch, depth in itertools.product(archs, depths):
        cfg_for = functools.partial(bench_config, arch, depth, overrides, config_dirs)  # (compiled, graphs) -> cfg
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
    return [compare_steps(load_config([*overrides, f"model.arch={arch}", f"model.depth={depth}"], config_dirs),
                          steps).assign(arch=arch, depth=depth) for arch, depth in itertools.product(archs, depths)]


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
