"""Rate limits shared by every worker on one PostgreSQL, and the worker's sweep and job
loop (twelvefold/server/queue.py; runtime/ratelimit.py, `StoreLimiter`).

1. Three `twelvefold worker` processes on one store keep, together, to a model's
   `requests_per_minute` (counted in the store, on the database's clock): the scripted
   server counts the requests that arrive in any one window. The same workers counting in
   their own processes (the per-process limiter alone) send three times the limit.
2. A thread whose turn is far away holds no worker: its job ends, nothing is recorded,
   and a wake-up is scheduled for when its turn comes.
3. The sweep wakes only the running threads that no process holds a lease on and that no
   pending wake-up covers.
4. A worker whose registration another worker deleted (taking it for dead while it was
   alive, as a loaded machine makes it seem) keeps taking jobs instead of dying.

The window is shortened to WINDOW seconds (TWELVEFOLD_RATE_WINDOW_SECONDS): a minute in
production. No duration is asserted: arrivals are counted per window, with a bound (twice
the limit) that the per-process limiter breaks.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tests.support.openai_server import Reply, ScriptedOpenAI
from tests.support.waiting import wait_for
from tests.test_rate_limits import AGENT, most_in_one_window
from tests.test_tracing import spans  # noqa: F401  (a fixture, taken by name)
from tests.test_worker import Driver, make_cluster
from twelvefold.runtime import ratelimit
from twelvefold.runtime.api import AsyncRuntime
from twelvefold.runtime.model import OpenAIModel
from twelvefold.runtime.store import open_store
from twelvefold.server.queue import ADVANCE, RETRY, Queue, Work, apply_schema, make_app

pytestmark = pytest.mark.postgres

WINDOW = 4.0
LIMIT = 2
THREADS = 8
WORKERS = 3

PER_PROCESS_ONLY = """
import sys
from twelvefold.runtime import loop, ratelimit
from twelvefold.cli import main

# Broken on purpose: every worker counts the limits in its own process only.
loop.ratelimit.limiter_for = lambda store: ratelimit.PROCESS_LIMITER
sys.argv[0] = "twelvefold"
main()
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    (folder / "prompts").mkdir(parents=True)
    (folder / "prompts" / "decide.j2").write_text("Answer in one sentence.\n{{ context }}\n")
    (folder / "answerer.agent").write_text(AGENT)
    (folder / "twelvefold.toml").write_text(
        f'[rate_limits."gpt-4o-mini"]\nrequests_per_minute = {LIMIT}\n'
    )
    return folder


@pytest.fixture
def model_server() -> Any:
    with ScriptedOpenAI() as server:
        server.responder = lambda body: Reply(arguments={"message": "ok"})
        yield server


def run_workers(
    tmp_path: Path,
    postgres_url: str,
    server: ScriptedOpenAI,
    project: Path,
    entry: list[str],
    concurrency: int = 4,
) -> list[str]:
    """THREADS threads run by WORKERS workers started with `entry`, each running up to
    `concurrency` jobs at once, once every worker takes jobs (so that they all start
    together); the threads' statuses at the end."""
    cluster = make_cluster(tmp_path, postgres_url, server)
    env = {**os.environ, **cluster.env, ratelimit.WINDOW_ENV: str(WINDOW)}
    agent = project / "answerer.agent"
    logs = [tmp_path / f"worker-{i}.log" for i in range(WORKERS)]
    for log in logs:
        with log.open("ab") as out:
            cluster.workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        *entry,
                        "worker",
                        str(agent),
                        "--store",
                        postgres_url,
                        "--concurrency",
                        str(concurrency),
                        "--sweep-seconds",
                        "1",
                        "--grace",
                        "2",
                        "--model",
                        "gpt-4o-mini",
                    ],
                    env=env,
                    stdout=out,
                    stderr=out,
                )
            )
    driver = Driver(cluster, server)
    try:
        for log in logs:
            wait_for(lambda log=log: "worker: running" in log.read_text(), f"{log.name} to start")

        async def launch() -> list[str]:
            async with driver.app.open_async():
                ids = []
                for i in range(THREADS):
                    view = await driver.runtime.launch(str(agent), f"q{i}", run=False)
                    ids.append(view.id)
                for thread_id in ids:  # enqueued together, once all are stored
                    await driver.queue.wake(thread_id)
                return ids

        ids = asyncio.run(launch())

        def statuses() -> list[str]:
            return [asyncio.run(driver.runtime.info(i)).status for i in ids]

        wait_for(lambda: set(statuses()) == {"finished"}, "every thread to finish", limit=240)
        return statuses()
    finally:
        cluster.stop()


