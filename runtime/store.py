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

Ownership (runtime/lease.py): a thread has at most one lease; `acquire`, `renew` and
`release` manage it on the store's clock, and `append(..., lease=)` is refused with
`LeaseLost` once that lease lapsed or was taken over (fencing). The SQLite store chains
every stored event to the one before it and seals the thread's row and its snapshot
(runtime/integrity.py), so a log edited outside twelvefold is refused, never believed.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic_core import from_json, to_json

from . import lease as leases
from .codec import Codec
from .commits import GroupCommit, Pending
from .integrity import EVENT_FORMAT, BrokenLog, Chain, UnreadableLog, runtime_version
from .lease import Lease, LeaseHeld, LeaseLost
from .types import KIND_OF_EVENT, Event, State, Status, Usage


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
    """How to load the agent again: a module name, or a file's path relative to the
    SQLite store's folder (absolute in older rows and in memory; runtime/loading.py)."""
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
    thread skips the replay. A cache, never the source of truth: a store returns it only
    when its seal proves it was computed at exactly the stored events (their chain head
    and count) by this runtime version and event format, and the loop uses it only when
    this very reducer made it; otherwise the log is replayed."""

    reducer: str
    """Fingerprint of the generated module whose `reduce` computed it."""
    seq: int
    state: dict[str, Any]
    """`Codec.encode_state` of the state."""


@dataclass(frozen=True, slots=True)
class Restored:
    """What loading a thread reads from the store (`EventStore.restore`)."""

    events: list[Event]
    """Every event, in order; in a chaining store, verified against the chain."""
    snapshot: Snapshot | None
    """A snapshot proven to be of exactly `events` (see `Snapshot`), or None."""
    reducer: str | None
    """The fingerprint of the reducer that last appended to the log (None: unknown)."""
    keyed: bool = False
    """Whether the snapshot's seal is keyed (TWELVEFOLD_LOG_KEY): without a key, anyone
    who can write the file can compute a seal, so the loop checks such a snapshot against
    the log before it lets a tool run (`Engine.advance`)."""


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
    def create(
        self,
        info: ThreadInfo,
        events: Sequence[Event],
        codec: Codec,
        *,
        reducer: str | None = None,
        owner: str | None = None,
        seconds: float | None = None,
    ) -> Lease | None:
        """Store a new thread with its first events (`info.seq == len(events)`), written by
        `reducer`; with an `owner`, under a new lease of `seconds` (returned)."""

    def append(
        self,
        thread_id: str,
        expected_seq: int,
        events: Sequence[Event],
        codec: Codec,
        head: Head,
        lease: Lease | None = None,
    ) -> None:
        """Add events atomically if the thread holds `expected_seq` events, else `Conflict`.

        Under a `lease`: refused with `LeaseLost` (nothing written) unless that lease is
        still the thread's and has not lapsed. Without one: refused with `LeaseHeld` while
        another process holds a live lease.
        """

    def load(self, thread_id: str, codec: Codec) -> list[Event]:
        """Every event of the thread, in order (`restore(...).events`)."""

    def restore(self, thread_id: str, codec: Codec) -> Restored:
        """The events (verified, in a chaining store: `BrokenLog` if they do not verify;
        `UnreadableLog` if one cannot be decoded), a snapshot proven to be of exactly
        them, and which reducer wrote the log."""

    def snapshot(self, thread_id: str) -> Snapshot | None:
        """The snapshot the last append left, if the store keeps one and its seal holds
        (`restore` also checks it against the events)."""

    def acquire(self, thread_id: str, owner: str, seconds: float) -> Lease:
        """A new lease for `seconds` (with a larger fencing token than any before) when
        the thread has none or it lapsed; else `LeaseHeld` naming holder and expiry."""

    def renew(self, lease: Lease, seconds: float) -> Lease:
        """Extend a lease that is still the thread's and live, else `LeaseLost`."""

    def release(self, lease: Lease) -> None:
        """Give the lease up if it is still the thread's (else nothing happens)."""

    def lease(self, thread_id: str) -> Lease | None:
        """The thread's live lease, if any."""

    def info(self, thread_id: str) -> ThreadInfo: ...

    def threads(self, status: Status | None = None) -> list[ThreadInfo]:
        """Threads, most recently updated first."""


