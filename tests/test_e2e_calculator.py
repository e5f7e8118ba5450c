"""examples/calculator.agent end to end: its real tools and prompt, the real openai +
instructor client against the scripted OpenAI-compatible server on loopback, SQLite."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.runtime_helpers import EXAMPLES, RecordingNotifier
from tests.support.e2e import ModelTurns, last_value, runtime
from tests.support.openai_server import ScriptedOpenAI
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.types import (
    Answered,
    Approved,
    ModelOutput,
    Notified,
    Rejected,
    ToolResult,
)

CALCULATOR = EXAMPLES / "calculator.agent"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compiled calculator for the whole file."""
    return tmp_path_factory.mktemp("cache")


def kinds(rt: Runtime, thread_id: str) -> list[str]:
    return [f"{e.step}:{type(e).__name__}" for e in rt.events(thread_id)]


def test_hello_ends_in_a_clarification_request(
    rt: Runtime, model: ModelTurns, openai_server: ScriptedOpenAI, notifier: RecordingNotifier
) -> None:
    model.then({"type": "ClarificationRequest", "message": "What would you like me to work out?"})
    view = rt.launch(CALCULATOR, "hello!")

    assert (view.status, view.step, view.waiting_for) == ("waiting", "ask_user", "answer")
    assert view.question == "What would you like me to work out?"
    (notice,) = notifier.notices
    assert (notice.kind, notice.step, notice.text) == (
        "human",
        "ask_user",
        "What would you like me to work out?",
    )
    assert kinds(rt, view.id) == [
        "decide:Started",
        "decide:ModelOutput",
        "ask_user:Notified",
    ]
    # What went over the wire: the prompt file's system message, the thread as the user
    # message, one forced tool named after the step.
    (sent,) = openai_server.requests
    assert sent["messages"][0]["content"].startswith("You are calculator.")
    assert model.contexts == ["<user_input>hello!</user_input>\n\nWhat is the next step?"]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "decide"}}
    output = next(e for e in rt.events(view.id) if isinstance(e, ModelOutput))
    assert output.usage is not None and output.usage.input_tokens == 11


def test_multiply_3_and_4(rt: Runtime, model: ModelTurns) -> None:
    model.then(
        {"type": "Multiply", "a": 3, "b": 4},
        lambda seen: {
            "type": "DoneForNow",
            "message": f"3 times 4 is {last_value(seen, 'multiply_result'):g}",
        },
    )
    view = rt.launch(CALCULATOR, "multiply 3 and 4")

    assert view.status == "finished"
    assert view.output.message == "3 times 4 is 12"
    (result,) = [e for e in rt.events(view.id) if isinstance(e, ToolResult)]
    assert (result.step, result.result.value) == ("multiply", 12.0)
    assert "<multiply_result>value: 12.0</multiply_result>" in model.contexts[1]


def test_a_chain_multiply_divide_approved_add_done(
    openai_server: ScriptedOpenAI, tmp_path: Path, cache: Path, model: ModelTurns
) -> None:
    # Each operand after the first comes from the previous tool's result in the context.
    model.then(
        {"type": "Multiply", "a": 3, "b": 4},
        lambda seen: {"type": "Divide", "a": last_value(seen, "multiply_result"), "b": 2},
        lambda seen: {"type": "Add", "a": last_value(seen, "divide_result"), "b": 1},
        lambda seen: {
            "type": "DoneForNow",
            "message": f"(3 * 4) / 2 + 1 = {last_value(seen, 'add_result'):g}",
        },
    )
    db = tmp_path / "threads.db"
    with runtime(openai_server, db, cache) as first:
        view = first.launch(CALCULATOR, "multiply 3 and 4, divide by 2, then add 1")
    assert (view.status, view.step, view.question) == (
        "waiting",
        "approve_divide",
        "Divide 12.0 by 2.0?",
    )
    assert "divide:ToolStarted" not in kinds_in(db, cache, openai_server, view.id)

    # Approved later, by another runtime on the same database (as another process would).
    with runtime(openai_server, db, cache) as second:
        done = second.resume(view.id, request=view.request, approve=True, by="ana")
        assert done.status == "finished"
        assert done.output.message == "(3 * 4) / 2 + 1 = 7"
        results = [
            (e.step, e.result.value) for e in second.events(view.id) if isinstance(e, ToolResult)
        ]
        assert results == [("multiply", 12.0), ("divide", 6.0), ("add", 7.0)]
        approved = next(e for e in second.events(view.id) if isinstance(e, Approved))
        assert approved.by == "ana"
    assert len(openai_server.requests) == 4


