"""Replies to whoever launched a thread: when it pauses or ends, the server tells the
place the launch named (docs/server.md, "Webhooks").

A reply target is kept per thread in `server_replies`, in the store's SQLite file, so a
restarted server still replies: a `webhook` URL a launch over HTTP named (a Standard
Webhooks POST, signed like the notices, runtime/notify.py), or a Slack thread a slash
command or mention came from (slack.py registers how to post there). Each target keeps
how far the thread was when it was last told (`replied_seq`) and, while a reply is being
sent, until when that send may take (`sending_until`, on the database's clock): a claim
is a lease. A view is sent at least once, and more than once only when a send's outcome
was lost (a process killed while sending, a receiver answering as the sender was cut
off), then under the same `webhook-id`, by which receivers drop the copy.

    POST {webhook}
    webhook-id: msg_<32 hex>     (the same on every attempt at one view of one thread)
    webhook-timestamp: <unix seconds>
    webhook-signature: v1,<base64>   (with TWELVEFOLD_WEBHOOK_SECRET)
    {"type": "thread.settled", "thread": <the thread view>, "link": <inbox URL or null>}
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import ipaddress
import json
import logging
import math
import os
import socket
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from twelvefold.runtime.api import ThreadView
from twelvefold.runtime.config import ConfigError, find_config, toml_text
from twelvefold.runtime.notify import NotifyError, _post_json, signing_key, standard_webhook_headers
from twelvefold.runtime.store import ThreadNotFound
from twelvefold.runtime.types import Notified
from twelvefold.server.service import BadInput, Forbidden, ServeError, Service, Serving
from twelvefold.server.tables import Table

log = logging.getLogger("twelvefold.server")

WEBHOOK = "webhook"
ATTEMPT_DELAYS = (1.0, 5.0)
"""Seconds before the second and third attempt at a webhook reply that failed."""
SEND_SECONDS = 120.0
"""The longest one reply's send may take, every attempt included (three webhook attempts
take at most about 1 + 5 s of delays and 3 x 10 s of HTTP timeouts, plus name lookups);
a send still going then is given up as failed."""
CLAIM_SECONDS = SEND_SECONDS + 60.0
"""How long a claim holds (`sending_until`): longer than any send may take, so a claim
lapses only when the process that made it is gone (killed, or stalled past it); then
the reply is sent again (`Replies.resend_due`)."""
CATCH_UP_AT_ONCE = 8
"""How many threads' replies a catch-up sends at once: a receiver that never answers
holds one of them, not the others."""
MAX_URL = 2000

Sender = Callable[[ThreadView, str], Awaitable[None]]
"""Sends a view to one target's address; raises on failure (the reply is tried again
the next time the thread settles)."""


class RepliesFailed(Exception):
    """Some replies of a settled thread could not be sent (each failure, one line)."""


@dataclass(frozen=True)
class Target:
    thread_id: str
    kind: str
    """`webhook` or `slack`."""
    address: str
    """The URL, or (Slack) a JSON object naming the channel and thread."""
    replied_seq: int
    """How far the thread was when this target was last told, or is being told."""
    sending_until: float | None = None
    """While a reply is being sent to it: until when its claim holds (unix seconds on the
    database's clock); None once sent."""
    lapsed: bool = False
    """A claim whose time ran out when it was read: its reply was never said sent."""


_COLUMNS = "thread_id, kind, address, replied_seq, sending_until"


class ReplyTargets(Table):
    """`server_replies`: thread -> where its replies go (in the store's database).

    `claim` moves a target's `replied_seq` to a view's and sets `sending_until` (a
    lease on the send, `CLAIM_SECONDS` on the database's clock); `sent` clears it once
    the reply went out; `unclaim` gives the claim back after a send failed. A claim still
    set once its time is past was made by a process that is gone: `claim` takes it again."""

    @property
    def _now(self) -> str:
        """The database's clock, unix seconds (one clock for every process on it)."""
        if self._db.dialect == "sqlite":
            return "((julianday('now') - 2440587.5) * 86400.0)"
        return "extract(epoch FROM clock_timestamp())::float8"

    def _targets(self, where: str, params: tuple[Any, ...]) -> list[Target]:
        # In the order they were added: SQLite's rowid, PostgreSQL's identity column.
        order = "rowid" if self._db.dialect == "sqlite" else "added"
        rows = self._db.rows(
            f"SELECT {_COLUMNS}, sending_until <= {self._now} FROM server_replies"
            f" {where} ORDER BY {order}",
            params,
        )
        return [
            Target(str(t), str(k), str(a), int(s), None if u is None else float(u), bool(late))
            for t, k, a, s, u, late in rows
        ]

    def add(self, thread_id: str, kind: str, address: str) -> None:
        self._db.change(
            "INSERT INTO server_replies (thread_id, kind, address) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (thread_id, kind, address),
        )

    def of(self, thread_id: str) -> list[Target]:
        return self._targets("WHERE thread_id = ?", (thread_id,))

    def all(self) -> list[Target]:
        """Every target, of every thread."""
        return self._targets("", ())

    @property
    def _lapsed(self) -> str:
        """The condition of a claim that lapsed: a send under way in a process now gone."""
        return f"(sending_until IS NOT NULL AND sending_until <= {self._now})"

    def lapsed(self) -> list[Target]:
        """The targets whose claim lapsed: a send was under way in a process that is gone."""
        return self._targets(f"WHERE {self._lapsed}", ())

    def due(self) -> list[Target]:
        """The targets owed a reply now: a claim that lapsed, or no send under way and
        behind their thread, which is not running (moved on by another process, by the
        CLI, or while an older view's send to it was still trying; or a process died
        after the thread settled and before it claimed the reply). One query, both
        tables in the store's database."""
        return self._targets(
            f"WHERE {self._lapsed} OR (sending_until IS NULL AND EXISTS (SELECT 1 FROM threads t"
            " WHERE t.id = server_replies.thread_id AND t.status <> 'running'"
            " AND t.seq > server_replies.replied_seq))",
            (),
        )

    def caught_up(self, thread_id: str, settled: int, seq: int) -> None:
        """The thread's targets told of its view at `settled` are told of it at `seq`:
        the events since are notices retried (`Notified`), no point of its own to tell.
        Without this such a thread would be found owed a reply at every sweep."""
        self._db.change(
            "UPDATE server_replies SET replied_seq = ? WHERE thread_id = ? AND replied_seq >= ?"
            " AND replied_seq < ? AND sending_until IS NULL",
            (seq, thread_id, settled, seq),
        )

    def forget(self, thread_id: str) -> None:
        """Drop the targets of a thread that is no longer in the store (deleted, pruned)."""
        self._db.change("DELETE FROM server_replies WHERE thread_id = ?", (thread_id,))

    def claim(self, target: Target, seq: int, seconds: float = CLAIM_SECONDS) -> float | None:
        """Claim `target` for the thread's view at `seq` for `seconds`, unless it was told
        of it, or is being told, already (by this process or another): the moment the
        claim lapses (give it to `sent` or `unclaim`), or None when it was not claimed.
        A claim at `seq` that lapsed is taken again: its send never said it finished."""
        which = (target.thread_id, target.kind, target.address, seq, seq)
        # Behind and no send under way (an older view's send, still trying, must end
        # first: sent after a newer one, it would tell the receiver the thread went
        # back), or this view's claim lapsed.
        unclaimed = (
            " WHERE thread_id = ? AND kind = ? AND address = ? AND ((replied_seq < ?"
            f" AND (sending_until IS NULL OR sending_until <= {self._now}))"
            f" OR (replied_seq = ? AND sending_until <= {self._now}))"
        )
        if self._db.dialect == "sqlite":
            # One machine, one clock (SQLite's 'now' is this one's). No RETURNING: it
            # needs SQLite 3.35, and some systems' Python links an older one.
            # On the grid of SQLite's 'now' (whole ms, through a julianday: ±50 µs), a
            # ms early, so that a lapse SQLite sees is one this clock saw first.
            until = math.floor((time.time() + seconds) * 1000) / 1000 - 0.001
            changed = self._db.change(
                "UPDATE server_replies SET replied_seq = ?, sending_until = ?" + unclaimed,
                (seq, until, *which),
            )
            return until if changed == 1 else None
        rows = self._db.rows(
            f"UPDATE server_replies SET replied_seq = ?, sending_until = {self._now} + ?"
            + unclaimed
            + " RETURNING sending_until",
            (seq, seconds, *which),
        )
        return float(rows[0][0]) if rows else None

    def sent(self, target: Target, seq: int, until: float) -> None:
        """The reply claimed at `seq` (until `until`) went out: the target is told."""
        self._db.change(
            "UPDATE server_replies SET sending_until = NULL WHERE thread_id = ? AND kind = ?"
            " AND address = ? AND replied_seq = ? AND sending_until = ?",
            (target.thread_id, target.kind, target.address, seq, until),
        )

    def unclaim(self, target: Target, seq: int, until: float) -> None:
        """Give the claim made at `seq` (until `until`) back after its send failed: the
        target as it was before (`target`: told of its `replied_seq`, or being told by
        another process), unless another claim was made since. A lapsed claim it had
        taken over was never sent: the target goes back to before that one."""
        replied, sending = target.replied_seq, target.sending_until
        if target.lapsed:
            replied, sending = replied - 1, None
        self._db.change(
            "UPDATE server_replies SET replied_seq = ?, sending_until = ? WHERE thread_id = ?"
            " AND kind = ? AND address = ? AND replied_seq = ? AND sending_until = ?",
            (replied, sending, target.thread_id, target.kind, target.address, seq, until),
        )


class Replies:
    """The reply targets of one service and how to send to each kind. `settled` is
    registered with `Service.on_settled` (see `replies`)."""

    def __init__(
        self,
        service: Service,
        *,
        public_url: str | None = None,
        webhook_secret: str | None = None,
        webhook_hosts: frozenset[str] | None = None,
        delays: tuple[float, ...] = ATTEMPT_DELAYS,
    ) -> None:
        self.service = service
        self.webhook_hosts = webhook_hosts
        self.targets = ReplyTargets(service.database)
        self.public_url = public_url
        self.key = signing_key(webhook_secret) if webhook_secret else None
        self.delays = delays
        self.senders: dict[str, Sender] = {WEBHOOK: self._send_webhook}
        self.send_seconds = SEND_SECONDS
        self.claim_seconds = CLAIM_SECONDS
        self._writes: set[asyncio.Future[None]] = set()
        self._catching: dict[str, asyncio.Task[None]] = {}
        """The threads being caught up here (`_start_catching_up`), by id."""
        self._at_once: asyncio.Semaphore | None = None
        """`CATCH_UP_AT_ONCE` places (made on the event loop, at the first catch-up)."""

    def link(self, thread_id: str) -> str | None:
        """The thread's page in the inbox (`{public_url}/threads/{id}`, where its pending
        request is decided), when the server knows its public URL."""
        return inbox_link(self.public_url, thread_id)

    def webhook(self, thread_id: str, url: str) -> None:
        """Reply to `url` when the thread pauses or ends. `BadInput` for a URL that is
        not absolute http(s). Blocking (SQLite): give it to `Service.launch` as `before_run`,
        which calls it in a worker thread before the background run can settle."""
        check_webhook_url(url)
        self.targets.add(thread_id, WEBHOOK, url)

    async def check_webhook(self, url: str) -> None:
        """`BadInput` / `Forbidden` unless replies may go to `url` (`check_webhook_url`, then
        `check_webhook_host` with the configured `webhook_hosts`, off the event loop)."""
        check_webhook_url(url)
        await asyncio.to_thread(check_webhook_host, url, self.webhook_hosts)

    async def settled(self, view: ThreadView) -> None:
        """Send `view` to each target of its thread not told of it yet. A target is
        claimed before the send (`ReplyTargets.claim`: its `replied_seq` moved to the
        view's and a lease on the send, in one conditional UPDATE), so two processes
        settling the same thread never both send; it is marked sent once the send went
        out. A send that fails (or takes longer than `send_seconds`) gives its claim back
        and, once every target was tried, raises `RepliesFailed`: a worker's reply job is
        then tried again later (server/queue.py); the server logs it and tries at the
        next settle or start. A claim left by a process killed while sending lapses and
        is taken again (`resend_due`): a reply is sent at least once."""
        failures: list[str] = []
        point = _settled_seq(view)  # notices retried since add nothing to tell
        told_of_point = False
        for target in await asyncio.to_thread(self.targets.of, view.id):
            sender = self.senders.get(target.kind)
            if sender is None or (target.replied_seq >= point and not target.lapsed):
                told_of_point |= target.replied_seq < view.seq and target.sending_until is None
                continue
            until = await self._claim(target, view.seq)
            if until is None:
                continue  # another process is telling (or told) this target of this view
            deadline = asyncio.timeout(self.send_seconds)
            try:
                async with deadline:
                    await sender(view, target.address)
            except asyncio.CancelledError:
                # Cut off (the server stopping past its grace): give the claim back, so
                # the next settle or start, here or in another process, sends it.
                await self._write(self.targets.unclaim, target, view.seq, until)
                raise
            except Exception as exc:  # one broken target must not keep the others quiet
                reason = f"gave up after {self.send_seconds:g} s" if deadline.expired() else exc
                log.warning("thread %s: the %s reply failed: %s", view.id, target.kind, reason)
                await self._write(self.targets.unclaim, target, view.seq, until)
                failures.append(f"{target.kind}: {reason}")
            else:
                await self._write(self.targets.sent, target, view.seq, until)
        if told_of_point:  # so that no sweep finds them owed this point again
            await self._write(self.targets.caught_up, view.id, point, view.seq)
        if failures:
            raise RepliesFailed(f"thread {view.id}: " + "; ".join(failures))

    async def _claim(self, target: Target, seq: int) -> float | None:
        """`ReplyTargets.claim` off the event loop. A cancellation landing while its
        UPDATE runs in its thread (a stop) cannot stop the UPDATE: it is waited for, and
        a claim it made is given back before the cancellation goes on."""
        claiming = asyncio.ensure_future(
            asyncio.to_thread(self.targets.claim, target, seq, self.claim_seconds)
        )
        try:
            return await asyncio.shield(claiming)
        except asyncio.CancelledError:
            until = await _outlasting(claiming)
            if until is not None:
                await _outlasting(
                    asyncio.ensure_future(
                        asyncio.to_thread(self.targets.unclaim, target, seq, until)
                    )
                )
            raise

    async def _write(self, function: Callable[..., None], *args: Any) -> None:
        """`function(*args)` (a write to the targets: `sent`, `unclaim`) in a worker
        thread, carried out even when this task is cancelled while it waits for a thread
        to run it. One that fails is logged: the claim it was to end lapses, and the
        reply is sent again then (at least once)."""
        writing = asyncio.ensure_future(asyncio.to_thread(function, *args))
        self._writes.add(writing)
        writing.add_done_callback(self._writes.discard)
        try:
            await asyncio.shield(writing)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("a reply's claim was not ended (it lapses, then the reply is sent"
                        " again): %s", exc)  # fmt: skip

    async def catch_up(self) -> None:
        """Send the replies a stop cut off (given back past its grace, or failed at the
        last settle) or a killed process left claimed (`resend_due`): each target
        behind the view of its thread when that thread is not running (a running one's
        next settle sends them). A finished thread never settles again, so without this
        its last reply was never sent; a waiting one would be told only once decided.
        Run at a server's start (SQLite; workers retry a reply job until it is sent),
        `CATCH_UP_AT_ONCE` threads at a time; a failure is logged (the next start tries
        again)."""
        await self._catch_up(await asyncio.to_thread(self.targets.all))

    async def resend_due(self) -> list[str]:
        """Send the replies owed now (`ReplyTargets.due`): a claim that lapsed (a process
        was killed, or stalled past `claim_seconds`, while sending), or a thread that
        settled with no reply claimed (moved on by another process or the CLI, by a
        process killed before it claimed, or while an older view's send was still
        trying). The server's sweep calls it (SQLite); workers enqueue a reply job for
        each instead (`due_threads`). The threads, once each was told (a thread already
        being caught up here is not started twice)."""
        due = await asyncio.to_thread(self.targets.due)
        await self._catch_up(due)
        return list(dict.fromkeys(t.thread_id for t in due))

    async def due_threads(self) -> dict[str, int]:
        """The threads owed a reply now (`ReplyTargets.due`), each with how far its
        target furthest behind was told (a reply job's lock: one per thread and point)."""
        owed: dict[str, int] = {}
        for target in await asyncio.to_thread(self.targets.due):
            owed[target.thread_id] = min(owed.get(target.thread_id, target.replied_seq),
                                         target.replied_seq)  # fmt: skip
        return owed

    async def keep_up(self, every: float) -> None:
        """`catch_up` now, then `resend_due` every `every` seconds (0: never) until
        cancelled: the server's replies outlive a process killed while sending one, and
        reach threads moved on elsewhere. A sweep does not wait for the sends it starts
        (a receiver that never answers holds its own thread's, not the next sweep)."""
        try:
            try:
                await self.catch_up()
            except Exception:
                log.exception("the replies left behind were not sent; the next sweep tries")
            while every > 0:
                await asyncio.sleep(every)
                try:  # started, not waited for
                    self._start_catching_up(await asyncio.to_thread(self.targets.due))
                except Exception as exc:
                    log.warning("the replies owed were not looked for (%s); the next "
                                "sweep tries", exc)  # fmt: skip
        finally:
            catching = list(self._catching.values())
            for task in catching:
                task.cancel()  # a send cut off gives its claim back (`settled`)
            if catching:
                await asyncio.wait(catching)

    async def _catch_up(self, targets: list[Target]) -> None:
        """Tell each thread of `targets` its current view, where one of them is behind it
        or was claimed by a send that lapsed, `CATCH_UP_AT_ONCE` threads at a time; once
        every one was told."""
        tasks = self._start_catching_up(targets)
        if tasks:
            await asyncio.wait(tasks)

    def _start_catching_up(self, targets: list[Target]) -> list[asyncio.Task[None]]:
        """Start `_catch_up_thread` for each thread of `targets` not being caught up here
        already; the tasks of all of them."""
        behind: dict[str, tuple[int, bool]] = {}
        for target in targets:
            seen, lapsed = behind.get(target.thread_id, (target.replied_seq, False))
            # the one furthest behind; and whether a send to any of them lapsed
            behind[target.thread_id] = (min(seen, target.replied_seq), lapsed or target.lapsed)
        if self._at_once is None:
            self._at_once = asyncio.Semaphore(CATCH_UP_AT_ONCE)
        tasks: list[asyncio.Task[None]] = []
        for thread_id, (replied, lapsed) in behind.items():
            task = self._catching.get(thread_id)
            if task is None:
                task = asyncio.create_task(self._bounded(thread_id, replied, lapsed))
                self._catching[thread_id] = task
                task.add_done_callback(functools.partial(self._caught_up, thread_id))
            tasks.append(task)
        return tasks

    def _caught_up(self, thread_id: str, _: asyncio.Task[None]) -> None:
        self._catching.pop(thread_id, None)

    async def _bounded(self, thread_id: str, replied: int, lapsed: bool) -> None:
        assert self._at_once is not None
        async with self._at_once:
            await self._catch_up_thread(thread_id, replied, lapsed)

    async def _catch_up_thread(self, thread_id: str, replied: int, lapsed: bool) -> None:
        service = self.service
        try:
            info = await service.runtime.info(thread_id)  # the row: most are told
            agent = service.agents.get(info.agent)
            if agent is None or info.status == "running" or (replied >= info.seq and not lapsed):
                return
            view = await service.runtime.get(thread_id, agent=agent)
            if view.status == "running":
                return  # run on meanwhile: its settle tells it
            await self.settled(view)  # (only notices retried since it was told: none)
        except ThreadNotFound:  # deleted or pruned since: nothing to tell any more
            await asyncio.to_thread(self.targets.forget, thread_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("thread %s: its replies were not caught up: %s", thread_id, exc)

    def payload(self, view: ThreadView) -> dict[str, Any]:
        return {"type": "thread.settled", "thread": view.to_json(), "link": self.link(view.id)}

    async def _send_webhook(self, view: ThreadView, url: str) -> None:
        body = json.dumps(self.payload(view), ensure_ascii=False, default=str).encode("utf-8")
        message_id = reply_id(view)
        for delay in (0.0, *self.delays):
            await asyncio.sleep(delay)
            # checked again before each attempt (a name may resolve elsewhere by now), and
            # sent to the address checked, not to what the name resolves to a moment later
            address = await asyncio.to_thread(check_webhook_host, url, self.webhook_hosts)
            headers = standard_webhook_headers(message_id, body, time.time(), self.key)
            try:
                await asyncio.to_thread(_post_json, WEBHOOK, url, body, headers, address)
                return
            except NotifyError as exc:
                failure = exc
        raise failure

    def close(self) -> None:
        self.targets.close()


async def _outlasting(running: asyncio.Future[Any]) -> Any:
    """The result of `running` (work in a worker thread, which goes on whatever happens
    here), waited for through any further cancellation of this task; None when it
    failed (logged: a claim it made lapses)."""
    while not running.done():
        try:
            await asyncio.shield(running)
        except asyncio.CancelledError:
            continue  # this task was cancelled again: the work goes on all the same
        except Exception:
            break  # said below
    if running.cancelled():
        return None
    if running.exception() is not None:
        log.warning("a write to the reply targets failed: %s", running.exception())
        return None
    return running.result()


def reply_id(view: ThreadView) -> str:
    """The `webhook-id` of a reply: one per thread and point in it (`msg_` + 32 hex), the
    same on every attempt, so a receiver can drop a duplicate; a notice retried since
    (`Notified`) does not make it another point."""
    digest = hashlib.sha256(f"{view.id}\n{_settled_seq(view)}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def check_webhook_url(url: str) -> None:
    """`BadInput` unless `url` is an absolute http(s) URL of at most MAX_URL characters; a
    bracketed host is an IPv6 literal (a zone written `%25zone`, RFC 6874)."""
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        if ok and parts.netloc.rpartition("@")[2].startswith("["):
            # urlsplit lets an IPvFuture `[v1.x]` through: only an IPv6 address is a host.
            ipaddress.IPv6Address((parts.hostname or "").replace("%25", "%", 1))
    except ValueError:
        ok = False
    if not ok or len(url) > MAX_URL or not url.isprintable() or " " in url:
        raise BadInput("`webhook` must be an absolute http:// or https:// URL")


def _settled_seq(view: ThreadView) -> int:
    """The view's seq without the `Notified` events after its last other event: a
    notice the sweep retried (it tells no `on_settled`) does not make a reply due."""
    seq = view.seq
    if len(view.log) != seq:  # (a view without its log)
        return seq
    while seq > 0 and isinstance(view.log[seq - 1], Notified):
        seq -= 1
    return seq


def check_webhook_host(url: str, allowed: frozenset[str] | None) -> str | None:
    """`Forbidden` (403) unless the server may POST to `url`'s host (an SSRF guard: a token
    holder names the URL). With `[tool.twelvefold.server] webhook_hosts` (`allowed`,
    lowercase host names or IP literals) the host must be one of them, and nothing else is
    checked. Without it, every address the host resolves to must be a public (global
    unicast) one: loopback, private (RFC 1918, RFC 4193), link-local (cloud metadata at
    169.254.169.254), shared, reserved and multicast addresses are refused, and so is a
    host that does not resolve. Returns the address to send to (the first checked: a
    send connects to it rather than resolving the name again, which could give another),
    or None with `webhook_hosts` (the name is trusted, and resolved as usual). Blocking
    (DNS): call it off the event loop where it matters."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    if allowed is not None:
        if host not in allowed:
            raise Forbidden(
                f"`webhook` host {host!r} is not in [tool.twelvefold.server] webhook_hosts"
            )
        return None
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise Forbidden(f"`webhook` host {host!r} does not resolve") from None
    addresses = [str(sockaddr[0]).split("%", 1)[0] for *_, sockaddr in found]
    if not addresses or not all(is_public(ipaddress.ip_address(a)) for a in addresses):
        raise Forbidden(
            f"`webhook` host {host!r} is not a public address; name it in"
            " [tool.twelvefold.server] webhook_hosts to allow it"
        )
    return addresses[0]


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
"""The well-known NAT64 prefix (RFC 6052): its last 32 bits are the IPv4 address the
gateway forwards to (how a public IPv4 host is reached from an IPv6-only network)."""
_UNCHECKABLE = (
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # NAT64 for local use (RFC 8215)
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible, deprecated (RFC 4291 2.5.5.1)
    ipaddress.IPv6Network("::ffff:0:0:0/96"),  # IPv4-translated (RFC 2765)
    ipaddress.IPv6Network("fec0::/10"),  # site-local, deprecated (RFC 3879)
)
"""IPv6 prefixes whose addresses lead to an IPv4 address in a way that cannot be told from
the address alone, or to a private network: never public."""


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a webhook may be sent to `address`: a global unicast address (Python's
    `is_global`, from IANA's special-purpose registries, RFC 6890), never multicast. An
    IPv6 address that carries an IPv4 one — IPv4-mapped (RFC 4291), NAT64's well-known
    prefix (RFC 6052), 6to4 (RFC 3056) — is judged by the IPv4 address it leads to;
    NAT64 for local use, the IPv4-compatible and IPv4-translated forms and site-local
    addresses never are public (`is_global` calls them global, and each can lead a
    gateway to a private network or the cloud metadata address)."""
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in network for network in _UNCHECKABLE):
            return False
        carried = address.ipv4_mapped or address.sixtofour
        if carried is None and address in _NAT64:
            carried = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if carried is not None:
            return is_public(carried)
    return address.is_global and not address.is_multicast


def webhook_hosts_of(service: Serving) -> frozenset[str] | None:
    """`[tool.twelvefold.server] webhook_hosts` of the served agents' configurations (the
    union; lowercase), or None when none says. `ServeError` naming each file whose
    `webhook_hosts` is not a list of strings (every file's, not the first's)."""
    hosts: set[str] | None = None
    tables, problems = server_tables(service, "server")
    for path, table in tables:
        value = table.get("webhook_hosts")
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(h, str) for h in value):
            problems.append(
                f"{path}: server.webhook_hosts must be a list of host names, not {toml_text(value)}"
            )
            continue
        hosts = (hosts or set()) | {h.lower().rstrip(".") for h in value}
    if problems:
        raise ServeError(*problems)
    return None if hosts is None else frozenset(hosts)


def inbox_link(public_url: str | None, thread_id: str) -> str | None:
    if public_url is None:
        return None
    return f"{public_url.rstrip('/')}/threads/{quote(thread_id, safe='')}"


def check_public_url(url: str, where: str = "the public URL") -> str:
    """`url` if it can prefix links in notices (absolute http(s), nothing that could end
    Slack's `<url|label>` markup); `ServeError` otherwise, saying `where` it was set."""
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or any(c in url for c in "<>|\"' \\")
        or not url.isprintable()
    ):
        raise ServeError(f"{where} must be an absolute http(s) URL, not {toml_text(url)}")
    return url.rstrip("/")


