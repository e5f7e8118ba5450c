"""The log is the truth: a hash chain over a thread's stored events, and seals that tie a
snapshot (and the thread's row) to exactly the events they were computed from.

Each stored event carries `hash_n = H(hash_{n-1} || body_n)`, where `body_n` is the event's
JSON as stored and `hash_0 = H("twelvefold log" || thread id)`. H is SHA-256, or
HMAC-SHA-256 under `TWELVEFOLD_LOG_KEY` when that is set in the environment (never read
from a file: it is a secret). Without a key the chain catches accidental and partial
edits (an event changed, a snapshot changed without recomputing its hash, a log cut
short); with one it also resists someone who can write the database but does not know
the key. Loading a thread recomputes the chain; a mismatch refuses the thread
(`BrokenLog`) rather than run on a log nobody wrote.

The event format (`EVENT_FORMAT`) and the runtime version (`runtime_version()`) are stored
with each thread and inside each snapshot, so a snapshot written by other code is never
believed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable
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


class Chain:
    """The hash (or, with a key, HMAC) the store chains events and seals rows with."""

    def __init__(self, key: bytes | None = None) -> None:
        self.keyed = key is not None
        self._base = hmac.new(key, digestmod=hashlib.sha256) if key is not None else None

    @classmethod
    def from_env(cls) -> Chain:
        """SHA-256, or HMAC-SHA-256 keyed by TWELVEFOLD_LOG_KEY (UTF-8) when it is set."""
        key = os.environ.get(KEY_VARIABLE)
        return cls(key.encode() if key else None)

    def digest(self, *parts: bytes) -> bytes:
        """H(parts concatenated): 32 bytes."""
        if self._base is None:
            return hashlib.sha256(b"".join(parts)).digest()
        mac = self._base.copy()
        for part in parts:
            mac.update(part)
        return mac.digest()

    def genesis(self, thread_id: str) -> bytes:
        """hash_0: binds the chain to its thread, so a log moved to another thread fails."""
        return self.digest(b"twelvefold log\0", thread_id.encode())

    def links(self, previous: bytes, bodies: Iterable[str]) -> list[bytes]:
        """hash_n for each body in turn, starting after `previous`."""
        hashes = []
        for body in bodies:
            previous = self.digest(previous, body.encode())
            hashes.append(previous)
        return hashes

    def head(self, thread_id: str, bodies: Iterable[str]) -> bytes:
        """The chain's head over a whole log: hash_n of its last event (hash_0 if none)."""
        previous = self.genesis(thread_id)
        if self._base is None:  # the common case, kept free of per-call indirection
            sha256 = hashlib.sha256
            for body in bodies:
                previous = sha256(previous + body.encode()).digest()
            return previous
        for body in bodies:
            previous = self.digest(previous, body.encode())
        return previous

    def verify(self, thread_id: str, rows: Iterable[tuple[str, bytes | None]]) -> bytes:
        """Recompute the chain over (body, stored hash) rows in order; the head hash, or
        `BrokenLog` naming the first event that does not match."""
        previous = self.genesis(thread_id)
        for seq, (body, stored) in enumerate(rows, start=1):
            previous = self.digest(previous, body.encode())
            if not hmac.compare_digest(previous, stored or b""):
                raise BrokenLog(thread_id, seq, "an event does not match its hash")
        return previous

    def seal(self, *fields: str | int | bytes | None) -> bytes:
        """A MAC (a hash without a key) over fields, each length-prefixed so no two
        different field lists seal alike."""
        parts = []
        for field in fields:
            data = field if isinstance(field, bytes) else str(field).encode()
            if field is None:
                data = b"\xff"
            parts += [len(data).to_bytes(4, "big"), data]
        return self.digest(b"twelvefold seal\0", *parts)

    def sealed(self, seal: bytes | None, *fields: str | int | bytes | None) -> bool:
        return seal is not None and hmac.compare_digest(seal, self.seal(*fields))


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
]
