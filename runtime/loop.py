"""The loop: load a thread's events, replay, ask `next_action`, perform it, append the
event durably, reduce; until the thread waits for a person, finishes or fails.

    while the thread is running (or waiting and nobody was told yet):
        action = agent.next_action(state)
        event  = perform(action)              # model call, tool call, notification
        state  = agent.reduce(state, event)   # an impossible event raises; nothing stored
        store.append(thread, state.seq - 1, [event])   # durable before we go on

Events are the only state: a process may die at any line above and the next one to load
the thread continues from what the log says. The one side effect that cannot simply be
repeated is a tool call, so a `ToolStarted(key)` event is appended *before* the tool
runs; a later process that finds a start without a result re-runs the tool only if it
takes an idempotency key (and passes the same key), and otherwise records that the call
was interrupted, for a person to decide.

Ownership: a process advances a thread only under its lease (runtime/lease.py), renewed
in the background while a model or tool call runs; every append carries it, so a process
that lost the thread (it stalled past its lease and another took over) writes nothing
more. Loading verifies the log's hash chain (runtime/integrity.py) and uses a snapshot
only when its seal proves it is the fold of exactly these events by this reducer.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ValidationError

from . import checks, fastpath, ratelimit, tools, tracing
from . import lease as leases
from .codec import Codec, unstorable
from .config import ConfigError, find_config, stdlib_module
from .integrity import BrokenLog, LogError, UnreadableLog
from .model import MAX_PAUSE_SECONDS as MAX_PAUSE_SECONDS  # read here by the fast path too
from .model import (
    Attempts,
    Model,
    ModelError,
    ModelReply,
    ModelRequest,
    StopsTheRun,
    build_model_request,
)
from .names import declared_name
from .pools import SharedPool
from .ratelimit import RateLimiter
from .records import record
from .redact import secret_values, shown_value, validation_problems, without_secrets

if TYPE_CHECKING:
    from .notify import Notice  # notify.py loads only when a thread waits
from .spec import ASK_NOT_SHOWN, COST_ERROR, TOKENS_ERROR, AgentSpec
from .store import EventStore, StoreError, ThreadInfo, build_head, now_iso
from .types import (
    Action,
    AttemptFailed,
    AwaitAnswer,
    AwaitApproval,
    CallAgent,
    CallModel,
    CallTool,
    ErrorInfo,
    Event,
    Forked,
    IllegalEvent,
    Notified,
    OutputRejected,
    Started,
    State,
    StepFailed,
    ToolResult,
    ToolStarted,
    Usage,
    Verdict,
    build_model_output,
    build_tool_result,
    build_tool_started,
    build_usage,
)
from .usage import (
    MAX_CALL_COST,
    MAX_CALL_TOKENS,
    MAX_LATENCY_MS,
    Prices,
    number_text,
    prices_for,
    token_count_error,
    valid_cost,
    valid_latency,
)
from .versions import AgentVersion

UNSTORABLE = "Unstorable"
"""The error type of a step whose model output or tool result no store can hold (a lone
surrogate in a string: `codec.unstorable`)."""
INTERRUPTED = ErrorInfo(
    "Interrupted",
    "interrupted: the tool may or may not have run; it takes no idempotency key, "
    "so it was not run again (retry the thread to run it again)",
)


class AgentModule(Protocol):
    """What a generated module provides (see ARCHITECTURE.md)."""

    AGENT: AgentSpec

    def initial_state(self, value: Any) -> State: ...
    def reduce(self, state: State, event: Event) -> State: ...
    def next_action(self, state: State) -> Action: ...
    def replay(self, events: Sequence[Event]) -> State: ...


@record
class Agent:
    """A loaded agent: its generated module and what the runtime needs beside it."""

    module: AgentModule
    origin: str
    """How another process loads it again: a `.agent` path or a module name/path."""
    directory: Path | None = None
    """Where its tools are looked up first (then --path folders, then the import path)."""
    prompts_dir: Path | None = None
    version: AgentVersion | None = None
    """The sources it was compiled from, when it was loaded from a `.agent` file: a new
    thread is pinned to them (runtime/versions.py)."""
    sources: Path | None = None
    """For a pinned version's reducer: the folder its `.agent` file was written out to
    (under the compile cache). The sub-agents it names are read there, as they were when
    the version was stored, not from the project as it is now."""
    codec: Codec = field(init=False)
    reducer: str | None = field(init=False)
    """A fingerprint of the generated module's source: a state snapshot is used only if
    this very reducer computed it (None: a module without a file never uses snapshots)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "codec", Codec(self.module.AGENT))
        object.__setattr__(self, "reducer", _fingerprint(self.module))

    @property
    def spec(self) -> AgentSpec:
        return self.module.AGENT

    @property
    def name(self) -> str:
        return self.module.AGENT.name

    @classmethod
    def of(cls, module: ModuleType | AgentModule, **kwargs: Any) -> Agent:
        origin = kwargs.pop("origin", None) or getattr(module, "__name__", "<agent>")
        return cls(module=module, origin=origin, **kwargs)


@dataclass
class Thread:
    """One process's working copy of a thread: its log and the state it replays to."""

    id: str
    agent: Agent
    events: list[Event]
    state: State
    lease: leases.Lease | None = None
    """The lease this process holds on the thread while it advances it (else None)."""
    unproven: bool = False
    """The state comes from a snapshot sealed without a key: it is checked against the
    log (replayed once) before any tool runs on it."""
    run: Any = None
    """The OpenTelemetry span of the run advancing it, when traced (runtime/tracing.py)."""
    stamp: str | None = None
    """The run's `traceparent` until the first event it appends carries it (`run_trace`),
    then None; None when untraced, or when `Started.trace` names the run already."""
    model: str | None = None
    """The model the last model call asked for (for metrics: an event's usage does not
    name it), when known."""


class AgentChanged(LogError):
    """The agent's reducer changed since the thread was written, and the thread's log does
    not replay under the new one: it is refused rather than run on a state nobody had."""

    def __init__(self, thread_id: str, agent: Agent, written_by: str, problem: str) -> None:
        super().__init__(
            f"thread {thread_id} was written by another version of agent {agent.name} "
            f"(reducer {written_by}, now {agent.reducer or 'unknown'}) and its log does not "
            f"replay under this one: {problem}. Run it with the agent as it was when the "
            "thread was written, or fork it before the event that no longer fits"
        )
        self.thread_id = thread_id


class Notifier(Protocol):
    async def notify(self, notice: Notice) -> list[str]: ...


EventHook = Callable[[Thread, Event], None]
"""Called after each new event is stored (the CLI prints it; a fork's copied events are
not new: its hook sees its `Forked` event and after)."""

MessageBuilder = Callable[[AgentSpec, CallModel, Sequence[Event], Path], list[dict[str, str]]]
"""Renders an `llm` step's messages; `context.build_messages` unless replaced."""


