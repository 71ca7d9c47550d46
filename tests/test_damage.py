"""Nothing lost, nothing crashes: damaged run files, a full or read-only disk, killed sweeps.

Most tests start from one finished 4-run sweep (plain and resnet at depths 8 and 14,
3 tiny epochs each), trained once for the module and copied per test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers.cli import DIAGNOSTICS, SWEEP_TINY, TINY, cli, rows, sweep_here
from helpers.formats import write_cifar10_tarball, write_mnist_source
from helpers.runs import gone, make_run

from resexp.analysis.results import load_runs, status_table
from resexp.run.folder import RunDir
from resexp.train import checkpoint

TIMING = {"seconds", "images_per_s", "elapsed"}
RUNS = ["plain-8-s0", "plain-14-s0", "resnet-8-s0", "resnet-14-s0"]
RUN_FILES = ["config.yaml", "metrics.csv", "summary.json", "checkpoint.pt"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("finished") / "out"
    assert set(sweep_here(["plain", "resnet"], [8, 14], None, SWEEP_TINY, out).values()) == {"done"}
    torch.set_num_threads(threads)
    return out


@pytest.fixture
def out(finished, tmp_path) -> Path:
    """A private copy of the finished sweep."""
    copy = tmp_path / "out"
    shutil.copytree(finished, copy)
    return copy


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def without_timing(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in metrics]


def status_of(folder: Path) -> pd.DataFrame:
    return status_table(folder).set_index("run").astype(object)


def same(shown: pd.DataFrame, expected: pd.DataFrame) -> bool:
    return shown.fillna("-").equals(expected.fillna("-"))


def interrupt(monkeypatch, method: str, when) -> None:
    """Ctrl-C right after RunDir.<method>(self, arg) returns for the arg where when(arg) is
    true: a kill at that moment, in this process."""
    original = getattr(RunDir, method)

    def then_interrupt(self, arg):
        original(self, arg)
        if when(arg):
            raise KeyboardInterrupt

    monkeypatch.setattr(RunDir, method, then_interrupt)


def interrupt_after_checkpoint(monkeypatch, when) -> None:
    """Ctrl-C right after the checkpoint of the state where when(state) is true is saved: a
    kill at that moment, in this process."""
    original = checkpoint.save

    def then_interrupt(run, state):
        original(run, state)
        if when(state):
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", then_interrupt)


def sweep_args(folder: Path, archs="resnet", depths="8") -> list:
    return ["sweep", "--archs", archs, "--depths", depths, "--out", folder, *SWEEP_TINY]


def cut_after(monkeypatch, capsys, folder: Path, epoch: int, archs="resnet", *extra: str) -> Path:
    """A sweep of resnet-8 killed right after its epoch-``epoch`` checkpoint."""
    with monkeypatch.context() as m:
        interrupt_after_checkpoint(m, lambda state: state["epoch"] == epoch)
        assert cli(m, capsys, *sweep_args(folder, archs), *extra)[0] == 130
    return folder / "resnet-8-s0"


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: ")]


# --------------------------------------------------------------------------- 1. a torn last line
def test_a_torn_last_line_is_cut_back_and_its_epoch_redone(finished, tmp_path, monkeypatch, capsys):
    run = cut_after(monkeypatch, capsys, tmp_path / "out", epoch=2)
    with open(run / "metrics.csv", "ab") as f:
        f.write(b"3,12,0.01,0.87")  # epoch 3's row, cut short by a crash
    for command in (["status"], ["report"], ["plot", "--format", "png"]):
        code, _, stderr = cli(monkeypatch, capsys, *command, tmp_path / "out")
        assert code == 0 and warnings(stderr) == []  # a torn line is not damage
    assert status_of(tmp_path / "out").loc["resnet-8-s0", "progress"] == "epoch 2/3"
    code, _, stderr = cli(monkeypatch, capsys, *sweep_args(tmp_path / "out"), "--dry-run")
    assert code == 0 and "resnet-8-s0" in stderr

    code, _, stderr = cli(monkeypatch, capsys, *sweep_args(tmp_path / "out"))
    assert code == 0, stderr
    assert "last line of metrics.csv was cut short" in stderr
    assert without_timing(rows(run)) == without_timing(rows(finished / "resnet-8-s0"))


# --------------------------------------------------------------------------- 2. damaged files, one run
def with_train_err(metrics: bytes, value: str) -> bytes:
    """metrics.csv with the first row's train_err set to ``value``."""
    lines = metrics.decode().split("\r\n")
    column = lines[0].split(",").index("train_err")
    fields = lines[1].split(",")
    lines[1] = ",".join([*fields[:column], value, *fields[column + 1:]])
    return "\r\n".join(lines).encode()


