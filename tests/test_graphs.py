"""The graph renderers, checked by structure: the DOT is parsed back (pydot), the Mermaid
is read back line by line, the SVG is parsed as XML. Each structural check is also shown
failing on a deliberately broken renderer, so it cannot pass vacuously.
"""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pydot
import pytest

from twelvefold.compiler import compile_file, compile_text
from twelvefold.compiler.guard_text import guard_text
from twelvefold.compiler.program import Program, PromptFile
from twelvefold.compiler.render import GraphView, graph_view, render_image, to_dot, to_mermaid
from twelvefold.compiler.render.dot import start_marker
from twelvefold.compiler.render.mermaid import START_ID, node_ids

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
AGENTS = ("deploybot", "calculator")

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="Graphviz's `dot` is not on PATH (`make system-deps` installs Debian graphviz)",
)

# What the pictures promise (docs/graphs.md's legend), written out independently of
# the renderer's own tables so that a change to those tables is caught here.
SHAPES = {
    "llm": ("box", "rounded"),
    "tool": ("box", None),
    "approval": ("hexagon", None),
    "human": ("box", "diagonals"),
    "final": ("doubleoctagon", None),
}
EDGE_LOOK = {
    # kind: (line style, colour)
    "output": ("solid", "#2f3b4c"),
    "next": ("solid", "#2f3b4c"),
    "error": ("dashed", "#c62828"),
    "approved": ("solid", "#2e7d32"),
    "rejected": ("solid", "#e65100"),
    "max_errors": ("dotted", "#8e24aa"),
    "max_steps": ("dotted", "#8e24aa"),
}

TRICKY = """
agent tricky "Labels with \\"quotes\\", <angles>, | pipes and # hashes." {
  input string
  max_steps 10
  start decide
}
type Go { mode: "a \\"b\\" | <c>" | "plain", n: int }
type Stop {}
llm decide -> Go | Stop {
  prompt "p.j2"
  on Go if mode == "a \\"b\\" | <c>" and n >= -2 -> end
  on Go -> graph
  on Stop -> finish
}
tool end(Go) -> Stop = "m:f" { next finish }
tool graph(Go) -> Stop = "m:f" { next finish }
tool orphan -> Stop = "m:f" { next finish }
final finish(Stop)
"""
"""States named like Mermaid keywords, a guard full of characters DOT and Mermaid dislike,
and a state no thread can reach."""


def example(name: str) -> Program:
    compilation = compile_file(EXAMPLES / f"{name}.agent", generate_code=False)
    assert compilation.ok, compilation.diagnostics
    assert compilation.program is not None
    return compilation.program


def tricky() -> Program:
    compilation = compile_text(
        TRICKY,
        "tricky.agent",
        load_prompt=lambda name: PromptFile(name, Path(name), "Decide."),
        generate_code=False,
    )
    assert compilation.program is not None
    errors = [d for d in compilation.diagnostics if d.is_error]
    assert not errors, errors
    return compilation.program


PROGRAMS: dict[str, Callable[[], Program]] = {
    "deploybot": lambda: example("deploybot"),
    "calculator": lambda: example("calculator"),
    "tricky": tricky,
}


# ---- DOT ---------------------------------------------------------------------------


def unquote(text: str | None) -> str:
    return (text or "").strip('"')


def dot_problems(program: Program, dot_text: str) -> list[str]:
    """Everything in the DOT that does not match the agent; empty when it all does."""
    parsed = pydot.graph_from_dot_data(dot_text)
    if not parsed or len(parsed) != 1:
        return ["the DOT does not parse to one graph"]
    graph = parsed[0]
    view = graph_view(program)
    marker = start_marker(view)
    problems: list[str] = []

    # Every id is quoted, so a state called `graph` or `node` is not a default statement.
    nodes = {
        unquote(node.get_name()): node
        for node in graph.get_nodes()
        if node.get_name().startswith('"')
    }
    if set(nodes) != set(program.steps) | {marker}:
        problems.append(f"nodes {sorted(nodes)} are not the states {sorted(program.steps)}")
    for name, step in program.steps.items():
        if name not in nodes:
            continue
        attrs = nodes[name].get_attributes()
        shape, style_word = SHAPES[step.kind]
        if unquote(attrs.get("shape")) != shape:
            problems.append(f"{name}: shape {attrs.get('shape')}, expected {shape}")
        if style_word and style_word not in unquote(attrs.get("style")):
            problems.append(f"{name}: style {attrs.get('style')} lacks {style_word}")
        if step.kind not in unquote(attrs.get("class")).split():
            problems.append(f"{name}: class {attrs.get('class')} does not name {step.kind}")
        if name not in unquote(attrs.get("label")):
            problems.append(f"{name}: the label does not show the state's name")

    edges = graph.get_edges()
    drawn = Counter(
        (unquote(e.get_source()), unquote(e.get_destination()), unquote(e.get("class")).split()[0])
        for e in edges
        if unquote(e.get_source()) != marker
    )
    expected = Counter((e.source, e.target, e.kind) for e in program.edges())
    if drawn != expected:
        problems.append(f"edges differ: missing {expected - drawn}, extra {drawn - expected}")
    for dot_edge in edges:
        kind = unquote(dot_edge.get("class")).split()[0]
        if kind not in EDGE_LOOK:
            continue
        line, colour = EDGE_LOOK[kind]
        if unquote(dot_edge.get("style")) != line or unquote(dot_edge.get("color")) != colour:
            problems.append(f"a {kind} edge is {dot_edge.get('style')} {dot_edge.get('color')}")
    labels = [unquote(e.get("label")) for e in edges if unquote(e.get("class")) == "output"]
    for edge in program.edges():
        if edge.kind != "output":
            continue
        wanted = edge.type or ""
        if edge.guard is not None:
            wanted += " if " + guard_text(edge.guard).replace('"', "&quot;").replace("<", "&lt;")
        if not any(wanted.replace(">", "&gt;") in label for label in labels):
            problems.append(f"no output edge is labelled {wanted!r}")

    starts = [e for e in edges if unquote(e.get_source()) == marker]
    if [unquote(e.get_destination()) for e in starts] != [program.start]:
        problems.append("the start is not marked by one arrow from the start dot")
    return problems


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_dot_has_exactly_the_states_and_edges_of_the_agent(name: str) -> None:
    program = PROGRAMS[name]()
    assert dot_problems(program, to_dot(graph_view(program))) == []


