"""`GET /metrics`: what the server holds and does, in the Prometheus text format.

One registry per application (never prometheus_client's process-global one, so two apps in
one process, as in the tests, count apart). Two kinds of numbers:

- read from the store at each scrape: threads by agent and status, and the age of the
  oldest pending request per agent (a waiting thread's last event: its pause, or its
  last notice). The store is the truth; a second server on the same store reports the
  same numbers.
- counted by this process since it started, from the events it records (the runtime's
  `on_event` hook) and from its runner: step latency by step kind, model tokens and cost
  by agent and model, events by kind, runs in flight and queued, lease waits and
  takeovers. Counters restart at zero with the process, as Prometheus' `rate()` expects.

Who may read it: `[tool.twelvefold.server] metrics = "public"` (in the configuration of
every served agent's folder, read at each scrape) opens it to anyone, e.g. a scraper
inside the cluster; otherwise (`metrics = "token"`, the default) it takes the
same `Authorization: Bearer TOKEN` as the API, from a person who may read the threads of
every served agent (`readers`; 403 otherwise). Counts of threads are not secret, but the
agents' names, how busy they are and what they cost may be; nothing else (no input, no
person) is shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from twelvefold.runtime.config import ConfigError, find_config, toml_text
from twelvefold.runtime.store import ThreadInfo
from twelvefold.runtime.types import Status
from twelvefold.server.counters import ProcessMetrics
from twelvefold.server.service import (
    Caller,
    Forbidden,
    Service,
    Unauthorized,
    Unavailable,
    translated,
)
from twelvefold.server.tokens import TokenStore

Access = Literal["token", "public"]
STATUSES: tuple[Status, ...] = ("running", "waiting", "finished", "failed", "cancelled")


class Metrics(ProcessMetrics):
    """The app's registry: this process's counters (twelvefold/server/counters.py) and
    the store's and the runner's numbers read at each scrape."""

    def __init__(self, service: Service) -> None:
        super().__init__()
        self.service = service
        self.store = _StoreCollector(service)
        self.registry.register(self.store)

    async def exposition(self) -> bytes:
        """The text format, with the store's threads read now. `Unavailable` (a 503, one
        line) when the store cannot be read; a damaged row is counted apart, never that."""
        with translated():
            self.store.infos = await self.service.runtime.threads()
            self.store.damaged = len(await self.service.runtime.damaged_threads())
        return generate_latest(self.registry)


class _StoreCollector(Collector):
    """The numbers read at each scrape: the store's threads (read by the route, off the
    event loop, just before), and the runner's counts."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.infos: list[ThreadInfo] = []
        self.damaged = 0

    def describe(self) -> Iterable[Metric]:
        return []  # collected afresh each time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        threads = GaugeMetricFamily(
            "twelvefold_threads",
            "Threads in the store, by agent and status.",
            labels=["agent", "status"],
        )
        for (agent, status), count in sorted(_by_agent_and_status(self.infos).items()):
            threads.add_metric([agent, status], count)
        yield threads
        oldest = GaugeMetricFamily(
            "twelvefold_oldest_pending_request_age_seconds",
            "Per agent, how long the longest-waiting thread has waited since its last "
            "event (its pause, or its last notice).",
            labels=["agent"],
        )
        for agent, seconds in sorted(_oldest_waits(self.infos, datetime.now(UTC)).items()):
            oldest.add_metric([agent], seconds)
        yield oldest
        yield GaugeMetricFamily(
            "twelvefold_damaged_thread_rows",
            "Rows of the store's threads table that cannot be read (a value of the wrong kind"
            " in a column, written outside twelvefold): left out of the counts above;"
            " `twelvefold threads` names them.",
            value=self.damaged,
        )
        runner = self.service.runner
        yield GaugeMetricFamily(
            "twelvefold_runs_in_flight",
            "Threads this server is advancing now (each holds a --concurrency slot).",
            value=runner.in_flight,
        )
        yield GaugeMetricFamily(
            "twelvefold_runs_queued",
            "Threads waiting for a --concurrency slot.",
            value=runner.queued,
        )
        yield GaugeMetricFamily(
            "twelvefold_runs_rate_limited",
            "Threads waiting for their turn at a client-side rate limit (holding no slot).",
            value=runner.rate_limited,
        )
        yield CounterMetricFamily(
            "twelvefold_lease_waits",
            "Runs that found another process's lease on the thread and waited for it to lapse.",
            value=runner.lease_waits,
        )
        yield CounterMetricFamily(
            "twelvefold_lease_takeovers",
            "Runs that stopped because another process took the thread over (its lease, or "
            "a newer event).",
            value=runner.takeovers,
        )


