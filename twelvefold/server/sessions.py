"""Browser sessions for the approval inbox, kept in the thread store's database.

A person signs in with a token once (server/tokens.py verifies it); the browser then holds
a random session id in a cookie. The store keeps only the id's SHA-256, so a copy of the
database does not let anyone ride a live session, and each session ends at a fixed time
(`lifetime`, from sign-in) or when the person signs out.

The CSRF token of a session is derived from its id (HMAC-SHA256 keyed by the id), so it
needs no column, is different for every session, and cannot be computed by a page that
does not hold the cookie (OWASP's "synchronizer token" pattern, one token per session).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from twelvefold.server.tables import Table

if TYPE_CHECKING:
    from twelvefold.runtime.pgstore import PostgresStore

DEFAULT_LIFETIME = 12 * 3600.0
"""Seconds a session lasts after sign-in: a working day, then sign in again."""


@dataclass(frozen=True)
class Session:
    """A signed-in browser: who it is, and the CSRF token its forms must carry."""

    person: str
    credential: str | None
    """The id of the token the person signed in with (tokens.py); the session ends when
    that token is revoked."""
    csrf: str
    expires: float
    """Unix time, seconds."""


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


def csrf_token(session_id: str) -> str:
    """The CSRF token of the session whose cookie holds `session_id` (64 hex digits)."""
    return hmac.new(session_id.encode("utf-8", "surrogatepass"), b"csrf", "sha256").hexdigest()


def same_secret(given: str | None, expected: str) -> bool:
    """Compare a secret a client sent with ours in constant time (no early exit that a
    stopwatch could read); None and non-ASCII text are simply unequal."""
    if given is None or not given.isascii():
        return False
    return hmac.compare_digest(given.encode("ascii"), expected.encode("ascii"))


class SessionStore(Table):
    """The `inbox_sessions` table of the store at `place` (a SQLite file, made if missing;
    an open PostgreSQL store); `None` keeps sessions in memory (a server on a memory store).

    Safe to share between threads of one process. `clock` gives Unix time in seconds;
    tests pass their own to make sessions expire. A file SQLite cannot open is
    `StoreError` (one line, as for the thread store).
    """

    def __init__(
        self,
        place: Path | str | PostgresStore | None,
        *,
        lifetime: float = DEFAULT_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lifetime = lifetime
        self.clock = clock
        super().__init__(Path(place) if isinstance(place, str) else place)

    def close_store(self) -> None:
        self.close()

    def open(self, person: str, credential: str | None = None) -> str:
        """Start a session for `person`, signed in with the token whose id is `credential`;
        returns the id for the cookie (shown once, never stored)."""
        session_id = secrets.token_urlsafe(32)
        now = self.clock()
        self._db.change("DELETE FROM inbox_sessions WHERE expires <= ?", (now,))
        self._db.change(
            "INSERT INTO inbox_sessions (id_hash, person, credential, created, expires)"
            " VALUES (?, ?, ?, ?, ?)",
            (_digest(session_id), person, credential, now, now + self.lifetime),
        )
        return session_id

    def find(self, session_id: str | None) -> Session | None:
        """The live session with this id, or None (unknown, ended or expired)."""
        if not session_id or len(session_id) > 256:
            return None
        digest = _digest(session_id)
        rows = self._db.rows(
            "SELECT person, credential, expires FROM inbox_sessions WHERE id_hash = ?",
            (digest,),
        )
        if not rows:
            return None
        person, credential, expires = rows[0]
        if not isinstance(expires, int | float) or expires <= self.clock():
            self._db.change("DELETE FROM inbox_sessions WHERE id_hash = ?", (digest,))
            return None
        if not isinstance(person, str) or not isinstance(credential, str | None):
            return None  # a row edited by hand is no session
        return Session(person, credential, csrf_token(session_id), float(expires))

    def close(self, session_id: str | None = None) -> None:
        """End the session (sign out; an unknown id is no error); without one, close the
        table."""
        if session_id is None:
            super().close()
            return
        self._db.change("DELETE FROM inbox_sessions WHERE id_hash = ?", (_digest(session_id),))
