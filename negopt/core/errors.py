"""One error type per condition a user can fix, and how a stage reports it.

A :class:`UserError` (a bad param, a missing or empty input, missing weights, unreadable source data)
is the user's to fix: the stage prints its one message and exits with status 2, no traceback. Any
other exception is a bug in negopt and keeps its traceback. Fixes name DVC commands
(``dvc repro <stage>``), never a bare ``python stages/...`` that would bypass DVC's bookkeeping.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path


class UserError(Exception):
    """A mistake the user can fix; the message names the field or file and the fix."""


class ParamsError(UserError, ValueError):
    """A param is invalid, or valid alone but does not fit the data or another param; names each key."""


class MissingInputError(UserError, FileNotFoundError):
    """A stage's input is absent or empty: another stage must run first, or the data rules are too strict."""


def require_input(path: str | Path, producer: str) -> Path:
    """``path`` if it exists, else :class:`MissingInputError` naming the stage that writes it."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path} not found: run `dvc repro {producer}` first")
    return path


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; a :class:`UserError` prints ``error: <message>`` and exits 2."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
