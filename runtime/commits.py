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
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True, eq=False)
class Pending:
    """One caller's work waiting for a group: `work()` runs inside the shared transaction."""

    work: Callable[[], Any]
    done: bool = False
    result: Any = None
    error: BaseException | None = None


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
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def submit(self, work: Callable[[], Any]) -> Any:
        """`work()`'s result once its transaction committed; its error (or the commit's)
        otherwise. Blocks the calling thread meanwhile."""
        mine = Pending(work)
        with self._changed:
            self._waiting.append(mine)
            while not mine.done and self._leading:
                self._changed.wait()
            if not mine.done:  # nobody commits now: this caller leads the next group
                group, self._waiting = self._waiting, []
                self._leading = True
        if not mine.done:
            self._lead(group)
        if mine.error is not None:
            raise mine.error
        return mine.result

    def waiting(self) -> int:
        """How many appends wait for the next group (for tests)."""
        with self._changed:
            return len(self._waiting)

    def _lead(self, group: list[Pending]) -> None:
        try:
            self.run_group(group)
        except BaseException as exc:  # the commit failed: no member's events were kept
            for item in group:
                if item.error is None:
                    item.error, item.result = exc, None
        finally:
            with self._changed:
                for item in group:
                    item.done = True
                self._leading = False
                self.stats.groups += 1
                self.stats.members += len(group)
                self.stats.largest = max(self.stats.largest, len(group))
                self._changed.notify_all()
