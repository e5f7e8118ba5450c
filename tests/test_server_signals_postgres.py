"""Duplicate signals on PostgreSQL (docs/server.md, "Signals"): a signal sent again with
the same `idempotency_key` gets the same 200 answer whichever process holds the thread at
that moment (the process that recorded the first copy, or a worker advancing it), and
nothing is recorded twice; a different signal racing a busy thread gets 409 "Thread busy".
The real service and app through httpx, a real PostgreSQL database, the real openai client
against the scripted model server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.support.openai_server import ScriptedOpenAI
from tests.support.server import Served, served
from tests.test_server_api import assert_problem, events
from tests.test_server_signals import (
    PAID,
    answered_once_the_run_ends_though_a_copy_held_the_lease,
    payment_project,
    signal,
    waiting,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("collected"), pytest.mark.postgres]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def s(tmp_path: Path, openai_server: ScriptedOpenAI, postgres_url: str) -> Any:
    project = payment_project(tmp_path / "project")
    async with served(project, postgres_url, openai_server) as running:
        yield running


def paid(view: dict[str, Any], key: str) -> dict[str, Any]:
    return {"type": "PaymentReceived", "value": PAID, "request": view["request"],
            "idempotency_key": key}  # fmt: skip


async def test_eight_copies_of_one_signal_at_once_all_get_200_and_one_is_recorded(
    s: Served,
) -> None:
    for _ in range(3):  # a race: a few rounds, each on a fresh thread
        view = await waiting(s)
        body = paid(view, "evt-1")
        replies = await asyncio.gather(*(signal(s, view["thread_id"], body) for _ in range(8)))
        assert [r.status_code for r in replies] == [200] * 8, [r.text for r in replies]
        logged = await events(s, view["thread_id"])
        assert len([e for e in logged if e["kind"] == "signalled"]) == 1


async def test_a_run_that_finds_the_lease_held_a_moment_goes_on_once_it_is_let_go(
    s: Served,
) -> None:
    await answered_once_the_run_ends_though_a_copy_held_the_lease(s)


async def test_a_duplicate_gets_200_while_another_process_holds_the_thread(s: Served) -> None:
    view = await waiting(s)
    first = await signal(s, view["thread_id"], paid(view, "evt-1"))
    assert first.status_code == 200, first.text
    store = s.service.runtime.store
    # Another process (a worker) takes the thread now, e.g. to wake it from its sleep.
    lease = await asyncio.to_thread(store.acquire, view["thread_id"], "worker-7", 60)
    try:
        again = await signal(s, view["thread_id"], paid(view, "evt-1"))
        assert again.status_code == 200, again.text
        assert again.json()["events"] == first.json()["events"]
        # A signal that is no duplicate is refused while the thread is busy.
        other = await signal(s, view["thread_id"], paid(view, "evt-2"))
        assert_problem(other, 409)
        assert other.json()["title"] == "Thread busy"
    finally:
        await asyncio.to_thread(store.release, lease)
    logged = await events(s, view["thread_id"])
    assert len([e for e in logged if e["kind"] == "signalled"]) == 1
