"""Pause timeouts: an approval or a question nobody answers in time.

An `approval` with `timeout D` that gets no decision within D counts as a rejection, with a
comment saying so; a `human` step with `timeout D` that gets no answer within D is a failure
(its `on error`, the `max_errors` escalation, or a failed thread). LANGUAGE.md, "approval"
and "human".

A waiting thread holds no process, so nothing inside the runtime can notice the time
passing: something outside calls `Runtime.expire()` (`twelvefold expire`, from cron or a
scheduler), which finds the waiting threads past their deadline and continues them with the
event a person would otherwise have caused. The wait begins when people were told (the
`Notified` event's `at`), or when a failed waiting step was retried; a thread whose process
stopped before telling anyone has not begun waiting (resume it to tell them).

Everything here is a pure function of a thread's state and log; api.py does the I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from .types import (
    Action,
    AwaitAnswer,
    AwaitApproval,
    ErrorInfo,
    Event,
    Notified,
    Rejected,
    Retried,
    State,
    StepFailed,
)

TIMEOUT_BY = "timeout"
"""Who rejected an approval that timed out (`Rejected.by`)."""


def overdue(state: State, action: Action, events: Sequence[Event], now: datetime) -> Event | None:
    """The event that ends the thread's wait at `now`, or None while it may go on waiting.

    `action` is `next_action(state)`; `events` is the thread's log.
    """
    limit = deadline(state, action, events)
    if limit is None or now < limit:
        return None
    assert isinstance(action, AwaitApproval | AwaitAnswer)  # deadline() checked it
    return timeout_event(action, iso(now))


def deadline(state: State, action: Action, events: Sequence[Event]) -> datetime | None:
    """When the thread's current wait runs out; None when it does not wait, has no
    `timeout`, or has not begun waiting (nobody was told yet)."""
    if state.status != "waiting" or not state.notified:
        return None
    if not isinstance(action, AwaitApproval | AwaitAnswer) or action.timeout_seconds is None:
        return None
    began = wait_began(events, state.step)
    if began is None:
        return None
    return began + timedelta(seconds=action.timeout_seconds)


def wait_began(events: Sequence[Event], step: str) -> datetime | None:
    """When the current wait at `step` began: the latest `Notified` (people were told) or
    `Retried` (a timed-out step was given another go) there."""
    for event in reversed(events):
        if isinstance(event, Notified | Retried) and event.step == step and event.at:
            return parse_time(event.at)
    return None


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


def parse_time(text: str) -> datetime:
    """An event's `at` (ISO 8601; UTC when it names no zone) as an aware datetime."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def as_moment(now: datetime | str | None) -> datetime:
    """`now` for `expire`: an aware datetime (naive ones are UTC), ISO text, or the clock."""
    if now is None:
        return datetime.now(UTC)
    if isinstance(now, str):
        return parse_time(now)
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


def iso(moment: datetime) -> str:
    """The form events store times in (store.now_iso)."""
    utc = moment.astimezone(UTC)
    return utc.isoformat(timespec="microseconds").replace("+00:00", "Z")
