"""The one owner of a run folder: its files, their readers and writers, its lock, its state().

A run folder ``<out>/<arch>-<depth>-s<seed>/`` holds config.yaml, metrics.csv,
summary.json, checkpoint.pt, the diagnostics CSVs and, while a trainer holds it, run.lock.
Every write to them goes through this class (TensorBoard's event files, written by
TensorBoard's own writer, are the one exception), and each file has one strict reader
(resexp.run.files; the diagnostics CSVs are read by resexp.analysis.results), and ``RunDir.state()`` is
the one place that decides what a run is (new, partial, running, done, damaged, ...):
train, sweep, results and status all ask it.

Every write is either an append of one whole line or an atomic replace, so a run
killed at any moment leaves files that parse, and the rows it wrote stay. Both go
through resexp.run.safeio, so a link planted in a received folder is never written
through. A write the disk refuses (full, read-only) is CannotWrite: one line for the
user, and the temporary file it was writing is removed.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import yaml
from omegaconf import OmegaConf

from resexp.errors import UserError
from resexp.models.registry import list_models
from resexp.run.files import (
    COLUMNS,
    DIAGNOSTIC_FILES,
    VAL_COLUMNS,
    WANDB_ID_FILE,
    DamagedFile,
    Log,
    parse_command,
    parse_config,
    parse_log,
    parse_summary,
    parse_wandb_id,
    read_bytes,
)
from resexp.run.safeio import append, atomic_write, overwrite, real_dir
from resexp.run.names import RUN_NAME, parse_run_name, run_name
from resexp.run.lock import DEFAULT_STALE_AFTER, LOCK_FILE, Lock, Owner, RunBusy, acquire, read_owner
from resexp.run.state import FINISHED, Status
from resexp.settings.schema import default_of, non_result_keys

__all__ = ["COLUMNS", "VAL_COLUMNS", "FINISHED", "DEFAULT_STALE_AFTER", "CannotWrite", "DamagedFile", "Lock", "Log",
           "NOT_RESULT_KEYS", "Origin", "Owner", "RUN_NAME", "RunBusy", "RunDir", "RunState", "Status", "run_name",
           "parse_run_name"]

# Keys that do not change what a run computes (``result=False`` in resexp/settings/schema.py):
# a run may resume under new values.
NOT_RESULT_KEYS = non_result_keys()

class CannotWrite(UserError):
    """The disk refused a write (full, over quota, read-only, no permission)."""

    def __init__(self, message: str, no_space: bool = False, file: str = ""):
        super().__init__(message)
        self.no_space, self.file = no_space, file

    def __reduce__(self):  # keeps every field when a worker process hands it back
        return CannotWrite, (str(self), self.no_space, self.file)

    def record(self) -> str:
        """How summary.json's error names it: short, the cause first."""
        return f"no space left on device (writing {self.file})" if self.no_space else str(self)


@contextlib.contextmanager
def writing(path: Path):
    """Turn an OSError while writing ``path`` into CannotWrite (one line for the user)."""
    try:
        yield
    except OSError as err:
        no_space = err.errno in (errno.ENOSPC, errno.EDQUOT)
        hint = "; free some space and run the same command again to resume" if no_space else ""
        raise CannotWrite(f"cannot write to {path}: {err.strerror or err}{hint}", no_space, Path(path).name) from err


