"""A cassette keeps each call's token counts, so a replay shows the tokens and cost the
recorded run had, and budgets (`max_tokens`, `max_cost`) can be exercised offline.

Before, `--record` stored no usage: every replayed call cost 0 tokens and no cost, so a
budget could never be reached from a cassette.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from tests.support.generated import EXAMPLES
from tests.support.openai_server import ScriptedOpenAI
from tests.test_cassette import complete, request
from twelvefold.runtime.api import Runtime, ThreadView
from twelvefold.runtime.cassette import CassetteError, CassettePlayer, CassetteRecorder
from twelvefold.runtime.model import ModelError, OpenAIModel
from twelvefold.runtime.notify import LogNotifier
from twelvefold.runtime.store import SqliteStore
from twelvefold.runtime.types import Event, ModelOutput, StepFailed


def test_recorded_token_counts_are_in_the_entry_and_replayed(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"
    with ScriptedOpenAI() as server:
        server.reply_tool({"choice": {"type": "Multiply", "a": 3, "b": 4}}, usage=(120, 30))
        real = OpenAIModel(base_url=server.base_url, api_key="k", transport_retries=0)
        recorded = complete(CassetteRecorder(real, cassette), request(1))
    (entry,) = [json.loads(line) for line in cassette.read_text().splitlines()]
    assert entry["usage"] == {"input_tokens": 120, "output_tokens": 30}

    replayed = complete(CassettePlayer(cassette), request(1))
    assert replayed.output == recorded.output
    assert (replayed.usage.input_tokens, replayed.usage.output_tokens) == (120, 30)
    assert replayed.usage.cost_usd is None  # priced by the runtime, as a live call is


def test_a_failed_calls_paid_tokens_are_recorded_and_replayed(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"
    with ScriptedOpenAI() as server:  # two invalid replies: the call fails, both were paid
        server.reply_tool({"choice": {"type": "Multiply"}}, usage=(10, 5))
        server.reply_tool({"choice": {"type": "Multiply", "a": 1}}, usage=(10, 5))
        real = OpenAIModel(base_url=server.base_url, api_key="k", transport_retries=0)
        with pytest.raises(ModelError) as recorded:
            complete(CassetteRecorder(real, cassette), request(1))
    assert recorded.value.usage is not None
    with pytest.raises(ModelError) as replayed:
        complete(CassettePlayer(cassette), request(1))
    assert replayed.value.error == recorded.value.error
    assert replayed.value.usage is not None
    assert (
        (replayed.value.usage.input_tokens, replayed.value.usage.output_tokens)
        == (
            recorded.value.usage.input_tokens,
            recorded.value.usage.output_tokens,
        )
        == (20, 10)
    )


def test_an_entry_without_usage_replays_as_before(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"
    cassette.write_text(
        '{"agent": "calculator", "step": "decide", "seq": 1, "type": "DoneForNow",'
        ' "output": {"message": "12"}}\n'
    )
    reply = complete(CassettePlayer(cassette), request(1))
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (None, None)


@pytest.mark.parametrize(
    ("usage", "problem"),
    [
        ('"lots"', "`usage` is a JSON string, not an object"),
        ('{"input_tokens": -1}', "`usage.input_tokens` is not a token count"),
        ('{"output_tokens": 1.5}', "`usage.output_tokens` is not a token count"),
        ('{"input_tokens": true}', "`usage.input_tokens` is not a token count"),
        ('{"input_tokens": 1, "cost_usd": 2}', "`usage` has `cost_usd`"),
    ],
)
def test_a_usage_that_is_not_token_counts_is_refused_with_its_line(
    tmp_path: Path, usage: str, problem: str
) -> None:
    cassette = tmp_path / "c.jsonl"
    cassette.write_text(
        '{"agent": "calculator", "step": "decide", "seq": 1, "type": "DoneForNow",'
        f' "output": {{"message": "12"}}, "usage": {usage}}}\n'
    )
    with pytest.raises(CassetteError) as refused:
        CassettePlayer(cassette)
    assert str(refused.value).startswith(f"{cassette}:1: not a cassette entry")
    assert problem in str(refused.value)


def budgeted_deploybot(tmp_path: Path) -> Path:
    """deploybot with `max_tokens 250 -> escalate`."""
    project = tmp_path / "project"
    shutil.copytree(EXAMPLES / "deploybot", project / "deploybot")
    shutil.copytree(EXAMPLES.parent / "prompts" / "deploybot", project / "prompts" / "deploybot")
    (project / "twelvefold.toml").write_text('[approvers]\nrelease-managers = ["ana"]\n')
    agent = project / "deploybot.agent"
    source = (EXAMPLES / "deploybot.agent").read_text()
    agent.write_text(source.replace("start decide", "start decide\n  max_tokens 250 -> escalate"))
    return agent


def replay(tmp_path: Path, cassette: Path, agent: Path) -> tuple[ThreadView, list[Event]]:
    with Runtime(
        SqliteStore(tmp_path / "t.db"),
        model=CassettePlayer(cassette),
        notifier=LogNotifier(io.StringIO()),
        cache_dir=tmp_path / "cache",
    ) as rt:
        view = rt.launch(agent, "deploy v1.2.3 to production")
        return view, rt.events(view.id)


def test_a_replayed_thread_reports_tokens_and_cost_and_reaches_its_token_budget(
    tmp_path: Path,
) -> None:
    """Offline, the cassette's counts spend the budget on the second call, so the thread
    goes to `escalate` instead of on to the approval."""
    agent = budgeted_deploybot(tmp_path)
    cassette = tmp_path / "c.jsonl"
    usage = {"input_tokens": 100, "output_tokens": 40}
    entries = [
        {"seq": 1, "type": "ListGitTags", "output": {}},
        {"seq": 4, "type": "DeployBackend", "output": {"tag": "v1.2.3", "env": "production"}},
    ]
    cassette.write_text(
        "".join(
            json.dumps({"agent": "deploybot", "step": "decide", **e, "usage": usage}) + "\n"
            for e in entries
        )
    )
    view, events = replay(tmp_path, cassette, agent)
    assert (view.status, view.step) == ("waiting", "escalate"), view
    calls = [e.usage for e in events if isinstance(e, ModelOutput)]
    assert [(u.input_tokens, u.output_tokens) for u in calls if u] == [(100, 40)] * 2
    # gpt-4o-mini (the step's model) is priced by default: the replay has a cost.
    assert all(u is not None and u.cost_usd is not None and u.cost_usd > 0 for u in calls)


def test_without_usage_a_budgeted_agent_cannot_count_the_replayed_call(tmp_path: Path) -> None:
    """The shipped cassette has no usage: under a budget its first call cannot be counted
    (TokenCountError), which spends the budget. What docs/prompts-and-context.md says."""
    agent = budgeted_deploybot(tmp_path)
    shipped = EXAMPLES / "cassettes" / "deploybot.jsonl"
    view, events = replay(tmp_path, shipped, agent)
    assert (view.status, view.step) == ("waiting", "escalate"), view
    failed = [e for e in events if isinstance(e, StepFailed)]
    assert failed and failed[0].error.type == "TokenCountError", failed
