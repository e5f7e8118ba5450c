"""The server's Slack app: approve, reject and answer from Slack, launch from Slack
(docs/server.md, "Slack").

    POST /v1/hooks/slack   Slack's requests: button presses and modal submissions
                           (interactivity), the `/twelvefold` slash command, and the
                           Events API (`app_mention`)

Every request is checked against Slack's signing secret before anything else
(https://api.slack.com/authentication/verifying-requests-from-slack: `X-Slack-Signature`
is `v0=` and the hex HMAC-SHA256 of `v0:{X-Slack-Request-Timestamp}:{raw body}`, and a
timestamp more than five minutes off is refused, so a recorded request cannot be played
again later); a request that fails is a 401 problem. Slack users are people through
`[tool.twelvefold.slack] users = { U0123ABCD = "carol" }` in the agent's configuration;
an unmapped user is refused. Decisions go through `Service.decide`, so the same people
may decide the same requests as over the API; a refusal is shown to the Slack user
(an ephemeral message, or the modal's error), never raised.

With a bot token (TWELVEFOLD_SLACK_BOT_TOKEN) and a channel (TWELVEFOLD_SLACK_CHANNEL),
each notice is posted there with Approve / Reject buttons (Answer for a question); a
thread launched from Slack is answered in the Slack thread it came from when it pauses
(with the buttons) or ends. After a decision, from Slack or anywhere else, the messages
that carried the request's buttons are updated to say who decided. Slack wants an answer
within three seconds, so everything slower runs in the background.

The Web API is called with slack_sdk's `WebClient` in a worker thread (its asyncio
client needs aiohttp); TWELVEFOLD_SLACK_API_URL points it elsewhere (the tests' scripted
Slack on loopback).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from twelvefold.runtime.api import ThreadView
from twelvefold.runtime.config import ConfigError, find_config
from twelvefold.runtime.loop import Agent, question
from twelvefold.runtime.notify import (
    SLACK_TEXT_LIMIT,
    MultiNotifier,
    Notice,
    Notifier,
    _fit,
    slack_payload,
    slack_text,
)
from twelvefold.runtime.redact import shown_value
from twelvefold.runtime.types import (
    Answered,
    Approved,
    AwaitAnswer,
    AwaitApproval,
    Cancelled,
    Event,
    Rejected,
)
from twelvefold.server.bodies import RefusedKey, loads
from twelvefold.server.problems import problem
from twelvefold.server.replies import Replies, replies
from twelvefold.server.service import Caller, ServeError, Service, ServiceError
from twelvefold.server.tables import Table
from twelvefold.server.tokens import check_person

log = logging.getLogger("twelvefold.server")

SIGNATURE_VERSION = "v0"
MAX_SKEW_SECONDS = 5 * 60
"""How far Slack's request timestamp may be from our clock (Slack's own advice)."""
MAX_BODY_BYTES = 256 * 1024
"""The largest Slack request read (a modal submission with a long comment fits)."""
SLACK_API_URL = "https://slack.com/api/"
COMMAND_WORDS = 2  # `AGENT` and the rest
APPROVE, REJECT, ANSWER = "twelvefold.approve", "twelvefold.reject", "twelvefold.answer"
INPUT_BLOCK, INPUT_ACTION = "twelvefold.text", "twelvefold.text.input"
COMMENT_LIMIT = 3000
"""The longest comment or answer the modal takes (Block Kit's plain_text_input limit)."""
TITLE_LIMIT = 24
"""Block Kit's limit on a modal's title."""


class BadSignature(Exception):
    """A request that does not prove it came from Slack (one line, for the 401)."""


class SeenSignatures:
    """The signatures of the requests taken in the last MAX_SKEW_SECONDS: a signed request
    sent again (a replay, by anyone who saw it) within the window the timestamp check
    lets through is refused, so a slash command or a mention launches once. Only
    requests whose signature verified get here, so only Slack can fill it; it holds at
    most `limit` (the oldest are let go first)."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._seen: dict[str, float] = {}
        """signature -> its request's timestamp, in the order they arrived."""

    def first_time(self, signed: str, timestamp: float, now: float) -> bool:
        """Record `signed`; False when it was seen already."""
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if now - at <= 2 * MAX_SKEW_SECONDS and len(self._seen) < self.limit:
                break
            del self._seen[oldest]
        if signed in self._seen:
            return False
        self._seen[signed] = timestamp
        return True


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's `X-Slack-Signature` for `body` sent at `timestamp`: `v0=` and the hex
    HMAC-SHA256, keyed with the signing secret, of `v0:{timestamp}:{body}`."""
    base = f"{SIGNATURE_VERSION}:{timestamp}:".encode() + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def verify(secret: str, timestamp: str | None, signed: str | None, body: bytes, now: float) -> None:
    """Raise `BadSignature` unless `signed` is Slack's signature of `body` at
    `timestamp` (seconds since the epoch, within MAX_SKEW_SECONDS of `now`). The
    signatures are compared in constant time."""
    if not timestamp or not signed:
        raise BadSignature("missing X-Slack-Request-Timestamp or X-Slack-Signature")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise BadSignature("X-Slack-Request-Timestamp is not a number of seconds")
    if abs(now - int(timestamp)) > MAX_SKEW_SECONDS:
        raise BadSignature("the request's timestamp is more than five minutes off (a replay?)")
    expected = signature(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signed.encode("utf-8", "replace")):
        raise BadSignature("the request's signature does not match the signing secret")


# ---- settings ------------------------------------------------------------------------


@dataclass(frozen=True)
class SlackSettings:
    """From the environment (secrets come from there only)."""

    signing_secret: str | None = None
    """TWELVEFOLD_SLACK_SIGNING_SECRET: without it, /v1/hooks/slack refuses everything."""
    bot_token: str | None = None
    """TWELVEFOLD_SLACK_BOT_TOKEN (`xoxb-…`): posting, updating, opening modals."""
    channel: str | None = None
    """TWELVEFOLD_SLACK_CHANNEL: where notices with buttons are posted."""
    api_url: str = SLACK_API_URL
    """TWELVEFOLD_SLACK_API_URL: the Web API's base URL (ends with `/`)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SlackSettings:
        env = os.environ if environ is None else environ
        api_url = env.get("TWELVEFOLD_SLACK_API_URL") or SLACK_API_URL
        return cls(
            signing_secret=env.get("TWELVEFOLD_SLACK_SIGNING_SECRET") or None,
            bot_token=env.get("TWELVEFOLD_SLACK_BOT_TOKEN") or None,
            channel=env.get("TWELVEFOLD_SLACK_CHANNEL") or None,
            api_url=api_url if api_url.endswith("/") else api_url + "/",
        )


def slack_users(agent: Agent) -> Mapping[str, str]:
    """`[tool.twelvefold.slack] users` of the agent's configuration, read now (so an
    edit applies at once): Slack user id -> person. A table of the wrong shape maps
    nobody (and is logged), and so does an entry whose person could have no token
    (`tokens.check_person`: a reserved name such as `schedule:NAME`, which would act as
    the server itself, or a malformed one)."""
    try:
        config = find_config(agent.directory or Path.cwd())
    except ConfigError as exc:
        log.warning("the Slack users cannot be read: %s", exc)
        return {}
    table = config.settings.get("slack", {})
    users = table.get("users", {}) if isinstance(table, Mapping) else None
    if not isinstance(users, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in users.items()
    ):
        log.warning("%s: [tool.twelvefold.slack] users must map Slack ids to names", config.path)
        return {}
    mapped: dict[str, str] = {}
    for user, person in users.items():
        try:
            check_person(person)
        except ValueError as exc:
            log.warning(
                "%s: [tool.twelvefold.slack] users: %s maps nobody: %s",
                config.path, shown_value(user), exc,
            )  # fmt: skip
            continue
        mapped[user] = person
    return mapped


# ---- messages ------------------------------------------------------------------------


def button_value(thread_id: str, request: str) -> str:
    """What a button carries: the thread and the request it decides (JSON, well within
    Block Kit's 2,000 characters: both are ids the runtime made)."""
    return json.dumps({"thread": thread_id, "request": request}, separators=(",", ":"))


def request_message(notice: Notice) -> dict[str, Any]:
    """A notice as a message with buttons: Approve / Reject for an approval, Answer
    for a question (every outside value escaped by `slack_payload`)."""
    message = slack_payload(notice)
    if notice.request is None:
        return message
    value = button_value(notice.thread_id, notice.request)
    if notice.kind == "approval":
        buttons = [
            _button("Approve", APPROVE, value, style="primary"),
            _button("Reject…", REJECT, value, style="danger"),
        ]
    else:
        buttons = [_button("Answer…", ANSWER, value, style="primary")]
    message["blocks"].append({"type": "actions", "elements": buttons})
    return message


def _button(label: str, action: str, value: str, *, style: str) -> dict[str, Any]:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": action,
        "value": value,
        "style": style,
    }


