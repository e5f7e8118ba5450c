"""The properties every generated reducer must have, as plain checks over one event log.

Each check takes the module under test and a `Case` (a legal log, maybe with an illegal
event for one of its prefixes) and raises `PropertyFailed` naming the event where the
property broke. What the reducer must do is taken from `AGENT` and docs/language.md and
counted here independently (actions, consecutive failures, the event that let a
sensitive tool run), never read back from the state the reducer produced.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel

from twelvefold.runtime.codec import Codec
from twelvefold.runtime.spec import (
    ASK_NOT_SHOWN,
    BUDGET_EXHAUSTED,
    COST_EXHAUSTED,
    TOKENS_EXHAUSTED,
)
from twelvefold.runtime.types import (
    KIND_OF_EVENT,
    Action,
    Answer,
    Answered,
    Approved,
    AwaitAnswer,
    AwaitApproval,
    AwaitSignal,
    CallAgent,
    CallModel,
    CallTool,
    Cancelled,
    ChildEnded,
    ChildStarted,
    ErrorInfo,
    Event,
    Fail,
    Finish,
    Forked,
    IllegalEvent,
    ModelOutput,
    Notified,
    OutputRejected,
    Rejected,
    Retried,
    Signalled,
    Sleep,
    Started,
    State,
    StepFailed,
    TimerFired,
    ToolResult,
    ToolStarted,
)

from .coverage import ACTION_EVENTS, match_edges, route
from .invariants import Invariant
from .oracle import agrees_with_source
from .strategies import Case, is_ask_not_shown
from .subject import Subject


class PropertyFailed(AssertionError):
    """A property does not hold for this log; `at` is the index of the event that broke it."""

    def __init__(
        self,
        message: str,
        events: Sequence[Event] = (),
        at: int | None = None,
        extra: Event | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.events = tuple(events)
        self.at = at
        self.extra = extra

    def located(self, events: Sequence[Event], extra: Event | None = None) -> PropertyFailed:
        return PropertyFailed(self.message, events, self.at, extra or self.extra)

    def __str__(self) -> str:
        lines = [self.message]
        if self.events:
            lines += ["", "events:"]
            for index, event in enumerate(self.events):
                marker = "  <-- here" if index == self.at else ""
                lines.append(f"  {index:>3}  {format_event(event)}{marker}")
        if self.extra is not None:
            where = f" after event {self.at}" if self.at is not None else ""
            lines.append(f"  then{where}: {format_event(self.extra)}")
        return "\n".join(lines)


def format_event(event: Event) -> str:
    """`model_output @decide DeployBackend(tag='', env='production')`: kind, step, payload."""
    kind = KIND_OF_EVENT.get(type(event), type(event).__name__)
    parts = [f"{kind:<13} @{event.step}"]
    match event:
        case Started(input=value):
            parts.append(_show(value))
        case ModelOutput(output=value) | ToolResult(result=value):
            parts.append(_show(value))
        case StepFailed(error=error):
            parts.append(str(error))
        case OutputRejected(output=value, by=by, reason=reason):
            parts.append(f"{_show(value)} by={by!r} reason={reason!r}")
        case ToolStarted(key=key):
            parts.append(f"key={key!r}")
        case Notified(channels=channels, failed=failed):
            parts.append(
                f"channels={list(channels)}" + (f" failed={list(failed)}" if failed else "")
            )
        case Approved(by=by, comment=comment) | Rejected(by=by, comment=comment):
            parts.append(f"by={by!r} comment={comment!r}")
        case Answered(answer=answer):
            parts.append(_show(answer))
        case Retried(by=by):
            parts.append(f"by={by!r}")
        case Forked(parent=parent, parent_seq=parent_seq):
            parts.append(f"parent={parent!r} parent_seq={parent_seq}")
        case Cancelled(by=by, reason=reason):
            parts.append(f"by={by!r} reason={reason!r}")
    return " ".join(parts)


def _show(value: Any) -> str:
    return repr(value) if not isinstance(value, BaseModel) else f"{value!r}"


# ---- shared helpers ----------------------------------------------------------------


def fold(subject: Subject, events: Sequence[Event]) -> list[State]:
    """`states[i]` is the state after `events[: i + 1]`. A legal event the reducer refuses
    is a failure of its own."""
    first = events[0]
    assert isinstance(first, Started)
    states = [subject.initial_state(first.input)]
    for index, event in enumerate(events[1:], start=1):
        try:
            states.append(subject.reduce(states[-1], event))
        except IllegalEvent as refused:
            raise PropertyFailed(
                f"reduce refused a legal event: {refused}", events, index
            ) from refused
    return states


def is_action(event: Event) -> bool:
    """Whether `event` completes an action (counted against `max_steps`, and a failure
    against `max_errors`): an `ask` that could not be shown is bookkeeping (docs/language.md:
    the pause fails in place until someone retries it)."""
    return isinstance(event, ACTION_EVENTS) and not is_ask_not_shown(event)


def _json(codec: Codec, state: State) -> str:
    return json.dumps(codec.encode_state(state), sort_keys=True)


def _entered_by(events: Sequence[Event], states: Sequence[State], index: int) -> int:
    """The index of the event that brought the thread to the step it is at after
    `events[index]`: bookkeeping events, and failures that left the thread failed where it
    was, are passed over (a retried step was entered by what entered it the first time)."""
    j = index
    while j >= 1:
        event, before, after = events[j], states[j - 1], states[j]
        failed_in_place = after.status == "failed" and after.step == before.step
        if is_action(event) and not failed_in_place:
            return j
        j -= 1
    return 0


# ---- the properties ----------------------------------------------------------------

Check = Callable[[Subject, Case], None]


@dataclass(frozen=True)
class Property:
    name: str
    doc: str
    check: Check
    judges_illegal_events: bool = False
    """Whether it looks at `Case.illegal` (the runner aims extra illegal events at it)."""


def pure_and_deterministic(subject: Subject, case: Case) -> None:
    """`reduce` changes neither the state nor the event it is given, and gives equal
    results for equal inputs."""
    events = case.events
    started = events[0]
    assert isinstance(started, Started)
    state = subject.initial_state(copy.deepcopy(started.input))
    for index, event in enumerate(events[1:], start=1):
        state_copy, state_json = copy.deepcopy(state), _json(subject.codec, state)
        event_copy = copy.deepcopy(event)
        try:
            first = subject.reduce(state, event)
        except IllegalEvent as refused:
            raise PropertyFailed(
                f"reduce refused a legal event: {refused}", events, index
            ) from None
        if state != state_copy or _json(subject.codec, state) != state_json:
            raise PropertyFailed(
                f"reduce changed the state it was given\n  before: {state_copy}\n  after:  {state}",
                events,
                index,
            )
        if event != event_copy:
            raise PropertyFailed("reduce changed the event it was given", events, index)
        second = subject.reduce(copy.deepcopy(state_copy), event_copy)
        if first != second:
            raise PropertyFailed(
                f"reduce gave two results for one input\n  first:  {first}\n  second: {second}",
                events,
                index,
            )
        state = first


def replay_equals_fold(subject: Subject, case: Case) -> None:
    """`replay(events[:i])` is the step-by-step fold, and `seq` counts the events."""
    events = case.events
    states = fold(subject, events)
    for index, state in enumerate(states):
        replayed = subject.replay(events[: index + 1])
        if replayed != state:
            raise PropertyFailed(
                f"replay differs from reduce folded over the same log\n"
                f"  replay: {replayed}\n  fold:   {state}",
                events,
                index,
            )
        if state.seq != index + 1:
            raise PropertyFailed(
                f"state.seq is {state.seq} after {index + 1} events", events, index
            )
    # The generated `replay` documents that a log must start with its `Started` event.
    try:
        headless = subject.replay(events[1:])
    except ValueError:
        return
    raise PropertyFailed(
        f"replay took a log without its started event and gave {headless}", events, 0
    )


def json_round_trip(subject: Subject, case: Case) -> None:
    """Every event and every state survive JSON (decoded by a fresh codec, as another
    process would) unchanged."""
    events = case.events
    states = fold(subject, events)
    writer, reader = subject.codec, Codec(subject.spec)
    for index, (event, state) in enumerate(zip(events, states, strict=True)):
        decoded = reader.loads_event(writer.dumps_event(event))
        if decoded != event:
            raise PropertyFailed(
                f"the event changed through JSON\n  was:  {event}\n  read: {decoded}",
                events,
                index,
            )
        text = json.dumps(writer.encode_state(state))
        restored = reader.decode_state(json.loads(text))
        if restored != state:
            raise PropertyFailed(
                f"the state changed through JSON\n  was:  {state}\n  read: {restored}",
                events,
                index,
            )


def illegal_events_raise(subject: Subject, case: Case) -> None:
    """An event that cannot happen raises `IllegalEvent` and leaves the state as it was."""
    if case.illegal is None:
        return
    events = case.events[: case.illegal_at + 1]
    state = fold(subject, events)[-1]
    before, before_json = copy.deepcopy(state), _json(subject.codec, state)
    try:
        after = subject.reduce(state, case.illegal)
    except IllegalEvent:
        pass
    except Exception as crashed:
        raise PropertyFailed(
            f"an illegal event raised {type(crashed).__name__}: {crashed}, not IllegalEvent",
            events,
            len(events) - 1,
            case.illegal,
        ) from crashed
    else:
        raise PropertyFailed(
            f"an illegal event was accepted (the thread moved to {after.step}, {after.status})",
            events,
            len(events) - 1,
            case.illegal,
        )
    if state != before or _json(subject.codec, state) != before_json:
        raise PropertyFailed(
            f"refusing an illegal event changed the state\n  before: {before}\n  after:  {state}",
            events,
            len(events) - 1,
            case.illegal,
        )


def approval_before_sensitive_tools(subject: Subject, case: Case) -> None:
    """A tool whose `requires approval` guard holds for its input is the next action only
    when the thread got there by an approval's `on approved` for that very value."""
    events = case.events
    states = fold(subject, events)
    for index, state in enumerate(states):
        action = subject.next_action(state)
        if not isinstance(action, CallTool):
            continue
        spec_state = subject.spec.states.get(action.step)
        needs = spec_state.requires_approval if spec_state is not None else None
        if needs is None or not needs(action.value):
            continue
        entry = _entered_by(events, states, index)
        before = states[entry - 1] if entry >= 1 else None
        if (
            entry >= 1
            and isinstance(events[entry], Approved)
            and before is not None
            and subject.kind_of(before.step) == "approval"
            and states[entry].step == action.step
            and before.value == action.value
        ):
            continue
        how = format_event(events[entry]) if entry >= 1 else "the start"
        raise PropertyFailed(
            f"`{action.step}` requires approval for {action.value!r} and is the next action, "
            f"but the thread got there by {how}, not by an approval of that value",
            events,
            index,
        )


