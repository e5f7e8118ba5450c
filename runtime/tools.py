"""Calling the user's tool functions: import by `module:function`, typed input, retries,
timeouts, and failures turned into `ErrorInfo` (type and message, never a stack trace).

A tool that declares a parameter named `idempotency_key` receives one, derived from the
thread and the step; the same call (its retries, and a re-run after a crash) always gets
the same key, so the tool can make its side effect happen once.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .types import CallTool, ErrorInfo, Usage

_MESSAGE_LIMIT = 500


class ToolImportError(Exception):
    """`module:function` could not be imported."""


@dataclass(frozen=True, slots=True)
class Tool:
    function: Callable[..., Any]
    name: str
    accepts_key: bool
    """Whether the function has an `idempotency_key` parameter."""
    takes_input: bool
    """Whether it has a positional parameter for the step's input (a tool may ignore it)."""
    is_async: bool


@dataclass(frozen=True, slots=True)
class Outcome:
    """A tool call's result (coerced to the declared output type) or its error."""

    result: BaseModel | None
    error: ErrorInfo | None
    usage: Usage


class ToolBox:
    """Finds tool functions on the search path and caches them by `module:function`."""

    def __init__(self, paths: Sequence[str | Path] = ()) -> None:
        self.paths = [Path(p) for p in paths]
        self._cache: dict[str, Tool] = {}

    def resolve(self, reference: str, extra_paths: Sequence[Path] = ()) -> Tool:
        tool = self._cache.get(reference)
        if tool is None:
            tool = self._cache[reference] = _import(reference, [*self.paths, *extra_paths])
        return tool


def _import(reference: str, paths: Sequence[Path]) -> Tool:
    module_name, _, function_name = reference.partition(":")
    if not module_name or not function_name:
        raise ToolImportError(f"`{reference}` is not of the form module:function")
    # The current directory, the agent's directory and --path folders, in that order
    # of precedence after anything the user put on sys.path themselves.
    for folder in [Path.cwd(), *paths]:
        entry = str(folder.resolve())
        if entry not in sys.path:
            sys.path.append(entry)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ToolImportError(
            f"cannot import `{module_name}` for tool `{reference}`: {exc}"
        ) from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ToolImportError(f"`{module_name}` has no function `{function_name}`")
    parameters = inspect.signature(function).parameters
    positional = [
        p
        for p in parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        and p.name != "idempotency_key"
    ]
    return Tool(
        function=function,
        name=reference,
        accepts_key="idempotency_key" in parameters,
        takes_input=bool(positional),
        is_async=inspect.iscoroutinefunction(function),
    )


def describe(exc: BaseException) -> ErrorInfo:
    """An exception as the context window shows it: its type and a one-line message."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "value"
        message = f"{exc.error_count()} validation error(s); {where}: {first['msg']}"
    elif isinstance(exc, TimeoutError):
        message = str(exc) or "timed out"
    else:
        message = " ".join(str(exc).split())
    if len(message) > _MESSAGE_LIMIT:
        message = message[: _MESSAGE_LIMIT - 1] + "…"
    return ErrorInfo(type(exc).__name__, message)


def coerce(result: Any, output: type[BaseModel]) -> BaseModel:
    """A tool may return its declared model, a dict, or another model with the same fields."""
    if isinstance(result, output):
        return result
    if isinstance(result, BaseModel):
        result = result.model_dump(by_alias=True)
    if isinstance(result, dict):
        return output.model_validate(result)
    raise TypeError(
        f"returned {type(result).__name__}, expected {output.__name__} or a dict of its fields"
    )


async def call(tool: Tool, action: CallTool, key: str, *, offload: bool) -> Outcome:
    """Call the tool with retries (exponential backoff) and a timeout per attempt.

    `offload` runs a synchronous tool in a worker thread so an event loop stays free;
    a timeout always does (a thread cannot be stopped, so a hung tool is abandoned and
    the step fails).
    """
    started = time.perf_counter()
    error: ErrorInfo | None = None
    for attempt in range(action.retries + 1):
        if attempt:
            await asyncio.sleep(action.backoff_seconds * 2 ** (attempt - 1))
        try:
            raw = await _attempt(tool, action, key, offload=offload)
            result = coerce(raw, action.output)
        except Exception as exc:
            error = describe(exc)
            continue
        return Outcome(result, None, _usage(started))
    return Outcome(None, error, _usage(started))


def _usage(started: float) -> Usage:
    return Usage(latency_ms=round((time.perf_counter() - started) * 1000, 3))


async def _attempt(tool: Tool, action: CallTool, key: str, *, offload: bool) -> Any:
    takes = tool.takes_input and action.value is not None
    args: tuple[Any, ...] = (action.value,) if takes else ()
    kwargs: dict[str, Any] = {"idempotency_key": key} if tool.accepts_key else {}
    timeout = action.timeout_seconds
    if tool.is_async:
        coroutine = tool.function(*args, **kwargs)
        if timeout is None:
            return await coroutine
        return await asyncio.wait_for(coroutine, timeout)
    if timeout is None and not offload:
        return tool.function(*args, **kwargs)
    future = _in_daemon_thread(tool.function, args, kwargs)
    if timeout is None:
        return await future
    try:
        return await asyncio.wait_for(future, timeout)
    except TimeoutError:
        raise TimeoutError(f"`{tool.name}` did not return within {timeout:g}s") from None


def _in_daemon_thread(
    function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> asyncio.Future[Any]:
    """Run `function` on a daemon thread: unlike the default executor, a tool that never
    returns does not keep the process alive at exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(value: Any, exc: BaseException | None) -> None:
        if future.done():
            return  # timed out and abandoned
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)

    def work() -> None:
        value, error = None, None
        try:
            value = function(*args, **kwargs)
        except BaseException as exc:
            error = exc
        # A closed loop raises RuntimeError: nobody waits for this tool any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=work, name=f"tool-{os.getpid()}", daemon=True).start()
    return future
