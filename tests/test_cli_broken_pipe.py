"""A command whose reader went away (`twelvefold show T | head -1`) ends quietly: no
message, no traceback at interpreter shutdown, and the exit status a process killed by
SIGPIPE gets from a shell, 141 (a red team, rt9: `error: BrokenPipeError: [Errno 32]
Broken pipe` and exit 1).

The reader is a real pipe whose read end is closed before the command writes anything:
every write it makes then fails with EPIPE, whatever the timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.runtime_helpers import DEPLOY_CASSETTE, EXAMPLES, write_cassette
from twelvefold.cli import cli
from twelvefold.commands.output import EXIT_READER_GONE

DEPLOYBOT = str(EXAMPLES / "deploybot.agent")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A store holding one deploybot thread waiting for its approval."""
    folder = tmp_path_factory.mktemp("pipe")
    cassette = write_cassette(folder / "deploy.jsonl", DEPLOY_CASSETTE)
    db = folder / "threads.db"
    result = CliRunner().invoke(
        cli,
        ["run", DEPLOYBOT, "--input", "deploy v1.2.3", "--cassette", str(cassette), "--db",
         str(db), "--json"],
        env={"TWELVEFOLD_NOTIFY_LOG": "0"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return db, json.loads(result.output.splitlines()[-1])["thread_id"]


def to_a_closed_pipe(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """Run `twelvefold ARGUMENTS` with stdout a pipe nobody reads any more."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command starts
    env = {**os.environ, "TWELVEFOLD_NOTIFY_LOG": "0", "TWELVEFOLD_DB": ""}
    try:
        return subprocess.run(
            [sys.executable, "-m", "twelvefold", *arguments],
            cwd=cwd,
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            check=False,
            timeout=300,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "command",
    [
        ["show", "{thread}"],
        ["show", "{thread}", "--json"],
        ["threads"],
        ["threads", "--json"],
        ["stats", "--json"],
        ["graph", DEPLOYBOT],
        ["graph", DEPLOYBOT, "--thread", "{thread}"],
        ["--help"],
    ],
    ids=lambda c: " ".join(c).replace(DEPLOYBOT, "AGENT"),
)
def test_a_command_whose_reader_went_away_ends_quietly(
    store: tuple[Path, str], command: list[str]
) -> None:
    db, thread = store
    arguments = [word.format(thread=thread) for word in command]
    if arguments[0] not in ("--help", "graph") or "--thread" in arguments:
        arguments += ["--db", str(db)]
    done = to_a_closed_pipe(*arguments, cwd=db.parent)
    assert done.stderr.decode() == ""
    assert done.returncode == EXIT_READER_GONE == 141


def test_run_whose_reader_went_away_runs_its_thread_to_the_pause(tmp_path: Path) -> None:
    """The events `run` prints as the thread goes have no reader: the thread still runs to
    where it pauses (not left `running` mid-step, its lease held), then `run` ends quietly."""
    cassette = write_cassette(tmp_path / "deploy.jsonl", DEPLOY_CASSETTE)
    db = tmp_path / "t.db"
    done = to_a_closed_pipe(
        "run", DEPLOYBOT, "--input", "deploy v1.2.3", "--cassette", str(cassette),
        "--db", str(db), cwd=tmp_path,
    )  # fmt: skip
    assert done.stderr.decode() == ""
    assert done.returncode == EXIT_READER_GONE
    listed = CliRunner().invoke(cli, ["threads", "--json", "--db", str(db)])
    ((thread,),) = [json.loads(listed.stdout)]
    assert (thread["status"], thread["step"]) == ("waiting", "approve_deploy")
