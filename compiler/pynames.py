"""Python spellings of .agent names and values: safe identifiers and literals.

No name or string from a .agent file reaches generated code except through these
functions, so none can inject code: identifiers are checked and renamed when they
clash, and every string becomes a literal.
"""

from __future__ import annotations

import builtins
import importlib.metadata
import keyword
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache

from pydantic import BaseModel

from . import nodes as n

# ---- the one reserved set -------------------------------------------------------------
# Every name the generated module binds or reads at its top level, from its sources:
# Python itself, and what module.py.j2 imports and defines (read from the template, by
# codegen.template_bindings). A declared type's class, a field's attribute and the
# module's file name never take one of these.

SOFT_KEYWORDS = ("_", "case", "match", "type")
"""Python's soft keywords (fixed here: `keyword.softkwlist` differs between versions, and
generated code must not)."""
STATE_FUNCTION_ROLES = ("action", "reduce", "needs_approval")
"""The per-state functions module.py.j2 defines: `_{state}_{role}`."""
BUILTIN_NAMES = frozenset(dir(builtins))


@cache
def reserved_names() -> frozenset[str]:
    """Names no declared type's class may take (a field's attribute avoids these too):
    Python's keywords and builtins, and every name and module the generated module binds
    at its top level besides its classes and per-state functions."""
    from .codegen import template_bindings  # codegen uses these names: imported when asked

    names, modules = template_bindings()
    return frozenset({*keyword.kwlist, *SOFT_KEYWORDS, *BUILTIN_NAMES, *modules, *names})


def imported_modules() -> frozenset[str]:
    """The top-level modules the generated module imports (`typing`, `pydantic`, ...)."""
    from .codegen import template_bindings

    return template_bindings()[1]


_BASEMODEL_ATTRIBUTES = frozenset(dir(BaseModel)) | frozenset(dir(type(BaseModel)))
"""A model's attributes, its metaclass's included: `mro` and `register` are not in
`dir(BaseModel)`, yet a field so named shadows them (pydantic warns, and drops it from
the schema's required fields)."""
PROTECTED_PREFIX = "model_"
"""pydantic warns about fields whose name starts with a protected namespace (`model_dump`)."""


def _is_reserved_anywhere(name: str) -> bool:
    return name in reserved_names() or _is_dunder(name)


def _is_dunder(name: str) -> bool:
    """`__all__`, `__init__`: Python's own special names (and any it may add later)."""
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _class_candidate(name: str) -> str:
    return (name.strip("_") or "Type") + "_" if _is_dunder(name) else name + "_"


def state_function_names(state: str) -> list[str]:
    return [function_name(state, role) for role in STATE_FUNCTION_ROLES]


# ---- allocation ---------------------------------------------------------------------


@dataclass(frozen=True)
class PythonNames:
    """The Python spelling of every declared type and field of one program.

    `classes`: declared type name -> class name. `attributes`: declared type name ->
    {field name as declared -> attribute}. A name keeps its spelling unless it is reserved
    or taken; then it gains trailing underscores (`from` -> `from_`; `_x` -> `x_`) until it
    is free, and a name that needs no change is never displaced by one that does, so two
    declared names never share one Python name.
    """

    classes: Mapping[str, str]
    attributes: Mapping[str, Mapping[str, str]]

    def attribute(self, type_name: str | None, field: str) -> str:
        return self.attributes.get(type_name or "", {}).get(field, field)


def python_names(types: Iterable[n.TypeDecl], states: Iterable[str]) -> PythonNames:
    """Names for a program's types (classes) and their fields (attributes); see PythonNames."""
    decls = list(types)
    taken = set(reserved_names()) | {f for s in states for f in state_function_names(s)}
    classes = _allocate(
        [d.name.text for d in decls],
        # A class body binds `model_config` (and BaseModel's names are its attributes), so
        # an annotation in it could not reach a class of one of those names.
        lambda name: not _is_reserved_anywhere(name) and name not in _BASEMODEL_ATTRIBUTES,
        taken,
        spell=_class_candidate,
    )
    # Annotations and `Field(...)` in a class body read these, so a field (a class
    # attribute) must not rebind them: `float: float | None` would make the type None.
    annotation_names = reserved_names() | set(classes.values())
    attributes = {
        d.name.text: _allocate(
            [f.name.text for f in d.fields],
            lambda name: _attribute_ok(name, annotation_names),
            set(annotation_names),
            spell=_attribute_candidate,
        )
        for d in decls
    }
    return PythonNames(classes, attributes)


def _attribute_ok(name: str, reserved: frozenset[str] | set[str]) -> bool:
    return not (
        name in reserved
        or name in _BASEMODEL_ATTRIBUTES
        or name.startswith(("_", PROTECTED_PREFIX))
    )


def _attribute_candidate(name: str) -> str:
    """A field name's first Python spelling when it cannot be used as it is."""
    stripped = name.lstrip("_") or "field"  # `_x` would be a private attribute, not a field
    if stripped.startswith(PROTECTED_PREFIX):
        stripped = "field_" + stripped
    return stripped if stripped != name and stripped.isidentifier() else stripped + "_"


def _allocate(
    names: list[str],
    usable: Callable[[str], bool],
    taken: set[str],
    spell: Callable[[str], str],
) -> dict[str, str]:
    """Each name itself when `usable` and free, else `spell(name)` plus underscores until
    it is. `spell` must give a name that trailing underscores can make usable."""
    result: dict[str, str] = {}
    for name in names:  # first the names that can stay as they are
        if usable(name) and name not in taken and name not in result.values():
            result[name] = name
    used = taken | set(result.values())
    for name in names:
        if name in result:
            continue
        candidate = spell(name)
        while candidate in used or not usable(candidate):
            candidate += "_"
            if len(candidate) > len(name) + len(used) + 8:  # pragma: no cover - a spell bug
                raise ValueError(f"no Python name for `{name}`")
        result[name] = candidate
        used.add(candidate)
    return {name: result[name] for name in names}


def class_name(name: str) -> str:
    """The Python class for a declared type, taken alone (python_names decides for a
    program, where names may also collide with each other)."""
    return python_names([n.TypeDecl(n.Name(name), None, ())], []).classes[name]


def module_file_stem(agent_name: str) -> str:
    """The generated module's file stem: the agent's name, unless importing the module by
    that name would shadow the standard library or a module it imports (`agent json`)."""
    shadowed = {
        *sys.stdlib_module_names,
        *imported_modules(),
        *_dependency_modules(),
        *PYDANTIC_NEEDS,
    }
    return agent_name + "_agent" if agent_name.lower() in shadowed else agent_name


PYDANTIC_NEEDS = ("pydantic_core", "typing_extensions", "annotated_types", "typing_inspection")
"""What pydantic 2 imports as it loads (its own requirements): a generated module named
like one would be imported in its place as the module imports pydantic (rt19 F5: `agent
typing_extensions`). Written out, not read from the installed packages', so a module's
file name is the same wherever it is compiled."""


def _dependency_modules() -> set[str]:
    """twelvefold's installed dependencies, as import names (`pydantic-core` -> pydantic_core)."""
    try:
        required = importlib.metadata.requires("twelvefold") or []
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not installed
        required = []
    names = (re.match(r"[A-Za-z0-9_.\-]+", r) for r in required)
    return {m.group().replace("-", "_").lower() for m in names if m}


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
