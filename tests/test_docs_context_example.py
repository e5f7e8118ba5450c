"""docs/language.md's "The context block" example is a valid agent: its `agent` block, put
in place of deploybot's, with the `render` template the page shows, passes
`twelvefold check`, and the template renders the tool result as the page says.

The page once showed `context { }` at the top level (E001) and named a template the
repository does not have (E701).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from click.testing import CliRunner

from twelvefold.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def section() -> str:
    page = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    return page.split("\n## The context block\n", 1)[1].split("\n## ", 1)[0]


def test_the_context_block_example_checks_and_its_template_renders(tmp_path: Path) -> None:
    text = section()
    (agent_block,) = re.findall(r"```agent\n(.*?)```", text, re.S)
    (template,) = re.findall(r"```jinja\n(.*?)```", text, re.S)
    (name,) = re.findall(r'render \w+ "([^"]+)"', agent_block)

    shutil.copytree(ROOT / "examples" / "deploybot", tmp_path / "deploybot")
    shutil.copytree(ROOT / "prompts" / "deploybot", tmp_path / "prompts" / "deploybot")
    (tmp_path / "prompts" / name).write_text(template)
    source = (ROOT / "examples" / "deploybot.agent").read_text(encoding="utf-8")
    header = re.search(r"^agent deploybot .*?^}\n", source, re.S | re.M)
    assert header is not None
    agent = tmp_path / "deploybot.agent"
    agent.write_text(source.replace(header[0], agent_block))

    checked = CliRunner().invoke(cli, ["check", str(agent)])
    assert checked.exit_code == 0, checked.output

    db = str(tmp_path / "t.db")
    cassette = str(ROOT / "examples" / "cassettes" / "deploybot.jsonl")
    run = ["run", str(agent), "--input", "deploy v1.2.3 to production", "--db", db]
    ran = CliRunner().invoke(cli, [*run, "--cassette", cassette, "--json"])
    thread = re.findall(r'"thread_id": "(\w+)"', ran.output)[0]
    shown = CliRunner().invoke(
        cli, ["prompt", str(agent), "decide", "--thread", thread, "--db", db]
    )
    assert "<list_tags_result>v1.2.3, v1.2.2, v1.2.1</list_tags_result>" in shown.output
