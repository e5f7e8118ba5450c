"""Many threads in one process: durable throughput with group commit, and threads that
wait on a slow model.

1. Group commit (runtime/commits.py): the counter agent (tests/runtime_fixtures) with an
   instant model, `AsyncRuntime` over SQLite with `offload` (as the server runs it), one
   thread alone against 100 threads at once; durable steps per second, and how many
   appends each transaction held.
2. Many threads at once: the counter agent with the real openai + instructor client
   against the scripted model (tests/support/openai_server.py's replies, served by
   aiohttp's server in its own process: `_SERVER`), answering every call after 100 ms, on
   the event loop twelvefold makes (uvloop's when installed, as `Runtime`, the worker and
   `serve` run); 100 and 1,000 threads launched together, each
   making MODEL_CALLS model calls (and as many instant tool calls), in memory. The ideal
   is steps × latency ÷ concurrency: every thread's calls back to back, all threads
   overlapping. Reported: wall time against the ideal, this process's CPU time per model
   call, peak memory per waiting thread, and (for 1,000) where the CPU went by package;
   beside them the scripted server's own CPU per request (it shares the machine's cores).
   Two floors put the seconds in context: the same requests sent by a raw aiohttp client
   with no runtime (100 tasks of MODEL_CALLS requests each, back to back: what this machine
   allows at this moment), and for 1,000 threads the cap on model calls in flight
   (runtime/ratelimit.py, `DEFAULT_IN_FLIGHT`), which lets 100 wait at once.
3. The model client alone: the requests one thread made, sent again through
   `OpenAIModel.complete` 100 at a time with no runtime around them; CPU per call (the
   client's own cost: building the request, openai and its transport, validating the
   reply), and a raw aiohttp POST of the same body for the floor under any client.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.runtime import COUNTER, FIXTURES, InstantModel, no_messages
from twelvefold.runtime.api import AsyncRuntime
from twelvefold.runtime.eventloop import collect_less_often, new_event_loop
from twelvefold.runtime.loop import Agent
from twelvefold.runtime.model import CallModel
from twelvefold.runtime.spec import AgentSpec
from twelvefold.runtime.store import MemoryStore, SqliteStore

T = TypeVar("T")

MODEL_LATENCY = 0.1
MODEL_CALLS = 5
"""Model calls per thread in part 2 (four `Bump`s, then `Done`)."""


# ---- 1. group commit -------------------------------------------------------------------


async def _durable(agent: Agent, db: Path, threads: int, steps: int) -> tuple[float, Any]:
    """Seconds for `threads` counter threads of `steps` actions each, run at once."""
    store = SqliteStore(db)
    model = InstantModel(agent, steps // 2)
    rt = AsyncRuntime(store, model=model, tool_paths=[FIXTURES], messages=no_messages)
    began = time.perf_counter()
    views = await asyncio.gather(*(rt.launch(agent, "count") for _ in range(threads)))
    elapsed = time.perf_counter() - began
    assert all(v.status == "finished" for v in views), views
    stats = store.commits.stats
    store.close()
    return elapsed, stats


ROUNDS = 3
"""Runs of each, alternating (one thread, then 100), so both meet the same disk and load."""


def group_commit(agent: Agent, folder: Path) -> None:
    print(f"### Group commit (best of {ROUNDS} alternating rounds)\n")
    print(
        "| threads at once | durable steps | seconds | steps/s | CPU per step (µs) |"
        " appends per transaction |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    best: dict[int, tuple[float, float, Any]] = {}
    for round_ in range(ROUNDS):
        for threads, steps in ((1, 400), (100, 40)):
            db = folder / f"g{threads}-{round_}.db"
            cpu = time.process_time()
            elapsed, stats = asyncio.run(_durable(agent, db, threads, steps))
            cpu = time.process_time() - cpu
            if threads not in best or elapsed < best[threads][0]:
                best[threads] = (elapsed, cpu, stats)
    rates = {}
    for threads, steps in ((1, 400), (100, 40)):
        elapsed, cpu, stats = best[threads]
        total = threads * (steps + 1)
        rates[threads] = total / elapsed
        per = stats.members / max(stats.groups, 1)
        print(
            f"| {threads} | {total:,} | {elapsed:.2f} | {rates[threads]:,.0f} |"
            f" {cpu / total * 1e6:.0f} | {per:.2f} (largest {stats.largest}) |"
        )
    print(f"\n100 threads at once: {rates[100] / rates[1]:.1f}× the steps/s of one thread.\n")


# ---- 2. waiting on a slow model ----------------------------------------------------------

_SERVER = """
import asyncio, itertools, json, sys
from aiohttp import web
from benchmarks.concurrency import counter_responder
from tests.support.openai_server import completion

latency = float(sys.argv[1])
served = itertools.count(1)

async def chat(request):
    body = json.loads(await request.read())
    await asyncio.sleep(latency)
    payload = completion(body, counter_responder(body), n=next(served))
    return web.Response(body=json.dumps(payload).encode(), content_type="application/json")

