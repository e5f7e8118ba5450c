"""E7xx (and E403): templates exist, parse as Jinja2 and read only what they will be given.

- An llm `prompt` reads the variables the runtime provides to prompts (PROMPT_VARIABLES).
- A context `render` template reads the variables of one rendered event (RENDER_VARIABLES).
- An `ask` of an approval or human step reads the fields of its incoming value, nested
  paths included; a step without a declared input has nothing to read (E403).

A template's own names (`{% set %}`, loop variables) are always fine; jinja2's meta
analysis leaves them out (template_vars.py).

Templates render in Jinja2's sandbox (runtime/templates.py); an attribute it refuses on
any value (`__class__`, `_private`) is reported here (E704) rather than at run time,
unless a record answers the step with a field of that name declared in the file
(`x._id`, `x["__init__"]`: template_vars.py `first_refusals`), and so is a macro that
calls itself on every path (E708), which never finishes. A file a template loads
(`{% include %}`, `{% extends %}`, `{% import %}`) is checked like the template itself,
under the same prompts folder rule; its name must be a literal string so that it can be
(E705), and an `ask` string loads nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from twelvefold.runtime.context import (
    JUDGE_VARIABLES,
    PROMPT_VARIABLES,
    RENDER_VARIABLES,
    record_attribute,
)
from twelvefold.runtime.templates import confined_file, why_refused

from .. import nodes as n
from .. import types as t
from ..diagnostics import Diagnostic, Span, did_you_mean, error
from ..program import Program, PromptFile
from ..template_macros import EndlessMacro
from ..template_reads import TypedRead
from ..template_vars import Analysis, TemplateLoad, UnsafeStep, VariableUse, analyse, first_refusals
from .common import input_type, type_table
from .typeflow import arriving_types

Loader = Callable[[str], PromptFile | None]


def prompt_templates(program: Program, load_prompt: Loader) -> Iterator[Diagnostic]:
    fields = field_names(program)
    for step in program.steps.values():
        if isinstance(step, n.LlmStep) and step.prompt is not None:
            found = program.prompts.get(step.name.text) or load_prompt(step.prompt.value)
            given = _given(program, step, judged=False)
            yield from _template_file(
                program, step.prompt, found, load_prompt, PROMPT_VARIABLES, "prompt", fields, given
            )
        if isinstance(step, n.LlmStep) and step.judge is not None:
            found = load_prompt(step.judge.prompt.value)
            yield from _template_file(
                program,
                step.judge.prompt,
                found,
                load_prompt,
                JUDGE_VARIABLES,
                "judge prompt",
                fields,
                _given(program, step, judged=True),
            )


@dataclass(frozen=True, slots=True)
class Given:
    """The types of the values a prompt is given, by name: the fields it may read."""

    table: t.TypeTable
    types: Mapping[str, tuple[str, ...]]
    """Each name's possible types (`last` can be any of those that arrive at the step)."""
    about: Mapping[str, str]
    """What each name holds, as a diagnostic says it."""


def _given(program: Program, step: n.LlmStep, *, judged: bool) -> Given:
    """`input` is the thread's input, `last` the value the step was entered with (any
    of the types that can arrive at it: typeflow.py), a judge's `output` the output it
    judges (any of the step's output types): runtime/context.py `build_messages`."""
    table = type_table(program)
    name = step.name.text
    types = {
        "input": (input_type(program),),
        "last": tuple(sorted(arriving_types(program).get(name, ()))),
    }
    about = {
        "input": "the thread's input",
        "last": f"the value `{name}` is entered with",
    }
    if judged:
        types["output"] = tuple(dict.fromkeys(o.text for o in step.outputs))
        about["output"] = f"the output of `{name}` the judge reads"
    known = {root: tuple(k for k in names if table.known(k)) for root, names in types.items()}
    return Given(table, known, about)


def render_templates(program: Program, load_prompt: Loader) -> Iterator[Diagnostic]:
    context = program.agent.context
    fields = field_names(program)
    for render in context.renders if context else ():
        found = load_prompt(render.template.value)
        yield from _template_file(
            program,
            render.template,
            found,
            load_prompt,
            RENDER_VARIABLES,
            "render template",
            fields,
        )


def field_names(program: Program) -> frozenset[str]:
    """Every field name the file declares: a template may be given a record with any of
    them, which answers a step to its name however it is spelt (`x._id`)."""
    return frozenset(f.name.text for decl in program.types.values() for f in decl.fields)


