"""POST /v1/threads/{id}/signals through httpx against the app, with the real service,
SQLite and the real openai client against the scripted model server: an outside event
for examples/payment.agent's `wait` (issue 12, item 4). 422 for a wrong type or shape,
409 when the thread does not wait for it, a repeated idempotency key dropped; every
refusal leaves the log as it was.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.runtime_helpers import EXAMPLES
from tests.support.openai_server import ScriptedOpenAI
from tests.support.server import Served, served
from tests.test_server_api import assert_problem, events
from twelvefold.runtime.api import ThreadView

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("collected")]
ORDER = {"order_id": "o-1", "email": "ana@example.com", "amount_cents": 1250}
PAID = {"invoice_id": "inv-1", "amount_cents": 1250, "reference": "pay-77"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def payment_project(folder: Path, config: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLES / "payment.agent", folder / "payment.agent")
    shutil.copytree(EXAMPLES / "payment", folder / "payment", dirs_exist_ok=True)
    shutil.copytree(EXAMPLES.parent / "prompts" / "payment", folder / "prompts" / "payment")
    (folder / "twelvefold.toml").write_text(config)
    return folder / "payment.agent"


@pytest.fixture
async def s(tmp_path: Path, openai_server: ScriptedOpenAI) -> Any:
    project = payment_project(tmp_path / "project")
    async with served(project, tmp_path / "threads.db", openai_server) as running:
        yield running


async def waiting(s: Served) -> Any:
    async with s.client("bob") as client:
        response = await client.post("/v1/agents/payment/threads?wait=true", json={"input": ORDER})
    assert response.status_code == 200, response.text
    view = response.json()
    assert (view["waiting_for"], view["event_type"]) == ("event", "PaymentReceived")
    return view


async def signal(s: Served, thread_id: str, body: Any, person: str = "ana") -> Any:
    async with s.client(person) as client:
        return await client.post(f"/v1/threads/{thread_id}/signals?wait=true", json=body)


async def test_an_event_is_delivered_once_and_a_repeat_is_dropped(s: Served) -> None:
    view = await waiting(s)
    body = {"type": "PaymentReceived", "value": PAID, "request": view["request"],
            "idempotency_key": "evt-1"}  # fmt: skip
    delivered = await signal(s, view["thread_id"], body)
    assert delivered.status_code == 200, delivered.text
    after = delivered.json()
    assert (after["step"], after["waiting_for"]) == ("cool_off", "timer")
    assert after["wake_at"] is not None
    async with s.client("ana") as client:
        pending = (await client.get("/v1/requests")).json()
    assert pending == [], "a sleep (or a wait for an event) is no person's request"
    again = await signal(s, view["thread_id"], body)
    assert again.status_code == 200 and again.json()["events"] == after["events"]
    logged = await events(s, view["thread_id"])
    signals = [e for e in logged if e["kind"] == "signalled"]
    assert len(signals) == 1 and signals[0]["key"] == "evt-1" and signals[0]["by"] == "ana"
    # Without the key, the same event again is for a thread that no longer waits for it.
    keyless = await signal(s, view["thread_id"], {"type": "PaymentReceived", "value": PAID})
    assert_problem(keyless, 409, "does not wait")


async def test_wrong_events_are_refused_and_recorded_nowhere(s: Served) -> None:
    view = await waiting(s)
    thread = view["thread_id"]
    before = await events(s, thread)
    invoice = {"invoice_id": "i", "order_id": "o", "amount_cents": 1}
    for body, status, words in [
        ({"type": "Refund", "value": {}}, 422, ["declares no type `Refund`"]),
        ({"type": "PaymentReceived", "value": {"invoice_id": 3}}, 422, ["not a valid"]),
        ({"type": "PaymentReceived", "value": "<b>"}, 422, ["not a valid"]),
        ({"type": "Invoice", "value": invoice}, 409, ["for PaymentReceived, not Invoice"]),
        ({"type": "PaymentReceived", "value": PAID, "request": "await_payment-1"}, 409,
         ["no longer pending"]),
    ]:  # fmt: skip
        assert_problem(await signal(s, thread, body), status, *words)
    bad_body = await signal(s, thread, {"type": "PaymentReceived", "value": PAID, "extra": 1})
    assert bad_body.status_code == 422
    assert await events(s, thread) == before
    assert_problem(await signal(s, "no-such-thread", {"type": "X", "value": {}}), 404)


async def test_a_run_that_finds_the_lease_held_a_moment_goes_on_once_it_is_let_go(
    s: Served,
) -> None:
    await answered_once_the_run_ends_though_a_copy_held_the_lease(s)


async def answered_once_the_run_ends_though_a_copy_held_the_lease(s: Served) -> None:
    """A webhook sent several times at once: one copy records the signal and starts the
    run; another takes the thread's lease a moment to record it too, finds it recorded and
    lets go. The run must go on once that lease is let go, not take it for a dead
    process's and sleep until it would lapse (30 s): every copy's `?wait=true` answer
    waits for that run. Here the other copy's lease is held until the run has seen it."""
    view = await waiting(s)
    thread = view["thread_id"]
    settled: list[str] = []

    async def told(settled_view: ThreadView) -> None:
        settled.append(settled_view.id)

    s.service.on_settled(told)
    s.service.wait_limit = 10  # a failing build answers at this bound, its run asleep
    store = s.service.runtime.store
    await s.service.send(
        s.caller("ana"), thread, type="PaymentReceived", value=PAID,
        request=view["request"], idempotency_key="evt-1",
    )  # fmt: skip
    # Nothing awaited since the send: its run is queued, not started. The other copy (of
    # this very process) takes the lease now, and lets it go once the run has found it.
    other_copy = store.acquire(thread, s.service.runtime.engine.owner, 60)
    with anyio.fail_after(60):
        while not s.service.runner.lease_waits:
            await anyio.sleep(0.01)
    store.release(other_copy)
    body = {"type": "PaymentReceived", "value": PAID, "request": view["request"],
            "idempotency_key": "evt-1"}  # fmt: skip
    again = await signal(s, thread, body)  # the provider's retry, with ?wait=true
    assert again.status_code == 200, again.text
    assert settled == [thread], "answered at the wait limit, before the run ended"
    assert (again.json()["step"], again.json()["waiting_for"]) == ("cool_off", "timer")


