"""What a Jinja2 template reads from its context: names, and the attribute paths under them.

`analyse` parses a template with Jinja2's own parser and returns either the syntax
error (message and line) or every use of a variable the template does not define
itself, as a path (`commit.sha`) with the line it is on. Names the template binds
(`{% set %}`, loop variables, macro arguments) are left out by
`jinja2.meta.find_undeclared_variables`; a path is followed only from a name that is
bound nowhere in the template, so a loop variable that shadows a field is never
mistaken for it.

It also lists every step to a name that starts with `_` (`steps`), which the sandbox
refuses at run time (runtime/templates.py) unless a record answers it with its field of
that name (`first_refusals`, given the program's field names), and every template
the file loads (`{% include %}`, `{% extends %}`, `{% import %}`), so the checker can
follow them: a load whose name is not a literal string has `name` None.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from typing import Literal

from jinja2 import Environment, TemplateSyntaxError
from jinja2 import nodes as j
from jinja2.parser import Parser

from twelvefold.runtime.context import record_attribute
from twelvefold.runtime.templates import (
    NESTED_TOO_DEEPLY,
    sandboxed,
    too_deep_at,
    undeclared_variables,
    unsafe_attribute,
)

from .template_macros import EndlessMacro, endless_macros
from .template_reads import TypedRead, loaded_names, typed_reads


@dataclass(frozen=True, slots=True)
class VariableUse:
    path: tuple[str, ...]
    """`("commit", "sha")` for `{{ commit.sha }}`; only literal attribute and key steps."""
    line: int
    """Line inside the template, starting at 1."""


@dataclass(frozen=True, slots=True)
class UnsafeStep:
    """A step to a name that starts with `_`, which the sandbox refuses on any value that
    has an attribute of that name (runtime/templates.py `unsafe_attribute`)."""

    use: VariableUse
    """The path up to and including the step."""
    keyed: bool = False
    """Whether a record answers the step with its field of that name: a record has no
    attribute `_f` (runtime/context.py `record_attribute`), so the sandbox looks `x._f`
    up as an item, and it looks `x["_f"]`, `map(attribute="_f")` and `"{0[_f]}"` up as
    an item first. Never for `x.__init__` (every record has one) or `attr("_f")` (an
    attribute only)."""
    instead: str | None = None
    """For a step no record answers, how to write it so that one does (`x["__init__"]`,
    `map(attribute="_f")`), where the template says what it is read from."""
    written: str | None = None
    """How the template names the step when not as a path (`x | attr("_f")`)."""


@dataclass(frozen=True, slots=True)
class TemplateProblem:
    message: str
    line: int
    help: str | None = None
    """How to fix it, when it is not a plain syntax error."""


TOO_DEEP = TemplateProblem(
    NESTED_TOO_DEEPLY,
    1,
    "flatten it: compute the value in a tool or a deterministic step, move an inner part "
    "into a macro defined at the top of the template or into an included file, or split a "
    "long chain of `+` or `|filter` into `{% set %}` steps",
)


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
    steps: tuple[UnsafeStep, ...] = ()
    """Every step to a name that starts with `_` (`first_refusals` says which are refused)."""
    loads: tuple[TemplateLoad, ...] = ()
    endless: tuple[EndlessMacro, ...] = ()
    """Macros that call themselves on every path (template_macros.py)."""
    assigned: frozenset[str] = frozenset()
    """Names the template sets somewhere (`{% set %}`, a loop variable): a use of one among
    `uses` is read where no set reaches on every path."""
    optional: frozenset[str] = frozenset()
    """Names the template never sets and reads only behind a guard (`x if x is defined
    else ""`): a file that includes this one may pass them or not (both render)."""
    reads: tuple[TypedRead, ...] = ()
    """What it reads through the names it is given, through loops and indexes too, as
    far as that can be followed (template_reads.py): checked against their types."""

    @property
    def unsafe(self) -> tuple[VariableUse, ...]:
        """The steps the sandbox refuses when no record has a field of their name."""
        return tuple(step.use for step in first_refusals(self.steps))


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
    parser: Parser | None = None
    try:
        parser = Parser(environment, source)  # its own, to know the line it stopped at
        tree = parser.parse()
        too_deep = too_deep_at(tree)
        if too_deep is not None:
            return Analysis(problem=replace(TOO_DEEP, line=too_deep))
        placed = _set_before_ifs_that_set_them(tree)
        try:
            free = _readable_in_blocks(tree, undeclared_variables(tree))
        finally:
            for body, placeholder in placed:
                body.remove(placeholder)
        guarded = _guarded_reads(tree)
        set_somewhere = {n.name for n in tree.find_all(j.Name) if n.ctx == "store"}
        behind_guards = _read_only_behind_guards(tree, guarded)
        # They render whether or not a branch set them: not read from the context.
        free -= behind_guards & set_somewhere
        # A name set nowhere is read from the context even behind a guard (a misspelt
        # `{% if contxt is defined %}` would hide its block for ever), unless the file that
        # loads this one may pass it (`optional`): only the guarded reads of a name the
        # template sets are left out.
        optional = frozenset((behind_guards - set_somewhere) & free)
        guarded = {id(n) for n in tree.find_all(j.Name) if n.name in set_somewhere} & guarded
        environment.compile(tree)  # as it renders: Python's own limits on nesting
    except TemplateSyntaxError as exc:
        return Analysis(problem=TemplateProblem(exc.message or "syntax error", exc.lineno or 1))
    except RecursionError:  # deeper than Python's stack while parsing (5,000 parentheses)
        line = parser.stream.current.lineno if parser is not None else 1
        return Analysis(problem=replace(TOO_DEEP, line=line))
    except SyntaxError:  # the generated code, nested past Python's limits
        return Analysis(problem=replace(TOO_DEEP, line=_deepest_line(tree)))
    bound = {node.name for node in tree.find_all(j.Name) if node.ctx != "load"}
    uses = sorted(
        {use for use in _uses(tree, guarded) if use.path[0] in free},
        key=lambda u: (u.line, u.path),
    )
    # A name bound somewhere (e.g. by `{% set %}` after a first use) is checked by name only.
    trimmed = [VariableUse(u.path[:1], u.line) if u.path[0] in bound else u for u in uses]
    return Analysis(
        uses=tuple(dict.fromkeys(trimmed)),
        steps=_unsafe_steps(tree),
        loads=_loads(tree),
        endless=endless_macros(tree),
        assigned=frozenset(set_somewhere),
        optional=optional,
        reads=typed_reads(tree, free, guarded),
    )


def _set_before_ifs_that_set_them(tree: j.Template) -> list[tuple[list[j.Node], j.Node]]:
    """Puts `{% set name = none %}` before each `{% if %}` that sets `name` on every branch
    (it has an `{% else %}`) before reading it, and returns where, to be taken out again.

    Jinja2's meta analysis counts such a name as read from the context: the compiled
    template looks it up before the `if`, to have a value should no branch set it. With one
    set on every branch, that lookup is never used, so the name is known after the `if`.
    One set on some branches only stays unknown (it is undefined when no branch sets it)."""
    placed: list[tuple[list[j.Node], j.Node]] = []
    pending: list[j.Node] = [tree]
    while pending:
        node = pending.pop()
        for field in node.fields:
            body = getattr(node, field)
            if not isinstance(body, list):
                continue
            for statement in [n for n in body if isinstance(n, j.If)]:
                for name in sorted(_set_on_every_branch(statement)):
                    placeholder = j.Assign(
                        j.Name(name, "store"), j.Const(None), lineno=statement.lineno
                    )
                    placeholder.set_environment(tree.environment)  # type: ignore[arg-type]
                    body.insert(body.index(statement), placeholder)
                    placed.append((body, placeholder))
        pending.extend(node.iter_child_nodes())
    return placed


def _read_only_behind_guards(tree: j.Template, guarded: set[int]) -> set[str]:
    """The names every read of which is behind a guard for a name that may not be set
    (`guarded`, from `_guarded_reads`)."""
    reads: dict[str, bool] = {}
    for name in tree.find_all(j.Name):
        if name.ctx == "load":
            reads[name.name] = reads.get(name.name, True) and id(name) in guarded
    return {name for name, all_guarded in reads.items() if all_guarded}


_DEFINED_TESTS = {"defined": True, "undefined": False}
"""Jinja2's tests of whether a name is set, and the answer that means it is."""


