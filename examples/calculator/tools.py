"""calculator's tools: one arithmetic operation each, returning a `Number`."""

from __future__ import annotations

from typing import Protocol


class Operands(Protocol):
    a: float
    b: float


def add(operands: Operands) -> dict[str, float]:
    return {"value": operands.a + operands.b}


def subtract(operands: Operands) -> dict[str, float]:
    return {"value": operands.a - operands.b}


def multiply(operands: Operands) -> dict[str, float]:
    return {"value": operands.a * operands.b}


def divide(operands: Operands) -> dict[str, float]:
    if operands.b == 0:
        raise ZeroDivisionError(f"cannot divide {operands.a} by zero")
    return {"value": operands.a / operands.b}
