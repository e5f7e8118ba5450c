"""Client-side rate limits per model: requests and tokens per minute, shared by every
thread in a process (docs/runtime.md, "Rate limits").

    [tool.twelvefold.rate_limits."gpt-4o-mini"]
    requests_per_minute = 60
    tokens_per_minute = 100000

A model is limited by its exact name, else by the longest configured name it starts with
followed by `-` (as prices are looked up). Before each model call (a judge's too) the loop
asks the limiter for a turn: it starts when fewer than `requests_per_minute` calls started
in the last minute and the calls of the last minute used fewer than `tokens_per_minute`
tokens. A call's tokens are known only when it answers, so a starting call holds an
estimate of its prompt (4 characters a token) until its reply's counts replace it; the
token limit holds back the next call, not the one that crosses it. A thread waiting for its turn
sleeps on the event loop: it holds no worker thread, and in the server it lends its
`--concurrency` slot to another thread meanwhile (`Engine.idle`).

A provider's 429 is retried by the openai client itself, after the `Retry-After` the
provider sent (its `max_retries`, the runtime's `transport_retries`): the runtime never
retries it again. What the limiter adds is `pause`: the 429 also holds back every other
call to that model in the process until `Retry-After` has passed, instead of each thread
learning it with a 429 of its own.

`RateLimiter` is the interface the loop uses; `WindowLimiter` is the in-process one. A
limiter shared by many worker processes (on the PostgreSQL store) implements the same
three methods over the store; none exists yet.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .config import Config, ConfigError, find_config


@dataclass(frozen=True, slots=True)
class Limits:
    """One model's limits: at most this many per window (None: unlimited)."""

    requests: int | None = None
    tokens: int | None = None


class RateLimiter(Protocol):
    """What the loop asks of a rate limiter (runtime/loop.py)."""

    async def turn(self, model: str, limits: Limits, tokens: int = 0) -> None:
        """Wait until a call to `model` may start under `limits`; count it as started,
        with `tokens` (an estimate of its prompt) held against the token limit."""
        ...

    def spent(self, model: str, tokens: int, estimated: int = 0) -> None:
        """Record the tokens a call to `model` reported, in place of its estimate."""
        ...

    def pause(self, model: str, seconds: float) -> None:
        """The provider asked to wait (429, `Retry-After`): start no call to `model`
        for `seconds`."""
        ...


@dataclass
class _Window:
    started: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    paused_until: float = 0.0


class WindowLimiter:
    """Sliding windows of `window_seconds` (60: per minute) per model, in this process.

    Thread-safe and bound to no event loop (the synchronous API runs each call in a loop
    of its own): a turn is decided under a lock, and a thread that must wait sleeps for
    the time the window says, then asks again."""

    def __init__(self, window_seconds: float = 60.0) -> None:
        self.window = window_seconds
        self._lock = threading.Lock()
        self._models: dict[str, _Window] = {}

    async def turn(self, model: str, limits: Limits, tokens: int = 0) -> None:
        while True:
            wait = self._try(model, limits, time.monotonic(), max(0, tokens))
            if wait <= 0:
                return
            await _sleep(wait)

    def spent(self, model: str, tokens: int, estimated: int = 0) -> None:
        correction = max(0, tokens) - max(0, estimated)
        if correction:
            with self._lock:
                self._at(model).tokens.append((time.monotonic(), correction))

    def pause(self, model: str, seconds: float) -> None:
        if not math.isfinite(seconds) or seconds <= 0:
            return
        with self._lock:
            window = self._at(model)
            window.paused_until = max(window.paused_until, time.monotonic() + seconds)

    def paused_for(self, model: str) -> float:
        """Seconds from now until calls to `model` may start again after a `pause`."""
        with self._lock:
            return max(0.0, self._at(model).paused_until - time.monotonic())

    def _try(self, model: str, limits: Limits, now: float, tokens: int = 0) -> float:
        """0 when a call may start now (and counts it), else the seconds to wait."""
        with self._lock:
            window = self._at(model)
            since = now - self.window
            while window.started and window.started[0] <= since:
                window.started.popleft()
            while window.tokens and window.tokens[0][0] <= since:
                window.tokens.popleft()
            waits = [window.paused_until - now]
            if limits.requests is not None and len(window.started) >= limits.requests:
                waits.append(window.started[0] + self.window - now)
            if limits.tokens is not None and sum(n for _, n in window.tokens) >= limits.tokens:
                waits.append(window.tokens[0][0] + self.window - now)
            wait = max(waits)
            if wait > 0:
                return max(wait, 0.001)
            window.started.append(now)
            if tokens:
                window.tokens.append((now, tokens))
            return 0.0

    def _at(self, model: str) -> _Window:
        found = self._models.get(model)
        if found is None:
            found = self._models[model] = _Window()
        return found


PROCESS_LIMITER = WindowLimiter()
"""The limiter every runtime in this process shares unless given another."""


@dataclass(frozen=True, slots=True)
class RateLimits:
    """A configuration's `rate_limits` table: model name -> `Limits`."""

    table: Mapping[str, Limits]

    @classmethod
    def of(cls, config: Config) -> RateLimits:
        """`ConfigError` when an entry is not a table of whole numbers >= 1."""
        given = config.settings.get("rate_limits", {})
        where = config.path or "the configuration"
        if not isinstance(given, Mapping):
            raise ConfigError(f"{where}: `rate_limits` must be a table of model = {{ ... }}")
        table = {str(model): _limits(where, str(model), entry) for model, entry in given.items()}
        return cls(table)

    def of_model(self, model: str | None) -> Limits | None:
        """The limits of `model`: by exact name, then the longest `name-` prefix."""
        if not model:
            return None
        found = self.table.get(model)
        if found is not None:
            return found
        best = max((n for n in self.table if model.startswith(n + "-")), key=len, default=None)
        return None if best is None else self.table[best]


_READ: dict[Path, RateLimits] = {}


def rate_limits_for(folder: Path) -> RateLimits:
    """The limits configured for agents in `folder`, read once per process (as prices)."""
    found = _READ.get(folder)
    if found is None:
        found = _READ[folder] = RateLimits.of(find_config(folder))
    return found


def _limits(where: object, model: str, entry: Any) -> Limits:
    known = {"requests_per_minute", "tokens_per_minute"}
    if not isinstance(entry, Mapping) or not set(entry) <= known:
        raise ConfigError(
            f"{where}: rate_limits.{model} must be a table of requests_per_minute and/or "
            "tokens_per_minute"
        )

    def count(key: str) -> int | None:
        value = entry.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"{where}: rate_limits.{model}.{key} must be a whole number >= 1, not {value!r}"
            )
        return value

    return Limits(count("requests_per_minute"), count("tokens_per_minute"))


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds a 429's headers ask to wait: `retry-after-ms`, else `Retry-After` as
    seconds or as an HTTP date (RFC 9110, section 10.2.3); None when absent or malformed."""
    text = headers.get("retry-after-ms")
    if text is not None:
        try:
            return max(0.0, float(text) / 1000)
        except ValueError:
            pass
    text = headers.get("retry-after")
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        from email.utils import parsedate_to_datetime  # rare: only a date needs it

        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


__all__ = [
    "PROCESS_LIMITER",
    "Limits",
    "RateLimiter",
    "RateLimits",
    "WindowLimiter",
    "rate_limits_for",
    "retry_after",
]


async def _sleep(seconds: float) -> None:
    # asyncio is imported when a thread waits, not with the runtime: a reducer needs none
    # of it (tests/test_runtime_imports.py).
    import asyncio

    await asyncio.sleep(seconds)
