"""A failed `llm` step's model calls were paid for, so they count (docs/language.md
"Budgets", docs/observability.md): the real openai + instructor client against the
scripted server, SQLite, the reports (`show --json`, `stats`) reading the store.

instructor adds up the usage of every attempt (its re-asks of an invalid output) and
hands the total over with the exception that ends the call; the step's StepFailed records
it, priced like a reply, so `max_tokens` / `max_cost` stop a thread that keeps failing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.runtime_helpers import RecordingNotifier
from tests.support.e2e import ModelTurns
from tests.support.openai_server import Reply, ScriptedOpenAI
from tests.test_budgets import runtime_for, thinker
from tests.test_budgets import with_budget as budgeted
from twelvefold.cli import cli
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.model import OpenAIModel
from twelvefold.runtime.store import SqliteStore
from twelvefold.runtime.types import StepFailed
from twelvefold.runtime.usage import records, totals

FIXTURES = Path(__file__).parent / "checks_fixtures"
MODEL = "priced-model"
__all__ = ["thinker"]  # the fixture, imported for these tests
CLAIM = {"order": "o-17", "amount": 40.0, "api_key": "sk-live-do-not-show"}


@pytest.fixture
def looper(thinker: Path) -> Path:
    """tests/test_budgets.py's thinker folder (1000 USD per million tokens)."""
    return thinker


def with_budget(folder: Path, budget: str) -> Path:
    """The thinker agent (an `llm` step that loops on itself) with `retries 5`."""
    path = budgeted(folder, budget)
    path.write_text(
        path.read_text().replace('prompt "decide.j2"', 'prompt "decide.j2"\n  retries 5')
    )
    return path


def always_invalid(server: ScriptedOpenAI) -> None:
    """Every reply is an output no declared type accepts, and costs 5000 + 5000 tokens."""
    server.responder = lambda body: Reply(
        arguments={"choice": {"type": "Nonsense"}}, usage=(5000, 5000)
    )


