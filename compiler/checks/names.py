"""E1xx: names resolve, nothing is declared twice, settings are present and in range."""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache

from twelvefold.runtime.config import special_module, stdlib_module
from twelvefold.runtime.context import INPUT_ENTRY, entry_name
from twelvefold.runtime.types import EVENT_KINDS

from .. import nodes as n
from .. import types as t
from ..diagnostics import Diagnostic, Span, did_you_mean, error, warning
from ..limits import MAX_TYPE_DEPTH
from ..parser import keywords_beside_names, parse
from ..program import Program
from .common import declared_input, gotos, in_its_file, start_state, type_table, with_note

FUNCTION_PATH = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*"
)
CONTEXT_FORMATS = ("xml", "yaml", "json")
BUILT_IN_TYPE_NAMES = (*n.BUILTIN_SCALARS, n.ANSWER_TYPE)

# Programs that use one name in every place a state (or a type) name can be written. The
# lexer is contextual, so a keyword can name a state or a type unless the parser also
# accepts the keyword where that name is written (`on error` beside `on TYPE`); which
# words those are is asked of the grammar itself, not listed by hand.
_STATE_PROBE = """agent a { input T start X max_steps 3 -> X max_errors 2 -> X }
type T { x: string }
llm X -> T { prompt "p" on T if x == "a" -> X_b on error -> X }
tool X_b(T) -> T = "m:f" { next X_c on error -> X }
approval X_c(T) { on approved -> X_d on rejected -> X }
human X_d(T) { next X on error -> X }
final X_e(T)
""".replace("X", "{name}")
_TYPE_PROBE = """agent a { input X start s }
type X { x: X? y: list[X] z: map[string, X] }
llm s -> X | X { prompt "p" on X if x.x == null -> s on error -> s }
tool t(X) -> X = "m:f" { next s }
approval v(X) { on approved -> s on rejected -> s }
final e(X)
""".replace("X", "{name}")


@cache
def reserved_words() -> dict[str, frozenset[str]]:
    """{"state": words no state may be called, "type": words no type may be called}."""

    def fails(probe: str, word: str) -> bool:
        return bool(parse(probe.replace("{name}", word))[1])

    # Only a keyword the parser accepts in some state where it also accepts a name can
    # collide with one; the others need no probe (this keeps the check cheap).
    candidates = keywords_beside_names()
    return {
        "state": frozenset(w for w in candidates if fails(_STATE_PROBE, w)),
        "type": frozenset(w for w in candidates if fails(_TYPE_PROBE, w)),
    }


# ---- declarations ----------------------------------------------------------------


def duplicate_declarations(program: Program, _: object) -> Iterator[Diagnostic]:
    """Agents, types, states, fields and llm outputs are each declared once."""
    path = program.source.path
    source = program.source
    if len(source.agents) > 1:
        first = source.agents[0]
        for agent in source.agents[1:]:
            yield with_note(
                error(
                    "E116",
                    f"a second agent `{agent.name.text}` in one file",
                    path,
                    agent.name.span,
                    label="second agent",
                    help="a file declares one agent; move this one to its own .agent file",
                ),
                first.name.span,
                f"agent `{first.name.text}` is declared here",
            )
    yield from _repeats(path, "type `{}`", [d.name for d in source.types])
    yield from _repeats(path, "state `{}`", [s.name for s in source.steps])
    for type_decl in source.types:
        what = "field `{}` of `" + type_decl.name.text + "`"
        for found in _repeats(path, what, [f.name for f in type_decl.fields], "E103"):
            yield in_its_file(program, type_decl.name.text, found)
    for step in source.steps:
        if isinstance(step, n.LlmStep | n.ToolStep):
            yield from _repeats(path, "output `{}` of `" + step.name.text + "`", step.outputs)


def _repeats(
    path: str, what: str, names: Sequence[n.Name], code: str = "E102"
) -> Iterator[Diagnostic]:
    first: dict[str, n.Name] = {}
    for name in names:
        if name.text not in first:
            first[name.text] = name
            continue
        yield with_note(
            error(
                code,
                f"the {what.format(name.text)} is declared twice",
                path,
                name.span,
                label="declared again here",
                help="rename or remove one of them; the first is at line "
                f"{first[name.text].span.line}",
            ),
            first[name.text].span,
            "first declared here",
        )


