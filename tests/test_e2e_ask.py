"""Issue 8 item 10: the approver sees the values, never the raw template.

A small agent whose type has a field named `from` (the Python attribute `from_`) and an
optional nested `customer`, run through the real openai + instructor client against the
scripted server on loopback, with SQLite: the notice a person gets shows `{{ from }}`
filled in, a null customer's name as "(none)", and an `ask` that cannot be rendered
fails the pause in the log (a `StepFailed` of type AskNotShown at the waiting step)
instead of showing the template. NaN from the model is refused and the model asked again.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.runtime_helpers import RecordingNotifier
from tests.support.e2e import ModelTurns
from twelvefold.compiler import compile_text
from twelvefold.compiler.prompts import PromptDirectory
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.types import Notified, Retried, StepFailed, ToolStarted

AGENT = """
agent transfer "Moves money between accounts." {
  max_steps 20
  start decide
}

type Customer { name: string? }
type Move "Move money." { amount: float, from: string, customer: Customer?, notes: list[string] }
type Done "Report." { message: string }

llm decide -> Move | Done {
  prompt "transfer/decide.j2"
  retries 1
  on Move -> confirm
  on Done -> done
}

approval confirm(Move) {
  ask "ASK"
  on approved -> move
  on rejected -> decide
}

tool move(Move) -> Done = "transfer_tools:move" {
  requires approval if not (amount <= 1000)
  next done
}

final done(Done)
"""

TOOLS = """
def move(value):
    return {"message": f"moved {value.amount} from {value.from_}"}
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def write_agent(folder: Path, ask: str) -> Path:
    (folder / "prompts" / "transfer").mkdir(parents=True, exist_ok=True)
    (folder / "prompts" / "transfer" / "decide.j2").write_text("{{ context }}\n")
    (folder / "transfer_tools.py").write_text(TOOLS)
    path = folder / "transfer.agent"
    path.write_text(AGENT.replace('"ASK"', f'"{ask}"'))
    return path


def checked(path: Path) -> list[str]:
    result = compile_text(
        path.read_text(),
        path.name,
        load_prompt=PromptDirectory(path.parent / "prompts"),
        generate_code=False,
    )
    return [d.code for d in result.diagnostics]


MOVE = {"type": "Move", "amount": 5, "from": "checking", "customer": None, "notes": ["x"]}


def test_an_ask_reads_the_agent_field_names(
    rt: Runtime, model: ModelTurns, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    agent = write_agent(tmp_path, "Move {{ amount }} from {{ from }} for {{ customer.name }}?")
    assert checked(agent) == []
    model.then(MOVE)
    view = rt.launch(agent, "move 5")
    assert (view.status, view.step) == ("waiting", "confirm")
    (notice,) = notifier.notices
    assert notice.text == "Move 5.0 from checking for (none)?"
    assert view.question == notice.text


def test_the_python_attribute_name_is_not_an_ask_field(tmp_path: Path) -> None:
    agent = write_agent(tmp_path, "Move {{ amount }} from {{ from_ }}?")
    assert checked(agent) == ["E403"]


def test_a_null_record_and_a_null_field_read_as_none(
    rt: Runtime, model: ModelTurns, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    ask = "{{ customer.name }}|{{ customer }}|{% if customer %}y{% endif %}"
    agent = write_agent(tmp_path, ask)
    model.then({**MOVE, "customer": {"name": None}})
    rt.launch(agent, "move 5")
    (notice,) = notifier.notices
    assert notice.text == '(none)|{"name": null}|y'


def test_an_ask_that_cannot_render_fails_the_pause_in_the_log(
    rt: Runtime, model: ModelTurns, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    # Passes `check` (notes is a list of strings), fails for a value with one note.
    agent = write_agent(tmp_path, "Move {{ amount }}, see {{ notes[3] }}?")
    assert checked(agent) == []
    model.then(MOVE)
    view = rt.launch(agent, "move 5")
    assert view.status == "failed" and view.step == "confirm"
    assert view.error is not None and view.error.type == "AskNotShown"
    assert "cannot be shown" in view.error.message
    assert notifier.notices == [], "nobody may be shown the raw template"
    events = rt.events(view.id)
    failed = events[-1]
    assert isinstance(failed, StepFailed) and failed.step == "confirm"
    assert not any(isinstance(e, Notified | ToolStarted) for e in events)
    # A retry asks again, and fails again, without ever showing the template.
    again = rt.retry(view.id)
    assert again.status == "failed" and again.error is not None
    assert again.error.type == "AskNotShown"
    assert isinstance(rt.events(view.id)[-2], Retried)
    assert notifier.notices == []


def test_a_nan_amount_is_refused_and_the_model_asked_again(
    rt: Runtime, model: ModelTurns, notifier: RecordingNotifier, tmp_path: Path
) -> None:
    """Issue 9 §5: `not (amount <= 1000)` was folded into `amount > 1000`, so a NaN amount
    went past the review. NaN is no valid amount: the model is asked again."""
    agent = write_agent(tmp_path, "Move {{ amount }}?")
    model.then({**MOVE, "amount": math.nan}, {**MOVE, "amount": 2000})
    view = rt.launch(agent, "move")
    assert (view.status, view.step) == ("waiting", "confirm")
    assert len(model.server.requests) == 2
    (notice,) = notifier.notices
    assert notice.text == "Move 2000.0?"
