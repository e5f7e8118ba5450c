"""Schedules (docs/server.md, "Schedules"): croniter's idea of the next fire, the last
fire kept in the store's SQLite file, a schedule missed while the server was down run
once on start (not once per miss), and a bad entry a one-line start-up error. The clock
is given to the scheduler (no sleeps); the launches are real (service, SQLite, the real
openai client against the scripted model server).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.openai_server import ScriptedOpenAI
from tests.support.server import DEPLOY_CONFIG, Served, deploy_project, served
from twelvefold.runtime.config import toml_text
from twelvefold.server.schedules import (
    Schedule,
    Scheduler,
    ScheduleRuns,
    fire_id,
    parse_schedules,
    schedules_of,
)
from twelvefold.server.service import Caller, ServeError

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("collected")]
HOURLY = (
    DEPLOY_CONFIG
    + """
[schedules.hourly-deploy]
agent = "deploybot"
cron = "0 * * * *"
input = "deploy to staging"
"""
)
T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def s(tmp_path: Path, openai_server: ScriptedOpenAI) -> AsyncIterator[Served]:
    agent = deploy_project(tmp_path / "project", HOURLY)
    async with served(agent, tmp_path / "threads.db", openai_server) as running:
        yield running


def test_the_next_and_latest_fire_are_croniter_s() -> None:
    weekdays = Schedule("s", "a", "0 7 * * 1-5", "")
    friday = datetime(2026, 11, 6, 8, 0, tzinfo=UTC)  # a Friday
    assert weekdays.next(friday) == datetime(2026, 11, 9, 7, 0, tzinfo=UTC)  # Monday
    assert weekdays.latest(friday) == datetime(2026, 11, 6, 7, 0, tzinfo=UTC)
    on_the_dot = datetime(2026, 11, 6, 7, 0, tzinfo=UTC)
    assert weekdays.latest(on_the_dot) == on_the_dot


def test_a_due_time_a_moment_ahead_is_not_the_latest() -> None:
    """Before: `latest` asked croniter for the time before `now` plus one second, so at
    06:59:59.9 a 07:00 schedule was due already: its fire launched early, recorded as
    07:00."""
    weekdays = Schedule("s", "a", "0 7 * * 1-5", "")
    on_the_dot = datetime(2026, 11, 6, 7, 0, tzinfo=UTC)  # a Friday
    assert weekdays.latest(on_the_dot - timedelta(milliseconds=100)) == on_the_dot - timedelta(
        days=1
    )
    assert weekdays.latest(on_the_dot + timedelta(milliseconds=100)) == on_the_dot


async def test_a_schedule_fires_once_when_due_and_once_for_any_number_of_misses(
    s: Served, tmp_path: Path
) -> None:
    [schedule] = schedules_of(s.service)
    assert (schedule.name, schedule.agent, schedule.input) == (
        "hourly-deploy",
        "deploybot",
        "deploy to staging",
    )
    scheduler = Scheduler(s.service, [schedule])
    assert await scheduler.tick(T0) == [], "a new schedule counts from now"
    assert await scheduler.tick(T0 + timedelta(minutes=20)) == []
    [(name, thread_id)] = await scheduler.tick(T0 + timedelta(minutes=31))  # 10:00 passed
    assert name == "hourly-deploy"
    assert s.service.launches.launcher(thread_id) == "schedule:hourly-deploy"
    view = await s.service.view(Caller("ana", "http"), thread_id)
    assert view.agent == "deploybot"
    assert await scheduler.tick(T0 + timedelta(minutes=59)) == []
    scheduler.runs.close()

    # The server was down for ten days (240 fires missed): a new one fires once on start.
    later = Scheduler(s.service, [schedule])
    assert len(await later.tick(T0 + timedelta(days=10))) == 1
    assert await later.tick(T0 + timedelta(days=10, minutes=5)) == []
    assert len(await later.tick(T0 + timedelta(days=10, minutes=31))) == 1
    later.runs.close()
    assert len(await s.service.threads(Caller("ana", "http"))) == 3


async def test_a_schedule_waits_at_most_until_its_next_fire(s: Served) -> None:
    scheduler = Scheduler(s.service, schedules_of(s.service))
    assert scheduler.wait_after(T0) == 60.0
    assert scheduler.wait_after(T0.replace(minute=59, second=50)) == 10.0
    scheduler.runs.close()


def test_bad_schedules_are_one_line_errors() -> None:
    served = {"deploybot": object()}
    cases = {
        "not a cron expression: it has 2 fields": {
            "x": {"agent": "deploybot", "cron": "every monday"}
        },
        "does not serve": {"x": {"agent": "nobody", "cron": "* * * * *"}},
        "must be a table": {"x": "deploybot"},
        "unknown key": {"x": {"agent": "deploybot", "cron": "* * * * *", "when": 1}},
        "needs agent": {"x": {"cron": "* * * * *"}},
    }
    for words, table in cases.items():
        with pytest.raises(ServeError, match=words):
            parse_schedules(table, served)
    assert parse_schedules({"x": {"agent": "deploybot", "cron": "*/5 * * * *"}}, served)


def test_serve_refuses_every_schedule_it_cannot_use_at_start_one_line_each(
    tmp_path: Path,
) -> None:
    """Before: `0 0 30 2 *` (February 30) passed, then killed the scheduler at its first
    tick, silently (a traceback only at shutdown); `* * * * * *` launched a thread every
    second; an input deploybot cannot take (a datetime, nan) was refused at every fire."""
    bad = HOURLY.replace('cron = "0 * * * *"', 'cron = "61 * * * *"') + "".join(
        f'[schedules.{name}]\nagent = "deploybot"\ncron = {cron}\ninput = {value}\n'
        for name, cron, value in (
            ("feb30", '"0 0 30 2 *"', '"never"'),
            ("every-second", '"* * * * * *"', '"flood"'),
            ("dt", '"* * * * *"', "1979-05-27T07:32:00Z"),
            ("nan", '"* * * * *"', "nan"),
            ("table", '"@daily"', '{ env = "staging" }'),
        )
    )
    agent = deploy_project(tmp_path / "project", bad)
    result = subprocess.run(
        [sys.executable, "-m", "twelvefold", "serve", str(agent), "--db",
         str(tmp_path / "threads.db"), "--port", "0"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    config = (tmp_path / "project" / "twelvefold.toml").resolve()
    assert errors == [
        f"error: {config}: schedules.{line}"
        for line in (
            'hourly-deploy: cron = "61 * * * *" is not a cron expression: minute `61` is not'
            " from 0 to 59",
            'feb30: cron = "0 0 30 2 *" never comes due: February has no day 30',
            'every-second: cron = "* * * * * *" is not a cron expression: it has 6 fields, not'
            " five (minute hour day-of-month month day-of-week, in UTC; no seconds, no year),"
            " or is one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly",
            "dt: input = 1979-05-27T07:32:00+00:00 cannot launch deploybot: deploybot takes a"
            " string input, not datetime",
            "nan: input = nan cannot launch deploybot: deploybot takes a string input, not float",
            'table: input = { env = "staging" } cannot launch deploybot: deploybot takes a'
            " string input, not dict",
        )
    ], result.stderr
    assert "Traceback" not in result.stderr


async def test_the_app_runs_the_schedules_and_a_missed_one_fires_once_on_start(
    s: Served, tmp_path: Path
) -> None:
    # The previous server last fired it three hours ago, then went down.
    runs = ScheduleRuns(tmp_path / "threads.db")
    runs.fired("hourly-deploy", datetime.now(UTC) - timedelta(hours=3))
    runs.close()
    async with s.app.router.lifespan_context(s.app):
        for _ in range(3000):  # not a timed assertion: only a broken build waits this long
            # The launch recorded, not only the thread stored (the launcher is recorded
            # after it: leaving the lifespan in between cancelled that).
            launched = await s.service.threads(Caller("ana", "http"))
            if launched and s.service.launches.launcher(launched[0].id) is not None:
                break
            await asyncio.sleep(0.02)
    [info] = await s.service.threads(Caller("ana", "http"))
    assert s.service.launches.launcher(info.id) == "schedule:hourly-deploy"


async def test_a_schedule_due_while_the_server_stops_fires_on_the_next_start(
    s: Served,
) -> None:
    """The server is shutting down when the schedule comes due: nothing is launched, and
    the schedule is not marked as fired, so the next server launches it (once)."""
    [schedule] = schedules_of(s.service)
    stopping = Scheduler(s.service, [schedule])
    assert await stopping.tick(T0) == []
    s.service.stopping = True
    try:
        assert await stopping.tick(T0 + timedelta(minutes=31)) == []
    finally:
        s.service.stopping = False
    stopping.runs.close()
    assert await s.service.threads(Caller("ana", "http")) == []
    restarted = Scheduler(s.service, [schedule])
    assert len(await restarted.tick(T0 + timedelta(minutes=32))) == 1
    assert await restarted.tick(T0 + timedelta(minutes=33)) == []
    restarted.runs.close()


async def test_a_fire_is_launched_once_across_schedulers_and_after_a_crash_before_its_record(
    s: Served,
) -> None:
    """Exactly once per due time: two schedulers (two processes on one store) ticking at
    once launch one thread; a process killed after the launch and before the record
    leaves the due time unrecorded, and the next tick records it without a second launch."""
    import contextlib

    from twelvefold.server.schedules import fire_id

    [schedule] = schedules_of(s.service)
    one, other = Scheduler(s.service, [schedule]), Scheduler(s.service, [schedule])
    assert await one.tick(T0) == []
    due = T0 + timedelta(minutes=30)  # 10:00
    fired = await asyncio.gather(
        one.tick(T0 + timedelta(minutes=31)), other.tick(T0 + timedelta(minutes=31))
    )
    assert sorted(len(launched) for launched in fired) == [0, 1]
    [info] = await s.service.threads(Caller("ana", "http"))
    assert info.id == fire_id("hourly-deploy", due)
    assert one.runs.last("hourly-deploy") == due

    # 11:00 is launched, then the process dies before recording it (as if killed there).
    eleven = due + timedelta(hours=1)
    caller = Caller("schedule:hourly-deploy", "schedule")
    await s.service.launch(caller, "deploybot", "deploy", thread_id=fire_id(schedule.name, eleven))
    assert one.runs.last("hourly-deploy") == due
    assert await other.tick(eleven + timedelta(minutes=1)) == []  # found, not launched again
    assert other.runs.last("hourly-deploy") == eleven
    assert len(await s.service.threads(Caller("ana", "http"))) == 2
    # A record never goes back: an older due time written late changes nothing.
    one.runs.fired("hourly-deploy", due)
    assert one.runs.last("hourly-deploy") == eleven
    for scheduler in (one, other):
        with contextlib.suppress(Exception):
            scheduler.runs.close()


def test_every_bad_schedule_is_named_at_once() -> None:
    """Before: the first bad schedule hid the others, each revealed at the next start."""
    table = {
        "a": {"agent": "deploybot", "cron": "every monday"},
        "b": {"agent": "nobody", "cron": "* * * * *"},
        "ok": {"agent": "deploybot", "cron": "* * * * *"},
        "c": "deploybot",
    }
    with pytest.raises(ServeError) as refused:
        parse_schedules(table, {"deploybot": object()})
    assert [problem.split(" ")[0] for problem in refused.value.problems] == [
        "schedules.a:",
        "schedules.b",
        "schedules.c",
    ]
    many = {f"s{i}": "deploybot" for i in range(1000)}
    with pytest.raises(ServeError) as refused:
        parse_schedules(many, {"deploybot": object()})
    assert len(refused.value.problems) == 20
    assert refused.value.problems[-1] == "981 more schedules refused like these"


def folders_with(tmp_path: Path, configs: dict[str, str]) -> dict[str, Any]:
    """Agents as `schedules_of` sees them, one per folder of tmp_path named by `configs`'
    keys, each with that value as its twelvefold.toml."""
    from types import SimpleNamespace

    agents: dict[str, Any] = {}
    for name, config in configs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "twelvefold.toml").write_text(config)
        agents[name] = SimpleNamespace(directory=tmp_path / name)
    return agents


def test_bad_schedules_in_two_configurations_are_named_at_once(tmp_path: Path) -> None:
    """Agents served from two folders, each with its own configuration: the first file's
    bad schedule hid the second's, revealed only at the next start."""
    from types import SimpleNamespace

    agents = folders_with(tmp_path, {
        name: f'[schedules]\nbad_{name} = {{ agent = "nobody", cron = "* * * * *" }}\n'
        for name in ("one", "two")
    })  # fmt: skip
    with pytest.raises(ServeError) as refused:
        schedules_of(SimpleNamespace(agents=agents))  # type: ignore[arg-type]
    said = " ".join(refused.value.problems)
    assert "schedules.bad_one" in said and "schedules.bad_two" in said, said


def test_schedule_problems_of_every_file_are_named_with_their_file(tmp_path: Path) -> None:
    """Before: `schedules = 3` in one agent folder's configuration stopped the reading
    there, hiding the other file's bad schedules; and no schedule problem named its
    file (`schedules.x: ...`: of which configuration?). A hostile name stays escaped."""
    from types import SimpleNamespace

    from twelvefold.server.settings import settings_problems

    configs = {
        "one": "schedules = 3\n",
        "two": '[schedules."x\\ny\\"z"]\nagent = "nobody"\ncron = "* * * * *"\n'
        + "".join(f'[schedules.s{i}]\nagent = "nobody"\ncron = "* * * * *"\n' for i in range(30)),
        "three": '[schedules.x]\nagent = "three"\ncron = "every monday"\n',
    }
    agents = folders_with(tmp_path, configs)
    one, two, three = (tmp_path / name / "twelvefold.toml" for name in configs)
    expected = [
        f"{one}: [tool.twelvefold.schedules] must be a table, not 3",
        f'{two}: schedules."x\\ny\\"z" names agent = "nobody", which this server does not serve',
        *(
            f'{two}: schedules.s{i} names agent = "nobody", which this server does not serve'
            for i in range(18)
        ),
        f"{two}: 12 more schedules refused like these",
        f'{three}: schedules.x: cron = "every monday" is not a cron expression: it has 2'
        " fields, not five (minute hour day-of-month month day-of-week, in UTC; no seconds,"
        " no year), or is one of @yearly, @annually, @monthly, @weekly, @daily, @midnight,"
        " @hourly",
    ]
    with pytest.raises(ServeError) as refused:
        schedules_of(SimpleNamespace(agents=agents))  # type: ignore[arg-type]
    assert list(refused.value.problems) == expected
    assert settings_problems(agents) == expected  # type: ignore[arg-type]


