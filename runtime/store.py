"""Where threads live: an append-only event log per thread, behind a small interface.

Every store keeps the same promise: `append(thread_id, expected_seq, events, ...)` adds
the events atomically, and only if the thread holds exactly `expected_seq` events;
otherwise it raises `Conflict` and adds nothing. That single check is what makes two
resumes of one thread safe (optimistic concurrency): whoever appends second learns that
the thread moved on and must reload. A PostgreSQL store implements the same six
methods with `SELECT ... FOR UPDATE` on the thread row, or a unique (thread, seq) key.

Stores also keep a small row per thread (agent, status, step, times) so that listing
threads never replays a log; the SQLite store keeps in it a snapshot of the state the
log replays to, so that resuming a thread need not replay it either (a cache: `Snapshot`).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic_core import from_json, to_json

from .codec import Codec, CodecError
from .types import Event, State, Status


class Conflict(Exception):
    """The thread moved on since it was loaded: another process appended first."""

    def __init__(self, thread_id: str, expected_seq: int, actual_seq: int) -> None:
        super().__init__(
            f"thread {thread_id} changed while this process worked on it: expected "
            f"{expected_seq} events, found {actual_seq} (another process resumed it first; "
            "reload it and try again)"
        )
        self.thread_id = thread_id
        self.expected_seq = expected_seq
        self.actual_seq = actual_seq


class StoreError(Exception):
    """The thread store cannot be used as it is: missing, not a database, or holding data
    twelvefold did not write. The message is one line for a person."""


class StoreNotFound(StoreError):
    def __init__(self, path: Path) -> None:
        super().__init__(
            f"no thread store at {path} (`twelvefold run` creates one; check --db or TWELVEFOLD_DB)"
        )
        self.path = path


class ThreadNotFound(LookupError):
    def __init__(self, thread_id: str) -> None:
        super().__init__(f"no thread {thread_id!r} in this store")
        self.thread_id = thread_id


@dataclass(frozen=True, slots=True)
class ThreadInfo:
    """A thread as a listing shows it; updated with every append."""

    id: str
    agent: str
    """The agent's name."""
    origin: str
    """How to load the agent again: a `.agent` file's path or a module name."""
    status: Status
    step: str
    seq: int
    """How many events the thread holds."""
    created_at: str
    updated_at: str
    request: str | None = None
    """The pending request's id while the thread waits (`State.request`)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state a thread's log replays to, kept beside the log so that resuming a
    thread skips the replay. A cache, never the source of truth: the loop uses it only
    when it was computed by the same reducer (`Agent.reducer`) from exactly the events
    the thread holds (`seq`), and replays the log otherwise."""

    reducer: str
    """Fingerprint of the generated module whose `reduce` computed it."""
    seq: int
    state: dict[str, Any]
    """`Codec.encode_state` of the state."""


@dataclass(frozen=True, slots=True)
class Head:
    """What an append changes in the thread's listing row: the state after the events."""

    status: Status
    step: str
    state: State | None = None
    """The whole state, for a store that keeps a `Snapshot` (SQLite encodes it)."""
    reducer: str | None = None
    """Which reducer computed `state` (`Agent.reducer`); without one, no snapshot."""
    request: str | None = None
    """The pending request after the events (`State.request`), for listings."""


class EventStore(Protocol):
    def create(self, info: ThreadInfo, events: Sequence[Event], codec: Codec) -> None:
        """Store a new thread with its first events (`info.seq == len(events)`)."""

    def append(
        self,
        thread_id: str,
        expected_seq: int,
        events: Sequence[Event],
        codec: Codec,
        head: Head,
    ) -> None:
        """Add events atomically if the thread holds `expected_seq` events, else `Conflict`."""

    def load(self, thread_id: str, codec: Codec) -> list[Event]:
        """Every event of the thread, in order."""

    def snapshot(self, thread_id: str) -> Snapshot | None:
        """The snapshot the last append left, if the store keeps one (check it before
        trusting it: `Snapshot`)."""

    def info(self, thread_id: str) -> ThreadInfo: ...

    def threads(self, status: Status | None = None) -> list[ThreadInfo]:
        """Threads, most recently updated first."""