def public_url_of(service: Serving, environ: Mapping[str, str] | None = None) -> str | None:
    """The server's public URL: TWELVEFOLD_PUBLIC_URL (what `--public-url` sets), else
    `[tool.twelvefold.server] public_url` of the first of the served agents'
    configurations that sets one; None when neither says. `ServeError` for one that
    cannot be used, naming where it was set."""
    env = os.environ if environ is None else environ
    found = env.get("TWELVEFOLD_PUBLIC_URL") or None
    if found is not None:
        return check_public_url(found, "the public URL (TWELVEFOLD_PUBLIC_URL or --public-url)")
    tables, problems = server_tables(service, "server")
    for path, table in tables:  # each file's is checked; the first file's is used
        value = table.get("public_url")
        if value is None:
            continue
        if not isinstance(value, str):
            problems.append(f"{path}: server.public_url must be a string, not {toml_text(value)}")
            continue
        try:
            checked = check_public_url(value, f"{path}: server.public_url")
        except ServeError as exc:
            problems.extend(exc.problems)
            continue
        found = checked if found is None else found
    if problems:
        raise ServeError(*problems)
    return found


def server_tables(
    service: Serving, name: str
) -> tuple[list[tuple[Path | None, Mapping[str, Any]]], list[str]]:
    """`[tool.twelvefold.NAME]` of each configuration the served agents use (each file
    once), with the file it is in; and a problem for each configuration that cannot be
    read or whose NAME is not a table (every file is read: one file's problem does not
    hide another's)."""
    tables: list[tuple[Path | None, Mapping[str, Any]]] = []
    problems: list[str] = []
    seen: set[Path | None] = set()
    for agent in service.agents.values():
        try:
            config = find_config(agent.directory or Path.cwd())
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        if config.path in seen:
            continue
        seen.add(config.path)
        table = config.settings.get(name)
        if table is None:
            continue
        if not isinstance(table, Mapping):
            problems.append(
                f"{config.path}: [tool.twelvefold.{name}] must be a table, not {toml_text(table)}"
            )
            continue
        tables.append((config.path, table))
    return tables, list(dict.fromkeys(problems))


_REPLIES: weakref.WeakKeyDictionary[Service, Replies] = weakref.WeakKeyDictionary()


def replies(service: Service, environ: Mapping[str, str] | None = None) -> Replies:
    """The one `Replies` of `service`, made (and registered with `on_settled`) on first
    use, with the public URL and TWELVEFOLD_WEBHOOK_SECRET from the environment and
    configuration. `ServeError` for a public URL or secret that cannot be used."""
    made = _REPLIES.get(service)
    if made is None:
        env = os.environ if environ is None else environ
        try:
            made = Replies(
                service,
                public_url=public_url_of(service, env),
                webhook_secret=env.get("TWELVEFOLD_WEBHOOK_SECRET") or None,
                webhook_hosts=webhook_hosts_of(service),
            )
        except ValueError as exc:
            raise ServeError(f"TWELVEFOLD_WEBHOOK_SECRET: {exc}") from None
        _REPLIES[service] = made
        service.on_settled(made.settled)
    return made
