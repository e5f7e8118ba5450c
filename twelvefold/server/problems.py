"""Errors as RFC 9457 problem details: every error the server answers, whether the
service refused a call, FastAPI rejected a body, or no route matched, is an
`application/problem+json` document `{"type", "title", "status", "detail"}` (plus
`errors` for a body that does not validate, or that has a key it may not: bodies.py).
Nothing of a traceback is ever sent: an unexpected exception is logged and answered as a
bare 500 problem (the tests assert none occurs).

`BodyLimit` refuses request bodies over `MAX_BODY_BYTES` (413) before they are read in
full, whether or not they declare a Content-Length."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from twelvefold.server.bodies import RefusedKey
from twelvefold.server.service import ServiceError, TooManyAttempts

log = logging.getLogger("twelvefold.server")

MEDIA_TYPE = "application/problem+json"
MAX_BODY_BYTES = 1024 * 1024
"""The largest request body accepted (1 MiB): a launch input or a comment, not a file."""
_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal server error",
    503: "Unavailable",
}


PATTERN_MESSAGES: dict[str, str] = {}
"""What a value a `pattern` refused should have been, in words, by pattern: the 422 says
this, never the regular expression (a webhook's is 3 KB)."""


def described_pattern(pattern: str, message: str) -> str:
    """`pattern`, for a field's `pattern=`, with the words its refusal says (`message`)."""
    PATTERN_MESSAGES[pattern] = message
    return pattern


def _in_words(error: Any) -> str:
    """A validation error's message, a refused pattern said in words (`PATTERN_MESSAGES`;
    a pattern with none is still not quoted)."""
    if error.get("type") == "string_pattern_mismatch":
        pattern = str((error.get("ctx") or {}).get("pattern"))
        return PATTERN_MESSAGES.get(pattern, "the value does not have the form this field takes")
    return str(error.get("msg"))


def problem(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem-details response (RFC 9457 section 3); `type` stays `about:blank`, so
    `title` is the status's phrase."""
    body = {
        "type": "about:blank",
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def install(app: FastAPI) -> None:
    """Answer every error `app` raises as problem details, and cap request bodies."""
    app.add_middleware(BodyLimit)

    @app.exception_handler(ServiceError)
    async def refused(request: Request, exc: ServiceError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if isinstance(exc, TooManyAttempts):
            headers = {"Retry-After": str(exc.retry_after)}
        return problem(exc.status, exc.detail, title=exc.title, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "")
        if exc.status_code == 404:
            detail = "no such path (the API lives under /v1; see /openapi.json)"
        return problem(exc.status_code, detail, headers=dict(exc.headers or {}) or None)

    @app.exception_handler(RefusedKey)
    async def refused_key(request: Request, exc: RefusedKey) -> JSONResponse:
        loc = ["body", *exc.loc]  # a key given twice, or one that holds a lone surrogate
        return problem(422, exc.said, errors=[{"loc": loc, "msg": exc.message}])

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(part) for part in error.get("loc", ())], "msg": _in_words(error)}
            for error in exc.errors()
        ]
        detail = "the request does not validate"
        if errors:
            where, message = ".".join(errors[0]["loc"]), str(errors[0]["msg"])
            detail = f"{where}: {message}" if where else message
        return problem(422, detail, errors=errors)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem(500, "an unexpected error; it was logged")


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets a 413 problem.

    The body (at most `limit` bytes) is read before the route runs and handed on in one
    message, so a chunked body without a Content-Length is refused the same way."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(scope, receive, send, self.limit)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _too_large(scope, receive, send, self.limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: Message | None = {
            "type": "http.request",
            "body": b"".join(chunks),
            "more_body": False,
        }

        async def replayed() -> Message:
            nonlocal body
            if body is not None:
                message, body = body, None
                return message
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replayed, send)


async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    response = problem(413, f"the request body is larger than {limit} bytes")
    await response(scope, receive, send)
