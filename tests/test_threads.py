"""The thread count of a run: one rule, decided once at its start, recorded in summary.json.
Core counts, quotas and others' load are injected: nothing here is timed or slept on."""

from __future__ import annotations

import json
import os

import pytest
import torch
from helpers.cli import TINY
from omegaconf import OmegaConf
from rich.console import Console

from resexp.run.state import Status
from resexp.settings.compose import load_config
from resexp.sweep import task
from resexp.train import threads


@pytest.fixture(scope="module")
def free_cfg():
    """The tiny run with train.threads left null, as shipped (composed once: Hydra is slow)."""
    return load_config([o for o in TINY if not o.startswith("train.threads")])


def never(_cpus):
    raise AssertionError("others' load measured where a set count wins")


def quota_dir(tmp_path, quota: float | None):
    """A cgroup v2 folder with ``quota`` cores in cpu.max (none: "max")."""
    (tmp_path / "cpu.max").write_text("max 100000\n" if quota is None else f"{int(quota * 100000)} 100000\n")
    return tmp_path


# (train.threads, jobs, environment, CPUs in the affinity mask, cgroup quota, others' busy cores)
#   -> (count, policy); others=never: the load must not be measured.
RULE = [
    (3, 1, {}, 8, None, never, 3, "user"),
    (2, 4, {"SLURM_CPUS_PER_TASK": "6"}, 8, None, never, 2, "user"),   # the user wins over all
    (None, 1, {"SLURM_CPUS_PER_TASK": "3"}, 8, None, never, 3, "slurm"),
    (None, 4, {"SLURM_CPUS_PER_TASK": "3"}, 8, None, never, 3, "slurm"),  # a job's own cores
    (None, 2, {}, 8, None, never, 4, "workers"),
    (None, 16, {}, 8, None, never, 1, "workers"),                      # never below one
    (None, 2, {}, 8, 2.5, never, 1, "workers"),                        # share of 3 (the quota, rounded up)
    (None, 1, {}, 1, None, never, 1, "cores"),                         # one core: nothing to measure
    (None, 1, {}, 2, None, lambda c: 0.1, 2, "cores"),                 # idle: every core
    (None, 1, {}, 2, None, lambda c: 1.0, 1, "cores"),                 # one busy process
    (None, 1, {}, 2, None, lambda c: 2.0, 1, "cores"),                 # two: still one thread, never none
    (None, 1, {}, 8, None, lambda c: 0.3, 7, "cores"),                 # a third of a core is taken
    (None, 1, {}, 8, None, lambda c: 2.9, 5, "cores"),
    (None, 1, {}, 8, 2.0, lambda c: 3.0, 2, "cores"),                  # a quota on a host with free CPUs
    (None, 1, {}, 4, 2.0, lambda c: 3.0, 1, "cores"),
    (None, 1, {}, 4, None, lambda c: None, 4, "cores"),                # no /proc/stat: every usable core
]


@pytest.mark.parametrize("user, jobs, environ, cpus, quota, others, count, policy", RULE)
def test_the_rule(tmp_path, user, jobs, environ, cpus, quota, others, count, policy):
    chosen = threads.decide(user, jobs, "cpu", environ, affinity=set(range(cpus)),
                            cgroup=quota_dir(tmp_path, quota), others=others)
    assert (chosen.count, chosen.policy) == (count, policy)
    assert chosen.record() == {"torch_threads": count, "threads_policy": policy, "threads_why": chosen.why}


def test_a_gpu_run_keeps_torchs_count_unless_a_count_is_set(tmp_path):
    kwargs = {"environ": {}, "affinity": {0, 1, 2, 3}, "cgroup": quota_dir(tmp_path, None), "others": never}
    gpu = threads.decide(None, 1, "cuda", **kwargs)
    assert (gpu.count, gpu.policy) == (torch.get_num_threads(), "gpu")
    assert threads.decide(None, 2, "cuda", **kwargs).policy == "workers"  # workers sharing the CPU still split it


