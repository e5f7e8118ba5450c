"""`twelvefold migrate [check] AGENT` and `twelvefold prune` (docs/versions.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from twelvefold.commands.options import DB, GivenPath, PathText
from twelvefold.commands.output import damaged_rows, echo, flag_damaged
from twelvefold.commands.report import CommandError
from twelvefold.commands.run import JSON, cli_via, runtime
from twelvefold.runtime.config import ConfigError
from twelvefold.runtime.migrate import Verdict
from twelvefold.runtime.store import StoreLocation
from twelvefold.runtime.terminal import one_line

if TYPE_CHECKING:
    from twelvefold.runtime.retention import Pruned


@click.command()
@click.argument(
    "words", nargs=-1, required=True, type=PathText(named="AGENT"), metavar="[check] AGENT"
)
@click.option("--by", help="Who moves the threads (kept in each thread's version history).")
@DB
@JSON
def migrate(words: tuple[str, ...], by: str | None, db: StoreLocation, as_json: bool) -> None:
    """Move the stored threads of AGENT that can move to its current version; `migrate check
    AGENT` only says which can and why not."""
    checking = len(words) == 2 and words[0] == "check"
    if len(words) != 1 and not checking:
        raise click.UsageError("give AGENT, or `check AGENT`")
    reference = words[-1]
    with runtime(db, quiet=True) as rt:
        new = rt.agent(reference)
        verdicts = rt.migrate_check(new) if checking else rt.migrate(new, by=by or cli_via())
        assert new.version is not None  # migrate refused an agent without one
        damaged = damaged_rows(rt.store)  # passed by (which agent's is unknown): said last
    if as_json:
        echo(
            json.dumps(
                {
                    "agent": new.name,
                    "version": new.version.digest,
                    "checked": checking,
                    "threads": [v.to_json() for v in verdicts],
                },
                ensure_ascii=False,
            )
        )
    else:
        print_verdicts(new.name, new.version.digest, verdicts, checking)
    flag_damaged(db, damaged)
    stuck = [v for v in verdicts if not (v.moved or v.movable) and v.from_version != v.to_version]
    sys.exit(1 if stuck else 0)


def print_verdicts(name: str, digest: str, verdicts: list[Verdict], checking: bool) -> None:
    echo(f"agent {name}, version {digest[:16]}: {len(verdicts)} unfinished thread(s)")
    for verdict in verdicts:
        if verdict.moved:
            what = "moved"
        elif verdict.movable:
            what = "can move"
        else:
            what = f"cannot move: {verdict.reason}"
        before = verdict.from_version[:16] if verdict.from_version else "none"
        echo(f"  {verdict.thread_id}  {verdict.status:<8} {verdict.step:<16} {before}  {what}")
    if checking and any(v.movable for v in verdicts):
        echo("run `twelvefold migrate AGENT` to move the threads that can move")


@click.command()
@click.option(
    "--older-than",
    "older_than",
    metavar="AGE",
    help="Prune threads whose last event "
    "is older than AGE (30d, 12h, 2w; default: retention.finished_after).",
)
@click.option(
    "--archive",
    type=GivenPath(),  # a folder is refused with one line, exit 1 (prune)
    help="Append the pruned threads to this JSON-lines file first (default: retention.archive).",
)
@click.option(
    "--delete",
    "delete_only",
    is_flag=True,
    help="Delete without an archive (as retention.delete = true).",
)
@click.option("--dry-run", is_flag=True, help="Only say what would be pruned.")
@DB
@JSON
def prune(
    older_than: str | None,
    archive: Path | None,
    delete_only: bool,
    dry_run: bool,
    db: StoreLocation,
    as_json: bool,
) -> None:
    """Archive, then delete, finished, failed and cancelled threads older than a cut-off."""
    from twelvefold.runtime.config import find_config
    from twelvefold.runtime.retention import Retention, RetentionError, parse_age
    from twelvefold.runtime.retention import prune as prune_store

    try:
        settings = Retention.of(find_config(Path.cwd()))
        age = parse_age(older_than) if older_than is not None else settings.finished_after
    except (RetentionError, ConfigError) as exc:
        raise CommandError(str(exc)) from None
    if age is None:
        raise CommandError(
            "say how old a pruned thread must be: --older-than 30d, or "
            "[tool.twelvefold.retention] finished_after"
        )
    target = archive or (None if delete_only else settings.archive)
    if target is None and not (delete_only or settings.delete or dry_run):
        raise CommandError(
            "say where pruned threads go: --archive FILE (or retention.archive), or "
            "--delete (or retention.delete = true) to delete them without an archive"
        )
    with runtime(db, quiet=True) as rt:
        try:
            done = prune_store(rt.store, older_than=age, archive=target, dry_run=dry_run)
        except RetentionError as exc:
            raise CommandError(str(exc)) from None
        damaged = damaged_rows(rt.store)  # kept (whether they ended is unknown): said last
    if as_json:
        echo(json.dumps(done.to_json(), ensure_ascii=False))
    else:
        print_pruned(done, dry_run)
    flag_damaged(db, damaged)


def print_pruned(done: Pruned, dry_run: bool) -> None:
    verb = "would prune" if dry_run else "pruned"
    echo(f"{verb} {len(done.threads)} thread(s) and {len(done.versions)} agent version(s)")
    if done.archive is not None and done.threads and not dry_run:
        echo(f"  archived to {one_line(str(done.archive))}")
    for thread_id in done.skipped:
        echo(
            f"  kept {thread_id}: it changed while it was being pruned, or its log does not"
            " show that it ended"
        )
