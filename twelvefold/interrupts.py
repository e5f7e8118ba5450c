"""Ctrl-C remembered as well as raised, for the moments Python loses it.

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
each thread `twelvefold test` generates. Imports only the standard library: it is
installed before anything else is loaded.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

SEEN = threading.Event()
"""Set by every Ctrl-C while `remembering()` is installed, whatever became of its
`KeyboardInterrupt`. Never cleared: the process is on its way out."""


def remember(signum: int, frame: FrameType | None) -> None:
    """A SIGINT handler: Python's own (raise `KeyboardInterrupt`), remembered in SEEN."""
    SEEN.set()
    raise KeyboardInterrupt


def quiet_lost(unraisable: sys.UnraisableHookArgs) -> None:
    """A `sys.unraisablehook`: a `KeyboardInterrupt` Python could not raise is remembered
    in SEEN, not printed; anything else is printed as Python does."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        SEEN.set()
        return
    sys.__unraisablehook__(unraisable)


def remembering() -> None:
    """Install `remember` as the SIGINT handler (only over Python's own, and only from the
    main thread, where signal handlers live) and `quiet_lost` as the unraisable hook."""
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        signal.signal(signal.SIGINT, remember)
    sys.unraisablehook = quiet_lost


def go_on() -> None:
    """Raise `KeyboardInterrupt` if a Ctrl-C came (see SEEN); a point where a command can
    stop cleanly calls it."""
    if SEEN.is_set():
        raise KeyboardInterrupt
