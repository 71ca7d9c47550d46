import json

import pandas as pd
import pytest
from helpers.interrupt import interrupted_and_resumed

import resexp.train.loop as train_mod
from resexp.errors import UserError
from resexp.models import count_params, get_model
from resexp.run.folder import COLUMNS, RunDir
from resexp.train.loop import fit
from resexp.train.schedule import make_schedule

TIMING = ["seconds", "images_per_s", "elapsed"]


def metrics(out, name="resnet-8-s0") -> pd.DataFrame:
    return pd.read_csv(out / name / "metrics.csv")


def test_run_writes_contracted_files(tmp_path, tiny_cfg):
    summary = fit(tiny_cfg("train.milestones=[2]"), tmp_path / "out")
    run = tmp_path / "out" / "resnet-8-s0"
    df = metrics(tmp_path / "out")
    assert list(df.columns) == COLUMNS
    assert df.epoch.tolist() == [1, 2, 3] and df.iteration.tolist() == [4, 8, 12]
    assert df.lr.tolist() == [0.1, 0.1, 0.01]  # milestone at epoch 2 -> iteration 8
    assert df.train_err.between(0, 100).all() and df.test_err.between(0, 100).all()
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk["status"] == "done" and summary["status"] == "done"
    assert on_disk["final_train_err"] == df.train_err.iloc[-1]
    assert on_disk["final_test_err"] == df.test_err.iloc[-1]
    one_channel = get_model("resnet", depth=8, in_channels=1, num_classes=10)
    assert on_disk["params"] == count_params(one_channel) and on_disk["synthetic"] is True
    assert (run / "config.yaml").read_text().count("arch: resnet") == 1
    assert (run / "checkpoint.pt").exists()


def test_training_learns_the_synthetic_task(tmp_path, tiny_cfg):
    fit(tiny_cfg("train.epochs=8", "train.milestones=[6]"), tmp_path / "out")
    df = metrics(tmp_path / "out")
    assert df.train_err.iloc[-1] < 50 < df.train_err.iloc[0]  # chance is 90%


def test_same_config_twice_gives_same_metrics(tmp_path, tiny_cfg):
    fit(tiny_cfg(), tmp_path / "a")
    fit(tiny_cfg(), tmp_path / "b")
    a, b = metrics(tmp_path / "a"), metrics(tmp_path / "b")
    pd.testing.assert_frame_equal(a.drop(columns=TIMING), b.drop(columns=TIMING))


def test_interrupted_run_resumes_to_the_same_result(tmp_path, tiny_cfg, monkeypatch):
    logged = interrupted_and_resumed(lambda: tiny_cfg("train.epochs=4"), tmp_path, monkeypatch)
    assert logged == [1, 2]
    full, cut = metrics(tmp_path / "full"), metrics(tmp_path / "cut")
    assert cut.epoch.tolist() == [1, 2, 3, 4]
    pd.testing.assert_frame_equal(full.drop(columns=TIMING), cut.drop(columns=TIMING))


def test_row_written_after_last_checkpoint_is_redone_not_duplicated(tmp_path, tiny_cfg):
    """A kill between appending epoch k's row and checkpointing epoch k."""
    fit(tiny_cfg("train.epochs=2"), tmp_path / "full")
    cfg = tiny_cfg("train.epochs=2")
    fit(cfg, tmp_path / "crash")
    run = RunDir(tmp_path / "crash" / "resnet-8-s0")
    # Roll the run back to "epoch 1 checkpointed, epoch 2 row written, then killed".
    import torch
    state = torch.load(run.checkpoint, weights_only=True)
    fit(tiny_cfg("train.epochs=1"), tmp_path / "one")
    one = RunDir(tmp_path / "one" / "resnet-8-s0")
    run.checkpoint.write_bytes(one.checkpoint.read_bytes())
    summary = run.read_summary() | {"status": "running"}
    run.write_summary(summary)
    assert state["epoch"] == 2
    fit(cfg, tmp_path / "crash")
    df = metrics(tmp_path / "crash")
    assert df.epoch.tolist() == [1, 2]
    pd.testing.assert_frame_equal(df.drop(columns=TIMING), metrics(tmp_path / "full").drop(columns=TIMING))


def test_nan_loss_ends_run_as_diverged(tmp_path, tiny_cfg):
    cfg = tiny_cfg("train.lr=1e6", "train.epochs=3")
    summary = fit(cfg, tmp_path / "out")
    assert summary["status"] == "diverged"
    df = metrics(tmp_path / "out")
    assert len(df) < 3 and not df.train_loss.iloc[-1] < float("inf")  # stopped at the NaN epoch
    rows = (tmp_path / "out" / "resnet-8-s0" / "metrics.csv").read_bytes()
    assert fit(cfg, tmp_path / "out")["status"] == "diverged"  # recorded, not retried
    assert (tmp_path / "out" / "resnet-8-s0" / "metrics.csv").read_bytes() == rows


