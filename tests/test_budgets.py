"""Budgets (`max_cost`, `max_tokens`; docs/language.md "Budgets"), end to end: the real
openai + instructor client against the scripted server (11 input and 7 output tokens per
reply), SQLite, the reducer counting what the `llm` steps' events record. A thread that
has spent its budget starts no model call: the server's request count shows it."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.runtime_helpers import RecordingNotifier
from tests.support.e2e import ModelTurns
from tests.support.openai_server import Reply, ScriptedOpenAI
from twelvefold.runtime.api import Runtime, ThreadView
from twelvefold.runtime.model import OpenAIModel
from twelvefold.runtime.spec import AgentSpec
from twelvefold.runtime.store import MemoryStore, SqliteStore
from twelvefold.runtime.types import ModelOutput, OutputRejected, StepFailed
from twelvefold.testing.coverage import describe_edge
from twelvefold.testing.properties import PROPERTIES
from twelvefold.testing.runner import run_property
from twelvefold.testing.subject import Subject, load_subject
from twelvefold.testing.suite import run_suite

FIXTURES = Path(__file__).parent / "checks_fixtures"
CLAIM = {"order": "o-17", "amount": 40.0, "api_key": "sk-live-do-not-show"}
PER_CALL = 11 + 7
"""Tokens the scripted server reports for every reply."""

THINKER = """
agent thinker {
  input string
  max_steps 100 -> stuck
  BUDGET
  start decide
}
type Think { thought: string }
type Done { message: string }
llm decide -> Think | Done {
  prompt "decide.j2"
  on Think -> decide
  on Done -> done
}
human stuck {
  ask "Out of budget. Go on?"
  next decide
}
final done(Done)
"""


def runtime_for(server: ScriptedOpenAI, folder: Path, model: str) -> Runtime:
    real = OpenAIModel(model=model, base_url=server.base_url, api_key="t", transport_retries=0)
    return Runtime(SqliteStore(folder / "t.db"), model=real, notifier=RecordingNotifier())


@pytest.fixture
def thinker(tmp_path: Path) -> Path:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "decide.j2").write_text("{{ context }}\n")
    # 1000 USD per million tokens: one reply (18 tokens) costs 0.018 USD.
    (tmp_path / "twelvefold.toml").write_text(
        '[prices]\n"priced-model" = { input = 1000, output = 1000 }\n'
    )
    return tmp_path


def with_budget(folder: Path, budget: str) -> Path:
    path = folder / "thinker.agent"
    path.write_text(THINKER.replace("BUDGET", budget))
    return path


def always_thinking(server: ScriptedOpenAI) -> None:
    server.responder = lambda body: Reply(arguments={"choice": {"type": "Think", "thought": "hm"}})


def test_a_thread_over_its_cost_budget_goes_to_its_target_and_calls_the_model_no_more(
    openai_server: ScriptedOpenAI, thinker: Path
) -> None:
    agent = with_budget(thinker, "max_cost 0.05 -> stuck")
    always_thinking(openai_server)
    with runtime_for(openai_server, thinker, "priced-model") as rt:
        view = rt.launch(agent, "think")
        # 0.018, 0.036, 0.054: the third call reaches 0.05; no fourth call starts.
        assert (view.status, view.step) == ("waiting", "stuck")
        assert len(openai_server.requests) == 3
        costs = [e.usage.cost_usd for e in rt.events(view.id) if isinstance(e, ModelOutput)]
        assert costs == [pytest.approx(0.018)] * 3
        # A person's answer goes on with a fresh budget: three more calls, then `stuck`.
        assert view.request is not None
        again = rt.resume(view.id, answer="go on", by="ana", request=view.request)
        assert (again.status, again.step) == ("waiting", "stuck")
        assert len(openai_server.requests) == 6


def test_the_recorded_cost_decides_so_a_new_price_never_changes_a_replay(
    openai_server: ScriptedOpenAI, thinker: Path
) -> None:
    agent = with_budget(thinker, "max_cost 0.05 -> stuck")
    always_thinking(openai_server)
    with runtime_for(openai_server, thinker, "priced-model") as rt:
        view = rt.launch(agent, "think")
        before = rt.replay(view.id)
    (thinker / "twelvefold.toml").write_text(
        '[prices]\n"priced-model" = { input = 0, output = 0 }\n'
    )
    with runtime_for(openai_server, thinker, "priced-model") as rt:
        assert rt.replay(view.id) == before
        assert before.step == "stuck"


def test_a_token_budget_without_a_target_fails_the_thread_and_a_retry_gives_it_back(
    openai_server: ScriptedOpenAI, thinker: Path
) -> None:
    agent = with_budget(thinker, f"max_tokens {2 * PER_CALL}")
    always_thinking(openai_server)
    with runtime_for(openai_server, thinker, "scripted-model") as rt:
        view = rt.launch(agent, "think")
        assert view.status == "failed"
        assert view.error is not None and view.error.type == "TokenBudgetExhausted"
        assert len(openai_server.requests) == 2
        again = rt.retry(view.id, by="ana")
        assert again.status == "failed" and len(openai_server.requests) == 4


def test_a_cost_budget_refuses_a_model_it_cannot_price_before_calling_it(
    openai_server: ScriptedOpenAI, thinker: Path
) -> None:
    agent = with_budget(thinker, "max_cost 1 -> stuck")
    always_thinking(openai_server)
    with runtime_for(openai_server, thinker, "nobody-prices-me") as rt:
        view = rt.launch(agent, "think")
        events = rt.events(view.id)
    assert view.status == "failed"
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert failed.error.type == "UnpricedModel"
    assert "nobody-prices-me" in failed.error.message
    assert openai_server.requests == []


def test_the_judges_call_counts_and_an_over_budget_step_is_not_asked_again(
    openai_server: ScriptedOpenAI, tmp_path: Path
) -> None:
    shutil.copytree(FIXTURES, tmp_path / "f")
    agent = tmp_path / "f" / "refunds.agent"
    # The refused output and its judge: 36 tokens, past 30. Without the judge's 18, the
    # step would be asked again (retries 2).
    agent.write_text(agent.read_text().replace("max_steps 20", "max_steps 20 max_tokens 30"))
    model = ModelTurns(openai_server)
    model.then(
        Reply(arguments={"amount": 500, "note": "x"}),
        Reply(arguments={"accept": False, "reason": "too much"}),
    )
    with runtime_for(openai_server, tmp_path / "f", "scripted-model") as rt:
        view = rt.launch(agent, CLAIM)
        events = rt.events(view.id)
    model.check()
    assert view.status == "failed"
    assert view.error is not None and view.error.type == "TokenBudgetExhausted"
    (rejected,) = [e for e in events if isinstance(e, OutputRejected)]
    assert rejected.usage is not None
    assert (rejected.usage.input_tokens, rejected.usage.output_tokens) == (22, 14)
    assert len(openai_server.requests) == 2


# ---- the property tests ----------------------------------------------------------------


def budget_subject(folder: Path, budget: str) -> Subject:
    agent = with_budget(folder, budget)
    return load_subject(agent, prompts_dir=folder / "prompts", cache_dir=folder / "cache")


@pytest.mark.parametrize("budget", ["max_cost 0.05 -> stuck", "max_tokens 500"])
def test_an_agent_with_a_budget_passes_every_property(thinker: Path, budget: str) -> None:
    subject = budget_subject(thinker, budget)
    report = run_suite(subject, examples=80, seed=0)
    assert not report.failed, "\n\n".join(str(o.failure) for o in report.failed)
    unreached = [describe_edge(subject.spec.edges[i]) for i in report.unreachable()]
    assert not [u for u in unreached if "max_cost" in u]


def test_the_budget_property_catches_a_reducer_that_ignores_the_budget(
    thinker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    subject = budget_subject(thinker, "max_cost 0.05 -> stuck")
    prop = next(p for p in PROPERTIES if p.name == "budgets_stop_the_model")
    assert run_property(subject, prop, examples=80, seed=0).failure is None
    monkeypatch.setattr(AgentSpec, "over_budget", lambda self, state: None)  # the bug
    failure = run_property(subject, prop, examples=80, seed=0).failure
    assert failure is not None
    assert "max_cost spent" in str(failure)


def launched_with_input_tokens(
    server: ScriptedOpenAI, thinker: Path, budget: str, count: object
) -> tuple[ThreadView, StepFailed]:
    """A thinker with `budget` launched against a model that reports `count` input
    tokens: its view and the one step failure recorded."""
    agent = with_budget(thinker, budget)
    server.responder = lambda body: Reply(
        arguments={"choice": {"type": "Think", "thought": "hm"}}, usage=(count, 7)
    )
    with runtime_for(server, thinker, "priced-model") as rt:
        view = rt.launch(agent, "think")
        events = rt.events(view.id)
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    return view, failed


@pytest.mark.parametrize("budget", ["max_cost 0.05 -> stuck", "max_tokens 1000 -> stuck"])
@pytest.mark.parametrize("count", [10**400, 100_000_001])
def test_a_token_count_out_of_bounds_is_never_recorded_and_spends_the_budget(
    openai_server: ScriptedOpenAI, thinker: Path, budget: str, count: int
) -> None:
    """An endpoint reporting more tokens than `MAX_CALL_TOKENS` (10**400 would also cost
    more than a float holds): the step fails with `TokenCountError`, in a message of
    reasonable length, nothing of the count is recorded, and the budget counts the call
    as spending what was left of it."""
    view, failed = launched_with_input_tokens(openai_server, thinker, budget, count)
    assert failed.error.type == "TokenCountError"
    assert "100,000,000" in failed.error.message and len(failed.error.message) < 300
    assert failed.usage is None or failed.usage.input_tokens is None
    assert (view.status, view.step) == ("waiting", "stuck")  # the budget decided
    assert len(openai_server.requests) == 1
    assert view.usage.cost_usd == 0 and view.usage.input_tokens == 0
    with sqlite3.connect(thinker / "t.db") as db:
        bodies = [row[0] for row in db.execute("SELECT body FROM events")]
    assert not any("Infinity" in body or "0" * 30 in body for body in bodies)


@pytest.mark.parametrize("count", [-5, 1.5])
def test_a_negative_or_fractional_token_count_fails_the_step(
    openai_server: ScriptedOpenAI, thinker: Path, count: object
) -> None:
    """A count that is not a whole number from 0 fails the step as one above the bound
    does: read as "no count", the call's cost would be understated (input tokens 0)."""
    budget = "max_tokens 1000 -> stuck"
    view, failed = launched_with_input_tokens(openai_server, thinker, budget, count)
    assert failed.error.type == "TokenCountError"
    assert repr(count) in failed.error.message
    assert failed.usage is None or failed.usage.input_tokens is None
    assert (view.status, view.step) == ("waiting", "stuck")  # the budget decided
    assert len(openai_server.requests) == 1


