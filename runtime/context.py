"""The context window: a thread's event log rendered into the messages an `llm` step sends.

Two things happen here, both visible to the user:

1. The event log becomes `context`, one entry per event, in the format the agent's
   `context { }` block chooses (compact XML-like by default), after its compaction rules
   (drop resolved errors, keep the last N events, a token budget). Values are escaped for
   the format, so no tool result or user input can forge an event boundary.
2. The step's prompt file (Jinja2's sandbox, StrictUndefined: templates.py) renders the
   messages. A file that defines `{% block system %}` and/or `{% block user %}` sends those
   blocks as a system and a user message; a file without blocks is the user message. Each
   message is stripped of surrounding whitespace. Nothing else is added: the runtime writes
   no prompt text.

Escaping is the same for every variable a prompt prints: `{{ context }}` and an entry's
`{{ e.text }}` are already rendered for the format; anything else (`{{ input }}`,
`{{ last.tag }}`, `{{ e.value }}`) is printed as the context would print it, escaped for
the format (`for_prompt`), so a value can never forge an entry or an element. `| safe`
prints a value as it is, for a template that wants that explicitly.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.runtime
from markupsafe import Markup
from pydantic import BaseModel

from .names import declared_name
from .redact import has_secrets, shown_value
from .spec import AgentSpec
from .templates import PromptsLoader, bounded_text, sandboxed
from .types import (
    KIND_OF_EVENT,
    Answered,
    Approved,
    CallModel,
    Event,
    ModelOutput,
    OutputRejected,
    Rejected,
    Signalled,
    Started,
    StepFailed,
    ToolResult,
)

PROMPT_VARIABLES = ("context", "events", "input", "last", "agent", "step")
"""What an llm step's prompt template is given (the compiler checks templates against it)."""
JUDGE_VARIABLES = (*PROMPT_VARIABLES, "output")
"""What a `judge` prompt is given: a prompt's variables and the `output` it judges."""
RENDER_VARIABLES = ("event", "kind", "step", "name", "value", "agent")
"""What a context `render` template is given for the one event it renders."""

MESSAGE_BLOCKS = ("system", "user")
"""Jinja2 blocks that a prompt file may define, in the order the messages are sent."""

CHARS_PER_TOKEN = 4
"""The token budget's estimate: about four characters of English per token."""


# ---- events as the context sees them ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContextEvent:
    """One event of the log as a prompt template sees it (`events`, and per-event templates).

    `name` is the element name in the rendered context (`user_input`, `list_tags_result`,
    `deploy_error`, `DeployBackend`, `approve_deploy_rejected`, `ask_user_answer`) and
    `value` its content as plain data (strings, numbers, lists, dicts).
    """

    kind: str
    step: str
    name: str
    value: Any
    text: str = ""
    """The entry as rendered into `context`."""


INPUT_ENTRY = "user_input"
"""The element name of the thread's input."""
ENTRY_SUFFIXES = {
    "tool_result": "result",
    "step_failed": "error",
    "output_rejected": "rejected_output",
    "approved": "approved",
    "rejected": "rejected",
    "answered": "answer",
    "signalled": "event",
}
"""Event kind -> the suffix of its entry's element name after the step (`deploy_error`);
a model output's element is its type's declared name instead."""


def entry_name(kind: str, step: str) -> str:
    """`list_tags_result`: the element name of a step's event of `kind` (ENTRY_SUFFIXES)."""
    return f"{step}_{ENTRY_SUFFIXES[kind]}"


def context_event(event: Event) -> ContextEvent | None:
    """The context's view of an event; None for bookkeeping the model need not see."""
    kind = KIND_OF_EVENT.get(type(event), type(event).__name__)
    if isinstance(event, Started):
        return ContextEvent(kind, event.step, INPUT_ENTRY, plain(event.input))
    if isinstance(event, ModelOutput):
        name = declared_name(type(event.output))
        return ContextEvent(kind, event.step, name, plain(event.output))
    if isinstance(event, ToolResult):
        return ContextEvent(kind, event.step, entry_name(kind, event.step), plain(event.result))
    if isinstance(event, StepFailed):
        return ContextEvent(kind, event.step, entry_name(kind, event.step), str(event.error))
    if isinstance(event, OutputRejected):
        # Like a validation error: what was refused, by which check, and why.
        refused = {declared_name(type(event.output)): plain(event.output)}
        value = {"by": event.by, "reason": event.reason, "output": refused}
        return ContextEvent(kind, event.step, entry_name(kind, event.step), value)
    if isinstance(event, Approved | Rejected):
        verdict = "approved" if isinstance(event, Approved) else "rejected"
        fields = {"by": event.by, "comment": event.comment}
        value = {k: v for k, v in fields.items() if v is not None}
        return ContextEvent(kind, event.step, entry_name(verdict, event.step), value)
    if isinstance(event, Answered):
        answer = event.answer
        answered: Any = answer.text if answer.by is None else {"text": answer.text, "by": answer.by}
        return ContextEvent(kind, event.step, entry_name(kind, event.step), answered)
    if isinstance(event, Signalled):
        # The event's value, as validated; its idempotency key is the sender's bookkeeping.
        return ContextEvent(kind, event.step, entry_name(kind, event.step), plain(event.value))
    return None  # ToolStarted, Notified, Retried, TimerFired: how the runtime works


