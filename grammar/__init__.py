"""The .agent grammar, shipped as package data beside this module."""

if __name__ != "twelvefold.grammar":  # pragma: no cover - what the guard refuses
    # The repository shows this folder at its top; it is a part of the twelvefold package
    # and must never be importable under a second name (two copies of every class).
    raise ImportError(f"import twelvefold.grammar, not {__name__}")

from importlib.resources import files

GRAMMAR_FILE = "agent.lark"


def grammar_text() -> str:
    """The Lark grammar of the .agent language."""
    return (files(__name__) / GRAMMAR_FILE).read_text(encoding="utf-8")
