"""What a W&B run's earlier starts wrote, read back from their transaction logs (``run-<id>.wandb``).

A resumed start logs only what these files lack (docs/logging.md), so the union of a
run's files holds every record once, even after a start killed with SIGKILL.

The file is a 7-byte header (``:W&B``, a magic number, a version), then LevelDB's log
format (github.com/google/leveldb, doc/log_format.md): 32 KiB blocks of chunks, each with
a 7-byte header (CRC-32 of its type byte and data, little-endian length, type: 1 whole,
2 first, 3 middle, 4 last); a block's tail shorter than a chunk header is padding. Each
record is a ``wandb_internal_pb2.Record``. W&B's own process writes the file in buffered
blocks, so a start killed with SIGKILL leaves only a prefix, possibly ending in a chunk
cut short: reading stops at the first chunk that is short or fails its checksum, and
returns only what the file provably holds.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Iterator

BLOCK, HEADER = 32 * 1024, 7
WHOLE, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def chunks(data: bytes) -> Iterator[bytes]:
    """The records' bytes, in order, up to the first chunk that is cut short or damaged."""
    pos, pending = HEADER, None
    while True:
        left = BLOCK - pos % BLOCK
        if left < HEADER or data[pos:pos + HEADER] == bytes(HEADER):  # a block's padding
            pos += left
            continue
        if pos + HEADER > len(data):
            return
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        chunk = data[pos + HEADER: pos + HEADER + length]
        if len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            return
        pos += HEADER + length
        if kind == WHOLE:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind in (MIDDLE, LAST) and pending is not None:
            pending += chunk
            if kind == LAST:
                yield pending
                pending = None
        else:
            return


def history(path: Path) -> list[dict]:
    """The history rows the file provably holds, each {key: value} with its ``_step``;
    nested keys joined with ``/``. [] for a file that is not a W&B transaction log."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        return []
    rows = []
    for raw in chunks(data):
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(raw)
        except DecodeError:
            break
        if record.WhichOneof("record_type") == "history":
            row = {"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in record.history.item}
            rows.append({**row, "_step": record.history.step.num})
    return rows
