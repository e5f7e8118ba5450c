"""Ownership: a process that advances a thread holds a lease on it.

A thread has at most one lease: its owner (`host:pid:random`), a fencing token (a counter
the store raises with every new lease of the thread) and an expiry on the store's clock.
`acquire` succeeds when there is none or it has lapsed: a lease that lapsed is what "the
process died" means, and the next process takes over under the crash rules (a keyed tool
call is run again with the same key; a keyless one is recorded as interrupted). Every
append carries the lease it was made under, and the store refuses it once that lease has
lapsed or another process took the thread over (fencing): a process that stalled past its
lease can never write after its successor.

The owner renews its lease in the background (`Renewals`) while a model or a tool call
runs, and starts no new call once a renewal failed.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Protocol

from .records import record

LEASE_VARIABLE = "TWELVEFOLD_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 30.0
RENEWALS_PER_LEASE = 3
"""Renew every third of the lease: two renewals can fail before it lapses."""
LEASE_RETRY_SECONDS = 2.0
"""The longest a server's run or a worker's wake-up that found a thread's lease held
waits before it asks again. Not until the lease would lapse: most leases are let go
within moments (a decision, a signal or a copy of one taking the thread to record an
event), and a dead holder's lapses all the same."""


class LeaseError(Exception):
    """Base of the ownership errors (one line each, for the CLI)."""


class LeaseHeld(LeaseError):
    """Another process holds the thread's lease: it is working on the thread now."""

    def __init__(self, thread_id: str, owner: str, expires: float) -> None:
        until = iso(expires)
        super().__init__(
            f"thread {thread_id} is being advanced by {owner} (lease until {until}); "
            "nothing was done. Wait for it; if that process died, try again after "
            f"{until} and this one takes over"
        )
        self.thread_id = thread_id
        self.owner = owner
        self.until = until


class LeaseLost(LeaseError):
    """This process's lease lapsed or was taken over: it writes nothing more."""

    def __init__(self, thread_id: str, owner: str, why: str) -> None:
        super().__init__(
            f"thread {thread_id}: this process ({owner}) no longer holds its lease ({why}); "
            "it wrote nothing more and stopped. Another process continues the thread: "
            f"see `twelvefold show {thread_id}`"
        )
        self.thread_id = thread_id
        self.owner = owner
        self.why = why


class LeaseSettingError(LeaseError, ValueError):
    """TWELVEFOLD_LEASE_SECONDS (or lease_seconds=) is not a positive number."""


@record(slots=True)
class Lease:
    thread_id: str
    owner: str
    token: int
    """The fencing token: larger than every earlier lease's on this thread."""
    expires: float
    """Unix seconds on the store's clock."""

    @property
    def until(self) -> str:
        return iso(self.expires)


class LeaseStore(Protocol):
    def acquire(self, thread_id: str, owner: str, seconds: float) -> Lease: ...
    def renew(self, lease: Lease, seconds: float) -> Lease: ...
    def release(self, lease: Lease) -> None: ...


def iso(seconds: float) -> str:
    """Unix seconds as `2026-11-30T16:30:00.125000Z`.

    A time datetime cannot hold (a lease_until edited by hand in the SQLite file, or NaN)
    is worded as the raw number rather than raising while a refusal is being written.
    """
    try:
        moment = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, ValueError, OSError):
        return f"{seconds!r} unix seconds"
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_owner() -> str:
    """`host:pid:random`: names the process in refusals, unique even across restarts."""
    import socket  # here, not at the top: importing the runtime needs no network module

    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def lease_seconds(value: float | str | None = None) -> float:
    """The lease length: `value`, else TWELVEFOLD_LEASE_SECONDS, else 30 seconds.

    Raises `LeaseSettingError` for anything but a positive finite number.
    """
    if value is None:
        value = os.environ.get(LEASE_VARIABLE) or DEFAULT_LEASE_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise LeaseSettingError(
            f"{LEASE_VARIABLE} (lease_seconds) must be a positive number of seconds, "
            f"not {str(value)[:40]!r}"
        )
    return seconds


class Held:
    """One lease an engine holds while it advances a thread (see `Renewals`)."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.problem: str | None = None
        """Why the last renewal failed; once set, the lease is given up for lost."""

    def check(self) -> None:
        """`LeaseLost` once a renewal failed; the loop calls it before every new call."""
        if self.problem is not None:
            raise LeaseLost(self.lease.thread_id, self.lease.owner, self.problem)


class Renewals:
    """Renews every lease an engine holds, every `seconds / 3`, from one background
    thread (a real thread: a synchronous tool may hold the event loop for as long as it
    runs). The thread starts with the first lease held and ends when none is left, so an
    idle engine costs nothing and a busy server one thread, not one per thread it runs.
    """

    def __init__(self, store: LeaseStore, seconds: float) -> None:
        self._store = store
        self._seconds = seconds
        self._held: dict[int, Held] = {}
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None

    def hold(self, lease: Lease) -> Held:
        held = Held(lease)
        with self._lock:
            self._held[id(held)] = held
            if self._worker is None or not self._worker.is_alive():  # (or lost in a fork)
                self._worker = threading.Thread(
                    target=self._run, name="twelvefold-leases", daemon=True
                )
                self._worker.start()
        return held

    def drop(self, held: Held) -> Lease:
        """Stop renewing; the lease as last renewed."""
        with self._lock:
            self._held.pop(id(held), None)
        return held.lease

    def _run(self) -> None:
        while True:
            time.sleep(self._seconds / RENEWALS_PER_LEASE)
            with self._lock:
                if not self._held:
                    self._worker = None
                    return
                current = [h for h in self._held.values() if h.problem is None]
            for held in current:
                try:
                    held.lease = self._store.renew(held.lease, self._seconds)
                except LeaseLost as exc:
                    held.problem = exc.why
                except Exception as exc:  # the store is unreachable: the lease will lapse
                    held.problem = f"could not renew it: {type(exc).__name__}: {exc}"


def extended(lease: Lease, expires: float) -> Lease:
    return replace(lease, expires=expires)


def now() -> float:
    """The in-memory store's clock (a SQLite store uses SQLite's)."""
    return time.time()


__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "LEASE_RETRY_SECONDS",
    "LEASE_VARIABLE",
    "Held",
    "Lease",
    "LeaseError",
    "LeaseHeld",
    "LeaseLost",
    "LeaseSettingError",
    "Renewals",
    "lease_seconds",
    "new_owner",
]
