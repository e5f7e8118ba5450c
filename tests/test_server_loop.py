"""The server's event loop never waits on SQLite, and the timer keeps to `--concurrency`.

A commit can wait for the disk, or for another process's lock up to the busy timeout (10
s). The server answers every request on one event loop, so each store or table call made
from async code runs in a worker thread. These tests hold one such call (the launch's
`server_launches` row, the four-eyes lookup, a lease's release) closed until `/healthz`
has answered: on a build that makes the call on the loop, `/healthz` is answered only
after the call finished, and the test fails.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support.openai_server import Reply, ScriptedOpenAI
from tests.support.server import Served, deploy_project, deploy_responder, served

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("collected")]

BOUND = 60.0
"""How long a closed call waits before it goes on anyway (a bound for a broken build)."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Gate:
    """Wraps a blocking call: the call waits (in whatever thread made it) until `open`."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.finished = threading.Event()

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def closed(*args: Any, **kwargs: Any) -> Any:
            self.entered.set()
            self.opened.wait(BOUND)
            try:
                return function(*args, **kwargs)
            finally:
                self.finished.set()

        return closed


async def healthz_answers_while_closed(s: Served, gate: Gate, work: Any) -> Any:
    """Start `work` (a coroutine function), wait until it is inside the gated call, ask
    /healthz, and check the gated call had not finished when /healthz answered."""
    async with anyio.create_task_group() as group:
        result: dict[str, Any] = {}

        async def run() -> None:
            result["value"] = await work()

        group.start_soon(run)
        await anyio.to_thread.run_sync(gate.entered.wait, BOUND)
        assert gate.entered.is_set(), "the gated call was never made"
        async with s.client() as client:
            health = await client.get("/healthz")
        assert health.status_code == 200
        answered_first = not gate.finished.is_set()
        gate.opened.set()
    assert answered_first, "/healthz waited for a blocking call made on the event loop"
    return result["value"]


@pytest.fixture
async def s(tmp_path: Path, openai_server: ScriptedOpenAI) -> Any:
    agent = deploy_project(tmp_path / "p")
    async with served(agent, tmp_path / "threads.db", openai_server) as running:
        yield running


async def test_recording_the_launcher_does_not_stall_the_loop(
    s: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate()
    monkeypatch.setattr(s.service.launches, "record", gate.wrap(s.service.launches.record))

    async def launch() -> Any:
        async with s.client("bob") as client:
            return await client.post("/v1/agents/deploybot/threads", json={"input": "deploy"})

    response = await healthz_answers_while_closed(s, gate, launch)
    assert response.status_code == 202, response.text
    assert s.service.launches.launcher(response.json()["thread_id"]) == "bob"


async def test_letting_a_lease_go_does_not_stall_the_loop(
    s: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate()
    store = s.service.runtime.store
    # The release's work inside its group commit (`release_async` on the server's path).
    monkeypatch.setattr(store, "_release", gate.wrap(store._release))

    async def launch() -> Any:
        async with s.client("bob") as client:
            return await client.post("/v1/agents/deploybot/threads", json={"input": "deploy"})

    response = await healthz_answers_while_closed(s, gate, launch)
    assert response.status_code == 202, response.text


async def test_the_four_eyes_lookup_does_not_stall_the_loop(
    s: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with s.client("bob") as client:
        launched = await client.post(
            "/v1/agents/deploybot/threads?wait=true", json={"input": "deploy"}
        )
    view = launched.json()
    assert view["status"] == "waiting", view
    gate = Gate()
    launches = s.service.launches
    monkeypatch.setattr(launches, "launcher", gate.wrap(launches.launcher))

    async def approve() -> Any:
        async with s.client("ana") as client:
            return await client.post(
                f"/v1/threads/{view['thread_id']}/decisions",
                json={"request": view["request"], "decision": "approve"},
            )

    response = await healthz_answers_while_closed(s, gate, approve)
    assert response.status_code in (200, 202), response.text


async def test_the_timer_runs_no_more_threads_than_the_concurrency_limit(
    tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    """With `concurrency` 1, a thread whose approval timed out is run on only once the
    one running thread stops: never two model calls at once. (Before, the sweep ran the
    timed-out thread itself, beside the runner's.)"""
    agent = deploy_project(tmp_path / "p")
    agent.write_text(
        agent.read_text().replace(
            '  approvers "release-managers"\n', '  approvers "release-managers"\n  timeout 1s\n'
        )
    )
    blocked = threading.Event()
    release = threading.Event()
    lock = threading.Lock()
    in_flight = [0, 0]  # now, most at once

    def responder(body: dict[str, Any]) -> Reply:
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight[1], in_flight[0])
        try:
            text = str(body.get("messages"))
            if "HOLD" in text:
                blocked.set()
                release.wait(BOUND)
            return deploy_responder(body)
        finally:
            with lock:
                in_flight[0] -= 1

    openai_server.responder = responder
    async with served(agent, tmp_path / "threads.db", openai_server, concurrency=1) as s:
        async with s.client("bob") as client:
            first = await client.post(
                "/v1/agents/deploybot/threads?wait=true", json={"input": "deploy"}
            )
        waiting = first.json()
        assert waiting["status"] == "waiting", waiting

        await anyio.sleep(1.2)  # past the deadline (not an assertion on a duration)
        async with s.client("bob") as client:
            held = await client.post("/v1/agents/deploybot/threads", json={"input": "HOLD it"})
        assert held.status_code == 202
        await anyio.to_thread.run_sync(blocked.wait, BOUND)  # the one slot is taken
        async with anyio.create_task_group() as group:
            group.start_soon(s.service.sweep)
            # A broken build runs the timed-out thread now, beside the held one; give it
            # the chance (this wait only bounds how long a broken build is watched).
            with anyio.move_on_after(5):
                while in_flight[1] < 2:
                    await anyio.sleep(0.05)
            release.set()
        assert in_flight[1] == 1, "two threads ran at once with --concurrency 1"

        async def timed_out_and_ran_on() -> bool:
            async with s.client("bob") as client:
                found = await client.get(f"/v1/threads/{waiting['thread_id']}/events")
            kinds = [(e["kind"], e.get("by")) for e in found.json()]
            return ("rejected", "timeout") in kinds and kinds[-1][0] != "rejected"

        with anyio.fail_after(BOUND * 2):
            while not await timed_out_and_ran_on():
                await anyio.sleep(0.05)
