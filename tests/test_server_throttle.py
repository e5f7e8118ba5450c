"""Failed sign-ins and bad bearer tokens are limited per client address (server/throttle.py):
429 problem details with Retry-After, a right token refused too while the limit holds,
other addresses untouched, and memory bounded under a flood of distinct addresses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.inbox import hidden_fields
from tests.support.openai_server import ScriptedOpenAI
from tests.support.server import Served, deploy_project, served
from twelvefold.server.throttle import SHARED, Throttle, client_key

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("collected")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_are_counted_per_address_in_windows() -> None:
    clock = Clock()
    throttle = Throttle(3, 60.0, clock=clock)
    for _ in range(3):
        assert throttle.retry_after("10.0.0.1") is None
        throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == 60
    assert throttle.retry_after("10.0.0.2") is None
    clock.now += 59.5
    assert throttle.retry_after("10.0.0.1") == 1
    clock.now += 0.5
    assert throttle.retry_after("10.0.0.1") is None
    # One host holds a whole IPv6 /64; an IPv4-mapped address is its IPv4 address.
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff:2") == "2001:db8::/64"
    assert client_key("::ffff:10.0.0.1") == "10.0.0.1"
    assert client_key(None) == "?" and client_key("not an address") == "not an address"


def test_a_flood_of_distinct_addresses_stays_bounded_and_is_limited_as_one() -> None:
    clock = Clock()
    throttle = Throttle(5, 60.0, max_addresses=100, clock=clock)
    for n in range(20_000):
        throttle.failed(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
    assert len(throttle) <= 101
    assert throttle.retry_after("192.0.2.7") is not None  # a newcomer shares the bucket
    assert throttle.retry_after("10.0.0.0") is None  # the first 100 are counted apart
    clock.now += 60
    assert throttle.retry_after("192.0.2.7") is None
    throttle.failed("192.0.2.7")  # the ended windows are let go
    assert len(throttle) == 1 and SHARED not in throttle._counts


@pytest.fixture
async def s(tmp_path: Path, openai_server: ScriptedOpenAI) -> AsyncIterator[Served]:
    agent = deploy_project(tmp_path / "p")
    async with served(agent, tmp_path / "threads.db", openai_server) as running:
        running.app.state.throttle = Throttle(3, 60.0, clock=Clock())
        yield running


@asynccontextmanager
async def client_at(s: Served, address: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=s.app, client=(address, 4321))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def assert_too_many(response: Any) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert 1 <= int(response.headers["retry-after"]) <= 60
    body = response.json()
    assert body["status"] == 429 and body["title"] == "Too many requests"


async def test_bad_bearer_tokens_are_limited_per_address(s: Served) -> None:
    good = {"Authorization": f"Bearer {s.token('ana')}"}
    bad = {"Authorization": "Bearer guess"}
    async with client_at(s, "10.0.0.1") as attacker, client_at(s, "10.0.0.2") as other:
        for _ in range(3):
            assert (await attacker.get("/v1/threads", headers=bad)).status_code == 401
        assert_too_many(await attacker.get("/v1/threads", headers=bad))
        assert_too_many(await attacker.get("/v1/threads", headers=good))  # no more guessing
        assert (await other.get("/v1/threads", headers=good)).status_code == 200
        assert (await other.get("/v1/threads", headers=bad)).status_code == 401
        assert (await attacker.get("/healthz")).status_code == 200
        s.app.state.throttle.clock.now += 60
        assert (await attacker.get("/v1/threads", headers=good)).status_code == 200


async def test_failed_sign_ins_are_limited_per_address(s: Served) -> None:
    async def sign_in(client: httpx.AsyncClient, token: str) -> Any:
        fields = hidden_fields((await client.get("/signin")).text)
        return await client.post("/signin", data={**fields, "token": token})

    async with client_at(s, "10.0.0.1") as attacker, client_at(s, "10.0.0.2") as other:
        for _ in range(3):
            assert (await sign_in(attacker, "guess")).status_code == 401
        assert_too_many(await sign_in(attacker, "guess"))
        assert_too_many(await sign_in(attacker, s.token("ana")))
        assert (await sign_in(other, s.token("ana"))).status_code == 303
        s.app.state.throttle.clock.now += 60
        assert (await sign_in(attacker, s.token("ana"))).status_code == 303
