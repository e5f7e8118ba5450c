"""The HTTP API through httpx against the app (in process), with the real service, SQLite
and the real openai client against the scripted model server: every route and every
rule of who may do what (docs/server.md, "Who may do what").

The app runs with httpx's ASGI transport, which re-raises any exception the app lets
escape: a bug that would be a 500 fails the test that meets it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.openai_server import ScriptedOpenAI
from tests.support.server import DEPLOY_CONFIG, Served, deploy_project, served

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("collected")]
PROBLEM = "application/problem+json"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def launch(s: Served, person: str = "bob", text: str = "deploy to production") -> Any:
    """A deploybot thread launched by `person`, once it waits (for an approval)."""
    async with s.client(person) as client:
        response = await client.post("/v1/agents/deploybot/threads?wait=true", json={"input": text})
    assert response.status_code == 200, response.text
    return response.json()


async def decide(s: Served, person: str, view: Any, decision: str = "approve", **more: Any) -> Any:
    async with s.client(person) as client:
        return await client.post(
            f"/v1/threads/{view['thread_id']}/decisions?wait=true",
            json={"request": view["request"], "decision": decision, **more},
        )


async def events(s: Served, thread_id: str) -> list[Any]:
    async with s.client("ana") as client:
        response = await client.get(f"/v1/threads/{thread_id}/events")
    assert response.status_code == 200, response.text
    found: list[Any] = response.json()
    return found


def assert_problem(response: Any, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"] == "about:blank"
    assert "Traceback" not in response.text
    for word in words:
        assert word in body["detail"], body


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def s(
    request: pytest.FixtureRequest,
    deploy_agent: Path,
    tmp_path: Path,
    openai_server: ScriptedOpenAI,
) -> Any:
    """A server over a SQLite file, then over a PostgreSQL database (its threads, tokens,
    launches and forks all there)."""
    store: Path | str = tmp_path / "threads.db"
    if request.param == "postgres":
        store = request.getfixturevalue("postgres_url")
    async with served(deploy_agent, store, openai_server) as running:
        yield running


async def test_launch_pause_approve_finish_records_the_person_behind_the_token(s: Served) -> None:
    view = await launch(s, "bob")
    assert (view["status"], view["waiting_for"], view["question"]) == (
        "waiting",
        "approval",
        "Deploy v1.2.3 to production?",
    )
    decided = await decide(s, "ana", view, comment="go")
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "finished"
    assert decided.json()["output"]["message"].startswith("deployed: https://production")
    token = s.tokens.identify(s.token("ana"))
    assert token is not None
    (approved,) = [e for e in await events(s, view["thread_id"]) if e["kind"] == "approved"]
    assert (approved["by"], approved["via"], approved["comment"]) == (
        "ana",
        f"http (token {token.id})",
        "go",
    )


async def test_a_launch_answers_202_at_once_and_runs_in_the_background(s: Served) -> None:
    async with s.client("bob") as client:
        response = await client.post("/v1/agents/deploybot/threads", json={"input": "deploy"})
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "running"
        view = await s.service.wait(s.caller("bob"), response.json()["thread_id"], 60)
    assert view.status == "waiting"


async def test_every_call_but_healthz_needs_a_live_token(s: Served) -> None:
    async with s.client() as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        for method, path in [
            ("GET", "/v1/threads"),
            ("GET", "/v1/threads/x"),
            ("GET", "/v1/requests"),
            ("POST", "/v1/agents/deploybot/threads"),
        ]:
            response = await client.request(method, path, json={"input": "x"})
            assert_problem(response, 401, "Bearer")
            assert response.headers["www-authenticate"] == "Bearer"
        for wrong in [
            "Bearer nope",
            "Basic YW5hOng=",
            "Bearer tf_00000000_x",
            "Bearer " + "a" * 5000,
        ]:
            response = await client.get("/v1/threads", headers={"Authorization": wrong})
            assert_problem(response, 401)
    token = s.token("ana")
    (row,) = [t for t in s.tokens.list() if t.person == "ana"]
    async with s.client("ana") as client:
        assert (await client.get("/v1/threads")).status_code == 200
        assert s.tokens.revoke(row.id)
        assert_problem(await client.get("/v1/threads"), 401, "revoked")
    assert s.tokens.verify(token) is None


async def test_only_an_approver_decides_and_a_refusal_records_nothing(s: Served) -> None:
    view = await launch(s, "bob")
    before = len(await events(s, view["thread_id"]))
    for person in ["dave", "bob"]:  # not in release-managers (bob launched it, too)
        assert_problem(await decide(s, person, view), 403, "release-managers")
    assert len(await events(s, view["thread_id"])) == before
    assert (await decide(s, "carol", view)).json()["status"] == "finished"


async def test_four_eyes_a_launcher_may_not_approve_their_own_thread(
    tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    agent = deploy_project(tmp_path / "strict")
    async with served(agent, tmp_path / "threads.db", openai_server) as s:
        view = await launch(s, "ana")
        assert_problem(await decide(s, "ana", view), 403, "four eyes")
        async with s.client("ana") as client:
            assert (await client.get("/v1/requests")).json() == []
        async with s.client("carol") as client:
            assert [v["thread_id"] for v in (await client.get("/v1/requests")).json()] == [
                view["thread_id"]
            ]
        rejected = await decide(s, "ana", view, "reject", comment="not today")
        assert rejected.status_code == 200, rejected.text
    allowing = deploy_project(
        tmp_path / "lenient", DEPLOY_CONFIG + "[server]\nallow_self_approval = true\n"
    )
    async with served(allowing, tmp_path / "other.db", openai_server) as s:
        view = await launch(s, "ana")
        assert (await decide(s, "ana", view)).json()["status"] == "finished"


async def test_the_server_refuses_decisions_on_groups_the_configuration_does_not_define(
    tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    agent = deploy_project(tmp_path / "p", '[approvers]\nops = ["ana"]\n')
    async with served(agent, tmp_path / "threads.db", openai_server) as s:
        view = await launch(s, "bob")
        for person in ["ana", "carol", "bob"]:
            assert_problem(await decide(s, person, view), 403, "does not define")
        async with s.client("ana") as client:
            assert (await client.get("/v1/requests")).json() == []


async def test_a_request_without_approvers_goes_to_the_default_group_else_to_anyone(
    tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    grouped = deploy_project(
        tmp_path / "g", DEPLOY_CONFIG + '[server]\ndefault_approvers = "release-managers"\n'
    )
    async with served(grouped, tmp_path / "g.db", openai_server) as s:
        view = await launch(s, "bob", "deploy, ASK ME first")
        assert view["waiting_for"] == "answer"
        assert_problem(await decide(s, "dave", view, "answer", answer="ANSWERED"), 403, "default")
        answered = await decide(s, "carol", view, "answer", answer="ANSWERED v1.2.3")
        assert answered.json()["waiting_for"] == "approval", answered.text
    anyone = deploy_project(tmp_path / "a")
    async with served(anyone, tmp_path / "a.db", openai_server) as s:
        view = await launch(s, "bob", "deploy, ASK ME first")
        answered = await decide(s, "dave", view, "answer", answer="ANSWERED v1.2.3")
        assert answered.json()["waiting_for"] == "approval", answered.text
        (event,) = [e for e in await events(s, view["thread_id"]) if e["kind"] == "answered"]
        assert event["answer"]["value"]["by"] == "dave"


async def test_a_stale_or_wrong_request_is_409_and_a_wrong_kind_422(s: Served) -> None:
    view = await launch(s, "bob")
    wrong = dict(view, request="approve_deploy-1")
    assert_problem(await decide(s, "ana", wrong), 409, "no longer pending")
    # A request the thread has not reached yet (ids are STEP-SEQ) is not "no longer" one.
    ahead = dict(view, request="approve_deploy-99")
    problem = await decide(s, "ana", ahead)
    assert_problem(problem, 409, "not pending yet")
    assert "no longer" not in problem.text and problem.json()["title"] == "Request not pending"
    assert_problem(await decide(s, "ana", view, "answer", answer="x"), 422, "approval")
    assert (await decide(s, "ana", view)).status_code == 200
    assert_problem(await decide(s, "carol", view), 409)


async def test_unknown_threads_agents_and_paths_are_404_and_wrong_methods_405(s: Served) -> None:
    async with s.client("ana") as client:
        assert_problem(await client.get("/v1/threads/nope"), 404, "nope")
        assert_problem(await client.get("/v1/threads/nope/events"), 404)
        assert_problem(await client.get("/v1/threads/nope/stream"), 404)
        assert_problem(await client.post("/v1/threads/nope/cancel", json={"reason": "x"}), 404)
        response = await client.post("/v1/agents/nobody/threads", json={"input": "x"})
        assert_problem(response, 404, "nobody")
        assert_problem(await client.get("/v2/elsewhere"), 404)
        response = await client.delete("/v1/threads")
        assert_problem(response, 405)
        assert "GET" in response.headers["allow"]


async def test_bad_bodies_are_422_problems(s: Served) -> None:
    view = await launch(s, "bob")
    decisions = f"/v1/threads/{view['thread_id']}/decisions"
    async with s.client("ana") as client:
        for body in [
            {"request": view["request"]},
            {"request": view["request"], "decision": "maybe"},
            {"request": view["request"], "decision": "approve", "by": "carol"},
            {"request": 5, "decision": "approve"},
            [],
        ]:
            assert_problem(await client.post(decisions, json=body), 422)
        response = await client.post(decisions, content=b"{not json", headers={
            "Content-Type": "application/json"})  # fmt: skip
        assert_problem(response, 422)
        response = await client.post("/v1/agents/deploybot/threads", json={"input": 5})
        assert_problem(response, 422, "string")
        response = await client.post(f"/v1/threads/{view['thread_id']}/fork", json={"at": 0})
        assert_problem(response, 422)
        response = await client.get("/v1/threads?status=sleeping")
        assert_problem(response, 422)
        response = await client.post(
            "/v1/agents/deploybot/threads", json={"input": "x" * (2 * 1024 * 1024)}
        )
        assert response.status_code == 413 and response.headers["content-type"] == PROBLEM

        async def chunked() -> Any:  # no Content-Length: counted as it arrives
            yield b'{"input": "'
            for _ in range(200):
                yield b"x" * 8192
            yield b'"}'

        response = await client.post(
            "/v1/agents/deploybot/threads",
            content=chunked(),
            headers={"Content-Type": "application/json"},
        )
        assert_problem(response, 413)


async def test_launchers_and_readers_narrow_who_may_launch_and_read(
    tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    config = (
        DEPLOY_CONFIG
        + 'devs = ["bob"]\n[server]\nlaunchers = ["devs"]\nreaders = ["devs", "release-managers"]\n'
    )
    agent = deploy_project(tmp_path / "p", config)
    async with served(agent, tmp_path / "threads.db", openai_server) as s:
        async with s.client("dave") as client:
            response = await client.post("/v1/agents/deploybot/threads", json={"input": "x"})
            assert_problem(response, 403, "devs")
        view = await launch(s, "bob")
        async with s.client("dave") as client:
            assert_problem(await client.get(f"/v1/threads/{view['thread_id']}"), 404)
            assert (await client.get("/v1/threads")).json() == []
        async with s.client("ana") as client:
            assert (await client.get(f"/v1/threads/{view['thread_id']}")).status_code == 200
            response = await client.post("/v1/agents/deploybot/threads", json={"input": "x"})
            assert_problem(response, 403, "devs")


async def test_a_configuration_file_gone_while_serving_refuses_rather_than_loosens(
    tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    """An editor that saves by deleting and writing again leaves a moment with no file:
    read as none, the search would fall through to the parent folder's configuration (or
    the defaults: anyone with a token launches). The server answers 503 until it is back;
    a file replaced by a rename is read at once."""
    (tmp_path / "twelvefold.toml").write_text("")  # what a fall-through would find: no rules
    config = DEPLOY_CONFIG + 'devs = ["bob"]\n[server]\nlaunchers = ["devs"]\n'
    agent = deploy_project(tmp_path / "p", config)
    governing = agent.parent / "twelvefold.toml"
    async with (
        served(agent, tmp_path / "threads.db", openai_server) as s,
        s.client("dave") as client,
    ):
        launched = await client.post("/v1/agents/deploybot/threads", json={"input": "x"})
        assert_problem(launched, 403, "devs")
        governing.unlink()
        launched = await client.post("/v1/agents/deploybot/threads", json={"input": "x"})
        assert_problem(launched, 503, "is gone")
        assert launched.json()["status"] == 503
        saved = governing.with_name("twelvefold.toml.new")
        saved.write_text(config.replace('devs = ["bob"]', 'devs = ["bob", "dave"]'))
        saved.replace(governing)
        launched = await client.post("/v1/agents/deploybot/threads", json={"input": "x"})
        assert launched.status_code == 202, launched.text


@pytest.mark.parametrize("how", ["deleted", "emptied", "its table dropped"])
async def test_a_configuration_file_lost_before_the_first_call_refuses_too(
    tmp_path: Path, openai_server: ScriptedOpenAI, how: str
) -> None:
    """The file that configures a served agent's folder is named when the server starts,
    not at the first call; deleted before that call, emptied in place (an editor's save
    under way), or a pyproject.toml whose [tool.twelvefold] went, the server refuses
    rather than read a parent's file or the defaults. A new file nearer the agent
    governs, as it would after a restart."""
    (tmp_path / "twelvefold.toml").write_text("")  # what a fall-through would find: no rules
    config = DEPLOY_CONFIG + 'devs = ["bob"]\n[server]\nlaunchers = ["devs"]\n'
    agent = deploy_project(tmp_path / "p", "")
    (agent.parent / "twelvefold.toml").unlink()
    governing = agent.parent / "pyproject.toml"
    governing.write_text(
        "[project]\nname = 'p'\n"
        + config.replace("[approvers]", "[tool.twelvefold.approvers]").replace(
            "[server]", "[tool.twelvefold.server]"
        )
    )
    async with (
        served(agent, tmp_path / "threads.db", openai_server) as s,
        s.client("dave") as client,
    ):
        if how == "deleted":
            governing.unlink()
        elif how == "emptied":
            governing.write_text("")
        else:
            governing.write_text("[project]\nname = 'p'\n")
        launched = await client.post("/v1/agents/deploybot/threads", json={"input": "x"})
        assert_problem(launched, 503, "which configured this server")
        nearer = agent.parent / "twelvefold.toml"  # beside pyproject.toml, and read first
        nearer.write_text(config.replace('devs = ["bob"]', 'devs = ["bob", "dave"]'))
        launched = await client.post("/v1/agents/deploybot/threads", json={"input": "x"})
        assert launched.status_code == 202, launched.text


async def test_retry_fork_and_cancel_need_the_right_to_decide(s: Served) -> None:
    view = await launch(s, "bob")
    thread = view["thread_id"]
    async with s.client("bob") as client:
        assert_problem(await client.post(f"/v1/threads/{thread}/cancel", json={"reason": "x"}), 403)
        assert_problem(await client.post(f"/v1/threads/{thread}/fork", json={"at": 2}), 403)
        assert_problem(await client.post(f"/v1/threads/{thread}/retry"), 403)
    async with s.client("ana") as client:
        forked = await client.post(f"/v1/threads/{thread}/fork", json={"at": view["events"]})
        assert forked.status_code == 201, forked.text
        assert forked.json()["thread_id"] != thread
        assert_problem(
            await client.post(f"/v1/threads/{thread}/fork", json={"at": 999}), 422, "event number"
        )
        assert_problem(await client.post(f"/v1/threads/{thread}/retry"), 409, "failed")
        cancelled = await client.post(f"/v1/threads/{thread}/cancel", json={"reason": "wrong tag"})
        assert cancelled.json()["status"] == "cancelled", cancelled.text
        again = await client.post(f"/v1/threads/{thread}/cancel", json={"reason": "again"})
        assert_problem(again, 409)
    assert_problem(await decide(s, "ana", view), 409)
    (event,) = [e for e in await events(s, thread) if e["kind"] == "cancelled"]
    assert (event["by"], event["reason"]) == ("ana", "wrong tag")


async def test_listing_filters_by_status_and_agent(s: Served) -> None:
    waiting = await launch(s, "bob")
    done = await launch(s, "bob")
    await decide(s, "ana", done)
    async with s.client("ana") as client:
        listed = (await client.get("/v1/threads?status=waiting")).json()
        assert [t["thread_id"] for t in listed] == [waiting["thread_id"]]
        assert {
            t["thread_id"] for t in (await client.get("/v1/threads?agent=deploybot")).json()
        } == {
            waiting["thread_id"],
            done["thread_id"],
        }
        assert (await client.get("/v1/threads?agent=other")).json() == []


async def test_the_stream_sends_every_event_once_in_order_and_resumes(s: Served) -> None:
    view = await launch(s, "bob")
    logged = await events(s, view["thread_id"])
    async with s.client("ana") as client:
        whole = await client.get(f"/v1/threads/{view['thread_id']}/stream")
        rest = await client.get(
            f"/v1/threads/{view['thread_id']}/stream", headers={"Last-Event-ID": "3"}
        )
        bad = await client.get(
            f"/v1/threads/{view['thread_id']}/stream", headers={"Last-Event-ID": "x"}
        )
    assert whole.headers["content-type"].startswith("text/event-stream")
    sent = sse(whole.text)
    assert [int(e["id"]) for e in sent if "id" in e] == [e["seq"] for e in logged]
    assert [e["event"] for e in sent][-1] == "end"
    assert [int(e["id"]) for e in sse(rest.text) if "id" in e] == list(range(4, len(logged) + 1))
    assert_problem(bad, 422, "Last-Event-ID")


def sse(text: str) -> list[dict[str, str]]:
    """Server-sent events (WHATWG HTML, "Server-sent events"): blocks of `field: value`."""
    found = []
    for block in text.split("\n\n"):
        if block.strip():
            found.append(dict(line.split(": ", 1) for line in block.splitlines()))
    return found


async def test_openapi_documents_the_contract(s: Served) -> None:
    async with s.client() as client:
        document = (await client.get("/openapi.json")).json()
    assert set(document["paths"]) >= {
        "/v1/agents/{agent}/threads",
        "/v1/threads",
        "/v1/threads/{thread_id}",
        "/v1/threads/{thread_id}/events",
        "/v1/threads/{thread_id}/stream",
        "/v1/threads/{thread_id}/decisions",
        "/v1/threads/{thread_id}/retry",
        "/v1/threads/{thread_id}/fork",
        "/v1/threads/{thread_id}/cancel",
        "/v1/requests",
        "/healthz",
    }
    assert "HTTPBearer" in document["components"]["securitySchemes"]


async def test_the_timer_expires_waits_and_on_settled_hears_of_every_stop(
    tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    agent = deploy_project(tmp_path / "p")
    source = agent.read_text()
    agent.write_text(
        source.replace(
            '  approvers "release-managers"\n', '  approvers "release-managers"\n  timeout 1s\n'
        )
    )
    async with served(agent, tmp_path / "threads.db", openai_server, sweep_seconds=0.1) as s:
        heard: list[tuple[str, str]] = []

        async def settled(view: Any) -> None:
            heard.append((view.id, view.status))

        s.service.on_settled(settled)
        view = await launch(s, "bob")
        assert (view["thread_id"], "waiting") in heard

        async def timed_out() -> bool:
            found = await events(s, view["thread_id"])
            return any(e["kind"] == "rejected" and e["by"] == "timeout" for e in found)

        await eventually(timed_out, "the server's timer to time the approval out")

        async def paused_again() -> bool:  # the run after the timeout ends after the event
            return heard.count((view["thread_id"], "waiting")) >= 2

        await eventually(paused_again, "on_settled to hear the thread pause again")


async def eventually(condition: Any, what: str, limit: float = 90.0) -> None:
    """Wait for an async condition (a bound for a broken build, not a timed assertion)."""
    import anyio

    with anyio.fail_after(limit):
        while not await condition():
            await anyio.sleep(0.05)


async def test_hostile_ids_names_and_inputs_come_back_as_plain_json(s: Served) -> None:
    async with s.client("ana") as client:
        for path in ["/v1/threads/%1b%5b2J%0a", "/v1/agents/%1b%5b2J/threads"]:
            response = await client.request(
                "GET" if "threads/" in path and "agents" not in path else "POST",
                path,
                json={"input": "x"},
            )
            assert_problem(response, 404)
            assert "\x1b" not in response.json()["detail"] and "\n" not in response.json()["detail"]
        hostile = '<script>alert(1)</script>\x00\u2028"}\n{"x": 1'
        launched = await client.post(
            "/v1/agents/deploybot/threads?wait=true", json={"input": hostile}
        )
        assert launched.status_code == 200, launched.text
        (started,) = [
            e for e in await events(s, launched.json()["thread_id"]) if e["kind"] == "started"
        ]
        assert started["input"] == hostile


async def test_every_view_of_a_thread_has_its_usage_as_show_json_has_it(
    s: Served, tmp_path: Path
) -> None:
    """A launch's answer, a thread's view and the listing carry `usage`, the object of
    `twelvefold show --json` (docs/runtime.md, "Cost"), and /openapi.json says so."""
    view = await launch(s, "bob")
    calls = [e for e in await events(s, view["thread_id"]) if e["kind"] == "model_output"]
    usage = view["usage"]
    assert usage["model_calls"] == len(calls) >= 1
    assert usage["input_tokens"] == sum(e["usage"]["input_tokens"] for e in calls)
    assert usage["cost_usd"] == pytest.approx(sum(e["usage"]["cost_usd"] for e in calls))
    assert set(usage) == {
        "steps", "model_calls", "input_tokens", "output_tokens", "cost_usd",
        "unpriced_calls", "waited_seconds",
    }  # fmt: skip
    async with s.client("ana") as client:
        shown = (await client.get(f"/v1/threads/{view['thread_id']}")).json()
        listed = (await client.get("/v1/threads")).json()
        document = (await client.get("/openapi.json")).json()
    assert {k: v for k, v in shown["usage"].items() if k != "waited_seconds"} == {
        k: v for k, v in usage.items() if k != "waited_seconds"
    }
    (row,) = [t for t in listed if t["thread_id"] == view["thread_id"]]
    assert row["usage"]["model_calls"] == usage["model_calls"]
    assert row["usage"]["cost_usd"] == pytest.approx(usage["cost_usd"])
    schemas = document["components"]["schemas"]
    for model in ("ThreadOut", "ThreadSummary"):
        assert "usage" in schemas[model]["required"]
    assert set(schemas["UsageOut"]["properties"]) == set(usage)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def timed(
    request: pytest.FixtureRequest, tmp_path: Path, openai_server: ScriptedOpenAI
) -> Any:
    """The deploy project whose approval has `timeout 1h`, served with no sweep."""
    agent = deploy_project(tmp_path / "p")
    agent.write_text(
        agent.read_text().replace(
            '  approvers "release-managers"\n', '  approvers "release-managers"\n  timeout 1h\n'
        )
    )
    store: Path | str = tmp_path / "threads.db"
    if request.param == "postgres":
        store = request.getfixturevalue("postgres_url")
    async with served(agent, store, openai_server) as running:
        yield running


async def test_a_decision_after_the_timeout_is_refused_and_the_timeout_recorded(
    timed: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/language.md: "no decision in time counts as a rejection", whether or not the
    sweep has run: the deadline is checked when the decision is recorded."""
    from datetime import UTC, datetime, timedelta

    from twelvefold.runtime import api, timeouts

    view = await launch(timed, "bob")
    assert view["wake_at"] is not None  # the deadline, shown
    deadline = timeouts.as_moment(view["wake_at"])
    assert deadline - datetime.now(UTC) <= timedelta(hours=1)
    later = timeouts.iso(deadline + timedelta(seconds=1))
    monkeypatch.setattr(api, "_now", lambda: later)
    response = await decide(timed, "ana", view, comment="go")
    assert_problem(response, 409, "timed out", view["request"], "rejection")
    assert response.json()["title"] == "Request timed out"
    kinds = [(e["kind"], e.get("by")) for e in await events(timed, view["thread_id"])]
    assert ("approved", "ana") not in kinds and ("rejected", "timeout") in kinds
    again = await decide(timed, "ana", view)  # the request is gone now: plain stale
    assert_problem(again, 409, "no longer pending")