def _template_file(
    program: Program,
    name: n.Text,
    found: PromptFile | None,
    load_prompt: Loader,
    allowed: tuple[str, ...],
    what: str,
    fields: frozenset[str],
    given: Given | None = None,
) -> Iterator[Diagnostic]:
    path = program.source.path
    root = getattr(load_prompt, "root", None)
    refused = why_refused(root, name.value) if found is None and isinstance(root, Path) else None
    if refused is not None:
        yield error(
            "E701",
            f'{what} "{name.value}" {refused}',
            path,
            name.span,
            label="not a file inside the prompts directory",
            help=f"put the template itself in the prompts directory{_root_text(load_prompt)} "
            "and name it from there: templates are loaded from that folder only (`..`, "
            "absolute paths and links that lead outside it are refused)",
        )
        return
    if found is None:
        nearby = _files_beside(load_prompt)
        yield error(
            "E701",
            f'{what} "{name.value}" does not exist',
            path,
            name.span,
            label="no such file under the prompts directory",
            help=did_you_mean(name.value, nearby).replace("`", '"')
            or f"create it under the prompts directory{_root_text(load_prompt)}, "
            "or pass `--prompts DIR`",
        )
        return
    yield from _template_tree(
        path, name.span, f'{what} "{name.value}"', found, load_prompt, allowed, what, fields, given
    )


def _template_tree(
    path: str,
    span: Span,
    shown: str,
    found: PromptFile,
    load_prompt: Loader,
    allowed: tuple[str, ...],
    what: str,
    fields: frozenset[str],
    given: Given | None,
) -> Iterator[Diagnostic]:
    """One template file and, once each, the files it loads: syntax, variables, safety,
    and no file that loads itself. Depth first, each file's problems before those of the
    files it loads, with a stack of its own (`loading`: the files on the way to the one
    walked, outermost first; one of them loaded again is a cycle, a file only `seen`
    before was checked there), so a chain of a thousand includes cannot exhaust Python's."""
    seen = {found.name}
    loading: list[str] = [found.name]
    loads: list[TemplateLoad] = []  # how each file after the first in `loading` was loaded
    walking = [_template_loads(path, span, shown, found, allowed, what, fields, given, loading)]
    while walking:
        step = next(walking[-1], None)
        if step is None:
            walking.pop()
            loading.pop()
            if loads:
                loads.pop()
        elif isinstance(step, Diagnostic):
            yield step
        else:
            load, shown_by = step
            assert load.name is not None
            if load.name in seen:
                continue
            loaded = load_prompt(load.name)
            if loaded is None:
                yield _missing_load(path, span, shown_by, load, load_prompt)
                continue
            seen.add(loaded.name)
            loading.append(loaded.name)
            loads.append(load)
            walking.append(
                _template_loads(
                    path,
                    span,
                    _loaded_by(shown, loads),
                    loaded,
                    allowed,
                    what,
                    fields,
                    given,
                    loading,
                )
            )


def _template_loads(
    path: str,
    span: Span,
    shown: str,
    found: PromptFile,
    allowed: tuple[str, ...],
    what: str,
    fields: frozenset[str],
    given: Given | None,
    loading: list[str],
) -> Iterator[Diagnostic | tuple[TemplateLoad, str]]:
    """One template file's own problems, and each load `_template_tree` is to follow
    (with how the file is shown), in the order they are written."""
    analysis = analyse(found.text)
    if analysis.problem is not None:
        yield _syntax_error(path, span, shown, analysis)
        return
    loaded = len(loading) > 1  # by another template, which may pass it optional names
    for use in analysis.uses:
        if use.path[0] in allowed or (loaded and use.path[0] in analysis.optional):
            continue
        yield error(
            "E703",
            f"{shown} line {use.line} uses `{use.path[0]}`, which it is not given",
            path,
            span,
            label=f"`{use.path[0]}` is undefined at line {use.line} of the template",
            help=did_you_mean(use.path[0], allowed)
            or (
                f"the template sets `{use.path[0]}`, but not on every path to line {use.line}: "
                "set it before, or on every branch of the `{% if %}` (with an `{% else %}`); "
                "a `{% set %}` inside a loop or a macro is not seen after it"
                if use.path[0] in analysis.assigned
                else None
            )
            or "a "
            + what
            + " can use "
            + ", ".join(f"`{v}`" for v in allowed)
            + (" (the incoming value is `last`)" if what == "prompt" else ""),
        )
    refused = first_refusals(analysis.steps, fields)
    yield from (_unsafe(path, span, shown, step, fields) for step in refused)
    if given is not None:
        yield from _given_fields(path, span, shown, found.text, analysis, given, refused)
    yield from (_endless(path, span, shown, macro) for macro in analysis.endless)
    for load in analysis.loads:
        if load.name is None:
            yield _dynamic_load(path, span, shown, load.kind, load.line)
        elif load.name in loading:
            yield _cycle(path, span, shown, load, tuple(loading[loading.index(load.name) :]))
        else:
            yield load, shown


