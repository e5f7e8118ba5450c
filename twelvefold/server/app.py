"""`create_app(service, tokens=...)`: the FastAPI application `twelvefold serve` runs.

It includes the API router (api.py), /metrics (metrics.py) and, when their modules are
present, the inbox (inbox.py) and Slack (slack.py) routers, each built by a function
taking the service.
Every error is an RFC 9457 problem-details document (problems.py). The service starts
and stops with the application's lifespan (when `manage` is true)."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from twelvefold import __version__
from twelvefold.server import api, metrics, problems
from twelvefold.server.hosts import HostCheck
from twelvefold.server.replies import replies
from twelvefold.server.service import Service
from twelvefold.server.throttle import Throttle
from twelvefold.server.tokens import TokenStore

OPTIONAL_ROUTERS = ("inbox", "slack")
"""Modules of twelvefold.server whose `router(service)` the app includes when present."""


def create_app(
    service: Service,
    *,
    tokens: TokenStore | None,
    manage: bool = False,
    grace: float = 10.0,
    throttle: Throttle | None = None,
    loopback_only: Iterable[str] | None = None,
) -> FastAPI:
    """The application over `service`. `tokens` authenticates API calls; None serves
    without authentication (`--insecure-local`: every caller is `local`). With `manage`,
    the lifespan starts the service and stops it (`grace` seconds for running steps).
    `throttle` counts failed sign-ins and bad tokens per client (throttle.py; the
    defaults when None). With `loopback_only` (the server listens on loopback), a
    request must be addressed to loopback or to one of those host names (hosts.py:
    DNS rebinding)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        catching_up = None
        if manage:
            await service.start()
            if service.queue is None:  # (with workers, their sweep and reply jobs do)
                # replies cut off by the last stop, then those a killed process left claimed
                keeping_up = replies(service).keep_up(service.sweep_seconds)
                catching_up = asyncio.create_task(keeping_up)
        try:
            yield
        finally:
            if catching_up is not None:  # (a send it cuts off gives its claim back)
                catching_up.cancel()
                await asyncio.gather(catching_up, return_exceptions=True)
            if manage:
                await service.stop(grace)

    app = FastAPI(
        title="twelvefold",
        version=__version__,
        description="Launch, watch and decide twelvefold threads over HTTP (docs/server.md).",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.tokens = tokens
    app.state.throttle = throttle or Throttle()  # failed sign-ins and bad tokens
    problems.install(app)
    if loopback_only is not None:
        app.add_middleware(HostCheck, also=tuple(loopback_only))  # outermost: first
    app.include_router(api.router(service, tokens))
    app.include_router(metrics.router(service, tokens))
    for name in OPTIONAL_ROUTERS:
        try:
            module = importlib.import_module(f"twelvefold.server.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"twelvefold.server.{name}":
                raise
            continue
        app.include_router(module.router(service))
    return app
