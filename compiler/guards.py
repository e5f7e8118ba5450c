"""Guards: typing them against the value they test, and deciding whether they can hold.

Typing (`type_guard`) reports unknown fields, comparisons of values of different types,
literals outside a literal union, misuse of `null` and bare operands that are not
`bool`. Deciding (`can_hold`) answers the approval-dominance question "can this guard be
true for a value that travels this edge?": fields whose values can be listed (literal
unions and `bool`, with `null` when optional) are enumerated exactly; every other
comparison is unknown, and unknown counts as "can hold" — the safe side.

The meaning of a guard (`evaluate`) is docs/language.md's table, which the generated
code (guard_python.py) follows too: `==` treats null as a value equal only to null and
`!=` is always its opposite; `in [..]` is "equal to one of" and `not in` its opposite;
an ordering with a null (or NaN) side is false; a bare operand holds only when it is
`true`. So with a null field `x == "a"` is false, `x != "a"` true, and `not (x == "a")`
answers as `x != "a"` does.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from . import nodes as n
from . import types as t
from .diagnostics import Diagnostic, did_you_mean, error

MAX_ASSIGNMENTS = 4096
"""Above this many combinations of enumerable values, `can_hold` stops and says yes."""
MAX_RULE_TRIALS = 100_000
"""Above this many (combinations x rules), `rules_that_fire` says every rule can fire: the
check stays fast on any input, and "it can fire" is the side that reports nothing false."""


class _Unknown:
    """A value that cannot be listed (a number, a string): any value but null, which the
    enumeration tries on its own where a field is optional."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()
Value = n.LiteralValue | _Unknown
Truth = bool | None
"""Three-valued (Kleene) truth: None is "cannot tell"."""


# ---- typing ------------------------------------------------------------------


@dataclass(frozen=True)
class GuardScope:
    """What a guard tests: the type of the value, and how to speak about it in messages."""

    root: t.Resolved | None
    """None when the step has no input at all, so the guard has no fields."""
    table: t.TypeTable
    path: str
    subject: str
    """`DeployBackend`, or `the input of tool deploy`: used in messages."""


def type_guard(expr: n.Expr, scope: GuardScope) -> list[Diagnostic]:
    return list(_type_expr(expr, scope))


def _type_expr(expr: n.Expr, scope: GuardScope) -> Iterator[Diagnostic]:
    match expr:
        case n.Not(operand=operand):
            yield from _type_expr(operand, scope)
        case n.And(operands=operands) | n.Or(operands=operands):
            for operand in operands:
                yield from _type_expr(operand, scope)
        case n.Truthy(value=value):
            yield from _type_truthy(value, scope)
        case n.Compare(op=op, left=left, right=right):
            yield from _type_compare(op, left, right, scope)
        case n.Member(value=value, options=options):
            yield from _type_member(value, options, scope)


@dataclass(frozen=True)
class _Typed:
    """An operand with its type, or None when it could not be typed (already reported)."""

    operand: n.Operand
    type: t.Resolved | None
    diagnostics: tuple[Diagnostic, ...] = ()


def _type_operand(operand: n.Operand, scope: GuardScope) -> _Typed:
    if isinstance(operand, n.Literal):
        return _Typed(operand, _literal_type(operand.value))
    if scope.root is None:
        return _Typed(
            operand,
            None,
            (
                error(
                    "E204",
                    f"`{operand}` is not a field: {scope.subject} takes no input",
                    scope.path,
                    operand.span,
                    label="no value to read this from",
                    help="declare the step's input type, e.g. `tool NAME(TYPE) -> ...`, "
                    "or remove the condition",
                ),
            ),
        )
    found = scope.table.lookup_path(scope.root, operand.parts)
    if found.ok:
        return _Typed(operand, None if isinstance(found.type, t.Unknown) else found.type)
    assert found.failed_at is not None
    shown = ".".join(operand.parts[: found.failed_at + 1])
    owner = ".".join(operand.parts[: found.failed_at]) or scope.subject
    if isinstance(found.parent, t.Record):
        fields = ", ".join(f"`{c}`" for c in found.choices) or "no fields"
        hint = did_you_mean(operand.parts[found.failed_at], found.choices)
        message = f"`{found.parent}` has no field `{operand.parts[found.failed_at]}`"
        help_ = hint or f"the fields of `{found.parent}` are {fields}"
    else:
        message = f"`{owner}` is a {found.parent} and has no fields"
        help_ = f"compare `{owner}` itself, e.g. `{owner} == ...`"
    return _Typed(
        operand,
        None,
        (error("E204", message, scope.path, operand.span, label=f"`{shown}` does not exist",
               help=help_),),
    )  # fmt: skip


