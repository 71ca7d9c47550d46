"""`resexp bench`: --baseline (the conventional trainer), --eager, --compare-steps, on the CPU."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from helpers.cli import TINY, cli
from torchvision import transforms

from resexp.settings.compose import load_config
from resexp.tools.baseline import conventional_transform, random_pil_dataset
from resexp.tools.bench import compare_steps


def test_bench_baseline_times_both_trainers_and_gives_the_ratio(monkeypatch, capsys, tmp_path):
    code, stdout, stderr = cli(monkeypatch, capsys, "bench", "--archs", "plain,resnet", "--depths", "8",
                               "--steps", "2", "--baseline", "--eager", "--workers", "0",
                               "--out", tmp_path / "b.csv", *TINY)
    assert code == 0, stderr
    table = pd.read_csv(tmp_path / "b.csv")
    # On the CPU the default step is the eager one: --eager adds no second, identical row.
    assert list(zip(table.arch, table.step)) == [("plain", "eager"), ("plain", "baseline (0 workers)"),
                                                 ("resnet", "eager"), ("resnet", "baseline (0 workers)")]
    assert (table.images_per_s > 0).all() and (table.ms_per_step > 0).all()
    assert table.params.nunique() == 1  # the same network in both trainers (option A: plain == resnet)
    for _, rows in table.groupby("arch"):
        ours, base = rows.images_per_s.tolist()
        assert rows.vs_baseline.tolist() == [pytest.approx(ours / base, abs=0.01), 1.0]
    assert table.amp.tolist()[1::2] == [False, False]  # the baseline is fp32
    assert (table.eval_images_per_s[::2] > 0).all() and table.eval_images_per_s[1::2].isna().all()
    assert "baseline (0 workers)" in stdout


def test_conventional_transform_is_the_usual_cifar_recipe():
    cifar = conventional_transform(load_config(["dataset=cifar10"]).dataset).transforms
    assert [type(t) for t in cifar] == [transforms.RandomCrop, transforms.RandomHorizontalFlip,
                                        transforms.ToTensor, transforms.Normalize]
    assert cifar[0].padding == 4 and cifar[0].size == (32, 32)
    assert cifar[3].mean == [0.4914, 0.4822, 0.4465]


def test_pil_dataset_hands_out_normalised_tensors():
    ds_cfg = load_config(TINY).dataset  # synthetic: no augmentation, mean 0.5, std 0.25
    data = random_pil_dataset(ds_cfg, 4)
    x, y = data[2]
    raw = torch.as_tensor(data.images[2]).permute(2, 0, 1).float() / 255
    assert x.shape == (1, 28, 28) and torch.allclose(x, (raw - 0.5) / 0.25, atol=1e-6)
    assert y == data.labels[2] and 0 <= y < 10


def test_on_the_cpu_eager_and_compile_time_the_one_step_once(monkeypatch, capsys, tmp_path):
    """--eager and --compile ask for the graphed and the compiled step beside the default;
    on the CPU all of them are the eager step, so each model is timed once, not four times."""
    import resexp.tools.bench as bench
    timed, real = [], bench.bench_one
    monkeypatch.setattr(bench, "bench_one", lambda cfg, *a, **k: timed.append(cfg.model.arch) or real(cfg, *a, **k))
    code, _, stderr = cli(monkeypatch, capsys, "bench", "--archs", "plain,resnet", "--depths", "8", "--steps", "1",
                          "--eager", "--compile", "--out", tmp_path / "b.csv", *TINY)
    assert code == 0, stderr
    assert timed == ["plain", "resnet"]
    table = pd.read_csv(tmp_path / "b.csv")
    assert list(zip(table.arch, table.step, table.compile)) == [("plain", "eager", False), ("resnet", "eager", False)]


def test_compare_steps_graphed_equals_eager_on_the_cpu():
    cfg = load_config([*TINY, "train.warmup_iters=2", "train.warmup_lr=0.01", "train.warmup_from_depth=null"])
    table = compare_steps(cfg, 6)  # 4 steps per epoch: crosses an epoch boundary
    assert table.step.tolist() == list(range(6)) and table.lr.tolist() == [0.01, 0.01, 0.1, 0.1, 0.1, 0.1]
    assert table.attrs["graphed_kind"] == "graphed (no capture)"
    assert table.graphed_vs_eager.max() < 1e-5 and table.eager_vs_eager.max() == 0
    assert table.eager.iloc[-1] < table.eager.iloc[0]  # it trains: the losses compared are real


@pytest.mark.parametrize("threads, shown", [(1, "cpu (1 thread)"), (2, "cpu (2 threads)")])
def test_the_device_column_counts_threads_in_english(threads, shown):
    from resexp.tools.bench import describe

    torch.set_num_threads(threads)  # the conftest fixture gives the count back after the test
    assert describe(load_config(TINY), torch.device("cpu"))["device"] == shown


def spy_epochs(monkeypatch) -> list[dict]:
    """Each epoch bench trains: its number, images, batch sizes, and the step's counts after it."""
    import resexp.tools.bench as bench
    from resexp.data import train_batches

    seen, real = [], bench.train_epoch

    def spy(cfg, s, epoch, iteration, *args, **kwargs):
        sizes = [len(y) for _, y in train_batches(s.data, cfg.train.batch_size, cfg.seed, epoch)]
        stats = real(cfg, s, epoch, iteration, *args, **kwargs)
        seen.append({"epoch": epoch, "batches": sizes, "counts": dict(getattr(s.step, "counts", {})),
                     "seconds": stats["train_seconds"], "images": sum(sizes)})
        return stats

    monkeypatch.setattr(bench, "train_epoch", spy)
    return seen


def test_bench_times_full_batches_and_the_partial_batch_on_its_own(monkeypatch):
    """The speed compared with the conventional trainer (which drops the last batch) counts
    full batches only; the partial batch that ends a real epoch (256 % 96 = 64 images, trained
    eagerly beside a graph) is timed on its own, after the warm-up trained one."""
    from resexp.tools.bench import bench_config, bench_one

    epochs = spy_epochs(monkeypatch)
    row = bench_one(bench_config("resnet", 8, [*TINY, "train.batch_size=96"]), 2, extras=True)
    warm_up, timed, partial = epochs
    assert warm_up["batches"] == [96, 96, 64] and timed["batches"] == [96, 96] and partial["batches"] == [64]
    assert row["images_per_s"] == pytest.approx(192 / timed["seconds"], rel=1e-3)
    assert row["ms_per_step"] == pytest.approx(1000 * timed["seconds"] / 2, abs=0.01)
    assert (row["partial_batch"], row["partial_batch_ms"]) == (64, pytest.approx(1000 * partial["seconds"], abs=0.01))


def test_a_graphed_step_is_timed_only_once_it_replays(monkeypatch):
    """The dry run's estimate times 3 steps after 1 untimed one; a graphed step's first 4
    batches are 3 eager warm-ups and the capture with its self-check, so bench trains those
    untimed first and times replays only (here the graphed step's code without the capture)."""
    import resexp.train.step as step_mod
    from resexp.tools.bench import bench_one

    monkeypatch.setattr(step_mod, "wants_graphs", lambda train_cfg, device: True)
    epochs = spy_epochs(monkeypatch)
    bench_one(load_config(TINY), 3, warmup=1)
    warm_up, timed = epochs
    assert warm_up["counts"] == {"warm-up": 3, "graph": 1, "eager": 0}
    assert timed["counts"] == {"warm-up": 3, "graph": 4, "eager": 0} and timed["batches"] == [64] * 3
