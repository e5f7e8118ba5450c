"""What only a PostgreSQL store has to prove beyond the shared contract
(tests/test_store_contract.py): separate connections racing one thread, leases across
connections, the hash chain over rows anyone with SQL access can edit, schema versions and
`twelvefold db upgrade`, URLs whose password is never shown, and a database that cannot be
reached answering with one line, never a traceback or a hang."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from tests.runtime_helpers import EXAMPLES, write_cassette
from tests.support.waiting import wait_for
from twelvefold.cli import cli
from twelvefold.runtime import lease as leases
from twelvefold.runtime.codec import Codec
from twelvefold.runtime.integrity import BrokenLog
from twelvefold.runtime.lease import LeaseHeld, LeaseLost
from twelvefold.runtime.pgstore import PostgresStore, upgrade_database
from twelvefold.runtime.schema import CURRENT, MIGRATIONS
from twelvefold.runtime.store import (
    Conflict,
    Head,
    SqliteStore,
    StoreError,
    ThreadInfo,
    ThreadNotFound,
    open_store,
    shown_url,
)
from twelvefold.runtime.types import Answer, Answered, Started, Usage
from twelvefold.runtime.usage import MAX_CALL_TOKENS

pytestmark = pytest.mark.postgres


def _info(thread_id: str = "t") -> ThreadInfo:
    return ThreadInfo(thread_id, "a", "o", "running", "a", 1, "x", "x")


def _answer(text: str, usage: Usage | None = None) -> Answered:
    return Answered(step="a", at="2026-01-01T00:00:00Z", answer=Answer(text=text), usage=usage)


@pytest.fixture
def two(postgres_url: str) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one database: two pools, so separate connections (as two processes
    or machines would have)."""
    first, second = PostgresStore(postgres_url), PostgresStore(postgres_url)
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


# ---- racing connections ------------------------------------------------------------------


