"""Calling the user's tool functions: resolve `module:function` per agent, typed input,
retries, timeouts, and failures turned into `ErrorInfo` (type and message, never a stack
trace).

One logical call has one idempotency key, for every attempt: in-process retries, a
re-run after a crash and a person's retry while the outcome is unknown (see
docs/runtime.md, "Tools and idempotency keys"). A tool that declares a parameter named
`idempotency_key` receives it, so the tool can make its side effect happen once.

Attempts of one call never overlap. A synchronous tool with a `timeout` runs on a worker
thread, which cannot be stopped: when it times out it is abandoned but may still be
running, so its key stays in `_IN_FLIGHT` until it returns, and no further attempt of that
call starts in this process meanwhile (an in-process retry waits for it at most one more
`timeout`; a later call with the key fails at once with `StillRunning`). We chose this
over running such tools in a subprocess that could be killed: a tool keeps sharing its
process with the application (connections, caches, test doubles are real objects), and a
killed process can leave a side effect half done just the same, so the key is needed
either way. An async tool is cancelled at its timeout, so it does not linger.

Tool modules resolve per agent (issue 9 §2, §7): the agent's folder, then the `--path`
folders, then the normal import path (installed packages, PYTHONPATH). A module found in
one of those folders is imported under a private package name per folder, so two agents
that both name `"tools:act"` each get their own function and a `tools.py` in the current
directory never stands in for the agent's own. Standard-library modules are refused
unless the configuration allows them by name (`Config.allow_stdlib`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import queue
import sys
import threading
import time
import types
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from .config import special_module, stdlib_module
from .names import declared_name
from .records import builder, quick_init, record
from .redact import validation_problems
from .types import CallTool, ErrorInfo, Usage, build_usage

if TYPE_CHECKING:  # asyncio loads when a thread runs, not when an agent is imported
    import asyncio

_MESSAGE_LIMIT = 500
_PRIVATE_PREFIX = "_twelvefold_tools_"
"""Tool modules found in an agent's or a --path folder live under
`_twelvefold_tools_<digest of the folder>.<module>` in `sys.modules`."""


class ToolImportError(Exception):
    """`module:function` could not be imported, or names a module a tool may not be."""


@record(slots=True)
class Tool:
    function: Callable[..., Any]
    name: str
    accepts_key: bool
    """Whether the function has an `idempotency_key` parameter."""
    takes_input: bool
    """Whether it has a positional parameter for the step's input (a tool may ignore it)."""
    is_async: bool


@record(slots=True)
class Outcome:
    """A tool call's result (coerced to the declared output type) or its error."""

    result: BaseModel | None
    error: ErrorInfo | None
    usage: Usage
    unknown: bool = False
    """Whether the tool may have done its work although no result can be used: an attempt
    timed out (or is still running), or the tool returned a value of the wrong shape. A
    further attempt of this call must reuse its key."""
    attempt: int = 1
    """Which attempt (1 for the first) gave this outcome."""
    retry_in: float | None = None
    """Set when the attempt failed and ended and the step's `retry … backoff` tries again
    after this many seconds: the caller records the wait (`AttemptFailed`) and starts the
    next attempt (`call(..., attempt=attempt + 1)`) when it is over."""


quick_init(Outcome)  # every tool call makes one (runtime/records.py)
_new_outcome = builder(Outcome)  # the same, without a class call's keyword dict