def max_steps_ceiling(subject: Subject, case: Case) -> None:
    """Actions are counted; the one that reaches `max_steps` sends the thread to the
    `max_steps` target with the step's incoming value (the count starts again) or fails it
    where it was going, with what it carried; an action that reaches a final step finishes
    the thread whatever the count."""
    spec = subject.spec
    events = case.events
    states = fold(subject, events)
    budget, target = spec.max_steps, spec.on_max_steps
    count = 0
    for index in range(1, len(events)):
        event, before, after = events[index], states[index - 1], states[index]
        if isinstance(event, Retried) and before.error == BUDGET_EXHAUSTED:
            count = 0  # a person chose to go on after the budget ran out
        if not is_action(event):
            if after.steps != count:  # bookkeeping counts nothing (a retry may reset)
                raise PropertyFailed(
                    f"state.steps is {after.steps} after a `{format_event(event).split()[0]}` "
                    f"event; the log counts {count} actions",
                    events,
                    index,
                )
            continue
        count += 1
        if _spent_a_budget(subject, before, event, after):
            pass  # the money or token budget decided this move: budgets_stop_the_model
        elif budget is not None and count >= budget:
            going = destination(subject, before, event)
            problem = _past_budget_problem(subject, before, after, going, count)
            if problem is not None:
                raise PropertyFailed(problem, events, index)
            failed_here = after.status == "failed" and after.step == before.step
            if target is not None and not failed_here and after.status != "finished":
                count = 0
        if after.steps != count:
            raise PropertyFailed(
                f"state.steps is {after.steps}, but {count} actions completed since the "
                "start or the last max_steps escalation",
                events,
                index,
            )


