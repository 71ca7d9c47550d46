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
