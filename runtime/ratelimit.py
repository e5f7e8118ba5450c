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
provider sent when that is at most two minutes (its `max_retries`, the runtime's
`transport_retries`): the runtime does not retry it again. A longer `Retry-After`, which
the client does not retry, the loop waits out (capped) and calls again (runtime/loop.py,
`LONG_429_WAITS`). What the limiter adds is `pause`: the 429 also holds back every other
call to that model in the process until `Retry-After` has passed, instead of each thread
learning it with a 429 of its own.

`RateLimiter` is the interface the loop uses; `WindowLimiter` is the in-process one;
`StoreLimiter` counts in the store, shared by every process using it (the PostgreSQL store:
runtime/pgstore.py, table `rate_calls`), so N workers together keep to the limits. A
worker does not sleep for a turn further away than `Engine.defer_turns`: the loop raises
`TurnLater` and the worker gives its job slot back, re-scheduling the thread's wake-up for
the moment its turn comes (twelvefold/server/queue.py).

Apart from the rate limits, `InFlight` caps the model calls in flight in the process at
once (`model_calls_in_flight`, 100 by default): beyond that a call waits for one to
answer, so a thousand threads at once do not open a thousand connections together and see
their connects time out.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .config import Config, ConfigError, find_config, toml_key, toml_text
from .records import record


@record(slots=True)
class Limits:
    """One model's limits: at most this many per window (None: unlimited)."""

    requests: int | None = None
    tokens: int | None = None


class TurnLater(Exception):
    """A model call's turn is `seconds` away and the caller asked not to wait for it
    (`Engine.defer_turns`): nothing was recorded; run the thread again then."""

    def __init__(self, model: str, seconds: float) -> None:
        super().__init__(f"the rate limit of {model} gives the next call a turn in {seconds:.1f} s")
        self.model = model
        self.seconds = seconds
        self.trace: str | None = None
        """The W3C `traceparent` of the run that stopped, when traced (the run at the
        turn links to it: runtime/tracing.py, `after_run`)."""


WINDOW_ENV = "TWELVEFOLD_RATE_WINDOW_SECONDS"
"""Overrides the limiters' window (60 s: "per minute"); for tests, which cannot wait minutes."""


def configured_window() -> float:
    """The window limits are counted over: 60 s, or a positive TWELVEFOLD_RATE_WINDOW_SECONDS."""
    text = os.environ.get(WINDOW_ENV, "")
    try:
        value = float(text) if text else 60.0
    except ValueError:
        return 60.0
    return value if math.isfinite(value) and value > 0 else 60.0


class RateLimiter(Protocol):
    """What the loop asks of a rate limiter (runtime/loop.py)."""

    async def turn(
        self, model: str, limits: Limits, tokens: int = 0, *, wait: bool = True
    ) -> float:
        """Wait until a call to `model` may start under `limits`; count it as started,
        with `tokens` (an estimate of its prompt) held against the token limit; 0.
        With `wait=False`, when the turn is not now: count nothing and return the seconds
        until it may be."""
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

    def __init__(self, window_seconds: float | None = None) -> None:
        self.window = window_seconds if window_seconds is not None else configured_window()
        self._lock = threading.Lock()
        self._models: dict[str, _Window] = {}

    async def turn(
        self, model: str, limits: Limits, tokens: int = 0, *, wait: bool = True
    ) -> float:
        async def attempt() -> float:
            return self._try(model, limits, time.monotonic(), max(0, tokens))

        return await _turns(attempt, wait)

    def spent(self, model: str, tokens: int, estimated: int = 0) -> None:
        if correction := _correction(tokens, estimated):
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


async def _turns(attempt: Callable[[], Awaitable[float]], wait: bool) -> float:
    """Ask for a turn (`attempt`: 0 when given, else the seconds to wait) until it is
    given, sleeping as told between; without `wait`, ask once."""
    while True:
        later = await attempt()
        if later <= 0 or not wait:
            return later
        await _sleep(later)


def _correction(tokens: int, estimated: int) -> int:
    """The tokens to add to a window once a call's own count replaces its estimate."""
    return max(0, tokens) - max(0, estimated)


PROCESS_LIMITER = WindowLimiter()
"""The limiter every runtime in this process shares unless given another."""


class SharedWindows(Protocol):
    """Sliding windows kept where many processes see them (the PostgreSQL store), decided
    on one clock (the database's). Blocking calls: `StoreLimiter` runs them off the loop."""

    def rate_turn(self, model: str, limits: Limits, tokens: int, window: float) -> float:
        """As `WindowLimiter._try`: 0 when a call may start now (counted), else the
        seconds to wait (nothing counted)."""
        ...

    def rate_spent(self, model: str, correction: int) -> None:
        """Add `correction` tokens (the reply's count less the estimate) to the window."""
        ...

    def rate_pause(self, model: str, seconds: float) -> None:
        """Start no call to `model` for `seconds`."""
        ...


