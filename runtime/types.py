"""The values a generated reducer works with: thread state, events, actions.

Everything here is immutable. Events are what happened (the log is the only state);
actions are what the runtime must do next. Both are plain frozen dataclasses so that
`reduce` stays cheap and obviously pure.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .records import builder, quick_init, record

Status = Literal["running", "waiting", "finished", "failed", "cancelled"]


class Answer(BaseModel):
    """What a person replies to a `human` step."""

    # Built on first use (importing stays cheap); an instance is validated again like a
    # dict (a model of the user's own may build one with `model_construct`).
    model_config = ConfigDict(defer_build=True, revalidate_instances="always")

    text: str
    by: str | None = None


@record(slots=True)
class ErrorInfo:
    """A failure as the context window shows it: type and message, never a stack trace."""

    type: str
    message: str

    def __post_init__(self) -> None:
        # Both quote outside text (an exception's message, a server's answer): a lone
        # surrogate in it (what `surrogateescape` decoding of bad bytes leaves) can be in
        # no UTF-8, so no store could record the failure. Kept escaped (`\udcff`): a
        # failure must always be recordable.
        for name in ("type", "message"):
            text = getattr(self, name)
            if isinstance(text, str) and not text.isascii():
                escaped = text.encode("utf-8", "backslashreplace").decode("utf-8")
                if escaped != text:
                    object.__setattr__(self, name, escaped)

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type


@record(slots=True)
class Usage:
    """Cost of one model or tool step, where known."""

    latency_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None


# ---- events --------------------------------------------------------------------


@record(slots=True, kw_only=True)
class Event:
    """Something that happened to a thread at `step`. `at` never affects `reduce`; `usage`
    does only through the budgets (`max_cost`, `max_tokens`: runtime/spec.py), from the
    counts and the cost recorded when the call was made."""

    step: str
    at: str | None = None
    usage: Usage | None = None
    run_trace: str | None = None
    """On the first event a traced run appends (unless the event names the run in its own
    `trace`: `Notified`, `AttemptFailed`), the W3C `traceparent` of that run's span: the
    next run of the thread, whatever starts it (a timer, a signal, a sweep after a crash),
    links to it (docs/observability.md). Never seen by `reduce`."""


@record(slots=True, kw_only=True)
class Started(Event):
    """The thread was launched with `input`; always the first event."""

    input: Any
    trace: str | None = None
    """The W3C `traceparent` of the span of the run that launched it, when traced: every
    later run of the thread joins that trace (docs/observability.md)."""
    parent: str | None = None
    """For a child thread (an `agent` step's): the parent thread it reports back to."""


@record(slots=True, kw_only=True)
class ModelOutput(Event):
    """An llm step's output: one value of its declared union, already validated."""

    output: BaseModel


@record(slots=True, kw_only=True)
class ToolStarted(Event):
    """The runtime is about to call a tool with this idempotency key (written first, durably)."""

    key: str


@record(slots=True, kw_only=True)
class ToolResult(Event):
    result: BaseModel


@record(slots=True, kw_only=True)
class StepFailed(Event):
    """A model whose output stayed invalid, a tool that raised, a timeout."""

    error: ErrorInfo
    key: str | None = None
    """The idempotency key of a tool call whose outcome is unknown (it timed out or was
    interrupted, so it may have run): any further attempt of that call reuses it. None
    when the step is known to have failed without running its side effect to the end."""


@record(slots=True, kw_only=True)
class AttemptFailed(Event):
    """An attempt of the tool call in flight (`key`) failed and ended, and the step's
    `retry N backoff D` tries it again, with the same key, once `retry_at` (UTC ISO 8601)
    has come: D after the first failed attempt, 2D after the second, ... The wait is this
    event, not a process: whoever runs the thread next (after a restart too) starts the
    next attempt at `retry_at`, even for a tool without an idempotency key, since this
    attempt is known to have ended."""

    key: str
    error: ErrorInfo
    attempt: int
    """Which attempt failed (1 for the first)."""
    retry_at: str
    trace: str | None = None
    """The W3C `traceparent` of the run the attempt failed in, when traced: the run that
    tries again (often another process's) is its child (docs/observability.md)."""


@record(slots=True, kw_only=True)
class OutputRejected(Event):
    """A check before dispatch (`validate`, `judge`) refused an llm step's output: nothing
    was dispatched; the model is asked again with the rejection in its context, and each
    rejection counts against the step's `retries` (`State.rejections`)."""

    output: BaseModel
    """The output that was refused (kept for the record; never dispatched)."""
    by: str
    """Who refused it: the validator's `module:function`, or `judge`."""
    reason: str
    """Why, in the validator's or the judge's words (the model reads it)."""


class Verdict(BaseModel):
    """What a `judge` answers about an llm step's output (runtime/checks.py)."""

    # Built on first use (importing stays cheap); an instance is validated again like a
    # dict (a model of the user's own may build one with `model_construct`).
    model_config = ConfigDict(defer_build=True, revalidate_instances="always")

    accept: bool
    reason: str


LOG_CHANNEL = "log"
"""The stderr channel's name (runtime/notify.py's `LogNotifier`): see `Notified.delivered`."""


@record(slots=True, kw_only=True)
class Notified(Event):
    """People were told that the thread waits for them (so a restart does not tell them twice)."""

    channels: tuple[str, ...] = ()
    """The channels that took the notice."""
    failed: tuple[str, ...] = ()
    """The channels that could not deliver it, each as `name: reason` (no secrets)."""
    trace: str | None = None
    """The W3C `traceparent` of the run that paused, when traced: the wait's span is its
    child, and the run resumed after the decision links to it."""

    @property
    def delivered(self) -> bool:
        """Whether the notice reached someone: a channel other than the stderr log took
        it, or no channel failed. A log line alone counts only where it is the one channel
        configured (a person at the terminal); with no channel configured at all, nothing
        could fail and the pause is visible only in `threads` and the printed view."""
        return not self.failed or any(channel != LOG_CHANNEL for channel in self.channels)


@record(slots=True, kw_only=True)
class Decision(Event):
    """What a person decided about a pending request (see `State.request`)."""

    request: str | None = None
    """The request the decision answers; it must be the one pending (`State.request`)."""
    via: str | None = None
    """Where the decision came from: `cli (os user NAME)`, `api`, `http`, `timeout`."""
    config: str | None = None
    """The configuration that allowed it: `path#sha256-prefix`, or None without one."""
    trace: str | None = None
    """The W3C `traceparent` of the wait's span (from the notice to this decision), when
    traced: the run that follows is its child."""


@record(slots=True, kw_only=True)
class Approved(Decision):
    by: str | None = None
    comment: str | None = None


@record(slots=True, kw_only=True)
class Rejected(Decision):
    by: str | None = None
    comment: str | None = None


@record(slots=True, kw_only=True)
class Answered(Decision):
    answer: Answer


@record(slots=True, kw_only=True)
class Signalled(Decision):
    """An outside event delivered to a `wait` step (`twelvefold send`, `Runtime.send`),
    already validated against the type it waits for."""

    type: str
    """The event's declared type name (`PaymentReceived`)."""
    value: BaseModel
    key: str | None = None
    """The sender's idempotency key: a second delivery with the same key is dropped."""
    by: str | None = None


@record(slots=True, kw_only=True)
class TimerFired(Decision):
    """A durable timer ran out (`expire` records it): a `sleep` step's duration, or a
    `wait` step's `timeout` with no event delivered. It names the request it ends."""


@record(slots=True, kw_only=True)
class ChildStarted(Event):
    """An `agent` step's child thread exists (the link from the parent to the child; the
    child's `Started.parent` is the link back). Recorded once per visit of the step."""

    child: str
    """The child thread's id: `{parent}~{request}`, so a crash re-creates nothing."""


@record(slots=True, kw_only=True)
class ChildEnded(Decision):
    """The child thread of an `agent` step finished: its final value, validated against
    the step's output type, goes on. Names the request it ends (delivered once)."""

    child: str
    value: BaseModel


@record(slots=True, kw_only=True)
class ChildFailed(StepFailed):
    """The child thread of an `agent` step failed, was cancelled or ended with a value of
    the wrong type: the step's error (`on error`). Names the request it ends."""

    child: str = ""
    request: str | None = None


@record(slots=True, kw_only=True)
class Retried(Event):
    """A failed thread is tried again from the step that failed."""

    by: str | None = None
    key: str | None = None
    """For a failed tool call: the idempotency key the new attempt reuses (the failed
    call's, when its outcome is unknown or the person asked to reuse it); None for a
    new call with a new key."""
    approval: str | None = None
    """The approval step the thread goes back to: set when the failed step is one an
    approval's `on approved` led into and the retry is a new call (no `key`). An
    approval lets exactly one call run, so a new call asks for a new decision (a new
    request at that step) instead of running on the old one."""


@record(slots=True, kw_only=True)
class Forked(Event):
    """The first event of a fork after the events it copied: the fork gets its own
    request (and notice, and deadline) where it waits, and never inherits a decision
    or a tool call in flight."""

    parent: str
    """The thread it was forked from."""
    parent_seq: int
    """How many of the parent's events it copied."""
    held: bool | None = None
    """Set (True) on a fork whose copied events leave it ready to run a step (between
    steps): the fork is held, `failed` with `ForkHeld`, until a person retries it, so
    that nothing (a restart's recovery, a sweep) runs it on its own. None in logs
    written before, which replay as they did."""


@record(slots=True, kw_only=True)
class Cancelled(Event):
    """Someone ended the thread on purpose; its pending request is withdrawn."""

    by: str | None = None
    reason: str | None = None
    via: str | None = None


EVENT_KINDS: dict[str, type[Event]] = {
    "started": Started,
    "model_output": ModelOutput,
    "tool_started": ToolStarted,
    "tool_result": ToolResult,
    "step_failed": StepFailed,
    "attempt_failed": AttemptFailed,
    "output_rejected": OutputRejected,
    "notified": Notified,
    "approved": Approved,
    "rejected": Rejected,
    "answered": Answered,
    "retried": Retried,
    "signalled": Signalled,
    "timer_fired": TimerFired,
    "child_started": ChildStarted,
    "child_ended": ChildEnded,
    "child_failed": ChildFailed,
    "forked": Forked,
    "cancelled": Cancelled,
}
KIND_OF_EVENT: dict[type[Event], str] = {cls: kind for kind, cls in EVENT_KINDS.items()}


# ---- state ---------------------------------------------------------------------


@record(slots=True)
class State:
    """A thread at one moment: always `replay(events)`, never stored on its own."""

    step: str
    """The state the thread is at."""
    value: Any
    """The value that arrived at `step` (the thread's input at the start)."""
    status: Status
    input: Any
    steps: int = 0
    """Actions completed since the start or the last `max_steps` escalation."""
    errors: int = 0
    """Consecutive failures; any step that completes without failing resets it."""
    seq: int = 1
    """How many events made this state (the `Started` event is number 1)."""
    error: ErrorInfo | None = None
    """Why the thread failed, when `status == "failed"`."""
    tool_key: str | None = None
    """Idempotency key of a tool call that was started and has no result yet."""
    notified: bool = False
    """Whether a notice about the pending request reached at least one channel."""
    request: str | None = None
    """While waiting: the id of the pending request, `{step}-{seq}` (`seq` of the event
    that opened the wait). A decision must name it; a new wait gets a new id."""
    notices: int = 0
    """Failed attempts to deliver a notice about the pending request."""
    retry_key: str | None = None
    """The idempotency key the next call at this tool step reuses (`Retried.key`)."""
    rejections: int = 0
    """Outputs the checks before dispatch refused at this visit of an llm step."""
    tokens: int = 0
    """Model tokens (input + output) spent since the start or the last budget escalation
    (`max_tokens`): the sum of what the `llm` steps' events record."""
    cost_usd: float = 0.0
    """USD spent by model calls since the start or the last budget escalation
    (`max_cost`): the sum of the costs recorded on the `llm` steps' events."""


# ---- actions -------------------------------------------------------------------


@record(slots=True, kw_only=True)
class Action:
    step: str


@record(slots=True, kw_only=True)
class CallModel(Action):
    value: Any
    outputs: tuple[type[BaseModel], ...]
    prompt: str | None
    model: str | None = None
    retries: int = 0
    temperature: float | None = None
    validators: tuple[str, ...] = ()
    """`validate "module:function"` checks, run in order on the output before dispatch."""
    judge: str | None = None
    """`judge "prompt.j2"`: a prompt whose model call answers a `Verdict` on the output."""
    rejections: int = 0
    """Outputs already refused at this visit (`State.rejections`): they count against
    `retries`."""


@record(slots=True, kw_only=True)
class CallTool(Action):
    function: str
    """`module:function`, imported by the runtime, never by the compiler."""
    value: Any
    """The typed input, or None for a tool declared without one."""
    output: type[BaseModel]
    outputs: tuple[type[BaseModel], ...] = ()
    """For a tool whose result is a union (`-> Found | NotFound`): every member, `output`
    first; empty for a single result type."""
    retries: int = 0
    backoff_seconds: float = 0.0
    timeout_seconds: float | None = None
    started_key: str | None = None
    """Set when a call was started and never answered: a crash happened in between."""
    retry_key: str | None = None
    """Set when a person retried a call whose outcome is unknown (or asked to reuse its
    key): the new attempt records and passes this key instead of a new one."""


@record(slots=True, kw_only=True)
class AwaitApproval(Action):
    value: Any
    ask: str
    """A Jinja2 template over the value's fields."""
    approvers: tuple[str, ...] = ()
    timeout_seconds: float | None = None
    notified: bool = False
    request: str | None = None
    """The pending request's id (`State.request`)."""


@record(slots=True, kw_only=True)
class AwaitAnswer(Action):
    value: Any
    ask: str
    timeout_seconds: float | None = None
    notified: bool = False
    request: str | None = None
    """The pending request's id (`State.request`)."""


@record(slots=True, kw_only=True)
class AwaitSignal(Action):
    """Wait for an outside event of type `event`; with `timeout_seconds`, `expire` records
    a `TimerFired` once that long has passed since the pause."""

    value: Any
    event: type[BaseModel]
    timeout_seconds: float | None = None
    request: str | None = None
    """The pending request's id (`State.request`)."""


@record(slots=True, kw_only=True)
class Sleep(Action):
    """Wait `seconds` from the pause; `expire` records the `TimerFired` that wakes it."""

    value: Any
    seconds: float
    request: str | None = None
    """The pending request's id (`State.request`)."""
    until: Any = None
    """`sleep NAME(IN) until FIELD`: the field's value, the time the sleep ends (ISO 8601
    text, UTC when it names no zone); `seconds` is then 0. A value that is no such time
    ends the sleep at the first sweep (runtime/timeouts.py)."""


@record(slots=True, kw_only=True)
class CallAgent(Action):
    """Run another agent (`agent`, its .agent file relative to this agent's folder) as a
    child thread on `value`, and wait, holding no process, for its final value of type
    `output` (`ChildEnded`) or its failure (`ChildFailed`)."""

    value: Any
    agent: str
    output: type[BaseModel]
    started: bool = False
    """Whether the child was started (`ChildStarted`; kept in `State.notified`)."""
    request: str | None = None
    """The pending request's id (`State.request`)."""


@record(slots=True, kw_only=True)
class Finish(Action):
    result: Any


@record(slots=True, kw_only=True)
class Fail(Action):
    error: ErrorInfo


# Every step builds states, events and actions: the cheaper `__init__` (runtime/records.py).
for _record in (
    ErrorInfo,
    Usage,
    State,
    *EVENT_KINDS.values(),
    CallModel,
    CallTool,
    AwaitApproval,
    AwaitAnswer,
    AwaitSignal,
    Sleep,
    CallAgent,
    Finish,
    Fail,
):
    quick_init(_record)

# The same objects built by plain functions, for the few every step builds (the loop and
# `AgentSpec`): calling a class passes keyword arguments through a dict, a function not.
build_state = builder(State)
build_usage = builder(Usage)
build_model_output = builder(ModelOutput)
build_tool_started = builder(ToolStarted)
build_tool_result = builder(ToolResult)
build_call_model = builder(CallModel)
"""`CallModel(...)` by a plain function: what a generated module builds each model call's
action with (a class call passes its keywords through a new dict)."""
build_call_tool = builder(CallTool)
"""`CallTool(...)` by a plain function, as `build_call_model`."""


class IllegalEvent(Exception):
    """An event that cannot happen in the thread's current state. Nothing was changed.

    The message names the event and the REASON (by default, the thread's status and
    step); a refusal that says it in its own words (`runtime/api.py`'s `ThreadEnded`,
    `NotFailed`) gives the whole MESSAGE instead."""

    def __init__(self, state: State, event: Event, reason: str = "", *, message: str = "") -> None:
        kind = KIND_OF_EVENT.get(type(event), type(event).__name__)
        why = reason or f"a {state.status} thread at `{state.step}` cannot take it"
        super().__init__(message or f"illegal `{kind}` event for step `{event.step}`: {why}")
        self.state = state
        self.event = event
