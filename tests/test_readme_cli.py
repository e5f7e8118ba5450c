"""The thread commands README.md's "Using the CLI" shows work offline, as written.

A user who runs them right after `make demo` has no API key: every line that touches a
thread must replay the example cassette, and the fork it shows must be one worth making.
The lines are read from the README itself, so the page and this test cannot drift.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from twelvefold.cli import cli

ROOT = Path(__file__).resolve().parents[1]
THREAD_COMMANDS = {"run", "resume", "fork", "cancel", "threads", "show", "stats"}


def readme_lines() -> list[str]:
    """The shell lines of the "Using the CLI" section, comments and all."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Using the CLI", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [line for block in blocks for line in block.splitlines()]


def commands() -> list[list[str]]:
    """The thread commands in order, with the README's shell variables filled in."""
    variables: dict[str, str] = {}
    found = []
    for line in readme_lines():
        assignment = re.fullmatch(r"(\w+)=(\S+)", line.strip())
        if assignment:
            variables[assignment[1]] = assignment[2]
            continue
        words = shlex.split(line, comments=True)
        if words[:1] == ["twelvefold"] and words[1] in THREAD_COMMANDS:
            found.append(
                [re.sub(r"\$(\w+)", lambda m: variables[m[1]], word) for word in words[1:]]
            )
    return found


def invoke(arguments: list[str]) -> str:
    result = CliRunner().invoke(cli, arguments)
    assert result.exit_code == 0, f"twelvefold {shlex.join(arguments)}\n{result.output}"
    return result.output


def status(thread: str) -> dict[str, object]:
    view: dict[str, object] = json.loads(invoke(["show", thread, "--json"]))
    return view


def test_the_readme_thread_commands_run_offline_and_the_fork_decides_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # the README's paths are the checkout's
    monkeypatch.setenv("TWELVEFOLD_DB", str(tmp_path / "threads.db"))
    monkeypatch.delenv("TWELVEFOLD_STORE", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    # A line that reaches for the real model fails at once instead of after a DNS wait.
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")

    shown = commands()
    assert [c[0] for c in shown][:3] == ["run", "resume", "fork"], shown
    names: dict[str, str] = {}
    original = ""
    for arguments in shown:
        if arguments[0] == "cancel":  # it ends a waiting thread: a new run of the README's
            run = next(c for c in shown if c[0] == "run")
            invoke(run)
            names["THREAD"] = json.loads(invoke(["threads", "--json"]))[0]["thread_id"]
        output = invoke([names.get(word, word) for word in arguments])
        if arguments[0] == "run":
            names["THREAD"] = json.loads(invoke(["threads", "--json"]))[0]["thread_id"]
            original = names["THREAD"]
            assert status(names["THREAD"])["status"] == "waiting", output
        if arguments[0] == "fork":
            names["FORK"] = re.findall(r" as (\w+)", output)[0]
            fork = status(names["FORK"])
            # Not a fork that fails at once on a tool call it was cut in the middle of.
            assert fork["status"] == "waiting", output
            assert fork["request"] != status(names["THREAD"])["request"], output

    deployed, forked = status(original), status(names["FORK"])
    assert deployed["status"] == "finished", deployed
    assert "Deployed v1.2.3 to production" in json.dumps(deployed["output"]), deployed
    # The fork took the other decision, and its thread knows it did not deploy.
    assert forked["status"] == "finished", forked
    assert "Did not deploy" in json.dumps(forked["output"]), forked