def _guarded_reads(tree: j.Template) -> set[int]:
    """The reads of a name (`Name` nodes, by identity) that cannot fail for want of it:
    the name tested itself (`x is defined`, `x is undefined`), given to `default` (or
    `d`), or read where a guard has shown it is set. A guard is any condition that is
    true (or false) only when the name is set, in an `{% if %}` or `{% elif %}`, an
    inline `a if test else b`, or the left side of `and` and `or`: Jinja2 evaluates the
    right side of `A and B` only when A is true, of `A or B` only when A is false
    (`x is defined and x.a`, `x is not defined or x.a`, `not (x is undefined)`)."""
    guarded: set[int] = set()

    def walk(node: j.Node, known: frozenset[str]) -> None:
        if isinstance(node, j.Name):
            if node.ctx == "load" and node.name in known:
                guarded.add(id(node))
        elif (
            isinstance(node, j.Test)
            and node.name in _DEFINED_TESTS
            and isinstance(node.node, j.Name)
        ) or (
            isinstance(node, j.Filter)
            and node.name in ("default", "d")
            and isinstance(node.node, j.Name)
        ):
            guarded.add(id(node.node))
            for child in node.iter_child_nodes():
                if child is not node.node:
                    walk(child, known)
        elif isinstance(node, j.CondExpr):
            walk(node.test, known)
            walk(node.expr1, known | _set_when(node.test, True))
            if node.expr2 is not None:
                walk(node.expr2, known | _set_when(node.test, False))
        elif isinstance(node, j.And | j.Or):
            walk(node.left, known)
            walk(node.right, known | _set_when(node.left, isinstance(node, j.And)))
        elif isinstance(node, j.Block):  # renders on its own, outside any `if` around it
            for child in node.iter_child_nodes():
                walk(child, frozenset())
        elif isinstance(node, j.If):
            otherwise = known
            for branch in (node, *node.elif_):  # an `elif` runs only if the tests before fail
                walk(branch.test, otherwise)
                for statement in branch.body:
                    walk(statement, otherwise | _set_when(branch.test, True))
                otherwise = otherwise | _set_when(branch.test, False)
            for statement in node.else_:
                walk(statement, otherwise)
        else:
            for child in node.iter_child_nodes():
                walk(child, known)

    walk(tree, frozenset())  # the tree is at most MAX_NESTING deep (`too_deep_at`)
    return guarded


