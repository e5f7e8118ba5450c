"""The .agent syntax tree: immutable, typed, every node with its span.

Equality ignores spans (like Jinja2's nodes), so two programs that differ only in
layout compare equal; this is what the parser tests and the mutation tests rely on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal as TypingLiteral

from twelvefold.runtime.spec import StepKind as StepKind

from .diagnostics import UNKNOWN_SPAN as UNKNOWN_SPAN
from .diagnostics import Span


def _span() -> Span:
    return field(default=UNKNOWN_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Name:
    """An identifier as written, with where it was written."""

    text: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Text:
    """A string literal, already unescaped."""

    value: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Number:
    """A number as written: an int when written without a decimal point."""

    value: int | float
    span: Span = _span()

    @property
    def is_whole(self) -> bool:
        return isinstance(self.value, int)


@dataclass(frozen=True, slots=True)
class Duration:
    seconds: float
    text: str
    span: Span = _span()


# ---- types -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NamedType:
    """A built-in scalar (`string int float bool`) or a declared type."""

    name: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class ListType:
    item: TypeExpr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class MapType:
    key: NamedType
    value: TypeExpr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class LiteralUnion:
    """`"a" | "b"`: an enum of string literals."""

    values: tuple[str, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class OptionalType:
    """`T?`: the value may be null, and defaults to null."""

    inner: TypeExpr
    span: Span = _span()


TypeExpr = NamedType | ListType | MapType | LiteralUnion | OptionalType


def named_types(expr: TypeExpr) -> Iterator[NamedType]:
    """Every type name a type expression refers to (`list[Tag]?` -> `Tag`), scalars included."""
    match expr:
        case NamedType():
            yield expr
        case ListType(item=item):
            yield from named_types(item)
        case MapType(key=key, value=value):
            yield from named_types(key)
            yield from named_types(value)
        case OptionalType(inner=inner):
            yield from named_types(inner)
        case LiteralUnion():
            pass


@dataclass(frozen=True, slots=True)
class FieldDecl:
    name: Name
    type: TypeExpr
    description: str | None = None
    span: Span = _span()
    secret: bool = False
    """`api_key: string secret`: never shown (runtime/redact.py), kept in the log."""


@dataclass(frozen=True, slots=True)
class TypeDecl:
    name: Name
    description: str | None
    fields: tuple[FieldDecl, ...]
    span: Span = _span()


# ---- guard expressions -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Path:
    """Field access on the incoming value: `env`, `commit.sha`."""

    parts: tuple[str, ...]
    span: Span = _span()

    def __str__(self) -> str:
        return ".".join(self.parts)


LiteralValue = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Literal:
    value: LiteralValue
    span: Span = _span()


Operand = Path | Literal
CompareOp = TypingLiteral["==", "!=", "<", "<=", ">", ">="]


@dataclass(frozen=True, slots=True)
class Compare:
    op: CompareOp
    left: Operand
    right: Operand
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Member:
    """`x in [..]` or, negated, `x not in [..]`."""

    value: Operand
    options: tuple[Literal, ...]
    negated: bool
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Truthy:
    """A bare operand used as a condition; only `bool` fields and literals are allowed."""

    value: Operand
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Expr, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Expr, ...]
    span: Span = _span()


Expr = Compare | Member | Truthy | Not | And | Or


# ---- transitions and settings ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Goto:
    """An edge to another state: `next decide`, `on error -> decide`, `on approved -> deploy`."""

    target: Name
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class OutputRule:
    """`on TYPE [if GUARD] -> STATE` in an llm step, or in a tool that routes its result."""

    type: Name
    guard: Expr | None
    target: Name
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Retry:
    attempts: Number
    backoff: Duration | None
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Validate:
    """`validate "module:function"`: the user's check of an llm step's output."""

    function: Text
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Judge:
    """`judge "prompt.j2"`: a second model call (the step's model) whose `Verdict`
    accepts or rejects an llm step's output."""

    prompt: Text
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class RequiresApproval:
    guard: Expr | None
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Ceiling:
    """`max_steps N [-> STATE]`, `max_errors N -> STATE`, or a budget:
    `max_cost USD [-> STATE]`, `max_tokens N [-> STATE]`."""

    limit: Number
    target: Name | None
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class RenderTemplate:
    """`render EVENT_KIND "template.j2"` in a context block."""

    event: Name
    template: Text
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class ContextDecl:
    format: Name | None = None
    keep_last: Number | None = None
    drop_resolved_errors: bool = False
    budget_tokens: Number | None = None
    renders: tuple[RenderTemplate, ...] = ()
    span: Span = _span()


# ---- declarations --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentDecl:
    name: Name
    description: str | None
    input: Name | None
    start: Name | None
    max_steps: Ceiling | None
    max_errors: Ceiling | None
    context: ContextDecl | None
    max_cost: Ceiling | None = None
    max_tokens: Ceiling | None = None
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class LlmStep:
    name: Name
    outputs: tuple[Name, ...]
    prompt: Text | None
    model: Text | None
    retries: Number | None
    temperature: Number | None
    rules: tuple[OutputRule, ...]
    on_error: Goto | None
    span: Span = _span()
    kind: TypingLiteral["llm"] = field(default="llm", init=False)
    validators: tuple[Validate, ...] = ()
    """Checks before dispatch, in the order written."""
    judge: Judge | None = None

    @property
    def input(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class ToolStep:
    name: Name
    input: Name | None
    outputs: tuple[Name, ...]
    """The result's type, or the members of a union (`-> Found | NotFound`)."""
    function: Text
    next: Goto | None
    on_error: Goto | None
    retry: Retry | None
    timeout: Duration | None
    requires_approval: RequiresApproval | None
    rules: tuple[OutputRule, ...] = ()
    """`on TYPE [if GUARD] -> STATE`: the result routed by its type, instead of `next`."""
    span: Span = _span()
    kind: TypingLiteral["tool"] = field(default="tool", init=False)

    @property
    def routes(self) -> bool:
        """Whether the result is routed by rules (`on TYPE -> STATE`) rather than `next`."""
        return bool(self.rules)


@dataclass(frozen=True, slots=True)
class ApprovalStep:
    name: Name
    input: Name | None
    ask: Text | None
    approvers: tuple[Text, ...]
    timeout: Duration | None
    on_approved: Goto | None
    on_rejected: Goto | None
    span: Span = _span()
    kind: TypingLiteral["approval"] = field(default="approval", init=False)


@dataclass(frozen=True, slots=True)
class HumanStep:
    name: Name
    input: Name | None
    ask: Text | None
    next: Goto | None
    timeout: Duration | None
    on_error: Goto | None
    span: Span = _span()
    kind: TypingLiteral["human"] = field(default="human", init=False)


@dataclass(frozen=True, slots=True)
class WaitTimeout:
    """`timeout D -> STATE` in a wait: where the thread goes when no event came within D."""

    duration: Duration
    target: Name
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class WaitStep:
    """`wait NAME(IN) for TYPE { next STATE  timeout D -> STATE }`: an outside event."""

    name: Name
    input: Name | None
    event: Name
    """The declared type of the event it waits for; the event's value goes on by `next`."""
    next: Goto | None
    timeout: WaitTimeout | None
    span: Span = _span()
    kind: TypingLiteral["wait"] = field(default="wait", init=False)


@dataclass(frozen=True, slots=True)
class SleepStep:
    """`sleep NAME(IN) DURATION next STATE`: a durable timer; the value it got goes on."""

    name: Name
    input: Name | None
    duration: Duration | None
    """None for `sleep NAME(IN) until FIELD`."""
    next: Goto | None
    span: Span = _span()
    kind: TypingLiteral["sleep"] = field(default="sleep", init=False)
    until: Name | None = None
    """`until FIELD`: a field of the input holding the time the sleep ends (ISO 8601)."""


@dataclass(frozen=True, slots=True)
class AgentStep:
    """`agent NAME(IN) -> OUT = "child.agent" { next STATE  on error -> STATE }`: another
    compiled agent runs as a child thread; its final value (of type OUT) goes on by `next`,
    its failure or cancellation by `on error`."""

    name: Name
    input: Name | None
    output: Name
    file: Text
    """The child's .agent file, relative to this file's folder."""
    next: Goto | None
    on_error: Goto | None
    span: Span = _span()
    kind: TypingLiteral["agent"] = field(default="agent", init=False)


@dataclass(frozen=True, slots=True)
class Import:
    """`import "common.agent"`: the type declarations of another file."""

    file: Text
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class FinalStep:
    name: Name
    input: Name | None
    span: Span = _span()
    kind: TypingLiteral["final"] = field(default="final", init=False)


Step = LlmStep | ToolStep | ApprovalStep | HumanStep | WaitStep | SleepStep | AgentStep | FinalStep
# The step kinds are the runtime's (StateSpec.kind); each step class above is one of them.


@dataclass(frozen=True, slots=True)
class TypeOrigin:
    """Where an imported type is declared: the file (as a path the user can follow from
    the importing file's own) and this file's `import` that leads to it."""

    name: str
    path: str
    via: Import


@dataclass(frozen=True, slots=True)
class SourceFile:
    """Everything declared in one .agent file, in source order."""

    path: str
    agents: tuple[AgentDecl, ...]
    types: tuple[TypeDecl, ...]
    steps: tuple[Step, ...]
    imports: tuple[Import, ...] = ()
    imported: frozenset[str] = frozenset()
    """Names of the types that came from `import`ed files (not declared here)."""
    origins: tuple[TypeOrigin, ...] = field(default=(), compare=False, repr=False)
    """Where each of the `imported` types is declared (its spans are in that file)."""

    def origin(self, name: str) -> TypeOrigin | None:
        """Where the imported type `name` is declared; None for a type declared here."""
        return next((o for o in self.origins if o.name == name), None)

    @property
    def agent(self) -> AgentDecl | None:
        return self.agents[0] if self.agents else None


BUILTIN_SCALARS = ("string", "int", "float", "bool")
"""Scalar type names; `Answer` is the one built-in record type (what a person replies)."""

ANSWER_TYPE = "Answer"