def _given_fields(
    path: str,
    span: Span,
    shown: str,
    text: str,
    analysis: Analysis,
    given: Given,
    refused: tuple[UnsafeStep, ...],
) -> Iterator[Diagnostic]:
    """E709: each field a prompt reads of `input`, `last` or `output` is one their types
    have, on every type a name can hold (a prompt entered with several must read what
    all of them have, or test it first: template_reads.py)."""
    table = given.table
    for whole in analysis.reads:
        read = _fields_only(whole)
        root = str(read.path[0])
        if len(read.path) == 1 or not given.types.get(root):
            continue
        if any(_through(VariableUse(read.names, read.line), s.use) for s in refused):
            continue  # E704
        failing = [
            (name, found)
            for name in given.types[root]
            if not (found := table.lookup_path(table.named(name), read.path[1:], keys=True)).ok
        ]
        if not failing:
            continue
        found = failing[0][1]
        # `found` failed at a step after the root: one more in the whole path
        found = t.PathLookup(found.type, (found.failed_at or 0) + 1, found.parent, found.choices)
        if _inside_loop(read, found):
            continue
        yield _missing_field(path, span, shown, text, read, found, given, [n for n, _ in failing])


def _fields_only(read: TypedRead) -> TypedRead:
    """`read` up to its first step a prompt's record answers with an attribute of its
    own rather than a field (`last.items` is the dict's method: runtime/context.py
    `record_attribute`), which is not a field to look for; none of it when what a loop
    variable stands for has such a step (how it was written is not kept)."""
    written = len(read.path) - len(read.written)  # the steps a loop variable stands for
    if any(isinstance(s, str) and record_attribute(s) for s in read.path[1 : written + 1]):
        return replace(read, path=read.path[:1], written=read.written[:1])
    for index, token in enumerate(read.written[1:], start=1):
        if token.startswith(".") and record_attribute(token[1:]):
            return replace(read, path=read.path[: written + index], written=read.written[:index])
    return read


def _missing_field(
    path: str,
    span: Span,
    shown: str,
    text: str,
    read: TypedRead,
    found: t.PathLookup,
    given: Given,
    lacking: list[str],
) -> Diagnostic:
    assert found.failed_at is not None
    root = str(read.path[0])
    at = _written_at(read, found)
    written = "".join(read.written[: at + 1])
    missing = read.path[found.failed_at]
    owner = found.parent
    where = f"line {read.line}" + _column_text(text, read)
    several = len(given.types[root]) > 1
    if isinstance(owner, t.Record):
        problem = f"`{owner}` has no field `{missing}`"
        help = did_you_mean(str(missing), found.choices) or (
            f"the fields of `{owner}` are: "
            + (", ".join(f"`{c}`" for c in found.choices) or "none")
        )
    else:
        problem = f"`{''.join(read.written[:at])}` is a {owner} and has no field `{missing}`"
        help = f"a {owner} has no fields" + (
            ": give the agent an input type with fields, `agent NAME { input TYPE … }`"
            if root == "input" and found.failed_at == 1
            else ""
        )
    if several:
        of = " or ".join(f"`{k}`" for k in given.types[root])
        problem += f" (`{root}` is {given.about[root]}: a {of})"
        if len(lacking) < len(given.types[root]):  # some have it: not a misspelling
            help = (
                f"`{root}` can be any of {of}, and "
                + " and ".join(f"`{k}`" for k in lacking)
                + " has no such field: read what every one has, or test it first: "
                f"`{{% if {written} is defined %}}…{{% endif %}}`"
            )
    elif found.failed_at == 1:
        problem += f" (`{root}` is {given.about[root]})"
    return error(
        "E709",
        f"{shown} {where} reads `{written}`, but {problem}{_element_of(read)}",
        path,
        span,
        label=f"`{written}` does not exist at {where} of the template",
        help=help,
    )


