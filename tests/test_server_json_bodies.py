"""JSON request bodies are read strictly: an object that gives a key twice is refused
(422, naming the key and where it is), on every route that takes JSON, at any depth.

A reader that takes the first of two keys (a proxy, an audit log) and one that takes the
last (Python's json) would disagree about what was asked: `"decision": "reject", ...,
"decision": "approve"` was recorded as an approval (rt13)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.openai_server import ScriptedOpenAI
from tests.support.server import served
from tests.test_server_api import assert_problem, events, launch

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("collected")]
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_key_given_twice_is_refused_on_every_route_at_any_depth(
    deploy_agent: Path, tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    async with served(deploy_agent, tmp_path / "threads.db", openai_server) as s:
        view = await launch(s, "bob")
        thread, request = view["thread_id"], view["request"]
        before = await events(s, thread)
        bodies = [
            (
                f"/v1/threads/{thread}/decisions",
                f'{{"request": "{request}", "decision": "reject", "comment": "NO",'
                ' "decision": "approve"}',
                "body.decision",
            ),
            ("/v1/agents/deploybot/threads", '{"input": "a", "input": "b"}', "body.input"),
            (
                f"/v1/threads/{thread}/signals",
                '{"type": "T", "value": {"lines": [{"sku": 1}, {"sku": 2, "sku": 3}]}}',
                "body.value.lines.1.sku",
            ),
            (f"/v1/threads/{thread}/fork", '{"at": 999, "at": 2}', "body.at"),
            (
                f"/v1/threads/{thread}/retry",
                '{"reuse_key": false, "reuse_key": true}',
                "body.reuse_key",
            ),
            (f"/v1/threads/{thread}/cancel", '{"reason": "a", "reason": "b"}', "body.reason"),
        ]
        async with s.client("ana") as client:
            for path, body, where in bodies:
                response = await client.post(path, content=body, headers=JSON)
                assert_problem(response, 422, where, "given twice")
                (error,) = response.json()["errors"]
                assert ".".join(error["loc"]) == where
            listed = (await client.get("/v1/threads")).json()
        assert await events(s, thread) == before  # nothing was recorded
        assert [t["thread_id"] for t in listed] == [thread]  # nothing launched or forked


async def test_the_same_key_in_two_objects_is_no_repetition(
    deploy_agent: Path, tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    async with served(deploy_agent, tmp_path / "threads.db", openai_server) as s:
        async with s.client("bob") as client:
            response = await client.post(
                "/v1/agents/deploybot/threads",
                content='{"input": "deploy", "webhook": null}',
                headers=JSON,
            )
            assert response.status_code == 202, response.text
            response = await client.post(
                "/v1/agents/deploybot/threads",
                content='{"input": {"a": {"a": 1}, "b": [{"a": 2}, {"a": 3}]}}',
                headers=JSON,
            )
        assert_problem(response, 422, "takes a string input")  # its type, not a repetition


async def test_a_body_in_another_encoding_than_utf_8_is_refused(
    deploy_agent: Path, tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    """rt14: a decision in UTF-16 (declared `charset=utf-8`) was an approval, while a
    proxy or audit log reading UTF-8 sees NUL bytes between letters; UTF-32 and a byte
    order mark were taken too. RFC 8259, section 8.1: JSON between systems is UTF-8."""
    async with served(deploy_agent, tmp_path / "threads.db", openai_server) as s:
        view = await launch(s, "bob")
        thread, request = view["thread_id"], view["request"]
        before = await events(s, thread)
        decision = f'{{"request": "{request}", "decision": "approve", "comment": "ok"}}'
        async with s.client("ana") as client:
            path = f"/v1/threads/{thread}/decisions"
            for encoding in ("utf-16-le", "utf-16", "utf-32", "utf-32-be"):
                response = await client.post(
                    path,
                    content=decision.encode(encoding),
                    headers={"Content-Type": "application/json; charset=utf-8"},
                )
                assert_problem(response, 400, "not UTF-8", "RFC 8259")
            bom = await client.post(path, content=b"\xef\xbb\xbf" + decision.encode(), headers=JSON)
            assert_problem(bom, 400, "byte order mark", "RFC 8259")
            assert await events(s, thread) == before  # nothing was recorded
            ok = await client.post(path, content=decision.encode(), headers=JSON)
            assert ok.status_code == 200, ok.text
