"""Edge matching, coverage and the shortest-path search."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.broken_reducers import broken_module
from tests.support.generated import EXAMPLES, PROMPTS, import_generated
from twelvefold.runtime.types import ModelOutput, Started
from twelvefold.testing.coverage import (
    ACTION_EVENTS,
    Constants,
    Coverage,
    describe_edge,
    explore,
    representatives,
    walk,
)
from twelvefold.testing.strategies import is_legal
from twelvefold.testing.subject import Subject, checked_program
from twelvefold.testing.suite import run_suite

GUARDS = Path(__file__).parent / "golden" / "guards"


def _subject(module: ModuleType, agent: Path, prompts: Path = PROMPTS) -> Subject:
    return Subject(module, agent.name, program=checked_program(agent, prompts))


@pytest.fixture(scope="module")
def deploybot(tmp_path_factory: pytest.TempPathFactory) -> Subject:
    agent = EXAMPLES / "deploybot.agent"
    return _subject(import_generated(agent, tmp_path_factory.mktemp("d")), agent)


def test_every_deploybot_edge_has_a_shortest_legal_path_that_ends_on_it(
    deploybot: Subject,
) -> None:
    found = explore(deploybot)
    assert found.exhausted and found.unreached(deploybot) == []
    for index, path in found.paths.items():
        state = deploybot.initial_state(path[0].input)  # type: ignore[attr-defined]
        for event in path[1:]:
            assert is_legal(deploybot, state, event), (
                describe_edge(deploybot.spec.edges[index]),
                event,
            )
            state = deploybot.reduce(state, event)
        last_moves = list(walk(deploybot, path))[-2:]
        assert any(index in move.edges for move in last_moves)


def test_the_max_steps_path_takes_exactly_the_budget(deploybot: Subject) -> None:
    found = explore(deploybot)
    (index,) = [
        i
        for i, e in enumerate(deploybot.spec.edges)
        if (e.source, e.kind) == ("decide", "max_steps")
    ]
    actions = [e for e in found.paths[index] if isinstance(e, ACTION_EVENTS)]
    assert len(actions) == deploybot.spec.max_steps == 24


def test_the_production_rule_and_the_staging_rule_are_told_apart(deploybot: Subject) -> None:
    found = explore(deploybot)
    by_label = {describe_edge(deploybot.spec.edges[i]): p for i, p in found.paths.items()}
    production = by_label['decide --on DeployBackend if env == "production"--> approve_deploy']
    staging = by_label["decide --on DeployBackend--> deploy"]
    assert production[-1].output.env == "production"  # type: ignore[attr-defined]
    assert staging[-1].output.env == "staging"  # type: ignore[attr-defined]


def test_guards_over_nested_optional_fields_are_all_reached(tmp_path: Path) -> None:
    agent = GUARDS / "input.agent"
    subject = _subject(
        import_generated(agent, tmp_path, GUARDS / "prompts"), agent, GUARDS / "prompts"
    )
    found = explore(subject)
    assert found.unreached(subject) == []
    # Four Ticket rules: enterprise and severe, noted or urgent, anonymous, the rest.
    ticket_rules = [i for i, e in enumerate(subject.spec.edges) if e.type == "Ticket"]
    assert len(ticket_rules) == 4 and all(i in found.paths for i in ticket_rules)


def test_an_edge_the_broken_reducer_never_takes_is_reported(tmp_path: Path) -> None:
    agent = EXAMPLES / "deploybot.agent"
    subject = _subject(broken_module("skip_approval", tmp_path), agent)
    report = run_suite(subject, examples=10, seed=0)
    blocked = [describe_edge(subject.spec.edges[i]) for i in report.blocking_unreachable()]
    assert 'decide --on DeployBackend if env == "production"--> approve_deploy' in blocked
    assert "approve_deploy --on approved--> deploy" in blocked
    assert not report.ok


def test_coverage_counts_what_a_log_took(deploybot: Subject) -> None:
    m = deploybot.module
    coverage = Coverage(deploybot)
    coverage.record(
        [
            Started(step="decide", input="hi"),
            ModelOutput(step="decide", output=m.DoneForNow(message="bye")),
        ]
    )
    summary = coverage.summary()
    assert summary["states"] == (2, 7)
    assert summary["edges"] == (1, 21)
    assert summary["output types"] == (1, 4)
    assert "decide --on DoneForNow--> done" not in coverage.missed()["edges"]
    assert "decide --on ListGitTags--> list_tags" in coverage.missed()["edges"]


def test_representatives_straddle_the_guards_constants() -> None:
    constants = Constants(strings=("pro",), numbers=(3.0,))
    assert {2, 3, 4} <= set(representatives(int, constants))
    assert {2.5, 3.0, 3.5} <= set(representatives(float, constants))
    assert "pro" in representatives(str, constants)
    assert None in representatives(int | None, constants)
