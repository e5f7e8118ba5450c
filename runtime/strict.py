"""The one rule for a value handed to the runtime from outside: a model's output, a
launch's input, an outside event, a cassette's recorded output. Nothing is converted from
another type, and JSON that gives a key twice, or has a key holding a lone surrogate, is
not read (docs/runtime.md, "Values from outside are taken as they are")."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .jsonkeys import refuse_repeated_keys
from .records import record

__all__ = ["ParsedJson", "strictly"]


@record(slots=True)
class ParsedJson:
    """A value already parsed from JSON (a field of an HTTP request's body): validated as
    the JSON it came from, so a string in it is a string, never JSON text to read again
    (`"input": "7"` is no `int`)."""

    value: Any


def strictly(declared: type[Any], value: Any) -> Any:
    """`value` as `declared` (a declared type, or `int`, `float`, `bool`) by the rule a
    model's output is held to (runtime/model.py: instructor validates the reply's JSON
    with `strict=True`): nothing is converted, so `true`, `"1"` and `1.0` are no `int`
    and `"1.5"` no `float` (an `int` is a `float`, as in JSON).

    JSON text (`str`, `bytes`) is validated as JSON, and refused (`RepeatedKey`, from
    runtime/jsonkeys.py) when an object in it gives a key twice, at any depth: pydantic
    would keep the last value, where other readers of the same text keep the first; and
    (`LoneSurrogateKey`) when a key in it holds a lone surrogate (`{"\\ud800": 1}`),
    which pydantic's reader refuses as a problem of the whole value.
    Data (a `ParsedJson`'s, a dict, a model instance, a number) is validated in
    pydantic's strict Python mode, which for every field type a `.agent` file declares
    (strings, numbers, booleans, string enums, lists, maps with string keys, records,
    optionals; no dates, bytes or enum classes, where the two modes differ) takes
    exactly what strict JSON validation takes: tests/test_strict_inputs.py holds JSON
    text, data and the model's output to one table. Raises pydantic's
    `ValidationError`, `RepeatedKey` or `LoneSurrogateKey`."""
    if isinstance(value, ParsedJson):
        value = value.value  # data: a string in it is never read as JSON text
    elif isinstance(value, str | bytes):
        refuse_repeated_keys(value)
        if issubclass(declared, BaseModel):
            return declared.model_validate_json(value, strict=True)
        return _scalar_adapter(declared).validate_json(value, strict=True)
    if issubclass(declared, BaseModel):
        return declared.model_validate(value, strict=True)
    return _scalar_adapter(declared).validate_python(value, strict=True)


_ADAPTERS: dict[type[Any], Any] = {}


def _scalar_adapter(declared: type[Any]) -> Any:
    """pydantic's validator of `int`, `float` or `bool`, built once (made on first use:
    importing the runtime stays cheap)."""
    adapter = _ADAPTERS.get(declared)
    if adapter is None:
        from pydantic import TypeAdapter

        adapter = _ADAPTERS[declared] = TypeAdapter(declared)
    return adapter
