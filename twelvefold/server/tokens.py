"""API tokens: who a bearer token stands for.

A token is `tf_<id>_<secret>`: `id` (8 hex digits) names the row, `secret` is 32 random
bytes (`secrets.token_urlsafe`). Only the SHA-256 of the whole token is stored, in the
`server_tokens` table of the thread store's database, so a copy of the file gives no
token away; `verify` finds the row by id and compares the hashes in constant time
(`hmac.compare_digest`). A fast hash is enough: the secret has 256 bits of entropy, so
there is nothing to brute-force that a slow password hash would protect.

Each call reads the table anew, so a revoked token stops working at the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from twelvefold.runtime.store import StoreUrl, now_iso
from twelvefold.server.tables import Table

if TYPE_CHECKING:
    from twelvefold.runtime.pgstore import PostgresStore

PREFIX = "tf_"


@dataclass(frozen=True)
class TokenInfo:
    """A token as `token list` shows it (never the token itself)."""

    id: str
    person: str
    created_at: str
    revoked_at: str | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class TokenStore(Table):
    """The tokens table of the store at `place` (a SQLite file, made if missing; a store
    URL; an open PostgreSQL store). Safe to share between threads of one process."""

    def __init__(self, place: Path | str | StoreUrl | PostgresStore) -> None:
        super().__init__(place)
        self.place = place

    def create(self, person: str) -> str:
        """A new token for `person` (printable, 1-200 characters, no surrounding spaces):
        returned once, never stored. Raises ValueError for a name that is not one."""
        check_person(person)
        token_id = secrets.token_hex(4)
        token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        self._db.change(
            "INSERT INTO server_tokens (id, person, hash, created_at) VALUES (?, ?, ?, ?)",
            (token_id, person, _digest(token), now_iso()),
        )
        return token

    def identify(self, token: str) -> TokenInfo | None:
        """The live (not revoked) token `token` is, or None."""
        if not token.startswith(PREFIX) or len(token) > 200:
            return None
        token_id = token[len(PREFIX) :].partition("_")[0]
        rows = self._db.rows(
            "SELECT id, person, hash, created_at, revoked_at FROM server_tokens WHERE id = ?",
            (token_id,),
        )
        if not rows or rows[0][4] is not None:
            return None
        row = rows[0]
        if not hmac.compare_digest(str(row[2]), _digest(token)):
            return None
        return TokenInfo(row[0], row[1], row[3], row[4])

    def verify(self, token: str) -> str | None:
        """The person a live token stands for, or None."""
        found = self.identify(token)
        return None if found is None else found.person

    def list(self) -> list[TokenInfo]:
        """Every token ever created, oldest first."""
        rows = self._db.rows(
            "SELECT id, person, created_at, revoked_at FROM server_tokens ORDER BY created_at"
        )
        return [TokenInfo(*row) for row in rows]

    def revoke(self, token_id: str) -> bool:
        """Revoke the token with this id, or this token (`tf_...`, pasted whole: revoked
        only when it is that row's token); False when there is no such live one."""
        if token_id.startswith(PREFIX):
            found = self.identify(token_id)
            if found is None:
                return False
            token_id = found.id
        changed = self._db.change(
            "UPDATE server_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (now_iso(), token_id),
        )
        return bool(changed)


RESERVED_PREFIXES = ("schedule:",)
"""Names that begin so are the server's own: a schedule launches as `schedule:NAME`."""
RESERVED_NAMES = frozenset({"timeout"})
"""Names the runtime records as who decided: an approval's timeout rejects `by="timeout"`."""


def token_id_of(reference: str) -> str:
    """The id part of a token (`tf_<id>_<secret>`), or `reference` itself (an id): what
    may be shown of it (never the secret)."""
    if reference.startswith(PREFIX):
        return reference[len(PREFIX) :].partition("_")[0]
    return reference


def check_person(person: str) -> None:
    """A person's name as tokens and decisions record it. Raises ValueError."""
    if not (0 < len(person) <= 200) or not person.isprintable() or person != person.strip():
        raise ValueError("a person's name is 1-200 printable characters without surrounding spaces")
    if person in RESERVED_NAMES or person.startswith(RESERVED_PREFIXES):
        raise ValueError(
            f"`{person}` is reserved (the server records its schedules as `schedule:NAME` and"
            " an approval's timeout as `timeout`): choose another name"
        )


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
