"""The Python API (resexp/api.py, docs/python-api.md): list and string forms, dict overrides,
the lazy names on `resexp`, callable subpackages, help and reprs, what a notebook shows,
UserErrors, and the doc's worked example."""

from __future__ import annotations

import inspect
import json
import pydoc
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from helpers.cli import SWEEP_TINY, TINY
from matplotlib.figure import Figure

import resexp
from resexp import api
from resexp.errors import UserError
from resexp.sweep import plan as sw

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"

# SWEEP_TINY as a dict, the form a notebook writes.
TINY_DICT = {"dataset": "synthetic", "dataset.train_args.size": 256, "dataset.test_args.size": 128,
             "train.batch_size": 64, "train.iterations": None, "train.epochs": 3, "train.milestones": [],
             "train.milestone_unit": "epochs", "train.log_every": 2, "train.device": "cpu", "train.threads": 1,
             "train.diagnostics": "off"}


FORMS = [("plain,resnet", "8", "0,1"), (" plain , resnet ", 8, " 0, 1"), (["plain", "resnet"], [8], [0, 1]),
         (("plain", "resnet"), (8,), range(2))]


def test_lists_and_comma_strings_plan_the_same_runs():
    specs = [sw.resolve_spec(archs, depths, seeds, SWEEP_TINY, Path("a"))[0] for archs, depths, seeds in FORMS]
    assert (specs[0].archs, specs[0].depths, specs[0].seeds) == (["plain", "resnet"], [8], [0, 1])
    assert all(spec == specs[0] for spec in specs)
    assert [r.name for r in sw.plan(specs[0], Path("a"))] == ["plain-8-s0", "plain-8-s1", "resnet-8-s0", "resnet-8-s1"]


def test_a_single_depth_is_a_list_of_one():
    assert sw.parse_list(20, int, "depths") == [20]
    assert sw.parse_list("plain", str, "archs") == ["plain"]


def test_dict_overrides_are_the_command_lines():
    assert api.as_overrides(TINY_DICT) == SWEEP_TINY
    assert api.as_overrides({"train.eval_train": True, "model.widths": [16, 32], "x": {"a": 1, "b": None}}) == \
        ["train.eval_train=true", "model.widths=[16,32]", "x={a:1,b:null}"]
    assert api.as_overrides("seed=3") == ["seed=3"]
    assert api.as_overrides(None) == []
    as_dict, _ = sw.resolve_spec(["plain"], [8], None, api.as_overrides(TINY_DICT), Path("a"))
    as_list, _ = sw.resolve_spec(["plain"], [8], None, SWEEP_TINY, Path("a"))
    assert as_dict == as_list


@pytest.mark.parametrize("call, message", [
    (lambda d: resexp.sweep(archs=["plain", 3], overrides=SWEEP_TINY, out=d), "archs must be a list of strs"),
    (lambda d: resexp.sweep(depths=[8, True], overrides=SWEEP_TINY, out=d), "depths must be a list of ints"),
    (lambda d: resexp.sweep(depths="8,8", overrides=SWEEP_TINY, out=d), "--depths lists 8 more than once"),
    (lambda d: resexp.sweep(seeds=[], overrides=SWEEP_TINY, out=d), "seeds is empty"),
    (lambda d: resexp.sweep(depths=[8], overrides=SWEEP_TINY, out=d, jobs=0), "jobs must be a whole number"),
    (lambda d: resexp.sweep(depths=[8], overrides=[*SWEEP_TINY, 3], out=d), "overrides takes 'key=value'"),
    (lambda d: resexp.sweep(archs="plain,nonet", depths=[8], overrides=SWEEP_TINY, out=d), "nonet"),
    (lambda d: resexp.train([*TINY, "launcher=slurm"], out=d), "launchers are for resexp sweep"),
    (lambda d: resexp.train({"train.epochs": -1}, out=d), "train.epochs"),
    (lambda d: resexp.load_runs(d / "nowhere"), "results directory not found"),
    (lambda d: resexp.plot(d), "no runs in"),
    (lambda d: resexp.report(d), "no runs in"),
])
def test_mistakes_are_user_errors(tmp_path, call, message):
    with pytest.raises(UserError, match=re.escape(message)):
        call(tmp_path)
    assert not (tmp_path / "sweep.yaml").exists()


def test_train_returns_its_outcome_quietly(tmp_path, capfd):
    outcome = resexp.train(TINY, out=tmp_path)
    assert capfd.readouterr().err == ""
    assert outcome.status == "done"
    assert outcome.run_dir == tmp_path / "resnet-8-s0"
    assert json.loads((outcome.run_dir / "summary.json").read_text())["epochs"] == 3
    assert outcome.summary_line().startswith(f"done: {tmp_path / 'resnet-8-s0'} train err ")
    assert repr(outcome) == f"<TrainOutcome {outcome.summary_line()}>"  # not the whole summary.json


