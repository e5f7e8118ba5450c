"""E4xx: the values that can arrive at a step are of the type it declares.

What flows along an edge (LANGUAGE.md, "Transitions and guards"): an llm rule carries
its type, a tool's `next` its output, a human's `next` an `Answer`; every other edge
(`on error`, `on approved`, `on rejected`, the `max_errors` / `max_steps` escalations)
passes on whatever arrived at its source. The start state receives the agent's input.
`arriving_types` computes the fixed point of that over the graph.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from .. import nodes as n
from ..diagnostics import Diagnostic, Span, error
from ..program import Edge, Program
from .common import declared_input, input_type, start_state, type_table, with_note


def arriving_types(program: Program) -> dict[str, frozenset[str]]:
    """For each state, the names of the types whose values can arrive at it."""
    table = type_table(program)
    arriving: dict[str, set[str]] = {state: set() for state in program.steps}
    queue: deque[str] = deque()
    start, first = start_state(program), input_type(program)
    if start is not None and start in arriving and table.known(first):
        arriving[start].add(first)
        queue.append(start)
    while queue:
        state = queue.popleft()
        for _, target, data in program.graph.out_edges(state, data=True):
            new = carried_types(program, data["edge"], arriving[state]) - arriving[target]
            if new:
                arriving[target] |= new
                queue.append(target)
    return {state: frozenset(types) for state, types in arriving.items()}


def carried_types(program: Program, edge: Edge, at_source: frozenset[str] | set[str]) -> set[str]:
    """The types of the values that travel `edge`, given those that arrive at its source."""
    step = program.steps[edge.source]
    table = type_table(program)
    carried: set[str]
    if edge.kind == "output" and edge.type is not None:
        carried = {edge.type}
    elif edge.kind == "next" and isinstance(step, n.ToolStep):
        carried = {step.output.text}
    elif edge.kind == "next" and isinstance(step, n.HumanStep):
        carried = {n.ANSWER_TYPE}
    else:
        return set(at_source)  # already resolved: they came along other edges
    # A type that does not resolve is reported by the name checks; it carries no judgement.
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
