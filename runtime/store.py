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

import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic_core import from_json, to_json

from . import lease as leases
from .codec import Codec
from .integrity import (
    EVENT_FORMAT,
    BrokenLog,
    Chain,
    UnreadableLog,
    framed,
    runtime_version,
    text_bodies,
)
from .lease import Lease, LeaseHeld, LeaseLost
from .newstore import file_there, identity, make_store_file, opened_here
from .records import builder, record
from .terminal import one_line
from .types import KIND_OF_EVENT, ChildStarted, Event, Forked, Started, State, Status, Usage

if TYPE_CHECKING:
    import sqlite3

    from .commits import Pending
    from .pgstore import PostgresStore
    from .schema import Upgrade


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
    def __init__(self, path: Path, *, empty: bool = False) -> None:
        """No store at `path`: no file there, or (`empty`) a file with nothing in it yet,
        which a command that only reads leaves as it is."""
        where = one_line(str(path))
        self.found = (
            f"{where} is an empty file, not a thread store yet"
            if empty
            else (f"no thread store at {where}")
        )
        super().__init__(f"{self.found} (`twelvefold run` creates one)")
        self.path = path

    def checking(self, names: str) -> str:
        """The message with what to check, as the command line named the store
        (`check --store and TWELVEFOLD_STORE`: twelvefold/commands/options.py)."""
        return f"{self.found} (`twelvefold run` creates one; {names})"


class StoreMoved(StoreError):
    """The path of an open SQLite store no longer names the file it opened: the file (or
    its `-wal`) was removed, or another file or a folder was put in its place, as when an
    operator restores a backup under a running server. Nothing of the refused call was
    written (its transaction was rolled back before it committed); once the path names a
    thread store again, the store opens that one and goes on (`SqliteStore._checked`)."""


class ThreadNotFound(LookupError):
    def __init__(self, thread_id: str) -> None:
        super().__init__(f"no thread {thread_id!r} in this store")
        self.thread_id = thread_id


@record(slots=True)
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
    version: str | None = None
    """The digest of the agent version the thread is pinned to (runtime/versions.py);
    None for a thread of a generated module, or written before versions existed."""


DAMAGED_ROWS_HELP = 'see "Damaged thread rows" in docs/stores.md'
"""Where a person reads what to do about a damaged `threads` row (`DamagedRow`)."""


@record(slots=True)
class DamagedRow:
    """A `threads` row that cannot be read: a column holds a value of a kind twelvefold
    never writes there (a BLOB or a NULL in a text column, text in a count), left by an
    edit outside twelvefold or a damaged page. Listings leave it out and name it
    (`damaged_threads`); reading the thread itself is a `StoreError` saying the same."""

    id: str
    """The row's id (as Python writes it, quoted, when it is not text)."""
    problem: str
    """What is wrong, column by column: `agent is a BLOB, not text`."""

    @property
    def said(self) -> str:
        """One line for a listing: which row, what is wrong, where to read what to do."""
        return f"damaged thread row {self.id} ({self.problem}), not listed: {DAMAGED_ROWS_HELP}"


@record(slots=True)
class Pin:
    """A thread moved to another agent version by `twelvefold migrate` (its history)."""

    seq: int
    """How many events the thread held when it moved: events after it ran on `to`."""
    from_version: str | None
    to_version: str
    at: str
    by: str | None


@record(slots=True)
class Exported:
    """A thread as an archive keeps it: its row, its version and its events as stored."""

    info: ThreadInfo
    events: list[str]
    """Each event's JSON, as stored (no agent is needed to read it)."""
    pins: list[Pin]


@record(slots=True)
class Snapshot:
    """The state a thread's log replays to, kept beside the log so that resuming a
    thread skips the replay. A cache, never the source of truth: a store returns it only
    when its seal proves it was computed at exactly the first `seq` stored events (their
    chain head and count) by this runtime version and event format, and the loop uses it
    only when this very reducer made it, reducing the events after it; otherwise the log
    is replayed. A running thread's is rewritten every `SNAPSHOT_EVERY` events; a thread
    that is not running has one of its whole log."""

    reducer: str
    """Fingerprint of the generated module whose `reduce` computed it."""
    seq: int
    state: dict[str, Any]
    """`Codec.encode_state` of the state."""


@record(slots=True)
class Restored:
    """What loading a thread reads from the store (`EventStore.restore`)."""

    events: list[Event]
    """Every event, in order; in a chaining store, verified against the chain."""
    snapshot: Snapshot | None
    """A snapshot proven to be of exactly the first `snapshot.seq` of `events` (see
    `Snapshot`; the loop reduces the events after it), or None."""
    reducer: str | None
    """The fingerprint of the reducer that last appended to the log (None: unknown)."""
    keyed: bool = False
    """Whether the snapshot's seal is keyed (TWELVEFOLD_LOG_KEY): without a key, anyone
    who can write the file can compute a seal, so the loop checks such a snapshot against
    the log before it lets a tool run (`Engine.advance`)."""


@record(slots=True)
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


build_head = builder(Head)
"""`Head(...)` as a plain function: every append of the loop makes one (runtime/records.py)."""


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
        `UnreadableLog` if one cannot be decoded), a snapshot proven to be of the first
        `snapshot.seq` of them (all of them once the thread stopped running), and which
        reducer wrote the log."""

    def snapshot(self, thread_id: str) -> Snapshot | None:
        """The snapshot the row holds, if the store keeps one and its seal holds: of the
        log's first `Snapshot.seq` events (`SNAPSHOT_EVERY`; `restore` also checks it
        against the events)."""

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

    def threads(self, status: Status | None = None, *, unleased: bool = False) -> list[ThreadInfo]:
        """Threads, most recently updated first; with `unleased`, only those nobody
        holds a live lease on (on the store's clock: a worker's sweep). A damaged row
        (`DamagedRow`) is left out: it hides no other thread."""

    # ---- versions and retention (docs/versions.md) --------------------------------------

    def save_version(self, digest: str, body: str) -> None:
        """Keep an agent version's sources (`AgentVersion.to_json`) under its digest; a
        digest already stored is left as it is (content-addressed)."""

    def load_version(self, digest: str) -> str | None:
        """The stored body of version `digest` (unverified: `AgentVersion.from_stored`
        checks it), None when it is not stored."""

    def repin(
        self,
        thread_id: str,
        expected_seq: int,
        version: str,
        lease: Lease,
        *,
        at: str,
        by: str | None = None,
    ) -> None:
        """Pin the thread to `version` (a stored version), recording a `Pin` in its history;
        only under the thread's live `lease` (`LeaseLost`) and only if it still holds
        `expected_seq` events (`Conflict`)."""

    def pins(self, thread_id: str) -> list[Pin]:
        """The thread's moves between versions, oldest first."""

    def export(self, thread_id: str) -> Exported:
        """The thread's row, events as stored, and pins (for an archive)."""

    def delete(self, thread_id: str, expected_seq: int, statuses: Sequence[Status]) -> bool:
        """Delete the thread (its row, events and pins) if it still holds `expected_seq`
        events, its status is one of `statuses` and nobody holds its lease; whether it did.
        A store that keeps its log outside the process also proves, in the same
        transaction, that the log ended in such a status (`ChainedStore._ended_by_log`):
        the status column alone is not sealed."""

    def unused_versions(self, dropping: Sequence[str] = ()) -> list[str]:
        """Stored versions no thread names, counting the threads `dropping` as gone."""

    def delete_versions(self, digests: Sequence[str]) -> int:
        """Delete those of `digests` that no thread names now; how many went."""


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

    Every event takes one, so the text up to the millisecond is formatted once per
    millisecond (the date and time of day once per second) and each call adds only its
    last three digits, read from a table (about half of formatting the microseconds).
    """
    global _this_milli
    micros = time.time_ns() // 1000
    milli, prefix = _this_milli  # one read: threads may replace it meanwhile
    within = micros - milli  # µs since the millisecond `prefix` names began
    if not 0 <= within < 1000:
        milli = micros - micros % 1000
        prefix = _to_the_milli(milli)
        _this_milli = (milli, prefix)
        within = micros - milli
    return prefix + _LAST_DIGITS[within]


def _to_the_milli(milli: int) -> str:
    """The text of the millisecond that begins `milli` µs after the epoch, up to its
    last digit: `2025-06-01T09:12:03.125`."""
    global _this_second
    second, prefix = _this_second
    if not 0 <= milli - second < 1_000_000:
        second = milli - milli % 1_000_000
        prefix = datetime.fromtimestamp(second // 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _this_second = (second, prefix)
    return prefix + _LAST_DIGITS[(milli - second) // 1000][:3]


_LAST_DIGITS = tuple(f"{n:03d}Z" for n in range(1000))
"""`000Z` to `999Z`: a stamp's last three digits (µs within its millisecond) and its Z."""
_this_second: tuple[int, str] = (-(10**18), "")
"""(the second `now_iso` last formatted, in µs since the epoch; its text up to the µs)"""
_this_milli: tuple[int, str] = (-(10**18), "")
"""(the millisecond `now_iso` last formatted, in µs since the epoch; its text up to it)"""


# ---- in memory -------------------------------------------------------------------------