def settled_text(view: ThreadView) -> str:
    """One mrkdwn line on how a thread ended (every outside value escaped)."""
    thread = f"thread `{slack_text(view.id)}` of `{slack_text(view.agent)}`"
    if view.status == "finished":
        output = json.dumps(_plain(view.output), ensure_ascii=False, indent=2, default=str)
        body = _fit(slack_text(output), SLACK_TEXT_LIMIT - 200, "… (cut)")
        return f"{thread} finished:\n```{body}```"
    if view.status == "failed" and view.error is not None:
        return f"{thread} failed: {_fit(slack_text(str(view.error)), 2000, '…')}"
    return f"{thread} is {slack_text(view.status)}"


def _plain(value: Any) -> Any:
    """A value as Slack shows it: secret fields redacted (runtime/redact.py)."""
    return shown_value(value)


def decided_line(event: Event | None, request: str) -> str:
    """Who decided the request, and how (mrkdwn, escaped)."""
    if isinstance(event, Approved | Rejected):
        verb = "approved" if isinstance(event, Approved) else "rejected"
        comment = f": {_fit(slack_text(event.comment), 1000, '…')}" if event.comment else ""
        return f"*{verb}* by {slack_text(event.by or 'someone')}{comment}"
    if isinstance(event, Answered):
        answer = _fit(slack_text(event.answer.text), 1000, "…")
        return f"*answered* by {slack_text(event.answer.by or 'someone')}: {answer}"
    if isinstance(event, Cancelled):
        return f"*withdrawn*: the thread was cancelled by {slack_text(event.by or 'someone')}"
    return f"request `{slack_text(request)}` is no longer pending"


