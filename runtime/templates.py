"""Every Jinja2 template a user writes renders here: in the sandbox, from the prompts folder.

Templates are data a user (or whoever edits the repository) writes, and the values they
print come from models, tools and people. Jinja2's plain `Environment` lets a template
reach Python internals (`{{ cycler.__init__.__globals__.os }}`), so prompts, `render`
templates and `ask` strings all render in `ImmutableSandboxedEnvironment`: no attribute
that starts with `_`, no function internals, and no method that mutates a list or dict
(a prompt only reads; the immutable variant also keeps a template from editing the
value it is shown, which the reducer's purity depends on). An unsafe access raises
`jinja2.exceptions.SecurityError`; the compiler reports the same accesses beforehand
(E704, compiler/checks/templates.py) with `unsafe_attribute` below.

`{% include %}`, `{% extends %}` and `{% import %}` load through `PromptsLoader`, which
only opens regular files inside the prompts folder: no absolute names, no `..`, no
symlink whose target lies outside (`confined_file` is the one rule, and the compiler's
loader uses it too).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jinja2
import jinja2.nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_RENDERED_ITEMS = 1_000_000
"""The most characters (or items) one `*` in a template may build: `{{ "a" * 10**10 }}`
would take the process's memory before any size check on the output could see it."""
MAX_INT_BITS = 100_000
"""The largest integer (in bits, about 30,000 digits) one `*` or `**` may compute:
`{{ 9**9**9 }}` would take minutes."""
MAX_RENDERED_CHARS = 4_000_000
"""The most characters one rendering of a template (a prompt file, one of its message
blocks, a `render` template, an `ask`) may produce: rendering stops with a
`SecurityError` once its text passes this, so loops that print (`{% for i in range(100000)
%}{% for j in range(100000) %}x…`) cannot take the memory. A loop that prints nothing is
bounded only by time."""
_HUGE_WIDTH = re.compile(r"\d{7,}")
"""A width or precision of a million or more in a format string (`{:>999999999}`,
`%999999999s`): each builds a string of that size."""


def confined_file(root: Path, name: str) -> Path | None:
    """The file `name` names under `root`, or None when it is missing or leads outside.

    Refused: absolute names, any `..` part, NUL, and any path whose resolved target
    (symlinks followed) is not inside the resolved `root`.
    """
    if not name or "\x00" in name or "\\" in name:
        return None
    if name.startswith("/") or any(part in ("", "..") for part in name.split("/")):
        return None
    try:
        base = root.resolve()
        path = (base / name).resolve()
        if not path.is_relative_to(base) or not path.is_file():
            return None
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a name no file system holds
        return None  # (is_file raises for a name too long to look up, ENAMETOOLONG)
    return path


