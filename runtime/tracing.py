"""OpenTelemetry traces of threads, after the GenAI semantic conventions (docs/observability.md).

One trace per thread, however many processes and days it takes:

    invoke_agent deploybot            the run that launched the thread (the trace's root)
      chat gpt-4o-mini                one per model call
      execute_tool deploy             one per tool call
      await_approval approve          the wait: from the notice to the decision
        invoke_agent deploybot        the run the decision resumed (links to the run before)
          ...

A span cannot stay open across processes, so the log carries the trace: `Started.trace` is
the launching run's W3C `traceparent` (or, for a launch that only stores the thread, its
`launch` span's), `Notified.trace` the run that paused, `AttemptFailed.trace` the run a
retry's backoff stopped, and a decision's `trace` the wait's span, made by the process
that records the decision with its start set to the notice's time; and the first event
each traced run appends names that run (`Event.run_trace`), so a run that ended without
saying so (a `sleep` begun, a process that died) can be found. A run's parent is the span
in the `trace` of the latest event that has one; every run but a thread's first links to
the run before it (the latest run the log names, or the run `after_run` names: one that
stopped for a far rate-limit turn and recorded nothing).

Off unless an application (or `twelvefold run`, see `configure_from_env`) installed an SDK
tracer provider: `opentelemetry.trace` is not even imported until then (it costs ~25 ms),
and a run checks once whether a provider is set, so an untraced step pays nothing.
Message and tool content goes into spans only when OTEL_INSTRUMENTATION_GENAI_CAPTURE_
MESSAGE_CONTENT is `true` (the variable the OpenTelemetry GenAI instrumentations read).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .types import (
    Answered,
    Approved,
    AttemptFailed,
    Cancelled,
    Decision,
    ErrorInfo,
    Event,
    Notified,
    Rejected,
    Started,
    State,
    StepFailed,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

CAPTURE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""Set to `true` to put prompts, outputs, tool inputs and results into spans."""

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
"""W3C Trace Context, version 00 (https://www.w3.org/TR/trace-context/#traceparent-header)."""
PROVIDER = "openai"
"""`gen_ai.provider.name` of every span: the runtime speaks the OpenAI API (any
OpenAI-compatible endpoint)."""
_VALUE_LIMIT = 4096
"""Characters of one content attribute (a prompt, a tool result) kept in a span."""


def tracer() -> Tracer | None:
    """The tracer to use, or None when tracing is off: nobody imported OpenTelemetry, or
    no SDK provider is installed (the API's default and no-op providers record nothing)."""
    api = sys.modules.get("opentelemetry.trace")
    if api is None:
        return None
    provider = api.get_tracer_provider()
    if isinstance(provider, api.ProxyTracerProvider | api.NoOpTracerProvider):
        return None
    from .. import __version__

    found: Tracer = provider.get_tracer("twelvefold", __version__)
    return found


def capture_content() -> bool:
    return os.environ.get(CAPTURE_CONTENT, "").strip().lower() in ("true", "1")


def traceparent(span: Span | None) -> str | None:
    """The span's W3C `traceparent`, or None (no span, or an invalid one)."""
    if span is None:
        return None
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def remote(value: object) -> Any:
    """The `SpanContext` a stored `traceparent` names, or None when it is not one (a log
    edited by hand, a thread never traced)."""
    from opentelemetry.trace import SpanContext, TraceFlags

    if not isinstance(value, str) or (match := _TRACEPARENT.fullmatch(value)) is None:
        return None
    trace_id, span_id, flags = (int(group, 16) for group in match.groups())
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags & 1))


# ---- runs --------------------------------------------------------------------------


_AFTER: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "twelvefold_after_run", default=None
)
"""(thread id, traceparent) of a run of that thread the log does not record (`after_run`)."""


@contextlib.contextmanager
def after_run(thread_id: str, previous: str | None) -> Iterator[None]:
    """Within this block, the next run of `thread_id` links to the run `previous` (a W3C
    `traceparent`) rather than to the one its log names: the run a worker stopped before
    a model call whose rate-limit turn was far away records nothing, so the wake-up job
    that runs the thread at its turn carries that run's context instead (server/queue.py).
    None, or a value that is not a `traceparent`: nothing changes."""
    token = _AFTER.set((thread_id, previous) if previous else None)
    try:
        yield
    finally:
        _AFTER.reset(token)


