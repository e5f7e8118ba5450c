"""The HTTP API through httpx against the app (in process), with the real service, SQLite
and the real openai client against the scripted model server: every route and every
rule of who may do what (docs/server.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.openai_server import ScriptedOpenAI
from tests.support.server import Served, deploy_project, served

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def launched_and_waiting(s: Served, person: str = "bob") -> dict[str, Any]:
    async with s.client(person) as client:
        response = await client.post(
            "/v1/agents/deploybot/threads?wait=true", json={"input": "deploy to production"}
        )
    assert response.status_code == 200, response.text
    view = response.json()
    assert (view["status"], view["waiting_for"]) == ("waiting", "approval"), view
    return view


async def test_launch_pause_approve_finish(
    deploy_agent: Path, tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    async with served(deploy_agent, tmp_path / "threads.db", openai_server) as s:
        view = await launched_and_waiting(s)
        async with s.client("ana") as client:
            decided = await client.post(
                f"/v1/threads/{view['thread_id']}/decisions?wait=true",
                json={"request": view["request"], "decision": "approve", "comment": "go"},
            )
            assert decided.status_code == 200, decided.text
            assert decided.json()["status"] == "finished"
            events = (await client.get(f"/v1/threads/{view['thread_id']}/events")).json()
        approved = [e for e in events if e["kind"] == "approved"]
        assert [(e["by"], e["via"]) for e in approved] == [
            ("ana", f"http (token {s.tokens.identify(s.token('ana')).id})")  # type: ignore[union-attr]
        ]
