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

import contextvars
import copy
import functools
import itertools
import re
import sys
import types
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    Set,
    ValuesView,
)
from pathlib import Path
from typing import Any, cast

import jinja2
import jinja2.nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError
from jinja2.runtime import LoopContext
from jinja2.sandbox import (
    MAX_RANGE,
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from jinja2.utils import Namespace, _PassArg
from markupsafe import Markup

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
%}{% for j in range(100000) %}x…`) cannot take the memory. A value is weighed against it
before it is made text (printed by `{{ }}`, given to a filter that makes it text,
compared): a list that holds itself twice, sixty times over, prints as 2**60 items from a
few bytes of memory, and Python's `repr` would build all of it before the output could be
measured."""
MAX_TEMPLATE_STEPS = 2_000_000
"""The most steps of work one rendering may take (the time bound, counted rather than
timed so that a template renders or fails the same way on every machine): each iteration
of a `{% for %}` (skipped ones included), ten for each call (a macro, `caller()`, `loop()` of a
recursive loop, a function or method), each filter plus one per item of the list it is
given and of the list it makes, each value weighed by the bounds above, and one per
thousand characters built. An operation is charged the work it does: `length`, `count`,
`first`, `last`, `random`, `default`, `attr` and `items` are one step whatever they are
given, `select`, `reject`, `selectattr`, `rejectattr` and `map` one per item they take,
`in` on text and comparing two strings one per thousand characters scanned (`_scanned`),
a mapping's `get`, `keys()`, `values()` and `items()` only the call, a list's `index` and
`count` one per item as well (`_guarded_filter`, `_BoundedSandbox.call`). A
loop that prints nothing (`{% for i in range(100000) %}{% for j in range(100000) %}{%
endfor %}{% endfor %}`) stops here with a `SecurityError`."""
MAX_TEMPLATE_BUILT_BYTES = 40_000_000
"""The most memory (in bytes, as Python holds it) the values one rendering builds may take
in all: every string, list, mapping and number an operator (`~`, `+`, `*`, `%`), a filter, a
call (a macro's text, `namespace(…)`, a method), a list or mapping written in the template
or the text of a `{% set %}` block makes counts, whether it is kept or dropped, and so
does each value printed and each piece of literal text output (the text gathered holds
it). Each value is bounded on its own above; this bounds how many of them a rendering may
make: keeping a
new million-character string on each of two thousand steps (a linked list of namespaces)
held 2 GB, 8 GB with four-byte characters, within the step budget. Ten times the text one
rendering may print, in ASCII."""
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


def why_refused(root: Path, name: str) -> str | None:
    """Why `confined_file` refuses a `name` that is there (`"is a link to a file outside
    the prompts directory"`), None when there is simply nothing of that name under
    `root`: what a message tells its author, who can see the file."""
    if name.startswith("/"):
        return "is an absolute path"
    if ".." in name.split("/"):
        return "leads out of the prompts directory with `..`"
    try:
        base = root.resolve()
        path = (base / name).resolve()
        if not path.is_relative_to(base) and path.exists():
            return "is a link to something outside the prompts directory"
        if path.is_dir():
            return "is a folder, not a file"
    except (OSError, RuntimeError, ValueError):
        return None
    return None


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


STEPS_PER_CALL = 10
"""What one call counts for: a macro call takes about ten times as long as a loop's step."""
TOO_MUCH_WORK = (
    f"the template took more than {MAX_TEMPLATE_STEPS:,} steps (loop iterations, calls, "
    "items given to filters), the most one rendering may take"
)


TOO_MUCH_BUILT = (
    f"the template built more than {MAX_TEMPLATE_BUILT_BYTES:,} bytes of text, lists and "
    "mappings (what `~`, `+`, `*`, filters, calls, `{{ }}` and `{% set %}` make, counted "
    "whether kept or not), the most one rendering may build"
)


class _Budget:
    """The steps one rendering has left, and the bytes it may still build (`bounded_text`
    starts one per rendering)."""

    __slots__ = ("left", "room")

    def __init__(self) -> None:
        self.left = MAX_TEMPLATE_STEPS
        self.room = MAX_TEMPLATE_BUILT_BYTES


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "twelvefold_template_budget", default=None
)


