"""Exceptions the command line turns into one clear message instead of a traceback.

- `UserError`: a mistake the user can fix (config, paths, input data): exit status 2.
- `RunFailure`: the machine failed the run (disk full, too many non-finite losses): exit
  status 1, with a message saying what is intact and what to do.
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


class RunFailure(Exception):
    """The run cannot go on for a reason outside the config (disk full, diverged training)."""
