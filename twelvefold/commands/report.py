"""One reporter for every command: what a user can get wrong is one line on stderr and
exit 1, never a traceback.

`LazyGroup.get_command` (twelvefold/commands/__init__.py) hands out every command
through `reporting`, which runs its callback under `reported`: a command written later,
or a line of one outside its main block (a store looked for before it is opened), cannot
miss it. The exception classes it reports are imported when one is raised, so a command
that never fails imports nothing more for it.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Concatenate, NoReturn, ParamSpec

import click

from twelvefold.interrupts import SEEN, done, exit_status, go_on, stopped_word

P = ParamSpec("P")

EXIT_PROBLEM = 1
"""A problem with the input (a store that cannot be used, a thread not found, a decision
that does not fit); 2 stays click's, for usage errors."""

EXIT_INTERRUPTED = 130
"""Ctrl-C (128 + SIGINT, as a shell reports a process SIGINT ended): nothing is lost, the
thread stays as it stood (`resume` runs it on)."""


class CommandError(Exception):
    """A problem to report in one line and exit 1 with (never a traceback)."""


def _user_problems() -> tuple[type[BaseException], ...]:
    """What a user can get wrong, said in the exception's own words."""
    from twelvefold.runtime.api import InputError
    from twelvefold.runtime.integrity import LogError
    from twelvefold.runtime.lease import LeaseError
    from twelvefold.runtime.store import Conflict, StoreError, ThreadNotFound
    from twelvefold.runtime.tracing import TracingUnavailable
    from twelvefold.runtime.types import IllegalEvent

    return (
        Conflict,
        IllegalEvent,
        LeaseError,
        LogError,
        InputError,
        StoreError,
        ThreadNotFound,
        CommandError,
        TracingUnavailable,
    )


def _problem(
    line: str,
    kind: str,
    message: str,
    as_json: bool,
    code: int = EXIT_PROBLEM,
    *,
    lines: bool = False,
) -> NoReturn:
    """`line` on stderr (with `as_json`, the error object on stdout too) and exit `code`.
    One line, the values in it escaped (a `--db` with a line break cannot forge an
    `error:` line below); a compile error's diagnostics (`lines`) are many lines, each
    escaping its own values."""
    say_problem(line, kind, message, as_json, lines=lines)
    sys.exit(code)


def say_problem(line: str, kind: str, message: str, as_json: bool, *, lines: bool = False) -> None:
    """What `_problem` prints, without exiting: for an error click itself exits on (a
    `click.ClickException` raised while options are read, twelvefold/commands/options.py)."""
    # Imported here, not at the top: an interrupt is reported by this module too, and
    # may land while twelvefold.runtime is being imported (`interrupted`).
    from twelvefold.commands.output import echo
    from twelvefold.runtime.terminal import one_line

    echo(line if lines else one_line(line), err=True)
    if as_json:
        echo(json.dumps({"error": {"type": kind, "message": message}}, ensure_ascii=False))


def interrupted(exc: KeyboardInterrupt, as_json: bool = False) -> NoReturn:
    """Ctrl-C: one line (`interrupted: ` and where the command stopped, when it says so)
    and exit 130, never a traceback.

    A `KeyboardInterrupt` raised while CPython runs a string of code (`exec` of source
    text: `dataclasses` builds each class's methods that way, so any import or any model
    class made at run time can be where Ctrl-C lands) marks the whole process as ended
    by an unhandled Ctrl-C, whoever catches it afterwards; at exit CPython then kills
    itself with SIGINT instead of exiting with the status it was given. Running a string
    the same way once more clears that mark: the interrupt was handled here."""
    exec("")  # clears CPython's "ended by an unhandled Ctrl-C" (see above)
    done()  # its status is decided: a signal from now on changes nothing (interrupts.py)
    say_interrupted(exc, as_json)
    sys.exit(exit_status())  # 130, or 143 after a SIGTERM (twelvefold/interrupts.py)


def say_interrupted(exc: KeyboardInterrupt, as_json: bool = False) -> None:
    """What `interrupted` prints, without exiting: for a command that stops with
    `os._exit` (`serve`, `worker`: a tool call still blocked in a thread must not keep
    the process alive)."""
    word = stopped_word()  # `interrupted`, or `terminated` after a SIGTERM
    message = str(exc) or word
    line = f"{word}: {exc}" if str(exc) else message
    # Said without importing anything more: a Ctrl-C can land while a module is being
    # imported (pydantic, and the `_decimal` extension under it), and importing it again
    # here would run that extension's set-up a second time, which writes a C warning to
    # stderr. The line is the runtime's own words; anything unprintable is escaped.
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)
    click.echo(shown, err=True)
    if as_json:
        click.echo(json.dumps({"error": {"type": "Interrupted", "message": message}}))


class Stage:
    """Where a long command stands, as the line a Ctrl-C now would end it with (what was
    done, what state the store is in, how to go on): set as it goes, read by `saying`.
    Made of text ready beforehand, so the interrupt path imports and computes nothing."""

    def __init__(self, said: str) -> None:
        self.said = said


@contextmanager
def saying(stage: Stage) -> Iterator[None]:
    """A Ctrl-C within becomes a `KeyboardInterrupt` saying `stage.said` (a message it
    already carries, from deeper in, is kept), for `reported` to print in one line."""
    try:
        yield
    except KeyboardInterrupt as exc:
        raise KeyboardInterrupt(str(exc) or stage.said) from None
    except Exception as exc:
        if interrupt_within(exc) is None:
            raise
        raise KeyboardInterrupt(stage.said) from None


