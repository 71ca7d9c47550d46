"""The Python API (resexp/api.py, docs/python-api.md): list and string forms, dict overrides,
the lazy names on `resexp`, callable subpackages, UserErrors, and the doc's worked example."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.cli import SWEEP_TINY, TINY

import resexp
from resexp import api
from resexp.errors import UserError
from resexp.sweep import plan as sw

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"

# SWEEP_TINY as a dict, the form a notebook writes.
TINY_DICT = {"dataset": "synthetic", "dataset.train_args.size": 256, "dataset.test_args.size": 128,
             "train.batch_size": 64, "train.iterations": None, "train.epochs": 3, "train.milestones": [2],
             "train.milestone_unit": "epochs", "train.log_every": 2, "train.device": "cpu", "train.threads": 1}


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