def test_show_and_stats_count_the_tokens_of_a_failed_step(
    openai_server: ScriptedOpenAI, looper: Path
) -> None:
    agent = with_budget(looper, "max_tokens 25000")  # crossed by the third attempt
    always_invalid(openai_server)
    db = looper / "t.db"  # where runtime_for keeps it
    with runtime_for(openai_server, looper, MODEL) as rt:
        thread_id = rt.launch(agent, "think").id
    result = CliRunner().invoke(cli, ["show", thread_id, "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)["usage"]
    assert (shown["model_calls"], shown["input_tokens"], shown["output_tokens"]) == (
        1,
        15_000,
        15_000,
    )
    result = CliRunner().invoke(cli, ["stats", "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)["thinker"]["usage"]
    assert (stats["input_tokens"], stats["output_tokens"]) == (15_000, 15_000)
    assert stats["cost_usd"] == pytest.approx(30.0)


def test_a_reply_cut_off_at_the_token_limit_counts_its_tokens(
    openai_server: ScriptedOpenAI, looper: Path
) -> None:
    agent = with_budget(looper, "max_tokens 100")
    openai_server.responder = lambda body: Reply(
        arguments={"choice": {"type": "Think", "thought": "hm"}},
        usage=(700, 4096),
        finish_reason="length",
    )
    with runtime_for(openai_server, looper, MODEL) as rt:
        view = rt.launch(agent, "think")
        events = rt.events(view.id)
    assert len(openai_server.requests) == 1
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert failed.error.type == "IncompleteOutput"
    assert failed.usage is not None
    assert (failed.usage.input_tokens, failed.usage.output_tokens) == (700, 4096)
    assert view.error is not None and view.error.type == "TokenBudgetExhausted"


def test_a_step_failed_without_a_reply_records_no_model_call(
    openai_server: ScriptedOpenAI, looper: Path
) -> None:
    agent = with_budget(looper, "max_tokens 100")
    openai_server.responder = lambda body: Reply(status=400, error="bad request")
    with runtime_for(openai_server, looper, MODEL) as rt:
        view = rt.launch(agent, "think")
        events = rt.events(view.id)
    (failed, *_) = [e for e in events if isinstance(e, StepFailed)]
    assert failed.usage is not None and failed.usage.input_tokens is None
    assert totals(records(events)).model_calls == 0


def refunds_with(tmp_path: Path, *, validator: str | None = None) -> Path:
    shutil.copytree(FIXTURES, tmp_path / "f")
    agent = tmp_path / "f" / "refunds.agent"
    text = agent.read_text()
    if validator is not None:
        text = text.replace("checks:refund_is_sane", validator)
    agent.write_text(text)
    return agent


def test_a_validator_that_breaks_still_counts_the_call_it_checked(
    openai_server: ScriptedOpenAI, tmp_path: Path
) -> None:
    # The validator breaks (a KeyError is no refusal): the step fails; the reply was paid.
    agent = refunds_with(tmp_path, validator="broken:validate")
    (tmp_path / "f" / "broken.py").write_text("def validate(output):\n    raise KeyError('oops')\n")
    ModelTurns(openai_server).then(Reply(arguments={"amount": 5, "note": "ok"}, usage=(300, 40)))
    with runtime_for(openai_server, tmp_path / "f", MODEL) as rt:
        view = rt.launch(agent, CLAIM)
        events = rt.events(view.id)
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert failed.usage is not None
    assert (failed.usage.input_tokens, failed.usage.output_tokens) == (300, 40)
    spent = totals(records(events))
    assert (spent.model_calls, spent.input_tokens, spent.output_tokens) == (1, 300, 40)
    assert view.to_json()["usage"]["input_tokens"] == 300


def test_a_judge_that_gives_no_verdict_counts_both_calls(
    openai_server: ScriptedOpenAI, tmp_path: Path
) -> None:
    agent = refunds_with(tmp_path)
    model = ModelTurns(openai_server)
    # The output passes the validator; the judge answers nonsense on each of its 3 tries.
    model.then(Reply(arguments={"amount": 5, "note": "ok"}, usage=(100, 10)))
    for _ in range(3):
        model.then(Reply(arguments={"nonsense": True}, usage=(1000, 1)))
    with runtime_for(openai_server, tmp_path / "f", MODEL) as rt:
        view = rt.launch(agent, CLAIM)
        events = rt.events(view.id)
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert failed.error.type == "JudgeError"
    assert failed.usage is not None
    assert (failed.usage.input_tokens, failed.usage.output_tokens) == (3100, 13)


def test_the_metrics_count_the_tokens_and_cost_of_a_failed_step(
    openai_server: ScriptedOpenAI, looper: Path
) -> None:
    from twelvefold.server.counters import ProcessMetrics

    agent = with_budget(looper, "max_tokens 25000")  # crossed by the third attempt
    always_invalid(openai_server)
    metrics = ProcessMetrics()
    with runtime_for(openai_server, looper, MODEL) as rt:
        metrics.install(rt.aio.engine)
        rt.launch(agent, "think")
    registry = metrics.registry
    labels = {"agent": "thinker", "model": "priced-model"}
    for direction in ("input", "output"):
        found = registry.get_sample_value(
            "twelvefold_model_tokens_total", {**labels, "direction": direction}
        )
        assert found == 15_000
    assert registry.get_sample_value("twelvefold_model_cost_usd_total", labels) == pytest.approx(
        30.0
    )


def test_a_step_that_succeeds_after_re_asks_counts_every_attempt(
    openai_server: ScriptedOpenAI, looper: Path
) -> None:
    agent = with_budget(looper, "max_tokens 100000")
    replies = iter(
        [
            Reply(arguments={"choice": {"type": "Nonsense"}}, usage=(100, 10)),
            Reply(arguments={"choice": {"type": "Done", "message": "ok"}}, usage=(100, 10)),
        ]
    )
    openai_server.responder = lambda body: next(replies)
    with runtime_for(openai_server, looper, MODEL) as rt:
        view = rt.launch(agent, "think")
    assert view.status == "finished"
    usage = view.to_json()["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (200, 20)


# ---- a budget stops the re-asks of one step -------------------------------------------


class OrdinaryStore(SqliteStore):
    """SQLite, but not exactly `SqliteStore`: the loop's ordinary path (runtime/fastpath.py
    takes only the store itself)."""


def invalid_and_counted(server: ScriptedOpenAI, usage: tuple[int, int]) -> list[tuple[int, int]]:
    """Every reply is an output no declared type accepts, reporting `usage`; the list
    returned holds the usage of each reply served, as the server reported it."""
    served: list[tuple[int, int]] = []

    def answer(body: dict[str, Any]) -> Reply:
        served.append(usage)
        return Reply(arguments={"choice": {"type": "Nonsense"}}, usage=usage)

    server.responder = answer
    return served


@pytest.mark.parametrize("store", [SqliteStore, OrdinaryStore], ids=["fast path", "ordinary"])
@pytest.mark.parametrize(
    ("budget", "reason"),
    [("max_tokens 25000", "TokenBudgetExhausted"), ("max_cost 25", "CostBudgetExhausted")],
)
def test_re_asks_stop_right_after_the_attempt_that_crosses_the_budget(
    openai_server: ScriptedOpenAI,
    looper: Path,
    store: type[SqliteStore],
    budget: str,
    reason: str,
) -> None:
    # `retries 20`, and every reply invalid: 10,000 tokens ($10) an attempt. The third
    # attempt crosses 25,000 tokens ($25); no fourth request is made.
    agent = budgeted(looper, budget)
    agent.write_text(
        agent.read_text().replace('prompt "decide.j2"', 'prompt "decide.j2"\n  retries 20')
    )
    served = invalid_and_counted(openai_server, (5000, 5000))
    real = OpenAIModel(
        model=MODEL, base_url=openai_server.base_url, api_key="t", transport_retries=0
    )
    with Runtime(store(looper / "t.db"), model=real, notifier=RecordingNotifier()) as rt:
        view = rt.launch(agent, "think")
        events = rt.events(view.id)
    assert len(openai_server.requests) == 3
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert failed.error.type == "InvalidOutput"
    assert "after 3 attempt(s)" in failed.error.message
    assert failed.usage is not None
    # What the event records is what the server reported, every attempt added up, priced.
    assert (failed.usage.input_tokens, failed.usage.output_tokens) == tuple(
        map(sum, zip(*served, strict=True))
    )
    assert failed.usage.cost_usd == pytest.approx(30.0)
    usage = view.to_json()["usage"]
    assert (usage["model_calls"], usage["input_tokens"], usage["output_tokens"]) == (
        1,
        15_000,
        15_000,
    )
    assert usage["cost_usd"] == pytest.approx(30.0)
    # The budget decided, as for any call that spends it: no target, so the thread failed.
    assert view.status == "failed"
    assert view.error is not None and view.error.type == reason


def test_a_step_stopped_by_its_budget_escalates_to_the_budgets_target(
    openai_server: ScriptedOpenAI, looper: Path
) -> None:
    agent = budgeted(looper, "max_tokens 100 -> stuck")
    agent.write_text(
        agent.read_text().replace('prompt "decide.j2"', 'prompt "decide.j2"\n  retries 20')
    )
    served = invalid_and_counted(openai_server, (10, 5))
    with runtime_for(openai_server, looper, MODEL) as rt:
        view = rt.launch(agent, "think")
        events = rt.events(view.id)
    # 15 tokens an attempt: the seventh reaches 105, past 100; then `stuck` asks a person.
    assert len(openai_server.requests) == len(served) == 7
    assert (view.status, view.step) == ("waiting", "stuck")
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert failed.usage is not None
    assert (failed.usage.input_tokens, failed.usage.output_tokens) == (70, 35)
    usage = view.to_json()["usage"]
    assert (usage["model_calls"], usage["input_tokens"], usage["output_tokens"]) == (1, 70, 35)


def test_a_judges_re_asks_stop_once_the_step_has_spent_its_budget(
    openai_server: ScriptedOpenAI, tmp_path: Path
) -> None:
    agent = refunds_with(tmp_path)
    agent.write_text(
        agent.read_text()
        .replace("max_steps 20", "max_steps 20 max_tokens 1000")
        .replace("retries 2", "retries 20")
        .replace("on error -> gave_up", "")  # no `final` to fail to: the budget decides
    )
    model = ModelTurns(openai_server)
    # The output passes the validator (500 tokens); the judge answers nonsense (300 each):
    # its second answer crosses 1000, and it is asked no more.
    model.then(Reply(arguments={"amount": 5, "note": "ok"}, usage=(400, 100)))
    for _ in range(2):
        model.then(Reply(arguments={"nonsense": True}, usage=(250, 50)))
    with runtime_for(openai_server, tmp_path / "f", MODEL) as rt:
        view = rt.launch(agent, CLAIM)
        events = rt.events(view.id)
    model.check()
    assert len(openai_server.requests) == 3
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert failed.error.type == "JudgeError"
    assert failed.usage is not None
    assert (failed.usage.input_tokens, failed.usage.output_tokens) == (900, 200)
    assert view.status == "failed"
    assert view.error is not None and view.error.type == "TokenBudgetExhausted"


def test_a_judge_is_not_asked_once_the_call_it_judges_spent_the_budget(
    openai_server: ScriptedOpenAI, tmp_path: Path
) -> None:
    # The checked call alone (600 tokens) crosses `max_tokens 500`. Its output is discarded
    # by the budget whatever the judge says, and no model call starts once a budget is
    # spent: the judge is not asked, the step fails, the budget decides (no refund paid).
    agent = refunds_with(tmp_path)
    agent.write_text(
        agent.read_text()
        .replace("max_steps 20", "max_steps 20 max_tokens 500")
        .replace("on error -> gave_up", "")
    )
    model = ModelTurns(openai_server)
    model.then(Reply(arguments={"amount": 5, "note": "ok"}, usage=(500, 100)))
    with runtime_for(openai_server, tmp_path / "f", MODEL) as rt:
        view = rt.launch(agent, CLAIM)
        events = rt.events(view.id)
    model.check()
    assert len(openai_server.requests) == 1  # the judge was not asked
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert failed.error.type == "JudgeError"
    assert "budget" in failed.error.message
    assert failed.usage is not None
    assert (failed.usage.input_tokens, failed.usage.output_tokens) == (500, 100)
    assert view.status == "failed"
    assert view.error is not None and view.error.type == "TokenBudgetExhausted"


def test_under_a_budget_a_judge_whose_reply_has_no_token_count_spends_what_was_left(
    openai_server: ScriptedOpenAI, tmp_path: Path
) -> None:
    # The judge's call is a model call like the step's: one the budget cannot count
    # fails the step as spending what was left (no refund is paid on that verdict).
    agent = refunds_with(tmp_path)
    agent.write_text(
        agent.read_text()
        .replace("max_steps 20", "max_steps 20 max_tokens 5000")
        .replace("on error -> gave_up", "")
    )
    model = ModelTurns(openai_server)
    model.then(Reply(arguments={"amount": 5, "note": "ok"}, usage=(400, 100)))
    model.then(Reply(arguments={"accept": True, "reason": "fine"}, usage=None))
    with runtime_for(openai_server, tmp_path / "f", MODEL) as rt:
        view = rt.launch(agent, CLAIM)
        events = rt.events(view.id)
    model.check()
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert failed.error.type == "TokenCountError"
    assert view.status == "failed"
    assert view.error is not None and view.error.type == "TokenBudgetExhausted"


@pytest.mark.parametrize("store", [SqliteStore, OrdinaryStore], ids=["fast path", "ordinary"])
def test_a_failed_step_whose_cost_is_no_number_of_dollars_spends_the_cost_budget(
    openai_server: ScriptedOpenAI, looper: Path, store: type[SqliteStore]
) -> None:
    # 120 million tokens at the dearest price there is cost $1.2 million: more than one
    # call may record (`MAX_CALL_COST`). As for a reply, the step fails with `CostError`
    # and the cost budget counts the call as spending what was left of it.
    (looper / "twelvefold.toml").write_text(
        '[prices]\n"priced-model" = { input = 10000, output = 10000 }\n'
    )
    agent = with_budget(looper, "max_cost 5 -> stuck")
    invalid_and_counted(openai_server, (60_000_000, 60_000_000))
    real = OpenAIModel(
        model=MODEL, base_url=openai_server.base_url, api_key="t", transport_retries=0
    )
    with Runtime(store(looper / "t.db"), model=real, notifier=RecordingNotifier()) as rt:
        view = rt.launch(agent, "think")
        events = rt.events(view.id)
    assert len(openai_server.requests) == 1
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert failed.error.type == "CostError"
    assert failed.usage is not None and failed.usage.cost_usd is None
    assert (failed.usage.input_tokens, failed.usage.output_tokens) == (60_000_000, 60_000_000)
    assert (view.status, view.step) == ("waiting", "stuck")


# ---- a call cut at its deadline (`model_call_timeout`) after re-asks -------------------


@pytest.mark.parametrize("store", [SqliteStore, OrdinaryStore], ids=["fast path", "ordinary"])
def test_a_call_cut_at_its_deadline_counts_the_attempts_that_came_back(
    openai_server: ScriptedOpenAI, looper: Path, store: type[SqliteStore]
) -> None:
    # Two invalid replies (re-asked), then a third that never ends: `model_call_timeout`
    # cuts the call. The two replies were paid for: the step's failure records them, and
    # the reports (show, threads, stats) and the budget count them.
    (looper / "twelvefold.toml").write_text(
        'model_call_timeout = 1\n[prices]\n"priced-model" = { input = 1000, output = 1000 }\n'
    )
    agent = with_budget(looper, "max_tokens 100000")
    served: list[tuple[int, int]] = []

    def answer(body: dict[str, Any]) -> Reply:
        if len(served) == 2:
            return Reply(arguments={"choice": {"type": "Done", "message": "ok"}}, drip=0.2)
        served.append((400 + len(served), 30 + len(served)))
        return Reply(arguments={"choice": {"type": "Nonsense"}}, usage=served[-1])

    openai_server.responder = answer
    real = OpenAIModel(
        model=MODEL, base_url=openai_server.base_url, api_key="t", transport_retries=0
    )
    db = looper / "t.db"
    with Runtime(store(db), model=real, notifier=RecordingNotifier()) as rt:
        view = rt.launch(agent, "think")
        events = rt.events(view.id)
    assert len(openai_server.requests) == 3
    sent = tuple(map(sum, zip(*served, strict=True)))
    assert sent == (801, 61)
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert failed.error.type == "APITimeoutError"
    assert failed.usage is not None
    assert (failed.usage.input_tokens, failed.usage.output_tokens) == sent
    assert failed.usage.cost_usd == pytest.approx(0.862)
    shown = json.loads(CliRunner().invoke(cli, ["show", view.id, "--db", str(db), "--json"]).output)
    assert (shown["usage"]["input_tokens"], shown["usage"]["output_tokens"]) == sent
    listed = CliRunner().invoke(cli, ["threads", "--db", str(db), "--json"])
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.output)
    assert (row["usage"]["input_tokens"], row["usage"]["output_tokens"]) == sent
    result = CliRunner().invoke(cli, ["stats", "--db", str(db), "--json"])
    stats = json.loads(result.output)["thinker"]["usage"]
    assert (stats["input_tokens"], stats["output_tokens"]) == sent
    assert stats["cost_usd"] == pytest.approx(0.862)


def test_a_call_cut_at_its_deadline_after_re_asks_counts_toward_the_budget(
    openai_server: ScriptedOpenAI, looper: Path
) -> None:
    # The step fails at its deadline after two invalid replies (990 tokens) and is taken
    # again (`on error -> decide`); the next reply (18 tokens) leads on to `decide`, but
    # with the 990 counted it crosses `max_tokens 1000`: the budget sends the thread to
    # `stuck` instead (not counted, the thread would go on and finish).
    (looper / "twelvefold.toml").write_text("model_call_timeout = 1\n")
    agent = with_budget(looper, "max_tokens 1000 -> stuck\n  max_errors 3 -> stuck")
    agent.write_text(
        agent.read_text().replace("on Done -> done", "on Done -> done\n  on error -> decide")
    )
    replies = iter(
        [
            Reply(arguments={"choice": {"type": "Nonsense"}}, usage=(400, 95)),
            Reply(arguments={"choice": {"type": "Nonsense"}}, usage=(400, 95)),
            Reply(arguments={"choice": {"type": "Done", "message": "ok"}}, drip=0.2),
            Reply(arguments={"choice": {"type": "Think", "thought": "hm"}}),
        ]
    )
    openai_server.responder = lambda body: next(
        replies, Reply(arguments={"choice": {"type": "Done", "message": "ok"}})
    )
    with runtime_for(openai_server, looper, MODEL) as rt:
        view = rt.launch(agent, "think")
    assert len(openai_server.requests) == 4
    assert (view.status, view.step) == ("waiting", "stuck")
