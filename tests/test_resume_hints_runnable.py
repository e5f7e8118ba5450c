"""A hint to resume a waiting thread runs as printed once its placeholders are filled: an
approval whose step names approvers is decided only with `--by`, so every hint for one
carries `--by NAME` (a red team, rt9: `run`'s `resume:` line, the log notice and the
refusals omitted it, and the copied command failed with "nobody (give by= / --by)")."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.runtime_helpers import DEPLOY_CASSETTE, EXAMPLES, write_cassette
from twelvefold.cli import cli
from twelvefold.runtime.notify import Notice

DEPLOYBOT = str(EXAMPLES / "deploybot.agent")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("TWELVEFOLD_DB", "TWELVEFOLD_STORE", "TWELVEFOLD_NOTIFY_WEBHOOK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("TWELVEFOLD_NOTIFY_SLACK", raising=False)
    monkeypatch.delenv("TWELVEFOLD_SMTP_HOST", raising=False)
    monkeypatch.setenv("TWELVEFOLD_NOTIFY_LOG", "1")
    write_cassette(tmp_path / "deploy.jsonl", DEPLOY_CASSETTE)
    return tmp_path


def launched() -> tuple[str, str]:
    """`run` deploybot up to its approval: what it printed (the log notice included)."""
    args = ["run", DEPLOYBOT, "--input", "deploy v1.2.3 to production"]
    result = CliRunner().invoke(cli, [*args, "--cassette", "deploy.jsonl"])
    assert result.exit_code == 0, result.output
    (thread,) = re.findall(r"thread (\w+) \(deploybot\) waits at", result.output)
    return thread, result.output


def approve_as_printed(hint: str, name: str) -> str:
    """Run the approving half of a printed hint, `NAME` filled in with `name`."""
    approving = hint.split("|")[0].strip()
    words = shlex.split(approving)
    assert words[:2] == ["twelvefold", "resume"] and "NAME" in words, hint
    words = [name if word == "NAME" else word for word in words]
    result = CliRunner().invoke(cli, [*words[1:], "--cassette", "deploy.jsonl", "--json"])
    assert result.exit_code == 0, result.output
    return str(json.loads(result.output.splitlines()[-1])["status"])


def test_the_resume_line_of_run_runs_as_printed(workdir: Path) -> None:
    _, out = launched()
    (hint,) = re.findall(r"^  resume: (.*)$", out, flags=re.M)
    assert "--by NAME" in hint
    assert approve_as_printed(hint, "ana") == "finished"


def test_the_log_notice_runs_as_printed(workdir: Path) -> None:
    _, out = launched()
    (hint,) = [line.strip() for line in out.splitlines() if line.startswith("  twelvefold resume")]
    assert "--by NAME" in hint
    assert approve_as_printed(hint, "carol") == "finished"


def test_a_decision_of_the_wrong_kind_is_told_the_command_with_by(workdir: Path) -> None:
    thread, _ = launched()
    result = CliRunner().invoke(
        cli, ["resume", thread, "--request", "approve_deploy-5", "--answer", "yes"]
    )
    assert result.exit_code == 1
    (hint,) = re.findall(r"resume it with `([^`]*)`", result.output)
    assert "--by NAME" in hint
    assert approve_as_printed(hint, "ana") == "finished"


def test_a_request_without_approvers_needs_no_name() -> None:
    open_to_all = Notice("t1", "bot", "ok", "approval", "Go?", None, (), "ok-2")
    answer = Notice("t1", "bot", "ask", "answer", "Why?", None, ("leads",), "ask-2")
    named = Notice("t1", "bot", "ok", "approval", "Go?", None, ("leads",), "ok-2")
    assert "--by" not in open_to_all.how_to_resume
    assert "--by" not in answer.how_to_resume  # answering a question needs no approver
    assert named.how_to_resume.startswith("twelvefold resume t1 --request ok-2 --by NAME ")


def test_a_hint_repeats_where_the_thread_is_and_its_model(workdir: Path) -> None:
    """rt16: after `run --cassette F` (or `--db F`), `resume:` said `twelvefold resume T
    …` alone, which then failed: no API key (the real model instead of the cassette), or
    no such thread (the default store). The options the run was given on its command line
    that the next command needs are repeated; the hint runs as printed."""
    (workdir / "elsewhere").mkdir()
    store = workdir / "elsewhere" / "my threads.db"  # (a space: the hint quotes it)
    args = ["run", DEPLOYBOT, "--input", "deploy v1.2.3 to production", "--db", str(store)]
    result = CliRunner().invoke(cli, [*args, "--cassette", "deploy.jsonl"])
    assert result.exit_code == 0, result.output
    (hint,) = re.findall(r"^  resume: (.*)$", result.output, flags=re.M)
    words = shlex.split(hint.split("|")[0])
    assert words[words.index("--db") + 1] == str(store), hint
    assert words[words.index("--cassette") + 1] == "deploy.jsonl", hint
    words = ["ana" if word == "NAME" else word for word in words]
    resumed = CliRunner().invoke(cli, [*words[1:], "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.output.splitlines()[-1])["status"] == "finished"


def test_options_from_the_environment_are_not_repeated(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TWELVEFOLD_DB is set for the next command too; a password is never printed."""
    monkeypatch.setenv("TWELVEFOLD_DB", str(workdir / "env.db"))
    _, out = launched()
    (hint,) = re.findall(r"^  resume: (.*)$", out, flags=re.M)
    assert "--db" not in hint and "--cassette deploy.jsonl" in hint, hint