class StoreLimiter:
    """The limits counted in the store, shared by every process that uses it (all the
    workers on one PostgreSQL): the same rules as `WindowLimiter`, each turn decided in
    one transaction on the database's clock. A waiting thread sleeps on the event loop
    and asks again (or, with `wait=False`, is told how long to wait).

    `spent` and `pause` are called from the loop without waiting (a reply's tokens, a
    429's header): they are written from a worker thread; one that fails is logged and
    dropped (the window then holds the estimate; the openai client still retries 429s)."""

    def __init__(self, windows: SharedWindows, window_seconds: float | None = None) -> None:
        self.windows = windows
        self.window = window_seconds if window_seconds is not None else configured_window()
        self._writing: set[Any] = set()

    async def turn(
        self, model: str, limits: Limits, tokens: int = 0, *, wait: bool = True
    ) -> float:
        import asyncio

        async def attempt() -> float:
            return await asyncio.to_thread(
                self.windows.rate_turn, model, limits, max(0, tokens), self.window
            )

        return await _turns(attempt, wait)

    def spent(self, model: str, tokens: int, estimated: int = 0) -> None:
        if correction := _correction(tokens, estimated):
            self._write(self.windows.rate_spent, model, correction)

    def pause(self, model: str, seconds: float) -> None:
        if math.isfinite(seconds) and seconds > 0:
            self._write(self.windows.rate_pause, model, seconds)

    def _write(self, function: Any, *args: Any) -> None:
        import asyncio

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: write now
            _logged(function, *args)
            return
        future = loop.run_in_executor(None, _logged, function, *args)
        self._writing.add(future)  # held until written: a dropped future may be collected
        future.add_done_callback(self._writing.discard)


def _logged(function: Any, *args: Any) -> None:
    try:
        function(*args)
    except Exception:
        import logging

        logging.getLogger("twelvefold.ratelimit").exception("a rate-limit count was not stored")


def limiter_for(store: object) -> RateLimiter:
    """The limiter for runtimes on `store`: counted in the store when it keeps shared
    windows (`SharedWindows`: the PostgreSQL store), else the process's `PROCESS_LIMITER`."""
    if callable(getattr(store, "rate_turn", None)):
        return StoreLimiter(store)  # type: ignore[arg-type]
    return PROCESS_LIMITER


DEFAULT_IN_FLIGHT = 100
"""Model calls in flight at once per process unless `model_calls_in_flight` says otherwise:
the openai client keeps up to 100 connections alive, so up to 100 calls reuse them."""
MAX_IN_FLIGHT = 100_000
"""The largest `model_calls_in_flight` accepted: beyond any process's open-file limit (each
call in flight holds a connection), so a larger value is a typo, never a setting."""


DEFAULT_CALL_SECONDS = 600.0
"""How long one model call may take in all unless `model_call_timeout` says otherwise:
the openai client's own default timeout (600 s), which it applies to each read, not to
the call. The call (its connection, its transport retries and its re-asks) then fails:
a slow endpoint dripping a byte at a time holds no thread, lease or place for longer."""
MAX_CALL_SECONDS = 86_400.0
"""The longest `model_call_timeout` accepted (a day)."""


class InFlight:
    """At most `limit` model calls at once in this process, whatever event loop each runs
    on (the synchronous API gives each call a loop of its own): a call beyond the cap
    waits, first come first served, until one ends. Waiting is not a failure and has no
    deadline of its own; the openai client's timeouts start when the call does.

    `limit` is read from the configuration of the agent making each call (the last one
    read wins: one process, one cap)."""

    def __init__(self, limit: int = DEFAULT_IN_FLIGHT) -> None:
        self.limit = limit
        self.running = 0
        self.most = 0
        """The most calls that were in flight at once (for tests and metrics)."""
        self._lock = threading.Lock()
        self._waiting: deque[tuple[Any, Any]] = deque()
        """(event loop, future) of each call waiting for a place, oldest first."""

    def take(self, limit: int | None = None) -> bool:
        """Take a place now if one is free, without waiting: whether it was taken (the
        loop's fast path: no coroutine when nobody waits)."""
        lock = self._lock
        lock.acquire()  # (not `with`: half the cost, every model call takes and leaves)
        try:
            if limit is not None:
                self.limit = limit
            running = self.running
            if running < self.limit and not self._waiting:
                self.running = running = running + 1  # `_took`, written out: every model call
                if running > self.most:
                    self.most = running
                return True
            return False
        finally:
            lock.release()

    async def enter(self, limit: int | None = None) -> None:
        """Take a place (waiting for one when `limit` calls are in flight)."""
        import asyncio

        if self.take(limit):
            return
        with self._lock:
            if self.running < self.limit and not self._waiting:  # freed in between
                self._took()
                return
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            self._waiting.append((loop, future))
        try:
            await future
        except BaseException:
            with self._lock:
                if (loop, future) in self._waiting:
                    self._waiting.remove((loop, future))
                    raise
            # Given a place as it was cancelled: pass it on (a grant still on its way
            # finds the future cancelled and passes it on itself).
            if not future.cancelled():
                self.leave()
            raise

    def leave(self) -> None:
        """Give the place back: to the oldest waiting call, else free it."""
        lock = self._lock
        lock.acquire()  # (as in `take`)
        try:
            while self._waiting and self.running <= self.limit:
                loop, future = self._waiting.popleft()
                try:
                    loop.call_soon_threadsafe(_grant, self, future)
                except RuntimeError:  # its loop closed: it waits no more
                    continue
                return
            self.running -= 1
        finally:
            lock.release()

    def _took(self) -> None:
        self.running += 1
        self.most = max(self.most, self.running)