def _past_budget_problem(
    subject: Subject, before: State, after: State, going: tuple[str, Any] | None, count: int
) -> str | None:
    """How a move made by the action that reached the budget breaks the rule, or None.
    `going` is where the graph sends that action, and what it carries (None: it fails in
    place, or the rule that routes it is not at hand)."""
    budget, target = subject.spec.max_steps, subject.spec.on_max_steps
    ceiling = f"max_steps {budget}" + (", no target" if target is None else "")
    where = f"after {count} actions ({ceiling}) the thread is {after.status} at "
    if going is not None and subject.is_final(going[0]):
        if after.step != going[0] or after.status != "finished":
            return (
                f"{where}`{after.step}`; the action went to the final step `{going[0]}`, "
                "which finishes the thread whatever the count"
            )
        return None
    if after.status == "finished":
        return None  # where it went is not known here: moves_follow_edges judges that
    if going is None and after.status == "failed" and after.step == before.step:
        return None  # failed in place: no move, so no budget to apply
    if target is not None:
        if after.step != target or after.steps != 0 or after.value != before.value:
            return (
                f"{where}`{after.step}` with steps={after.steps}; it should be at "
                f"`{target}` with the step count reset and the incoming value"
            )
        return None
    if after.status != "failed" or after.error != BUDGET_EXHAUSTED:
        return f"{where}`{after.step}` with the error {after.error}; it should have failed"
    if going is not None and (after.step != going[0] or after.value != going[1]):
        return (
            f"{where}`{after.step}` holding {after.value!r}; it should stop where it was "
            f"going, `{going[0]}`, with what it carried, {going[1]!r}"
        )
    return None


