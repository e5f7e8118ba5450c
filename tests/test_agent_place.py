"""Where a thread finds its agent (issue 9, §7): threads record their agent's place
relative to the thread store's folder, so a moved project resumes; a command can name
the agent (`--agent PATH`) when the recorded place holds it no more.

Every test drives the real CLI in a child process against a real SQLite store, in a
scratch project copied from examples/ into a temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runtime_helpers import EXAMPLES, ROOT, write_cassette
from tests.support.legacy import unpin_all
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.loading import AgentMissing
from twelvefold.runtime.store import SqliteStore

AGENT = "agents/deploybot.agent"
INPUT = "deploy v1.2.3 to production"


def make_project(folder: Path) -> Path:
    """A project as a user lays one out: the agent and its tools in agents/, prompts/,
    the approvers in twelvefold.toml, a cassette; threads go to .twelvefold/threads.db."""
    (folder / "agents").mkdir(parents=True)
    shutil.copy(EXAMPLES / "deploybot.agent", folder / AGENT)
    shutil.copytree(EXAMPLES / "deploybot", folder / "agents" / "deploybot")
    shutil.copytree(ROOT / "prompts" / "deploybot", folder / "prompts" / "deploybot")
    shutil.copy(EXAMPLES / "twelvefold.toml", folder / "twelvefold.toml")
    write_cassette(folder / "deploy.jsonl")
    return folder


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TWELVEFOLD_DB"}
    return subprocess.run(
        [sys.executable, "-m", "twelvefold", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def launched(project: Path) -> dict[str, str]:
    """Run deploybot until it waits for the approval; its --json view."""
    done = cli(project, "run", AGENT, "--input", INPUT, "--cassette", "deploy.jsonl", "--json")
    assert done.returncode == 0, done.stderr
    view: dict[str, str] = json.loads(done.stdout.splitlines()[-1])
    assert (view["status"], view["request"]) == ("waiting", "approve_deploy-5")
    return view


def unpinned(project: Path) -> None:
    """Make the project's threads name no agent version, as threads written before
    versions existed do: they load their agent from its place alone (a pinned thread gets
    its reducer back from the store wherever the file went: tests/test_versions.py)."""
    unpin_all(project / ".twelvefold" / "threads.db")


def recorded_origin(project: Path, thread: str) -> str:
    with sqlite3.connect(project / ".twelvefold" / "threads.db") as db:
        (origin,) = db.execute("SELECT origin FROM threads WHERE id = ?", (thread,)).fetchone()
    return str(origin)


def approve(project: Path, view: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return cli(
        project,
        "resume",
        view["thread_id"],
        "--approve",
        "--request",
        view["request"],
        "--by",
        "ana",
        "--cassette",
        "deploy.jsonl",
        "--json",
        *extra,
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ")
    return line


def test_a_moved_project_resumes_and_shows(tmp_path: Path) -> None:
    before = make_project(tmp_path / "before")
    view = launched(before)
    # Recorded relative to the store's folder (.twelvefold/), not as an absolute path.
    assert recorded_origin(before, view["thread_id"]) == "../agents/deploybot.agent"

    after = tmp_path / "renamed" / "after"
    after.parent.mkdir()
    before.rename(after)

    shown = cli(after, "show", view["thread_id"], "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "waiting"
    # From anywhere, naming the moved store: places do not depend on the current folder.
    elsewhere = cli(
        tmp_path, "show", view["thread_id"], "--db", str(after / ".twelvefold" / "threads.db")
    )
    assert elsewhere.returncode == 0, elsewhere.stderr

    done = approve(after, view)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["output"] == {"message": "deployed v1.2.3"}


def test_a_fork_of_a_moved_project_records_a_relative_place(tmp_path: Path) -> None:
    before = make_project(tmp_path / "before")
    view = launched(before)
    after = tmp_path / "after"
    before.rename(after)
    forked = cli(after, "fork", view["thread_id"], "--at", "5", "--json")
    assert forked.returncode == 0, forked.stderr
    fork_id = json.loads(forked.stdout)["thread_id"]
    assert recorded_origin(after, fork_id) == "../agents/deploybot.agent"


@pytest.mark.parametrize(
    "command",
    [
        ["show", "{id}"],
        ["show", "{id}", "--json"],
        ["resume", "{id}", "--approve", "--request", "approve_deploy-5", "--by", "ana"],
        ["resume", "{id}", "--retry"],
        ["fork", "{id}", "--at", "3"],
        ["cancel", "{id}", "--reason", "moved"],
    ],
)
def test_a_deleted_agent_is_one_line_naming_the_place_and_agent_flag(
    tmp_path: Path, command: list[str]
) -> None:
    project = make_project(tmp_path / "project")
    view = launched(project)
    unpinned(project)
    (project / AGENT).unlink()
    line = one_line_error(cli(project, *[a.format(id=view["thread_id"]) for a in command]))
    assert str((project / AGENT).resolve()) in line  # where it looked
    assert "recorded as ../agents/deploybot.agent" in line
    assert "--agent PATH" in line


def test_agent_flag_names_the_agent_where_it_is_now(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    view = launched(project)
    unpinned(project)
    thread = view["thread_id"]
    moved = project / "moved"
    moved.mkdir()
    (project / AGENT).rename(moved / "deploybot.agent")
    shutil.move(project / "agents" / "deploybot", moved / "deploybot")
    flag = ("--agent", "moved/deploybot.agent")

    assert cli(project, "show", thread, *flag).returncode == 0
    line = one_line_error(cli(project, "show", thread, "--agent", "gone\x1b[2J.agent"))
    assert line == "error: no agent at gone\\x1b[2J.agent (the agent named for it)"
    swept = cli(project, "expire")
    assert swept.returncode == 1 and "--agent PATH" in swept.stdout, swept.stdout
    swept = cli(project, "expire", *flag)
    assert swept.returncode == 0, swept.stdout + swept.stderr

    forked = cli(project, "fork", thread, "--at", "5", "--json", *flag)
    assert forked.returncode == 0, forked.stderr
    fork_id = json.loads(forked.stdout)["thread_id"]
    # The fork records the place it was loaded from, so it needs no --agent.
    assert recorded_origin(project, fork_id) == "../moved/deploybot.agent"
    cancelled = cli(project, "cancel", fork_id, "--reason", "a copy", "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["status"] == "cancelled"

    done = approve(project, view, *flag)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["status"] == "finished"


def test_agent_flag_naming_another_agent_is_refused(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    view = launched(project)
    shutil.copy(EXAMPLES / "calculator.agent", project / "calculator.agent")
    shutil.copytree(ROOT / "prompts" / "calculator", project / "prompts" / "calculator")
    other = ("--agent", "calculator.agent")
    line = one_line_error(cli(project, "show", view["thread_id"], *other))
    assert "runs agent `deploybot`" in line and "agent `calculator`" in line
    one_line_error(approve(project, view, *other))
    assert cli(project, "show", view["thread_id"]).returncode == 0  # nothing was recorded
    assert "approved" not in cli(project, "show", view["thread_id"]).stdout


def test_rows_with_absolute_places_keep_working(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    view = launched(project)
    unpinned(project)
    absolute = str((project / AGENT).resolve())
    with sqlite3.connect(project / ".twelvefold" / "threads.db") as db:
        db.execute("UPDATE threads SET origin = ?", (absolute,))  # as older releases wrote
    assert cli(project, "show", view["thread_id"]).returncode == 0
    moved = tmp_path / "moved"
    project.rename(moved)
    line = one_line_error(cli(moved, "show", view["thread_id"]))
    assert f"is not at {absolute};" in line and "--agent PATH" in line
    assert cli(moved, "show", view["thread_id"], "--agent", AGENT).returncode == 0


def test_the_python_api_resolves_places_and_takes_agent(tmp_path: Path) -> None:
    before = make_project(tmp_path / "before")
    view = launched(before)
    unpinned(before)
    after = tmp_path / "after"
    before.rename(after)
    store = SqliteStore(after / ".twelvefold" / "threads.db")
    try:
        with Runtime(store) as rt:
            assert rt.get(view["thread_id"]).status == "waiting"
            (after / AGENT).rename(after / "deploybot.agent")
            rt.aio._agents.clear()  # a new process: nothing loaded yet
            with pytest.raises(AgentMissing, match="pass --agent PATH"):
                rt.get(view["thread_id"])
            agent = rt.get(view["thread_id"], agent=after / "deploybot.agent")
            assert agent.request == "approve_deploy-5"
    finally:
        store.close()
