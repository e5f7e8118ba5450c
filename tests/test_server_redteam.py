"""Attacks on the server found by red-teaming it (docs/server.md), each kept as a
regression test: the real service and app over the scripted model server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.openai_server import ScriptedOpenAI
from tests.support.server import deploy_project, served
from tests.test_server_api import assert_problem, decide, launch

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("collected")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_four_eyes_holds_on_a_fork_someone_else_made(
    tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    # ana launches a deploy; carol forks it at its pending request; ana may not approve
    # the fork either: the request it holds is still the one ana's launch led to.
    agent = deploy_project(
        tmp_path / "strict", '[approvers]\nrelease-managers = ["ana", "carol", "dave"]\n'
    )
    async with served(agent, tmp_path / "threads.db", openai_server) as s:
        view = await launch(s, "ana")
        async with s.client("carol") as client:
            forked = await client.post(
                f"/v1/threads/{view['thread_id']}/fork", json={"at": view["events"]}
            )
        assert forked.status_code == 201, forked.text
        fork = forked.json()
        assert fork["status"] == "waiting" and fork["request"] is not None, fork
        assert_problem(await decide(s, "ana", fork), 403, "four eyes")
        assert_problem(await decide(s, "carol", fork), 403, "four eyes")  # she forked it
        assert (await decide(s, "dave", fork)).json()["status"] == "finished"
