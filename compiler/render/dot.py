"""A `GraphView` as Graphviz DOT text: deterministic, so committed pictures can be checked.

Labels are Graphviz HTML-like labels (bold state name, a smaller line of detail), so
every piece of user text goes through `_html()` and nothing needs DOT's own escapes.
Each node and edge carries a `class` (its kind), which Graphviz copies into the SVG.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from . import style
from .text import drawable
from .view import EdgeView, GraphView, NodeView

NODE_SHAPES: dict[str, tuple[str, str]] = {
    # kind: (shape, style)
    "llm": ("box", "rounded,filled"),
    "tool": ("box", "filled"),
    "approval": ("hexagon", "filled"),
    "human": ("box", "rounded,filled,diagonals"),
    "wait": ("cds", "filled"),
    "sleep": ("box", "rounded,filled,dashed"),
    "agent": ("box3d", "filled"),  # another agent: a box with depth, linked to its file
    "final": ("doubleoctagon", "filled"),
}

SAFE_LINK = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,200}\.agent")
"""A sub-agent's file as written, linked from its box only when it is a plain path."""

START_MARKER = "__start__"
"""The small black dot whose arrow points at the start state (renamed on a clash)."""


def to_dot(view: GraphView) -> str:
    return "\n".join(_lines(view)) + "\n"


def start_marker(view: GraphView) -> str:
    names = {node.name for node in view.nodes}
    marker = START_MARKER
    while marker in names:
        marker = f"_{marker}_"
    return marker


def _lines(view: GraphView) -> Iterator[str]:
    title = f"<b>{_html(view.name)}</b>"
    if view.description:
        title += (
            f'<br/><font point-size="11" color="{style.MUTED}">{_html(view.description)}</font>'
        )
    yield f"digraph {_id(view.name)} {{"
    yield (
        "  graph ["
        + _attrs(
            ("label", f"<{title}>"),
            ("labelloc", "t"),
            ("fontname", f'"{style.FONT}"'),
            ("fontsize", "16"),
            ("rankdir", "TB"),
            ("nodesep", "0.45"),
            ("ranksep", "0.55"),
            ("pad", "0.3"),
            ("bgcolor", "white"),
        )
        + "]"
    )
    font = f'"{style.FONT}"'
    yield f'  node [fontname={font}, fontsize=13, margin="0.18,0.08", penwidth=1.4]'
    yield f"  edge [fontname={font}, fontsize=10, arrowsize=0.8, penwidth=1.2]"
    marker = start_marker(view)
    yield f'  {_id(marker)} [shape=point, width=0.16, class=start, label=""]'
    yield f"  {_id(marker)} -> {_id(view.start)} [class=start, penwidth=1.6]"
    for node in view.nodes:
        yield f"  {_id(node.name)} [{_node_attrs(view, node)}]"
    for edge in view.edges:
        yield f"  {_id(edge.source)} -> {_id(edge.target)} [{_edge_attrs(view, edge)}]"
    for source, target in view.unexplained:
        yield (
            f"  {_id(source)} -> {_id(target)} "
            f'[class=unexplained, color="{style.ERROR_MARK}", style=bold, label=<not in the graph>]'
        )
    yield "}"