def decision_of(events: list[Event], request: str) -> Event | None:
    """The event that ended `request`: its decision, or the thread's cancellation."""
    for event in events:
        if isinstance(event, Approved | Rejected | Answered) and event.request == request:
            return event
    return next((e for e in events if isinstance(e, Cancelled)), None)


def modal(action: str, value: str, *, channel: str | None, ts: str | None) -> dict[str, Any]:
    """The modal a Reject or Answer press opens: one text input; `private_metadata`
    carries the request and the message to update."""
    rejecting = action == REJECT
    metadata = json.dumps({"v": value, "channel": channel, "ts": ts}, separators=(",", ":"))
    return {
        "type": "modal",
        "callback_id": action,
        "private_metadata": metadata,
        "title": {"type": "plain_text", "text": ("Reject" if rejecting else "Answer")},
        "submit": {"type": "plain_text", "text": ("Reject" if rejecting else "Answer")},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": INPUT_BLOCK,
                "label": {
                    "type": "plain_text",
                    "text": "Why? (the comment goes to the agent)" if rejecting else "Answer",
                },
                "element": {
                    "type": "plain_text_input",
                    "action_id": INPUT_ACTION,
                    "multiline": True,
                    "max_length": COMMENT_LIMIT,
                },
            }
        ],
    }


# ---- the bot -------------------------------------------------------------------------


class SlackMessages(Table):
    """`slack_messages`: the messages that carry a request's buttons (in the store's
    database), so they can be updated once the request is decided."""

    def add(self, channel: str, ts: str, thread_id: str, request: str, title: str) -> None:
        self._db.change(
            "INSERT INTO slack_messages (channel, ts, thread_id, request, title, closed)"
            " VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT (channel, ts) DO UPDATE SET"
            " thread_id = excluded.thread_id, request = excluded.request,"
            " title = excluded.title, closed = 0",
            (channel, ts, thread_id, request, title),
        )

    def open_for(self, thread_id: str) -> list[tuple[str, str, str, str]]:
        """(channel, ts, request, title) of the thread's messages still showing buttons."""
        rows = self._db.rows(
            "SELECT channel, ts, request, title FROM slack_messages"
            " WHERE thread_id = ? AND closed = 0",
            (thread_id,),
        )
        return [(str(c), str(t), str(r), str(h)) for c, t, r, h in rows]

    def claim(self, channel: str, ts: str) -> bool:
        """Mark a message closed; whether this call did (two settles of one thread may
        look at its open messages at once: only the one that closes it updates it)."""
        return (
            self._db.change(
                "UPDATE slack_messages SET closed = 1 WHERE channel = ? AND ts = ? AND closed = 0",
                (channel, ts),
            )
            == 1
        )

    def reopen(self, channel: str, ts: str) -> None:
        """Give a claim back: the update failed, so a later settle tries again."""
        self._db.change(
            "UPDATE slack_messages SET closed = 0 WHERE channel = ? AND ts = ?", (channel, ts)
        )


