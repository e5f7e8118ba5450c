"""Telling people that a thread waits for them: log, webhook, Slack, email.

A `Notifier` sends one `Notice` and returns the names of the channels that took it; the loop
records them in a `Notified` event, so a restarted process does not tell people twice. A
channel that fails raises `NotifyError`; `MultiNotifier` tries every channel and fails only
when none took the notice.

Configuration from the environment (`notifier_from_env`):

    TWELVEFOLD_NOTIFY_LOG=0          turn the stderr log channel off (on by default)
    TWELVEFOLD_NOTIFY_WEBHOOK=URL    POST the notice as JSON to URL
    TWELVEFOLD_NOTIFY_SLACK=URL      POST a Slack incoming-webhook payload to URL
    TWELVEFOLD_SMTP_HOST=HOST        send email through this SMTP server ...
    TWELVEFOLD_SMTP_PORT=25          ... on this port
    TWELVEFOLD_SMTP_FROM=ADDRESS     ... from this address
    TWELVEFOLD_SMTP_TO=A,B           ... to these addresses
    TWELVEFOLD_SMTP_USER / TWELVEFOLD_SMTP_PASSWORD   login, when the server wants one
    TWELVEFOLD_SMTP_STARTTLS=1       upgrade the connection with STARTTLS first
"""

from __future__ import annotations

import asyncio
import json
import os
import smtplib
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from typing import Any, Literal, Protocol, TextIO

from pydantic import BaseModel

from .terminal import for_terminal

NoticeKind = Literal["approval", "human"]

TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Notice:
    thread_id: str
    agent: str
    step: str
    kind: NoticeKind
    text: str
    """The step's rendered `ask`."""
    value: Any
    """What waits for a decision (the value that arrived at the step)."""
    approvers: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["value"] = _plain(self.value)
        data["approvers"] = list(self.approvers)
        return data

    @property
    def title(self) -> str:
        waits_for = "approval" if self.kind == "approval" else "an answer"
        return f"{self.agent} waits for {waits_for} at `{self.step}` (thread {self.thread_id})"

    @property
    def how_to_resume(self) -> str:
        if self.kind == "approval":
            return f"twelvefold resume {self.thread_id} --approve  |  --reject --comment TEXT"
        return f"twelvefold resume {self.thread_id} --answer TEXT"


class NotifyError(Exception):
    """A channel could not deliver a notice."""


class Notifier(Protocol):
    async def notify(self, notice: Notice) -> list[str]: ...


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    return value


# ---- channels ----------------------------------------------------------------------------


