"""The runtime's cost per step, replay, resume, storage and import, beside the physical
limits measured in the same run.

The agent is tests/runtime_fixtures/counter.agent: `decide` (an llm step) chooses `Bump`,
the `bump` tool adds one, back to `decide`, until a target. The model is instant (a
function of the value) and so is the tool; a "step" is one action, a model call or a tool
call, and a tool call appends two events (`ToolStarted`, then its result). In SQLite the
model's output and the `ToolStarted` after it share one commit: a pair of steps is three
events in two commits (the durable table counts both). Prompt
rendering is left out (its cost belongs to the context window the agent declares; the
loop is what is measured here).

Physical limits: a bare Python loop doing the same logical work with plain values (decide,
record the start of the tool call, call it, record its result; a list for the log and a
tuple for the state), and a bare SQLite insert-and-commit of the same event JSON, WAL with
synchronous=FULL. Between the two, the generated reducer alone (`next_action`, the same
model and tool functions, the same event objects, `reduce`) with no runtime around it.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import twelvefold.runtime
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.loop import Agent, Engine, started
from twelvefold.runtime.model import ModelReply, ModelRequest
from twelvefold.runtime.store import Head, MemoryStore, SqliteStore, ThreadInfo, now_iso
from twelvefold.runtime.types import (
    CallModel,
    CallTool,
    Event,
    ModelOutput,
    ToolResult,
    ToolStarted,
    Usage,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "runtime_fixtures"
COUNTER = FIXTURES / "counter.agent"


class InstantModel:
    """Bump until the target, then Done: no I/O, no waiting."""

    def __init__(self, agent: Agent, target: int) -> None:
        self.bump, self.done = agent.spec.types["Bump"], agent.spec.types["Done"]
        self.target = target
        self.usage = Usage(latency_ms=0.0)

    def decide(self, value: Any) -> BaseModel:
        n = value.n if isinstance(value, BaseModel) else 0
        return self.done(n=n) if n >= self.target else self.bump(n=n)

    async def complete(self, request: ModelRequest) -> ModelReply:
        return ModelReply(self.decide(request.action.value), self.usage)


def no_messages(*_: Any) -> list[dict[str, str]]:
    return []


def _runtime(store: Any, agent: Agent, steps: int) -> Runtime:
    return Runtime(
        store,
        model=InstantModel(agent, steps // 2),
        messages=no_messages,
        tool_paths=[FIXTURES],
    )


def run_thread(
    store: Any, agent: Agent, steps: int, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Seconds per step for one thread of `steps` actions, launched and run to the end;
    by the wall clock, or by `clock` (`time.process_time`: this process's CPU time, which
    other processes on a loaded machine disturb far less)."""
    rt = _runtime(store, agent, steps)
    started_at = clock()
    view = rt.launch(agent, "count")
    elapsed = clock() - started_at
    assert view.status == "finished", view
    rt.close()
    return elapsed / (steps + 1)


def bare_python(steps: int) -> float:
    """The loop's logical work in plain Python: what a step cannot cost less than."""
    target = steps // 2
    log: list[tuple[str, str, object]] = []
    state = ("decide", 0)
    began = time.perf_counter()
    while True:
        at, n = state
        if at == "decide":  # the model: bump until the target, then done
            choice = "done" if n >= target else "bump"
            log.append(("model_output", at, (choice, n)))
            if choice == "done":
                break
            state = ("bump", n)
        else:  # the tool, its start recorded first
            log.append(("tool_started", at, f"t:{at}:{len(log) + 1}"))
            log.append(("tool_result", at, n + 1))
            state = ("decide", n + 1)
    return (time.perf_counter() - began) / (steps + 1)


