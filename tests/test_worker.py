"""Many `twelvefold worker` processes on a real job queue (procrastinate on PostgreSQL).

1. The crash test: 4 worker processes run about 40 threads (a keyed tool, a keyless one, an
   approval); workers are SIGKILLed at random moments and restarted. Every thread ends (a
   keyless call that may have run ends as interrupted and is retried, recorded); no event is
   lost or duplicated (every log verifies its hash chain and replays through the reducer);
   every keyed side effect happened under a key the logs hold, and every keyed result in a
   log has its effect. Run again with a deliberately broken lease (a store that grants every
   lease), it finds the breakage.
2. Two workers racing one thread: exactly one advances it.
3. A timer (an approval's `timeout`) survives a restart of every process.

The model is the real openai client against the scripted server on loopback.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.openai_server import Reply, ScriptedOpenAI
from tests.support.waiting import wait_for
from twelvefold.runtime.api import AsyncRuntime, RequestNotPending
from twelvefold.runtime.lease import LeaseError
from twelvefold.runtime.model import OpenAIModel
from twelvefold.runtime.store import Conflict, open_store
from twelvefold.runtime.types import StepFailed, ToolResult, ToolStarted
from twelvefold.server.queue import ADVANCE, TIMER, Queue, apply_schema, make_app

pytestmark = pytest.mark.postgres

FIXTURES = Path(__file__).parent / "worker_fixtures"
AGENT = FIXTURES / "crashbot.agent"
TARGET = 5
LEASE = "2"
BROKEN_LEASE = """
import sys
from twelvefold.runtime import pgstore
from twelvefold.runtime.store import Conflict
from twelvefold.cli import main

# Broken on purpose: every lease is granted and never checked, and an append that finds
# the thread moved on is written at its end anyway (a tempting "auto-rebase").
Store = pgstore.PostgresStore
pgstore.check_lease = lambda *args: None
original_append = Store.append

def granted(self, thread_id, owner, seconds):
    return pgstore.leases.Lease(thread_id, owner, 1, 1e12)

def rebasing(self, thread_id, expected_seq, events, codec, head, lease=None):
    try:
        original_append(self, thread_id, expected_seq, events, codec, head, lease)
    except Conflict as exc:
        original_append(self, thread_id, exc.actual_seq, events, codec, head, lease)

