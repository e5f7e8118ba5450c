"""Small helpers the check families share."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from .. import nodes as n
from .. import types as t
from ..diagnostics import Diagnostic, Label, Span
from ..program import Program


def with_note(diagnostic: Diagnostic, span: Span, message: str) -> Diagnostic:
    """The diagnostic with a secondary label ("first declared here")."""
    return dataclasses.replace(diagnostic, notes=(*diagnostic.notes, Label(span, message)))


def type_table(program: Program) -> t.TypeTable:
    return t.TypeTable(program.types)


def start_state(program: Program) -> str | None:
    """Where a thread starts: `start`, else (as codegen does) the first state, if there is one."""
    if program.agent.start is not None:
        return program.agent.start.text
    return next(iter(program.steps), None)


def input_type(program: Program) -> str:
    """The type of the value a thread is launched with (`input TYPE`, default `string`)."""
    return program.agent.input.text if program.agent.input else "string"


def declared_input(step: n.Step) -> n.Name | None:
    """The `(IN)` of a step; llm steps never declare one."""
    return None if isinstance(step, n.LlmStep) else step.input


def gotos(step: n.Step) -> Iterator[n.Name]:
    """Every state name a step refers to, in source order."""
    match step:
        case n.LlmStep(rules=rules, on_error=on_error):
            for rule in rules:
                yield rule.target
            if on_error:
                yield on_error.target
        case n.ToolStep() | n.HumanStep():
            for goto in (step.next, step.on_error):
                if goto:
                    yield goto.target
        case n.ApprovalStep(on_approved=approved, on_rejected=rejected):
            for goto in (approved, rejected):
                if goto:
                    yield goto.target
        case n.FinalStep():
            pass


def has_unresolved_target(program: Program, state: str) -> bool:
    """Some transition out of `state` names a state that does not exist (reported elsewhere)."""
    step = program.steps[state]
    return any(target.text not in program.steps for target in gotos(step))


def misses_successor(step: n.Step) -> bool:
    """The step lacks the transition it must have (reported by the required-settings check)."""
    match step:
        case n.ToolStep() | n.HumanStep():
            return step.next is None
        case n.ApprovalStep():
            return step.on_approved is None or step.on_rejected is None
        case n.LlmStep():
            return not step.rules
    return False
