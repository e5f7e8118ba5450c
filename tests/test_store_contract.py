"""The store contract, one suite for every store (memory, SQLite, PostgreSQL: the `store`
fixture of tests/support/stores.py): appends guarded by the expected sequence number,
listings, unknown threads, and ownership (issue 8, item 3): one lease at a time, a larger
fencing token with every new lease, takeover once a lease lapsed, and an append (or
renewal) under a lease that lapsed or was taken over refused with nothing written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.waiting import wait_for
from twelvefold.runtime.codec import Codec
from twelvefold.runtime.lease import LeaseHeld, LeaseLost
from twelvefold.runtime.store import (
    Conflict,
    EventStore,
    Head,
    MemoryStore,
    SqliteStore,
    ThreadInfo,
    ThreadNotFound,
    open_store,
)
from twelvefold.runtime.types import Answer, Answered, Started


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    """Each store in turn; PostgreSQL's in a fresh database (tests/support/postgres.py)."""
    if request.param == "memory":
        yield MemoryStore()
        return
    made = (
        SqliteStore(tmp_path / "threads.db")
        if request.param == "sqlite"
        else open_store(request.getfixturevalue("postgres_url"))
    )
    try:
        yield made
    finally:
        made.close()


def _info(thread_id: str, at: str = "2025-01-01T00:00:00Z") -> ThreadInfo:
    return ThreadInfo(thread_id, "demo", "demo.agent", "running", "a", 1, at, at)


def _answered(text: str) -> Answered:
    return Answered(step="a", at="2025-01-02T00:00:00Z", answer=Answer(text=text))


def _thread(store: EventStore, thread_id: str = "t") -> Codec:
    codec = Codec()
    info = ThreadInfo(thread_id, "a", "o", "running", "a", 1, "x", "x")
    store.create(info, [Started(step="a", input="hi")], codec)
    return codec


def _answer(text: str) -> Answered:
    return Answered(step="a", at="2026-01-01T00:00:00Z", answer=Answer(text=text))


def _until_lapsed(store: EventStore, thread_id: str) -> None:
    wait_for(lambda: store.lease(thread_id) is None, "the lease to lapse")


# ---- the log -------------------------------------------------------------------------------


def test_append_is_guarded_by_the_expected_sequence_number(store: EventStore) -> None:
    codec = Codec()
    store.create(_info("t1"), [Started(step="a", input="hi")], codec)
    store.append("t1", 1, [_answered("one"), _answered("two")], codec, Head("waiting", "b"))
    with pytest.raises(Conflict, match="expected 1 events, found 3"):
        store.append("t1", 1, [_answered("late")], codec, Head("running", "a"))
    assert [getattr(e, "answer", None) and e.answer.text for e in store.load("t1", codec)] == [  # type: ignore[attr-defined]
        None,
        "one",
        "two",
    ]
    info = store.info("t1")
    assert (info.status, info.step, info.seq) == ("waiting", "b", 3)


def test_threads_are_listed_by_status_most_recent_first(store: EventStore) -> None:
    codec = Codec()
    store.create(_info("old", "2025-01-01T00:00:00Z"), [Started(step="a", input="x")], codec)
    store.create(_info("new", "2025-01-03T00:00:00Z"), [Started(step="a", input="y")], codec)
    store.append("old", 1, [_answered("done")], codec, Head("finished", "end"))
    assert [i.id for i in store.threads()] == ["new", "old"]  # old's append is dated 01-02
    assert [i.id for i in store.threads("finished")] == ["old"]
    with pytest.raises(Conflict):
        store.create(_info("old"), [Started(step="a", input="again")], codec)


def test_unknown_threads_are_reported_by_id(store: EventStore) -> None:
    with pytest.raises(ThreadNotFound, match="nope"):
        store.load("nope", Codec())
    with pytest.raises(ThreadNotFound):
        store.append("nope", 0, [], Codec(), Head("running", "a"))
    with pytest.raises(ThreadNotFound):
        store.info("nope")


# ---- ownership -----------------------------------------------------------------------------


def test_one_lease_at_a_time_with_a_growing_fencing_token(store: EventStore) -> None:
    codec = _thread(store)
    first = store.acquire("t", "host:1:a", 60)
    with pytest.raises(LeaseHeld) as held:
        store.acquire("t", "host:2:b", 60)
    assert "host:1:a" in str(held.value) and first.until in str(held.value)
    assert store.lease("t") == first

    store.append("t", 1, [_answer("one")], codec, Head("running", "a"), first)
    with pytest.raises(LeaseHeld):  # an append without the lease while one is held
        store.append("t", 2, [_answer("stray")], codec, Head("running", "a"))
    renewed = store.renew(first, 120)
    assert renewed.token == first.token and renewed.expires > first.expires

    store.release(renewed)
    assert store.lease("t") is None
    second = store.acquire("t", "host:2:b", 60)
    assert second.token > first.token
    with pytest.raises(LeaseLost):  # the released lease is no longer good for anything
        store.append("t", 2, [_answer("late")], codec, Head("running", "a"), renewed)
    with pytest.raises(LeaseLost):
        store.renew(renewed, 60)
    store.release(renewed)  # releasing someone else's lease does nothing
    assert store.lease("t") == second
    assert len(store.load("t", codec)) == 2


def test_a_lapsed_lease_is_taken_over_and_fenced_off(store: EventStore) -> None:
    codec = _thread(store)
    stale = store.acquire("t", "host:1:a", 0.05)
    _until_lapsed(store, "t")
    with pytest.raises(LeaseLost, match="lapsed"):  # lapsed, even before anyone took over
        store.append("t", 1, [_answer("late")], codec, Head("running", "a"), stale)
    with pytest.raises(LeaseLost):
        store.renew(stale, 60)

    taker = store.acquire("t", "host:2:b", 60)
    assert taker.token == stale.token + 1
    with pytest.raises(LeaseLost, match="taken over by host:2:b"):
        store.append("t", 1, [_answer("late")], codec, Head("running", "a"), stale)
    assert len(store.load("t", codec)) == 1  # nothing was written
    store.append("t", 1, [_answer("mine")], codec, Head("running", "a"), taker)
    assert len(store.load("t", codec)) == 2


def test_a_thread_created_under_a_lease_is_held_from_its_first_event(store: EventStore) -> None:
    info = ThreadInfo("t", "a", "o", "running", "a", 1, "x", "x")
    lease = store.create(info, [Started(step="a", input="hi")], Codec(), owner="me", seconds=60)
    assert lease is not None and store.lease("t") == lease
    with pytest.raises(LeaseHeld, match="me"):
        store.acquire("t", "someone else", 60)