@pytest.mark.parametrize(
    ("usage", "counted"),
    [
        ({"total_tokens": 500}, (0, 500)),
        ({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 500}, (0, 500)),
        ({"prompt_tokens": 100, "total_tokens": 500}, (100, 400)),
        ({"completion_tokens": 50, "total_tokens": 500}, (450, 50)),
    ],
    ids=["total only", "a total above both sides", "total and input", "total and output"],
)
def test_a_reply_giving_its_total_tokens_counts_them(
    openai_server: ScriptedOpenAI,
    thinker: Path,
    usage: dict[str, int],
    counted: tuple[int | None, int],
) -> None:
    # An endpoint may send only `total_tokens`, or the total and one side: the tokens it
    # did count are spent. Read as no count, they counted as nothing, and a budget never
    # stopped the thread (a red team's endpoint took 855 calls under `max_tokens 1000`).
    # A missing side is the total less the other; with neither side, the total counts as
    # output tokens (the dearer kind: the cost is not under-counted).
    agent = with_budget(thinker, "max_tokens 1000 -> stuck")
    openai_server.responder = lambda body: Reply(
        arguments={"choice": {"type": "Think", "thought": "hm"}}, usage=usage
    )
    with runtime_for(openai_server, thinker, "priced-model") as rt:
        view = rt.launch(agent, "think")
        assert (view.status, view.step) == ("waiting", "stuck")
        assert len(openai_server.requests) == 2  # 500 + 500 reaches 1000
        outputs = [e for e in rt.events(view.id) if isinstance(e, ModelOutput)]
    tokens = [(e.usage.input_tokens, e.usage.output_tokens) for e in outputs]
    assert tokens == [counted] * 2
    assert all(e.usage.cost_usd == pytest.approx(0.5) for e in outputs)  # 500 at $1000/M


