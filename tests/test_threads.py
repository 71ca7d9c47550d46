"""The thread count of a CPU run: usable cores, the probe that picks the count, the rule
recorded in summary.json. Timings and core counts are injected: nothing here is timed."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.cli import TINY
from omegaconf import OmegaConf

from resexp.settings.compose import load_config
from resexp.sweep import task
from resexp.train import threads


@pytest.fixture(scope="module")
def free_cfg():
    """The tiny run with train.threads left null, as shipped (composed once: Hydra is slow)."""
    return load_config([o for o in TINY if not o.startswith("train.threads")])


def fake_steps(seconds: dict[int, list[float]]):
    """time_step(n, limit) giving each count's timings in turn (inf past the limit, as a
    stopped pass); records the calls."""
    calls, left = [], {n: list(v) for n, v in seconds.items()}

    def time_step(n: int, limit: float = math.inf) -> float:
        calls.append(n)
        value = left[n].pop(0) if len(left[n]) > 1 else left[n][0]
        return value if value <= limit else math.inf
    return time_step, calls


def still_clock():
    return 0.0


def test_on_busy_cores_the_probe_takes_one_thread_and_stops_timing_the_slow_count():
    step, calls = fake_steps({1: [0.12, 0.10], 2: [1.5]})  # 2 threads 15x slower, as measured loaded
    choice = threads.probe(step, [1, 2], clock=still_clock)
    assert (choice.threads, choice.policy) == (1, "probe")
    assert calls.count(2) == 1 and "1 thread 120 ms, 2 threads over 240 ms (stopped)" in choice.why


def test_idle_cores_keep_every_thread_when_they_pay():
    step, calls = fake_steps({1: [0.2, 0.1], 2: [0.15, 0.07]})  # warm-up first, then the real speeds
    choice = threads.probe(step, [1, 2], clock=still_clock)
    assert choice.threads == 2 and calls == [1, 2] * threads.PROBE_ROUNDS
    assert "1 thread 100 ms, 2 threads 70 ms" in choice.why  # the fastest of each count


def test_fewer_threads_win_a_tie_and_the_middle_count_can_win():
    step, _ = fake_steps({1: [0.100], 2: [0.095]})
    assert threads.probe(step, [1, 2], clock=still_clock).threads == 1  # within 10%: the cheaper one
    step, _ = fake_steps({1: [0.4], 6: [0.1], 8: [0.9]})  # 2 of 8 cores taken by others
    assert threads.probe(step, [1, 6, 8], clock=still_clock).threads == 6


def test_the_probe_stops_at_its_budget_with_each_count_timed_once():
    ticks = iter([0.0, threads.PROBE_BUDGET_S + 1])
    step, calls = fake_steps({1: [0.3], 2: [0.2]})
    assert threads.probe(step, [1, 2], clock=lambda: next(ticks)).threads == 2 and calls == [1, 2]


@pytest.mark.parametrize("cores, load, counts", [(2, 5.6, [1, 2]), (2, 0.3, [1, 2]), (16, 2.0, [1, 14, 16]),
                                                 (8, None, [1, 8]), (1, 0.0, [1])])
def test_candidates_are_one_every_core_and_the_free_ones(cores, load, counts):
    assert threads.candidates(cores, load) == counts


def test_usable_cores_are_the_fewest_of_affinity_quota_and_slurm(tmp_path):
    assert threads.usable_cores({}, affinity=8, quota=None, quota_known=True) == 8
    assert threads.usable_cores({}, affinity=8, quota=2.5, quota_known=True) == 3  # a container's 2.5 cores
    assert threads.usable_cores({"SLURM_CPUS_PER_TASK": "2"}, affinity=8, quota=4, quota_known=True) == 2
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads.cgroup_cpus(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpus(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_cpus(v1) == 3.0
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # no limit
    assert threads.cgroup_cpus(v1) is None


def never_timed():
    raise AssertionError("no probe expected")


def test_a_set_count_or_a_gpu_run_is_never_probed():
    assert threads.choose(3, "cpu", never_timed) == threads.Choice(3, "user", "train.threads=3")
    assert threads.choose(None, "cuda", never_timed).policy == "gpu"
    assert threads.choose(None, "cpu", never_timed, cores=1, load=0.0).threads == 1


def test_a_workers_share_is_recorded_as_such_and_not_as_the_users(monkeypatch, free_cfg):
    cfg = free_cfg
    monkeypatch.setattr(task, "usable_cores", lambda: 4)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    shared = task.with_threads(cfg, jobs=2)
    choice = threads.apply(threads.choose(shared.train.threads, "cpu", never_timed))
    assert (choice.threads, choice.policy, choice.why) == (2, "workers", "2 runs at once share 4 usable cores")
    assert threads.recorded() == {"torch_threads": 2, "threads_policy": "workers", "threads_why": choice.why}
    torch.set_num_threads(1)  # changed behind resexp's back: no reason is claimed for it
    assert threads.recorded()["threads_policy"] is None
    task.with_threads(cfg, jobs=1)  # a serial run next: the share does not linger
    assert threads.choose(2, "cpu", never_timed).policy == "user"


def test_the_plan_says_how_threads_are_chosen(monkeypatch, free_cfg):
    monkeypatch.setattr(task, "usable_cores", lambda: 4)
    free = free_cfg
    assert "1 per run (4 runs at once on 4 usable cores)" in task.planned_threads(free, "local", 4, False)
    assert "measured at each run's start, 1 to 4" in task.planned_threads(free, "local", 1, False)
    pinned = OmegaConf.merge(free, {"train": {"threads": 1}})
    assert "1 per run (train.threads, as set)" in task.planned_threads(pinned, "local", 4, False)
    assert "GPU" in task.planned_threads(free, "local", 1, True)


def test_the_probe_leaves_the_model_and_the_random_stream_alone(tiny_cfg):
    from resexp.models import get_model
    from resexp.train.step import make_step
    model = get_model(arch="resnet", depth=8, in_channels=1, num_classes=10, image_size=8)
    step = make_step(tiny_cfg("train.channels_last=true", "train.amp=false").train, model, torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    time_step = threads.model_timer(step, 4, (1, 8, 8), 10)
    assert 0 < time_step(1) < math.inf and torch.get_num_threads() == 1
    assert time_step(1, limit=0.0) == math.inf  # stopped at its first layer
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state()) and all(p.grad is None for p in model.parameters())


def test_a_default_cpu_run_records_the_probes_choice(tmp_path, monkeypatch, free_cfg):
    """The shipped default (train.threads null) through fit: the probe's timings are given."""
    from resexp.train.loop import fit
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "_load_average", lambda: 5.6)
    monkeypatch.setattr(threads, "model_timer", lambda *a: fake_steps({1: [0.1], 2: [1.2]})[0])
    summary = fit(OmegaConf.merge(free_cfg, {"train": {"epochs": 1}}), tmp_path / "out")
    assert (summary["torch_threads"], summary["threads_policy"]) == (1, "probe")
    assert summary["threads_why"] == ("fastest forward pass of a short probe: 1 thread 100 ms, "
                                      "2 threads over 200 ms (stopped)")


