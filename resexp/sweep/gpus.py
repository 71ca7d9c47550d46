"""Which GPU each worker process of ``resexp sweep --jobs N`` uses.

Each worker sees exactly one GPU through CUDA_VISIBLE_DEVICES, which start_worker sets
before the worker imports torch or touches CUDA: this module imports neither. Worker slots
take the visible GPUs in turn, so --jobs 8 on 4 GPUs puts two workers on each.
"""

from __future__ import annotations

import os
from typing import Mapping

from resexp.sweep.lifeline import die_with, die_with_parent


def visible_gpus(environ: Mapping[str, str], count: int) -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries: the entries of its
    own CUDA_VISIBLE_DEVICES (indices or UUIDs) if set, else 0 .. count-1."""
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(count)]
    return [d.strip() for d in listed.split(",") if d.strip()][:count]


def round_robin(gpus: list[str], jobs: int) -> list[str]:
    """The GPU of each of ``jobs`` workers: the visible ones in turn."""
    return [gpus[k % len(gpus)] for k in range(jobs)]


def start_worker(parent_pid: int, gpu: str | None = None, forked: bool = False) -> None:
    """First thing in a sweep worker: it dies with the sweep ``parent_pid`` (resexp/sweep/lifeline.py;
    ``forked``: by a fork server, whose child it is) and, given a GPU, sees only that one
    (before it imports torch)."""
    if forked:
        die_with(parent_pid)
    else:
        die_with_parent(parent_pid)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
