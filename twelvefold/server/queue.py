"""Threads run by workers on a job queue: procrastinate on PostgreSQL (docs/deploy.md).

With a PostgreSQL store, `twelvefold serve` records launches and decisions and enqueues a
job; `twelvefold worker` processes on any number of machines take the jobs and advance the
threads. Three kinds of job:

- `twelvefold.advance(thread_id)`, a wake-up: run the thread on until it waits, finishes or
  fails. At most one is pending (`todo`) per thread: its `queueing_lock` is
  `thread:ID` (procrastinate's unique index covers every job still to do, so a second
  wake-up while one is pending is dropped: the pending one covers it).
- `twelvefold.timer(thread_id, request, seq)`, a scheduled job (`schedule_at`): when a
  waiting thread's deadline passes (an approval or question `timeout`, a `sleep`, a
  `wait … timeout`) or a failed notice is due again, expire that one thread
  (`AsyncRuntime.expire_thread`). Each timer has its own lock, `timer:ID:REQUEST:SEQ`, never
  the thread's: a timer days ahead must not block the thread's wake-ups. A timer whose
  request is no longer pending, or whose thread moved on (`seq`), does nothing.
- `twelvefold.retry(thread_id, seq)`, a scheduled job: a tool attempt failed with a
  `retry … backoff` left (the log ends in `AttemptFailed`); at its `retry_at`, run the
  thread on. Its lock is `retry:ID:SEQ`; it does nothing once the thread moved on.

Correctness never comes from the queue. A job may run twice (a worker died after the
work and before procrastinate marked it done, or a stalled job is retried) or two jobs of
one thread may run at once on two machines: the thread's ownership lease
(runtime/lease.py) lets one process advance it, and the store's sequence check refuses an
append made on a stale log. procrastinate's own per-key `lock` is not used (it has open
reports of jobs stuck behind a lock whose holder died).

A worker killed with SIGKILL leaves its jobs `doing`; every worker, every
`sweep_seconds`, retries the jobs of workers whose heartbeat stopped for
`STALLED_WORKER_SECONDS` (`JobManager.get_stalled_jobs`) and enqueues a wake-up for every
thread still `running` in the store whose lease is free or lapsed and that no pending
wake-up covers, so a thread whose process died is picked up once its lease lapses (the
lease, not the job, says who runs a thread: a live worker's threads are never woken, and
the sweep's cost grows with the threads left behind, not with all the running ones).
The sweep also enqueues a reply job for each reply owed: one whose claim lapsed (its sender, a
worker or the server, was killed while sending it: server/replies.py, `CLAIM_SECONDS`);
the retried stalled job of a killed worker finds that claim still held and does nothing.

A thread whose model call's rate-limit turn is more than `DEFER_TURN_SECONDS` away
(runtime/ratelimit.py, limits shared by every worker through the store) gives its job
slot back: its run stops before the call (`TurnLater`, nothing recorded) and a wake-up is
scheduled for the moment its turn comes. That wake-up carries the stopped run's trace
context (`trace`, a W3C `traceparent`), since the log may not (a run that appended nothing):
the run it starts links to the stopped one (runtime/tracing.py, `after_run`). A wake-up
the sweep enqueued meanwhile is given that context instead (`Queue.wake`).

A worker's job loop that fails (the database went away for a moment; another worker
took it for dead and deleted its registration, after which procrastinate refuses its
next fetch) is started again after a pause, so a worker process never stops taking jobs
while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from twelvefold.runtime import timeouts, tracing
from twelvefold.runtime.integrity import LogError
from twelvefold.runtime.lease import LEASE_RETRY_SECONDS, LeaseHeld, LeaseLost
from twelvefold.runtime.loading import AgentLoadError
from twelvefold.runtime.ratelimit import TurnLater
from twelvefold.runtime.store import Conflict, ThreadNotFound
from twelvefold.runtime.types import Notified
from twelvefold.server.service import said_if_failed

if TYPE_CHECKING:
    import procrastinate

    from twelvefold.runtime.api import AsyncRuntime, ThreadView
    from twelvefold.runtime.loop import Agent

log = logging.getLogger("twelvefold.worker")

QUEUE = "twelvefold"
ADVANCE = "twelvefold.advance"
TIMER = "twelvefold.timer"
RETRY = "twelvefold.retry"
SETTLED = "twelvefold.settled"
PARKED = "twelvefold.parked"
"""Not work: the mark of a thread that cannot be loaded (`Work.advance`), a job scheduled
for `PARKED_UNTIL` that no worker takes. While it is there and the thread still holds
the events it was parked at, the sweep does not wake the thread (docs/deploy.md,
"Troubleshooting")."""
PARKED_UNTIL = datetime(9999, 1, 1, tzinfo=UTC)
SETTLED_ATTEMPTS, SETTLED_WAIT = 12, 2
"""A reply job that failed (a receiver down) is tried again 4, 8, 16 ... seconds later
(procrastinate's RetryStrategy; about 2 h 16 min in all), then given up (logged)."""
WORK = "twelvefold"
"""The key of the `Work` in a job's `additional_context`."""
DEFER_TURN_SECONDS = 1.0
"""A model call whose rate-limit turn is further away than this gives its job slot back
and is woken when the turn comes; a nearer turn is waited for in the job."""
HEARTBEAT_SECONDS = 2.0
"""How often a worker tells the queue it is alive."""
STALLED_WORKER_SECONDS = 60.0
"""How long a worker's heartbeat may be silent before other workers take it for dead,
delete its registration and retry its jobs. Generous: on a loaded machine a live worker's
heartbeat can lag by seconds, and a worker taken for dead while alive has its jobs run
twice (harmless: the lease decides) and its registration deleted. A dead worker's
threads do not wait for it: the sweep wakes them once their leases lapse."""
RESTART_SECONDS = (1.0, 30.0)
"""The pause before a failed job loop is started again: the first, and the longest
(doubling in between)."""


SCHEMA_PRESENT = (
    "SELECT to_regclass('procrastinate_jobs') IS NOT NULL"
    " AND to_regclass('procrastinate_workers') IS NOT NULL"
)
"""procrastinate 3's tables (`procrastinate_workers` came with 3.0: without it, an old schema)."""
NO_SCHEMA = "the database has no job queue schema, or an old one: run `twelvefold db upgrade"
"""The start of `check_schema_now`'s refusal; the `--store` of the database follows."""


class QueueUnavailable(Exception):
    """The queue's database cannot be reached, or has no (or an old) procrastinate schema;
    one line for the CLI."""


def thread_lock(thread_id: str) -> str:
    return f"thread:{thread_id}"


def timer_lock(thread_id: str, request: str | None, seq: int) -> str:
    return f"timer:{thread_id}:{request or '-'}:{seq}"


def retry_lock(thread_id: str, seq: int) -> str:
    return f"retry:{thread_id}:{seq}"


def settled_lock(thread_id: str, seq: int) -> str:
    return f"settled:{thread_id}:{seq}"


def make_app(conninfo: str, *, pool_size: int = 4) -> procrastinate.App:
    """A procrastinate app on `conninfo` (`postgresql://…`) with the two tasks registered
    (the tasks need a `Work` in the worker's `additional_context`). Open it with
    `async with app.open_async():`."""
    import procrastinate

    connector = procrastinate.PsycopgConnector(
        conninfo=conninfo, min_size=1, max_size=max(2, pool_size)
    )
    app = procrastinate.App(connector=connector)
    app.task(name=ADVANCE, queue=QUEUE, pass_context=True)(_advance_job)
    app.task(name=TIMER, queue=QUEUE, pass_context=True)(_timer_job)
    app.task(name=RETRY, queue=QUEUE, pass_context=True)(_retry_job)
    app.task(
        name=SETTLED,
        queue=QUEUE,
        pass_context=True,
        retry=procrastinate.RetryStrategy(
            max_attempts=SETTLED_ATTEMPTS, exponential_wait=SETTLED_WAIT
        ),
    )(_settled_job)
    app.task(name=PARKED, queue=QUEUE, pass_context=True)(_parked_job)
    return app


def check_schema_now(conninfo: str) -> None:
    """`QueueUnavailable` (one line) when the database cannot be reached or procrastinate's
    schema is not applied (`twelvefold db upgrade` applies it)."""
    import psycopg

    from twelvefold.runtime.store import StoreError, check_store_url, shown_url
    from twelvefold.runtime.terminal import one_line

    try:  # the store's own rule: a URL libpq would misread is refused before it connects
        check_store_url(conninfo)
    except StoreError as exc:
        raise QueueUnavailable(str(exc)) from None
    try:
        with psycopg.connect(conninfo, connect_timeout=10) as connection:
            row = connection.execute(SCHEMA_PRESENT).fetchone()
    except (psycopg.Error, OSError) as exc:
        # libpq's messages run over several lines, and may quote the URL.
        reason = shown_url(" ".join(str(exc).split()), secret_of=conninfo)
        raise QueueUnavailable(f"the job queue's database cannot be reached: {reason}") from None
    if not row or not row[0]:
        from twelvefold.runtime.schema import store_option

        option, note = store_option(shown_url(conninfo))  # the password left out
        raise QueueUnavailable(f"{NO_SCHEMA} {one_line(option)}`{note}")


def apply_schema(conninfo: str) -> bool:
    """Apply procrastinate's schema to `conninfo` unless it is there already (`twelvefold
    db upgrade`, and `serve` on a database with no queue yet). True when it was applied
    now. Checked and applied in one transaction under the store's upgrade lock
    (runtime/schema.py, `upgrade_lock`): several upgrades at once on an empty database
    apply it once (checked outside the lock, two of them both found it missing and the
    second failed on a type the first had made). A database with only part of it (an old
    procrastinate's) is left alone: `check_schema_now` refuses it."""
    import psycopg
    from procrastinate.schema import SchemaManager

    from twelvefold.runtime.schema import upgrade_lock

    with psycopg.connect(conninfo, connect_timeout=10) as connection:
        present = "SELECT to_regclass('procrastinate_jobs') IS NOT NULL"
        row = connection.execute(present).fetchone()
        connection.commit()
        if row and row[0]:
            return False
        with upgrade_lock(connection), connection.transaction():
            row = connection.execute(present).fetchone()
            if row and row[0]:
                return False
            # The schema is procrastinate's own SQL, run as it ships (no parameters: a
            # script of many statements, sent as one).
            connection.execute(SchemaManager.get_schema())
    return True


def parked_now(conninfo: str, places: Mapping[str, int]) -> dict[str, str]:
    """`Queue.parked` for a command without a queue open (`twelvefold threads`): which of
    the threads (id -> events it holds now) are marked as needing a person where they
    stand, and why. Empty when the database has no job queue or cannot say."""
    import psycopg

    if not places:
        return {}
    try:
        with psycopg.connect(conninfo, connect_timeout=10) as connection:
            row = connection.execute(SCHEMA_PRESENT).fetchone()
            if not row or not row[0]:
                return {}
            rows = connection.execute(
                "SELECT args->>'thread_id', args->>'seq', args->>'reason' FROM procrastinate_jobs"
                " WHERE task_name = %s AND status = 'todo' AND args->>'thread_id' = ANY(%s)",
                (PARKED, list(places)),
            ).fetchall()
    except psycopg.Error:
        return {}
    return {
        str(thread): str(why)
        for thread, seq, why in rows
        if str(places.get(str(thread))) == str(seq)
    }


class Queue:
    """The enqueuing side (`serve`, and workers themselves): wake-ups and timers."""

    def __init__(self, app: procrastinate.App) -> None:
        self.app = app

    async def wake(self, thread_id: str, *, delay: float = 0.0, trace: str | None = None) -> None:
        """Enqueue a wake-up of the thread (dropped when one is already pending). `trace`:
        the W3C `traceparent` of a run the log does not record (one stopped before a
        far-away rate-limit turn), which the run it wakes links to; when a wake-up is
        pending already (the sweep's, enqueued between that run's end and this call), it
        is given the `trace` instead, so the run it starts links all the same."""
        from procrastinate.exceptions import AlreadyEnqueued

        options: dict[str, Any] = {"queueing_lock": thread_lock(thread_id)}
        if delay > 0:
            options["schedule_in"] = {"seconds": delay}
        arguments: dict[str, Any] = {"thread_id": thread_id}
        if trace is not None:
            arguments["trace"] = trace
        try:
            await self.app.configure_task(ADVANCE, **options).defer_async(**arguments)
        except AlreadyEnqueued:
            if trace is not None:
                await self.app.connector.execute_query_async(
                    "UPDATE procrastinate_jobs"
                    " SET args = args || jsonb_build_object('trace', %(trace)s::text)"
                    " WHERE queueing_lock = %(lock)s AND task_name = %(task)s"
                    " AND status = 'todo'",
                    trace=trace,
                    lock=thread_lock(thread_id),
                    task=ADVANCE,
                )

    async def pending(self, thread_ids: list[str]) -> set[str]:
        """Which of the threads have a job waiting in the queue (`todo`) that will run
        them on: a wake-up, or the retry at the end of a tool's backoff (such a thread is
        `running` with no lease while it waits, and needs no sweep)."""
        if not thread_ids:
            return set()
        rows = await self.app.connector.execute_query_all_async(
            "SELECT DISTINCT args->>'thread_id' AS thread FROM procrastinate_jobs"
            " WHERE task_name = ANY(%(tasks)s) AND status = 'todo'"
            " AND args->>'thread_id' = ANY(%(ids)s)",
            tasks=[ADVANCE, RETRY],
            ids=thread_ids,
        )
        return {str(row["thread"]) for row in rows}

    async def park(self, thread_id: str, seq: int, reason: str) -> None:
        """Mark the thread as needing a person at `seq` events (`PARKED`): the sweep
        leaves it alone from now on, across restarts, until it moves on or the mark is
        deleted. One mark per thread and place (`parked:ID:SEQ`)."""
        from procrastinate.exceptions import AlreadyEnqueued

        deferrer = self.app.configure_task(
            PARKED, queueing_lock=f"parked:{thread_id}:{seq}", schedule_at=PARKED_UNTIL
        )
        with contextlib.suppress(AlreadyEnqueued):
            await deferrer.defer_async(thread_id=thread_id, seq=seq, reason=reason[:2000])

    async def parked(self, places: Mapping[str, int]) -> dict[str, str]:
        """Which of the threads (id -> how many events it holds now) are marked as
        needing a person where they stand (`park`), and why."""
        if not places:
            return {}
        rows = await self.app.connector.execute_query_all_async(
            "SELECT args->>'thread_id' AS thread, args->>'seq' AS seq, args->>'reason' AS why"
            " FROM procrastinate_jobs WHERE task_name = %(task)s AND status = 'todo'"
            " AND args->>'thread_id' = ANY(%(ids)s)",
            task=PARKED,
            ids=list(places),
        )
        return {
            str(row["thread"]): str(row["why"])
            for row in rows
            if str(places.get(str(row["thread"]))) == str(row["seq"])
        }

    async def time(self, view: ThreadView, agent: Agent) -> datetime | None:
        """Schedule the timer of a waiting thread's current wait, if it has one (a
        deadline, or a notice to try again), or of a running thread's tool retry at the
        end of its backoff. The moment it fires, or None."""
        if view.status == "running":
            return await self.retry(view)
        if view.status != "waiting":
            return None
        due = next_due(view, agent)
        if due is None:
            return None
        from procrastinate.exceptions import AlreadyEnqueued

        deferrer = self.app.configure_task(
            TIMER,
            queueing_lock=timer_lock(view.id, view.request, view.seq),
            schedule_at=due,
        )
        with contextlib.suppress(AlreadyEnqueued):
            await deferrer.defer_async(thread_id=view.id, request=view.request, seq=view.seq)
        return due

    async def retry(self, view: ThreadView) -> datetime | None:
        """Schedule the retry job of a running thread whose log ends in a tool attempt
        that failed (`AttemptFailed`): at its `retry_at`, under its own lock
        (`retry:ID:SEQ`, never the thread's). The moment, or None when none is due."""
        from procrastinate.exceptions import AlreadyEnqueued

        from twelvefold.runtime.loop import retry_due

        due = retry_due(view.log)
        if due is None:
            return None
        moment = datetime.fromtimestamp(due, UTC)
        deferrer = self.app.configure_task(
            RETRY, queueing_lock=retry_lock(view.id, view.seq), schedule_at=moment
        )
        with contextlib.suppress(AlreadyEnqueued):
            await deferrer.defer_async(thread_id=view.id, seq=view.seq)
        return moment

    async def settled(self, view: ThreadView) -> None:
        """Enqueue the `on_settled` work (replies, Slack) of a thread that settled at
        `view.seq` events: one job per settle (`settled:ID:SEQ`)."""
        await self.reply(view.id, view.seq)

    async def reply(self, thread_id: str, seq: int) -> None:
        """Enqueue a reply job for the thread as settled at `seq` events (dropped when
        one is pending for that settle already)."""
        from procrastinate.exceptions import AlreadyEnqueued

        deferrer = self.app.configure_task(SETTLED, queueing_lock=settled_lock(thread_id, seq))
        with contextlib.suppress(AlreadyEnqueued):
            await deferrer.defer_async(thread_id=thread_id, seq=seq)


def next_due(view: ThreadView, agent: Agent) -> datetime | None:
    """When the waiting thread's timer should fire: its deadline or its next notice,
    whichever is first (runtime/timeouts.py); None when it has neither."""
    state = view.state
    action = agent.module.next_action(state)
    moments = [
        moment
        for moment in (
            timeouts.deadline(state, action, view.log),
            timeouts.next_notice(state, action, view.log),
        )
        if moment is not None
    ]
    if not moments:
        return None
    return min(moments).astimezone(UTC)


@dataclass
class Work:
    """What a worker's jobs run with: the runtime, the served agents, the queue."""

    runtime: AsyncRuntime
    agents: Mapping[str, Agent]
    queue: Queue
    tell: Callable[[ThreadView], Awaitable[None]] | None = None
    """The `on_settled` callbacks of the server's replies and Slack app, run by the
    reply jobs (`Service.tell_settled`; raises when a reply failed); None: none."""
    owed: Callable[[], Awaitable[Mapping[str, int]]] | None = None
    """The threads owed a reply (`Replies.due_threads`: a claim whose sender was killed
    mid-send and lapsed since, or a thread that settled with no reply claimed), each with
    how far it was told: the sweep enqueues a reply job for each. None: none."""

    def __post_init__(self) -> None:
        # A tool retry's backoff holds no job: the run stops, a retry job runs it on.
        self.runtime.engine.wait_out_backoff = False
        # A thread waiting long for a rate-limit turn gives its job slot back.
        self.runtime.engine.defer_turns = DEFER_TURN_SECONDS

    async def advance(self, thread_id: str, trace: str | None = None) -> None:
        """Run the thread on (a wake-up). Another process holding its lease: try again in
        a moment. A thread this worker does not serve, or gone: nothing. `trace`: the run
        before this one, when the log does not record it (`Queue.wake`)."""
        try:
            info = await self.runtime.info(thread_id)
        except ThreadNotFound:
            return
        agent = self.agents.get(info.agent)
        if agent is None:
            log.warning("thread %s is of agent %s, which this worker does not run",
                        thread_id, info.agent)  # fmt: skip
            return
        if info.status != "running":
            await self._settled(thread_id, agent)
            return
        try:
            with tracing.after_run(thread_id, trace):
                view = await self.runtime.resume(thread_id, agent=agent)
        except (LogError, AgentLoadError) as exc:
            # Its log does not verify, or its version does not build or replay: running
            # it again cannot help. Said once, and the sweep stops waking it.
            log.error(
                "thread %s cannot be run and needs a person (the sweep leaves it alone"
                " from now on): %s: %s", thread_id, type(exc).__name__, exc,
            )  # fmt: skip
            await self.queue.park(thread_id, info.seq, f"{type(exc).__name__}: {exc}")
            return
        except LeaseHeld as held:
            log.info("%s", held)
            await self.queue.wake(thread_id, delay=LEASE_RETRY_SECONDS, trace=trace)
            return
        except TurnLater as later:
            await self.queue.wake(thread_id, delay=later.seconds, trace=later.trace)
            return
        except (LeaseLost, Conflict) as exc:  # another process took over: it goes on
            log.warning("%s", exc)
            return
        said_if_failed(log, view)
        await self.queue.time(view, agent)
        if view.status != "running" and self.tell is not None:
            await self.queue.settled(view)

    async def fire(self, thread_id: str, request: str | None, seq: int) -> None:
        """A timer: expire the thread if it still waits on the same request at the same
        place in its log; else nothing (its wait was decided, or it moved on)."""
        try:
            info = await self.runtime.info(thread_id)
        except ThreadNotFound:
            return
        agent = self.agents.get(info.agent)
        if agent is None or info.status != "waiting":
            return
        view = await self.runtime.get(thread_id, agent=agent)
        if view.request != request or (view.seq != seq and not _notices_only(view, seq)):
            return
        try:
            expiry = await self.runtime.expire_thread(thread_id, agent=agent)
        except LeaseHeld:
            await self.queue.wake(thread_id, delay=LEASE_RETRY_SECONDS)
            return
        except TurnLater as later:  # the expiry is recorded; the run goes on at its turn
            await self.queue.wake(thread_id, delay=later.seconds, trace=later.trace)
            return
        if expiry is not None and expiry.problem is not None:
            log.warning("thread %s: %s", thread_id, expiry.problem)
        moved = None if expiry is None or isinstance(expiry.event, Notified) else expiry.view
        if moved is not None and moved.status != "running" and self.tell is not None:
            await self.queue.settled(moved)  # it ran on to its end or its next pause
        await self._settled(thread_id, agent)

    async def tell_settled(self, thread_id: str, seq: int) -> None:
        """A reply job: run the `on_settled` callbacks on the thread as it stands, unless
        it is running again (its next settle has its own job). Raises when a reply
        failed, so procrastinate tries the job again later (`SETTLED_ATTEMPTS`)."""
        if self.tell is None:
            return
        with contextlib.suppress(ThreadNotFound):
            info = await self.runtime.info(thread_id)
            agent = self.agents.get(info.agent)
            if agent is None or info.status == "running":
                return
            await self.tell(await self.runtime.get(thread_id, agent=agent))

    async def retry(self, thread_id: str, seq: int) -> None:
        """A tool retry's backoff is over: run the thread on if it still stands where
        the retry was scheduled (`seq` events); else nothing (it was run on already)."""
        with contextlib.suppress(ThreadNotFound):
            info = await self.runtime.info(thread_id)
            if info.status == "running" and info.seq == seq:
                await self.advance(thread_id)

    async def _settled(self, thread_id: str, agent: Agent) -> None:
        """A thread not running: make sure its wait's timer is scheduled."""
        with contextlib.suppress(ThreadNotFound):
            view = await self.runtime.get(thread_id, agent=agent)
            if view.status == "running":
                await self.queue.wake(thread_id)
            else:
                await self.queue.time(view, agent)

    async def sweep(self) -> list[str]:
        """Retry the jobs of workers whose heartbeat stopped (`STALLED_WORKER_SECONDS`),
        and wake every thread still `running` that no process holds a lease on and no
        pending wake-up covers (its process died, or stopped before it enqueued the next
        one). The threads it woke."""
        manager = self.queue.app.job_manager
        woken: list[str] = []
        try:
            for job in await manager.get_stalled_jobs(
                seconds_since_heartbeat=STALLED_WORKER_SECONDS
            ):
                assert job.id is not None
                with contextlib.suppress(Exception):  # another worker retried it first
                    await manager.retry_job(job)
            running = await self.runtime.threads("running", unleased=True)
            left = [info.id for info in running if info.agent in self.agents]
            covered = await self.queue.pending(left)
            places = {i.id: i.seq for i in running if i.agent in self.agents}
            covered |= set(await self.queue.parked(places))  # they need a person
            for thread_id in left:
                if thread_id not in covered:
                    await self.queue.wake(thread_id)
                    woken.append(thread_id)
            if self.owed is not None and self.tell is not None:
                # A reply whose sender died (a worker, or the server, killed mid-send:
                # its retried stalled job found the claim still held), or one never
                # claimed (the thread moved on elsewhere): a new job sends it.
                for thread_id, seq in (await self.owed()).items():
                    with contextlib.suppress(ThreadNotFound):
                        if (await self.runtime.info(thread_id)).agent in self.agents:
                            await self.queue.reply(thread_id, seq)
        except Exception:
            log.exception("the worker's sweep failed; the next one tries again")
        return woken

    async def schedule_waiting(self) -> None:
        """Schedule the timers of every waiting thread (a worker starting: threads paused
        by the CLI, or before the queue existed)."""
        for info in await self.runtime.threads("waiting"):
            agent = self.agents.get(info.agent)
            if agent is None:
                continue
            with contextlib.suppress(Exception):
                view = await self.runtime.get(info.id, agent=agent)
                await self.queue.time(view, agent)


def _notices_only(view: ThreadView, seq: int) -> bool:
    """Whether what was appended since `seq` is only notices (the wait is the same one)."""
    from twelvefold.runtime.types import Notified

    return view.seq > seq and all(isinstance(e, Notified) for e in view.log[seq:])


async def _advance_job(context: Any, thread_id: str, trace: str | None = None) -> None:
    work: Work = context.additional_context[WORK]
    await work.advance(thread_id, trace)


async def _timer_job(context: Any, thread_id: str, request: str | None, seq: int) -> None:
    work: Work = context.additional_context[WORK]
    await work.fire(thread_id, request, seq)


async def _retry_job(context: Any, thread_id: str, seq: int) -> None:
    work: Work = context.additional_context[WORK]
    await work.retry(thread_id, seq)


async def _parked_job(context: Any, thread_id: str, seq: int, reason: str) -> None:
    """A mark, not work (`PARKED`): scheduled where no worker reaches it. If one is ever
    run, the mark is gone and the sweep may wake the thread again; nothing else."""


async def _settled_job(context: Any, thread_id: str, seq: int) -> None:
    work: Work = context.additional_context[WORK]
    await work.tell_settled(thread_id, seq)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""What stops a worker (gracefully)."""


async def run_worker(
    work: Work,
    *,
    concurrency: int,
    grace: float,
    sweep_seconds: float,
    name: str = "twelvefold",
    stopping: Callable[[int], None] | None = None,
) -> int:
    """Take jobs until SIGTERM or SIGINT (stop taking jobs, let running ones finish for
    `grace` seconds, then cancel them; a cancelled run lets its lease go); the signal
    that stopped it is returned, so that Ctrl-C ends the command as an interrupt and
    SIGTERM as a deploy's stop; `stopping` is called with the signal as it begins to stop. A second
    signal meanwhile is Python's own (Ctrl-C: `KeyboardInterrupt`). Sweeps every
    `sweep_seconds` meanwhile. A job loop that fails is started again after
    `RESTART_SECONDS` (logged): only a signal stops the worker."""

    async def sweeping() -> None:
        await work.schedule_waiting()
        while True:
            await work.sweep()
            await asyncio.sleep(sweep_seconds)

    stopped_by: list[int] = []
    """The signal that stopped the worker, once one did."""

    async def taking_jobs() -> None:
        pause = RESTART_SECONDS[0]
        while True:
            try:
                # Cancelled by a signal, procrastinate stops gracefully (`grace`) first.
                await work.queue.app.run_worker_async(
                    queues=[QUEUE],
                    concurrency=concurrency,
                    name=name,
                    shutdown_graceful_timeout=grace,
                    additional_context={WORK: work},
                    update_heartbeat_interval=HEARTBEAT_SECONDS,
                    stalled_worker_timeout=STALLED_WORKER_SECONDS,
                    fetch_job_polling_interval=min(5.0, sweep_seconds),
                    delete_jobs="successful",
                    install_signal_handlers=False,  # ours, below: which signal it was
                )
                return
            except Exception as exc:
                if stopped_by:
                    # Stopping: a signal's cancellation that landed as procrastinate opened
                    # or closed its pool comes out as an error of that pool (`PoolClosed`),
                    # the cancellation itself consumed. No failure, and no restart: that
                    # would take jobs again and never stop.
                    return
                # Its running jobs were let finish (or cancelled) before it raised.
                # procrastinate says "Database error." and keeps the reason as the cause.
                reason = exc.__cause__ or exc
                log.error("the worker's job loop failed (%s: %s); it starts again in %.0f s",
                          type(reason).__name__, " ".join(str(reason).split()), pause)  # fmt: skip
                await asyncio.sleep(pause)
                pause = min(RESTART_SECONDS[1], pause * 2)

    loop = asyncio.get_running_loop()
    jobs = asyncio.create_task(taking_jobs(), name="twelvefold jobs")

    def stop(signum: int) -> None:
        stopped_by.append(signum)
        for each in STOP_SIGNALS:  # the next one is Python's own
            loop.remove_signal_handler(each)
        if stopping is not None:
            stopping(signum)
        jobs.cancel()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop, signum)
    sweeper = asyncio.create_task(sweeping(), name="twelvefold sweep")
    try:
        try:
            await jobs
        except asyncio.CancelledError:
            if not stopped_by:  # this task was cancelled, not the jobs by a signal
                raise
    finally:
        if not stopped_by:
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)
        jobs.cancel()
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
    return stopped_by[0] if stopped_by else 0
