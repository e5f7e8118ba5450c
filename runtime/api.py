"""The Python API: launch, resume, retry, inspect, replay and fork threads.

`AsyncRuntime` is the API; `Runtime` is the same calls for code without an event loop.
Every call loads the thread from the store, so any process can resume any thread and a
paused thread holds nothing in memory:

    rt = Runtime(SqliteStore("threads.db"), model=CassettePlayer("demo.jsonl"))
    view = rt.launch("examples/deploybot.agent", "deploy v1.2.3 to production")
    view.status, view.waiting_for           # ("waiting", "approval")
    rt.resume(view.id, approve=True, request=view.request, by="carol", comment="go")

A decision names the request it answers (`ThreadView.request`); one for a request that is
no longer pending is refused (`RequestNotPending`) and nothing is recorded. An approval
that declares `approvers` takes decisions only from members of those groups, as the
project's configuration (runtime/config.py) says at the moment of the decision.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import warnings
from collections.abc import Coroutine, Sequence
from dataclasses import field, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

from pydantic import BaseModel, ValidationError

from . import jsonkeys
from .jsonkeys import LoneSurrogateKey, RepeatedKey
from .names import declared_name
from .records import record
from .redact import shown_value, validation_problems
from .spec import AgentSpec, child_id
from .strict import ParsedJson, strictly
from .terminal import for_terminal
from .types import (
    Answer,
    Answered,
    Approved,
    AttemptFailed,
    AwaitAnswer,
    AwaitApproval,
    AwaitSignal,
    CallAgent,
    Cancelled,
    ChildEnded,
    ChildFailed,
    ChildStarted,
    ErrorInfo,
    Event,
    Forked,
    IllegalEvent,
    Notified,
    Rejected,
    Retried,
    Signalled,
    Sleep,
    Started,
    State,
    Status,
    StepFailed,
    TimerFired,
    ToolResult,
    ToolStarted,
)
from .usage import Totals, records, totals

if TYPE_CHECKING:
    # The thread engine and what it runs with: bound by `_load_engine` (below).
    from . import timeouts, tracing
    from .config import Config, ConfigError, find_config
    from .lease import LeaseHeld
    from .loading import (
        AgentLoadError,
        AgentMissing,
        is_file_reference,
        load_agent,
        load_pinned_child,
        load_version,
        recorded_agent,
        recorded_place,
        require_settings,
        require_templates,
    )
    from .loop import (
        INTERRUPTED,
        Agent,
        Engine,
        EventHook,
        MessageBuilder,
        Notifier,
        Thread,
        question,
        retry_due,
        started,
    )
    from .model import Model
    from .store import Conflict, DamagedRow, EventStore, MemoryStore, SqliteStore, ThreadInfo
    from .store import now_iso as _now
    from .versions import AgentVersion, VersionError


def _load_engine() -> None:
    """Bind the names of the thread engine in this module: the imports above, which
    tests/test_runtime_imports.py checks are the same.

    Importing the API does not load the engine (the loop, the agent loader, the stores,
    the model client, rate limits, tracing, pinned versions: about a tenth of the import
    of an agent, issue 13); making a runtime does, and so does reading one of these names
    from this module (`api.SqliteStore`, `from twelvefold.runtime.api import Agent`).
    The functions of this module that use them and may be called without a runtime
    (`view_of`, `fork_log`, ...) call this first."""
    global _ENGINE_LOADED
    if _ENGINE_LOADED:
        return
    from . import timeouts, tracing  # noqa: F401
    from .config import Config, ConfigError, find_config  # noqa: F401
    from .lease import LeaseHeld  # noqa: F401
    from .loading import (  # noqa: F401
        AgentLoadError,
        AgentMissing,
        is_file_reference,
        load_agent,
        load_pinned_child,
        load_version,
        recorded_agent,
        recorded_place,
        require_settings,
        require_templates,
    )
    from .loop import (  # noqa: F401
        INTERRUPTED,
        Agent,
        Engine,
        EventHook,
        MessageBuilder,
        Notifier,
        Thread,
        question,
        retry_due,
        started,
    )
    from .model import Model  # noqa: F401
    from .store import (  # noqa: F401
        Conflict,
        DamagedRow,
        EventStore,
        MemoryStore,
        SqliteStore,
        ThreadInfo,
    )
    from .store import now_iso as _now  # noqa: F401
    from .versions import AgentVersion, VersionError  # noqa: F401

    globals().update(locals())  # the names imported above, for the whole module
    _ENGINE_LOADED = True


_ENGINE_LOADED = False

if not TYPE_CHECKING:  # for mypy, the names above are this module's (no Any fallback)

    def __getattr__(name: str) -> Any:
        if not name.startswith("__"):
            _load_engine()
            if name in globals():
                return globals()[name]
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from .migrate import Verdict

if TYPE_CHECKING:  # asyncio loads when a thread runs, not when an agent is imported
    import asyncio

AgentRef: TypeAlias = "Agent | ModuleType | str | Path"
T = TypeVar("T")


class InputError(ValueError):
    """The input does not fit the agent, or a resume does not fit the thread."""


class RequestNotPending(InputError):
    """A decision names a request that is not the thread's pending one (it was decided,
    withdrawn or replaced by a newer one), or names none. Nothing was recorded."""


class NotWaiting(RequestNotPending):
    """An outside event for a thread that does not wait for it now (it waits for another
    type, waits for a person, or is not waiting at all). Nothing was recorded; over HTTP
    this is a 409."""


class ChildSettled(RequestNotPending):
    """A retry of a sub-agent's thread whose parent no longer waits for it: the parent's
    step already took the child's failure (its `on error`), so a result now would reach
    nobody. Nothing was recorded; over HTTP this is a 409."""


class ApprovedWork(InputError):
    """A fork or a retry that would run again, without a new decision, work an approval
    let run once: a fork of a sub-agent's thread that an approval let run (its parent's
    `agent` step is one an `on approved` leads into, or an ancestor's is), or a retry
    that keeps the key (`reuse_key`) of an approved call of a tool that takes no
    idempotency key (the key cannot make it the same call). Nothing was recorded; over
    HTTP this is a 409, from the CLI one line."""


class TimedOut(RequestNotPending):
    """A decision (or an outside event) that came after its wait's `timeout` had run
    out: the timeout's outcome was recorded in its place (an approval's rejection
    `by="timeout"`, a question's failure, a request never delivered, a wait's timer)
    and the thread goes on from there, as if the sweep had got there first. `view` is
    the thread after that. Over HTTP this is a 409; the CLI says it in one line."""

    def __init__(self, message: str, view: ThreadView) -> None:
        super().__init__(message)
        self.view = view


class ThreadEnded(IllegalEvent):
    """A cancellation of a thread that has already ended (finished, or cancelled before):
    there is nothing to cancel. Nothing was recorded; over HTTP a 409, from the CLI one
    line. (An `IllegalEvent`: the reducer refuses the same event.)"""

    def __init__(self, state: State, event: Event, thread_id: str) -> None:
        ended = "finished" if state.status == "finished" else "been cancelled already"
        said = f"thread {shown(thread_id)} has {ended}: there is nothing to cancel"
        super().__init__(state, event, message=said)


class NotFailed(IllegalEvent):
    """A retry of a thread that has not failed: it runs (`resume` runs it on), waits for
    a person, or has ended. Nothing was recorded; over HTTP a 409, from the CLI one line.
    (An `IllegalEvent`: the reducer refuses the same event.)"""

    def __init__(self, state: State, event: Event, thread_id: str) -> None:
        shown_id = shown(thread_id)
        status = state.status
        if status == "running":
            why = f"is running, not failed: `twelvefold resume {shown_id}` runs it on"
        elif status == "waiting":
            why = f"is waiting at `{state.step}`, not failed: decide or answer it instead"
        else:
            why = f"has {'finished' if status == 'finished' else 'been cancelled'}"
        said = f"thread {shown_id} {why}; only a failed thread can be retried"
        super().__init__(state, event, message=said)


class NotAnApprover(InputError):
    """The person deciding an approval is not in any of its `approvers` groups, as the
    configuration defines them now. Nothing was recorded."""


class UnenforcedApprovers(UserWarning):
    """An approval's `approvers` groups are defined in no configuration, so who decides
    it is not checked (the local CLI and library accept it; the server will refuse)."""


WaitKind: TypeAlias = Literal["approval", "answer", "event", "timer", "agent"]
"""What a waiting thread waits for (`ThreadView.waiting_for`)."""


def wait_kind(action: object) -> WaitKind | None:
    """What the action a thread waits at waits for; None when it does not wait."""
    _load_engine()
    if isinstance(action, AwaitApproval):
        return "approval"
    if isinstance(action, AwaitAnswer):
        return "answer"
    if isinstance(action, AwaitSignal):
        return "event"
    if isinstance(action, Sleep):
        return "timer"
    if isinstance(action, CallAgent):
        return "agent"
    return None


@record
class ThreadView:
    """Where a thread stands, as the CLI's --json and the HTTP API show it."""

    id: str
    agent: str
    status: Status
    step: str
    seq: int
    """How many events the thread holds."""
    waiting_for: Literal["approval", "answer", "event", "timer", "agent"] | None
    """What would end the wait: a person's decision or answer, an outside event of type
    `event_type` (`send`), the clock (a `sleep`, woken by `expire`), or the child thread
    `child` of an `agent` step (its own requests are listed under its id)."""
    request: str | None
    """The pending request's id while waiting: a decision must name it."""
    question: str | None
    """What the person is asked (the step's `ask`, rendered), when waiting."""
    output: Any
    """The thread's result, when finished."""
    error: ErrorInfo | None
    state: State
    event_type: str | None = None
    """While waiting for an outside event: the type it waits for (`PaymentReceived`)."""
    wake_at: str | None = None
    """While waiting for an approval, an answer or an event with a `timeout`, or
    sleeping: when the wait ends (ISO 8601, UTC). A decision after it is refused and
    the timeout's outcome recorded instead; with nobody deciding, `expire` ends it."""
    notice_failed: tuple[str, ...] = ()
    """While waiting and nobody was told: why each channel failed at the last attempt
    (`"name: reason"`, no secrets); `expire` tries again (runtime/timeouts.py)."""
    log: Sequence[Event] = field(default=(), repr=False, compare=False)
    """The thread's events (what `usage` adds up)."""
    child: str | None = None
    """While an `agent` step waits: the child thread it waits for."""
    parent: str | None = None
    """For a child thread: the thread whose `agent` step started it."""
    children_usage: Totals = field(default=Totals(), repr=False, compare=False)
    """What the threads of its `agent` steps cost (theirs too, down the line)."""
    retry_at: str | None = None
    """While running and a tool call waits out its `retry … backoff`: when the next attempt
    is due (ISO 8601, UTC; a time in the past means now). The attempt that failed is the
    log's last event (`failed_attempt`)."""
    approvers: tuple[str, ...] = ()
    """While waiting for an approval: the groups its step names as `approvers` (only their
    members decide it, and a decision then names who decides: `--by`, `by=`)."""

    @property
    def failed_attempt(self) -> AttemptFailed | None:
        """The failed tool attempt whose retry `retry_at` waits for."""
        last = self.log[-1] if self.retry_at is not None and self.log else None
        return last if isinstance(last, AttemptFailed) else None

    @cached_property
    def usage(self) -> Totals:
        """What the thread cost so far, its sub-agents' threads included: steps, tokens,
        USD, time waiting for people (added up when first asked for: the loop never pays
        for it)."""
        return totals(records(self.log)) + self.children_usage

    @property
    def untold(self) -> bool:
        """Whether the thread waits for a person no notice has reached yet."""
        return self.waiting_for in ("approval", "answer") and not self.state.notified

    def to_json(self) -> dict[str, Any]:
        return {
            "thread_id": self.id,
            "agent": self.agent,
            "status": self.status,
            "step": self.step,
            "events": self.seq,
            "waiting_for": self.waiting_for,
            "request": self.request,
            "question": self.question,
            "output": plain(self.output),
            "error": None
            if self.error is None
            else {"type": self.error.type, "message": self.error.message},
            "notified": (
                self.state.notified if self.waiting_for in ("approval", "answer") else None
            ),
            "event_type": self.event_type,
            "wake_at": self.wake_at,
            "notice_failed": list(self.notice_failed),
            "usage": self.usage.to_json(),
            "child": self.child,
            "parent": self.parent,
            "retry_at": self.retry_at,
        }


