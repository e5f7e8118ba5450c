"""The checked program: what codegen and the graph renderers consume.

`check()` builds it from a `SourceFile`; later stages never look at raw Lark trees.
The graph is a networkx MultiDiGraph over state names whose edges carry an `Edge`
(under the attribute "edge"), so graph questions are asked of networkx, not re-derived.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

from twelvefold.runtime.spec import EdgeKind as EdgeKind

from . import nodes as n
from .diagnostics import Span


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    kind: EdgeKind
    span: Span
    type: str | None = None
    """For `output` edges: the type the rule routes (an llm output or a tool result)."""
    guard: n.Expr | None = None
    """The rule's own guard."""
    excluded: tuple[n.Expr, ...] = ()
    """Guards of earlier rules for the same type, which cannot hold on this edge."""
    order: int = 0
    """Position among the source's edges, so codegen keeps the rules' order."""


@dataclass(frozen=True)
class PromptFile:
    """A prompt template found under the prompts directory."""

    name: str
    """As written in the .agent file, relative to the prompts directory."""
    path: Path
    text: str


PromptLoader = Callable[[str], PromptFile | None]
"""Finds a prompt template by the name a step gives it; None when there is no such file."""


@dataclass(frozen=True)
class Program:
    source: n.SourceFile
    agent: n.AgentDecl
    types: dict[str, n.TypeDecl]
    steps: dict[str, n.Step]
    graph: nx.MultiDiGraph
    prompts: dict[str, PromptFile] = field(default_factory=dict)
    """By the step that uses it."""
    source_text: str = ""
    approver_groups: frozenset[str] | None = None
    """The approvers groups the project's configuration defines (runtime/config.py), or
    None when there is no configuration (then no group is checked)."""
    config_name: str = ""
    """The configuration file, as diagnostics name it."""
    allow_stdlib: frozenset[str] = frozenset()
    """Standard-library modules the configuration lets tools name."""

    @property
    def name(self) -> str:
        return self.agent.name.text

    @property
    def start(self) -> str:
        """The declared start, else the first state; "" for an agent with no states (E106)."""
        if self.agent.start is not None:
            return self.agent.start.text
        return next(iter(self.steps), "")

    def edges(self) -> list[Edge]:
        """All edges in a stable order: by source state (source order), then rule order."""
        return [edge for state in self.steps for edge in self.edges_from(state)]

    def edges_from(self, state: str) -> list[Edge]:
        """A state's outgoing edges in the order its rules were written."""
        if state not in self.graph:
            return []
        found = [data["edge"] for _, _, data in self.graph.out_edges(state, data=True)]
        return sorted(found, key=lambda e: e.order)