def _literal_type(value: n.LiteralValue) -> t.Resolved | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return t.Scalar("bool")
    if isinstance(value, int):
        return t.Scalar("int")
    if isinstance(value, float):
        return t.Scalar("float")
    return t.Scalar("string")


def _family(resolved: t.Resolved | None) -> str | None:
    """What a value can be compared with: numbers with numbers, strings with strings."""
    if resolved is None:
        return None
    base = t.strip_optional(resolved)
    if isinstance(base, t.LiteralsOf):
        return "string"
    if isinstance(base, t.Scalar):
        return {"int": "number", "float": "number"}.get(base.name, base.name)
    return None


def _describe(typed: _Typed) -> str:
    if isinstance(typed.operand, n.Literal):
        value = typed.operand.value
        kind = "a number" if _family(typed.type) == "number" else f"a {typed.type}"
        return f"`{_show_literal(value)}` ({kind})"
    return f"`{typed.operand}` ({typed.type})"


def _show_literal(value: n.LiteralValue) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _type_truthy(value: n.Operand, scope: GuardScope) -> Iterator[Diagnostic]:
    typed = _type_operand(value, scope)
    yield from typed.diagnostics
    if isinstance(value, n.Literal) and isinstance(value.value, bool):
        return
    if typed.type is None and isinstance(value, n.Path):
        return
    if typed.type is not None and _family(typed.type) == "bool":
        return
    shown = _show_literal(value.value) if isinstance(value, n.Literal) else f"`{value}`"
    kind = f" is a {typed.type}" if typed.type is not None else " is null"
    yield error(
        "E208",
        f"{shown}{kind}, not a bool, so it cannot be a condition on its own",
        scope.path,
        value.span,
        label="not a bool",
        help=f'compare it, e.g. `{value} == "..."` or `{value} != null`',
    )


def _type_compare(
    op: n.CompareOp, left: n.Operand, right: n.Operand, scope: GuardScope
) -> Iterator[Diagnostic]:
    a, b = _type_operand(left, scope), _type_operand(right, scope)
    yield from a.diagnostics
    yield from b.diagnostics
    if a.diagnostics or b.diagnostics:
        return
    yield from _type_pair(op, a, b, scope)


def _type_member(
    value: n.Operand, options: Sequence[n.Literal], scope: GuardScope
) -> Iterator[Diagnostic]:
    a = _type_operand(value, scope)
    yield from a.diagnostics
    if a.diagnostics:
        return
    for option in options:
        yield from _type_pair("==", a, _type_operand(option, scope), scope)


def _is_null(typed: _Typed) -> bool:
    return isinstance(typed.operand, n.Literal) and typed.operand.value is None


