"""The loop's synchronous path (runtime/fastpath.py): an in-memory, untraced thread's
routine model and tool calls are performed by plain calls. It must record exactly the
log the ordinary path records, be taken when it may, and never when it may not.

The ordinary path is run here with a `MemoryStore` subclass (the synchronous path takes
only `MemoryStore` itself): the same agent, model, tools and thread id otherwise. The same
holds in SQLite (a `SqliteStore` subclass runs the ordinary path), where every event of
the synchronous path is committed on the caller's thread before the next call starts
(the kill test for it is in tests/test_runtime_crash.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import math
import sqlite3
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once
from pydantic import BaseModel, ConfigDict

from twelvefold.runtime import fastpath, loop, ratelimit, tools
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.codec import unstorable
from twelvefold.runtime.lease import LeaseLost
from twelvefold.runtime.loop import Engine, Thread
from twelvefold.runtime.model import ModelError, ModelReply, ModelRequest
from twelvefold.runtime.store import MemoryStore, SqliteStore, StoreError
from twelvefold.runtime.types import (
    CallModel,
    CallTool,
    ErrorInfo,
    Event,
    ModelOutput,
    ToolStarted,
    Usage,
)
from twelvefold.runtime.usage import MAX_CALL_COST, MAX_CALL_TOKENS, Prices

from .runtime_helpers import RecordingNotifier

AGENT = """\
agent fast "Every routine step of the synchronous path, and a pause." {
  input string
  start decide
  max_steps 60
  max_errors 3 -> escalate
  max_tokens 200 -> escalate
}

type Bump { n: int }
type Poke { n: int }
type Flaky { n: int }
type Broken { n: int }
type Wrong { n: int }
type Done { n: int }
type Count { n: int }

llm decide -> Bump | Poke | Flaky | Broken | Wrong | Done {
  prompt "decide.j2"
  on Bump -> bump
  on Poke -> poke
  on Flaky -> flaky
  on Broken -> broken
  on Wrong -> wrong
  on Done -> done
  on error -> decide
}

tool bump(Bump) -> Count = "fast_tools:bump" { next decide }
tool poke(Poke) -> Count = "fast_tools:poke" { next decide }
tool flaky(Flaky) -> Count = "fast_tools:flaky" {
  retry 2
  next decide
}
tool broken(Broken) -> Count = "fast_tools:broken" { next decide  on error -> decide }
tool wrong(Wrong) -> Count = "fast_tools:wrong" { next decide  on error -> decide }

human escalate {
  ask "Spent: go on?"
  next decide
}

final done(Done)
"""

TOOLS = """\
import asyncio
import contextlib

from twelvefold.runtime import tools

ATTEMPTS: dict[str, int] = {}
SEEN: list[object] = []


def bump(value, idempotency_key):
    SEEN.append(tools.running(idempotency_key))  # its in-flight marker is set
    return {"n": value.n + 1}


def poke(value):
    return {"n": value.n + 1}


def flaky(value, idempotency_key):
    # Every first attempt of a call fails, its second succeeds (for every run).
    ATTEMPTS[idempotency_key] = ATTEMPTS.get(idempotency_key, 0) + 1
    if ATTEMPTS[idempotency_key] % 2:
        raise RuntimeError("not yet")
    return {"n": value.n + 1}


def broken(value):
    raise ValueError("broken <on purpose>")


def wrong(value):
    return {"m": value.n}


async def later(value):
    await asyncio.sleep(0)
    return {"n": value.n + 1}
