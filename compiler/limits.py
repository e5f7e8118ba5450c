"""The sizes a .agent file may have, and reading one without trusting it.

Every limit is far above what a real agent needs and far below what makes a stage slow
or deep: the stages are linear, but Python's recursion, `int()` of a 5,000-digit string
and the memory of a 10 MB description are not. An input over a limit gets a diagnostic
(E008, E009, E123) where it is written, never a traceback or a hang. docs/language.md
("Limits") lists them for users.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .diagnostics import Diagnostic, Span, error

MAX_FILE_BYTES = 1024 * 1024
"""A .agent file is read only if it is a regular file of at most this many bytes."""
MAX_NAME_CHARS = 128
"""Longest name: of a type, field, state or agent."""
MAX_STRING_CHARS = 8192
"""Longest string, after escapes: descriptions, `ask` templates, guard literals, paths."""
MAX_NESTING = 32
"""Deepest nesting of `list[`/`map[` in a type, or of `not` in a guard."""
MAX_TYPE_DEPTH = 16
"""Deepest value a declared type describes, in JSON levels: each record (an object) and
each `list[`/`map[` inside it is one (`type A { b: B? }`, `type B { c: list[string] }`:
3). pydantic builds a schema with about 30 frames of Python's stack per level, so 16
leaves half the stack to the rest of a run; model providers accept less (OpenAI's strict
schemas: 10). A recursive type is not deep: its schema refers to itself (E123)."""
MAX_NUMBER_DIGITS = 32
"""Most digits in a number: room for any float a guard prints back (`0.0000012345678901234567`),
far from the thousands that make `int()` slow."""
MAX_DURATION_SECONDS = 366 * 24 * 3600
"""Longest duration (`timeout`, `backoff`): a year."""

UTF8_BOM = "\ufeff"


def read_source(path: Path, display_path: str | None = None) -> tuple[str, list[Diagnostic]]:
    """The text of a .agent file, or "" and one diagnostic saying why it cannot be read.

    Refuses, without reading, anything that is not a regular file (a FIFO, `/dev/zero`)
    and files over MAX_FILE_BYTES (E008); bytes that are not UTF-8 are E007 at the first
    bad byte. A leading UTF-8 byte-order mark is accepted (and dropped by `compile_text`).
    """
    shown = display_path or str(path)
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            return "", [
                _unreadable(shown, "is not a regular file", "give the path of a .agent file")
            ]
        if info.st_size > MAX_FILE_BYTES:
            return "", [_too_large(shown)]
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return "", [
            _unreadable(shown, f"cannot be read: {reason}", "check the path and its permissions")
        ]
    if len(data) > MAX_FILE_BYTES:  # it grew between the stat and the read
        return "", [_too_large(shown)]
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError as exc:
        return "", [not_utf8(shown, data[: exc.start].decode("utf-8"), data[exc.start])]


def first_unencodable(text: str) -> tuple[int, str] | None:
    """Where `text` holds a lone surrogate (which no UTF-8 file can), as (offset, character)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start, text[exc.start]
    return None


def not_utf8(path: str, before: str, bad: int | str) -> Diagnostic:
    """E007 at the position after `before`, the text that decoded."""
    line = before.count("\n") + 1
    column = len(before) - (before.rfind("\n") + 1) + 1
    shown = (
        f"byte 0x{bad:02x} is not part of a UTF-8 character"
        if isinstance(bad, int)
        else f"U+{ord(bad):04X} is half of a surrogate pair, which UTF-8 cannot hold"
    )
    return error(
        "E007",
        f"this file is not UTF-8 text: {shown}",
        path,
        Span.point(line, column),
        label="not UTF-8",
        help="save the file as UTF-8 (every editor can); .agent files are text",
    )


def _too_large(path: str) -> Diagnostic:
    return _unreadable(
        path,
        f"is larger than {MAX_FILE_BYTES // 1024} KiB",
        "an agent this large is many agents: split it (see docs/language.md, Limits)",
    )


def _unreadable(path: str, why: str, fix: str) -> Diagnostic:
    return error("E008", f"this file {why}", path, Span.point(1, 1), help=fix)
