"""JSON request bodies, read strictly: an object that gives a key twice, or has a key
holding a lone surrogate, is refused.

RFC 8259 leaves a repeated key's meaning open, and readers disagree: Python's json keeps
the last value, many proxies, audit logs and other languages' parsers the first. A body
`{"decision": "reject", …, "decision": "approve"}` would be an approval here and a
rejection in the log of whatever relayed it. So no reader here picks: `loads` refuses the
body, naming the key and where it is (`RepeatedKey`, answered 422 by problems.py), by
the rule the runtime holds all JSON from outside to (twelvefold/runtime/jsonkeys.py: the
CLI's `--input` and `send` value, cassettes). A key holding a lone surrogate
(`{"\\ud800": 1}`) is refused with the path to its object (`LoneSurrogateKey`): no store
can hold it, and FastAPI's validation would name a field the body does not have.

`StrictJSONRoute` is the route class of the API's router: FastAPI parses each JSON body
through `StrictJSONRequest.json`, so every route that takes JSON reads it this way,
whatever its model. The Slack routes read their JSON with `loads` too."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from twelvefold.runtime import jsonkeys


class RefusedKey(HTTPException):
    """A key JSON from outside may not have: `loc` is the path to it from the body's top
    (keys and list indexes), `message` what is wrong with it and `said` the same after
    the path (`body.…`, the 422's detail). An HTTPException, so FastAPI's body reading
    lets it through as it is (any other error there becomes its own 400); problems.py
    answers it 422."""

    def __init__(self, loc: tuple[str, ...], message: str, said: str) -> None:
        self.loc = loc
        self.message = message
        self.said = said
        super().__init__(422, message)


class RepeatedKey(RefusedKey):
    """A JSON object gave `key` twice; `where` is the path to that object."""

    def __init__(self, key: str, where: tuple[str, ...], message: str) -> None:
        self.key = key
        self.where = where
        loc = (*where, key)
        super().__init__(loc, message, f"{'.'.join(('body', *loc))}: {message}")


class LoneSurrogateKey(RefusedKey):
    """A key of a JSON object holds a lone surrogate; `loc` is the path to that object
    (the key itself cannot be written as UTF-8)."""


def loads(text: str | bytes) -> Any:
    """`json.loads(text)`, refusing an object that gives a key twice (`RepeatedKey`) or
    has a key holding a lone surrogate (`LoneSurrogateKey`), at any depth, by the
    runtime's one rule for JSON from outside (twelvefold/runtime/jsonkeys.py). Invalid
    JSON raises json's own errors, as `json.loads` does, and bytes that are not UTF-8
    `UnicodeDecodeError` (jsonkeys.py)."""
    try:
        return jsonkeys.loads(text)
    except jsonkeys.RepeatedKey as repeated:
        raise RepeatedKey(repeated.key, repeated.where, repeated.message) from None
    except jsonkeys.LoneSurrogateKey as lone:
        loc = tuple(map(str, lone.where))
        raise LoneSurrogateKey(loc, lone.message, lone.at("body")) from None


class StrictJSONRequest(Request):
    """A request whose JSON body is read with `loads`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:  # UTF-8 and nothing else, by the runtime's one rule (jsonkeys.py)
                text = jsonkeys.utf8_text(await self.body())
            except jsonkeys.NotUtf8 as exc:
                why = (
                    "send JSON without one" if exc.bom else "JSON between systems is UTF-8, "
                    "whatever the Content-Type's charset says"
                )  # fmt: skip
                raise HTTPException(
                    400, f"{exc.of('the body')}: {why} (RFC 8259, section 8.1)"
                ) from None
            self._json = loads(text)
        return self._json


class StrictJSONRoute(APIRoute):
    """A route whose JSON body is read with `loads` (FastAPI's body reading calls the
    request's `json()`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict
