"""Options several commands share, defined once so that their defaults cannot drift apart."""

from __future__ import annotations

from pathlib import Path

import click

DEFAULT_DB = Path(".twelvefold") / "threads.db"
"""Where threads are stored unless --db or TWELVEFOLD_DB says otherwise (relative to the
current folder), so a thread launched by one command is found by the next."""

DB = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="TWELVEFOLD_DB",
    default=DEFAULT_DB,
    show_default=True,
    help="The SQLite file threads are stored in (or TWELVEFOLD_DB).",
)

PROMPTS = click.option(
    "--prompts",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder that prompt paths resolve under (default: the nearest prompts/).",
)

AGENT = click.option(
    "--agent",
    "agent",
    metavar="PATH",
    help="Load the thread's agent from PATH (a .agent file or a generated module) instead of "
    "the place the thread recorded, e.g. after the agent was moved.",
)