def destination(subject: Subject, before: State, event: Event) -> tuple[str, Any] | None:
    """Where `AGENT`'s graph sends the action `event` completes at `before`, budget aside,
    and the value it carries there; None when the step fails in place (a failure with no
    `on error` below the error ceiling) or the rule is not at hand (two guarded rules for
    one output type, and no checked program to evaluate them)."""
    spec, step = subject.spec, before.step
    if isinstance(event, StepFailed):
        ceiling = spec.max_errors is not None and before.errors + 1 >= spec.max_errors
        if ceiling and spec.on_max_errors is not None:
            return spec.on_max_errors, before.value
        kind: str = "error"
    elif isinstance(event, ModelOutput):
        routed = route(subject, step, event.output)
        if routed is not None:
            return spec.edges[routed].target, event.output
        kind = "output"
    else:
        kind = {ToolResult: "next", Answered: "next", Approved: "approved"}.get(
            type(event), "rejected"
        )
    targets = {
        e.target
        for _, e in subject.edges_from(step)
        if e.kind == kind
        and (not isinstance(event, ModelOutput) or e.type == _type_of(subject, event.output))
    }
    if len(targets) != 1:
        return None
    return targets.pop(), _carried(kind, before, event)


def _type_of(subject: Subject, value: Any) -> str:
    names = {cls: name for name, cls in subject.spec.types.items()}
    return names.get(type(value), type(value).__name__)


def max_errors_ceiling(subject: Subject, case: Case) -> None:
    """Consecutive failures are counted (a tool's result or a person's answer resets the
    count; a model output or an approval does not); the one that reaches `max_errors`
    escalates."""
    spec = subject.spec
    events = case.events
    states = fold(subject, events)
    ceiling, target = spec.max_errors, spec.on_max_errors
    count = 0
    for index in range(1, len(events)):
        event, before, after = events[index], states[index - 1], states[index]
        if isinstance(event, StepFailed) and is_action(event):
            count += 1
        elif isinstance(event, ToolResult | Answered):
            count = 0
        escalates = ceiling is not None and target is not None and count >= ceiling
        if isinstance(event, StepFailed) and is_action(event) and escalates:
            escalated_to = {target, spec.on_max_steps} - {None}
            # With the step budget spent too and no max_steps target, the budget wins
            # (a person's answer is an action too): max_steps_ceiling checks that. So does
            # a money or token budget: budgets_stop_the_model checks that.
            out_of_budget = spec.on_max_steps is None and after.error == BUDGET_EXHAUSTED
            out_of_budget = out_of_budget or _spent_a_budget(subject, before, event, after)
            if out_of_budget:
                pass
            elif after.step not in escalated_to or after.status == "failed":
                raise PropertyFailed(
                    f"after {count} consecutive failures (max_errors {ceiling}) the "
                    f"thread is {after.status} at `{after.step}`; it should have gone "
                    f"to `{target}`",
                    events,
                    index,
                )
            elif after.value != before.value:
                raise PropertyFailed(
                    "the max_errors escalation did not carry the failing step's "
                    f"incoming value\n  incoming: {before.value!r}\n  carried:  "
                    f"{after.value!r}",
                    events,
                    index,
                )
            count = 0
        if after.errors != count:
            raise PropertyFailed(
                f"state.errors is {after.errors}, but the thread has failed {count} "
                "time(s) in a row",
                events,
                index,
            )


_SPENDING = (ModelOutput, OutputRejected, StepFailed)
"""The events of an `llm` step that record a model call's tokens and cost."""


def _spent_a_budget(subject: Subject, before: State, event: Event, after: State) -> bool:
    """Whether `max_cost` or `max_tokens` (not the other ceilings) decided this move:
    the thread left an llm step for a budget's target with a fresh budget, or failed
    with a budget's error."""
    if after.error in (COST_EXHAUSTED, TOKENS_EXHAUSTED) and before.error != after.error:
        return True
    spec = subject.spec
    targets = {spec.on_max_cost, spec.on_max_tokens} - {None}
    return (
        isinstance(event, _SPENDING)
        and subject.kind_of(before.step) == "llm"
        and after.step in targets
        and after.tokens == 0
        and after.cost_usd == 0
        and (before.tokens > 0 or before.cost_usd > 0 or _spends(event))
    )


def _spends(event: Event) -> bool:
    usage = event.usage
    if usage is None:
        return False
    return any(
        isinstance(n, int | float) and not isinstance(n, bool) and n > 0
        for n in (usage.input_tokens, usage.output_tokens, usage.cost_usd)
    )


