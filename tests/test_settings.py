"""Every setting a user gives is used or refused: run length, saved sweeps, sweep syntax,
estimates and what summary.json records about the machine."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from helpers.cli import SWEEP_TINY, TINY, cli, rows

from resexp.errors import UserError
from resexp.run.folder import RunDir
from resexp.settings.compose import shipped_config_dir
from resexp.sweep import estimate
from resexp.sweep import plan as sw

REPO = Path(__file__).resolve().parent.parent


def test_train_epochs_trains_that_many_epochs_under_the_default_experiment(monkeypatch, capsys):
    tiny = [o for o in TINY if o not in ("train.iterations=null", "train.epochs=3")]
    code, _, stderr = cli(monkeypatch, capsys, "train", "--out", "out", *tiny, "train.epochs=1")
    assert code == 0, stderr
    assert [int(r["epoch"]) for r in rows(Path("out/resnet-8-s0"))] == [1]
    assert RunDir(Path("out/resnet-8-s0")).read_summary()["iterations_planned"] == 4  # 256 / 64


def test_an_added_key_is_one_line_and_writes_nothing(monkeypatch, capsys):
    code, stdout, stderr = cli(monkeypatch, capsys, "train", "--out", "out", *TINY, "+train.optimizer=adam")
    assert code == 2 and stdout == ""
    assert stderr.strip().splitlines() == [
        "error: unknown config key 'train.optimizer' ('+' adds keys only under dataset.train_args, "
        "dataset.test_args and launcher.sbatch)"]
    assert not Path("out").exists()


@pytest.mark.parametrize("args", [
    ["seed=-1"], ["dataset.val_size=-5"], ["+model.dpeth=56"], ["dataset.train_subset=100000"],
    ["train.momentum=-5"], ["train.gamma=abc"], ["train.milestones=abc"], ["train.weight_decay=abc"],
    ["train.warmup_iters=abc"], ["model.widths=[]"], ["model.widths=[0,0,0]"], ["train.eval_batch_size=0"],
    ["train.log_every=0"], ["train.threads=-3"], ["train.device=tpu"], ["=3"], ["~dataset"], ["+train.lr=0.5"],
    ["model.depth=999999998"],
])
def test_each_bad_value_is_one_line_exit_2_with_nothing_written(monkeypatch, capsys, args):
    code, stdout, stderr = cli(monkeypatch, capsys, "train", "--out", "out", *TINY, *args)
    assert code == 2 and stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert not Path("out").exists()


@pytest.mark.parametrize("depths, says", [
    ("20,20", "--depths lists 20 more than once"),
    ("20,,56", "--depths has an empty item"),
    ("20,abc", "--depths must be a comma-separated list of ints"),
])
def test_bad_depth_lists_are_refused(monkeypatch, capsys, depths, says):
    code, _, stderr = cli(monkeypatch, capsys, "sweep", "--dry-run", "--depths", depths, *SWEEP_TINY)
    assert code == 2 and says in stderr


def test_a_run_made_by_train_is_reused_by_the_same_sweep(monkeypatch, capsys):
    """train and sweep share one default experiment, so the same overrides mean the same run."""
    assert cli(monkeypatch, capsys, "train", "--out", "out", *TINY)[0] == 0
    before = (Path("out/resnet-8-s0/metrics.csv").read_bytes())
    code, stdout, stderr = cli(monkeypatch, capsys, "sweep", "--archs", "resnet", "--depths", "8",
                               "--out", "out", *SWEEP_TINY)
    assert code == 0, stderr
    assert re.search(r"resnet-8-s0 +done +3/3", stderr) and "1 runs, 0 to train" in stderr
    assert stdout.strip() == "sweep out: 1 done"
    assert Path("out/resnet-8-s0/metrics.csv").read_bytes() == before


def test_out_with_a_non_result_override_continues_the_saved_sweep(monkeypatch, capsys):
    tiny = [o for o in SWEEP_TINY if o != "train.threads=1"]
    assert cli(monkeypatch, capsys, "sweep", "--archs", "resnet", "--depths", "8", "--out", "out",
               *tiny, "train.epochs=2")[0] == 0
    code, stdout, stderr = cli(monkeypatch, capsys, "sweep", "--out", "out", "--depths", "8,14",
                               "train.threads=1")
    assert code == 0, stderr
    saved = yaml.safe_load(Path("out/sweep.yaml").read_text())
    assert saved["overrides"] == [*tiny, "train.epochs=2", "train.threads=1"]  # extended, not replaced
    assert saved["depths"] == [8, 14]
    config = yaml.safe_load(Path("out/resnet-14-s0/config.yaml").read_text())
    assert (config["dataset"]["name"], config["train"]["epochs"], config["train"]["threads"]) == ("synthetic", 2, 1)
    assert len(rows(Path("out/resnet-14-s0"))) == 2


def _kmnist_config_dir(root: Path) -> Path:
    """A user's config folder with a YAML-added dataset (synthetic images under a new name)."""
    src = (shipped_config_dir() / "dataset" / "synthetic.yaml").read_text()
    (root / "dataset").mkdir(parents=True)
    (root / "dataset" / "kmnist_like.yaml").write_text(re.sub(r"^name: synthetic$", "name: kmnist_like", src,
                                                              flags=re.M))
    return root


