"""`twelvefold graph`: draw an agent, and optionally where one of its threads went."""

from __future__ import annotations

import math
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from twelvefold.commands.options import DB, PROMPTS, GivenPath
from twelvefold.commands.output import echo, error
from twelvefold.compiler import Compilation, compile_file
from twelvefold.compiler.diagnostics import render_all, summary
from twelvefold.compiler.render import (
    DOT_TIMEOUT,
    GraphvizFailed,
    GraphvizMissing,
    GraphvizTimedOut,
    Trace,
    graph_view,
    overlay,
    render_image,
    to_dot,
    to_mermaid,
)
from twelvefold.runtime.terminal import one_line
from twelvefold.runtime.types import Event

if TYPE_CHECKING:
    from twelvefold.runtime.store import StoreLocation

FORMATS = ("mermaid", "dot", "svg", "png")
SUFFIXES = {".mmd": "mermaid", ".mermaid": "mermaid", ".dot": "dot", ".gv": "dot"}
SUFFIXES |= {".svg": "svg", ".png": "png"}


MAX_DOT_TIMEOUT = 86400.0
"""The longest `--dot-timeout` (a day): past it a number is a mistake, and an infinite or
huge one overflows the timer that stops `dot`."""


def _a_number(value: float) -> float:
    """`value`, unless it is NaN (which passes every range check)."""
    if math.isnan(value):
        raise click.BadParameter(f"{value} is not a number of seconds")
    return value


@click.command()
@click.argument("agent", type=GivenPath())
@click.option(
    "--format",
    "output_format",
    type=click.Choice(FORMATS),
    help="Picture format (default: from the -o suffix, else mermaid).",
)
@click.option(
    "-o",
    "--output",
    type=GivenPath(allow_dash=True),
    help="File to write (`-`: stdout); text formats print to stdout without it.",
)
@click.option("--thread", "thread_id", help="Overlay this thread's path (from the store).")
@DB
@click.option(
    "--events",
    "events_file",
    type=GivenPath(),  # a folder: one line, exit 1
    help="Overlay the path of an event log: a JSON list of events in the store's format.",
)
@PROMPTS
@click.option(
    "--dot-timeout",
    type=click.FloatRange(min=0, min_open=True, max=MAX_DOT_TIMEOUT),
    callback=lambda _ctx, _param, value: _a_number(value),
    default=DOT_TIMEOUT,
    show_default=True,
    help="Seconds Graphviz's `dot` may take to lay out an SVG or PNG before it is stopped.",
)
def graph(
    agent: Path,
    output_format: str | None,
    output: Path | None,
    thread_id: str | None,
    db: StoreLocation,
    events_file: Path | None,
    prompts: Path | None,
    dot_timeout: float,
) -> None:
    """Draw AGENT's states and transitions as Mermaid, DOT, SVG or PNG.

    With --thread or --events, the picture also shows where that thread went: the
    states and edges it visited (with counts), where errors happened, and the state
    it is at now.
    """
    if thread_id is not None and events_file is not None:
        raise click.UsageError("give --thread or --events, not both")
    if output == Path("-"):  # stdout, as for curl, tar and the like
        output = None
    chosen = output_format or _format_from_suffix(output) or "mermaid"
    if chosen == "png" and output is None and sys.stdout.isatty():
        raise click.UsageError("a PNG cannot go to a terminal; give -o FILE.png")

    compilation = compile_file(agent, prompts_dir=prompts, generate_code=False)
    _report(compilation)
    if not compilation.ok or compilation.program is None:
        sys.exit(1)
    program = compilation.program

    trace: Trace | None = None
    if thread_id is not None or events_file is not None:
        events, module = _load_thread(agent, prompts, thread_id, db, events_file)
        trace = overlay(program, events, module)
        if trace.refused is not None:
            click.echo(
                f"warning: the reducer refuses this log at {one_line(str(trace.refused))}; "
                "drawing it up to there (was the agent changed?)",
                err=True,
            )
        for source, target in trace.unexplained:
            click.echo(
                f"warning: the thread moved from `{one_line(source)}` to `{one_line(target)}`, "
                "which this agent has no edge for (was the agent changed?)",
                err=True,
            )

    view = graph_view(program, trace)
    try:
        picture: str | bytes = (
            to_mermaid(view)
            if chosen == "mermaid"
            else to_dot(view)
            if chosen == "dot"
            else render_image(
                to_dot(view), "svg" if chosen == "svg" else "png", timeout=dot_timeout
            )
        )
    except (GraphvizMissing, GraphvizTimedOut, GraphvizFailed) as failed:
        error(failed)  # escaped: `dot`'s stderr may repeat the agent's text
        sys.exit(1)
    _write(picture, output)


def _format_from_suffix(output: Path | None) -> str | None:
    return SUFFIXES.get(output.suffix.lower()) if output is not None else None