def _column_text(text: str, read: TypedRead) -> str:
    """`, column N` where `read` is written on its line of the template, if it is found."""
    lines = text.splitlines()
    if not 1 <= read.line <= len(lines):
        return ""
    match = _written_pattern(read.written).search(lines[read.line - 1])
    return "" if match is None else f", column {match.start() + 1}"


def _missing_load(
    path: str, span: Span, shown: str, load: TemplateLoad, load_prompt: Loader
) -> Diagnostic:
    return error(
        "E701",
        f'{shown} line {load.line}: `{{% {load.kind} %}}` names "{load.name}", '
        "which is not a file inside the prompts directory",
        path,
        span,
        label=f"missing template at line {load.line} of the template",
        help="name a file relative to the prompts directory"
        f"{_root_text(load_prompt)}; `..`, absolute paths and links that lead "
        "outside it are refused",
    )


_PAST = {"include": "included", "extends": "extended", "import": "imported"}


def _unsafe(
    path: str, span: Span, shown: str, step: UnsafeStep, fields: frozenset[str]
) -> Diagnostic:
    use = step.use
    name, written = use.path[-1], step.written or ".".join(use.path)
    if name in fields:  # a declared field, read in a way that finds no record's field
        instead = (
            f"`{step.instead}`"
            if step.instead is not None
            else f'`value["{name}"]` (`{{0[{name}]}}` in a format string)'
        )
        why = (
            f"every record also has an attribute `{name}`, which the sandbox refuses (as "
            "every attribute that starts with `_`)"
            if record_attribute(name)
            else "`attr` reads attributes only, never a record's fields (and the sandbox "
            "refuses every attribute that starts with `_`)"
        )
        return error(
            "E704",
            f"{shown} line {use.line} reads `{name}` (in `{written}`) as an attribute, not as "
            f"the field `{name}`",
            path,
            span,
            label=f"an attribute, not the field, at line {use.line} of the template",
            help=f"{why}; a record answers a key with its field: read it as {instead}",
        )
    suggested = did_you_mean(name, fields)
    return error(
        "E704",
        f"{shown} line {use.line} reads `{name}` (in `{written}`), which templates may not read",
        path,
        span,
        label=f"refused by the template sandbox at line {use.line} of the template",
        help=(f"{suggested} " if suggested else "")
        + f"no declared field is named `{name}`: templates render in Jinja2's sandbox, where "
        "a name that starts with `_` is a Python internal, never data; read the value's "
        "fields instead",
    )


def _endless(path: str, span: Span, shown: str, macro: EndlessMacro) -> Diagnostic:
    chain = _chain(macro.cycle)
    first = macro.cycle[0]
    through = "itself" if len(macro.cycle) == 2 else f"itself through {chain}"
    return error(
        "E708",
        f"{shown} line {macro.line}: macro `{first}` calls {through} on every path, so it "
        "never finishes",
        path,
        span,
        label=f"a macro that always calls itself, at line {macro.line} of the template",
        help="call it again only under a condition that becomes false, e.g. "
        f"`{{% if node.children %}}…{{{{ {first}(child) }}}}…{{% endif %}}` or inside "
        f"`{{% for child in node.children %}}`",
    )


def _cycle(
    path: str, span: Span, shown: str, load: TemplateLoad, cycle: tuple[str, ...]
) -> Diagnostic:
    chain = _chain((*cycle, load.name or ""))
    return error(
        "E707",
        f'{shown} line {load.line}: `{{% {load.kind} %}}` loads "{load.name}" again, so '
        f"rendering never ends: {chain}",
        path,
        span,
        label=f"a template that loads itself: {chain}",
        help="a template may not load itself, directly or through others (Jinja2 would "
        "recurse until Python's stack runs out); to render nested data, use a recursive "
        "macro or `{% for … recursive %}` inside one template",
    )


CHAIN_ENDS = 3
"""Templates shown at each end of a long chain of loads (the ones between are counted)."""


def _loaded_by(shown: str, loads: list[TemplateLoad]) -> str:
    """How the last of `loads` is shown: `"c.j2" (included by "b.j2" (imported by
    {shown}))`, outermost last. A long chain keeps its ends and counts the templates
    between (spelled out, 1,500 nested includes made each line 40,000 characters)."""
    if len(loads) > 2 * CHAIN_ENDS:
        between = len(loads) - 2 * CHAIN_ENDS
        outer, inner = loads[:CHAIN_ENDS], loads[-CHAIN_ENDS:]
    else:
        between, outer, inner = 0, loads, []
    for load in outer:
        shown = f'"{load.name}" ({_PAST[load.kind]} by {shown})'
    if between:
        shown = f"… {between:,} templates between … {shown}"
    for load in inner:
        shown = f'"{load.name}" ({_PAST[load.kind]} by {shown})'
    return shown


