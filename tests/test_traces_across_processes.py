"""One trace per thread across processes (docs/observability.md, "One trace across
processes"): a thread launched over HTTP on a real `twelvefold serve` process (SQLite)
and threads launched as `serve` does on PostgreSQL and run by a real `twelvefold worker`
process, which gives its job back while it waits for a far rate-limit turn; spans
exported over OTLP/HTTP to the receiver in tests/support/otlp_receiver.py, or kept by
the SDK's in-memory exporter in this process (the `serve` side)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.openai_server import Reply, ScriptedOpenAI
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.serve_process import ServeProcess, json_of, launch_waiting, make_token
from tests.support.server import deploy_project, deploy_responder
from tests.support.waiting import wait_for
from tests.test_rate_limits import AGENT as ANSWERER
from tests.test_tracing import spans  # noqa: F401  (a fixture, taken by name)
from tests.test_worker import FIXTURES, Driver, make_cluster
from twelvefold.runtime import ratelimit, tracing
from twelvefold.runtime.api import AsyncRuntime
from twelvefold.runtime.model import OpenAIModel
from twelvefold.runtime.store import SqliteStore
from twelvefold.runtime.types import AttemptFailed

CALLER_TRACE, CALLER_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def of_thread(found: list[ReceivedSpan], thread_id: str) -> list[ReceivedSpan]:
    return [s for s in found if s.attributes.get("gen_ai.conversation.id") == thread_id]


def exporting(receiver: OtlpReceiver) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: export soon, not every 5 s
        tracing.CAPTURE_CONTENT: "",
    }


def test_a_thread_launched_over_http_is_one_trace_from_the_callers_span(
    openai_server: ScriptedOpenAI, tmp_path: Path
) -> None:
    """The launch's span is inside the request's span (so in the trace of the caller's
    `traceparent` when there is one), and the server's background run is the launch's
    child: one trace per thread, with the HTTP request that launched it."""
    openai_server.responder = deploy_responder
    deploy_project(tmp_path / "project")
    db = tmp_path / "threads.db"
    token = make_token(db, "bob")
    with OtlpReceiver() as receiver:
        env = {
            "OPENAI_BASE_URL": openai_server.base_url,
            "OPENAI_API_KEY": "test",
            "DEPLOYBOT_LEDGER": str(tmp_path / "ledger.jsonl"),
            "TWELVEFOLD_DB": "",
            **exporting(receiver),
        }
        server = ServeProcess([tmp_path / "project"], db, env, tmp_path / "serve.log").start()
        try:
            with server.client(token) as bob:
                header = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
                joined = json_of(
                    bob.post(
                        "/v1/agents/deploybot/threads", json={"input": "deploy"}, headers=header
                    ),
                    202,
                )["thread_id"]
                (alone,) = (view["thread_id"] for view in launch_waiting(bob, 1))
                wait_for(
                    lambda: bob.get(f"/v1/threads/{joined}").json()["status"] == "waiting",
                    "the first thread to pause",
                )

            def paused_runs(found: list[ReceivedSpan]) -> bool:
                return all(
                    any(s.attributes.get("twelvefold.thread.status") == "waiting"
                        for s in of_thread(found, t))
                    for t in (joined, alone)
                )  # fmt: skip

            received = receiver.wait_for(paused_runs)
        finally:
            server.stop()
    by_id = {s.span_id: s for s in received}

    def ancestors(span: ReceivedSpan) -> list[str]:
        names = []
        while span.parent_span_id in by_id:
            span = by_id[span.parent_span_id]
            names.append(span.name)
        return names

    for thread_id in (joined, alone):
        found = of_thread(received, thread_id)
        (launch,) = [s for s in found if s.name == "launch deploybot"]
        (run,) = [s for s in found if s.name == "invoke_agent deploybot"]
        assert {s.trace_id for s in found} == {launch.trace_id}, thread_id
        assert run.parent_span_id == launch.span_id
        assert run.attributes["twelvefold.resumed"] is False
        assert run.attributes["gen_ai.provider.name"] == "openai"
        # The launch is inside the request's span (FastAPI's own, in the server).
        assert "POST /v1/agents/{agent}/threads" in ancestors(launch)
    (request_span,) = [
        by_id[s.span_id]
        for s in received
        if s.name.startswith("POST ") and s.trace_id == CALLER_TRACE
    ]
    assert request_span.parent_span_id == CALLER_SPAN
    assert {s.trace_id for s in of_thread(received, joined)} == {CALLER_TRACE}


def test_the_run_after_a_retry_backoff_is_the_child_of_the_run_whose_attempt_failed(
    request: pytest.FixtureRequest,
    openai_server: ScriptedOpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`retry 2 backoff 3s`, its first attempt failing, run as the server and the workers
    run it: launched without running, run in the background, the run stops at the failed
    attempt, and another runs the thread on when the backoff is over. The failed attempt
    records its run, and the next run is that run's child (not the launch's)."""
    exported: InMemorySpanExporter = request.getfixturevalue("spans")
    monkeypatch.setenv("FLAKY_DIR", str(tmp_path))
    openai_server.responder = lambda body: Reply(arguments={"choice": {"type": "Bump", "n": 1}})
    model = OpenAIModel(model="scripted-model", base_url=openai_server.base_url, api_key="t")

    async def scenario() -> tuple[str, AttemptFailed]:
        rt = AsyncRuntime(SqliteStore(tmp_path / "threads.db"), model=model)
        rt.engine.wait_out_backoff = False  # as `serve` and `worker` set it
        view = await rt.launch(FIXTURES / "flaky.agent", "go", run=False)
        await rt.resume(view.id)
        failed = (await rt.events(view.id))[-1]
        assert isinstance(failed, AttemptFailed)
        retry_at = datetime.fromisoformat(failed.retry_at).timestamp()
        while time.time() <= retry_at:
            await asyncio.sleep(0.1)
        assert (await rt.resume(view.id)).status == "finished"
        return view.id, failed

    _, failed = asyncio.run(scenario())
    found = exported.get_finished_spans()
    (launch,) = (s for s in found if s.name == "launch flaky")
    first, second = (s for s in found if s.name == "invoke_agent flaky")
    assert launch.context and first.context and second.context and first.parent and second.parent
    assert first.parent.span_id == launch.context.span_id
    assert failed.trace == tracing.traceparent(first)  # type: ignore[arg-type]
    assert second.parent.span_id == first.context.span_id
    # ... and links to it, as every run after the first links to the run before it.
    assert [link.context.span_id for link in second.links] == [first.context.span_id]
    assert {s.context.trace_id for s in found if s.context} == {launch.context.trace_id}
    assert [(s.attributes or {})["twelvefold.resumed"] for s in (first, second)] == [False, True]


