"""`twelvefold serve` and `twelvefold token`: the HTTP server and its API tokens
(docs/server.md). fastapi and uvicorn are imported only when `serve` runs."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import click

from twelvefold.commands.options import (
    DB,
    PLACE_HINT,
    PROMPTS,
    PathText,
    background_options,
    removed_if_refused,
    store_check,
    store_given,
)
from twelvefold.commands.output import echo, error, errors, server_logging
from twelvefold.commands.report import (
    EXIT_INTERRUPTED,
    CommandError,
    Stage,
    cut,
    say_interrupted,
    staged,
)
from twelvefold.commands.run import make_model, model_options
from twelvefold.interrupts import go_on
from twelvefold.runtime.terminal import one_line
from twelvefold.runtime.tracing import configure_from_env

if TYPE_CHECKING:
    from fastapi import FastAPI

    from twelvefold.runtime.store import StoreLocation
    from twelvefold.server.queue import Queue
    from twelvefold.server.tokens import TokenInfo


def is_loopback(host: str) -> bool:
    """Whether `host` names only this machine (127.0.0.0/8, ::1, `localhost`)."""
    from twelvefold.server.hosts import is_loopback_host

    return is_loopback_host(host.lower())


@click.command()
@click.argument(
    "places", nargs=-1, required=True, type=PathText(hint=PLACE_HINT), metavar="AGENT_OR_DIR..."
)
@DB
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port."
)
@click.option(
    "--insecure-local",
    is_flag=True,
    help="Serve without tokens (every caller is `local`); only on a loopback --host.",
)
@background_options(
    "How many threads run at once; the rest queue.",
    "the timer expires timed-out waits, retries failed notices and resends replies whose"
    " sender died",
)
@click.option(
    "--public-url",
    metavar="URL",
    help="Where people reach this server (https://…): notices link to the inbox there "
    "(sets TWELVEFOLD_PUBLIC_URL; else [tool.twelvefold.server] public_url).",
)
@PROMPTS
@model_options
@staged("the server had not started: no store was opened, nothing was done")
def serve(
    stage: Stage,
    places: tuple[str, ...],
    db: StoreLocation,
    host: str,
    port: int,
    concurrency: int,
    insecure_local: bool,
    grace: float,
    sweep_seconds: float,
    public_url: str | None,
    prompts: Path | None,
    model: str | None,
    cassette: Path | None,
    record: Path | None,
    paths: tuple[Path, ...],
) -> None:
    """Serve AGENT_OR_DIR... over HTTP: the API, the inbox, background runs and timers."""
    where = one_line(str(db))  # (a URL without its password)
    if cassette is not None and record is not None:
        raise click.UsageError("give --cassette or --record, not both")
    if insecure_local and not is_loopback(host):
        error(  # one line: a --host with a line break in it is escaped
            "--insecure-local serves without authentication, so only on a loopback "
            f"address (127.0.0.1, ::1, localhost), not {host}"
        )
        sys.exit(1)
    if public_url is not None:
        os.environ["TWELVEFOLD_PUBLIC_URL"] = public_url  # read with the configuration
    server_logging()
    _check_agents(places, prompts)
    # Before the store is opened: a port that is taken leaves no store behind.
    listeners = listening(host, port)
    address = _url(listeners[0])
    as_it_was = f"the server had not started: no thread ran; the store at {where} is as it was"
    made_for_it = (
        f"the server had not started: no thread ran; the store at {where} was made for it "
        "and holds none"
    )
    stage.said = as_it_was
    made_here = not _there(db)
    try:
        with removed_if_refused(db):  # a refused start leaves no store behind
            # Spans go where OTEL_EXPORTER_OTLP_* say (docs/observability.md); flushed at exit.
            flush_spans = configure_from_env()
            app = _app(places, db, concurrency, insecure_local, grace, sweep_seconds,
                       make_model(cassette, record, model), paths,
                       loopback=is_loopback(host), prompts=prompts)  # fmt: skip
            if made_here:  # kept from here on: the next `serve` finds it
                stage.said = made_for_it
    except BaseException:
        # The store this start made is removed again, unless it holds something now (a
        # token made meanwhile) or another command has it open: say which.
        stage.said = made_for_it if made_here and _there(db) else as_it_was
        raise
    import uvicorn

    from twelvefold.runtime.eventloop import collect_less_often

    collect_less_often()  # many threads at once: fewer young collections per model call
    if insecure_local:
        echo(
            "WARNING: --insecure-local: NO AUTHENTICATION. Anyone who can reach "
            f"{address} on this machine acts as the person `local`, under the same rules "
            "as anyone: it reads, launches and decides what the configuration lets `local` "
            "do (an approval only if its approvers groups list `local`; docs/server.md).",
            err=True,
        )
    service = app.state.service

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            # Open `?wait=true` requests are answered first (the thread as it stands,
            # as when the wait limit passes), so uvicorn's wait for them ends at once.
            service.drain()
            await super().shutdown(sockets)

    server = Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            # Open waits and streams are answered at once (`drain`); what is still open
            # after this (a client not reading its stream) is cut off, so the stop takes
            # about `grace` (the runs'), not twice it.
            timeout_graceful_shutdown=OPEN_REQUESTS_GRACE,
            proxy_headers=False,
            server_header=False,
        )
    )
    # A Ctrl-C Python lost as the server started (in a module's import: interrupts.py)
    # stops it here, before it listens; once `stop` is in place below, it takes them.
    go_on()
    code = 0
    stage.said = (
        f"the server stopped: every thread is in {where} as it stood, no lease held "
        "(a step under way had --grace to end); `twelvefold serve` runs them on"
    )
    stopping: list[int] = []

    def stop(signum: int, frame: object) -> None:
        stopping.append(signum)
        server.should_exit = True

    # Ctrl-C from here on stops the server as uvicorn's own handler does, whether it
    # lands before uvicorn installs that handler (a `KeyboardInterrupt` there left its
    # coroutine never awaited, and a warning), while it runs, or as uvicorn raises the
    # signal again once it stopped (with this handler back in place).
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)  # a deploy's stop: graceful, exit 0 (not interrupts.py's)
    # Said once a Ctrl-C is this handler's: one sent as soon as this line is read stops
    # the server (CI's caught one still taken for a stop before the start).
    echo(f"listening on {address} (Ctrl-C stops)", err=True)
    try:
        server.run(sockets=listeners)
    except KeyboardInterrupt:  # Ctrl-C: uvicorn stopped gracefully, then raised it again
        code = EXIT_INTERRUPTED
    finally:
        if flush_spans is not None:
            flush_spans()
    if signal.SIGINT in stopping:
        code = EXIT_INTERRUPTED
    if code == EXIT_INTERRUPTED:
        say_interrupted(KeyboardInterrupt(stage.said))
    elif not server.started:  # the lifespan failed: uvicorn said why
        sys.exit(1)
    # Every thread's lease is let go and its log is on disk (Service.stop). A tool call
    # still blocked in a worker thread after the grace period would keep the interpreter
    # from exiting (it joins worker threads); the next server runs the call again under
    # its key, or records it as interrupted, so exit now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _there(db: StoreLocation) -> bool:
    """Whether a store is at `db` already (a URL's database always counts); a path the
    system refuses counts too: opening it says why."""
    from twelvefold.runtime.store import store_exists

    try:
        return store_exists(db)
    except OSError:
        return True


def listening(host: str, port: int) -> list[socket.socket]:
    """Sockets listening on `host`:`port`, as uvicorn would bind them (every address the
    name resolves to; `SO_REUSEADDR`; an IPv6 socket IPv6-only), bound by `serve` before
    it opens the store, so that a port that is taken refuses the start with no store
    made. `CommandError` (one line) when it cannot listen there."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CommandError(f"cannot listen on {where}: {exc.strerror}") from None
    made: list[socket.socket] = []
    try:
        for family, kind, protocol, _, address in dict.fromkeys(found):
            made.append(listener := socket.socket(family, kind, protocol))
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(made) > 1:  # one port for every address, as uvicorn's
                address = (address[0], made[0].getsockname()[1], *address[2:])
            listener.bind(address)
            listener.listen(LISTEN_BACKLOG)
    except OSError as exc:
        for listener in made:
            listener.close()
        raise CommandError(f"cannot listen on {where}: {_why_not(exc, port)}") from None
    return made


LISTEN_BACKLOG = 2048
"""Connections the system queues until they are accepted (uvicorn's default)."""


def _why_not(exc: OSError, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            "the port is taken (address already in use): stop what uses it, or give another --port"
        )
    if exc.errno == errno.EACCES and 0 < port < 1024:
        return f"{exc.strerror} (ports below 1024 need privileges): give --port 1024 or above"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{exc.strerror} (no interface of this machine has that address): check --host"
    return exc.strerror or str(exc)


def _url(listener: socket.socket) -> str:
    """`http://HOST:PORT` of a listening socket, with the port it got (`--port 0`)."""
    host, port = listener.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


OPEN_REQUESTS_GRACE = 2
"""Seconds uvicorn gives the requests still open at a stop, once waits and streams
were answered."""


def _app(
    places: tuple[str, ...],
    db: StoreLocation,
    concurrency: int,
    insecure_local: bool,
    grace: float,
    sweep_seconds: float,
    model: object,
    paths: tuple[Path, ...],
    *,
    loopback: bool = False,
    prompts: Path | None = None,
) -> FastAPI:
    from twelvefold.runtime.api import AsyncRuntime
    from twelvefold.runtime.store import open_store
    from twelvefold.server.app import create_app
    from twelvefold.server.replies import public_url_of
    from twelvefold.server.service import ServeError, Service, served_agents
    from twelvefold.server.tables import place_of
    from twelvefold.server.tokens import TokenStore

    store = open_store(db)
    runtime = AsyncRuntime(store, model=model, tool_paths=paths, prompts_dir=prompts)  # type: ignore[arg-type]
    try:
        agents = served_agents(runtime, places)
    except ServeError as exc:
        errors(exc)
        sys.exit(1)
    tokens = None if insecure_local else TokenStore(place_of(store) or db)
    if tokens is not None and not any(not t.revoked for t in tokens.list()):
        option, note = _option(db)
        echo(f"note: no API token yet: `twelvefold token create PERSON {option}` makes one"
             f"{note}", err=True)  # fmt: skip
    # The first model call would import openai and instructor (seconds of CPU) on the
    # event loop, and every API call would wait meanwhile (benchmarks/server.py showed a
    # 5-7 s stall): a server pays for that import once, before it listens.
    import instructor  # noqa: F401
    import openai  # noqa: F401

    service = Service(runtime, agents, concurrency=concurrency, sweep_seconds=sweep_seconds,
                      queue=_queue(db))  # fmt: skip
    names = ", ".join(sorted(agents))
    echo(f"serving {names} from {one_line(str(db))}", err=True)
    try:  # the Slack app, replies and schedules check their configuration here
        # On loopback, requests must be addressed to loopback or to the public URL's host
        # (a proxy on this machine): a rebound DNS name reaches nothing (server/hosts.py).
        public = public_url_of(service) if loopback else None
        also = () if public is None else (urlsplit(public).hostname or "",)
        return create_app(
            service, tokens=tokens, manage=True, grace=grace,
            loopback_only=also if loopback else None,
        )  # fmt: skip
    except ServeError as exc:
        errors(exc)
        sys.exit(1)


def _check_agents(places: tuple[str, ...], prompts: Path | None) -> None:
    """Load the agents and check every setting of their configuration, before the port
    is bound or any store opened: one line for each problem, exit 1."""
    from twelvefold.runtime.api import AsyncRuntime
    from twelvefold.runtime.store import MemoryStore
    from twelvefold.server.service import ServeError, served_agents

    try:
        served_agents(AsyncRuntime(MemoryStore(), prompts_dir=prompts), places)
    except ServeError as exc:
        errors(exc)
        sys.exit(1)


def _queue(db: StoreLocation) -> Queue | None:
    """On a PostgreSQL store, the job queue `twelvefold worker`s take the threads from
    (twelvefold/server/queue.py): the server records and enqueues, and runs nothing
    itself. A database with no queue yet gets its schema, as an empty database gets the
    store's (under the upgrade's advisory lock: `apply_schema`); one line and exit 1 when
    the database cannot be reached or holds an old queue schema (`db upgrade`)."""
    from twelvefold.runtime.store import StoreUrl

    if not isinstance(db, StoreUrl):
        return None
    import psycopg

    from twelvefold.runtime.store import shown_url
    from twelvefold.server.queue import (
        Queue,
        QueueUnavailable,
        apply_schema,
        check_schema_now,
        make_app,
    )

    try:
        check_schema_now(db.url)
    except QueueUnavailable:
        try:
            apply_schema(db.url)  # nothing when an (old) queue schema is there
            check_schema_now(db.url)
        except psycopg.Error as exc:
            reason = shown_url(" ".join(str(exc).split()), secret_of=db.url)
            error(f"cannot set up the job queue at {db}: {reason}")
            sys.exit(1)
        except QueueUnavailable as exc:
            error(exc)
            sys.exit(1)
    echo("threads run on `twelvefold worker`s: this server enqueues them", err=True)
    return Queue(make_app(db.url))


@click.group()
def token() -> None:
    """Create, list and revoke the server's API tokens."""


@token.command("create")
@click.argument("person")
@DB
@click.option(
    "--create",
    "make_store",
    is_flag=True,
    help="Make the store when there is none yet (the first token, before the first `serve`). "
    "Without it a store that is not there is refused: a mistyped --db would get a token "
    "no server reads.",
)
def token_create(person: str, db: StoreLocation, make_store: bool) -> None:
    """Print a new token for PERSON (shown once; only its hash is stored)."""
    from twelvefold.runtime.store import store_exists
    from twelvefold.server.tokens import TokenStore, check_person

    try:
        check_person(person)
    except ValueError as exc:
        error(exc)
        sys.exit(1)
    if not make_store and not store_exists(db):
        error(
            f"no store at {cut(str(db))}: give --create to make a new one there (for the "
            f"first token, before the first `twelvefold serve`), or {store_check()}"
        )
        sys.exit(1)
    if not make_store:
        _check_sqlite_store(db)
    with removed_if_refused(db):  # a store made here and then refused is not left behind
        tokens = TokenStore(db)
        try:
            made = tokens.create(person)
        finally:
            tokens.close()
    echo(made)
    echo(f"(a token for {person}; it is shown only now, keep it secret)", err=True)


@token.command("list")
@DB
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
def token_list(db: StoreLocation, as_json: bool) -> None:
    """List the tokens: id, person, created, revoked (never the token)."""
    found = _tokens(db)
    if as_json:
        rows = [
            {"id": t.id, "person": t.person, "created_at": t.created_at, "revoked_at": t.revoked_at}
            for t in found
        ]
        echo(json.dumps(rows, ensure_ascii=False))
        return
    if not found:
        echo(f"no tokens in {one_line(str(db))}")
        return
    echo(f"{'ID':<9} {'CREATED':<27} {'REVOKED':<27} PERSON")
    for t in found:
        echo(f"{t.id:<9} {t.created_at:<27} {t.revoked_at or '-':<27} {_printable(t.person)}")


@token.command("revoke")
@click.argument("token_id", metavar="ID|TOKEN")
@DB
def token_revoke(token_id: str, db: StoreLocation) -> None:
    """Revoke the token with this ID (from `token list`), or the token itself pasted
    whole (`tf_...`, one that leaked): it stops working at once."""
    from twelvefold.server.tokens import TokenStore, token_id_of

    _check_store(db)
    tokens = TokenStore(db)
    try:
        revoked = tokens.revoke(token_id)
    finally:
        tokens.close()
    shown_id = _printable(token_id_of(token_id))  # never the secret part of a token
    if not revoked:
        what = (
            f"token with id {shown_id} and that secret"
            if token_id != token_id_of(token_id)
            else f"token {shown_id}"
        )
        error(f"no live {what} in {cut(str(db))}")
        sys.exit(1)
    echo(f"revoked token {shown_id}")


def _tokens(db: StoreLocation) -> list[TokenInfo]:
    from twelvefold.server.tokens import TokenStore

    _check_store(db)
    tokens = TokenStore(db)
    try:
        return tokens.list()
    finally:
        tokens.close()


def _option(db: StoreLocation) -> tuple[str, str]:
    """The option that names this store again, to paste back (runtime/schema.py
    `store_option`: a server's URL without its password), and where the password goes."""
    if isinstance(db, Path):  # a SQLite file, named again as the user named it
        return store_given(db) or f"--db {db}", ""
    from twelvefold.runtime.schema import store_option

    return store_option(str(db))


def _check_store(db: StoreLocation) -> None:
    from twelvefold.runtime.store import store_exists

    if not store_exists(db):
        option, _ = _option(db)
        error(
            f"no store at {cut(str(db))} ({store_check()}; `twelvefold token "
            f"create PERSON {cut(option)} --create` makes one)"
        )
        sys.exit(1)
    _check_sqlite_store(db)


def _check_sqlite_store(db: StoreLocation) -> None:
    """A SQLite file that is there but is no store is refused before any table is made in
    it: an empty file (`StoreNotFound`; `token create --create` makes the store in it),
    another application's database (`StoreError`). Opened without `create`, so nothing is
    written; a store of an older schema is upgraded, as the token commands would anyway."""
    from twelvefold.runtime.store import SqliteStore, StoreNotFound

    if not isinstance(db, Path):
        return
    try:
        SqliteStore(db, create=False).close()
    except StoreNotFound:
        error(
            f"{cut(str(db))} is an empty file, not a store yet (`twelvefold token create "
            f"PERSON --db {cut(str(db))} --create` makes the store in it)"
        )
        sys.exit(1)


def _printable(text: str) -> str:
    return text if text.isprintable() else ascii(text)[1:-1]