@dataclass(frozen=True)
class Origin:
    """How a run was asked for, as its command.yaml records it: the overrides and config
    folders that compose its config.yaml (``resexp train`` with them makes the same config),
    the command line and the folder it ran in, and the name of the run's folder (None:
    <arch>-<depth>-s<seed>). Made where the command runs: a sweep's worker or SLURM job
    gets it from the sweep, whose command line it records."""
    overrides: tuple[str, ...] = ()
    config_dirs: tuple[str, ...] = ()
    argv: tuple[str, ...] = field(default_factory=lambda: tuple(sys.argv))
    cwd: str = field(default_factory=os.getcwd)
    name: str | None = None

    def record(self) -> dict:
        return {"argv": list(self.argv), "overrides": list(self.overrides), "config_dirs": list(self.config_dirs),
                "cwd": self.cwd}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_commit() -> str | None:
    """The commit of the resexp source in use (with '+dirty' for local edits), if it is a checkout."""
    src = Path(__file__).resolve().parent
    try:
        run = lambda *a: subprocess.run(["git", "-C", str(src), *a], capture_output=True,  # noqa: E731
                                        text=True, timeout=5, check=True).stdout.strip()
        commit = run("rev-parse", "HEAD")
        return commit + ("+dirty" if run("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def result_settings(config: dict, prefix: str = "") -> dict:
    """{dotted key: value} of the settings that change what a run computes."""
    out = {}
    for key, value in config.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(result_settings(value, full + "."))
        elif not any(full == k or full.startswith(k + ".") for k in NOT_RESULT_KEYS):
            out[full] = value
    return out


@dataclass
class RunState:
    """What a run folder holds, as state() reads it.

    status: a folder state of resexp.run.state.Status (new, partial, running, stale, done,
    diverged, failed, damaged).
    ``running``: a live process holds the run's lock (``owner`` names it); ``stale``:
    a lock silent for longer than its stale_after, which the next trainer takes over (a
    lock whose process has ended on this host leaves the run partial, new or failed);
    ``damaged``: a file is unreadable or contradicts the others (``problem`` says
    which and why; ``repair`` says what the next train or sweep does about it, None
    when it needs the user). ``epochs`` counts the complete rows of metrics.csv and
    ``last`` is the last of them: the log is the record, and summary.json may lag it
    by one epoch (a kill between the two writes).
    """
    status: Status
    rows: list[dict] = field(default_factory=list)  # metrics.csv's complete rows ([] if damaged)
    summary: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    owner: Owner | None = None
    problem: str | None = None
    repair: str | None = None
    log: Log | None = None  # metrics.csv as read (None if unreadable), for the trainer's resume
    unreadable: dict[str, str] = field(default_factory=dict)  # {file: why} for files that do not parse

    @property
    def epochs(self) -> int:
        return len(self.rows)

    @property
    def last(self) -> dict | None:
        return self.rows[-1] if self.rows else None

    @property
    def finished(self) -> bool:
        return self.status.finished

    @property
    def trainable(self) -> bool:
        """Whether train or sweep should (try to) train it: unfinished, and not damaged beyond
        what the trainer repairs. A running run is tried too: its lock decides."""
        return not self.finished and (self.status != Status.DAMAGED or self.repair is not None)

    @property
    def advice(self) -> str:
        """What happens to a damaged run, or what the user can do."""
        if self.owner is not None and self.owner.damage:
            return f"remove {self.owner.path} if no trainer is running"
        return self.repair or "restore the file, or move the run folder aside to train the run again"


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.metrics = self.path / "metrics.csv"
        self.summary_file = self.path / "summary.json"
        self.checkpoint = self.path / "checkpoint.pt"
        self.lock_file = self.path / LOCK_FILE
        self.wandb_id_file = self.path / WANDB_ID_FILE
        self.command_file = self.path / "command.yaml"

    @property
    def name(self) -> str:
        return self.path.name

    def is_run(self, state: RunState) -> bool:
        """A run folder: its config.yaml names a registered architecture, or (a damaged run,
        whose config.yaml is missing, unreadable or names something else) its folder name
        does and it holds a run file. A folder merely named like a run is not one.
        ``state``: this folder's state()."""
        model = state.config.get("model")
        if isinstance(model, dict) and model.get("arch") in list_models():
            return True
        names = parse_run_name(self.name)
        files = (self.config, self.metrics, self.summary_file, self.checkpoint, self.lock_file)
        return names is not None and names["arch"] in list_models() and any(f.exists() for f in files)

    # ---- the state every command asks for
    def state(self) -> RunState:
        """Read every file of the run and decide its status; never raises for a damaged file."""
        found, problems = RunState(Status.NEW), []
        found.config = self._attempt(self.read_config, problems) or {}
        found.summary = self._attempt(self.read_summary, problems) or {}
        found.log = self._attempt(self.read_log, problems)
        found.unreadable = dict(problems)
        found.rows = found.log.rows if found.log is not None else []
        with contextlib.suppress(OSError):
            found.owner = read_owner(self.lock_file)
        if found.owner is not None and found.owner.damage:  # a lock that could never go stale
            problems.append((LOCK_FILE, found.owner.damage))
        problems += self._contradictions(found)
        found.status, found.problem, found.repair = self._status(found, problems)
        return found

    @staticmethod
    def _attempt(read, problems: list) -> object:
        try:
            return read()
        except DamagedFile as err:
            problems.append((err.path.name, err.reason))
            return None

    def _contradictions(self, found: RunState) -> list[tuple[str, str]]:
        """(file, reason) for files that parse but disagree with the folder or each other."""
        names, problems, config, summary, log = parse_run_name(self.name), [], found.config, found.summary, found.log
        if not self.config.exists() and any(f.exists() for f in (self.metrics, self.summary_file, self.checkpoint)):
            problems.append((self.config.name, "is missing"))
        # (arch, depth, seed) as each file names them: a parsed config holds all three, a summary may not
        model = config.get("model", {})
        said = {self.config.name: (model.get("arch"), model.get("depth"), config.get("seed")),
                self.summary_file.name: tuple(summary.get(k) for k in ("arch", "depth", "seed"))}
        for file, record in said.items():
            if names and None not in record and record != (names["arch"], names["depth"], names["seed"]):
                problems.append((file, f"names the run {run_name(*record)}"))
        if log is not None and summary.get("epochs", 0) > found.epochs:
            problems.append((self.metrics.name, f"has {found.epochs} epoch{'' if found.epochs == 1 else 's'}, "
                                                f"summary.json says {summary['epochs']}"))
        elif log is not None and log.torn and summary.get("status") in FINISHED:
            problems.append((self.metrics.name, "ends in a line cut short"))
        elif log is not None and not log.rows and self.checkpoint.exists():
            problems.append((self.metrics.name, "has no epochs, but checkpoint.pt exists"))
        return problems

    def _status(self, found: RunState, problems: list[tuple[str, str]]) -> tuple[Status, str | None, str | None]:
        problem = "; ".join(f"{file} {reason}" for file, reason in problems) or None
        if found.owner is not None and found.owner.live:
            return Status.RUNNING, problem, None
        if problems:
            return Status.DAMAGED, problem, self._repair(found, {file for file, _ in problems})
        status = found.summary.get("status")
        if status in FINISHED:
            return Status(status), None, None
        if found.owner is not None and not found.owner.ended:
            return Status.STALE, None, None
        if status == Status.FAILED:
            return Status.FAILED, found.summary.get("error"), None
        # "running" in a summary with no lock beside it, or its process ended: its trainer was killed.
        return (Status.PARTIAL if found.last or self.checkpoint.exists() else Status.NEW), None, None

    def _repair(self, found: RunState, files: set[str]) -> str | None:
        """What the next trainer does about damage in ``files``; None when the user must act."""
        if files & {LOCK_FILE, self.config.name}:
            # only the user can tell that no trainer holds the lock; without the settings it was
            # trained with there is nothing to check a resume against
            return None
        if files == {self.summary_file.name}:
            return "the next train or sweep rewrites summary.json from metrics.csv"
        if found.summary.get("status") in FINISHED or self.summary_file.name in files:
            return None  # a finished run is never retrained behind the user's back
        return "the next train or sweep restarts the run, keeping the old files in old-<time>/"

    # ---- the lock: one trainer per run, on any host
    @contextlib.contextmanager
    def claim(self, stale_after: float = DEFAULT_STALE_AFTER) -> Iterator[Lock]:
        """Hold this run's lock while training it (resexp.run.lock): creates the folder and
        the lock, or takes over a stale lock; raises RunBusy while a live process holds it.
        The lock's heartbeat runs until the block ends; ``Lock.verify()`` raises RunBusy if
        the run was taken over meanwhile (a heartbeat stalled for longer than stale_after).
        Temporary files left by a killed trainer are removed once the lock is held."""
        with writing(self.path):
            real_dir(self.path)
            lock = acquire(self.lock_file, stale_after)
        try:
            for tmp in self.path.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
            yield lock
        finally:
            lock.release()

    # ---- config.yaml: created once, checked on every resume
    def create(self, cfg) -> None:
        """config.yaml, for a run that has none yet (under its lock: claim() made the folder)."""
        if not self.config.exists():
            self.replace_config(cfg)

    def read_config(self) -> dict | None:
        """The resolved config this run was started with; None if missing; DamagedFile."""
        data = read_bytes(self.config)
        return None if data is None else parse_config(self.config, data)

    def config_conflicts(self, cfg) -> list[str]:
        """Keys whose value differs from the config this run was started with."""
        config = self.read_config()
        if config is None:
            return []
        old, new = result_settings(config), result_settings(OmegaConf.to_container(cfg, resolve=True))
        # A key newer than the run's config had its schema default then.
        old.update({k: default_of(k) for k in set(new) - set(old) if default_of(k) == new[k]})
        return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
                for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]

    def check_config(self, cfg, others: int = 0) -> None:
        """UserError if this run was started with other result-affecting settings
        (``others``: how many more runs of a sweep clash too, for the message)."""
        conflicts = self.config_conflicts(cfg)
        if conflicts:
            more = f" (and {others} more run{'s' if others > 1 else ''})" if others else ""
            raise UserError(f"{self.path} was started with another config ({'; '.join(conflicts[:3])}){more}; "
                            f"use another --out or delete that run")

    def replace_config(self, cfg) -> None:
        """config.yaml rewritten: only for a run that goes on under a longer length
        (resexp/train/extend.py), whose other settings are those it was started with."""
        with writing(self.config):
            atomic_write(self.config, OmegaConf.to_yaml(cfg, resolve=True).encode())

    # ---- command.yaml: how the run was asked for (Origin), and how it was extended
    def read_command(self) -> dict | None:
        """command.yaml; None if missing; DamagedFile if it is not a YAML mapping."""
        data = read_bytes(self.command_file)
        return None if data is None else parse_command(self.command_file, data)

    def write_command(self, command: dict) -> None:
        with writing(self.command_file):
            atomic_write(self.command_file, yaml.safe_dump(command, sort_keys=False).encode())

    # ---- summary.json
    def read_summary(self) -> dict | None:
        """summary.json; None if missing; DamagedFile."""
        data = read_bytes(self.summary_file)
        return None if data is None else parse_summary(self.summary_file, data)

    def write_summary(self, summary: dict) -> None:
        with writing(self.summary_file):
            atomic_write(self.summary_file, (json.dumps(_stamped(summary), indent=2) + "\n").encode())

    def record_failure(self, summary: dict, error: str) -> None:
        """Mark the run failed, even on a full disk: if the atomic replace finds no space, the
        old summary.json is overwritten where it stands (its blocks are already allocated).
        Best effort: if even that fails, the run reads as partial and resumes alike."""
        failed = {**summary, "status": str(Status.FAILED), "error": error}
        try:
            self.write_summary(failed)
        except CannotWrite as err:
            with contextlib.suppress(OSError, UserError):
                if err.no_space:  # compact: no more blocks
                    overwrite(self.summary_file, json.dumps(_stamped(failed)).encode())

    def record_lost(self, why: str, pid: int | None) -> None:
        """A trainer process that died without a word (its launcher saw it go): the run is
        recorded failed with ``why``, and the dead process's lock goes, so the next sweep
        resumes it from its last epoch at once."""
        try:
            summary = self.read_summary()
        except DamagedFile:
            summary = None  # state() reports the damage; the next trainer repairs it
        if summary is not None:  # none yet: the run never started, and reads as new
            self.record_failure(summary, why)
        with contextlib.suppress(OSError):
            owner = read_owner(self.lock_file)
            if owner is not None and owner.pid == pid and owner.ended:
                self.lock_file.unlink()

    # ---- metrics.csv
    def read_log(self) -> Log:
        """metrics.csv: its complete rows in epoch order; empty if missing; DamagedFile."""
        data = read_bytes(self.metrics)
        return Log([], []) if data is None else parse_log(self.metrics, data)

    def read_rows(self) -> list[dict]:
        return self.read_log().rows

    def append_row(self, row: dict) -> None:
        self.append_rows(self.metrics, [row])

    def append_rows(self, path: Path, rows: list[dict]) -> None:
        """Append whole CSV lines to one of this run's files (metrics.csv, a diagnostics file)
        in one write, a header first if the file is new."""
        if rows:
            with writing(path):
                new = not path.exists() or path.stat().st_size == 0
                append(path, _csv(list(rows[0]), rows, header=new))  # one write of whole lines, never through a link

    def keep_rows_until(self, epoch: int) -> None:
        """Keep the complete rows up to ``epoch`` and nothing after, in metrics.csv and in each
        diagnostics file: rows written after the last checkpoint (about to be redone) and a
        last line cut short go. With ``epoch`` 0 (nothing to go on from) every row goes, the
        diagnostics of iteration 0 too, since the run measures them again when it starts.
        The rows are kept as text: a damaged diagnostics file is the analysis' to report."""
        for path in (self.metrics, *(self.path / name for name in DIAGNOSTIC_FILES)):
            data = read_bytes(path)
            if data is None:
                continue
            text = data.decode("utf-8", errors="replace")
            reader = csv.DictReader(io.StringIO(text[: text.rfind("\n") + 1]))  # its complete lines
            rows = [r for r in reader if None not in r and None not in r.values()]
            kept = [r for r in rows if epoch > 0 and _epoch_of(r) <= epoch]
            if kept != rows or not text.endswith("\n") or epoch == 0:
                with writing(path):
                    if kept:
                        atomic_write(path, _csv(reader.fieldnames, kept, header=True))
                    else:
                        path.unlink()

    # ---- checkpoint.pt: its bytes (torch's format is resexp/train/checkpoint.py's)
    def write_checkpoint(self, data: bytes) -> None:
        with writing(self.checkpoint):
            atomic_write(self.checkpoint, data)

    # ---- wandb-id.txt: the W&B run this folder logs to (train.wandb=true)
    def read_wandb_id(self) -> str | None:
        """The W&B run id; None if there is none yet; DamagedFile if it is not a plain id."""
        data = read_bytes(self.wandb_id_file)
        return None if data is None else parse_wandb_id(self.wandb_id_file, data)

    def write_wandb_id(self, run_id: str) -> None:
        with writing(self.wandb_id_file):
            atomic_write(self.wandb_id_file, f"{run_id}\n".encode())

    # ---- starting over without losing anything
    def set_aside(self) -> Path:
        """Move metrics.csv, summary.json, checkpoint.pt, the diagnostics and TensorBoard files
        and the W&B run id into old-<UTC time>/ so the run can start again from epoch 1 (in
        a new W&B run); config.yaml stays. Returns that folder."""
        stamp = f"old-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
        names = (stamp, *(f"{stamp}-{k}" for k in range(2, 1000)))  # a second restart within the second
        aside = next(self.path / name for name in names if not (self.path / name).exists())
        with writing(aside):
            aside.mkdir()
            extra = [self.path / name for name in DIAGNOSTIC_FILES] + sorted(self.path.glob("events.out.tfevents.*"))
            for file in (self.metrics, self.summary_file, self.checkpoint, self.wandb_id_file, *extra):
                if file.exists():
                    file.rename(aside / file.name)
        return aside


def _stamped(summary: dict) -> dict:
    """The summary with the process that writes it, and when."""
    return {**summary, "pid": os.getpid(), "host": socket.gethostname(), "updated": now()}


def _csv(columns: list[str], rows: list[dict], header: bool) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def _epoch_of(row: dict) -> float:
    try:
        return float(row.get("epoch"))
    except (TypeError, ValueError):
        return float("inf")  # unreadable: dropped with the rows past the checkpoint

