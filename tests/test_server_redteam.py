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


def test_a_webhook_answering_with_an_endless_body_is_not_read() -> None:
    """A webhook is judged by its status alone: its body is not read. A receiver that
    answers 200 and then streams forever held the sender reading it into memory
    (700 MB/s, found by a red team) and the server's shutdown waiting on it."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Endless(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"x" * 65536
            try:
                while not done.is_set():  # ~6 MB/s at most: a failing build stays small
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    done.wait(0.01)
            except OSError:
                pass  # the sender hung up, as it should

        def log_message(self, *args: object) -> None:
            pass

    done = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    sent = threading.Thread(
        target=_post_json,
        args=("webhook", f"http://127.0.0.1:{server.server_address[1]}/hook", b"{}", {}),
        daemon=True,
    )
    try:
        sent.start()
        sent.join(60)  # a bound on a hang, not a timing: it returns as soon as it is answered
        assert not sent.is_alive(), "the sender is still reading the answer's body"
    finally:
        done.set()
        server.shutdown()


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


GATE_AGENT = """\
agent gate "Approves, then makes one side effect." {
  input Req
  max_steps 10
  start ask
}
type Req { n: int }
type Count { n: int }
approval ask(Req) {
  ask "Run the side effect for {{ n }}?"
  approvers "release-managers"
  on approved -> go
  on rejected -> nope
}
tool go(Req) -> Count = "fork_gate_tools:go" { next done }
final done(Count)
final nope
"""

GATE_TOOLS = """\
import os
from pathlib import Path


def go(value, idempotency_key):
    log = Path(os.environ["GATE_LOG"])
    if (log.parent / "FAIL").exists():
        raise RuntimeError("downstream unavailable")
    with log.open("a") as out:
        out.write(idempotency_key + "\\n")
    return {"n": value.n}
"""


async def test_one_approval_runs_its_tool_once_whatever_is_forked_or_retried(
    tmp_path: Path, openai_server: ScriptedOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Red team rt5, t27: carol launches, ana approves, the tool fails. carol (an approver,
    # so she may fork and retry) forked the failed thread and retried the fork: the tool
    # ran in the fork on ana's approval, once per fork. Now the fork asks again, and the
    # four-eyes rule applies to its request as to any other.
    project = tmp_path / "gate"
    project.mkdir()
    (project / "gate.agent").write_text(GATE_AGENT)
    (project / "fork_gate_tools.py").write_text(GATE_TOOLS)
    (project / "twelvefold.toml").write_text(
        '[approvers]\nrelease-managers = ["ana", "carol", "dave"]\n'
    )
    log, fail = tmp_path / "side-effects" / "gate.log", tmp_path / "side-effects" / "FAIL"
    log.parent.mkdir()
    monkeypatch.setenv("GATE_LOG", str(log))

    def runs() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    served_gate = served(project / "gate.agent", tmp_path / "threads.db", openai_server)
    async with served_gate as s, s.client("carol") as carol:
        launched = await carol.post("/v1/agents/gate/threads?wait=true", json={"input": {"n": 1}})
        view = launched.json()
        fail.write_text("")
        failed = await decide(s, "ana", view)
        assert failed.json()["status"] == "failed", failed.text
        fail.unlink()
        thread = view["thread_id"]
        for _ in range(3):
            forked = await carol.post(
                f"/v1/threads/{thread}/fork", json={"at": failed.json()["events"]}
            )
            assert forked.status_code == 201, forked.text
            fork = forked.json()
            assert (fork["status"], fork["step"]) == ("waiting", "ask"), fork
            assert fork["request"] not in (None, view["request"])
            retried = await carol.post(f"/v1/threads/{fork['thread_id']}/retry?wait=true")
            assert_problem(retried, 409)
            assert_problem(await decide(s, "carol", fork), 403, "four eyes")
            assert runs() == [], "the fork ran the tool on the parent's approval"

        # The original: a retry with a new key is a new call and asks again.
        again = await carol.post(f"/v1/threads/{thread}/retry?wait=true")
        assert (again.json()["status"], again.json()["step"]) == ("waiting", "ask")
        assert runs() == []
        assert_problem(await decide(s, "carol", again.json()), 403, "four eyes")
        done = await decide(s, "dave", again.json())
        assert done.json()["status"] == "finished", done.text
        assert len(runs()) == 1

        # The last fork, approved by someone else, runs once, with a key of its own.
        finished = await decide(s, "ana", fork)
        assert finished.json()["status"] == "finished", finished.text
        assert len(runs()) == 2 and len(set(runs())) == 2


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_a_fork_between_steps_is_held_across_a_restart_until_someone_retries_it(
    tmp_path: Path, openai_server: ScriptedOpenAI, request: pytest.FixtureRequest, backend: str
) -> None:
    # Red team rt5, t11: a fork "does not run until resumed", but one made between steps
    # was stored `running`, and the next server's start ran it (its model calls and tools).
    agent = deploy_project(tmp_path / "project")
    store: Path | str = tmp_path / "threads.db"
    if backend == "postgres":
        store = request.getfixturevalue("postgres_url")
    async with served(agent, store, openai_server) as s:
        view = await launch(s, "bob")  # decide -> list_tags -> decide -> approval
        async with s.client("ana") as ana:
            forked = await ana.post(f"/v1/threads/{view['thread_id']}/fork", json={"at": 2})
        assert forked.status_code == 201, forked.text
        fork = forked.json()
        assert (fork["status"], fork["step"]) == ("failed", "list_tags"), fork
        assert fork["error"]["type"] == "ForkHeld" and "retry" in fork["error"]["message"]
    calls = len(openai_server.requests)
    async with served(agent, store, openai_server) as s:  # a restart: recovery runs
        after = await s.service.wait(s.caller("ana"), fork["thread_id"], 30)
        assert (after.status, after.seq) == ("failed", fork["events"]), "the restart ran it"
        assert len(openai_server.requests) == calls
        async with s.client("ana") as ana:
            listed = (await ana.get("/v1/threads?status=failed")).json()
            assert fork["thread_id"] in [t["thread_id"] for t in listed]
            ran = await ana.post(f"/v1/threads/{fork['thread_id']}/retry?wait=true")
        assert ran.status_code == 200, ran.text
        assert (ran.json()["status"], ran.json()["step"]) == ("waiting", "approve_deploy")
