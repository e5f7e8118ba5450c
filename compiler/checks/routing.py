"""E2xx: every llm output and routed tool result is routed, every rule can fire, and
guards are well typed. A tool routes its result by rules exactly as an llm step routes
its output (`on TYPE [if GUARD] -> STATE`), so both are judged by the same checks."""

from __future__ import annotations

from collections.abc import Iterator

from .. import nodes as n
from .. import types as t
from ..diagnostics import Diagnostic, did_you_mean, error, warning
from ..guards import GuardScope, type_guard
from ..program import Program
from .common import rules_that_never_fire, type_table, with_note


def exhaustive_routing(program: Program, _: object) -> Iterator[Diagnostic]:
    """Each output type has a rule, and a type whose rules are all guarded ends unguarded."""
    path = program.source.path
    for step in _routed_steps(program):
        if isinstance(step, n.ToolStep) and step.next is not None:
            continue  # `next` and rules at once: E210 says which to keep
        rules_by_type: dict[str, list[n.OutputRule]] = {}
        for rule in step.rules:
            rules_by_type.setdefault(rule.type.text, []).append(rule)
        listed: set[str] = set()
        for output in step.outputs:
            if output.text in listed:
                continue
            listed.add(output.text)
            rules = rules_by_type.get(output.text, [])
            if not rules:
                yield error(
                    "E201",
                    f"{step.kind} `{step.name.text}` can {_verb(step)} `{output.text}`, "
                    "but no rule routes it",
                    path,
                    output.span,
                    label="never routed",
                    help=f"add `on {output.text} -> STATE`, or remove `{output.text}` "
                    "from the outputs",
                )
            elif all(rule.guard is not None for rule in rules):
                last = rules[-1]
                yield error(
                    "E202",
                    f"when no guard on `{output.text}` holds, `{step.name.text}` has nowhere to go",
                    path,
                    last.span,
                    label="every rule for this type has a guard",
                    help=f"add a last rule without a guard: `on {output.text} -> STATE`",
                )


def rules_name_outputs(program: Program, _: object) -> Iterator[Diagnostic]:
    """A rule routes a type the step can produce."""
    path = program.source.path
    for step in _routed_steps(program):
        outputs = [o.text for o in step.outputs]
        for rule in step.rules:
            if rule.type.text in outputs:
                continue
            shown = " | ".join(outputs)
            yield error(
                "E203",
                f"{step.kind} `{step.name.text}` never {_verb(step, 's')} `{rule.type.text}`",
                path,
                rule.type.span,
                label=f"not one of {shown}",
                help=did_you_mean(rule.type.text, outputs)
                or f"add `{rule.type.text}` to the outputs (`-> {shown} | {rule.type.text}`) "
                "or remove this rule",
            )


def unreachable_rules(program: Program, _: object) -> Iterator[Diagnostic]:
    """A rule after an unguarded rule for the same type never fires; nor does a guarded
    rule whose guard cannot hold once the earlier rules' guards failed."""
    path = program.source.path
    dead = rules_that_never_fire(program)
    for step in _routed_steps(program):
        catch_all: dict[str, n.OutputRule] = {}
        for rule in step.rules:
            earlier = catch_all.get(rule.type.text)
            if earlier is None and rule.guard is not None and (step.name.text, rule.span) in dead:
                yield warning(
                    "W209",
                    f"this rule for `{rule.type.text}` never fires: no `{rule.type.text}` "
                    "passes its guard and fails every earlier guard for the type",
                    path,
                    rule.span,
                    label="its guard can never hold here",
                    help="fix the guard (e.g. `==` where `!=` was meant, `or` for `and`), "
                    "or remove the rule",
                )
            elif earlier is not None:
                yield with_note(
                    warning(
                        "W209",
                        f"this rule for `{rule.type.text}` never fires",
                        path,
                        rule.span,
                        label="unreachable",
                        help="rules are tried in order; move it above the rule without a guard, "
                        "or remove it",
                    ),
                    earlier.span,
                    f"every `{rule.type.text}` is routed here first",
                )
            elif rule.guard is None:
                catch_all[rule.type.text] = rule


def guard_types(program: Program, _: object) -> Iterator[Diagnostic]:
    """Guards read fields that exist and compare them with values of the same type."""
    table = type_table(program)
    path = program.source.path
    for step in program.source.steps:
        if isinstance(step, n.LlmStep | n.ToolStep):
            outputs = {o.text for o in step.outputs}
            for rule in step.rules:
                if rule.guard is None or rule.type.text not in outputs:
                    continue
                if rule.type.text not in program.types:
                    continue  # not a record: reported by the output checks
                scope = GuardScope(t.Record(rule.type.text), table, path, f"`{rule.type.text}`")
                yield from type_guard(rule.guard, scope)
        if isinstance(step, n.ToolStep) and step.requires_approval:
            guard = step.requires_approval.guard
            if guard is None:
                continue
            root = table.named(step.input.text) if step.input else None
            subject = f"tool `{step.name.text}`"
            yield from type_guard(guard, GuardScope(root, table, path, subject))


def next_or_rules(program: Program, _: object) -> Iterator[Diagnostic]:
    """E210: a tool's result goes on by `next` or by `on TYPE` rules, not both: with both,
    a reader could not tell which one a result takes."""
    for step in program.steps.values():
        if not isinstance(step, n.ToolStep) or step.next is None or not step.rules:
            continue
        first = step.rules[0]
        yield with_note(
            error(
                "E210",
                f"tool `{step.name.text}` has both `next` and `on` rules for its result",
                program.source.path,
                step.next.span,
                label="`next` and rules both route the result",
                help=f"replace `next {step.next.target.text}` with a last rule without a guard, "
                f"e.g. `on {first.type.text} -> {step.next.target.text}`",
            ),
            first.span,
            "the first rule",
        )


def _routed_steps(program: Program) -> Iterator[n.LlmStep | n.ToolStep]:
    """Steps whose result is routed by `on TYPE` rules: every llm step, and the tools
    written with rules (a tool with `next` sends every result the same way)."""
    # Only the first declaration of a name is checked; the duplicate is reported on its own.
    for step in program.steps.values():
        if isinstance(step, n.LlmStep) or (isinstance(step, n.ToolStep) and step.routes):
            yield step


def _verb(step: n.Step, ending: str = "") -> str:
    if isinstance(step, n.ToolStep):
        return "return" + ending
    return "answer" + ending