def reducer_alone(
    agent: Agent, steps: int, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Seconds per step of the generated reducer and the same event objects, with the
    same model and tool and no runtime around them (by `clock`, as `run_thread`)."""
    from twelvefold.runtime.tools import ToolBox

    module, model = agent.module, InstantModel(agent, steps // 2)
    tool = ToolBox([FIXTURES]).resolve("counter_tools:bump").function
    output_type = agent.spec.types["Count"]
    events: list[Event] = [started(agent, "count")]
    state = module.replay(events)
    began = clock()
    while state.status == "running":
        action = module.next_action(state)
        if isinstance(action, CallModel):
            event: Event = ModelOutput(
                step=action.step, at=now_iso(), output=model.decide(action.value)
            )
        elif isinstance(action, CallTool):
            key = f"t:{action.step}:{state.seq + 1}"
            mark = ToolStarted(step=action.step, at=now_iso(), key=key)
            state = module.reduce(state, mark)
            events.append(mark)
            result = output_type.model_validate(tool(action.value, idempotency_key=key))
            event = ToolResult(step=action.step, at=now_iso(), result=result)
        state = module.reduce(state, event)
        events.append(event)
    return (clock() - began) / (steps + 1)


def bare_sqlite(path: Path, bodies: list[str]) -> float:
    """Seconds per insert-and-commit of one event, at the store's durability."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE e (t INTEGER, s INTEGER, body TEXT, PRIMARY KEY (t, s)) WITHOUT ROWID")
    began = time.perf_counter()
    for seq, body in enumerate(bodies, start=1):
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO e VALUES (1, ?, ?)", (seq, body))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - began
    db.close()
    return elapsed / len(bodies)


def store_sql(path: Path, bodies: list[str]) -> float:
    """Seconds per append of one event as the SQLite store writes it, without the runtime:
    the statements of `SqliteStore._append` for a thread held under a lease that this
    process appended to last (the row's checks made by one conditional UPDATE of it, then
    the event inserted) on the store's own schema, with every value computed beforehand.
    What an append cannot cost less than with this layout: its commit writes two pages
    (the event's, the row's) where the bare commit writes one."""
    from twelvefold.runtime import store as stores

    SqliteStore(path).close()  # the schema
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute(
        "INSERT INTO threads (id, agent, origin, status, step, seq, created_at, updated_at,"
        " lease_owner, lease_token, lease_until) VALUES ('t', 'a', 'o', 'running', 'decide',"
        " 0, 'now', 'now', 'me', 1, 1e12)"
    )
    (num,) = db.execute("SELECT num FROM threads WHERE id = 't'").fetchone()
    digest, snapshot = bytes(32), "x" * 420  # a counter thread's snapshot is ~420 bytes
    row = ("decide", "2026-12-01T00:00:00Z", snapshot, digest, None, 1, "r" * 16, digest)
    began = time.perf_counter()
    for seq, body in enumerate(bodies, start=1):
        db.execute("BEGIN IMMEDIATE")
        step, at, *rest = row
        checks = ("t", seq - 1, "running", None, "me", 1)
        updated = db.execute(stores._UPDATE_IF_UNCHANGED, (step, seq, at, *rest, num, *checks))
        assert updated.rowcount == 1
        db.execute(stores._INSERT_EVENT, (num, seq, body, digest))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - began
    db.close()
    return elapsed / len(bodies)


def a_log(agent: Agent, steps: int) -> list[Event]:
    """The events of a finished counter thread of `steps` actions (built in memory)."""
    store = MemoryStore()
    rt = _runtime(store, agent, steps)
    view = rt.launch(agent, "count")
    return rt.events(view.id)


def best(runs: int, work: Callable[[], float]) -> float:
    return min(work() for _ in range(runs))


def import_time(module_path: Path) -> tuple[float, float, float, bool]:
    """Seconds to import the generated module with the runtime's API (wall clock, and
    this process's CPU time), the whole process, each the best of 8 processes with the
    bytecode compiled; and whether openai or instructor were loaded by it."""
    probe = (
        "import sys, time, importlib.util as u; t = time.perf_counter(); c = time.process_time();"
        f"s = u.spec_from_file_location('agent', {str(module_path)!r}); m = u.module_from_spec(s);"
        "sys.modules['agent'] = m; s.loader.exec_module(m); import twelvefold.runtime.api;"
        "print(time.perf_counter() - t, time.process_time() - c,"
        " 'openai' in sys.modules or 'instructor' in sys.modules)"
    )
    # As installed: pip compiles a package's bytecode, and Python caches a generated
    # module's on its first import. Compiled here because with PYTHONDONTWRITEBYTECODE set
    # (as in some shells and containers) every run would compile the sources again and
    # time the compiler (about 45 ms of CPU more), not the import.
    # (The runtime's folder is named too: it may be a link, which compileall skips.)
    folders = [Path(twelvefold.__file__).parent, Path(twelvefold.runtime.__file__).parent]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *map(str, folders), str(module_path)],
        capture_output=True, check=True,
    )  # fmt: skip
    timings = []
    for _ in range(8):
        began = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        )
        whole = time.perf_counter() - began
        inside, cpu, heavy = out.stdout.split()
        timings.append((float(inside), float(cpu), whole, heavy == "True"))
    inside = min(t[0] for t in timings)
    cpu = min(t[1] for t in timings)
    whole = min(t[2] for t in timings)
    return inside, cpu, whole, any(t[3] for t in timings)