def test_a_yaml_added_dataset_sweep_continues_with_its_config_dir(tmp_path, monkeypatch, capsys):
    conf = _kmnist_config_dir(tmp_path / "myconf")
    tiny = [o for o in SWEEP_TINY if o != "dataset=synthetic"]
    code, _, stderr = cli(monkeypatch, capsys, "sweep", "--archs", "plain", "--depths", "8", "--out", "out",
                          "--config-dir", conf, "dataset=kmnist_like", *tiny, "train.epochs=1")
    assert code == 0, stderr
    assert yaml.safe_load(Path("out/sweep.yaml").read_text())["config_dirs"] == [str(conf.resolve())]
    # a saved config folder is not trusted on its own (docs/security.md): named again, it is used
    code, _, stderr = cli(monkeypatch, capsys, "sweep", "--out", "out", "--depths", "8,14")
    assert code == 2 and f"give --config-dir {conf.resolve()} again" in stderr, stderr
    code, stdout, stderr = cli(monkeypatch, capsys, "sweep", "--out", "out", "--depths", "8,14", "--config-dir", conf)
    assert code == 0, stderr
    assert json.loads(Path("out/plain-14-s0/summary.json").read_text())["dataset"] == "kmnist_like"


def test_hydra_sweep_syntax_expands_to_the_same_runs_as_the_flags():
    flags, _ = sw.resolve_spec(["plain", "resnet"], [8, 14], [0, 1, 2], SWEEP_TINY, Path("a"))
    hydra, _ = sw.resolve_spec(None, None, None, [*SWEEP_TINY, "model.depth=8,14", "seed=range(0,3)",
                                                  "model.arch=plain,resnet"], Path("a"))
    assert (hydra.archs, hydra.depths, hydra.seeds, hydra.overrides) == \
           (flags.archs, flags.depths, flags.seeds, flags.overrides)
    assert [r.run.path.name for r in sw.plan(hydra, Path("a"))] == [r.run.path.name for r in sw.plan(flags, Path("a"))]
    single, _ = sw.resolve_spec(None, None, None, [*SWEEP_TINY, "model.depth=14"], Path("a"))
    assert single.depths == [14]  # a single value is the axis too, not an override the plan would replace


def test_a_sweep_composes_once_and_each_run_config_is_what_hydra_would_compose(tmp_path):
    """run_config sets arch, depth and seed on a copy of one composition: the same config,
    interpolations that read them included, as composing each run with those overrides."""
    from omegaconf import OmegaConf

    from resexp.settings.compose import load_config
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "by_depth.yaml").write_text(
        "# @package _global_\nname: d${model.depth}_s${seed}\ntrain:\n  warmup_iters: ${model.depth}\n")
    overrides = ["experiment=by_depth", *SWEEP_TINY, "train.lr=0.05"]
    spec = sw.SweepSpec(["plain", "resnet"], [8, 14], [0, 3], overrides, [str(tmp_path)])
    for arch, depth, seed in [("plain", 8, 0), ("resnet", 14, 3), ("plain", 14, 3)]:
        once = spec.run_config(arch, depth, seed)
        each = load_config([*overrides, f"model.arch={arch}", f"model.depth={depth}", f"seed={seed}"],
                           [str(tmp_path)])
        assert OmegaConf.to_yaml(once) == OmegaConf.to_yaml(each)
        assert (once.train.warmup_iters, once.name) == (depth, f"d{depth}_s{seed}")
    with pytest.raises(UserError, match="depth 7 is too small"):
        spec.run_config("resnet", 7, 0)


