"""Guards printed back as canonical .agent text, for labels, comments and messages.

Printed from the AST (never pasted from the source), so layout and comments in the
user's file do not leak into generated code or pictures.
"""

from __future__ import annotations

import json

from . import nodes as n


def literal_text(value: n.LiteralValue) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def _operand(operand: n.Operand) -> str:
    return str(operand) if isinstance(operand, n.Path) else literal_text(operand.value)


def guard_text(expr: n.Expr) -> str:
    return _text(expr, parent=None)


_PRECEDENCE = {n.Or: 1, n.And: 2, n.Not: 3}


def _text(expr: n.Expr, parent: type | None) -> str:
    match expr:
        case n.Compare(op=op, left=left, right=right):
            return f"{_operand(left)} {op} {_operand(right)}"
        case n.Member(value=value, options=options, negated=negated):
            listed = ", ".join(literal_text(o.value) for o in options)
            return f"{_operand(value)} {'not in' if negated else 'in'} [{listed}]"
        case n.Truthy(value=value):
            return _operand(value)
        case n.Not(operand=operand):
            text = f"not {_text(operand, n.Not)}"
        case n.And(operands=operands):
            text = " and ".join(_text(o, n.And) for o in operands)
        case n.Or(operands=operands):
            text = " or ".join(_text(o, n.Or) for o in operands)
    if parent is not None and _PRECEDENCE[parent] > _PRECEDENCE[type(expr)]:
        return f"({text})"
    return text
