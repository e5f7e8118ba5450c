"""The `twelvefold` program's entry point (`[project.scripts]`, `python -m twelvefold`).

Ctrl-C and SIGTERM are taken over first (twelvefold/interrupts.py), before the command
line module imports anything: a SIGTERM while click loads would otherwise end the
process with no word, and a Ctrl-C lost in an import would go unnoticed. One that lands
while the command line loads is said in one line here, never as a traceback.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not `typing`'s: importing it takes milliseconds before the handlers
if TYPE_CHECKING:
    from typing import NoReturn


def main() -> None:
    try:
        from twelvefold.interrupts import remembering

        remembering(program=True)
        from twelvefold.cli import main as run_command_line
    except (KeyboardInterrupt, Exception) as exc:
        if not is_interrupt(exc):
            raise
        not_started()
    run_command_line()


def is_interrupt(exc: BaseException) -> bool:
    """A `KeyboardInterrupt`, the `RuntimeError` Python 3.11 wraps one in when it lands
    in a class's `__set_name__` (while a module defines a class), or any exception raised
    once a Ctrl-C came (`interrupts.SEEN`): a library's compiled code that a Ctrl-C
    interrupted may raise an error of its own instead (pydantic-core's `SchemaError` as a
    model class is built, naming the interrupt only in its message)."""
    if isinstance(exc, KeyboardInterrupt) or (
        isinstance(exc, RuntimeError) and isinstance(exc.__cause__, KeyboardInterrupt)
    ):
        return True
    interrupts = sys.modules.get("twelvefold.interrupts")  # (not imported: no Ctrl-C seen)
    return interrupts is not None and bool(interrupts.SEEN.is_set())


def not_started() -> NoReturn:
    """Ctrl-C (or SIGTERM) before the command began (as the command line loads, or as
    click starts): the one line and exit 130 (143) of twelvefold/commands/report.py,
    written here since that module may not be imported yet."""
    exec("")  # handled: exit 130, not by SIGINT (report.py, `interrupted`, says why)
    try:
        from twelvefold.interrupts import done, exit_status, stopped_word
    except KeyboardInterrupt:  # a second one, as that module loads: a Ctrl-C's
        word, status = "interrupted", 130
    else:
        done()  # a signal after this line changes nothing (as after any command's result)
        word, status = stopped_word(), exit_status()
    sys.stderr.write(f"{word}: the command had not started: nothing was done\n")
    sys.exit(status)
