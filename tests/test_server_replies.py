"""Replies to a launch's `webhook` and the inbox link in notices (docs/server.md,
"Webhooks"): the real service and app, a real HTTP receiver on loopback, and the
signatures checked by the `standardwebhooks` package, not by our own code.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.support.openai_server import ScriptedOpenAI
from tests.support.receivers import HttpReceiver
from tests.support.server import DEPLOY_CONFIG, Served, deploy_project, served
from twelvefold.server.replies import ReplyTargets, public_url_of, replies
from twelvefold.server.service import Caller, ServeError

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("collected")]
SECRET = "whsec_" + base64.b64encode(b"a secret of thirty-two bytes....").decode()
PUBLIC = "https://twelvefold.example/base"
LOOPBACK_HOOKS = DEPLOY_CONFIG + '[server]\nwebhook_hosts = ["127.0.0.1"]\n'


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def s(
    tmp_path: Path,
    openai_server: ScriptedOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Served]:
    monkeypatch.setenv("TWELVEFOLD_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("TWELVEFOLD_PUBLIC_URL", PUBLIC + "/")
    monkeypatch.delenv("TWELVEFOLD_SLACK_BOT_TOKEN", raising=False)
    agent = deploy_project(tmp_path / "project", LOOPBACK_HOOKS)
    async with served(agent, tmp_path / "threads.db", openai_server) as running:
        yield running


async def launch(s: Served, **body: Any) -> Any:
    async with s.client("bob") as client:
        return await client.post(
            "/v1/agents/deploybot/threads?wait=true", json={"input": "deploy", **body}
        )


def rewind(targets: ReplyTargets, thread_id: str, seq: int) -> None:
    """As a send cut off and given back leaves a thread's targets: told up to `seq`."""
    targets._db.change(
        "UPDATE server_replies SET replied_seq = ?, sending_until = NULL WHERE thread_id = ?",
        (seq, thread_id),
    )


def webhook_ids(receiver: HttpReceiver) -> list[str]:
    return [{k.lower(): v for k, v in h.items()}["webhook-id"] for _, h, _ in receiver.received]


def verified(receiver: HttpReceiver, index: int) -> Any:
    _, headers, body = receiver.received[index]
    return Webhook(SECRET).verify(body, {k.lower(): v for k, v in headers.items()})


async def test_a_launch_webhook_is_told_when_the_thread_pauses_and_when_it_ends(
    s: Served,
) -> None:
    receiver = HttpReceiver()
    response = await launch(s, webhook=receiver.url("/hooks/twelvefold?k=1"))
    assert response.status_code == 200, response.text
    view = response.json()
    assert len(receiver.received) == 1
    path, headers, body = receiver.received[0]
    assert path == "/hooks/twelvefold?k=1"
    paused = verified(receiver, 0)
    assert paused["type"] == "thread.settled"
    assert paused["thread"]["status"] == "waiting"
    assert paused["thread"]["request"] == view["request"]
    assert paused["link"] == f"{PUBLIC}/threads/{view['thread_id']}"
    with pytest.raises(WebhookVerificationError):  # the oracle does check
        lowered = {k.lower(): v for k, v in headers.items()}
        Webhook(SECRET).verify(body.replace(b"waiting", b"finished"), lowered)

    async with s.client("ana") as client:
        decided = await client.post(
            f"/v1/threads/{view['thread_id']}/decisions?wait=true",
            json={"request": view["request"], "decision": "approve"},
        )
    assert decided.status_code == 200
    assert len(receiver.received) == 2
    ended = verified(receiver, 1)
    assert ended["thread"]["status"] == "finished"
    assert ended["thread"]["output"]["message"].startswith("deployed:")
    ids = {str({k.lower(): v for k, v in r[1].items()}["webhook-id"]) for r in receiver.received}
    assert len(ids) == 2, "one id per point in the thread"


