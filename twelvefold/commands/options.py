"""Options several commands share, defined once so that their defaults cannot drift apart."""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from twelvefold.commands.output import error

if TYPE_CHECKING:
    from twelvefold.runtime.newstore import Made
    from twelvefold.runtime.store import StoreLocation


class PathProblem(click.ClickException):
    """A path option or argument the command cannot take (an empty one; a folder option
    naming no folder): a problem with the input, one line and exit 1 like the others
    (twelvefold/commands/report.py), not click's usage error (exit 2); with `--json`,
    stdout gets the `{"error": ...}` object too."""

    exit_code = 1

    def __init__(self, message: str, as_json: bool) -> None:
        super().__init__(message)
        self.as_json = as_json

    def show(self, file: Any = None) -> None:
        from twelvefold.commands.report import say_problem

        message = self.format_message()
        say_problem(f"error: {message}", type(self).__name__, message, self.as_json)


class FolderProblem(PathProblem):
    """A folder option naming no folder."""


class EmptyPath(PathProblem):
    """A path given as the empty string, which `Path("")` would read as the current
    folder: `--prompts ""` from a script whose variable was unset would otherwise take
    prompts (or tools, or a store) from wherever it happens to run."""


def _as_json(ctx: click.Context | None) -> bool:
    return bool(ctx is not None and ctx.meta.get("twelvefold_json"))  # set by the group


def _refuse_empty(
    value: Any, param: click.Parameter | None, ctx: click.Context | None, named: str | None,
    hint: str,
) -> None:  # fmt: skip
    if value != "":
        return
    if named is None and isinstance(param, click.Option):
        named = max(param.opts, key=len)  # --output, not -o
    elif named is None and param is not None:
        named = (param.metavar or (param.name or "path").upper()).removesuffix("...")
    raise EmptyPath(f"{named or 'a path'} is empty: {hint}", _as_json(ctx))


class GivenPath(click.Path):
    """`click.Path` that refuses an empty string (`EmptyPath`, one line and exit 1)
    instead of reading it as the current folder. Every path option and argument of the
    CLI has this type or `PathText` (tests/test_cli_db_paths.py walks them all).
    `named` is how the error names the parameter (default: the option, or the
    argument's metavar); `hint` says what to give instead."""

    def __init__(
        self, *, named: str | None = None, hint: str = "give a path", **kwargs: Any
    ) -> None:
        kwargs.setdefault("path_type", Path)
        super().__init__(**kwargs)
        self.named = named
        self.hint = hint

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        _refuse_empty(value, param, ctx, self.named, self.hint)
        return super().convert(value, param, ctx)


class PathText(click.types.StringParamType):
    """A path kept as text (an agent's place: a .agent file, a generated module, or a
    folder of them), refusing an empty string as `GivenPath` does."""

    name = "path"

    def __init__(self, *, named: str | None = None, hint: str = "give a path") -> None:
        self.named = named
        self.hint = hint

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        _refuse_empty(value, param, ctx, self.named, self.hint)
        return super().convert(value, param, ctx)


FOLDER_HINT = "give a folder (. for the current one)"
PLACE_HINT = "give an agent or a folder of them (. for the current one)"


DEFAULT_DB = Path(".twelvefold") / "threads.db"
"""Where threads are stored unless --db or TWELVEFOLD_DB says otherwise (relative to the
current folder), so a thread launched by one command is found by the next."""

_DB_FILE = click.option(
    "--db",
    type=GivenPath(hint="give the path of a file"),  # a folder: one line, exit 1 (`file_there`)
    envvar="TWELVEFOLD_DB",
    help=f"The SQLite file threads are stored in (or TWELVEFOLD_DB; default: {DEFAULT_DB}, "
    "or the configuration's `store`).",
)
_STORE_URL = click.option(
    "--store",
    "store_url",
    metavar="URL",
    envvar="TWELVEFOLD_STORE",
    help="The thread store as a URL instead of --db: sqlite:///relative/threads.db, "
    "sqlite:////absolute/threads.db or postgresql://user@host/database (or "
    "TWELVEFOLD_STORE, else `store` in [tool.twelvefold]).",
)


def store_path(db: Path | None, store_url: str | None) -> StoreLocation:
    """Where a command's threads are: `--store URL`, else `--db FILE`, else the `store` of
    the configuration nearest the current folder (docs/stores.md), else DEFAULT_DB.
    A URL twelvefold cannot use is a one-line error and exit 1 (its password never
    shown)."""
    from twelvefold.runtime.store import StoreError, check_file_name, store_location

    try:
        if store_url is not None:
            return store_location(store_url)
        if db is not None:
            check_file_name(str(db))  # a URL or libpq's keywords given as a file
            return db
        return configured_store() or DEFAULT_DB
    except StoreError as exc:
        error(exc)
        sys.exit(1)