async def test_a_decision_just_before_the_timeout_is_recorded(
    timed: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from twelvefold.runtime import api, timeouts

    view = await launch(timed, "bob")
    before = timeouts.iso(timeouts.as_moment(view["wake_at"]) - timedelta(seconds=1))
    monkeypatch.setattr(api, "_now", lambda: before)
    response = await decide(timed, "ana", view)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "finished"


def set_status(store: Path | str, thread_id: str, status: str) -> None:
    """Write a status this version does not know into the thread's row (a damaged row, or
    one a newer version wrote during a rolling upgrade)."""
    if isinstance(store, str):
        import psycopg

        with psycopg.connect(store) as conn:
            conn.execute("UPDATE threads SET status = %s WHERE id = %s", (status, thread_id))
        return
    import sqlite3

    with sqlite3.connect(store) as conn:
        conn.execute("UPDATE threads SET status = ? WHERE id = ?", (status, thread_id))
    conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def with_store(
    request: pytest.FixtureRequest, deploy_agent: Path, tmp_path: Path,
    openai_server: ScriptedOpenAI,
) -> Any:  # fmt: skip
    """`s`, and where its store is."""
    store: Path | str = tmp_path / "threads.db"
    if request.param == "postgres":
        store = request.getfixturevalue("postgres_url")
    async with served(deploy_agent, store, openai_server) as running:
        yield running, store


async def test_a_row_with_a_status_this_version_does_not_know_is_listed_as_stored(
    with_store: tuple[Served, Path | str],
) -> None:
    """One odd row must not hide the others (rt5 t22): the listing, /metrics and the
    inbox show it with its status as stored (docs/server.md, "Listing threads")."""
    s, store = with_store
    odd, fine = await launch(s, "bob"), await launch(s, "bob")
    set_status(store, odd["thread_id"], "paused")
    async with s.client("ana") as client:
        listed = await client.get("/v1/threads")
        assert listed.status_code == 200, listed.text
        statuses = {t["thread_id"]: t["status"] for t in listed.json()}
        assert statuses == {odd["thread_id"]: "paused", fine["thread_id"]: "waiting"}
        waiting = (await client.get("/v1/threads?status=waiting")).json()
        assert [t["thread_id"] for t in waiting] == [fine["thread_id"]]
        metrics = (await client.get("/metrics")).text
        assert 'twelvefold_threads{agent="deploybot",status="paused"} 1.0' in metrics
        pending = await client.get("/v1/requests")
        assert [v["thread_id"] for v in pending.json()] == [fine["thread_id"]]


async def test_a_launcher_who_may_not_read_gets_the_launch_answer_even_with_wait(
    tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    """With `?wait=true` a launcher outside `readers` got `404 no thread X here` for a
    thread that was launched, and a client retrying on it launched a duplicate (rt5 t24):
    the answer is the `202` a launch without `wait` gives (docs/server.md)."""
    config = (
        DEPLOY_CONFIG
        + 'devs = ["bob"]\n[server]\nlaunchers = ["release-managers", "devs"]\n'
        + 'readers = ["release-managers"]\n'
    )
    agent = deploy_project(tmp_path / "p", config)
    async with served(agent, tmp_path / "threads.db", openai_server) as s:
        async with s.client("bob") as client:
            waited = await client.post(
                "/v1/agents/deploybot/threads?wait=true", json={"input": "deploy v1.2.3"}
            )
            assert waited.status_code == 202, waited.text
            view = waited.json()
            assert (view["status"], view["events"]) == ("running", 1)
            assert view["question"] is None, "nothing a reader's view would add"
        async with s.client("ana") as client:
            listed = (await client.get("/v1/threads")).json()
        assert [t["thread_id"] for t in listed] == [view["thread_id"]], "launched once"


async def test_a_launcher_who_may_not_read_cannot_have_the_thread_sent_to_a_webhook(
    tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    """A launch's webhook is sent the thread's view each time it pauses or ends: a
    launcher outside `readers` would read through it what the API keeps from them. The
    launch is refused (403) before anything is launched."""
    config = (
        DEPLOY_CONFIG
        + 'devs = ["bob"]\n[server]\nlaunchers = ["release-managers", "devs"]\n'
        + 'readers = ["release-managers"]\nwebhook_hosts = ["127.0.0.1"]\n'
    )
    agent = deploy_project(tmp_path / "p", config)
    async with served(agent, tmp_path / "threads.db", openai_server) as s:
        async with s.client("bob") as client:
            refused = await client.post(
                "/v1/agents/deploybot/threads",
                json={"input": "deploy v1.2.3", "webhook": "http://127.0.0.1:9/hook"},
            )
        assert refused.status_code == 403, refused.text
        assert "readers" in refused.json()["detail"]
        async with s.client("ana") as client:
            assert (await client.get("/v1/threads")).json() == [], "nothing launched"
            allowed = await client.post(
                "/v1/agents/deploybot/threads",
                json={"input": "deploy v1.2.3", "webhook": "http://127.0.0.1:9/hook"},
            )
        assert allowed.status_code == 202, allowed.text
