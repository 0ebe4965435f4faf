"""One error type for bad user input.

Every reader and command raises :class:`InputError` for a problem the user can fix (a truncated
scan, a label file of the wrong length, a missing sequence folder ...). The message always names the
file, says what is wrong and how to fix it; the CLI turns it into exit code 2.
"""
from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input file or argument. ``str(err)`` is ``"<path>: <problem>. Fix: <fix>"``."""

    def __init__(self, path: str | Path, problem: str, fix: str) -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.path}: {problem}. Fix: {fix}")
