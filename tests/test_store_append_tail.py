"""A SQLite store remembers where its last append left each thread (`_Tail`), and its next
append under the lease skips the read: one UPDATE checks in SQL that the row is as it was
left and the lease is live (runtime/store.py, `_append`). Here, two stores on one file
stand for two processes, and the row is edited the way time passing or another process
would change it: whatever the tail remembers, every check the full read makes still
holds, nothing is written by a refused append, and the chain proves the log after.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from twelvefold.runtime.codec import Codec
from twelvefold.runtime.lease import Lease, LeaseLost
from twelvefold.runtime.store import Conflict, Head, SqliteStore, ThreadInfo
from twelvefold.runtime.types import Answer, Answered, Started

CODEC = Codec()
RUNNING = Head("running", "a")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "threads.db"


@pytest.fixture
def store(db: Path) -> Iterator[SqliteStore]:
    made = SqliteStore(db)
    yield made
    made.close()


def answered(text: str) -> Answered:
    return Answered(step="a", at="2026-01-01T00:00:00Z", answer=Answer(text=text))


def held_thread(store: SqliteStore, appends: int = 2) -> Lease:
    """Thread `t` under a lease of `me`, with `appends` answers after its start."""
    info = ThreadInfo("t", "a", "o", "running", "a", 1, "x", "x")
    lease = store.create(info, [Started(step="a", input="hi")], CODEC, owner="me", seconds=600)
    assert lease is not None
    for n in range(appends):
        store.append("t", 1 + n, [answered(f"a{n}")], CODEC, RUNNING, lease)
    return lease


def statements_of(store: SqliteStore) -> list[str]:
    """The statements `store` runs from now on (filled in as it runs them)."""
    seen: list[str] = []
    store._db.set_trace_callback(seen.append)
    return seen


def edit(db: Path, sql: str, *args: object) -> None:
    with sqlite3.connect(db) as connection:
        connection.execute(sql, args)


def answers(store: SqliteStore) -> list[str]:
    events = SqliteStore(store.path).load("t", CODEC)  # a fresh store: the chain proved
    return [e.answer.text for e in events if isinstance(e, Answered)]


def test_appends_after_the_first_skip_the_read_and_the_chain_proves_them(
    store: SqliteStore,
) -> None:
    lease = held_thread(store, appends=1)
    statements = statements_of(store)
    for n in range(1, 5):
        store.append("t", 1 + n, [answered(f"a{n}")], CODEC, RUNNING, lease)
    assert not [s for s in statements if s.startswith("SELECT t.num")]
    assert answers(store) == [f"a{n}" for n in range(5)]


def test_a_lease_that_lapsed_refuses_the_next_append_and_writes_nothing(
    store: SqliteStore, db: Path
) -> None:
    lease = held_thread(store)
    edit(db, "UPDATE threads SET lease_until = 0")  # its time ran out
    with pytest.raises(LeaseLost, match="lapsed"):
        store.append("t", 3, [answered("late")], CODEC, RUNNING, lease)
    assert answers(store) == ["a0", "a1"] and store.info("t").seq == 3


def test_a_lease_taken_over_by_another_process_fences_off_the_old_holder(
    store: SqliteStore, db: Path
) -> None:
    lease = held_thread(store)
    edit(db, "UPDATE threads SET lease_until = 0")
    other = SqliteStore(db)
    taken = other.acquire("t", "other", 600)
    other.append("t", 3, [answered("theirs")], CODEC, RUNNING, taken)
    with pytest.raises(LeaseLost, match="taken over by other"):
        store.append("t", 3, [answered("mine")], CODEC, RUNNING, lease)
    with pytest.raises(LeaseLost):  # at the count the row has now, as well
        store.append("t", 4, [answered("mine")], CODEC, RUNNING, lease)
    other.append("t", 4, [answered("theirs again")], CODEC, RUNNING, taken)
    assert answers(store) == ["a0", "a1", "theirs", "theirs again"]
    other.close()


def test_a_count_other_than_the_rows_is_a_conflict(store: SqliteStore) -> None:
    lease = held_thread(store)
    with pytest.raises(Conflict):
        store.append("t", 2, [answered("stale")], CODEC, RUNNING, lease)
    store.append("t", 3, [answered("a2")], CODEC, RUNNING, lease)
    assert answers(store) == ["a0", "a1", "a2"]


def test_an_append_after_the_thread_was_moved_to_another_version_seals_that_version(
    store: SqliteStore,
) -> None:
    lease = held_thread(store)
    store.save_version("v2", "body two")
    store.repin("t", 3, "v2", lease, at="2026-01-02T00:00:00Z")
    store.append("t", 3, [answered("on v2")], CODEC, RUNNING, lease)
    assert answers(store) == ["a0", "a1", "on v2"]  # the row's seal covers the version
    assert store.info("t").version == "v2"


def test_a_status_changed_meanwhile_is_set_by_the_next_append(store: SqliteStore, db: Path) -> None:
    lease = held_thread(store)
    edit(db, "UPDATE threads SET status = 'waiting'")
    store.append("t", 3, [answered("a2")], CODEC, RUNNING, lease)
    assert store.info("t").status == "running"


def test_an_append_made_meanwhile_through_another_store_is_a_conflict(
    store: SqliteStore, db: Path
) -> None:
    lease = held_thread(store)  # this store's tail: 3 events
    other = SqliteStore(db)  # the same holder, through another connection
    other.append("t", 3, [answered("through the other")], CODEC, RUNNING, lease)
    with pytest.raises(Conflict):
        store.append("t", 3, [answered("mine")], CODEC, RUNNING, lease)
    store.append("t", 4, [answered("a2")], CODEC, RUNNING, lease)
    assert answers(store) == ["a0", "a1", "through the other", "a2"]
    other.close()


def test_a_thread_that_stops_running_leaves_no_tail_and_the_tails_are_bounded(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server runs threads for months: what it remembers of each stays bounded."""
    lease = held_thread(store)
    assert "t" in store._tails
    store.append("t", 3, [answered("last")], CODEC, Head("finished", "a"), lease)
    assert "t" not in store._tails
    assert answers(store) == ["a0", "a1", "last"]

    monkeypatch.setattr("twelvefold.runtime.store.MAX_TAILS", 3)
    for n in range(10):
        info = ThreadInfo(f"r{n}", "a", "o", "running", "a", 1, "x", "x")
        held = store.create(info, [Started(step="a", input="hi")], CODEC, owner="me", seconds=60)
        assert held is not None
        store.append(f"r{n}", 1, [answered("x")], CODEC, RUNNING, held)
        assert len(store._tails) <= 3
