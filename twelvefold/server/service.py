"""The server's one place that decides who may do what, and that talks to the runtime.

The HTTP API, the inbox and Slack all call a `Service`; none of them touches the runtime
or judges a permission on its own. Every caller is a person (`Caller`, from a token or a
signed-in session). The policy (docs/server.md, "Who may do what"), read from the
agent's configuration (runtime/config.py) at each call, so a change applies at once:

- launch and read: anyone, unless `[tool.twelvefold.server] launchers` / `readers` name
  groups (of `[tool.twelvefold.approvers]`) that narrow it;
- decide an approval that names `approvers`: only a member of those groups; the server
  refuses a decision when one of them is not defined (the CLI only warns);
- decide an approval naming no approvers, or answer a question: a member of the
  `default_approvers` groups when that is set, else anyone;
- four eyes: nobody approves a request on a thread they launched, unless
  `allow_self_approval = true` (who launched a thread is kept in `server_launches`; a
  fork, wherever it was made, and a sub-agent's thread count as launched by whoever
  launched any thread they came from, as their logs say);
- retry, fork and cancel: whoever may decide the thread's pending request, or a member
  of the `default_approvers` groups, or (without that setting) of any approvers group;
  anyone when the configuration defines no group at all.

Work runs in the background (`Runner`): a launch or a decision is recorded at once (so a
refusal comes back at once) and the thread runs on as an asyncio task, at most
`concurrency` at a time, each under the runtime's ownership lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import re
import secrets
import sqlite3
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from twelvefold.runtime.api import (
    ApprovedWork,
    AsyncRuntime,
    Expiry,
    InputError,
    NotAnApprover,
    NotWaiting,
    RequestNotPending,
    ThreadView,
    TimedOut,
    UnenforcedApprovers,
    came_from,
    not_reached,
    shown,
)
from twelvefold.runtime.config import CONFIG_FILE, Config, ConfigError, find_config, toml_text
from twelvefold.runtime.integrity import LogError
from twelvefold.runtime.lease import LEASE_RETRY_SECONDS, LeaseError, LeaseHeld, LeaseLost
from twelvefold.runtime.loading import AgentLoadError, require_templates
from twelvefold.runtime.loop import Agent, Thread, retry_due
from twelvefold.runtime.store import (
    Conflict,
    DamagedRow,
    SqliteStore,
    StoreError,
    ThreadInfo,
    ThreadNotFound,
    now_iso,
    shown_url,
)
from twelvefold.runtime.terminal import one_line
from twelvefold.runtime.types import Event, IllegalEvent, Notified, Status
from twelvefold.runtime.usage import Totals, by_thread
from twelvefold.runtime.usage import with_children as children_added
from twelvefold.server.tables import Table, place_of

if TYPE_CHECKING:
    from twelvefold.server.queue import Queue

log = logging.getLogger("twelvefold.server")


def said_if_failed(logger: logging.Logger, view: ThreadView) -> None:
    """One line in the server's (or worker's) log when a run ended with its thread failed
    (a model that could not answer, a cassette with no answer, a tool's error with no
    `on error`): whoever watches the log sees it; the thread's log holds the rest."""
    if view.status == "failed":
        logger.warning(
            "thread %s failed at `%s`: %s (`twelvefold show %s`)",
            view.id, one_line(view.step), one_line(str(view.error)), view.id,
        )  # fmt: skip


T = TypeVar("T")
Decision = Literal["approve", "reject", "answer"]


@dataclass
class RunnerCounts:
    """What the background runner is doing, for /metrics (metrics.py)."""

    in_flight: int = 0
    """Runs holding a `concurrency` slot now."""
    queued: int = 0
    """Runs waiting for a slot."""
    lease_waits: int = 0
    """Runs that found the thread's lease held (by another process, or by a call of this
    one recording an event) and waited for it to be let go or to lapse."""
    takeovers: int = 0
    """Runs that stopped because another process took the thread over."""
    rate_limited: int = 0
    """Runs waiting for their turn at a rate limit (holding no slot)."""


FIRST_LEASE_RETRY_SECONDS = 0.05
"""How soon a run that found its thread's lease held asks again; each further wait is
twice as long, up to `LEASE_RETRY_SECONDS`."""


_HOLDS_SLOT: contextvars.ContextVar[bool] = contextvars.ContextVar("holds_slot", default=False)
"""Set in a runner's task while it holds a `concurrency` slot (see `Service._lend_slot`)."""


Settled = Callable[[ThreadView], Awaitable[None]]


@dataclass(frozen=True)
class Caller:
    """Who calls: a person, and where the call came from."""

    person: str
    via: str
    """"http", "inbox" or "slack"."""
    credential: str | None = None
    """Which token (its id) or account it came through; recorded with a decision."""

    @property
    def recorded_via(self) -> str:
        """How a decision records where it came from: `http (token 1a2b3c4d)`."""
        return self.via if self.credential is None else f"{self.via} ({self.credential})"


class ServiceError(Exception):
    """A call the service refuses; `status` is the HTTP status, `title` a short summary
    (RFC 9457 problem details), `detail` one line for a person."""

    status = 400
    title = "Bad request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Unauthorized(ServiceError):
    """No credentials, or ones that name nobody (the API answers with
    `WWW-Authenticate: Bearer`, RFC 6750)."""

    status, title = 401, "Unauthorized"


class NotFound(ServiceError):
    status, title = 404, "Not found"


class Forbidden(ServiceError):
    status, title = 403, "Forbidden"


class Stale(ServiceError):
    status, title = 409, "Request not pending"


class Late(ServiceError):
    """A decision or an outside event after its wait's timeout: the timeout's outcome
    was recorded instead (runtime `TimedOut`)."""

    status, title = 409, "Request timed out"


class Busy(ServiceError):
    status, title = 409, "Thread busy"


class WrongState(ServiceError):
    status, title = 409, "Not possible now"


class BadInput(ServiceError):
    status, title = 422, "Invalid input"


class Unavailable(ServiceError):
    """A 503: the store, an agent or the configuration cannot be used now. Made only from
    the error that says why, never from words: its detail is always `unavailable_detail`'s
    (every path and URL cut, the whole error in the server's log under a reference), so
    no 503 can name what only the operator may read."""

    status, title = 503, "Unavailable"

    def __init__(self, cause: BaseException) -> None:
        super().__init__(unavailable_detail(cause))


class ShuttingDown(Exception):
    """A launch while the server stops (a 503)."""

    def __init__(self) -> None:
        super().__init__("the server is shutting down; launch again in a moment")