"""

SCRIPT: list[Any] = [
    ("Bump", 0),
    ("Poke", 1),
    ("Flaky", 2),
    ("Broken", 3),
    ModelError(ErrorInfo("ModelError", "no valid output"), Usage(input_tokens=7, output_tokens=3)),
    ("Wrong", 3),
    ("Bump", 3),
    ("Bump", 4),
    ("Poke", 5),
    ("Bump", 6),
    ("Bump", 7),
    ("Bump", 8),
    ("Bump", 9),
    ("Bump", 10),
    ("Bump", 11),
    ("Bump", 12),
    ("Bump", 13),
    ("Bump", 14),
    ("Bump", 15),
    ("Bump", 16),
    ("Bump", 17),
    ("Bump", 18),
    ("Done", 19),
]
"""What the model answers, call after call: every tool kind, a failure of the model
itself, then enough calls for `max_tokens` (15 tokens a reply) to hand the thread to a
person; after the answer, on to the end."""


class Scripted:
    """Answers from `SCRIPT` in order, with a fixed latency (so the logs compare). With
    `suspend`, each `complete` waits once on the event loop before it answers."""

    def __init__(self, suspend: bool = False) -> None:
        self.script = list(SCRIPT)
        self.suspend = suspend
        self.in_flight: list[int] = []

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.in_flight.append(ratelimit.PROCESS_IN_FLIGHT.running)
        if self.suspend:
            await asyncio.sleep(0)
        entry = self.script.pop(0)
        if isinstance(entry, Exception):
            raise entry
        name, n = entry
        (cls,) = [t for t in request.action.outputs if t.__name__ == name]
        usage = Usage(latency_ms=1.5, input_tokens=10, output_tokens=5)
        return ModelReply(cls(n=n), usage)


class OrdinaryStore(MemoryStore):
    """A `MemoryStore` the synchronous path does not take: the ordinary path runs."""


class OrdinarySqliteStore(SqliteStore):
    """A `SqliteStore` the synchronous path does not take: the ordinary path runs."""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "fast.agent").write_text(AGENT)
    (tmp_path / "fast_tools.py").write_text(TOOLS)
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "decide.j2").write_text("Count on.\n\n{{ context }}\n")
    return tmp_path


@dataclasses.dataclass
class Counts:
    fast: int = 0
    """Events the synchronous path appended."""
    model_calls: int = 0
    """Model calls the ordinary path made."""
    tool_calls: int = 0
    """Tool calls the ordinary path made."""
    together: int = 0
    """Appends of several events in one transaction by the synchronous path (SQLite)."""


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Counts:
    found = Counts()
    append_one, call_model, call_tool = (
        MemoryStore.append_one, Engine._call_model, Engine._call_tool,
    )  # fmt: skip
    sqlite_append_events = SqliteStore.append_events

    def counted_append(self: MemoryStore, *args: Any) -> None:
        found.fast += 1
        append_one(self, *args)

    def counted_sqlite_append(
        self: SqliteStore, thread_id: str, seq: int, events: tuple[Event, ...], *args: Any
    ) -> None:
        found.fast += len(events)
        found.together += len(events) > 1
        sqlite_append_events(self, thread_id, seq, events, *args)

    async def counted_model(self: Engine, *args: Any) -> Event:
        found.model_calls += 1
        return await call_model(self, *args)

    async def counted_tool(self: Engine, *args: Any) -> Event:
        found.tool_calls += 1
        return await call_tool(self, *args)

    monkeypatch.setattr(MemoryStore, "append_one", counted_append)
    monkeypatch.setattr(SqliteStore, "append_events", counted_sqlite_append)
    monkeypatch.setattr(Engine, "_call_model", counted_model)
    monkeypatch.setattr(Engine, "_call_tool", counted_tool)
    return found


def run(project: Path, store: MemoryStore | SqliteStore, model: Any, **options: Any) -> list[Event]:
    """Launch thread `t1` and run it to the end, answering each time it is handed to a
    person (three errors in a row, then the token budget)."""
    rt = Runtime(store, model=model, notifier=RecordingNotifier(), **options)
    try:
        agent = rt.agent(project / "fast.agent")
        view = rt.launch(agent, "count", thread_id="t1")
        for _ in range(2):
            assert (view.status, view.step) == ("waiting", "escalate"), view
            view = rt.resume("t1", answer="go on", request=view.request)
        assert view.status == "finished", view
        return rt.events("t1")
    finally:
        rt.close()


def assert_same_log(fast: list[Event], ordinary: list[Event], *, traced: bool = False) -> None:
    """Field by field, but for the times (`at`, a retry's `retry_at`) and the latencies
    measured (`usage.latency_ms`), which differ from run to run (and a traced run's trace
    context, which only it has)."""
    assert [type(e) for e in fast] == [type(e) for e in ordinary]
    for number, (a, b) in enumerate(zip(fast, ordinary, strict=True), start=1):
        for f in dataclasses.fields(a):
            mine, theirs = getattr(a, f.name), getattr(b, f.name)
            if f.name in ("at", "retry_at"):
                assert isinstance(mine, str) and isinstance(theirs, str)
            elif f.name in ("trace", "run_trace") and traced:
                assert theirs is None
            elif f.name == "usage" and mine is not None and theirs is not None:
                unmeasured = dataclasses.replace(mine, latency_ms=None)
                assert unmeasured == dataclasses.replace(theirs, latency_ms=None), (number, f)
                assert (mine.latency_ms is None) == (theirs.latency_ms is None), (number, f)
            else:
                assert mine == theirs, (number, f.name, mine, theirs)


def kinds(events: list[Event]) -> set[str]:
    return {type(e).__name__ for e in events}


def test_the_synchronous_path_records_the_ordinary_paths_log(project: Path, counts: Counts) -> None:
    ordinary = run(project, OrdinaryStore(), Scripted())
    assert counts.fast == 0 and counts.model_calls > 0 and counts.tool_calls > 0
    taken = Counts(model_calls=counts.model_calls, tool_calls=counts.tool_calls)
    fast = run(project, MemoryStore(), Scripted())
    assert_same_log(fast, ordinary)
    # Every kind of routine event was recorded, and a failure of each kind.
    assert {"ModelOutput", "ToolStarted", "ToolResult", "StepFailed", "Notified"} <= kinds(fast)
    errors = {e.error.type for e in fast if type(e).__name__ == "StepFailed"}  # type: ignore[attr-defined]
    assert {"ModelError", "ValueError", "ValidationError"} <= errors
    # The synchronous path was taken: no model or tool call went the ordinary way, and
    # every event but the notice (a pause: the ordinary path) was appended by it.
    assert (counts.model_calls, counts.tool_calls) == (taken.model_calls, taken.tool_calls)
    notices = sum(type(e).__name__ in ("Notified", "Answered", "Started") for e in fast)
    assert counts.fast == len(fast) - notices


def test_in_sqlite_the_synchronous_path_stores_the_ordinary_paths_log(
    project: Path, counts: Counts
) -> None:
    ordinary_db, fast_db = project / "ordinary.db", project / "fast.db"
    ordinary = run(project, OrdinarySqliteStore(ordinary_db), Scripted())
    assert counts.fast == 0 and counts.model_calls > 0 and counts.tool_calls > 0
    taken = (counts.model_calls, counts.tool_calls)
    fast = run(project, SqliteStore(fast_db), Scripted())
    # What was read back from each file is the same log, field by field.
    assert_same_log(fast, ordinary)
    assert {"ModelOutput", "ToolStarted", "ToolResult", "StepFailed", "Notified"} <= kinds(fast)
    # No model call went the ordinary way, and of the tool calls only the first after
    # each of the two resumes: its state came from a snapshot sealed without a key, which
    # the ordinary path proves against the log before a tool runs (`Engine._prove`).
    assert (counts.model_calls, counts.tool_calls) == (taken[0], taken[1] + 2)
    notices = sum(type(e).__name__ in ("Notified", "Answered", "Started") for e in fast)
    assert counts.fast == len(fast) - notices - 2 * 2  # (their start and result events)
    # A model's output and the start of the tool call it chose were committed together,
    # but for the two whose tool call went the ordinary way, and the first call of each
    # tool (its module is imported only once the output is stored).
    chosen = sum(
        type(a) is ModelOutput and type(b) is ToolStarted for a, b in itertools.pairwise(fast)
    )
    first_calls = len({e.step for e in fast if type(e) is ToolStarted})
    assert counts.together == chosen - 2 - first_calls, (counts.together, chosen)
    # The listing rows agree but for the times, and each file's snapshot is proven for
    # the whole log (a new process resumes from it without replaying).
    rows = []
    for db in (ordinary_db, fast_db):
        store = SqliteStore(db)
        info = store.info("t1")
        rows.append((info.status, info.step, info.seq, info.request, info.version))
        snapshot = store.restore("t1", Runtime(store).agent(project / "fast.agent").codec).snapshot
        assert snapshot is not None and snapshot.seq == info.seq == len(fast)
        store.close()
    assert rows[0] == rows[1]


class Named(Scripted):
    """A model that names the model each call asks for (as the openai client does)."""

    def requested_model(self, action: Any) -> str:
        return "named-model"


def test_the_model_a_call_asks_for_prices_it_on_both_paths(project: Path, counts: Counts) -> None:
    # The path looks the model's `requested_model` up once per run: each call is still
    # priced (and its budget counted) by the model it asked for.
    (project / "pyproject.toml").write_text(
        '[tool.twelvefold.prices]\n"named-model" = { input = 1.0, output = 2.0 }\n'
    )
    ordinary = run(project, OrdinaryStore(), Named())
    fast = run(project, MemoryStore(), Named())
    assert_same_log(fast, ordinary)
    costs = [e.usage.cost_usd for e in fast if type(e).__name__ == "ModelOutput"]  # type: ignore[attr-defined]
    assert costs and all(cost == 0.00002 for cost in costs)
    assert counts.fast > 0


def test_a_keyed_tool_runs_under_its_in_flight_marker_and_a_model_call_holds_a_place(
    project: Path,
) -> None:
    model = Scripted()
    run(project, MemoryStore(), model)
    seen = tools.ToolBox().resolve("fast_tools:bump", [project]).function.__globals__["SEEN"]
    assert seen and all(seen)
    assert model.in_flight and all(running >= 1 for running in model.in_flight)
    assert ratelimit.PROCESS_IN_FLIGHT.running == 0


def test_a_model_that_suspends_is_awaited_and_then_takes_the_ordinary_path(
    project: Path, counts: Counts
) -> None:
    ordinary = run(project, OrdinaryStore(), Scripted())
    before = counts.model_calls
    fast = run(project, MemoryStore(), Scripted(suspend=True))
    assert_same_log(fast, ordinary)
    model_events = sum(type(e).__name__ == "ModelOutput" for e in fast) + 1  # + the error
    # The first call suspended in the synchronous path; the later ones went the ordinary way.
    assert counts.model_calls - before == model_events - 1
    assert counts.fast > 0


class Wrapped:
    """`Scripted` behind a plain `def complete` (a wrapper that checks before it
    delegates): a scripted error is raised before any coroutine exists; with `future`,
    each answer comes as an asyncio task, an awaitable that is no coroutine."""

    def __init__(self, future: bool = False) -> None:
        self.inner = Scripted()
        self.future = future

    def complete(self, request: ModelRequest) -> Any:
        script = self.inner.script
        if isinstance(script[0], Exception):
            raise script.pop(0)
        answer = self.inner.complete(request)
        return asyncio.ensure_future(answer) if self.future else answer


@pytest.mark.parametrize("future", [False, True], ids=["raises-at-once", "returns-a-task"])
def test_a_plain_complete_records_the_ordinary_paths_log_and_gives_its_place_back(
    project: Path, future: bool
) -> None:
    ordinary = run(project, OrdinaryStore(), Wrapped(future))
    assert ratelimit.PROCESS_IN_FLIGHT.running == 0
    fast = run(project, MemoryStore(), Wrapped(future))
    assert_same_log(fast, ordinary)
    assert "ModelError" in {e.error.type for e in fast if type(e).__name__ == "StepFailed"}  # type: ignore[attr-defined]
    assert ratelimit.PROCESS_IN_FLIGHT.running == 0  # no place kept by the failure


@pytest.mark.parametrize("setting", ["subclass", "traced"])
def test_each_disqualifying_run_takes_the_ordinary_path(
    project: Path, counts: Counts, setting: str, traced: Callable[[], Any]
) -> None:
    expected = run(project, OrdinaryStore(), Scripted())
    store: MemoryStore = MemoryStore()
    if setting == "subclass":
        store = OrdinaryStore()
    else:
        traced()
    calls = counts.model_calls
    assert_same_log(run(project, store, Scripted()), expected, traced=setting == "traced")
    assert counts.fast == 0
    assert counts.model_calls == 2 * calls


@pytest.fixture
def traced() -> Iterator[Callable[[], InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def reset() -> None:  # as tests/test_tracing.py: the suite runs untraced otherwise
        trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
        trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]

    def install() -> InMemorySpanExporter:
        reset()
        trace.set_tracer_provider(provider)
        return exporter

    try:
        yield install
    finally:
        provider.shutdown()
        reset()


@pytest.mark.parametrize(
    ("change", "ordinary_models", "ordinary_tools"),
    [
        ('[tool.twelvefold.rate_limits."m"]\nrequests_per_minute = 100000\n', True, False),
        ("async_tool", False, True),
        ("timeout", False, True),
    ],
)
def test_a_step_that_is_not_routine_takes_the_ordinary_path(
    project: Path, counts: Counts, change: str, ordinary_models: bool, ordinary_tools: bool
) -> None:
    source = AGENT
    if change == "async_tool":
        source = source.replace('"fast_tools:bump"', '"fast_tools:later"')
    elif change == "timeout":
        source = source.replace(
            'tool bump(Bump) -> Count = "fast_tools:bump" { next decide }',
            'tool bump(Bump) -> Count = "fast_tools:bump" {\n  timeout 30s\n  next decide\n}',
        )
    else:
        source = source.replace('prompt "decide.j2"', 'prompt "decide.j2"\n  model "m"')
        (project / "pyproject.toml").write_text(change)
    (project / "fast.agent").write_text(source)
    expected = run(project, OrdinaryStore(), Scripted())
    calls = (counts.model_calls, counts.tool_calls)
    assert_same_log(run(project, MemoryStore(), Scripted()), expected)
    bumps = sum(
        type(e).__name__ == "ToolStarted" and e.step == "bump"  # type: ignore[attr-defined]
        for e in expected
    )
    model_calls, tool_calls = counts.model_calls - calls[0], counts.tool_calls - calls[1]
    assert model_calls == (calls[0] if ordinary_models else 0)
    assert tool_calls == (bumps if ordinary_tools else 0)
    assert counts.fast > 0  # the rest of the run was still synchronous


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_lost_lease_stops_the_synchronous_path_and_nothing_more_is_recorded(
    project: Path, counts: Counts, kind: str
) -> None:
    store = MemoryStore() if kind == "memory" else SqliteStore(project / "t.db")
    tools_file = project / "fast_tools.py"
    tools_file.write_text(
        tools_file.read_text()
        + textwrap.dedent(
            """
            STORE = []

            def poke(value):
                # Another process takes the thread over while the tool runs.
                (store,) = STORE
                lease = store.lease("t1")
                store.release(lease)
                store.acquire("t1", "someone else", 60)
                return {"n": value.n + 1}
            """
        )
    )
    rt = Runtime(store, model=Scripted(), notifier=RecordingNotifier())
    agent = rt.agent(project / "fast.agent")
    function = rt.aio.engine.toolbox.resolve("fast_tools:poke", [project]).function
    function.__globals__["STORE"].append(store)
    with pytest.raises(LeaseLost):
        rt.launch(agent, "count", thread_id="t1")
    events = store.load("t1", agent.codec)
    # Bump's call and result, the model's Poke, Poke's start; its result was refused.
    assert [type(e).__name__ for e in events][-2:] == ["ModelOutput", "ToolStarted"]
    assert events[-1].step == "poke"
    # The synchronous path appended all but `Started`, and tried the refused result.
    assert counts.fast == len(events) - 1 + 1
    rt.close()


def test_the_path_is_taken_only_in_a_plain_memory_store(project: Path) -> None:
    rt = Runtime(MemoryStore(), model=Scripted())
    agent = rt.agent(project / "fast.agent")
    thread = Thread("t1", agent, [], agent.module.initial_state("count"))
    assert fastpath.routine(rt.aio.engine, thread) is not None
    assert fastpath.routine(Engine(OrdinaryStore()), thread) is None
    offloaded = Engine(MemoryStore())
    offloaded.offload = True  # (a MemoryStore never blocks: `offload` is off for it)
    assert fastpath.routine(offloaded, thread) is None
    thread.run = object()  # a traced run
    assert fastpath.routine(rt.aio.engine, thread) is None
    rt.close()


def test_in_sqlite_the_path_is_taken_only_on_the_callers_own_thread(project: Path) -> None:
    rt = Runtime(SqliteStore(project / "t.db"), model=Scripted())
    agent = rt.agent(project / "fast.agent")
    thread = Thread("t1", agent, [], agent.module.initial_state("count"))
    assert fastpath.routine(rt.aio.engine, thread) is not None  # `Runtime`: not offloaded
    # Threads sharing an event loop (`AsyncRuntime`, the server) commit in groups.
    assert fastpath.routine(Engine(SqliteStore(project / "t.db"), offload=True), thread) is None
    assert fastpath.routine(Engine(OrdinarySqliteStore(project / "t.db")), thread) is None
    rt.close()


@pytest.mark.parametrize("build", ["as built", "broken: told before the commit"])
def test_in_sqlite_each_event_is_on_disk_before_the_hook_hears_of_it_or_its_tool_runs(
    project: Path, monkeypatch: pytest.MonkeyPatch, build: str
) -> None:
    """A model's output and its tool call's start share one commit, so neither may be
    told (nor the tool run: the hook hears of the start before the call) until that
    commit is on disk: another connection finds each event in the file when the hook
    hears of it. The broken build tells the hook of a pair before committing it."""
    if build != "as built":
        book = fastpath.Routine.book

        def told_first(self: fastpath.Routine, event: Event) -> None:
            pending, hook = self._pending, self.engine.on_event
            if pending is not None and hook is not None:
                hook(self.thread, pending)
            book(self, event)

        monkeypatch.setattr(fastpath.Routine, "book", told_first)
    db = project / "t.db"
    seen: list[tuple[str, int, int]] = []

    def look(thread: Thread, event: Event) -> None:
        position = next(n for n, e in enumerate([*thread.events, event], 1) if e is event)
        with contextlib.closing(sqlite3.connect(db)) as other:
            (stored,) = other.execute(
                "SELECT count(*) FROM events JOIN threads ON events.thread = threads.num"
                " WHERE threads.id = ?",
                (thread.id,),
            ).fetchone()
        seen.append((type(event).__name__, position, stored))

    events = run(project, SqliteStore(db), Scripted(), on_event=look)
    assert len(seen) >= len(events) - 1 and any(kind == "ModelOutput" for kind, _, _ in seen)
    early = [(kind, position, stored) for kind, position, stored in seen if stored < position]
    if build == "as built":
        assert not early
    else:
        assert early and all(kind == "ModelOutput" for kind, _, _ in early)


def launch_refused(
    project: Path, error: type[BaseException], match: str | None
) -> tuple[Runtime, list[str]]:
    """Launch `t1` in SQLite with the tools' module imported already (so the first tool
    call's start is appended with the output that chose it), which raises `error`; the
    runtime and the kinds of the events stored."""
    rt = Runtime(SqliteStore(project / "t.db"), model=Scripted(), notifier=RecordingNotifier())
    agent = rt.agent(project / "fast.agent")
    rt.aio.engine.toolbox.resolve("fast_tools:bump", [project])
    with pytest.raises(error, match=match):
        rt.launch(agent, "count", thread_id="t1")
    return rt, [type(e).__name__ for e in rt.events("t1")]


@pytest.mark.parametrize("refused", ["the pair", "the pair and the output alone"])
def test_in_sqlite_an_output_whose_pair_is_refused_is_appended_alone_if_it_can_be(
    project: Path, monkeypatch: pytest.MonkeyPatch, refused: str
) -> None:
    """When the store refuses a model's output with its tool call's start, the tool does
    not run and the output is appended alone, as the ordinary path would have appended
    it; when that is refused too, nothing of it is stored and the thread resumes from
    the log (the model is asked again)."""
    append_events = SqliteStore.append_events
    failures = []

    def refusing(self: SqliteStore, thread_id: str, seq: int, events: Any, *rest: Any) -> None:
        first_pair = not failures and len(events) == 2
        then_alone = refused != "the pair" and failures == [2] and len(events) == 1
        if first_pair or then_alone:
            failures.append(len(events))
            raise StoreError("the disk is full (on purpose)")
        append_events(self, thread_id, seq, events, *rest)

    monkeypatch.setattr(SqliteStore, "append_events", refusing)
    rt, stored = launch_refused(project, StoreError, "on purpose")
    if refused == "the pair":
        assert failures == [2] and stored == ["Started", "ModelOutput"]
    else:
        assert failures == [2, 1] and stored == ["Started"]
    view = rt.resume("t1")  # the thread goes on from what the log holds
    assert view.status == "waiting" and "ToolStarted" in kinds(rt.events("t1"))
    rt.close()


def test_in_sqlite_the_hook_is_told_each_event_with_the_thread_as_it_stood_after_it(
    project: Path,
) -> None:
    """The event hook sees each event as the last of the thread's events, with the state
    after it, as on the ordinary path (the CLI numbers each line it prints by the count).
    A model's output committed with its tool call's start was told with the start
    already in the thread, its state already the start's."""
    Told = list[tuple[str, int, bool, int]]
    views = []
    for store in (OrdinarySqliteStore(project / "ordinary.db"), SqliteStore(project / "fast.db")):
        told: Told = []

        def look(thread: Thread, event: Event, told: Told = told) -> None:
            last = thread.events[-1] is event
            told.append((type(event).__name__, len(thread.events), last, thread.state.seq))

        run(project, store, Scripted(), on_event=look)
        views.append(told)
    ordinary, fast = views
    assert any(kind == "ModelOutput" for kind, *_ in fast)
    assert all(last and count == seq for _, count, last, seq in ordinary)
    assert fast == ordinary


@pytest.mark.parametrize("tool", ["Poke", "Bump"])
def test_in_sqlite_a_hook_that_raises_on_an_output_leaves_the_tool_call_to_run_on_resume(
    project: Path, tool: str
) -> None:
    """A hook that raises as it is told of a model's output (its own bug, or Ctrl-C while
    the CLI prints it) stops the run before the tool call that output chose; resuming
    runs that call, and the log is the ordinary path's. Committed with the output, the
    start of a call that takes no idempotency key (`poke`) would have been found on
    resume without a result, and the step failed as interrupted though it never ran;
    one that takes a key (`bump`) is run again with it."""
    logs = []
    for store in (OrdinarySqliteStore(project / "ordinary.db"), SqliteStore(project / "fast.db")):
        raised: list[int] = []

        def hook(thread: Thread, event: Event, raised: list[int] = raised) -> None:
            if not raised and type(event) is ModelOutput and type(event.output).__name__ == tool:
                raised.append(len(thread.events))
                raise RuntimeError("the hook's own bug")

        rt = Runtime(store, model=Scripted(), notifier=RecordingNotifier(), on_event=hook)
        agent = rt.agent(project / "fast.agent")
        with pytest.raises(RuntimeError, match="own bug"):
            rt.launch(agent, "count", thread_id="t1")
        stopped = [type(e).__name__ for e in rt.events("t1")]
        view = rt.resume("t1")
        while view.status == "waiting":
            view = rt.resume("t1", answer="go on", request=view.request)
        assert view.status == "finished", view
        logs.append((stopped, rt.events("t1")))
        rt.close()
    (ordinary_stopped, ordinary), (fast_stopped, fast) = logs
    assert ordinary_stopped[-1] == "ModelOutput"
    if tool == "Poke":
        assert fast_stopped == ordinary_stopped
    assert_same_log(fast, ordinary)


class Counting:
    """counter.agent's model: Bump up to 4, then Done; instant."""

    def __init__(self) -> None:
        self.types: dict[str, Any] = {}  # the agent's, once it is loaded

    async def complete(self, request: ModelRequest) -> ModelReply:
        value = request.action.value
        n = 0 if isinstance(value, str) else value.n
        kind = "Done" if n >= 4 else "Bump"
        return ModelReply(self.types[kind](n=n), Usage(latency_ms=0.0))


def test_in_sqlite_a_hook_that_raises_on_an_output_is_still_told_of_the_start_stored_with_it(
    tmp_path: Path,
) -> None:
    """A model's output and the start of a call of a tool that takes an idempotency key
    are committed together: a hook that raises as it is told of the output (Ctrl-C while
    the CLI prints it) stops the run with both on disk. The hook is still told of the
    start (it is in the log), so across the stop and the resume it hears of every event of
    the log once, as on the ordinary path, where the start is recorded on resume."""
    told: list[int] = []

    def hook(thread: Thread, event: Event) -> None:
        told.append(len(thread.events))
        if len(thread.events) == 8:  # the third output: the tool's module is imported
            raise KeyboardInterrupt

    def no_messages(*_: Any) -> list[dict[str, str]]:
        return []

    counter = Path(__file__).parent / "runtime_fixtures" / "counter.agent"
    store = SqliteStore(tmp_path / "threads.db")
    model = Counting()
    rt = Runtime(
        store,
        model=model,
        messages=no_messages,
        tool_paths=[counter.parent],
        on_event=hook,
        cache_dir=tmp_path / "cache",
        notifier=RecordingNotifier(),
    )
    agent = rt.agent(counter)
    model.types = agent.spec.types
    with pytest.raises(KeyboardInterrupt):
        rt.launch(agent, "count", thread_id="t1")
    assert [type(e).__name__ for e in rt.events("t1")][-2:] == ["ModelOutput", "ToolStarted"]
    assert rt.resume("t1").status == "finished"
    assert sorted(told) == list(range(1, len(rt.events("t1")) + 1))
    rt.close()


@pytest.mark.parametrize("stop", ["KeyboardInterrupt", "StoreError"])
def test_in_sqlite_what_stopped_the_run_is_what_the_caller_sees_when_the_output_cannot_be_kept(
    project: Path, monkeypatch: pytest.MonkeyPatch, stop: str
) -> None:
    """A Ctrl-C during the commit of an output and its tool call's start is raised once
    the commit is done (Python runs the handler at the next instruction): the pair is
    stored, and appending the output alone again is refused (`Conflict`). The caller
    must see the Ctrl-C (the CLI says where the thread stopped), not that refusal; and
    when a pair refused by the store cannot be appended alone either, the first error.
    (A real SIGINT during a counter thread's run was reported as `Conflict` a third of
    the time.)"""
    append_events = SqliteStore.append_events
    done: list[int] = []

    def interrupted(self: SqliteStore, thread_id: str, seq: int, events: Any, *rest: Any) -> None:
        if done or len(events) == 1:
            if done == [2] and stop == "StoreError":
                done.append(1)
                raise StoreError("the disk is gone as well")
            append_events(self, thread_id, seq, events, *rest)
            return
        done.append(2)
        if stop == "KeyboardInterrupt":
            append_events(self, thread_id, seq, events, *rest)
            raise KeyboardInterrupt
        raise StoreError("the disk is full (on purpose)")

    monkeypatch.setattr(SqliteStore, "append_events", interrupted)
    expected = (KeyboardInterrupt, None) if stop == "KeyboardInterrupt" else (StoreError, "full")
    rt, stored = launch_refused(project, *expected)
    if stop == "KeyboardInterrupt":
        assert stored == ["Started", "ModelOutput", "ToolStarted"]
    else:
        assert done == [2, 1] and stored == ["Started"]
    view = rt.resume("t1")  # the thread goes on from what the log holds
    assert view.status == "waiting" and "ToolResult" in kinds(rt.events("t1"))
    rt.close()


def test_in_sqlite_a_tools_module_is_imported_only_once_the_output_that_calls_it_is_stored(
    project: Path,
) -> None:
    """Importing a tool's module runs its code, for as long as it takes (a heavy
    library, a slow disk), and it may fail the process or outlast the lease. The model's
    output that chose the call is stored before that, as on the ordinary path: kept on
    the synchronous path with its tool call's start, it was lost with them."""
    (project / "fast.agent").write_text(AGENT.replace('"fast_tools:poke"', '"late_tools:poke"'))
    (project / "late_tools.py").write_text(
        textwrap.dedent(
            """
            import sqlite3
            from pathlib import Path

            here = Path(__file__).parent
            with sqlite3.connect(here / (here / "db.txt").read_text()) as db:
                (STORED,) = db.execute("SELECT count(*) FROM events").fetchone()

            def poke(value):
                return {"n": value.n + 1}
            """
        )
    )
    seen = []
    for store in (OrdinarySqliteStore(project / "ordinary.db"), SqliteStore(project / "fast.db")):
        (project / "db.txt").write_text(store.path.name)
        for name in [name for name in sys.modules if name.endswith("late_tools")]:
            del sys.modules[name]  # imported again by this run
        events = run(project, store, Scripted())
        poke = next(n for n, e in enumerate(events) if type(e) is ToolStarted and e.step == "poke")
        module = tools.ToolBox().resolve("late_tools:poke", [project])
        seen.append((module.function.__globals__["STORED"], poke))
    assert seen[0] == seen[1] == (seen[0][1], seen[0][1])  # the output, not its start


# ---- the usual cases written out (seventh pass): each the same as the helpers' way ----


class Done(BaseModel):
    model_config = ConfigDict(extra="forbid", revalidate_instances="always")
    n: int


_DECIDE = CallModel(step="decide", value=None, outputs=(Done,), prompt=None)

_COUNTS = st.one_of(
    st.none(),
    st.integers(-3, 2 * MAX_CALL_TOKENS),
    st.sampled_from([0, -1, MAX_CALL_TOKENS, MAX_CALL_TOKENS + 1, True, 2.5, 10**400]),
)
_NUMBERS = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-5, 10**7),
    st.sampled_from([0, 0.0, True, MAX_CALL_COST, MAX_CALL_COST * 2]),
)