def _spend(steps: int) -> None:
    """Count `steps` against the rendering under way (none outside `bounded_text`)."""
    budget = _BUDGET.get()
    if budget is not None:
        budget.left -= steps
        if budget.left < 0:
            raise SecurityError(TOO_MUCH_WORK)


def _footprint(value: Any) -> int:
    """The bytes `value` itself takes (not what it refers to: the items of a list are
    counted where they were built): a string its characters at 1, 2 or 4 bytes each, a
    list or mapping its slots, a namespace its attributes."""
    if isinstance(value, str | bytes | list | tuple | dict | set | frozenset | int | float):
        return sys.getsizeof(value)
    if isinstance(value, Namespace):
        return sys.getsizeof(object.__getattribute__(value, "_Namespace__attrs")) + 48
    return 0


def _built(value: Any) -> Any:
    """`value`, just built by the rendering under way, counted against what it may build."""
    _charge(_footprint(value))
    return value


def _made(value: Any) -> Any:
    """`value`, just returned by a call or a filter, counted against what the rendering
    may build with the items of a list or tuple it is: what a call returns holds values
    it made itself (the strings of `partition` or `split`, the lists of `batch`), which
    nothing else counts. An item the call was given is counted again (conservative)."""
    size = _footprint(value)
    if type(value) is list or type(value) is tuple:
        size += sum(map(_footprint, value))
    _charge(size)
    return value


SLOT_BYTES = 8
"""What a value held in a list takes besides itself: a printed value's or literal text's
place among the parts of a rendering's text."""


def _charge(size: int) -> None:
    """Count `size` bytes built against the rendering under way (none outside
    `bounded_text`)."""
    budget = _BUDGET.get()
    if budget is not None:
        budget.room -= size
        if budget.room < 0:
            raise SecurityError(TOO_MUCH_BUILT)


def _counting(iterable: Iterable[Any], budget: _Budget) -> Iterator[Any]:
    for item in iterable:
        budget.left -= 1
        if budget.left < 0:
            raise SecurityError(TOO_MUCH_WORK)
        yield item


