"""results.py: run folders -> tables, effective status, seed aggregation."""

import csv
import os
import socket
import statistics

import pandas as pd
import pytest
from helpers.runs import dead_pid, make_run, metrics_rows, write_lock, write_metrics

from resexp.analysis.results import aggregate, format_status, load_metrics, load_runs, status_table
from resexp.errors import UserError


def last_row(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))[-1]


def test_load_runs_reads_summary(tmp_path):
    run_dir = make_run(tmp_path, "resnet", 20, 3, [40.0, 12.5], [45.0, 14.25], params=272474)
    run = load_runs(tmp_path).iloc[0]
    assert (run["run"], run["arch"], run["depth"], run["seed"]) == ("resnet-20-s3", "resnet", 20, 3)
    assert run["status"] == "done"
    assert run["params"] == 272474
    assert run["epochs"] == 2
    assert run["final_train_err"] == float(last_row(run_dir)["train_err"]) == 12.5
    assert run["final_test_err"] == 14.25
    assert run["dataset"] == "fashion_mnist" and not run["synthetic"]


def test_run_without_summary_is_partial_and_named_from_folder(tmp_path):
    make_run(tmp_path, "mlp_plain", 30, 0, [60.0, 31.0, 22.0], [61.0, 33.0, 24.5], summary=False)
    run = load_runs(tmp_path).iloc[0]
    assert (run["arch"], run["depth"], run["seed"]) == ("mlp_plain", 30, 0)
    assert run["status"] == "partial"
    assert run["epochs"] == 3
    assert (run["final_train_err"], run["final_test_err"]) == (22.0, 24.5)
    assert run["dataset"] == "fashion_mnist"  # from config.yaml


def test_running_needs_a_live_lock_and_a_silent_one_is_stale(tmp_path, frozen_clock):
    for seed in range(5):
        make_run(tmp_path, "plain", 20, seed, [50.0], status="running")
    run = lambda seed: tmp_path / f"plain-20-s{seed}"  # noqa: E731
    write_lock(run(0), pid=os.getppid())  # this host, pid alive, fresh heartbeat
    write_lock(run(1), pid=dead_pid())  # this host, its process is gone: stopped
    write_lock(run(2), pid=os.getppid(), host="some-other-node", age=10)  # another host, heard from lately
    write_lock(run(3), pid=os.getppid(), host="some-other-node", age=400, stale_after=300)  # silent too long
    # run 4: "running" in its summary but no lock: its trainer was killed
    status = load_runs(tmp_path).set_index("seed")["status"]
    assert status.to_dict() == {0: "running", 1: "partial", 2: "running", 3: "stale", 4: "partial"}
    owners = status_table(tmp_path).set_index("run")["owner"]
    assert owners["plain-20-s0"] == f"host {socket.gethostname()} pid {os.getppid()}, heartbeat 0s ago"
    assert owners["plain-20-s3"] == f"host some-other-node pid {os.getppid()}, heartbeat 400s ago"
    assert owners["plain-20-s4"] == ""


def test_running_run_takes_errors_from_last_metrics_row(tmp_path):
    make_run(tmp_path, "plain", 56, 0, [50.0, 30.0], [55.0, 33.0], status="running",
             epochs_planned=10)
    run = load_runs(tmp_path).iloc[0]  # the factory writes null final errors for a running run
    assert (run["final_train_err"], run["final_test_err"]) == (30.0, 33.0)
    assert (run["epochs"], run["epochs_planned"]) == (2, 10)


def test_folders_that_are_not_runs_are_ignored(tmp_path):
    make_run(tmp_path, "plain", 20, 0, [10.0])
    (tmp_path / "figures").mkdir()
    (tmp_path / "plain-20").mkdir()
    (tmp_path / "resnet-20-s1").mkdir()  # a run name, but nothing written yet
    (tmp_path / "report.md").write_text("x")
    assert load_runs(tmp_path)["run"].tolist() == ["plain-20-s0"]


def test_header_only_metrics_is_a_run_without_epochs(tmp_path):
    make_run(tmp_path, "resnet", 32, 0, [], status="running")
    run = load_runs(tmp_path).iloc[0]
    assert run["epochs"] == 0 and pd.isna(run["final_train_err"])
    assert load_metrics(tmp_path).empty


def test_repeated_epoch_after_resume_keeps_later_row(tmp_path):
    run_dir = make_run(tmp_path, "plain", 20, 0, [50.0, 40.0], summary=False)
    rows = metrics_rows([50.0, 40.0, 30.0], [55.0, 45.0, 35.0])
    rows.insert(2, dict(rows[1], train_err=41.0))  # epoch 2 written twice
    rows[1], rows[2] = rows[2], rows[1]
    write_metrics(run_dir, rows)
    metrics = load_metrics(tmp_path)
    assert metrics["epoch"].tolist() == [1, 2, 3]
    assert metrics["train_err"].tolist() == [50.0, 40.0, 30.0]


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p])
def test_missing_or_empty_results_dir_is_a_user_error(tmp_path, make):
    (tmp_path / "notes").mkdir()
    with pytest.raises(UserError) as err:
        load_runs(make(tmp_path))
    assert "\n" not in str(err.value)