class ToolBox:
    """Finds tool functions and caches them by the folders searched and `module:function`."""

    def __init__(self, paths: Sequence[str | Path] = ()) -> None:
        self.paths = [Path(p) for p in paths]
        self._cache: dict[tuple[tuple[Path, ...], str, frozenset[str]], Tool] = {}

    def resolve(
        self,
        reference: str,
        agent_folders: Sequence[Path] = (),
        *,
        allow_stdlib: Collection[str] = (),
    ) -> Tool:
        """The function `reference` names for an agent whose own folders are
        `agent_folders`: looked up there first, then in this box's `--path` folders, then
        on the normal import path. Raises `ToolImportError` (never another exception) when
        it cannot be found, or when it names a standard-library module not listed in
        `allow_stdlib`."""
        cache_key = (tuple(agent_folders), reference, frozenset(allow_stdlib))
        tool = self._cache.get(cache_key)
        if tool is None:
            folders = [p.resolve() for p in (*agent_folders, *self.paths)]
            tool = self._cache[cache_key] = _import(reference, folders, allow_stdlib)
        return tool

    def cached(self, reference: str, agent_folders: Sequence[Path] = ()) -> Tool | None:
        """The tool `resolve` returns without importing anything (it found it before), or
        None: resolving it would import its module, running that module's code."""
        return self._cache.get((tuple(agent_folders), reference, frozenset()))


def _import(reference: str, folders: Sequence[Path], allow_stdlib: Collection[str]) -> Tool:
    module_name, _, function_name = reference.partition(":")
    parts = module_name.split(".")
    if not function_name.isidentifier() or not all(part.isidentifier() for part in parts):
        raise ToolImportError(f"`{reference}` is not of the form module:function")
    special = special_module(reference)
    if special is not None:
        special_name, why = special
        raise ToolImportError(
            f"`{reference}` names `{special_name}`, {why}: a tool is your own function"
        )
    stdlib = stdlib_module(reference)
    if stdlib is not None and stdlib not in allow_stdlib:
        raise ToolImportError(
            f"`{reference}` names the standard-library module `{stdlib}`; a tool must be "
            f'your own function (to allow it, add `allow_stdlib = ["{stdlib}"]` under '
            "[tool.twelvefold.tools] in the project's configuration)"
        )
    try:
        module = _import_module(parts, folders)
        function = getattr(module, function_name, None)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # ImportError, or whatever the module raises as it loads
        raise ToolImportError(
            f"cannot import `{module_name}` for tool `{reference}`: {describe(exc)}"
            + _generated_hint(exc, parts, folders)
        ) from None
    if not callable(function):
        raise ToolImportError(f"`{module_name}` has no function `{function_name}`")
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError) as exc:
        raise ToolImportError(f"cannot inspect tool `{reference}`: {describe(exc)}") from None
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


def _import_module(parts: Sequence[str], folders: Sequence[Path]) -> types.ModuleType:
    """The module from the first folder that has its top-level package or file, under
    that folder's private package; else from the normal import path."""
    for folder in folders:
        if _holds(folder, parts):
            private = _private_package(folder)
            return importlib.import_module(".".join([private, *parts]))
    return importlib.import_module(".".join(parts))


def _holds(folder: Path, parts: Sequence[str]) -> bool:
    """Whether `folder` has the top-level package or file of the module `parts` names.

    A file does not count when it cannot be that module: a plain `top.py` has no
    submodules (`top.tools`), and an agent's generated module (whose folder is searched
    first: `compile -o build/` writes `build/top.py` for `top.agent`, whose tools are
    often the package `top/`) holds no tools. Either would hide the package a later
    folder has."""
    top = parts[0]
    file = folder / f"{top}.py"
    if (folder / top).is_dir() and (
        (folder / top / "__init__.py").is_file() or not file.is_file()
    ):  # a folder without `__init__.py` beside `top.py`: the import takes the file
        return True
    return file.is_file() and len(parts) == 1 and not is_generated_module(file)


def _generated_hint(exc: BaseException, parts: Sequence[str], folders: Sequence[Path]) -> str:
    """Why a file of the tool module's name was passed over, when that is why it was not
    found: it starts with the generated-module header (`_holds`)."""
    if not isinstance(exc, ModuleNotFoundError) or exc.name != parts[0]:
        return ""  # another module is missing (one the tools import): not this file's doing
    for folder in folders:
        file = folder / f"{parts[0]}.py"
        if len(parts) == 1 and file.is_file() and is_generated_module(file):
            return (
                f" ({file} was passed over: its first line says it is a module twelvefold"
                " generated, which holds no tools; if you wrote it, remove that line)"
            )
    return ""


