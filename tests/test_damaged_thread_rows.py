"""One damaged `threads` row (a value of a kind twelvefold never writes there: SQLite keeps
a BLOB in a text column; a PostgreSQL column altered by hand keeps a NULL) hides nothing
else: the listings (`threads`, `stats`, `GET /v1/threads`, `/metrics`) show every healthy
thread and say which row is damaged and where to read what to do; `/metrics` never
answers 500. Before (rt13), `threads` and `stats` printed only the error, the HTTP list
was a 503 and `/metrics` a 500 with a traceback in the log.

Real SQLite files written by `twelvefold run`, and the real service over SQLite and over
PostgreSQL."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.runtime_helpers import EXAMPLES, write_cassette
from tests.support.openai_server import ScriptedOpenAI
from tests.support.server import DEPLOY_CONFIG, Served, deploy_project, served
from tests.test_server_api import assert_problem, launch
from twelvefold.cli import cli
from twelvefold.runtime.store import open_store

DEPLOYBOT = str(EXAMPLES / "deploybot.agent")
WHAT_TO_DO = '"Damaged thread rows" in docs/stores.md'


def assert_tells_a_caller_no_internals(detail: str, root: Path) -> None:
    """rt15: a 503 showed a caller the exception's class and the server's store path."""
    assert str(root) not in detail and "/tmp" not in detail and "my store" not in detail, detail
    assert "127.0.0.1" not in detail, detail
    assert not re.search(r"\b[A-Z]\w*(Error|Exception)\b", detail), detail
    assert "reference " in detail, detail  # what the server's log line holds it under


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def two_threads(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A store of two deploybot threads waiting for approval: (store, healthy, damaged),
    the second one's `agent` a BLOB."""
    folder = tmp_path_factory.mktemp("store")
    cassette = write_cassette(folder / "deploy.jsonl")
    db = folder / "threads.db"
    ids = []
    for _ in range(2):
        result = invoke(
            "run", DEPLOYBOT, "--input", "deploy v1.2.3 to production",
            "--cassette", str(cassette), "--db", str(db), "--json",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        ids.append(json.loads(result.output.splitlines()[-1])["thread_id"])
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE threads SET agent = CAST(agent AS BLOB) WHERE id = ?", (ids[1],))
    with sqlite3.connect(db) as connection:  # the copies need no -wal file
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db, ids[0], ids[1]


def copy(store: tuple[Path, str, str], folder: Path) -> Path:
    target = folder / "threads.db"
    shutil.copy(store[0], target)
    return target


def assert_flags(stderr: str, damaged: str) -> None:
    (line,) = stderr.splitlines()
    assert line.startswith("error: ") and f"damaged thread row {damaged}" in line, line
    assert "agent is a BLOB, not text" in line and WHAT_TO_DO in line, line


def test_threads_lists_the_healthy_rows_and_flags_the_damaged_one(
    two_threads: tuple[Path, str, str], tmp_path: Path
) -> None:
    db = copy(two_threads, tmp_path)
    _, healthy, damaged = two_threads
    result = invoke("threads", "--db", str(db))
    assert result.exit_code == 1  # the listing is not whole
    assert healthy in result.stdout and damaged not in result.stdout, result.stdout
    assert result.stdout.splitlines()[0].startswith("THREAD")
    assert_flags(result.stderr, damaged)
    listed = invoke("threads", "--json", "--db", str(db))
    assert [t["thread_id"] for t in json.loads(listed.stdout)] == [healthy]
    assert_flags(listed.stderr, damaged)
    assert invoke("threads", "--status", "waiting", "--db", str(db)).exit_code == 1


def test_stats_counts_the_healthy_rows_and_flags_the_damaged_one(
    two_threads: tuple[Path, str, str], tmp_path: Path
) -> None:
    db = copy(two_threads, tmp_path)
    result = invoke("stats", "--json", "--db", str(db))
    assert result.exit_code == 1
    assert json.loads(result.stdout)["deploybot"]["threads"]["waiting"] == 1
    assert_flags(result.stderr, two_threads[2])
    table = invoke("stats", "--db", str(db))
    assert table.stdout.startswith("AGENT") and "deploybot" in table.stdout
    assert_flags(table.stderr, two_threads[2])


def test_show_of_the_damaged_row_says_what_is_wrong_and_where_to_read_what_to_do(
    two_threads: tuple[Path, str, str], tmp_path: Path
) -> None:
    db = copy(two_threads, tmp_path)
    _, healthy, damaged = two_threads
    assert invoke("show", healthy, "--db", str(db)).exit_code == 0
    result = invoke("show", damaged, "--db", str(db))
    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert "agent is a BLOB, not text" in line and WHAT_TO_DO in line, line


def test_prune_and_migrate_pass_the_damaged_row_by_and_say_so(
    two_threads: tuple[Path, str, str], tmp_path: Path
) -> None:
    """They left it out without a word: a store a person thinks pruned, or every thread
    moved to the new version, still held it."""
    db = copy(two_threads, tmp_path)
    _, healthy, damaged = two_threads
    for json_flag in ((), ("--json",)):
        pruned = invoke("prune", "--older-than", "0s", "--delete", "--db", str(db), *json_flag)
        assert pruned.exit_code == 1, pruned.output
        assert_flags(pruned.stderr, damaged)
        checked = invoke("migrate", "check", DEPLOYBOT, "--db", str(db), *json_flag)
        assert checked.exit_code == 1, checked.output
        assert healthy in checked.stdout and damaged not in checked.stdout, checked.stdout
        assert_flags(checked.stderr, damaged)
    assert invoke("prune", "--older-than", "0s", "--delete", "--db", str(db)).stdout == (
        "pruned 0 thread(s) and 0 agent version(s)\n"
    )


def damage(s: Served, store: Path | str, thread_id: str) -> None:
    """`thread_id`'s `agent` made a value of a kind twelvefold never writes: a BLOB in
    SQLite; NULL in PostgreSQL, once its NOT NULL was dropped (an edit outside twelvefold)."""
    if isinstance(store, Path):
        with sqlite3.connect(store) as connection:
            connection.execute(
                "UPDATE threads SET agent = CAST(agent AS BLOB) WHERE id = ?", (thread_id,)
            )
        return
    import psycopg

    with psycopg.connect(store, autocommit=True) as connection:
        connection.execute("ALTER TABLE threads ALTER COLUMN agent DROP NOT NULL")
        connection.execute("UPDATE threads SET agent = NULL WHERE id = %s", (thread_id,))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    # A folder whose name holds a blank, `;`, `,` and brackets: a 503 names none of it
    # (rt17: the path was cut at the blank only, `…/my store (v2);x/threads.db`).
    folder = tmp_path / "my store (v2);x,y"
    folder.mkdir()
    return folder / "threads.db"


@pytest.mark.anyio
@pytest.mark.usefixtures("collected")
async def test_the_api_and_metrics_list_the_healthy_rows_and_flag_the_damaged_one(
    tmp_path: Path,
    store: Path | str,
    openai_server: ScriptedOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    kind = "a BLOB" if isinstance(store, Path) else "NULL"
    readers = DEPLOY_CONFIG + '\n[server]\nreaders = ["release-managers"]\n'
    agent = deploy_project(tmp_path / "project", readers)
    async with served(agent, store, openai_server) as s:
        healthy, gone = await launch(s, "carol"), await launch(s, "carol")
        damage(s, store, gone["thread_id"])
        async with s.client("ana") as ana:
            response = await ana.get("/v1/threads")
            assert response.status_code == 200, response.text
            listed: list[dict[str, Any]] = response.json()
            assert [t["thread_id"] for t in listed if not t["damaged"]] == [healthy["thread_id"]]
            (row,) = [t for t in listed if t["damaged"]]
            assert row["thread_id"] == gone["thread_id"] and row["status"] == "damaged"
            assert f"agent is {kind}, not text" in row["damaged"] and WHAT_TO_DO in row["damaged"]
            # A filtered listing holds the rows that match, and nothing damaged (what a
            # damaged row holds cannot be matched).
            waiting = (await ana.get("/v1/threads?status=waiting")).json()
            assert [t["thread_id"] for t in waiting] == [healthy["thread_id"]]
            # The thread itself cannot be read: one line, where to read what to do.
            one = await ana.get(f"/v1/threads/{gone['thread_id']}")
            assert_problem(one, 503, f"agent is {kind}, not text", WHAT_TO_DO)
            assert_tells_a_caller_no_internals(one.json()["detail"], tmp_path)
            # The inbox's data goes on too.
            requests = (await ana.get("/v1/requests")).json()
            assert [r["thread_id"] for r in requests] == [healthy["thread_id"]]
            scraped = await ana.get("/metrics")
            assert scraped.status_code == 200, scraped.text
            assert 'twelvefold_threads{agent="deploybot",status="waiting"} 1.0' in scraped.text
            assert "twelvefold_damaged_thread_rows 1.0" in scraped.text
        async with s.client("bob") as bob:  # no reader: nothing, no damaged row either
            assert (await bob.get("/v1/threads")).json() == []
    assert not [r for r in caplog.records if r.exc_info], caplog.text


@pytest.mark.anyio
@pytest.mark.usefixtures("collected")
async def test_metrics_on_a_store_that_cannot_be_read_is_a_503_never_a_500(
    deploy_agent: Path, tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    db = tmp_path / "threads.db"
    async with served(deploy_agent, db, openai_server) as s:
        with sqlite3.connect(db) as connection:  # the threads table gone from under it
            connection.execute("ALTER TABLE threads RENAME TO elsewhere")
        async with s.client("ana") as ana:
            scraped = await ana.get("/metrics")
    assert_problem(scraped, 503, "threads")
    assert_tells_a_caller_no_internals(scraped.json()["detail"], tmp_path)


def test_the_repair_stores_md_gives_for_a_blob_makes_the_row_whole_again(
    two_threads: tuple[Path, str, str], tmp_path: Path
) -> None:
    db = copy(two_threads, tmp_path)
    _, healthy, damaged = two_threads
    with sqlite3.connect(db) as connection:  # as docs/stores.md says
        connection.execute(
            "UPDATE threads SET agent = CAST(agent AS TEXT) WHERE id = ?", (damaged,)
        )
    result = invoke("threads", "--json", "--db", str(db))
    assert result.exit_code == 0 and not result.stderr, result.stderr
    assert sorted(t["thread_id"] for t in json.loads(result.stdout)) == sorted([healthy, damaged])
    assert invoke("show", damaged, "--db", str(db)).exit_code == 0


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ("id = CAST(id AS BLOB)", "id is a BLOB, not text"),
        ("seq = 'six'", "seq is text, not a whole number"),
        ("created_at = x'31'", "created_at is a BLOB, not text"),  # TEXT affinity: 12 is '12'
        ("request = x'31'", "request is a BLOB, not text or NULL"),
        ("version = x'00'", "version is a BLOB, not text or NULL"),
        (
            "step = x'00', seq = 6.5",
            "step is a BLOB, not text; seq is a real number, not a whole number",
        ),
    ],
)
def test_each_kind_of_damage_is_named_and_hides_no_other_row(
    two_threads: tuple[Path, str, str], tmp_path: Path, change: str, problem: str
) -> None:
    """What SQLite picks out as damaged (`typeof`, so a scrape reads no healthy row) is
    what the listing leaves out, and each column's fault is named."""
    db = copy(two_threads, tmp_path)
    _, healthy, damaged = two_threads
    with sqlite3.connect(db) as connection:
        connection.execute(
            f"UPDATE threads SET agent = CAST(agent AS TEXT), {change} WHERE id = ?", (damaged,)
        )
    store = open_store(db, create=False)
    try:
        assert [info.id for info in store.threads()] == [healthy]
        (row,) = store.damaged_threads()
    finally:
        store.close()
    assert row.id == (
        f"X'{damaged.encode().hex().upper()}'" if change.startswith("id") else damaged
    )
    assert row.problem == problem


def test_a_damaged_id_is_named_as_the_sql_that_finds_it(
    two_threads: tuple[Path, str, str], tmp_path: Path
) -> None:
    """rt14: a BLOB id was named `b'…'` (Python's spelling): the repair in docs/stores.md
    pasted with it, or with the bare id, changed no row."""
    db = copy(two_threads, tmp_path)
    _, healthy, damaged = two_threads
    with sqlite3.connect(db) as connection:
        connection.execute(
            "UPDATE threads SET agent = CAST(agent AS TEXT), id = CAST(id AS BLOB) WHERE id = ?",
            (damaged,),
        )
    result = invoke("threads", "--db", str(db))
    named = result.stderr.split("damaged thread row ", 1)[1].split(" ", 1)[0]
    with sqlite3.connect(db) as connection:  # the repair as docs/stores.md gives it
        changed = connection.execute(
            f"UPDATE threads SET id = CAST(id AS TEXT) WHERE id = {named}"
        ).rowcount
    assert changed == 1, named
    result = invoke("threads", "--json", "--db", str(db))
    assert result.exit_code == 0 and not result.stderr, result.stderr
    assert sorted(t["thread_id"] for t in json.loads(result.stdout)) == sorted([healthy, damaged])
