"""Reading a local file a command is given (`graph --events`, `run --cassette`) or a file
of the project's compile cache: a regular file only, no larger than MAX_FILE_BYTES, and
JSON nested no deeper than reason, whose objects give each key once.

A FIFO (or a device) named where a file is expected would block the command until it is
killed, a file of gigabytes (or `/dev/zero`) would end it with a MemoryError, and JSON
nested a hundred thousand levels deep would end it with a RecursionError traceback. All
are refused here with an `OSError` naming the file, which the CLI's
reporter (twelvefold/commands/report.py) prints as one line, exit 1, as it does for any
path the system refuses (`error: cannot use e.json: nested too deeply ...`).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path
from typing import Any

from pydantic_core import from_json

from .jsonkeys import refuse_repeated_keys, utf8_text

MAX_JSON_DEPTH = 200
"""How deep arrays and objects nest in a file's JSON at most (pydantic-core's parser stops
there, far past any event log or cassette entry, far short of Python's stack)."""


MAX_FILE_BYTES = 256 * 1024 * 1024
"""The largest file read here (256 MiB): far past any event log, cassette or compiled
module, far short of what would exhaust the memory of a small machine."""


def read_regular_file(
    path: Path, *, follow_links: bool = True, most: int = MAX_FILE_BYTES
) -> bytes:
    """`path`'s bytes; an `OSError` naming it when it is not a regular file (a folder:
    `IsADirectoryError`; checked on the
    open file, which is opened without blocking: a FIFO with no writer is not waited on),
    is larger than `most` bytes (MAX_FILE_BYTES), or (with `follow_links` false) is a
    symbolic link."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
    if not follow_links:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:  # checked before `os.fdopen`, which refuses a folder naming the descriptor
        found = os.fstat(fd)
        if stat.S_ISDIR(found.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(found.st_mode):
            raise OSError(
                errno.EINVAL,
                "not a regular file (a FIFO or a device is never read; give a file)",
                str(path),
            )
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as file:
        # Read one byte past the cap: a file that grows while it is read is refused too.
        content = file.read(most + 1) if found.st_size <= most else b""
        if found.st_size > most or len(content) > most:
            raise OSError(errno.EFBIG, f"larger than {_size(most)} (a larger file is not read)",
                          str(path))  # fmt: skip
        return content


def _size(bytes_: int) -> str:
    mib = bytes_ // (1024 * 1024)
    return f"{mib} MiB" if mib else f"{bytes_:,} bytes"


def replace_file(target: Path, data: bytes, mode: int = 0o666) -> None:
    """Write `data` to a new file of its own (`mode`, before the umask) and move it over
    `target`: a reader never sees part of it, and a link or a FIFO found at the target's
    name (or at the temporary one: a fresh file is made, links are not followed) is
    replaced, never written through. `OSError` naming `target` when it cannot be written
    (the temporary file is removed; `target` is as it was)."""
    # Named for this process and thread, and made fresh: two writers of one file (two
    # runtimes compiling one agent) never write into each other's.
    temporary = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    temporary.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        with os.fdopen(os.open(temporary, flags, mode), "wb") as file:
            file.write(data)
        os.replace(temporary, target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        if exc.filename in (None, str(temporary)):  # named as the user named it
            exc.filename, exc.filename2 = str(target), None
        raise


def parse_json(text: str | bytes, path: Path, line: int | None = None) -> Any:
    """`text` (read from `path`, at `line` of it) as JSON; an `OSError` naming the file
    when its arrays and objects nest deeper than MAX_JSON_DEPTH, a `ValueError` when it
    is not JSON, and `RepeatedKey` (a `ValueError` naming the key and where it is) when
    an object in it gives a key twice: readers of one file must not disagree on it
    (runtime/jsonkeys.py). Bytes are read as UTF-8 and nothing else (`NotUtf8`, a
    `ValueError` the caller says of the file: JSON between systems is UTF-8)."""
    if isinstance(text, bytes):
        text = utf8_text(text)
    refuse_repeated_keys(text)
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


def json_kind(value: Any) -> str:
    """What JSON calls `value`'s kind (`array`, `object`, `string`, ...), to say what a
    file holds where another kind was expected."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def no_links_to(folder: Path) -> bool:
    """Whether `folder` is no symbolic link, nor (given relative, as `.twelvefold/cache`)
    any folder on the way to it. A project's compile cache is read and written only when
    it is not: a repository may ship one as a link to a folder elsewhere, and nothing is
    read or written through it (docs/runtime.md, "The compile cache")."""
    steps = [folder] if folder.is_absolute() else [folder, *folder.parents]
    return not any(os.path.islink(step) for step in steps)