class SlackBot:
    """Talks to Slack's Web API for one service: posts requests with buttons, updates
    them once decided, posts ephemeral refusals, opens modals."""

    def __init__(self, service: Service, settings: SlackSettings) -> None:
        self.service = service
        self.settings = settings
        self.client = WebClient(token=settings.bot_token, base_url=settings.api_url, timeout=10)
        self.messages = SlackMessages(service.database)

    async def call(self, method: str, **arguments: Any) -> dict[str, Any]:
        """One Web API call (in a worker thread); `SlackApiError` when Slack says no."""
        answer = await asyncio.to_thread(self.client.api_call, method, json=arguments)
        return dict(answer.data) if isinstance(answer.data, dict) else {}

    async def post_request(
        self, notice: Notice, channel: str, *, thread_ts: str | None = None
    ) -> str:
        """Post the notice with its buttons; remember the message; its `ts`."""
        message = request_message(notice)
        extra = {"thread_ts": thread_ts} if thread_ts else {}
        answer = await self.call("chat.postMessage", channel=channel, **message, **extra)
        ts = str(answer.get("ts", ""))
        posted_in = str(answer.get("channel") or channel)
        if notice.request is not None and ts:
            title = _fit(slack_text(notice.title), 1000, "…")
            await asyncio.to_thread(
                self.messages.add, posted_in, ts, notice.thread_id, notice.request, title
            )
        return ts

    async def ephemeral(
        self, channel: str | None, user: str, text: str, *, thread_ts: str | None = None
    ) -> None:
        """Tell one Slack user something only they see (mrkdwn `text`, already escaped)."""
        if not channel:
            log.info("slack: nowhere to tell %s: %s", user, text)
            return
        extra = {"thread_ts": thread_ts} if thread_ts else {}
        try:
            await self.call("chat.postEphemeral", channel=channel, user=user, text=text, **extra)
        except SlackApiError as exc:
            log.warning("slack: chat.postEphemeral failed: %s", _error(exc))

    async def close_decided(self, view: ThreadView) -> None:
        """Update each message showing buttons for a request of `view`'s thread that is
        no longer pending: who decided it, and no more buttons."""
        opened = await asyncio.to_thread(self.messages.open_for, view.id)
        stale = [m for m in opened if m[2] != view.request]
        if not stale:
            return
        agent = self.service.agents.get(view.agent)
        events = await self.service.runtime.events(view.id, agent=agent) if agent else []
        for channel, ts, request, title in stale:
            if not await asyncio.to_thread(self.messages.claim, channel, ts):
                continue  # another settle of this thread is updating it
            line = decided_line(decision_of(events, request), request)
            text = f"{title}\n{line}"
            try:
                await self.call(
                    "chat.update",
                    channel=channel,
                    ts=ts,
                    text=text,
                    blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
                )
            except SlackApiError as exc:
                log.warning("slack: chat.update failed: %s", _error(exc))
                await asyncio.to_thread(self.messages.reopen, channel, ts)


def _error(exc: SlackApiError) -> str:
    data = getattr(exc.response, "data", None)
    return str(data.get("error")) if isinstance(data, dict) else type(exc).__name__


class SlackChannel:
    """A notifier channel (runtime/notify.py's protocol): posts each notice to the
    configured channel with its buttons."""

    name = "slack-bot"

    def __init__(self, bot: SlackBot, channel: str) -> None:
        self.bot = bot
        self.channel = channel
        self.secrets = tuple(s for s in (bot.settings.bot_token,) if s)

    async def notify(self, notice: Notice) -> list[str]:
        from twelvefold.runtime.notify import NotifyError

        try:
            await self.bot.post_request(notice, self.channel)
        except SlackApiError as exc:
            raise NotifyError(f"{self.name}: chat.postMessage failed: {_error(exc)}") from None
        except OSError as exc:
            raise NotifyError(f"{self.name}: {type(exc).__name__}: {exc}") from None
        return [self.name]