def test_workers_on_one_store_keep_to_the_limit_together(
    tmp_path: Path, postgres_url: str, model_server: ScriptedOpenAI, project: Path
) -> None:
    statuses = run_workers(tmp_path, postgres_url, model_server, project, ["-m", "twelvefold"])
    assert statuses == ["finished"] * THREADS
    assert len(model_server.arrivals) == THREADS
    assert most_in_one_window(model_server.arrivals, WINDOW) <= 2 * LIMIT, model_server.arrivals


def test_workers_counting_alone_send_more_than_the_limit(
    tmp_path: Path, postgres_url: str, model_server: ScriptedOpenAI, project: Path
) -> None:
    """The check above can fail: with the per-process limiter alone, three workers send
    three times the limit in the first window. Each runs one job at a time and each call
    takes a second, so every worker has a job in that window (with four at once and
    instant replies, two quick workers could take all eight jobs and send four)."""
    model_server.latency = 1.0
    statuses = run_workers(
        tmp_path, postgres_url, model_server, project, ["-c", PER_PROCESS_ONLY], concurrency=1
    )
    assert statuses == ["finished"] * THREADS
    assert most_in_one_window(model_server.arrivals, WINDOW) > 2 * LIMIT, model_server.arrivals


def scheduled_wakeups(url: str, thread_id: str) -> list[tuple[str, float]]:
    """(status, seconds from now until it is due) of the thread's wake-up jobs."""
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT status::text, extract(epoch FROM coalesce(scheduled_at, now()) - now())"
            " FROM procrastinate_jobs WHERE task_name = %s AND args->>'thread_id' = %s",
            (ADVANCE, thread_id),
        ).fetchall()
    return [(str(status), float(due)) for status, due in rows]


def test_a_thread_waiting_for_its_turn_gives_its_job_back(
    tmp_path: Path,
    postgres_url: str,
    model_server: ScriptedOpenAI,
    project: Path,
    request: pytest.FixtureRequest,
) -> None:
    """One call per minute: the first thread's call takes the minute's turn; the second
    thread's job ends at once, its log unchanged and its lease free, with a wake-up
    scheduled for about a minute later (when the turn comes)."""
    exported: InMemorySpanExporter = request.getfixturevalue("spans")  # tests/test_tracing.py
    apply_schema(postgres_url)
    (project / "twelvefold.toml").write_text(
        '[rate_limits."gpt-4o-mini"]\nrequests_per_minute = 1\n'
    )
    agent = project / "answerer.agent"

    async def scenario() -> tuple[str, str]:
        model = OpenAIModel(base_url=model_server.base_url, api_key="t", model="gpt-4o-mini")
        runtime = AsyncRuntime(open_store(postgres_url), model=model)
        assert isinstance(runtime.engine.rate_limiter, ratelimit.StoreLimiter)
        app = make_app(postgres_url)
        async with app.open_async():
            work = Work(runtime, {"answerer": runtime.agent(agent)}, Queue(app))
            first = (await runtime.launch(str(agent), "q1", run=False)).id
            second = (await runtime.launch(str(agent), "q2", run=False)).id
            await work.advance(first)
            before = len(await runtime.events(second))
            await asyncio.wait_for(work.advance(second), timeout=30)  # the job ends
            assert len(await runtime.events(second)) == before
            assert runtime.store.lease(second) is None  # type: ignore[attr-defined]
            assert (await runtime.info(second)).status == "running"
            return (await runtime.info(first)).status, second

    first_status, second = asyncio.run(scenario())
    assert first_status == "finished"
    assert len(model_server.requests) == 1
    [(status, due)] = scheduled_wakeups(postgres_url, second)
    assert status == "todo" and due > 30, due  # at its turn, about a minute away
    # Its run's span says so, and is not an error.
    [run] = [
        s
        for s in exported.get_finished_spans()
        if s.attributes.get("gen_ai.conversation.id") == second
        and s.name.startswith("invoke_agent")
    ]
    [later] = [e for e in run.events if e.name == "twelvefold.turn_later"]
    assert later.attributes is not None and later.attributes["twelvefold.wait_seconds"] > 30
    assert run.status.status_code != StatusCode.ERROR