_LARGEST_TOKEN = 2**63 - 2
"""SQLite's largest INTEGER less one: the next lease's token must still fit."""


def _check_lease_columns(thread_id: str, holder: object, token: object, until: object) -> None:
    """Refuse a row whose lease columns hold what twelvefold never writes (a hand edit).

    Raises StoreError (one line for the CLI) rather than a TypeError or OverflowError later.
    """
    if not (
        (holder is None or isinstance(holder, str))
        and type(token) is int
        and 0 <= token <= _LARGEST_TOKEN
        and (until is None or type(until) in (int, float))
    ):
        raise StoreError(
            f"thread {thread_id}'s lease columns are damaged (edited outside"
            " twelvefold); nothing was done. Restore the database from a backup"
        )


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
    short-lived processes; nothing survives the process (so nothing can edit the log
    behind it: it keeps no chain and no snapshot). Leases as in every store, on
    `time.time()`."""

    blocking = False

    def __init__(self) -> None:
        self._infos: dict[str, ThreadInfo] = {}
        self._heads: dict[str, tuple[Head, str]] = {}
        """The listing row's changing part, kept apart so an append costs a tuple."""
        self._events: dict[str, list[Event]] = {}
        self._reducers: dict[str, str | None] = {}
        self._leases: dict[str, tuple[str | None, int, float]] = {}
        """thread id -> (owner or None when released, fencing token, expiry)."""
        self._lock = threading.Lock()

    def create(
        self,
        info: ThreadInfo,
        events: Sequence[Event],
        codec: Codec,
        *,
        reducer: str | None = None,
        owner: str | None = None,
        seconds: float | None = None,
    ) -> Lease | None:
        with self._lock:
            if info.id in self._infos:
                raise Conflict(info.id, 0, len(self._events[info.id]))
            self._infos[info.id] = info
            self._events[info.id] = list(events)
            self._reducers[info.id] = reducer
            self._leases[info.id] = (None, 0, 0.0)
            if owner is None:
                return None
            return self._take(info.id, owner, seconds)

    def append(
        self,
        thread_id: str,
        expected_seq: int,
        events: Sequence[Event],
        codec: Codec,
        head: Head,
        lease: Lease | None = None,
    ) -> None:
        with self._lock:
            log = self._log(thread_id)
            self._fence(thread_id, lease)
            if len(log) != expected_seq:
                raise Conflict(thread_id, expected_seq, len(log))
            log.extend(events)
            self._heads[thread_id] = (head, (events[-1].at if events else None) or now_iso())
            self._reducers[thread_id] = head.reducer

    def load(self, thread_id: str, codec: Codec) -> list[Event]:
        with self._lock:
            return list(self._log(thread_id))

    def restore(self, thread_id: str, codec: Codec) -> Restored:
        with self._lock:
            return Restored(list(self._log(thread_id)), None, self._reducers[thread_id])

    def snapshot(self, thread_id: str) -> Snapshot | None:
        return None  # the events are kept as objects; replaying them is the cheap part

    def acquire(self, thread_id: str, owner: str, seconds: float) -> Lease:
        with self._lock:
            self._log(thread_id)
            holder, _, expires = self._leases[thread_id]
            if holder is not None and expires > leases.now():
                raise LeaseHeld(thread_id, holder, expires)
            return self._take(thread_id, owner, seconds)

    def renew(self, lease: Lease, seconds: float) -> Lease:
        with self._lock:
            self._fence(lease.thread_id, lease)
            expires = leases.now() + seconds
            self._leases[lease.thread_id] = (lease.owner, lease.token, expires)
            return leases.extended(lease, expires)

    def release(self, lease: Lease) -> None:
        with self._lock:
            holder, token, _ = self._leases.get(lease.thread_id, (None, 0, 0.0))
            if (holder, token) == (lease.owner, lease.token):
                self._leases[lease.thread_id] = (None, token, 0.0)

    def lease(self, thread_id: str) -> Lease | None:
        with self._lock:
            self._log(thread_id)
            holder, token, expires = self._leases[thread_id]
            if holder is None or expires <= leases.now():
                return None
            return Lease(thread_id, holder, token, expires)

    def info(self, thread_id: str) -> ThreadInfo:
        with self._lock:
            self._log(thread_id)
            return self._info(thread_id)

    def threads(self, status: Status | None = None) -> list[ThreadInfo]:
        with self._lock:
            infos = [self._info(thread_id) for thread_id in self._infos]
        found = [i for i in infos if status is None or i.status == status]
        return sorted(found, key=lambda i: i.updated_at, reverse=True)

    def usage_records(self) -> dict[str, list[UsageRecord]]:
        """Every thread's `(kind, at, usage)` per event, in order (runtime/usage.py)."""
        with self._lock:
            logs = {thread_id: list(log) for thread_id, log in self._events.items()}
        return {
            thread_id: [(KIND_OF_EVENT[type(e)], e.at, e.usage) for e in log]
            for thread_id, log in logs.items()
        }

    def _take(self, thread_id: str, owner: str, seconds: float | None) -> Lease:
        _, token, _ = self._leases[thread_id]
        expires = leases.now() + leases.lease_seconds(seconds)
        self._leases[thread_id] = (owner, token + 1, expires)
        return Lease(thread_id, owner, token + 1, expires)

    def _fence(self, thread_id: str, lease: Lease | None) -> None:
        holder, token, expires = self._leases[thread_id]
        check_lease(thread_id, lease, holder, token, expires, leases.now())

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


