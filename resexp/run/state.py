"""The one vocabulary of run states: what `status`, a sweep, SLURM, results and the report say.

A run folder is in one of the folder states (``RunDir.state()`` decides which). A launcher
adds the outcomes it sees from outside the folder: a run another live trainer holds
(``BUSY``), a SLURM job still waiting (``QUEUED``), or a job that ended while its run did
not (``UNFINISHED``). Only a file that is unreadable or contradicts the others (or a
run.lock that could never go stale) is ``DAMAGED``; a setting that cannot be used is a
failed run, not a damaged one.
"""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    # What a run folder holds (RunDir.state()).
    NEW = "new"              # nothing trained yet
    PARTIAL = "partial"      # some epochs, no live trainer: the next train or sweep resumes it
    RUNNING = "running"      # a live process holds the run's lock
    STALE = "stale"          # a lock silent for longer than its stale_after: the next trainer takes it over
    DONE = "done"
    DIVERGED = "diverged"    # the loss became NaN/inf: finished, never retrained
    FAILED = "failed"        # the trainer stopped on an error (summary.json says which)
    DAMAGED = "damaged"      # a file is unreadable or contradicts the others, or a lock could never go stale
    # What a launcher sees from outside the folder.
    BUSY = "running elsewhere"  # another live trainer has the run: this launcher left it alone
    QUEUED = "queued"           # a SLURM job for it waits in the queue
    UNFINISHED = "unfinished"   # its SLURM job ended but the run did not finish

    def __str__(self) -> str:  # "done", not "Status.DONE", in tables, f-strings and messages
        return self.value

    __format__ = str.__format__
    # Equal to its string, so hashed like it: "done" in FINISHED, {"done": ...}[Status.DONE].
    __hash__ = str.__hash__

    @property
    def finished(self) -> bool:
        """Never trained again."""
        return self in FINISHED


FINISHED = frozenset({Status.DONE, Status.DIVERGED})
# Started and not finished: its numbers so far stand in for the point in figures.
UNFINISHED = frozenset({Status.RUNNING, Status.STALE, Status.PARTIAL, Status.FAILED, Status.UNFINISHED})
# The order in which counts are listed (status lines, tables).
ORDER = (Status.DONE, Status.RUNNING, Status.BUSY, Status.QUEUED, Status.STALE, Status.PARTIAL, Status.NEW,
         Status.UNFINISHED, Status.DIVERGED, Status.FAILED, Status.DAMAGED)
