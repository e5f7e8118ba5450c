"""JSON from outside, read strictly: an object that gives a key twice is refused.

RFC 8259 leaves a repeated key's meaning open, and readers disagree: Python's json and
pydantic keep the last value, many proxies, audit logs and other languages' parsers the
first. `{"amount_cents": 100, "amount_cents": 1}` would be a charge of one cent here and
of a dollar in the log of whatever relayed it. So no reader here picks: JSON a person or
a program hands in (a launch's input, an outside event's value, an HTTP body, a cassette,
an event log given to `graph --events`) is refused, naming the key and where it is
(`RepeatedKey`). docs/runtime.md, "Values from outside are taken as they are".

A key that holds a lone UTF-16 surrogate (`{"\\ud800": 1}`) is refused the same way
(`LoneSurrogateKey`), saying where it is: Python's json reads it, pydantic's reader does
not (it blamed a field named `value`), and no store can hold it (`codec.unstorable`).

`loads` is the reader for JSON whose data is wanted (the HTTP server's bodies);
`refuse_repeated_keys` checks text that pydantic then reads and validates (the CLI's
`--input` and `send` value, a cassette's lines), so pydantic's own messages for text
that is not JSON stay as they were. Python's json reads everything pydantic's parser
reads (and more: `NaN`, a lone surrogate escape, UTF-16 bytes), so no text pydantic
takes passes unchecked."""

from __future__ import annotations

from typing import Any

__all__ = [
    "LoneSurrogateKey",
    "NotUtf8",
    "RepeatedKey",
    "loads",
    "refuse_repeated_keys",
    "utf8_text",
]

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


class LoneSurrogateKey(ValueError):
    """A key of a JSON object holds a lone UTF-16 surrogate (`{"\\ud800": 1}`: JSON text
    Python's json reads, pydantic's reader refuses, and no UTF-8 holds); `where` is the
    path to that object (keys, and list indexes as `int`; empty for the top object).

    `at(place)` says so in the words `codec.unstorable` has for the same value given as
    data (`the input.lines[0] (a key) holds a lone surrogate (\\ud800) at character 0:
    ...`); `message` says it without a place (`a key holds ...`), and `str()` after the
    path as `RepeatedKey` writes it (`lines.0 (a key) holds ...`). The key itself is
    never quoted: it cannot be written as UTF-8."""

    def __init__(self, key: str, where: tuple[str | int, ...]) -> None:
        self.key = key
        self.where = where
        self.message = _surrogate_words(key, "a key")
        path = ".".join(_shown(str(part)) for part in where)
        super().__init__(_surrogate_words(key, f"{path} (a key)") if path else self.message)

    def at(self, place: str) -> str:
        """What is wrong, after `place` (`the input`, `body`) and the path from it."""
        path = "".join(f"[{part}]" if isinstance(part, int) else f".{_shown(part)}"
                       for part in self.where)  # fmt: skip
        return _surrogate_words(self.key, f"{place}{path} (a key)")


def _surrogate_words(key: str, where: str) -> str:
    from .codec import unstorable  # here: only a refusal needs it (the same words)

    said = unstorable(key, where)
    assert said is not None, "a key with a lone surrogate"
    return said


def _shown(part: str) -> str:
    return part if len(part) <= _SHOWN_KEY else part[:_SHOWN_KEY] + "…"


def _lone_surrogate(key: str) -> bool:
    """Whether `key` holds a lone surrogate (ASCII, the usual key, is passed over)."""
    if key.isascii():
        return False
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class NotUtf8(ValueError):
    """JSON bytes that are not UTF-8 text, the one encoding of JSON between systems (RFC
    8259, section 8.1): `start` is the first byte that is not UTF-8 (a NUL byte counts:
    no JSON text holds one, and UTF-16 or UTF-32 of ASCII is full of them), of `size`;
    with `bom`, the bytes are UTF-8 but start with a byte order mark, which the RFC says
    not to send (and which Python's json refuses as text). `of(what)` says so of `what`
    (`the body`, a file's name)."""

    def __init__(self, start: int, size: int, *, bom: bool = False) -> None:
        self.start = start
        self.size = size
        self.bom = bom
        super().__init__(self.of("the text"))

    def of(self, what: str) -> str:
        if self.bom:
            return f"{what} starts with a byte order mark"
        return f"{what} is not UTF-8 (byte {self.start} of {self.size})"


