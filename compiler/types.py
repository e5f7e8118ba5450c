"""Resolving type expressions into a small model the checks can reason about.

The AST says what was written (`NamedType("DeployBackend")`); the checks need to know
what it means: a record with fields, a scalar, a list, an enum of literals, optional or
not. `resolve` turns the first into the second, and `lookup_path` follows `a.b.c`
through records. A name that resolves to nothing becomes `UNKNOWN`, so a check that
meets it can skip what it cannot judge (the name checks report the unknown name once).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from . import nodes as n

SCALARS = frozenset(n.BUILTIN_SCALARS)


@dataclass(frozen=True, slots=True)
class Scalar:
    name: str
    """`string`, `int`, `float` or `bool`."""

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Record:
    """A declared type, or the built-in `Answer`."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class ListOf:
    item: Resolved

    def __str__(self) -> str:
        return f"list[{self.item}]"


@dataclass(frozen=True, slots=True)
class MapOf:
    value: Resolved

    def __str__(self) -> str:
        return f"map[string, {self.value}]"


@dataclass(frozen=True, slots=True)
class LiteralsOf:
    """A union of string literals."""

    values: tuple[str, ...]

    def __str__(self) -> str:
        return " | ".join(f'"{v}"' for v in self.values)


@dataclass(frozen=True, slots=True)
class OptionalOf:
    inner: Resolved

    def __str__(self) -> str:
        return f"{self.inner}?"


@dataclass(frozen=True, slots=True)
class Unknown:
    """A name that does not resolve; checks skip it."""

    def __str__(self) -> str:
        return "<unknown>"


@dataclass(frozen=True, slots=True)
class Element:
    """A step into a collection, where a template reaches one (compiler/template_reads.py)."""

    kind: str
    """`each`: what `for` iterates, a list's item or a map's key; `index`: a literal
    whole-number index, a list's item; `value`: a map's value (`.values()`)."""

    def __str__(self) -> str:
        return f"<{self.kind}>"


EACH, INDEX, VALUE = Element("each"), Element("index"), Element("value")

PathStep = str | Element
"""A field (or a key) by name, or an element."""

Resolved = Scalar | Record | ListOf | MapOf | LiteralsOf | OptionalOf | Unknown
UNKNOWN = Unknown()

ANSWER_FIELDS: dict[str, Resolved] = {
    "text": Scalar("string"),
    "by": OptionalOf(Scalar("string")),
}
"""The built-in record a person's reply arrives as (runtime/types.py `Answer`)."""


class TypeTable:
    """The declared types of one file, with the built-ins, by name."""

    def __init__(self, declared: Mapping[str, n.TypeDecl]) -> None:
        self.declared = declared

    def known(self, name: str) -> bool:
        return name in SCALARS or name == n.ANSWER_TYPE or name in self.declared

    def names(self) -> list[str]:
        """Every type name a user may write, for suggestions."""
        return [*SCALARS, n.ANSWER_TYPE, *self.declared]

    def named(self, name: str) -> Resolved:
        if name in SCALARS:
            return Scalar(name)
        if name == n.ANSWER_TYPE or name in self.declared:
            return Record(name)
        return UNKNOWN

    def resolve(self, expr: n.TypeExpr) -> Resolved:
        match expr:
            case n.NamedType(name=name):
                return self.named(name)
            case n.ListType(item=item):
                return ListOf(self.resolve(item))
            case n.MapType(value=value):
                return MapOf(self.resolve(value))
            case n.LiteralUnion(values=values):
                return LiteralsOf(values)
        inner_type = self.resolve(expr.inner)  # the one case left: `T?`
        return inner_type if isinstance(inner_type, OptionalOf) else OptionalOf(inner_type)

    def fields(self, record: Record) -> dict[str, Resolved]:
        """A record's fields by name; the first declaration wins when a name repeats."""
        if record.name == n.ANSWER_TYPE and record.name not in self.declared:
            return dict(ANSWER_FIELDS)
        decl = self.declared.get(record.name)
        found: dict[str, Resolved] = {}
        for field_decl in decl.fields if decl else ():
            found.setdefault(field_decl.name.text, self.resolve(field_decl.type))
        return found

    def lookup_path(
        self, root: Resolved, parts: tuple[PathStep, ...], *, keys: bool = False
    ) -> PathLookup:
        """Follow `a.b.c` from `root`. Optional records on the way make the result optional.

        An element of a list is its item; iterating a map gives its keys (strings). What
        cannot be known from the types ends the path, unchecked: an element of anything
        else (a record's items, a string's characters), and with `keys` (a template reads
        `by.alice` as the key "alice") a name on a map: which keys it holds is data."""
        current = root
        optional = False
        for index, part in enumerate(parts):
            if isinstance(current, OptionalOf):
                optional = True
                current = current.inner
            if isinstance(current, Unknown):
                return PathLookup(UNKNOWN)
            if isinstance(part, Element):
                current = _element(current, part)
                continue
            if keys and isinstance(current, MapOf):
                return PathLookup(UNKNOWN)
            if not isinstance(current, Record):
                return PathLookup(UNKNOWN, failed_at=index, parent=current)
            fields = self.fields(current)
            if part not in fields:
                return PathLookup(UNKNOWN, failed_at=index, parent=current, choices=tuple(fields))
            current = fields[part]
        if optional and not isinstance(current, OptionalOf | Unknown):
            current = OptionalOf(current)
        return PathLookup(current)


def _element(collection: Resolved, step: Element) -> Resolved:
    if isinstance(collection, ListOf) and step in (EACH, INDEX):
        return collection.item
    if isinstance(collection, MapOf):
        if step == VALUE:
            return collection.value
        if step == EACH:
            return Scalar("string")
    return UNKNOWN


@dataclass(frozen=True, slots=True)
class PathLookup:
    """Where `a.b.c` led: a type, or the part that has no such field (and what was there)."""

    type: Resolved
    failed_at: int | None = None
    parent: Resolved | None = None
    choices: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.failed_at is None


def strip_optional(t: Resolved) -> Resolved:
    return t.inner if isinstance(t, OptionalOf) else t


def is_optional(t: Resolved) -> bool:
    return isinstance(t, OptionalOf)
