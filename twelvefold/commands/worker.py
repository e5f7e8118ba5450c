"""`twelvefold worker`: take thread jobs from the queue and run them (docs/deploy.md).
procrastinate and psycopg are imported only when the command runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from twelvefold.commands.options import PLACE_HINT, PROMPTS, PathText, background_options
from twelvefold.commands.output import echo, error, errors, server_logging
from twelvefold.commands.report import (
    EXIT_INTERRUPTED,
    Stage,
    interrupt_within,
    say_interrupted,
    staged,
)
from twelvefold.commands.run import make_model, model_options
from twelvefold.interrupts import SEEN, go_on
from twelvefold.runtime.tracing import configure_from_env

if TYPE_CHECKING:
    from twelvefold.runtime.api import AsyncRuntime

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(url: str) -> bool:
    return url.startswith(POSTGRES_SCHEMES)


@click.command()
@click.argument(
    "places", nargs=-1, required=True, type=PathText(hint=PLACE_HINT), metavar="AGENT_OR_DIR..."
)
@click.option(
    "--store",
    "store_url",
    metavar="URL",
    envvar="TWELVEFOLD_STORE",
    required=True,
    help="The thread store: postgresql://… (or TWELVEFOLD_STORE).",
)
@click.option(
    "--queue",
    "queue_url",
    metavar="URL",
    envvar="TWELVEFOLD_QUEUE",
    help="The job queue's PostgreSQL database (default: the store's).",
)
@click.option(
    "--metrics-address",
    metavar="HOST:PORT",
    envvar="TWELVEFOLD_METRICS_ADDRESS",
    help="Serve this worker's Prometheus metrics at http://HOST:PORT/metrics "
    "(e.g. 127.0.0.1:9464; off unless given).",
)
@background_options(
    "How many jobs (threads) this worker runs at once.",
    "stalled jobs are retried and running threads woken",
)
@PROMPTS
@model_options
@staged("the worker had not started: nothing was done")
def worker(
    stage: Stage,
    places: tuple[str, ...],
    store_url: str,
    queue_url: str | None,
    metrics_address: str | None,
    concurrency: int,
    grace: float,
    sweep_seconds: float,
    prompts: Path | None,
    model: str | None,
    cassette: Path | None,
    record: Path | None,
    paths: tuple[Path, ...],
) -> None:
    """Run the threads of AGENT_OR_DIR... from the job queue (PostgreSQL) until SIGTERM."""
    if cassette is not None and record is not None:
        raise click.UsageError("give --cassette or --record, not both")
    chosen_model = make_model(cassette, record, model)  # a path it cannot use: refused first
    queue_url = queue_url or store_url
    metrics_at = None
    if metrics_address is not None:
        from twelvefold.server.counters import parse_address

        try:
            metrics_at = parse_address(metrics_address)
        except ValueError as exc:  # one line and exit 1, as every refusal of a worker
            error(f"--metrics-address: {exc}")
            sys.exit(1)
    if not is_postgres(queue_url):
        echo(
            "error: a worker takes its jobs from PostgreSQL: give --store postgresql://… "
            "(or --queue postgresql://… beside another store)",
            err=True,
        )
        sys.exit(1)
    try:
        import procrastinate  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError as exc:  # pragma: no cover - both are core dependencies
        echo(f"error: `twelvefold worker` needs {exc.name}: pip install twelvefold", err=True)
        sys.exit(1)
    server_logging()
    logging.getLogger("procrastinate").setLevel(logging.WARNING)
    from twelvefold.runtime.eventloop import collect_less_often, new_event_loop

    collect_less_often()  # many threads at once: fewer young collections per model call
    flush_spans = configure_from_env()
    # Ctrl-C while the worker starts raises where it lands, not asyncio.Runner's way (a
    # cancellation of the main task, which a connection pool being opened swallows: the
    # worker then hung); while it takes jobs, `run_worker` handles it, gracefully.
    signal.signal(signal.SIGINT, _raise_interrupt)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:  # uvloop's if installed
        try:
            code = runner.run(
                _work(places, store_url, queue_url, concurrency, grace, sweep_seconds,
                      chosen_model, paths, metrics_at, prompts, stage)
            )  # fmt: skip
        except BaseException as exc:
            if not isinstance(exc, KeyboardInterrupt) and interrupt_within(exc) is None:
                raise
            code = EXIT_INTERRUPTED  # nothing taken yet, or the jobs let go: exit at once
        if code == EXIT_INTERRUPTED:
            if flush_spans is not None:
                flush_spans()
            _exit(code, stage.said)  # not closing the loop: its tasks may wait on a pool
    if flush_spans is not None:
        flush_spans()
    _exit(code)


STOP_MARGIN_SECONDS = 30.0
"""How long after its `--grace` a stopping worker may take to let its jobs and pool go
before it ends at once: a stop must end the process whatever hangs on the way out (its
leases lapse, and the next worker takes the threads over)."""


def _stopping(stage: Stage, at_once: str, signum: int, grace: float) -> None:
    """As the worker begins to stop: a second Ctrl-C now says `at_once`, and if the stop
    itself hangs, the process ends anyway once `grace` and STOP_MARGIN_SECONDS are past
    (with the Ctrl-C's line and 130, or 143 for SIGTERM, as a shell reports it)."""
    import threading

    stage.said = at_once
    code = EXIT_INTERRUPTED if signum == signal.SIGINT else 128 + signum
    waited = grace + STOP_MARGIN_SECONDS
    hung = (
        f"the worker stopped at once, its stop not done after {waited:.0f} s: "
        + (
            at_once.split(": ", 1)[1]  # (what the store holds, as for a second Ctrl-C)
        )
    )
    timer = threading.Timer(waited, _exit, (code, hung if signum == signal.SIGINT else None))
    timer.daemon = True
    timer.start()


def _raise_interrupt(signum: int, frame: object) -> None:
    SEEN.set()  # one lost as a module loads is still seen (`go_on` before the worker runs)
    raise KeyboardInterrupt


def _exit(code: int, interrupted: str | None = None) -> NoReturn:
    """Say `interrupted` (the line of a Ctrl-C) if given, and end the process now: a tool
    call still blocked in a worker thread after the grace period would keep the
    interpreter from exiting; its lease is let go and the next worker takes over."""
    if interrupted is not None:
        say_interrupted(KeyboardInterrupt(interrupted))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def _work(
    places: tuple[str, ...],
    store_url: str,
    queue_url: str,
    concurrency: int,
    grace: float,
    sweep_seconds: float,
    model: object,
    paths: tuple[Path, ...],
    metrics_at: tuple[str, int] | None = None,
    prompts: Path | None = None,
    stage: Stage | None = None,
) -> int:
    from twelvefold.runtime.api import AsyncRuntime
    from twelvefold.runtime.store import MemoryStore, open_store, shown_url
    from twelvefold.server.pruning import Pruner, timed_retention
    from twelvefold.server.queue import (
        Queue,
        QueueUnavailable,
        Work,
        check_schema_now,
        make_app,
        run_worker,
    )
    from twelvefold.server.replies import replies
    from twelvefold.server.schedules import Scheduler, schedules_of
    from twelvefold.server.service import ServeError, served_agents

    try:  # the agents and every setting of their configuration, before connecting anywhere
        served_agents(AsyncRuntime(MemoryStore(), prompts_dir=prompts), places)
    except ServeError as exc:
        errors(exc)
        return 1
    try:  # before anything waits on a connection pool: one line, at once
        check_schema_now(queue_url)
    except QueueUnavailable as exc:
        error(exc)
        return 1
    stage = stage or Stage("")
    where = shown_url(store_url)
    stage.said = f"the worker had not started: no job was taken; the store at {where} is as it was"
    store = open_store(store_url, create=False)
    runtime = AsyncRuntime(store, model=model, tool_paths=paths, prompts_dir=prompts)  # type: ignore[arg-type]
    try:
        agents = served_agents(runtime, places)
    except ServeError as exc:
        errors(exc)
        return 1
    if metrics_at is not None:
        try:
            _serve_metrics(runtime, metrics_at)
        except OSError as exc:
            host, port = metrics_at
            error(f"cannot serve metrics at {host}:{port}: {exc.strerror or exc}")
            return 1
    import instructor  # noqa: F401  (imported once before the first job, as `serve` does)
    import openai  # noqa: F401

    app = make_app(queue_url, pool_size=concurrency + 2)
    queue = Queue(app)
    try:  # replies, Slack and schedules, as the server has them: configuration checked here
        service = server_side(runtime, agents, queue)
        scheduler = Scheduler(service, schedules_of(service))
        timed = timed_retention(service)
        pruner = Pruner(service, timed) if timed is not None else None
    except ServeError as exc:
        errors(exc)
        return 1
    try:
        async with app.open_async():
            told = replies(service)  # (made with the Slack app: `server_side`)
            work = Work(runtime, agents, queue, tell=service.tell_settled,
                        owed=told.due_threads)  # fmt: skip
            scheduler.start()
            if pruner is not None:
                pruner.start()
            # A Ctrl-C Python lost as the worker started (in a module's import: interrupts.py)
            # stops it here, before it takes a job; from now on `run_worker` handles them.
            go_on()
            stage.said = running = (
                f"the worker stopped: every thread is in {where} as it stood, no lease held "
                "(a step under way had --grace to end), its jobs still queued; `twelvefold "
                "worker` runs them on"
            )
            at_once = (
                f"the worker was stopped at once (a second Ctrl-C as it stopped): every "
                f"thread is in {where} as it stood; a lease it still held lapses "
                "(TWELVEFOLD_LEASE_SECONDS), then `twelvefold worker` runs it on"
            )
            # Said once a Ctrl-C says how the worker stopped (as serve's `listening on`).
            echo(f"worker: running {', '.join(sorted(agents))} from the queue", err=True)
            try:
                stopped_by = await run_worker(
                    work, concurrency=concurrency, grace=grace, sweep_seconds=sweep_seconds,
                    stopping=lambda signum: _stopping(stage, at_once, signum, grace),
                )  # fmt: skip
            finally:
                await scheduler.stop()
                if pruner is not None:
                    await pruner.stop()
    except QueueUnavailable as exc:
        error(exc)
        return 1
    except OSError as exc:
        error(f"the job queue's database cannot be reached: {exc}")
        return 1
    finally:
        close = getattr(runtime.engine.model, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
    if stopped_by == signal.SIGINT:
        stage.said = running  # it stopped gracefully after all
        return EXIT_INTERRUPTED  # said by the command, once the loop is closed
    echo("worker: stopped", err=True)
    return 0


def server_side(runtime: Any, agents: Any, queue: Any) -> Any:
    """The server's side of a worker: a `Service` that only records and enqueues (as
    `serve` has on PostgreSQL), with the server's `on_settled` callbacks — webhook replies
    and Slack (twelvefold/server/replies.py, slack.py) — which the worker's reply jobs
    run, and whose launches its scheduler makes (schedules.py). Also gives the worker's
    notices the inbox link and Slack buttons. `ServeError` for a configuration that
    cannot work (one line)."""
    from twelvefold.server.service import Service
    from twelvefold.server.slack import SlackApp, SlackSettings

    service = Service(runtime, agents, queue=queue)
    slack = SlackApp(service, SlackSettings.from_env())
    # A failed reply is tried again by its job (durably, later), not by this process
    # waiting between attempts while it holds the job.
    slack.replies.delays = ()
    return service


def _serve_metrics(runtime: AsyncRuntime, address: tuple[str, int]) -> None:
    """This worker's own series (twelvefold/server/counters.py) on prometheus_client's
    HTTP server, in a daemon thread: `GET /metrics` at `address`. Raises OSError when the
    address cannot be bound."""
    from prometheus_client import start_http_server

    from twelvefold.server.counters import ProcessMetrics

    metrics = ProcessMetrics()
    metrics.install(runtime.engine)
    host, port = address
    start_http_server(port, addr=host, registry=metrics.registry)
    echo(f"worker: metrics at http://{_url_host(host)}:{port}/metrics", err=True)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