def test_one_schedule_name_in_two_files_names_both_files(tmp_path: Path) -> None:
    """Before: `two schedules are named nightly`, without saying where either is."""
    from types import SimpleNamespace

    agents = folders_with(tmp_path, {
        name: f'[schedules.nightly]\nagent = "{name}"\ncron = "{cron}"\n'
        for name, cron in (("one", "0 0 * * *"), ("two", "0 1 * * *"))
    })  # fmt: skip
    with pytest.raises(ServeError) as refused:
        schedules_of(SimpleNamespace(agents=agents))  # type: ignore[arg-type]
    one, two = (tmp_path / name / "twelvefold.toml" for name in ("one", "two"))
    assert refused.value.problems == (f"two schedules are named nightly ({one} and {two})",)


def test_only_the_documented_five_field_cron_syntax_is_taken() -> None:
    """Before: anything `croniter.is_valid` took was taken: six fields (seconds: a thread
    every second), a seventh (a year, long past), croniter's own `R`, `L`, `W`, `#`, `?`,
    and a range that runs backwards. docs/server.md describes five fields."""
    served = {"deploybot": object()}
    refused = {
        "* * * * * *": "has 6 fields, not five",
        "0 0 1 1 * 0 2020": "has 7 fields, not five",
        "0 * * *": "has 4 fields, not five",
        "R * * * *": "minute `R` is not",
        "0 0 L * *": "day-of-month `L` is not",
        "0 0 1W * *": "day-of-month `1W` is not",
        "0 0 * * 5#5": "day-of-week `5#5` is not",
        "0 0 ? * *": "day-of-month `?` is not",
        "0 0 * * mon#1": "day-of-week `mon#1` is not",
        "*/0 * * * *": "minute `*/0` is not",
        "5-2 * * * *": "minute `5-2` runs backwards",
        "0 24 * * *": "hour `24` is not from 0 to 23",
        "0 0 0 * *": "day-of-month `0` is not from 1 to 31",
        "0 0 * 13 *": "month `13` is not from 1 to 12",
        "0 0 * * 8": "day-of-week `8` is not from 0 to 7",
        "@reboot": "is not one of @yearly",
    }
    for cron, words in refused.items():
        with pytest.raises(ServeError) as refusal:
            parse_schedules({"x": {"agent": "deploybot", "cron": cron}}, served)
        [line] = refusal.value.problems
        assert line.startswith(f"schedules.x: cron = {toml_text(cron)} "), line
        assert words in line, line
    taken = [
        "*/15 * * * *", "0 7 * * 1-5", "0 7 * * mon-fri", "0 0 1 jan,JUL *", "0 0 29 2 *",
        "0 0 30 2 1", "0 0 * * 7", "0-30/10 9-17 * * *", "@daily", "@hourly", "@weekly",
        "@monthly", "@yearly", "@annually", "@midnight", " 0\t7 * * * ",
    ]  # fmt: skip
    for cron in taken:
        assert parse_schedules({"x": {"agent": "deploybot", "cron": cron}}, served), cron


