"""JSON from outside, read strictly: an object that gives a key twice is refused.

RFC 8259 leaves a repeated key's meaning open, and readers disagree: Python's json and
pydantic keep the last value, many proxies, audit logs and other languages' parsers the
first. `{"amount_cents": 100, "amount_cents": 1}` would be a charge of one cent here and
of a dollar in the log of whatever relayed it. So no reader here picks: JSON a person or
a program hands in (a launch's input, an outside event's value, an HTTP body, a cassette,
an event log given to `graph --events`) is refused, naming the key and where it is
(`RepeatedKey`). docs/runtime.md, "Values from outside are taken as they are".

`loads` is the reader for JSON whose data is wanted (the HTTP server's bodies);
`refuse_repeated_keys` checks text that pydantic then reads and validates (the CLI's
`--input` and `send` value, a cassette's lines), so pydantic's own messages for text
that is not JSON stay as they were. Python's json reads everything pydantic's parser
reads (and more: `NaN`, a lone surrogate escape, UTF-16 bytes), so no text pydantic
takes passes unchecked."""

from __future__ import annotations

from typing import Any

__all__ = ["RepeatedKey", "loads", "refuse_repeated_keys"]

_SHOWN_KEY = 200
"""The longest key a refusal quotes in full (a key may be most of a 1 MiB body)."""


class RepeatedKey(ValueError):
    """A JSON object gave `key` twice; `where` is the path to that object (keys and list
    indexes, from the top; empty for the top object). `message` says so without the
    path; `str()` is the path to the key, `: ` and the message
    (`lines.1.sku: the key ...`), the shape of a validation problem.

    A `ValueError`, as any other JSON that cannot be read: code that reports one names
    the key."""

    def __init__(self, key: str, where: tuple[str, ...]) -> None:
        self.key = key
        self.where = where
        shown = key if len(key) <= _SHOWN_KEY else key[:_SHOWN_KEY] + "…"
        self.message = (
            f"the key `{shown}` is given twice in one object; give each key once (readers"
            " disagree on which of the two counts)"
        )
        path = ".".join(
            part if len(part) <= _SHOWN_KEY else part[:_SHOWN_KEY] + "…" for part in (*where, key)
        )
        super().__init__(f"{path}: {self.message}")


class _Repeated(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _refusing(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's `object_pairs_hook`: the object, or _Repeated at its first repeated key."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _Repeated(key)
        found[key] = value
    return found


class _Marked(dict[str, Any]):
    """An object as `_marking` builds it: `repeated` is its first repeated key, if any."""

    repeated: str | None = None


def _marking(pairs: list[tuple[str, Any]]) -> _Marked:
    found = _Marked()
    for key, value in pairs:
        if key in found and found.repeated is None:
            found.repeated = key
        found[key] = value
    return found


def _first_repeated(value: Any) -> tuple[tuple[str, ...], str] | None:
    """The path to the first object (in the document's order) that repeats a key, and
    the key. A loop, not recursion: the value may be nested as deep as json allows."""
    stack: list[tuple[tuple[str, ...], Any]] = [((), value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, _Marked):
            if item.repeated is not None:
                return where, item.repeated
            children = [((*where, key), inner) for key, inner in item.items()]
        elif isinstance(item, list):
            children = [((*where, str(index)), inner) for index, inner in enumerate(item)]
        else:
            continue
        stack.extend(reversed(children))
    return None


def _read(text: str | bytes, hook: Any, keys_only: bool) -> Any:
    """Bytes are read as UTF-8 and nothing else (`UnicodeDecodeError`): JSON exchanged
    between systems is UTF-8 (RFC 8259, section 8.1). `json.loads` would also take UTF-16
    and UTF-32, which a proxy or audit log reading UTF-8 sees as something else, and a
    byte order mark, which the RFC says not to send (then refused by json as text)."""
    import json  # here: importing the runtime loads no json (tests/test_runtime_imports.py)

    if isinstance(text, bytes):
        text = text.decode("utf-8")

    if keys_only:  # numbers are not converted: see `refuse_repeated_keys`
        return json.loads(
            text, object_pairs_hook=hook, parse_int=_nothing, parse_float=_nothing,
            parse_constant=_nothing,
        )  # fmt: skip
    return json.loads(text, object_pairs_hook=hook)


def _nothing(_: str) -> None:
    return None


def _located(text: str | bytes, first: _Repeated, keys_only: bool) -> RepeatedKey:
    # Parsed again to say where: only refused text pays for it.
    found = _first_repeated(_read(text, _marking, keys_only))
    where, key = found if found is not None else ((), first.key)
    return RepeatedKey(key, where)


def loads(text: str | bytes) -> Any:
    """`json.loads(text)`, refusing an object that gives a key twice, at any depth
    (`RepeatedKey`). Text that is not JSON raises json's own errors (`ValueError`), and
    JSON nested past Python's stack `RecursionError`, as `json.loads` does."""
    try:
        return _read(text, _refusing, keys_only=False)
    except _Repeated as first:
        raise _located(text, first, keys_only=False) from None


def refuse_repeated_keys(text: str | bytes) -> None:
    """`RepeatedKey` when `text` is JSON with an object that gives a key twice, at any
    depth; nothing otherwise. Text that is not JSON (or nests past Python's stack, far
    past what pydantic reads) passes: the reader that follows says what is wrong with it.

    Only keys are read: no number is converted, which costs nothing and leaves no limit
    to stop the check (Python's `int` refuses 4300 digits and more)."""
    try:
        _read(text, _refusing, keys_only=True)
    except _Repeated as first:
        raise _located(text, first, keys_only=True) from None
    except (ValueError, RecursionError):
        return