def _cost(value: Any) -> int:
    """The steps a filter or method given `value` (or building it) takes, about: one per
    item of a list or mapping, one per thousand characters of a string."""
    if isinstance(value, str):
        return len(value) // 1000
    if isinstance(value, list | tuple | dict | Set | range):
        return len(value)
    return 0


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
        self.write(f"environment.built({join}(environment.weighed_parts((")
        for part in node.nodes:
            self.visit(part, frame)
            self.write(", ")
        self.write("))))")

    # A list, tuple or mapping written in the template is built each time it is reached
    # (in a loop, once per step): counted like any other value built (`environment.built`).

    def visit_Getitem(self, node: jinja2.nodes.Getitem, frame: Frame) -> None:
        if not isinstance(node.arg, jinja2.nodes.Slice):  # through environment.getitem
            super().visit_Getitem(node, frame)
            return
        self.write("environment.cut(")  # Python's own slicing, written out
        super().visit_Getitem(node, frame)
        self.write(")")

    def visit_List(self, node: jinja2.nodes.List, frame: Frame) -> None:
        self.write("environment.built(")
        super().visit_List(node, frame)
        self.write(")")

    def visit_Tuple(self, node: jinja2.nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":  # `{% for a, b in … %}`, `{% set a, b = … %}`: a target
            super().visit_Tuple(node, frame)
            return
        self.write("environment.built(")
        super().visit_Tuple(node, frame)
        self.write(")")

    def _output_child_to_const(self, node: jinja2.nodes.Expr, frame: Frame, finalize: Any) -> str:
        # Jinja2 computes `{{ … }}` whose parts are constants while it compiles (filters
        # included: `{{ "x"|tojson|tojson… }}` grew to gigabytes in `check`). Only literal
        # text and plain constants are written out ahead; the rest is computed when it
        # renders, under the bounds below.
        if not isinstance(node, jinja2.nodes.TemplateData | jinja2.nodes.Const):
            raise jinja2.nodes.Impossible()
        return str(super()._output_child_to_const(node, frame, finalize))

    def visit_EvalContextModifier(
        self, node: jinja2.nodes.EvalContextModifier, frame: Frame
    ) -> None:
        # `{% autoescape EXPR %}`: Jinja2 computes EXPR while it compiles unless it is not
        # a plain constant; anything else is decided when it renders.
        for keyword in node.options:
            self.writeline(f"context.eval_ctx.{keyword.key} = ")
            self.visit(keyword.value, frame)
            if isinstance(keyword.value, jinja2.nodes.Const):
                setattr(frame.eval_ctx, keyword.key, keyword.value.value)
            else:
                frame.eval_ctx.volatile = True

    def _output_const_repr(self, group: Iterable[Any]) -> str:
        # Literal text: a slot in the text gathered (`environment.literal`), each time.
        return f"environment.literal({super()._output_const_repr(group)})"

    def _output_child_pre(self, node: jinja2.nodes.Expr, frame: Frame, finalize: Any) -> None:
        # `{{ value }}`: weighed before it is made text (`str`, `escape`, a finalize).
        super()._output_child_pre(node, frame, finalize)
        self.write("environment.printed(")

    def _output_child_post(self, node: jinja2.nodes.Expr, frame: Frame, finalize: Any) -> None:
        self.write(")")
        super()._output_child_post(node, frame, finalize)

    @optimizeconst
    def visit_Compare(self, node: jinja2.nodes.Compare, frame: Frame) -> None:
        # `a == b`, `a in b`: Python compares nested values item by item (and hashes a
        # tuple whole), so both are weighed first (`environment.compared`).
        self.write("environment.compared(")
        self.visit(node.expr, frame)
        for operand in node.ops:
            self.write(f", {operand.op!r}, ")
            self.visit(operand.expr, frame)
        self.write(")")

    def visit_Dict(self, node: jinja2.nodes.Dict, frame: Frame) -> None:
        # A key is hashed whole: weighed first, unless it is a constant.
        self.write("environment.built({")
        for index, item in enumerate(node.items):
            if index:
                self.write(", ")
            if isinstance(item.key, jinja2.nodes.Const):
                self.visit(item.key, frame)
            else:
                self.write("environment.hashed(")
                self.visit(item.key, frame)
                self.write(")")
            self.write(": ")
            self.visit(item.value, frame)
        self.write("})")

    def visit_For(self, node: jinja2.nodes.For, frame: Frame) -> None:
        # Each item a loop takes is a step (`environment.counted`), those its `if`
        # skips included.
        counted = copy.copy(node)
        counted.iter = jinja2.nodes.Call(
            jinja2.nodes.EnvironmentAttribute("counted"), [node.iter], [], None, None
        ).set_lineno(node.lineno)
        super().visit_For(counted, frame)


def undeclared_variables(tree: jinja2.nodes.Template) -> set[str]:
    """`jinja2.meta.find_undeclared_variables`, walked by the bounded code generator: the
    one in `jinja2.meta` computes constant `{{ … }}` and `{% autoescape … %}` as it walks."""
    import jinja2.meta

    class Tracking(jinja2.meta.TrackingCodeGenerator, _BoundedCodeGenerator):
        pass

    assert tree.environment is not None  # a parsed tree knows its environment
    tracking = Tracking(tree.environment)
    tracking.optimizer = None  # it makes one whatever the environment says
    tracking.visit(tree)
    return tracking.undeclared_identifiers


class _BoundedFormatting:
    """`str.format` and `format_map` in a template, bounded: each field's width and
    precision (after any nested field, `{0:{1}}`, is filled in), and the text built so
    far, checked as each field is formatted, before the whole is joined."""

    built = 0

    def format_field(self, value: Any, format_spec: str) -> Any:
        _check_format(format_spec)
        _check_size(self.built + _weight(value), "this `format`")
        formatted = super().format_field(value, format_spec)  # type: ignore[misc]
        self.built += len(formatted)
        _check_size(self.built, "this `format`")
        return formatted

    def _vformat(self, format_string: str, *args: Any, **kwargs: Any) -> Any:
        _check_size(self.built + len(format_string), "this `format`")
        return super()._vformat(format_string, *args, **kwargs)  # type: ignore[misc]


class _BoundedFormatter(_BoundedFormatting, SandboxedFormatter):
    pass


class _BoundedEscapeFormatter(_BoundedFormatting, SandboxedEscapeFormatter):
    pass


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

    def built(self, value: Any) -> Any:
        """A value the template just built (`~`, a list, tuple or mapping it writes out),
        counted against MAX_TEMPLATE_BUILT_BYTES."""
        return _built(value)

    def concat(self, parts: Iterable[str]) -> str:
        """The text of a macro, a `caller()`, a `{% set %}` or `{% filter %}` block (Jinja2
        joins what the block printed with `environment.concat`): counted as built before
        it is joined, since the parts may each be one long value printed many times."""
        listed = parts if isinstance(parts, list) else list(parts)
        if _BUDGET.get() is not None:
            size = sum(len(part) for part in listed)
            _charge(size if all(part.isascii() for part in listed) else 4 * size)
        return "".join(listed)

    def weighed_parts(self, parts: tuple[Any, ...]) -> tuple[Any, ...]:
        """The parts of one `~`, refused when together they print past the bound."""
        size = sum(_weight(part) for part in parts)
        _check_size(size, "joining these with `~`")
        _spend(size // 1000)
        return parts

    def printed(self, value: Any) -> Any:
        """A value `{{ }}` prints, refused before it is made text when it would print
        past MAX_RENDERED_CHARS. Counted as built: the text it is made (escaped, formatted
        for the context: a copy) and its slot in the text gathered, which a `{% set %}`
        block or a macro holds until it is joined."""
        if type(value) is str:
            _built(value)
        else:
            size = _weight(value, MAX_RENDERED_CHARS)
            _check_size(size, "printing this value", MAX_RENDERED_CHARS)
            _charge(sys.getsizeof("") + 4 * size)  # the new str object, as wide as it may be
        _charge(SLOT_BYTES)
        return value

    def literal(self, text: str) -> str:
        """Literal text of the template, output: its slot in the text gathered (a loop
        repeating `{% if x %}a{% endif %}` a thousand times adds a thousand slots a step)."""
        _charge(SLOT_BYTES)
        return text

    def compared(self, left: Any, *operations: Any) -> Any:
        """`left op right [op right…]`, as Python chains comparisons, each operand weighed
        first: comparing two values walks both, and `in` a list compares with each item.
        A mapping or set on the right of `in` only hashes the value looked up."""
        _check_size(_weight(left, MAX_RENDERED_CHARS), "comparing this", MAX_RENDERED_CHARS)
        result: Any = True
        for index in range(0, len(operations), 2):
            operator, right = operations[index], operations[index + 1]
            if not (operator in ("in", "notin") and isinstance(right, Mapping | Set)):
                _check_size(
                    _weight(right, MAX_RENDERED_CHARS), "comparing this", MAX_RENDERED_CHARS
                )
            _spend(_scanned(operator in ("in", "notin"), left, right))
            result = _COMPARISONS[operator](left, right)
            if not result:
                return result
            left = right
        return result

    def hashed(self, key: Any) -> Any:
        """A key a mapping looks up or is built with: hashing a tuple walks all of it."""
        if isinstance(key, tuple):
            _check_size(_weight(key, MAX_RENDERED_CHARS), "this key", MAX_RENDERED_CHARS)
        return key

    def getitem(self, obj: Any, argument: Any) -> Any:
        return super().getitem(obj, self.hashed(argument))

    def getattr(self, obj: Any, attribute: str) -> Any:
        """`value.name`: a record's field first. A record reaches a template as a mapping
        of its fields, and Jinja2 reads `.name` as the mapping's attribute before its
        item: a field named `items`, `keys`, `get` or `copy` read the dict's method (a
        red team's `{% for line in order.items %}` passed `check` and failed every run).
        The fields are what `check` reads (E703); the mapping's methods stay reachable
        under any name that is not a field."""
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def cut(self, value: Any) -> Any:
        """A slice (`s[1:]`, `xs[::2]`): a copy, as large as what it is cut from."""
        _spend(_cost(value))
        return _built(value)

    def counted(self, iterable: Any) -> Iterator[Any]:
        """A loop's items, each counted as a step of the rendering under way."""
        budget = _BUDGET.get()
        return iter(iterable) if budget is None else _counting(iterable, budget)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        # Every call is a step: a macro calling itself twice over, thirty deep, is a
        # billion calls though never deeper than thirty.
        _spend(STEPS_PER_CALL)
        if isinstance(__obj, LoopContext) and args:  # `loop(children)`: its items count
            args = (__self.counted(args[0]), *args[1:])
        elif isinstance(__obj, types.BuiltinMethodType) and __obj.__self__ is not None:
            args = _check_method_call(__obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        if _looks_up(__obj):  # `d.get(k)`: a value the mapping holds, nothing built
            return result
        # A range, or a mapping's `keys()`, `values()` or `items()` (a view of it), is
        # made in one step; its items count where they are used.
        if not isinstance(result, range | KeysView | ValuesView | ItemsView):
            _spend(_cost(result))
        return _made(result)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            _check_percent(left, right)
        elif operator == "+" and _sized(left) and _sized(right):
            _check_size(_items_weight(left) + _items_weight(right), "adding these")
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
        result = super().call_binop(context, operator, left, right)
        _spend(1 + _cost(result))
        return _built(result)

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
        """`"{:>{1}}".format`: the sandbox wraps `str.format` and `format_map` when they
        are looked up; these run with a bounded formatter, a new one for each call."""
        if not isinstance(value, types.MethodType | types.BuiltinMethodType) or (
            value.__name__ not in ("format", "format_map")
        ):
            return None
        text = value.__self__
        if not isinstance(text, str):
            return None
        _check_format(text)
        is_format_map = value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            formatter: SandboxedFormatter
            if isinstance(text, Markup):
                formatter = _BoundedEscapeFormatter(self, escape=text.escape)
            else:
                formatter = _BoundedFormatter(self)
            if is_format_map:
                if kwargs:
                    raise TypeError("format_map() takes no keyword arguments")
                if len(args) != 1:
                    raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
                kwargs, args = args[0], ()
            return type(text)(formatter.vformat(text, args, kwargs))

        return wrapper


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


def _weight(value: Any, limit: int = MAX_RENDERED_ITEMS) -> int:
    """About how many characters `value` prints as: a string's length, a number's digits,
    a list's (tuple's, set's, mapping's, namespace's) items each counted (the same long
    string held ten times prints ten times; a list holding another twice, sixty times
    over, prints 2**60 items). Counting stops once past `limit`, so a huge value costs no
    more than the limit to weigh; each ten items looked at are a step of the rendering."""
    total = 0
    looked_at = 0
    pending = [value]
    while pending and total <= limit:
        item = pending.pop()
        looked_at += 1
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, int):  # 9**30000 is one item of 28,628 digits
            total += item.bit_length() * 3 // 10 + 1
        elif isinstance(item, float):
            total += 24  # the longest repr of a float
        elif isinstance(item, list | tuple):
            total += len(item) + 1
            pending.extend(item[: limit + 1])
        elif isinstance(item, Mapping):
            total += len(item) + 1
            pending.extend(itertools.islice(item.keys(), limit + 1))
            pending.extend(itertools.islice(item.values(), limit + 1))
        elif isinstance(item, Set | ValuesView):  # a set, `d.items()`: printed whole
            total += len(item) + 1
            pending.extend(itertools.islice(item, limit + 1))
        elif isinstance(item, Namespace):  # `{{ ns }}` prints its attributes
            pending.append(object.__getattribute__(item, "_Namespace__attrs"))
        else:
            total += 1
    _spend(looked_at // 10)  # a step of a loop takes ten times as long
    return total


def _scanned(contains: bool, left: Any, right: Any) -> int:
    """The steps comparing `left` with `right` takes beyond weighing them, one per thousand
    characters scanned (as building text is charged): `left in right` (`contains`) on text
    scans all of `right` (a million-character scan, a step a time, ran for an hour within
    the bound), `==` or `<` of two strings as much as the shorter."""
    if contains:
        return len(right) // 1000 if isinstance(right, str) else 0
    if isinstance(left, str) and isinstance(right, str):
        return min(len(left), len(right)) // 1000
    return 0


def _bounded_range(*args: Any) -> range:
    """`range()` in a template: at most MAX_RANGE numbers (Jinja2's sandbox bound), said
    as such (Jinja2's OverflowError read as a number out of range)."""
    numbers = range(*args)
    try:
        size = f"{len(numbers):,}" if len(numbers) > MAX_RANGE else ""
    except OverflowError:  # `range(10**30)`: more than Python counts in one number
        size = "more"
    if size:
        raise SecurityError(
            f"`range()` makes at most {MAX_RANGE:,} numbers in a template; this one would"
            f" make {size}"
        )
    return numbers


def _check_size(size: int, what: str, limit: int = MAX_RENDERED_ITEMS) -> None:
    if size > limit and limit == MAX_RENDERED_CHARS:
        raise SecurityError(
            f"{what} would make text of more than {limit:,} characters, the most a "
            "template may print (a list or mapping counts each item it holds, as often as "
            "it holds it)"
        )
    if size > limit:
        raise SecurityError(
            f"{what} would build {size:,} characters or items, more than one step of a "
            f"template may build ({limit:,})"
        )


_COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "gteq": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lteq": lambda a, b: a <= b,
    "in": lambda a, b: a in b,
    "notin": lambda a, b: a not in b,
}
"""Jinja2's comparison operators (`nodes.Operand.op`), as Python computes them."""


def _looks_up(function: Any) -> bool:
    """Whether `function` is a mapping's `get`, which hands back a value the mapping holds
    (or the default it was given) in one step."""
    return (
        isinstance(function, types.BuiltinMethodType)
        and function.__name__ == "get"
        and isinstance(function.__self__, Mapping)
    )


_SIZED_METHODS = frozenset(["center", "ljust", "rjust", "zfill", "to_bytes"])
"""Methods that build a value as large as a number they are given (`"x".center(10**9)`)."""


def _check_method_call(
    method: types.BuiltinMethodType, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """A method of a value (`"-".join(xs)`, `s.center(n)`, `d.get(k)`), checked before
    it runs: no count or width of a million or more, each value it is given weighed
    (compared or hashed whole), and a `join`, `replace` or `expandtabs` of text weighed
    like the filters. The arguments to call it with (`join`'s items, listed once)."""
    name = method.__name__
    owner = method.__self__
    given = [*args, *(v for k, v in kwargs.items() if not k.startswith("_"))]
    for value in given:
        if name in _SIZED_METHODS and _is_int(value) and abs(value) >= MAX_RENDERED_ITEMS:
            raise SecurityError(f"`{name}` given {value:,}, a million or more, in a template")
        if not isinstance(value, str | int | float | Iterator):
            _check_size(_weight(value, MAX_RENDERED_CHARS), f"`{name}`", MAX_RENDERED_CHARS)
    if isinstance(owner, list | tuple):  # `index`, `count`: each item compared
        _spend(_cost(owner))
    if isinstance(owner, str):
        _spend(_cost(owner))
        if name == "join" and len(args) == 1:
            items = list(itertools.islice(args[0], MAX_RENDERED_ITEMS + 1))
            _check_size(_weight(items) + len(owner) * len(items), "`join`")
            return (items,)
        if name == "expandtabs":
            tabsize = args[0] if args else kwargs.get("tabsize", 8)
            if _is_int(tabsize):
                _check_size(len(owner) + owner.count("\t") * tabsize, "`expandtabs`")
        if name == "replace" and len(args) >= 2:
            old, new = args[0], args[1]
            if isinstance(old, str) and isinstance(new, str):
                found = len(owner) + 1 if old == "" else owner.count(old)
                _check_size(len(owner) + found * len(new), "`replace`")
    return args


def _items_weight(sequence: str | list[Any] | tuple[Any, ...]) -> int:
    """What a string, list or tuple counts for against MAX_RENDERED_ITEMS when `*` or `+`
    builds a larger one: a string its characters, a list each of its items as its text, at
    least one (`[1] * 1000000` is a million items; `["ab"] * 500000` two million characters'
    worth of text, as is `[""] * 10**9` a billion items)."""
    if isinstance(sequence, str):
        return len(sequence)
    # _weight counts the list's own brackets and separators (its length plus one) as well.
    return max(len(sequence), _weight(sequence) - len(sequence) - 1)


def _check_repeat(sequence: Any, times: Any) -> None:
    if _sized(sequence) and _is_int(times):
        kind = type(sequence).__name__
        _check_size(_items_weight(sequence) * times, f"repeating a {kind} {times:,} times")


def _check_format(text: str) -> None:
    if _HUGE_WIDTH.search(text):
        raise SecurityError("a format width or precision of a million or more in a template")


_PERCENT = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[-#0 +]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d+))?"
    r"[hlL]?(?P<kind>.?)",
    re.DOTALL,
)


def _check_percent(text: str, values: Any) -> None:
    """`text % values` (the `%` operator, the `format` filter), refused before it is built
    when a width or precision, `*` ones included (`"%*d" % (10**9, 1)`), is a million or
    more, or when the text with every value it prints, each counted as often as it is
    printed (`"%s%s" % (s, s)`), would pass the bound."""
    _check_format(text)
    positional = list(values[: MAX_RENDERED_ITEMS + 1]) if isinstance(values, tuple) else [values]
    size = len(text)
    taken = 0
    for match in _PERCENT.finditer(text):
        if match["kind"] == "%":
            continue
        for star in (match["width"], match["precision"]):
            if star == "*":
                given = positional[taken] if taken < len(positional) else 0
                taken += 1
                if _is_int(given) and abs(given) >= 1_000_000:
                    raise SecurityError(
                        "a format width or precision of a million or more in a template"
                    )
                size += abs(given) if _is_int(given) else 0
            elif star is not None:
                size += int(star)
        if match["key"] is not None and isinstance(values, Mapping):
            printed = values.get(match["key"])
        elif taken < len(positional):
            printed = positional[taken]
            taken += 1
        else:
            printed = None
        size += _weight(printed)
        _check_size(size, "this `%` formatting")


# ---- filters whose result can be far larger than what they are given ----------------
# Each is Jinja2's own filter behind a bound checked before anything is built; a bound
# passed raises, so Jinja2 does not fold the filter while it compiles either
# (`nodes.Filter.as_const` gives up on any exception) and `check` builds nothing.


def _bounded_format(value: Any, *args: Any, **kwargs: Any) -> str:
    """`format` (`%`-formatting), with the bounds of the `%` operator."""
    if isinstance(value, str):
        _check_percent(value, kwargs or args)
    formatted: str = jinja2.filters.do_format(value, *args, **kwargs)
    return formatted


@jinja2.pass_eval_context
def _bounded_tojson(eval_ctx: Any, value: Any, indent: Any = None) -> Any:
    """`tojson`: what it is given weighed first, then what it made (JSON escapes `"` as
    six characters, so each level of `|tojson|tojson…` made it about six times larger)."""
    _check_size(_weight(value), "`tojson`")
    dumped = jinja2.filters.do_tojson(eval_ctx, value, indent)
    _check_size(len(dumped), "`tojson`")
    return dumped


def _bounded_pprint(value: Any) -> str:
    _check_size(_weight(value), "`pprint`")
    printed = jinja2.filters.do_pprint(value)
    _check_size(len(printed), "`pprint`")
    return printed


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


_SHALLOW_FILTERS = frozenset(
    [
        *("length", "count", "first", "last", "list", "reverse", "random", "default", "d"),
        *("attr", "map", "select", "reject", "selectattr", "rejectattr", "batch", "slice"),
        *("items", "abs", "round", "int", "float"),
        *("join", "format", "tojson", "pprint"),  # weighed by their own bounds above
    ]
)
"""Filters that never make their value text, compare or hash it (or weigh it themselves):
every other filter weighs its value against MAX_RENDERED_CHARS first (`string`, `e`,
`upper`, `sort`, `unique`, `sum`…: a value that prints as 2**60 items is refused, not
converted). `map`, `select` and the like hand each item to a filter or test that does."""


_ONE_STEP_FILTERS = frozenset(
    ["length", "count", "first", "last", "random", "default", "d", "attr", "items"]
)
"""Filters whose work does not grow with the list, mapping or text they are given: `length`
and `count` ask its size, `first`, `last` and `random` take one item, `default` and `attr`
look at it, `items` hands out a mapping's pairs as they are used (each counts where it is:
a loop's step). One step each, and what they return is an item they were given (or a
number), not something built: `{{ rows | length }}` on each of 5,000 rows was 25 million
steps."""

_LAZY_FILTERS = frozenset(["select", "reject", "selectattr", "rejectattr", "map"])
"""Filters that take their value's items one at a time, as what they make is used: a step
for each item taken (`rows | selectattr("done") | first` stops at the first match), not
for every item up front."""


def _guarded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` as the filter `name`: a step, plus one per item it is given or makes
    (one per item it takes for one in _LAZY_FILTERS, nothing more for one in
    _ONE_STEP_FILTERS), and its value weighed first unless it is in _SHALLOW_FILTERS."""
    weigh = name not in _SHALLOW_FILTERS
    at = 0 if _PassArg.from_obj(function) is None else 1  # after a context it is passed

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        value = args[at] if len(args) > at else None
        if name in _ONE_STEP_FILTERS:
            _spend(1)
            return function(*args, **kwargs)
        budget = _BUDGET.get()
        if (
            budget is not None
            and name in _LAZY_FILTERS
            and isinstance(value, Iterable)
            and not isinstance(value, jinja2.Undefined)  # fails as Jinja2 has it fail
        ):
            _spend(1)
            args = (*args[:at], _counting(value, budget), *args[at + 1 :])
        else:
            _spend(1 + _cost(value))
        if weigh and type(value) is not str:
            _check_size(_weight(value, MAX_RENDERED_CHARS), f"`{name}`", MAX_RENDERED_CHARS)
        result = function(*args, **kwargs)
        _spend(_cost(result))
        return _made(result)

    return guarded


_COMPARING_TESTS = frozenset(
    [
        *("eq", "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt"),
        *("greaterthan", ">", "ge", ">=", "in"),
    ]
)


def _guarded_test(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A comparing test (`select("eq", x)`, `is in`): both sides weighed first."""

    @functools.wraps(function)
    def guarded(value: Any, *args: Any, **kwargs: Any) -> Any:
        for side in (value, *args):
            _check_size(_weight(side, MAX_RENDERED_CHARS), f"`{name}`", MAX_RENDERED_CHARS)
        if args:  # `"b" is in text` scans the text, `select("eq", s)` compares strings
            _spend(_scanned(name == "in", value, args[0]))
        return function(value, *args, **kwargs)

    return guarded


_BOUNDED_FILTERS: dict[str, Callable[..., Any]] = {
    "format": _bounded_format,
    "center": _bounded_center,
    "indent": _bounded_indent,
    "batch": _bounded_batch,
    "slice": _bounded_slice,
    "replace": _bounded_replace,
    "join": _bounded_join,
    "tojson": _bounded_tojson,
    "pprint": _bounded_pprint,
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
        # No constant folding while compiling (`check` compiles every template): what a
        # template computes, it computes when it renders, under the bounds.
        optimized=False,
    )
    environment.filters.update(_BOUNDED_FILTERS)
    environment.filters = {
        name: _guarded_filter(name, function) for name, function in environment.filters.items()
    }
    tests = cast(dict[str, Callable[..., Any]], environment.tests)
    tests.update(
        (name, _guarded_test(name, tests[name])) for name in _COMPARING_TESTS if name in tests
    )
    # `lipsum(n=10**9)` builds n paragraphs; a prompt has no use for placeholder text.
    # `range` is the sandbox's (100,000 numbers); `dict`, `namespace`, `cycler` and
    # `joiner` hold only what they are given.
    del environment.globals["lipsum"]
    environment.globals["range"] = _bounded_range
    return environment


def bounded_text(chunks: Iterable[str]) -> str:
    """The text of a rendering (`Template.generate`, a block's function), refused with a
    `SecurityError` as soon as it passes MAX_RENDERED_CHARS (the rest is never rendered)
    or takes more than MAX_TEMPLATE_STEPS: each rendering is given its own budget of
    steps here, so every template must render through this."""
    parts: list[str] = []
    size = 0
    started = _BUDGET.set(_Budget())
    try:
        for chunk in chunks:
            size += len(chunk)
            if size > MAX_RENDERED_CHARS:
                raise SecurityError(
                    f"the rendered text passed {MAX_RENDERED_CHARS:,} characters, the most "
                    "a template may produce"
                )
            parts.append(chunk)
        return "".join(parts)
    except MemoryError:  # its message is empty: say what happened
        parts.clear()
        raise SecurityError(
            "rendering the template ran out of memory (something it builds is too large)"
        ) from None
    except OverflowError:  # `10.0 ** 400`: "(34, 'Numerical result out of range')"
        raise SecurityError(
            "a number in the template is out of range (a float past about 1.8e308, or an "
            "integer too large to use as a count, a size or an index)"
        ) from None
    except RecursionError:  # Python's stack, not a template line: say what it means
        raise SecurityError(
            "the template recursed too deeply (a macro or a recursive loop that calls "
            "itself without end, or a value nested too deeply to print)"
        ) from None
    finally:
        _BUDGET.reset(started)


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
