"""Making a new SQLite store's folders and empty file, and knowing which of them this
command made.

A command that makes a store and is then refused (`twelvefold run` given an agent that
does not compile) removes what it made, and only that (twelvefold/commands/options.py,
`removed_if_refused`). What was there already, or what another command made meanwhile
(two commands started at once on new paths in one new folder), is not this command's:
only a `mkdir` or an exclusive create that succeeded here says "made here". Each is
recorded with the identity of what it made (device and inode), and each folder is held
open until the record ends, so that its inode cannot be reused by a folder made again in
its place: a folder removed and made again by another command is never taken for this
command's.

SQLite takes an empty file for an empty database, so making the file before SQLite opens
it changes nothing but that the making is known.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import signal
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

ATTEMPTS = 5
"""How many times the folders are made again when they vanish before the file is made
in them (each refused command removes the folders it made once: a few suffice)."""


@dataclass(frozen=True)
class Made:
    """A folder or file made here, as it was when made."""

    path: Path
    device: int
    inode: int
    folder: bool

    def still_there(self) -> bool:
        """Whether `path` is still what was made (not removed, nor replaced)."""
        return identity(self.path, follow_links=False) == (self.device, self.inode)


def identity(path: Path, *, follow_links: bool = True) -> tuple[int, int] | None:
    """The device and inode of what is at `path`, or None when nothing is. An open
    file's inode is not reused while it is open, even once the file is removed."""
    try:
        found = os.stat(path, follow_symlinks=follow_links)
    except OSError:
        return None
    return (found.st_dev, found.st_ino)


class Closable(Protocol):
    def close(self) -> None: ...


@dataclass
class _Record:
    made: list[Made]
    held: list[int]  # the folders' descriptors, so their inodes are not reused meanwhile
    opened: list[Closable] = field(default_factory=list)
    """The connections this command opened on a store file it made (`opened_here`)."""


_RECORD: contextvars.ContextVar[_Record | None] = contextvars.ContextVar(
    "twelvefold_new_store", default=None
)


@contextlib.contextmanager
def recording_made() -> Iterator[list[Made]]:
    """Within: every folder and store file `make_store_file` makes (in this thread), in
    the order made, is appended to the list yielded. Read it before the `with` ends:
    the folders are held open until then."""
    record = _Record([], [])
    token = _RECORD.set(record)
    try:
        yield record.made
    finally:
        _RECORD.reset(token)
        for descriptor in record.held:
            os.close(descriptor)


def opened_here(path: Path, connection: Closable) -> None:
    """Note a SQLite connection this command opened on `path`: when that is a store file
    it made (while `recording_made`), `close_opened` closes it. Every opener of a store
    file calls this (the store, the server's tables)."""
    record = _RECORD.get()
    if record is None:
        return
    found = identity(path)
    if any(not m.folder and (m.device, m.inode) == found for m in record.made):
        record.opened.append(connection)


def close_opened() -> None:
    """Close every connection this command opened on a store file it made: before a
    refused command checks whether the file is still unused, which a connection of its
    own, left open by what the refusal cut short (a Ctrl-C while `serve` set up, after
    the store and its tables were opened), made it keep (the check cannot tell this
    process's connections from another's). The command is ending: nothing uses them."""
    record = _RECORD.get()
    if record is None:
        return
    while record.opened:
        with contextlib.suppress(Exception):
            record.opened.pop().close()


def make_store_file(path: Path) -> None:
    """Make `path`'s missing folders and, when nothing is at `path`, the empty file; a
    link to a file not there makes the file it names (when that file's folder is there).
    What is there already is left as it is, and a failure to make the file is left for
    SQLite to report when it opens it. A folder removed after it was found or made here
    and before the file was made in it (another command's refusal removing the folders
    it made, still empty) is made again (`ATTEMPTS` times at most). A path where no store
    can be is the `OSError` that says why (`file_there`), before anything is made.
    A Ctrl-C meanwhile is held back until what was made is recorded (`signals_held`)."""
    file_there(path)
    with signals_held():
        _make(path)