def worked(runs: list[ReceivedSpan]) -> list[ReceivedSpan]:
    """The runs that held the thread's lease. One woken while another run held it (a
    sweep's wake-up beside a job, a dead worker's lease not yet lapsed) ends with
    `LeaseHeld` and appends nothing: it must not be mistaken for the thread's first run.
    Mostly it ends before it reads the log and links nowhere; when the other run took the
    lease between its read of the log and its own try (CI met it once under load), it
    links to the run the log names, as any run does, and is left out all the same."""
    held = [r for r in runs if r.attributes.get("error.type") == "LeaseHeld"]
    for run in held:
        assert len(run.links) <= 1, run
    return [r for r in runs if r not in held]


@pytest.mark.postgres
def test_a_worker_keeps_each_thread_in_one_trace_across_its_rate_limit_turns(
    tmp_path: Path, postgres_url: str, request: pytest.FixtureRequest
) -> None:
    """One model call per WINDOW: three threads launched as `serve` launches on
    PostgreSQL (stored, a wake-up enqueued) wait their turns on a real worker, which gives
    the job back (`TurnLater`) rather than wait. Each thread is one trace rooted at its
    launch's span (made in this process); every run is the launch's child, and a run after
    one that gave its job back links to that run and says it is not the first."""
    exported: InMemorySpanExporter = request.getfixturevalue("spans")
    window = 3.0  # seconds: turns 3 and 6 s away are beyond DEFER_TURN_SECONDS (1 s)
    project = tmp_path / "project"
    (project / "prompts").mkdir(parents=True)
    (project / "prompts" / "decide.j2").write_text("Answer.\n{{ context }}\n")
    (project / "answerer.agent").write_text(ANSWERER)
    (project / "twelvefold.toml").write_text(
        '[rate_limits."gpt-4o-mini"]\nrequests_per_minute = 1\n'
    )
    with ScriptedOpenAI() as model_server, OtlpReceiver() as receiver:
        model_server.responder = lambda body: Reply(arguments={"message": "ok"})
        cluster = make_cluster(tmp_path, postgres_url, model_server)
        env = {**os.environ, **cluster.env, **exporting(receiver)}
        env[ratelimit.WINDOW_ENV] = str(window)
        agent = project / "answerer.agent"
        log = tmp_path / "worker.log"
        # A sweep (every minute here) may wake a thread between its run's end and the
        # wake-up that run enqueues: the sweep's is then given the link (tested below).
        cluster.workers.append(worker(agent, postgres_url, env, log, sweep="60", concurrency="4"))
        driver = Driver(cluster, model_server)
        try:
            wait_for(lambda: "worker: running" in log.read_text(), "the worker to start")

            async def launch() -> list[str]:
                async with driver.app.open_async():
                    ids = [
                        (await driver.runtime.launch(str(agent), f"q{i}", run=False)).id
                        for i in range(3)
                    ]
                    for thread_id in ids:
                        await driver.queue.wake(thread_id)
                    return ids

            ids = asyncio.run(launch())

            def finished(found: list[ReceivedSpan]) -> bool:
                return all(
                    any(s.attributes.get("twelvefold.thread.status") == "finished"
                        for s in of_thread(found, t))
                    for t in ids
                )  # fmt: skip

            received = receiver.wait_for(finished, timeout=180)
        finally:
            cluster.stop()
    launches = {
        s.attributes["gen_ai.conversation.id"]: s
        for s in exported.get_finished_spans()
        if s.name == "launch answerer"
    }
    later_runs = 0
    for thread_id in ids:
        launched: Any = launches[thread_id]
        trace_id = f"{launched.context.trace_id:032x}"
        launch_id = f"{launched.context.span_id:016x}"
        all_runs = [s for s in of_thread(received, thread_id) if s.name == "invoke_agent answerer"]
        assert {s.trace_id for s in of_thread(received, thread_id)} == {trace_id}, thread_id
        assert {r.parent_span_id for r in all_runs} == {launch_id}
        runs = worked(all_runs)
        # Each run's link names the run before it (the first has none), the last one
        # finished the thread; the ones before it gave their job back.
        (first,) = [r for r in runs if not r.links]
        chain = [first]
        while next_run := [r for r in runs if r.links == (chain[-1].span_id,)]:
            chain += next_run
        assert len(chain) == len(runs), [(r.span_id, r.links) for r in runs]
        statuses = [r.attributes["twelvefold.thread.status"] for r in chain]
        assert statuses == ["running"] * (len(chain) - 1) + ["finished"]
        assert [r.attributes["twelvefold.resumed"] for r in chain] == [False] + [True] * (
            len(chain) - 1
        )
        later_runs += len(chain) - 1
    assert later_runs >= 2, "the rate limit made two threads give their job back"


