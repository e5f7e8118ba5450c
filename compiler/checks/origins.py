"""E504: the model cannot decide its own approval (issue 12, "origins in guards").

Every value in a thread comes from somewhere: the model's output (untrusted: a customer's
email can talk a model into anything), a tool's result or a person's answer (trusted), or
the thread's input. A value passed on unchanged (`on approved`, `on error`, an
escalation) keeps its origin. `arriving_origins` follows that over the graph.

A guard is reported when all three hold:

1. it reads a value the model produced: an llm step's rule, or the `requires approval if`
   of a sensitive tool that a model's output can reach along an edge other than `on
   approved`;
2. the field it reads restates a fact a tool established earlier on some path: a field of
   the same name and kind (text, number, bool, a record of the same type) in the result
   type of a tool that can run before the guard is tried. The model copied `tier` from
   the lookup, and can misquote it;
3. its outcome decides whether a sensitive tool is reached without passing an `on
   approved` edge: one of the states the rule or the rules after it lead to reaches the
   tool directly (through tools and model calls, but not through an approval or a person,
   where someone looks again), another does not. A guard choosing between two approvals,
   or between an approval and a person, decides nothing about skipping one.

A guard on the action's own argument that the model chooses (deploybot's `env`: the
deploy goes where `env` says) restates no tool's fact, so it is the policy itself and is
never reported. The fix is to route on the tool's result (`tool lookup(...) -> Customer {
on Customer if tier == "enterprise" -> ... }`), where the value's origin is the tool.

An intended case is acknowledged in the file with a comment on the guard's line,
`# trusts model: tier` (field names, separated by commas): the diagnostic is then a note.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import networkx as nx

from twelvefold.runtime.spec import ESCALATION_KINDS

from .. import nodes as n
from .. import types as t
from ..diagnostics import Diagnostic, Span, error, note, source_lines
from ..guard_text import guard_text
from ..guards import paths_in
from ..program import Edge, Program
from .common import input_type, start_state, type_table
from .typeflow import flow

OriginKind = Literal["model", "tool", "person", "event", "agent", "input"]
TRUSTED: frozenset[OriginKind] = frozenset({"tool", "person", "event"})

ACKNOWLEDGEMENT = re.compile(
    r"#\s*trusts\s+model\s*:\s*([A-Za-z_][A-Za-z0-9_.]*(?:\s*,\s*[A-Za-z_][A-Za-z0-9_.]*)*)"
)
"""`# trusts model: tier, plan` on a guard's line: the author knows the model decides."""
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
"""A string literal as the grammar's STRING token reads it."""


@dataclass(frozen=True, order=True)
class Origin:
    """Where a value comes from: the kind of source and the step that produced it."""

    kind: OriginKind
    step: str
    """The llm step, tool or human step; the start state for the thread's input."""

    def describe(self) -> str:
        match self.kind:
            case "model":
                return f"the model's output at `{self.step}` (untrusted)"
            case "tool":
                return f"the result of tool `{self.step}` (trusted)"
            case "person":
                return f"a person's answer at `{self.step}` (trusted)"
            case "event":
                return f"the outside event delivered to wait `{self.step}` (trusted)"
            case "agent":
                return (
                    f"the final value of sub-agent `{self.step}` (untrusted: its model may make it)"
                )
        return "the thread's input"


Arrival = tuple[str, Origin]
"""A value that can arrive at a state: its type's name and its origin."""


def arriving_origins(program: Program) -> dict[str, frozenset[Arrival]]:
    """For each state, the (type, origin) pairs of the values that can arrive at it: a
    fixed point over the graph, like typeflow.arriving_types, with each value's origin."""
    start = start_state(program) or ""
    started = {(input_type(program), Origin("input", start))}
    return flow(program, started, lambda edge: _produced(program, edge))


def _produced(program: Program, edge: Edge) -> set[Arrival] | None:
    """The values an edge carries that its source made, or None when it passes on what
    arrived at the source (approvals, failures, escalations)."""
    step = program.steps[edge.source]
    if edge.kind == "output" and edge.type is not None:
        kind: OriginKind = "tool" if isinstance(step, n.ToolStep) else "model"
        return {(edge.type, Origin(kind, edge.source))}
    if edge.kind == "next" and isinstance(step, n.ToolStep):
        return {(o.text, Origin("tool", edge.source)) for o in step.outputs}
    if edge.kind == "next" and isinstance(step, n.HumanStep):
        return {(n.ANSWER_TYPE, Origin("person", edge.source))}
    if edge.kind == "next" and isinstance(step, n.WaitStep):
        # Delivered from outside, validated against its type, by someone allowed to send.
        return {(step.event.text, Origin("event", edge.source))}
    if edge.kind == "next" and isinstance(step, n.AgentStep):
        # The child's final value: whatever its own steps made of it, models included.
        return {(step.output.text, Origin("agent", edge.source))}
    return None