class Linked:
    """Notifier that gives each notice its inbox link before the channels send it."""

    def __init__(self, inner: Notifier, link: Callable[[str], str | None]) -> None:
        self.inner, self.link = inner, link
        self.secrets = tuple(getattr(inner, "secrets", ()))

    async def notify(self, notice: Notice) -> list[str]:
        return await self.inner.notify(replace(notice, link=self.link(notice.thread_id)))


def install_notices(service: Service, bot: SlackBot | None, links: Replies) -> None:
    """Make the runtime's notices carry the inbox link and (with a bot and a channel)
    go to Slack with buttons too, besides the channels the environment configures."""
    engine = service.runtime.engine
    if isinstance(engine.notifier, Linked):
        return
    try:
        inner: Notifier = engine._notifier()
    except ValueError as exc:  # TWELVEFOLD_NOTIFY_* / SMTP settings that cannot work
        raise ServeError(f"notifications: {exc}") from None
    if bot is not None and bot.settings.channel:
        channels = list(inner.channels) if isinstance(inner, MultiNotifier) else [inner]
        inner = MultiNotifier([*channels, SlackChannel(bot, bot.settings.channel)])
    engine.notifier = Linked(inner, links.link)


def notice_of(service: Service, view: ThreadView) -> Notice | None:
    """The notice for a waiting thread's pending request (as the runtime makes it)."""
    agent = service.agents.get(view.agent)
    if agent is None or view.request is None:
        return None
    action = agent.module.next_action(view.state)
    if not isinstance(action, AwaitApproval | AwaitAnswer):
        return None
    return Notice(
        thread_id=view.id,
        agent=view.agent,
        step=action.step,
        kind="approval" if isinstance(action, AwaitApproval) else "human",
        text=view.question or question(action),
        value=action.value,
        approvers=action.approvers if isinstance(action, AwaitApproval) else (),
        request=action.request,
    )


# ---- the route -----------------------------------------------------------------------


APPS: weakref.WeakKeyDictionary[Service, SlackApp] = weakref.WeakKeyDictionary()
"""The Slack app of each service (the tests wait on its background work)."""


