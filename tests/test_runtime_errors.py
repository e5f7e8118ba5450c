"""Run-time failures that used to escape as tracebacks are step failures in the log, so the
step's `on error` is taken: a model reply cut off at its token limit (through the real openai +
instructor client and the scripted server) and a prompt that fails to render."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.e2e import ModelTurns
from tests.support.openai_server import Reply
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.types import StepFailed

AGENT = """\
agent cut { start decide }
type Done "Finished." { message: string }
llm decide -> Done {
  prompt "decide.j2"
  on Done -> done
  on error -> failed
}
final done(Done)
final failed
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def write_agent(folder: Path, prompt: str) -> Path:
    (folder / "prompts").mkdir(exist_ok=True)
    (folder / "prompts" / "decide.j2").write_text(prompt, encoding="utf-8")
    agent = folder / "cut.agent"
    agent.write_text(AGENT, encoding="utf-8")
    return agent


def failure(rt: Runtime, thread_id: str) -> StepFailed:
    (failed,) = [e for e in rt.events(thread_id) if isinstance(e, StepFailed)]
    return failed


def test_a_reply_cut_off_at_the_token_limit_takes_on_error(
    rt: Runtime, model: ModelTurns, tmp_path: Path
) -> None:
    model.then(Reply(arguments='{"choice": {"message": "half', finish_reason="length"))
    view = rt.launch(write_agent(tmp_path, "{{ input }}\nDecide.\n"), "go")
    assert (view.status, view.step) == ("finished", "failed")
    error = failure(rt, view.id).error
    assert error.type == "IncompleteOutput" and "cut off" in error.message


def test_a_prompt_that_fails_to_render_takes_on_error(
    rt: Runtime, model: ModelTurns, tmp_path: Path
) -> None:
    view = rt.launch(write_agent(tmp_path, "{{ input }} {{ 1 // 0 }}\n"), "go")
    assert (view.status, view.step) == ("finished", "failed")
    error = failure(rt, view.id).error
    assert error.type == "PromptError"
    assert "decide.j2" in error.message and "ZeroDivisionError" in error.message
    assert "\n" not in error.message
    assert model.contexts == []  # the model was never asked


def test_a_prompt_missing_at_run_time_takes_on_error(
    rt: Runtime, model: ModelTurns, tmp_path: Path
) -> None:
    agent = write_agent(tmp_path, "{{ input }}\n")
    model.then(Reply(arguments={"message": "ok"}))
    assert rt.launch(agent, "compiles it").step == "done"
    (tmp_path / "prompts" / "decide.j2").unlink()
    view = rt.launch(agent, "go")
    assert (view.status, view.step) == ("finished", "failed")
    assert failure(rt, view.id).error.type == "PromptError"
