"""Depth arithmetic shared by the model families: depth = step*n + offset."""

from __future__ import annotations

from resexp.errors import UserError


class BadDepth(UserError):
    """A depth the rule ``what`` does not accept, with the valid depths nearest to it: a
    list of depths is then reported whole (registry.check_depths), not at its first."""

    def __init__(self, message: str, depth: int, what: str, nearest: tuple[int, ...]):
        super().__init__(message)
        self.depth, self.what, self.nearest = depth, what, nearest


def blocks_for_depth(depth: int, step: int, offset: int, what: str) -> int:
    """Number of repeated units n >= 1 such that depth == step*n + offset, or a UserError
    that names the nearest valid depths (e.g. 1000 -> 998 or 1004 for 6n+2)."""
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise UserError(f"depth must be an integer, got {depth!r}")
    n, rem = divmod(depth - offset, step)
    if rem == 0 and n >= 1:
        return n
    lowest = step + offset
    if depth < lowest:
        raise BadDepth(f"depth {depth} is too small for {what}: the smallest is {lowest}", depth, what, (lowest,))
    below, above = depth - rem, depth - rem + step
    raise BadDepth(f"depth {depth} is not {what}: nearest valid depths are {below} and {above}", depth, what,
                   (below, above))
