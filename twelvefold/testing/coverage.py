"""Which parts of an agent a set of threads exercised, and the shortest way to reach the rest.

Every move a thread makes is matched to one of `AGENT.edges` (the checked graph): an
output to its `on TYPE` rule, a failure to `on error` or the `max_errors` escalation, an
action past the budget to `max_steps`. Coverage counts states, edges and (llm step,
output type) pairs seen.

`explore` is a breadth-first search over the reducer's states, driven by a few
representative events per state (in the manner of XState's model-based testing): it finds
the shortest legal event log that takes each edge. An edge it cannot reach within its
bound is reported, and `twelvefold test` fails on it.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import types
import typing
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel

from twelvefold.compiler import moves
from twelvefold.compiler.moves import ACTION_EVENTS, Move, describe_edge
from twelvefold.runtime.spec import BUDGET_EXHAUSTED, EdgeSpec
from twelvefold.runtime.types import (
    Answer,
    Answered,
    Approved,
    ChildEnded,
    ChildFailed,
    ChildStarted,
    ErrorInfo,
    Event,
    ModelOutput,
    Rejected,
    Retried,
    Signalled,
    Started,
    State,
    StepFailed,
    TimerFired,
    ToolResult,
    ToolStarted,
    Usage,
)

from .strategies import DEEPEST, MAX_DEPTH, fields_of
from .subject import Subject

__all__ = [
    "ACTION_EVENTS",
    "Coverage",
    "Exploration",
    "Move",
    "budget_paths",
    "describe_edge",
    "explore",
    "walk",
]


def match_edges(subject: Subject, before: State, event: Event, after: State) -> Move:
    """The edge a move of the reducer under test took (compiler/moves.py)."""
    return moves.match_edges(subject.spec, subject.program, before, event, after)


def route(subject: Subject, source: str, output: BaseModel) -> int | None:
    return moves.route(subject.spec, subject.program, source, output)


def type_name(subject: Subject, value: Any) -> str:
    return moves.type_name(subject.spec, value)


def walk(subject: Subject, events: Sequence[Event]) -> Iterator[Move]:
    """The moves of a log, as the reducer under test makes them (stops where it raises)."""
    return moves.walk(subject.module, events, subject.program)


# ---- coverage ----------------------------------------------------------------------


@dataclass
class Coverage:
    subject: Subject
    states: set[str] = field(default_factory=set)
    edges: set[int] = field(default_factory=set)
    outputs: set[tuple[str, str]] = field(default_factory=set)
    threads: int = 0

    def record(self, events: Sequence[Event]) -> None:
        self.threads += 1
        self.states.add(self.subject.spec.start)
        for move in walk(self.subject, events):
            self.states.add(move.after.step)
            self.edges.update(move.edges)
            if isinstance(move.event, ModelOutput):
                self.outputs.add((move.before.step, type_name(self.subject, move.event.output)))
            elif isinstance(move.event, ToolResult):
                self.outputs.add((move.before.step, type_name(self.subject, move.event.result)))

    def all_outputs(self) -> list[tuple[str, str]]:
        return [
            (name, output)
            for name, state in self.subject.spec.states.items()
            for output in state.outputs
        ]

    def summary(self) -> dict[str, tuple[int, int]]:
        spec = self.subject.spec
        outputs = self.all_outputs()
        return {
            "states": (len(self.states & set(spec.states)), len(spec.states)),
            "edges": (len(self.edges), len(spec.edges)),
            "output types": (len(self.outputs & set(outputs)), len(outputs)),
        }

    def missed(self) -> dict[str, list[str]]:
        spec = self.subject.spec
        return {
            "states": [s for s in spec.states if s not in self.states],
            "edges": [describe_edge(e) for i, e in enumerate(spec.edges) if i not in self.edges],
            "output types": [
                f"{s} -> {t}" for s, t in self.all_outputs() if (s, t) not in self.outputs
            ],
        }


# ---- representative values ---------------------------------------------------------

_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")
_PRODUCT_LIMIT = 48


@dataclass(frozen=True)
class Constants:
    """Literals the agent's guards compare with, so that representatives straddle them."""

    strings: tuple[str, ...] = ()
    numbers: tuple[float, ...] = ()

    @classmethod
    def of(cls, edges: Iterable[EdgeSpec]) -> Constants:
        guards = [e.guard for e in edges if e.guard]
        strings = sorted({json.loads(f'"{s}"') for g in guards for s in _STRING.findall(g)})
        text = [_STRING.sub("", g) for g in guards]
        numbers = sorted({float(n) for g in text for n in _NUMBER.findall(g)})
        return cls(tuple(strings), tuple(numbers))


