"""Timers of `twelvefold serve` on SQLite (the lane `timers`, issue 11): a tool retry's
`backoff` is a wait recorded in the log (`AttemptFailed`) that holds no slot and no lease,
and a server killed during it retries at the due time once it is started again. The
same on PostgreSQL with workers is in tests/test_worker.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.openai_server import Reply, ScriptedOpenAI
from tests.support.serve_process import ServeProcess, json_of, make_token
from tests.support.waiting import wait_for
from twelvefold.runtime.store import SqliteStore
from twelvefold.runtime.types import AttemptFailed

FIXTURES = Path(__file__).parent / "worker_fixtures"
FLAKY = FIXTURES / "flaky.agent"


def attempts(folder: Path) -> list[float]:
    """The times flaky.agent's tool was attempted (Unix seconds; FLAKY_DIR/attempts.log)."""
    log = folder / "attempts.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [float(line.split()[1]) for line in lines]


@pytest.fixture
def bumping() -> Iterator[ScriptedOpenAI]:
    with ScriptedOpenAI() as server:
        server.responder = lambda body: Reply(arguments={"choice": {"type": "Bump", "n": 1}})
        yield server


def serve(tmp_path: Path, model: ScriptedOpenAI, effects: Path, name: str) -> ServeProcess:
    env = {
        "OPENAI_BASE_URL": model.base_url,
        "OPENAI_API_KEY": "test",
        "FLAKY_DIR": str(effects),
        "TWELVEFOLD_DB": "",
    }
    args = ("--path", str(FIXTURES), "--model", "gpt-4o-mini", "--sweep-seconds", "1")
    return ServeProcess([FLAKY], tmp_path / "threads.db", env, tmp_path / f"{name}.log", args)


def events_of(db: Path, thread_id: str) -> list[Any]:
    from twelvefold.runtime.api import Runtime

    store = SqliteStore(db)
    try:
        return Runtime(store).events(thread_id, agent=FLAKY)
    finally:
        store.close()


def test_a_server_killed_during_a_retry_backoff_retries_at_the_due_time_after_a_restart(
    tmp_path: Path, bumping: ScriptedOpenAI
) -> None:
    effects = tmp_path / "flaky"
    effects.mkdir()
    db = tmp_path / "threads.db"
    first = serve(tmp_path, bumping, effects, "first").start()
    try:
        token = make_token(db, "bob")
        with first.client(token) as client:
            launched = json_of(client.post("/v1/agents/flaky/threads", json={"input": "go"}), 202)
            thread_id = launched["thread_id"]
            wait_for(lambda: len(attempts(effects)) == 1, "the first attempt")
            wait_for(
                lambda: isinstance(events_of(db, thread_id)[-1], AttemptFailed),
                "the failed attempt to be recorded",
            )

            # Waiting holds nothing: no lease, and the server's runner is idle. The run
            # lets its lease go in a commit after the one that recorded the failed attempt,
            # so both are waited for (a run that kept them would time out here).
            def lease_held() -> bool:
                store = SqliteStore(db)
                try:
                    return store.lease(thread_id) is not None
                finally:
                    store.close()

            wait_for(lambda: not lease_held(), "the run to let its lease go")
            wait_for(
                lambda: "twelvefold_runs_in_flight 0" in client.get("/metrics").text,
                "the server's runner to be idle",
            )
        first.kill()
        failed = events_of(db, thread_id)[-1]
        assert isinstance(failed, AttemptFailed)
        retry_at = datetime.fromisoformat(failed.retry_at).timestamp()
        wait_for(lambda: time.time() > retry_at + 1, "the due time to pass with no server")
        assert len(attempts(effects)) == 1
        second = serve(tmp_path, bumping, effects, "second").start()
        try:
            with second.client(token) as client:

                def status() -> str:
                    return str(json_of(client.get(f"/v1/threads/{thread_id}"))["status"])

                wait_for(lambda: status() == "finished", "the restarted server to retry")
        finally:
            second.stop()
        made = attempts(effects)
        assert len(made) == 2 and made[1] >= retry_at
        kinds = [type(e).__name__ for e in events_of(db, thread_id)]
        assert kinds.count("AttemptFailed") == 1 and "StepFailed" not in kinds
    finally:
        first.stop()


def test_a_retry_backoff_on_one_server_run_ends_at_its_due_time(
    tmp_path: Path, bumping: ScriptedOpenAI
) -> None:
    """Without a restart: the server's own timer runs the thread on when the backoff ends."""
    effects = tmp_path / "flaky"
    effects.mkdir()
    db = tmp_path / "threads.db"
    server = serve(tmp_path, bumping, effects, "only").start()
    try:
        token = make_token(db, "bob")
        with server.client(token) as client:
            launched = json_of(client.post("/v1/agents/flaky/threads", json={"input": "go"}), 202)
            thread_id = launched["thread_id"]

            def status() -> str:
                return str(json_of(client.get(f"/v1/threads/{thread_id}"))["status"])

            wait_for(lambda: status() == "finished", "the retry after the backoff")
        failed = next(e for e in events_of(db, thread_id) if isinstance(e, AttemptFailed))
        made = attempts(effects)
        assert len(made) == 2 and made[1] >= datetime.fromisoformat(failed.retry_at).timestamp()
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Where the server's tables go: a SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        store = SqliteStore(tmp_path / "threads.db")
        store.close()
        yield tmp_path / "threads.db"
    else:
        from twelvefold.runtime.store import open_store

        open_store(request.getfixturevalue("postgres_url")).close()
        yield request.getfixturevalue("postgres_url")


