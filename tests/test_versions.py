"""Threads pinned to their agent version (issue 11): an edit or a move of the `.agent`
file never changes or breaks a thread in flight; `migrate check` / `migrate`; a tampered
stored version is refused.

A scratch project in a temporary folder: pinbot.agent (a person briefs it, the model
plans through the real openai + instructor client against the scripted server on
loopback, a person approves, a tool in the project's tools.py acts), its prompt under
prompts/, threads in a real SQLite file inside the project.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.runtime_helpers import EXAMPLES, RecordingNotifier
from tests.support.e2e import ModelTurns
from tests.support.openai_server import ScriptedOpenAI
from twelvefold.cli import cli
from twelvefold.runtime.api import Runtime, ThreadView
from twelvefold.runtime.loading import load_agent
from twelvefold.runtime.model import OpenAIModel
from twelvefold.runtime.store import SqliteStore, open_store
from twelvefold.runtime.versions import VersionTampered

PINBOT = """
agent pinbot "Takes a brief, plans, and acts once a person approves." {
  input string
  max_steps 20
  start brief
}

type Act "Do one thing." { what: string }
type Done "Say it is finished." { message: string }
type Acted { ok: bool }

human brief {
  ask "What should I do?"
  next plan
}

llm plan -> Act | Done {
  prompt "pinbot/plan.j2"
  on Act -> approve_act
  on Done -> done
}

approval approve_act(Act) {
  ask "Do {{ what }}?"
  on approved -> act
  on rejected -> plan
}

tool act(Act) -> Acted = "tools:act" {
  next plan
}

final done
"""

PLAN_V1 = "{% block system %}PLAN-V1: choose one action.{% endblock %}\n"
PLAN_V2 = "{% block system %}PLAN-V2: choose one action, carefully.{% endblock %}\n"

TOOLS = """
import os

def act(request):
    with open(os.environ["PINBOT_LEDGER"], "a") as ledger:
        ledger.write(request.what + "\\n")
    return {"ok": True}
"""

RENAMED = PINBOT.replace("approve_act", "confirm")
"""Version 2 that no thread waiting at the approval can replay under: the step is renamed."""
REWORDED = PINBOT.replace("What should I do?", "What shall I do next?")
"""Version 2 that every thread replays under: the same steps, another question."""

ACT = {"type": "Act", "what": "ship"}
DONE = {"type": "Done", "message": "shipped"}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "project"
    (folder / "prompts" / "pinbot").mkdir(parents=True)
    (folder / "pinbot.agent").write_text(PINBOT)
    (folder / "prompts" / "pinbot" / "plan.j2").write_text(PLAN_V1)
    (folder / "tools.py").write_text(TOOLS)
    monkeypatch.setenv("PINBOT_LEDGER", str(tmp_path / "ledger.txt"))
    monkeypatch.delenv("TWELVEFOLD_LOG_KEY", raising=False)
    monkeypatch.delenv("TWELVEFOLD_DB", raising=False)
    monkeypatch.delenv("TWELVEFOLD_STORE", raising=False)
    return folder


@contextmanager
def runtime(server: ScriptedOpenAI, project: Path, url: str | None = None) -> Iterator[Runtime]:
    """A new process's runtime on the project's store (nothing loaded yet), or on the
    store at `url`."""
    model = OpenAIModel(
        model="scripted-model", base_url=server.base_url, api_key="test", transport_retries=0
    )
    store = open_store(url) if url else SqliteStore(project / ".twelvefold" / "threads.db")
    cache = project / ".twelvefold" / "cache"
    with Runtime(store, model=model, notifier=RecordingNotifier(), cache_dir=cache) as rt:
        try:
            yield rt
        finally:
            store.close()


def waiting_at_approval(server: ScriptedOpenAI, project: Path) -> tuple[str, str]:
    """A thread briefed and planned, waiting for the approval: (thread id, request)."""
    ModelTurns(server).then(ACT)
    with runtime(server, project) as rt:
        view = rt.launch(project / "pinbot.agent", "go")
        view = rt.resume(view.id, answer="ship it", request=view.request)
    assert (view.status, view.step) == ("waiting", "approve_act")
    assert view.request is not None
    return view.id, view.request


def waiting_at_brief(server: ScriptedOpenAI, project: Path) -> tuple[str, str]:
    with runtime(server, project) as rt:
        view = rt.launch(project / "pinbot.agent", "go")
    assert (view.status, view.step) == ("waiting", "brief") and view.request is not None
    return view.id, view.request


def run_cli(project: Path, *args: str, monkeypatch: pytest.MonkeyPatch) -> Result:
    monkeypatch.chdir(project)
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def ledger(project: Path) -> list[str]:
    """What the project's tool did (the ledger its tools.py writes to)."""
    path = Path(os.environ["PINBOT_LEDGER"])
    return path.read_text().splitlines() if path.exists() else []


def system_prompt(server: ScriptedOpenAI, n: int = -1) -> str:
    messages = server.requests[n]["messages"]
    return str(next(m["content"] for m in messages if m["role"] == "system"))


# ---- a thread in flight keeps its version --------------------------------------------------


def test_a_thread_paused_on_version_1_resumes_on_it_after_version_2_is_compiled(
    openai_server: ScriptedOpenAI, project: Path
) -> None:
    thread, request = waiting_at_approval(openai_server, project)
    assert "PLAN-V1" in system_prompt(openai_server)
    # Version 2: the approval renamed and the prompt reworded; a thread runs on it.
    (project / "pinbot.agent").write_text(RENAMED)
    (project / "prompts" / "pinbot" / "plan.j2").write_text(PLAN_V2)
    ModelTurns(openai_server).then(ACT)
    with runtime(openai_server, project) as rt:
        newer = rt.launch(project / "pinbot.agent", "go")
        newer = rt.resume(newer.id, answer="ship it", request=newer.request)
    assert newer.step == "confirm" and "PLAN-V2" in system_prompt(openai_server)

    # The old thread: today this was `illegal 'notified' event`; it runs on version 1,
    # its prompt included.
    ModelTurns(openai_server).then(DONE)
    with runtime(openai_server, project) as rt:
        view = rt.resume(thread, approve=True, request=request)
        assert view.status == "finished" and view.to_json()["output"] == {"message": "shipped"}
        steps = [event.step for event in rt.events(thread)]
    assert "approve_act" in steps and "confirm" not in steps
    assert "PLAN-V1" in system_prompt(openai_server)
    assert ledger(project) == ["ship"]