def main() -> None:
    os.environ.pop("COUNTER_LOG", None)  # the counter's tools are instant without it
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rt = Runtime(cache_dir=folder / "cache")
        agent = rt.agent(COUNTER)

        print("## Runtime\n")
        print("Per step (one model call or one tool call), an instant model and tool;")
        print("the runtime's own share is its CPU time less the reducer alone's (the")
        print("generated reducer, the model's and the tool's own work, the event objects):\n")
        columns = ["runtime, memory", "runtime, memory, CPU time", "reducer alone"]
        columns += ["reducer alone, CPU time", "the runtime's own share, CPU time"]
        columns.append("bare Python loop")
        print("| thread | " + " | ".join(f"{c} (µs/step)" for c in columns) + " |")
        print("|---:|" + "---:|" * len(columns))
        for steps in (100, 10_000):
            runs = 20 if steps == 100 else 3
            memory = min(run_thread(MemoryStore(), agent, steps) for _ in range(runs))
            cpu = min(
                run_thread(MemoryStore(), agent, steps, time.process_time) for _ in range(runs)
            )
            reducer = min(reducer_alone(agent, steps) for _ in range(runs))
            reducer_cpu = min(reducer_alone(agent, steps, time.process_time) for _ in range(runs))
            bare = min(bare_python(steps) for _ in range(runs))
            figures = [memory, cpu, reducer, reducer_cpu, cpu - reducer_cpu, bare]
            figures = [f * 1e6 for f in figures]
            print(f"| {steps:,} steps | " + " | ".join(f"{f:.2f}" for f in figures) + " |")

        print("\nDurable (SQLite, WAL, synchronous=FULL), per appended event, best of")
        print("rounds alternating the runtime, the bare commit and the store's SQL alone")
        print("(so all three meet the same disk):\n")
        print(
            "| thread | runtime (µs/event) | bare insert+commit (µs/event) | ratio |"
            " the store's SQL alone (µs/event) | runtime's commits | runtime (µs/commit) |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for steps in (100, 10_000):
            events = a_log(agent, steps)
            bodies = [agent.codec.dumps_event(e) for e in events]
            per_event = bare = floor = float("inf")
            for round_ in range(5 if steps == 100 else 2):
                db = folder / f"run-{steps}-{round_}.db"
                durable = SqliteStore(db)
                per_step = run_thread(durable, agent, steps)
                per_event = min(per_event, per_step * (steps + 1) / len(events))
                # Transactions, the creation and the lease's included: a model's output
                # and its tool call's start share one (docs/runtime.md, "The loop").
                commits = durable.commits.stats.groups
                bare = min(bare, bare_sqlite(folder / f"bare-{steps}-{round_}.db", bodies))
                floor = min(floor, store_sql(folder / f"sql-{steps}-{round_}.db", bodies))
            thread = f"{steps:,} steps ({len(events):,} events)"
            ratio = per_event / bare
            per_commit = per_event * len(events) / commits
            print(
                f"| {thread} | {per_event * 1e6:.0f} | {bare * 1e6:.0f} | {ratio:.2f}× |"
                f" {floor * 1e6:.0f} | {commits:,} | {per_commit * 1e6:.0f} |"
            )
            if steps == 10_000:
                storage = bytes_per_event(db, bodies)

        big = a_log(agent, 66_666)  # 100,000 events
        replay = best(3, lambda: _timed(lambda: agent.module.replay(big)))
        store = SqliteStore(folder / "replay.db")
        _copy(store, agent, "big", big)
        load = best(3, lambda: _timed(lambda: agent.module.replay(store.load("big", agent.codec))))
        print("\n| replay of a 100,000-event log | events/s |")
        print("|---|---:|")
        print(f"| `replay(events)` in memory | {len(big) / replay:,.0f} |")
        print(f"| load from SQLite + decode + replay | {len(big) / load:,.0f} |")

        print(
            "\n| resume a thread (load, verify the chain, decode, state, next action) | ms"
            " | of which the hash chain (ms) |"
        )
        print("|---|---:|---:|")
        engine, loop = Engine(store), asyncio.new_event_loop()
        for size in (1_000, 10_000):
            _copy(store, agent, f"t{size}", big[:size])
            resume = partial(_resume_point, loop, engine, agent, f"t{size}")
            seconds = min(_timed(resume) for _ in range(5))
            bodies = [agent.codec.dumps_event(e) for e in big[:size]]
            chain = min(_timed(partial(store.chain.head, f"t{size}", bodies)) for _ in range(5))
            share = f"{chain * 1e3:.2f} ({chain / seconds:.0%})"
            print(f"| {size:,} events | {seconds * 1e3:.2f} | {share} |")
        loop.close()
        store.close()

        stored, own = storage
        print("\n| storage (10,000-step thread) | bytes/event |")
        print("|---|---:|")
        print(f"| SQLite file (after checkpoint) | {stored:.0f} |")
        print(f"| the events' own JSON | {own:.0f} |")
        print(f"| ratio | {stored / own:.2f}× |")

        generated = next((folder / "cache").glob("counter-*.py"))
        inside, cpu, whole, heavy = import_time(generated)
        python_alone = min(
            _timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))
            for _ in range(5)
        )
        print("\n| import a generated module + twelvefold.runtime.api | ms |")
        print("|---|---:|")
        print(f"| the import itself | {inside * 1e3:.0f} |")
        print(f"| the import itself, CPU time | {cpu * 1e3:.0f} |")
        alone = f"`python -c 'pass'` alone: {python_alone * 1e3:.0f}"
        print(f"| whole process ({alone}) | {whole * 1e3:.0f} |")
        print(f"| openai or instructor loaded | {'yes (bad)' if heavy else 'no'} |")
        print()