_UNROLL_DEPTH = 2
"""How deep a list or a map, and a record that can hold another of itself (`type Node {
next: Node? }`), is built: past it lists and maps are empty, an optional such record is
null and a required one has no representative (its container drops the value that needs
it). Records that cannot hold themselves are built however deep they nest (E123 keeps a
checked agent's under 16 levels), up to `DEEPEST` (for a module written by hand, not held to
E123)."""


@dataclass
class _Memo:
    """What one top-level call has built: each record's representatives per depth (a type
    reached along many paths, as `type T0 { a: T1? b: T1? }`, `type T1 { ... }` reach T1,
    is built once), and whether each record can hold itself."""

    built: dict[tuple[type[BaseModel], int], list[BaseModel]] = field(default_factory=dict)
    cyclic: dict[type[BaseModel], bool] = field(default_factory=dict)

    def holds_itself(self, cls: type[BaseModel]) -> bool:
        if cls not in self.cyclic:
            self.cyclic[cls] = _holds_itself(cls)
        return self.cyclic[cls]


def _holds_itself(cls: type[BaseModel]) -> bool:
    """Whether a value of `cls` can contain another `cls` (through any fields, lists,
    maps, optionals and other records)."""
    seen: set[type[BaseModel]] = set()
    pending: list[Any] = [info.annotation for info in fields_of(cls).values()]
    while pending:
        annotation = pending.pop()
        if annotation is cls:
            return True
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation not in seen:
                seen.add(annotation)
                pending += [info.annotation for info in fields_of(annotation).values()]
        else:
            pending += typing.get_args(annotation)
    return False


def _is_record(annotation: Any) -> bool:
    """Whether `annotation` is a declared type (a pydantic model)."""
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def representatives(
    annotation: Any, constants: Constants, depth: int = 0, memo: _Memo | None = None
) -> list[Any]:
    """A few values of a field type, the simplest first: every literal member, both
    booleans, null and a value, numbers either side of the guards' constants. Lists, maps
    and recursive records stop at `_UNROLL_DEPTH` (on the branch that ends there: an empty
    list, null), and every type is built once per depth, so that any declared type (a
    recursive one, a wide one) takes few steps."""
    memo = memo if memo is not None else _Memo()
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is str:
        # And one padded with whitespace (the first constant, if any): a guard or a
        # reducer that strips its text must meet it on the shortest paths too.
        padded = f" {(constants.strings or ('x',))[0]}\t"
        return [*["", *constants.strings, "x"][:6], padded]
    if annotation is bool:
        return [False, True]
    if annotation is int:
        whole = {int(c) + d for c in constants.numbers for d in (-1, 0, 1)}
        return sorted({0, 1} | whole)[:8]
    if annotation is float:
        near = {c + d for c in constants.numbers for d in (-0.5, 0.0, 0.5)}
        return sorted({0.0, 1.0} | near)[:8]
    if annotation is type(None):
        return [None]
    if origin is Literal:
        return list(args)
    if origin in (typing.Union, types.UnionType):
        values: list[Any] = []
        if type(None) in args and any(map(_is_record, args)):
            # An optional record is null first: a record's first representative is made
            # of its fields' first ones, and in a wide type (`type T0 { a: T1? b: T1? }`,
            # `type T1 { a: T2? b: T2? }`, ...) a value at every first field would be
            # exponentially large (and so would be checking it).
            args = (type(None), *(a for a in args if a is not type(None)))
        for option in args:
            values += representatives(option, constants, depth, memo)
        return values[:16]
    if origin is list:
        if depth >= _UNROLL_DEPTH:
            return [[]]
        item = representatives(args[0], constants, depth + 1, memo)[:1]
        return [[], *[[v] for v in item]]
    if origin is dict:
        if depth >= _UNROLL_DEPTH:
            return [{}]
        item = representatives(args[1], constants, depth + 1, memo)[:1]
        return [{}, *[{"k": v} for v in item]]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if depth >= DEEPEST or (depth >= _UNROLL_DEPTH and memo.holds_itself(annotation)):
            return []
        # A field's record is one of many values of its container: as many as a product
        # of fields may hold (the container varies each on its own past that).
        return model_representatives(annotation, constants, depth + 1, memo)[:_PRODUCT_LIMIT]
    return [None, "x"]


