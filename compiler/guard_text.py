"""Print a guard expression back as canonical `.agent` text.

Graphs label edges with it and codegen restates rules in comments, so the text must
parse back to the same expression: strings use the grammar's JSON-style escapes,
numbers never use exponents, and parentheses appear exactly where precedence
(`or` < `and` < `not` < comparison) needs them.
"""

from __future__ import annotations

import json
from decimal import Decimal

from . import nodes as n

_OR, _AND, _NOT, _ATOM = range(4)
"""Binding strength, weakest first: an operand weaker than its context is parenthesised."""


def guard_text(expr: n.Expr) -> str:
    return _expr(expr, _OR)


def literal_text(value: n.LiteralValue) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float_text(value)
    return json.dumps(value, ensure_ascii=False)


def _float_text(value: float) -> str:
    # repr() may say 1e-05; the grammar's NUMBER has no exponent, so spell the digits out.
    text = repr(value)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return text if "." in text else text + ".0"


def _operand(operand: n.Operand) -> str:
    if isinstance(operand, n.Path):
        return ".".join(operand.parts)
    return literal_text(operand.value)


def _strength(expr: n.Expr) -> int:
    match expr:
        case n.Or():
            return _OR
        case n.And():
            return _AND
        case n.Not():
            return _NOT
        case _:
            return _ATOM


def _expr(expr: n.Expr, context: int) -> str:
    match expr:
        case n.Compare(op=op, left=left, right=right):
            text = f"{_operand(left)} {op} {_operand(right)}"
        case n.Member(value=value, options=options, negated=negated):
            listed = ", ".join(literal_text(option.value) for option in options)
            text = f"{_operand(value)} {'not in' if negated else 'in'} [{listed}]"
        case n.Truthy(value=value):
            text = _operand(value)
        case n.Not(operand=operand):
            text = f"not {_expr(operand, _NOT)}"
        case n.And(operands=operands):
            text = " and ".join(_expr(o, _AND + 1) for o in operands)
        case n.Or(operands=operands):
            text = " or ".join(_expr(o, _OR + 1) for o in operands)
    return f"({text})" if _strength(expr) < context else text