def budgets_stop_the_model(subject: Subject, case: Case) -> None:
    """The tokens and USD an `llm` step's events record are added up; once they reach
    `max_cost` or `max_tokens`, no model call starts: the thread goes to the budget's
    target with the step's incoming value and a fresh budget, or fails (unless the model's
    output finished it)."""
    spec = subject.spec
    if spec.max_cost is None and spec.max_tokens is None:
        return
    events = case.events
    states = fold(subject, events)
    tokens, cost = 0, 0.0
    for index in range(1, len(events)):
        event, before, after = events[index], states[index - 1], states[index]
        if isinstance(event, Retried) and before.error in (COST_EXHAUSTED, TOKENS_EXHAUSTED):
            tokens, cost = 0, 0.0  # a person chose to go on: a fresh budget
        spending = isinstance(event, _SPENDING) and subject.kind_of(before.step) == "llm"
        if spending and event.usage is not None:
            usage = event.usage
            tokens += sum(
                n for n in (usage.input_tokens, usage.output_tokens) if isinstance(n, int) and n > 0
            )
            if isinstance(usage.cost_usd, float | int) and usage.cost_usd > 0:
                cost = round(cost + usage.cost_usd, 9)
        over = [
            (kind, target, error)
            for kind, limit, spent, target, error in (
                ("max_cost", spec.max_cost, cost, spec.on_max_cost, COST_EXHAUSTED),
                ("max_tokens", spec.max_tokens, tokens, spec.on_max_tokens, TOKENS_EXHAUSTED),
            )
            if limit is not None and spent >= limit
        ]
        going = destination(subject, before, event) if spending and over else None
        finished_by_output = going is not None and subject.is_final(going[0])
        if spending and over and not finished_by_output:
            kind, target, error = over[0]
            where = f"after {tokens} tokens and ${cost} ({kind} spent) the thread is "
            if target is None and (after.status != "failed" or after.error != error):
                raise PropertyFailed(
                    f"{where}{after.status} at `{after.step}`; it should have failed with {error}",
                    events,
                    index,
                )
            if target is not None and (after.step != target or after.value != before.value):
                raise PropertyFailed(
                    f"{where}at `{after.step}`; it should be at `{target}` with the step's "
                    "incoming value",
                    events,
                    index,
                )
            if after.status == "running" and isinstance(subject.next_action(after), CallModel):
                raise PropertyFailed(
                    f"{where}at `{after.step}`, and its next action calls the model",
                    events,
                    index,
                )
            if target is not None:
                tokens, cost = 0, 0.0
        if (after.tokens, after.cost_usd) != (tokens, cost):
            raise PropertyFailed(
                f"the state says {after.tokens} tokens and ${after.cost_usd} spent; the "
                f"log's llm steps recorded {tokens} tokens and ${cost} since the start or "
                "the last budget escalation",
                events,
                index,
            )


def moves_follow_edges(subject: Subject, case: Case) -> None:
    """Every move is one of AGENT's edges, carries what docs/language.md says flows along
    it, and leaves the thread with the status its new step has."""
    events = case.events
    states = fold(subject, events)
    for index in range(1, len(events)):
        event, before, after = events[index], states[index - 1], states[index]
        move = match_edges(subject, before, event, after)
        if move.problem is not None:
            raise PropertyFailed(move.problem, events, index)
        for edge_index in move.edges:
            edge = subject.spec.edges[edge_index]
            expected = _carried(edge.kind, before, event)
            if after.value != expected:
                raise PropertyFailed(
                    f"the `{edge.kind}` edge {edge.source} -> {edge.target} carried "
                    f"{after.value!r}, expected {expected!r}",
                    events,
                    index,
                )
        if after.status not in ("failed", "cancelled") and after.status != _status_at(
            subject, after.step
        ):
            raise PropertyFailed(
                f"the thread is {after.status} at `{after.step}`, a "
                f"{subject.kind_of(after.step)} step",
                events,
                index,
            )


def actions_follow_the_graph(subject: Subject, case: Case) -> None:
    """Every next action is the one its step's kind and declaration in `AGENT` call for,
    and carries what the state holds: the value that arrived, the model's declared output
    types and prompt, the tool's function and output type, the key of a call in flight,
    the pending request; a failed thread asks only to fail."""
    events = case.events
    states = fold(subject, events)
    for index, state in enumerate(states):
        held = _held_problem(events, states, index, subject.spec.max_steps)
        if held is not None:
            raise PropertyFailed(
                f"the state at `{state.step}` {held}\n  state: {state}", events, index
            )
        action = subject.next_action(state)
        problem = _action_problem(subject, state, action)
        if problem is not None:
            raise PropertyFailed(
                f"the next action at `{state.step}` {problem}\n  action: {action}", events, index
            )


_ACTION_OF_KIND: dict[str, type[Action]] = {
    "llm": CallModel,
    "tool": CallTool,
    "approval": AwaitApproval,
    "human": AwaitAnswer,
    "wait": AwaitSignal,
    "sleep": Sleep,
    "agent": CallAgent,
    "final": Finish,
}


