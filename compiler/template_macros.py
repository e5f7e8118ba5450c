"""Macros that call themselves on every path through their body: they never finish.

`{% macro item(x) %}{{ item(x) }}{% endmacro %}` recurses until Python's stack runs out
(or, calling itself twice, until the template's step budget does: runtime/templates.py),
whatever it is given. A macro that calls itself only under an `{% if %}`, inside a
`{% for %}` (whose list may be empty), in one branch of `a if c else b`, or on the right
of `and`/`or` may stop, and is how nested data is rendered: it is left alone. This is
rustc's `unconditional_recursion`, for the macros a template defines at its top level.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import networkx as nx
from jinja2 import nodes as j


@dataclass(frozen=True, slots=True)
class EndlessMacro:
    cycle: tuple[str, ...]
    """The macros that call each other on every path, first one again at the end
    (`("a", "b", "a")`; a macro calling itself: `("a", "a")`)."""
    line: int
    """The line its first macro is defined on."""


def endless_macros(tree: j.Template) -> tuple[EndlessMacro, ...]:
    """Each group of the template's top-level macros that call each other on every path."""
    macros = {node.name: node for node in tree.body if isinstance(node, j.Macro)}
    calls = nx.DiGraph()
    for name, macro in macros.items():
        calls.add_node(name)
        own = {arg.name for arg in macro.args} | {
            node.name for node in macro.find_all(j.Name) if node.ctx in ("store", "param")
        }
        for called in _unconditional_calls(macro.body):
            if called in macros and called not in own:
                calls.add_edge(name, called)
    found = []
    for group in nx.strongly_connected_components(calls):
        first = min(group, key=lambda name: (macros[name].lineno, name))
        if len(group) == 1 and not calls.has_edge(first, first):
            continue
        cycle = [edge[0] for edge in nx.find_cycle(calls.subgraph(group), first)]
        found.append(EndlessMacro((*cycle, cycle[0]), macros[first].lineno))
    return tuple(sorted(found, key=lambda m: (m.line, m.cycle)))


def _unconditional_calls(body: list[j.Node]) -> Iterator[str]:
    """The names called, as `name(…)`, on every path through `body` (a stack of its own:
    a template may nest fifty deep)."""
    pending: list[j.Node] = list(body)
    while pending:
        node = pending.pop()
        if isinstance(node, j.Call) and isinstance(node.node, j.Name):
            yield node.node.name
        if isinstance(node, j.If):
            pending.append(node.test)  # its branches may not run, unless the test is a
            if isinstance(node.test, j.Const):  # constant (`{% if true %}`)
                pending.extend(node.body if node.test.value else [*node.elif_, *node.else_])
        elif isinstance(node, j.For):
            pending.append(node.iter)  # its body runs once per item: maybe never
        elif isinstance(node, j.CondExpr):
            pending.append(node.test)
        elif isinstance(node, j.And | j.Or):
            pending.append(node.left)
        elif isinstance(node, j.CallBlock):
            pending.append(node.call)  # its body runs when the macro calls `caller()`
        elif not isinstance(node, j.Macro):  # a macro defined inside runs when called
            pending.extend(node.iter_child_nodes())
