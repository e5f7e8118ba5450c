"""Group commit: the appends of many threads of one process share one transaction.

A durable append costs one `fsync` (SQLite, `synchronous=FULL`), whatever it writes; a
server running many threads pays it once per event, one after the other. Here the
appends that arrive while a commit is under way wait for it to end, and the first of
them then commits them all in one transaction (leader and followers: the caller that
finds no commit under way leads the next one). Nothing is delayed on purpose: a lone
thread commits at once, exactly as before, and the window in which appends are grouped
is the previous commit itself.

What does not change:
- `append` returns (or raises) only after the transaction holding its events committed
  (or rolled back): a process killed at any moment loses no acknowledged event.
- Each append is judged on its own, in order, inside the shared transaction (a
  savepoint each): one refused with `Conflict` or `LeaseLost` writes nothing and leaves
  the others in the group untouched; an error of the commit itself is every member's.

Callers on an event loop (`submit_async`: the server, `AsyncRuntime` with `offload`) do
not each take a worker thread to wait in: each awaits a future, a worker thread commits
the group, and the loop is woken once per group to settle all of its members' futures.
A thread handed to every append, blocked until its group committed, cost more CPU than
the append itself (the pool's queue, a lock, a condition, a future chained back to the
loop); with a hundred threads at once that CPU, not the disk, was the limit.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .pools import SharedPool

if TYPE_CHECKING:
    import asyncio


@dataclass(slots=True, eq=False)
class Pending:
    """One caller's work waiting for a group: `work()` runs inside the shared transaction."""

    work: Callable[[], Any]
    done: bool = False
    result: Any = None
    error: BaseException | None = None
    future: asyncio.Future[Any] | None = None
    """Set for a caller on an event loop (`submit_async`), settled on that loop."""


@dataclass(slots=True)
class GroupStats:
    """How many transactions committed how many appends (for benchmarks and tests)."""

    groups: int = 0
    members: int = 0
    largest: int = 0


@dataclass(eq=False)
class GroupCommit:
    """Runs each submitted `work` inside a transaction shared with whatever other work
    was submitted meanwhile. `run_group(items)` is the store's: it opens the transaction,
    runs each item's `work` in order under its own savepoint (setting `result` or
    `error`), and commits; if it raises, every item not yet failed gets that error."""

    run_group: Callable[[Sequence[Pending]], None]
    stats: GroupStats = field(default_factory=GroupStats)
    _waiting: list[Pending] = field(default_factory=list)
    _leading: bool = False
    _blocked: int = 0
    """Callers of `submit` waiting on `_changed` (none: nobody to wake)."""
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def submit(self, work: Callable[[], Any]) -> Any:
        """`work()`'s result once its transaction committed; its error (or the commit's)
        otherwise. Blocks the calling thread meanwhile."""
        with self._changed:
            alone = not self._leading and not self._waiting
            if alone:
                # Nobody commits and nobody waits: this caller commits a group of one at
                # once, on its own thread (a lone thread's every append).
                self._leading = True
            else:
                mine = Pending(work)
                self._waiting.append(mine)
                self._blocked += 1
                while not mine.done and self._leading:
                    self._changed.wait()
                self._blocked -= 1
                if not mine.done:  # nobody commits now: this caller leads the next group
                    group, self._waiting = self._waiting, []
                    self._leading = True
        if alone:
            return self._alone(work)
        if not mine.done:
            self._lead(group)
        if mine.error is not None:
            raise mine.error
        return mine.result

    async def submit_async(self, work: Callable[[], Any]) -> Any:
        """`submit` for a caller on an event loop: the same promises, and the loop is
        free while the group commits (on a worker thread of `committers()`).

        Cancelled before its group began, `work` never runs; cancelled later, it may be
        committed all the same (as a caller killed while waiting may find it stored)."""
        import asyncio

        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        mine = Pending(work, future=future)
        with self._changed:
            self._waiting.append(mine)
            start = not self._leading
            self._leading = True
        if start:  # nobody commits now: a worker thread leads the next group
            self._hand_over()
        return await future

    def waiting(self) -> int:
        """How many appends wait for the next group (for tests)."""
        with self._changed:
            return len(self._waiting)

    def _drain(self) -> None:
        """A worker thread's turn as leader: the group waiting now."""
        with self._changed:
            group, self._waiting = self._waiting, []
        self._lead(group)

    def _alone(self, work: Callable[[], Any]) -> Any:
        """`_lead` of a group of one blocked caller (this one), which holds the lead:
        the same outcome, without the futures' bookkeeping."""
        mine = Pending(work)
        try:
            self.run_group((mine,))
        except BaseException as exc:  # the commit failed: its events were not kept
            if mine.error is None:
                mine.error, mine.result = exc, None
        finally:
            with self._changed:
                mine.done = True
                stats = self.stats
                stats.groups += 1
                stats.members += 1
                if stats.largest < 1:
                    stats.largest = 1
                waiting = self._waiting
                drain = bool(waiting) and all(i.future is not None for i in waiting)
                self._leading = drain
                if self._blocked:
                    self._changed.notify_all()
            if drain:
                self._hand_over()
        if mine.error is not None:
            raise mine.error
        return mine.result

    def _lead(self, group: list[Pending]) -> None:
        futures = any(item.future is not None for item in group)
        live = (
            [item for item in group if item.future is None or not item.future.cancelled()]
            if futures
            else group
        )
        try:
            if live:
                self.run_group(live)
        except BaseException as exc:  # the commit failed: no member's events were kept
            for item in live:
                if item.error is None:
                    item.error, item.result = exc, None
        finally:
            with self._changed:
                for item in group:
                    item.done = True
                self._leading = False
                self.stats.groups += 1
                self.stats.members += len(live)
                self.stats.largest = max(self.stats.largest, len(live))
                # A blocked caller among those waiting leads the next group when woken;
                # callers on event loops have nobody to do it for them.
                drain = bool(self._waiting) and all(i.future is not None for i in self._waiting)
                self._leading = drain
                if self._blocked:
                    self._changed.notify_all()
            if futures:
                _settle_futures(group)
            if drain:
                self._hand_over()

    def _hand_over(self) -> None:
        """Have a worker thread lead the next group (this caller holds the lead for it)."""
        try:
            committers().submit(self._drain)
        except RuntimeError:  # the interpreter is shutting down: lead it here instead
            self._drain()


def _settle_futures(group: Sequence[Pending]) -> None:
    """Hand each event loop its members' outcomes, in one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Pending]] = {}
    for item in group:
        if item.future is not None:
            by_loop.setdefault(item.future.get_loop(), []).append(item)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_settle, items)


def _settle(items: Sequence[Pending]) -> None:
    """On the members' event loop: each future gets its outcome (unless it was cancelled)."""
    for item in items:
        future = item.future
        if future is None or future.done():
            continue
        if item.error is not None:
            future.set_exception(item.error)
        else:
            future.set_result(item.result)


COMMITTERS = 8
"""Worker threads that lead groups for callers on event loops, shared by every store of
the process. One leads a store's group at a time; a store whose appends keep coming
hands the next group back to the pool's queue, so other stores get their turn."""

committers = SharedPool(COMMITTERS, "twelvefold-commit")
