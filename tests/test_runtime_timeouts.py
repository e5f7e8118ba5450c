"""Pause timeouts: `Runtime.expire(now=...)` and `twelvefold expire`, on the patience
fixture (approval `timeout 30m`; human `ask_user` `timeout 4h` with `on error`; human
`manager` `timeout 1d` without one; `max_errors 2 -> manager`). `now=` stands in for the
clock, so nothing sleeps."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.runtime_helpers import EXAMPLES, FIXTURES, RecordingNotifier, ScriptedModel
from twelvefold.cli import cli
from twelvefold.commands.run import expiry_line
from twelvefold.runtime.api import AsyncRuntime, Expiry, Runtime
from twelvefold.runtime.codec import Codec
from twelvefold.runtime.store import Head, Restored, SqliteStore
from twelvefold.runtime.timeouts import describe_duration, parse_time
from twelvefold.runtime.types import (
    Approved,
    ErrorInfo,
    Event,
    Notified,
    Rejected,
    StepFailed,
    ToolStarted,
)

PATIENCE = FIXTURES / "patience.agent"
CHANGE = {"type": "Change", "what": "rename the table"}
QUESTION = {"type": "Question", "text": "Which table?"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "threads.db")
    yield opened
    opened.close()


def runtime(store: SqliteStore, cache: Path, model: ScriptedModel) -> Runtime:
    return Runtime(store, model=model, notifier=RecordingNotifier(), cache_dir=cache)


def waiting_since(rt: Runtime, thread_id: str) -> datetime:
    """When people were last told about the thread (its wait began)."""
    told = [e for e in rt.events(thread_id) if isinstance(e, Notified)]
    assert told and told[-1].at
    return parse_time(told[-1].at)


def test_an_approval_with_no_decision_in_time_counts_as_a_rejection(
    store: SqliteStore, cache: Path
) -> None:
    model = ScriptedModel([CHANGE, {"type": "Done", "message": "left it alone"}])
    rt = runtime(store, cache, model)
    view = rt.launch(PATIENCE, "tidy the schema")
    assert (view.status, view.step) == ("waiting", "approve_change")
    began = waiting_since(rt, view.id)

    assert rt.expire(now=began + timedelta(minutes=29, seconds=59)) == []
    assert rt.get(view.id).seq == view.seq, "a wait that has not run out changes nothing"

    (expiry,) = rt.expire(now=began + timedelta(minutes=30))
    assert (expiry.thread_id, expiry.step, expiry.problem) == (view.id, "approve_change", None)
    assert isinstance(expiry.event, Rejected)
    assert (expiry.event.by, expiry.event.comment) == ("timeout", "no decision within 30m")
    assert expiry.view is not None and expiry.view.status == "finished"
    assert expiry.view.output.message == "left it alone"

    events = rt.events(view.id)
    assert not any(isinstance(e, ToolStarted) for e in events), "a timeout never approves"
    # The rejection and its comment reach the model, like a person's.
    context = model.requests[-1].messages[-1]["content"]
    assert "<approve_change_rejected>" in context and "no decision within 30m" in context
    assert rt.expire(now=began + timedelta(days=365)) == [], "a finished thread has no wait"


def test_a_decision_in_time_is_not_overridden(store: SqliteStore, cache: Path) -> None:
    model = ScriptedModel([CHANGE])
    rt = runtime(store, cache, model)
    view = rt.launch(PATIENCE, "tidy the schema")
    began = waiting_since(rt, view.id)
    done = rt.resume(view.id, approve=True, by="ana")
    assert done.status == "finished"
    assert rt.expire(now=began + timedelta(hours=1)) == []
    assert rt.get(view.id).seq == done.seq


def test_an_unanswered_question_is_a_failure_then_the_ceiling_then_a_failed_thread(
    store: SqliteStore, cache: Path
) -> None:
    model = ScriptedModel([QUESTION, QUESTION])
    rt = runtime(store, cache, model)
    view = rt.launch(PATIENCE, "tidy the schema")
    assert (view.step, view.waiting_for) == ("ask_user", "answer")

    # First timeout: `on error -> decide`; the model sees the failure and asks again.
    first = waiting_since(rt, view.id)
    assert rt.expire(now=first + timedelta(hours=3, minutes=59)) == []
    (expiry,) = rt.expire(now=first + timedelta(hours=4))
    assert isinstance(expiry.event, StepFailed)
    assert expiry.event.error == ErrorInfo("Timeout", "no answer within 4h")
    assert expiry.view is not None
    assert (expiry.view.status, expiry.view.step) == ("waiting", "ask_user")
    context = model.requests[-1].messages[-1]["content"]
    assert "Timeout: no answer within 4h" in context

    # Second timeout in a row: `max_errors 2 -> manager`.
    second = waiting_since(rt, view.id)
    assert second >= first
    (expiry,) = rt.expire(now=second + timedelta(hours=4))
    assert expiry.view is not None
    assert (expiry.view.status, expiry.view.step) == ("waiting", "manager")

    # The manager has `timeout 1d` and no `on error`: the thread fails.
    third = waiting_since(rt, view.id)
    assert rt.expire(now=third + timedelta(hours=23)) == []
    (expiry,) = rt.expire(now=third + timedelta(days=1))
    assert expiry.view is not None
    assert (expiry.view.status, expiry.view.step) == ("failed", "manager")
    assert expiry.view.error == ErrorInfo("Timeout", "no answer within 1d")

    # Retried, the manager gets a new day, counted from the retry.
    retried = rt.retry(view.id, by="ops")
    assert (retried.status, retried.step) == ("waiting", "manager")
    again = waiting_since(rt, view.id)
    assert rt.expire(now=again + timedelta(hours=23)) == []
    (expiry,) = rt.expire(now=again + timedelta(days=1))
    # A retry does not reset the error count: two failures in a row hit `max_errors`,
    # which hands the thread to the manager again. Each new wait told the people afresh.
    assert expiry.view is not None
    assert (expiry.view.status, expiry.view.step) == ("waiting", "manager")
    told = [e.step for e in rt.events(view.id) if isinstance(e, Notified)]
    assert told == ["ask_user", "ask_user", "manager", "manager", "manager"]
    assert len(model.requests) == 2


class DecidedMeanwhile(SqliteStore):
    """A store on which a person approves a thread (through a second connection, as
    another process would) right after the sweep has loaded it."""

    person: Callable[[str, list[Event], Codec], None] | None = None

    def restore(self, thread_id: str, codec: Codec) -> Restored:
        restored = super().restore(thread_id, codec)
        if self.person is not None:
            decide, self.person = self.person, None
            decide(thread_id, restored.events, codec)
        return restored


def test_a_person_deciding_during_the_sweep_wins(tmp_path: Path, cache: Path) -> None:
    db = tmp_path / "threads.db"
    store = DecidedMeanwhile(db)
    rt = runtime(store, cache, ScriptedModel([CHANGE]))
    view = rt.launch(PATIENCE, "tidy the schema")
    began = waiting_since(rt, view.id)

    def approve(thread_id: str, events: list[Event], codec: Codec) -> None:
        other = SqliteStore(db)
        approved = Approved(step="approve_change", at=events[-1].at, by="ana")
        other.append(thread_id, len(events), (approved,), codec, Head("running", "apply"))
        other.close()

    store.person = approve
    assert rt.expire(now=began + timedelta(hours=1)) == []  # the append conflicted
    events = rt.events(view.id)
    assert [type(e).__name__ for e in events[-1:]] == ["Approved"]
    assert not any(isinstance(e, Rejected) for e in events)
    store.close()


def test_waits_without_a_timeout_never_expire(store: SqliteStore, cache: Path) -> None:
    model = ScriptedModel([{"type": "ClarificationRequest", "message": "Which numbers?"}])
    rt = runtime(store, cache, model)
    view = rt.launch(EXAMPLES / "calculator.agent", "hello!")
    assert view.status == "waiting"
    assert rt.expire(now=datetime(2999, 1, 1)) == []


def test_several_threads_expire_each_by_its_own_deadline(store: SqliteStore, cache: Path) -> None:
    model = ScriptedModel(
        lambda request: CHANGE if "approve" in str(request.action.value) else QUESTION
    )
    rt = runtime(store, cache, model)
    approval = rt.launch(PATIENCE, "approve something")
    question = rt.launch(PATIENCE, "ask something")
    latest = max(waiting_since(rt, approval.id), waiting_since(rt, question.id))

    (expired,) = rt.expire(now=latest + timedelta(hours=1))  # 30m passed, 4h did not
    assert expired.thread_id == approval.id
    assert rt.get(question.id).step == "ask_user"
    (expired,) = rt.expire(now=latest + timedelta(hours=4))
    assert expired.thread_id == question.id


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(1800, "30m"), (14400, "4h"), (86400, "1d"), (5400, "1h30m"), (90, "1m30s"), (0.25, "250ms")],
)
def test_durations_read_as_the_language_writes_them(seconds: float, text: str) -> None:
    assert describe_duration(seconds) == text


# ---- the command -------------------------------------------------------------------------

CASSETTE = [
    {"agent": "patience", "step": "decide", "seq": 1, "type": "Change", "output": {"what": "x"}},
    # started, model_output, notified, rejected: the model is asked again at event 4.
    {"agent": "patience", "step": "decide", "seq": 4, "type": "Done", "output": {"message": "ok"}},
]


def test_twelvefold_expire_times_out_overdue_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TWELVEFOLD_DB", raising=False)
    monkeypatch.setenv("TWELVEFOLD_NOTIFY_LOG", "0")
    cassette = tmp_path / "patience.jsonl"
    cassette.write_text("\n".join(json.dumps(e) for e in CASSETTE) + "\n")
    runner = CliRunner()

    launched = runner.invoke(
        cli, ["run", str(PATIENCE), "--input", "tidy", "--cassette", str(cassette), "--json"]
    )
    assert launched.exit_code == 0, launched.output
    thread = json.loads(launched.output.splitlines()[-1])["thread_id"]

    quiet = runner.invoke(cli, ["expire"])  # the clock: 30 minutes have not passed
    assert (quiet.exit_code, quiet.output.strip()) == (0, "no waiting thread is past its deadline")

    shown = json.loads(runner.invoke(cli, ["show", thread, "--json"]).output)
    told_at = parse_time(shown["log"][-1]["at"])
    later = (told_at + timedelta(minutes=31)).isoformat()
    result = runner.invoke(cli, ["expire", "--now", later, "--cassette", str(cassette), "--json"])
    assert result.exit_code == 0, result.output
    (expired,) = json.loads(result.output)
    assert expired["thread_id"] == thread
    assert expired["expired_step"] == "approve_change"
    assert expired["expired"] == {"rejected": "no decision within 30m"}
    assert (expired["status"], expired["output"]) == ("finished", {"message": "ok"})

    log = runner.invoke(cli, ["show", thread]).output
    assert "rejected      by timeout no decision within 30m" in log


def test_the_command_says_what_became_of_each_thread() -> None:
    failed = StepFailed(step="ask_user", error=ErrorInfo("Timeout", "no answer within 4h"))
    stuck = Expiry("t1", "ask_user", failed, None, "ConnectionError: endpoint unreachable")
    assert expiry_line(stuck) == (
        "thread t1: `ask_user` timed out, failed (Timeout: no answer within 4h); "
        "could not go on: ConnectionError: endpoint unreachable"
    )


def test_the_async_runtime_expires_too(tmp_path: Path, cache: Path) -> None:
    async def scenario() -> None:
        model = ScriptedModel([CHANGE, {"type": "Done", "message": "skipped"}])
        store = SqliteStore(tmp_path / "threads.db")
        art = AsyncRuntime(store, model=model, notifier=RecordingNotifier(), cache_dir=cache)
        view = await art.launch(PATIENCE, "tidy the schema")
        told = [e for e in await art.events(view.id) if isinstance(e, Notified)]
        began = parse_time(told[-1].at or "")
        assert await art.expire(began + timedelta(minutes=10)) == []
        (expiry,) = await art.expire((began + timedelta(minutes=30)).isoformat())
        assert expiry.view is not None and expiry.view.output.message == "skipped"
        store.close()

    asyncio.run(scenario())
