"""Lossless JSON for events and states.

An event is stored as one flat JSON object: its `kind`, `step`, `at`, `usage` (when
known) and its payload fields. Typed values (a pydantic model of the agent's, or the
built-in `Answer`) are tagged with their type name, `{"type": "DeployBackend", "value":
{...}}`, so they decode to the same class; plain JSON values (the usual string input)
are written as they are. `decode(encode(x)) == x` for every event and state.

The JSON text itself is written and parsed by pydantic-core (already loaded for the
agent's types): its Rust serializer is five times faster than `json.dumps` on an event
and its parser twice as fast as `json.loads`, and every step pays one of each when
stored in SQLite. The text is compact JSON that `json.loads` reads back to the same
values (NaN and Infinity are written as Python's json module writes them), and text
written by `json.dumps` decodes here too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import fields
from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic_core import from_json, to_json

from .redact import shown_value
from .spec import AgentSpec
from .types import (
    EVENT_KINDS,
    KIND_OF_EVENT,
    Answer,
    ErrorInfo,
    Event,
    State,
    Usage,
)

_BUILT_IN_TYPES: dict[str, type[BaseModel]] = {"Answer": Answer}
_USAGE_FIELDS = tuple(f.name for f in fields(Usage))
# Payload fields by event class, computed once: encoding is on every step's path.
_PAYLOAD: dict[type[Event], tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls) if f.name not in ("step", "at", "usage", "run_trace"))
    for cls in EVENT_KINDS.values()
}


_STRING_TUPLES = frozenset({"channels", "failed"})
"""Payload fields that hold a tuple of plain strings (stored as a JSON list)."""

_OMITTED_WHEN_NONE = frozenset({"trace", "parent", "approval", "held"})
"""Payload fields added after the first release that are left out of the JSON when unset,
so an untraced thread's log is byte for byte what an older runtime wrote."""


_FLAGS = frozenset({"held"})
"""Of those, the ones that hold true or false rather than text."""


class CodecError(ValueError):
    """Stored JSON that does not decode for this agent (an unknown kind or type name)."""