def test_the_sweep_wakes_only_threads_no_lease_and_no_wakeup_cover(
    tmp_path: Path, postgres_url: str, model_server: ScriptedOpenAI, project: Path
) -> None:
    apply_schema(postgres_url)
    agent = project / "answerer.agent"

    async def scenario() -> tuple[list[str], dict[str, str]]:
        runtime = AsyncRuntime(open_store(postgres_url))
        app = make_app(postgres_url)
        async with app.open_async():
            queue = Queue(app)
            work = Work(runtime, {"answerer": runtime.agent(agent)}, queue)
            ids = {}
            for name in ("held", "covered", "backing_off", "left"):
                ids[name] = (await runtime.launch(str(agent), name, run=False)).id
            # A live lease (a worker running it), a pending wake-up and a pending retry at
            # the end of a tool's backoff cover three of them.
            runtime.store.acquire(ids["held"], "another:1:x", 600)  # type: ignore[attr-defined]
            await queue.wake(ids["covered"])
            await app.configure_task(RETRY, schedule_in={"hours": 1}).defer_async(
                thread_id=ids["backing_off"], seq=1
            )
            woken = await work.sweep()
            return woken, ids

    woken, ids = asyncio.run(scenario())
    assert woken == [ids["left"]]
    assert [s for s, _ in scheduled_wakeups(postgres_url, ids["held"])] == []
    assert [s for s, _ in scheduled_wakeups(postgres_url, ids["covered"])] == ["todo"]
    assert [s for s, _ in scheduled_wakeups(postgres_url, ids["left"])] == ["todo"]


