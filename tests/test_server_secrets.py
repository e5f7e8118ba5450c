"""Secret fields over the HTTP API (issue 12, item 7): the thread view, the event log and
the event stream show `[secret]` where the log keeps the value (runtime/redact.py). httpx
against the app in process, the real service, SQLite and the scripted model server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support.openai_server import Reply, ScriptedOpenAI
from tests.support.server import served
from twelvefold.runtime.redact import REDACTED

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("collected")]
FIXTURES = Path(__file__).parent / "checks_fixtures"
KEY = "sk-live-over-http-do-not-show"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    shutil.copytree(FIXTURES, project)
    (project / "twelvefold.toml").write_text('[approvers]\ndefault = ["ana"]\n')
    return project / "vault.agent"


async def test_views_events_and_the_stream_hide_a_secret_the_log_keeps(
    vault: Path, tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    openai_server.responder = lambda body: Reply(arguments={"amount": 1, "note": "ok"})
    claim: dict[str, Any] = {"order": "o-9", "amount": 1.0, "api_key": KEY}
    async with served(vault, tmp_path / "threads.db", openai_server) as s:
        async with s.client("bob") as client:
            launched = await client.post(
                "/v1/agents/vault/threads?wait=true", json={"input": claim}
            )
            assert launched.status_code == 200, launched.text
            view = launched.json()
            thread = view["thread_id"]
            shown = [launched.text]
            for path in (f"/v1/threads/{thread}", f"/v1/threads/{thread}/events"):
                response = await client.get(path)
                assert response.status_code == 200, response.text
                shown.append(response.text)
            streamed = await client.get(f"/v1/threads/{thread}/stream")
            shown.append(streamed.text)
        for text in shown:
            assert KEY not in text
        started = json.loads(shown[2])[0]
        assert started["input"]["value"]["api_key"] == REDACTED
        (first, *_) = await s.service.runtime.events(thread)
        assert first.input.api_key == KEY, "the log keeps it"


async def test_a_launch_422_does_not_echo_a_secret(
    vault: Path, tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    claim: dict[str, Any] = {"order": "o-9", "amount": 1.0, "api_key": {"pin": KEY}}
    async with (
        served(vault, tmp_path / "threads.db", openai_server) as s,
        s.client("bob") as client,
    ):
        refused = await client.post("/v1/agents/vault/threads", json={"input": claim})
    assert refused.status_code == 422, refused.text
    assert "api_key" in refused.json()["detail"], refused.text
    assert KEY not in refused.text and "input_value" not in refused.text