@settings(max_examples=400, deadline=None)
@given(
    inputs=_COUNTS,
    outputs=_COUNTS,
    latency=_NUMBERS,
    cost=_NUMBERS,
    requested=st.sampled_from([None, "", "priced", "priced-mini", "unpriced"]),
    answered=st.sampled_from([None, "priced", "unpriced"]),
)
def test_a_reply_is_priced_and_checked_in_one_call_as_in_two(
    inputs: Any, outputs: Any, latency: Any, cost: Any, requested: Any, answered: Any
) -> None:
    """`loop.priced_reply` (the usual reply priced and passed inline) gives what
    `_valid_cost(_priced(...))` gives for every usage, valid or not: the same usage (a
    measured latency where the reply gave none) and the same error. Fails when the
    inline case passes a count, cost or latency the two helpers treat otherwise."""
    usage = Usage(latency, inputs, outputs, cost)
    reply = ModelReply(Done(n=1), usage, model=answered)
    prices = Prices({"priced": (1.0, 4.0)})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(time, "perf_counter", lambda: 10.0)  # one latency for both ways
        one = loop.priced_reply(reply, requested, prices, 9.9985)
        two = loop._valid_cost(loop._priced(reply, requested, prices, 9.9985))
    assert repr(one) == repr(two)  # (repr: a NaN equals no NaN)
    assert [type(v) for v in dataclasses.astuple(one[0])] == [
        type(v) for v in dataclasses.astuple(two[0])
    ]


