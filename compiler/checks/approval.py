"""E5xx: a tool that requires approval is entered only after a person approved.

For a tool marked `requires approval [if GUARD]`, every edge into it other than an
approval's `on approved` is a way around the person, unless GUARD cannot hold for the
value that edge carries. An llm rule carries its own guard and the negation of the
earlier guards for the same type (`Edge.excluded`), so

    on DeployBackend if env == "production" -> approve_deploy
    on DeployBackend -> deploy

leaves only "staging" on the second edge, and `requires approval if env == "production"`
cannot hold there. `guards.can_hold` decides it: exactly over literal unions and bools,
conservatively (it can hold) over anything else.

Two more holes are closed here (issue 8, "approval semantics without holes"):

- E502: a guard that a missing value makes false, e.g. `requires approval if amount >
  1000` with `amount: float?` — a null amount (the model left it out) skips the person.
  `guards.null_skips` finds every such optional field; the fix says what null means.
- E503: an approval in front of a sensitive tool that does not take the tool's input:
  its `ask` cannot show the values the person is approving.
"""

from __future__ import annotations

from collections.abc import Iterator

from .. import nodes as n
from .. import types as t
from ..diagnostics import Diagnostic, Span, error, warning
from ..guard_text import guard_text
from ..guards import can_hold, null_skips
from ..program import Edge, Program
from .common import input_type, start_state, type_table, with_note
from .typeflow import arriving_types, carried_types


def approval_dominates(program: Program, _: object) -> Iterator[Diagnostic]:
    table = type_table(program)
    arriving = arriving_types(program)
    path = program.source.path
    for name, step in program.steps.items():
        if not isinstance(step, n.ToolStep) or step.requires_approval is None:
            continue
        requirement = step.requires_approval
        condition = [requirement.guard] if requirement.guard is not None else []
        if program.agent.start and start_state(program) == name:
            root = table.named(input_type(program))
            if can_hold(condition, [], root, table):
                yield _bypass(
                    path, name, program.agent.start.span, requirement, "the thread's input"
                )
        seen: set[Span] = set()
        for _source, _target, data in program.graph.in_edges(name, data=True):
            edge: Edge = data["edge"]
            if edge.kind == "approved" or edge.span in seen:
                continue
            if _can_bypass(program, edge, condition, arriving, table):
                seen.add(edge.span)
                yield _bypass(path, name, edge.span, requirement, _what(edge))


def _can_bypass(
    program: Program,
    edge: Edge,
    condition: list[n.Expr],
    arriving: dict[str, frozenset[str]],
    table: t.TypeTable,
) -> bool:
    if edge.kind == "output" and edge.type is not None:
        holds = [*condition, *([edge.guard] if edge.guard is not None else [])]
        return can_hold(holds, edge.excluded, table.named(edge.type), table)
    carried = carried_types(program, edge, arriving[edge.source])
    roots: list[t.Resolved] = [table.named(name) for name in sorted(carried)] or [t.UNKNOWN]
    return any(can_hold(condition, [], root, table) for root in roots)


def _what(edge: Edge) -> str:
    return {
        "output": f"this `{edge.type}` rule",
        "next": "this `next`",
        "error": "this `on error`",
        "rejected": "this `on rejected`",
        "max_errors": "the `max_errors` escalation",
        "max_steps": "the `max_steps` escalation",
        "max_cost": "the `max_cost` escalation",
        "max_tokens": "the `max_tokens` escalation",
    }.get(edge.kind, "this edge")


def _bypass(
    path: str, tool: str, span: Span, requirement: n.RequiresApproval, what: str
) -> Diagnostic:
    when = " when its condition holds" if requirement.guard is not None else ""
    return with_note(
        error(
            "E501",
            f"{what} enters `{tool}` without an approval, but `{tool}` requires one{when}",
            path,
            span,
            label="bypasses the approval",
            help=f"route these values through an approval step whose `on approved` goes to "
            f"`{tool}`, e.g. `approval approve_{tool}(...) {{ on approved -> {tool} "
            f"on rejected -> ... }}`",
        ),
        requirement.span,
        "approval required here",
    )


def null_cannot_skip(program: Program, _: object) -> Iterator[Diagnostic]:
    """E502: `requires approval if GUARD` holds when a field GUARD reads is missing."""
    table = type_table(program)
    for name, step in program.steps.items():
        if not isinstance(step, n.ToolStep) or step.requires_approval is None:
            continue
        guard = step.requires_approval.guard
        if guard is None or step.input is None:
            continue
        for field in null_skips(guard, table.named(step.input.text), table):
            yield error(
                "E502",
                f"a missing `{field}` skips the approval of `{name}`: the condition is false "
                f"when `{field}` is null",
                program.source.path,
                guard.span,
                label=f"false when `{field}` is null",
                help=f"ask for approval when it is missing: `requires approval if {field} == "
                f"null or {guard_text(guard)}` (or write `{field} != null and ...` if a "
                "missing value needs no approval)",
            )


def approval_shows_the_input(program: Program, _: object) -> Iterator[Diagnostic]:
    """E503: the approval in front of a sensitive tool takes (and can show) its input."""
    path = program.source.path
    for name, step in program.steps.items():
        if not isinstance(step, n.ToolStep) or step.requires_approval is None:
            continue
        if step.input is None:
            continue  # the tool takes nothing: there is no value to show
        for source, _target, data in program.graph.in_edges(name, data=True):
            edge: Edge = data["edge"]
            approval = program.steps.get(source)
            if edge.kind != "approved" or not isinstance(approval, n.ApprovalStep):
                continue
            if approval.input is not None:
                continue  # a different type is E401's business
            tool_input = step.input.text
            yield with_note(
                error(
                    "E503",
                    f"approval `{source}` takes no input, so the person approving `{name}` "
                    f"never sees the `{tool_input}` it runs with",
                    path,
                    approval.name.span,
                    label="shows nothing of the value",
                    help=f"declare the tool's input and show it: `approval {source}"
                    f'({tool_input}) {{ ask "... {{{{ FIELD }}}} ..." ... }}`',
                ),
                step.requires_approval.span,
                "approval required here",
            )


def approvers_are_defined(program: Program, _: object) -> Iterator[Diagnostic]:
    """W510: an `approvers` group the project's configuration does not define.

    Only when the project has a configuration (`Program.approver_groups`): the runtime
    cannot enforce such a group, so anyone's decision is accepted, with a warning.
    """
    defined = program.approver_groups
    if defined is None:
        return
    for step in program.steps.values():
        if not isinstance(step, n.ApprovalStep):
            continue
        for group in step.approvers:
            if group.value in defined:
                continue
            known = ", ".join(sorted(defined)) or "no groups"
            yield warning(
                "W510",
                f"approvers group `{group.value}` is not defined in {program.config_name}",
                program.source.path,
                group.span,
                label=f"{program.config_name} defines {known}",
                help=f'add `{group.value} = ["name", ...]` under [approvers] in '
                f"{program.config_name} ([tool.twelvefold.approvers] in pyproject.toml); "
                "until then the runtime cannot check who decides for it",
            )