def test_a_thread_that_cannot_be_loaded_is_said_once_and_never_woken_again(
    postgres_url: str, project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A thread whose log no longer verifies was woken by every sweep, its job failing
    with a traceback each time (thousands of failed jobs a day). Now: one line, no
    traceback, and a mark in PostgreSQL (it outlives the worker) that the sweep respects
    and `threads` shows."""
    apply_schema(postgres_url)
    agent = project / "answerer.agent"

    async def scenario() -> tuple[str, list[list[str]], dict[str, str]]:
        runtime = AsyncRuntime(open_store(postgres_url))
        app = make_app(postgres_url)
        async with app.open_async():
            queue = Queue(app)
            work = Work(runtime, {"answerer": runtime.agent(agent)}, queue)
            broken = (await runtime.launch(str(agent), "q1", run=False)).id
            with psycopg.connect(postgres_url, autocommit=True) as conn:  # an edit by hand
                conn.execute("UPDATE events SET body = replace(body, 'q1', 'q2')")
            sweeps = []
            for _ in range(3):  # each sweep, then the wake-up it enqueued, if any
                sweeps.append(await work.sweep())
                for _thread in sweeps[-1]:
                    await work.advance(broken)
            places = {broken: (await runtime.info(broken)).seq}
            return broken, sweeps, await queue.parked(places)

    with caplog.at_level("INFO", logger="twelvefold.worker"):
        broken, sweeps, parked = asyncio.run(scenario())
    assert sweeps == [[broken], [], []]
    assert parked[broken].startswith("BrokenLog: ")
    said = [r for r in caplog.records if broken in r.getMessage()]
    assert len(said) == 1 and said[0].exc_info is None, said
    assert "needs a person" in said[0].getMessage()
    from click.testing import CliRunner

    from twelvefold.cli import cli

    listed = CliRunner().invoke(cli, ["threads", "--store", postgres_url])
    assert listed.exit_code == 0, listed.output
    assert f"{broken} needs a person: BrokenLog" in listed.output
    shown = CliRunner().invoke(cli, ["threads", "--json", "--store", postgres_url])
    assert json.loads(shown.stdout)[0]["needs_a_person"].startswith("BrokenLog")


def test_a_worker_taken_for_dead_keeps_taking_jobs(
    tmp_path: Path, postgres_url: str, model_server: ScriptedOpenAI, project: Path
) -> None:
    """Another worker deletes this one's registration (as procrastinate does to a worker
    whose heartbeat it finds old: on a loaded machine, a live one): procrastinate refuses
    its next fetch; the worker starts its job loop again and runs the thread."""
    cluster = make_cluster(tmp_path, postgres_url, model_server)
    agent = project / "answerer.agent"
    cluster.workers = [cluster.start_worker(0, agents=[str(agent)])]
    log = tmp_path / "worker-0.log"
    driver = Driver(cluster, model_server)
    try:
        wait_for(lambda: "worker: running" in log.read_text(), "the worker to start")

        def registered() -> int:
            with psycopg.connect(postgres_url) as connection:
                row = connection.execute("SELECT count(*) FROM procrastinate_workers").fetchone()
            return int(row[0]) if row else 0

        wait_for(lambda: registered() == 1, "the worker to register")
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute("DELETE FROM procrastinate_workers")

        async def launch() -> str:
            async with driver.app.open_async():
                view = await driver.runtime.launch(str(agent), "q", run=False)
                await driver.queue.wake(view.id)
                return view.id

        thread_id = asyncio.run(launch())
        wait_for(
            lambda: (
                asyncio.run(driver.runtime.info(thread_id)).status == "finished"
                or cluster.workers[0].poll() is not None
            ),
            "the thread to finish",
        )
        assert cluster.workers[0].poll() is None, log.read_text()[-3000:]
        assert asyncio.run(driver.runtime.info(thread_id)).status == "finished"
        assert "job loop failed" in log.read_text()
    finally:
        cluster.stop()


def test_a_worker_paused_for_seconds_is_not_taken_for_dead(
    tmp_path: Path, postgres_url: str, model_server: ScriptedOpenAI, project: Path
) -> None:
    """A live worker whose heartbeat is some seconds late (SIGSTOP here; a loaded machine
    in the crash bench) keeps its registration when another worker starts: workers are
    taken for dead after a minute of silence, not after three missed heartbeats."""
    import signal

    cluster = make_cluster(tmp_path, postgres_url, model_server)
    Driver(cluster, model_server)  # sets the store up
    agent = [str(project / "answerer.agent")]
    try:
        first = cluster.start_worker(0, agents=agent)
        cluster.workers = [first]

        def heartbeats() -> dict[int, float]:
            """Registered worker id -> seconds since its last heartbeat."""
            with psycopg.connect(postgres_url) as connection:
                rows = connection.execute(
                    "SELECT id, extract(epoch FROM now() - last_heartbeat)"
                    " FROM procrastinate_workers"
                ).fetchall()
            return {int(worker): float(age) for worker, age in rows}

        wait_for(lambda: len(heartbeats()) == 1, "the first worker to register")
        [silent] = heartbeats()
        first.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: heartbeats()[silent] > 5, "the first worker's heartbeat to be 5 s old")
            cluster.workers.append(cluster.start_worker(1, agents=agent))
            wait_for(lambda: set(heartbeats()) - {silent}, "the second worker to register")
            assert silent in heartbeats()  # the silent one was not deleted
        finally:
            first.send_signal(signal.SIGCONT)
    finally:
        cluster.stop()