@settings(max_examples=300, deadline=None)
@given(
    inputs=_COUNTS,
    outputs=_COUNTS,
    latency=_NUMBERS,
    cost=st.one_of(_NUMBERS, st.just("1.5")),
)
def test_a_replys_usage_is_passed_in_one_test_only_when_the_loop_over_it_would_pass_it(
    inputs: Any, outputs: Any, latency: Any, cost: Any
) -> None:
    """`loop.checked_output` passes the usual usage in one test and judges the rest by
    its loop over the four numbers: refused exactly when a number is no int or float (a
    bool, a text) or an int past 2**63 either way. Fails when the one test passes one
    the loop refuses."""
    got = loop.checked_output(ModelReply(Done(n=1), Usage(latency, inputs, outputs, cost)), _DECIDE)
    numbers = [v for v in (inputs, outputs, latency, cost) if v is not None]
    refused = any(
        type(v) is bool
        or not isinstance(v, int | float)
        or (isinstance(v, int) and not -(2**63) < v < 2**63)
        for v in numbers
    )
    if refused:
        assert isinstance(got, ErrorInfo) and got.type == "ModelError", got
    else:
        assert got == Done(n=1)


@pytest.mark.parametrize(
    "value",
    [
        {"n": 1, "s": "plain", "f": 1.5, "b": True, "z": None},
        {"n": 10**5000},
        {"n": 1, "s": "caf\u00e9"},
        {"n": 1, "s": "x\ud800"},
        {"n": 1, "s": ["a", "x\udfff"]},
        {"n": 1, "s": {"k": "\ud800"}},
    ],
)
def test_a_models_plain_fields_are_passed_inline_and_the_rest_judged_as_before(
    value: dict[str, Any],
) -> None:
    """`codec.unstorable` passes a model whose fields are all plain in its own loop and
    hands any other to `_unstorable_items`, which names the place: the same answer as
    asking about the model's fields one by one."""

    class Declared(BaseModel):  # its fields in `__dict__`: the inline loop
        model_config = ConfigDict(extra="forbid")
        n: Any = None
        s: Any = None
        f: Any = None
        b: Any = None
        z: Any = None

    class Loose(BaseModel):  # its fields in `__pydantic_extra__`: the helper's way
        model_config = ConfigDict(extra="allow")

    expected = next(
        (
            found
            for name, item in value.items()
            if (found := unstorable(item, f"out.{name}", 1)) is not None
        ),
        None,
    )
    assert unstorable(Declared.model_construct(**value), "out") == expected
    assert unstorable(Loose.model_construct(**value), "out") == expected