# ---- measured again between epochs, when the load changes (Recheck)

def rechecker(timings: list[dict[int, list[float]]], load: list[float], cores: int = 2):
    """A Recheck whose n-th measurement gets timings[n]; ``load`` is the load average (a
    one-item list the test changes). Returns it and the counts each measurement timed."""
    measured = []

    def time_step_for():
        time_step, calls = fake_steps(timings[len(measured)])
        measured.append(calls)
        return time_step
    return threads.Recheck(time_step_for, cores=cores, load=lambda: load[0]), measured


def test_an_epoch_at_under_half_speed_measures_the_count_again_and_only_once():
    threads.apply(threads.Choice(2, "probe", "idle at the start"))
    check, measured = rechecker([{1: [0.1], 2: [0.5]}], load=[2.0])  # the load: this run's own 2 threads
    assert check.after_epoch(1, 1000.0) is None
    assert check.after_epoch(2, 600.0) is None  # slower, not half: left alone
    change = check.after_epoch(3, 450.0)
    assert (change["after_epoch"], change["threads"], change["was"]) == (3, 1, 2)
    assert change["why"].startswith("measured again after epoch 3 (epoch 3 trained at 0.45x the speed of the "
                                    "fastest before it): fastest forward pass of a short probe: 1 thread 100 ms")
    assert torch.get_num_threads() == 1 and threads.recorded() == {
        "torch_threads": 1, "threads_policy": "probe", "threads_why": change["why"]}
    assert measured == [[1, 2]]
    assert check.after_epoch(4, 450.0) is None and check.after_epoch(5, 440.0) is None  # the new baseline
    assert len(measured) == 1