def model_representatives(
    cls: type[BaseModel], constants: Constants, depth: int = 0, memo: _Memo | None = None
) -> list[BaseModel]:
    """Every combination of the fields' representatives when there are few, else a base
    value and each field varied on its own."""
    memo = memo if memo is not None else _Memo()
    if (cls, depth) in memo.built:
        return list(memo.built[cls, depth])
    domains = {
        info.alias or name: representatives(info.annotation, constants, depth, memo) or [None]
        for name, info in fields_of(cls).items()
    }
    keys = list(domains)
    size = 1
    for domain in domains.values():
        size *= len(domain)
    if size <= _PRODUCT_LIMIT:
        combos = [dict(zip(keys, c, strict=True)) for c in itertools.product(*domains.values())]
    else:
        base = {k: d[0] for k, d in domains.items()}
        combos = [base] + [{**base, k: v} for k, d in domains.items() for v in d[1:]]
    built: list[BaseModel] = []
    for combo in combos:
        try:
            built.append(cls.model_validate(combo))
        except ValueError:
            continue  # a recursive type cut short at the depth limit
    memo.built[cls, depth] = built
    return list(built)


# ---- shortest paths ----------------------------------------------------------------


@dataclass(frozen=True)
class Exploration:
    paths: dict[int, tuple[Event, ...]]
    """For each edge reached, the shortest log (from `Started`) whose last event takes it."""
    explored: int
    """States visited."""
    exhausted: bool
    """True when every reachable state was visited (so a missing edge is unreachable);
    False when the search stopped at its bound first."""

    def unreached(self, subject: Subject) -> list[int]:
        return [i for i in range(len(subject.spec.edges)) if i not in self.paths]


class _Steps:
    """The representative moves of each state: event groups applied together (a tool's
    start and its result are one step of the search)."""

    def __init__(self, subject: Subject) -> None:
        self.subject = subject
        constants = Constants.of(subject.spec.edges)
        self._first = {
            name: model_representatives(_type(subject, name), constants)[:1]
            for name in subject.spec.types
        }
        self._first["Answer"] = [Answer(text="ok")]
        spec = subject.spec
        self._spend_all = [
            usage
            for limit, usage in (
                (spec.max_cost, Usage(cost_usd=spec.max_cost)),
                (spec.max_tokens, Usage(input_tokens=spec.max_tokens)),
            )
            if limit is not None
        ]
        guarded = {e.type for e in subject.spec.edges if e.guard is not None}
        # Per llm step or tool and output type, one value for each rule it can be routed
        # by: values only matter to the search where a guard routes on them.
        self._outputs: dict[tuple[str, str], list[BaseModel]] = {}
        for step, spec_state in subject.spec.states.items():
            names = (
                spec_state.results
                if spec_state.kind in ("tool", "wait", "agent")
                else spec_state.outputs
            )
            for name in names:
                if name in guarded:
                    pool = candidates(_type(subject, name), constants)
                    self._outputs[step, name] = _one_per_rule(subject, step, pool)
                else:
                    self._outputs[step, name] = self._first[name]

    def at(self, state: State) -> list[tuple[Event, ...]]:
        step, kind = state.step, self.subject.kind_of(state.step)
        if kind is None or state.status == "finished":
            return []
        if state.status == "failed":
            return [(Retried(step=step),)]
        failure = StepFailed(step=step, error=ErrorInfo("RuntimeError", "boom"))
        spec_state = self.subject.spec.states[step]
        if kind == "llm":
            groups: list[tuple[Event, ...]] = [
                (ModelOutput(step=step, output=value),)
                for name in spec_state.outputs
                for value in self._outputs[step, name]
            ]
            # A call that spends a whole budget at once (answering, or failing): the way
            # along its escalation, also from a step whose every output finishes.
            spent: list[tuple[Event, ...]] = [
                (replace(event, usage=usage),)
                for usage in self._spend_all
                for event in (groups[0][0] if groups else None, failure)
                if event is not None
            ]
            return [*groups, (failure,), *spent]
        if kind == "tool":
            start = ToolStarted(step=step, key="key")
            results: list[tuple[Event, ...]] = [
                (start, ToolResult(step=step, result=value))
                for name in spec_state.results
                for value in self._outputs[step, name]
            ]
            return [*results, (start, failure)]
        request = state.request  # a decision answers the pending request
        if kind == "approval":
            decisions: list[tuple[Event, ...]] = [
                (Approved(step=step, request=request),),
                (Rejected(step=step, comment="no", request=request),),
            ]
            return decisions + ([(failure,)] if self.subject.can_fail(state) else [])
        if kind == "agent":
            child = f"t-parent~{request}"
            begun = ChildStarted(step=step, child=child)
            name = spec_state.output or ""
            ended: list[tuple[Event, ...]] = [
                (begun, ChildEnded(step=step, child=child, value=value, request=request))
                for value in self._outputs[step, name]
            ]
            error = ErrorInfo("ChildFailed", "the child failed")
            return [
                *ended,
                (begun, ChildFailed(step=step, error=error, child=child, request=request)),
            ]
        if kind in ("wait", "sleep"):
            timer: list[tuple[Event, ...]] = [(TimerFired(step=step, request=request),)]
            if kind == "sleep":
                return timer
            timed = any(e.kind == "timeout" for _, e in self.subject.edges_from(step))
            name = spec_state.output or ""
            signals: list[tuple[Event, ...]] = [
                (Signalled(step=step, type=name, value=value, request=request),)
                for value in self._outputs[step, name]
            ]
            return signals + (timer if timed else [])
        ok = Answer(text="ok")
        answers: list[tuple[Event, ...]] = [(Answered(step=step, answer=ok, request=request),)]
        return answers + ([(failure,)] if self.subject.can_fail(state) else [])