def _action_problem(subject: Subject, state: State, action: Action) -> str | None:
    if action.step != state.step:
        return f"is for another step, `{action.step}`"
    if state.status == "failed":
        if isinstance(action, Fail) and action.error == state.error:
            return None
        return "should be Fail with the thread's error: the thread has failed"
    kind = subject.kind_of(state.step)
    expected = _ACTION_OF_KIND.get(kind or "")
    if expected is None or type(action) is not expected:
        wanted = expected.__name__ if expected else "nothing"
        return f"is a {type(action).__name__}; a {kind} step asks for {wanted}"
    declared = subject.spec.states[state.step]
    carried = action.result if isinstance(action, Finish) else getattr(action, "value", None)
    # A tool declared without an input is called with none (docs/language.md).
    arrived = None if isinstance(action, CallTool) and declared.input is None else state.value
    if carried != arrived:
        return f"carries {carried!r}, not {arrived!r} (what arrived at the step)"
    names = {cls: name for name, cls in subject.spec.types.items()}
    if isinstance(action, CallModel):
        offered = tuple(names.get(cls, cls.__name__) for cls in action.outputs)
        if offered != declared.outputs:
            return f"offers {offered}, the step declares {declared.outputs}"
        if action.prompt != declared.prompt:
            return f"renders {action.prompt!r}, the step declares {declared.prompt!r}"
    elif isinstance(action, CallTool):
        if action.function != declared.function:
            return f"calls {action.function!r}, the step declares {declared.function!r}"
        if names.get(action.output, action.output.__name__) != declared.output:
            return f"expects {action.output.__name__}, the step declares {declared.output}"
        members = tuple(names.get(cls, cls.__name__) for cls in action.outputs)
        if members != declared.outputs:
            return f"expects one of {members}, the step declares {declared.outputs}"
        if action.started_key != state.tool_key:
            return (
                f"carries the key {action.started_key!r}, the call in flight has {state.tool_key!r}"
            )
    elif isinstance(action, AwaitApproval | AwaitAnswer) and action.notified != state.notified:
        return "does not say whether people were told"
    pending = getattr(action, "request", None)
    waits = AwaitApproval | AwaitAnswer | AwaitSignal | Sleep
    if isinstance(action, waits) and pending != state.request:
        return f"names the request {pending!r}, the thread waits on {state.request!r}"
    return None


def _held_problem(
    events: Sequence[Event], states: Sequence[State], index: int, subject_max_steps: int | None
) -> str | None:
    """How what `states[index]` holds differs from what its log says, or None.

    Derived from the events alone (runtime/types.State documents each field): the input
    is the `Started` event's, and the start state's value; a waiting thread's request is
    `f"{step}-{seq}"` with the `seq` of the state made by the event that opened the wait,
    and it says people were told when a delivered notice came after that event, counting
    the undelivered ones; a running, finished or cancelled thread has no request; a thread
    is cancelled exactly when its log holds a `cancelled` event; a failed thread holds an
    error, and an `ask` that could not be shown fails the pause in place; the key of a call
    in flight is the last `tool_started` since the step last completed or failed.
    """
    state, started = states[index], events[0]
    assert isinstance(started, Started)
    if state.input != started.input:
        return f"holds the input {state.input!r}; the thread was started with {started.input!r}"
    if index == 0 and state.value != started.input:
        return f"holds {state.value!r}; the input {started.input!r} arrives at the start step"
    opened = _wait_opened_by(events, states, index)
    notices = [e for e in events[opened + 1 : index + 1] if isinstance(e, Notified)]
    if state.status == "waiting":
        request = f"{state.step}-{opened + 1}"
        told = any(n.delivered for n in notices)
        untold = sum(not n.delivered for n in notices)
        # At an `agent` step, `notified` says the child was started (runtime/spec.py).
        told = told or any(isinstance(e, ChildStarted) for e in events[opened + 1 : index + 1])
        if state.request != request:
            return f"waits on the request {state.request!r}; the log opened {request!r}"
        if state.notified != told:
            return f"says people were told: {state.notified}; the log says {told}"
        if state.notices != untold:
            return f"counts {state.notices} failed notice(s); the log has {untold}"
    elif state.status in ("running", "finished", "cancelled") and state.request is not None:
        return f"names the request {state.request!r} but waits for nobody"
    cancelled = any(isinstance(e, Cancelled) for e in events[1 : index + 1])
    if cancelled != (state.status == "cancelled"):
        says = "was cancelled" if cancelled else "was never cancelled"
        return f"is {state.status}, but the log says the thread {says}"
    if state.status not in ("failed", "cancelled") and state.error is not None:
        return f"is {state.status} but still holds the error {state.error}"
    if state.status == "failed" and state.error is None:
        return "is failed but holds no error: a failed thread says why"
    last = events[index]
    if is_ask_not_shown(last) and (
        state.status != "failed" or state.step != states[index - 1].step
    ):
        return (
            f"is {state.status} at `{state.step}` after its `ask` could not be shown; the "
            f"pause fails where it is, `{states[index - 1].step}`, until someone retries it"
        )
    # Its `on error` target would have gone past the step budget: the budget's error.
    exhausted = state.error == BUDGET_EXHAUSTED and state.steps >= (subject_max_steps or 0) > 0
    # Or it failed over a money or token budget: the budget's error (budgets_stop_the_model).
    exhausted = exhausted or state.error in (COST_EXHAUSTED, TOKENS_EXHAUSTED)
    if (
        isinstance(last, StepFailed)
        and state.status == "failed"
        and not exhausted
        and state.error != last.error
    ):
        return f"failed with {last.error} but holds the error {state.error}"
    key = _key_in_flight(events, index)
    if state.tool_key != key:
        return f"holds the call key {state.tool_key!r}; the log's call in flight has {key!r}"
    return None


