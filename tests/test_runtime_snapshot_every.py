"""A running thread's snapshot is written every `SNAPSHOT_EVERY` events, not at every
append (runtime/store.py): loading such a thread proves the older snapshot against the
chain at its own point of the log, and reduces the events after it onto it.

The log is written the way the loop writes it (one append per event, each with the state
after it) into a real SQLite file; what is checked is what loading the thread believes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.runtime_helpers import FIXTURES, ScriptedModel, counter_model, no_messages
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.integrity import BrokenLog, Chain
from twelvefold.runtime.loop import Agent
from twelvefold.runtime.store import (
    SNAPSHOT_EVERY,
    Head,
    MemoryStore,
    SqliteStore,
    ThreadInfo,
    now_iso,
)
from twelvefold.runtime.types import Event

COUNTER = FIXTURES / "counter.agent"
THREAD = "count"
EVENTS = 2 * SNAPSHOT_EVERY + SNAPSHOT_EVERY // 2
"""Events of the running thread under test: past two snapshot points, then half more."""


@pytest.fixture(autouse=True)
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TWELVEFOLD_LOG_KEY", raising=False)
    monkeypatch.delenv("COUNTER_LOG", raising=False)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[tuple[Runtime, Agent, SqliteStore]]:
    store = SqliteStore(tmp_path / "threads.db")
    rt = Runtime(store, messages=no_messages, tool_paths=[FIXTURES], cache_dir=tmp_path / "c")
    yield rt, rt.agent(COUNTER), store
    rt.close()


def counter_log(tmp_path: Path, agent: Agent) -> list[Event]:
    """A finished counter thread's events, long enough to cut a running prefix from."""
    model = ScriptedModel(counter_model(EVENTS, poke_every=0))
    rt = Runtime(
        MemoryStore(),
        model=model,
        messages=no_messages,
        tool_paths=[FIXTURES],
        cache_dir=tmp_path / "c",
    )
    view = rt.launch(agent, "count")
    events = rt.events(view.id)
    assert len(events) > EVENTS
    return events


def written_as_the_loop_does(store: SqliteStore, agent: Agent, events: list[Event]) -> None:
    first = agent.module.replay(events[:1])
    at = now_iso()
    info = ThreadInfo(THREAD, agent.name, agent.origin, first.status, first.step, 1, at, at)
    store.create(info, events[:1], agent.codec, reducer=agent.reducer)
    state = first
    for seq, event in enumerate(events[1:], start=1):
        state = agent.module.reduce(state, event)
        head = Head(state.status, state.step, state, agent.reducer, state.request)
        store.append(THREAD, seq, [event], agent.codec, head)


def snapshot_row(db: Path) -> dict[str, object]:
    with sqlite3.connect(db) as connection:
        (text,) = connection.execute("SELECT snapshot FROM threads").fetchone()
    loaded: dict[str, object] = json.loads(text)
    return loaded


def write_snapshot(db: Path, data: dict[str, object]) -> None:
    """The snapshot column replaced and sealed with the plain hash (no key: anyone can)."""
    text = json.dumps(data)
    with sqlite3.connect(db) as connection:
        seal = Chain(None).seal(THREAD, text)
        connection.execute("UPDATE threads SET snapshot = ?, snapshot_seal = ?", (text, seal))


def test_a_running_thread_loads_from_an_older_snapshot_and_the_events_after_it(
    tmp_path: Path, runtime: tuple[Runtime, Agent, SqliteStore]
) -> None:
    rt, agent, store = runtime
    events = counter_log(tmp_path, agent)[:EVENTS]
    written_as_the_loop_does(store, agent, events)
    replayed = agent.module.replay(events)
    assert replayed.status == "running"

    restored = store.restore(THREAD, agent.codec)
    assert restored.events == events
    assert restored.snapshot is not None  # proven at its own point, not the log's end
    assert restored.snapshot.seq == 2 * SNAPSHOT_EVERY < len(events)
    assert rt.get(THREAD).state == replayed

    # The snapshot is used (a lie in it shows), and the events after it are reduced onto
    # it (their count shows): neither a replay nor the snapshot alone.
    data = snapshot_row(store.path)
    state = dict(data["state"])  # type: ignore[call-overload]
    write_snapshot(store.path, {**data, "state": {**state, "input": "a lie"}})
    assert rt.get(THREAD).state == replace(replayed, input="a lie")


@pytest.mark.parametrize(
    "claim",
    [
        {"seq": EVENTS},  # the whole log, yet sealed at an earlier head
        {"seq": 2 * SNAPSHOT_EVERY - 1},  # another point than its head
        {"seq": EVENTS + 1},  # past the log
        {"seq": 0},
        {"seq": "128"},
        {"head": "00" * 32},
    ],
)
def test_a_snapshot_claiming_another_point_of_the_log_is_not_believed(
    tmp_path: Path, runtime: tuple[Runtime, Agent, SqliteStore], claim: dict[str, object]
) -> None:
    rt, agent, store = runtime
    events = counter_log(tmp_path, agent)[:EVENTS]
    written_as_the_loop_does(store, agent, events)
    data = snapshot_row(store.path)
    lie = {**dict(data["state"]), "input": "a lie"}  # type: ignore[call-overload]
    write_snapshot(store.path, {**data, "state": lie})
    assert rt.get(THREAD).state.input == "a lie"  # believed where it holds ...
    write_snapshot(store.path, {**data, "state": lie, **claim})
    assert store.restore(THREAD, agent.codec).snapshot is None  # ... and not elsewhere
    assert rt.get(THREAD).state == agent.module.replay(events)


@pytest.mark.parametrize("seq", [SNAPSHOT_EVERY, EVENTS - 1])
def test_an_edited_event_before_or_after_the_snapshot_refuses_the_thread(
    tmp_path: Path, runtime: tuple[Runtime, Agent, SqliteStore], seq: int
) -> None:
    _, agent, store = runtime
    events = counter_log(tmp_path, agent)[:EVENTS]
    written_as_the_loop_does(store, agent, events)
    with sqlite3.connect(store.path) as connection:
        connection.execute(
            "UPDATE events SET body = replace(body, '\"at\":', '\"at\": ') WHERE seq = ?", (seq,)
        )
    with pytest.raises(BrokenLog):
        store.restore(THREAD, agent.codec)


def test_a_thread_that_stops_running_has_a_snapshot_of_its_whole_log(
    tmp_path: Path, runtime: tuple[Runtime, Agent, SqliteStore]
) -> None:
    _, agent, store = runtime
    events = counter_log(tmp_path, agent)
    assert len(events) % SNAPSHOT_EVERY != 0  # the last append is no snapshot point
    written_as_the_loop_does(store, agent, events)
    snapshot = store.snapshot(THREAD)
    assert snapshot is not None and snapshot.seq == len(events)
    assert agent.codec.decode_state(snapshot.state) == agent.module.replay(events)