class MemoryStore:
    """Threads in a dict, events kept as the immutable objects they are. For tests and
    short-lived processes; nothing survives the process (so nothing can edit the log
    behind it: it keeps no chain and no snapshot). Leases as in every store, on
    `time.time()`."""

    blocking = False

    def __init__(self) -> None:
        self._infos: dict[str, ThreadInfo] = {}
        self._heads: dict[str, tuple[Head | State, str]] = {}
        """The listing row's changing part (status, step, request: a `Head`, or the state
        itself from `append_one`), kept apart so an append costs a tuple."""
        self._events: dict[str, list[Event]] = {}
        self._reducers: dict[str, str | None] = {}
        self._leases: dict[str, tuple[str | None, int, float]] = {}
        """thread id -> (owner or None when released, fencing token, expiry)."""
        self._lock = threading.Lock()
        self._versions: dict[str, str] = {}
        self._pins: dict[str, list[Pin]] = {}
        self._codecs: dict[str, Codec] = {}
        """The codec each thread was last written with (to export its events as JSON)."""

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
            self._codecs[info.id] = codec
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
            log = self._events.get(thread_id)  # `_log` and `_fence`, inlined: every step
            if log is None:
                raise ThreadNotFound(thread_id)
            holder, token, expires = self._leases[thread_id]
            check_lease(thread_id, lease, holder, token, expires, time.time())  # leases.now()
            if len(log) != expected_seq:
                raise Conflict(thread_id, expected_seq, len(log))
            log.extend(events)
            self._heads[thread_id] = (head, (events[-1].at if events else None) or now_iso())
            self._reducers[thread_id] = head.reducer
            self._codecs[thread_id] = codec

    def append_one(
        self,
        thread_id: str,
        expected_seq: int,
        event: Event,
        codec: Codec,
        state: State,
        reducer: str | None,
        lease: Lease,
    ) -> None:
        """`append` of one event under `lease`, as the loop's synchronous path records a
        step (runtime/fastpath.py): the listing row is `state`, the state after it (it
        has the fields a `Head` would copy), and no `Head` is built. Refused exactly as
        `append` refuses (`ThreadNotFound`, `LeaseLost`, `Conflict`), nothing written."""
        lock = self._lock
        lock.acquire()  # (not `with`: half the cost, and every step appends)
        try:
            log = self._events.get(thread_id)
            if log is None:
                raise ThreadNotFound(thread_id)
            holder, token, expires = self._leases[thread_id]
            now = time.time()  # leases.now()
            if holder != lease.owner or token != lease.token or not expires > now:
                check_lease(thread_id, lease, holder, token, expires, now)
            if len(log) != expected_seq:
                raise Conflict(thread_id, expected_seq, len(log))
            log.append(event)
            self._heads[thread_id] = (state, event.at or now_iso())
            self._reducers[thread_id] = reducer
            self._codecs[thread_id] = codec
        finally:
            lock.release()

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

    def threads(self, status: Status | None = None, *, unleased: bool = False) -> list[ThreadInfo]:
        with self._lock:
            infos = [self._info(thread_id) for thread_id in self._infos]
            now = leases.now()
            held = {
                thread_id
                for thread_id, (holder, _, expires) in self._leases.items()
                if unleased and holder is not None and expires > now
            }
        found = [i for i in infos if (status is None or i.status == status) and i.id not in held]
        return sorted(found, key=lambda i: i.updated_at, reverse=True)

    def damaged_threads(self) -> list[DamagedRow]:
        return []  # its rows are Python objects only this store writes

    def save_version(self, digest: str, body: str) -> None:
        with self._lock:
            self._versions.setdefault(digest, body)

    def load_version(self, digest: str) -> str | None:
        with self._lock:
            return self._versions.get(digest)

    def repin(
        self,
        thread_id: str,
        expected_seq: int,
        version: str,
        lease: Lease,
        *,
        at: str,
        by: str | None = None,
    ) -> None:
        with self._lock:
            log = self._log(thread_id)
            self._fence(thread_id, lease)
            if len(log) != expected_seq:
                raise Conflict(thread_id, expected_seq, len(log))
            if version not in self._versions:
                raise StoreError(f"agent version {version[:16]} is not in this store")
            info = self._infos[thread_id]
            pin = Pin(len(log), info.version, version, at, by)
            self._pins.setdefault(thread_id, []).append(pin)
            self._infos[thread_id] = replace(info, version=version)

    def pins(self, thread_id: str) -> list[Pin]:
        with self._lock:
            self._log(thread_id)
            return list(self._pins.get(thread_id, ()))

    def export(self, thread_id: str) -> Exported:
        with self._lock:
            log = list(self._log(thread_id))
            codec = self._codecs[thread_id]
            info = self._info(thread_id)
            pins = list(self._pins.get(thread_id, ()))
        return Exported(info, [codec.dumps_event(event) for event in log], pins)

    def delete(self, thread_id: str, expected_seq: int, statuses: Sequence[Status]) -> bool:
        with self._lock:
            log = self._events.get(thread_id)
            if log is None or len(log) != expected_seq:
                return False
            holder, _, expires = self._leases[thread_id]
            if self._info(thread_id).status not in statuses or (
                holder is not None and expires > leases.now()
            ):
                return False
            for table in (self._infos, self._heads, self._events, self._reducers, self._leases):
                table.pop(thread_id, None)
            self._pins.pop(thread_id, None)
            self._codecs.pop(thread_id, None)
            return True

    def unused_versions(self, dropping: Sequence[str] = ()) -> list[str]:
        with self._lock:
            gone = set(dropping)
            named = {i.version for t, i in self._infos.items() if t not in gone}
            return sorted(d for d in self._versions if d not in named)

    def delete_versions(self, digests: Sequence[str]) -> int:
        unused = set(self.unused_versions())
        with self._lock:
            going = [d for d in digests if d in unused and d in self._versions]
            for digest in going:
                del self._versions[digest]
            return len(going)

    def usage_records(self) -> dict[str, list[UsageRecord]]:
        """Every thread's `(kind, at, usage)` per event, in order (runtime/usage.py)."""
        with self._lock:
            logs = {thread_id: list(log) for thread_id, log in self._events.items()}
        return {
            thread_id: [(KIND_OF_EVENT[type(e)], e.at, e.usage) for e in log]
            for thread_id, log in logs.items()
        }

    def child_links(self) -> dict[str, list[str]]:
        """Each parent's sub-agent threads, by the links both logs make (`joined_links`)."""
        with self._lock:
            logs = {thread_id: list(log) for thread_id, log in self._events.items()}
        rows = [
            (thread_id, "started", None, e.parent, None)
            if isinstance(e, Started)
            else (thread_id, "child_started", e.child, None, None)
            for thread_id, log in logs.items()
            for e in log
            if isinstance(e, Started | ChildStarted)
        ]
        return joined_links(rows)

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

_NOW = "((julianday('now') - 2440587.5) * 86400.0)"
"""The store's clock, in unix seconds: every lease decision is made with this one."""

_INFO_COLUMNS = "id, agent, origin, status, step, seq, created_at, updated_at, request, version"

_USAGE_QUERY = """
SELECT t.id,
       CASE WHEN json_valid(e.body) THEN json_extract(e.body, '$.kind') END,
       CASE WHEN json_valid(e.body) THEN json_extract(e.body, '$.at') END,
       CASE WHEN json_valid(e.body) THEN json_extract(e.body, '$.usage.latency_ms') END,
       CASE WHEN json_valid(e.body) THEN json_extract(e.body, '$.usage.input_tokens') END,
       CASE WHEN json_valid(e.body) THEN json_extract(e.body, '$.usage.output_tokens') END,
       CASE WHEN json_valid(e.body) THEN json_extract(e.body, '$.usage.cost_usd') END,
       CASE WHEN json_valid(e.body) THEN NULL ELSE e.body END
FROM events e JOIN threads t ON t.num = e.thread
ORDER BY e.thread, e.seq
"""

