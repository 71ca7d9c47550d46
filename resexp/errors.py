"""The one exception type for mistakes a user can make.

The CLI turns a UserError into a single line on stderr and exit code 2; anything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem the user can fix: bad depth, unknown dataset, missing data, ..."""

    def _render_traceback_(self) -> list[str]:
        """What IPython (a notebook cell) shows in place of the traceback: the one line."""
        return [f"{type(self).__name__}: {self}"]
