"""`twelvefold serve` under load (issue 10): threads launched and approved over HTTP.

A real `twelvefold serve` process on loopback serves deploybot (examples/, copied into a
temporary project: list the tags, choose the newest, an approval by a release manager,
deploy, report), SQLite, the real openai client against the scripted model server
(tests/support/openai_server.py), which answers every completion after 50 ms. Tokens
come from `twelvefold token create`: `bob` launches, `ana` (a release manager) approves.

- Launchers: THREADS launches (`POST /v1/agents/deploybot/threads`), at most CLIENTS
  requests in flight at once.
- The approver: `GET /v1/threads?status=waiting` ten times a second, and a decision
  (`POST /v1/threads/{id}/decisions`, approve) for each pending request seen.
- The probe, in its own OS thread and connection: `GET /v1/threads/{id}` (a thread
  launched so far, chosen at random) and `GET /v1/requests` (the inbox as data), one
  after the other, every 50 ms while threads run; their latency percentiles are the
  "API calls while threads run".
- When every thread has finished (bounded by TIMEOUT, a clear failure otherwise), the
  audit: for every thread, the event log over HTTP (`GET /v1/threads/{id}/events`)
  numbered 1..n with no gap, `started` first, the approval the server acknowledged at
  the place its answer said, the thread finished, and the same events as the store holds
  once the server stopped (loaded with the store's own verification: the hash chain
  recomputed against the sealed head). Every event missing or different is a lost event.

Settings (environment): TWELVEFOLD_BENCH_THREADS (1000), TWELVEFOLD_BENCH_CONCURRENCY
(the server's `--concurrency`, 8 = its default), TWELVEFOLD_BENCH_CLIENTS (16),
TWELVEFOLD_BENCH_TIMEOUT (seconds for every thread to finish, 900),
TWELVEFOLD_BENCH_PROFILE (a file: run the server under cProfile and print its top
functions). Traffic goes only to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import io
import os
import pstats
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.openai_server import ScriptedOpenAI
from tests.support.serve_process import free_port, make_token
from tests.support.server import deploy_project, deploy_responder
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.loop import Agent
from twelvefold.runtime.store import SqliteStore

MODEL_LATENCY = 0.05
"""Seconds the scripted model takes to answer each completion (issue 10)."""
AGENT = "deploybot"
MODEL_CALLS_PER_THREAD = 3
"""deploybot's path here: list tags, choose the deploy (then the approval), report."""