UsageRecord = tuple[str, str | None, Usage | None]
"""One event as reports see it: its kind, when, and its usage."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def usage_by_thread(rows: Iterable[Sequence[Any]]) -> dict[str, list[UsageRecord]]:
    """`usage_records` from (thread id, kind, at, latency, input tokens, output tokens,
    cost, body) rows as a store reads them out of the stored JSON, in order; `body` is
    the event's text when the database's JSON functions could not read it (else None),
    read here instead (`_usage_fields`). A row whose kind is not text is skipped, a
    field of the wrong type counts as absent, and so does a token count that is not a
    `valid_tokens` (runtime/usage.py)."""
    from .usage import valid_tokens  # here: only reports load the price tables' module

    found: dict[str, list[UsageRecord]] = {}
    for thread_id, *fields, body in rows:
        kind, at, latency, tokens_in, tokens_out, cost = (
            fields if body is None else _usage_fields(body)
        )
        if not isinstance(kind, str):
            continue
        numbers = [v if _is_number(v) else None for v in (latency, tokens_in, tokens_out)]
        usage = Usage(
            numbers[0],
            tokens_in if valid_tokens(tokens_in) else None,  # the same on every store:
            tokens_out if valid_tokens(tokens_out) else None,  # SQLite reads 10**400 as a float
            cost if _is_number(cost) else None,
        )
        when = at if isinstance(at, str) else None
        found.setdefault(str(thread_id), []).append((kind, when, usage))
    return found


_NO_USAGE = (None,) * 6


def _read_body(body: str) -> dict[str, Any]:
    """An event's stored text that a database's JSON functions refuse, read by Python's:
    the codec writes a float NaN or infinity (in a tool's result, a model's output, an
    input) as the constants `NaN` and `Infinity`, which JSON has not (SQLite's and
    PostgreSQL's readers refuse the whole text), so that event still counts in the
    reports. `{}` for anything else it cannot read (an edited row): no event."""
    import json  # here: only reports read it, and the runtime's import stays lean

    try:
        event = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return event if isinstance(event, dict) else {}


def _usage_fields(body: str) -> Sequence[Any]:
    """(kind, at, latency, input tokens, output tokens, cost) of an event's stored text
    that the database could not read (`_read_body`)."""
    event = _read_body(body)
    if not event:
        return _NO_USAGE
    usage = event.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    return (
        event.get("kind"),
        event.get("at"),
        *(usage.get(name) for name in ("latency_ms", "input_tokens", "output_tokens", "cost_usd")),
    )


_LINKS_QUERY = """
SELECT t.id,
       CASE WHEN json_valid(e.body) THEN json_extract(e.body, '$.kind') END,
       CASE WHEN json_valid(e.body) THEN json_extract(e.body, '$.child') END,
       CASE WHEN json_valid(e.body) THEN json_extract(e.body, '$.parent') END,
       CASE WHEN json_valid(e.body) THEN NULL ELSE e.body END
FROM events e JOIN threads t ON t.num = e.thread
WHERE CASE WHEN json_valid(e.body)
           THEN json_extract(e.body, '$.kind') IN ('started', 'child_started')
           ELSE 1 END
ORDER BY e.thread, e.seq
"""


def joined_links(rows: Iterable[Sequence[Any]]) -> dict[str, list[str]]:
    """Each parent's child threads, in the order it started them, from (thread id, kind,
    child, parent, body) rows of its `started` and `child_started` events (`body`: the
    text of one the database could not read, read here; `_read_body`). A link counts only
    when both logs make it: the parent's `child_started` names the child and the child's
    `started` names the parent (a fork's log also holds the links of the thread it came
    from; an id's shape proves nothing: anyone may launch a thread named `a~b`)."""
    named: dict[str, list[str]] = {}
    parent_of: dict[str, str] = {}
    for thread_id, kind, child, parent, body in rows:
        if body is not None:
            event = _read_body(body)
            kind, child, parent = event.get("kind"), event.get("child"), event.get("parent")
        if kind == "child_started" and isinstance(child, str):
            found = named.setdefault(str(thread_id), [])
            if child not in found:
                found.append(child)
        elif kind == "started" and isinstance(parent, str):
            parent_of.setdefault(str(thread_id), parent)
    return {
        parent: kept
        for parent, children in named.items()
        if (kept := [c for c in children if parent_of.get(c) == parent])
    }


_ROW_AFTER_APPEND = (
    "status = ?, step = ?, seq = ?, updated_at = ?, snapshot = COALESCE(?, snapshot),"
    " snapshot_seal = COALESCE(?, snapshot_seal), request = ?, format = ?, reducer = ?,"
    " head_seal = ?"
)
"""The thread row's columns an append sets (`ChainedStore._appended` gives the values).
An append that writes no snapshot (None) keeps the one before: sealed at its own chain
head, it stays proven for the events up to it (`SNAPSHOT_EVERY`)."""

SNAPSHOT_EVERY = 64
"""A running thread's snapshot is written when its log crosses a multiple of this many
events, and at every append after which the thread is not running (it waits, finished,
failed, was cancelled): where it stops, its snapshot is of its whole log. In between, the
snapshot of an earlier point stays, and loading a thread replays the events after it
(at most this many, through the reducer: microseconds each). Encoding and sealing the
state at every append was a fifth of the Python of a durable event."""

_UPDATE_AFTER_APPEND = f"UPDATE threads SET {_ROW_AFTER_APPEND} WHERE num = ?"
_UPDATE_KEEPING_STATUS = _UPDATE_AFTER_APPEND.replace("status = ?, ", "", 1)
"""SQLite: the same, for an append that leaves the status as it was (see `_append`)."""
_APPEND_READ = (
    "SELECT t.num, t.seq, t.status, t.version, t.lease_owner, t.lease_token, t.lease_until,"
    f" {_NOW}, e.hash FROM threads t LEFT JOIN events e ON e.thread = t.num AND e.seq = t.seq"
    " WHERE t.id = ?"
)
"""SQLite: what an append checks, and the hash of the thread's last event."""
_INSERT_EVENT = "INSERT INTO events (thread, seq, body, hash) VALUES (?, ?, ?, ?)"
_UPDATE_IF_UNCHANGED = (
    f"{_UPDATE_KEEPING_STATUS} AND id = ? AND seq = ? AND status = ? AND version IS ?"
    " AND lease_owner = ? AND lease_token = ? AND typeof(lease_token) = 'integer'"
    f" AND typeof(lease_until) IN ('integer', 'real') AND lease_until > {_NOW}"
)
"""SQLite: `_UPDATE_KEEPING_STATUS` only if the row is as this process left it (`_Tail`)
and the lease is live, in one statement: what `_APPEND_READ` and the checks after it
decide, for an append that passes them (any other is judged by those)."""


class ChainedStore:
    """What the stores that keep their log outside the process (SQLite, PostgreSQL) share:
    the hash chain over each thread's events and the seals of its row and snapshot
    (runtime/integrity.py). A subclass gives `_stored_hashes`."""

    chain: Chain

    def _stored_hashes(self, num: int) -> list[bytes | None]:
        raise NotImplementedError

    def _verified(
        self, thread_id: str, num: int, row: Sequence[Any], stored: list[object], codec: Codec
    ) -> Restored:
        """The events of a thread's row `(seq, format, reducer, head_seal, snapshot,
        snapshot_seal, version)` and its stored bodies, once the chain proves them
        (`BrokenLog` if not, or if a column holds a type twelvefold never writes there;
        `UnreadableLog` for a newer event format or an event that does not decode), with
        the snapshot if it is proven for exactly them."""
        seq, format, reducer, head_seal, snapshot, snapshot_seal, version = row
        if (
            not isinstance(format, int | None)
            or not isinstance(seq, int)
            or not isinstance(reducer, str | None)
        ):
            raise BrokenLog(thread_id, 0, "the thread's row is damaged")
        bodies = text_bodies(thread_id, stored)
        if format is not None and format > EVENT_FORMAT:
            raise UnreadableLog(
                thread_id,
                f"it was written in event format {format} by a newer twelvefold; this one "
                f"reads format {EVENT_FORMAT} (upgrade twelvefold to run it)",
            )
        # The chain recomputed over the bodies must end at the head the row is sealed
        # with: one comparison proves every event (the per-event hashes are read only to
        # name the first event that does not match). On the way, the chain's head where
        # the snapshot says it was taken, which its seal must name.
        at = self._snapshot_at(thread_id, snapshot, snapshot_seal, len(bodies))
        middle = self.chain.head(thread_id, bodies[:at])
        chain_head = self.chain.extend(middle, bodies[at:]) if at < len(bodies) else middle
        if not isinstance(version, str | None) or (
            len(bodies) != seq
            or not self._seal_holds(
                head_seal, _sealed_fields(thread_id, seq, chain_head, format, reducer, version)
            )
        ):
            raise self._broken(num, thread_id, bodies)
        events = _decode(thread_id, codec, bodies, reducer)
        proven = self._proven_snapshot(thread_id, snapshot, snapshot_seal, middle, at)
        return Restored(events, proven, reducer, self.chain.keyed)

    def _snapshot_at(self, thread_id: str, text: object, seal: object, count: int) -> int:
        """How many events the snapshot claims to be of, when its seal holds and the claim
        is a count between 1 and `count`; else `count` (then no snapshot is proven unless
        it is of the whole log). `_proven_snapshot` proves the claim."""
        if not isinstance(text, str) or not self.chain.sealed(seal, thread_id, text):
            return count
        try:
            claimed = from_json(text).get("seq")
        except (ValueError, AttributeError):
            return count
        valid = isinstance(claimed, int) and not isinstance(claimed, bool)
        return claimed if valid and 0 < claimed <= count else count

    def _ended_by_log(
        self, thread_id: str, row: Sequence[Any], bodies: list[str], statuses: Sequence[Status]
    ) -> bool:
        """Whether a thread's row `(seq, format, reducer, head_seal, snapshot,
        snapshot_seal, version)` and its stored bodies prove that it ended in one of
        `statuses` (`delete`, for `prune`): the chain over the bodies verifies against the
        row's head seal, and the state after exactly those events, as the runtime sealed
        it with the last append (the snapshot), has such a status. Else, a log whose last
        event is `cancelled` (which always ends a thread) when "cancelled" is asked for.

        The `status` column is not sealed: a thread whose column says `failed` but whose
        log does not is not taken for ended (an UPDATE by hand, or a bug, would otherwise
        have it deleted). A thread of a store from before sealed snapshots that ended
        other than by `cancelled` is not proven, so kept."""
        seq, format, reducer, head_seal, snapshot, snapshot_seal, version = row
        if not isinstance(seq, int) or len(bodies) != seq or not bodies:
            return False
        if not all(isinstance(body, str) for body in bodies) or not isinstance(reducer, str | None):
            return False  # a column of a type twelvefold never writes: not proven
        chain_head = self.chain.head(thread_id, bodies)
        if not isinstance(version, str | None) or not self._seal_holds(
            head_seal, _sealed_fields(thread_id, seq, chain_head, format, reducer, version)
        ):
            return False
        if isinstance(snapshot, str) and self.chain.sealed(snapshot_seal, thread_id, snapshot):
            try:
                data = from_json(snapshot)
                state = data["state"]
                if data["head"] == chain_head.hex() and data["seq"] == seq:
                    return isinstance(state, dict) and state.get("status") in statuses
            except (ValueError, KeyError, TypeError):
                pass
        try:
            last = from_json(bodies[-1])
        except ValueError:
            return False
        ended_by_cancel = isinstance(last, dict) and last.get("kind") == "cancelled"
        return "cancelled" in statuses and ended_by_cancel

    @staticmethod
    def _forked_from(bodies: Sequence[str]) -> str | None:
        """The thread a thread's stored log says it was forked from (its last `forked`
        event's parent), None for a thread that is no fork: `delete` keeps it in
        `server_forks`, so that the four-eyes rule still finds, through a deleted fork,
        whoever launched the threads before it (twelvefold/server/service.py)."""
        kind = f'"{KIND_OF_EVENT[Forked]}"'
        for body in reversed(bodies):
            if kind not in body:  # most events: no need to decode them
                continue
            try:
                data = from_json(body)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("kind") == KIND_OF_EVENT[Forked]:
                parent = data.get("parent")
                return parent if isinstance(parent, str) else None
        return None

    def _unsealed_snapshot(self, thread_id: str, text: object, seal: object) -> Snapshot | None:
        """The snapshot column's content if its seal holds, else None."""
        if not isinstance(text, str) or not self.chain.sealed(seal, thread_id, text):
            return None
        try:
            data = from_json(text)
            return Snapshot(str(data["reducer"]), int(data["seq"]), dict(data["state"]))
        except (ValueError, KeyError, TypeError):
            return None  # a damaged snapshot is only a lost shortcut: the log is replayed

    def _broken(self, num: int, thread_id: str, bodies: Sequence[str]) -> BrokenLog:
        """Why a log does not verify: the first event that does not match its stored hash
        (`Chain.verify` raises it), else the row that does not match its events."""
        hashes = self._stored_hashes(num)
        try:
            self.chain.verify(thread_id, zip(bodies, hashes, strict=False))
        except BrokenLog as exc:
            return exc
        return BrokenLog(
            thread_id, len(bodies), "the thread's row does not match its events (cut or edited)"
        )

    def _seal_holds(self, head_seal: object, fields: tuple[str | int | bytes | None, ...]) -> bool:
        """Whether a thread row's head seal covers `fields` (`_sealed_fields`).

        A row sealed before the seal covered the version (stores written by twelvefold
        builds of November 2026: the first five fields alone) still holds with the seal it
        has: its version is trusted as those builds trusted it until the thread's next
        append seals it anew, version included. A row sealed since cannot be passed off as
        one of those: a seal over six fields never verifies as one over five."""
        return self.chain.sealed(head_seal, *fields) or self.chain.sealed(head_seal, *fields[:-1])

    def _head_seal(
        self,
        thread_id: str,
        seq: int,
        head: bytes,
        reducer: str | None,
        version: str | None,
        format: int | None = EVENT_FORMAT,
    ) -> bytes:
        """`Chain.seal` of `_sealed_fields`, with the framing of the fields an append does
        not change (the thread, its format, reducer and version) kept between appends."""
        before, after = _framed_ends(thread_id, format, reducer, version)
        return self.chain.seal_framed(before + framed(seq, head) + after)

    def _resealed(
        self,
        thread_id: str,
        row: Sequence[Any],
        last_hash: object,
        version: str,
    ) -> bytes:
        """The head seal of a thread's row `(seq, format, reducer, head_seal, version)`
        once it is pinned to `version` (`repin`), after checking that its seal holds for
        the version it had (`BrokenLog` if not: a tampered row is not sealed anew)."""
        seq, format, reducer, head_seal, before = row
        head = self.chain.genesis(thread_id) if seq == 0 else last_hash
        if not isinstance(head, bytes) or not self._seal_holds(
            head_seal, _sealed_fields(thread_id, seq, head, format, reducer, before)
        ):
            raise BrokenLog(thread_id, seq, "the thread's row does not match its events")
        return self._head_seal(thread_id, seq, head, reducer, version, format)

    def _first_links(
        self,
        thread_id: str,
        events: Sequence[Event],
        codec: Codec,
        reducer: str | None,
        version: str | None,
    ) -> tuple[list[str], list[bytes], bytes]:
        """A new thread's stored bodies, their chain, and its row's head seal."""
        bodies = [codec.dumps_event(e) for e in events]
        hashes = self.chain.links(self.chain.genesis(thread_id), bodies)
        head = hashes[-1] if hashes else self.chain.genesis(thread_id)
        return bodies, hashes, self._head_seal(thread_id, len(bodies), head, reducer, version)

    def _appended(
        self,
        thread_id: str,
        seq: int,
        previous: bytes,
        events: Sequence[Event],
        codec: Codec,
        head: Head,
        version: str | None,
    ) -> tuple[list[str], list[bytes], tuple[Any, ...]]:
        """For an append after `seq` events whose last hash is `previous`, to a thread
        pinned to `version`: the bodies, their hashes, and the thread row's values after
        them, in `_ROW_AFTER_APPEND`'s order (the snapshot's None when `SNAPSHOT_EVERY`
        says this append writes none)."""
        bodies = [codec.dumps_event(e) for e in events]
        at = events[-1].at if events and events[-1].at else now_iso()
        hashes = self.chain.links(previous, bodies)
        new_seq = seq + len(bodies)
        chain_head = hashes[-1] if hashes else previous
        snapshot = snapshot_seal = None  # the row keeps the snapshot it has
        if head.status != "running" or seq // SNAPSHOT_EVERY != new_seq // SNAPSHOT_EVERY:
            snapshot, snapshot_seal = self._sealed_snapshot(thread_id, chain_head, head, codec)
        seal = self._head_seal(thread_id, new_seq, chain_head, head.reducer, version)
        row = (head.status, head.step, new_seq, at, snapshot, snapshot_seal, head.request)
        return bodies, hashes, (*row, EVENT_FORMAT, head.reducer, seal)

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
        count (of the log's first `seq` events: `_snapshot_at`), this runtime and this
        event format; else None (the loop replays)."""
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


MAX_TAILS = 10_000
"""How many threads' `_Tail`s a `SqliteStore` keeps at most (a running thread's each)."""


class _Tail:
    """A thread's row as this process's last append left it (`SqliteStore._append`):
    its `num`, event count `seq`, `last` (the hash of event `seq`: where the chain goes
    on), `version` and `status`. Mutable: each append moves it on."""

    __slots__ = ("last", "num", "seq", "status", "version")

    def __init__(self, num: int, seq: int, last: bytes, version: str | None, status: str) -> None:
        self.num, self.seq, self.last, self.version, self.status = num, seq, last, version, status


OPEN_ATTEMPTS = 5
"""How many times `SqliteStore` opens a file that is removed or replaced as it opens it."""


READ_CHECK_SECONDS = 1.0
"""How often at most a `SqliteStore` that only reads checks that its path still names the
file it opened (every write transaction checks before it commits)."""


def _logger() -> Any:
    import logging  # here: most commands never need it

    return logging.getLogger("twelvefold.store")


def _file_id(name: str) -> tuple[int, int] | None:
    """`identity` of a path given as a string (half the time of a `Path`'s)."""
    try:
        found = os.stat(name)
    except OSError:
        return None
    return (found.st_dev, found.st_ino)


def _wal_of(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _same_file(before: tuple[int, int] | None, path: Path) -> bool:
    """Whether the file at `path` is still the one found there before it was opened."""
    return before is not None and identity(path) == before


class SqliteStore(ChainedStore):
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
        # Here, not at the top: a memory or PostgreSQL store never needs it (nor sqlite3).
        from .commits import GroupCommit

        self._lock = threading.Lock()
        self.commits = GroupCommit(self._commit_group)
        """Appends from several threads of this process share a transaction (group commit)."""
        self._tails: dict[str, _Tail] = {}
        """Each thread's row as this process's last append left it (`_append`); only a
        shortcut, dropped whenever a transaction fails."""
        self._busy_timeout_ms = busy_timeout_ms
        self._opened: tuple[tuple[int, int] | None, tuple[int, int] | None] = (None, None)
        """The device and inode of the file opened and of its `-wal` (`_place_moved`)."""
        self._moved: str | None = None
        """Why the path no longer names the file opened, once found (`_checked`)."""
        self._read_checked = time.monotonic()
        self._names = (os.fspath(self.path), os.fspath(self.path) + "-wal")
        """The path and its -wal's, as `os.stat` takes them fastest."""
        self._connected = False
        self._open(create)

    def _open(self, create: bool) -> None:
        """Connect to the file at the path (`__init__`'s checks: the schema, WAL mode),
        and note which file it is (`_opened`)."""
        import sqlite3

        for _ in range(OPEN_ATTEMPTS):
            if not file_there(self.path) and not create:
                raise StoreNotFound(self.path)
            if create:
                # Made here rather than by SQLite, so a refused command knows what it made.
                make_store_file(self.path)
            before = identity(self.path)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is
            # exactly what the code shows.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            opened_here(self.path, self._db)  # closed by a refused command before its check
            try:
                prepared = self._prepared(self._busy_timeout_ms, before, create)
            except BaseException:
                # Ctrl-C as it opens too: a connection left to the traceback would keep
                # the file open, and a refused `run` keeps a file another holds open.
                self._db.close()
                raise
            if prepared:
                # The -wal is there once the connection is in WAL mode and has read.
                self._opened = (before, _file_id(self._names[1]))
                self._connected = True
                return
        raise StoreError(
            f"{self.path} was removed or replaced each of the {OPEN_ATTEMPTS} times it was"
            " opened; nothing was written to it"
        )

    def _place_moved(self) -> str | None:
        """What stands at the path now when it is no longer the file this store opened
        (or its `-wal` is no longer the one it writes to); None when both still are. Two
        `os.stat`s: a microsecond or two against an fsync's hundreds."""
        db, wal = self._opened
        now = _file_id(self._names[0])
        if now != db:
            if now is None:
                return f"{self.path} was removed"
            kind = "a folder" if self.path.is_dir() else "another file"
            return f"{self.path} was replaced by {kind}"
        if wal is not None and _file_id(self._names[1]) != wal:
            return f"the write-ahead log of {self.path} ({_wal_of(self.path).name}) was removed"
        return None

    def _checked(self) -> None:
        """Under the lock, before a transaction: go on with the file opened while the path
        still names it (one `os.stat`; the -wal is looked at before each COMMIT,
        `_still_there`, which alone looks before a group's appends commit). Otherwise
        open what the path names now, when it is a thread store (a backup restored in
        its place: the same checks as when the store was made, without making a new
        empty file), dropping what this process remembered of the old file (`_tails`);
        or raise `StoreMoved`, writing nothing, while it is none."""
        if self._moved is None:
            if _file_id(self._names[0]) == self._opened[0]:
                return
            self._moved = self._place_moved() or f"{self.path} was replaced"
        if self._connected:
            self._let_go()
        self._tails.clear()
        self._refuse_old_wal()
        try:
            self._open(create=False)
        except (StoreError, OSError) as exc:
            raise StoreMoved(self._refusal(exc)) from None
        _logger().warning("thread store: %s; opened the thread store now there", self._moved)
        self._moved = None

    def _refuse_old_wal(self) -> None:
        """`StoreMoved` while the -wal of the file removed is still beside the file now at
        the path (a backup moved over the store, its -wal left): SQLite would read its
        pages as the new file's, a mix of the two."""
        old_db, old_wal = self._opened
        if (
            old_wal is not None
            and _file_id(self._names[0]) != old_db
            and _file_id(self._names[1]) == old_wal
        ):
            wal = _wal_of(self.path)
            raise StoreMoved(
                f"{self._moved} while this process had it open, and the write-ahead log"
                f" of the file removed ({wal.name}) is still beside the file now there:"
                f" SQLite would read it as that file's; nothing was written. Remove"
                f" {wal} and {self._names[0]}-shm (the file removed holds nothing else"
                " anyone can read) and the thread store there is opened"
            )

    def _let_go(self) -> None:
        """Say what happened (`_moved`) and close the connection to the file no longer
        at the path, before another is opened: SQLite leaves the path's files alone when
        it closes a connection to a database file removed or replaced."""
        _logger().error(
            "thread store: %s while this process had it open; nothing is written until a"
            " thread store is there again",
            self._moved,
        )
        if _file_id(self._names[0]) == self._opened[0]:
            self._keep_removed_wal()
        self._db.close()
        self._connected = False

    def _keep_removed_wal(self) -> None:
        """The database file is still the one opened, its -wal removed: what this
        connection committed to that -wal (and only it can still read) is copied into the
        database, and the shared index emptied, so that the next connection finds a
        consistent file (a connection finding the index but not its -wal fails)."""
        import sqlite3

        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            _logger().error("thread store: copying the removed write-ahead log failed: %s", exc)

    def _refusal(self, exc: BaseException) -> str:
        if isinstance(exc, StoreNotFound):
            why = exc.found  # not "`twelvefold run` creates one": a new one holds nothing
        else:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        moved = self._place_moved() or self._moved
        return (
            f"{moved} while this process had it open, and what is there now cannot be"
            f" used ({one_line(why)}); nothing was written. Put the thread store (a backup)"
            " back at that path: it is opened as soon as it is there"
        )

    def _checked_read(self) -> None:
        """`_checked` for a call that only reads, at most every `READ_CHECK_SECONDS`."""
        now = time.monotonic()
        if self._moved is not None or now - self._read_checked >= READ_CHECK_SECONDS:
            self._read_checked = now
            self._checked()

    def _still_there(self) -> None:
        """Before a COMMIT: `StoreMoved` (the transaction is then rolled back, nothing
        acknowledged) when the path no longer names the file written to; the next
        transaction lets that file go (`_checked`)."""
        moved = self._place_moved()
        if moved is not None:
            self._moved = moved
            raise StoreMoved(
                f"{moved} while this process had it open; nothing was written. Put the"
                " thread store (a backup) back at that path: it is opened as soon as it is"
                " there"
            )

    def _prepared(self, busy_timeout_ms: int, before: tuple[int, int] | None, create: bool) -> bool:
        """Set the connection up (WAL, the schema); False (closed) when the file at the
        path is no longer the one opened. Two commands started at once on one new file,
        one refused: the refused one removes the new file it made when it finds no other
        connection in WAL mode (twelvefold/commands/options.py), which it may just do
        after this connection opened it and before it reached WAL mode. What it would
        then write (SQLite refuses most of it as `disk I/O error`) went to a removed
        file: it is opened again instead. Once in WAL mode, this connection keeps the
        file from being removed that way."""
        import sqlite3

        from .schema import SchemaError, refuse_foreign, sqlite_tables, upgrade_sqlite

        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            # Before anything is written (WAL mode is written in the file's header):
            # another application's database is refused, and a command that only reads
            # (`create=False`) leaves a file with no tables yet as it is.
            refuse_foreign(self._db, str(self.path))
            if not create and not sqlite_tables(self._db):
                self._db.close()
                raise StoreNotFound(self.path, empty=True)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            upgrade_sqlite(self._db, self.chain, str(self.path))
        except SchemaError as exc:
            self._db.close()
            raise StoreError(str(exc)) from None
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            # UnicodeDecodeError: SQLite's own message quoting the damaged bytes.
            self._db.close()
            if not _same_file(before, self.path):
                return False
            raise StoreError(f"{self.path} is not a thread store SQLite can open: {exc}") from exc
        if _same_file(before, self.path):
            return True
        self._db.close()
        return False

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
        lease: Lease | None = self.commits.submit(
            self._creation(info, events, codec, reducer, owner, seconds)
        )
        return lease

    async def create_async(
        self,
        info: ThreadInfo,
        events: Sequence[Event],
        codec: Codec,
        *,
        reducer: str | None = None,
        owner: str | None = None,
        seconds: float | None = None,
    ) -> Lease | None:
        """`create` for a caller on an event loop, in a group's transaction as
        `append_async` is (a hundred threads launched at once share commits too)."""
        work = self._creation(info, events, codec, reducer, owner, seconds)
        lease: Lease | None = await self.commits.submit_async(work)
        return lease

    def _creation(
        self,
        info: ThreadInfo,
        events: Sequence[Event],
        codec: Codec,
        reducer: str | None,
        owner: str | None,
        seconds: float | None,
    ) -> Callable[[], Lease | None]:
        """`create`'s work, to run inside a group's transaction (the encoding and the
        chain are computed here, outside it)."""
        import sqlite3  # loaded already: this store opened it (see __init__)

        bodies, hashes, seal = self._first_links(info.id, events, codec, reducer, info.version)
        length = leases.lease_seconds(seconds) if owner is not None else 0.0

        def work() -> Lease | None:
            self._tails.pop(info.id, None)  # a thread of that id deleted before
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

        return work

    def append(
        self,
        thread_id: str,
        expected_seq: int,
        events: Sequence[Event],
        codec: Codec,
        head: Head,
        lease: Lease | None = None,
    ) -> None:
        work = partial(self._append, thread_id, expected_seq, events, codec, head, lease)
        self.commits.submit(work)

    def append_one(
        self,
        thread_id: str,
        expected_seq: int,
        event: Event,
        codec: Codec,
        state: State,
        reducer: str | None,
        lease: Lease,
    ) -> None:
        """`append` of one event under `lease`, as the loop's synchronous path records a
        step (runtime/fastpath.py; `MemoryStore.append_one`'s signature): the listing row
        and the snapshot are `state`, the state after it. Returns once it is committed,
        in a group with other threads' appends when they come meanwhile."""
        self.append_events(thread_id, expected_seq, (event,), codec, state, reducer, lease)

    def append_events(
        self,
        thread_id: str,
        expected_seq: int,
        events: tuple[Event, ...],
        codec: Codec,
        state: State,
        reducer: str | None,
        lease: Lease,
    ) -> None:
        """`append_one` of several events in one transaction (one fsync): `state` is the
        state after the last. The synchronous path records a model's output with the
        start of the tool call it chose this way (runtime/fastpath.py)."""
        head = build_head(state.status, state.step, state, reducer, state.request)
        work = partial(self._append, thread_id, expected_seq, events, codec, head, lease)
        self.commits.submit(work)

    async def append_async(
        self,
        thread_id: str,
        expected_seq: int,
        events: Sequence[Event],
        codec: Codec,
        head: Head,
        lease: Lease | None = None,
    ) -> None:
        """`append` for a caller on an event loop, which stays free meanwhile: the same
        checks and errors, and it returns once the transaction holding the events has
        committed (runtime/commits.py, `GroupCommit.submit_async`)."""
        work = partial(self._append, thread_id, expected_seq, events, codec, head, lease)
        await self.commits.submit_async(work)

    def _append(
        self,
        thread_id: str,
        expected_seq: int,
        events: Sequence[Event],
        codec: Codec,
        head: Head,
        lease: Lease | None,
    ) -> None:
        """One append inside a group's transaction: the checks (the thread, its lease,
        the sequence number: in that order), then the events and the row after them.

        One query reads all the checks need and the chain's last hash (four round trips
        to SQLite were a tenth of an append's CPU time), and the row's `status` is set
        only when it changes: setting it, even to the same value, rewrites its index's
        page, a third page in every commit's write to the disk.

        A thread this process appended to last (its `_Tail`), appended to again under a
        lease at the count and status it left, skips the read: one UPDATE makes every
        check in SQL (the row unchanged, the lease its holder's and live) and, only if
        they pass, sets the row, the event then inserted with the hash the tail
        remembers. The row unchanged since (the same count, under the same lease token)
        means nobody appended meanwhile, so that hash is still the chain's last. An
        append whose checks do not pass there (another count, a lapsed or taken lease,
        a changed status or version) has changed nothing and is judged the full way
        below, which raises as before."""
        tail = self._tails.get(thread_id)
        if (
            tail is not None
            and lease is not None
            and tail.seq == expected_seq
            and tail.status == head.status
        ):
            num, seq = tail.num, tail.seq
            bodies, hashes, row = self._appended(
                thread_id, seq, tail.last, events, codec, head, tail.version
            )
            checks = (thread_id, seq, tail.status, tail.version, lease.owner, lease.token)
            if self._db.execute(_UPDATE_IF_UNCHANGED, (*row[1:], num, *checks)).rowcount == 1:
                self._insert_events(num, seq, bodies, hashes)
                tail.seq, tail.last = row[2], hashes[-1] if hashes else tail.last
                return
        found = self._db.execute(_APPEND_READ, (thread_id,)).fetchone()
        if found is None:
            raise ThreadNotFound(thread_id)
        num, seq, status, version, holder, token, until, now, last = found
        num, seq = int(num), int(seq)
        self._check_holder(thread_id, lease, holder, token, until, now)
        if seq != expected_seq:
            raise Conflict(thread_id, expected_seq, seq)
        if seq == 0:
            last = self.chain.genesis(thread_id)
        elif not isinstance(last, bytes):
            raise BrokenLog(thread_id, seq, "the last event has no hash")
        bodies, hashes, row = self._appended(thread_id, seq, last, events, codec, head, version)
        self._insert_events(num, seq, bodies, hashes)
        if row[0] == status:
            self._db.execute(_UPDATE_KEEPING_STATUS, (*row[1:], num))
        else:
            self._db.execute(_UPDATE_AFTER_APPEND, (*row, num))
        if row[0] != "running":  # it stopped: its next append (if any) reads the row again
            self._tails.pop(thread_id, None)
            return
        if len(self._tails) >= MAX_TAILS:
            self._tails.clear()  # a shortcut, not a record: started over, never grown unbounded
        self._tails[thread_id] = _Tail(num, row[2], hashes[-1] if hashes else last, version, row[0])

    def _commit_group(self, group: Sequence[Pending]) -> None:
        """One transaction for the appends of a group (runtime/commits.py): each checked
        and written under its own savepoint, so one refused (`Conflict`, `LeaseLost`, a
        broken log) leaves nothing of it and the others as they were; then one COMMIT,
        one fsync, for all of them."""
        with self._lock:
            try:
                try:
                    self._commit_members(group)
                except StoreMoved:
                    # The path named another file when the group came to commit: all of
                    # it was rolled back. Once more, on the file there now (`_checked`),
                    # or `StoreMoved` for each while there is none.
                    for item in group:
                        item.result, item.error = None, None
                    self._commit_members(group)
            except BaseException:
                self._tails.clear()  # a `_Tail` may tell what was rolled back
                raise

    def _commit_members(self, group: Sequence[Pending]) -> None:
        # The path is looked at before the COMMIT only (`_still_there`), not before the
        # BEGIN as well: a stat less in every group (`_commit_group` tries again).
        with self._transaction():
            if len(group) == 1:  # alone: its error rolls the transaction back (no savepoint)
                group[0].result = group[0].work()
                return
            for item in group:
                self._db.execute("SAVEPOINT one_append")
                try:
                    item.result = item.work()
                except Exception as exc:
                    item.error = exc
                    self._tails.clear()  # a `_Tail` may tell what was rolled back
                    self._db.execute("ROLLBACK TO one_append")
                self._db.execute("RELEASE one_append")

    def load(self, thread_id: str, codec: Codec) -> list[Event]:
        return self.restore(thread_id, codec).events

    def restore(self, thread_id: str, codec: Codec) -> Restored:
        with self._lock, self._reading():
            row = self._db.execute(
                "SELECT num, seq, format, reducer, head_seal, snapshot, snapshot_seal,"
                " version FROM threads WHERE id = ?",
                (thread_id,),
            ).fetchone()
            if row is None:
                raise ThreadNotFound(thread_id)
            num = row[0]
            bodies = [
                body
                for (body,) in self._db.execute(
                    "SELECT body FROM events WHERE thread = ? ORDER BY seq", (num,)
                )
            ]
        return self._verified(thread_id, num, row[1:], bodies, codec)

    def snapshot(self, thread_id: str) -> Snapshot | None:
        with self._lock:
            self._checked_read()
            row = self._db.execute(
                "SELECT snapshot, snapshot_seal FROM threads WHERE id = ?", (thread_id,)
            ).fetchone()
        return None if row is None else self._unsealed_snapshot(thread_id, row[0], row[1])

    def acquire(self, thread_id: str, owner: str, seconds: float) -> Lease:
        length = leases.lease_seconds(seconds)
        lease: Lease = self.commits.submit(partial(self._acquire, thread_id, owner, length))
        return lease

    async def acquire_async(self, thread_id: str, owner: str, seconds: float) -> Lease:
        """`acquire` for a caller on an event loop (in a group, as `append_async`)."""
        length = leases.lease_seconds(seconds)
        lease: Lease = await self.commits.submit_async(
            partial(self._acquire, thread_id, owner, length)
        )
        return lease

    def _acquire(self, thread_id: str, owner: str, length: float) -> Lease:
        row = self._db.execute(
            f"SELECT num, lease_owner, lease_token, lease_until, {_NOW} FROM threads WHERE id = ?",
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
            "UPDATE threads SET lease_owner = ?, lease_token = ?, lease_until = ? WHERE num = ?",
            (owner, token + 1, expires, num),
        )
        return Lease(thread_id, owner, token + 1, expires)

    def renew(self, lease: Lease, seconds: float) -> Lease:
        renewed: Lease = self.commits.submit(partial(self._renew, lease, seconds))
        return renewed

    def _renew(self, lease: Lease, seconds: float) -> Lease:
        num, _ = self._position(lease.thread_id)
        now = self._fence(num, lease.thread_id, lease)
        expires = now + seconds
        self._db.execute("UPDATE threads SET lease_until = ? WHERE num = ?", (expires, num))
        return leases.extended(lease, expires)

    def release(self, lease: Lease) -> None:
        self.commits.submit(partial(self._release, lease))

    async def release_async(self, lease: Lease) -> None:
        """`release` for a caller on an event loop (in a group, as `append_async`)."""
        await self.commits.submit_async(partial(self._release, lease))

    def _release(self, lease: Lease) -> None:
        self._db.execute(
            "UPDATE threads SET lease_owner = NULL, lease_until = NULL"
            " WHERE id = ? AND lease_owner = ? AND lease_token = ?",
            (lease.thread_id, lease.owner, lease.token),
        )

    def lease(self, thread_id: str) -> Lease | None:
        with self._lock:
            self._checked_read()
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
            self._checked_read()
            row = self._db.execute(
                f"SELECT {_INFO_COLUMNS} FROM threads WHERE id = ?", (thread_id,)
            ).fetchone()
        if row is None:
            raise ThreadNotFound(thread_id)
        return _thread_info(row, self.path)

    def threads(self, status: Status | None = None, *, unleased: bool = False) -> list[ThreadInfo]:
        query = f"SELECT {_INFO_COLUMNS} FROM threads WHERE true"
        params: tuple[str, ...] = ()
        if status is not None:
            query, params = query + " AND status = ?", (status,)
        if unleased:
            query += f" AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until <= {_NOW})"
        with self._lock:
            self._checked_read()
            rows = self._db.execute(query + " ORDER BY updated_at DESC", params).fetchall()
        return _listed(rows)[0]

    def damaged_threads(self) -> list[DamagedRow]:
        """The rows `threads` leaves out because they are damaged (`DamagedRow`)."""
        with self._lock:
            self._checked_read()
            rows = self._db.execute(
                f"SELECT {_INFO_COLUMNS} FROM threads WHERE {_DAMAGED_SQLITE} ORDER BY num"
            ).fetchall()
        return _listed(rows)[1]

    def usage_records(self) -> dict[str, list[UsageRecord]]:
        """Every thread's `(kind, at, usage)` per event, in order, read by SQLite from the
        stored JSON without decoding events (so without loading any agent): for reports
        (`twelvefold threads`, `stats`; runtime/usage.py). A row that is not JSON, or a
        usage field that is not a number, counts as absent; the log is not verified."""
        with self._lock:
            self._checked_read()
            rows = self._db.execute(_USAGE_QUERY).fetchall()
        return usage_by_thread(rows)

    def child_links(self) -> dict[str, list[str]]:
        """Each parent's sub-agent threads, by the links both logs make (`joined_links`),
        read by SQLite from the stored JSON; the log is not verified."""
        with self._lock:
            self._checked_read()
            rows = self._db.execute(_LINKS_QUERY).fetchall()
        return joined_links(rows)

    # ---- versions and retention (docs/versions.md) --------------------------------------

    def save_version(self, digest: str, body: str) -> None:
        with self._lock, self._writing():
            self._db.execute(
                "INSERT OR IGNORE INTO agent_versions (digest, body, created_at) VALUES (?, ?, ?)",
                (digest, body, now_iso()),
            )

    def load_version(self, digest: str) -> str | None:
        with self._lock:
            self._checked_read()
            row = self._db.execute(
                "SELECT body FROM agent_versions WHERE digest = ?", (digest,)
            ).fetchone()
        if row is None:
            return None
        # A body of another SQLite type was written by hand: it fails verification.
        return row[0] if isinstance(row[0], str) else ""

    def repin(
        self,
        thread_id: str,
        expected_seq: int,
        version: str,
        lease: Lease,
        *,
        at: str,
        by: str | None = None,
    ) -> None:
        with self._lock, self._writing():
            num, seq = self._position(thread_id)
            self._fence(num, thread_id, lease)
            if seq != expected_seq:
                raise Conflict(thread_id, expected_seq, seq)
            if (
                self._db.execute(
                    "SELECT 1 FROM agent_versions WHERE digest = ?", (version,)
                ).fetchone()
                is None
            ):
                raise StoreError(f"agent version {version[:16]} is not in this store")
            sealed = self._db.execute(
                "SELECT seq, format, reducer, head_seal, version FROM threads WHERE num = ?",
                (num,),
            ).fetchone()
            before = sealed[4]
            seal = self._resealed(thread_id, sealed, self._last_hash(num, seq), version)
            self._db.execute(
                "INSERT INTO pins (thread, seq, from_version, to_version, at, by)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (num, seq, before, version, at, by),
            )
            # The snapshot was computed by the old reducer: the next load replays instead.
            # The head seal covers the version: a version changed by hand breaks it.
            self._db.execute(
                "UPDATE threads SET version = ?, head_seal = ?, snapshot = NULL,"
                " snapshot_seal = NULL WHERE num = ?",
                (version, seal, num),
            )

    def pins(self, thread_id: str) -> list[Pin]:
        with self._lock:
            self._checked_read()
            num, _ = self._position(thread_id)
            rows = self._db.execute(
                "SELECT seq, from_version, to_version, at, by FROM pins WHERE thread = ?"
                " ORDER BY rowid",
                (num,),
            ).fetchall()
        return [Pin(*row) for row in rows]

    def export(self, thread_id: str) -> Exported:
        with self._lock, self._reading():
            row = self._db.execute(
                f"SELECT num, {_INFO_COLUMNS} FROM threads WHERE id = ?", (thread_id,)
            ).fetchone()
            if row is None:
                raise ThreadNotFound(thread_id)
            bodies = [
                body
                for (body,) in self._db.execute(
                    "SELECT body FROM events WHERE thread = ? ORDER BY seq", (row[0],)
                )
            ]
        info = _thread_info(row[1:], self.path)
        return Exported(info, text_bodies(thread_id, bodies), self.pins(thread_id))

    def delete(self, thread_id: str, expected_seq: int, statuses: Sequence[Status]) -> bool:
        marks = ", ".join("?" for _ in statuses)
        with self._lock, self._writing():
            row = self._db.execute(
                "SELECT num, seq, format, reducer, head_seal, snapshot, snapshot_seal, version"
                f" FROM threads WHERE id = ? AND seq = ? AND status IN ({marks})"
                f" AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until <= {_NOW})",
                (thread_id, expected_seq, *statuses),
            ).fetchone()
            if row is None:
                return False
            bodies = [
                body
                for (body,) in self._db.execute(
                    "SELECT body FROM events WHERE thread = ? ORDER BY seq", (row[0],)
                )
            ]
            if not self._ended_by_log(thread_id, row[1:], bodies, statuses):
                return False  # the column says it ended; its log does not
            self._tails.pop(thread_id, None)
            for table, column in (("events", "thread"), ("pins", "thread"), ("threads", "num")):
                self._db.execute(f"DELETE FROM {table} WHERE {column} = ?", (row[0],))
            # The server's rows of the thread: where its replies went (nothing is told of a
            # thread now gone) and its Slack messages (no button of it is updated again).
            # Who launched it (`server_launches`) stays, and what it was forked from is
            # kept (`server_forks`) now that its log goes: the four-eyes rule reads them
            # for the forks made of it.
            for table in ("server_replies", "slack_messages"):
                self._db.execute(f"DELETE FROM {table} WHERE thread_id = ?", (thread_id,))
            parent = self._forked_from(bodies)
            if parent is not None:
                self._db.execute(
                    "INSERT INTO server_forks (thread_id, parent) VALUES (?, ?)"
                    " ON CONFLICT (thread_id) DO NOTHING",
                    (thread_id, parent),
                )
            return True

    def unused_versions(self, dropping: Sequence[str] = ()) -> list[str]:
        marks = ", ".join("?" for _ in dropping)
        other = f" AND t.id NOT IN ({marks})" if dropping else ""
        with self._lock:
            self._checked_read()
            rows = self._db.execute(
                "SELECT v.digest FROM agent_versions v WHERE NOT EXISTS"
                f" (SELECT 1 FROM threads t WHERE t.version = v.digest{other})"
                " ORDER BY v.digest",
                tuple(dropping),
            ).fetchall()
        return [str(digest) for (digest,) in rows]

    def delete_versions(self, digests: Sequence[str]) -> int:
        gone = 0
        with self._lock, self._writing():
            for digest in digests:
                gone += self._db.execute(
                    "DELETE FROM agent_versions WHERE digest = ? AND NOT EXISTS"
                    " (SELECT 1 FROM threads WHERE version = ?)",
                    (digest, digest),
                ).rowcount
        return gone

    # ---- helpers -----------------------------------------------------------------------

    def _stored_hashes(self, num: int) -> list[bytes | None]:
        # Not checked (`_checked_read`): part of a read that was, which a file opened
        # meanwhile would make look edited.
        with self._lock:
            return [
                digest
                for (digest,) in self._db.execute(
                    "SELECT hash FROM events WHERE thread = ? ORDER BY seq", (num,)
                )
            ]

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
        self._check_holder(thread_id, lease, holder, token, until, now)
        return float(now)

    def _check_holder(
        self, thread_id: str, lease: Lease | None, holder: Any, token: Any, until: Any, now: Any
    ) -> None:
        """`check_lease` on a row's lease columns as read (`LeaseLost` if `lease` does not
        hold the thread now; `StoreError` for damaged columns)."""
        _check_lease_columns(thread_id, holder, token, until)
        check_lease(thread_id, lease, holder, token, until, now)

    def _last_hash(self, num: int, seq: int) -> object:
        row = self._db.execute(
            "SELECT hash FROM events WHERE thread = ? AND seq = ?", (num, seq)
        ).fetchone()
        return None if row is None else row[0]

    def _insert_events(
        self, num: int, after_seq: int, bodies: Sequence[str], hashes: Sequence[bytes]
    ) -> None:
        if len(bodies) == 1:  # a step's append: one row, no list to build
            self._db.execute(_INSERT_EVENT, (num, after_seq + 1, bodies[0], hashes[0]))
            return
        self._db.executemany(
            _INSERT_EVENT,
            [
                (num, after_seq + i, body, digest)
                for i, (body, digest) in enumerate(zip(bodies, hashes, strict=True), start=1)
            ],
        )

    def _transaction(self) -> _Transaction:
        """A write transaction (under the lock), refused before it commits if the path
        names another file than the one written to (`_still_there`); once it was found
        to, on the file the path names now (`_checked`)."""
        if self._moved is not None:
            self._checked()
        return _Transaction(self._db, self._still_there)

    def _writing(self) -> _Transaction:
        """`_transaction` on the file the path names now (`_checked`): for the writes
        that are not a group's appends, which are not made again when refused."""
        self._checked()
        return self._transaction()

    def _reading(self) -> _Reading:
        """One read transaction: the thread's row and its events from the same moment."""
        self._checked_read()
        return _Reading(self._db)


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


def _thread_info(row: Sequence[Any], path: object) -> ThreadInfo:
    """A `threads` row as a `ThreadInfo`, or `StoreError` when a damaged file holds a value
    of the wrong kind (a NULL name, a text count) that would fail far from here."""
    info = ThreadInfo(*row)
    problem = _damage(info)
    if problem is not None:
        raise StoreError(
            f"{path} holds a damaged thread row {_row_id(info.id)} ({problem}); the thread"
            f" cannot be read: {DAMAGED_ROWS_HELP}"
        )
    return info


def _listed(rows: Iterable[Sequence[Any]]) -> tuple[list[ThreadInfo], list[DamagedRow]]:
    """`threads` rows as `ThreadInfo`s, in order, and the damaged ones apart: one damaged
    row must not keep every other thread from being listed."""
    found: list[ThreadInfo] = []
    damaged: list[DamagedRow] = []
    for row in rows:
        info = ThreadInfo(*row)
        problem = _damage(info)
        if problem is None:
            found.append(info)
        else:
            damaged.append(DamagedRow(_row_id(info.id), problem))
    return found, damaged


_TEXT_COLUMNS = ("id", "agent", "origin", "status", "step", "created_at", "updated_at")
_OPTIONAL_COLUMNS = ("request", "version")  # text or NULL; `seq` is the one count


def _damage(info: ThreadInfo) -> str | None:
    """What is wrong with a row's values, column by column, or None when nothing is."""
    wrong = [
        f"{name} is {_kind(getattr(info, name))}, not text"
        for name in _TEXT_COLUMNS
        if not isinstance(getattr(info, name), str)
    ]
    if not isinstance(info.seq, int) or isinstance(info.seq, bool):
        wrong.append(f"seq is {_kind(info.seq)}, not a whole number")
    wrong += [
        f"{name} is {_kind(getattr(info, name))}, not text or NULL"
        for name in _OPTIONAL_COLUMNS
        if not isinstance(getattr(info, name), str | None)
    ]
    return "; ".join(wrong) or None


_DAMAGED_SQLITE = " OR ".join(
    [f"typeof({name}) <> 'text'" for name in _TEXT_COLUMNS]
    + ["typeof(seq) <> 'integer'"]
    + [f"typeof({name}) NOT IN ('text', 'null')" for name in _OPTIONAL_COLUMNS]
)
"""The rows `_damage` finds fault with, picked by SQLite (whose `text` is Python's `str`,
its `integer` an `int`): counting them at each scrape of /metrics reads no healthy row."""


def _kind(value: object) -> str:
    """A stored value's kind, as SQL names it."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes | bytearray | memoryview):
        return "a BLOB"
    if isinstance(value, float):
        return "a real number"
    if isinstance(value, int):
        return "an integer"
    return "text" if isinstance(value, str) else type(value).__name__


def _row_id(value: object) -> str:
    """A row's id as a listing names it: itself; an id that is not text as the SQL
    literal that finds the row (`X'6162'` for a BLOB, `NULL`, a number), so the repair in
    docs/stores.md can be pasted as printed (`WHERE id = X'6162'`)."""
    if isinstance(value, str):
        return one_line(value)
    if isinstance(value, bytes):
        return f"X'{value.hex().upper()}'"
    if value is None:
        return "NULL"
    return one_line(str(value))


def _sealed_fields(
    thread_id: str,
    seq: int,
    head: bytes,
    format: int | None,
    reducer: str | None,
    version: str | None,
) -> tuple[str | int | bytes | None, ...]:
    """What a thread row's head seal covers: its id, event count, chain head, event
    format, reducer and the agent version it is pinned to, None for none (a version set,
    changed or cleared in the database is tampering, as an edited event is). Rows sealed
    before the seal covered the version hold the first five alone (`_seal_holds`).
    `ChainedStore._head_seal` frames the same fields in the same order."""
    return (thread_id, seq, head, format, reducer, version)


@lru_cache(maxsize=1024)
def _framed_ends(
    thread_id: str, format: int | None, reducer: str | None, version: str | None
) -> tuple[bytes, bytes]:
    """`_sealed_fields` framed (`integrity.framed`) before and after the count and the
    chain head, the two fields each append changes."""
    return framed(thread_id), framed(format, reducer, version)


def _info_row(info: ThreadInfo) -> tuple[str | int | None, ...]:
    return tuple(getattr(info, name) for name in _INFO_COLUMNS.split(", "))


def _begin(db: sqlite3.Connection, begin: str) -> None:
    """Begin a transaction, or raise with none open: a Ctrl-C that lands as `begin`
    returns is raised at the next instruction, before the caller's `try` (or `with`)
    would end the transaction, which stayed open for the rest of the process (holding
    the file's write lock: every other process's writes failed)."""
    try:
        db.execute(begin)
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class _Reading:
    """`BEGIN` ... `COMMIT`: a read transaction. A class, not a generator: a Ctrl-C
    raised as `next()` returned a generator's `yield` lands outside the `with`, and the
    transaction stayed open until the traceback holding the generator was let go. Here
    nothing between the `BEGIN` (`_begin`) and the `with` block can raise it (CPython
    runs signal handlers as calls into C return)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        _begin(self._db, "BEGIN")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT")


class _Transaction:
    """`BEGIN IMMEDIATE` ... `COMMIT`, or `ROLLBACK` on any exception.

    IMMEDIATE takes the write lock before the sequence check, so no other process can
    append between the check and the insert.
    """

    def __init__(self, db: sqlite3.Connection, before_commit: Callable[[], None]) -> None:
        self._db = db
        self._before_commit = before_commit

    def __enter__(self) -> None:
        _begin(self._db, "BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            try:
                self._before_commit()
            except BaseException as refused:
                self._db.execute("ROLLBACK")
                raise refused from None
            self._db.execute("COMMIT")
            return
        import sqlite3  # loaded already: the connection is SQLite's

        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error as rollback_failed:
            # A full disk can fail the ROLLBACK too (SQLite has then rolled back itself).
            # The error that stopped the transaction is what the caller must see; the
            # failed ROLLBACK is told beside it, not instead of it.
            exc.add_note(f"ROLLBACK failed as well: {rollback_failed}")


SQLITE_SCHEME = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_postgres_url(url: str | Path) -> bool:
    """Whether `url` names a PostgreSQL store (`postgresql://…` or `postgres://…`)."""
    scheme, sep, _ = str(url).partition("://")
    return bool(sep) and isinstance(url, str) and scheme.lower() in POSTGRES_SCHEMES


_PASSWORD_IN_QUERY = re.compile(r"(?i)(password=)[^&\s]*")


def shown_url(url: str, *, secret_of: str | None = None) -> str:
    """`url` (or any text holding store URLs) as it may be shown: the password of every
    `scheme://user:password@host` and every `password=` parameter replaced by `***`,
    and, with `secret_of`, that URL's password wherever it occurs. Non-printable
    characters are escaped. A user and host stay: they say which store is meant.

    When a URL has an `@` but no clear end to its user part, everything up to the last
    `@` is taken for it: shown too little rather than a password shown."""
    text = _PASSWORD_IN_QUERY.sub(r"\1***", url)
    text = _PASSWORD_IN_URL.sub(_hide_password, text)
    if secret_of is not None:
        for secret in _secrets_of(secret_of):
            text = text.replace(secret, "***")
    return text if text.isprintable() else ascii(text)[1:-1]


_PASSWORD_IN_URL = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)(\S*)@")
"""A URL's user part: everything up to its last `@` (a password may hold `@` or `/`)."""


def url_without_password(url: str) -> str:
    """`url` with no password at all (not `***`): the user part's and any `password=`
    parameter's taken out, for a command to run again (libpq then takes the password from
    PGPASSWORD or ~/.pgpass; one shown as `***` would be sent as the password)."""
    text = _PASSWORD_IN_URL.sub(
        lambda found: f"{found.group(1)}{found.group(2).partition(':')[0]}@", url
    )
    address, mark, query = text.partition("?")
    kept = [p for p in query.split("&") if p and not _is_secret_parameter(p)]
    return address + (mark if kept else "") + "&".join(kept)


def _is_secret_parameter(parameter: str) -> bool:
    """Whether a URL's `name=value` parameter holds a secret: libpq's `password` and
    `sslpassword` (the client key's passphrase), in any case."""
    return parameter.partition("=")[0].lower().endswith("password")


def _hide_password(match: re.Match[str]) -> str:
    user, colon, _ = match.group(2).partition(":")
    return f"{match.group(1)}{user}{':***' if colon else ''}@"


def _password_of(url: str) -> str:
    match = _PASSWORD_IN_URL.search(url)
    if match is None:
        return ""
    from urllib.parse import unquote

    password = match.group(2).partition(":")[2]
    return unquote(password) if len(password) >= 3 else ""


_USERINFO_BREAKS = re.compile(r"[@/?#:]")
"""Where libpq may end a user part that we read to the last `@` (it stops at the first
`@` or `/`), so any piece between these may reach its messages on its own."""


def _secrets_of(url: str) -> list[str]:
    """The password of `url` and each piece of it a parser that splits the user part
    differently could show (a host `PW@127.0.0.1` for `bob:S3cret@PW@127.0.0.1`):
    longest first, pieces under 3 characters left (they would cut ordinary words)."""
    from urllib.parse import unquote

    password = _password_of(url)
    match = _PASSWORD_IN_URL.search(url)
    pieces = _USERINFO_BREAKS.split(match.group(2))[1:] if match is not None else []
    # A parameter's value as written and as decoded: libpq's errors quote either
    # (`invalid percent-encoded token: "sec%zz…"`).
    for parameter in url.partition("?")[2].split("&"):
        if _is_secret_parameter(parameter):
            value = parameter.partition("=")[2]
            pieces += [value, unquote(value)]
    found = {password, *pieces} - {""}
    return sorted((piece for piece in found if len(piece) >= 3), key=len, reverse=True)


def check_store_url(url: str) -> None:
    """`StoreError` (one line, never naming the password) for a `postgresql://` URL that
    libpq would read otherwise than its shown form says, or whose password the shown form
    could not hide:

    - its user part, everything up to its last `@`, holds a raw `@`, `/`, `?` or `#`:
      libpq reads such a URL differently from RFC 3986 (it ends the user part at the first
      `@` or `/`), so it would connect elsewhere and put part of the password in a host
      name (sent to DNS, and shown in its errors). Percent-encoding them means what was
      meant.
    - it holds a blank (a space, a tab, a line break): RFC 3986 has none in a URL, and a
      password with one was shown from the blank on (`password=se cret`);
    - a parameter's name is percent-encoded (`?pass%77ord=…`): libpq decodes it to
      `password`, which no shown form would then hide;
    - it holds a raw `#`: libpq has no fragments (`?password=abc#def` is the password
      `abc#def`), where every URL reader, ours included, ends the URL there;
    - libpq cannot read it (a `%` not followed by two hex digits, a `%00`): its error
      quotes the value, which may be the password."""
    if any(character.isspace() for character in url):
        raise StoreError(
            "the store URL holds a blank (a space, a tab or a line break): percent-encode "
            "it (a space is %20)"
        )
    query = url.partition("?")[2].partition("#")[0]
    for parameter in query.split("&"):
        if "%" in parameter.partition("=")[0]:
            raise StoreError(
                "a parameter name in the store URL is percent-encoded: write names as they "
                "are (password=…, sslmode=…)"
            )
    match = _PASSWORD_IN_URL.search(url)
    if match is not None and re.search(r"[@/?#]", match.group(2)):
        raise StoreError(
            f"the store URL {shown_url(url)} has a raw `@`, `/`, `?` or `#` in its user or "
            "password (everything before the last `@`): percent-encode them "
            "(`@` is %40, `/` is %2F, `?` is %3F, `#` is %23)"
        )
    if "#" in url:
        raise StoreError(
            "the store URL holds a raw `#`: libpq reads it as part of a value (a URL has "
            "no fragment for libpq), others as the URL's end; percent-encode it as %23"
        )
    try:
        from psycopg import Error as DriverError
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:  # (`open_store` says psycopg is missing)
        return
    try:
        conninfo_to_dict(url)
    except DriverError:
        # libpq's message quotes the value it could not read: never shown.
        raise StoreError(
            "the store URL is not one libpq can read: a `%` must start a percent-escape of "
            "two hex digits (`%` itself is %25), and no value may hold %00"
        ) from None


_CONNINFO_KEYWORD = re.compile(r"([A-Za-z_]+)\s*=")
"""A libpq keyword/value string's keywords (`host=db password=…`)."""


def check_not_conninfo(text: str) -> None:
    """`StoreError` when store text that is not a URL holds a `=`, as a libpq keyword/value
    string does (`host=db password=…`): taken for a file name it would be created as a
    SQLite file, and shown, password and all, in every message about that file. The
    error names the keywords only, never their values, and the URL form to use (a file
    whose name holds `=` is still `sqlite:///a=b.db`)."""
    if "=" not in text:
        return
    keywords = list(dict.fromkeys(_CONNINFO_KEYWORD.findall(text)))[:8]
    named = f" (keywords: {', '.join(keywords)})" if keywords else ""
    raise StoreError(
        f"a store is a URL, not a libpq keyword/value string{named}: write"
        " postgresql://user@host:port/database?sslmode=… (the password in PGPASSWORD or"
        " ~/.pgpass), or sqlite:///PATH for a file"
    )


_LOOKS_LIKE_A_URL = re.compile(r"(?:^|[\s\"'])([A-Za-z][A-Za-z0-9+.-]*):/")
"""A scheme and the slash after it (`postgresql:/…`: a slash missed; `postgres://…`), at
the start or after any blank or quote: a no-break space before it is a blank too (rt21),
and `Path` has made a `//` one `/` by the time a `--db` is checked."""


def check_not_url(text: str) -> None:
    """`StoreError` when a file path looks like a URL (`postgresql:/host/db`, a
    `postgres://…` URL given to `--db`): taken for a path it would be made as a SQLite
    file in a folder named after the URL, the password in its name, and shown in every
    message about it. The error names the scheme only; a file whose name starts so is
    given by its absolute path. Also after a blank or a quote (an env file's
    `VAR= value`, Docker's literal quotes, a no-break space), and `://` anywhere."""
    for form in _read_forms(text):
        if (found := _LOOKS_LIKE_A_URL.search(form) or _ANY_URL.search(form)) is not None:
            break
        if _USER_AND_PASSWORD.search(form):
            raise StoreError(
                "user:password@host… looks like a database URL without its scheme, not a "
                "file path: name a database server with --store "
                "postgresql://user@host/database (the password in PGPASSWORD or "
                "~/.pgpass), a SQLite file with --db PATH (a file named so: give its "
                "absolute path)"
            )
    else:
        return
    raise StoreError(
        f"{found.group(1)}:/… looks like a URL, not a file path: name a database server "
        "with --store postgresql://user@host/database (two slashes; the password in "
        "PGPASSWORD or ~/.pgpass), a SQLite file with --db PATH (a file named so: give "
        "its absolute path)"
    )


_ANY_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
"""A scheme and its `://` anywhere in a text."""

_USER_AND_PASSWORD = re.compile(r"(?:^|[\s\"'])[^/\s\"']*:[^/\s]*@")
"""`user:password@` as a path's first part (`bob:pw@db/agents`: a URL without its scheme),
at the start or after a blank or quote."""


def _read_forms(text: str) -> tuple[str, ...]:
    """`text` as given, and as a person may have meant it: percent-escapes decoded
    (`postgresql%3A%2F%2F…`) and compatibility forms folded (Unicode's NFKC: a
    full-width `：` or `／` is a colon or a slash to the eye)."""
    import unicodedata
    from urllib.parse import unquote

    decoded = unquote(text)
    return (text, unicodedata.normalize("NFKC", decoded))


def check_file_name(text: str) -> None:
    """`check_not_conninfo` and `check_not_url` of a store's file path as given."""
    check_not_conninfo(text)
    check_not_url(text)


def store_file(url: str) -> Path:
    """The SQLite file a store URL names, as SQLAlchemy spells it: `sqlite:///rel/t.db`
    is relative to the current folder, `sqlite:////abs/t.db` (four slashes) absolute.
    A bare path (no `scheme://`) is a file path, as `--db` takes it, unless it holds a
    `=` (`check_not_conninfo`).

    Raises `StoreError` (one line) for another scheme (a `postgresql://` URL is opened by
    `open_store`, not as a file)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        if not url:
            raise StoreError("a store URL is sqlite:///PATH (relative) or sqlite:////PATH")
        check_file_name(url)
        return Path(url)
    if is_postgres_url(url):
        raise StoreError(f"{shown_url(url)} names a database server, not a SQLite file")
    if scheme.lower() != "sqlite" or not rest.startswith("/"):
        raise StoreError(
            f"not a store URL twelvefold knows: {_scheme_only(scheme)}://… (use sqlite:///relative/"
            "threads.db, sqlite:////absolute/threads.db or postgresql://user@host/database)"
        )
    path = rest[1:].partition("?")[0]
    if not path:
        raise StoreError("a sqlite:/// store URL names a file: sqlite:///PATH")
    return Path(path)


def _scheme_only(scheme: str) -> str:
    """A URL's scheme as a message may show it: the rest may hold a password that no
    shown form can find (`postgresql+psycopg://bob:sec ret@host`, a blank in it)."""
    return scheme if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,30}", scheme) else "…"


def upgrade_store(url: str | StoreLocation) -> Upgrade:
    """Bring the store at `url` to this code's schema (`twelvefold db upgrade`), making it
    if it is not there yet; safe to repeat and to run while other processes use the store.
    `StoreError` (one line) when it cannot be opened or was upgraded by a newer version."""
    text = url.url if isinstance(url, StoreUrl) else url
    if is_postgres_url(text):
        from .pgstore import upgrade_database

        return upgrade_database(str(text))
    path = text if isinstance(text, Path) else store_file(text)
    make_store_file(path)
    # Here, not at the top: a memory or PostgreSQL store never needs them.
    import sqlite3

    from .schema import SchemaError, Upgrade, sqlite_version, upgrade_sqlite

    try:
        db = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"{path} is not a thread store SQLite can open: {exc}") from None
    try:
        db.execute("PRAGMA busy_timeout = 10000")
        before = sqlite_version(db)
        return Upgrade(str(path), before, upgrade_sqlite(db, Chain.from_env(), str(path)))
    except SchemaError as exc:
        raise StoreError(str(exc)) from None
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path} is not a thread store SQLite can open: {exc}") from None
    finally:
        db.close()


def storable(text: object) -> bool:
    """Whether PostgreSQL's text can hold `text` (no NUL, valid UTF-8; anything not a str
    passes). What it cannot hold is in no row: a lookup by it finds nothing (rather than
    a driver error)."""
    if not isinstance(text, str):
        return True
    return "\0" not in text and text.encode("utf-8", "replace").decode() == text


@record(slots=True)
class StoreUrl:
    """A database server's store URL (`postgresql://…`). Shown (`str`, f-strings) without
    its password; `url` is the whole URL, to connect with and never to print."""

    url: str

    def __str__(self) -> str:
        return shown_url(self.url)

    def __repr__(self) -> str:
        return f"StoreUrl({shown_url(self.url)!r})"


StoreLocation = Path | StoreUrl
"""Where a command's threads are: a SQLite file, or a database server's URL."""


def store_location(url: str) -> StoreLocation:
    """A store URL (or a bare file path) as a location; `StoreError` for one twelvefold
    cannot use (never naming its password), such as one `check_store_url` refuses."""
    if is_postgres_url(url):
        check_store_url(url)
        return StoreUrl(url)
    return store_file(url)


def store_exists(location: StoreLocation) -> bool:
    """Whether a store is there to read: the SQLite file exists; a server is asked when
    the store is opened, so a URL always counts. `OSError` for a path where no store can
    be (`file_there`)."""
    return isinstance(location, StoreUrl) or file_there(location)


def open_store(url: str | StoreLocation, *, create: bool = True) -> SqliteStore | PostgresStore:
    """The store a URL names: `postgresql://…` (or `postgres://…`) a `PostgresStore`
    (psycopg is imported only now), anything else the SQLite file `store_file` finds
    (a `Path` is a file), as `SqliteStore(path, create=create)`. `StoreError` for a URL
    that names no store twelvefold can open."""
    text = url.url if isinstance(url, StoreUrl) else url
    if is_postgres_url(text):
        try:
            from .pgstore import PostgresStore
        except ImportError as exc:  # psycopg is a dependency, but a broken install is not
            raise StoreError(
                f"a PostgreSQL store needs psycopg ({exc}): pip install 'psycopg[binary]'"
                " psycopg-pool"
            ) from None
        return PostgresStore(str(text), create=create)
    return SqliteStore(text if isinstance(text, Path) else store_file(text), create=create)