@record
class Expiry:
    """One thread whose wait ran out (see `AsyncRuntime.expire`)."""

    thread_id: str
    step: str
    """The step it waited at."""
    event: Event | None
    """What was recorded: `Rejected(by="timeout")`, `StepFailed(Timeout)`,
    `StepFailed(NotDelivered)` (the deadline passed before anyone was told), or a
    `Notified` (a failed notice tried again); None when the thread could not be loaded,
    or (a sweep without `run`) when nothing was recorded and the thread, a parent whose
    child is yet to start or a child a crash left running, is left to the caller to run."""
    view: ThreadView | None
    """Where the thread stands after it ran on."""
    problem: str | None = None
    """Why it could not be loaded, or could not run on after the timeout was recorded (it
    is then `running`: `resume` it once the cause is fixed)."""
    wait: WaitKind | None = None
    """What the thread waited for at `step` (a `ThreadView.waiting_for`): `timer` (a
    sleep, which ends rather than times out), `event`, `approval`, `answer`, `agent`;
    None when that is not known (the thread could not be loaded, or a stalled child)."""

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
        elif isinstance(self.event, TimerFired):
            outcome = {"timer_fired": self.event.request}
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
        _load_engine()
        return (
            isinstance(self.event, StepFailed) and self.event.error.type == timeouts.NOT_DELIVERED
        )


def wrong_decision(thread: Thread, action: AwaitApproval | AwaitAnswer, given: str) -> str:
    """A decision of the wrong kind for what the thread waits for, in words, with how to
    resume it (the reducer's "illegal `answered` event" is no answer for a person)."""
    resume = f"twelvefold resume {thread.id} --request {action.request}"
    if isinstance(action, AwaitApproval):
        from .notify import by_option

        resume += by_option(action.approvers)
        return (
            f"thread {thread.id} waits for an approval at `{action.step}`, not {given}: "
            f"resume it with `{resume} --approve` or `--reject --comment WHY`"
        )
    return (
        f"thread {thread.id} waits for an answer at `{action.step}`, not {given}: "
        f"resume it with `{resume} --answer TEXT`"
    )


def view_of(thread: Thread) -> ThreadView:
    _load_engine()
    state = thread.state
    waiting_for: Literal["approval", "answer", "event", "timer", "agent"] | None = None
    asked = event_type = wake_at = child = None
    approvers: tuple[str, ...] = ()
    if state.status == "waiting":
        action = thread.agent.module.next_action(state)
        if isinstance(action, CallAgent):
            waiting_for = "agent"
            child = child_id(thread.id, state.request) if state.request and state.notified else None
        elif isinstance(action, AwaitSignal | Sleep):
            waiting_for = "event" if isinstance(action, AwaitSignal) else "timer"
            event_type = declared_name(action.event) if isinstance(action, AwaitSignal) else None
            due = timeouts.deadline(state, action, thread.events)
            wake_at = timeouts.iso(due) if due is not None else None
        elif isinstance(action, AwaitApproval | AwaitAnswer):
            waiting_for = "approval" if isinstance(action, AwaitApproval) else "answer"
            if isinstance(action, AwaitApproval):
                approvers = tuple(action.approvers)
            due = timeouts.deadline(state, action, thread.events)  # its `timeout`, if any
            wake_at = timeouts.iso(due) if due is not None else None
            from .context import AskRenderError  # jinja2 loads only when a thread waits

            try:
                asked = question(action)
            except AskRenderError as exc:  # a pause told under an older runtime
                asked = f"(this question cannot be shown: {exc})"
    retry_at = None
    if state.status == "running" and (next_try := retry_due(thread.events)) is not None:
        retry_at = timeouts.iso(datetime.fromtimestamp(next_try, UTC))  # as `wake_at` is written
    failed: tuple[str, ...] = ()
    if waiting_for in ("approval", "answer") and not state.notified:
        last = thread.events[-1] if thread.events else None
        failed = last.failed if isinstance(last, Notified) else ()
    return ThreadView(
        id=thread.id,
        agent=thread.agent.name,
        status=state.status,
        step=state.step,
        seq=state.seq,
        waiting_for=waiting_for,
        request=state.request if waiting_for is not None else None,
        question=asked,
        output=state.value if state.status == "finished" else None,
        error=state.error,
        state=state,
        event_type=event_type,
        wake_at=wake_at,
        notice_failed=failed,
        log=tuple(thread.events),
        child=child,
        parent=parent_named(thread.events),
        retry_at=retry_at,
        approvers=approvers,
    )


def parent_named(log: Sequence[Event]) -> str | None:
    """The parent thread a sub-agent's log names (`parent_of`), or None. A fork of a
    child is a thread of its own: its end reaches no parent, so it names none."""
    forked = any(issubclass(kind, Forked) for kind in set(map(type, log)))  # (long logs)
    return None if forked else parent_of(log)


def store_folder(store: EventStore) -> Path | None:
    """The folder a thread records its agent's place relative to: the SQLite file's
    folder; None (places stay absolute) for a store that has no file."""
    _load_engine()
    return store.path.resolve().parent if isinstance(store, SqliteStore) else None


