"""Python spellings of .agent names and values: safe identifiers and literals.

No name or string from a .agent file reaches generated code except through these
functions, so none can inject code: identifiers are checked and renamed when they
clash, and every string becomes a literal.
"""

from __future__ import annotations

import builtins
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


def escaped(text: str, quote: str = "") -> str:
    """`text` with every character that could end or change what it sits in escaped.

    The one escaping of user text into generated code: string literals (`py_str`),
    docstrings (`docstring`) and `#` comments (`comment`) all use it, so that a name, a
    description, a file name or a restated source line can never end its literal or its
    comment line, start an escape Python would interpret (`\\N{...}`), or carry a line break
    (`\\n`, `\\r`, form feed, `\\u2028`, ...) or an unencodable lone surrogate into the file.
    Backslashes and `quote` get a backslash; characters that are not printable become `\\xNN`,
    `\\uNNNN` or `\\UNNNNNNNN`, which read back as the same text in a literal.
    """
    out = []
    for char in text:
        if char == "\\" or char == quote:
            out.append("\\" + char)
        elif char in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)


_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def py_str(value: str) -> str:
    """A Python string literal for any text, in the quotes ruff's formatter prefers."""
    quote = "'" if '"' in value and "'" not in value else '"'
    return quote + escaped(value, quote) + quote


def comment(text: str) -> str:
    """Text for a `#` comment: escaped as in a literal, so nothing in it can end the line."""
    return escaped(text).strip()


def docstring(text: str) -> str:
    """The inside of a triple-quoted docstring: every `"` escaped, so none can close it."""
    return escaped(text, quote='"')