def _setting(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


@dataclass
class Settings:
    threads: int = int(_setting("TWELVEFOLD_BENCH_THREADS", 1000))
    concurrency: int = int(_setting("TWELVEFOLD_BENCH_CONCURRENCY", 8))
    clients: int = int(_setting("TWELVEFOLD_BENCH_CLIENTS", 16))
    timeout: float = _setting("TWELVEFOLD_BENCH_TIMEOUT", 900)
    profile: str | None = os.environ.get("TWELVEFOLD_BENCH_PROFILE") or None


class BenchFailed(Exception):
    """The run could not complete; the message says what was left and where the log is."""


@dataclass
class Ledger:
    """What the server acknowledged, and how long each call took (seconds)."""

    launched: dict[str, int] = field(default_factory=dict)
    """thread id -> events in the launch's 202 view."""
    decided: dict[str, tuple[str, int]] = field(default_factory=dict)
    """thread id -> (the request approved, events in the decision's 200 view)."""
    deciding: set[str] = field(default_factory=set)
    warm_up: set[str] = field(default_factory=set)
    """Threads run before the clock started (left out of the audit's count)."""
    refused: list[str] = field(default_factory=list)
    """Calls answered with an unexpected status (each a line)."""
    timings: dict[str, list[float]] = field(default_factory=dict)
    started: float = 0.0
    launches_done: float = 0.0
    finished: float = 0.0

    def timed(self, label: str, seconds: float) -> None:
        self.timings.setdefault(label, []).append(seconds)


# ---- the server process --------------------------------------------------------------


@dataclass
class Server:
    project: Path
    db: Path
    log: Path
    env: dict[str, str]
    concurrency: int
    profile: str | None
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        profiler = ["-m", "cProfile", "-o", self.profile] if self.profile else []
        command = [sys.executable, *profiler, "-m", "twelvefold", "serve", str(self.project)]
        command += ["--db", str(self.db), "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--concurrency", str(self.concurrency)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, env={**os.environ, **self.env}, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise BenchFailed(f"the server exited at start; its log: {self.log}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise BenchFailed(f"the server did not answer /healthz in 60 s; log: {self.log}")
            time.sleep(0.05)

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server process so far (Linux /proc), else None."""
        assert self.process is not None
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def stop(self) -> None:
        """SIGTERM and wait; kill -9 after 60 s. A profiled server gets SIGINT instead:
        uvicorn raises the signal it stopped on again once it has shut down, and only
        SIGINT (a KeyboardInterrupt) lets cProfile write its file on the way out."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT if self.profile else signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=60)


# ---- the probe -----------------------------------------------------------------------


class Probe(threading.Thread):
    """`GET /v1/threads/{id}` and `GET /v1/requests` every 50 ms, on its own connection
    and OS thread, until `stop` (or 200,000 calls)."""

    def __init__(self, url: str, token: str, ledger: Ledger) -> None:
        super().__init__(name="probe", daemon=True)
        self.url, self.token, self.ledger = url, token, ledger
        self.stopping = threading.Event()
        self.samples: dict[str, list[float]] = {"thread": [], "requests": []}
        self.errors: list[str] = []

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=60) as client:
            for _ in range(100_000):
                if self.stopping.is_set():
                    return
                known = list(self.ledger.launched)
                if known:
                    self._call(client, "thread", f"/v1/threads/{random.choice(known)}")
                self._call(client, "requests", "/v1/requests")
                self.stopping.wait(0.05)

    def _call(self, client: httpx.Client, label: str, path: str) -> None:
        began = time.perf_counter()
        try:
            response = client.get(path)
        except httpx.HTTPError as exc:
            self.errors.append(f"GET {path}: {type(exc).__name__}: {exc}")
            return
        self.samples[label].append(time.perf_counter() - began)
        if response.status_code != 200:
            self.errors.append(f"GET {path}: {response.status_code} {response.text[:200]}")


# ---- launch, approve, wait -----------------------------------------------------------


async def _launch_all(client: httpx.AsyncClient, settings: Settings, ledger: Ledger) -> None:
    slots = asyncio.Semaphore(settings.clients)

    async def one(index: int) -> None:
        async with slots:
            began = time.perf_counter()
            response = await client.post(
                f"/v1/agents/{AGENT}/threads", json={"input": f"deploy the newest build #{index}"}
            )
            ledger.timed("launch", time.perf_counter() - began)
        if response.status_code != 202:
            ledger.refused.append(f"launch {index}: {response.status_code} {response.text[:200]}")
            return
        view = response.json()
        ledger.launched[view["thread_id"]] = view["events"]

    await asyncio.gather(*(one(i) for i in range(settings.threads)))
    ledger.launches_done = time.perf_counter()


async def _approve(client: httpx.AsyncClient, thread_id: str, request: str, ledger: Ledger) -> None:
    began = time.perf_counter()
    response = await client.post(
        f"/v1/threads/{thread_id}/decisions", json={"request": request, "decision": "approve"}
    )
    ledger.timed("decision", time.perf_counter() - began)
    if response.status_code != 200:
        ledger.refused.append(f"decide {thread_id}: {response.status_code} {response.text[:200]}")
        return
    ledger.decided[thread_id] = (request, response.json()["events"])


async def _approve_until_done(
    client: httpx.AsyncClient, settings: Settings, ledger: Ledger, launching: asyncio.Task[None]
) -> None:
    """Approve what waits, until every launched thread stopped running and waiting; a
    `BenchFailed` past the timeout, with how many threads stood where."""
    slots = asyncio.Semaphore(settings.clients)
    deciding: set[asyncio.Task[None]] = set()
    deadline = time.monotonic() + settings.timeout
    last_running_check = 0.0
    running: int | None = None

    async def approve(thread_id: str, request: str) -> None:
        async with slots:
            await _approve(client, thread_id, request, ledger)

    while True:
        if time.monotonic() > deadline:
            raise BenchFailed(
                f"not every thread finished within {settings.timeout:.0f} s: "
                f"{len(ledger.launched)} launched, {len(ledger.decided)} approved, "
                f"{running} still running (TWELVEFOLD_BENCH_TIMEOUT sets the limit)"
            )
        waiting = (await client.get("/v1/threads", params={"status": "waiting"})).json()
        for summary in waiting:
            thread_id = summary["thread_id"]
            if thread_id in ledger.deciding or summary["request"] is None:
                continue
            ledger.deciding.add(thread_id)
            task = asyncio.create_task(approve(thread_id, summary["request"]))
            deciding.add(task)
            task.add_done_callback(deciding.discard)
        # Checking what runs is a long listing while launches queue: once a second,
        # then five times a second once every thread was launched and approved.
        settled = launching.done() and len(ledger.deciding) >= len(ledger.launched)
        now = time.monotonic()
        if now - last_running_check > (0.2 if settled else 1.0):
            last_running_check = now
            listed = await client.get("/v1/threads", params={"status": "running"})
            running = len(listed.json())
            if settled and not deciding and running == 0 and not waiting:
                ledger.finished = time.perf_counter()
                return
        await asyncio.sleep(0.1)


def _warm_up(url: str, tokens: dict[str, str], ledger: Ledger) -> float:
    """One thread launched and approved with `?wait=true` before the clock starts (the
    first model call imports openai and instructor); its seconds, launch to finished."""
    began = time.perf_counter()
    with (
        httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {tokens['bob']}"}, timeout=120
        ) as bob,
        httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {tokens['ana']}"}, timeout=120
        ) as ana,
    ):
        launched = bob.post(
            f"/v1/agents/{AGENT}/threads", params={"wait": "true"}, json={"input": "warm up"}
        ).json()
        ledger.warm_up.add(launched.get("thread_id", ""))
        if launched.get("status") != "waiting":
            raise BenchFailed(f"the warm-up thread did not pause for approval: {launched}")
        decided = ana.post(
            f"/v1/threads/{launched['thread_id']}/decisions",
            params={"wait": "true"},
            json={"request": launched["request"], "decision": "approve"},
        ).json()
        if decided.get("status") != "finished":
            raise BenchFailed(f"the warm-up thread did not finish: {decided}")
    return time.perf_counter() - began


