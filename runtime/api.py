"""The Python API: launch, resume, retry, inspect, replay and fork threads.

`AsyncRuntime` is the API; `Runtime` is the same calls for code without an event loop.
Every call loads the thread from the store, so any process can resume any thread and a
paused thread holds nothing in memory:

    rt = Runtime(SqliteStore("threads.db"), model=CassettePlayer("demo.jsonl"))
    view = rt.launch("examples/deploybot.agent", "deploy v1.2.3 to production")
    view.status, view.waiting_for           # ("waiting", "approval")
    rt.resume(view.id, approve=True, comment="go")
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from . import timeouts
from .loading import load_agent
from .loop import Agent, Engine, EventHook, MessageBuilder, Notifier, Thread, question, started
from .model import Model
from .store import Conflict, EventStore, MemoryStore, ThreadInfo
from .store import now_iso as _now
from .types import (
    Answer,
    Answered,
    Approved,
    AwaitAnswer,
    AwaitApproval,
    ErrorInfo,
    Event,
    Notified,
    Rejected,
    Retried,
    State,
    Status,
    StepFailed,
)

AgentRef = Agent | ModuleType | str | Path
T = TypeVar("T")


class InputError(ValueError):
    """The input does not fit the agent, or a resume does not fit the thread."""


@dataclass(frozen=True)
class ThreadView:
    """Where a thread stands, as the CLI's --json and the HTTP API show it."""

    id: str
    agent: str
    status: Status
    step: str
    seq: int
    """How many events the thread holds."""
    waiting_for: Literal["approval", "answer"] | None
    question: str | None
    """What the person is asked (the step's `ask`, rendered), when waiting."""
    output: Any
    """The thread's result, when finished."""
    error: ErrorInfo | None
    state: State
    notice_failed: tuple[str, ...] = ()
    """While waiting and nobody was told: why each channel failed at the last attempt
    (`"name: reason"`, no secrets); `expire` tries again (runtime/timeouts.py)."""

    @property
    def untold(self) -> bool:
        """Whether the thread waits for a person no notice has reached yet."""
        return self.status == "waiting" and not self.state.notified

    def to_json(self) -> dict[str, Any]:
        return {
            "thread_id": self.id,
            "agent": self.agent,
            "status": self.status,
            "step": self.step,
            "events": self.seq,
            "waiting_for": self.waiting_for,
            "question": self.question,
            "output": plain(self.output),
            "error": None
            if self.error is None
            else {"type": self.error.type, "message": self.error.message},
            "notified": self.state.notified if self.status == "waiting" else None,
            "notice_failed": list(self.notice_failed),
        }


@dataclass(frozen=True)
class Expiry:
    """One thread whose wait ran out (see `AsyncRuntime.expire`)."""

    thread_id: str
    step: str
    """The step it waited at."""
    event: Event | None
    """What was recorded: `Rejected(by="timeout")`, `StepFailed(Timeout)`,
    `StepFailed(NotDelivered)` (the deadline passed before anyone was told), or a
    `Notified` (a failed notice tried again); None when the thread could not be loaded."""
    view: ThreadView | None
    """Where the thread stands after it ran on."""
    problem: str | None = None
    """Why it could not be loaded, or could not run on after the timeout was recorded (it
    is then `running`: `resume` it once the cause is fixed)."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"thread_id": self.thread_id}
        if self.view is not None:
            data = self.view.to_json()
        outcome: dict[str, Any] | None = None
        notice: dict[str, Any] | None = None
        if isinstance(self.event, Rejected):
            outcome = {"rejected": self.event.comment}
        elif isinstance(self.event, StepFailed):
            outcome = {"failed": str(self.event.error)}
            if self.never_delivered:
                outcome["never_delivered"] = True
        elif isinstance(self.event, Notified):
            notice = {"channels": list(self.event.channels), "failed": list(self.event.failed)}
        return {
            **data,
            "expired_step": self.step,
            "expired": outcome,
            "notice_retried": notice,
            "problem": self.problem,
        }

    @property
    def never_delivered(self) -> bool:
        """Whether the request's deadline passed before any notice reached anyone."""
        return (
            isinstance(self.event, StepFailed) and self.event.error.type == timeouts.NOT_DELIVERED
        )


def view_of(thread: Thread) -> ThreadView:
    state = thread.state
    waiting_for: Literal["approval", "answer"] | None = None
    asked = None
    if state.status == "waiting":
        action = thread.agent.module.next_action(state)
        if isinstance(action, AwaitApproval | AwaitAnswer):
            waiting_for = "approval" if isinstance(action, AwaitApproval) else "answer"
            from .context import AskRenderError  # jinja2 loads only when a thread waits

            try:
                asked = question(action)
            except AskRenderError as exc:  # a pause told under an older runtime
                asked = f"(this question cannot be shown: {exc})"
    failed: tuple[str, ...] = ()
    if state.status == "waiting" and not state.notified:
        last = thread.events[-1] if thread.events else None
        failed = last.failed if isinstance(last, Notified) else ()
    return ThreadView(
        id=thread.id,
        agent=thread.agent.name,
        status=state.status,
        step=state.step,
        seq=state.seq,
        waiting_for=waiting_for,
        question=asked,
        output=state.value if state.status == "finished" else None,
        error=state.error,
        state=state,
        notice_failed=failed,
    )


