"""Notification channels against real receivers on loopback: an HTTP listener and aiosmtpd."""

from __future__ import annotations

import asyncio
import io
import json
import socket
from collections.abc import Iterator
from email import message_from_bytes
from typing import Any, Literal

import pytest
from aiosmtpd.controller import Controller
from pydantic import BaseModel

from tests.support.receivers import HttpReceiver
from twelvefold.runtime.notify import (
    EmailNotifier,
    LogNotifier,
    MultiNotifier,
    Notice,
    NotifyError,
    SlackNotifier,
    WebhookNotifier,
    notifier_from_env,
)


class DeployBackend(BaseModel):
    tag: str
    env: Literal["staging", "production"]


NOTICE = Notice(
    thread_id="th-1",
    agent="deploybot",
    step="approve_deploy",
    kind="approval",
    text="Deploy v1.2.3 to production?",
    value=DeployBackend(tag="v1.2.3", env="production"),
    approvers=("release-managers",),
    request="approve_deploy-4",
)


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Controller, Inbox]]:
    inbox = Inbox()
    with socket.socket() as probe:  # aiosmtpd needs a concrete port to check it started
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield controller, inbox
    controller.stop()


def notify(notifier: Any, notice: Notice = NOTICE) -> list[str]:
    return asyncio.run(notifier.notify(notice))


def test_webhook_posts_the_notice_as_json(http_receiver: HttpReceiver) -> None:
    channels = notify(WebhookNotifier(http_receiver.url("/hooks/agents")))
    assert channels == ["webhook"]
    ((path, headers, _),) = http_receiver.received
    assert path == "/hooks/agents"
    assert headers["Content-Type"] == "application/json"
    assert http_receiver.json() == {
        "thread_id": "th-1",
        "agent": "deploybot",
        "step": "approve_deploy",
        "kind": "approval",
        "text": "Deploy v1.2.3 to production?",
        "value": {"tag": "v1.2.3", "env": "production"},
        "approvers": ["release-managers"],
        "request": "approve_deploy-4",
    }


def test_slack_posts_an_incoming_webhook_payload(http_receiver: HttpReceiver) -> None:
    assert notify(SlackNotifier(http_receiver.url("/services/T/B/X"))) == ["slack"]
    payload = http_receiver.json()
    assert payload["text"].endswith("Deploy v1.2.3 to production?")
    assert [block["type"] for block in payload["blocks"]] == ["header", "section", "context"]
    assert payload["blocks"][0]["text"] == {
        "type": "plain_text",
        "text": "Deploy v1.2.3 to production?",
    }
    context = json.dumps(payload["blocks"][2])
    assert (
        "release-managers" in context
        and "twelvefold resume th-1 --request approve_deploy-4 --approve" in context
    )


def test_a_webhook_that_refuses_is_a_notify_error() -> None:
    receiver = HttpReceiver(status=500)
    try:
        with pytest.raises(NotifyError, match=r"POST http://127\.0\.0\.1"):
            notify(WebhookNotifier(receiver.url("/down")))
        assert len(receiver.received) == 1
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def test_email_goes_through_a_real_smtp_server(smtp_server: tuple[Controller, Inbox]) -> None:
    controller, inbox = smtp_server
    notifier = EmailNotifier("127.0.0.1", controller.port, "bot@example.com", ["rm@x.io"])
    assert notify(notifier) == ["email"]
    ((sender, recipients, content),) = inbox.messages
    assert (sender, recipients) == ("bot@example.com", ["rm@x.io"])
    message = message_from_bytes(content)
    assert "deploybot waits for approval at `approve_deploy`" in message["Subject"]
    body = message.get_payload(decode=True).decode()
    assert body.startswith("Deploy v1.2.3 to production?")
    assert (
        '"env": "production"' in body
        and "twelvefold resume th-1 --request approve_deploy-4 --approve" in body
    )


def test_an_unreachable_smtp_server_is_a_notify_error() -> None:
    with pytest.raises(NotifyError, match=r"email via 127\.0\.0\.1:1"):
        notify(EmailNotifier("127.0.0.1", 1, "a@b", ["c@d"]))


def test_log_writes_what_to_run() -> None:
    stream = io.StringIO()
    human = Notice(
        "th-2", "calculator", "ask_user", "human", "Which number?", None, request="ask_user-2"
    )
    assert notify(LogNotifier(stream), human) == ["log"]
    assert "calculator waits for an answer at `ask_user`" in stream.getvalue()
    assert "twelvefold resume th-2 --request ask_user-2 --answer TEXT" in stream.getvalue()


def test_multi_delivers_to_every_channel_and_survives_one_failing(
    http_receiver: HttpReceiver,
) -> None:
    channels = MultiNotifier(
        [
            WebhookNotifier(http_receiver.url("/a")),
            EmailNotifier("127.0.0.1", 1, "a@b", ["c@d"]),  # nothing listens there
            SlackNotifier(http_receiver.url("/b")),
        ]
    )
    assert notify(channels) == ["webhook", "slack"]
    assert [path for path, _, _ in http_receiver.received] == ["/a", "/b"]
    with pytest.raises(NotifyError):
        notify(MultiNotifier([EmailNotifier("127.0.0.1", 1, "a@b", ["c@d"])]))


def test_the_environment_configures_the_channels(
    http_receiver: HttpReceiver, smtp_server: tuple[Controller, Inbox]
) -> None:
    controller, inbox = smtp_server
    port = controller.port
    notifier = notifier_from_env(
        {
            "TWELVEFOLD_NOTIFY_LOG": "0",
            "TWELVEFOLD_NOTIFY_WEBHOOK": http_receiver.url("/hook"),
            "TWELVEFOLD_NOTIFY_SLACK": http_receiver.url("/slack"),
            "TWELVEFOLD_SMTP_HOST": "127.0.0.1",
            "TWELVEFOLD_SMTP_PORT": str(port),
            "TWELVEFOLD_SMTP_FROM": "bot@example.com",
            "TWELVEFOLD_SMTP_TO": "a@x.io, b@x.io",
        }
    )
    assert notify(notifier) == ["webhook", "slack", "email"]
    assert inbox.messages[0][1] == ["a@x.io", "b@x.io"]
    assert [type(c).__name__ for c in notifier_from_env({}).channels] == ["LogNotifier"]


def test_email_without_recipients_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="TWELVEFOLD_SMTP_TO"):
        notifier_from_env({"TWELVEFOLD_SMTP_HOST": "127.0.0.1"})
