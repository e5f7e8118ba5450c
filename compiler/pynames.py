"""Python spellings of .agent names and values: safe identifiers and literals.

No name or string from a .agent file reaches generated code except through these
functions, so none can inject code: identifiers are checked and renamed when they
clash, and every string becomes a literal.
"""

from __future__ import annotations

import builtins
import json
import keyword

from pydantic import BaseModel

# Names the generated module defines or imports itself; a user type called one of these
# is renamed with a trailing underscore.
MODULE_NAMES = frozenset(
    {
        "AGENT", "Action", "AgentSpec", "Answer", "Answered", "Approved", "AwaitAnswer",
        "AwaitApproval", "BaseModel", "CallModel", "CallTool", "Callable", "ConfigDict",
        "ContextSpec", "EdgeSpec", "Event", "Fail", "Field", "Finish", "IllegalEvent",
        "Iterable", "Literal", "ModelOutput", "Rejected", "Started", "State", "StateSpec",
        "StepFailed", "ToolResult", "always", "annotations", "initial_state", "next_action",
        "reduce", "replay",
    }
)  # fmt: skip
_BASEMODEL_ATTRIBUTES = frozenset(dir(BaseModel))


def class_name(name: str) -> str:
    """The Python class for a declared type."""
    if keyword.iskeyword(name) or name in MODULE_NAMES or hasattr(builtins, name):
        return name + "_"
    return name


def attribute_name(name: str) -> str:
    """The pydantic attribute for a field; the .agent spelling stays as its alias."""
    if (
        keyword.iskeyword(name)
        or keyword.issoftkeyword(name)
        or name in _BASEMODEL_ATTRIBUTES
        or name.startswith(("model_", "_"))
    ):
        return name.lstrip("_") + "_" if name.startswith("_") else name + "_"
    return name


def function_name(state: str, role: str) -> str:
    """`_decide_reduce`: private per-state functions. State names are identifiers already."""
    return f"_{state}_{role}"


def py_str(value: str) -> str:
    """A Python string literal for any text, in the quotes ruff's formatter prefers."""
    body = json.dumps(value, ensure_ascii=False)[1:-1]
    # Characters Python treats as line breaks inside source but JSON leaves alone.
    for char in ("\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85"):
        body = body.replace(char, f"\\u{ord(char):04x}")
    if '"' in value and "'" not in value:
        return "'" + body.replace('\\"', '"') + "'"
    return '"' + body + '"'


def comment(text: str) -> str:
    """Text made safe for a `#` comment: nothing in it can end the comment line."""
    return "".join(ch if ch.isprintable() else " " for ch in text).strip()


def docstring(text: str) -> str:
    """The inside of a triple-quoted docstring, with nothing that could close it early."""
    safe = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    safe = "".join(ch if ch.isprintable() or ch == "\n" else " " for ch in safe)
    # A raw quote just before the closing `"""` would close it early, so each quote of a
    # trailing run is escaped, unless it already is: an odd number of backslashes before it.
    tail = ""
    while safe.endswith('"'):
        body = safe[:-1]
        if (len(body) - len(body.rstrip("\\"))) % 2:
            break
        tail, safe = '\\"' + tail, body
    return safe + tail