def _by_agent_and_status(infos: Iterable[ThreadInfo]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    agents: set[str] = set()
    for info in infos:
        agents.add(info.agent)
        counts[info.agent, info.status] = counts.get((info.agent, info.status), 0) + 1
    for agent in agents:  # every status of a known agent, zeros included: no gaps in graphs
        for status in STATUSES:
            counts.setdefault((agent, status), 0)
    return counts


def _oldest_waits(infos: Iterable[ThreadInfo], now: datetime) -> dict[str, float]:
    oldest: dict[str, float] = {}
    for info in infos:
        if info.status != "waiting":
            continue
        try:
            since = datetime.fromisoformat(info.updated_at)
            seconds = max(0.0, (now - since).total_seconds())
        except (TypeError, ValueError):
            continue  # a time that does not parse (edited by hand): not a number to show
        oldest[info.agent] = max(seconds, oldest.get(info.agent, 0.0))
    return oldest


def access(folders: Iterable[Path]) -> Access:
    """`[tool.twelvefold.server] metrics` in the configurations of the served agents'
    folders: `public` when every one says so, else `token` (the default). `ConfigError`
    (naming the file, for the operator) when one cannot be read or says something else."""
    found: set[str] = set()
    for folder in folders:
        try:
            config = find_config(folder)
        except ConfigError as exc:
            raise ConfigError(f"the server's configuration cannot be used: {exc}") from None
        table = config.settings.get("server", {})
        value = table.get("metrics", "token") if isinstance(table, Mapping) else "token"
        if value not in ("token", "public"):
            raise ConfigError(
                f'{config.path}: server.metrics must be "token" or "public", not {toml_text(value)}'
            )
        found.add(value)
    return "public" if found == {"public"} else "token"


def router(service: Service, tokens: TokenStore | None) -> APIRouter:
    """`GET /metrics` over `service`'s metrics (installed on its runtime's event hook)."""
    metrics = Metrics(service)
    metrics.install(service.runtime.engine)
    routes = APIRouter()

    @routes.get("/metrics", tags=["server"], response_class=Response)
    async def scrape(request: Request) -> Response:
        """Prometheus text format (docs/observability.md, "Metrics")."""
        folders = {agent.directory or Path.cwd() for agent in service.agents.values()}
        try:
            public = access(folders) == "public"
        except ConfigError as exc:
            # The whole error (the configuration's path) goes to the operator's log, with
            # the reference the 503 gives; a caller without a valid token gets a 401.
            unusable = Unavailable(exc)
            if tokens is not None:
                _authenticate(tokens, request.headers.get("authorization"))
            raise unusable from None
        if tokens is not None and not public:
            found = _authenticate(tokens, request.headers.get("authorization"))
            caller = Caller(found.person, "http", found.id)
            if not all(service.may_read(caller, name) for name in service.agents):
                # Every agent's counts and costs are on the page: for readers of them all.
                raise Forbidden(
                    "the metrics show every served agent's threads and costs: only a"
                    " member of `readers` (of every served agent) may read them"
                )
        body = await metrics.exposition()
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return routes


def _authenticate(tokens: TokenStore, header: str | None) -> Any:
    scheme, _, credentials = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise Unauthorized("send `Authorization: Bearer TOKEN` (twelvefold token create)")
    found = tokens.identify(credentials.strip())
    if found is None:
        raise Unauthorized("this token is not valid (unknown, or revoked)")
    return found