# ---- what decides an approval ------------------------------------------------------


@dataclass(frozen=True)
class DecidingValue:
    """A field a guard reads that decides whether sensitive tools' approvals are asked."""

    tools: tuple[str, ...]
    """The sensitive tools whose approval it decides."""
    guard: n.Expr
    where: str
    """`requires approval` or the rule, as people read it (`draft: on Reply if ...`)."""
    field: str
    origins: tuple[Origin, ...]
    restates: tuple[str, ...] = ()
    """Tools whose result has a field of this name and kind and can run before: the fact
    the model would be restating."""
    acknowledged: bool = False

    @property
    def untrusted(self) -> bool:
        return any(o.kind == "model" for o in self.origins)


def deciding_values(program: Program) -> list[DecidingValue]:
    """Per sensitive tool, every field a deciding guard reads, with where it comes from:
    the guards of its `requires approval if`, and the routing rules whose outcome decides
    whether it is reached without an approval. What `check --explain-approvals` lists."""
    table = type_table(program)
    arriving = arriving_origins(program)
    sensitive = [
        name
        for name, step in program.steps.items()
        if isinstance(step, n.ToolStep) and step.requires_approval is not None
    ]
    facts = _Facts(program, table)
    choices = [
        (state, edge, others)
        for state, step in program.steps.items()
        if isinstance(step, n.LlmStep | n.ToolStep)
        for edge, others in _rule_choices(program, state)
    ]
    found: list[DecidingValue] = []
    for tool in sensitive:
        step = program.steps[tool]
        assert isinstance(step, n.ToolStep) and step.requires_approval is not None
        guard = step.requires_approval.guard
        unapproved = _unapproved_arrivals(program, tool, arriving)
        if guard is not None and unapproved:
            found += _values(facts, (tool,), guard, "requires approval", unapproved, tool)
    backwards = _direct_predecessors(program)
    direct = {tool: _reaching_directly(backwards, tool) for tool in sensitive}
    for state, edge, others in choices:
        assert edge.guard is not None and edge.type is not None
        targets = [edge.target, *(other.target for other in others)]
        # Tools whose approval the guard's outcome decides: one way reaches them directly,
        # another does not.
        decided = tuple(
            tool for tool in sensitive if len({target in direct[tool] for target in targets}) == 2
        )
        if not decided:
            continue
        kind: OriginKind = "tool" if isinstance(program.steps[state], n.ToolStep) else "model"
        where = f"{state}: on {edge.type} if {guard_text(edge.guard)}"
        arrivals = frozenset({(edge.type, Origin(kind, state))})
        found += _values(facts, decided, edge.guard, where, arrivals, state)
    return found


def _unapproved_arrivals(
    program: Program, tool: str, arriving: dict[str, frozenset[Arrival]]
) -> frozenset[Arrival]:
    """The values that can enter `tool` other than through an `on approved` edge."""
    values: set[Arrival] = set()
    if start_state(program) == tool and program.agent.start is not None:
        values.add((input_type(program), Origin("input", tool)))
    for source, _target, data in program.graph.in_edges(tool, data=True):
        edge: Edge = data["edge"]
        if edge.kind == "approved":
            continue
        made = _produced(program, edge)
        values |= made if made is not None else set(arriving[source])
    return frozenset(values)


def _rule_choices(program: Program, state: str) -> Iterator[tuple[Edge, list[Edge]]]:
    """Each guarded rule of `state` with the rules for its type after it (where a value
    goes when the guard fails)."""
    by_type: dict[str, list[Edge]] = {}
    for edge in program.edges_from(state):
        if edge.kind == "output" and edge.type is not None:
            by_type.setdefault(edge.type, []).append(edge)
    for edges in by_type.values():
        for index, edge in enumerate(edges):
            if edge.guard is not None:
                yield edge, edges[index + 1 :]


