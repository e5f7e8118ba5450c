"""Pause timeouts: `Runtime.expire(now=...)` and `twelvefold expire`, on the patience
fixture (approval `timeout 30m`; human `ask_user` `timeout 4h` with `on error`; human
`manager` `timeout 1d` without one; `max_errors 2 -> manager`). `now=` stands in for the
clock, so nothing sleeps."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook

from tests.runtime_helpers import EXAMPLES, FIXTURES, RecordingNotifier, ScriptedModel
from tests.support.receivers import HttpReceiver
from twelvefold.cli import cli
from twelvefold.commands.run import expiry_line
from twelvefold.runtime.api import AsyncRuntime, Expiry, Runtime
from twelvefold.runtime.codec import Codec
from twelvefold.runtime.loading import load_agent
from twelvefold.runtime.loop import Agent
from twelvefold.runtime.notify import LogNotifier, MultiNotifier, NotifyError, WebhookNotifier
from twelvefold.runtime.store import Head, Restored, SqliteStore
from twelvefold.runtime.timeouts import (
    deadline,
    describe_duration,
    iso,
    next_notice,
    notice_backoff,
    overdue,
    parse_time,
)
from twelvefold.runtime.types import (
    Approved,
    ErrorInfo,
    Event,
    ModelOutput,
    Notified,
    Rejected,
    Started,
    StepFailed,
    ToolStarted,
)

PATIENCE = FIXTURES / "patience.agent"
CHANGE = {"type": "Change", "what": "rename the table"}
QUESTION = {"type": "Question", "text": "Which table?"}
DONE = {"type": "Done", "message": "left it alone"}
SECRET = "whsec_" + base64.b64encode(b"the patience agent's webhook key").decode()


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
    """When the thread's current wait began: the pause (the event that opened it)."""
    events = rt.events(thread_id)
    assert isinstance(events[-1], Notified), "people were told"
    opened = [e for e in events if not isinstance(e, Notified)][-1]
    assert opened.at
    return parse_time(opened.at)


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
    done = rt.resume(view.id, request=view.request, approve=True, by="ana")
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
        pending = f"approve_change-{len(events) - 1}"  # opened by the arrival, before Notified
        approved = Approved(step="approve_change", at=events[-1].at, by="ana", request=pending)
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


