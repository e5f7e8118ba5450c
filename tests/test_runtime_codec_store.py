"""The event codec (lossless at every prefix of a thread) and the stores' promises."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.runtime_helpers import EXAMPLES, RecordingNotifier, ScriptedModel
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.codec import Codec, CodecError
from twelvefold.runtime.schema import CURRENT
from twelvefold.runtime.store import (
    Conflict,
    Head,
    MemoryStore,
    SqliteStore,
    ThreadInfo,
)
from twelvefold.runtime.types import (
    Answered,
    ErrorInfo,
    Retried,
    Started,
    StepFailed,
    ToolStarted,
    Usage,
)

DEPLOYBOT = EXAMPLES / "deploybot.agent"


def a_varied_thread(tmp_path: Path) -> tuple[Runtime, str]:
    """A deploybot thread with every kind of event: outputs, tools, a failure, a
    rejection, an answer, an approval, a retry."""
    model = ScriptedModel(
        [
            {"type": "ListGitTags"},
            {"type": "DeployBackend", "tag": "v9", "env": "staging"},  # fails: no such tag
            {"type": "RequestMoreInformation", "question": "which tag?"},
            {"type": "DeployBackend", "tag": "v1.2.3", "env": "production"},
            {"type": "DeployBackend", "tag": "v1.2.2", "env": "production"},
            {"type": "DoneForNow", "message": "deployed v1.2.2 — ünïcode <ok>"},
        ]
    )
    rt = Runtime(
        MemoryStore(), model=model, notifier=RecordingNotifier(), cache_dir=tmp_path / "cache"
    )
    view = rt.launch(DEPLOYBOT, "deploy to production")
    assert view.waiting_for == "answer"
    view = rt.resume(view.id, request=view.request, answer="v1.2.3 please", by="ana")
    view = rt.resume(
        view.id, request=view.request, reject=True, comment="use v1.2.2 instead", by="carol"
    )
    view = rt.resume(view.id, request=view.request, approve=True, comment="go", by="ana")
    assert view.status == "finished", view
    return rt, view.id


def test_every_prefix_of_a_thread_round_trips_through_json(tmp_path: Path) -> None:
    rt, thread_id = a_varied_thread(tmp_path)
    events = rt.events(thread_id)
    agent = rt.agent(DEPLOYBOT)
    codec = agent.codec
    kinds = {type(e).__name__ for e in events}
    assert {"ModelOutput", "ToolResult", "StepFailed", "Answered", "Rejected", "Approved"} <= kinds
    for n in range(1, len(events) + 1):
        prefix = events[:n]
        text = [json.dumps(codec.encode_event(e)) for e in prefix]
        decoded = [codec.decode_event(json.loads(t)) for t in text]
        assert decoded == prefix
        state = agent.module.replay(prefix)
        assert agent.module.replay(decoded) == state
        assert codec.decode_state(json.loads(json.dumps(codec.encode_state(state)))) == state


def test_bookkeeping_events_and_typed_inputs_round_trip() -> None:
    codec = Codec()
    for event in [
        Started(step="s", input={"type": "not a tag", "value": 1}),
        Started(step="s", input=[1, 2.5, None, "x"]),
        StepFailed(
            step="s",
            at="2025-01-01T00:00:00Z",
            error=ErrorInfo("E", "m"),
            usage=Usage(1.5, 3, 4, 0.01),
        ),
        ToolStarted(step="s", key="k"),
        Retried(step="s", by="me"),
    ]:
        assert codec.loads_event(codec.dumps_event(event)) == event


def test_stored_text_is_plain_json_either_way() -> None:
    """Events are written by pydantic-core's serializer; the text must still be the JSON
    Python's json module reads, and text it wrote (older stores) must still decode."""
    codec = Codec()
    event = Started(
        step="s",
        at="2025-01-01T00:00:00.000001Z",
        input={"type": None, "big": 10**30, "inf": float("inf"), "tiny": 1e-05, "ü": "<é>"},
    )
    text = codec.dumps_event(event)
    assert "ü" in text and " " not in text  # compact, not ASCII-escaped
    assert codec.decode_event(json.loads(text)) == event
    assert codec.loads_event(json.dumps(codec.encode_event(event))) == event