class LogNotifier:
    """Writes the notice to stderr (or any text stream)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    async def notify(self, notice: Notice) -> list[str]:
        stream = self.stream or sys.stderr
        line = f"[twelvefold] {notice.title}: {notice.text}\n  {notice.how_to_resume}\n"
        stream.write(for_terminal(line))
        stream.flush()
        return ["log"]


class WebhookNotifier:
    """POSTs the notice as a JSON object: thread_id, agent, step, kind, text, value, approvers."""

    name = "webhook"

    def __init__(self, url: str, headers: Mapping[str, str] | None = None) -> None:
        self.url = url
        self.headers = dict(headers or {})

    def payload(self, notice: Notice) -> dict[str, Any]:
        return notice.as_json()

    async def notify(self, notice: Notice) -> list[str]:
        body = json.dumps(self.payload(notice)).encode("utf-8")
        await asyncio.to_thread(_post_json, self.url, body, self.headers)
        return [self.name]


class SlackNotifier(WebhookNotifier):
    """POSTs a Slack incoming-webhook payload (`text` plus `blocks`)."""

    name = "slack"

    def payload(self, notice: Notice) -> dict[str, Any]:
        value = json.dumps(_plain(notice.value), indent=2, ensure_ascii=False)
        approvers = ", ".join(notice.approvers) or "anyone allowed"
        return {
            "text": f"{notice.title}: {notice.text}",
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": notice.text[:150]}},
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": f"*{notice.title}*\n```{value}```"},
                },
                {
                    "type": "context",
                    "elements": [
                        {"type": "mrkdwn", "text": f"approvers: {approvers}"},
                        {"type": "mrkdwn", "text": f"`{notice.how_to_resume}`"},
                    ],
                },
            ],
        }


class EmailNotifier:
    """Sends the notice as a plain-text email over SMTP (the stdlib client, in a thread)."""

    name = "email"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        to: Sequence[str],
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
    ) -> None:
        self.host, self.port, self.sender, self.to = host, port, sender, list(to)
        self.username, self.password, self.starttls = username, password, starttls

    def message(self, notice: Notice) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = f"[twelvefold] {notice.title}"
        message["From"] = self.sender
        message["To"] = ", ".join(self.to)
        value = json.dumps(_plain(notice.value), indent=2, ensure_ascii=False)
        approvers = ", ".join(notice.approvers) or "anyone allowed"
        message.set_content(
            f"{notice.text}\n\n{value}\n\napprovers: {approvers}\n\n{notice.how_to_resume}\n"
        )
        return message

    async def notify(self, notice: Notice) -> list[str]:
        await asyncio.to_thread(self._send, self.message(notice))
        return [self.name]

    def _send(self, message: EmailMessage) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=TIMEOUT_SECONDS) as smtp:
                if self.starttls:
                    smtp.starttls()
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise NotifyError(f"email via {self.host}:{self.port}: {exc}") from exc


class MultiNotifier:
    """Every channel in turn; fails only when none of them took the notice."""

    def __init__(self, channels: Sequence[Notifier]) -> None:
        self.channels = list(channels)

    async def notify(self, notice: Notice) -> list[str]:
        delivered: list[str] = []
        failures: list[str] = []
        for channel in self.channels:
            try:
                delivered += await channel.notify(notice)
            except NotifyError as exc:
                failures.append(str(exc))
        if failures and not delivered:
            raise NotifyError("; ".join(failures))
        return delivered


def _post_json(url: str, body: bytes, headers: Mapping[str, str]) -> None:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            response.read()
    except (OSError, urllib.error.URLError) as exc:  # HTTPError is a URLError
        raise NotifyError(f"POST {url}: {exc}") from exc


# ---- configuration -----------------------------------------------------------------------


def notifier_from_env(environ: Mapping[str, str] | None = None) -> MultiNotifier:
    """The channels the environment configures (see the module docstring)."""
    env = os.environ if environ is None else environ
    channels: list[Notifier] = []
    if env.get("TWELVEFOLD_NOTIFY_LOG", "1") not in ("0", "false", "no", "off"):
        channels.append(LogNotifier())
    if url := env.get("TWELVEFOLD_NOTIFY_WEBHOOK"):
        channels.append(WebhookNotifier(url))
    if url := env.get("TWELVEFOLD_NOTIFY_SLACK"):
        channels.append(SlackNotifier(url))
    if host := env.get("TWELVEFOLD_SMTP_HOST"):
        recipients = [a.strip() for a in env.get("TWELVEFOLD_SMTP_TO", "").split(",")]
        if not any(recipients):
            raise ValueError("TWELVEFOLD_SMTP_HOST is set but TWELVEFOLD_SMTP_TO names nobody")
        channels.append(
            EmailNotifier(
                host,
                int(env.get("TWELVEFOLD_SMTP_PORT", "25")),
                env.get("TWELVEFOLD_SMTP_FROM", "twelvefold@localhost"),
                [a for a in recipients if a],
                username=env.get("TWELVEFOLD_SMTP_USER"),
                password=env.get("TWELVEFOLD_SMTP_PASSWORD"),
                starttls=env.get("TWELVEFOLD_SMTP_STARTTLS", "0") in ("1", "true", "yes"),
            )
        )
    return MultiNotifier(channels)
