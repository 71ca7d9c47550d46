"""Staging: the original files of ``dataset.source`` put where the dataset class looks.

torchvision cannot download from a local mirror, so archives are extracted, ``.gz``
files decompressed and anything else copied into ``<root>/<stage_dir>``. Staging
writes only there, and carefully, whoever set the paths:

- ``stage_dir`` is a relative path that stays inside the data root;
- no folder on the way is a link, and no file is written through one (safeio);
- a file that already exists is replaced only if staging put it there before (its
  name is in ``<root>/.resexp-staged``): staging fills a data folder, it never
  overwrites someone's files (``root: ~`` with a ``.bashrc`` in the source);
- a source that does not hold the files the class reads is refused before anything is
  written (source_problem), naming what it holds instead: another dataset's files
  staged under this one's folder would only end in torchvision's "Dataset not found".
"""

from __future__ import annotations

import gzip
import os
import tarfile
import zlib
from pathlib import Path, PurePath

from resexp.data import cifar_binary
from resexp.errors import UserError
from resexp.run import safeio

MANIFEST = ".resexp-staged"

# torchvision's classes whose files a source may hold by mistake (source_problem names them).
KNOWN = ("MNIST", "FashionMNIST", "KMNIST", "CIFAR10", "CIFAR100")


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


# --------------------------------------------------------------------------- is it the right folder?
def _unzipped(name: str) -> str:
    """A file's name once staged: a .gz file is decompressed, a .tar.gz extracted in place."""
    return name[: -len(".gz")] if name.endswith(".gz") and not name.endswith(".tar.gz") else name


def files_read(cls) -> list[set[str]] | None:
    """The original files ``cls`` reads, as sets of which any one suffices: torchvision's MNIST
    family, its four files; CIFAR, the archive or its extracted folder. None where the class
    does not say (a class of your own: the source is staged as it is)."""
    own = vars(cls)
    if isinstance(own.get("resources"), list):
        return [{PurePath(name).name for name, _ in own["resources"]}]
    if isinstance(own.get("filename"), str) and isinstance(own.get("base_folder"), str):
        return [{own["filename"]}, {own["base_folder"]}]
    return None


def source_problem(source: Path, cls) -> str | None:
    """Why ``source`` (a folder) cannot be staged for ``cls``, in words that follow its path:
    empty, lacking some of the files, or holding another dataset's; None where it holds
    what the class reads (or the class does not say what that is). A file counts as given
    compressed (.gz) or not."""
    wanted = files_read(cls)
    if wanted is None:
        return None
    held = {_unzipped(p.name) for p in source.iterdir()}
    lacking = [{name for name in files if _unzipped(name) not in held} for files in wanted]
    if not all(lacking):
        return None
    nearest = min(lacking, key=len)
    if len(nearest) < len(wanted[lacking.index(nearest)]):
        return f"lacks {', '.join(sorted(nearest))}"
    reads = " or ".join(", ".join(sorted(files)) for files in wanted)
    if not held:
        return f"is empty ({cls.__name__} reads {reads})"
    other = _whose(source, held)
    return f"holds {other}, not the files {cls.__name__} reads ({reads})" if other else \
        f"holds none of the files {cls.__name__} reads ({reads})"


def _whose(source: Path, held: set[str]) -> str | None:
    """Which known dataset's files ``held`` (names as staged) are, e.g. "the binary version
    of CIFAR10 (cifar-10-batches-bin)"."""
    import torchvision.datasets  # only where a folder is wrong: most datasets need none of it

    for target in cifar_binary.VERSIONS:
        found = cifar_binary.find(target, source)
        if found is not None:
            return f"the binary version of {target.rsplit('.', 1)[1]} ({found.path.name})"
    owners, files = [], set()
    for name in KNOWN:
        for alternative in files_read(getattr(torchvision.datasets, name)) or []:
            if {_unzipped(f) for f in alternative} & held:
                owners.append(name)
                files |= {f for f in alternative if _unzipped(f) in held}
    if not owners:
        return None
    return f"the files of torchvision's {'/'.join(owners)} ({', '.join(sorted(files))})"