@pytest.mark.parametrize("budget", ["max_tokens 1000 -> stuck", "max_cost 5 -> stuck"])
@pytest.mark.parametrize(
    "usage",
    [
        None,
        {"prompt_tokens": 0},
        {"completion_tokens": 0},
        {"prompt_tokens": 500, "total_tokens": 2},
    ],
    ids=["none", "input only", "output only", "a total below a side"],
)
@pytest.mark.parametrize("memory", [False, True], ids=["sqlite", "memory"])
def test_under_a_budget_a_reply_with_no_token_count_spends_what_was_left(
    openai_server: ScriptedOpenAI,
    thinker: Path,
    budget: str,
    usage: dict[str, int] | None,
    memory: bool,
) -> None:
    # A budget counts tokens the endpoint reports. One that reports none would make every
    # call free and the budget never stop the thread (a red team's endpoint took 1,000
    # calls under `max_cost 0.01`). Under a budget such a call counts as spending what was
    # left of it, as a count gone wrong does: the budget decides at once.
    # One side alone, or a total that cannot tell the other side, is no count of it.
    agent = with_budget(thinker, budget)
    openai_server.responder = lambda body: Reply(
        arguments={"choice": {"type": "Think", "thought": "hm"}}, usage=usage
    )
    real = OpenAIModel(
        model="priced-model", base_url=openai_server.base_url, api_key="t", transport_retries=0
    )
    store = MemoryStore() if memory else SqliteStore(thinker / "t.db")
    with Runtime(store, model=real, notifier=RecordingNotifier()) as rt:
        view = rt.launch(agent, "think")
        events = rt.events(view.id)
    assert (view.status, view.step) == ("waiting", "stuck")
    assert len(openai_server.requests) == 1
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert failed.error.type == "TokenCountError"
    assert "no token counts" in failed.error.message


