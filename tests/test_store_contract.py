"""The store contract, one suite for every store (memory, SQLite, PostgreSQL: the `store`
fixture of tests/support/stores.py): appends guarded by the expected sequence number,
listings, unknown threads, and ownership (issue 8, item 3): one lease at a time, a larger
fencing token with every new lease, takeover once a lease lapsed, and an append (or
renewal) under a lease that lapsed or was taken over refused with nothing written."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from tests.support.waiting import wait_for
from twelvefold.runtime.codec import Codec
from twelvefold.runtime.lease import LeaseHeld, LeaseLost
from twelvefold.runtime.store import (
    ChainedStore,
    Conflict,
    EventStore,
    Head,
    MemoryStore,
    SqliteStore,
    StoreError,
    ThreadInfo,
    ThreadNotFound,
    open_store,
)
from twelvefold.runtime.types import (
    Answer,
    Answered,
    ChildStarted,
    Forked,
    Started,
    State,
    ToolResult,
    Usage,
)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    """Each store in turn; PostgreSQL's in a fresh database (tests/support/postgres.py)."""
    if request.param == "memory":
        yield MemoryStore()
        return
    yield from _opened(request, tmp_path)


def _opened(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
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


def test_child_links_hold_only_the_links_both_logs_make(store: EventStore) -> None:
    """A parent's `ChildStarted` and its child's `Started` must name each other: a thread
    only named like a child, or a fork's copy of its original's link, is no child."""
    codec = Codec()
    link = ChildStarted(step="a", child="p~a-1")
    store.create(_info("p"), [Started(step="a", input="hi"), link], codec)
    store.create(_info("p~a-1"), [Started(step="a", input="hi", parent="p")], codec)
    store.create(_info("p~x"), [Started(step="a", input="hi")], codec)  # a user's own id
    store.create(_info("f"), [Started(step="a", input="hi"), link], codec)  # a fork's copy
    assert store.child_links() == {"p": ["p~a-1"]}  # type: ignore[attr-defined]


class _Reading(BaseModel):
    value: float


@pytest.mark.parametrize("constant", [math.nan, math.inf, -math.inf], ids=repr)
def test_an_event_holding_nan_still_counts_in_the_reports(
    store: EventStore, constant: float
) -> None:
    """rt17: a float NaN (or infinity) in a tool's result or an input is stored as the
    constant `NaN` (the codec's: JSON has none), which SQLite's and PostgreSQL's JSON
    readers refuse, so the reports skipped the whole event: its step, latency and cost,
    and a sub-agent's link to its parent, were not counted."""
    codec = Codec()
    usage = Usage(latency_ms=12.5, input_tokens=40, output_tokens=7, cost_usd=0.25)
    odd = ToolResult(step="a", at="2026-01-01T00:00:01Z", usage=usage,
                     result=_Reading(value=constant))  # fmt: skip
    link = ChildStarted(step="a", child="p~a-1")
    store.create(_info("p"), [Started(step="a", input={"v": constant})], codec)
    store.append("p", 1, [link, odd], codec, Head("running", "a"))
    child = Started(step="a", input={"v": constant}, parent="p")
    store.create(_info("p~a-1"), [child], codec)
    records = store.usage_records()["p"]  # type: ignore[attr-defined]
    assert [kind for kind, _, _ in records] == ["started", "child_started", "tool_result"]
    assert records[2] == ("tool_result", "2026-01-01T00:00:01Z", usage)
    assert store.child_links() == {"p": ["p~a-1"]}  # type: ignore[attr-defined]


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


# ---- agent versions and retention (docs/versions.md) ---------------------------------------


def test_versions_are_kept_by_digest_and_a_move_is_fenced_and_recorded(store: EventStore) -> None:
    codec = _thread(store)
    store.save_version("v1", "body one")
    store.save_version("v1", "another body")  # content-addressed: the first stays
    store.save_version("v2", "body two")
    assert (store.load_version("v1"), store.load_version("nope")) == ("body one", None)
    lease = store.acquire("t", "me", 60)
    with pytest.raises(Conflict):
        store.repin("t", 5, "v2", lease, at="x")
    with pytest.raises(StoreError, match="not in this store"):
        store.repin("t", 1, "v9", lease, at="x")
    store.repin("t", 1, "v1", lease, at="2026-01-01T00:00:00Z", by="ana")
    store.append("t", 1, [_answer("on v1")], codec, Head("running", "a"), lease)
    store.repin("t", 2, "v2", lease, at="2026-01-02T00:00:00Z")
    assert store.info("t").version == "v2"
    assert [(p.seq, p.from_version, p.to_version, p.by) for p in store.pins("t")] == [
        (1, None, "v1", "ana"),
        (2, "v1", "v2", None),
    ]
    store.release(lease)
    other = store.acquire("t", "someone else", 60)
    with pytest.raises(LeaseLost):
        store.repin("t", 2, "v1", lease, at="x")
    store.release(other)
    exported = store.export("t")
    assert exported.info.version == "v2" and len(exported.events) == 2
    assert [p.to_version for p in exported.pins] == ["v1", "v2"]
    assert codec.loads_event(exported.events[1]) == _answer("on v1")
    with pytest.raises(ThreadNotFound):
        store.pins("nope")


def test_only_ended_unheld_threads_are_deleted_and_unused_versions_go(store: EventStore) -> None:
    codec = _thread(store, "done")
    _thread(store, "live")
    store.save_version("v1", "one")
    store.save_version("v2", "two")
    for thread_id, version in [("done", "v1"), ("live", "v2")]:
        lease = store.acquire(thread_id, "me", 60)
        store.repin(thread_id, 1, version, lease, at="x")
        store.release(lease)
    ended = State(step="end", value=None, status="finished", input="hi", seq=2)
    store.append("done", 1, [_answer("end")], codec, Head("finished", "end", ended, "r"))
    assert store.delete("done", 1, ["finished"]) is False  # it holds 2 events now
    assert store.delete("live", 1, ["finished"]) is False  # it is running
    held = store.acquire("done", "me", 60)
    assert store.delete("done", 2, ["finished"]) is False  # someone holds it
    store.release(held)
    assert store.unused_versions() == []
    assert store.unused_versions(dropping=["done"]) == ["v1"]
    assert store.delete("done", 2, ["finished", "failed"]) is True
    with pytest.raises(ThreadNotFound):
        store.info("done")
    assert [i.id for i in store.threads()] == ["live"]
    assert store.delete_versions(["v1", "v2"]) == 1  # v2 is still named by "live"
    assert (store.load_version("v1"), store.load_version("v2")) == (None, "two")


def _set_version(store: EventStore, version: str | None) -> None:
    """Change thread `t`'s stored version behind the store's back, as someone with write
    access to the database could."""
    if isinstance(store, SqliteStore):
        import sqlite3

        with sqlite3.connect(store.path) as db:
            db.execute("UPDATE threads SET version = ? WHERE id = 't'", (version,))
        return
    import psycopg

    with psycopg.connect(store.url) as conn:  # type: ignore[attr-defined]
        conn.execute("UPDATE threads SET version = %s WHERE id = 't'", (version,))


def _seal_as_before_versions_were_sealed(store: EventStore) -> None:
    """Rewrite thread `t`'s head seal the way builds before the seal covered the version
    wrote it (the same fields, the version left out), as a store of those builds holds."""
    assert isinstance(store, ChainedStore)
    chain = store.chain
    if isinstance(store, SqliteStore):
        import sqlite3

        with sqlite3.connect(store.path) as db:
            seq, fmt, reducer, bodies = db.execute(
                "SELECT seq, format, reducer, (SELECT json_group_array(body) FROM"
                " (SELECT body FROM events e WHERE e.thread = t.num ORDER BY e.seq))"
                " FROM threads t WHERE id = 't'"
            ).fetchone()
            head = chain.head("t", json.loads(bodies))
            seal = chain.seal("t", seq, head, fmt, reducer)
            db.execute("UPDATE threads SET head_seal = ? WHERE id = 't'", (seal,))
        return
    import psycopg

    with psycopg.connect(store.url) as conn:  # type: ignore[attr-defined]
        seq, fmt, reducer, num = conn.execute(
            "SELECT seq, format, reducer, num FROM threads WHERE id = 't'"
        ).fetchone()
        bodies = [
            row[0]
            for row in conn.execute(
                "SELECT body FROM events WHERE thread = %s ORDER BY seq", (num,)
            ).fetchall()
        ]
        seal = chain.seal("t", seq, chain.head("t", bodies), fmt, reducer)
        conn.execute("UPDATE threads SET head_seal = %s WHERE id = 't'", (seal,))


def test_a_version_set_on_an_unpinned_thread_in_the_database_is_tampering(
    database_store: EventStore,
) -> None:
    """An unpinned thread's seal covers its missing version too: naming a version for it
    behind the store's back (so another reducer would replay its log) is refused."""
    from twelvefold.runtime.integrity import BrokenLog

    store = database_store
    codec = _thread(store)
    store.save_version("v1", "one")
    assert len(store.load("t", codec)) == 1
    _set_version(store, "v1")
    with pytest.raises(BrokenLog, match="cut or edited"):
        store.load("t", codec)


def test_a_pinned_thread_sealed_before_versions_were_sealed_still_loads(
    database_store: EventStore,
) -> None:
    """A store written before the head seal covered the version keeps its pinned threads
    readable (an upgrade must not strand them); the thread's next append seals its version,
    and from then on a version changed in the database is refused."""
    from twelvefold.runtime.integrity import BrokenLog

    store = database_store
    codec = _thread(store)
    store.save_version("v1", "one")
    lease = store.acquire("t", "me", 60)
    store.repin("t", 1, "v1", lease, at="x")
    store.release(lease)
    _seal_as_before_versions_were_sealed(store)
    assert len(store.load("t", codec)) == 1
    lease = store.acquire("t", "me", 60)
    store.append("t", 1, [_answer("after the upgrade")], codec, Head("running", "a"), lease)
    store.release(lease)
    assert len(store.load("t", codec)) == 2
    store.save_version("v2", "two")
    _set_version(store, "v2")
    with pytest.raises(BrokenLog, match="cut or edited"):
        store.load("t", codec)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    """The stores kept in a database someone could edit."""
    yield from _opened(request, tmp_path)


def test_a_version_changed_in_the_database_is_tampering(database_store: EventStore) -> None:
    """The head seal covers the version a thread is pinned to (it decides which reducer
    replays the log): changing it, or clearing it, makes the thread refuse to load, as an
    edited event does; a move by `repin` seals the new version."""
    from twelvefold.runtime.integrity import BrokenLog

    store = database_store
    codec = _thread(store)
    store.save_version("v1", "one")
    store.save_version("v2", "two")
    lease = store.acquire("t", "me", 60)
    store.repin("t", 1, "v1", lease, at="x")
    store.append("t", 1, [_answer("on v1")], codec, Head("running", "a"), lease)
    store.release(lease)
    assert len(store.load("t", codec)) == 2
    for edited in ("v2", None):
        _set_version(store, edited)
        with pytest.raises(BrokenLog, match="cut or edited"):
            store.load("t", codec)
    _set_version(store, "v1")  # put back: it loads again, and moves on by the book
    lease = store.acquire("t", "me", 60)
    store.repin("t", 2, "v2", lease, at="y")
    store.append("t", 2, [_answer("on v2")], codec, Head("running", "a"), lease)
    assert len(store.load("t", codec)) == 3
    _set_version(store, "v1")
    with pytest.raises(BrokenLog):
        store.load("t", codec)
    # A row whose seal was already broken is not sealed anew by a move.
    with pytest.raises(BrokenLog):
        store.repin("t", 3, "v2", lease, at="z")


def _server_rows(store: EventStore, statement: str, *args: str) -> list[tuple[str, ...]]:
    """Run `statement` (`?` placeholders) on the store's database, as the server's tables
    are written: the rows it returns, if any."""
    if isinstance(store, SqliteStore):
        import sqlite3

        with sqlite3.connect(store.path) as db:
            return [tuple(row) for row in db.execute(statement, args).fetchall()]
    import psycopg

    with psycopg.connect(store.url) as conn:  # type: ignore[attr-defined]
        cursor = conn.execute(statement.replace("?", "%s"), args)
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []


@pytest.mark.parametrize(
    "store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_deleted_thread_takes_its_slack_messages_and_keeps_its_launcher(
    store: EventStore,
) -> None:
    """Found by a review: `prune --delete` left a deleted thread's `slack_messages` rows
    behind. They go in the transaction that deletes it, as its reply targets do; who
    launched it (`server_launches`) and what it was forked from (`server_forks`) stay:
    the four-eyes rule for its forks reads them (docs/versions.md)."""
    codec = _thread(store, "done")
    _thread(store, "live")
    ended = State(step="end", value=None, status="finished", input="hi", seq=2)
    store.append("done", 1, [_answer("end")], codec, Head("finished", "end", ended, "r"))
    for thread_id, ts in [("done", "1.1"), ("done", "1.2"), ("live", "2.1")]:
        _server_rows(
            store,
            "INSERT INTO slack_messages (channel, ts, thread_id, request, title, closed)"
            " VALUES ('C1', ?, ?, 'r', 't', 0)",
            ts,
            thread_id,
        )
    _server_rows(
        store,
        "INSERT INTO server_launches (thread_id, person, via, at)"
        " VALUES ('done', 'ana', 'api', 'x')",
    )
    _server_rows(store, "INSERT INTO server_forks (thread_id, parent) VALUES ('fork', 'done')")
    assert store.delete("done", 2, ["finished"]) is True
    assert _server_rows(store, "SELECT thread_id, ts FROM slack_messages") == [("live", "2.1")]
    assert _server_rows(store, "SELECT thread_id, person FROM server_launches") == [("done", "ana")]
    assert _server_rows(store, "SELECT thread_id, parent FROM server_forks") == [("fork", "done")]


@pytest.mark.parametrize(
    "store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_deleted_fork_leaves_what_it_was_forked_from(store: EventStore) -> None:
    """Red team rt13: the four-eyes rule reads a fork's parent from its log, whoever made
    the fork; once `prune --delete` takes a fork's log, the forks made of it still lead
    back through it. The store keeps its parent (its last `forked` event's: a fork of a
    fork copies its parent's) in `server_forks`; a thread that is no fork leaves none."""
    codec = Codec()
    log = [
        Started(step="a", input="hi"),
        Forked(step="a", parent="root", parent_seq=1),
        Forked(step="a", parent="first", parent_seq=2),
        _answer("end"),
    ]
    for thread_id, events in [("second", log), ("plain", [log[0], log[3]])]:
        _thread(store, thread_id)
        ended = State(step="end", value=None, status="finished", input="hi", seq=len(events))
        store.append(thread_id, 1, events[1:], codec, Head("finished", "end", ended, "r"))
    assert store.delete("second", 4, ["finished"]) is True
    assert store.delete("plain", 2, ["finished"]) is True
    assert _server_rows(store, "SELECT thread_id, parent FROM server_forks") == [
        ("second", "first")
    ]