async def _drive(url: str, tokens: dict[str, str], settings: Settings, ledger: Ledger) -> None:
    limits = httpx.Limits(max_connections=settings.clients + 2)

    def client(person: str) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {tokens[person]}"}
        return httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits)

    async with client("bob") as bob, client("ana") as ana:
        ledger.started = time.perf_counter()
        launching = asyncio.create_task(_launch_all(bob, settings, ledger))
        await _approve_until_done(ana, settings, ledger, launching)
        await launching


# ---- the audit -----------------------------------------------------------------------


@dataclass
class Audit:
    lost: int = 0
    problems: list[str] = field(default_factory=list)
    events: int = 0

    def lose(self, count: int, problem: str) -> None:
        self.lost += count
        self.problems.append(problem)


async def _fetch_logs(
    url: str, token: str, ids: list[str], clients: int
) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Every thread's view and event log over HTTP."""
    slots = asyncio.Semaphore(clients)
    found: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:

        async def one(thread_id: str) -> None:
            async with slots:
                view = (await client.get(f"/v1/threads/{thread_id}")).json()
                events = (await client.get(f"/v1/threads/{thread_id}/events")).json()
            found[thread_id] = (view, events)

        await asyncio.gather(*(one(i) for i in ids))
    return found


def _audit(
    ledger: Ledger,
    over_http: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]],
    db: Path,
    agent: Agent,
) -> Audit:
    audit = Audit()
    store = SqliteStore(db, create=False)
    try:
        stored_ids = {info.id for info in store.threads() if info.agent == AGENT}
        stored_ids -= ledger.warm_up
        for thread_id in sorted(set(ledger.launched) - stored_ids):
            audit.lose(ledger.launched[thread_id], f"{thread_id}: acknowledged, not stored")
        for thread_id in sorted(stored_ids - set(ledger.launched)):
            audit.problems.append(f"{thread_id}: stored, never acknowledged")
        for thread_id, acknowledged in sorted(ledger.launched.items()):
            if thread_id in stored_ids:
                _audit_thread(audit, ledger, thread_id, acknowledged, over_http, store, agent)
    finally:
        store.close()
    return audit