def test_a_dict_result_that_does_not_validate_takes_the_helpers_way() -> None:
    """`tools.call_here` coerces a dict result inline; one that does not validate, or a
    result that is not a dict, goes to `_returned_outcome` as before (a failure whose
    outcome is unknown, or the model coerced), and the usual call gives its tuple."""

    def tool_of(returned: Any) -> tools.Tool:
        def function(value: Any, idempotency_key: str) -> Any:
            return returned

        return tools.Tool(function, "t", accepts_key=True, takes_input=True, is_async=False)

    def action(output: type[BaseModel]) -> CallTool:
        return CallTool(step="s", function="m:f", value=Done(n=1), output=output)

    got = tools.call_here(tool_of({"n": 2}), action(Done), "k1")
    assert isinstance(got, tuple) and got[0] == Done(n=2) and got[2] == 1
    assert tools.call_now(tool_of({"n": 2}), action(Done), "k1").result == Done(n=2)
    wrong = tools.call_here(tool_of({"n": "x"}), action(Done), "k2")
    assert isinstance(wrong, tools.Outcome) and wrong.unknown and wrong.error is not None
    assert wrong.error.type == "ValidationError"
    model = tools.call_here(tool_of(Done(n=3)), action(Done), "k3")
    assert isinstance(model, tools.Outcome) and model.result == Done(n=3)
    assert not tools.running("k1") and not tools.running("k2")