def _wait_opened_by(events: Sequence[Event], states: Sequence[State], index: int) -> int:
    """The index of the event that opened the wait the thread is in after `events[index]`:
    an arrival at a waiting step, or a retry or a fork that reopened it; 0 for `Started`."""
    for j in range(index, 0, -1):
        event = events[j]
        if isinstance(event, Retried | Forked):
            return j
        if isinstance(event, ACTION_EVENTS) and states[j].status == "waiting":
            return j
    return 0


def _key_in_flight(events: Sequence[Event], index: int) -> str | None:
    for event in reversed(events[1 : index + 1]):
        if isinstance(event, ToolStarted):
            return event.key
        if isinstance(event, ACTION_EVENTS):
            return None
    return None


def _carried(kind: str, before: State, event: Event) -> Any:
    match event:
        case ModelOutput(output=output) if kind == "output":
            return output
        case ToolResult(result=result) if kind in ("next", "output"):
            return result
        case Answered(answer=answer) if kind == "next":
            return answer
        case ChildEnded(value=value) if kind == "next":
            return value
        case Signalled(value=value) if kind == "next":
            return value
    return before.value  # approvals, rejections, failures and escalations pass it on


def _status_at(subject: Subject, step: str) -> str:
    kind = subject.kind_of(step)
    waiting = dict.fromkeys(("approval", "human", "wait", "sleep", "agent"), "waiting")
    return {"final": "finished", **waiting}.get(kind or "", "running")


def final_is_absorbing(subject: Subject, case: Case) -> None:
    """A finished thread takes no event of any kind and asks only to finish."""
    events = case.events
    states = fold(subject, events)
    for index, state in enumerate(states):
        if state.status != "finished":
            continue
        action = subject.next_action(state)
        if not isinstance(action, Finish) or action.result != state.value:
            raise PropertyFailed(
                f"a finished thread's next action is {action}, not Finish({state.value!r})",
                events,
                index,
            )
        _refuses_every_probe(subject, events, index, state, "finished")


def _refuses_every_probe(
    subject: Subject, events: Sequence[Event], index: int, state: State, what: str
) -> None:
    """`state` (a `what` thread) refuses one event of every kind, and stays as it was."""
    for probe in probes(subject, state.step, state.request):
        before = copy.deepcopy(state)
        try:
            after = subject.reduce(state, probe)
        except IllegalEvent:
            if state != before:
                raise PropertyFailed(
                    f"refusing an event changed a {what} thread", events, index, probe
                ) from None
            continue
        raise PropertyFailed(
            f"a {what} thread took an event (now {after.status} at `{after.step}`)",
            events,
            index,
            probe,
        )


def forks_and_cancels(subject: Subject, case: Case) -> None:
    """A fork changes nothing but the wait (a fork that waits gets a request of its own,
    and nobody has been told of it); a cancel stops the thread where it is (status
    `cancelled`, no request pending, nobody to tell, its error kept), and a cancelled
    thread refuses every event but a fork."""
    events = case.events
    states = fold(subject, events)
    for index in range(1, len(events)):
        event, before, after = events[index], states[index - 1], states[index]
        expected: State | None = None
        if isinstance(event, Forked):
            expected = replace(before, seq=before.seq + 1)
            if before.status == "waiting":
                own = f"{before.step}-{before.seq + 1}"
                expected = replace(expected, request=own, notified=False, notices=0)
        elif isinstance(event, Cancelled):
            expected = replace(
                before,
                seq=before.seq + 1,
                status="cancelled",
                request=None,
                notified=False,
                notices=0,
            )
        if expected is not None and after != expected:
            raise PropertyFailed(
                f"a `{format_event(event).split()[0]}` event changed more than it should"
                f"\n  before:   {before}\n  after:    {after}\n  expected: {expected}",
                events,
                index,
            )
    for index, state in enumerate(states):
        if state.status == "cancelled":
            _refuses_every_probe(subject, events, index, state, "cancelled")