def _node_attrs(view: GraphView, node: NodeView) -> str:
    shape, node_style = NODE_SHAPES[node.kind]
    fill, border = style.KIND_COLOURS[node.kind]
    text_colour = "black"
    penwidth = 1.4
    lines = [f"<b>{_html(node.name)}</b>", _small(node.detail, style.MUTED)]
    if node.requires_approval is not None:
        condition = f" if {node.requires_approval}" if node.requires_approval else ""
        lines.append(
            _small(f"<b>requires approval</b>{_html(condition)}", style.APPROVAL_MARK, raw=True)
        )
        penwidth = 2.4
    if node.unlocks:
        lines.append(_small(f"unlocks {', '.join(node.unlocks)}", style.APPROVAL_MARK))
        penwidth = 2.4
    if node.escalation:
        lines.append(_small(f"escalation: {node.escalation}", style.EDGE_COLOURS["max_errors"]))
    if not node.reachable:
        fill, border = style.UNREACHABLE
        node_style += ",dashed"
        lines.append(_small("<i>unreachable</i>", style.MUTED, raw=True))
    if view.traced:
        if node.visits:
            penwidth = max(penwidth, 2.6)
            border = style.TRACE_COLOUR
            lines.append(_small(f"visited ×{node.visits}", style.TRACE_COLOUR))
        elif node.here is None:
            fill, border, text_colour = style.FADED_FILL, style.FADED, style.FADED
            lines = [lines[0], _small(node.detail, style.FADED)]
        if node.errors:
            border = style.ERROR_MARK
            plural = "s" if node.errors != 1 else ""
            lines.append(_small(f"⚠ {node.errors} error{plural}", style.ERROR_MARK))
        if node.here is not None:
            fill = style.HERE_FILLS[node.here]
            lines.append(_small(f"<b>{style.HERE_TEXT[node.here]}</b>", "black", raw=True))
    classes = " ".join(
        [node.kind]
        + (["start"] if node.start else [])
        + (["unreachable"] if not node.reachable else [])
        + (["requires-approval"] if node.requires_approval is not None else [])
        + (["visited"] if node.visits else [])
        + (["here", node.here.replace(" ", "-")] if node.here else [])
        + (["errors"] if node.errors else [])
    )
    pairs: list[tuple[str, str]] = [
        ("shape", shape),
        ("style", f'"{node_style}"'),
        ("fillcolor", f'"{fill}"'),
        ("color", f'"{border}"'),
        ("fontcolor", f'"{text_colour}"'),
        ("penwidth", f"{penwidth:g}"),
        ("class", f'"{classes}"'),
        ("label", "<" + "<br/>".join(lines) + ">"),
    ]
    if node.requires_approval is not None:
        pairs.insert(5, ("peripheries", "2"))
    if node.link is not None and SAFE_LINK.fullmatch(node.link):
        # Graphviz copies URL into the SVG as a link; only a plain relative path is linked
        # (a file name is the user's text: no quotes, schemes or markup get through).
        pairs.append(("URL", f'"{node.link}"'))
    return _attrs(*pairs)


def _edge_attrs(view: GraphView, edge: EdgeView) -> str:
    colour = style.EDGE_COLOURS[edge.kind]
    line = style.EDGE_LINES[edge.kind]
    penwidth = 2.4 if edge.unlocks else 1.2
    label = edge.label
    font_colour = colour if edge.kind not in ("output", "next") else "#37474f"
    if view.traced:
        if edge.visits:
            colour = font_colour = style.TRACE_COLOUR
            penwidth = 2.8
            label = f"{label} ×{edge.visits}".strip()
        else:
            colour = font_colour = style.FADED
    pairs: list[tuple[str, str]] = [
        ("class", f'"{edge.kind}{" visited" if edge.visits else ""}"'),
        ("color", f'"{colour}"'),
        ("fontcolor", f'"{font_colour}"'),
        ("style", line),
        ("penwidth", f"{penwidth:g}"),
        ("label", f"<{_html(label)}>" if label else '""'),
    ]
    return _attrs(*pairs)


def _small(text: str, colour: str, *, raw: bool = False) -> str:
    body = text if raw else _html(text)
    return f'<font point-size="10" color="{colour}">{body}</font>'


def _attrs(*pairs: tuple[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in pairs)


def _id(name: str) -> str:
    """A quoted DOT id: any text, drawn (`drawable`), a line break written as `\\n`."""
    text = drawable(name).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def _html(text: str) -> str:
    """Text inside an HTML-like label: entities for XML's specials, every character XML
    forbids or a reader would not see drawn as its escape (`drawable`), a line break as
    one (`<br/>`)."""
    return (
        drawable(text)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\n", "<br/>")
    )
