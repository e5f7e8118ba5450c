"""Four eyes on forks, wherever they were made (red team rt13): a fork holds the request
its parent's launch led to, so whoever launched the parent (or any thread before it)
may not approve the fork either. The server used to learn a fork's parent only from its
own `POST /fork` (a `server_forks` row), so a fork made with `twelvefold fork` or the
Python API had no parent there, and ana approved her own deploy through it. The lineage
now comes from the fork's log (its `forked` event), which every fork writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import twelvefold
from tests.support.openai_server import ScriptedOpenAI
from tests.support.server import Served, deploy_project, served
from tests.test_server_api import assert_problem, decide, launch

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("collected")]

STRICT = '[approvers]\nrelease-managers = ["ana", "carol", "dave"]\n'
"""Three release managers: ana launches, carol forks, dave is the other pair of eyes."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """The server's store and the CLI's: a SQLite file, then a PostgreSQL database."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return tmp_path / "threads.db"


def cli_fork(project: Path, store: Path | str, thread: str, at: int) -> Any:
    """`twelvefold fork THREAD --at AT` in a new process, on the server's store."""
    where = ["--db", str(store)] if isinstance(store, Path) else ["--store", store]
    forked = twelvefold("fork", thread, "--at", str(at), *where, "--json", cwd=project)
    assert forked.returncode == 0, forked.stderr
    return json.loads(forked.stdout)


async def view_of(s: Served, person: str, thread: str) -> Any:
    async with s.client(person) as client:
        response = await client.get(f"/v1/threads/{thread}")
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_launcher_may_not_approve_a_fork_made_with_the_cli(
    tmp_path: Path, openai_server: ScriptedOpenAI, store: Path | str
) -> None:
    # The red team's repro: ana launches over HTTP (her approval is refused), the CLI
    # forks the thread at its request, and ana approved the fork (200, the deploy ran).
    agent = deploy_project(tmp_path / "project", STRICT)
    async with served(agent, store, openai_server) as s:
        view = await launch(s, "ana")
        assert_problem(await decide(s, "ana", view), 403, "ana", "four eyes")
        made = cli_fork(agent.parent, store, view["thread_id"], view["events"])
        assert made["forked_from"] == view["thread_id"]
        fork = await view_of(s, "ana", made["thread_id"])
        assert (fork["status"], fork["waiting_for"]) == ("waiting", "approval"), fork
        # Her inbox does not offer it to her either (the same answer as the decision's).
        assert made["thread_id"] not in [v.id for v in await s.service.pending(s.caller("ana"))]
        assert_problem(await decide(s, "ana", fork), 403, "ana", "four eyes")
        assert made["thread_id"] in [v.id for v in await s.service.pending(s.caller("dave"))]
        assert (await decide(s, "dave", fork)).json()["status"] == "finished"


async def test_the_launcher_may_not_approve_a_fork_made_with_the_python_api(
    tmp_path: Path, openai_server: ScriptedOpenAI, store: Path | str
) -> None:
    agent = deploy_project(tmp_path / "project", STRICT)
    async with served(agent, store, openai_server) as s:
        view = await launch(s, "ana")
        fork_id = await s.service.runtime.fork(view["thread_id"], view["events"])
        fork = await view_of(s, "dave", fork_id)
        assert_problem(await decide(s, "ana", fork), 403, "ana", "four eyes")
        assert (await decide(s, "dave", fork)).json()["status"] == "finished"


async def test_every_launcher_up_a_chain_of_forks_made_anywhere_is_refused(
    tmp_path: Path, openai_server: ScriptedOpenAI, store: Path | str
) -> None:
    # ana launches; carol forks over HTTP (she launched that fork); the CLI forks carol's
    # fork; the Python API forks that one. Neither ana nor carol may approve the last.
    agent = deploy_project(tmp_path / "project", STRICT)
    async with served(agent, store, openai_server) as s:
        view = await launch(s, "ana")
        async with s.client("carol") as client:
            response = await client.post(
                f"/v1/threads/{view['thread_id']}/fork", json={"at": view["events"]}
            )
        assert response.status_code == 201, response.text
        by_carol = response.json()
        by_cli = cli_fork(agent.parent, store, by_carol["thread_id"], by_carol["events"])
        last_id = await s.service.runtime.fork(by_cli["thread_id"], by_cli["events"])
        last = await view_of(s, "dave", last_id)
        assert_problem(await decide(s, "ana", last), 403, "ana", "four eyes")
        assert_problem(await decide(s, "carol", last), 403, "carol", "four eyes")
        assert (await decide(s, "dave", last)).json()["status"] == "finished"


async def test_a_fork_of_a_fork_made_before_the_first_forks_event_names_the_root(
    tmp_path: Path, openai_server: ScriptedOpenAI, store: Path | str
) -> None:
    # The second fork copies only events the first copied from ana's thread: its log
    # names the first fork as its parent and nothing of ana's thread. The first fork's
    # own log does (and so does a deleted thread's record: test below).
    agent = deploy_project(tmp_path / "project", STRICT)
    async with served(agent, store, openai_server) as s:
        view = await launch(s, "ana")
        first = await s.service.runtime.fork(view["thread_id"], view["events"])
        second_id = await s.service.runtime.fork(first, view["events"])
        second = await view_of(s, "dave", second_id)
        assert_problem(await decide(s, "ana", second), 403, "ana", "four eyes")


async def test_a_fork_keeps_its_launchers_when_the_fork_between_is_deleted(
    tmp_path: Path, openai_server: ScriptedOpenAI, store: Path | str
) -> None:
    # `prune --delete` removes an ended fork; a fork made of it before keeps the rule:
    # the store keeps what a deleted fork was forked from.
    agent = deploy_project(tmp_path / "project", STRICT)
    async with served(agent, store, openai_server) as s:
        view = await launch(s, "ana")
        runtime = s.service.runtime
        first = await runtime.fork(view["thread_id"], view["events"])
        second_id = await runtime.fork(first, view["events"])
        cancelled = await runtime.cancel(first, reason="a copy")
        assert runtime.store.delete(first, cancelled.seq, ["cancelled"]) is True
        second = await view_of(s, "dave", second_id)
        assert_problem(await decide(s, "ana", second), 403, "ana", "four eyes")
        assert (await decide(s, "dave", second)).json()["status"] == "finished"