def _set_when(test: j.Node, outcome: bool) -> frozenset[str]:
    """The names certainly set when `test` comes out `outcome` (true or false)."""
    if isinstance(test, j.Test) and test.name in _DEFINED_TESTS and isinstance(test.node, j.Name):
        return frozenset([test.node.name]) if outcome == _DEFINED_TESTS[test.name] else frozenset()
    if isinstance(test, j.Not):
        return _set_when(test.node, not outcome)
    if isinstance(test, j.And | j.Or):
        left_true, left_false = _set_when(test.left, True), _set_when(test.left, False)
        right = _set_when(test.right, outcome)
        if isinstance(test, j.And):  # true: both are; false: A is, or A is true and B false
            return left_true | right if outcome else left_false & (left_true | right)
        # `or`, true: A is, or A is false and B true; false: both are
        return left_true & (left_false | right) if outcome else left_false | right
    if isinstance(test, j.CondExpr) and test.expr2 is not None:
        # the value of whichever side the test chose; a side that is a constant with the
        # other outcome (`(x is defined) if y else false`) never gives this one
        chose_first = _set_when(test.test, True) | _set_when(test.expr1, outcome)
        chose_second = _set_when(test.test, False) | _set_when(test.expr2, outcome)
        if _never(test.expr2, outcome):
            return chose_first
        if _never(test.expr1, outcome):
            return chose_second
        return chose_first & chose_second
    return frozenset()