def reserved_names(program: Program, _: object) -> Iterator[Diagnostic]:
    """State and type names are not reserved words, and types do not reuse built-in type names."""
    path = program.source.path
    reserved = reserved_words()
    for name, what in [
        *((d.name, "type") for d in program.source.types),
        *((s.name, "state") for s in program.source.steps),
    ]:
        if name.text in reserved[what]:
            found = error(
                "E107",
                f"`{name.text}` is a keyword and cannot name a {what}",
                path,
                name.span,
                label="a keyword",
                help=f"choose another name, such as `{name.text}_{what}`",
            )
            yield in_its_file(program, name.text, found) if what == "type" else found
    for type_decl in program.source.types:
        name = type_decl.name
        if name.text in BUILT_IN_TYPE_NAMES:
            found = error(
                "E115",
                f"`{name.text}` is a built-in type and cannot be declared again",
                path,
                name.span,
                label="a built-in type",
                help=f"choose another name, such as `My{name.text[:1].upper()}{name.text[1:]}`",
            )
            yield in_its_file(program, name.text, found)


# ---- references ------------------------------------------------------------------


def unknown_states(program: Program, _: object) -> Iterator[Diagnostic]:
    """Every state a transition, `start` or a ceiling names is declared."""
    path = program.source.path
    agent = program.agent
    references: list[tuple[n.Name, str]] = []
    if agent.start:
        references.append((agent.start, "`start`"))
    for ceiling, what in (
        (agent.max_steps, "`max_steps`"),
        (agent.max_errors, "`max_errors`"),
        (agent.max_cost, "`max_cost`"),
        (agent.max_tokens, "`max_tokens`"),
    ):
        if ceiling and ceiling.target:
            references.append((ceiling.target, what))
    for step in program.source.steps:
        references.extend((target, f"`{step.name.text}`") for target in gotos(step))
    for name, where in references:
        if name.text not in program.steps:
            yield error(
                "E104",
                f"{where} goes to `{name.text}`, which is not a state",
                path,
                name.span,
                label="no such state",
                help=did_you_mean(name.text, program.steps)
                or f"declare a state named `{name.text}`, or go to one of: "
                + ", ".join(f"`{s}`" for s in program.steps),
            )


def missing_start(program: Program, _: object) -> Iterator[Diagnostic]:
    if program.agent.start is None:
        first = next(iter(program.steps), "FIRST_STEP")
        yield error(
            "E106",
            f"agent `{program.name}` does not say where a thread starts",
            program.source.path,
            program.agent.name.span,
            label="no `start`",
            help=f"add `start {first}` to the agent block",
        )


def unknown_types(program: Program, _: object) -> Iterator[Diagnostic]:
    """Every type a step, a field or the agent's input names is a built-in or declared type."""
    table = type_table(program)
    path = program.source.path
    references: list[tuple[n.Name, str | None]] = []  # (the name, the type it is in)
    if program.agent.input:
        references.append((program.agent.input, None))
    for step in program.source.steps:
        if isinstance(step, n.LlmStep | n.ToolStep):
            references.extend((output, None) for output in step.outputs)
        if isinstance(step, n.WaitStep):
            references.append((step.event, None))
        if isinstance(step, n.AgentStep):
            references.append((step.output, None))
        if (declared := declared_input(step)) is not None:
            references.append((declared, None))
    for type_decl in program.source.types:
        for field_decl in type_decl.fields:
            references.extend(
                (n.Name(t.name, t.span), type_decl.name.text)
                for t in n.named_types(field_decl.type)
            )
    for name, within in references:
        if not table.known(name.text):
            found = error(
                "E105",
                f"unknown type `{name.text}`",
                path,
                name.span,
                label="not a declared or built-in type",
                help=did_you_mean(name.text, table.names())
                or f"declare it: `type {name.text} {{ ... }}`, or use string, int, float or bool",
            )
            yield found if within is None else in_its_file(program, within, found)


def map_keys(program: Program, _: object) -> Iterator[Diagnostic]:
    for type_decl in program.source.types:
        for field_decl in type_decl.fields:
            for found in _map_keys(program.source.path, field_decl.type):
                yield in_its_file(program, type_decl.name.text, found)


