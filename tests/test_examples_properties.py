"""The example agents pass every property, and their edges are all reached (calculator's
one unreachable ceiling edge is a note, and an error under --strict)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from tests.support.generated import EXAMPLES, PROMPTS
from twelvefold.runtime.types import OutputRejected
from twelvefold.testing.coverage import describe_edge
from twelvefold.testing.strategies import threads
from twelvefold.testing.subject import Subject, load_subject
from twelvefold.testing.suite import SuiteReport, render, run_suite


@pytest.mark.parametrize("agent", ["deploybot", "calculator", "supportbot", "payment", "returns"])
def test_examples_pass_every_property(agent: str, tmp_path: Path) -> None:
    subject = load_subject(EXAMPLES / f"{agent}.agent", prompts_dir=PROMPTS, cache_dir=tmp_path)
    report = run_suite(subject, examples=60, seed=0)
    failures = [str(o.failure) for o in report.failed]
    assert not failures, "\n\n".join(failures)
    assert report.ok
    states, edges, outputs = report.coverage.summary().values()
    assert states[0] == states[1] and outputs[0] == outputs[1]
    unreached = [describe_edge(subject.spec.edges[i]) for i in report.unreachable()]
    assert unreached == [] and edges[0] == edges[1]


# `act` is only entered after a person answers, which resets the error count, and its
# failure goes straight back to that person: it can never fail twice in a row. And `stuck`
# is only entered through a ceiling, with a fresh step budget, so it cannot exhaust one.
ANSWER_RESETS = """
agent patient { max_steps 10 -> stuck  max_errors 2 -> stuck  start ask_user }
type Out { v: int }
human ask_user { ask "What now?" next act }
tool act -> Out = "patient.tools:act" { next done  on error -> ask_user }
human stuck { ask "Stuck." next ask_user }
final done(Out)
"""


def test_an_unreachable_escalation_edge_is_a_note_unless_strict(tmp_path: Path) -> None:
    agent = tmp_path / "patient.agent"
    agent.write_text(ANSWER_RESETS)
    subject = load_subject(agent, prompts_dir=tmp_path, cache_dir=tmp_path / "cache")
    report = run_suite(subject, examples=20, seed=0)
    unreached = [describe_edge(subject.spec.edges[i]) for i in report.unreachable()]
    assert unreached == ["act --max_errors--> stuck", "stuck --max_steps--> stuck"]
    assert report.ok and report.exploration.exhausted
    assert "note: act --max_errors--> stuck: no legal log takes it" in render(report)
    strict = run_suite(subject, examples=5, seed=0, strict=True)
    assert not strict.ok and strict.blocking_unreachable() == report.unreachable()


def golden_suite(name: str, tmp_path: Path) -> tuple[Subject, SuiteReport]:
    """tests/golden/NAME's agent under every property; fails on any failed property."""
    golden = Path(__file__).parent / "golden" / name
    subject = load_subject(golden / "input.agent", prompts_dir=golden / "prompts",
                           cache_dir=tmp_path)  # fmt: skip
    report = run_suite(subject, examples=60, seed=0)
    failures = [str(o.failure) for o in report.failed]
    assert not failures, "\n\n".join(failures)
    return subject, report


def test_tools_that_route_pass_every_property_and_take_every_rule(tmp_path: Path) -> None:
    # tests/golden/tool_routing: a union routed by guards on a nested record and an int,
    # a routed single type, and a union passed on whole by `next`. The walks draw each
    # member of each result, with values either side of the guards' constants.
    _, report = golden_suite("tool_routing", tmp_path)
    states, edges, outputs = report.coverage.summary().values()
    assert states[0] == states[1] and outputs[0] == outputs[1] and outputs[1] == 5
    assert report.unreachable() == [] and edges[0] == edges[1]


def test_checks_before_dispatch_pass_every_property_with_rejections(tmp_path: Path) -> None:
    # tests/golden/checks: the walks draw rejections (`OutputRejected`) at the steps that
    # have checks, which move nothing and count; at a step without checks one is illegal.
    subject, report = golden_suite("checks", tmp_path)
    assert report.unreachable() == []
    seen: list[int] = []

    @settings(max_examples=40, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(threads(subject))
    def count(events: tuple[object, ...]) -> None:
        seen.append(sum(isinstance(e, OutputRejected) for e in events))

    count()
    assert sum(seen) > 0, "the walks never drew a rejection"
