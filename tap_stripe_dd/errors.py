"""The one exception type that means "the user's input is wrong", shown without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix: printed as one line, exit code 2."""

    exit_code = 2
