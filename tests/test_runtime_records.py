"""The cheaper `__init__` of states, events and actions (runtime/records.py) builds the
same frozen dataclasses the slow one did."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from dataclasses import dataclass
from typing import Any

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


def test_a_record_compiles_nothing_when_declared_and_each_method_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`record` declares a frozen dataclass without compiling its methods: `__init__`,
    `__eq__` and `__hash__` are written at their first call (runtime/records.py)."""
    import builtins

    compiled: list[object] = []
    real_exec = builtins.exec

    def counting_exec(source: Any, *args: Any) -> None:
        compiled.append(source)
        real_exec(source, *args)

    monkeypatch.setattr(builtins, "exec", counting_exec)

    @record(slots=True, kw_only=True)
    class Point:
        x: int
        y: int = 0

    assert compiled == []
    assert Point(x=1) == Point(x=1, y=0) and hash(Point(x=1)) == hash(Point(x=1, y=0))
    assert Point(x=1) != Point(x=2) and Point(x=1) != (1, 0)
    assert len(compiled) == 3  # __init__, __eq__, __hash__, once each

    @dataclass(frozen=True, slots=True)
    class Slow:
        x: int

    assert len(compiled) > 3  # what a frozen dataclass does (this test can tell them apart)


def test_a_record_behaves_as_the_frozen_dataclass_it_declares() -> None:
    @record
    class Order:
        """An order."""

        item: str
        tags: list[str] = dataclasses.field(default_factory=list)
        total: int = dataclasses.field(default=0, init=False)
        cache: str = dataclasses.field(default="", init=False, repr=False, compare=False)

        def __post_init__(self) -> None:
            object.__setattr__(self, "total", len(self.item))

    order = Order("book")
    assert (order.item, order.tags, order.total) == ("book", [], 4)
    assert Order("a").tags is not Order("a").tags  # a new list each time
    assert (
        repr(order).endswith("Order(item='book', tags=[], total=4)")
        and Order.__doc__ == "An order."
    )
    assert order == Order("book") and order != Order("pen")
    assert dataclasses.replace(order, item="pen").total == 3
    assert dataclasses.asdict(order) == {"item": "book", "tags": [], "total": 4, "cache": ""}
    assert copy.deepcopy(order) == order and copy.copy(order) == order
    with pytest.raises(dataclasses.FrozenInstanceError):
        order.item = "pen"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del order.item
    with pytest.raises(TypeError):
        hash(order)  # its list is not hashable: hashing uses the fields, as declared
    match order:
        case Order("book", total=4):
            pass
        case _:
            pytest.fail("a record matches by position and keyword")
    with pytest.raises(TypeError, match="item"):
        Order()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="follows default argument"):

        @record
        class Broken:
            a: int = 0
            b: int  # type: ignore[misc]


def test_a_slotted_record_pickles_copies_and_has_no_dict() -> None:
    event = StepFailed(step="s", error=ErrorInfo("E", "m"), key="k")
    assert not hasattr(event, "__dict__")
    assert pickle.loads(pickle.dumps(event)) == event and copy.copy(event) == event
    assert type(pickle.loads(pickle.dumps(event))) is StepFailed
    assert dataclasses.is_dataclass(event) and [f.name for f in dataclasses.fields(event)][:1] == [
        "step"
    ]