def _race(stores: tuple[PostgresStore, PostgresStore], n: int, codec: Codec) -> list[str]:
    """Both stores append event n+1 at the same moment; what each got."""
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def append(store: PostgresStore, who: str) -> None:
        start.wait()
        try:
            store.append("t", n, [_answer(f"{who}{n}")], codec, Head("running", "a"))
            outcomes.append("won")
        except Conflict:
            outcomes.append("conflict")

    racers = [
        threading.Thread(target=append, args=(s, w)) for s, w in zip(stores, "AB", strict=True)
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    return sorted(outcomes)


def test_two_connections_racing_an_append_exactly_one_wins(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    codec = Codec()
    two[0].create(_info(), [Started(step="a", input="hi")], codec)
    rounds = 25
    for n in range(1, rounds + 1):
        assert _race(two, n, codec) == ["conflict", "won"], n
    events = two[1].load("t", codec)  # loads, so the chain verifies over every winner
    assert len(events) == rounds + 1 and two[0].info("t").seq == rounds + 1
    answers = [e.answer.text for e in events[1:]]  # type: ignore[attr-defined]
    assert [int(a[1:]) for a in answers] == list(range(1, rounds + 1))  # one per round


def test_leases_are_held_taken_over_and_fenced_across_connections(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two
    codec = Codec()
    a.create(_info(), [Started(step="a", input="hi")], codec)
    stale = a.acquire("t", "host:1:a", 0.5)
    with pytest.raises(LeaseHeld, match="host:1:a"):
        b.acquire("t", "host:2:b", 60)
    assert b.lease("t") == stale
    wait_for(lambda: b.lease("t") is None, "the lease to lapse on the database's clock")
    taker = b.acquire("t", "host:2:b", 60)
    assert taker.token == stale.token + 1
    with pytest.raises(LeaseLost, match="taken over by host:2:b"):
        a.append("t", 1, [_answer("late")], codec, Head("running", "a"), stale)
    with pytest.raises(LeaseLost):
        a.renew(stale, 60)
    with pytest.raises(LeaseHeld):
        a.append("t", 1, [_answer("no lease")], codec, Head("running", "a"))
    b.append("t", 1, [_answer("mine")], codec, Head("running", "a"), taker)
    assert len(a.load("t", codec)) == 2


def test_leases_are_decided_on_the_database_clock_not_this_process(
    two: tuple[PostgresStore, PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = two
    a.create(_info(), [Started(step="a", input="hi")], Codec())
    lease = a.acquire("t", "host:1:a", 30)
    with psycopg.connect(a.url) as conn:
        row = conn.execute(
            "SELECT lease_until, extract(epoch FROM clock_timestamp())::float8 FROM threads"
        ).fetchone()
    assert row is not None and lease.expires == row[0] and 0 < row[0] - row[1] <= 30
    # This process's clock an hour ahead (a machine whose clock jumped): the database
    # still says the lease is live, so nobody takes it over.
    ahead = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: ahead)
    monkeypatch.setattr(leases, "now", lambda: ahead)
    with pytest.raises(LeaseHeld):
        b.acquire("t", "host:2:b", 30)
    assert b.lease("t") == lease


# ---- the log is the truth ----------------------------------------------------------------


def test_an_event_edited_with_sql_makes_the_thread_refuse_to_load(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    codec = Codec()
    try:
        store.create(_info(), [Started(step="a", input="hi")], codec)
        store.append("t", 1, [_answer("one"), _answer("two")], codec, Head("running", "a"))
        with psycopg.connect(postgres_url) as conn:
            conn.execute("UPDATE events SET body = replace(body, 'one', 'uno') WHERE seq = 2")
        with pytest.raises(BrokenLog, match=r"event 2"):
            store.load("t", codec)
        with psycopg.connect(postgres_url) as conn:
            conn.execute("UPDATE events SET body = replace(body, 'uno', 'one') WHERE seq = 2")
            conn.execute("DELETE FROM events WHERE seq = 3")
        with pytest.raises(BrokenLog, match="cut or edited"):
            store.load("t", codec)
    finally:
        store.close()


def test_usage_is_read_from_the_stored_json_as_sqlite_reads_it(
    postgres_url: str, tmp_path: Path
) -> None:
    codec = Codec()
    stores = [SqliteStore(tmp_path / "t.db"), PostgresStore(postgres_url)]
    usage = Usage(latency_ms=12.5, input_tokens=40, output_tokens=7, cost_usd=0.25)
    for store in stores:
        store.create(_info(), [Started(step="a", input="hi")], codec)
        store.append("t", 1, [_answer("x", usage)], codec, Head("running", "a"))
    # Counts out of bounds (a log edited by hand, or written before they were refused):
    # SQLite reads 10**400 as a float, PostgreSQL as an int; both count it as unknown.
    huge = Usage(latency_ms=1.0, input_tokens=10**400, output_tokens=MAX_CALL_TOKENS + 1)
    for store in stores:
        store.append("t", 2, [_answer("y", huge)], codec, Head("running", "a"))
    assert stores[1].usage_records() == stores[0].usage_records()
    (_, _, read), *_ = [r for r in stores[1].usage_records()["t"] if r[2] and r[2].latency_ms == 1]
    assert read is not None and (read.input_tokens, read.output_tokens) == (None, None)
    with psycopg.connect(postgres_url) as conn:  # a body that is not JSON counts for nothing
        conn.execute("UPDATE events SET body = 'not json' WHERE seq = 1")
    assert [kind for kind, _, _ in stores[1].usage_records()["t"]] == ["answered", "answered"]
    for store in stores:
        store.close()


def test_hostile_thread_ids_are_unknown_threads_not_driver_errors(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    try:
        for thread_id in ["a\0b", "\udc80", "x" * 10_000]:
            with pytest.raises(ThreadNotFound):
                store.info(thread_id)
            with pytest.raises(ThreadNotFound):
                store.load(thread_id, Codec())
    finally:
        store.close()


# ---- schema versions ----------------------------------------------------------------------


def _make_old(url: str, version: int) -> None:
    """The database as a twelvefold of schema `version` left it."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TABLE twelvefold_schema (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TEXT NOT NULL)"
        )
        for migration in MIGRATIONS[:version]:
            if migration.postgresql:
                conn.execute(migration.postgresql)  # type: ignore[arg-type]
            conn.execute(
                "INSERT INTO twelvefold_schema VALUES (%s, %s, 'then')",
                (migration.version, migration.name),
            )


def test_an_older_schema_is_refused_until_db_upgrade_brings_it_up(postgres_url: str) -> None:
    _make_old(postgres_url, 2)
    with pytest.raises(StoreError, match=r"schema version 2.*twelvefold db upgrade --store"):
        PostgresStore(postgres_url)
    code, out, err = invoke("threads", "--store", postgres_url)
    assert code == 1 and "twelvefold db upgrade" in err and "Traceback" not in err
    code, out, err = invoke("db", "upgrade", "--store", postgres_url)
    assert code == 0, err
    assert "applied migration 3 (server tables)" in out and f"2 -> {CURRENT}" in out
    code, out, _ = invoke("db", "upgrade", "--store", postgres_url)
    assert code == 0 and "nothing to do" in out
    PostgresStore(postgres_url).close()
    with psycopg.connect(postgres_url) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM twelvefold_schema")]
    assert sorted(versions) == list(range(1, CURRENT + 1))


def test_a_store_at_schema_5_gets_reply_claim_leases_and_keeps_its_targets(
    postgres_url: str,
) -> None:
    """Migration 6 adds `server_replies.sending_until` to a store whose targets were
    written without it: they read as told, and claim and send as any other."""
    from twelvefold.server.replies import ReplyTargets

    _make_old(postgres_url, 5)
    with psycopg.connect(postgres_url) as conn:
        conn.execute(
            "INSERT INTO server_replies (thread_id, kind, address, replied_seq)"
            " VALUES ('t', 'webhook', 'https://hooks.example/t', 4)"
        )
    code, out, err = invoke("db", "upgrade", "--store", postgres_url)
    assert code == 0 and "applied migration 6 (reply claims as leases)" in out, err
    targets = ReplyTargets(postgres_url)
    try:
        (target,) = targets.of("t")
        assert (target.replied_seq, target.sending_until, target.lapsed) == (4, None, False)
        until = targets.claim(target, 5)
        assert until is not None
        targets.sent(target, 5, until)
        assert targets.of("t")[0].sending_until is None
    finally:
        targets.close()


def _indexes(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
        return {str(name) for (name,) in rows}


def test_a_store_at_schema_6_gets_the_slack_index_and_keeps_its_messages(
    postgres_url: str,
) -> None:
    """Migration 7 indexes `slack_messages` by thread (`prune --delete` deletes a
    thread's messages by `thread_id`), keeping the rows schema 6 left."""
    _make_old(postgres_url, 6)
    with psycopg.connect(postgres_url) as conn:
        conn.execute(
            "INSERT INTO slack_messages (channel, ts, thread_id, request, title, closed)"
            " VALUES ('C1', '1.1', 't', 'r', 'Deploy?', 1)"
        )
    assert "slack_messages_by_thread" not in _indexes(postgres_url)
    code, out, err = invoke("db", "upgrade", "--store", postgres_url)
    assert code == 0 and "applied migration 7 (Slack messages by thread)" in out, err
    assert f"6 -> {CURRENT}" in out
    assert "slack_messages_by_thread" in _indexes(postgres_url)
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            "SELECT channel, ts, thread_id, request, title, closed FROM slack_messages"
        ).fetchall()
    assert rows == [("C1", "1.1", "t", "r", "Deploy?", 1)]


def test_a_fresh_store_has_slack_messages_indexed_by_thread(postgres_url: str) -> None:
    PostgresStore(postgres_url).close()
    assert "slack_messages_by_thread" in _indexes(postgres_url)


def test_a_newer_schema_is_refused(postgres_url: str) -> None:
    PostgresStore(postgres_url).close()
    with psycopg.connect(postgres_url) as conn:
        conn.execute("INSERT INTO twelvefold_schema VALUES (%s, 'future', 'later')", (CURRENT + 1,))
    with pytest.raises(StoreError, match="newer than this twelvefold reads"):
        PostgresStore(postgres_url)
    with pytest.raises(StoreError, match="newer"):
        upgrade_database(postgres_url)


def test_concurrent_upgrades_of_a_fresh_database_apply_each_migration_once(
    postgres_url: str,
) -> None:
    """Four `twelvefold db upgrade`s at once on an empty database: the store's migrations
    and the job queue's schema are each applied once, and none fails (the queue's schema,
    once checked outside the lock, failed one of them with `type
    "procrastinate_job_status" already exists`)."""
    from twelvefold.server.queue import apply_schema, check_schema_now

    start = threading.Barrier(4)
    applied: list[int] = []
    queues: list[bool] = []
    errors: list[BaseException] = []

    def upgrade() -> None:  # what `twelvefold db upgrade` does
        start.wait()
        try:
            applied.extend(m.version for m in upgrade_database(postgres_url).applied)
            queues.append(apply_schema(postgres_url))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=upgrade) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == [] and sorted(applied) == list(range(1, CURRENT + 1))
    assert sorted(queues) == [False, False, False, True]
    check_schema_now(postgres_url)  # the queue is there, whole


def test_a_fresh_database_is_set_up_on_first_use_but_not_by_a_reader(postgres_url: str) -> None:
    with pytest.raises(StoreError, match="no thread store at"):
        open_store(postgres_url, create=False)
    code, _, err = invoke("threads", "--store", postgres_url)
    assert code == 1 and "no thread store" in err
    open_store(postgres_url).close()  # what `run` and `serve` do
    code, out, err = invoke("threads", "--store", postgres_url)
    assert code == 0 and "no threads in" in out


def _terminate_others(url: str) -> int:
    """What `pg_ctl restart -m fast` does to every client of the database: each backend but
    this one ends with `terminating connection due to administrator command`."""
    with psycopg.connect(url, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


def test_pooled_connections_the_server_closed_are_replaced_not_failed(postgres_url: str) -> None:
    """After PostgreSQL restarts, the first use of each pooled connection failed (a
    launch answered 503, the sweep logged tracebacks): the store's pool tries a connection
    before it lends it. The job queue's async pool does the same (procrastinate 3.10
    passes `check` itself): kept here so an upgrade that drops it is caught."""
    import asyncio

    from twelvefold.server.queue import apply_schema, make_app

    store = PostgresStore(postgres_url, pool_size=3)
    try:
        store.create(_info("t1"), [Started(step="a", input="hi")], Codec())
        assert _terminate_others(postgres_url) >= 1
        for _ in range(3):  # every pooled connection was closed under it
            assert [info.id for info in store.threads()] == ["t1"]
    finally:
        store.close()

    apply_schema(postgres_url)

    async def queue_after_a_restart() -> None:
        app = make_app(postgres_url, pool_size=2)
        async with app.open_async():
            query = "SELECT count(*) AS n FROM procrastinate_jobs"
            assert (await app.connector.execute_query_one_async(query))["n"] == 0
            assert _terminate_others(postgres_url) >= 1
            for _ in range(3):
                assert (await app.connector.execute_query_one_async(query))["n"] == 0

    asyncio.run(queue_after_a_restart())


def test_a_locked_table_is_one_line_and_exit_1_not_a_hang(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`LOCK TABLE threads` in another session once made `twelvefold threads` wait for as
    long as the lock was held: the store's connections have a `lock_timeout`. (The holder
    lets go after a generous bound, so a build without the timeout fails, not hangs.)"""
    import twelvefold.runtime.pgstore as pgstore

    open_store(postgres_url).close()
    monkeypatch.setattr(pgstore, "DEFAULT_LOCK_TIMEOUT", 0.5, raising=False)
    holder = psycopg.connect(postgres_url)
    holder.execute("LOCK TABLE threads IN ACCESS EXCLUSIVE MODE")
    letting_go = threading.Timer(120, holder.rollback)
    letting_go.start()
    try:
        code, out, err = invoke("threads", "--store", postgres_url)
        still_held = letting_go.is_alive()
    finally:
        letting_go.cancel()
        holder.close()
    assert still_held and code == 1, (out, err)
    assert err.startswith("error: the store at postgresql://") and err.count("\n") == 1, err
    assert "is busy: a lock it needs was not granted" in err and "Traceback" not in err


def test_the_lock_timeout_is_bounded_by_default_and_the_url_may_set_its_own(
    postgres_url: str,
) -> None:
    def setting(store: PostgresStore) -> str:
        with store.pool.connection() as conn:
            row = conn.execute("SHOW lock_timeout").fetchone()
        store.close()
        return str(row[0]) if row else ""

    assert setting(PostgresStore(postgres_url)) == "10s"
    assert setting(PostgresStore(postgres_url, lock_timeout=0)) == "0"
    own = postgres_url + "?options=-c%20lock_timeout%3D30s%20-c%20search_path%3Dpublic"
    assert setting(PostgresStore(own)) == "30s"
    kept = postgres_url + "?options=-c%20statement_timeout%3D1min"
    store = PostgresStore(kept)
    with store.pool.connection() as conn:  # the URL's other options are kept
        row = conn.execute("SHOW statement_timeout").fetchone()
    assert setting(store) == "10s" and row is not None and row[0] == "1min"


def test_serve_sets_up_the_job_queue_of_an_empty_database_too(postgres_url: str) -> None:
    """docs/stores.md: the first `serve` on an empty database sets it up. It made the
    store's tables, then stopped: "no job queue schema … run `twelvefold db upgrade`"."""
    from twelvefold.commands.serve import _queue
    from twelvefold.runtime.store import StoreUrl
    from twelvefold.server.queue import check_schema_now

    open_store(postgres_url).close()  # what serve does first
    assert _queue(StoreUrl(postgres_url)) is not None
    check_schema_now(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # an old queue: refused
        conn.execute("DROP TABLE procrastinate_workers CASCADE")
    with pytest.raises(SystemExit) as stopped:
        _queue(StoreUrl(postgres_url))
    assert stopped.value.code == 1


# ---- URLs and passwords ------------------------------------------------------------------


def test_passwords_are_cut_from_every_shown_url() -> None:
    for url, shown in [
        ("postgresql://ana:hunter2@db:5432/t", "postgresql://ana:***@db:5432/t"),
        ("postgres://ana:p%40ss@db/t", "postgres://ana:***@db/t"),
        ("postgresql://ana@db/t", "postgresql://ana@db/t"),
        ("postgresql://db/t?password=hunter2&sslmode=require", "postgresql://db/t?password=***&sslmode=require"),
        ("postgresql://ana:p@ss@db/t", "postgresql://ana:***@db/t"),
        ("postgresql://ana:hunter2@db/t\x1b[2J", "postgresql://ana:***@db/t\\x1b[2J"),
    ]:  # fmt: skip
        assert shown_url(url) == shown, url
    error = 'password authentication failed for user "ana" (hunter2)'
    assert "hunter2" not in shown_url(error, secret_of="postgresql://ana:hunter2@db/t")


def test_no_command_shows_the_password_of_a_store_url(
    postgres_cluster: object, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TWELVEFOLD_DB", raising=False)
    # Trust authentication takes any password, so the real cluster sees this one.
    url = postgres_url.replace("postgres@", "postgres:hunter2-secret@")
    write_cassette(tmp_path / "deploy.jsonl")
    code, out, err = invoke(
        "run", str(EXAMPLES / "deploybot.agent"), "--input", "deploy v1.2.3 to production",
        "--cassette", "deploy.jsonl", "--store", url,
    )  # fmt: skip
    assert code == 0, err
    assert "stored in postgresql://postgres:***@127.0.0.1" in out
    thread = next(line.split()[1] for line in out.splitlines() if line.startswith("thread "))
    runs = [
        ("show", thread),
        ("show", thread, "--json"),
        ("threads",),
        ("stats",),
        ("token", "create", "carol"),
        ("token", "list"),
        ("db", "upgrade"),
    ]
    for args in runs:
        code, out, err = invoke(*args, "--store", url)
        assert code == 0, (args, err)
        assert "hunter2" not in out + err, args
    request = json.loads(invoke("show", thread, "--json", "--store", url)[1])["request"]
    code, out, err = invoke("resume", thread, "--approve", "--by", "ana", "--request", request,
                            "--cassette", "deploy.jsonl", "--store", url)  # fmt: skip
    assert code == 0, err
    assert "finished" in out and "hunter2" not in out + err
    (tmp_path / "pyproject.toml").write_text(f'[tool.twelvefold]\nstore = "{url}"\n')
    code, out, err = invoke("threads")
    assert code == 1 and "holds a password" in err and "hunter2" not in out + err
    (tmp_path / "pyproject.toml").write_text(f'[tool.twelvefold]\nstore = "{postgres_url}"\n')
    code, out, err = invoke("threads")
    assert code == 0 and thread in out


def test_no_piece_of_a_user_part_with_a_raw_at_sign_is_shown() -> None:
    """libpq ends the user part at the first `@` (we, at the last): unrefused, it would
    look up the host `PW@127.0.0.1` and name it in its error."""
    for url in [
        "postgresql://bob:S3cret@PW@127.0.0.1:1/db",
        "postgresql://bob:S3cret/PW@127.0.0.1:1/db",
        "postgres://bob:S3cret?PW#x@127.0.0.1:1/db",
    ]:
        for args in [("threads",), ("db", "upgrade"), ("graph", str(EXAMPLES / "deploybot.agent"),
                     "--thread", "t")]:  # fmt: skip
            code, out, err = invoke(*args, "--store", url)
            assert code == 1, (url, args, out)
            assert err.startswith("error: ") and err.count("\n") == 1, err
            assert "percent-encode" in err, err
            assert not {"S3cret", "PW"} & set(re.split(r"\W+", out + err)), err
        with pytest.raises(StoreError, match="percent-encode") as refused:
            PostgresStore(url, connect_timeout=2)
        assert "S3cret" not in str(refused.value) and "PW" not in str(refused.value)
        with pytest.raises(StoreError, match="percent-encode") as refused:
            upgrade_database(url)
        assert "S3cret" not in str(refused.value) and "PW" not in str(refused.value)
        # The job queue's URL (`worker --queue`) is held to the same rule.
        from twelvefold.server.queue import QueueUnavailable, check_schema_now

        with pytest.raises(QueueUnavailable, match="percent-encode") as unusable:
            check_schema_now(url)
        assert "S3cret" not in str(unusable.value) and "PW" not in str(unusable.value)
    # Whatever a driver makes of such a URL, no piece of its password is in what we show.
    url = "postgresql://bob:S3cret@PWxyz/q@127.0.0.1:1/db"
    error = "failed to resolve host 'PWxyz/q@127.0.0.1': S3cret@PWxyz"
    shown = shown_url(error, secret_of=url)
    assert "S3cret" not in shown and "PWxyz" not in shown


def test_an_unreachable_or_malformed_store_is_one_line_and_exit_1() -> None:
    for url in [
        "postgresql://ana:hunter2@127.0.0.1:1/t",  # nothing listens there
        "postgresql://ana:hunter2@[::1/t",  # not a URL libpq can parse
        "postgresql://ana:hunter2@127.0.0.1:5432/t?nonsense=1",
    ]:
        for args in [("threads",), ("token", "list"), ("db", "upgrade"), ("stats",)]:
            code, out, err = invoke(*args, "--store", url)
            assert code == 1, (url, args, out)
            assert err.startswith("error: ") and err.count("\n") == 1, err
            assert "hunter2" not in out + err and "Traceback" not in err
        with pytest.raises(StoreError):
            PostgresStore(url, connect_timeout=2)


@pytest.mark.parametrize(
    "count", ["'\"11\"'::jsonb", "'1e300'::jsonb", "'[1]'::jsonb", "'null'::jsonb", "'{}'::jsonb"]
)
def test_stats_on_postgresql_marks_what_it_cannot_count(
    postgres_url: str, tmp_path: Path, count: str
) -> None:
    """Unexpected JSON types in a stored body (read through jsonb) and an unknown status
    are shown as on SQLite: `+?` on the token total, an OTHER column."""
    cassette = write_cassette(tmp_path / "deploy.jsonl")
    code, out, err = invoke(
        "run", str(EXAMPLES / "deploybot.agent"), "--input", "deploy v1.2.3 to production",
        "--cassette", str(cassette), "--store", postgres_url, "--json",
    )  # fmt: skip
    assert code == 0, err
    with psycopg.connect(postgres_url) as conn:
        conn.execute("UPDATE threads SET status = 'exploded'")
        conn.execute(
            "UPDATE events SET body = jsonb_set(body::jsonb, '{usage,input_tokens}',"
            f" {count})::text WHERE (thread, seq) = (SELECT thread, seq FROM events WHERE"
            " body::jsonb ->> 'kind' = 'model_output' ORDER BY thread, seq LIMIT 1)"
        )
    code, out, err = invoke("stats", "--store", postgres_url, "--json")
    assert code == 0, err
    stats = json.loads(out)["deploybot"]
    assert stats["threads"]["exploded"] == 1
    assert stats["usage"]["calls_without_input_count"] >= 1
    code, out, err = invoke("stats", "--store", postgres_url)
    assert code == 0, err
    header, row, note, *_ = out.splitlines()  # then the unpriced calls' line
    assert "OTHER" in header and "+?" in row and "exploded (1)" in note


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://tf@127.0.0.1:1/db?pass%77ord=S3cretpw",  # libpq decodes the name
        "postgresql://tf@127.0.0.1:1/db?%70assword=S3cretpw",
        "postgresql://tf:pa S3cretpw@127.0.0.1:1/db",  # shown from the blank on
        "postgresql://tf@127.0.0.1:1/db?password=se S3cretpw",
        "postgresql://tf@127.0.0.1:1/db?password=x\nS3cretpw",
        # rt18: libpq's error quoted the value it could not decode
        "postgresql://tf@127.0.0.1:1/db?password=sec%zzS3cretpw",
        "postgresql://tf@127.0.0.1:1/db?password=%00S3cretpw",
        "postgresql://tf@127.0.0.1:1/db?sslpassword=sec%zzS3cretpw",
        # rt18: libpq reads `#` as part of the password; the hint cut the URL there
        "postgresql://tf@127.0.0.1:1/db?password=abc#S3cretpw",
    ],
)
def test_a_password_the_shown_form_cannot_hide_is_refused_unshown(url: str) -> None:
    """rt17: a percent-encoded parameter name, or a blank in the URL, put the password in
    `resume:` hints, `stored in` lines and libpq's errors. Refused before anything is
    connected to or shown, naming neither."""
    for args in [("threads",), ("db", "upgrade")]:
        code, out, err = invoke(*args, "--store", url)
        assert code == 1, (url, args, out)
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert "S3cretpw" not in out + err, err
    with pytest.raises(StoreError) as refused:
        PostgresStore(url, connect_timeout=2)
    assert "S3cretpw" not in str(refused.value)


@pytest.mark.parametrize(
    "statements",
    [
        ("CREATE TABLE threads (x int)", "CREATE TABLE events (y int)"),
        # Created with IF NOT EXISTS by a migration: it would have been used as it is.
        ("CREATE TABLE server_tokens (token text)",),
    ],
    ids=["threads and events", "server_tokens"],
)
def test_tables_of_another_application_under_twelvefolds_names_are_refused(
    postgres_url: str, statements: tuple[str, ...]
) -> None:
    """Found by a red team: `threads` told the user that `db upgrade` would set the store up,
    which then failed on PostgreSQL's `relation "threads" already exists`."""
    with psycopg.connect(postgres_url) as conn:
        for statement in statements:
            conn.execute(statement)
    for command in (("threads",), ("db", "upgrade"), ("token", "create", "ana", "--create")):
        code, _, err = invoke(*command, "--store", postgres_url)
        assert code == 1, (command, err)
        assert "has no twelvefold store but tables of another application named like " in (err), err
        assert "Traceback" not in err
    with psycopg.connect(postgres_url) as conn:
        left = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        assert sorted(name for (name,) in left) == sorted(
            statement.split()[2] for statement in statements
        )