def _make(path: Path) -> None:
    for _ in range(ATTEMPTS):
        try:
            _make_folders(path.parent)
        except FileNotFoundError:
            continue  # a folder above vanished as its folder was made: again
        try:
            descriptor = os.open(
                os.path.realpath(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644
            )
        except FileNotFoundError:
            if os.path.isdir(path.parent):
                return  # a link into a folder that is not there: SQLite says so
            continue  # the folder vanished: make it again
        except OSError:
            return  # there already (another's to keep), or SQLite says why not
        try:
            _recorded(Path(os.path.realpath(path)), descriptor, folder=False)
        finally:
            os.close(descriptor)
        return


HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Within, a SIGINT or SIGTERM is held back, then handed to the handler it was for
    once the `with` ends: a folder or file made and its record as made here are one step
    for a Ctrl-C (one between them left an empty store file no command could use, and
    that `removed_if_refused` did not know it had made). Only in the main thread, where
    Python runs signal handlers, and only over a handler of Python code (a signal whose
    handler is the system's default ends the process anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append(signum)

    handlers: dict[int, Callable[[int, FrameType | None], Any]] = {}
    for number in HELD_SIGNALS:
        handler = signal.getsignal(number)
        if callable(handler):
            handlers[number] = handler
            signal.signal(number, hold)
    try:
        yield
    finally:
        for signum, before in handlers.items():
            signal.signal(signum, before)
        for came in held:  # (a KeyboardInterrupt from here ends the `with`, as it would have)
            handlers[came](came, None)


def file_there(path: Path) -> bool:
    """Whether a file is at `path` (a link: the file it names). False when nothing is;
    `OSError` naming the path when no store can ever be there, so that "no store there"
    does not send the user to a command that fails: the system refuses the path (a name
    too long, a loop of links, a folder it may not read), a folder is at it
    (`IsADirectoryError`), a device or a FIFO is (`/dev/null`: SQLite would write its
    journal beside it), or a file stands where one of its folders should be
    (`NotADirectoryError`, naming that file)."""
    try:
        found = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        in_the_way = next(
            (f for f in reversed(path.parents) if os.path.lexists(f) and not os.path.isdir(f)),
            path.parent,
        )
        raise _not_a_folder(in_the_way) from None
    if stat.S_ISDIR(found):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not stat.S_ISREG(found):  # SQLite would open it, and write its journal beside it
        raise OSError(errno.EINVAL, "not a regular file (a device or a FIFO is no store)",
                      str(path))  # fmt: skip
    return True


def _make_folders(folder: Path) -> None:
    """`folder.mkdir(parents=True, exist_ok=True)`, recording each folder made here."""
    if folder == folder.parent:
        return
    try:
        os.mkdir(folder)
    except FileNotFoundError:
        _make_folders(folder.parent)
        try:
            os.mkdir(folder)
        except FileExistsError:
            if not os.path.isdir(folder):
                raise _not_a_folder(folder) from None
            return  # made meanwhile by another: theirs
    except FileExistsError:
        if not os.path.isdir(folder):
            raise _not_a_folder(folder) from None
        return
    record = _RECORD.get()
    if record is None:
        return
    try:
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # cannot hold it: not recorded, so kept
    record.held.append(descriptor)
    _recorded(folder, descriptor, folder=True)


def _not_a_folder(path: Path) -> NotADirectoryError:
    """What is in the way of a folder: a file, or a link to nothing (`mkdir` says only
    "File exists")."""
    return NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))


def _recorded(path: Path, descriptor: int, *, folder: bool) -> None:
    record = _RECORD.get()
    if record is not None:
        found = os.fstat(descriptor)
        record.made.append(Made(path, found.st_dev, found.st_ino, folder))


__all__ = [
    "Made",
    "close_opened",
    "file_there",
    "identity",
    "make_store_file",
    "opened_here",
    "recording_made",
]