class TooManyAttempts(ServiceError):
    """Too many failed sign-ins or bad tokens from one client (server/throttle.py); the
    problem carries `Retry-After: retry_after` (seconds)."""

    status, title = 429, "Too many requests"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"too many failed attempts from this address; try again in {retry_after} s"
        )
        self.retry_after = retry_after


@dataclass(frozen=True)
class Policy:
    """`[tool.twelvefold.server]` and the approvers groups, as one configuration says."""

    config: Config
    groups: Mapping[str, tuple[str, ...]]
    default_approvers: tuple[str, ...] = ()
    allow_self_approval: bool = False
    launchers: tuple[str, ...] | None = None
    readers: tuple[str, ...] | None = None

    @classmethod
    def read(cls, folder: Path) -> Policy:
        """The policy for an agent in `folder`, read now. `ConfigError` (naming the file,
        for the operator) when the configuration cannot be read or has the wrong shape."""
        try:
            config = _governing(folder, find_config(folder))
            return cls(config, config.approvers, *server_settings(config))
        except ConfigError as exc:
            raise ConfigError(f"the server's configuration cannot be used: {exc}") from None

    @classmethod
    def at(cls, folder: Path) -> Policy:
        """`read`, for a call: `Unavailable` (a 503) when the configuration cannot be used."""
        try:
            return cls.read(folder)
        except ConfigError as exc:
            raise Unavailable(exc) from None

    def member(self, person: str, names: Sequence[str]) -> bool:
        """Whether `person` is in one of the groups `names` (an undefined group: nobody)."""
        return any(person in self.groups.get(name, ()) for name in names)

    def may_operate(self, person: str) -> bool:
        """Retry, fork and cancel (besides deciding the pending request)."""
        if self.default_approvers:
            return self.member(person, self.default_approvers)
        if not self.groups:
            return True
        return self.member(person, list(self.groups))


_GOVERNED_BY: dict[Path, tuple[Path, bool]] = {}
"""The configuration file each agent folder's policy was last read from (this process),
and whether it held any setting then."""


def _governing(folder: Path, config: Config) -> Config:
    """`config`, found for `folder`, unless the file that configured the folder's policy
    before is gone, or holds no setting where it held some: then `ConfigError`. Either is
    how a save looks while it is under way (an editor deletes the file and writes it
    again, or empties it and writes it in place); read as it is, the search would go on
    to a parent's file or the defaults (anyone with a token launches and decides). The
    server refuses instead, until the file is back or the server restarts without it."""
    before = _GOVERNED_BY.get(folder)
    if before is not None:
        path, had_settings = before
        # Another file configures the folder now: one the search reads first (nearer the
        # agent, or twelvefold.toml beside a pyproject.toml) is new and governs, as it
        # would after a restart; none, or one read after it, means it stopped counting.
        found = config.path
        first = found is not None and (
            (found.parent != path.parent and found.parent.is_relative_to(path.parent))
            or (found.parent == path.parent and found.name == CONFIG_FILE)
        )
        if found != path and not first:
            raise ConfigError(
                f"{path}, which configured this server, is gone or holds no settings of"
                " twelvefold now; put them back (save the file by replacing it in one"
                " rename) or restart the server to go on without it"
            )
        if config.path == path and had_settings and not config.settings:
            raise ConfigError(
                f"{path}, which configured this server, is empty now; write it again (save"
                " it by replacing it in one rename) or restart the server to go on without it"
            )
    if config.path is not None:
        _GOVERNED_BY[folder] = (config.path, bool(config.settings))
    return config


def server_settings(
    config: Config,
) -> tuple[tuple[str, ...], bool, tuple[str, ...] | None, tuple[str, ...] | None]:
    """`[tool.twelvefold.server]`'s default_approvers, allow_self_approval, launchers and
    readers (the policy beside the approvers groups); `ConfigError` for one of the wrong
    shape."""
    table = config.settings.get("server", {})
    if not isinstance(table, Mapping):
        raise ConfigError(
            f"{config.path}: [tool.twelvefold.server] must be a table, not {toml_text(table)}"
        )
    self_approval = table.get("allow_self_approval", False)
    if not isinstance(self_approval, bool):
        raise ConfigError(
            f"{config.path}: server.allow_self_approval must be true or false, "
            f"not {toml_text(self_approval)}"
        )
    return (
        _group_names(config, table, "default_approvers") or (),
        self_approval,
        _group_names(config, table, "launchers"),
        _group_names(config, table, "readers"),
    )