def now_iso() -> str:
    """The current time as events store it: `2025-06-01T09:12:03.125000Z` (UTC, µs).

    Every event takes one, so the date and time of day are formatted once per second
    and only the microseconds on each call (a fifth of what `datetime.isoformat` costs).
    """
    global _this_second
    seconds, micros = divmod(time.time_ns() // 1000, 1_000_000)
    second, prefix = _this_second  # one read: threads may replace it meanwhile
    if second != seconds:
        prefix = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _this_second = (seconds, prefix)
    return f"{prefix}{micros:06d}Z"


_this_second: tuple[int, str] = (-1, "")


# ---- in memory -------------------------------------------------------------------------


class MemoryStore:
    """Threads in a dict, events kept as the immutable objects they are. For tests and
    short-lived processes; nothing survives the process."""

    blocking = False

    def __init__(self) -> None:
        self._infos: dict[str, ThreadInfo] = {}
        self._heads: dict[str, tuple[Head, str]] = {}
        """The listing row's changing part, kept apart so an append costs a tuple."""
        self._events: dict[str, list[Event]] = {}
        self._lock = threading.Lock()

    def create(self, info: ThreadInfo, events: Sequence[Event], codec: Codec) -> None:
        with self._lock:
            if info.id in self._infos:
                raise Conflict(info.id, 0, len(self._events[info.id]))
            self._infos[info.id] = info
            self._events[info.id] = list(events)

    def append(
        self,
        thread_id: str,
        expected_seq: int,
        events: Sequence[Event],
        codec: Codec,
        head: Head,
    ) -> None:
        with self._lock:
            log = self._log(thread_id)
            if len(log) != expected_seq:
                raise Conflict(thread_id, expected_seq, len(log))
            log.extend(events)
            self._heads[thread_id] = (head, (events[-1].at if events else None) or now_iso())

    def load(self, thread_id: str, codec: Codec) -> list[Event]:
        with self._lock:
            return list(self._log(thread_id))

    def snapshot(self, thread_id: str) -> Snapshot | None:
        return None  # the events are kept as objects; replaying them is the cheap part

    def info(self, thread_id: str) -> ThreadInfo:
        with self._lock:
            self._log(thread_id)
            return self._info(thread_id)

    def threads(self, status: Status | None = None) -> list[ThreadInfo]:
        with self._lock:
            infos = [self._info(thread_id) for thread_id in self._infos]
        found = [i for i in infos if status is None or i.status == status]
        return sorted(found, key=lambda i: i.updated_at, reverse=True)

    def _info(self, thread_id: str) -> ThreadInfo:
        info = self._infos[thread_id]
        seq = len(self._events[thread_id])
        if thread_id not in self._heads:
            return replace(info, seq=seq)
        head, at = self._heads[thread_id]
        return replace(
            info,
            status=head.status,
            step=head.step,
            seq=seq,
            updated_at=at,
            request=head.request,
        )

    def _log(self, thread_id: str) -> list[Event]:
        log = self._events.get(thread_id)
        if log is None:
            raise ThreadNotFound(thread_id)
        return log


# ---- SQLite ------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS threads (
    num        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    agent      TEXT NOT NULL,
    origin     TEXT NOT NULL,
    status     TEXT NOT NULL,
    step       TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    snapshot   TEXT, -- JSON of a Snapshot of the state after the last append, or NULL
    request    TEXT  -- the pending request's id while waiting, else NULL
);
-- One row per event; `thread` is threads.num, so a long thread id is not repeated.
CREATE TABLE IF NOT EXISTS events (
    thread INTEGER NOT NULL,
    seq    INTEGER NOT NULL,
    body   TEXT NOT NULL,
    PRIMARY KEY (thread, seq)
) WITHOUT ROWID;
"""

_INFO_COLUMNS = "id, agent, origin, status, step, seq, created_at, updated_at, request"
_LATER_COLUMNS = {"snapshot": "TEXT", "request": "TEXT"}
"""Columns added after the first release: older files get them (NULL) when opened."""


class SqliteStore:
    """One SQLite file in WAL mode with `synchronous=FULL`: an append has reached the
    disk when `append` returns, and readers never block the writer.

    Safe to share between threads of one process (calls are serialized) and between
    processes (each append is one `BEGIN IMMEDIATE` transaction that checks the
    sequence number first). Open a new store in each process; do not carry one across
    `fork`.
    """

    blocking = True

    def __init__(
        self, path: str | Path, *, busy_timeout_ms: int = 10_000, create: bool = True
    ) -> None:
        """Open the store at `path`; with `create=False` a missing file is `StoreNotFound`
        rather than a new empty store (only launching a thread should make one). A file
        SQLite cannot open as a database is `StoreError`."""
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise StoreNotFound(self.path)
        if self.path.parent != Path(""):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is
        # exactly what the code shows.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.executescript(_SCHEMA)
            self._add_later_columns()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            # UnicodeDecodeError: SQLite's own message quoting the damaged bytes.
            self._db.close()
            raise StoreError(f"{self.path} is not a thread store SQLite can open: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(self, info: ThreadInfo, events: Sequence[Event], codec: Codec) -> None:
        bodies = [codec.dumps_event(e) for e in events]
        with self._lock, self._transaction():
            try:
                cursor = self._db.execute(
                    f"INSERT INTO threads ({_INFO_COLUMNS}) VALUES ({_INFO_PLACES})",
                    _info_row(info),
                )
            except sqlite3.IntegrityError:
                raise Conflict(info.id, 0, -1) from None
            self._insert_events(cursor.lastrowid or 0, 0, bodies)

    def append(
        self,
        thread_id: str,
        expected_seq: int,
        events: Sequence[Event],
        codec: Codec,
        head: Head,
    ) -> None:
        bodies = [codec.dumps_event(e) for e in events]
        at = events[-1].at if events and events[-1].at else now_iso()
        snapshot = _dumps_snapshot(head, codec)
        with self._lock, self._transaction():
            num, seq = self._position(thread_id)
            if seq != expected_seq:
                raise Conflict(thread_id, expected_seq, seq)
            self._insert_events(num, seq, bodies)
            self._db.execute(
                "UPDATE threads SET status = ?, step = ?, seq = ?, updated_at = ?, snapshot = ?,"
                " request = ? WHERE num = ?",
                (head.status, head.step, seq + len(bodies), at, snapshot, head.request, num),
            )

    def load(self, thread_id: str, codec: Codec) -> list[Event]:
        with self._lock:
            num, _ = self._position(thread_id)
            rows = self._db.execute(
                "SELECT body FROM events WHERE thread = ? ORDER BY seq", (num,)
            ).fetchall()
        events = []
        for seq, (body,) in enumerate(rows, start=1):
            try:
                events.append(codec.loads_event(body))
            except CodecError as exc:
                raise StoreError(
                    f"thread {thread_id}: event {seq} in {self.path} cannot be read ({exc}); "
                    "the log was changed outside twelvefold"
                ) from exc
        return events

    def snapshot(self, thread_id: str) -> Snapshot | None:
        with self._lock:
            row = self._db.execute(
                "SELECT snapshot FROM threads WHERE id = ?", (thread_id,)
            ).fetchone()
        if row is None or row[0] is None:
            return None
        try:
            data = from_json(row[0])
            return Snapshot(str(data["reducer"]), int(data["seq"]), dict(data["state"]))
        except (ValueError, KeyError, TypeError):
            return None  # a damaged snapshot is only a lost shortcut: the log is replayed

    def info(self, thread_id: str) -> ThreadInfo:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_INFO_COLUMNS} FROM threads WHERE id = ?", (thread_id,)
            ).fetchone()
        if row is None:
            raise ThreadNotFound(thread_id)
        return _thread_info(row, self.path)

    def threads(self, status: Status | None = None) -> list[ThreadInfo]:
        query = f"SELECT {_INFO_COLUMNS} FROM threads"
        params: tuple[str, ...] = ()
        if status is not None:
            query, params = query + " WHERE status = ?", (status,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY updated_at DESC", params).fetchall()
        return [_thread_info(row, self.path) for row in rows]

    # ---- helpers -----------------------------------------------------------------------

    def _add_later_columns(self) -> None:
        """Files written before a column existed get it (NULL: no snapshot, so replay;
        no request listed until the next append)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(threads)")}
        for name, kind in _LATER_COLUMNS.items():
            if name not in columns:
                with contextlib.suppress(sqlite3.OperationalError):  # another process did it
                    self._db.execute(f"ALTER TABLE threads ADD COLUMN {name} {kind}")

    def _position(self, thread_id: str) -> tuple[int, int]:
        row = self._db.execute("SELECT num, seq FROM threads WHERE id = ?", (thread_id,)).fetchone()
        if row is None:
            raise ThreadNotFound(thread_id)
        return int(row[0]), int(row[1])

    def _insert_events(self, num: int, after_seq: int, bodies: Sequence[str]) -> None:
        self._db.executemany(
            "INSERT INTO events (thread, seq, body) VALUES (?, ?, ?)",
            [(num, after_seq + i, body) for i, body in enumerate(bodies, start=1)],
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


def _dumps_snapshot(head: Head, codec: Codec) -> str | None:
    """The snapshot column: the state after the append, or NULL (the loop replays)."""
    if head.state is None or head.reducer is None:
        return None
    state = codec.encode_state(head.state)
    data = {"reducer": head.reducer, "seq": head.state.seq, "state": state}
    return to_json(data, inf_nan_mode="constants").decode()


_INFO_PLACES = ", ".join("?" for _ in _INFO_COLUMNS.split(", "))


def _thread_info(row: Sequence[Any], path: Path) -> ThreadInfo:
    """A `threads` row as a `ThreadInfo`, or `StoreError` when a damaged file holds a value
    of the wrong kind (a NULL name, a text count) that would fail far from here."""
    info = ThreadInfo(*row)
    texts = [info.id, info.agent, info.origin, info.status, info.step]
    texts += [info.created_at, info.updated_at]
    if (
        not all(isinstance(v, str) for v in texts)
        or not isinstance(info.seq, int)
        or not isinstance(info.request, str | None)
    ):
        raise StoreError(f"{path} holds a damaged thread row ({info.id!r}); it cannot be listed")
    return info


def _info_row(info: ThreadInfo) -> tuple[str | int | None, ...]:
    return tuple(getattr(info, name) for name in _INFO_COLUMNS.split(", "))


class _Transaction:
    """`BEGIN IMMEDIATE` ... `COMMIT`, or `ROLLBACK` on any exception.

    IMMEDIATE takes the write lock before the sequence check, so no other process can
    append between the check and the insert.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            self._db.execute("COMMIT")
            return
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error as rollback_failed:
            # A full disk can fail the ROLLBACK too (SQLite has then rolled back itself).
            # The error that stopped the transaction is what the caller must see; the
            # failed ROLLBACK is told beside it, not instead of it.
            exc.add_note(f"ROLLBACK failed as well: {rollback_failed}")
