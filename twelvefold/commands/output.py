"""Every line a command prints about a thread goes through `echo`: values are data, and
a control sequence in one must not drive the user's terminal (runtime/terminal.py)."""

from __future__ import annotations

import click

from twelvefold.runtime.terminal import for_terminal


def echo(text: str, *, err: bool = False) -> None:
    click.echo(for_terminal(text), err=err)
