"""Text from a file someone else may have written, made inert before it is printed.

A received run folder may hold an escape sequence (which drives the terminal that prints
it), a newline (which starts a line of its own, in a log or a shell line pasted from it)
or a bidi override such as U+202E (which shows the text after it in another order than
it reads). Each such character is shown escaped, as Python writes it in a string.
"""

from __future__ import annotations


def inert(text) -> str:
    """``text`` on one line, every character that is not printable escaped (ESC as \\x1b,
    a newline as \\n, U+202E as \\u202e); letters of every script stay as they are."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