def is_generated_module(file: Path) -> bool:
    """Whether `file` starts with the line every generated module starts with (Go's
    convention for generated files: "Code generated ... DO NOT EDIT.")."""
    try:
        with file.open("rb") as source:
            first = source.readline(200)
    except OSError:
        return False
    return first.startswith(b"# Code generated by twelvefold") and b"DO NOT EDIT." in first


def _private_package(folder: Path) -> str:
    """A package whose only search location is `folder`, registered once per folder: the
    import system finds `tools.py` or a `tools/` package there and nowhere else, and a
    relative import inside a tools package stays inside it."""
    name = _PRIVATE_PREFIX + hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    if name not in sys.modules:
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
    return name


def describe(exc: BaseException) -> ErrorInfo:
    """An exception as the context window shows it: its type and a one-line message.

    Never raises, whatever the exception's `__str__` does (a tool's exceptions are input
    like any other)."""
    try:
        if isinstance(exc, ValidationError):
            message = f"validation error(s): {validation_problems(exc, limit=1)}"
        elif isinstance(exc, TimeoutError):
            message = str(exc) or "timed out"
        elif isinstance(exc, SystemExit):
            message = f"the tool tried to end the process (exit code {exc.code!r})"
        else:
            message = " ".join(str(exc).split())
    except Exception:
        message = "(its message could not be read)"
    if len(message) > _MESSAGE_LIMIT:
        message = message[: _MESSAGE_LIMIT - 1] + "…"
    return ErrorInfo(type(exc).__name__, message)


def coerce(
    result: Any, output: type[BaseModel], members: tuple[type[BaseModel], ...] = ()
) -> BaseModel:
    """A tool may return its declared model, a dict, or another model with the same fields.

    For a result declared as a union (`members`, e.g. `-> Found | NotFound`) it may return
    an instance of a member, a model with a member's declared name, or a dict that is valid
    for exactly one member (the generated models forbid extra fields). A dict that fits
    none, or more than one, is a `TypeError` / `ValueError` naming the members: the step
    fails (its outcome is in the log) rather than the result being routed by a guess.
    """
    if not members:
        if type(result) is dict:  # what most tools return: one test, not three
            # `model_validate`'s own work, without its wrapper (a third of the cost): the
            # generated models never override it (a deferred validator is built here).
            return output.__pydantic_validator__.validate_python(result)  # type: ignore[no-any-return]
        if isinstance(result, output):
            # Validated again (the generated types revalidate instances): one built by
            # `model_construct`, or a subclass with fields of its own, is not trusted.
            return output.__pydantic_validator__.validate_python(result)  # type: ignore[no-any-return]
        if isinstance(result, BaseModel):
            result = result.model_dump(by_alias=True, warnings=False)
        if isinstance(result, dict):
            return output.model_validate(result)
        raise TypeError(
            f"returned {type(result).__name__}, expected {output.__name__} or a dict of its fields"
        )
    return _coerce_member(result, members)


def _coerce_member(result: Any, members: tuple[type[BaseModel], ...]) -> BaseModel:
    shown = " | ".join(declared_name(m) for m in members)
    if isinstance(result, BaseModel) and type(result) in members:
        return type(result).model_validate(result)  # validated again, as in `coerce`
    if isinstance(result, BaseModel):
        named = [m for m in members if declared_name(m) == declared_name(type(result))]
        data = result.model_dump(by_alias=True, warnings=False)
        if named:
            return named[0].model_validate(data)
        result = data
    if not isinstance(result, dict):
        raise TypeError(f"returned {type(result).__name__}, expected one of {shown} or a dict")
    fits: list[BaseModel] = []
    for member in members:
        try:
            fits.append(member.model_validate(result))
        except ValidationError:
            continue
    if len(fits) == 1:
        return fits[0]
    if not fits:
        raise ValueError(f"the result is none of {shown}: {_fields(result)}")
    both = " and ".join(declared_name(type(f)) for f in fits)
    raise ValueError(
        f"the result could be {both}: return an instance of the one you mean, not a dict"
    )