class PromptsLoader(jinja2.BaseLoader):
    """Jinja2's loader for one prompts folder, confined by `confined_file`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        path = confined_file(self.root, template)
        if path is None:
            raise jinja2.TemplateNotFound(template)
        text = path.read_text(encoding="utf-8")
        mtime = path.stat().st_mtime
        return text, str(path), lambda: path.is_file() and path.stat().st_mtime == mtime


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja2's code generator, with `a ~ b` weighed before it is joined: the sandbox
    cannot intercept `~` as it does the binary operators."""

    @optimizeconst
    def visit_Concat(self, node: jinja2.nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"{join}(environment.weighed_parts((")
        for part in node.nodes:
            self.visit(part, frame)
            self.write(", ")
        self.write(")))")


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus bounds on what one operator or filter may build: the
    sandbox stops a template reaching Python internals, not one asking for a gigabyte
    string or a number with a billion digits. A bound passed is a `SecurityError`, like
    any other thing the sandbox refuses.

    An intercepted operator is also never computed while the template compiles (Jinja2
    folds constant expressions, `nodes.BinExpr.as_const`, unless the sandbox intercepts
    the operator), so `check`, which compiles every template, computes none of them."""

    intercepted_binops = frozenset(["*", "**", "%", "+"])
    code_generator_class = _BoundedCodeGenerator

    def weighed_parts(self, parts: tuple[Any, ...]) -> tuple[Any, ...]:
        """The parts of one `~`, refused when together they print past the bound."""
        _check_size(sum(_weight(part) for part in parts), "joining these with `~`")
        return parts

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            _check_format(left)
        elif operator == "+" and _sized(left) and _sized(right):
            _check_size(_weight(left) + _weight(right), "adding these")
        elif operator == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
            both_ints = _is_int(left) and _is_int(right)
            if both_ints and abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
                raise SecurityError("the product is too large to compute in a template")
        elif operator == "**" and _is_int(left) and _is_int(right):
            bits = right * abs(left).bit_length() if abs(left) > 1 else 0
            if bits > MAX_INT_BITS:
                raise SecurityError("the power is too large to compute in a template")
        return super().call_binop(context, operator, left, right)

    def _parse(self, source: str, name: str | None, filename: str | None) -> jinja2.nodes.Template:
        # Jinja2's parser and compiler recurse once per level of nesting: a template
        # nested thousands deep is a syntax error here, not a RecursionError (the
        # compiler reports it first, compiler/template_vars.py).
        try:
            tree = super()._parse(source, name, filename)
        except RecursionError:
            raise jinja2.TemplateSyntaxError(NESTED_TOO_DEEPLY, 1, name, filename) from None
        line = too_deep_at(tree)
        if line is not None:
            raise jinja2.TemplateSyntaxError(NESTED_TOO_DEEPLY, line, name, filename)
        return tree

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # `"{:>999999999}".format(1)`: the sandbox wraps str.format when it is looked up.
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format(value.__self__)
        return wrapped


MAX_NESTING = 50
"""The deepest a template may nest blocks, brackets, filters and operators inside each
other. Jinja2's parser and compiler recurse once per level (3,000 nested `{% if %}` was a
RecursionError traceback), and Python refuses generated code nested past its own limits
(about 20 nested `{% for %}`, 100 levels of indentation: the compiler finds those by
compiling each template, compiler/template_vars.py)."""

NESTED_TOO_DEEPLY = (
    f"it is nested too deeply (Jinja2 and Python allow about {MAX_NESTING} levels of "
    "blocks, brackets, filters or operators, fewer for `{% for %}`)"
)


def too_deep_at(tree: jinja2.nodes.Template) -> int | None:
    """The line of the first node nested more than MAX_NESTING deep, None when none is.
    A walk with a stack of its own: the tree may be thousands of levels deep."""
    pending: list[tuple[jinja2.nodes.Node, int]] = [(tree, 0)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_NESTING:
            return node.lineno
        pending.extend((child, depth + 1) for child in node.iter_child_nodes())
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sized(value: Any) -> bool:
    return isinstance(value, str | list | tuple)


def _weight(value: Any) -> int:
    """About how many characters `value` prints as: a string's length, a list's items
    each counted (the same long string held ten times prints ten times). Counting stops
    once past the bound, so a huge value costs no more than the bound to weigh."""
    total = 0
    pending = [value]
    while pending and total <= MAX_RENDERED_ITEMS:
        item = pending.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, list | tuple):
            total += len(item) + 1
            pending.extend(item[: MAX_RENDERED_ITEMS + 1])
        elif isinstance(item, dict):
            total += len(item) + 1
            pending.extend(list(item)[: MAX_RENDERED_ITEMS + 1])
            pending.extend(list(item.values())[: MAX_RENDERED_ITEMS + 1])
        else:
            total += 1
    return total


def _check_size(size: int, what: str) -> None:
    if size > MAX_RENDERED_ITEMS:
        raise SecurityError(
            f"{what} would build {size:,} characters or items, more than one step of a "
            f"template may build ({MAX_RENDERED_ITEMS:,})"
        )


def _check_repeat(sequence: Any, times: Any) -> None:
    if _sized(sequence) and _is_int(times) and _weight(sequence) * times > MAX_RENDERED_ITEMS:
        raise SecurityError(
            f"repeating a {type(sequence).__name__} {times} times is too large for a template"
        )


def _check_format(text: str) -> None:
    if _HUGE_WIDTH.search(text):
        raise SecurityError("a format width or precision of a million or more in a template")


# ---- filters whose result can be far larger than what they are given ----------------
# Each is Jinja2's own filter behind a bound checked before anything is built; a bound
# passed raises, so Jinja2 does not fold the filter while it compiles either
# (`nodes.Filter.as_const` gives up on any exception) and `check` builds nothing.


def _bounded_format(value: Any, *args: Any, **kwargs: Any) -> str:
    """`format` (`%`-formatting), with the sandbox's width bound."""
    if isinstance(value, str):
        _check_format(value)
    formatted: str = jinja2.filters.do_format(value, *args, **kwargs)
    return formatted


def _bounded_center(value: Any, width: Any = 80) -> str:
    if _is_int(width):
        _check_size(width, "`center`")
    return jinja2.filters.do_center(value, width)


def _bounded_indent(value: Any, width: Any = 4, first: bool = False, blank: bool = False) -> str:
    lines = str(value).count("\n") + 1
    pad = width if _is_int(width) else len(width) if isinstance(width, str) else 0
    _check_size(len(str(value)) + pad * lines, "`indent`")
    return jinja2.filters.do_indent(value, width, first, blank)


def _bounded_batch(value: Any, linecount: Any, fill_with: Any = None) -> Iterator[list[Any]]:
    if fill_with is not None and _is_int(linecount):
        _check_size(linecount, "`batch` with a fill value")
    batches: Iterator[list[Any]] = jinja2.filters.do_batch(value, linecount, fill_with)
    return batches


def _bounded_slice(value: Any, slices: Any, fill_with: Any = None) -> Iterator[list[Any]]:
    if _is_int(slices):
        _check_size(slices, "`slice`")
    sliced: Iterator[list[Any]] = jinja2.filters.do_slice(value, slices, fill_with)
    return sliced