def test_without_a_budget_a_reply_with_no_token_count_counts_as_nothing(
    openai_server: ScriptedOpenAI, thinker: Path
) -> None:
    agent = with_budget(thinker, "")
    replies = iter([{"type": "Think", "thought": "hm"}, {"type": "Done", "message": "ok"}])
    openai_server.responder = lambda body: Reply(arguments={"choice": next(replies)}, usage=None)
    with runtime_for(openai_server, thinker, "priced-model") as rt:
        view = rt.launch(agent, "think")
    assert view.status == "finished"
    assert view.to_json()["usage"]["input_tokens"] == 0


def _launched_and_shown(
    server: ScriptedOpenAI, folder: Path, budget: str, model: str
) -> tuple[ThreadView, list[str]]:
    """A thinker thread launched under `budget`, and what `twelvefold show` prints of it."""
    from click.testing import CliRunner

    from twelvefold.cli import cli

    agent = with_budget(folder, budget)
    with runtime_for(server, folder, model) as rt:
        view = rt.launch(agent, "think")
    result = CliRunner().invoke(cli, ["show", view.id, "--db", str(folder / "t.db")])
    assert result.exit_code == 0, result.output
    return view, result.stdout.splitlines()


def test_show_says_where_a_budget_moved_the_thread(
    openai_server: ScriptedOpenAI, thinker: Path
) -> None:
    """A red team (rt9) found `show` silent about it: the log went from `decide` to
    `stuck` with no word of why (the move is the reducer's; no event records it)."""
    always_thinking(openai_server)
    _, lines = _launched_and_shown(openai_server, thinker, "max_cost 0.05 -> stuck", "priced-model")
    said = [(number, line) for number, line in enumerate(lines) if line.startswith("  --")]
    assert [line for _, line in said] == ["  -- max_cost spent ($0.0540 of $0.05): on to `stuck`"]
    ((number, _),) = said
    assert lines[number - 1].startswith("   4  decide ")  # after the call that spent it


