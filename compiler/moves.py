"""Which edge of the graph a thread took: one applied event matched to `AGENT.edges`.

The generated reducer decides where a thread goes; this module only explains each move it
made in the graph's terms, so that pictures (render/trace.py) and coverage
(twelvefold.testing) agree with the reducer by construction instead of re-deriving its
rules. A move is read from the state before and after the event: an output goes along
its `on TYPE` rule (so does a result of a tool that routes by rules), a failure along
`on error` or the `max_errors` escalation, an action past the budget along `max_steps`,
a model step that spent the money or the tokens along `max_cost` or `max_tokens`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from twelvefold.runtime.spec import AgentSpec, EdgeSpec
from twelvefold.runtime.types import (
    KIND_OF_EVENT,
    Answered,
    Approved,
    ChildEnded,
    Event,
    ModelOutput,
    Rejected,
    Signalled,
    Started,
    State,
    StepFailed,
    TimerFired,
    ToolResult,
)

if TYPE_CHECKING:
    from .program import Program

ACTION_EVENTS = (
    ModelOutput, ToolResult, StepFailed, Approved, Rejected, Answered, Signalled, TimerFired,
    ChildEnded,
)  # fmt: skip
"""Events that complete an action (and so count against `max_steps`)."""

_EDGE_KIND_OF: dict[type[Event], str] = {
    ModelOutput: "output",
    ToolResult: "next",
    Answered: "next",
    Approved: "approved",
    Rejected: "rejected",
    Signalled: "next",
    TimerFired: "next",  # a sleep's; at a wait, its `timeout` (see match_edges)
    ChildEnded: "next",
}


class Reducer(Protocol):
    """What a generated module offers for folding a log (see ARCHITECTURE.md)."""

    AGENT: AgentSpec

    def initial_state(self, value: Any) -> State: ...
    def reduce(self, state: State, event: Event) -> State: ...


@dataclass(frozen=True)
class Move:
    """One applied event: the state before and after, and the edges it followed."""

    before: State
    event: Event
    after: State
    edges: tuple[int, ...]
    """Indices into `AGENT.edges`; empty for bookkeeping and for failing in place."""
    problem: str | None = None
    """Set when the thread moved along no declared edge."""


def match_edges(
    spec: AgentSpec, program: Program | None, before: State, event: Event, after: State
) -> Move:
    """The edge `event` took from `before` to `after`. `program`, when given, is the checked
    program the module was generated from: its guards decide which of two rules for one
    output type a value followed."""
    source, target = before.step, after.step
    spent = spec.over_budget(spec.spend(before, event)) if source != target else None
    if spent is not None and spent.target == target and after.tokens == after.cost_usd == 0:
        return Move(before, event, after, _find(spec, source, target, spent.kind))
    if not isinstance(event, ACTION_EVENTS):
        problem = None if source == target else f"a `{kind_of(event)}` event moved the thread"
        return Move(before, event, after, (), problem)
    if after.status == "failed" and source == target:
        return Move(before, event, after, ())  # failed in place: no edge, a failed thread
    budget = spec.max_steps
    if (
        budget is not None
        and spec.on_max_steps == target
        and after.steps == 0
        and before.steps + 1 >= budget
    ):
        return Move(before, event, after, _find(spec, source, target, "max_steps"))
    output: str | None = None
    if isinstance(event, StepFailed):
        kind = "error"
        if (
            spec.max_errors is not None
            and spec.on_max_errors == target
            and before.errors + 1 >= spec.max_errors
        ):
            kind = "max_errors"
        found = _find(spec, source, target, kind)
    else:
        kind = _EDGE_KIND_OF[type(event)]
        if isinstance(event, TimerFired) and spec.states[source].kind == "wait":
            kind = "timeout"
        routed_value = _routed_value(spec, source, event)
        if routed_value is not None:
            kind = "output"  # an llm output, or a result of a tool that routes by rules
            output = type_name(spec, routed_value)
        found = _find(spec, source, target, kind, output)
        if routed_value is not None:
            routed = route(spec, program, source, routed_value)
            if routed is not None and spec.edges[routed].target != target:
                rule = describe_edge(spec.edges[routed])
                what = "result" if isinstance(event, ToolResult) else "output"
                problem = f"the {what} went to `{target}`, but the first rule that holds is {rule}"
                return Move(before, event, after, (), problem)
            if routed is not None:
                found = (routed,)
    if not found:
        what = f"`{kind}` ({output})" if output is not None else f"`{kind}`"
        problem = f"moved from `{source}` to `{target}` on {what}: no such edge in AGENT.edges"
        return Move(before, event, after, (), problem)
    return Move(before, event, after, found)


def _routed_value(spec: AgentSpec, source: str, event: Event) -> BaseModel | None:
    """The value `on TYPE` rules route: a model's output, or the result of a tool written
    with rules (a tool with `next` sends every result along that one edge)."""
    if isinstance(event, ModelOutput):
        return event.output
    if isinstance(event, ToolResult) and any(
        e.source == source and e.kind == "output" for e in spec.edges
    ):
        return event.result
    return None


@dataclass(frozen=True)
class Fold:
    """A log folded through a reducer: its moves, the state it reached, and where the
    reducer refused the log (a log written by another version of the agent)."""

    moves: tuple[Move, ...]
    state: State | None
    """The state after the last event it took; None for an empty log."""
    refused: str | None = None
    """Why the reducer refused the next event, when it did."""


def fold(module: Reducer, events: Sequence[Event], program: Program | None = None) -> Fold:
    """Fold `events` through `module`'s own `reduce`, matching every move to an edge."""
    moves = list(_moves(module, events, program))
    state = moves[-1].after if moves else None
    if events and state is None and isinstance(events[0], Started):
        state = module.initial_state(events[0].input)
    refused = None
    if len(moves) < len(events) - 1 or (events and not isinstance(events[0], Started)):
        refused = _refusal(module, events, state, len(moves) + 1)
    return Fold(tuple(moves), state, refused)


