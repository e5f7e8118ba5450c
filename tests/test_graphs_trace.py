"""The trace overlay: hand-made deploybot event logs laid over its graph, folded through
the generated reducer itself (so the picture cannot disagree with what the reducer did).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, get_args

import pydot
import pytest

from twelvefold.compiler import compile_file
from twelvefold.compiler.program import Program
from twelvefold.compiler.render import Trace, graph_view, overlay, style, to_dot, to_mermaid
from twelvefold.runtime.loading import load_agent
from twelvefold.runtime.types import (
    Answer,
    Answered,
    Approved,
    ErrorInfo,
    Event,
    ModelOutput,
    Notified,
    Rejected,
    Retried,
    Started,
    State,
    Status,
    StepFailed,
    ToolResult,
    ToolStarted,
)

AGENT = Path(__file__).resolve().parent.parent / "examples" / "deploybot.agent"


@pytest.fixture(scope="module")
def program() -> Program:
    compilation = compile_file(AGENT, generate_code=False)
    assert compilation.program is not None
    return compilation.program


@pytest.fixture(scope="module")
def module(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    agent = load_agent(AGENT, cache_dir=tmp_path_factory.mktemp("cache"))
    return agent.module  # type: ignore[return-value]


def edge_counts(program: Program, trace: Trace) -> dict[tuple[str, str, str], int]:
    return {(e.source, e.target, e.kind): count for e, count in trace.edges.items()}


Log = Callable[[Any], list[Event]]
"""A log, given the generated module (for its pydantic types)."""


def paused_for_approval(m: Any) -> list[Event]:
    return [
        Started(step="decide", input="deploy v1.2.3"),
        ModelOutput(step="decide", output=m.ListGitTags()),
        ToolStarted(step="list_tags", key="k1"),
        ToolResult(step="list_tags", result=m.GitTags(tags=["v1.2.3"])),
        ModelOutput(step="decide", output=m.DeployBackend(tag="v1.2.3", env="staging")),
        ToolStarted(step="deploy", key="k2"),
        StepFailed(step="deploy", error=ErrorInfo("ConnectionError", "unreachable")),
        ModelOutput(step="decide", output=m.DeployBackend(tag="v1.2.3", env="production")),
        Notified(step="approve_deploy", channels=("stdout",)),
    ]


def finished(m: Any) -> list[Event]:
    return [
        Started(step="decide", input="what can I deploy?"),
        ModelOutput(step="decide", output=m.RequestMoreInformation(question="which env?")),
        Answered(step="ask_user", answer=Answer(text="production"), request="ask_user-2"),
        ModelOutput(step="decide", output=m.DeployBackend(tag="v2", env="production")),
        Rejected(
            step="approve_deploy", by="ana", comment="not on a Friday", request="approve_deploy-4"
        ),
        ModelOutput(step="decide", output=m.DeployBackend(tag="v2", env="production")),
        Approved(step="approve_deploy", by="ana", request="approve_deploy-6"),
        ToolStarted(step="deploy", key="k"),
        ToolResult(step="deploy", result=m.DeployResult(url="https://x", took_seconds=3.0)),
        ModelOutput(step="decide", output=m.DoneForNow(message="deployed v2")),
    ]


def failed(m: Any) -> list[Event]:
    return [
        Started(step="decide", input="list tags"),
        ModelOutput(step="decide", output=m.ListGitTags()),
        ToolStarted(step="list_tags", key="k"),
        StepFailed(step="list_tags", error=ErrorInfo("GitError", "no repository")),
    ]


def escalated(m: Any) -> list[Event]:
    """Three failures in a row (a model output does not end the run; a retry does not
    either), the third of which goes to `escalate` by `max_errors` instead of failing."""
    staging = m.DeployBackend(tag="v1", env="staging")
    down = ErrorInfo("ConnectionError", "down")
    return [
        Started(step="decide", input="deploy v1 to staging"),
        ModelOutput(step="decide", output=staging),
        StepFailed(step="deploy", error=down),
        StepFailed(step="decide", error=ErrorInfo("ValidationError", "bad output")),
        Retried(step="decide", by="ops"),
        StepFailed(step="decide", error=down),
    ]


def out_of_steps(m: Any) -> list[Event]:
    """24 actions: the last one would exceed `max_steps 24`, so the thread goes to `escalate`."""
    events: list[Event] = [Started(step="decide", input="list tags, forever")]
    for _ in range(12):
        events.append(ModelOutput(step="decide", output=m.ListGitTags()))
        events.append(ToolStarted(step="list_tags", key="k"))
        events.append(ToolResult(step="list_tags", result=m.GitTags(tags=[])))
    return events


LOGS: dict[str, Log] = {
    "paused for approval": paused_for_approval,
    "finished": finished,
    "failed": failed,
    "escalated": escalated,
    "out of steps": out_of_steps,
}


def test_a_paused_thread(program: Program, module: Any) -> None:
    trace = overlay(program, paused_for_approval(module), module)
    assert trace.visits == {"decide": 3, "list_tags": 1, "deploy": 1, "approve_deploy": 1}
    assert edge_counts(program, trace) == {
        ("decide", "list_tags", "output"): 1,
        ("list_tags", "decide", "next"): 1,
        ("decide", "deploy", "output"): 1,
        ("deploy", "decide", "error"): 1,
        ("decide", "approve_deploy", "output"): 1,
    }
    # The staging deploy went along the unguarded rule, the production one along the guarded.
    (to_deploy,) = [e for e in trace.edges if e.target == "deploy"]
    assert to_deploy.guard is None and to_deploy.excluded
    assert trace.errors == {"deploy": 1}
    assert (trace.position, trace.status) == ("approve_deploy", "waiting")


def test_a_finished_thread(program: Program, module: Any) -> None:
    trace = overlay(program, finished(module), module)
    counts = edge_counts(program, trace)
    assert counts[("decide", "approve_deploy", "output")] == 2
    assert counts[("approve_deploy", "decide", "rejected")] == 1
    assert counts[("approve_deploy", "deploy", "approved")] == 1
    assert counts[("ask_user", "decide", "next")] == 1
    assert counts[("decide", "done", "output")] == 1
    assert trace.visits["decide"] == 4  # the start, after the answer, the rejection, the deploy
    assert (trace.position, trace.status) == ("done", "finished")
    assert trace.errors == {}


def test_a_failed_thread_stays_where_it_failed(program: Program, module: Any) -> None:
    trace = overlay(program, failed(module), module)
    assert (trace.position, trace.status) == ("list_tags", "failed")
    assert trace.errors == {"list_tags": 1}
    assert ("list_tags", "decide", "next") not in edge_counts(program, trace)


def test_the_third_failure_in_a_row_escalates(program: Program, module: Any) -> None:
    trace = overlay(program, escalated(module), module)
    counts = edge_counts(program, trace)
    assert counts[("deploy", "decide", "error")] == 1
    assert counts[("decide", "escalate", "max_errors")] == 1
    assert (trace.position, trace.status) == ("escalate", "waiting")
    assert trace.errors == {"deploy": 1, "decide": 2}


def test_the_step_ceiling_escalates(program: Program, module: Any) -> None:
    trace = overlay(program, out_of_steps(module), module)
    counts = edge_counts(program, trace)
    assert counts[("list_tags", "escalate", "max_steps")] == 1
    assert counts[("list_tags", "decide", "next")] == 11
    assert (trace.position, trace.status) == ("escalate", "waiting")


@pytest.mark.parametrize("name", sorted(LOGS))
def test_the_position_is_where_the_generated_reducer_says(
    name: str, program: Program, module: Any
) -> None:
    events = LOGS[name](module)
    state = module.replay(events)
    trace = overlay(program, events, module)
    assert (trace.position, trace.status) == (state.step, state.status)
    assert trace.refused is None and trace.unexplained == ()


def test_an_empty_log_draws_nothing(program: Program, module: Any) -> None:
    assert overlay(program, [], module) == Trace()


def test_a_log_the_reducer_refuses_is_drawn_up_to_there(program: Program, module: Any) -> None:
    events = [
        Started(step="decide", input="x"),
        ModelOutput(step="decide", output=module.ListGitTags()),
        Notified(step="done"),
    ]
    trace = overlay(program, events, module)
    assert trace.refused is not None and trace.refused.startswith("event 3:")
    assert "the thread is at `list_tags`" in trace.refused
    assert (trace.position, trace.visits) == ("list_tags", {"decide": 1, "list_tags": 1})


def test_a_reducer_that_moves_along_no_edge_of_its_graph_is_reported(
    program: Program, module: Any
) -> None:
    class Disagrees:
        """The generated reducer, edited to send a tool list to `done`."""

        AGENT = module.AGENT
        initial_state = staticmethod(module.initial_state)

        @staticmethod
        def reduce(state: State, event: Event) -> State:
            after: State = module.reduce(state, event)
            if after.step == "list_tags":
                return dataclasses.replace(after, step="done", status="finished")
            return after

    events = [
        Started(step="decide", input="x"),
        ModelOutput(step="decide", output=module.ListGitTags()),
    ]
    trace = overlay(program, events, Disagrees())
    assert trace.unexplained == (("decide", "done"),)
    assert trace.visits == {"decide": 1, "done": 1}


def test_the_rendered_overlay_marks_path_position_and_errors(program: Program, module: Any) -> None:
    view = graph_view(program, overlay(program, paused_for_approval(module), module))
    (graph,) = pydot.graph_from_dot_data(to_dot(view))

    def classes(name: str) -> set[str]:
        return set(graph.get_node(f'"{name}"')[0].get("class").strip('"').split())

    assert {"approval", "visited", "here", "waiting"} <= classes("approve_deploy")
    assert {"visited", "errors"} <= classes("deploy")
    assert "visited" not in classes("done") and "here" not in classes("done")
    assert "waiting here" in graph.get_node('"approve_deploy"')[0].get("label")
    assert "visited ×3" in graph.get_node('"decide"')[0].get("label")
    visited = [
        (e.get_source().strip('"'), e.get_destination().strip('"'))
        for e in graph.get_edges()
        if "visited" in e.get("class").strip('"').split()
    ]
    assert sorted(visited) == sorted(
        [
            ("decide", "list_tags"),
            ("list_tags", "decide"),
            ("decide", "deploy"),
            ("deploy", "decide"),
            ("decide", "approve_deploy"),
        ]
    )
    mermaid = to_mermaid(view)
    assert "class approve_deploy here_waiting" in mermaid
    assert "⚠ 1 error" in mermaid


def test_a_renderer_that_forgets_the_trace_is_caught(program: Program, module: Any) -> None:
    traced = to_dot(graph_view(program, overlay(program, paused_for_approval(module), module)))
    untraced = to_dot(graph_view(program))
    assert "here" in traced and "visited" in traced
    assert "visited" not in untraced and " here" not in untraced


@pytest.mark.parametrize("status", get_args(Status))
def test_every_thread_status_has_a_here_mark(program: Program, module: Any, status: str) -> None:
    """A thread can be at its state with any status the runtime has; each is drawn."""
    assert status in style.HERE_FILLS and status in style.HERE_TEXT
    paused = overlay(program, paused_for_approval(module), module)
    trace = dataclasses.replace(paused, status=status)
    view = graph_view(program, trace)
    assert style.HERE_TEXT[status] in to_mermaid(view)
    assert style.HERE_TEXT[status] in to_dot(view)