def _chain(names: tuple[str, ...]) -> str:
    """`a → b → c`; a long chain as its ends and how many lie between (a cycle through
    1,500 templates spelled out made a line of 20,000 characters)."""
    if len(names) <= 2 * CHAIN_ENDS + 1:
        return " → ".join(names)
    between = len(names) - 2 * CHAIN_ENDS
    return " → ".join((*names[:CHAIN_ENDS], f"… {between:,} more …", *names[-CHAIN_ENDS:]))


def _dynamic_load(path: str, span: Span, shown: str, kind: str, line: int) -> Diagnostic:
    return error(
        "E705",
        f"{shown} line {line}: `{{% {kind} %}}` must name its template with a string literal",
        path,
        span,
        label=f"not checkable at line {line} of the template",
        help=f'write the file name as a literal, e.g. `{{% {kind} "shared/header.j2" %}}`, so '
        "that `check` can read it",
    )


def _syntax_error(path: str, span: Span, what: str, analysis: Analysis) -> Diagnostic:
    assert analysis.problem is not None
    return error(
        "E702",
        f"{what} is not a valid Jinja2 template: {analysis.problem.message} "
        f"(line {analysis.problem.line} of the template)",
        path,
        span,
        label=f"template error at its line {analysis.problem.line}",
        help=analysis.problem.help
        or "fix the template syntax; `{{ name }}` prints a value, "
        "`{% if %}...{% endif %}` and `{% for %}...{% endfor %}` must be closed",
    )


def _root_text(load_prompt: Loader) -> str:
    root = getattr(load_prompt, "root", None)
    return f" ({root})" if isinstance(root, Path) else ""


def _files_beside(load_prompt: Loader) -> list[str]:
    """Template names under the loader's folder, when it has one, for suggestions."""
    root = getattr(load_prompt, "root", None)
    if not isinstance(root, Path) or not root.is_dir():
        return []
    names = (p.relative_to(root).as_posix() for p in sorted(root.rglob("*")))
    return [name for name in names if confined_file(root, name) is not None][:500]


# ---- ask templates -------------------------------------------------------------


def ask_templates(program: Program, _: object) -> Iterator[Diagnostic]:
    table = type_table(program)
    fields = field_names(program)
    for step in program.steps.values():
        if isinstance(step, n.ApprovalStep | n.HumanStep) and step.ask is not None:
            yield from _ask(program, table, step, step.ask, fields)


def _ask(
    program: Program,
    table: t.TypeTable,
    step: n.ApprovalStep | n.HumanStep,
    ask: n.Text,
    fields: frozenset[str],
) -> Iterator[Diagnostic]:
    path = program.source.path
    analysis = analyse(ask.value)
    if analysis.problem is not None:
        yield _syntax_error(path, ask.span, "this `ask`", analysis)
        return
    refused = first_refusals(analysis.steps, fields)
    yield from (_unsafe(path, ask.span, "this `ask`", s, fields) for s in refused)
    yield from (_endless(path, ask.span, "this `ask`", macro) for macro in analysis.endless)
    for load in analysis.loads:
        yield error(
            "E705",
            f"this `ask` line {load.line}: `{{% {load.kind} %}}` cannot be used in an `ask`",
            path,
            ask.span,
            label="an `ask` loads no files",
            help="write the whole text in the `ask` string; prompt files may include others",
        )
    root = table.named(step.input.text) if step.input else None
    if root is None:
        for use in analysis.uses:
            yield error(
                "E403",
                f"`{'.'.join(use.path)}` is not defined: {step.kind} `{step.name.text}` "
                "takes no input",
                path,
                _span_in_string(
                    program.source_text, ask.span, (use.path[0], *(f".{p}" for p in use.path[1:]))
                ),
                label="nothing to read this from",
                help=f"declare the input it reads, e.g. `{step.kind} {step.name.text}(TYPE)`, "
                "or write the text without variables",
            )
        return
    for read in analysis.reads:
        if any(_through(VariableUse(read.names, read.line), s.use) for s in refused):
            continue  # E704 above
        found = table.lookup_path(root, read.path, keys=True)
        if found.ok or _inside_loop(read, found):
            continue
        assert found.failed_at is not None
        span = _span_in_string(program.source_text, ask.span, read.written)
        missing = read.path[found.failed_at]
        owner = found.parent
        written = "".join(read.written[: _written_at(read, found) + 1])
        if isinstance(owner, t.Record):
            choices = ", ".join(f"`{c}`" for c in found.choices) or "none"
            yield error(
                "E403",
                f"`{owner}` has no field `{missing}`{_element_of(read)}",
                path,
                span,
                label=f"`{written}` does not exist",
                help=did_you_mean(str(missing), found.choices)
                or f"the fields of `{owner}` are: {choices}",
            )
        else:
            owner_path = "".join(read.written[: _written_at(read, found)])
            shown = f"`{owner_path}`" if owner_path else "the input"
            yield error(
                "E403",
                f"{shown} is a {owner} and has no field `{missing}`{_element_of(read)}",
                path,
                span,
                label="not a field",
                help=_map_key_help(table, root, read, found)
                or f"{'an' if step.kind[0] in 'aeiou' else 'a'} {step.kind} step's `ask` "
                "reads the fields of its input type",
            )


