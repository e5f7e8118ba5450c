"""Colours and line styles shared by every renderer, so DOT and Mermaid pictures match.

Each kind of state has a fill and a border colour; each kind of edge a colour and a
line. Failures are red and dashed, escalations dotted, approvals green, rejections
orange. A traced thread's path is drawn in blue over a faded graph.
"""

from __future__ import annotations

from typing import Literal

from .. import nodes as n
from ..program import EdgeKind

Line = Literal["solid", "dashed", "dotted"]

FONT = "Helvetica,Arial,sans-serif"

KIND_COLOURS: dict[n.StepKind, tuple[str, str]] = {
    # kind: (fill, border)
    "llm": ("#dbe8ff", "#2f5fb3"),
    "tool": ("#e3f4e1", "#2e7d32"),
    "approval": ("#fff0d4", "#b86e00"),
    "human": ("#f3e5f5", "#7b1fa2"),
    "wait": ("#e0f7fa", "#00838f"),
    "sleep": ("#e0f7fa", "#00838f"),
    "agent": ("#fce4ec", "#ad1457"),
    "final": ("#eceff1", "#37474f"),
}

UNREACHABLE = ("#f5f5f5", "#9e9e9e")
"""Fill and border of a state no thread can reach: grey and dashed."""

EDGE_COLOURS: dict[EdgeKind, str] = {
    "output": "#2f3b4c",
    "next": "#2f3b4c",
    "error": "#c62828",
    "approved": "#2e7d32",
    "rejected": "#e65100",
    "timeout": "#00838f",
    "max_errors": "#8e24aa",
    "max_steps": "#8e24aa",
    "max_cost": "#8e24aa",
    "max_tokens": "#8e24aa",
}

EDGE_LINES: dict[EdgeKind, Line] = {
    "output": "solid",
    "next": "solid",
    "error": "dashed",
    "approved": "solid",
    "rejected": "solid",
    "timeout": "dashed",
    "max_errors": "dotted",
    "max_steps": "dotted",
    "max_cost": "dotted",
    "max_tokens": "dotted",
}

MUTED = "#5f6b7a"
"""The colour of secondary text in a node."""
APPROVAL_MARK = "#b86e00"
ERROR_MARK = "#c62828"

TRACE_COLOUR = "#1565c0"
FADED = "#c9ced6"
"""Borders, edges and text of the parts of the graph a traced thread never visited."""
FADED_FILL = "#fafafa"

HERE_FILLS: dict[str, str] = {
    # The state a traced thread is at, by its status: every runtime `Status` (a test checks
    # each has a fill and a text) and "last event" for a log the reducer refused.
    "running": "#bbdefb",
    "waiting": "#fff59d",
    "finished": "#c8e6c9",
    "failed": "#ffcdd2",
    "cancelled": "#d7ccc8",
    "last event": "#e0e0e0",
}

HERE_TEXT: dict[str, str] = {
    "running": "▶ running here",
    "waiting": "▶ waiting here",
    "finished": "✔ finished here",
    "failed": "✘ failed here",
    "cancelled": "■ cancelled here",
    "last event": "▶ last event here",
}
