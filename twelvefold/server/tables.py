"""The server's own tables, in the thread store's SQLite file (an in-memory database for
a store without a file): each lane keeps its table(s) there, created if missing."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path


class Table:
    """One connection to the store's file with `schema` (a `CREATE TABLE IF NOT EXISTS`)
    applied; `_lock` serialises the calls of the event loop and of worker threads."""

    def __init__(self, path: Path | None, schema: str) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            ":memory:" if path is None else path, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA busy_timeout = 10000")
        self._db.execute(schema)

    def close(self) -> None:
        self._db.close()
