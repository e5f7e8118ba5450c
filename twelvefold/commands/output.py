"""Every line a command prints about a thread goes through `echo`: values are data, and
a control sequence in one must not drive the user's terminal (runtime/terminal.py)."""

from __future__ import annotations

import click

from twelvefold.runtime.terminal import for_terminal, one_line


def echo(text: str, *, err: bool = False) -> None:
    click.echo(for_terminal(text), err=err)


def errors(problem: Exception) -> None:
    """`error` for each problem `problem` carries (`ServeError.problems`: every setting
    that cannot be used), else for it."""
    for line in getattr(problem, "problems", None) or (problem,):
        error(line)


def error(message: object) -> None:
    """`error: MESSAGE` on stderr as one line: a path, URL or name in the message (a `--db`
    with a line break in it) cannot start a line of its own and forge output below."""
    click.echo(f"error: {one_line(str(message))}", err=True)