def _group_names(config: Config, table: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ConfigError(
            f"{config.path}: server.{key} must be a group name or a list of them, "
            f"not {toml_text(value)}"
        )
    return tuple(value)


MAX_LINEAGE = 1000
"""How many threads the four-eyes rule follows back from one (forks of forks, sub-agents'
parents): a bound, not a limit anyone should reach."""


class Launches(Table):
    """Who launched each thread through the server (`server_launches`, in the store's
    database): the four-eyes rule needs it. Threads launched elsewhere (the CLI) have
    no launcher here, so the rule does not apply to them. What a thread came from (a fork's
    parent) is in its log (`came_from`), whoever made the fork; a deleted fork's parent
    is kept by the store (`server_forks`, runtime/store.py `delete`)."""

    def record(self, thread_id: str, caller: Caller) -> None:
        self._db.change(
            "INSERT INTO server_launches (thread_id, person, via, at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (thread_id) DO UPDATE SET person = excluded.person,"
            " via = excluded.via, at = excluded.at",
            (thread_id, caller.person, caller.recorded_via, now_iso()),
        )

    def launcher(self, thread_id: str) -> str | None:
        rows = self._db.rows("SELECT person FROM server_launches WHERE thread_id = ?", (thread_id,))
        return None if not rows else str(rows[0][0])

    def kept_parent(self, thread_id: str) -> str | None:
        """The thread a fork was forked from, as kept for a fork since deleted (and as
        the server recorded its own forks before the logs were read for it)."""
        rows = self._db.rows("SELECT parent FROM server_forks WHERE thread_id = ?", (thread_id,))
        return None if not rows else str(rows[0][0])


class Service:
    """The served agents over one runtime, with the policy and the background runner.

    `start()` (in the app's lifespan) picks up threads left running and starts the timer;
    `stop(grace)` stops taking work and lets running steps finish for up to `grace`
    seconds, then cancels the rest (their leases are let go; a restart picks them up)."""

    def __init__(
        self,
        runtime: AsyncRuntime,
        agents: Mapping[str, Agent],
        *,
        concurrency: int = 8,
        sweep_seconds: float = 15.0,
        wait_limit: float = 30.0,
        queue: Queue | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency is at least 1")
        self.runtime = runtime
        self.agents: Mapping[str, Agent] = dict(agents)
        self.sweep_seconds = sweep_seconds
        self.wait_limit = wait_limit
        """The longest `wait` (and `?wait=true`) waits, in seconds."""
        store = runtime.store
        self.store_path: Path | None = store.path if isinstance(store, SqliteStore) else None
        if self.store_path is not None:  # named in store errors: cut from every 503
            resolved = self.store_path.resolve()
            SERVER_PLACES.update({str(self.store_path), str(resolved)})
            if resolved.parent != resolved.parent.parent:  # (never `/` itself)
                SERVER_PLACES.add(str(resolved.parent))
        elif (url := getattr(store, "url", None)) is not None:
            SERVER_PLACES.update({url, shown_url(url)})
        self.database = place_of(store)
        """Where the server's tables go (server/tables.py): the store's database."""
        self.launches = Launches(self.database)
        self._slots = asyncio.Semaphore(concurrency)
        self.runner = RunnerCounts()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._ran: dict[str, asyncio.Future[None]] = {}
        """Each run in `_tasks`: done once it has run (before it tells `on_settled`)."""
        self._settling: set[asyncio.Task[Any]] = set()
        """Runs that have left `_tasks` and are telling `on_settled` (`settling`)."""
        self._draining = asyncio.Event()
        """Set once the server shuts down: every `wait` and stream ends at once (`drain`)."""
        self._turn_waits: set[asyncio.Task[Any]] = set()
        """Runner tasks waiting for their turn at a rate limit (no call started yet)."""
        self._changed: dict[str, asyncio.Event] = {}
        """Set when an event of a followed thread is stored (`follow` waits on it)."""
        self._followers: dict[str, int] = {}
        self._settled: list[Settled] = []
        self._timer: asyncio.Task[None] | None = None
        self.queue = queue
        """With a job queue (a PostgreSQL store: twelvefold/server/queue.py), threads run
        on `twelvefold worker`s: this service records and enqueues, and runs nothing."""
        self._enqueuing: set[asyncio.Task[None]] = set()
        self._opened = contextlib.AsyncExitStack()
        self.stopping = False
        hooked = runtime.engine.on_event

        def announce(thread: Thread, event: Event) -> None:
            if hooked is not None:
                hooked(thread, event)
            self._wake(thread.id)

        runtime.engine.on_event = announce
        runtime.engine.idle = self._lend_slot
        # A tool retry's backoff holds no slot and no lease: the run stops there, and a
        # timer (`_retry_later`, or a worker's retry job) runs the thread on when it is due.
        runtime.engine.wait_out_backoff = False
        self._retries: dict[str, asyncio.TimerHandle] = {}

    # ---- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Run on the threads left `running` (a previous server died or stopped) and
        start the timer that expires waits and retries notices. With a job queue: open
        it, and leave both to the workers (their sweeps and timer jobs)."""
        if self.queue is not None:
            await self._opened.enter_async_context(self.queue.app.open_async())
            return
        for info in await self.runtime.threads("running"):
            if info.agent in self.agents:
                self._submit(info.id)
        if self.sweep_seconds > 0:
            self._timer = asyncio.create_task(self._sweeping())

    async def stop(self, grace: float = 10.0) -> None:
        """Take no more work; wait up to `grace` seconds for running threads to stop at a
        step's end, then cancel them (their leases are let go; `start` on the next
        server runs them on: nothing is lost)."""
        self.stopping = True
        self.drain()
        if self._timer is not None:
            self._timer.cancel()
        for handle in self._retries.values():  # the log keeps them: `start` finds them
            handle.cancel()
        self._retries.clear()
        running = [*self._tasks.values(), *self._settling]
        if running:
            _, late = await asyncio.wait(running, timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=grace)
        if self._enqueuing:
            await asyncio.wait(set(self._enqueuing), timeout=grace)
        await self._opened.aclose()
        self.launches.close()
        close = getattr(self.runtime.engine.model, "aclose", None)
        if close is not None:  # the model client's connection pool belongs to this loop
            with contextlib.suppress(Exception):
                await close()

    def on_settled(self, callback: Settled) -> None:
        """Call `callback(view)` each time a background run of a thread stops (waiting,
        finished, failed or cancelled), and after the timer ran a thread on."""
        self._settled.append(callback)

    # ---- calls --------------------------------------------------------------------

    async def launch(
        self,
        caller: Caller,
        agent: str,
        input: Any,
        *,
        before_run: Callable[[str], None] | None = None,
        thread_id: str | None = None,
    ) -> ThreadView:
        """Store a new thread of `agent` and run it in the background. The view is the
        thread as launched (`running`, one event). `NotFound` for an agent not served,
        `Forbidden` outside `launchers`, `BadInput` for an input that does not fit.
        `before_run(thread_id)` (blocking work such as recording where replies go) runs
        in a worker thread after the launch is recorded and before the thread can run,
        so it cannot miss the run settling. `thread_id` gives the new thread's id (a
        schedule's fire: schedules.py); `Busy` when a thread has it already."""
        served = self._agent(agent)
        policy = Policy.at(_folder(served))
        if policy.launchers is not None and not policy.member(caller.person, policy.launchers):
            raise Forbidden(
                f"only members of {', '.join(policy.launchers)} may launch `{served.name}`"
            )
        if self.stopping:
            raise Unavailable(ShuttingDown())
        with translated():
            view = await self.runtime.launch(served, input, thread_id=thread_id, run=False)

        def recorded(thread_id: str) -> None:
            self.launches.record(thread_id, caller)
            if before_run is not None:
                before_run(thread_id)

        await off_the_loop(recorded, view.id)
        self._submit(view.id)
        return view

    async def wait(self, caller: Caller, thread_id: str, seconds: float) -> ThreadView:
        """The thread once it is not running (or once this server stops running it), or
        as it stands after `seconds` (at most `wait_limit`), or at once when the server
        is shutting down (`drain`). A thread run elsewhere (a worker, another process) or
        not yet (a retry's backoff, a run about to start) is watched in the store."""
        await self._readable(caller, thread_id)
        # Until the run has run, not until it has told `on_settled` too: a webhook reply
        # to a slow or dead receiver (with its retries) must not hold the answer.
        ran = self._ran.get(thread_id)
        limit = max(0.0, min(seconds, self.wait_limit))
        if self.queue is not None or ran is None:
            # No run of it here to wait for: a worker runs it, or another process does,
            # or a tool retry's backoff ends later, or the event this caller sent (a copy
            # of one another request recorded a moment ago) is recorded and its run not
            # started yet. Watch the store; a thread that is not running answers at once.
            await self._until_not_running(thread_id, limit)
        else:
            drained: asyncio.Future[Any] = asyncio.ensure_future(self._draining.wait())
            try:
                either: set[asyncio.Future[Any]] = {ran, drained}
                await asyncio.wait(either, timeout=limit, return_when="FIRST_COMPLETED")
            finally:
                drained.cancel()
        return await self.view(caller, thread_id)

    def drain(self) -> None:
        """Answer every `wait`, now and from now on, with the thread as it stands: the
        server is shutting down (uvicorn's shutdown calls it first). An open `?wait=true`
        request was otherwise cut off once uvicorn's grace for open requests passed (a
        plain-text 500), before `stop` gave the runs theirs."""
        self._draining.set()
        for changed in self._changed.values():  # followers: look now, and end
            changed.set()

    async def view(self, caller: Caller, thread_id: str) -> ThreadView:
        agent = await self._readable(caller, thread_id)
        with translated():
            return await self.runtime.get(thread_id, agent=agent)

    async def threads(
        self, caller: Caller, *, status: Status | None = None, agent: str | None = None
    ) -> list[ThreadInfo]:
        """The threads of the served agents the caller may read, most recent first."""
        with translated():
            found = await self.runtime.threads(status)
        readable = {name for name in self.agents if self._may_read(caller, self.agents[name])}
        return [
            info
            for info in found
            if info.agent in readable and (agent is None or info.agent == agent)
        ]

    async def damaged(self, caller: Caller) -> list[DamagedRow]:
        """The store's damaged thread rows (`DamagedRow`: `threads` leaves them out), for
        a caller who may read every served agent's threads: what a damaged row holds
        cannot say whose it is. Nothing for anyone else."""
        if not all(self._may_read(caller, agent) for agent in self.agents.values()):
            return []
        with translated():
            return await self.runtime.damaged_threads()

    async def usage(self) -> dict[str, Totals]:
        """Each thread's totals by id, its sub-agents' threads added (as `twelvefold
        threads` shows them; runtime/usage.py), read from the stored rows. Filter by
        what the caller may read (`threads`) before showing any."""
        store = self.runtime.engine.store
        # Every store of the runtime's has both (the `EventStore` protocol does not ask
        # them of other implementations): one without them reports no usage.
        records = getattr(store, "usage_records", None)
        links = getattr(store, "child_links", None)
        if records is None or links is None:
            return {}

        def read() -> dict[str, Totals]:
            return children_added(by_thread(records()), links())

        with translated():
            return await off_the_loop(read)

    async def events(self, caller: Caller, thread_id: str, *, after: int = 0) -> list[Event]:
        """The thread's events after the first `after`."""
        agent = await self._readable(caller, thread_id)
        with translated():
            events = await self.runtime.events(thread_id, agent=agent)
        return events[max(0, after) :]

    async def follow(
        self,
        caller: Caller,
        thread_id: str,
        *,
        after: int = 0,
        still_allowed: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncIterator[tuple[int, Event]]:
        """Each event after the first `after` as `(seq, event)` (seq counts from 1), as it
        is appended; ends once the thread is not running and this server is not running
        it. Raises the same errors as `events` before the first event.

        Whether the caller may still read the thread is asked again each time it looks
        (`readers` may have changed), and so is `still_allowed` (the API's: is the token
        still live?): before any event is sent, the `ServiceError` that says why not ends
        the iteration, so a revoked token or a reader taken out reads nothing more."""
        agent = await self._readable(caller, thread_id)
        seen = max(0, after)
        changed = self._changed.setdefault(thread_id, asyncio.Event())
        self._followers[thread_id] = self._followers.get(thread_id, 0) + 1
        try:
            while True:
                changed.clear()
                active = thread_id in self._tasks
                with translated():
                    thread = await self.runtime.engine.load(agent, thread_id)
                await self._readable(caller, thread_id)
                if still_allowed is not None:
                    await still_allowed()
                for seq, event in enumerate(thread.events[seen:], start=seen + 1):
                    yield seq, event
                seen = max(seen, len(thread.events))
                if (thread.state.status != "running" and not active) or self._draining.is_set():
                    return  # (at a shutdown too: uvicorn waits for open streams)
                with contextlib.suppress(TimeoutError):  # another process may append
                    await asyncio.wait_for(changed.wait(), timeout=1.0)
        finally:  # the last follower of a thread lets its wake-up event go
            self._followers[thread_id] -= 1
            if not self._followers[thread_id]:
                del self._followers[thread_id]
                self._changed.pop(thread_id, None)

    async def decide(
        self,
        caller: Caller,
        thread_id: str,
        *,
        request: str,
        decision: Decision,
        comment: str | None = None,
        answer: str | None = None,
    ) -> ThreadView:
        """Record a decision at once and run the thread on in the background. The view
        is the thread just after the decision (usually `running`). `Stale` when `request`
        is not the pending request, `Forbidden` when the caller may not decide it,
        `BadInput` for a decision of the wrong kind, `Busy` while a process advances it."""
        agent = await self._readable(caller, thread_id)
        with translated():
            current = await self.runtime.get(thread_id, agent=agent)
        if current.request != request:
            place = not_reached(request, current.seq)
            how = f"not pending yet (it has not reached {place})" if place else "no longer pending"
            raise Stale(
                f"request `{shown(request)}` of thread {thread_id} is {how}"
                + (f"; the pending request is `{current.request}`" if current.request else "")
            )
        if decision == "answer" and answer is None:
            raise BadInput("an answer needs `answer`")
        if decision != "answer" and answer is not None:
            raise BadInput("`answer` goes only with decision `answer`")
        await self._check_decider(caller, current, approving=decision != "reject")
        with translated(), self._run_on_timeout(thread_id), warnings.catch_warnings():
            warnings.simplefilter("ignore", UnenforcedApprovers)  # refused above
            view = await self.runtime.resume(
                thread_id,
                approve=decision == "approve",
                reject=decision == "reject",
                answer=answer,
                comment=comment,
                by=caller.person,
                request=request,
                via=caller.recorded_via,
                agent=agent,
                run=False,
            )
        self._submit(thread_id)
        return view

    async def send(
        self,
        caller: Caller,
        thread_id: str,
        *,
        type: str,
        value: Any,
        request: str | None = None,
        idempotency_key: str | None = None,
    ) -> ThreadView:
        """Deliver an outside event to a thread's `wait` (runtime `AsyncRuntime.send`) and
        run it on in the background. Who may: whoever may decide the thread's pending
        request (a wait names no approvers, so the `default_approvers` rule). Refusals:
        `BadInput` (422) for a type the agent does not declare or a value of the wrong
        shape, `WrongState` (409) when the thread does not wait for that type now, `Stale`
        (409) for a `request` that is not pending, `Busy` while a process advances it. A
        duplicate `idempotency_key` is dropped: the view as it stands, nothing recorded."""
        agent = await self._readable(caller, thread_id)
        with translated():
            current = await self.runtime.get(thread_id, agent=agent)
        if current.waiting_for == "event":
            await self._check_decider(caller, current, approving=False)
        with translated(), self._run_on_timeout(thread_id):
            view = await self.runtime.send(
                thread_id, type, value, request=request, idempotency_key=idempotency_key,
                by=caller.person, via=caller.recorded_via, agent=agent, run=False,
            )  # fmt: skip
        if view.seq != current.seq:  # recorded (a dropped duplicate changes nothing)
            self._submit(thread_id)
        return view

    @contextlib.contextmanager
    def _run_on_timeout(self, thread_id: str) -> Iterator[None]:
        """A decision refused as too late recorded its timeout's outcome: run the thread
        on from there in the background, as after the sweep's."""
        try:
            yield
        except TimedOut:
            self._submit(thread_id)
            raise

    async def retry(self, caller: Caller, thread_id: str, *, reuse_key: bool = False) -> ThreadView:
        """Record a retry of a failed thread and run it in the background."""
        agent = await self._operable(caller, thread_id)
        with translated():
            view = await self.runtime.retry(
                thread_id, by=caller.person, reuse_key=reuse_key, agent=agent, run=False
            )
        self._submit(thread_id)
        return view

    async def fork(self, caller: Caller, thread_id: str, *, at: int) -> ThreadView:
        """A new thread from the first `at` events (the caller is its launcher for the
        four-eyes rule). It does not run, now or after a restart: it waits for its own
        request, or, made between steps, is held (`failed`, `ForkHeld`) until retried."""
        agent = await self._operable(caller, thread_id)
        with translated():
            fork_id = await self.runtime.fork(thread_id, at, agent=agent)
            # Its parent is in its log (`Forked`), as for a fork made anywhere else.
            await off_the_loop(self.launches.record, fork_id, caller)
            return await self.runtime.get(fork_id, agent=agent)

    async def cancel(self, caller: Caller, thread_id: str, *, reason: str) -> ThreadView:
        agent = await self._operable(caller, thread_id)
        stopped = await self._stop_turn_wait(thread_id)
        try:
            with translated():
                view = await self.runtime.cancel(
                    thread_id, reason=reason, by=caller.person, via=caller.recorded_via,
                    agent=agent,
                )  # fmt: skip
        except BaseException:
            if stopped:
                self._submit(thread_id)  # not cancelled after all: run it on
            raise
        await self._notify_settled(view)
        return view

    async def _stop_turn_wait(self, thread_id: str) -> bool:
        """Stop this server's run of the thread if it is waiting for its turn at a rate
        limit (it has started no call: nothing is lost), so that a cancel need not wait
        for the turn (up to 10 minutes) for the lease. True when a run was stopped."""
        task = self._tasks.get(thread_id)
        if task is None or task not in self._turn_waits:
            return False
        task.cancel()  # at its wait: no await between the check and here
        await asyncio.wait({task}, timeout=max(1.0, self.wait_limit))
        return True

    async def pending(self, caller: Caller) -> list[ThreadView]:
        """The waiting threads whose request the caller may decide, most recent first."""
        found: list[ThreadView] = []
        for info in await self.threads(caller, status="waiting"):
            try:
                view = await self.runtime.get(info.id, agent=self.agents[info.agent])
            except Exception as exc:  # one damaged thread must not hide the others
                log.warning("thread %s cannot be shown: %s", info.id, exc)
                continue
            # A wait for an outside event or a sleep is no person's to decide.
            asks_a_person = view.waiting_for in ("approval", "answer")
            if asks_a_person and view.request is not None and await self.may_decide(caller, view):
                found.append(view)
        return found

    async def may_decide(self, caller: Caller, view: ThreadView) -> bool:
        """Whether the caller may move the thread's pending request on (approve it or
        answer it); rejecting is also allowed to the thread's own launcher."""
        try:
            await self._check_decider(caller, view, approving=True)
        except ServiceError:
            return False
        return True

    # ---- policy -------------------------------------------------------------------

    async def _check_decider(self, caller: Caller, view: ThreadView, *, approving: bool) -> None:
        if view.status != "waiting" or view.request is None:
            raise Stale(f"thread {view.id} is {view.status}: no request is pending")
        agent = self._agent(view.agent)
        policy = Policy.at(_folder(agent))
        approvers = _approvers(agent, view)
        person = caller.person
        if approvers:
            undefined = [group for group in approvers if group not in policy.groups]
            if undefined:
                raise Forbidden(
                    f"`{view.step}` names approvers {', '.join(undefined)} that the server's "
                    "configuration does not define: nobody may decide it here (define them "
                    "under [tool.twelvefold.approvers])"
                )
            if not policy.member(person, approvers):
                raise Forbidden(
                    f"`{view.step}` may be decided only by a member of {', '.join(approvers)}"
                    f"; `{shown(person)}` is not one"
                )
        elif policy.default_approvers and not policy.member(person, policy.default_approvers):
            raise Forbidden(
                "requests without approvers are decided by members of the default "
                f"approvers {', '.join(policy.default_approvers)}; `{shown(person)}` is not one"
            )
        if (
            approving
            and view.waiting_for == "approval"
            and not policy.allow_self_approval
            and person in await self._launchers(view)
        ):
            raise Forbidden(
                f"`{shown(person)}` launched thread {view.id} and may not approve it too "
                "(four eyes; [tool.twelvefold.server] allow_self_approval = true allows it)"
            )

    async def _launchers(self, view: ThreadView) -> set[str]:
        """Who launched the thread or any thread it came from: a fork holds its parent's
        events (and the request they led to), a sub-agent's request is part of its
        root's work, so whoever launched any of them may not approve it (four eyes).

        What a thread came from is read from its log (`came_from`: each `Forked`, and a
        sub-agent's `Started`), which every fork writes wherever it was made (the CLI,
        the Python API, this server), and from the logs of those threads in turn; a
        thread deleted since is followed through what the store kept of it
        (`server_forks`). At most MAX_LINEAGE threads are followed back."""
        people: set[str] = set()
        seen: set[str] = set()
        todo: list[tuple[str, Sequence[Event] | None]] = [(view.id, view.log or None)]
        while todo and len(seen) < MAX_LINEAGE:
            thread_id, log = todo.pop()
            if thread_id in seen:
                continue
            seen.add(thread_id)
            if log is None:
                try:
                    log = await self.runtime.events(thread_id)
                except Exception:  # gone (pruned) or unreadable: what was kept of it binds
                    log = ()
            person, kept = await off_the_loop(self._launch_rows, thread_id)
            if person is not None:
                people.add(person)
            before = came_from(log) + ([kept] if kept is not None else [])
            todo.extend((parent, None) for parent in before if parent not in seen)
        return people

    def _launch_rows(self, thread_id: str) -> tuple[str | None, str | None]:
        """Who launched `thread_id` here, and the parent kept for it if it was a fork."""
        return self.launches.launcher(thread_id), self.launches.kept_parent(thread_id)

    def may_read(self, caller: Caller, agent: str) -> bool:
        """Whether the caller may read the threads of the served agent named `agent`."""
        found = self.agents.get(agent)
        return found is not None and self._may_read(caller, found)

    def _may_read(self, caller: Caller, agent: Agent) -> bool:
        policy = Policy.at(_folder(agent))
        return policy.readers is None or policy.member(caller.person, policy.readers)

    async def _readable(self, caller: Caller, thread_id: str) -> Agent:
        """The served agent of a thread the caller may read; `NotFound` otherwise (a
        thread of another agent, or one the caller may not read, is not shown)."""
        with translated():
            info = await self.runtime.info(thread_id)
        agent = self.agents.get(info.agent)
        if agent is None or not self._may_read(caller, agent):
            raise NotFound(f"no thread {shown(thread_id)} here")
        return agent

    async def _operable(self, caller: Caller, thread_id: str) -> Agent:
        agent = await self._readable(caller, thread_id)
        policy = Policy.at(_folder(agent))
        if policy.may_operate(caller.person):
            return agent
        with translated():
            view = await self.runtime.get(thread_id, agent=agent)
        if view.request is not None and await self.may_decide(caller, view):
            return agent
        raise Forbidden(
            f"`{shown(caller.person)}` may not retry, fork or cancel thread {thread_id} "
            "(that needs the right to decide its requests)"
        )

    def _agent(self, name: str) -> Agent:
        agent = self.agents.get(name)
        if agent is None:
            raise NotFound(f"this server serves no agent `{shown(name)}`")
        return agent

    # ---- the background runner -----------------------------------------------------

    def _submit(self, thread_id: str) -> None:
        """Run the thread on in the background (once: a run already under way or
        queued covers it); with a job queue, enqueue a wake-up for the workers."""
        if self.queue is not None:
            self._enqueue(thread_id)
            return
        if self.stopping or thread_id in self._tasks:
            return
        self._ran[thread_id] = asyncio.get_running_loop().create_future()
        self._tasks[thread_id] = asyncio.create_task(
            self._run(thread_id), name=f"thread {thread_id}"
        )

    def _enqueue(self, thread_id: str) -> None:
        """A wake-up for the workers, sent in the background. If it is lost (the database
        went away), the thread stays `running` in the store and the workers' sweep wakes
        it: nothing is lost, it only starts later."""
        assert self.queue is not None
        queue = self.queue

        async def send() -> None:
            try:
                await queue.wake(thread_id)
            except Exception as exc:
                log.warning("thread %s: the wake-up was not enqueued (%s); a worker's "
                            "sweep picks the thread up", thread_id, exc)  # fmt: skip

        task = asyncio.create_task(send(), name=f"enqueue {thread_id}")
        self._enqueuing.add(task)
        task.add_done_callback(self._enqueuing.discard)

    async def _until_not_running(self, thread_id: str, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline and not self._draining.is_set():
            if (await self.runtime.info(thread_id)).status != "running":
                return
            await asyncio.sleep(min(0.2, max(0.0, deadline - loop.time())))

    async def _run(self, thread_id: str) -> None:
        view: ThreadView | None = None
        runner = self.runner
        try:
            await self._take_slot()
            holding = _HOLDS_SLOT.set(True)
            try:
                pause, held_before = FIRST_LEASE_RETRY_SECONDS, False
                while not self.stopping:
                    try:
                        info = await self.runtime.info(thread_id)
                        agent = self.agents[info.agent]
                        view = await self.runtime.resume(thread_id, agent=agent)
                        break
                    except LeaseHeld as held:
                        # Most often held for a moment: a decision, a signal or a copy of
                        # one (a webhook sent twice at once) taking the thread to record its
                        # event, in this process or another. Ask again soon, not when the
                        # lease would lapse (30 s, and `wait`, so every `?wait=true` answer,
                        # waits for this run); a dead holder's lease lapses all the same.
                        if not held_before:  # said and counted once a run
                            log.info("%s", held)
                            runner.lease_waits += 1
                            held_before = True
                        await asyncio.sleep(min(pause, _seconds_until(held.until)))
                        pause = min(2 * pause, LEASE_RETRY_SECONDS)
                    except (LeaseLost, Conflict) as exc:  # another process took over
                        log.warning("%s", exc)
                        runner.takeovers += 1
                        break
            finally:
                if _HOLDS_SLOT.get():  # not if a cancel stopped its wait for a turn
                    runner.in_flight -= 1
                    self._slots.release()
                _HOLDS_SLOT.reset(holding)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("thread %s stopped on an error (it stays as its log says)", thread_id)
        finally:
            self._tasks.pop(thread_id, None)
            ran = self._ran.pop(thread_id, None)
            if ran is not None:
                ran.set_result(None)
            self._wake(thread_id)
        if view is None:
            return
        said_if_failed(log, view)
        due = retry_due(view.log) if view.status == "running" else None
        if due is not None:  # a tool retry's backoff: the thread has not settled
            self._retry_later(thread_id, due)
            return
        # Out of `_tasks` already (a new decision must start a new run), but `stop` still
        # waits for it: a reply cut off here was claimed and would never be sent.
        task = asyncio.current_task()
        assert task is not None
        self._settling.add(task)
        try:
            await self._notify_settled(view)
        finally:
            self._settling.discard(task)

    async def settling(self) -> None:
        """Wait until the runs that have ended so far have told every `on_settled`
        callback (replies, Slack). A run's `?wait=true` answer can come first: it leaves
        the table of runs before it tells them."""
        while self._settling:
            await asyncio.wait(set(self._settling))

    def _retry_later(self, thread_id: str, due: float) -> None:
        """Run the thread on at `due` (Unix seconds), when a tool retry's backoff ends.
        The wait is in the thread's log (`AttemptFailed`), so a restarted server finds it
        again (`start` runs every `running` thread, which stops at once when not due)."""
        if self.stopping:
            return
        previous = self._retries.pop(thread_id, None)
        if previous is not None:
            previous.cancel()

        def due_now() -> None:
            self._retries.pop(thread_id, None)
            self._submit(thread_id)

        delay = max(0.0, due - time.time())
        self._retries[thread_id] = asyncio.get_running_loop().call_later(delay, due_now)

    @contextlib.asynccontextmanager
    async def _lend_slot(self) -> AsyncIterator[None]:
        """While a run waits for its turn at a rate limit (runtime/ratelimit.py), its
        `concurrency` slot runs another thread; it takes a slot again to go on. The
        thread keeps its lease meanwhile (renewed in the background): it is still this
        process's, and another process taking it over would only wait for the same turn.
        A call outside the runner (which holds no slot) lends nothing."""
        if not _HOLDS_SLOT.get():
            yield
            return
        runner = self.runner
        self._slots.release()
        runner.in_flight -= 1
        runner.rate_limited += 1
        task = asyncio.current_task()
        assert task is not None
        self._turn_waits.add(task)
        stopped = False
        try:
            yield
        except asyncio.CancelledError:
            # A cancel (or the server stopping) ends the run here: it takes no slot again.
            stopped = True
            _HOLDS_SLOT.set(False)
            raise
        finally:
            self._turn_waits.discard(task)
            runner.rate_limited -= 1
            if not stopped:
                await self._take_slot()

    async def _take_slot(self) -> None:
        """Wait for a `concurrency` slot (counted as queued meanwhile), then hold it."""
        self.runner.queued += 1
        try:
            await self._slots.acquire()
        finally:
            self.runner.queued -= 1
        self.runner.in_flight += 1

    async def _notify_settled(self, view: ThreadView) -> None:
        try:
            await self.tell_settled(view)
        except Exception as exc:
            if not _expected_reply_failure(exc):
                log.exception("an on_settled callback failed for thread %s", view.id)
                return
            # A receiver down or answering an error: expected, one line (its text escaped,
            # a receiver's words among it), no traceback; tried again at the thread's
            # next settle or the server's next start.
            log.warning(
                "replies for thread %s not sent: %s",
                one_line(view.id),
                one_line(f"{type(exc).__name__}: {exc}"),
            )

    async def tell_settled(self, view: ThreadView) -> None:
        """Call every `on_settled` callback with `view` (each one, whatever the others
        do); then raise the first failure, if any (a worker's reply job is tried again
        on it: server/queue.py)."""
        failure: Exception | None = None
        for callback in list(self._settled):
            try:
                await callback(view)
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def _wake(self, thread_id: str) -> None:
        changed = self._changed.get(thread_id)
        if changed is not None:
            changed.set()

    async def _sweeping(self) -> None:
        while not self.stopping:
            await asyncio.sleep(self.sweep_seconds)
            await self.sweep()

    async def sweep(self) -> list[Expiry]:
        """One timer tick: `AsyncRuntime.expire` over the served agents (failed notices
        tried again; timed-out waits recorded, then run on by the background runner).

        The sweep takes one of the `concurrency` slots while it works (it sends notices
        and takes leases), and the threads it moves on queue for slots like any other:
        however many waits time out at once, no more than `concurrency` threads run."""
        try:
            async with self._slots:
                swept = await self.runtime.expire(agents=list(self.agents.values()), run=False)
        except Exception:
            log.exception("the expiry sweep failed; the next tick tries again")
            return []
        for expiry in swept:
            if expiry.problem is not None:
                log.warning("thread %s: %s", expiry.thread_id, expiry.problem)
            if expiry.view is None or isinstance(expiry.event, Notified):
                continue
            if expiry.view.status in ("running", "waiting"):  # a new pause is told by a run
                self._submit(expiry.thread_id)  # which tells on_settled when it stops
            else:
                await self._notify_settled(expiry.view)
        return swept


async def off_the_loop(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in a worker thread: SQLite calls (the server's tables commit on
    every write, and a commit waits for the disk or for another process's lock for up to
    the busy timeout) must never stall the event loop, which serves every request."""
    return await asyncio.to_thread(function, *args)


def _approvers(agent: Agent, view: ThreadView) -> tuple[str, ...]:
    from twelvefold.runtime.types import AwaitApproval

    action = agent.module.next_action(view.state)
    return action.approvers if isinstance(action, AwaitApproval) else ()


def _folder(agent: Agent) -> Path:
    return agent.directory or Path.cwd()


def _seconds_until(until: str) -> float:
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(until)
    except ValueError:
        return 1.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return min(60.0, max(0.2, (moment - datetime.now(UTC)).total_seconds() + 0.1))


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """The runtime's errors as the service's (each one line for a person); also for the
    routes outside the service that read the store (/metrics)."""
    try:
        yield
    except ServiceError:
        raise
    except ThreadNotFound as exc:
        raise NotFound(f"no thread {shown(exc.thread_id)} here") from None
    except TimedOut as exc:  # a RequestNotPending whose timeout was recorded just now
        raise Late(str(exc)) from None
    except NotWaiting as exc:  # a RequestNotPending, but nothing was pending for it
        raise WrongState(str(exc)) from None
    except RequestNotPending as exc:
        raise Stale(str(exc)) from None
    except NotAnApprover as exc:
        raise Forbidden(str(exc)) from None
    except ApprovedWork as exc:  # a fork or retry that would run approved work again
        raise WrongState(str(exc)) from None
    except InputError as exc:
        raise BadInput(str(exc)) from None
    except (LeaseError, Conflict) as exc:
        raise Busy(str(exc)) from None
    except IllegalEvent as exc:
        raise WrongState(str(exc)) from None
    except (AgentLoadError, LogError, StoreError, sqlite3.Error) as exc:
        raise Unavailable(exc) from None


_PLACE = re.compile(r"(?<![\w.~:/…])(?:[a-z][a-z0-9+.-]*://[^\s;,()]*|/[^\s;,()]+)")
"""An absolute path, or a URL (a PostgreSQL store's), in an error's words."""


SERVER_PLACES: set[str] = set()
"""The store's file, its folder and its URL (each as it may be written) of every
`Service` made in this process: a 503 names none of them, nor any path under the folder
(the configuration's, beside the store), whatever characters they hold (`_PLACE` ends a
path at a blank)."""


def unavailable_detail(exc: BaseException) -> str:
    """What a caller is told of a store, an agent or a configuration the server cannot
    use now (a 503; `Unavailable` is made only through here): the error's words, without
    its class, with every absolute path cut to its last part (`…/threads.db`) and every
    URL to its scheme (`postgresql://…`), since where the server keeps its files and which
    database it uses are the operator's to know, not every reader's; and a reference to
    the server's log line, which holds the whole of it."""
    reference = secrets.token_hex(4)
    log.error("unavailable (reference %s): %s: %s", reference, type(exc).__name__, exc)
    words = str(exc)
    if SERVER_PLACES:  # each with what follows it in a path (a file in the store's folder)
        known = "|".join(map(re.escape, sorted(SERVER_PLACES, key=len, reverse=True)))
        found_in = re.compile(rf"(?:{known})(?:/[^\s;,()]*)?")
        words = found_in.sub(lambda found: _cut(found[0]), words)
    words = _PLACE.sub(lambda found: _cut(found[0]), words)
    words = _SERVER_NAMED.sub(r'\1"…"', words)
    return f"{words} (the server's log has more, under reference {reference})"


_SERVER_NAMED = re.compile(
    r'(server at |host name |socket |database |role |user )"[^"]*"(?: \([^)]*\))?(?:, port \d+)?'
)
"""Where libpq's messages name the database server, its database and its user
(`connection to server at "db.internal" (10.0.0.5), port 5432 failed`, `could not
translate host name "db.internal"`, `database "tf" does not exist`): the quoted name, its
address and port are written `"…"`."""


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def _cut(place: str) -> str:
    """A path as `…/` and its last part; a URL as its scheme alone (`postgresql://…`:
    its user, password, host, database and parameters are all the operator's).
    `_cut(_cut(p)) == _cut(p)`."""
    scheme, separator, _ = place.partition("://")
    if separator and _SCHEME.fullmatch(scheme):
        return f"{scheme}://…"
    return "…/" + place.rstrip("/").rpartition("/")[2]


class Serving(Protocol):
    """What the readers of the served agents' configuration need (a `Service`, or the
    agents alone before anything connects: server/settings.py)."""

    @property
    def agents(self) -> Mapping[str, Agent]: ...


class ServeError(Exception):
    """What stops `serve` (or a worker) from starting: one line each (no agent, two with
    one name, every setting of the configuration that cannot be used: `problems`)."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


MAX_PROBLEMS = 20
"""The most lines one source's problems take in a refusal (a hostile file's thousand)."""


def capped(problems: list[str], more: Callable[[int], str]) -> list[str]:
    """`problems`, or the first `MAX_PROBLEMS` - 1 of them and `more(n)` saying how many
    (`n`) were left out."""
    if len(problems) <= MAX_PROBLEMS:
        return problems
    return [*problems[: MAX_PROBLEMS - 1], more(len(problems) - MAX_PROBLEMS + 1)]


def served_agents(runtime: AsyncRuntime, places: Sequence[str | Path]) -> dict[str, Agent]:
    """The agents to serve, by `agent NAME`: each place is a `.agent` file, a generated
    module, or a folder (its `*.agent` files, sorted). Raises `ServeError` when a folder
    holds no agent or two agents share a name, or with every setting of their
    configuration that cannot be used (`problems`, server/settings.py), and
    `AgentLoadError` for one that does not load."""
    agents: dict[str, Agent] = {}
    for place in places:
        folder = Path(place)
        if folder.is_dir():
            files = sorted(folder.glob("*.agent"))
            if not files:
                raise ServeError(f"{shown(str(folder))} holds no .agent file")
            references: list[str | Path] = list(files)
        else:
            references = [place]
        for reference in references:
            agent = runtime.agent(reference)
            require_templates(agent)  # a module's: at start, not at a thread's first step
            other = agents.get(agent.name)
            if other is not None and other.origin != agent.origin:
                raise ServeError(
                    f"two agents are named `{agent.name}`: {shown(other.origin)} and "
                    f"{shown(agent.origin)}; serve one of them"
                )
            agents[agent.name] = agent
    if not agents:
        raise ServeError("name at least one agent (a .agent file or a folder of them)")
    served = with_children(runtime, agents)
    # The configuration the loop and the server read lazily: every problem at start, not
    # one in every thread (or one at a time, each after the last was fixed).
    from twelvefold.server.settings import settings_problems

    problems = settings_problems(served)
    if problems:
        raise ServeError(*problems)
    for agent in served.values():
        # Read now, the policy names the file that configures the agent's folder from
        # the start: gone or emptied later, it is missed (`_governing`).
        try:
            Policy.read(_folder(agent))
        except ConfigError as exc:
            raise ServeError(str(exc)) from None
    return served


def with_children(runtime: AsyncRuntime, agents: dict[str, Agent]) -> dict[str, Agent]:
    """`agents` and the agents their `agent` steps call, transitively: a child thread is
    served (shown, decided, listed in the inbox) like its parent. Raises `ServeError` when
    a child shares its name with another agent."""
    pending = list(agents.values())
    while pending:
        parent = pending.pop()
        for state in parent.spec.states.values():
            if state.kind != "agent" or state.function is None:
                continue
            folder = parent.directory or Path.cwd()
            child = runtime.agent(str((folder / state.function).resolve()), sub_agent=True)
            other = agents.get(child.name)
            if other is None:
                agents[child.name] = child
                pending.append(child)
            elif other.origin != child.origin:
                raise ServeError(
                    f"two agents are named `{child.name}`: {shown(other.origin)} and "
                    f"{shown(child.origin)} (a sub-agent of `{parent.name}`); rename one"
                )
    return agents


def _expected_reply_failure(exc: Exception) -> bool:
    """Whether an `on_settled` failure is one a running server expects (replies a receiver
    refused or could not be reached for, a network error), not a bug in a callback."""
    from twelvefold.runtime.notify import NotifyError
    from twelvefold.server.replies import RepliesFailed

    return isinstance(exc, RepliesFailed | NotifyError | OSError)