_FIRST = "_twelvefold_first_stage"
"""The attribute of a `staged` command's callback that holds its first line."""


def staged(
    first: str,
) -> Callable[[Callable[Concatenate[Stage, P], None]], Callable[P, None]]:
    """A long command that tells where it stands: it is given a `Stage` saying `first`
    (until it says more), and a Ctrl-C at any moment inside it ends with that line
    (`saying`)."""

    def decorate(command: Callable[Concatenate[Stage, P], None]) -> Callable[P, None]:
        @functools.wraps(command)
        def run(*args: P.args, **kwargs: P.kwargs) -> None:
            stage = Stage(first)
            with saying(stage):
                command(stage, *args, **kwargs)

        # Read by `reporting`: an option's wrapper around `run` (`--db`'s finds the store
        # in the configuration) is the command too; `functools.wraps` carries it there.
        setattr(run, _FIRST, first)
        return run

    return decorate


def interrupt_within(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C `exc` is, was raised from, or stands for. CPython 3.11 wraps whatever a
    descriptor's `__set_name__` raises while a class is made (`functools.cached_property`
    has one, so any import can be where it lands) in a `RuntimeError` whose cause is the
    `KeyboardInterrupt`; and a library's compiled code that a Ctrl-C interrupted may raise
    an error of its own, the interrupt named only in its message (pydantic-core's
    `SchemaError` as a model class is built: CI met it as `serve` imported fastapi). Once a
    Ctrl-C came (`interrupts.SEEN`), whatever is raised is that Ctrl-C, not a bug to show a
    traceback for."""
    for _ in range(8):  # a chain of causes, never a cycle
        if isinstance(exc, KeyboardInterrupt):
            return exc
        if exc.__cause__ is None:
            break
        exc = exc.__cause__
    return KeyboardInterrupt() if SEEN.is_set() else None


@contextmanager
def reported(as_json: bool = False) -> Iterator[None]:
    """Turn what a user can get wrong into one clear line on stderr and exit code 1; with
    `as_json`, stdout gets one JSON object too, `{"error": {"type", "message"}}` (the shape
    of a failed thread's `error`, with no `thread_id`), so a script reading stdout always
    has a document to parse (docs/runtime.md). Anything else (a bug) goes on as it was."""
    try:
        yield
    except KeyboardInterrupt as exc:  # Ctrl-C: one line (what `stopped_at` says), no traceback
        interrupted(exc, as_json)
    except BrokenPipeError:  # stdout's reader went away (`| head -1`): end quietly
        from twelvefold.commands.output import reader_gone

        reader_gone()
    except Exception as exc:  # a cassette that cannot be read, a bad prompt, a bad path
        if (cause := interrupt_within(exc)) is not None:
            interrupted(cause, as_json)
        if isinstance(exc, sqlite3.Error):  # a damaged file, a full disk: SQLite's words
            message = f"the thread store cannot be used: {exc}"
            _problem(f"error: {message}", "StoreError", message, as_json)
        from twelvefold.runtime.loading import AgentLoadError
        from twelvefold.runtime.store import StoreNotFound

        kind = type(exc).__name__
        if isinstance(exc, AgentLoadError):  # a compile error's diagnostics: many lines
            _problem(f"error: {exc}", kind, str(exc), as_json, lines=True)
        if isinstance(exc, _user_problems()):
            message = str(exc)
            if isinstance(exc, StoreNotFound):  # named as the user named the store
                from twelvefold.commands.options import store_check

                message = exc.checking(store_check())
            _problem(f"error: {message}", kind, message, as_json)
        if isinstance(exc, OSError) and exc.filename is not None:  # a path the system refuses
            message = f"cannot use {cut(str(exc.filename))}: {exc.strerror or exc}"
            _problem(f"error: {message}", kind, message, as_json)
        if type(exc).__module__.startswith("twelvefold.runtime") or isinstance(exc, OSError):
            _problem(f"error: {kind}: {exc}", kind, str(exc), as_json)
        raise


def cut(text: str, most: int = 200) -> str:
    """`text`, its middle cut out when longer than `most` characters (a path of
    thousands, refused as too long, still fits an error line)."""
    if len(text) <= most:
        return text
    half = most // 2
    return f"{text[:half]}…{text[-half:]}"


_REPORTED = "_twelvefold_reported"


def reporting(command: click.Command) -> click.Command:
    """`command` with its callback run under `reported` (`--json` given: the error object
    on stdout too); a group's commands each the same way. Done once per command."""
    if isinstance(command, click.Group):
        for subcommand in command.commands.values():
            reporting(subcommand)
    callback = command.callback
    if callback is None or getattr(callback, _REPORTED, False):
        return command

    # A `staged` command's first line holds from its callback's first line on; a command
    # that does not say where a Ctrl-C stopped it still names itself.
    stopped = Stage(getattr(callback, _FIRST, f"`{command.name}` stopped before it finished"))

    @functools.wraps(callback)
    def reported_callback(*args: Any, **kwargs: Any) -> Any:
        go_on()  # a Ctrl-C Python lost while the command's modules loaded (interrupts.py)
        try:
            with reported(kwargs.get("as_json") is True), saying(stopped):
                return callback(*args, **kwargs)
        finally:  # however it ended (`reported` makes every end a status): said and decided
            done()

    setattr(reported_callback, _REPORTED, True)
    command.callback = reported_callback
    return command


__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_PROBLEM",
    "CommandError",
    "Stage",
    "cut",
    "interrupt_within",
    "interrupted",
    "reported",
    "reporting",
    "say_interrupted",
    "say_problem",
    "saying",
]
