"""Sub-agents through the HTTP API (httpx against the app, the real service, SQLite):
serving examples/returns.agent serves its refunds sub-agent too; the child's pending
approval is in /v1/requests with the parent it belongs to; deciding it there wakes the
parent, which goes on to wait for the parcel.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.runtime_helpers import EXAMPLES
from tests.support.openai_server import ScriptedOpenAI
from tests.support.server import Served, served
from tests.test_server_api import assert_problem, decide

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("collected")]
RETURN = {"order_id": "o-1", "email": "ana@example.com", "amount_cents": 1250}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def s(tmp_path: Path, openai_server: ScriptedOpenAI) -> Any:
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(EXAMPLES / "returns.agent", folder / "returns.agent")
    shutil.copytree(EXAMPLES / "returns", folder / "returns")
    (folder / "twelvefold.toml").write_text('[approvers]\nsupport-leads = ["ana"]\n')
    async with served(folder / "returns.agent", tmp_path / "threads.db", openai_server) as running:
        yield running


async def test_the_childs_request_is_listed_and_deciding_it_wakes_the_parent(s: Served) -> None:
    async with s.client("bob") as client:
        response = await client.post("/v1/agents/returns/threads?wait=true", json={"input": RETURN})
    assert response.status_code == 200, response.text
    parent = response.json()
    assert (parent["waiting_for"], parent["step"]) == ("agent", "refund")
    child_id = parent["child"]
    async with s.client("ana") as client:
        pending = (await client.get("/v1/requests")).json()
    (card,) = pending
    assert (card["thread_id"], card["agent"], card["parent"]) == (
        child_id,
        "refunds",
        parent["thread_id"],
    )
    decided = await decide(s, "ana", card)
    assert decided.status_code == 200, decided.text
    async with s.client("ana") as client:
        after = (await client.get(f"/v1/threads/{parent['thread_id']}")).json()
    assert (after["step"], after["waiting_for"]) == ("await_parcel", "event")


async def test_cancelling_the_parent_withdraws_its_childs_request(s: Served) -> None:
    async with s.client("bob") as client:
        response = await client.post("/v1/agents/returns/threads?wait=true", json={"input": RETURN})
    parent = response.json()
    async with s.client("ana") as client:
        (card,) = (await client.get("/v1/requests")).json()
    assert card["thread_id"] == parent["child"]
    async with s.client("bob") as client:
        cancelled = await client.post(
            f"/v1/threads/{parent['thread_id']}/cancel", json={"reason": "withdrawn"}
        )
    assert cancelled.status_code == 200, cancelled.text
    async with s.client("ana") as client:
        child = (await client.get(f"/v1/threads/{parent['child']}")).json()
        assert (await client.get("/v1/requests")).json() == []
    assert child["status"] == "cancelled"
    assert_problem(await decide(s, "ana", card), 409, "no longer pending")


async def test_four_eyes_binds_a_childs_request_to_whoever_launched_the_root(
    tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    # ana launches `returns`; its `refunds` child waits for an approval with no approvers
    # of its own, so the default approvers (finance: ana and bob) decide it. ana may not
    # approve the refund her own launch asked for; bob may.
    folder = tmp_path / "strict"
    folder.mkdir()
    shutil.copy(EXAMPLES / "returns.agent", folder / "returns.agent")
    shutil.copytree(EXAMPLES / "returns", folder / "returns")
    (folder / "twelvefold.toml").write_text(
        '[approvers]\nfinance = ["ana", "bob"]\nsupport-leads = ["carol"]\n'
        '[server]\ndefault_approvers = "finance"\nallow_self_approval = false\n'
    )
    async with served(folder / "returns.agent", tmp_path / "threads.db", openai_server) as s:
        async with s.client("ana") as client:
            launched = await client.post(
                "/v1/agents/returns/threads?wait=true", json={"input": RETURN}
            )
            assert launched.status_code == 200, launched.text
            child = (await client.get(f"/v1/threads/{launched.json()['child']}")).json()
        assert child["waiting_for"] == "approval", child
        assert_problem(await decide(s, "ana", child), 403, "four eyes")
        # A fork of the child (made by bob) names no parent, yet its request is still the
        # root's work: ana may not approve it there either.
        async with s.client("bob") as client:
            forked = await client.post(
                f"/v1/threads/{child['thread_id']}/fork", json={"at": child["events"]}
            )
        assert forked.status_code == 201, forked.text
        fork = forked.json()
        assert fork["parent"] is None and fork["waiting_for"] == "approval", fork
        assert_problem(await decide(s, "ana", fork), 403, "four eyes")
        # Nor a fork of that fork made with the Python API (red team rt13): bob launched
        # the fork it came from, ana the root.
        again_id = await s.service.runtime.fork(fork["thread_id"], fork["events"])
        async with s.client("ana") as client:
            again = (await client.get(f"/v1/threads/{again_id}")).json()
        assert_problem(await decide(s, "ana", again), 403, "ana", "four eyes")
        assert_problem(await decide(s, "bob", again), 403, "bob", "four eyes")
        decided = await decide(s, "bob", child)
        assert decided.status_code == 200, decided.text
        assert decided.json()["status"] == "finished", decided.json()


async def test_a_fork_of_a_parent_whose_child_waits_gets_and_shows_its_own_child(
    s: Served,
) -> None:
    """The server's fork is the runtime's: the fork's view names its own child thread,
    which is served (shown, listed) like any child; the original's child stays put."""
    async with s.client("bob") as client:
        response = await client.post("/v1/agents/returns/threads?wait=true", json={"input": RETURN})
        parent = response.json()
        forked = await client.post(
            f"/v1/threads/{parent['thread_id']}/fork", json={"at": parent["events"]}
        )
    assert forked.status_code == 201, forked.text
    fork = forked.json()
    assert fork["child"] == f"{fork['thread_id']}~{fork['request']}" != parent["child"]
    async with s.client("ana") as client:
        child = (await client.get(f"/v1/threads/{fork['child']}")).json()
        original = (await client.get(f"/v1/threads/{parent['child']}")).json()
    assert (child["parent"], child["agent"]) == (fork["thread_id"], "refunds")
    assert original["waiting_for"] == "approval"