def _map_keys(path: str, expr: n.TypeExpr) -> Iterator[Diagnostic]:
    match expr:
        case n.MapType(key=key, value=value):
            if key.name != "string":
                yield error(
                    "E117",
                    f"map keys must be strings, not `{key.name}`",
                    path,
                    key.span,
                    label="a map key type",
                    help=f"write `map[string, ...]`, or use `list[{key.name}]` of records",
                )
            yield from _map_keys(path, value)
        case n.ListType(item=inner) | n.OptionalType(inner=inner):
            yield from _map_keys(path, inner)


def types_nest_within_the_limit(program: Program, _: object) -> Iterator[Diagnostic]:
    """No declared type describes values more than MAX_TYPE_DEPTH levels deep (records,
    lists and maps each count one): deeper ones break pydantic, the JSON schema and the
    property tests. Reported once, naming its chain: at the deepest imported type that
    is too deep by itself, if any (at the `import` that leads to it, saying where the
    type is declared, as other problems of imported files are); else at this file's
    deepest type."""
    depth = _type_depths(program.types)
    source = program.source
    deep = [d for d in source.types if depth[d.name.text][0] > MAX_TYPE_DEPTH]
    if not deep:
        return
    imported = [d for d in deep if d.name.text in source.imported]
    deepest = max(imported or deep, key=lambda d: depth[d.name.text][0])
    name = deepest.name.text
    levels, _ = depth[name]
    message = (
        f"values of `{name}` nest {levels} levels deep, more than the {MAX_TYPE_DEPTH} "
        f"allowed: {_chain_text(name, depth)}"
    )
    origin = source.origin(name)
    if origin is not None:
        message += f" (`{name}` is declared at {origin.path}:{deepest.name.span})"
    yield error(
        "E123",
        message,
        source.path,
        deepest.name.span if origin is None else origin.via.file.span,
        label="nested too deep" if origin is None else f"imports `{name}`, nested too deep",
        help="flatten the chain"
        + ("" if origin is None else f" in {origin.path}")
        + ": move an inner type's fields into the type that holds it, "
        "or keep an inner value apart (an id, or a step of its own) instead of inside",
    )


def types_have_values(program: Program, _: object) -> Iterator[Diagnostic]:
    """Every declared type has a value that ends: a record whose required fields lead
    back to it (`type Inf { next: Inf }`, or `A { b: B }` with `B { a: A }`) has no
    finite value, so no model output, input or tool result could ever be one (every
    step producing it fails). A field that is optional, a list or a map may end there
    (null, empty); an unknown type is reported as such (E105) and counts as one that
    ends. Found by a fixed point over the types, without recursion."""
    types = program.types
    ending: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, decl in types.items():
            if name not in ending and all(
                _required_record(f.type, types) in (None, *ending) for f in decl.fields
            ):
                ending.add(name)
                changed = True
    for decl in program.source.types:
        name = decl.name.text
        if name in ending:
            continue
        field = next(
            f for f in decl.fields if _required_record(f.type, types) not in (None, *ending)
        )
        needed = _required_record(field.type, types)
        found = error(
            "E124",
            f"type `{name}` has no finite value: its field `{field.name.text}` needs a value "
            f"of `{needed}`, and no value of `{needed}` ends (each holds another)",
            program.source.path,
            field.span,
            label="required, and leads back",
            help=f"let the chain end: make the field optional (`{field.name.text}: "
            f"{needed}?`) or a list (`{field.name.text}: list[{needed}]`)",
        )
        yield in_its_file(program, name, found)


def _required_record(expr: n.TypeExpr, types: dict[str, n.TypeDecl]) -> str | None:
    """The declared type a field's value must hold one of (`next: Node`), or None when
    it may end there: optional, a list, a map, a scalar, an enum, an unknown type."""
    if isinstance(expr, n.NamedType) and expr.name in types:
        return expr.name
    return None


_Depth = tuple[int, tuple[str, str | None] | None]
"""A type's depth in levels, and its deepest field with the record type it leads to."""


