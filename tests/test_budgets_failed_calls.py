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

import pytest
from click.testing import CliRunner

from tests.support.e2e import ModelTurns
from tests.support.openai_server import Reply, ScriptedOpenAI
from tests.test_budgets import runtime_for, thinker
from tests.test_budgets import with_budget as budgeted
from twelvefold.cli import cli
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


@pytest.mark.parametrize("budget", ["max_tokens 100", "max_cost 0.05"])
def test_a_step_that_keeps_failing_spends_its_budget_and_the_thread_stops(
    openai_server: ScriptedOpenAI, looper: Path, budget: str
) -> None:
    agent = with_budget(looper, budget)
    always_invalid(openai_server)
    with runtime_for(openai_server, looper, MODEL) as rt:
        view = rt.launch(agent, "think")
        events = rt.events(view.id)
    # One failed step: the first try and its 5 re-asks, 60,000 tokens; then no more calls.
    assert len(openai_server.requests) == 6
    assert view.status == "failed"
    assert view.error is not None
    assert view.error.type in ("TokenBudgetExhausted", "CostBudgetExhausted")
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert failed.error.type == "InvalidOutput"
    assert failed.usage is not None
    assert (failed.usage.input_tokens, failed.usage.output_tokens) == (30_000, 30_000)
    assert failed.usage.cost_usd == pytest.approx(60.0)
    usage = view.to_json()["usage"]
    assert (usage["model_calls"], usage["input_tokens"], usage["output_tokens"]) == (
        1,
        30_000,
        30_000,
    )
    assert usage["cost_usd"] == pytest.approx(60.0)


def test_show_and_stats_count_the_tokens_of_a_failed_step(
    openai_server: ScriptedOpenAI, looper: Path
) -> None:
    agent = with_budget(looper, "max_tokens 100")
    always_invalid(openai_server)
    db = looper / "t.db"  # where runtime_for keeps it
    with runtime_for(openai_server, looper, MODEL) as rt:
        thread_id = rt.launch(agent, "think").id
    result = CliRunner().invoke(cli, ["show", thread_id, "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)["usage"]
    assert (shown["model_calls"], shown["input_tokens"], shown["output_tokens"]) == (
        1,
        30_000,
        30_000,
    )
    result = CliRunner().invoke(cli, ["stats", "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)["thinker"]["usage"]
    assert (stats["input_tokens"], stats["output_tokens"]) == (30_000, 30_000)
    assert stats["cost_usd"] == pytest.approx(60.0)


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

    agent = with_budget(looper, "max_tokens 100")
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
        assert found == 30_000
    assert registry.get_sample_value("twelvefold_model_cost_usd_total", labels) == pytest.approx(
        60.0
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
