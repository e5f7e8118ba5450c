"""`AgentSpec`: a compiled agent as data, and the bookkeeping every reducer shares.

A generated module routes events to states in code the user can read; what is the
same for every agent (counting steps and errors, escalating at the ceilings, failing,
recording notifications and tool starts) lives here, once.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import field, replace
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel

from .records import record
from .types import (
    AttemptFailed,
    Cancelled,
    ChildFailed,
    ChildStarted,
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
    build_state,
)

StepKind = Literal["llm", "tool", "approval", "human", "wait", "sleep", "agent", "final"]
EdgeKind = Literal[
    "output",
    "next",
    "error",
    "approved",
    "rejected",
    "timeout",
    "max_errors",
    "max_steps",
    "max_cost",
    "max_tokens",
]
ESCALATION_KINDS: frozenset[EdgeKind] = frozenset(
    {"max_errors", "max_steps", "max_cost", "max_tokens"}
)
"""The agent-wide ceilings' edges: they leave from many steps towards one target."""

_WAITING_KINDS = frozenset({"approval", "human", "wait", "sleep", "agent"})
_RESETS_ERRORS = frozenset({"tool", "human", "wait", "agent"})
BUDGET_EXHAUSTED = ErrorInfo("StepBudgetExhausted", "step budget exhausted")
COST_EXHAUSTED = ErrorInfo("CostBudgetExhausted", "cost budget (max_cost) spent")
TOKENS_EXHAUSTED = ErrorInfo("TokenBudgetExhausted", "token budget (max_tokens) spent")
_BUDGET_ERRORS = frozenset({COST_EXHAUSTED.type, TOKENS_EXHAUSTED.type})
FORK_HELD = ErrorInfo(
    "ForkHeld",
    "a fork does not run until someone resumes it: retry it (`twelvefold resume THREAD "
    "--retry`, or POST /v1/threads/THREAD/retry)",
)
"""Why a fork made between steps stands still (`Forked.held`): it is `failed` with this
error until a person retries it."""


class _Keep(enum.Enum):
    KEEP = "keep"


KEEP = _Keep.KEEP
"""`_copy(retry_key=KEEP)`: the state's own retry key (None is a value: no key)."""

_MOVING: frozenset[type[Event]] = frozenset((ModelOutput, ToolResult))
_ROUTINE: frozenset[type[Event]] = frozenset((ModelOutput, ToolStarted, ToolResult))
"""The events of a running thread's steps, which `check` decides at once (exact types)."""
"""Events `bookkeeping` never handles: a step's output moves the thread (its reducer's
`match`), so they skip its tests. Exact types: a subclass goes through every test."""


ASK_NOT_SHOWN = "AskNotShown"
"""The error type of a pause whose `ask` could not be rendered (runtime/context.py)."""


class Spent(NamedTuple):
    """A budget a thread has spent: which, where it goes then (None: it fails), and why."""

    kind: Literal["max_cost", "max_tokens"]
    target: str | None
    error: ErrorInfo


@record(slots=True)
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
    judge: str | None = None
    """An llm step's `judge` prompt template (`checks` ends with `judge` then): named here
    so a runtime can find it missing before a thread starts (runtime/loading.py)."""

    @property
    def results(self) -> tuple[str, ...]:
        """Every type a tool's result (or a person's answer) may be: one, or a union's members."""
        if self.outputs and self.kind == "tool":
            return self.outputs
        return (self.output,) if self.output is not None else ()


@record(slots=True)
class EdgeSpec:
    source: str
    target: str
    kind: EdgeKind
    type: str | None = None
    guard: str | None = None
    """The guard as canonical .agent text, for people and pictures."""


@record(slots=True)
class ContextSpec:
    format: Literal["xml", "yaml", "json"] = "xml"
    keep_last: int | None = None
    drop_resolved_errors: bool = False
    budget_tokens: int | None = None
    renders: Mapping[str, str] = field(default_factory=dict)