def bytes_per_event(db: Path, bodies: list[str]) -> tuple[float, float]:
    connection = sqlite3.connect(db)
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    size = db.stat().st_size + sum(p.stat().st_size for p in db.parent.glob(db.name + "-*"))
    own = sum(len(b.encode()) for b in bodies) / len(bodies)
    return size / len(bodies), own


def _copy(store: SqliteStore, agent: Agent, thread_id: str, events: list[Event]) -> None:
    """Store a log as the loop leaves it: the first event, then appends (here one, with
    the state after the last event, as each append of the loop writes it)."""
    first = agent.module.replay(events[:1])
    at = now_iso()
    info = ThreadInfo(thread_id, agent.name, agent.origin, first.status, first.step, 1, at, at)
    store.create(info, events[:1], agent.codec)
    state = agent.module.replay(events)
    head = Head(state.status, state.step, state, agent.reducer)
    store.append(thread_id, 1, events[1:], agent.codec, head)


def _resume_point(
    loop: asyncio.AbstractEventLoop, engine: Engine, agent: Agent, thread_id: str
) -> None:
    thread = loop.run_until_complete(engine.load(agent, thread_id))
    agent.module.next_action(thread.state)


def _timed(work: Callable[[], object]) -> float:
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


if __name__ == "__main__":
    main()