def _fields(result: dict[Any, Any]) -> str:
    keys = ", ".join(repr(str(k))[:40] for k in list(result)[:8])
    return f"a dict with keys {keys}" if keys else "an empty dict"


class _Raised(Exception):
    """The tool raised `error` (any BaseException: SystemExit too): the attempt failed."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


class _TimedOut(Exception):
    """The attempt did not return in time and may still be running."""


class _StillRunning(Exception):
    """An earlier attempt of the same call is still running in this process."""


# ---- one call: attempts, retries, the key in flight ------------------------------


class _Running:
    """An attempt in flight, until `set` when it returns; `wait` for that as with a
    `threading.Event`, which costs several times as much to make on every call."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = threading.Lock()
        self._held.acquire()

    def set(self) -> None:
        self._held.release()

    def wait(self, timeout: float | None = None) -> bool:
        """Whether the attempt returned within `timeout` seconds (None: ever)."""
        if not self._held.acquire(timeout=-1 if timeout is None else timeout):
            return False
        self._held.release()  # others may wait for the same attempt
        return True


class _RunningHere:
    """An attempt running on its caller's own thread (`call_now`), until it returns: the
    marker costs no lock to make (a `_Running` does), since nothing needs to be told
    when it returns but the rare caller on another thread that waits for the same key,
    which looks every millisecond (`wait`, as `_Running.wait`)."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def set(self) -> None:
        """Nothing to do: the attempt returned once its key is out of `_IN_FLIGHT`."""

    def wait(self, timeout: float | None = None) -> bool:
        """Whether the attempt returned within `timeout` seconds (None: ever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while _IN_FLIGHT.get(self.key) is self:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.001)
        return True


_IN_FLIGHT: dict[str, _Running | _RunningHere] = {}
"""Keys of attempts running in this process, each set when it returns. Each access is one
dict operation, atomic without a lock: an attempt enters with `setdefault` (never
replacing another's marker) and only the attempt that entered takes its marker out."""


def running(key: str) -> bool:
    """Whether an attempt of the call with this key is running in this process (an
    abandoned, timed-out one included)."""
    return key in _IN_FLIGHT


def _enter(key: str) -> _Running | None:
    """Mark an attempt of `key` as running; None when one already is."""
    done = _Running()
    return done if _IN_FLIGHT.setdefault(key, done) is done else None


def _leave(key: str, done: _Running | _RunningHere) -> None:
    if _IN_FLIGHT.get(key) is done:  # ours: nobody else takes it out or replaces it
        del _IN_FLIGHT[key]
    done.set()