def _direct_predecessors(program: Program) -> dict[str, list[str]]:
    """For each state, the states that lead to it with nobody looking: the edges out of
    tools and model calls, but not `on approved` nor the escalations (which lead to
    people), and nothing out of an approval or a human step."""
    backwards: dict[str, list[str]] = {state: [] for state in program.steps}
    for source, target, data in program.graph.edges(data=True):
        if data["edge"].kind == "approved" or data["edge"].kind in ESCALATION_KINDS:
            continue
        if isinstance(program.steps[source], n.ApprovalStep | n.HumanStep):
            continue
        backwards[target].append(source)
    return backwards


def _reaching_directly(backwards: dict[str, list[str]], tool: str) -> set[str]:
    """The states from which `tool` is reached without an approval or a person looking on
    the way (through tools and model calls only): one walk back from the tool, so a
    guard's outcome is judged by lookups."""
    found = {tool}
    pending = [tool]
    while pending:
        for source in backwards[pending.pop()]:
            if source not in found:
                found.add(source)
                pending.append(source)
    return found


def _values(
    facts: _Facts,
    tools: tuple[str, ...],
    guard: n.Expr,
    where: str,
    arrivals: frozenset[Arrival],
    at: str,
) -> list[DecidingValue]:
    """The fields `guard` reads, each with its origins and the tool facts it restates."""
    table = facts.table
    acknowledged = _acknowledged(facts.lines, guard.span)
    found: list[DecidingValue] = []
    for path in dict.fromkeys(paths_in(guard)):
        origins: set[Origin] = set()
        restates: set[str] = set()
        for type_name, origin in arrivals:
            lookup = table.lookup_path(table.named(type_name), path)
            if not lookup.ok:
                continue
            origins.add(origin)
            if origin.kind == "model":
                tool = facts.restated((path[-1], _kind(lookup.type)), at)
                restates |= {tool} if tool is not None else set()
        shown = ".".join(path)
        found.append(
            DecidingValue(
                tools,
                guard,
                where,
                shown,
                tuple(sorted(origins)),
                tuple(sorted(restates)),
                shown in acknowledged or path[-1] in acknowledged,
            )
        )
    return found


class _Facts:
    """What the tools establish: for a fact (field name, kind), the tool returning it
    (at any depth of its result type) that runs nearest before each state on some path.

    One forward walk per fact a guard asks about, from every tool that returns it (each
    reachable from the start), so the check stays linear in the graph per fact rather
    than walking back from every guard.
    """

    def __init__(self, program: Program, table: t.TypeTable) -> None:
        self.program = program
        self.table = table
        self.lines = source_lines(program.source_text)
        start = start_state(program)
        reachable: set[str] = set()
        if start is not None and start in program.graph:
            reachable = {start} | nx.descendants(program.graph, start)
        self._tools: dict[tuple[str, str], list[str]] = {}
        for state, step in program.steps.items():  # source order: the nearest tie wins
            if isinstance(step, n.ToolStep) and state in reachable:
                fields = {f for o in step.outputs for f in _fields_within(table, o.text)}
                for fact in fields:
                    self._tools.setdefault(fact, []).append(state)
        self._nearest: dict[tuple[str, str], dict[str, str]] = {}

    def restated(self, fact: tuple[str, str], at: str) -> str | None:
        """The tool returning `fact` that can run before `at`, or None."""
        nearest = self._nearest.get(fact)
        if nearest is None:
            nearest = self._nearest[fact] = self._walk(self._tools.get(fact, []))
        return nearest.get(at)

    def _walk(self, tools: list[str]) -> dict[str, str]:
        """Breadth first from the tools' successors: each state, the first tool to reach it."""
        nearest: dict[str, str] = {}
        queue: deque[tuple[str, str]] = deque()
        for tool in tools:
            queue.extend((target, tool) for target in self.program.graph.successors(tool))
        while queue:
            state, tool = queue.popleft()
            if state in nearest:
                continue
            nearest[state] = tool
            queue.extend((target, tool) for target in self.program.graph.successors(state))
        return nearest


def _fields_within(table: t.TypeTable, type_name: str) -> Iterator[tuple[str, str]]:
    """(name, kind) of every field of a record type and of the records inside it."""
    pending, seen = [type_name], {type_name}
    while pending:
        resolved = table.named(pending.pop())
        if not isinstance(resolved, t.Record):
            continue
        for name, field_type in table.fields(resolved).items():
            yield name, _kind(field_type)
            inner = t.strip_optional(field_type)
            if isinstance(inner, t.Record) and inner.name not in seen:
                seen.add(inner.name)
                pending.append(inner.name)


