"""What a Jinja2 template reads from its context: names, and the attribute paths under them.

`analyse` parses a template with Jinja2's own parser and returns either the syntax
error (message and line) or every use of a variable the template does not define
itself, as a path (`commit.sha`) with the line it is on. Names the template binds
(`{% set %}`, loop variables, macro arguments) are left out by
`jinja2.meta.find_undeclared_variables`; a path is followed only from a name that is
bound nowhere in the template, so a loop variable that shadows a field is never
mistaken for it.

It also lists what the sandbox would refuse at run time whatever the value
(`unsafe`: an attribute starting with `_`, runtime/templates.py), and every template
the file loads (`{% include %}`, `{% extends %}`, `{% import %}`), so the checker can
follow them: a load whose name is not a literal string has `name` None.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, lru_cache

from jinja2 import Environment, TemplateSyntaxError, meta
from jinja2 import nodes as j

from twelvefold.runtime.templates import sandboxed, unsafe_attribute


@dataclass(frozen=True, slots=True)
class VariableUse:
    path: tuple[str, ...]
    """`("commit", "sha")` for `{{ commit.sha }}`; only literal attribute and key steps."""
    line: int
    """Line inside the template, starting at 1."""


@dataclass(frozen=True, slots=True)
class TemplateProblem:
    message: str
    line: int


@dataclass(frozen=True, slots=True)
class TemplateLoad:
    kind: str
    """`include`, `extends` or `import`."""
    name: str | None
    """The template it names, or None when that is not a literal string."""
    line: int


@dataclass(frozen=True, slots=True)
class Analysis:
    uses: tuple[VariableUse, ...] = ()
    problem: TemplateProblem | None = None
    unsafe: tuple[VariableUse, ...] = ()
    """Attribute steps the sandbox refuses on any value: the path up to the refused step."""
    loads: tuple[TemplateLoad, ...] = ()


@cache
def _environment() -> Environment:
    # The environment templates render in (runtime/templates.py): analysing compiles the
    # template, and Jinja2 computes constant expressions while it compiles, unless the
    # environment refuses to (`{{ "x" * 3000000000 }}` took `check` gigabytes).
    # Autoescape and undefined handling do not change what a template reads.
    return sandboxed()


@lru_cache(maxsize=1024)  # agents repeat the same short `ask` texts
def analyse(source: str) -> Analysis:
    environment = _environment()
    try:
        tree = environment.parse(source)
        free = meta.find_undeclared_variables(tree)
    except TemplateSyntaxError as exc:
        return Analysis(problem=TemplateProblem(exc.message or "syntax error", exc.lineno or 1))
    bound = {node.name for node in tree.find_all(j.Name) if node.ctx != "load"}
    uses = sorted(
        {use for use in _uses(tree) if use.path[0] in free},
        key=lambda u: (u.line, u.path),
    )
    # A name bound somewhere (e.g. by `{% set %}` after a first use) is checked by name only.
    trimmed = [VariableUse(u.path[:1], u.line) if u.path[0] in bound else u for u in uses]
    return Analysis(uses=tuple(dict.fromkeys(trimmed)), unsafe=_unsafe(tree), loads=_loads(tree))


def _unsafe(tree: j.Template) -> tuple[VariableUse, ...]:
    found = []
    for node in tree.find_all((j.Getattr, j.Getitem)):
        assert isinstance(node, j.Getattr | j.Getitem)
        attr = node.attr if isinstance(node, j.Getattr) else _const_key(node)
        if attr is not None and unsafe_attribute(attr):
            found.append(VariableUse((*(_path(node.node) or ("…",)), attr), node.lineno))
    # `a.__init__.__globals__` is one refusal: the first step the sandbox stops at.
    first: list[VariableUse] = []
    for use in sorted(set(found), key=lambda u: (u.line, len(u.path), u.path)):
        if not any(u.line == use.line and use.path[: len(u.path)] == u.path for u in first):
            first.append(use)
    return tuple(sorted(first, key=lambda u: (u.line, u.path)))


def _const_key(node: j.Getitem) -> str | None:
    return (
        node.arg.value
        if isinstance(node.arg, j.Const) and isinstance(node.arg.value, str)
        else None
    )


_LOADS = {j.Include: "include", j.Extends: "extends", j.Import: "import", j.FromImport: "import"}


def _loads(tree: j.Template) -> tuple[TemplateLoad, ...]:
    found = []
    for node in tree.find_all(tuple(_LOADS)):
        assert isinstance(node, j.Include | j.Extends | j.Import | j.FromImport)
        target = node.template
        name = (
            target.value if isinstance(target, j.Const) and isinstance(target.value, str) else None
        )
        found.append(TemplateLoad(_LOADS[type(node)], name, node.lineno))
    return tuple(found)


def _uses(node: j.Node) -> Iterator[VariableUse]:
    path = _path(node)
    if path is not None:
        yield VariableUse(path, node.lineno)
        return
    for child in node.iter_child_nodes():
        yield from _uses(child)


def _path(node: j.Node) -> tuple[str, ...] | None:
    """`a.b["c"]` as ("a", "b", "c") when it is a chain rooted at a loaded name."""
    if isinstance(node, j.Name) and node.ctx == "load":
        return (node.name,)
    if isinstance(node, j.Getattr):
        inner = _path(node.node)
        return None if inner is None else (*inner, node.attr)
    if isinstance(node, j.Getitem) and isinstance(node.arg, j.Const):
        inner = _path(node.node)
        key = node.arg.value
        return None if inner is None or not isinstance(key, str) else (*inner, key)
    return None
