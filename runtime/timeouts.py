"""Pause timeouts and notice retries: an approval or a question nobody answers in time,
and a notice no channel took.

An `approval` with `timeout D` that gets no decision within D counts as a rejection, with a
comment saying so; a `human` step with `timeout D` that gets no answer within D is a failure
(its `on error`, the `max_errors` escalation, or a failed thread). LANGUAGE.md, "approval"
and "human". The wait begins at the pause: the event that opened it (the arrival at the
step, or a `Retried` or `Forked` that reopened it), not when people were told, so a notice
that is late or never gets out does not stretch the deadline.

A request whose deadline passes before any notice about it was delivered was put to nobody:
it is neither rejected nor answered by the timeout but recorded as never delivered
(`StepFailed` with error type `NotDelivered`), which fails the step visibly (its `on error`,
the `max_errors` escalation, or a failed thread that `resume --retry` puts to people again).

A notice that no channel took (`State.notified` false) is tried again by the sweep, with
backoff: the first retry is due `NOTICE_BACKOFF` after the last attempt, each further one
twice as long after the one before, at most `NOTICE_BACKOFF_LIMIT` apart. A wait whose
process stopped before anyone was even tried is due `NOTICE_BACKOFF` after the pause.

A waiting thread holds no process, so nothing inside the runtime can notice the time
passing: something outside calls `Runtime.expire()` (`twelvefold expire`, from cron or a
scheduler; later the server's timer), which finds the waiting threads past their deadline
or due a notice and continues them. Everything here is a pure function of a thread's state
and log; api.py does the I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from .types import (
    Action,
    AwaitAnswer,
    AwaitApproval,
    AwaitSignal,
    ErrorInfo,
    Event,
    Notified,
    Rejected,
    Sleep,
    State,
    StepFailed,
    TimerFired,
)

TIMEOUT_BY = "timeout"
"""Who rejected an approval that timed out (`Rejected.by`)."""
NOT_DELIVERED = "NotDelivered"
"""The error type of a request whose deadline passed before any notice reached anyone."""
NOTICE_BACKOFF = timedelta(minutes=1)
NOTICE_BACKOFF_LIMIT = timedelta(hours=1)


def overdue(state: State, action: Action, events: Sequence[Event], now: datetime) -> Event | None:
    """The event that ends the thread's wait at `now`, or None while it may go on waiting:
    a timeout (`timeout_event`) when people were told, else `never_delivered`.

    `action` is `next_action(state)`; `events` is the thread's log.
    """
    limit = deadline(state, action, events)
    if limit is None or now < limit:
        return None
    if isinstance(action, AwaitSignal | Sleep):
        # A timer: nobody needed telling, the time alone ends the wait.
        return timer_fired(action, iso(now))
    assert isinstance(action, AwaitApproval | AwaitAnswer)  # deadline() checked it
    if not state.notified:
        return never_delivered(action, events, iso(now))
    return timeout_event(action, iso(now))


def deadline(state: State, action: Action, events: Sequence[Event]) -> datetime | None:
    """When the thread's current wait runs out; None when it does not wait or has no
    `timeout`. Counted from the pause (`wait_began`), whether or not anyone was told."""
    if state.status != "waiting":
        return None
    seconds = _limit(action)
    if seconds is None:
        return None
    began = wait_began(events)
    if began is None:
        return None
    if isinstance(action, Sleep) and action.until is not None:
        return _until(action.until, began)
    return later(began, seconds)


def _until(value: object, began: datetime) -> datetime:
    """The moment a `sleep ... until FIELD` ends: the field's ISO 8601 time (UTC when it
    names no zone), in UTC. Anything else (not text, not a time, or a time with no UTC
    form between the years 1 and 9999, `9999-12-31T23:59:59-10:00`) ends it at the pause:
    a sleep must never hang on a value nobody can fix, and the log shows what it was."""
    if not isinstance(value, str) or len(value) > 64:
        return began
    try:
        return parse_time(value.strip()).astimezone(UTC)
    except (ValueError, OverflowError):
        return began


def _limit(action: Action) -> float | None:
    """How long the action may wait from the pause: a timeout, a sleep's duration."""
    if isinstance(action, Sleep):
        return action.seconds
    if isinstance(action, AwaitApproval | AwaitAnswer | AwaitSignal):
        return action.timeout_seconds
    return None


def timer_fired(action: AwaitSignal | Sleep, at: str) -> TimerFired:
    """What a sleep that is over, or a wait whose `timeout` ran out, records: a decision
    of the clock, naming the request it ends (so a second sweep cannot fire it twice)."""
    return TimerFired(step=action.step, at=at, request=action.request, via=TIMEOUT_BY)


def wait_began(events: Sequence[Event]) -> datetime | None:
    """When the current wait began: the time of the event that opened it. While a thread
    waits only notices are recorded, so that is the latest event that is not a `Notified`
    (an arrival at the step, or a `Retried` or `Forked` that reopened the wait)."""
    index = _opening_index(events)
    opened = events[index] if index >= 0 else None
    return parse_time(opened.at) if opened is not None and opened.at else None