def _audit_thread(
    audit: Audit,
    ledger: Ledger,
    thread_id: str,
    acknowledged: int,
    over_http: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]],
    store: SqliteStore,
    agent: Agent,
) -> None:
    try:
        stored = store.load(thread_id, agent.codec)  # the chain recomputed and checked
    except Exception as exc:
        audit.lose(1, f"{thread_id}: the store refuses its log: {exc}")
        return
    audit.events += len(stored)
    view, events = over_http.get(thread_id, ({}, []))
    numbers = [event.get("seq") for event in events]
    if numbers != list(range(1, len(events) + 1)):
        audit.lose(
            len(set(range(1, len(events) + 1)) - set(numbers)) or 1,
            f"{thread_id}: numbered {numbers}, not 1..{len(events)}",
        )
    if len(events) != len(stored):
        audit.lose(
            abs(len(stored) - len(events)),
            f"{thread_id}: {len(events)} events over HTTP, {len(stored)} stored",
        )
    for seq, (sent, kept) in enumerate(zip(events, stored, strict=False), start=1):
        if {k: v for k, v in sent.items() if k != "seq"} != agent.codec.encode_event(kept):
            audit.lose(1, f"{thread_id}: event {seq} over HTTP differs from the stored one")
    if not events or events[0].get("kind") != "started":
        audit.lose(1, f"{thread_id}: the log does not begin with `started`")
    if max(acknowledged, view.get("events", 0)) > len(stored):
        audit.lose(
            max(acknowledged, view["events"]) - len(stored),
            f"{thread_id}: acknowledged more events than the log holds",
        )
    decided = ledger.decided.get(thread_id)
    if decided is None:
        audit.problems.append(f"{thread_id}: never approved")
    else:
        request, at = decided
        kept = events[at - 1] if 0 < at <= len(events) else {}
        if (kept.get("kind"), kept.get("request"), kept.get("by")) != ("approved", request, "ana"):
            audit.lose(1, f"{thread_id}: the acknowledged approval is not event {at}: {kept}")
    state = agent.module.replay(stored)
    if state.status != "finished" or view.get("status") != "finished":
        audit.lose(1, f"{thread_id}: {view.get('status')} (replayed: {state.status}), not finished")


# ---- the report ----------------------------------------------------------------------