@jinja2.pass_eval_context
def _bounded_replace(eval_ctx: Any, value: Any, old: Any, new: Any, count: Any = None) -> str:
    if isinstance(value, str) and isinstance(old, str) and isinstance(new, str):
        found = len(value) + 1 if old == "" else value.count(old)
        if _is_int(count) and count >= 0:
            found = min(found, count)
        _check_size(len(value) + found * len(new), "`replace`")
    replaced: str = jinja2.filters.do_replace(eval_ctx, value, old, new, count)
    return replaced


@jinja2.pass_eval_context
def _bounded_join(eval_ctx: Any, value: Any, d: Any = "", attribute: Any = None) -> str:
    items = list(value) if attribute is None else value
    if attribute is None and isinstance(d, str):
        _check_size(_weight(items) + len(d) * len(items), "`join`")
    joined: str = jinja2.filters.do_join(eval_ctx, items, d, attribute)
    return joined


_BOUNDED_FILTERS: dict[str, Callable[..., Any]] = {
    "format": _bounded_format,
    "center": _bounded_center,
    "indent": _bounded_indent,
    "batch": _bounded_batch,
    "slice": _bounded_slice,
    "replace": _bounded_replace,
    "join": _bounded_join,
}


def sandboxed(
    loader: jinja2.BaseLoader | None = None,
    *,
    autoescape: bool = False,
    finalize: Callable[[Any], Any] | None = None,
    keep_trailing_newline: bool = False,
) -> jinja2.Environment:
    """The one way a user's template gets an environment, to render or to be checked:
    sandboxed (with bounds on what one operator or filter may build, `_BoundedSandbox`),
    StrictUndefined."""
    environment = _BoundedSandbox(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        trim_blocks=loader is not None,
        lstrip_blocks=loader is not None,
        keep_trailing_newline=keep_trailing_newline,
        autoescape=autoescape,
        finalize=finalize,
    )
    environment.filters.update(_BOUNDED_FILTERS)
    return environment


def bounded_text(chunks: Iterable[str]) -> str:
    """The text of a rendering (`Template.generate`, a block's function), refused with a
    `SecurityError` as soon as it passes MAX_RENDERED_CHARS: the rest is never rendered."""
    parts: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_RENDERED_CHARS:
            raise SecurityError(
                f"the rendered text passed {MAX_RENDERED_CHARS:,} characters, the most a "
                "template may produce"
            )
        parts.append(chunk)
    return "".join(parts)


class TemplateBroken(ValueError):
    """A template file that can never render: why, in one line (`referenced_templates`)."""


def referenced_templates(path: Path) -> set[str]:
    """The templates the file at `path` loads by a literal name (`{% include "x.j2" %}`,
    `extends`, `import`, `from … import`), as Jinja2's own parser finds them
    (`jinja2.meta.find_referenced_templates`); a name computed at render time is not
    known before. Empty for a file that cannot be read or parsed (it fails where it
    renders, with its own message); `TemplateBroken` for one that is not valid Jinja2 or
    UTF-8 (it could never render)."""
    import jinja2.meta

    try:
        text = path.read_text(encoding="utf-8")
        parsed = sandboxed(PromptsLoader(path.parent)).parse(text)
    except OSError:
        return set()
    except UnicodeError:
        raise TemplateBroken("not UTF-8 text") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateBroken(f"line {exc.lineno}: {exc.message}") from None
    return {name for name in jinja2.meta.find_referenced_templates(parsed) if name is not None}


def load_cycles(roots: Iterable[str], loads: Mapping[str, Iterable[str]]) -> list[tuple[str, ...]]:
    """The cycles of template loads reachable from `roots` (`loads`: the templates each
    template loads), each as the names on it with its first name again at the end
    (`("a.j2", "b.j2", "a.j2")`). Such a template never finishes rendering: Jinja2
    recurses until Python's stack runs out (the compiler reports them as E707). A depth-
    first walk without recursion, so a long chain of includes cannot exhaust the stack."""
    cycles: list[tuple[str, ...]] = []
    done: set[str] = set()
    for root in roots:
        if root in done:
            continue
        path = [root]
        pending = [iter(sorted(loads.get(root, ())))]
        while pending:
            child = next(pending[-1], None)
            if child is None:
                pending.pop()
                done.add(path.pop())
            elif child in path:
                cycles.append((*path[path.index(child) :], child))
            elif child not in done:
                path.append(child)
                pending.append(iter(sorted(loads.get(child, ()))))
    return cycles


@functools.cache
def _probe() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment()


def unsafe_attribute(name: str) -> bool:
    """True for an attribute the sandbox refuses on any object (`_x`, `__class__`).

    The sandbox also refuses some attributes only on certain types (a function's
    `func_globals`, a list's `append`); those depend on the value, so only the
    type-independent rule is decided before a run.
    """
    return not _probe().is_safe_attribute(object(), name, None)
