"""JSON request bodies, read strictly: an object that gives a key twice is refused.

RFC 8259 leaves a repeated key's meaning open, and readers disagree: Python's json keeps
the last value, many proxies, audit logs and other languages' parsers the first. A body
`{"decision": "reject", …, "decision": "approve"}` would be an approval here and a
rejection in the log of whatever relayed it. So no reader here picks: `loads` refuses the
body, naming the key and where it is (`RepeatedKey`, answered 422 by problems.py).

`StrictJSONRoute` is the route class of the API's router: FastAPI parses each JSON body
through `StrictJSONRequest.json`, so every route that takes JSON reads it this way,
whatever its model. The Slack routes read their JSON with `loads` too."""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

_SHOWN_KEY = 200
"""The longest key a refusal quotes in full (a key may be most of a 1 MiB body)."""


class RepeatedKey(HTTPException):
    """A JSON object gave `key` twice; `where` is the path to that object (keys and list
    indexes, from the top). An HTTPException, so FastAPI's body reading lets it through
    as it is (any other error there becomes its own 400); problems.py answers it 422."""

    def __init__(self, key: str, where: tuple[str, ...]) -> None:
        self.key = key
        self.where = where
        shown = key if len(key) <= _SHOWN_KEY else key[:_SHOWN_KEY] + "…"
        self.message = (
            f"the key `{shown}` is given twice in one object; give each key once (readers"
            " disagree on which of the two counts)"
        )
        super().__init__(422, self.message)


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


def loads(text: str | bytes) -> Any:
    """`json.loads(text)`, refusing an object that gives a key twice, at any depth
    (`RepeatedKey`). Invalid JSON raises json's own errors, as `json.loads` does.

    Bytes are read as UTF-8 and nothing else (`UnicodeDecodeError`): JSON exchanged
    between systems is UTF-8 (RFC 8259, section 8.1). `json.loads` would also take UTF-16
    and UTF-32, which a proxy or audit log reading UTF-8 sees as something else, and a
    byte order mark, which the RFC says not to send (the text is then refused by json)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        return json.loads(text, object_pairs_hook=_refusing)
    except _Repeated as first:
        # Parsed again to say where: only a refused body pays for it.
        found = _first_repeated(json.loads(text, object_pairs_hook=_marking))
        where, key = found if found is not None else ((), first.key)
        raise RepeatedKey(key, where) from None


class StrictJSONRequest(Request):
    """A request whose JSON body is read with `loads`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            if body.startswith(codecs.BOM_UTF8):
                raise HTTPException(
                    400, "the body starts with a byte order mark: send JSON without one "
                    "(RFC 8259, section 8.1)",
                )  # fmt: skip
            try:
                # A NUL byte is UTF-8, but never in JSON text: UTF-16 or UTF-32 of ASCII.
                if (nul := body.find(b"\0")) >= 0:
                    raise UnicodeDecodeError("utf-8", body, nul, nul + 1, "a NUL byte")
                self._json = loads(body)
            except UnicodeDecodeError as exc:
                raise HTTPException(
                    400,
                    f"the body is not UTF-8 (byte {exc.start} of {len(body)}): JSON between "
                    "systems is UTF-8, whatever the Content-Type's charset says (RFC 8259, "
                    "section 8.1)",
                ) from None
        return self._json


class StrictJSONRoute(APIRoute):
    """A route whose JSON body is read with `loads` (FastAPI's body reading calls the
    request's `json()`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict
