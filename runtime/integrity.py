"""The log is the truth: a hash chain over a thread's stored events, and seals that tie a
snapshot (and the thread's row) to exactly the events they were computed from.

Each stored event carries `hash_n = SHA-256(hash_{n-1} || body_n)`, where `body_n` is the
event's JSON as stored and `hash_0 = SHA-256("twelvefold log" || thread id)`. The thread's
row seals the head of the chain (with the event count, format and reducer) and each
snapshot seals its fields: SHA-256, or HMAC-SHA-256 under `TWELVEFOLD_LOG_KEY` when that is
set in the environment (never read from a file: it is a secret). A MAC over the chain's
head is a MAC over every event before it (hash-then-MAC), so a keyed store resists
someone who can write the database but does not know the key, while loading still costs
one plain SHA-256 per event (an HMAC per event costs about five times as much). Without a
key the chain catches accidental and partial edits (an event changed, a snapshot changed
without recomputing its seal, a log cut short). Loading a thread recomputes the chain; a
mismatch refuses the thread (`BrokenLog`) rather than run on a log nobody wrote.

The event format (`EVENT_FORMAT`) and the runtime version (`runtime_version()`) are stored
with each thread and inside each snapshot, so a snapshot written by other code is never
believed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

EVENT_FORMAT = 1
"""The version of the stored event rows (the codec's JSON). A store refuses a thread
written in a newer format than this runtime reads."""

KEY_VARIABLE = "TWELVEFOLD_LOG_KEY"


class LogError(Exception):
    """A thread's stored log cannot be trusted or read; the thread is not loaded (nothing
    runs and nothing is written). Reported on one line by the CLI."""


class BrokenLog(LogError):
    """The stored events do not match their hash chain, or the thread's row does not
    match its events: the database was edited (or written under another key)."""

    def __init__(self, thread_id: str, seq: int, what: str) -> None:
        super().__init__(
            f"thread {thread_id} does not verify: {what} (event {seq}). Its log was changed "
            f"outside twelvefold, or written under another {KEY_VARIABLE}; it will not run. "
            "Restore the database from a backup, or fork the thread before that event"
        )
        self.thread_id = thread_id
        self.seq = seq


class UnreadableLog(LogError):
    """An event this runtime cannot decode, or a log in a newer event format."""

    def __init__(self, thread_id: str, what: str, reducer: str | None = None) -> None:
        super().__init__(f"thread {thread_id} cannot be read: {what}")
        self.thread_id = thread_id
        self.problem = what
        self.reducer = reducer
        """The fingerprint of the reducer that wrote the log, when known."""


def text_bodies(thread_id: str, bodies: Sequence[object]) -> list[str]:
    """A thread's stored event bodies, as read, once each is text: `BrokenLog` naming the
    first that is not (SQLite keeps a BLOB, or any other type, in a TEXT column: a hand
    edit or a damaged page). Twelvefold only ever writes text there, so such a body was
    changed outside twelvefold, as much as an edited one."""
    for seq, body in enumerate(bodies, start=1):
        if not isinstance(body, str):
            raise BrokenLog(thread_id, seq, f"an event is stored as {stored_kind(body)}, not text")
    return list(bodies)  # type: ignore[arg-type]  # each one checked above


def stored_kind(value: object) -> str:
    """What a value read from a database is, in SQL's words (`a BLOB`, `NULL`)."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes | bytearray | memoryview):
        return "a BLOB"
    if isinstance(value, bool | int):
        return "an INTEGER"
    if isinstance(value, float):
        return "a REAL"
    if isinstance(value, str):
        return "TEXT"
    return f"a {type(value).__name__}"