def _type_depths(types: dict[str, n.TypeDecl]) -> dict[str, _Depth]:
    """Each type's depth (MAX_TYPE_DEPTH), without recursion: a file may chain thousands of
    types. A reference back to a type being measured (a recursive type) counts its list
    and map levels only: its schema refers to that type instead of holding it again."""
    depth: dict[str, _Depth] = {}
    active: set[str] = set()
    for root in types:
        stack = [root]
        while stack:
            name = stack[-1]
            if name in depth:
                stack.pop()
                continue
            leaves = [(f.name.text, *_levels(f.type)) for f in types[name].fields]
            pending = [r for _, _, r in leaves if r in types and r not in depth and r not in active]
            if pending and name not in active:
                active.add(name)
                stack.extend(pending)
                continue
            if pending:  # reached again while its leaves are measured: they lead back here
                stack.extend(pending)
                continue
            best: _Depth = (1, None)
            for field_name, levels, record in leaves:
                below = depth[record][0] if record in depth else 0
                if best[1] is None or 1 + levels + below > best[0]:
                    best = (1 + levels + below, (field_name, record))
            depth[name] = best
            active.discard(name)
            stack.pop()
    return depth


def _levels(expr: n.TypeExpr) -> tuple[int, str | None]:
    """The list and map levels around a field's type, and the record type inside, if any."""
    levels = 0
    while True:
        match expr:
            case n.ListType(item=inner) | n.MapType(value=inner):
                levels += 1
                expr = inner
            case n.OptionalType(inner=inner):
                expr = inner
            case n.NamedType(name=name):
                return levels, name
            case _:
                return levels, None


def _chain_text(root: str, depth: dict[str, _Depth]) -> str:
    """`T0.next -> T1.next -> ... -> T16`, the middle left out when it is long."""
    links, name, seen = [], root, set()
    while name is not None and name not in seen:
        seen.add(name)
        step = depth.get(name, (0, None))[1]
        if step is None or step[1] not in depth:
            links.append(name if step is None else f"{name}.{step[0]}")
            break
        links.append(f"{name}.{step[0]}")
        name = step[1]
    else:
        if name is not None:
            links.append(name)
    if len(links) > 8:
        links = [*links[:4], "…", *links[-3:]]
    return " -> ".join(links)


def llm_outputs_are_records(program: Program, _: object) -> Iterator[Diagnostic]:
    """A model answers with one of the declared record types, so its output can be routed;
    so does a tool whose result is a union or is routed by rules (the result's type is
    what picks the rule)."""
    for step in program.source.steps:
        if isinstance(step, n.ToolStep) and (len(step.outputs) > 1 or step.routes):
            verb = "route a result of type"
        elif isinstance(step, n.LlmStep):
            verb = "answer with"
        else:
            continue
        for output in step.outputs:
            if output.text in program.types:
                continue
            if output.text in t.SCALARS or output.text == n.ANSWER_TYPE:
                yield error(
                    "E113",
                    f"{step.kind} `{step.name.text}` cannot {verb} `{output.text}`",
                    program.source.path,
                    output.span,
                    label="not a declared type",
                    help=f"declare a record for it, e.g. `type Reply {{ text: {output.text} }}` "
                    "and list `Reply` instead"
                    if output.text in t.SCALARS
                    else "declare your own record type with the fields you need",
                )


def waits_are_for_records(program: Program, _: object) -> Iterator[Diagnostic]:
    """A wait waits for an event of a declared record type: what `send` validates the
    event's JSON against and what the event's `next` state receives."""
    for step in program.source.steps:
        if not isinstance(step, n.WaitStep):
            continue
        event = step.event
        if event.text in t.SCALARS or event.text == n.ANSWER_TYPE:
            yield error(
                "E119",
                f"wait `{step.name.text}` cannot wait for `{event.text}`",
                program.source.path,
                event.span,
                label="not a declared record type",
                help=f"declare the event, e.g. `type {step.name.text.title().replace('_', '')}"
                f"Event {{ value: {event.text if event.text in t.SCALARS else 'string'} }}`"
                " and wait for it",
            )