def _never(value: j.Node, outcome: bool) -> bool:
    """Whether `value` is a constant whose truth is not `outcome`."""
    return isinstance(value, j.Const) and bool(value.value) != outcome


def _set_on_every_branch(node: j.If) -> set[str]:
    """The names an `{% if %}` sets on each of its branches before reading them."""
    if not node.else_:
        return set()
    branches = [node.body, *(elif_.body for elif_ in node.elif_), node.else_]
    tests = [node.test, *(elif_.test for elif_ in node.elif_)]
    names = {n.name for n in node.find_all(j.Name) if n.ctx == "store"}
    return {
        name
        for name in names
        if not any(_reads(test, name) for test in tests)
        and all(_sets_before_reading(branch, name) for branch in branches)
    }


def _sets_before_reading(body: list[j.Node], name: str) -> bool:
    """Whether `body` sets `name` at its top level (or in an `if` that sets it on every
    branch) before anything in it reads `name`."""
    for statement in body:
        if isinstance(statement, j.Assign | j.AssignBlock) and name in {
            n.name for n in statement.target.find_all(j.Name)
        } | ({statement.target.name} if isinstance(statement.target, j.Name) else set()):
            return not _reads(statement, name)
        if isinstance(statement, j.If) and name in _set_on_every_branch(statement):
            return True
        if _reads(statement, name):
            return False
    return False


def _reads(node: j.Node, name: str) -> bool:
    return (isinstance(node, j.Name) and node.name == name and node.ctx == "load") or any(
        n.name == name and n.ctx == "load" for n in node.find_all(j.Name)
    )


def _readable_in_blocks(tree: j.Template, free: set[str]) -> set[str]:
    """`free` without the names the template binds at its top level (`{% import %}`,
    `{% set %}`, a macro, outside any block) that only its blocks read: those are set
    before a block renders (a child's blocks render after all of its top level, a
    prompt's message blocks after the file's: runtime/context.py), while Jinja2's meta
    analysis walks each block as if it stood alone. A name the top level itself reads
    before binding it stays free."""
    top = _top_level_names(tree.body) & free
    if not top:
        return free
    stripped = j.Template(_without_blocks(tree.body), lineno=1)
    stripped.set_environment(_environment())
    return (free - top) | (undeclared_variables(stripped) & top)


def _top_level_names(body: list[j.Node]) -> set[str]:
    names: set[str] = set()
    pending = list(body)
    while pending:
        node = pending.pop()
        if isinstance(node, j.If):  # a top-level `{% if %}` still sets the template's names
            pending.extend([*node.body, *node.elif_, *node.else_])
        elif isinstance(node, j.Assign | j.AssignBlock):
            names.update(n.name for n in node.target.find_all(j.Name))
            if isinstance(node.target, j.Name):
                names.add(node.target.name)
        else:
            names.update(loaded_names(node))
    return names


def _without_blocks(body: list[j.Node]) -> list[j.Node]:
    """The template's top level with its blocks left out (inside top-level `if`s too)."""
    kept: list[j.Node] = []
    for node in body:
        if isinstance(node, j.Block):
            continue
        if isinstance(node, j.If):
            node = j.If(
                node.test,
                _without_blocks(node.body),
                [n for n in _without_blocks(list(node.elif_)) if isinstance(n, j.If)],
                _without_blocks(node.else_),
                lineno=node.lineno,
            )
        kept.append(node)
    return kept


