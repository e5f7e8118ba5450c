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

from ..nodes import Ceiling
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
    walk = _Walk(program)
    walk.visits[events[0].step] += 1
    for event, following in pairwise(events):
        walk.take(event, following.step)

    last = events[-1]
    position: str | None
    status: Status | None
    if state is not None:
        walk.take(last, state.step)
        position, status = state.step, state.status
    elif isinstance(last, COMPLETING_EVENTS):
        edge = walk.take(last, None)
        if edge is not None:
            position, status = edge.target, _status_on_arrival(program, edge.target)
        elif isinstance(last, StepFailed) or walk.out_of_steps:
            position, status = last.step, "failed"
        else:
            position, status = None, None
    else:
        walk.take(last, last.step)
        position = last.step
        status = "waiting" if isinstance(last, Notified) else _status_on_arrival(program, last.step)
    return Trace(
        visits=dict(walk.visits),
        edges=dict(walk.taken),
        errors=dict(walk.errors),
        position=position,
        status=status,
        last_step=last.step,
        unexplained=tuple(walk.unexplained),
    )


class _Walk:
    """The counts gathered while walking a log, and the two counters the reducer keeps
    (consecutive failures, steps since the last step-ceiling escalation) because they
    decide whether a move was an escalation."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.visits: Counter[str] = Counter()
        self.taken: Counter[Edge] = Counter()
        self.errors: Counter[str] = Counter()
        self.unexplained: list[tuple[str, str]] = []
        self.in_a_row = 0
        self.steps = 0
        self.out_of_steps = False

    def take(self, event: Event, target: str | None) -> Edge | None:
        """Apply `event`; `target` is the step the thread is at next (None: unknown)."""
        if not isinstance(event, COMPLETING_EVENTS):
            if target is not None and target != event.step:
                self._unexplained(event.step, target)
            return None
        self.steps += 1
        if isinstance(event, StepFailed):
            self.errors[event.step] += 1
            self.in_a_row += 1
        elif isinstance(event, ToolResult | Answered):
            # Like the reducer: a tool's result or a person's answer ends a run of
            # failures; a model output or an approval does not.
            self.in_a_row = 0
        edge = self._edge_taken(event, target)
        if edge is not None:
            self.taken[edge] += 1
            self.visits[edge.target] += 1
            if edge.kind in _ESCALATIONS:
                self.in_a_row = 0
            if edge.kind == "max_steps":
                self.steps = 0
        elif target is not None and target != event.step:
            self._unexplained(event.step, target)
        return edge

    def _unexplained(self, source: str, target: str) -> None:
        self.unexplained.append((source, target))
        self.visits[target] += 1

    def _edge_taken(self, event: Event, target: str | None) -> Edge | None:
        """The edge `event` sent the thread along: to `target` when known, else the only
        edge that fits."""
        leaving = self.program.edges_from(event.step)
        expected = _LEAVES_BY[type(event)]
        if isinstance(event, StepFailed) and _reached(self.program.agent.max_errors, self.in_a_row):
            expected = "max_errors"
        natural = [e for e in leaving if e.kind == expected and _fits_output(e, event)]
        arrives_at_final = all(self.program.steps[e.target].kind == "final" for e in natural)
        self.out_of_steps = False
        if natural and not arrives_at_final and _reached(self.program.agent.max_steps, self.steps):
            # The step ceiling: the thread goes to its target instead, or fails here.
            self.out_of_steps = True
            natural = [e for e in leaving if e.kind == "max_steps"]
        fitting = [e for e in natural if target is None or e.target == target]
        if target is None:
            return fitting[0] if len({e.target for e in fitting}) == 1 else None
        if fitting:
            return fitting[0]
        # A log from an agent that has changed since: take any edge that explains the move.
        others = [e for e in leaving if e.target == target and e.kind in _ESCALATIONS]
        return others[0] if others else None


def _reached(ceiling: Ceiling | None, count: int) -> bool:
    return (
        ceiling is not None
        and isinstance(ceiling.limit.value, int)
        and count >= ceiling.limit.value
    )


def _status_on_arrival(program: Program, step: str) -> Status:
    kind = program.steps[step].kind if step in program.steps else None
    if kind == "final":
        return "finished"
    return "waiting" if kind in ("approval", "human") else "running"


def _fits_output(edge: Edge, event: Event) -> bool:
    if not isinstance(event, ModelOutput):
        return True
    return edge.type == type(event.output).__name__