def plain(value: Any) -> Any:
    """JSON-like data for a value: models become dicts without their null fields, their
    secret fields redacted (runtime/redact.py: the context never shows a secret)."""
    if isinstance(value, ShownRecord):
        value = value.shown
    if isinstance(value, BaseModel):
        # Under its .agent names (`from`), never its Python ones; secrets redacted.
        data = shown_value(value)
        return {k: plain(v) for k, v in data.items() if v is not None}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


class ShownRecord(dict[str, Any]):
    """A record holding secret fields, as a prompt template reads it: naming a field
    (`{{ input.api_key }}`) gives its value, printing the record whole (`{{ input }}`,
    `| tojson`) shows `shown`, its secrets redacted (runtime/redact.py)."""

    __slots__ = ("shown",)

    def __init__(self, values: dict[str, Any], shown: Any) -> None:
        super().__init__(values)
        self.shown = shown


def template_value(value: Any) -> Any:
    """A value as templates read it: plain data under the .agent's field names (`from`,
    never `from_`), null fields kept so that `{{ last.note }}` of a null note is not an
    undefined name. A record with secret fields is a `ShownRecord`."""
    if isinstance(value, BaseModel):
        if not has_secrets(value):
            return value.model_dump(mode="json", by_alias=True)
        fields = {
            info.alias or name: template_value(getattr(value, name))
            for name, info in type(value).model_fields.items()
        }
        return ShownRecord(fields, shown_value(value))
    if isinstance(value, list | tuple):
        return [template_value(v) for v in value]
    return value


