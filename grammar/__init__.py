"""The .agent grammar, shipped as package data beside this module."""

from importlib.resources import files

GRAMMAR_FILE = "agent.lark"


def grammar_text() -> str:
    """The Lark grammar of the .agent language."""
    return (files(__name__) / GRAMMAR_FILE).read_text(encoding="utf-8")