def words_as_bash_reads(command: str, locale: str = "C.UTF-8") -> list[str]:
    """The words bash makes of `command` (its quoting, `$'…'` included) in `locale`."""
    done = subprocess.run(
        ["bash", "-c", f"printf '%s\\0' {command}"],
        capture_output=True,
        check=True,
        env={**os.environ, "LC_ALL": locale},
    )
    return [os.fsdecode(word) for word in done.stdout.split(b"\0")[:-1]]


@pytest.mark.parametrize(
    "name",
    [
        "zero\u200bwidth.db",
        "new\nline.db",
        "it's $(id) `x`.db",
        "rtl\u202eoops.db",
        "no-break\u00a0space.db",  # rt18: printed raw, copied as a plain space
    ],
    ids=["zero-width", "line-break", "shell", "bidi", "no-break-space"],
)
def test_a_hint_with_an_unseen_character_runs_as_printed_and_forges_no_line(
    workdir: Path, name: str
) -> None:
    """rt17: `--db 'new<LF>line.db'` printed the line break raw (a value could forge a
    `resume:` line of its own under the hint), and an invisible character was copied as
    nothing; each is now written as bash's `$'…'` escape."""
    args = ["run", DEPLOYBOT, "--input", "deploy v1.2.3 to production", "--db", name]
    result = CliRunner().invoke(cli, [*args, "--cassette", "deploy.jsonl"])
    assert result.exit_code == 0, result.output
    (hint,) = re.findall(r"^  resume: (.*)$", result.output, flags=re.M)
    assert not any(c in hint for c in "\n\u200b\u202e\u00a0"), hint
    words = words_as_bash_reads(hint.split("|")[0])
    assert words[words.index("--db") + 1] == name, hint
    # rt18: `\\u200b` is expanded by bash in a UTF-8 locale only; under LC_ALL=C the
    # hint named another file. UTF-8 bytes (`\\xe2\\x80\\x8b`) read alike everywhere.
    in_c = words_as_bash_reads(hint.split("|")[0], locale="C")
    assert in_c[in_c.index("--db") + 1] == name, hint
    words = ["ana" if word == "NAME" else word for word in words]
    resumed = CliRunner().invoke(cli, [*words[1:], "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.output.splitlines()[-1])["status"] == "finished"