def plain(value: Any) -> Any:
    """A value as plain JSON for showing (a model's fields, not its type tag), its secret
    fields redacted (runtime/redact.py)."""
    return shown_value(value)


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
        prompts_dir: Path | None = None,
    ) -> None:
        _load_engine()
        self.prompts_dir = None if prompts_dir is None else Path(os.path.abspath(prompts_dir))
        """The prompts folder of the agents named to this runtime (`--prompts DIR`; None:
        each agent's nearest `prompts/`), made absolute at once: a thread's version records
        it (runtime/versions.py), whatever the current folder is later."""
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
        self.engine.children = self._run_child
        self.cache_dir = cache_dir
        self.places = store_folder(self.store)
        """The folder threads record their agent's place relative to (None: absolute)."""
        self._agents: dict[str, Agent] = {}
        self._pinned: dict[str, Agent] = {}
        """Pinned agent versions loaded so far, by digest and tools folder."""
        self._inline: set[str] = set()
        """Child threads being run by their parent's step right now (they report there)."""

    def agent(self, reference: AgentRef, *, sub_agent: bool = False) -> Agent:
        """Load (once) an agent: a `.agent` file, a generated module or its name. Its
        templates are read from the runtime's `prompts_dir` when it has one; a `sub_agent`
        (a file an `agent` step names) reads its own, from the nearest `prompts/`, as the
        compiler checked it (`--prompts` names the folder of the agents named on the
        command line only: docs/language.md)."""
        if isinstance(reference, Agent):
            return reference
        prompts = None if sub_agent else self.prompts_dir
        named = reference.__name__ if isinstance(reference, ModuleType) else str(reference)
        key = named if prompts is None else f"{named}\0{prompts}"
        if key not in self._agents:
            self._agents[key] = load_agent(reference, cache_dir=self.cache_dir, prompts_dir=prompts)
        return self._agents[key]

    async def launch(
        self, agent: AgentRef, input: Any, *, thread_id: str | None = None, run: bool = True
    ) -> ThreadView:
        """Start a thread and run it until it waits for a person, finishes or fails.

        With `run=False` the thread is only stored (`running`, no lease held): a later
        `resume(thread_id)` runs it (the server launches this way and runs it in the
        background)."""
        loaded = self.agent(agent)
        require_templates(loaded)  # a generated module's: before the thread exists
        require_settings(loaded)  # the configuration the loop reads lazily: the same
        value = typed_input(loaded, input)
        thread_id = thread_id or new_thread_id()
        # A launch that runs the thread now opens its run's span; a stored-only launch (the
        # server's) a short `launch` span. Its traceparent goes into `Started`: the root of
        # the thread's trace, whichever process runs it.
        opened = self.engine.open_run if run else self._launch_span
        span = opened(loaded, thread_id)
        try:
            thread = await self.engine.create(
                self._as_recorded(loaded),
                [started(loaded, value, trace=tracing.traceparent(span))],
                thread_id,
                hold=run,
            )
        except BaseException as exc:
            if span is not None:
                tracing.end_run(span, loaded.module.initial_state(value), exc)
            raise
        if not run:
            if span is not None:
                span.end()
            return await self._view(await self._ran(thread, run=False))
        return await self._view(await self.engine.advance(thread, run=span))

    @staticmethod
    def _launch_span(agent: Agent, thread_id: str) -> Any:
        found = tracing.tracer()
        return None if found is None else tracing.start_launch(found, agent.name, thread_id)

    async def resume(
        self,
        thread_id: str,
        *,
        approve: bool = False,
        reject: bool = False,
        comment: str | None = None,
        answer: str | Answer | None = None,
        by: str | None = None,
        request: str | None = None,
        via: str = "api",
        agent: AgentRef | None = None,
        run: bool = True,
    ) -> ThreadView:
        """Give a waiting thread its approval, rejection or answer and run it on (with
        `run=False`, only record the decision: a later `resume(thread_id)` runs it on).

        A decision must name the pending `request` (`ThreadView.request`); otherwise
        `RequestNotPending` is raised. An approval that declares `approvers` is decided
        only `by` a member of one of those groups (`NotAnApprover`), read from the
        configuration at this moment; groups no configuration defines are not enforced
        (an `UnenforcedApprovers` warning says so). `via` records where the decision came
        from (the CLI passes `cli (os user NAME)`). With no decision at all, continue a
        thread that is running (one whose process died). `LeaseHeld` while another
        process is advancing the thread (nothing is recorded).
        """
        if approve + reject + (answer is not None) > 1:
            raise InputError("give one of approve, reject or answer")
        if answer is not None and not isinstance(answer, str | Answer):
            # Text, as a model's output is its declared type: nothing else becomes text.
            raise InputError(f"an answer is text, not {type(answer).__name__}")
        storable(comment, "the comment")
        storable(answer.model_dump() if isinstance(answer, Answer) else answer, "the answer")
        storable(by, "the name of who decides")
        await self.engine.check_free(thread_id)  # a process advancing it: say who, first
        thread = await self._load(thread_id, agent)
        step = thread.state.step
        event: Approved | Rejected | Answered | None = None
        if approve or reject or answer is not None:
            try:
                action = pending_action(thread, request)
            except RequestNotPending as exc:
                raise await self._misdirected(thread, request, exc) from None
            approval = isinstance(action, AwaitApproval)
            if approval != (approve or reject):
                given = "an answer" if answer is not None else "an approval or a rejection"
                raise InputError(wrong_decision(thread, action, given))
            config = allowed_config(thread, action, by)
            at, reference = _now(), config.reference
            # The deadline is checked at the moment the decision is recorded (`at`, the
            # time the event carries): the append below fails with `Conflict` if
            # anything (the sweep's timeout among them) was recorded since the load.
            await self._refuse_late(thread, action, at, run)
            if approve or reject:
                kind: type[Approved | Rejected] = Approved if approve else Rejected
                event = kind(
                    step=step, at=at, by=by, comment=comment,
                    request=request, via=via, config=reference,
                )  # fmt: skip
            else:
                reply = answer if isinstance(answer, Answer) else Answer(text=str(answer), by=by)
                event = Answered(
                    step=step, at=at, answer=reply, request=request, via=via, config=reference
                )
        if event is not None:
            event = replace(event, trace=self._trace_wait(thread, event))
            await self.engine.record(thread, event)
        return await self._view(await self._ran(thread, run))

    async def send(
        self,
        thread_id: str,
        type: str,
        value: Any,
        *,
        request: str | None = None,
        idempotency_key: str | None = None,
        by: str | None = None,
        via: str = "api",
        agent: AgentRef | None = None,
        run: bool = True,
    ) -> ThreadView:
        """Deliver an outside event to a thread that waits for it (a `wait ... for TYPE`
        step) and run the thread on. Shapes: `type` is a type name the agent declares;
        `value` is that type's model, a dict, or JSON text.

        Refused with nothing recorded: a `type` the agent does not declare or a `value`
        that does not validate against it (`InputError`, HTTP 422); a thread that does not
        wait for an event of that type now (`NotWaiting`, HTTP 409); a `request` that is
        not the pending one (`RequestNotPending`, 409). With `idempotency_key`, a second
        delivery of the same key to the thread is dropped: nothing is recorded and the
        thread's view is returned as it stands (so a sender may retry after a crash or a
        lost reply). `LeaseHeld` while another process advances the thread. With
        `run=False`, only record the event (a later `resume(thread_id)` runs it on).
        """
        if idempotency_key is not None and not idempotency_key.strip():
            raise InputError("an idempotency key must not be blank")
        storable(idempotency_key, "the idempotency key")
        thread = await self._load(thread_id, agent)
        signal = typed_event(thread.agent, type, value)
        for attempt in (1, 2, 3):
            if idempotency_key is not None and delivered(thread, idempotency_key):
                return await self._view(thread)  # a duplicate: dropped
            try:
                await self.engine.check_free(thread_id)
                action = awaited_signal(thread, type, request)
                at = _now()
                await self._refuse_late(thread, action, at, run)  # its `timeout` ran out
                event = Signalled(
                    step=action.step, at=at, type=type, value=signal, key=idempotency_key,
                    request=thread.state.request, by=by, via=via,
                )  # fmt: skip
                await self.engine.record(thread, event)
            except LeaseHeld:
                # Busy: maybe with this very signal, sent twice at once and recorded by
                # the other copy (whose process now holds the thread). A duplicate gets
                # the same answer whoever holds the thread; anything else is refused.
                if idempotency_key is None:
                    raise
                found = await self._delivered_soon(thread_id, agent, idempotency_key)
                if found is not None:
                    return await self._view(found)
                if attempt == 3:
                    raise
                thread = await self._load(thread_id, agent)
                continue
            except Conflict:
                if attempt == 3:
                    raise
                # Someone else wrote first (maybe the same event, sent twice at once):
                # judge again against the log as it now is.
                thread = await self._load(thread_id, agent)
                continue
            break
        return await self._view(await self._ran(thread, run))

    async def _refuse_late(
        self, thread: Thread, action: AwaitApproval | AwaitAnswer | AwaitSignal, at: str, run: bool
    ) -> None:
        """Nothing when the wait of `action` has not run out at `at`; else record what
        its timeout records (as the sweep would), run the thread on (unless not `run`)
        and raise `TimedOut`, nothing else recorded."""
        moment = timeouts.as_moment(at)
        ended = timeouts.overdue(thread.state, action, thread.events, moment)
        if ended is None:
            return
        limit = timeouts.deadline(thread.state, action, thread.events)
        if isinstance(ended, Rejected):  # as the sweep's `_expire_one` traces it
            ended = replace(ended, trace=self._trace_wait(thread, ended))
        elif isinstance(ended, StepFailed):
            self._trace_wait(thread, ended)
        await self.engine.record(thread, ended)
        request = action.request
        view = await self._view(await self._ran(thread, run))
        outcome = (
            "counted as a rejection" if isinstance(ended, Rejected)
            else "recorded as never delivered" if isinstance(ended, StepFailed)
            and ended.error.type == timeouts.NOT_DELIVERED
            else "recorded as a failure of the step" if isinstance(ended, StepFailed)
            else "its timer fired"
        )  # fmt: skip
        when = timeouts.iso(limit) if limit is not None else "its deadline"
        raise TimedOut(
            f"request `{request}` of thread {thread.id} timed out at {when}, before this"
            f" decision: nothing was decided; the timeout was {outcome}",
            view,
        )

    async def _delivered_soon(
        self, thread_id: str, agent: AgentRef | None, key: str, *, tries: int = 40
    ) -> Thread | None:
        """The thread once its log holds the signal with `key`, or None once nobody holds
        the thread (this copy may record it then). The process holding the thread may
        have taken its lease to record that very signal and append it a moment later, so
        the log is read again (0.05 s apart, `tries` times) before `LeaseHeld` says the
        thread is busy with something else."""
        import asyncio

        busy: LeaseHeld | None = None
        for _ in range(tries):
            thread = await self._load(thread_id, agent)
            if delivered(thread, key):
                return thread
            try:
                await self.engine.check_free(thread_id)
            except LeaseHeld as exc:
                busy = exc
                await asyncio.sleep(0.05)
                continue
            return None
        assert busy is not None
        raise busy

    async def cancel(
        self,
        thread_id: str,
        *,
        reason: str,
        by: str | None = None,
        via: str = "api",
        agent: AgentRef | None = None,
    ) -> ThreadView:
        """End a thread on purpose: its pending request is withdrawn (a later decision
        for it is refused) and the log records who cancelled it, why and from where.
        A finished or already cancelled thread cannot be cancelled (`IllegalEvent`); a
        blank `reason` is an `InputError` (the log must say why).

        A thread waiting at an `agent` step takes its child thread with it (and the
        child its own, down the line): each is cancelled by the same person, from the
        same place, with a reason naming the parent. A child that already ended is left
        as it is."""
        if not reason.strip():
            raise InputError("say why the thread is cancelled: the reason is kept in its log")
        storable(reason, "the reason")
        storable(by, "the name of who cancels")
        thread = await self._load(thread_id, agent)
        event = Cancelled(step=thread.state.step, at=_now(), by=by, reason=reason, via=via)
        if thread.state.status in ("finished", "cancelled"):
            raise ThreadEnded(thread.state, event, thread.id)
        waiting = thread.state.status == "waiting"
        child = self._awaited_child(thread)
        await self.engine.record(thread, event)
        if waiting:  # the wait ended: its span says so (nothing runs after it)
            self._trace_wait(thread, event, before=len(thread.events) - 1)
        await self._report_to_parent(thread)  # a cancelled child is its parent step's error
        if child is not None:  # after the parent: a child's end must not wake it first
            await self._cancel_child(child, thread.id, reason=reason, by=by, via=via)
        return await self._view(thread)

    async def _view(self, thread: Thread) -> ThreadView:
        """`view_of(thread)` with what its sub-agents' threads cost in its `usage`."""
        spent = await self._children_usage(thread)
        return (
            view_of(thread) if spent == Totals() else replace(view_of(thread), children_usage=spent)
        )

    async def _children_usage(self, thread: Thread) -> Totals:
        """What the child threads `thread`'s log links to cost, with their own children
        (loaded only when the log names one; one that cannot be loaded counts as nothing:
        its own log is where it would be seen). A link counts when both logs make it: the
        parent's `ChildStarted` names the child and the child's `Started` names the parent
        (a fork's log also holds the links of the thread it was forked from; an id's shape
        proves nothing, since anyone may launch a thread named `a~b`)."""
        spent = Totals()
        if not any(issubclass(kind, ChildStarted) for kind in set(map(type, thread.events))):
            return spent  # most threads start none (and a long log is read once, in C)
        linked = (e.child for e in thread.events if isinstance(e, ChildStarted))
        for cid in dict.fromkeys(linked):
            try:
                child = await self._load(cid, None)
            except Exception:
                continue
            if parent_of(child.events) != thread.id:
                continue
            spent = spent + totals(records(child.events)) + await self._children_usage(child)
        return spent

    async def _misdirected(
        self, thread: Thread, request: str | None, refused: RequestNotPending
    ) -> RequestNotPending:
        """`refused`, or, when `request` is the pending request of a sub-agent's thread
        that `thread` waits for (down the line), a refusal naming that thread and the
        command that decides it there."""
        if request is None:
            return refused
        current = thread
        for _ in range(CHILD_DEPTH_LIMIT):
            cid = self._awaited_child(current)
            if cid is None:
                return refused
            try:
                current = await self._load(cid, None)
            except Exception:  # no such child (yet): the parent's own message stands
                return refused
            view = view_of(current)
            if view.request == request and view.waiting_for in ("approval", "answer"):
                command = f"twelvefold resume {current.id} --request {request}"
                if view.waiting_for == "approval":
                    from .notify import by_option

                    command += by_option(view.approvers)
                decide = (
                    f"`{command} --approve` (or `--reject --comment WHY`)"
                    if view.waiting_for == "approval"
                    else f"`{command} --answer TEXT`"
                )
                return RequestNotPending(
                    f"request `{shown(request)}` belongs to thread {current.id}, the sub-agent "
                    f"thread {thread.id} waits for: decide it there with {decide}"
                )
        return refused

    @staticmethod
    def _awaited_child(thread: Thread) -> str | None:
        """The id of the child thread `thread` waits for at an `agent` step, if it waits
        at one (the child may not exist yet: a crash came before it was created)."""
        state = thread.state
        if state.status != "waiting" or state.request is None:
            return None
        action = thread.agent.module.next_action(state)
        return child_id(thread.id, state.request) if isinstance(action, CallAgent) else None

    async def _cancel_child(
        self, cid: str, parent_id: str, *, reason: str, by: str | None, via: str
    ) -> bool:
        """Cancel the child `cid` of the cancelled thread `parent_id`, unless it never
        began or already ended (then, or if it ends in a race, there is nothing to do);
        whether it was cancelled."""
        try:
            child = await self._load(cid, None)
        except Exception:  # never created (or gone): nothing runs for the parent
            return False
        if _ended(child.state):
            return False
        why = f"its parent thread {parent_id} was cancelled: {reason}"
        try:
            await self.cancel(cid, reason=why, by=by, via=via)
        except (IllegalEvent, LeaseHeld, Conflict):
            # It ended in between, or another process runs it now: that one cancels it
            # when the run stops (`_report_to_parent`).
            return False
        return True

    async def _follow_cancelled_parent(self, child: Thread, parent_id: str) -> bool:
        """Cancel `child`, stopped short of its end, if its parent was cancelled while it
        ran in another process (the parent's cancel could not take it then); whether it
        was cancelled."""
        try:
            parent = await self._load(parent_id, None)
        except Exception:  # the parent is gone: nothing to follow
            return False
        ended = next((e for e in reversed(parent.events) if isinstance(e, Cancelled)), None)
        if parent.state.status != "cancelled" or ended is None:
            return False
        why, via = ended.reason or "cancelled", ended.via or "api"
        return await self._cancel_child(child.id, parent_id, reason=why, by=ended.by, via=via)

    async def retry(
        self,
        thread_id: str,
        *,
        by: str | None = None,
        reuse_key: bool = False,
        agent: AgentRef | None = None,
        run: bool = True,
    ) -> ThreadView:
        """Try a failed thread again from the step that failed (with `run=False`, only
        record the retry: a later `resume(thread_id)` runs it).

        A tool call whose outcome is unknown (it timed out, was interrupted, or returned
        a result of the wrong shape) is tried again with its idempotency key. After a
        tool returned an error, the retry is a new call with a new key (so a declined
        payment can be tried again), unless `reuse_key` asks for the failed call's key.
        A new call (a new key) of a step an approval's `on approved` led into does not
        run on that approval: the `Retried` names it and the thread waits there again
        for a new decision (`approved_call`).
        Raises `InputError` when `reuse_key` is given and the step made no tool call.
        """
        thread = await self._load(thread_id, agent)
        key = retry_key(thread, reuse_key=reuse_key)
        if thread.state.status in ("waiting", "finished", "cancelled"):
            # (A running one may be another process's: taking its lease says so.)
            raise NotFailed(thread.state, Retried(step=thread.state.step, by=by), thread.id)
        await self._check_parent_waits(thread)
        spec = thread.agent.spec
        approved = approved_call(thread.events, thread.state, spec)
        function = None if approved is None else spec.states[thread.state.step].function
        # The key is what makes a retry the same call: a tool that cannot see it does its
        # work again, and the approval let it run once.
        keyless = function is not None and self.engine.takes_key(thread.agent, function) is not True
        if reuse_key and keyless and key != thread.state.retry_key:
            assert approved is not None
            raise ApprovedWork(
                f"`{thread.state.step}` ({function}) takes no idempotency key, so keeping "
                "the key does not make the retry the same call: it would run again on "
                f"the approval at `{thread.events[approved].step}`. Retry without "
                "reusing the key: the thread goes back to that approval for a new "
                "decision"
            )
        if key is not None and not (keyless and key == thread.state.retry_key):
            approved = None  # the same call, on the approval it had
        # A new call of a step an approval led into asks that approval again.
        approval = None if approved is None else thread.events[approved].step
        retried = Retried(step=thread.state.step, at=_now(), by=by, key=key, approval=approval)
        try:
            await self.engine.record(thread, retried)
        except IllegalEvent:
            if thread.state.status == "failed":
                raise
            raise NotFailed(thread.state, retried, thread.id) from None  # left running
        return await self._view(await self._ran(thread, run))

    async def _ran(self, thread: Thread, run: bool) -> Thread:
        """`thread` advanced; without `run`, as it stands with its lease let go (the
        `resume` that runs it later takes one anew). A child thread that ended reports to
        its parent; a parent whose child ended (a crash came between) hears of it now."""
        if run:
            if await self._settle_child(thread) or await self._run_awaited_child(thread):
                thread = await self._load(thread.id, thread.agent)
            thread = await self.engine.advance(thread)
            return await self._report_to_parent(thread)
        await self.engine.let_go(thread)
        return thread

    # ---- sub-agents (`agent` steps) --------------------------------------------------

    async def _run_awaited_child(self, parent: Thread) -> bool:
        """Run on the child `parent` waits for when nobody advances it (a fork's child,
        or one a crash stopped), as `resume CHILD` would: a `resume PARENT` goes on
        wherever the work is. Whether it ran (it may have reported to `parent`)."""
        state = parent.state
        if state.status != "waiting" or not state.notified or state.request is None:
            return False
        if not isinstance(parent.agent.module.next_action(state), CallAgent):
            return False
        try:
            return await self._run_stalled_child(parent, forks_too=True) is not None
        except LeaseHeld:
            return False  # a live process runs it: its end reaches the parent from there

    async def _run_stalled_child(
        self, parent: Thread, run: bool = True, *, forks_too: bool = False
    ) -> Expiry | None:
        """Run on the child `parent` waits for when it is `running` with nobody advancing
        it (a crash stopped it, or a decision was recorded without running it): under the
        crash rules, as `resume CHILD` would; its end then reaches the parent. Without
        `run`, only say so: the `Expiry` names the child for the caller to run. None when
        the child is not running (it waits for a person, or it is gone), or is a fork's
        child nobody has run yet (a fork runs only when resumed; `forks_too` is that
        resume). Raises `LeaseHeld` when a live process holds it."""
        assert parent.state.request is not None
        try:
            child = await self._load(child_id(parent.id, parent.state.request), None)
        except Exception:
            return None  # no child: `_settle_child` reports a missing one
        if child.state.status != "running" and not (forks_too and _has_notice_due(child)):
            return None
        if not forks_too and unrun_fork_child(parent, child):
            return None
        if not run:
            await self.engine.check_free(child.id)
            return Expiry(child.id, child.state.step, None, view_of(child))
        seq = len(child.events)
        child = await self._ran(child, True)
        later = child.events[seq] if len(child.events) > seq else None
        return Expiry(child.id, child.state.step, later, view_of(child))

    async def _check_parent_waits(self, child: Thread) -> None:
        """Raise `ChildSettled` when `child` is a sub-agent's thread whose parent has moved
        on (a parent that is gone cannot be told either way: the retry goes ahead)."""
        first = child.events[0] if child.events else None
        parent_id = first.parent if isinstance(first, Started) else None
        if parent_id is None:
            return
        try:
            parent = await self._load(parent_id, None)
        except Exception:
            return
        state = parent.state
        if (
            state.status == "waiting"
            and state.request is not None
            and child_id(parent.id, state.request) == child.id
            and isinstance(parent.agent.module.next_action(state), CallAgent)
        ):
            return
        raise ChildSettled(
            f"thread {child.id} is a sub-agent of thread {parent_id}, which no longer waits "
            "for it (its step already took this thread's end): a retry here would reach "
            "nobody; retry or fork the parent instead"
        )

    def child_agent(self, parent: Agent, action: CallAgent) -> Agent:
        """The agent an `agent` step names: its file relative to the parent's folder. A
        parent running a pinned version (`Agent.sources`) starts the child its version
        holds (runtime/versions.py), its tools looked up beside the child's file as the
        project has it now (or as the parent's place recorded it)."""
        folder = parent.directory or Path.cwd()
        place = str((folder / action.agent).resolve())
        if parent.sources is None:
            return self.agent(place, sub_agent=True)
        key = f"pinned:{parent.sources / action.agent}"
        if key not in self._agents:
            self._agents[key] = load_pinned_child(parent, action.agent, self.cache_dir)
        kept = self._agents[key]
        directory = Path(place).parent
        return replace(kept, origin=place, directory=directory if directory.is_dir() else None)

    async def _run_child(self, parent: Thread, action: CallAgent) -> Event | None:
        """The engine's hook for an `agent` step: create the child thread (exactly once:
        its id is the parent's and the request's, and a second create finds it), record
        the link in the parent, run the child now; the event that ends the step if the
        child ended, else None (the parent waits for it)."""
        assert action.request is not None  # an agent step always waits on a request
        cid = child_id(parent.id, action.request)
        if not action.started:
            refused = await self._start_child(parent, action)
            if refused is not None:
                return refused
        child = await self._load(cid, None)
        self._inline.add(cid)
        try:
            child = await self.engine.advance(child)
        finally:
            self._inline.discard(cid)
        return child_outcome(child, action)

    async def _start_child(self, parent: Thread, action: CallAgent) -> ChildFailed | None:
        """Create the child thread of `parent`'s `agent` step (not run) and record the
        link in the parent; the step's failure instead when the value does not fit the
        child's input (nothing is created then)."""
        assert action.request is not None
        cid = child_id(parent.id, action.request)
        loaded = self.child_agent(parent.agent, action)
        try:
            value = typed_input(loaded, plain(action.value))
        except InputError as exc:
            return self._child_failed(action, cid, "ChildInputInvalid", str(exc))
        first = Started(step=loaded.spec.start, at=_now(), input=value, parent=parent.id)
        # Created before a crash: it is the same child (one id per request).
        with contextlib.suppress(Conflict):
            await self.engine.create(self._as_recorded(loaded), [first], cid, hold=False)
        await self.engine.record(parent, ChildStarted(step=action.step, at=_now(), child=cid))
        return None

    async def _report_to_parent(self, child: Thread) -> Thread:
        """A child thread that ended (finished, failed, cancelled) wakes its parent with
        its value or its error, and the parent runs on. Delivered at most once: the event
        names the parent's pending request, which the parent's reducer then closes. A
        child that stopped short of its end while its parent was cancelled is cancelled.
        The child as it now stands."""
        first = child.events[0] if child.events else None
        parent_id = first.parent if isinstance(first, Started) else None
        if parent_id is None or child.id in self._inline:
            return child
        if not _ended(child.state):
            if await self._follow_cancelled_parent(child, parent_id):
                return await self._load(child.id, child.agent)
            return child
        try:
            parent = await self._load(parent_id, None)
        except Exception:  # the parent is gone: the child's own log still holds its result
            return child
        try:
            if not await self._settle_child(parent):
                return child
            parent = await self._load(parent_id, parent.agent)
            parent = await self.engine.advance(parent)
        except (Conflict, LeaseHeld):
            return child  # another process has the parent now; it (or the sweep) delivers
        await self._report_to_parent(parent)
        return child

    async def _settle_child(self, parent: Thread) -> bool:
        """Record the end of `parent`'s child if it ended and the parent still waits for
        it; whether something was recorded."""
        state = parent.state
        if state.status != "waiting" or not state.notified or state.request is None:
            return False
        action = parent.agent.module.next_action(state)
        if not isinstance(action, CallAgent):
            return False
        try:
            child = await self._load(child_id(parent.id, state.request), None)
        except Exception as exc:
            ended: Event | None = self._child_failed(action, "", "ChildMissing", _problem(exc))
        else:
            ended = child_outcome(child, action)
        if ended is None:
            return False
        try:
            await self.engine.record(parent, ended)
        except Conflict:
            return False  # someone else delivered it first
        await self.engine.let_go(parent)
        return True

    @staticmethod
    def _child_failed(action: CallAgent, cid: str, kind: str, message: str) -> ChildFailed:
        error = ErrorInfo(kind, message)
        return ChildFailed(
            step=action.step, at=_now(), error=error, child=cid, request=action.request
        )

    async def get(self, thread_id: str, *, agent: AgentRef | None = None) -> ThreadView:
        return await self._view(await self._load(thread_id, agent))

    async def events(self, thread_id: str, *, agent: AgentRef | None = None) -> list[Event]:
        return (await self._load(thread_id, agent)).events

    async def replay(
        self, thread_id: str, *, upto: int | None = None, agent: AgentRef | None = None
    ) -> State:
        """The thread's state after its first `upto` events (all of them by default)."""
        thread = await self._load(thread_id, agent)
        return thread.agent.module.replay(thread.events[:upto])

    async def fork(self, thread_id: str, at_event: int, *, agent: AgentRef | None = None) -> str:
        """A new thread whose log is the first `at_event` events of this one, then a
        `Forked` event. It does not run: decide its request to go on, or, for a fork made
        between steps (held: `failed` with `ForkHeld`, so that no recovery or sweep runs
        it), retry it.

        A fork never carries a decision or a side effect forward (issue 8, item 5):
        - ending inside the one call an approval let run (`approved_call`: after the
          `Approved`, before the call's result), it copies only the events before that
          approval: the fork waits at the approval for a decision of its own;
        - ending just after a `Retried` that moved the thread into a tool no approval
          led into, not yet started, it drops that retry: the fork stays failed until a
          person retries it;
        - waiting (at an approval or a question), it gets its own request, notice and
          deadline (`Forked` opens them);
        - ending between a tool's `ToolStarted` and its result, the call is recorded as
          interrupted (`StepFailed` with the call's key): it runs again only through a
          person's retry, with the same key; ending on an `AttemptFailed` (a retry
          waiting for its backoff, which the parent makes) is treated the same way;
        - waiting at an `agent` step (before or after its child started), it gets its own
          child thread (`FORK~REQUEST`) started from the same value, linked in its log
          (`ChildStarted`) and shown as its view's `child`; the original's child and its
          requests stay the original's. The fork's child runs when the fork is resumed
          (the sweep leaves both alone until then).
        Raises `InputError` for an event number outside 1..len(log), `LeaseHeld` while
        another process is advancing the thread.
        """
        await self.engine.check_free(thread_id)  # a thread being advanced is refused
        thread = await self._load(thread_id, agent)
        if not 1 <= at_event <= len(thread.events):
            raise InputError(f"a fork point is an event number from 1 to {len(thread.events)}")
        await self._check_not_approved_work(thread)
        events = fork_log(thread, at_event)
        fork = await self.engine.create(
            self._as_recorded(thread.agent), events, new_thread_id(), hold=False
        )
        action = fork.agent.module.next_action(fork.state)
        if isinstance(action, CallAgent) and not action.started:
            # Its own child, from the same value (the original's child is the original's):
            # created, linked and shown, but run only when the fork is resumed.
            try:
                await self._start_child(fork, action)
            finally:
                await self.engine.let_go(fork)
        return fork.id

    async def _check_not_approved_work(self, thread: Thread) -> None:
        """Raise `ApprovedWork` when `thread` is a sub-agent's thread (or a fork of one, at
        any depth) that an approval let run: its parent's `agent` step, or an ancestor's,
        was entered through an approval's `on approved`. Its fork would run that approved
        work again (its timer, its signal, its own requests wake it; nobody has to retry
        it) without anyone deciding again. A parent that cannot be loaded cannot show
        that no approval led into the step: refused too."""
        current = thread
        for _ in range(CHILD_DEPTH_LIMIT + 1):
            parent_id = parent_of(current.events)
            if parent_id is None:
                return
            origin = await self._origin(current)
            try:
                parent = await self._load(parent_id, None)
            except Exception:
                parent = None
            at = None if parent is None else _child_started_at(parent.events, origin)
            if parent is None or at is None:
                raise ApprovedWork(
                    f"thread {thread.id} is a sub-agent's thread whose parent thread "
                    f"{parent_id} cannot be read, so nothing shows that no approval let it "
                    "run: it cannot be forked"
                )
            before = parent.events[:at]
            state = parent.agent.module.replay(before)
            approved = approved_call(before, state, parent.agent.spec)
            if approved is not None:
                raise ApprovedWork(
                    f"thread {thread.id} is part of the work an approval let run once "
                    f"(thread {parent.id}, `{before[approved].step}`, event {approved + 1}, "
                    f"led into `{state.step}`): a fork of it would run that work again "
                    f"without a new decision. Fork thread {parent.id} instead (`twelvefold "
                    f"fork {parent.id} --at {approved + 1}`): its fork asks the approval anew"
                )
            current = parent
        raise ApprovedWork(f"thread {thread.id} is nested too deep to be checked: not forked")

    async def _origin(self, thread: Thread) -> str:
        """The id of the thread `thread` was forked from, back to the first one (itself
        when it is no fork): the sub-agent's thread its parent's log names."""
        current = thread
        for _ in range(FORK_DEPTH_LIMIT):
            forked = next((e for e in current.events if isinstance(e, Forked)), None)
            if forked is None:
                return current.id
            try:
                current = await self._load(forked.parent, None)
            except Exception:
                return forked.parent
        return current.id

    async def expire(
        self,
        now: datetime | str | None = None,
        *,
        agents: Sequence[AgentRef] = (),
        run: bool = True,
    ) -> list[Expiry]:
        """Sweep the waiting threads at `now` (the clock unless given): time out those whose
        wait has run out and run each on, and try again the notices no channel took.

        A deadline counts from the pause. An approval's timeout is a rejection
        (`by="timeout"`, comment "no decision within 30m"), a human step's a failure
        ("Timeout: no answer within 4h"); a request nobody was ever told about fails its
        step with `NotDelivered` instead. A failed notice is tried again once its backoff
        has passed (one attempt per sweep). See runtime/timeouts.py. A thread someone
        decides at the same moment is left to them (the store's conflict check picks one).
        Returns one `Expiry` per thread the sweep changed. A thread whose agent has the
        name of one of `agents` is loaded with that one instead of from the place it
        recorded (`AsyncRuntime.agent_of`). Without `run`, a thread a timeout moved on is
        left as recorded (its lease let go) for the caller to run, under its own limit on
        how many run at once (the server's `--concurrency`)."""
        moment = timeouts.as_moment(now)
        named = {loaded.name: loaded for loaded in map(self.agent, agents)}
        swept: list[Expiry] = []
        for info in await self.threads("waiting"):
            expiry = await self._expire_one(info, named.get(info.agent), moment, run)
            if expiry is not None:
                swept.append(expiry)
        return swept

    async def expire_thread(
        self, thread_id: str, now: datetime | str | None = None, *, agent: AgentRef | None = None
    ) -> Expiry | None:
        """`expire` for one thread (a worker's timer job, twelvefold/server/queue.py): None
        when its wait has not run out and no notice is due (or it does not wait)."""
        info = await self.info(thread_id)
        if info.status != "waiting":
            return None
        loaded = None if agent is None else self.agent(agent)
        return await self._expire_one(info, loaded, timeouts.as_moment(now))

    async def _expire_one(
        self, info: ThreadInfo, agent: Agent | None, moment: datetime, run: bool = True
    ) -> Expiry | None:
        try:
            thread = await self._load(info.id, agent)
            state = thread.state
            action = thread.agent.module.next_action(state)
            if isinstance(action, CallAgent):
                if not state.notified and isinstance(thread.events[-1], Forked):
                    return None  # a fork nobody resumed yet: it does not run by itself
                # A crash came between: a child never started (or never linked), or a
                # child that ended and whose report was lost. Start it, or deliver it.
                try:
                    if state.notified and not await self._settle_child(thread):
                        return await self._run_stalled_child(thread, run)
                    thread = await self._ran(await self._load(info.id, thread.agent), run)
                except LeaseHeld:
                    return None  # a process is running it now: it starts or delivers
                later = thread.events[state.seq] if len(thread.events) > state.seq else None
                return Expiry(thread.id, state.step, later, view_of(thread), wait="agent")
            event = timeouts.overdue(state, action, thread.events, moment)
            if event is None:
                due = timeouts.next_notice(state, action, thread.events)
                if due is not None and moment >= due:
                    assert isinstance(action, AwaitApproval | AwaitAnswer)  # it waits
                    await self.engine.check_free(thread.id)  # nobody is advancing it
                    told = await self.engine.notify(thread, action, at=timeouts.iso(moment))
                    await self.engine.record(thread, told)
                    return Expiry(
                        thread.id, state.step, told, view_of(thread), wait=wait_kind(action)
                    )
                return None
            if isinstance(event, Rejected):  # a timeout ended the wait
                event = replace(event, trace=self._trace_wait(thread, event))
            elif isinstance(event, StepFailed):  # the wait's span only (nothing stores it)
                self._trace_wait(thread, event)
            await self.engine.record(thread, event)
        except Conflict:
            return None  # a person (or another sweep) got there first
        except Exception as exc:  # one broken thread must not stop the sweep
            return Expiry(info.id, info.step, None, None, _problem(exc))
        problem = None
        try:
            await self._ran(thread, run)
        except Exception as exc:
            problem = _problem(exc)
        return Expiry(thread.id, event.step, event, view_of(thread), problem, wait_kind(action))

    async def threads(
        self, status: Status | None = None, *, unleased: bool = False
    ) -> list[ThreadInfo]:
        """Threads, most recently updated first; with `unleased`, only those no process
        holds a live lease on."""
        found: list[ThreadInfo] = await self.engine._io(
            self.store.threads, status, unleased=unleased
        )
        return found

    async def damaged_threads(self) -> list[DamagedRow]:
        """The rows `threads` leaves out because they are damaged (`DamagedRow`); none
        from a store that does not tell them apart (every store of the runtime's does:
        the `EventStore` protocol does not ask it of other implementations)."""
        told = getattr(self.store, "damaged_threads", None)
        if told is None:
            return []
        found: list[DamagedRow] = await self.engine._io(told)
        return found

    async def migrate_check(self, agent: AgentRef) -> list[Verdict]:
        """Whether each unfinished thread of `agent` (a `.agent` file, as it is now) can
        move to this version, and why not (runtime/migrate.py). Changes nothing."""
        from .migrate import check

        return await check(self, self._versioned(agent))

    async def migrate(self, agent: AgentRef, *, by: str | None = None) -> list[Verdict]:
        """Pin every unfinished thread of `agent` that can move to its version now, each
        under its lease (a thread being advanced is refused); one `Verdict` per thread."""
        from .migrate import move

        return await move(self, self._versioned(agent), by=by)

    def _versioned(self, agent: AgentRef) -> Agent:
        loaded = self.agent(agent)
        if loaded.version is None:
            raise InputError(
                f"{shown(loaded.origin)} has no version threads can be pinned to: migrate "
                "takes a .agent file (UTF-8 text), not a generated module"
            )
        return loaded

    async def info(self, thread_id: str) -> ThreadInfo:
        info: ThreadInfo = await self.engine._io(self.store.info, thread_id)
        return info

    async def agent_of(self, thread_id: str, agent: AgentRef | None = None) -> Agent:
        """The agent thread `thread_id` runs with: `agent` when given, else the one at the
        place the thread recorded (`ThreadInfo.origin`, a file's place relative to the
        thread store's folder: `recorded_agent`).

        Raises `AgentMissing` (one line, naming the recorded place and `--agent`) when the
        recorded place holds no agent any more, and `InputError` when `agent` is not the
        agent the thread ran (another name): a thread never runs on with a stranger.

        A thread pinned to an agent version (`ThreadInfo.version`) runs that version's
        reducer whatever the file holds now: when the agent found is another version (an
        edit, a changed prompt), or is missing or broken, the reducer is regenerated from
        the sources the store kept (`pinned`); tools still come from the agent's folder.
        """
        info = await self.info(thread_id)
        if info.version is None:
            return self._current_agent(info, agent)
        try:
            current: Agent | None = self._current_agent(info, agent)
        except AgentLoadError:  # moved, deleted, or edited so that it does not compile
            current = None
        found = current.version if current is not None else None
        if current is not None and found is not None and found.digest == info.version:
            return current
        return await self.pinned(info, current)

    async def pinned(self, info: ThreadInfo, current: Agent | None = None) -> Agent:
        """The agent version thread `info` is pinned to, from the store: verified against
        its digest (`VersionTampered`), compiled, its tools looked up in `current`'s folder
        (the agent as found now), else in the folder of the place the thread recorded."""
        assert info.version is not None
        digest = info.version
        key = f"{digest}\n{current.directory if current is not None else ''}"
        if key in self._pinned:
            return self._pinned[key]
        body = await self.engine._io(self.store.load_version, digest)
        if body is None:
            raise VersionError(
                f"thread {shown(info.id)} is pinned to agent version {digest[:16]}, which is "
                "not in the thread store (deleted outside twelvefold?); nothing was run"
            )
        version = await self.engine._io(AgentVersion.from_stored, digest, body)
        if current is not None:
            origin, directory = current.origin, current.directory
        else:
            origin = recorded_agent(info.origin, self.places)
            folder = Path(origin).parent if is_file_reference(origin) else None
            directory = folder if folder is not None and folder.is_dir() else None
        loaded: Agent = await self.engine._io(
            load_version, version, origin=origin, directory=directory, cache_dir=self.cache_dir
        )
        if loaded.name != info.agent:
            raise VersionError(
                f"thread {shown(info.id)} runs agent `{shown(info.agent)}`, but the version it "
                f"is pinned to ({digest[:16]}) is agent `{loaded.name}`; nothing was run"
            )
        self._pinned[key] = loaded
        return loaded

    def _current_agent(self, info: ThreadInfo, agent: AgentRef | None) -> Agent:
        """The agent `agent` names, else the one at the place the thread recorded."""
        thread_id = info.id
        if agent is not None:
            named = str(agent) if isinstance(agent, str | Path) else None
            if named is not None and is_file_reference(named) and not Path(named).is_file():
                raise AgentMissing(f"no agent at {shown(named)} (the agent named for it)")
            loaded = self.agent(agent)
            if loaded.name != info.agent:
                raise InputError(
                    f"thread {shown(thread_id)} runs agent `{shown(info.agent)}`, but "
                    f"{shown(loaded.origin)} is agent `{loaded.name}`"
                )
            return loaded
        reference = recorded_agent(info.origin, self.places)
        missing = (
            f"thread {shown(thread_id)}'s agent `{shown(info.agent)}` is not at {shown(reference)}"
        )
        if reference != info.origin:
            missing += f" (recorded as {shown(info.origin)}, relative to the thread store's folder)"
        advice = "; pass --agent PATH (agent= in the API) to name where it is now"
        if is_file_reference(reference) and not Path(reference).is_file():
            raise AgentMissing(missing + advice)
        try:
            return self.agent(reference)
        except AgentLoadError as exc:
            if is_file_reference(reference):
                raise  # it is there but does not load: that is what to fix
            raise AgentMissing(f"{shown(str(exc))}{advice}") from None

    async def _load(self, thread_id: str, agent: AgentRef | None) -> Thread:
        return await self.engine.load(await self.agent_of(thread_id, agent), thread_id)

    def _trace_wait(
        self,
        thread: Thread,
        ended_by: Approved | Rejected | Answered | Cancelled | StepFailed,
        before: int = -1,
    ) -> str | None:
        """Record the span of the wait `ended_by` ends (runtime/tracing.py) and return its
        traceparent for the decision to carry; None when tracing is off. `before`: how many
        of the thread's events precede `ended_by` (all of them unless it was recorded)."""
        found = tracing.tracer()
        if found is None:
            return None
        events = thread.events if before < 0 else thread.events[:before]
        state = thread.state if before < 0 else thread.agent.module.replay(events)
        action = thread.agent.module.next_action(state) if state.status == "waiting" else None
        kind = "question" if isinstance(action, AwaitAnswer) else "approval"
        span = tracing.record_wait(
            found,
            agent=thread.agent.name,
            thread_id=thread.id,
            events=events,
            ended_by=ended_by,
            request=state.request,
            kind=kind,
        )
        return tracing.traceparent(span)

    def _as_recorded(self, agent: Agent) -> Agent:
        """`agent` carrying the place a new thread records for it (`recorded_place`)."""
        place = recorded_place(agent.origin, self.places)
        return agent if place == agent.origin else replace(agent, origin=place)


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

    def agent(self, reference: AgentRef, *, sub_agent: bool = False) -> Agent:
        return self.aio.agent(reference, sub_agent=sub_agent)

    def agent_of(self, thread_id: str, agent: AgentRef | None = None) -> Agent:
        return self._run(self.aio.agent_of(thread_id, agent))

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

    def send(self, thread_id: str, type: str, value: Any, **options: Any) -> ThreadView:
        return self._run(self.aio.send(thread_id, type, value, **options))

    def cancel(self, thread_id: str, **options: Any) -> ThreadView:
        return self._run(self.aio.cancel(thread_id, **options))

    def expire(
        self, now: datetime | str | None = None, *, agents: Sequence[AgentRef] = ()
    ) -> list[Expiry]:
        return self._run(self.aio.expire(now, agents=agents))

    def threads(self, status: Status | None = None) -> list[ThreadInfo]:
        return self.store.threads(status)

    def migrate_check(self, agent: AgentRef) -> list[Verdict]:
        return self._run(self.aio.migrate_check(agent))

    def migrate(self, agent: AgentRef, *, by: str | None = None) -> list[Verdict]:
        return self._run(self.aio.migrate(agent, by=by))

    def close(self) -> None:
        if self._loop is not None:
            # The model client's connection pool belongs to this loop: closed with it.
            close = getattr(self.aio.engine.model, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    self._loop.run_until_complete(close())
            self._loop.close()
            self._loop = None

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        try:
            import asyncio

            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass
            else:
                raise RuntimeError("Runtime is synchronous; inside an event loop use AsyncRuntime")
            if self._loop is None:
                from twelvefold.runtime.eventloop import new_event_loop

                self._loop = new_event_loop()
        except BaseException:  # the call never began (Ctrl-C, or inside a loop): it never will
            coroutine.close()  # (else "coroutine ... was never awaited" on stderr)
            raise
        loop, task = self._loop, None
        try:
            task = loop.create_task(coroutine)
            return loop.run_until_complete(task)
        except BaseException:
            if task is None:  # a Ctrl-C as the task was made: the call never began
                coroutine.close()
            elif not task.done():
                # Ctrl-C (KeyboardInterrupt) stopped the loop while the call awaited, e.g.
                # a tool retry's backoff, or before its first step. The call is cancelled
                # and unwound in its own task, so its `finally` blocks run in its context
                # (the lease is let go); left pending, it would be closed by the garbage
                # collector outside that context, with a traceback on stderr ("Task was
                # destroyed but it is pending!") and the lease held until it expired. A
                # second stop while it unwinds is waited out a few times over.
                task.cancel()
                for _ in range(3):
                    with contextlib.suppress(BaseException):
                        loop.run_until_complete(task)
                    if task.done():
                        break
            # A lease taken where nothing lets it go (a Ctrl-C between a launch's first
            # write and its run): nothing in this process runs any thread any more.
            self.aio.engine.release_leases()
            raise


def pending_action(thread: Thread, request: str | None) -> AwaitApproval | AwaitAnswer:
    """What the thread waits for, if `request` is the pending request; else
    `RequestNotPending`, naming the request that is pending (if any)."""
    state = thread.state
    pending = state.request if state.status == "waiting" else None
    if pending is None:
        raise RequestNotPending(
            f"thread {thread.id} is {state.status} at `{state.step}`: no request is pending"
            + (
                f" (request `{shown(request)}` is {_not_pending(request, state.seq)})"
                if request
                else ""
            )
        )
    action = thread.agent.module.next_action(state)
    if not isinstance(action, AwaitApproval | AwaitAnswer):
        raise RequestNotPending(nobody_decides(view_of(thread)))
    if request is None:
        raise RequestNotPending(
            f"name the request you decide: thread {thread.id} waits on request `{pending}`"
        )
    if request != pending:
        raise RequestNotPending(
            f"request `{shown(request)}` of thread {thread.id} is"
            f" {_not_pending(request, state.seq, why=True)}; the pending request is `{pending}`"
        )
    return action


def _not_pending(request: str, seq: int, *, why: bool = False) -> str:
    """How a request that is not the pending one stands, for a thread of `seq` events:
    "not pending yet" when it names a later place (a request id is `STEP-SEQ`, the event
    count at which its wait opened: the thread has not reached it), else "no longer
    pending" (with `why`: it was decided or replaced)."""
    if (place := not_reached(request, seq)) is not None:
        return f"not pending yet (the thread has {seq} events; it has not reached {place})"
    return "no longer pending (it was decided or replaced)" if why else "no longer pending"


def not_reached(request: str, seq: int) -> str | None:
    """`event N` when `request` (`STEP-N`) names a place past a thread's `seq` events;
    else None (a place reached, or not a request id at all)."""
    _, dash, number = request.rpartition("-")
    if dash and number.isdigit() and len(number) < 19 and int(number) > seq:
        return f"event {int(number)}"
    return None


def nobody_decides(view: ThreadView) -> str:
    """Why a person's decision does not fit a thread that waits for something else (an
    outside event, its timer, its sub-agent), with the command that moves it on."""
    where = f"thread {view.id} waits at `{view.step}`"
    if view.waiting_for == "event":
        return (
            f"{where} for an event {view.event_type}, not a person's decision: send it with "
            f"`twelvefold send {view.id} {view.event_type} JSON --request {view.request}`"
        )
    if view.waiting_for == "timer":
        until = f" (until {view.wake_at})" if view.wake_at else ""
        return (
            f"{where} for its timer{until}, not a person's decision: `twelvefold expire` "
            "wakes it when it is due"
        )
    if view.waiting_for == "agent":
        if view.child is None:
            return f"{where} for its sub-agent, which has not started yet: resume it to start it"
        return (
            f"{where} for its sub-agent, thread {view.child}: a person decides that thread's "
            f"request (`twelvefold show {view.child}` names it)"
        )
    return f"thread {view.id} waits for nothing a person can decide"


def typed_event(agent: Agent, type: str, value: Any) -> BaseModel:
    """`value` as the agent's declared type named `type`; `InputError` for a type the agent
    does not declare or a value of the wrong shape (given as the model, a dict or JSON),
    or JSON text that gives a key twice or has a key holding a lone surrogate (naming the
    key and where it is)."""
    declared = agent.spec.types.get(type)
    if declared is None:
        known = ", ".join(sorted(agent.spec.types)) or "none"
        raise InputError(f"{agent.name} declares no type `{shown(type)}` (its types: {known})")
    try:
        typed: BaseModel = strictly(declared, value)
    except RepeatedKey as exc:  # the path to the key and why: a problem like any other
        raise InputError(f"the event is not a valid {type}: {shown(str(exc))}") from None
    except LoneSurrogateKey as exc:  # as `storable` says it of data
        raise InputError(shown(exc.at("the event's value"))) from None
    except ValidationError as exc:
        unstorable_text(exc, value, "the event's value")
        problems = validation_problems(exc, limit=exc.error_count(), model=declared)
        raise InputError(f"the event is not a valid {type}: {shown(problems)}") from None
    storable(typed, "the event's value")
    return typed


def delivered(thread: Thread, key: str) -> bool:
    """Whether an event with idempotency key `key` was already delivered to the thread."""
    return any(isinstance(event, Signalled) and event.key == key for event in thread.events)


def awaited_signal(thread: Thread, type: str, request: str | None) -> AwaitSignal:
    """What the thread waits for, if it is an event of `type` (and `request`, when named,
    is the pending request); else `NotWaiting` / `RequestNotPending`."""
    state = thread.state
    action = thread.agent.module.next_action(state) if state.status == "waiting" else None
    if not isinstance(action, AwaitSignal):
        at = f"{state.status} at `{state.step}`"
        raise NotWaiting(f"thread {thread.id} does not wait for an event: it is {at}")
    expected = declared_name(action.event)
    if thread.agent.spec.types.get(type) is not action.event:
        raise NotWaiting(
            f"thread {thread.id} waits at `{state.step}` for {expected}, not {shown(type)}"
        )
    if request is not None and request != state.request:
        raise RequestNotPending(
            f"request `{shown(request)}` of thread {thread.id} is"
            f" {_not_pending(request, state.seq, why=True)}; the pending request is"
            f" `{state.request}`"
        )
    return action


def allowed_config(thread: Thread, action: AwaitApproval | AwaitAnswer, by: str | None) -> Config:
    """The configuration in force for the thread's agent, read now; raises `NotAnApprover`
    when an approval declares `approvers` that it defines and `by` is in none of them.

    Groups the configuration does not define cannot be checked: when none of the declared
    groups is defined the decision is accepted with an `UnenforcedApprovers` warning; when
    some are, only their members may decide (an undefined group vouches for nobody).
    Answering a human step needs no approver.
    """
    _load_engine()
    directory = thread.agent.directory or Path.cwd()
    try:
        config = find_config(directory)
        groups = config.approvers
    except ConfigError as exc:
        raise InputError(f"cannot check who may decide: {exc}") from None
    if not isinstance(action, AwaitApproval) or not action.approvers:
        return config
    declared = action.approvers
    defined = [group for group in declared if group in groups]
    if not defined:
        where = (
            f"in {config.path}"
            if config.path
            else f"anywhere: no twelvefold.toml or [tool.twelvefold] at or above {directory}"
        )
        warnings.warn(
            UnenforcedApprovers(
                f"approvers {', '.join(declared)} of `{action.step}` are not defined "
                f"{where}: who decides is NOT checked (define them under "
                "[tool.twelvefold.approvers])"
            ),
            stacklevel=3,
        )
        return config
    if by is None or not any(by in groups[group] for group in defined):
        who = "nobody (give by= / --by)" if by is None else f"`{shown(by)}`"
        raise NotAnApprover(
            f"`{action.step}` may be decided only by a member of "
            f"{', '.join(defined)} (as {config.path} says); {who} is not one"
        )
    return config


def shown(text: str) -> str:
    """A string someone typed, safe to print in an error or a listing's cell: control
    characters (terminal escapes, newlines) come out escaped, and so does every other
    character a person cannot see (`for_terminal`), so a cell is as wide as it reads."""
    return for_terminal(text) if text.isprintable() else ascii(text)[1:-1]


def fork_log(thread: Thread, at_event: int) -> list[Event]:
    """The log a fork of `thread` at `at_event` starts from: see `AsyncRuntime.fork`."""
    _load_engine()
    module, spec = thread.agent.module, thread.agent.spec
    prefix = list(thread.events[:at_event])
    state = module.replay(prefix)
    if isinstance(prefix[-1], AttemptFailed):
        # The parent retries this call after its backoff, with its key: the fork must not
        # run it too. Cut back to the call in flight, which the fork records as interrupted.
        prefix.pop()
        state = module.replay(prefix)
    approved = approved_call(prefix, state, spec)
    if approved is not None:
        # The copied events end inside the one call an approval let run (after the
        # `approved`, before the call's result: not started, in flight, waiting for a
        # backoff, or failed): the approval was the parent's, for the parent's call. The
        # fork copies only what came before it and asks anew (red team rt5, t27).
        del prefix[approved:]
        state = module.replay(prefix)
    if (
        isinstance(prefix[-1], Retried)
        and spec.states[state.step].kind == "tool"
        and state.tool_key is None
    ):
        # A person's retry of a failed call not yet started was given to the parent,
        # which acts on it: the fork stays failed until a person retries it.
        prefix.pop()
        state = module.replay(prefix)
    at = _now()
    events: list[Event] = [
        *prefix,
        Forked(
            step=state.step,
            at=at,
            parent=thread.id,
            parent_seq=len(prefix),
            # Between steps, the fork would run on whoever next looks at it: held.
            held=True if state.status == "running" and state.tool_key is None else None,
        ),
    ]
    if state.status == "running" and state.tool_key is not None:
        # The parent's call may have run: the fork must not run it again on its own.
        interrupted = ErrorInfo(
            INTERRUPTED.type,
            f"forked from thread {thread.id} while this call was in flight: it may or may "
            "not have run, so the fork does not run it (retry the fork to run it again "
            "with the same key)",
        )
        events.append(StepFailed(step=state.step, at=at, error=interrupted, key=state.tool_key))
    return events


def approved_call(events: Sequence[Event], state: State, spec: AgentSpec) -> int | None:
    """Where in `events` (0-based) the `Approved` stands whose one call the thread is in:
    the thread (`state`, replayed from `events`) is at a `tool` or `agent` step that the
    approval's `on approved` led straight into, and that call has not ended (not started,
    in flight, waiting for its backoff, or failed). None otherwise: an approval whose
    call ended is spent, and what follows is the thread's ordinary work."""
    step = state.step
    if spec.states[step].kind not in ("tool", "agent") or state.status == "finished":
        return None
    at = len(events) - 1
    while at >= 0 and events[at].step == step:
        if isinstance(events[at], ToolResult | ChildEnded | Started):
            return None  # the visit began after a call that ended here (a step to itself)
        at -= 1
    if at < 0 or not isinstance(events[at], Approved):
        return None
    return at if events[at].step in spec.approval_into(step) else None


def storable(value: Any, where: str) -> None:
    """`InputError` for a value from outside that cannot be stored (`codec.unstorable`)."""
    from .codec import unstorable

    problem = unstorable(value, where)
    if problem is not None:
        raise InputError(problem)


def unstorable_text(refused: ValidationError, value: Any, where: str) -> None:
    """`InputError` in `storable`'s words when pydantic refused JSON text (`value`) as
    not JSON because a string in it holds a lone surrogate escape (`"\\ud800"`): JSON that
    Python's json reads, and pydantic's reader calls `Invalid JSON` of a field named
    `value`. Nothing for any other refusal, or text Python's json does not read either.
    (A key holding one is refused before: `LoneSurrogateKey`.)"""
    if not isinstance(value, str | bytes) or not any(
        error["type"] == "json_invalid" for error in refused.errors(include_url=False)
    ):
        return
    try:
        data = jsonkeys.loads(value)
    except (ValueError, RecursionError):
        return
    storable(data, where)


def typed_input(agent: Agent, value: Any) -> Any:
    """The launch input as the agent declares it: a string, or a number, a boolean or one
    of its types (given as JSON text, a `ParsedJson`, the model, a dict or the value),
    validated as strictly as a model's output (`strictly`). `InputError` for a value
    that does not fit, or JSON text that gives a key twice or has a key holding a lone
    surrogate (naming the key and where)."""
    declared = agent.spec.input_type
    if isinstance(value, ParsedJson) and declared is str:
        value = value.value  # a string agent's input is the text itself, not JSON
    if declared is str:
        if not isinstance(value, str):
            raise InputError(f"{agent.name} takes a string input, not {type(value).__name__}")
        storable(value, "the input")
        return value
    model = declared if issubclass(declared, BaseModel) else None
    try:
        typed = strictly(declared, value)
    except LoneSurrogateKey as exc:  # as `storable` says it of data
        raise InputError(shown(exc.at("the input"))) from None
    except (ValidationError, RepeatedKey) as exc:
        if isinstance(exc, ValidationError):
            unstorable_text(exc, value, "the input")
        problems = (
            str(exc) if isinstance(exc, RepeatedKey) else validation_problems(exc, model=model)
        )
        if model is None:  # one problem, of the value itself (its `value: ` prefix said nothing)
            name, problem = declared.__name__, problems.removeprefix("value: ")
            a = "an" if name[0] in "aeiou" else "a"
            raise InputError(f"{agent.name} takes {a} {name} input: {shown(problem)}") from None
        raise InputError(
            f"the input is not a valid {declared_name(declared)}: {shown(problems)}"
        ) from None
    if isinstance(typed, float) and not math.isfinite(typed):
        # As for every float field (docs/language.md): NaN answers false to every
        # comparison and, like the infinities, has no JSON form to store or show.
        raise InputError(f"the input {typed} is not a finite number")
    storable(typed, "the input")
    return typed


def retry_key(thread: Thread, *, reuse_key: bool) -> str | None:
    """The idempotency key a retry of `thread` records (`Retried.key`): the failed call's
    when its outcome is unknown (`State.retry_key`) or when `reuse_key` asks for it; None
    (a new call, a new key) otherwise."""
    state = thread.state
    if state.retry_key is not None or not reuse_key:
        return state.retry_key
    # The failed call's `ToolStarted` is the event right before its `StepFailed`.
    match thread.events[-2:]:
        case [ToolStarted(step=started_at, key=key), StepFailed(step=failed_at)] if (
            started_at == failed_at == state.step and state.status == "failed"
        ):
            return key
    raise InputError(f"there is no failed tool call at `{state.step}` whose key could be reused")


CHILD_DEPTH_LIMIT = 17
"""How far down a line of sub-agents a misdirected decision is looked for (the compiler
lets sub-agents nest 16 levels: compiler/linking.py CHAIN_LIMIT)."""


FORK_DEPTH_LIMIT = 256
"""How many generations of forks `_origin` follows back to the thread they came from."""


def _child_started_at(events: Sequence[Event], child: str) -> int | None:
    """Where (0-based) the `ChildStarted` linking `child` stands in a parent's `events`."""
    return next(
        (i for i, e in enumerate(events) if isinstance(e, ChildStarted) and e.child == child),
        None,
    )


def _has_notice_due(thread: Thread) -> bool:
    """Whether `thread` waits for a person nobody was told about yet (a fork's child that
    starts at an approval): running it sends the notice."""
    return (
        thread.state.status == "waiting" and not thread.state.notified and len(thread.events) == 1
    )


def parent_of(events: Sequence[Event]) -> str | None:
    """The thread whose `agent` step started the thread of `events` (its `Started` says)."""
    first = events[0] if events else None
    return first.parent if isinstance(first, Started) else None


def came_from(events: Sequence[Event]) -> list[str]:
    """The threads the thread of `events` came from, as its own log says, nearest first:
    the parent of each `Forked` from the last one back (a fork of a fork copies its
    parent's `Forked` when it copies that far), then the thread whose `agent` step
    started it (`parent_of`; a fork of a sub-agent's thread copies its `Started`). Every
    fork writes its `Forked`, wherever it is made (the CLI, `Runtime.fork`, the server),
    so this is the one answer to what a thread came from (the four-eyes rule follows it
    back to whoever launched the first)."""
    found = [e.parent for e in reversed(events) if isinstance(e, Forked)]
    started = parent_of(events)
    if started is not None:
        found.append(started)
    return list(dict.fromkeys(found))


def unrun_fork_child(parent: Thread, child: Thread) -> bool:
    """Whether `child` is the child a fork of `parent` was given (`AsyncRuntime.fork`) and
    nobody has run either yet: the fork's log ends with its `Forked` and the link, and the
    child's holds only its start."""
    return len(child.events) == 1 and [type(e) for e in parent.events[-2:]] == [
        Forked,
        ChildStarted,
    ]


def _problem(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _ended(state: State) -> bool:
    return state.status in ("finished", "failed", "cancelled")


def child_outcome(child: Thread, action: CallAgent) -> Event | None:
    """What a child thread's end means for the parent's `agent` step: its final value
    validated against the step's output type (`ChildEnded`), or the step's error
    (`ChildFailed`: failed, cancelled, a value of another shape); None while it runs or
    waits."""
    _load_engine()
    state = child.state
    if not _ended(state):
        return None

    def failed(kind: str, message: str) -> ChildFailed:
        error = ErrorInfo(kind, message)
        return ChildFailed(
            step=action.step, at=_now(), error=error, child=child.id, request=action.request
        )

    if state.status == "finished":
        try:
            value = action.output.model_validate(plain(state.value))
        except ValidationError as exc:
            return failed("ChildOutputInvalid", _first_error(exc))
        return ChildEnded(
            step=action.step, at=_now(), value=value, child=child.id, request=action.request
        )
    if state.status == "cancelled":
        why = next((e.reason for e in reversed(child.events) if isinstance(e, Cancelled)), None)
        return failed("ChildCancelled", why or "cancelled")
    return failed("ChildFailed", str(state.error or "the child thread failed"))


def _first_error(exc: ValidationError) -> str:
    return validation_problems(exc, limit=1)


def new_thread_id() -> str:
    return secrets.token_hex(8)
