"""W9xx: types and states that nothing uses."""

from __future__ import annotations

from collections.abc import Iterator

from .. import nodes as n
from ..diagnostics import Diagnostic, warning
from ..program import Program
from .common import declared_input, has_unresolved_target, start_state


def unused_types(program: Program, _: object) -> Iterator[Diagnostic]:
    used: set[str] = set()
    if program.agent.input:
        used.add(program.agent.input.text)
    for step in program.source.steps:
        if isinstance(step, n.LlmStep | n.ToolStep):
            used.update(o.text for o in step.outputs)
            used.update(rule.type.text for rule in step.rules)
        if isinstance(step, n.WaitStep):
            used.add(step.event.text)
        if isinstance(step, n.AgentStep):
            used.add(step.output.text)
        if (declared := declared_input(step)) is not None:
            used.add(declared.text)
    # Types used only inside used types are used too.
    pending = list(used)
    while pending:
        decl = program.types.get(pending.pop())
        for field_decl in decl.fields if decl else ():
            for name in _type_names(field_decl.type):
                if name not in used:
                    used.add(name)
                    pending.append(name)
    for type_decl in program.source.types:
        if type_decl.name.text not in used and type_decl.name.text not in program.source.imported:
            yield warning(
                "W901",
                f"type `{type_decl.name.text}` is never used",
                program.source.path,
                type_decl.name.span,
                label="unused",
                help="use it as a step's input or output, or remove it",
            )


def _type_names(expr: n.TypeExpr) -> Iterator[str]:
    match expr:
        case n.NamedType(name=name):
            yield name
        case n.ListType(item=inner) | n.OptionalType(inner=inner) | n.MapType(value=inner):
            yield from _type_names(inner)
        case n.LiteralUnion():
            pass


def unused_states(program: Program, _: object) -> Iterator[Diagnostic]:
    """A state no transition, `start` or escalation leads to."""
    if any(has_unresolved_target(program, state) for state in program.steps):
        return  # a misspelt transition may be the one meant to lead here
    targeted = {target for _, target in program.graph.edges()} | {start_state(program)}
    for name, step in program.steps.items():
        if name not in targeted:
            yield warning(
                "W902",
                f"no transition leads to `{name}`",
                program.source.path,
                step.name.span,
                label="unused",
                help=f"route a state to `{name}` (e.g. `next {name}`), or remove it",
            )