def _type_pair(op: n.CompareOp, a: _Typed, b: _Typed, scope: GuardScope) -> Iterator[Diagnostic]:
    if _is_null(a) or _is_null(b):
        yield from _type_null(op, b if _is_null(a) else a, a if _is_null(a) else b, scope)
        return
    if a.type is None or b.type is None:
        return  # an unknown name, reported where it is declared
    for side in (a, b):
        if _family(side.type) is None:
            yield error(
                "E205",
                f"{_describe(side)} cannot be compared",
                scope.path,
                side.operand.span,
                label=f"a {side.type}",
                help="guards compare strings, numbers and bools; compare one of its fields",
            )
            return
    if _family(a.type) != _family(b.type):
        yield error(
            "E205",
            f"{_describe(a)} is compared with {_describe(b)}",
            scope.path,
            b.operand.span,
            label=f"expected {_article(_family(a.type))}",
            help=f"compare `{a.operand}` with {_article(_family(a.type))} value",
        )
        return
    if op in ("<", "<=", ">", ">=") and _family(a.type) == "bool":
        yield error(
            "E205",
            f"`{op}` does not order bools",
            scope.path,
            a.operand.span,
            label="a bool",
            help="use `==` or `!=` with `true` or `false`",
        )
        return
    for field_side, literal_side in ((a, b), (b, a)):
        base = t.strip_optional(field_side.type) if field_side.type else None
        literal = literal_side.operand
        if (
            isinstance(base, t.LiteralsOf)
            and isinstance(literal, n.Literal)
            and isinstance(literal.value, str)
            and literal.value not in base.values
        ):
            members = " | ".join(f'"{v}"' for v in base.values)
            suggestion = did_you_mean(literal.value, base.values)
            yield error(
                "E206",
                f'`{field_side.operand}` is never "{literal.value}"',
                scope.path,
                literal.span,
                label=f"not one of {members}",
                help=suggestion.replace("`", '"') if suggestion else f"use one of {members}",
            )


def _article(family: str | None) -> str:
    return {"number": "a number", "string": "a string", "bool": "a bool"}.get(family or "", "a")


def _type_null(
    op: n.CompareOp, other: _Typed, null: _Typed, scope: GuardScope
) -> Iterator[Diagnostic]:
    if op not in ("==", "!="):
        yield error(
            "E207",
            f"`{op} null` is never true",
            scope.path,
            null.operand.span,
            label="null has no order",
            help="test for a missing value with `== null` or `!= null`",
        )
        return
    if (
        isinstance(other.operand, n.Path)
        and other.type is not None
        and not t.is_optional(other.type)
    ):
        yield error(
            "E207",
            f"`{other.operand}` is a {other.type}, which is never null",
            scope.path,
            null.operand.span,
            label="cannot be null",
            help=f"only optional fields (`{other.type}?`) can be null; remove this comparison",
        )


# ---- meaning -----------------------------------------------------------------


def evaluate(expr: n.Expr, env: Mapping[tuple[str, ...], Value]) -> Truth:
    """The guard's truth for field values in `env`; None when a field's value is unknown."""
    match expr:
        case n.Not(operand=operand):
            inner = evaluate(operand, env)
            return None if inner is None else not inner
        case n.And(operands=operands):
            results = [evaluate(o, env) for o in operands]
            if False in results:
                return False
            return None if None in results else True
        case n.Or(operands=operands):
            results = [evaluate(o, env) for o in operands]
            if True in results:
                return True
            return None if None in results else False
        case n.Truthy(value=value):
            v = _value(value, env)
            return None if isinstance(v, _Unknown) else v is True
        case n.Compare(op=op, left=left, right=right):
            return _compare(op, _value(left, env), _value(right, env))
    # The one case left: `x in [..]` / `x not in [..]`.
    v = _value(expr.value, env)
    if isinstance(v, _Unknown):
        return None
    inside = any(_equal(v, o.value) for o in expr.options)
    return not inside if expr.negated else inside


def _value(operand: n.Operand, env: Mapping[tuple[str, ...], Value]) -> Value:
    if isinstance(operand, n.Literal):
        return operand.value
    return env.get(operand.parts, UNKNOWN)


def _compare(op: n.CompareOp, a: Value, b: Value) -> Truth:
    if a is None or b is None:
        # Decided even against UNKNOWN, which is never null (null is tried on its own).
        if op in ("==", "!="):
            return (a is b) == (op == "==")
        return False  # null has no order
    if isinstance(a, _Unknown) or isinstance(b, _Unknown):
        return None
    if op == "==":
        return _equal(a, b)
    if op == "!=":
        return not _equal(a, b)
    try:
        if op == "<":
            return a < b  # type: ignore[operator]
        if op == "<=":
            return a <= b  # type: ignore[operator]
        if op == ">":
            return a > b  # type: ignore[operator]
        return a >= b  # type: ignore[operator]
    except TypeError:
        return None


