"""twelvefold: a declarative language and compiler for LLM agents that ship to production."""

__version__ = "0.1.0"
