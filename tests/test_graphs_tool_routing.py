"""Pictures of a tool that routes on its result: one labelled edge per rule, like an llm
step's (issue 12, item 1)."""

from __future__ import annotations

from pathlib import Path

from twelvefold.compiler import compile_file
from twelvefold.compiler.render.mermaid import to_mermaid
from twelvefold.compiler.render.view import graph_view

REPO = Path(__file__).parent.parent


def test_each_rule_of_a_routing_tool_is_a_labelled_edge() -> None:
    result = compile_file(REPO / "examples" / "supportbot.agent", generate_code=False)
    assert result.program is not None
    text = to_mermaid(graph_view(result.program))
    assert 'lookup -->|"Customer if tier == #quot;enterprise#quot;"| draft_enterprise' in text
    assert 'lookup -->|"Customer (otherwise)"| draft' in text
    assert 'lookup -->|"UnknownCustomer"| escalate' in text
    assert "tool(Ticket) → Customer #124; UnknownCustomer" in text  # the union, escaped