def start_run(tracer: Tracer, agent: str, thread_id: str, events: Sequence[Event]) -> Span:
    """The `invoke_agent` span of one run of a thread, in the thread's trace (see above).

    Its parent is the span on the latest event carrying one in `trace` (none: the current
    span, a new trace when there is none). A run that is not the thread's first links
    (`twelvefold.link = previous_run`) to the run before it, even when that run is its
    parent too: the run `after_run` names (later than anything in the log), else the
    latest run the log names (`run_trace` on the first event each traced run appends,
    `trace` on `Notified` and `AttemptFailed`, `Started.trace`: the launching run, or the
    `launch` span of a launch that ran nothing). `twelvefold.resumed` is false for a
    thread's first run only."""
    from opentelemetry import trace

    parent = previous = None
    for event in reversed(events):
        found = getattr(event, "trace", None)
        if parent is None and found is not None:
            parent = remote(found)
        if previous is None:
            named = event.run_trace
            if named is None and isinstance(event, Started | Notified | AttemptFailed):
                named = found
            previous = remote(named) if named is not None else None
        if parent is not None and previous is not None:
            break
    after = _AFTER.get()
    if after is not None and after[0] == thread_id:
        _AFTER.set(None)  # its own run only, not a sub-agent's run inside it
        previous = remote(after[1]) or previous
        resumed = True
    else:
        resumed = len(events) > 1
    links = []
    if previous is not None and resumed:
        links.append(trace.Link(previous, {"twelvefold.link": "previous_run"}))
    context = trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent else None
    return tracer.start_span(
        f"invoke_agent {agent}",
        context=context,
        kind=trace.SpanKind.INTERNAL,
        links=links,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.agent.name": agent,
            "gen_ai.conversation.id": thread_id,
            "twelvefold.resumed": resumed,
        },
    )


def start_launch(tracer: Tracer, agent: str, thread_id: str) -> Span:
    """The span of a launch that stores a thread without running it (the server: its
    runs are in the background or on a worker). It is the root of the thread's trace
    (`Started.trace`), the child of the current span when there is one (the HTTP
    request's), and it ends as soon as the thread is stored."""
    from opentelemetry import trace

    return tracer.start_span(
        f"launch {agent}",
        kind=trace.SpanKind.INTERNAL,
        attributes={"gen_ai.agent.name": agent, "gen_ai.conversation.id": thread_id},
    )


def end_run(span: Span, state: State, error: BaseException | None = None) -> None:
    """Close a run's span with where the thread stands (and, when it paused, a
    `twelvefold.paused` event naming the request)."""
    span.set_attribute("twelvefold.thread.status", state.status)
    span.set_attribute("twelvefold.step", state.step)
    if state.status == "waiting" and state.request is not None:
        span.add_event("twelvefold.paused", {"twelvefold.request.id": state.request})
    if error is not None:
        _failed(span, type(error).__name__, error)
    elif state.status == "failed" and state.error is not None:
        _failed(span, state.error.type, state.error)
    span.end()


def in_span(span: Span) -> Any:
    """A context manager making `span` current (so spans of libraries nest under it)."""
    from opentelemetry.trace import use_span

    return use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False)


# ---- model and tool calls ------------------------------------------------------------


def start_chat(
    tracer: Tracer,
    run: Span,
    *,
    thread_id: str,
    step: str,
    model: str | None,
    temperature: float | None,
    messages: Sequence[dict[str, str]],
) -> Span:
    from opentelemetry import trace

    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.conversation.id": thread_id,
        "gen_ai.output.type": "json",
        "twelvefold.step": step,
    }
    if model:
        attributes["gen_ai.request.model"] = model
    if temperature is not None:
        attributes["gen_ai.request.temperature"] = temperature
    if capture_content():
        import json  # here: content is captured only when asked (importing stays cheap)

        attributes["gen_ai.input.messages"] = _clip(
            json.dumps(
                [
                    {
                        "role": m.get("role"),
                        "parts": [{"type": "text", "content": m.get("content")}],
                    }
                    for m in messages
                ],
                ensure_ascii=False,
            )
        )
    return tracer.start_span(
        f"chat {model}" if model else "chat",
        context=trace.set_span_in_context(run),
        kind=trace.SpanKind.CLIENT,
        attributes=attributes,
    )


