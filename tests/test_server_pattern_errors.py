"""A field the API checks against a regular expression is refused in words, never with the
expression (a red team, rt9: `{"webhook": "ftp://x"}` got a 422 whose detail was a 3 KB
regular expression)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from tests.support.openai_server import ScriptedOpenAI
from tests.support.server import deploy_project, served
from twelvefold.server import api
from twelvefold.server.app import create_app
from twelvefold.server.problems import PATTERN_MESSAGES

pytestmark = pytest.mark.usefixtures("collected")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(tmp_path: Path, openai_server: ScriptedOpenAI) -> AsyncIterator[Any]:
    agent = deploy_project(tmp_path / "p")
    async with served(agent, tmp_path / "threads.db", openai_server) as s:
        transport = httpx.ASGITransport(app=create_app(s.service, tokens=None))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            yield c


@pytest.mark.anyio
@pytest.mark.parametrize(
    "webhook", ["ftp://x", "example.com/hook", "http://exa mple.com/", "https://[::1/x"]
)
async def test_a_webhook_that_is_no_http_url_is_refused_in_words(client: Any, webhook: str) -> None:
    response = await client.post(
        "/v1/agents/deploybot/threads", json={"input": "deploy", "webhook": webhook}
    )
    assert response.status_code == 422
    problem = response.json()
    said = "webhook must be an absolute http:// or https:// URL"
    assert problem["detail"].startswith(f"body.webhook: {said}"), problem["detail"]
    assert len(problem["detail"]) < 300
    ((error),) = problem["errors"]
    assert error["msg"].startswith(said) and len(error["msg"]) < 300
    assert "[0-9A-Fa-f]" not in response.text  # no piece of the expression


def every_pattern_field() -> list[tuple[str, str]]:
    """(model, field) of every request body field the API checks with a `pattern`."""
    found = []
    for name in dir(api):
        model = getattr(api, name)
        if isinstance(model, type) and issubclass(model, BaseModel) and model is not BaseModel:
            for field_name, field in model.model_fields.items():
                if any(getattr(m, "pattern", None) for m in field.metadata):
                    found.append((name, field_name))
    return found


def test_every_pattern_field_has_words_for_its_refusal() -> None:
    fields = every_pattern_field()
    assert ("LaunchIn", "webhook") in fields
    for model, field in fields:
        pattern = next(
            m.pattern for m in getattr(api, model).model_fields[field].metadata
            if getattr(m, "pattern", None)
        )  # fmt: skip
        assert pattern in PATTERN_MESSAGES, (model, field)