def worker(
    agent: Path,
    url: str,
    env: dict[str, str],
    log: Path,
    *,
    sweep: str = "1",
    concurrency: str = "2",
) -> subprocess.Popen[bytes]:
    """A real `twelvefold worker` process for `agent` on the PostgreSQL `url`, its output
    appended to `log`."""
    with log.open("ab") as out:
        command = [sys.executable, "-m", "twelvefold", "worker", str(agent), "--store", url,
                   "--concurrency", concurrency, "--sweep-seconds", sweep, "--grace", "1",
                   "--model", "gpt-4o-mini"]  # fmt: skip
        return subprocess.Popen(command, env=env, stdout=out, stderr=out)


def launch_as_serve_does(driver: Driver, agent: Path) -> str:
    """Store a thread of `agent` without running it and enqueue its wake-up (what `serve`
    does on PostgreSQL); its id."""

    async def launch() -> str:
        async with driver.app.open_async():
            thread_id = (await driver.runtime.launch(str(agent), "go", run=False)).id
            await driver.queue.wake(thread_id)
            return thread_id

    return asyncio.run(launch())


def finished(thread_id: str) -> Callable[[list[ReceivedSpan]], bool]:
    """Whether the spans received hold the run that finished the thread."""
    return lambda found: any(
        s.attributes.get("twelvefold.thread.status") == "finished"
        for s in of_thread(found, thread_id)
    )


