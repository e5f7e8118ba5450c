"""DNS rebinding: a server on loopback answers only requests addressed to loopback.

A web page on `evil.example` can make its name resolve to 127.0.0.1 after the page has
loaded; the browser then sends the page's requests to a server listening on loopback,
as same-origin requests, with `Host: evil.example`. A server bound to loopback (with
`--insecure-local` it has no tokens at all) must refuse them. `HostCheck` refuses every
request whose `Host` header names anything but `localhost`, a loopback address
(127.0.0.0/8, ::1) or the host of `--public-url` (a proxy on the same machine forwards
to loopback with the public name), with a 400 problem (RFC 9457). Starlette's
`TrustedHostMiddleware` does the same check but answers in plain text.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:  # the CLI asks `is_loopback_host` before it imports the web stack
    from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES = frozenset({"localhost"})


def host_of(header: str) -> str | None:
    """The host of a `Host` header value (RFC 9110 section 7.2), lowercase, without the
    port or an IPv6 literal's brackets; None when it is not a host."""
    try:
        parts = urlsplit(f"//{header}")
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        return None
    if not host or parts.username is not None or parts.path or parts.query or parts.fragment:
        return None
    return host.rstrip(".").lower()


def is_loopback_host(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HostCheck:
    """ASGI middleware: an HTTP request whose `Host` is not loopback nor one of `also`
    (host names, any case) gets a 400 problem. (The app has no WebSocket routes.)"""

    def __init__(self, app: ASGIApp, also: Iterable[str] = ()) -> None:
        self.app = app
        self.also = frozenset(h.lower().rstrip(".") for h in also)

    def allowed(self, header: str | None) -> bool:
        host = None if header is None else host_of(header)
        return host is not None and (is_loopback_host(host) or host in self.also)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [v for k, v in scope.get("headers", ()) if k == b"host"]
        header = headers[0].decode("latin-1") if len(headers) == 1 else None
        if self.allowed(header):
            await self.app(scope, receive, send)
            return
        from twelvefold.server.problems import problem

        response = problem(
            400,
            "this server listens on loopback and answers only requests addressed to it "
            "(Host: localhost, 127.0.0.1, [::1] or the --public-url host)",
        )
        await response(scope, receive, send)