def walk(
    module: Reducer, events: Sequence[Event], program: Program | None = None
) -> Iterator[Move]:
    """The moves of a log, as `module`'s reducer makes them (stops where it raises)."""
    try:
        yield from _moves(module, events, program)
    except Exception:
        return


def _moves(module: Reducer, events: Sequence[Event], program: Program | None) -> Iterator[Move]:
    if not events or not isinstance(events[0], Started):
        return
    state = module.initial_state(events[0].input)
    for event in events[1:]:
        try:
            after = module.reduce(state, event)
        except Exception:
            return
        yield match_edges(module.AGENT, program, state, event, after)
        state = after


def _refusal(module: Reducer, events: Sequence[Event], state: State | None, index: int) -> str:
    if not isinstance(events[0], Started):
        return "a thread's log must start with a `started` event"
    assert state is not None
    try:
        module.reduce(state, events[index])
    except Exception as exc:
        return f"event {index + 1}: {exc}"
    return f"event {index + 1} was refused"  # pragma: no cover - reduce raised a moment ago


def route(spec: AgentSpec, program: Program | None, source: str, output: BaseModel) -> int | None:
    """The edge the `on TYPE [if GUARD]` rules (of an llm step, or of a tool that routes its
    result) send `output` along: the first whose guard
    holds, evaluated with the compiler's own guard semantics. None when the guards are not
    at hand."""
    if program is None:
        return None
    from .guards import evaluate, paths_in

    name = type_name(spec, output)
    data = output.model_dump(mode="json", by_alias=True)
    edges = program.edges()
    if len(edges) != len(spec.edges):
        return None  # not this module's program
    for index, edge in enumerate(edges):
        if edge.source != source or edge.kind != "output" or edge.type != name:
            continue
        if edge.guard is None:
            return index
        env = {path: _field(data, path) for path in paths_in(edge.guard)}
        holds = evaluate(edge.guard, env)
        if holds is None:
            return None
        if holds:
            return index
    return None


def type_name(spec: AgentSpec, value: Any) -> str:
    for name, cls in spec.types.items():
        if type(value) is cls:
            return name
    return type(value).__name__


def describe_edge(edge: EdgeSpec) -> str:
    """An edge as people read it in reports: `decide --on DeployBackend if ...--> deploy`."""
    match edge.kind:
        case "output":
            label = f"on {edge.type}" + (f" if {edge.guard}" if edge.guard else "")
        case "next":
            label = "next"
        case "error":
            label = "on error"
        case "approved" | "rejected":
            label = f"on {edge.kind}"
        case "timeout":
            label = "timeout"
        case _:
            label = edge.kind
    return f"{edge.source} --{label}--> {edge.target}"


def kind_of(event: Event) -> str:
    return KIND_OF_EVENT.get(type(event), type(event).__name__)


def _field(data: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if data is None:
            return None
        data = data[part]
    return data


def _find(
    spec: AgentSpec, source: str, target: str, kind: str, output: str | None = None
) -> tuple[int, ...]:
    # Two rules for one type to one target (different guards) are one edge to a reader.
    for index, edge in enumerate(spec.edges):
        if (
            edge.source == source
            and edge.target == target
            and edge.kind == kind
            and edge.type == output
        ):
            return (index,)
    return ()