def _kind(resolved: t.Resolved) -> str:
    """What a field holds, as far as restating it goes: a literal union is text too (the
    model may copy `"enterprise"` from a `string` the tool returned)."""
    base = t.strip_optional(resolved)
    match base:
        case t.LiteralsOf():
            return "string"
        case t.Scalar(name=name):
            return name
        case t.Record(name=name):
            return f"record {name}"
        case t.ListOf():
            return "list"
        case t.MapOf():
            return "map"
    return "unknown"


def _acknowledged(lines: list[str], span: Span) -> set[str]:
    """Field names acknowledged by `# trusts model: ...` on the guard's lines."""
    names: set[str] = set()
    for line in lines[span.line - 1 : span.end_line]:
        # Only a comment acknowledges: a string that reads `# trusts model: x` does not.
        for match in ACKNOWLEDGEMENT.finditer(_STRING.sub('""', line)):
            names |= {name.strip() for name in match.group(1).split(",")}
    return names


# ---- the check ---------------------------------------------------------------------


def model_cannot_decide_its_approval(program: Program, _: object) -> Iterator[Diagnostic]:
    """E504 at each guard where the model's restating of a tool's fact decides whether a
    sensitive tool is reached without an approval; a note when acknowledged."""
    reported: set[tuple[Span, str]] = set()
    for value in deciding_values(program):
        if not value.untrusted or not value.restates:
            continue
        key = (value.guard.span, value.field)
        if key in reported:
            continue
        reported.add(key)
        yield _diagnostic(program, value)


def _diagnostic(program: Program, value: DecidingValue) -> Diagnostic:
    fact = ", ".join(f"`{s}`" for s in value.restates)
    field = value.field
    message = (
        f"the model's `{field}` decides whether {_names(value.tools)} needs approval, but "
        f"`{field}` restates what {fact} returned: a model that misquotes it skips the approval"
    )
    tool = value.restates[0]
    result = _result_with(program, tool, field.rsplit(".", 1)[-1])
    help = (
        f"route on the tool's result instead, where `{field}` is the tool's own: in `tool "
        f"{tool}`, replace `next` with `on {result} if {guard_text(value.guard)} -> "
        f"(the approval's way)` and `on {result} -> (the other way)`; if the model is meant "
        f"to decide, say so on this line: `# trusts model: {field}`"
    )
    label = f"`{field}` comes from the model"
    if value.acknowledged:
        return note(
            "E504",
            f"acknowledged (`# trusts model: {field}`): {message}",
            program.source.path,
            value.guard.span,
            label=label,
            help="the model decides this approval on purpose; a tool's result would not",
        )
    return error("E504", message, program.source.path, value.guard.span, label=label, help=help)


def _names(tools: tuple[str, ...]) -> str:
    """`send`, or `send` (and 3 more tools), for a message."""
    more = len(tools) - 1
    return f"`{tools[0]}`" + (f" (and {more} more tool{'s' if more > 1 else ''})" if more else "")


def _result_with(program: Program, tool: str, field: str) -> str:
    """The member of `tool`'s result type that has `field` (at any depth), for the help."""
    step = program.steps[tool]
    assert isinstance(step, n.ToolStep)
    table = type_table(program)
    for output in step.outputs:
        if any(name == field for name, _kind in _fields_within(table, output.text)):
            return output.text
    return step.outputs[0].text


def explain_approvals(program: Program) -> str:
    """Per sensitive tool, the values that decide its approval and where each comes from
    (`twelvefold check --explain-approvals`), so a reviewer sees which approvals a
    model's words can skip."""
    values = deciding_values(program)
    lines: list[str] = []
    for name, step in program.steps.items():
        if not isinstance(step, n.ToolStep) or step.requires_approval is None:
            continue
        requirement = step.requires_approval
        condition = (
            f"if {guard_text(requirement.guard)}" if requirement.guard is not None else "always"
        )
        lines.append(f"{program.source.path}: tool `{name}` requires approval {condition}")
        mine = [v for v in values if name in v.tools]
        if not mine:
            lines.append("  decided by no value: every way in passes an approval")
        for value in mine:
            lines.append(f"  `{value.field}` in {value.where}")
            for origin in value.origins:
                lines.append(f"    from {origin.describe()}")
            if value.untrusted and value.restates:
                verdict = "acknowledged" if value.acknowledged else "E504"
                tools = ", ".join(f"`{s}`" for s in value.restates)
                lines.append(f"    restates the result of {tools}: the model can skip the "
                             f"approval ({verdict})")  # fmt: skip
            elif value.untrusted:
                lines.append("    the model chooses it: the action's own argument")
    return "\n".join(lines)
