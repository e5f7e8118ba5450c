"""Three CLI promises of docs/runtime.md: a malformed configuration stops `check`, a
`--now` ahead of the clock is said out loud, and `--json` failures leave a JSON document
on stdout."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.support.generated import EXAMPLES, PROMPTS
from twelvefold.cli import cli


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(EXAMPLES / "calculator.agent", tmp_path / "calculator.agent")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("name", "text", "said"),
    [
        ("twelvefold.toml", "[approvers\nx = 1\n", "at line 1, column 11"),
        ("pyproject.toml", "[tool.twelvefold]\napprovers = 3\n", "`approvers` must be a table"),
        ("twelvefold.toml", '[tools]\nallow_stdlib = "os"\n', "allow_stdlib` must be a list"),
    ],
)
def test_check_reports_a_malformed_configuration(
    project: Path, name: str, text: str, said: str
) -> None:
    (project / name).write_text(text, encoding="utf-8")
    args = ["check", "calculator.agent", "--prompts", str(PROMPTS)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {project / name}: ") and said in result.stderr
    assert "Traceback" not in result.output
    as_json = CliRunner().invoke(cli, [*args, "--format", "json"])
    (diagnostic,) = json.loads(as_json.stdout)
    assert as_json.exit_code == 1 and diagnostic["path"] == str(project / name)
    assert said in diagnostic["message"]


def test_expire_warns_about_a_time_ahead_of_the_clock(project: Path) -> None:
    ahead = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    result = CliRunner().invoke(cli, ["expire", "--now", ahead])
    assert result.exit_code == 0
    assert "ahead of the clock" in result.stderr and "before their real deadlines" in result.stderr
    past = CliRunner().invoke(cli, ["expire", "--now", "2020-01-01T00:00:00Z"])
    assert past.exit_code == 0 and "warning" not in past.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["resume", "nope", "--approve"],
        ["show", "nope"],
        ["fork", "nope", "--at", "1"],
        ["cancel", "nope", "--reason", "x"],
        ["run", "missing.agent", "--input", "x"],
    ],
)
def test_json_commands_print_an_error_object_when_they_fail(project: Path, args: list[str]) -> None:
    (project / "missing.agent").write_text("agent broken {", encoding="utf-8")
    result = CliRunner().invoke(cli, [*args, "--json", "--db", str(project / "t.db")])
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    assert set(document) == {"error"} and document["error"]["message"]
    assert result.stderr.startswith("error: ")


def test_a_configuration_error_in_a_hostile_folder_prints_no_terminal_escape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "red\x1b[31mteam\x07"
    folder.mkdir()
    shutil.copy(EXAMPLES / "calculator.agent", folder / "calculator.agent")
    (folder / "twelvefold.toml").write_text("[approvers\n", encoding="utf-8")
    monkeypatch.chdir(folder)
    result = CliRunner().invoke(cli, ["check", "calculator.agent", "--prompts", str(PROMPTS)])
    assert result.exit_code == 1
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert "red\\x1b[31mteam\\x07" in result.stderr
