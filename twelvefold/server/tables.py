"""The server's own tables (tokens, inbox sessions, launches and forks, reply targets,
schedule runs, Slack messages), in the thread store's database: the SQLite file, the
PostgreSQL database, or an in-memory SQLite database for a store without either.

Their schema is the store's (runtime/schema.py, migration 3 on): opening a SQLite file
upgrades it, a PostgreSQL store was checked when it was opened. The statements are
written once, in SQL both databases take (`?` placeholders, `INSERT ... ON CONFLICT`);
`Database` runs them on either.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twelvefold.runtime.integrity import Chain
from twelvefold.runtime.newstore import identity, make_store_file, opened_here
from twelvefold.runtime.schema import SchemaError, upgrade_sqlite
from twelvefold.runtime.store import (
    SqliteStore,
    StoreError,
    StoreMoved,
    StoreNotFound,
    StoreUrl,
    open_store,
    storable,
)

if TYPE_CHECKING:
    from twelvefold.runtime.pgstore import PostgresStore
    from twelvefold.runtime.store import EventStore


def place_of(store: EventStore) -> Path | PostgresStore | None:
    """Where the tables of a server over `store` go: beside its threads."""
    if isinstance(store, SqliteStore):
        return store.path
    if type(store).__name__ == "PostgresStore":
        return store  # type: ignore[return-value]
    return None


class Database:
    """SQL on the tables, the same text for SQLite and PostgreSQL, at a place: a SQLite
    file, a store URL, an open PostgreSQL store (whose connection pool it shares), or None
    (a private in-memory SQLite database).

    SQLite: one connection (busy timeout 10 s), calls serialised by a lock, each call its
    own transaction; as the thread store's (runtime/store.py `SqliteStore._checked`), a
    call finding that the path no longer names the file opened (removed, or a backup
    restored in its place) opens the thread store there now, or is `StoreMoved`, and a
    change is rolled back when the path changed before it committed. PostgreSQL: each call
    one transaction on a connection of the store's pool. A database that cannot be opened
    is `StoreError`, one line."""

    def __init__(self, place: Path | str | StoreUrl | PostgresStore | None) -> None:
        self._lock = threading.Lock()
        self._owned: PostgresStore | None = None
        self._pg: PostgresStore | None = None
        self._sqlite: sqlite3.Connection | None = None
        self._path: Path | None = None
        self._opened: tuple[tuple[int, int] | None, tuple[int, int] | None] = (None, None)
        """The device and inode of the SQLite file opened and of its -wal."""
        if isinstance(place, str | StoreUrl):
            opened = open_store(place)
            if isinstance(opened, SqliteStore):
                path: Path | None = opened.path
                opened.close()
                place = path
            else:
                self._owned = opened
                place = opened
        if place is None or isinstance(place, Path):
            if place is not None:
                make_store_file(place)  # so a refused command knows what it made
            self._path = place
            before = None if place is None else identity(place)
            self._sqlite = _open_sqlite(place)
            self._opened = (before, None if place is None else identity(_wal(place)))
        else:
            self._pg = place
        self.dialect = "sqlite" if self._sqlite is not None else "postgresql"

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """The rows a query returns."""
        if self._sqlite is not None:
            with self._lock:
                return self._connection().execute(sql, params).fetchall()
        assert self._pg is not None
        if not _storable(params):
            return []
        with self._pg._transaction() as conn:
            cursor = conn.execute(sql.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description is not None else []

    def change(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Run a statement; how many rows it changed."""
        if self._sqlite is not None:
            with self._lock:
                db = self._connection()
                db.execute("BEGIN IMMEDIATE")
                try:
                    changed = db.execute(sql, params).rowcount
                    self._still_there()
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
                return changed
        assert self._pg is not None
        if not _storable(params):
            return 0
        with self._pg._transaction() as conn:
            return conn.execute(sql.replace("?", "%s"), params).rowcount

    def _moved(self) -> str | None:
        """What the path names now when it is no longer the file opened (or its -wal the
        one written to), else None."""
        if self._path is None:
            return None
        db, wal = self._opened
        if identity(self._path) != db:
            return f"{self._path} was {'replaced' if _anything_at(self._path) else 'removed'}"
        if wal is not None and identity(_wal(self._path)) != wal:
            return f"the write-ahead log of {self._path} was removed"
        return None

    def _still_there(self) -> None:
        moved = self._moved()
        if moved is not None:
            raise StoreMoved(f"{moved} while the server had it open; nothing was written")

    def _connection(self) -> sqlite3.Connection:
        """The connection, to the file the path names now (see the class)."""
        assert self._sqlite is not None
        moved = self._moved()
        if self._path is None or moved is None:
            return self._sqlite
        self._sqlite.close()
        db, wal = self._opened
        try:
            if identity(self._path) != db and wal is not None and identity(_wal(self._path)) == wal:
                # SQLite would read the removed file's -wal as the new file's own.
                raise StoreError(
                    f"the removed file's write-ahead log ({_wal(self._path).name}) is still"
                    " beside it: remove it and its -shm"
                )
            # Its checks (no file, an empty one, another application's, a schema too
            # new): a thread store is opened, never a new one made.
            SqliteStore(self._path, create=False).close()
            before = identity(self._path)
            self._sqlite = _open_sqlite(self._path)
            self._opened = (before, identity(_wal(self._path)))
        except (StoreError, OSError) as exc:
            why = exc.found if isinstance(exc, StoreNotFound) else str(exc)
            raise StoreMoved(
                f"{moved} while the server had it open, and what is there now cannot be used"
                f" ({why}); nothing was written"
            ) from None
        return self._sqlite

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        if self._owned is not None:
            self._owned.close()


def _storable(params: tuple[Any, ...]) -> bool:
    """Whether PostgreSQL can hold every parameter (`storable`). A value it cannot hold is
    in no row, so a statement with one matches nothing; the server's inserts never carry
    one (names are printable, ids generated), and a lookup by a hostile id (a token's, a
    thread's from a URL) finds nothing rather than failing."""
    return all(storable(p) for p in params)


def _wal(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _anything_at(path: Path) -> bool:
    """Whether anything (a file, a folder) is at `path`."""
    return identity(path) is not None


def _open_sqlite(path: Path | None) -> sqlite3.Connection:
    # A path the system refuses (a name too long, a file where a folder should be) is the
    # `OSError` naming it, as the store's own opening leaves it (`cannot use PATH: why`).
    try:
        db = sqlite3.connect(
            ":memory:" if path is None else path, isolation_level=None, check_same_thread=False
        )
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a store SQLite can open: {exc}") from None
    if path is not None:
        opened_here(path, db)  # closed by a refused command before its check
    try:
        db.execute("PRAGMA busy_timeout = 10000")
        upgrade_sqlite(db, Chain.from_env(), str(path or ":memory:"))
    except SchemaError as exc:
        db.close()
        raise StoreError(str(exc)) from None
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
        db.close()
        raise StoreError(f"{path} is not a store SQLite can open: {exc}") from None
    return db


class Table:
    """A server table (its schema is the store's); `_db` runs the statements."""

    def __init__(self, place: Path | str | StoreUrl | PostgresStore | None) -> None:
        self._db = Database(place)

    def close(self) -> None:
        self._db.close()
