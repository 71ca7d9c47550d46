"""Docs and docstrings tell the truth about paths: every `*.py` file they name exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A file name or path ending in .py, as prose names one: resexp/train/loop.py, sweep/task.py, data.py.
NAMED = re.compile(r"(?<![\w./-])((?:[\w-]+/)*[\w-]+\.py)\b")
# Files that name .py files of other projects, or of a user's own folder, on purpose.
NOT_OURS = {"setup.py", "conftest.py", "mydata.py", "__main__.py"}


def _texts() -> list[Path]:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    code = [*sorted((ROOT / "resexp").rglob("*.py")), *sorted((ROOT / "scripts").glob("*"))]
    return [p for p in docs + code if p.is_file()]


def _exists(name: str, here: Path) -> bool:
    """A path from the repository root, from resexp/, from the naming file's folder, or (a
    bare file name) any file of that name in the repository."""
    if (ROOT / name).is_file() or (ROOT / "resexp" / name).is_file() or (here.parent / name).is_file():
        return True
    if "/" not in name:
        return any(next((ROOT / top).rglob(name), None) for top in ("resexp", "scripts", "tests"))
    return False


def stale_names(paths: list[Path]) -> list[str]:
    stale = []
    for path in paths:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for name in NAMED.findall(line):
                if Path(name).name not in NOT_OURS and not _exists(name, path):
                    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
                    stale.append(f"{shown}:{number}: {name}")
    return stale


def test_every_python_file_named_in_docs_and_code_exists():
    assert stale_names(_texts()) == []


def test_a_stale_name_is_found(tmp_path):
    """The check itself: a doc naming a file that was moved is reported with its line."""
    doc = tmp_path / "probe.md"
    doc.write_text("fine: resexp/train/loop.py, sweep/task.py and load.py\nmoved: resexp/monitor.py, data.py\n")
    assert stale_names([doc]) == ["probe.md:2: resexp/monitor.py", "probe.md:2: data.py"]