async def test_a_launch_with_a_webhook_that_is_no_http_url_is_refused_before_it_runs(
    s: Served,
) -> None:
    for bad in ["file:///etc/passwd", "javascript:alert(1)", "/relative", "http://", "x" * 3000]:
        response = await launch(s, webhook=bad)
        assert response.status_code == 422, (bad, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert await s.service.threads(Caller("ana", "http")) == []


async def test_reply_targets_survive_a_restart_and_a_view_is_sent_once(
    s: Served, tmp_path: Path
) -> None:
    receiver = HttpReceiver()
    response = await launch(s, webhook=receiver.url("/once"))
    view = response.json()
    assert len(receiver.received) == 1
    # Another server over the same file sees the target, and that it was told.
    again = ReplyTargets(tmp_path / "threads.db")
    [target] = again.of(view["thread_id"])
    assert (target.kind, target.address) == ("webhook", receiver.url("/once"))
    assert target.replied_seq == view["events"]
    again.close()
    current = await s.service.view(Caller("ana", "http"), view["thread_id"])
    await replies(s.service).settled(current)  # a second settle of the same point
    assert len(receiver.received) == 1


async def test_notices_carry_the_link_to_the_inbox(s: Served) -> None:
    view = (await launch(s)).json()
    [notice] = s.notifier.notices
    assert notice.link == f"{PUBLIC}/threads/{view['thread_id']}"
    assert notice.as_json()["link"] == notice.link


async def test_a_public_url_that_could_not_prefix_a_link_stops_the_server(s: Served) -> None:
    for bad in ["javascript:alert(1)", "https://x.example/<!channel>", "ftp://x", "https://a|b"]:
        with pytest.raises(ServeError, match="public URL"):
            public_url_of(s.service, {"TWELVEFOLD_PUBLIC_URL": bad})
    assert public_url_of(s.service, {}) is None
    assert json.dumps(public_url_of(s.service, {"TWELVEFOLD_PUBLIC_URL": PUBLIC}))


async def test_a_reply_that_fails_is_sent_the_next_time_nothing_lost(s: Served) -> None:
    receiver = HttpReceiver(status=503)
    told = replies(s.service)
    told.delays = ()  # no second attempts within one settle: the next settle tries again
    response = await launch(s, webhook=receiver.url("/flaky"))
    view = response.json()
    assert len(receiver.received) == 1
    [target] = told.targets.of(view["thread_id"])
    assert target.replied_seq == 0, "a failed reply is not marked sent"
    receiver.status = 200
    current = await s.service.view(Caller("ana", "http"), view["thread_id"])
    await told.settled(current)
    assert len(receiver.received) == 2
    assert verified(receiver, 1)["thread"]["status"] == "waiting"
    [target] = told.targets.of(view["thread_id"])
    assert target.replied_seq == view["events"]


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        (
            "TWELVEFOLD_PUBLIC_URL",
            "javascript:alert(1)",
            "error: the public URL (TWELVEFOLD_PUBLIC_URL or --public-url) must be",
        ),
        ("TWELVEFOLD_SMTP_HOST", "mail.example", "error: notifications: TWELVEFOLD_SMTP_HOST"),
        (
            "TWELVEFOLD_WEBHOOK_SECRET",
            "whsec_!!!",
            "error: TWELVEFOLD_WEBHOOK_SECRET: the webhook secret",
        ),
        (  # unpadded: receivers that decode plain base64 could verify nothing (rt13)
            "TWELVEFOLD_WEBHOOK_SECRET",
            "whsec_YWJ",
            "error: TWELVEFOLD_WEBHOOK_SECRET: the webhook secret is not padded base64: it"
            " must be whsec_ followed by the standard base64",
        ),
    ],
)
def test_serve_with_settings_that_cannot_work_exits_1_with_one_line(
    deploy_agent: Path, tmp_path: Path, variable: str, value: str, line: str
) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, variable: value, "TWELVEFOLD_SMTP_TO": ""}
    result = subprocess.run(
        [sys.executable, "-m", "twelvefold", "serve", str(deploy_agent), "--db",
         str(tmp_path / "threads.db"), "--port", "0"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    errors = [text for text in result.stderr.splitlines() if text.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(line), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x",
        "http://localhost/x",
        "http://2130706433/x",  # 127.0.0.1 as one number
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/x",
        "http://192.168.1.1/x",
        "http://0.0.0.0/x",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://no-such-host.invalid/x",
        # IPv6 forms that carry an IPv4 address a gateway reaches (found by a red team:
        # each passed as public): NAT64 (RFC 6052) to the metadata address and to 10/8,
        # NAT64 local use (RFC 8215), 6to4 (RFC 3056), IPv4-compatible and
        # IPv4-translated (RFC 4291, RFC 2765) forms, and the old site-local prefix.
        "http://[64:ff9b::a9fe:a9fe]/x",
        "http://[64:ff9b::a00:7]/x",
        "http://[64:ff9b:1::a00:7]/x",
        "http://[2002:a9fe:a9fe::1]/x",
        "http://[2002:7f00:1::1]/x",
        "http://[::a9fe:a9fe]/x",
        "http://[::127.0.0.1]/x",
        "http://[::ffff:0:a00:7]/x",
        "http://[fec0::1]/x",
    ],
)
async def test_a_webhook_to_a_private_host_is_refused_without_webhook_hosts(
    deploy_agent: Path, tmp_path: Path, openai_server: ScriptedOpenAI, url: str
) -> None:
    async with served(deploy_agent, tmp_path / "threads.db", openai_server) as s:
        response = await launch(s, webhook=url)
        assert response.status_code in (403, 422), response.text  # 422: not the URL shape
        assert response.headers["content-type"].startswith("application/problem+json")
        assert await s.service.threads(Caller("bob", "http")) == []  # nothing launched


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("::ffff:8.8.8.8", True),
        # From an IPv6-only network (DNS64) a public IPv4 host is reached through NAT64
        # or 6to4: still public.
        ("64:ff9b::808:808", True),
        ("2002:808:808::1", True),
        ("64:ff9b::a9fe:a9fe", False),
        ("2002:c0a8:101::1", False),
        ("fe80::1", False),
        ("ff0e::1", False),
        ("::", False),
    ],
)
def test_what_counts_as_a_public_address(address: str, public: bool) -> None:
    import ipaddress

    from twelvefold.server.replies import is_public

    assert is_public(ipaddress.ip_address(address)) is public