class Codec:
    """Encodes and decodes one agent's events and states; types are looked up by name."""

    def __init__(self, spec: AgentSpec | None = None) -> None:
        declared = dict(spec.types) if spec is not None else {}
        self.types: dict[str, type[BaseModel]] = {**_BUILT_IN_TYPES, **declared}
        self._names: dict[type[BaseModel], str] = {cls: n for n, cls in self.types.items()}

    # ---- values -------------------------------------------------------------------

    def encode_value(self, value: Any, *, redact: bool = False) -> Any:
        """`value` as stored JSON; `redact=True` for showing it (`show --json`): secret
        fields then read as `redact.REDACTED`, and the result is never decoded."""
        if isinstance(value, BaseModel):
            name = self._names.get(type(value), type(value).__name__)
            # by_alias: fields are stored under their .agent names (`from`, not `from_`).
            data = shown_value(value) if redact else value.model_dump(mode="json", by_alias=True)
            return {"type": name, "value": data}
        if isinstance(value, dict):
            # A plain mapping is tagged too, so it cannot be mistaken for a typed value.
            return {"type": None, "value": value}
        if isinstance(value, list | tuple):
            return [self.encode_value(item, redact=redact) for item in value]
        return value

    def decode_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            name = data.get("type")
            if name is None:
                return data["value"]
            cls = self.types.get(name)
            if cls is None:
                raise CodecError(f"unknown type `{name}` (not declared by this agent)")
            return cls.model_validate(data["value"])
        if isinstance(data, list):
            return [self.decode_value(item) for item in data]
        return data

    # ---- events -------------------------------------------------------------------

    def encode_event(self, event: Event, *, redact: bool = False) -> dict[str, Any]:
        """`event` as stored JSON; `redact=True` to show it (see `encode_value`)."""
        data: dict[str, Any] = {"kind": KIND_OF_EVENT[type(event)], "step": event.step}
        if event.at is not None:
            data["at"] = event.at
        if event.usage is not None:
            data["usage"] = _encode_usage(event.usage)
        if event.run_trace is not None:  # (left out when unset, like `trace`)
            data["run_trace"] = event.run_trace
        for name in _PAYLOAD[type(event)]:
            value = getattr(event, name)
            if value is None and name in _OMITTED_WHEN_NONE:
                continue
            if isinstance(value, ErrorInfo):
                data[name] = {"type": value.type, "message": value.message}
            elif isinstance(value, tuple):
                data[name] = list(value)  # Notified.channels and .failed: plain strings
            else:
                data[name] = self.encode_value(value, redact=redact)
        return data

    def decode_event(self, data: Mapping[str, Any]) -> Event:
        kind = data.get("kind")
        cls = EVENT_KINDS.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise CodecError(f"unknown event kind {kind!r}")
        args: dict[str, Any] = {"step": data["step"], "at": data.get("at")}
        _expect(args["step"], str, "step")
        _expect(args["at"], str | None, "at")
        if "usage" in data:
            args["usage"] = Usage(**data["usage"])
            for name in _USAGE_FIELDS:
                _expect(getattr(args["usage"], name), int | float | None, f"usage.{name}")
        if "run_trace" in data:
            args["run_trace"] = data["run_trace"]
            _expect(args["run_trace"], str | None, "run_trace")
        for name in _PAYLOAD[cls]:
            if name not in data:
                continue  # a field left at its default
            value = data[name]
            if name == "error":
                args[name] = ErrorInfo(value["type"], value["message"])
                _expect(args[name].type, str, "error.type")
                _expect(args[name].message, str, "error.message")
            elif name in _STRING_TUPLES:
                args[name] = tuple(value)
            elif name in _OMITTED_WHEN_NONE:
                if name not in _FLAGS:
                    _expect(value, str | None, name)
                elif value is not None:
                    _expect(value, bool, name)
                args[name] = value
            else:
                args[name] = self.decode_value(value)
        return cls(**args)

    def dumps_event(self, event: Event) -> str:
        return to_json(self.encode_event(event), inf_nan_mode="constants").decode()

    def loads_event(self, text: str | bytes) -> Event:
        """One stored event. Anything that is not one (broken JSON, a missing or mistyped
        field: a log edited by hand) is `CodecError`, never another exception."""
        try:
            return self.decode_event(from_json(text))
        except CodecError:
            raise
        except KeyError as exc:
            raise CodecError(f"an event without its `{exc.args[0]}` field") from exc
        except (ValueError, TypeError, AttributeError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise CodecError(f"not an event: {type(exc).__name__}: {detail}") from exc

    # ---- states -------------------------------------------------------------------

    def encode_state(self, state: State) -> dict[str, Any]:
        return {
            "step": state.step,
            "value": self.encode_value(state.value),
            "status": state.status,
            "input": self.encode_value(state.input),
            "steps": state.steps,
            "errors": state.errors,
            "seq": state.seq,
            "error": None
            if state.error is None
            else {"type": state.error.type, "message": state.error.message},
            "tool_key": state.tool_key,
            "notified": state.notified,
            "request": state.request,
            "notices": state.notices,
            "retry_key": state.retry_key,
            "rejections": state.rejections,
            "tokens": state.tokens,
            "cost_usd": state.cost_usd,
        }

    def decode_state(self, data: Mapping[str, Any]) -> State:
        error = data.get("error")
        return State(
            step=data["step"],
            value=self.decode_value(data["value"]),
            status=data["status"],
            input=self.decode_value(data["input"]),
            steps=data["steps"],
            errors=data["errors"],
            seq=data["seq"],
            error=None if error is None else ErrorInfo(error["type"], error["message"]),
            tool_key=data.get("tool_key"),
            notified=data.get("notified", False),
            request=data.get("request"),
            notices=data.get("notices", 0),
            retry_key=data.get("retry_key"),
            rejections=data.get("rejections", 0),
            tokens=data.get("tokens", 0),
            cost_usd=data.get("cost_usd", 0.0),
        )


def _expect(value: Any, kind: Any, field: str) -> None:
    """A stored field has the type the event declares (a hand-edited log may not)."""
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise CodecError(f"an event whose `{field}` is {type(value).__name__}")


def _encode_usage(usage: Usage) -> dict[str, Any]:
    return {n: v for n in _USAGE_FIELDS if (v := getattr(usage, n)) is not None}


_PLAIN = frozenset({float, bool, type(None)})
"""Types whose values every store can hold: nothing in them to look at."""

MAX_INT_DIGITS = 4_300
"""The longest integer a stored event may hold, in decimal digits: the most Python's
`int` (`sys.get_int_max_str_digits`) and pydantic's JSON reader read back."""

_INT_BOUND = 10**MAX_INT_DIGITS

MAX_NESTING = 100
"""The deepest a stored value may nest (models, mappings, lists within one another): the
JSON reader that reads an event back stops at about 200 levels, the event's own
included."""


def unstorable(value: Any, where: str, depth: int = 0) -> str | None:
    """Why `value` cannot be stored, naming the place (`where`, then `.field` or `[i]`):
    a string holding a lone UTF-16 surrogate (`"\\ud800"`: valid JSON text, and a Python
    string from a command line's undecodable bytes, but no UTF-8 has it). None when it
    can. Every free-form value from outside (a launch's input, an event's value, a
    comment, an answer) and every model output and tool result is asked this before it
    is recorded: one refused there is a clear error, never a failed write. (On every
    step's output: plain values and ASCII text, the usual case, are passed over without
    a call or a name made for them.)"""
    kind = type(value)
    if kind is str:
        return None if value.isascii() else _surrogate_in(value, where)
    if kind in _PLAIN:
        return None
    if isinstance(value, BaseModel):  # a step's output or result: first, one test
        if depth >= MAX_NESTING:
            return _too_deep(where)
        extra = value.__pydantic_extra__
        if not extra:
            for item in value.__dict__.values():  # `_unstorable_items`' first test, inline
                kind = type(item)
                if not (
                    kind in _PLAIN
                    or (kind is str and item.isascii())
                    or (kind is int and -_INT_BOUND < item < _INT_BOUND)
                ):
                    break  # one to look into: named by `_unstorable_items` below
            else:
                return None  # plain fields only (a step's usual output): no call made
        fields = value.__dict__.items()
        items = fields if not extra else [*fields, *extra.items()]
        return _unstorable_items(items, where, depth + 1, _FIELD_STEP, _field_names(type(value)))
    if isinstance(value, int):
        return None if -_INT_BOUND < value < _INT_BOUND else _too_long(where)
    if isinstance(value, str):
        return None if value.isascii() else _surrogate_in(value, where)
    if not isinstance(value, Mapping | list | tuple):
        return None
    if depth >= MAX_NESTING:
        return _too_deep(where)
    if isinstance(value, Mapping):
        for key in value:
            if (type(key) is not str or not key.isascii()) and (
                found := unstorable(key, f"{where} (a key)")
            ) is not None:
                return found
        return _unstorable_items(value.items(), where, depth + 1, None)
    return _unstorable_items(enumerate(value), where, depth + 1, _INDEX_STEP)


def _unstorable_items(
    items: Iterable[tuple[Any, Any]],
    where: str,
    depth: int,
    place: str | None,
    names: Mapping[str, str] | None = None,
) -> str | None:
    """`unstorable` of each item, named `where` then `place` with its key or index (a
    model's field by its name in `names` when it has one there; a mapping's key, `place`
    None, by `_key_step`)."""
    for key, item in items:
        kind = type(item)
        if (
            kind in _PLAIN
            or (kind is str and item.isascii())
            or (kind is int and -_INT_BOUND < item < _INT_BOUND)
        ):
            continue
        if place is None:
            step = _key_step(key)
        else:
            step = place.format(names.get(key, key) if names else key)
        if (found := unstorable(item, where + step, depth)) is not None:
            return found
    return None


@lru_cache(maxsize=1024)  # (a server may load many agents' modules in its life)
def _field_names(model: type[BaseModel]) -> Mapping[str, str]:
    """A model's attributes whose field has another name in its JSON, the name its
    .agent file gives it: a field `next` is the attribute `next_` of the generated class
    (compiler/pynames.py), and a message names the field as its author wrote it."""
    return {
        attribute: field.alias
        for attribute, field in model.model_fields.items()
        if field.alias is not None and field.alias != attribute
    }


_LONGEST_PLACE = 80
"""The most characters of a value's place a message shows (a value 101 levels deep is
named by 101 steps): its start and its end, the middle cut out."""

_STEP = "\x00"
"""Starts each step of a place while it is built, so that `_place` cuts between steps:
a key may hold `.`, `[` or `…` itself. No step holds it (a key is written by JSON, which
escapes it; fields are identifiers)."""

_FIELD_STEP = _STEP + ".{}"
_INDEX_STEP = _STEP + "[{}]"
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _key_step(key: object) -> str:
    """A mapping's key as a step of a place: `.name` for a name, else `["JSON"]` (ASCII,
    quoted and escaped, so that no key reads as several steps or as the next words)."""
    if type(key) is str and _PLAIN_KEY.fullmatch(key):
        return f"{_STEP}.{key}"
    import json  # (on the way to a message only: the runtime's import stays lean)

    return f"{_STEP}[{json.dumps(key if isinstance(key, str) else repr(key))}]"


def _place(where: str) -> str:
    """`where` as shown: its steps joined, the middle ones left out (`…`) when it runs
    long (the first steps up to half the length, the last up to a quarter)."""
    root, *steps = where.split(_STEP)
    if len(where) - len(steps) <= _LONGEST_PLACE:
        return "".join((root, *steps))
    kept = 0  # the first steps shown
    size = len(root)
    while kept < len(steps) and size + len(steps[kept]) <= _LONGEST_PLACE // 2:
        size += len(steps[kept])
        kept += 1
    last = len(steps)  # the last steps shown start here (at least one)
    size = 0
    while last > kept and (size == 0 or size + len(steps[last - 1]) <= _LONGEST_PLACE // 4):
        size += len(steps[last - 1])
        last -= 1
    # One step longer than the whole (a key of 100,000 characters) is cut itself.
    tail = (
        s if len(s) <= _LONGEST_PLACE // 2 else s[: _LONGEST_PLACE // 2] + "…" for s in steps[last:]
    )
    return "".join((root, *steps[:kept], "…", *tail))


def _too_deep(where: str) -> str:
    return (
        f"{_place(where)} is nested more than {MAX_NESTING} levels deep: a store could not"
        " read it back"
    )


def _too_long(where: str) -> str:
    return (
        f"{_place(where)} is an integer of more than {MAX_INT_DIGITS:,} digits: a store could not "
        "read it back"
    )


def _surrogate_in(text: str, where: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        character = f"\\u{ord(text[exc.start]):04x}"
        return (
            f"{_place(where)} holds a lone surrogate ({character}) at character {exc.start}:"
            " text must be valid Unicode"
        )
    return None