def _drop_error_edges(view: GraphView) -> GraphView:
    return replace(view, edges=tuple(e for e in view.edges if e.kind != "error"))


def _approvals_drawn_as_llm(view: GraphView) -> GraphView:
    nodes = tuple(replace(n, kind="llm") if n.kind == "approval" else n for n in view.nodes)
    return replace(view, nodes=nodes)


def _start_moved(view: GraphView) -> GraphView:
    return replace(view, nodes=tuple(replace(n, start=n.kind == "final") for n in view.nodes))


def _errors_drawn_solid(view: GraphView) -> str:
    return to_dot(view).replace("style=dashed", "style=solid")


BROKEN_DOT: dict[str, Callable[[GraphView], str]] = {
    "drops error edges": lambda view: to_dot(_drop_error_edges(view)),
    "draws approvals as llm steps": lambda view: to_dot(_approvals_drawn_as_llm(view)),
    "marks the wrong start": lambda view: to_dot(_start_moved(view)),
    "draws errors solid": _errors_drawn_solid,
    "drops a state": lambda view: "\n".join(
        line for line in to_dot(view).splitlines() if not line.startswith('  "done" [')
    ),
}


@pytest.mark.parametrize("broken", sorted(BROKEN_DOT))
def test_the_dot_check_catches_a_broken_renderer(broken: str) -> None:
    program = example("deploybot")
    assert dot_problems(program, BROKEN_DOT[broken](graph_view(program))) != []


def test_tools_that_require_approval_and_their_approvals_are_marked() -> None:
    (graph,) = pydot.graph_from_dot_data(to_dot(graph_view(example("deploybot"))))
    deploy = graph.get_node('"deploy"')[0].get_attributes()
    assert deploy["peripheries"] == "2"
    assert "requires-approval" in unquote(deploy["class"])
    assert "requires approval</b> if env == &quot;production&quot;" in deploy["label"]
    approve = graph.get_node('"approve_deploy"')[0].get_attributes()
    assert "unlocks deploy" in approve["label"]
    (approved,) = [e for e in graph.get_edges() if unquote(e.get("class")) == "approved"]
    assert float(approved.get("penwidth")) > 2
    plain = graph.get_node('"list_tags"')[0].get_attributes()
    assert "peripheries" not in plain and "approval" not in plain["label"]


def test_unreachable_states_are_grey_and_dashed() -> None:
    (graph,) = pydot.graph_from_dot_data(to_dot(graph_view(tricky())))
    orphan = graph.get_node('"orphan"')[0].get_attributes()
    assert "unreachable" in unquote(orphan["class"]).split()
    assert "dashed" in unquote(orphan["style"])
    assert unquote(orphan["fillcolor"]) == "#f5f5f5"
    for reachable in ("decide", "end", "graph", "finish"):
        attrs = graph.get_node(f'"{reachable}"')[0].get_attributes()
        assert "unreachable" not in unquote(attrs["class"])


def test_the_escalation_target_names_its_ceilings() -> None:
    view = graph_view(example("deploybot"))
    (escalate,) = [n for n in view.nodes if n.name == "escalate"]
    assert escalate.escalation == "max_errors 3 · max_steps 24"
    assert "escalation: max_errors 3 · max_steps 24" in to_dot(view)


def test_dot_is_deterministic() -> None:
    assert to_dot(graph_view(example("deploybot"))) == to_dot(graph_view(example("deploybot")))


# ---- Mermaid -------------------------------------------------------------------------

