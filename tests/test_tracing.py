"""OpenTelemetry traces (runtime/tracing.py, docs/observability.md): the SDK's in-memory
exporter over examples/deploybot.agent run through the real openai + instructor client
against the scripted server, paused in one Runtime and resumed in another; and
`twelvefold run` exporting over OTLP/HTTP to a receiver on loopback."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from tests.runtime_helpers import (
    EXAMPLES,
    FIXTURES,
    RecordingNotifier,
    ScriptedModel,
    counter_run_probe,
)
from tests.support.e2e import ModelTurns, runtime
from tests.support.openai_server import Reply, ScriptedOpenAI
from tests.support.otlp_grpc_receiver import OtlpGrpcReceiver
from tests.support.otlp_receiver import OtlpReceiver
from tests.test_e2e_deploybot import newest_listed_tag, report_the_url
from twelvefold.runtime import tracing
from twelvefold.runtime.api import Runtime
from twelvefold.runtime.codec import Codec, CodecError
from twelvefold.runtime.redact import REDACTED
from twelvefold.runtime.store import SqliteStore
from twelvefold.runtime.timeouts import parse_time
from twelvefold.runtime.types import Approved, Notified, Rejected, Started

DEPLOYBOT = EXAMPLES / "deploybot.agent"
CALCULATOR = EXAMPLES / "calculator.agent"
REPO = Path(__file__).resolve().parents[1]
PATIENCE = FIXTURES / "patience.agent"
CHANGE = {"type": "Change", "what": "rename the table"}
QUESTION = {"type": "Question", "text": "Which table?"}
DONE = {"type": "Done", "message": "left it alone"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _reset_global_provider() -> None:
    # The API lets a process set its provider once; tests install one and take it away
    # again so that the rest of the suite runs untraced, as a user's process would.
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _reset_global_provider()
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        _reset_global_provider()


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ledger.jsonl"
    monkeypatch.setenv("DEPLOYBOT_LEDGER", str(path))
    monkeypatch.delenv("DEPLOYBOT_TAGS", raising=False)
    monkeypatch.delenv(tracing.CAPTURE_CONTENT, raising=False)
    return path


def named(found: tuple[ReadableSpan, ...] | list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in found if s.name == name]


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


@pytest.fixture
def paused_and_resumed(
    openai_server: ScriptedOpenAI, tmp_path: Path, cache: Path, ledger: Path
) -> Any:
    """Runs `pause_and_resume_in_two_runtimes` when called (after a test set its env)."""
    return lambda: pause_and_resume_in_two_runtimes(openai_server, tmp_path, cache)


def pause_and_resume_in_two_runtimes(
    openai_server: ScriptedOpenAI, tmp_path: Path, cache: Path
) -> tuple[str, list[Any]]:
    """Launch deploybot (it waits for an approval), then approve it from another Runtime
    on the same file, as another process would. Returns the thread id and its events."""
    ModelTurns(openai_server).then({"type": "ListGitTags"}, newest_listed_tag, report_the_url)
    db = tmp_path / "threads.db"
    with runtime(openai_server, db, cache) as first:
        view = first.launch(DEPLOYBOT, "deploy the latest build to production")
    assert view.status == "waiting"
    with runtime(openai_server, db, cache) as second:
        done = second.resume(view.id, request=view.request, approve=True, by="ana")
        assert done.status == "finished"
        return view.id, second.events(view.id)


def test_one_trace_across_a_pause_and_a_resume_in_another_runtime(
    spans: InMemorySpanExporter, paused_and_resumed: Any
) -> None:
    thread_id, events = paused_and_resumed()
    found = spans.get_finished_spans()

    first, second = named(found, "invoke_agent deploybot")
    (wait,) = named(found, "await_approval approve_deploy")
    chats = named(found, "chat scripted-model")
    (listing,) = named(found, "execute_tool list_git_tags")
    (deploy,) = named(found, "execute_tool deploy_backend")
    assert len(chats) == 3
    # One trace, whatever process made the span.
    assert {s.context.trace_id for s in found if s.context} == {first.context.trace_id}  # type: ignore[union-attr]
    # The launch is the root; the wait is its child, the resumed run the wait's child,
    # and the resumed run links to the run before it.
    assert first.parent is None
    assert parent_id(wait) == span_id(first)
    assert parent_id(second) == span_id(wait)
    assert [link.context.span_id for link in second.links] == [span_id(first)]
    assert parent_id(listing) == span_id(first)
    assert parent_id(deploy) == span_id(second)
    assert [parent_id(c) for c in chats].count(span_id(first)) == 2
    assert [parent_id(c) for c in chats].count(span_id(second)) == 1
    # The log carries the trace context the second process joined.
    started, notified, approved = (
        next(e for e in events if isinstance(e, kind)) for kind in (Started, Notified, Approved)
    )
    assert started.trace == tracing.traceparent(_as_span(first))
    assert notified.trace == tracing.traceparent(_as_span(first))
    assert approved.trace == tracing.traceparent(_as_span(wait))

    for s in [first, second, wait, *chats, listing, deploy]:
        assert s.attributes is not None
        assert s.attributes["gen_ai.conversation.id"] == thread_id
    assert (
        dict(first.attributes or {}).items()
        >= {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "deploybot",
            "twelvefold.thread.status": "waiting",
        }.items()
    )
    assert (second.attributes or {})["twelvefold.thread.status"] == "finished"
    (paused,) = first.events
    assert paused.name == "twelvefold.paused"
    assert (paused.attributes or {})["twelvefold.request.id"] == approved.request
    chat = dict(chats[0].attributes or {})
    assert chat["gen_ai.operation.name"] == "chat"
    assert chat["gen_ai.request.model"] == "scripted-model"
    assert chat["gen_ai.response.model"] == "scripted-model"
    assert chat["gen_ai.response.id"] == "chatcmpl-1"
    assert chat["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert (chat["gen_ai.usage.input_tokens"], chat["gen_ai.usage.output_tokens"]) == (11, 7)
    assert chats[0].kind == trace.SpanKind.CLIENT
    tool = dict(deploy.attributes or {})
    assert tool["gen_ai.operation.name"] == "execute_tool"
    assert tool["gen_ai.tool.name"] == "deploy_backend"
    assert tool["twelvefold.tool.key"].startswith(f"{thread_id}:deploy:")
    waited = dict(wait.attributes or {})
    assert waited["twelvefold.request.id"] == approved.request
    assert waited["twelvefold.request.kind"] == "approval"
    assert waited["twelvefold.decision"] == "approved"
    assert waited["twelvefold.decision.by"] == "ana"
    assert waited["twelvefold.decision.via"] == "api"
    assert waited["twelvefold.wait.seconds"] >= 0
    # The wait's span starts at the notice and ends at the decision.
    assert wait.start_time == tracing._ns(notified.at)
    assert wait.end_time == tracing._ns(approved.at)


def _as_span(readable: ReadableSpan) -> Any:
    assert readable.context is not None
    return trace.NonRecordingSpan(readable.context)


CONTENT_KEYS = {
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
}


def test_no_prompt_or_tool_content_in_spans_unless_opted_in(
    spans: InMemorySpanExporter, paused_and_resumed: Any
) -> None:
    paused_and_resumed()
    found = spans.get_finished_spans()
    assert found
    for s in found:
        assert not CONTENT_KEYS & set(s.attributes or {}), s.name
        assert "deploy the latest build" not in json.dumps(dict(s.attributes or {}))


def test_content_in_spans_when_opted_in(
    spans: InMemorySpanExporter, paused_and_resumed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(tracing.CAPTURE_CONTENT, "true")
    paused_and_resumed()
    found = spans.get_finished_spans()
    chat = dict(named(found, "chat scripted-model")[0].attributes or {})
    messages = json.loads(chat["gen_ai.input.messages"])
    assert messages[0]["role"] == "system"
    assert "deploy the latest build to production" in messages[-1]["parts"][0]["content"]
    output = json.loads(chat["gen_ai.output.messages"])
    assert json.loads(output[0]["parts"][0]["content"]) == {}  # ListGitTags has no fields
    (deploy,) = named(found, "execute_tool deploy_backend")
    tool = dict(deploy.attributes or {})
    assert json.loads(tool["gen_ai.tool.call.arguments"])["tag"] == "v1.2.3"
    assert "url" in json.loads(tool["gen_ai.tool.call.result"])


def test_an_untraced_log_is_what_an_older_runtime_wrote(
    paused_and_resumed: Any, tmp_path: Path
) -> None:
    assert tracing.tracer() is None
    paused_and_resumed()
    with sqlite3.connect(tmp_path / "threads.db") as db:
        bodies = [row[0] for row in db.execute("SELECT body FROM events")]
    assert bodies and not any('"trace"' in body for body in bodies)


def test_a_stored_trace_context_decodes_and_a_damaged_one_is_refused_or_ignored() -> None:
    codec = Codec()
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    event = Started(step="s", at="2025-06-01T09:12:03.125000Z", input="x", trace=parent)
    assert codec.loads_event(codec.dumps_event(event)) == event
    old = '{"kind": "started", "step": "s", "at": "2025-06-01T09:12:03.125000Z", "input": "x"}'
    assert codec.loads_event(old) == Started(step="s", at="2025-06-01T09:12:03.125000Z", input="x")
    with pytest.raises(CodecError, match="trace"):
        codec.loads_event('{"kind": "started", "step": "s", "input": "x", "trace": 7}')
    # A context that is not a W3C traceparent is no parent: the run starts a new trace.
    for damaged in ("00-" + "0" * 32 + "-b7ad6b7169203331-01", "ff-xyz", "", parent + "\n"):
        assert tracing.remote(damaged) is None
    assert tracing.remote(parent) is not None


def test_an_edited_trace_context_starts_a_new_trace_rather_than_fail(
    spans: InMemorySpanExporter,
) -> None:
    """A log whose trace contexts were edited (its chain re-computed by whoever edited
    it) is run and its waits are traced; the junk is never a parent."""
    junk = "not a traceparent\x1b[2J"
    events = [
        Started(step="plan", at="2025-06-01T09:00:00.000000Z", input="x", trace=junk),
        Notified(step="approve", at="2025-06-01T09:00:01.000000Z", trace=junk),
    ]
    tracer = tracing.tracer()
    assert tracer is not None
    run = tracing.start_run(tracer, "deploybot", "t1", events)
    wait = tracing.record_wait(
        tracer,
        agent="deploybot",
        thread_id="t1",
        events=events,
        ended_by=Approved(step="approve", at="2025-06-01T10:00:01.000000Z", by="ana"),
        request="approve-2",
        kind="approval",
    )
    run.end()
    found = {s.name: s for s in spans.get_finished_spans()}
    assert found["invoke_agent deploybot"].parent is None
    assert found["await_approval approve"].parent is None
    assert found["await_approval approve"].attributes["twelvefold.wait.seconds"] == 3600  # type: ignore[index]
    assert tracing.traceparent(wait) is not None


def test_a_question_answered_and_a_wait_cancelled_are_spans_too(
    spans: InMemorySpanExporter, openai_server: ScriptedOpenAI, tmp_path: Path, cache: Path
) -> None:
    ModelTurns(openai_server).then(
        {"type": "ClarificationRequest", "message": "What?"},
        {"type": "DoneForNow", "message": "ok"},
        {"type": "ClarificationRequest", "message": "What now?"},
    )
    with runtime(openai_server, tmp_path / "threads.db", cache) as rt:
        asked = rt.launch(CALCULATOR, "hello")
        rt.resume(asked.id, request=asked.request, answer="2 + 2", by="bo")
        again = rt.launch(CALCULATOR, "hello again")
        rt.cancel(again.id, reason="wrong ticket", by="ops")
        answered = next(e for e in rt.events(asked.id) if getattr(e, "answer", None))
    answer_wait, cancelled_wait = named(spans.get_finished_spans(), "await_answer ask_user")
    assert (
        dict(answer_wait.attributes or {}).items()
        >= {
            "gen_ai.conversation.id": asked.id,
            "twelvefold.request.id": asked.request,
            "twelvefold.request.kind": "question",
            "twelvefold.decision": "answered",
            "twelvefold.decision.by": "bo",
        }.items()
    )
    assert answered.trace == tracing.traceparent(_as_span(answer_wait))
    assert (
        dict(cancelled_wait.attributes or {}).items()
        >= {
            "gen_ai.conversation.id": again.id,
            "twelvefold.request.id": again.request,
            "twelvefold.decision": "cancelled",
            "twelvefold.decision.by": "ops",
        }.items()
    )
    runs = named(spans.get_finished_spans(), "invoke_agent calculator")
    resumed = next(r for r in runs if (r.attributes or {})["twelvefold.resumed"])
    assert parent_id(resumed) == span_id(answer_wait)


def test_a_failed_model_call_and_a_failed_thread_are_error_spans(
    spans: InMemorySpanExporter, openai_server: ScriptedOpenAI, tmp_path: Path, cache: Path
) -> None:
    openai_server.reply_error(400, "the prompt is too long")
    with runtime(openai_server, tmp_path / "threads.db", cache) as rt:
        view = rt.launch(CALCULATOR, "hello")
    assert view.status == "failed"
    (chat,) = named(spans.get_finished_spans(), "chat scripted-model")
    (run,) = named(spans.get_finished_spans(), "invoke_agent calculator")
    for failed in (chat, run):
        assert failed.status.status_code == trace.StatusCode.ERROR
        assert (failed.attributes or {})["error.type"] == "BadRequestError"
    assert "gen_ai.usage.input_tokens" not in (chat.attributes or {})
    assert (run.attributes or {})["twelvefold.thread.status"] == "failed"


def test_waits_that_time_out_are_spans_of_their_whole_length(
    spans: InMemorySpanExporter, tmp_path: Path, cache: Path
) -> None:
    """`expire` (patience fixture: approval `timeout 30m`, question `timeout 4h`) records
    the wait's span from the notice to the moment it ran out; the run after it is its child."""
    model = ScriptedModel([CHANGE, QUESTION, DONE, DONE])
    store = SqliteStore(tmp_path / "threads.db")
    with Runtime(store, model=model, notifier=RecordingNotifier(), cache_dir=cache) as rt:
        approval = rt.launch(PATIENCE, "tidy the schema")
        question = rt.launch(PATIENCE, "ask me")
        began = max(
            parse_time(e.at)  # type: ignore[arg-type]
            for thread_id in (approval.id, question.id)
            for e in rt.events(thread_id)
            if isinstance(e, Notified)
        )
        rt.expire(now=began + timedelta(hours=5))
        rejected = next(e for e in rt.events(approval.id) if isinstance(e, Rejected))
    store.close()
    found = spans.get_finished_spans()
    (timed_out_approval,) = named(found, "await_approval approve_change")
    (timed_out_question,) = named(found, "await_answer ask_user")
    approval_wait = dict(timed_out_approval.attributes or {})
    assert (approval_wait["twelvefold.decision"], approval_wait["twelvefold.decision.by"]) == (
        "rejected",
        "timeout",
    )
    assert approval_wait["twelvefold.wait.seconds"] >= 5 * 3600 - 60
    assert rejected.trace == tracing.traceparent(_as_span(timed_out_approval))
    question_wait = dict(timed_out_question.attributes or {})
    assert question_wait["twelvefold.decision"] == "timed_out"
    assert question_wait["gen_ai.conversation.id"] == question.id
    runs = named(found, "invoke_agent patience")
    assert any(parent_id(r) == span_id(timed_out_approval) for r in runs)