def plain(value: Any) -> Any:
    """A value as plain JSON (a model's fields, not its type tag)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


class AsyncRuntime:
    """Launch and resume threads from asyncio code (the HTTP server builds on this).

    `offload` runs SQLite calls and synchronous tools in worker threads so the event
    loop keeps serving while a thread works. `lease_seconds` is how long this process's
    lease on a thread it advances lasts unrenewed (TWELVEFOLD_LEASE_SECONDS, else 30 s;
    see runtime/lease.py).
    """

    def __init__(
        self,
        store: EventStore | None = None,
        *,
        model: Model | None = None,
        notifier: Notifier | None = None,
        tool_paths: Sequence[str | Path] = (),
        cache_dir: Path | None = None,
        on_event: EventHook | None = None,
        messages: MessageBuilder | None = None,
        offload: bool = True,
        lease_seconds: float | None = None,
    ) -> None:
        self.store: EventStore = store if store is not None else MemoryStore()
        self.engine = Engine(
            self.store,
            model=model,
            notifier=notifier,
            tool_paths=tool_paths,
            offload=offload,
            on_event=on_event,
            messages=messages,
            lease_seconds=lease_seconds,
        )
        self.cache_dir = cache_dir
        self._agents: dict[str, Agent] = {}

    def agent(self, reference: AgentRef) -> Agent:
        """Load (once) an agent: a `.agent` file, a generated module or its name."""
        if isinstance(reference, Agent):
            return reference
        key = reference.__name__ if isinstance(reference, ModuleType) else str(reference)
        if key not in self._agents:
            self._agents[key] = load_agent(reference, cache_dir=self.cache_dir)
        return self._agents[key]

    async def launch(
        self, agent: AgentRef, input: Any, *, thread_id: str | None = None
    ) -> ThreadView:
        """Start a thread and run it until it waits for a person, finishes or fails."""
        loaded = self.agent(agent)
        value = typed_input(loaded, input)
        thread = await self.engine.create(
            loaded, [started(loaded, value)], thread_id or new_thread_id()
        )
        return view_of(await self.engine.advance(thread))

    async def resume(
        self,
        thread_id: str,
        *,
        approve: bool = False,
        reject: bool = False,
        comment: str | None = None,
        answer: str | Answer | None = None,
        by: str | None = None,
        agent: AgentRef | None = None,
    ) -> ThreadView:
        """Give a waiting thread its approval, rejection or answer and run it on.

        With none of them, continue a thread that is running (one whose process died).
        """
        if approve + reject + (answer is not None) > 1:
            raise InputError("give one of approve, reject or answer")
        thread = await self._load(thread_id, agent)
        step = thread.state.step
        event: Event | None = None
        if approve:
            event = Approved(step=step, at=_now(), by=by, comment=comment)
        elif reject:
            event = Rejected(step=step, at=_now(), by=by, comment=comment)
        elif answer is not None:
            reply = answer if isinstance(answer, Answer) else Answer(text=answer, by=by)
            event = Answered(step=step, at=_now(), answer=reply)
        if event is not None:
            await self.engine.record(thread, event)
        return view_of(await self.engine.advance(thread))

    async def retry(
        self, thread_id: str, *, by: str | None = None, agent: AgentRef | None = None
    ) -> ThreadView:
        """Try a failed thread again from the step that failed."""
        thread = await self._load(thread_id, agent)
        await self.engine.record(thread, Retried(step=thread.state.step, at=_now(), by=by))
        return view_of(await self.engine.advance(thread))

    async def get(self, thread_id: str, *, agent: AgentRef | None = None) -> ThreadView:
        return view_of(await self._load(thread_id, agent))

    async def events(self, thread_id: str, *, agent: AgentRef | None = None) -> list[Event]:
        return (await self._load(thread_id, agent)).events

    async def replay(
        self, thread_id: str, *, upto: int | None = None, agent: AgentRef | None = None
    ) -> State:
        """The thread's state after its first `upto` events (all of them by default)."""
        thread = await self._load(thread_id, agent)
        return thread.agent.module.replay(thread.events[:upto])

    async def fork(self, thread_id: str, at_event: int, *, agent: AgentRef | None = None) -> str:
        """A new thread whose log is the first `at_event` events of this one. It does not
        run: resume it (or give it its approval or answer) to go on from there."""
        await self.engine.check_free(thread_id)  # a thread being advanced is refused
        thread = await self._load(thread_id, agent)
        if not 1 <= at_event <= len(thread.events):
            raise InputError(f"a fork point is an event number from 1 to {len(thread.events)}")
        fork = await self.engine.create(
            thread.agent, thread.events[:at_event], new_thread_id(), hold=False
        )
        return fork.id

    async def expire(self, now: datetime | str | None = None) -> list[Expiry]:
        """Sweep the waiting threads at `now` (the clock unless given): time out those whose
        wait has run out and run each on, and try again the notices no channel took.

        A deadline counts from the pause. An approval's timeout is a rejection
        (`by="timeout"`, comment "no decision within 30m"), a human step's a failure
        ("Timeout: no answer within 4h"); a request nobody was ever told about fails its
        step with `NotDelivered` instead. A failed notice is tried again once its backoff
        has passed (one attempt per sweep). See runtime/timeouts.py. A thread someone
        decides at the same moment is left to them (the store's conflict check picks one).
        Returns one `Expiry` per thread the sweep changed."""
        moment = timeouts.as_moment(now)
        swept: list[Expiry] = []
        for info in await self.threads("waiting"):
            try:
                thread = await self._load(info.id, None)
                state = thread.state
                action = thread.agent.module.next_action(state)
                event = timeouts.overdue(state, action, thread.events, moment)
                if event is None:
                    due = timeouts.next_notice(state, action, thread.events)
                    if due is not None and moment >= due:
                        assert isinstance(action, AwaitApproval | AwaitAnswer)  # it waits
                        await self.engine.check_free(thread.id)  # nobody is advancing it
                        told = await self.engine.notify(thread, action, at=timeouts.iso(moment))
                        await self.engine.record(thread, told)
                        swept.append(Expiry(thread.id, state.step, told, view_of(thread)))
                    continue
                await self.engine.record(thread, event)
            except Conflict:
                continue  # a person (or another sweep) got there first
            except Exception as exc:  # one broken thread must not stop the sweep
                swept.append(Expiry(info.id, info.step, None, None, _problem(exc)))
                continue
            problem = None
            try:
                await self.engine.advance(thread)
            except Exception as exc:
                problem = _problem(exc)
            swept.append(Expiry(thread.id, event.step, event, view_of(thread), problem))
        return swept

    async def threads(self, status: Status | None = None) -> list[ThreadInfo]:
        found: list[ThreadInfo] = await self.engine._io(self.store.threads, status)
        return found

    async def info(self, thread_id: str) -> ThreadInfo:
        info: ThreadInfo = await self.engine._io(self.store.info, thread_id)
        return info

    async def _load(self, thread_id: str, agent: AgentRef | None) -> Thread:
        if agent is None:
            agent = (await self.info(thread_id)).origin
        return await self.engine.load(self.agent(agent), thread_id)


