"""Depth arithmetic shared by the model families: depth = step*n + offset."""

from __future__ import annotations

from resexp.errors import UserError


def blocks_for_depth(depth: int, step: int, offset: int, what: str, minimum: int = 1) -> int:
    """Number of repeated units n such that depth == step*n + offset, or a UserError
    that names the nearest valid depths (e.g. 1000 -> 998 or 1004 for 6n+2)."""
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise UserError(f"depth must be an integer, got {depth!r}")
    n, rem = divmod(depth - offset, step)
    if rem == 0 and n >= minimum:
        return n
    lowest = step * minimum + offset
    if depth < lowest:
        raise UserError(f"depth {depth} is too small for {what}: the smallest is {lowest}")
    below, above = depth - rem, depth - rem + step
    raise UserError(f"depth {depth} is not {what}: nearest valid depths are {below} and {above}")