def _deepest_line(tree: j.Template) -> int:
    """The line of the most deeply nested node (the first written, of those as deep)."""
    deepest, line = -1, 1
    pending: list[tuple[j.Node, int]] = [(tree, 0)]
    while pending:
        node, depth = pending.pop()
        if depth > deepest or (depth == deepest and node.lineno < line):
            deepest, line = depth, node.lineno
        pending.extend((child, depth + 1) for child in node.iter_child_nodes())
    return line


def _unsafe_steps(tree: j.Template) -> tuple[UnsafeStep, ...]:
    found = []
    for node in tree.find_all((j.Getattr, j.Getitem)):
        assert isinstance(node, j.Getattr | j.Getitem)
        attr = node.attr if isinstance(node, j.Getattr) else _const_key(node)
        if attr is not None and unsafe_attribute(attr):
            owner = _path(node.node)
            use = VariableUse((*(owner or ("…",)), attr), node.lineno)
            keyed = isinstance(node, j.Getitem) or not record_attribute(attr)
            found.append(UnsafeStep(use, keyed, None if keyed else _keyed(owner, attr)))
    for named in tree.find_all((j.Filter, j.Getattr)):
        assert isinstance(named, j.Filter | j.Getattr)
        # `{% filter attr("_f") %}` is a filter on no expression (its block's text).
        on = named.node if isinstance(named, j.Filter) else None
        owner = _path(on) if on is not None else None
        for chain in _attributes_named(named):
            # Each step of one chain (`map(attribute="a._f.__class__")`) is reported with
            # the steps before it, so that only the first one refused is (`first_refusals`).
            for index, (attr, keyed) in enumerate(chain.steps):
                if not unsafe_attribute(attr):
                    continue
                steps = [name for name, _ in chain.steps[: index + 1]]
                use = VariableUse((*(owner or ("…",)), *steps), named.lineno)
                instead = written = None
                if isinstance(named, j.Filter):
                    filtered = f"{'.'.join(owner) if owner else '…'} | "
                    if chain.by == "attr":
                        instead, written = _keyed(owner, attr), f'{filtered}attr("{attr}")'
                    elif chain.by == "map attr":
                        instead = f'map(attribute="{attr}")'
                        written = f'{filtered}map("attr", "{attr}")'
                    else:
                        written = f'{filtered}{named.name}(attribute="{".".join(steps)}")'
                found.append(UnsafeStep(use, keyed, instead, written))
    return tuple(dict.fromkeys(found))


def _keyed(owner: tuple[str, ...] | None, name: str) -> str | None:
    """`owner["name"]`, the step a record answers with its field `name`."""
    return None if owner is None else f'{".".join(owner)}["{name}"]'


def first_refusals(
    steps: tuple[UnsafeStep, ...], fields: frozenset[str] = frozenset()
) -> tuple[UnsafeStep, ...]:
    """The steps the sandbox refuses, each chain's first only: all but those a record
    answers (`UnsafeStep.keyed`) with a field of that name declared in `fields`, which a
    template of this program may be given."""
    found = [s for s in steps if not (s.keyed and s.use.path[-1] in fields)]
    # `a.__init__.__globals__` is one refusal: the first step the sandbox stops at.
    first: dict[VariableUse, UnsafeStep] = {}
    for step in sorted(found, key=lambda s: (s.use.line, len(s.use.path), s.use.path)):
        use = step.use
        if not any(u.line == use.line and use.path[: len(u.path)] == u.path for u in first):
            first[use] = step
    return tuple(first[u] for u in sorted(first, key=lambda u: (u.line, u.path)))


ATTRIBUTE_ARGUMENT = {
    "attr": 0,
    "map": None,
    "selectattr": 0,
    "rejectattr": 0,
    "groupby": 0,
    "sum": 0,
    "sort": 2,
    "unique": 1,
    "min": 1,
    "max": 1,
    "join": 1,
}
"""Filters that read an attribute named by a string (`attr('x')`, `map(attribute='a.b')`):
the position of that argument when given without its keyword (`attribute=`)."""