def check_lease(
    thread_id: str,
    lease: Lease | None,
    holder: str | None,
    token: int,
    expires: float | None,
    now: float,
) -> None:
    """Fencing, the same in every store: an append (or renewal) under `lease` only while
    it is the thread's live lease; one without a lease only while nobody holds one."""
    live = holder is not None and expires is not None and expires > now
    if lease is None:
        if live:
            assert holder is not None and expires is not None
            raise LeaseHeld(thread_id, holder, expires)
        return
    if holder != lease.owner or token != lease.token:
        why = f"taken over by {holder}" if holder is not None else "released"
        raise LeaseLost(thread_id, lease.owner, f"{why}; its token was {lease.token}")
    if not live:
        raise LeaseLost(thread_id, lease.owner, f"it lapsed at {leases.iso(expires or 0)}")


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

_ADDED_COLUMNS = (
    ("threads", "snapshot", "TEXT"),
    ("threads", "request", "TEXT"),  # the pending request's id while waiting, else NULL
    ("threads", "snapshot_seal", "BLOB"),  # Chain.seal over the thread id and the snapshot
    ("threads", "format", "INTEGER"),  # EVENT_FORMAT of the log
    ("threads", "reducer", "TEXT"),  # fingerprint of the reducer that last appended
    ("threads", "head_seal", "BLOB"),  # Chain.seal over id, seq, chain head, format, reducer
    ("threads", "lease_owner", "TEXT"),  # NULL: nobody holds the thread
    ("threads", "lease_token", "INTEGER NOT NULL DEFAULT 0"),  # the fencing token
    ("threads", "lease_until", "REAL"),  # unix seconds on SQLite's clock
    ("events", "hash", "BLOB"),  # hash_n = SHA-256(hash_{n-1} || body_n)
)
"""Columns added since the first release: files written before gain them when opened
(`_upgrade`)."""

SCHEMA_VERSION = 2
"""`PRAGMA user_version` of a file whose events are all chained (1 never existed)."""

_NOW = "((julianday('now') - 2440587.5) * 86400.0)"
"""The store's clock, in unix seconds: every lease decision is made with this one."""

_INFO_COLUMNS = "id, agent, origin, status, step, seq, created_at, updated_at, request"