class Chain:
    """The SHA-256 chain the store links events with, and the seal (HMAC-SHA-256 with a
    key, SHA-256 without) it ties rows and snapshots to the chain's head with."""

    def __init__(self, key: bytes | None = None) -> None:
        self.keyed = key is not None
        self._base = hmac.new(key, digestmod=hashlib.sha256) if key is not None else None

    @classmethod
    def from_env(cls) -> Chain:
        """Seals keyed by TWELVEFOLD_LOG_KEY (UTF-8) when it is set, plain otherwise."""
        key = os.environ.get(KEY_VARIABLE)
        return cls(key.encode() if key else None)

    def genesis(self, thread_id: str) -> bytes:
        """hash_0: binds the chain to its thread, so a log moved to another thread fails."""
        return hashlib.sha256(b"twelvefold log\0" + thread_id.encode()).digest()

    def links(self, previous: bytes, bodies: Iterable[str]) -> list[bytes]:
        """hash_n for each body in turn, starting after `previous`."""
        hashes = []
        for body in bodies:
            previous = hashlib.sha256(previous + body.encode()).digest()
            hashes.append(previous)
        return hashes

    def head(self, thread_id: str, bodies: Iterable[str]) -> bytes:
        """The chain's head over a whole log: hash_n of its last event (hash_0 if none)."""
        return self.extend(self.genesis(thread_id), bodies)

    def extend(self, previous: bytes, bodies: Iterable[str]) -> bytes:
        """The chain's head after `bodies`, starting after `previous` (`previous` if none)."""
        sha256 = hashlib.sha256
        for body in bodies:
            previous = sha256(previous + body.encode()).digest()
        return previous

    def verify(self, thread_id: str, rows: Iterable[tuple[str, bytes | None]]) -> bytes:
        """Recompute the chain over (body, stored hash) rows in order; the head hash, or
        `BrokenLog` naming the first event that does not match."""
        previous = self.genesis(thread_id)
        for seq, (body, stored) in enumerate(rows, start=1):
            previous = hashlib.sha256(previous + body.encode()).digest()
            if previous != stored:
                raise BrokenLog(thread_id, seq, "an event does not match its hash")
        return previous

    def seal(self, *fields: str | int | bytes | None) -> bytes:
        """A MAC (a hash without a key) over fields, each length-prefixed so no two
        different field lists seal alike."""
        return self.seal_framed(framed(*fields))

    def seal_framed(self, framed_fields: bytes) -> bytes:
        """`seal` of fields already length-prefixed by `framed` (joined in order): for a
        caller that keeps the framing of fields that do not change between seals."""
        message = b"twelvefold seal\0" + framed_fields
        if self._base is None:
            return hashlib.sha256(message).digest()
        mac = self._base.copy()
        mac.update(message)
        return mac.digest()

    def sealed(self, seal: object, *fields: str | int | bytes | None) -> bool:
        """Whether `seal` (as read from the file: any type) is the seal of `fields`."""
        return isinstance(seal, bytes) and hmac.compare_digest(seal, self.seal(*fields))


def framed(*fields: str | int | bytes | None) -> bytes:
    """Fields as `Chain.seal` frames them: each as a 4-byte big-endian length and its
    bytes (UTF-8 text, an integer's decimal digits; None as the one byte 0xff)."""
    parts: list[bytes] = []
    append = parts.append
    for field in fields:  # written for speed: every append seals its thread's row
        if field is None:
            data = b"\xff"
        elif isinstance(field, bytes):
            data = field
        else:
            data = str(field).encode()
        append(len(data).to_bytes(4, "big"))
        append(data)
    return b"".join(parts)


@cache
def runtime_version() -> str:
    """This runtime's version for snapshots: the package version plus a fingerprint of the
    code that encodes states and events, so a snapshot written by other code (even at the
    same version number) is never decoded as if this code wrote it."""
    from twelvefold import __version__

    here = Path(__file__).parent
    source = hashlib.sha256()
    for name in ("codec.py", "types.py", "integrity.py"):
        source.update((here / name).read_bytes())
    return f"{__version__}+{source.hexdigest()[:12]}"


__all__ = [
    "EVENT_FORMAT",
    "KEY_VARIABLE",
    "BrokenLog",
    "Chain",
    "LogError",
    "UnreadableLog",
    "runtime_version",
    "stored_kind",
    "text_bodies",
]
