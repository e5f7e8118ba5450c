"""Checks before dispatch, end to end (issue 12, item 6): an llm step's `validate` function
and its `judge` refuse outputs before anything is dispatched. The real openai + instructor
client against the scripted server on loopback, SQLite, the fixture's own validator and tool.

A refusal goes back to the model like a validation error (the next request's context shows
it), is recorded in the log as `OutputRejected`, and counts against `retries`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.e2e import ModelTurns, context
from tests.support.openai_server import Reply, ScriptedOpenAI
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.types import ModelOutput, OutputRejected, StepFailed, ToolStarted

FIXTURES = Path(__file__).parent / "checks_fixtures"
REFUNDS = FIXTURES / "refunds.agent"
CLAIM = {"order": "o-17", "amount": 40.0, "api_key": "sk-live-do-not-show"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def paid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "paid.txt"
    monkeypatch.setenv("REFUNDS_PAID", str(path))
    return path


def payments(paid: Path) -> list[str]:
    return paid.read_text().split() if paid.exists() else []


def refund(amount: float, note: str = "damaged in transit") -> Reply:
    return Reply(arguments={"amount": amount, "note": note})  # one output type: its fields


def verdict(accept: bool, reason: str) -> Reply:
    return Reply(arguments={"accept": accept, "reason": reason})


def tools_asked(server: ScriptedOpenAI) -> list[str]:
    """The tool each request forced (`Refund` for the step, `Verdict` for the judge)."""
    return [body["tool_choice"]["function"]["name"] for body in server.requests]


def test_a_validator_refuses_once_and_the_model_fixes_its_output(
    rt: Runtime, model: ModelTurns, openai_server: ScriptedOpenAI, paid: Path
) -> None:
    model.then(refund(-5), refund(30), verdict(True, "within the claim"))
    done = rt.launch(REFUNDS, CLAIM)

    assert done.status == "finished", done.error
    assert payments(paid) == ["30.0"], "only the accepted refund was paid"
    events = rt.events(done.id)
    (rejected,) = [e for e in events if isinstance(e, OutputRejected)]
    assert rejected.by == "checks:refund_is_sane"
    assert rejected.reason == "a refund must be positive, not -5.0"
    assert rejected.output.amount == -5
    outputs = [e for e in events if isinstance(e, ModelOutput)]
    assert [o.output.amount for o in outputs] == [30]
    assert events.index(rejected) < events.index(outputs[0])
    # The refusal reached the model like a validation error: in its next context.
    first, second, judged = model.contexts
    assert "must be positive" not in first
    assert "a refund must be positive, not -5.0" in second
    assert "decide_rejected_output" in second
    assert tools_asked(openai_server) == ["Refund", "Refund", "Verdict"]
    assert "30" in judged, "the judge is shown the output it judges"


def test_a_validator_that_raises_value_error_refuses_too(
    rt: Runtime, model: ModelTurns, paid: Path
) -> None:
    model.then(refund(12, note="  "), refund(12), verdict(True, "fine"))
    done = rt.launch(REFUNDS, CLAIM)
    assert done.status == "finished", done.error
    (rejected,) = [e for e in rt.events(done.id) if isinstance(e, OutputRejected)]
    assert rejected.reason == "say why the refund is given (the note is empty)"
    assert payments(paid) == ["12.0"]


def test_a_judge_refuses_and_nothing_is_paid_until_it_accepts(
    rt: Runtime, model: ModelTurns, openai_server: ScriptedOpenAI, paid: Path
) -> None:
    model.then(
        refund(500),
        verdict(False, "500 is more than the claimed 40"),
        refund(40),
        verdict(True, "matches the claim"),
    )
    done = rt.launch(REFUNDS, CLAIM)

    assert done.status == "finished", done.error
    assert payments(paid) == ["40.0"]
    (rejected,) = [e for e in rt.events(done.id) if isinstance(e, OutputRejected)]
    assert (rejected.by, rejected.reason) == ("judge", "500 is more than the claimed 40")
    assert tools_asked(openai_server) == ["Refund", "Verdict", "Refund", "Verdict"]
    contexts = model.contexts
    assert "500 is more than the claimed 40" in contexts[2]
    judge_system = openai_server.requests[1]["messages"][0]["content"]
    assert judge_system.startswith("You check refunds")
    for body in openai_server.requests:  # a secret field never reaches a model
        assert CLAIM["api_key"] not in str(body)


def test_refusals_count_against_retries_then_the_step_fails(
    rt: Runtime, model: ModelTurns, openai_server: ScriptedOpenAI, paid: Path
) -> None:
    # `retries 2`: the first try and two more; the third refusal fails the step, and its
    # `on error` decides (here: gave_up). Nothing was dispatched.
    model.then(refund(-1), refund(-2), refund(-3))
    done = rt.launch(REFUNDS, CLAIM)

    assert (done.status, done.step) == ("finished", "gave_up")
    assert payments(paid) == []
    events = rt.events(done.id)
    assert [e.output.amount for e in events if isinstance(e, OutputRejected)] == [-1, -2, -3]
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert failed.error.type == "Rejected"
    assert "after 3 rejection(s)" in failed.error.message
    assert not [e for e in events if isinstance(e, ToolStarted)]
    assert len(openai_server.requests) == 3


def test_instructor_retries_and_refusals_share_one_budget(
    rt: Runtime, model: ModelTurns, openai_server: ScriptedOpenAI, paid: Path
) -> None:
    # Two refusals use two of the three tries: the third request may not be re-asked.
    model.then(refund(-1), refund(-2), Reply(arguments={"amount": "lots"}))
    done = rt.launch(REFUNDS, CLAIM)
    assert (done.status, done.step) == ("finished", "gave_up")
    assert len(openai_server.requests) == 3
    (failed,) = [e for e in rt.events(done.id) if isinstance(e, StepFailed)]
    assert failed.error.type == "InvalidOutput"
    assert payments(paid) == []


def test_a_rejection_survives_a_restart_and_still_counts(
    openai_server: ScriptedOpenAI, tmp_path: Path, cache: Path, paid: Path
) -> None:
    # The log is the state: a process that reloads the thread sees the refusals so far.
    from tests.support.e2e import runtime

    turns = ModelTurns(openai_server)
    turns.then(refund(-1), Reply(status=500, error="down"))
    db = tmp_path / "threads.db"
    with runtime(openai_server, db, cache) as rt:
        stopped = rt.launch(REFUNDS, CLAIM)
    assert stopped.status == "finished" and stopped.step == "gave_up"
    events_before = None
    with runtime(openai_server, db, cache) as rt:
        events_before = rt.events(stopped.id)
        state = rt.replay(stopped.id)
    assert [type(e).__name__ for e in events_before].count("OutputRejected") == 1
    assert state.step == "gave_up"
    assert "must be positive" in context(openai_server.requests[1])


def test_show_prints_the_rejection_and_the_context_can_render_it(
    rt: Runtime, model: ModelTurns, paid: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from twelvefold.cli import cli

    model.then(refund(-5), refund(30), verdict(True, "fine"))
    done = rt.launch(REFUNDS, CLAIM)
    result = CliRunner().invoke(cli, ["show", done.id, "--db", str(tmp_path / "threads.db")])
    assert result.exit_code == 0, result.output
    (line,) = [row for row in result.output.splitlines() if "output_rejected" in row]
    assert "Refund refused by checks:refund_is_sane: a refund must be positive" in line


def test_the_judges_model_call_counts_in_the_steps_usage(
    rt: Runtime, model: ModelTurns, openai_server: ScriptedOpenAI, paid: Path
) -> None:
    """Each scripted reply costs (11, 7) tokens: the step's call and its judge's make
    (22, 14) on the one event the step records, so `usage` and `stats` count both."""
    model.then(refund(500), verdict(False, "too much"), refund(40), verdict(True, "fine"))
    done = rt.launch(REFUNDS, CLAIM)

    assert done.status == "finished", done.error
    rejected = next(e for e in rt.events(done.id) if isinstance(e, OutputRejected))
    output = next(e for e in rt.events(done.id) if isinstance(e, ModelOutput))
    for event in (rejected, output):
        assert event.usage is not None
        assert (event.usage.input_tokens, event.usage.output_tokens) == (22, 14)
    assert (done.usage.input_tokens, done.usage.output_tokens) == (44, 28)


def test_a_validator_that_ends_the_process_fails_the_step_and_the_process_runs_on(
    rt: Runtime, model: ModelTurns, tmp_path: Path, paid: Path
) -> None:
    # as a tool's SystemExit is its step's failure, so is a validator's: `run` once ended
    # silently with exit code 3 and left the thread `running`
    project = tmp_path / "project"
    shutil.copytree(FIXTURES, project)
    with (project / "checks.py").open("a") as file:
        file.write("\n\ndef ends_it(output):\n    raise SystemExit(3)\n")
    agent = project / "refunds.agent"
    agent.write_text(agent.read_text().replace("checks:refund_is_sane", "checks:ends_it"))
    model.then(refund(30))
    ended = rt.launch(agent, CLAIM)
    assert (ended.status, ended.step) == ("finished", "gave_up"), ended  # its `on error`
    (failure,) = [e for e in rt.events(ended.id) if isinstance(e, StepFailed)]
    assert failure.error.type == "ValidatorError", failure.error
    assert "exit code 3" in failure.error.message
    assert payments(paid) == []


@pytest.fixture
def short_pauses(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The loop, waiting out a long 429 for 0.2 s rather than up to `MAX_PAUSE_SECONDS`
    (ten minutes)."""
    import twelvefold.runtime.loop as loop

    monkeypatch.setattr(loop, "MAX_PAUSE_SECONDS", 0.2)
    return loop