async def call(
    tool: Tool, action: CallTool, key: str, *, offload: bool, attempt: int = 1
) -> Outcome:
    """Call the tool: attempts `attempt`, `attempt + 1`, ... up to `1 + action.retries`,
    each limited to `action.timeout_seconds`, all with the one `key`; then check the result.

    - A tool that raises (any `BaseException` but a `KeyboardInterrupt` in the main
      thread, which is the person stopping the process) fails the attempt; the error is
      the last attempt's. Without `backoff` the next attempt starts at once; with one,
      `call` returns the failure with `retry_in` (the backoff, doubling after each
      attempt) and the caller waits it out durably (runtime/loop.py, `AttemptFailed`).
    - A result of the wrong shape fails the step at once, never retried: the tool ran.
    - An attempt that times out may still be running. A tool without an idempotency key
      is then never tried again automatically (it may have done its work); one with a
      key is tried again only after the abandoned attempt returned (waiting for it at
      most one more timeout), so two attempts of one call never overlap.
    - A call whose key has an attempt still running in this process fails at once with
      `StillRunning`.

    `offload` runs a synchronous tool on a worker thread so an event loop stays free; a
    timeout always does. Times are seconds.
    """
    if not tool.is_async and action.timeout_seconds is None and not offload:
        return call_now(tool, action, key, attempt=attempt)  # nothing here can wait
    started = time.perf_counter()
    error: ErrorInfo | None = None
    unknown = False
    last = action.retries + 1
    for number in range(max(1, attempt), last + 1):
        try:
            raw = await _attempt(tool, action, key, offload=offload)
        except _Raised as exc:
            error, unknown = describe(exc.error), False
        except _TimedOut as exc:
            error, unknown = describe(TimeoutError(str(exc))), True
            if not tool.accepts_key or not await _returned(key, action.timeout_seconds):
                break  # it may have run, or may still be running: never start another
        except _StillRunning:
            return Outcome(None, _still_running(tool, key), _usage(started), unknown=True)
        else:
            return _returned_outcome(raw, action, started, number)
        if number < last and action.backoff_seconds > 0:
            return _backoff(action, error, started, number, unknown)
    return Outcome(None, error, _usage(started), unknown=unknown)


def call_now(tool: Tool, action: CallTool, key: str, *, attempt: int = 1) -> Outcome:
    """`call` for a synchronous tool without a timeout, on this thread (no event loop is
    needed: nothing waits). The same attempts, key, in-flight marker and outcomes as
    `call`; no attempt can time out. `call` hands such calls to it; the loop's
    synchronous path (runtime/fastpath.py) calls `call_here`, which does its work."""
    done = call_here(tool, action, key, attempt)
    if isinstance(done, Outcome):
        return done
    result, ms, number = done
    return _new_outcome(result, None, build_usage(ms), False, number)


Returned = tuple[BaseModel, float, int]
"""What `call_here` gives for the usual call: the result (valid for its declared type),
the call's latency in ms (as `ms_since` gives it) and the number of the attempt."""


def call_here(tool: Tool, action: CallTool, key: str, attempt: int = 1) -> Outcome | Returned:
    """`call_now`'s work: its `Outcome`, or for the usual call, whose tool returned a dict
    valid for the declared type (not a union), that call's `Returned` (no `Outcome` nor
    `Usage` is built for it: the synchronous path builds its `ToolResult` from it)."""
    started = time.perf_counter()
    error: ErrorInfo | None = None
    last = action.retries + 1
    function, accepts_key = tool.function, tool.accepts_key
    value = action.value if tool.takes_input else None
    for number in range(attempt if attempt > 1 else 1, last + 1):
        # One attempt, written out here (every routine tool call makes one): marked in
        # flight by a `_RunningHere`, which never replaces another attempt's marker, and
        # taken out by this attempt alone once the tool returns or raises.
        done = _new_marker(_RunningHere)
        done.key = key
        if _IN_FLIGHT.setdefault(key, done) is not done:
            return Outcome(None, _still_running(tool, key), _usage(started), unknown=True)
        raised: BaseException | None = None
        try:
            if value is not None:
                raw = function(value, idempotency_key=key) if accepts_key else function(value)
            else:
                raw = function(idempotency_key=key) if accepts_key else function()
        except KeyboardInterrupt:
            raise  # Ctrl-C: the call stays started without a result, as after a crash
        except BaseException as exc:
            raised = exc
        finally:
            if _IN_FLIGHT.get(key) is done:
                del _IN_FLIGHT[key]
        if raised is None:
            if type(raw) is dict and not action.outputs:
                # `_returned_outcome` and `coerce` of a dict (what most tools return),
                # written out: a result that does not validate takes their way below.
                try:
                    result = action.output.__pydantic_validator__.validate_python(raw)
                except Exception:
                    pass
                else:
                    ms = round((time.perf_counter() - started) * 1_000_000) / 1000  # `ms_since`
                    return result, ms, number
            return _returned_outcome(raw, action, started, number)
        error, raised = describe(raised), None  # (no cycle through the traceback)
        if number < last and action.backoff_seconds > 0:
            return _backoff(action, error, started, number, False)
    return Outcome(None, error, _usage(started))


