"""DNS rebinding (server/hosts.py): a server on loopback answers only requests addressed to
loopback or to its --public-url host; any other Host gets a 400 problem. In process
against the app, and against a real `twelvefold serve --insecure-local` process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.openai_server import ScriptedOpenAI
from tests.support.serve_process import ServeProcess
from tests.support.server import deploy_project, served
from twelvefold.server.app import create_app
from twelvefold.server.hosts import host_of

pytestmark = pytest.mark.usefixtures("collected")

REFUSED = [
    "evil.example",
    "evil.example:8000",
    "localhost.evil.example",
    "127.0.0.1.nip.io",
    "user@localhost",
    "localhost/x",
    "",
    "[::1",
    "localhost:port",
    "0.0.0.0",
    "10.0.0.1",
]
ALLOWED = [
    "localhost",
    "LOCALHOST:8000",
    "localhost.",
    "127.0.0.1",
    "127.0.0.2:8000",
    "[::1]:8000",
    "inbox.example.com",
    "Inbox.Example.com:443",
]


def test_host_of_reads_the_host_of_a_host_header() -> None:
    assert host_of("Localhost:8000") == "localhost"
    assert host_of("[::1]:80") == "::1"
    assert host_of("a@b") is None and host_of("a/b") is None and host_of("x:y") is None


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def app(tmp_path: Path, openai_server: ScriptedOpenAI) -> AsyncIterator[Any]:
    agent = deploy_project(tmp_path / "p")
    async with served(agent, tmp_path / "threads.db", openai_server) as s:
        yield create_app(s.service, tokens=None, loopback_only=("inbox.example.com",))


@pytest.mark.anyio
@pytest.mark.parametrize("host", REFUSED)
async def test_a_foreign_host_is_refused_with_a_problem(app: Any, host: str) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        for path in ("/healthz", "/v1/threads", "/signin"):
            response = await client.get(path, headers={"Host": host})
            assert response.status_code == 400, (host, path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["status"] == 400
        refused = await client.post("/v1/agents/deploybot/threads", headers={"Host": host},
                                    json={"input": "deploy"})  # fmt: skip
        assert refused.status_code == 400


@pytest.mark.anyio
@pytest.mark.parametrize("host", ALLOWED)
async def test_loopback_and_the_public_host_are_answered(app: Any, host: str) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.get("/v1/threads", headers={"Host": host})
    assert response.status_code == 200, (host, response.text)


def test_a_real_insecure_local_server_refuses_a_rebound_name(tmp_path: Path) -> None:
    project = deploy_project(tmp_path / "p")
    server = ServeProcess(
        [project.parent], tmp_path / "threads.db", {}, tmp_path / "serve.log",
        ("--insecure-local", "--public-url", "https://inbox.example.com"),
    )  # fmt: skip
    try:
        server.start()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            rebound = client.get("/v1/threads", headers={"Host": "evil.example"})
            assert rebound.status_code == 400, rebound.text
            assert rebound.headers["content-type"] == "application/problem+json"
            assert client.get("/v1/threads").status_code == 200  # Host: 127.0.0.1:PORT
            proxied = client.get("/v1/threads", headers={"Host": "inbox.example.com"})
            assert proxied.status_code == 200
    finally:
        server.stop()