def test_others_load_is_busy_time_less_this_process_own(tmp_path):
    """Half a second in which CPUs 0 and 1 (the mask) were busy throughout and this process
    used 0.5 s of CPU itself: others kept one core busy. CPU 2 (outside the mask), idle and
    iowait time do not count."""
    hz = os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"

    def write(busy: int, idle: int):  # user nice system idle iowait irq softirq steal
        rows = [f"cpu{n} {busy} 0 0 {idle} {idle} 0 0 0 0 0" for n in range(3)]
        stat.write_text("\n".join([f"cpu  {3 * busy} 0 0 0 0 0 0 0 0 0", *rows, "intr 1 2 3"]) + "\n")
    own = iter([10.0, 10.5])
    write(busy=0, idle=0)
    taken = threads.others_busy({0, 1}, 0.5, stat, own=lambda: next(own),
                                sleep=lambda s: write(busy=hz // 2, idle=7 * hz))
    assert taken == pytest.approx(1.0)
    assert threads.others_busy({0}, 0.5, tmp_path / "missing", sleep=never) is None


def test_usable_cores_and_the_cgroup_quota(tmp_path):
    assert threads.usable_cores({}, affinity=set(range(8)), cgroup=quota_dir(tmp_path, 2.5)) == 3
    assert threads.usable_cores({"SLURM_CPUS_PER_TASK": "2"}, set(range(8)), quota_dir(tmp_path, None)) == 2
    assert threads.cgroup_cpus(quota_dir(tmp_path, 1.5)) == 1.5
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_cpus(v1) == 3.0
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # v1's "no quota"
    assert threads.cgroup_cpus(v1) is None


def test_the_plan_states_the_rule(monkeypatch, free_cfg):
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    assert "1 per run (4 runs at once on 4 usable cores)" in task.planned_threads(free_cfg, "local", 4, False)
    assert "the 4 usable cores less those others keep busy" in task.planned_threads(free_cfg, "local", 1, False)
    pinned = OmegaConf.merge(free_cfg, {"train": {"threads": 1}})
    assert "1 per run (train.threads, as set)" in task.planned_threads(pinned, "local", 4, False)
    assert "GPU" in task.planned_threads(free_cfg, "local", 1, True)


def short(cfg, epochs: int):
    return OmegaConf.merge(cfg, {"train": {"epochs": epochs, "milestones": [], "diagnostics": "off"}})


def test_the_count_is_decided_once_and_recorded(tmp_path, monkeypatch, free_cfg):
    """Through fit: others keep one of 2 CPUs busy at the start, then leave (a second
    reading would give 2 threads). Every epoch trains on the one thread chosen at the
    start, and summary.json says so and why."""
    from resexp.train import loop

    loads, decide = [1.0, 0.0], threads.decide
    monkeypatch.setattr(threads, "decide", lambda *a: decide(*a, environ={}, affinity={0, 1}, cgroup=tmp_path,
                                                              others=lambda c: loads.pop(0)))
    counts = []
    summary = loop.fit(short(free_cfg, 2), tmp_path / "out", on_epoch=lambda _: counts.append(torch.get_num_threads()))
    assert summary["status"] == "done" and counts == [1, 1] and loads == [0.0]
    run = next((tmp_path / "out").iterdir())
    saved = json.loads((run / "summary.json").read_text())
    assert (saved["torch_threads"], saved["threads_policy"]) == (1, "cores")
    assert saved["threads_why"] == "2 usable cores, others kept 1.0 of 2 CPUs busy at its start"
    assert "threads_rechosen" not in saved


def test_a_jobs_worker_records_its_share(tmp_path, monkeypatch, free_cfg):
    """The run task hands --jobs to the rule: a worker of 2 takes half the usable cores."""
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert task.train_run(short(free_cfg, 1), tmp_path / "out", Console(quiet=True), jobs=2) == Status.DONE
    saved = json.loads(next((tmp_path / "out").iterdir()).joinpath("summary.json").read_text())
    assert (saved["torch_threads"], saved["threads_policy"]) == (max(1, threads.usable_cores() // 2), "workers")
