"""The static checks, one small function each, and the registry that runs them all.

A check takes the program (and the prompt loader, for the ones that read templates)
and returns its diagnostics. Add a check by writing the function in the module of
its family and listing it in CHECKS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..diagnostics import Diagnostic
from ..program import Program, PromptFile

PromptLoader = Callable[[str], PromptFile | None]
Check = Callable[[Program, PromptLoader], Iterable[Diagnostic]]

CHECKS: list[Check] = []


def run_checks(program: Program, load_prompt: PromptLoader) -> list[Diagnostic]:
    found: list[Diagnostic] = []
    for check in CHECKS:
        found.extend(check(program, load_prompt))
    return found
