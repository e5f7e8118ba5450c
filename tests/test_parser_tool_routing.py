"""The syntax of tools that route on their results: `-> A | B` and `on TYPE [if G] -> S`."""

from __future__ import annotations

from twelvefold.compiler import nodes as n
from twelvefold.compiler.parser import parse


def test_a_union_result_and_rules_parse_into_the_tool() -> None:
    source, diagnostics = parse(
        'tool find(Q) -> Found | Missing = "m:f" {\n'
        "  on Found if score > 1 -> a  on Found -> b\n"
        "  on Missing -> c  on error -> d  retry 2\n"
        "}"
    )
    assert diagnostics == []
    (tool,) = source.steps
    assert isinstance(tool, n.ToolStep)
    assert [o.text for o in tool.outputs] == ["Found", "Missing"]
    assert [(r.type.text, r.guard is not None, r.target.text) for r in tool.rules] == [
        ("Found", True, "a"),
        ("Found", False, "b"),
        ("Missing", False, "c"),
    ]
    assert tool.routes and tool.next is None
    assert tool.on_error is not None and tool.on_error.target.text == "d"
    assert tool.retry is not None


def test_a_tool_with_next_parses_as_before() -> None:
    source, diagnostics = parse('tool t -> Out = "m:f" { next done }')
    assert diagnostics == []
    (tool,) = source.steps
    assert isinstance(tool, n.ToolStep)
    assert [o.text for o in tool.outputs] == ["Out"] and tool.rules == () and not tool.routes


def test_a_field_or_state_called_error_still_parses_in_a_tool_rule() -> None:
    source, diagnostics = parse('tool t -> Out = "m:f" { on Out if error -> error }')
    assert diagnostics == []
    (tool,) = source.steps
    assert isinstance(tool, n.ToolStep)
    assert tool.rules[0].target.text == "error"