def _equal(a: n.LiteralValue, b: n.LiteralValue) -> bool:
    """`==` of the language: null equals only null; NaN equals nothing, itself included."""
    if a is None or b is None:
        return a is b
    return a == b


def tests_in(expr: n.Expr) -> Iterator[n.Compare | n.Member | n.Truthy]:
    """The comparisons, memberships and bare operands under `not`, `and` and `or`."""
    match expr:
        case n.Not(operand=operand):
            yield from tests_in(operand)
        case n.And(operands=operands) | n.Or(operands=operands):
            for operand in operands:
                yield from tests_in(operand)
        case n.Compare() | n.Member() | n.Truthy():
            yield expr


def paths_in(expr: n.Expr) -> Iterator[tuple[str, ...]]:
    for test in tests_in(expr):
        sides = (test.left, test.right) if isinstance(test, n.Compare) else (test.value,)
        for side in sides:
            if isinstance(side, n.Path):
                yield side.parts


def _domain(resolved: t.Resolved) -> list[Value] | None:
    """Every value a field can take, when there are few enough to list; else None."""
    base = t.strip_optional(resolved)
    values: list[Value]
    if isinstance(base, t.LiteralsOf):
        values = list(base.values)
    elif base == t.Scalar("bool"):
        values = [True, False]
    else:
        return None
    return [*values, None] if t.is_optional(resolved) else values


Domains = dict[tuple[str, ...], list[Value]]
"""For each field path: the values to try, UNKNOWN standing for "any value" of a field
whose values cannot be listed."""


def _domains(
    paths: Sequence[tuple[str, ...]], root: t.Resolved | None, table: t.TypeTable
) -> Domains:
    """What each path can be: listed values, else UNKNOWN, with None where it is optional."""
    domains: Domains = {}
    for path in paths:
        found = table.lookup_path(root, path) if root is not None else None
        domain = _domain(found.type) if found is not None and found.ok else None
        if domain is not None:
            domains[path] = domain
        elif found is not None and found.ok and not isinstance(found.type, t.Unknown):
            domains[path] = [UNKNOWN, None] if t.is_optional(found.type) else [UNKNOWN]
        else:
            domains[path] = [UNKNOWN, None]  # nothing known about it: it may be null too
    return domains


def _environments(domains: Domains) -> Iterator[dict[tuple[str, ...], Value]] | None:
    """Every combination of the domains' values; None when there are too many to try."""
    count = 1
    for domain in domains.values():
        count *= len(domain)
    if count > MAX_ASSIGNMENTS:
        return None
    keys = list(domains)
    return (
        dict(zip(keys, combination, strict=True))
        for combination in itertools.product(*(domains[k] for k in keys))
    )


def can_hold(
    holds: Sequence[n.Expr],
    fails: Sequence[n.Expr],
    root: t.Resolved | None,
    table: t.TypeTable,
) -> bool:
    """Can every guard in `holds` be true while every guard in `fails` is false?

    Exact over literal-union and bool fields of `root`; any other field makes its
    comparisons unknown, and unknown is taken to hold.
    """
    exprs = [*holds, *fails]
    domains = _domains(sorted({p for e in exprs for p in paths_in(e)}), root, table)
    environments = _environments(domains)
    if environments is None:
        return True
    return any(
        all(evaluate(e, env) is not False for e in holds)
        and all(evaluate(e, env) is not True for e in fails)
        for env in environments
    )


