"""Attacks on the server found by red-teaming it (docs/server.md), each kept as a
regression test: the real service and app over the scripted model server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.openai_server import ScriptedOpenAI
from tests.support.receivers import HttpReceiver
from tests.support.server import deploy_project, served
from tests.test_server_api import assert_problem, decide, events, launch
from twelvefold.runtime.notify import NotifyError, _post_json

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


async def test_two_decisions_racing_on_one_request_exactly_one_wins(
    tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    agent = deploy_project(tmp_path / "race")
    async with served(agent, tmp_path / "threads.db", openai_server) as s:
        for _ in range(3):  # bounded: a few rounds to give the race a chance
            view = await launch(s, "bob")
            first, second = await asyncio.gather(
                decide(s, "ana", view), decide(s, "carol", view, "reject", comment="no")
            )
            statuses = sorted([first.status_code, second.status_code])
            assert statuses == [200, 409], (first.text, second.text)
            kinds = [e["kind"] for e in await events(s, view["thread_id"])]
            assert sum(k in ("approved", "rejected") for k in kinds) == 1, kinds


def test_a_webhook_that_redirects_has_failed_and_the_redirect_is_not_followed() -> None:
    # else a public webhook could answer `302 Location: http://169.254.169.254/...` and
    # the server would send a request to a host its webhook host rule never checked
    inside = HttpReceiver()
    hook = HttpReceiver(302, location=inside.url("/internal"))
    with pytest.raises(NotifyError, match="302"):
        _post_json("webhook", hook.url("/hook"), b"{}", {})
    assert len(hook.received) == 1
    assert inside.received == []


def test_a_pinned_send_connects_to_the_address_given_and_names_the_host() -> None:
    # The webhook rule checks what a name resolves to, then sends to that address: the
    # name is never resolved again (`rebound.test` resolves nowhere), but it is still the
    # request's Host.
    hook = HttpReceiver()
    port = hook.server.server_address[1]
    _post_json("webhook", f"http://rebound.test:{port}/hook", b"{}", {}, "127.0.0.1")
    ((path, headers, _),) = hook.received
    assert (path, headers["Host"]) == ("/hook", f"rebound.test:{port}")


def test_a_send_through_a_proxy_goes_to_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = HttpReceiver()  # a forward proxy is sent the whole URL
    monkeypatch.setenv("http_proxy", proxy.url(""))
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    _post_json("webhook", "http://rebound.test/hook", b"{}", {}, "203.0.113.9")
    ((path, headers, _),) = proxy.received
    assert (path, headers["Host"]) == ("http://rebound.test/hook", "rebound.test")


def test_a_pinned_https_send_checks_the_certificate_against_the_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    import trustme

    authority = trustme.CA()
    received: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.headers["Host"])
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    def serving(name: str) -> tuple[HTTPServer, int]:
        server = HTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        authority.issue_cert(name).configure_cert(context)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return server, int(server.server_address[1])

    def trusting(*args: object, **kwargs: object) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        authority.configure_trust(context)
        return context

    monkeypatch.setattr(ssl, "create_default_context", trusting)
    right, port = serving("rebound.test")
    try:
        _post_json("webhook", f"https://rebound.test:{port}/hook", b"{}", {}, "127.0.0.1")
        assert received == [f"rebound.test:{port}"]
    finally:
        right.shutdown()
    wrong, port = serving("elsewhere.test")  # the address answers for another name
    try:
        with pytest.raises(NotifyError, match=r"CERTIFICATE_VERIFY_FAILED"):
            _post_json("webhook", f"https://rebound.test:{port}/hook", b"{}", {}, "127.0.0.1")
    finally:
        wrong.shutdown()


async def test_a_sleep_until_a_time_past_the_date_range_is_no_500(
    tmp_path: Path, openai_server: ScriptedOpenAI
) -> None:
    # `9999-12-31T23:59:59-10:00` has no UTC form: the launch and the view once raised
    # OverflowError (500); such a time ends the sleep at the pause, like any non-time
    from tests.test_runtime_sleep_until import AGENT

    folder = tmp_path / "later"
    folder.mkdir()
    (folder / "later.agent").write_text(AGENT)
    plan = {"note": "n", "at": "9999-12-31T23:59:59-10:00"}
    async with served(folder / "later.agent", tmp_path / "threads.db", openai_server) as s:
        async with s.client("ana") as client:
            launched = await client.post("/v1/agents/later/threads?wait=true", json={"input": plan})
            assert launched.status_code in (200, 201, 202), launched.text
            thread = launched.json()["thread_id"]
            viewed = await client.get(f"/v1/threads/{thread}")
        assert viewed.status_code == 200, viewed.text
        assert viewed.json()["step"] in ("nap", "done"), viewed.json()