def end_chat(
    span: Span,
    *,
    response_model: str | None,
    response_id: str | None,
    finish_reasons: Sequence[str],
    input_tokens: int | None,
    output_tokens: int | None,
    cost_usd: float | None,
    output: Callable[[], Any] | None = None,
    error: ErrorInfo | None = None,
) -> None:
    """Close a chat span with the response's attributes (or the error)."""
    values: dict[str, Any] = {
        "gen_ai.response.model": response_model,
        "gen_ai.response.id": response_id,
        "gen_ai.response.finish_reasons": list(finish_reasons) or None,
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
        "twelvefold.usage.cost_usd": cost_usd,
    }
    if output is not None and error is None and capture_content():
        import json

        message = {
            "role": "assistant",
            "parts": [{"type": "text", "content": json.dumps(output(), ensure_ascii=False)}],
            "finish_reason": finish_reasons[0] if finish_reasons else "stop",
        }
        values["gen_ai.output.messages"] = _clip(json.dumps([message], ensure_ascii=False))
    _finish(span, values, error)


def start_tool(tracer: Tracer, run: Span, *, thread_id: str, step: str, function: str) -> Span:
    from opentelemetry import trace

    name = function.rpartition(":")[2] or function
    return tracer.start_span(
        f"execute_tool {name}",
        context=trace.set_span_in_context(run),
        kind=trace.SpanKind.INTERNAL,
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.type": "function",
            "gen_ai.conversation.id": thread_id,
            "twelvefold.step": step,
            "twelvefold.tool.function": function,
        },
    )


def end_tool(
    span: Span,
    *,
    key: str | None,
    arguments: Callable[[], Any],
    result: Callable[[], Any] | None,
    error: ErrorInfo | None,
) -> None:
    values: dict[str, Any] = {"twelvefold.tool.key": key}
    if capture_content():
        import json

        values["gen_ai.tool.call.arguments"] = _clip(json.dumps(arguments(), ensure_ascii=False))
        if result is not None:
            values["gen_ai.tool.call.result"] = _clip(json.dumps(result(), ensure_ascii=False))
    _finish(span, values, error)


# ---- waits for people --------------------------------------------------------------


def record_wait(
    tracer: Tracer,
    *,
    agent: str,
    thread_id: str,
    events: Sequence[Event],
    ended_by: Decision | Cancelled | StepFailed,
    request: str | None,
    kind: str,
) -> Span:
    """The span of a wait for a person, made (already ended) by the process that records
    what ended it: from the wait's first notice to `ended_by`, child of the run that
    paused. Attributes: `twelvefold.request.id`, `.request.kind` (approval or question),
    `.decision` (approved, rejected, answered, cancelled; `timed_out` or `not_delivered` for a
    question's timeout), `.decision.by`, `.decision.via`, `.wait.seconds`."""
    from opentelemetry import trace

    notice = _wait_notice(events)
    parent = remote(notice.trace) if notice is not None else None
    if parent is None:
        parent = remote(getattr(events[0], "trace", None)) if events else None
    opened = _ns(notice.at) if notice is not None else None
    closed = _ns(ended_by.at)
    decision = {
        Approved: "approved",
        Rejected: "rejected",
        Answered: "answered",
        Cancelled: "cancelled",
    }.get(type(ended_by), "decided")
    if isinstance(ended_by, StepFailed):
        decision = "not_delivered" if ended_by.error.type == "NotDelivered" else "timed_out"
    by = getattr(ended_by, "by", None)
    if isinstance(ended_by, Answered):
        by = ended_by.answer.by
    attributes: dict[str, Any] = {
        "gen_ai.agent.name": agent,
        "gen_ai.conversation.id": thread_id,
        "twelvefold.step": ended_by.step,
        "twelvefold.request.id": request,
        "twelvefold.request.kind": kind,
        "twelvefold.decision": decision,
        "twelvefold.decision.by": by,
        "twelvefold.decision.via": getattr(ended_by, "via", None),
    }
    if opened is not None and closed is not None and closed >= opened:
        attributes["twelvefold.wait.seconds"] = (closed - opened) / 1e9
    span = tracer.start_span(
        f"await_{'approval' if kind == 'approval' else 'answer'} {ended_by.step}",
        context=trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent else None,
        kind=trace.SpanKind.INTERNAL,
        attributes={k: v for k, v in attributes.items() if v is not None},
        start_time=opened
        if opened is not None and closed is not None and closed >= opened
        else None,
    )
    span.end(
        end_time=closed if opened is not None and closed is not None and closed >= opened else None
    )
    return span


