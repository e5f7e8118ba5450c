"""`twelvefold db upgrade`: bring a store's schema to this version (docs/stores.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from twelvefold.commands.options import DB
from twelvefold.commands.output import echo
from twelvefold.runtime.terminal import one_line

if TYPE_CHECKING:
    from twelvefold.runtime.store import StoreLocation


@click.group()
def db() -> None:
    """Manage the thread store's schema."""


@db.command("upgrade")
@DB
def upgrade(db: StoreLocation) -> None:
    """Bring the store's schema up to this twelvefold's version (made if missing)."""
    from twelvefold.runtime.schema import CURRENT
    from twelvefold.runtime.store import upgrade_store

    done = upgrade_store(db)
    queued = _upgrade_queue(db)
    if queued:
        echo(f"{one_line(done.where)}: applied the job queue's schema (procrastinate)")
    if not done.applied:
        echo(f"{one_line(done.where)}: schema version {CURRENT}, nothing to do")
        return
    for migration in done.applied:
        echo(f"{one_line(done.where)}: applied migration {migration.version} ({migration.name})")
    echo(f"{one_line(done.where)}: schema version {done.before} -> {CURRENT}")


def _upgrade_queue(db: StoreLocation) -> bool:
    """On a PostgreSQL store, apply the job queue's schema too (twelvefold/server/queue.py:
    `twelvefold worker` takes its jobs from it). True when it was applied now."""
    from twelvefold.runtime.store import StoreUrl

    if not isinstance(db, StoreUrl):
        return False
    import psycopg

    from twelvefold.runtime.store import StoreError, shown_url
    from twelvefold.server.queue import apply_schema

    try:
        return apply_schema(db.url)
    except psycopg.Error as exc:  # PostgreSQL's words, one line, without the password
        reason = shown_url(" ".join(str(exc).split()), secret_of=db.url)
        raise StoreError(f"cannot apply the job queue's schema at {db}: {reason}") from None