@pytest.mark.parametrize("name", resexp.API)
def test_help_shows_each_functions_signature_and_arguments(name):
    """help(resexp.NAME) and Jupyter's `?` show the function, its signature and a word on every
    argument, for the callable packages resexp.sweep and resexp.train too."""
    function = getattr(resexp, name)
    signature = inspect.signature(function)
    assert signature == inspect.signature(getattr(api, name))
    shown = pydoc.render_doc(function, renderer=pydoc.plaintext)
    assert f"{name}{signature}" in shown
    described = inspect.getdoc(function)
    assert [p for p in signature.parameters if p not in described] == []


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A dry run, then the tiny sweep it planned (lr and batch size set): (dry run, sweep, out)."""
    out = tmp_path_factory.mktemp("api") / "tiny"
    overrides = {**TINY_DICT, "train.lr": 0.05, "train.batch_size": 32, "train.milestones": [2],
                 "train.diagnostics": "off"}
    dry = resexp.sweep(archs="plain,resnet", depths=[8], seeds="0", overrides=overrides, out=out, dry_run=True)
    return dry, resexp.sweep(archs="plain,resnet", depths=[8], seeds="0", overrides=overrides, out=out), out


def test_a_dry_run_returns_its_plan(swept):
    dry, _, out = swept
    assert dry.statuses is None  # nothing trained
    plan = dry.plan
    assert list(plan.columns) == ["run", "arch", "depth", "seed", "state", "epochs_done", "epochs_planned",
                                  "to_train", "est_seconds"]
    assert plan["run"].tolist() == ["plain-8-s0", "resnet-8-s0"]
    assert plan["state"].tolist() == ["new", "new"] and plan["to_train"].all()
    assert plan["epochs_done"].tolist() == [0, 0] and plan["epochs_planned"].tolist() == [3, 3]
    assert (plan["est_seconds"] > 0).all()  # no runs yet: a few steps were timed here
    assert re.fullmatch(rf"sweep {re.escape(str(out))}, dry run: 2 runs \(2 new\), 2 to train, about \d+s",
                        dry.summary_line()), dry.summary_line()


def test_outcomes_have_short_reprs_and_a_table(swept):
    dry, outcome, out = swept
    assert repr(outcome) == f"<SweepOutcome sweep {out}: 2 done; exit code 0>"  # not every run's config
    assert repr(dry).startswith(f"<SweepOutcome sweep {out}, dry run: 2 runs") and "\n" not in repr(dry)
    shown = outcome._repr_html_()
    assert shown.count("</tr>") == 3 and shown.count("<td>done</td>") == 2  # header + a row per run
    assert "<td>plain-8-s0</td>" in shown and "<td>resnet-8-s0</td>" in shown
    report = resexp.report(out)
    assert repr(report) == f"<Report: 2 rows (arch x depth) in {out}>"
    assert report._repr_markdown_() == (out / "report.md").read_text()


def test_plot_returns_the_figures_it_wrote(swept):
    out = swept[2]
    figures = resexp.plot(out, formats="png,svg")
    assert set(figures) == {"depth", "curves"}
    assert all(isinstance(figure, Figure) for figure in figures.values())
    assert {p.name for p in figures.paths} == {"depth.png", "depth.svg", "depth.csv", "curves.png", "curves.svg",
                                               "curves.csv"}
    assert all(p.is_file() for p in figures.paths)
    assert figures._repr_html_().count("<img src='data:image/png;base64,") == 2  # a notebook shows both
    assert repr(figures) == f"<Figures depth, curves: 6 files in {out / 'figures'}>"


def test_runs_and_epochs_carry_their_settings(swept):
    out = swept[2]
    runs, metrics = resexp.load_runs(out), resexp.load_metrics(out)
    for table in (runs, metrics):
        by_run = table.groupby("run")
        assert set(by_run["train.lr"].unique().explode()) == {0.05}
        assert set(by_run["train.batch_size"].unique().explode()) == {32}
        assert set(table["train.epochs"]) == {3} and set(table["train.milestones"]) == {(2,)}
        assert set(table["train.weight_decay"]) == {1e-4} and table["train.iterations"].isna().all()
        shortcut = table.groupby("arch")["model.shortcut"].first()  # resnet's option; plain takes none
        assert shortcut["resnet"] == "A" and shortcut.isna()["plain"]
        assert set(table["model.widths"]) == {(16, 32, 64)}
    assert metrics.groupby("run")["epoch"].max().tolist() == [3, 3]
    assert resexp.load_diagnostics(out, "responses") is None  # train.diagnostics=off
    with pytest.raises(UserError, match="kind must be one of responses, gradients, identity"):
        resexp.load_diagnostics(out, "response")


class FakeDisplay:
    """IPython.display.display with display_id=True: each text shown or updated in place."""

    def __init__(self):
        self.outputs = []

    def __call__(self, data, raw, display_id):
        assert raw and display_id is True
        self.outputs.append([data["text/plain"]])
        return self

    def update(self, data, raw):
        self.outputs[-1].append(data["text/plain"])


def test_a_notebook_shows_one_live_display_and_nothing_else(tmp_path, monkeypatch, capfd):
    """A sweep in a notebook cell, progress left at its default: one display updated in place,
    ending on the sweep's whole bar; no line printed, no warning (rich's own Jupyter display
    would need ipywidgets, and warn where they are missing)."""
    shown = FakeDisplay()
    monkeypatch.setattr(api, "in_notebook", lambda: True)
    monkeypatch.setattr("IPython.display.display", shown)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outcome = resexp.sweep(archs="plain,resnet", depths=[8], seeds="0", overrides=SWEEP_TINY, out=tmp_path)
    assert outcome.statuses == {"plain-8-s0": "done", "resnet-8-s0": "done"}
    assert capfd.readouterr() == ("", "")
    assert len(shown.outputs) == 1
    assert re.fullmatch(r"sweep: run 2 of 2 \(resnet-8-s0\) ━+ 0:00:00", shown.outputs[0][-1])


def test_in_notebook_asks_ipython_for_a_kernel(monkeypatch):
    class Shell:
        kernel = object()

    class IPython:
        shell = None

        @classmethod
        def get_ipython(cls):
            return cls.shell

    monkeypatch.setitem(sys.modules, "IPython", IPython)
    assert api.in_notebook() is False  # imported, no shell: a script that imported IPython
    IPython.shell = type("TerminalShell", (), {})()
    assert api.in_notebook() is False  # a terminal IPython
    IPython.shell = Shell()
    assert api.in_notebook() is True


# One fresh interpreter: what `import resexp` loads, dir(resexp), and resexp.sweep / resexp.train
# called before and after their subpackages' modules are imported.
PROBE = """
import json, sys, types
import resexp
from resexp.errors import UserError
seen = {"torch": "torch" in sys.modules, "dir": dir(resexp)}
def error(call):
    try:
        call()
    except UserError as err:
        return str(err)