def test_a_reply_target_is_claimed_once_per_view_and_a_failed_send_gives_it_back(
    store_place: Any,
) -> None:
    """At most once per settle while its sender lives: of two processes settling one
    view, one claims each target (one conditional UPDATE, a lease on the send); a failed
    send gives the claim back for a retry, a sent one keeps it for good."""
    from twelvefold.server.replies import ReplyTargets

    one, other = ReplyTargets(store_place), ReplyTargets(store_place)
    try:
        one.add("t", "webhook", "https://example.com/hook")
        (target,) = one.of("t")
        until = one.claim(target, 5)
        assert until is not None
        assert other.claim(target, 5) is None  # being told already
        one.unclaim(target, 5, until)  # the send failed: it may be tried again
        (target,) = one.of("t")
        assert (target.replied_seq, target.sending_until) == (0, None)
        until = other.claim(target, 5)
        assert until is not None
        other.sent(target, 5, until)
        (told,) = one.of("t")
        assert (told.replied_seq, told.sending_until, told.lapsed) == (5, None, False)
        assert one.claim(told, 5) is None  # told: never again
        assert one.claim(told, 4) is None  # an older view is never sent after it
        assert one.claim(told, 6) is not None
        assert one.lapsed() == []  # a claim within its time is not taken over
    finally:
        one.close()
        other.close()


def test_a_claim_whose_sender_died_lapses_and_is_taken_again(store_place: Any) -> None:
    """A process killed while sending leaves its claim (`sending_until` set, never
    cleared): once its time is past, the claim lapses, another process takes it for the
    same view, and giving that one back leaves the target untold, not told."""
    from twelvefold.server.replies import ReplyTargets

    one, other = ReplyTargets(store_place), ReplyTargets(store_place)
    try:
        one.add("t", "webhook", "https://example.com/hook")
        (target,) = one.of("t")
        until = one.claim(target, 3)
        assert until is not None
        one.sent(target, 3, until)
        (told,) = one.of("t")
        dead = one.claim(told, 5, seconds=0.0)  # then its process is killed: never cleared
        assert dead is not None
        (left,) = other.lapsed()
        assert (left.replied_seq, left.sending_until, left.lapsed) == (5, dead, True)
        again = other.claim(left, 5)
        assert again is not None and again > dead
        assert other.claim(left, 5) is None and other.lapsed() == []  # held again
        one.sent(told, 5, dead)  # the dead one's claim is not its to clear any more
        assert other.of("t")[0].sending_until == again
        other.unclaim(left, 5, again)  # this send failed too: 5 was never told
        (back,) = other.of("t")
        assert back.replied_seq < 5 and back.sending_until is None
        assert other.claim(back, 5) is not None
    finally:
        one.close()
        other.close()


RETENTION = """
[retention]
finished_after = "1s"
archive = "archive/threads.jsonl"
every = "1s"
"""


def test_serve_prunes_on_its_retention_timer(tmp_path: Path) -> None:
    """`[tool.twelvefold.retention]` with `every`: a finished thread older than
    `finished_after` is archived and deleted by the server on its own (no `prune`)."""
    import json
    import shutil

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(FLAKY, project)
    shutil.copytree(FIXTURES / "prompts", project / "prompts")
    (project / "twelvefold.toml").write_text(RETENTION)
    with ScriptedOpenAI() as model:
        model.responder = lambda body: Reply(arguments={"choice": {"type": "Done", "n": 1}})
        server = serve(tmp_path, model, tmp_path, "pruning")
        server.places = [project / "flaky.agent"]
        server.start()
        try:
            token = make_token(tmp_path / "threads.db", "bob")
            with server.client(token) as client:
                launched = client.post("/v1/agents/flaky/threads", json={"input": "go"})
                thread_id = json_of(launched, 202)["thread_id"]
                wait_for(
                    lambda: client.get(f"/v1/threads/{thread_id}").status_code == 404,
                    "the server's retention timer to prune the finished thread",
                )
        finally:
            server.stop()
    lines = (project / "archive" / "threads.jsonl").read_text().splitlines()
    assert [json.loads(line)["thread_id"] for line in lines] == [thread_id]
    assert json.loads(lines[0])["status"] == "finished"


def test_a_retention_period_is_pruned_by_one_process_only(
    tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    """Two servers on one store (two Pruners): each period is claimed once."""
    import asyncio
    from datetime import UTC, timedelta

    from tests.support.server import deploy_project, served
    from twelvefold.runtime.retention import Retention
    from twelvefold.server.pruning import Pruner, Timed

    async def both() -> list[Any]:
        agent = deploy_project(tmp_path / "p")
        async with served(agent, tmp_path / "threads.db", openai_server) as s:
            timed = Timed(Retention(timedelta(days=1), delete=True), timedelta(minutes=5))
            one, other = Pruner(s.service, timed), Pruner(s.service, timed)
            now = datetime(2026, 12, 1, 3, 1, tzinfo=UTC)
            try:
                first = await asyncio.gather(one.tick(now), other.tick(now))
                later = await other.tick(now + timedelta(minutes=2))  # the same period
                next_period = await one.tick(now + timedelta(minutes=5))
            finally:
                await one.stop()
                await other.stop()
            return [first, later, next_period]

    first, later, next_period = asyncio.run(both())
    assert sorted(r is None for r in first) == [False, True]
    assert later is None and next_period == []
