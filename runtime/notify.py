"""Telling people that a thread waits for them: log, webhook, Slack, email.

A `Notifier` sends one `Notice` and returns the names of the channels that took it. A
channel that fails raises `NotifyError`; `MultiNotifier` tries every channel and, when any
of them failed, raises a `NotifyError` that names the channels that took the notice anyway
(`delivered`) and those that did not (`failed`, each `"name: reason"`). The loop records both
in a `Notified` event, so a restarted process does not tell people twice and `expire` knows
whom to try again (runtime/timeouts.py).

No reason ever carries a secret: a channel is named by its kind and host (never a URL's
path, where Slack and many webhooks keep their token), and `MultiNotifier` scrubs every
channel's secrets from what it reports, whatever a library put in its error text.

Configuration from the environment (`notifier_from_env`; secrets come from there only):

    TWELVEFOLD_NOTIFY_LOG=0          turn the stderr log channel off (on by default)
    TWELVEFOLD_NOTIFY_WEBHOOK=URL    POST the notice as JSON to URL (Standard Webhooks) ...
    TWELVEFOLD_WEBHOOK_SECRET=whsec_BASE64   ... signed with this secret
    TWELVEFOLD_NOTIFY_SLACK=URL      POST a Slack incoming-webhook payload to URL
    TWELVEFOLD_SMTP_HOST=HOST        send email through this SMTP server ...
    TWELVEFOLD_SMTP_PORT=25          ... on this port
    TWELVEFOLD_SMTP_FROM=ADDRESS     ... from this address
    TWELVEFOLD_SMTP_TO=A,B           ... to these addresses
    TWELVEFOLD_SMTP_USER / TWELVEFOLD_SMTP_PASSWORD   login, when the server wants one
    TWELVEFOLD_SMTP_STARTTLS=1       upgrade the connection with STARTTLS first, or
    TWELVEFOLD_SMTP_TLS=1            connect with TLS from the start (port 465)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import http.client
import json
import os
import re
import smtplib
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from typing import Any, Literal, Protocol, TextIO
from urllib.parse import urlsplit

from .redact import shown_value
from .terminal import for_terminal, visible
from .types import LOG_CHANNEL

NoticeKind = Literal["approval", "human"]

TIMEOUT_SECONDS = 10.0


BY_NAME = " --by NAME"
"""What a printed command to decide an approval carries when its step names `approvers`:
only a member of them decides it, so the command needs the decider's name (NAME, for
the person running it to fill in); without it the copied command is refused."""


def by_option(approvers: Sequence[str]) -> str:
    """`BY_NAME` for an approval whose step names approvers, else "" (anyone decides)."""
    return BY_NAME if approvers else ""


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
    request: str | None = None
    """The pending request's id: the decision must name it (`--request`)."""
    link: str | None = None
    """Where a person decides it in a browser (the server's inbox), when known."""

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["value"] = _plain(self.value)
        data["approvers"] = list(self.approvers)
        if self.link is None:
            del data["link"]
        return data

    @property
    def title(self) -> str:
        waits_for = "approval" if self.kind == "approval" else "an answer"
        return f"{self.agent} waits for {waits_for} at `{self.step}` (thread {self.thread_id})"

    @property
    def how_to_resume(self) -> str:
        named = f" --request {self.request}" if self.request else ""
        if self.kind == "approval":
            by = by_option(self.approvers)
            return (
                f"twelvefold resume {self.thread_id}{named}{by} --approve  |  "
                "--reject --comment TEXT"
            )
        return f"twelvefold resume {self.thread_id}{named} --answer TEXT"

    @property
    def id(self) -> str:
        """One id per notice, the same on every retry of it (Standard Webhooks'
        `webhook-id`, which receivers use to drop duplicates): a digest of the thread and
        the request, `msg_` and 32 hex digits."""
        pending = self.request or self.step
        digest = hashlib.sha256(f"{self.thread_id}\n{pending}".encode()).hexdigest()
        return f"msg_{digest[:32]}"


