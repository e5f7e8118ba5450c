"""Options several commands share, defined once so that their defaults cannot drift apart."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

DEFAULT_DB = Path(".twelvefold") / "threads.db"
"""Where threads are stored unless --db or TWELVEFOLD_DB says otherwise (relative to the
current folder), so a thread launched by one command is found by the next."""

_DB_FILE = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="TWELVEFOLD_DB",
    default=DEFAULT_DB,
    show_default=True,
    help="The SQLite file threads are stored in (or TWELVEFOLD_DB).",
)
_STORE_URL = click.option(
    "--store",
    "store_url",
    metavar="URL",
    envvar="TWELVEFOLD_STORE",
    help="The thread store as a URL instead of --db: sqlite:///relative/threads.db or "
    "sqlite:////absolute/threads.db (or TWELVEFOLD_STORE).",
)


def store_path(db: Path, store_url: str | None) -> Path:
    """The SQLite file a command uses: the one `--store URL` names, else `--db FILE`.
    A URL twelvefold cannot use is a one-line error and exit 1."""
    if store_url is None:
        return db
    from twelvefold.runtime.store import StoreError, store_file

    try:
        return store_file(store_url)
    except StoreError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def DB(function: Callable[..., Any]) -> Callable[..., Any]:
    """`--db FILE` and `--store URL` (one spelling of the store works everywhere); the
    command receives `db`, the file either names."""

    @functools.wraps(function)
    def with_store(*args: Any, db: Path, store_url: str | None, **kwargs: Any) -> Any:
        return function(*args, db=store_path(db, store_url), **kwargs)

    return _DB_FILE(_STORE_URL(with_store))


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
