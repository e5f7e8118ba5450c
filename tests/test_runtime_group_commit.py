"""Group commit (runtime/commits.py): the appends of several threads of one process share
one transaction, and each keeps every promise an append makes on its own.

1. Appends made while a commit is under way are committed together, in one transaction.
2. In a group, an append refused for its sequence number or its lease writes nothing and
   the others are stored.
3. An append returns only once its events can be read by another connection.
4. A process appending from many threads (half of them awaiting on an event loop) is
   SIGKILLed while it commits groups: every event it acknowledged is in the file, and
   every log verifies.
5. Callers on an event loop (`append_async`) share transactions the same way, are told
   only after the COMMIT, and an append cancelled before its group began writes nothing.

Each check also runs against a deliberately broken committer (acknowledging a group
before its COMMIT) where it can find the breakage.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import select
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.runtime_helpers import FIXTURES, ScriptedModel, no_messages
from tests.support.waiting import wait_for
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.commits import GroupCommit, Pending, _settle_futures
from twelvefold.runtime.lease import Lease, LeaseLost
from twelvefold.runtime.loop import Agent, started
from twelvefold.runtime.store import Conflict, Head, SqliteStore, ThreadInfo, now_iso
from twelvefold.runtime.types import Event, ModelOutput

FORK = multiprocessing.get_context("fork")
THREADS = 8
KILLS = 4


class EagerAcknowledgement(GroupCommit):
    """Broken on purpose: tells every member of a group it is stored before the COMMIT
    (a tempting way to keep callers from waiting on the disk)."""

    def _lead(self, group: list[Pending]) -> None:
        with self._changed:
            for item in group:
                item.done = True
            self._changed.notify_all()
        _settle_futures(group)  # and callers on event loops
        super()._lead(group)


class EagerStore(SqliteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.commits = EagerAcknowledgement(self._commit_group)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Agent:
    cache = tmp_path_factory.mktemp("cache")
    return Runtime(model=ScriptedModel([]), messages=no_messages, cache_dir=cache).agent(
        FIXTURES / "counter.agent"
    )


def new_thread(
    store: SqliteStore, agent: Agent, thread_id: str, *, owner: str | None = None
) -> Lease | None:
    at = now_iso()
    info = ThreadInfo(thread_id, agent.name, agent.origin, "running", "decide", 1, at, at)
    return store.create(info, [started(agent, "count")], agent.codec, owner=owner, seconds=60)


def an_event(agent: Agent, n: int) -> Event:
    return ModelOutput(step="decide", at=now_iso(), output=agent.spec.types["Bump"](n=n))


def append(
    store: SqliteStore, agent: Agent, thread_id: str, seq: int, lease: Lease | None = None
) -> None:
    store.append(
        thread_id, seq, [an_event(agent, seq)], agent.codec, Head("running", "decide"), lease
    )


def stored(db: Path, thread_id: str) -> int:
    """How many events another connection sees for the thread."""
    with sqlite3.connect(db) as other:
        (count,) = other.execute(
            "SELECT count(*) FROM events e JOIN threads t ON t.num = e.thread WHERE t.id = ?",
            (thread_id,),
        ).fetchone()
    return int(count)


def in_threads(work: Sequence[Callable[[], None]]) -> Iterator[threading.Thread]:
    for one in work:
        thread = threading.Thread(target=one, daemon=True)
        thread.start()
        yield thread


def held_then_released(store: SqliteStore, work: Sequence[Callable[[], None]]) -> None:
    """Run `work` from threads while the store's connection is busy, so that the first
    one leads a group of one (blocked on the connection) and all others wait for the
    next group; then let them go and wait for all."""
    with store._lock:
        threads = list(in_threads(work))
        wait_for(lambda: store.commits.waiting() == len(work) - 1, "the appends to queue up")
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()


# ---- 1. grouping ---------------------------------------------------------------------


def test_appends_made_during_a_commit_share_the_next_transaction(
    tmp_path: Path, agent: Agent
) -> None:
    store = SqliteStore(tmp_path / "threads.db")
    for i in range(THREADS):
        new_thread(store, agent, f"t{i}")
    before = store.commits.stats.groups
    held_then_released(store, [partial(append, store, agent, f"t{i}", 1) for i in range(THREADS)])
    stats = store.commits.stats
    assert stats.groups - before == 2  # the first alone, then all the others together
    assert stats.largest == THREADS - 1
    assert all(stored(tmp_path / "threads.db", f"t{i}") == 2 for i in range(THREADS))
    store.close()


# ---- 2. each append judged on its own ----------------------------------------------------


def test_a_refused_append_in_a_group_leaves_the_others_stored(tmp_path: Path, agent: Agent) -> None:
    db = tmp_path / "threads.db"
    store = SqliteStore(db)
    for name in ("first", "ok", "stale", "ok2"):
        new_thread(store, agent, name)
    held = new_thread(store, agent, "leased", owner="someone")
    assert held is not None
    lost = Lease(held.thread_id, "someone", held.token - 1, held.expires)  # an old token
    errors: dict[str, BaseException] = {}

    def attempt(thread_id: str, seq: int, lease: Lease | None = None) -> Callable[[], None]:
        def run() -> None:
            try:
                append(store, agent, thread_id, seq, lease)
            except (Conflict, LeaseLost) as exc:
                errors[thread_id] = exc

        return run

    work = [
        attempt("first", 1),
        attempt("ok", 1),
        attempt("stale", 5),  # it holds 1 event, not 5
        attempt("leased", 1, lost),
        attempt("ok2", 1),
    ]
    held_then_released(store, work)
    assert store.commits.stats.largest == 4
    assert isinstance(errors.pop("stale"), Conflict)
    assert isinstance(errors.pop("leased"), LeaseLost)
    assert errors == {}
    counts = {name: stored(db, name) for name in ("first", "ok", "stale", "leased", "ok2")}
    assert counts == {"first": 2, "ok": 2, "stale": 1, "leased": 1, "ok2": 2}
    for name in counts:  # every log still verifies against its sealed head
        assert len(store.restore(name, agent.codec).events) == counts[name]
    store.close()


# ---- 3. acknowledged means committed -------------------------------------------------


def seen_on_return(store: SqliteStore, agent: Agent, db: Path, seen: list[tuple[int, int]]) -> None:
    """Record (events expected, events another connection saw) right after each append
    returned, appends from THREADS threads grouped while the connection was busy."""
    for i in range(THREADS):
        new_thread(store, agent, f"t{i}")

    def one(i: int) -> Callable[[], None]:
        def run() -> None:
            append(store, agent, f"t{i}", 1)
            seen.append((2, stored(db, f"t{i}")))

        return run

    held_then_released(store, [one(i) for i in range(THREADS)])


def test_an_append_returns_only_after_its_commit(tmp_path: Path, agent: Agent) -> None:
    db = tmp_path / "threads.db"
    store = SqliteStore(db)
    seen: list[tuple[int, int]] = []
    seen_on_return(store, agent, db, seen)
    assert len(seen) == THREADS and all(want == got for want, got in seen)
    store.close()


@pytest.mark.parametrize("waiting", ["in threads", "on an event loop"])
def test_the_check_finds_an_acknowledgement_before_the_commit(
    tmp_path: Path, agent: Agent, waiting: str
) -> None:
    db = tmp_path / "threads.db"
    store = EagerStore(db)
    seen: list[tuple[int, int]] = []
    commit = store._commit_group

    def after_a_look(group: Sequence[Pending]) -> None:
        # The eagerly told callers look before the COMMIT, as they may on a loaded machine.
        if len(group) > 1:
            wait_for(lambda: len(seen) >= 1, "a caller told too early to look")
        commit(group)

    store.commits.run_group = after_a_look
    (seen_on_return if waiting == "in threads" else seen_on_return_async)(store, agent, db, seen)
    assert any(want != got for want, got in seen)
    store.close()


# ---- 4. SIGKILL while groups commit ------------------------------------------------------


def appending_worker(db: Path, cache: Path, acks: int) -> None:
    """THREADS threads, each appending to its own thread until killed; each append is
    acknowledged on the pipe (`thread events groups members`) after `append` returned."""
    store = SqliteStore(db)
    agent = Runtime(store, model=ScriptedModel([]), messages=no_messages, cache_dir=cache).agent(
        FIXTURES / "counter.agent"
    )
    lock = threading.Lock()

    def run(thread_id: str) -> None:
        seq = store.info(thread_id).seq
        while True:
            append(store, agent, thread_id, seq)
            seq += 1
            stats = store.commits.stats
            with lock:
                os.write(acks, f"{thread_id} {seq} {stats.groups} {stats.members}\n".encode())

    async def run_on_the_loop(thread_id: str) -> None:
        seq = store.info(thread_id).seq
        while True:
            event = [an_event(agent, seq)]
            await store.append_async(thread_id, seq, event, agent.codec, Head("running", "decide"))
            seq += 1
            stats = store.commits.stats
            with lock:
                os.write(acks, f"{thread_id} {seq} {stats.groups} {stats.members}\n".encode())

    async def on_the_loop(names: list[str]) -> None:
        await asyncio.gather(*(run_on_the_loop(name) for name in names))

    half = THREADS // 2
    for i in range(half):
        threading.Thread(target=run, args=(f"t{i}",), daemon=True).start()
    looped = [f"t{i}" for i in range(half, THREADS)]
    threading.Thread(target=asyncio.run, args=(on_the_loop(looped),), daemon=True).start()
    threading.Event().wait()


def a_line(reader: Any) -> str:
    """The next acknowledgement (a broken build may hang the child: not for ever here)."""
    ready, _, _ = select.select([reader], [], [], 90)
    assert ready, "no acknowledgement from the child for 90 s"
    return str(reader.readline())


def test_a_process_killed_during_group_commits_loses_no_acknowledged_event(
    tmp_path: Path, agent: Agent
) -> None:
    db, cache = tmp_path / "threads.db", tmp_path / "cache"
    setup = SqliteStore(db)
    for i in range(THREADS):
        new_thread(setup, agent, f"t{i}")
    # This process's committer threads are busy or idle now; a forked child has none.
    asyncio.run(
        setup.append_async("t0", 1, [an_event(agent, 1)], agent.codec, Head("running", "decide"))
    )
    setup.close()
    grouped = False
    acknowledged: dict[str, int] = {}
    for kill in range(KILLS):
        read, write = os.pipe()
        child = FORK.Process(target=appending_worker, args=(db, cache, write))
        child.start()
        os.close(write)
        assert child.pid is not None
        try:
            with os.fdopen(read, buffering=1) as reader:
                for _ in range(100 + 37 * kill):  # killed at a different point each time
                    line = a_line(reader)
                    assert line, "the child stopped before it was killed"
                    thread_id, seq, groups, members = line.split()
                    acknowledged[thread_id] = int(seq)
                    grouped = grouped or int(members) > int(groups)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.join(timeout=30)
        store = SqliteStore(db)
        for thread_id, seq in acknowledged.items():
            events = store.restore(thread_id, agent.codec).events  # its chain verifies
            assert len(events) >= seq, f"{thread_id}: {seq} acknowledged, {len(events)} stored"
        store.close()
    assert grouped, "no group held more than one append: group commit was not tested"


# ---- 5. callers on an event loop ---------------------------------------------------------


def on_a_loop_while_busy(
    store: SqliteStore, main: Callable[[], Any], ready: Callable[[], bool]
) -> None:
    """Run the coroutine `main()` on an event loop of its own thread while the store's
    connection is busy, until `ready()`; then let the connection go and wait for the
    loop to finish."""
    with store._lock:
        runner = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        runner.start()
        wait_for(ready, "the appends to queue up")
    runner.join(timeout=60)
    assert not runner.is_alive()


def seen_on_return_async(
    store: SqliteStore, agent: Agent, db: Path, seen: list[tuple[int, int]]
) -> int:
    """`seen_on_return` for appends awaited on an event loop; how many groups they made."""
    for i in range(THREADS):
        new_thread(store, agent, f"t{i}")
    before = store.commits.stats.groups

    async def one(i: int) -> None:
        event = [an_event(agent, 1)]
        await store.append_async(f"t{i}", 1, event, agent.codec, Head("running", "decide"))
        seen.append((2, stored(db, f"t{i}")))

    async def main() -> None:
        first = asyncio.ensure_future(one(0))
        await taken_by_a_committer()
        await asyncio.gather(first, *(one(i) for i in range(1, THREADS)))

    async def taken_by_a_committer() -> None:
        await asyncio.sleep(0)  # the first append is queued...
        while store.commits.waiting():  # ...and a committer took it (held by the connection)
            await asyncio.sleep(0.01)

    on_a_loop_while_busy(store, main, lambda: store.commits.waiting() == THREADS - 1)
    return store.commits.stats.groups - before


def test_appends_awaited_on_an_event_loop_share_a_transaction_and_return_after_it(
    tmp_path: Path, agent: Agent
) -> None:
    db = tmp_path / "threads.db"
    store = SqliteStore(db)
    seen: list[tuple[int, int]] = []
    assert seen_on_return_async(store, agent, db, seen) == 2  # the first alone, then the rest
    assert store.commits.stats.largest == THREADS - 1
    assert len(seen) == THREADS and all(want == got for want, got in seen)
    store.close()


def test_an_append_cancelled_before_its_group_began_writes_nothing(
    tmp_path: Path, agent: Agent
) -> None:
    db = tmp_path / "threads.db"
    store = SqliteStore(db)
    for name in ("kept", "dropped", "other"):
        new_thread(store, agent, name)
    outcomes: dict[str, object] = {}

    def append_async(thread_id: str) -> Any:
        event = [an_event(agent, 1)]
        return store.append_async(thread_id, 1, event, agent.codec, Head("running", "decide"))

    async def main() -> None:
        kept = asyncio.ensure_future(append_async("kept"))  # leads, held by the connection
        await asyncio.sleep(0)
        while store.commits.waiting():  # until a committer took it
            await asyncio.sleep(0.01)
        dropped = asyncio.ensure_future(append_async("dropped"))
        other = asyncio.ensure_future(append_async("other"))
        while store.commits.waiting() < 2:
            await asyncio.sleep(0.01)
        dropped.cancel()
        cancelled.set()
        results = await asyncio.gather(kept, dropped, other, return_exceptions=True)
        outcomes.update(zip(("kept", "dropped", "other"), results, strict=True))

    cancelled = threading.Event()
    on_a_loop_while_busy(store, main, cancelled.is_set)
    assert outcomes["kept"] is None and outcomes["other"] is None
    assert isinstance(outcomes["dropped"], asyncio.CancelledError)
    assert {name: stored(db, name) for name in outcomes} == {"kept": 2, "dropped": 1, "other": 2}
    store.close()


# ---- 6. what a commit writes -------------------------------------------------------------


def wal_frames(db: Path) -> int:
    """Pages written to the write-ahead log so far (its header: 32 bytes; each frame: a
    24-byte header and a page; https://sqlite.org/fileformat.html#the_write_ahead_log)."""
    wal = (db.parent / f"{db.name}-wal").read_bytes()
    page = int.from_bytes(wal[8:12], "big")
    return (len(wal) - 32) // (24 + page)


def test_an_append_that_keeps_the_status_writes_two_pages_and_listings_follow_changes(
    tmp_path: Path, agent: Agent
) -> None:
    db = tmp_path / "threads.db"
    store = SqliteStore(db)
    new_thread(store, agent, "t")
    written = []
    for seq, status in enumerate(("running", "waiting", "waiting", "running"), start=1):
        before = wal_frames(db)
        store.append("t", seq, [an_event(agent, seq)], agent.codec, Head(status, "decide"))
        written.append(wal_frames(db) - before)
        assert [info.id for info in store.threads(status)] == ["t"]
        assert store.info("t").status == status
    # The event's page and the thread's row; the status index's page only when it changes.
    assert written == [2, 3, 2, 3]
    store.close()
