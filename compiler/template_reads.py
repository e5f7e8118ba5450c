"""What a template reads through the names it is given, as paths the checker can follow
through types: `{{ input.who }}`, and through what a loop or an index reaches
(`{% for i in items %}{{ i.name }}{% endfor %}`, `{{ items[0].name }}`), both read as
`items` → an element → `name`.

Only what can be followed for certain is a path; anything else ends it, and what
follows is not checked rather than guessed:

- A loop variable stands for an element of what the loop iterates when that is itself
  a path (`each`: a list's item, a map's key), for a map's values through `.values()`
  and the second name of `.items()`. A name that anything but a `for` binds somewhere
  in the template (`{% set %}`, a macro's argument, `{% with %}`) stands for nothing
  known: reads through it are not paths (a given name of that spelling is checked by
  its root only, as template_vars.py always did).
- A literal whole-number index (`items[0]`, `items[-1]`) is an element; a literal string
  (`x["name"]`) a field or a key; any other index, a filter, a slice ends the path.
- A method call (`name.upper()`, `by.items()`) reads its object: the method is no field.
- A path tested for being set (`last.x is defined`, `last.x | default("")`) anywhere in
  the template is not checked past it: the template says it may be missing.
- A block renders on its own (template_vars.py): a loop around it binds nothing in it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from jinja2 import nodes as j

from .types import EACH, INDEX, VALUE, PathStep

Scope = dict[str, tuple[PathStep, ...] | None]
"""The loop variables in force: the path each stands for, None when it is unknown."""


@dataclass(frozen=True, slots=True)
class TypedRead:
    """One read of a value the template is given, as far as it can be followed."""

    path: tuple[PathStep, ...]
    """From a given name: `("items", EACH, "name")` for `i.name` in a loop over `items`."""
    line: int
    written: tuple[str, ...]
    """How the template writes it, one token a step: `("i", ".name")`, `("items", "[0]")`."""
    unwritten: int = 1
    """How many steps of `path` the written root stands for (a loop variable's path)."""

    @property
    def names(self) -> tuple[str, ...]:
        """The written steps as names, as template_vars.py's `VariableUse.path` has them."""
        return tuple(token.lstrip(".[").rstrip("]").strip("\"'") for token in self.written)


_METHODS = {"items": (EACH, VALUE), "values": (VALUE,), "keys": (EACH,)}
"""What each name of a `for` over a mapping method stands for, after the mapping."""

_SET_TESTS = {"defined", "undefined"}
_SET_FILTERS = {"default", "d"}


def typed_reads(tree: j.Template, free: set[str], guarded: set[int]) -> tuple[TypedRead, ...]:
    """Every path the template reads from a name it is given (`free`), in the order
    written, but not the reads `guarded` (template_vars.py `_guarded_reads`)."""
    bound = _bound_but_by_loops(tree)
    reads: list[TypedRead] = []
    tested: set[tuple[PathStep, ...]] = set()

    def read(node: j.Node, scope: Scope) -> None:
        chain = _chain(node)
        if chain is None:
            return
        root, steps = chain
        if root.name in scope:
            base = scope[root.name]
            if base is not None:
                path = (*base, *(s for s, _ in steps))
                reads.append(TypedRead(path, node.lineno, _written(root, steps), len(base)))
        elif root.name in free and id(root) not in guarded:
            if root.name in bound:  # perhaps a value the template made: its name only
                steps = []
            path = (root.name, *(s for s, _ in steps))
            reads.append(TypedRead(path, node.lineno, _written(root, steps)))

    def followed(node: j.Node, scope: Scope) -> tuple[PathStep, ...] | None:
        chain = _chain(node)
        if chain is None:
            return None
        root, steps = chain
        if root.name in scope:
            base = scope[root.name]
        elif root.name in free and root.name not in bound:
            base = (root.name,)
        else:
            return None
        return None if base is None else (*base, *(s for s, _ in steps))

    def walk(node: j.Node, scope: Scope) -> None:
        if isinstance(node, j.For):
            walk(node.iter, scope)
            inner = {**scope, "loop": None, **_loop_names(node, scope, bound, followed)}
            for child in [*([node.test] if node.test else []), *node.body]:
                walk(child, inner)
            for child in node.else_:
                walk(child, scope)
        elif isinstance(node, j.Block) and not node.scoped:
            for child in node.iter_child_nodes():
                walk(child, {})
        elif _chain(node) is not None:
            read(node, scope)
        elif isinstance(node, j.Call) and isinstance(node.node, j.Getattr):
            walk(node.node.node, scope)  # a method's object; its name is no field
            arguments: list[j.Node | None] = [*node.args, *node.kwargs]
            for argument in [*arguments, node.dyn_args, node.dyn_kwargs]:
                if argument is not None:
                    walk(argument, scope)
        else:
            if _tests_set(node):
                path = followed(node.node, scope)  # type: ignore[attr-defined]
                if path is not None:
                    tested.add(path)
            for child in node.iter_child_nodes():
                walk(child, scope)

    walk(tree, {})  # the tree is at most MAX_NESTING deep (template_vars.py `too_deep_at`)
    # A prefix at a time: as many lookups as steps (not a comparison with every test).
    return tuple(
        r for r in reads if not any(r.path[:end] in tested for end in range(2, len(r.path) + 1))
    )


def _tests_set(node: j.Node) -> bool:
    """`x.a is defined`, `x.a | default(…)`: a value the template says may be missing."""
    return (isinstance(node, j.Test) and node.name in _SET_TESTS) or (
        isinstance(node, j.Filter) and node.name in _SET_FILTERS and node.node is not None
    )


def _loop_names(
    node: j.For,
    scope: Scope,
    bound: set[str],
    followed: Callable[[j.Node, Scope], tuple[PathStep, ...] | None],
) -> Scope:
    """What each name a `for` binds stands for in its body."""
    names = [n.name for n in node.target.find_all(j.Name)]
    if isinstance(node.target, j.Name):
        names = [node.target.name]
    found: Scope = dict.fromkeys(names)
    iterated = node.iter
    after: tuple[PathStep, ...] = (EACH,)
    if (
        isinstance(iterated, j.Call)
        and isinstance(iterated.node, j.Getattr)
        and iterated.node.attr in _METHODS
        and not (iterated.args or iterated.kwargs or iterated.dyn_args or iterated.dyn_kwargs)
    ):
        after = _METHODS[iterated.node.attr]
        iterated = iterated.node.node
    elif _chain(iterated) is None:
        return found
    base = followed(iterated, scope)
    if base is None:
        return found
    if isinstance(node.target, j.Name) and len(after) == 1:
        target_names = [node.target.name]
    elif isinstance(node.target, j.Tuple) and len(after) == len(node.target.items):
        target_names = [t.name if isinstance(t, j.Name) else "" for t in node.target.items]
    else:
        return found
    for name, step in zip(target_names, after, strict=True):
        if name and name not in bound:
            found[name] = (*base, step)
    return found


def _bound_but_by_loops(tree: j.Template) -> set[str]:
    """The names something other than a `for` binds (`{% set %}`, a macro's argument,
    `{% with %}`, `{% import %}`, a macro): what they hold is not followed."""
    found = list(tree.find_all((j.For, j.Name, j.Import, j.FromImport, j.Macro)))  # one walk
    by_loops: set[int] = set()
    for loop in (node for node in found if isinstance(node, j.For)):
        by_loops.add(id(loop.target))
        if isinstance(loop.target, j.Tuple):
            by_loops.update(id(item) for item in loop.target.items)
    names: set[str] = set()
    for node in found:
        if isinstance(node, j.Name) and node.ctx != "load" and id(node) not in by_loops:
            names.add(node.name)
        else:
            names.update(loaded_names(node))
    return names


def loaded_names(node: j.Node) -> tuple[str, ...]:
    """The names an `{% import %}`, a `{% from … import %}` or a macro binds (none for any
    other node)."""
    if isinstance(node, j.Import):
        return (node.target,)
    if isinstance(node, j.FromImport):
        return tuple(name if isinstance(name, str) else name[1] for name in node.names)
    if isinstance(node, j.Macro):
        return (node.name,)
    return ()


Written = list[tuple[PathStep, str]]


def _chain(node: j.Node) -> tuple[j.Name, Written] | None:
    """`a.b[0]["c"]` as its root name and each literal step with how it is written."""
    steps: Written = []
    while isinstance(node, j.Getattr | j.Getitem):
        step = _step(node)
        if step is None:
            return None
        steps.append(step)
        node = node.node
    if not (isinstance(node, j.Name) and node.ctx == "load"):
        return None
    return node, steps[::-1]


def _step(node: j.Getattr | j.Getitem) -> tuple[PathStep, str] | None:
    if isinstance(node, j.Getattr):
        return node.attr, f".{node.attr}"
    key = node.arg
    if isinstance(key, j.Const) and isinstance(key.value, str):
        return key.value, f'["{key.value}"]'
    if isinstance(key, j.Neg) and isinstance(key.node, j.Const):
        key, sign = key.node, "-"
    else:
        sign = ""
    if isinstance(key, j.Const) and type(key.value) is int:
        return INDEX, f"[{sign}{key.value}]"
    return None


def _written(root: j.Name, steps: Written) -> tuple[str, ...]:
    return (root.name, *(token for _, token in steps))