class NotifyError(Exception):
    """A channel could not deliver a notice. From `MultiNotifier`: at least one channel
    failed; `delivered` names those that took the notice, `failed` the others, each as
    `"name: reason"` (no secrets)."""

    def __init__(
        self, message: str, *, delivered: Sequence[str] = (), failed: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.delivered = tuple(delivered)
        self.failed = tuple(failed) or (message,)


class Notifier(Protocol):
    async def notify(self, notice: Notice) -> list[str]: ...


def _plain(value: Any) -> Any:
    """The value a notice shows: secret fields redacted (runtime/redact.py)."""
    return shown_value(value)


def where(url: str) -> str:
    """A URL as a message may show it: scheme, host and port, never its user, password,
    path or query (where Slack and many webhook URLs carry their token)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        host = f"[{host}]" if ":" in host else host  # an IPv6 literal, as in the URL
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "an unreadable URL"
    return f"{parts.scheme or '?'}://{host}{port}"


def scrub(text: str, secrets: Sequence[str]) -> str:
    """`text` with every secret (and any URL's path, query and credentials) taken out."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "[secret]")
    return re.sub(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+", lambda m: where(m.group(0)), text)


# ---- channels ----------------------------------------------------------------------------


class LogNotifier:
    """Writes the notice to stderr (or any text stream)."""

    name = LOG_CHANNEL
    secrets: tuple[str, ...] = ()

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    async def notify(self, notice: Notice) -> list[str]:
        stream = self.stream or sys.stderr
        request = f" [request {notice.request}]" if notice.request else ""
        # The value as JSON, whatever the `ask` shows of it: the person decides on it.
        value = _plain(notice.value)
        shown = "" if value is None else f"  value: {json.dumps(value, ensure_ascii=False)}\n"
        line = (
            f"[twelvefold] {notice.title}{request}: {notice.text}\n{shown}"
            f"  {notice.how_to_resume}\n" + (f"  {notice.link}\n" if notice.link else "")
        )
        try:
            stream.write(for_terminal(line))
            stream.flush()
        except (OSError, ValueError) as exc:  # a closed or broken stream
            raise NotifyError(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        return [self.name]


class WebhookNotifier:
    """POSTs the notice as a JSON object (thread_id, agent, step, kind, text, value,
    approvers, request), as Standard Webhooks (https://www.standardwebhooks.com) says:
    headers `webhook-id` (`Notice.id`, the same on every retry), `webhook-timestamp` (unix
    seconds) and, with a secret, `webhook-signature: v1,<base64 HMAC-SHA256 of
    "{id}.{timestamp}.{body}">`. The secret is `whsec_` and the padded base64 of 24 to 64
    bytes (or that base64 alone): `signing_key`.

    Raises `ValueError` at construction for a secret that is not base64."""

    name = "webhook"

    def __init__(
        self, url: str, headers: Mapping[str, str] | None = None, *, secret: str | None = None
    ) -> None:
        self.url = url
        self.headers = dict(headers or {})
        self.key = signing_key(secret) if secret else None
        self.secrets = tuple(s for s in (url, secret) if s)

    def payload(self, notice: Notice) -> dict[str, Any]:
        return notice.as_json()

    def signed_headers(self, notice: Notice, body: bytes, now: float) -> dict[str, str]:
        """The Standard Webhooks headers for `body` sent at `now` (unix seconds)."""
        return standard_webhook_headers(notice.id, body, now, self.key)

    async def notify(self, notice: Notice) -> list[str]:
        body = json.dumps(self.payload(notice), ensure_ascii=False).encode("utf-8")
        headers = {**self.headers, **self.signed_headers(notice, body, time.time())}
        await asyncio.to_thread(_post_json, self.name, self.url, body, headers)
        return [self.name]


def standard_webhook_headers(
    message_id: str, body: bytes, now: float, key: bytes | None
) -> dict[str, str]:
    """Standard Webhooks' headers for `body` sent at `now` (unix seconds): `webhook-id`,
    `webhook-timestamp` and, with a `key` (`signing_key`), `webhook-signature:
    v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`."""
    timestamp = str(int(now))
    headers = {"webhook-id": message_id, "webhook-timestamp": timestamp}
    if key is not None:
        signed = f"{message_id}.{timestamp}.".encode() + body
        digest = hmac.new(key, signed, hashlib.sha256).digest()
        headers["webhook-signature"] = "v1," + base64.b64encode(digest).decode("ascii")
    return headers


SECRET_FORM = (
    "whsec_ followed by the standard base64, = padding included, of 24 to 64 random bytes, "
    "as Standard Webhooks writes a secret: e.g. whsec_$(openssl rand -base64 32)"
)


def signing_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: `whsec_` (or nothing) and the padded
    standard base64 of 24 to 64 bytes (the spec's "Signing secret" and "Secret
    serialization"). Anything else is a `ValueError` (one line, without the secret): a
    secret the runtime would read by being lenient (unpadded, base64url, too short) is
    one a receiver's library may not read, and every notice would then fail to verify."""
    encoded = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded, validate=True) if len(encoded) % 4 == 0 else None
    except (binascii.Error, ValueError):
        key = None
    if key is None:
        raise ValueError(f"the webhook secret is not padded base64: it must be {SECRET_FORM}")
    if not 24 <= len(key) <= 64:
        raise ValueError(f"the webhook secret is {len(key)} bytes: it must be {SECRET_FORM}")
    return key


class SlackNotifier(WebhookNotifier):
    """POSTs a Slack incoming-webhook payload (`text` plus `blocks`). Everything that came
    from a model, a tool or a person is escaped for mrkdwn (`slack_text`), so
    no value can mention `@channel`, show a link that reads as something else, or close the
    code block it is shown in. Not signed: Slack checks nothing; the URL is the secret."""

    name = "slack"

    def __init__(self, url: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(url, headers)

    def signed_headers(self, notice: Notice, body: bytes, now: float) -> dict[str, str]:
        return {}

    def payload(self, notice: Notice) -> dict[str, Any]:
        return slack_payload(notice)


def slack_payload(notice: Notice) -> dict[str, Any]:
    """The notice as a Slack message (`text` and `blocks`), every outside value escaped
    for mrkdwn and cut to Block Kit's limits; with a `link`, a context line points to it."""
    value = slack_text(json.dumps(_plain(notice.value), indent=2, ensure_ascii=False))
    approvers = slack_text(", ".join(notice.approvers) or "anyone allowed")
    title, text = slack_text(notice.title), slack_text(notice.text)
    request = f"\nrequest `{slack_text(notice.request)}`" if notice.request else ""
    # Slack refuses (400) a whole message whose section or context text is longer than
    # SLACK_TEXT_LIMIT, so a long value from a model would keep every notice from being
    # delivered: what does not fit is cut, saying where the whole of it is shown.
    cut = f"… (cut: `twelvefold show {slack_text(notice.thread_id)}` shows all)"
    head = f"*{title}*{request}\n"
    text = _fit(text, SLACK_TEXT_LIMIT // 3, cut)
    room = SLACK_TEXT_LIMIT - len(head) - len(text) - len("\n``````")
    section = f"{head}{text}\n```{_fit(value, room, cut)}```"
    return {
        "text": f"{title}: {text}",
        "unfurl_links": False,
        "unfurl_media": False,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": _header(notice)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": section}},
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": _fit(f"approvers: {approvers}", 1000, "…")},
                    {"type": "mrkdwn", "text": f"`{slack_text(notice.how_to_resume)}`"},
                    *_link_element(notice.link),
                ],
            },
        ],
    }


def _header(notice: Notice) -> str:
    """A header's text (plain_text, so no mrkdwn escaping; hidden characters shown as
    `visible` writes them): Slack refuses an empty one, or one past 150 characters."""
    shown = visible(notice.text.strip() or notice.title)
    return shown if len(shown) <= 150 else _cut_escape(shown[:150])


def _link_element(link: str | None) -> list[dict[str, str]]:
    """A context element linking to `link`; none when there is no link or it could break
    out of Slack's `<url|label>` markup (a server's own URL never holds `<`, `>` or `|`)."""
    if link is None or any(c in link for c in "<>| \n") or len(link) > 2000:
        return []
    return [{"type": "mrkdwn", "text": f"<{link.replace('&', '&amp;')}|open in the inbox>"}]


SLACK_TEXT_LIMIT = 3000
"""The most characters Slack takes in one text object of a section or context block
(https://api.slack.com/reference/block-kit/blocks#section)."""


def _fit(escaped: str, limit: int, cut: str) -> str:
    """`escaped` (mrkdwn from `slack_text`) in at most `limit` characters: cut, ending
    with `cut`, when longer, never inside an `&amp;`-style entity or a `\\uXXXX` escape."""
    if len(escaped) <= limit:
        return escaped
    kept = escaped[: max(0, limit - len(cut))]
    entity = kept.rfind("&")
    if entity != -1 and ";" not in kept[entity:]:
        kept = kept[:entity]
    return _cut_escape(kept) + cut


_PART_OF_ESCAPE = re.compile(r"\\(u[0-9a-f]{0,3})?$")


def _cut_escape(text: str) -> str:
    """`text`, cut short, without the start of a `\\uXXXX` escape it may end with."""
    return _PART_OF_ESCAPE.sub("", text)


_MENTION = re.compile(r"@(?=\w)")
_GRAVE = "\u02cb"  # MODIFIER LETTER GRAVE ACCENT: looks like a backtick, is not markup
_WORD_JOINER = "\u2060"


def slack_text(text: str) -> str:
    """`text` as Slack mrkdwn shows it literally (https://api.slack.com/reference/surfaces/
    formatting#escaping): hidden and direction-changing characters written as `\\uXXXX`,
    as the inbox shows them (`visible`), so `"\\u202e3.2.1v"` cannot read "v1.2.3"; `&`,
    `<`, `>` as entities, so `<!channel>` and `<url|label>` links are plain text; `@name`
    broken with a word joiner (ours, added after), so `@channel` mentions nobody; and
    backticks replaced, so no value opens or closes code."""
    escaped = visible(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MENTION.sub("@" + _WORD_JOINER, escaped).replace("`", _GRAVE)


class EmailNotifier:
    """Sends the notice as a plain-text email over SMTP (the stdlib client, in a thread).

    A login goes only over TLS: STARTTLS (`starttls=True`) or TLS from the first byte
    (`tls=True`), with the server's certificate checked against the system's authorities
    (`context` to trust others). Without either, a notifier with a username refuses to
    send (`NotifyError`) rather than send the password in clear text."""

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
        tls: bool = False,
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.sender, self.to = host, port, sender, list(to)
        self.username, self.password = username, password
        self.starttls, self.tls, self.context = starttls, tls, context
        self.secrets = tuple(s for s in (password,) if s)

    def message(self, notice: Notice) -> EmailMessage:
        """The notice as a plain-text email, every character a person cannot see written
        out as the inbox and Slack show it (`visible`), so a value cannot read in a mail
        reader differently from what it is (`"\\u202e3.2.1v"` as "v1.2.3")."""
        message = EmailMessage()
        message["Subject"] = visible(f"[twelvefold] {notice.title}")
        message["From"] = self.sender
        message["To"] = ", ".join(self.to)
        value = json.dumps(_plain(notice.value), indent=2, ensure_ascii=False)
        approvers = ", ".join(notice.approvers) or "anyone allowed"
        request = f"request: {notice.request}\n" if notice.request else ""
        message.set_content(
            visible(
                f"{notice.text}\n\n{value}\n\napprovers: {approvers}\n{request}\n"
                f"{notice.how_to_resume}\n" + (f"{notice.link}\n" if notice.link else "")
            )
        )
        return message

    async def notify(self, notice: Notice) -> list[str]:
        if self.username and not (self.starttls or self.tls):
            raise NotifyError(
                f"{self.name}: refusing to send the SMTP password to {self.host}:{self.port} "
                "in clear text; set TWELVEFOLD_SMTP_STARTTLS=1 or TWELVEFOLD_SMTP_TLS=1"
            )
        await asyncio.to_thread(self._send, self.message(notice))
        return [self.name]

    def _send(self, message: EmailMessage) -> None:
        context = self.context or ssl.create_default_context()
        try:
            smtp = (
                smtplib.SMTP_SSL(self.host, self.port, timeout=TIMEOUT_SECONDS, context=context)
                if self.tls
                else smtplib.SMTP(self.host, self.port, timeout=TIMEOUT_SECONDS)
            )
            with smtp:
                if self.starttls and not self.tls:
                    # Raises when the server offers no STARTTLS: never go on in clear text.
                    smtp.starttls(context=context)
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            raise NotifyError(
                f"{self.name}: SMTP via {self.host}:{self.port} failed: {reason}"
            ) from exc


class MultiNotifier:
    """Every channel in turn. Returns the channels that took the notice when none failed;
    when any failed, raises `NotifyError` with `delivered` and `failed` (see there)."""

    def __init__(self, channels: Sequence[Notifier]) -> None:
        self.channels = list(channels)

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for c in self.channels for s in getattr(c, "secrets", ()))

    async def notify(self, notice: Notice) -> list[str]:
        delivered: list[str] = []
        failures: list[str] = []
        for channel in self.channels:
            try:
                delivered += await channel.notify(notice)
            except Exception as exc:  # one broken channel must not keep the others quiet
                failures.append(failure(channel, exc))
        if failures:
            failures = [scrub(reason, self.secrets) for reason in failures]
            raise NotifyError("; ".join(failures), delivered=delivered, failed=failures)
        return delivered


def failure(channel: object, exc: BaseException) -> str:
    """`"name: reason"` for a channel that raised: our own `NotifyError`s already read so;
    anything else is named by the channel (`configuration` when there was none: the
    notifier could not be built) and the error's type."""
    if isinstance(exc, NotifyError):
        return str(exc)
    default = "configuration" if channel is None else type(channel).__name__
    name = getattr(channel, "name", None) or default
    return f"{name}: {type(exc).__name__}: {exc}"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A webhook that answers with a redirect has failed: following it would send the
    request (as a GET) to a host nobody checked (a way around the server's webhook host
    rule, server/replies.py)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _pinned_opener(address: str) -> urllib.request.OpenerDirector:
    """An opener whose connections go to `address` (an IP literal), whatever the URL's
    host resolves to now; the URL's host is still the request's `Host` and, over HTTPS,
    the name its certificate is checked against (SNI). The server's webhook rule
    checks the addresses a name resolves to and then sends to the one it checked: a name
    that resolves elsewhere a moment later (DNS rebinding) cannot lead the send there."""

    def pin(connection: http.client.HTTPConnection) -> http.client.HTTPConnection:
        def connect(
            to: tuple[str, int], timeout: float | None = None, source: Any = None
        ) -> socket.socket:
            return socket.create_connection((address, to[1]), timeout, source)

        connection._create_connection = connect  # type: ignore[attr-defined]
        return connection

    class Http(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> Any:
            return self.do_open(lambda *a, **k: pin(http.client.HTTPConnection(*a, **k)), req)

    class Https(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> Any:
            context = ssl.create_default_context()
            return self.do_open(
                lambda *a, **k: pin(http.client.HTTPSConnection(*a, **k)), req, context=context
            )

    return urllib.request.build_opener(_NoRedirects, Http, Https)


def _proxied(url: str) -> bool:
    """Whether urllib sends a request for `url` through a proxy (`http_proxy`,
    `https_proxy`, `no_proxy` in the environment): the proxy then resolves the name."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    return parts.scheme in proxies and not urllib.request.proxy_bypass(parts.hostname or "")


def _post_json(
    name: str,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    connect_to: str | None = None,
) -> None:
    """POST `body` (JSON) to `url`; `NotifyError` naming `name` and the URL's host when it
    fails or answers anything but 2xx. `connect_to` (an IP literal): the address to
    connect to instead of resolving the URL's host again (`_pinned_opener`), unless the
    request goes through a proxy."""
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **headers},
    )
    # Built for each request: the proxy settings are read from the environment now.
    if connect_to is None or _proxied(url):
        opener = urllib.request.build_opener(_NoRedirects)
    else:
        opener = _pinned_opener(connect_to)
    try:
        # Judged by its status alone: the body is not read (a receiver streaming one
        # without end held the sender reading it into memory), and closing hangs up.
        opener.open(request, timeout=TIMEOUT_SECONDS).close()
    except urllib.error.HTTPError as exc:
        exc.close()  # its body unread as well
        raise NotifyError(f"{name}: POST to {where(url)} answered {exc.code}") from exc
    except (OSError, ValueError) as exc:  # URLError is an OSError; a bad URL a ValueError
        reason = scrub(str(getattr(exc, "reason", exc)), (url,))
        raise NotifyError(f"{name}: POST to {where(url)} failed: {reason}") from exc


# ---- configuration -----------------------------------------------------------------------


def notifier_from_env(environ: Mapping[str, str] | None = None) -> MultiNotifier:
    """The channels the environment configures (see the module docstring). Raises
    `ValueError` for a configuration that cannot work (email without recipients, a webhook
    secret that is not base64); the message never shows a secret."""
    env = os.environ if environ is None else environ
    channels: list[Notifier] = []
    if not _off(env.get("TWELVEFOLD_NOTIFY_LOG", "1")):
        channels.append(LogNotifier())
    if url := env.get("TWELVEFOLD_NOTIFY_WEBHOOK"):
        secret = env.get("TWELVEFOLD_WEBHOOK_SECRET") or None
        try:
            channels.append(WebhookNotifier(url, secret=secret))
        except ValueError as exc:
            raise ValueError(f"TWELVEFOLD_WEBHOOK_SECRET: {exc}") from None
    if url := env.get("TWELVEFOLD_NOTIFY_SLACK"):
        channels.append(SlackNotifier(url))
    if host := env.get("TWELVEFOLD_SMTP_HOST"):
        recipients = [a.strip() for a in env.get("TWELVEFOLD_SMTP_TO", "").split(",")]
        if not any(recipients):
            raise ValueError("TWELVEFOLD_SMTP_HOST is set but TWELVEFOLD_SMTP_TO names nobody")
        tls = _on(env.get("TWELVEFOLD_SMTP_TLS", "0"))
        channels.append(
            EmailNotifier(
                host,
                int(env.get("TWELVEFOLD_SMTP_PORT", "465" if tls else "25")),
                env.get("TWELVEFOLD_SMTP_FROM", "twelvefold@localhost"),
                [a for a in recipients if a],
                username=env.get("TWELVEFOLD_SMTP_USER"),
                password=env.get("TWELVEFOLD_SMTP_PASSWORD"),
                starttls=_on(env.get("TWELVEFOLD_SMTP_STARTTLS", "0")),
                tls=tls,
            )
        )
    return MultiNotifier(channels)


def _on(flag: str) -> bool:
    return flag.strip().lower() in ("1", "true", "yes", "on")


def _off(flag: str) -> bool:
    return flag.strip().lower() in ("0", "false", "no", "off")