def _inside_loop(read: TypedRead, found: t.PathLookup) -> bool:
    """Whether `found` failed inside what a loop variable stands for: the loop's own read
    of what it iterates reports that."""
    assert found.failed_at is not None
    return read.unwritten > 1 and found.failed_at < read.unwritten


def _written_at(read: TypedRead, found: t.PathLookup) -> int:
    """The written token of `read` at which `found` failed."""
    assert found.failed_at is not None
    return found.failed_at - read.unwritten + 1


def _element_of(read: TypedRead) -> str:
    """How a loop variable's read says what the variable is."""
    if read.unwritten == 1:
        return ""
    base = ".".join(str(step) for step in read.path[: read.unwritten - 1])
    what = "a value" if read.path[read.unwritten - 1] == t.VALUE else "an element"
    return f" (`{read.written[0]}` is {what} of `{base}`)"


def _map_key_help(
    table: t.TypeTable, root: t.Resolved, read: TypedRead, found: t.PathLookup
) -> str | None:
    """For a field read of a map's key (`{% for k in by %}{{ k.name }}`): how to loop over
    its values."""
    assert found.failed_at is not None
    at = found.failed_at
    if at < 2 or read.path[at - 1] != t.EACH:
        return None
    collection = table.lookup_path(root, read.path[: at - 1], keys=True)
    if not isinstance(t.strip_optional(collection.type), t.MapOf):
        return None
    return (
        f"`{read.written[0]}` is a key of a map (a string): loop over its values with "
        f"`{{% for key, value in {read.path[at - 2]}.items() %}}`"
    )


def _through(use: VariableUse, refused: VariableUse) -> bool:
    """Whether `use` reads its path through the step `refused` (reported as E704)."""
    return use.line == refused.line and use.path[: len(refused.path)] == refused.path


@lru_cache(maxsize=2)
def _lines(source_text: str) -> list[str]:
    """The file's lines, split once per file rather than once per variable of every `ask`
    (which made the check quadratic in the file's size)."""
    return source_text.splitlines()


def _span_in_string(source_text: str, string: Span, written: tuple[str, ...]) -> Span:
    """Where a read `written` so is inside a one-line string literal; the whole string
    otherwise."""
    lines = _lines(source_text)
    if string.line != string.end_line or not 1 <= string.line <= len(lines):
        return string
    line = lines[string.line - 1]
    match = _written_pattern(written).search(line, string.column - 1, string.end_column - 1)
    if match is None:
        return string
    return Span(string.line, match.start() + 1, string.line, match.end() + 1)


@lru_cache(maxsize=256)
def _written_pattern(written: tuple[str, ...]) -> re.Pattern[str]:
    """`a.b[0]["c"]` as written in a template, blanks allowed between steps, a key in
    either quotes, escaped or not (inside an `ask` string)."""
    parts = [re.escape(written[0])]
    for token in written[1:]:
        if token.startswith("."):
            parts.append(r"\.\s*" + re.escape(token[1:]))
        elif token.startswith('["'):
            parts.append(r"\[\s*\\?[\"']" + re.escape(token[2:-2]) + r"\\?[\"']\s*\]")
        else:
            index = r"\s*".join(map(re.escape, token[1:-1]))
            parts.append(rf"(?:\[\s*{index}\s*\]|\.\s*{index})")  # `items[0]`, `items.0`
    return re.compile(r"(?<![\w.])" + r"\s*".join(parts) + r"(?!\w)")