def _wait_notice(events: Sequence[Event]) -> Notified | None:
    """The first notice of the wait the log ends in (later ones are notices tried again)."""
    found: Notified | None = None
    for event in reversed(events):
        if isinstance(event, Notified):
            found = event
        elif found is not None:
            break
    return found


# ---- helpers -----------------------------------------------------------------------


def _finish(span: Span, values: dict[str, Any], error: ErrorInfo | None) -> None:
    span.set_attributes({k: v for k, v in values.items() if v is not None})
    if error is not None:
        _failed(span, error.type, error)
    span.end()


def _failed(span: Span, error_type: str, error: object) -> None:
    """Mark a span failed: `error.type` always; the error's message as the status's
    description only when content is captured (a message may quote what the call was
    given: a tool that fails with its input's API key in the text)."""
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", error_type)
    message = _line(_text(error)) if capture_content() else None
    span.set_status(Status(StatusCode.ERROR, message or None))


def _text(error: object) -> str:
    try:
        return str(error)
    except Exception:  # an exception's own __str__ is input like any other
        return ""


def _ns(at: str | None) -> int | None:
    """An event's `at` as nanoseconds since the epoch (None when it does not parse)."""
    try:
        when = datetime.fromisoformat(at) if isinstance(at, str) else None
    except ValueError:
        return None
    if when is None or when.tzinfo is None:
        return None
    return int(when.timestamp() * 1e9)


def _clip(text: str) -> str:
    return text if len(text) <= _VALUE_LIMIT else text[: _VALUE_LIMIT - 1] + "…"


def _line(text: str) -> str:
    return _clip(text.strip().splitlines()[0] if text.strip() else "")


# ---- exporting ---------------------------------------------------------------------


FLUSH_SECONDS = 3.0
"""How long a command waits, as it exits, for its last spans to be exported (unless
OTEL_BSP_EXPORT_TIMEOUT, in milliseconds, says otherwise): a collector that does not
answer delays the exit this long at most, and what it did not take is dropped."""
_EXPORTERS = ("otlp", "console")


def configure_from_env() -> Callable[[], None] | None:
    """Install the SDK with an exporter when the environment asks for one the standard way
    (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set, or
    OTEL_TRACES_EXPORTER a comma-separated list of `otlp` and `console`), unless a provider
    is installed already or OTEL_SDK_DISABLED is true (or OTEL_TRACES_EXPORTER is `none`).
    Returns the function that flushes and shuts it down within `FLUSH_SECONDS` (call it
    before the process exits), or None when nothing was installed.

    OTLP goes over HTTP with protobuf; OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL `grpc` uses
    the gRPC exporter when `opentelemetry-exporter-otlp-proto-grpc` is installed, and any
    protocol that cannot be had is said on stderr (one line) before HTTP is used. Export
    failures are one stderr line per process, not the SDK's line per retry.

    Raises `TracingUnavailable` when an exporter is not known, or exporting is asked for
    and `twelvefold[otel]` (the SDK and the OTLP/HTTP exporter) is not installed.
    """
    env = os.environ
    listed = [n.strip() for n in env.get("OTEL_TRACES_EXPORTER", "").lower().split(",")]
    names = list(dict.fromkeys(n for n in listed if n and n != "none"))
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if not names and ("none" in listed or not endpoint):
        return None
    unknown = [n for n in names if n not in _EXPORTERS]
    if unknown:
        raise TracingUnavailable(
            f"OTEL_TRACES_EXPORTER={','.join(unknown)!r} is not supported here: "
            "use otlp, console or both (otlp,console)"
        )
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )
    except ImportError:
        raise TracingUnavailable(
            "exporting traces needs the OpenTelemetry SDK: pip install 'twelvefold[otel]'"
        ) from None
    if tracer() is not None:  # the application installed its own
        return None
    exporters: list[SpanExporter] = []
    for name in names or ["otlp"]:
        if name == "console":
            exporters.append(ConsoleSpanExporter(out=sys.stderr))
        else:
            exporters.append(_otlp_exporter(env))
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or "twelvefold"})
    # Not shut down at exit by the SDK itself: that would wait for an unanswered collector
    # as long as its exporter retries (~10 s); the returned function bounds the wait.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    said = _quiet_export_errors(endpoint or "the OTLP endpoint")
    return functools.partial(_shut_down, provider, _flush_seconds(env), said)