def candidates(cls: type[BaseModel], constants: Constants, tries: int = 400) -> list[BaseModel]:
    """The representatives, then random combinations of the fields' representatives (with
    a fixed seed: the search must give the same paths on every run)."""
    found = model_representatives(cls, constants)
    rng = random.Random(0)
    for _ in range(tries):
        try:
            found.append(cls.model_validate(_random_value(cls, constants, rng, 0)))
        except ValueError:
            continue
    return found


def _random_value(annotation: Any, constants: Constants, rng: random.Random, depth: int) -> Any:
    """A random value of `annotation` as JSON data, as deep as the property tests' values
    (`MAX_DEPTH`: past it an optional record is null and a list empty), so that a recursive
    or a wide type's random values stay small."""
    if _is_record(annotation):
        if depth >= DEEPEST:
            return {}  # a record that must hold itself: no value (validation refuses it)
        return {
            info.alias or name: _random_value(info.annotation, constants, rng, depth + 1)
            for name, info in fields_of(annotation).items()
        }
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if depth >= MAX_DEPTH and type(None) in args and any(map(_is_record, args)):
            return None
        return _random_value(rng.choice(args), constants, rng, depth)
    if origin is list and depth < MAX_DEPTH:
        return [_random_value(args[0], constants, rng, depth + 1)] if rng.random() < 0.5 else []
    domain = representatives(annotation, constants, depth) or [None]
    value = rng.choice(domain)
    return value.model_dump(by_alias=True) if isinstance(value, BaseModel) else value


def _one_per_rule(subject: Subject, step: str, pool: list[BaseModel]) -> list[BaseModel]:
    if subject.program is None:
        return pool[:_PRODUCT_LIMIT]
    chosen: dict[int | None, BaseModel] = {}
    for value in pool:
        chosen.setdefault(route(subject, step, value), value)
    return list(chosen.values())


def _type(subject: Subject, name: str) -> type[BaseModel]:
    return Answer if name == "Answer" else subject.spec.types[name]


def _key(subject: Subject, state: State) -> str:
    data = subject.codec.encode_state(state)
    del data["seq"]
    return json.dumps(data, sort_keys=True, default=str)


