"""report.py: the table's numbers are the seeds' aggregates; the paper column sits where it belongs."""

import math
import re
import statistics
from pathlib import Path

import pandas as pd
import pytest
from helpers.runs import make_run

from resexp.analysis.plot import make_figures, title_of
from resexp.analysis.report import format_params, format_seconds, make_report
from resexp.analysis.results import experiment_info, load_runs
from resexp.errors import UserError

TABLE6 = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}


def make_cifar_sweep(root, dataset="cifar10", synthetic=False):
    finals = {("plain", 20): [9.0, 10.5], ("plain", 56): [12.0, 13.0],
              ("resnet", 20): [8.5, 9.0], ("resnet", 56): [6.75, 7.5], ("resnet", 44): [7.0]}
    for (arch, depth), errs in finals.items():
        for seed, err in enumerate(errs):
            make_run(root, arch, depth, seed, [30.0, err - 2.0], [33.0, err], dataset=dataset,
                     synthetic=synthetic, params=depth * 13_600)
    return finals


def test_report_numbers_are_the_seed_aggregates(tmp_path):
    finals = make_cifar_sweep(tmp_path)
    table, markdown = make_report(tmp_path)
    written = pd.read_csv(tmp_path / "report.csv").set_index(["arch", "depth"])
    for (arch, depth), test_errs in finals.items():
        row = written.loc[(arch, depth)]
        last = [pd.read_csv(tmp_path / f"{arch}-{depth}-s{s}" / "metrics.csv").iloc[-1]
                for s in range(len(test_errs))]
        assert row["n"] == len(test_errs)
        assert row["test_err_mean"] == pytest.approx(statistics.mean(r["test_err"] for r in last))
        assert row["train_err_mean"] == pytest.approx(statistics.mean(r["train_err"] for r in last))
        if len(test_errs) > 1:
            std = statistics.stdev(test_errs)
            assert row["test_err_std"] == pytest.approx(std)
            assert f"{statistics.mean(test_errs):.2f} ± {std:.2f}" in markdown
        else:
            assert math.isnan(row["test_err_std"])
    assert len(table) == len(written) == len(finals)
    assert (tmp_path / "report.md").read_text() == markdown


def test_paper_column_only_on_cifar10_resnet_rows(tmp_path):
    make_cifar_sweep(tmp_path)
    table, markdown = make_report(tmp_path)
    for row in table.itertuples():
        if row.arch == "resnet":
            assert row.paper_test_err == TABLE6[row.depth]
        else:
            assert math.isnan(row.paper_test_err)
    assert "paper test err" in markdown
    plain_line = next(line for line in markdown.splitlines() if line.startswith("| plain | 20 |"))
    resnet_line = next(line for line in markdown.splitlines() if line.startswith("| resnet | 56 |"))
    assert "6.97" in resnet_line and "6.97" not in plain_line and "8.75" not in plain_line


@pytest.mark.parametrize("dataset,synthetic", [("fashion_mnist", False), ("cifar10", True)])
def test_no_paper_values_for_other_data(tmp_path, dataset, synthetic):
    make_cifar_sweep(tmp_path, dataset=dataset, synthetic=synthetic)
    table, markdown = make_report(tmp_path, out_dir=tmp_path / "out")
    assert table["paper_test_err"].isna().all()
    assert "paper test err" not in markdown
    assert (tmp_path / "out" / "report.csv").exists() and not (tmp_path / "report.md").exists()
    assert ("synthetic data" in markdown.splitlines()[0]) == synthetic


def test_report_cells(tmp_path):
    make_run(tmp_path, "resnet", 20, 0, [30.0, 9.0], params=272_474)
    make_run(tmp_path, "resnet", 20, 1, [30.0, 90.0], status="diverged", params=272_474)
    make_run(tmp_path, "resnet", 110, 0, [40.0], status="running", epochs_planned=4,
             params=1_730_714)
    _, markdown = make_report(tmp_path)
    line20 = next(line for line in markdown.splitlines() if line.startswith("| resnet | 20 |"))
    line110 = next(line for line in markdown.splitlines() if line.startswith("| resnet | 110 |"))
    assert "| 0.27 |" in line20 and "1 (+1 diverged)" in line20 and "| 9.00 |" in line20
    assert "| 1.7 |" in line110 and "1 unfinished" in line110 and "| 1/4 |" in line110
    assert "| params (M) |" in markdown
    assert "Runs: 3 (1 done, 1 partial, 1 diverged)" in markdown