NODE_LINE = re.compile(
    r'^  (\w+)(\(\(|\(\[|\[\[|\{\{|\[/|\(|\[)"(.*)"(\)\)|\]\)|\]\]|\}\}|/\]|\)|\])$'
)
EDGE_LINE = re.compile(r'^  (\w+) (-->|-\.->|==>)(?:\|"(.*)"\|)? (\w+)$')
MERMAID_SHAPES = {"llm": "(", "tool": "[", "approval": "{{", "human": "[/", "final": "(["}
MERMAID_ARROWS = {"error": "-.->", "max_errors": "-.->", "max_steps": "-.->"}


def mermaid_problems(program: Program, text: str) -> list[str]:
    lines = text.splitlines()
    problems: list[str] = []
    if "flowchart TD" not in lines[:3]:
        problems.append("not a top-down flowchart")
    ids = node_ids(graph_view(program))
    state_of = {node_id: state for state, node_id in ids.items()}
    shapes = {m[1]: (m[2], m[3]) for line in lines if (m := NODE_LINE.match(line))}
    if set(shapes) != set(ids.values()) | {START_ID}:
        problems.append(f"nodes {sorted(shapes)} are not the states {sorted(ids.values())}")
    for name, step in program.steps.items():
        opening, label = shapes.get(ids[name], ("", ""))
        wanted = "[[" if getattr(step, "requires_approval", None) else MERMAID_SHAPES[step.kind]
        if opening != wanted:
            problems.append(f"{name} is drawn with {opening!r}, expected {wanted!r}")
        if '"' in label:
            problems.append(f"{name}: an unescaped quote in its label")
    edges = [m for line in lines if (m := EDGE_LINE.match(line))]
    drawn = Counter(
        (state_of.get(m[1], m[1]), state_of.get(m[4], m[4]), m[2])
        for m in edges
        if m[1] != START_ID
    )
    expected = Counter(
        (
            e.source,
            e.target,
            "==>" if e.kind == "approved" and e.target in _locked(program) else
            MERMAID_ARROWS.get(e.kind, "-->"),
        )
        for e in program.edges()
    )  # fmt: skip
    if drawn != expected:
        problems.append(f"edges differ: missing {expected - drawn}, extra {drawn - expected}")
    if [m[4] for m in edges if m[1] == START_ID] != [ids[program.start]]:
        problems.append("the start is not marked")
    styled = sorted(
        int(i)
        for line in lines
        if line.startswith("  linkStyle ")
        for i in line.split()[1].split(",")
    )
    if styled != list(range(1, len(edges))):
        problems.append(f"linkStyle covers edges {styled}, not 1..{len(edges) - 1}")
    return problems


def _locked(program: Program) -> set[str]:
    return {n for n, s in program.steps.items() if getattr(s, "requires_approval", None)}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_mermaid_has_every_state_and_edge(name: str) -> None:
    program = PROGRAMS[name]()
    assert mermaid_problems(program, to_mermaid(graph_view(program))) == []


BROKEN_MERMAID: dict[str, Callable[[GraphView], str]] = {
    "drops error edges": lambda view: to_mermaid(_drop_error_edges(view)),
    "draws approvals as llm steps": lambda view: to_mermaid(_approvals_drawn_as_llm(view)),
    "does not escape quotes": lambda view: to_mermaid(view).replace("#quot;", '"'),
    "draws errors solid": lambda view: to_mermaid(view).replace("-.->", "-->"),
}


@pytest.mark.parametrize("broken", sorted(BROKEN_MERMAID))
def test_the_mermaid_check_catches_a_broken_renderer(broken: str) -> None:
    program = example("deploybot")
    assert mermaid_problems(program, BROKEN_MERMAID[broken](graph_view(program))) != []


def test_mermaid_renames_states_it_reserves_and_escapes_labels() -> None:
    text = to_mermaid(graph_view(tricky()))
    assert "  end_state[" in text and "  graph_state[" in text
    assert "decide -->|" in text and " end_state\n" in text
    assert (
        '|"Go if mode == #quot;a \\#quot;b\\#quot; #124; #lt;c#gt;#quot; and n #gt;= -2"|' in text
    )


# ---- SVG and PNG through Graphviz ------------------------------------------------------


@needs_dot
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_svg_is_valid_xml_with_a_node_per_state(name: str) -> None:
    program = PROGRAMS[name]()
    view = graph_view(program)
    root = ET.fromstring(render_image(to_dot(view), "svg"))
    svg = "{http://www.w3.org/2000/svg}"
    titles: dict[str, set[str]] = {}
    for group in root.iter(f"{svg}g"):
        classes = (group.get("class") or "").split()
        if "node" in classes:
            title = group.find(f"{svg}title")
            assert title is not None and title.text
            titles[title.text] = set(classes)
    assert set(titles) == set(program.steps) | {start_marker(view)}
    for state, step in program.steps.items():
        assert step.kind in titles[state]
    edges = [g for g in root.iter(f"{svg}g") if "edge" in (g.get("class") or "").split()]
    assert len(edges) == len(program.edges()) + 1  # and the start arrow


@needs_dot
def test_png_is_a_png() -> None:
    image = render_image(to_dot(graph_view(example("calculator"))), "png")
    assert image.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(image) > 10_000
