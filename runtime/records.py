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
from typing import Any, TypeVar

T = TypeVar("T")


def quick_init(cls: type[T]) -> type[T]:
    """Give `cls`, a frozen dataclass with slots and no `__post_init__` nor default
    factories, the cheaper `__init__` (same parameters, defaults and errors). Returns
    `cls`; raises `TypeError` for a class it does not fit."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen dataclass with slots")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__")
    fields = [f for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    if any(f.default_factory is not dataclasses.MISSING for f in fields):
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
    scope: dict[str, Any] = {
        "_become": object.__setattr__,
        "_twin": twin,
        "_cls": cls,
        "_frozen_init": cls.__init__,
    }
    positional: list[str] = []
    keyword: list[str] = []
    for f in fields:
        if f.default is dataclasses.MISSING:
            parameter = f.name
        else:
            scope[f"_default_{f.name}"] = f.default
            parameter = f"{f.name}=_default_{f.name}"
        (keyword if f.kw_only else positional).append(parameter)
    signature = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    forwarded = ", ".join(
        ["self", *(f"{f.name}={f.name}" if f.kw_only else f.name for f in fields)]
    )
    stores = "".join(f"    self.{f.name} = {f.name}\n" for f in fields)
    source = (
        f"def __init__({signature}):\n"
        "    if self.__class__ is not _cls:  # a subclass: its layout may differ\n"
        f"        return _frozen_init({forwarded})\n"
        "    _become(self, '__class__', _twin)\n"
        f"{stores}"
        "    self.__class__ = _cls\n"
    )
    exec(compile(source, f"<quick_init {cls.__qualname__}>", "exec"), scope)
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    setattr(cls, "__init__", init)  # noqa: B010 (mypy refuses to assign a method)
    return cls