_BOM = b"\xef\xbb\xbf"


def utf8_text(data: bytes) -> str:
    """`data` as text when it is UTF-8, without a byte order mark or a NUL byte;
    `NotUtf8` otherwise. What every reader of JSON bytes from outside holds them to (the
    HTTP server's bodies, a file given to a command): `json.loads` would also take
    UTF-16 and UTF-32, which a proxy or audit log reading UTF-8 sees as something else."""
    if data.startswith(_BOM):
        raise NotUtf8(0, len(data), bom=True)
    nul = data.find(b"\0")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotUtf8(exc.start if nul < 0 else min(nul, exc.start), len(data)) from None
    if nul >= 0:
        raise NotUtf8(nul, len(data))
    return text


class _Refused(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _refusing(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's `object_pairs_hook`: the object, or _Refused at its first repeated key or
    key holding a lone surrogate."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found or _lone_surrogate(key):
            raise _Refused(key)
        found[key] = value
    return found


class _Marked(dict[str, Any]):
    """An object as `_marking` builds it: `refused` is its first key given twice or
    holding a lone surrogate, if any."""

    refused: str | None = None


def _marking(pairs: list[tuple[str, Any]]) -> _Marked:
    found = _Marked()
    for key, value in pairs:
        if found.refused is None and (key in found or _lone_surrogate(key)):
            found.refused = key
        found[key] = value
    return found


def _first_refused(value: Any) -> tuple[tuple[str | int, ...], str] | None:
    """The path to the first object (in the document's order) with a refused key, and
    the key. A loop, not recursion: the value may be nested as deep as json allows."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, _Marked):
            if item.refused is not None:
                return where, item.refused
            children = [((*where, key), inner) for key, inner in item.items()]
        elif isinstance(item, list):
            children = [((*where, index), inner) for index, inner in enumerate(item)]
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


def _located(text: str | bytes, first: _Refused, keys_only: bool) -> RepeatedKey | LoneSurrogateKey:
    # Parsed again to say where: only refused text pays for it.
    found = _first_refused(_read(text, _marking, keys_only))
    where, key = found if found is not None else ((), first.key)
    if _lone_surrogate(key):
        return LoneSurrogateKey(key, where)
    return RepeatedKey(key, tuple(map(str, where)))


def loads(text: str | bytes) -> Any:
    """`json.loads(text)`, refusing an object that gives a key twice (`RepeatedKey`) or
    has a key holding a lone surrogate (`LoneSurrogateKey`), at any depth. Text that is
    not JSON raises json's own errors (`ValueError`), and JSON nested past Python's stack
    `RecursionError`, as `json.loads` does."""
    try:
        return _read(text, _refusing, keys_only=False)
    except _Refused as first:
        raise _located(text, first, keys_only=False) from None


def refuse_repeated_keys(text: str | bytes) -> None:
    """`RepeatedKey` when `text` is JSON with an object that gives a key twice, and
    `LoneSurrogateKey` when one has a key holding a lone surrogate, at any depth; nothing
    otherwise. Text that is not JSON (or nests past Python's stack, far
    past what pydantic reads) passes: the reader that follows says what is wrong with it.

    Only keys are read: no number is converted, which costs nothing and leaves no limit
    to stop the check (Python's `int` refuses 4300 digits and more)."""
    try:
        _read(text, _refusing, keys_only=True)
    except _Refused as first:
        raise _located(text, first, keys_only=True) from None
    except (ValueError, RecursionError):
        return
