"""The module under test against its `.agent` source: the graph it declares and what it does.

A generated module is trusted to describe itself in `AGENT`, and the other properties
judge its behaviour by that description. An edit that changes both (`requires_approval`
dropped from a tool, `max_steps` raised, a ceiling's target removed) or that changes what
`AGENT` does not describe (an action that calls another step's function, a `CallModel`
that offers fewer outputs, a lost idempotency key) would pass them. This property takes
the truth from the source instead: the module compiled afresh from it (`Subject.reference`)
must declare the same graph and, event by event, reach the same states and ask for the
same actions. Values cross between the two modules through JSON, as they would between
two processes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from twelvefold.runtime.codec import Codec, CodecError
from twelvefold.runtime.spec import AgentSpec, StateSpec
from twelvefold.runtime.types import Action, CallTool, ErrorInfo, Event, IllegalEvent, Started

from .strategies import Case
from .subject import Subject


class _Refused:
    """Stands for "reduce raised IllegalEvent" when two modules' answers are compared."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Refused)

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "IllegalEvent"


REFUSED = _Refused()


def spec_differences(tested: AgentSpec, reference: AgentSpec) -> list[str]:
    """How `tested` (a module's `AGENT`) differs from `reference` (its source's), as lines
    a person can act on; empty when they declare the same agent."""
    found: list[str] = []
    for name in (
        "name",
        "description",
        "start",
        "max_steps",
        "on_max_steps",
        "max_errors",
        "on_max_errors",
        "max_cost",
        "on_max_cost",
        "max_tokens",
        "on_max_tokens",
        "context",
    ):
        mine, theirs = getattr(tested, name), getattr(reference, name)
        if mine != theirs:
            found.append(f"{name} is {mine!r}, the source says {theirs!r}")
    if _type_name(tested.input_type) != _type_name(reference.input_type):
        found.append(
            f"input_type is {_type_name(tested.input_type)}, "
            f"the source says {_type_name(reference.input_type)}"
        )
    found += _type_differences(tested.types, reference.types)
    found += _state_differences(tested.states, reference.states)
    mine_edges, their_edges = set(tested.edges), set(reference.edges)
    for edge in sorted(mine_edges - their_edges, key=repr):
        found.append(f"edge {edge} is not in the source")
    for edge in sorted(their_edges - mine_edges, key=repr):
        found.append(f"edge {edge} of the source is missing")
    if not found and tested.edges != reference.edges:
        found.append("the edges are in another order than the source's rules")
    return found


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", repr(annotation))


def _type_differences(
    tested: Mapping[str, type[BaseModel]], reference: Mapping[str, type[BaseModel]]
) -> list[str]:
    found = [f"type {n} is not in the source" for n in tested if n not in reference]
    found += [f"type {n} of the source is missing" for n in reference if n not in tested]
    for name in tested.keys() & reference.keys():
        if _schema(tested[name]) != _schema(reference[name]):
            found.append(f"type {name} has another JSON schema than the source's")
        elif dict(tested[name].model_config) != dict(reference[name].model_config):
            # Not in the schema, but what values it takes: extra keys, NaN and infinity.
            found.append(f"type {name} has another model_config than the source's")
    return sorted(found)


def _schema(cls: type[BaseModel]) -> Any:
    try:
        return cls.model_json_schema()
    except Exception as exc:  # a broken model is a difference of its own
        return f"{type(exc).__name__}: {exc}"


def _state_differences(
    tested: Mapping[str, StateSpec], reference: Mapping[str, StateSpec]
) -> list[str]:
    found = [f"state {n} is not in the source" for n in tested if n not in reference]
    found += [f"state {n} of the source is missing" for n in reference if n not in tested]
    for name in tested.keys() & reference.keys():
        mine, theirs = tested[name], reference[name]
        for f in dataclasses.fields(StateSpec):
            if f.name == "requires_approval":
                if (mine.requires_approval is None) != (theirs.requires_approval is None):
                    says = "requires" if theirs.requires_approval else "does not require"
                    found.append(f"state {name}: the source {says} approval")
                continue
            if getattr(mine, f.name) != getattr(theirs, f.name):
                found.append(
                    f"state {name}: {f.name} is {getattr(mine, f.name)!r}, "
                    f"the source says {getattr(theirs, f.name)!r}"
                )
    return sorted(found)