async def test_a_webhook_is_sent_to_the_address_its_check_passed_not_one_resolved_later(
    s: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name resolves to a public address when it is checked and to
    loopback a moment later. The send connects to the address checked; a build that
    resolved the name again would deliver the reply to the server's own network."""
    import socket
    import types

    from twelvefold.server import replies as replies_module

    inside = HttpReceiver()  # on loopback: what the rebound name leads to
    port = inside.server.server_address[1]
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.create_connection

    def rebound(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real_getaddrinfo("127.0.0.1" if host == "rebound.test" else host, *args, **kwargs)

    def at_check(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "rebound.test":  # the answer the check saw: a public address
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", 0))]
        return real_getaddrinfo(host, *args, **kwargs)

    connected: list[str] = []

    def connect(address: Any, *args: Any, **kwargs: Any) -> Any:
        connected.append(str(address[0]))
        if address[0] == "8.8.8.8":  # never leave the machine in a test
            raise ConnectionRefusedError("refused by the test")
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebound)
    monkeypatch.setattr(socket, "create_connection", connect)
    monkeypatch.setattr(
        replies_module, "socket", types.SimpleNamespace(getaddrinfo=at_check, IPPROTO_TCP=6)
    )
    told = replies(s.service)
    told.webhook_hosts, told.delays = None, ()  # the public-address rule, one attempt
    response = await launch(s, webhook=f"http://rebound.test:{port}/hook")
    assert response.status_code == 200, response.text
    assert inside.received == []
    assert connected and set(connected) == {"8.8.8.8"}


async def test_webhook_hosts_allows_only_the_hosts_it_names(s: Served) -> None:
    for url in ("http://localhost:9/x", "http://10.0.0.1/x", "https://example.com/x"):
        response = await launch(s, webhook=url)
        assert response.status_code == 403, response.text
        assert "webhook_hosts" in response.json()["detail"]


@pytest.mark.parametrize("build", ["as built", "broken: stop waits only for running runs"])
async def test_a_reply_under_way_when_the_server_stops_is_sent_before_it_stops(
    tmp_path: Path,
    openai_server: ScriptedOpenAI,
    monkeypatch: pytest.MonkeyPatch,
    build: str,
) -> None:
    """A run tells its `on_settled` callbacks (replies, Slack) after it has left the
    service's table of runs. `stop` (SIGTERM) waits for those too, within its grace: a
    reply claimed and then cut off by the shutdown was never sent, as its target was
    marked told. The broken build's stop waits only for the runs still in the table."""
    import threading

    from twelvefold.server import replies as replies_module
    from twelvefold.server.service import Service

    if build != "as built":
        made = Service.__init__

        class Forgotten(set[Any]):
            def add(self, task: Any) -> None:
                pass

        def forgetting(self: Service, *args: Any, **kwargs: Any) -> None:
            made(self, *args, **kwargs)
            self._settling = Forgotten()

        monkeypatch.setattr(Service, "__init__", forgetting)
    sending, post = threading.Event(), replies_module._post_json

    def slow_post(*args: Any) -> Any:
        sending.set()
        time.sleep(1.0)  # the receiver is slow: the server is told to stop meanwhile
        return post(*args)

    monkeypatch.setattr(replies_module, "_post_json", slow_post)
    monkeypatch.setenv("TWELVEFOLD_WEBHOOK_SECRET", SECRET)
    monkeypatch.delenv("TWELVEFOLD_SLACK_BOT_TOKEN", raising=False)
    receiver = HttpReceiver()
    agent = deploy_project(tmp_path / "project", LOOPBACK_HOOKS)
    async with served(agent, tmp_path / "threads.db", openai_server) as s:
        async with s.client("bob") as client:
            response = await client.post(
                "/v1/agents/deploybot/threads",
                json={"input": "deploy", "webhook": receiver.url("/hook")},
            )
        assert response.status_code == 202, response.text
        with anyio.fail_after(60):
            while not sending.is_set():
                await asyncio.sleep(0.01)
        # leaving `served` stops the service (grace 10 s) while the reply is under way
    if build == "as built":
        assert [path for path, _, _ in receiver.received] == ["/hook"]
    else:
        assert receiver.received == []


def configured_agents(tmp_path: Path, *configs: str) -> Any:
    """Served agents from one folder per configuration (each its own twelvefold.toml),
    for the readers that only look at `agents`."""
    from types import SimpleNamespace

    agents = {}
    for number, config in enumerate(configs):
        folder = tmp_path / f"agents{number}"
        folder.mkdir(parents=True)
        (folder / "twelvefold.toml").write_text(config)
        agents[f"agent{number}"] = SimpleNamespace(directory=folder)
    return SimpleNamespace(agents=agents)


def test_public_url_and_webhook_hosts_problems_name_their_file(tmp_path: Path) -> None:
    """Before: `[tool.twelvefold.server] public_url must be a string, not 3`, with no
    file (of two agents' configurations, which?), and only the first file's bad
    `webhook_hosts`, the second's revealed at the next start."""
    from twelvefold.server.replies import webhook_hosts_of
    from twelvefold.server.settings import settings_problems

    served = configured_agents(
        tmp_path,
        '[server]\npublic_url = 3\nwebhook_hosts = "ci\\n.example"\n',
        '[server]\npublic_url = "ftp://x"\nwebhook_hosts = [1]\n',
    )
    one, two = (tmp_path / f"agents{n}" / "twelvefold.toml" for n in (0, 1))
    with pytest.raises(ServeError) as refused:
        public_url_of(served, {})
    assert refused.value.problems == (
        f"{one}: server.public_url must be a string, not 3",
        f'{two}: server.public_url must be an absolute http(s) URL, not "ftp://x"',
    )
    with pytest.raises(ServeError) as refused:
        webhook_hosts_of(served)
    assert refused.value.problems == (
        f'{one}: server.webhook_hosts must be a list of host names, not "ci\\n.example"',
        f"{two}: server.webhook_hosts must be a list of host names, not [1]",
    )
    assert settings_problems(served.agents) == [
        f"{one}: server.public_url must be a string, not 3",
        f'{two}: server.public_url must be an absolute http(s) URL, not "ftp://x"',
        f'{one}: server.webhook_hosts must be a list of host names, not "ci\\n.example"',
        f"{two}: server.webhook_hosts must be a list of host names, not [1]",
    ]
    # The first file's is used, but a bad one in the second is named all the same.
    served = configured_agents(
        tmp_path / "second",
        '[server]\npublic_url = "https://good.example"\n',
        '[server]\npublic_url = "ftp://x y<>"\n',
    )
    with pytest.raises(ServeError) as refused:
        public_url_of(served, {})
    second = tmp_path / "second" / "agents1" / "twelvefold.toml"
    assert refused.value.problems == (
        f'{second}: server.public_url must be an absolute http(s) URL, not "ftp://x y<>"',
    )
    served = configured_agents(tmp_path / "bad", '[server]\npublic_url = "ftp://x\\""\n')
    [bad] = (tmp_path / "bad" / "agents0" / "twelvefold.toml",)
    with pytest.raises(ServeError) as refused:
        public_url_of(served, {})
    assert refused.value.problems == (
        f'{bad}: server.public_url must be an absolute http(s) URL, not "ftp://x\\""',
    )
    with pytest.raises(ServeError) as refused:  # --public-url wins over the file, and says so
        public_url_of(served, {"TWELVEFOLD_PUBLIC_URL": "ftp://y"})
    assert refused.value.problems == (
        "the public URL (TWELVEFOLD_PUBLIC_URL or --public-url) must be an absolute http(s)"
        ' URL, not "ftp://y"',
    )


@pytest.mark.parametrize("build", ["as built", "broken: no catch-up at start"])
async def test_a_finished_threads_reply_given_back_at_a_stop_is_sent_at_the_next_start(
    s: Served, monkeypatch: pytest.MonkeyPatch, build: str
) -> None:
    """A reply cut off by a stop past its grace is given back (its target behind the
    thread's view); a waiting thread's next settle sends it, but a finished thread never
    settles again, so its last reply was never sent (found by a red team killing a real
    server). The next start catches up. The broken build's start does not."""
    from twelvefold.server import replies as replies_module

    receiver = HttpReceiver()
    view = (await launch(s, webhook=receiver.url("/hook"))).json()
    told = replies(s.service)
    [paused] = told.targets.of(view["thread_id"])
    async with s.client("ana") as client:
        decided = await client.post(
            f"/v1/threads/{view['thread_id']}/decisions?wait=true",
            json={"request": view["request"], "decision": "approve"},
        )
    finished = decided.json()
    assert finished["status"] == "finished" and len(receiver.received) == 2
    [target] = told.targets.of(view["thread_id"])
    # As a stop cutting the last send off leaves it: given back to the paused view's seq.
    rewind(told.targets, view["thread_id"], paused.replied_seq)
    if build != "as built":
        monkeypatch.setattr(replies_module.Replies, "catch_up", lambda self: asyncio.sleep(0))
    await told.catch_up()
    if build != "as built":
        assert len(receiver.received) == 2
        return
    assert len(receiver.received) == 3 and verified(receiver, 2) == verified(receiver, 1)
    [target] = told.targets.of(view["thread_id"])
    assert target.replied_seq > paused.replied_seq
    await told.catch_up()  # told already: nothing more
    assert len(receiver.received) == 3


@pytest.mark.parametrize("build", ["as built", "broken: any later event makes a reply due"])
async def test_a_notice_retried_after_a_pause_was_told_is_no_reply_to_catch_up(
    s: Served, monkeypatch: pytest.MonkeyPatch, build: str
) -> None:
    """Found by a red team: the sweep retrying a failed notice appends a `Notified` event
    (and tells no `on_settled`), so the waiting thread's seq moved past its target's; the
    next start sent the same pause again, under a new `webhook-id`. The broken build
    counts every event."""
    from dataclasses import replace

    from twelvefold.runtime.types import Notified
    from twelvefold.server import replies as replies_module

    receiver = HttpReceiver()
    view = (await launch(s, webhook=receiver.url("/hook"))).json()
    assert view["status"] == "waiting" and len(receiver.received) == 1
    runtime = s.service.runtime
    info, get = runtime.info, runtime.get

    async def info_after_a_notice(thread_id: str, **how: Any) -> Any:
        found = await info(thread_id, **how)
        return replace(found, seq=found.seq + 1)

    async def view_after_a_notice(thread_id: str, **how: Any) -> Any:
        found = await get(thread_id, **how)
        notice = Notified(step=found.step, at="2026-12-01T00:00:00Z", channels=("email",))
        return replace(found, seq=found.seq + 1, log=(*found.log, notice))

    monkeypatch.setattr(runtime, "info", info_after_a_notice)
    monkeypatch.setattr(runtime, "get", view_after_a_notice)
    if build != "as built":
        monkeypatch.setattr(replies_module, "_settled_seq", lambda view: view.seq)
    await replies(s.service).catch_up()
    assert len(receiver.received) == (1 if build == "as built" else 2)
    if build == "as built":  # cut off after all: sent again, as the same point
        told = replies(s.service)
        rewind(told.targets, view["thread_id"], 0)
        await told.catch_up()
        ids = webhook_ids(receiver)
        assert len(ids) == 2 and ids[0] == ids[1], ids


async def test_the_reply_targets_of_a_thread_no_longer_stored_are_dropped_at_start(
    s: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by a red team: a pruned (or deleted) thread's reply targets stayed, and every
    start logged a warning for each, forever."""
    told = replies(s.service)
    told.targets.add("0123456789abcdef", "webhook", "http://127.0.0.1:9/gone")
    await told.catch_up()
    assert told.targets.of("0123456789abcdef") == []
    assert "not caught up" not in caplog.text


async def test_a_wait_is_answered_while_the_reply_is_still_being_sent(
    s: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a red team: `?wait=true` waited for the run's task, which ends only once
    the webhook reply is sent (a receiver taking 4 s made the answer take 4 s; a dead one,
    the 30 s wait limit). The answer comes once the run has run."""
    import threading

    import httpx

    from twelvefold.server import replies as replies_module

    release, post = threading.Event(), replies_module._post_json

    def held_post(*args: Any) -> Any:
        release.wait(30)
        return post(*args)

    monkeypatch.setattr(replies_module, "_post_json", held_post)
    receiver = HttpReceiver()
    headers = {"Authorization": f"Bearer {s.token('bob')}"}
    try:
        # A client that does not wait for `on_settled` itself (as `s.client` does).
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=s.app), base_url="http://t", headers=headers
        ) as client:
            with anyio.fail_after(20):
                response = await client.post(
                    "/v1/agents/deploybot/threads?wait=true",
                    json={"input": "deploy", "webhook": receiver.url("/hook")},
                )
        assert response.status_code == 200 and response.json()["status"] == "waiting"
        assert receiver.received == []  # its reply is still on its way
    finally:
        release.set()
    await s.service.settling()
    assert len(receiver.received) == 1


async def test_a_reply_whose_sender_died_mid_send_is_sent_again_once_its_claim_lapses(
    s: Served,
) -> None:
    """Found by a review: a process killed outright (kill -9, out of memory) between the
    claim and the end of the send left the target marked told, and the reply was never
    sent. A claim is a lease: while it holds, another process leaves it alone (the
    sender may be alive); once it lapsed, `resend_due` (the server's sweep) sends the
    view again, under the same `webhook-id`, and marks it sent."""
    receiver = HttpReceiver()
    view = (await launch(s, webhook=receiver.url("/hook"))).json()
    told = replies(s.service)
    assert len(receiver.received) == 1
    [target] = told.targets.of(view["thread_id"])
    assert (target.replied_seq, target.sending_until) == (view["events"], None)  # sent

    # Another process claims the view and is killed before its send finished.
    rewind(told.targets, view["thread_id"], 0)
    [behind] = told.targets.of(view["thread_id"])
    held = told.targets.claim(behind, view["events"], seconds=3600.0)
    assert held is not None
    assert await told.resend_due() == []  # its sender may be alive: not taken over
    await told.catch_up()
    assert len(receiver.received) == 1
    # Its time runs out (here: a claim made as already lapsed).
    rewind(told.targets, view["thread_id"], 0)
    assert told.targets.claim(behind, view["events"], seconds=0.0) is not None
    assert await told.resend_due() == [view["thread_id"]]
    assert len(receiver.received) == 2
    again, first = verified(receiver, 1)["thread"], verified(receiver, 0)["thread"]
    assert (again["status"], again["request"]) == (first["status"], first["request"])
    assert webhook_ids(receiver)[0] == webhook_ids(receiver)[1]  # at least once, one id
    [target] = told.targets.of(view["thread_id"])
    assert (target.replied_seq, target.sending_until) == (view["events"], None)
    assert await told.resend_due() == [] and len(receiver.received) == 2


async def test_a_claim_whose_update_a_stop_cut_off_is_given_back(
    s: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: a stop cancelling `settled` while the claim's UPDATE ran in its
    worker thread cancelled only the wait for it; the UPDATE went on, the claim stayed
    held and the reply was sent by nobody (until its lease lapsed). The claim is waited
    for and given back."""
    import threading

    receiver = HttpReceiver()
    view = (await launch(s, webhook=receiver.url("/hook"))).json()
    told = replies(s.service)
    rewind(told.targets, view["thread_id"], 0)  # not told yet
    entered, release, done = threading.Event(), threading.Event(), threading.Event()
    claim = ReplyTargets.claim

    def slow_claim(self: ReplyTargets, *args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(30)
        try:
            return claim(self, *args, **kwargs)
        finally:
            done.set()

    monkeypatch.setattr(ReplyTargets, "claim", slow_claim)
    current = await s.service.view(Caller("ana", "http"), view["thread_id"])
    settling = asyncio.create_task(told.settled(current))
    await asyncio.to_thread(entered.wait, 30)
    settling.cancel()  # the stop lands while the UPDATE runs
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await settling
    await asyncio.to_thread(done.wait, 30)
    [target] = told.targets.of(view["thread_id"])
    assert (target.replied_seq, target.sending_until) == (0, None)  # given back
    assert len(receiver.received) == 1  # (the launch's reply) nothing sent meanwhile
    monkeypatch.setattr(ReplyTargets, "claim", claim)
    await told.catch_up()  # the next start sends it
    assert len(receiver.received) == 2


@pytest.mark.parametrize("build", ["as built", "broken: one thread at a time"])
async def test_a_receiver_that_never_answers_does_not_hold_the_catch_up_of_others(
    s: Served, monkeypatch: pytest.MonkeyPatch, build: str
) -> None:
    """Found by a review: catch-up told one thread after another, so a receiver that
    never answers held every other thread's reply for all its attempts (about 36 s each)
    at every start. Threads are caught up `CATCH_UP_AT_ONCE` at a time: the other
    thread's reply goes out while the dead receiver's first attempt is still open (its
    claim held). The broken build catches up one thread at a time."""
    from twelvefold.runtime import notify
    from twelvefold.server import replies as replies_module

    monkeypatch.setattr(notify, "TIMEOUT_SECONDS", 6.0)  # the broken build waits it out
    if build != "as built":
        monkeypatch.setattr(replies_module, "CATCH_UP_AT_ONCE", 1)
    dead, alive = HttpReceiver(), HttpReceiver()
    stuck = (await launch(s, webhook=dead.url("/dead"))).json()["thread_id"]
    other = (await launch(s, webhook=alive.url("/alive"))).json()["thread_id"]
    told = replies(s.service)
    told.delays = ()
    for thread_id in (stuck, other):  # as a stop cutting both sends off leaves them
        rewind(told.targets, thread_id, 0)
    dead.answering.clear()
    catching_up = asyncio.create_task(told.catch_up())
    try:
        with anyio.fail_after(60):  # both catch-up sends arrived (the dead one is held)
            while len(alive.received) < 2 or len(dead.received) < 2:
                await asyncio.sleep(0.01)
        [target] = told.targets.of(stuck)
        if build == "as built":
            assert target.sending_until is not None  # still in flight: it held nothing up
        else:
            assert target.sending_until is None  # given up on before the other was told
    finally:
        dead.answering.set()
        await catching_up
    assert len(alive.received) == 2


async def test_catch_up_tells_at_most_its_bound_of_threads_at_once(
    s: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catch-up's concurrency is bounded: with a bound of 2, the third thread is not
    taken up while two sends are under way, and is once one of them ended."""
    from twelvefold.server import replies as replies_module

    monkeypatch.setattr(replies_module, "CATCH_UP_AT_ONCE", 2)
    told = replies(s.service)
    started: list[str] = []
    entered: list[str] = []
    go = {name: asyncio.Event() for name in ("a", "b", "c")}

    async def held_sender(view: Any, address: str) -> None:
        started.append(address)
        await go[address].wait()

    told.senders["probe"] = held_sender
    ids = {}
    for name in ("a", "b", "c"):
        thread_id = (await launch(s)).json()["thread_id"]
        told.targets.add(thread_id, "probe", name)
        ids[thread_id] = name
    take_up = told._catch_up_thread

    async def spied(thread_id: str, *args: Any) -> None:
        entered.append(ids[thread_id])
        await take_up(thread_id, *args)

    monkeypatch.setattr(told, "_catch_up_thread", spied)
    catching_up = asyncio.create_task(told.catch_up())
    with anyio.fail_after(60):
        while len(started) < 2:
            await asyncio.sleep(0.01)
    assert sorted(started) == sorted(entered) == ["a", "b"]  # c waits for a free place
    go["a"].set()
    with anyio.fail_after(60):
        while len(started) < 3:
            await asyncio.sleep(0.01)
    assert started[2] == "c" and entered == [*entered[:2], "c"]
    go["b"].set()
    go["c"].set()
    await catching_up


@pytest.mark.parametrize(
    "url", ["http://[::1]/hook", "http://[fe80::1%25lo]/", "http://[::ffff:127.0.0.1]:9/x"]
)
async def test_an_ipv6_literal_webhook_is_a_url_its_host_check_refuses(
    deploy_agent: Path, tmp_path: Path, openai_server: ScriptedOpenAI, url: str
) -> None:
    """Found by a red team: a bracketed IPv6 literal was a 422 (not a URL) though
    `webhook_hosts` takes IP literals. It is a URL; without `webhook_hosts` its host, not
    a public address, is refused (403) as an IPv4 loopback one is."""
    async with served(deploy_agent, tmp_path / "threads.db", openai_server) as s:
        response = await launch(s, webhook=url)
        assert response.status_code == 403, response.text
        assert await s.service.threads(Caller("bob", "http")) == []


@pytest.mark.parametrize("url", ["http://[::1/x", "http://[v1.x]/", "http://[1:2:3:4:5:6:7:8:9]/"])
async def test_a_bracketed_host_that_is_no_ipv6_address_is_no_url(s: Served, url: str) -> None:
    response = await launch(s, webhook=url)
    assert response.status_code == 422, response.text


async def test_an_allowed_ipv6_webhook_is_taken_and_a_failed_reply_is_one_warning_line(
    tmp_path: Path,
    openai_server: ScriptedOpenAI,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`webhook_hosts = ["::1"]` allows `http://[::1]:PORT/`. The reply then fails (nothing
    listens there): found by a red team, that was logged with a full traceback, as a bug
    would be; a receiver that cannot be reached is expected, one WARNING line."""
    monkeypatch.setenv("TWELVEFOLD_WEBHOOK_SECRET", SECRET)
    monkeypatch.delenv("TWELVEFOLD_SLACK_BOT_TOKEN", raising=False)
    agent = deploy_project(
        tmp_path / "project", DEPLOY_CONFIG + '[server]\nwebhook_hosts = ["::1"]\n'
    )
    with caplog.at_level("INFO"):
        async with served(agent, tmp_path / "threads.db", openai_server) as s:
            response = await launch(s, webhook="http://[::1]:9/hook")
            assert response.status_code < 300, response.text
            thread_id = response.json()["thread_id"]
    assert not [r for r in caplog.records if r.exc_info], caplog.text  # no traceback
    (said,) = [r for r in caplog.records if "not sent" in r.getMessage()]
    assert said.levelname == "WARNING"
    assert thread_id in said.getMessage() and "\n" not in said.getMessage(), said.getMessage()


class FailingFirst(HttpReceiver):
    """Answers 500 to the first request it receives, 200 to every later one."""

    @property  # type: ignore[override]
    def status(self) -> int:
        return 500 if len(self.received) == 1 else 200

    @status.setter
    def status(self, _: int) -> None:
        pass


async def test_an_older_view_still_being_sent_is_never_sent_after_a_newer_one(
    s: Served,
) -> None:
    """Found by a red team: the pause's reply failed once and waited to try again; the
    thread was approved meanwhile and its end was sent at once; then the pause's retry
    went out, so a receiver keeping the latest state took the finished thread for waiting
    again. A newer view now waits until no older send is under way (the sweep sends it)."""
    import httpx

    def impatient(person: str) -> httpx.AsyncClient:
        """A client that reads each answer at once (`s.client` waits for the replies)."""
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=s.app), base_url="http://testserver",
            headers={"Authorization": f"Bearer {s.token(person)}"},
        )  # fmt: skip

    receiver = FailingFirst()
    told = replies(s.service)
    told.delays = (3.0,)  # the pause's second attempt, 3 s after its first
    async with impatient("bob") as client:
        launched = await client.post(
            "/v1/agents/deploybot/threads?wait=true",
            json={"input": "deploy", "webhook": receiver.url("/hook")},
        )
    view = launched.json()
    with anyio.fail_after(10):
        while not receiver.received:
            await anyio.sleep(0.01)
    async with impatient("ana") as client:
        decided = await client.post(
            f"/v1/threads/{view['thread_id']}/decisions?wait=true",
            json={"request": view["request"], "decision": "approve"},
        )
    assert decided.json()["status"] == "finished"

    def statuses() -> list[str]:
        return [verified(receiver, i)["thread"]["status"] for i in range(len(receiver.received))]

    with anyio.fail_after(30):
        while "finished" not in statuses():
            await told.resend_due()
            await anyio.sleep(0.1)
    await anyio.sleep(3.5)  # past the pause's retry, had it still been due
    told_in_order = statuses()
    assert told_in_order[-1] == "finished", told_in_order
    assert told_in_order.count("finished") == 1, told_in_order


async def test_a_thread_moved_on_by_another_process_is_told_by_the_sweep(s: Served) -> None:
    """Found by a red team: a thread launched over HTTP with a webhook and approved from
    the CLI (`twelvefold resume --approve`, another process on the same store) ended
    without its reply until the server's next start: the sweep sent only replies whose
    claim had lapsed. It now sends every reply owed to a thread that is not running."""
    receiver = HttpReceiver()
    told = replies(s.service)
    view = (await launch(s, webhook=receiver.url("/hook"))).json()
    assert [verified(receiver, 0)["thread"]["status"]] == ["waiting"]
    sweeping = asyncio.ensure_future(told.keep_up(0.1))
    try:
        # As the CLI would: the runtime alone, without the server's replies.
        ended = await s.service.runtime.resume(
            view["thread_id"], approve=True, by="ana", request=view["request"], via="cli"
        )
        assert ended.status == "finished"
        with anyio.fail_after(10):
            while len(receiver.received) < 2:
                await anyio.sleep(0.05)
        assert verified(receiver, 1)["thread"]["status"] == "finished"
        await anyio.sleep(0.5)  # more sweeps: told once
        assert len(receiver.received) == 2
    finally:
        sweeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeping


@pytest.mark.parametrize(
    ("failure", "traceback"),
    [(ConnectionRefusedError("refused\nforged"), False), (KeyError("a bug"), True)],
)
async def test_an_expected_settle_failure_is_one_line_and_a_bug_keeps_its_traceback(
    s: Served, caplog: pytest.LogCaptureFixture, failure: Exception, traceback: bool
) -> None:
    """A network error from an `on_settled` callback is one escaped WARNING line; anything
    else is a bug in a callback, logged with its traceback."""

    async def failing(view: Any) -> None:
        raise failure

    s.service.on_settled(failing)
    with caplog.at_level("INFO"):
        response = await launch(s)
        assert response.status_code < 300, response.text
        await s.service.stop(grace=10)
    said = [r for r in caplog.records if type(failure).__name__ in r.getMessage() or r.exc_info]
    assert said, caplog.text
    assert all(bool(r.exc_info) == traceback for r in said), caplog.text
    if not traceback:
        assert all("\n" not in r.getMessage() and r.levelname == "WARNING" for r in said)
