"""Schema versions of a SQLite store (runtime/schema.py): a file an earlier twelvefold
wrote is upgraded when opened and says which migrations it went through; a file a newer
twelvefold upgraded is refused; `twelvefold db upgrade` does the same on purpose.
(PostgreSQL's rules, where an older schema is refused until `db upgrade`, are in
tests/test_store_postgres.py.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from twelvefold.cli import cli
from twelvefold.runtime.codec import Codec
from twelvefold.runtime.schema import CURRENT
from twelvefold.runtime.store import Head, SqliteStore, StoreError, ThreadInfo
from twelvefold.runtime.types import Answer, Answered, Started, State
from twelvefold.server.tokens import TokenStore

SERVER_TABLES = {
    "server_tokens", "inbox_sessions", "server_launches", "server_forks", "server_replies",
    "server_schedule_runs", "slack_messages",
}  # fmt: skip

SLACK_INDEX = "slack_messages_by_thread"
"""Migration 7's index: a thread's Slack messages, found by its id."""


def _as_left_by_schema_2(path: Path) -> None:
    """A store with one thread, as the release before versioned migrations left it:
    `PRAGMA user_version` 2, no version table, no server tables."""
    store = SqliteStore(path)
    codec = Codec()
    info = ThreadInfo("t", "a", "o", "running", "a", 1, "x", "x")
    store.create(info, [Started(step="a", input="hi")], codec)
    answer = Answered(step="a", at="2026-01-01T00:00:00Z", answer=Answer(text="one"))
    store.append("t", 1, [answer], codec, Head("running", "a"))
    store.close()
    with sqlite3.connect(path) as db:
        for table in [*SERVER_TABLES, "twelvefold_schema"]:
            db.execute(f"DROP TABLE {table}")
        db.execute("PRAGMA user_version = 2")


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {name for (name,) in db.execute("SELECT name FROM sqlite_master")}


def _versions(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        return [v for (v,) in db.execute("SELECT version FROM twelvefold_schema ORDER BY 1")]


def test_an_older_file_is_upgraded_when_opened_and_keeps_its_threads(tmp_path: Path) -> None:
    path = tmp_path / "threads.db"
    _as_left_by_schema_2(path)
    assert not SERVER_TABLES & _tables(path)
    store = SqliteStore(path)
    assert len(store.load("t", Codec())) == 2  # still verifies: nothing was re-chained
    store.close()
    assert _tables(path) >= SERVER_TABLES
    assert _versions(path) == list(range(1, CURRENT + 1))


def test_a_server_table_opened_first_upgrades_the_file_too(tmp_path: Path) -> None:
    path = tmp_path / "threads.db"
    _as_left_by_schema_2(path)
    tokens = TokenStore(path)
    token = tokens.create("carol")
    assert tokens.verify(token) == "carol"
    tokens.close()
    assert _versions(path) == list(range(1, CURRENT + 1))


def test_a_file_from_a_newer_twelvefold_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "threads.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO twelvefold_schema VALUES (?, 'future', 'later')", (CURRENT + 1,))
    with pytest.raises(StoreError, match="newer than this twelvefold reads"):
        SqliteStore(path)
    result = CliRunner().invoke(cli, ["threads", "--db", str(path)])
    assert result.exit_code == 1 and "upgrade twelvefold" in result.stderr
    assert "Traceback" not in result.stderr


def test_db_upgrade_brings_a_file_up_once(tmp_path: Path) -> None:
    path = tmp_path / "threads.db"
    _as_left_by_schema_2(path)
    first = CliRunner().invoke(cli, ["db", "upgrade", "--db", str(path)])
    assert first.exit_code == 0, first.stderr
    assert "applied migration 3 (server tables)" in first.stdout
    assert f"schema version 2 -> {CURRENT}" in first.stdout
    again = CliRunner().invoke(cli, ["db", "upgrade", "--store", f"sqlite:///{path}"])
    assert again.exit_code == 0 and "nothing to do" in again.stdout
    assert _versions(path) == list(range(1, CURRENT + 1))


def test_a_file_at_schema_5_gets_reply_claim_leases_and_keeps_its_targets(
    tmp_path: Path,
) -> None:
    """Migration 6 adds `server_replies.sending_until` to a file whose targets were
    written without it (as schema 5 left it): they read as told, and claim as any other."""
    from twelvefold.server.replies import ReplyTargets

    path = tmp_path / "threads.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("DROP INDEX server_replies_sending")
        db.execute(f"DROP INDEX {SLACK_INDEX}")  # migration 7's
        db.execute("ALTER TABLE server_replies DROP COLUMN sending_until")
        db.execute("DELETE FROM twelvefold_schema WHERE version >= 6")
        db.execute("PRAGMA user_version = 5")
        db.execute(
            "INSERT INTO server_replies (thread_id, kind, address, replied_seq)"
            " VALUES ('t', 'webhook', 'https://hooks.example/t', 4)"
        )
    targets = ReplyTargets(path)
    try:
        (target,) = targets.of("t")
        assert (target.replied_seq, target.sending_until, target.lapsed) == (4, None, False)
        assert targets.claim(target, 5) is not None
    finally:
        targets.close()
    assert _versions(path) == list(range(1, CURRENT + 1))


def _indexes(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }


def test_a_new_file_has_slack_messages_indexed_by_thread(tmp_path: Path) -> None:
    path = tmp_path / "threads.db"
    SqliteStore(path).close()
    assert SLACK_INDEX in _indexes(path)


def test_a_file_at_schema_6_gets_the_slack_index_and_keeps_its_messages(tmp_path: Path) -> None:
    """Migration 7 indexes `slack_messages` by thread in a file schema 6 left (no index),
    keeping its rows."""
    path = tmp_path / "threads.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"DROP INDEX IF EXISTS {SLACK_INDEX}")
        db.execute("DELETE FROM twelvefold_schema WHERE version > 6")
        db.execute("PRAGMA user_version = 6")
        db.execute(
            "INSERT INTO slack_messages (channel, ts, thread_id, request, title, closed)"
            " VALUES ('C1', '1.1', 't', 'r', 'Deploy?', 1)"
        )
    assert SLACK_INDEX not in _indexes(path)
    SqliteStore(path).close()
    assert SLACK_INDEX in _indexes(path)
    assert _versions(path) == list(range(1, CURRENT + 1))
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT channel, ts, thread_id, request, title, closed FROM slack_messages"
        )
        assert rows.fetchall() == [("C1", "1.1", "t", "r", "Deploy?", 1)]


def test_deleting_a_thread_finds_its_slack_messages_by_the_index(tmp_path: Path) -> None:
    """Found by a review: `prune --delete` deletes each thread's `slack_messages` by
    `thread_id`, which no index covered (the key is channel and ts): a scan of the whole
    table per pruned thread. Every statement the delete runs on the table is planned
    through the index."""
    path = tmp_path / "threads.db"
    store = SqliteStore(path)
    codec = Codec()
    store.create(ThreadInfo("t", "a", "o", "running", "a", 1, "x", "x"),
                 [Started(step="a", input="hi")], codec)  # fmt: skip
    answer = Answered(step="end", at="2026-01-01T00:00:00Z", answer=Answer(text="one"))
    ended = State(step="end", value=None, status="finished", input="hi", seq=2)
    store.append("t", 1, [answer], codec, Head("finished", "end", ended, "r"))
    ran: list[str] = []
    store._db.set_trace_callback(ran.append)  # the statements as run, values filled in
    try:
        assert store.delete("t", 2, ["finished"]) is True
    finally:
        store._db.set_trace_callback(None)
        store.close()
    on_slack = [sql for sql in ran if "slack_messages" in sql]
    assert on_slack, ran
    with sqlite3.connect(path) as db:
        for sql in on_slack:
            plan = " ".join(row[-1] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}"))
            assert f"USING INDEX {SLACK_INDEX}" in plan, (sql, plan)


def test_ctrl_c_just_after_the_schema_commits_stays_a_ctrl_c(tmp_path: Path) -> None:
    """Found by a red team (Ctrl-C early in `twelvefold run`): a KeyboardInterrupt landing
    after the schema's COMMIT ran the ROLLBACK of a transaction that had ended, and
    SQLite's "cannot rollback - no transaction is active" replaced it: `run` said the
    store could not be opened, exit 1, instead of `interrupted`, exit 130."""
    from typing import Any, cast

    from twelvefold.runtime.integrity import Chain
    from twelvefold.runtime.schema import upgrade_sqlite

    class CtrlCAfterCommit:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            cursor = self.db.execute(sql, *args)
            if sql == "COMMIT":
                raise KeyboardInterrupt
            return cursor

        def __getattr__(self, name: str) -> Any:
            return getattr(self.db, name)

    db = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    with pytest.raises(KeyboardInterrupt):
        upgrade_sqlite(cast(sqlite3.Connection, CtrlCAfterCommit(db)), Chain.from_env(), "t.db")
    db.close()
    store = SqliteStore(tmp_path / "t.db", create=False)  # it was committed: a store
    try:
        assert store.threads() == []
    finally:
        store.close()