def sleeps_until_a_time(program: Program, _: object) -> Iterator[Diagnostic]:
    """`sleep NAME(IN) until FIELD` reads the time from a `string` field of its declared
    input type (ISO 8601 text): without a declared input, the value could be anything."""
    for step in program.source.steps:
        if not isinstance(step, n.SleepStep) or step.until is None:
            continue
        field = step.until
        if step.input is None:
            yield error(
                "E135",
                f"sleep `{step.name.text}` sleeps until `{field.text}` of a value of no type",
                program.source.path,
                field.span,
                label="needs a declared input",
                help=f"declare what arrives: `sleep {step.name.text}(TYPE) until {field.text}`",
            )
            continue
        decl = program.types.get(step.input.text)
        if decl is None:
            continue  # an unknown type: reported where it is named
        found = next((f for f in decl.fields if f.name.text == field.text), None)
        kind = found.type if found is not None else None
        if isinstance(kind, n.OptionalType):
            kind = kind.inner
        if not (isinstance(kind, n.NamedType) and kind.name == "string"):
            problem = "has no such field" if found is None else "is not a `string`"
            yield error(
                "E135",
                f"sleep `{step.name.text}`: `{step.input.text}.{field.text}` {problem}",
                program.source.path,
                field.span,
                label="not a time",
                help=f"name a `string` field of `{step.input.text}` holding an ISO 8601 time, "
                'e.g. `retry_at: string "when to try again, ISO 8601"`',
            )


def timers_take_time(program: Program, _: object) -> Iterator[Diagnostic]:
    """A sleep's duration and every timeout are longer than zero: a timer of no length
    would fire at the first `expire` (an approval nobody could ever give, a wait that
    never waits) or fail every tool call, and is surely a typo."""
    for step in program.source.steps:
        match step:
            case n.SleepStep(duration=n.Duration() as duration):
                what = f"sleep `{step.name.text}`"
            case n.WaitStep(timeout=n.WaitTimeout(duration=duration)):
                what = f"the timeout of wait `{step.name.text}`"
            case n.ToolStep(timeout=n.Duration() as duration):
                what = f"the timeout of tool `{step.name.text}`"
            case n.ApprovalStep(timeout=n.Duration() as duration):
                what = f"the timeout of approval `{step.name.text}`"
            case n.HumanStep(timeout=n.Duration() as duration):
                what = f"the timeout of human `{step.name.text}`"
            case _:
                continue
        if duration.seconds <= 0:
            yield error(
                "E120",
                f"{what} lasts no time",
                program.source.path,
                duration.span,
                label=f"`{duration.text}` is zero",
                help="give a duration longer than zero, e.g. `10m`, `2h` or `3d`",
            )


@dataclass(frozen=True, slots=True)
class FunctionReference:
    """A `module:function` the runtime imports: a tool's function or a step's validator."""

    what: str
    """How a message names its owner: "tool `lookup`", "validator of llm `decide`"."""
    path: n.Text
    example: str
    """A path of the user's own that would do, for help lines."""


def function_references(program: Program) -> Iterator[FunctionReference]:
    """Every `module:function` in the file: tools' functions, then `validate` checks."""
    for step in program.source.steps:
        if isinstance(step, n.ToolStep):
            example = f"tools.{program.name}:{step.name.text}"
            yield FunctionReference(f"tool `{step.name.text}`", step.function, example)
        elif isinstance(step, n.LlmStep):
            for check in step.validators:
                example = f"checks.{program.name}:{step.name.text}_is_sane"
                what = f"validator of llm `{step.name.text}`"
                yield FunctionReference(what, check.function, example)


def function_paths(program: Program, _: object) -> Iterator[Diagnostic]:
    """`"package.module:function"`: a dotted module path, a colon, a function name (a
    tool's function and a `validate` check alike)."""
    for reference in function_references(program):
        if not FUNCTION_PATH.fullmatch(reference.path.value):
            yield error(
                "E108",
                f'"{reference.path.value}" is not a `module:function` path',
                program.source.path,
                reference.path.span,
                label='expected "package.module:function"',
                help=f'write the module and the function name, e.g. "{reference.example}"',
            )


