"""Where a thread went: its event log laid over the agent's graph.

A pure function of the program and the events. Every event names the step it happened
at, so the path is the sequence of those steps; an event that completes a step (a model
output, a tool result, a failure, a person's decision) is followed by the move to the
next event's step, and the edge that move took is the one whose kind fits the event
(a `ToolResult` leaves by `next`, a `Rejected` by `on rejected`, ...).

Where the thread is now is the step after the last event. The generated module's
`replay(events)` knows it exactly; pass its `State` when you have one. Without it the
last move is inferred from the graph alone, which is exact unless two guarded rules
route the same output type to different states.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from twelvefold.runtime.types import (
    Answered,
    Approved,
    Event,
    ModelOutput,
    Notified,
    Rejected,
    State,
    Status,
    StepFailed,
    ToolResult,
)

from ..program import Edge, EdgeKind, Program

COMPLETING_EVENTS = (ModelOutput, ToolResult, StepFailed, Approved, Rejected, Answered)
"""Events after which the thread leaves its step (or fails there)."""

_LEAVES_BY: dict[type[Event], EdgeKind] = {
    ModelOutput: "output",
    ToolResult: "next",
    Answered: "next",
    Approved: "approved",
    Rejected: "rejected",
    StepFailed: "error",
}
_ESCALATIONS: frozenset[EdgeKind] = frozenset({"max_errors", "max_steps"})


@dataclass(frozen=True)
class Trace:
    """A thread's path: counts per state and edge, errors, and where it is now."""

    visits: Mapping[str, int] = field(default_factory=dict)
    """How many times the thread arrived at each state (the start counts once)."""
    edges: Mapping[Edge, int] = field(default_factory=dict)
    """How many times each edge was taken."""
    errors: Mapping[str, int] = field(default_factory=dict)
    """Failures (`StepFailed` events) per state."""
    position: str | None = None
    """The state the thread is at now; None when the log does not say."""
    status: Status | None = None
    last_step: str | None = None
    """The step of the last event, shown when `position` is unknown."""
    unexplained: tuple[tuple[str, str], ...] = ()
    """Moves no edge of the graph explains (a log from an older version of the agent)."""


def overlay(program: Program, events: Sequence[Event], state: State | None = None) -> Trace:
    """Lay `events` over `program`'s graph. `state`, when given, is `replay(events)`."""
    if not events:
        return Trace()
    visits: Counter[str] = Counter({events[0].step: 1})
    taken: Counter[Edge] = Counter()
    errors: Counter[str] = Counter()
    unexplained: list[tuple[str, str]] = []
    in_a_row = 0  # consecutive failures, which decide between `on error` and `max_errors`

    def move(event: Event, target: str | None) -> Edge | None:
        edge = _edge_taken(program, event, target, in_a_row)
        if edge is not None:
            taken[edge] += 1
            visits[edge.target] += 1
        elif target is not None and target != event.step:
            unexplained.append((event.step, target))
            visits[target] += 1
        return edge

    for event, following in pairwise(events):
        in_a_row = _count_failures(event, in_a_row)
        if isinstance(event, StepFailed):
            errors[event.step] += 1
        if isinstance(event, COMPLETING_EVENTS):
            move(event, following.step)
        elif following.step != event.step:
            unexplained.append((event.step, following.step))
            visits[following.step] += 1

    last = events[-1]
    in_a_row = _count_failures(last, in_a_row)
    if isinstance(last, StepFailed):
        errors[last.step] += 1
    position: str | None
    status: Status | None
    if state is not None:
        if isinstance(last, COMPLETING_EVENTS):
            move(last, state.step)
        position, status = state.step, state.status
    elif isinstance(last, COMPLETING_EVENTS):
        edge = move(last, None)
        if edge is not None:
            position, status = edge.target, _status_on_arrival(program, edge.target)
        elif isinstance(last, StepFailed):
            position, status = last.step, "failed"
        else:
            position, status = None, None
    else:
        position = last.step
        status = "waiting" if isinstance(last, Notified) else _status_on_arrival(program, last.step)
    return Trace(
        visits=dict(visits),
        edges=dict(taken),
        errors=dict(errors),
        position=position,
        status=status,
        last_step=last.step,
        unexplained=tuple(unexplained),
    )


def _count_failures(event: Event, in_a_row: int) -> int:
    if isinstance(event, StepFailed):
        return in_a_row + 1
    return 0 if isinstance(event, COMPLETING_EVENTS) else in_a_row


def _status_on_arrival(program: Program, step: str) -> Status:
    kind = program.steps[step].kind if step in program.steps else None
    if kind == "final":
        return "finished"
    return "waiting" if kind in ("approval", "human") else "running"


def _edge_taken(program: Program, event: Event, target: str | None, in_a_row: int) -> Edge | None:
    """The edge `event` sent the thread along: to `target` when known, else the only one fitting."""
    expected = _LEAVES_BY.get(type(event))
    ceiling = program.agent.max_errors
    if (
        isinstance(event, StepFailed)
        and ceiling is not None
        and isinstance(ceiling.limit.value, int)
        and in_a_row >= ceiling.limit.value
    ):
        expected = "max_errors"
    candidates = [e for e in program.edges_from(event.step) if target is None or e.target == target]
    fitting = [e for e in candidates if e.kind == expected and _fits_output(e, event)]
    if target is None:
        return fitting[0] if len({e.target for e in fitting}) == 1 else None
    if fitting:
        return fitting[0]
    # The step ceiling can interrupt any step; nothing in the event says so but the target.
    escalations = [e for e in candidates if e.kind in _ESCALATIONS]
    return escalations[0] if escalations else None


def _fits_output(edge: Edge, event: Event) -> bool:
    if not isinstance(event, ModelOutput):
        return True
    return edge.type == type(event.output).__name__
