"""Reading a local file a command is given (`graph --events`, `run --cassette`): a regular
file only, and JSON nested no deeper than reason.

A FIFO (or a device) named where a file is expected would block the command until it is
killed, and JSON nested a hundred thousand levels deep would end it with a RecursionError
traceback. Both are refused here with an `OSError` naming the file, which the CLI's
reporter (twelvefold/commands/report.py) prints as one line, exit 1, as it does for any
path the system refuses (`error: cannot use e.json: nested too deeply ...`).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

from pydantic_core import from_json

MAX_JSON_DEPTH = 200
"""How deep arrays and objects nest in a file's JSON at most (pydantic-core's parser stops
there, far past any event log or cassette entry, far short of Python's stack)."""


def read_regular_file(path: Path) -> bytes:
    """`path`'s bytes; an `OSError` naming it when it is not a regular file (checked on the
    open file, which is opened without blocking: a FIFO with no writer is not waited on)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(
                errno.EINVAL,
                "not a regular file (a FIFO or a device is never read; give a file)",
                str(path),
            )
        return file.read()


def parse_json(text: str | bytes, path: Path, line: int | None = None) -> Any:
    """`text` (read from `path`, at `line` of it) as JSON; an `OSError` naming the file
    when its arrays and objects nest deeper than MAX_JSON_DEPTH, a `ValueError` when it
    is not JSON."""
    try:
        return from_json(text)
    except ValueError as exc:
        if "recursion limit exceeded" not in str(exc):
            raise
        where = f"{path}:{line}" if line is not None else str(path)
        raise OSError(
            errno.EINVAL,
            f"nested too deeply (JSON deeper than {MAX_JSON_DEPTH} levels is not read)",
            where,
        ) from None
