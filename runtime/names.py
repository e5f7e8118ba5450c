"""A declared type's name as the .agent file spells it, whatever its Python class is called.

The compiler names a class otherwise when the declared name is taken in Python (a type
`State` becomes class `State_`, compiler/pynames.py) and records the declared name as
the model's `title`. Everything a person or a model sees (the schema, the tag of a
union's choice, context entries, cassettes, `--json`) uses `declared_name`.
"""

from __future__ import annotations

from pydantic import BaseModel


def declared_name(cls: type[BaseModel]) -> str:
    title = cls.model_config.get("title")
    return title if isinstance(title, str) else cls.__name__
