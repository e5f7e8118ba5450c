"""Graphs of agents with sub-agents, waits and sleeps: the child agent is a box with
depth (Graphviz `box3d`) that links to its file in the SVG; a file name that is not a
plain path is shown but never linked; waits and sleeps have shapes of their own (they
used to have none: drawing payment.agent raised KeyError)."""

from __future__ import annotations

import shutil
from pathlib import Path

from twelvefold.compiler import compile_file, compile_text
from twelvefold.compiler.render.dot import to_dot
from twelvefold.compiler.render.graphviz import render_image
from twelvefold.compiler.render.mermaid import to_mermaid
from twelvefold.compiler.render.view import graph_view

EXAMPLES = Path(__file__).parent.parent / "examples"


def view_of(path: Path):  # type: ignore[no-untyped-def]
    result = compile_file(path)
    assert result.ok and result.program is not None, result.diagnostics
    return graph_view(result.program)


def test_the_child_agent_is_a_linked_box() -> None:
    dot = to_dot(view_of(EXAMPLES / "returns.agent"))
    (line,) = [x for x in dot.splitlines() if x.lstrip().startswith('"refund" [')]
    assert "shape=box3d" in line and 'URL="returns/refunds.agent"' in line
    assert "agent returns/refunds.agent" in line
    mermaid = to_mermaid(view_of(EXAMPLES / "returns.agent"))
    assert 'refund[\\"<b>refund</b><br/>agent returns/refunds.agent"/]' in mermaid


def test_waits_and_sleeps_are_drawn() -> None:
    view = view_of(EXAMPLES / "payment.agent")
    assert "shape=cds" in to_dot(view)
    assert 'await_payment>"' in to_mermaid(view)


def test_a_file_name_that_is_not_a_plain_path_is_never_linked(tmp_path: Path) -> None:
    odd = "x y&z.agent"  # a space and an ampersand: shown, escaped, not linked
    (tmp_path / odd).write_text(
        "type T { v: string }\nagent x { input T start done }\nfinal done(T)\n"
    )
    text = (
        "type T { v: string }\n"
        "agent a { input T start call }\n"
        'agent call(T) -> T = "' + odd + '" { next done }\n'
        "final done(T)\n"
    )
    result = compile_text(text, str(tmp_path / "a.agent"), generate_code=False)
    assert result.ok, result.diagnostics
    assert result.program is not None
    dot = to_dot(graph_view(result.program))
    assert "URL=" not in dot and "x y&amp;z.agent" in dot


def test_the_svg_holds_the_link() -> None:
    assert shutil.which("dot"), "Graphviz (dot) is a real part: install it"
    svg = render_image(to_dot(view_of(EXAMPLES / "returns.agent")), "svg").decode()
    assert 'href="returns/refunds.agent"' in svg
