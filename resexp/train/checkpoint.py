"""checkpoint.pt: the model and optimizer state a run resumes from, in torch's format.

The run folder (resexp/run/folder.py) owns the file and writes its bytes atomically; this
module turns a state dict into those bytes and back, so that the run folder layer, and
with it `resexp status`, `plot` and `report`, never imports torch.
"""

from __future__ import annotations

import io

import torch

from resexp.run.folder import RunDir
from resexp.run.files import DamagedFile


def save(run: RunDir, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    run.write_checkpoint(buf.getvalue())


def load(run: RunDir, map_location) -> dict | None:
    """The run's checkpoint, None if it has none; DamagedFile if it cannot be read. Loaded
    with ``weights_only``: a received checkpoint holds tensors and numbers, never code."""
    if not run.checkpoint.exists():
        return None
    try:
        state = torch.load(run.checkpoint, map_location=map_location, weights_only=True)
        if not all(isinstance(state.get(k), int) for k in ("epoch", "iteration")):
            raise ValueError("no epoch and iteration")
        return state
    except Exception as err:  # truncated zip, pickle error, ... all mean the same here
        raise DamagedFile(run.checkpoint, f"unreadable ({type(err).__name__}); "
                                          f"delete it to restart this run from scratch") from err
