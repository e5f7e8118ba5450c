"""Every line a command prints about a thread goes through `echo`: values are data, and
a control sequence in one must not drive the user's terminal (runtime/terminal.py)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

import click

from twelvefold.runtime.terminal import columns, for_terminal, one_line

if TYPE_CHECKING:
    from twelvefold.runtime.store import DamagedRow, StoreLocation


def echo(text: str, *, err: bool = False) -> None:
    click.echo(for_terminal(text), err=err)


class EscapingFormatter(logging.Formatter):
    """Log lines no value can drive or forge: a record's message (its arguments are values
    from threads: an error's text, a receiver's answer) as `one_line`, so a line break in
    a value cannot start a line that reads as a record of its own; a traceback keeps its
    lines, each `for_terminal`."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return one_line(super().formatMessage(record))

    def formatException(self, ei: logging._SysExcInfoType) -> str:
        return for_terminal(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return for_terminal(super().formatStack(stack_info))


def server_logging() -> None:
    """The log of `serve` and `worker` on stderr, from INFO, each line escaped
    (`EscapingFormatter`: a value in a record cannot drive the terminal or forge a line)."""
    handler = logging.StreamHandler()
    handler.setFormatter(EscapingFormatter("%(levelname)s: %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def damaged_rows(store: object) -> list[str]:
    """What a listing says of each damaged `threads` row of `store` (runtime/store.py,
    `DamagedRow`), to be printed with `flag_damaged` once the listing is out; none from a
    store that cannot hold one (the memory store)."""
    told: Callable[[], list[DamagedRow]] | None = getattr(store, "damaged_threads", None)
    return [row.said for row in told()] if told is not None else []


def flag_damaged(db: StoreLocation, said: list[str]) -> None:
    """After a listing that left damaged rows out: an error line for each, exit 1 (the
    listing is not whole)."""
    if not said:
        return
    for line in said:
        error(f"{db} holds a {line}")
    sys.exit(1)


def errors(problem: Exception) -> None:
    """`error` for each problem `problem` carries (`ServeError.problems`: every setting
    that cannot be used), else for it."""
    for line in getattr(problem, "problems", None) or (problem,):
        error(line)


def error(message: object) -> None:
    """`error: MESSAGE` on stderr as one line: a path, URL or name in the message (a `--db`
    with a line break in it) cannot start a line of its own and forge output below."""
    click.echo(f"error: {one_line(str(message))}", err=True)


EXIT_READER_GONE = 141
"""The exit status of a command whose reader went away (`twelvefold show T | head -1`):
128 + SIGPIPE, what a shell reports for a program SIGPIPE ended, as `cat` or `grep` end
there. `set -o pipefail` sees the output was cut short; nothing is printed."""


def reader_gone() -> NoReturn:
    """End quietly, as a command whose stdout lost its reader (EPIPE): no message, no
    traceback, and exit `EXIT_READER_GONE`. stdout is pointed at the null device first,
    so what is still buffered in it is dropped when Python flushes it on its way out
    instead of failing once more at shutdown (Python's docs, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no file behind stdout (a test's buffer)
        pass
    sys.exit(EXIT_READER_GONE)


def table(
    headings: Sequence[str], rows: Sequence[Sequence[str]], *, least: Sequence[int],
    right: Sequence[bool], gaps: Sequence[str],
) -> list[str]:  # fmt: skip
    """`headings` and `rows` as lines whose columns line up whatever their values: each
    column as wide as its widest cell (at least `least`), left-aligned or (`right`)
    right-aligned, `gaps[i]` after column i; the last column is not padded. The cells
    are printed as given: escape what comes from the store first."""
    lines = [headings, *rows]
    widths = [
        max([least[i], *(columns(line[i]) for line in lines)]) for i in range(len(headings) - 1)
    ]
    out = []
    for line in lines:
        cells = []
        for i, cell in enumerate(line[:-1]):
            pad = " " * (widths[i] - columns(cell))
            cells.append((pad + cell if right[i] else cell + pad) + gaps[i])
        out.append("".join(cells) + line[-1])
    return out