HANGER = """
agent hanger { input string  start decide }
type Go { n: int }
type Done { n: int }
llm decide -> Go { prompt "decide.j2"  on Go -> hang }
tool hang(Go) -> Done = "hang_tools:hang" { next done }
final done(Done)
"""

HANG_TOOLS = '''
"""A keyed tool that says it started (ENTERED) and waits while HOLD exists (at most 120 s)."""
import os
import time
from pathlib import Path


def hang(value, idempotency_key):
    Path(os.environ["HANG_DIR"], "entered").write_text(idempotency_key)
    deadline = time.monotonic() + 120
    while Path(os.environ["HANG_DIR"], "hold").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"n": value.n + 1}
'''


@pytest.mark.postgres
def test_a_run_the_sweep_starts_after_a_worker_died_links_to_the_dead_run(
    tmp_path: Path, postgres_url: str, request: pytest.FixtureRequest
) -> None:
    """A worker is SIGKILLed in the middle of a keyed tool call; another worker's sweep
    wakes the thread once the dead one's lease lapsed (no wake-up carries any context).
    The dead run's span was never ended (nor exported), but its model call's span was,
    and the first event it appended names it (`run_trace`): the run the sweep starts is
    in the thread's trace and links to the dead run."""
    exported: InMemorySpanExporter = request.getfixturevalue("spans")
    project = tmp_path / "project"
    (project / "prompts").mkdir(parents=True)
    (project / "prompts" / "decide.j2").write_text("Go.\n{{ context }}\n")
    (project / "hanger.agent").write_text(HANGER)
    (project / "hang_tools.py").write_text(HANG_TOOLS)
    hang_dir = tmp_path / "hang"
    hang_dir.mkdir()
    (hang_dir / "hold").write_text("")
    with ScriptedOpenAI() as model_server, OtlpReceiver() as receiver:
        model_server.responder = lambda body: Reply(arguments={"n": 1})
        cluster = make_cluster(tmp_path, postgres_url, model_server)
        env = {**os.environ, **cluster.env, **exporting(receiver), "HANG_DIR": str(hang_dir)}
        agent = project / "hanger.agent"

        def start_worker(index: int) -> subprocess.Popen[bytes]:
            process = worker(agent, postgres_url, env, tmp_path / f"worker-{index}.log")
            cluster.workers.append(process)
            return process

        driver = Driver(cluster, model_server)
        try:
            first = start_worker(1)
            thread_id = launch_as_serve_does(driver, agent)
            wait_for(lambda: (hang_dir / "entered").exists(), "the tool call to start", 120)
            # The dead run's model call is exported before the kill (spans of the thread
            # that are not runs: the run itself is still open).
            dead_chat = receiver.wait_for(
                lambda found: any(s.name.startswith("chat") for s in of_thread(found, thread_id)),
                timeout=60,
            )
            first.kill()
            first.wait()
            (hang_dir / "hold").unlink()
            start_worker(2)
            received = receiver.wait_for(finished(thread_id), timeout=180)
            events = asyncio.run(driver.runtime.events(thread_id))
        finally:
            cluster.stop()
    (chat,) = [s for s in of_thread(dead_chat, thread_id) if s.name.startswith("chat")]
    dead_run = chat.parent_span_id
    (launched,) = [s for s in exported.get_finished_spans() if s.name == "launch hanger"]
    assert launched.context is not None
    trace_id = f"{launched.context.trace_id:032x}"
    runs = [s for s in of_thread(received, thread_id) if s.name == "invoke_agent hanger"]
    assert [r.span_id for r in runs] != [dead_run]  # the dead run was never exported
    # Usually one run; under load the sweep may also start one that finds the dead
    # worker's lease not yet lapsed and ends at once (`worked`), so the next links past
    # it to the latest run the log names. Every run is in the trace, every one that held
    # the lease links to the dead run or to another of these runs, and at least one links
    # to the dead run.
    assert runs
    assert {s.trace_id for s in of_thread(received, thread_id)} == {trace_id}
    assert {r.parent_span_id for r in runs} == {f"{launched.context.span_id:016x}"}
    runs = worked(runs)
    ids = {r.span_id for r in runs} | {dead_run}
    for resumed in runs:
        assert len(resumed.links) == 1 and resumed.links[0] in ids, resumed
        assert resumed.attributes["twelvefold.resumed"] is True
    assert any(r.links == (dead_run,) for r in runs)
    # The log names the dead run on the first event it appended (its model output).
    named_runs = [e.run_trace for e in events if e.run_trace]
    assert named_runs[0] is not None and named_runs[0].split("-")[2] == dead_run