class Engine:
    """Runs threads against one store. `offload` moves blocking work (SQLite, tools)
    to worker threads, for callers that share an event loop (the HTTP server)."""

    def __init__(
        self,
        store: EventStore,
        *,
        model: Model | None = None,
        notifier: Notifier | None = None,
        tool_paths: Sequence[str | Path] = (),
        offload: bool = False,
        on_event: EventHook | None = None,
        messages: MessageBuilder | None = None,
        lease_seconds: float | None = None,
    ) -> None:
        self.store = store
        self.lease_seconds = leases.lease_seconds(lease_seconds)
        """How long a lease lasts unrenewed (TWELVEFOLD_LEASE_SECONDS, 30 s by default)."""
        self.owner = leases.new_owner()
        """This engine's name in leases: `host:pid:random`."""
        self.leased: set[str] = set()
        """The threads whose lease this engine took (or was taking) and has not let go
        of: what `release_leases` gives up when a run was cut short."""
        self.renewals = leases.Renewals(store, self.lease_seconds)
        self.messages = messages
        self.model = model
        self.notifier = notifier
        self.toolbox = tools.ToolBox(tool_paths)
        self.offload = offload and getattr(store, "blocking", True)
        self._append_async: Callable[..., Awaitable[None]] | None = (
            getattr(store, "append_async", None) if self.offload else None
        )
        """The store's `append` for callers on an event loop, when it has one (SQLite's
        group commit) and blocking work is offloaded: no worker thread per append."""
        self.on_event = on_event
        self.rate_limiter: RateLimiter = ratelimit.limiter_for(store)
        """Where model calls wait for their turn (runtime/ratelimit.py): the store's when
        it keeps shared windows (PostgreSQL: every worker's), else the process's."""
        self.in_flight = ratelimit.PROCESS_IN_FLIGHT
        """The cap on model calls in flight at once in the process (`model_calls_in_flight`)."""
        self.defer_turns: float | None = None
        """When set (a worker), a thread's model call whose rate-limit turn is further away
        than this many seconds raises `TurnLater` instead of waiting: the worker gives its
        job slot back and wakes the thread when the turn comes. A judge's call (its step's
        reply is in hand, not yet recorded) and a sub-agent's call always wait."""
        self.idle: Callable[[], contextlib.AbstractAsyncContextManager[None]] | None = None
        """Entered while a thread waits for its turn at a rate limit: the server lends
        the thread's `--concurrency` slot to another thread meanwhile."""
        self.wait_out_backoff = True
        """Whether a run waits in this process for a tool retry's backoff to end (the CLI,
        `Runtime`), or stops there and leaves the thread `running` with its retry due
        (`retry_due`) for a timer to run on (the server, and the workers' timer jobs):
        a process that waits holds the thread's lease and one of its own slots."""
        self.children: Callable[[Thread, CallAgent], Awaitable[Event | None]] | None = None
        """Starts and runs an `agent` step's child thread (`AsyncRuntime` sets it): the
        event that ends the step when the child ended, else None."""
        self.suspends: Model | None = None
        """The model whose `complete` was seen to suspend (to wait for I/O): its calls take
        the ordinary path, not the synchronous one (runtime/fastpath.py)."""
        self._resolved: Model | None = None
        self._resolver: Callable[[CallModel], Any] | None = None
        """`requested_model` of the model in use, when it has one (see `_requested_model`)."""

    # ---- threads ------------------------------------------------------------------

    async def create(
        self, agent: Agent, events: Sequence[Event], thread_id: str, *, hold: bool = True
    ) -> Thread:
        """Store a new thread; with `hold` (launch), under a lease this process holds
        until `advance` lets it go, so nobody else can touch it in between. A thread that
        is not run at once (a fork) is created with `hold=False`. An agent loaded from a
        `.agent` file pins the thread to its sources (stored first: runtime/versions.py)."""
        state = agent.module.replay(events)
        at = events[0].at or now_iso()
        version = agent.version
        if version is not None:
            await self._keep(version)
        info = ThreadInfo(
            thread_id,
            agent.name,
            agent.origin,
            state.status,
            state.step,
            len(events),
            at,
            at,
            request=state.request,
            version=version.digest if version is not None else None,
        )
        owner = self.owner if hold else None
        if owner is not None:
            self.leased.add(thread_id)  # before the write: a Ctrl-C may cut it after
        lease = await self._write(
            "create",
            info,
            events,
            agent.codec,
            reducer=agent.reducer,
            owner=owner,
            seconds=self.lease_seconds,
        )
        thread = Thread(thread_id, agent, list(events), state, lease)
        # A fork's copied events are not new (metrics would count them twice): announce
        # from its `Forked` event on, or a launch's whole log.
        new = next((i for i in range(len(events) - 1, -1, -1) if isinstance(events[i], Forked)), 0)
        try:
            if version is not None:
                # Again, now that the thread names it: a `prune` that found the version
                # unused between the first look and the thread's row may have deleted it.
                await self._keep(version)
            for event in events[new:]:
                self._announce(thread, event)
        except BaseException:  # a hook that raised (a Ctrl-C as it printed): no run holds it
            await self.let_go(thread)
            raise
        return thread

    async def _keep(self, version: AgentVersion) -> None:
        """Store `version` unless the store has it (a read: no write, no fsync, for every
        launch of an agent whose version is stored already)."""
        if await self._io(self.store.load_version, version.digest) is None:
            await self._io(self.store.save_version, version.digest, version.to_json())

    async def load(self, agent: Agent, thread_id: str) -> Thread:
        """The thread's events (their hash chain verified: `BrokenLog` otherwise) and its
        state: from the store's snapshot when its seal proves it is of exactly these events
        (or of the first of them: the others are reduced onto it) and this very reducer
        made it, else by replaying the log. A log written by another
        reducer is replayed whole under this one and refused (`AgentChanged`) unless every
        event fits."""
        try:
            restored = await self._io(self.store.restore, thread_id, agent.codec)
        except UnreadableLog as exc:
            if exc.reducer is not None and exc.reducer != agent.reducer:
                raise AgentChanged(thread_id, agent, exc.reducer, exc.problem) from None
            raise
        events, snapshot = restored.events, restored.snapshot
        if (
            snapshot is not None
            and agent.reducer is not None
            and snapshot.reducer == agent.reducer
            and snapshot.seq <= len(events)
        ):
            try:
                state = agent.codec.decode_state(snapshot.state)
                reduce = agent.module.reduce
                for event in events[snapshot.seq :]:  # those after it (`SNAPSHOT_EVERY`)
                    state = reduce(state, event)
            except Exception:  # a forged state that does not decode: replay instead
                state = None
            if state is not None:
                return Thread(thread_id, agent, events, state, unproven=not restored.keyed)
        written_by = restored.reducer
        changed = written_by is not None and written_by != agent.reducer
        try:
            state = agent.module.replay(events)
        except Exception as exc:
            problem = str(exc) if isinstance(exc, IllegalEvent) else f"{type(exc).__name__}: {exc}"
            if changed:
                assert written_by is not None
                raise AgentChanged(thread_id, agent, written_by, problem) from None
            # Events this reducer would never have accepted: the log was edited or damaged.
            raise StoreError(
                f"thread {thread_id}: its log does not replay ({problem}); the log was changed "
                "outside twelvefold"
            ) from exc
        return Thread(thread_id, agent, events, state)

    async def check_free(self, thread_id: str) -> None:
        """`LeaseHeld` if a process holds the thread now (for work that reads a thread to
        start other work from it, such as a fork)."""
        held = await self._io(self.store.lease, thread_id)
        if held is not None:
            raise leases.LeaseHeld(thread_id, held.owner, held.expires)

    async def record(self, thread: Thread, event: Event) -> None:
        """Reduce (an impossible event raises and nothing is stored), then append with
        the sequence number we replayed to: if another process got there first the store
        raises `Conflict` and this process stops.

        Every append is made under the thread's lease. Outside `advance` (a decision, a
        retry, an expiry, a cancel) this first takes the lease (`LeaseHeld` if a process
        holds it, before anything else is judged: nothing is recorded) and keeps it only
        while the thread is running, for the `advance` that follows."""
        if thread.lease is not None and not self.offload:
            self.book(thread, event)  # the hot path: nothing to take, nothing waited for
            return
        if thread.stamp is not None:
            event = _stamped(thread, event)
        agent = thread.agent
        took = thread.lease is None
        if took:
            self.leased.add(thread.id)  # before the write: a Ctrl-C may cut it after
            thread.lease = await self._write("acquire", thread.id, self.owner, self.lease_seconds)
        try:
            state = agent.module.reduce(thread.state, event)
            head = build_head(state.status, state.step, state, agent.reducer, state.request)
            append = (thread.id, len(thread.events), (event,), agent.codec, head, thread.lease)
            if self._append_async is not None:  # the event loop stays free, no thread waits
                await self._append_async(*append)
            elif self.offload:
                await self._io(self.store.append, *append)
            else:
                self.store.append(*append)
        except BaseException:
            if took:
                await self.let_go(thread)
            raise
        thread.events.append(event)
        thread.state = state
        try:
            if took and state.status != "running":  # no `advance` needs it (a notice: at once)
                await self.let_go(thread)
            self._announce(thread, event)
        except BaseException:  # a hook that raised (a Ctrl-C as it printed): no run holds it
            if took:
                await self.let_go(thread)
            raise

    def book(self, thread: Thread, event: Event) -> None:
        """`record` for a thread whose lease this engine holds, when the store never
        waits (no `offload`): a plain call, so each step's events cost no coroutine."""
        assert thread.lease is not None and not self.offload
        if thread.stamp is not None:
            event = _stamped(thread, event)
        agent = thread.agent
        state = agent.module.reduce(thread.state, event)
        head = build_head(state.status, state.step, state, agent.reducer, state.request)
        self.store.append(thread.id, len(thread.events), (event,), agent.codec, head, thread.lease)
        thread.events.append(event)
        thread.state = state
        if self.on_event is not None:
            self.on_event(thread, event)

    # ---- the loop -----------------------------------------------------------------

    def open_run(self, agent: Agent, thread_id: str, events: Sequence[Event] = ()) -> Any:
        """The span of a run about to start (None when tracing is off): `launch` opens it
        before the `Started` event that records it; `advance` opens its own otherwise."""
        found = tracing.tracer()
        if found is None:
            return None
        return tracing.start_run(found, agent.name, thread_id, events)

    async def advance(self, thread: Thread, *, run: Any = None) -> Thread:
        """Perform actions until the thread waits for a person, finishes or fails.

        Holds the thread's lease throughout (taking it unless `create` or `record` left
        it; `LeaseHeld` if another process holds it), renews it in the background, starts
        no new call once a renewal failed (`LeaseLost`), and lets it go when the thread
        stops or anything goes wrong. Traced (runtime/tracing.py) in the span `run` when
        given, else in a new `invoke_agent` span when tracing is on."""
        if not _has_work(thread.state):
            await self.let_go(thread)
            if run is not None:
                tracing.end_run(run, thread.state)
            return thread
        if run is None:
            run = self.open_run(thread.agent, thread.id, thread.events)
            if run is None:
                return await self._advance(thread)
            thread.stamp = tracing.traceparent(run)  # (a launch's run: `Started.trace`)
        thread.run = run
        failure: BaseException | None = None
        try:
            with tracing.in_span(run):
                return await self._advance(thread)
        except ratelimit.TurnLater as later:  # not a failure: the run goes on at its turn
            later.trace = tracing.traceparent(run)
            run.add_event(
                "twelvefold.turn_later",
                {"gen_ai.request.model": later.model, "twelvefold.wait_seconds": later.seconds},
            )
            raise
        except BaseException as exc:
            failure = exc
            raise
        finally:
            thread.run = thread.stamp = None
            tracing.end_run(run, thread.state, failure)

    async def _advance(self, thread: Thread) -> Thread:
        if thread.lease is None:
            self.leased.add(thread.id)  # before the write: a Ctrl-C may cut it after
            thread.lease = await self._write("acquire", thread.id, self.owner, self.lease_seconds)
        held = self.renewals.hold(thread.lease)
        next_action = thread.agent.module.next_action
        book = None if self.offload else self.book  # no coroutine per event in memory
        # In memory, untraced: routine calls by plain calls, the rest below (fastpath.py).
        fast = fastpath.routine(self, thread)
        told = False  # one notice attempt per advance: a dead channel is retried by `expire`
        depth = _RUN_DEPTH.set(_RUN_DEPTH.get() + 1)  # a sub-agent's run is inside its parent's
        try:
            while _has_work(thread.state) and not (told and thread.state.status == "waiting"):
                held.check()  # lost the lease: start nothing more
                if fast is None:
                    action = next_action(thread.state)
                else:
                    found = fast.run(held)
                    if isinstance(found, fastpath.Suspended):
                        self.book(thread, await found.settle())
                        continue
                    action = found
                if isinstance(action, CallModel):
                    event = await self._call_model(thread, action)
                    if book is None:
                        await self.record(thread, event)
                    else:
                        book(thread, event)
                elif isinstance(action, CallTool):
                    due = retry_due(thread.events)
                    if due is not None and due > time.time():
                        if not self.wait_out_backoff:
                            break  # a timer runs the thread on at `due` (holding nothing)
                        await _sleep_until(due)
                        continue  # the lease may have been lost meanwhile: check again
                    self._prove(thread)  # a side effect never rests on a forgeable cache
                    event = await self._call_tool(thread, action)
                    if book is None:
                        await self.record(thread, event)
                    else:
                        book(thread, event)
                elif isinstance(action, AwaitApproval | AwaitAnswer):
                    told = True
                    await self.record(thread, await self.notify(thread, action))
                elif isinstance(action, CallAgent) and self.children is not None:
                    # Start the child (once) and run it now; it reports back here if it
                    # ends, else the thread waits for it holding nothing.
                    ended = await self.children(thread, action)
                    if ended is None:
                        break
                    await self.record(thread, ended)
                else:  # Finish, Fail, a wait: the status already says so
                    break
        finally:
            _RUN_DEPTH.reset(depth)
            thread.lease = self.renewals.drop(held)
            await self.let_go(thread)
        return thread

    async def _call_model(self, thread: Thread, action: CallModel, waits: int = 0) -> Event:
        if self.messages is None:
            from .context import build_messages

            self.messages = build_messages
        agent = thread.agent
        prompts = agent.prompts_dir or _PROMPTS
        try:
            messages = self.messages(agent.spec, action, thread.events, prompts)
        except Exception as exc:  # the user's template is missing or raised: the step failed
            return StepFailed(step=action.step, at=now_iso(), error=prompt_error(action, exc))
        try:
            prices = self._price_table(agent)
            limits = ratelimit.rate_limits_for(agent.directory or Path.cwd())
        except ConfigError as exc:  # read before the call: a paid reply is never lost to it
            return StepFailed(step=action.step, at=now_iso(), error=tools.describe(exc))
        model = self._model()
        try:
            requested = thread.model = _requested_model(self._resolver, action)
        except Exception as exc:  # a custom model's own code, as its `complete` (model_failure)
            return StepFailed(step=action.step, at=now_iso(), error=tools.describe(exc))
        if agent.spec.max_cost is not None and requested and prices.price(requested) is None:
            # A cost budget cannot bound a call nobody can price: refuse it before it costs.
            return StepFailed(step=action.step, at=now_iso(), error=_unpriced(requested))
        spec = agent.spec
        budget = None
        if spec.max_cost is not None or spec.max_tokens is not None:
            budget = budget_check(spec, thread.state, requested, prices)
        attempts = Attempts()
        request = build_model_request(
            spec, action, messages, thread.id, len(thread.events), budget, attempts
        )
        # The turn comes before the call's span: waiting is not calling, and a turn given
        # up (`TurnLater`) leaves no span open. (No coroutine at all for an unlimited model.)
        estimated: int | None = None
        if requested is not None and limits.of_model(requested) is not None:
            estimated = await self._turn(
                requested, limits, messages, may_defer=_RUN_DEPTH.get() == 1
            )
        span = None
        if thread.run is not None and (tracer := tracing.tracer()) is not None:
            span = tracing.start_chat(
                tracer,
                thread.run,
                thread_id=thread.id,
                step=action.step,
                model=requested,
                temperature=action.temperature,
                messages=messages,
            )
        if not self.in_flight.take(limits.in_flight):
            await self.in_flight.enter(limits.in_flight)
        started = time.perf_counter()
        long_wait: float | None = None
        seconds = limits.call_seconds
        try:
            if span is None:
                reply = await _within(seconds, model.complete(request), attempts)
            else:
                with tracing.in_span(span):
                    reply = await _within(seconds, model.complete(request), attempts)
            reply = _proper_or_raise(reply, action, attempts)
        except BaseException as exc:
            failure = model_failure(exc, attempts)
            error = ErrorInfo(type(exc).__name__, "") if failure is None else failure.error
            # A failed call's replies were paid for: their tokens and cost go on its
            # StepFailed, where the budgets, totals, metrics and the span count them.
            paid = None if failure is None else failure.usage
            failed, bad_cost = paid_failure(spec, paid, requested, prices, started)
            if bad_cost is not None:
                error = bad_cost
            if paid is not None:
                self._spent(requested, failed, estimated)
            if span is not None:
                tracing.end_chat(
                    span, response_model=None, response_id=None, finish_reasons=(),
                    input_tokens=failed.input_tokens, output_tokens=failed.output_tokens,
                    cost_usd=failed.cost_usd, error=error,
                )  # fmt: skip
            if failure is None:
                raise
            long_wait = failure.retry_after if paid is None and waits < LONG_429_WAITS else None
            if long_wait is None:
                return StepFailed(step=action.step, at=now_iso(), usage=failed, error=error)
        finally:
            self.in_flight.leave()
        if long_wait is not None:
            # A 429 asking for longer than the openai client waits (it did not retry):
            # wait here, capped, holding no slot, and call again. Nothing was recorded.
            await self._wait_out_429(requested, min(long_wait, MAX_PAUSE_SECONDS))
            return await self._call_model(thread, action, waits + 1)
        usage, bad_cost = priced_reply(reply, requested, prices, started)
        self._spent(requested, usage, estimated)
        if bad_cost is None:
            bad_cost = uncounted(spec, usage)
        if bad_cost is not None:
            # Never recorded: a cost that is not a number would break every report and
            # leave `max_cost` unenforced. The call was paid for: its tokens stay.
            if span is not None:
                tracing.end_chat(
                    span, response_model=reply.model, response_id=reply.response_id,
                    finish_reasons=reply.finish_reasons, input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens, cost_usd=None, error=bad_cost,
                )  # fmt: skip
            return StepFailed(step=action.step, at=now_iso(), usage=usage, error=bad_cost)
        if span is not None:
            output = reply.output
            tracing.end_chat(
                span,
                response_model=reply.model,
                response_id=reply.response_id,
                finish_reasons=reply.finish_reasons,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cost_usd=usage.cost_usd,
                output=lambda: shown_value(output),  # a span never shows a secret
            )
        if action.validators or action.judge is not None:
            try:
                refusal, judged = await self._check_output(
                    thread, action, reply.output, prices, usage
                )
            except checks.CheckFailed as exc:
                # The checked call was paid for, and so was a judge's call that failed.
                paid, bad = _valid_cost(_added(usage, exc.usage))
                if bad is None and exc.usage is not None:  # a judge's uncountable replies
                    bad = uncounted(spec, paid)
                error = exc.error if bad is None else bad
                return StepFailed(step=action.step, at=now_iso(), usage=paid, error=error)
            # The judge's call is part of the step's cost: its budgets count it too.
            usage, bad_cost = _valid_cost(_added(usage, judged))
            if bad_cost is not None:
                return StepFailed(step=action.step, at=now_iso(), usage=usage, error=bad_cost)
            if refusal is not None:
                return await self._rejected(thread, action, reply.output, refusal, usage)
        return model_output_event(action.step, usage, reply.output)

    async def _check_output(
        self, thread: Thread, action: CallModel, output: BaseModel, prices: Prices, paid: Usage
    ) -> tuple[checks.Refusal | None, Usage | None]:
        """The checks before dispatch (runtime/checks.py), in order: each `validate`
        function, then the judge. The first refusal ends them; the judge's call's usage
        (priced) comes with it. Raises `CheckFailed` when a validator cannot be found or
        breaks, or the judge gives no verdict. (`paid`: what the checked call cost.)"""
        for reference in action.validators:
            try:
                function = self.toolbox.resolve(
                    reference,
                    _folders(thread.agent),
                    allow_stdlib=_allowed_stdlib(thread.agent, reference),
                ).function
            except (tools.ToolImportError, ConfigError) as exc:
                raise checks.CheckFailed(tools.describe(exc)) from exc
            refusal = await checks.run_validator(reference, function, output, offload=self.offload)
            if refusal is not None:
                return refusal, None
        if action.judge is None:
            return None, None
        verdict, usage = await self._judge(thread, action, output, prices, paid)
        return checks.judged(verdict), usage

    async def _judge(
        self, thread: Thread, action: CallModel, output: BaseModel, prices: Prices, checked: Usage
    ) -> tuple[Verdict, Usage]:
        """The judge's verdict on `output`: a model call through the same `Model`, its
        prompt given the step's variables and `output`. A judge that cannot answer (its
        prompt, the endpoint, an invalid verdict) raises `CheckFailed`: the step fails.
        The judge's call is on the step's event, after `checked` (the checked call's cost):
        its re-asks stop once the two have spent a budget (`budget_check`)."""
        from .context import build_messages, template_value

        assert action.judge is not None
        judge = replace(
            action,
            step=f"{action.step}.{checks.JUDGE}",
            outputs=(Verdict,),
            prompt=action.judge,
            validators=(),
            judge=None,
            rejections=0,
        )
        prompts = thread.agent.prompts_dir or _PROMPTS
        try:
            messages = build_messages(
                thread.agent.spec,
                judge,
                thread.events,
                prompts,
                extra={"output": template_value(output)},
            )
        except Exception as exc:
            raise checks.CheckFailed(prompt_error(judge, exc)) from exc
        try:
            limits = ratelimit.rate_limits_for(thread.agent.directory or Path.cwd())
        except ConfigError as exc:
            raise checks.CheckFailed(tools.describe(exc)) from exc
        try:
            judged_by = _requested_model(self._resolver, judge)
        except Exception as exc:  # a custom model's own code, as its `complete` below
            no_verdict = f"the judge of `{action.step}` gave no verdict: {tools.describe(exc)}"
            raise checks.CheckFailed(ErrorInfo("JudgeError", no_verdict)) from exc
        spec = thread.agent.spec
        budget = None
        if spec.max_cost is not None or spec.max_tokens is not None:
            budget = budget_check(spec, thread.state, judged_by, prices, before=checked)
            if budget(Usage()):
                # The call it judges spent a budget, and no model call starts once one is
                # spent. Its output is not accepted without a verdict: the step fails with
                # that call's cost, and the budget decides where the thread goes.
                raise checks.CheckFailed(
                    ErrorInfo(
                        "JudgeError",
                        f"the judge of `{action.step}` was not asked: the agent's budget "
                        "is spent (by the call it judges)",
                    )
                )
        attempts = Attempts()
        request = ModelRequest(
            spec, judge, messages, thread.id, len(thread.events), budget, attempts
        )
        waits = 0
        while True:
            estimated = await self._turn(judged_by, limits, messages)
            if not self.in_flight.take(limits.in_flight):
                await self.in_flight.enter(limits.in_flight)
            started = time.perf_counter()
            long_wait: float | None = None
            try:
                reply = await _within(
                    limits.call_seconds, self._model().complete(request), attempts
                )
                reply = _proper_or_raise(reply, judge, attempts)
            except Exception as exc:
                failure = model_failure(exc, attempts)
                if failure is None:
                    raise
                error = failure.error
                paid = failure.usage
                paid = None if paid is None else _priced_usage(paid, judged_by, prices)
                if paid is not None:
                    self._spent(judged_by, paid, estimated)
                if paid is None and failure.retry_after is not None and waits < LONG_429_WAITS:
                    long_wait = failure.retry_after
                else:
                    raise checks.CheckFailed(
                        ErrorInfo(
                            "JudgeError", f"the judge of `{action.step}` gave no verdict: {error}"
                        ),
                        paid,
                    ) from exc
            finally:
                self.in_flight.leave()
            if long_wait is None:
                break
            # A 429 asking for longer than the openai client waits: waited out as the
            # step's own call's is (capped, lending the server's slot), then asked again.
            # Never given up to a later turn (`TurnLater`): the checked output was paid
            # for, and a later run would ask for it again.
            waits += 1
            await self._wait_out_429(judged_by, min(long_wait, MAX_PAUSE_SECONDS), defer=False)
        verdict = reply.output
        if not isinstance(verdict, Verdict):  # a Model that answered another type
            verdict = Verdict.model_validate(verdict.model_dump())
        usage = _priced(reply, judged_by, prices, started)
        self._spent(judged_by, usage, estimated)
        if (why := uncounted(spec, usage)) is not None:
            raise checks.CheckFailed(why, usage)  # no verdict the budget could count
        return verdict, usage

    async def _rejected(
        self,
        thread: Thread,
        action: CallModel,
        output: BaseModel,
        refusal: checks.Refusal,
        usage: Usage,
    ) -> Event:
        """The event for a refused output: the `OutputRejected` itself while the step has
        retries left (the loop then asks the model again), else the rejection recorded and
        a `StepFailed(Rejected)` returned: the step's `on error` decides."""
        rejected = OutputRejected(
            step=action.step,
            at=now_iso(),
            usage=usage,
            output=output,
            by=refusal.by,
            reason=refusal.reason,
        )
        if action.rejections < action.retries:
            return rejected
        await self.record(thread, rejected)
        attempts = action.rejections + 1
        return StepFailed(
            step=action.step,
            at=now_iso(),
            error=ErrorInfo(
                "Rejected",
                f"no accepted output for `{action.step}` after {attempts} rejection(s); "
                f"last by `{refusal.by}`: {refusal.reason}",
            ),
        )

    async def _call_tool(self, thread: Thread, action: CallTool) -> Event:
        """One logical call, one key: `f"{thread}:{step}:{seq}"`, `seq` being the number
        of the call's first `ToolStarted`. A person's retry of a call whose outcome is
        unknown carries that key (`action.retry_key`) and records it again; a process
        that finds the call started without a result (`action.started_key`) re-runs it
        with the key if the tool takes one, and otherwise records it as interrupted."""
        step = action.step
        try:
            tool = self.toolbox.resolve(
                action.function,
                _folders(thread.agent),
                allow_stdlib=_allowed_stdlib(thread.agent, action.function),
            )
        except (tools.ToolImportError, ConfigError) as exc:
            # After a crash the call's outcome is still unknown: keep its key.
            return StepFailed(
                step=step, at=now_iso(), error=tools.describe(exc), key=action.started_key
            )
        key = action.started_key
        if key is None:
            key = action.retry_key or f"{thread.id}:{step}:{len(thread.events) + 1}"
            started = build_tool_started(step=step, at=now_iso(), key=key)
            if self.offload:
                await self.record(thread, started)
            else:
                self.book(thread, started)
        elif not tool.accepts_key:
            # Started in a process that died before recording the result: running it
            # again could repeat its side effect, and nothing can tell us it is safe.
            return StepFailed(step=step, at=now_iso(), error=INTERRUPTED, key=key)
        attempt = 1 + _failed_attempts(thread.events, key)
        span = None
        if thread.run is not None and (tracer := tracing.tracer()) is not None:
            span = tracing.start_tool(
                tracer, thread.run, thread_id=thread.id, step=step, function=action.function
            )
            with tracing.in_span(span):
                try:
                    outcome = _secrets_out(
                        await tools.call(tool, action, key, offload=self.offload, attempt=attempt),
                        thread,
                        action,
                    )
                except BaseException as exc:
                    tracing.end_tool(
                        span, key=key, arguments=lambda: _plain(action.value), result=None,
                        error=ErrorInfo(type(exc).__name__, ""),
                    )  # fmt: skip
                    raise
            result = outcome.result
            tracing.end_tool(
                span,
                key=key,
                arguments=lambda: _plain(action.value),
                result=lambda: _plain(result),
                error=outcome.error,
            )
        else:
            outcome = _secrets_out(
                await tools.call(tool, action, key, offload=self.offload, attempt=attempt),
                thread,
                action,
            )
        return tool_event(step, key, outcome, trace=tracing.traceparent(thread.run))

    async def notify(
        self, thread: Thread, action: AwaitApproval | AwaitAnswer, *, at: str | None = None
    ) -> Notified | StepFailed:
        """Tell people about the pending request: the `Notified` event to record, with the
        channels that took the notice and the failed ones, whatever happens (it never
        raises: a pause never depends on a channel being up). `at` is when (the clock
        unless given: `expire --now` gives its own). An `ask` that cannot be shown with
        the values is a `StepFailed` instead, before any channel is used: nobody may
        decide on text that does not show what they decide (fix the `ask`, then retry)."""
        from .context import AskRenderError
        from .notify import NotifyError, failure, scrub

        try:
            told = notice(thread, action)
        except AskRenderError as exc:
            error = ErrorInfo(ASK_NOT_SHOWN, f"the `ask` of `{action.step}` cannot be shown: {exc}")
            return StepFailed(step=action.step, at=at or now_iso(), error=error)
        notifier: Notifier | None = None
        channels: tuple[str, ...]
        failed: tuple[str, ...]
        try:
            notifier = self._notifier()
            channels, failed = tuple(await notifier.notify(told)), ()
        except NotifyError as exc:
            channels, failed = exc.delivered, exc.failed
        except Exception as exc:  # a configuration error, a broken custom notifier
            channels, failed = (), (failure(notifier, exc),)
        secrets = tuple(getattr(notifier, "secrets", ()))
        failed = tuple(scrub(reason, secrets) for reason in failed)
        return Notified(
            step=action.step,
            at=at or now_iso(),
            channels=channels,
            failed=failed,
            trace=tracing.traceparent(thread.run),
        )

    # ---- helpers ------------------------------------------------------------------

    def _model(self) -> Model:
        if self.model is None:
            from .model import OpenAIModel  # openai and instructor load here, not before

            self.model = OpenAIModel()
        if self._resolved is not self.model:  # looked up once per model, not per call
            self._resolved = self.model
            self._resolver = getattr(self.model, "requested_model", None)
            if getattr(self.model, "limiter", None) is ratelimit.PROCESS_LIMITER:
                # Its 429s pause the limiter the calls wait on (the store's, if shared).
                self.model.limiter = self.rate_limiter  # type: ignore[attr-defined]
        return self.model

    async def _turn(
        self,
        model: str | None,
        limits: ratelimit.RateLimits,
        messages: list[dict[str, str]],
        *,
        may_defer: bool = False,
    ) -> int | None:
        """Wait for the model's turn under its rate limits (none configured: at once),
        lending the server's slot meanwhile (`idle`); the tokens it was estimated at (None:
        the model has no token limit, nothing to count). With `may_defer` and
        `defer_turns` set, a turn further away raises `TurnLater` (nothing counted)."""
        found = limits.of_model(model)
        if found is None or model is None:
            return None
        estimate = sum(len(str(m.get("content", ""))) for m in messages) // 4 if found.tokens else 0
        if may_defer and self.defer_turns is not None:
            later = await self.rate_limiter.turn(model, found, estimate, wait=False)
            if later > self.defer_turns:
                raise ratelimit.TurnLater(model, later)
            if later > 0:  # near: waiting costs less than giving the slot back
                await self.rate_limiter.turn(model, found, estimate)
        elif self.idle is None:
            await self.rate_limiter.turn(model, found, estimate)
        else:
            async with self.idle():
                await self.rate_limiter.turn(model, found, estimate)
        return estimate if found.tokens else None

    async def _wait_out_429(self, model: str | None, seconds: float, *, defer: bool = True) -> None:
        """Sleep out a provider's long `Retry-After` as a turn is waited for (`_turn`):
        lending the server's slot (`idle`); on a worker, a wait beyond `defer_turns` gives
        the job up (`TurnLater`) and the thread runs again then, unless `defer` is false
        (a judge's call, whose checked output is paid for and not recorded yet)."""
        import asyncio

        if (
            defer
            and _RUN_DEPTH.get() == 1
            and self.defer_turns is not None
            and seconds > self.defer_turns
        ):
            raise ratelimit.TurnLater(model or "the model", seconds)
        if self.idle is None:
            await asyncio.sleep(seconds)
        else:
            async with self.idle():
                await asyncio.sleep(seconds)

    def _spent(self, model: str | None, usage: Usage, estimated: int | None) -> None:
        tokens = (usage.input_tokens or 0) + (usage.output_tokens or 0)
        if model is not None and estimated is not None:  # only a token limit needs them
            self.rate_limiter.spent(model, tokens, estimated)

    def takes_key(self, agent: Agent, function: str) -> bool | None:
        """Whether the tool `function` of `agent` takes an `idempotency_key`, resolved as
        a call resolves it; None when it does not resolve now. A call started and never
        answered is run again on resume only if it does (`_call_tool`)."""
        try:
            tool = self.toolbox.resolve(
                function, _folders(agent), allow_stdlib=_allowed_stdlib(agent, function)
            )
        except (tools.ToolImportError, ConfigError):
            return None
        return tool.accepts_key

    def _price_table(self, agent: Agent) -> Prices:
        """The prices for the agent's folder (the current one for an agent loaded from a
        module), read once per process (runtime/usage.py, `prices_for`)."""
        return prices_for(agent.directory or Path.cwd())

    def _notifier(self) -> Notifier:
        if self.notifier is None:
            self.notifier = default_notifier()
        return self.notifier

    async def _io(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        import asyncio

        if self.offload:
            # As `asyncio.to_thread` does: the call sees this task's context variables.
            call = functools.partial(contextvars.copy_context().run, function, *args, **kwargs)
            return await asyncio.get_running_loop().run_in_executor(_store_pool(), call)
        return function(*args, **kwargs)

    async def _write(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """The store's method `name` (`create`, `acquire`, `release`, as `append` in
        `record`): with `offload`, its `{name}_async` when the store has one (SQLite's
        group commit: the event loop stays free and no worker thread waits for the
        commit), else `_io`."""
        if self.offload and (grouped := getattr(self.store, f"{name}_async", None)):
            return await grouped(*args, **kwargs)
        return await self._io(getattr(self.store, name), *args, **kwargs)

    def release_leases(self) -> None:
        """Give up every lease this engine may still hold, for a caller whose run was cut
        short where no `finally` lets one go: a Ctrl-C landing just after a lease's write
        committed and before the code that holds the lease (`create` returning to
        `advance`). Each thread named in `leased` is asked for its live lease, released
        when this engine holds it. Synchronous (the run's event loop may be stopping);
        a failure only means the lease lapses on its own."""
        while self.leased:
            thread_id = self.leased.pop()
            with contextlib.suppress(Exception):
                lease = self.store.lease(thread_id)
                if lease is not None and lease.owner == self.owner:
                    self.store.release(lease)

    def _prove(self, thread: Thread) -> None:
        """Replay the log once when the state came from a snapshot sealed without a key,
        and refuse the thread (`BrokenLog`) if the two differ: someone re-sealed an edited
        snapshot. Reached only on the way to a tool call, so resuming stays cheap."""
        if not thread.unproven:
            return
        if thread.agent.module.replay(thread.events) != thread.state:
            raise BrokenLog(thread.id, len(thread.events), "its snapshot does not match its events")
        thread.unproven = False

    async def let_go(self, thread: Thread) -> None:
        """Give the thread's lease up; with `offload`, in a worker thread (a release is a
        commit, and a slow one must not stall the event loop, which serves every other
        thread and request). Shielded: a task cancelled meanwhile (this runs in `finally`
        blocks) still lets the lease go. A failure only means it lapses on its own."""
        if not self.offload:
            self._release(thread)
            return
        import asyncio

        lease, thread.lease = thread.lease, None
        if lease is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._write("release", lease))
            self.leased.discard(lease.thread_id)

    def _release(self, thread: Thread) -> None:
        """Give the thread's lease up (synchronously: this runs in `finally` blocks, even
        while a task is being cancelled). A failure only means it lapses on its own."""
        lease, thread.lease = thread.lease, None
        if lease is not None:
            with contextlib.suppress(Exception):  # the lease lapses by itself
                self.store.release(lease)
            self.leased.discard(lease.thread_id)

    def _announce(self, thread: Thread, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(thread, event)


STORE_WORKERS = 64
"""Worker threads for offloaded store calls, shared by every engine of the process. An
append waiting for a group commit (runtime/commits.py) holds one while it waits, so the
number of threads whose appends can share a transaction is at most this; asyncio's
default pool (cores + 4) would cap it at 6 on two cores."""

_store_pool = SharedPool(STORE_WORKERS, "twelvefold-store")


def _stamped(thread: Thread, event: Event) -> Event:
    """`event` naming the traced run that appends it (`run_trace`), the first of the run
    to be appended; an event whose `trace` names the run already is left as it is."""
    stamp, thread.stamp = thread.stamp, None
    if getattr(event, "trace", None) == stamp:
        return event
    return replace(event, run_trace=stamp)


def retry_due(events: Sequence[Event]) -> float | None:
    """When a tool call that failed an attempt is tried again (Unix seconds), if the log
    ends in its `AttemptFailed`; None otherwise. An unreadable time counts as due now."""
    last = events[-1] if events else None
    if not isinstance(last, AttemptFailed):
        return None
    try:
        moment = datetime.fromisoformat(last.retry_at)
    except ValueError:
        return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _failed_attempts(events: Sequence[Event], key: str) -> int:
    """How many attempts of the call with `key` failed since it was last started afresh:
    the `AttemptFailed` events among the log's last run of `ToolStarted`/`AttemptFailed`
    events with that key (a person's `Retried` starts the count again)."""
    count = 0
    for event in reversed(events):
        if isinstance(event, AttemptFailed) and event.key == key:
            count += 1
        elif not (isinstance(event, ToolStarted) and event.key == key):
            break
    return count


def model_failure(exc: BaseException, attempts: Attempts | None) -> ModelError | None:
    """What a model's `complete` raised, as the step's failure: a `ModelError` as it is;
    any other `Exception` (a custom model's own, a `RecursionError` or a `MemoryError`
    too) as a `ModelError` of its type and message, carrying what the call's finished
    attempts were paid for (`attempts`). None for what must go on up: what ends a
    process or a task (KeyboardInterrupt, SystemExit, a cancellation: no `Exception`)
    and a `StopsTheRun` (a cassette that cannot be recorded to)."""
    if isinstance(exc, ModelError):
        return exc
    if not isinstance(exc, Exception) or isinstance(exc, StopsTheRun):
        return None
    return ModelError(tools.describe(exc), None if attempts is None else attempts.paid)


def proper_reply(reply: object, action: CallModel) -> ModelReply | ErrorInfo:
    """`checked_output`'s reply: with its output validated again (a copy), or the error."""
    output = checked_output(reply, action)
    if isinstance(output, ErrorInfo):
        return output
    assert isinstance(reply, ModelReply)  # (`checked_output` refuses anything else)
    return replace(reply, output=output)


def checked_output(reply: object, action: CallModel) -> BaseModel | ErrorInfo:
    """What a model's `complete` answered, as the step's output: validated again as the
    step's declared type (a copy: the generated types revalidate instances), or why it
    cannot be the step's output: no `ModelReply` at all (None, a dict), an output of a type
    the step does not output or one that validation refuses (built by `model_construct`,
    a subclass with fields of its own: the store could not read it back), or a usage that
    is no `Usage` of numbers (a model of the user's own can answer anything; the reducer,
    or the pricing, would refuse it)."""
    if not isinstance(reply, ModelReply):
        return ErrorInfo(
            "ModelError", f"the model answered with {type(reply).__name__}, not a ModelReply"
        )
    output = reply.output
    declared: type[BaseModel] | None = type(output)
    if declared not in action.outputs:  # (the common case is one test)
        declared = next((t for t in action.outputs if isinstance(output, t)), None)
        if declared is None:
            expected = " | ".join(t.__name__ for t in action.outputs)
            return ErrorInfo(
                "ModelError",
                f"the model's output is a {type(output).__name__}: `{action.step}`"
                f" outputs {expected}",
            )
    try:
        valid: BaseModel = declared.__pydantic_validator__.validate_python(output)
    except ValidationError as exc:
        problems = validation_problems(exc, model=declared)
        return ErrorInfo(
            "ModelError",
            f"the model's output is not a valid {declared_name(declared)}: {problems}",
        )
    except Exception as exc:  # a property or a validator of the user's own that breaks
        return ErrorInfo("ModelError", f"the model's output could not be checked: {exc!r}")
    usage: object = reply.usage  # typed a Usage, but a custom model's may be anything
    if not isinstance(usage, Usage):
        given = type(usage).__name__
        return ErrorInfo("ModelError", f"the model's reply gives {given} as its usage, not a Usage")
    inputs, outputs, latency, cost = (
        usage.input_tokens,
        usage.output_tokens,
        usage.latency_ms,
        usage.cost_usd,
    )
    if (
        (inputs is None or (type(inputs) is int and -_HUGE < inputs < _HUGE))
        and (outputs is None or (type(outputs) is int and -_HUGE < outputs < _HUGE))
        and (latency is None or type(latency) is float)
        and (cost is None or type(cost) is float)
    ):
        return valid  # the usual usage, passed in one test (the loop below judges the rest)
    for name in _USAGE_NUMBERS:  # counts, ranges and costs are judged later (`_valid_cost`)
        value = getattr(usage, name)
        if value is not None and (type(value) is bool or not isinstance(value, int | float)):
            return ErrorInfo(
                "ModelError",
                f"the model's usage gives {name} as {type(value).__name__}, not a number",
            )
        if isinstance(value, int) and not -_HUGE < value < _HUGE:
            # No count, cost or latency is this large; a float could not hold it (a cost
            # judged as one would overflow) nor a store read it back (an int of thousands
            # of digits).
            return ErrorInfo("ModelError", f"the model's usage gives {name} as a huge integer")
    return valid


def _proper_or_raise(reply: object, action: CallModel, attempts: Attempts) -> ModelReply:
    """`proper_reply`'s reply, or its error raised as the call's `ModelError` (what the
    call's attempts were paid for goes with it)."""
    checked = proper_reply(reply, action)
    if isinstance(checked, ErrorInfo):
        raise ModelError(checked, attempts.paid)
    return checked


_USAGE_NUMBERS = ("input_tokens", "output_tokens", "latency_ms", "cost_usd")

_HUGE = 2**63
"""Past any usage number a call could report (a 64-bit count, as the stores hold one)."""


async def _within(
    seconds: float, call: Awaitable[ModelReply], attempts: Attempts | None = None
) -> ModelReply:
    """`call` (a model's `complete`) awaited for at most `seconds` (`model_call_timeout`,
    runtime/ratelimit.py), from now. Past them it is cancelled and fails with a
    `ModelError` (`APITimeoutError`): a step failure, as the openai client's own timeouts,
    carrying what the call's finished attempts were paid for (`attempts`: the replies
    re-asked before the one that did not come back). A `TimeoutError` of the call's own is
    raised as it is (the caller makes it the step's failure: `model_failure`)."""
    import asyncio

    deadline = asyncio.timeout(seconds)
    started = time.perf_counter()
    try:
        async with deadline:
            return await call
    except TimeoutError as caught:
        if not deadline.expired():
            raise
        paid = None if attempts is None else attempts.paid
        if paid is not None:
            paid = replace(paid, latency_ms=tools.ms_since(started))
        raise ModelError(
            ErrorInfo(
                "APITimeoutError",
                f"the model call did not end within {seconds:g} s (model_call_timeout, "
                "docs/runtime.md: Rate limits, Deadline)",
            ),
            paid,
        ) from caught


async def _sleep_until(moment: float) -> None:
    import asyncio

    await asyncio.sleep(max(0.0, moment - time.time()))


def tool_event(step: str, key: str, outcome: tools.Outcome, *, trace: str | None = None) -> Event:
    """The event that records a tool call's `outcome`: its result, a failed attempt that
    is tried again after its backoff (carrying `trace`, the run's traceparent), or the
    step's failure (keeping the key of a call whose outcome is unknown)."""
    if outcome.error is not None and outcome.retry_in is not None:
        # Tried again after the backoff: the wait is in the log, not in this process.
        retry_at = datetime.now(UTC) + timedelta(seconds=outcome.retry_in)
        return AttemptFailed(
            step=step,
            at=now_iso(),
            usage=outcome.usage,
            key=key,
            error=outcome.error,
            attempt=outcome.attempt,
            retry_at=retry_at.isoformat(),
            trace=trace,
        )
    if outcome.error is not None:
        return StepFailed(
            step=step,
            at=now_iso(),
            usage=outcome.usage,
            error=outcome.error,
            key=key if outcome.unknown else None,
        )
    assert outcome.result is not None
    return tool_result_event(step, key, outcome.usage, outcome.result)


def model_output_event(step: str, usage: Usage | None, output: Any) -> Event:
    """The `ModelOutput` of a checked reply; a `StepFailed` (`Unstorable`, paid for) when
    no store can hold it (`codec.unstorable`): never recorded, never dispatched."""
    if (unfit := unstorable(output, "the model's output")) is not None:
        error = ErrorInfo(type=UNSTORABLE, message=unfit)
        return StepFailed(step=step, at=now_iso(), usage=usage, error=error)
    return build_model_output(step=step, at=now_iso(), usage=usage, output=output)


def tool_result_event(step: str, key: str, usage: Usage | None, result: Any) -> Event:
    """The `ToolResult` of a call; a `StepFailed` (`Unstorable`) when no store can hold
    the result. The call ran (its effect is done), so the failure keeps its key, as for
    a call whose outcome is unknown: a person's retry calls it again with the same key."""
    if (unfit := unstorable(result, "the tool's result")) is not None:
        error = ErrorInfo(type=UNSTORABLE, message=unfit)
        return StepFailed(step=step, at=now_iso(), usage=usage, error=error, key=key)
    return build_tool_result(step=step, at=now_iso(), usage=usage, result=result)


def _has_work(state: State) -> bool:
    """Whether `advance` would act: running, or waiting with nobody told yet."""
    return state.status == "running" or (state.status == "waiting" and not state.notified)


def _secrets_out(outcome: tools.Outcome, thread: Thread, action: CallTool) -> tools.Outcome:
    """The outcome with the thread's secret values taken out of its error message (a
    tool that fails with its input's API key in the text): the message goes into the
    log, `show` and the context window. The secrets are the values of secret fields in
    the tool's input and in every record the log holds (docs/language.md, "Secret
    fields"). Only on the failure path: a tool that succeeds pays nothing."""
    error = outcome.error
    if error is None or not error.message:
        return outcome
    found = secret_values(action.value)
    for event in thread.events:
        for each in fields(event):
            value = getattr(event, each.name)
            if isinstance(value, BaseModel | list | tuple | Mapping):
                found |= secret_values(value)
    message = without_secrets(error.message, found)
    if message == error.message:
        return outcome
    return replace(outcome, error=replace(error, message=message))


def started(agent: Agent, input: Any, *, trace: str | None = None) -> Started:
    return Started(step=agent.spec.start, at=now_iso(), input=input, trace=trace)


def question(action: AwaitApproval | AwaitAnswer) -> str:
    """The `ask` template rendered over the waiting step's value.

    Raises context.AskRenderError when it cannot be: the raw template is never shown.
    """
    from .context import render_ask

    return render_ask(action.ask, action.value)


def notice(thread: Thread, action: AwaitApproval | AwaitAnswer) -> Notice:
    from .notify import Notice

    return Notice(
        thread_id=thread.id,
        agent=thread.agent.name,
        step=action.step,
        kind="approval" if isinstance(action, AwaitApproval) else "human",
        text=question(action),
        value=action.value,
        approvers=action.approvers if isinstance(action, AwaitApproval) else (),
        request=action.request,
    )


def default_notifier() -> Notifier:
    """The channels TWELVEFOLD_NOTIFY_* / TWELVEFOLD_SMTP_* configure (stderr by default)."""
    from .notify import notifier_from_env

    return notifier_from_env()


_FINGERPRINTS: weakref.WeakKeyDictionary[Any, str | None] = weakref.WeakKeyDictionary()
"""Each module's fingerprint, taken once: its file may be deleted or moved later (a
cleaned cache, a moved project) while the module stays imported and keeps running."""


def _fingerprint(module: AgentModule | ModuleType) -> str | None:
    """The first 16 hex digits of the SHA-256 of the module's file, as it was the first
    time an agent was made of the module (right after it was imported); None for a module
    without a readable file."""
    try:
        return _FINGERPRINTS[module]
    except KeyError:
        pass
    file = getattr(module, "__file__", None)
    try:
        source = Path(file).read_bytes() if file else None
    except OSError:
        source = None
    fingerprint = hashlib.sha256(source).hexdigest()[:16] if source is not None else None
    with contextlib.suppress(TypeError):  # an object with no weak reference: each time
        _FINGERPRINTS[module] = fingerprint
    return fingerprint


def prompt_error(action: CallModel, exc: Exception) -> ErrorInfo:
    """One line for a prompt that could not be rendered (missing, unreadable, or raising)."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return ErrorInfo(
        "PromptError",
        f"prompt `{action.prompt}` could not be rendered: {type(exc).__name__}"
        + (f": {detail}" if detail else ""),
    )


def _requested_model(resolve: Callable[[CallModel], Any] | None, action: CallModel) -> str | None:
    """The model a call asks for: the model's own `requested_model` when it has one (the
    real client's `--model`, the step's `model`, OPENAI_MODEL), else the step's `model`."""
    if callable(resolve):
        name = resolve(action)
        return name if isinstance(name, str) else None
    return action.model


def _priced_usage(usage: Usage, requested: str | None, prices: Prices) -> Usage:
    """A failed call's usage (`ModelError.usage`) with its cost, priced as a reply's is,
    and no latency unless a `valid_latency`."""
    if usage.latency_ms is not None and not valid_latency(usage.latency_ms):
        usage = replace(usage, latency_ms=None)
    if usage.cost_usd is not None:
        return usage
    cost = prices.cost(requested, usage)
    return usage if cost is None else replace(usage, cost_usd=cost)


def _priced(reply: ModelReply, requested: str | None, prices: Prices, started: float) -> Usage:
    """The reply's usage with the latency the loop saw (when the model measured none) and
    its cost: priced by the model asked for, else by the one that answered."""
    usage = reply.usage
    given = usage.latency_ms
    latency = given if valid_latency(given) else tools.ms_since(started)
    cost = usage.cost_usd
    if cost is None and (usage.input_tokens is not None or usage.output_tokens is not None):
        known = requested if prices.price(requested) is not None else reply.model
        cost = prices.cost(known, usage)
    if latency == usage.latency_ms and cost == usage.cost_usd:
        return usage
    return build_usage(latency, usage.input_tokens, usage.output_tokens, cost)


def priced_reply(
    reply: ModelReply, requested: str | None, prices: Prices, started: float
) -> tuple[Usage, ErrorInfo | None]:
    """`_valid_cost(_priced(reply, requested, prices, started))` in one call (every model
    call that answered makes it): the usual reply, whose token counts are whole numbers
    in range (or unknown) and whose cost, once priced, is a valid one, is priced and
    passed here; any other takes those two functions' way."""
    usage = reply.usage
    inputs, outputs = usage.input_tokens, usage.output_tokens
    if (inputs is None or (type(inputs) is int and 0 <= inputs <= MAX_CALL_TOKENS)) and (
        outputs is None or (type(outputs) is int and 0 <= outputs <= MAX_CALL_TOKENS)
    ):  # `token_count_error` finds nothing
        given = usage.latency_ms
        if not ((type(given) is float or type(given) is int) and 0 < given <= MAX_LATENCY_MS):
            given = None  # not a `valid_latency` (NaN, ±inf, 0 or below): the loop measures
        latency = given or round((time.perf_counter() - started) * 1_000_000) / 1000
        cost = usage.cost_usd
        if cost is None and (inputs is not None or outputs is not None):
            known = requested if prices.price(requested) is not None else reply.model
            cost = prices.cost(known, usage)
        if cost is None or valid_cost(cost):
            if latency == given and cost == usage.cost_usd:
                return usage, None
            return build_usage(latency, inputs, outputs, cost), None
    return _valid_cost(_priced(reply, requested, prices, started))


def uncounted(spec: AgentSpec, usage: Usage) -> ErrorInfo | None:
    """Why a call that answered cannot be counted against the agent's budgets, or None:
    under `max_tokens` or `max_cost`, a reply that reported no token count for its input
    or its output (`total_tokens` fills in the side it can: runtime/model.py); under
    `max_cost`, one whose cost is unknown (no price for the model that answered). A budget cannot
    bound what it cannot count: the step fails with `TokenCountError`, which the reducer
    counts as spending what was left of each budget (`AgentSpec.spend`), so the budget
    decides at once where the thread goes."""
    if spec.max_tokens is None and spec.max_cost is None:
        return None
    if usage.input_tokens is None and usage.output_tokens is None:
        why = "the model reported no token counts"
    elif usage.input_tokens is None or usage.output_tokens is None:
        # One side alone (with no total to tell the other) may be anything, 0 included:
        # counted as the rest being 0, a budget would let such calls run for ever.
        side = "input" if usage.input_tokens is None else "output"
        why = f"the model reported no token counts for its {side}"
    elif spec.max_cost is not None and usage.cost_usd is None:
        why = "the call's cost is unknown (no price for the model that answered)"
    else:
        return None
    return ErrorInfo(
        TOKENS_ERROR,
        f"{why}: the agent's budget cannot count this call, so it counts as spending what "
        "was left of it (docs/language.md, Budgets)",
    )


def paid_failure(
    spec: AgentSpec, paid: Usage | None, requested: str | None, prices: Prices, started: float
) -> tuple[Usage, ErrorInfo | None]:
    """A failed call's usage as its `StepFailed` records it (`paid`: its attempts' tokens,
    None when no reply came; `started`: its `perf_counter`), and the error that replaces
    the call's own when the usage cannot be recorded or counted, as a reply's would be
    (`_valid_cost`; `uncounted`: under a budget, attempts that reported no count spend
    what was left of it)."""
    if paid is None:
        return _since(started), None
    usage, bad = _valid_cost(_priced_usage(paid, requested, prices))
    if bad is None:
        bad = uncounted(spec, usage)
    return usage, bad


def budget_check(
    spec: AgentSpec,
    state: State,
    requested: str | None,
    prices: Prices,
    *,
    before: Usage | None = None,
) -> Callable[[Usage], bool]:
    """`ModelRequest.budget_spent` for a model call at `state` (an `llm` step): whether
    the call's attempts so far (`paid`, as `ModelError.usage` carries them), priced and
    recorded as the step's failure would record them (after `before`, the checked call,
    for a judge's call), spend a budget as the reducer counts it
    (`AgentSpec.fails_over_budget`). Built only for an agent with a budget."""

    def spent(paid: Usage) -> bool:
        priced = _priced_usage(paid, requested, prices)
        usage, bad = _valid_cost(priced if before is None else _added(before, priced))
        if bad is None and uncounted(spec, usage) is not None:
            return True  # an attempt the budget cannot count spends what was left of it
        failed = StepFailed(step=state.step, usage=usage, error=bad or _STOPPED)
        return spec.fails_over_budget(state, failed)

    return spent


_STOPPED = ErrorInfo("InvalidOutput", "")
"""The error a call stopped by `budget_check` is counted with (the reducer reads only a
`CostError`'s or a `TokenCountError`'s type)."""


def _valid_cost(usage: Usage) -> tuple[Usage, ErrorInfo | None]:
    """`usage` as it may be recorded, and the error that fails the step when a token
    count is not a `valid_tokens` (a whole number from 0 to `MAX_CALL_TOKENS`): then
    without its counts and cost, which count as unknown, and both budgets as spent; or
    when its cost is not a `valid_cost` (a finite number from 0 to `MAX_CALL_COST` USD):
    then without the cost, and a cost budget counts as spent (runtime/spec.py)."""
    bad_count = token_count_error(usage)
    if bad_count is not None:
        return replace(usage, input_tokens=None, output_tokens=None, cost_usd=None), bad_count
    cost = usage.cost_usd
    if cost is None or valid_cost(cost):
        return usage, None
    tokens = f"{usage.input_tokens}→{usage.output_tokens} tokens"
    return replace(usage, cost_usd=None), ErrorInfo(
        COST_ERROR,
        f"the call's cost is not a number of dollars from 0 to {MAX_CALL_COST:,.0f} "
        f"({tokens}, {number_text(cost)} USD): check the model's price in "
        "[tool.twelvefold.prices] (docs/runtime.md, Cost)",
    )


def _added(usage: Usage, more: Usage | None) -> Usage:
    """Two calls' usage as one step's: latencies, token counts and costs added (a count
    or a cost neither call knows stays unknown)."""
    if more is None:
        return usage

    def plus(a: Any, b: Any) -> Any:
        return b if a is None else a if b is None else a + b

    cost = plus(usage.cost_usd, more.cost_usd)
    return Usage(
        plus(usage.latency_ms, more.latency_ms),
        plus(usage.input_tokens, more.input_tokens),
        plus(usage.output_tokens, more.output_tokens),
        None if cost is None else round(cost, 9),
    )


def _unpriced(model: str) -> ErrorInfo:
    return ErrorInfo(
        "UnpricedModel",
        f"the agent sets max_cost, but model `{model}` has no price: add it to "
        "[tool.twelvefold.prices] (USD per million tokens, input and output)",
    )


def _plain(value: Any) -> Any:
    """A value as a span shows it: secret fields redacted (runtime/redact.py)."""
    return shown_value(value)


def _since(started: float) -> Usage:
    return Usage(latency_ms=tools.ms_since(started))


_PROMPTS = Path("prompts")

LONG_429_WAITS = 2
"""How many times one step's call is made again after a 429 whose `Retry-After` the openai
client would not wait for (each wait capped at `MAX_PAUSE_SECONDS`); then the step fails."""

_RUN_DEPTH: contextvars.ContextVar[int] = contextvars.ContextVar("twelvefold_run_depth", default=0)
"""How many runs this task is inside (1: a thread's own; 2 and more: a sub-agent's)."""
"""Where prompt files are looked up for an agent loaded without a prompts directory."""


def _folders(agent: Agent) -> tuple[Path, ...]:
    return (agent.directory,) if agent.directory is not None else ()


def _allowed_stdlib(agent: Agent, reference: str) -> tuple[str, ...]:
    """The standard-library modules the agent's configuration lets its tools name, read
    at each call of a tool that names one (like every setting; raises `ConfigError`).
    Other tools never need the configuration, so their calls do not read it."""
    if agent.directory is None or stdlib_module(reference) is None:
        return ()
    return find_config(agent.directory).allow_stdlib


__all__ = [
    "INTERRUPTED",
    "Agent",
    "AgentChanged",
    "AgentModule",
    "Engine",
    "Thread",
    "ToolResult",
    "started",
]
