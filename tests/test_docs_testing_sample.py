"""docs/testing.md shows what `twelvefold test examples/deploybot.agent` prints: the sample
lists the properties the command runs on deploybot, in its order, and the edge and state
totals of deploybot's graph; the table of properties describes every property there is.

The sample once listed 10 properties after the command had come to run 13.
"""

from __future__ import annotations

import re
from pathlib import Path

from twelvefold.testing.properties import PROPERTIES, properties_for
from twelvefold.testing.subject import load_subject

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "testing.md"


def sample() -> str:
    text = PAGE.read_text(encoding="utf-8")
    return text.split("$ twelvefold test examples/deploybot.agent\n", 1)[1].split("```", 1)[0]


def test_the_sample_run_lists_the_properties_deploybot_is_tested_with() -> None:
    subject = load_subject(ROOT / "examples" / "deploybot.agent")
    shown = re.findall(r"^  ok    (\w+)$", sample(), re.M)
    assert shown == [p.name for p in properties_for(subject)]
    agent = subject.module.AGENT
    assert f"states          {len(agent.states)}/{len(agent.states)}" in sample()
    edges = len(agent.edges)
    assert f"edges          {edges}/{edges}" in sample()
    assert f"shortest paths reach {edges}/{edges} edges" in sample()


def test_the_table_describes_every_property() -> None:
    text = PAGE.read_text(encoding="utf-8")
    table = text.split("\n## The properties\n", 1)[1].split("\n## ", 1)[0]
    described = re.findall(r"^\| `(\w+)` \|", table, re.M)
    assert described == [p.name for p in PROPERTIES] + ["user_invariants"]