_new_marker = object.__new__
"""A `_RunningHere` made without a call to its `__init__` (its key is set after)."""


def _returned_outcome(raw: Any, action: CallTool, started: float, number: int) -> Outcome:
    """The outcome of attempt `number`, which returned `raw`: the result coerced to the
    declared type, or (a result of the wrong shape) a failure whose outcome is unknown."""
    try:
        result = coerce(raw, action.output, action.outputs)
    except Exception as exc:  # the tool ran; trying again could repeat its work
        return Outcome(None, describe(exc), _usage(started), unknown=True)
    return Outcome(result, None, build_usage(ms_since(started)), False, number)  # (by position)


def _backoff(
    action: CallTool, error: ErrorInfo | None, started: float, number: int, unknown: bool
) -> Outcome:
    """Attempt `number` failed: the caller records it and tries again after the backoff
    (doubling after each attempt)."""
    wait = action.backoff_seconds * 2 ** (number - 1)
    return Outcome(None, error, _usage(started), unknown, number, retry_in=wait)


def _still_running(tool: Tool, key: str) -> ErrorInfo:
    return ErrorInfo(
        "StillRunning",
        f"an earlier attempt of `{tool.name}` with key {key} timed out and is still running "
        "in this process; retry once it has returned",
    )


async def _returned(key: str, timeout: float | None) -> bool:
    """Wait (at most `timeout` seconds) for an abandoned attempt of `key` to return."""
    import asyncio

    done = _IN_FLIGHT.get(key)
    if done is None:
        return True
    return await asyncio.to_thread(done.wait, timeout)


def _usage(started: float) -> Usage:
    return build_usage(latency_ms=ms_since(started))


def ms_since(started: float) -> float:
    """Milliseconds since `started` (a `time.perf_counter()`), to the microsecond, as
    latencies are recorded: the float nearest a whole number of µs, as `round(ms, 3)`
    gives (the two may differ by 1 µs at a tie), at a fifth of its cost (`round` with
    digits formats the float in decimal; there is one per model and tool call)."""
    return round((time.perf_counter() - started) * 1_000_000) / 1000


async def _attempt(tool: Tool, action: CallTool, key: str, *, offload: bool) -> Any:
    """One attempt. Raises `_Raised` with what the tool raised, `_TimedOut` when it did
    not return within the timeout, `_StillRunning` when an attempt with this key has not
    returned yet (none is started then); `KeyboardInterrupt` (Ctrl-C in the main thread) and
    the cancellation of the caller's own task pass through."""
    takes = tool.takes_input and action.value is not None
    args: tuple[Any, ...] = (action.value,) if takes else ()
    kwargs: dict[str, Any] = {"idempotency_key": key} if tool.accepts_key else {}
    timeout = action.timeout_seconds
    done = _enter(key)
    if done is None:
        raise _StillRunning
    if tool.is_async:
        import asyncio

        try:
            value, error = await asyncio.wait_for(_guarded(tool, args, kwargs), timeout)
        except TimeoutError:
            raise _TimedOut(f"`{tool.name}` did not return within {timeout:g}s") from None
        finally:
            _leave(key, done)  # cancelled at its timeout: it is no longer running
    else:  # a synchronous tool with a timeout or offloaded (else `call_now` runs it)
        import asyncio

        future = _in_daemon_thread(tool.function, args, kwargs, lambda: _leave(key, done))
        try:
            value, error = await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            # Abandoned, not stopped: the key stays in flight until the thread returns.
            raise _TimedOut(f"`{tool.name}` did not return within {timeout:g}s") from None
    if error is not None:
        raise _Raised(error)
    return value