def encode_action(codec: Codec, spec: AgentSpec, action: Action) -> dict[str, Any]:
    """An action as data that two modules can be compared on: classes by their declared
    names, values as the codec writes them."""
    names = {cls: name for name, cls in spec.types.items()}
    data: dict[str, Any] = {"kind": type(action).__name__}
    for f in dataclasses.fields(action):
        value = getattr(action, f.name)
        if isinstance(value, type):
            data[f.name] = names.get(value, value.__name__)
        elif isinstance(value, tuple) and value and all(isinstance(v, type) for v in value):
            data[f.name] = [names.get(v, v.__name__) for v in value]
        elif isinstance(value, ErrorInfo):
            data[f.name] = [value.type, value.message]
        else:
            data[f.name] = codec.encode_value(value)
    if isinstance(action, CallTool):
        needs = spec.states[action.step].requires_approval
        data["needs_approval"] = None if needs is None else bool(needs(action.value))
    return data


def agrees_with_source(subject: Subject, case: Case) -> None:
    """The module declares the graph its `.agent` source declares, and reduces every event
    (legal or not) to the state, and asks for the action, that the source's module does."""
    from .properties import PropertyFailed

    reference = subject.reference
    if reference is None:
        return
    theirs: AgentSpec = reference.AGENT
    differences = spec_differences(subject.spec, theirs)
    if differences:
        raise PropertyFailed(
            "the module's AGENT disagrees with its source "
            f"({subject.source}); recompile it:\n  " + "\n  ".join(differences)
        )
    events = case.events
    if not events or not isinstance(events[0], Started):
        return
    mine_codec, their_codec = subject.codec, Codec(theirs)

    def translated(event: Event) -> Event:
        return their_codec.decode_event(mine_codec.encode_event(event))

    mine = subject.initial_state(events[0].input)
    other = reference.initial_state(translated(events[0]).input)  # type: ignore[attr-defined]
    for index in range(len(events)):
        if index:
            mine = subject.reduce(mine, events[index])
            other = reference.reduce(other, translated(events[index]))
        _same(
            subject,
            index,
            events,
            "state",
            mine_codec.encode_state(mine),
            their_codec.encode_state(other),
        )
        _same(
            subject,
            index,
            events,
            "next action",
            encode_action(mine_codec, subject.spec, subject.next_action(mine)),
            encode_action(their_codec, theirs, reference.next_action(other)),
        )
        if case.illegal is not None and index == case.illegal_at:
            _same(
                subject,
                index,
                events,
                "answer to an illegal event",
                _outcome(mine_codec, subject.reduce, mine, case.illegal),
                _outcome(their_codec, reference.reduce, other, _crossed(translated, case.illegal)),
            )


def _crossed(translated: Any, event: Event) -> Event:
    """`event` as the source's module reads it; an illegal event whose payload the codec
    cannot read back at its step (a tool result at an `llm` step) is handed over as it is:
    the source's module must refuse it all the same."""
    try:
        crossed: Event = translated(event)
    except (ValueError, TypeError, KeyError):
        return event
    return crossed


def source_paths(subject: Subject) -> list[tuple[Event, ...]]:
    """The shortest logs to every edge of the source's graph, found by exploring the module
    compiled from the source and translated for the module under test: a module that has
    lost an edge (a ceiling it ignores) is still driven down the path that should take it.
    Empty without a source."""
    from .coverage import explore

    if subject.reference is None:
        return []
    truth = Subject(subject.reference, subject.origin, program=subject.program)
    theirs, mine = truth.codec, subject.codec
    paths = []
    for path in explore(truth).paths.values():
        try:
            paths.append(tuple(mine.decode_event(theirs.encode_event(e)) for e in path))
        except CodecError:
            continue  # a type the module does not declare: agrees_with_source says so
    return paths


def _outcome(codec: Codec, reduce: Any, state: Any, event: Event) -> Any:
    try:
        return codec.encode_state(reduce(state, event))
    except IllegalEvent:
        return REFUSED


def _same(subject: Subject, index: int, events: Any, what: str, mine: Any, theirs: Any) -> None:
    from .properties import PropertyFailed

    if mine != theirs:
        raise PropertyFailed(
            f"after event {index} the module's {what} differs from what its source "
            f"({subject.source}) compiles to\n  module: {mine}\n  source: {theirs}",
            events,
            index,
        )