_USAGE_QUERY = """
SELECT t.id,
       CASE WHEN json_valid(e.body) THEN json_extract(e.body, '$.kind') END,
       CASE WHEN json_valid(e.body) THEN json_extract(e.body, '$.at') END,
       CASE WHEN json_valid(e.body) THEN json_extract(e.body, '$.usage.latency_ms') END,
       CASE WHEN json_valid(e.body) THEN json_extract(e.body, '$.usage.input_tokens') END,
       CASE WHEN json_valid(e.body) THEN json_extract(e.body, '$.usage.output_tokens') END,
       CASE WHEN json_valid(e.body) THEN json_extract(e.body, '$.usage.cost_usd') END
FROM events e JOIN threads t ON t.num = e.thread
ORDER BY e.thread, e.seq
"""

UsageRecord = tuple[str, str | None, Usage | None]
"""One event as reports see it: its kind, when, and its usage."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class SqliteStore:
    """One SQLite file in WAL mode with `synchronous=FULL`: an append has reached the
    disk when `append` returns, and readers never block the writer.

    Safe to share between threads of one process (calls are serialized) and between
    processes (each append is one `BEGIN IMMEDIATE` transaction that checks the lease
    and the sequence number first). Appends that threads of one process make while
    another commits are committed together, in one transaction and one fsync, each
    judged on its own (group commit, runtime/commits.py). Open a new store in each
    process; do not carry one across `fork`. `chain` defaults to `Chain.from_env()`
    (TWELVEFOLD_LOG_KEY).
    """

    blocking = True

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_ms: int = 10_000,
        create: bool = True,
        chain: Chain | None = None,
    ) -> None:
        """Open the store at `path`; with `create=False` a missing file is `StoreNotFound`
        rather than a new empty store (only launching a thread should make one). A file
        SQLite cannot open as a database is `StoreError`. `chain` defaults to
        `Chain.from_env()` (TWELVEFOLD_LOG_KEY)."""
        self.path = Path(path)
        self.chain = chain if chain is not None else Chain.from_env()
        if not create and not self.path.is_file():
            raise StoreNotFound(self.path)
        if self.path.parent != Path(""):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is
        # exactly what the code shows.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self.commits = GroupCommit(self._commit_group)
        """Appends from several threads of this process share a transaction (group commit)."""
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.executescript(_SCHEMA)
            self._upgrade()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            # UnicodeDecodeError: SQLite's own message quoting the damaged bytes.
            self._db.close()
            raise StoreError(f"{self.path} is not a thread store SQLite can open: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(
        self,
        info: ThreadInfo,
        events: Sequence[Event],
        codec: Codec,
        *,
        reducer: str | None = None,
        owner: str | None = None,
        seconds: float | None = None,
    ) -> Lease | None:
        bodies = [codec.dumps_event(e) for e in events]
        hashes = self.chain.links(self.chain.genesis(info.id), bodies)
        head = hashes[-1] if hashes else self.chain.genesis(info.id)
        seal = self._head_seal(info.id, len(bodies), head, reducer)
        length = leases.lease_seconds(seconds) if owner is not None else 0.0
        with self._lock, self._transaction():
            try:
                cursor = self._db.execute(
                    f"INSERT INTO threads ({_INFO_COLUMNS}, format, reducer, head_seal,"
                    f" lease_owner, lease_token, lease_until) VALUES"
                    f" ({_INFO_PLACES}, ?, ?, ?, ?, ?, {_NOW} + ?)",
                    (*_info_row(info), EVENT_FORMAT, reducer, seal, owner, 1, length),
                )
            except sqlite3.IntegrityError:
                raise Conflict(info.id, 0, -1) from None
            num = cursor.lastrowid or 0
            self._insert_events(num, 0, bodies, hashes)
            if owner is None:
                return None
            (expires,) = self._db.execute(
                "SELECT lease_until FROM threads WHERE num = ?", (num,)
            ).fetchone()
        return Lease(info.id, owner, 1, float(expires))

    def append(
        self,
        thread_id: str,
        expected_seq: int,
        events: Sequence[Event],
        codec: Codec,
        head: Head,
        lease: Lease | None = None,
    ) -> None:
        def work() -> None:
            num, seq = self._position(thread_id)
            self._fence(num, thread_id, lease)
            if seq != expected_seq:
                raise Conflict(thread_id, expected_seq, seq)
            self._write(num, thread_id, seq, events, codec, head)

        self.commits.submit(work)

    def _commit_group(self, group: Sequence[Pending]) -> None:
        """One transaction for the appends of a group (runtime/commits.py): each checked
        and written under its own savepoint, so one refused (`Conflict`, `LeaseLost`, a
        broken log) leaves nothing of it and the others as they were; then one COMMIT,
        one fsync, for all of them."""
        with self._lock, self._transaction():
            if len(group) == 1:  # alone: its error rolls the transaction back (no savepoint)
                group[0].result = group[0].work()
                return
            for item in group:
                self._db.execute("SAVEPOINT one_append")
                try:
                    item.result = item.work()
                except Exception as exc:
                    item.error = exc
                    self._db.execute("ROLLBACK TO one_append")
                self._db.execute("RELEASE one_append")

    def load(self, thread_id: str, codec: Codec) -> list[Event]:
        return self.restore(thread_id, codec).events

    def restore(self, thread_id: str, codec: Codec) -> Restored:
        with self._lock, self._reading():
            row = self._db.execute(
                "SELECT num, seq, format, reducer, head_seal, snapshot, snapshot_seal"
                " FROM threads WHERE id = ?",
                (thread_id,),
            ).fetchone()
            if row is None:
                raise ThreadNotFound(thread_id)
            num, seq, format, reducer, head_seal, snapshot, snapshot_seal = row
            bodies = [
                body
                for (body,) in self._db.execute(
                    "SELECT body FROM events WHERE thread = ? ORDER BY seq", (num,)
                )
            ]
        if not isinstance(format, int | None) or not isinstance(seq, int):
            raise BrokenLog(thread_id, 0, "the thread's row is damaged")
        if format is not None and format > EVENT_FORMAT:
            raise UnreadableLog(
                thread_id,
                f"it was written in event format {format} by a newer twelvefold; this one "
                f"reads format {EVENT_FORMAT} (upgrade twelvefold to run it)",
            )
        # The chain recomputed over the bodies must end at the head the row is sealed
        # with: one comparison proves every event (the per-event hashes are read only to
        # name the first event that does not match).
        chain_head = self.chain.head(thread_id, bodies)
        if len(bodies) != seq or not self.chain.sealed(
            head_seal, thread_id, seq, chain_head, format, reducer
        ):
            raise self._broken(num, thread_id, bodies)
        events = _decode(thread_id, codec, bodies, reducer)
        proven = self._proven_snapshot(thread_id, snapshot, snapshot_seal, chain_head, seq)
        return Restored(events, proven, reducer, self.chain.keyed)

    def snapshot(self, thread_id: str) -> Snapshot | None:
        with self._lock:
            row = self._db.execute(
                "SELECT snapshot, snapshot_seal FROM threads WHERE id = ?", (thread_id,)
            ).fetchone()
        if row is None or row[0] is None or not self.chain.sealed(row[1], thread_id, row[0]):
            return None
        try:
            data = from_json(row[0])
            return Snapshot(str(data["reducer"]), int(data["seq"]), dict(data["state"]))
        except (ValueError, KeyError, TypeError):
            return None  # a damaged snapshot is only a lost shortcut: the log is replayed

    def acquire(self, thread_id: str, owner: str, seconds: float) -> Lease:
        length = leases.lease_seconds(seconds)
        with self._lock, self._transaction():
            row = self._db.execute(
                f"SELECT num, lease_owner, lease_token, lease_until, {_NOW} FROM threads"
                " WHERE id = ?",
                (thread_id,),
            ).fetchone()
            if row is None:
                raise ThreadNotFound(thread_id)
            num, holder, token, until, now = row
            _check_lease_columns(thread_id, holder, token, until)
            if holder is not None and until is not None and until > now:
                raise LeaseHeld(thread_id, holder, until)
            expires = now + length
            self._db.execute(
                "UPDATE threads SET lease_owner = ?, lease_token = ?, lease_until = ?"
                " WHERE num = ?",
                (owner, token + 1, expires, num),
            )
        return Lease(thread_id, owner, token + 1, expires)

    def renew(self, lease: Lease, seconds: float) -> Lease:
        with self._lock, self._transaction():
            num, _ = self._position(lease.thread_id)
            now = self._fence(num, lease.thread_id, lease)
            expires = now + seconds
            self._db.execute("UPDATE threads SET lease_until = ? WHERE num = ?", (expires, num))
        return leases.extended(lease, expires)

    def release(self, lease: Lease) -> None:
        with self._lock, self._transaction():
            self._db.execute(
                "UPDATE threads SET lease_owner = NULL, lease_until = NULL"
                " WHERE id = ? AND lease_owner = ? AND lease_token = ?",
                (lease.thread_id, lease.owner, lease.token),
            )

    def lease(self, thread_id: str) -> Lease | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT lease_owner, lease_token, lease_until, {_NOW} FROM threads WHERE id = ?",
                (thread_id,),
            ).fetchone()
        if row is None:
            raise ThreadNotFound(thread_id)
        holder, token, until, now = row
        _check_lease_columns(thread_id, holder, token, until)
        if holder is None or until is None or until <= now:
            return None
        return Lease(thread_id, holder, token, until)

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

    def usage_records(self) -> dict[str, list[UsageRecord]]:
        """Every thread's `(kind, at, usage)` per event, in order, read by SQLite from the
        stored JSON without decoding events (so without loading any agent): for reports
        (`twelvefold threads`, `stats`; runtime/usage.py). A row that is not JSON, or a
        usage field that is not a number, counts as absent; the log is not verified."""
        with self._lock:
            rows = self._db.execute(_USAGE_QUERY).fetchall()
        found: dict[str, list[UsageRecord]] = {}
        for thread_id, kind, at, latency, tokens_in, tokens_out, cost in rows:
            if not isinstance(kind, str):
                continue
            numbers = [v if _is_number(v) else None for v in (latency, tokens_in, tokens_out)]
            usage = Usage(
                numbers[0],
                tokens_in if isinstance(numbers[1], int) else None,
                tokens_out if isinstance(numbers[2], int) else None,
                cost if _is_number(cost) else None,
            )
            when = at if isinstance(at, str) else None
            found.setdefault(str(thread_id), []).append((kind, when, usage))
        return found

    # ---- helpers -----------------------------------------------------------------------

    def _upgrade(self) -> None:
        """Bring a file written by an earlier version up to `SCHEMA_VERSION`, once, in one
        transaction (a second process opening it meanwhile waits, then finds it done):
        the added columns, every stored event chained under this store's chain, and old
        snapshots dropped (they carry no seal: the next load replays)."""
        if self._db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        with self._lock, self._transaction():
            if self._db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                return
            for table, column, kind in _ADDED_COLUMNS:
                present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                if column not in present:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            threads = self._db.execute("SELECT num, id FROM threads").fetchall()
            for num, thread_id in threads:
                rows = self._db.execute(
                    "SELECT seq, body FROM events WHERE thread = ? ORDER BY seq", (num,)
                ).fetchall()
                hashes = self.chain.links(self.chain.genesis(thread_id), [b for _, b in rows])
                self._db.executemany(
                    "UPDATE events SET hash = ? WHERE thread = ? AND seq = ?",
                    [(h, num, seq) for (seq, _), h in zip(rows, hashes, strict=True)],
                )
                head = hashes[-1] if hashes else self.chain.genesis(thread_id)
                self._db.execute(
                    "UPDATE threads SET seq = ?, format = ?, head_seal = ?, snapshot = NULL"
                    " WHERE num = ?",
                    (
                        len(rows),
                        EVENT_FORMAT,
                        self._head_seal(thread_id, len(rows), head, None),
                        num,
                    ),
                )
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _write(
        self,
        num: int,
        thread_id: str,
        seq: int,
        events: Sequence[Event],
        codec: Codec,
        head: Head,
    ) -> None:
        """Inside an append's transaction, once its checks passed: the events chained
        after the stored ones, and the row (listing, seals, snapshot) after them."""
        bodies = [codec.dumps_event(e) for e in events]
        at = events[-1].at if events and events[-1].at else now_iso()
        previous = self._head(num, thread_id, seq)
        hashes = self.chain.links(previous, bodies)
        self._insert_events(num, seq, bodies, hashes)
        new_seq = seq + len(bodies)
        chain_head = hashes[-1] if hashes else previous
        snapshot, snapshot_seal = self._sealed_snapshot(thread_id, chain_head, head, codec)
        self._db.execute(
            "UPDATE threads SET status = ?, step = ?, seq = ?, updated_at = ?, snapshot = ?,"
            " snapshot_seal = ?, request = ?, format = ?, reducer = ?, head_seal = ?"
            " WHERE num = ?",
            (
                head.status,
                head.step,
                new_seq,
                at,
                snapshot,
                snapshot_seal,
                head.request,
                EVENT_FORMAT,
                head.reducer,
                self._head_seal(thread_id, new_seq, chain_head, head.reducer),
                num,
            ),
        )

    def _broken(self, num: int, thread_id: str, bodies: Sequence[str]) -> BrokenLog:
        """Why a log does not verify: the first event that does not match its stored hash
        (`Chain.verify` raises it), else the row that does not match its events."""
        with self._lock:
            hashes = [
                digest
                for (digest,) in self._db.execute(
                    "SELECT hash FROM events WHERE thread = ? ORDER BY seq", (num,)
                )
            ]
        try:
            self.chain.verify(thread_id, zip(bodies, hashes, strict=False))
        except BrokenLog as exc:
            return exc
        return BrokenLog(
            thread_id, len(bodies), "the thread's row does not match its events (cut or edited)"
        )

    def _position(self, thread_id: str) -> tuple[int, int]:
        row = self._db.execute("SELECT num, seq FROM threads WHERE id = ?", (thread_id,)).fetchone()
        if row is None:
            raise ThreadNotFound(thread_id)
        return int(row[0]), int(row[1])

    def _fence(self, num: int, thread_id: str, lease: Lease | None) -> float:
        """`check_lease` on this file's row; the store's clock now."""
        holder, token, until, now = self._db.execute(
            f"SELECT lease_owner, lease_token, lease_until, {_NOW} FROM threads WHERE num = ?",
            (num,),
        ).fetchone()
        _check_lease_columns(thread_id, holder, token, until)
        check_lease(thread_id, lease, holder, token, until, now)
        return float(now)

    def _head(self, num: int, thread_id: str, seq: int) -> bytes:
        """The hash of the thread's last stored event (hash_0 before the first)."""
        if seq == 0:
            return self.chain.genesis(thread_id)
        row = self._db.execute(
            "SELECT hash FROM events WHERE thread = ? AND seq = ?", (num, seq)
        ).fetchone()
        if row is None or not isinstance(row[0], bytes):
            raise BrokenLog(thread_id, seq, "the last event has no hash")
        return row[0]

    def _head_seal(self, thread_id: str, seq: int, head: bytes, reducer: str | None) -> bytes:
        return self.chain.seal(thread_id, seq, head, EVENT_FORMAT, reducer)

    def _sealed_snapshot(
        self, thread_id: str, chain_head: bytes, head: Head, codec: Codec
    ) -> tuple[str | None, bytes | None]:
        """The snapshot column and its seal: the state after the append, at the chain
        head it was computed at, by this reducer, runtime version and event format."""
        if head.state is None or head.reducer is None:
            return None, None
        data = {
            "reducer": head.reducer,
            "seq": head.state.seq,
            "head": chain_head.hex(),
            "runtime": runtime_version(),
            "format": EVENT_FORMAT,
            "state": codec.encode_state(head.state),
        }
        text = to_json(data, inf_nan_mode="constants").decode()
        return text, self.chain.seal(thread_id, text)

    def _proven_snapshot(
        self,
        thread_id: str,
        text: str | None,
        seal: bytes | None,
        chain_head: bytes,
        seq: int,
    ) -> Snapshot | None:
        """The snapshot, if its seal holds and it names exactly this chain head and
        count, this runtime and this event format; else None (the loop replays)."""
        if text is None or not self.chain.sealed(seal, thread_id, text):
            return None
        try:
            data = from_json(text)
        except ValueError:  # sealed, yet not JSON: a forged seal (no key); replay instead
            return None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("state"), dict)
            or not isinstance(data.get("reducer"), str)
            or data.get("head") != chain_head.hex()
            or data.get("seq") != seq
            or data.get("runtime") != runtime_version()
            or data.get("format") != EVENT_FORMAT
        ):
            return None
        return Snapshot(data["reducer"], data["seq"], data["state"])

    def _insert_events(
        self, num: int, after_seq: int, bodies: Sequence[str], hashes: Sequence[bytes]
    ) -> None:
        self._db.executemany(
            "INSERT INTO events (thread, seq, body, hash) VALUES (?, ?, ?, ?)",
            [
                (num, after_seq + i, body, digest)
                for i, (body, digest) in enumerate(zip(bodies, hashes, strict=True), start=1)
            ],
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """One read transaction: the thread's row and its events from the same moment."""
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("COMMIT")


def _decode(
    thread_id: str, codec: Codec, bodies: Sequence[str], reducer: str | None
) -> list[Event]:
    loads = codec.loads_event
    try:
        return [loads(body) for body in bodies]
    except Exception as exc:  # a type the agent no longer declares, a field it dropped
        seq = next(i for i, body in enumerate(bodies, start=1) if not _decodes(codec, body))
        raise UnreadableLog(
            thread_id,
            f"event {seq} does not fit the agent as it is now ({_brief(exc)})",
            reducer,
        ) from None


def _decodes(codec: Codec, body: str) -> bool:
    try:
        codec.loads_event(body)
    except Exception:
        return False
    return True


def _brief(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:199] + "…"


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


SQLITE_SCHEME = "sqlite:///"


def store_file(url: str) -> Path:
    """The SQLite file a store URL names, as SQLAlchemy spells it: `sqlite:///rel/t.db`
    is relative to the current folder, `sqlite:////abs/t.db` (four slashes) absolute.
    A bare path (no `scheme://`) is a file path, as `--db` takes it.

    Raises `StoreError` (one line) for another scheme: `postgresql://` arrives with the
    scale-out work, and anything else is not a store twelvefold knows."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        if not url:
            raise StoreError("a store URL is sqlite:///PATH (relative) or sqlite:////PATH")
        return Path(url)
    if scheme.lower() in ("postgresql", "postgres") or scheme.lower().startswith("postgresql+"):
        raise StoreError(
            "PostgreSQL stores arrive with the scale-out work; use sqlite:///PATH for now"
        )
    if scheme.lower() != "sqlite" or not rest.startswith("/"):
        shown = url if url.isprintable() else ascii(url)[1:-1]
        raise StoreError(
            f"not a store URL twelvefold knows: {shown} (use sqlite:///relative/threads.db "
            "or sqlite:////absolute/threads.db)"
        )
    path = rest[1:].partition("?")[0]
    if not path:
        raise StoreError("a sqlite:/// store URL names a file: sqlite:///PATH")
    return Path(path)


def open_store(url: str, *, create: bool = True) -> SqliteStore:
    """The store a URL names (`store_file`), opened as `SqliteStore(path, create=create)`."""
    return SqliteStore(store_file(url), create=create)
