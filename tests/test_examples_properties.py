"""The example agents pass every property, and their edges are all reached (calculator's
one unreachable ceiling edge is a note, and an error under --strict)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.generated import EXAMPLES, PROMPTS
from twelvefold.testing.coverage import describe_edge
from twelvefold.testing.subject import load_subject
from twelvefold.testing.suite import render, run_suite


@pytest.mark.parametrize("agent", ["deploybot", "calculator"])
def test_examples_pass_every_property(agent: str, tmp_path: Path) -> None:
    subject = load_subject(EXAMPLES / f"{agent}.agent", prompts_dir=PROMPTS, cache_dir=tmp_path)
    report = run_suite(subject, examples=60, seed=0)
    failures = [str(o.failure) for o in report.failed]
    assert not failures, "\n\n".join(failures)
    assert report.ok
    states, edges, outputs = report.coverage.summary().values()
    assert states[0] == states[1] and outputs[0] == outputs[1]
    unreached = [describe_edge(subject.spec.edges[i]) for i in report.unreachable()]
    if agent == "deploybot":
        assert unreached == [] and edges[0] == edges[1]
    else:
        # Only the approval leads to `divide`, and a completed approval resets the error
        # count, so divide's own failures can never reach max_errors 3.
        assert unreached == ["divide --max_errors--> escalate"]
        assert report.exploration.exhausted
        assert "note: divide --max_errors--> escalate: no legal log takes it" in render(report)
        strict = run_suite(subject, examples=5, seed=0, strict=True)
        assert not strict.ok and strict.blocking_unreachable() == report.unreachable()
