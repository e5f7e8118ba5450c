"""E6xx: loops are bounded.

A cycle made only of tools would spin without a model or a person ever deciding, so
every cycle must pass through an llm, approval or human state; an agent with any cycle
needs `max_steps`, and one whose cycle contains an `on error` edge needs `max_errors`
(else a tool that keeps failing retries forever). The `max_errors` / `max_steps`
escalation edges are bounded by their own counters and are not part of the question.
Strongly connected components answer it in linear time.
"""

from __future__ import annotations

from collections.abc import Iterator

import networkx as nx

from twelvefold.runtime.spec import ESCALATION_KINDS

from ..diagnostics import Diagnostic, error
from ..program import Edge, Program
from .common import with_note

ESCALATIONS = ESCALATION_KINDS
DECIDING_KINDS = frozenset({"llm", "approval", "human"})


def own_graph(program: Program) -> nx.MultiDiGraph:
    """The graph without the escalation edges: where a thread goes by its own transitions."""
    graph = nx.MultiDiGraph()
    graph.add_nodes_from(program.graph.nodes(data=True))
    for source, target, key, data in program.graph.edges(keys=True, data=True):
        if data["edge"].kind not in ESCALATIONS:
            graph.add_edge(source, target, key=key, **data)
    return graph


def _cyclic_components(graph: nx.MultiDiGraph) -> list[set[str]]:
    """Components that hold a cycle: more than one state, or one state with a self-loop."""
    found = []
    for component in nx.strongly_connected_components(graph):
        state = next(iter(component))
        if len(component) > 1 or graph.has_edge(state, state):
            found.append(component)
    return found


def _cycle_text(graph: nx.MultiDiGraph, component: set[str]) -> tuple[str, Edge]:
    """`a -> b -> a` for one cycle inside the component, and the edge that closes it."""
    cycle = nx.find_cycle(graph.subgraph(component))
    states = [edge[0] for edge in cycle] + [cycle[-1][1]]
    source, target, key = cycle[-1][:3]
    closing: Edge = graph.edges[source, target, key]["edge"]
    return " -> ".join(states), closing


def cycles_pass_a_decision(program: Program, _: object) -> Iterator[Diagnostic]:
    """Every cycle passes through an llm, approval or human state."""
    graph = own_graph(program)
    tools_only = graph.subgraph(
        [s for s, kind in graph.nodes(data="kind") if kind not in DECIDING_KINDS]
    )
    for component in _cyclic_components(tools_only):
        text, closing = _cycle_text(tools_only, component)
        yield error(
            "E601",
            f"the loop {text} never stops for a model or a person",
            program.source.path,
            closing.span,
            label="closes a loop of tools only",
            help="send one of these steps back to an llm, approval or human state, "
            "so something decides whether to go round again",
        )


def cycles_are_bounded(program: Program, _: object) -> Iterator[Diagnostic]:
    """Cycles need `max_steps`; a cycle with an `on error` edge needs `max_errors`."""
    graph = own_graph(program)
    components = _cyclic_components(graph)
    agent = program.agent
    if components and agent.max_steps is None:
        text, closing = _cycle_text(graph, components[0])
        yield with_note(
            error(
                "E602",
                f"agent `{program.name}` can loop ({text}) but sets no `max_steps`",
                program.source.path,
                agent.name.span,
                label="no step budget",
                help="add `max_steps N -> STATE` (or `max_steps N` to fail) to the agent block",
            ),
            closing.span,
            "the loop closes here",
        )
    if agent.max_errors is not None:
        return
    member = {state: i for i, component in enumerate(components) for state in component}
    for source, target, data in graph.edges(data=True):
        edge: Edge = data["edge"]
        if edge.kind != "error" or source not in member or member.get(target) != member[source]:
            continue
        yield error(
            "E603",
            f"`{source}` goes round a loop on every error but the agent sets no `max_errors`",
            program.source.path,
            edge.span,
            label="an error loops back",
            help="add `max_errors N -> STATE` to the agent block, so repeated failures "
            "reach a person",
        )
