"""docs/notebook.ipynb, run headless as a reader runs it (nbclient, a fresh Jupyter kernel):
what each cell shows, the live progress display and the error's one line included."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")  # the dev extra's; ipykernel provides the kernel
nbformat = pytest.importorskip("nbformat")

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "notebook.ipynb"


def text(outputs, kind: str = "text/plain") -> str:
    """Every output's ``kind`` (or stream text), joined."""
    return "\n".join(o.get("data", {}).get(kind, "") or o.get("text", "") for o in outputs)


@pytest.mark.slow  # a kernel of its own: about 15 s on 2 idle cores
def test_the_notebook_shows_what_it_says(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)  # kept without outputs
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    cells = {c.metadata["tags"][0]: c.outputs for c in code}
    everything = [o for outputs in cells.values() for o in outputs]
    assert [o for o in everything if o.get("name") == "stderr"] == []  # no warning (rich's "install ipywidgets")

    plan = cells["dry-run"]
    assert re.search(r", dry run: 2 runs \(2 new\), 2 to train, about \d+s; exit code 0>$", text(plan))
    assert text(plan, "text/html").count("<td>new</td>") == 2

    # The sweep: one live display, left showing the whole bar, then the table of how each run ended.
    sweep = cells["sweep"]
    live = [o for o in sweep if o.output_type == "display_data"]
    assert len(live) == 1 and re.fullmatch(r"sweep: run 2 of 2 \(resnet-8-s0\) ━+ 0:00:00", text(live))
    assert [o.output_type for o in sweep] == ["display_data", "execute_result"]  # no printed lines
    assert text(sweep).endswith("tiny: 2 done; exit code 0>")
    assert text(sweep, "text/html").count("<td>done</td>") == 2

    runs = text(cells["runs"], "text/html")
    assert "<th>train.lr</th>" in runs and "<th>train.batch_size</th>" in runs and runs.count("<td>done</td>") == 2

    figures = cells["figures"]
    assert text(figures).startswith("<Figures depth, curves: 4 files in ")
    assert text(figures, "text/html").count("<img src='data:image/png;base64,") == 2

    resumed = text(cells["resume"])
    assert re.search(r"tiny: 2 done\n", resumed)
    assert re.search(r"plain-8-s0\s+3\nresnet-8-s0\s+3\n", resumed)  # each run one epoch longer

    [error] = cells["error"]
    assert (error.output_type, error.ename) == ("error", "UserError")
    assert error.traceback == ["UserError: --depths lists 8 more than once"]  # one line, no traceback

    report = text(cells["report"], "text/markdown")
    assert report.startswith("# ") and "Runs: 2 (2 done)" in report
