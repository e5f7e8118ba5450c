"""The view model the graph renderers fill in: what to draw, computed once, in Python.

Renderers (dot.py, mermaid.py) only format this; every decision about what a node says,
which states are unreachable, which approval unlocks which tool, and what a trace
adds is made here, so the DOT and the Mermaid pictures always agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from .. import nodes as n
from ..guard_text import guard_text
from ..program import Edge, EdgeKind, Program
from .trace import Trace


@dataclass(frozen=True)
class NodeView:
    name: str
    kind: n.StepKind
    detail: str
    """The line under the name: the kind and what the step works with."""
    start: bool
    reachable: bool
    requires_approval: str | None = None
    """For a tool that requires approval: its guard as text ("" when always)."""
    unlocks: tuple[str, ...] = ()
    """For an approval: the tools that require approval it leads to on `approved`."""
    escalation: str = ""
    """For the target of `max_errors`/`max_steps`: the ceilings that lead here."""
    visits: int = 0
    errors: int = 0
    here: str | None = None
    """Set on the state a traced thread is at: its status (running/waiting/finished/failed)."""
    link: str | None = None
    """For a sub-agent step: the child's .agent file as written (the box links to it)."""


@dataclass(frozen=True)
class EdgeView:
    edge: Edge
    label: str
    unlocks: bool = False
    """An `approved` edge into a tool that requires approval."""
    visits: int = 0

    @property
    def source(self) -> str:
        return self.edge.source

    @property
    def target(self) -> str:
        return self.edge.target

    @property
    def kind(self) -> EdgeKind:
        return self.edge.kind


@dataclass(frozen=True)
class GraphView:
    name: str
    description: str | None
    nodes: tuple[NodeView, ...]
    edges: tuple[EdgeView, ...]
    traced: bool = False
    """True when a thread's trace is overlaid: unvisited parts are then drawn faint."""
    unexplained: tuple[tuple[str, str], ...] = ()

    @property
    def start(self) -> str:
        return next(node.name for node in self.nodes if node.start)


def graph_view(program: Program, trace: Trace | None = None) -> GraphView:
    reachable = reachable_states(program)
    approval_tools = {
        name: _approval_text(step.requires_approval)
        for name, step in program.steps.items()
        if isinstance(step, n.ToolStep) and step.requires_approval is not None
    }
    edges = tuple(
        EdgeView(
            edge,
            edge_label(program, edge),
            unlocks=edge.kind == "approved" and edge.target in approval_tools,
            visits=trace.edges.get(edge, 0) if trace else 0,
        )
        for edge in program.edges()
    )
    nodes = tuple(
        NodeView(
            name=name,
            kind=step.kind,
            detail=step_detail(step),
            start=name == program.start,
            reachable=name in reachable,
            requires_approval=approval_tools.get(name),
            unlocks=tuple(e.target for e in edges if e.unlocks and e.source == name),
            escalation=_escalation_text(program, name),
            visits=trace.visits.get(name, 0) if trace else 0,
            errors=trace.errors.get(name, 0) if trace else 0,
            here=_here(trace, name),
            link=step.file.value if isinstance(step, n.AgentStep) else None,
        )
        for name, step in program.steps.items()
    )
    return GraphView(
        name=program.name,
        description=program.agent.description,
        nodes=nodes,
        edges=edges,
        traced=trace is not None,
        unexplained=trace.unexplained if trace else (),
    )


def reachable_states(program: Program) -> set[str]:
    """States a thread can reach from the start, escalation edges included."""
    if program.start not in program.graph:
        return set()
    return {program.start} | set(nx.descendants(program.graph, program.start))


def step_detail(step: n.Step) -> str:
    match step:
        case n.LlmStep(model=model):
            return f"llm · {model.value}" if model else "llm"
        case n.ToolStep(input=input, outputs=outputs):
            argument = f"({input.text})" if input else ""
            return f"tool{argument} → {' | '.join(o.text for o in outputs)}"
        case n.ApprovalStep(approvers=approvers):
            people = ", ".join(a.value for a in approvers)
            return f"approval · {people}" if people else "approval"
        case n.HumanStep(input=input):
            return f"human({input.text})" if input else "human"
        case n.WaitStep(event=event):
            return f"wait for {event.text}"
        case n.SleepStep(duration=duration, until=until):
            return (
                f"sleep until {until.text}"
                if until
                else f"sleep {duration.text if duration else ''}"
            )
        case n.AgentStep(file=file):
            return f"agent {file.value}"
        case n.FinalStep(input=input):
            return f"final({input.text})" if input else "final"


def edge_label(program: Program, edge: Edge) -> str:
    match edge.kind:
        case "output":
            label = edge.type or ""
            if edge.guard is not None:
                return f"{label} if {guard_text(edge.guard)}"
            return f"{label} (otherwise)" if edge.excluded else label
        case "next":
            return ""
        case "error":
            return "on error"
        case "approved" | "rejected":
            return edge.kind
        case "timeout":
            step = program.steps[edge.source]
            limit = (
                step.timeout.duration.text if isinstance(step, n.WaitStep) and step.timeout else ""
            )
            return f"timeout {limit}".strip()
        case "max_errors" | "max_steps" | "max_cost" | "max_tokens":
            # Escalations leave from nearly every state; their target's label names the
            # ceilings once (see `_escalation_text`) instead of a label on every edge.
            return ""


def _escalation_text(program: Program, name: str) -> str:
    ceilings = [
        f"{ceiling_name} {ceiling.limit.value}"
        for ceiling_name, ceiling in (
            ("max_errors", program.agent.max_errors),
            ("max_steps", program.agent.max_steps),
            ("max_cost", program.agent.max_cost),
            ("max_tokens", program.agent.max_tokens),
        )
        if ceiling is not None and ceiling.target is not None and ceiling.target.text == name
    ]
    return " · ".join(ceilings)


def _approval_text(requirement: n.RequiresApproval) -> str:
    return guard_text(requirement.guard) if requirement.guard is not None else ""


def _here(trace: Trace | None, name: str) -> str | None:
    if trace is None:
        return None
    if trace.position == name:
        return trace.status or "running"
    if trace.position is None and trace.last_step == name:
        return "last event"
    return None
