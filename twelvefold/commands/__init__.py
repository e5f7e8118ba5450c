"""Subcommands, loaded only when they run.

Each command lives in a module of this package. `twelvefold --help` and `--version` must
start in well under a second, so nothing here imports the compiler, the runtime or a
command's module: `LAZY_COMMANDS` names where each command is and says its one-line help,
and `LazyGroup` imports a module the first time one of its commands is asked for (click's
documented lazy-loading pattern), and hands every command out under the one reporter of
what a user can get wrong (twelvefold/commands/report.py). tests/test_cli_lazy.py checks
that every line here still matches the command it names.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import click


@dataclass(frozen=True)
class LazyCommand:
    module: str
    """The module in this package that defines the command."""
    attribute: str
    """The click command's name in that module."""
    summary: str
    """The first line of the command's docstring, as `--help` lists it."""


LAZY_COMMANDS: dict[str, LazyCommand] = {
    "check": LazyCommand("build", "check", "Parse and check agents; print diagnostics."),
    "compile": LazyCommand(
        "build", "compile_", "Compile agents to plain Python reducer modules, one per agent."
    ),
    "graph": LazyCommand(
        "graph", "graph", "Draw AGENT's states and transitions as Mermaid, DOT, SVG or PNG."
    ),
    "prompt": LazyCommand(
        "prompt",
        "prompt",
        "Print the messages and the schema AGENT's llm STEP would send to the model.",
    ),
    "run": LazyCommand(
        "run",
        "run",
        "Launch a thread of AGENT (a .agent file or a generated module) and run it until it"
        " waits for a person, finishes or fails.",
    ),
    "resume": LazyCommand("run", "resume", "Continue THREAD: approve, reject, answer or retry it."),
    "fork": LazyCommand(
        "run",
        "fork",
        "Start a new thread from the first N events of THREAD; it does not run until resumed.",
    ),
    "send": LazyCommand(
        "run",
        "send",
        "Deliver an outside event (VALUE: JSON of type TYPE) to THREAD and run it on.",
    ),
    "cancel": LazyCommand(
        "run",
        "cancel",
        "End THREAD on purpose: its pending request is withdrawn, and any later decision for"
        " it is refused.",
    ),
    "expire": LazyCommand(
        "run",
        "expire",
        "Time out the waiting threads past their step's `timeout`, and run them on; try again"
        " the notices no channel took.",
    ),
    "serve": LazyCommand(
        "serve",
        "serve",
        "Serve AGENT_OR_DIR... over HTTP: the API, the inbox, background runs and timers.",
    ),
    "worker": LazyCommand(
        "worker",
        "worker",
        "Run the threads of AGENT_OR_DIR... from the job queue (PostgreSQL) until SIGTERM.",
    ),
    "token": LazyCommand("serve", "token", "Create, list and revoke the server's API tokens."),
    "db": LazyCommand("db", "db", "Manage the thread store's schema."),
    "threads": LazyCommand("run", "threads", "List threads, most recently updated first."),
    "show": LazyCommand("run", "show", "Print THREAD's event log and where it stands."),
    "stats": LazyCommand(
        "stats",
        "stats",
        "Print per agent: threads by status, steps, tokens, cost, time waiting for people.",
    ),
    "migrate": LazyCommand(
        "versions",
        "migrate",
        "Move the stored threads of AGENT that can move to its current version; `migrate check"
        " AGENT` only says which can and why not.",
    ),
    "prune": LazyCommand(
        "versions",
        "prune",
        "Archive, then delete, finished, failed and cancelled threads older than a cut-off.",
    ),
    "test": LazyCommand(
        "testcmd",
        "test",
        "Check the properties every AGENT's reducer must have, on generated threads.",
    ),
}


_JSON = "twelvefold_json"
"""`ctx.meta` key: whether the command line asks for `--json`."""


@contextmanager
def _interrupt_reported(as_json: bool) -> Iterator[None]:
    """Ctrl-C before a command's own reporter runs (while its module is imported, or its
    options are read): the same one line and exit 130 as within it. Left to click, it
    would be a blank line, `Aborted!` and exit 1."""
    try:
        yield
    except Exception as exc:  # a Ctrl-C CPython wrapped (report.py, `interrupt_within`)
        from twelvefold.commands.report import interrupt_within, interrupted

        if interrupt_within(exc) is None:
            raise
        interrupted(KeyboardInterrupt(_NOT_STARTED), as_json)
    except KeyboardInterrupt as exc:
        from twelvefold.commands.report import interrupted

        interrupted(KeyboardInterrupt(str(exc) or _NOT_STARTED), as_json)


_NOT_STARTED = "the command had not started: nothing was done"


class LazyGroup(click.Group):
    """A group whose commands are imported on first use; `--help` lists them without that."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with _interrupt_reported("--json" in args):
            ctx = super().make_context(info_name, args, parent, **extra)
        ctx.meta[_JSON] = "--json" in args
        return ctx

    def invoke(self, ctx: click.Context) -> Any:
        with _interrupt_reported(ctx.meta.get(_JSON, False)):
            return super().invoke(ctx)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(LAZY_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = LAZY_COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(f"{__name__}.{entry.module}")
        command = getattr(module, entry.attribute)
        if not isinstance(command, click.Command):  # pragma: no cover - a wrong table entry
            raise TypeError(f"{module.__name__}.{entry.attribute} is not a click command")
        # Every command, through one door: what a user gets wrong is one line, never a
        # traceback, wherever in the command it happens.
        from twelvefold.commands.report import reporting

        return reporting(command)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [(name, _short_help(LAZY_COMMANDS[name].summary, limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _short_help(summary: str, limit: int) -> str:
    """The summary shortened as click shortens a loaded command's help in the same list."""
    return click.Command(None, help=summary).get_short_help_str(limit)
