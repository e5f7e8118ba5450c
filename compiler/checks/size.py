"""W8xx: an agent that is probably two agents (LANGUAGE.md, check 8)."""

from __future__ import annotations

from collections.abc import Iterator

import networkx as nx

from ..diagnostics import Diagnostic, warning
from ..program import Program
from .common import start_state
from .loops import own_graph

MAX_STATES = 12
MAX_PATH = 10
"""Transitions on the longest path that visits no state twice."""
SEARCH_BUDGET = 20_000
"""Path extensions to try before giving up on the longest-path question (it is NP-hard)."""


def agent_size(program: Program, _: object) -> Iterator[Diagnostic]:
    if len(program.steps) > MAX_STATES:
        yield warning(
            "W801",
            f"agent `{program.name}` has {len(program.steps)} states",
            program.source.path,
            program.agent.name.span,
            label=f"more than {MAX_STATES} states",
            help="an agent this large is probably two; split off a part that has its own "
            "input and result",
        )
    start = start_state(program)
    path = long_path(own_graph(program), start) if start is not None else None
    if path is not None:
        yield warning(
            "W802",
            f"a thread of `{program.name}` can take {len(path) - 1} steps without repeating "
            "a state",
            program.source.path,
            program.agent.name.span,
            label=f"a path longer than {MAX_PATH} steps",
            help=f"the path {' -> '.join(path)} is long; split it into agents, "
            "or let one llm step decide more at once",
        )


def long_path(graph: nx.MultiDiGraph, start: str) -> list[str] | None:
    """A simple path from `start` with more than MAX_PATH transitions, if one is found.

    Depth-first with an early exit: long paths are found quickly when they exist, and
    the search gives up after SEARCH_BUDGET extensions so huge graphs stay cheap.
    """
    if start not in graph:
        return None
    successors = {node: sorted(set(graph.successors(node))) for node in graph}
    path = [start]
    on_path = {start}
    stack = [iter(successors[start])]
    budget = SEARCH_BUDGET
    while stack and budget > 0:
        following = next(stack[-1], None)
        if following is None:
            stack.pop()
            on_path.discard(path.pop())
            continue
        if following in on_path:
            continue
        budget -= 1
        path.append(following)
        on_path.add(following)
        if len(path) - 1 > MAX_PATH:
            return path
        stack.append(iter(successors[following]))
    return None