def test_event_times_are_utc_iso_with_microseconds() -> None:
    from datetime import UTC, datetime

    from twelvefold.runtime.store import now_iso

    before = datetime.now(UTC)
    stamps = [now_iso() for _ in range(1000)]
    after = datetime.now(UTC)
    assert all(len(s) == 27 and s.endswith("Z") for s in stamps)
    moments = [datetime.fromisoformat(s.replace("Z", "+00:00")) for s in stamps]
    assert before <= moments[0] and moments == sorted(moments) and moments[-1] <= after
    assert stamps[0] == moments[0].isoformat(timespec="microseconds").replace("+00:00", "Z")


def test_event_times_are_right_across_seconds_and_a_clock_set_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `now_iso` formats the date and time once per second, and the text up to the
    # millisecond once per millisecond, and reuses them: each stamp must still name its own
    # second and millisecond (the next one, an earlier one after the clock was set back).
    from datetime import UTC, datetime

    from twelvefold.runtime import store

    nanos = [
        1_764_583_199_999_999_000,
        1_764_583_200_000_000_000,
        1_764_583_200_000_001_999,
        1_764_583_199_000_000_000,
        1_764_583_260_500_000_000,
        1_764_583_260_500_999_000,  # the last µs of a millisecond, then the next one's first
        1_764_583_260_501_000_000,
        1_764_583_260_500_998_000,  # set back within the second, by a millisecond
        7_000_000,
    ]
    clock = iter(nanos)
    monkeypatch.setattr(store.time, "time_ns", lambda: next(clock))
    for ns in nanos:
        expected = datetime.fromtimestamp(ns // 1000 / 1_000_000, UTC)
        assert store.now_iso() == expected.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), ns


def test_a_codec_that_does_not_know_the_types_refuses_instead_of_guessing(tmp_path: Path) -> None:
    rt, thread_id = a_varied_thread(tmp_path)
    typed = rt.agent(DEPLOYBOT).codec
    untyped = Codec()  # knows only Answer
    encoded = [typed.dumps_event(e) for e in rt.events(thread_id)]
    with pytest.raises(CodecError, match="unknown type `ListGitTags`"):
        [untyped.loads_event(text) for text in encoded]
    with pytest.raises(CodecError, match="unknown event kind"):
        untyped.loads_event('{"kind": "exploded", "step": "x"}')


# ---- stores -------------------------------------------------------------------------------


def _info(thread_id: str, at: str = "2025-01-01T00:00:00Z") -> ThreadInfo:
    return ThreadInfo(thread_id, "demo", "demo.agent", "running", "a", 1, at, at)


def _answered(text: str) -> Answered:
    from twelvefold.runtime.types import Answer

    return Answered(step="a", at="2025-01-02T00:00:00Z", answer=Answer(text=text))


def test_sqlite_store_is_one_durable_wal_file_shared_between_connections(tmp_path: Path) -> None:
    path = tmp_path / "threads.db"
    first, second = SqliteStore(path), SqliteStore(path)
    codec = Codec()
    first.create(_info("t"), [Started(step="a", input="hi")], codec)
    second.append("t", 1, [_answered("from the second")], codec, Head("running", "a"))
    with pytest.raises(Conflict):
        first.append("t", 1, [_answered("stale")], codec, Head("running", "a"))
    assert len(first.load("t", codec)) == 2
    mode = first._db.execute("PRAGMA journal_mode").fetchone()[0]
    sync = first._db.execute("PRAGMA synchronous").fetchone()[0]
    assert (mode, sync) == ("wal", 2)  # 2 is FULL


# ---- state snapshots (a cache beside the log) ----------------------------------------------


def _set_snapshot(
    db: Path, thread_id: str, sealed_by: SqliteStore | None, **fields: object
) -> None:
    """Replace the stored snapshot's fields by hand; re-seal it as the store would when
    `sealed_by` is given (someone who knows the chain's key), else leave the old seal."""
    import sqlite3

    with sqlite3.connect(db) as connection:
        (text,) = connection.execute(
            "SELECT snapshot FROM threads WHERE id = ?", (thread_id,)
        ).fetchone()
        edited = json.dumps({**json.loads(text), **fields})
        connection.execute("UPDATE threads SET snapshot = ? WHERE id = ?", (edited, thread_id))
        if sealed_by is not None:
            seal = sealed_by.chain.seal(thread_id, edited)
            connection.execute(
                "UPDATE threads SET snapshot_seal = ? WHERE id = ?", (seal, thread_id)
            )