def stdlib_tools(program: Program, _: object) -> Iterator[Diagnostic]:
    """A tool (or a validator) is the user's own function, never a standard-library one
    such as `"sys:exit"`, `"os:abort"` or `"code:interact"` (issue 9 §2), unless the
    project's configuration allows that module by name (`[tool.twelvefold.tools]
    allow_stdlib`). Decided by the module's name alone, as the runtime decides it: `check`
    never imports a tool."""
    for reference in function_references(program):
        if not FUNCTION_PATH.fullmatch(reference.path.value):
            continue
        special = special_module(reference.path.value)
        if special is not None:
            yield error(
                "E118",
                f"{reference.what} names `{special[0]}`, {special[1]}",
                program.source.path,
                reference.path.span,
                label="not your own function",
                help=f'point it at a function of your own, e.g. "{reference.example}"',
            )
            continue
        module = stdlib_module(reference.path.value)
        if module is None:
            continue
        if module in program.allow_stdlib:
            continue
        yield error(
            "E118",
            f"{reference.what} names the standard-library module `{module}`",
            program.source.path,
            reference.path.span,
            label="not your own function",
            help=f'point it at a function of your own, e.g. "{reference.example}", or allow '
            f'the module in twelvefold.toml: `[tools] allow_stdlib = ["{module}"]`',
        )


def module_file_names(program: Program, _: object) -> Iterator[Diagnostic]:
    """The agent's name is its module's file name (`twelvefold compile` writes NAME.py): a
    Python keyword makes a file no import can load (`class.py`), and a name Python, pytest
    or packaging tools treat specially makes a file with side effects (`__init__.py` makes
    its folder a package, `conftest.py` runs under pytest, `setup.py` is a build script)."""
    agent = program.source.agent
    if agent is None:
        return
    name = agent.name.text
    if keyword.iskeyword(name):
        why = f"which no import can load (`{name}` is a Python keyword)"
    elif (special := special_module(name)) is not None:
        why = special[1]
    else:
        return
    yield error(
        "E122",
        f"agent `{name}` would compile to `{name}.py`, {why}",
        program.source.path,
        agent.name.span,
        label="the module's file name",
        help=f"rename the agent, e.g. `{name.strip('_') or 'my'}_agent`",
    )


def checks_have_retries(program: Program, _: object) -> Iterator[Diagnostic]:
    """An llm step with checks before dispatch (`validate`, `judge`) and no `retries`:
    the first refusal fails the step, the model never sees why. A warning: failing at
    once (and letting `on error` decide) may be meant."""
    for step in program.source.steps:
        if not isinstance(step, n.LlmStep) or not (step.validators or step.judge):
            continue
        if step.retries is not None and step.retries.value != 0:
            continue
        first = step.validators[0].span if step.validators else _judge_span(step)
        yield warning(
            "W119",
            f"llm `{step.name.text}` checks its output but has no retries",
            program.source.path,
            first,
            label="a refusal fails the step at once",
            help="add `retries 2` to its block, so a refused output goes back to the model "
            "with the reason (each refusal uses one retry)",
        )


def _judge_span(step: n.LlmStep) -> Span:
    return step.judge.span if step.judge is not None else step.span


# ---- settings ------------------------------------------------------------------


def number_settings(program: Program, _: object) -> Iterator[Diagnostic]:
    """Counts are whole numbers: ceilings and budgets positive, retries zero or more."""
    path = program.source.path
    agent = program.agent
    positive: list[tuple[n.Number | None, str]] = [
        (agent.max_steps.limit if agent.max_steps else None, "max_steps"),
        (agent.max_errors.limit if agent.max_errors else None, "max_errors"),
        (agent.max_tokens.limit if agent.max_tokens else None, "max_tokens"),
    ]
    if agent.context:
        positive.append((agent.context.keep_last, "keep last"))
        positive.append((agent.context.budget_tokens, "budget"))
    at_least_zero: list[tuple[n.Number | None, str]] = []
    for step in program.source.steps:
        if isinstance(step, n.LlmStep):
            at_least_zero.append((step.retries, "retries"))
            yield from _temperature(path, step.temperature)
        if isinstance(step, n.ToolStep) and step.retry:
            at_least_zero.append((step.retry.attempts, "retry"))
    for number, what in positive:
        yield from _whole(path, number, what, minimum=1)
    for number, what in at_least_zero:
        yield from _whole(path, number, what, minimum=0)