class OddLatency(Scripted):
    """Answers as `Scripted`, each reply reporting `latency` as its own."""

    def __init__(self, latency: Any) -> None:
        super().__init__()
        self.latency = latency

    async def complete(self, request: ModelRequest) -> ModelReply:
        reply = await super().complete(request)
        return ModelReply(reply.output, dataclasses.replace(reply.usage, latency_ms=self.latency))


@pytest.mark.parametrize("latency", [math.nan, math.inf, -math.inf, -5.0, 0.0, 1e12], ids=repr)
@pytest.mark.parametrize("path", ["fast", "ordinary"])
def test_a_latency_a_reply_cannot_have_is_measured_instead(
    project: Path, latency: float, path: str
) -> None:
    """rt17: a reply's `latency_ms` of NaN or ±inf was stored as `NaN` (no JSON has it:
    `show --json` wrote invalid JSON and SQLite's JSON functions skipped the event, its
    tokens and cost missing from `threads` and `stats`), and -5 was shown as `(-5.0 ms)`.
    Each path records the latency it measured instead; the stored bodies are JSON."""
    db = project / f"{path}.db"
    store = SqliteStore(db) if path == "fast" else OrdinarySqliteStore(db)
    events = run(project, store, OddLatency(latency))
    latencies = [e.usage.latency_ms for e in events if type(e) is ModelOutput]
    assert latencies and all(0 < ms < 60_000 for ms in latencies), latencies
    with sqlite3.connect(db) as connection:
        bodies = [body for (body,) in connection.execute("SELECT body FROM events")]
    constants: list[str] = []  # NaN, Infinity: not JSON
    for body in bodies:
        json.loads(body, parse_constant=constants.append)
    assert constants == [], bodies
