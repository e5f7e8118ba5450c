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
import reprlib
import threading
from collections.abc import Callable
from types import CodeType, FunctionType
from typing import Any, ParamSpec, TypeVar, dataclass_transform, overload

T = TypeVar("T")
P = ParamSpec("P")


def quick_init(cls: type[T]) -> type[T]:
    """Give `cls`, a frozen dataclass with slots and no `__post_init__` nor default
    factories, the cheaper `__init__` (same parameters, defaults and errors). Returns
    `cls`; raises `TypeError` for a class it does not fit. A `record` has it already."""
    if _is_record(cls):
        return cls
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
    frozen = params is not None and (params.frozen or _is_record(cls))
    if not frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen dataclass with slots")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__")
    fields = list(dataclasses.fields(cls))
    if not all(f.init for f in fields):  # the dataclass's own __init__ sets those
        raise TypeError(f"{cls.__name__} has a field with init=False")
    if any(f.default_factory is not dataclasses.MISSING for f in fields):
        raise TypeError(f"{cls.__name__} has a field with a default factory")
    return fields


def _is_record(cls: Any) -> bool:
    return cls.__dict__.get("__setattr__") is _refuse_assignment


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

    def write() -> tuple[str, dict[str, Any]]:
        parts = _Parts(cls, fields)
        return source(parts), {**names, **parts.scope}

    return _lazy_function(cls.__qualname__, write)


def _lazy_function(label: str, write: Callable[[], tuple[str, dict[str, Any]]]) -> FunctionType:
    """A function that, when first called, calls `write` for its source (defining a
    function named `written`) and the names that source uses, takes that code as its own
    and runs it; later calls run it directly."""
    scope: dict[str, Any] = {"__builtins__": builtins}
    function = FunctionType(_STUB, scope)

    def first(*args: Any, **kwargs: Any) -> Any:
        with _WRITING:  # two first calls at once (threads): the code is written once
            if function.__code__ is _STUB:
                text, names = write()
                scope.update(names)
                exec(compile(text, f"<records {label}>", "exec"), scope)
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
    """What the functions that build a record are made of: the twin, the parameters, and
    the statements that store the fields (on the twin, or with `object.__setattr__`)."""

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
            "_set": object.__setattr__,
            "_new": object.__new__,
            "_twin": twin,
            "_cls": cls,
            "_FACTORY": _FACTORY,
        }
        positional: list[str] = []
        keyword: list[str] = []
        values: list[tuple[str, str]] = []
        for f in fields:
            factory = f.default_factory is not dataclasses.MISSING
            if factory:
                self.scope[f"_factory_{f.name}"] = f.default_factory
            elif f.default is not dataclasses.MISSING:
                self.scope[f"_default_{f.name}"] = f.default
            if not f.init:  # set as the dataclass's own `__init__` sets it, or not at all
                if factory:
                    values.append((f.name, f"_factory_{f.name}()"))
                elif f.default is not dataclasses.MISSING:
                    values.append((f.name, f"_default_{f.name}"))
                continue
            if factory:
                parameter = f"{f.name}=_FACTORY"
                value = f"_factory_{f.name}() if {f.name} is _FACTORY else {f.name}"
            elif f.default is not dataclasses.MISSING:
                parameter, value = f"{f.name}=_default_{f.name}", f.name
            else:
                parameter, value = f.name, f.name
            (keyword if f.kw_only else positional).append(parameter)
            values.append((f.name, value))
        self.signature = ", ".join([*positional, *(["*", *keyword] if keyword else [])])
        self.stores = "".join(f"    self.{name} = {value}\n" for name, value in values)
        self.sets = "".join(f"    _set(self, {name!r}, {value})\n" for name, value in values)


_FACTORY: Any = dataclasses._HAS_DEFAULT_FACTORY  # type: ignore[attr-defined]
"""The default of a parameter whose field has a default factory (as in dataclasses)."""


# ---- records: frozen dataclasses that are cheap to declare -----------------------------


@overload
def record(cls: type[T], /) -> type[T]: ...


