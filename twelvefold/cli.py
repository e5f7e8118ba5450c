"""The `twelvefold` command. Each family of subcommands lives in twelvefold/commands/.

Exit codes: 0 ok, 1 errors in the user's input (diagnostics, a failed thread), 2 usage.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from .command import is_interrupt
from .command import not_started as _interrupted_outside
from .interrupts import remembering

try:  # Ctrl-C while the command starts: one line, as anywhere after
    import click

    from . import __version__
    from .commands import LazyGroup

    @click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="twelvefold")
    def cli() -> None:
        """Compile, check, test and run .agent files."""

except (KeyboardInterrupt, Exception) as exc:
    if not is_interrupt(exc):
        raise
    _interrupted_outside()


def main() -> None:
    remembering(
        program=True
    )  # a Ctrl-C Python loses in a callback is not lost to us (interrupts.py)
    try:
        try:
            cli.main(prog_name="twelvefold", standalone_mode=True)
        finally:
            sys.stdout.flush()  # here, not at shutdown: a reader gone is said nowhere
    except (KeyboardInterrupt, Exception) as exc:  # (command.py, `is_interrupt`)
        if not is_interrupt(exc):
            raise
        _interrupted_outside()
    except BrokenPipeError:
        _reader_gone()
    except SystemExit:
        if type(sys.stdout).__name__.endswith("PacifyFlushWrapper"):
            # click's own handling of EPIPE (in its help or usage output): exit 1 with its
            # streams silenced; ended as every command whose reader went away is instead.
            _reader_gone()
        raise


def _reader_gone() -> NoReturn:
    from .commands.output import reader_gone

    reader_gone()