def test_formatting_helpers():
    # one unit (millions, the header's) for every size: 75k was "75.0k" beside "0.27M"
    assert [format_params(p) for p in (272_474, 1_730_714, 19_400_000, 75_018, 5_060_618)] == [
        "0.27", "1.7", "19.4", "0.075", "5.1"]
    assert [format_seconds(s) for s in (45, 192, 7500)] == ["45s", "3m 12s", "2h 05m"]


def test_report_of_missing_dir_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        make_report(tmp_path / "nope")


def _set_config(run_dir, **dataset_keys):
    import yaml
    path = run_dir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["dataset"].update(dataset_keys)
    path.write_text(yaml.safe_dump(config))


@pytest.mark.parametrize("augment, says, never", [
    ({"pad": 4, "hflip": True}, "with the training augmentation on", "unaugmented"),
    ({"pad": 0, "hflip": False}, "on unaugmented images", "augmentation on"),
])
def test_report_says_whether_augmentation_was_on(tmp_path, augment, says, never):
    for depth in (20, 56):
        run = make_run(tmp_path, "plain", depth, 0, [20.0, 10.0])
        _set_config(run, augment=augment, display_name="Fashion-MNIST")
    _, markdown = make_report(tmp_path)
    assert says in markdown and never not in markdown
    assert markdown.splitlines()[0] == "# test_sweep: plain vs residual networks on Fashion-MNIST"


def test_report_warns_when_runs_come_from_different_hardware(tmp_path):
    make_run(tmp_path, "plain", 20, 0, [20.0, 10.0], device="cpu", cpu_model="CPU A",
             cpu_bf16=["amx_bf16"], torch_threads=2)
    make_run(tmp_path, "plain", 20, 1, [20.0, 11.0], device="cpu", cpu_model="CPU B",
             cpu_bf16=["avx512_bf16"], torch_threads=2)
    make_run(tmp_path, "resnet", 20, 0, [20.0, 9.0], device="NVIDIA H100 80GB HBM3")
    _, markdown = make_report(tmp_path)
    line = next(ln for ln in markdown.splitlines() if ln.startswith("**Mixed hardware:**"))
    for label in ("CPU A (amx_bf16) (1 run)", "CPU B (avx512_bf16) (1 run)",
                  "NVIDIA H100 80GB HBM3 (1 run)"):
        assert label in line


def test_report_names_the_one_machine_of_a_sweep_whose_runs_took_different_thread_counts(tmp_path):
    """One machine whose runs trained on 1 and 2 threads is one machine, not mixed hardware."""
    for seed, threads in ((0, 1), (1, 2)):
        make_run(tmp_path, "plain", 20, seed, [20.0, 10.0], device="cpu", cpu_model="CPU A",
                 cpu_bf16=[], torch_threads=threads)
    _, markdown = make_report(tmp_path)
    assert "Hardware: CPU A (no native bf16)" in markdown and "Mixed" not in markdown


def test_report_links_the_figures_that_exist(tmp_path):
    make_run(tmp_path, "plain", 20, 0, [20.0, 10.0])
    _, markdown = make_report(tmp_path)
    assert "No figures yet" in markdown and "](" not in markdown
    make_figures(tmp_path, formats=("svg",))
    for out in (tmp_path, tmp_path / "elsewhere" / "report"):
        _, markdown = make_report(tmp_path, out_dir=out)
        links = re.findall(r"\]\(([^)]+)\)", markdown)
        assert {Path(link).name for link in links} == {"depth.svg", "depth.csv", "curves.svg", "curves.csv"}
        assert all((out / link).resolve().is_file() for link in links)


