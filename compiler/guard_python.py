"""Guards compiled from the AST to Python expressions over one variable.

The meaning is LANGUAGE.md's null semantics (docs/language.md, "Guards and missing
values"), the same that `guards.evaluate` gives the checker:

- `==` and `!=` treat null as a value equal only to null, and `!=` is always the
  opposite of `==`: with a null field `x == "a"` is false and `x != "a"` true;
- `in [..]` is "equal to one of", `not in [..]` its opposite;
- an ordering (`< <= > >=`) with a null side is false — and so is one with NaN;
- a null anywhere along a path makes the whole path null.

Python's own `==`, `!=`, `in` and `is True` already answer so for None, so a test on a
field is written plainly; only the optional records *on the way* to it are tested
first (reading through a None would raise), with the answer the test gives for null:
`v.customer is None or v.customer.tier != "pro"`. An ordering tests the field itself
too. `not` is flipped into the opposite test only where that test answers the
opposite for every value, null and NaN included (`==`/`!=`, `in`/`not in`, a bare
bool); an ordering stays `not (...)`, since `not (a <= 1000)` holds for a NaN or null
`a` and `a > 1000` does not. Comparisons of two literals are decided here, by the
checker's evaluator, so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping

from . import nodes as n
from .guards import evaluate
from .pynames import PythonNames, py_str, python_names

_ORDERINGS = ("<", "<=", ">", ">=")


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
                return self._member(value, options, negated)
            case n.Truthy(value=value):
                return self._truthy(value, negated=False)
            case n.Not(operand=operand):
                return self._negate(operand)
            case n.And(operands=operands):
                return " and ".join(f"({self.compile(o)})" for o in operands)
            case n.Or(operands=operands):
                return " or ".join(f"({self.compile(o)})" for o in operands)
        raise AssertionError(f"unknown guard node {expr!r}")  # pragma: no cover

    def _negate(self, operand: n.Expr) -> str:
        """The opposite test where one answers the opposite for every value; else `not`."""
        match operand:
            case n.Compare(op="==" | "!=" as op, left=left, right=right):
                return self._compare("!=" if op == "==" else "==", left, right)
            case n.Member(value=value, options=options, negated=negated):
                return self._member(value, options, not negated)
            case n.Truthy(value=value):
                return self._truthy(value, negated=True)
        return f"not ({self.compile(operand)})"

    def _compare(self, op: n.CompareOp, left: n.Operand, right: n.Operand) -> str:
        if isinstance(left, n.Literal) and isinstance(right, n.Literal):
            return _constant(n.Compare(op, left, right))
        if _null_literal(left) or _null_literal(right):
            # `== null` / `!= null` (the checker allows no ordering with null).
            path = left if isinstance(left, n.Path) else right
            assert isinstance(path, n.Path)
            prefixes = self._optional_prefixes(path, include_last=True) or [self._access(path)]
            if op == "==":
                return " or ".join(f"{p} is None" for p in prefixes)
            return " and ".join(f"{p} is not None" for p in prefixes)
        if op in _ORDERINGS:
            # Python raises on None < 1: test every optional step, the field included.
            checks = [
                f"{p} is not None"
                for side in (left, right)
                if isinstance(side, n.Path)
                for p in self._optional_prefixes(side, include_last=True)
            ]
            test = f"{self._access(left)} {op} {self._access(right)}"
            return " and ".join([*_unique(checks), test])
        if isinstance(left, n.Path) and isinstance(right, n.Path):
            return f"{self._value(left)} {op} {self._value(right)}"
        path = left if isinstance(left, n.Path) else right
        assert isinstance(path, n.Path)
        test = f"{self._access(left)} {op} {self._access(right)}"
        # A null path: `== "v"` is false, `!= "v"` true (the literal is not null here).
        return self._through(path, test, null_answer=op == "!=")

    def _member(self, value: n.Operand, options: tuple[n.Literal, ...], negated: bool) -> str:
        member = n.Member(value, options, negated)
        if isinstance(value, n.Literal):
            return _constant(member)
        listed = ", ".join(_literal(o.value) for o in options)
        container = f"({listed},)" if len(options) == 1 else f"({listed})"
        test = f"{self._access(value)} {'not in' if negated else 'in'} {container}"
        return self._through(value, test, null_answer=evaluate(member, {value.parts: None}) is True)

    def _truthy(self, value: n.Operand, negated: bool) -> str:
        if isinstance(value, n.Literal):
            truthy = n.Truthy(value)
            return _constant(n.Not(truthy) if negated else truthy)
        test = f"{self._access(value)} {'is not' if negated else 'is'} True"
        return self._through(value, test, null_answer=negated)

    def _through(self, path: n.Path, test: str, null_answer: bool) -> str:
        """`test` on `path`, read only when no optional record on the way is None; when
        one is, the path is null and the answer is `null_answer`."""
        prefixes = self._optional_prefixes(path)
        if not prefixes:
            return test
        if null_answer:
            return " or ".join([*(f"{p} is None" for p in prefixes), test])
        return " and ".join([*(f"{p} is not None" for p in prefixes), test])

    def _value(self, path: n.Path) -> str:
        """The path's value, None when an optional record on the way is None."""
        prefixes = self._optional_prefixes(path)
        if not prefixes:
            return self._access(path)
        missing = " or ".join(f"{p} is None" for p in prefixes)
        return f"(None if {missing} else {self._access(path)})"

    def _access(self, operand: n.Operand) -> str:
        if isinstance(operand, n.Literal):
            return _literal(operand.value)
        return self._walk(operand)[-1]

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


def _constant(expr: n.Expr) -> str:
    """A guard over literals only, decided now by the checker's own evaluator."""
    return "True" if evaluate(expr, {}) is True else "False"


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _null_literal(operand: n.Operand) -> bool:
    return isinstance(operand, n.Literal) and operand.value is None


def _literal(value: n.LiteralValue) -> str:
    if isinstance(value, str):
        return py_str(value)
    return repr(value)
