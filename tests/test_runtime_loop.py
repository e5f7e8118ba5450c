"""The loop and the Python API, on the example agents and the counter fixture."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.runtime_helpers import (
    EXAMPLES,
    FIXTURES,
    RecordingNotifier,
    ScriptedModel,
    counter_model,
    no_messages,
)
from twelvefold.runtime.api import AsyncRuntime, InputError, Runtime
from twelvefold.runtime.loop import INTERRUPTED
from twelvefold.runtime.store import Head, MemoryStore, SqliteStore
from twelvefold.runtime.types import (
    Approved,
    IllegalEvent,
    ModelOutput,
    Notified,
    StepFailed,
    ToolResult,
    ToolStarted,
)

DEPLOYBOT = EXAMPLES / "deploybot.agent"
COUNTER = FIXTURES / "counter.agent"


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ledger.jsonl"
    monkeypatch.setenv("DEPLOYBOT_LEDGER", str(path))
    return path


@pytest.fixture
def counter_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "counter"
    folder.mkdir()
    monkeypatch.setenv("COUNTER_LOG", str(folder))
    return folder


def deploy_model() -> ScriptedModel:
    return ScriptedModel(
        [
            {"type": "ListGitTags"},
            {"type": "DeployBackend", "tag": "v1.2.3", "env": "production"},
            {"type": "DoneForNow", "message": "deployed v1.2.3"},
        ]
    )


def test_a_thread_pauses_for_approval_and_another_runtime_resumes_it(
    tmp_path: Path, ledger: Path
) -> None:
    db, cache = tmp_path / "threads.db", tmp_path / "cache"
    model, notifier = deploy_model(), RecordingNotifier()
    first = Runtime(SqliteStore(db), model=model, notifier=notifier, cache_dir=cache)
    view = first.launch(DEPLOYBOT, "deploy v1.2.3 to production")
    assert (view.status, view.step, view.waiting_for) == ("waiting", "approve_deploy", "approval")
    assert view.question == "Deploy v1.2.3 to production?"
    assert not ledger.exists(), "the deploy must wait for the approval"
    (notice,) = notifier.notices
    assert (notice.kind, notice.step, notice.approvers) == (
        "approval",
        "approve_deploy",
        ("release-managers",),
    )

    # A different runtime (as a different process would) with the same store.
    second = Runtime(SqliteStore(db), model=model, notifier=notifier, cache_dir=cache)
    done = second.resume(view.id, request=view.request, approve=True, comment="ship it", by="ana")
    assert done.status == "finished" and done.output.message == "deployed v1.2.3"
    assert [json.loads(line)["tag"] for line in ledger.read_text().splitlines()] == ["v1.2.3"]

    events = second.events(view.id)
    assert all(e.at and e.at.endswith("Z") for e in events)
    for event in events:
        if isinstance(event, ModelOutput):
            assert (
                event.usage
                and event.usage.input_tokens == 10
                and event.usage.latency_ms is not None
            )
        if isinstance(event, ToolResult):
            assert event.usage and event.usage.latency_ms is not None
    approved = next(e for e in events if isinstance(e, Approved))
    assert (approved.by, approved.comment) == ("ana", "ship it")
    assert [i.status for i in second.threads()] == ["finished"]


def test_a_rejection_and_its_comment_reach_the_models_context(tmp_path: Path, ledger: Path) -> None:
    model = ScriptedModel(
        [
            {"type": "DeployBackend", "tag": "v1.2.3", "env": "production"},
            {"type": "DoneForNow", "message": "not deployed"},
        ]
    )
    rt = Runtime(model=model, notifier=RecordingNotifier(), cache_dir=tmp_path / "cache")
    view = rt.launch(DEPLOYBOT, "deploy v1.2.3 to production")
    view = rt.resume(
        view.id, request=view.request, reject=True, by="ana", comment="freeze until Monday"
    )
    assert view.status == "finished"
    last_prompt = "\n".join(m["content"] for m in model.requests[-1].messages)
    assert "freeze until Monday" in last_prompt
    assert not ledger.exists()


def test_three_failures_in_a_row_escalate_to_a_person(tmp_path: Path, ledger: Path) -> None:
    bad = {"type": "DeployBackend", "tag": "v0.0.0", "env": "staging"}
    model = ScriptedModel([bad, bad, bad, {"type": "DoneForNow", "message": "gave up"}])
    rt = Runtime(model=model, notifier=RecordingNotifier(), cache_dir=tmp_path / "cache")
    view = rt.launch(DEPLOYBOT, "deploy v0.0.0 to staging")
    assert (view.status, view.step, view.waiting_for) == ("waiting", "escalate", "answer")
    failures = [e for e in rt.events(view.id) if isinstance(e, StepFailed)]
    assert [str(f.error) for f in failures] == [
        "LookupError: no tag 'v0.0.0'; run list_tags to see the tags"
    ] * 3
    assert rt.resume(view.id, request=view.request, answer="stop trying").status == "finished"


def test_a_start_without_a_result_reruns_a_keyed_tool_with_the_same_key(
    tmp_path: Path, counter_log: Path
) -> None:
    rt = Runtime(model=ScriptedModel(counter_model(1)), messages=no_messages, cache_dir=tmp_path)
    agent = rt.agent(COUNTER)
    thread = _crashed_at_tool(rt, agent, "Bump", "key-from-the-dead-process")
    view = rt.resume(thread)
    assert view.status == "finished"
    assert (counter_log / "bump.log").read_text() == "key-from-the-dead-process\n"
    starts = [e for e in rt.events(thread) if isinstance(e, ToolStarted)]
    assert len(starts) == 1, "the re-run is the same call, not a new one"


def test_a_start_without_a_result_is_not_rerun_without_a_key_until_someone_retries(
    tmp_path: Path, counter_log: Path
) -> None:
    rt = Runtime(model=ScriptedModel(counter_model(1)), messages=no_messages, cache_dir=tmp_path)
    thread = _crashed_at_tool(rt, rt.agent(COUNTER), "Poke", "k")
    view = rt.resume(thread)
    assert (view.status, view.error) == ("failed", INTERRUPTED)
    assert not (counter_log / "poke.log").exists()
    view = rt.retry(thread, by="ops")
    assert view.status == "finished"
    assert (counter_log / "poke.log").read_text() == "0\n"


def _crashed_at_tool(rt: Runtime, agent: Any, kind: str, key: str) -> str:
    """A thread whose process died after writing ToolStarted and before the result."""
    from twelvefold.runtime.loop import started

    output = agent.spec.types[kind](n=0)
    events = [
        started(agent, "count"),
        ModelOutput(step="decide", output=output),
        ToolStarted(step=kind.lower(), key=key),
    ]
    state = agent.module.replay(events)
    rt.store.create(_info(agent, "crashed"), events[:1], agent.codec)
    rt.store.append("crashed", 1, events[1:], agent.codec, Head(state.status, state.step))
    return "crashed"


def _info(agent: Any, thread_id: str) -> Any:
    from twelvefold.runtime.store import ThreadInfo

    return ThreadInfo(thread_id, agent.name, agent.origin, "running", "decide", 1, "t", "t")


def test_an_event_the_thread_cannot_take_is_refused_and_nothing_is_stored(
    tmp_path: Path, ledger: Path
) -> None:
    model = ScriptedModel([{"type": "RequestMoreInformation", "question": "which tag?"}])
    rt = Runtime(model=model, notifier=RecordingNotifier(), cache_dir=tmp_path)
    view = rt.launch(DEPLOYBOT, "deploy")
    with pytest.raises(InputError) as wrong:
        rt.resume(view.id, request=view.request, approve=True, by="ana")
    # In words: what the thread waits for, and how to give it (not "illegal `approved` event").
    assert str(wrong.value) == (
        f"thread {view.id} waits for an answer at `ask_user`, not an approval or a rejection: "
        f"resume it with `twelvefold resume {view.id} --request {view.request} --answer TEXT`"
    )
    with pytest.raises(IllegalEvent, match="illegal `approved` event"):  # the reducer too
        rt.agent(DEPLOYBOT).module.reduce(
            view.state, Approved(step="ask_user", request=view.request)
        )
    assert rt.get(view.id).seq == view.seq
    with pytest.raises(InputError):
        rt.resume(view.id, request=view.request, approve=True, answer="both")
    with pytest.raises(InputError):
        rt.launch(DEPLOYBOT, 42)


def test_fork_copies_a_prefix_that_then_goes_its_own_way(tmp_path: Path, ledger: Path) -> None:
    model, notifier = deploy_model(), RecordingNotifier()
    rt = Runtime(model=model, notifier=notifier, cache_dir=tmp_path)
    view = rt.launch(DEPLOYBOT, "deploy v1.2.3 to production")
    waiting = next(i for i, e in enumerate(rt.events(view.id), 1) if isinstance(e, Notified))
    rt.resume(view.id, request=view.request, approve=True, by="ana")
    fork = rt.fork(view.id, waiting)
    parent, copy = rt.replay(view.id, upto=waiting), rt.replay(fork)
    assert (copy.step, copy.status, copy.value) == (parent.step, parent.status, parent.value)
    # Its own request, and nobody told about it yet (issue 8, item 5).
    assert copy.request != parent.request and not copy.notified
    model.outputs = [{"type": "DoneForNow", "message": "not today"}]
    forked = rt.resume(fork, request=copy.request, reject=True, comment="not today", by="ana")
    assert forked.output.message == "not today"
    assert rt.get(view.id).output.message == "deployed v1.2.3"


def test_the_async_runtime_runs_threads_on_an_event_loop(tmp_path: Path, ledger: Path) -> None:
    async def scenario() -> tuple[str, str]:
        rt = AsyncRuntime(
            SqliteStore(tmp_path / "t.db"),
            model=deploy_model(),
            notifier=RecordingNotifier(),
            cache_dir=tmp_path / "cache",
        )
        view = await rt.launch(DEPLOYBOT, "deploy v1.2.3 to production")
        done = await rt.resume(view.id, request=view.request, approve=True, by="ana")
        return view.status, done.status

    assert asyncio.run(scenario()) == ("waiting", "finished")


def test_the_sync_runtime_refuses_to_block_a_running_event_loop() -> None:
    async def inside() -> None:
        Runtime(MemoryStore()).get("x")

    with pytest.raises(RuntimeError, match="AsyncRuntime"):
        asyncio.run(inside())