def test_an_epoch_at_under_half_speed_with_others_on_the_cores_goes_down_without_a_probe():
    """A collapse comes in bursts a short probe can miss: with others' load on the cores,
    the slow epoch itself is the evidence, and the run takes the cores they leave free."""
    threads.apply(threads.Choice(2, "probe", "idle at the start"))
    load = [2.0]  # this run's own 2 threads
    check, measured = rechecker([], load)
    assert check.after_epoch(1, 1000.0) is None
    load[0] = 4.0  # two others arrived
    assert check.after_epoch(2, 800.0) is None  # slower, not half
    change = check.after_epoch(3, 120.0)
    assert (change["after_epoch"], change["threads"], change["was"]) == (3, 1, 2) and measured == []
    assert change["why"] == ("lowered after epoch 3 (epoch 3 trained at 0.12x the speed of the fastest before it, "
                             "and others' load leaves 1 of 2 cores free: fewer threads do not stall)")
    assert torch.get_num_threads() == 1 and threads.recorded()["threads_why"] == change["why"]
    load[0] = 3.0  # the others and this run's one thread
    assert check.after_epoch(4, 400.0) is None and check.after_epoch(5, 390.0) is None and measured == []


def test_a_load_that_leaves_measures_a_reduced_count_again_once_per_change():
    threads.apply(threads.Choice(1, "probe", "busy at the start"))
    load = [3.0]  # two others and this run's one thread: one core free
    check, measured = rechecker([{1: [0.1], 2: [0.1]}, {1: [0.2], 2: [0.1]}], load)
    assert check.after_epoch(1, 500.0) is None
    load[0] = 1.0  # the others left
    change = check.after_epoch(2, 520.0)
    assert (change["threads"], change["was"]) == (1, 1)  # a tie: one thread is kept
    assert "(the load average now leaves 2 of 2 cores free (it left 1))" in change["why"]
    assert check.after_epoch(3, 520.0) is None and len(measured) == 1  # still free: not measured again
    load[0] = 3.0
    assert check.after_epoch(4, 400.0) is None  # others are back: one thread stays, nothing to measure
    load[0] = 1.0
    change = check.after_epoch(5, 510.0)  # and gone again: measured again, and now two threads pay
    assert (change["threads"], change["was"], torch.get_num_threads()) == (2, 1, 2) and len(measured) == 2
    assert check.after_epoch(6, 700.0) is None  # every core in use: only a slowdown measures again


@pytest.mark.parametrize("choice", [threads.Choice(2, "user", "train.threads=2"),
                                    threads.Choice(2, "workers", "2 runs at once share 4 usable cores"),
                                    threads.Choice(2, "slurm", "SLURM_CPUS_PER_TASK=2"),
                                    threads.Choice(1, "probe", "1 usable core")])
def test_a_count_that_was_set_or_has_one_core_is_never_measured_again(choice):
    threads.apply(choice)
    check, measured = rechecker([], load=[0.0], cores=1 if choice.why == "1 usable core" else 4)
    assert [check.after_epoch(e, speed) for e, speed in enumerate([1000.0, 10.0, 1.0], 1)] == [None] * 3
    assert measured == [] and torch.get_num_threads() == choice.threads


def test_a_default_cpu_run_measures_its_count_again_when_an_epoch_slows(tmp_path, monkeypatch, free_cfg, capsys):
    """Through fit: the run starts idle on 2 threads; its second epoch trains at a third of
    the first's speed (others took the cores), so the count is measured again and the rest
    of the run trains on one thread; summary.json says when and why."""
    import json

    from resexp.train import loop
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "_load_average", lambda: 0.0)
    timers = iter([fake_steps({1: [0.2], 2: [0.1]})[0], fake_steps({1: [0.1], 2: [0.9]})[0]])
    monkeypatch.setattr(threads, "model_timer", lambda *a: next(timers))
    train_epoch = loop.train_epoch

    def slowed_from_epoch_2(cfg, s, epoch, *args):
        trained = train_epoch(cfg, s, epoch, *args)
        assert torch.get_num_threads() == (2 if epoch <= 2 else 1)  # the new count trains the next epoch
        return {**trained, "images_per_s": 1000.0 if epoch == 1 else 300.0}
    monkeypatch.setattr(loop, "train_epoch", slowed_from_epoch_2)
    summary = loop.fit(OmegaConf.merge(free_cfg, {"train": {"epochs": 3}}), tmp_path / "out")
    assert summary["status"] == "done" and summary["epochs"] == 3
    [change] = summary["threads_rechosen"]
    assert (change["after_epoch"], change["threads"], change["was"]) == (2, 1, 2)
    assert "epoch 2 trained at 0.30x the speed of the fastest before it" in change["why"]
    assert (summary["torch_threads"], summary["threads_why"]) == (1, change["why"])
    run = next((tmp_path / "out").iterdir())
    assert json.loads((run / "summary.json").read_text())["threads_rechosen"] == [change]
    assert f"{run.name}: CPU threads 2 -> 1, measured again after epoch 2" in capsys.readouterr().err