Store.acquire = granted
Store.renew = lambda self, lease, seconds: lease
Store.append = rebasing
sys.argv[0] = "twelvefold"
main()
"""


def crashbot(body: dict[str, Any]) -> Reply:
    """The scripted model: the crashbot's next choice from the results in its context
    (Bump, Bump, Poke, Ship after approval, Bump, Done at TARGET)."""
    context = "\n".join(
        str(m.get("content", "")) for m in body.get("messages", []) if m.get("role") == "user"
    )
    counts = [int(n) for n in re.findall(r"_result>n: (\d+)", context)]
    n = max(counts, default=0)
    kind = "Done" if n >= TARGET else "Ship" if n == 3 else "Poke" if n == 2 else "Bump"
    return Reply(arguments={"choice": {"type": kind, "n": n}})


@dataclass
class Cluster:
    """Worker processes over one store and one queue, and what the test does as a server."""

    store_url: str
    queue_url: str
    folder: Path
    env: dict[str, str]
    broken: bool = False
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_worker(self, index: int, agents: list[str] | None = None) -> subprocess.Popen[bytes]:
        entry = ["-c", BROKEN_LEASE] if self.broken else ["-m", "twelvefold"]
        places = agents or [str(AGENT)]
        command = [sys.executable, *entry, "worker", *places, "--store", self.store_url,
                   "--queue", self.queue_url, "--concurrency", "4", "--sweep-seconds", "1",
                   "--grace", "2", "--model", "gpt-4o-mini", "--path", str(FIXTURES)]  # fmt: skip
        with (self.folder / f"worker-{index}.log").open("ab") as log:
            process = subprocess.Popen(
                command, env={**os.environ, **self.env}, stdout=log, stderr=log
            )
        return process

    def stop(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.fixture
def openai_model_server() -> Iterator[ScriptedOpenAI]:
    with ScriptedOpenAI() as server:
        server.responder = crashbot
        yield server


def make_cluster(
    tmp_path: Path, postgres_url: str, server: ScriptedOpenAI, *, broken: bool = False
) -> Cluster:
    apply_schema(postgres_url)
    folder = tmp_path / "effects"
    folder.mkdir()
    env = {
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "test",
        "TWELVEFOLD_LEASE_SECONDS": LEASE,
        "CRASHBOT_DIR": str(folder),
        "CRASHBOT_SLEEP": "0.05",
        "TWELVEFOLD_DB": "",
    }
    store_url = store_url_for(tmp_path, postgres_url)
    return Cluster(store_url, postgres_url, tmp_path, env, broken=broken)


def store_url_for(tmp_path: Path, postgres_url: str) -> str:
    return postgres_url


class Driver:
    """What `serve` does on a PostgreSQL store: record, then enqueue (in this process)."""

    def __init__(self, cluster: Cluster, server: ScriptedOpenAI) -> None:
        self.cluster = cluster
        model = OpenAIModel(base_url=server.base_url, api_key="test", model="gpt-4o-mini")
        self.runtime = AsyncRuntime(open_store(cluster.store_url), model=model)
        self.app = make_app(cluster.queue_url)
        self.queue = Queue(self.app)

    async def launch(self, count: int) -> list[str]:
        ids = []
        async with self.app.open_async():
            for i in range(count):
                view = await self.runtime.launch(str(AGENT), f"thread {i}", run=False)
                await self.queue.wake(view.id)
                ids.append(view.id)
        return ids

    async def tend(self) -> Counter[str]:
        """Approve waiting threads and retry interrupted ones; how many threads stand."""
        standing: Counter[str] = Counter()
        async with self.app.open_async():
            for info in await self.runtime.threads():
                standing[info.status] += 1
                try:
                    if info.status == "waiting":
                        view = await self.runtime.get(info.id)
                        await self.runtime.resume(
                            info.id, approve=True, request=view.request, by="carol", run=False
                        )
                        await self.queue.wake(info.id)
                    elif info.status == "failed":
                        view = await self.runtime.get(info.id)
                        assert view.error is not None and view.error.type == "Interrupted", view
                        await self.runtime.retry(info.id, by="carol", run=False)
                        await self.queue.wake(info.id)
                except (LeaseError, Conflict, RequestNotPending):
                    pass  # a worker holds it or moved it on right now: next round
        return standing


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def stuck_report(cluster: Cluster, driver: Driver, ids: list[str]) -> str:
    """What holds up the threads of `ids` that have not finished: per thread its status,
    lease and wake-up jobs; the worker processes and procrastinate's registered workers.
    Said when a bounded wait gives up, so that a hang says why."""
    import psycopg

    lines = []
    with psycopg.connect(cluster.queue_url) as connection:
        for thread_id in ids:
            info = run(driver.runtime.info(thread_id))
            if info.status == "finished":
                continue
            lease = driver.runtime.store.lease(thread_id)  # type: ignore[attr-defined]
            jobs = connection.execute(
                "SELECT task_name, status::text, scheduled_at, worker_id FROM procrastinate_jobs"
                " WHERE args->>'thread_id' = %s ORDER BY id",
                (thread_id,),
            ).fetchall()
            lines.append(f"  thread {thread_id}: {info.status} at {info.step}, lease {lease}, "
                         f"jobs {jobs or 'none'}")  # fmt: skip
        registered = connection.execute(
            "SELECT id, now() - last_heartbeat FROM procrastinate_workers ORDER BY id"
        ).fetchall()
    alive = [p.poll() is None for p in cluster.workers]
    shown = lines[:20] + ([f"  ... and {len(lines) - 20} more"] if len(lines) > 20 else [])
    return "\n".join([f"{len(lines)} thread(s) not finished:", *shown,
                      f"worker processes alive: {alive}",
                      f"registered workers (id, heartbeat age): {registered}"])  # fmt: skip


def crash_and_check(
    cluster: Cluster, driver: Driver, threads: int, kills: int, limit: float = 300
) -> None:
    """Run `threads` threads on 4 workers, SIGKILLing one `kills` times at random moments
    (and starting it again), approving and retrying as a server would, until every thread
    finished; then check the logs. Gives up after `limit` seconds, or as soon as a worker
    exits that was not killed (nothing restarts it: a hang in waiting), saying what is
    stuck (`stuck_report`)."""
    rng = random.Random(os.environ.get("CRASH_SEED", "11"))
    cluster.workers = [cluster.start_worker(i) for i in range(4)]
    ids = run(driver.launch(threads))
    killed = 0
    deadline = time.monotonic() + limit
    while True:
        standing = run(asyncio.wait_for(driver.tend(), timeout=120))
        if standing["finished"] == threads:
            break
        for index, process in enumerate(cluster.workers):
            if process.poll() is not None:  # a worker stopped by itself: never restarted
                log = (cluster.folder / f"worker-{index}.log").read_text(errors="replace")
                raise AssertionError(
                    f"worker {index} exited with {process.returncode} on its own: "
                    f"{standing}\n{stuck_report(cluster, driver, ids)}\n{log[-3000:]}"
                )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"threads did not end within {limit:.0f} s: {standing}\n"
                + stuck_report(cluster, driver, ids)
            )
        time.sleep(rng.uniform(0.2, 1.0))
        if killed < kills:
            index = rng.randrange(len(cluster.workers))
            cluster.workers[index].send_signal(signal.SIGKILL)
            cluster.workers[index].wait()
            cluster.workers[index] = cluster.start_worker(index)
            killed += 1
    check_logs(cluster, driver, ids)


def check_logs(cluster: Cluster, driver: Driver, ids: list[str]) -> None:
    effects = (cluster.folder / "effects" / "effects.log").read_text().splitlines()
    keyed_effects = {line.split(" ", 1)[1] for line in effects if line.startswith("keyed ")}
    keyless_effects = sum(1 for line in effects if line.startswith("keyless "))
    logged_keys: set[str] = set()
    keyed_results: list[str] = []
    keyless_started = 0
    for thread_id in ids:
        # Loading verifies the hash chain and the sequence; replaying rejects an event the
        # reducer would not accept (a duplicate step).
        events = run(driver.runtime.events(thread_id))
        view = run(driver.runtime.get(thread_id))
        assert view.status == "finished" and view.output is not None, view
        assert view.output.n == TARGET, view.output
        starts = {}
        for event in events:
            if isinstance(event, ToolStarted):
                if event.step == "poke":  # the keyless tool (it is not given the key)
                    keyless_started += 1
                else:
                    logged_keys.add(event.key)
                    starts[event.step] = event.key
            if isinstance(event, ToolResult) and event.step in ("bump", "ship"):
                keyed_results.append(starts[event.step])
            if isinstance(event, StepFailed):
                assert event.error.type == "Interrupted", event
        assert len(keyed_results) == len(set(keyed_results)), "a keyed call recorded twice"
    assert keyed_effects <= logged_keys, "a side effect under a key no log holds (a lost event)"
    assert set(keyed_results) <= keyed_effects, "a recorded result without its side effect"
    assert keyless_effects <= keyless_started, "a keyless tool ran more often than it started"


def test_crash_four_workers_sigkilled(
    tmp_path: Path, postgres_url: str, openai_model_server: ScriptedOpenAI
) -> None:
    cluster = make_cluster(tmp_path, postgres_url, openai_model_server)
    driver = Driver(cluster, openai_model_server)
    try:
        crash_and_check(cluster, driver, threads=40, kills=8)
    finally:
        cluster.stop()


def test_crash_test_finds_a_broken_lease(
    tmp_path: Path, postgres_url: str, openai_model_server: ScriptedOpenAI
) -> None:
    """The same test against workers whose store grants every lease: two workers advance
    one thread at once and the check fails (or the threads never all end)."""
    cluster = make_cluster(tmp_path, postgres_url, openai_model_server, broken=True)
    cluster.env["CRASHBOT_SLEEP"] = "0.2"
    driver = Driver(cluster, openai_model_server)
    try:
        with pytest.raises(Exception) as caught:
            crash_and_check(cluster, driver, threads=12, kills=4, limit=90)
        print("the broken build was caught:", str(caught.value)[:300])
        # The broken workers did run threads (the failure is the check's, not a start-up's):
        # they called the model. (Whether a tool wrote its effect before the check failed
        # depends on where the kills fell.)
        assert openai_model_server.requests, caught.value
    finally:
        cluster.stop()


def test_two_workers_racing_one_thread_exactly_one_advances_it(
    tmp_path: Path, postgres_url: str, openai_model_server: ScriptedOpenAI
) -> None:
    """Two wake-ups of one thread (deferred without the queueing lock, as a retried
    stalled job would be) on two workers at once: the lease lets one advance it, so each
    model call and each tool call happens once."""
    cluster = make_cluster(tmp_path, postgres_url, openai_model_server)
    cluster.env["CRASHBOT_SLEEP"] = "0.3"
    driver = Driver(cluster, openai_model_server)

    async def launch_twice() -> str:
        async with driver.app.open_async():
            view = await driver.runtime.launch(str(AGENT), "race", run=False)
            for _ in range(2):
                await driver.app.configure_task(ADVANCE).defer_async(thread_id=view.id)
            return view.id

    thread_id = run(launch_twice())
    try:
        cluster.workers = [cluster.start_worker(i) for i in range(2)]
        wait_for(
            lambda: run(driver.runtime.info(thread_id)).status == "waiting",
            "the thread to reach its approval",
        )
        effects = (cluster.folder / "effects" / "effects.log").read_text().splitlines()
        assert len(effects) == 3, effects  # bump, bump, poke: once each
        assert len(openai_model_server.requests) == 4  # Bump, Bump, Poke, Ship
        run(driver.runtime.events(thread_id))  # the log verifies
    finally:
        cluster.stop()


def test_a_timer_survives_a_restart_of_every_worker(
    tmp_path: Path, postgres_url: str, openai_model_server: ScriptedOpenAI
) -> None:
    """A `sleep` is a scheduled job in PostgreSQL: the worker that scheduled it is killed,
    the job is still there, and a worker started after the moment passed fires it."""
    openai_model_server.responder = lambda body: Reply(
        arguments={"choice": {"type": "Nap", "n": 1}}
    )
    cluster = make_cluster(tmp_path, postgres_url, openai_model_server)
    napper = FIXTURES / "nap.agent"
    cluster_agent = [str(napper)]
    driver = Driver(cluster, openai_model_server)

    async def launch() -> str:
        async with driver.app.open_async():
            view = await driver.runtime.launch(str(napper), "nap", run=False)
            await driver.queue.wake(view.id)
            return view.id

    thread_id = run(launch())
    worker = cluster.start_worker(0, agents=cluster_agent)
    cluster.workers = [worker]
    try:
        import psycopg

        def timers() -> tuple[int, ...] | None:
            with psycopg.connect(postgres_url) as connection:
                return connection.execute(
                    "SELECT count(*) FROM procrastinate_jobs WHERE task_name = %s"
                    " AND status = 'todo' AND scheduled_at > now() AND args->>'thread_id' = %s",
                    (TIMER, thread_id),
                ).fetchone()

        # The worker records the pause, then schedules its timer: kill it once both are
        # done (a kill between them is covered by the next worker's start, which schedules
        # every waiting thread's timer).
        wait_for(
            lambda: run(driver.runtime.info(thread_id)).status == "waiting" and timers() == (1,),
            "the thread to nap with its timer scheduled",
        )
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        assert timers() == (1,)
        view = run(driver.runtime.get(thread_id))
        assert view.wake_at is not None
        wake_at = datetime.fromisoformat(view.wake_at.replace("Z", "+00:00"))
        wait_for(lambda: datetime.now(UTC) > wake_at, "the nap's end to pass with no worker")
        assert run(driver.runtime.info(thread_id)).status == "waiting"
        cluster.workers = [cluster.start_worker(1, agents=cluster_agent)]
        wait_for(
            lambda: run(driver.runtime.info(thread_id)).status == "finished",
            "the timer to fire on the restarted worker",
        )
    finally:
        cluster.stop()


def test_a_retry_backoff_is_a_timer_job_that_survives_a_restart_of_every_worker(
    tmp_path: Path, postgres_url: str, openai_model_server: ScriptedOpenAI
) -> None:
    """`retry 2 backoff 3s` on a keyless tool whose first attempt fails: the failed attempt
    is in the log (`AttemptFailed`) and the retry is a scheduled job; while it waits no
    job runs and nobody holds the thread's lease. The worker is killed, the due time
    passes with no worker, and a worker started afterwards retries it (once) and the
    thread finishes: the retry is not lost, and not run before its time."""
    from twelvefold.runtime.types import AttemptFailed
    from twelvefold.server.queue import RETRY

    openai_model_server.responder = lambda body: Reply(
        arguments={"choice": {"type": "Bump", "n": 1}}
    )
    cluster = make_cluster(tmp_path, postgres_url, openai_model_server)
    effects = tmp_path / "flaky"
    effects.mkdir()
    cluster.env["FLAKY_DIR"] = str(effects)
    flaky = [str(FIXTURES / "flaky.agent")]
    driver = Driver(cluster, openai_model_server)

    async def launch() -> str:
        async with driver.app.open_async():
            view = await driver.runtime.launch(flaky[0], "go", run=False)
            await driver.queue.wake(view.id)
            return view.id

    thread_id = run(launch())
    cluster.workers = [cluster.start_worker(0, agents=flaky)]
    try:
        import psycopg

        def jobs(status: str, task: str | None = None) -> int:
            with psycopg.connect(postgres_url) as connection:
                row = connection.execute(
                    "SELECT count(*) FROM procrastinate_jobs WHERE status = %s"
                    " AND (%s::text IS NULL OR task_name = %s) AND args->>'thread_id' = %s",
                    (status, task, task, thread_id),
                ).fetchone()
            return int(row[0]) if row else 0

        def backing_off() -> bool:
            events = run(driver.runtime.events(thread_id))
            return isinstance(events[-1], AttemptFailed) and jobs("todo", RETRY) == 1

        wait_for(backing_off, "the failed attempt to be recorded and its retry scheduled")
        wait_for(lambda: jobs("doing") == 0, "the worker to hold no job during the backoff")
        assert driver.runtime.store.lease(thread_id) is None
        cluster.workers[0].send_signal(signal.SIGKILL)
        cluster.workers[0].wait()
        failed = run(driver.runtime.events(thread_id))[-1]
        assert isinstance(failed, AttemptFailed) and failed.attempt == 1
        retry_at = datetime.fromisoformat(failed.retry_at).timestamp()
        wait_for(lambda: time.time() > retry_at + 1, "the retry's time to pass with no worker")
        assert len(attempts(effects)) == 1
        assert run(driver.runtime.info(thread_id)).status == "running"
        cluster.workers = [cluster.start_worker(1, agents=flaky)]
        wait_for(
            lambda: run(driver.runtime.info(thread_id)).status == "finished",
            "the restarted worker to retry the tool",
        )
        made = attempts(effects)
        assert len(made) == 2 and made[1] >= retry_at
        kinds = [type(e).__name__ for e in run(driver.runtime.events(thread_id))]
        assert kinds.count("AttemptFailed") == 1 and kinds.count("ToolStarted") == 2
        assert "StepFailed" not in kinds
    finally:
        cluster.stop()


def test_a_worker_sends_the_webhook_reply_of_a_thread_it_ended_once_retrying_a_failure(
    tmp_path: Path, postgres_url: str, openai_model_server: ScriptedOpenAI
) -> None:
    """A thread launched with a webhook reply (the server records the target) and run to
    its end by workers: the reply is a job. The receiver fails, the job is tried again
    later (durably: both workers are killed meanwhile, two new ones take it); once the
    receiver answers it gets the reply exactly once, with two workers running."""
    import psycopg

    from tests.support.receivers import HttpReceiver
    from twelvefold.server.queue import SETTLED, STALLED_WORKER_SECONDS
    from twelvefold.server.replies import ReplyTargets
    from twelvefold.server.tables import place_of

    openai_model_server.responder = lambda body: Reply(
        arguments={"choice": {"type": "Done", "n": 1}}
    )
    agent = flaky_project(tmp_path, '[server]\nwebhook_hosts = ["127.0.0.1"]\n')
    cluster = make_cluster(tmp_path, postgres_url, openai_model_server)
    cluster.env["FLAKY_DIR"] = str(tmp_path)
    driver = Driver(cluster, openai_model_server)
    receiver = HttpReceiver(status=503)
    targets = ReplyTargets(place_of(driver.runtime.store))

    async def launch() -> str:
        async with driver.app.open_async():
            view = await driver.runtime.launch(agent[0], "go", run=False)
            targets.add(view.id, "webhook", receiver.url("/hook"))
            await driver.queue.wake(view.id)
            return view.id

    def settled_jobs(status: str) -> int:
        with psycopg.connect(postgres_url) as connection:
            row = connection.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE task_name = %s AND status = %s",
                (SETTLED, status),
            ).fetchone()
        return int(row[0]) if row else 0

    thread_id = run(launch())
    cluster.workers = [cluster.start_worker(i, agents=agent) for i in range(2)]
    try:
        wait_for(lambda: len(receiver.received) >= 1, "the first reply (which the receiver fails)")
        assert run(driver.runtime.info(thread_id)).status == "finished"
        wait_for(lambda: settled_jobs("todo") == 1, "the failed reply job to be scheduled again")
        for worker in cluster.workers:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        failed = len(receiver.received)
        receiver.status = 200
        cluster.workers = [cluster.start_worker(i, agents=agent) for i in range(2, 4)]
        wait_for(
            lambda: (
                len(receiver.received) > failed
                and settled_jobs("todo") + settled_jobs("doing") == 0
            ),
            "the reply job to be tried again by a new worker and succeed",
            # On a loaded machine its retry may come due between the check above and
            # the kill: then it is a job of a dead worker, taken up once the worker's
            # heartbeat has been silent for STALLED_WORKER_SECONDS (60 s).
            limit=STALLED_WORKER_SECONDS + 90,
        )
        assert len(receiver.received) == failed + 1
        body = receiver.json(failed)
        assert body["type"] == "thread.settled" and body["thread"]["status"] == "finished"
        ids = {
            value
            for _, headers, _ in receiver.received
            for name, value in headers.items()
            if name.lower() == "webhook-id"
        }
        assert len(ids) == 1  # every attempt at one settle carries one id
        (target,) = targets.of(thread_id)
        assert target.replied_seq == run(driver.runtime.info(thread_id)).seq
    finally:
        cluster.stop()
        targets.close()
        receiver.server.shutdown()


def test_a_reply_whose_worker_was_killed_mid_send_is_sent_once_its_claim_lapsed(
    tmp_path: Path, postgres_url: str, openai_model_server: ScriptedOpenAI
) -> None:
    """Found by a review: a worker SIGKILLed while its reply job was sending left the
    target claimed, and the stalled job, retried, found it told: the reply was never
    sent. The claim is a lease; once it lapsed, a worker's sweep enqueues a reply job
    that sends it again, under the same `webhook-id`."""
    import psycopg

    from tests.support.receivers import HttpReceiver
    from twelvefold.server.replies import ReplyTargets
    from twelvefold.server.tables import place_of

    openai_model_server.responder = lambda body: Reply(
        arguments={"choice": {"type": "Done", "n": 1}}
    )
    agent = flaky_project(tmp_path, '[server]\nwebhook_hosts = ["127.0.0.1"]\n')
    cluster = make_cluster(tmp_path, postgres_url, openai_model_server)
    cluster.env["FLAKY_DIR"] = str(tmp_path)
    driver = Driver(cluster, openai_model_server)
    receiver = HttpReceiver()
    receiver.answering.clear()  # the first send stays open: the worker dies in it
    targets = ReplyTargets(place_of(driver.runtime.store))

    async def launch() -> str:
        async with driver.app.open_async():
            view = await driver.runtime.launch(agent[0], "go", run=False)
            targets.add(view.id, "webhook", receiver.url("/hook"))
            await driver.queue.wake(view.id)
            return view.id

    thread_id = run(launch())
    cluster.workers = [cluster.start_worker(0, agents=agent)]
    try:
        wait_for(lambda: len(receiver.received) == 1, "the reply to be under way")
        cluster.workers[0].send_signal(signal.SIGKILL)
        cluster.workers[0].wait()
        receiver.answering.set()
        (held,) = targets.of(thread_id)
        assert held.sending_until is not None and not held.lapsed  # under way, and held
        with psycopg.connect(postgres_url, autocommit=True) as connection:  # time passing
            connection.execute("UPDATE server_replies SET sending_until = sending_until - 1e5")
        cluster.workers = [cluster.start_worker(1, agents=agent)]
        wait_for(lambda: len(receiver.received) == 2, "the lapsed reply to be sent again")
        wait_for(lambda: targets.of(thread_id)[0].sending_until is None, "it to be marked sent")
        (target,) = targets.of(thread_id)
        assert target.replied_seq == held.replied_seq
        ids = [
            value
            for _, headers, _ in receiver.received
            for name, value in headers.items()
            if name.lower() == "webhook-id"
        ]
        assert len(ids) == 2 and ids[0] == ids[1]
    finally:
        cluster.stop()
        targets.close()
        receiver.server.shutdown()


def test_a_schedule_fires_once_across_two_workers_and_their_kill_and_restart(
    tmp_path: Path, postgres_url: str, openai_model_server: ScriptedOpenAI
) -> None:
    """Schedules run in every worker (and server) on PostgreSQL, and fire once per due
    time: an hourly schedule last fired three hours ago (everything was down) launches one
    thread when two workers start at once; both are killed, two more start, and the due
    time is not fired again."""
    from twelvefold.server.schedules import ScheduleRuns, fire_id

    openai_model_server.responder = lambda body: Reply(
        arguments={"choice": {"type": "Done", "n": 1}}
    )
    # Hourly at the minute half an hour from now: no new due time comes while the test
    # runs (with "0 * * * *", a run across the hour fired again, rightly).
    minute = (datetime.now(UTC).minute + 30) % 60
    hourly = f'[schedules.hourly]\nagent = "flaky"\ncron = "{minute} * * * *"\ninput = "go"\n'
    agent = flaky_project(tmp_path, hourly)
    cluster = make_cluster(tmp_path, postgres_url, openai_model_server)
    cluster.env["FLAKY_DIR"] = str(tmp_path)
    driver = Driver(cluster, openai_model_server)
    runs = ScheduleRuns(postgres_url)
    runs.fired("hourly", datetime.now(UTC) - timedelta(hours=3))

    def threads() -> list[Any]:
        return list(run(driver.runtime.threads()))

    def checked(indices: range) -> bool:
        logs = [(tmp_path / f"worker-{i}.log") for i in indices]
        return all(log.exists() and "schedules checked" in log.read_text() for log in logs)

    cluster.workers = [cluster.start_worker(i, agents=agent) for i in range(2)]
    try:
        wait_for(lambda: checked(range(2)), "both workers to check the schedules")
        wait_for(lambda: len(threads()) == 1 and threads()[0].status == "finished", "the fire")
        [fired] = threads()
        last = runs.last("hourly")
        assert last is not None and fired.id == fire_id("hourly", last)
        for worker in cluster.workers:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        cluster.workers = [cluster.start_worker(i, agents=agent) for i in range(2, 4)]
        wait_for(lambda: checked(range(2, 4)), "the restarted workers to check the schedules")
        assert [info.id for info in threads()] == [fired.id]
        assert runs.last("hourly") == last
    finally:
        cluster.stop()
        runs.close()


def test_workers_prune_on_the_retention_timer_once_across_workers(
    tmp_path: Path, postgres_url: str, openai_model_server: ScriptedOpenAI
) -> None:
    """`[tool.twelvefold.retention]` with `every = "1s"` and two workers: the finished
    threads are archived and deleted by the workers on their own, each archived once."""
    import json

    openai_model_server.responder = lambda body: Reply(
        arguments={"choice": {"type": "Done", "n": 1}}
    )
    retention = '[retention]\nfinished_after = "1s"\narchive = "archive.jsonl"\nevery = "1s"\n'
    agent = flaky_project(tmp_path, retention)
    cluster = make_cluster(tmp_path, postgres_url, openai_model_server)
    cluster.env["FLAKY_DIR"] = str(tmp_path)
    driver = Driver(cluster, openai_model_server)

    async def launch(count: int) -> list[str]:
        async with driver.app.open_async():
            ids = []
            for _ in range(count):
                view = await driver.runtime.launch(agent[0], "go", run=False)
                await driver.queue.wake(view.id)
                ids.append(view.id)
            return ids

    ids = run(launch(6))
    cluster.workers = [cluster.start_worker(i, agents=agent) for i in range(2)]
    try:
        wait_for(lambda: not run(driver.runtime.threads()), "the workers to prune every thread")
    finally:
        cluster.stop()
    lines = (Path(agent[0]).parent / "archive.jsonl").read_text().splitlines()
    archived = [json.loads(line)["thread_id"] for line in lines]
    assert sorted(archived) == sorted(ids)  # each thread once: no two prunes overlapped


def test_serve_on_postgresql_enqueues_and_a_worker_runs_the_thread(
    tmp_path: Path, postgres_url: str, openai_model_server: ScriptedOpenAI
) -> None:
    """`serve --store postgresql://…` runs nothing itself: a launch and a decision over
    HTTP are jobs that a `twelvefold worker` process takes."""
    import httpx

    from tests.support.serve_process import free_port

    cluster = make_cluster(tmp_path, postgres_url, openai_model_server)
    upgraded = subprocess.run(
        [sys.executable, "-m", "twelvefold", "db", "upgrade", "--store", postgres_url],
        capture_output=True, text=True, env={**os.environ, **cluster.env},
    )  # fmt: skip
    assert upgraded.returncode == 0, upgraded.stderr
    tokens = {}
    for person in ("bob", "ana"):
        made = subprocess.run(
            [sys.executable, "-m", "twelvefold", "token", "create", person, "--store",
             postgres_url], capture_output=True, text=True, check=True,
        )  # fmt: skip
        tokens[person] = {"Authorization": f"Bearer {made.stdout.strip()}"}
    port = free_port()
    command = [sys.executable, "-m", "twelvefold", "serve", str(AGENT), "--store", postgres_url,
               "--port", str(port), "--path", str(FIXTURES),
               "--model", "gpt-4o-mini"]  # fmt: skip
    log = (tmp_path / "serve.log").open("ab")
    server = subprocess.Popen(command, env={**os.environ, **cluster.env}, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert server.poll() is None, (tmp_path / "serve.log").read_text()
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, "the server to answer")
        launched = httpx.post(
            f"{url}/v1/agents/crashbot/threads", json={"input": "go"}, headers=tokens["bob"]
        )
        assert launched.status_code == 202, launched.text
        thread_id = launched.json()["thread_id"]

        def status() -> str:
            got = httpx.get(f"{url}/v1/threads/{thread_id}", headers=tokens["bob"]).json()
            return str(got["status"])

        # No worker yet: the server runs nothing, the thread waits in the queue.
        assert status() == "running"
        assert "enqueues" in (tmp_path / "serve.log").read_text()
        cluster.workers = [cluster.start_worker(0)]
        wait_for(lambda: status() == "waiting", "a worker to run the thread to its approval")
        request = httpx.get(f"{url}/v1/threads/{thread_id}", headers=tokens["ana"]).json()
        request = request["request"]
        decided = httpx.post(
            f"{url}/v1/threads/{thread_id}/decisions",
            json={"request": request, "decision": "approve"},
            headers=tokens["ana"],
        )
        assert decided.status_code == 200, decided.text
        wait_for(lambda: status() == "finished", "a worker to run the thread to its end")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        cluster.stop()


def flaky_project(tmp_path: Path, config: str) -> list[str]:
    """A copy of flaky.agent (and its prompts) in a project whose twelvefold.toml is
    `config`: the worker's argument list for it."""
    import shutil

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(FIXTURES / "flaky.agent", project)
    shutil.copytree(FIXTURES / "prompts", project / "prompts")
    (project / "twelvefold.toml").write_text(config)
    return [str(project / "flaky.agent")]