def rules_that_fire(
    guards: Sequence[n.Expr | None], root: t.Resolved | None, table: t.TypeTable
) -> list[bool]:
    """For rules tried in order (None: a rule without a guard), whether each can fire:
    its guard can hold while every earlier guard fails. The same answers as `can_hold([g],
    earlier)` rule by rule, found in one pass over the combinations of values, so a step
    with many rules costs (combinations x rules), not that times the rules again."""
    reads = [sorted(set(paths_in(g))) if g is not None else [] for g in guards]
    domains = _domains(sorted({p for r in reads for p in r}), root, table)
    environments = _environments(domains)
    if environments is None or math.prod(map(len, domains.values())) * len(guards) > (
        MAX_RULE_TRIALS
    ):
        return [True] * len(guards)
    # A guard's truth depends only on the fields it reads: each is evaluated once per
    # combination of those, however many combinations of the others there are.
    known: list[dict[tuple[Value, ...], Truth]] = [{} for _ in guards]
    fires = [False] * len(guards)
    for env in environments:
        for index, guard in enumerate(guards):
            if guard is None:
                truth: Truth = True
            else:
                key = tuple(env[p] for p in reads[index])
                if key not in known[index]:
                    known[index][key] = evaluate(guard, env)
                truth = known[index][key]
            if truth is not False:
                fires[index] = True
            if truth is True:
                break  # the later rules are not tried for this value
        if all(fires):
            break
    return fires


def null_skips(guard: n.Expr, root: t.Resolved | None, table: t.TypeTable) -> list[str]:
    """The optional fields whose null makes `guard` false where a value would make it
    true: for `requires approval if GUARD`, a missing value that skips the approval.

    Returned as `.agent` paths (`amount`, `customer`), outermost first. A field the guard
    itself tests for null (`amount == null or ...`, `customer.name != null and ...`) is
    left out: the guard says what a missing value means. Exact over literal unions and
    bools like `can_hold`. A comparison it cannot decide counts both ways (it could be
    false while the field is null, and true once it is not), so every real skip is
    reported; a guard with too many combinations to try reports nothing.
    """
    if root is None:
        return []
    paths = sorted(set(paths_in(guard)))
    tested = set(_null_tested(guard))
    found: list[str] = []
    for optional in _optional_prefixes(paths, root, table):
        if any(p[: len(optional)] == optional for p in tested):
            continue
        under = [p for p in paths if p[: len(optional)] == optional]
        present_domains = _domains(under, root, table)
        if optional in present_domains:  # the field itself: any value but null
            present_domains[optional] = [v for v in present_domains[optional] if v is not None]
        others = _environments(_domains([p for p in paths if p not in under], root, table))
        present = _environments(present_domains)
        if others is None or present is None:
            continue
        others_list, present_list = list(others), list(present)
        if len(others_list) * len(present_list) > MAX_ASSIGNMENTS:
            continue  # too many to try: not decided, nothing reported
        missing = dict.fromkeys(under, None)
        if any(
            evaluate(guard, {**env, **missing}) is not True
            and any(evaluate(guard, {**env, **value}) is not False for value in present_list)
            for env in others_list
        ):
            found.append(".".join(optional))
    return found


def _optional_prefixes(
    paths: Sequence[tuple[str, ...]], root: t.Resolved, table: t.TypeTable
) -> list[tuple[str, ...]]:
    """The prefixes of `paths` whose last field is declared optional, outermost first."""
    found: dict[tuple[str, ...], None] = {}
    for path in paths:
        for end in range(1, len(path) + 1):
            parent = table.lookup_path(root, path[: end - 1]) if end > 1 else t.PathLookup(root)
            record = t.strip_optional(parent.type)
            if not parent.ok or not isinstance(record, t.Record):
                break
            field = table.fields(record).get(path[end - 1])
            if field is None:
                break
            if t.is_optional(field):
                found[path[:end]] = None
    return sorted(found, key=lambda p: (len(p), p))


def _null_tested(expr: n.Expr) -> Iterator[tuple[str, ...]]:
    """Paths the guard compares with the literal `null` (directly or in a list)."""
    for test in tests_in(expr):
        match test:
            case (
                n.Compare(left=n.Path() as path, right=n.Literal(value=None))
                | n.Compare(left=n.Literal(value=None), right=n.Path() as path)
            ):
                yield path.parts
            case n.Member(value=n.Path() as path, options=options):
                if any(o.value is None for o in options):
                    yield path.parts