@pytest.mark.parametrize("overrides, says", [
    (["train.device=cpu,auto"], "train.device cannot take several values"),  # other settings may: test_study.py
    (["model.depth=8,8"], "model.depth lists 8 more than once"),
    (["model.depth=a,b"], "model.depth takes ints"),
])
def test_sweep_syntax_mistakes(overrides, says):
    with pytest.raises(UserError, match=re.escape(says)):
        sw.resolve_spec(None, None, None, [*SWEEP_TINY, *overrides], Path("a"))


def test_an_axis_given_twice_is_an_error():
    with pytest.raises(UserError, match="--depths and model.depth= both given"):
        sw.resolve_spec(None, [8], None, [*SWEEP_TINY, "model.depth=14"], Path("a"))


@pytest.mark.parametrize("text", ["{not yaml: [", "just a string", "- a\n- list", "!!python/object:os.system {}",
                                  "archs: plain"])
def test_a_damaged_sweep_file_is_one_line(tmp_path, text):
    (tmp_path / "sweep.yaml").write_text(text)
    with pytest.raises(UserError, match="sweep.yaml"):
        sw.resolve_spec(None, None, None, [], tmp_path)


# --------------------------------------------------------------------------- estimates
def _finished_runs(folder: Path) -> list[dict]:
    runs = []
    for run_dir in sorted(folder.glob("*-*-s*")):
        s = RunDir(run_dir).read_summary()
        if s and s.get("status") == "done":
            runs.append(s)
    return runs


@pytest.mark.parametrize("folder", ["results/quick_fashion", "results/quick_fashion_3seeds",
                                    "results/mlp_depth_mnist"])
def test_estimates_from_other_runs_are_within_2x_of_the_committed_times(tmp_path, folder):
    """Leave one out: each committed run's time is estimated from the speeds of the other runs
    of its folder (what a dry run of a half-finished sweep does); the sweep's total is within
    2x of the committed total. Single runs are noisier than that in the committed data itself:
    quick_fashion_3seeds' plain-8 took 21 s, 27 s and 67 s for its three seeds."""
    source = REPO / folder
    if not source.is_dir():
        pytest.skip(f"{folder} is not in this checkout")
    guesses, truths = [], []
    for target in _finished_runs(source):
        name = f"{target['arch']}-{target['depth']}-s{target['seed']}"
        others = tmp_path / name
        shutil.copytree(source, others, ignore=shutil.ignore_patterns("checkpoint.pt", "figures"))
        shutil.rmtree(others / name)
        cfg = yaml.safe_load((source / name / "config.yaml").read_text())
        points = estimate.measured_points(sw.survey(others).values())[target["arch"]]
        eval_images = target["test_images"] + (cfg["dataset"].get("val_size") or 0)
        guesses.append(estimate.run_seconds(estimate.fit_line(points), target["depth"], target["iterations"],
                                            target["epochs"], cfg["train"]["batch_size"], eval_images))
        truths.append(target["wall_seconds"])
    assert len(guesses) >= 6
    assert 0.5 <= sum(guesses) / sum(truths) <= 2, (guesses, truths)