def _otlp_exporter(env: Mapping[str, str]) -> Any:
    """The OTLP exporter the protocol variables ask for (they are read by the exporter
    itself, as are the endpoint, headers, timeout and compression variables)."""
    given = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    protocol = (given or "").strip().lower()
    if protocol == "grpc":
        import importlib

        try:  # an optional package, not a dependency (nor known to the type checker)
            grpc = importlib.import_module("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
        except ImportError:
            _warn(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc, "
                "which is not installed: traces are sent over HTTP (http/protobuf) instead"
            )
        else:
            return grpc.OTLPSpanExporter()
    elif protocol not in ("", "http/protobuf"):
        _warn(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={_printable(protocol)} is not supported here: "
            "traces are sent over HTTP (http/protobuf)"
        )
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise TracingUnavailable(
            "exporting traces over OTLP needs its exporter: pip install 'twelvefold[otel]'"
        ) from None
    return OTLPSpanExporter()


def _flush_seconds(env: Mapping[str, str]) -> float:
    try:
        given = float(env.get("OTEL_BSP_EXPORT_TIMEOUT", "")) / 1000
    except ValueError:
        return FLUSH_SECONDS
    return given if math.isfinite(given) and given > 0 else FLUSH_SECONDS


def _quiet_export_errors(endpoint: str) -> Any:
    """A handler that takes the exporters' and the span processor's log records (a line
    per retry, a line per dropped batch) and writes one line for them all, once per
    process (`said` is set once it did)."""
    import logging  # here: tracing off must not import it

    class OneLine(logging.Handler):
        def __init__(self, where: str) -> None:
            super().__init__(logging.WARNING)
            self.where = where
            self.said = False

        def emit(self, record: logging.LogRecord) -> None:
            if not self.said:
                self.said = True
                _warn(
                    f"traces could not be exported to {self.where}; they are dropped "
                    "(later export errors are not shown)"
                )

    handler = OneLine(_where(endpoint))
    for name in ("opentelemetry.exporter", "opentelemetry.sdk._shared_internal"):
        found = logging.getLogger(name)
        found.addHandler(handler)
        found.propagate = False
    return handler


def _shut_down(provider: Any, seconds: float, said: Any) -> None:
    """Flush and shut the provider down, waiting `seconds` at most (the export goes on
    in a daemon thread, dropped when the process exits)."""
    import threading

    flushing = threading.Thread(target=provider.shutdown, name="twelvefold-traces", daemon=True)
    flushing.start()
    flushing.join(seconds)
    if flushing.is_alive() and not said.said:
        said.said = True
        _warn(
            f"traces not exported to {said.where} within {seconds:g} s are dropped "
            "(OTEL_BSP_EXPORT_TIMEOUT, in milliseconds, gives them longer)"
        )


def _where(endpoint: str) -> str:
    """An endpoint as a message shows it: scheme, host and port (no credentials, path or
    query), printable."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(endpoint.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return "the OTLP endpoint"
    if not host:
        return "the OTLP endpoint"
    return _printable(f"{parts.scheme}://{host}" + (f":{port}" if port else ""))


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)[:200]


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class TracingUnavailable(RuntimeError):
    """Exporting traces was asked for and cannot be done (a one-line CLI error)."""


__all__ = [
    "CAPTURE_CONTENT",
    "TracingUnavailable",
    "capture_content",
    "configure_from_env",
    "traceparent",
    "tracer",
]
