"""Subcommand families. Each module defines `register(cli)`; list new modules here."""

from __future__ import annotations

import importlib

import click

COMMAND_MODULES = ["build", "graph", "run", "prompt", "testcmd"]


def register_all(cli: click.Group) -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(cli)