DAMAGE = {
    "config-invalid-yaml": ("config.yaml", lambda b: b"model: [unclosed\n", 2),
    "config-binary": ("config.yaml", lambda b: b"\x89PNG\r\n\x1a\n\x00\xff\xfe", 2),
    "config-cut-at-a-line": ("config.yaml", lambda b: b[:b.index(b"\ndataset:") + 1], 2),
    "summary-depth-abc": ("summary.json", lambda b: b.replace(b'"depth": 8', b'"depth": "abc"'), 0),
    "summary-nested-deep": ("summary.json", lambda b: b"[" * 3000 + b"]" * 3000, 0),
    "metrics-binary": ("metrics.csv", lambda b: bytes(range(256)), 2),
    "metrics-glued-rows": ("metrics.csv", lambda b: b.replace(b"\r\n2,", b"2,", 1), 2),
    "metrics-error-200": ("metrics.csv", lambda b: with_train_err(b, "200.0"), 2),
}


@pytest.mark.parametrize("file, damage, sweep_code", DAMAGE.values(), ids=DAMAGE.keys())
def test_one_damaged_file_is_reported_and_the_others_still_shown(out, monkeypatch, capsys, file, damage,
                                                                  sweep_code):
    before = status_of(out)
    path = out / "resnet-8-s0" / file
    path.write_bytes(damage(path.read_bytes()))
    others = {name: snapshot(out / name) for name in RUNS if name != "resnet-8-s0"}

    for command in (["status"], ["report"], ["plot", "--format", "png"]):
        code, stdout, stderr = cli(monkeypatch, capsys, *command, out)
        assert code == 0, stderr
        assert len(warnings(stderr)) == 1 and f"resnet-8-s0 is damaged: {file} " in warnings(stderr)[0]
    shown = status_of(out)
    assert shown.loc["resnet-8-s0", "status"] == "damaged" and shown.loc["resnet-8-s0", "error"].startswith(file)
    assert same(shown.drop(index="resnet-8-s0"), before.drop(index="resnet-8-s0"))
    report = pd.read_csv(out / "report.csv").set_index(["arch", "depth"])
    assert report.loc[("resnet", 8), "n"] == 0 and report.loc[("resnet", 8), "damaged"] == 1
    assert report.loc[("plain", 8), "train_err_mean"] == before.loc["plain-8-s0", "train_err"]

    code, _, stderr = cli(monkeypatch, capsys, "sweep", "--out", out, "--dry-run")
    assert code == 0 and "resnet-8-s0 is damaged: " in stderr
    if sweep_code == 2:  # beyond repair: `resexp train` of that run says so in one line
        code, stdout, stderr = cli(monkeypatch, capsys, "train", "--out", out, "experiment=he2016_cifar10", *TINY)
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert code == 2 and stdout == "" and len(lines) == 1, stderr
        assert lines[0].startswith(f"error: {out / 'resnet-8-s0'} is damaged: {file} ")
    logged = (out / "resnet-8-s0" / "metrics.csv").read_bytes() if file != "metrics.csv" else None
    code, stdout, stderr = cli(monkeypatch, capsys, "sweep", "--out", out)
    assert code == sweep_code, stderr
    if sweep_code == 0:  # summary.json is rewritten from the log and the checkpoint: nothing retrained
        assert same(status_of(out), before)
        assert (out / "resnet-8-s0" / "metrics.csv").read_bytes() == logged
    else:
        assert "resnet-8-s0 is damaged: " in stderr and stdout.strip().endswith(": 1 damaged, 3 done")
    assert {name: snapshot(out / name) for name in others} == others


SWEEP_YAML = {
    "invalid-yaml": b"archs: [plain\n",
    "bare-string": b"just some words\n",
    "a-list": b"- plain\n- resnet\n",
    "python-tag": b"!!python/object/apply:os.system ['touch pwned']\n",
    "empty": b"",
}