@dataclass(frozen=True, slots=True)
class _Chain:
    """One chain of steps a string names."""

    steps: tuple[tuple[str, bool], ...]
    """Each name, and whether a record answers it with its field (`UnsafeStep.keyed`)."""
    by: Literal["attr", "map attr", "attribute", "format"]
    """What names it: "attr", "map attr", "attribute" (an `attribute=` argument) or
    "format" (a format string's field)."""


def _attributes_named(node: j.Filter | j.Getattr) -> Iterator[_Chain]:
    """The chains of steps a filter or a literal string's `format` reads by a literal
    string: `map(attribute="value.__class__")` and `join(attribute=…)` (each of the
    comma-separated chains of `sort`'s), the name in `attr("__class__")` and
    `map("attr", "__class__")`, each field of `"{0.__class__}".format`, called there or
    later (`{% set f = "…".format %}`). The sandbox refuses them at render just as if
    they were written `x.__class__`.

    An `attribute=` step is looked up as an item first (Jinja2's `make_attrgetter` calls
    `getitem`), as is a format field's `[key]`; a format field's `.name` as `x.name` is;
    `attr` looks up attributes only."""
    if isinstance(node, j.Filter) and node.name in ATTRIBUTE_ARGUMENT:
        position = ATTRIBUTE_ARGUMENT[node.name]
        given = [k.value for k in node.kwargs if k.key == "attribute"]
        if position is not None and len(node.args) > position:
            given.append(node.args[position])
        by: Literal["attr", "map attr", "attribute"] = (
            "attr" if node.name == "attr" else "attribute"
        )
        if (
            node.name == "map"
            and len(node.args) > 1
            and isinstance(node.args[0], j.Const)
            and node.args[0].value == "attr"
        ):  # `map("attr", "__class__")`: the `attr` filter on each item
            given, by = [node.args[1]], "map attr"
        for value in given:
            if not (isinstance(value, j.Const) and isinstance(value.value, str)):
                continue
            if by != "attribute":
                yield _Chain(((value.value, False),), by)
                continue
            for chain in value.value.split(",") if node.name == "sort" else [value.value]:
                yield _Chain(tuple((part, True) for part in chain.split(".")), by)
    elif (
        isinstance(node, j.Getattr)
        and node.attr in ("format", "format_map")
        and isinstance(node.node, j.Const)
        and isinstance(node.node.value, str)
    ):
        yield from _format_fields(node.node.value)


def _format_fields(text: str) -> Iterator[_Chain]:
    """The steps `str.format` reads through each of its fields' names."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError:  # not a valid format string: it fails at render, whatever it names
        return
    for _, field, spec, _ in parsed:
        if spec:  # `{0:{1.x}}`: a field inside the format spec
            yield from _format_fields(spec)
        if not field:
            continue
        # `0.a[b]`: after the argument, `.name` and `[key]` steps (str.format's own rule).
        rest = field[len(re.split(r"[.\[]", field, maxsplit=1)[0]) :]
        yield _Chain(
            tuple(
                (attribute, not record_attribute(attribute)) if not key else (key, True)
                for attribute, key in _FIELD_STEP.findall(rest)
            ),
            "format",
        )


_FIELD_STEP = re.compile(r"\.([^.\[]*)|\[([^\]]*)\]")


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


def _uses(node: j.Node, guarded: set[int]) -> Iterator[VariableUse]:
    """The paths `node` reads, but not those read behind a guard (`_guarded_reads`)."""
    path = _path(node)
    if path is not None:
        root = node
        while isinstance(root, j.Getattr | j.Getitem):
            root = root.node
        if id(root) not in guarded:
            yield VariableUse(path, node.lineno)
        return
    for child in node.iter_child_nodes():
        yield from _uses(child, guarded)


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
