"""Launching agents on a schedule (docs/server.md, "Schedules").

    [tool.twelvefold.schedules.morning-report]   # the schedule's name
    agent = "reporter"          # an agent this server serves (`agent NAME`)
    cron = "0 7 * * 1-5"        # five cron fields (cron.py), in UTC
    input = "yesterday's sales" # the thread's input (any TOML value)

Each schedule launches its agent as the person `schedule:NAME`. The last time each one
fired is kept in `server_schedule_runs` (the store's database): a process that was down
while a schedule came due launches it once on start, however many times it was missed,
and a schedule seen for the first time starts counting from now (nothing fires for the
past).

Exactly once per due time, across any number of servers and workers on one store: the
thread a fire launches has an id made from the schedule's name and the due time
(`fire_id`), so a second process firing the same due time finds the thread there (the
store refuses a second thread with one id) and launches nothing; the fire is recorded
after the launch, with a conditional UPDATE that only moves `fired_at` forward. A
process killed between the launch and the record leaves the due time unrecorded: the
next tick, anywhere, finds the thread already launched and records it.

A cron expression that is not the documented five fields or never comes due (cron.py),
an agent the server does not serve, an input that agent cannot take, `launchers` that
leave `schedule:NAME` out, or an entry of the wrong shape stops the server from starting
(`ServeError`, one line each, naming the configuration file). At run time, one schedule
that fails never stops the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from croniter import croniter

from twelvefold.runtime.api import InputError, typed_input
from twelvefold.runtime.config import ConfigError, find_config, toml_key, toml_text
from twelvefold.runtime.loop import Agent
from twelvefold.runtime.store import ThreadNotFound
from twelvefold.runtime.terminal import one_line
from twelvefold.server.cron import cron_problem, for_croniter
from twelvefold.server.replies import server_tables
from twelvefold.server.service import (
    Caller,
    ServeError,
    Service,
    ServiceError,
    Serving,
    capped,
    server_settings,
)
from twelvefold.server.tables import Table

log = logging.getLogger("twelvefold.server")

LONGEST_SLEEP = 60.0
"""The scheduler looks at the clock at least this often (seconds), so a clock that jumps
does not leave a schedule waiting long."""


@dataclass(frozen=True)
class Schedule:
    name: str
    agent: str
    cron: str
    input: Any

    @property
    def person(self) -> str:
        return f"schedule:{self.name}"

    def latest(self, now: datetime) -> datetime:
        """The latest time at or before `now` the expression names (UTC)."""
        # croniter answers the time before the one it is given, to the second: give it
        # the next whole second (not `now` plus one: 06:59:59.9 would find 07:00).
        after = now.replace(microsecond=0) + timedelta(seconds=1)
        return croniter(for_croniter(self.cron), after).get_prev(datetime).astimezone(UTC)

    def next(self, now: datetime) -> datetime:
        """The first time after `now` the expression names (UTC)."""
        return croniter(for_croniter(self.cron), now).get_next(datetime).astimezone(UTC)


def parse_schedules(
    table: Mapping[str, Any], served: Mapping[str, object], where: str = ""
) -> list[Schedule]:
    """The schedules of one `[tool.twelvefold.schedules]` table. `ServeError` (one line
    each, for every entry refused, not only the first, each after `where`: the file's
    name and `: `) for an entry that is not a table of agent, cron and input, a cron
    expression that is not the five documented fields or never comes due (cron.py), an
    agent not in `served`, or (`served`'s `Agent`s) an input that agent cannot take or
    its `launchers` leaving the schedule out."""
    schedules: list[Schedule] = []
    problems: list[str] = []
    for name, entry in table.items():
        try:
            schedules.append(_schedule(str(name), entry, served))
        except ServeError as exc:
            problems.extend(where + problem for problem in exc.problems)
    if problems:
        raise ServeError(
            *capped(problems, lambda more: f"{where}{more:,} more schedules refused like these")
        )
    return schedules


def _schedule(name: str, entry: Any, served: Mapping[str, object]) -> Schedule:
    where = f"schedules.{toml_key(name)}"
    if name.startswith("@"):  # `@retention` is the retention timer's (pruning.py)
        raise ServeError(f"{where}: a schedule's name cannot start with @")
    if not isinstance(entry, Mapping):
        raise ServeError(
            f"{where} must be a table with agent, cron and input, not {toml_text(entry)}"
        )
    unknown = sorted(map(str, set(entry) - {"agent", "cron", "input"}))
    if unknown:
        raise ServeError(f"{where}: unknown key {toml_key(unknown[0])} (agent, cron, input)")
    agent, cron = entry.get("agent"), entry.get("cron")
    if not isinstance(agent, str) or not isinstance(cron, str):
        raise ServeError(
            f'{where} needs agent = "NAME" and cron = "EXPRESSION", not agent = '
            f"{toml_text(agent) if agent is not None else '(missing)'} and cron = "
            f"{toml_text(cron) if cron is not None else '(missing)'}"
        )
    if agent not in served:
        raise ServeError(
            f"{where} names agent = {toml_text(agent)}, which this server does not serve"
        )
    problem = cron_problem(cron)
    if problem is not None:
        raise ServeError(f"{where}: cron = {toml_text(cron)} {problem}")
    value = entry.get("input", "")
    served_agent = served[agent]
    if isinstance(served_agent, Agent):  # what every fire's `launch` would check: at start
        try:
            typed_input(served_agent, value)
        except InputError as exc:
            raise ServeError(
                f"{where}: input = {toml_text(value)} cannot launch {agent}: {exc}"
            ) from None
        _may_launch(served_agent, f"schedule:{name}", where)
    return Schedule(name, agent, cron, value)


def _may_launch(agent: Agent, person: str, where: str) -> None:
    """`ServeError` when the agent's `launchers` leave `person` out: every fire would be
    refused. A configuration that cannot be read is said by its own reader (settings.py)."""
    try:
        config = find_config(agent.directory or Path.cwd())
        launchers = server_settings(config)[2]
        groups = config.approvers
    except ConfigError:
        return
    if launchers is not None and not any(person in groups.get(g, ()) for g in launchers):
        raise ServeError(
            f"{where}: {agent.name} may be launched only by members of"
            f" {', '.join(map(toml_key, launchers))} (launchers), and {person} is in none of"
            " them; add it to one"
        )


def schedules_of(service: Serving) -> list[Schedule]:
    """Every schedule in the served agents' configuration (each file once). `ServeError`
    as `parse_schedules`, and for two schedules with one name."""
    found: dict[str, tuple[Path | None, Schedule]] = {}
    # Every file's problems (twenty lines at most each), each named with its file, not
    # the first file's alone.
    tables, problems = server_tables(service, "schedules")
    twice: list[str] = []
    for path, table in tables:
        try:
            parsed = parse_schedules(table, service.agents, f"{path}: ")
        except ServeError as exc:
            problems.extend(exc.problems)
            continue
        for schedule in parsed:
            if schedule.name in found and found[schedule.name][1] != schedule:
                twice.append(
                    f"two schedules are named {toml_key(schedule.name)}"
                    f" ({found[schedule.name][0]} and {path})"
                )
            found[schedule.name] = (path, schedule)
    problems.extend(capped(twice, lambda more: f"{more:,} more names given twice"))
    if problems:
        raise ServeError(*problems)
    return [schedule for _, schedule in found.values()]


def fire_id(name: str, due: datetime) -> str:
    """The id of the thread schedule `name` launches for due time `due`: the same in
    every process (16 hex digits, as `new_thread_id`'s), so a fire launched twice is
    refused by the store the second time."""
    stamp = due.astimezone(UTC).isoformat()
    return hashlib.sha256(f"twelvefold schedule\0{name}\0{stamp}".encode()).hexdigest()[:16]


class ScheduleRuns(Table):
    """`server_schedule_runs`: schedule name -> when it last fired, and what it launched."""

    def last(self, name: str) -> datetime | None:
        rows = self._db.rows("SELECT fired_at FROM server_schedule_runs WHERE name = ?", (name,))
        if not rows:
            return None
        try:
            return datetime.fromisoformat(str(rows[0][0])).astimezone(UTC)
        except ValueError:
            # An edited row: count from now rather than fire for the past. Gone (unless
            # another process rewrote it meanwhile), so `first_seen` writes the time.
            self._db.change(
                "DELETE FROM server_schedule_runs WHERE name = ? AND fired_at = ?",
                (name, rows[0][0]),
            )
            return None

    def claim(self, name: str, at: datetime) -> bool:
        """Move `name`'s mark forward to `at`; True when this call moved it (no process
        had reached `at` yet), False otherwise. One conditional write: of several
        processes claiming one `at`, exactly one gets True."""
        stamp = at.astimezone(UTC).isoformat()
        return (
            self._db.change(
                "INSERT INTO server_schedule_runs (name, fired_at, thread_id) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET fired_at = excluded.fired_at"
                " WHERE server_schedule_runs.fired_at < excluded.fired_at",
                (name, stamp, None),
            )
            == 1
        )

    def first_seen(self, name: str, at: datetime) -> None:
        """Start counting a schedule from `at` (unless another process started first)."""
        self._db.change(
            "INSERT INTO server_schedule_runs (name, fired_at, thread_id) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO NOTHING",
            (name, at.astimezone(UTC).isoformat(), None),
        )

    def fired(self, name: str, at: datetime, thread_id: str | None = None) -> None:
        """Record that the schedule fired for due time `at`, unless a later one was
        recorded already (times are stored as UTC ISO 8601, which sort as text)."""
        stamp = at.astimezone(UTC).isoformat()
        self._db.change(
            "INSERT INTO server_schedule_runs (name, fired_at, thread_id) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET fired_at = excluded.fired_at,"
            " thread_id = excluded.thread_id"
            " WHERE server_schedule_runs.fired_at < excluded.fired_at",
            (name, stamp, thread_id),
        )


class Scheduler:
    """Launches each schedule when it comes due. `tick(now)` does one look (the tests
    give it the time); `run()` ticks until cancelled."""

    def __init__(
        self,
        service: Service,
        schedules: list[Schedule],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.service = service
        self.schedules = schedules
        self.clock = clock
        self.runs = ScheduleRuns(service.database)
        self._task: asyncio.Task[None] | None = None
        self._failing: dict[str, str] = {}  # schedule name -> how it failed, said once

    async def tick(self, now: datetime) -> list[tuple[str, str]]:
        """Launch each schedule that came due since it last fired (once, however many
        times it came due, and once across every process ticking on this store);
        `(schedule name, thread id)` for each launch this call made. A schedule that
        fails (its store, croniter) is said once and the others go on."""
        launched: list[tuple[str, str]] = []
        for schedule in self.schedules:
            try:
                thread_id = await self._fire(schedule, now)
            except _LeftToNextStart:
                log.info("schedule %s is left to the next start", one_line(schedule.name))
                break
            except Exception as exc:  # one schedule's failure never stops the others
                said = one_line(f"{type(exc).__name__}: {exc}")  # a store's text, say
                if self._failing.get(schedule.name) != said:
                    self._failing[schedule.name] = said
                    log.error("schedule %s failed (%s); the other schedules go on, and it is"
                              " tried again at every tick without saying so again",
                              one_line(schedule.name), said)  # fmt: skip
                    log.debug("schedule %s failed", one_line(schedule.name), exc_info=exc)
                continue
            if self._failing.pop(schedule.name, None) is not None:
                log.info("schedule %s works again", one_line(schedule.name))
            if thread_id is not None:
                launched.append((schedule.name, thread_id))
        return launched

    async def _fire(self, schedule: Schedule, now: datetime) -> str | None:
        """Launch `schedule` if it came due by `now` and has not fired for that due
        time; the thread's id when this call launched it."""
        last = await asyncio.to_thread(self.runs.last, schedule.name)
        if last is None:  # first seen: count from now
            await asyncio.to_thread(self.runs.first_seen, schedule.name, now)
            return None
        due = schedule.latest(now)
        # A record later than the clock was written by a clock ahead of this one (this
        # one before it was set back, or another process's): it does not say `due` fired,
        # so its thread is looked for (`_launch`) rather than the schedule kept silent
        # until the clock catches up with the record.
        if due <= last <= now:
            return None
        thread_id = fire_id(schedule.name, due)
        try:
            fresh = await self._launch(schedule, thread_id)
        except ServiceError as exc:
            if self.service.stopping:  # nothing launched: the next start fires it
                raise _LeftToNextStart from None
            log.warning("schedule %s could not launch %s: %s", one_line(schedule.name),
                        one_line(schedule.agent), one_line(exc.detail))  # fmt: skip
            await asyncio.to_thread(self.runs.fired, schedule.name, due, None)
            return None
        await asyncio.to_thread(self.runs.fired, schedule.name, due, thread_id)
        if not fresh:
            return None
        log.info("schedule %s launched thread %s", one_line(schedule.name), thread_id)
        return thread_id

    async def _launch(self, schedule: Schedule, thread_id: str) -> bool:
        """Launch the fire's thread; False when it exists already (another process, or
        this one before a crash, launched it). `ServiceError` when it cannot launch."""
        if await self._exists(thread_id):
            return False
        caller = Caller(schedule.person, "schedule")
        try:
            await self.service.launch(caller, schedule.agent, schedule.input, thread_id=thread_id)
        except ServiceError:
            if await self._exists(thread_id):  # launched by another process meanwhile
                return False
            raise
        return True

    async def _exists(self, thread_id: str) -> bool:
        try:
            await self.service.runtime.info(thread_id)
        except ThreadNotFound:
            return False
        return True

    def wait_after(self, now: datetime) -> float:
        """Seconds to sleep after a tick at `now`: until the next schedule is due, at
        most LONGEST_SLEEP."""
        soonest = LONGEST_SLEEP
        for schedule in self.schedules:
            try:
                soonest = min(soonest, (schedule.next(now) - now).total_seconds())
            except Exception:  # `tick` says it, once; LONGEST_SLEEP ticks it anyway
                continue
        return min(LONGEST_SLEEP, max(0.5, soonest))

    async def run(self) -> None:
        first = True
        while not self.service.stopping:
            now = self.clock()
            try:
                await self.tick(now)
                if first:
                    names = ", ".join(one_line(schedule.name) for schedule in self.schedules)
                    log.info("schedules checked: %s", names)
                    first = False
            except Exception:
                log.exception("the scheduler's tick failed; the next one tries again")
            await asyncio.sleep(self.wait_after(now))

    def start(self) -> None:
        if self.schedules and self._task is None:
            self._task = asyncio.create_task(self.run(), name="schedules")

    async def stop(self) -> None:
        await cancelled(self._task)
        self._task = None
        self.runs.close()


class _LeftToNextStart(Exception):
    """A fire the server's shutdown refused: nothing launched, nothing recorded."""


async def cancelled(task: asyncio.Task[None] | None) -> None:
    """Cancel a background loop (the scheduler's, the retention timer's) and wait for
    it to end."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