def test_default_experiment_on_another_dataset(tmp_path):
    """He et al.'s recipe (64k iterations, lr /10 at 32k and 48k) on MNIST for 8 iterations."""
    for arch in ("plain", "resnet"):
        make_run(tmp_path, arch, 8, 0, [50.0, 40.0], iters_per_epoch=4, dataset="mnist", experiment="he2016_cifar10",
                 schedule="SGD lr 0.1; x0.1 at it 32k, 48k; 8 it (2 epochs)")
    _, markdown = make_report(tmp_path)
    title, schedule = markdown.splitlines()[0], next(ln for ln in markdown.splitlines() if ln.startswith("Schedule"))
    assert "he2016_cifar10" not in title and "MNIST" in title
    assert "Experiment: he2016_cifar10 with dataset=mnist" in markdown
    assert schedule.strip() == "Schedule: SGD lr 0.1; 8 it (2 epochs)"
    info = experiment_info(load_runs(tmp_path))
    assert "he2016_cifar10 with dataset=mnist: 8 iterations" in title_of(info, "x")


@pytest.mark.parametrize("schedule, iterations, shown", [
    ("SGD lr 0.1; x0.1 at it 32k, 48k; 64k it (164 epochs)", 64000, "SGD lr 0.1; x0.1 at it 32k, 48k; 64k it"),
    ("SGD lr 0.1; x0.1 at it 32k, 48k; 40k it (100 epochs)", 40000, "SGD lr 0.1; x0.1 at it 32k; 40k it"),
    ("SGD lr 0.05; x0.1 at it 2k; warm-up lr 0.01 for 250 it; 2k it (8 epochs)", 2000,
     "SGD lr 0.05; warm-up lr 0.01 for 250 it; 2k it"),
])
def test_schedule_line_lists_the_milestones_a_run_reaches(tmp_path, schedule, iterations, shown):
    make_run(tmp_path, "resnet", 20, 0, [20.0, 10.0], dataset="cifar10", experiment="he2016_cifar10",
             schedule=schedule, iterations_planned=iterations)
    _, markdown = make_report(tmp_path)
    assert f"Schedule: {shown}" in markdown
    assert markdown.startswith("# he2016_cifar10: plain vs residual networks on ")  # its own dataset: named


def _table6_run(root, depth, seed, err, *, iterations, batch, test_images):
    """A resnet run on real CIFAR-10 with its length, batch and test split as given."""
    run = make_run(root, "resnet", depth, seed, [30.0, err - 2.0], [33.0, err], dataset="cifar10",
                   iters_per_epoch=iterations // 2, test_images=test_images)
    import yaml
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["train"]["batch_size"] = batch
    config["model"]["shortcut"] = "A"
    (run / "config.yaml").write_text(yaml.safe_dump(config))


def test_paper_values_beside_runs_trained_or_tested_otherwise_are_marked(tmp_path):
    """Table 6 is 64k iterations at batch 128 on the 10,000 test images: a 750-iteration run
    scored on 5,000 held-out images stood beside it unmarked."""
    _table6_run(tmp_path, 20, 0, 8.5, iterations=64_000, batch=128, test_images=10_000)
    _table6_run(tmp_path, 56, 0, 40.0, iterations=750, batch=32, test_images=5_000)
    table, markdown = make_report(tmp_path)
    notes = table.set_index("depth")["paper_note"]
    assert notes[20] == ""
    assert "750 iterations at batch 32" in notes[56] and "5,000 images" in notes[56]
    line20 = next(line for line in markdown.splitlines() if line.startswith("| resnet | 20 |"))
    line56 = next(line for line in markdown.splitlines() if line.startswith("| resnet | 56 |"))
    assert "| 8.75 |" in line20 and "| 6.97 ¹ |" in line56
    footnote = next(line for line in markdown.splitlines() if line.startswith("¹"))
    assert "Not comparable with Table 6" in footnote and notes[56] in footnote
    assert pd.read_csv(tmp_path / "report.csv").set_index("depth")["paper_note"].fillna("")[56] == notes[56]