@overload
def record(*, slots: bool = False, kw_only: bool = False) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, dataclasses.Field))
def record(
    cls: type[T] | None = None, /, *, slots: bool = False, kw_only: bool = False
) -> type[T] | Callable[[type[T]], type[T]]:
    """Declare `cls` a frozen dataclass (with `slots`, fields keyword-only when `kw_only`)
    that costs a tenth of `@dataclass(frozen=True)` to declare.

    In Python 3.11 a frozen dataclass compiles six methods when its class is declared
    (`__init__`, `__repr__`, `__eq__`, `__hash__`, `__setattr__`, `__delattr__`), about
    0.4 ms of CPU per class; the runtime declares about sixty, and every import of an
    agent paid for them. A record is declared as a dataclass that compiles none: the
    refusing `__setattr__` and `__delattr__`, `__repr__` and pickling are shared
    functions, and `__init__` (the cheaper one of `quick_init`), `__eq__` and `__hash__`
    are written for the class at their first call.

    What a frozen dataclass does, a record does: `dataclasses.fields`, `replace`,
    `asdict`, equality and hashing over the fields (`compare`, `hash`), `repr`, pickling
    and copying, `match` (`__match_args__`), `__post_init__`, defaults and default
    factories, `init=False` fields; assigning or deleting a field raises
    `FrozenInstanceError`. What differs: `__dataclass_params__.frozen` is False (the
    dataclass machinery did not make it frozen), so a subclass is declared with
    `@record` too (`@dataclass(frozen=True)` refuses a base it does not see as frozen).
    Raises `TypeError` as the dataclass would for a field without a default after one
    with a default."""

    def declare(cls: type[T]) -> type[T]:
        if cls.__dict__.get("__doc__") is None:
            cls.__doc__ = "-"  # else the dataclass makes one from inspect.signature (slow)
            documented = False
        else:
            documented = True
        made: Any = dataclasses.dataclass(
            cls, init=False, repr=False, eq=False, slots=slots, kw_only=kw_only
        )
        fields = list(dataclasses.fields(made))
        _check_defaults(made, fields)
        if not documented:
            made.__doc__ = f"{made.__name__}({', '.join(f.name for f in fields if f.init)})"
        made.__setattr__ = _refuse_assignment
        made.__delattr__ = _refuse_deletion
        made.__repr__ = _fields_repr
        if slots:  # as a frozen dataclass with slots pickles (a slot cannot be set as usual)
            made.__getstate__ = _fields_state
            made.__setstate__ = _set_fields_state
        made.__init__ = _record_init(made, fields)
        compared = [f.name for f in fields if f.compare]
        hashed = [f.name for f in fields if (f.compare if f.hash is None else f.hash)]
        made.__eq__ = _method(made, "__eq__", _eq_source(compared))
        made.__hash__ = _method(made, "__hash__", _hash_source(hashed))
        return made  # type: ignore[no-any-return]

    return declare if cls is None else declare(cls)


def _check_defaults(cls: Any, fields: list[dataclasses.Field[Any]]) -> None:
    seen_default = False
    for f in fields:
        if not f.init or f.kw_only:
            continue
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            seen_default = True
        elif seen_default:
            raise TypeError(f"non-default argument {f.name!r} follows default argument")


def _refuse_assignment(self: Any, name: str, value: Any) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _refuse_deletion(self: Any, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


@reprlib.recursive_repr()
def _fields_repr(self: Any) -> str:
    shown = ", ".join(
        f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self) if f.repr
    )
    return f"{self.__class__.__qualname__}({shown})"


def _fields_state(self: Any) -> list[Any]:
    return [getattr(self, f.name) for f in dataclasses.fields(self)]


def _set_fields_state(self: Any, state: list[Any]) -> None:
    for f, value in zip(dataclasses.fields(self), state, strict=False):
        object.__setattr__(self, f.name, value)


def _record_init(cls: Any, fields: list[dataclasses.Field[Any]]) -> FunctionType:
    post_init = "    self.__post_init__()\n" if hasattr(cls, "__post_init__") else ""

    def source(parts: _Parts) -> str:
        return (
            f"def written(self, {parts.signature}):\n"
            "    if self.__class__ is _cls:\n"
            "        _become(self, '__class__', _twin)\n"
            + "".join(f"    {line}\n" for line in parts.stores.splitlines())
            + "        self.__class__ = _cls\n"
            "    else:  # a subclass that is not a record itself: its layout may differ\n"
            + "".join(f"    {line}\n" for line in parts.sets.splitlines())
            + "        pass\n"
            + post_init
        )

    return _named(cls, "__init__", _written_at_first_call(cls, fields, source))


def _eq_source(names: list[str]) -> str:
    mine = "".join(f"self.{name}," for name in names)
    theirs = "".join(f"other.{name}," for name in names)
    return (
        "def written(self, other):\n"
        "    if other.__class__ is self.__class__:\n"
        f"        return ({mine}) == ({theirs})\n"
        "    return NotImplemented\n"
    )


def _hash_source(names: list[str]) -> str:
    mine = "".join(f"self.{name}," for name in names)
    return f"def written(self):\n    return hash(({mine}))\n"


def _method(cls: Any, name: str, text: str) -> FunctionType:
    return _named(cls, name, _lazy_function(f"{cls.__qualname__}.{name}", lambda: (text, {})))


def _named(cls: Any, name: str, function: FunctionType) -> FunctionType:
    function.__name__ = name
    function.__qualname__ = f"{cls.__qualname__}.{name}"
    function.__module__ = cls.__module__
    return function