class Runtime:
    """The synchronous twin of `AsyncRuntime`: the same calls, for scripts and the CLI.

    Do not call it from inside a running event loop; use `AsyncRuntime` there.
    """

    def __init__(self, store: EventStore | None = None, **options: Any) -> None:
        options.setdefault("offload", False)
        self.aio = AsyncRuntime(store, **options)
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def store(self) -> EventStore:
        return self.aio.store

    def agent(self, reference: AgentRef) -> Agent:
        return self.aio.agent(reference)

    def launch(self, agent: AgentRef, input: Any, *, thread_id: str | None = None) -> ThreadView:
        return self._run(self.aio.launch(agent, input, thread_id=thread_id))

    def resume(self, thread_id: str, **decision: Any) -> ThreadView:
        return self._run(self.aio.resume(thread_id, **decision))

    def retry(self, thread_id: str, **options: Any) -> ThreadView:
        return self._run(self.aio.retry(thread_id, **options))

    def get(self, thread_id: str, **options: Any) -> ThreadView:
        return self._run(self.aio.get(thread_id, **options))

    def events(self, thread_id: str, **options: Any) -> list[Event]:
        return self._run(self.aio.events(thread_id, **options))

    def replay(self, thread_id: str, **options: Any) -> State:
        return self._run(self.aio.replay(thread_id, **options))

    def fork(self, thread_id: str, at_event: int, **options: Any) -> str:
        return self._run(self.aio.fork(thread_id, at_event, **options))

    def expire(self, now: datetime | str | None = None) -> list[Expiry]:
        return self._run(self.aio.expire(now))

    def threads(self, status: Status | None = None) -> list[ThreadInfo]:
        return self.store.threads(status)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coroutine.close()
            raise RuntimeError("Runtime is synchronous; inside an event loop use AsyncRuntime")
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coroutine)


def typed_input(agent: Agent, value: Any) -> Any:
    """The launch input as the agent declares it: a string, or one of its types (given as
    the model, a dict, or JSON text)."""
    declared = agent.spec.input_type
    try:
        if isinstance(declared, type) and issubclass(declared, BaseModel):
            if isinstance(value, declared):
                return value
            if isinstance(value, str | bytes):
                return declared.model_validate_json(value)
            return declared.model_validate(value)
    except ValidationError as exc:
        raise InputError(f"the input is not a valid {declared.__name__}: {exc}") from None
    if declared is str and not isinstance(value, str):
        raise InputError(f"{agent.name} takes a string input, not {type(value).__name__}")
    if declared in (int, float) and isinstance(value, str):
        try:
            return declared(json.loads(value))
        except (ValueError, TypeError):
            raise InputError(f"{agent.name} takes a {declared.__name__} input") from None
    return value


def _problem(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def new_thread_id() -> str:
    return secrets.token_hex(8)