seen["before"] = error(lambda: resexp.sweep(depths="8,8"))
import resexp.sweep.plan, resexp.train.loop
seen["package"] = isinstance(resexp.sweep, types.ModuleType) and isinstance(resexp.train, types.ModuleType)
seen["after"] = error(lambda: resexp.sweep(depths="8,8"))
seen["train"] = error(lambda: resexp.train(["launcher=slurm"]))
from resexp import sweep
seen["same"] = sweep is resexp.sweep is sys.modules["resexp.sweep"]
print(json.dumps(seen))
"""


def test_import_is_light_and_the_subpackages_are_the_functions():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["torch"] is False
    assert {"sweep", "train", "load_runs", "plot", "report", "__version__"} <= set(seen["dir"])
    assert seen["before"] == seen["after"] == "--depths lists 8 more than once"
    assert seen["package"] is True and seen["same"] is True
    assert seen["train"] == "launcher=slurm: launchers are for resexp sweep; train runs here, in this process"


def test_the_installed_package_wins_over_a_clone_folder_in_the_current_one(tmp_path):
    """From the folder holding a clone named resexp (its results/ and no __init__.py), the
    import still finds the real package, not the clone folder as a namespace package
    (scripts/install.sh's editable_mode=compat; docs/python-api.md has the measurement)."""
    (tmp_path / "resexp" / "results").mkdir(parents=True)
    probe = "import resexp, resexp.analysis; print(resexp.__file__)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve() == Path(resexp.__file__).resolve()


def doc_example() -> str:
    """The python code blocks under docs/python-api.md's "A worked example"."""
    section = DOC.read_text().split("## A worked example", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks
    return "\n".join(blocks)


def test_the_docs_worked_example_runs(tmp_path, capfd):  # conftest runs it in tmp_path
    exec(compile(doc_example(), str(DOC), "exec"), {})
    out = capfd.readouterr().out
    assert "sweep demo: 2 done" in out
    assert "plain-8-s0" in out and "resnet-8-s0" in out
    # Like `resexp sweep`, the call saved the sweep: `resexp sweep --out demo` alone continues it.
    saved = yaml.safe_load((tmp_path / "demo" / "sweep.yaml").read_text())
    assert (saved["archs"], saved["depths"], saved["seeds"]) == (["plain", "resnet"], [8], [0])
    assert "train.epochs=2" in saved["overrides"] and "train.iterations=null" in saved["overrides"]
    assert {p.name for p in (tmp_path / "demo" / "figures").iterdir()} == \
        {"depth.png", "depth.csv", "curves.png", "curves.csv"}
    assert (tmp_path / "demo" / "report.md").read_text().startswith("#")
    again = resexp.sweep(out="demo")  # the saved sweep: nothing left to train
    assert again.statuses == {"plain-8-s0": "done", "resnet-8-s0": "done"} and again.exit_code == 0
