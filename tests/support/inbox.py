"""The inbox's test pieces: a browser-like httpx client that signs in through the real
sign-in form, hostile values, and the rule for tests that need a real part (Chromium).

    async with signed_in(s, "ana") as browser:   # s: tests/support/server.py's Served
        page = await browser.get("/")
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

HOSTILE = (
    '<script>window.pwned=1</script>"><img src=x onerror="window.pwned=2">'
    "{{ 7*7 }}{% if true %}x{% endif %}\x1b[31m\u202eevil"
)
"""A value that tries everything: a script, an attribute break-out with an event handler,
Jinja2 syntax (must print as typed), a terminal escape and a right-to-left override."""

_HIDDEN_INPUT = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)">')


def require_part(present: bool, what: str, install: str) -> None:
    """Skip the calling test when a real part is missing on a developer's machine, but fail
    it in CI (CI=true), where `make system-deps` must have installed the part: a real-part
    test never skips silently there."""
    if present:
        return
    message = f"{what} is missing; {install}"
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{message} (CI=true: a real-part test may not skip)")
    pytest.skip(message)


def hidden_fields(page: str) -> dict[str, str]:
    """The hidden inputs of a page (the first of each name), unescaped."""
    fields: dict[str, str] = {}
    for name, value in _HIDDEN_INPUT.findall(page):
        fields.setdefault(name, html.unescape(value))
    return fields


@asynccontextmanager
async def inbox_client(app: Any, base_url: str = "http://testserver") -> AsyncIterator[Any]:
    """An httpx client against the app in process that keeps cookies, like a browser."""
    import httpx

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=base_url, follow_redirects=False
    ) as client:
        yield client


@asynccontextmanager
async def signed_in(served: Any, person: str) -> AsyncIterator[Any]:
    """An inbox client for `served` (tests/support/server.py) signed in as `person`."""
    async with inbox_client(served.app) as client:
        signed = await sign_in(client, served.token(person))
        assert signed.status_code == 303, signed.text
        yield client


async def sign_in(client: Any, token: str, *, next_page: str | None = None) -> Any:
    """Sign in through the form (GET it for its nonce, POST it back); the response."""
    url = "/signin" if next_page is None else f"/signin?next={next_page}"
    form = await client.get(url)
    assert form.status_code == 200, form.text
    fields = hidden_fields(form.text)
    return await client.post("/signin", data={**fields, "token": token})