def test_show_reads_a_thread_after_an_edit_and_says_its_version(
    openai_server: ScriptedOpenAI, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread, _ = waiting_at_approval(openai_server, project)
    (project / "pinbot.agent").write_text(RENAMED)
    shown = run_cli(project, "show", thread, "--json", monkeypatch=monkeypatch)
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    assert (data["status"], data["step"]) == ("waiting", "approve_act")
    assert [event["kind"] for event in data["log"]][-1] == "notified"
    with sqlite3.connect(project / ".twelvefold" / "threads.db") as db:
        (pinned,) = db.execute("SELECT version FROM threads WHERE id = ?", (thread,)).fetchone()
    assert data["version"] == pinned and data["version_history"] == []
    # An edit that no longer compiles changes nothing either.
    (project / "pinbot.agent").write_text("agent pinbot {")
    assert run_cli(project, "show", thread, monkeypatch=monkeypatch).exit_code == 0


def test_a_moved_project_and_a_moved_agent_file_still_resume(
    openai_server: ScriptedOpenAI, project: Path, tmp_path: Path
) -> None:
    first, first_request = waiting_at_approval(openai_server, project)
    second, second_request = waiting_at_approval(openai_server, project)
    moved = tmp_path / "elsewhere" / "project"
    moved.parent.mkdir()
    shutil.move(project, moved)
    ModelTurns(openai_server).then(DONE, DONE)
    with runtime(openai_server, moved) as rt:
        assert rt.resume(first, approve=True, request=first_request).status == "finished"
    # The .agent file itself moved away (its tools stay in the folder it was in): the
    # thread's reducer comes back from the store.
    (moved / "pinbot.agent").rename(tmp_path / "pinbot.agent")
    with runtime(openai_server, moved) as rt:
        assert rt.resume(second, approve=True, request=second_request).status == "finished"
    assert ledger(moved) == ["ship", "ship"]


def test_a_tampered_stored_version_is_refused_with_a_clear_error(
    openai_server: ScriptedOpenAI, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread, request = waiting_at_approval(openai_server, project)
    (project / "pinbot.agent").write_text(REWORDED)  # the stored version must be used
    with sqlite3.connect(project / ".twelvefold" / "threads.db") as db:
        (body,) = db.execute("SELECT body FROM agent_versions").fetchone()
        forged = body.replace("Do {{ what }}?", "Do {{ what }} (already approved)?")
        assert forged != body
        db.execute("UPDATE agent_versions SET body = ?", (forged,))
    with runtime(openai_server, project) as rt, pytest.raises(VersionTampered, match="verify"):
        rt.resume(thread, approve=True, request=request)
    result = run_cli(project, "show", thread, monkeypatch=monkeypatch)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.count("\n") == 1 and "does not verify" in result.output
    assert ledger(project) == []


TYPES = """
type Act "Do one thing." { what: string }
type Done "Say it is finished." { message: string }
type Acted { ok: bool }
"""


def test_the_files_an_agent_imports_are_part_of_its_version(
    openai_server: ScriptedOpenAI, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An `import`ed file's types are compiled into the agent: an edit there while a thread
    waits must not reach the thread (the tool would get another type), wherever the
    command runs from (imports are found beside the stored agent, not in the cwd)."""
    declared = "\n".join(line for line in PINBOT.splitlines() if not line.startswith("type "))
    (project / "pinbot.agent").write_text('import "types.agent"\n' + declared)
    (project / "types.agent").write_text(TYPES)
    thread, request = waiting_at_approval(openai_server, project)
    edited = project / "types.agent"
    approved_after_an_edit_of(edited, openai_server, project, (thread, request), monkeypatch)


def test_a_file_an_imported_file_imports_is_part_of_the_version_too(
    openai_server: ScriptedOpenAI, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Imports nest (each path relative to the file that names it): an edit two imports
    down while a thread waits must not reach the thread either."""
    declared = "\n".join(line for line in PINBOT.splitlines() if not line.startswith("type "))
    (project / "pinbot.agent").write_text('import "shared/all.agent"\n' + declared)
    (project / "shared").mkdir()
    (project / "shared" / "all.agent").write_text('import "acts/types.agent"\n')
    (project / "shared" / "acts").mkdir()
    (project / "shared" / "acts" / "types.agent").write_text(TYPES)
    thread, request = waiting_at_approval(openai_server, project)
    store = SqliteStore(project / ".twelvefold" / "threads.db")
    digest = store.info(thread).version
    body = store.load_version(digest) if digest is not None else None
    store.close()
    assert body is not None
    assert sorted(json.loads(body)["files"]) == [
        "pinbot.agent", "prompts/pinbot/plan.j2", "shared/acts/types.agent", "shared/all.agent"
    ]  # fmt: skip
    edited = project / "shared" / "acts" / "types.agent"
    approved_after_an_edit_of(edited, openai_server, project, (thread, request), monkeypatch)


def approved_after_an_edit_of(
    types_file: Path,
    openai_server: ScriptedOpenAI,
    project: Path,
    waiting: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Change `what` to an int in `types_file` while the thread waits, then approve it
    from another folder: the thread still runs the version it started with."""
    types_file.write_text(TYPES.replace("what: string", "what: int"))
    monkeypatch.chdir(project.parent)
    ModelTurns(openai_server).then(DONE)
    thread, request = waiting
    with runtime(openai_server, project) as rt:
        view = rt.resume(thread, approve=True, request=request)
    assert view.status == "finished", view.to_json()
    assert ledger(project) == ["ship"]


# ---- migrate check / migrate ---------------------------------------------------------------


def test_migrate_check_reports_which_threads_version_2_can_replay(
    openai_server: ScriptedOpenAI, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck, _ = waiting_at_approval(openai_server, project)
    movable, _ = waiting_at_brief(openai_server, project)
    (project / "pinbot.agent").write_text(RENAMED)
    before = (project / ".twelvefold" / "threads.db").read_bytes()

    result = run_cli(project, "migrate", "check", "pinbot.agent", "--json", monkeypatch=monkeypatch)
    assert result.exit_code == 1, result.output  # one thread cannot move
    report = {t["thread_id"]: t for t in json.loads(result.output)["threads"]}
    assert report[movable]["can_move"] is True and report[movable]["reason"] is None
    assert report[stuck]["can_move"] is False
    # Event 4, the model's Act, now leads to `confirm`; event 5 told people about
    # `approve_act`: the "illegal `notified` event".
    assert report[stuck]["event"] == 5
    assert "refuses event 5: illegal `notified` event" in report[stuck]["reason"]
    assert (project / ".twelvefold" / "threads.db").read_bytes() == before  # nothing moved

    text = run_cli(project, "migrate", "check", "pinbot.agent", monkeypatch=monkeypatch)
    assert f"{movable}  waiting  brief" in text.output and "can move" in text.output


def test_migrate_moves_only_the_movable_and_the_log_shows_it(
    openai_server: ScriptedOpenAI, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck, stuck_request = waiting_at_approval(openai_server, project)
    movable, movable_request = waiting_at_brief(openai_server, project)
    (project / "pinbot.agent").write_text(RENAMED)
    result = run_cli(
        project, "migrate", "pinbot.agent", "--by", "ops", "--json", monkeypatch=monkeypatch
    )
    assert result.exit_code == 1, result.output
    report = {t["thread_id"]: t for t in json.loads(result.output)["threads"]}
    assert report[movable]["moved"] is True and report[stuck]["moved"] is False

    shown = json.loads(run_cli(project, "show", movable, "--json", monkeypatch=monkeypatch).output)
    (pin,) = shown["version_history"]
    assert (pin["by"], pin["seq"], pin["to_version"]) == ("ops", 2, report[movable]["to_version"])
    assert pin["from_version"] == report[movable]["from_version"] != pin["to_version"]
    text = run_cli(project, "show", movable, monkeypatch=monkeypatch).output
    assert "migrated from agent version" in text and "by ops" in text

    # The moved thread runs on version 2 (its approval is `confirm`); the other on 1.
    ModelTurns(openai_server).then(ACT, DONE)
    with runtime(openai_server, project) as rt:
        view = rt.resume(movable, answer="ship it", request=movable_request)
        assert view.step == "confirm"
        assert rt.resume(stuck, approve=True, request=stuck_request).status == "finished"

    # Run again: nothing left that can move; the one on version 2 says so.
    again = run_cli(project, "migrate", "check", "pinbot.agent", "--json", monkeypatch=monkeypatch)
    (left,) = json.loads(again.output)["threads"]
    assert left["thread_id"] == movable and left["reason"] == "it already runs this version"


def test_migrate_refuses_a_thread_a_process_is_advancing(
    openai_server: ScriptedOpenAI, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    movable, _ = waiting_at_brief(openai_server, project)
    (project / "pinbot.agent").write_text(REWORDED)
    store = SqliteStore(project / ".twelvefold" / "threads.db")
    lease = store.acquire(movable, "other-host:1:abc", 60)
    try:
        result = run_cli(project, "migrate", "pinbot.agent", "--json", monkeypatch=monkeypatch)
        (verdict,) = json.loads(result.output)["threads"]
        assert verdict["moved"] is False and "other-host:1:abc" in verdict["reason"]
        assert store.pins(movable) == []
    finally:
        store.release(lease)
    result = run_cli(project, "migrate", "pinbot.agent", "--json", monkeypatch=monkeypatch)
    assert result.exit_code == 0 and json.loads(result.output)["threads"][0]["moved"] is True
    store.close()


# ---- retention -----------------------------------------------------------------------------


def ended_threads(server: ScriptedOpenAI, project: Path) -> dict[str, str]:
    """One thread finished, one cancelled, one still waiting: status by id."""
    ModelTurns(server).then(DONE)
    with runtime(server, project) as rt:
        done = rt.launch(project / "pinbot.agent", "go")
        done = rt.resume(done.id, answer="nothing", request=done.request)
        cancelled = rt.launch(project / "pinbot.agent", "go")
        cancelled = rt.cancel(cancelled.id, reason="not needed")
        waiting = rt.launch(project / "pinbot.agent", "go")
    return {done.id: done.status, cancelled.id: cancelled.status, waiting.id: waiting.status}


def stored_ids(project: Path) -> set[str]:
    with sqlite3.connect(project / ".twelvefold" / "threads.db") as db:
        return {row[0] for row in db.execute("SELECT id FROM threads")}


def stored_versions(project: Path) -> int:
    with sqlite3.connect(project / ".twelvefold" / "threads.db") as db:
        return int(db.execute("SELECT count(*) FROM agent_versions").fetchone()[0])


def test_prune_dry_run_changes_nothing(
    openai_server: ScriptedOpenAI, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    statuses = ended_threads(openai_server, project)
    before = (project / ".twelvefold" / "threads.db").read_bytes()
    result = run_cli(
        project, "prune", "--older-than", "0s", "--archive", "a.jsonl", "--dry-run", "--json",
        monkeypatch=monkeypatch,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report["threads"]) == {t for t, s in statuses.items() if s != "waiting"}
    assert (project / ".twelvefold" / "threads.db").read_bytes() == before
    assert not (project / "a.jsonl").exists()


def test_prune_archives_then_deletes_ended_threads_only(
    openai_server: ScriptedOpenAI, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    statuses = ended_threads(openai_server, project)
    waiting = next(t for t, s in statuses.items() if s == "waiting")
    # Nothing is older than a day: nothing goes.
    young = run_cli(project, "prune", "--older-than", "1d", "--delete", monkeypatch=monkeypatch)
    assert young.exit_code == 0 and stored_ids(project) == set(statuses)
    # An age reaching back before the year 1 (once an OverflowError): nothing is that old.
    for age in ("800000d", "999999w"):
        ancient = run_cli(
            project, "prune", "--older-than", age, "--delete", monkeypatch=monkeypatch
        )
        assert ancient.exit_code == 0, ancient.output
        assert stored_ids(project) == set(statuses)

    (project / "twelvefold.toml").write_text(
        '[retention]\nfinished_after = "0s"\narchive = "archive/threads.jsonl"\n'
    )
    result = run_cli(project, "prune", "--json", monkeypatch=monkeypatch)
    assert result.exit_code == 0, result.output
    assert stored_ids(project) == {waiting}  # an unfinished thread is never pruned
    lines = [
        json.loads(line) for line in (project / "archive/threads.jsonl").read_text().splitlines()
    ]
    assert {line["thread_id"]: line["status"] for line in lines} == {
        t: s for t, s in statuses.items() if s != "waiting"
    }
    for line in lines:
        assert line["events"][0]["kind"] == "started" and line["version_sources"]["main"]
    assert (project / "archive/threads.jsonl").stat().st_mode & 0o077 == 0
    assert stored_versions(project) == 1  # the waiting thread's version stays

    # Once the waiting thread ends and is pruned, its version goes too.
    with runtime(openai_server, project) as rt:
        rt.cancel(waiting, reason="done with it")
    run_cli(project, "prune", monkeypatch=monkeypatch)
    assert stored_ids(project) == set() and stored_versions(project) == 0


def test_prune_trusts_the_log_not_the_status_column(
    openai_server: ScriptedOpenAI, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`threads.status` is not sealed: a waiting thread whose column was set to `failed`
    by hand is archived maybe, but never deleted (its log does not end there)."""
    statuses = ended_threads(openai_server, project)
    waiting = next(t for t, s in statuses.items() if s == "waiting")
    with sqlite3.connect(project / ".twelvefold" / "threads.db") as db:
        db.execute("UPDATE threads SET status = 'failed' WHERE id = ?", (waiting,))
    result = run_cli(project, "prune", "--older-than", "0s", "--delete", "--json",
                     monkeypatch=monkeypatch)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["kept"] == [waiting] and waiting not in report["threads"]
    assert stored_ids(project) == {waiting}


def reply_targets(place: Any) -> dict[str, list[str]]:
    """Where each thread's replies go, as the server's table holds them (thread -> URLs)."""
    from twelvefold.server.replies import ReplyTargets

    targets = ReplyTargets(place)
    try:
        found: dict[str, list[str]] = {}
        for target in targets.all():
            found.setdefault(target.thread_id, []).append(target.address)
        return found
    finally:
        targets.close()


def test_prune_delete_drops_the_reply_targets_of_the_threads_it_deletes(
    openai_server: ScriptedOpenAI, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: a pruned thread's `server_replies` rows stayed behind (dropped,
    with a warning, only at the next `serve` start on SQLite; forever on PostgreSQL).
    They go with the thread, in the transaction that deletes it."""
    from twelvefold.server.replies import ReplyTargets

    statuses = ended_threads(openai_server, project)
    waiting = next(t for t, s in statuses.items() if s == "waiting")
    place = project / ".twelvefold" / "threads.db"
    targets = ReplyTargets(place)
    for thread_id in statuses:
        targets.add(thread_id, "webhook", f"https://hooks.example/{thread_id}")
    targets.close()
    result = run_cli(project, "prune", "--older-than", "0s", "--delete", monkeypatch=monkeypatch)
    assert result.exit_code == 0, result.output
    assert stored_ids(project) == {waiting}
    assert reply_targets(place) == {waiting: [f"https://hooks.example/{waiting}"]}


class CheckingStore(SqliteStore):
    """Fails the test if a thread is deleted before its archive line is on disk."""

    archive: Path

    def delete(self, thread_id: str, expected_seq: int, statuses: Any) -> bool:
        written = self.archive.read_text() if self.archive.exists() else ""
        assert f'"thread_id":"{thread_id}"' in written, "deleted before it was archived"
        return super().delete(thread_id, expected_seq, statuses)


def test_prune_writes_the_archive_before_it_deletes(
    openai_server: ScriptedOpenAI, project: Path
) -> None:
    from datetime import timedelta

    from twelvefold.runtime.retention import prune

    ended_threads(openai_server, project)
    store = CheckingStore(project / ".twelvefold" / "threads.db")
    store.archive = project / "archive.jsonl"
    done = prune(store, older_than=timedelta(0), archive=store.archive)
    assert len(done.threads) == 2 and len(store.threads()) == 1
    store.close()


def test_prune_refuses_to_delete_without_an_archive_unless_told(
    openai_server: ScriptedOpenAI, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ended_threads(openai_server, project)
    for args, says in [
        (["prune", "--older-than", "0s"], "--archive FILE"),
        (["prune", "--archive", "a.jsonl"], "--older-than 30d"),
        (["prune", "--older-than", "30 days\x1b[2J", "--delete"], "not an age"),
    ]:
        result = run_cli(project, *args, monkeypatch=monkeypatch)
        assert result.exit_code == 1 and says in result.output, result.output
        assert "\x1b" not in result.output
    assert len(stored_ids(project)) == 3


def test_prune_says_plainly_when_the_archive_cannot_be_written_and_deletes_nothing(
    openai_server: ScriptedOpenAI, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ended_threads(openai_server, project)
    (project / "a-file").write_text("")
    (project / "a-folder").mkdir()
    for archive in ["a-file/threads.jsonl", "/dev/full", "a-folder"]:
        result = run_cli(
            project, "prune", "--older-than", "0s", "--archive", archive, monkeypatch=monkeypatch
        )
        assert result.exit_code == 1, result.output
        assert result.output.startswith("error: cannot write the archive"), result.output
        assert "nothing was deleted" in result.output and "Errno" not in result.output
    assert len(stored_ids(project)) == 3
    # A dry run needs no archive: it writes nothing.
    result = run_cli(project, "prune", "--older-than", "0s", "--dry-run", monkeypatch=monkeypatch)
    assert result.exit_code == 0 and result.output.startswith("would prune"), result.output


def test_prune_refuses_an_archive_that_is_a_link_or_that_others_can_read(
    openai_server: ScriptedOpenAI, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive holds secret fields: a symbolic link planted where it goes is not
    followed (its target stays as it was), and an existing archive others may read is
    refused rather than appended to; either way, one line and nothing deleted."""
    ended_threads(openai_server, project)
    victim = project / "victim.txt"
    victim.write_text("keep me\n")
    victim.chmod(0o644)
    (project / "alink").symlink_to(victim)
    result = run_cli(
        project, "prune", "--older-than", "0s", "--archive", "alink", monkeypatch=monkeypatch
    )
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: the archive alink is a symbolic link"), result.output
    assert len(result.output.splitlines()) == 1 and "nothing was deleted" in result.output
    assert victim.read_text() == "keep me\n"

    shared = project / "shared.jsonl"
    shared.write_text("")
    shared.chmod(0o666)
    result = run_cli(
        project, "prune", "--older-than", "0s", "--archive", "shared.jsonl",
        monkeypatch=monkeypatch,
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "can be used by others (mode 0666)" in result.output, result.output
    assert "chmod 600" in result.output and len(result.output.splitlines()) == 1
    assert shared.read_text() == "" and len(stored_ids(project)) == 3

    shared.chmod(0o600)  # once only its owner may read it, it is appended to
    result = run_cli(
        project, "prune", "--older-than", "0s", "--archive", "shared.jsonl",
        monkeypatch=monkeypatch,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(shared.read_text().splitlines()) == 2 and len(stored_ids(project)) == 1


# ---- the same on PostgreSQL ------------------------------------------------------------------


@pytest.mark.postgres
def test_migrate_and_prune_on_postgresql(
    openai_server: ScriptedOpenAI,
    project: Path,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ModelTurns(openai_server).then(ACT, DONE)
    with runtime(openai_server, project, postgres_url) as rt:
        stuck = rt.launch(project / "pinbot.agent", "go")
        stuck = rt.resume(stuck.id, answer="ship it", request=stuck.request)
        movable = rt.launch(project / "pinbot.agent", "go")
        ended = rt.launch(project / "pinbot.agent", "go")
        rt.cancel(ended.id, reason="not needed")
        (project / "pinbot.agent").write_text(RENAMED)
        rt.aio._agents.clear()  # as a new process would
        assert rt.get(stuck.id).step == "approve_act"  # pinned on PostgreSQL too

    store_flag = ("--store", postgres_url)
    checked = run_cli(project, "migrate", "check", "pinbot.agent", "--json", *store_flag,
                      monkeypatch=monkeypatch)  # fmt: skip
    report = {t["thread_id"]: t for t in json.loads(checked.output)["threads"]}
    assert (report[movable.id]["can_move"], report[stuck.id]["can_move"]) == (True, False)
    moved = run_cli(project, "migrate", "pinbot.agent", "--json", *store_flag,
                    monkeypatch=monkeypatch)  # fmt: skip
    report = {t["thread_id"]: t for t in json.loads(moved.output)["threads"]}
    assert (report[movable.id]["moved"], report[stuck.id]["moved"]) == (True, False)
    store = open_store(postgres_url)
    assert [pin.to_version for pin in store.pins(movable.id)] == [report[movable.id]["to_version"]]

    import psycopg

    from twelvefold.server.replies import ReplyTargets

    targets = ReplyTargets(postgres_url)
    for thread_id in (stuck.id, ended.id):
        targets.add(thread_id, "webhook", f"https://hooks.example/{thread_id}")
    targets.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # not sealed: not trusted
        conn.execute("UPDATE threads SET status = 'failed' WHERE id = %s", (stuck.id,))
    pruned = run_cli(project, "prune", "--older-than", "0s", "--archive", "a.jsonl", "--json",
                     *store_flag, monkeypatch=monkeypatch)  # fmt: skip
    assert pruned.exit_code == 0, pruned.output
    assert json.loads(pruned.output)["threads"] == [ended.id]
    assert json.loads(pruned.output)["kept"] == [stuck.id]
    assert {info.id for info in store.threads()} == {stuck.id, movable.id}
    # The pruned thread's reply targets went with it; the kept one's stay.
    assert reply_targets(postgres_url) == {stuck.id: [f"https://hooks.example/{stuck.id}"]}
    store.close()


def test_a_newer_compiler_regenerates_a_pinned_version_and_must_replay_its_log(
    openai_server: ScriptedOpenAI, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compiler that now reads the pinned sources differently (here: as if it named the
    approval step otherwise) regenerates a reducer the thread's log does not replay under:
    the thread is refused, nothing recorded, rather than run on a state nobody had."""
    import twelvefold.compiler
    from twelvefold.runtime import loading
    from twelvefold.runtime.loop import AgentChanged

    thread, request = waiting_at_approval(openai_server, project)
    (project / "pinbot.agent").write_text(REWORDED)  # the pinned version must be rebuilt
    real = twelvefold.compiler.compile_text
    monkeypatch.setattr(
        twelvefold.compiler,
        "compile_text",
        lambda text, *a, **k: real(text.replace("approve_act", "confirm"), *a, **k),
    )
    # Every name a module is cached or imported under carries the compiler's fingerprint:
    # the renamed reducer must not be served to a later test loading the same sources.
    monkeypatch.setattr(loading, "compiler_fingerprint", lambda: "a-newer-compiler")
    with runtime(openai_server, project) as rt:
        events = len(rt.store.load(thread, rt.agent(project / "pinbot.agent").codec))
        with pytest.raises(AgentChanged, match="illegal `notified` event"):
            rt.resume(thread, approve=True, request=request)
        assert len(rt.store.load(thread, rt.agent(project / "pinbot.agent").codec)) == events
    assert ledger(project) == []


# ---- a version holds the whole tree of agents (sub-agents, their imports) -----------------

RETURN = {"order_id": "o-1", "email": "ana@example.com", "amount_cents": 1250}


@pytest.fixture
def returns(project: Path) -> Path:
    """examples/returns copied into the scratch project: returns.agent calls the refunds
    sub-agent (returns/refunds.agent, which imports returns/common.agent)."""
    shutil.copy(EXAMPLES / "returns.agent", project / "returns.agent")
    shutil.copytree(EXAMPLES / "returns", project / "returns")
    return project / "returns.agent"


def test_a_thread_whose_agent_calls_a_sub_agent_resumes_after_an_edit(
    openai_server: ScriptedOpenAI, project: Path, returns: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with runtime(openai_server, project) as rt:
        parent = rt.launch(returns, RETURN)
    assert (parent.status, parent.step, parent.child) == ("waiting", "refund", parent.child)
    assert parent.child is not None
    returns.write_text(returns.read_text() + "\n# an edit: a new version\n")
    refunds = project / "returns" / "refunds.agent"
    refunds.write_text(refunds.read_text().replace("check", "confirm"))  # the child's too
    with runtime(openai_server, project) as rt:
        child = rt.resume(parent.child, approve=True, request="check-1", by="bob")
        assert child.status == "finished", child.to_json()
        parent = rt.get(parent.id)
        assert (parent.status, parent.step) == ("waiting", "await_parcel"), parent.to_json()
        ended = rt.send(parent.id, "ParcelReceived", {"order_id": "o-1", "condition": "good"})
        assert ended.status == "finished", ended.to_json()
    result = run_cli(project, "show", parent.id, monkeypatch=monkeypatch)
    assert result.exit_code == 0 and "finished" in result.output, result.output


def test_migrate_check_keeps_a_parent_whose_childs_result_would_no_longer_fit(
    openai_server: ScriptedOpenAI,
    project: Path,
    returns: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A parent waiting on its sub-agent cannot move to a version that expects another
    shape of the child's result: the child stays on its own version and returns the old
    shape, which the moved parent would refuse after the child had paid the refund."""
    with runtime(openai_server, project) as rt:
        parent = rt.launch(returns, RETURN)
    assert (parent.status, parent.step) == ("waiting", "refund")
    common = project / "returns" / "common.agent"
    common.write_text(
        common.read_text().replace("  refunded: bool\n", "  refunded: bool\n  extra: string\n")
    )
    result = run_cli(
        project, "migrate", "check", "returns.agent", "--json", monkeypatch=monkeypatch
    )
    report = {t["thread_id"]: t for t in json.loads(result.output)["threads"]}
    assert report[parent.id]["can_move"] is False, report
    assert "sub-agent's RefundOutcome" in report[parent.id]["reason"]


def test_migrate_check_refuses_a_tree_whose_sub_agent_is_gone(
    openai_server: ScriptedOpenAI,
    project: Path,
    returns: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The parent's compiled module was cached while its sub-agent's file was there; with
    the file gone the parent no longer compiles (E130), so nothing may move onto it."""
    with runtime(openai_server, project) as rt:
        parent = rt.launch(returns, RETURN)
    (project / "returns" / "refunds.agent").unlink()
    result = run_cli(project, "migrate", "check", "returns.agent", monkeypatch=monkeypatch)
    assert result.exit_code == 1, result.output
    assert "E130" in result.output and "can move" not in result.output, result.output
    assert parent.id not in result.output


def test_a_pinned_parent_starts_the_child_its_version_holds(
    openai_server: ScriptedOpenAI, project: Path, returns: Path
) -> None:
    # waiting for the support lead before the refund: the child has not started yet
    enterprise = {**RETURN, "email": "ana@enterprise.example"}
    with runtime(openai_server, project) as rt:
        parent = rt.launch(returns, enterprise)
    assert (parent.status, parent.step) == ("waiting", "approve_refund")
    assert parent.request is not None
    refunds = project / "returns" / "refunds.agent"
    refunds.write_text(refunds.read_text().replace("check", "confirm"))
    (project / "returns" / "common.agent").write_text("type Broken { x: nope }\n")
    with runtime(openai_server, project) as rt:
        parent = rt.resume(parent.id, approve=True, request=parent.request, by="carol")
        assert (parent.status, parent.step) == ("waiting", "refund"), parent.to_json()
        assert parent.child is not None
        child = rt.get(parent.child)
        assert (child.status, child.step) == ("waiting", "check"), child.to_json()
        child = rt.resume(parent.child, approve=True, request=child.request, by="bob")
        assert child.status == "finished", child.to_json()  # its tools: the project's
        assert rt.get(parent.id).step == "await_parcel"


def test_an_import_named_with_dot_dot_is_part_of_the_version(
    openai_server: ScriptedOpenAI, project: Path, tmp_path: Path
) -> None:
    declared = "\n".join(line for line in PINBOT.splitlines() if not line.startswith("type "))
    (project / "pinbot.agent").write_text('import "../shared/types.agent"\n' + declared)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "types.agent").write_text(TYPES)
    thread, request = waiting_at_approval(openai_server, project)
    with runtime(openai_server, project) as rt:
        assert rt.aio.store.info(thread).version is not None, "it runs pinned"
    (tmp_path / "shared" / "types.agent").write_text(TYPES.replace("what: string", "what: int"))
    ModelTurns(openai_server).then(DONE)
    with runtime(openai_server, project) as rt:
        view = rt.resume(thread, approve=True, request=request)
    assert view.status == "finished", view.to_json()
    assert ledger(project) == ["ship"]


# ---- a version keeps the prompts folder its compilation read --------------------------------


def approved_after_an_edit_of_its_template(
    server: ScriptedOpenAI, project: Path, template: Path, waiting: ThreadView
) -> None:
    """`template` changed to PLAN-V2; the thread waiting at an approval is approved, and
    its next model call still reads PLAN-V1, the template its version holds."""
    template.write_text(PLAN_V2)
    ModelTurns(server).then(DONE)
    with runtime(server, project) as rt:
        ended = rt.resume(waiting.id, approve=True, request=waiting.request)
    assert ended.status == "finished", ended.to_json()
    assert "PLAN-V1" in system_prompt(server), system_prompt(server)


@pytest.mark.parametrize("named", ["absolute", "relative"])
def test_a_pinned_version_with_its_prompts_in_a_folder_of_another_name_keeps_them(
    openai_server: ScriptedOpenAI, project: Path, named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prompts given with `--prompts templates` (not a folder named `prompts/`; named
    from the current folder or not): a thread paused on version 1 runs on version 1's
    templates after they are edited, and the project's live `prompts/` folder (another
    agent's, or an older layout) is never read."""
    shutil.move(project / "prompts", project / "templates")
    (project / "prompts" / "pinbot").mkdir(parents=True)  # a live decoy, never version 1's
    (project / "prompts" / "pinbot" / "plan.j2").write_text(PLAN_V2.replace("V2", "DECOY"))
    monkeypatch.chdir(project)
    folder = Path("templates") if named == "relative" else project / "templates"
    agent = load_agent(project / "pinbot.agent", prompts_dir=folder)
    ModelTurns(openai_server).then(ACT)
    with runtime(openai_server, project) as rt:
        view = rt.launch(agent, "go")
        view = rt.resume(view.id, answer="ship it", request=view.request)
        assert rt.aio.store.info(view.id).version is not None, "it runs pinned"
    assert (view.status, view.step) == ("waiting", "approve_act") and view.request
    assert "PLAN-V1" in system_prompt(openai_server)
    approved_after_an_edit_of_its_template(
        openai_server, project, project / "templates" / "pinbot" / "plan.j2", view
    )


def kid_of(pinbot: str) -> str:
    """PINBOT as a sub-agent `kids/helper.agent`: no brief, its types imported, its
    template `helper/plan.j2`, finishing with its `Done`."""
    declared = "\n".join(line for line in pinbot.splitlines() if not line.startswith("type "))
    brief = declared[declared.index("human brief") : declared.index("llm plan")]
    return 'import "types.agent"\n' + (
        declared.replace(brief, "")
        .replace("agent pinbot", "agent helper")
        .replace("start brief", "start plan")
        .replace("pinbot/plan.j2", "helper/plan.j2")
        .replace("final done", "final done(Done)")
    )


BOSS = """
import "kids/types.agent"

agent boss "Asks what to do, then has the helper do it." {
  input string
  max_steps 20
  start go_ahead
}

approval go_ahead(string) {
  ask "Start the helper?"
  on approved -> help
  on rejected -> failed
}

agent help(string) -> Done = "kids/helper.agent" {
  next done
  on error -> failed
}

final done(Done)
final failed
"""


def test_a_pinned_parent_starts_its_child_with_the_prompts_its_version_holds(
    openai_server: ScriptedOpenAI,
    project: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The child's templates come from the folder the run started in (no `prompts/` above
    the child: LANGUAGE.md's last resort). The parent is pinned before the child starts;
    the child, started after its template was edited, reads the template as it was."""
    shutil.rmtree(project / "prompts")
    (project / "kids").mkdir()
    (project / "kids" / "types.agent").write_text(TYPES)
    (project / "kids" / "helper.agent").write_text(kid_of(PINBOT))
    (project / "kids" / "tools.py").write_text(TOOLS)
    (project / "boss.agent").write_text(BOSS)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "prompts" / "helper").mkdir(parents=True)
    (elsewhere / "prompts" / "helper" / "plan.j2").write_text(PLAN_V1)
    monkeypatch.chdir(elsewhere)
    with runtime(openai_server, project) as rt:
        boss = rt.launch(project / "boss.agent", "go")
    assert (boss.status, boss.step) == ("waiting", "go_ahead") and boss.request
    approved_after_an_edit_of_its_template(
        openai_server, project, elsewhere / "prompts" / "helper" / "plan.j2", boss
    )


def test_a_version_stored_before_prompt_folders_were_recorded_still_loads(
    tmp_path: Path,
) -> None:
    """Its digest is the one the thread row names (the same formula without folders), and
    its templates are found in the nearest `prompts/` inside the stored copy only."""
    from twelvefold.runtime.loading import load_version
    from twelvefold.runtime.versions import AgentVersion

    files = {"pinbot.agent": PINBOT, "prompts/pinbot/plan.j2": PLAN_V1}
    older = AgentVersion("pinbot.agent", files, "0.1.0")
    stored = AgentVersion.from_stored(older.digest, older.to_json())
    assert stored.prompt_dirs == {} and "prompt_dirs" not in older.to_json()
    # computed by the build before prompt folders were recorded (main at 3b1f7fe)
    assert older.digest == "a7697f354ec4a3756c423b8c3575798a1e2507d29c4b3261255e3ab005df859a"
    agent = load_version(stored, origin="pinbot.agent", directory=None, cache_dir=tmp_path)
    assert agent.prompts_dir == (tmp_path / "versions" / older.digest[:32] / "prompts")


def test_a_stored_prompt_folder_is_part_of_what_the_digest_verifies() -> None:
    from twelvefold.runtime.versions import AgentVersion

    files = {"pinbot.agent": PINBOT, "templates/pinbot/plan.j2": PLAN_V1}
    version = AgentVersion("pinbot.agent", files, "", {"pinbot.agent": "templates"})
    body = json.loads(version.to_json())
    assert AgentVersion.from_stored(version.digest, version.to_json()) == version
    for bad in ("other", "../templates", "/etc", "a/../b", ""):
        body["prompt_dirs"] = {"pinbot.agent": bad}
        with pytest.raises(VersionTampered):
            AgentVersion.from_stored(version.digest, json.dumps(body))
    body["prompt_dirs"] = {"gone.agent": "templates"}
    with pytest.raises(VersionTampered):
        AgentVersion.from_stored(version.digest, json.dumps(body))


def test_a_template_whose_name_holds_a_line_break_is_part_of_the_version(
    openai_server: ScriptedOpenAI, project: Path
) -> None:
    """The names a compilation read are kept beside the cached module; one per line split
    such a name in two, and the thread resumed on the template as edited."""
    included = project / "prompts" / "pinbot" / "inc\nx.j2"
    included.write_text("INCLUDED-V1")
    plan = project / "prompts" / "pinbot" / "plan.j2"
    plan.write_text(
        PLAN_V1.replace("{% endblock %}", '{% include "pinbot/inc\\nx.j2" %}{% endblock %}')
    )
    thread, request = waiting_at_approval(openai_server, project)
    assert "INCLUDED-V1" in system_prompt(openai_server)
    included.write_text("INCLUDED-V2")
    ModelTurns(openai_server).then(DONE)
    with runtime(openai_server, project) as rt:
        view = rt.resume(thread, approve=True, request=request)
    assert view.status == "finished", view.to_json()
    assert "INCLUDED-V1" in system_prompt(openai_server), system_prompt(openai_server)


# ---- a written-out copy of a version is the stored version, not what is found on disk --------


def planted(project: Path, thread: str, changes: dict[str, str]) -> Path:
    """The folder a pinned copy of `thread`'s version is written to, planted before it is
    used: the stored version's files with `changes` (relative path -> text) made to them,
    as a repository could ship it (the digest is no secret: it hashes the sources)."""
    from twelvefold.runtime.versions import AgentVersion

    store = SqliteStore(project / ".twelvefold" / "threads.db")
    try:
        digest = store.info(thread).version
        assert digest is not None, "it runs pinned"
        body = store.load_version(digest)
        assert body is not None
    finally:
        store.close()
    version = AgentVersion.from_stored(digest, body)
    folder = project / ".twelvefold" / "cache" / "versions" / digest[:32]
    for path, text in {**version.files, **changes}.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text)
    return folder


TAMPERED = "{% block system %}TAMPERED PROMPT{% endblock %}\n"


def test_a_planted_prompt_in_the_copy_of_a_pinned_version_is_not_sent_to_the_model(
    openai_server: ScriptedOpenAI, project: Path
) -> None:
    thread, request = waiting_at_approval(openai_server, project)
    planted(project, thread, {"prompts/pinbot/plan.j2": TAMPERED})
    (project / "pinbot.agent").write_text(REWORDED)  # the pinned copy is used from now on
    ModelTurns(openai_server).then(DONE)
    with runtime(openai_server, project) as rt:
        view = rt.resume(thread, approve=True, request=request)
    assert view.status == "finished", view.to_json()
    assert "PLAN-V1" in system_prompt(openai_server), system_prompt(openai_server)
    assert "TAMPERED" not in system_prompt(openai_server)


def test_a_planted_sub_agent_in_the_copy_of_a_pinned_version_is_not_run(
    openai_server: ScriptedOpenAI, project: Path, returns: Path
) -> None:
    """The red team's case: a planted child that pays the refund without its approval."""
    enterprise = {**RETURN, "email": "ana@enterprise.example"}
    with runtime(openai_server, project) as rt:
        parent = rt.launch(returns, enterprise)
    assert (parent.status, parent.step) == ("waiting", "approve_refund")
    paying = (project / "returns" / "refunds.agent").read_text().replace("start check", "start pay")
    planted(project, parent.id, {"returns/refunds.agent": paying})
    returns.write_text(returns.read_text() + "\n# an edit: a new version\n")
    with runtime(openai_server, project) as rt:
        parent = rt.resume(parent.id, approve=True, request=parent.request, by="carol")
        assert (parent.status, parent.step) == ("waiting", "refund"), parent.to_json()
        assert parent.child is not None
        child = rt.get(parent.child)
    assert (child.status, child.step) == ("waiting", "check"), child.to_json()


def test_links_fifos_and_extra_files_in_a_version_copy_are_replaced_unread(
    tmp_path: Path,
) -> None:
    """What the copy holds is the stored version's files as regular files, nothing more:
    a link is not followed (to /dev/zero it would never end), a FIFO not opened (it would
    block), a file the version does not hold is taken away; the compiled modules written
    beside them (signed) stay."""
    from twelvefold.runtime.versions import AgentVersion, materialized

    files = {"pinbot.agent": PINBOT, "prompts/pinbot/plan.j2": PLAN_V1, "lib/types.agent": TYPES}
    version = AgentVersion("pinbot.agent", files, "", {"pinbot.agent": "prompts"})
    folder = tmp_path / "versions" / version.digest[:32]
    (folder / "prompts" / "pinbot").mkdir(parents=True)
    (folder / "lib").mkdir()
    elsewhere = tmp_path / "elsewhere.agent"
    elsewhere.write_text(PINBOT)
    (folder / "pinbot.agent").symlink_to(elsewhere)  # the right text, through a link
    (folder / "prompts" / "pinbot" / "plan.j2").symlink_to("/dev/zero")
    os.mkfifo(folder / "lib" / "types.agent")
    (folder / "prompts" / "pinbot" / "extra.j2").write_text("TAMPERED PROMPT")
    assert materialized(version, tmp_path) == folder
    found = {
        path.relative_to(folder).as_posix(): path.read_text()
        for path in folder.rglob("*")
        if not path.is_symlink() and path.is_file()
    }
    assert found == files
    assert not any(path.is_symlink() for path in folder.rglob("*"))

    module = folder / "pinbot-0123456789abcdef.py"  # what load_version writes beside them
    module.write_text("# compiled\n")
    assert materialized(version, tmp_path) == folder and module.is_file()
    (folder / "lib" / "types.agent").write_text(TYPES + "\ntype Planted { x: string }\n")
    assert materialized(version, tmp_path) == folder
    assert (folder / "lib" / "types.agent").read_text() == TYPES


@pytest.mark.parametrize("planted_as", ["link", "file"])
def test_a_version_copy_planted_as_a_link_or_a_file_is_replaced_by_a_folder(
    tmp_path: Path, planted_as: str
) -> None:
    """A link to a folder elsewhere is taken away, not followed (what it points to stays
    as it was), and so is a file in the folder's place; every time, not just once."""
    from twelvefold.runtime.versions import AgentVersion, materialized

    version = AgentVersion("pinbot.agent", {"pinbot.agent": PINBOT}, "")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "prompts").mkdir(parents=True)
    (elsewhere / "pinbot.agent").write_text(PINBOT)
    folder = tmp_path / "versions" / version.digest[:32]
    for _ in range(2):
        folder.parent.mkdir(exist_ok=True)
        if planted_as == "link":
            folder.symlink_to(elsewhere)
        else:
            folder.write_text(PINBOT)
        assert materialized(version, tmp_path) == folder
        assert not folder.is_symlink() and (folder / "pinbot.agent").read_text() == PINBOT
        shutil.rmtree(folder)
    assert sorted(path.name for path in elsewhere.iterdir()) == ["pinbot.agent", "prompts"]
    assert [path.name for path in folder.parent.iterdir()] == []


@pytest.mark.parametrize("linked", ["versions", "cache", ".twelvefold"])
def test_a_version_copy_is_never_written_through_a_linked_cache_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linked: str
) -> None:
    """A repository can ship `.twelvefold` (or its `cache`, or `cache/versions`) as a link
    to a folder elsewhere: nothing is written there; the copy goes to the user's own
    cache folder instead (docs/runtime.md, "The compile cache")."""
    from twelvefold.runtime.versions import AgentVersion, materialized

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir()
    cache = project / ".twelvefold" / "cache"
    link = {"versions": cache / "versions", "cache": cache, ".twelvefold": cache.parent}[linked]
    link.parent.mkdir(parents=True)
    link.symlink_to(elsewhere)
    monkeypatch.chdir(project)
    version = AgentVersion("pinbot.agent", {"pinbot.agent": PINBOT}, "")
    folder = materialized(version, Path(".twelvefold/cache"))
    assert (folder / "pinbot.agent").read_text() == PINBOT
    assert folder.resolve().is_relative_to((tmp_path / "home-cache").resolve())
    assert list(elsewhere.rglob("*")) == []