def test_a_dry_run_with_no_runs_times_one_architecture_at_its_extreme_depths(tmp_path, monkeypatch):
    """With no run to go by, the first arch is timed at its smallest and largest planned depth
    (bench's loop, on one thread: busy cores must not stretch the timing tenfold), the other
    depths come from the line through those two, and the other arch takes the same line (a
    plain and a residual net of one depth cost the same). The speed itself is
    machine-dependent, so the timings are given here; how close the estimate comes on a
    real machine is a benchmark (docs/benchmarks.md), not a test."""
    import resexp.tools.bench
    timed = []

    def fake_bench(cfg, steps, warmup):
        timed.append((cfg.model.arch, cfg.model.depth, cfg.train.threads, steps, warmup))
        return {"ms_per_step": {"plain": 1.0, "resnet": 2.0}[cfg.model.arch] * (10 + cfg.model.depth)}

    monkeypatch.setattr(resexp.tools.bench, "bench_one", fake_bench)
    spec, out = sw.resolve_spec(None, None, None, ["experiment=quick_fashion"], tmp_path / "qf")
    runs = sw.plan(spec, out)
    basis = sw.estimate_costs(runs, out, time_here=True)
    assert basis.startswith("plain timed here for 3 steps on 1 thread")
    assert basis.endswith("; resnet at the speed of plain of equal depth (the shortcut adds no measurable cost)")
    assert sorted(timed) == [("plain", depth, 1, 3, 1) for depth in (8, 56)]  # not 20, and not resnet
    for r in runs:  # 2,500 steps, 10 epochs of 2,000 test images at a third of a step per image
        step = 1.0 * (10 + r.depth) / 1000
        assert r.estimated and r.cost_s == pytest.approx(2500 * step + 10 * 2000 * step / 32 / 3)


def test_a_resumed_sweep_estimates_an_arch_without_runs_from_the_others(tmp_path):
    """A sweep stopped after plain-8 finished, rerun without --dry-run (nothing timed):
    plain-20's speed comes from plain-8's run, and resnet, with no run of its own, takes
    plain's line (a plain and a residual net of one depth cost the same), so every run has
    a number and the plan a total. Once resnet's placeholder line (one second per layer per
    step) was printed as 13m52s of a sweep that took 41 s; later it was '?' with no total."""
    from resexp.train.loop import fit

    spec, out = sw.resolve_spec(["plain", "resnet"], [8, 20], None, SWEEP_TINY, tmp_path / "sweep")
    fit(spec.run_config("plain", 8), out)
    runs = sw.plan(spec, out)
    plan = sw.format_plan(runs, sw.estimate_costs(runs, out))
    est = {line.split()[0]: line.split()[-1] for line in plan.splitlines()[1:5]}
    assert [r.estimated for r in runs] == [False, True, True, True]  # plain-8 is done
    by_name = {r.name: r for r in runs}
    assert by_name["resnet-8-s0"].cost_s < by_name["resnet-20-s0"].cost_s == by_name["plain-20-s0"].cost_s
    assert 0 < runs[1].cost_s < 60 and est["plain-20-s0"] == sw._hms(runs[1].cost_s) == est["resnet-20-s0"]
    assert f"about {sw._hms(sum(r.cost_s for r in runs[1:]))} (from speeds of the runs in" in plan
    assert "not estimated" not in plan and "resnet at the speed of plain of equal depth" in plan


def test_fit_line_recovers_a_line_and_falls_back_sensibly():
    line = estimate.fit_line([(10, 0.012), (30, 0.032), (100, 0.102)])
    assert line.a == pytest.approx(0.002) and line.b == pytest.approx(0.001)
    assert estimate.fit_line([(20, 0.04)]).at(40) == pytest.approx(0.08)  # one depth: proportional
    assert estimate.fit_line([(20, 0.05), (56, 0.04)]).at(110) == pytest.approx(0.045)  # no negative slope


# --------------------------------------------------------------------------- reproducibility
def test_summary_records_what_the_numbers_depend_on(tmp_path, tiny_cfg):
    from resexp.train.loop import fit
    summary = fit(tiny_cfg("train.deterministic=true"), tmp_path / "out")
    for key in ("cpu_model", "cpu_bf16", "precision", "torch_threads", "cudnn_benchmark",
                "cudnn_deterministic", "deterministic_algorithms", "libraries", "python_version"):
        assert key in summary, key
    assert summary["torch_threads"] == 1 and summary["deterministic_algorithms"] is True
    assert summary["train_step"] == "eager"  # CUDA graphs are for CUDA only
    assert summary["libraries"]["torch"] and summary["libraries"]["hydra-core"]
    written = json.loads((tmp_path / "out" / "resnet-8-s0" / "summary.json").read_text())
    assert written["cpu_model"] == summary["cpu_model"]


