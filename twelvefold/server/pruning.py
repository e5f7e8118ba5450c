"""Retention on a timer (docs/versions.md, "Retention"): with `[tool.twelvefold.retention]`
configured, `serve` (SQLite) and the `twelvefold worker`s (PostgreSQL) prune the store
every `every` (default 1 h), as `twelvefold prune` would with no options.

    [tool.twelvefold.retention]
    finished_after = "30d"
    archive = "archive/threads.jsonl"    # or: delete = true
    every = "1h"                         # how often the server or a worker prunes

Once per period across every process on one store: the periods are aligned to the Unix
epoch (`every` long), and a process prunes a period only if it moves the period's mark
in `server_schedule_runs` (row `@retention`) forward with one conditional write. On
PostgreSQL a prune also holds a session advisory lock, so two prunes never overlap (one
that runs longer than a period makes the next one skip, not run beside it). Retention
without an archive and without `delete = true` is left to the CLI (`prune --archive`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from twelvefold.runtime.config import ConfigError, find_config
from twelvefold.runtime.retention import Pruned, Retention, prune
from twelvefold.runtime.store import EventStore
from twelvefold.server.schedules import ScheduleRuns, cancelled
from twelvefold.server.service import ServeError, Service, Serving

log = logging.getLogger("twelvefold.server")

MARK = "@retention"
"""The `server_schedule_runs` row of the retention timer (a schedule's name cannot start
with `@`: schedules.py)."""
DEFAULT_EVERY = timedelta(hours=1)
LOCK = 0x7477656C7666  # the PostgreSQL advisory lock a prune holds ("twelvf")
LONGEST_SLEEP = 60.0


@dataclass(frozen=True)
class Timed:
    """The retention settings a timer prunes by, and how often."""

    retention: Retention
    every: timedelta


def timed_retention(service: Serving) -> Timed | None:
    """The retention the served agents' configuration asks the server and workers to
    apply on a timer: None when no configuration sets `finished_after` with an `archive`
    or `delete = true`. `ServeError` (one line) for a setting that cannot be used, or two
    configurations that disagree."""
    found: Timed | None = None
    seen: set[Path | None] = set()
    for agent in service.agents.values():
        try:
            config = find_config(agent.directory or Path.cwd())
            if config.path in seen:
                continue
            seen.add(config.path)
            settings = Retention.of(config)
        except ConfigError as exc:
            raise ServeError(f"retention: {exc}") from None
        if settings.finished_after is None or not (settings.archive or settings.delete):
            continue
        timed = Timed(settings, settings.every or DEFAULT_EVERY)
        if found is not None and found != timed:
            raise ServeError("the served agents' configurations set different retention")
        found = timed
    return found


def period_start(now: datetime, every: timedelta) -> datetime:
    """The start of the period `now` is in: periods `every` long from the Unix epoch."""
    length = every.total_seconds()
    return datetime.fromtimestamp((now.timestamp() // length) * length, UTC)


class Pruner:
    """Prunes the store once per period (see the module's docstring). `tick(now)` does
    one look (the tests give it the time); `start()` ticks until `stop()`."""

    def __init__(
        self,
        service: Service,
        timed: Timed,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.service = service
        self.timed = timed
        self.clock = clock
        self.runs = ScheduleRuns(service.database)
        self._task: asyncio.Task[None] | None = None

    async def tick(self, now: datetime) -> list[str] | None:
        """Prune if this process is the first to reach the period of `now`: the ids of
        the threads pruned, or None when another process has (or had) this period."""
        period = period_start(now, self.timed.every)
        if not await asyncio.to_thread(self.runs.claim, MARK, period):
            return None
        settings = self.timed.retention
        assert settings.finished_after is not None
        # In a worker thread, lock and all: connecting to the database blocks.
        done = await asyncio.to_thread(
            _prune_alone, self.service.runtime.store, settings.finished_after, settings.archive
        )
        if done is None:
            return None
        if done.threads or done.versions:
            log.info("retention: pruned %d thread(s) and %d agent version(s)",
                     len(done.threads), len(done.versions))  # fmt: skip
        return done.threads

    async def run(self) -> None:
        while not self.service.stopping:
            now = self.clock()
            try:
                await self.tick(now)
            except Exception:
                log.exception("retention: the prune failed; the next period tries again")
            following = period_start(now, self.timed.every) + self.timed.every
            wait = (following - self.clock()).total_seconds()
            await asyncio.sleep(min(LONGEST_SLEEP, max(0.2, wait)))

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="retention")

    async def stop(self) -> None:
        await cancelled(self._task)
        self._task = None
        self.runs.close()


def _prune_alone(store: EventStore, older_than: timedelta, archive: Path | None) -> Pruned | None:
    """`prune` under the prune's lock; None when another process holds it."""
    with _exclusive(store) as alone:
        return prune(store, older_than=older_than, archive=archive) if alone else None


@contextlib.contextmanager
def _exclusive(store: EventStore) -> Any:
    """On PostgreSQL: hold the prune's advisory lock (a session lock: a killed process's
    session ends and lets it go); yields False when another process holds it. Elsewhere:
    yields True (the period's claim is the guard)."""
    url = getattr(store, "url", None)
    if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
        yield True
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute("SELECT pg_try_advisory_lock(%s)", (LOCK,)).fetchone()
        yield bool(row and row[0])
