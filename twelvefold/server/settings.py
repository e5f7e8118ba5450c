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
from twelvefold.server.service import (
    MAX_PROBLEMS,
    ServeError,
    Serving,
    capped,
    server_settings,
)


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
)
"""What one configuration file is read for; each raises `ConfigError` naming its
setting (and stops there)."""

BY_FOLDER: tuple[Callable[[Config], object], ...] = (_metrics,)
"""Those that read the file again by its folder (the metrics' access): given the whole
file only."""


@dataclass(frozen=True)
class _Served:
    """The served agents alone, for the readers that take a `Service` (nothing runs)."""

    agents: Mapping[str, Agent]


def _problems_of(config: Config) -> list[str]:
    """Every problem the readers find in one file: each reader is given one setting at a
    time (`_one_each`, the first `MAX_PIECES`), since a reader stops at the first it
    refuses and would hide the others; then, when none is refused alone, the whole file
    (for what only settings together can be)."""
    pieces = _one_each(config.settings)
    problems: list[str] = []
    for read in READERS:
        for settings in pieces[:MAX_PIECES]:
            try:
                read(Config(config.path, config.digest, settings))
            except ConfigError as exc:
                problems.append(str(exc))
    for read in BY_FOLDER if problems else READERS + BY_FOLDER:
        try:
            read(config)
        except ConfigError as exc:
            problems.append(str(exc))
    problems = list(dict.fromkeys(problems))
    if not problems or len(pieces) <= MAX_PIECES:
        return capped(problems, lambda more: f"{config.path}: {more:,} more problems like these")
    # Past MAX_PIECES no setting was read alone: neither counted nor passed over.
    if len(problems) < MAX_PROBLEMS:
        return [
            *problems,
            f"{config.path}: perhaps more problems past its first {MAX_PIECES:,} settings"
            " (not read one at a time)",
        ]
    return capped(
        problems,
        lambda more: (
            f"{config.path}: at least {more:,} more problems like these (settings"
            f" past the first {MAX_PIECES:,} were not read one at a time)"
        ),
    )


MAX_PIECES = 1000
"""The most single settings of a file read one at a time (a bound on a hostile file's
work; when none of them is refused, the whole file is read, and its first problem named)."""


TABLES = frozenset({"approvers", "tools", "rate_limits", "prices", "retention", "server"})
"""The tables whose entries are settings of their own, each read on its own."""


def _one_each(settings: Mapping[str, object]) -> list[dict[str, object]]:
    """`settings` one at a time: each top-level key, except that each entry of a table of
    settings (`server.readers`, `rate_limits.gpt`, `retention.delete`: `TABLES`) is alone
    in its table; an empty table, or a value that should be a table and is not, as it is."""
    pieces: list[dict[str, object]] = []
    for key, value in settings.items():
        if key in TABLES and isinstance(value, Mapping) and value:
            pieces.extend({key: {entry: inner}} for entry, inner in value.items())
        else:
            pieces.append({key: value})
    return pieces


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
        problems.extend(_problems_of(config))
    served: Serving = _Served(agents)
    for across in (public_url_of, webhook_hosts_of, schedules_of, timed_retention):
        try:
            across(served)
        except ServeError as exc:
            # One a file's reader found already, said again with context, is not new.
            problems.extend(p for p in exc.problems if not any(p.endswith(q) for q in problems))
    return list(dict.fromkeys(problems))