@pytest.mark.postgres
def test_a_wake_up_pending_from_the_sweep_takes_the_context_of_the_run_that_stopped(
    tmp_path: Path, postgres_url: str
) -> None:
    """The sweep may wake a thread between the end of a run that gave its job back
    (`TurnLater`, nothing recorded) and the wake-up that run enqueues, which is then
    dropped (one pending wake-up per thread): the pending one is given its context, so the
    run it starts links to the stopped run all the same. On the real queue (PostgreSQL)."""
    import psycopg

    stopped = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    with ScriptedOpenAI() as model_server:
        cluster = make_cluster(tmp_path, postgres_url, model_server)
        driver = Driver(cluster, model_server)

        async def race() -> str:
            async with driver.app.open_async():
                thread_id = (await driver.runtime.launch(str(FIXTURES / "nap.agent"), "go",
                                                         run=False)).id  # fmt: skip
                await driver.queue.wake(thread_id)  # the sweep's: no context
                await driver.queue.wake(thread_id, delay=30, trace=stopped)  # the run's own
                return thread_id

        thread_id = asyncio.run(race())
    with psycopg.connect(postgres_url) as connection:
        rows = connection.execute(
            "SELECT args FROM procrastinate_jobs WHERE task_name = 'twelvefold.advance'"
            " AND status = 'todo' AND args->>'thread_id' = %s",
            (thread_id,),
        ).fetchall()
    assert [row[0] for row in rows] == [{"thread_id": thread_id, "trace": stopped}]


NAPPER = """
agent napper { input string  start decide }
type Nap { n: int }
llm decide -> Nap { prompt "decide.j2"  on Nap -> nap }
sleep nap(Nap) 2s next think
llm think -> Nap { prompt "decide.j2"  on Nap -> done }
final done(Nap)
"""


@pytest.mark.postgres
def test_the_run_a_workers_timer_job_starts_after_a_sleep_links_to_the_run_that_slept(
    tmp_path: Path, postgres_url: str, request: pytest.FixtureRequest
) -> None:
    """A real worker runs the thread until its `sleep`, which records nothing when it
    starts; the worker's timer job fires it 2 s later and runs the thread on. That run
    links to the run that began the sleep (named on the first event it appended)."""
    exported: InMemorySpanExporter = request.getfixturevalue("spans")
    project = tmp_path / "project"
    (project / "prompts").mkdir(parents=True)
    (project / "prompts" / "decide.j2").write_text("Go.\n{{ context }}\n")
    agent = project / "napper.agent"
    agent.write_text(NAPPER)
    with ScriptedOpenAI() as model_server, OtlpReceiver() as receiver:
        model_server.responder = lambda body: Reply(arguments={"n": 1})
        cluster = make_cluster(tmp_path, postgres_url, model_server)
        env = {**os.environ, **cluster.env, **exporting(receiver)}
        cluster.workers.append(worker(agent, postgres_url, env, tmp_path / "worker.log"))
        driver = Driver(cluster, model_server)
        try:
            thread_id = launch_as_serve_does(driver, agent)
            received = receiver.wait_for(finished(thread_id), timeout=180)
        finally:
            cluster.stop()
    (launched,) = [s for s in exported.get_finished_spans() if s.name == "launch napper"]
    assert launched.context is not None
    # A run woken beside the timer job (a sweep's wake-up) while the other held the lease
    # ends at once (`worked`): set aside, as in the tests above (CI met one here).
    runs = worked([s for s in of_thread(received, thread_id) if s.name == "invoke_agent napper"])
    (slept,) = [r for r in runs if r.attributes["twelvefold.thread.status"] == "waiting"]
    (woken,) = [r for r in runs if r.attributes["twelvefold.thread.status"] == "finished"]
    assert {s.trace_id for s in of_thread(received, thread_id)} == {
        f"{launched.context.trace_id:032x}"
    }
    assert slept.links == () and woken.links == (slept.span_id,)
    assert woken.attributes["twelvefold.resumed"] is True
