"""E4xx: the values that can arrive at a step are of the type it declares.

What flows along an edge (LANGUAGE.md, "Transitions and guards"): an llm rule or a tool's
rule carries its type, a tool's `next` its result (any member of a union), a human's
`next` an `Answer`; every other edge (`on error`, `on approved`, `on rejected`, the
`max_errors` / `max_steps` escalations) passes on whatever arrived at its source. The
start state receives the agent's input. `arriving_types` computes the fixed point of
that over the graph.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from typing import TypeVar

from .. import nodes as n
from ..diagnostics import Diagnostic, Span, error
from ..program import Edge, Program
from .common import declared_input, input_type, start_state, type_table, with_note


def arriving_types(program: Program) -> dict[str, frozenset[str]]:
    """For each state, the names of the types whose values can arrive at it.

    Linear in edges plus (edge, type) pairs: a state passes on only the types that are new
    to it, and an edge that carries a fixed type (an llm rule, a tool's or a human's `next`)
    is followed once. Computed once per program; several checks ask.
    """
    cached = _ARRIVING.get(id(program))
    if cached is not None and cached[0]() is program:
        return cached[1]
    table = type_table(program)
    first = input_type(program)

    def carried(edge: Edge) -> set[str] | None:
        names = _fixed_type(program, edge)
        return None if names is None else {name for name in names if table.known(name)}

    result = flow(program, {first} if table.known(first) else set(), carried)
    _ARRIVING.clear()  # one program at a time: the cache never grows
    _ARRIVING[id(program)] = (weakref.ref(program), result)
    return result


_ARRIVING: dict[int, tuple[weakref.ref[Program], dict[str, frozenset[str]]]] = {}

V = TypeVar("V", bound=Hashable)


def flow(
    program: Program, started: set[V], made: Callable[[Edge], set[V] | None]
) -> dict[str, frozenset[V]]:
    """For each state, the values (type names, or anything hashable that describes them)
    that can arrive at it: `started` at the start state, then along every edge either
    what the edge's source makes (`made(edge)`, when not None) or what arrived at the
    source, passed on unchanged.

    Linear in edges plus (edge, value) pairs: a state passes on only the values that are
    new to it, and an edge that makes its own is followed once.
    """
    arriving: dict[str, set[V]] = {state: set() for state in program.steps}
    queue: deque[tuple[str, set[V]]] = deque()

    def arrive(state: str, values: set[V]) -> None:
        new = values - arriving[state]
        if new:
            arriving[state] |= new
            queue.append((state, new))

    start = start_state(program)
    if start is not None and start in arriving:
        arrive(start, started)
    # Each state's edges split once: making edges are followed on the first visit only,
    # pass-through edges on every visit with just the new values.
    passing: dict[str, list[str]] = {state: [] for state in program.steps}
    making: dict[str, list[tuple[str, set[V]]]] = {state: [] for state in program.steps}
    for source, target, data in program.graph.edges(data=True):
        values = made(data["edge"])
        if values is None:
            passing[source].append(target)
        else:
            making[source].append((target, values))
    followed: set[str] = set()
    while queue:
        state, new = queue.popleft()
        for target in passing[state]:
            arrive(target, new)
        if state not in followed:
            followed.add(state)
            for target, values in making[state]:
                arrive(target, values)
    return {state: frozenset(values) for state, values in arriving.items()}


def _fixed_type(program: Program, edge: Edge) -> set[str] | None:
    """The type an edge always carries, or None when it passes on what arrived at its source."""
    step = program.steps[edge.source]
    if edge.kind == "output" and edge.type is not None:
        return {edge.type}
    if edge.kind == "next" and isinstance(step, n.ToolStep):
        return {output.text for output in step.outputs}
    if edge.kind == "next" and isinstance(step, n.HumanStep):
        return {n.ANSWER_TYPE}
    if edge.kind == "next" and isinstance(step, n.WaitStep):
        return {step.event.text}
    if edge.kind == "next" and isinstance(step, n.AgentStep):
        return {step.output.text}
    return None


def carried_types(program: Program, edge: Edge, at_source: frozenset[str] | set[str]) -> set[str]:
    """The types of the values that travel `edge`, given those that arrive at its source."""
    carried = _fixed_type(program, edge)
    if carried is None:
        return set(at_source)  # already resolved: they came along other edges
    # A type that does not resolve is reported by the name checks; it carries no judgement.
    table = type_table(program)
    return {name for name in carried if table.known(name)}


def values_match_inputs(program: Program, _: object) -> Iterator[Diagnostic]:
    """Whatever can arrive at a step with a declared input is of that type."""
    arriving = arriving_types(program)
    table = type_table(program)
    path = program.source.path
    agent = program.agent
    start = program.steps.get(start_state(program) or "")
    if agent.start and start is not None:
        expected = declared_input(start)
        first = input_type(program)
        if (
            expected
            and table.known(expected.text)
            and table.known(first)
            and first != expected.text
        ):
            yield with_note(
                error(
                    "E401",
                    f"a thread starts at `{start.name.text}` with its input, a `{first}`, "
                    f"but `{start.name.text}` takes `{expected.text}`",
                    path,
                    agent.start.span,
                    label=f"carries `{first}`",
                    help=f"declare `input {expected.text}` in the agent, or start at a step "
                    f"that takes `{first}`",
                ),
                expected.span,
                "declared input",
            )
    # Escalation edges share one span (the agent's ceiling), so they are judged together.
    mismatches: dict[tuple[Span, str], set[str]] = {}
    for edge in program.edges():
        target = program.steps[edge.target]
        expected = declared_input(target)
        if expected is None or not table.known(expected.text):
            continue
        wrong = carried_types(program, edge, arriving[edge.source]) - {expected.text}
        if wrong:
            mismatches.setdefault((edge.span, edge.target), set()).update(wrong)
    for (span, target_name), wrong in mismatches.items():
        expected = declared_input(program.steps[target_name])
        assert expected is not None
        shown = ", ".join(f"`{w}`" for w in sorted(wrong))
        yield with_note(
            error(
                "E401",
                f"`{target_name}` takes `{expected.text}`, but {shown} can arrive along this edge",
                path,
                span,
                label=f"carries {shown}",
                help=_wrong_input_help(program.steps[target_name], expected.text, shown),
            ),
            expected.span,
            "declared input",
        )


def _wrong_input_help(target: n.Step, expected: str, shown: str) -> str:
    """E401's fix. Only a `final` step may drop its input type to take anything: any other
    step without `(IN)` is called with no value (a tool with no argument), so it would then
    fail at run time rather than here."""
    name = target.name.text
    if isinstance(target, n.FinalStep):
        return (
            f"send only `{expected}` values to `{name}`, "
            f"or drop its input type to accept anything: `final {name}`"
        )
    return f"send only `{expected}` values to `{name}`, and route {shown} to a step that takes it"
