"""The cron expressions a schedule takes (twelvefold/server/cron.py, docs/server.md,
"Schedules"): every expression `cron_problem` takes fires when croniter says it does,
checked against a reading of the documented syntax written here (not cron.py's)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from twelvefold.server.cron import cron_problem
from twelvefold.server.schedules import Schedule, parse_schedules

NOW = datetime(2026, 12, 2, 7, 13, tzinfo=UTC)  # a Wednesday
BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def number(text: str, field: int) -> int:
    if field == 3 and text.lower() in MONTHS:
        return MONTHS.index(text.lower()) + 1
    if field == 4 and text.lower() in DAYS:
        return DAYS.index(text.lower())
    return int(text)


def values(word: str, field: int) -> set[int]:
    """The values one field names, as docs/server.md says: `*`, `N`, `N-M`, `*/S`,
    `N-M/S`, or a comma list of these."""
    low, high = BOUNDS[field]
    named: set[int] = set()
    for item in word.split(","):
        span, _, step = item.partition("/")
        if span == "*":
            first, last = low, high
        else:
            first_text, _, last_text = span.partition("-")
            first = number(first_text, field)
            last = number(last_text, field) if last_text else first
        named.update(range(first, last + 1, int(step) if step else 1))
    if field == 4:
        named = {day % 7 for day in named}  # 7 is Sunday too
    return named


def fires(cron: str, after: datetime, count: int) -> list[datetime]:
    """The first `count` times after `after` that `cron` names, by brute force over
    days (and each matching day's hours and minutes)."""
    words = cron.split()
    minutes, hours, days, months, weekdays = (values(w, i) for i, w in enumerate(words))
    either = words[2] != "*" and words[4] != "*"  # both given: either day fires
    found: list[datetime] = []
    day = after.date()
    while len(found) < count and day < date(after.year + 30, 1, 1):
        on_day, on_weekday = day.day in days, day.isoweekday() % 7 in weekdays
        if day.month in months and ((on_day or on_weekday) if either else on_day and on_weekday):
            for hour in sorted(hours):
                for minute in sorted(minutes):
                    at = datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)
                    if at > after and len(found) < count:
                        found.append(at)
        day += timedelta(days=1)
    return found


def item(field: int) -> st.SearchStrategy[str]:
    low, high = BOUNDS[field]
    value = st.integers(low, high)
    span = st.tuples(value, value).map(lambda pair: f"{min(pair)}-{max(pair)}")
    step = st.integers(1, high + 5).map(str)
    return st.one_of(
        st.just("*"),
        value.map(str),
        span,
        step.map(lambda s: f"*/{s}"),
        st.tuples(span, step).map("/".join),
    )


def field(index: int) -> st.SearchStrategy[str]:
    return st.lists(item(index), min_size=1, max_size=3).map(",".join)


expressions = st.tuples(*(field(i) for i in range(5))).map(" ".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions)
@example("30-30 * * * *")
@example("0 0 * * 1-1")
@example("0 0 1-1 * *")
@example("5-5/2 * * * *")
@example("1,5-5 * * * *")
@example("0 0 * 3-3 *")
@example("0 5-5 * * *")
@example("*/1 * * * *")
@example("0 0 */1 * 1")
@example("10-20/100 * * * *")
@example("0 0 1 * *,*")
@example("* * */2 * 0-6")
@example("*/45 * * * *")
def test_every_expression_taken_fires_when_its_fields_say(cron: str) -> None:
    """Before: `30-30 * * * *` (and every `N-N`, `N-N/S`, a list holding one) passed the
    check, and croniter read the range as `*`: a thread every minute, not every hour."""
    if cron_problem(cron, NOW) is not None:
        return
    schedule = Schedule("x", "deploybot", cron, "")
    croniter_s, now = [], NOW
    for _ in range(3):
        now = schedule.next(now)
        croniter_s.append(now)
    assert croniter_s == fires(cron, NOW, 3), cron


@pytest.mark.parametrize(
    ("cron", "first"),
    [
        ("30-30 * * * *", ["12-02 07:30", "12-02 08:30"]),
        ("0 0 * * 1-1", ["12-07 00:00", "12-14 00:00"]),  # Mondays
        ("0 0 1-1 * *", ["01-01 00:00", "02-01 00:00"]),
        ("0 0 * * sun-sun", ["12-06 00:00", "12-13 00:00"]),
        ("5-5/2 * * * *", ["12-02 08:05", "12-02 09:05"]),
        ("0,5-5 * * * *", ["12-02 08:00", "12-02 08:05"]),
        ("0 0 1 * 1,*", ["12-03 00:00", "12-04 00:00"]),  # either day: every day
        ("* * */2 * 0-6", ["12-02 07:14", "12-02 07:15"]),
    ],
)
def test_what_croniter_reads_its_own_way_fires_as_written(cron: str, first: list[str]) -> None:
    """Before: croniter (7.0) read a range of one number (`30-30`) as `*` (a thread every
    minute, not once an hour), and a list holding `*` or a whole week as `*` in the rule
    for days (`0 0 1 * 1,*` fired on the 1st only; docs/server.md: either day fires, so
    every day). The schedule keeps the expression as written."""
    [schedule] = parse_schedules({"x": {"agent": "deploybot", "cron": cron}}, {"deploybot": 0})
    assert schedule.cron == cron
    fired = [schedule.next(NOW)]
    fired.append(schedule.next(fired[0]))
    assert [at.strftime("%m-%d %H:%M") for at in fired] == first
    assert schedule.latest(fired[1]) == fired[1]


@pytest.mark.parametrize(
    ("cron", "words"),
    [
        ("1" + "0" * 5000 + " * * * *", "minute `1000000000…` (5,001 digits) is not from 0 to 59"),
        ("0" * 5000 + "5 * * * *", "minute `0000000000…` (5,001 digits) is not from 0 to 59"),
        ("*/" + "9" * 5000 + " * * * *", "minute `*/9999999999…` (5,000 digits) is not a step"),
        ("0 0 1-" + "3" * 5000 + " * *", "day-of-month `3333333333…` (5,000 digits) is not from"),
    ],
)
def test_a_number_too_long_to_read_is_refused_in_one_line(cron: str, words: str) -> None:
    """Before: a number of more than 4,300 digits raised Python's ValueError (its limit
    on reading an int) out of the check: `serve` stopped at start with a traceback."""
    problem = cron_problem(cron, NOW)
    assert problem is not None and f"is not a cron expression: {words}" in problem
    assert len(problem) < 200 and "\n" not in problem
