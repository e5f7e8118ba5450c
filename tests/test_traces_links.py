"""Every run after the first links to the run before it (docs/observability.md, "One
trace across processes"), whatever started it: here a `sleep`'s timer (`expire`) and a
signal (`send`), each in another Runtime on the same SQLite file as another process would
be, with the real openai + instructor client against the scripted server and the SDK's
in-memory exporter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.e2e import ModelTurns, runtime
from tests.support.openai_server import Reply, ScriptedOpenAI
from tests.test_tracing import (
    _as_span,
    named,
    parent_id,
    span_id,
    spans,  # noqa: F401  (a fixture, taken by name)
)
from twelvefold.runtime import tracing
from twelvefold.runtime.codec import Codec, CodecError
from twelvefold.runtime.types import ModelOutput, Signalled, Started, TimerFired, ToolStarted

NAPPER = """
agent napper { input string  start decide }
type Nap { n: int }
type Paid { amount: int }
type Done { n: int }
llm decide -> Nap { prompt "step.j2"  on Nap -> nap }
sleep nap(Nap) 10m next think
llm think -> Nap { prompt "step.j2"  on Nap -> hold }
wait hold(Nap) for Paid { next thank }
llm thank -> Done { prompt "step.j2"  on Done -> done }
final done(Done)
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def test_the_runs_after_a_sleep_and_a_signal_link_to_the_run_before_each(
    request: pytest.FixtureRequest, openai_server: ScriptedOpenAI, tmp_path: Path, cache: Path
) -> None:
    """Launched (run 1: `decide`, then asleep), its timer fired by `expire` in a second
    runtime (run 2: `think`, then waiting for a signal), the signal sent from a third (run
    3: `thank`, done). Neither the sleep nor the wait records its start; the first event
    each run appends names the run (`run_trace`), so run 2 links to run 1 and run 3 to
    run 2, and all are one trace."""
    exported: InMemorySpanExporter = request.getfixturevalue("spans")
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "step.j2").write_text("Go on.\n{{ context }}\n")
    agent = tmp_path / "napper.agent"
    agent.write_text(NAPPER)
    # One output type per step: the reply is its fields (no `choice` union).
    ModelTurns(openai_server).then(*(Reply(arguments={"n": n}) for n in (1, 2, 3)))
    db = tmp_path / "threads.db"
    with runtime(openai_server, db, cache) as first:
        view = first.launch(agent, "go")
    assert (view.status, view.waiting_for) == ("waiting", "timer"), view
    later = datetime.now(UTC) + timedelta(hours=1)
    with runtime(openai_server, db, cache) as second:
        (woken,) = second.expire(later)
        assert woken.view is not None and woken.view.step == "hold", woken
    with runtime(openai_server, db, cache) as third:
        done = third.send(view.id, "Paid", {"amount": 5})
        assert done.status == "finished", done
        events = third.events(view.id)

    found = exported.get_finished_spans()
    runs = sorted(named(found, "invoke_agent napper"), key=lambda s: s.start_time or 0)
    assert len(runs) == 3, [s.name for s in found]
    one, two, three = runs
    assert {s.context.trace_id for s in found if s.context} == {one.context.trace_id}  # type: ignore[union-attr]
    assert one.links == ()
    assert [link.context.span_id for link in two.links] == [span_id(one)]
    assert [link.context.span_id for link in three.links] == [span_id(two)]
    for run in (two, three):
        (link,) = run.links
        assert (link.attributes or {})["twelvefold.link"] == "previous_run"
        assert (run.attributes or {})["twelvefold.resumed"] is True
    # Each chat is inside the run that made it.
    chats = named(found, "chat scripted-model")
    assert sorted(parent_id(c) or 0 for c in chats) == sorted(span_id(r) for r in runs)
    # What the log holds: the launching run in `Started.trace`; run 2 on the first event
    # it appended (the one after the timer's), run 3 on the one after the signal.
    started = events[0]
    assert isinstance(started, Started) and started.trace == tracing.traceparent(_as_span(one))
    kinds = [type(e) for e in events]
    after_timer = events[kinds.index(TimerFired) + 1]
    after_signal = events[kinds.index(Signalled) + 1]
    assert isinstance(after_timer, ModelOutput) and isinstance(after_signal, ModelOutput)
    assert after_timer.run_trace == tracing.traceparent(_as_span(two))
    assert after_signal.run_trace == tracing.traceparent(_as_span(three))
    assert [e for e in events if e.run_trace] == [after_timer, after_signal]


def test_a_run_named_on_any_event_round_trips_and_a_damaged_one_is_refused() -> None:
    codec = Codec()
    run = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    event = ToolStarted(step="s", at="2025-06-01T09:12:03.125000Z", key="k", run_trace=run)
    assert '"run_trace"' in codec.dumps_event(event)
    assert codec.loads_event(codec.dumps_event(event)) == event
    # Unset, it is not written: an untraced log is what an older runtime wrote.
    untraced = ToolStarted(step="s", at="2025-06-01T09:12:03.125000Z", key="k")
    assert "run_trace" not in codec.dumps_event(untraced)
    with pytest.raises(CodecError, match="run_trace"):
        codec.loads_event('{"kind": "tool_started", "step": "s", "key": "k", "run_trace": 7}')
