"""Small helpers the check families share."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import networkx as nx

from .. import nodes as n
from .. import types as t
from ..diagnostics import Diagnostic, Label, Span
from ..guards import GuardScope, can_hold, type_guard
from ..program import Edge, Program


def with_note(diagnostic: Diagnostic, span: Span, message: str) -> Diagnostic:
    """The diagnostic with a secondary label ("first declared here")."""
    return dataclasses.replace(diagnostic, notes=(*diagnostic.notes, Label(span, message)))


def type_table(program: Program) -> t.TypeTable:
    return t.TypeTable(program.types)


def start_state(program: Program) -> str | None:
    """Where a thread starts: `start`, else (as codegen does) the first state, if there is one."""
    if program.agent.start is not None:
        return program.agent.start.text
    return next(iter(program.steps), None)


def input_type(program: Program) -> str:
    """The type of the value a thread is launched with (`input TYPE`, default `string`)."""
    return program.agent.input.text if program.agent.input else "string"


def declared_input(step: n.Step) -> n.Name | None:
    """The `(IN)` of a step; llm steps never declare one."""
    return None if isinstance(step, n.LlmStep) else step.input


def gotos(step: n.Step) -> Iterator[n.Name]:
    """Every state name a step refers to, in source order."""
    match step:
        case n.LlmStep(rules=rules, on_error=on_error):
            for rule in rules:
                yield rule.target
            if on_error:
                yield on_error.target
        case n.ToolStep() | n.HumanStep():
            for goto in (step.next, step.on_error):
                if goto:
                    yield goto.target
        case n.ApprovalStep(on_approved=approved, on_rejected=rejected):
            for goto in (approved, rejected):
                if goto:
                    yield goto.target
        case n.FinalStep():
            pass


def has_unresolved_target(program: Program, state: str) -> bool:
    """Some transition out of `state` names a state that does not exist (reported elsewhere)."""
    step = program.steps[state]
    return any(target.text not in program.steps for target in gotos(step))


def misses_successor(step: n.Step) -> bool:
    """The step lacks the transition it must have (reported by the required-settings check)."""
    match step:
        case n.ToolStep() | n.HumanStep():
            return step.next is None
        case n.ApprovalStep():
            return step.on_approved is None or step.on_rejected is None
        case n.LlmStep():
            return not step.rules
    return False


def can_fire(edge: Edge, table: t.TypeTable) -> bool:
    """Can a thread take this edge? An llm rule only when its guard can hold while every
    earlier rule's guard for the type fails: decided by `guards.can_hold`, the enumeration
    approval dominance uses, so exact over literal unions and bools and "yes" over the
    rest. Every other edge can."""
    if edge.kind != "output" or edge.type is None:
        return True
    holds = [edge.guard] if edge.guard is not None else []
    root = table.named(edge.type)
    scope = GuardScope(root, table, "", "")
    if any(type_guard(guard, scope) for guard in [*holds, *edge.excluded]):
        return True  # an ill-typed guard (E2xx) is reported as that, not judged here
    return can_hold(holds, edge.excluded, root, table)


def live_graph(program: Program) -> nx.MultiDiGraph:
    """The graph without the rules that can never fire."""
    table = type_table(program)
    graph = nx.MultiDiGraph()
    graph.add_nodes_from(program.graph.nodes(data=True))
    for source, target, key, data in program.graph.edges(keys=True, data=True):
        if can_fire(data["edge"], table):
            graph.add_edge(source, target, key=key, **data)
    return graph
