"""Build the state graph of an agent: one node per step, one edge per transition.

Edges to names that do not resolve are left out; the name checks report them.
The `max_errors` and `max_steps` escalations become edges from every step that can
fail or act, because that is where a thread can really go; the budgets (`max_cost`,
`max_tokens`) from every `llm` step, the only steps that spend them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import networkx as nx

from . import nodes as n
from .program import Edge, EdgeKind


def build_graph(agent: n.AgentDecl | None, steps: Mapping[str, n.Step]) -> nx.MultiDiGraph:
    graph = nx.MultiDiGraph()
    for name, step in steps.items():
        graph.add_node(name, step=step, kind=step.kind, span=step.span)
    for edge in _edges(agent, steps):
        if edge.target in steps:
            graph.add_edge(edge.source, edge.target, key=edge.order, edge=edge)
    return graph


def _edges(agent: n.AgentDecl | None, steps: Mapping[str, n.Step]) -> Iterator[Edge]:
    for name, step in steps.items():
        yield from _step_edges(name, step)
        if agent is None or isinstance(step, n.FinalStep):
            continue
        if agent.max_errors and agent.max_errors.target and can_fail(step):
            yield Edge(name, agent.max_errors.target.text, "max_errors", agent.max_errors.span,
                       order=1000)  # fmt: skip
        if agent.max_steps and agent.max_steps.target:
            yield Edge(name, agent.max_steps.target.text, "max_steps", agent.max_steps.span,
                       order=1001)  # fmt: skip
        if not isinstance(step, n.LlmStep):
            continue  # only model calls spend the budgets
        if agent.max_cost and agent.max_cost.target:
            yield Edge(name, agent.max_cost.target.text, "max_cost", agent.max_cost.span,
                       order=1002)  # fmt: skip
        if agent.max_tokens and agent.max_tokens.target:
            yield Edge(name, agent.max_tokens.target.text, "max_tokens", agent.max_tokens.span,
                       order=1003)  # fmt: skip


def can_fail(step: n.Step) -> bool:
    """Model calls and tools can fail; so can a wait with a `timeout`: a person who does
    not answer in time, or a request whose deadline passes before any notice reached
    anyone (`NotDelivered`, runtime/timeouts.py), at a human or an approval step."""
    if isinstance(step, n.LlmStep | n.ToolStep | n.AgentStep):
        return True  # a sub-agent's child can fail or be cancelled
    return isinstance(step, n.HumanStep | n.ApprovalStep) and step.timeout is not None


def _step_edges(name: str, step: n.Step) -> Iterator[Edge]:
    order = 0

    def edge(goto: n.Goto | None, kind: EdgeKind) -> Iterator[Edge]:
        nonlocal order
        if goto is not None:
            order += 1
            yield Edge(name, goto.target.text, kind, goto.span, order=order)

    def rules(rules: tuple[n.OutputRule, ...]) -> Iterator[Edge]:
        # An llm output and a routed tool result alike: each rule carries its own guard
        # and the guards of the earlier rules for its type, which failed on this edge.
        nonlocal order
        earlier: dict[str, list[n.Expr]] = {}
        for rule in rules:
            order += 1
            excluded = tuple(earlier.get(rule.type.text, ()))
            yield Edge(
                name, rule.target.text, "output", rule.span,
                type=rule.type.text, guard=rule.guard, excluded=excluded, order=order,
            )  # fmt: skip
            if rule.guard is not None:
                earlier.setdefault(rule.type.text, []).append(rule.guard)

    match step:
        case n.LlmStep():
            yield from rules(step.rules)
            yield from edge(step.on_error, "error")
        case n.ToolStep():
            yield from edge(step.next, "next")
            yield from rules(step.rules)
            yield from edge(step.on_error, "error")
        case n.ApprovalStep():
            yield from edge(step.on_approved, "approved")
            yield from edge(step.on_rejected, "rejected")
        case n.HumanStep():
            yield from edge(step.next, "next")
            yield from edge(step.on_error, "error")
        case n.WaitStep():
            yield from edge(step.next, "next")
            if step.timeout is not None:
                order += 1
                yield Edge(name, step.timeout.target.text, "timeout", step.timeout.span,
                           order=order)  # fmt: skip
        case n.SleepStep():
            yield from edge(step.next, "next")
        case n.AgentStep():
            yield from edge(step.next, "next")
            yield from edge(step.on_error, "error")
        case n.FinalStep():
            pass