def test_show_says_a_budget_without_a_target_failed_the_thread(
    openai_server: ScriptedOpenAI, thinker: Path
) -> None:
    always_thinking(openai_server)
    budget = f"max_tokens {2 * PER_CALL}"
    _, lines = _launched_and_shown(openai_server, thinker, budget, "scripted-model")
    said = [line for line in lines if line.startswith("  --")]
    assert said == ["  -- max_tokens spent (36 of 36 tokens): the thread failed"]


def test_show_says_nothing_of_a_budget_a_thread_did_not_spend(
    openai_server: ScriptedOpenAI, thinker: Path
) -> None:
    openai_server.responder = lambda body: Reply(
        arguments={"choice": {"type": "Done", "message": "ok"}}
    )
    view, lines = _launched_and_shown(openai_server, thinker, "max_cost 5 -> stuck", "priced-model")
    assert view.status == "finished"
    assert [line for line in lines if line.startswith("  --")] == []


INVALID = {"choice": {"type": "Think"}}  # no `thought`: re-asked (`retries`)
VALID = {"choice": {"type": "Think", "thought": "hm"}}


def scripted(server: ScriptedOpenAI, *replies: Reply) -> None:
    queue = iter(replies)
    server.responder = lambda body: next(queue)


def with_retries(folder: Path, budget: str) -> Path:
    path = with_budget(folder, budget)
    path.write_text(
        path.read_text().replace('prompt "decide.j2"', 'prompt "decide.j2"\n  retries 3')
    )
    return path


@pytest.mark.parametrize(
    ("first", "later", "asked"),
    [((300, 100), None, 2), ((300, 100), {"prompt_tokens": 6}, 2), (None, (5, 5), 1)],
    ids=["a re-ask with no count", "a re-ask with one side", "a first try with no count"],
)
@pytest.mark.parametrize("memory", [False, True], ids=["sqlite", "memory"])
def test_under_a_budget_an_attempt_with_no_token_count_spends_what_was_left(
    openai_server: ScriptedOpenAI,
    thinker: Path,
    first: tuple[int, int] | None,
    later: tuple[int, int] | dict[str, int] | None,
    asked: int,
    memory: bool,
) -> None:
    """A red team (rt13) found a missing count added nothing once another attempt of the
    call had reported one: 300→100 tokens, then a valid re-ask with no count, was recorded
    as 300→100 (the re-ask was free); no count, then 5→5, as 5→5. One uncountable attempt
    makes the call uncountable, and no re-ask follows it."""
    agent = with_retries(thinker, "max_tokens 1000 -> stuck")
    scripted(
        openai_server, Reply(arguments=INVALID, usage=first), Reply(arguments=VALID, usage=later)
    )
    real = OpenAIModel(
        model="priced-model", base_url=openai_server.base_url, api_key="t", transport_retries=0
    )
    store = MemoryStore() if memory else SqliteStore(thinker / "t.db")
    with Runtime(store, model=real, notifier=RecordingNotifier()) as rt:
        view = rt.launch(agent, "think")
        events = rt.events(view.id)
    assert (view.status, view.step) == ("waiting", "stuck")
    assert len(openai_server.requests) == asked
    assert not [e for e in events if isinstance(e, ModelOutput)]
    (failed,) = [e for e in events if isinstance(e, StepFailed)]
    assert failed.error.type == "TokenCountError", failed.error


def test_without_a_budget_a_call_with_an_uncounted_attempt_has_unknown_counts(
    openai_server: ScriptedOpenAI, thinker: Path
) -> None:
    agent = with_retries(thinker, "")
    scripted(
        openai_server,
        Reply(arguments=INVALID, usage=(300, 100)),
        Reply(arguments={"choice": {"type": "Done", "message": "ok"}}, usage=None),
    )
    with runtime_for(openai_server, thinker, "priced-model") as rt:
        view = rt.launch(agent, "think")
        (output,) = [e for e in rt.events(view.id) if isinstance(e, ModelOutput)]
    assert view.status == "finished"
    assert output.usage is not None
    assert (output.usage.input_tokens, output.usage.output_tokens) == (None, None)