def test_a_cron_expression_that_never_comes_due_is_refused_saying_why() -> None:
    """Before: `0 0 30 2 *` passed `croniter.is_valid`, then its first `next()` raised in
    the scheduler's task, which died: no schedule fired again, silently."""
    served = {"deploybot": object()}
    cases = {
        "0 0 30 2 *": "never comes due: February has no day 30",
        "0 0 31 4 *": "never comes due: April has no day 31",
        "0 0 30,31 2 *": "never comes due: February has no day 30 or 31",
        "0 0 31 feb,apr *": "never comes due: neither February nor April has a day 31",
        "0 0 31 2,4,6,9,11 *": "never comes due: none of February, April, June, September,"
        " November has a day 31",
    }
    for cron, why in cases.items():
        with pytest.raises(ServeError) as refusal:
            parse_schedules({"feb30": {"agent": "deploybot", "cron": cron}}, served)
        assert refusal.value.problems == (f"schedules.feb30: cron = {toml_text(cron)} {why}",)


async def test_one_schedule_failing_at_run_time_never_stops_the_others(
    s: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a schedule croniter cannot answer for (`0 0 30 2 *`, made here directly:
    the start-up checks refuse it) raised out of `tick` before the schedules after it
    were looked at, and out of `wait_after`. Now it is said once and the others go on."""
    [good] = schedules_of(s.service)
    broken = Schedule("feb30", "deploybot", "0 0 30 2 *", "never")
    scheduler = Scheduler(s.service, [broken, good])
    assert await scheduler.tick(T0) == []  # both first seen
    with caplog.at_level("INFO", logger="twelvefold.server"):
        [(name, _)] = await scheduler.tick(T0 + timedelta(minutes=31))
        assert name == "hourly-deploy"
        assert scheduler.wait_after(T0.replace(minute=59, second=50)) == 10.0
        assert [name for name, _ in await scheduler.tick(T0 + timedelta(minutes=91))] == [
            "hourly-deploy"
        ]
        assert scheduler.wait_after(T0 + timedelta(minutes=91)) == 60.0
    said = [record for record in caplog.records if "feb30" in record.getMessage()]
    assert [(record.levelname, record.getMessage()) for record in said] == [
        (
            "ERROR",
            "schedule feb30 failed (CroniterBadDateError: failed to find prev date); the"
            " other schedules go on, and it is tried again at every tick without saying so"
            " again",
        )
    ]
    scheduler.runs.close()


async def test_the_scheduler_s_loop_goes_on_past_a_failing_schedule(
    s: Served, tmp_path: Path
) -> None:
    """Before: `wait_after` raised for the broken schedule outside `run`'s `try`, so the
    task died after its first tick and `hourly-deploy` fired once, never again. The
    clock is given: 09:59:59.9, then 10:00:01 (the loop sleeps half a second between)."""
    [good] = schedules_of(s.service)
    broken = Schedule("feb30", "deploybot", "0 0 30 2 *", "never")
    runs = ScheduleRuns(tmp_path / "threads.db")
    for name in ("hourly-deploy", "feb30"):
        runs.fired(name, T0 - timedelta(hours=1))  # 08:30: the 09:00 fire is due
    runs.close()
    ten = T0.replace(hour=10, minute=0)
    times = iter([ten - timedelta(milliseconds=100)])
    scheduler = Scheduler(s.service, [good, broken], clock=lambda: next(times, ten))
    recorded = ScheduleRuns(tmp_path / "threads.db")
    scheduler.start()
    try:
        for _ in range(3000):  # not a timed assertion: only a broken build waits this long
            if recorded.last("hourly-deploy") == ten:  # the 10:00 fire launched and recorded
                break
            await asyncio.sleep(0.02)
        assert scheduler._task is not None and not scheduler._task.done()
    finally:
        await scheduler.stop()
        recorded.close()
    fired = {info.id for info in await s.service.threads(Caller("ana", "http"))}
    assert fired == {fire_id("hourly-deploy", T0.replace(minute=0)), fire_id("hourly-deploy", ten)}


async def test_a_clock_that_jumps_ahead_and_back_fires_what_is_due_once(s: Served) -> None:
    """Before: a clock a day ahead for a moment recorded tomorrow's fire, and back on time
    the schedule stayed silent until the clock caught up with that record. Now what is due
    by the current clock fires, still once per due time across processes on one store."""
    [schedule] = schedules_of(s.service)
    one = Scheduler(s.service, [schedule])
    assert await one.tick(T0) == []  # 09:30, first seen
    assert len(await one.tick(T0 + timedelta(minutes=31))) == 1  # 10:00
    assert len(await one.tick(T0 + timedelta(days=1))) == 1  # a day ahead: its 09:00
    assert len(await one.tick(T0 + timedelta(minutes=91))) == 1  # back: 11:00
    assert await one.tick(T0 + timedelta(minutes=95)) == []
    other = Scheduler(s.service, [schedule])  # a second server on the store
    assert await other.tick(T0 + timedelta(minutes=96)) == []
    assert len(await other.tick(T0 + timedelta(minutes=151))) == 1  # 12:00
    assert await one.tick(T0 + timedelta(minutes=152)) == []
    for scheduler in (one, other):
        scheduler.runs.close()
    launched = {info.id for info in await s.service.threads(Caller("ana", "http"))}
    assert launched == {
        fire_id("hourly-deploy", T0 + timedelta(hours=hours)) for hours in (0.5, 1.5, 2.5, 23.5)
    }


def test_a_schedule_its_agent_s_launchers_leave_out_is_refused_at_start(tmp_path: Path) -> None:
    """Before: with `launchers` naming groups `schedule:NAME` is in none of, every fire
    was refused (`Forbidden`), a warning each time, the schedule never launching."""
    from twelvefold.runtime.api import AsyncRuntime
    from twelvefold.runtime.store import MemoryStore
    from twelvefold.server.service import served_agents

    config = HOURLY.replace(
        "[approvers]\n", '[server]\nlaunchers = ["release-managers", "bots"]\n[approvers]\n'
    )
    refused = deploy_project(tmp_path / "refused", config)
    with pytest.raises(ServeError) as refusal:
        served_agents(AsyncRuntime(MemoryStore()), [refused])
    assert refusal.value.problems == (
        f"{(tmp_path / 'refused' / 'twelvefold.toml').resolve()}: schedules.hourly-deploy:"
        " deploybot may be launched only by members of release-managers, bots (launchers),"
        " and schedule:hourly-deploy is in none of them; add it to one",
    )
    allowed = deploy_project(
        tmp_path / "allowed",
        config.replace("[approvers]\n", '[approvers]\nbots = ["schedule:hourly-deploy"]\n'),
    )
    assert served_agents(AsyncRuntime(MemoryStore()), [allowed])


async def test_an_unreadable_record_counts_from_now_and_the_schedule_fires_again(
    s: Served, tmp_path: Path
) -> None:
    """Before: a `fired_at` that is no time (an edited row) was read as "first seen", but
    the first-seen write does nothing over an existing row: every tick read it again and
    the schedule never fired."""
    import sqlite3

    [schedule] = schedules_of(s.service)
    runs = ScheduleRuns(tmp_path / "threads.db")
    runs.fired("hourly-deploy", T0)
    runs.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "threads.db")) as db, db:
        db.execute("UPDATE server_schedule_runs SET fired_at = 'yesterday'")
    scheduler = Scheduler(s.service, [schedule])
    assert await scheduler.tick(T0) == []  # counts from now: nothing for the past
    assert [name for name, _ in await scheduler.tick(T0 + timedelta(minutes=31))] == [
        "hourly-deploy"
    ]
    scheduler.runs.close()


async def test_a_schedule_s_name_is_logged_on_one_line(
    s: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a name holding a line break (a quoted TOML key can) was logged as it is:
    `schedules checked: tick` and a line of its own, `ERROR: ...`, forged by the name."""
    [good] = schedules_of(s.service)
    forged = "tick\nERROR: twelvefold.server: the store is corrupt"
    named = Schedule(forged, good.agent, good.cron, good.input)
    broken = Schedule(forged + "\r2", good.agent, "0 0 30 2 *", "never")
    scheduler = Scheduler(s.service, [named, broken], clock=lambda: T0 + timedelta(minutes=31))
    with caplog.at_level("INFO", logger="twelvefold.server"):
        assert await scheduler.tick(T0) == []  # both first seen
        scheduler.start()
        try:
            for _ in range(3000):  # not a timed assertion: only a broken build waits this long
                if any("schedules checked" in record.getMessage() for record in caplog.records):
                    break
                await asyncio.sleep(0.02)
        finally:
            await scheduler.stop()
    said = [record.getMessage() for record in caplog.records if "tick" in record.getMessage()]
    assert len(said) == 3, said  # launched, failed, checked
    for message in said:
        assert "\n" not in message and "\r" not in message, message
        assert "tick\\nERROR: twelvefold.server: the store is corrupt" in message, message
    scheduler.runs.close()