@contextlib.contextmanager
def removed_if_refused(location: StoreLocation) -> Iterator[None]:
    """Around a command that makes the SQLite store at `location` when there is none
    (`run`, `serve`): when it ends by an exception or an exit (a refusal: no such agent,
    an input it refuses, templates missing), the store file this command made (for a
    link to a file not there, the file the link names), which holds nothing, is removed
    again, with what SQLite keeps beside it and the folders this command made for it. A
    refused command leaves nothing that a later one takes for a store; what was there
    before, or another command made meanwhile, is never touched (runtime/newstore.py
    records what this one made). The connections this command opened on the file are
    closed first, whether or not what opened them closed them (`serve` interrupted as
    it set up, its store and tables open, had the file look in use, and kept it)."""
    from twelvefold.runtime.newstore import close_opened, recording_made
    from twelvefold.runtime.store import StoreUrl

    if isinstance(location, StoreUrl):
        yield
        return
    with recording_made() as made:
        try:
            yield
        except BaseException:
            close_opened()
            _remove_unused(made)
            raise


def _remove_unused(made: list[Made]) -> None:
    """Remove the SQLite file this command `made` (with what SQLite keeps beside it),
    then the folders it made for it, deepest first, each only while it is the one made
    (not removed and made again by another). The file is kept when it holds anything (a
    thread, a token), another connection has it open (a command started at once on the
    same new path, about to store its thread there), or that cannot be told: keeping a
    file is safer than removing one; it is removed while this holds its exclusive lock, so
    no other connection starts using it meanwhile. A folder is removed only when empty
    (`rmdir`): one that another command has made its file in stays.

    One window is left: another command that found a folder this one made (nothing to
    make) and has not yet made its file there can see it removed; its store then makes
    the folder again (runtime/newstore.py, `make_store_file`)."""
    for file in (m for m in made if not m.folder and m.still_there()):
        held = _held_alone(file.path)
        if held is None:
            return  # kept, and so are its folders
        try:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{file.path}{suffix}").unlink(missing_ok=True)
        finally:
            held.close()
    for folder in reversed([m for m in made if m.folder]):
        if folder.still_there():
            with contextlib.suppress(OSError):  # not empty: something else is there now
                os.rmdir(folder.path)


def _held_alone(location: Path) -> sqlite3.Connection | None:
    """A connection holding the SQLite file at `location`'s exclusive lock when no other
    connection has it open and it holds nothing (no row in any table but the schema's
    versions: no thread, nor a token `twelvefold token create` stored meanwhile); None
    otherwise. In WAL mode (the store's) every open connection keeps a shared lock on the
    file, so leaving WAL, which needs the file to itself, is refused while another is
    open."""
    try:
        connection = sqlite3.connect(
            f"{location.absolute().as_uri()}?mode=rw", uri=True, timeout=0, isolation_level=None
        )
    except sqlite3.Error:
        return None
    try:
        if connection.execute("PRAGMA journal_mode = DELETE").fetchone()[0] != "delete":
            connection.close()
            return None  # another connection has it open
        connection.execute("BEGIN EXCLUSIVE")
        holds = any(
            connection.execute(f'SELECT 1 FROM "{table}" LIMIT 1').fetchone() is not None
            for (table,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite%' AND name != 'twelvefold_schema'"
            ).fetchall()
        )
    except sqlite3.Error:
        holds = True
    if holds:
        connection.close()
        return None
    return connection


def configured_store() -> StoreLocation | None:
    """`store = "URL"` of `[tool.twelvefold]` (or twelvefold.toml) nearest the current
    folder; a relative sqlite:/// path is relative to that file's folder. `StoreError` for
    a URL that holds a password: secrets never go in the configuration (libpq reads
    PGPASSWORD and ~/.pgpass)."""
    from twelvefold.runtime.config import ConfigError, find_config
    from twelvefold.runtime.store import StoreError, StoreUrl, shown_url, store_location

    try:
        config = find_config(Path.cwd())
    except ConfigError as exc:
        raise StoreError(str(exc)) from None
    value = config.settings.get("store")
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise StoreError(f"{config.path}: `store` must be a store URL (a string)")
    if shown_url(value) != value:
        raise StoreError(
            f"{config.path}: `store` holds a password ({shown_url(value)}); secrets never go "
            "in the configuration: set PGPASSWORD or use ~/.pgpass instead"
        )
    found = store_location(value)
    if isinstance(found, StoreUrl) or found.is_absolute() or config.path is None:
        return found
    return config.path.parent / found


_STORE_NAMED = "twelvefold.store_named"
"""Where the click context keeps how the command's store was named (`_named`)."""


