"""Stores as an older twelvefold left them, for the tests of reading them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from twelvefold.runtime.integrity import Chain


def unpin_all(db: Path, thread_id: str | None = None) -> None:
    """Make the SQLite store's threads (or one) name no agent version, as threads written
    before versions existed do, with the head seal such a twelvefold wrote (it did not
    cover a version): what a legacy row looks like, not a tampered one."""
    chain = Chain.from_env()
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT num, id, seq, format, reducer FROM threads"
            + ("" if thread_id is None else " WHERE id = ?"),
            () if thread_id is None else (thread_id,),
        ).fetchall()
        for num, found, seq, format, reducer in rows:
            (last,) = connection.execute(
                "SELECT hash FROM events WHERE thread = ? AND seq = ?", (num, seq)
            ).fetchone()
            seal = chain.seal(found, seq, last, format, reducer)
            connection.execute(
                "UPDATE threads SET version = NULL, head_seal = ? WHERE num = ?", (seal, num)
            )
