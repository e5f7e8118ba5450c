"""Ctrl-C (and SIGTERM) remembered as well as raised, for the moments Python loses it.

A `KeyboardInterrupt` raised inside a callback that Python itself calls cannot reach the
code that was running: a weakref callback (importlib's per-module locks have one, so any
import can be where it lands), a garbage-collection callback (hypothesis registers one),
a `__del__`. Python hands it to `sys.unraisablehook`, which prints "Exception ignored in"
and a traceback, and the program goes on as if no Ctrl-C had come: `twelvefold test
--examples 100000` then ran for minutes after its Ctrl-C (CI met it while the command's
modules were being imported).

The `twelvefold` command installs `remembering()` before it loads a command: its handler
records each Ctrl-C in `SEEN` (and raises, as Python's own does), and its hook records a
lost one without printing. Where the command can stop cleanly it calls `go_on()`, which
raises the interrupt again: as a command starts (twelvefold/commands/report.py) and at
each thread `twelvefold test` generates. Once the command's result is out, `done()` makes
a Ctrl-C change nothing.

SIGTERM (`kill`, a container's stop) is handled the same way where nothing else handles
it: it raises `KeyboardInterrupt` too, so a command stops on it as on a Ctrl-C (its one
line, a thread's lease let go; by default Python ends at once, and the lease is held until
it lapses), and ends with status 143 (`exit_status`). Imports only the standard library:
it is installed before anything else is loaded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from types import FrameType


class _Flag:
    """`threading.Event`'s `set` and `is_set` without its lock: a signal handler runs
    between any two bytecodes of the main thread, also inside an `Event.set` a first
    signal's handler began, which a second signal's then waited on for ever (rt15)."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def clear(self) -> None:
        self._set = False


SEEN = _Flag()
"""Set by every Ctrl-C (or SIGTERM) while `remembering()` is installed, whatever became of
its `KeyboardInterrupt`. Cleared only by `forget`: the process is on its way out."""

AGAIN_SECONDS = 2.0
"""A second Ctrl-C (or SIGTERM) this long after the first, while the stop the first
began is still under way, stops the process at once; sooner, it is taken for the same
stop (a key pressed twice, a supervisor repeating its signal)."""

_received: list[int] = []
_raised_at: list[float] = []
"""When the `KeyboardInterrupt` now on its way was raised (`time.monotonic`): one at a
time, so that a second cannot cut the first one's stop (its line, its lease let go)
short, or reach click as `Aborted!`."""


def remember(signum: int, frame: FrameType | None) -> None:
    """A SIGINT (or SIGTERM) handler: Python's own for SIGINT (raise `KeyboardInterrupt`),
    remembered in SEEN, with the signal for `exit_status`. A second one while the first
    one's stop is under way changes nothing for `AGAIN_SECONDS`, then ends the process at
    once (`_at_once`). Takes no lock: it may run inside itself."""
    _received.append(signum)
    SEEN.set()
    if not _raised_at:
        _raised_at.append(time.monotonic())
        raise KeyboardInterrupt
    if time.monotonic() - _raised_at[0] >= AGAIN_SECONDS:
        _at_once()


def _at_once() -> None:
    """The stop a first signal began has not ended by a second: end now, as a kill would
    (every event was on disk before the next step began; a lease held lapses)."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    with contextlib.suppress(Exception):
        sys.stderr.write(
            f"{stopped_word()}: stopped at once by a second signal: what was recorded is "
            "kept; a thread this command ran keeps its lease until it lapses "
            "(TWELVEFOLD_LEASE_SECONDS), then `twelvefold resume` runs it on\n"
        )
        sys.stderr.flush()
    os._exit(exit_status())


def forget() -> None:
    """Forget every signal seen, for a process that goes on after one (a test's)."""
    SEEN.clear()
    _received.clear()
    _raised_at.clear()


def exit_status() -> int:
    """The status a command stopped by a signal ends with, as a shell reports one: 130
    after a Ctrl-C (or none seen), 143 after a SIGTERM."""
    return 128 + (_received[0] if _received else signal.SIGINT)


def stopped_word() -> str:
    """How the command's last line begins: `interrupted` (Ctrl-C) or `terminated`."""
    return "terminated" if exit_status() == 128 + signal.SIGTERM else "interrupted"


def quiet_lost(unraisable: sys.UnraisableHookArgs) -> None:
    """A `sys.unraisablehook`: a `KeyboardInterrupt` Python could not raise is remembered
    in SEEN, not printed; anything else is printed as Python does."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        SEEN.set()
        _raised_at.clear()  # lost, not on its way: the next one raises (`go_on` may first)
        return
    sys.__unraisablehook__(unraisable)


_PROGRAM: list[bool] = []
"""Whether this process is the `twelvefold` program (`remembering(program=True)`), not a
caller running a command in its own process (click's `CliRunner`, a test)."""


def remembering(*, program: bool = False) -> None:
    """Install `remember` as the SIGINT and SIGTERM handler (each only over Python's own,
    and only from the main thread, where signal handlers live) and `quiet_lost` as the
    unraisable hook. `program`: for the `twelvefold` program itself, whose process ends
    with its command (`done`)."""
    if program:
        _PROGRAM.append(True)
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, remember)
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, remember)
    sys.unraisablehook = quiet_lost


def go_on() -> None:
    """Raise `KeyboardInterrupt` if a Ctrl-C came (see SEEN); a point where a command can
    stop cleanly calls it."""
    if SEEN.is_set():
        raise KeyboardInterrupt


def done() -> None:
    """The command's result is out (its output written, its status decided): a Ctrl-C
    or SIGTERM from now on is ignored, and the process ends with the command's own
    status. Without this, one during the tenths of a second Python takes to shut down
    ended the process by the signal (status -2 or -15 to a parent, 130 or 143 to a shell,
    and no line) after a result that was whole, as Python gives every handler it
    installed back to the system before it frees its modules."""
    # Only in the program: a process that goes on after the command (a test running it
    # with `CliRunner`) would ignore Ctrl-C from then on, and so would every process it
    # starts (an ignored signal stays ignored across exec): CI's Ctrl-C tests then hung.
    if not _PROGRAM or threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is remember:
            signal.signal(signum, signal.SIG_IGN)