class SlackApp:
    """What /v1/hooks/slack does, over one service."""

    def __init__(
        self,
        service: Service,
        settings: SlackSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.settings = settings
        self.clock = clock
        self.bot = SlackBot(service, settings) if settings.bot_token else None
        self.replies = replies(service)
        self.tasks: set[asyncio.Task[None]] = set()
        self.seen = SeenSignatures()
        install_notices(service, self.bot, self.replies)
        if self.bot is not None:
            self.replies.senders["slack"] = self._reply_in_slack
            service.on_settled(self.bot.close_decided)
        APPS[service] = self

    def later(self, work: Callable[[], Any]) -> None:
        """Run `work()` (a coroutine) in the background, keeping a reference to it."""
        task: asyncio.Task[None] = asyncio.create_task(_logged(work()))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def idle(self) -> None:
        """Wait until the background work started so far is done (tests, shutdown)."""
        while self.tasks:
            await asyncio.wait(set(self.tasks))

    async def handle(self, request: Request) -> Response:
        if self.settings.signing_secret is None:
            return problem(404, "Slack is not configured on this server")
        body = await _bounded_body(request)
        if body is None:
            return problem(413, f"a Slack request is at most {MAX_BODY_BYTES} bytes")
        try:
            verify(
                self.settings.signing_secret,
                request.headers.get("x-slack-request-timestamp"),
                request.headers.get("x-slack-signature"),
                body,
                self.clock(),
            )
        except BadSignature as exc:
            return problem(401, str(exc))
        timestamp = request.headers["x-slack-request-timestamp"]  # verified: digits
        if not self.seen.first_time(
            request.headers["x-slack-signature"], float(timestamp), self.clock()
        ):
            return problem(401, "this request was received already (a replay?)")
        if request.headers.get("content-type", "").startswith("application/json"):
            return await self._event(request, body)
        form = _form(body)
        if isinstance(form, str):
            return problem(400, form)
        if "payload" in form:
            try:
                payload = loads(form["payload"])
            except (ValueError, RecursionError):  # not JSON, or nested past Python's limit
                return problem(400, "the interaction payload is not JSON")
            except RefusedKey as exc:
                return problem(400, f"the interaction payload: {exc.message}")
            if not isinstance(payload, dict):
                return problem(400, "the interaction payload is not an object")
            return await self._interaction(payload)
        if "command" in form:
            return self._command(form)
        return problem(400, "not a Slack interaction, slash command or event")

    # ---- interactivity -------------------------------------------------------------

    async def _interaction(self, payload: dict[str, Any]) -> Response:
        kind = payload.get("type")
        user = _text(_dig(payload, "user", "id"))
        if kind == "block_actions":
            actions = payload.get("actions")
            action = actions[0] if isinstance(actions, list) and actions else {}
            if not isinstance(action, dict):
                return problem(400, "the action is not an object")
            channel = _text(_dig(payload, "channel", "id")) or _text(
                _dig(payload, "container", "channel_id")
            )
            ts = _text(_dig(payload, "message", "ts")) or _text(
                _dig(payload, "container", "message_ts")
            )
            self.later(
                lambda: self._pressed(
                    _text(action.get("action_id")),
                    _text(action.get("value")),
                    user,
                    channel,
                    ts,
                    _text(payload.get("trigger_id")),
                )
            )
            return Response(status_code=200)
        if kind == "view_submission":
            return await self._submitted(payload, user)
        return Response(status_code=200)  # view_closed and the like: nothing to do

    async def _pressed(
        self, action: str, value: str, user: str, channel: str, ts: str, trigger: str
    ) -> None:
        target = _request_of(value)
        if target is None or action not in (APPROVE, REJECT, ANSWER):
            return
        thread_id, request = target
        person = await self._person_for(thread_id, user, channel)
        if person is None:
            return
        if action == APPROVE:
            await self._approve(person, user, channel, thread_id, request)
            return
        if self.bot is None:  # without a bot no buttons were posted: a forged press
            return
        view = modal(action, value, channel=channel or None, ts=ts or None)
        try:
            await self.bot.call("views.open", trigger_id=trigger, view=view)
        except SlackApiError as exc:
            await self._tell(channel, user, f"the form could not be opened ({_error(exc)})")

    async def _submitted(self, payload: dict[str, Any], user: str) -> Response:
        view = payload.get("view")
        if not isinstance(view, dict):
            return problem(400, "the submission has no view")
        action = _text(view.get("callback_id"))
        try:
            metadata = loads(_text(view.get("private_metadata")) or "{}")
        except (ValueError, RecursionError, RefusedKey):  # not JSON (as we wrote it)
            metadata = {}
        target = _request_of(_text(metadata.get("v")) if isinstance(metadata, dict) else "")
        if target is None or action not in (REJECT, ANSWER):
            return Response(status_code=200)
        thread_id, request = target
        text = _text(_dig(view, "state", "values", INPUT_BLOCK, INPUT_ACTION, "value"))[
            :COMMENT_LIMIT
        ]
        person = await self._person_for(thread_id, user, None)
        if person is None:
            return _modal_error("your Slack account is not mapped to a person on this server")
        caller = Caller(person, "slack", f"slack user {user}")
        try:
            if action == REJECT:
                decided = await self.service.decide(
                    caller, thread_id, request=request, decision="reject", comment=text or None
                )
            else:
                decided = await self.service.decide(
                    caller, thread_id, request=request, decision="answer", answer=text
                )
        except ServiceError as exc:
            return _modal_error(exc.detail)
        if self.bot is not None:
            bot = self.bot
            self.later(lambda: bot.close_decided(decided))
        return Response(status_code=200)

    async def _approve(
        self, person: str, user: str, channel: str, thread_id: str, request: str
    ) -> None:
        caller = Caller(person, "slack", f"slack user {user}")
        try:
            view = await self.service.decide(caller, thread_id, request=request, decision="approve")
        except ServiceError as exc:
            await self._tell(channel, user, f"{exc.title}: {slack_text(exc.detail)}")
            return
        if self.bot is not None:
            await self.bot.close_decided(view)

    async def _person_for(self, thread_id: str, user: str, channel: str | None) -> str | None:
        """The person a Slack user is for the thread's agent; None (and the user told)
        when the thread is not served here or the user is not mapped."""
        try:
            info = await self.service.runtime.info(thread_id)
        except Exception:
            await self._tell(channel, user, "this request's thread is not on this server")
            return None
        agent = self.service.agents.get(info.agent)
        if agent is None:
            await self._tell(channel, user, "this request's thread is not on this server")
            return None
        return await self._person(agent, user, channel)

    async def _person(self, agent: Agent, user: str, channel: str | None) -> str | None:
        """The person `user` is for `agent`; None (and the user told) when unmapped."""
        person = slack_users(agent).get(user)
        if person is None:
            await self._tell(
                channel,
                user,
                f"your Slack account (`{slack_text(user)}`) is not mapped to a person on this "
                "server: ask for it in `[tool.twelvefold.slack] users`",
            )
        return person

    async def _tell(self, channel: str | None, user: str, text: str) -> None:
        if self.bot is not None and user:
            await self.bot.ephemeral(channel, user, text)

    # ---- launching -----------------------------------------------------------------

    def _command(self, form: Mapping[str, str]) -> Response:
        """`/twelvefold AGENT input…`: launched in the background; the answer now."""
        words = form.get("text", "").strip().split(None, 1)
        if not words:
            return _ephemeral("usage: `/twelvefold AGENT input…`")
        agent = words[0]
        given = _unescape(words[1]) if len(words) > 1 else ""
        user, channel = form.get("user_id", ""), form.get("channel_id", "")
        self.later(lambda: self._launch(agent, given, user, channel, None))
        return _ephemeral(f"launching `{slack_text(agent)}`…")

    async def _event(self, request: Request, body: bytes) -> Response:
        try:
            data = loads(body)
        except (ValueError, RecursionError):  # not JSON, or nested past Python's limit
            return problem(400, "the event is not JSON")
        except RefusedKey as exc:
            return problem(400, f"the event: {exc.message}")
        if not isinstance(data, dict):
            return problem(400, "the event is not an object")
        if data.get("type") == "url_verification":
            return JSONResponse({"challenge": _text(data.get("challenge"))[:200]})
        if request.headers.get("x-slack-retry-num"):
            return Response(status_code=200)  # our first answer went astray; launched once
        event = data.get("event")
        if data.get("type") != "event_callback" or not isinstance(event, dict):
            return Response(status_code=200)
        if event.get("type") == "app_mention" and not event.get("bot_id"):
            text = re.sub(r"^\s*<@[^>]*>\s*", "", _text(event.get("text")))
            words = text.strip().split(None, 1)
            user, channel = _text(event.get("user")), _text(event.get("channel"))
            root = _text(event.get("thread_ts")) or _text(event.get("ts"))
            if words:
                given = _unescape(words[1]) if len(words) > 1 else ""
                self.later(lambda: self._launch(words[0], given, user, channel, root or None))
        return Response(status_code=200)

    async def _launch(
        self, agent_name: str, given: str, user: str, channel: str, thread_ts: str | None
    ) -> None:
        agent = self.service.agents.get(agent_name)
        if agent is None:
            names = ", ".join(f"`{slack_text(n)}`" for n in sorted(self.service.agents))
            await self._tell(
                channel,
                user,
                f"no agent `{slack_text(agent_name)}` here; try {names}",
            )
            return
        person = await self._person(agent, user, channel)
        if person is None:
            return
        caller = Caller(person, "slack", f"slack user {user}")
        try:
            view = await self.service.launch(caller, agent_name, _input(given))
        except RefusedKey as exc:
            await self._tell(channel, user, f"Invalid input: {slack_text(exc.message)}")
            return
        except ServiceError as exc:
            await self._tell(channel, user, f"{exc.title}: {slack_text(exc.detail)}")
            return
        if self.bot is None or not channel:
            return
        where: dict[str, str | None] = {"channel": channel, "thread_ts": thread_ts}
        if thread_ts is None:
            try:
                answer = await self.bot.call(
                    "chat.postMessage",
                    channel=channel,
                    text=f"{slack_text(person)} launched `{slack_text(agent_name)}`: "
                    f"thread `{slack_text(view.id)}`",
                )
            except SlackApiError as exc:
                log.warning("slack: chat.postMessage failed: %s", _error(exc))
                return
            where["thread_ts"] = _text(answer.get("ts")) or None
        address = json.dumps(where, sort_keys=True)
        await asyncio.to_thread(self.replies.targets.add, view.id, "slack", address)
        # The thread may have settled while we posted: reply now if it did.
        current = await self.service.runtime.get(view.id, agent=agent)
        if current.status != "running":
            await self.replies.settled(current)

    async def _reply_in_slack(self, view: ThreadView, address: str) -> None:
        """The `slack` reply sender: the request with its buttons when the thread waits,
        how it ended otherwise, in the Slack thread it was launched from."""
        if self.bot is None:
            raise RuntimeError("no Slack bot token: cannot reply in Slack")
        where = json.loads(address)
        channel, thread_ts = str(where["channel"]), where.get("thread_ts")
        told = notice_of(self.service, view) if view.status == "waiting" else None
        if told is not None:
            told = replace(told, link=self.replies.link(view.id))
            await self.bot.post_request(told, channel, thread_ts=thread_ts)
            return
        text = settled_text(view)
        extra = {"thread_ts": thread_ts} if thread_ts else {}
        await self.bot.call("chat.postMessage", channel=channel, text=text, **extra)


async def _logged(work: Any) -> None:
    try:
        await work
    except Exception:
        log.exception("slack: background work failed")


def _request_of(value: str) -> tuple[str, str] | None:
    try:
        data = loads(value)
    except (ValueError, RecursionError, RefusedKey):  # not a value we wrote
        return None
    if not isinstance(data, dict):
        return None
    thread, request = data.get("thread"), data.get("request")
    if isinstance(thread, str) and isinstance(request, str) and thread and request:
        return thread, request
    return None


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _unescape(text: str) -> str:
    """Slack's message text as the person typed it: Slack sends `&`, `<` and `>` as
    entities (https://api.slack.com/reference/surfaces/formatting#escaping)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _input(given: str) -> Any:
    """A launch's input: a JSON object or array when the text is one, else the text.
    RefusedKey for an object that gives a key twice or has a key holding a lone
    surrogate (bodies.py)."""
    if given.startswith(("{", "[")):
        try:
            return loads(given)
        except (ValueError, RecursionError):  # not JSON, or nested past Python's limit
            pass
    return given


def _ephemeral(text: str) -> JSONResponse:
    return JSONResponse({"response_type": "ephemeral", "text": text})


def _modal_error(detail: str) -> JSONResponse:
    """Keep the modal open with `detail` under its input (Slack's `response_action`)."""
    return JSONResponse(
        {"response_action": "errors", "errors": {INPUT_BLOCK: _fit(detail, 2000, "…")}}
    )


async def _bounded_body(request: Request) -> bytes | None:
    """The raw body, or None once it passes MAX_BODY_BYTES (read no further)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def router(
    service: Service,
    *,
    app: SlackApp | None = None,
) -> APIRouter:
    """`POST /v1/hooks/slack` over `service` (a `SlackApp` with the environment's
    settings unless given). Through its lifespan it also runs the schedules
    (schedules.py) and the retention timer (pruning.py). Making it makes notices carry
    the inbox link and (with a bot) Slack buttons, and replies go where launches asked.
    `ServeError` (one line) for a configuration that cannot work: a bad public URL,
    schedule, retention or webhook secret."""
    from twelvefold.server.pruning import Pruner, timed_retention
    from twelvefold.server.schedules import Scheduler, schedules_of

    slack = app or SlackApp(service, SlackSettings.from_env())
    scheduler = Scheduler(service, schedules_of(service))
    timed = timed_retention(service)
    pruner = Pruner(service, timed) if timed is not None else None

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        scheduler.start()
        if pruner is not None:
            pruner.start()
        try:
            yield
        finally:
            await scheduler.stop()
            if pruner is not None:
                await pruner.stop()
            with contextlib.suppress(TimeoutError):  # Slack calls are bounded (10 s each)
                await asyncio.wait_for(slack.idle(), timeout=15)

    routes = APIRouter(lifespan=lifespan)

    @routes.post("/v1/hooks/slack", include_in_schema=False)
    async def slack_hook(request: Request) -> Response:
        return await slack.handle(request)

    return routes


def _form(body: bytes) -> dict[str, str] | str:
    """A form Slack posts (`application/x-www-form-urlencoded`), or what is wrong with it:
    read as strictly as a JSON body (server/bodies.py), since a form whose `text` comes
    twice would be one command to this server and another to a log reading the other.
    UTF-8 only, escapes included; no field twice; no NUL character."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), errors="strict")
    except UnicodeDecodeError:
        return "the form is not UTF-8"
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            return f"the form gives the field `{key[:100]}` twice"
        if "\0" in key or "\0" in value:
            return "the form holds a NUL character"
        form[key] = value
    return form
