"""Pictures of an agent: its checked graph as Mermaid, DOT, SVG or PNG, optionally with
the path one thread took laid over it.

    view = graph_view(program, overlay(program, events, module))   # view.py, trace.py
    to_dot(view) / to_mermaid(view)                         # dot.py, mermaid.py
    render_image(to_dot(view), "svg")                       # graphviz.py: runs `dot`
"""

from .dot import to_dot
from .graphviz import DOT_TIMEOUT, GraphvizFailed, GraphvizMissing, GraphvizTimedOut, render_image
from .mermaid import to_mermaid
from .trace import Trace, overlay
from .view import EdgeView, GraphView, NodeView, graph_view, reachable_states

__all__ = [
    "DOT_TIMEOUT",
    "EdgeView",
    "GraphView",
    "GraphvizFailed",
    "GraphvizMissing",
    "GraphvizTimedOut",
    "NodeView",
    "Trace",
    "graph_view",
    "overlay",
    "reachable_states",
    "render_image",
    "to_dot",
    "to_mermaid",
]
