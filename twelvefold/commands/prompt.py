"""`twelvefold prompt`: the exact request an `llm` step would send, without sending it."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from twelvefold.commands.options import DB, PROMPTS, PathText
from twelvefold.commands.output import echo, error
from twelvefold.runtime.terminal import one_line

if TYPE_CHECKING:
    from twelvefold.runtime.store import StoreLocation


@click.command()
@click.argument("agent_ref", type=PathText(), metavar="AGENT")
@click.argument("step")
@click.option("--thread", "thread_id", help="Use this stored thread's events.")
@click.option("--input", "text", help="Show the step for a fresh thread launched with TEXT.")
@PROMPTS
@DB
@click.option("--model", help="The model name to show (as `run --model`).")
@click.option(
    "--mode",
    type=click.Choice(["tools", "json"]),
    default="tools",
    show_default=True,
    help="Tool calling, or JSON content for endpoints without tools.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the request body as JSON.")
def prompt(
    agent_ref: str,
    step: str,
    thread_id: str | None,
    text: str | None,
    prompts: Path | None,
    db: StoreLocation,
    model: str | None,
    mode: str,
    as_json: bool,
) -> None:
    """Print the messages and the schema AGENT's llm STEP would send to the model.

    For a stored thread (--thread) the context is its event log; for a fresh thread
    (--input) it is the input alone. Nothing is sent: this is what `run` would send.
    """
    if (thread_id is None) == (text is None):
        raise click.UsageError("give --thread THREAD or --input TEXT")
    try:
        body = asyncio.run(
            _request_body(agent_ref, step, thread_id, text, prompts, db, model, mode)
        )
    except (click.ClickException, OSError):
        raise  # click's, or a path the system refuses: the reporter's (commands/report.py)
    except Exception as exc:  # a missing thread, a template error: one clear line
        from twelvefold.runtime.loading import AgentLoadError

        if isinstance(exc, AgentLoadError):
            raise  # a compile error's diagnostics: many lines, the reporter's (report.py)
        error(exc)
        sys.exit(1)
    echo(json.dumps(body, indent=2, ensure_ascii=False) if as_json else render(body))


async def _request_body(
    agent_ref: str,
    step: str,
    thread_id: str | None,
    text: str | None,
    prompts: Path | None,
    db: StoreLocation,
    model_name: str | None,
    mode: str,
) -> dict[str, Any]:
    from twelvefold.runtime.api import typed_input
    from twelvefold.runtime.context import build_messages
    from twelvefold.runtime.loading import load_agent
    from twelvefold.runtime.model import ModelRequest, OpenAIModel
    from twelvefold.runtime.types import Event, Started

    agent = load_agent(agent_ref, prompts_dir=prompts)
    spec = agent.spec
    if step not in spec.states or spec.states[step].kind != "llm":
        llm_steps = ", ".join(n for n, s in spec.states.items() if s.kind == "llm")
        raise click.BadParameter(
            one_line(f"`{step}` is not an llm step of {spec.name} ({llm_steps})")
        )
    events: list[Event]
    if thread_id is not None:
        events = list(_stored_events(db, thread_id, agent.codec))
    else:
        events = [Started(step=spec.start, input=typed_input(agent, text))]
    action = _call_at(agent.module, events, step)
    prompts_dir = prompts or agent.prompts_dir or Path("prompts")
    try:
        messages = build_messages(spec, action, events, prompts_dir)
    except OSError:
        raise  # a path the system refuses: the reporter's (commands/report.py)
    except Exception as exc:  # the step would fail so: the same line, naming the template
        from twelvefold.runtime.loop import prompt_error

        raise PromptNotRendered(prompt_error(action, exc).message) from None
    request = ModelRequest(spec, action, messages, thread_id or "(new)", len(events))
    client = OpenAIModel(model=model_name, mode="json" if mode == "json" else "tools")
    return await client.preview(request)


class PromptNotRendered(Exception):
    """The step's prompt could not be rendered: the line the step would fail with."""


def _stored_events(db: StoreLocation, thread_id: str, codec: Any) -> list[Any]:
    """The thread's log, decoded by the agent the command names (AGENT, not the place the
    thread recorded: that place may be gone after the project moved)."""
    from twelvefold.runtime.store import open_store

    store = open_store(db, create=False)  # none there: `StoreNotFound`, one line
    try:
        return list(store.load(thread_id, codec))
    finally:
        store.close()


def _call_at(module: Any, events: list[Any], step: str) -> Any:
    """The CallModel for `step`: the thread's own next action when it is there, else the
    step's call built from the generated module as if the thread's current value arrived."""
    from twelvefold.runtime.types import CallModel

    state = module.replay(events)
    action = module.next_action(state) if state.status == "running" else None
    if isinstance(action, CallModel) and action.step == step:
        return action
    from dataclasses import replace

    arrived = replace(state, step=step, status="running")
    action = module.next_action(arrived)
    if not isinstance(action, CallModel):  # pragma: no cover - checked by the caller
        raise click.ClickException(one_line(f"`{step}` does not call the model"))
    echo(
        f"note: the thread is at `{state.step}` ({state.status}); showing `{step}` "
        "with its events so far",
        err=True,
    )
    return action


def render(body: dict[str, Any]) -> str:
    """Messages as readable text, then the schema the output must match."""
    lines = [f"model: {body.get('model')}"]
    for message in body.get("messages", []):
        lines += ["", f"── {message['role']} " + "─" * 60, str(message.get("content", ""))]
    for tool in body.get("tools", []):
        function = tool["function"]
        lines += [
            "",
            f"── tool `{function['name']}`: {function.get('description', '')} " + "─" * 20,
        ]
        lines.append(json.dumps(function["parameters"], indent=2, ensure_ascii=False))
    if "tool_choice" in body:
        lines += ["", f"tool_choice: {json.dumps(body['tool_choice'])}"]
    if "response_format" in body:
        lines += ["", f"response_format: {json.dumps(body['response_format'])}"]
    return "\n".join(lines)
