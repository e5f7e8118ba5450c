"""Sensitive fields: the one place that decides what a shown value looks like.

A field declared `secret` in a `.agent` file (`api_key: string secret`) is generated as
`Annotated[str, SECRET]`. The log stores its value (the reducer and the tools need it);
everything that *shows* a value to a person or to the model shows `REDACTED` in its place:
`ThreadView.to_json`, `show` and its `--json` log, notices (stderr, webhook, Slack, email),
the context window and the `events` a prompt reads, and any template that prints a record
whole. A template that names the field itself (`{{ input.api_key }}`, `{{ api_key }}` in an
`ask`) is asking for it explicitly and gets the value (docs/language.md, "Secret fields").

Every new place that shows a value (the HTTP server's views, the inbox, Slack messages,
OpenTelemetry span attributes) calls `shown_value` on it: a value that goes out any other
way is a leak.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo


class Secret:
    """The marker of a secret field: `Annotated[str, SECRET]` (pydantic keeps it in
    `FieldInfo.metadata`; it changes neither validation nor the JSON schema)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "SECRET"


SECRET = Secret()
REDACTED = "[secret]"
"""What a secret field's value reads as wherever it is shown (a null stays null)."""


def is_secret(info: FieldInfo) -> bool:
    """Whether a pydantic field was declared `secret`."""
    return any(isinstance(item, Secret) for item in info.metadata)


def secret_fields(cls: type[BaseModel]) -> frozenset[str]:
    """The `.agent` names (aliases where Python renamed a field) of `cls`'s secret fields."""
    return frozenset(
        info.alias or name for name, info in cls.model_fields.items() if is_secret(info)
    )


def has_secrets(value: Any) -> bool:
    """Whether `value` (a record, or lists/maps of them) holds any secret field at all."""
    if isinstance(value, BaseModel):
        return any(
            is_secret(info) or has_secrets(getattr(value, name))
            for name, info in type(value).model_fields.items()
        )
    if isinstance(value, Mapping):
        return any(has_secrets(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_secrets(v) for v in value)
    return False


def shown_value(value: Any) -> Any:
    """`value` as plain JSON data for showing: records become dicts under their `.agent`
    field names, with every secret field's value (at any depth) replaced by `REDACTED`.

    Values that are not records pass through (lists and maps are walked). A null secret
    stays null: that a field is missing is not a secret.
    """
    if isinstance(value, BaseModel):
        shown: dict[str, Any] = {}
        for name, info in type(value).model_fields.items():
            item = getattr(value, name)
            key = info.alias or name
            if is_secret(info) and item is not None:
                shown[key] = REDACTED
            else:
                shown[key] = shown_value(item)
        return shown
    if isinstance(value, Mapping):
        return {str(k): shown_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [shown_value(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    # Anything else pydantic knows how to dump (dates, enums) as it would dump it.
    return _dumped(value)


def secret_values(value: Any) -> set[str]:
    """The values of the secret fields in `value` (a record, or lists/maps of them, at
    any depth): what `without_secrets` takes out of a text. Empty strings are left out."""
    found: set[str] = set()
    if isinstance(value, BaseModel):
        for name, info in type(value).model_fields.items():
            item = getattr(value, name)
            if is_secret(info) and isinstance(item, str) and item:
                found.add(item)
            elif not isinstance(item, bool | int | float | str) and item is not None:
                found |= secret_values(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            found |= secret_values(item)
    elif isinstance(value, list | tuple):
        for item in value:
            found |= secret_values(item)
    return found


def without_secrets(text: str, secrets: set[str] | frozenset[str]) -> str:
    """`text` with every one of `secrets` replaced by `REDACTED`, longest first (so a
    secret that contains another is taken out whole). Only exact copies are found: a
    secret the text holds encoded, cut or changed in case is not."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def _shown_location(model: type[BaseModel] | None, location: Sequence[Any]) -> list[Any]:
    """`location` (pydantic's `loc`) cut just below the first secret field on its way. A
    step the walk cannot follow (a union, a key it does not know) ends it there too when
    a secret may lie below, so nothing under a secret is shown by mistake."""
    if model is None:
        return list(location)
    shown: list[Any] = []
    current: Any = model
    for part in location:
        shown.append(part)
        current = _unwrapped(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = _field_named(current, part)
            if info is None:
                return shown if not _may_hold_secret(current) else shown[:-1]
            if is_secret(info):
                return shown
            current = info.annotation
            continue
        args = typing.get_args(current)
        origin = typing.get_origin(current)
        if origin in (list, tuple, set, frozenset) and args:
            current = args[0]
        elif origin is dict and len(args) == 2:
            current = args[1]
        elif _may_hold_secret(current):
            return shown[:-1]
        else:
            return [*shown, *location[len(shown) :]]
    return shown


def _may_hold_secret(annotation: Any, seen: frozenset[type] = frozenset()) -> bool:
    """Whether a type may hold a secret field anywhere below it (records, lists, maps,
    unions of them). A record already on the way down adds nothing new: recursive types
    (`Node { children: list[Node] }`) end there."""
    annotation = _unwrapped(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in seen:
            return False
        below = seen | {annotation}
        return any(
            is_secret(info) or _may_hold_secret(info.annotation, below)
            for info in annotation.model_fields.values()
        )
    return any(_may_hold_secret(arg, seen) for arg in typing.get_args(annotation))


def _unwrapped(annotation: Any) -> Any:
    """`annotation` without `Annotated[...]` and `X | None` wrappers."""
    while True:
        if typing.get_origin(annotation) is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
        if union and len(args) == 1:
            annotation = args[0]
            continue
        return annotation


def _field_named(model: type[BaseModel], part: Any) -> FieldInfo | None:
    for name, info in model.model_fields.items():
        if part in (name, info.alias):
            return info
    return None


def _dumped(value: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(type(value)).dump_python(value, mode="json")


__all__ = [
    "REDACTED",
    "SECRET",
    "Secret",
    "has_secrets",
    "is_secret",
    "secret_fields",
    "shown_value",
]


def validation_problems(
    exc: ValidationError,
    *,
    limit: int = 5,
    whole: str = "value",
    model: type[BaseModel] | None = None,
) -> str:
    """What went wrong in a pydantic `ValidationError`, for a person to read: up to
    `limit` problems as `field.path: message`, joined by `; ` (`whole` names a problem of
    the value itself). The offending input is never echoed: pydantic's own text
    (`str(exc)`) quotes it (`input_value='…'`), and it may be a secret field's value.
    Given the `model` that was validated, a path stops at a secret field: below it the
    path holds the secret's own data (a secret map's keys)."""
    problems = [
        f"{'.'.join(map(str, _shown_location(model, error['loc']))) or whole}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)[:limit]
    ]
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")
