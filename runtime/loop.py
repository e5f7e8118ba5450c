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
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from . import tools
from .codec import Codec
from .model import Model, ModelError, ModelRequest

if TYPE_CHECKING:
    from .notify import Notice  # notify.py loads only when a thread waits
from .spec import ASK_NOT_SHOWN, AgentSpec
from .store import EventStore, Head, StoreError, ThreadInfo, now_iso
from .types import (
    Action,
    AwaitAnswer,
    AwaitApproval,
    CallModel,
    CallTool,
    ErrorInfo,
    Event,
    IllegalEvent,
    ModelOutput,
    Notified,
    Started,
    State,
    StepFailed,
    ToolResult,
    ToolStarted,
    Usage,
)

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


@dataclass(frozen=True)
class Agent:
    """A loaded agent: its generated module and what the runtime needs beside it."""

    module: AgentModule
    origin: str
    """How another process loads it again: a `.agent` path or a module name/path."""
    directory: Path | None = None
    """Where its tools are imported from (beside the current directory and --path)."""
    prompts_dir: Path | None = None
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


class Notifier(Protocol):
    async def notify(self, notice: Notice) -> list[str]: ...


EventHook = Callable[[Thread, Event], None]
"""Called after each event is stored (the CLI prints it)."""

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
    ) -> None:
        self.store = store
        self.messages = messages
        self.model = model
        self.notifier = notifier
        self.toolbox = tools.ToolBox(tool_paths)
        self.offload = offload and getattr(store, "blocking", True)
        self.on_event = on_event

    # ---- threads ------------------------------------------------------------------

    async def create(self, agent: Agent, events: Sequence[Event], thread_id: str) -> Thread:
        state = agent.module.replay(events)
        at = events[0].at or now_iso()
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
        )
        await self._io(self.store.create, info, events, agent.codec)
        thread = Thread(thread_id, agent, list(events), state)
        for event in events:
            self._announce(thread, event)
        return thread

    async def load(self, agent: Agent, thread_id: str) -> Thread:
        """The thread's events and its state: from the store's snapshot when this reducer
        made it from exactly these events, else by replaying the log."""
        events = await self._io(self.store.load, thread_id, agent.codec)
        snapshot = await self._io(self.store.snapshot, thread_id)
        # The snapshot is written in each append's transaction; the count is checked anyway
        # (a store that does not keep one up to date must not be believed).
        if snapshot and snapshot.reducer == agent.reducer and snapshot.seq == len(events):
            try:
                state = agent.codec.decode_state(snapshot.state)
            except (ValueError, KeyError, TypeError, AttributeError):
                pass  # a snapshot edited by hand is a lost shortcut: replay the log
            else:
                return Thread(thread_id, agent, events, state)
        try:
            state = agent.module.replay(events)
        except (IllegalEvent, ValueError, TypeError, AttributeError, KeyError) as exc:
            # Events this reducer would never have accepted: the log was edited or damaged.
            raise StoreError(
                f"thread {thread_id}: its log does not replay ({exc}); the log was changed "
                "outside twelvefold"
            ) from exc
        return Thread(thread_id, agent, events, state)

    async def record(self, thread: Thread, event: Event) -> None:
        """Reduce first (an impossible event raises and nothing is stored), then append
        with the sequence number we replayed to: if another process got there first the
        store raises `Conflict` and this process stops."""
        agent = thread.agent
        state = agent.module.reduce(thread.state, event)
        await self._io(
            self.store.append,
            thread.id,
            len(thread.events),
            (event,),
            agent.codec,
            Head(state.status, state.step, state, agent.reducer, request=state.request),
        )
        thread.events.append(event)
        thread.state = state
        self._announce(thread, event)

    # ---- the loop -----------------------------------------------------------------

    async def advance(self, thread: Thread) -> Thread:
        """Perform actions until the thread waits for a person, finishes or fails."""
        next_action = thread.agent.module.next_action
        told = False  # one notice attempt per advance: a dead channel is retried by `expire`
        while thread.state.status == "running" or (
            thread.state.status == "waiting" and not thread.state.notified and not told
        ):
            action = next_action(thread.state)
            if isinstance(action, CallModel):
                await self.record(thread, await self._call_model(thread, action))
            elif isinstance(action, CallTool):
                await self.record(thread, await self._call_tool(thread, action))
            elif isinstance(action, AwaitApproval | AwaitAnswer):
                told = True
                await self.record(thread, await self.notify(thread, action))
            else:  # Finish, Fail: the status already says so
                break
        return thread

    async def _call_model(self, thread: Thread, action: CallModel) -> Event:
        if self.messages is None:
            from .context import build_messages

            self.messages = build_messages
        agent = thread.agent
        prompts = agent.prompts_dir or _PROMPTS
        try:
            messages = self.messages(agent.spec, action, thread.events, prompts)
        except Exception as exc:  # the user's template is missing or raised: the step failed
            return StepFailed(step=action.step, at=now_iso(), error=_prompt_error(action, exc))
        request = ModelRequest(agent.spec, action, messages, thread.id, len(thread.events))
        started = time.perf_counter()
        try:
            reply = await self._model().complete(request)
        except ModelError as exc:
            return StepFailed(
                step=action.step, at=now_iso(), usage=_since(started), error=exc.error
            )
        usage = reply.usage
        if not usage.latency_ms:  # not measured by the model: the call as the loop saw it
            usage = Usage(
                _ms_since(started), usage.input_tokens, usage.output_tokens, usage.cost_usd
            )
        return ModelOutput(step=action.step, at=now_iso(), usage=usage, output=reply.output)

    async def _call_tool(self, thread: Thread, action: CallTool) -> Event:
        step = action.step
        try:
            tool = self.toolbox.resolve(action.function, _folders(thread.agent))
        except tools.ToolImportError as exc:
            return StepFailed(step=step, at=now_iso(), error=tools.describe(exc))
        key = action.started_key
        if key is None:
            key = f"{thread.id}:{step}:{len(thread.events) + 1}"
            await self.record(thread, ToolStarted(step=step, at=now_iso(), key=key))
        elif not tool.accepts_key:
            # Started in a process that died before recording the result: running it
            # again could repeat its side effect, and nothing can tell us it is safe.
            return StepFailed(step=step, at=now_iso(), error=INTERRUPTED)
        outcome = await tools.call(tool, action, key, offload=self.offload)
        if outcome.error is not None:
            return StepFailed(step=step, at=now_iso(), usage=outcome.usage, error=outcome.error)
        assert outcome.result is not None
        return ToolResult(step=step, at=now_iso(), usage=outcome.usage, result=outcome.result)

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
        return Notified(step=action.step, at=at or now_iso(), channels=channels, failed=failed)

    # ---- helpers ------------------------------------------------------------------

    def _model(self) -> Model:
        if self.model is None:
            from .model import OpenAIModel  # openai and instructor load here, not before

            self.model = OpenAIModel()
        return self.model

    def _notifier(self) -> Notifier:
        if self.notifier is None:
            self.notifier = default_notifier()
        return self.notifier

    async def _io(self, function: Callable[..., Any], *args: Any) -> Any:
        if self.offload:
            return await asyncio.to_thread(function, *args)
        return function(*args)

    def _announce(self, thread: Thread, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(thread, event)


def started(agent: Agent, input: Any) -> Started:
    return Started(step=agent.spec.start, at=now_iso(), input=input)


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


def _fingerprint(module: AgentModule | ModuleType) -> str | None:
    file = getattr(module, "__file__", None)
    try:
        source = Path(file).read_bytes() if file else None
    except OSError:
        return None
    return hashlib.sha256(source).hexdigest()[:16] if source is not None else None


def _prompt_error(action: CallModel, exc: Exception) -> ErrorInfo:
    """One line for a prompt that could not be rendered (missing, unreadable, or raising)."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return ErrorInfo(
        "PromptError",
        f"prompt `{action.prompt}` could not be rendered: {type(exc).__name__}"
        + (f": {detail}" if detail else ""),
    )


def _since(started: float) -> Usage:
    return Usage(latency_ms=_ms_since(started))


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


_PROMPTS = Path("prompts")
"""Where prompt files are looked up for an agent loaded without a prompts directory."""


def _folders(agent: Agent) -> tuple[Path, ...]:
    return (agent.directory,) if agent.directory is not None else ()


__all__ = ["INTERRUPTED", "Agent", "AgentModule", "Engine", "Thread", "ToolResult", "started"]
