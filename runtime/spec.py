"""`AgentSpec`: a compiled agent as data, and the bookkeeping every reducer shares.

A generated module routes events to states in code the user can read; what is the
same for every agent (counting steps and errors, escalating at the ceilings, failing,
recording notifications and tool starts) lives here, once.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel

from .types import (
    Cancelled,
    Decision,
    ErrorInfo,
    Event,
    Forked,
    IllegalEvent,
    ModelOutput,
    Notified,
    OutputRejected,
    Retried,
    Started,
    State,
    Status,
    StepFailed,
    ToolResult,
    ToolStarted,
)

StepKind = Literal["llm", "tool", "approval", "human", "wait", "sleep", "final"]
EdgeKind = Literal[
    "output", "next", "error", "approved", "rejected", "timeout", "max_errors", "max_steps"
]

_WAITING_KINDS = frozenset({"approval", "human", "wait", "sleep"})
_RESETS_ERRORS = frozenset({"tool", "human", "wait"})
BUDGET_EXHAUSTED = ErrorInfo("StepBudgetExhausted", "step budget exhausted")


class _Keep(enum.Enum):
    KEEP = "keep"


KEEP = _Keep.KEEP
"""`_copy(retry_key=KEEP)`: the state's own retry key (None is a value: no key)."""

_MOVING: frozenset[type[Event]] = frozenset((ModelOutput, ToolResult))
"""Events `bookkeeping` never handles: a step's output moves the thread (its reducer's
`match`), so they skip its tests. Exact types: a subclass goes through every test."""


ASK_NOT_SHOWN = "AskNotShown"
"""The error type of a pause whose `ask` could not be rendered (runtime/context.py)."""


@dataclass(frozen=True, slots=True)
class StateSpec:
    kind: StepKind
    line: int
    """Where the state is declared in the .agent file."""
    input: str | None = None
    """The declared input type, or None for a step that accepts whatever arrives."""
    output: str | None = None
    """A tool's result type (the first member of a union), a human step's `Answer`, the
    event type a wait step waits for."""
    outputs: tuple[str, ...] = ()
    """An llm step's output types; a tool's result types when they are a union."""
    requires_approval: Callable[[Any], bool] | None = None
    """For a tool marked `requires approval [if GUARD]`: whether its input needs one."""
    prompt: str | None = None
    function: str | None = None
    seconds: float | None = None
    """A sleep's duration; a wait's timeout (None: it waits until the event comes)."""
    checks: tuple[str, ...] = ()
    """An llm step's checks before dispatch, in the order they run: each `validate`
    function's `module:function`, then `judge` (runtime/checks.py). Only a step with
    checks can take an `OutputRejected`."""

    @property
    def results(self) -> tuple[str, ...]:
        """Every type a tool's result (or a person's answer) may be: one, or a union's members."""
        if self.outputs and self.kind == "tool":
            return self.outputs
        return (self.output,) if self.output is not None else ()


@dataclass(frozen=True, slots=True)
class EdgeSpec:
    source: str
    target: str
    kind: EdgeKind
    type: str | None = None
    guard: str | None = None
    """The guard as canonical .agent text, for people and pictures."""