def test_load_metrics_is_every_epoch_of_every_run(tmp_path):
    dirs = [make_run(tmp_path, "plain", 20, 0, [30.0, 20.0], [31.0, 22.0]),
            make_run(tmp_path, "mlp_resnet", 8, 1, [25.0, 15.0, 9.0], [26.0, 17.0, 11.0])]
    metrics = load_metrics(tmp_path)
    assert list(metrics.columns[:4]) == ["run", "arch", "depth", "seed"]
    for run_dir in dirs:
        expected = pd.read_csv(run_dir / "metrics.csv")
        got = metrics[metrics["run"] == run_dir.name]
        assert got["arch"].nunique() == 1
        for column in expected.columns:
            assert got[column].tolist() == pytest.approx(expected[column].tolist())


def test_aggregate_is_mean_and_sample_std_over_seeds(tmp_path):
    finals = {0: 12.0, 1: 15.5, 2: 13.25}
    dirs = [make_run(tmp_path, "plain", 56, seed, [40.0, err], [45.0, err + 3.0])
            for seed, err in finals.items()]
    make_run(tmp_path, "resnet", 56, 0, [40.0, 7.0])
    table = aggregate(load_runs(tmp_path)).set_index(["arch", "depth"])
    from_csv = [float(last_row(d)["train_err"]) for d in dirs]
    plain = table.loc[("plain", 56)]
    assert plain["n"] == 3
    assert plain["train_err_mean"] == pytest.approx(statistics.mean(from_csv))
    assert plain["train_err_std"] == pytest.approx(statistics.stdev(from_csv))
    assert plain["test_err_mean"] == pytest.approx(statistics.mean(from_csv) + 3.0)
    single = table.loc[("resnet", 56)]
    assert single["n"] == 1 and single["train_err_mean"] == 7.0
    assert pd.isna(single["train_err_std"])  # one seed: no spread claimed


def test_aggregate_leaves_diverged_out_and_counts_them(tmp_path):
    make_run(tmp_path, "plain", 110, 0, [50.0, 20.0])
    make_run(tmp_path, "plain", 110, 1, [50.0, 90.0], status="diverged")
    make_run(tmp_path, "plain", 20, 0, [50.0, 90.0], status="diverged")
    table = aggregate(load_runs(tmp_path)).set_index(["arch", "depth"])
    assert table.loc[("plain", 110), ["n", "diverged", "train_err_mean"]].tolist() == [1, 1, 20.0]
    assert table.loc[("plain", 20), "n"] == 0 and table.loc[("plain", 20), "diverged"] == 1
    assert pd.isna(table.loc[("plain", 20), "train_err_mean"])


def test_aggregate_uses_unfinished_runs_only_without_finished_ones(tmp_path):
    make_run(tmp_path, "resnet", 20, 0, [30.0, 10.0])
    make_run(tmp_path, "resnet", 20, 1, [30.0], status="running", epochs_planned=2)
    make_run(tmp_path, "resnet", 44, 0, [35.0], summary=False)
    make_run(tmp_path, "resnet", 44, 1, [33.0, 21.0], summary=False)
    table = aggregate(load_runs(tmp_path)).set_index(["arch", "depth"])
    done = table.loc[("resnet", 20)]
    assert (done["n"], done["finished"], done["unfinished"], done["train_err_mean"]) == (1, True, 1, 10.0)
    partial = table.loc[("resnet", 44)]
    assert (partial["n"], partial["finished"]) == (2, False)
    assert partial["train_err_mean"] == pytest.approx((35.0 + 21.0) / 2)
    assert partial["epochs"] == 1  # the fewest epochs among the runs averaged


def test_status_table_and_text(tmp_path):
    make_run(tmp_path, "plain", 20, 0, [30.0, 12.0], [33.0, 14.5])
    make_run(tmp_path, "resnet", 20, 0, [30.0, 25.0, 20.0], [31.0, 26.0, 21.25],
             status="running", epochs_planned=10)
    make_run(tmp_path, "resnet", 56, 0, [30.0], status="failed", error="CUDA out of memory\ntrace")
    table = status_table(tmp_path).set_index("run")
    assert table.loc["resnet-20-s0", "status"] == "partial"  # pid 999999999 is not alive
    assert table.loc["resnet-20-s0", "progress"] == "epoch 3/10"
    assert table.loc["resnet-20-s0", ["train_err", "test_err"]].tolist() == [20.0, 21.25]
    assert table.loc["plain-20-s0", "progress"] == "epoch 2/2"
    text = format_status(status_table(tmp_path))
    assert "21.25" in text and "CUDA out of memory" in text and "trace" not in text
    assert text.splitlines()[-1] == "3 runs: 1 done, 1 partial, 1 failed"

