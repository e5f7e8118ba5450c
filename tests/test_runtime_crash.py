"""Crash safety and racing resumes, with real processes and a real SQLite file.

1. A counter thread is run by a child process that is SIGKILLed at a random moment, again
   and again; each new child resumes it. Afterwards no event is lost or duplicated and no
   tool that takes no idempotency key ran more often than the log says it started.
2. Two processes resume one waiting thread at the same moment: one wins, the other gets
   `Conflict`, and the deploy runs once.

Each check also runs against a deliberately broken store and must find the breakage: the
guarantees come from the store's atomic, sequence-guarded, durable append. The killed
thread runs on the loop's synchronous path (runtime/fastpath.py: `Runtime` in SQLite
commits each event on the caller's thread, `SqliteStore.append_events`), and the kill test
also runs with that append broken.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import signal
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.runtime_helpers import (
    EXAMPLES,
    FIXTURES,
    RecordingNotifier,
    ScriptedModel,
    counter_model,
    no_messages,
)
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.codec import Codec
from twelvefold.runtime.lease import Lease, LeaseHeld, LeaseLost
from twelvefold.runtime.store import Conflict, Head, Restored, SqliteStore
from twelvefold.runtime.types import (
    Approved,
    Event,
    ModelOutput,
    StepFailed,
    ToolResult,
    ToolStarted,
)

TARGET = 60
KILLS = 20
LEASE = 0.5
"""Seconds a killed child's lease lasts: the next child waits for it to lapse, then takes
the thread over (a live child renews it every third of that)."""
FORK = multiprocessing.get_context("fork")


class LazyCommitStore(SqliteStore):
    """Broken on purpose: commits every fourth append (a tempting speed-up), so a crash
    loses up to three appends the runtime believed durable."""

    pending = 0

    def append(
        self,
        thread_id: str,
        expected_seq: int,
        events: Sequence[Event],
        codec: Codec,
        head: Head,
        lease: Lease | None = None,
    ) -> None:
        with self._lock:
            if not self._db.in_transaction:
                self._db.execute("BEGIN IMMEDIATE")
            self._append(thread_id, expected_seq, events, codec, head, lease)
            self.pending += 1
            if self.pending % 4 == 0:
                self._db.execute("COMMIT")

    def close(self) -> None:
        if self._db.in_transaction:
            self._db.execute("COMMIT")
        super().close()

    def _transaction(self) -> Any:
        # Leases are taken and renewed inside the transaction left open, if there is one.
        return contextlib.nullcontext() if self._db.in_transaction else super()._transaction()


def commit_the_synchronous_path_lazily() -> None:
    """Broken on purpose, in the child only: `SqliteStore.append_events` itself, which
    `append_one` calls (so the synchronous path is still taken: it serves exactly
    `SqliteStore`), commits every fourth append as `LazyCommitStore` does, leaving the
    transaction open in between."""
    transaction, close = SqliteStore._transaction, SqliteStore.close

    def append_events(
        self: SqliteStore,
        thread_id: str,
        expected_seq: int,
        events: tuple[Event, ...],
        codec: Codec,
        state: Any,
        reducer: str | None,
        lease: Lease,
    ) -> None:
        head = Head(state.status, state.step, state, reducer, state.request)
        LazyCommitStore.append(self, thread_id, expected_seq, events, codec, head, lease)  # type: ignore[arg-type]

    def lazy_transaction(self: SqliteStore) -> Any:
        return contextlib.nullcontext() if self._db.in_transaction else transaction(self)

    def lazy_close(self: SqliteStore) -> None:
        if self._db.in_transaction:
            self._db.execute("COMMIT")
        close(self)

    SqliteStore.pending = 0  # type: ignore[attr-defined]
    SqliteStore.append_events = append_events  # type: ignore[method-assign]
    SqliteStore._transaction = lazy_transaction  # type: ignore[method-assign]
    SqliteStore.close = lazy_close  # type: ignore[method-assign]


class UnguardedStore(SqliteStore):
    """Broken on purpose: appends at the end of the log whatever the caller replayed."""

    def append(
        self,
        thread_id: str,
        expected_seq: int,
        events: Sequence[Event],
        codec: Codec,
        head: Head,
        lease: Lease | None = None,
    ) -> None:
        with self._lock, self._transaction():
            _, seq = self._position(thread_id)  # whatever the caller expected
            self._append(thread_id, seq, events, codec, head, lease)


class BarrierStore(SqliteStore):
    """Holds each process after it loaded the thread until the other one has too, so the
    two resumes really overlap; then lets the second take the thread's lease only after
    the first finished with it (`after`), so the second appends on what it loaded before
    the first moved the thread on: what only the sequence check can catch."""

    barrier: Any = None
    after: Any = None

    def acquire(self, thread_id: str, owner: str, seconds: float) -> Lease:
        if self.after is not None:
            self.after.wait(timeout=20)
        return super().acquire(thread_id, owner, seconds)

    def restore(self, thread_id: str, codec: Codec) -> Restored:
        restored = super().restore(thread_id, codec)
        if self.barrier is not None:
            self.barrier.wait(timeout=10)
        return restored


# ---- 1. kill -9 at random points ------------------------------------------------------


def counter_worker(
    store_class: type[SqliteStore],
    db: Path,
    cache: Path,
    thread_id: str,
    acks: int,
    breakage: Callable[[], None] | None = None,
) -> None:
    if breakage is not None:
        breakage()

    def acknowledge(thread: Any, event: Event) -> None:
        # Tell the parent each event the store has accepted: it must survive the kill.
        os.write(acks, f"{len(thread.events)}\n".encode())

    store = store_class(db)
    model = ScriptedModel(counter_model(TARGET, poke_every=3))
    rt = Runtime(
        store,
        model=model,
        messages=no_messages,
        cache_dir=cache,
        on_event=acknowledge,
        lease_seconds=LEASE,
    )
    for _ in range(50):
        try:
            view = rt.get(thread_id)
            if view.status == "failed":  # an interrupted call of a keyless tool: retry it
                rt.retry(thread_id, by="test")
            elif view.status == "running":
                rt.resume(thread_id)
            else:
                break
        except LeaseHeld:  # the killed child's lease: wait until it lapses, then take over
            while store.lease(thread_id) is not None:
                time.sleep(0.02)
        except LeaseLost:  # this child stalled past its lease: load the thread again
            continue
    store.close()
    os._exit(0)


def kill_again_and_again(
    store_class: type[SqliteStore],
    tmp_path: Path,
    seed: int,
    after_acks: int | None = None,
    breakage: Callable[[], None] | None = None,
) -> tuple[list[str], int]:
    """Run the counter thread to the end under SIGKILLs; return what went wrong and how
    many kills hit a running process. Kills land at random times, or, with `after_acks`,
    right after the child acknowledged that many appends (a point that does not depend
    on how loaded the machine is)."""
    db, cache, logs = tmp_path / "threads.db", tmp_path / "cache", tmp_path / "logs"
    logs.mkdir()
    os.environ["COUNTER_LOG"] = str(logs)
    os.environ["COUNTER_SLEEP"] = "0.0005"
    setup = store_class(db)
    rt = Runtime(setup, model=ScriptedModel([]), messages=no_messages, cache_dir=cache)
    agent = rt.agent(FIXTURES / "counter.agent")
    from twelvefold.runtime.loop import started

    thread_id = "counted"
    from twelvefold.runtime.store import ThreadInfo

    first = started(agent, "count")
    setup.create(
        ThreadInfo(thread_id, agent.name, agent.origin, "running", "decide", 1, "t", "t"),
        [first],
        agent.codec,
    )
    setup.close()

    chance = random.Random(seed)
    problems, killed = [], 0
    for attempt in range(KILLS + 3):
        read, write = os.pipe()
        child = FORK.Process(
            target=counter_worker, args=(store_class, db, cache, thread_id, write, breakage)
        )
        child.start()
        os.close(write)
        seen: list[int] = []
        with os.fdopen(read) as pipe:
            if attempt < KILLS:
                if after_acks is None:
                    child.join(chance.uniform(0.001, 0.012))
                else:
                    for line in pipe:  # blocks until the child acknowledges or exits
                        seen.append(int(line))
                        if len(seen) >= after_acks:
                            break
                if child.is_alive():
                    os.kill(child.pid or 0, signal.SIGKILL)
                    killed += 1
            child.join()  # the last few run to the end (an interrupted tool needs a retry)
            seen.extend(int(line) for line in pipe.read().split())
        acknowledged = max(seen, default=0)
        stored = sqlite3.connect(db).execute("SELECT max(seq) FROM events").fetchone()[0]
        if stored < acknowledged:
            problems.append(
                f"kill {attempt}: event {acknowledged} was acknowledged, {stored} stored"
            )
    return problems + audit(db, agent, thread_id, logs), killed


def audit(db: Path, agent: Any, thread_id: str, logs: Path) -> list[str]:
    problems = []
    store = SqliteStore(db)
    events = store.load(thread_id, agent.codec)
    store.close()
    seqs = [row[0] for row in sqlite3.connect(db).execute("SELECT seq FROM events ORDER BY seq")]
    if seqs != list(range(1, len(seqs) + 1)):
        problems.append(f"sequence numbers have gaps: {seqs}")
    try:
        state = agent.module.replay(events)
    except Exception as exc:
        return [*problems, f"the log does not replay: {exc}"]
    if state.status != "finished" or state.value.n != TARGET:
        problems.append(f"the thread did not finish at {TARGET}: {state}")
    counts = [e.result.n for e in events if isinstance(e, ToolResult)]
    if counts != list(range(1, TARGET + 1)):
        problems.append(f"tool results lost or duplicated: {counts}")
    decided = [e.output.n for e in events if isinstance(e, ModelOutput)]
    if decided != list(range(TARGET + 1)):
        problems.append(f"model outputs lost or duplicated: {decided}")
    bump_keys = {e.key for e in events if isinstance(e, ToolStarted) and e.step == "bump"}
    ran_with_keys = set(_lines(logs / "bump.log"))
    if ran_with_keys != bump_keys:
        problems.append(f"bump ran with keys {ran_with_keys ^ bump_keys} the log does not show")
    poke_starts = sum(isinstance(e, ToolStarted) and e.step == "poke" for e in events)
    poke_runs = len(_lines(logs / "poke.log"))
    if poke_runs > poke_starts:
        problems.append(f"poke (no idempotency key) ran {poke_runs} times for {poke_starts} starts")
    interrupted = [e for e in events if isinstance(e, StepFailed)]
    if any(e.step != "poke" or e.error.type != "Interrupted" for e in interrupted):
        problems.append(f"unexpected failures: {interrupted}")
    return problems


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_sigkill_at_random_points_loses_and_repeats_nothing(tmp_path: Path) -> None:
    problems, killed = kill_again_and_again(SqliteStore, tmp_path, seed=7)
    assert problems == []
    assert killed >= KILLS // 2, "most kills must land in the middle of a run"


def test_the_kill_test_catches_a_store_that_commits_lazily(tmp_path: Path) -> None:
    problems, _ = kill_again_and_again(LazyCommitStore, tmp_path, seed=7, after_acks=2)
    assert any("acknowledged" in p for p in problems), (
        "a store that loses appends in a crash must fail the kill test"
    )


def test_the_kill_test_catches_a_synchronous_path_that_commits_lazily(tmp_path: Path) -> None:
    problems, _ = kill_again_and_again(
        SqliteStore, tmp_path, seed=7, after_acks=2, breakage=commit_the_synchronous_path_lazily
    )
    assert any("acknowledged" in p for p in problems), (
        "a synchronous path that loses appends in a crash must fail the kill test"
    )


def test_the_killed_thread_runs_on_the_synchronous_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the kill test kills: every model and tool event of the counter thread is
    appended by the synchronous path (`SqliteStore.append_events`), none by the ordinary
    one; each model output that chose a tool call with the start of that call, but for
    each tool's first call (its module is imported once the output is stored). With an
    event hook, as in the kill test, `poke`'s outputs are stored alone: it takes no key."""
    appended: list[str] = []
    append_events = SqliteStore.append_events

    def counted(self: SqliteStore, *args: Any) -> None:
        appended.append("+".join(type(e).__name__ for e in args[2]))
        append_events(self, *args)

    monkeypatch.setattr(SqliteStore, "append_events", counted)
    store = SqliteStore(tmp_path / "threads.db")
    model = ScriptedModel(counter_model(5, poke_every=3))
    rt = Runtime(store, model=model, messages=no_messages, cache_dir=tmp_path / "cache")
    agent = rt.agent(FIXTURES / "counter.agent")
    view = rt.launch(agent, "count", thread_id="counted")
    assert view.status == "finished"
    events = [type(e).__name__ for e in rt.events("counted")]
    assert appended and "+".join(appended) == "+".join(e for e in events if e != "Started")
    first_calls = 2  # (`bump`, `poke`)
    assert appended.count("ModelOutput+ToolStarted") == events.count("ToolStarted") - first_calls
    assert appended.count("ModelOutput+ToolStarted") > 0
    rt.close()


