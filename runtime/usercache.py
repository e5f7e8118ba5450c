"""The user's own cache folder, and the secret that proves a cached file was written here.

Two things twelvefold keeps between runs are code when they are read back: the parser's
tables (a pickle, which runs code as it loads) and the modules the compiler generates
(imported). Neither may come from a place that someone else can write: not the shared
temporary folder (another local user can plant a file at a predictable name there), and
not the project's `.twelvefold/cache/` as a repository ships it (a clone brings whatever
files its author committed).

So the parser's tables live in `$XDG_CACHE_HOME/twelvefold` (`~/.cache/twelvefold` without
it), a folder that must belong to the user and be closed to everyone else; and each
module the compiler writes into a project's cache is signed with a key kept there
(HMAC-SHA256), so that a module that this user's twelvefold did not write is compiled
again rather than imported (docs/runtime.md, "The compile cache"). When the folder is not
safe (owned by someone else, open to others, not a folder) nothing is read from it: the
parser builds its tables each time and modules are compiled each time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

KEY_FILE = "cache-key"
KEY_BYTES = 32


def user_cache_dir() -> Path | None:
    """The user's twelvefold cache folder, created (0700) if missing; None when it is not
    safe to read code from: not a folder of its own (a link), not owned by this user, or
    open to the group or others (a folder that exists with wider rights is narrowed when
    it is the user's own)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    folder = root / "twelvefold"
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.mkdir(mode=0o700, exist_ok=True)
        found = os.lstat(folder)
        if not stat.S_ISDIR(found.st_mode) or not _own(found):
            return None
        if found.st_mode & 0o077:
            os.chmod(folder, 0o700)
    except (OSError, RuntimeError):  # RuntimeError: no home folder to be found
        return None
    return folder


def safe_cached_file(path: Path) -> bool:
    """Whether `path`, inside the user's cache folder, may be read as code: it is missing
    (to be written) or a regular file (not a link) of this user's that no one else can
    write."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return stat.S_ISREG(found.st_mode) and _own(found) and not found.st_mode & 0o022


def keep_to_self(path: Path) -> None:
    """Narrow `path`, a file of this user's just written in the user's cache folder, to
    0600. It was written as the umask allows (0664 under umask 002, the default where each
    user has a group of their own), and a file others could write is never read back
    (`safe_cached_file`): kept wider, it would be written at every start and never used."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK)
    except OSError:
        return
    try:
        found = os.fstat(fd)
        if stat.S_ISREG(found.st_mode) and _own(found) and found.st_mode & 0o077:
            os.fchmod(fd, 0o600)
    except OSError:
        pass
    finally:
        os.close(fd)


def _own(found: os.stat_result) -> bool:
    getuid = getattr(os, "getuid", None)
    return getuid is None or found.st_uid == getuid()


def cache_key() -> bytes | None:
    """This user's secret for signing cached modules (made on first use, 0600); None when
    the user's cache folder or the key in it is not safe, or cannot be made: then nothing
    is trusted and modules are compiled each time, never an error (a folder or a FIFO at
    the key's name is not read, and not waited on)."""
    folder = user_cache_dir()
    if folder is None:
        return None
    path = folder / KEY_FILE
    key = _read_key(path)
    # Missing, or cut short (or long) by a crash or an edit: a new key, written whole
    # under another name and moved into place, so that no reader ever sees part of one.
    # Modules signed with the old key are compiled again. Anything else at the name (a
    # folder, a FIFO, a link) is left alone, and nothing is trusted.
    if (key is None and not os.path.lexists(path)) or (key is not None and len(key) != KEY_BYTES):
        key = _write_key(path)
    return key if key is not None and len(key) == KEY_BYTES else None


def _read_key(path: Path) -> bytes | None:
    """The bytes of the key file (at most one past a key's length); None when it is
    missing or not a regular file of this user's that no one else can read."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK)
    except OSError:
        return None
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode) or not _own(found) or found.st_mode & 0o077:
            return None
        return os.read(fd, KEY_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)


def _write_key(path: Path) -> bytes | None:
    """A new key, written whole and moved to `path` (replacing what was there); None when
    it cannot be written."""
    from .localfiles import replace_file

    key = secrets.token_bytes(KEY_BYTES)
    try:
        replace_file(path, key, 0o600)
    except OSError:
        return None
    return key


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def signature(key: bytes, name: str, *parts: bytes) -> str:
    """The HMAC-SHA256 of a cached file's name and contents (each part length-prefixed,
    so no two different sets of parts sign alike)."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in (name.encode(), *parts):
        mac.update(len(part).to_bytes(8, "big"))
        mac.update(part)
    return mac.hexdigest()


def signed(key: bytes, expected: str, name: str, *parts: bytes) -> bool:
    """Whether `expected` is the signature of `name` and `parts` under `key`."""
    return hmac.compare_digest(expected, signature(key, name, *parts))