def attempts(folder: Path) -> list[float]:
    """The times flaky.agent's tool was attempted (Unix seconds; FLAKY_DIR/attempts.log)."""
    log = folder / "attempts.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [float(line.split()[1]) for line in lines]


def worker_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twelvefold", "worker", str(AGENT), *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_worker_that_cannot_reach_the_database_says_so_in_one_line() -> None:
    done = worker_cli("--store", "postgresql://nobody:pw@127.0.0.1:1/threads")
    assert done.returncode == 1
    assert done.stderr.startswith("error: the job queue's database cannot be reached")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert "pw@" not in done.stderr


BAD_CONFIG = """\
model_calls_in_flight = "8"
[prices.gpt]
input = true
output = 1
[retention]
finished_after = 30
[server]
public_url = 3
[schedules.nightly]
agent = "nobody"
cron = "0 0 * * *"
"""


def test_a_worker_reports_every_configuration_problem_before_it_connects(
    tmp_path: Path,
) -> None:
    """Before: the unreachable database was reported, and the configuration (read only
    once connected) one problem at a time after that was fixed."""
    agents = flaky_project(tmp_path, BAD_CONFIG)
    done = subprocess.run(
        [sys.executable, "-m", "twelvefold", "worker", *agents,
         "--store", "postgresql://nobody:pw@127.0.0.1:1/threads"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines), done.stderr
    assert "cannot be reached" not in done.stderr and "Traceback" not in done.stderr
    for said in [
        'model_calls_in_flight must be a whole number from 1 to 100,000, not "8"',
        "prices.gpt must be",
        "`retention.finished_after` must be an age like 30d (s, m, h, d or w), not 30",
        "public_url must be a string, not 3",
        'schedules.nightly names agent = "nobody"',
    ]:
        assert sum(said in line for line in lines) == 1, (said, done.stderr)


def test_a_worker_on_a_database_without_the_queue_schema_names_db_upgrade(
    postgres_url: str,
) -> None:
    done = worker_cli("--store", postgres_url)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: the database has no job queue schema, or an old one: run `twelvefold db upgrade"
        f" --store {postgres_url}`"
    ]