async def main():
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=2048)  # 1,000 clients connect at once
    await site.start()
    print(f"http://127.0.0.1:{runner.addresses[0][1]}/v1", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""
"""The scripted model of part 2: the replies of tests/support/openai_server.py (its
`completion`, with `counter_responder`), served by aiohttp's server on asyncio in a process
of its own. The tests' `ScriptedOpenAI` (Python's threading HTTP server, a thread per
connection) is the same model but not the same latency: its 100 threads woken at once
queue for its interpreter lock, so its answers came 30–60 ms late each round (a raw aiohttp
client took 1.46–1.68× the ideal against it, 1.12–1.16× against this one, quiet machine),
and the benchmark measured that server more than the client."""


def counter_responder(body: dict[str, Any]) -> Any:
    """The scripted server's answer to a counter request: the value is the user message."""
    from tests.support.openai_server import Reply

    n = json.loads(body["messages"][-1]["content"])["n"]
    kind = "Done" if n >= MODEL_CALLS - 1 else "Bump"
    return Reply(arguments={"choice": {"type": kind, "n": n}})


def value_message(spec: AgentSpec, action: CallModel, events: Any, prompts: Path) -> list[Any]:
    """The only message: the value at `decide` (the prompt's cost is not measured here)."""
    value = action.value
    n = value.n if hasattr(value, "n") else 0
    return [{"role": "user", "content": json.dumps({"n": n})}]


async def _waiting(
    agent: Agent, base_url: str, threads: int, server: int | None = None
) -> dict[str, Any]:
    from twelvefold.runtime.model import OpenAIModel

    model = OpenAIModel(base_url=base_url, api_key="bench", transport_retries=0)
    rt = AsyncRuntime(
        MemoryStore(), model=model, tool_paths=[FIXTURES], messages=value_message, offload=False
    )
    await rt.launch(agent, "warm-up")  # imports openai and instructor, opens the pool
    rss_before = _rss()
    peak = rss_before
    server_cpu = _cpu_of(server)
    cpu = time.process_time()
    began = time.perf_counter()
    launched = [asyncio.ensure_future(rt.launch(agent, "count")) for _ in range(threads)]
    while not all(task.done() for task in launched):
        peak = max(peak, _rss())
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu
    server_cpu = _cpu_of(server) - server_cpu
    views = [task.result() for task in launched]
    failed = Counter(
        str(v.to_json().get("error", {}).get("type")) for v in views if v.status != "finished"
    )
    await model.aclose()
    return {
        "elapsed": elapsed,
        "ideal": MODEL_CALLS * MODEL_LATENCY,
        "cpu_per_call_ms": cpu / (threads * MODEL_CALLS) * 1e3,
        "server_ms": server_cpu / (threads * MODEL_CALLS) * 1e3,
        "kib_per_thread": (peak - rss_before) / threads / 1024,
        "failed": ", ".join(f"{n} {kind}" for kind, n in failed.items()) or "none",
    }


def _cpu_of(pid: int | None) -> float:
    """Seconds of CPU process `pid` has used (user and system, all its threads; Linux),
    0 without one."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss() -> int:
    """This process's resident memory now, in bytes (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def where_the_cpu_goes(profile: cProfile.Profile) -> list[tuple[str, float]]:
    """Own time per package (openai, httpx, instructor, pydantic, asyncio, twelvefold...)."""
    stats = pstats.Stats(profile)
    spent: Counter[str] = Counter()
    for (file, _, _), (_, _, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        spent[_package(file)] += own
    total = sum(spent.values())
    return [(name, seconds / total) for name, seconds in spent.most_common(9)]


def _package(file: str) -> str:
    if file == "~":  # cProfile's name for built-in functions (C code, `len`, locks...)
        return "built-ins"
    parts = Path(file).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    for name in ("runtime", "benchmarks", "asyncio", "json", "ssl", "http"):
        if name in parts:
            return "twelvefold" if name == "runtime" else name
    return "python (other)" if file.startswith(("/", "<")) else file


async def raw_threads(base_url: str, threads: int) -> tuple[float, float]:
    """Seconds and CPU ms per request for `threads` tasks each sending the counter's
    MODEL_CALLS requests back to back through a bare aiohttp session (no openai client,
    no runtime, no validation): the floor this machine allows at this moment."""
    import aiohttp

    async with aiohttp.ClientSession() as session:

        async def thread() -> None:
            for n in range(MODEL_CALLS):
                message = {"role": "user", "content": json.dumps({"n": n})}
                body = {"model": "bench", "messages": [message]}
                async with session.post(f"{base_url}/chat/completions", json=body) as got:
                    json.loads(await got.read())

        await thread()  # the first connection
        cpu = time.process_time()
        began = time.perf_counter()
        await asyncio.gather(*(thread() for _ in range(threads)))
        elapsed = time.perf_counter() - began
        return elapsed, (time.process_time() - cpu) / (threads * MODEL_CALLS) * 1e3


def on_twelvefolds_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """`coroutine`'s result, run on the event loop twelvefold makes for its threads
    (runtime/eventloop.py: uvloop's when installed), as `Runtime`, `run`, `resume` and
    `worker` run them (and `serve`, whose uvicorn picks uvloop too)."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(coroutine)


def many_threads(agent: Agent) -> None:
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(MODEL_LATENCY)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    collected = gc.get_threshold()
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            loop = type(runner.get_loop()).__module__.split(".")[0]
        collect_less_often()  # as `serve` and `worker` do
        print(
            "### Many threads waiting on a model that answers after 100 ms"
            f" (event loop: {loop}'s; garbage collector thresholds {gc.get_threshold()},"
            " both as in `serve` and `worker`)\n"
        )
        print(
            "| threads at once | seconds | ideal (s) | ratio | CPU per model call (ms) |"
            " memory per thread (KiB) | failed threads | server CPU per request (ms) |"
        )
        print("|---:|---:|---:|---:|---:|---:|---|---:|")
        for threads in (100, 1_000):
            got = on_twelvefolds_loop(_waiting(agent, base_url, threads, server.pid))
            print(
                f"| {threads:,} | {got['elapsed']:.2f} | {got['ideal']:.2f} | "
                f"{got['elapsed'] / got['ideal']:.2f}× | {got['cpu_per_call_ms']:.2f} | "
                f"{got['kib_per_thread']:.0f} | {got['failed']} | {got['server_ms']:.2f} |"
            )
        from twelvefold.runtime.ratelimit import DEFAULT_IN_FLIGHT

        capped = MODEL_CALLS * MODEL_LATENCY * 1_000 / DEFAULT_IN_FLIGHT
        elapsed, raw_cpu = on_twelvefolds_loop(raw_threads(base_url, 100))
        print(
            f"\nFloors: a raw aiohttp client sending the same 100 × {MODEL_CALLS} requests "
            f"took {elapsed:.2f} s ({elapsed / (MODEL_CALLS * MODEL_LATENCY):.2f}× the ideal; "
            f"{raw_cpu:.2f} ms of CPU a request); 1,000 threads with at most "
            f"{DEFAULT_IN_FLIGHT} model calls in flight cannot take less than {capped:.1f} s."
        )
        profile = cProfile.Profile()
        profile.enable()
        on_twelvefolds_loop(_waiting(agent, base_url, 1_000))
        profile.disable()
        shares = ", ".join(f"{name} {share:.0%}" for name, share in where_the_cpu_goes(profile))
        print(f"\nCPU of the 1,000-thread run by package (cProfile, own time): {shares}.\n")
        client, floor = on_twelvefolds_loop(client_alone(agent, base_url))
        print(
            f"The model client alone, 100 calls at once: {client:.2f} ms of CPU per call "
            f"(a raw aiohttp POST of the same request: {floor:.2f} ms).\n"
        )
    finally:
        gc.set_threshold(*collected)
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=30)


# ---- 3. the model client alone -------------------------------------------------------------


class _Recorder:
    """A `Model` that passes each request on and keeps it."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.requests: list[Any] = []

    async def complete(self, request: Any) -> Any:
        self.requests.append(request)
        return await self.model.complete(request)


async def client_alone(agent: Agent, base_url: str, calls: int = 500) -> tuple[float, float]:
    """CPU ms per `OpenAIModel.complete` call, 100 at once, best of three rounds of `calls`;
    and per raw aiohttp POST of the first request's body (the floor under any client)."""
    import aiohttp

    from twelvefold.runtime.model import OpenAIModel

    model = OpenAIModel(base_url=base_url, api_key="bench", transport_retries=0)
    recorder = _Recorder(model)
    rt = AsyncRuntime(
        MemoryStore(), model=recorder, tool_paths=[FIXTURES], messages=value_message, offload=False
    )
    await rt.launch(agent, "one thread")
    made = recorder.requests
    requests = [made[i % len(made)] for i in range(calls)]
    gate = asyncio.Semaphore(100)

    async def call(request: Any) -> None:
        async with gate:
            await model.complete(request)

    best = float("inf")
    for _ in range(3):
        cpu = time.process_time()
        await asyncio.gather(*(call(r) for r in requests))
        best = min(best, (time.process_time() - cpu) / calls)
    body = await model.preview(made[0])
    await model.aclose()

    floor = float("inf")
    async with aiohttp.ClientSession() as session:

        async def post() -> None:
            async with gate, session.post(f"{base_url}/chat/completions", json=body) as got:
                await got.read()

        for _ in range(3):
            cpu = time.process_time()
            await asyncio.gather(*(post() for _ in range(calls)))
            floor = min(floor, (time.process_time() - cpu) / calls)
    return best * 1e3, floor * 1e3


def main() -> None:
    os.environ.pop("COUNTER_LOG", None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        agent = AsyncRuntime(cache_dir=folder / "cache").agent(COUNTER)
        print("## Many threads in one process\n")
        group_commit(agent, folder)
        many_threads(agent)


if __name__ == "__main__":
    main()