def _grant(cap: InFlight, future: Any) -> None:
    if future.done():  # cancelled before its turn came: the place goes on
        cap.leave()
    else:
        future.set_result(None)


PROCESS_IN_FLIGHT = InFlight()
"""The cap every runtime in this process shares."""


@record(slots=True)
class RateLimits:
    """A configuration's `rate_limits` table: model name -> `Limits`."""

    table: Mapping[str, Limits]
    in_flight: int = DEFAULT_IN_FLIGHT
    """`model_calls_in_flight`: the most model calls at once in the process."""
    call_seconds: float = DEFAULT_CALL_SECONDS
    """`model_call_timeout`: the most seconds one model call may take in all."""

    @classmethod
    def of(cls, config: Config) -> RateLimits:
        """`ConfigError` when an entry is not a table of whole numbers >= 1,
        `model_calls_in_flight` is not a whole number from 1 to `MAX_IN_FLIGHT`, or
        `model_call_timeout` is not a number of seconds in (0, `MAX_CALL_SECONDS`]."""
        given = config.settings.get("rate_limits", {})
        where = config.path or "the configuration"
        if not isinstance(given, Mapping):
            raise ConfigError(
                f"{where}: `rate_limits` must be a table of model = {{ ... }}, "
                f"not {toml_text(given)}"
            )
        table = {str(model): _limits(where, str(model), entry) for model, entry in given.items()}
        cap = config.settings.get("model_calls_in_flight", DEFAULT_IN_FLIGHT)
        if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= MAX_IN_FLIGHT:
            raise ConfigError(
                f"{where}: model_calls_in_flight must be a whole number from 1 to "
                f"{MAX_IN_FLIGHT:,}, not {toml_text(cap)}"
            )
        seconds = config.settings.get("model_call_timeout", DEFAULT_CALL_SECONDS)
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 < seconds <= MAX_CALL_SECONDS
        ):
            raise ConfigError(
                f"{where}: model_call_timeout must be a number of seconds above 0 and at most "
                f"{MAX_CALL_SECONDS:,.0f}, not {toml_text(seconds)}"
            )
        return cls(table, cap, float(seconds))

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
            f"{where}: {toml_key('rate_limits', model)} must be a table of "
            f"requests_per_minute and/or tokens_per_minute, not {toml_text(entry)}"
        )

    def count(key: str) -> int | None:
        value = entry.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"{where}: {toml_key('rate_limits', model, key)} must be a whole number >= 1, "
                f"not {toml_text(value)}"
            )
        return value

    return Limits(count("requests_per_minute"), count("tokens_per_minute"))


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds a 429's headers ask to wait: `retry-after-ms`, else `Retry-After` as
    seconds or as an HTTP date (RFC 9110, section 10.2.3); None when absent or malformed."""
    text = headers.get("retry-after-ms")
    if text is not None:
        try:
            milliseconds = float(text)
        except ValueError:
            milliseconds = math.nan
        if math.isfinite(milliseconds):  # `inf` or `nan` is as malformed as `soon`
            return max(0.0, milliseconds / 1000)
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
    "DEFAULT_IN_FLIGHT",
    "MAX_IN_FLIGHT",
    "PROCESS_IN_FLIGHT",
    "PROCESS_LIMITER",
    "InFlight",
    "Limits",
    "RateLimiter",
    "RateLimits",
    "SharedWindows",
    "StoreLimiter",
    "TurnLater",
    "WindowLimiter",
    "configured_window",
    "limiter_for",
    "rate_limits_for",
    "retry_after",
]


async def _sleep(seconds: float) -> None:
    # asyncio is imported when a thread waits, not with the runtime: a reducer needs none
    # of it (tests/test_runtime_imports.py).
    import asyncio

    await asyncio.sleep(seconds)