def next_notice(
    state: State,
    action: Action,
    events: Sequence[Event],
    *,
    backoff: timedelta = NOTICE_BACKOFF,
    limit: timedelta = NOTICE_BACKOFF_LIMIT,
) -> datetime | None:
    """When a notice about the pending request is next due; None when none is needed (the
    thread does not wait, or someone was told). `state.notices` attempts have failed: the
    next is due `notice_backoff(state.notices)` after the last of them (or the pause)."""
    if state.status != "waiting" or state.notified:
        return None
    if not isinstance(action, AwaitApproval | AwaitAnswer):
        return None
    last = events[-1] if events else None  # the last attempt, or the pause itself
    if last is None or not last.at:
        return None
    wait = notice_backoff(state.notices, backoff=backoff, limit=limit)
    return later(parse_time(last.at), wait.total_seconds())


def notice_backoff(
    failures: int, *, backoff: timedelta = NOTICE_BACKOFF, limit: timedelta = NOTICE_BACKOFF_LIMIT
) -> timedelta:
    """How long after the last attempt (or the pause) the next one waits: `backoff`, then
    twice that, four times ... at most `limit`. The first attempt from a sweep (the process
    that paused the thread stopped before telling anyone) also waits `backoff`, so a sweep
    never races a process that is still telling people."""
    growth: int = 2 ** min(max(failures - 1, 0), 32)
    return min(backoff * growth, limit)


def never_delivered(
    action: AwaitApproval | AwaitAnswer, events: Sequence[Event], at: str
) -> StepFailed:
    """What a wait records when its deadline passed before any notice reached anyone:
    a failure of the step (never a rejection or an answer nobody gave), naming the last
    reasons the channels gave."""
    assert action.timeout_seconds is not None
    limit = describe_duration(action.timeout_seconds)
    attempts = [e for e in events[_opening_index(events) + 1 :] if isinstance(e, Notified)]
    why = f"; last: {', '.join(attempts[-1].failed)}" if attempts and attempts[-1].failed else ""
    tries = f"{len(attempts)} attempt{'s' if len(attempts) != 1 else ''}"
    message = f"the request reached no notification channel within {limit} ({tries}{why})"
    return StepFailed(step=action.step, at=at, error=ErrorInfo(NOT_DELIVERED, message))


def timeout_event(action: AwaitApproval | AwaitAnswer, at: str) -> Rejected | StepFailed:
    """What a wait that ran out records: a rejection, or a failure of the human step."""
    assert action.timeout_seconds is not None
    limit = describe_duration(action.timeout_seconds)
    if isinstance(action, AwaitApproval):
        # A decision like any other: it names the request it ends (issue 8).
        return Rejected(
            step=action.step,
            at=at,
            by=TIMEOUT_BY,
            comment=f"no decision within {limit}",
            request=action.request,
            via=TIMEOUT_BY,
        )
    return StepFailed(
        step=action.step, at=at, error=ErrorInfo("Timeout", f"no answer within {limit}")
    )


def _opening_index(events: Sequence[Event]) -> int:
    """The index of the event that opened the current wait (-1 for none)."""
    index = len(events) - 1
    while index >= 0 and isinstance(events[index], Notified):
        index -= 1
    return index


# ---- times and durations -----------------------------------------------------------------

_UNITS = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))


def describe_duration(seconds: float) -> str:
    """A duration as the .agent language writes it: 1800 -> "30m", 5400 -> "1h30m"."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    parts: list[str] = []
    rest = seconds
    for unit, size in _UNITS:
        if rest >= size:
            count = int(rest // size) if unit != "s" else rest
            parts.append(f"{count:g}{unit}")
            rest -= count * size
    return "".join(parts)


NEVER = datetime.max.replace(tzinfo=UTC)
"""The latest moment a datetime holds: a deadline past it is never reached."""


def later(moment: datetime, seconds: float) -> datetime:
    """`seconds` after `moment`, or `NEVER` when that is past the last representable
    moment (a notice attempt stored by `expire --now` near the year 9999): a sweep must not
    fail on it, every minute, for ever."""
    try:
        return moment + timedelta(seconds=seconds)
    except OverflowError:
        return NEVER


def parse_time(text: str) -> datetime:
    """An event's `at` (ISO 8601; UTC when it names no zone) as an aware datetime."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def as_moment(now: datetime | str | None) -> datetime:
    """`now` for `expire`: an aware datetime (naive ones are UTC), ISO text, or the clock,
    as a UTC datetime. Raises ValueError for text that is not ISO 8601 or a moment with
    no UTC form."""
    if now is None:
        return datetime.now(UTC)
    moment = parse_time(now) if isinstance(now, str) else now
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    try:  # in UTC, as events store it: 9999-12-31T23:00-05:00 has no such form
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{moment.isoformat()} is outside the years 1 to 9999 in UTC") from None


def iso(moment: datetime) -> str:
    """The form events store times in (store.now_iso)."""
    utc = moment.astimezone(UTC)
    return utc.isoformat(timespec="microseconds").replace("+00:00", "Z")