def explore(subject: Subject, max_states: int = 20_000) -> Exploration:
    """Breadth-first search for the shortest log that takes each edge."""
    spec = subject.spec
    steps = _Steps(subject)
    wanted = len(spec.edges)
    start_input: Any = "" if spec.input_type is str else _first_input(subject)
    root = subject.initial_state(start_input)
    first: tuple[Event, ...] = (Started(step=spec.start, input=start_input),)
    # Logs are rebuilt from parent links: (parent key, events that led here).
    parents: dict[str, tuple[str | None, tuple[Event, ...]]] = {_key(subject, root): (None, first)}
    paths: dict[int, tuple[Event, ...]] = {}
    queue: deque[tuple[str, State]] = deque([(_key(subject, root), root)])
    dropped = False

    def log_to(key: str) -> tuple[Event, ...]:
        chunks: list[tuple[Event, ...]] = []
        current: str | None = key
        while current is not None:
            parent, chunk = parents[current]
            chunks.append(chunk)
            current = parent
        return tuple(e for chunk in reversed(chunks) for e in chunk)

    while queue and len(paths) < wanted:
        key, state = queue.popleft()
        for group in steps.at(state):
            current, moves = state, []
            try:
                for event in group:
                    after = subject.reduce(current, event)
                    moves.append(match_edges(subject, current, event, after))
                    current = after
            except Exception:
                continue  # a refused legal event: the properties report it
            new_edges = [i for m in moves for i in m.edges if i not in paths]
            if new_edges:
                log = log_to(key) + group
                for index in new_edges:
                    paths[index] = log
            next_key = _key(subject, current)
            if next_key in parents or _past_budget(spec.max_steps, current):
                continue
            if len(parents) >= max_states:
                dropped = True
                continue
            parents[next_key] = (key, group)
            queue.append((next_key, current))
    complete = len(paths) == wanted or (not queue and not dropped)
    return Exploration(paths, len(parents), exhausted=complete)


def budget_paths(subject: Subject, max_states: int = 20_000) -> list[tuple[Event, ...]]:
    """For each step and each representative move there, a log whose last action is the
    one that reaches `max_steps` (none without a step budget).

    What a thread does at its budget depends on where that last action goes (a final step
    finishes it whatever the count; elsewhere it goes to the `max_steps` target or stops
    failed where it was going), and random threads seldom arrive there by every move. The
    search is breadth-first over (step, status, action count, call in flight), so it needs
    no more states than the budget has actions."""
    budget = subject.spec.max_steps
    if budget is None:
        return []
    steps = _Steps(subject)
    start_input: Any = "" if subject.spec.input_type is str else _first_input(subject)
    first: tuple[Event, ...] = (Started(step=subject.spec.start, input=start_input),)

    def key(state: State) -> tuple[str, str, int, bool]:
        return (state.step, state.status, state.steps, state.tool_key is None)

    root = subject.initial_state(start_input)
    logs: dict[tuple[str, str, int, bool], tuple[Event, ...]] = {key(root): first}
    queue: deque[State] = deque([root])
    found: dict[tuple[str, int], tuple[Event, ...]] = {}
    while queue and len(logs) < max_states:
        state = queue.popleft()
        log = logs[key(state)]
        for position, group in enumerate(steps.at(state)):
            if state.steps + 1 == budget and state.status != "failed":
                found.setdefault(
                    (state.step, position), log + group + _go_on(subject, group, state)
                )
                continue
            current = state
            try:
                for event in group:
                    current = subject.reduce(current, event)
            except Exception:
                continue  # a refused legal event: the properties report it
            if current.steps >= budget or key(current) in logs:
                continue
            logs[key(current)] = log + group
            queue.append(current)
    return list(found.values())


def _go_on(subject: Subject, group: tuple[Event, ...], state: State) -> tuple[Event, ...]:
    """A person's retry, when `group` left the thread failed for its budget: what a
    retried thread counts from is as much the budget's business."""
    try:
        for event in group:
            state = subject.reduce(state, event)
    except Exception:
        return ()
    if state.status == "failed" and state.error == BUDGET_EXHAUSTED:
        return (Retried(step=state.step, by="ana"),)
    return ()


def _past_budget(budget: int | None, state: State) -> bool:
    """A thread failed for its step budget can be retried, one action at a time, forever;
    past the budget there is nothing new to see, and stopping there keeps the search finite
    (an agent with a cycle must declare `max_steps`)."""
    return budget is not None and state.steps > budget


def _first_input(subject: Subject) -> Any:
    input_type = subject.spec.input_type
    if isinstance(input_type, type) and issubclass(input_type, BaseModel):
        found = model_representatives(input_type, Constants())
        if found:
            return found[0]
    return ""
