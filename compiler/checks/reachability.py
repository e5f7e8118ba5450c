"""E3xx: every state can be reached, and from every state a thread can finish.

Reachability from `start` counts the `max_errors` / `max_steps` escalations (the graph
has them as edges from every step that can fail or act), so an `escalate` state that
only they lead to is reachable. It does not count an llm rule that can never fire
(`common.can_fire`: its guard cannot hold once the earlier rules' guards failed), so a
state only such rules lead to is unreachable. Finishing does not count them: a state whose only way
to a `final` is running out of budget is a thread that cannot finish on its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import networkx as nx

from .. import nodes as n
from ..diagnostics import Diagnostic, error, warning
from ..program import Program
from .common import has_unresolved_target, live_graph, misses_successor, start_state
from .loops import own_graph


def reachable_from_start(program: Program, _: object) -> Iterator[Diagnostic]:
    start = start_state(program)
    if (
        start is None
        or start not in program.steps
        or any(has_unresolved_target(program, state) for state in program.steps)
    ):
        return  # an unknown start or a misspelt transition is reported by the name checks
    reached = nx.descendants(live_graph(program), start) | {start}
    targeted = {target for _, target in program.graph.edges()}
    for name, step in program.steps.items():
        # A state nothing refers to at all is reported as unused (W902) instead.
        if name not in reached and name in targeted:
            yield warning(
                "W301",
                f"no thread can reach `{name}` from `{start}`",
                program.source.path,
                step.name.span,
                label="unreachable",
                help="only unreachable states lead here; route a reachable state to it, "
                "or remove it",
            )


def can_finish(program: Program, _: object) -> Iterator[Diagnostic]:
    path = program.source.path
    finals = [name for name, step in program.steps.items() if isinstance(step, n.FinalStep)]
    if not finals:
        yield error(
            "E303",
            f"agent `{program.name}` has no `final` state, so no thread can finish",
            path,
            program.agent.name.span,
            label="never finishes",
            help="add a final state, e.g. `final done(DoneForNow)`, and route to it",
        )
        return
    graph = own_graph(program)
    finishing = set(finals)
    for final in finals:
        finishing |= nx.ancestors(graph, final)
    # States whose way on is missing or misspelt are reported where the mistake is; so are
    # the states that might reach a final through them.
    unsure = {
        name
        for name, step in program.steps.items()
        if misses_successor(step) or has_unresolved_target(program, name)
    }
    for name in list(unsure):
        unsure |= nx.ancestors(graph, name)
    for name, step in program.steps.items():
        if name in finishing or name in unsure:
            continue
        yield error(
            "E302",
            f"a thread that reaches `{name}` can never finish",
            path,
            step.name.span,
            label="no way from here to a final state",
            help="give this state (or a state it leads to) a transition that leads to one of: "
            + ", ".join(f"`{f}`" for f in finals),
        )
