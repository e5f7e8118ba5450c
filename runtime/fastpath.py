"""The synchronous path: the routine model and tool calls of a thread run on the
caller's own thread (in memory, or in SQLite), performed by plain calls instead of the
loop's coroutines.

`Engine.advance` (runtime/loop.py) performs one action per turn of an `async` loop: a
coroutine for the model call and one for the model's `complete`, one for the tool call
and one per attempt, and the checks every store and every configuration needs. For a
thread in a `MemoryStore` or a `SqliteStore`, not offloaded and not traced, most of
that can never wait for anything but the store's own commit (made on the calling
thread: `SqliteStore.append_one` returns once its event is committed), so
`Routine.run` performs such a thread's actions one after another in a plain loop, as
long as each is routine:

- a model call of an `llm` step without checks (`validate`, `judge`), whose model has
  no rate limit configured and finds a place under the cap on calls in flight at once,
  and whose `complete` returns without suspending (the model is called the same way,
  its coroutine driven by hand; one that suspends is awaited from where it stopped, and
  that model's later calls take the ordinary path);
- a tool call of a synchronous tool without a `timeout`, that is not the recovery of a
  call started before a crash nor a retry whose backoff the log records.

Anything else (a pause, a sub-agent, the end, a step that is not routine) is handed
back to the ordinary loop, which performs it as before. The events are the ones the
ordinary path records, built by the same functions (tests/test_runtime_fastpath.py
runs threads both ways and compares their logs field by field), each reduced and
appended under the thread's lease before the next call starts, the lease checked before
each call, budgets and `max_steps` decided by the same reducer.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from pathlib import Path
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from . import loop, tools
from .codec import unstorable
from .config import ConfigError, stdlib_module
from .model import Attempts, ModelError, ModelReply, build_model_request
from .ratelimit import rate_limits_for
from .store import MemoryStore, SqliteStore, now_iso
from .types import (
    Action,
    AttemptFailed,
    CallModel,
    CallTool,
    ErrorInfo,
    Event,
    ModelOutput,
    State,
    StepFailed,
    build_model_output,
    build_tool_result,
    build_tool_started,
    build_usage,
)

if TYPE_CHECKING:
    from .lease import Held
    from .loop import Engine, Thread
    from .model import Model
    from .spec import AgentSpec
    from .usage import Prices


def routine(engine: Engine, thread: Thread) -> Routine | None:
    """The synchronous path for `thread` in `engine`, or None when it may not be taken: a
    store other than exactly `MemoryStore` or `SqliteStore` (PostgreSQL's append waits
    on the network; a subclass may do more), blocking work offloaded (threads sharing an
    event loop: the server, `AsyncRuntime`, where SQLite's group commit serves them), or
    the run traced (its spans are the ordinary path's)."""
    if engine.offload or thread.run is not None or type(engine.store) not in _SERVED:
        return None
    return Routine(engine, thread)


_SERVED = (MemoryStore, SqliteStore)
"""The stores served, exactly (a subclass may do more). Each has `append_one`."""


class Suspended:
    """A model call whose `complete` suspended: `settle` awaits it from where it stopped
    and returns its event (to be recorded)."""

    def __init__(self, routine: Routine, call: _ModelCall, rest: Awaitable[Any]) -> None:
        self._routine, self._call, self._rest = routine, call, rest

    async def settle(self) -> Event:
        call, engine = self._call, self._routine.engine
        agent = self._routine.thread.agent
        seconds = rate_limits_for(agent.directory or Path.cwd()).call_seconds  # (cached)
        try:
            # Timed from here: the call's start ran without waiting for anything.
            reply = await loop._within(seconds, self._rest, call.attempts)
        except Exception as exc:
            failure = loop.model_failure(exc, call.attempts)
            if failure is None:
                raise
            error = failure
        else:
            return call.answered(reply)
        finally:
            engine.in_flight.leave()
        if error.retry_after is None or error.usage is not None:
            return call.failed(error)
        # A 429 asking for longer than the openai client waits: the ordinary path's wait
        # (holding no slot; a worker gives the job up), then its call, which owns the rest.
        await engine._wait_out_429(call.requested, min(error.retry_after, loop.MAX_PAUSE_SECONDS))
        return await engine._call_model(self._routine.thread, call.action, waits=1)


class Routine:
    """The synchronous path for one `advance` of one thread (see the module's doc)."""

    def __init__(self, engine: Engine, thread: Thread) -> None:
        self.engine = engine
        self.thread = thread
        agent = thread.agent
        store: MemoryStore | SqliteStore = engine.store  # type: ignore[assignment]  # (`routine`)
        self._append = store.append_one
        self._pairs = store.append_events if type(store) is SqliteStore else None
        """How a model's output and the start of the tool call it chose are committed
        together (SQLite: one fsync for the two; see `run`)."""
        self._pending: Event | None = None
        """A model's output reduced into `thread.state` and not appended yet: it is
        appended with the start of the tool call that follows, or alone (`_flush`)
        before anything else happens."""
        self._prior: State | None = None
        """`thread.state` before the pending output, put back if appending it fails."""
        self._reduce = agent.module.reduce
        self._codec, self._reducer = agent.codec, agent.reducer
        self._spec = spec = agent.spec  # (a property)
        self._budgeted = spec.max_cost is not None or spec.max_tokens is not None
        self._prompts = agent.prompts_dir or _PROMPTS
        self._tools: dict[str, tools.Tool] = {}
        """Tools resolved during this run, by `module:function` (the toolbox caches them
        too; this skips its cache key)."""
        self._prices: Prices | None = None
        """The agent's price table (read once per process: `usage.prices_for`)."""
        self._unlimited: tuple[str | None, int | None] | None = None
        """The model last asked for and the cap on calls in flight, once its
        configuration was read and it had no rate limit."""
        self._model: Model | None = None
        """The engine's model, looked up at this run's first model call."""
        self._messages: Callable[..., list[dict[str, Any]]] = _no_messages
        """The engine's `messages`, looked up with the model."""
        self._resolver: Callable[[CallModel], Any] | None = None
        """The model's own `requested_model`, when it has one (`loop._requested_model`)."""

    def run(self, held: Held) -> Action | Suspended:
        """Perform routine actions until the thread stops running or its next action is
        not routine; return that action for the ordinary loop to perform (a `Suspended`
        model call: to await and record). `LeaseLost` once a renewal failed, before any
        new call starts; what the reducer or the store refuse raises as on the ordinary
        path (nothing of it is recorded).

        In SQLite, a model's output whose next action is a routine tool call is committed
        in one transaction with that call's `ToolStarted` (`SqliteStore.append_events`):
        nothing happens between the two but the reducer's own work, so one fsync serves
        both. Neither is told to the event hook, nor the tool run, before that commit; a
        crash before it loses the output as a crash during the model call would (the
        call is made again on resume). When the tool call turns out not to be routine,
        or anything raises, the output is appended alone first; so it is before the tool's
        module is imported (its code runs, for as long as it takes) and, when an event
        hook is told, before the start of a call that takes no idempotency key (a hook
        that raises on the output must leave that call not started, to run on resume).

        What stopped the run is what the caller sees (a Ctrl-C during the pair's commit
        is raised once it is done), even when appending the output alone fails after it
        (refused: the pair is stored after all)."""
        try:
            action = self._run(held)
        except BaseException as stopped:
            if self._pending is not None:
                try:
                    self._flush()
                except BaseException as also:
                    stopped.add_note(f"the model's output was not stored alone either: {also!r}")
            raise
        if self._pending is not None:
            self._flush()
        return action

    def _run(self, held: Held) -> Action | Suspended:
        thread, engine = self.thread, self.engine
        next_action = thread.agent.module.next_action
        model_step, tool_step = self._model_step, self._tool_step
        # `book`, written out below for the event that ends each call (two of a pair of
        # steps' three events): the same reduce, append and hook, one call fewer each.
        reduce, append, codec, reducer = self._reduce, self._append, self._codec, self._reducer
        thread_id, events, lease = thread.id, thread.events, thread.lease
        assert lease is not None  # held by `advance` while it runs
        pairs = self._pairs is not None
        while True:
            state = thread.state
            action = next_action(state)
            if state.status != "running":
                return action
            kind = type(action)
            if kind is CallModel:
                event = model_step(action)  # type: ignore[arg-type]
            elif kind is CallTool:
                event = tool_step(action)  # type: ignore[arg-type]
            else:
                return action
            if event is None:
                return action  # not routine: the ordinary loop performs it
            if isinstance(event, Suspended):
                return event
            state = reduce(thread.state, event)  # an impossible event raises: nothing stored
            if (
                pairs
                and type(event) is ModelOutput
                and state.status == "running"
                and type(next_action(state)) is CallTool
            ):
                self._prior = thread.state
                self._pending, thread.state = event, state  # appended with the tool's start
                if held.problem is not None:
                    held.check()  # (the output is appended alone on the way out)
                continue
            append(thread_id, len(events), event, codec, state, reducer, lease)
            events.append(event)
            thread.state = state
            hook = engine.on_event
            if hook is not None:
                hook(thread, event)
            if held.problem is not None:
                held.check()  # lost the lease: start nothing more (raises `LeaseLost`)

    def book(self, event: Event) -> None:
        """`Engine.book` by the store's `append_one`: reduce (an impossible event raises,
        nothing is stored), append under the lease (in SQLite: committed when it
        returns; with the model output still to append, in the same transaction), tell
        the event hook of each (with the thread as it stood after it)."""
        thread = self.thread
        state = self._reduce(thread.state, event)
        lease = thread.lease
        assert lease is not None  # held by `advance` while it runs
        events, pending, hook = thread.events, self._pending, self.engine.on_event
        if pending is None:
            self._append(thread.id, len(events), event, self._codec, state, self._reducer, lease)
        else:
            assert self._pairs is not None  # (set only where pairs are appended)
            pair = (pending, event)
            self._pairs(thread.id, len(events), pair, self._codec, state, self._reducer, lease)
            self._pending = None
            events.append(pending)
            if hook is not None:
                # Told with the thread as it stood after it (`thread.state` is still the
                # output's), as the ordinary path tells it; the start is in the thread
                # afterwards even if the hook raises, as it is in the store, and the hook
                # is told of it too: it is stored (the call runs on resume, with its key),
                # and the hook hears of every event stored, as on the ordinary path.
                try:
                    hook(thread, pending)
                except BaseException as stopped:
                    events.append(event)
                    thread.state = state
                    try:
                        hook(thread, event)
                    except BaseException as also:
                        stopped.add_note(f"told of the tool call's start, it raised {also!r}")
                    raise
        events.append(event)
        thread.state = state
        if hook is not None:
            hook(thread, event)

    def _flush(self) -> None:
        """Append the model output waiting for its tool call's start alone (the call was
        not routine, or something raised, its pair's append included), and tell the
        event hook. If that fails too, the thread's state is put back to the log's."""
        thread, event = self.thread, self._pending
        assert event is not None and thread.lease is not None
        self._pending = None
        events = thread.events
        state = thread.state  # (the state after it: nothing was reduced since)
        try:
            self._append(
                thread.id, len(events), event, self._codec, state, self._reducer, thread.lease
            )
        except BaseException:
            assert self._prior is not None
            thread.state = self._prior  # as the log in the store has it
            raise
        events.append(event)
        hook = self.engine.on_event
        if hook is not None:
            hook(thread, event)

    # ---- a model call ---------------------------------------------------------------

    def _model_step(self, action: CallModel) -> Event | Suspended | None:
        if action.validators or action.judge is not None:
            return None
        engine = self.engine
        model = self._model
        if model is None:
            model = self._model = engine._model()  # one per run (`advance`)
            resolver = engine._resolver
            self._resolver = resolver if callable(resolver) else None
            if engine.messages is None:
                from .context import build_messages  # as the ordinary path: jinja2 here

                engine.messages = build_messages
            self._messages = engine.messages
        if engine.suspends is model:
            return None  # it waits for I/O: the ordinary path's cost is nothing beside it
        thread = self.thread
        try:
            requested = action.model if self._resolver is None else self._requested(action)
        except Exception:
            return None  # the ordinary path records the step's failure
        unlimited = self._unlimited
        if unlimited is None or unlimited[0] != requested:
            unlimited = self._unlimited = self._limits(requested)
            if unlimited is None:
                return None
        prices = self._prices
        if prices is None:
            try:
                prices = self._prices = engine._price_table(thread.agent)
            except ConfigError:
                return None  # the ordinary path records the step's failure
        spec = self._spec
        if spec.max_cost is not None and requested and prices.price(requested) is None:
            return None  # refused before it costs, by the ordinary path
        events = thread.events
        try:
            messages = self._messages(spec, action, events, self._prompts)
        except Exception:
            return None  # the ordinary path records the prompt's failure
        in_flight = engine.in_flight
        if not in_flight.take(unlimited[1]):
            return None  # the cap is reached: the ordinary path waits for a place
        thread.model = requested
        budget = None
        if self._budgeted:
            # its re-asks stop at the budget, as on the ordinary path
            budget = loop.budget_check(spec, thread.state, requested, prices)
        attempts = Attempts()  # read if the call is cut at its deadline (`Suspended`)
        request = build_model_request(
            spec, action, messages, thread.id, len(events), budget, attempts
        )
        started = time.perf_counter()
        try:
            # Inside the `try`: a plain `def complete` may raise before any coroutine exists.
            coroutine = model.complete(request)
            if type(coroutine) is not CoroutineType:
                # An awaitable that is no coroutine (a task, a future), or none at all:
                # awaited as the ordinary path awaits it, and later calls take that path.
                engine.suspends = model
                return Suspended(
                    self, _ModelCall(spec, action, requested, prices, started, attempts), coroutine
                )
            yielded = coroutine.send(None)
        except StopIteration as stop:  # it answered without waiting: the routine case
            in_flight.leave()
            return _answered(spec, action, stop.value, requested, prices, started)
        except BaseException as exc:
            failure = loop.model_failure(exc, attempts)
            if failure is None:  # what ends the process, or a stop of the runtime's own
                in_flight.leave()
                raise
            call = _ModelCall(spec, action, requested, prices, started, attempts)
            if failure.retry_after is None or failure.usage is not None:
                in_flight.leave()
                return call.failed(failure)
            return Suspended(self, call, _raising(failure))  # a long 429: waited out there
        engine.suspends = model
        call = _ModelCall(spec, action, requested, prices, started, attempts)
        return Suspended(self, call, _Resumed(coroutine, yielded))

    def _requested(self, action: CallModel) -> str | None:
        """The model the call asks for when the model says (`loop._requested_model`)."""
        return loop._requested_model(self._resolver, action)

    def _limits(self, requested: str | None) -> tuple[str | None, int | None] | None:
        """`(requested, the cap on calls in flight)` when `requested` has no rate limit
        in the agent's configuration; None when it has one or the configuration cannot
        be read (the ordinary path waits for the turn, or records the failure)."""
        agent = self.thread.agent
        try:
            limits = rate_limits_for(agent.directory or Path.cwd())
        except ConfigError:
            return None
        if requested is not None and limits.of_model(requested) is not None:
            return None
        return requested, limits.in_flight

    # ---- a tool call ----------------------------------------------------------------

    def _tool_step(self, action: CallTool) -> Event | None:
        thread = self.thread
        events = thread.events
        if action.started_key is not None or thread.unproven:
            return None  # a call to recover, a state to prove: the ordinary path
        if events and type(events[-1]) is AttemptFailed and self._pending is None:
            return None  # a retry after its backoff: the ordinary path waits it out
        tool = self._tools.get(action.function)
        if tool is None:
            if stdlib_module(action.function) is not None:
                return None  # allowed by the configuration, read at every call
            toolbox, folders = self.engine.toolbox, _folders(thread)
            tool = toolbox.cached(action.function, folders)
            if tool is None:
                if self._pending is not None:
                    self._flush()  # importing runs the module's code: the output is kept first
                try:
                    tool = toolbox.resolve(action.function, folders)
                except tools.ToolImportError:
                    return None  # the ordinary path records the step's failure
            self._tools[action.function] = tool
        if tool.is_async or action.timeout_seconds is not None:
            return None
        if self._pending is not None and not tool.accepts_key and self.engine.on_event is not None:
            # A hook that raises as it is told of the output (or Ctrl-C meanwhile) must
            # find this call not started: on resume, a start without a result of a call
            # that takes no key is recorded as interrupted, never run again.
            self._flush()
        # The `ToolStarted`'s, after the output still to be appended with it, if any.
        position = len(events) + (self._pending is not None) + 1
        step, retry_key = action.step, action.retry_key
        key = retry_key or f"{thread.id}:{step}:{position}"
        begun = build_tool_started(step=step, at=now_iso(), key=key)
        if self._pending is None:
            # `book`, written out for the usual case (no output waiting to be appended
            # with it: every call in memory): reduce, append under the lease, tell.
            state = self._reduce(thread.state, begun)
            lease = thread.lease
            assert lease is not None  # held by `advance` while it runs
            self._append(thread.id, len(events), begun, self._codec, state, self._reducer, lease)
            events.append(begun)
            thread.state = state
            hook = self.engine.on_event
            if hook is not None:
                hook(thread, begun)
        else:
            self.book(begun)
        # A new key has no failed attempts yet (a retry after a backoff is not taken here).
        attempt = 1 if retry_key is None else 1 + loop._failed_attempts(events, key)
        done = tools.call_here(tool, action, key, attempt)
        if isinstance(done, tuple):  # the usual call: its result (valid), latency, attempt
            result, ms, _ = done
            if unstorable(result, "") is None:  # `tool_result_event`'s usual case, inline
                return build_tool_result(
                    step=step, at=now_iso(), usage=build_usage(ms), result=result
                )
            return loop.tool_result_event(step, key, build_usage(ms), result)
        if done.error is None:  # `tool_event`'s result (no error: no secret to take out)
            returned = done.result
            assert returned is not None  # a call without an error returned its result
            return loop.tool_result_event(step, key, done.usage, returned)
        return loop.tool_event(step, key, loop._secrets_out(done, thread, action))


class _ModelCall:
    """What a model call's event is made of once the model has answered."""

    __slots__ = ("action", "attempts", "prices", "requested", "spec", "started")

    def __init__(
        self,
        spec: AgentSpec,
        action: CallModel,
        requested: str | None,
        prices: Prices,
        started: float,
        attempts: Attempts,
    ) -> None:
        self.spec, self.action, self.requested, self.prices = spec, action, requested, prices
        self.started, self.attempts = started, attempts

    def answered(self, reply: ModelReply) -> Event:
        return _answered(self.spec, self.action, reply, self.requested, self.prices, self.started)

    def failed(self, exc: ModelError) -> Event:
        usage, bad_cost = loop.paid_failure(
            self.spec, exc.usage, self.requested, self.prices, self.started
        )
        error = exc.error if bad_cost is None else bad_cost
        return StepFailed(step=self.action.step, at=now_iso(), usage=usage, error=error)


def _answered(
    spec: AgentSpec,
    action: CallModel,
    reply: ModelReply,
    requested: str | None,
    prices: Prices,
    started: float,
) -> Event:
    """The `ModelOutput` of a call that answered (`started`: its `perf_counter`): usage
    priced, timed and checked as the ordinary path does (`loop._priced`, `_valid_cost`:
    a cost that is not a number fails the step; `loop.uncounted`: under a budget, a call
    it cannot count fails it too), or its `StepFailed` when the model answered with no
    proper reply (`loop.checked_output`: its output validated again)."""
    output = loop.checked_output(reply, action)
    if isinstance(output, ErrorInfo):
        return StepFailed(step=action.step, at=now_iso(), usage=loop._since(started), error=output)
    usage, bad_cost = loop.priced_reply(reply, requested, prices, started)
    if bad_cost is None and (spec.max_cost is not None or spec.max_tokens is not None):
        bad_cost = loop.uncounted(spec, usage)
    if bad_cost is not None:
        return StepFailed(step=action.step, at=now_iso(), usage=usage, error=bad_cost)
    if unstorable(output, "") is None:  # `model_output_event`'s usual case, inline
        return build_model_output(step=action.step, at=now_iso(), usage=usage, output=output)
    return loop.model_output_event(action.step, usage, output)


async def _raising(error: BaseException) -> Any:
    """An awaitable that fails with `error` (a call's error, to be settled on a loop)."""
    raise error


class _Resumed(Awaitable[Any]):
    """Awaiting a coroutine that was started by hand and suspended, yielding `yielded`:
    the task that awaits this waits for what it waits for and passes on what it is sent
    or thrown (a cancellation), as if it had awaited the coroutine from the start."""

    def __init__(self, coroutine: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coroutine, self._yielded = coroutine, yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coroutine, value = self._coroutine, self._yielded
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as exc:
                try:
                    value = coroutine.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coroutine.send(sent)
                except StopIteration as stop:
                    return stop.value


_PROMPTS = Path("prompts")


def _no_messages(*_: Any) -> list[dict[str, Any]]:
    raise AssertionError("looked up with the model, at a run's first model call")


def _folders(thread: Thread) -> tuple[Path, ...]:
    directory = thread.agent.directory
    return (directory,) if directory is not None else ()
