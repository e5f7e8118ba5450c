"""The cheaper `__init__` of states, events and actions (runtime/records.py) builds the
same frozen dataclasses the slow one did."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from dataclasses import dataclass

import pytest

from twelvefold.runtime.records import quick_init, record
from twelvefold.runtime.types import (
    EVENT_KINDS,
    CallTool,
    ErrorInfo,
    Notified,
    State,
    StepFailed,
    ToolStarted,
    Usage,
)


def test_an_instance_is_of_its_own_class_and_stays_frozen() -> None:
    state = State("decide", 1, "running", "in", seq=3)
    assert type(state) is State
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.seq = 4  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del state.step
    event = ToolStarted(step="bump", key="k")
    assert type(event) is ToolStarted
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.key = "other"  # type: ignore[misc]


def test_fields_defaults_and_errors_are_the_declared_ones() -> None:
    state = State("decide", 1, "running", "in")
    assert (state.steps, state.seq, state.error, state.cost_usd) == (0, 1, None, 0.0)
    assert Notified(step="s").channels == ()
    assert StepFailed(step="s", error=ErrorInfo("E", "m")).key is None
    with pytest.raises(TypeError, match="key"):
        ToolStarted(step="bump")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ToolStarted("bump", key="k")  # type: ignore[call-arg]  # keyword-only, as declared
    action = CallTool(step="t", function="m:f", value=None, output=ErrorInfo)  # type: ignore[arg-type]
    assert action.retries == 0 and action.outputs == ()


def test_dataclass_behaviour_is_unchanged() -> None:
    state = State("decide", 1, "running", "in", error=ErrorInfo("E", "m"), tokens=5)
    assert state == State("decide", 1, "running", "in", error=ErrorInfo("E", "m"), tokens=5)
    assert hash(state) == hash(copy.deepcopy(state))
    assert pickle.loads(pickle.dumps(state)) == state
    changed = dataclasses.replace(state, seq=9)
    assert type(changed) is State and changed.seq == 9 and state.seq == 1
    assert repr(Usage(latency_ms=1.0)).startswith("Usage(latency_ms=1.0,")
    for cls in EVENT_KINDS.values():
        assert cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"


def test_a_subclass_is_built_by_the_frozen_init() -> None:
    @record(slots=True)
    class Tagged(State):
        tag: str = ""

    tagged = Tagged("decide", 1, "running", "in", tag="x")
    assert type(tagged) is Tagged and tagged.tag == "x" and tagged.step == "decide"

    class Plain(State):
        __slots__ = ()

    plain = Plain("decide", 1, "running", "in")
    assert type(plain) is Plain and plain.step == "decide"


def test_only_frozen_slotted_dataclasses_fit() -> None:
    @dataclass(slots=True)
    class Open:
        a: int

    @dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True)
    class Factory:
        a: list[int] = dataclasses.field(default_factory=list)

    @dataclass(frozen=True, slots=True)
    class Derived:
        a: int
        b: int = dataclasses.field(default=0, init=False)

    for cls in (Open, Checked, Factory, Derived):
        with pytest.raises(TypeError):
            quick_init(cls)


def test_first_calls_from_many_threads_at_once_all_build_the_record() -> None:
    """The code is written once even when first calls race (each used to pop the shared
    `written` name, so a racing one could fail with KeyError)."""
    import threading

    @quick_init
    @dataclass(frozen=True, slots=True, kw_only=True)
    class Racy:
        a: int
        b: str = "x"

    start = threading.Barrier(8)
    built: list[object] = []

    def build(n: int) -> None:
        start.wait()
        built.append(Racy(a=n))

    threads = [threading.Thread(target=build, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.a for r in built) == list(range(8))  # type: ignore[attr-defined]