@pytest.mark.parametrize("content", SWEEP_YAML.values(), ids=SWEEP_YAML.keys())
def test_a_damaged_sweep_yaml_is_one_line(out, monkeypatch, capsys, content):
    (out / "sweep.yaml").write_bytes(content)
    code, stdout, stderr = cli(monkeypatch, capsys, "sweep", "--out", out)
    assert code == 2 and stdout == ""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {out / 'sweep.yaml'} is damaged (")
    assert not Path("pwned").exists()


# --------------------------------------------------------------------------- 3. summary behind the log
def test_a_run_killed_right_after_its_row_shows_that_row(tmp_path, monkeypatch, capsys):
    with monkeypatch.context() as m:
        interrupt(m, "append_row", lambda row: row["epoch"] == 2)  # before its checkpoint and summary
        assert cli(m, capsys, *sweep_args(tmp_path / "out"))[0] == 130
    run = tmp_path / "out" / "resnet-8-s0"
    assert RunDir(run).read_summary()["epochs"] == 1
    second = rows(run)[1]
    shown = status_of(tmp_path / "out").loc["resnet-8-s0"]
    assert shown["progress"] == "epoch 2/3"
    assert (shown["train_err"], shown["test_err"]) == (float(second["train_err"]), float(second["test_err"]))
    assert cli(monkeypatch, capsys, "report", tmp_path / "out")[0] == 0
    report = pd.read_csv(tmp_path / "out" / "report.csv").set_index(["arch", "depth"])
    assert report.loc[("resnet", 8), "train_err_mean"] == float(second["train_err"])


def test_a_resume_at_the_last_epoch_writes_the_final_errors(finished, tmp_path, monkeypatch, capsys):
    run = cut_after(monkeypatch, capsys, tmp_path / "out", epoch=3)  # the last checkpoint, summary not updated
    logged = rows(run)
    code, _, stderr = cli(monkeypatch, capsys, *sweep_args(tmp_path / "out"))
    assert code == 0, stderr
    summary = RunDir(run).read_summary()
    assert (summary["status"], summary["epochs"]) == ("done", 3)
    assert summary["final_train_err"] == float(logged[-1]["train_err"])
    assert summary["final_test_err"] == float(logged[-1]["test_err"])
    assert summary["wall_seconds"] == float(logged[-1]["elapsed"])
    assert rows(run) == logged  # nothing trained again


# --------------------------------------------------------------------------- 4. full disk, read-only
@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (a checkpoint of the tiny net is 0.6 MB: the second one does not fit),
    or None where this machine does not let the test mount one."""
    mount = tmp_path / "small"
    mount.mkdir()
    can = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                                                capture_output=True).returncode == 0
    yield mount if can else None
    if can:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def no_space_on_second_checkpoint(monkeypatch) -> None:
    """Without a small disk: the second checkpoint's write fails as on a full one, half written."""
    original = os.fsync

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if Path(target).name.startswith(".checkpoint.pt.") and Path(target).parent.joinpath("checkpoint.pt").exists():
            raise OSError(28, "No space left on device")
        original(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_full_disk_is_one_line_and_the_run_resumes_after(finished, small_disk, tmp_path, monkeypatch, capsys):
    out = (small_disk or tmp_path) / "out"
    with monkeypatch.context() as m:
        if small_disk is None:
            no_space_on_second_checkpoint(m)
        code, stdout, stderr = cli(m, capsys, *sweep_args(out, archs="resnet,plain"))
    lines = [line for line in stderr.splitlines() if line.startswith(("error", "Traceback"))]
    assert code == 2 and stdout == ""
    assert len(lines) == 1 and "checkpoint.pt: No space left on device; free some space" in lines[0]
    assert [p.name for p in out.rglob("*.tmp")] == []
    shown = status_of(out).loc["resnet-8-s0"]
    assert shown["status"] == "failed" and shown["error"] == "no space left on device (writing checkpoint.pt)"
    assert not (out / "plain-8-s0").exists()  # the sweep stopped: every run would have failed alike

    if small_disk is not None:  # read-only: one line, nothing changed
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
        before = snapshot(out)
        code, stdout, stderr = cli(monkeypatch, capsys, *sweep_args(out, archs="resnet,plain"))
        assert code == 2 and [ln for ln in stderr.splitlines() if ln.startswith("error")] == [
            f"error: cannot write to {out}: Read-only file system"]
        assert snapshot(out) == before
        subprocess.run(["mount", "-o", "remount,rw,size=8m", str(small_disk)], check=True)

    code, stdout, stderr = cli(monkeypatch, capsys, *sweep_args(out, archs="resnet,plain"))
    assert code == 0, stderr
    for name in ("resnet-8-s0", "plain-8-s0"):
        assert without_timing(rows(out / name)) == without_timing(rows(finished / name))


def fill(disk: Path) -> Path:
    """Fill a small disk to the last byte; returns the filler file (delete it to free the disk)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == 28
        with contextlib.suppress(OSError):  # the last partial page
            while f.write(b"\0"):
                pass
    return filler


# Each writer of a run folder, the call that writes it, and which call of it meets the full
# disk: the first write of a file (metrics.csv's first row, responses.csv at iteration 0,
# TensorBoard's events file), or a replace (the second checkpoint or summary). An append that
# still fits the file's last page needs no new space on tmpfs, so it is not where a disk fills.
WRITERS = {
    "metrics.csv": ("resexp.run.folder.RunDir.append_rows", lambda path, *_: Path(path).name == "metrics.csv", 1),
    "responses.csv": ("resexp.run.folder.RunDir.append_rows", lambda path, *_: Path(path).name == "responses.csv", 1),
    "checkpoint.pt": ("resexp.run.folder.RunDir.write_checkpoint", lambda *_: True, 2),
    "summary.json": ("resexp.run.folder.RunDir.write_summary", lambda *_: True, 2),
    "events.out.tfevents.*": ("resexp.inside.tensorboard.TBLog.__init__", lambda *_: True, 1),
}


@pytest.mark.parametrize("file", WRITERS)
def test_a_full_disk_under_any_writer_is_one_line_and_resumable(file, finished, small_disk, monkeypatch, capsys):
    """A real full disk (a small tmpfs filled to the last byte) just as each writer writes:
    one error line naming the file, exit 2; once space is freed the same command finishes
    the run with the numbers of an uninterrupted one."""
    if small_disk is None:
        pytest.skip("needs root to mount a small tmpfs (CI runs as root)")
    target, matches, nth = WRITERS[file]
    out, calls = small_disk / "out", [0]
    module_path, cls_name, method = target.rsplit(".", 2)
    cls = getattr(__import__(module_path, fromlist=[cls_name]), cls_name)
    original = getattr(cls, method)

    def full_at_nth(self, *args, **kwargs):
        if matches(*args):
            calls[0] += 1
            if calls[0] == nth:
                fill(small_disk)
        return original(self, *args, **kwargs)

    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    with monkeypatch.context() as m:
        m.setattr(cls, method, full_at_nth)
        code, stdout, stderr = cli(m, capsys, *sweep_args(out), "train.tensorboard=true", DIAGNOSTICS)
    errors = [ln for ln in stderr.splitlines() if ln.startswith(("error", "Traceback"))]
    assert code == 2 and stdout == "" and len(errors) == 1, stderr
    assert f"{file}: No space left on device; free some space" in errors[0]
    (small_disk / "filler").unlink()
    code, _, stderr = cli(monkeypatch, capsys, *sweep_args(out), "train.tensorboard=true", DIAGNOSTICS)
    assert code == 0, stderr
    assert without_timing(rows(out / "resnet-8-s0")) == without_timing(rows(finished / "resnet-8-s0"))


# --------------------------------------------------------------------------- 5. workers die with the sweep
def start_parallel_sweep(out: Path, epochs: int, *extra: str) -> tuple[subprocess.Popen, list[int]]:
    """`resexp sweep --jobs 2` of two tiny runs in its own process group; returns it and the
    pids of its two workers once both have started their run (the readiness signal)."""
    args = [sys.executable, "-m", "resexp", *sweep_args(out, archs="plain,resnet"), "--jobs", "2",
            f"train.epochs={epochs}", *extra]
    sweep = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    locks = [out / name / "run.lock" for name in ("plain-8-s0", "resnet-8-s0")]
    deadline = time.monotonic() + 120
    # ready: each worker holds its lock and has recorded its run as started (summary.json)
    while not all(lock.exists() and lock.stat().st_size and (lock.parent / "summary.json").exists()
                  for lock in locks):
        if sweep.poll() is not None or time.monotonic() > deadline:
            sweep.kill()
            raise AssertionError(f"the workers never started: {sweep.communicate()}")
        time.sleep(0.05)
    return sweep, [RunDir(lock.parent).state().owner.pid for lock in locks]


def test_a_worker_killed_hard_is_a_failed_run_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    sweep, (victim, other) = start_parallel_sweep(out, 6)
    os.kill(victim, signal.SIGKILL)
    try:
        stdout, stderr = sweep.communicate(timeout=300)
    finally:
        sweep.kill()
    assert sweep.returncode == 1, stderr  # a failed run: exit 1, after the other run finished
    assert stdout.strip() == f"sweep {out}: 1 done, 1 failed"
    assert "plain-8-s0 failed: its worker process died (exit code -9)" in stderr
    status = status_of(out)["status"].to_dict()
    assert status == {"plain-8-s0": "failed", "resnet-8-s0": "done"}
    assert not (out / "plain-8-s0" / "run.lock").exists()  # the dead worker's lock went with it
    # the same command resumes the lost run from its last epoch: every epoch once
    code, stdout, _ = cli(monkeypatch, capsys, *sweep_args(out, archs="plain,resnet"), "train.epochs=6")
    assert code == 0 and stdout.strip() == f"sweep {out}: 2 done"
    assert [int(r["epoch"]) for r in rows(out / "plain-8-s0")] == list(range(1, 7))


def test_ctrl_c_ends_a_parallel_sweep_and_its_workers(tmp_path):
    out = tmp_path / "out"
    sweep, workers = start_parallel_sweep(out, 400)
    try:
        os.killpg(sweep.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole process group
        _, stderr = sweep.communicate(timeout=120)
    finally:
        sweep.kill()
    assert sweep.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted: finished epochs are saved; rerun the same command " \
                                              "to continue"
    assert gone(workers)
    assert set(status_of(out)["status"]) <= {"partial", "stale", "new"}  # resumable, nothing lost


# --------------------------------------------------------------------------- 6. metrics.csv deleted
def test_a_deleted_log_restarts_the_run_and_keeps_the_old_files(finished, tmp_path, monkeypatch, capsys):
    run = cut_after(monkeypatch, capsys, tmp_path / "out", 2, "resnet", DIAGNOSTICS)
    (run / "metrics.csv").unlink()
    code, _, stderr = cli(monkeypatch, capsys, "status", tmp_path / "out")
    assert code == 0 and "resnet-8-s0 is damaged: metrics.csv has 0 epochs, summary.json says 1; " \
                         "the next train or sweep restarts the run" in stderr
    code, _, stderr = cli(monkeypatch, capsys, *sweep_args(tmp_path / "out"), DIAGNOSTICS)
    assert code == 0, stderr
    assert "training it again from epoch 1" in stderr
    assert without_timing(rows(run)) == without_timing(rows(finished / "resnet-8-s0"))  # no hole
    aside = [p for p in run.iterdir() if p.is_dir()]
    assert len(aside) == 1 and aside[0].name.startswith("old-")
    # the diagnostics of the first attempt go aside with it (train.diagnostics=end measured epoch 0)
    assert sorted(p.name for p in aside[0].iterdir()) == ["checkpoint.pt", "gradients.csv", "identity.csv",
                                                          "responses.csv", "summary.json"]
    assert sorted(set(pd.read_csv(run / "responses.csv")["epoch"])) == [0, 3]  # the new attempt's own


# --------------------------------------------------------------------------- 7. corrupt dataset files
def test_corrupt_dataset_source_files_are_one_line(tmp_path, monkeypatch, capsys):
    mnist, cifar = tmp_path / "mnist_src", tmp_path / "cifar_src"
    write_mnist_source(mnist, n_train=64, n_test=32)
    gz = mnist / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:100])  # cut short
    write_cifar10_tarball(cifar, per_batch=8)
    tar = cifar / "cifar-10-python.tar.gz"
    tar.write_bytes(b"this is not a tar file at all" * 10)
    for dataset, source, name in (("mnist", mnist, gz.name), ("cifar10", cifar, tar.name)):
        code, stdout, stderr = cli(monkeypatch, capsys, "train", "--out", tmp_path / "runs", f"dataset={dataset}",
                                   f"dataset.source={source}", "dataset.download=false", "model.depth=8",
                                   "train.device=cpu")
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert code == 2 and stdout == "" and len(lines) == 1, stderr
        assert lines[0].startswith("error: cannot unpack ") and name in lines[0]


# --------------------------------------------------------------------------- 8. figures and folders
def test_only_folders_of_registered_architectures_are_runs(tmp_path):
    make_run(tmp_path, "plain", 8, 0, [30.0, 20.0])
    make_run(tmp_path, "weird", 8, 0, [30.0, 20.0])  # named like a run, but no such architecture
    (tmp_path / "other-8-s0").mkdir()
    (tmp_path / "other-8-s0" / "metrics.csv").write_text("not a run\n")
    assert load_runs(tmp_path)["run"].tolist() == ["plain-8-s0"]


def test_a_corrupt_checkpoint_inside_a_sweep_is_exit_2_after_the_other_runs(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "out"
    with monkeypatch.context() as m:  # plain-8 stops after epoch 1; resnet-8 never starts
        interrupt_after_checkpoint(m, lambda state: state["epoch"] == 1)
        assert cli(m, capsys, *sweep_args(folder, archs="plain,resnet"))[0] == 130
    (folder / "plain-8-s0" / "checkpoint.pt").write_bytes(b"garbage")
    code, stdout, stderr = cli(monkeypatch, capsys, *sweep_args(folder, archs="plain,resnet"))
    assert code == 2
    assert f"error: plain-8-s0: {folder / 'plain-8-s0' / 'checkpoint.pt'}: unreadable (" in stderr
    assert stdout.strip() == f"sweep {folder}: 1 damaged, 1 done"
    assert len(rows(folder / "resnet-8-s0")) == 3


# --------------------------------------------------------------------------- randomized damage
def damage(path: Path, how: str, rng: random.Random) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: rng.randrange(len(data))])
    elif how == "garbage":  # starts with 0xFF, which no UTF-8 text holds: text files read as damaged
        start, size = rng.randrange(len(data)), rng.randint(1, 16)
        path.write_bytes(data[:start] + b"\xff" + rng.randbytes(size - 1) + data[start + size:])
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()


HOWS = ["truncate", "garbage", "empty", "delete"]


# Every (file, kind of damage) pair once, then two pairs more at random: 18 damages, three
# per sweep (the fourth run of each stays whole, to show the damage stays where it is).
PAIRS = [(f, h) for f in RUN_FILES for h in HOWS]
PAIRS += random.Random(99).sample(PAIRS, 2)


@pytest.mark.parametrize("seed", range(len(PAIRS) // 3))
def test_random_damage_is_reported_or_repaired_and_stays_where_it_is(out, monkeypatch, capsys, seed):
    """Three runs of a finished sweep damaged at once, each a different (file, kind) pair;
    which runs, the cut and the garbage's place are random."""
    rng = random.Random(seed)
    hits = rng.sample(RUNS, 3)
    damages = dict(zip(hits, PAIRS[3 * seed: 3 * seed + 3], strict=True))
    whole = next(name for name in RUNS if name not in hits)
    before = status_of(out)
    for hit, (file, how) in damages.items():
        damage(out / hit / file, how, rng)
    untouched = snapshot(out / whole)

    for command in (["status"], ["report"], ["plot", "--format", "png"]):
        code, _, stderr = cli(monkeypatch, capsys, *command, out)
        assert code == 0, (damages, stderr)
        shown = status_of(out)
        assert set(shown.index) == set(RUNS)
        damaged = shown.index[shown["status"].eq("damaged")].tolist()
        assert set(damaged) <= set(hits) and len(warnings(stderr)) == len(damaged)
        assert same(shown.loc[[whole]], before.loc[[whole]])

    code, stdout, stderr = cli(monkeypatch, capsys, *sweep_args(out, "plain,resnet", "8,14"))
    assert code in (0, 2), (damages, stderr)
    after = status_of(out)
    if "was started with another config" in stderr:  # a config clash stops the sweep before it trains
        assert code == 2 and any(f"{out / hit} was started with another config" in stderr for hit in hits)
    else:  # each run repaired (or nothing the commands read was hurt), or reported by name
        for hit in hits:
            assert same(after.loc[[hit]], before.loc[[hit]]) or f"{hit} is damaged: " in stderr, \
                (hit, damages[hit], stderr)
        assert code == 0 or "is damaged: " in stderr
    assert snapshot(out / whole) == untouched
    assert list(out.rglob("*.tmp")) == []
