"""A cheaper `__init__` for the frozen dataclasses every step creates.

A frozen dataclass's generated `__init__` stores each field with `object.__setattr__`
(its own `__setattr__` refuses every assignment), a call per field: a 16-field `State`
cost about 2 µs to build, and each step builds several states, events and actions.
`quick_init` gives such a class an `__init__` that first turns the new instance into an
*open twin* (the same slots, a subclass with the ordinary `__setattr__`), stores the
fields with plain attribute assignments, then turns it back: two class assignments
instead of one call per field, a third to a half of the cost (docs/benchmarks.md).

Nothing else changes: the class is still the frozen dataclass it was declared as
(fields, `dataclasses.replace`, equality, hashing, repr, pickling, `match`), an instance
can never be seen half-built or in its twin's class (nobody else holds it before
`__init__` returns), and assigning to it afterwards raises `FrozenInstanceError` as
before. A subclass that does not declare its own dataclass `__init__` is built by the
original one (its layout may differ from the twin's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")


def quick_init(cls: type[T]) -> type[T]:
    """Give `cls`, a frozen dataclass with slots and no `__post_init__` nor default
    factories, the cheaper `__init__` (same parameters, defaults and errors). Returns
    `cls`; raises `TypeError` for a class it does not fit."""
    parts = _Parts(cls)
    parts.scope["_frozen_init"] = cls.__init__
    forwarded = ", ".join(
        ["self", *(f"{f.name}={f.name}" if f.kw_only else f.name for f in parts.fields)]
    )
    init = parts.define(
        f"def __init__(self, {parts.signature}):\n"
        "    if self.__class__ is not _cls:  # a subclass: its layout may differ\n"
        f"        return _frozen_init({forwarded})\n"
        "    _become(self, '__class__', _twin)\n"
        f"{parts.stores}"
        "    self.__class__ = _cls\n"
    )
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    setattr(cls, "__init__", init)  # noqa: B010 (mypy refuses to assign a method)
    return cls


def builder(cls: Callable[P, T]) -> Callable[P, T]:
    """A plain function that builds `cls` (a class `quick_init` fits) from the same
    arguments, for the few objects every step builds: calling a class passes keyword
    arguments to `__init__` through a new dict, calling a function does not (half the
    cost of a 10-argument `State`)."""
    parts = _Parts(cls)
    build: Callable[P, T] = parts.define(
        f"def build({parts.signature}):\n"
        "    self = _new(_twin)\n"
        f"{parts.stores}"
        "    self.__class__ = _cls\n"
        "    return self\n"
    )
    build.__qualname__ = build.__name__ = f"build_{getattr(cls, '__name__', 'record')}"
    return build


class _Parts:
    """What both functions are made of: the twin, the parameters, the stores."""

    def __init__(self, cls: Any) -> None:
        params = getattr(cls, "__dataclass_params__", None)
        if params is None or not params.frozen or "__slots__" not in cls.__dict__:
            raise TypeError(f"{cls.__name__} is not a frozen dataclass with slots")
        if hasattr(cls, "__post_init__"):
            raise TypeError(f"{cls.__name__} has a __post_init__")
        self.fields = [f for f in dataclasses.fields(cls) if f.init]
        if any(f.default_factory is not dataclasses.MISSING for f in self.fields):
            raise TypeError(f"{cls.__name__} has a field with a default factory")
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
        self.name = cls.__qualname__
        self.scope: dict[str, Any] = {
            "_become": object.__setattr__,
            "_new": object.__new__,
            "_twin": twin,
            "_cls": cls,
        }
        positional: list[str] = []
        keyword: list[str] = []
        for f in self.fields:
            if f.default is dataclasses.MISSING:
                parameter = f.name
            else:
                self.scope[f"_default_{f.name}"] = f.default
                parameter = f"{f.name}=_default_{f.name}"
            (keyword if f.kw_only else positional).append(parameter)
        self.signature = ", ".join([*positional, *(["*", *keyword] if keyword else [])])
        self.stores = "".join(f"    self.{f.name} = {f.name}\n" for f in self.fields)

    def define(self, source: str) -> Any:
        scope = dict(self.scope)
        exec(compile(source, f"<records {self.name}>", "exec"), scope)
        return scope[source[4 : source.index("(")]]