async def _guarded(
    tool: Tool, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, BaseException | None]:
    """Await an async tool inside a task of our own, catching what it raises: asyncio
    would carry a SystemExit raised in a task out of the event loop."""
    import asyncio

    try:
        return await tool.function(*args, **kwargs), None
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # our timeout, or our caller cancelled
        return None, asyncio.CancelledError("the tool raised CancelledError")
    except BaseException as exc:
        return None, exc


def _in_daemon_thread(
    function: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    returned: Callable[[], None],
) -> asyncio.Future[tuple[Any, BaseException | None]]:
    """Run `function` on a daemon thread and resolve to `(value, exception)`: unlike the
    default executor, a tool that never returns does not keep the process alive at exit.
    `returned` is called on that thread once the function returns or raises, whoever
    still waits for it. Nothing the tool raises (SystemExit included) escapes the thread,
    which is one of `_Daemons`' (a thread is kept once idle, for the next call)."""
    import asyncio

    loop = asyncio.get_running_loop()
    future: asyncio.Future[tuple[Any, BaseException | None]] = loop.create_future()

    def settle(outcome: tuple[Any, BaseException | None]) -> None:
        if not future.done():  # else: timed out and abandoned
            future.set_result(outcome)

    def work() -> Callable[[], None]:
        outcome: tuple[Any, BaseException | None]
        try:
            outcome = (function(*args, **kwargs), None)
        except BaseException as exc:  # only the tool can raise here, even KeyboardInterrupt
            outcome = (None, exc)
        finally:
            returned()
        return functools.partial(tell, outcome)

    def tell(outcome: tuple[Any, BaseException | None]) -> None:
        # A closed loop raises RuntimeError: nobody waits for this tool any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, outcome)

    _DAEMONS.run(work)
    return future


class _Daemons:
    """Daemon threads for synchronous tools, kept a while once idle: starting a thread
    for every call cost more CPU than a quick tool's whole step. A call never waits for
    a busy thread (a tool that hangs keeps its thread, and the next call gets another),
    and being daemons, none keeps the process alive at exit."""

    IDLE_SECONDS = 30.0
    """How long a thread with nothing to do waits for another call before it ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = 0
        """Threads waiting for a job, less the jobs handed to them and not yet taken."""
        self._jobs: queue.SimpleQueue[Callable[[], Callable[[], None]]] = queue.SimpleQueue()

    def run(self, job: Callable[[], Callable[[], None]]) -> None:
        """Run `job` (which must not raise) on an idle thread, or a new one; then what it
        returns, once the thread counts itself idle (so a caller woken by that finds it
        free for its next call)."""
        with self._lock:
            handed = self._idle > 0
            if handed:
                self._idle -= 1
        if handed:
            self._jobs.put(job)
        else:
            threading.Thread(
                target=self._serve, args=(job,), name=f"tool-{os.getpid()}", daemon=True
            ).start()

    def _serve(self, job: Callable[[], Callable[[], None]]) -> None:
        while True:
            then = job()
            with self._lock:
                self._idle += 1
            then()
            while True:
                try:
                    job = self._jobs.get(timeout=self.IDLE_SECONDS)
                    break
                except queue.Empty:
                    with self._lock:
                        # More threads wait than jobs were handed out: one may end. Else a
                        # job is on its way to the queue, and this thread may be its taker.
                        if self._idle > 0:
                            self._idle -= 1
                            return


_DAEMONS = _Daemons()


def _forget_daemons() -> None:
    """In a forked child: the parent's threads are not there, so none of them is idle."""
    global _DAEMONS
    _DAEMONS = _Daemons()


os.register_at_fork(after_in_child=_forget_daemons)