def kinds_in(db: Path, cache: Path, server: ScriptedOpenAI, thread_id: str) -> list[str]:
    with runtime(server, db, cache) as rt:
        return kinds(rt, thread_id)


def test_divide_rejected_with_a_comment_and_the_next_proposal_follows_it(
    rt: Runtime, model: ModelTurns
) -> None:
    def follow_the_comment(seen: str) -> dict[str, object]:
        # A model reads the rejection's comment: "use 5 instead of 4".
        match = re.search(r"comment: use (\d+) instead of (\d+)", seen)
        assert match, f"the rejection's comment did not reach the model:\n{seen}"
        return {"type": "Divide", "a": 3, "b": int(match.group(1))}

    model.then(
        {"type": "Divide", "a": 3, "b": 4},
        follow_the_comment,
        lambda seen: {
            "type": "DoneForNow",
            "message": f"3 / 5 = {last_value(seen, 'divide_result'):g}",
        },
    )
    view = rt.launch(CALCULATOR, "divide 3 by 4")
    assert (view.step, view.question) == ("approve_divide", "Divide 3.0 by 4.0?")

    view = rt.resume(
        view.id, request=view.request, reject=True, comment="use 5 instead of 4", by="bob"
    )
    assert (view.status, view.step, view.question) == (
        "waiting",
        "approve_divide",
        "Divide 3.0 by 5.0?",
    )
    rejected = next(e for e in rt.events(view.id) if isinstance(e, Rejected))
    assert (rejected.by, rejected.comment) == ("bob", "use 5 instead of 4")
    rejection = "<approve_divide_rejected>\nby: bob\ncomment: use 5 instead of 4\n"
    assert rejection in model.contexts[1]
    assert "<divide_result>" not in model.contexts[1], "the rejected division never ran"

    done = rt.resume(view.id, request=view.request, approve=True)
    assert done.status == "finished" and done.output.message == "3 / 5 = 0.6"
    divisions = [e.result.value for e in rt.events(view.id) if isinstance(e, ToolResult)]
    assert divisions == [0.6]


def test_a_clarification_answered_with_lets_try_12_instead(
    rt: Runtime, model: ModelTurns, notifier: RecordingNotifier
) -> None:
    def use_the_answer(seen: str) -> dict[str, object]:
        match = re.search(r"<ask_user_answer>\ntext: lets try (\d+) instead\n", seen)
        assert match, f"the answer did not reach the model:\n{seen}"
        return {"type": "Multiply", "a": 3, "b": int(match.group(1))}

    model.then(
        {"type": "ClarificationRequest", "message": "Multiply 3 by which number?"},
        use_the_answer,
        lambda seen: {
            "type": "DoneForNow",
            "message": f"3 times 12 is {last_value(seen, 'multiply_result'):g}",
        },
    )
    view = rt.launch(CALCULATOR, "multiply 3 by the usual")
    assert (view.status, view.step, view.waiting_for) == ("waiting", "ask_user", "answer")

    done = rt.resume(view.id, request=view.request, answer="lets try 12 instead", by="carol")
    assert done.status == "finished" and done.output.message == "3 times 12 is 36"
    answered = next(e for e in rt.events(view.id) if isinstance(e, Answered))
    assert (answered.answer.text, answered.answer.by) == ("lets try 12 instead", "carol")
    assert "lets try 12 instead" in model.contexts[1]
    assert "lets try 12 instead" not in model.contexts[0]
    assert [n.step for n in notifier.notices] == ["ask_user"]
    assert sum(isinstance(e, Notified) for e in rt.events(view.id)) == 1