def _report(compilation: Compilation) -> None:
    if compilation.diagnostics:
        sources = {compilation.path: compilation.source_text}
        click.echo(render_all(compilation.diagnostics, sources), err=True)
        click.echo(f"\n{summary(compilation.diagnostics)}", err=True)


def _load_thread(
    agent: Path,
    prompts: Path | None,
    thread_id: str | None,
    db: StoreLocation,
    events_file: Path | None,
) -> tuple[Sequence[Event], Any]:
    """The thread's events and the agent's generated reducer module."""
    from twelvefold.runtime.api import shown
    from twelvefold.runtime.codec import CodecError
    from twelvefold.runtime.integrity import LogError
    from twelvefold.runtime.jsonkeys import LoneSurrogateKey, NotUtf8, RepeatedKey
    from twelvefold.runtime.loading import AgentLoadError, load_agent
    from twelvefold.runtime.localfiles import parse_json, read_regular_file
    from twelvefold.runtime.store import StoreError, ThreadNotFound, open_store, store_exists

    try:
        loaded = load_agent(agent, prompts_dir=prompts)
    except AgentLoadError as failed:
        error(failed)
        sys.exit(1)
    try:
        if events_file is not None:
            data = parse_json(read_regular_file(events_file), events_file)
            events = _decoded_events(events_file, data, loaded.codec)
        else:
            if not store_exists(db):
                click.echo(
                    f"error: no thread store at {one_line(str(db))} (give --db PATH or "
                    "--store URL)",
                    err=True,
                )
                sys.exit(1)
            store = open_store(db, create=False)
            try:
                # Another agent's thread (a sub-agent's child, say) neither decodes nor
                # means anything on this graph: say so before reading its log.
                info = store.info(str(thread_id))
                if info.agent != loaded.name:
                    click.echo(
                        f"error: thread {shown(str(thread_id))} runs agent "
                        f"`{shown(info.agent)}`, not `{shown(loaded.name)}` ({shown(str(agent))})",
                        err=True,
                    )
                    sys.exit(1)
                events = store.load(str(thread_id), loaded.codec)
            finally:
                store.close()
    except (RepeatedKey, LoneSurrogateKey) as bad:  # the file, then the path to the key
        error(f"{events_file}: {bad}")
        sys.exit(1)
    except NotUtf8 as bad:  # said of the file, not of the agent
        why = "JSON is written without one" if bad.bom else "JSON between systems is UTF-8"
        error(
            f"{bad.of(str(events_file))}: an event log is JSON, and {why} (RFC 8259, section 8.1)"
        )
        sys.exit(1)
    except (CodecError, ValueError, KeyError, TypeError, AttributeError) as bad:
        echo(f"error: the event log does not decode for this agent: {bad}", err=True)
        sys.exit(1)
    except (StoreError, LogError, sqlite3.Error) as bad:  # a damaged store or log: one line
        error(bad)
        sys.exit(1)
    except ThreadNotFound as missing:
        error(missing)
        sys.exit(1)
    return events, loaded.module


def _decoded_events(path: Path, data: Any, codec: Any) -> list[Event]:
    """`--events`' JSON (`data`, read from `path`) as events; `CommandError` (one line,
    exit 1) naming the file, and the event, when it is not a list of this agent's
    events: what Python would say of it (`'int' object has no attribute 'get'`) says
    nothing to the user."""
    from twelvefold.commands.report import CommandError
    from twelvefold.runtime.codec import CodecError
    from twelvefold.runtime.localfiles import json_kind

    where = one_line(str(path))
    if not isinstance(data, list):
        raise CommandError(
            f"{where} is not an event log: it holds a JSON {json_kind(data)}, not a list of"
            " events (`twelvefold show THREAD --json` prints one as `log`)"
        )
    events = []
    for number, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            problem = f"a JSON {json_kind(item)}, not an object"
        else:
            try:
                events.append(codec.decode_event(item))
                continue
            except KeyError as missing:
                problem = f"no `{missing.args[0]}`"
            except (CodecError, ValueError, TypeError, AttributeError) as bad:
                problem = str(bad)
        raise CommandError(f"{where}: event {number} does not decode for this agent ({problem})")
    return events


def _write(picture: str | bytes, output: Path | None) -> None:
    if output is not None:
        data = picture.encode("utf-8") if isinstance(picture, str) else picture
        if output.is_symlink() or (output.exists() and not output.is_file()):
            output.write_bytes(data)  # `-o /dev/stdout`, a FIFO, a link: written through
        else:  # whole or not at all: a write cut short leaves the picture before it
            from twelvefold.runtime.localfiles import replace_file

            replace_file(output, data)
        click.echo(f"wrote {one_line(str(output))}", err=True)
    elif isinstance(picture, str):
        click.echo(picture, nl=False)
    else:
        sys.stdout.buffer.write(picture)
        sys.stdout.flush()
