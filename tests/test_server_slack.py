"""The Slack app (docs/server.md, "Slack"): signed requests only, buttons that decide with
the API's rules, the reject-with-comment and answer modals, launches from a slash command
or a mention answered in the same Slack thread, and every outside value escaped.

Real parts: the service over SQLite with the real openai client against the scripted
model server, the app through httpx's ASGI transport (which re-raises anything the app
lets escape, so a 500 fails the test), and the real slack_sdk client against the
scripted Slack Web API on loopback (tests/support/slack_server.py). Requests are signed
with slack_sdk's own `SignatureVerifier`, an implementation we did not write.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import anyio
import pytest
from slack_sdk.signature import SignatureVerifier

from tests.support.openai_server import ScriptedOpenAI
from tests.support.server import DEPLOY_CONFIG, Served, deploy_project, served
from tests.support.slack_server import ScriptedSlack, block_problems
from tests.test_server_api import assert_problem
from twelvefold.runtime.notify import Notice
from twelvefold.runtime.types import Rejected
from twelvefold.server.service import Caller
from twelvefold.server.slack import (
    APPROVE,
    APPS,
    REJECT,
    BadSignature,
    SlackApp,
    decided_line,
    request_message,
    settled_text,
    verify,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("collected")]
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL = "C0APPROVALS"
CONFIG = DEPLOY_CONFIG + '\n[slack]\nusers = { U0ANA = "ana", U0BOB = "bob", U0CAROL = "carol" }\n'


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def s(
    tmp_path: Path,
    openai_server: ScriptedOpenAI,
    slack_server: ScriptedSlack,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Served]:
    monkeypatch.setenv("TWELVEFOLD_SLACK_SIGNING_SECRET", SECRET)
    monkeypatch.setenv("TWELVEFOLD_SLACK_BOT_TOKEN", slack_server.token)
    monkeypatch.setenv("TWELVEFOLD_SLACK_CHANNEL", CHANNEL)
    monkeypatch.setenv("TWELVEFOLD_SLACK_API_URL", slack_server.api_url)
    monkeypatch.setenv("TWELVEFOLD_NOTIFY_LOG", "0")
    monkeypatch.setenv("TWELVEFOLD_PUBLIC_URL", "https://tf.example")
    agent = deploy_project(tmp_path / "project", CONFIG)
    async with served(agent, tmp_path / "threads.db", openai_server) as running:
        yield running


def slack_app(s: Served) -> SlackApp:
    return APPS[s.service]


def signed(body: bytes, *, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    """Slack's headers for `body`, made by slack_sdk (the oracle)."""
    timestamp = str(int(time.time() if at is None else at))
    made = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
    return {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": made}


async def post(
    s: Served, body: bytes, *, content_type: str = "application/x-www-form-urlencoded", **how: Any
) -> Any:
    headers = {"Content-Type": content_type, **signed(body, **how)}
    async with s.client() as client:
        response = await client.post("/v1/hooks/slack", content=body, headers=headers)
    await slack_app(s).idle()
    return response


def form(**fields: str) -> bytes:
    return urlencode(fields).encode()


def interaction(payload: dict[str, Any]) -> bytes:
    return form(payload=json.dumps(payload))


def press(user: str, action: str, message: dict[str, Any], trigger: str = "T0TRIGGER") -> bytes:
    """The block_actions payload of `user` pressing `action` on a posted `message`."""
    button = next(
        e
        for b in message["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if e["action_id"] == action
    )
    return interaction(
        {
            "type": "block_actions",
            "user": {"id": user},
            "trigger_id": trigger,
            "channel": {"id": message["channel"]},
            "message": {"ts": message["ts"]},
            "actions": [{"action_id": action, "value": button["value"]}],
        }
    )


async def paused(s: Served, person: str = "bob", text: str = "deploy to production") -> Any:
    async with s.client(person) as client:
        response = await client.post("/v1/agents/deploybot/threads?wait=true", json={"input": text})
    assert response.status_code == 200, response.text
    return response.json()


def posted(slack: ScriptedSlack, thread_id: str) -> dict[str, Any]:
    """The last message with buttons posted for `thread_id`, with its channel and ts."""
    for arguments in reversed(slack.calls_to("chat.postMessage")):
        blocks = arguments.get("blocks", [])
        values = [
            e.get("value", "") for b in blocks if b["type"] == "actions" for e in b["elements"]
        ]
        if any(json.loads(v)["thread"] == thread_id for v in values):
            ts = _ts_of(slack, arguments)
            return {**arguments, "ts": ts}
    raise AssertionError(f"no message with buttons for {thread_id}: {slack.calls}")


def _ts_of(slack: ScriptedSlack, arguments: dict[str, Any]) -> str:
    index = [a for m, a in slack.calls].index(arguments)
    return f"1700000000.{index + 1:06d}"


async def settled(s: Served, thread_id: str) -> Any:
    """The thread once the Slack work started so far (a press's decision runs in the
    background: Slack wants its answer within 3 s), the run it caused and the replies that
    run sent are all done."""
    await slack_app(s).idle()  # the decision is recorded and its run submitted
    with anyio.fail_after(180):  # a bound for a broken build on a loaded machine
        while True:  # `wait` gives up after its own limit (30 s) while the run goes on
            view = await s.service.wait(Caller("ana", "http"), thread_id, 30)
            if view.status != "running":
                break
    await s.service.settling()  # its run may answer `wait` before it tells on_settled
    await slack_app(s).idle()  # the replies on_settled started
    return view


# ---- signatures ------------------------------------------------------------------------


def test_verify_accepts_what_slack_sdk_signs_and_nothing_else() -> None:
    body = b"token=x&command=%2Ftwelvefold&text=deploybot+hi"
    now = time.time()
    good = signed(body, at=now)
    verify(SECRET, good["X-Slack-Request-Timestamp"], good["X-Slack-Signature"], body, now)
    cases = {
        "wrong secret": (signed(body, secret="another-secret", at=now), body, now),
        "tampered body": (good, body + b"&user_id=U0ANA", now),
        "stale timestamp": (signed(body, at=now - 301), body, now),
        "from the future": (signed(body, at=now + 301), body, now),
    }
    for name, (headers, sent, at) in cases.items():
        with pytest.raises(BadSignature):
            verify(SECRET, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"],
                   sent, at)  # fmt: skip
        assert name
    stamp, signature = good["X-Slack-Request-Timestamp"], good["X-Slack-Signature"]
    for timestamp, signature_sent in [(None, signature), (stamp, None), ("1e9", signature),
                                      ("-5", signature), (stamp, signature.upper())]:  # fmt: skip
        with pytest.raises(BadSignature):
            verify(SECRET, timestamp, signature_sent, body, now)
    # Four minutes late is still Slack (its advice: refuse past five).
    late = signed(body, at=now - 240)
    verify(SECRET, late["X-Slack-Request-Timestamp"], late["X-Slack-Signature"], body, now)


async def test_wrongly_signed_requests_are_401_problems_and_do_nothing(
    s: Served, slack_server: ScriptedSlack
) -> None:
    view = await paused(s)
    message = posted(slack_server, view["thread_id"])
    body = press("U0ANA", APPROVE, message)
    now = time.time()
    tries = [
        signed(body, secret="not-the-secret"),
        signed(body, at=now - 600),
        {"X-Slack-Request-Timestamp": str(int(now))},
        {},
        {**signed(b"payload=%7B%7D"), "X-Slack-Request-Timestamp": str(int(now))},
    ]
    async with s.client() as client:
        for headers in tries:
            response = await client.post(
                "/v1/hooks/slack",
                content=body,
                headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
            )
            assert response.status_code == 401, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["status"] == 401
        tampered = body.replace(b"U0ANA", b"U0CAR")
        response = await client.post(
            "/v1/hooks/slack",
            content=tampered,
            headers={"Content-Type": "application/x-www-form-urlencoded", **signed(body)},
        )
        assert response.status_code == 401
        big = b"x" * (300 * 1024)
        response = await client.post("/v1/hooks/slack", content=big, headers=signed(big))
        assert response.status_code == 413
    await slack_app(s).idle()
    still = await s.service.view(Caller("ana", "http"), view["thread_id"])
    assert still.status == "waiting" and still.request == view["request"]
    assert not slack_server.calls_to("chat.update")


async def test_without_a_signing_secret_the_hook_refuses_everything(
    deploy_agent: Path, tmp_path: Path, openai_server: ScriptedOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.delenv("TWELVEFOLD_SLACK_SIGNING_SECRET", raising=False)
    async with served(deploy_agent, tmp_path / "threads.db", openai_server) as running:
        body = form(command="/twelvefold", text="deploybot hi", user_id="U0ANA")
        async with running.client() as client:
            response = await client.post("/v1/hooks/slack", content=body, headers=signed(body))
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


# ---- buttons -------------------------------------------------------------------------


async def test_a_notice_is_posted_with_buttons_and_an_approver_press_decides_it(
    s: Served, slack_server: ScriptedSlack
) -> None:
    view = await paused(s)
    message = posted(slack_server, view["thread_id"])
    assert message["channel"] == CHANNEL
    values = {
        e["action_id"]: json.loads(e["value"])
        for b in message["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
    }
    expected = {"thread": view["thread_id"], "request": view["request"]}
    assert values == {APPROVE: expected, REJECT: expected}
    link = f"<https://tf.example/threads/{view['thread_id']}|open in the inbox>"
    assert link in json.dumps(message["blocks"])

    response = await post(s, press("U0ANA", APPROVE, message))
    assert response.status_code == 200, response.text
    done = await settled(s, view["thread_id"])
    assert done.status == "finished"
    approved = [e for e in await s.service.events(Caller("ana", "http"), done.id) if
                type(e).__name__ == "Approved"]  # fmt: skip
    assert approved[0].by == "ana" and approved[0].via == "slack (slack user U0ANA)"
    updates = slack_server.calls_to("chat.update")
    assert [(u["channel"], u["ts"]) for u in updates] == [(CHANNEL, message["ts"])]
    assert "*approved* by ana" in updates[0]["text"]
    assert not [b for b in updates[0]["blocks"] if b["type"] == "actions"]


async def test_two_settles_at_once_update_a_decided_message_once(
    s: Served, slack_server: ScriptedSlack
) -> None:
    """Two settles of one thread (a decision's and the run's end) may look at its open
    messages at the same time: each message is claimed before it is updated, so it is
    updated once; a failed update gives the claim back."""
    view = await paused(s)
    message = posted(slack_server, view["thread_id"])
    bot = slack_app(s).bot
    assert bot is not None
    response = await post(s, press("U0ANA", APPROVE, message))
    assert response.status_code == 200, response.text
    done = await settled(s, view["thread_id"])
    bot.messages._db.change(  # as if no settle had closed it yet
        "UPDATE slack_messages SET closed = 0 WHERE ts = ?", (message["ts"],)
    )
    before = len(slack_server.calls_to("chat.update"))
    await asyncio.gather(*(bot.close_decided(done) for _ in range(4)))
    assert len(slack_server.calls_to("chat.update")) == before + 1
    assert bot.messages.open_for(view["thread_id"]) == []


async def test_presses_that_may_not_decide_are_told_to_the_user_and_change_nothing(
    s: Served, slack_server: ScriptedSlack
) -> None:
    view = await paused(s, "bob")
    message = posted(slack_server, view["thread_id"])
    # bob is no release manager; U0EVE is nobody here.
    for user, words in [("U0BOB", "may be decided only by"), ("U0EVE", "not mapped")]:
        response = await post(s, press(user, APPROVE, message))
        assert response.status_code == 200
        told = slack_server.calls_to("chat.postEphemeral")[-1]
        assert told["user"] == user and told["channel"] == CHANNEL
        assert words in told["text"], told
    still = await s.service.view(Caller("ana", "http"), view["thread_id"])
    assert still.status == "waiting" and still.request == view["request"]
    assert not slack_server.calls_to("chat.update")

    # A press on a request decided meanwhile (through the API) is stale: 409, told.
    async with s.client("carol") as client:
        decided = await client.post(
            f"/v1/threads/{view['thread_id']}/decisions?wait=true",
            json={"request": view["request"], "decision": "approve"},
        )
    assert decided.status_code == 200, decided.text
    await slack_app(s).idle()
    # ... and the message that carried the buttons now says who decided.
    updates = slack_server.calls_to("chat.update")
    assert updates and "*approved* by carol" in updates[-1]["text"]
    response = await post(s, press("U0ANA", APPROVE, message))
    told = slack_server.calls_to("chat.postEphemeral")[-1]
    assert told["user"] == "U0ANA" and "no longer pending" in told["text"], told


async def test_reject_opens_a_modal_and_the_submission_decides_with_the_comment(
    s: Served, slack_server: ScriptedSlack
) -> None:
    view = await paused(s)
    message = posted(slack_server, view["thread_id"])
    response = await post(s, press("U0CAROL", REJECT, message, trigger="T0REJECT"))
    assert response.status_code == 200
    opened = slack_server.calls_to("views.open")
    assert len(opened) == 1 and opened[0]["trigger_id"] == "T0REJECT"
    modal = opened[0]["view"]
    still = await s.service.view(Caller("ana", "http"), view["thread_id"])
    assert still.status == "waiting", "pressing Reject decides nothing yet"

    def submission(user: str, comment: str) -> bytes:
        return interaction(
            {
                "type": "view_submission",
                "user": {"id": user},
                "view": {
                    "callback_id": modal["callback_id"],
                    "private_metadata": modal["private_metadata"],
                    "state": {"values": {"twelvefold.text": {"twelvefold.text.input": {
                        "type": "plain_text_input", "value": comment}}}},
                },
            }
        )  # fmt: skip

    refused = await post(s, submission("U0BOB", "no"))
    assert refused.status_code == 200
    assert refused.json()["response_action"] == "errors"
    assert "may be decided only by" in refused.json()["errors"]["twelvefold.text"]

    comment = "not on a Friday <!channel>"
    accepted = await post(s, submission("U0CAROL", comment))
    assert accepted.status_code == 200 and accepted.content in (b"", b"null")
    events = await s.service.events(Caller("ana", "http"), view["thread_id"])
    rejected = [e for e in events if type(e).__name__ == "Rejected"]
    assert rejected[0].by == "carol" and rejected[0].comment == comment
    await settled(s, view["thread_id"])
    update = slack_server.calls_to("chat.update")[0]
    assert "*rejected* by carol: not on a Friday &lt;!channel&gt;" in update["text"]
    assert "<!channel>" not in json.dumps(update)


async def test_a_question_is_answered_through_a_modal(
    s: Served, slack_server: ScriptedSlack
) -> None:
    view = await paused(s, "bob", "deploy it ASK ME")
    assert view["waiting_for"] == "answer"
    message = posted(slack_server, view["thread_id"])
    await post(s, press("U0BOB", "twelvefold.answer", message))
    modal = slack_server.calls_to("views.open")[0]["view"]
    body = interaction(
        {
            "type": "view_submission",
            "user": {"id": "U0BOB"},
            "view": {
                "callback_id": modal["callback_id"],
                "private_metadata": modal["private_metadata"],
                "state": {"values": {"twelvefold.text": {"twelvefold.text.input": {
                    "value": "ANSWERED: the newest"}}}},
            },
        }
    )  # fmt: skip
    assert (await post(s, body)).status_code == 200
    events = await s.service.events(Caller("ana", "http"), view["thread_id"])
    answered = [e for e in events if type(e).__name__ == "Answered"]
    assert answered[0].answer.text == "ANSWERED: the newest" and answered[0].answer.by == "bob"


# ---- launching from Slack ------------------------------------------------------------


async def test_a_slash_command_launches_and_replies_in_the_slack_thread(
    s: Served, slack_server: ScriptedSlack
) -> None:
    body = form(command="/twelvefold", text="deploybot deploy to production",
                user_id="U0BOB", channel_id="C0TEAM", trigger_id="T1")  # fmt: skip
    response = await post(s, body)
    assert response.status_code == 200
    assert response.json()["response_type"] == "ephemeral"
    root = slack_server.calls_to("chat.postMessage")[0]
    assert root["channel"] == "C0TEAM" and "bob launched `deploybot`" in root["text"]
    root_ts = _ts_of(slack_server, root)
    threads = await s.service.threads(Caller("ana", "http"))
    assert len(threads) == 1
    thread_id = threads[0].id
    assert s.service.launches.launcher(thread_id) == "bob"
    await settled(s, thread_id)
    in_thread = [m for m in slack_server.calls_to("chat.postMessage") if m.get("thread_ts")]
    assert len(in_thread) == 1 and in_thread[0]["thread_ts"] == root_ts
    assert in_thread[0]["channel"] == "C0TEAM"
    assert [b for b in in_thread[0]["blocks"] if b["type"] == "actions"], "buttons in thread"

    message = {**in_thread[0], "ts": _ts_of(slack_server, in_thread[0])}
    await post(s, press("U0ANA", APPROVE, message))
    done = await settled(s, thread_id)
    assert done.status == "finished"
    replies = [m for m in slack_server.calls_to("chat.postMessage") if m.get("thread_ts")]
    assert len(replies) == 2 and replies[1]["thread_ts"] == root_ts
    assert "finished" in replies[1]["text"] and "deployed: https://production" in replies[1]["text"]
    # Both messages with buttons (the channel's notice and the thread's) now say who.
    assert len(slack_server.calls_to("chat.update")) == 2


async def test_a_mention_launches_and_answers_in_its_thread(
    s: Served, slack_server: ScriptedSlack
) -> None:
    challenge = json.dumps({"type": "url_verification", "challenge": "abc123"}).encode()
    response = await post(s, challenge, content_type="application/json")
    assert response.json() == {"challenge": "abc123"}
    event = {
        "type": "event_callback",
        "event": {"type": "app_mention", "user": "U0BOB", "channel": "C0TEAM",
                  "ts": "1699999999.000100", "text": "<@U0BOT> deploybot deploy to production"},
    }  # fmt: skip
    response = await post(s, json.dumps(event).encode(), content_type="application/json")
    assert response.status_code == 200
    [info] = await s.service.threads(Caller("ana", "http"))
    await settled(s, info.id)
    in_thread = [m for m in slack_server.calls_to("chat.postMessage") if m.get("thread_ts")]
    assert [m["thread_ts"] for m in in_thread] == ["1699999999.000100"]
    # Slack's retry of the same event launches nothing more.
    async with s.client() as client:
        body = json.dumps(event).encode()
        retry = {"Content-Type": "application/json", "X-Slack-Retry-Num": "1", **signed(body)}
        await client.post("/v1/hooks/slack", content=body, headers=retry)
    await slack_app(s).idle()
    assert len(await s.service.threads(Caller("ana", "http"))) == 1


async def test_launches_from_slack_are_refused_plainly(
    s: Served, slack_server: ScriptedSlack
) -> None:
    cases = [
        ("U0EVE", "deploybot hi", "not mapped"),
        ("U0BOB", "<!channel> *boom*", "no agent `&lt;!channel&gt;` here"),
        # A key given twice: readers disagree on which value counts, so neither is launched.
        ("U0BOB", 'deploybot {"tag": "v1", "tag": "v2"}', "key ˋtagˋ is given twice"),
    ]
    for user, text, words in cases:
        body = form(command="/twelvefold", text=text, user_id=user, channel_id="C0TEAM")
        response = await post(s, body)
        assert response.status_code == 200
        told = slack_server.calls_to("chat.postEphemeral")[-1]
        assert told["user"] == user and words in told["text"], told
        assert "<!channel>" not in told["text"]
    empty = await post(s, form(command="/twelvefold", text="  ", user_id="U0BOB"))
    assert "usage" in empty.json()["text"]
    assert await s.service.threads(Caller("ana", "http")) == []


async def test_signed_but_malformed_requests_are_4xx_or_ignored_never_a_500(
    s: Served, slack_server: ScriptedSlack, caplog: pytest.LogCaptureFixture
) -> None:
    view = await paused(s)
    deep = "[" * 20_000 + "]" * 20_000  # deeper than Python's recursion limit
    repeating = [  # a key given twice: readers disagree on which one counts
        b'{"type": "event_callback", "type": "url_verification", "challenge": "c"}',
        form(payload='{"type": "view_submission", "type": "block_actions"}'),
    ]
    bodies = [
        (form(payload=deep), "form"),
        (form(payload="not json"), "form"),
        (form(payload="[1, 2]"), "form"),
        (interaction({"type": "block_actions", "actions": ["x"], "user": 5}), "form"),
        (interaction({"type": "block_actions", "user": {"id": "U0ANA"}, "actions": [
            {"action_id": APPROVE, "value": deep}]}), "form"),
        (interaction({"type": "block_actions", "user": {"id": "U0ANA"}, "actions": [
            {"action_id": APPROVE, "value": '{"thread": "../../etc", "request": "r"}'}]}), "form"),
        (interaction({"type": "view_submission", "user": {"id": "U0ANA"}, "view": {
            "callback_id": REJECT, "private_metadata": deep}}), "form"),
        (interaction({"type": "view_submission", "view": []}), "form"),
        (form(something="else"), "form"),
        (deep.encode(), "json"),
        (b"[]", "json"),
        (json.dumps({"type": "event_callback", "event": {"text": 5}}).encode(), "json"),
        (repeating[0], "json"),
        (repeating[1], "form"),
    ]  # fmt: skip
    for body, kind in bodies:
        content_type = "application/json" if kind == "json" else "application/x-www-form-urlencoded"
        response = await post(s, body, content_type=content_type)
        assert response.status_code in (200, 400), (body[:80], response.text)
        if response.status_code == 400:
            assert response.headers["content-type"] == "application/problem+json"
        if body in repeating:
            assert_problem(response, 400, "`type` is given twice")
    still = await s.service.view(Caller("ana", "http"), view["thread_id"])
    assert still.status == "waiting" and still.request == view["request"]
    # Nor did the work done in the background after answering Slack break on them.
    assert not [r for r in caplog.records if r.exc_info], caplog.text


# ---- escaping ------------------------------------------------------------------------


def test_hostile_values_are_escaped_and_kept_within_block_kit_limits() -> None:
    hostile = "<!channel> <@U0ANA> *bold* `code` <https://evil.example|bank> @here &amp;"
    notice = Notice(
        thread_id="t-1",
        agent="deploybot",
        step="approve_deploy",
        kind="approval",
        text=hostile * 100,
        value={"tag": hostile * 2000},
        approvers=(hostile,),
        request="r-1",
        link="https://twelvefold.example/threads/t-1",
    )
    message = request_message(notice)
    assert block_problems(message["blocks"]) == []
    # What Slack reads as mrkdwn: the fallback text and every mrkdwn text object (a
    # plain_text header shows its text literally).
    mrkdwn = [message["text"]] + [
        t["text"]
        for b in message["blocks"]
        for t in [b.get("text") or {}, *b.get("elements", [])]
        if t.get("type") == "mrkdwn"
    ]
    dumped = json.dumps(mrkdwn, ensure_ascii=False)
    for raw in ("<!channel>", "<@U0ANA>", "<https://evil.example|bank>", "@here", "`code`"):
        assert raw not in dumped, raw
    assert "&lt;!channel&gt;" in dumped and "&amp;amp;" in dumped
    assert "<https://twelvefold.example/threads/t-1|open in the inbox>" in dumped
    assert len(message["text"]) <= 40_000
    # An `ask` that renders empty still makes a message Slack takes.
    blank = request_message(Notice("t-2", "a", "s", "human", "  ", None, request="r-2"))
    assert block_problems(blank["blocks"]) == []


def test_hidden_and_direction_changing_characters_are_shown_as_escapes_in_slack() -> None:
    # A model's output `tag: "\u202e3.2.1v"` reads "v1.2.3" when shown raw; the inbox
    # and the log show `\u202e`, and so must every text Slack is sent (rt13).
    hidden = "\u202e\u2066\u2069\u200b\u00ad\ufeff\x1b"
    notice = Notice(
        thread_id="t-1",
        agent="deploybot",
        step="approve_deploy",
        kind="approval",
        text="Deploy \u202e3.2.1v to production? \u2066@channel\u2069",
        value={"tag": "\u202e3.2.1v", "env": f"prod{hidden}"},
        approvers=("ana\u200b",),
        request="r-1",
    )
    message = request_message(notice)
    assert block_problems(message["blocks"]) == []
    texts = [message["text"], *_texts(message["blocks"])]
    settled = SimpleNamespace(id="t-1", agent="deploybot", status="finished",
                              output={"tag": "\u202e3.2.1v"}, error=None)  # fmt: skip
    texts.append(settled_text(settled))  # type: ignore[arg-type]
    texts.append(
        decided_line(
            Rejected(step="approve_deploy", request="r-1", comment="\u202enot this one", by="ana"),
            "r-1",
        )
    )
    for text in texts:
        assert not set(hidden) & set(text), ascii(text)
    header = message["blocks"][0]["text"]["text"]
    assert header.startswith("Deploy \\u202e3.2.1v to production?"), header
    assert "\\u202e3.2.1v" in message["blocks"][1]["text"]["text"]
    assert "\\u202e3.2.1v" in texts[-2] and "\\u202enot this one" in texts[-1]
    # A header cut to Slack's 150 characters never ends in part of an escape.
    cut = request_message(replace(notice, text="x" * 147 + "\u202e"))["blocks"][0]["text"]
    assert cut["text"] == "x" * 147
    # Slack's own escaping is kept: `@channel` still mentions nobody (its word joiner
    # is ours, after the escaping of the text's own).
    assert "@\u2060channel" in message["blocks"][1]["text"]["text"]


def _texts(value: Any) -> list[str]:
    """Every `text` string inside Block Kit blocks."""
    if isinstance(value, list):
        return [t for item in value for t in _texts(item)]
    if isinstance(value, dict):
        own = [value["text"]] if isinstance(value.get("text"), str) else []
        return own + [t for key, item in value.items() if key != "text" for t in _texts(item)]
    return []


async def test_a_replayed_signed_request_is_refused_and_launches_nothing(
    s: Served, slack_server: ScriptedSlack
) -> None:
    """Within the five minutes the timestamp check allows, the same signed request sent
    again (by anyone who saw it on its way) is refused: one launch, not two."""
    body = form(command="/twelvefold", text="deploybot deploy to production",
                user_id="U0BOB", channel_id="C0TEAM", trigger_id="T1")  # fmt: skip
    headers = {"Content-Type": "application/x-www-form-urlencoded", **signed(body)}
    async with s.client() as client:
        first = await client.post("/v1/hooks/slack", content=body, headers=headers)
        again = await client.post("/v1/hooks/slack", content=body, headers=headers)
    await slack_app(s).idle()
    assert first.status_code == 200
    assert again.status_code == 401 and "replay" in again.json()["detail"]
    assert again.headers["content-type"] == "application/problem+json"
    assert len(await s.service.threads(Caller("ana", "http"))) == 1
    # A new request (its own timestamp or body, so its own signature) is taken.
    other = form(command="/twelvefold", text="deploybot deploy to staging",
                 user_id="U0BOB", channel_id="C0TEAM", trigger_id="T2")  # fmt: skip
    assert (await post(s, other)).status_code == 200
    assert len(await s.service.threads(Caller("ana", "http"))) == 2


def test_the_replay_memory_is_bounded_and_forgets_after_the_window() -> None:
    from twelvefold.server.slack import MAX_SKEW_SECONDS, SeenSignatures

    seen = SeenSignatures(limit=100)
    for n in range(10_000):
        assert seen.first_time(f"v0={n}", 1000.0, 1000.0)
    assert len(seen._seen) <= 100
    assert not seen.first_time("v0=9999", 1000.0, 1000.0)
    assert seen.first_time("v0=9999", 1000.0, 1001.0 + 2 * MAX_SKEW_SECONDS)  # let go


def test_a_slack_user_mapped_to_a_reserved_or_malformed_name_is_nobody(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`schedule:NAME` and `timeout` are the names the server records for a schedule's
    launches and an approval's timeout, and no token can be made for them: a Slack user
    mapped to one would act (and be recorded) as the server itself. Such an entry maps
    nobody and is logged; the others stand."""
    from types import SimpleNamespace
    from typing import cast

    from twelvefold.runtime.loop import Agent
    from twelvefold.server.slack import slack_users

    (tmp_path / "twelvefold.toml").write_text(
        '[slack]\nusers = { U0ANA = "ana", U0X = "schedule:nightly", U0Y = "timeout",'
        ' U0Z = " spaced" }\n'
    )
    agent = cast(Agent, SimpleNamespace(directory=tmp_path))
    assert slack_users(agent) == {"U0ANA": "ana"}
    assert "U0X" in caplog.text and "reserved" in caplog.text


async def test_a_form_with_a_field_twice_or_not_utf_8_launches_nothing(
    s: Served, slack_server: ScriptedSlack
) -> None:
    """rt15: the form was read leniently (the first of two `text` fields, bytes that are
    not UTF-8 as U+FFFD, %00 kept), where every other body is refused for each."""
    fields = "command=/twelvefold&user_id=U0BOB&channel_id=C0TEAM&trigger_id=T1"
    refused = {
        f"{fields}&text=deploybot+deploy+to+staging&text=deploybot+deploy+to+production": "twice",
        f"{fields}&user_id=U0ANA&text=deploybot+go": "twice",
        f"{fields}&text=deploybot+deploy+%FF": "not UTF-8",
        f"{fields}&text=deploybot+deploy+%00": "NUL",
    }
    for body, said in refused.items():
        response = await post(s, body.encode())
        assert response.status_code == 400 and said in response.json()["detail"], response.text
    assert await s.service.threads(Caller("ana", "http")) == []
    assert slack_server.calls_to("chat.postMessage") == []
