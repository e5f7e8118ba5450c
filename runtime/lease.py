"""Ownership: a process that advances a thread holds a lease on it.

A thread has at most one lease: its owner (`host:pid:random`), a fencing token (a counter
the store raises with every new lease of the thread) and an expiry on the store's clock.
`acquire` succeeds when there is none or it has lapsed: a lease that lapsed is what "the
process died" means, and the next process takes over under the crash rules (a keyed tool
call is run again with the same key; a keyless one is recorded as interrupted). Every
append carries the lease it was made under, and the store refuses it once that lease has
lapsed or another process took the thread over (fencing): a process that stalled past its
lease can never write after its successor.

The owner renews its lease in the background (`Renewer`) while a model or a tool call
runs, and starts no new call once a renewal failed.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

LEASE_VARIABLE = "TWELVEFOLD_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 30.0
RENEWALS_PER_LEASE = 3
"""Renew every third of the lease: two renewals can fail before it lapses."""


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


@dataclass(frozen=True, slots=True)
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
    """Unix seconds as `2026-11-30T16:30:00.125000Z`."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_owner() -> str:
    """`host:pid:random`: names the process in refusals, unique even across restarts."""
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


class Renewer:
    """Renews a lease every `seconds / 3` in a background thread (a real thread: a
    synchronous tool may hold the event loop for as long as it runs).

    `check()` raises `LeaseLost` once a renewal failed; the loop calls it before every
    new model or tool call.
    """

    def __init__(self, store: LeaseStore, lease: Lease, seconds: float) -> None:
        self.lease = lease
        self._store = store
        self._seconds = seconds
        self._problem: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="twelvefold-lease", daemon=True)
        self._thread.start()

    def check(self) -> None:
        if self._problem is not None:
            raise LeaseLost(self.lease.thread_id, self.lease.owner, self._problem)

    def stop(self) -> Lease:
        """Stop renewing; the lease as last renewed."""
        self._stop.set()
        self._thread.join()
        return self.lease

    def _run(self) -> None:
        interval = self._seconds / RENEWALS_PER_LEASE
        while not self._stop.wait(interval):
            try:
                self.lease = self._store.renew(self.lease, self._seconds)
            except LeaseLost as exc:
                self._problem = exc.why
                return
            except Exception as exc:  # the store is unreachable: the lease will lapse
                self._problem = f"could not renew it: {type(exc).__name__}: {exc}"
                return


def extended(lease: Lease, expires: float) -> Lease:
    return replace(lease, expires=expires)


def now() -> float:
    """The in-memory store's clock (a SQLite store uses SQLite's)."""
    return time.time()


__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "LEASE_VARIABLE",
    "Lease",
    "LeaseError",
    "LeaseHeld",
    "LeaseLost",
    "LeaseSettingError",
    "Renewer",
    "lease_seconds",
    "new_owner",
]
