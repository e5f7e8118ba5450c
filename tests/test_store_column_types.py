"""A stored row whose column holds a value of a type twelvefold never writes there: SQLite
keeps any type in any column (a BLOB body, a BLOB reducer), so a hand edit or a damaged
page can leave one. Each is refused the way an edited event is: `BrokenLog` ("does not
verify", naming the event), one line and exit 1 on every command that reads the log, the
same answer as for an event edited to other text on the server; never a traceback or a
500. Real SQLite files written by `twelvefold run`."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.runtime_helpers import EXAMPLES, write_cassette
from tests.support.openai_server import ScriptedOpenAI
from tests.support.server import deploy_project, served
from tests.test_server_api import assert_problem, launch
from twelvefold.cli import cli
from twelvefold.runtime.codec import Codec
from twelvefold.runtime.integrity import BrokenLog
from twelvefold.runtime.store import SqliteStore

DEPLOYBOT = str(EXAMPLES / "deploybot.agent")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def waiting_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A real store holding one deploybot thread that waits for an approval."""
    folder = tmp_path_factory.mktemp("store")
    cassette = write_cassette(folder / "deploy.jsonl")
    db = folder / "threads.db"
    result = invoke(
        "run", DEPLOYBOT, "--input", "deploy v1.2.3 to production",
        "--cassette", str(cassette), "--db", str(db), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db, json.loads(result.output.splitlines()[-1])["thread_id"]


EDITS = {
    # name: (SQL, what the message says)
    "body as a blob": ("UPDATE events SET body = x'ffff00' WHERE seq = 2", "(event 2)"),
    "body cast to a blob": (
        "UPDATE events SET body = CAST(body AS BLOB) WHERE seq = 3",
        "(event 3)",
    ),
    "reducer as a blob": ("UPDATE threads SET reducer = CAST(reducer AS BLOB)", "damaged"),
    "reducer as a number": ("UPDATE threads SET reducer = x'00' || 5", "does not verify"),
    "body as a number": ("UPDATE events SET body = 5 WHERE seq = 2", "(event 2)"),  # held before
}


def edited(store: tuple[Path, str], folder: Path, sql: str) -> tuple[Path, str]:
    db, thread = store
    target = folder / "threads.db"
    shutil.copy(db, target)
    with sqlite3.connect(target) as connection:
        connection.execute(sql)
    return target, thread


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_the_store_refuses_the_thread_as_one_that_does_not_verify(
    waiting_store: tuple[Path, str], tmp_path: Path, edit: str
) -> None:
    sql, said = EDITS[edit]
    db, thread = edited(waiting_store, tmp_path, sql)
    store = SqliteStore(db, create=False)
    try:
        with pytest.raises(BrokenLog, match="does not verify") as refused:
            store.restore(thread, Codec())
        assert said in str(refused.value)
        assert not store.delete(thread, store.info(thread).seq, ["waiting"])  # kept
    finally:
        store.close()


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_every_command_says_so_in_one_line(
    waiting_store: tuple[Path, str], tmp_path: Path, edit: str
) -> None:
    sql, said = EDITS[edit]
    db, thread = edited(waiting_store, tmp_path, sql)
    cassette = str(write_cassette(tmp_path / "deploy.jsonl"))
    for args in [
        ["show", thread],
        ["show", thread, "--json"],
        ["fork", thread, "--at", "2"],
        ["resume", thread, "--approve", "--cassette", cassette],
        ["graph", DEPLOYBOT, "--thread", thread, "--format", "dot"],
    ]:
        result = invoke(*args, "--db", str(db))
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            args,
            result.exception,
        )
        assert result.exit_code == 1, (args, result.output)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, (args, result.stderr)
        assert f"thread {thread} does not verify" in errors[0], (args, errors)
        assert said in errors[0] or said == "does not verify", (args, errors)


SERVER_EDITS = {
    "body as a blob": "UPDATE events SET body = x'ffff00' WHERE seq = 3",
    "body as a number": "UPDATE events SET body = 5 WHERE seq = 3",  # the answer to match
    "reducer as a blob": "UPDATE threads SET reducer = CAST(reducer AS BLOB)",
}


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("edit", sorted(SERVER_EDITS))
async def test_the_server_answers_as_for_an_edited_event(
    tmp_path: Path, openai_server: ScriptedOpenAI, anyio_backend: str, edit: str
) -> None:
    agent = deploy_project(tmp_path / "project")
    db = tmp_path / "threads.db"
    async with served(agent, db, openai_server) as s:
        thread = (await launch(s, "bob"))["thread_id"]
    with sqlite3.connect(db) as connection:
        connection.execute(SERVER_EDITS[edit])
    async with served(agent, db, openai_server) as s, s.client("ana") as client:
        for method, path in [
            ("GET", f"/v1/threads/{thread}"),
            ("GET", f"/v1/threads/{thread}/events"),
            ("POST", f"/v1/threads/{thread}/retry"),
        ]:
            reply = await client.request(method, path, json={} if method == "POST" else None)
            assert_problem(reply, 503, f"thread {thread} does not verify")


def test_prune_with_an_archive_refuses_a_body_stored_as_a_blob(
    waiting_store: tuple[Path, str], tmp_path: Path
) -> None:
    """The archive copies each event's text; a BLOB has none. Nothing is pruned."""
    db, thread = edited(waiting_store, tmp_path, "UPDATE events SET body = x'ff' WHERE seq = 2")
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE threads SET status = 'cancelled', updated_at = '2000-01-01'")
    archive = tmp_path / "archive.jsonl"
    result = invoke("prune", "--older-than", "1s", "--archive", str(archive), "--db", str(db))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: thread {thread} does not verify: an event is stored")
    assert len(result.stderr.splitlines()) == 1
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT count(*) FROM threads").fetchone() == (1,)