def test_a_thread_resumes_from_its_snapshot_only_when_it_is_proven_for_the_log(
    tmp_path: Path,
) -> None:
    db = tmp_path / "threads.db"
    store = SqliteStore(db)
    model = ScriptedModel([{"type": "DeployBackend", "tag": "v1.2.3", "env": "production"}])
    rt = Runtime(store, model=model, notifier=RecordingNotifier(), cache_dir=tmp_path / "c")
    view = rt.launch(DEPLOYBOT, "deploy v1.2.3 to production")
    agent = rt.agent(DEPLOYBOT)
    events = rt.events(view.id)
    replayed = agent.module.replay(events)
    assert view.waiting_for == "approval" and agent.reducer is not None

    snapshot = store.snapshot(view.id)  # the last append left one, made from the whole log
    assert snapshot is not None and snapshot.seq == len(events) == replayed.seq
    assert agent.codec.decode_state(snapshot.state) == replayed
    assert rt.get(view.id).state == replayed

    # A snapshot sealed for exactly this log is used (so a wrong one that still carried a
    # good seal would be believed: only the key keeps it out, see test_runtime_integrity) ...
    import sqlite3

    with sqlite3.connect(db) as connection:
        (text,) = connection.execute("SELECT snapshot FROM threads").fetchone()
    original = json.loads(text)
    lie = agent.codec.encode_state(replace(replayed, step="done", status="finished"))
    _set_snapshot(db, view.id, store, state=lie)
    assert rt.get(view.id).state.status == "finished"
    # ... and ignored, the log replayed, when its seal does not hold, another reducer or
    # another runtime made it, or it was computed at another point of the log.
    _set_snapshot(db, view.id, None, state={**lie, "step": "elsewhere"})
    assert rt.get(view.id).state == replayed
    for wrong in (
        {"reducer": "another-reducer"},
        {"runtime": "0.0.1+elsewhere"},
        {"seq": len(events) - 1},
        {"head": "00" * 32},
        {"format": 99},
    ):
        _set_snapshot(db, view.id, store, **{**original, "state": lie})
        assert rt.get(view.id).state.status == "finished"
        _set_snapshot(db, view.id, store, **wrong)
        assert rt.get(view.id).state == replayed, wrong
    _set_snapshot(db, view.id, store, **original)

    # Going on writes a new one with each append.
    model.outputs.append({"type": "DoneForNow", "message": "deployed"})
    view = rt.resume(view.id, request=view.request, approve=True, by="ana")
    assert view.status == "finished"
    final = store.snapshot(view.id)
    assert final is not None and final.seq == view.seq
    assert agent.codec.decode_state(final.state) == agent.module.replay(rt.events(view.id))


def test_a_store_file_from_before_chains_is_upgraded_once_and_then_verified(
    tmp_path: Path,
) -> None:
    import sqlite3

    db = tmp_path / "old.db"
    with sqlite3.connect(db) as connection:
        connection.executescript(_SQLITE_SCHEMA_BEFORE_SNAPSHOTS)
        connection.execute(
            "INSERT INTO threads VALUES (1, 't', 'a', 'o', 'waiting', 'b', 2, 'x', 'x')"
        )
        codec = Codec()
        for seq, event in enumerate([Started(step="a", input="x"), _answered("a")], start=1):
            connection.execute(
                "INSERT INTO events VALUES (1, ?, ?)", (seq, codec.dumps_event(event))
            )
    store = SqliteStore(db)
    assert len(store.load("t", codec)) == 2  # chained when opened
    store.append("t", 2, [_answered("b")], codec, Head("waiting", "b"))
    assert store.snapshot("t") is None and len(store.load("t", codec)) == 3
    assert SqliteStore(db).load("t", codec) == store.load("t", codec)  # not upgraded twice
    with sqlite3.connect(db) as connection:
        versions = connection.execute("SELECT version FROM twelvefold_schema ORDER BY version")
        assert [v for (v,) in versions] == list(range(1, CURRENT + 1))  # each one recorded
        assert connection.execute("PRAGMA user_version").fetchone()[0] == CURRENT
        assert connection.execute("SELECT count(*) FROM events WHERE hash IS NULL").fetchone() == (
            0,
        )


_SQLITE_SCHEMA_BEFORE_SNAPSHOTS = """
CREATE TABLE threads (
    num INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, agent TEXT NOT NULL,
    origin TEXT NOT NULL, status TEXT NOT NULL, step TEXT NOT NULL, seq INTEGER NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL
);
CREATE TABLE events (
    thread INTEGER NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (thread, seq)
) WITHOUT ROWID;
"""
