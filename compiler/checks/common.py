"""Small helpers the check families share."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import networkx as nx

from .. import nodes as n
from .. import types as t
from ..diagnostics import Diagnostic, Label, Span
from ..guards import GuardScope, rules_that_fire, type_guard
from ..program import Edge, Program


def with_note(diagnostic: Diagnostic, span: Span, message: str) -> Diagnostic:
    """The diagnostic with a secondary label ("first declared here")."""
    return dataclasses.replace(diagnostic, notes=(*diagnostic.notes, Label(span, message)))


def in_its_file(program: Program, type_name: str, diagnostic: Diagnostic) -> Diagnostic:
    """`diagnostic`, found in the declared type `type_name`, where its reader can see it:
    as it is for a type of this file; for an imported type (whose spans are positions in
    its own file) at this file's `import` that leads to it, the message saying where in
    that file, as other problems of imported files are reported (E130, E131, E136)."""
    origin = program.source.origin(type_name)
    if origin is None:
        return diagnostic
    return dataclasses.replace(
        diagnostic,
        message=f"{diagnostic.message} (at {origin.path}:{diagnostic.span}, in the "
        f"imported type `{type_name}`)",
        span=origin.via.file.span,
        label=f"imports `{type_name}`",
        notes=(),  # their positions are in the other file too
    )


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
        case n.ToolStep():
            if step.next:
                yield step.next.target
            for rule in step.rules:
                yield rule.target
            if step.on_error:
                yield step.on_error.target
        case n.HumanStep():
            for goto in (step.next, step.on_error):
                if goto:
                    yield goto.target
        case n.WaitStep():
            if step.next:
                yield step.next.target
            if step.timeout:
                yield step.timeout.target
        case n.SleepStep():
            if step.next:
                yield step.next.target
        case n.AgentStep():
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
        case n.ToolStep():
            return step.next is None and not step.rules
        case n.HumanStep() | n.WaitStep() | n.SleepStep() | n.AgentStep():
            return step.next is None
        case n.ApprovalStep():
            return step.on_approved is None or step.on_rejected is None
        case n.LlmStep():
            return not step.rules
    return False


def rules_that_never_fire(program: Program) -> set[tuple[str, Span]]:
    """The llm and tool rules (state, span) no value can take: the guard cannot hold once every
    earlier guard for the type failed. Decided by `guards.rules_that_fire`, the same
    enumeration approval dominance uses: exact over literal unions and bools, "it can"
    over the rest. A type with an ill-typed guard (E2xx, reported as that) is not judged."""
    table = type_table(program)
    dead: set[tuple[str, Span]] = set()
    for state, step in program.steps.items():
        if not isinstance(step, n.LlmStep | n.ToolStep):
            continue
        by_type: dict[str, list[Edge]] = {}
        for edge in program.edges_from(state):
            if edge.kind == "output" and edge.type is not None:
                by_type.setdefault(edge.type, []).append(edge)
        for type_name, edges in by_type.items():
            root = table.named(type_name)
            scope = GuardScope(root, table, "", "")
            guards = [edge.guard for edge in edges]
            if any(type_guard(g, scope) for g in guards if g is not None):
                continue
            fires = rules_that_fire(guards, root, table)
            for edge, fired in zip(edges, fires, strict=True):
                if not fired:
                    dead.add((state, edge.span))
    return dead


def live_graph(program: Program) -> nx.MultiDiGraph:
    """The graph without the rules that can never fire."""
    dead = rules_that_never_fire(program)
    graph = nx.MultiDiGraph()
    graph.add_nodes_from(program.graph.nodes(data=True))
    for source, target, key, data in program.graph.edges(keys=True, data=True):
        if (source, data["edge"].span) not in dead:
            graph.add_edge(source, target, key=key, **data)
    return graph