def probes(subject: Subject, step: str, request: str | None = None) -> list[Event]:
    """One event of every kind, addressed to `step`; decisions name `request` (the pending
    one, so that only the kind of event can make them illegal) and, when it is given,
    name no request too. Model outputs and tool results come once per type (and as an
    `Answer`): a step that declares some types must refuse the others, and that is checked
    here on every path, not left to what random threads happen to draw."""
    payloads: list[BaseModel] = [Answer(text=" x\n")]
    for cls in subject.spec.types.values():
        try:
            payloads.append(cls.model_construct())
        except Exception:  # pragma: no cover - model_construct does not validate
            continue
    # A request nobody opened (ids count from seq 1): a stale or forged decision.
    named = [request, None, f"{step}-0"] if request is not None else [None, f"{step}-0"]
    decisions: list[Event] = []
    for name in named:
        decisions += [
            Approved(step=step, request=name),
            Rejected(step=step, request=name),
            Answered(step=step, answer=Answer(text="late"), request=name),
            TimerFired(step=step, request=name),
            Signalled(step=step, type="Answer", value=Answer(text=" x\n"), request=name),
        ]
    return [
        *(ModelOutput(step=step, output=payload) for payload in payloads),
        ToolStarted(step=step, key="k"),
        # The tool's own result type among them: refused when no call was started.
        *(ToolResult(step=step, result=payload) for payload in payloads),
        StepFailed(step=step, error=ErrorInfo("RuntimeError", "late")),
        StepFailed(step=step, error=ErrorInfo(ASK_NOT_SHOWN, "late")),
        Notified(step=step),
        Cancelled(step=step, reason="late"),
        *decisions,
        Retried(step=step),
        Started(step=step, input=" again\x1b\n"),
    ]


def resume_equals_uninterrupted(subject: Subject, case: Case) -> None:
    """Stopping where a runtime stops (waiting for a person, failed, or mid-tool), writing
    the log or the state as JSON and going on from it gives the same thread."""
    events = case.events
    states = fold(subject, events)
    writer = subject.codec
    end = states[-1]
    for index, state in enumerate(states):
        if state.status not in ("waiting", "failed") and state.tool_key is None:
            continue
        reader = Codec(subject.spec)
        stored = [reader.loads_event(writer.dumps_event(e)) for e in events[: index + 1]]
        resumed = subject.replay(stored)
        from_state = reader.decode_state(json.loads(json.dumps(writer.encode_state(state))))
        for later in events[index + 1 :]:
            later = reader.loads_event(writer.dumps_event(later))
            resumed = subject.reduce(resumed, later)
            from_state = subject.reduce(from_state, later)
        for how, got in (("the replayed log", resumed), ("the stored state", from_state)):
            if got != end:
                raise PropertyFailed(
                    f"paused after event {index} and resumed from {how}, the thread ends "
                    f"differently\n  resumed:       {got}\n  uninterrupted: {end}",
                    events,
                    index,
                )


def invariants_hold(invariants: Sequence[Invariant]) -> Check:
    """The user's `invariant_*(state, events)` functions, on every prefix."""

    def check(subject: Subject, case: Case) -> None:
        events = case.events
        states = fold(subject, events)
        for index, state in enumerate(states):
            prefix = events[: index + 1]
            for invariant in invariants:
                try:
                    held = invariant.function(state, prefix)
                except AssertionError as broken:
                    raise PropertyFailed(
                        f"{invariant.name} failed: {broken}", events, index
                    ) from broken
                if held is False:
                    raise PropertyFailed(f"{invariant.name} returned False", events, index)

    return check


PROPERTIES: tuple[Property, ...] = tuple(
    Property(
        check.__name__,
        (check.__doc__ or "").split("\n\n")[0].strip(),
        check,
        judges_illegal_events=check in (illegal_events_raise, agrees_with_source),
    )
    for check in (
        pure_and_deterministic,
        replay_equals_fold,
        json_round_trip,
        illegal_events_raise,
        approval_before_sensitive_tools,
        max_steps_ceiling,
        max_errors_ceiling,
        budgets_stop_the_model,
        moves_follow_edges,
        actions_follow_the_graph,
        final_is_absorbing,
        forks_and_cancels,
        resume_equals_uninterrupted,
        agrees_with_source,
    )
)


def properties_for(subject: Subject, invariants: Sequence[Invariant] = ()) -> list[Property]:
    """The built-in properties, and one for the user's invariants when there are any.
    `agrees_with_source` only where there is a source to disagree with: a module compiled
    from the `.agent` file at hand agrees with it by construction."""
    found = [
        p for p in PROPERTIES if p.check is not agrees_with_source or subject.reference is not None
    ]
    if invariants:
        names = ", ".join(i.name for i in invariants)
        found.append(
            Property(
                "user_invariants", f"hold on every prefix: {names}", invariants_hold(invariants)
            )
        )
    return found