# ---- exporting from the CLI over OTLP/HTTP ------------------------------------------------


def test_twelvefold_run_exports_its_spans_over_otlp_http(
    openai_server: ScriptedOpenAI, tmp_path: Path
) -> None:
    ModelTurns(openai_server).then({"type": "DoneForNow", "message": "hello there"})
    with OtlpReceiver() as receiver:
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_SERVICE_NAME": "deploy-checks",
            "OPENAI_BASE_URL": openai_server.base_url,
            "OPENAI_API_KEY": "test",
            "OPENAI_MODEL": "gpt-4o-mini",
        }
        env.pop(tracing.CAPTURE_CONTENT, None)
        done = subprocess.run(
            [sys.executable, "-m", "twelvefold", "run", str(CALCULATOR), "--input", "hi",
             "--db", str(tmp_path / "threads.db"), "--json"],
            env=env, capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        view = json.loads(done.stdout)
        # Exported before the command returned (the provider is shut down, so flushed).
        received = receiver.wait_for(lambda found: len(found) >= 2, timeout=5)
    names = sorted(s.name for s in received)
    assert names == ["chat gpt-4o-mini", "invoke_agent calculator"]
    run, chat = (next(s for s in received if s.name == n) for n in names[::-1])
    assert chat.parent_span_id == run.span_id and chat.trace_id == run.trace_id
    assert {s.service for s in received} == {"deploy-checks"}
    assert run.attributes["gen_ai.conversation.id"] == view["thread_id"]
    assert chat.attributes["gen_ai.usage.input_tokens"] == 11
    assert chat.attributes["twelvefold.usage.cost_usd"] == pytest.approx(view["usage"]["cost_usd"])
    assert "gen_ai.input.messages" not in chat.attributes


def hiding(tmp_path: Path, package: str) -> Path:
    """A folder whose sitecustomize.py makes `package` (and what is under it) fail to
    import in a child process given it as PYTHONPATH: as if it were not installed."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.startswith({package!r}):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Hide())\n"
    )
    return hide


def test_exporting_without_the_sdk_is_one_line(tmp_path: Path) -> None:
    """`twelvefold[otel]` missing: a one-line error, not a traceback (simulated by a
    sitecustomize that hides the SDK from the child process)."""
    hide = hiding(tmp_path, "opentelemetry.sdk")
    env = {
        **os.environ,
        "PYTHONPATH": str(hide),
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
    }
    done = subprocess.run(
        [sys.executable, "-m", "twelvefold", "run", str(CALCULATOR), "--input", "hi",
         "--db", str(tmp_path / "threads.db")],
        env=env, capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: exporting traces needs the OpenTelemetry SDK: pip install 'twelvefold[otel]'"
    ]


def test_an_untraced_process_never_imports_opentelemetry(tmp_path: Path) -> None:
    """Tracing off costs no import (OpenTelemetry's API takes ~25 ms to load): a thread
    launched and run to the end in a fresh process leaves it unloaded."""
    probe = counter_run_probe(tmp_path) + (
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


SECRETS = Path(__file__).parent / "checks_fixtures"
SECRET_KEY = "sk-live-in-a-span-do-not-show"
SECRET_CLAIM = {"order": "o-17", "amount": 40.0, "api_key": SECRET_KEY}


def test_spans_never_carry_a_secret_even_with_content_captured(
    rt: Runtime,
    model: ModelTurns,
    spans: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Secret fields (docs/language.md; tests/test_secrets.py covers the other views).
    # OpenTelemetry spans with prompts, outputs, tool arguments and results captured: the
    # tool is given the key and returns a token made from it; neither shows in any span.
    monkeypatch.setenv(tracing.CAPTURE_CONTENT, "true")
    model.then(Reply(arguments={"text": "charged"}))
    done = rt.launch(SECRETS / "keyed.agent", SECRET_CLAIM)
    assert done.status == "finished", done.error
    (_, charged, *_) = rt.events(done.id)[1:]
    assert charged.result.token == f"tok-for-{SECRET_KEY}", "the log keeps the tool's secret"
    exported = spans.get_finished_spans()
    tool_spans = [s for s in exported if "gen_ai.tool.call.arguments" in s.attributes]
    assert tool_spans, "content capture is on: the tool span carries its arguments"
    for span in exported:
        text = json.dumps(dict(span.attributes or {}), default=str)
        assert SECRET_KEY not in text, span.name
    assert REDACTED in json.dumps(dict(tool_spans[0].attributes), default=str)


def test_a_failed_model_call_that_was_paid_for_shows_its_tokens_on_its_span(
    spans: InMemorySpanExporter, openai_server: ScriptedOpenAI, tmp_path: Path, cache: Path
) -> None:
    # Invalid output every time: the step fails after its retries, each reply paid for.
    openai_server.responder = lambda body: Reply(
        arguments={"choice": {"type": "Nonsense"}}, usage=(500, 50)
    )
    with runtime(openai_server, tmp_path / "threads.db", cache) as rt:
        view = rt.launch(CALCULATOR, "hello")
    assert view.status == "failed"
    (chat,) = named(spans.get_finished_spans(), "chat scripted-model")
    assert chat.status.status_code == trace.StatusCode.ERROR
    attempts = len(openai_server.requests)
    assert (chat.attributes or {})["gen_ai.usage.input_tokens"] == 500 * attempts
    assert (chat.attributes or {})["gen_ai.usage.output_tokens"] == 50 * attempts


def test_a_tool_error_quoting_a_secret_shows_it_nowhere(
    rt: Runtime,
    spans: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The tool fails with its input's secret key in the message. Without the content
    # opt-in a span says only the error's type; the log (and so `show` and the context
    # window) keeps the message with the key taken out; with the opt-in the span's status
    # has that same redacted message.
    monkeypatch.delenv(tracing.CAPTURE_CONTENT, raising=False)
    refused = rt.launch(SECRETS / "keyed.agent", {**SECRET_CLAIM, "order": "refuse-1"})
    assert refused.status == "failed"
    (tool,) = named(spans.get_finished_spans(), "execute_tool charge")
    (run,) = named(spans.get_finished_spans(), "invoke_agent keyed")
    for failed in (tool, run):
        assert failed.status.status_code == trace.StatusCode.ERROR
        assert failed.status.description is None, failed.name
        assert (failed.attributes or {})["error.type"] == "ValueError"
    failure = rt.events(refused.id)[-1]
    assert failure.error.message == f"provider refused key {REDACTED} for order refuse-1"
    assert SECRET_KEY not in json.dumps(refused.to_json(), default=str)

    spans.clear()
    monkeypatch.setenv(tracing.CAPTURE_CONTENT, "true")
    again = rt.launch(SECRETS / "keyed.agent", {**SECRET_CLAIM, "order": "refuse-2"})
    (tool,) = named(spans.get_finished_spans(), "execute_tool charge")
    assert tool.status.description == (
        f"ValueError: provider refused key {REDACTED} for order refuse-2"
    )
    assert again.status == "failed"


def test_every_span_of_a_run_names_its_provider(
    spans: InMemorySpanExporter, openai_server: ScriptedOpenAI, tmp_path: Path, cache: Path
) -> None:
    # gen_ai.provider.name is Required on invoke_agent and chat spans (GenAI semconv).
    ModelTurns(openai_server).then({"type": "DoneForNow", "message": "hello there"})
    with runtime(openai_server, tmp_path / "threads.db", cache) as rt:
        rt.launch(CALCULATOR, "hi")
    found = spans.get_finished_spans()
    assert {s.name for s in found} == {"invoke_agent calculator", "chat scripted-model"}
    for span in found:
        assert (span.attributes or {})["gen_ai.provider.name"] == "openai", span.name


def run_calculator(tmp_path: Path, server: ScriptedOpenAI, **otel: str) -> Any:
    """`twelvefold run` of the calculator in a fresh process with the OTEL_* given."""
    ModelTurns(server).then({"type": "DoneForNow", "message": "hello there"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env |= {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test",
            "OPENAI_MODEL": "gpt-4o-mini", **otel}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "twelvefold", "run", str(CALCULATOR), "--input", "hi",
         "--db", str(tmp_path / "threads.db"), "--json"],
        env=env, capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
    )  # fmt: skip


def test_a_list_of_exporters_and_an_unavailable_protocol_are_taken_as_the_spec_says(
    openai_server: ScriptedOpenAI, tmp_path: Path
) -> None:
    # OTEL_TRACES_EXPORTER is a comma-separated list (OpenTelemetry's SDK configuration
    # spec); gRPC is asked for but its exporter is not installed (hidden from the child
    # process by a sitecustomize): said once, HTTP used.
    hide = hiding(tmp_path, "opentelemetry.exporter.otlp.proto.grpc")
    with OtlpReceiver() as receiver:
        done = run_calculator(
            tmp_path,
            openai_server,
            OTEL_TRACES_EXPORTER="otlp, console",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
            PYTHONPATH=str(hide),
        )
        assert done.returncode == 0, done.stderr
        received = receiver.wait_for(lambda found: len(found) >= 2, timeout=5)
    assert sorted(s.name for s in received) == ["chat gpt-4o-mini", "invoke_agent calculator"]
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "grpc" in warnings[0] and "http/protobuf" in warnings[0]
    assert '"name": "invoke_agent calculator"' in done.stderr  # the console exporter's


def test_twelvefold_run_exports_its_spans_over_otlp_grpc_when_asked(
    openai_server: ScriptedOpenAI, tmp_path: Path
) -> None:
    """OTEL_EXPORTER_OTLP_PROTOCOL=grpc with opentelemetry-exporter-otlp-proto-grpc
    installed: the spans go over gRPC (to a grpcio receiver on loopback), nothing is said."""
    with OtlpGrpcReceiver() as receiver:
        done = run_calculator(
            tmp_path,
            openai_server,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
            OTEL_SERVICE_NAME="over-grpc",
        )
        assert done.returncode == 0, done.stderr
        received = receiver.wait_for(lambda found: len(found) >= 2, timeout=5)
    assert not [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    names = sorted(s.name for s in received)
    assert names == ["chat gpt-4o-mini", "invoke_agent calculator"]
    run, chat = (next(s for s in received if s.name == n) for n in names[::-1])
    assert chat.parent_span_id == run.span_id and chat.trace_id == run.trace_id
    assert {s.service for s in received} == {"over-grpc"}
    assert run.attributes["gen_ai.conversation.id"] == json.loads(done.stdout)["thread_id"]


def test_an_unreachable_collector_is_one_line_and_no_retry_chatter(
    openai_server: ScriptedOpenAI, tmp_path: Path
) -> None:
    done = run_calculator(tmp_path, openai_server, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "warning: traces could not be exported to http://127.0.0.1:9; they are dropped "
        "(later export errors are not shown)"
    ]


def test_a_collector_that_never_answers_does_not_hold_the_exit(
    openai_server: ScriptedOpenAI, tmp_path: Path
) -> None:
    """A collector that takes the connection and never answers, and an exporter told to
    wait 10 minutes for it: the command still exits (the flush is bounded: FLUSH_SECONDS),
    saying once that the spans were dropped. (No duration is asserted; a build without
    the bound waits out the SDK's own 30 s shutdown and says nothing.)"""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections complete in the backlog; nothing is ever read
        port = silent.getsockname()[1]
        done = run_calculator(
            tmp_path,
            openai_server,
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
            OTEL_EXPORTER_OTLP_TIMEOUT="600",
        )
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"warning: traces not exported to http://127.0.0.1:{port} within 3 s are dropped "
        "(OTEL_BSP_EXPORT_TIMEOUT, in milliseconds, gives them longer)"
    ]