def test_corrupt_checkpoint_is_one_clear_error_and_keeps_rows(tmp_path, tiny_cfg, monkeypatch):
    real = train_mod.train_epoch
    monkeypatch.setattr(train_mod, "train_epoch", lambda cfg, s, epoch, *a, **k: (_ for _ in ()).throw(
        KeyboardInterrupt) if epoch == 2 else real(cfg, s, epoch, *a, **k))
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_cfg(), tmp_path / "out")
    run = RunDir(tmp_path / "out" / "resnet-8-s0")
    rows = run.metrics.read_bytes()
    run.checkpoint.write_bytes(b"not a checkpoint")
    monkeypatch.setattr(train_mod, "train_epoch", real)
    with pytest.raises(UserError, match="checkpoint.pt: unreadable"):
        fit(tiny_cfg(), tmp_path / "out")
    assert run.metrics.read_bytes() == rows


def test_unwritable_output_folder(tmp_path, tiny_cfg):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot write to"):
        fit(tiny_cfg(), tmp_path / "file" / "out")


def test_changed_config_is_refused_for_an_existing_run(tmp_path, tiny_cfg):
    fit(tiny_cfg("train.epochs=1"), tmp_path / "out")
    with pytest.raises(UserError, match=r"train.lr: 0.1 -> 0.05"):  # (a longer run extends it: test_study.py)
        fit(tiny_cfg("train.epochs=1", "train.lr=0.05"), tmp_path / "out")
    # settings that do not change results may differ
    assert fit(tiny_cfg("train.epochs=1", "train.log_every=7"), tmp_path / "out")["status"] == "done"


def test_schedule_paper_recipe_and_warmup_switches_back(tiny_cfg):
    cfg = tiny_cfg("train.epochs=null", "train.iterations=64000", "train.milestones=[32000,48000]",
                   "train.milestone_unit=iterations", "train.warmup_iters=400",
                   "train.warmup_from_depth=110")
    s = make_schedule(cfg.train, iters_per_epoch=391, depth=110)
    assert [s.lr_at(i) for i in (0, 399, 400, 31999, 32000, 47999, 48000, 63999)] == \
        [0.01, 0.01, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    assert s.total_iters == 64000 and s.epochs == 164  # ceil(64000 / 391)
    assert make_schedule(cfg.train, 391, depth=56).lr_at(0) == 0.1  # only deep nets warm up


def test_schedule_in_epochs(tiny_cfg):
    cfg = tiny_cfg("train.epochs=10", "train.milestones=[5,8]")
    s = make_schedule(cfg.train, iters_per_epoch=7, depth=20)
    assert s.total_iters == 70 and s.milestones == (35, 56)
    assert s.lr_at(34) == 0.1 and s.lr_at(35) == 0.01 and s.lr_at(56) == 0.001


def test_iterations_stop_mid_epoch(tmp_path, tiny_cfg):
    fit(tiny_cfg("train.epochs=null", "train.iterations=6", "train.milestones=[]"), tmp_path / "out")
    df = metrics(tmp_path / "out")
    assert df.iteration.tolist() == [4, 6]


def test_validation_split_adds_columns(tmp_path, tiny_cfg):
    fit(tiny_cfg("dataset.val_size=64", "train.epochs=1"), tmp_path / "out")
    df = metrics(tmp_path / "out")
    assert {"val_loss", "val_err"} <= set(df.columns)
    assert json.loads((tmp_path / "out" / "resnet-8-s0" / "summary.json").read_text())["train_images"] == 192


def test_mlp_trains(tmp_path, tiny_cfg):
    s = fit(tiny_cfg("model.arch=mlp_resnet", "model.depth=6", "model.mlp_widths=[32]"), tmp_path / "out")
    assert s["status"] == "done" and s["params"] == 28 * 28 * 32 + 2 * 32 + 4 * (32 * 32 + 2 * 32) + 32 * 10 + 10


def test_on_epoch_reports_iterations_after_each_epoch(tmp_path, tiny_cfg):
    seen = []
    fit(tiny_cfg(), tmp_path / "out", on_epoch=seen.append)
    assert seen == [4, 8, 12]


def test_an_epoch_line_is_printed_only_once_its_checkpoint_is_saved(tmp_path, tiny_cfg, monkeypatch):
    """A stop right after an epoch's line loses nothing that line showed: the line comes after
    the checkpoint (a stop while epoch 2's checkpoint is written shows epoch 1 only)."""
    import io

    from rich.console import Console

    from resexp.train import checkpoint

    real = checkpoint.save

    def stops_at_epoch_2(run, state):
        if state["epoch"] == 2:
            raise KeyboardInterrupt
        real(run, state)

    monkeypatch.setattr(checkpoint, "save", stops_at_epoch_2)
    shown = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_cfg(), tmp_path / "out", console=Console(file=shown, width=300))
    lines = [ln for ln in shown.getvalue().splitlines() if " epoch " in ln]
    assert [ln.split(" epoch ")[1].split()[0] for ln in lines] == ["1/3"]