@record(slots=True)
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
    max_cost: float | None = None
    """USD the thread's model calls may spend (`max_cost`), as recorded on their events."""
    on_max_cost: str | None = None
    max_tokens: int | None = None
    """Tokens (input + output) the thread's model calls may spend (`max_tokens`)."""
    on_max_tokens: str | None = None

    _statuses: Mapping[str, Status] = field(init=False, repr=False, compare=False)
    """Each state's status on arrival (`_status_at`), computed once: every move needs it."""
    _budgeted: bool = field(init=False, repr=False, compare=False)
    """Whether the agent has a cost or token budget (else a move counts nothing)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_statuses", {step: self._status_at(step) for step in self.states})
        budgeted = self.max_cost is not None or self.max_tokens is not None
        object.__setattr__(self, "_budgeted", budgeted)
        # `max_errors N -> STATE` always names its target (grammar/agent.lark); a ceiling
        # without one would have no rule to follow, so a hand-written spec is refused here
        # rather than silently ignored at the ceiling.
        if self.max_errors is not None and self.on_max_errors is None:
            raise ValueError(f"agent {self.name}: max_errors needs a target (on_max_errors)")

    # ---- the shared parts of reduce ---------------------------------------------

    def begin(self, input: Any) -> State:
        """The state after `Started`: the input arrives at the start state."""
        status = self._status_at(self.start)
        return build_state(
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
        routine = state.status == "running" and type(event) in _ROUTINE
        if routine and (type(event) is not ToolResult or state.tool_key is not None):
            # The common case, decided at once: in a running thread only a result whose
            # call was never started can be refused (below).
            return
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
        if isinstance(event, Decision | ChildFailed) and event.request != state.request:
            raise IllegalEvent(state, event, pending_reason(state, event.request))

    def checked(self, state: State, event: Event) -> State | None:
        """`check`, then `bookkeeping`: what a generated `reduce` does first, in one call.

        A running thread's model output and a started call's result at its own step are
        the common case (two of a routine pair of steps' three events): allowed, and
        recorded by the step's own reducer, not here, so None at once; a tool call's
        start there (the third) is allowed by `check` and goes to `bookkeeping` at once."""
        if event.step == state.step and state.status == "running":
            kind = type(event)
            if kind is ModelOutput or (kind is ToolResult and state.tool_key is not None):
                return None
            if kind is ToolStarted:  # `check` allows it: `bookkeeping` decides the rest
                return self.bookkeeping(state, event)
        self.check(state, event)
        return self.bookkeeping(state, event)

    def bookkeeping(self, state: State, event: Event) -> State | None:
        """Events that record progress without moving the thread; None for the others."""
        if type(event) in _MOVING:  # most events: no test below can match them
            return None
        if isinstance(event, ToolStarted):  # every tool call's first event: tested first
            if self.states[state.step].kind != "tool":
                raise IllegalEvent(state, event, f"`{state.step}` is not a tool")
            if state.tool_key is not None:
                # One call, one key: a call in flight is recovered under its own key.
                raise IllegalEvent(
                    state, event, f"a call is already in flight with key {state.tool_key!r}"
                )
            # The retry's key (if any) is now the started call's: `tool_key` carries it.
            return self._copy(state, tool_key=event.key, retry_key=None)
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
            if event.approval is not None:
                return self.ask_again(state, event)
            resumed = self._copy(state, status=self._status_at(state.step), error=None)
            # The key its next call reuses; a retried llm step gets its `retries` back.
            resumed = replace(resumed, retry_key=event.key, rejections=0)
            if resumed.status == "waiting":
                resumed = self._reopen(resumed)  # a new wait: a new request, a new notice
            if state.error is not None and state.error.type == BUDGET_EXHAUSTED.type:
                # A person chose to go on after the budget ran out: give it back.
                return replace(resumed, steps=0)
            if state.error is not None and state.error.type in _BUDGET_ERRORS:
                return replace(resumed, tokens=0, cost_usd=0.0)
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
            spent = self.spend(state, event)
            if self.over_budget(spent) is not None:
                # The refused output and its judge spent the budget: ask the model no more.
                return self._arrive(spent, state.step, state.value, steps=state.steps,
                                    errors=state.errors)  # fmt: skip
            # Nothing moves: the model is asked again, one retry fewer (runtime/loop.py).
            return replace(self._copy(spent), rejections=state.rejections + 1)
        if isinstance(event, Notified):
            if state.status != "waiting" or state.notified:
                raise IllegalEvent(state, event, "nobody is waiting to be told")
            if event.delivered:
                return self._copy(state, notified=True)
            # Nobody was told: the thread still waits; `expire` tries again (with backoff,
            # counting these attempts) until someone is told or the deadline passes.
            return self._copy(state, notices=state.notices + 1)
        if isinstance(event, Forked):
            if event.held and state.status == "running" and state.tool_key is None:
                # A fork runs only when a person says so: held, as a failure a retry
                # ends, nothing (a restart's recovery, a sweep) runs it on its own.
                return self._copy(state, status="failed", error=FORK_HELD)
            forked = self._copy(state)
            # A fork's wait is its own: a decision or notice for the parent's request
            # never counts for it (issue 8, item 5).
            return self._reopen(forked) if forked.status == "waiting" else forked
        if isinstance(event, Cancelled):
            cancelled = self._copy(state, status="cancelled", error=state.error)
            return replace(cancelled, request=None, notified=False, notices=0)
        if isinstance(event, ChildStarted):
            if self.states[state.step].kind != "agent" or state.status != "waiting":
                raise IllegalEvent(state, event, f"`{state.step}` does not call an agent")
            if state.notified:
                raise IllegalEvent(state, event, "its child was already started")
            if not event.child.endswith(f"~{state.request}"):
                raise IllegalEvent(state, event, "the child's id is not this visit's")
            linked = self._copy(state, notified=True)  # `notified`: the child exists
            return linked
        if isinstance(event, AttemptFailed):
            if state.status != "running" or state.tool_key != event.key:
                raise IllegalEvent(state, event, f"no call with key {event.key!r} is in flight")
            # The attempt ended: no call is in flight; the next attempt starts anew (its
            # own `ToolStarted`) with the same key, once the backoff is over (runtime/loop.py).
            return replace(self._copy(state, retry_key=event.key), tool_key=None)
        return None

    def approval_into(self, step: str) -> tuple[str, ...]:
        """The approval steps whose `on approved` leads straight into `step`."""
        return tuple(
            edge.source for edge in self.edges if edge.kind == "approved" and edge.target == step
        )

    def ask_again(self, state: State, event: Retried) -> State:
        """A retry of a failed step an approval led into, as a new call: the thread goes
        back to that approval with the value it showed (an approval passes its value on
        unchanged) and waits for a new decision, a new request. The old approval let
        exactly one call run; a call with a new key is another one, and so is a call of a
        tool without a key run again after an unknown outcome (docs/runtime.md, "An
        approval lets one call run")."""
        assert event.approval is not None
        if event.approval not in self.approval_into(state.step):
            raise IllegalEvent(
                state, event, f"no `on approved` of `{event.approval}` leads to `{state.step}`"
            )
        if event.key is not None and event.key != state.retry_key:
            # A call whose outcome is unknown keeps its key; the runtime sends it back to
            # the approval when its tool takes no key (the key cannot make it one call).
            raise IllegalEvent(
                state,
                event,
                "only a new call (no key), or a call whose outcome is unknown (its key), "
                "goes back to the approval",
            )
        spent = None if state.error is None else state.error.type
        return build_state(
            step=event.approval,
            value=state.value,
            status="waiting",
            input=state.input,
            # A person chose to go on after a budget ran out: give it back (as a retry does).
            steps=0 if spent == BUDGET_EXHAUSTED.type else state.steps,
            errors=state.errors,
            seq=state.seq + 1,
            request=request_id(event.approval, state.seq + 1),
            tokens=0 if spent in _BUDGET_ERRORS else state.tokens,
            cost_usd=0.0 if spent in _BUDGET_ERRORS else state.cost_usd,
        )

    def move(self, state: State, event: Event, target: str, value: Any) -> State:
        """A step completed without failing: go to `target` carrying `value`.

        A tool's result or a person's answer resets the consecutive-error count. A model's
        output or an approval does not: after a failing tool, the model deciding to try
        again (and someone letting it) is not the work succeeding, and counting on is what
        lets `max_errors` end such a loop.
        """
        errors = 0 if self.states[state.step].kind in _RESETS_ERRORS else state.errors
        steps = state.steps + 1  # this move counts
        if self._budgeted or (self.max_steps is not None and steps >= self.max_steps):
            spent = self.spend(state, event) if self._budgeted else state
            return self._arrive(spent, target, value, steps=steps, errors=errors)
        # No budget and no ceiling reached: `_arrive`'s last case, written out (every move),
        # every field by position in `State`'s order, as `_copy` passes them.
        status = self._statuses[target]
        return build_state(
            target,  # step
            value,  # value
            status,  # status
            state.input,  # input
            steps,  # steps
            errors,  # errors
            state.seq + 1,  # seq
            None,  # error
            None,  # tool_key
            False,  # notified
            request_id(target, state.seq + 1) if status == "waiting" else None,  # request
            0,  # notices
            None,  # retry_key
            0,  # rejections
            state.tokens,  # tokens
            state.cost_usd,  # cost_usd
        )

    def fail(self, state: State, event: StepFailed, on_error: str | None) -> State:
        """A step failed: escalate at the error ceiling, else follow `on error`, else fail.

        Failures pass the step's incoming value on unchanged; the error itself stays in
        the log, where the context window shows it. A thread that fails keeps the key of
        a tool call whose outcome is unknown (`StepFailed.key`) as `retry_key`: a
        `Retried` event must then carry that key (one logical call, one key).
        """
        errors = state.errors + 1
        steps = state.steps + 1
        state = self.spend(state, event)
        if self.max_errors is not None and self.on_max_errors and errors >= self.max_errors:
            return self._arrive(state, self.on_max_errors, state.value, steps=steps, errors=0)
        if on_error is not None:
            return self._arrive(state, on_error, state.value, steps=steps, errors=errors)
        if self.over_budget(state) is not None:
            # A retry of this failure would call the model over budget: the budget decides.
            return self._arrive(state, state.step, state.value, steps=steps, errors=errors)
        return build_state(
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
            tokens=state.tokens,
            cost_usd=state.cost_usd,
        )

    def spend(self, state: State, event: Event) -> State:
        """`state` with the tokens and USD of a model step's event added (at an `llm`
        step: its output, its refusal, its failure; a judge's call is on the same event).

        Counted only for an agent with a budget. Only what the event records counts: the
        cost was priced when the call was made (runtime/loop.py), so a replay never
        depends on today's price table. Counts that are not whole numbers >= 0 (a log
        edited by hand) count as nothing."""
        usage = event.usage
        if self.max_cost is None and self.max_tokens is None:
            return state  # nothing to count against (and snapshots stay as they were)
        if usage is None or self.states[state.step].kind != "llm":
            return state
        tokens = _tokens(usage.input_tokens) + _tokens(usage.output_tokens)
        cost = _dollars(usage.cost_usd)
        unknown = event.error.type if isinstance(event, StepFailed) else None
        if self.max_cost is not None and unknown in (COST_ERROR, TOKENS_ERROR):
            # A paid call whose cost was not a number (runtime/loop.py): a budget cannot
            # bound what it cannot count, so the call spends what was left of it.
            cost = max(cost, self.max_cost - state.cost_usd)
        if self.max_tokens is not None and unknown == TOKENS_ERROR:
            tokens = max(tokens, self.max_tokens - state.tokens)  # the same for its tokens
        if not tokens and not cost:
            return state
        return replace(
            state, tokens=state.tokens + tokens, cost_usd=round(state.cost_usd + cost, 9)
        )

    def fails_over_budget(self, state: State, failed: StepFailed) -> bool:
        """Whether the model step `state` is at, failing with `failed` (its usage: what
        the step's call has spent so far), would have spent a budget: the rule by which
        a call that asks the model more than once (the re-asks of an invalid output,
        runtime/model.py) stops asking, so that it stops where the reducer will count
        the budget spent, at the request that crossed it."""
        return self.over_budget(self.spend(state, failed)) is not None

    def over_budget(self, state: State) -> Spent | None:
        """The budget `state` has spent (reached or passed), `max_cost` first, or None."""
        if self.max_cost is not None and state.cost_usd >= self.max_cost:
            return Spent("max_cost", self.on_max_cost, COST_EXHAUSTED)
        if self.max_tokens is not None and state.tokens >= self.max_tokens:
            return Spent("max_tokens", self.on_max_tokens, TOKENS_EXHAUSTED)
        return None

    def moved_by_budget(self, before: State, event: Event, after: State) -> Spent | None:
        """The budget that moved the thread when `reduce(before, event)` gave `after`: to
        the budget's target, or (with no target) to `failed`; else None. For `show`, which
        says so (the log has no event of its own for it: the move is the reducer's)."""
        if self.max_cost is None and self.max_tokens is None:
            return None
        spent = self.over_budget(self.spend(before, event))
        if spent is None:
            return None
        if spent.target is None:
            failed = after.status == "failed" and before.status != "failed"
            return spent if failed and after.error == spent.error else None
        # The target starts afresh (`_arrive`): a move by the budget, not by an edge.
        afresh = after.tokens == 0 and after.cost_usd == 0
        return spent if after.step == spent.target and afresh else None

    # ---- helpers ------------------------------------------------------------------

    def _arrive(self, state: State, target: str, value: Any, *, steps: int, errors: int) -> State:
        kind = self.states[target].kind
        tokens, cost = state.tokens, state.cost_usd
        spent = self.over_budget(state) if kind != "final" and self._budgeted else None
        if spent is not None:
            # A budget is spent: no model call starts; hand the thread over, or stop it
            # where it was going (as for `max_steps` below). The target starts afresh.
            if spent.target is None:
                return replace(
                    state,
                    value=value,
                    step=target,
                    status="failed",
                    steps=steps,
                    errors=errors,
                    seq=state.seq + 1,
                    error=spent.error,
                    tool_key=None,
                    notified=False,
                    request=None,
                    notices=0,
                    retry_key=None,
                    rejections=0,
                )
            target, value, tokens, cost = spent.target, state.value, 0, 0.0
            kind = self.states[target].kind
        elif kind != "final" and self.max_steps is not None and steps >= self.max_steps:
            # The next action would exceed the budget: hand the thread over, or stop it.
            if self.on_max_steps is None:
                # Stop where the thread was going, with what it carried: the step that
                # just completed must not run again when someone retries the thread.
                return build_state(
                    step=target,
                    value=value,
                    status="failed",
                    input=state.input,
                    steps=steps,
                    errors=errors,
                    seq=state.seq + 1,
                    error=BUDGET_EXHAUSTED,
                    tokens=tokens,
                    cost_usd=cost,
                )
            target, value, steps = self.on_max_steps, state.value, 0
        status = self._statuses[target]
        return build_state(
            step=target,
            value=value,
            status=status,
            input=state.input,
            steps=steps,
            errors=errors,
            seq=state.seq + 1,
            request=request_id(target, state.seq + 1) if status == "waiting" else None,
            tokens=tokens,
            cost_usd=cost,
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
        # Every field, by position in `State`'s order: every tool call's start is a copy,
        # and sixteen keywords cost three times as much to pass (docs/benchmarks.md).
        return build_state(
            state.step,  # step
            state.value,  # value
            status or state.status,  # status
            state.input,  # input
            state.steps,  # steps
            state.errors,  # errors
            state.seq + 1,  # seq
            error if status is not None else state.error,  # error
            tool_key if tool_key is not None else state.tool_key,  # tool_key
            notified if notified is not None else state.notified,  # notified
            state.request,  # request
            notices if notices is not None else state.notices,  # notices
            state.retry_key if retry_key is KEEP else retry_key,  # retry_key
            state.rejections,  # rejections
            state.tokens,  # tokens
            state.cost_usd,  # cost_usd
        )


def _tokens(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


COST_ERROR = "CostError"
"""The error of a step whose call's cost was not a finite number of dollars."""
TOKENS_ERROR = "TokenCountError"
"""The error of a step whose call reported a token count out of bounds (runtime/usage.py,
`MAX_CALL_TOKENS`): its tokens and cost were not recorded."""


def _dollars(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if math.isfinite(value) and value > 0 else 0.0


CHILD_MARK = "~"
"""What joins a parent's id and a request's in a child thread's id (a request id has none)."""


def child_id(parent: str, request: str) -> str:
    """The id of the child thread an `agent` step starts for `request` of thread `parent`:
    one id per visit, so starting it again after a crash finds the same thread."""
    return f"{parent}{CHILD_MARK}{request}"


def request_id(step: str, seq: int) -> str:
    """The id of the request opened at `step` by the event that made state number `seq`."""
    return f"{step}-{seq}"


def pending_reason(state: State, named: str | None) -> str:
    """Why a decision naming `named` does not fit `state` (for errors people read)."""
    asked = f"request `{named}`" if named is not None else "no request"
    if state.request is None:
        return f"it names {asked}, but no request is pending"
    return f"it names {asked}, but the pending request is `{state.request}`"
