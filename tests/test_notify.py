"""Notification channels against real receivers on loopback: an HTTP listener and aiosmtpd."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import replace
from email import message_from_bytes
from typing import Any, Literal

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from pydantic import BaseModel
from standardwebhooks import Webhook, WebhookVerificationError

from tests.support.receivers import HttpReceiver, dead_port
from twelvefold.runtime.notify import (
    EmailNotifier,
    LogNotifier,
    MultiNotifier,
    Notice,
    NotifyError,
    SlackNotifier,
    WebhookNotifier,
    notifier_from_env,
    slack_text,
)
from twelvefold.runtime.types import Notified


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
SECRET = "whsec_" + base64.b64encode(b"a 32-byte key for the test suite").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"somebody else's key, not ours!!").decode()


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


def bot_mailer(port: int, **options: Any) -> EmailNotifier:
    """An email channel on loopback that logs in as `bot` with the password `hunter2`."""
    return EmailNotifier(
        "127.0.0.1", port, "bot@x.io", ["rm@x.io"], username="bot", password="hunter2", **options
    )


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
        and "twelvefold resume th-1 --request approve_deploy-4 --by NAME --approve" in context
    )


def test_a_webhook_that_refuses_is_a_notify_error() -> None:
    receiver = HttpReceiver(status=500)
    try:
        with pytest.raises(NotifyError) as caught:
            notify(WebhookNotifier(receiver.url("/down/t0ken")))
        port = receiver.server.server_address[1]
        assert str(caught.value) == f"webhook: POST to http://127.0.0.1:{port} answered 500"
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
        and "twelvefold resume th-1 --request approve_deploy-4 --by NAME --approve" in body
    )


def test_an_unreachable_smtp_server_is_a_notify_error() -> None:
    with pytest.raises(NotifyError, match=r"^email: SMTP via 127\.0\.0\.1:1 failed: "):
        notify(EmailNotifier("127.0.0.1", 1, "a@b", ["c@d"]))


def test_log_writes_what_to_run() -> None:
    stream = io.StringIO()
    human = Notice(
        "th-2", "calculator", "ask_user", "human", "Which number?", None, request="ask_user-2"
    )
    assert notify(LogNotifier(stream), human) == ["log"]
    assert "calculator waits for an answer at `ask_user`" in stream.getvalue()
    assert "twelvefold resume th-2 --request ask_user-2 --answer TEXT" in stream.getvalue()


def test_multi_tries_every_channel_and_reports_the_one_that_failed(
    http_receiver: HttpReceiver,
) -> None:
    channels = MultiNotifier(
        [
            WebhookNotifier(http_receiver.url("/a")),
            EmailNotifier("127.0.0.1", 1, "a@b", ["c@d"]),  # nothing listens there
            SlackNotifier(http_receiver.url("/b")),
        ]
    )
    with pytest.raises(NotifyError) as caught:
        notify(channels)
    assert caught.value.delivered == ("webhook", "slack")
    (failed,) = caught.value.failed
    assert failed.startswith("email: SMTP via 127.0.0.1:1 failed: ")
    assert [path for path, _, _ in http_receiver.received] == ["/a", "/b"]
    assert notify(MultiNotifier([WebhookNotifier(http_receiver.url("/c"))])) == ["webhook"]


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


# ---- Standard Webhooks: checked by the `standardwebhooks` package, not by our own code ------


def lowered(headers: dict[str, str]) -> dict[str, str]:
    """HTTP header names are case-insensitive (urllib sends `Webhook-id`)."""
    return {name.lower(): value for name, value in headers.items()}


def test_a_signed_webhook_verifies_with_the_standard_webhooks_library(
    http_receiver: HttpReceiver,
) -> None:
    notify(WebhookNotifier(http_receiver.url("/hook"), secret=SECRET))
    ((_, sent, body),) = http_receiver.received
    headers = lowered(sent)
    assert Webhook(SECRET).verify(body, headers) == http_receiver.json()
    assert re.fullmatch(r"msg_[0-9a-f]{32}", headers["webhook-id"])
    assert re.fullmatch(r"[0-9]+", headers["webhook-timestamp"])
    assert headers["webhook-signature"].startswith("v1,")


def test_a_wrong_secret_or_a_changed_body_fails_verification(http_receiver: HttpReceiver) -> None:
    notify(WebhookNotifier(http_receiver.url("/hook"), secret=SECRET))
    ((_, headers, body),) = http_receiver.received
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER_SECRET).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace(b"production", b"staging"), headers)
    unsigned = {k: v for k, v in lowered(headers).items() if k != "webhook-signature"}
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, unsigned)


def test_the_webhook_id_is_one_per_notice_and_kept_across_its_retries(
    http_receiver: HttpReceiver,
) -> None:
    channel = WebhookNotifier(http_receiver.url("/hook"), secret=SECRET)
    notify(channel)
    notify(channel)  # the same notice, tried again
    notify(channel, replace(NOTICE, request="approve_deploy-9"))
    notify(channel, replace(NOTICE, thread_id="th-2"))
    ids = [lowered(headers)["webhook-id"] for _, headers, _ in http_receiver.received]
    assert ids[0] == ids[1]
    assert len({ids[0], ids[2], ids[3]}) == 3
    for _, headers, body in http_receiver.received:  # each attempt is signed afresh
        Webhook(SECRET).verify(body, headers)


def test_without_a_secret_the_webhook_is_identified_but_unsigned(
    http_receiver: HttpReceiver,
) -> None:
    notify(WebhookNotifier(http_receiver.url("/hook")))
    ((_, sent, _),) = http_receiver.received
    headers = lowered(sent)
    assert "webhook-id" in headers and "webhook-timestamp" in headers
    assert "webhook-signature" not in headers


def test_a_secret_that_is_not_base64_is_refused_without_showing_it() -> None:
    with pytest.raises(ValueError, match="TWELVEFOLD_WEBHOOK_SECRET") as caught:
        notifier_from_env(
            {
                "TWELVEFOLD_NOTIFY_WEBHOOK": "http://127.0.0.1:1/hook",
                "TWELVEFOLD_WEBHOOK_SECRET": "whsec_not*base64*hunter2",
            }
        )
    assert "hunter2" not in str(caught.value)


def _b64(size: int) -> str:
    return base64.b64encode(bytes(range(1, size + 1))).decode()


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_YWJ",  # base64 without its `=` padding: Go's and Java's decoders refuse it
        "whsec_" + _b64(32).rstrip("="),
        "whsec_" + _b64(16),  # the spec: 24 to 64 bytes
        "whsec_" + _b64(65),
        "whsec_" + _b64(32).replace("+", "-").replace("/", "_") + "-_",  # base64url
        "whsec_",
    ],
    ids=["unpadded", "unpadded 32 bytes", "16 bytes", "65 bytes", "base64url", "empty"],
)
def test_a_secret_receivers_could_not_read_is_refused_saying_what_one_looks_like(
    secret: str,
) -> None:
    # Standard Webhooks: "Random. Between 24 bytes (192 bits) and 64 bytes (512 bits)",
    # "base64 encoded, prefixed with whsec_". The runtime padded a secret itself; a
    # receiver's library that decodes plain base64 then failed on every notice (rt13).
    with pytest.raises(ValueError) as caught:
        notifier_from_env(
            {"TWELVEFOLD_NOTIFY_WEBHOOK": "http://127.0.0.1:1/hook",
             "TWELVEFOLD_WEBHOOK_SECRET": secret}
        )  # fmt: skip
    message = str(caught.value)
    assert message.startswith("TWELVEFOLD_WEBHOOK_SECRET: ") and "\n" not in message
    assert "whsec_ followed by" in message and "24 to 64" in message
    assert secret == "whsec_" or secret.removeprefix("whsec_") not in message


@pytest.mark.parametrize("size", [24, 32, 64])
@pytest.mark.parametrize("prefix", ["whsec_", ""])
def test_a_secret_of_24_to_64_bytes_in_padded_base64_is_taken(prefix: str, size: int) -> None:
    notifier_from_env(
        {"TWELVEFOLD_NOTIFY_WEBHOOK": "http://127.0.0.1:1/hook",
         "TWELVEFOLD_WEBHOOK_SECRET": prefix + _b64(size)}
    )  # fmt: skip


def test_the_environment_signs_webhooks_with_its_secret(http_receiver: HttpReceiver) -> None:
    notifier = notifier_from_env(
        {
            "TWELVEFOLD_NOTIFY_LOG": "0",
            "TWELVEFOLD_NOTIFY_WEBHOOK": http_receiver.url("/hook"),
            "TWELVEFOLD_WEBHOOK_SECRET": SECRET,
        }
    )
    assert notify(notifier) == ["webhook"]
    ((_, headers, body),) = http_receiver.received
    Webhook(SECRET).verify(body, headers)


# ---- Slack: what a model wrote is shown, never acted on -------------------------------------

HOSTILE = (
    "done```\n*Approved by the CFO* <!channel> @channel @here "
    "<https://evil.example/pay|https://bank.example/approve> & more"
)


def test_slack_escapes_a_model_value_that_tries_to_break_out(http_receiver: HttpReceiver) -> None:
    hostile = replace(NOTICE, text=f"Deploy {HOSTILE}?", value={"tag": HOSTILE})
    notify(SlackNotifier(http_receiver.url("/services/T/B/X")), hostile)
    payload = http_receiver.json()
    section = payload["blocks"][1]["text"]["text"]
    mrkdwn = [payload["text"], section, *(e["text"] for e in payload["blocks"][2]["elements"])]
    for text in mrkdwn:
        assert "<!channel>" not in text and "<https://" not in text and "<" not in text
        assert not re.search(r"@(channel|here)\b", text), text
    # The value stays inside its code block: exactly the block's own two fences.
    assert section.count("```") == 2 and section.endswith("```")
    assert "&lt;!channel&gt;" in section and "&amp; more" in section
    assert "https://evil.example/pay|https://bank.example/approve" in section  # shown, inert


def test_a_long_value_still_fits_slacks_limits(http_receiver: HttpReceiver) -> None:
    # Slack answers 400 to a message whose section or context text passes 3,000
    # characters (its Block Kit reference), header text 150: a long value from the model
    # must not keep every notice about the request from being delivered.
    long = "<&>" * 3000
    hostile = replace(NOTICE, text=f"Deploy {long}?", value={"tag": long}, approvers=("x" * 4000,))
    notify(SlackNotifier(http_receiver.url("/services/T/B/X")), hostile)
    blocks = http_receiver.json()["blocks"]
    assert len(blocks[0]["text"]["text"]) <= 150
    texts = [blocks[1]["text"]["text"], *(e["text"] for e in blocks[2]["elements"])]
    assert all(len(text) <= 3000 for text in texts), [len(text) for text in texts]
    section = texts[0]
    assert section.count("```") == 2 and section.endswith("```"), "the value stays in its block"
    assert "twelvefold show th-1` shows all)```" in section
    assert not re.search(r"&[a-z]{0,3}…", section), "no entity is cut in half"
    assert "request `approve_deploy-4`" in section


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a & b", "a &amp; b"),
        ("<!here>", "&lt;!here&gt;"),
        ("<@U123>", "&lt;@\u2060U123&gt;"),
        ("@channel", "@\u2060channel"),
        ("```", "\u02cb\u02cb\u02cb"),
        ("plain text", "plain text"),
    ],
)
def test_slack_text_is_shown_literally(text: str, shown: str) -> None:
    assert slack_text(text) == shown


# ---- email: a password only over TLS ----------------------------------------------------


def test_a_password_is_never_sent_without_tls(smtp_server: tuple[Controller, Inbox]) -> None:
    controller, inbox = smtp_server
    notifier = bot_mailer(controller.port)
    with pytest.raises(NotifyError, match="refusing to send the SMTP password") as caught:
        notify(notifier)
    assert "hunter2" not in str(caught.value)
    assert inbox.messages == []


def test_starttls_that_the_server_does_not_offer_stops_before_the_login(
    smtp_server: tuple[Controller, Inbox],
) -> None:
    controller, inbox = smtp_server  # aiosmtpd without a TLS context offers no STARTTLS
    notifier = bot_mailer(controller.port, starttls=True)
    with pytest.raises(NotifyError, match="STARTTLS") as caught:
        notify(notifier)
    assert "hunter2" not in str(caught.value)
    assert inbox.messages == []


def test_the_environment_chooses_implicit_tls_on_port_465() -> None:
    notifier = notifier_from_env(
        {"TWELVEFOLD_NOTIFY_LOG": "0", "TWELVEFOLD_SMTP_HOST": "mx", "TWELVEFOLD_SMTP_TO": "a@b"}
        | {"TWELVEFOLD_SMTP_TLS": "1", "TWELVEFOLD_SMTP_USER": "u"}
    )
    (channel,) = notifier.channels
    assert isinstance(channel, EmailNotifier)
    assert (channel.tls, channel.port) == (True, 465)


# ---- every channel down: every failure reported, no secret in any of them ----------------


def test_every_failed_channel_is_reported_and_no_message_shows_a_secret() -> None:
    port = dead_port()
    refusing = HttpReceiver(status=500)
    stream = io.StringIO()
    try:
        notifier = MultiNotifier(
            [
                LogNotifier(stream),
                WebhookNotifier(f"http://hook:s3cr3t@127.0.0.1:{port}/h/T0KEN?sig=abc"),
                SlackNotifier(refusing.url("/services/T0001/B0002/XOXBSLACKTOKEN")),
                bot_mailer(port),
            ]
        )
        with pytest.raises(NotifyError) as caught:
            notify(notifier)
    finally:
        refusing.server.shutdown()
        refusing.server.server_close()
    error = caught.value
    assert error.delivered == ("log",)
    assert [reason.split(":", 1)[0] for reason in error.failed] == ["webhook", "slack", "email"]
    shown = " ".join([str(error), *error.failed])
    for secret in ("s3cr3t", "T0KEN", "sig=abc", "XOXBSLACKTOKEN", "T0001", "hunter2"):
        assert secret not in shown, shown
    # The log line went out, but where other channels are configured it tells nobody.
    assert "deploybot waits for approval" in stream.getvalue()
    told = Notified(step="s", channels=error.delivered, failed=error.failed)
    assert not told.delivered


@pytest.mark.parametrize(
    ("channels", "failed", "delivered"),
    [
        (("log",), (), True),  # a log-only setup: a person at the terminal
        (("log",), ("webhook: answered 500",), False),
        ((), ("webhook: answered 500",), False),
        (("webhook",), ("slack: answered 500",), True),
        ((), (), True),  # no channel configured: nothing could fail
    ],
)
def test_what_counts_as_delivered(
    channels: tuple[str, ...], failed: tuple[str, ...], delivered: bool
) -> None:
    assert Notified(step="s", channels=channels, failed=failed).delivered is delivered


class TlsSmtp:
    """aiosmtpd that requires STARTTLS and a login, with a certificate from a throwaway CA
    that `trusting` (and nothing else) trusts. `logins` records each login and whether
    the connection was encrypted when it came."""

    def __init__(self, *, implicit: bool = False) -> None:
        ca = trustme.CA()
        server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(server_side)
        self.trusting = ssl.create_default_context()
        ca.configure_trust(self.trusting)
        self.inbox = Inbox()
        self.logins: list[tuple[bytes, bytes, bool]] = []
        self.controller = Controller(
            self.inbox,
            hostname="127.0.0.1",
            port=dead_port(),
            tls_context=None if implicit else server_side,
            require_starttls=not implicit,
            ssl_context=server_side if implicit else None,
            # aiosmtpd counts only STARTTLS as TLS for AUTH; `logins` shows the session's.
            auth_require_tls=not implicit,
            auth_required=True,
            authenticator=self.authenticate,
        )

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        encrypted = session.ssl is not None or server.transport.get_extra_info("ssl_object")
        self.logins.append((data.login, data.password, bool(encrypted)))
        return AuthResult(success=(data.login, data.password) == (b"bot", b"hunter2"))


@pytest.fixture
def tls_smtp() -> Iterator[TlsSmtp]:
    server = TlsSmtp()
    server.controller.start()
    yield server
    server.controller.stop()


def test_a_login_goes_over_starttls_with_the_certificate_checked(tls_smtp: TlsSmtp) -> None:
    port = tls_smtp.controller.port
    notifier = bot_mailer(port, starttls=True, context=tls_smtp.trusting)
    assert notify(notifier) == ["email"]
    assert tls_smtp.logins == [(b"bot", b"hunter2", True)]  # the password, encrypted
    assert len(tls_smtp.inbox.messages) == 1

    untrusted = bot_mailer(port, starttls=True)  # the system's authorities do not know it
    with pytest.raises(NotifyError, match="CERTIFICATE_VERIFY_FAILED") as caught:
        notify(untrusted)
    assert "hunter2" not in str(caught.value)
    assert len(tls_smtp.logins) == 1, "no password went to a server we could not verify"


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_a_login_goes_over_implicit_tls() -> None:
    server = TlsSmtp(implicit=True)
    server.controller.start()
    try:
        notifier = bot_mailer(server.controller.port, tls=True, context=server.trusting)
        assert notify(notifier) == ["email"]
    finally:
        server.controller.stop()
    assert server.logins == [(b"bot", b"hunter2", True)]
    assert len(server.inbox.messages) == 1


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://[64:ff9b::a00:7]:8080/hook?token=s3cret", "http://[64:ff9b::a00:7]:8080"),
        ("https://user:pw@hooks.example/x", "https://hooks.example"),
    ],
)
def test_a_url_in_a_message_shows_its_host_as_the_url_wrote_it(url: str, shown: str) -> None:
    from twelvefold.runtime.notify import where

    assert where(url) == shown
