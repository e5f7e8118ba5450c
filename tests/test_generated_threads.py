"""Drive the generated deploybot and calculator reducers through whole threads.

No runtime here: the test plays the runtime's part, feeding the events it would record
and checking what `next_action` asks for at each point.
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support.generated import EXAMPLES, import_generated
from twelvefold.runtime import (
    Answer,
    Answered,
    Approved,
    AwaitAnswer,
    AwaitApproval,
    CallModel,
    CallTool,
    ErrorInfo,
    Event,
    Fail,
    Finish,
    IllegalEvent,
    ModelOutput,
    Notified,
    Rejected,
    Retried,
    Started,
    State,
    StepFailed,
    ToolResult,
    ToolStarted,
)


@pytest.fixture(scope="module")
def deploybot(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return import_generated(EXAMPLES / "deploybot.agent", tmp_path_factory.mktemp("deploybot"))


@pytest.fixture(scope="module")
def calculator(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return import_generated(EXAMPLES / "calculator.agent", tmp_path_factory.mktemp("calculator"))


class Thread:
    """A log and the state it leads to, checked against `replay` at every step."""

    def __init__(self, module: ModuleType, text: str) -> None:
        self.module = module
        self.events: list[Event] = [Started(step=module.AGENT.start, input=text)]
        self.state: State = module.initial_state(text)

    def apply(self, event: Event) -> State:
        self.state = self.module.reduce(self.state, event)
        self.events.append(event)
        assert self.module.replay(self.events) == self.state
        return self.state

    def model(self, output: Any) -> State:
        return self.apply(ModelOutput(step=self.state.step, output=output))

    def tool(self, result: Any) -> State:
        step = self.state.step
        self.apply(ToolStarted(step=step, key=f"t1/{step}/{self.state.seq}"))
        return self.apply(ToolResult(step=step, result=result))

    def fail(self, message: str = "boom") -> State:
        return self.apply(
            StepFailed(step=self.state.step, error=ErrorInfo("RuntimeError", message))
        )

    @property
    def action(self) -> Any:
        return self.module.next_action(self.state)


def test_production_deploy_waits_for_approval_then_deploys(deploybot: ModuleType) -> None:
    m = deploybot
    thread = Thread(m, "deploy v1.2.3 to production")
    assert isinstance(thread.action, CallModel)
    assert thread.action.outputs == (
        m.ListGitTags,
        m.DeployBackend,
        m.RequestMoreInformation,
        m.DoneForNow,
    )

    request = m.DeployBackend(tag="v1.2.3", env="production")
    thread.model(request)
    assert (thread.state.step, thread.state.status) == ("approve_deploy", "waiting")
    action = thread.action
    assert isinstance(action, AwaitApproval) and action.value == request
    assert action.approvers == ("release-managers",) and not action.notified
    thread.apply(Notified(step="approve_deploy", channels=("log",)))
    assert thread.action.notified

    thread.apply(
        Approved(step="approve_deploy", request=thread.state.request, by="ana", comment="go")
    )
    action = thread.action
    assert isinstance(action, CallTool) and action.step == "deploy" and action.value == request
    assert m.AGENT.states["deploy"].requires_approval(action.value) is True

    thread.tool(m.DeployResult(url="https://prod/v1.2.3"))
    assert thread.state.step == "decide"
    thread.model(m.DoneForNow(message="deployed v1.2.3"))
    assert thread.state.status == "finished"
    assert thread.action == Finish(step="done", result=m.DoneForNow(message="deployed v1.2.3"))


def test_staging_deploys_without_approval(deploybot: ModuleType) -> None:
    thread = Thread(deploybot, "deploy v1.2.3 to staging")
    thread.model(deploybot.DeployBackend(tag="v1.2.3", env="staging"))
    assert thread.state.step == "deploy"
    assert deploybot.AGENT.states["deploy"].requires_approval(thread.state.value) is False


def test_rejection_returns_to_the_model_with_the_request(deploybot: ModuleType) -> None:
    thread = Thread(deploybot, "deploy v1.2.3 to production")
    request = deploybot.DeployBackend(tag="v1.2.3", env="production")
    thread.model(request)
    thread.apply(
        Rejected(
            step="approve_deploy", request=thread.state.request, by="ana", comment="not on a Friday"
        )
    )
    assert (thread.state.step, thread.state.value, thread.state.status) == (
        "decide",
        request,
        "running",
    )


def test_tool_errors_go_back_to_the_model_until_the_ceiling_escalates(
    deploybot: ModuleType,
) -> None:
    m = deploybot
    thread = Thread(m, "deploy v9 to staging")
    request = m.DeployBackend(tag="v9", env="staging")
    for attempt in (1, 2):
        thread.model(request)
        thread.fail("LookupError: no tag")
        assert (thread.state.step, thread.state.errors) == ("decide", attempt)
        assert thread.state.value == request  # a failure passes the incoming value on
    thread.model(request)
    thread.fail("LookupError: no tag")
    assert (thread.state.step, thread.state.status, thread.state.errors) == (
        "escalate",
        "waiting",
        0,
    )
    assert isinstance(thread.action, AwaitAnswer)
    thread.apply(
        Answered(
            step="escalate",
            request=thread.state.request,
            answer=Answer(text="use v1.2.3", by="ana"),
        )
    )
    assert thread.state.step == "decide" and thread.state.value == Answer(
        text="use v1.2.3", by="ana"
    )


def test_a_success_resets_the_error_count(deploybot: ModuleType) -> None:
    m = deploybot
    thread = Thread(m, "deploy")
    thread.model(m.DeployBackend(tag="v9", env="staging"))
    thread.fail()
    thread.model(m.ListGitTags())
    thread.tool(m.GitTags(tags=["v1"]))
    assert thread.state.errors == 0


def test_max_steps_hands_the_thread_to_a_person(deploybot: ModuleType) -> None:
    m = deploybot
    thread = Thread(m, "list tags forever")
    for _ in range(11):
        thread.model(m.ListGitTags())
        thread.tool(m.GitTags(tags=["v1"]))
    assert thread.state.steps == 22 and thread.state.step == "decide"
    thread.model(m.ListGitTags())
    assert thread.state.step == "list_tags"
    thread.tool(m.GitTags(tags=["v1"]))  # the 24th action: the 25th would exceed the budget
    assert (thread.state.step, thread.state.status, thread.state.steps) == (
        "escalate",
        "waiting",
        0,
    )


def test_an_llm_failure_without_on_error_fails_the_thread_and_can_be_retried(
    deploybot: ModuleType,
) -> None:
    thread = Thread(deploybot, "hello")
    thread.fail("ValidationError: output stayed invalid")
    assert thread.state.status == "failed"
    assert thread.action == Fail(
        step="decide", error=ErrorInfo("RuntimeError", "ValidationError: output stayed invalid")
    )
    thread.apply(Retried(step="decide"))
    assert thread.state.status == "running" and isinstance(thread.action, CallModel)


@pytest.mark.parametrize(
    "event",
    [
        Approved(step="decide"),
        ModelOutput(step="approve_deploy", output=None),  # type: ignore[arg-type]
        Answered(step="decide", answer=Answer(text="hi")),
        Started(step="decide", input="again"),
        Retried(step="decide"),
        Notified(step="decide"),
        ToolStarted(step="decide", key="k"),
    ],
)
def test_an_illegal_event_raises_and_changes_nothing(deploybot: ModuleType, event: Event) -> None:
    state = deploybot.initial_state("hello")
    before = copy.deepcopy(state)
    with pytest.raises(IllegalEvent):
        deploybot.reduce(state, event)
    assert state == before


def test_a_model_output_of_a_type_the_step_cannot_produce_is_illegal(deploybot: ModuleType) -> None:
    state = deploybot.initial_state("hello")
    with pytest.raises(IllegalEvent):
        deploybot.reduce(state, ModelOutput(step="decide", output=deploybot.GitTags(tags=[])))


def test_a_finished_thread_takes_no_more_events(deploybot: ModuleType) -> None:
    thread = Thread(deploybot, "bye")
    thread.model(deploybot.DoneForNow(message="done"))
    with pytest.raises(IllegalEvent, match="finished"):
        deploybot.reduce(
            thread.state, ModelOutput(step="done", output=deploybot.DoneForNow(message="x"))
        )


def test_calculator_chain_multiply_divide_approved_add_done(calculator: ModuleType) -> None:
    m = calculator
    thread = Thread(m, "multiply 3 and 4, divide by 2, add 1")
    thread.model(m.Multiply(a=3, b=4))
    assert thread.action.function == "calculator.tools:multiply"
    thread.tool(m.Number(value=12))
    thread.model(m.Divide(a=12, b=2))
    assert (
        thread.state.step == "approve_divide" and thread.action.ask == "Divide {{ a }} by {{ b }}?"
    )
    thread.apply(Approved(step="approve_divide", request=thread.state.request))
    thread.tool(m.Number(value=6))
    thread.model(m.Add(a=6, b=1))
    thread.tool(m.Number(value=7))
    thread.model(m.DoneForNow(message="the answer is 7"))
    assert thread.state.status == "finished" and thread.state.value.message == "the answer is 7"


def test_calculator_clarification_is_answered(calculator: ModuleType) -> None:
    thread = Thread(calculator, "hello!")
    thread.model(calculator.ClarificationRequest(message="what should I calculate?"))
    assert isinstance(thread.action, AwaitAnswer) and thread.action.ask == "{{ message }}"
    thread.apply(
        Answered(
            step="ask_user", request=thread.state.request, answer=Answer(text="lets try 12 instead")
        )
    )
    assert thread.state.step == "decide"


def test_calculator_max_steps_without_target_fails_the_thread(tmp_path: Path) -> None:
    source = (EXAMPLES / "calculator.agent").read_text().replace("max_steps 16", "max_steps 2")
    agent = tmp_path / "calculator.agent"
    agent.write_text(source)
    m = import_generated(agent, tmp_path)
    thread = Thread(m, "add forever")
    thread.model(m.Add(a=1, b=1))
    thread.tool(m.Number(value=2))
    assert thread.state.status == "failed"
    assert thread.state.error == ErrorInfo("StepBudgetExhausted", "step budget exhausted")
    # The tool's work is done: the thread stopped where it was going, not where it was,
    # so a retry asks the model again instead of running `add` a second time.
    assert (thread.state.step, thread.state.value) == ("decide", m.Number(value=2))
    thread.apply(Retried(step="decide"))
    assert isinstance(thread.action, CallModel)
    assert thread.state.steps == 0  # a person chose to go on: a fresh budget


def test_approvals_do_not_reset_the_error_count(calculator: ModuleType) -> None:
    # Division by zero, approved each time: the third failure hands the thread to a person.
    m = calculator
    thread = Thread(m, "divide 1 by 0")
    for attempt in (1, 2, 3):
        thread.model(m.Divide(a=1, b=0))
        thread.apply(Approved(step="approve_divide", request=thread.state.request))
        thread.fail("ZeroDivisionError: cannot divide 1.0 by zero")
        if attempt < 3:
            assert (thread.state.step, thread.state.errors) == ("decide", attempt)
    assert (thread.state.step, thread.state.status) == ("escalate", "waiting")
