"""The HTTP API takes JSON as strictly as the runtime takes a model's output (rt13): a
launch's input and a signal's value are validated as the JSON the client sent, and the
API's own request fields (`at`, `reuse_key`, `decision`, ...) are never converted from
another type: `true`, `"1"` and `1.0` are no `int`, a string holding JSON is a string.
Each refusal is a 422 naming the field and what it should be, and records nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.openai_server import ScriptedOpenAI
from tests.support.server import Served, served
from tests.test_server_api import assert_problem, events
from tests.test_server_signals import ORDER, PAID, payment_project, signal, waiting

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("collected")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def s(tmp_path: Path, openai_server: ScriptedOpenAI) -> Any:
    project = payment_project(tmp_path / "project")
    async with served(project, tmp_path / "threads.db", openai_server) as running:
        yield running


async def threads(s: Served) -> list[Any]:
    async with s.client("ana") as client:
        response = await client.get("/v1/threads")
    assert response.status_code == 200, response.text
    found: list[Any] = response.json()
    return found


@pytest.mark.parametrize("amount", [True, "1250", 1250.0], ids=["true", "a string", "a float"])
async def test_a_launch_input_of_another_type_is_a_422_naming_the_field(
    s: Served, amount: Any
) -> None:
    async with s.client("bob") as client:
        response = await client.post(
            "/v1/agents/payment/threads", json={"input": {**ORDER, "amount_cents": amount}}
        )
    assert_problem(
        response, 422, "not a valid Order", "amount_cents: Input should be a valid integer"
    )
    assert await threads(s) == []


async def test_a_string_holding_json_is_a_string_not_the_input_it_spells(s: Served) -> None:
    async with s.client("bob") as client:
        response = await client.post(
            "/v1/agents/payment/threads", json={"input": json.dumps(ORDER)}
        )
    assert_problem(response, 422, "not a valid Order", "valid dictionary")
    assert await threads(s) == []


async def test_a_signal_value_of_another_type_is_a_422_and_recorded_nowhere(s: Served) -> None:
    view = await waiting(s)
    before = await events(s, view["thread_id"])
    for value in [{**PAID, "amount_cents": True}, {**PAID, "amount_cents": 1250.0},
                  json.dumps(PAID)]:  # fmt: skip
        refused = await signal(s, view["thread_id"], {"type": "PaymentReceived", "value": value})
        assert_problem(refused, 422, "not a valid PaymentReceived")
    assert await events(s, view["thread_id"]) == before


@pytest.mark.parametrize("at", [True, "1", 1.0], ids=["true", "a string", "a float"])
async def test_a_fork_at_of_another_type_is_a_422_naming_the_field(s: Served, at: Any) -> None:
    view = await waiting(s)
    async with s.client("ana") as client:
        response = await client.post(f"/v1/threads/{view['thread_id']}/fork", json={"at": at})
    assert response.status_code == 422, response.text
    assert "at" in response.text and "integer" in response.text, response.text
    assert len(await threads(s)) == 1


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("retry", {"reuse_key": "true"}, "reuse_key"),
        ("retry", {"reuse_key": 1}, "reuse_key"),
        ("cancel", {"reason": 5}, "reason"),
        ("decisions", {"request": 1, "decision": "approve"}, "request"),
        ("signals", {"type": "PaymentReceived", "value": PAID, "idempotency_key": 7},
         "idempotency_key"),
    ],
)  # fmt: skip
async def test_the_apis_own_fields_are_not_converted_either(
    s: Served, path: str, body: dict[str, Any], field: str
) -> None:
    view = await waiting(s)
    before = await events(s, view["thread_id"])
    async with s.client("ana") as client:
        response = await client.post(f"/v1/threads/{view['thread_id']}/{path}", json=body)
    assert response.status_code == 422, response.text
    assert field in response.text, response.text
    assert await events(s, view["thread_id"]) == before


async def test_a_launch_of_the_right_types_still_runs(s: Served) -> None:
    view = await waiting(s)
    assert view["events"] >= 1
