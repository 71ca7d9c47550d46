"""Text from a results folder, made safe to print and to write into a report.

A summary.json may come from someone else: an ``experiment`` holding a newline would
start a line of its own in report.md (a shell line, if the report is ever sourced or
pasted), and an escape sequence would drive the terminal that prints ``resexp status``.
Control characters are shown escaped instead, as Python writes them in a string.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text) -> str:
    """``text`` on one line, every control character escaped (a newline as \\n)."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(text))