def _redacted_json(value: Any, **options: Any) -> str:
    """`| tojson` in a prompt: a record printed whole keeps its secrets hidden."""

    def shown(item: Any) -> Any:
        if isinstance(item, ShownRecord):
            return item.shown
        if isinstance(item, dict):
            return {k: shown(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [shown(v) for v in item]
        return item

    return json.dumps(shown(value), **options)


# ---- compaction --------------------------------------------------------------------------


def drop_resolved_errors(events: Sequence[ContextEvent]) -> list[ContextEvent]:
    """Errors of a step that later succeeded (a result or an output of the same step)."""
    succeeded_after: set[str] = set()
    kept: list[ContextEvent] = []
    for event in reversed(events):
        if event.kind in ("tool_result", "model_output"):
            succeeded_after.add(event.step)
        resolved = event.kind in ("step_failed", "output_rejected")
        if resolved and event.step in succeeded_after:
            continue
        kept.append(event)
    kept.reverse()
    return kept


def keep_last(events: Sequence[ContextEvent], n: int) -> list[ContextEvent]:
    """The last `n` events, and the thread's input before them however old it is."""
    head = [e for e in events[:1] if e.kind == "started"]
    rest = list(events[len(head) :])
    return head + (rest[-n:] if n > 0 else [])


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def within_budget(events: Sequence[ContextEvent], budget: int) -> list[ContextEvent]:
    """Drop the oldest events (never the input) until the entries fit in `budget` tokens.

    The newest entry is never dropped whole: when it alone does not fit beside the input,
    it is cut to what fits and marked (`TRUNCATED`), so the model still sees that it
    happened and how it began.
    """
    head = [e for e in events[:1] if e.kind == "started"]
    rest = list(events[len(head) :])
    total = sum(estimate_tokens(e.text) for e in [*head, *rest])
    while rest and total > budget:
        if len(rest) == 1:
            room = budget - sum(estimate_tokens(e.text) for e in head)
            rest[0] = truncated(rest[0], room * CHARS_PER_TOKEN)
            break
        total -= estimate_tokens(rest.pop(0).text)
    return head + rest


TRUNCATED = "… [truncated: {shown} of {total} characters]"
"""The marker a cut entry ends with (before its closing tag, in xml)."""


def truncated(view: ContextEvent, chars: int) -> ContextEvent:
    """`view` with its rendered entry cut to about `chars` characters, marked."""
    text = str(view.text)
    closing = f"</{view.name}>"
    body, end = (text[: -len(closing)], closing) if text.endswith(closing) else (text, "")
    marker_room = len(TRUNCATED) + 2 * len(str(len(body))) + len(end)
    shown = max(0, min(len(body), chars - marker_room))
    marker = TRUNCATED.format(shown=shown, total=len(body))
    return _with_text(view, body[:shown] + marker + end)


# ---- formats -----------------------------------------------------------------------------


def xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_PLAIN_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ._-/@+=~'()!?$%*:#"
)
_LOOKS_LIKE_OTHER = frozenset({"true", "false", "null", ""})


def compact(value: Any, *, top: bool = False) -> str:
    """A value in the compact form `tags: [v1.2.3, v1.2.2]`. Strings inside a structure are
    quoted (JSON) when they hold anything that could be read as structure: newlines,
    brackets, commas, `: `. A string that is a whole element's content is left as it is."""
    if isinstance(value, dict):
        items = [f"{compact_key(k)}: {compact(v)}" for k, v in value.items()]
        return "\n".join(items) if top else "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(compact(v) for v in value) + "]"
    if isinstance(value, str):
        if top:  # the whole content of an element: its boundary is the format's to protect
            return value
        return value if _is_plain_string(value) else json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False)


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def compact_key(key: str) -> str:
    """A map key as the compact form writes it: bare when it is a simple word, else quoted
    (JSON), so a key with a newline or `: ` cannot start a line or an item of its own."""
    return key if _PLAIN_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _is_plain_string(text: str) -> bool:
    if text.strip() != text or text.lower() in _LOOKS_LIKE_OTHER or _is_number(text):
        return False
    if ": " in text or text.endswith(":"):  # would read as a key (a URL's colon is fine)
        return False
    return all(c in _PLAIN_SAFE or ord(c) > 127 for c in text)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def render_xml(event: ContextEvent) -> str:
    body = xml_escape(compact(event.value, top=True))
    if not body:
        return f"<{event.name}/>"
    if "\n" in body:
        return f"<{event.name}>\n{body}\n</{event.name}>"
    return f"<{event.name}>{body}</{event.name}>"


def render_yaml(event: ContextEvent) -> str:
    """A YAML list item; strings with newlines are quoted, so no value starts a new item."""
    value = event.value
    if isinstance(value, dict) and value:
        lines = [f"  {compact_key(k)}: {compact(v)}" for k, v in value.items()]
        return f"- {event.name}:\n" + "\n".join(lines)
    if isinstance(value, dict):
        return f"- {event.name}: {{}}"
    return f"- {event.name}: {compact(value)}"


def render_json(event: ContextEvent) -> str:
    return json.dumps({event.name: event.value}, ensure_ascii=False)


FORMATS: dict[str, Callable[[ContextEvent], str]] = {
    "xml": render_xml,
    "yaml": render_yaml,
    "json": render_json,
}


# ---- the context and the messages ------------------------------------------------------


def context_events(
    agent: AgentSpec, events: Sequence[Event], prompts_dir: Path
) -> list[ContextEvent]:
    """The events the context shows, each with its rendered entry, after compaction."""
    options = agent.context
    views = [v for v in map(context_event, events) if v is not None]
    if options.drop_resolved_errors:
        views = drop_resolved_errors(views)
    if options.keep_last is not None:
        views = keep_last(views, options.keep_last)
    render = _entry_renderer(agent, prompts_dir)
    views = [_with_text(v, render(v)) for v in views]
    if options.budget_tokens is not None:
        views = within_budget(views, options.budget_tokens)
    return views


def render_context(views: Sequence[ContextEvent]) -> Markup:
    """The entries joined, marked as rendered: a prompt prints it without escaping again."""
    return Markup("\n".join(v.text for v in views))


def for_prompt(format: str, value: Any) -> Any:
    """What `{{ value }}` prints in a prompt of a context in `format` (Jinja2's `finalize`).

    Rendered text (`context`, an entry's `text`, `| safe`) as it is; an event view as its
    entry; anything else as the context shows values (models as their fields under their
    .agent names, never a Python repr), escaped for the format: `<`, `>` and `&` in xml,
    quoted (JSON) when it could read as structure in yaml and json.
    """
    if isinstance(value, Markup | jinja2.Undefined):
        return value  # an undefined name raises when printed, as StrictUndefined does
    if isinstance(value, ContextEvent):
        return str(value.text)
    if isinstance(value, AgentView):
        value = value.name
    data = plain(value)
    if format == "xml":
        return xml_escape(compact(data, top=True))
    return compact(data)