def _percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds (linear interpolation between samples)."""
    if not samples:
        return float("nan"), float("nan")
    ordered = sorted(samples)
    quantiles = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else []
    p50 = statistics.median(ordered)
    p99 = quantiles[98] if quantiles else ordered[0]
    return p50 * 1e3, p99 * 1e3


def _report(
    settings: Settings,
    ledger: Ledger,
    probe: Probe,
    audit: Audit,
    cpu: float | None,
    loads: tuple[tuple[float, ...], tuple[float, ...]],
    bench_cpu: float,
) -> None:
    threads = len(ledger.launched)
    elapsed = ledger.finished - ledger.started
    launching = ledger.launches_done - ledger.started
    bound = settings.concurrency / (MODEL_CALLS_PER_THREAD * MODEL_LATENCY)
    print("## Server under load\n")
    print(
        f"{threads:,} deploybot threads launched and approved over HTTP (`twelvefold serve"
        f" --concurrency {settings.concurrency}`, {settings.clients} concurrent clients); each"
        f" makes {MODEL_CALLS_PER_THREAD} model calls answered after"
        f" {MODEL_LATENCY * 1e3:.0f} ms, runs 2 tools and pauses once for an approval.\n"
    )
    print("| figure | value |")
    print("|---|---:|")
    print(
        f"| threads/s, first launch to last finished ({elapsed:.1f} s) | {threads / elapsed:.1f} |"
    )
    print(f"| launches acknowledged/s ({launching:.1f} s for all) | {threads / launching:.1f} |")
    print(f"| bound set by --concurrency and the model's latency (threads/s) | {bound:.1f} |")
    rows = [
        ("`GET /v1/threads/{id}` (probe)", probe.samples["thread"]),
        ("`GET /v1/requests` (probe)", probe.samples["requests"]),
        ("`POST /v1/agents/deploybot/threads`", ledger.timings.get("launch", [])),
        ("`POST /v1/threads/{id}/decisions`", ledger.timings.get("decision", [])),
    ]
    for label, samples in rows:
        p50, p99 = _percentiles(samples)
        print(f"| {label}: p50 / p99 (ms), {len(samples):,} calls | {p50:.0f} / {p99:.0f} |")
    print(f"| lost events (of {audit.events:,} stored) | {audit.lost} |")
    if cpu is not None:
        print(f"| server CPU time per thread (ms) | {cpu / max(1, threads) * 1e3:.1f} |")
    print(f"| benchmark process CPU (clients, probe, model server) (s) | {bench_cpu:.1f} |")
    before, after = loads
    print(
        f"| load average (1 min) before / after, {os.cpu_count()} cores "
        f"| {before[0]:.2f} / {after[0]:.2f} |"
    )
    print()
    problems = audit.problems + ledger.refused + probe.errors
    if problems:
        print(f"Problems ({len(problems)}; the first 20):\n")
        for line in problems[:20]:
            print(f"- {line}")
        print()


def _print_profile(path: str) -> None:
    out = io.StringIO()
    stats = pstats.Stats(path, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)
    print(f"Server profile ({path}):\n\n```\n{out.getvalue()}\n```\n")


def run(settings: Settings) -> None:
    folder = Path(tempfile.mkdtemp(prefix="twelvefold-serverbench-"))
    kept = True
    model = ScriptedOpenAI(responder=deploy_responder, latency=MODEL_LATENCY).start()
    project = folder / "project"
    agent_file = deploy_project(project)
    db = folder / "threads.db"
    env = {
        "OPENAI_BASE_URL": model.base_url,
        "OPENAI_API_KEY": "test",
        "TWELVEFOLD_DB": "",
        "NO_PROXY": "127.0.0.1",
    }
    server = Server(project, db, folder / "serve.log", env, settings.concurrency, settings.profile)
    try:
        tokens = {person: make_token(db, person) for person in ("bob", "ana")}
        agent = Runtime(cache_dir=folder / "cache").agent(agent_file)
        loads_before = os.getloadavg()
        bench_before = resource.getrusage(resource.RUSAGE_SELF)
        server.start()
        ledger = Ledger()
        warm_up = _warm_up(server.url, tokens, ledger)
        cpu_at_start = server.cpu_seconds()
        probe = Probe(server.url, tokens["ana"], ledger)
        probe.start()
        try:
            asyncio.run(_drive(server.url, tokens, settings, ledger))
        finally:
            probe.stopping.set()
            probe.join(timeout=120)
        cpu_now = server.cpu_seconds()
        cpu = None if cpu_now is None or cpu_at_start is None else cpu_now - cpu_at_start
        loads_after = os.getloadavg()
        bench_after = resource.getrusage(resource.RUSAGE_SELF)
        bench_cpu = (bench_after.ru_utime - bench_before.ru_utime) + (
            bench_after.ru_stime - bench_before.ru_stime
        )
        over_http = asyncio.run(
            _fetch_logs(server.url, tokens["ana"], list(ledger.launched), settings.clients)
        )
        server.stop()
        audit = _audit(ledger, over_http, db, agent)
        _report(settings, ledger, probe, audit, cpu, (loads_before, loads_after), bench_cpu)
        print(
            f"The warm-up thread, before the clock (the server's first thread and model "
            f"call): {warm_up:.1f} s launch to finished.\n"
        )
        if settings.profile:
            _print_profile(settings.profile)
        kept = bool(audit.lost or audit.problems or ledger.refused)
        if kept:
            raise BenchFailed(f"{audit.lost} lost events, {len(audit.problems)} problems")
    finally:
        server.stop()
        model.stop()
        if kept:
            print(f"(kept for a look: {folder}; the server's log: {server.log})", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    try:
        run(Settings())
    except BenchFailed as exc:
        print(f"server benchmark FAILED: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
