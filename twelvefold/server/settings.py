"""Every setting the served agents' configuration holds, read at once when `serve` or a
`worker` starts (`served_agents`), before either connects anywhere: each problem is one
line of its own, and none hides another (fixing one does not reveal the next at the next
start).

The readers are the ones the runtime and the server use later (one rule each): the
approvers groups, `[tools]`, prices, rate limits and model call bounds, retention, the
server's policy table and metrics, then, across the served agents, the public URL,
webhook hosts, schedules and the retention timer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from twelvefold.runtime.config import Config, ConfigError, find_config
from twelvefold.runtime.loop import Agent
from twelvefold.runtime.ratelimit import RateLimits
from twelvefold.runtime.retention import Retention
from twelvefold.runtime.usage import Prices
from twelvefold.server.service import ServeError, ServiceError, Serving, server_settings


def _metrics(config: Config) -> object:
    """`server.metrics` (read by folder: the configuration's own)."""
    from twelvefold.server.metrics import access

    return None if config.path is None else access([config.path.parent])


READERS: tuple[Callable[[Config], object], ...] = (
    lambda config: config.approvers,
    lambda config: config.allow_stdlib,
    RateLimits.of,
    Prices.of,
    Retention.of,
    server_settings,
    _metrics,
)
"""What one configuration file is read for; each raises `ConfigError` (`Unavailable`,
for the metrics) naming its setting."""


@dataclass(frozen=True)
class _Served:
    """The served agents alone, for the readers that take a `Service` (nothing runs)."""

    agents: Mapping[str, Agent]


def settings_problems(agents: Mapping[str, Agent]) -> list[str]:
    """Every problem of the configuration in force for `agents` (each file once), one
    line each, in the order the files are found; empty when every setting can be used."""
    from twelvefold.server.pruning import timed_retention
    from twelvefold.server.replies import public_url_of, webhook_hosts_of
    from twelvefold.server.schedules import schedules_of

    problems: list[str] = []
    seen: set[Path | None] = set()
    for agent in agents.values():
        folder = agent.directory or Path.cwd()
        try:
            config = find_config(folder)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        if config.path in seen:
            continue
        seen.add(config.path)
        for read in READERS:
            try:
                read(config)
            except (ConfigError, ServiceError) as exc:
                problems.append(str(exc))
    served: Serving = _Served(agents)
    for across in (public_url_of, webhook_hosts_of, schedules_of, timed_retention):
        try:
            across(served)
        except ServeError as exc:
            # One a file's reader found already, said again with context, is not new.
            problems.extend(p for p in exc.problems if not any(p.endswith(q) for q in problems))
    return list(dict.fromkeys(problems))
