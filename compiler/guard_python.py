"""Guards compiled from the AST to Python expressions over one variable.

LANGUAGE.md: a comparison with a null optional field is false, except `== null` and
`!= null`. So every optional field on a path is tested for None before it is compared,
and a null anywhere along a path makes the whole path null.
"""

from __future__ import annotations

from collections.abc import Mapping

from . import nodes as n
from .pynames import PythonNames, py_str, python_names


class GuardCompiler:
    """Compiles guards for values of one declared type, reached as `variable`.

    A path's fields are read through their Python attributes (`names`, pynames.py: `from`
    is `from_`); without `names`, the program's types are named as codegen names them.
    """

    def __init__(
        self,
        types: Mapping[str, n.TypeDecl],
        type_name: str | None,
        variable: str,
        names: PythonNames | None = None,
    ):
        self.types = types
        self.type_name = type_name
        self.variable = variable
        self.names = names or python_names(types.values(), ())

    def compile(self, expr: n.Expr) -> str:
        match expr:
            case n.Compare(op=op, left=left, right=right):
                return self._compare(op, left, right)
            case n.Member(value=value, options=options, negated=negated):
                listed = ", ".join(_literal(o.value) for o in options)
                container = f"({listed},)" if len(options) == 1 else f"({listed})"
                test = f"{self._access(value)} {'not in' if negated else 'in'} {container}"
                return _guarded(self._null_checks(value), test)
            case n.Truthy(value=value):
                return _guarded(self._null_checks(value), f"{self._access(value)} is True")
            case n.Not(operand=operand):
                return self._negate(operand)
            case n.And(operands=operands):
                return " and ".join(f"({self.compile(o)})" for o in operands)
            case n.Or(operands=operands):
                return " or ".join(f"({self.compile(o)})" for o in operands)
        raise AssertionError(f"unknown guard node {expr!r}")  # pragma: no cover

    def _negate(self, operand: n.Expr) -> str:
        """`not` of a plain test flips its operator, the spelling a linter expects; a test
        with null checks stays wrapped, since a null makes the inner test false."""
        plain = not isinstance(operand, n.Compare | n.Member | n.Truthy) or any(
            self._null_checks(o) for o in _operands(operand)
        )
        if plain or _null_comparison(operand):
            return f"not ({self.compile(operand)})"
        match operand:
            case n.Compare(op=op, left=left, right=right):
                return f"{self._access(left)} {_INVERSE[op]} {self._access(right)}"
            case n.Member(negated=negated):
                return self.compile(n.Member(operand.value, operand.options, not negated))
            case n.Truthy(value=value):
                return f"{self._access(value)} is not True"
        raise AssertionError(operand)  # pragma: no cover

    def _compare(self, op: str, left: n.Operand, right: n.Operand) -> str:
        null_side = _null_literal(left) or _null_literal(right)
        if null_side and op in ("==", "!="):
            path = left if isinstance(left, n.Path) else right
            if not isinstance(path, n.Path):
                return "True" if (op == "==") else "False"  # null == null
            prefixes = [*self._optional_prefixes(path), self._access(path)]
            if op == "==":
                return " or ".join(f"{p} is None" for p in _unique(prefixes))
            return " and ".join(f"{p} is not None" for p in _unique(prefixes))
        test = f"{self._access(left)} {op} {self._access(right)}"
        return _guarded(self._null_checks(left) + self._null_checks(right), test)

    def _access(self, operand: n.Operand) -> str:
        if isinstance(operand, n.Literal):
            return _literal(operand.value)
        return self._walk(operand)[-1]

    def _null_checks(self, operand: n.Operand) -> list[str]:
        if not isinstance(operand, n.Path):
            return []
        return [f"{p} is not None" for p in self._optional_prefixes(operand, include_last=True)]

    def _optional_prefixes(self, path: n.Path, include_last: bool = False) -> list[str]:
        """Accesses along `path` whose field is optional (so may be None), outermost first."""
        accesses = self._walk(path)
        found: list[str] = []
        for index, (access, field_type) in enumerate(
            zip(accesses, self._field_types(path), strict=True)
        ):
            is_last = index == len(path.parts) - 1
            if isinstance(field_type, n.OptionalType) and (include_last or not is_last):
                found.append(access)
        return found

    def _field_types(self, path: n.Path) -> list[n.TypeExpr | None]:
        """The declared type of each field along `path`."""
        found: list[n.TypeExpr | None] = []
        current = self.type_name
        for part in path.parts:
            field_type = _field_type(self.types, current, part)
            found.append(field_type)
            inner = field_type.inner if isinstance(field_type, n.OptionalType) else field_type
            current = inner.name if isinstance(inner, n.NamedType) else None
        return found

    def _walk(self, path: n.Path) -> list[str]:
        """`output.from_`, `output.from_.name`: the Python access after each part of `path`."""
        accesses: list[str] = []
        access = self.variable
        owner = self.type_name
        for part, field_type in zip(path.parts, self._field_types(path), strict=True):
            access = f"{access}.{self.names.attribute(owner, part)}"
            accesses.append(access)
            inner = field_type.inner if isinstance(field_type, n.OptionalType) else field_type
            owner = inner.name if isinstance(inner, n.NamedType) else None
        return accesses


def _field_type(
    types: Mapping[str, n.TypeDecl], type_name: str | None, field: str
) -> n.TypeExpr | None:
    decl = types.get(type_name or "")
    if decl is None:
        return None
    for f in decl.fields:
        if f.name.text == field:
            return f.type
    return None


_INVERSE = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}


def _operands(expr: n.Expr) -> list[n.Operand]:
    match expr:
        case n.Compare(left=left, right=right):
            return [left, right]
        case n.Member(value=value) | n.Truthy(value=value):
            return [value]
    return []


def _null_comparison(expr: n.Expr) -> bool:
    return isinstance(expr, n.Compare) and any(_null_literal(o) for o in (expr.left, expr.right))


def _guarded(checks: list[str], test: str) -> str:
    return " and ".join([*_unique(checks), test])


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _null_literal(operand: n.Operand) -> bool:
    return isinstance(operand, n.Literal) and operand.value is None


def _literal(value: n.LiteralValue) -> str:
    if isinstance(value, str):
        return py_str(value)
    return repr(value)
