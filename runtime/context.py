"""The context window: a thread's event log rendered into the messages an `llm` step sends.

Two things happen here, both visible to the user:

1. The event log becomes `context`, one entry per event, in the format the agent's
   `context { }` block chooses (compact XML-like by default), after its compaction rules
   (drop resolved errors, keep the last N events, a token budget). Values are escaped for
   the format, so no tool result or user input can forge an event boundary.
2. The step's prompt file (Jinja2, StrictUndefined) renders the messages. A file that
   defines `{% block system %}` and/or `{% block user %}` sends those blocks as a system and
   a user message; a file without blocks is the user message. Each message is stripped of
   surrounding whitespace. Nothing else is added: the runtime writes no prompt text.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from pydantic import BaseModel

from .spec import AgentSpec
from .types import (
    KIND_OF_EVENT,
    Answered,
    Approved,
    CallModel,
    Event,
    ModelOutput,
    Rejected,
    Started,
    StepFailed,
    ToolResult,
)

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


def context_event(event: Event) -> ContextEvent | None:
    """The context's view of an event; None for bookkeeping the model need not see."""
    kind = KIND_OF_EVENT.get(type(event), type(event).__name__)
    if isinstance(event, Started):
        return ContextEvent(kind, event.step, "user_input", plain(event.input))
    if isinstance(event, ModelOutput):
        return ContextEvent(kind, event.step, type(event.output).__name__, plain(event.output))
    if isinstance(event, ToolResult):
        return ContextEvent(kind, event.step, f"{event.step}_result", plain(event.result))
    if isinstance(event, StepFailed):
        return ContextEvent(kind, event.step, f"{event.step}_error", str(event.error))
    if isinstance(event, Approved | Rejected):
        verdict = "approved" if isinstance(event, Approved) else "rejected"
        fields = {"by": event.by, "comment": event.comment}
        value = {k: v for k, v in fields.items() if v is not None}
        return ContextEvent(kind, event.step, f"{event.step}_{verdict}", value)
    if isinstance(event, Answered):
        answer = event.answer
        answered: Any = answer.text if answer.by is None else {"text": answer.text, "by": answer.by}
        return ContextEvent(kind, event.step, f"{event.step}_answer", answered)
    return None  # ToolStarted, Notified, Retried: how the runtime works, not what happened


def plain(value: Any) -> Any:
    """JSON-like data for a value: models become dicts without their null fields."""
    if isinstance(value, BaseModel):
        return {k: plain(v) for k, v in value.model_dump(mode="json").items() if v is not None}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


# ---- compaction --------------------------------------------------------------------------


def drop_resolved_errors(events: Sequence[ContextEvent]) -> list[ContextEvent]:
    """Errors of a step that later succeeded (a result or an output of the same step)."""
    succeeded_after: set[str] = set()
    kept: list[ContextEvent] = []
    for event in reversed(events):
        if event.kind in ("tool_result", "model_output"):
            succeeded_after.add(event.step)
        if event.kind == "step_failed" and event.step in succeeded_after:
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
    """Drop the oldest events (never the input) until the entries fit in `budget` tokens."""
    head = [e for e in events[:1] if e.kind == "started"]
    rest = list(events[len(head) :])
    total = sum(estimate_tokens(e.text) for e in [*head, *rest])
    while rest and total > budget:
        total -= estimate_tokens(rest.pop(0).text)
    return head + rest


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
        items = [f"{k}: {compact(v)}" for k, v in value.items()]
        return "\n".join(items) if top else "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(compact(v) for v in value) + "]"
    if isinstance(value, str):
        if top:  # the whole content of an element: its boundary is the format's to protect
            return value
        return value if _is_plain_string(value) else json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False)


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
        lines = [f"  {k}: {compact(v)}" for k, v in value.items()]
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


def render_context(views: Sequence[ContextEvent]) -> str:
    return "\n".join(v.text for v in views)


def build_messages(
    agent: AgentSpec, action: CallModel, events: Sequence[Event], prompts_dir: Path
) -> list[dict[str, str]]:
    """The messages for `action` (an `llm` step) given the thread's events so far."""
    views = context_events(agent, events, prompts_dir)
    context = render_context(views)
    if action.prompt is None:
        return [{"role": "user", "content": context}]
    started = next((e for e in events if isinstance(e, Started)), None)
    variables = {
        "context": context,
        "events": views,
        "input": started.input if started is not None else None,
        "last": action.value,
        "agent": AgentView(agent.name, agent.description),
        "step": action.step,
    }
    template = _prompt_environment(str(prompts_dir)).get_template(action.prompt)
    return render_messages(template, variables)


def render_messages(template: jinja2.Template, variables: dict[str, Any]) -> list[dict[str, str]]:
    """The system/user convention: named blocks become messages, else the whole file is one."""
    blocks = [name for name in MESSAGE_BLOCKS if name in template.blocks]
    if not blocks:
        return [{"role": "user", "content": template.render(variables).strip()}]
    context = template.new_context(variables)
    messages = []
    for name in blocks:
        content = "".join(template.blocks[name](context)).strip()
        messages.append({"role": name, "content": content})
    return messages


@dataclass(frozen=True, slots=True)
class AgentView:
    """`agent` in a prompt: `{{ agent }}` is its name, `{{ agent.description }}` its text."""

    name: str
    description: str | None

    def __str__(self) -> str:
        return self.name


@functools.lru_cache(maxsize=32)
def _prompt_environment(prompts_dir: str) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(prompts_dir),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,
    )


@functools.lru_cache(maxsize=32)
def _entry_environment(prompts_dir: str) -> jinja2.Environment:
    # Per-event templates are written in the context's markup, so their values are
    # escaped like the built-in entries are: a hostile value stays a value.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(prompts_dir),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=True,
    )


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
        return template.render(
            event=view, value=value, step=view.step, kind=view.kind, name=view.name
        ).strip()

    return render


def _with_text(view: ContextEvent, text: str) -> ContextEvent:
    return ContextEvent(view.kind, view.step, view.name, view.value, text)


# ---- `ask` strings -----------------------------------------------------------------------


_ASK_ENVIRONMENT = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)

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
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __str__(self) -> str:
        return self._text


def _shown(value: Any) -> Any:
    """`value` as an `ask` reads it: records by field name, nulls as NOT_GIVEN."""
    if value is None:
        return _MISSING
    if isinstance(value, BaseModel):
        text = json.dumps(value.model_dump(mode="json", by_alias=True), ensure_ascii=False)
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
        return _ASK_ENVIRONMENT.from_string(template).render(variables)
    except Exception as exc:  # any failure to fill it in: the template is not shown
        raise AskRenderError(f"{type(exc).__name__}: {exc}") from exc
