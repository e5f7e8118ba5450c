"""Where a thread went: its event log laid over the agent's graph.

The log is folded through the agent's own generated reducer, and each move it makes is
matched to the edge it took (compiler/moves.py): the picture shows what the reducer did,
never a re-derivation of its rules. A log that the reducer refuses part-way (written by
another version of the agent) is drawn up to that point, and `refused` says why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from twelvefold.runtime.types import Event, Status, StepFailed

from ..moves import Reducer, fold
from ..program import Edge, Program


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
    """Moves no edge of the graph explains (a module that disagrees with its source)."""
    refused: str | None = None
    """Why the reducer refused the rest of the log, when it did."""


def overlay(program: Program, events: Sequence[Event], module: Reducer) -> Trace:
    """Lay `events` over `program`'s graph, folding them through `module` (the agent's
    generated reducer, compiled from the same source as `program`)."""
    if not events:
        return Trace()
    folded = fold(module, events, program)
    edges = program.edges()
    visits: Counter[str] = Counter({events[0].step: 1})
    taken: Counter[Edge] = Counter()
    errors: Counter[str] = Counter()
    unexplained: list[tuple[str, str]] = []
    for move in folded.moves:
        if isinstance(move.event, StepFailed):
            errors[move.event.step] += 1
        if move.problem is not None:
            unexplained.append((move.before.step, move.after.step))
            visits[move.after.step] += 1
        for index in move.edges:
            taken[edges[index]] += 1
            visits[edges[index].target] += 1
    state = folded.state
    return Trace(
        visits=dict(visits),
        edges=dict(taken),
        errors=dict(errors),
        position=None if state is None else state.step,
        status=None if state is None else state.status,
        last_step=events[-1].step,
        unexplained=tuple(unexplained),
        refused=folded.refused,
    )