async def test_a_copy_of_a_signal_read_before_its_run_started_waits_for_that_run(
    tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    """A webhook sent twice at once: the first copy has recorded the signal but not yet
    started its run when the second reads the log, finds it recorded and drops itself. The
    second's `?wait=true` must answer with what the run reaches, not with the thread
    `running` at once (no run of it here yet to wait for). Forced here by recording the
    signal without starting the run, and starting it only after the copy is waiting.
    Payment with no cool-off: the signal leads straight to a model call."""
    project = payment_project(tmp_path / "project")
    source = project.read_text()
    project.write_text(source.replace("next cool_off", "next thank"))
    openai_server.reply_tool({"text": "Thank you, the shop"})
    async with served(project, tmp_path / "threads.db", openai_server) as s:
        view = await waiting(s)
        thread = view["thread_id"]
        s.service.wait_limit = 10  # a failing build answers at once, a working one sooner
        await s.service.runtime.send(
            thread, "PaymentReceived", PAID, request=view["request"],
            idempotency_key="evt-1", by="ana", run=False,
        )  # fmt: skip
        body = {"type": "PaymentReceived", "value": PAID, "request": view["request"],
                "idempotency_key": "evt-1"}  # fmt: skip
        answers: list[Any] = []

        async def copy() -> None:
            answers.append(await signal(s, thread, body))

        async with anyio.create_task_group() as group:
            group.start_soon(copy)
            await anyio.sleep(0.5)  # the copy has dropped itself and waits
            assert not answers, [answer.json() for answer in answers]
            s.service._submit(thread)  # the first copy's run starts only now
        (again,) = answers
        assert again.status_code == 200, again.text
        assert again.json()["status"] == "finished", again.json()