def test_expire_on_a_store_that_does_not_exist_says_which_it_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run from cron before the first thread, `expire` finds nothing to do (exit 0, no
    store made); a mistyped `--db` must not pass for an empty store, so it names it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TWELVEFOLD_DB", raising=False)
    result = CliRunner().invoke(cli, ["expire", "--db", "threds.db"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "no waiting thread is past its deadline"
    assert result.stderr.strip() == "note: no store at threds.db yet"
    assert not (tmp_path / "threds.db").exists()


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
    (expired,) = json.loads(result.stdout)  # the look-ahead warning goes to stderr
    assert "ahead of the clock" in result.stderr
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


# ---- a dead notification channel: the pause holds, the notice is retried, never lost ------


@pytest.fixture
def flaky() -> Iterator[HttpReceiver]:
    """A webhook receiver that answers 500 until a test sets its `status` to 200."""
    receiver = HttpReceiver(status=500)
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def with_channels(store: SqliteStore, cache: Path, model: ScriptedModel, url: str) -> Runtime:
    """A runtime whose notices go to the log (a stream) and a signed webhook at `url`."""
    channels = MultiNotifier([LogNotifier(io.StringIO()), WebhookNotifier(url, secret=SECRET)])
    return Runtime(store, model=model, notifier=channels, cache_dir=cache)


def attempts(rt: Runtime, thread_id: str) -> list[Notified]:
    return [e for e in rt.events(thread_id) if isinstance(e, Notified)]


def paused_at(rt: Runtime, thread_id: str) -> datetime:
    """When the wait began: the event that opened it, whatever became of the notices."""
    opened = [e for e in rt.events(thread_id) if not isinstance(e, Notified)][-1]
    assert opened.at
    return parse_time(opened.at)


def test_a_dead_channel_leaves_the_thread_waiting_after_one_attempt(
    store: SqliteStore, cache: Path, flaky: HttpReceiver
) -> None:
    rt = with_channels(store, cache, ScriptedModel([CHANGE]), flaky.url("/hook"))
    view = rt.launch(PATIENCE, "tidy the schema")
    assert (view.status, view.step, view.untold) == ("waiting", "approve_change", True)
    port = flaky.server.server_address[1]
    assert view.notice_failed == (f"webhook: POST to http://127.0.0.1:{port} answered 500",)
    (told,) = attempts(rt, view.id)  # one attempt, no tight loop on a dead channel
    assert told.channels == ("log",) and not told.delivered  # the log line alone tells nobody
    assert (view.state.notified, view.state.notices) == (False, 1)
    assert len(flaky.received) == 1
    assert view.to_json()["notified"] is False
    assert view.to_json()["notice_failed"] == list(view.notice_failed)


def test_expire_retries_a_failed_notice_with_backoff_until_it_is_delivered(
    store: SqliteStore, cache: Path, flaky: HttpReceiver
) -> None:
    rt = with_channels(store, cache, ScriptedModel([CHANGE]), flaky.url("/hook"))
    view = rt.launch(PATIENCE, "tidy the schema")
    first = parse_time(attempts(rt, view.id)[-1].at or "")

    assert rt.expire(now=first + timedelta(seconds=59)) == []  # backoff: 1 minute
    assert len(flaky.received) == 1
    (retried,) = rt.expire(now=first + timedelta(minutes=1))
    assert isinstance(retried.event, Notified) and not retried.event.delivered
    assert retried.view is not None and retried.view.untold
    assert retried.view.state.notices == 2 and len(flaky.received) == 2
    assert "nobody was told" in expiry_line(retried)

    second = first + timedelta(minutes=1)
    assert rt.expire(now=second + timedelta(seconds=119)) == []  # then 2 minutes
    flaky.status = 200  # the channel is back
    (delivered,) = rt.expire(now=second + timedelta(minutes=2))
    assert isinstance(delivered.event, Notified) and delivered.event.delivered
    assert delivered.event.channels == ("log", "webhook") and delivered.event.failed == ()
    assert delivered.view is not None and not delivered.view.untold
    assert expiry_line(delivered).endswith("tried again, told log, webhook")

    # Every attempt was the same notice: one webhook-id, each signed afresh.
    ids = {headers["Webhook-Id"] for _, headers, _ in flaky.received}
    assert len(ids) == 1 and len(flaky.received) == 3
    for _, headers, body in flaky.received:
        Webhook(SECRET).verify(body, headers)
    assert rt.expire(now=second + timedelta(minutes=20)) == [], "told: nothing more to do"


def test_a_deadline_counts_from_the_pause_not_from_the_notice(
    store: SqliteStore, cache: Path, flaky: HttpReceiver
) -> None:
    rt = with_channels(store, cache, ScriptedModel([CHANGE, DONE]), flaky.url("/hook"))
    view = rt.launch(PATIENCE, "tidy the schema")
    paused = paused_at(rt, view.id)
    flaky.status = 200
    (late,) = rt.expire(now=paused + timedelta(minutes=20))  # told 20 minutes late
    assert isinstance(late.event, Notified) and late.event.delivered

    (expiry,) = rt.expire(now=paused + timedelta(minutes=30))  # not 20 + 30
    assert isinstance(expiry.event, Rejected) and expiry.event.by == "timeout"
    assert expiry.view is not None and expiry.view.status == "finished"


def test_a_request_nobody_was_told_about_is_never_delivered_not_rejected(
    store: SqliteStore, cache: Path, flaky: HttpReceiver
) -> None:
    model = ScriptedModel([CHANGE])
    rt = with_channels(store, cache, model, flaky.url("/hook"))
    view = rt.launch(PATIENCE, "tidy the schema")
    paused = paused_at(rt, view.id)
    assert len(rt.expire(now=paused + timedelta(minutes=5))) == 1  # a retry, failed too

    (expiry,) = rt.expire(now=paused + timedelta(minutes=30))
    assert expiry.never_delivered and expiry.problem is None
    assert isinstance(expiry.event, StepFailed)
    assert expiry.event.error.type == "NotDelivered"
    port = flaky.server.server_address[1]
    assert expiry.event.error.message == (
        "the request reached no notification channel within 30m (2 attempts; last: "
        f"webhook: POST to http://127.0.0.1:{port} answered 500)"
    )
    assert expiry.view is not None
    assert (expiry.view.status, expiry.view.step) == ("failed", "approve_change")
    events = rt.events(view.id)
    assert not any(isinstance(e, Rejected | ToolStarted) for e in events)
    assert len(model.requests) == 1, "the model was not told of a rejection nobody made"
    assert "was never delivered" in expiry_line(expiry)
    assert expiry.to_json()["expired"]["never_delivered"] is True

    # Retried, the request is put to people again, with a new deadline from the retry.
    flaky.status = 200
    retried = rt.retry(view.id, by="ops")
    assert (retried.status, retried.untold) == ("waiting", False)
    again = paused_at(rt, view.id)
    assert type(rt.events(view.id)[-2]).__name__ == "Retried"
    assert rt.expire(now=again + timedelta(minutes=29)) == []


def test_a_wait_whose_process_stopped_before_telling_anyone_is_told_by_the_sweep(
    store: SqliteStore, cache: Path, flaky: HttpReceiver
) -> None:
    rt = with_channels(store, cache, ScriptedModel([CHANGE]), flaky.url("/hook"))
    view = rt.launch(PATIENCE, "tidy the schema")
    # The same log without its notice: the process died between the pause and telling.
    codec = rt.agent(PATIENCE).codec
    events = [e for e in rt.events(view.id) if not isinstance(e, Notified)]
    store.create(replace(store.info(view.id), id="orphan", seq=len(events)), events, codec)
    flaky.status = 200
    paused = paused_at(rt, "orphan")
    # Not at once: the process that paused it may still be telling people.
    assert rt.expire(now=paused + timedelta(seconds=59)) == []
    swept = rt.expire(now=paused + timedelta(minutes=1))
    assert [(e.thread_id, type(e.event).__name__) for e in swept] == [("orphan", "Notified")]
    assert rt.get("orphan").state.notified


class LoopedOnADeadChannel(BaseException):
    """Raised past the loop's `except Exception` so a tight retry loop fails, not hangs."""


class DeadChannel:
    name = "webhook"

    def __init__(self) -> None:
        self.calls = 0

    async def notify(self, notice: object) -> list[str]:
        self.calls += 1
        if self.calls > 2:
            raise LoopedOnADeadChannel(f"notified {self.calls} times in one advance")
        raise NotifyError("webhook: POST to http://127.0.0.1:9 failed: refused")


def test_one_advance_tries_a_dead_channel_once(store: SqliteStore, cache: Path) -> None:
    channel = DeadChannel()
    rt = Runtime(store, model=ScriptedModel([CHANGE]), notifier=channel, cache_dir=cache)
    view = rt.launch(PATIENCE, "tidy the schema")
    assert (view.status, view.untold, channel.calls) == ("waiting", True, 1)
    resumed = rt.resume(view.id)  # a resume without a decision tries once more, no more
    assert (resumed.untold, resumed.state.notices, channel.calls) == (True, 2, 2)


# ---- the rule, over any run of notice outcomes (the real reducer of the patience agent) ---

PAUSE = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
FAILURES = st.lists(st.sampled_from(["webhook: answered 500", "slack: refused", "email: down"]))


@st.composite
def notice_runs(draw: st.DrawFn) -> list[Notified]:
    """Failed attempts at increasing times (with or without the log line), then perhaps
    one that reached someone."""
    count = draw(st.integers(0, 6))
    gaps = draw(st.lists(st.integers(1, 3 * 3600), min_size=count + 1, max_size=count + 1))
    moments = [PAUSE + timedelta(seconds=sum(gaps[: i + 1])) for i in range(count + 1)]
    run = [
        Notified(
            step="approve_change",
            at=iso(moment),
            channels=("log",) if draw(st.booleans()) else (),
            failed=tuple(draw(FAILURES.filter(bool))),
        )
        for moment in moments[:count]
    ]
    if draw(st.booleans()):
        told = draw(st.sampled_from([("webhook",), ("log",), ("log", "slack")]))
        failed = () if told == ("log",) else tuple(draw(FAILURES))
        run.append(
            Notified(step="approve_change", at=iso(moments[-1]), channels=told, failed=failed)
        )
    return run


@given(run=notice_runs())
@settings(max_examples=150, deadline=None)
def test_a_wait_ends_by_its_deadline_from_the_pause_and_only_a_delivered_notice_lets_it_reject(
    patience: Agent, run: list[Notified]
) -> None:
    module = patience.module
    change = patience.spec.types["Change"](what="x")
    events: list[Event] = [
        Started(step="decide", at=iso(PAUSE - timedelta(seconds=1)), input="x"),
        ModelOutput(step="decide", at=iso(PAUSE), output=change),
        *run,
    ]
    state = module.replay(events)
    action = module.next_action(state)
    delivered = any(e.delivered for e in run)
    assert state.status == "waiting" and state.notified is delivered
    assert state.notices == sum(not e.delivered for e in run)

    limit = PAUSE + timedelta(minutes=30)
    assert deadline(state, action, events) == limit  # from the pause, whatever the notices
    assert overdue(state, action, events, limit - timedelta(microseconds=1)) is None
    ended = overdue(state, action, events, limit)
    if delivered:
        assert isinstance(ended, Rejected) and ended.by == "timeout"
        assert next_notice(state, action, events) is None
    else:
        assert isinstance(ended, StepFailed) and ended.error.type == "NotDelivered"
        due = next_notice(state, action, events)
        last = parse_time(events[-1].at or "")
        assert due == last + notice_backoff(state.notices)
        assert notice_backoff(state.notices) <= timedelta(hours=1)
    assert ended is not None
    assert module.reduce(state, ended).status in ("running", "failed", "waiting")


@pytest.fixture(scope="module")
def patience(cache: Path) -> Agent:
    return load_agent(PATIENCE, cache_dir=cache)


# ---- the end of time: a sweep never fails on a deadline it cannot represent ----------------


def test_a_notice_tried_at_the_end_of_time_never_fails_the_sweep(
    store: SqliteStore, cache: Path
) -> None:
    # `expire --now 9999-12-31T23:59:00Z` stores its notice attempt at that moment; the
    # next attempt's backoff is past the end of time, which must mean "not due", not an
    # OverflowError on every later sweep.
    broken = io.StringIO()
    broken.close()  # the only channel fails
    asks = ScriptedModel([{"type": "ClarificationRequest", "message": "Which numbers?"}])
    rt = Runtime(store, model=asks, notifier=LogNotifier(broken), cache_dir=cache)
    view = rt.launch(EXAMPLES / "calculator.agent", "hello!")  # a question with no timeout
    assert view.untold
    (retried,) = rt.expire(now="9999-12-31T23:58:00Z")
    assert retried.problem is None and isinstance(retried.event, Notified)
    assert rt.expire(now="9999-12-31T23:59:59Z") == []


@pytest.mark.parametrize("now", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+05:00"])
def test_expire_refuses_a_now_with_no_utc_form(
    now: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWELVEFOLD_DB", str(tmp_path / "threads.db"))
    result = CliRunner().invoke(cli, ["expire", "--now", now])
    assert result.exit_code == 2 and "--now" in result.output and "Traceback" not in result.output
    assert "outside the years 1 to 9999" in result.output


def test_a_thread_that_could_not_be_swept_is_not_said_to_have_timed_out() -> None:
    stuck = Expiry("t1", "approve_change", None, None, "AgentLoadError: no such file")
    assert expiry_line(stuck) == (
        "thread t1: `approve_change` could not be swept: AgentLoadError: no such file"
    )


# ---- a decision after the deadline: refused, the timeout recorded (no sweep needed) ----


def clock_at(monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    """The clock decisions are recorded by, set to `moment`."""
    from twelvefold.runtime import api
    from twelvefold.runtime.timeouts import iso

    monkeypatch.setattr(api, "_now", lambda: iso(moment))


def test_an_approval_after_its_timeout_is_refused_and_counts_as_a_rejection(
    store: SqliteStore, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from twelvefold.runtime.api import RequestNotPending, TimedOut

    model = ScriptedModel([CHANGE, {"type": "Done", "message": "left it alone"}])
    rt = runtime(store, cache, model)
    view = rt.launch(PATIENCE, "tidy the schema")
    began = waiting_since(rt, view.id)
    assert view.wake_at is not None and parse_time(view.wake_at) == began + timedelta(minutes=30)
    clock_at(monkeypatch, began + timedelta(minutes=30))
    with pytest.raises(TimedOut, match=r"timed out .* counted as a rejection") as refused:
        rt.resume(view.id, request=view.request, approve=True, by="ana")
    assert refused.value.view.status == "finished"  # run on from the rejection
    assert refused.value.view.output.message == "left it alone"
    events = rt.events(view.id)
    assert not any(isinstance(e, ToolStarted) for e in events), "a late approval never runs"
    assert [e.by for e in events if isinstance(e, Rejected)] == ["timeout"]
    with pytest.raises(RequestNotPending):  # once recorded, the request is simply gone
        rt.resume(view.id, request=view.request, approve=True, by="ana")


def test_an_answer_after_its_timeout_is_refused_and_fails_the_step(
    store: SqliteStore, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from twelvefold.runtime.api import TimedOut

    model = ScriptedModel([QUESTION, {"type": "Done", "message": "gave up"}])
    rt = runtime(store, cache, model)
    view = rt.launch(PATIENCE, "tidy the schema")
    assert view.waiting_for == "answer" and view.wake_at is not None
    clock_at(monkeypatch, parse_time(view.wake_at) + timedelta(seconds=1))
    with pytest.raises(TimedOut, match="failure of the step"):
        rt.resume(view.id, request=view.request, answer="the users table", by="ana")
    events = rt.events(view.id)
    assert not any(type(e).__name__ == "Answered" for e in events)
    assert [e.error.type for e in events if isinstance(e, StepFailed)] == ["Timeout"]


def test_the_cli_refuses_a_late_decision_in_one_line(
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
    shown = json.loads(launched.output.splitlines()[-1])
    clock_at(monkeypatch, parse_time(shown["wake_at"]) + timedelta(minutes=1))
    result = runner.invoke(
        cli,
        ["resume", shown["thread_id"], "--approve", "--request", shown["request"], "--by", "ana",
         "--cassette", str(cassette)],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert "timed out" in line and "Traceback" not in result.output
    log = runner.invoke(cli, ["show", shown["thread_id"]]).output
    assert "rejected      by timeout" in log and "approved" not in log
