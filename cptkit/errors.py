"""The one exception type for mistakes a user can fix (config, paths, input data).

The CLI turns a `UserError` into its message on stderr and exit status 2, without a traceback.
Anything else that escapes is a bug in cptkit and ends with a traceback and exit status 1.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's config, files or data; the message says what and where."""

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = list(problems or [])
        if self.problems:
            message = message.rstrip() + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)
