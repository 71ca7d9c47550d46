"""Read back what an offline W&B run wrote: its run-<id>.wandb file, record by record.

The file is W&B's transaction log: a 7-byte header (``:W&B``, a magic number, a version),
then LevelDB's log format: 32 KiB blocks of chunks, each with a 7-byte header
(checksum, length, type: 1 whole, 2 first, 3 middle, 4 last); a block's tail shorter
than a chunk header is padding. Each record is a ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7
WHOLE, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list:
    """Every Record of a .wandb file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    out, pos, pending = [], HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        chunk = data[pos + HEADER: pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        pending = chunk if kind in (WHOLE, FIRST) else pending + chunk
        if kind in (WHOLE, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def history(path: Path) -> list[dict]:
    """The logged rows: {key: value} for each history record."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append({"/".join(item.nested_key) or item.key: json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def config(path: Path) -> dict:
    """The run's config: its top-level keys, as the run record and config updates set them."""
    found = {}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        items = record.run.config.update if kind == "run" else record.config.update if kind == "config" else []
        for item in items:
            found["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
    return found


def run_ids(path: Path) -> set[str]:
    """The run ids the file's run records name."""
    return {r.run.run_id for r in records(path) if r.WhichOneof("record_type") == "run"}