def _whole(path: str, number: n.Number | None, what: str, minimum: int) -> Iterable[Diagnostic]:
    if number is None or (number.is_whole and number.value >= minimum):
        return []
    kind = "a positive whole number" if minimum == 1 else "a whole number, 0 or more"
    return [
        error(
            "E109",
            f"`{what}` must be {kind}, not {number.value}",
            path,
            number.span,
            label=f"expected {kind}",
            help=f"write e.g. `{what} {max(minimum, round(abs(number.value)) or minimum)}`",
        )
    ]


def _temperature(path: str, number: n.Number | None) -> Iterable[Diagnostic]:
    if number is None or 0 <= number.value <= 2:
        return []
    return [
        error(
            "E110",
            f"temperature {number.value} is outside 0..2",
            path,
            number.span,
            label="out of range",
            help="use a temperature from 0 (most deterministic) to 2, e.g. `temperature 0.2`",
        )
    ]


def context_settings(program: Program, _: object) -> Iterator[Diagnostic]:
    """`format` is xml, yaml or json; `render` names a step or an event kind."""
    context = program.agent.context
    if context is None:
        return
    path = program.source.path
    if context.format and context.format.text not in CONTEXT_FORMATS:
        yield error(
            "E111",
            f"unknown context format `{context.format.text}`",
            path,
            context.format.span,
            label="not a format",
            help=did_you_mean(context.format.text, CONTEXT_FORMATS)
            or "use one of `xml`, `yaml`, `json`",
        )
    renderable = [*_entry_names(program), *program.steps, *EVENT_KINDS]
    for render in context.renders:
        if render.event.text not in renderable:
            yield error(
                "E112",
                f"`render {render.event.text}`: no step or event kind is called "
                f"`{render.event.text}`",
                path,
                render.event.span,
                label="nothing renders under this name",
                help=did_you_mean(render.event.text, renderable)
                or "name an entry (`list_tags_result`), a step (its events) or an event kind: "
                + ", ".join(EVENT_KINDS),
            )


_ENTRY_KINDS = {
    "llm": ("step_failed",),
    "tool": ("tool_result", "step_failed"),
    "approval": ("approved", "rejected", "step_failed"),
    "human": ("answered", "step_failed"),
    "wait": ("signalled",),
    "sleep": (),
    "agent": ("child_ended", "step_failed"),
    "final": (),
}
"""The events each kind of step adds to the log that the context shows."""


def _entry_names(program: Program) -> list[str]:
    """Every element name the context can show (`list_tags_result`, `Deploy`, `user_input`)."""
    names = {INPUT_ENTRY: None}
    for step in program.steps.values():
        if isinstance(step, n.LlmStep):
            names.update(dict.fromkeys(o.text for o in step.outputs))
        names.update(dict.fromkeys(entry_name(k, step.name.text) for k in _ENTRY_KINDS[step.kind]))
        if isinstance(step, n.LlmStep) and (step.validators or step.judge is not None):
            names[entry_name("output_rejected", step.name.text)] = None
    return list(names)


def required_settings(program: Program, _: object) -> Iterator[Diagnostic]:
    """The settings without which a step cannot run: a prompt, a successor, both approval edges."""
    path = program.source.path
    for step in program.source.steps:
        for setting, example in _missing(step, program):
            yield error(
                "E114",
                f"{step.kind} `{step.name.text}` has no `{setting}`",
                path,
                step.name.span,
                label=f"needs `{setting}`",
                help=f"add `{example}` to its block",
            )


def _missing(step: n.Step, program: Program) -> Iterator[tuple[str, str]]:
    some_state = start_state(program) or "STATE"
    match step:
        case n.LlmStep():
            if step.prompt is None:
                yield "prompt", f'prompt "{program.name}/{step.name.text}.j2"'
        case n.ToolStep():
            if step.next is None and not step.rules:
                yield "next", f"next {some_state}"
        case n.HumanStep() | n.WaitStep() | n.AgentStep():
            if step.next is None:
                yield "next", f"next {some_state}"
        case n.SleepStep():
            pass  # the grammar requires its `next`
        case n.ApprovalStep():
            if step.on_approved is None:
                yield "on approved", "on approved -> NEXT_STATE"
            if step.on_rejected is None:
                yield "on rejected", f"on rejected -> {some_state}"
        case n.FinalStep():
            pass
