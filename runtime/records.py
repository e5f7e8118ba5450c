"""A cheaper `__init__` for the frozen dataclasses every step creates, and builders.

A frozen dataclass's generated `__init__` stores each field with `object.__setattr__`
(its own `__setattr__` refuses every assignment), a call per field: a 16-field `State`
cost about 2 µs to build, and each step builds several states, events and actions.
`quick_init` gives such a class an `__init__` that first turns the new instance into an
*open twin* (the same slots, a subclass with the ordinary `__setattr__`), stores the
fields with plain attribute assignments, then turns it back: two class assignments
instead of one call per field, a third to a half of the cost (docs/benchmarks.md).
`builder` makes a plain function that builds the class the same way: calling a class
passes keyword arguments to `__init__` through a new dict, calling a function does not
(half the cost again for a 10-argument `State`).

Nothing else changes: the class is still the frozen dataclass it was declared as
(fields, `dataclasses.replace`, equality, hashing, repr, pickling, `match`), an instance
can never be seen half-built or in its twin's class (nobody else holds it before it is
returned), and assigning to it afterwards raises `FrozenInstanceError` as before. A
subclass that does not declare its own dataclass `__init__` is built by the original one
(its layout may differ from the twin's).

The functions are written (and the twin made) at their first call, not when the module
that declares the class is imported: importing the runtime costs nothing more.
"""

from __future__ import annotations

import builtins
import dataclasses
import threading
from collections.abc import Callable
from types import CodeType, FunctionType
from typing import Any, ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")


def quick_init(cls: type[T]) -> type[T]:
    """Give `cls`, a frozen dataclass with slots and no `__post_init__` nor default
    factories, the cheaper `__init__` (same parameters, defaults and errors). Returns
    `cls`; raises `TypeError` for a class it does not fit."""
    fields = _fields(cls)
    frozen_init = cls.__init__
    forwarded = ", ".join(
        ["self", *(f"{f.name}={f.name}" if f.kw_only else f.name for f in fields)]
    )

    def source(parts: _Parts) -> str:
        return (
            f"def written(self, {parts.signature}):\n"
            "    if self.__class__ is not _cls:  # a subclass: its layout may differ\n"
            f"        return _frozen_init({forwarded})\n"
            "    _become(self, '__class__', _twin)\n"
            f"{parts.stores}"
            "    self.__class__ = _cls\n"
        )

    init = _written_at_first_call(cls, fields, source, _frozen_init=frozen_init)
    init.__name__ = "__init__"
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = frozen_init.__doc__
    init.__wrapped__ = frozen_init  # type: ignore[attr-defined]  # for inspect.signature
    setattr(cls, "__init__", init)  # noqa: B010 (mypy refuses to assign a method)
    return cls


def builder(cls: Callable[P, T]) -> Callable[P, T]:
    """A plain function that builds `cls` (a class `quick_init` fits) from the same
    arguments; raises `TypeError` for a class it does not fit."""
    fields = _fields(cls)

    def source(parts: _Parts) -> str:
        return (
            f"def written({parts.signature}):\n"
            "    self = _new(_twin)\n"
            f"{parts.stores}"
            "    self.__class__ = _cls\n"
            "    return self\n"
        )

    build = _written_at_first_call(cls, fields, source)
    build.__name__ = build.__qualname__ = f"build_{getattr(cls, '__name__', 'record')}"
    build.__wrapped__ = cls  # type: ignore[attr-defined]  # for inspect.signature
    return build


def _fields(cls: Any) -> list[dataclasses.Field[Any]]:
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen dataclass with slots")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__")
    fields = list(dataclasses.fields(cls))
    if not all(f.init for f in fields):  # the dataclass's own __init__ sets those
        raise TypeError(f"{cls.__name__} has a field with init=False")
    if any(f.default_factory is not dataclasses.MISSING for f in fields):
        raise TypeError(f"{cls.__name__} has a field with a default factory")
    return fields


def _stub() -> CodeType:
    def stub(*args: Any, **kwargs: Any) -> Any:
        return _first(*args, **kwargs)  # type: ignore[name-defined]  # noqa: F821

    return stub.__code__


_STUB = _stub()
"""A function's first code: `_first` (in its own globals) writes the real code over it."""

_WRITING = threading.RLock()
"""Held while a record function writes its code (a first call may build another record)."""


def _written_at_first_call(
    cls: Any, fields: list[dataclasses.Field[Any]], source: Callable[[_Parts], str], **names: Any
) -> FunctionType:
    """A function that, when first called, writes its code from `source` (a function
    named `written` over the names of `_Parts.scope` and `names`), takes that code as
    its own and runs it; later calls run it directly."""
    scope: dict[str, Any] = {"__builtins__": builtins, **names}
    function = FunctionType(_STUB, scope)

    def first(*args: Any, **kwargs: Any) -> Any:
        with _WRITING:  # two first calls at once (threads): the code is written once
            if function.__code__ is _STUB:
                parts = _Parts(cls, fields)
                scope.update(parts.scope)
                exec(compile(source(parts), f"<records {cls.__qualname__}>", "exec"), scope)
                written = scope.pop("written")
                # Defaults first: a call from another thread meanwhile runs the stub
                # (which ignores them) or the new code with them, never the new code
                # without.
                function.__defaults__ = written.__defaults__
                function.__kwdefaults__ = written.__kwdefaults__
                function.__code__ = written.__code__
        return function(*args, **kwargs)

    scope["_first"] = first
    return function


class _Parts:
    """What both kinds of function are made of: the twin, the parameters, the stores."""

    def __init__(self, cls: Any, fields: list[dataclasses.Field[Any]]) -> None:
        twin = type(
            f"_Open{cls.__name__}",
            (cls,),
            {
                "__slots__": (),
                "__setattr__": object.__setattr__,
                "__delattr__": object.__delattr__,
                "__module__": cls.__module__,
            },
        )
        self.scope: dict[str, Any] = {
            "_become": object.__setattr__,
            "_new": object.__new__,
            "_twin": twin,
            "_cls": cls,
        }
        positional: list[str] = []
        keyword: list[str] = []
        for f in fields:
            if f.default is dataclasses.MISSING:
                parameter = f.name
            else:
                self.scope[f"_default_{f.name}"] = f.default
                parameter = f"{f.name}=_default_{f.name}"
            (keyword if f.kw_only else positional).append(parameter)
        self.signature = ", ".join([*positional, *(["*", *keyword] if keyword else [])])
        self.stores = "".join(f"    self.{f.name} = {f.name}\n" for f in fields)