def test_a_worker_needs_postgresql(tmp_path: Path) -> None:
    done = worker_cli("--store", f"sqlite:///{tmp_path / 'threads.db'}")
    assert done.returncode == 1
    assert "postgresql://" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_sigterm_stops_a_worker_that_lets_its_leases_go(
    tmp_path: Path, postgres_url: str, openai_model_server: ScriptedOpenAI
) -> None:
    """SIGTERM mid-tool: the worker takes no more jobs, gives the run its grace, lets the
    thread's lease go and exits 0; the next worker runs the thread on at once (no lease to
    wait out)."""
    cluster = make_cluster(tmp_path, postgres_url, openai_model_server)
    cluster.env["CRASHBOT_SLEEP"] = "3"  # each tool call outlasts the grace (2 s)
    cluster.env["TWELVEFOLD_LEASE_SECONDS"] = "600"  # a lease left behind would block
    driver = Driver(cluster, openai_model_server)
    thread_id = run(driver.launch(1))[0]
    worker = cluster.start_worker(0)
    cluster.workers = [worker]
    try:
        wait_for(
            lambda: any(isinstance(e, ToolStarted) for e in run(driver.runtime.events(thread_id))),
            "the first tool call to start",
        )
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=120) == 0
        stopped = (cluster.folder / "worker-0.log").read_text()
        # The model client's connection pool was closed on the worker's loop as it stopped.
        assert "Unclosed" not in stopped and "Traceback" not in stopped, stopped
        assert driver.runtime.store.lease(thread_id) is None  # type: ignore[attr-defined]
        cluster.env["CRASHBOT_SLEEP"] = "0"
        cluster.workers.append(cluster.start_worker(1))
        wait_for(
            lambda: run(driver.runtime.info(thread_id)).status == "waiting",
            "the next worker to run the thread to its approval",
        )
    finally:
        cluster.stop()
