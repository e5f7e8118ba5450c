"""The `twelvefold` command. Each family of subcommands lives in twelvefold/commands/.

Exit codes: 0 ok, 1 errors in the user's input (diagnostics, a failed thread), 2 usage.
"""

from __future__ import annotations

import sys

import click

from . import __version__
from .commands import LazyGroup


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="twelvefold")
def cli() -> None:
    """Compile, check, test and run .agent files."""


def main() -> None:
    try:
        cli.main(prog_name="twelvefold", standalone_mode=True)
    except KeyboardInterrupt:  # pragma: no cover - interactive only
        sys.exit(130)