# ---- 2. two resumes at once -------------------------------------------------------------


def approve_worker(
    store_class: type[SqliteStore],
    db: Path,
    cache: Path,
    thread_id: str,
    barrier: Any,
    results: Any,
    first_done: Any,
    second: bool,
) -> None:
    store = store_class(db)
    if isinstance(store, BarrierStore):
        store.barrier = barrier
        store.after = first_done if second else None
    model = ScriptedModel(lambda request: {"type": "DoneForNow", "message": "deployed"})
    rt = Runtime(store, model=model, notifier=RecordingNotifier(), cache_dir=cache)
    try:
        # Both processes decide the same pending request; the store lets one land.
        request = rt.get(thread_id).request
        rt.resume(thread_id, request=request, approve=True, by="ana", comment=str(os.getpid()))
        results.put("resumed")
    except Conflict as exc:
        results.put(f"conflict: {exc}")
    except Exception as exc:
        results.put(f"error: {type(exc).__name__}: {exc}")
    finally:
        if not second:
            first_done.set()
    results.close()
    results.join_thread()  # flush before os._exit skips the usual shutdown
    os._exit(0)


def race(store_class: type[SqliteStore], tmp_path: Path) -> list[str]:
    db, cache, ledger = tmp_path / "threads.db", tmp_path / "cache", tmp_path / "ledger.jsonl"
    os.environ["DEPLOYBOT_LEDGER"] = str(ledger)
    store = SqliteStore(db)
    model = ScriptedModel([{"type": "DeployBackend", "tag": "v1.2.3", "env": "production"}])
    rt = Runtime(store, model=model, notifier=RecordingNotifier(), cache_dir=cache)
    view = rt.launch(EXAMPLES / "deploybot.agent", "deploy v1.2.3 to production")
    agent = rt.agent(EXAMPLES / "deploybot.agent")
    store.close()
    assert view.waiting_for == "approval"

    barrier, results, first_done = FORK.Barrier(2), FORK.Queue(), FORK.Event()
    racer = type("Racer", (BarrierStore, store_class), {})
    children = [
        FORK.Process(
            target=approve_worker,
            args=(racer, db, cache, view.id, barrier, results, first_done, second),
        )
        for second in (False, True)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(20)
    outcomes = sorted(results.get(timeout=5) for _ in children)

    problems = []
    if [o.split(":")[0] for o in outcomes] != ["conflict", "resumed"]:
        problems.append(f"expected one resume and one conflict, got {outcomes}")
    store = SqliteStore(db)
    events = store.load(view.id, agent.codec)
    store.close()
    if sum(isinstance(e, Approved) for e in events) != 1:
        problems.append("the approval was applied twice")
    if len(_lines(ledger)) != 1:
        problems.append(f"deployed {len(_lines(ledger))} times")
    return problems


def test_two_processes_resuming_one_thread_one_wins_the_other_gets_a_conflict(
    tmp_path: Path,
) -> None:
    assert race(SqliteStore, tmp_path) == []


def test_the_race_test_catches_a_store_that_ignores_the_expected_sequence(tmp_path: Path) -> None:
    assert race(UnguardedStore, tmp_path) != []


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    for name in ("COUNTER_LOG", "COUNTER_SLEEP", "DEPLOYBOT_LEDGER"):
        # Set first, so the undo removes what the test sets in os.environ for its forked
        # children (a delenv of a missing name records nothing: it leaked to later tests).
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return lambda: None