def build_messages(
    agent: AgentSpec,
    action: CallModel,
    events: Sequence[Event],
    prompts_dir: Path,
    *,
    extra: Mapping[str, Any] | None = None,
) -> list[dict[str, str]]:
    """The messages for `action` (an `llm` step) given the thread's events so far.
    `extra`: more prompt variables (a judge's prompt reads `output`: runtime/checks.py)."""
    views = context_events(agent, events, prompts_dir)
    context = render_context(views)
    if action.prompt is None:
        return [{"role": "user", "content": context}]
    started = next((e for e in events if isinstance(e, Started)), None)
    variables = {
        "context": context,
        "events": views,
        "input": template_value(started.input if started is not None else None),
        "last": template_value(action.value),
        "agent": AgentView(agent.name, agent.description),
        "step": action.step,
        **(extra or {}),
    }
    template = _prompt_environment(str(prompts_dir), agent.context.format).get_template(
        action.prompt
    )
    return render_messages(template, variables)


def render_messages(template: jinja2.Template, variables: dict[str, Any]) -> list[dict[str, str]]:
    """The system/user convention: named blocks become messages, else the whole file is one."""
    blocks = [name for name in MESSAGE_BLOCKS if name in template.blocks]
    if not blocks:
        return [{"role": "user", "content": bounded_text(template.generate(variables)).strip()}]
    context = template.new_context(variables)
    _run_top_level(template, context)
    messages = []
    for name in blocks:
        content = bounded_text(template.blocks[name](context)).strip()
        messages.append({"role": name, "content": content})
    return messages


def _run_top_level(template: jinja2.Template, context: jinja2.runtime.Context) -> None:
    """The file's top level, run once before its message blocks render (each block
    rendering nothing in it, its text discarded): what it imports and sets (`{% import
    "m.j2" as m %}` in a child template) is what the blocks read, as when Jinja2 renders
    the file whole; and a parent's blocks are known to `super()`."""
    own = context.blocks
    context.blocks = {name: [_renders_nothing] for name in own}
    bounded_text(template.root_render_func(context))
    found = context.blocks  # the parents', added by `{% extends %}` after our own
    context.blocks = {
        name: own[name] + chain[1:] if name in own else chain for name, chain in found.items()
    }


def _renders_nothing(context: jinja2.runtime.Context) -> Iterator[str]:
    return iter(())


@dataclass(frozen=True, slots=True)
class AgentView:
    """`agent` in a prompt: `{{ agent }}` is its name, `{{ agent.description }}` its text."""

    name: str
    description: str | None

    def __str__(self) -> str:
        return self.name


@functools.lru_cache(maxsize=32)
def _prompt_environment(prompts_dir: str, format: str) -> jinja2.Environment:
    environment = sandboxed(
        PromptsLoader(Path(prompts_dir)), finalize=functools.partial(for_prompt, format)
    )
    environment.policies["json.dumps_function"] = _redacted_json
    return environment


@functools.lru_cache(maxsize=32)
def _entry_environment(prompts_dir: str) -> jinja2.Environment:
    # Per-event templates are written in the context's markup, so their values are
    # escaped like the built-in entries are: a hostile value stays a value.
    return sandboxed(PromptsLoader(Path(prompts_dir)), autoescape=True)


def _entry_renderer(agent: AgentSpec, prompts_dir: Path) -> Callable[[ContextEvent], str]:
    """The format's renderer, overridden per event by `render NAME "template.j2"`.

    NAME matches an entry's element name (`list_tags_result`), else its step (`list_tags`),
    else its event kind (`tool_result`, `step_failed`, `approved`...).
    """
    options = agent.context
    default = FORMATS[options.format]
    if not options.renders:
        return default
    environment = _entry_environment(str(prompts_dir))

    def render(view: ContextEvent) -> str:
        name = next(
            (options.renders[k] for k in (view.name, view.step, view.kind) if k in options.renders),
            None,
        )
        if name is None:
            return default(view)
        template = environment.get_template(name)
        value = view.value
        variables = {
            "event": view,
            "kind": view.kind,
            "step": view.step,
            "name": view.name,
            "value": value,
            "agent": AgentView(agent.name, agent.description),
        }
        return bounded_text(template.generate(variables)).strip()

    return render


def _with_text(view: ContextEvent, text: str) -> ContextEvent:
    return ContextEvent(view.kind, view.step, view.name, view.value, Markup(text))