@dataclass(frozen=True, slots=True)
class ContextSpec:
    format: Literal["xml", "yaml", "json"] = "xml"
    keep_last: int | None = None
    drop_resolved_errors: bool = False
    budget_tokens: int | None = None
    renders: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AgentSpec:
    name: str
    description: str | None
    source: str
    start: str
    input_type: type[Any]
    types: Mapping[str, type[BaseModel]]
    states: Mapping[str, StateSpec]
    edges: tuple[EdgeSpec, ...]
    max_steps: int | None = None
    on_max_steps: str | None = None
    max_errors: int | None = None
    on_max_errors: str | None = None
    context: ContextSpec = field(default_factory=ContextSpec)

    def __post_init__(self) -> None:
        # `max_errors N -> STATE` always names its target (grammar/agent.lark); a ceiling
        # without one would have no rule to follow, so a hand-written spec is refused here
        # rather than silently ignored at the ceiling.
        if self.max_errors is not None and self.on_max_errors is None:
            raise ValueError(f"agent {self.name}: max_errors needs a target (on_max_errors)")

    # ---- the shared parts of reduce ---------------------------------------------

    def begin(self, input: Any) -> State:
        """The state after `Started`: the input arrives at the start state."""
        status = self._status_at(self.start)
        return State(
            step=self.start,
            value=input,
            status=status,
            input=input,
            request=request_id(self.start, 1) if status == "waiting" else None,
        )

    def check(self, state: State, event: Event) -> None:
        """Reject what cannot happen now, whatever the step: see `IllegalEvent`.

        A decision must name the pending request (`State.request`): one made on an
        earlier request at the same step, or delivered twice, is refused (issue 8).
        A `Forked` may follow any prefix; after `Cancelled` nothing else may happen.
        """
        if event.step != state.step:
            raise IllegalEvent(state, event, f"the thread is at `{state.step}`")
        if isinstance(event, Forked):
            return
        if state.status == "finished":
            raise IllegalEvent(state, event, "the thread has finished")
        if state.status == "cancelled":
            raise IllegalEvent(state, event, "the thread was cancelled")
        if isinstance(event, Started):
            raise IllegalEvent(state, event, "the thread has already started")
        if state.status == "failed" and not isinstance(event, Retried | Cancelled):
            raise IllegalEvent(state, event, "the thread has failed; retry it first")
        if isinstance(event, ToolResult) and state.tool_key is None:
            # The runtime records a call's start before it runs it (runtime/loop.py).
            raise IllegalEvent(state, event, f"no call of `{state.step}` was started")
        if isinstance(event, Decision) and event.request != state.request:
            raise IllegalEvent(state, event, pending_reason(state, event.request))

    def bookkeeping(self, state: State, event: Event) -> State | None:
        """Events that record progress without moving the thread; None for the others."""
        if type(event) in _MOVING:  # most events: no test below can match them
            return None
        if isinstance(event, Retried):
            if state.status != "failed":
                raise IllegalEvent(state, event, "only a failed thread can be retried")
            if state.retry_key is not None and event.key != state.retry_key:
                # The failed call may have run: one logical call keeps one key.
                raise IllegalEvent(
                    state,
                    event,
                    f"the failed call's outcome is unknown; retry it with key {state.retry_key}",
                )
            resumed = self._copy(state, status=self._status_at(state.step), error=None)
            # The key its next call reuses; a retried llm step gets its `retries` back.
            resumed = replace(resumed, retry_key=event.key, rejections=0)
            if resumed.status == "waiting":
                resumed = self._reopen(resumed)  # a new wait: a new request, a new notice
            if state.error is not None and state.error.type == BUDGET_EXHAUSTED.type:
                # A person chose to go on after the budget ran out: give it back.
                return replace(resumed, steps=0)
            return resumed
        if isinstance(event, StepFailed) and event.error.type == ASK_NOT_SHOWN:
            # The pause could not show its question (runtime/context.render_ask): nobody
            # was told, and nobody may decide on it; the thread fails until it is fixed.
            if state.status != "waiting" or state.notified:
                raise IllegalEvent(state, event, "only an untold pause can fail to ask")
            return self._copy(state, status="failed", error=event.error)
        if isinstance(event, OutputRejected):
            if not self.states[state.step].checks or state.status != "running":
                raise IllegalEvent(state, event, f"`{state.step}` has no checks to refuse it")
            # Nothing moves: the model is asked again, one retry fewer (runtime/loop.py).
            return replace(self._copy(state), rejections=state.rejections + 1)
        if isinstance(event, Notified):
            if state.status != "waiting" or state.notified:
                raise IllegalEvent(state, event, "nobody is waiting to be told")
            if event.delivered:
                return self._copy(state, notified=True)
            # Nobody was told: the thread still waits; `expire` tries again (with backoff,
            # counting these attempts) until someone is told or the deadline passes.
            return self._copy(state, notices=state.notices + 1)
        if isinstance(event, Forked):
            forked = self._copy(state)
            # A fork's wait is its own: a decision or notice for the parent's request
            # never counts for it (issue 8, item 5).
            return self._reopen(forked) if forked.status == "waiting" else forked
        if isinstance(event, Cancelled):
            cancelled = self._copy(state, status="cancelled", error=state.error)
            return replace(cancelled, request=None, notified=False, notices=0)
        if isinstance(event, ToolStarted):
            if self.states[state.step].kind != "tool":
                raise IllegalEvent(state, event, f"`{state.step}` is not a tool")
            if state.tool_key is not None:
                # One call, one key: a call in flight is recovered under its own key.
                raise IllegalEvent(
                    state, event, f"a call is already in flight with key {state.tool_key!r}"
                )
            # The retry's key (if any) is now the started call's: `tool_key` carries it.
            return self._copy(state, tool_key=event.key, retry_key=None)
        return None

    def move(self, state: State, event: Event, target: str, value: Any) -> State:
        """A step completed without failing: go to `target` carrying `value`.

        A tool's result or a person's answer resets the consecutive-error count. A model's
        output or an approval does not: after a failing tool, the model deciding to try
        again (and someone letting it) is not the work succeeding, and counting on is what
        lets `max_errors` end such a loop.
        """
        errors = 0 if self.states[state.step].kind in _RESETS_ERRORS else state.errors
        return self._arrive(state, target, value, steps=state.steps + 1, errors=errors)

    def fail(self, state: State, event: StepFailed, on_error: str | None) -> State:
        """A step failed: escalate at the error ceiling, else follow `on error`, else fail.

        Failures pass the step's incoming value on unchanged; the error itself stays in
        the log, where the context window shows it. A thread that fails keeps the key of
        a tool call whose outcome is unknown (`StepFailed.key`) as `retry_key`: a
        `Retried` event must then carry that key (one logical call, one key).
        """
        errors = state.errors + 1
        steps = state.steps + 1
        if self.max_errors is not None and self.on_max_errors and errors >= self.max_errors:
            return self._arrive(state, self.on_max_errors, state.value, steps=steps, errors=0)
        if on_error is not None:
            return self._arrive(state, on_error, state.value, steps=steps, errors=errors)
        return State(
            step=state.step,
            value=state.value,
            status="failed",
            input=state.input,
            steps=steps,
            errors=errors,
            seq=state.seq + 1,
            error=event.error,
            # A call whose outcome is unknown: a retry must reuse its key.
            retry_key=event.key,
        )

    # ---- helpers ------------------------------------------------------------------

    def _arrive(self, state: State, target: str, value: Any, *, steps: int, errors: int) -> State:
        kind = self.states[target].kind
        if kind != "final" and self.max_steps is not None and steps >= self.max_steps:
            # The next action would exceed the budget: hand the thread over, or stop it.
            if self.on_max_steps is None:
                # Stop where the thread was going, with what it carried: the step that
                # just completed must not run again when someone retries the thread.
                return State(
                    step=target,
                    value=value,
                    status="failed",
                    input=state.input,
                    steps=steps,
                    errors=errors,
                    seq=state.seq + 1,
                    error=BUDGET_EXHAUSTED,
                )
            target, value, steps = self.on_max_steps, state.value, 0
        status = self._status_at(target)
        return State(
            step=target,
            value=value,
            status=status,
            input=state.input,
            steps=steps,
            errors=errors,
            seq=state.seq + 1,
            request=request_id(target, state.seq + 1) if status == "waiting" else None,
        )

    @staticmethod
    def _reopen(state: State) -> State:
        """`state` (already counted) waits anew: a new request, nobody told yet."""
        return replace(state, request=request_id(state.step, state.seq), notified=False, notices=0)

    def _status_at(self, step: str) -> Status:
        kind = self.states[step].kind
        if kind == "final":
            return "finished"
        return "waiting" if kind in _WAITING_KINDS else "running"

    @staticmethod
    def _copy(
        state: State,
        *,
        status: Status | None = None,
        error: ErrorInfo | None = None,
        notified: bool | None = None,
        tool_key: str | None = None,
        notices: int | None = None,
        retry_key: str | _Keep | None = KEEP,
    ) -> State:
        return State(
            step=state.step,
            value=state.value,
            status=status or state.status,
            input=state.input,
            steps=state.steps,
            errors=state.errors,
            seq=state.seq + 1,
            error=error if status is not None else state.error,
            tool_key=tool_key if tool_key is not None else state.tool_key,
            notified=notified if notified is not None else state.notified,
            request=state.request,
            notices=notices if notices is not None else state.notices,
            retry_key=state.retry_key if retry_key is KEEP else retry_key,
            rejections=state.rejections,
        )


def request_id(step: str, seq: int) -> str:
    """The id of the request opened at `step` by the event that made state number `seq`."""
    return f"{step}-{seq}"


def pending_reason(state: State, named: str | None) -> str:
    """Why a decision naming `named` does not fit `state` (for errors people read)."""
    asked = f"request `{named}`" if named is not None else "no request"
    if state.request is None:
        return f"it names {asked}, but no request is pending"
    return f"it names {asked}, but the pending request is `{state.request}`"