def test_a_judge_told_to_wait_longer_than_the_client_waits_it_out_as_a_step_does(
    rt: Runtime, model: ModelTurns, paid: Path, short_pauses: ModuleType
) -> None:
    """A 429 on the judge's call whose `Retry-After` (300 s) is beyond what the openai
    client waits for is waited out (capped at `MAX_PAUSE_SECONDS`, shortened here) and the
    judge asked again, as a step's own call is: the step does not fail, the output is
    judged and paid out once."""
    model.then(
        refund(40), Reply(status=429, error="slow down", retry_after="300"), verdict(True, "ok")
    )
    done = rt.launch(REFUNDS, CLAIM)

    assert done.status == "finished", done.error
    assert tools_asked(model.server) == ["Refund", "Verdict", "Verdict"]
    assert not [e for e in rt.events(done.id) if isinstance(e, StepFailed)]
    assert len(payments(paid)) == 1


def test_a_judge_that_keeps_being_told_to_wait_fails_its_step_after_the_last_wait(
    rt: Runtime, model: ModelTurns, paid: Path, short_pauses: ModuleType
) -> None:
    loop = short_pauses
    slow = Reply(status=429, error="slow down", retry_after="900")
    model.then(refund(40), *[slow] * (1 + loop.LONG_429_WAITS))
    done = rt.launch(REFUNDS, CLAIM)

    assert tools_asked(model.server) == ["Refund"] + ["Verdict"] * (1 + loop.LONG_429_WAITS)
    (failure,) = [e for e in rt.events(done.id) if isinstance(e, StepFailed)]
    assert failure.error.type == "JudgeError" and "RateLimitError" in failure.error.message
    assert payments(paid) == []
