"""Staging: the original files of ``dataset.source`` put where the dataset class looks.

torchvision cannot download from a local mirror, so archives are extracted, ``.gz``
files decompressed and anything else copied into ``<root>/<stage_dir>``. Staging
writes only there, and carefully, whoever set the paths:

- ``stage_dir`` is a relative path that stays inside the data root;
- no folder on the way is a link, and no file is written through one (safeio);
- a file that already exists is replaced only if staging put it there before (its
  name is in ``<root>/.resexp-staged``): staging fills a data folder, it never
  overwrites someone's files (``root: ~`` with a ``.bashrc`` in the source).
"""

from __future__ import annotations

import gzip
import os
import tarfile
import zlib
from pathlib import Path, PurePath

from resexp.errors import UserError
from resexp.run import safeio

MANIFEST = ".resexp-staged"


def stage_dest(root: Path, stage_dir: str) -> Path:
    """``<root>/<stage_dir>``, created as real folders; UserError if stage_dir leaves root."""
    parts = PurePath(str(stage_dir)).parts
    if PurePath(str(stage_dir)).is_absolute() or ".." in parts:
        raise UserError(f"dataset.stage_dir={stage_dir!r} must be a folder inside the data root "
                        f"(a relative path without ..)")
    dest = Path(root)
    dest.mkdir(parents=True, exist_ok=True)  # the root is the user's to choose (it may be a link)
    for part in (p for p in parts if p != "."):
        dest = safeio.real_dir(dest / part)
    return dest


def stage_source(source: Path, root: Path, stage_dir: str) -> None:
    """Put the original files of ``source`` where the dataset class looks for them.
    UserError naming the file if one cannot be unpacked (truncated, not an archive) or
    would replace a file staging did not make."""
    root = Path(root)
    stager = _Stager(root, stage_dest(root, stage_dir))
    for item in sorted(Path(source).iterdir()):
        try:
            stager.stage(item, stager.dest)
        except (gzip.BadGzipFile, tarfile.TarError, EOFError, zlib.error) as err:
            reason = str(err).splitlines()[0].rstrip(":") if str(err) else "cut short"
            raise UserError(f"cannot unpack {item} ({type(err).__name__}: {reason}); "
                            f"replace it with an intact copy") from err


class _Stager:
    def __init__(self, root: Path, dest: Path):
        self.root, self.dest = root, dest
        try:
            self.staged = set((root / MANIFEST).read_text().splitlines())
        except (FileNotFoundError, UnicodeDecodeError):
            self.staged = set()

    def _claim(self, target: Path) -> None:
        """Allow writing ``target``: new, or staged before. Recorded before it is written."""
        name = os.path.relpath(target, self.root)
        if os.path.lexists(target) and name not in self.staged:
            raise UserError(f"staging would replace {target}, which it did not make; "
                            f"choose an empty dataset.root (or stage_dir) for this dataset")
        if name not in self.staged:
            safeio.append(self.root / MANIFEST, (name + "\n").encode())
            self.staged.add(name)

    def stage(self, item: Path, dest: Path) -> None:
        if item.is_symlink():
            return  # a source folder holds files; a link could lead anywhere
        if item.name.endswith((".tar.gz", ".tgz", ".tar")):
            self._extract(item, dest)
        elif item.name.endswith(".gz"):
            target = dest / item.name[: -len(".gz")]
            self._claim(target)
            with gzip.open(item, "rb") as f:  # whole or not at all: a cut-short source leaves no half file
                safeio.atomic_copy(target, f)
        elif item.is_dir():
            sub = safeio.real_dir(dest / item.name)
            for child in sorted(item.iterdir()):
                self.stage(child, sub)
        else:
            self._claim(dest / item.name)
            with open(item, "rb") as f:
                safeio.atomic_copy(dest / item.name, f)

    def _extract(self, archive: Path, dest: Path) -> None:
        def check(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
            member = tarfile.data_filter(member, path)  # no absolute paths, no way out of dest
            if not member.isdir():
                self._claim(Path(path) / member.name)
            return member

        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter=check)