def _named(db: Path | None, store_url: str | None) -> tuple[str, str | None]:
    """What a refusal about the store tells the user to check, by how they named it: the
    option and its variable they used, or the configuration file; and the `--store URL`
    to paste back when they gave one (None: the location's own spelling does)."""
    from twelvefold.runtime.schema import store_option
    from twelvefold.runtime.store import shown_url

    if store_url is not None:
        return "check --store and TWELVEFOLD_STORE", store_option(shown_url(store_url))[0]
    if db is not None:
        return "check --db and TWELVEFOLD_DB", None
    from twelvefold.runtime.config import ConfigError, find_config

    try:
        config = find_config(Path.cwd())
    except ConfigError:
        config = None
    if config is not None and config.path is not None and "store" in config.settings:
        return f"check `store` in {config.path}", None
    return "the default store; name another with --db or --store", None


def store_check() -> str:
    """What to check when the command's store is not there, as the user named it
    (`check --store and TWELVEFOLD_STORE`, `check --db and TWELVEFOLD_DB`, the
    configuration's `store`)."""
    context = click.get_current_context(silent=True)
    named = context.meta.get(_STORE_NAMED) if context is not None else None
    return named[0] if named is not None else "check --db and TWELVEFOLD_DB"


def store_given(location: StoreLocation) -> str | None:
    """`--store URL` as the user gave it (its password left out), to paste into a command
    printed for them; None when they named the store otherwise."""
    context = click.get_current_context(silent=True)
    named = context.meta.get(_STORE_NAMED) if context is not None else None
    return named[1] if named is not None else None


def DB(function: Callable[..., Any]) -> Callable[..., Any]:
    """`--db FILE` and `--store URL` (one spelling of the store works everywhere); the
    command receives `db`, the location either names (`StoreLocation`: a SQLite file's
    `Path` or a server's `StoreUrl`, which prints without its password)."""

    @functools.wraps(function)
    def with_store(*args: Any, db: Path | None, store_url: str | None, **kwargs: Any) -> Any:
        context = click.get_current_context(silent=True)
        if context is not None and db is not None and store_url is not None:
            db, store_url = _one_store(context, db, store_url)
        location = store_path(db, store_url)
        if context is not None:
            context.meta[_STORE_NAMED] = _named(db, store_url)
        return function(*args, db=location, **kwargs)

    return _DB_FILE(_STORE_URL(with_store))


def _one_store(context: click.Context, db: Path, store_url: str) -> tuple[Path | None, str | None]:
    """`(db, store_url)` with the one that names the store kept when both are set: one
    given on the command line beats one from the environment (`--db` with
    TWELVEFOLD_STORE set names the `--db` file, as the hints that repeat `--db` expect);
    from the environment both, `--store`'s variable wins (docs/stores.md). Both on the
    command line is a usage error: which one was meant cannot be told."""
    from click.core import ParameterSource

    given = {
        name: context.get_parameter_source(name) is ParameterSource.COMMANDLINE
        for name in ("db", "store_url")
    }
    if given["db"] and given["store_url"]:
        raise click.UsageError("give --db or --store, not both")
    return (db, None) if given["db"] else (None, store_url)


def existing_folders(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """`value` (a path, or a tuple of them for a repeated option) when each is a folder;
    `FolderProblem` naming the option and the path otherwise."""
    for path in value if isinstance(value, tuple) else () if value is None else (value,):
        try:
            if path.is_dir():
                continue
            found = "not a folder" if os.path.lexists(path) else "no such folder"
        except OSError as exc:  # a name too long, a folder nobody may look into
            found = exc.strerror or str(exc)
        raise FolderProblem(f"{param.opts[0]} {path}: {found}", _as_json(ctx))
    return value


PROMPTS = click.option(
    "--prompts",
    type=GivenPath(hint=FOLDER_HINT),
    callback=existing_folders,
    metavar="DIRECTORY",
    help="Folder that prompt paths resolve under (default: the nearest prompts/).",
)

AGENT = click.option(
    "--agent",
    "agent",
    type=PathText(),
    metavar="PATH",
    help="Load the thread's agent from PATH (a .agent file or a generated module) instead of "
    "the place the thread recorded, e.g. after the agent was moved.",
)


class Seconds(click.FloatRange):
    """A number of seconds in a range; NaN is refused (it passes every comparison, so a
    plain `FloatRange` lets it through)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if seconds != seconds:  # NaN
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return seconds


def background_options(work: str, sweep: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--concurrency`, `--grace` and `--sweep-seconds`, shared by `serve` and `worker`
    (same defaults); `work` is the help of `--concurrency`, `sweep` says what the sweep
    does."""
    options = [
        click.option("--concurrency", default=8, show_default=True,
                     type=click.IntRange(1, 10_000), help=work),
        click.option("--grace", default=10.0, show_default=True,
                     type=Seconds(0, 3600), help="Seconds running steps get to "
                     "finish on SIGTERM before their leases are let go."),
        click.option("--sweep-seconds", default=15.0, show_default=True,
                     type=Seconds(0.05, 3600), help=f"How often {sweep}."),
    ]  # fmt: skip

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate
