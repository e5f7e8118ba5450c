"""E2xx: every llm output is routed, every rule can fire, and guards are well typed."""

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
    for step in _llm_steps(program):
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
                    f"llm `{step.name.text}` can answer `{output.text}`, but no rule routes it",
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
    for step in _llm_steps(program):
        outputs = [o.text for o in step.outputs]
        for rule in step.rules:
            if rule.type.text in outputs:
                continue
            shown = " | ".join(outputs)
            yield error(
                "E203",
                f"llm `{step.name.text}` never answers `{rule.type.text}`",
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
    for step in _llm_steps(program):
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
        if isinstance(step, n.LlmStep):
            outputs = {o.text for o in step.outputs}
            for rule in step.rules:
                if rule.guard is None or rule.type.text not in outputs:
                    continue
                if rule.type.text not in program.types:
                    continue  # not a record: reported by the output checks
                scope = GuardScope(t.Record(rule.type.text), table, path, f"`{rule.type.text}`")
                yield from type_guard(rule.guard, scope)
        elif isinstance(step, n.ToolStep) and step.requires_approval:
            guard = step.requires_approval.guard
            if guard is None:
                continue
            root = table.named(step.input.text) if step.input else None
            subject = f"tool `{step.name.text}`"
            yield from type_guard(guard, GuardScope(root, table, path, subject))


def _llm_steps(program: Program) -> Iterator[n.LlmStep]:
    # Only the first declaration of a name is checked; the duplicate is reported on its own.
    for step in program.steps.values():
        if isinstance(step, n.LlmStep):
            yield step