# ---- `ask` strings -----------------------------------------------------------------------


_VALUE_BREAKS = str.maketrans(
    {"\n": "\\n", "\r": "\\r"}
    | {c: f"\\u{ord(c):04x}" for c in "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}
)
"""Every character that ends a line (str.splitlines' set), as the escape it is shown as."""


def _on_its_line(value: Any) -> str:
    """One value an `ask` shows, its line breaks written as escapes: a value (the model's
    or a tool's) must not start a line of its own in the question a person reads, where it
    could pass for an event row or a `resume:` line (the author's own breaks stay)."""
    return str(value).translate(_VALUE_BREAKS)


_ASK_ENVIRONMENT = sandboxed(finalize=_on_its_line)

NOT_GIVEN = "(none)"
"""How a null value reads in an `ask`: a person deciding must see that it is missing."""


class AskRenderError(Exception):
    """An `ask` that cannot be rendered over the value its step waits with (an unknown
    name, a Jinja2 error): the person is never shown the raw template instead."""


class _Missing:
    """A null in an `ask`: reads as NOT_GIVEN, and so does any field read through it
    (`{{ customer.name }}` with no customer), while `{% if customer %}` is false."""

    __slots__ = ()

    def __str__(self) -> str:
        return NOT_GIVEN

    def __bool__(self) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        return other is None or isinstance(other, _Missing)

    def __hash__(self) -> int:
        return hash(None)

    def __getattr__(self, name: str) -> _Missing:
        if name.startswith("_"):
            raise AttributeError(name)
        return self

    def __getitem__(self, key: object) -> _Missing:
        return self

    def __iter__(self) -> Iterator[Any]:
        return iter(())


_MISSING = _Missing()


class _Fields:
    """A record in an `ask`, read by its `.agent` field names (`{{ from }}` for the
    attribute `from_`); printed whole, it is its JSON under those names. It has no
    public attributes of its own, so no field name is shadowed by a method."""

    __slots__ = ("_text", "_values")

    def __init__(self, values: dict[str, Any], text: str) -> None:
        self._values = values
        self._text = text

    def __getattr__(self, name: str) -> Any:
        # A field named `_id` is no attribute: the sandbox refuses every attribute that
        # starts with `_`, and looks a name a value has no attribute of up as an item,
        # so `{{ inner._id }}` reads the field here as it does of a prompt's dict.
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __str__(self) -> str:
        return self._text


_RECORDS: tuple[object, ...] = ({}, ShownRecord({}, None), _Fields({}, ""))
"""A record as each kind of template is given it: a prompt's or a render template's (a
dict, a `ShownRecord` when it holds secrets) and an `ask`'s."""


def record_attribute(name: str) -> bool:
    """Whether a record, as a template is given it, has an attribute `name` of its own
    (`__init__`, `items`): the sandbox reads `x.name` as that attribute (and refuses one
    that starts with `_`); a name no record has is read as the field of that name.
    `x["name"]` reads the field first, whatever the name."""
    return any(hasattr(record, name) for record in _RECORDS)


def _shown(value: Any) -> Any:
    """`value` as an `ask` reads it: records by field name, nulls as NOT_GIVEN."""
    if value is None:
        return _MISSING
    if isinstance(value, BaseModel):
        # Printed whole, a record hides its secrets; `{{ api_key }}` names one explicitly.
        text = json.dumps(shown_value(value), ensure_ascii=False)
        return _Fields(_fields_of(value), text)
    if isinstance(value, Mapping):
        return {k: _shown(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_shown(v) for v in value]
    return value


def _fields_of(value: BaseModel) -> dict[str, Any]:
    """A model's fields under their `.agent` names (the alias, where Python renamed one)."""
    return {
        info.alias or name: _shown(getattr(value, name))
        for name, info in type(value).model_fields.items()
    }


def render_ask(template: str, value: Any) -> str:
    """An approval's or a human step's `ask`, over the incoming value's fields.

    Fields are named as in the `.agent` file, nested paths included; a null reads as
    NOT_GIVEN. Raises AskRenderError (never returns the template unrendered) when the
    template cannot be filled from this value.
    """
    if isinstance(value, BaseModel):
        variables = _fields_of(value)
    elif isinstance(value, Mapping):
        variables = {str(k): _shown(v) for k, v in value.items()}
    else:
        variables = {}
    try:
        return bounded_text(_ASK_ENVIRONMENT.from_string(template).generate(variables))
    except Exception as exc:  # any failure to fill it in: the template is not shown
        raise AskRenderError(f"{type(exc).__name__}: {exc}") from exc
